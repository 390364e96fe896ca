//! Collector figures: end-to-end ingest (frames authenticated, decoded, deduplicated and
//! committed with fsync) against the raw UDP receive rate of this machine, measured in the
//! same run; commit latency; on-disk bytes per event; JetStream forwarding rate (when
//! `nats-server` is installed).
//!
//! Method: the collector binary runs as a child with 1 GiB receive buffers and is paused
//! (SIGSTOP) while every datagram is queued in the kernel, then resumed; the run lasts from
//! SIGCONT to the commit that stored the last event (the collector's
//! `driftlog_last_events_commit_timestamp_seconds`). Each measured burst follows a warm-up
//! burst of the same size from the same devices, committed (and windowed) first, so the
//! figure is a running collector's, not a fresh process's first touch of its memory
//! (`FIGURES_WARM_UP=0` measures that instead). The ceilings are the same queue
//! drained by bare loops that do nothing with what they read: one of `recv` per datagram,
//! one of `recvmmsg` (64 per call, as the collector's receive threads). So no number is
//! limited by the sender.
//!
//! `cargo bench -p driftlog-collector --bench ingest` (FIGURES_EVENTS, FIGURES_SINGLE to
//! change the sizes, FIGURES_REPEAT for the number of single-event runs, FIGURES_JETSTREAM
//! for the forwarded events (0 skips), FIGURES_WARM_UP=0 for cold runs, FIGURES_PERF to
//! profile the measured bursts, FIGURES_COLLECTOR_BIN, FIGURES_COLLECTOR_TOML and
//! FIGURES_INGEST_QUEUE for experiments).

mod support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant as StdInstant};
use support::collector::{BIN, Collector, free_port, metrics};
use support::cpu::thread_cpu_seconds;
use support::frames::{DEVICES, Frames, frame_runs, frames};

const SENDERS: usize = 8;

