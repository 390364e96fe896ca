//! Round-trip estimation and retransmission timeout, RFC 6298 style.

use core::time::Duration;

#[derive(Clone, Copy, Debug)]
pub(crate) struct RttEstimator {
    smoothed: Option<Duration>,
    variance: Duration,
    latest: Duration,
    initial: Duration,
}

impl RttEstimator {
    pub(crate) fn new(initial: Duration) -> RttEstimator {
        RttEstimator { smoothed: None, variance: initial / 2, latest: initial, initial }
    }

    pub(crate) fn update(&mut self, sample: Duration) {
        self.latest = sample;
        match self.smoothed {
            None => {
                self.smoothed = Some(sample);
                self.variance = sample / 2;
            }
            Some(smoothed) => {
                let deviation = smoothed.abs_diff(sample);
                self.variance = (self.variance * 3 + deviation) / 4;
                self.smoothed = Some((smoothed * 7 + sample) / 8);
            }
        }
    }

    pub(crate) fn smoothed(&self) -> Duration {
        self.smoothed.unwrap_or(self.initial)
    }

    pub(crate) fn latest(&self) -> Duration {
        self.latest
    }

    /// `srtt + max(granularity, 4 * rttvar)`, before back-off and peer ACK delay.
    pub(crate) fn base_timeout(&self) -> Duration {
        self.smoothed() + (self.variance * 4).max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_towards_samples() {
        let mut rtt = RttEstimator::new(Duration::from_millis(500));
        rtt.update(Duration::from_millis(100));
        assert_eq!(rtt.smoothed(), Duration::from_millis(100));
        for _ in 0..50 {
            rtt.update(Duration::from_millis(20));
        }
        assert!(rtt.smoothed() < Duration::from_millis(21));
        assert!(rtt.base_timeout() < Duration::from_millis(30));
    }
}
