//! Harness for the firmware end-to-end tests: builds the firmware image (its own workspace in
//! `firmware/`, with a device key from `driftlog-collector keygen` compiled in), boots it in
//! QEMU through `firmware/qemu-run.sh`, and runs the bridge (the agent library's real code) on
//! its own thread so a test can stop and restart it.
//!
//! The image is built here, not by `.ci/run`: `cargo build --release` in `firmware/` (its own
//! target directory and lock file, so it never waits on the host build), a no-op after the
//! first test. Tests skip with a message when `qemu-system-arm` or the Cortex-M target is
//! missing, unless `DRIFTLOG_REQUIRE_QEMU=1` (set by `.ci/run`), which makes that a failure.
#![allow(dead_code, unreachable_pub)]

pub mod mangler;

use driftlog_agent::bridge::metrics::BridgeMetrics;
use driftlog_agent::bridge::{BridgeOptions, serial::SerialSpec};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The device id the test key is generated for.
pub const DEVICE: u64 = 4242;
/// The firmware's outbox (`OUTBOX_EVENTS` in firmware/src/agent.rs).
pub const OUTBOX_EVENTS: u64 = 128;

pub fn firmware_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("firmware")
}

/// The built image and the collector keys file that knows its key. While it lives, no other
/// firmware test runs: QEMU's device clock outruns the host's, so a collector slowed by
/// parallel runs (fsync) lasts device seconds, long enough to overflow a ring on a busy host.
#[derive(Debug)]
pub struct Image {
    pub elf: PathBuf,
    pub keys_toml: PathBuf,
    pub key_file: PathBuf,
    _exclusive: std::fs::File,
}

fn have(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Builds the image, or `None` (after saying why) when this machine cannot run it.
pub fn image() -> Option<Image> {
    let missing = if have("qemu-system-arm", &["--version"]).is_none() {
        Some("qemu-system-arm is not installed")
    } else if !have("rustup", &["target", "list", "--installed"]).is_some_and(|t| t.contains("thumbv7m-none-eabi")) {
        Some("the rustup target thumbv7m-none-eabi is not installed")
    } else {
        None
    };
    if let Some(why) = missing {
        assert!(std::env::var("DRIFTLOG_REQUIRE_QEMU").is_err(), "DRIFTLOG_REQUIRE_QEMU is set but {why}");
        eprintln!("SKIPPED: {why} (.ci/run installs it)");
        return None;
    }
    let dir = firmware_dir();
    let state = dir.join("target").join("e2e");
    std::fs::create_dir_all(&state).unwrap();
    // Tests run in parallel processes: one generates the key, all build the same image.
    let lock = std::fs::File::create(state.join(".lock")).unwrap();
    lock.lock().unwrap();
    let keys_toml = state.join("keys.toml");
    let key_file = state.join("device.key");
    if !key_file.exists() {
        let output = Command::new(crate::support::BIN)
            .args(["keygen", "--device", &DEVICE.to_string(), "--keys"])
            .arg(&keys_toml)
            .output()
            .unwrap();
        assert!(output.status.success(), "keygen: {}", String::from_utf8_lossy(&output.stderr));
        // Comment lines are instructions; the rest is the agent's key file.
        let text: String = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&key_file, text).unwrap();
    }
    let elf = cargo_build(&key_file, &[]);
    drop(lock);
    let exclusive = std::fs::File::create(state.join(".run.lock")).unwrap();
    exclusive.lock().unwrap();
    Some(Image { elf, keys_toml, key_file, _exclusive: exclusive })
}

/// `cargo build --release` in `firmware/` with the key compiled in and `extra` arguments;
/// returns the image's path.
fn cargo_build(key_file: &Path, extra: &[&str]) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--release"])
        .args(extra)
        .current_dir(firmware_dir())
        .env("DRIFTLOG_KEY_FILE", key_file)
        // The host build's settings must not leak into the firmware's (its own target
        // directory, target triple and rustflags come from firmware/.cargo/config.toml).
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .output()
        .unwrap();
    assert!(output.status.success(), "firmware build failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let target = extra.iter().position(|a| *a == "--target").map_or("thumbv7m-none-eabi", |i| extra[i + 1]);
    firmware_dir().join("target").join(target).join("release/driftlog-firmware")
}

impl Image {
    /// The MPS2-AN386 image with the same key.
    pub fn build_mps2(&self) -> PathBuf {
        cargo_build(
            &self.key_file,
            &["--target", "thumbv7em-none-eabihf", "--no-default-features", "--features", "board-mps2-an386"],
        )
    }
}

/// A firmware run in QEMU; stdout (semihosting) is collected line by line.
pub struct Qemu {
    child: Option<Child>,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub epoch: u64,
}

impl Qemu {
    /// Boots `elf` with epoch `epoch`; its UART connects to `serial` (a bridge, or anything
    /// listening there; QEMU reconnects while nothing does).
    pub fn boot(elf: &Path, serial: SocketAddr, epoch: u64, args: &str) -> Qemu {
        Qemu::boot_on("lm3s6965evb", elf, serial, epoch, args)
    }

