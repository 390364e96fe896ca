//! Postcard's varints (LEB128, zigzag for signed) for the hand-encoded parts of a block
//! (record lengths, compact event heads), without a Vec per value.

/// Appends `value` (a `u64`, or an `i64` as zigzag) as postcard encodes it.
pub(super) fn put(out: &mut Vec<u8>, value: impl serde::Serialize) {
    let mut buf = [0u8; 10];
    // An integer of up to 64 bits is at most 10 bytes as a varint: this cannot fail.
    if let Ok(bytes) = postcard::to_slice(&value, &mut buf) {
        out.extend_from_slice(bytes);
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
        for value in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put(&mut out, value);
            assert_eq!(out, postcard::to_allocvec(&value).unwrap());
            let mut rest = &out[..];
            assert_eq!(take(&mut rest), Some(value));
            assert!(rest.is_empty());
        }
        for value in [0i64, -1, 1, -64, 64, i64::MIN, i64::MAX] {
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
