//! Postcard's varints (LEB128, zigzag for signed) for the hand-encoded parts of a block
//! (record lengths, compact event heads), without a Vec per value.

/// The longest varint: a `u64` in 7-bit groups.
pub(super) const MAX_BYTES: usize = 10;

/// Appends `value` (a `u64`, or an `i64` as zigzag) as postcard encodes it, a byte at a
/// time: at most 10 pushes, where a copy of a temporary buffer would call `memcpy` for
/// every record head on the ingest path.
pub(super) fn put(out: &mut Vec<u8>, value: impl Varint) {
    let mut value = value.unsigned();
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// An integer as postcard writes it: unsigned LEB128, signed values zigzagged first.
pub(super) trait Varint {
    fn unsigned(self) -> u64;
}

impl Varint for u64 {
    fn unsigned(self) -> u64 {
        self
    }
}

impl Varint for i64 {
    fn unsigned(self) -> u64 {
        ((self << 1) ^ (self >> 63)) as u64
    }
}

/// Takes a varint off the front of `bytes`; `None` when it is truncated or longer than a u64.
pub(super) fn take(bytes: &mut &[u8]) -> Option<u64> {
    let (value, rest) = postcard::take_from_bytes::<u64>(bytes).ok()?;
    *bytes = rest;
    Some(value)
}

pub(super) fn take_zigzag(bytes: &mut &[u8]) -> Option<i64> {
    let (value, rest) = postcard::take_from_bytes::<i64>(bytes).ok()?;
    *bytes = rest;
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        // Every length boundary: 2^k - 1, 2^k and 2^k + 1 for each k, and the extremes.
        let edges = (0..64).flat_map(|k| [(1u64 << k) - 1, 1u64 << k, (1u64 << k) + 1]);
        for value in edges.chain([0u64, 1, 127, 128, 300, 1 << 35, u64::MAX - 1, u64::MAX]) {
            let mut out = Vec::new();
            put(&mut out, value);
            assert_eq!(out, postcard::to_allocvec(&value).unwrap());
            let mut rest = &out[..];
            assert_eq!(take(&mut rest), Some(value));
            assert!(rest.is_empty());
        }
        let edges = (0..63).flat_map(|k| [1i64 << k, -(1i64 << k), (1i64 << k) - 1, -(1i64 << k) - 1]);
        for value in edges.chain([0i64, -1, 1, -64, 64, i64::MIN, i64::MAX]) {
            let mut out = Vec::new();
            put(&mut out, value);
            assert_eq!(out, postcard::to_allocvec(&value).unwrap());
            assert_eq!(take_zigzag(&mut &out[..]), Some(value));
        }
    }

    #[test]
    fn refuses_truncated_and_overlong() {
        assert_eq!(take(&mut &[0x80u8][..]), None);
        assert_eq!(take(&mut &[][..]), None);
        assert_eq!(take(&mut &[0xffu8; 10][..]), None);
        assert_eq!(take(&mut &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..]), None);
    }
}
