//! The agent's sans-IO core against the real outbox (a temporary directory) and the
//! protocol's real collector endpoint: every `now` is chosen by the test, no socket, no
//! thread, no clock.

use driftlog_agent::agent_core::{AgentCore, CoreConfig, HOUSEKEEPING_INTERVAL, NotAccepted, Received};
use driftlog_agent::outbox::{DropPolicy, Outbox, OutboxConfig};
use driftlog_protocol::endpoint::{Endpoint, EndpointConfig};
use driftlog_protocol::sender::OwnedEvent;
use driftlog_protocol::wire::MacKey;
use driftlog_protocol::{ClockQuality, DeviceId, Instant, KeyId, SenderConfig, WallTime};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;

const KEY_ID: KeyId = 7;
const DEVICE: DeviceId = 70;
const SECRET: [u8; 32] = [9; 32];
const FLUSH: Duration = Duration::from_millis(20);

type Core = AgentCore<u32>;

fn core(dir: &std::path::Path, flush_max_events: usize, policy: DropPolicy, max_bytes: u64) -> Core {
    let outbox = Outbox::open(&dir.join("outbox"), OutboxConfig { max_bytes, policy }).unwrap();
    let config = CoreConfig {
        sender: SenderConfig::new(0),
        flush_interval: FLUSH,
        flush_max_events,
        key_id: KEY_ID,
        key: MacKey::new(&SECRET),
    };
    AgentCore::new(config, outbox, at(0)).unwrap()
}

fn at(ms: u64) -> Instant {
    Instant::from_micros(1_000_000 + ms * 1_000)
}

fn wall(ms: u64) -> WallTime {
    WallTime { unix_micros: 1_700_000_000_000_000 + ms as i64 * 1_000, quality: ClockQuality::Synchronized }
}

fn event(ms: u64) -> OwnedEvent {
    OwnedEvent::gauge(at(ms), "sensor.temperature", ms as f64)
}

fn collector() -> Endpoint<BTreeMap<KeyId, (DeviceId, MacKey)>> {
    Endpoint::new(EndpointConfig::new(1, 3), BTreeMap::from([(KEY_ID, (DEVICE, MacKey::new(&SECRET)))]))
}

fn transmit_all(core: &mut Core, ms: u64) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 1_500];
    let mut out = Vec::new();
    while let Some(len) = core.poll_transmit(at(ms), wall(ms), &mut buf) {
        out.push(buf[..len].to_vec());
        assert!(out.len() < 1_000, "poll_transmit never ran dry");
    }
    out
}

#[test]
fn submissions_share_one_commit_and_are_answered_only_once_it_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(dir.path(), 100, DropPolicy::DropOldest, 1 << 20);
    core.handle_submission(at(1), 0, vec![event(1), event(2)], 1);
    core.handle_submission(at(5), 0, vec![event(5)], 2);
    core.handle_submission(at(6), 3, vec![event(6)], 3);
    assert!(core.poll_reply().is_none(), "answered before the commit");
    assert!(transmit_all(&mut core, 6).is_empty(), "sent before it was durable");
    // The commit waits `flush_interval` from the first pending event, not the last.
    assert_eq!(core.poll_timeout(), at(1) + FLUSH);
    core.handle_timeout(at(20));
    assert!(core.poll_reply().is_none(), "flushed before its time");
    core.handle_timeout(at(21));
    let replies: Vec<(u32, (u32, u64))> = std::iter::from_fn(|| core.poll_reply())
        .map(|(token, reply)| {
            let accepted = reply.unwrap();
            (token, (accepted.stream, accepted.first_seq))
        })
        .collect();
    // One append per stream; each submission's first sequence number, in order.
    assert_eq!(replies, vec![(1, (0, 0)), (2, (0, 2)), (3, (3, 0))]);
    assert_eq!(core.stats().commits, 2);
    assert_eq!(core.outbox().held_events(), 4);
    assert!(!transmit_all(&mut core, 21).is_empty(), "nothing sent once durable");
}

#[test]
fn flush_max_events_commits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(dir.path(), 3, DropPolicy::DropOldest, 1 << 20);
    core.handle_submission(at(1), 0, vec![event(1), event(2)], 1);
    assert!(core.poll_reply().is_none());
    assert_eq!(core.pending_events(), 2);
    core.handle_submission(at(2), 0, vec![event(3)], 2);
    assert_eq!(core.pending_events(), 0);
    assert_eq!(std::iter::from_fn(|| core.poll_reply()).filter(|(_, reply)| reply.is_ok()).count(), 2);
}

