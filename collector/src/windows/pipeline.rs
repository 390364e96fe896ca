//! The deterministic event-time pipeline: log records in, window changelog and late events out.
//!
//! Nothing here reads a clock or depends on when it runs: event times come from each record's
//! stored clock correction, device progress from the events' sequence numbers and the
//! acceptor's `claim` records, and processing time (for idleness, holds and time-outs) from
//! record receive times and `tick` records. Feeding the same records from the same state
//! therefore yields the same outputs, which is what makes checkpoints exact and `log replay`
//! byte-identical; where window state happens to live (memory or the log's file) changes
//! nothing.
//!
//! Windows with `per_device = true` close on their device's completeness watermark
//! ([`super::devices`]); the others on the fleet's ([`super::fleet`]). StatsD samples (agents'
//! StatsD streams, `|T` lines) go to event-time StatsD windows ([`super::statsd_owners`]).

use super::config::{WatermarkSection, WindowSection};
use super::devices::{Devices, IndexEntry, Residency, SOURCE_IDS};
use super::fleet::Fleet;
use super::key::window_key;
use super::statsd::{StatsdSpec, StatsdStats};
use super::statsd_owners::{StatsdOwners, StatsdState};
use super::store::{Pending, StateStore};
use crate::log::LogError;
use crate::log::record::{ClaimRecord, ClosedBy, LateRecord, Record, RecordKind, WindowRecord, encode_head, global_id};
use driftlog_eventtime::window::{
    Change, Claim, DeviceOutput, DeviceWindows, NEG_INF, Output, Ticks, Watermarks, WindowResult, WindowSpec,
};
use driftlog_protocol::DeviceId;
use driftlog_protocol::wire::Payload;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The checkpoint format this build writes; it reads this one and the one before (format 2
/// had no StatsD state).
const CHECKPOINT_VERSION: u32 = 3;

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
    /// Completeness claims read.
    pub claims: u64,
    /// Window results emitted because their device stayed away `max_outage_ms`.
    pub timed_out: u64,
    /// Devices forgotten for the `max_devices` bound.
    pub devices_forgotten: u64,
    /// Completeness inputs refused: claims that went backwards (reordered heartbeats or a
    /// device that lies), and what a per-device bound (epochs, ranges, streams) turned away.
    pub completeness_refused: u64,
}

#[derive(Deserialize)]
struct Header {
    /// Read first, to pick the layout.
    _version: u32,
    now_unix_us: i64,
    stats: PipelineStats,
    fleet: Fleet,
    devices: Vec<(DeviceId, IndexEntry)>,
    statsd: StatsdState,
}

/// [`Header`] as format 2 wrote it.
#[derive(Deserialize)]
struct HeaderV2 {
    _version: u32,
    now_unix_us: i64,
    stats: PipelineStats,
    fleet: Fleet,
    devices: Vec<(DeviceId, IndexEntry)>,
}

/// [`Header`] as written: the same fields, borrowed (no copy of the fleet's windows).
#[derive(Serialize)]
struct HeaderRef<'a> {
    version: u32,
    now_unix_us: i64,
    stats: &'a PipelineStats,
    fleet: &'a Fleet,
    devices: &'a [(DeviceId, IndexEntry)],
    statsd: &'a StatsdState,
}

/// Where a configured window's events go: the index among the per-device or fleet windows.
#[derive(Clone, Copy, Debug)]
enum Route {
    Device(usize),
    Fleet(usize),
}

/// The configured windows, and which per-device or fleet window each is.
#[derive(Debug)]
struct Sections {
    all: Vec<WindowSection>,
    routes: Vec<Route>,
    /// Index into `all` of each per-device window, and of each fleet window.
    device: Vec<usize>,
    fleet: Vec<usize>,
}

/// An output record, already encoded (kind byte + postcard), in emission order.
pub type Encoded = Vec<u8>;

/// What a checkpoint commits: the header and the window state written since the last one.
#[derive(Clone, Debug, Default)]
pub struct CheckpointDelta {
    pub header: Vec<u8>,
    pub pending: Pending,
}

