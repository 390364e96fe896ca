//! Log records: what one offset (or, for events, a run of offsets) holds.
//!
//! A record is a kind byte, a postcard head, and for events the run's encoded events in the
//! batch form of the wire (delta times, repeated tag lists as one byte), which is why the log
//! costs little more than the frames it came from. An `Events` record covers one offset per
//! event; every other kind covers one offset.
//!
//! Within a block, the first run of a `(device, stream, epoch, sending epoch)` is an `Events`
//! record with its whole head, and opens a slot; later runs of the same slot are
//! `EventsNext` records whose head is the slot number and the differences from the slot's
//! previous run (sequence gap, count, t2 and t3 deltas: about 8 bytes), and which share the
//! slot's clock fix. Devices that send one event per frame would otherwise pay a 35 to 50
//! byte head for a 40 byte event. Both decode to [`Record::Events`] with a full head.

use driftlog_eventtime::clock::{ClockConfig, ClockFix, Corrected, Method, Quarantine};
use driftlog_eventtime::window::Change;
use driftlog_protocol::wire::{DropReason, Event, EventChainReader, Payload, Reject};
use driftlog_protocol::{DeviceId, Epoch, Seq, SeqRange, StreamId};
use serde::{Deserialize, Serialize};

use super::varint;

/// Record kinds. Later issues add to the reserved numbers; a reader shows unknown kinds raw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    Events = 1,
    Tombstone = 2,
    /// A gap the collector inferred from a heartbeat: the device no longer holds the range.
    Gap = 3,
    /// Window results as first written (without [`ClosedBy`]): read, never written.
    WindowV1 = 4,
    /// StatsD flushes: a postcard `statsd::flush::Flush`, shown by `statsd::record_json`.
    StatsdFlush = 5,
    /// Events later than the allowed lateness (the event-time issue).
    Late = 6,
    /// The collector clock as the window processor saw it while caught up: event time
    /// processing reads idleness from the log, so replays give identical results.
    Tick = 7,
    /// A run of events continuing a slot opened earlier in the same block (format 3).
    EventsNext = 8,
    /// Window results: INSERT / RETRACT / FINAL, with what closed the window.
    Window = 9,
    /// A device's completeness claim (from a heartbeat): the per-device watermarks are computed
    /// from the log, so replays give identical results.
    Claim = 10,
    /// StatsD samples with a `|T` time (a `statsd::timed::TimedRecord`), aggregated by the
    /// window pipeline per source and by their time.
    StatsdSamples = 11,
}

