//! BLAKE2s (RFC 7693) in keyed mode, as much of it as the frame MAC needs: a 32-byte key,
//! a 16-byte tag, no salt or personalisation; two implementations behind one interface
//! (`State::after_key`, `State::tag`, `empty_message_tag`).
//!
//! - `compact`, the crate's own, used without the `fast-mac` feature (the firmware):
//!   RustCrypto's `blake2` unrolls the ten rounds into 4.4 KiB of code (2 KiB with its
//!   `size_opt` feature, plus a 768-byte table of `usize`), an eighth of a 32 KiB flash
//!   budget; this is a loop over the rounds with a byte table, about 0.6 KiB on a Cortex-M3.
//! - `fast`, RustCrypto's `blake2` (feature `fast-mac`, implied by `std`): SIMD-shaped, a
//!   fifth faster on x86-64 (`cargo bench -p driftlog-protocol --bench codec -- mac`).
//!
//! The tests below check the compact one against `blake2` over random keys and messages of
//! every length around the block boundaries, with `fast-mac` on or off; `auth.rs` checks
//! whichever the build uses against `blake2` and against fixed values from a third
//! implementation.

#[cfg(feature = "fast-mac")]
pub(super) use fast::{State, empty_message_tag};

#[cfg(not(feature = "fast-mac"))]
pub(super) use compact::{State, empty_message_tag};

pub(super) const KEY_BYTES: usize = 32;
pub(super) const TAG_BYTES: usize = 16;

#[cfg_attr(feature = "fast-mac", allow(dead_code))]
mod compact {
    use super::{KEY_BYTES, TAG_BYTES};

    const BLOCK_BYTES: usize = 64;

    const IV: [u32; 8] =
        [0x6A09_E667, 0xBB67_AE85, 0x3C6E_F372, 0xA54F_F53A, 0x510E_527F, 0x9B05_688C, 0x1F83_D9AB, 0x5BE0_CD19];

