//! Four-timestamp samples from acknowledgements (`time-and-windows.md` §3.2 and §3.3 item 2)
//! and the NTP-style register that keeps the last few.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::bound::{Bound, BoundSide};

/// Why a four-timestamp sample was refused. Refused samples are counted, never fatal: they
/// come from the network and a device with a broken clock must not take the collector down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum SampleRejected {
    /// T4 < T1: the device received the ack before sending what it acknowledges.
    #[error("device clock went backwards between send and ack receipt (T4 < T1)")]
    DeviceClockBackwards,
    /// T3 < T2: the collector sent the ack before receiving the batch.
    #[error("collector clock went backwards between receipt and ack (T3 < T2)")]
    CollectorClockBackwards,
    /// δ < 0: the round trip was shorter than the collector's own processing time, which is
    /// only possible when the two clocks run at wildly different rates.
    #[error("round-trip delay is negative")]
    NegativeDelay,
    /// A device time beyond i64::MAX or an offset that does not fit in i64: not a real clock.
    #[error("timestamp out of range")]
    OutOfRange,
    /// T4 is further ahead of the newest device time than collector time has advanced since
    /// (plus drift and `future_tolerance_us`): a corrupt stamp, which would otherwise become
    /// the model's "now".
    #[error("device time jumped further ahead than collector time")]
    DeviceTimeJump,
}

impl SampleRejected {
    /// The snake_case name used as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            SampleRejected::DeviceClockBackwards => "device_clock_backwards",
            SampleRejected::CollectorClockBackwards => "collector_clock_backwards",
            SampleRejected::NegativeDelay => "negative_delay",
            SampleRejected::OutOfRange => "out_of_range",
            SampleRejected::DeviceTimeJump => "device_time_jump",
        }
    }
}

/// A validated `(T1, T2, T3, T4)` exchange.
///
/// Rather than only `θ = ((T2-T1)+(T3-T4))/2` at the midpoint, it is kept as its two legs:
/// `T2 - T1 = offset(T1) + d_up` bounds the offset from above at device time T1, and
/// `T3 - T4 = offset(T4) - d_down` bounds it from below at T4. With one exchange the midpoint
/// of the two is exactly θ and their half-distance δ/2; with several, intersecting the intervals
/// is never worse than taking the least-delay one alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Exchange {
    /// T1: device send time (µs since boot).
    pub(crate) sent_device_us: u64,
    /// T2 - T1: the up leg, an upper bound of the offset at T1.
    pub(crate) up_offset_us: i64,
    /// T4: device receive time (µs since boot).
    pub(crate) received_device_us: u64,
    /// T3 - T4: the down leg, a lower bound of the offset at T4.
    pub(crate) down_offset_us: i64,
}

impl Exchange {
    pub(crate) fn new(
        t1_device_us: u64,
        t2_unix_us: i64,
        t3_unix_us: i64,
        t4_device_us: u64,
    ) -> Result<Exchange, SampleRejected> {
        if t4_device_us < t1_device_us {
            return Err(SampleRejected::DeviceClockBackwards);
        }
        if t3_unix_us < t2_unix_us {
            return Err(SampleRejected::CollectorClockBackwards);
        }
        let up = i128::from(t2_unix_us) - i128::from(t1_device_us);
        let down = i128::from(t3_unix_us) - i128::from(t4_device_us);
        // δ = (T4-T1) - (T3-T2) = up - down.
        if up < down {
            return Err(SampleRejected::NegativeDelay);
        }
        let in_range = |device_us: u64| i64::try_from(device_us).is_ok();
        match (i64::try_from(up), i64::try_from(down)) {
            (Ok(up_offset_us), Ok(down_offset_us)) if in_range(t1_device_us) && in_range(t4_device_us) => {
                Ok(Exchange {
                    sent_device_us: t1_device_us,
                    up_offset_us,
                    received_device_us: t4_device_us,
                    down_offset_us,
                })
            }
            _ => Err(SampleRejected::OutOfRange),
        }
    }

    /// δ, the round trip minus the collector's turnaround, µs.
    pub(crate) fn delay_us(&self) -> u64 {
        // Both legs fit in i64 and up >= down, so the difference fits in u64.
        self.up_offset_us.abs_diff(self.down_offset_us)
    }

    /// Midpoint of the device-side stamps, where θ is the offset estimate.
    pub(crate) fn midpoint_device_us(&self) -> u64 {
        self.sent_device_us + (self.received_device_us - self.sent_device_us) / 2
    }

    /// 2θ = (T2-T1) + (T3-T4), kept doubled so the half µs of vector C1 is exact.
    pub(crate) fn offset_x2_us(&self) -> i128 {
        i128::from(self.up_offset_us) + i128::from(self.down_offset_us)
    }

    pub(crate) fn upper(&self) -> Bound {
        Bound { device_us: self.sent_device_us, offset_us: self.up_offset_us, side: BoundSide::Upper }
    }

    pub(crate) fn lower(&self) -> Bound {
        Bound { device_us: self.received_device_us, offset_us: self.down_offset_us, side: BoundSide::Lower }
    }
}

/// The last `exchange_samples` exchanges in arrival order: NTP's clock-filter shift register.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ExchangeRegister {
    samples: VecDeque<Exchange>,
}

impl ExchangeRegister {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        ExchangeRegister { samples: VecDeque::with_capacity(capacity) }
    }

    pub(crate) fn push(&mut self, capacity: usize, exchange: Exchange) {
        while self.samples.len() >= capacity.max(1) {
            self.samples.pop_front();
        }
        self.samples.push_back(exchange);
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Exchange> {
        self.samples.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }

    /// The least-delay sample: the one the NTP clock filter would pick, since offset error
    /// grows with delay (the "wedge" scattergram).
    pub(crate) fn least_delay(&self) -> Option<&Exchange> {
        self.samples.iter().min_by_key(|exchange| exchange.delay_us())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_c1_ack_of_m2() {
        let exchange = Exchange::new(2300, 2020, 2021, 2346).unwrap();
        assert_eq!(exchange.offset_x2_us(), -605);
        assert_eq!(exchange.delay_us(), 45);
        assert_eq!(exchange.upper().offset_us, -280);
        assert_eq!(exchange.lower().offset_us, -325);
    }

    #[test]
    fn inconsistent_samples_are_rejected() {
        assert_eq!(Exchange::new(10, 0, 0, 9), Err(SampleRejected::DeviceClockBackwards));
        assert_eq!(Exchange::new(10, 5, 4, 20), Err(SampleRejected::CollectorClockBackwards));
        // Round trip of 10 with 11 spent at the collector.
        assert_eq!(Exchange::new(10, 100, 111, 20), Err(SampleRejected::NegativeDelay));
        assert_eq!(Exchange::new(u64::MAX - 1, 0, 0, u64::MAX), Err(SampleRejected::OutOfRange));
        assert_eq!(Exchange::new(0, i64::MIN, i64::MIN, i64::MAX as u64), Err(SampleRejected::OutOfRange));
    }

    #[test]
    fn register_keeps_the_last_samples_and_picks_least_delay() {
        let mut register = ExchangeRegister::default();
        for delay in [10, 50, 30, 40] {
            register.push(3, Exchange::new(0, 0, 0, delay).unwrap());
        }
        assert_eq!(register.len(), 3);
        assert_eq!(register.least_delay().map(Exchange::delay_us), Some(30));
    }
}
