//! A sender and the collector endpoint over a direct, lossless in-process link: the smallest
//! end-to-end check of the state machines (the simulator in `tests/` covers faults).

use driftlog_protocol::endpoint::{Endpoint, EndpointConfig, Keyring};
use driftlog_protocol::sender::{DropPolicy, MemoryBacklog, OwnedEvent};
use driftlog_protocol::wire::{Body, Direction, MacKey, Sealer, open};
use driftlog_protocol::{Backlog, DeviceId, Instant, KeyId, Sender, SenderConfig};
use std::collections::BTreeMap;
use std::time::Duration;

const KEY_ID: KeyId = 7;
const DEVICE: DeviceId = 42;

fn keyring() -> BTreeMap<KeyId, (DeviceId, MacKey)> {
    BTreeMap::from([(KEY_ID, (DEVICE, MacKey::new(&[9; 32])))])
}

/// A device's sender (epoch 3, unpaced) and the collector endpoint that knows its key.
struct Pair {
    key: MacKey,
    endpoint: Endpoint<BTreeMap<KeyId, (DeviceId, MacKey)>>,
    backlog: MemoryBacklog,
    sender: Sender,
    sealer: Sealer,
}

impl Pair {
    fn new() -> Pair {
        let keys = keyring();
        let key = keys.key(KEY_ID).unwrap().1.clone();
        let endpoint = Endpoint::new(EndpointConfig::new(1, 5), keys);
        let backlog = MemoryBacklog::new(3, 10_000, DropPolicy::DropOldest);
        let mut config = SenderConfig::new(1);
        config.backlog_events_per_second = 0;
        let sender: Sender = Sender::new(config, &backlog);
        let sealer = Sealer::new(KEY_ID, key.clone(), 3);
        Pair { key, endpoint, backlog, sender, sealer }
    }
}

/// Hands the ACKs the endpoint has due to the sender.
fn deliver_acks(
    now: Instant,
    endpoint: &mut Endpoint<BTreeMap<KeyId, (DeviceId, MacKey)>>,
    key: &MacKey,
    sender: &mut Sender,
    backlog: &mut MemoryBacklog,
) {
    let mut ack_buf = [0u8; 1500];
    while let Some(out) = endpoint.poll_transmit(now, &mut ack_buf) {
        let opened =
            open(&ack_buf[..out.len], Direction::FromCollector, 1500, |id| (id == KEY_ID).then_some(key)).unwrap();
        if let Body::Ack(ack) = opened.body {
            sender.handle_ack(now, &opened.header, &ack, backlog).unwrap();
        }
    }
}

#[test]
fn every_event_is_delivered_once_and_freed_by_acks() {
    let Pair { key, mut endpoint, mut backlog, mut sender, mut sealer } = Pair::new();
    let mut collector_guard = driftlog_protocol::wire::ReplayGuard::<2, 64>::new(u64::MAX);

    let mut delivered = Vec::new();
    let mut now = Instant::from_micros(1_000_000);
    let mut buf = [0u8; 1500];
    let mut ack_buf = [0u8; 1500];
    for round in 0..200u64 {
        for i in 0..10u64 {
            backlog.push(OwnedEvent::gauge(now, "cpu.user", (round * 10 + i) as f64));
        }
        while let Some(transmit) = sender.poll_transmit(now, &mut backlog, &mut sealer, &mut buf).unwrap() {
            let received = endpoint.handle_datagram(now, &buf[..transmit.len]).unwrap();
            delivered.extend(received.new_events().map(|(seq, event)| (received.stream.epoch, seq, event.mono)));
        }
        endpoint.commit_all(now);
        now = now + Duration::from_millis(5);
        while let Some(out) = endpoint.poll_transmit(now, &mut ack_buf) {
            assert_eq!(out.device, DEVICE);
            let opened =
                open(&ack_buf[..out.len], Direction::FromCollector, 1500, |id| (id == KEY_ID).then_some(&key)).unwrap();
            collector_guard.check(opened.header.epoch, opened.header.sent_at.as_micros()).unwrap();
            collector_guard.accept(opened.header.epoch, opened.header.sent_at.as_micros());
            match opened.body {
                Body::Ack(ack) => sender.handle_ack(now, &opened.header, &ack, &mut backlog).unwrap(),
                Body::Nak(nak) => sender.handle_nak(now, &nak, &backlog),
                other => panic!("unexpected {other:?}"),
            }
        }
        sender.handle_timeout(now);
    }
    now = now + Duration::from_millis(50);
    endpoint.commit_all(now);
    deliver_acks(now, &mut endpoint, &key, &mut sender, &mut backlog);

    assert_eq!(delivered.len(), 2_000);
    let seqs: Vec<u64> = delivered.iter().map(|(_, seq, _)| *seq).collect();
    assert_eq!(seqs, (0..2_000).collect::<Vec<_>>());
    assert_eq!(backlog.held_events(), 0, "acknowledged events must be released");
    assert_eq!(backlog.tail(), backlog.head());
    let stats = sender.stats();
    assert_eq!(stats.events_retransmitted, 0);
    assert!(stats.smoothed_rtt <= Duration::from_millis(5), "rtt {:?}", stats.smoothed_rtt);
    assert_eq!(endpoint.stats().rejects.total(), 0);
}