    /// The message schedule of each round (RFC 7693 section 2.7).
    const SIGMA: [[u8; 16]; 10] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
        [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
        [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
        [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
        [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
        [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
        [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
        [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
        [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
    ];

    /// The chaining value between compressions, with the byte count it has absorbed.
    #[derive(Clone)]
    pub(crate) struct State {
        h: [u32; 8],
        bytes: u64,
    }

    impl State {
        /// The state of keyed BLAKE2s with a `KEY_BYTES` key and a `TAG_BYTES` tag, after the
        /// padded key block (which keyed mode puts first) was compressed as a non-final block:
        /// the starting point for every non-empty message.
        pub(crate) fn after_key(secret: &[u8; KEY_BYTES]) -> State {
            let mut state = State::initial();
            state.compress(&key_block(secret), BLOCK_BYTES, false);
            state
        }

        /// Parameter block: digest length, key length, fanout 1, depth 1; the rest zero.
        fn initial() -> State {
            let mut h = IV;
            h[0] ^= 0x0101_0000 ^ ((KEY_BYTES as u32) << 8) ^ TAG_BYTES as u32;
            State { h, bytes: 0 }
        }

        /// The tag of `message`, which must not be empty (see [`empty_message_tag`]). Every block
        /// but the last is compressed as it comes; the last, full or not, is zero-padded and
        /// compressed as the final one.
        pub(crate) fn tag(mut self, message: &[u8]) -> [u8; TAG_BYTES] {
            let mut rest = message;
            while rest.len() > BLOCK_BYTES {
                let (block, tail) = rest.split_at(BLOCK_BYTES);
                let mut full = [0u8; BLOCK_BYTES];
                full.copy_from_slice(block);
                self.compress(&full, BLOCK_BYTES, false);
                rest = tail;
            }
            let mut last = [0u8; BLOCK_BYTES];
            last[..rest.len()].copy_from_slice(rest);
            self.compress(&last, rest.len(), true);
            self.output()
        }

        fn output(&self) -> [u8; TAG_BYTES] {
            let mut tag = [0u8; TAG_BYTES];
            for (bytes, word) in tag.chunks_exact_mut(4).zip(self.h) {
                bytes.copy_from_slice(&word.to_le_bytes());
            }
            tag
        }

        /// The compression function F, after absorbing `len` bytes of `block`.
        fn compress(&mut self, block: &[u8; BLOCK_BYTES], len: usize, last: bool) {
            self.bytes = self.bytes.wrapping_add(len as u64);
            let mut m = [0u32; 16];
            for (word, bytes) in m.iter_mut().zip(block.chunks_exact(4)) {
                *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            }
            let mut v = [0u32; 16];
            v[..8].copy_from_slice(&self.h);
            v[8..].copy_from_slice(&IV);
            v[12] ^= self.bytes as u32;
            v[13] ^= (self.bytes >> 32) as u32;
            if last {
                v[14] = !v[14];
            }
            for s in &SIGMA {
                // `& 15` lets the compiler see every index is in bounds.
                let word = |i: usize| m[usize::from(s[i]) & 15];
                g(&mut v, [0, 4, 8, 12], word(0), word(1));
                g(&mut v, [1, 5, 9, 13], word(2), word(3));
                g(&mut v, [2, 6, 10, 14], word(4), word(5));
                g(&mut v, [3, 7, 11, 15], word(6), word(7));
                g(&mut v, [0, 5, 10, 15], word(8), word(9));
                g(&mut v, [1, 6, 11, 12], word(10), word(11));
                g(&mut v, [2, 7, 8, 13], word(12), word(13));
                g(&mut v, [3, 4, 9, 14], word(14), word(15));
            }
            for (i, h) in self.h.iter_mut().enumerate() {
                *h ^= v[i] ^ v[i + 8];
            }
        }
    }

    /// The mixing function G (RFC 7693 section 3.1) on the four words at `lane`.
    #[inline]
    fn g(v: &mut [u32; 16], lane: [usize; 4], x: u32, y: u32) {
        let (a, b, c, d) = (lane[0] & 15, lane[1] & 15, lane[2] & 15, lane[3] & 15);
        v[a] = v[a].wrapping_add(v[b]).wrapping_add(x);
        v[d] = (v[d] ^ v[a]).rotate_right(16);
        v[c] = v[c].wrapping_add(v[d]);
        v[b] = (v[b] ^ v[c]).rotate_right(12);
        v[a] = v[a].wrapping_add(v[b]).wrapping_add(y);
        v[d] = (v[d] ^ v[a]).rotate_right(8);
        v[c] = v[c].wrapping_add(v[d]);
        v[b] = (v[b] ^ v[c]).rotate_right(7);
    }

    pub(crate) fn key_block(secret: &[u8; KEY_BYTES]) -> [u8; BLOCK_BYTES] {
        let mut block = [0u8; BLOCK_BYTES];
        block[..KEY_BYTES].copy_from_slice(secret);
        block
    }

    /// The tag of the empty message: then the key block itself is the final block.
    pub(crate) fn empty_message_tag(secret: &[u8; KEY_BYTES]) -> [u8; TAG_BYTES] {
        let mut state = State::initial();
        state.compress(&key_block(secret), BLOCK_BYTES, true);
        state.output()
    }
}

#[cfg(feature = "fast-mac")]
mod fast {
    use super::{KEY_BYTES, TAG_BYTES};
    use blake2::Blake2sVarCore;
    use blake2::digest::core_api::{Buffer, UpdateCore, VariableOutputCore};

    #[derive(Clone)]
    pub(crate) struct State(Blake2sVarCore);

    impl State {
        pub(crate) fn after_key(secret: &[u8; KEY_BYTES]) -> State {
            let mut core = Blake2sVarCore::new_with_params(&[], &[], KEY_BYTES, TAG_BYTES);
            core.update_blocks(&[super::compact::key_block(secret).into()]);
            State(core)
        }

        /// See `compact::State::tag`; `message` must not be empty.
        pub(crate) fn tag(mut self, message: &[u8]) -> [u8; TAG_BYTES] {
            // A lazy buffer keeps the last block, full or not, for the finalising compression.
            let mut buffer = Buffer::<Blake2sVarCore>::default();
            buffer.digest_blocks(message, |blocks| self.0.update_blocks(blocks));
            let mut full = Default::default();
            self.0.finalize_variable_core(&mut buffer, &mut full);
            let mut tag = [0u8; TAG_BYTES];
            // BLAKE2 truncates from the left, and the output length is in the parameter block.
            tag.copy_from_slice(&full[..TAG_BYTES]);
            tag
        }
    }

    pub(crate) fn empty_message_tag(secret: &[u8; KEY_BYTES]) -> [u8; TAG_BYTES] {
        super::compact::empty_message_tag(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::{KEY_BYTES, TAG_BYTES, compact};
    use blake2::Blake2sMac;
    use blake2::digest::consts::U16;
    use blake2::digest::{FixedOutput, KeyInit, Mac};
    use proptest::prelude::*;

    fn reference_tag(secret: &[u8; KEY_BYTES], message: &[u8]) -> [u8; TAG_BYTES] {
        let mut mac = <Blake2sMac<U16> as KeyInit>::new_from_slice(secret).unwrap();
        Mac::update(&mut mac, message);
        mac.finalize_fixed().into()
    }

    fn compact_tag(secret: &[u8; KEY_BYTES], message: &[u8]) -> [u8; TAG_BYTES] {
        if message.is_empty() {
            compact::empty_message_tag(secret)
        } else {
            compact::State::after_key(secret).tag(message)
        }
    }

    /// Lengths around 0 and every multiple of the 64-byte block up to 4 blocks, or anything
    /// up to a full datagram.
    fn message() -> impl Strategy<Value = Vec<u8>> {
        let near_a_boundary = (0usize..=4, 0usize..=2, any::<bool>()).prop_map(|(blocks, off, below)| {
            let boundary = blocks * 64;
            if below { boundary.saturating_sub(off) } else { boundary + off }
        });
        prop_oneof![near_a_boundary, 0usize..1_500]
            .prop_flat_map(|len| proptest::collection::vec(any::<u8>(), len..=len))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn compact_tags_equal_rustcrypto_keyed_blake2s_128(secret in any::<[u8; 32]>(), message in message()) {
            prop_assert_eq!(compact_tag(&secret, &message), reference_tag(&secret, &message));
        }
    }

    #[test]
    #[cfg(feature = "fast-mac")]
    fn fast_tags_equal_compact_tags_for_every_length() {
        let secret: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(29).wrapping_add(3));
        let message: [u8; 300] = core::array::from_fn(|i| (i as u8).wrapping_mul(97));
        for len in 1..=message.len() {
            let fast = super::fast::State::after_key(&secret).tag(&message[..len]);
            assert_eq!(fast, compact_tag(&secret, &message[..len]), "length {len}");
        }
    }
}
