//! The core as a start or a restart builds it: from the configuration and the log alone, so
//! the collector and the simulator's crashed-and-restarted collector take one path.
//!
//! What comes back from the log: the boot epoch (one more than the last), whether the log
//! takes a full commit (a restart on a full disk refuses frames until a probe passes), the
//! receivers' dedup states (loaded on each stream's first frame, not all at start) and the
//! clock models.

use super::{IngestConfig, IngestCore};
use crate::clocks::Clocks;
use crate::config::CollectorConfig;
use crate::keys::Keys;
use crate::log::{Commit, Log, LogError};
use crate::stream_states::{StateLimits, StreamBounds, StreamStates};
use driftlog_protocol::Instant;
use driftlog_protocol::endpoint::{Endpoint, EndpointConfig};
use std::sync::Arc;
use std::time::Duration;

/// A core restored from the log, and what a start reports about it.
#[derive(Debug)]
pub struct Restored {
    pub core: IngestCore,
    /// This run's boot epoch.
    pub epoch: u64,
    /// False when the probe at start failed: the core refuses frames until one passes.
    pub log_takes_a_full_commit: bool,
    pub stream_states: u64,
    pub clock_models: usize,
}

impl IngestConfig {
    pub fn from_config(config: &CollectorConfig) -> IngestConfig {
        IngestConfig {
            flush_interval: Duration::from_millis(config.log.flush_interval_ms),
            max_block_bytes: config.log.max_block_bytes,
            max_commit_bytes: config.log.max_commit_bytes,
            claim_interval_ms: (!config.windows.is_empty()).then_some(config.watermark.claim_interval_ms),
            max_streams: config.limits.max_streams,
            source_filter: config.source_filter(),
        }
    }
}

/// Builds the ingest core for a run that starts at `now` on `log`. `fresh_epoch` seeds the
/// boot epoch of a log that has none yet (see [`Log::next_epoch`]).
pub fn restore(
    config: &CollectorConfig,
    log: &Arc<Log>,
    keys: Keys,
    fresh_epoch: u64,
    now: Instant,
) -> Result<Restored, LogError> {
    let epoch = log.next_epoch(fresh_epoch)?;
    // A restart on a full disk must not report healthy until the first commit fails: ask
    // now whether a full commit fits, as the probe after a failed commit does.
    let probe = Commit { reserve_bytes: config.log.max_commit_bytes as u64, ..Commit::default() };
    let log_takes_a_full_commit = match log.commit(&probe, now.as_micros() / 1_000) {
        Ok(_) => true,
        Err(error) => {
            tracing::error!(%error, "the log cannot take a full commit: not acknowledging until it can (probing once a second)");
            false
        }
    };
    let mut endpoint_config = EndpointConfig::new(epoch, epoch ^ 0x5EED);
    endpoint_config.max_streams = config.limits.max_streams;
    endpoint_config.max_streams_per_device = config.limits.max_streams_per_device;
    endpoint_config.max_datagram_bytes = config.limits.max_datagram_bytes;
    let endpoint = Endpoint::new(endpoint_config, keys);
    let limits = StateLimits {
        max_states: config.limits.max_stream_states,
        max_states_per_device: config.limits.max_stream_states_per_device,
    };
    let states = StreamStates::open(log.clone(), limits)?;
    let stream_states = states.stats().states;
    let bounds = StreamBounds::new(states, Duration::from_secs(config.limits.stream_idle_s));
    let mut clocks = Clocks::new(config.clock.to_config(), config.clock.max_models);
    let clock_models = clocks.restore(log.clocks()?);
    let mut core = IngestCore::new(IngestConfig::from_config(config), endpoint, bounds, clocks);
    if !log_takes_a_full_commit {
        core.refuse_until_a_probe_passes(now);
    }
    Ok(Restored { core, epoch, log_takes_a_full_commit, stream_states, clock_models })
}
