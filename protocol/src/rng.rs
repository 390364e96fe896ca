//! A tiny seeded generator for protocol jitter (NAK back-off).
//!
//! Determinism matters more than quality here: the simulator replays a run from its seed, so
//! every random choice the protocol makes comes from a generator the caller seeded.

/// SplitMix64 (Steele, Lea, Flood 2014): 64 bits of state, passes BigCrush, no dependencies.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, bound]` (inclusive); `bound = 0` returns 0.
    pub fn below_inclusive(&mut self, bound: u64) -> u64 {
        if bound == u64::MAX {
            return self.next_u64();
        }
        // Multiply-shift (Lemire) without the rejection step: the bias is below 2^-40 for the
        // bounds used here (microsecond delays), which is irrelevant for jitter.
        ((u128::from(self.next_u64()) * u128::from(bound + 1)) >> 64) as u64
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
