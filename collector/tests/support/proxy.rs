//! A UDP relay between agents and a collector that keeps a copy of what the agents sent:
//! real frames captured on the wire, for replaying and mangling. Each agent address gets
//! its own upstream socket (as a NAT would), so the collector's ACKs find their way back.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct CapturingProxy {
    /// Where agents send.
    pub address: SocketAddr,
    captured: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Datagrams kept at most.
const CAPTURE_MAX: usize = 20_000;

impl CapturingProxy {
    pub fn start(collector: SocketAddr) -> CapturingProxy {
        let downstream = UdpSocket::bind("127.0.0.1:0").unwrap();
        downstream.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let address = downstream.local_addr().unwrap();
        let captured: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (captured2, stop2) = (captured.clone(), stop.clone());
        let relay = std::thread::spawn(move || {
            let mut upstreams: HashMap<SocketAddr, UdpSocket> = HashMap::new();
            let mut back = Vec::new();
            let mut buf = [0u8; 65_536];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((len, agent)) = downstream.recv_from(&mut buf) else { continue };
                let upstream = upstreams.entry(agent).or_insert_with(|| {
                    // The collector answers this socket; its answers go back to `agent`.
                    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                    socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                    let (reader, to, stop) =
                        (socket.try_clone().unwrap(), downstream.try_clone().unwrap(), stop2.clone());
                    back.push(std::thread::spawn(move || {
                        let mut buf = [0u8; 65_536];
                        while !stop.load(Ordering::Relaxed) {
                            if let Ok(len) = reader.recv(&mut buf) {
                                let _ = to.send_to(&buf[..len], agent);
                            }
                        }
                    }));
                    socket
                });
                let _ = upstream.send_to(&buf[..len], collector);
                let mut captured = captured2.lock().unwrap();
                if captured.len() < CAPTURE_MAX {
                    captured.push(buf[..len].to_vec());
                }
            }
            for thread in back {
                let _ = thread.join();
            }
        });
        CapturingProxy { address, captured, stop, threads: vec![relay] }
    }

    /// What the agents sent so far.
    pub fn captured(&self) -> Vec<Vec<u8>> {
        self.captured.lock().unwrap().clone()
    }
}

impl Drop for CapturingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