#[test]
fn a_full_outbox_under_block_refuses_the_tail_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(dir.path(), 1_000, DropPolicy::Block, 4 * 1024);
    for i in 0..400 {
        core.handle_submission(at(1), 0, vec![event(i)], i as u32);
    }
    core.flush();
    let replies: Vec<_> = std::iter::from_fn(|| core.poll_reply()).collect();
    assert_eq!(replies.len(), 400);
    let accepted = replies.iter().take_while(|(_, reply)| reply.is_ok()).count();
    assert!(accepted > 0 && accepted < 400, "{accepted} accepted");
    // A prefix is accepted, the tail refused, and nothing refused got a sequence number.
    assert!(replies[accepted..].iter().all(|(_, reply)| reply == &Err(NotAccepted::Full)));
    assert_eq!(core.outbox().next_seq(0), accepted as u64);
}

#[test]
fn an_ack_from_the_real_endpoint_frees_exactly_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(dir.path(), 1, DropPolicy::DropOldest, 1 << 20);
    let mut collector = collector();
    for i in 0..5 {
        core.handle_submission(at(i), 0, vec![event(i)], i as u32);
    }
    let datagrams = transmit_all(&mut core, 5);
    assert!(!datagrams.is_empty());
    for datagram in &datagrams {
        collector.handle_datagram(at(6), datagram).unwrap();
    }
    // Not committed at the collector: nothing to acknowledge yet, nothing freed.
    let mut buf = vec![0u8; 1_500];
    assert!(collector.poll_transmit(at(500), &mut buf).is_none(), "an ACK before the commit");
    collector.commit_all(at(500));
    let mut freed = Vec::new();
    while let Some(transmit) = collector.poll_transmit(at(1_000), &mut buf) {
        match core.handle_datagram(at(1_001), &buf[..transmit.len]) {
            Received::Ack { stream: 0, released } => freed.extend(released),
            other => panic!("expected an ACK, got {other:?}"),
        }
    }
    let freed: u64 = freed.iter().map(|(_, range)| range.end - range.start).sum();
    assert_eq!(freed, 5);
    assert_eq!(core.outbox().held_events(), 0);
}

#[test]
fn a_replayed_or_forged_datagram_is_counted_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(dir.path(), 1, DropPolicy::DropOldest, 1 << 20);
    let mut collector = collector();
    core.handle_submission(at(1), 0, vec![event(1)], 1);
    for datagram in transmit_all(&mut core, 1) {
        collector.handle_datagram(at(2), &datagram).unwrap();
    }
    collector.commit_all(at(2));
    let mut buf = vec![0u8; 1_500];
    let len = collector.poll_transmit(at(100), &mut buf).expect("an ACK").len;
    let ack = buf[..len].to_vec();
    let mut forged = ack.clone();
    *forged.last_mut().unwrap() ^= 1;
    assert!(matches!(core.handle_datagram(at(101), &forged), Received::Rejected(_)));
    assert_eq!(core.outbox().held_events(), 1, "a forged ACK freed events");
    assert!(matches!(core.handle_datagram(at(102), &ack), Received::Ack { .. }));
    assert!(matches!(core.handle_datagram(at(103), &ack), Received::Replayed));
    assert_eq!(core.stats().datagrams_rejected, 2);
    assert_eq!(core.stats().datagrams_received, 3);
}

#[test]
fn housekeeping_is_due_every_interval_and_the_deadline_says_when() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(dir.path(), 1, DropPolicy::DropOldest, 1 << 20);
    let first = at(0) + HOUSEKEEPING_INTERVAL;
    assert!(core.poll_timeout() <= first);
    core.handle_timeout(at(1));
    assert!(!core.take_status_due());
    core.handle_timeout(first);
    assert!(core.take_status_due());
    assert!(!core.take_status_due(), "due once per interval");
    assert!(core.poll_timeout() > first);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes from the network: a clear outcome, never a panic, nothing freed.
    #[test]
    fn any_datagram_is_handled_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1_500)) {
        let dir = tempfile::tempdir().unwrap();
        let mut core = core(dir.path(), 1, DropPolicy::DropOldest, 1 << 20);
        core.handle_submission(at(1), 0, vec![event(1)], 1);
        let received = core.handle_datagram(at(2), &bytes);
        prop_assert!(matches!(received, Received::Rejected(_)), "{received:?}");
        prop_assert_eq!(core.outbox().held_events(), 1);
    }
}
