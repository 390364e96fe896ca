//! The live window processor: a thread that reads the log from its checkpoint, runs the
//! [`Pipeline`] and commits its outputs together with the next checkpoint.
//!
//! Exactly-once without coordination: outputs, the offset they reflect and the window state
//! (the pipeline's header, and the device units and stored fleet windows written since the
//! last checkpoint) go into the log in one transaction, so after a crash the processor resumes
//! from the last checkpoint and, being deterministic, recomputes exactly the outputs that were
//! not committed. A storage error while reading state mid-record leaves the pipeline half
//! through that record, so the processor reopens from the last checkpoint instead. While caught up it writes `tick` records carrying the collector clock, which
//! is how idleness (a silent fleet still closes its windows) reaches the pipeline without
//! making it depend on when it runs.
//!
//! Ingest comes first: the thread runs at a lower CPU priority ([`NICE`]), so during a burst
//! the cores go to getting events durable and acknowledged, and the windows catch up after
//! (the same results: they depend only on the log). This is safe because the processor
//! holds no lock ingest needs: its commits go through the committer, the log's only writer.

use super::READER;
use super::config::{WatermarkSection, WindowSection};
use super::pipeline::{Pipeline, RestoreError};
use super::statsd::StatsdSpec;
use crate::committer::Client;
use crate::log::block::BlockBuilder;
use crate::log::record::{RecordKind, TickRecord, encode_head};
use crate::log::{Checkpoint, Commit, Log, LogError};
use crate::metrics::{Metrics, WindowsSnapshot};
use crate::wall_clock::now_unix_ms;
use std::sync::Arc;
use std::time::{Duration, Instant};

const READ_BLOCKS: usize = 16;
const IDLE_POLL: Duration = Duration::from_millis(20);
const RETRY: Duration = Duration::from_millis(500);
/// The window thread's nice value (ingest threads run at 0). At 10 it gets about a tenth
/// of a contended core: windows still advance under full load, while a burst of ingest
/// is not slowed by them.
pub const NICE: i32 = 10;

/// Why a round of the processor failed; it retries.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error(transparent)]
    Log(#[from] LogError),
    /// Reading window state failed in the middle of a record: the pipeline is reopened from
    /// its last checkpoint.
    #[error("reading window state: {0}")]
    MidRecord(LogError),
    #[error("the committer has stopped")]
    CommitterStopped,
}

#[derive(Debug)]
pub struct Processor {
    log: Arc<Log>,
    committer: Client,
    metrics: Arc<Metrics>,
    sections: Vec<WindowSection>,
    watermark: WatermarkSection,
    statsd: Option<StatsdSpec>,
    pipeline: Pipeline,
    /// The next checkpoint drops all stored window state first (the windows started afresh).
    reset_state: bool,
    next_offset: u64,
    checkpointed_offset: u64,
    pending: Vec<Vec<u8>>,
    tick_interval: Duration,
    checkpoint_interval: Duration,
    last_checkpoint: Instant,
    last_tick: Instant,
    max_block_bytes: usize,
}

impl Processor {
    /// Restores the checkpoint (or starts at the log's first offset).
    pub fn open(
        log: Arc<Log>,
        committer: Client,
        metrics: Arc<Metrics>,
        sections: &[WindowSection],
        watermark: &WatermarkSection,
        statsd: Option<StatsdSpec>,
    ) -> Result<Processor, LogError> {
        let (pipeline, next_offset, reset_state) = restore(&log, sections, watermark, statsd.clone())?;
        let now = Instant::now();
        Ok(Processor {
            log,
            committer,
            metrics,
            sections: sections.to_vec(),
            watermark: watermark.clone(),
            statsd,
            pipeline,
            reset_state,
            next_offset,
            checkpointed_offset: next_offset,
            pending: Vec::new(),
            tick_interval: Duration::from_millis(watermark.tick_interval_ms),
            checkpoint_interval: Duration::from_millis(watermark.checkpoint_interval_ms),
            last_checkpoint: now,
            last_tick: now,
            max_block_bytes: crate::log::block::DEFAULT_MAX_BLOCK_BYTES,
        })
    }

