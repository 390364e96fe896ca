//! The control bodies (ACK, NAK, heartbeat, tombstone) encoded and decoded field by field with
//! the crate's own primitives ([`super::codec`]), byte for byte what postcard makes of the same
//! structs (the tests below hold both to it). Through serde and postcard they cost about a
//! kilobyte more flash on a Cortex-M (visitor and sequence-access code per struct), which the
//! firmware cannot spare.
//!
//! postcard's layout, as used here: integers as LEB128 varints (signed ones zigzagged), `bool`
//! as one byte 0 or 1, `Option` as a byte 0 (none) or 1 then the value, unit enum variants as
//! their index (a varint), a bounded vector as its length (a varint) then its elements, struct
//! fields in order. Decoding refuses everything postcard refuses that matters here: another
//! `bool` or `Option` byte, a variant index out of range, a vector over its capacity, a `u32`
//! over its range, a truncated or overlong body.

use super::codec::{Overflow, Reader, Writer};
use super::control::{HeartbeatWire, TombstoneWire};
use super::{AckRepr, AckTiming, DropReason, NakRepr};
use crate::{ClockQuality, Instant, SeqRange, WallTime};

/// Decodes a whole body with `read`; `None` if it fails or leaves bytes over.
pub(super) fn decode_all<'a, T>(body: &'a [u8], read: impl FnOnce(&mut Reader<'a>) -> Option<T>) -> Option<T> {
    let mut reader = Reader::new(body);
    let value = read(&mut reader)?;
    reader.is_empty().then_some(value)
}

pub(super) fn write_ack(w: &mut Writer<'_>, ack: &AckRepr) -> Result<(), Overflow> {
    w.varint(u64::from(ack.stream))?;
    w.varint(ack.epoch)?;
    w.varint(ack.cumulative)?;
    write_ranges(w, &ack.sack)?;
    w.varint(ack.echo_sent_at.as_micros())?;
    w.varint(ack.received_at.as_micros())
}

pub(super) fn read_ack(r: &mut Reader<'_>) -> Option<AckRepr> {
    Some(AckRepr {
        stream: read_u32(r)?,
        epoch: r.varint()?,
        cumulative: r.varint()?,
        sack: read_ranges(r)?,
        echo_sent_at: Instant::from_micros(r.varint()?),
        received_at: Instant::from_micros(r.varint()?),
    })
}

pub(super) fn write_nak(w: &mut Writer<'_>, nak: &NakRepr) -> Result<(), Overflow> {
    w.varint(u64::from(nak.stream))?;
    w.varint(nak.epoch)?;
    write_ranges(w, &nak.missing)
}

pub(super) fn read_nak(r: &mut Reader<'_>) -> Option<NakRepr> {
    Some(NakRepr { stream: read_u32(r)?, epoch: r.varint()?, missing: read_ranges(r)? })
}

pub(super) fn write_heartbeat(w: &mut Writer<'_>, h: &HeartbeatWire) -> Result<(), Overflow> {
    w.varint(u64::from(h.stream))?;
    w.varint(h.epoch_back)?;
    w.varint(h.oldest_available)?;
    w.varint(h.next_seq)?;
    match h.wall_now {
        None => w.byte(0)?,
        Some(wall) => {
            w.byte(1)?;
            w.zigzag(wall.unix_micros)?;
            w.varint(quality_index(wall.quality))?;
        }
    }
    match h.ack_timing {
        None => w.byte(0)?,
        Some(timing) => {
            w.byte(1)?;
            for at in [
                timing.device_sent_at,
                timing.collector_received_at,
                timing.collector_sent_at,
                timing.device_received_at,
            ] {
                w.varint(at.as_micros())?;
            }
        }
    }
    w.varint(h.assigned_end)?;
    w.varint(h.held_epochs_back)?;
    w.byte(u8::from(h.draining))
}

