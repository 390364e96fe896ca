//! The loss sweep: exactly-once at every loss rate, with goodput and latency figures.

use crate::link::{LinkConfig, LossModel};
use crate::scenario::Scenario;
use crate::world::{Failure, Outcome, World};

/// One row of the sweep table.
#[derive(Clone, Debug)]
pub struct SweepRow {
    pub label: String,
    pub outcome: Outcome,
}

impl SweepRow {
    fn percentile_rtt(&self, percentile: f64) -> f64 {
        let latencies = &self.outcome.latencies_micros;
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = ((percentile / 100.0) * (latencies.len() - 1) as f64).round() as usize;
        latencies[rank] as f64 / self.outcome.round_trip_micros as f64
    }

    pub fn p50_rtt(&self) -> f64 {
        self.percentile_rtt(50.0)
    }

    pub fn p99_rtt(&self) -> f64 {
        self.percentile_rtt(99.0)
    }

    pub fn max_rtt(&self) -> f64 {
        self.percentile_rtt(100.0)
    }

    /// Delivered events per second of simulated time, from the first enqueue to the last
    /// delivery (the offered load is `SWEEP_DEVICES * SWEEP_EVENTS_PER_SECOND`).
    pub fn goodput_per_second(&self) -> f64 {
        self.outcome.delivered as f64 / (self.outcome.delivery_span_micros.max(1) as f64 / 1e6)
    }

    /// Event transmissions per delivered event (1.0 = no retransmission).
    pub fn send_ratio(&self) -> f64 {
        self.outcome.sender.events_sent as f64 / self.outcome.delivered.max(1) as f64
    }
}

/// The sweep's fixed shape: 4 devices, 500 events/s each, 25 ms one-way delay with 2 ms of
/// jitter (so some reordering), loss on both directions.
pub const SWEEP_DEVICES: usize = 4;
pub const SWEEP_EVENTS_PER_SECOND: u64 = 500;
pub const SWEEP_DELAY_MICROS: u64 = 25_000;
pub const SWEEP_JITTER_MICROS: u64 = 2_000;

pub fn sweep_losses() -> Vec<(String, LossModel)> {
    let mut losses: Vec<(String, LossModel)> = [0.0, 0.01, 0.05, 0.10, 0.30, 0.50]
        .into_iter()
        .map(|p| {
            (
                format!("{:.0} % iid", p * 100.0),
                if p == 0.0 { LossModel::None } else { LossModel::Iid { probability: p } },
            )
        })
        .collect();
    // Mean bursts of 5 datagrams at 90 % loss, about 5 % overall.
    losses.push((
        "bursty ≈5 %".into(),
        LossModel::GilbertElliott { good_to_bad: 0.0125, bad_to_good: 0.2, loss_good: 0.0, loss_bad: 0.9 },
    ));
    losses
}

pub fn sweep_scenario(seed: u64, loss: LossModel, events_per_device: u64) -> Scenario {
    let link = LinkConfig {
        delay_micros: SWEEP_DELAY_MICROS,
        jitter_micros: SWEEP_JITTER_MICROS,
        loss,
        duplicate_probability: 0.0,
        partitions: Vec::new(),
    };
    Scenario::uniform(seed, SWEEP_DEVICES, events_per_device, SWEEP_EVENTS_PER_SECOND, link)
}

pub fn loss_sweep(seed: u64, events_per_device: u64) -> Result<Vec<SweepRow>, Failure> {
    sweep_losses()
        .into_iter()
        .map(|(label, loss)| {
            World::new(sweep_scenario(seed, loss, events_per_device)).run().map(|outcome| SweepRow { label, outcome })
        })
        .collect()
}

/// A Markdown table of the sweep.
pub fn render(rows: &[SweepRow]) -> String {
    let mut out = String::from(
        "| loss (each direction) | events | delivered once | tombstoned | sent per delivered | goodput ev/s | p50 | p99 | max |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.3} | {:.0} | {:.2} RTT | {:.2} RTT | {:.2} RTT |\n",
            row.label,
            row.outcome.enqueued,
            row.outcome.delivered,
            row.outcome.tombstoned,
            row.send_ratio(),
            row.goodput_per_second(),
            row.p50_rtt(),
            row.p99_rtt(),
            row.max_rtt(),
        ));
    }
    out
}
