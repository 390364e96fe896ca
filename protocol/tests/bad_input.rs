//! Every kind of bad datagram gets its own reject reason and changes nothing else.

mod common;

use common::{DEVICE, KEY_ID, data_frame, endpoint, seal_raw};
use driftlog_protocol::ids::StreamKey;
use driftlog_protocol::wire::{AckRepr, ControlRef, FrameKind, MacKey, Reject, Sealer, seal_control};
use driftlog_protocol::{Instant, SeqRange};

fn flip(mut bytes: Vec<u8>, index: usize) -> Vec<u8> {
    let index = index.min(bytes.len() - 1);
    bytes[index] ^= 0x01;
    bytes
}

#[test]
fn each_bad_datagram_is_rejected_by_reason_without_state_change() {
    let mut endpoint = endpoint();
    let now = Instant::from_micros(10_000);
    let good = data_frame(1, 500, 0, 4);
    let accepted = endpoint.handle_datagram(now, &good).unwrap();
    assert_eq!(accepted.new_events().count(), 4);
    let stream = StreamKey { device: DEVICE, stream: 1, epoch: 1 };
    let state_before = endpoint.receiver(&stream).unwrap().state().clone();
    let stats_before = endpoint.stats();

    let mut wrong_version = data_frame(1, 600, 4, 1);
    // Version 1 (before heartbeats carried completeness claims) is refused, not half-read.
    wrong_version[1] = 0x11;
    let mut bad_magic = data_frame(1, 700, 4, 1);
    bad_magic[0] = b'c';
    let mut unknown_kind = data_frame(1, 800, 4, 1);
    unknown_kind[1] = (driftlog_protocol::wire::VERSION << 4) | 0x0F;
    let forged_key = {
        let mut sealer = Sealer::new(KEY_ID, MacKey::new(&[1; 32]), 1);
        let header = sealer.header(FrameKind::Data, Instant::from_micros(900));
        let mut buf = vec![0u8; 256];
        let mut writer = driftlog_protocol::wire::DataWriter::new(&mut buf, &header, 1, 1, 4, 8).unwrap();
        writer
            .push(&driftlog_protocol::wire::Event {
                mono: Instant::from_micros(1),
                wall: None,
                payload: driftlog_protocol::wire::Payload::Gauge(driftlog_protocol::wire::Sample {
                    name: "x",
                    value: 1.0,
                    tags: Default::default(),
                }),
            })
            .unwrap();
        let (buf, len) = writer.into_parts();
        let total = sealer.seal(buf, len).unwrap();
        buf[..total].to_vec()
    };
    let unknown_key = {
        let mut bytes = data_frame(1, 1_000, 4, 1);
        bytes[2] = 99; // the key id varint
        bytes
    };
    let ack_from_device = {
        let ack = AckRepr {
            stream: 1,
            epoch: 1,
            cumulative: 3,
            sack: Default::default(),
            echo_sent_at: Instant::ZERO,
            received_at: Instant::ZERO,
        };
        let mut sealer = Sealer::new(KEY_ID, common::key(), 1);
        let mut buf = [0u8; 128];
        let len = seal_control(&mut sealer, Instant::from_micros(1_100), ControlRef::Ack(&ack), &mut buf).unwrap();
        buf[..len].to_vec()
    };

    let cases: Vec<(&str, Vec<u8>, Reject)> = vec![
        ("empty", Vec::new(), Reject::Truncated),
        ("shorter than a tag", good[..10].to_vec(), Reject::Truncated),
        ("tail cut off", good[..good.len() - 3].to_vec(), Reject::Forged),
        ("oversized", vec![0xD7; 2_000], Reject::Oversized),
        ("bad magic", bad_magic, Reject::BadMagic),
        ("wrong version", wrong_version, Reject::UnknownVersion),
        ("unknown kind", unknown_kind, Reject::UnknownKind),
        ("collector frame from a device", ack_from_device, Reject::UnexpectedKind),
        ("unknown key", unknown_key, Reject::UnknownKey),
        ("forged tag", flip(good.clone(), good.len() - 1), Reject::Forged),
        ("forged body", flip(good.clone(), 12), Reject::Forged),
        ("signed with another key", forged_key, Reject::Forged),
        ("replayed", good.clone(), Reject::Replayed),
        ("malformed body", seal_raw(FrameKind::Data, 1, 2_000, &[0x01, 0x00, 0x00, 0xFF]), Reject::Malformed),
        ("empty batch", seal_raw(FrameKind::Data, 1, 2_100, &[0x01, 0x00, 0x00]), Reject::Malformed),
        ("epoch_back beyond epoch", seal_raw(FrameKind::Data, 1, 2_200, &[0x01, 0x05, 0x00]), Reject::Malformed),
        (
            "trailing bytes after a tombstone",
            seal_raw(FrameKind::Tombstone, 1, 2_300, &[1, 0, 0, 1, 0, 0xAA]),
            Reject::Malformed,
        ),
    ];
    for (name, bytes, reason) in &cases {
        assert_eq!(endpoint.handle_datagram(now, bytes).err(), Some(*reason), "{name}");
    }

    let stats = endpoint.stats();
    for (_, _, reason) in &cases {
        let expected = cases.iter().filter(|(_, _, r)| r == reason).count() as u64;
        assert_eq!(stats.rejects.get(*reason), expected, "counter for {reason:?}");
    }
    assert_eq!(stats.datagrams_accepted, stats_before.datagrams_accepted);
    assert_eq!(stats.events_new, stats_before.events_new);
    assert_eq!(endpoint.stream_count(), 1);
    assert_eq!(endpoint.receiver(&stream).unwrap().state(), &state_before);

    // The next good frame is still accepted: no rejection poisoned the replay window.
    let next = data_frame(1, 3_000, 4, 2);
    let received = endpoint.handle_datagram(now, &next).unwrap();
    let seqs: Vec<u64> = received.new_events().map(|(seq, _)| seq).collect();
    assert_eq!(seqs, vec![4, 5]);
    assert!(endpoint.receiver(&stream).unwrap().state().contains(5));
    assert!(!endpoint.receiver(&stream).unwrap().state().contains(6));
    let _ = SeqRange::new(0, 0);
}

#[test]
fn a_retransmission_with_a_new_send_time_is_a_duplicate_not_a_replay() {
    let mut endpoint = endpoint();
    let now = Instant::from_micros(1);
    endpoint.handle_datagram(now, &data_frame(1, 100, 0, 3)).unwrap();
    let retransmission = data_frame(1, 200, 0, 3);
    let again = endpoint.handle_datagram(now, &retransmission).unwrap();
    assert_eq!(again.new_events().count(), 0);
    assert_eq!(endpoint.stats().events_duplicate, 3);
    assert_eq!(endpoint.stats().rejects.total(), 0);
}

#[test]
fn too_many_streams_is_rejected_until_room_exists() {
    let keys = std::collections::BTreeMap::from([(KEY_ID, (DEVICE, common::key()))]);
    let mut config = driftlog_protocol::endpoint::EndpointConfig::new(1, 1);
    config.max_streams = 1;
    let mut endpoint = driftlog_protocol::endpoint::Endpoint::new(config, keys);
    let now = Instant::from_micros(1);
    endpoint.handle_datagram(now, &data_frame(1, 100, 0, 1)).unwrap();
    // Another epoch is another stream.
    assert_eq!(endpoint.handle_datagram(now, &data_frame(2, 100, 0, 1)).err(), Some(Reject::TooManyStreams));
    assert_eq!(endpoint.stream_count(), 1);
}
