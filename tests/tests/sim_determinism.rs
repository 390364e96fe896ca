//! One seed, one trace: the simulator replays a run exactly.

use driftlog_tests::report::sweep_scenario;
use driftlog_tests::{LossModel, Scenario, World};

#[test]
fn the_same_seed_gives_the_same_trace_hash() {
    for seed in [1, 17, 4242] {
        let first = World::new(Scenario::random(seed)).run().unwrap();
        let second = World::new(Scenario::random(seed)).run().unwrap();
        assert_eq!(first.trace_hash, second.trace_hash, "seed {seed}");
        assert_eq!(first.latencies_micros, second.latencies_micros, "seed {seed}");
        assert_eq!(first.steps, second.steps, "seed {seed}");
    }
}

/// The whole system too: the agent's core on its simulated disk, the collector's core and
/// redb on theirs, crashes of both sides. Seeds with crashes inside commits and failed fsyncs.
#[test]
fn the_whole_system_replays_from_its_seed() {
    for seed in [14, 25, 173] {
        let first = World::new(Scenario::random_system(seed)).run().unwrap();
        let second = World::new(Scenario::random_system(seed)).run().unwrap();
        assert_eq!(first.trace_hash, second.trace_hash, "seed {seed}");
        assert_eq!(first.deliveries, second.deliveries, "seed {seed}");
        assert_eq!((first.steps, first.tombstoned), (second.steps, second.tombstoned), "seed {seed}");
        assert_eq!(first.disk.crash_points, second.disk.crash_points, "seed {seed}");
        assert_eq!(first.log_disk.crash_points, second.log_disk.crash_points, "seed {seed}");
    }
}

#[test]
fn different_seeds_give_different_traces() {
    let loss = LossModel::Iid { probability: 0.1 };
    let a = World::new(sweep_scenario(1, loss, 300)).run().unwrap();
    let b = World::new(sweep_scenario(2, loss, 300)).run().unwrap();
    assert_ne!(a.trace_hash, b.trace_hash);
}
