//! The collector side of the [`World`]: the real ingest core (admission, commit pipelining,
//! rollback, ACKs) and the real log (redb on a [`SimLogDisk`]), started the way the collector
//! starts ([`restore`]), crashed at any step and restarted.
//!
//! The simulated committer takes the core's commit, waits the disk's latency, then writes it
//! with [`Log::commit`] as the committer thread does. The checker learns what is delivered
//! from the log itself: after each commit and each restart, the blocks past the last ones it
//! took are read back and every event, tombstone and gap in them is handed to it. After a
//! restart, every block it took before must still be there, byte for byte.

use super::{Action, World, fnv};
use crate::log_disk::SimLogDisk;
use crate::scenario::SIMULATION_EPOCH_UNIX_MICROS;
use driftlog_collector::config::CollectorConfig;
use driftlog_collector::ingest::{Batch, Route};
use driftlog_collector::ingest_core::{IngestCore, restore};
use driftlog_collector::keys::Keys;
use driftlog_collector::log::record::{Record, RecordKind};
use driftlog_collector::log::{BlockRef, Commit, Log, LogError};
use driftlog_protocol::Instant;
use driftlog_protocol::ids::StreamKey;
use driftlog_protocol::wire::DropReason;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// How long a collector stays down after a crash before its supervisor restarts it, µs.
const RESTART_DELAY_MICROS: u64 = 200_000;
/// How long a restart waits when the log would not open (the disk still down), µs.
const RETRY_START_MICROS: u64 = 100_000;

/// Counts of what happened to the collector in one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectorStats {
    pub crashes: u64,
    /// Crashes that struck inside a commit (between its first write and its outcome).
    pub crashes_in_commit: u64,
    pub restarts: u64,
    /// Starts that failed on a storage error (the supervisor tried again).
    pub failed_starts: u64,
    pub commits: u64,
    pub failed_commits: u64,
    /// Datagrams that arrived while the collector was down.
    pub datagrams_while_down: u64,
    /// Frames the core refused while the log did not take writes.
    pub frames_refused: u64,
    pub rejected_frames: u64,
}

pub(super) struct SimCollector {
    config: CollectorConfig,
    keys: Keys,
    pub(super) disk: SimLogDisk,
    running: Option<Running>,
    /// The blocks the checker has taken: first offset → hash of the stored bytes.
    seen: BTreeMap<u64, u64>,
    seen_next_offset: u64,
    pub(super) wake_at: Option<u64>,
    /// The latency of the simulated disk's commits, µs.
    commit_latency_micros: u64,
    pub(super) stats: CollectorStats,
}

struct Running {
    core: IngestCore,
    log: Arc<Log>,
    /// The commit the simulated committer is writing (done at `Action::CommitDone`).
    commit: Option<Commit>,
}

impl SimCollector {
    pub(super) fn new(config: CollectorConfig, keys: Keys, disk: SimLogDisk, commit_latency_micros: u64) -> Self {
        SimCollector {
            config,
            keys,
            disk,
            running: None,
            seen: BTreeMap::new(),
            seen_next_offset: 0,
            wake_at: None,
            commit_latency_micros,
            stats: CollectorStats::default(),
        }
    }

    /// Its state, for a run that did not converge.
    pub(super) fn describe(&self) -> String {
        match &self.running {
            Some(running) => format!("{:?}, {:?}, {:?}", running.core, running.core.counters(), self.stats),
            None => format!("down, {:?}", self.stats),
        }
    }

    pub(super) fn is_up(&self) -> bool {
        self.running.is_some()
    }

    /// Refusals counted by the cores of every run so far.
    pub(super) fn finish_stats(&mut self) -> CollectorStats {
        if let Some(running) = self.running.take() {
            self.stats.rejected_frames += running.core.rejects().0.total();
            self.stats.frames_refused += running.core.counters().frames_refused_log_unavailable;
        }
        self.stats.clone()
    }
}

/// Where a device's datagrams come from, as the source filter sees it.
fn peer_of(index: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (index >> 8) as u8, index as u8], 4_000))
}

fn unix(now: u64) -> Instant {
    Instant::from_micros(SIMULATION_EPOCH_UNIX_MICROS as u64 + now)
}

fn block_hash(block: &BlockRef<'_>) -> u64 {
    block.value.iter().fold(fnv(0xCBF2_9CE4_8422_2325, block.first_offset), |hash, byte| fnv(hash, u64::from(*byte)))
}