/// Queues every datagram to `to` from `SENDERS` sockets (so SO_REUSEPORT spreads them).
fn send_all(datagrams: &[Vec<u8>], to: SocketAddr) {
    let senders: Vec<UdpSocket> = (0..SENDERS).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    for (index, datagram) in datagrams.iter().enumerate() {
        // Each device's frames from one socket, in order.
        let socket = &senders[(index % DEVICES as usize) % SENDERS];
        while socket.send_to(datagram, to).is_err() {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// How a ceiling run drains its socket.
#[derive(Clone, Copy)]
enum Drain {
    /// One `recv` per datagram.
    Recv,
    /// `recvmmsg` of up to 64 datagrams per call, as the collector's receive threads do.
    Recvmmsg,
}

/// The ceiling: the same datagrams queued into `sockets` REUSEPORT sockets, drained by bare
/// receive loops (one thread each) that do nothing with what they read. Returns
/// datagrams/s.
fn raw_ceiling(frames: &Frames, sockets: usize, drain: Drain) -> f64 {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut bound: Vec<UdpSocket> = Vec::new();
    let mut address: SocketAddr = "127.0.0.1:0".parse().unwrap();
    for _ in 0..sockets {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        socket.set_reuse_port(true).unwrap();
        let _ = nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBufForce, &(1usize << 30));
        socket.bind(&address.into()).unwrap();
        let socket: UdpSocket = socket.into();
        address = socket.local_addr().unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        bound.push(socket);
    }
    send_all(&frames.datagrams, address);
    let started = StdInstant::now();
    let threads: Vec<_> = bound
        .into_iter()
        .map(|socket| {
            std::thread::spawn(move || match drain {
                Drain::Recv => drain_recv(&socket),
                Drain::Recvmmsg => drain_recvmmsg(&socket),
            })
        })
        .collect();
    let results: Vec<(u64, StdInstant)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let received: u64 = results.iter().map(|r| r.0).sum();
    let end = results.iter().map(|r| r.1).max().unwrap();
    received as f64 / (end - started).as_secs_f64()
}

/// Reads until the socket timeout; returns the count and when the last datagram came.
fn drain_recv(socket: &UdpSocket) -> (u64, StdInstant) {
    let mut count = 0u64;
    let mut buf = [0u8; 2_048];
    let mut last = StdInstant::now();
    while socket.recv(&mut buf).is_ok() {
        count += 1;
        last = StdInstant::now();
    }
    (count, last)
}

fn drain_recvmmsg(socket: &UdpSocket) -> (u64, StdInstant) {
    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
    use std::os::fd::AsRawFd;
    const SLOTS: usize = 64;
    let mut buffer = vec![0u8; SLOTS * 2_048];
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(SLOTS, None);
    let mut count = 0u64;
    let mut last = StdInstant::now();
    loop {
        let mut slices: Vec<[std::io::IoSliceMut; 1]> =
            buffer.chunks_mut(2_048).map(|chunk| [std::io::IoSliceMut::new(chunk)]).collect();
        let Ok(results) = recvmmsg(socket.as_raw_fd(), &mut headers, slices.iter_mut(), MsgFlags::MSG_WAITFORONE, None)
        else {
            return (count, last);
        };
        let received = results.count() as u64;
        if received == 0 {
            return (count, last);
        }
        count += received;
        last = StdInstant::now();
    }
}

fn start_collector(keys_toml: &str, extra: &str) -> Collector {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keys.toml"), keys_toml).unwrap();
    let udp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        "data_dir = {:?}\nkeys_file = {:?}\ndevelopment_key = false\n{extra}\n[ingest.udp]\nlisten = \"{udp}\"\nsockets = 2\nreceive_buffer_bytes = 1073741824\n[http]\nlisten = \"{http}\"\n[limits]\ningest_queue_batches = {}\n",
        dir.path().join("data"),
        dir.path().join("keys.toml"),
        env_u64("FIGURES_INGEST_QUEUE", 4096)
    );
    let config_path = dir.path().join("collector.toml");
    std::fs::write(&config_path, config).unwrap();
    // FIGURES_COLLECTOR_BIN: another build of the collector, for A/B comparisons.
    let bin = std::env::var("FIGURES_COLLECTOR_BIN").unwrap_or_else(|_| BIN.to_string());
    support::collector::spawn(&bin, &config_path, dir, udp, http, "warn")
}

fn signal(child: &Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
}

/// Commit latency quantile from the histogram: the upper bound of the bucket holding it.
fn quantile(metrics: &BTreeMap<String, f64>, q: f64) -> String {
    let count = metrics.get("driftlog_commit_seconds_count").copied().unwrap_or(0.0);
    let mut buckets: Vec<(f64, f64)> = metrics
        .iter()
        .filter_map(|(k, v)| {
            let bound = k.strip_prefix("driftlog_commit_seconds_bucket{le=\"")?.strip_suffix("\"}")?;
            Some((bound.parse().ok()?, *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let target = q * count;
    buckets.iter().find(|(_, c)| *c >= target).map_or("n/a".into(), |(b, _)| format!("<= {:.1} ms", b * 1e3))
}

struct Ingest {
    started: StdInstant,
    /// CPU seconds per collector thread name over the run (summed over same-named threads).
    threads: BTreeMap<String, f64>,
    /// The same before the run.
    threads_before: BTreeMap<String, f64>,
    elapsed_s: f64,
    events_per_s: f64,
    datagrams_per_s: f64,
    metrics: BTreeMap<String, f64>,
    /// Events committed before the measured burst.
    warm_events: u64,
}

/// Queues `frames` while the collector is paused, resumes it, and waits until it has
/// committed `target` events in all. Returns the wall time it resumed at, and the last
/// metrics.
fn burst(collector: &Collector, frames: &Frames, target: u64) -> (StdInstant, f64, BTreeMap<String, f64>) {
    signal(&collector.child, nix::sys::signal::Signal::SIGSTOP);
    send_all(&frames.datagrams, collector.udp);
    let started = StdInstant::now();
    let started_unix_s = unix_seconds();
    signal(&collector.child, nix::sys::signal::Signal::SIGCONT);
    // The run ends at the commit that stored the last event, as the collector timestamps
    // it; polling /metrics only finds out that it happened. A slow poll keeps the
    // benchmark's own CPU (and the collector's HTTP handler) out of the two cores the run
    // is measuring, without coarsening the end time.
    let deadline = started + Duration::from_secs(300);
    let mut last = BTreeMap::new();
    while StdInstant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        last = metrics(collector.http);
        if last.get("driftlog_events_committed_total").copied().unwrap_or(0.0) >= target as f64 {
            break;
        }
    }
    (started, started_unix_s, last)
}

/// FIGURES_PERF=PREFIX: records the measured burst with `perf record -g` into
/// `PREFIX.<collector pid>.data` (after the warm-up, so only the run itself is sampled).
fn profile(collector: &Collector) -> Option<Child> {
    let prefix = std::env::var("FIGURES_PERF").ok()?;
    let pid = collector.child.id();
    let perf = Command::new("perf")
        .args(["record", "-F", "4999", "-g", "-p", &pid.to_string(), "-o", &format!("{prefix}.{pid}.data")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // perf needs a moment to attach to every thread.
    std::thread::sleep(Duration::from_millis(500));
    Some(perf)
}

/// Waits until the window processor has read everything committed (no-op without windows).
fn windows_caught_up(collector: &Collector, since: StdInstant) {
    while since.elapsed() < Duration::from_secs(300) {
        let lag = metrics(collector.http).get("driftlog_windows_lag_offsets").copied();
        if lag.is_none_or(|lag| lag == 0.0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One measured burst of `frames`, after the `warm_up` burst (if any) has been committed and
/// windowed: a collector that has run for a while has its devices' receivers and clock
/// models, and its heap, its page cache and redb's pages in use; a fresh one pays for all
/// of them inside the measured run.
fn ingest(warm_up: Option<&Frames>, frames: &Frames, extra: &str) -> (Ingest, Collector) {
    let collector = start_collector(&frames.keys_toml, extra);
    let warm_events = warm_up.map_or(0, |warm| warm.events);
    if let Some(warm) = warm_up {
        let (started, _, last) = burst(&collector, warm, warm_events);
        let committed = last.get("driftlog_events_committed_total").copied().unwrap_or(0.0);
        assert!(committed >= warm_events as f64, "the warm-up was not committed ({committed} of {warm_events})");
        windows_caught_up(&collector, started);
    }
    let threads_before = thread_cpu_seconds(collector.child.id());
    let profiler = profile(&collector);
    let (started, started_unix_s, last) = burst(&collector, frames, warm_events + frames.events);
    if let Some(mut perf) = profiler {
        signal(&perf, nix::sys::signal::Signal::SIGINT);
        let _ = perf.wait();
    }
    let committed_unix_s = last.get("driftlog_last_events_commit_timestamp_seconds").copied().unwrap_or(0.0);
    let elapsed = if committed_unix_s > started_unix_s {
        committed_unix_s - started_unix_s
    } else {
        started.elapsed().as_secs_f64()
    };
    let committed = last.get("driftlog_events_committed_total").copied().unwrap_or(0.0) - warm_events as f64;
    let mut threads = thread_cpu_seconds(collector.child.id());
    for (name, seconds) in &mut threads {
        *seconds -= threads_before.get(name).copied().unwrap_or(0.0);
    }
    let result = Ingest {
        started,
        threads,
        threads_before,
        elapsed_s: elapsed,
        events_per_s: committed / elapsed,
        datagrams_per_s: frames.datagrams.len() as f64 * (committed / frames.events as f64) / elapsed,
        metrics: last,
        warm_events,
    };
    (result, collector)
}

fn unix_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Disk blocks the files under `dir` occupy: redb extends its file ahead of use with
/// `set_len`, and the extension is a hole until written.
fn allocated_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().filter_map(|entry| entry.metadata().ok()).map(|m| m.blocks() * 512).sum()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let batched_events = env_u64("FIGURES_EVENTS", 2_000_000);
    let single_events = env_u64("FIGURES_SINGLE", 400_000);
    println!("collector ingest figures (2 REUSEPORT sockets, {DEVICES} devices, fsync per group commit)\n");

    // Single-event runs are short and this machine is shared: each is repeated, and the
    // median ratio is the figure.
    let repeats = env_u64("FIGURES_REPEAT", 3).max(1);
    let mut ratios: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    // The last run turns the default window off, to show what the window processor costs.
    for (label, per_frame, total, extra, runs) in [
        ("batched (up to 64 events/frame)", 64, batched_events, "", 1),
        ("single-event frames", 1, single_events, "", repeats),
        ("single-event frames, windows = []", 1, single_events, "windows = []", repeats),
    ] {
        // FIGURES_WARM_UP=0 measures a collector's first burst instead.
        let warm = env_u64("FIGURES_WARM_UP", 1) != 0;
        let mut sets = frame_runs(total, per_frame, 1 + usize::from(warm));
        let frames = sets.pop().expect("the measured set");
        let warm_up = sets.pop();
        for run in 1..=runs {
            let ceiling_recv = raw_ceiling(&frames, 2, Drain::Recv);
            let ceiling_mmsg = raw_ceiling(&frames, 2, Drain::Recvmmsg);
            // The ceiling is the faster of the two bare loops: the most this machine's kernel
            // delivered in this run.
            let ceiling = ceiling_recv.max(ceiling_mmsg);
            // FIGURES_COLLECTOR_TOML: extra top-level settings for every run (experiments).
            let extra = format!("{extra}\n{}", std::env::var("FIGURES_COLLECTOR_TOML").unwrap_or_default());
            let (result, collector) = ingest(warm_up.as_ref(), &frames, &extra);
            let m = &result.metrics;
            // The window processor reads the log behind the committer: when has it caught up?
            let windows_done_s = (!extra.contains("windows = []")).then(|| {
                windows_caught_up(&collector, result.started);
                result.started.elapsed().as_secs_f64()
            });
            let all_committed = m.get("driftlog_events_committed_total").copied().unwrap_or(0.0);
            let committed = all_committed - result.warm_events as f64;
            println!(
                "{label}, run {run}/{runs}: {} events in {} datagrams ({:.1} events/datagram)",
                frames.events,
                frames.datagrams.len(),
                frames.events as f64 / frames.datagrams.len() as f64
            );
            println!(
                "  committed            {committed:.0} events (kernel drops {:.0}; ingest waited {:.0} ms on commits)",
                m.get("driftlog_kernel_receive_drops_total").copied().unwrap_or(0.0),
                m.get("driftlog_ingest_waited_on_commit_seconds_total").copied().unwrap_or(0.0) * 1e3
            );
            println!(
                "  ingest end to end    {:>10.0} events/s  {:>9.0} datagrams/s",
                result.events_per_s, result.datagrams_per_s
            );
            println!(
                "  raw UDP ceiling      {:>10} events/s  {ceiling_recv:>9.0} datagrams/s (bare recv loop, same queue)",
                ""
            );
            println!(
                "  raw UDP ceiling      {:>10} events/s  {ceiling_mmsg:>9.0} datagrams/s (bare recvmmsg loop, same queue)",
                ""
            );
            println!("  ceiling / ingest     {:.2}x (datagrams, the faster ceiling)", ceiling / result.datagrams_per_s);
            ratios.entry(label).or_default().push(ceiling / result.datagrams_per_s);
            let busy: Vec<String> = result
                .threads
                .iter()
                .filter(|(_, seconds)| **seconds >= 0.01)
                .map(|(name, seconds)| format!("{name} {:.0} %", seconds / result.elapsed_s * 100.0))
                .collect();
            println!("  threads (CPU / wall) {}", busy.join(", "));
            // CPU time per event is steadier than rates on a shared machine: compare builds by
            // it. Counted until the windows caught up, so it includes all their work.
            let mut cpu = thread_cpu_seconds(collector.child.id());
            for (name, seconds) in &mut cpu {
                *seconds -= result.threads_before.get(name).copied().unwrap_or(0.0);
            }
            let per_event: Vec<String> = cpu
                .iter()
                .filter(|(_, seconds)| **seconds >= 0.01)
                .map(|(name, seconds)| format!("{name} {:.2}", seconds / committed.max(1.0) * 1e6))
                .collect();
            let total: f64 = cpu.values().sum::<f64>() / committed.max(1.0) * 1e6;
            println!("  CPU µs per event     {total:.2} ({})", per_event.join(", "));
            if let Some(done) = windows_done_s {
                println!(
                    "  windows caught up    {done:.2} s after the start ({:.0} events/s through the window processor)",
                    frames.events as f64 / done
                );
            }
            let commits = m.get("driftlog_commit_seconds_count").copied().unwrap_or(0.0);
            println!(
                "  commit latency       p50 {}  p99 {}  mean {:.1} ms  ({commits:.0} commits)",
                quantile(m, 0.5),
                quantile(m, 0.99),
                m.get("driftlog_commit_seconds_sum").copied().unwrap_or(0.0) / commits.max(1.0) * 1e3,
            );
            let encoded = frames.event_bytes as f64 / frames.events as f64;
            let stored = m.get("driftlog_log_bytes").copied().unwrap_or(0.0) / all_committed.max(1.0);
            let file = m.get("driftlog_log_file_bytes").copied().unwrap_or(0.0) / all_committed.max(1.0);
            let allocated = allocated_bytes(&collector.dir.path().join("data")) as f64 / all_committed.max(1.0);
            println!(
                "  bytes per event      encoded {encoded:.1}  stored {stored:.1} ({:.2}x)  log file {file:.1} ({:.2}x), of which allocated on disk {allocated:.1} ({:.2}x)\n",
                stored / encoded,
                file / encoded,
                allocated / encoded
            );
        }
    }
    for (label, mut runs) in ratios {
        runs.sort_by(f64::total_cmp);
        let median = runs[runs.len() / 2];
        let range = format!("{:.2}x–{:.2}x", runs[0], runs[runs.len() - 1]);
        println!(
            "{label}: ceiling / ingest median {median:.2}x over {} runs (range {range}; the faster of the recv and recvmmsg ceilings)",
            runs.len()
        );
    }
    println!();

    // JetStream: the forwarder publishing a log that is being filled.
    let nats = ["/usr/sbin/nats-server", "/usr/bin/nats-server"].into_iter().find(|p| std::path::Path::new(p).exists());
    let Some(nats) = nats else {
        println!("JetStream forwarding: skipped (nats-server not installed)");
        return;
    };
    let events = env_u64("FIGURES_JETSTREAM", 200_000);
    if events == 0 {
        println!("JetStream forwarding: skipped (FIGURES_JETSTREAM=0)");
        return;
    }
    let frames = frames(events, 64);
    let store = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Command::new(nats)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let extra = format!("[forward.jetstream]\nurl = \"nats://127.0.0.1:{port}\"\nmax_in_flight = 4096\n");
    let (result, collector) = ingest(None, &frames, &extra);
    let started = result.started;
    let mut forwarded = 0.0;
    while started.elapsed() < Duration::from_secs(300) {
        let m = metrics(collector.http);
        forwarded = m.get("driftlog_forwarder_published_total").copied().unwrap_or(0.0);
        if m.get("driftlog_forwarder_lag_offsets").copied().unwrap_or(1.0) == 0.0 && forwarded > 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The forwarder runs alongside the ingest: from SIGCONT until it has published everything.
    let m = metrics(collector.http);
    println!(
        "JetStream forwarding (nats-server, file storage, 4096 acks in flight): {forwarded:.0} messages, \
         {:.0} messages/s, errors {:.0}",
        forwarded / (started.elapsed().as_secs_f64()).max(1e-3),
        m.get("driftlog_forwarder_errors_total").copied().unwrap_or(0.0)
    );
    drop(collector);
    let _ = server.kill();
    let _ = server.wait();
}
