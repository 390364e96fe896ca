//! The JetStream forwarder: publishes every log offset, in order, to a stream, with
//! `Nats-Msg-Id` set to the record's global id, up to `max_in_flight` publish
//! acknowledgements outstanding, and stores the offset below which JetStream has
//! acknowledged everything.
//!
//! On any error, and when the connection drops (the client would reconnect on its own, but
//! silently, with the in-flight acknowledgements lost), it reconnects with backoff and
//! resumes from the stored offset; what it resends is inside the stream's duplicate window,
//! so the server drops the second copy.
//! It never skips: when it falls behind, the log (which protects unforwarded records) fills
//! and the collector stops acknowledging, which is the backpressure.

use super::message::{Message, messages};
use crate::config::JetStreamSection;
use crate::log::Log;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use async_nats::jetstream;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const BLOCKS_PER_READ: usize = 8;
const OFFSET_STORE_INTERVAL: Duration = Duration::from_millis(200);
/// While idle the forwarder waits for the log's next offset to move; it looks again at least
/// this often (a bound on the wait, not a poll interval).
const IDLE_WAIT_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("connect: {0}")]
    Connect(#[from] async_nats::ConnectError),
    #[error("stream: {0}")]
    Stream(String),
    #[error("disconnected from the server")]
    Disconnected,
    #[error("publish: {0}")]
    Publish(#[from] async_nats::jetstream::context::PublishError),
    #[error("log: {0}")]
    Log(#[from] crate::log::LogError),
    #[error("log read task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Runs until `shutdown` (the service signals it once the committer has ended), reconnecting
/// after errors.
pub async fn run(config: JetStreamSection, log: Arc<Log>, metrics: Arc<Metrics>, mut shutdown: Shutdown) {
    // Until the first connection, the lag counts from the stored offset, not from 0.
    let (log2, reader) = (log.clone(), config.reader.clone());
    // Everything below it is in the stream: kept here across attempts, so what an attempt
    // had acknowledged is stored when it ends (the metric only shows it).
    let mut acked = 0;
    if let Ok(Ok(Some(stored))) = tokio::task::spawn_blocking(move || log2.reader_offset(&reader)).await {
        acked = stored;
        metrics.forwarder_offset.set(stored);
    }
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = forward(&config, &log, &metrics, &mut backoff, &mut acked);
        let result = tokio::select! {
            result = attempt => result,
            _ = shutdown.recv() => break,
        };
        metrics.forwarder_connected.set(0);
        store_acknowledged(&config, &log, acked).await;
        if let Err(error) = result {
            metrics.forwarder_errors.inc();
            tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "JetStream forwarder failed; will resume from its stored offset");
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.recv() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    metrics.forwarder_connected.set(0);
    store_acknowledged(&config, &log, acked).await;
}

/// Stores the offset below which JetStream acknowledged everything (`acked`) when
/// an attempt ends, since the attempt stores it only every `OFFSET_STORE_INTERVAL`. Without
/// this, a reconnect after an outage longer than the duplicate window, or a restart after
/// a graceful stop, would resend acknowledged messages the server no longer recognises,
/// and the stream would hold them twice. Never moves the stored offset back.
async fn store_acknowledged(config: &JetStreamSection, log: &Arc<Log>, acked: u64) {
    let (log2, reader) = (log.clone(), config.reader.clone());
    let stored = match tokio::task::spawn_blocking(move || log2.reader_offset(&reader)).await {
        Ok(Ok(stored)) => stored.unwrap_or(0),
        Ok(Err(error)) => return tracing::warn!(%error, "cannot read the forwarder's stored offset"),
        Err(error) => return tracing::warn!(%error, "cannot read the forwarder's stored offset"),
    };
    if acked > stored
        && let Err(error) = store(log, &config.reader, acked).await
    {
        tracing::warn!(%error, offset = acked, "cannot store the forwarder's offset; it will resend from the last stored one");
    }
}

async fn forward(
    config: &JetStreamSection,
    log: &Arc<Log>,
    metrics: &Metrics,
    backoff: &mut Duration,
    acked: &mut u64,
) -> Result<(), ForwardError> {
    let (disconnected_tx, mut disconnected) = watch::channel(false);
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .event_callback(move |event| {
            if matches!(event, async_nats::Event::Disconnected) {
                disconnected_tx.send_replace(true);
            }
            std::future::ready(())
        })
        .connect(config.url.as_str())
        .await?;
    let context = jetstream::new(client);
    context
        .get_or_create_stream(jetstream::stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.>", config.subject_prefix)],
            duplicate_window: Duration::from_secs(config.duplicate_window_s),
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| ForwardError::Stream(e.to_string()))?;
    metrics.forwarder_connected.set(1);
    tracing::info!(url = %config.url, stream = %config.stream, "JetStream forwarder connected");

    let reader = config.reader.clone();
    let start = {
        let (log, reader) = (log.clone(), reader.clone());
        tokio::task::spawn_blocking(move || log.reader_offset(&reader)).await??.unwrap_or(0)
    };
    // `next_read`: the next offset to fetch; `acked`: everything below it is in the stream.
    let mut next_read = start;
    *acked = start;
    let mut stored = start;
    metrics.forwarder_offset.set(start);
    // The log says when it has more: no polling of the file or of a metric.
    let mut log_next_offset = log.watch_next_offset();
    let mut pending: VecDeque<Message> = VecDeque::new();
    let mut in_flight = FuturesOrdered::new();
    let mut last_store = tokio::time::Instant::now();
    loop {
        if *disconnected.borrow() {
            return Err(ForwardError::Disconnected);
        }
        // Refill from the log when the queue ran dry and the log has more.
        if pending.is_empty() && *log_next_offset.borrow_and_update() > next_read {
            let (log2, from) = (log.clone(), next_read);
            let blocks = tokio::task::spawn_blocking(move || log2.read_blocks(from, BLOCKS_PER_READ)).await??;
            // Records that become no message (the window processor's ticks) still count as
            // read, or the forwarder would stop at them.
            let mut read_to = next_read;
            for block in &blocks {
                let (_, records) = block.decode()?;
                for (offset, record) in &records {
                    let end = offset + record.width();
                    if end <= next_read {
                        continue;
                    }
                    let mut out = Vec::new();
                    messages(&config.subject_prefix, *offset, record, &mut out);
                    pending.extend(out.into_iter().filter(|m| m.offset >= next_read));
                    read_to = read_to.max(end);
                }
            }
            next_read = read_to;
        }
        // Publish up to the in-flight bound.
        while in_flight.len() < config.max_in_flight {
            let Some(message) = pending.pop_front() else { break };
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", message.id.as_str());
            let publish = context.publish_with_headers(message.subject, headers, message.payload.into());
            let ack = tokio::select! {
                ack = publish => ack?,
                _ = disconnected.wait_for(|d| *d) => return Err(ForwardError::Disconnected),
            };
            let offset = message.offset;
            in_flight.push_back(async move { (offset, std::future::IntoFuture::into_future(ack).await) });
        }
        if in_flight.is_empty() {
            // Nothing pending or in flight: everything read is acknowledged or had no message.
            if next_read > *acked {
                *acked = next_read;
                metrics.forwarder_offset.set(*acked);
            }
            if *acked > stored {
                store(log, &reader, *acked).await?;
                stored = *acked;
            }
            let more = log_next_offset.wait_for(|next| *next > next_read);
            tokio::select! {
                _ = tokio::time::timeout(IDLE_WAIT_MAX, more) => {}
                _ = disconnected.wait_for(|d| *d) => return Err(ForwardError::Disconnected),
            }
            continue;
        }
        // Wait for the oldest acknowledgement (in order, so `acked` only moves forward over
        // a contiguous prefix).
        let next = tokio::select! {
            next = in_flight.next() => next,
            _ = disconnected.wait_for(|d| *d) => return Err(ForwardError::Disconnected),
        };
        if let Some((offset, result)) = next {
            result?;
            *acked = offset + 1;
            metrics.forwarder_published.inc();
            metrics.forwarder_offset.set(*acked);
            *backoff = Duration::from_millis(100);
        }
        if last_store.elapsed() >= OFFSET_STORE_INTERVAL && *acked > stored {
            store(log, &reader, *acked).await?;
            stored = *acked;
            last_store = tokio::time::Instant::now();
        }
    }
}

async fn store(log: &Arc<Log>, reader: &str, offset: u64) -> Result<(), ForwardError> {
    let (log, reader) = (log.clone(), reader.to_string());
    tokio::task::spawn_blocking(move || log.set_reader_offset(&reader, offset)).await??;
    Ok(())
}
