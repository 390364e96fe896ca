//! Deterministic simulator of one device's clock and link, shared by `tests/clock_accuracy.rs`
//! and `benches/clock_accuracy.rs` (included with `#[path]`, so no extra crate).
//!
//! True time is the collector's clock (Unix µs). The device stamps with a monotonic clock that
//! has an offset, a drift and optionally a daily temperature cycle (`time-and-windows.md` §3.1,
//! §3.3 item 3); batches travel over jittered, asymmetric paths, some late by retransmissions;
//! acks come back and their four timestamps ride in the next batch. The collector side runs
//! [`ClockModel`] exactly as the acceptor does: for each arriving batch, the reported exchange,
//! then the batch's `(t2, t3)`, then every event through the current fix. A seed fixes
//! everything, so a failing run is reproduced by its scenario alone.

// Each includer uses its own part of the simulator.
#![allow(dead_code)]

use std::collections::BTreeMap;

use driftlog_eventtime::clock::{ClockConfig, ClockFix, ClockModel, Estimate, Method};

pub(crate) const SECOND_US: i64 = 1_000_000;
pub(crate) const MINUTE_US: i64 = 60 * SECOND_US;
pub(crate) const HOUR_US: i64 = 60 * MINUTE_US;
pub(crate) const DAY_US: i64 = 24 * HOUR_US;

/// True time zero of every run: 2023-11-14, so offsets have realistic magnitudes.
const UNIX_START_US: i64 = 1_700_000_000_000_000;

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for jitter.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [low, high).
    pub(crate) fn between(&mut self, low: i64, high: i64) -> i64 {
        low + (self.unit() * (high - low) as f64) as i64
    }
}

/// One-way delay: `min_us + jitter_us · u^shape` with u uniform, so shape 1 is uniform over
/// `[min, min + jitter)` and a larger shape crowds the samples towards the minimum.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Delay {
    pub(crate) min_us: i64,
    pub(crate) jitter_us: i64,
    pub(crate) shape: f64,
}

impl Delay {
    fn sample(&self, rng: &mut SplitMix64) -> i64 {
        self.min_us + (self.jitter_us as f64 * rng.unit().powf(self.shape)) as i64
    }
}

/// Which events enter the error statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Measure {
    /// Every event.
    All,
    /// Only the events buffered while offline.
    Backlog,
}

/// One run: a device online, optionally rebooting, optionally offline, then reconnecting.
#[derive(Clone, Debug)]
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) seed: u64,
    /// θ0: the device's wall clock minus true time (the monotonic clock is offset by it too).
    pub(crate) offset_us: i64,
    pub(crate) drift_ppm: f64,
    /// Amplitude of a daily sine on top of `drift_ppm` (a tuning-fork crystal over ±10 °C
    /// moves by about 3 ppm, §3.3 item 3).
    pub(crate) temperature_ppm: f64,
    pub(crate) online_us: i64,
    /// Reboot this long into the online phase: the monotonic clock restarts and the collector
    /// starts a new model for the new epoch.
    pub(crate) reboot_after_us: Option<i64>,
    pub(crate) offline_us: i64,
    /// Live batches after reconnecting, before the backlog is sent.
    pub(crate) fresh_us: i64,
    pub(crate) batch_interval_us: i64,
    pub(crate) online_event_interval_us: i64,
    pub(crate) offline_event_interval_us: i64,
    pub(crate) backlog_batch_events: usize,
    pub(crate) backlog_batch_interval_us: i64,
    pub(crate) up: Delay,
    pub(crate) down: Delay,
    /// Probability that a batch is retransmitted, and the longest wait before it gets through
    /// (it keeps its original t2, so the wait counts as delay, §3.1).
    pub(crate) retransmit_probability: f64,
    pub(crate) retransmit_max_us: i64,
    /// Whether acks report four timestamps (otherwise one-way samples only).
    pub(crate) exchanges: bool,
    /// A step of the device's wall clock at reconnection (it syncs NTP when it gets a link), so
    /// between the backlog's t1 and its t2. Only the wall-clock naive method sees it.
    pub(crate) wall_step_us: i64,
    pub(crate) measure: Measure,
}

