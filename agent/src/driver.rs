//! The agent's core loop: group-commits submitted events into the outbox, drives one
//! protocol [`Sender`] per stream over the transport, and feeds ACKs and NAKs back.
//!
//! It runs on its own thread with a single-threaded runtime, because outbox commits block
//! (fsync): they then delay only this loop, never the inputs.

use crate::clock::Clock;
use crate::outbox::{Appended, Outbox, OutboxError};
use crate::transport::Transport;
use driftlog_protocol::sender::OwnedEvent;
use driftlog_protocol::wire::{Body, Direction, MacKey, ReplayGuard, Sealer, open};
use driftlog_protocol::{KeyId, Sender, SenderConfig, StreamId};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Stream ids of the built-in inputs.
pub const STREAM_APPLICATIONS: StreamId = 0;
pub const STREAM_HOST: StreamId = 1;
/// StatsD samples from the local listener (`driftlog_protocol::statsd::event`).
pub const STREAM_STATSD: StreamId = driftlog_protocol::statsd::event::STATSD_STREAM;

/// Events from one input call, answered once they are durable.
#[derive(Debug)]
pub struct Submission {
    pub stream: StreamId,
    pub events: Vec<OwnedEvent>,
    /// Gets the sequence number of the first event, or why the events were not accepted.
    pub reply: Option<oneshot::Sender<Result<Accepted, String>>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub stream: StreamId,
    pub epoch: u64,
    pub first_seq: u64,
}

/// Settings the loop needs beyond the outbox and transport.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub sender: SenderConfig,
    pub flush_interval: Duration,
    pub flush_max_events: usize,
    pub key_id: KeyId,
    pub key: MacKey,
    /// Where to publish [`crate::status::Status`] every second.
    pub status_path: Option<std::path::PathBuf>,
    /// The StatsD listener's counters, published with the status.
    pub statsd: Option<std::sync::Arc<crate::statsd::StatsdCounters>>,
}

/// Counters for `status` and the shutdown log line.
#[derive(Clone, Copy, Debug, Default)]
pub struct DriverStats {
    pub datagrams_sent: u64,
    pub send_errors: u64,
    pub datagrams_received: u64,
    /// Datagrams from the network that did not verify (forged, replayed, malformed ...).
    pub datagrams_rejected: u64,
    pub commits: u64,
}

pub struct Driver<T: Transport, C: Clock> {
    clock: C,
    config: DriverConfig,
    outbox: Outbox,
    transport: T,
    senders: BTreeMap<StreamId, Sender>,
    sealer: Sealer,
    /// Replay protection for collector frames, per collector boot epoch.
    replay: ReplayGuard<4, 256>,
    pending: Vec<Submission>,
    pending_events: usize,
    flush_at: Option<tokio::time::Instant>,
    status_at: tokio::time::Instant,
    /// Where the status goes for readers in this process (the metrics endpoint, the
    /// progress bar); `status.json` is for `driftlog-agent status`, another process.
    published: watch::Sender<Option<crate::status::Status>>,
    stats: DriverStats,
}

/// How often `status.json` is rewritten.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

impl<T: Transport, C: Clock> std::fmt::Debug for Driver<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("epoch", &self.outbox.epoch()).field("stats", &self.stats).finish()
    }
}

impl<T: Transport, C: Clock> Driver<T, C> {
    pub fn new(config: DriverConfig, mut outbox: Outbox, transport: T, clock: C) -> Result<Driver<T, C>, OutboxError> {
        let sealer = Sealer::new(config.key_id, config.key.clone(), outbox.epoch());
        let mut senders = BTreeMap::new();
        // Streams with events from earlier boots get a sender now, so their backlog drains.
        for stream in outbox.streams()? {
            senders.insert(stream, new_sender(&config, &mut outbox, stream));
        }
        Ok(Driver {
            clock,
            config,
            outbox,
            transport,
            senders,
            sealer,
            replay: ReplayGuard::new(60_000_000),
            pending: Vec::new(),
            pending_events: 0,
            flush_at: None,
            status_at: tokio::time::Instant::now(),
            published: watch::Sender::new(None),
            stats: DriverStats::default(),
        })
    }

