//! The agent's IO shell around [`AgentCore`]: submissions from the inputs, datagrams
//! from the transport, the clocks, and the status published every second.
//!
//! Everything that decides (group commit, senders, ACKs, recovery from storage errors) is
//! in the core; this loop only reads the clocks, waits on the channels, the socket and
//! the core's next deadline, and carries the core's output out.
//!
//! It runs on its own thread with a single-threaded runtime, because outbox commits block
//! (fsync): they then delay only this loop, never the inputs.

pub use crate::agent_core::{Accepted, CoreConfig, DriverStats, NotAccepted};

use crate::agent_core::AgentCore;
use crate::clock::Clock;
use crate::outbox::{Outbox, OutboxError};
use crate::transport::Transport;
use driftlog_protocol::StreamId;
use driftlog_protocol::sender::OwnedEvent;
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
    pub reply: Option<oneshot::Sender<Result<Accepted, NotAccepted>>>,
}

/// Settings the loop needs beyond the outbox and transport.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub core: CoreConfig,
    /// Where to publish [`crate::status::Status`] every second.
    pub status_path: Option<std::path::PathBuf>,
    /// The StatsD listener's counters, published with the status.
    pub statsd: Option<std::sync::Arc<crate::statsd::StatsdCounters>>,
}

type Reply = Option<oneshot::Sender<Result<Accepted, NotAccepted>>>;

pub struct Driver<T: Transport, C: Clock> {
    clock: C,
    core: AgentCore<Reply>,
    transport: T,
    status_path: Option<std::path::PathBuf>,
    statsd: Option<std::sync::Arc<crate::statsd::StatsdCounters>>,
    /// Where the status goes for readers in this process (the metrics endpoint, the
    /// progress bar); `status.json` is for `driftlog-agent status`, another process.
    published: watch::Sender<Option<crate::status::Status>>,
    /// The datagram `poll_transmit` writes, reused.
    out: Vec<u8>,
}

impl<T: Transport, C: Clock> std::fmt::Debug for Driver<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("core", &self.core).finish()
    }
}