impl Scenario {
    /// Two hours online, batches every ~10 s, one-way delays 50 ± 30 ms on both paths (uniform
    /// up, skewed down), 2 % retransmissions, acks with four timestamps, no outage.
    pub(crate) fn online(name: &'static str, seed: u64) -> Scenario {
        Scenario {
            name,
            seed,
            offset_us: 17 * MINUTE_US,
            drift_ppm: 20.0,
            temperature_ppm: 0.0,
            online_us: 2 * HOUR_US,
            reboot_after_us: None,
            offline_us: 0,
            fresh_us: 0,
            batch_interval_us: 10 * SECOND_US,
            online_event_interval_us: 2 * SECOND_US,
            offline_event_interval_us: MINUTE_US,
            backlog_batch_events: 60,
            backlog_batch_interval_us: SECOND_US,
            up: Delay { min_us: 20_000, jitter_us: 60_000, shape: 1.0 },
            down: Delay { min_us: 20_000, jitter_us: 60_000, shape: 1.5 },
            retransmit_probability: 0.02,
            retransmit_max_us: 20 * SECOND_US,
            exchanges: true,
            wall_step_us: 0,
            measure: Measure::All,
        }
    }

    /// [`Scenario::online`], then `offline_us` of buffering (an event a minute) and a
    /// reconnection: one minute of live batches, then the backlog, oldest first. Only the
    /// backlog is measured.
    pub(crate) fn outage(name: &'static str, seed: u64, offline_us: i64, drift_ppm: f64) -> Scenario {
        Scenario {
            offline_us,
            drift_ppm,
            fresh_us: MINUTE_US,
            measure: Measure::Backlog,
            ..Scenario::online(name, seed)
        }
    }
}

/// Errors of one run, µs (corrected minus true event time).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Report {
    pub(crate) naive_errors_us: Vec<i64>,
    pub(crate) ours_errors_us: Vec<i64>,
    /// Measured events whose |error| was within the fix's uncertainty.
    pub(crate) covered: usize,
    pub(crate) quarantined: usize,
    pub(crate) clamped: usize,
    /// Every corrected time, measured or not, to compare runs bit for bit.
    pub(crate) corrected_us: Vec<i64>,
    /// The last model's final estimate.
    pub(crate) estimate: Estimate,
}

/// p50, p99 and max of |errors| (nearest rank), µs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Percentiles {
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) max_us: u64,
}

impl Percentiles {
    pub(crate) fn of(errors_us: &[i64]) -> Percentiles {
        let mut magnitudes: Vec<u64> = errors_us.iter().map(|error| error.unsigned_abs()).collect();
        magnitudes.sort_unstable();
        let rank = |fraction: f64| {
            let index = ((fraction * magnitudes.len() as f64).ceil() as usize).clamp(1, magnitudes.len().max(1)) - 1;
            magnitudes.get(index).copied().unwrap_or(0)
        };
        Percentiles { p50_us: rank(0.50), p99_us: rank(0.99), max_us: magnitudes.last().copied().unwrap_or(0) }
    }
}

/// The device's monotonic clock for one boot.
#[derive(Clone, Copy, Debug)]
struct DeviceClock {
    boot_true_us: i64,
    mono_at_boot_us: u64,
    drift_ppm: f64,
    temperature_ppm: f64,
}

impl DeviceClock {
    /// `∫ (1 + ρ + A·sin(2πs/day)) ds` from boot: the monotonic reading at true time `true_us`.
    fn mono_us(&self, true_us: i64) -> u64 {
        let since_boot = (true_us - self.boot_true_us) as f64;
        let day = DAY_US as f64;
        let tau = std::f64::consts::TAU;
        let temperature = self.temperature_ppm * 1e-6 * day / tau * (1.0 - (tau * since_boot / day).cos());
        self.mono_at_boot_us + (since_boot * (1.0 + self.drift_ppm * 1e-6) + temperature).round() as u64
    }
}

#[derive(Clone, Copy, Debug)]
struct Event {
    true_us: i64,
    mono_us: u64,
    wall_us: i64,
    measured: bool,
}

#[derive(Clone, Copy, Debug)]
struct AckTiming {
    t1: u64,
    t2: i64,
    t3: i64,
    t4: u64,
    /// True time the device got the ack; it reports the last one it got before sealing.
    device_received_true_us: i64,
}

#[derive(Clone, Debug)]
struct Batch {
    epoch: u32,
    t2: u64,
    t2_wall_us: i64,
    t3: i64,
    events: Vec<Event>,
    ack: Option<AckTiming>,
}

