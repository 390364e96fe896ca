//! Per-device pre-shared keys and the frame MAC.
//!
//! BLAKE2s in keyed mode (RFC 7693), truncated to 128 bits. A MAC, not an AEAD: telemetry is
//! authenticated but not encrypted, and a MAC has no nonce that a device which lost its boot
//! counter could reuse (ChaCha20-Poly1305 would leak its one-time key on nonce reuse).

use super::blake2s::{self, KEY_BYTES, TAG_BYTES};
use super::{EncodeError, FrameKind, Header};
use crate::{Epoch, Instant, KeyId};

pub const MAC_BYTES: usize = TAG_BYTES;

/// A 32-byte pre-shared key, kept as the BLAKE2s state after its key block, so a frame costs
/// the compressions of its own blocks only: a keyed BLAKE2s of a 100-byte frame is three
/// compressions, and the first (the zero-padded key) is the same for every frame.
#[derive(Clone)]
pub struct MacKey {
    /// The state with the key block compressed as a non-final block: valid for any
    /// non-empty message.
    after_key: blake2s::State,
    /// RFC 7693's keyed mode for the empty message, whose final block is the key block
    /// itself.
    empty_message_tag: [u8; MAC_BYTES],
}

impl MacKey {
    pub fn new(secret: &[u8; KEY_BYTES]) -> MacKey {
        MacKey { after_key: blake2s::State::after_key(secret), empty_message_tag: blake2s::empty_message_tag(secret) }
    }

    pub(crate) fn tag(&self, bytes: &[u8]) -> [u8; MAC_BYTES] {
        if bytes.is_empty() {
            return self.empty_message_tag;
        }
        self.after_key.clone().tag(bytes)
    }

    /// Constant-time comparison of the tag at the end of `datagram`.
    pub(crate) fn verify(&self, covered: &[u8], tag: &[u8]) -> bool {
        let Ok(given) = <[u8; MAC_BYTES]>::try_from(tag) else { return false };
        // Constant time: the two tags are XORed whole as one 128-bit value, and `black_box`
        // keeps the compiler from turning the test of the difference back into a
        // byte-by-byte comparison that stops at the first mismatch. (`subtle`, which
        // `CtOutput` uses, does the same with a volatile read per byte: 16 times the work on
        // every datagram.)
        let difference = u128::from_ne_bytes(self.tag(covered)) ^ u128::from_ne_bytes(given);
        core::hint::black_box(difference) == 0
    }
}

impl core::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

/// The sending half of authentication for one key and boot epoch: stamps strictly increasing
/// `sent_at` values and appends tags.
#[derive(Clone, Debug)]
pub struct Sealer {
    key_id: KeyId,
    key: MacKey,
    epoch: Epoch,
    last_sent_at: Option<Instant>,
}

impl Sealer {
    pub fn new(key_id: KeyId, key: MacKey, epoch: Epoch) -> Sealer {
        Sealer { key_id, key, epoch, last_sent_at: None }
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// A header for a frame sent at `now`. `sent_at` is bumped by 1 µs when `now` did not
    /// advance, because the receiver's replay window needs every value to be unique.
    pub fn header(&mut self, kind: FrameKind, now: Instant) -> Header {
        let sent_at = match self.last_sent_at {
            Some(last) if now <= last => Instant::from_micros(last.as_micros().saturating_add(1)),
            _ => now,
        };
        self.last_sent_at = Some(sent_at);
        Header { kind, key_id: self.key_id, epoch: self.epoch, sent_at }
    }

    /// Appends the tag over `buf[..len]`; returns the datagram length.
    pub fn seal(&self, buf: &mut [u8], len: usize) -> Result<usize, EncodeError> {
        let end = len.checked_add(MAC_BYTES).ok_or(EncodeError::BufferTooSmall)?;
        if end > buf.len() {
            return Err(EncodeError::BufferTooSmall);
        }
        let tag = self.key.tag(&buf[..len]);
        buf[len..end].copy_from_slice(&tag);
        Ok(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blake2::Blake2sMac;
    use blake2::digest::consts::U16;
    use blake2::digest::{FixedOutput, KeyInit, Mac};

    /// The precomputed key block changes nothing: every length, including the empty message
    /// and exact multiples of the 64-byte block, gives RFC 7693's keyed BLAKE2s-128.
    #[test]
    fn tags_equal_keyed_blake2s_for_every_length() {
        let secret: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        let key = MacKey::new(&secret);
        let message: [u8; 300] = core::array::from_fn(|i| (i as u8).wrapping_mul(101));
        for len in 0..=message.len() {
            let mut reference = <Blake2sMac<U16> as KeyInit>::new_from_slice(&secret).unwrap();
            Mac::update(&mut reference, &message[..len]);
            let expected: [u8; MAC_BYTES] = reference.finalize_fixed().into();
            assert_eq!(key.tag(&message[..len]), expected, "length {len}");
            assert!(key.verify(&message[..len], &expected));
            let mut wrong = expected;
            wrong[len % MAC_BYTES] ^= 1;
            assert!(!key.verify(&message[..len], &wrong));
            assert!(!key.verify(&message[..len], &expected[..MAC_BYTES - 1]));
        }
    }

    /// Fixed values from a third implementation (CPython's `hashlib.blake2s(message,
    /// key=bytes(range(32)), digest_size=16)`), for whichever BLAKE2s the build uses (see
    /// `blake2s.rs`): the empty message (the key block is the final block), one partial block,
    /// and four full blocks (the last one compressed as the final block).
    #[test]
    fn known_tags_from_a_third_implementation() {
        let key = MacKey::new(&core::array::from_fn(|i| i as u8));
        let all_bytes: [u8; 256] = core::array::from_fn(|i| i as u8);
        for (message, expected) in [
            (&b""[..], "9536f9b267655743dee97b8a670f9f53"),
            (&b"driftlog"[..], "09c484389335063c51d67b5d3a01c427"),
            (&all_bytes[..], "d5a40ec316c751a63cd0d91157fa1ebb"),
        ] {
            let hex: String = key.tag(message).iter().map(|byte| format!("{byte:02x}")).collect();
            assert_eq!(hex, expected, "message of {} bytes", message.len());
        }
    }

    #[test]
    fn a_key_of_the_wrong_secret_does_not_verify() {
        let key = MacKey::new(&[1; 32]);
        let other = MacKey::new(&[2; 32]);
        let tag = key.tag(b"frame bytes");
        assert!(key.verify(b"frame bytes", &tag));
        assert!(!other.verify(b"frame bytes", &tag));
    }
}
