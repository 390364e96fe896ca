//! A 20 s outage: the backlog replays at its paced rate while live events go first, and
//! everything arrives exactly once.

use driftlog_tests::{LinkConfig, Scenario, World};

#[test]
fn live_events_overtake_a_paced_backlog_after_an_outage() {
    let partition = (10_000_000, 30_000_000);
    let link = LinkConfig { partitions: vec![partition], ..LinkConfig::ideal(25_000) };
    let mut scenario = Scenario::uniform(3, 1, 12_000, 200, link);
    scenario.devices[0].backlog_events_per_second = 500;
    let outcome = World::new(scenario).run().unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(outcome.delivered, outcome.enqueued);

    let rtt = 50_000u64;
    // Events enqueued a little after the heal (once the device has heard from the collector
    // again, at most a heartbeat interval later) are live: delivered within a few RTT.
    let live: Vec<u64> = outcome
        .deliveries
        .iter()
        .filter(|(enqueued, _)| *enqueued > partition.1 + 1_500_000)
        .map(|(enqueued, delivered)| delivered - enqueued)
        .collect();
    let mut sorted = live.clone();
    sorted.sort_unstable();
    let p99 = sorted[sorted.len() * 99 / 100];
    assert!(p99 <= 3 * rtt, "live p99 {p99} µs while the backlog drains");

    // The backlog (events enqueued during the outage) drains at the paced rate, not at once.
    let backlog: Vec<u64> = outcome
        .deliveries
        .iter()
        .filter(|(enqueued, _)| (partition.0..partition.1).contains(enqueued))
        .map(|(_, delivered)| *delivered)
        .collect();
    let first = *backlog.iter().min().unwrap();
    let last = *backlog.iter().max().unwrap();
    let drain_seconds = (last - first) as f64 / 1e6;
    let rate = backlog.len() as f64 / drain_seconds;
    assert!(backlog.len() > 3_000, "the outage built a backlog: {}", backlog.len());
    // The cap is 500 events/s plus a burst of 256 and the frames lost in flight.
    assert!(rate <= 600.0, "backlog replayed at {rate:.0} events/s, above the cap");
    assert!(rate >= 350.0, "backlog replayed at only {rate:.0} events/s");
}