impl<T: Transport, C: Clock> Driver<T, C> {
    pub fn new(config: DriverConfig, outbox: Outbox, transport: T, clock: C) -> Result<Driver<T, C>, OutboxError> {
        let core = AgentCore::new(config.core, outbox, clock.mono())?;
        Ok(Driver {
            clock,
            core,
            transport,
            status_path: config.status_path,
            statsd: config.statsd,
            published: watch::Sender::new(None),
            out: vec![0u8; driftlog_protocol::wire::MAX_DATAGRAM_BYTES],
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
        self.publish_status();
        loop {
            if closing && inputs_done {
                self.core.close();
                self.answer_inputs();
                self.pump().await;
                self.publish_status();
                return self.core.stats();
            }
            self.answer_inputs();
            self.pump().await;
            if self.core.take_status_due() {
                self.publish_status();
            }
            let wake = self.wake_at();
            tokio::select! {
                biased;
                changed = shutdown.changed(), if !closing => {
                    if changed.is_err() || *shutdown.borrow() {
                        closing = true;
                        submissions.close();
                    }
                }
                submission = submissions.recv(), if !inputs_done => match submission {
                    Some(Submission { stream, events, reply }) => {
                        self.core.handle_submission(self.clock.mono(), stream, events, reply)
                    }
                    None => inputs_done = true,
                },
                received = self.transport.recv(&mut buf) => match received {
                    Ok(len) => {
                        self.core.handle_datagram(self.clock.mono(), &buf[..len]);
                    }
                    Err(error) => tracing::debug!(%error, "receive failed"),
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
            // Whatever woke the loop: a busy channel or socket must not starve the timers
            // (the branches above are polled first).
            let now = self.clock.mono();
            if self.core.poll_timeout() <= now {
                self.core.handle_timeout(now);
            }
        }
    }

    /// The core's next deadline (device time) as a tokio instant.
    fn wake_at(&self) -> tokio::time::Instant {
        let deadline = self.core.poll_timeout();
        tokio::time::Instant::now() + deadline.saturating_duration_since(self.clock.mono())
    }

    fn answer_inputs(&mut self) {
        while let Some((reply, outcome)) = self.core.poll_reply() {
            if let Some(reply) = reply {
                // The input may have gone away; the events are stored either way.
                let _ = reply.send(outcome);
            }
        }
    }

    /// Sends everything the core has to send now.
    async fn pump(&mut self) {
        // One reading of the clocks per pass (the wall clock's quality is a file check).
        let (now, wall) = (self.clock.mono(), self.clock.wall());
        // Bounded: the senders' windows limit what one pass can send.
        for _ in 0..4_096 {
            let Some(len) = self.core.poll_transmit(now, wall, &mut self.out) else {
                break;
            };
            if let Err(error) = self.transport.send(&self.out[..len]).await {
                // Unreachable collector or no route: the sender's timers retry.
                self.core.handle_send_error();
                tracing::debug!(%error, "send failed");
                break;
            }
        }
    }

    pub fn stats(&self) -> DriverStats {
        self.core.stats()
    }

    /// The current figures, as `status` shows them.
    pub fn status(&mut self) -> crate::status::Status {
        let now = self.clock.mono();
        let wall = self.clock.wall();
        let core = &mut self.core;
        let stats = core.stats();
        let outbox = core.outbox().stats();
        let this_boot = core.outbox().epoch();
        let oldest = core.outbox_mut().oldest_event().ok().flatten().and_then(|(epoch, mono, event_wall)| {
            if epoch == this_boot {
                Some(now.as_micros().saturating_sub(mono) as f64 / 1e6)
            } else {
                event_wall.map(|event_wall| (wall.unix_micros - event_wall) as f64 / 1e6)
            }
        });
        let streams = core
            .streams()
            .filter_map(|stream| Some((stream, core.sender_stats(stream)?)))
            .map(|(stream, sender)| crate::status::StreamStatus {
                stream,
                rtt_ms: sender.smoothed_rtt.as_secs_f64() * 1e3,
                ack_wait_ms: sender.smoothed_ack_wait.as_secs_f64() * 1e3,
                events_sent: sender.events_sent,
                events_retransmitted: sender.events_retransmitted,
                backlog_events_sent: sender.backlog_events_sent,
                tombstone_frames_sent: sender.tombstone_frames_sent,
                timeouts: sender.timeouts,
                unreachable: core.is_unreachable(stream),
                in_flight_frames: sender.in_flight_frames,
            })
            .collect();
        let held = core.outbox();
        crate::status::Status {
            written_at_unix_s: (wall.unix_micros.max(0) / 1_000_000) as u64,
            epoch: held.epoch(),
            backlog_events: held.held_events(),
            backlog_bytes: held.held_bytes(),
            oldest_unacknowledged_age_s: oldest,
            appended_events: outbox.appended,
            dropped_events: outbox.dropped,
            refused_events: outbox.refused,
            released_events: outbox.released,
            storage_errors: outbox.storage_errors,
            outbox_max_bytes: held.max_bytes(),
            corrupt_segments: outbox.corrupt_segments,
            corrupt_events: outbox.corrupt_events,
            tombstones_forgotten: outbox.tombstones_forgotten,
            failed_append_events: outbox.failed_append_events,
            datagrams_sent: stats.datagrams_sent,
            datagrams_received: stats.datagrams_received,
            datagrams_rejected: stats.datagrams_rejected,
            send_errors: stats.send_errors,
            streams,
            statsd: self.statsd.as_ref().map(|counters| counters.status()),
        }
    }

    /// The status the driver publishes every second, for readers in this process.
    pub fn subscribe_status(&self) -> crate::metrics::StatusWatch {
        self.published.subscribe()
    }

    fn publish_status(&mut self) {
        let status = self.status();
        if let Some(path) = &self.status_path
            && let Err(error) = status.write(path)
        {
            tracing::debug!(%error, "cannot write status");
        }
        self.published.send_replace(Some(status));
    }

    pub fn sender_stats(&self, stream: StreamId) -> Option<driftlog_protocol::SenderStats> {
        self.core.sender_stats(stream)
    }
}
