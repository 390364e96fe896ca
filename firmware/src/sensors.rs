//! Sensors behind a trait, so a real driver (an I2C thermometer, an ADC channel, a pulse
//! counter) replaces the simulated ones without touching the agent.

use driftlog_protocol::SplitMix64;

/// How the collector aggregates a channel's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An absolute level (StatsD `g`).
    Gauge,
    /// A count to be summed (StatsD `c`).
    Counter,
}

/// A named series; the ring stores only its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel {
    pub name: &'static str,
    pub kind: Kind,
    /// A reading's raw value counts units of `2^-fraction_bits` (at most 31): a TMP117
    /// counts 1/128 °C (7), a DS18B20 1/16 °C (4), a counter whole events (0).
    pub fraction_bits: u8,
}

impl Channel {
    pub const UNKNOWN: Channel = Channel { name: "unknown", kind: Kind::Gauge, fraction_bits: 0 };

    /// The value a raw reading stands for, as the wire's `f64`.
    ///
    /// Exact, and without soft-float arithmetic (the Cortex-M3 has no FPU, the M4F none for
    /// `f64`, and a soft-float multiply is hundreds of bytes of flash): every `i32` is an
    /// `f64`, and dividing a non-zero one by a power of two only lowers its exponent, which
    /// stays normal for the 31 bits allowed.
    pub fn value(&self, raw: i32) -> f64 {
        if raw == 0 {
            return 0.0;
        }
        let shift = u64::from(self.fraction_bits.min(31));
        f64::from_bits(f64::from(raw).to_bits() - (shift << 52))
    }
}

/// One sample as the ring keeps it: 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// Device monotonic time since boot, µs.
    pub mono_us: u64,
    /// In the channel's units (see [`Channel::fraction_bits`]), as a sensor delivers it.
    pub raw: i32,
    /// Index into the channel table.
    pub channel: u8,
}

impl Reading {
    pub const EMPTY: Reading = Reading { mono_us: 0, raw: 0, channel: 0 };
}

/// A source of readings. `sample` is called every sampling interval with the device's
/// monotonic time; `None` means no reading this time (a sensor busy or failed).
pub trait Sensor {
    fn channel(&self) -> Channel;
    /// The raw value, in units of the channel's `2^-fraction_bits`.
    fn sample(&mut self, now_us: u64) -> Option<i32>;
}

/// A temperature around 21.5 °C that drifts in a slow triangle (a 10-minute period of device
/// time) with about ±0.05 °C of seeded noise, in 1/128 °C like a TMP117.
pub struct SimulatedTemperature {
    noise: SplitMix64,
    /// Where in the triangle's period the last sample was, and when.
    phase_us: u32,
    last_us: u64,
}

impl SimulatedTemperature {
    pub fn new(seed: u64) -> Self {
        SimulatedTemperature { noise: SplitMix64::new(seed), phase_us: 0, last_us: 0 }
    }
}

impl Sensor for SimulatedTemperature {
    fn channel(&self) -> Channel {
        Channel { name: "temperature_c", kind: Kind::Gauge, fraction_bits: 7 }
    }

    fn sample(&mut self, now_us: u64) -> Option<i32> {
        // 32-bit integer arithmetic only: the Cortex-M3 divides 32 bits in hardware, while
        // 64-bit division and soft-float are library routines that cost flash.
        const PERIOD_US: u32 = 600_000_000;
        const HALF_MS: i32 = (PERIOD_US / 2 / 1_000) as i32;
        // A gap longer than u32::MAX µs (71 minutes) moves the phase by that much only.
        let elapsed = u32::try_from(now_us.saturating_sub(self.last_us)).unwrap_or(u32::MAX) % PERIOD_US;
        self.last_us = now_us;
        self.phase_us = (self.phase_us + elapsed) % PERIOD_US;
        let phase_ms = (self.phase_us / 1_000) as i32;
        // -192 ..= +192 (±1.5 °C) over the period.
        let triangle = if phase_ms < HALF_MS { phase_ms * 384 / HALF_MS - 192 } else { 576 - phase_ms * 384 / HALF_MS };
        let noise = ((self.noise.next_u64() >> 32) as u32 % 13) as i32 - 6;
        Some(2_752 + triangle + noise)
    }
}

/// A timer-driven counter: how many sampling periods passed since its last reading (1, unless
/// the executor was late), as a counter the collector sums.
pub struct PeriodCounter {
    period_us: u32,
    last_us: Option<u64>,
}

impl PeriodCounter {
    /// `period_us` fits 32 bits: at most [`crate::args::MAX_INTERVAL_MS`] × 1 000.
    pub fn new(period_us: u32) -> Self {
        PeriodCounter { period_us: period_us.max(1), last_us: None }
    }
}

impl Sensor for PeriodCounter {
    fn channel(&self) -> Channel {
        Channel { name: "sample_periods", kind: Kind::Counter, fraction_bits: 0 }
    }

    fn sample(&mut self, now_us: u64) -> Option<i32> {
        let periods = match self.last_us {
            // In 32 bits (see `SimulatedTemperature::sample`); a gap longer than u32::MAX µs
            // (71 minutes) counts as that long.
            Some(last) => {
                let elapsed = u32::try_from(now_us.saturating_sub(last)).unwrap_or(u32::MAX);
                elapsed.saturating_add(self.period_us / 2) / self.period_us
            }
            None => 1,
        };
        self.last_us = Some(now_us);
        Some(periods.min(i32::MAX as u32) as i32)
    }
}
