//! The acceptor: one thread that owns the protocol [`Endpoint`] for the whole fleet.
//!
//! It takes received datagrams from every source, admits each event once, encodes the new
//! ones into the next log block, hands a block (with the dedup state of every receiver it
//! touched) to the committer, and sends the ACKs that the committed state allows back the way
//! each device's frames came. One commit is in flight at a time while the next block fills,
//! so disk and CPU work overlap.
//!
//! When a commit fails (disk full, log at its bound) every receiver rolls back to its last
//! durable state and frames are refused until a probe commit succeeds: nothing unwritten is
//! ever acknowledged or remembered as seen, so the devices keep and retransmit it.

use crate::claims::Claims;
use crate::clocks::{ClockChanges, Clocks};
use crate::committer::{Client, CommitResult};
use crate::id_hash::IdMap;
use crate::ingest::{Batch, ReplyPath, Route};
use crate::keys::Keys;
use crate::log::block::BlockBuilder;
use crate::log::record::{EventsHead, GapHead, RecordKind, encode_gap, encode_head};
use crate::log::{Commit, Dedup};
use crate::metrics::{AcceptorSnapshot, Metrics};
use crate::source_filter::{SourceFilter, SourceFilterConfig, is_unauthenticated};
use crate::stream_states::StreamBounds;
use driftlog_eventtime::clock::ClockConfig;
use driftlog_protocol::endpoint::{Delivery, Endpoint, Received};
use driftlog_protocol::ids::StreamKey;
use driftlog_protocol::wire::{DropReason, EventChainWriter};
use driftlog_protocol::{DeviceId, Instant};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant as StdInstant};

#[derive(Clone, Debug)]
pub struct AcceptorConfig {
    pub flush_interval: Duration,
    pub max_block_bytes: usize,
    pub max_commit_bytes: usize,
    pub keys_file: Option<PathBuf>,
    /// Completeness claims are stored at most this often per stream (see [`Claims`]); `None`
    /// stores none (no windows are computed, so nothing reads them).
    pub claim_interval_ms: Option<u64>,
    pub max_streams: usize,
    pub key_mode: crate::keys::KeyMode,
    pub source_filter: SourceFilterConfig,
}

const PROBE_INTERVAL: Duration = Duration::from_secs(1);
const KEYS_CHECK_INTERVAL: Duration = Duration::from_secs(2);
const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(250);
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct InFlight {
    states: Vec<(StreamKey, Dedup)>,
    events: u64,
    /// Stream floors in the commit, put back if it fails.
    floors: Vec<((DeviceId, driftlog_protocol::StreamId), driftlog_protocol::Epoch)>,
}

pub struct Acceptor {
    config: AcceptorConfig,
    endpoint: Endpoint<Keys>,
    /// The receivers' states in the log, and the bounds on them (see `stream_states`).
    bounds: StreamBounds,
    /// Sheds frames from sources that keep failing authentication, before the MAC check.
    filter: SourceFilter,
    replies: Vec<Box<dyn ReplyPath>>,
    /// The way each authenticated device's latest frame came, and when (collector ms since
    /// 1970). Bounded by the keyring.
    routes: IdMap<DeviceId, (Route, u64)>,
    builder: BlockBuilder,
    block_events: u64,
    block_started: Option<StdInstant>,
    in_flight: Option<InFlight>,
    accepting: bool,
    next_probe: StdInstant,
    chain_buf: Vec<u8>,
    committer: Client,
    batches: Receiver<Batch>,
    metrics: Arc<Metrics>,
    /// The endpoint's clock is collector Unix time (µs), monotonic from this origin: ACKs
    /// carry it as t2/t3 of the four-timestamp exchange, which the clock models need on the
    /// same scale as receive times.
    origin: StdInstant,
    origin_unix_us: u64,
    clocks: Clocks,
    /// Clock models in the commit in flight, put back if it fails.
    clocks_in_flight: ClockChanges,
    claims: Option<Claims>,
    keys_modified: Option<std::time::SystemTime>,
    next_keys_check: StdInstant,
    next_snapshot: StdInstant,
    next_reject_log: StdInstant,
    rejects_logged: u64,
    out: Vec<u8>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor").field("streams", &self.endpoint.stream_count()).finish_non_exhaustive()
    }
}

pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn modified(path: &Option<PathBuf>) -> Option<std::time::SystemTime> {
    path.as_ref().and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

impl Acceptor {
    pub fn new(
        config: AcceptorConfig,
        endpoint: Endpoint<Keys>,
        bounds: StreamBounds,
        replies: Vec<Box<dyn ReplyPath>>,
        committer: Client,
        batches: Receiver<Batch>,
        metrics: Arc<Metrics>,
    ) -> Acceptor {
        let now = StdInstant::now();
        let keys_modified = modified(&config.keys_file);
        let builder = BlockBuilder::new(config.max_block_bytes);
        let claims = config.claim_interval_ms.map(|interval| Claims::new(interval, config.max_streams));
        let filter = SourceFilter::new(config.source_filter);
        Acceptor {
            filter,
            config,
            endpoint,
            bounds,
            replies,
            routes: IdMap::default(),
            builder,
            block_events: 0,
            block_started: None,
            in_flight: None,
            accepting: true,
            next_probe: now,
            chain_buf: vec![0; 65_536],
            committer,
            batches,
            metrics,
            origin: now,
            origin_unix_us: (now_unix_ms()).saturating_mul(1_000),
            clocks: Clocks::new(ClockConfig::default(), 100_000),
            clocks_in_flight: Default::default(),
            claims,
            keys_modified,
            next_keys_check: now + KEYS_CHECK_INTERVAL,
            next_snapshot: now,
            next_reject_log: now + REJECT_LOG_INTERVAL,
            rejects_logged: 0,
            out: vec![0; 2_048],
        }
    }

    /// Starts refusing frames, as after a failed commit, until a probe commit succeeds: the
    /// log could not take a full commit when the collector started (a full disk).
    pub fn refusing_until_a_probe_passes(mut self) -> Acceptor {
        self.accepting = false;
        self.next_probe = StdInstant::now() + PROBE_INTERVAL;
        self.metrics.set_log_accepting(false);
        self
    }

    /// Uses `clocks` (restored from the log, with the configured bounds).
    pub fn with_clocks(mut self, clocks: Clocks) -> Acceptor {
        self.clocks = clocks;
        self
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.origin_unix_us.saturating_add(self.origin.elapsed().as_micros() as u64))
    }

    /// Runs until `shutdown` is set (or every source is gone), then commits what it holds,
    /// sends the last ACKs and returns.
    pub fn run(mut self, shutdown: &std::sync::atomic::AtomicBool) {
        while !shutdown.load(Ordering::Relaxed) {
            // Commit outcomes first: they release ACKs.
            while let Some(result) = self.committer.try_result() {
                self.handle_committed(result);
            }
            if self.in_flight.is_some() && self.builder.bytes() >= self.config.max_commit_bytes {
                // The next commit is full and the disk is busy: wait for it instead of reading
                // on. The sockets' receive buffers hold what arrives meanwhile (overflow is
                // counted as kernel drops, and the devices retransmit it).
                let waiting = StdInstant::now();
                let result = self.committer.result_timeout(Duration::from_millis(50));
                let waited_us = waiting.elapsed().as_micros() as u64;
                self.metrics.ingest_waited_on_commit.inc_by(waited_us as f64 / 1e6);
                if let Some(result) = result {
                    self.handle_committed(result);
                }
                self.tick(false);
                continue;
            }
            let wait = if self.in_flight.is_some() {
                Duration::from_millis(1)
            } else {
                self.next_wakeup().saturating_duration_since(StdInstant::now()).min(Duration::from_millis(50))
            };
            match self.batches.recv_timeout(wait) {
                Ok(batch) => self.handle_batch(&batch),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Take whatever else is queued before deciding on a commit.
            for _ in 0..64 {
                if self.builder.bytes() >= self.config.max_commit_bytes {
                    break;
                }
                match self.batches.try_recv() {
                    Ok(batch) => self.handle_batch(&batch),
                    Err(_) => break,
                }
            }
            self.tick(false);
        }
        self.drain_for_shutdown();
    }

    fn drain_for_shutdown(&mut self) {
        while let Ok(batch) = self.batches.try_recv() {
            self.handle_batch(&batch);
        }
        let deadline = StdInstant::now() + Duration::from_secs(10);
        while StdInstant::now() < deadline {
            self.tick(true);
            if self.in_flight.is_none() && self.builder.is_empty() {
                break;
            }
            if let Some(result) = self.committer.result_timeout(Duration::from_millis(50)) {
                self.handle_committed(result);
            }
        }
        self.send_replies();
        self.publish_snapshot();
    }

    fn next_wakeup(&self) -> StdInstant {
        let mut at = StdInstant::now() + Duration::from_millis(50);
        if let Some(started) = self.block_started {
            at = at.min(started + self.config.flush_interval);
        }
        if let Some(deadline) = self.endpoint.poll_timeout() {
            let now = self.now();
            let wait = Duration::from_micros(deadline.as_micros().saturating_sub(now.as_micros()));
            at = at.min(StdInstant::now() + wait);
        }
        at
    }

    fn tick(&mut self, shutting_down: bool) {
        self.maybe_commit(shutting_down);
        self.send_replies();
        let now = StdInstant::now();
        if now >= self.next_snapshot {
            self.publish_snapshot();
            self.next_snapshot = now + SNAPSHOT_INTERVAL;
        }
        let endpoint_now = self.now();
        self.bounds.sweep(&mut self.endpoint, endpoint_now);
        self.filter.cleanup(now);
        if now >= self.next_keys_check {
            self.reload_keys();
            self.next_keys_check = now + KEYS_CHECK_INTERVAL;
        }
        if now >= self.next_reject_log {
            self.log_rejects();
            self.next_reject_log = now + REJECT_LOG_INTERVAL;
        }
    }

    fn handle_batch(&mut self, batch: &Batch) {
        if !self.accepting {
            // Not admitted, so not remembered: the devices retransmit once we accept again.
            self.metrics.frames_refused_log_unavailable.inc_by(batch.len() as u64);
            return;
        }
        let now = self.now();
        let received_unix_ms = (batch.received_unix_us / 1_000).max(0) as u64;
        let mut accepted = false;
        let arrived = StdInstant::now();
        for (datagram, route) in batch.iter() {
            if !self.filter.admits(route.peer, arrived) {
                continue;
            }
            let received = match self.endpoint.handle_datagram_with(now, datagram, &mut self.bounds.states) {
                Ok(received) => received,
                Err(reason) => {
                    if is_unauthenticated(reason) {
                        self.filter.failed(route.peer, arrived);
                    }
                    continue;
                }
            };
            accepted = true;
            self.bounds.states.observe(&received);
            let device = received.stream.device;
            self.sample_clock(&received, batch.received_unix_us);
            self.routes.insert(device, (route, received_unix_ms));
            self.record(&received, batch.received_unix_us);
        }
        if accepted && self.block_started.is_none() {
            self.block_started = Some(StdInstant::now());
        }
    }

    /// Every accepted frame is a one-way clock sample of the sender's boot; a heartbeat may
    /// also report a completed four-timestamp exchange.
    fn sample_clock(&mut self, received: &Received<'_>, received_unix_us: i64) {
        let device = received.stream.device;
        let header = &received.header;
        self.clocks.handle_frame(device, header.epoch, header.sent_at.as_micros(), received_unix_us);
        if let Delivery::Heartbeat { heartbeat, .. } = &received.delivery
            && let Some(timing) = heartbeat.ack_timing
        {
            let times = (
                timing.device_sent_at.as_micros(),
                timing.collector_received_at.as_micros() as i64,
                timing.collector_sent_at.as_micros() as i64,
                timing.device_received_at.as_micros(),
            );
            self.clocks.handle_exchange(device, header.epoch, times, received_unix_us);
        }
    }

    /// Appends the new parts of an accepted frame to the next block.
    fn record(&mut self, received: &Received<'_>, received_unix_us: i64) {
        let key = received.stream;
        match &received.delivery {
            Delivery::Events { frame, new } => {
                for range in new {
                    let head = EventsHead {
                        device: key.device,
                        stream: key.stream,
                        epoch: key.epoch,
                        first_seq: range.start,
                        count: range.len() as u32,
                        sent_at_us: received.header.sent_at.as_micros(),
                        sent_epoch: received.header.epoch,
                        received_unix_us,
                        clock: None,
                    };
                    // The block's first run of this slot stores the model as it stands now.
                    let clock = || self.clocks.fix(key.device, key.epoch);
                    self.block_events += range.len();
                    if *range == frame.range() {
                        // The whole frame is new (the common case): store its bytes as they came.
                        self.builder.push_events(head, clock, frame.event_bytes());
                        continue;
                    }
                    let mut writer = EventChainWriter::new(&mut self.chain_buf);
                    // A partly duplicated frame (rare): decode it again to take the new part.
                    for (_, event) in frame.events().filter(|(seq, _)| range.contains(*seq)) {
                        // The frame held these in order within one datagram: they fit.
                        let _ = writer.push(&event);
                    }
                    let len = writer.len();
                    self.builder.push_events(head, clock, &self.chain_buf[..len]);
                }
            }
            Delivery::Tombstone { new, reason } => {
                for range in new {
                    let head = GapHead {
                        device: key.device,
                        stream: key.stream,
                        epoch: key.epoch,
                        range: *range,
                        reason: *reason,
                        received_unix_us,
                    };
                    self.builder.push(1, |out| encode_gap(RecordKind::Tombstone, &head, out));
                }
            }
            Delivery::Heartbeat { heartbeat, unrecoverable } => {
                for range in unrecoverable {
                    let head = GapHead {
                        device: key.device,
                        stream: key.stream,
                        epoch: key.epoch,
                        range: *range,
                        reason: DropReason::Unrecoverable,
                        received_unix_us,
                    };
                    self.builder.push(1, |out| encode_gap(RecordKind::Gap, &head, out));
                }
                // After the gaps it explains: the window pipeline reads them in this order.
                if let Some(claims) = &mut self.claims
                    && let Some(claim) = claims.admit(key, &received.header, heartbeat, received_unix_us, &self.clocks)
                {
                    self.builder.push(1, |out| encode_head(RecordKind::Claim, &claim, out));
                }
            }
        }
    }

    fn maybe_commit(&mut self, shutting_down: bool) {
        if self.in_flight.is_some() {
            return;
        }
        if !self.accepting {
            if StdInstant::now() >= self.next_probe {
                // Ask whether a full commit fits again; frames stay refused until it does.
                let probe = Commit { reserve_bytes: self.config.max_commit_bytes as u64, ..Commit::default() };
                if self.committer.submit(probe).is_ok() {
                    self.in_flight = Some(InFlight { states: Vec::new(), events: 0, floors: Vec::new() });
                }
                self.next_probe = StdInstant::now() + PROBE_INTERVAL;
            }
            return;
        }
        let Some(started) = self.block_started else { return };
        let due = shutting_down
            || started.elapsed() >= self.config.flush_interval
            || self.builder.bytes() >= self.config.max_commit_bytes;
        if !due {
            return;
        }
        let states = self.endpoint.uncommitted();
        self.block_started = None;
        if states.is_empty() && self.builder.is_empty() && !self.bounds.states.has_pending_floors() {
            return; // Nothing changed (a heartbeat, a duplicate).
        }
        let streams = states
            .iter()
            .map(|(key, state)| (*key, self.endpoint.key_id(key).unwrap_or_default(), state.clone()))
            .collect();
        let changes = self.clocks.take_dirty(self.now().as_micros() as i64, shutting_down);
        let floors = self.bounds.states.take_floors();
        let commit = Commit {
            blocks: self.builder.finish_into(now_unix_ms(), self.committer.spare_blocks()),
            streams,
            clocks: changes.changed.clone(),
            clocks_removed: changes.removed.clone(),
            floors: floors.clone(),
            ..Commit::default()
        };
        self.clocks_in_flight = changes;
        let events = std::mem::take(&mut self.block_events);
        // The committer takes one commit at a time and we send only when none is in flight.
        if let Err(error) = self.committer.submit(commit) {
            tracing::error!(%error, "commit not taken; rolling back");
            self.endpoint.rollback_uncommitted();
            self.bounds.states.restore_floors(floors);
            return;
        }
        self.in_flight = Some(InFlight { states, events, floors });
    }

    fn handle_committed(&mut self, result: CommitResult) {
        let Some(in_flight) = self.in_flight.take() else { return };
        let now = self.now();
        match result {
            Ok(committed) => {
                self.bounds.states.committed(&committed.stream_states);
                self.clocks_in_flight = Default::default();
                for (stream, state) in &in_flight.states {
                    self.endpoint.handle_durable(now, *stream, state);
                }
                self.metrics.events_committed.inc_by(in_flight.events);
                if in_flight.events > 0 {
                    let now_unix_us = crate::ingest::now_unix_us().max(0) as u64;
                    self.metrics.last_events_commit.set(now_unix_us as f64 / 1e6);
                }
                if !self.accepting {
                    tracing::info!("log accepts writes again; acknowledging");
                    self.accepting = true;
                    self.metrics.set_log_accepting(true);
                }
            }
            Err(error) => {
                if self.accepting {
                    tracing::error!(%error, "commit failed: not acknowledging until the log takes writes again");
                }
                self.accepting = false;
                self.metrics.set_log_accepting(false);
                // Forget everything not durable, including what was admitted after this
                // commit was cut: the devices still hold it and will send it again.
                self.endpoint.rollback_uncommitted();
                self.bounds.states.restore_floors(in_flight.floors);
                self.clocks.restore_dirty(std::mem::take(&mut self.clocks_in_flight));
                if let Some(claims) = &mut self.claims {
                    claims.forget();
                }
                self.builder.finish(0);
                self.block_events = 0;
                self.block_started = None;
                self.next_probe = StdInstant::now() + PROBE_INTERVAL;
            }
        }
    }

    fn send_replies(&mut self) {
        let now = self.now();
        while let Some(transmit) = self.endpoint.poll_transmit(now, &mut self.out) {
            let sent = match self.routes.get(&transmit.device) {
                Some((route, _)) => match self.replies.get_mut(usize::from(route.source)) {
                    Some(reply) => reply.send(transmit.device, route.peer, &self.out[..transmit.len]),
                    None => false,
                },
                None => false,
            };
            if !sent {
                self.metrics.replies_dropped.inc();
            }
        }
    }

    fn publish_snapshot(&mut self) {
        let endpoint = self.endpoint.stats();
        let snapshot = AcceptorSnapshot {
            bound_refused_at_unix_ms: self.bounds.refused_at(&endpoint.rejects, now_unix_ms()),
            stream_states: self.bounds.states.stats(),
            source_filter: self.filter.stats(),
            endpoint,
            streams: self.endpoint.stream_count(),
            devices_last_seen_unix_ms: self.routes.iter().map(|(device, (_, seen))| (*device, *seen)).collect(),
            clocks: self.clocks.estimates(),
            clock_samples_rejected: self.clocks.samples_rejected,
            clock_models_evicted: self.clocks.models_evicted,
        };
        *self.metrics.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
    }

    fn reload_keys(&mut self) {
        let current = modified(&self.config.keys_file);
        if current == self.keys_modified {
            return;
        }
        self.keys_modified = current;
        let Some(path) = &self.config.keys_file else { return };
        match crate::keys::load_keyring(Some(path), self.config.key_mode) {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), path = %path.display(), "keys file reloaded");
                self.endpoint.replace_keyring(keys);
            }
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "keys file changed but cannot be used; keeping the old keys"
            ),
        }
    }

    /// Per-packet problems are summarised at most every [`REJECT_LOG_INTERVAL`].
    fn log_rejects(&mut self) {
        let rejects = self.endpoint.stats().rejects;
        // Frames shed unread by the source filter count here too: a flood is one line per
        // interval, whatever its rate.
        let filter = self.filter.stats();
        let total = rejects.total() + filter.shed;
        if total > self.rejects_logged {
            let by_reason: Vec<String> =
                rejects.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{}={n}", r.name())).collect();
            tracing::warn!(
                new = total - self.rejects_logged,
                totals = %by_reason.join(","),
                shed = filter.shed,
                shedding_sources = filter.sources,
                "frames rejected"
            );
            self.rejects_logged = total;
        }
    }
}
