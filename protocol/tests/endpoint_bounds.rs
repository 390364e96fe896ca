//! The endpoint's receivers as a bounded cache over the caller's log: one device cannot take
//! the table, idle receivers leave memory and come back from the log with their dedup state
//! (exactly-once holds across it), busy ones are never evicted, and a finished epoch is all
//! duplicates and acknowledged in full.

use driftlog_protocol::endpoint::{Endpoint, EndpointConfig, Lookup, StreamStore};
use driftlog_protocol::ids::StreamKey;
use driftlog_protocol::receiver::DedupState;
use driftlog_protocol::wire::{
    Body, DataWriter, Direction, Event, FrameKind, Header, MacKey, Payload, Reject, Sample, Sealer, open,
};
use driftlog_protocol::{DeviceId, Instant, KeyId};
use std::collections::BTreeMap;
use std::time::Duration;

type Keys = BTreeMap<KeyId, (DeviceId, MacKey)>;
type State = DedupState<32>;

fn key(device: DeviceId) -> MacKey {
    MacKey::new(&[device as u8; 32])
}

fn endpoint(per_device: usize, total: usize) -> Endpoint<Keys> {
    let mut config = EndpointConfig::new(1, 5);
    config.max_streams_per_device = per_device;
    config.max_streams = total;
    Endpoint::new(config, (1..=3).map(|device| (device as KeyId, (device, key(device)))).collect())
}

/// A data frame of one event at `seq` of `(stream, epoch)` from `device`.
fn frame(device: DeviceId, stream: u32, epoch: u64, seq: u64, sent_at: u64) -> Vec<u8> {
    let mut sealer = Sealer::new(device as KeyId, key(device), epoch);
    let header = sealer.header(FrameKind::Data, Instant::from_micros(sent_at));
    let mut buf = vec![0u8; 256];
    let mut writer = DataWriter::new(&mut buf, &header, stream, epoch, seq, 8).unwrap();
    let sample = Sample { name: "t", value: seq as f64, tags: Default::default() };
    writer.push(&Event { mono: Instant::from_micros(sent_at), wall: None, payload: Payload::Gauge(sample) }).unwrap();
    let (buf, len) = writer.into_parts();
    let total = sealer.seal(buf, len).unwrap();
    buf[..total].to_vec()
}

/// The caller's log: committed states, and epochs it holds as finished.
#[derive(Default)]
struct Log {
    states: BTreeMap<StreamKey, State>,
    finished: Vec<StreamKey>,
    lookups: u64,
}

impl StreamStore for Log {
    fn lookup(&mut self, stream: &StreamKey, _: &Header) -> Lookup {
        self.lookups += 1;
        if self.finished.contains(stream) {
            return Lookup::Finished;
        }
        self.states.get(stream).cloned().map_or(Lookup::New, Lookup::Restore)
    }
}

/// Commits everything admitted, as the collector's committer does.
fn commit(endpoint: &mut Endpoint<Keys>, log: &mut Log, now: Instant) {
    for (stream, state) in endpoint.uncommitted() {
        log.states.insert(stream, state.clone());
        endpoint.handle_durable(now, stream, &state);
    }
}

/// Hands `datagram` to the endpoint; how many events it brought that were new.
fn deliver(endpoint: &mut Endpoint<Keys>, log: &mut Log, now: Instant, datagram: &[u8]) -> Result<usize, Reject> {
    let received = endpoint.handle_datagram_with(now, datagram, log)?;
    let new = received.new_events().count();
    Ok(new)
}

/// Sends every due ACK/NAK (into the void) so no receiver has one pending.
fn flush_replies(endpoint: &mut Endpoint<Keys>, now: Instant) {
    let mut buf = [0u8; 1_500];
    while endpoint.poll_transmit(now, &mut buf).is_some() {}
}