    /// Blocks of outputs bounded as the configured log's (`log.max_block_bytes`).
    pub fn with_max_block_bytes(mut self, max_block_bytes: usize) -> Processor {
        self.max_block_bytes = max_block_bytes;
        self
    }

    /// Runs until `shutdown` (the service signals it once ingest has committed its last
    /// block), then commits a last checkpoint.
    pub fn spawn(mut self, shutdown: crate::shutdown::Shutdown) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name("windows".into()).spawn(move || {
            // On Linux the nice value is per thread: this lowers this thread only.
            if let Err(error) = rustix::process::nice(NICE) {
                tracing::warn!(%error, "cannot lower the window thread's priority; it competes with ingest");
            }
            let mut outage = crate::outage::Outage::default();
            while !shutdown.is_shutdown() {
                let result = self.step();
                report_outage(&mut outage, &result);
                match result {
                    Ok(true) => {}
                    Ok(false) => std::thread::sleep(IDLE_POLL),
                    Err(error) => {
                        self.metrics.windows_errors.inc();
                        std::thread::sleep(RETRY);
                        if matches!(error, ProcessorError::MidRecord(_)) {
                            self.reopen();
                        }
                    }
                }
            }
            // Keep what was computed: the next run resumes from here.
            if let Err(error) = self.checkpoint(None) {
                tracing::warn!(%error, "window processor: last checkpoint failed; the next run recomputes");
            }
        })
    }

    /// One round: read and process what is new, checkpoint when due. Returns whether it read
    /// anything (the caller sleeps otherwise).
    fn step(&mut self) -> Result<bool, ProcessorError> {
        let mut progressed = false;
        let log = self.log.clone();
        log.visit_blocks_with_state(self.next_offset, READ_BLOCKS, |block, store| -> Result<(), ProcessorError> {
            let mut read = false;
            for item in block.records()? {
                let (offset, record) = item?;
                let end = offset + record.width();
                if end <= self.next_offset {
                    continue;
                }
                if offset > self.next_offset {
                    // Retention removed records we had not read (only when unprotected).
                    self.metrics.windows_offsets_skipped.inc_by(offset - self.next_offset);
                }
                self.pipeline.handle(&record, store, &mut self.pending).map_err(ProcessorError::MidRecord)?;
                self.next_offset = end;
                read = true;
            }
            if read {
                self.pipeline.end_block(store, &mut self.pending).map_err(ProcessorError::MidRecord)?;
                progressed = true;
            }
            Ok(())
        })?;
        let caught_up = !progressed;
        let mut tick = None;
        if caught_up && self.last_tick.elapsed() >= self.tick_interval && self.pipeline.waiting_on_time() {
            let now_us = (now_unix_ms() as i64).saturating_mul(1_000);
            if now_us > self.pipeline.now_unix_us() {
                tick = Some(TickRecord { now_unix_us: now_us });
            }
            self.last_tick = Instant::now();
        }
        let due = self.last_checkpoint.elapsed() >= self.checkpoint_interval
            && (self.next_offset != self.checkpointed_offset || !self.pending.is_empty());
        if due || tick.is_some() {
            self.checkpoint(tick)?;
        }
        self.publish();
        Ok(progressed)
    }

    /// Commits pending outputs (and a tick, if any) with the state and offset they reflect.
    fn checkpoint(&mut self, tick: Option<TickRecord>) -> Result<(), ProcessorError> {
        if self.pending.is_empty() && tick.is_none() && self.next_offset == self.checkpointed_offset {
            return Ok(());
        }
        let mut builder = BlockBuilder::new(self.max_block_bytes);
        for record in &self.pending {
            builder.push(1, |out| out.extend_from_slice(record));
        }
        if let Some(tick) = &tick {
            builder.push(1, |out| encode_head(RecordKind::Tick, tick, out));
        }
        let delta = self.pipeline.checkpoint();
        let commit = Commit {
            blocks: builder.finish_into(now_unix_ms(), self.committer.spare_blocks()),
            checkpoint: Some(Checkpoint {
                reader: READER.to_string(),
                next_offset: self.next_offset,
                state: delta.header,
                window_units: delta.pending.units.into_iter().collect(),
                window_stored: delta.pending.windows.into_iter().collect(),
                reset_window_state: self.reset_state,
            }),
            ..Commit::default()
        };
        // On failure nothing changes: the same outputs and state are committed next time.
        self.committer.commit(commit).ok_or(ProcessorError::CommitterStopped)??;
        self.pipeline.checkpoint_committed();
        self.reset_state = false;
        self.metrics.windows_outputs_committed.inc_by(self.pending.len() as u64);
        self.pending.clear();
        self.checkpointed_offset = self.next_offset;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Throws away what was computed since the last checkpoint and resumes from it.
    fn reopen(&mut self) {
        match restore(&self.log, &self.sections, &self.watermark, self.statsd.clone()) {
            Ok((pipeline, next_offset, reset_state)) => {
                self.pipeline = pipeline;
                self.next_offset = next_offset;
                self.checkpointed_offset = next_offset;
                self.reset_state = reset_state;
                self.pending.clear();
            }
            Err(error) => tracing::debug!(%error, "window processor: cannot reopen yet"),
        }
    }

    fn publish(&self) {
        let snapshot = WindowsSnapshot {
            stats: self.pipeline.stats().clone(),
            statsd: self.pipeline.statsd_stats().clone(),
            watermark_unix_us: self.pipeline.watermark_unix_us(),
            now_unix_us: self.pipeline.now_unix_us(),
            state: self.pipeline.snapshot(),
            next_offset: self.next_offset,
        };
        *self.metrics.windows.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
    }
}