impl RecordKind {
    pub fn from_byte(byte: u8) -> Option<RecordKind> {
        Some(match byte {
            1 => RecordKind::Events,
            2 => RecordKind::Tombstone,
            3 => RecordKind::Gap,
            4 => RecordKind::WindowV1,
            5 => RecordKind::StatsdFlush,
            6 => RecordKind::Late,
            7 => RecordKind::Tick,
            8 => RecordKind::EventsNext,
            9 => RecordKind::Window,
            10 => RecordKind::Claim,
            11 => RecordKind::StatsdSamples,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Events => "events",
            RecordKind::Tombstone => "tombstone",
            RecordKind::Gap => "gap",
            RecordKind::Window | RecordKind::WindowV1 => "window",
            RecordKind::StatsdFlush => "statsd_flush",
            RecordKind::Late => "late",
            RecordKind::Tick => "tick",
            RecordKind::EventsNext => "events_next",
            RecordKind::Claim => "claim",
            RecordKind::StatsdSamples => "statsd_samples",
        }
    }
}

/// Where a run of events came from and the raw times the event-time issue corrects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredEventsHead", into = "StoredEventsHead")]
pub struct EventsHead {
    pub device: DeviceId,
    pub stream: StreamId,
    pub epoch: Epoch,
    pub first_seq: Seq,
    pub count: u32,
    /// t2: the device's monotonic clock when it sealed the frame, µs since its boot.
    pub sent_at_us: u64,
    /// The device's boot epoch when it sent (events may be from an older epoch).
    pub sent_epoch: Epoch,
    /// t3: the collector's wall clock when the datagram arrived, µs since 1970.
    pub received_unix_us: i64,
    /// The device's clock model when the record was stored; `None` when there is none for
    /// the events' boot epoch (a backlog from a boot the collector never heard from).
    pub clock: Option<ClockFix>,
}

/// [`EventsHead`] as stored: the clock fix relative to the record's own t2 and t3, so its
/// large numbers (a Unix offset, a device time) cost a byte or two instead of eight.
#[derive(Serialize, Deserialize)]
struct StoredEventsHead {
    device: DeviceId,
    stream: StreamId,
    epoch: Epoch,
    first_seq: Seq,
    count: u32,
    sent_at_us: u64,
    sent_epoch: Epoch,
    received_unix_us: i64,
    clock: Option<StoredClock>,
}

#[derive(Serialize, Deserialize)]
struct StoredClock {
    /// `sent_at_us - reference_device_us` (wrapping).
    reference_back_us: i64,
    /// `offset_us - (t3 - t2)` (wrapping).
    offset_delta_us: i64,
    drift_ppb: i64,
    uncertainty_us: u64,
    drift_uncertainty_ppb: u64,
    method: Method,
}

fn naive_offset(sent_at_us: u64, received_unix_us: i64) -> i64 {
    received_unix_us.wrapping_sub(sent_at_us as i64)
}

impl From<EventsHead> for StoredEventsHead {
    fn from(h: EventsHead) -> StoredEventsHead {
        let clock = h.clock.map(|fix| StoredClock {
            reference_back_us: h.sent_at_us.wrapping_sub(fix.reference_device_us) as i64,
            offset_delta_us: fix.offset_us.wrapping_sub(naive_offset(h.sent_at_us, h.received_unix_us)),
            drift_ppb: fix.drift_ppb,
            uncertainty_us: fix.uncertainty_us,
            drift_uncertainty_ppb: fix.drift_uncertainty_ppb,
            method: fix.method,
        });
        StoredEventsHead {
            device: h.device,
            stream: h.stream,
            epoch: h.epoch,
            first_seq: h.first_seq,
            count: h.count,
            sent_at_us: h.sent_at_us,
            sent_epoch: h.sent_epoch,
            received_unix_us: h.received_unix_us,
            clock,
        }
    }
}

impl From<StoredEventsHead> for EventsHead {
    fn from(h: StoredEventsHead) -> EventsHead {
        let clock = h.clock.map(|c| ClockFix {
            reference_device_us: h.sent_at_us.wrapping_sub(c.reference_back_us as u64),
            offset_us: c.offset_delta_us.wrapping_add(naive_offset(h.sent_at_us, h.received_unix_us)),
            drift_ppb: c.drift_ppb,
            uncertainty_us: c.uncertainty_us,
            drift_uncertainty_ppb: c.drift_uncertainty_ppb,
            method: c.method,
        });
        EventsHead {
            device: h.device,
            stream: h.stream,
            epoch: h.epoch,
            first_seq: h.first_seq,
            count: h.count,
            sent_at_us: h.sent_at_us,
            sent_epoch: h.sent_epoch,
            received_unix_us: h.received_unix_us,
            clock,
        }
    }
}

impl EventsHead {
    /// Corrected event time of an event stamped `t1` (device monotonic µs). Only the stored
    /// fix and fixed guards go in, so every reader and replay gets the same answer.
    pub fn correct(&self, t1_mono_us: u64) -> Corrected {
        let config = guard_config();
        match &self.clock {
            Some(fix) => {
                // t2 is on the sending boot's clock: comparable with t1 only within one boot.
                let t2 = if self.sent_epoch == self.epoch { self.sent_at_us } else { t1_mono_us };
                fix.correct(&config, t1_mono_us, t2, self.received_unix_us)
            }
            None => Corrected {
                unix_us: self.received_unix_us,
                uncertainty_us: 0,
                quarantine: Some(Quarantine::NoModel),
                clamped: false,
            },
        }
    }
}

/// The clock guards every stored correction uses (Memfault's window: 365 days back, 5 min
/// ahead). Fixed, not configured: changing them would change what replays compute.
pub fn guard_config() -> ClockConfig {
    ClockConfig { future_tolerance_us: 300_000_000, max_age_us: 365 * 86_400_000_000, ..ClockConfig::default() }
}

/// What made a window emit a result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClosedBy {
    /// The fleet's watermark passed it (windows not kept per device), or a late update.
    #[default]
    Watermark,
    /// The device's completeness passed it: every event it will ever hold is in.
    Completeness,
    /// The device stayed away longer than `watermark.max_outage_ms`: emitted as it stood.
    Timeout,
}

