//! `driftlog-agent`: parses the command line, sets up logging, and calls into the library.

use clap::{Parser, Subcommand};
use driftlog_agent::config::{AgentConfig, Overrides};
use driftlog_agent::ingest::client::{EmitError, emit_line};
use driftlog_agent::ingest::line::Kind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "driftlog-agent", version, about = "The driftlog device agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (defaults: collector on 127.0.0.1:7400, data under ./driftlog-agent-data).
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Print backlog, oldest unacknowledged age, RTT, retransmissions, drops and tombstones
    /// of the running agent.
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The agent's data directory (as given to `run --data-dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run N virtual devices (own id, key, outbox, skewed clock) against a collector: the
    /// load generator and the demo.
    Simulate {
        #[arg(long, default_value_t = 3)]
        devices: usize,
        /// Events per second per device.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Seconds to generate for.
        #[arg(long)]
        duration: Option<f64>,
        /// Events per device (instead of --duration).
        #[arg(long)]
        events: Option<u64>,
        /// Largest wall-clock offset; devices spread over [-X, +X].
        #[arg(long, default_value_t = 0.0)]
        clock_offset_ms: f64,
        /// Largest drift; devices spread over [-Y, +Y].
        #[arg(long, default_value_t = 0.0)]
        clock_drift_ppm: f64,
        #[arg(long, default_value = "127.0.0.1:7400", value_parser = driftlog_agent::config::resolve_address)]
        collector: SocketAddr,
        #[arg(long, default_value = "driftlog-agent-data/simulate")]
        data_dir: PathBuf,
        /// Derives every device key.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the devices' keys, in the collector's key file format, here.
        #[arg(long)]
        keys_out: Option<PathBuf>,
        /// Seconds to wait for every outbox to drain after generating.
        #[arg(long, default_value_t = 30.0)]
        drain_timeout: f64,
        /// Replay rate of each device's backlog after an outage.
        #[arg(long, default_value_t = 5_000)]
        backlog_rate: u32,
        /// The first device loses its network this many seconds after the start ...
        #[arg(long, requires = "outage_for")]
        outage_at: Option<f64>,
        /// ... for this many seconds (it keeps generating, then drains its backlog).
        #[arg(long, requires = "outage_at")]
        outage_for: Option<f64>,
    },
    /// Carry a microcontroller's serial link (one datagram per COBS frame) to the collector's
    /// UDP port and back. Holds no state: the firmware and the collector keep reliability end
    /// to end.
    Bridge {
        /// `tcp:HOST:PORT` (listen; QEMU's `-serial tcp:HOST:PORT` connects), `unix:PATH`
        /// (listen), or a device path such as /dev/ttyUSB0.
        #[arg(long)]
        serial: driftlog_agent::bridge::serial::SerialSpec,
        /// The collector's UDP address.
        #[arg(long, default_value = "127.0.0.1:7400")]
        collector: SocketAddr,
        /// Serve Prometheus metrics on this address (`GET /metrics`).
        #[arg(long)]
        metrics: Option<SocketAddr>,
        /// Baud rate of a device path (8N1, raw).
        #[arg(long, default_value_t = 115_200)]
        baud: u32,
        /// Drop this fraction of frames in each direction (loss injection for tests).
        #[arg(long, default_value_t = 0.0)]
        drop_rate: f64,
        /// Seed of the loss injection (default: from the clock).
        #[arg(long)]
        drop_seed: Option<u64>,
        /// Longest COBS frame accepted from the serial link; longer ones are counted and dropped.
        #[arg(long, default_value_t = 2_048)]
        max_frame_bytes: usize,
    },
    /// Check a config file without running.
    Validate {
        #[arg(long)]
        config: PathBuf,
    },
    /// Hand one event to the running agent; returns once it is durable.
    Emit {
        /// `NAME=VALUE` (a set member may be any string).
        event: String,
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        #[arg(long, value_enum, default_value_t = Kind::Gauge)]
        kind: Kind,
        #[arg(long)]
        config: Option<PathBuf>,
        /// The agent's ingest socket (default: from the config).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

/// Exit code for a configuration or usage error.
const EXIT_CONFIG: u8 = 2;

/// Why a command failed: the message (printed as `error: ...`) and the exit code.
struct Failed(u8, String);

impl Failed {
    /// A configuration or usage error.
    fn config(error: impl std::fmt::Display) -> Failed {
        Failed(EXIT_CONFIG, error.to_string())
    }

    /// Anything else (the run itself failed).
    fn run(error: impl std::fmt::Display) -> Failed {
        Failed(1, error.to_string())
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: a log file or journald gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none())
        .init();
    let result = match Cli::parse().command {
        Command::Validate { config } => AgentConfig::load(Some(&config)).map_err(Failed::config).map(|_| {
            println!("{}: ok", config.display());
            ExitCode::SUCCESS
        }),
        Command::Run { config, overrides } => run(config, &overrides),
        Command::Simulate {
            devices,
            rate,
            duration,
            events,
            clock_offset_ms,
            clock_drift_ppm,
            collector,
            data_dir,
            seed,
            keys_out,
            drain_timeout,
            backlog_rate,
            outage_at,
            outage_for,
        } => {
            let options = driftlog_agent::simulate::SimulateOptions {
                devices,
                rate,
                duration: duration.map(Duration::from_secs_f64),
                events,
                clock_offset_ms,
                clock_drift_ppm,
                collector,
                data_dir,
                seed,
                drain_timeout: Duration::from_secs_f64(drain_timeout),
                backlog_events_per_second: backlog_rate,
                outage: outage_at.zip(outage_for).map(|(at, length)| {
                    (Duration::from_secs_f64(at.max(0.0)), Duration::from_secs_f64(length.max(0.0)))
                }),
            };
            simulate(options, keys_out)
        }
        Command::Bridge { serial, collector, metrics, baud, drop_rate, drop_seed, max_frame_bytes } => {
            let drop_seed = drop_seed.unwrap_or_else(|| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
            });
            bridge(driftlog_agent::bridge::BridgeOptions {
                serial,
                collector,
                baud,
                metrics,
                drop_rate,
                drop_seed,
                max_frame_bytes,
            })
        }
        Command::Status { config, data_dir, json } => status(config, data_dir, json),
        Command::Emit { event, tags, kind, config, socket } => emit(&event, &tags, kind, config, socket),
    };
    result.unwrap_or_else(|Failed(code, message)| {
        eprintln!("error: {message}");
        ExitCode::from(code)
    })
}

