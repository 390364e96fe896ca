//! The decoder contract: any bytes, authenticated or not, give a value or a typed rejection,
//! never a panic.

mod common;

use common::{KEY_ID, key, seal_raw};
use driftlog_protocol::wire::{Direction, FrameKind, open};
use proptest::prelude::*;

const KINDS: [FrameKind; 5] =
    [FrameKind::Data, FrameKind::Heartbeat, FrameKind::Tombstone, FrameKind::Ack, FrameKind::Nak];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let key = key();
        for direction in [Direction::FromDevice, Direction::FromCollector] {
            let _ = open(&bytes, direction, 1_472, |id| (id == KEY_ID).then_some(&key));
        }
    }

    /// Arbitrary bodies behind a valid MAC reach every body decoder.
    #[test]
    fn authenticated_garbage_bodies_never_panic(
        kind in 0usize..KINDS.len(),
        epoch in any::<u64>(),
        sent_at in any::<u64>(),
        body in proptest::collection::vec(any::<u8>(), 0..1200),
    ) {
        let key = key();
        let datagram = seal_raw(KINDS[kind], epoch, sent_at, &body);
        for direction in [Direction::FromDevice, Direction::FromCollector] {
            if let Ok(opened) = open(&datagram, direction, 1_472, |id| (id == KEY_ID).then_some(&key)) {
                // A data frame that decodes must iterate exactly `count` events.
                if let driftlog_protocol::wire::Body::Data(frame) = opened.body {
                    prop_assert_eq!(frame.events().count() as u32, frame.count);
                }
            }
        }
    }

    /// Bytes that look like a frame header (right magic and version) but are otherwise random.
    #[test]
    fn header_shaped_garbage_never_panics(nibble in 0u8..16, rest in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = vec![0xD7, 0x10 | nibble];
        bytes.extend(rest);
        let key = key();
        let _ = open(&bytes, Direction::FromDevice, 1_472, |_| Some(&key));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// The one-pass decoder agrees with the two-pass one on every authenticated body, and
    /// leaves the output untouched when it rejects.
    #[test]
    fn collecting_decoder_agrees_with_the_validating_one(
        epoch in 1u64..4,
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let key = key();
        let datagram = seal_raw(FrameKind::Data, epoch, 1, &body);
        let plain = open(&datagram, Direction::FromDevice, 1_472, |_| Some(&key));
        let mut events = vec![];
        let collected = driftlog_protocol::wire::open_collecting(&datagram, Direction::FromDevice, 1_472, |_| Some(&key), &mut events);
        match (plain, collected) {
            (Ok(a), Ok(_)) => {
                let driftlog_protocol::wire::Body::Data(frame) = a.body else { panic!("not data") };
                let expected: Vec<_> = frame.events().collect();
                prop_assert_eq!(expected.len(), events.len());
                for ((s1, e1), (s2, e2)) in expected.iter().zip(&events) {
                    prop_assert_eq!(s1, s2);
                    prop_assert_eq!(e1.mono, e2.mono);
                }
            }
            (Err(a), Err(b)) => {
                prop_assert_eq!(a, b);
                prop_assert!(events.is_empty());
            }
            (a, b) => prop_assert!(false, "decoders disagree: {:?} vs {:?}", a.is_ok(), b.is_ok()),
        }
    }
}