impl ClosedBy {
    pub fn name(self) -> &'static str {
        match self {
            ClosedBy::Watermark => "watermark",
            ClosedBy::Completeness => "completeness",
            ClosedBy::Timeout => "timeout",
        }
    }
}

/// One changelog entry of a window (`Window` record).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowRecord {
    /// The `[[windows]]` name.
    pub window: String,
    pub change: Change,
    /// Metric name, then `tag=value` for each grouped tag, then `device=N` when per device.
    pub key: String,
    pub start_unix_us: i64,
    pub end_unix_us: i64,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
    /// `(q, value)` for each configured quantile.
    pub quantiles: Vec<(f64, f64)>,
    /// The watermark that emitted it: the device's for per-device windows, else the fleet's.
    pub watermark_unix_us: i64,
    pub closed_by: ClosedBy,
}

/// [`WindowRecord`] as kind 4 stored it, before `closed_by`.
#[derive(Deserialize)]
struct WindowRecordV1 {
    window: String,
    change: Change,
    key: String,
    start_unix_us: i64,
    end_unix_us: i64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    last: f64,
    quantiles: Vec<(f64, f64)>,
    watermark_unix_us: i64,
}

impl From<WindowRecordV1> for WindowRecord {
    fn from(w: WindowRecordV1) -> WindowRecord {
        WindowRecord {
            window: w.window,
            change: w.change,
            key: w.key,
            start_unix_us: w.start_unix_us,
            end_unix_us: w.end_unix_us,
            count: w.count,
            sum: w.sum,
            min: w.min,
            max: w.max,
            last: w.last,
            quantiles: w.quantiles,
            watermark_unix_us: w.watermark_unix_us,
            closed_by: ClosedBy::Watermark,
        }
    }
}

/// A heartbeat's completeness claim (`Claim` record), as the acceptor stored it: the device
/// time mapped to the collector's clock with the model in force, so the window pipeline (and
/// every replay) reads the same number. See `driftlog_eventtime::window::completeness`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    pub device: DeviceId,
    pub stream: StreamId,
    pub epoch: Epoch,
    /// The heartbeat's send time, device monotonic µs.
    pub sent_at_us: u64,
    /// Every sequence number below this had been assigned at `sent_at_us`.
    pub assigned_end: Seq,
    pub older_epochs_held: bool,
    pub draining: bool,
    /// `sent_at_us` on the collector's clock (never after `received_unix_us`).
    pub at_unix_us: i64,
    pub received_unix_us: i64,
}

/// An event a window could not take (`Late` record): behind the watermark by more than the
/// allowed lateness, or over the window limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LateRecord {
    pub window: String,
    pub key: String,
    /// The event's global id.
    pub id: String,
    pub event_unix_us: i64,
    pub value: f64,
    pub watermark_unix_us: i64,
}

