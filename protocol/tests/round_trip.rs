//! Everything encoded decodes to the same values; the batch codec keeps its size budget.

mod common;

use common::{KEY_ID, key};
use driftlog_protocol::wire::{
    AckRepr, AckTiming, Body, ControlRef, DataWriter, Direction, DropReason, Event, FrameKind, HeartbeatRepr,
    MAC_BYTES, MacKey, Member, NakRepr, Opaque, Payload, Sample, Sealer, Tag, Tags, TombstoneRepr, open, seal_control,
};
use driftlog_protocol::{ClockQuality, Instant, SeqRange, WallTime};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_.]{0,40}"
}

fn tags() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((name(), "[a-zA-Z0-9_-]{0,20}"), 0..4)
}

#[derive(Clone, Debug)]
struct OwnedCase {
    mono_step: u64,
    wall: Option<(i64, bool)>,
    kind: u8,
    name: String,
    value: f64,
    text: String,
    tags: Vec<(String, String)>,
}

fn case() -> impl Strategy<Value = OwnedCase> {
    (
        0u64..5_000_000,
        proptest::option::of((any::<i64>(), any::<bool>())),
        0u8..7,
        name(),
        any::<f64>(),
        "[ -~]{0,30}",
        tags(),
    )
        .prop_map(|(mono_step, wall, kind, name, value, text, tags)| OwnedCase {
            mono_step,
            wall,
            kind,
            name,
            value,
            text,
            tags,
        })
}

fn tag_list(case: &OwnedCase) -> Vec<Tag<'_>> {
    case.tags.iter().map(|(k, v)| Tag { key: k, value: v }).collect()
}

fn build<'a>(case: &'a OwnedCase, tag_list: &'a [Tag<'a>], mono: u64) -> Event<'a> {
    let tags = Tags::new(tag_list);
    let sample = Sample { name: &case.name, value: case.value, tags };
    let payload = match case.kind {
        0 => Payload::Counter(sample),
        1 => Payload::Gauge(sample),
        2 => Payload::GaugeDelta(sample),
        3 => Payload::Timer(sample),
        4 => Payload::Histogram(sample),
        5 => Payload::Set(Member { name: &case.name, member: &case.text, tags }),
        _ => Payload::Opaque(Opaque { name: &case.name, bytes: case.text.as_bytes() }),
    };
    let wall = case.wall.map(|(unix_micros, synced)| WallTime {
        unix_micros,
        quality: if synced { ClockQuality::Synchronized } else { ClockQuality::Unsynchronized },
    });
    Event { mono: Instant::from_micros(mono), wall, payload }
}

