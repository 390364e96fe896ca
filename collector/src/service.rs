//! `driftlog-collector run`: opens the log, restores every receiver's dedup state, starts the
//! sources, the acceptor, the committer, HTTP and the forwarder, and shuts them down in
//! order on SIGTERM or ctrl-c, the mini-redis way: one signal (a dropped
//! [`crate::shutdown::Trigger`]) stops the sources and StatsD's listeners; then each part is
//! awaited in turn, and each stage's end starts the next one's stop (a closed queue, a
//! client gone, a dropped trigger), with no flag and no sleep:
//! 1. the sources' threads end; their queue closes after their last batch;
//! 2. the acceptor drains that queue, commits what it admitted, sends the last ACKs;
//! 3. StatsD flushes a last time, committed;
//! 4. the window processor takes the last commits into its final checkpoint;
//! 5. the committer ends with its last client;
//! 6. the forwarder and the HTTP server stop; exit 0.

use crate::acceptor::{Acceptor, AcceptorConfig};
use crate::committer::Writer;
use crate::config::CollectorConfig;
use crate::ingest::udp::UdpSource;
use crate::ingest::zmq::ZmqSource;
use crate::ingest::{Source, Started};
use crate::log::{Log, LogConfig};
use crate::metrics::{Metrics, Parts};
use crate::shutdown::Shutdown;
use anyhow::Context;
use driftlog_http::HttpLimits;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// Where a running collector listens (tests and logs).
#[derive(Clone, Debug, Default)]
pub struct Listening {
    pub sources: Vec<(String, String)>,
    pub http: Option<std::net::SocketAddr>,
}

pub fn log_config(config: &CollectorConfig) -> LogConfig {
    let mut protected_readers = Vec::new();
    if let Some(js) = &config.forward.jetstream
        && js.protect_unforwarded
    {
        protected_readers.push(js.reader.clone());
    }
    if !config.windows.is_empty() {
        // Events the windows have not taken stay until they have.
        protected_readers.push(crate::windows::READER.to_string());
    }
    LogConfig {
        max_bytes: config.log.retention_max_bytes,
        max_age_ms: (config.log.retention_max_age_s > 0).then(|| config.log.retention_max_age_s * 1_000),
        protected_readers,
        cache_bytes: config.log.cache_bytes,
    }
}