/// See [`RecordKind::Tick`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickRecord {
    pub now_unix_us: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapHead {
    pub device: DeviceId,
    pub stream: StreamId,
    pub epoch: Epoch,
    pub range: SeqRange,
    pub reason: DropReason,
    pub received_unix_us: i64,
}

/// A decoded record borrowing its block.
#[derive(Clone, Debug)]
pub enum Record<'a> {
    Events {
        head: EventsHead,
        events: &'a [u8],
    },
    /// A device's tombstone (`kind` Tombstone) or an inferred gap (`kind` Gap).
    Gap {
        kind: RecordKind,
        head: GapHead,
    },
    Window(WindowRecord),
    Late(LateRecord),
    Tick(TickRecord),
    Claim(ClaimRecord),
    /// Kinds this build does not interpret (or that carry their own encoding).
    Other {
        kind: u8,
        bytes: &'a [u8],
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is empty")]
    Empty,
    #[error("record head is malformed")]
    Head,
    #[error("events are malformed")]
    Events,
    #[error("events record refers to slot {0}, which the block has not opened")]
    Slot(u64),
}

/// The heads of a block's slots, in the order their `Events` records opened them: the
/// context an `EventsNext` record is decoded against. Bounded by the block's records.
pub type Slots = Vec<EventsHead>;

impl<'a> Record<'a> {
    /// How many offsets the record occupies.
    pub fn width(&self) -> u64 {
        match self {
            Record::Events { head, .. } => u64::from(head.count),
            _ => 1,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Record::Events { .. } => RecordKind::Events.name(),
            Record::Gap { kind, .. } => kind.name(),
            Record::Window(_) => RecordKind::Window.name(),
            Record::Late(_) => RecordKind::Late.name(),
            Record::Tick(_) => RecordKind::Tick.name(),
            Record::Claim(_) => RecordKind::Claim.name(),
            Record::Other { kind, .. } => RecordKind::from_byte(*kind).map_or("unknown", RecordKind::name),
        }
    }

