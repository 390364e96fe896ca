//! ZeroMQ PUB/SUB with the pure-Rust `zeromq` crate.
//!
//! The agent's PUB connects to the collector's SUB (frames are single-part messages); the
//! agent's SUB connects to the collector's PUB and subscribes to its own topic,
//! `d<device_id>.`, on which the collector publishes `[topic, frame]`.
//!
//! The crate's traps, and what is done about them:
//! - `connect` blocks until the peer is up and fails after 30 s: both sockets connect with
//!   `no_connect_timeout` inside their own tasks, so the agent starts and buffers while the
//!   collector is down.
//! - `connect` retries only a refused connection; any other failure (a reset during the
//!   handshake, as when the collector is killed while it accepts) is returned once. Each
//!   task connects a fresh socket again after a backoff, for as long as the agent runs:
//!   a transport task that gave up would leave the agent buffering forever.
//! - No high-water mark, silent drops when a peer's queue fills: our sequence numbers, NAKs
//!   and ACKs detect and repair every loss, and the sender's window is the flow control.
//! - The PUB socket does not reconnect after the collector restarts: the agent watches its
//!   monitor and connects a fresh socket when the peer disconnects.
//! - Sockets need `&mut`: each lives in one task, reached through bounded channels.

use super::Transport;
use futures_util::StreamExt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};
use tokio::task::AbortHandle;
use zeromq::prelude::*;
use zeromq::{PubSocket, SocketOptions, SubSocket, ZmqMessage};

/// Frames queued towards the PUB task; more are refused (the sender retransmits later).
const OUTGOING_FRAMES: usize = 1_024;
/// Frames received and not yet read by the driver.
const INCOMING_FRAMES: usize = 1_024;
/// The first wait after a failed connection attempt; it doubles up to `RETRY_MAX`.
const RETRY_MIN: Duration = Duration::from_millis(50);
/// The longest wait between connection attempts: how long a collector that is back may
/// wait for this agent.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The topic the collector publishes a device's ACKs and NAKs on.
pub fn ack_topic(device_id: u64) -> String {
    format!("d{device_id}.")
}

#[derive(Debug)]
pub struct ZmqTransport {
    outgoing: mpsc::Sender<Vec<u8>>,
    incoming: Mutex<mpsc::Receiver<Vec<u8>>>,
    /// Frames refused because the outgoing queue was full.
    refused: Arc<AtomicU64>,
    /// The PUB and SUB tasks.
    tasks: [AbortHandle; 2],
}

impl ZmqTransport {
    /// Starts the PUB and SUB tasks on the current runtime. They run until the transport
    /// is dropped.
    pub fn start(data_endpoint: String, ack_endpoint: String, device_id: u64) -> ZmqTransport {
        let (outgoing, to_send) = mpsc::channel::<Vec<u8>>(OUTGOING_FRAMES);
        let (deliver, incoming) = mpsc::channel::<Vec<u8>>(INCOMING_FRAMES);
        let tasks = [
            tokio::spawn(publish(data_endpoint, to_send)).abort_handle(),
            tokio::spawn(subscribe(ack_endpoint, ack_topic(device_id), deliver)).abort_handle(),
        ];
        ZmqTransport { outgoing, incoming: Mutex::new(incoming), refused: Arc::new(AtomicU64::new(0)), tasks }
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

fn options() -> SocketOptions {
    let mut options = SocketOptions::default();
    options.no_connect_timeout();
    options
}

/// Pauses between connection attempts: `RETRY_MIN`, doubling up to `RETRY_MAX`.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(RETRY_MIN)
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(RETRY_MAX);
    }
}

/// Connects a fresh socket from `make` to `endpoint`, again and again after a growing
/// pause, until one connects. `make` also sets up what must exist before the connection
/// (the PUB's monitor), so nothing from a failed attempt is reused.
async fn connect<S: Socket, T>(endpoint: &str, role: &str, mut make: impl FnMut() -> (S, T)) -> (S, T) {
    let mut backoff = Backoff::new();
    loop {
        let (mut socket, extra) = make();
        match socket.connect(endpoint).await {
            Ok(()) => return (socket, extra),
            Err(error) => {
                let retry_ms = backoff.0.as_millis() as u64;
                tracing::warn!(%error, endpoint, role, retry_ms, "zmq connect failed; retrying");
                backoff.wait().await;
            }
        }
    }
}

