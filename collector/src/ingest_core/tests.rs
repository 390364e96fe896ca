//! The core alone: frames in, commits and datagrams out, commit outcomes faked. No thread, no
//! disk, no clock: every `now` is chosen by the test.

use super::{IngestConfig, IngestCore, PROBE_INTERVAL};
use crate::clocks::Clocks;
use crate::ingest::{Batch, Route};
use crate::keys::Keys;
use crate::log::block::decode_block;
use crate::log::record::Record;
use crate::log::{Commit, Committed, Dedup, LogError};
use crate::source_filter::SourceFilterConfig;
use crate::stream_states::{CommittedStates, StateLimits, StreamBounds, StreamStates};
use driftlog_eventtime::clock::ClockConfig;
use driftlog_protocol::endpoint::{Endpoint, EndpointConfig};
use driftlog_protocol::ids::StreamKey;
use driftlog_protocol::wire::{
    AckRepr, Body, DataWriter, Direction, Event, FrameKind, MacKey, Payload, Sample, Sealer, Tags, open,
};
use driftlog_protocol::{Instant, KeyId};
use std::sync::Arc;
use std::time::Duration;

const SECRET: [u8; 32] = [7; 32];
const DEVICE: u32 = 42;
const FLUSH: Duration = Duration::from_millis(5);
/// Far past any ACK delay: whatever the core would send by then, it has sent.
const LATER: Duration = Duration::from_secs(5);

/// A log that holds no stream state yet (a fresh collector).
#[derive(Debug)]
struct EmptyLog;

impl CommittedStates for EmptyLog {
    fn stream_state(&self, _stream: &StreamKey) -> Result<Option<(KeyId, Dedup)>, LogError> {
        Ok(None)
    }
}

fn core() -> IngestCore {
    let keys_toml = format!("[[device]]\ndevice_id = {DEVICE}\nkey_id = {DEVICE}\nkey = \"{}\"\n", "07".repeat(32));
    let keys = Keys::parse(&keys_toml).unwrap();
    let endpoint = Endpoint::new(EndpointConfig::new(1_000, 7), keys);
    let limits = StateLimits { max_states: 1_000, max_states_per_device: 100 };
    let bounds = StreamBounds::new(StreamStates::empty(Arc::new(EmptyLog), limits), Duration::from_secs(600));
    let config = IngestConfig {
        flush_interval: FLUSH,
        max_block_bytes: 65_536,
        max_commit_bytes: 1 << 20,
        claim_interval_ms: None,
        max_streams: 1_000,
        source_filter: SourceFilterConfig::default(),
    };
    IngestCore::new(config, endpoint, bounds, Clocks::new(ClockConfig::default(), 1_000))
}

/// A batch holding one data frame of the device carrying events `first_seq..first_seq + n`,
/// sent at `sent_at` by the device's clock.
fn frame(first_seq: u64, n: u32, sent_at_us: u64) -> Batch {
    let mut sealer = Sealer::new(DEVICE, MacKey::new(&SECRET), 1);
    let header = sealer.header(FrameKind::Data, Instant::from_micros(sent_at_us));
    let mut buf = vec![0u8; 1_400];
    let mut writer = DataWriter::new(&mut buf, &header, 0, 1, first_seq, n).unwrap();
    let tags = [];
    for seq in first_seq..first_seq + u64::from(n) {
        let sample = Sample { name: "t", value: seq as f64, tags: Tags::new(&tags) };
        let event = Event { mono: Instant::from_micros(seq * 1_000), wall: None, payload: Payload::Gauge(sample) };
        writer.push(&event).unwrap();
    }
    let (sealed, len) = writer.into_parts();
    let total = sealer.seal(sealed, len).unwrap();
    let mut batch = Batch::default();
    batch.push(&buf[..total], Route { source: 0, peer: Some("192.0.2.1:9".parse().unwrap()) });
    batch
}

fn at(ms: u64) -> Instant {
    Instant::from_micros(1_700_000_000_000_000 + ms * 1_000)
}