#[derive(Debug)]
pub struct Pipeline {
    sections: Sections,
    device_windows: Vec<(String, WindowSpec)>,
    out_of_orderness: Ticks,
    silence: Ticks,
    max_hold: Ticks,
    idle_timeout: Ticks,
    max_devices: usize,
    memory_bytes: usize,
    now_unix_us: Ticks,
    stats: PipelineStats,
    fleet: Fleet,
    devices: Devices,
    statsd: StatsdOwners,
    pending: Pending,
    key: String,
    scratch: Vec<Output>,
    device_out: Vec<DeviceOutput>,
    fleet_out: Vec<(usize, Output)>,
}

fn us(ms: u64) -> Ticks {
    i64::try_from(ms.saturating_mul(1_000)).unwrap_or(i64::MAX)
}

impl Pipeline {
    /// A fresh pipeline. The config was validated, so every spec is valid.
    pub fn new(sections: &[WindowSection], watermark: &WatermarkSection) -> Pipeline {
        let mut all = Vec::new();
        let mut routes = Vec::new();
        let (mut device, mut fleet) = (Vec::new(), Vec::new());
        let (mut device_windows, mut fleet_windows) = (Vec::new(), Vec::new());
        for section in sections {
            let Ok(spec) = section.spec(watermark) else { continue };
            if section.per_device {
                routes.push(Route::Device(device_windows.len()));
                device.push(all.len());
                device_windows.push((section.name.clone(), spec));
            } else {
                routes.push(Route::Fleet(fleet_windows.len()));
                fleet.push(all.len());
                fleet_windows.push((section.name.clone(), spec));
            }
            all.push(section.clone());
        }
        let watermarks = Watermarks::with_clock_floor(
            us(watermark.out_of_orderness_ms),
            us(watermark.idle_timeout_ms),
            watermark.max_devices,
        );
        let max_outage = us(watermark.max_outage_ms);
        Pipeline {
            sections: Sections { all, routes, device, fleet },
            device_windows,
            out_of_orderness: us(watermark.out_of_orderness_ms),
            silence: us(watermark.stream_silence_ms),
            max_hold: us(watermark.max_backlog_hold_ms),
            idle_timeout: us(watermark.idle_timeout_ms),
            max_devices: watermark.max_devices,
            memory_bytes: usize::try_from(watermark.state_memory_bytes).unwrap_or(usize::MAX),
            now_unix_us: NEG_INF,
            stats: PipelineStats::default(),
            fleet: Fleet::new(&fleet_windows, watermarks),
            devices: Devices::new(Vec::new(), max_outage),
            statsd: StatsdOwners::default(),
            pending: Pending::default(),
            key: String::new(),
            scratch: Vec::new(),
            device_out: Vec::new(),
            fleet_out: Vec::new(),
        }
    }

    /// Restores a checkpoint header. Windows whose config changed (or that are new) start
    /// empty, their stored state deleted; per-device windows are matched to the config when
    /// each device's unit is next read. Returns the fleet window names that were reset.
    pub fn restore(
        sections: &[WindowSection],
        watermark: &WatermarkSection,
        bytes: &[u8],
        store: &dyn StateStore,
    ) -> Result<(Pipeline, Vec<String>), RestoreError> {
        let version = postcard::take_from_bytes::<u32>(bytes).map_err(|_| RestoreError::Unreadable)?.0;
        let header = match version {
            CHECKPOINT_VERSION => postcard::from_bytes::<Header>(bytes).map_err(|_| RestoreError::Unreadable)?,
            2 => {
                let old: HeaderV2 = postcard::from_bytes(bytes).map_err(|_| RestoreError::Unreadable)?;
                Header {
                    _version: CHECKPOINT_VERSION,
                    now_unix_us: old.now_unix_us,
                    stats: old.stats,
                    fleet: old.fleet,
                    devices: old.devices,
                    statsd: StatsdState::default(),
                }
            }
            other => return Err(RestoreError::Version(other)),
        };
        let mut pipeline = Pipeline::new(sections, watermark);
        let fleet_windows: Vec<(String, WindowSpec)> = pipeline
            .sections
            .all
            .iter()
            .filter(|s| !s.per_device)
            .filter_map(|s| s.spec(watermark).ok().map(|spec| (s.name.clone(), spec)))
            .collect();
        pipeline.fleet = header.fleet;
        pipeline.fleet.reconfigure(
            us(watermark.out_of_orderness_ms),
            us(watermark.idle_timeout_ms),
            watermark.max_devices,
        );
        let reset = pipeline.fleet.reconcile(&fleet_windows, &mut pipeline.pending, store)?;
        pipeline.devices = Devices::new(header.devices, us(watermark.max_outage_ms));
        pipeline.now_unix_us = header.now_unix_us;
        pipeline.stats = header.stats;
        pipeline.statsd = StatsdOwners::new(None, header.statsd);
        Ok((pipeline, reset))
    }