    /// Runs until `shutdown` turns true and the submission channel is drained, then commits
    /// what is pending and returns.
    pub async fn run(
        mut self,
        mut submissions: mpsc::Receiver<Submission>,
        mut shutdown: watch::Receiver<bool>,
    ) -> DriverStats {
        let mut buf = vec![0u8; driftlog_protocol::wire::MAX_DATAGRAM_BYTES];
        // `closing`: shutdown was requested; drain what inputs already handed over, then stop.
        // `inputs_done`: every input dropped its end. That alone is no reason to stop: events
        // in the outbox still need sending and acknowledging.
        let (mut closing, mut inputs_done) = (false, false);
        loop {
            if closing && inputs_done {
                self.flush();
                self.pump().await;
                self.publish_status();
                return self.stats;
            }
            self.pump().await;
            let wake = self.next_wake();
            let accepting = !inputs_done && (closing || self.pending_events < self.config.flush_max_events);
            tokio::select! {
                biased;
                changed = shutdown.changed(), if !closing => {
                    if changed.is_err() || *shutdown.borrow() {
                        closing = true;
                        submissions.close();
                    }
                }
                submission = submissions.recv(), if accepting => match submission {
                    Some(submission) => self.queue(submission),
                    None => inputs_done = true,
                },
                received = self.transport.recv(&mut buf) => match received {
                    Ok(len) => self.handle_datagram(&buf[..len]),
                    Err(error) => tracing::debug!(%error, "receive failed"),
                },
                _ = tokio::time::sleep_until(wake) => self.handle_timers(),
            }
            if self.flush_at.is_some_and(|at| at <= tokio::time::Instant::now())
                || self.pending_events >= self.config.flush_max_events
            {
                self.flush();
            }
            if self.status_at <= tokio::time::Instant::now() {
                self.status_at = tokio::time::Instant::now() + STATUS_INTERVAL;
                self.publish_status();
            }
        }
    }

    fn queue(&mut self, submission: Submission) {
        self.pending_events += submission.events.len();
        self.pending.push(submission);
        self.flush_at.get_or_insert_with(|| tokio::time::Instant::now() + self.config.flush_interval);
    }

    /// Group commit: one durable append per stream for everything pending, then the replies.
    fn flush(&mut self) {
        self.flush_at = None;
        self.pending_events = 0;
        let pending = std::mem::take(&mut self.pending);
        let mut by_stream: BTreeMap<StreamId, Vec<Submission>> = BTreeMap::new();
        for submission in pending {
            by_stream.entry(submission.stream).or_default().push(submission);
        }
        for (stream, submissions) in by_stream {
            let events: Vec<OwnedEvent> = submissions.iter().flat_map(|s| s.events.iter().cloned()).collect();
            let result = self.outbox.append_owned(stream, &events);
            self.stats.commits += 1;
            if let Err(OutboxError::Storage(error)) = &result {
                self.recover(error);
            }
            if !self.senders.contains_key(&stream) {
                let sender = new_sender(&self.config, &mut self.outbox, stream);
                self.senders.insert(stream, sender);
            }
            reply_all(submissions, stream, self.outbox.epoch(), result);
        }
    }

    fn next_wake(&self) -> tokio::time::Instant {
        let now_mono = self.clock.mono();
        let now = tokio::time::Instant::now();
        let mut wake = now + Duration::from_secs(60);
        for sender in self.senders.values() {
            if let Some(deadline) = sender.poll_timeout() {
                wake = wake.min(now + deadline.saturating_duration_since(now_mono));
            }
        }
        if let Some(flush_at) = self.flush_at {
            wake = wake.min(flush_at);
        }
        wake.min(self.status_at)
    }