#[test]
fn one_device_cannot_take_the_table_and_its_evicted_streams_stay_exactly_once() {
    let mut endpoint = endpoint(4, 16);
    let mut log = Log::default();
    let mut now = Instant::from_micros(1_000_000);
    // Device 1 makes up 200 streams, one event each, committed as it goes.
    for stream in 0..200u32 {
        now = now + Duration::from_millis(10);
        let new = deliver(&mut endpoint, &mut log, now, &frame(1, stream, 9, 0, now.as_micros()));
        assert_eq!(new, Ok(1), "stream {stream}");
        commit(&mut endpoint, &mut log, now);
        now = now + Duration::from_millis(100);
        flush_replies(&mut endpoint, now);
        assert!(endpoint.device_stream_count(1) <= 4);
    }
    assert!(endpoint.stream_count() <= 4, "the device kept to its quota");
    assert!(endpoint.stats().streams_evicted >= 196);
    // Device 2 is not affected.
    assert_eq!(deliver(&mut endpoint, &mut log, now, &frame(2, 0, 9, 0, now.as_micros())), Ok(1));
    // An evicted stream comes back from the log: its event is a duplicate, the next is new.
    now = now + Duration::from_millis(10);
    let again = deliver(&mut endpoint, &mut log, now, &frame(1, 0, 9, 0, now.as_micros()));
    assert_eq!(again, Ok(0), "restored from the log, not started over");
    assert_eq!(deliver(&mut endpoint, &mut log, now, &frame(1, 0, 9, 1, now.as_micros() + 1)), Ok(1));
    assert!(endpoint.stats().streams_restored >= 1);
}

#[test]
fn busy_receivers_stay_and_the_device_is_told_to_wait() {
    let mut endpoint = endpoint(2, 16);
    let mut log = Log::default();
    let now = Instant::from_micros(1_000_000);
    for stream in 0..2u32 {
        deliver(&mut endpoint, &mut log, now, &frame(1, stream, 9, 0, 10 + u64::from(stream))).unwrap();
    }
    // Neither is committed: both hold state the log does not have yet.
    assert_eq!(deliver(&mut endpoint, &mut log, now, &frame(1, 2, 9, 0, 20)), Err(Reject::DeviceQuota));
    assert_eq!(endpoint.stats().rejects.get(Reject::DeviceQuota), 1);
    assert_eq!(endpoint.stream_count(), 2);
    // Committed and acknowledged, one can leave; the retransmission gets in.
    commit(&mut endpoint, &mut log, now);
    let later = now + Duration::from_millis(200);
    flush_replies(&mut endpoint, later);
    assert_eq!(deliver(&mut endpoint, &mut log, later, &frame(1, 2, 9, 0, 30)), Ok(1));
}

#[test]
fn idle_receivers_leave_memory_and_the_whole_table_makes_room() {
    let mut endpoint = endpoint(8, 4);
    let mut log = Log::default();
    let mut now = Instant::from_micros(1_000_000);
    for device in 1..=2 {
        for stream in 0..2u32 {
            deliver(&mut endpoint, &mut log, now, &frame(device, stream, 9, 0, now.as_micros() + u64::from(stream)))
                .unwrap();
        }
    }
    commit(&mut endpoint, &mut log, now);
    now = now + Duration::from_millis(500);
    flush_replies(&mut endpoint, now);
    assert_eq!(endpoint.evict_idle(now, Duration::from_secs(60)), 0, "not idle long enough");
    // The table is full and nothing has been idle for a second: a new stream waits.
    let refused = deliver(&mut endpoint, &mut log, now, &frame(3, 0, 9, 0, now.as_micros()));
    assert_eq!(refused, Err(Reject::TooManyStreams));
    now = now + Duration::from_secs(2);
    assert_eq!(deliver(&mut endpoint, &mut log, now, &frame(3, 0, 9, 0, now.as_micros())), Ok(1));
    assert_eq!(endpoint.stream_count(), 1, "the idle ones made room");
    commit(&mut endpoint, &mut log, now);
    now = now + Duration::from_secs(30);
    flush_replies(&mut endpoint, now);
    assert_eq!(endpoint.evict_idle(now, Duration::from_secs(60)), 0, "idle for 30 s only");
    now = now + Duration::from_secs(30);
    assert_eq!(endpoint.evict_idle(now, Duration::from_secs(60)), 1);
    assert_eq!(endpoint.stream_count(), 0);
}