/// The pipeline from the last checkpoint, the offset to read on from, and whether stored
/// window state must be dropped (no usable checkpoint: the windows start afresh).
fn restore(
    log: &Log,
    sections: &[WindowSection],
    watermark: &WatermarkSection,
    statsd: Option<StatsdSpec>,
) -> Result<(Pipeline, u64, bool), LogError> {
    let Some((offset, bytes)) = log.checkpoint(READER)? else {
        return Ok((Pipeline::new(sections, watermark).with_statsd(statsd), log.stats()?.first_offset, true));
    };
    let restored = log.with_window_state(|store| Pipeline::restore(sections, watermark, &bytes, store))?;
    match restored {
        Ok((pipeline, reset)) => {
            if !reset.is_empty() {
                tracing::warn!(windows = ?reset, "window config changed: these windows start empty");
            }
            Ok((pipeline.with_statsd(statsd), offset, false))
        }
        Err(RestoreError::Log(error)) => Err(error),
        Err(error) => {
            tracing::error!(%error, "window checkpoint unusable: starting the windows empty at the log's end");
            Ok((Pipeline::new(sections, watermark).with_statsd(statsd), log.stats()?.next_offset, true))
        }
    }
}

/// Logs a failing log (a full disk) once, then a summary a minute, then its recovery.
fn report_outage(outage: &mut crate::outage::Outage, result: &Result<bool, ProcessorError>) {
    use crate::outage::Report;
    let now = Instant::now();
    match result {
        Ok(_) => {
            if let Report::Recovered { failures, lasted } = outage.succeeded(now) {
                tracing::info!(failures, lasted_s = lasted.as_secs(), "window processor: log available again");
            }
        }
        Err(error) => match outage.failed(now) {
            Report::Started => {
                tracing::warn!(%error, "window processor: log unavailable; retrying (summarised once a minute)")
            }
            Report::Continuing { failures } => {
                tracing::warn!(%error, failures, "window processor: log still unavailable")
            }
            Report::Recovered { .. } | Report::Quiet => {}
        },
    }
}