    /// Aggregates StatsD samples by event time with `spec` (`None`: not at all). Set it
    /// after [`Self::new`] or [`Self::restore`], before the first record.
    pub fn with_statsd(mut self, spec: Option<StatsdSpec>) -> Pipeline {
        let state = self.statsd.state().clone();
        self.statsd = StatsdOwners::new(spec, state);
        self
    }

    /// The header and the state written since the last checkpoint (changed device units go
    /// in first). Commit it, then call [`Self::checkpoint_committed`].
    pub fn checkpoint(&mut self) -> CheckpointDelta {
        self.devices.flush(&mut self.pending);
        let index = self.devices.index();
        let header = HeaderRef {
            version: CHECKPOINT_VERSION,
            now_unix_us: self.now_unix_us,
            stats: &self.stats,
            fleet: &self.fleet,
            devices: &index,
            statsd: self.statsd.state(),
        };
        // Plain data: serialising into a Vec cannot fail.
        let header = postcard::to_allocvec(&header).unwrap_or_default();
        CheckpointDelta { header, pending: self.pending.clone() }
    }

    /// The last checkpoint is durable: its pending state is now the store's. Units of devices
    /// quiet for the idle timeout leave memory (their state is stored).
    pub fn checkpoint_committed(&mut self) {
        self.pending = Pending::default();
        let quiet_since = self.now_unix_us.saturating_sub(self.idle_timeout);
        self.devices.evict(Some(quiet_since), self.memory_bytes, &mut self.pending);
    }

    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// The event-time StatsD counters.
    pub fn statsd_stats(&self) -> &StatsdStats {
        self.statsd.stats()
    }

    /// The fleet's watermark.
    pub fn watermark_unix_us(&self) -> i64 {
        self.fleet.current()
    }

    /// Processing time: the latest receive time or tick seen.
    pub fn now_unix_us(&self) -> i64 {
        self.now_unix_us
    }