pub(super) fn read_heartbeat(r: &mut Reader<'_>) -> Option<HeartbeatWire> {
    Some(HeartbeatWire {
        stream: read_u32(r)?,
        epoch_back: r.varint()?,
        oldest_available: r.varint()?,
        next_seq: r.varint()?,
        wall_now: match read_bool(r)? {
            false => None,
            true => Some(WallTime { unix_micros: r.zigzag()?, quality: read_quality(r)? }),
        },
        ack_timing: match read_bool(r)? {
            false => None,
            true => Some(AckTiming {
                device_sent_at: Instant::from_micros(r.varint()?),
                collector_received_at: Instant::from_micros(r.varint()?),
                collector_sent_at: Instant::from_micros(r.varint()?),
                device_received_at: Instant::from_micros(r.varint()?),
            }),
        },
        assigned_end: r.varint()?,
        held_epochs_back: r.varint()?,
        draining: read_bool(r)?,
    })
}

pub(super) fn write_tombstone(w: &mut Writer<'_>, t: &TombstoneWire) -> Result<(), Overflow> {
    w.varint(u64::from(t.stream))?;
    w.varint(t.epoch_back)?;
    w.varint(t.range.start)?;
    w.varint(t.range.end)?;
    w.varint(reason_index(t.reason))
}

pub(super) fn read_tombstone(r: &mut Reader<'_>) -> Option<TombstoneWire> {
    Some(TombstoneWire {
        stream: read_u32(r)?,
        epoch_back: r.varint()?,
        range: SeqRange::new(r.varint()?, r.varint()?),
        reason: read_reason(r)?,
    })
}

fn write_ranges(w: &mut Writer<'_>, ranges: &[SeqRange]) -> Result<(), Overflow> {
    w.varint(ranges.len() as u64)?;
    for range in ranges {
        w.varint(range.start)?;
        w.varint(range.end)?;
    }
    Ok(())
}

fn read_ranges<const N: usize>(r: &mut Reader<'_>) -> Option<heapless::Vec<SeqRange, N>> {
    let len = r.varint()?;
    let mut ranges = heapless::Vec::new();
    for _ in 0..len {
        ranges.push(SeqRange::new(r.varint()?, r.varint()?)).ok()?;
    }
    Some(ranges)
}

fn read_u32(r: &mut Reader<'_>) -> Option<u32> {
    u32::try_from(r.varint()?).ok()
}

