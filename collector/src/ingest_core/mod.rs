//! The ingest core: admission, block building, commit pipelining and ACKs for the whole
//! fleet, as a deterministic state machine that performs no I/O and reads no clock (the
//! quinn-proto shape; [`crate::acceptor`] is its thread driver).
//!
//! Inputs are `handle_*` calls that take `now` (collector Unix time, µs, from the driver's
//! one clock); outputs are `poll_*` calls. After any input the driver polls, in this order:
//! 1. [`IngestCore::poll_commit`]: a commit to hand to the committer (at most one is in
//!    flight; its outcome comes back through [`IngestCore::handle_committed`]);
//! 2. [`IngestCore::poll_transmit`]: the ACKs and NAKs the committed state allows, each with
//!    the route its device's latest frame came by;
//! 3. [`IngestCore::poll_timeout`]: when to call [`IngestCore::handle_timeout`] at the latest.
//!
//! Invariants: nothing is acknowledged before the commit holding it succeeded; after a failed
//! commit everything not durable is forgotten (the devices still hold it and retransmit) and
//! frames are refused until a probe commit succeeds.

mod admission;
mod pipeline;
mod restore;
#[cfg(test)]
mod tests;

use crate::claims::Claims;
use crate::clocks::{ClockChanges, Clocks};
use crate::id_hash::IdMap;
use crate::ingest::Route;
use crate::keys::Keys;
use crate::log::block::{BlockBuilder, EncodedBlock};
use crate::metrics::AcceptorSnapshot;
use crate::source_filter::{SourceFilter, SourceFilterConfig, SourceFilterStats};
use crate::stream_states::StreamBounds;
use driftlog_protocol::endpoint::Endpoint;
use driftlog_protocol::wire::RejectCounts;
use driftlog_protocol::{DeviceId, Instant};
use std::time::Duration;

pub use pipeline::InFlight;
pub use restore::{Restored, restore};

/// How the core cuts commits and bounds what it keeps.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// A block is committed at the latest this long after its first accepted frame.
    pub flush_interval: Duration,
    pub max_block_bytes: usize,
    /// A commit is cut as soon as its blocks hold this much.
    pub max_commit_bytes: usize,
    /// Completeness claims are stored at most this often per stream (see [`Claims`]); `None`
    /// stores none (no windows are computed, so nothing reads them).
    pub claim_interval_ms: Option<u64>,
    pub max_streams: usize,
    pub source_filter: SourceFilterConfig,
}

/// After a failed commit, a probe asks this often whether the log takes a full commit again.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// An ACK or NAK sealed into the caller's buffer, and the way back to its device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub device: DeviceId,
    /// `None` when no frame of the device was seen since start (nothing to answer by).
    pub route: Option<Route>,
    pub len: usize,
}

/// Cumulative counts for the driver to publish as metrics (the core holds no metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestCounters {
    /// Frames not admitted because the log refused writes.
    pub frames_refused_log_unavailable: u64,
    /// Events in commits that succeeded.
    pub events_committed: u64,
    /// When the last commit holding events succeeded (collector µs since 1970).
    pub last_events_commit_unix_us: Option<u64>,
    /// Whether frames are admitted (false from a failed commit until a probe passes).
    pub accepting: bool,
}

/// The block being filled: the records of newly admitted events, gaps and claims.
#[derive(Debug)]
struct Filling {
    builder: BlockBuilder,
    events: u64,
    /// When its first frame was admitted: the flush interval counts from here.
    started: Option<Instant>,
    /// Buffers of committed blocks, reused by the next commit.
    spares: Vec<EncodedBlock>,
    /// Scratch for re-encoding the new part of a partly duplicated frame.
    chain_buf: Vec<u8>,
}

pub struct IngestCore {
    config: IngestConfig,
    endpoint: Endpoint<Keys>,
    /// The receivers' states in the log, and the bounds on them (see `stream_states`).
    bounds: StreamBounds,
    /// Sheds frames from sources that keep failing authentication, before the MAC check.
    filter: SourceFilter,
    /// The way each authenticated device's latest frame came, and when (collector ms since
    /// 1970). Bounded by the keyring.
    routes: IdMap<DeviceId, (Route, u64)>,
    filling: Filling,
    /// The commit handed out by `poll_commit` whose outcome has not come back.
    in_flight: Option<InFlight>,
    accepting: bool,
    next_probe: Instant,
    /// Shutting down: the next commit is cut at once, with every dirty clock model.
    draining: bool,
    clocks: Clocks,
    /// Clock models in the commit in flight, put back if it fails.
    clocks_in_flight: ClockChanges,
    claims: Option<Claims>,
    counters: IngestCounters,
}

impl std::fmt::Debug for IngestCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestCore")
            .field("streams", &self.endpoint.stream_count())
            .field("accepting", &self.accepting)
            .field("in_flight", &self.in_flight.is_some())
            .finish_non_exhaustive()
    }
}