    pub fn snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            fleet_windows_open: self.fleet.open_windows() as u64,
            fleet_windows_stored: self.fleet.stored_windows(),
            late_updates_pending: self.fleet.late_pending() as u64,
            devices: self.devices.known() as u64,
            devices_with_open_windows: self.devices.with_open_windows() as u64,
            devices_holding: self.fleet.holding(self.now_unix_us) as u64,
            devices_resident: self.devices.resident() as u64,
            resident_bytes: self.devices.resident_bytes() as u64,
            pending_bytes: self.pending.bytes() as u64,
            residency: self.devices.residency,
        }
    }

    /// Whether time passing alone (a tick) could still produce output: open windows, holds or
    /// time-outs to come.
    pub fn waiting_on_time(&self) -> bool {
        self.fleet.waiting_on_time() || self.devices.with_open_windows() > 0 || self.statsd.waiting_on_time()
    }

    /// Processes one record; outputs are appended to `out` encoded as log records. Records
    /// this pipeline wrote itself (window results, late events) are skipped. A storage error
    /// leaves the pipeline mid-record: restore from the last checkpoint.
    pub fn handle(
        &mut self,
        record: &Record<'_>,
        store: &dyn StateStore,
        out: &mut Vec<Encoded>,
    ) -> Result<(), LogError> {
        match record {
            Record::Events { head, .. } => {
                let device = head.device;
                let now = self.now_unix_us.max(head.received_unix_us);
                let unit = self.devices.unit(device, &self.device_windows, &self.pending, store)?;
                let statsd_stream = self.statsd.takes(device, head.stream);
                let mut last_ts = None;
                for item in record.events() {
                    // A malformed chain was rejected when it was stored; stop at it anyway.
                    let Ok((seq, event)) = item else { break };
                    let corrected = head.correct(event.mono.as_micros());
                    if let Some(reason) = corrected.quarantine {
                        *self.stats.quarantined.entry(reason.name().to_string()).or_default() += 1;
                    }
                    if corrected.clamped {
                        self.stats.clamped += 1;
                    }
                    let ts = corrected.unix_us;
                    last_ts = Some(ts);
                    if statsd_stream {
                        let id = || global_id(head.device, head.stream, head.epoch, seq);
                        self.statsd.device_event(unit, device, ts, &event.payload, id, out);
                    }
                    let value = match &event.payload {
                        Payload::Counter(s)
                        | Payload::Gauge(s)
                        | Payload::GaugeDelta(s)
                        | Payload::Timer(s)
                        | Payload::Histogram(s) => s.value,
                        Payload::Set(_) | Payload::Opaque(_) => {
                            self.stats.events_not_numeric += 1;
                            continue;
                        }
                    };
                    self.stats.events += 1;
                    let name = event.payload.name();
                    let tags = event.payload.tags();
                    for (section, route) in self.sections.all.iter().zip(&self.sections.routes) {
                        if !section.takes(name) {
                            continue;
                        }
                        let device = section.per_device.then_some(device);
                        window_key(&mut self.key, name, &tags, &section.group_by_tags, device);
                        match *route {
                            Route::Device(window) => {
                                unit.windows.handle_event(
                                    window,
                                    &self.key,
                                    ts,
                                    value,
                                    &mut self.scratch,
                                    &mut self.device_out,
                                );
                            }
                            Route::Fleet(window) => {
                                self.scratch.clear();
                                self.fleet.handle_event(
                                    window,
                                    &self.key,
                                    ts,
                                    value,
                                    &mut self.pending,
                                    store,
                                    &mut self.scratch,
                                )?;
                                self.fleet_out.extend(self.scratch.drain(..).map(|output| (window, output)));
                            }
                        }
                    }
                    if !self.device_out.is_empty() || !self.fleet_out.is_empty() {
                        // The id is only written into late records: most events need none.
                        let id = global_id(head.device, head.stream, head.epoch, seq);
                        let fleet_watermark = self.fleet.current();
                        let outputs = (&mut self.device_out, &mut self.fleet_out);
                        encode_outputs(&mut self.stats, &self.sections, fleet_watermark, outputs, Some(&id), out);
                    }
                }
                if let Some(last_ts) = last_ts {
                    let before = refused(&unit.windows);
                    unit.windows.handle_events(head.stream, head.epoch, head.first_seq, u64::from(head.count), last_ts);
                    self.stats.completeness_refused += refused(&unit.windows) - before;
                }
                self.progress(device, now, store, out)?;
                self.observe_time(head.received_unix_us, store, out)?;
            }
            Record::Gap { head, .. } => {
                let unit = self.devices.unit(head.device, &self.device_windows, &self.pending, store)?;
                let before = refused(&unit.windows);
                unit.windows.handle_gap(head.stream, head.epoch, head.range.start, head.range.end);
                self.stats.completeness_refused += refused(&unit.windows) - before;
                let now = self.now_unix_us.max(head.received_unix_us);
                self.progress(head.device, now, store, out)?;
                self.observe_time(head.received_unix_us, store, out)?;
            }
            Record::Claim(claim) => {
                self.stats.claims += 1;
                let unit = self.devices.unit(claim.device, &self.device_windows, &self.pending, store)?;
                let before = refused(&unit.windows);
                unit.windows.handle_claim(&to_claim(claim));
                self.stats.completeness_refused += refused(&unit.windows) - before;
                let now = self.now_unix_us.max(claim.received_unix_us);
                self.progress(claim.device, now, store, out)?;
                self.observe_time(claim.received_unix_us, store, out)?;
            }
            Record::Tick(tick) => self.observe_time(tick.now_unix_us, store, out)?,
            Record::Other { kind, bytes } if *kind == RecordKind::StatsdSamples as u8 => {
                // A record that does not decode was not written by this collector: skipped.
                if let Some(timed) = crate::statsd::timed::decode_record(bytes) {
                    let now = self.now_unix_us;
                    self.statsd.timed_record(&timed, now, &mut self.devices, &self.pending, store, out)?;
                    self.observe_time(timed.received_unix_us, store, out)?;
                }
            }
            Record::Window(_) | Record::Late(_) | Record::Other { .. } => {}
        }
        Ok(())
    }

    /// The end of a log block: late updates of fleet windows that no draining device holds
    /// back are emitted (once per window however many events it took), settled fleet
    /// windows leave memory, and StatsD windows that took late samples emit their update.
    pub fn end_block(&mut self, store: &dyn StateStore, out: &mut Vec<Encoded>) -> Result<(), LogError> {
        self.fleet.end_block(self.now_unix_us, &mut self.pending, &mut self.fleet_out, &mut self.scratch);
        let now = self.now_unix_us;
        self.statsd.end_block(&mut self.devices, &self.device_windows, &self.pending, store, now)?;
        self.emit(out);
        Ok(())
    }

    /// A device's record was applied to its completeness: move its watermark (firing its
    /// windows), tell the fleet, and fire what the fleet's watermark closes.
    fn progress(
        &mut self,
        device: DeviceId,
        now: Ticks,
        store: &dyn StateStore,
        out: &mut Vec<Encoded>,
    ) -> Result<(), LogError> {
        let unit = self.devices.unit(device, &self.device_windows, &self.pending, store)?;
        let progressed =
            unit.windows.advance(self.out_of_orderness, self.silence, &mut self.scratch, &mut self.device_out);
        self.statsd.advance_device(unit, device);
        let (watermark, draining) = (unit.windows.watermark(), unit.windows.draining(self.silence));
        self.devices.heard(device, now, progressed);
        self.fleet.device(device, watermark, draining, now, self.max_hold);
        self.fleet.advance(&mut self.pending, store, &mut self.fleet_out, &mut self.scratch)?;
        self.emit(out);
        for forgotten in self.devices.enforce_bound(self.max_devices, &mut self.pending) {
            if forgotten >= SOURCE_IDS {
                self.statsd.forget_source(forgotten);
                continue;
            }
            self.fleet.forget(forgotten);
            self.stats.devices_forgotten += 1;
        }
        self.devices.evict(None, self.memory_bytes, &mut self.pending);
        Ok(())
    }

    fn observe_time(
        &mut self,
        now_unix_us: i64,
        store: &dyn StateStore,
        out: &mut Vec<Encoded>,
    ) -> Result<(), LogError> {
        if now_unix_us > self.now_unix_us {
            self.now_unix_us = now_unix_us;
        }
        let now = self.now_unix_us;
        for device in self.devices.timed_out(now) {
            if device >= SOURCE_IDS {
                // Processing time closes a source's windows long before any time-out.
                self.devices.refresh_open(device);
                continue;
            }
            let unit = self.devices.unit(device, &self.device_windows, &self.pending, store)?;
            unit.windows.time_out(&mut self.scratch, &mut self.device_out);
            self.statsd.time_out_device(unit, device);
            let watermark = unit.windows.watermark();
            self.devices.refresh_open(device);
            // Its watermark moved; whether it drains does not change by itself.
            self.fleet.device(device, watermark, false, now, self.max_hold);
        }
        self.statsd.tick(now, &mut self.devices, &mut self.pending, store)?;
        self.fleet.tick(now);
        self.fleet.advance(&mut self.pending, store, &mut self.fleet_out, &mut self.scratch)?;
        self.emit(out);
        Ok(())
    }

    /// Encodes the outputs gathered so far (StatsD windows' results first).
    fn emit(&mut self, out: &mut Vec<Encoded>) {
        self.statsd.encode(out);
        let fleet_watermark = self.fleet.current();
        let outputs = (&mut self.device_out, &mut self.fleet_out);
        encode_outputs(&mut self.stats, &self.sections, fleet_watermark, outputs, None, out);
    }
}