/// The device side: clock, pending events, acks in flight, and the batches it sent.
struct Device<'a> {
    scenario: &'a Scenario,
    rng: SplitMix64,
    epoch: u32,
    clock: DeviceClock,
    /// Wall clock minus monotonic clock, before any step.
    wall_base_us: i64,
    /// True time of the wall-clock step (`i64::MAX`: none).
    wall_step_at_us: i64,
    acks: Vec<AckTiming>,
    /// How many of `acks` were already reported or superseded.
    acks_reported: usize,
    sent: Vec<Batch>,
}

impl Device<'_> {
    fn wall_us(&self, true_us: i64) -> i64 {
        let step = if true_us >= self.wall_step_at_us { self.scenario.wall_step_us } else { 0 };
        self.clock.mono_us(true_us) as i64 + self.wall_base_us + step
    }

    fn event(&self, true_us: i64, measured: bool) -> Event {
        Event { true_us, mono_us: self.clock.mono_us(true_us), wall_us: self.wall_us(true_us), measured }
    }

    fn reboot(&mut self, true_us: i64) {
        self.epoch += 1;
        // A few seconds of boot before the first stamp; the wall clock is kept from the RTC.
        let wall_now = self.wall_us(true_us);
        self.clock = DeviceClock { boot_true_us: true_us, mono_at_boot_us: 3 * SECOND_US as u64, ..self.clock };
        self.wall_base_us = wall_now - self.clock.mono_us(true_us) as i64;
        // Acks to the previous boot are lost with it.
        self.acks_reported = self.acks.len();
    }

    /// Seals `events` at true time `sealed_us` and sends them with the last ack received.
    fn send(&mut self, sealed_us: i64, events: Vec<Event>) {
        let scenario = self.scenario;
        let t2 = self.clock.mono_us(sealed_us);
        let mut up = scenario.up.sample(&mut self.rng);
        if self.rng.unit() < scenario.retransmit_probability {
            up += self.rng.between(SECOND_US, scenario.retransmit_max_us.max(SECOND_US + 1));
        }
        let t3 = UNIX_START_US + sealed_us + up;
        let reported = self.acks[self.acks_reported..].iter().rposition(|ack| ack.device_received_true_us <= sealed_us);
        let ack = reported.map(|offset| {
            self.acks_reported += offset + 1;
            self.acks[self.acks_reported - 1]
        });
        if scenario.exchanges {
            let turnaround = self.rng.between(100, 2_000);
            let down = scenario.down.sample(&mut self.rng);
            let received_true_us = t3 - UNIX_START_US + turnaround + down;
            self.acks.push(AckTiming {
                t1: t2,
                t2: t3,
                t3: t3 + turnaround,
                t4: self.clock.mono_us(received_true_us),
                device_received_true_us: received_true_us,
            });
            // Acks arrive out of order when batches do; keep the list in arrival order.
            let pending = &mut self.acks[self.acks_reported..];
            pending.sort_by_key(|ack| ack.device_received_true_us);
        }
        self.sent.push(Batch { epoch: self.epoch, t2, t2_wall_us: self.wall_us(sealed_us), t3, events, ack });
    }

    /// Live operation over `[start_us, end_us)`: an event every ~`online_event_interval_us`,
    /// a batch every ~`batch_interval_us` (both ±10 %), the last one sealed at `end_us`.
    fn online(&mut self, start_us: i64, end_us: i64, measured: bool) {
        let scenario = self.scenario;
        let jitter = |rng: &mut SplitMix64, interval: i64| interval + rng.between(-interval / 10, interval / 10 + 1);
        let mut next_event_us = start_us + self.rng.between(0, scenario.online_event_interval_us);
        let mut seal_us = start_us + jitter(&mut self.rng, scenario.batch_interval_us);
        let mut events = Vec::new();
        loop {
            let seal = seal_us.min(end_us);
            while next_event_us < seal {
                events.push(self.event(next_event_us, measured));
                next_event_us += jitter(&mut self.rng, scenario.online_event_interval_us);
            }
            self.send(seal, std::mem::take(&mut events));
            if seal >= end_us {
                return;
            }
            seal_us += jitter(&mut self.rng, scenario.batch_interval_us);
        }
    }
}

