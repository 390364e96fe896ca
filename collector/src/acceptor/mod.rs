//! The acceptor: the thread that drives the [`IngestCore`] for the whole fleet.
//!
//! It owns everything the core must not touch: the queue of received batches, the
//! committer's client, the reply paths, the clock (read once per batch and per pass, see
//! [`AcceptorClock`]), the keys file's modification time, the metrics it publishes and the
//! reject log. One commit is in flight at a time while the next block fills, so disk and CPU
//! work overlap.

mod keys_watch;
mod reject_log;

use crate::committer::{Client, CommitResult};
use crate::ingest::{Batch, ReplyPath};
use crate::ingest_core::{IngestCore, IngestCounters};
use crate::metrics::Metrics;
use crate::wall_clock::AcceptorClock;
use keys_watch::KeysWatch;
use reject_log::RejectLog;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant as StdInstant};

/// What the driver watches besides the core: the keys file, reloaded when it changes.
#[derive(Clone, Debug)]
pub struct AcceptorConfig {
    pub keys_file: Option<PathBuf>,
    pub key_mode: crate::keys::KeyMode,
}

const KEYS_CHECK_INTERVAL: Duration = Duration::from_secs(2);
const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(250);
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The longest the driver sleeps between passes (shutdown, probes and timers are checked).
const MAX_WAIT: Duration = Duration::from_millis(50);

/// When the driver's own periodic jobs fall due (its clock: these are not simulated).
#[derive(Debug)]
struct Chores {
    next_keys_check: StdInstant,
    next_snapshot: StdInstant,
    next_reject_log: StdInstant,
}

pub struct Acceptor {
    core: IngestCore,
    clock: AcceptorClock,
    batches: Receiver<Batch>,
    committer: Client,
    replies: Vec<Box<dyn ReplyPath>>,
    /// The buffer ACKs and NAKs are sealed into.
    out: Vec<u8>,
    metrics: Arc<Metrics>,
    /// The core's counters as last added to the metrics.
    published: IngestCounters,
    keys: KeysWatch,
    rejects: RejectLog,
    chores: Chores,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor").field("core", &self.core).finish_non_exhaustive()
    }
}

impl Acceptor {
    /// Drives `core` (built by [`crate::ingest_core::restore`]).
    pub fn new(
        config: AcceptorConfig,
        core: IngestCore,
        replies: Vec<Box<dyn ReplyPath>>,
        committer: Client,
        batches: Receiver<Batch>,
        metrics: Arc<Metrics>,
    ) -> Acceptor {
        let now = StdInstant::now();
        Acceptor {
            published: core.counters(),
            core,
            clock: AcceptorClock::default(),
            batches,
            committer,
            replies,
            out: vec![0; 2_048],
            metrics,
            keys: KeysWatch::new(config.keys_file, config.key_mode),
            rejects: RejectLog::default(),
            chores: Chores {
                next_keys_check: now + KEYS_CHECK_INTERVAL,
                next_snapshot: now,
                next_reject_log: now + REJECT_LOG_INTERVAL,
            },
        }
    }