    /// Decodes one record of a block; `slots` carries the block's event slots from record
    /// to record (start each block with an empty one).
    pub fn decode(bytes: &'a [u8], slots: &mut Slots) -> Result<Record<'a>, RecordError> {
        let (&kind, rest) = bytes.split_first().ok_or(RecordError::Empty)?;
        match RecordKind::from_byte(kind) {
            Some(RecordKind::Events) => {
                let (head, events) = postcard::take_from_bytes::<EventsHead>(rest).map_err(|_| RecordError::Head)?;
                if head.count == 0 {
                    return Err(RecordError::Head);
                }
                slots.push(head);
                Ok(Record::Events { head, events })
            }
            Some(RecordKind::EventsNext) => {
                let (head, events) = decode_events_next(rest, slots)?;
                Ok(Record::Events { head, events })
            }
            Some(k @ (RecordKind::Tombstone | RecordKind::Gap)) => {
                let (head, _) = postcard::take_from_bytes::<GapHead>(rest).map_err(|_| RecordError::Head)?;
                Ok(Record::Gap { kind: k, head })
            }
            Some(RecordKind::Window) => Ok(Record::Window(decode_exact(rest)?)),
            Some(RecordKind::WindowV1) => Ok(Record::Window(decode_exact::<WindowRecordV1>(rest)?.into())),
            Some(RecordKind::Claim) => Ok(Record::Claim(decode_exact(rest)?)),
            Some(RecordKind::Late) => Ok(Record::Late(decode_exact(rest)?)),
            Some(RecordKind::Tick) => Ok(Record::Tick(decode_exact(rest)?)),
            _ => Ok(Record::Other { kind, bytes: rest }),
        }
    }

    /// The events of an `Events` record with their sequence numbers; empty for other kinds.
    pub fn events(&self) -> impl Iterator<Item = Result<(Seq, Event<'a>), RecordError>> + 'a {
        let (first, bytes) = match self {
            Record::Events { head, events } => (head.first_seq, *events),
            _ => (0, &[][..]),
        };
        EventChainReader::new(bytes).enumerate().map(move |(index, event)| {
            event.map(|e| (first + index as u64, e)).map_err(|_: Reject| RecordError::Events)
        })
    }
}

/// Appends an `Events` record (`head` plus the already encoded `events`) to `out`: the first
/// run of its slot in a block.
pub fn encode_events(head: &EventsHead, events: &[u8], out: &mut Vec<u8>) {
    out.push(RecordKind::Events as u8);
    // A stored head is at most 122 bytes (13 varints of up to 10 bytes, two of them u32s of
    // up to 5, an option tag and a method byte): serialising it into this buffer cannot fail.
    let mut buf = [0u8; 160];
    if let Ok(bytes) = postcard::to_slice(head, &mut buf) {
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(events);
}

/// Appends an `EventsNext` record: the run `head` of slot `slot`, whose previous run in this
/// block was `previous`. The slot's device, stream, epochs and clock fix are `previous`'s.
pub fn encode_events_next(slot: u32, previous: &EventsHead, head: &EventsHead, events: &[u8], out: &mut Vec<u8>) {
    out.push(RecordKind::EventsNext as u8);
    varint::put(out, u64::from(slot));
    let previous_end = previous.first_seq.wrapping_add(u64::from(previous.count));
    varint::put(out, head.first_seq.wrapping_sub(previous_end) as i64);
    varint::put(out, u64::from(head.count));
    varint::put(out, head.sent_at_us.wrapping_sub(previous.sent_at_us) as i64);
    varint::put(out, head.received_unix_us.wrapping_sub(previous.received_unix_us));
    out.extend_from_slice(events);
}

fn decode_events_next<'a>(bytes: &'a [u8], slots: &mut Slots) -> Result<(EventsHead, &'a [u8]), RecordError> {
    let mut rest = bytes;
    let slot = varint::take(&mut rest).ok_or(RecordError::Head)?;
    let previous = usize::try_from(slot).ok().and_then(|i| slots.get_mut(i)).ok_or(RecordError::Slot(slot))?;
    let seq_gap = varint::take_zigzag(&mut rest).ok_or(RecordError::Head)?;
    let count = varint::take(&mut rest).and_then(|c| u32::try_from(c).ok()).ok_or(RecordError::Head)?;
    let sent_delta = varint::take_zigzag(&mut rest).ok_or(RecordError::Head)?;
    let received_delta = varint::take_zigzag(&mut rest).ok_or(RecordError::Head)?;
    if count == 0 {
        return Err(RecordError::Head);
    }
    let previous_end = previous.first_seq.wrapping_add(u64::from(previous.count));
    let head = EventsHead {
        first_seq: previous_end.wrapping_add(seq_gap as u64),
        count,
        sent_at_us: previous.sent_at_us.wrapping_add(sent_delta as u64),
        received_unix_us: previous.received_unix_us.wrapping_add(received_delta),
        ..*previous
    };
    *previous = head;
    Ok((head, rest))
}

pub fn encode_gap(kind: RecordKind, head: &GapHead, out: &mut Vec<u8>) {
    encode_head(kind, head, out);
}

/// Appends a record that is a kind byte and one postcard value (gaps, window results, late
/// events, ticks).
pub fn encode_head<T: Serialize>(kind: RecordKind, value: &T, out: &mut Vec<u8>) {
    out.push(kind as u8);
    // Our record types always serialise.
    if let Ok(bytes) = postcard::to_allocvec(value) {
        out.extend_from_slice(&bytes);
    }
}

fn decode_exact<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, RecordError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        _ => Err(RecordError::Head),
    }
}

/// `device-stream-epoch-seq`: the event's global id, as `Nats-Msg-Id` and in JSON.
pub fn global_id(device: DeviceId, stream: StreamId, epoch: Epoch, seq: Seq) -> String {
    format!("{device}-{stream}-{epoch}-{seq}")
}