/// Every ACK the core sends by `now`, decoded.
fn acks(core: &mut IngestCore, now: Instant) -> Vec<AckRepr> {
    let mut buf = vec![0u8; 2_048];
    let mut out = Vec::new();
    while let Some(transmit) = core.poll_transmit(now, &mut buf) {
        let key = MacKey::new(&SECRET);
        let opened = open(&buf[..transmit.len], Direction::FromCollector, 2_048, |_| Some(&key)).unwrap();
        if let Body::Ack(ack) = opened.body {
            assert_eq!(transmit.route.map(|r| r.source), Some(0), "an ACK goes back the way the frame came");
            out.push(ack);
        }
    }
    out
}

/// The `(first_seq, count, received_unix_us)` of every events record in `commit`.
fn events(commit: &Commit) -> Vec<(u64, u32, i64)> {
    let mut out = Vec::new();
    for block in &commit.blocks {
        let (_, records) = decode_block(0, &block.value).unwrap();
        for (_, record) in records {
            if let Record::Events { head, .. } = record {
                out.push((head.first_seq, head.count, head.received_unix_us));
            }
        }
    }
    out
}

#[test]
fn the_record_and_the_ack_carry_the_one_receive_time_passed_in() {
    let mut core = core();
    // The value passed in is all the core knows of time: a wall clock stepped an hour back
    // since the last batch changes nothing but this number.
    let received = at(0);
    core.handle_batch(received, &frame(0, 3, 500));
    let commit = core.poll_commit(received + FLUSH).expect("due after the flush interval");
    assert_eq!(events(&commit), vec![(0, 3, received.as_micros() as i64)]);
    core.handle_committed(received + FLUSH, Ok(Committed::default()));
    let acks = acks(&mut core, received + LATER);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].received_at, received, "the ACK's t2 is the records' receive time");
    assert_eq!(acks[0].cumulative, 3);
}

#[test]
fn nothing_is_acknowledged_before_its_commit_succeeds() {
    let mut core = core();
    core.handle_batch(at(0), &frame(0, 2, 500));
    assert!(core.poll_commit(at(1)).is_none(), "not due before the flush interval");
    assert!(acks(&mut core, at(1)).is_empty());
    let commit = core.poll_commit(at(5)).expect("due");
    assert_eq!(events(&commit).len(), 1);
    // The commit is in flight: however long it takes, no ACK, and no second commit.
    core.handle_batch(at(6), &frame(2, 1, 600));
    assert!(core.poll_commit(at(5_000)).is_none(), "one commit in flight at a time");
    assert!(acks(&mut core, at(5_000)).is_empty(), "ACK before the commit succeeded");
    core.handle_committed(at(5_001), Ok(Committed::default()));
    let first = acks(&mut core, at(10_000));
    assert_eq!(first.iter().map(|a| a.cumulative).collect::<Vec<_>>(), vec![2], "only the committed events");
    // The frame admitted meanwhile is acknowledged after its own commit.
    let second = core.poll_commit(at(10_000)).expect("the next block");
    assert_eq!(events(&second).iter().map(|e| e.0).collect::<Vec<_>>(), vec![2]);
    assert!(acks(&mut core, at(20_000)).is_empty());
    core.handle_committed(at(20_000), Ok(Committed::default()));
    assert_eq!(acks(&mut core, at(30_000)).iter().map(|a| a.cumulative).collect::<Vec<_>>(), vec![3]);
    assert_eq!(core.counters().events_committed, 3);
}

/// While a commit is in flight the next block's flush cannot start, so it is no deadline:
/// an overdue one made `poll_timeout` return the past, and a driver that waits until then
/// woke at once, again and again, until the commit finished (the simulator's collector
/// woke 1.2 million times in one 29-second run, seed 14 of `random_system`).
#[test]
fn an_overdue_flush_is_no_deadline_while_a_commit_is_in_flight() {
    let mut core = core();
    core.handle_batch(at(0), &frame(0, 2, 500));
    let _commit = core.poll_commit(at(5)).expect("due");
    core.handle_batch(at(6), &frame(2, 1, 600));
    for now in [at(11), at(50), at(4_000)] {
        core.handle_timeout(now);
        assert!(core.poll_commit(now).is_none(), "one commit in flight at a time");
        let _ = acks(&mut core, now);
        assert!(core.poll_timeout().is_none_or(|deadline| deadline > now), "a deadline in the past at {now:?}");
    }
    // Once the commit is done, the overdue flush is due at once.
    core.handle_committed(at(4_001), Ok(Committed::default()));
    assert!(core.poll_timeout().is_some_and(|deadline| deadline <= at(4_001)));
    assert!(core.poll_commit(at(4_001)).is_some());
}

