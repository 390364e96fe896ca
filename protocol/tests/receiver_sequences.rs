//! Arbitrary frame sequences against the receiver, checked against a model: every sequence
//! number is handed out at most once, a refused frame changes nothing, and the ACK never
//! claims more than was made durable.

use driftlog_protocol::receiver::{Control, DedupState};
use driftlog_protocol::wire::{FrameKind, Header, HeartbeatRepr};
use driftlog_protocol::{Instant, Receiver, ReceiverConfig, SeqRange};
use proptest::prelude::*;
use std::collections::BTreeSet;

#[derive(Clone, Debug)]
enum Op {
    Data(u64, u64),
    Tombstone(u64, u64),
    Heartbeat(u64, u64),
    Commit,
    Poll(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..300, 1u64..40).prop_map(|(s, l)| Op::Data(s, s + l)),
        1 => (0u64..300, 1u64..10).prop_map(|(s, l)| Op::Tombstone(s, s + l)),
        1 => (0u64..300, 0u64..60).prop_map(|(o, extra)| Op::Heartbeat(o, o + extra)),
        2 => Just(Op::Commit),
        2 => (0u64..200_000).prop_map(Op::Poll),
    ]
}

fn header(sent_at: u64) -> Header {
    Header { kind: FrameKind::Data, key_id: 1, epoch: 1, sent_at: Instant::from_micros(sent_at) }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn receiver_matches_the_model(ops in proptest::collection::vec(op(), 1..200)) {
        let mut receiver = Receiver::<4>::new(ReceiverConfig::default(), 0, 1, 7);
        let mut accounted = BTreeSet::new();
        let mut durable: DedupState<4> = DedupState::default();
        let mut now = 0u64;
        for (index, op) in ops.into_iter().enumerate() {
            now += 1_000;
            let before = receiver.state().clone();
            let mut handed_out = Vec::new();
            let result = match op {
                Op::Data(start, end) => receiver.handle_data(Instant::from_micros(now), &header(index as u64), SeqRange::new(start, end), |r| handed_out.push(r)),
                Op::Tombstone(start, end) => receiver.handle_tombstone(Instant::from_micros(now), &header(index as u64), SeqRange::new(start, end), |r| handed_out.push(r)),
                Op::Heartbeat(oldest, next) => {
                    let heartbeat = HeartbeatRepr { stream: 0, epoch: 1, oldest_available: oldest, next_seq: next, wall_now: None, ack_timing: None, assigned_end: next, held_epochs_back: 0, draining: false };
                    receiver.handle_heartbeat(Instant::from_micros(now), &header(index as u64), &heartbeat, |r| handed_out.push(r));
                    Ok(0)
                }
                Op::Commit => {
                    durable = receiver.state().clone();
                    receiver.handle_durable(Instant::from_micros(now), &durable);
                    Ok(0)
                }
                Op::Poll(advance) => {
                    now += advance;
                    while let Some(control) = receiver.poll_transmit(Instant::from_micros(now)) {
                        if let Control::Ack(ack) = control {
                            // The ACK covers only durable sequence numbers.
                            for seq in 0..ack.cumulative {
                                prop_assert!(durable.contains(seq));
                            }
                            for range in &ack.sack {
                                for seq in range.start..range.end {
                                    prop_assert!(durable.contains(seq));
                                }
                            }
                        }
                    }
                    Ok(0)
                }
            };
            match result {
                Ok(_) => {
                    for range in &handed_out {
                        for seq in range.start..range.end {
                            prop_assert!(accounted.insert(seq), "seq {} handed out twice", seq);
                        }
                    }
                }
                Err(_) => {
                    prop_assert!(handed_out.is_empty());
                    prop_assert_eq!(receiver.state(), &before, "a refused frame changed the state");
                }
            }
            // The state is exactly the set of sequence numbers handed out.
            for seq in 0..400 {
                prop_assert_eq!(receiver.state().contains(seq), accounted.contains(&seq), "seq {}", seq);
            }
        }
    }
}