fn same_payload(a: &Payload<'_>, b: &Payload<'_>) -> bool {
    // NaN != NaN, so compare floats by bits.
    match (a, b) {
        (Payload::Counter(x), Payload::Counter(y))
        | (Payload::Gauge(x), Payload::Gauge(y))
        | (Payload::GaugeDelta(x), Payload::GaugeDelta(y))
        | (Payload::Timer(x), Payload::Timer(y))
        | (Payload::Histogram(x), Payload::Histogram(y)) => {
            x.name == y.name && x.value.to_bits() == y.value.to_bits() && x.tags == y.tags
        }
        _ => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn batches_round_trip(cases in proptest::collection::vec(case(), 1..40), epoch in 1u64..1_000, back in 0u64..3, first_seq in any::<u32>()) {
        let events_epoch = epoch.saturating_sub(back);
        let mut sealer = Sealer::new(KEY_ID, key(), epoch);
        let header = sealer.header(FrameKind::Data, Instant::from_micros(77));
        let mut buf = vec![0u8; 16_384];
        let mut writer = DataWriter::new(&mut buf, &header, 3, events_epoch, u64::from(first_seq), 64).unwrap();
        let mut mono = 10u64;
        let mut pushed = Vec::new();
        let tag_lists: Vec<Vec<Tag<'_>>> = cases.iter().map(tag_list).collect();
        for (case, tags) in cases.iter().zip(&tag_lists) {
            mono += case.mono_step;
            let event = build(case, tags, mono);
            writer.push(&event).unwrap();
            pushed.push(event);
        }
        let (buf, len) = writer.into_parts();
        let total = sealer.seal(buf, len).unwrap();
        let key = key();
        let opened = open(&buf[..total], Direction::FromDevice, 16_384, |id| (id == KEY_ID).then_some(&key)).unwrap();
        let Body::Data(frame) = opened.body else { panic!("not data") };
        prop_assert_eq!(frame.stream, 3);
        prop_assert_eq!(frame.epoch, events_epoch);
        prop_assert_eq!(frame.count as usize, pushed.len());
        for ((seq, got), (index, want)) in frame.events().zip(pushed.iter().enumerate()) {
            prop_assert_eq!(seq, u64::from(first_seq) + index as u64);
            prop_assert_eq!(got.mono, want.mono);
            prop_assert_eq!(got.wall, want.wall);
            prop_assert!(same_payload(&got.payload, &want.payload), "{:?} != {:?}", got.payload, want.payload);
        }
    }

    #[test]
    fn control_frames_round_trip(cumulative in 0u64..1_000_000, gaps in proptest::collection::vec(1u64..1_000, 0..16), echo in any::<u64>(), ahead in any::<u32>(), held_epochs_back in any::<u64>(), draining in any::<bool>()) {
        let mut sack = heapless::Vec::<SeqRange, 16>::new();
        let mut cursor = cumulative + 1;
        for gap in gaps {
            let _ = sack.push(SeqRange::new(cursor, cursor + gap));
            cursor += gap + 1 + gap % 7;
        }
        let ack = AckRepr { stream: 2, epoch: 9, cumulative, sack: sack.clone(), echo_sent_at: Instant::from_micros(echo), received_at: Instant::from_micros(5) };
        let nak = NakRepr { stream: 2, epoch: 9, missing: sack.iter().copied().collect() };
        let heartbeat = HeartbeatRepr {
            stream: 4, epoch: 6, oldest_available: cumulative, next_seq: cursor,
            wall_now: Some(WallTime { unix_micros: -5, quality: ClockQuality::Synchronized }),
            ack_timing: Some(AckTiming { device_sent_at: Instant::from_micros(1), collector_received_at: Instant::from_micros(2), collector_sent_at: Instant::from_micros(3), device_received_at: Instant::from_micros(4) }),
            assigned_end: cursor + u64::from(ahead), held_epochs_back, draining,
        };
        let tombstone = TombstoneRepr { stream: 4, epoch: 6, range: SeqRange::new(cumulative, cumulative + 5), reason: DropReason::TooOld };
        let key = key();
        let mut sealer = Sealer::new(KEY_ID, key.clone(), 8);
        let mut seal = |frame: ControlRef<'_>| {
            let mut buf = vec![0u8; 1_400];
            let len = seal_control(&mut sealer, Instant::from_micros(100), frame, &mut buf).unwrap();
            buf.truncate(len);
            buf
        };
        fn opened<'a>(bytes: &'a [u8], direction: Direction, key: &MacKey) -> Body<'a> {
            open(bytes, direction, 1_400, |id| (id == KEY_ID).then_some(key)).unwrap().body
        }
        let bytes = seal(ControlRef::Ack(&ack));
        prop_assert!(matches!(opened(&bytes, Direction::FromCollector, &key), Body::Ack(a) if a == ack));
        if !sack.is_empty() {
            // An empty NAK is malformed by design.
            let bytes = seal(ControlRef::Nak(&nak));
            prop_assert!(matches!(opened(&bytes, Direction::FromCollector, &key), Body::Nak(n) if n == nak));
        }
        let bytes = seal(ControlRef::Heartbeat(&heartbeat));
        prop_assert!(matches!(opened(&bytes, Direction::FromDevice, &key), Body::Heartbeat(h) if h == heartbeat));
        let bytes = seal(ControlRef::Tombstone(&tombstone));
        prop_assert!(matches!(opened(&bytes, Direction::FromDevice, &key), Body::Tombstone(t) if t == tombstone));
    }
}

