//! Time as the protocol sees it. Nothing here reads a clock: callers pass `now` in.

use core::ops::{Add, Sub};
use core::time::Duration;
use serde::{Deserialize, Serialize};

/// A point on a monotonic clock, in microseconds since an arbitrary origin.
///
/// On a device the origin is boot (so an `Instant` is "monotonic ticks since boot" in
/// microseconds); on the collector it is the process's own monotonic origin. Instants from
/// different clocks must never be compared: the collector's skew estimator maps between them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Instant(u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);

    pub const fn from_micros(micros: u64) -> Instant {
        Instant(micros)
    }

    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// `self - earlier`, or zero when `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    pub fn checked_duration_since(self, earlier: Instant) -> Option<Duration> {
        self.0.checked_sub(earlier.0).map(Duration::from_micros)
    }

    /// `self - earlier` in µs, or zero when `earlier` is later. The sender's timers work in
    /// µs: `Duration` arithmetic is a library call per step on a 32-bit microcontroller.
    pub const fn saturating_micros_since(self, earlier: Instant) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// `self + micros`, saturating at `u64::MAX` like `+ Duration`.
    pub const fn saturating_add_micros(self, micros: u64) -> Instant {
        Instant(self.0.saturating_add(micros))
    }
}

/// A duration in whole microseconds (rounded down), saturating at `u64::MAX`: without the
/// 128-bit `Duration::as_micros`.
pub(crate) const fn duration_micros(duration: Duration) -> u64 {
    duration.as_secs().saturating_mul(1_000_000).saturating_add(duration.subsec_micros() as u64)
}

/// Saturates at `u64::MAX` microseconds (half a million years), so deadlines never wrap.
impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        self.saturating_add_micros(duration_micros(rhs))
    }
}

/// Saturates at zero.
impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_sub(duration_micros(rhs)))
    }
}

/// Whether a device's wall clock was synchronised (NTP, GPS, RTC set by an operator) when it
/// stamped an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClockQuality {
    /// Free-running since boot or never set: treat as a hint only.
    Unsynchronized,
    /// Disciplined by an external reference.
    Synchronized,
}

/// Wall-clock time as the device believed it, microseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WallTime {
    /// May be negative: a device with a reset RTC can claim 1969.
    pub unix_micros: i64,
    pub quality: ClockQuality,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_micros_matches_as_micros_and_saturates() {
        let mut rng = crate::SplitMix64::new(11);
        for _ in 0..10_000 {
            let secs = rng.next_u64() >> (rng.next_u64() % 64);
            let nanos = (rng.next_u64() % 1_000_000_000) as u32;
            let duration = Duration::new(secs, nanos);
            let expected = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
            assert_eq!(duration_micros(duration), expected, "{duration:?}");
            let at = Instant::from_micros(rng.next_u64());
            assert_eq!(at + duration, Instant::from_micros(at.as_micros().saturating_add(expected)));
            assert_eq!(at - duration, Instant::from_micros(at.as_micros().saturating_sub(expected)));
        }
        assert_eq!(duration_micros(Duration::MAX), u64::MAX);
        assert_eq!(duration_micros(Duration::from_nanos(1_999)), 1);
    }
}
