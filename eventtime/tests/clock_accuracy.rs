//! Accuracy of the clock model against the DDIA three-timestamp baseline, on the deterministic
//! simulator in `clock_sim/` (shared with `benches/clock_accuracy.rs`, which prints the full
//! table). The goal from the design note: after a day offline at 50 ppm, with one-way delays of
//! 50 ± 30 ms, backlog events land within 10 ms (p99) where the baseline is seconds off.

mod clock_sim;

use clock_sim::{DAY_US, HOUR_US, Percentiles, Report, Scenario, run};
use driftlog_eventtime::clock::{ClockConfig, Method};

fn summary(report: &Report) -> String {
    format!(
        "naive {:?}, ours {:?}, covered {}/{}, estimate {:?}",
        Percentiles::of(&report.naive_errors_us),
        Percentiles::of(&report.ours_errors_us),
        report.covered,
        report.ours_errors_us.len(),
        report.estimate
    )
}

#[test]
fn a_day_offline_at_50_ppm_is_corrected_to_10_ms() {
    let config = ClockConfig::default();
    for seed in 1..=5 {
        let report = run(&Scenario::outage("24 h offline at 50 ppm", seed, DAY_US, 50.0), &config);
        let (ours, naive) = (Percentiles::of(&report.ours_errors_us), Percentiles::of(&report.naive_errors_us));
        let context = format!("seed {seed}: {}", summary(&report));
        assert_eq!(report.ours_errors_us.len(), 1440, "{context}");
        assert!(ours.p99_us <= 10_000, "{context}");
        // 50 ppm over up to a day is up to 4.32 s early.
        assert!(naive.p99_us > 1_000_000, "{context}");
        assert_eq!(report.quarantined, 0, "{context}");
        assert_eq!(report.estimate.method, Method::Drift, "{context}");
        assert!((report.estimate.drift_ppm - 50.0).abs() < 0.2, "{context}");
    }
}

#[test]
fn a_wall_clock_step_moves_the_wall_clock_baseline_but_not_the_monotonic_model() {
    let config = ClockConfig::default();
    let scenario = Scenario { wall_step_us: 30_000_000, ..Scenario::outage("wall step", 7, 6 * HOUR_US, 20.0) };
    let report = run(&scenario, &config);
    let context = summary(&report);
    // Every backlog event was stamped before the step and sent after it: 30 s early, give or
    // take the 0.43 s of drift and the delay.
    assert!(report.naive_errors_us.iter().all(|error| (-30_500_000..-29_500_000).contains(error)), "{context}");
    assert!(Percentiles::of(&report.ours_errors_us).p99_us <= 10_000, "{context}");
}

#[test]
fn online_events_are_within_a_few_ms_where_naive_is_late_by_the_delay() {
    let config = ClockConfig::default();
    let report = run(&Scenario::online("online", 3), &config);
    let context = summary(&report);
    let (ours, naive) = (Percentiles::of(&report.ours_errors_us), Percentiles::of(&report.naive_errors_us));
    assert!(ours.p99_us <= 10_000, "{context}");
    // Naive is late by at least the 20 ms minimum delay, and by seconds on retransmissions.
    assert!(naive.p50_us >= 20_000 && naive.max_us > 1_000_000, "{context}");
    assert!(report.naive_errors_us.iter().all(|error| *error > 0), "{context}");
}

#[test]
fn runs_are_deterministic() {
    let config = ClockConfig::default();
    let scenario = Scenario { temperature_ppm: 3.0, ..Scenario::outage("repeat", 11, 4 * HOUR_US, -70.0) };
    let (first, second) = (run(&scenario, &config), run(&scenario, &config));
    assert_eq!(first, second);
    assert!(!first.corrected_us.is_empty());
}