#[test]
fn a_finished_epoch_is_all_duplicates_and_acknowledged_in_full() {
    let mut endpoint = endpoint(8, 16);
    let mut log = Log::default();
    log.finished.push(StreamKey { device: 1, stream: 0, epoch: 3 });
    let now = Instant::from_micros(1_000_000);
    assert_eq!(deliver(&mut endpoint, &mut log, now, &frame(1, 0, 3, 17, 50)), Ok(0));
    assert!(endpoint.uncommitted().is_empty(), "nothing to commit for a finished epoch");
    let later = now + Duration::from_secs(1);
    let mut buf = [0u8; 1_500];
    let transmit = endpoint.poll_transmit(later, &mut buf).expect("an ACK for the duplicate");
    let device_key = key(1);
    let opened = open(&buf[..transmit.len], Direction::FromCollector, 1_500, |_| Some(&device_key)).unwrap();
    let Body::Ack(ack) = opened.body else { panic!("not an ACK") };
    assert_eq!((ack.epoch, ack.cumulative), (3, u64::MAX), "the device may free all of that epoch");
    assert_eq!(endpoint.stats().streams_finished, 1);
}

/// A commit that failed on a storage error may have reached the log anyway (a failed fsync
/// leaves the data unknown). Rolled back to the state last known durable, the receiver would
/// admit the retransmission again: the event twice in the log. Forgotten instead, it comes
/// back from the log on its next frame, and whatever the log holds is a duplicate. Its timer
/// goes with it: no transmit is ever polled for a receiver that left.
#[test]
fn receivers_of_a_commit_with_an_unknown_outcome_come_back_from_the_log() {
    let mut endpoint = endpoint(4, 16);
    let mut log = Log::default();
    let now = Instant::from_micros(1_000_000);
    assert_eq!(deliver(&mut endpoint, &mut log, now, &frame(1, 0, 9, 0, 10)), Ok(1));
    // The commit's outcome is unknown to the endpoint, but it reached the log.
    for (stream, state) in endpoint.uncommitted() {
        log.states.insert(stream, state);
    }
    endpoint.forget_uncommitted();
    assert_eq!(endpoint.stream_count(), 0);
    let later = now + Duration::from_secs(5);
    assert_eq!(endpoint.poll_timeout(), None, "the receiver's timer left with it");
    assert!(endpoint.poll_transmit(later, &mut [0u8; 1_500]).is_none());
    assert_eq!(deliver(&mut endpoint, &mut log, later, &frame(1, 0, 9, 0, 20)), Ok(0), "a duplicate, from the log");
    assert_eq!(deliver(&mut endpoint, &mut log, later, &frame(1, 0, 9, 1, 30)), Ok(1));
}

/// The rollback the outcome-unknown case must not use: had the commit reached the log, the
/// rolled-back receiver takes the retransmission as new (this is what the collector did
/// before `forget_uncommitted`).
#[test]
fn a_rolled_back_receiver_admits_again_what_it_admitted_before() {
    let mut endpoint = endpoint(4, 16);
    let mut log = Log::default();
    let now = Instant::from_micros(1_000_000);
    assert_eq!(deliver(&mut endpoint, &mut log, now, &frame(1, 0, 9, 0, 10)), Ok(1));
    endpoint.rollback_uncommitted();
    assert_eq!(deliver(&mut endpoint, &mut log, now, &frame(1, 0, 9, 0, 20)), Ok(1));
}
