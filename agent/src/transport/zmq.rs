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
use tokio::sync::{Mutex, mpsc};
use zeromq::prelude::*;
use zeromq::{PubSocket, SocketOptions, SubSocket, ZmqMessage};

/// Frames queued towards the PUB task; more are refused (the sender retransmits later).
const OUTGOING_FRAMES: usize = 1_024;
/// Frames received and not yet read by the driver.
const INCOMING_FRAMES: usize = 1_024;

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
}

impl ZmqTransport {
    /// Starts the PUB and SUB tasks on the current runtime.
    pub fn start(data_endpoint: String, ack_endpoint: String, device_id: u64) -> ZmqTransport {
        let (outgoing, mut to_send) = mpsc::channel::<Vec<u8>>(OUTGOING_FRAMES);
        let (deliver, incoming) = mpsc::channel::<Vec<u8>>(INCOMING_FRAMES);
        tokio::spawn(async move {
            // The crate's PUB does not reconnect after the collector restarts: watch its
            // monitor and replace the socket when the peer goes away.
            loop {
                let mut options = SocketOptions::default();
                options.no_connect_timeout();
                let mut socket = PubSocket::with_options(options);
                let mut events = socket.monitor();
                if let Err(error) = socket.connect(&data_endpoint).await {
                    tracing::error!(%error, endpoint = %data_endpoint, "zmq PUB cannot connect");
                    return;
                }
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
                tracing::info!(endpoint = %data_endpoint, "collector went away; reconnecting the zmq PUB socket");
            }
        });
        let topic = ack_topic(device_id);
        tokio::spawn(async move {
            let mut options = SocketOptions::default();
            options.no_connect_timeout();
            let mut socket = SubSocket::with_options(options);
            if let Err(error) = socket.connect(&ack_endpoint).await {
                tracing::error!(%error, endpoint = %ack_endpoint, "zmq SUB cannot connect");
                return;
            }
            if let Err(error) = socket.subscribe(&topic).await {
                tracing::error!(%error, "zmq subscribe failed");
                return;
            }
            loop {
                let Ok(message) = socket.recv().await else { continue };
                // [topic, frame]; anything else is not ours.
                let Some(frame) = message.get(1) else { continue };
                if deliver.send(frame.to_vec()).await.is_err() {
                    return;
                }
            }
        });
        ZmqTransport { outgoing, incoming: Mutex::new(incoming), refused: Arc::new(AtomicU64::new(0)) }
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
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
