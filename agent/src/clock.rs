//! The device clocks every event is stamped with when it enters the agent.
//!
//! Monotonic time is `CLOCK_BOOTTIME` (keeps counting through suspend, unlike
//! `CLOCK_MONOTONIC`), in µs since boot: the protocol's device `Instant`. Wall time is the
//! system clock with a quality flag; the agent never rewrites either, correction is the
//! collector's job.

use driftlog_protocol::{ClockQuality, Instant, WallTime};
use nix::time::{ClockId, clock_gettime};
use std::path::Path;

/// Device monotonic time since boot.
pub fn mono_now() -> Instant {
    // CLOCK_BOOTTIME exists on every Linux since 2.6.39; failing would mean no clock at all.
    let spec = clock_gettime(ClockId::CLOCK_BOOTTIME).unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
    let micros = (spec.tv_sec() as u64).saturating_mul(1_000_000) + spec.tv_nsec() as u64 / 1_000;
    Instant::from_micros(micros)
}

/// Wall-clock time and whether an external reference disciplines it.
pub fn wall_now() -> WallTime {
    let unix_micros = match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_micros()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
    };
    WallTime { unix_micros, quality: wall_quality() }
}

/// systemd-timesyncd touches this file once it has synchronised; chrony and ntpd users can
/// create it from a hook. Without it the wall clock is reported as unsynchronised, which
/// only makes the collector trust it less.
const SYNCHRONIZED_MARKER: &str = "/run/systemd/timesync/synchronized";

fn wall_quality() -> ClockQuality {
    if Path::new(SYNCHRONIZED_MARKER).exists() { ClockQuality::Synchronized } else { ClockQuality::Unsynchronized }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_advances_and_wall_time_is_plausible() {
        let a = mono_now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = mono_now();
        assert!(b.as_micros() >= a.as_micros() + 2_000);
        assert!(wall_now().unix_micros > 1_700_000_000_000_000);
    }
}

/// Where the driver and inputs read time from. The real agent uses [`SystemClock`]; the
/// `simulate` command gives each virtual device a [`SkewedClock`].
pub trait Clock: Send + Sync + 'static {
    fn mono(&self) -> Instant;
    fn wall(&self) -> WallTime;
}

/// The host's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn mono(&self) -> Instant {
        mono_now()
    }

    fn wall(&self) -> WallTime {
        wall_now()
    }
}

/// A device clock that is off by a fixed offset and runs fast or slow by `drift_ppm`, both
/// relative to the host's clocks since the clock was created. For load tests and demos of
/// the collector's skew correction.
#[derive(Clone, Copy, Debug)]
pub struct SkewedClock {
    start_mono: Instant,
    offset_micros: i64,
    drift_ppm: f64,
}

impl SkewedClock {
    pub fn new(offset_micros: i64, drift_ppm: f64) -> SkewedClock {
        SkewedClock { start_mono: mono_now(), offset_micros, drift_ppm }
    }

    fn drift_micros(&self) -> i64 {
        let elapsed = mono_now().as_micros().saturating_sub(self.start_mono.as_micros()) as f64;
        (elapsed * self.drift_ppm * 1e-6) as i64
    }
}

impl Clock for SkewedClock {
    fn mono(&self) -> Instant {
        // Drift applies to the monotonic clock too: that is what a cheap oscillator does.
        Instant::from_micros(mono_now().as_micros().saturating_add_signed(self.drift_micros()))
    }

    fn wall(&self) -> WallTime {
        let wall = wall_now();
        WallTime {
            unix_micros: wall.unix_micros + self.offset_micros + self.drift_micros(),
            quality: ClockQuality::Unsynchronized,
        }
    }
}