/// One JSON object per offset: each event of an `Events` record is its own line.
pub fn to_json_lines(offset: u64, record: &Record<'_>, out: &mut Vec<serde_json::Value>) {
    use serde_json::json;
    match record {
        Record::Events { head, .. } => {
            for (index, item) in record.events().enumerate() {
                let offset = offset + index as u64;
                let Ok((seq, event)) = item else {
                    out.push(json!({"offset": offset, "kind": "corrupt", "error": "events are malformed"}));
                    break;
                };
                out.push(event_json(offset, head, seq, &event));
            }
        }
        Record::Gap { kind, head } => out.push(json!({
            "offset": offset,
            "kind": kind.name(),
            "device": head.device,
            "stream": head.stream,
            "epoch": head.epoch,
            "seq_start": head.range.start,
            "seq_end": head.range.end,
            "reason": format!("{:?}", head.reason),
            "t3_received_unix_us": head.received_unix_us,
        })),
        Record::Window(w) => {
            let quantiles: serde_json::Map<String, serde_json::Value> =
                w.quantiles.iter().map(|(q, v)| (format!("p{}", q * 100.0), json!(v))).collect();
            out.push(json!({
                "offset": offset,
                "kind": "window",
                "window": w.window,
                "change": change_name(w.change),
                "key": w.key,
                "start_unix_us": w.start_unix_us,
                "end_unix_us": w.end_unix_us,
                "count": w.count,
                "sum": w.sum,
                "min": w.min,
                "max": w.max,
                "mean": if w.count > 0 { w.sum / w.count as f64 } else { 0.0 },
                "last": w.last,
                "quantiles": quantiles,
                "watermark_unix_us": w.watermark_unix_us,
                "closed_by": w.closed_by.name(),
            }))
        }
        Record::Late(l) => out.push(json!({
            "offset": offset,
            "kind": "late",
            "window": l.window,
            "key": l.key,
            "id": l.id,
            "event_unix_us": l.event_unix_us,
            "value": l.value,
            "watermark_unix_us": l.watermark_unix_us,
        })),
        Record::Tick(t) => out.push(json!({"offset": offset, "kind": "tick", "now_unix_us": t.now_unix_us})),
        Record::Claim(c) => out.push(json!({
            "offset": offset,
            "kind": "claim",
            "device": c.device,
            "stream": c.stream,
            "epoch": c.epoch,
            "t2_sent_us": c.sent_at_us,
            "assigned_end": c.assigned_end,
            "older_epochs_held": c.older_epochs_held,
            "draining": c.draining,
            "at_unix_us": c.at_unix_us,
            "t3_received_unix_us": c.received_unix_us,
        })),
        Record::Other { kind, bytes } if *kind == RecordKind::StatsdFlush as u8 => {
            out.push(crate::statsd::record_json(offset, bytes))
        }
        Record::Other { kind, bytes } if *kind == RecordKind::StatsdSamples as u8 => {
            out.push(match crate::statsd::timed::decode_record(bytes) {
                Some(record) => json!({
                    "offset": offset,
                    "kind": "statsd_samples",
                    "source": record.source,
                    "t3_received_unix_us": record.received_unix_us,
                    "samples": record.samples.iter().map(|s| json!({
                        "key": s.key,
                        "type": format!("{:?}", s.family).to_lowercase(),
                        "value": s.value,
                        "member": String::from_utf8_lossy(&s.member),
                        "gauge_delta": s.gauge_delta,
                        "sample_rate": s.sample_rate,
                        "timestamp_s": s.timestamp_s,
                    })).collect::<Vec<_>>(),
                }),
                None => json!({"offset": offset, "kind": "corrupt", "error": "statsd samples are malformed"}),
            })
        }
        Record::Other { kind, bytes } => out.push(json!({
            "offset": offset,
            "kind": record.kind_name(),
            "kind_byte": kind,
            "bytes": bytes.len(),
        })),
    }
}

