//! `driftlog-sim`: the deterministic simulator from the command line.
//!
//! - `driftlog-sim sweep [--events N] [--seed S]` prints the loss-sweep table (README).
//! - `driftlog-sim random [--seeds A..B]` runs randomised fault scenarios.

use anyhow::Context;
use driftlog_tests::report::{loss_sweep, render};
use driftlog_tests::{Scenario, World};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().map(String::as_str).unwrap_or("sweep");
    let option = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    match command {
        "sweep" => {
            let events: u64 = option("--events").map_or(Ok(5_000), |v| v.parse()).context("--events")?;
            let seed: u64 = option("--seed").map_or(Ok(1), |v| v.parse()).context("--seed")?;
            let rows = loss_sweep(seed, events)?;
            println!(
                "{} devices x {} events at {} ev/s each, one-way delay {} ms + up to {} ms jitter, seed {seed}\n",
                driftlog_tests::report::SWEEP_DEVICES,
                events,
                driftlog_tests::report::SWEEP_EVENTS_PER_SECOND,
                driftlog_tests::report::SWEEP_DELAY_MICROS / 1000,
                driftlog_tests::report::SWEEP_JITTER_MICROS / 1000,
            );
            print!("{}", render(&rows));
        }
        "random" => {
            let range = option("--seeds").unwrap_or_else(|| "0..50".into());
            let (start, end) = range.split_once("..").context("--seeds A..B")?;
            let (start, end): (u64, u64) = (start.parse()?, end.parse()?);
            for seed in start..end {
                let outcome = World::new(Scenario::random(seed)).run()?;
                println!(
                    "seed {seed:>4}: {:>6} events, {:>6} delivered, {:>4} tombstoned, {:>6} retransmitted, trace {:016x}",
                    outcome.enqueued,
                    outcome.delivered,
                    outcome.tombstoned,
                    outcome.sender.events_retransmitted,
                    outcome.trace_hash
                );
            }
        }
        other => anyhow::bail!("unknown command {other:?}: use `sweep` or `random`"),
    }
    Ok(())
}
