//! The collector's wall clock: the only place ingest reads the system time.
//!
//! The acceptor's driver reads [`AcceptorClock::now`] once per batch and hands that one value
//! to the ingest core, which uses it as the frames' receive time in the log and the clock
//! models (t3 of the one-way samples) *and* as the ACKs' `received_at` (t2 of the
//! four-timestamp exchange): the device's offset estimate and the collector's records then
//! stay on one scale, also across a step of the system clock.

use driftlog_protocol::Instant;

/// Milliseconds since 1970 by the system clock (0 before 1970).
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Microseconds since 1970 by the system clock (0 before 1970).
pub fn now_unix_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Collector Unix time in µs as the protocol's [`Instant`], never going backwards.
///
/// A forward step of the system clock (NTP setting a gateway that booted without a real-time
/// clock) is followed at once; after a backward step the clock holds still until the system
/// clock passes it again, so the endpoint's timers and the order of receive times hold.
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptorClock {
    last: u64,
}

impl AcceptorClock {
    pub fn now(&mut self) -> Instant {
        self.last = self.last.max(now_unix_us().max(0) as u64);
        Instant::from_micros(self.last)
    }
}