    fn handle_timers(&mut self) {
        let now = self.clock.mono();
        for sender in self.senders.values_mut() {
            sender.handle_timeout(now);
        }
    }

    fn handle_datagram(&mut self, datagram: &[u8]) {
        self.stats.datagrams_received += 1;
        let now = self.clock.mono();
        let key_id = self.config.key_id;
        let key = &self.config.key;
        let opened = match open(datagram, Direction::FromCollector, datagram.len(), |id| (id == key_id).then_some(key))
        {
            Ok(opened) => opened,
            Err(reason) => {
                self.stats.datagrams_rejected += 1;
                tracing::debug!(reason = reason.name(), "rejected a datagram");
                return;
            }
        };
        let header = opened.header;
        if self.replay.check(header.epoch, header.sent_at.as_micros()).is_err() {
            self.stats.datagrams_rejected += 1;
            return;
        }
        self.replay.accept(header.epoch, header.sent_at.as_micros());
        match opened.body {
            Body::Ack(ack) => {
                if let Some(sender) = self.senders.get_mut(&ack.stream) {
                    let mut backlog = self.outbox.backlog(ack.stream);
                    if let Err(error) = sender.handle_ack(now, &header, &ack, &mut backlog) {
                        tracing::warn!(%error, stream = ack.stream, "could not release acknowledged events");
                        self.recover(&error);
                    }
                }
            }
            Body::Nak(nak) => {
                if let Some(sender) = self.senders.get_mut(&nak.stream) {
                    sender.handle_nak(now, &nak, &self.outbox.backlog(nak.stream));
                }
            }
            _ => self.stats.datagrams_rejected += 1,
        }
    }

    /// After a failed write the outbox must be reopened before it works again.
    fn recover(&mut self, error: &dyn std::fmt::Display) {
        match self.outbox.recover_from_storage_error() {
            Ok(()) => {
                tracing::warn!(%error, max_bytes = self.outbox.max_bytes(), "outbox write failed; reopened it and lowered its bound")
            }
            Err(reopen) => tracing::error!(%error, %reopen, "outbox write failed and reopening it failed too"),
        }
    }

