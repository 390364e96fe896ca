//! `log replay --from OFFSET`: re-runs the processing pipeline over stored events, the
//! event-sourcing "complete rebuild". The pipeline is deterministic: it sees records in
//! offset order and nothing else (no clock, no randomness), so two replays of the same log
//! produce the same output.
//!
//! The pipeline decodes and validates every record, summarises each device's streams
//! (events, tombstoned and unrecoverable sequence numbers, sequence coverage, the range of
//! device and collector times), and re-runs the event-time windows from empty state. Window
//! outputs are compared byte for byte with those the live processor stored: from the start
//! of an untruncated log they must be identical, which is the check that processing is
//! deterministic and that checkpoints and crashes neither lost nor duplicated a result.

use crate::log::Log;
use crate::log::record::{Record, RecordKind, encode_head};
use crate::windows::config::{WatermarkSection, WindowSection};
use crate::windows::statsd::StatsdSpec;
use crate::windows::store::NoStore;
use driftlog_protocol::{DeviceId, Epoch, StreamId};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StreamSummary {
    pub events: u64,
    pub tombstoned: u64,
    pub unrecoverable: u64,
    /// Distinct sequence numbers delivered or explained, and the highest + 1.
    pub seq_covered: u64,
    pub seq_end: u64,
    pub first_t3_unix_us: Option<i64>,
    pub last_t3_unix_us: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReplaySummary {
    pub from_offset: u64,
    pub next_offset: u64,
    pub records: u64,
    pub corrupt_records: u64,
    pub streams: BTreeMap<String, StreamSummary>,
    pub windows: WindowsReplay,
}

/// What re-running the windows gave, against what the log holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WindowsReplay {
    /// Window results, late events and event-time StatsD flushes the replay computed.
    pub outputs: u64,
    /// Window results, late events and event-time StatsD flushes stored in the replayed range.
    pub stored_outputs: u64,
    /// Whether stored outputs are comparable: the replay starts at offset 0 of a log that
    /// retention never truncated (otherwise the live windows had state the replay lacks).
    pub comparable: bool,
    /// Stored outputs equal (byte for byte, in order) the replay's first outputs; outputs
    /// after the processor's last checkpoint are not stored yet and not compared.
    pub identical: Option<bool>,
    /// The first stored output that differs, if any.
    pub first_difference_offset: Option<u64>,
}

/// The pipeline's state; feed it records in offset order.
#[derive(Debug)]
pub struct Pipeline {
    summary: ReplaySummary,
    keys: BTreeMap<(DeviceId, StreamId, Epoch), StreamSummary>,
    windows: crate::windows::pipeline::Pipeline,
    replayed: Vec<Vec<u8>>,
    stored: Vec<(u64, Vec<u8>)>,
}

impl Pipeline {
    pub fn new(windows: &[WindowSection], watermark: &WatermarkSection, statsd: Option<StatsdSpec>) -> Pipeline {
        Pipeline {
            summary: ReplaySummary::default(),
            keys: BTreeMap::new(),
            windows: crate::windows::pipeline::Pipeline::new(windows, watermark).with_statsd(statsd),
            replayed: Vec::new(),
            stored: Vec::new(),
        }
    }

    pub fn handle(&mut self, offset: u64, record: &Record<'_>) {
        // Nothing is stored: a replay's window state stays in memory, pending.
        let _ = self.windows.handle(record, &NoStore, &mut self.replayed);
        self.summary.records += 1;
        self.summary.next_offset = offset + record.width();
        match record {
            Record::Events { head, .. } => {
                let mut count = 0;
                for item in record.events() {
                    if item.is_err() {
                        self.summary.corrupt_records += 1;
                        break;
                    }
                    count += 1;
                }
                let entry = self.keys.entry((head.device, head.stream, head.epoch)).or_default();
                entry.events += count;
                entry.seq_covered += count;
                entry.seq_end = entry.seq_end.max(head.first_seq + count);
                entry.first_t3_unix_us.get_or_insert(head.received_unix_us);
                entry.last_t3_unix_us = Some(head.received_unix_us);
            }
            Record::Gap { kind, head } => {
                let entry = self.keys.entry((head.device, head.stream, head.epoch)).or_default();
                let len = head.range.len();
                match kind {
                    RecordKind::Tombstone => entry.tombstoned += len,
                    _ => entry.unrecoverable += len,
                }
                entry.seq_covered += len;
                entry.seq_end = entry.seq_end.max(head.range.end);
            }
            Record::Window(w) => {
                // Compared as this build writes them (a kind-4 record reads as `Watermark`).
                let mut bytes = Vec::new();
                encode_head(RecordKind::Window, w, &mut bytes);
                self.stored.push((offset, bytes));
            }
            Record::Late(l) => {
                let mut bytes = Vec::new();
                encode_head(RecordKind::Late, l, &mut bytes);
                self.stored.push((offset, bytes));
            }
            Record::Other { kind, bytes } if *kind == RecordKind::StatsdFlush as u8 => {
                // The window pipeline's StatsD results (those with a window) are compared;
                // the live server's flushes (by arrival, no window) are not its outputs.
                if let Some(flush) = crate::statsd::flush::decode_record(bytes)
                    && flush.window.is_some()
                {
                    let mut bytes = Vec::new();
                    crate::statsd::flush::encode_record(&flush, &mut bytes);
                    self.stored.push((offset, bytes));
                }
            }
            Record::Tick(_) | Record::Claim(_) | Record::Other { .. } => {}
        }
    }

    /// The end of a log block (late fleet and StatsD updates are emitted per block, as live).
    pub fn end_block(&mut self) {
        let _ = self.windows.end_block(&NoStore, &mut self.replayed);
    }

    /// `comparable`: see [`WindowsReplay::comparable`].
    pub fn finish(mut self, comparable: bool) -> ReplaySummary {
        let windows = &mut self.summary.windows;
        windows.outputs = self.replayed.len() as u64;
        windows.stored_outputs = self.stored.len() as u64;
        windows.comparable = comparable;
        if comparable {
            let mismatch = self
                .stored
                .iter()
                .enumerate()
                .find(|(index, (_, bytes))| self.replayed.get(*index) != Some(bytes))
                .map(|(_, (offset, _))| *offset);
            windows.identical = Some(mismatch.is_none());
            windows.first_difference_offset = mismatch;
        }
        self.summary.streams = self
            .keys
            .into_iter()
            .map(|((device, stream, epoch), summary)| (format!("{device}/{stream}/{epoch}"), summary))
            .collect();
        self.summary
    }
}

/// Replays the log from `from` to its end.
pub fn replay(
    log: &Log,
    from: u64,
    windows: &[WindowSection],
    watermark: &WatermarkSection,
    statsd: Option<StatsdSpec>,
) -> Result<ReplaySummary, crate::log::LogError> {
    let comparable = from == 0 && log.stats()?.first_offset == 0;
    let mut pipeline = Pipeline::new(windows, watermark, statsd);
    pipeline.summary.from_offset = from;
    pipeline.summary.next_offset = from;
    let mut next = from;
    loop {
        let blocks = log.read_blocks(next, 64)?;
        if blocks.is_empty() {
            break;
        }
        let mut advanced = false;
        for block in &blocks {
            let (_, records) = block.decode()?;
            let mut read = false;
            for (offset, record) in &records {
                if offset + record.width() <= next {
                    continue;
                }
                pipeline.handle(*offset, record);
                next = offset + record.width();
                read = true;
            }
            if read {
                pipeline.end_block();
                advanced = true;
            }
        }
        if !advanced {
            break;
        }
    }
    Ok(pipeline.finish(comparable))
}
