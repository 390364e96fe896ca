//! `driftlog-collector`: parses the command line, sets up logging, and calls into the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use driftlog_collector::config::{CollectorConfig, Overrides};
use driftlog_collector::log::Log;
use driftlog_collector::service;
use driftlog_collector::tail::{KindFilter, http_get, human, read_lines};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Blocks are built on the acceptor thread and freed on the committer's, received batches
/// the other way round: glibc's per-thread arenas then hand pages back and fault them in
/// again, and zeroing those pages was the acceptor's largest cost under `perf`.
/// Transparent huge pages are turned off for the process (see `main`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "driftlog-collector", version, about = "The driftlog collector")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector (defaults: agent frames on UDP 127.0.0.1:7400, the log under
    /// ./driftlog-data, metrics and health on http://127.0.0.1:9400).
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Check a config file and exit.
    Validate {
        #[arg(long)]
        config: PathBuf,
    },
    /// Create a key for a device, append it to the keys file (mode 0600), and print the
    /// agent's key file (two lines) on stdout.
    Keygen {
        #[arg(long)]
        device: u64,
        /// Replace the device's key: its old key id is retired and stops working.
        #[arg(long)]
        rotate: bool,
        /// The keys file to append to (default: the config's keys_file, else ./driftlog-keys.toml).
        #[arg(long)]
        keys: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Read the log.
    Log {
        #[command(subcommand)]
        command: LogCommand,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        /// Ask the collector running with this HTTP address (no data dir needed); without it
        /// the log file is read, or the configured address asked when the collector holds it.
        #[arg(long, global = true)]
        http: Option<SocketAddr>,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Print records from an offset (one JSON object per line with --json).
    Tail {
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Keep printing new records as they are committed.
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        json: bool,
        /// Stop after this many records (without --follow).
        #[arg(long)]
        max: Option<u64>,
        /// Only records of this kind.
        #[arg(long, value_enum)]
        kind: Option<KindFilter>,
    },
    /// Print record counts, sizes and the offset range.
    Stats,
    /// Re-run the processing pipeline over stored events from an offset.
    Replay {
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: a log file or journald gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none())
        .init();
    match cli.command {
        Command::Run { config, overrides } => run(config.as_deref(), &overrides),
        Command::Validate { config } => match CollectorConfig::load(Some(&config)) {
            Ok(loaded) => {
                for warning in loaded.warnings() {
                    eprintln!("driftlog-collector: warning: {warning}");
                }
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(error) => usage_error(&error.to_string()),
        },
        Command::Keygen { device, rotate, keys, config } => keygen(device, rotate, keys, config.as_deref()),
        Command::Log { command, config, data_dir, http } => {
            let mut config = match CollectorConfig::load(config.as_deref()) {
                Ok(config) => config,
                Err(error) => return usage_error(&error.to_string()),
            };
            if let Some(dir) = data_dir {
                config.data_dir = dir;
            }
            // `--http` alone means "ask the running collector there": no data dir needed.
            let access = match http {
                Some(address) => Ok(LogAccess::Http(address)),
                None => open_log(&config, config.http.listen),
            };
            match access.and_then(|access| log_command(command, &config, access)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => failure(&error),
            }
        }
    }
}

/// Opens the log file, or, when a running collector holds it, talks to that collector.
enum LogAccess {
    File(Log),
    Http(SocketAddr),
}

fn open_log(config: &CollectorConfig, http: Option<SocketAddr>) -> anyhow::Result<LogAccess> {
    let path = config.log_path();
    anyhow::ensure!(path.exists(), "no log at {} (is --data-dir right?)", path.display());
    match Log::open(&path, service::log_config(config)) {
        Ok(log) => Ok(LogAccess::File(log)),
        Err(driftlog_collector::log::LogError::Storage(redb::Error::DatabaseAlreadyOpen)) => match http {
            Some(address) => Ok(LogAccess::Http(address)),
            None => anyhow::bail!("a running collector holds {} and has no HTTP port to ask", path.display()),
        },
        Err(error) => Err(error).with_context(|| format!("cannot open {}", path.display())),
    }
}

fn fetch(address: SocketAddr, path: &str) -> anyhow::Result<String> {
    let (status, body) = http_get(address, path).with_context(|| format!("cannot reach the collector at {address}"))?;
    anyhow::ensure!(status == 200, "collector answered {status}: {}", body.trim());
    Ok(body)
}

fn log_command(command: LogCommand, config: &CollectorConfig, access: LogAccess) -> anyhow::Result<()> {
    match command {
        LogCommand::Tail { from, follow, json, max, kind } => {
            let mut next = from;
            let mut remaining = max.unwrap_or(u64::MAX);
            use std::io::Write;
            let stdout = std::io::stdout();
            loop {
                let batch = remaining.min(1_000) as usize;
                let (lines, after) = match &access {
                    LogAccess::File(log) => read_lines(log, next, batch)?,
                    LogAccess::Http(address) => {
                        let body = fetch(*address, &format!("/log/tail?from={next}&max={batch}"))?;
                        let mut rows = body.lines();
                        let head: serde_json::Value = serde_json::from_str(rows.next().unwrap_or("{}"))?;
                        let after = head.get("next_offset").and_then(|v| v.as_u64()).unwrap_or(next);
                        let lines = rows.map(serde_json::from_str).collect::<Result<Vec<_>, _>>()?;
                        (lines, after)
                    }
                };
                let scanned = lines.len();
                let lines: Vec<_> = match &kind {
                    Some(kind) => lines.into_iter().filter(|line| kind.matches(line)).collect(),
                    None => lines,
                };
                let mut out = stdout.lock();
                for line in &lines {
                    let text = if json { line.to_string() } else { human(line) };
                    if writeln!(out, "{text}").is_err() {
                        return Ok(()); // stdout closed (a pipe into `head`).
                    }
                }
                out.flush().ok();
                remaining = remaining.saturating_sub(lines.len() as u64);
                next = after;
                if remaining == 0 {
                    return Ok(());
                }
                if scanned == 0 {
                    if !follow {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        LogCommand::Stats => {
            let text = match &access {
                LogAccess::File(log) => serde_json::to_string_pretty(&driftlog_collector::log::census::census(log)?)?,
                LogAccess::Http(address) => {
                    let value: serde_json::Value = serde_json::from_str(&fetch(*address, "/log/stats")?)?;
                    serde_json::to_string_pretty(&value)?
                }
            };
            print_all(&text)
        }
        LogCommand::Replay { from } => {
            let text = match &access {
                LogAccess::File(log) => serde_json::to_string_pretty(&driftlog_collector::replay::replay(
                    log,
                    from,
                    &config.windows,
                    &config.watermark,
                    config.statsd_spec(),
                )?)?,
                LogAccess::Http(address) => {
                    let value: serde_json::Value =
                        serde_json::from_str(&fetch(*address, &format!("/log/replay?from={from}"))?)?;
                    serde_json::to_string_pretty(&value)?
                }
            };
            print_all(&text)
        }
    }
}

/// Prints `text` and a newline; a closed stdout (a pipe into `head`) ends the output quietly.
fn print_all(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}

/// SIGTERM and SIGINT drop `trigger` (the service's one shutdown signal); registered before
/// start-up so an early signal is not fatal.
fn install_signal_handlers(trigger: driftlog_collector::shutdown::Trigger) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut terminate, mut interrupt) = runtime.block_on(async {
        Ok::<_, std::io::Error>((signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?))
    })?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        });
        drop(trigger);
    })?;
    Ok(())
}