/// Encodes `outputs` (the devices' first, in their order, then the fleet's) as log records;
/// `event_id` goes into late records.
fn encode_outputs(
    stats: &mut PipelineStats,
    sections: &Sections,
    fleet_watermark: Ticks,
    (device_out, fleet_out): (&mut Vec<DeviceOutput>, &mut Vec<(usize, Output)>),
    event_id: Option<&str>,
    out: &mut Vec<Encoded>,
) {
    for output in device_out.drain(..) {
        let Some(section) = sections.device.get(output.window).and_then(|&i| sections.all.get(i)) else { continue };
        let closed_by = if output.timed_out { ClosedBy::Timeout } else { ClosedBy::Completeness };
        if output.timed_out && matches!(output.output, Output::Window { change: Change::Insert, .. }) {
            stats.timed_out += 1;
        }
        out.push(encode(stats, section, output.output, output.watermark, closed_by, event_id));
    }
    for (window, output) in fleet_out.drain(..) {
        let Some(section) = sections.fleet.get(window).and_then(|&i| sections.all.get(i)) else { continue };
        out.push(encode(stats, section, output, fleet_watermark, ClosedBy::Watermark, event_id));
    }
}

/// Why a checkpoint could not be restored; the processor starts the windows afresh.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the window checkpoint does not decode")]
    Unreadable,
    #[error("the window checkpoint is format {0}; this build reads format {CHECKPOINT_VERSION}")]
    Version(u32),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// What the pipeline holds, for metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct StateSnapshot {
    pub fleet_windows_open: u64,
    pub fleet_windows_stored: u64,
    pub late_updates_pending: u64,
    pub devices: u64,
    pub devices_with_open_windows: u64,
    pub devices_holding: u64,
    pub devices_resident: u64,
    pub resident_bytes: u64,
    pub pending_bytes: u64,
    pub residency: Residency,
}