impl IngestCore {
    pub fn new(config: IngestConfig, endpoint: Endpoint<Keys>, bounds: StreamBounds, clocks: Clocks) -> IngestCore {
        let claims = config.claim_interval_ms.map(|interval| Claims::new(interval, config.max_streams));
        let filling = Filling {
            builder: BlockBuilder::new(config.max_block_bytes),
            events: 0,
            started: None,
            spares: Vec::new(),
            chain_buf: vec![0; 65_536],
        };
        IngestCore {
            filter: SourceFilter::new(config.source_filter),
            config,
            endpoint,
            bounds,
            routes: IdMap::default(),
            filling,
            in_flight: None,
            accepting: true,
            next_probe: Instant::ZERO,
            draining: false,
            clocks,
            clocks_in_flight: ClockChanges::default(),
            claims,
            counters: IngestCounters { accepting: true, ..IngestCounters::default() },
        }
    }

    /// Refuses frames, as after a failed commit, until a probe commit succeeds: the log could
    /// not take a full commit when the collector started (a full disk).
    pub fn refuse_until_a_probe_passes(&mut self, now: Instant) {
        self.set_accepting(false);
        self.next_probe = now + PROBE_INTERVAL;
    }

    /// Timers: sweeps idle receivers out of memory and refilled buckets out of the source
    /// filter (each at most once a second). Commits and probes that fell due come out of
    /// [`IngestCore::poll_commit`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.bounds.sweep(&mut self.endpoint, now);
        self.filter.cleanup(now);
    }

    /// Starts the final drain: the next commit is cut at once, whatever the flush interval,
    /// and takes every changed clock model.
    pub fn handle_shutdown(&mut self) {
        self.draining = true;
    }

    /// The next ACK or NAK, sealed into `buf` (at least the endpoint's datagram size).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let transmit = self.endpoint.poll_transmit(now, buf)?;
        let route = self.routes.get(&transmit.device).map(|(route, _)| *route);
        Some(Transmit { device: transmit.device, route, len: transmit.len })
    }

    /// The latest time to call [`IngestCore::handle_timeout`] and poll again: a block's flush,
    /// a probe, or a receiver's retransmission timer. A flush waits for the commit in flight
    /// (its outcome, [`IngestCore::handle_committed`], is the next event), so while one is in
    /// flight an overdue flush is no deadline: a driver would wake for nothing, at once and
    /// again (the simulator's collector woke a million times in one run).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let flush = match self.in_flight {
            None => self.filling.started.map(|started| started + self.config.flush_interval),
            Some(_) => None,
        };
        let probe = (!self.accepting && self.in_flight.is_none()).then_some(self.next_probe);
        [flush, probe, self.endpoint.poll_timeout()].into_iter().flatten().min()
    }

    /// Whether a commit is in flight and the next one is already full: the driver then waits
    /// for the outcome instead of reading on (the sockets' buffers hold what arrives).
    pub fn is_waiting_on_commit(&self) -> bool {
        self.in_flight.is_some() && self.filling.builder.bytes() >= self.config.max_commit_bytes
    }

    pub fn is_commit_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Nothing admitted waits for a commit and none is in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.filling.builder.is_empty()
    }

    /// Whether the next block is full enough to commit without waiting for more.
    pub fn is_block_full(&self) -> bool {
        self.filling.builder.bytes() >= self.config.max_commit_bytes
    }

    /// Hands back the blocks of a finished commit, whose buffers the next ones reuse.
    pub fn recycle_blocks(&mut self, blocks: Vec<EncodedBlock>) {
        self.filling.spares = blocks;
    }

    pub fn replace_keyring(&mut self, keys: Keys) {
        self.endpoint.replace_keyring(keys);
    }

    pub fn counters(&self) -> IngestCounters {
        self.counters
    }

    /// What reject logging summarises: the endpoint's refusals and the source filter's.
    pub fn rejects(&self) -> (RejectCounts, SourceFilterStats) {
        (self.endpoint.stats().rejects, self.filter.stats())
    }

    /// The state metrics and `/health` show.
    pub fn snapshot(&mut self, now: Instant) -> AcceptorSnapshot {
        let endpoint = self.endpoint.stats();
        AcceptorSnapshot {
            bound_refused_at_unix_ms: self.bounds.refused_at(&endpoint.rejects, now.as_micros() / 1_000),
            stream_states: self.bounds.states.stats(),
            source_filter: self.filter.stats(),
            endpoint,
            streams: self.endpoint.stream_count(),
            devices_last_seen_unix_ms: self.routes.iter().map(|(device, (_, seen))| (*device, *seen)).collect(),
            clocks: self.clocks.estimates(),
            clock_samples_rejected: self.clocks.samples_rejected,
            clock_models_evicted: self.clocks.models_evicted,
        }
    }

    fn set_accepting(&mut self, accepting: bool) {
        self.accepting = accepting;
        self.counters.accepting = accepting;
    }
}
