//! The flush thread: every `flush_interval_ms` (from the collector's start), on SIGUSR1,
//! and once more at shutdown, it takes the shards' interval, computes the statistics and
//! commits the flush as one `statsd_flush` record through the committer (the log's only
//! writer). A flush the log refuses (full, failing) is kept, up to a bound, and committed
//! with the next one: nothing aggregated is lost while the log recovers. Every tick it also
//! commits the `|T` samples received meanwhile (`super::timed`).

use super::flush::Flush;
use super::shards::Shards;
use super::telemetry::{Drop, Telemetry};
use super::timed::split_for_log;
use crate::committer::Client;
use crate::log::Commit;
use crate::log::block::BlockBuilder;
use crate::log::record::{RecordKind, encode_head};
use crate::wall_clock::now_unix_ms;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Flushes kept while the log refuses them; older ones are dropped (counted).
const MAX_UNCOMMITTED: usize = 360;
/// How often the thread looks at the clock, SIGUSR1 and shutdown.
const TICK: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub struct Flusher {
    pub shards: Arc<Shards>,
    pub telemetry: Arc<Telemetry>,
    pub committer: Client,
    pub interval_ms: u64,
    pub thresholds: Vec<f64>,
    pub prefix_stats: String,
    pub source: String,
    pub max_block_bytes: usize,
    /// Where Graphite output takes flushes (bounded).
    pub graphite: Option<SyncSender<Arc<Flush>>>,
    /// Set by SIGUSR1: flush now.
    pub flush_now: Arc<AtomicBool>,
    uncommitted: VecDeque<Vec<u8>>,
    /// The previous flush's `round(now / 1000)`, for `timestamp_lag`.
    last_flush_s: Option<i64>,
}

impl Flusher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shards: Arc<Shards>,
        telemetry: Arc<Telemetry>,
        committer: Client,
        interval_ms: u64,
        thresholds: Vec<f64>,
        prefix_stats: String,
        source: String,
        max_block_bytes: usize,
        graphite: Option<SyncSender<Arc<Flush>>>,
        flush_now: Arc<AtomicBool>,
    ) -> Flusher {
        Flusher {
            shards,
            telemetry,
            committer,
            interval_ms,
            thresholds,
            prefix_stats,
            source,
            max_block_bytes,
            graphite,
            flush_now,
            uncommitted: VecDeque::new(),
            last_flush_s: None,
        }
    }

    /// Runs until `shutdown`, then flushes once more (what arrived since the last flush is
    /// not lost on a restart).
    pub fn run(mut self, shutdown: &crate::shutdown::Shutdown) {
        // Flushes fall on `start + k·interval`, as the reference's do.
        let (start, interval_ms) = (now_unix_ms(), self.interval_ms);
        let next = |now: u64| start + ((now - start) / interval_ms + 1) * interval_ms;
        let mut deadline = next(start);
        while !shutdown.is_shutdown() {
            self.commit_timed();
            let now = now_unix_ms();
            if now >= deadline || self.flush_now.swap(false, Ordering::Relaxed) {
                self.flush();
                deadline = next(now_unix_ms().max(start));
            } else {
                std::thread::sleep(TICK.min(Duration::from_millis(deadline - now)));
            }
        }
        self.commit_timed();
        self.flush();
    }

    /// Commits the `|T` samples received since the last tick as `statsd_samples` records; a
    /// refused commit puts them back (within the sink's bound) for the next tick.
    fn commit_timed(&mut self) {
        let records = self.shards.timed.take();
        if records.is_empty() {
            return;
        }
        let mut builder = BlockBuilder::new(self.max_block_bytes);
        let records = split_for_log(records, self.max_block_bytes / 2);
        for record in &records {
            builder.push(1, |out| encode_head(RecordKind::StatsdSamples, record, out));
        }
        let commit =
            Commit { blocks: builder.finish_into(now_unix_ms(), self.committer.spare_blocks()), ..Commit::default() };
        if !matches!(self.committer.commit(commit), Some(Ok(_))) {
            self.telemetry.flush_commit_failures.inc();
            let dropped = self.shards.timed.put_back(records);
            if dropped > 0 {
                self.telemetry.dropped(Drop::TimedQueueFull, dropped);
            }
        }
    }

    /// One flush: take, compute, commit, publish.
    pub fn flush(&mut self) {
        let now_ms = now_unix_ms();
        // The reference's `Math.round(Date.now() / 1000)` and its lag from the second flush.
        let stamp_s = (now_ms as f64 / 1000.0).round() as i64;
        let lag = self.last_flush_s.map(|last| (stamp_s - last) as f64 - self.interval_ms as f64 / 1000.0);
        self.last_flush_s = Some(stamp_s);
        let started = Instant::now();
        let raw = self.shards.take_flush(&self.prefix_stats, lag);
        let mut flush = Flush::compute(raw, &self.thresholds);
        flush.processing_time_ms = started.elapsed().as_millis() as u64;
        flush.source = self.source.clone();
        flush.flush_unix_ms = now_ms as i64;
        flush.interval_ms = self.interval_ms;
        let mut record = Vec::new();
        super::flush::encode_record(&flush, &mut record);
        self.uncommitted.push_back(record);
        while self.uncommitted.len() > MAX_UNCOMMITTED {
            self.uncommitted.pop_front();
            self.telemetry.dropped(Drop::FlushQueueFull, 1);
        }
        self.commit();
        let flush = Arc::new(flush);
        self.telemetry.publish(flush.clone());
        if let Some(graphite) = &self.graphite
            && let Err(TrySendError::Full(_)) = graphite.try_send(flush)
        {
            self.telemetry.dropped(Drop::GraphiteUnsent, 1);
        }
    }

    /// Commits every flush not yet in the log, oldest first, in one transaction.
    fn commit(&mut self) {
        let mut builder = BlockBuilder::new(self.max_block_bytes);
        for record in &self.uncommitted {
            builder.push(1, |out| out.extend_from_slice(record));
        }
        let commit =
            Commit { blocks: builder.finish_into(now_unix_ms(), self.committer.spare_blocks()), ..Commit::default() };
        match self.committer.commit(commit) {
            Some(Ok(_)) => {
                self.telemetry.flushes.inc_by(self.uncommitted.len() as u64);
                self.uncommitted.clear();
            }
            Some(Err(error)) => {
                self.telemetry.flush_commit_failures.inc();
                tracing::warn!(%error, kept = self.uncommitted.len(), "StatsD flush not committed; kept for the next flush");
            }
            None => tracing::warn!("StatsD flush not committed: the committer has stopped"),
        }
    }
}
