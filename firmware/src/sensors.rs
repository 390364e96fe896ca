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
}

impl Channel {
    pub const UNKNOWN: Channel = Channel { name: "unknown", kind: Kind::Gauge };
}

/// One sample as the ring keeps it: 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// Device monotonic time since boot, µs.
    pub mono_us: u64,
    pub value: f32,
    /// Index into the channel table.
    pub channel: u8,
}

impl Reading {
    pub const EMPTY: Reading = Reading { mono_us: 0, value: 0.0, channel: 0 };
}

/// A source of readings. `sample` is called every sampling interval with the device's
/// monotonic time; `None` means no reading this time (a sensor busy or failed).
pub trait Sensor {
    fn channel(&self) -> Channel;
    fn sample(&mut self, now_us: u64) -> Option<f32>;
}

/// A temperature around 21.5 °C that drifts in a slow triangle (a 10-minute period of device
/// time) with ±0.05 °C of seeded noise.
pub struct SimulatedTemperature {
    noise: SplitMix64,
}

impl SimulatedTemperature {
    pub fn new(seed: u64) -> Self {
        SimulatedTemperature { noise: SplitMix64::new(seed) }
    }
}

impl Sensor for SimulatedTemperature {
    fn channel(&self) -> Channel {
        Channel { name: "temperature_c", kind: Kind::Gauge }
    }

    fn sample(&mut self, now_us: u64) -> Option<f32> {
        // Integer arithmetic, one conversion at the end: the Cortex-M3 has no FPU, and every
        // soft-float routine costs flash.
        const PERIOD_US: u64 = 600_000_000;
        let phase = (now_us % PERIOD_US) as i64;
        let half = (PERIOD_US / 2) as i64;
        // -1500 ..= +1500 milli-degrees over the period.
        let triangle = if phase < half { phase * 3_000 / half - 1_500 } else { 4_500 - phase * 3_000 / half };
        let noise = (self.noise.next_u64() % 101) as i64 - 50;
        Some((21_500 + triangle + noise) as f32 * 0.001)
    }
}

/// A timer-driven counter: how many sampling periods passed since its last reading (1, unless
/// the executor was late), as a counter the collector sums.
pub struct PeriodCounter {
    period_us: u64,
    last_us: Option<u64>,
}

impl PeriodCounter {
    pub fn new(period_us: u64) -> Self {
        PeriodCounter { period_us: period_us.max(1), last_us: None }
    }
}

impl Sensor for PeriodCounter {
    fn channel(&self) -> Channel {
        Channel { name: "sample_periods", kind: Kind::Counter }
    }

    fn sample(&mut self, now_us: u64) -> Option<f32> {
        let periods = match self.last_us {
            Some(last) => (now_us.saturating_sub(last) + self.period_us / 2) / self.period_us,
            None => 1,
        };
        self.last_us = Some(now_us);
        Some(periods as f32)
    }
}
