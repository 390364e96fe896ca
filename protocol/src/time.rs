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
}

/// Saturates at `u64::MAX` microseconds (half a million years), so deadlines never wrap.
impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        let micros = u64::try_from(rhs.as_micros()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(micros))
    }
}

/// Saturates at zero.
impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, rhs: Duration) -> Instant {
        let micros = u64::try_from(rhs.as_micros()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_sub(micros))
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
