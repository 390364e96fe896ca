//! `driftlog-agent run`: wires the outbox, the driver thread, the ingest socket and the host
//! sampler, and shuts them down in order.

use crate::config::AgentConfig;
use crate::config::TransportKind;
use crate::driver::{CoreConfig, Driver, DriverConfig};
use crate::key::{DEVELOPMENT_KEY_ID, DEVELOPMENT_SECRET};
use crate::outbox::{Outbox, OutboxConfig};
use crate::transport::{AnyTransport, UdpTransport, ZmqTransport};
use anyhow::Context;
use driftlog_protocol::SenderConfig;
use driftlog_protocol::wire::MacKey;
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Runs the agent until `shutdown` completes, then stops the inputs, commits what they
/// handed over, and returns. Events already accepted stay in the outbox for the next run.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let policy = config.outbox.drop_policy;
    let outbox = Outbox::open(&config.outbox_path(), OutboxConfig { max_bytes: config.outbox.max_bytes, policy })
        .with_context(|| format!("cannot open the outbox {}", config.outbox_path().display()))?;
    let (key_id, key) = match &config.key_file {
        Some(path) => crate::key::load(path)?,
        None => {
            tracing::warn!(
                "no key_file: using the development key, which anyone can forge; create a key with `driftlog-collector keygen`"
            );
            (DEVELOPMENT_KEY_ID, MacKey::new(&DEVELOPMENT_SECRET))
        }
    };
    let transport = match config.collector.transport {
        TransportKind::Udp | TransportKind::Multicast => {
            AnyTransport::Udp(UdpTransport::bind(&config.collector).context("cannot open the UDP socket")?)
        }
        TransportKind::Zmq => AnyTransport::Zmq(ZmqTransport::start(
            config.collector.zmq_data_endpoint.clone(),
            config.collector.zmq_ack_endpoint.clone(),
            config.device_id,
        )),
    };
    let ingest = crate::ingest::socket::bind(&config.ingest_socket()).await?;
    // Bound before anything starts: a taken port is an error at start, not a silent loss.
    let statsd_udp = match config.statsd.as_ref().and_then(|s| s.udp.map(|udp| (udp, s.receive_buffer_bytes))) {
        Some((address, buffer)) => Some(
            crate::statsd::bind_udp(address, buffer)
                .with_context(|| format!("cannot bind the StatsD UDP socket {address}"))?,
        ),
        None => None,
    };
    let statsd_unix = match config.statsd_unix_socket() {
        Some(path) => Some(
            crate::statsd::bind_unix(&path)
                .with_context(|| format!("cannot bind the StatsD Unix socket {}", path.display()))?,
        ),
        None => None,
    };
    let statsd_counters = config.statsd.as_ref().map(|_| std::sync::Arc::new(crate::statsd::StatsdCounters::default()));
    tracing::info!(
        device = config.device_id,
        epoch = outbox.epoch(),
        held_events = outbox.held_events(),
        collector = %config.collector.address,
        socket = %config.ingest_socket().display(),
        "agent started"
    );

    let mut sender = SenderConfig::new(0);
    sender.max_datagram_bytes = config.sender.max_datagram_bytes;
    sender.max_events_per_frame = config.sender.max_events_per_frame;
    sender.max_in_flight_bytes = config.sender.max_in_flight_bytes;
    sender.backlog_events_per_second = config.sender.backlog_events_per_second;
    sender.heartbeat_interval = Duration::from_millis(config.sender.heartbeat_interval_ms);
    let driver_config = DriverConfig {
        core: CoreConfig {
            sender,
            flush_interval: Duration::from_millis(config.outbox.flush_interval_ms),
            flush_max_events: config.outbox.flush_max_events,
            key_id,
            key,
        },
        status_path: Some(config.status_path()),
        statsd: statsd_counters.clone(),
    };
    let initial_backlog = outbox.held_events();
    let driver = Driver::new(driver_config, outbox, transport, crate::clock::SystemClock)?;
    let status = driver.subscribe_status();
    let (submissions, queue) = mpsc::channel(config.ingest.queue_events);
    let (stop, stopped) = watch::channel(false);

    // The driver blocks on fsync, so it gets its own thread and runtime.
    let driver_shutdown = stopped.clone();
    let driver_thread = std::thread::Builder::new().name("driftlog-driver".into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok::<_, std::io::Error>(runtime.block_on(driver.run(queue, driver_shutdown)))
    })?;

    let metrics_task = match config.metrics.listen {
        Some(listen) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on metrics.listen {listen}"))?;
            let router = driftlog_http::metrics_router(std::sync::Arc::new(crate::metrics::registry(status.clone())));
            let mut stopped = stopped.clone();
            Some(tokio::spawn(driftlog_http::serve(
                listener,
                router,
                driftlog_http::HttpLimits::default(),
                async move {
                    let _ = stopped.changed().await;
                },
            )))
        }
        None => None,
    };
    if initial_backlog >= PROGRESS_BAR_MIN_EVENTS && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        tokio::spawn(show_drain_progress(status.clone(), initial_backlog, stopped.clone()));
    }
    let ingest_task = tokio::spawn(crate::ingest::socket::serve(
        ingest,
        submissions.clone(),
        config.ingest.max_clients,
        stopped.clone(),
    ));
    let mut statsd_tasks = Vec::new();
    if let (Some(section), Some(counters)) = (&config.statsd, statsd_counters) {
        let listener = std::sync::Arc::new(crate::statsd::Listener {
            dialect: section.dialect,
            max_packet_bytes: section.max_packet_bytes,
            counters,
            submissions: submissions.clone(),
        });
        if let Some(socket) = statsd_udp {
            tracing::info!(listen = %socket.local_addr()?, "StatsD listening (UDP)");
            statsd_tasks.push(tokio::spawn(crate::statsd::serve_udp(socket, listener.clone(), stopped.clone())));
        }
        if let Some(socket) = statsd_unix {
            tracing::info!(path = ?config.statsd_unix_socket(), "StatsD listening (Unix datagram)");
            statsd_tasks.push(tokio::spawn(crate::statsd::serve_unix(socket, listener, stopped.clone())));
        }
    }
    let host_task = config.host.enabled.then(|| {
        tokio::spawn(crate::host::run(
            Duration::from_millis(config.host.interval_ms),
            submissions.clone(),
            stopped.clone(),
        ))
    });
    drop(submissions);

    shutdown.await;
    tracing::info!("shutting down: stopping inputs, committing what they handed over");
    // One shutdown signal, as in the collector: dropping its sender wakes every task.
    drop(stop);
    let _ = ingest_task.await;
    for task in statsd_tasks {
        let _ = task.await;
    }
    if let Some(task) = host_task {
        let _ = task.await;
    }
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    let stats = driver_thread.join().map_err(|_| anyhow::anyhow!("the driver thread panicked"))??;
    let _ = std::fs::remove_file(config.ingest_socket());
    if let Some(path) = config.statsd_unix_socket() {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!(datagrams_sent = stats.datagrams_sent, commits = stats.commits, "agent stopped");
    Ok(())
}

/// A backlog at least this large at start gets a progress bar (in a terminal).
const PROGRESS_BAR_MIN_EVENTS: u64 = 10_000;

/// Shows the backlog draining, from the status the driver publishes.
async fn show_drain_progress(
    mut status: crate::metrics::StatusWatch,
    initial: u64,
    mut stopped: watch::Receiver<bool>,
) {
    let bar = indicatif::ProgressBar::new(initial);
    bar.set_style(
        indicatif::ProgressStyle::with_template("draining backlog {bar:40} {pos}/{len} events ({per_sec}, {eta} left)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            changed = status.changed() => if changed.is_err() { break },
        }
        let backlog = status.borrow_and_update().as_ref().map(|status| status.backlog_events);
        if let Some(backlog) = backlog {
            bar.set_position(initial.saturating_sub(backlog));
            if backlog == 0 {
                break;
            }
        }
    }
    bar.finish_and_clear();
}