/// Runs `scenario` with `config` and reports the errors of the measured events.
pub(crate) fn run(scenario: &Scenario, config: &ClockConfig) -> Report {
    let boot_true_us = -2 * HOUR_US;
    let clock = DeviceClock {
        boot_true_us,
        // The monotonic reading is offset by θ0 as well, so θ0 = ±1 h moves everything.
        mono_at_boot_us: (2 * HOUR_US + scenario.offset_us).max(0) as u64,
        drift_ppm: scenario.drift_ppm,
        temperature_ppm: scenario.temperature_ppm,
    };
    let mut device = Device {
        scenario,
        rng: SplitMix64::new(scenario.seed),
        epoch: 0,
        clock,
        wall_base_us: 0,
        wall_step_at_us: i64::MAX,
        acks: Vec::new(),
        acks_reported: 0,
        sent: Vec::new(),
    };
    // The wall clock starts θ0 off true time.
    device.wall_base_us = UNIX_START_US + scenario.offset_us - device.clock.mono_us(0) as i64;

    let measure_online = scenario.measure == Measure::All;
    match scenario.reboot_after_us {
        Some(reboot_us) if reboot_us < scenario.online_us => {
            device.online(0, reboot_us, measure_online);
            device.reboot(reboot_us);
            device.online(reboot_us, scenario.online_us, measure_online);
        }
        _ => device.online(0, scenario.online_us, measure_online),
    }
    if scenario.offline_us > 0 {
        let reconnect_us = scenario.online_us + scenario.offline_us;
        let mut backlog = Vec::new();
        let mut event_us = scenario.online_us + device.rng.between(0, scenario.offline_event_interval_us);
        while event_us < reconnect_us {
            backlog.push(device.event(event_us, true));
            event_us += scenario.offline_event_interval_us;
        }
        device.wall_step_at_us = reconnect_us;
        device.online(reconnect_us, reconnect_us + scenario.fresh_us, measure_online);
        let mut send_us = reconnect_us + scenario.fresh_us;
        for chunk in backlog.chunks(scenario.backlog_batch_events.max(1)) {
            send_us += scenario.backlog_batch_interval_us;
            device.send(send_us, chunk.to_vec());
        }
    }
    collect(scenario, config, device.sent)
}

/// The collector: batches in arrival order, one model per boot epoch.
fn collect(scenario: &Scenario, config: &ClockConfig, mut batches: Vec<Batch>) -> Report {
    // Stable: equal arrival times keep send order.
    batches.sort_by_key(|batch| batch.t3);
    let mut models: BTreeMap<u32, ClockModel> = BTreeMap::new();
    let mut report = Report {
        naive_errors_us: Vec::new(),
        ours_errors_us: Vec::new(),
        covered: 0,
        quarantined: 0,
        clamped: 0,
        corrected_us: Vec::new(),
        estimate: ClockModel::new(config).estimate(),
    };
    let mut last_epoch = 0;
    for batch in &batches {
        let model = models.entry(batch.epoch).or_insert_with(|| ClockModel::new(config));
        if let Some(ack) = batch.ack {
            // The sim only produces consistent samples; a refusal would be a model bug.
            model.handle_exchange(config, ack.t1, ack.t2, ack.t3, ack.t4).expect("simulated exchange is consistent");
        }
        model.handle_batch(config, batch.t2, batch.t3);
        let fix = model.fix();
        last_epoch = last_epoch.max(batch.epoch);
        for event in &batch.events {
            let corrected = fix.correct(config, event.mono_us, batch.t2, batch.t3);
            report.corrected_us.push(corrected.unix_us);
            if !event.measured {
                continue;
            }
            let true_unix_us = UNIX_START_US + event.true_us;
            let naive = if scenario.wall_step_us != 0 {
                event.wall_us + batch.t3 - batch.t2_wall_us
            } else {
                ClockFix::naive(event.mono_us, batch.t2, batch.t3)
            };
            let error_us = corrected.unix_us - true_unix_us;
            report.naive_errors_us.push(naive - true_unix_us);
            report.ours_errors_us.push(error_us);
            report.covered += usize::from(error_us.unsigned_abs() <= corrected.uncertainty_us);
            report.quarantined += usize::from(corrected.quarantine.is_some());
            report.clamped += usize::from(corrected.clamped);
        }
    }
    if let Some(model) = models.get(&last_epoch) {
        report.estimate = model.estimate();
    }
    debug_assert!(report.estimate.method != Method::None || batches.is_empty());
    report
}
