//! The on-disk block: a fixed 40-byte header and a payload, checksummed together.
//!
//! ```text
//! 0   crc32      u32  over bytes 4..40 and the payload
//! 4   len        u32  payload bytes
//! 8   kind       u8   1 = events, 2 = release
//! 9   flags      u8   bit 0: last block of its commit
//! 10  reserved   u16  zero
//! 12  stream     u32
//! 16  epoch      u64
//! 24  start      u64  first sequence number
//! 32  end        u64  one past the last
//! 40  payload         events: an event chain (`EventChainWriter`); release: empty
//! ```
//!
//! All integers are little-endian. A block that does not check out is either a torn write
//! (zeros from a crash after the file grew, a write cut short) or damage; [`Header::repair`]
//! tells a single flipped bit, which a torn write does not look like, from the rest.

use driftlog_protocol::{Epoch, Seq, StreamId};

pub(super) const HEADER_BYTES: usize = 40;
/// Largest payload of one block: one stored event at most, or a chain of several.
pub(super) const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// Events per block at most, so a read that starts mid-block decodes few events to skip.
pub(super) const MAX_BLOCK_EVENTS: u64 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Events,
    Release,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub len: u32,
    pub kind: Kind,
    pub commit_end: bool,
    pub stream: StreamId,
    pub epoch: Epoch,
    pub start: Seq,
    pub end: Seq,
}

impl Header {
    /// The header bytes with the checksum over them and `payload`.
    pub(super) fn encode(&self, payload: &[u8]) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[4..8].copy_from_slice(&self.len.to_le_bytes());
        out[8] = match self.kind {
            Kind::Events => 1,
            Kind::Release => 2,
        };
        out[9] = u8::from(self.commit_end);
        out[12..16].copy_from_slice(&self.stream.to_le_bytes());
        out[16..24].copy_from_slice(&self.epoch.to_le_bytes());
        out[24..32].copy_from_slice(&self.start.to_le_bytes());
        out[32..40].copy_from_slice(&self.end.to_le_bytes());
        let crc = checksum(&out[4..], payload);
        out[0..4].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a header without checking the payload (see [`Header::verify`]). `None` when the
    /// bytes cannot be a header this version wrote.
    pub(super) fn decode(bytes: &[u8; HEADER_BYTES]) -> Option<Header> {
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let kind = match bytes[8] {
            1 => Kind::Events,
            2 => Kind::Release,
            _ => return None,
        };
        let header = Header {
            len: u32_at(4),
            kind,
            commit_end: bytes[9] & 1 == 1,
            stream: u32_at(12),
            epoch: u64_at(16),
            start: u64_at(24),
            end: u64_at(32),
        };
        let plausible = bytes[9] & !1 == 0
            && bytes[10..12] == [0, 0]
            && header.len as usize <= MAX_PAYLOAD_BYTES
            && header.start < header.end
            && (header.kind == Kind::Release || header.end - header.start <= MAX_BLOCK_EVENTS);
        plausible.then_some(header)
    }

    /// True when the stored checksum matches these header bytes and `payload`.
    pub(super) fn verify(bytes: &[u8; HEADER_BYTES], payload: &[u8]) -> bool {
        let stored = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
        stored == checksum(&bytes[4..], payload)
    }

    pub(super) fn block_bytes(&self) -> u64 {
        HEADER_BYTES as u64 + u64::from(self.len)
    }

