//! Whose event-time StatsD windows ([`super::statsd`]) a sample goes to, and what closes
//! them: the pipeline's StatsD half.
//!
//! - **Devices.** Events on an agent's StatsD stream ([`STATSD_STREAM`]) are samples (the
//!   convention of `driftlog_protocol::statsd::event`). They go to the device's unit, next
//!   to its per-device windows, and close on the same completeness watermark: an offline
//!   device's windows wait for its backlog, and each fires once, complete.
//! - **`|T` sources.** `statsd_samples` records (DogStatsD lines with a `|T` time, from the
//!   collector's own listeners) carry no device, so they are aggregated per source address.
//!   A source's unit lives where device units live, under an id from [`SOURCE_IDS`] up, and
//!   its windows close `timestamp_bound` after their end by processing time (receive times
//!   and ticks): nothing says when a source is complete. A source with no windows left is
//!   forgotten.
//!
//! Late updates (samples behind a fired window) are emitted at the end of the log block, one
//! RETRACT + INSERT per window however many samples it took; the units that owe one are
//! remembered until then (never across a checkpoint: checkpoints fall between blocks).

use super::devices::{Devices, SOURCE_IDS, Unit};
use super::statsd::{Emit, Owner, StatsdSpec, StatsdStats, Taken};
use super::store::{Pending, StateStore};
use crate::log::LogError;
use crate::log::record::{ClosedBy, LateRecord, RecordKind, encode_head};
use crate::statsd::aggregate::Family;
use crate::statsd::flush::{Flush, encode_record};
use crate::statsd::timed::TimedRecord;
use driftlog_eventtime::window::{Ticks, WindowSpec};
use driftlog_protocol::DeviceId;
use driftlog_protocol::statsd::event::{event_sample, write_event_key};
use driftlog_protocol::statsd::{Dialect, Key, MetricKind, Sample, SampleValue};
use driftlog_protocol::wire::Payload;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub use driftlog_protocol::statsd::event::STATSD_STREAM;

/// What is checkpointed (in the pipeline's header).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsdState {
    pub stats: StatsdStats,
    /// `|T` sources with windows: name → unit id.
    sources: BTreeMap<String, DeviceId>,
    /// The next source's unit id, less [`SOURCE_IDS`].
    next_source: u64,
    /// When each source's windows next need the processing time (its due watermark plus the
    /// bound).
    due: BTreeMap<DeviceId, Ticks>,
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct StatsdOwners {
    spec: Option<StatsdSpec>,
    state: StatsdState,
    names: BTreeMap<DeviceId, String>,
    by_due: BTreeSet<(Ticks, DeviceId)>,
    /// Units owing a late update, emitted at the end of the block.
    late: BTreeSet<DeviceId>,
    out: Vec<Flush>,
    key: Vec<u8>,
}

fn device_source(device: DeviceId) -> String {
    format!("device-{device}")
}

impl StatsdOwners {
    pub fn new(spec: Option<StatsdSpec>, state: StatsdState) -> StatsdOwners {
        let names = state.sources.iter().map(|(name, id)| (*id, name.clone())).collect();
        let by_due = state.due.iter().map(|(id, at)| (*at, *id)).collect();
        StatsdOwners { spec, state, names, by_due, ..StatsdOwners::default() }
    }

    pub fn state(&self) -> &StatsdState {
        &self.state
    }

    pub fn stats(&self) -> &StatsdStats {
        &self.state.stats
    }

    /// Whether events of `stream` from `device` are StatsD samples to aggregate.
    pub fn takes(&self, device: DeviceId, stream: u32) -> bool {
        self.spec.is_some() && stream == STATSD_STREAM && device < SOURCE_IDS
    }

    /// Whether only processing time can close or drop windows now (ticks are worth writing).
    pub fn waiting_on_time(&self) -> bool {
        !self.by_due.is_empty()
    }

    /// One event of a device's StatsD stream at corrected time `ts`, judged against the
    /// device's watermark; a sample its window cannot take becomes a `late` record in `out`.
    pub fn device_event(
        &mut self,
        unit: &mut Unit,
        device: DeviceId,
        ts: Ticks,
        payload: &Payload<'_>,
        event_id: impl FnOnce() -> String,
        out: &mut Vec<Vec<u8>>,
    ) {
        let Some(spec) = &self.spec else { return };
        let Some(sample) = event_sample(payload) else {
            self.state.stats.not_samples += 1;
            return;
        };
        self.key.clear();
        write_event_key(payload, &mut |piece| self.key.extend_from_slice(piece));
        let watermark = unit.windows.watermark();
        let taken = unit.statsd.handle(spec, ts, &self.key, &sample, watermark, &mut self.state.stats);
        match taken {
            Taken::Aggregated => {}
            Taken::Updated => {
                self.late.insert(device);
            }
            Taken::Late | Taken::OverLimit => {
                let owner = format!("device={device}");
                late_record(&self.key, &owner, event_id(), ts, &sample, watermark, out);
            }
        }
    }