/// Inputs a device's completeness refused so far (claims going backwards, bounds).
fn refused(unit: &DeviceWindows) -> u64 {
    let stats = unit.completeness_stats();
    stats.claims_ignored + stats.ranges_dropped + stats.epochs_dropped + stats.streams_dropped
}

fn to_claim(record: &ClaimRecord) -> Claim {
    Claim {
        stream: record.stream,
        epoch: record.epoch,
        at: record.at_unix_us,
        assigned_end: record.assigned_end,
        older_epochs_held: record.older_epochs_held,
        draining: record.draining,
    }
}

fn encode(
    stats: &mut PipelineStats,
    section: &WindowSection,
    output: Output,
    watermark: i64,
    closed_by: ClosedBy,
    event_id: Option<&str>,
) -> Encoded {
    let mut bytes = Vec::new();
    match output {
        Output::Window { change, result } => {
            match change {
                Change::Insert => stats.results += 1,
                Change::Retract => stats.retractions += 1,
                Change::Final => {}
            }
            let record = window_record(section, change, &result, watermark, closed_by);
            encode_head(RecordKind::Window, &record, &mut bytes);
        }
        Output::Late { key, ts, value } => {
            *stats.late.entry(section.name.clone()).or_default() += 1;
            let late = LateRecord {
                window: section.name.clone(),
                key,
                id: event_id.unwrap_or_default().to_string(),
                event_unix_us: ts,
                value,
                watermark_unix_us: watermark,
            };
            encode_head(RecordKind::Late, &late, &mut bytes);
        }
    }
    bytes
}

fn window_record(
    section: &WindowSection,
    change: Change,
    result: &WindowResult,
    watermark: i64,
    closed_by: ClosedBy,
) -> WindowRecord {
    let a = &result.aggregate;
    WindowRecord {
        window: section.name.clone(),
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
        closed_by,
    }
}