    /// The true header of a block that fails its checksum because exactly one of its bits
    /// flipped, in the header (its length included) or the payload; `bytes` runs from the
    /// block's start to (at most) the end of the file. `None` when no single flipped bit
    /// explains it: a torn write, or wider damage.
    ///
    /// A flip outside the length field is located from the checksum alone: CRC-32 is linear,
    /// so flipping bit `j` of an `n`-bit message changes it by a value that depends only on
    /// `n - j` (its syndrome), and for messages up to 91,607 bits no two positions share one
    /// (Hamming distance 3), so the position is unique. A flip in the length is found by
    /// trying the 32 lengths one bit away. A block that is not damaged matches neither
    /// (checked by the caller first).
    pub(super) fn repair(bytes: &[u8]) -> Option<Header> {
        let header: [u8; HEADER_BYTES] = bytes.get(..HEADER_BYTES)?.try_into().expect("header length");
        let stored_len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        for bit in 0..32 {
            let mut fixed = header;
            fixed[4..8].copy_from_slice(&(stored_len ^ (1 << bit)).to_le_bytes());
            if let Some(fixed_header) = Header::decode(&fixed)
                && let Some(payload) = bytes.get(HEADER_BYTES..fixed_header.block_bytes() as usize)
                && Header::verify(&fixed, payload)
            {
                return Some(fixed_header);
            }
        }
        let payload = bytes.get(HEADER_BYTES..HEADER_BYTES.checked_add(stored_len as usize)?)?;
        let stored = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let syndrome = stored ^ checksum(&header[4..], payload);
        if syndrome.count_ones() == 1 {
            // The flip is in the stored checksum itself.
            return Header::decode(&header).filter(|found| found.len == stored_len);
        }
        let message_bits = (HEADER_BYTES - 4 + payload.len()) * 8;
        let flipped = flipped_bit(syndrome, message_bits)?;
        let mut fixed = header;
        if flipped < (HEADER_BYTES - 4) * 8 {
            fixed[4 + flipped / 8] ^= 1 << (flipped % 8);
        }
        // A flip in the length would have changed the payload's extent: found above.
        Header::decode(&fixed).filter(|found| found.len == stored_len)
    }
}

/// The bit (from the message's start, least significant bit of each byte first, as CRC-32
/// reads them) whose flip changes the checksum of an `message_bits`-bit message by
/// `syndrome`, if one does.
fn flipped_bit(syndrome: u32, message_bits: usize) -> Option<usize> {
    // The syndrome of the bit with `after` bits following it is the reflected CRC register,
    // started at 1, stepped `after + 1` times over zero bits.
    let mut register = 1u32;
    for after in 0..message_bits {
        register = if register & 1 == 1 { (register >> 1) ^ 0xEDB8_8320 } else { register >> 1 };
        if register == syndrome {
            return Some(message_bits - 1 - after);
        }
    }
    None
}

fn checksum(header_rest: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header_rest);
    hasher.update(payload);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_and_any_flipped_bit_is_caught() {
        let header =
            Header { len: 3, kind: Kind::Events, commit_end: true, stream: 7, epoch: 1 << 40, start: 10, end: 13 };
        let payload = [1u8, 2, 3];
        let bytes = header.encode(&payload);
        assert_eq!(Header::decode(&bytes), Some(header));
        assert!(Header::verify(&bytes, &payload));
        for bit in 0..HEADER_BYTES * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            let caught = Header::decode(&flipped).is_none() || !Header::verify(&flipped, &payload);
            assert!(caught, "bit {bit} flipped unnoticed");
        }
        assert!(!Header::verify(&bytes, &[1, 2, 4]));
        assert_eq!(Header::decode(&[0u8; HEADER_BYTES]), None, "zeros are not a block");
    }

    #[test]
    fn any_single_flipped_bit_is_repaired_and_a_torn_block_is_not() {
        let header = Header {
            len: 200,
            kind: Kind::Events,
            commit_end: true,
            stream: 3,
            epoch: 9 << 32 | 1,
            start: 64,
            end: 100,
        };
        let payload: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut block = header.encode(&payload).to_vec();
        block.extend_from_slice(&payload);
        assert_eq!(Header::repair(&block), None, "an intact block has nothing to repair");
        for bit in 0..block.len() * 8 {
            let mut flipped = block.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            // More bytes after the block (the next one) change nothing.
            flipped.extend_from_slice(&[0xA5; 300]);
            assert_eq!(Header::repair(&flipped), Some(header), "bit {bit}");
        }
        // Torn: a prefix of the block, alone or followed by the zeros of a file that grew.
        for keep in [0, 10, HEADER_BYTES, HEADER_BYTES + 1, HEADER_BYTES + 150, block.len() - 1] {
            assert_eq!(Header::repair(&block[..keep]), None, "{keep} bytes kept");
            let mut zeros = block[..keep].to_vec();
            zeros.resize(block.len() + 4096, 0);
            assert_eq!(Header::repair(&zeros), None, "{keep} bytes kept, then zeros");
        }
    }
}