    /// Sends everything every sender has to send now.
    async fn pump(&mut self) {
        let now = self.clock.mono();
        let wall = self.clock.wall();
        let mut buf = vec![0u8; self.config.sender.max_datagram_bytes];
        let streams: Vec<StreamId> = self.senders.keys().copied().collect();
        for stream in streams {
            // Bounded: the sender's window limits what one pass can send.
            for _ in 0..1_024 {
                let Some(sender) = self.senders.get_mut(&stream) else { break };
                sender.handle_wall_clock(now, wall);
                let mut backlog = self.outbox.backlog(stream);
                let transmit = match sender.poll_transmit(now, &mut backlog, &mut self.sealer, &mut buf) {
                    Ok(Some(transmit)) => transmit,
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(%error, stream, "reading the outbox failed");
                        break;
                    }
                };
                match self.transport.send(&buf[..transmit.len]).await {
                    Ok(()) => self.stats.datagrams_sent += 1,
                    Err(error) => {
                        // Unreachable collector or no route: the sender's timers retry.
                        self.stats.send_errors += 1;
                        tracing::debug!(%error, "send failed");
                        break;
                    }
                }
            }
        }
    }

    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// The current figures, as `status` shows them.
    pub fn status(&mut self) -> crate::status::Status {
        let outbox = self.outbox.stats();
        let oldest = self.outbox.oldest_event().ok().flatten().and_then(|(epoch, mono, wall)| {
            if epoch == self.outbox.epoch() {
                Some(self.clock.mono().as_micros().saturating_sub(mono) as f64 / 1e6)
            } else {
                wall.map(|wall| (self.clock.wall().unix_micros - wall) as f64 / 1e6)
            }
        });
        let streams = self
            .senders
            .iter()
            .map(|(stream, sender)| {
                let stats = sender.stats();
                crate::status::StreamStatus {
                    stream: *stream,
                    rtt_ms: stats.smoothed_rtt.as_secs_f64() * 1e3,
                    ack_wait_ms: stats.smoothed_ack_wait.as_secs_f64() * 1e3,
                    events_sent: stats.events_sent,
                    events_retransmitted: stats.events_retransmitted,
                    backlog_events_sent: stats.backlog_events_sent,
                    tombstone_frames_sent: stats.tombstone_frames_sent,
                    timeouts: stats.timeouts,
                    unreachable: sender.is_unreachable(),
                    in_flight_frames: stats.in_flight_frames,
                }
            })
            .collect();
        crate::status::Status {
            written_at_unix_s: (self.clock.wall().unix_micros.max(0) / 1_000_000) as u64,
            epoch: self.outbox.epoch(),
            backlog_events: self.outbox.held_events(),
            backlog_bytes: self.outbox.held_bytes(),
            oldest_unacknowledged_age_s: oldest,
            appended_events: outbox.appended,
            dropped_events: outbox.dropped,
            refused_events: outbox.refused,
            released_events: outbox.released,
            storage_errors: outbox.storage_errors,
            outbox_max_bytes: self.outbox.max_bytes(),
            corrupt_segments: outbox.corrupt_segments,
            corrupt_events: outbox.corrupt_events,
            tombstones_forgotten: outbox.tombstones_forgotten,
            failed_append_events: outbox.failed_append_events,
            datagrams_sent: self.stats.datagrams_sent,
            datagrams_received: self.stats.datagrams_received,
            datagrams_rejected: self.stats.datagrams_rejected,
            send_errors: self.stats.send_errors,
            streams,
            statsd: self.config.statsd.as_ref().map(|counters| counters.status()),
        }
    }

    /// The status the driver publishes every second, for readers in this process.
    pub fn subscribe_status(&self) -> crate::metrics::StatusWatch {
        self.published.subscribe()
    }

    fn publish_status(&mut self) {
        // Release records otherwise wait for the next commit; a quiet agent writes them here.
        if let Err(error) = self.outbox.write_pending_releases(false) {
            tracing::debug!(%error, "cannot write release records");
        }
        let status = self.status();
        if let Some(path) = &self.config.status_path
            && let Err(error) = status.write(path)
        {
            tracing::debug!(%error, "cannot write status");
        }
        self.published.send_replace(Some(status));
    }

    pub fn sender_stats(&self, stream: StreamId) -> Option<driftlog_protocol::SenderStats> {
        self.senders.get(&stream).map(|s| s.stats())
    }
}

fn new_sender(config: &DriverConfig, outbox: &mut Outbox, stream: StreamId) -> Sender {
    let mut sender_config = config.sender.clone();
    sender_config.stream = stream;
    Sender::new(sender_config, &outbox.backlog(stream))
}

fn reply_all(submissions: Vec<Submission>, stream: StreamId, epoch: u64, result: Result<Appended, OutboxError>) {
    let appended = match result {
        Ok(appended) => appended,
        Err(error) => {
            let message = error.to_string();
            for submission in submissions {
                if let Some(reply) = submission.reply {
                    let _ = reply.send(Err(message.clone()));
                }
            }
            return;
        }
    };
    // The accepted events are a prefix of the concatenated submissions (`block` refuses the
    // tail), so a submission is accepted only if all of its events were.
    let mut seq = appended.first_seq;
    let mut accepted_left = appended.accepted;
    for submission in submissions {
        let count = submission.events.len();
        let outcome = if accepted_left >= count {
            accepted_left -= count;
            let accepted = Accepted { stream, epoch, first_seq: seq };
            seq += count as u64;
            Ok(accepted)
        } else {
            accepted_left = 0;
            Err("outbox full (drop_policy = \"block\")".to_string())
        };
        if let Some(reply) = submission.reply {
            // The input may have gone away; the events are stored either way.
            let _ = reply.send(outcome);
        }
    }
}
