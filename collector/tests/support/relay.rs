//! A UDP relay between one device and the collector that a test can cut, both ways, like a
//! device losing its network: the device keeps its events and retransmits them when the
//! relay lets traffic through again.

#![allow(unreachable_pub)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct Relay {
    /// Where the device sends (instead of the collector).
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Datagrams dropped while cut, both ways.
    pub dropped: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    pub fn start(collector: SocketAddr) -> Relay {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        back.connect(collector).unwrap();
        for socket in [&front, &back] {
            socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        }
        let addr = front.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let device: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (front2, back2) = (front.try_clone().unwrap(), back.try_clone().unwrap());
        let upstream = {
            let (cut, stop, dropped, device) = (cut.clone(), stop.clone(), dropped.clone(), device.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((len, from)) = front.recv_from(&mut buf) else { continue };
                    *device.lock().unwrap() = Some(from);
                    if cut.load(Ordering::Relaxed) {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let _ = back.send(&buf[..len]);
                    }
                }
            })
        };
        let downstream = {
            let (cut, stop, dropped) = (cut.clone(), stop.clone(), dropped.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(len) = back2.recv(&mut buf) else { continue };
                    let Some(to) = *device.lock().unwrap() else { continue };
                    if cut.load(Ordering::Relaxed) {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let _ = front2.send_to(&buf[..len], to);
                    }
                }
            })
        };
        Relay { addr, cut, stop, dropped, threads: vec![upstream, downstream] }
    }

    /// Cuts the link (`true`) or restores it.
    pub fn cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