fn read_bool(r: &mut Reader<'_>) -> Option<bool> {
    match r.byte()? {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// Variant indices in declaration order, as serde numbers them.
const QUALITIES: [ClockQuality; 2] = [ClockQuality::Unsynchronized, ClockQuality::Synchronized];
const REASONS: [DropReason; 6] = [
    DropReason::BufferFull,
    DropReason::RejectedNew,
    DropReason::TooOld,
    DropReason::StorageFailure,
    DropReason::Oversized,
    DropReason::Unrecoverable,
];

fn quality_index(quality: ClockQuality) -> u64 {
    QUALITIES.iter().position(|q| *q == quality).unwrap_or(0) as u64
}

fn read_quality(r: &mut Reader<'_>) -> Option<ClockQuality> {
    QUALITIES.get(usize::try_from(r.varint()?).ok()?).copied()
}

fn reason_index(reason: DropReason) -> u64 {
    REASONS.iter().position(|q| *q == reason).unwrap_or(0) as u64
}

fn read_reason(r: &mut Reader<'_>) -> Option<DropReason> {
    REASONS.get(usize::try_from(r.varint()?).ok()?).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ranges<const N: usize>() -> impl Strategy<Value = heapless::Vec<SeqRange, N>> {
        proptest::collection::vec((any::<u64>(), any::<u64>()), 0..=N)
            .prop_map(|pairs| pairs.into_iter().map(|(a, b)| SeqRange::new(a, b)).collect())
    }

    fn instant() -> impl Strategy<Value = Instant> {
        any::<u64>().prop_map(Instant::from_micros)
    }

    fn ack() -> impl Strategy<Value = AckRepr> {
        (any::<u32>(), any::<u64>(), any::<u64>(), ranges(), instant(), instant()).prop_map(
            |(stream, epoch, cumulative, sack, echo_sent_at, received_at)| AckRepr {
                stream,
                epoch,
                cumulative,
                sack,
                echo_sent_at,
                received_at,
            },
        )
    }

    fn nak() -> impl Strategy<Value = NakRepr> {
        (any::<u32>(), any::<u64>(), ranges()).prop_map(|(stream, epoch, missing)| NakRepr { stream, epoch, missing })
    }

    fn heartbeat() -> impl Strategy<Value = HeartbeatWire> {
        let wall = proptest::option::of((any::<i64>(), any::<bool>())).prop_map(|wall| {
            wall.map(|(unix_micros, synced)| WallTime {
                unix_micros,
                quality: if synced { ClockQuality::Synchronized } else { ClockQuality::Unsynchronized },
            })
        });
        let timing = proptest::option::of((instant(), instant(), instant(), instant())).prop_map(|t| {
            t.map(|(a, b, c, d)| AckTiming {
                device_sent_at: a,
                collector_received_at: b,
                collector_sent_at: c,
                device_received_at: d,
            })
        });
        (any::<u32>(), any::<[u64; 6]>(), wall, timing, any::<bool>()).prop_map(
            |(stream, n, wall_now, ack_timing, draining)| HeartbeatWire {
                stream,
                epoch_back: n[0],
                oldest_available: n[1],
                next_seq: n[2],
                wall_now,
                ack_timing,
                assigned_end: n[3],
                held_epochs_back: n[4] >> (n[5] % 64),
                draining,
            },
        )
    }

    fn tombstone() -> impl Strategy<Value = TombstoneWire> {
        (any::<u32>(), any::<u64>(), any::<u64>(), any::<u64>(), 0..REASONS.len()).prop_map(
            |(stream, epoch_back, start, end, reason)| TombstoneWire {
                stream,
                epoch_back,
                range: SeqRange::new(start, end),
                reason: REASONS[reason],
            },
        )
    }

    /// Ours and postcard's bytes for `value`, and ours decoded back.
    fn check<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + core::fmt::Debug>(
        value: &T,
        write: fn(&mut Writer<'_>, &T) -> Result<(), Overflow>,
        read: fn(&mut Reader<'_>) -> Option<T>,
    ) {
        let mut ours = [0u8; 1_024];
        let mut writer = Writer::new(&mut ours);
        write(&mut writer, value).unwrap();
        let len = writer.len();
        let mut theirs = [0u8; 1_024];
        let expected = postcard::to_slice(value, &mut theirs).unwrap();
        assert_eq!(&ours[..len], &*expected);
        assert_eq!(decode_all(&ours[..len], read).as_ref(), Some(value));
        // A body cut short, or with a byte over, is refused.
        assert_eq!(decode_all(&ours[..len - 1], read), None);
        let mut longer = ours[..=len].to_vec();
        longer[len] = 0;
        assert_eq!(decode_all(&longer, read), None);
    }

    proptest! {
        #[test]
        fn bodies_are_postcards_bytes_and_read_back(ack in ack(), nak in nak(), heartbeat in heartbeat(), tombstone in tombstone()) {
            check(&ack, write_ack, read_ack);
            check(&nak, write_nak, read_nak);
            check(&heartbeat, write_heartbeat, read_heartbeat);
            check(&tombstone, write_tombstone, read_tombstone);
        }

        /// Arbitrary bytes: whenever postcard reads a body, ours reads the same value (ours
        /// also takes a few non-minimal varints postcard refuses, which no sender writes).
        #[test]
        fn arbitrary_bodies_are_read_as_postcard_reads_them(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            fn same<T: serde::de::DeserializeOwned + PartialEq + core::fmt::Debug>(bytes: &[u8], read: fn(&mut Reader<'_>) -> Option<T>) {
                let theirs = match postcard::take_from_bytes::<T>(bytes) {
                    Ok((value, [])) => Some(value),
                    _ => None,
                };
                let ours = decode_all(bytes, read);
                if let Some(theirs) = theirs {
                    assert_eq!(ours, Some(theirs));
                }
            }
            same::<AckRepr>(&bytes, read_ack);
            same::<NakRepr>(&bytes, read_nak);
            same::<HeartbeatWire>(&bytes, read_heartbeat);
            same::<TombstoneWire>(&bytes, read_tombstone);
        }
    }
}