fn run(config: Option<&Path>, overrides: &Overrides) -> ExitCode {
    // mimalloc asks for transparent huge pages on its memory, so every first touch of a 2 MiB
    // range zeroes all of it, and memory handed back to the kernel is zeroed again when
    // reused. For the committer (redb allocates a zeroed buffer per page it writes) that was
    // 8 % of the whole collector's samples in the single-event bench, after a warm-up;
    // without huge pages its CPU per event halved.
    if let Err(error) = nix::sys::prctl::set_thp_disable(true) {
        tracing::debug!(%error, "cannot turn transparent huge pages off");
    }
    let config = match CollectorConfig::load_with(config, overrides) {
        Ok(config) => config,
        Err(error) => return usage_error(&error.to_string()),
    };
    let (trigger, shutdown) = driftlog_collector::shutdown::channel();
    if let Err(error) = install_signal_handlers(trigger) {
        return failure(&anyhow::anyhow!(error).context("cannot install signal handlers"));
    }
    let result = service::run(&config, shutdown, |listening| {
        for (name, local) in &listening.sources {
            eprintln!("driftlog-collector: {name} listening on {local}");
        }
        if let Some(http) = listening.http {
            eprintln!("driftlog-collector: metrics on http://{http}/metrics, health on /health");
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => failure(&error),
    }
}

fn keygen(device: u64, rotate: bool, keys: Option<PathBuf>, config: Option<&Path>) -> ExitCode {
    let config = match CollectorConfig::load(config) {
        Ok(config) => config,
        Err(error) => return usage_error(&error.to_string()),
    };
    let path = keys.or(config.keys_file).unwrap_or_else(|| PathBuf::from("driftlog-keys.toml"));
    match driftlog_collector::keys::keygen(&path, device, rotate) {
        Ok(generated) => {
            // stdout is the agent's key file and nothing else (`> agent.key` works); what
            // happened goes to stderr.
            print!("{}", generated.agent_file);
            let retired = match generated.retired.as_slice() {
                [] => String::new(),
                ids => {
                    format!(" (retired key id {})", ids.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(", "))
                }
            };
            eprintln!(
                "driftlog-collector: device {device} has key id {}{retired} in {}; save the two lines above as the agent's key_file (mode 0600)",
                generated.key_id,
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => failure(&error),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("driftlog-collector: {message}");
    ExitCode::from(2)
}

fn failure(error: &anyhow::Error) -> ExitCode {
    eprintln!("driftlog-collector: {error:#}");
    ExitCode::from(1)
}
