//! The deterministic event-time pipeline: log records in, window changelog and late events out.
//!
//! Nothing here reads a clock or depends on when it runs: event times come from each record's
//! stored clock correction, and processing time (for idleness) from record receive times and
//! `tick` records. Feeding the same records from the same state therefore yields the same
//! outputs, which is what makes checkpoints exact and `log replay` byte-identical.

use super::config::{WatermarkSection, WindowSection};
use super::key::window_key;
use crate::log::record::{LateRecord, Record, RecordKind, WindowRecord, encode_head, global_id};
use driftlog_eventtime::window::{Change, NEG_INF, Output, Watermarks, WindowOperator, WindowResult, WindowSpec};
use driftlog_protocol::wire::Payload;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counters of the pipeline, checkpointed with it (so they survive restarts exactly).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineStats {
    pub events: u64,
    /// Events without a numeric value (sets, opaque payloads): not windowed.
    pub events_not_numeric: u64,
    /// Quarantined event times (fell back to receive time), by reason.
    pub quarantined: BTreeMap<String, u64>,
    /// Corrected times clamped to their receive time.
    pub clamped: u64,
    pub results: u64,
    pub retractions: u64,
    /// Late events (recorded as `late` records), by window.
    pub late: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct WindowState {
    name: String,
    spec: WindowSpec,
    operator: WindowOperator,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    windows: Vec<WindowState>,
    watermarks: Watermarks,
    now_unix_us: i64,
    stats: PipelineStats,
}

/// An output record, already encoded (kind byte + postcard), in emission order.
pub type Encoded = Vec<u8>;

#[derive(Debug)]
pub struct Pipeline {
    sections: Vec<WindowSection>,
    state: State,
    key: String,
    scratch: Vec<Output>,
    /// The watermark every operator has already been advanced to: advancing again to the
    /// same one does nothing, so it is skipped (a cache; `NEG_INF` after a restore).
    advanced_to: i64,
}

impl Pipeline {
    /// A fresh pipeline. The config was validated, so every spec is valid.
    pub fn new(sections: &[WindowSection], watermark: &WatermarkSection) -> Pipeline {
        let windows = sections.iter().filter_map(fresh_window).collect();
        let watermarks = Watermarks::with_clock_floor(
            ms_to_us(watermark.out_of_orderness_ms),
            ms_to_us(watermark.idle_timeout_ms),
            watermark.max_devices,
        );
        Pipeline {
            sections: sections.to_vec(),
            state: State { windows, watermarks, now_unix_us: NEG_INF, stats: PipelineStats::default() },
            key: String::new(),
            scratch: Vec::new(),
            advanced_to: NEG_INF,
        }
    }

    /// Restores a checkpoint. Windows whose config changed (or that are new) start empty;
    /// windows no longer configured are dropped. Returns the names that were reset.
    pub fn restore(
        sections: &[WindowSection],
        watermark: &WatermarkSection,
        bytes: &[u8],
    ) -> Result<(Pipeline, Vec<String>), postcard::Error> {
        let stored: State = postcard::from_bytes(bytes)?;
        let mut pipeline = Pipeline::new(sections, watermark);
        let mut reset = Vec::new();
        let mut previous: BTreeMap<String, WindowState> =
            stored.windows.into_iter().map(|w| (w.name.clone(), w)).collect();
        for window in &mut pipeline.state.windows {
            match previous.remove(&window.name) {
                Some(old) if old.spec == window.spec => *window = old,
                _ => reset.push(window.name.clone()),
            }
        }
        // The watermark settings live in the config: a changed B or idle timeout applies to
        // the restored per-device state from now on.
        pipeline.state.watermarks = stored.watermarks;
        pipeline.state.watermarks.reconfigure(
            ms_to_us(watermark.out_of_orderness_ms),
            ms_to_us(watermark.idle_timeout_ms),
            watermark.max_devices,
        );
        pipeline.state.now_unix_us = stored.now_unix_us;
        pipeline.state.stats = stored.stats;
        Ok((pipeline, reset))
    }

    pub fn checkpoint(&self) -> Vec<u8> {
        // Plain data: serialising into a Vec cannot fail.
        postcard::to_allocvec(&self.state).unwrap_or_default()
    }

    pub fn stats(&self) -> &PipelineStats {
        &self.state.stats
    }

    pub fn watermark_unix_us(&self) -> i64 {
        self.state.watermarks.current()
    }

    /// Processing time: the latest receive time or tick seen.
    pub fn now_unix_us(&self) -> i64 {
        self.state.now_unix_us
    }

    pub fn open_windows(&self) -> usize {
        self.state.windows.iter().map(|w| w.operator.open_windows()).sum()
    }

    /// Whether time passing alone (a tick) could still produce output.
    pub fn waiting_on_time(&self) -> bool {
        self.open_windows() > 0
    }

    /// Processes one record; outputs are appended to `out` encoded as log records. Records
    /// this pipeline wrote itself (window results, late events) are skipped.
    pub fn handle(&mut self, record: &Record<'_>, out: &mut Vec<Encoded>) {
        match record {
            Record::Events { head, .. } => {
                for item in record.events() {
                    // A malformed chain was rejected when it was stored; stop at it anyway.
                    let Ok((seq, event)) = item else { break };
                    let value = match &event.payload {
                        Payload::Counter(s)
                        | Payload::Gauge(s)
                        | Payload::GaugeDelta(s)
                        | Payload::Timer(s)
                        | Payload::Histogram(s) => s.value,
                        Payload::Set(_) | Payload::Opaque(_) => {
                            self.state.stats.events_not_numeric += 1;
                            continue;
                        }
                    };
                    self.state.stats.events += 1;
                    let corrected = head.correct(event.mono.as_micros());
                    if let Some(reason) = corrected.quarantine {
                        *self.state.stats.quarantined.entry(reason.name().to_string()).or_default() += 1;
                    }
                    if corrected.clamped {
                        self.state.stats.clamped += 1;
                    }
                    let ts = corrected.unix_us;
                    let before = self.state.watermarks.current();
                    for (index, section) in self.sections.iter().enumerate() {
                        let Some(window) = self.state.windows.get_mut(index) else { break };
                        if window.name != section.name || !section.takes(event.payload.name()) {
                            continue;
                        }
                        let device = section.per_device.then_some(head.device);
                        window_key(
                            &mut self.key,
                            event.payload.name(),
                            &event.payload.tags(),
                            &section.group_by_tags,
                            device,
                        );
                        self.scratch.clear();
                        window.operator.handle_event(&self.key, ts, value, before, &mut self.scratch);
                        // The id is only written into late records: most events need none.
                        let late = self.scratch.iter().any(|output| matches!(output, Output::Late { .. }));
                        let id = late.then(|| global_id(head.device, head.stream, head.epoch, seq));
                        emit(
                            &mut self.state.stats,
                            section,
                            &window.name,
                            &mut self.scratch,
                            before,
                            id.as_deref(),
                            out,
                        );
                    }
                    self.state.watermarks.handle_event(
                        head.device,
                        ts,
                        self.state.now_unix_us.max(head.received_unix_us),
                    );
                    self.advance(out);
                }
                self.observe_time(head.received_unix_us, out);
            }
            Record::Tick(tick) => self.observe_time(tick.now_unix_us, out),
            Record::Gap { .. } | Record::Window(_) | Record::Late(_) | Record::Other { .. } => {}
        }
    }

    fn observe_time(&mut self, now_unix_us: i64, out: &mut Vec<Encoded>) {
        if now_unix_us > self.state.now_unix_us {
            self.state.now_unix_us = now_unix_us;
        }
        self.state.watermarks.handle_tick(self.state.now_unix_us);
        self.advance(out);
    }

    fn advance(&mut self, out: &mut Vec<Encoded>) {
        let watermark = self.state.watermarks.current();
        if watermark == self.advanced_to {
            return;
        }
        self.advanced_to = watermark;
        for (section, window) in self.sections.iter().zip(self.state.windows.iter_mut()) {
            self.scratch.clear();
            window.operator.advance_watermark(watermark, &mut self.scratch);
            emit(&mut self.state.stats, section, &window.name, &mut self.scratch, watermark, None, out);
        }
    }
}

fn fresh_window(section: &WindowSection) -> Option<WindowState> {
    let spec = section.spec().ok()?;
    let operator = WindowOperator::new(spec.clone()).ok()?;
    Some(WindowState { name: section.name.clone(), spec, operator })
}

fn ms_to_us(ms: u64) -> i64 {
    i64::try_from(ms.saturating_mul(1_000)).unwrap_or(i64::MAX)
}

fn emit(
    stats: &mut PipelineStats,
    section: &WindowSection,
    name: &str,
    outputs: &mut Vec<Output>,
    watermark: i64,
    event_id: Option<&str>,
    out: &mut Vec<Encoded>,
) {
    if outputs.is_empty() {
        return; // Most events change no result.
    }
    for output in outputs.drain(..) {
        let mut bytes = Vec::new();
        match output {
            Output::Window { change, result } => {
                match change {
                    Change::Insert => stats.results += 1,
                    Change::Retract => stats.retractions += 1,
                    Change::Final => {}
                }
                encode_head(RecordKind::Window, &window_record(section, name, change, &result, watermark), &mut bytes);
            }
            Output::Late { key, ts, value } => {
                *stats.late.entry(name.to_string()).or_default() += 1;
                let late = LateRecord {
                    window: name.to_string(),
                    key,
                    id: event_id.unwrap_or_default().to_string(),
                    event_unix_us: ts,
                    value,
                    watermark_unix_us: watermark,
                };
                encode_head(RecordKind::Late, &late, &mut bytes);
            }
        }
        out.push(bytes);
    }
}

fn window_record(
    section: &WindowSection,
    name: &str,
    change: Change,
    result: &WindowResult,
    watermark: i64,
) -> WindowRecord {
    let a = &result.aggregate;
    WindowRecord {
        window: name.to_string(),
        change,
        key: result.key.clone(),
        start_unix_us: result.start,
        end_unix_us: result.end,
        count: a.count,
        sum: a.sum,
        min: a.min,
        max: a.max,
        last: a.last,
        quantiles: section.quantiles.iter().filter_map(|q| a.quantile(*q).map(|v| (*q, v))).collect(),
        watermark_unix_us: watermark,
    }
}
