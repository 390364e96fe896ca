//! ZeroMQ: a SUB socket bound for agents' PUB sockets, and a PUB socket for ACKs and NAKs on
//! topic `d<device_id>.` (each agent subscribes to its own).
//!
//! The `zeromq` crate has no high-water mark and drops silently; our sequence numbers and
//! ACKs carry reliability, so a lost frame or reply is only a retransmission. The SUB and the
//! PUB each run on their own thread and runtime: the SUB side blocks when the acceptor's
//! queue is full (backpressure), which must not stall the replies.

use super::{Batch, ReplyPath, Route, Shutdown, Sink, Source, Started};
use crate::metrics::Metrics;
use anyhow::Context;
use driftlog_protocol::DeviceId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use zeromq::prelude::*;

/// Replies waiting for the PUB socket; beyond this they are dropped (and counted).
const REPLY_QUEUE: usize = 4_096;

#[derive(Debug)]
pub struct ZmqSource {
    pub data_endpoint: String,
    pub ack_endpoint: String,
    pub metrics: Arc<Metrics>,
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

impl Source for ZmqSource {
    fn name(&self) -> &'static str {
        "zmq"
    }

    fn start(self: Box<Self>, id: u16, sink: Sink, shutdown: Shutdown) -> anyhow::Result<Started> {
        let (bound_tx, bound_rx) = std::sync::mpsc::channel::<anyhow::Result<String>>();
        let data_endpoint = self.data_endpoint.clone();
        let metrics = self.metrics.clone();
        let sub_shutdown = shutdown.clone();
        let sub_thread = std::thread::Builder::new().name("zmq-sub".into()).spawn(move || {
            let Ok(runtime) = runtime() else { return };
            runtime.block_on(async move {
                let mut sub = zeromq::SubSocket::new();
                let bound = match sub.bind(&data_endpoint).await {
                    Ok(endpoint) => endpoint.to_string(),
                    Err(error) => {
                        let _ = bound_tx.send(Err(anyhow::anyhow!("cannot bind ZeroMQ SUB {data_endpoint}: {error}")));
                        return;
                    }
                };
                if let Err(error) = sub.subscribe("").await {
                    let _ = bound_tx.send(Err(anyhow::anyhow!("ZeroMQ subscribe: {error}")));
                    return;
                }
                let _ = bound_tx.send(Ok(bound));
                while !sub_shutdown.is_shutdown() {
                    let Ok(Ok(message)) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await else {
                        continue;
                    };
                    let mut batch = Batch::default();
                    // Agents send one frame per message; extra parts are ignored.
                    if let Some(frame) = message.get(0) {
                        batch.push(frame, Route { source: id, peer: None });
                        metrics.datagrams_received.inc();
                        metrics.datagram_bytes_received.inc_by(frame.len() as u64);
                    }
                    if !batch.is_empty() && sink.send(batch).is_err() {
                        return;
                    }
                }
            });
        })?;
        let data = bound_rx.recv().context("ZeroMQ SUB thread ended")??;

        let (reply_tx, mut reply_rx) = tokio::sync::mpsc::channel::<(DeviceId, Vec<u8>)>(REPLY_QUEUE);
        let ack_endpoint = self.ack_endpoint.clone();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel::<anyhow::Result<String>>();
        let pub_thread = std::thread::Builder::new().name("zmq-pub".into()).spawn(move || {
            let Ok(runtime) = runtime() else { return };
            runtime.block_on(async move {
                let mut publisher = zeromq::PubSocket::new();
                match publisher.bind(&ack_endpoint).await {
                    Ok(endpoint) => {
                        let _ = bound_tx.send(Ok(endpoint.to_string()));
                    }
                    Err(error) => {
                        let _ = bound_tx.send(Err(anyhow::anyhow!("cannot bind ZeroMQ PUB {ack_endpoint}: {error}")));
                        return;
                    }
                }
                // Ends when the acceptor drops its reply path.
                while let Some((device, datagram)) = reply_rx.recv().await {
                    let mut message = zeromq::ZmqMessage::from(format!("d{device}."));
                    message.push_back(datagram.into());
                    let _ = publisher.send(message).await;
                }
            });
        })?;
        let ack = bound_rx.recv().context("ZeroMQ PUB thread ended")??;
        Ok(Started {
            reply: Box::new(ZmqReply { queue: reply_tx }),
            threads: vec![sub_thread, pub_thread],
            local: format!("{data} {ack}"),
        })
    }
}

#[derive(Debug)]
struct ZmqReply {
    queue: tokio::sync::mpsc::Sender<(DeviceId, Vec<u8>)>,
}

impl ReplyPath for ZmqReply {
    fn send(&mut self, device: DeviceId, _peer: Option<SocketAddr>, datagram: &[u8]) -> bool {
        // A full queue is a dropped reply; the acceptor counts it.
        self.queue.try_send((device, datagram.to_vec())).is_ok()
    }
}