fn run(config: Option<PathBuf>, overrides: &Overrides) -> Result<ExitCode, Failed> {
    let config = AgentConfig::load_with(config.as_deref(), overrides).map_err(Failed::config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build();
    until_signal(runtime, |shutdown| driftlog_agent::agent::run(config, shutdown)).map_err(Failed::run)
}

/// Runs `task` on `runtime` until it ends; it gets the future that completes on SIGINT or
/// SIGTERM. The error is the message to print.
fn until_signal<F, T>(
    runtime: std::io::Result<tokio::runtime::Runtime>,
    task: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> F,
) -> Result<ExitCode, String>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let runtime = runtime.map_err(|error| format!("cannot start the runtime: {error}"))?;
    runtime
        .block_on(async {
            let shutdown = shutdown_signal()?;
            task(Box::pin(shutdown)).await
        })
        .map_err(|error| format!("{error:#}"))?;
    Ok(ExitCode::SUCCESS)
}

fn simulate(options: driftlog_agent::simulate::SimulateOptions, keys_out: Option<PathBuf>) -> Result<ExitCode, Failed> {
    if let Some(path) = keys_out {
        let keys = driftlog_agent::simulate::fleet_keys(options.seed, options.devices);
        driftlog_agent::simulate::write_keys_file(&path, &keys)
            .map_err(|error| Failed::run(format!("cannot write {}: {error}", path.display())))?;
    }
    let report = driftlog_agent::simulate::run(&options).map_err(|error| Failed::config(format!("{error:#}")))?;
    println!(
        "{} devices generated {} events; {} await acknowledgement, {} retransmitted, {} dropped",
        options.devices, report.generated, report.backlog_remaining, report.retransmitted, report.dropped
    );
    Ok(if report.backlog_remaining == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn bridge(options: driftlog_agent::bridge::BridgeOptions) -> Result<ExitCode, Failed> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    // A bridge that cannot open its serial link or socket is misconfigured: exit code 2.
    until_signal(runtime, |shutdown| driftlog_agent::bridge::run(options, shutdown)).map_err(Failed::config)
}

fn status(config: Option<PathBuf>, data_dir: Option<PathBuf>, json: bool) -> Result<ExitCode, Failed> {
    let overrides = Overrides { data_dir, ..Overrides::default() };
    let config = AgentConfig::load_with(config.as_deref(), &overrides).map_err(Failed::config)?;
    let status = driftlog_agent::status::Status::read(&config.status_path())
        .map_err(|error| Failed::run(format!("{error:#}")))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
    } else {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        print!("{}", status.render(now));
    }
    Ok(ExitCode::SUCCESS)
}

fn emit(
    event: &str,
    tags: &[String],
    kind: Kind,
    config: Option<PathBuf>,
    socket: Option<PathBuf>,
) -> Result<ExitCode, Failed> {
    let line = emit_json(event, tags, kind).map_err(Failed::config)?;
    driftlog_agent::ingest::line::parse_line(&line).map_err(Failed::config)?;
    let socket = match socket {
        Some(socket) => socket,
        None => AgentConfig::load(config.as_deref()).map_err(Failed::config)?.ingest_socket(),
    };
    match emit_line(&socket, &line, Duration::from_secs(10)) {
        Ok(id) => {
            println!("accepted {id}");
            Ok(ExitCode::SUCCESS)
        }
        Err(error @ EmitError::Refused(_)) => Err(Failed::config(error)),
        Err(error) => Err(Failed::run(error)),
    }
}

/// `NAME=VALUE` plus `--tag` and `--kind` as one JSON ingest line.
fn emit_json(event: &str, tags: &[String], kind: Kind) -> Result<String, String> {
    let (name, value) = event.split_once('=').ok_or_else(|| format!("expected NAME=VALUE, got {event:?}"))?;
    let value = if kind == Kind::Set {
        serde_json::Value::String(value.to_string())
    } else {
        let number: f64 = value.parse().map_err(|_| format!("value {value:?} is not a number"))?;
        serde_json::Number::from_f64(number)
            .map(serde_json::Value::Number)
            .ok_or_else(|| format!("value {value:?} is not finite"))?
    };
    let mut tag_map = serde_json::Map::new();
    for tag in tags {
        let (key, tag_value) = tag.split_once('=').ok_or_else(|| format!("expected --tag KEY=VALUE, got {tag:?}"))?;
        tag_map.insert(key.to_string(), serde_json::Value::String(tag_value.to_string()));
    }
    Ok(serde_json::json!({ "name": name, "value": value, "kind": kind.name(), "tags": tag_map }).to_string())
}

/// Registers SIGINT and SIGTERM handlers now (so a signal during start-up is not fatal)
/// and returns a future that completes on either. Must be called inside the runtime.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
