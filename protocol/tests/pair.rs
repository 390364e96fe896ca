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

#[test]
fn every_event_is_delivered_once_and_freed_by_acks() {
    let keys = keyring();
    let key = keys.key(KEY_ID).unwrap().1.clone();
    let mut endpoint = Endpoint::new(EndpointConfig::new(1, 5), keys);
    let mut backlog = MemoryBacklog::new(3, 10_000, DropPolicy::DropOldest);
    let mut config = SenderConfig::new(1);
    config.backlog_events_per_second = 0;
    let mut sender: Sender = Sender::new(config, &backlog);
    let mut sealer = Sealer::new(KEY_ID, key.clone(), 3);
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
    while let Some(out) = endpoint.poll_transmit(now, &mut ack_buf) {
        let opened =
            open(&ack_buf[..out.len], Direction::FromCollector, 1500, |id| (id == KEY_ID).then_some(&key)).unwrap();
        if let Body::Ack(ack) = opened.body {
            sender.handle_ack(now, &opened.header, &ack, &mut backlog).unwrap();
        }
    }

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