    /// Runs until every source is gone (their queue's senders dropped: the sources stop on
    /// the service's shutdown signal), then commits what it holds, sends the last ACKs and
    /// returns. Nothing the sources queued is left behind: the queue closes only after
    /// their last batch.
    pub fn run(mut self) {
        loop {
            // Commit outcomes first: they release ACKs.
            while let Some(result) = self.committer.try_result() {
                self.committed(result);
            }
            if self.core.is_waiting_on_commit() {
                // The next commit is full and the disk is busy: wait for it instead of reading
                // on. The sockets' receive buffers hold what arrives meanwhile (overflow is
                // counted as kernel drops, and the devices retransmit it).
                let waiting = StdInstant::now();
                let result = self.committer.result_timeout(MAX_WAIT);
                let waited_us = waiting.elapsed().as_micros() as u64;
                self.metrics.ingest_waited_on_commit.inc_by(waited_us as f64 / 1e6);
                if let Some(result) = result {
                    self.committed(result);
                }
                self.pass();
                continue;
            }
            let wait = if self.core.is_commit_in_flight() { Duration::from_millis(1) } else { self.wait() };
            match self.batches.recv_timeout(wait) {
                Ok(batch) => self.batch(&batch),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Take whatever else is queued before deciding on a commit.
            for _ in 0..64 {
                if self.core.is_block_full() {
                    break;
                }
                match self.batches.try_recv() {
                    Ok(batch) => self.batch(&batch),
                    Err(_) => break,
                }
            }
            self.pass();
        }
        self.drain_for_shutdown();
    }

    fn drain_for_shutdown(&mut self) {
        while let Ok(batch) = self.batches.try_recv() {
            self.batch(&batch);
        }
        self.core.handle_shutdown();
        let deadline = StdInstant::now() + Duration::from_secs(10);
        while StdInstant::now() < deadline {
            self.pass();
            if self.core.is_idle() {
                break;
            }
            if let Some(result) = self.committer.result_timeout(MAX_WAIT) {
                self.committed(result);
            }
        }
        let now = self.clock.now();
        self.send_replies(now);
        self.publish_snapshot(now);
    }

    fn batch(&mut self, batch: &Batch) {
        let now = self.clock.now();
        self.core.handle_batch(now, batch);
    }

    fn committed(&mut self, result: CommitResult) {
        let now = self.clock.now();
        self.core.handle_committed(now, result);
        self.core.recycle_blocks(self.committer.spare_blocks());
        self.publish_counters();
    }

    /// How long to wait for the next batch: until the core's next timer, at most `MAX_WAIT`.
    fn wait(&mut self) -> Duration {
        let now = self.clock.now();
        let until = self.core.poll_timeout().map_or(MAX_WAIT, |at| at.saturating_duration_since(now));
        until.min(MAX_WAIT)
    }

    /// One pass over the core's outputs and the driver's chores.
    fn pass(&mut self) {
        let now = self.clock.now();
        self.core.handle_timeout(now);
        if let Some(commit) = self.core.poll_commit(now) {
            // The core hands out one commit at a time: the committer's slot for us is free.
            if let Err(error) = self.committer.submit(commit) {
                tracing::error!(%error, "commit not taken");
                self.core.handle_not_taken();
            }
        }
        self.send_replies(now);
        self.publish_counters();
        let wall = StdInstant::now();
        if wall >= self.chores.next_snapshot {
            self.publish_snapshot(now);
            self.chores.next_snapshot = wall + SNAPSHOT_INTERVAL;
        }
        if wall >= self.chores.next_keys_check {
            if let Some(keys) = self.keys.changed() {
                self.core.replace_keyring(keys);
            }
            self.chores.next_keys_check = wall + KEYS_CHECK_INTERVAL;
        }
        if wall >= self.chores.next_reject_log {
            let (rejects, filter) = self.core.rejects();
            self.rejects.report(&rejects, &filter);
            self.chores.next_reject_log = wall + REJECT_LOG_INTERVAL;
        }
    }

    fn send_replies(&mut self, now: driftlog_protocol::Instant) {
        while let Some(transmit) = self.core.poll_transmit(now, &mut self.out) {
            let reply =
                transmit.route.and_then(|route| Some((route, self.replies.get_mut(usize::from(route.source))?)));
            let sent =
                reply.is_some_and(|(route, reply)| reply.send(transmit.device, route.peer, &self.out[..transmit.len]));
            if !sent {
                self.metrics.replies_dropped.inc();
            }
        }
    }

    /// Adds what the core counted since the last call to the metrics.
    fn publish_counters(&mut self) {
        let (now, before) = (self.core.counters(), self.published);
        let refused = now.frames_refused_log_unavailable - before.frames_refused_log_unavailable;
        if refused > 0 {
            self.metrics.frames_refused_log_unavailable.inc_by(refused);
        }
        if now.events_committed > before.events_committed {
            self.metrics.events_committed.inc_by(now.events_committed - before.events_committed);
        }
        if now.last_events_commit_unix_us != before.last_events_commit_unix_us
            && let Some(at_us) = now.last_events_commit_unix_us
        {
            self.metrics.last_events_commit.set(at_us as f64 / 1e6);
        }
        if now.accepting != before.accepting {
            self.metrics.set_log_accepting(now.accepting);
        }
        self.published = now;
    }

    fn publish_snapshot(&mut self, now: driftlog_protocol::Instant) {
        let snapshot = self.core.snapshot(now);
        *self.metrics.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
    }
}