    /// A device's watermark moved (or not): fire and drop what it reached.
    pub fn advance_device(&mut self, unit: &mut Unit, device: DeviceId) {
        let Some(spec) = &self.spec else { return };
        let source = device_source(device);
        let owner = Owner { device: Some(device), source: &source };
        let watermark = unit.windows.watermark();
        let mut to = Emit { spec, owner, stats: &mut self.state.stats, out: &mut self.out };
        unit.statsd.advance(&mut to, watermark, ClosedBy::Completeness);
    }

    /// A device stayed away `max_outage_ms`: its windows without a result fire as they stand.
    pub fn time_out_device(&mut self, unit: &mut Unit, device: DeviceId) {
        let Some(spec) = &self.spec else { return };
        let source = device_source(device);
        let owner = Owner { device: Some(device), source: &source };
        let watermark = unit.windows.watermark();
        let mut to = Emit { spec, owner, stats: &mut self.state.stats, out: &mut self.out };
        unit.statsd.time_out(&mut to, watermark);
    }

    /// A `statsd_samples` record; `now` is the processing time before it.
    pub fn timed_record(
        &mut self,
        record: &TimedRecord,
        now: Ticks,
        devices: &mut Devices,
        pending: &Pending,
        store: &dyn StateStore,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), LogError> {
        let Some(spec) = &self.spec else { return Ok(()) };
        self.state.stats.timestamped += record.samples.len() as u64;
        let watermark = now.saturating_sub(spec.timestamp_bound);
        let owner = format!("source={}", record.source);
        let id = match self.state.sources.get(&record.source) {
            Some(id) => Some(*id),
            None if self.state.sources.len() < spec.max_sources => {
                let id = SOURCE_IDS | (self.state.next_source & !SOURCE_IDS);
                self.state.next_source += 1;
                self.state.sources.insert(record.source.clone(), id);
                self.names.insert(id, record.source.clone());
                Some(id)
            }
            None => None,
        };
        let mut unit = match id {
            Some(id) => Some(devices.unit(id, &[], pending, store)?),
            None => None,
        };
        for stored in &record.samples {
            // A `|T` is whole seconds; never after the sample arrived.
            let ts = stored.timestamp_s.saturating_mul(1_000_000).min(record.received_unix_us);
            let sample =
                timed_sample(stored.family, stored.value, &stored.member, stored.gauge_delta, stored.sample_rate);
            let taken = match unit.as_deref_mut() {
                Some(unit) => {
                    unit.statsd.handle(spec, ts, stored.key.as_bytes(), &sample, watermark, &mut self.state.stats)
                }
                None => {
                    self.state.stats.over_limit += 1;
                    Taken::OverLimit
                }
            };
            match (taken, id) {
                (Taken::Updated, Some(id)) => {
                    self.late.insert(id);
                }
                (Taken::Late | Taken::OverLimit, _) => {
                    late_record(stored.key.as_bytes(), &owner, String::new(), ts, &sample, watermark, out)
                }
                _ => {}
            }
        }
        if let (Some(id), Some(unit)) = (id, unit) {
            let due = unit.statsd.next_due(spec);
            self.schedule(id, due);
            devices.heard(id, now.max(record.received_unix_us), true);
        }
        Ok(())
    }

    fn schedule(&mut self, id: DeviceId, due_watermark: Option<Ticks>) {
        let bound = self.spec.as_ref().map_or(0, |spec| spec.timestamp_bound);
        if let Some(old) = self.state.due.remove(&id) {
            self.by_due.remove(&(old, id));
        }
        if let Some(due) = due_watermark {
            let at = due.saturating_add(bound);
            self.state.due.insert(id, at);
            self.by_due.insert((at, id));
        }
    }