impl World {
    /// Starts (or restarts) the collector on what its disk holds, as `driftlog-collector run`
    /// does, and checks that the log still holds every block taken before.
    pub(super) fn collector_start(&mut self) {
        let collector = &mut self.collector;
        collector.disk.restart();
        let log = match Log::open_on(Arc::new(collector.disk.clone()), log_config()) {
            Ok(log) => Arc::new(log),
            Err(error) if is_io(&error) => {
                // The recovery's fsync failed: the collector exits and is started again.
                collector.stats.failed_starts += 1;
                self.schedule(self.now + RETRY_START_MICROS, Action::CollectorStart);
                return;
            }
            Err(error) => {
                self.checker.violation(format!("the log would not open after a crash: {error}"));
                return;
            }
        };
        let restored = match restore(&collector.config, &log, collector.keys.clone(), self.now, unix(self.now)) {
            Ok(restored) => restored,
            Err(_) => {
                // A storage error at start (a failed fsync in the epoch's commit): the
                // collector exits and its supervisor starts it again.
                collector.stats.failed_starts += 1;
                self.schedule(self.now + RETRY_START_MICROS, Action::CollectorStart);
                return;
            }
        };
        collector.stats.restarts += 1;
        collector.running = Some(Running { core: restored.core, log, commit: None });
        self.check_log_after_restart();
        self.take_new_blocks();
        self.pump_collector();
    }

    /// The collector's process dies: a commit being written is cut at a random operation,
    /// unsynced writes are torn or lost, and nothing in memory survives.
    pub(super) fn collector_crash(&mut self) {
        let Some(mut running) = self.collector.running.take() else { return };
        self.collector.stats.crashes += 1;
        if let Some(commit) = running.commit.take() {
            // Strike somewhere inside the commit (or just after it, if it has fewer steps).
            self.collector.stats.crashes_in_commit += 1;
            self.collector.disk.crash_after(self.rng.below_inclusive(12) as u32);
            let _ = running.log.commit(&commit, unix(self.now).as_micros() / 1_000);
        }
        self.collector.disk.crash();
        self.collector.stats.rejected_frames += running.core.rejects().0.total();
        self.collector.stats.frames_refused += running.core.counters().frames_refused_log_unavailable;
        drop(running);
        self.collector.wake_at = None;
        self.schedule(self.now + RESTART_DELAY_MICROS, Action::CollectorStart);
    }

    pub(super) fn collector_receive(&mut self, from: usize, bytes: &[u8]) {
        let Some(running) = &mut self.collector.running else {
            self.collector.stats.datagrams_while_down += 1;
            return;
        };
        let mut batch = Batch::with_capacity(1, bytes.len());
        batch.push(bytes, Route { source: 0, peer: Some(peer_of(from)) });
        running.core.handle_batch(unix(self.now), &batch);
        self.pump_collector();
    }

    pub(super) fn collector_wake(&mut self) {
        if let Some(running) = &mut self.collector.running {
            running.core.handle_timeout(unix(self.now));
            self.pump_collector();
        }
    }

    /// The simulated committer finished writing the commit in flight.
    pub(super) fn collector_commit_done(&mut self) {
        let Some(running) = &mut self.collector.running else { return };
        let Some(commit) = running.commit.take() else { return };
        let now = unix(self.now);
        let result = running.log.commit(&commit, now.as_micros() / 1_000);
        self.collector.stats.commits += 1;
        if result.is_err() {
            self.collector.stats.failed_commits += 1;
        }
        // What the commit wrote, and anything a failed commit left on disk, is in the log:
        // the checker takes it before the core can release a single ACK.
        self.take_new_blocks();
        let Some(running) = &mut self.collector.running else { return };
        running.core.handle_committed(now, result);
        running.core.recycle_blocks(commit.blocks);
        self.pump_collector();
    }

