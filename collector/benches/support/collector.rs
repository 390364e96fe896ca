//! The collector binary as a child of a bench: started on a config the bench wrote, killed
//! when dropped, its `/metrics` read as name → value.

use driftlog_collector::tail::http_get;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_driftlog-collector");

pub(crate) struct Collector {
    pub(crate) child: Child,
    pub(crate) udp: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) dir: tempfile::TempDir,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `bin run --config CONFIG` (logging at `rust_log`) and waits until it serves `/health`.
pub(crate) fn spawn(
    bin: &str,
    config: &Path,
    dir: tempfile::TempDir,
    udp: SocketAddr,
    http: SocketAddr,
    rust_log: &str,
) -> Collector {
    let child = Command::new(bin)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let collector = Collector { child, udp, http, dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(collector.http, "/health").is_err() {
        assert!(Instant::now() < deadline, "collector did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    collector
}

/// `/metrics` as name (with labels) → value.
pub(crate) fn metrics(http: SocketAddr) -> BTreeMap<String, f64> {
    let Ok((_, body)) = http_get(http, "/metrics") else { return BTreeMap::new() };
    driftlog_collector::tail::metric_values(&body)
}