pub fn change_name(change: Change) -> &'static str {
    match change {
        Change::Insert => "insert",
        Change::Retract => "retract",
        Change::Final => "final",
    }
}

pub fn event_json(offset: u64, head: &EventsHead, seq: Seq, event: &Event<'_>) -> serde_json::Value {
    use serde_json::json;
    let tags: serde_json::Map<String, serde_json::Value> =
        event.payload.tags().iter().map(|t| (t.key.to_string(), json!(t.value))).collect();
    let mut object = json!({
        "offset": offset,
        "kind": "event",
        "id": global_id(head.device, head.stream, head.epoch, seq),
        "device": head.device,
        "stream": head.stream,
        "epoch": head.epoch,
        "seq": seq,
        "name": event.payload.name(),
        "type": event.payload.kind_name(),
        "tags": tags,
        "t1_mono_us": event.mono.as_micros(),
        "t2_sent_us": head.sent_at_us,
        "t3_received_unix_us": head.received_unix_us,
    });
    let map = object.as_object_mut().expect("json! of an object literal is an object");
    match &event.payload {
        Payload::Counter(s)
        | Payload::Gauge(s)
        | Payload::GaugeDelta(s)
        | Payload::Timer(s)
        | Payload::Histogram(s) => {
            map.insert("value".into(), json!(s.value));
        }
        Payload::Set(m) => {
            map.insert("member".into(), json!(m.member));
        }
        Payload::Opaque(o) => {
            map.insert("bytes".into(), json!(o.bytes.len()));
        }
    }
    let corrected = head.correct(event.mono.as_micros());
    map.insert("event_unix_us".into(), json!(corrected.unix_us));
    map.insert("uncertainty_us".into(), json!(corrected.uncertainty_us));
    if let Some(reason) = corrected.quarantine {
        map.insert("quarantine".into(), json!(reason.name()));
    }
    if corrected.clamped {
        map.insert("clamped".into(), json!(true));
    }
    if let Some(wall) = event.wall {
        map.insert("t1_wall_unix_us".into(), json!(wall.unix_micros));
        map.insert("wall_quality".into(), json!(format!("{:?}", wall.quality).to_lowercase()));
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_heads_round_trip_and_the_clock_fix_stays_small() {
        let fix = ClockFix {
            reference_device_us: 86_400_000_000,
            offset_us: 1_795_000_000_000_000 - 86_400_000_000 - 1_250,
            drift_ppb: -48_500,
            uncertainty_us: 900,
            drift_uncertainty_ppb: 120,
            method: Method::Drift,
        };
        let head = EventsHead {
            device: 7,
            stream: 0,
            epoch: 3,
            first_seq: 10,
            count: 1,
            sent_at_us: 86_400_000_000,
            sent_epoch: 3,
            received_unix_us: 1_795_000_000_000_000,
            clock: Some(fix),
        };
        let with = postcard::to_allocvec(&head).unwrap();
        let without = postcard::to_allocvec(&EventsHead { clock: None, ..head }).unwrap();
        assert_eq!(postcard::from_bytes::<EventsHead>(&with).unwrap(), head);
        assert!(with.len() - without.len() <= 12, "the fix costs {} bytes", with.len() - without.len());
        // Extreme values still round-trip exactly (wrapping arithmetic).
        let odd = EventsHead {
            sent_at_us: u64::MAX,
            received_unix_us: i64::MIN,
            clock: Some(ClockFix { reference_device_us: 0, offset_us: i64::MAX, ..fix }),
            ..head
        };
        let bytes = postcard::to_allocvec(&odd).unwrap();
        assert_eq!(postcard::from_bytes::<EventsHead>(&bytes).unwrap(), odd);
    }
}