#[test]
fn a_failed_commit_rolls_back_and_refuses_until_a_probe_passes() {
    let mut core = core();
    core.handle_batch(at(0), &frame(0, 2, 500));
    let commit = core.poll_commit(at(5)).expect("due");
    // Admitted after the commit was cut: forgotten with it.
    core.handle_batch(at(6), &frame(2, 1, 600));
    core.handle_committed(at(7), Err(LogError::Full { held: 1, bound: 1 }));
    assert!(!core.counters().accepting);
    assert!(acks(&mut core, at(10_000)).is_empty(), "nothing of a failed commit is acknowledged");
    drop(commit);

    // Refused while the log refuses, counted, and not remembered.
    core.handle_batch(at(8), &frame(0, 2, 700));
    assert_eq!(core.counters().frames_refused_log_unavailable, 1);
    assert!(core.poll_commit(at(8)).is_none(), "no probe before the probe interval");
    let probe_at = at(7) + PROBE_INTERVAL;
    assert_eq!(core.poll_timeout(), Some(probe_at));
    let probe = core.poll_commit(probe_at).expect("a probe");
    assert!(probe.blocks.is_empty() && probe.streams.is_empty());
    assert_eq!(probe.reserve_bytes, 1 << 20, "a probe asks for a full commit's room");
    core.handle_committed(probe_at, Err(LogError::NoSpace { available: 0, needed: 1 }));
    assert!(!core.counters().accepting, "a failed probe keeps refusing");
    let second_probe_at = probe_at + PROBE_INTERVAL;
    assert!(core.poll_commit(second_probe_at - Duration::from_millis(1)).is_none());
    core.poll_commit(second_probe_at).expect("the next probe");
    core.handle_committed(second_probe_at, Ok(Committed::default()));
    assert!(core.counters().accepting, "a passed probe ends the refusal");

    // The rolled-back events are new again when the device retransmits them.
    let now = second_probe_at + Duration::from_millis(1);
    core.handle_batch(now, &frame(0, 3, 800));
    let commit = core.poll_commit(now + FLUSH).expect("due");
    assert_eq!(events(&commit).iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(), vec![(0, 3)]);
    core.handle_committed(now + FLUSH, Ok(Committed::default()));
    assert_eq!(acks(&mut core, now + LATER).iter().map(|a| a.cumulative).collect::<Vec<_>>(), vec![3]);
    assert_eq!(core.counters().events_committed, 3, "the failed commit's events were never counted");
}

#[test]
fn a_full_block_is_committed_without_waiting_and_draining_commits_at_once() {
    let mut core = core();
    core.config.max_commit_bytes = 1;
    core.handle_batch(at(0), &frame(0, 1, 500));
    assert!(core.is_block_full());
    assert!(core.poll_commit(at(0)).is_some(), "a full block does not wait for the interval");
    core.handle_batch(at(0), &frame(1, 1, 600));
    assert!(core.is_waiting_on_commit(), "the next one is full while one is in flight");
    core.handle_committed(at(1), Ok(Committed::default()));
    assert!(core.poll_commit(at(1)).is_some(), "the full next block goes as soon as the first is durable");

    let mut core = self::core();
    core.handle_batch(at(0), &frame(0, 1, 500));
    core.handle_shutdown();
    assert!(core.poll_commit(at(0)).is_some(), "draining cuts the commit at once");
    assert!(!core.is_idle());
    core.handle_committed(at(0), Ok(Committed::default()));
    assert!(core.is_idle());
}