/// The collector acknowledges only what it has committed: its group commit (every 40 ms
/// here) plus its ACK delay (25 ms) hold an ACK up to 65 ms on a link whose round trip is
/// nearly zero. The sender learns how long its frames wait for their ACKs and times out after
/// that, so a steady trickle of events is never sent twice (it used to allow the round trip
/// plus the 25 ms ACK delay only, and most frames went out again).
#[test]
fn a_collector_slow_to_commit_gets_no_spurious_retransmissions() {
    let Pair { key, mut endpoint, mut backlog, mut sender, mut sealer } = Pair::new();
    let mut buf = [0u8; 1500];
    let mut delivered = 0;
    let start = Instant::from_micros(1_000_000);
    for ms in 0..10_000u64 {
        let now = start + Duration::from_millis(ms);
        if ms % 100 == 0 && ms < 9_000 {
            backlog.push(OwnedEvent::gauge(now, "cpu.user", ms as f64));
        }
        sender.handle_timeout(now);
        while let Some(transmit) = sender.poll_transmit(now, &mut backlog, &mut sealer, &mut buf).unwrap() {
            delivered += endpoint.handle_datagram(now, &buf[..transmit.len]).unwrap().new_events().count();
        }
        if ms % 40 == 39 {
            endpoint.commit_all(now);
        }
        deliver_acks(now, &mut endpoint, &key, &mut sender, &mut backlog);
    }
    assert_eq!(delivered, 90);
    assert_eq!(backlog.held_events(), 0);
    let stats = sender.stats();
    assert_eq!((stats.timeouts, stats.events_retransmitted), (0, 0), "{stats:?}");
    assert!(stats.smoothed_ack_wait > Duration::from_millis(25), "ACK wait {:?}", stats.smoothed_ack_wait);
}

/// Heartbeats carry a completeness claim: the buffer's head (every sequence number below it
/// was assigned when the heartbeat was sealed), whether a backlog older than the live events
/// is still unacknowledged, and how far back the oldest held epoch is. When the ACK that ends
/// a drain arrives, the next heartbeat goes out at once rather than an interval later, so the
/// collector can close the windows the backlog filled.
#[test]
fn heartbeats_claim_completeness_and_report_the_end_of_a_drain_at_once() {
    let Pair { key, mut endpoint, mut backlog, sealer, .. } = Pair::new();
    let mut sealer = sealer;
    let mut buf = [0u8; 1500];
    let start = Instant::from_micros(1_000_000);
    // An outage's backlog: held before the sender starts, so it is replayed as backlog.
    for i in 0..100u64 {
        backlog.push(OwnedEvent::gauge(start, "cpu.user", i as f64));
    }
    let mut config = SenderConfig::new(1);
    config.backlog_events_per_second = 0;
    config.heartbeat_interval = Duration::from_secs(10);
    let mut sender: Sender = Sender::new(config, &backlog);
    let mut heartbeats = Vec::new();
    let mut now = start;
    let mut data_frames = 0;
    let mut step = |now: Instant,
                    sender: &mut Sender,
                    backlog: &mut MemoryBacklog,
                    endpoint: &mut Endpoint<BTreeMap<KeyId, (DeviceId, MacKey)>>,
                    heartbeats: &mut Vec<(Instant, driftlog_protocol::wire::HeartbeatRepr)>| {
        while let Some(transmit) = sender.poll_transmit(now, backlog, &mut sealer, &mut buf).unwrap() {
            let frame = &buf[..transmit.len];
            let opened = open(frame, Direction::FromDevice, 1500, |id| (id == KEY_ID).then_some(&key)).unwrap();
            match opened.body {
                Body::Heartbeat(heartbeat) => heartbeats.push((now, heartbeat)),
                _ => data_frames += 1,
            }
            assert!(!heartbeats.is_empty(), "the heartbeat announcing the drain goes before the backlog");
            endpoint.handle_datagram(now, frame).unwrap();
        }
    };
    // The first poll sends the first heartbeat, which claims the head and says a drain
    // begins, then the backlog.
    step(now, &mut sender, &mut backlog, &mut endpoint, &mut heartbeats);
    assert_eq!(heartbeats.len(), 1);
    let first = &heartbeats[0].1;
    assert_eq!((first.assigned_end, first.held_epochs_back), (100, 0));
    assert!(first.draining, "the backlog is not acknowledged yet");
    // Live events join while the backlog is in flight; nothing is due for 10 s.
    now = now + Duration::from_millis(5);
    backlog.push(OwnedEvent::gauge(now, "cpu.user", 1.0));
    step(now, &mut sender, &mut backlog, &mut endpoint, &mut heartbeats);
    assert_eq!(heartbeats.len(), 1);
    // The collector commits and acknowledges everything: the drain is over, and the very
    // next poll (not one 10 s later) reports it.
    now = now + Duration::from_millis(30);
    endpoint.commit_all(now);
    deliver_acks(now, &mut endpoint, &key, &mut sender, &mut backlog);
    assert_eq!(backlog.held_events(), 0);
    step(now, &mut sender, &mut backlog, &mut endpoint, &mut heartbeats);
    assert_eq!(heartbeats.len(), 2, "a heartbeat follows the ACK that ended the drain");
    let (at, last) = &heartbeats[1];
    assert_eq!(*at, now);
    assert_eq!((last.assigned_end, last.next_seq, last.held_epochs_back), (101, 101, 0));
    assert!(!last.draining);
    // Not draining any more: the interval applies again.
    now = now + Duration::from_millis(30);
    endpoint.commit_all(now);
    deliver_acks(now, &mut endpoint, &key, &mut sender, &mut backlog);
    step(now, &mut sender, &mut backlog, &mut endpoint, &mut heartbeats);
    assert_eq!(heartbeats.len(), 2);
}