    /// Hands the core's commit to the simulated committer, sends the ACKs it allows and
    /// arms its timer.
    pub(super) fn pump_collector(&mut self) {
        let now = unix(self.now);
        let latency =
            self.collector.commit_latency_micros / 2 + self.rng.below_inclusive(self.collector.commit_latency_micros);
        let Some(running) = &mut self.collector.running else { return };
        let mut commit_due = None;
        if running.commit.is_none()
            && let Some(commit) = running.core.poll_commit(now)
        {
            running.commit = Some(commit);
            commit_due = Some(self.now + latency.max(1));
        }
        let mut buf = vec![0u8; super::MAX_DATAGRAM_BYTES.max(2_048)];
        let mut outgoing = Vec::new();
        while let Some(transmit) = running.core.poll_transmit(now, &mut buf) {
            if let Some(&index) = self.device_by_id.get(&transmit.device) {
                outgoing.push((index, buf[..transmit.len].to_vec()));
            }
        }
        let timeout = running.core.poll_timeout();
        if let Some(at) = commit_due {
            self.schedule(at, Action::CommitDone);
        }
        for (index, bytes) in outgoing {
            let arrivals: Vec<u64> = self.devices[index].downlink.transmit(self.now, bytes.len()).collect();
            for at in arrivals {
                self.schedule(at, Action::ToDevice { index, bytes: bytes.clone() });
            }
        }
        if let Some(deadline) = timeout {
            let at = deadline.as_micros().saturating_sub(SIMULATION_EPOCH_UNIX_MICROS as u64).max(self.now + 1);
            if self.collector.wake_at.is_none_or(|current| at < current || current < self.now) {
                self.collector.wake_at = Some(at);
                self.schedule(at, Action::CollectorWake);
            }
        }
    }

    /// After a restart: every block the checker took is still in the log, unchanged.
    fn check_log_after_restart(&mut self) {
        let Some(running) = &self.collector.running else { return };
        let mut found = BTreeMap::new();
        let seen_end = self.collector.seen_next_offset;
        let visited = running.log.visit_blocks(0, usize::MAX, |block| -> Result<(), LogError> {
            if block.first_offset < seen_end {
                found.insert(block.first_offset, block_hash(&block));
            }
            Ok(())
        });
        if let Err(error) = visited {
            self.checker.violation(format!("the log would not read after a restart: {error}"));
            return;
        }
        if found != self.collector.seen {
            let lost = self.collector.seen.keys().filter(|offset| !found.contains_key(offset)).count();
            self.checker.violation(format!(
                "a crash changed committed blocks: {lost} of {} lost or changed at t={}µs",
                self.collector.seen.len(),
                self.now
            ));
        }
    }

    /// Reads the blocks past the last ones taken and hands their records to the checker.
    fn take_new_blocks(&mut self) {
        let World { collector, checker, trace, now, .. } = self;
        let Some(running) = &collector.running else { return };
        let mut taken = Vec::new();
        let visited =
            running.log.visit_blocks(collector.seen_next_offset, usize::MAX, |block| -> Result<(), LogError> {
                if block.first_offset < collector.seen_next_offset {
                    return Ok(());
                }
                let (head, records) = block.decode()?;
                taken.push((block.first_offset, block_hash(&block), head.offsets));
                for (_, record) in records {
                    take_record(checker, trace, &record, *now);
                }
                Ok(())
            });
        match visited {
            // The log could not reopen after a failed fsync: the blocks are read once it can.
            Err(error) if is_io(&error) => {}
            Err(error) => checker.violation(format!("a committed block would not read: {error}")),
            Ok(()) => {}
        }
        for (first_offset, hash, offsets) in taken {
            collector.seen.insert(first_offset, hash);
            collector.seen_next_offset = first_offset + offsets;
        }
        checker.commit();
    }
}

/// An I/O error of the simulated disk (a failed fsync), as opposed to a corrupt log.
fn is_io(error: &LogError) -> bool {
    matches!(error, LogError::Closed | LogError::Storage(redb::Error::Io(_)))
}

fn take_record(checker: &mut crate::Checker, trace: &mut u64, record: &Record<'_>, now: u64) {
    match record {
        Record::Events { head, .. } => {
            let stream = StreamKey { device: head.device, stream: head.stream, epoch: head.epoch };
            for event in record.events() {
                match event {
                    Ok((seq, event)) => {
                        checker.deliver(stream, seq, &event, now);
                        *trace = fnv(*trace, seq);
                    }
                    Err(error) => checker.violation(format!("{stream:?}: events record unreadable: {error}")),
                }
            }
        }
        Record::Gap { kind, head } => {
            let stream = StreamKey { device: head.device, stream: head.stream, epoch: head.epoch };
            let unrecoverable = *kind == RecordKind::Gap;
            checker.tombstone(stream, head.range, unrecoverable);
            if !unrecoverable && head.reason == DropReason::StorageFailure {
                checker.storage_failure(head.range.len());
            }
        }
        _ => {}
    }
}

/// The log as the simulation keeps it: no retention (every block stays for the checks) and a
/// small page cache.
fn log_config() -> driftlog_collector::log::LogConfig {
    driftlog_collector::log::LogConfig {
        max_bytes: u64::MAX / 2,
        max_age_ms: None,
        protected_readers: Vec::new(),
        cache_bytes: 1 << 20,
    }
}