/// The PUB task: sends queued frames, and replaces the socket whenever the collector goes
/// away, because the crate's PUB does not reconnect.
async fn publish(endpoint: String, mut to_send: mpsc::Receiver<Vec<u8>>) {
    loop {
        let (mut socket, mut events) = connect(&endpoint, "pub", || {
            let mut socket = PubSocket::with_options(options());
            let events = socket.monitor();
            (socket, events)
        })
        .await;
        loop {
            tokio::select! {
                frame = to_send.recv() => {
                    let Some(frame) = frame else { return };
                    if let Err(error) = socket.send(ZmqMessage::from(frame)).await {
                        tracing::debug!(%error, "zmq send failed");
                    }
                }
                event = events.next() => {
                    if matches!(event, None | Some(zeromq::SocketEvent::Disconnected(_))) {
                        break;
                    }
                }
            }
        }
        tracing::info!(%endpoint, "collector went away; reconnecting the zmq PUB socket");
    }
}

/// The SUB task: delivers the frames published on this device's topic. After the first
/// connection the crate reconnects a SUB by itself.
async fn subscribe(endpoint: String, topic: String, deliver: mpsc::Sender<Vec<u8>>) {
    let mut backoff = Backoff::new();
    let mut socket = loop {
        let (mut socket, ()) = connect(&endpoint, "sub", || (SubSocket::with_options(options()), ())).await;
        match socket.subscribe(&topic).await {
            Ok(()) => break socket,
            Err(error) => {
                tracing::warn!(%error, endpoint, "zmq subscribe failed; reconnecting");
                backoff.wait().await;
            }
        }
    };
    loop {
        let message = match socket.recv().await {
            Ok(message) => message,
            Err(error) => {
                // A peer that went away (the crate reconnects it) or no peer at all: the
                // pause keeps a socket without peers from spinning.
                tracing::debug!(%error, "zmq recv failed");
                tokio::time::sleep(RETRY_MIN).await;
                continue;
            }
        };
        // [topic, frame]; anything else is not ours.
        let Some(frame) = message.get(1) else { continue };
        if deliver.send(frame.to_vec()).await.is_err() {
            return;
        }
    }
}

impl Drop for ZmqTransport {
    /// Stops both tasks, wherever they are (a task waiting to reconnect would otherwise
    /// keep trying after the agent is done with the transport).
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Transport for ZmqTransport {
    async fn send(&self, datagram: &[u8]) -> io::Result<()> {
        self.outgoing.try_send(datagram.to_vec()).map_err(|_| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            io::Error::new(io::ErrorKind::WouldBlock, "zmq outgoing queue full")
        })
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let frame = self.incoming.lock().await.recv().await.ok_or_else(|| io::Error::other("zmq SUB task ended"))?;
        let len = frame.len().min(buf.len());
        buf[..len].copy_from_slice(&frame[..len]);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};
    use zeromq::Endpoint;

    /// A TCP front for `backend` that closes its first `closes` connections as soon as
    /// they are accepted (inside the ZMTP handshake, like a collector killed while it
    /// accepts) and relays every later one.
    async fn flaky_front(listener: TcpListener, backend: String, mut closes: usize) {
        while let Ok((mut client, _)) = listener.accept().await {
            if closes > 0 {
                closes -= 1;
                drop(client);
                continue;
            }
            let backend = backend.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(&backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    }

    #[tokio::test]
    async fn the_pub_connects_again_after_its_connection_fails_in_the_handshake() {
        let mut collector = SubSocket::new();
        let Endpoint::Tcp(_, port) = collector.bind("tcp://127.0.0.1:0").await.unwrap() else { unreachable!() };
        collector.subscribe("").await.unwrap();
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_port = front.local_addr().unwrap().port();
        tokio::spawn(flaky_front(front, format!("127.0.0.1:{port}"), 2));
        // Nothing listens for acknowledgements: the SUB keeps retrying, which is fine here.
        let unused = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let transport =
            ZmqTransport::start(format!("tcp://127.0.0.1:{front_port}"), format!("tcp://127.0.0.1:{unused}"), 1);
        // A PUB drops what it sends before it has a peer, so keep sending until one
        // frame arrives; the first two connections fail, the third carries it.
        for _ in 0..100 {
            transport.send(b"frame").await.unwrap();
            if let Ok(message) = tokio::time::timeout(Duration::from_millis(100), collector.recv()).await {
                assert_eq!(message.unwrap().get(0).unwrap().as_ref(), b"frame");
                return;
            }
        }
        panic!("no frame reached the collector after the failed handshakes");
    }
}
