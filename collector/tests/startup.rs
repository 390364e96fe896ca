//! What the collector checks when it starts: that no other collector shares its UDP address,
//! and that its log can take a commit before it says it is healthy.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{BIN, CollectorProcess, tmpfs};

/// Runs `driftlog-collector run ARGS` and waits up to `timeout` for it to exit; a process
/// still running then is killed and reported as `None`.
fn run_until_exit(args: &[&str], timeout: Duration) -> Option<(Option<i32>, String)> {
    let mut child = Command::new(BIN).arg("run").args(args).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            return Some((status.code(), stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn a_second_collector_on_the_same_udp_address_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("first")).unwrap();
    let first = CollectorProcess::start_without_keys(&dir.path().join("first"), "");
    let other_data = dir.path().join("second");
    let wildcard = format!("0.0.0.0:{}", first.udp.port());
    for listen in [first.udp.to_string(), wildcard] {
        let args = ["--listen", &listen, "--http", "127.0.0.1:0", "--data-dir", other_data.to_str().unwrap()];
        let outcome = run_until_exit(&args, Duration::from_secs(10));
        let Some((code, stderr)) = outcome else { panic!("a second collector on {listen} started") };
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("already in use"), "{stderr}");
    }
    assert_eq!(first.get("/health").map(|r| r.0), Some(200), "the first one runs on");
}

#[test]
fn a_collector_restarted_on_a_full_disk_is_unhealthy_before_any_frame() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(_mount) = tmpfs::mount_or_skip(&data, "4m") else { return };
    let mut collector =
        CollectorProcess::start_without_keys(dir.path(), "[log]\ncache_bytes = 1048576\nmax_commit_bytes = 262144\n");
    assert_eq!(collector.get("/health").map(|r| r.0), Some(200));
    assert_eq!(collector.terminate(), Some(0));
    // Full, but for 64 KiB: small writes fit, a commit of 256 KiB does not.
    tmpfs::fill_with_files(&data, 64 << 10);
    std::fs::remove_file(data.join("ballast-0")).unwrap();
    collector.spawn();
    // No frame has arrived: the probe at start already knows a commit would not fit.
    assert_eq!(collector.get("/health").map(|r| r.0), Some(503), "{:?}", collector.stderr.lock().unwrap());
    assert_eq!(collector.metric("driftlog_log_accepting"), 0.0);
    let stderr = collector.stderr.lock().unwrap().join("\n");
    assert!(stderr.contains("cannot take a full commit"), "{stderr}");
}