    /// As [`Self::boot`], on QEMU machine `machine`.
    pub fn boot_on(machine: &str, elf: &Path, serial: SocketAddr, epoch: u64, args: &str) -> Qemu {
        Qemu::boot_with(machine, "shift=auto,sleep=off", elf, serial, epoch, args)
    }

    /// As [`Self::boot_on`], with QEMU's `-icount` settings.
    pub fn boot_with(machine: &str, icount: &str, elf: &Path, serial: SocketAddr, epoch: u64, args: &str) -> Qemu {
        let mut child = Command::new(firmware_dir().join("qemu-run.sh"))
            .arg(machine)
            .env("DRIFTLOG_ICOUNT", icount)
            .arg(elf)
            .env("DRIFTLOG_SERIAL", format!("tcp:{serial}"))
            .env("DRIFTLOG_EPOCH", epoch.to_string())
            .env("DRIFTLOG_APPEND", args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Qemu { child: Some(child), lines, epoch }
    }

    /// Waits for the firmware to exit; returns its exit code. Panics after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                self.assert_no_panic();
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "firmware still running after {timeout:?}: {:?}", self.tail());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn assert_no_panic(&self) {
        let lines = self.lines.lock().unwrap();
        assert!(!lines.iter().any(|l| l.contains("PANIC")), "the firmware panicked: {lines:?}");
    }

    fn tail(&self) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines.iter().rev().take(8).rev().cloned().collect()
    }

    /// The `key=value` fields of the last report line that starts with `driftlog-firmware: WORD`.
    pub fn report(&self, word: &str) -> Option<BTreeMap<String, u64>> {
        let prefix = format!("driftlog-firmware: {word} ");
        let lines = self.lines.lock().unwrap();
        let line = lines.iter().rev().find(|l| l.starts_with(&prefix))?;
        Some(
            line[prefix.len()..]
                .split_whitespace()
                .filter_map(|field| {
                    let (name, value) = field.split_once('=')?;
                    Some((name.to_string(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    /// Polls until a report line `word` satisfies `condition`.
    pub fn wait_for_report(
        &self,
        word: &str,
        timeout: Duration,
        condition: impl Fn(&BTreeMap<String, u64>) -> bool,
    ) -> BTreeMap<String, u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(report) = self.report(word).filter(|r| condition(r)) {
                return report;
            }
            assert!(Instant::now() < deadline, "no matching {word:?} report after {timeout:?}: {:?}", self.tail());
            self.assert_no_panic();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The bridge on a thread of its own with its own runtime; `stop` returns its counters.
pub struct Bridge {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<BridgeMetrics>>,
}

impl Bridge {
    /// Listens on `serial` for the UART and forwards to `collector`, dropping `drop_rate` of
    /// the frames each way. Returns once the serial port listens.
    pub fn start(serial: SocketAddr, collector: SocketAddr, drop_rate: f64, seed: u64) -> Bridge {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = BridgeOptions {
            serial: SerialSpec::Tcp(serial),
            collector,
            baud: 115_200,
            metrics: None,
            drop_rate,
            drop_seed: seed,
            max_frame_bytes: 2_048,
        };
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime
                .block_on(driftlog_agent::bridge::run(options, async {
                    let _ = stopped.await;
                }))
                .unwrap()
        });
        let up = crate::support::wait_until(Duration::from_secs(10), || std::net::TcpListener::bind(serial).is_err());
        assert!(up, "the bridge did not listen on {serial}");
        Bridge { stop: Some(stop), thread: Some(thread) }
    }

    pub fn stop(mut self) -> BridgeMetrics {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn free_port() -> SocketAddr {
    format!("127.0.0.1:{}", crate::support::free_tcp_port()).parse().unwrap()
}

/// The firmware's events and tombstones in the collector's log, for one epoch.
#[derive(Debug, Default)]
pub struct EpochRecords {
    /// seq → how often it is stored.
    pub events: BTreeMap<u64, usize>,
    /// Event records, for the time checks.
    pub event_lines: Vec<serde_json::Value>,
    /// `[start, end)` of every tombstone (and gap) record.
    pub tombstones: Vec<(u64, u64)>,
    /// Log offsets of the events.
    pub offsets: Vec<u64>,
}

pub fn records(lines: &[serde_json::Value], epoch: u64) -> EpochRecords {
    let mut records = EpochRecords::default();
    for line in lines {
        if line["device"] != DEVICE || line["epoch"] != epoch {
            continue;
        }
        match line["kind"].as_str() {
            Some("event") => {
                *records.events.entry(line["seq"].as_u64().unwrap()).or_insert(0) += 1;
                records.offsets.push(line["offset"].as_u64().unwrap());
                records.event_lines.push(line.clone());
            }
            Some("tombstone") | Some("gap") => {
                records.tombstones.push((line["seq_start"].as_u64().unwrap(), line["seq_end"].as_u64().unwrap()))
            }
            _ => {}
        }
    }
    records
}

pub fn unix_now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

/// The key id in the device's key file.
pub fn key_id(image: &Image) -> u32 {
    let text = std::fs::read_to_string(&image.key_file).unwrap();
    text.lines().find_map(|l| l.strip_prefix("key_id = ")).unwrap().trim().parse().unwrap()
}
