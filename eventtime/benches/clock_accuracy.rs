//! Accuracy table of the clock model against the DDIA three-timestamp baseline.
//!
//! `cargo bench -p driftlog-eventtime --bench clock_accuracy` prints one markdown row per
//! scenario of the deterministic simulator in `tests/clock_sim/`: p50, p99 and max of
//! |corrected - true| for the naive `t1 + (t3 - t2)` and for `ClockModel`. It measures error,
//! not speed, so it is a plain `main` rather than a criterion bench.

#[path = "../tests/clock_sim/mod.rs"]
mod clock_sim;

use clock_sim::{DAY_US, Delay, HOUR_US, Percentiles, Scenario, run};
use driftlog_eventtime::clock::ClockConfig;

fn scenarios() -> Vec<(Scenario, &'static str)> {
    let seed = 42;
    vec![
        (Scenario { offset_us: HOUR_US, ..Scenario::online("offset +1 h", seed) }, "2 h online, 20 ppm, all events"),
        (Scenario { offset_us: -HOUR_US, ..Scenario::online("offset -1 h", seed) }, "2 h online, 20 ppm, all events"),
        (Scenario::outage("drift +100 ppm", seed, 6 * HOUR_US, 100.0), "2 h online, 6 h offline, backlog"),
        (Scenario::outage("drift -100 ppm", seed, 6 * HOUR_US, -100.0), "2 h online, 6 h offline, backlog"),
        (
            Scenario { temperature_ppm: 3.0, ..Scenario::outage("temperature cycle", seed, DAY_US, 20.0) },
            "20 ppm ± 3 ppm daily sine, 24 h offline, backlog",
        ),
        (
            Scenario {
                up: Delay { min_us: 40_000, jitter_us: 60_000, shape: 1.0 },
                down: Delay { min_us: 10_000, jitter_us: 30_000, shape: 2.0 },
                ..Scenario::online("jitter + asymmetric delay", seed)
            },
            "up 40–100 ms, down 10–40 ms, all events",
        ),
        (
            Scenario {
                retransmit_probability: 0.10,
                retransmit_max_us: 30_000_000,
                ..Scenario::online("retransmissions", seed)
            },
            "10 % of batches 1–30 s late, all events",
        ),
        (
            Scenario { wall_step_us: 30_000_000, ..Scenario::outage("wall-clock step +30 s", seed, 6 * HOUR_US, 20.0) },
            "6 h offline, step at reconnect; naive on wall time",
        ),
        (Scenario::outage("24 h offline at 50 ppm", seed, DAY_US, 50.0), "the goal: 2 h online, 24 h offline, backlog"),
        (
            Scenario { exchanges: false, ..Scenario::outage("24 h offline, no acks", seed, DAY_US, 50.0) },
            "as above, one-way samples only",
        ),
        (
            Scenario { reboot_after_us: Some(HOUR_US), ..Scenario::outage("reboot mid-run", seed, 6 * HOUR_US, 50.0) },
            "reboot at 1 h resets the model; 1 h more, 6 h offline, backlog",
        ),
    ]
}

fn ms(micros: u64) -> String {
    format!("{:.1}", micros as f64 / 1000.0)
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter after it would select rows.
    let filter: Option<String> = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    let config = ClockConfig::default();
    println!(
        "| scenario | setup | events | naive p50 | naive p99 | naive max | ours p50 | ours p99 | ours max | within uncertainty |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (scenario, setup) in scenarios() {
        if filter.as_deref().is_some_and(|filter| !scenario.name.contains(filter)) {
            continue;
        }
        let report = run(&scenario, &config);
        let naive = Percentiles::of(&report.naive_errors_us);
        let ours = Percentiles::of(&report.ours_errors_us);
        let events = report.ours_errors_us.len();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} % |",
            scenario.name,
            setup,
            events,
            ms(naive.p50_us),
            ms(naive.p99_us),
            ms(naive.max_us),
            ms(ours.p50_us),
            ms(ours.p99_us),
            ms(ours.max_us),
            100.0 * report.covered as f64 / events.max(1) as f64,
        );
    }
    println!("\n|error| in ms (corrected minus true event time); seed 42; delays 50 ± 30 ms one way unless stated.");
}
