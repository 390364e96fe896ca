//! Per-device pre-shared keys and the frame MAC.
//!
//! BLAKE2s in keyed mode (RFC 7693), truncated to 128 bits. A MAC, not an AEAD: telemetry is
//! authenticated but not encrypted, and a MAC has no nonce that a device which lost its boot
//! counter could reuse (ChaCha20-Poly1305 would leak its one-time key on nonce reuse).

use super::{EncodeError, FrameKind, Header};
use crate::{Epoch, Instant, KeyId};
use blake2::Blake2sMac;
use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Mac};

pub const MAC_BYTES: usize = 16;

/// A 32-byte pre-shared key, kept as a keyed BLAKE2s state so that each frame costs one
/// clone instead of an extra compression of the key block.
#[derive(Clone)]
pub struct MacKey {
    keyed: Blake2sMac<U16>,
}

impl MacKey {
    pub fn new(secret: &[u8; 32]) -> MacKey {
        // Cannot fail: BLAKE2s accepts keys of 1 to 32 bytes.
        let keyed = <Blake2sMac<U16> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
        MacKey { keyed }
    }

    pub(crate) fn tag(&self, bytes: &[u8]) -> [u8; MAC_BYTES] {
        let mut mac = self.keyed.clone();
        Mac::update(&mut mac, bytes);
        mac.finalize_fixed().into()
    }

    /// Constant-time comparison of the tag at the end of `datagram`.
    pub(crate) fn verify(&self, covered: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.keyed.clone();
        Mac::update(&mut mac, covered);
        mac.verify_slice(tag).is_ok()
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
