//! Bounds-checked primitive encoding, byte-compatible with postcard's: LEB128 varints,
//! zigzag for signed values, little-endian floats, strings and byte strings as a varint
//! length then the bytes. Used for the batch body, where a one-byte event head replaces
//! serde's per-field tags (see `data.rs`).

/// Writes into a caller-owned slice; every method fails (and writes nothing useful) when
/// the slice is too short, and the caller then discards the partial event.
pub(crate) struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

#[derive(Debug)]
pub(crate) struct Overflow;

impl<'b> Writer<'b> {
    pub(crate) fn new(buf: &'b mut [u8]) -> Writer<'b> {
        Writer { buf, len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn byte(&mut self, value: u8) -> Result<(), Overflow> {
        let slot = self.buf.get_mut(self.len).ok_or(Overflow)?;
        *slot = value;
        self.len += 1;
        Ok(())
    }

    pub(crate) fn varint(&mut self, mut value: u64) -> Result<(), Overflow> {
        loop {
            let low = (value & 0x7F) as u8;
            value >>= 7;
            if value == 0 {
                return self.byte(low);
            }
            self.byte(low | 0x80)?;
        }
    }

    pub(crate) fn zigzag(&mut self, value: i64) -> Result<(), Overflow> {
        self.varint(((value << 1) ^ (value >> 63)) as u64)
    }

    pub(crate) fn bytes(&mut self, value: &[u8]) -> Result<(), Overflow> {
        self.varint(value.len() as u64)?;
        let end = self.len.checked_add(value.len()).ok_or(Overflow)?;
        self.buf.get_mut(self.len..end).ok_or(Overflow)?.copy_from_slice(value);
        self.len = end;
        Ok(())
    }

    pub(crate) fn f64(&mut self, value: f64) -> Result<(), Overflow> {
        let end = self.len.checked_add(8).ok_or(Overflow)?;
        self.buf.get_mut(self.len..end).ok_or(Overflow)?.copy_from_slice(&value.to_le_bytes());
        self.len = end;
        Ok(())
    }
}

/// Reads from a borrowed slice; every method returns `None` on truncated or invalid input.
#[derive(Clone, Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// What is left to read.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub(crate) fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }

    /// At most 10 bytes; rejects encodings that overflow 64 bits.
    pub(crate) fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for index in 0..10 {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7F);
            if index == 9 && bits > 1 {
                return None;
            }
            value |= bits << (7 * index);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    pub(crate) fn zigzag(&mut self) -> Option<i64> {
        let raw = self.varint()?;
        Some((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        if len > self.rest.len() {
            return None;
        }
        let (value, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(value)
    }

    pub(crate) fn str(&mut self) -> Option<&'a str> {
        core::str::from_utf8(self.bytes()?).ok()
    }

    pub(crate) fn f64(&mut self) -> Option<f64> {
        if self.rest.len() < 8 {
            return None;
        }
        let (value, rest) = self.rest.split_at(8);
        self.rest = rest;
        Some(f64::from_le_bytes(value.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_postcard() {
        for value in [0u64, 1, 127, 128, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            let mut ours = [0u8; 10];
            let mut writer = Writer::new(&mut ours);
            writer.varint(value).unwrap();
            let len = writer.len();
            let mut theirs = [0u8; 10];
            let expected = postcard::to_slice(&value, &mut theirs).unwrap();
            assert_eq!(&ours[..len], &*expected);
            assert_eq!(Reader::new(&ours[..len]).varint(), Some(value));
        }
        for value in [0i64, -1, 1, i64::MIN, i64::MAX] {
            let mut ours = [0u8; 10];
            let mut writer = Writer::new(&mut ours);
            writer.zigzag(value).unwrap();
            let len = writer.len();
            let mut theirs = [0u8; 10];
            assert_eq!(&ours[..len], &*postcard::to_slice(&value, &mut theirs).unwrap());
            assert_eq!(Reader::new(&ours[..len]).zigzag(), Some(value));
        }
    }

    #[test]
    fn overlong_varints_are_rejected() {
        assert_eq!(Reader::new(&[0xFF; 10]).varint(), None);
        assert_eq!(Reader::new(&[0x80; 3]).varint(), None);
        assert_eq!(Reader::new(&[0x05]).bytes(), None);
    }
}
