//! Device clock models: map a device's monotonic clock to collector Unix time
//! (`time-and-windows.md` §3).
//!
//! The three-timestamp method (DDIA ch. 11) corrects an event stamped `t1` on the device, in a
//! batch sealed at `t2` and received at `t3`, to `t1 + (t3 - t2)`. Its error is
//! `+d - ρ·b` (§3.1): the batch's one-way delay, always late, minus the drift accumulated while
//! the event was buffered. That is tens of milliseconds online, and seconds after a day offline
//! (1 ppm is 86.4 ms a day; cheap crystals are ±20–100 ppm). [`ClockModel`] improves on it as
//! the design note's §3.3 proposes:
//!
//! 1. **Minimum filter** (`min_filter.rs`): the smallest `t3 - t2` in a sliding window, so the
//!    delay term falls to the least delay, `d_min`.
//! 2. **Four timestamps from acks** (`exchange.rs`): each ack exchange bounds the offset from
//!    below as well as above, as in NTP. Intersecting every exchange interval in the window
//!    (`bound.rs`) generalises NTP's least-delay choice and leaves only the path asymmetry.
//! 3. **Drift by weighted least squares** (`regression.rs`) over a bucketed history
//!    (`history.rs`), favouring low-delay samples as chrony does, pinned to the current offset
//!    so that events buffered through an outage are back-projected along the fitted rate.
//! 4. **Guards** ([`ClockFix::correct`]): an event cannot postdate its own arrival; implausible
//!    times are quarantined and keep their receive time.
//!
//! The model keys on the monotonic clock, so a wall-clock step on the device (NTP, RTC reset)
//! does not affect it; a reboot restarts the clock and the collector starts a new model.
//!
//! Measured on the simulator (`benches/clock_accuracy.rs`): after a day offline at 50 ppm with
//! 50 ± 30 ms one-way delays, backlog events land within about 3 ms (p99) where the
//! three-timestamp method is over 4 s off. What no estimate here removes: the path asymmetry
//! (d_up,min - d_down,min)/2, which no two-way method can see; drift that is not linear
//! (temperature), which an outage is crossed along a chord of; and, in the first
//! `regression_min_span_us` of a boot, the drift itself (up to ρ·window/2 late or early).
//!
//! Everything is a pure function of its inputs, and [`ClockFix`] is integer-only, so replaying
//! the log reproduces every corrected time bit for bit. Every buffer is bounded by
//! [`ClockConfig`].

mod bound;
mod config;
mod corrected;
mod estimate;
mod exchange;
mod fix;
mod history;
mod method;
mod min_filter;
mod model;
mod regression;
mod sorted;

pub use config::{ClockConfig, ClockConfigError};
pub use corrected::{Corrected, Quarantine};
pub use estimate::{ClockStats, Estimate};
pub use exchange::SampleRejected;
pub use fix::ClockFix;
pub use method::Method;
pub use model::ClockModel;