/// The budget of the issue: per-datagram overhead (header, batch head, tag) at most 32 bytes
/// and per-event overhead at most 6 bytes in a batch of 32 small metric events. Payload is
/// the name, value and tag strings themselves; everything else counts as overhead.
#[test]
fn header_budget_for_a_batch_of_32_small_metrics() {
    let report = driftlog_protocol::wire::overhead::measure_batch(32);
    println!("{report:?}");
    assert!(report.datagram_overhead_bytes <= 32, "{report:?}");
    assert!(report.per_event_overhead_bytes <= 6.0, "{report:?}");
    assert_eq!(MAC_BYTES, 16);
}

#[test]
fn tagged_batches_stay_within_the_per_event_budget_too() {
    let report = driftlog_protocol::wire::overhead::measure(32, true);
    println!("{report:?}");
    assert!(report.per_event_overhead_bytes <= 6.0, "{report:?}");
}

#[test]
fn repeated_tags_are_sent_once_and_decoded_on_every_event() {
    let mut sealer = Sealer::new(KEY_ID, key(), 1);
    let header = sealer.header(FrameKind::Data, Instant::from_micros(1));
    let mut buf = [0u8; 1_400];
    let mut writer = DataWriter::new(&mut buf, &header, 0, 1, 0, 64).unwrap();
    let host_list = [Tag { key: "host", value: "gw-17" }];
    let other_list = [Tag { key: "host", value: "gw-18" }];
    let (host, other) = (Tags::new(&host_list), Tags::new(&other_list));
    let lists = [host, host, Tags::EMPTY, host, other, other, host];
    for (index, tags) in lists.iter().enumerate() {
        let event = Event {
            mono: Instant::from_micros(index as u64),
            wall: None,
            payload: Payload::Counter(Sample { name: "n", value: 1.0, tags: *tags }),
        };
        writer.push(&event).unwrap();
    }
    let (buf, len) = writer.into_parts();
    let total = sealer.seal(buf, len).unwrap();
    let key = key();
    let Body::Data(frame) =
        open(&buf[..total], Direction::FromDevice, 1_400, |id| (id == KEY_ID).then_some(&key)).unwrap().body
    else {
        panic!("not data")
    };
    let decoded: Vec<Vec<Tag<'_>>> = frame.events().map(|(_, e)| e.payload.tags().iter().collect()).collect();
    let expected: Vec<Vec<Tag<'_>>> = lists.iter().map(|t| t.iter().collect()).collect();
    assert_eq!(decoded, expected);
    // Three explicit lists (host, gw-18, host again after gw-18) of 12 bytes each; the rest
    // are one-byte repeats.
    let occurrences = buf[..total].windows(5).filter(|w| w == b"gw-17").count();
    assert_eq!(occurrences, 2, "a repeated list must not be re-sent");
}

proptest! {
    #[test]
    fn event_records_round_trip(case in case(), mono in any::<u64>()) {
        let tags = tag_list(&case);
        let event = build(&case, &tags, mono);
        let mut buf = vec![0u8; 8_192];
        let len = driftlog_protocol::wire::encode_event_record(&event, &mut buf).unwrap();
        let decoded = driftlog_protocol::wire::decode_event_record(&buf[..len]).unwrap();
        prop_assert_eq!(decoded.mono, event.mono);
        prop_assert_eq!(decoded.wall, event.wall);
        prop_assert!(same_payload(&decoded.payload, &event.payload));
        prop_assert!(driftlog_protocol::wire::decode_event_record(&buf[..len - 1]).is_err() || len == 0);
    }

    #[test]
    fn arbitrary_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = driftlog_protocol::wire::decode_event_record(&bytes);
    }
}
