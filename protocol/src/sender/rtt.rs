//! Round-trip estimation and retransmission timeout, RFC 6298 style.
//!
//! In whole microseconds (`u64`), the unit of [`crate::Instant`]: the weights are powers of
//! two, so the arithmetic is shifts and adds, where `core::time::Duration` (seconds plus
//! nanoseconds) would divide by 10^9 and carry between its fields on every step, a library
//! call each on a 32-bit microcontroller.

#[derive(Clone, Copy, Debug)]
pub(crate) struct RttEstimator {
    smoothed_us: Option<u64>,
    variance_us: u64,
    latest_us: u64,
    initial_us: u64,
}

impl RttEstimator {
    pub(crate) fn new(initial_us: u64) -> RttEstimator {
        RttEstimator { smoothed_us: None, variance_us: initial_us / 2, latest_us: initial_us, initial_us }
    }

    pub(crate) fn update(&mut self, sample_us: u64) {
        self.latest_us = sample_us;
        match self.smoothed_us {
            None => {
                self.smoothed_us = Some(sample_us);
                self.variance_us = sample_us / 2;
            }
            Some(smoothed) => {
                let deviation = smoothed.abs_diff(sample_us);
                self.variance_us = blend::<2>(self.variance_us, deviation);
                self.smoothed_us = Some(blend::<3>(smoothed, sample_us));
            }
        }
    }

    pub(crate) fn smoothed_us(&self) -> u64 {
        self.smoothed_us.unwrap_or(self.initial_us)
    }

    pub(crate) fn latest_us(&self) -> u64 {
        self.latest_us
    }

    /// `srtt + max(granularity, 4 * rttvar)`, before back-off and peer ACK delay.
    pub(crate) fn base_timeout_us(&self) -> u64 {
        self.smoothed_us().saturating_add(self.variance_us.saturating_mul(4).max(1_000))
    }
}

/// `((2^SHIFT - 1) * old + new) / 2^SHIFT`, rounded down, exact for every `u64` input: with
/// `old = 2^SHIFT * a + b` and `new = 2^SHIFT * c + d`, it is
/// `(2^SHIFT - 1) * a + c + ((2^SHIFT - 1) * b + d) / 2^SHIFT`, and no term overflows.
fn blend<const SHIFT: u32>(old: u64, new: u64) -> u64 {
    let mask = (1u64 << SHIFT) - 1;
    let (a, b, c, d) = (old >> SHIFT, old & mask, new >> SHIFT, new & mask);
    mask * a + c + ((mask * b + d) >> SHIFT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_towards_samples() {
        let mut rtt = RttEstimator::new(500_000);
        rtt.update(100_000);
        assert_eq!(rtt.smoothed_us(), 100_000);
        for _ in 0..50 {
            rtt.update(20_000);
        }
        assert!(rtt.smoothed_us() < 21_000);
        assert!(rtt.base_timeout_us() < 30_000);
    }

    #[test]
    fn rfc_6298_weights() {
        let mut rtt = RttEstimator::new(100_000);
        rtt.update(80_000);
        assert_eq!((rtt.smoothed_us(), rtt.variance_us), (80_000, 40_000));
        rtt.update(160_000);
        // rttvar = 3/4 * 40 000 + 1/4 * |80 000 - 160 000|; srtt = 7/8 * 80 000 + 1/8 * 160 000.
        assert_eq!((rtt.smoothed_us(), rtt.variance_us, rtt.latest_us()), (90_000, 50_000, 160_000));
        assert_eq!(rtt.base_timeout_us(), 290_000);
    }

    #[test]
    fn blend_is_exact_for_every_input() {
        let mut rng = crate::SplitMix64::new(7);
        let edges = [0, 1, 7, 8, 9, u64::MAX - 8, u64::MAX - 1, u64::MAX];
        for round in 0..20_000 {
            let pick = |rng: &mut crate::SplitMix64| {
                let value = rng.next_u64();
                if round % 4 == 0 { edges[(value % edges.len() as u64) as usize] } else { value >> (value % 64) }
            };
            let (old, new) = (pick(&mut rng), pick(&mut rng));
            let expected = |shift: u32| ((((1u128 << shift) - 1) * u128::from(old) + u128::from(new)) >> shift) as u64;
            assert_eq!(blend::<2>(old, new), expected(2), "old {old} new {new}");
            assert_eq!(blend::<3>(old, new), expected(3), "old {old} new {new}");
        }
    }

    #[test]
    fn huge_samples_do_not_overflow() {
        let mut rtt = RttEstimator::new(u64::MAX);
        rtt.update(u64::MAX);
        rtt.update(u64::MAX - 1);
        assert_eq!(rtt.smoothed_us(), u64::MAX - 1);
        assert_eq!(rtt.base_timeout_us(), u64::MAX);
    }
}
