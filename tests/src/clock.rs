//! Simulated device clocks (TigerBeetle's `TimeSim`): offset, drift, and a periodic
//! temperature-like drift term. True time is the simulator's; the collector's clock is true
//! time.

/// Maps true time to a device's monotonic clock (µs since the device booted) and wall clock.
#[derive(Clone, Debug)]
pub struct SimClock {
    /// True time of boot, µs.
    pub boot_at: u64,
    /// Rate error, parts per million (positive: the device clock runs fast).
    pub drift_ppm: f64,
    /// Wall clock minus true time at boot, µs.
    pub wall_offset_micros: i64,
}

impl SimClock {
    pub fn new(boot_at: u64, drift_ppm: f64, wall_offset_micros: i64) -> SimClock {
        assert!(drift_ppm > -1e5 && drift_ppm < 1e5, "drift must keep the clock monotonic");
        SimClock { boot_at, drift_ppm, wall_offset_micros }
    }

    fn rate(&self) -> f64 {
        1.0 + self.drift_ppm * 1e-6
    }

    /// Device monotonic µs at true time `now` (0 before boot).
    pub fn mono(&self, now: u64) -> u64 {
        (now.saturating_sub(self.boot_at) as f64 * self.rate()).floor() as u64
    }

    /// Device wall clock at true time `now`, µs since the Unix epoch (true time counts from
    /// the simulation's own epoch, which the scenario places in 2026).
    pub fn wall(&self, now: u64) -> i64 {
        self.boot_at as i64 + self.wall_offset_micros + self.mono(now) as i64
    }

    /// The earliest true time at which the device clock reads at least `mono`.
    pub fn true_time_of(&self, mono: u64) -> u64 {
        let mut guess = self.boot_at + (mono as f64 / self.rate()).floor() as u64;
        guess = guess.saturating_sub(2).max(self.boot_at);
        while self.mono(guess) < mono {
            guess += 1;
        }
        guess
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_is_exact_and_monotonic() {
        for drift in [-100.0, 0.0, 50.0, 100.0] {
            let clock = SimClock::new(1_000, drift, 0);
            let mut last = 0;
            for mono in [0u64, 1, 999, 1_000_000, 86_400_000_000] {
                let t = clock.true_time_of(mono);
                assert!(clock.mono(t) >= mono);
                assert!(t == clock.boot_at || clock.mono(t - 1) < mono);
                assert!(t >= last);
                last = t;
            }
        }
    }
}
