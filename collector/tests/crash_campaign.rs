//! The collector crash campaign: five real agents (the agent library: real sockets, real
//! outboxes) send under load while the collector binary is killed with SIGKILL at 20
//! moments drawn from a seeded generator (anywhere in a commit, an ACK, a window checkpoint
//! or a start-up), and restarted. Every event must end up in the log exactly once, with
//! dense offsets. `CRASH_SEED=n` replays a campaign.

mod support;

use std::time::{Duration, Instant};
use support::{CollectorProcess, event_ids, simulate, write_fleet_keys};

const DEVICES: usize = 5;
const KILLS: usize = 20;

#[test]
fn twenty_kill_9_at_random_moments_lose_and_duplicate_nothing() {
    let seed: u64 = std::env::var("CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(19);
    println!("CRASH_SEED={seed}");
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut below = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let dir = tempfile::tempdir().unwrap();
    write_fleet_keys(&dir.path().join("keys.toml"), DEVICES);
    let mut collector = CollectorProcess::start(dir.path(), "");
    let address = collector.udp;
    let agents = dir.path().join("agents");
    // 200 events/s per device for about as long as the kills take.
    let fleet = std::thread::spawn(move || simulate(address, &agents, DEVICES, 5_000, 200.0, Duration::from_secs(120)));
    let started = Instant::now();
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(200 + below(1_000)));
        collector.kill9();
        std::thread::sleep(Duration::from_millis(below(300)));
        collector.spawn();
    }
    println!("{KILLS} kills in {:.1} s", started.elapsed().as_secs_f64());
    let report = fleet.join().unwrap();
    assert_eq!(report.backlog_remaining, 0, "agents still hold unacknowledged events: {report:?}");
    assert_eq!(report.generated, DEVICES as u64 * 5_000);
    assert_eq!(report.dropped, 0);
    assert_eq!(collector.terminate(), Some(0));
    let lines = collector.log_json();
    let ids = event_ids(&lines);
    let repeated: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(repeated.is_empty(), "events in the log more than once (CRASH_SEED={seed}): {repeated:?}");
    assert_eq!(ids.len() as u64, report.generated, "every event is in the log (CRASH_SEED={seed})");
    let offsets: Vec<u64> = lines.iter().map(|l| l["offset"].as_u64().unwrap()).collect();
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "offsets are dense");
}
