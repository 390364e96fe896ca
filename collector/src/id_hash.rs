//! A one-multiply hasher for maps keyed by ids (device, stream, epoch) on the per-datagram
//! path, where SipHash was a visible share of the acceptor's time.
//!
//! Not resistant to chosen collisions, so only for maps whose keys come from authenticated
//! frames: forging a colliding key takes a device's secret.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The 64-bit multiplier of FxHash (rustc's hasher): odd, with well spread bits, so the high
/// bits hashbrown uses for its control bytes depend on every input bit.
const MULTIPLIER: u64 = 0xf135_7aea_2e62_a9c5;

#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(MULTIPLIER);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` hashed with [`IdHasher`].
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_the_high_bits() {
        // hashbrown picks buckets from the low bits and tags from the top 7: both must vary.
        let hashes: Vec<u64> = (0u64..1024)
            .map(|id| {
                let mut hasher = IdHasher::default();
                hasher.write_u64(id);
                hasher.write_u32(1);
                hasher.finish()
            })
            .collect();
        let tags: std::collections::BTreeSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        let buckets: std::collections::BTreeSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        assert_eq!(tags.len(), 128);
        assert!(buckets.len() > 600, "{} of 1024 buckets used", buckets.len());
    }
}