    /// Processing time moved to `now`: sources whose windows it reaches fire and drop them;
    /// a source left with nothing is forgotten.
    pub fn tick(
        &mut self,
        now: Ticks,
        devices: &mut Devices,
        pending: &mut Pending,
        store: &dyn StateStore,
    ) -> Result<(), LogError> {
        let Some(spec) = self.spec.clone() else { return Ok(()) };
        let watermark = now.saturating_sub(spec.timestamp_bound);
        let due: Vec<DeviceId> = self.by_due.range(..=(now, DeviceId::MAX)).map(|(_, id)| *id).collect();
        for id in due {
            let source = self.names.get(&id).cloned().unwrap_or_default();
            let unit = devices.unit(id, &[], pending, store)?;
            let owner = Owner { device: None, source: &source };
            let mut to = Emit { spec: &spec, owner, stats: &mut self.state.stats, out: &mut self.out };
            unit.statsd.advance(&mut to, watermark, ClosedBy::Watermark);
            let (next, empty) = (unit.statsd.next_due(&spec), unit.statsd.is_empty());
            self.schedule(id, next);
            if empty && !self.late.contains(&id) {
                self.forget_source(id);
                devices.forget(id, pending);
            } else {
                devices.refresh_open(id);
            }
        }
        Ok(())
    }

    /// The `max_devices` bound forgot a unit: if it was a source's, forget the source.
    pub fn forget_source(&mut self, id: DeviceId) {
        if let Some(name) = self.names.remove(&id) {
            self.state.sources.remove(&name);
        }
        self.schedule(id, None);
    }

    /// The end of a log block: every window that took late samples emits its update.
    pub fn end_block(
        &mut self,
        devices: &mut Devices,
        device_windows: &[(String, WindowSpec)],
        pending: &Pending,
        store: &dyn StateStore,
        now: Ticks,
    ) -> Result<(), LogError> {
        let Some(spec) = self.spec.clone() else { return Ok(()) };
        for id in std::mem::take(&mut self.late) {
            let (source, closed_by, windows) = match self.names.get(&id) {
                Some(name) => (name.clone(), ClosedBy::Watermark, &[][..]),
                None if id < SOURCE_IDS => (device_source(id), ClosedBy::Completeness, device_windows),
                // A source forgotten since (the devices' bound): nothing to update.
                None => continue,
            };
            let unit = devices.unit(id, windows, pending, store)?;
            let watermark =
                if id < SOURCE_IDS { unit.windows.watermark() } else { now.saturating_sub(spec.timestamp_bound) };
            let device = (id < SOURCE_IDS).then_some(id);
            let owner = Owner { device, source: &source };
            let mut to = Emit { spec: &spec, owner, stats: &mut self.state.stats, out: &mut self.out };
            unit.statsd.flush_late(&mut to, watermark, closed_by);
            if id >= SOURCE_IDS {
                let next = unit.statsd.next_due(&spec);
                self.schedule(id, next);
            }
        }
        Ok(())
    }

    /// Encodes the results gathered so far as `statsd_flush` records.
    pub fn encode(&mut self, out: &mut Vec<Vec<u8>>) {
        for flush in self.out.drain(..) {
            let mut bytes = Vec::new();
            encode_record(&flush, &mut bytes);
            out.push(bytes);
        }
    }
}

/// A stored `|T` sample as the aggregator takes it (its key comes separately).
fn timed_sample(family: Family, value: f64, member: &[u8], gauge_delta: bool, sample_rate: f64) -> Sample<'_> {
    let (kind, value) = match family {
        Family::Counter => (MetricKind::Counter, SampleValue::Number(value)),
        Family::Gauge => (MetricKind::Gauge, SampleValue::Number(value)),
        Family::Timer => (MetricKind::Timer, SampleValue::Number(value)),
        Family::Set => (MetricKind::Set, SampleValue::Member(member)),
    };
    Sample::new(Key::new(&[], &[], Dialect::DogStatsd), kind, value, gauge_delta, sample_rate)
}

/// A sample no window could take, as a `late` record of the reserved window `statsd`.
fn late_record(
    key: &[u8],
    owner: &str,
    id: String,
    ts: Ticks,
    sample: &Sample<'_>,
    watermark: Ticks,
    out: &mut Vec<Vec<u8>>,
) {
    let value = match sample.value {
        SampleValue::Number(value) => value,
        SampleValue::Member(_) => 0.0,
    };
    let late = LateRecord {
        window: super::config::STATSD_LATE_WINDOW.to_string(),
        key: format!("{} {owner}", String::from_utf8_lossy(key)),
        id,
        event_unix_us: ts,
        value,
        watermark_unix_us: watermark,
    };
    let mut bytes = Vec::new();
    encode_head(RecordKind::Late, &late, &mut bytes);
    out.push(bytes);
}