/// Runs the collector until `shutdown` (its trigger dropped), then stops it in order.
/// `on_listening` is called once everything is bound.
pub fn run(
    config: &CollectorConfig,
    mut shutdown: Shutdown,
    on_listening: impl FnOnce(&Listening),
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let keys = crate::keys::load_keyring(config.keys_file.as_deref(), config.key_mode())?;
    let log = Arc::new(Log::open(&config.log_path(), log_config(config)).context("cannot open the log")?);
    let fresh = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let key_count = keys.len();
    let restored =
        crate::ingest_core::restore(config, &log, keys, fresh >> 2, crate::wall_clock::AcceptorClock::default().now())?;
    let log_takes_a_full_commit = restored.log_takes_a_full_commit;
    let metrics = Arc::new(Metrics::new());
    metrics.set_log_accepting(log_takes_a_full_commit);
    let stats = log.stats()?;
    metrics.log_next_offset.set(stats.next_offset);
    metrics.log_first_offset.set(stats.first_offset);
    metrics.log_held_bytes.set(stats.held_bytes);
    metrics.log_file_bytes.set(stats.file_bytes);

    tracing::info!(
        epoch = restored.epoch,
        stream_states = restored.stream_states,
        clock_models = restored.clock_models,
        keys = key_count,
        next_offset = stats.next_offset,
        "log opened"
    );

    let (batch_tx, batch_rx) = std::sync::mpsc::sync_channel(config.limits.ingest_queue_batches);
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    let udp = &config.ingest.udp;
    if udp.enabled {
        sources.push(Box::new(UdpSource {
            listen: udp.listen,
            sockets: config.udp_sockets(),
            receive_buffer_bytes: udp.receive_buffer_bytes,
            batch_datagrams: udp.batch_datagrams,
            max_datagram_bytes: config.limits.max_datagram_bytes,
            multicast: None,
            metrics: metrics.clone(),
        }));
    }
    if let Some(multicast) = &config.ingest.multicast {
        sources.push(Box::new(UdpSource {
            listen: std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, multicast.port)),
            sockets: 1,
            receive_buffer_bytes: udp.receive_buffer_bytes,
            batch_datagrams: udp.batch_datagrams,
            max_datagram_bytes: config.limits.max_datagram_bytes,
            multicast: Some((multicast.group, multicast.interface)),
            metrics: metrics.clone(),
        }));
    }
    if let Some(zmq) = &config.ingest.zmq {
        sources.push(Box::new(ZmqSource {
            data_endpoint: zmq.data_endpoint.clone(),
            ack_endpoint: zmq.ack_endpoint.clone(),
            metrics: metrics.clone(),
        }));
    }
    let mut listening = Listening::default();
    let mut replies = Vec::new();
    let mut source_threads = Vec::new();
    for (id, source) in sources.into_iter().enumerate() {
        let name = source.name();
        let Started { reply, threads, local } = source.start(id as u16, batch_tx.clone(), shutdown.clone())?;
        tracing::info!(source = name, listen = %local, "ingest started");
        listening.sources.push((name.to_string(), local));
        replies.push(reply);
        source_threads.extend(threads);
    }
    drop(batch_tx);

    // Two clients, the acceptor and the window processor, and StatsD's flusher when it runs.
    let clients = 2 + usize::from(config.statsd.is_some());
    let (committer, committer_thread) = crate::committer::spawn(log.clone(), clients, metrics.clone())?;

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    // Stages after the sources: the window processor stops once ingest has committed its
    // last block, the forwarder and HTTP once the committer has written the last commit.
    let (ingest_running, ingest_stopped) = crate::shutdown::channel();
    let (writers_running, writers_stopped) = crate::shutdown::channel();
    let statsd = match &config.statsd {
        Some(section) => {
            let client = committer.client(Writer::Statsd);
            let running =
                crate::statsd::start(section, runtime.handle(), client, config.log.max_block_bytes, shutdown.clone())?;
            listening.sources.extend(running.listening.iter().cloned());
            Some(running)
        }
        None => None,
    };
    if let Some(address) = config.http.listen {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(address))
            .with_context(|| format!("cannot bind HTTP {address}"))?;
        listening.http = listener.local_addr().ok();
        // Every module registers its metrics here, before the registry is shared.
        let mut registry = Registry::default();
        let parts = Parts { forwarder: config.forward.jetstream.is_some(), windows: !config.windows.is_empty() };
        metrics.register(&mut registry, parts);
        if let Some(running) = &statsd {
            running.telemetry.register(&mut registry);
        }
        let router = crate::http::router(Arc::new(registry), metrics.clone(), log.clone(), Arc::new(config.clone()));
        let mut stopped = writers_stopped.clone();
        runtime.spawn(driftlog_http::serve(listener, router, HttpLimits::default(), async move {
            stopped.recv().await;
        }));
    }
    let forwarder = config.forward.jetstream.clone().map(|js| {
        runtime.spawn(crate::forward::jetstream::run(js, log.clone(), metrics.clone(), writers_stopped.clone()))
    });
    on_listening(&listening);

    let acceptor_config = AcceptorConfig { keys_file: config.keys_file.clone(), key_mode: config.key_mode() };
    let acceptor = Acceptor::new(
        acceptor_config,
        restored.core,
        replies,
        committer.client(Writer::Ingest),
        batch_rx,
        metrics.clone(),
    );
    // The window processor reads the log on its own thread; it stops after the acceptor so
    // it can take the last commit's events into its final checkpoint.
    let windows_thread = if config.windows.is_empty() {
        None
    } else {
        let processor = crate::windows::processor::Processor::open(
            log.clone(),
            committer.client(Writer::Windows),
            metrics.clone(),
            &config.windows,
            &config.watermark,
            config.statsd_spec(),
        )?
        .with_max_block_bytes(config.log.max_block_bytes);
        Some(processor.spawn(ingest_stopped)?)
    };
    // The committer runs until its last client (the acceptor, the processor) is gone.
    drop(committer);
    // The acceptor runs until the sources' queue closes (step 2 of the order above).
    let acceptor_thread = std::thread::Builder::new().name("acceptor".into()).spawn(move || acceptor.run())?;
    runtime.block_on(shutdown.recv());
    tracing::info!("shutting down: stopping ingest");
    // The sources saw the signal; the acceptor drains what they queued, commits it and sends
    // the last ACKs once the last of them is gone.
    let _ = acceptor_thread.join();
    // StatsD's listeners saw the signal too; its last flush is committed while the
    // committer runs.
    if let Some(statsd) = statsd {
        statsd.join();
    }
    // Reply threads (the ZeroMQ PUB) end when the acceptor drops their queues.
    for thread in source_threads {
        let _ = thread.join();
    }
    // The window processor takes the last commit's events into its final checkpoint, which
    // it commits through the committer; then the committer's last client is gone.
    drop(ingest_running);
    if let Some(thread) = windows_thread {
        let _ = thread.join();
    }
    let _ = committer_thread.join();
    drop(writers_running);
    if let Some(forwarder) = forwarder {
        let _ = runtime.block_on(forwarder);
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    let stats = log.stats()?;
    tracing::info!(next_offset = stats.next_offset, held_bytes = stats.held_bytes, "stopped");
    Ok(())
}
