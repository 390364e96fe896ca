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
