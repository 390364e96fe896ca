//! Metrics computed at scrape time from the snapshots the acceptor and the window processor
//! publish (a `prometheus-client` [`Collector`]): the endpoint's counters, per-device
//! last-seen times and clock models, the window pipeline's counters, and the forwarder's lag.
//! Their owners keep plain structs; nothing here is updated per frame.

use super::{AcceptorSnapshot, Metrics, Parts, WindowsSnapshot};
use driftlog_eventtime::clock::Estimate;
use driftlog_http::scrape::{counter, family, gauge};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use std::fmt::Error;
use std::sync::Arc;

#[derive(Debug)]
pub(super) struct SnapshotCollector {
    pub(super) metrics: Arc<Metrics>,
    pub(super) parts: Parts,
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut out: DescriptorEncoder<'_>) -> Result<(), Error> {
        let metrics = &self.metrics;
        if self.parts.forwarder {
            let lag = metrics.log_next_offset.get().saturating_sub(metrics.forwarder_offset.get());
            gauge(
                &mut out,
                "driftlog_forwarder_lag_offsets",
                "Log offsets not yet acknowledged by JetStream.",
                lag as f64,
            )?;
        }
        let snapshot = metrics.snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        encode_acceptor(&snapshot, &mut out)?;
        if self.parts.windows {
            let windows = metrics.windows.lock().unwrap_or_else(|p| p.into_inner()).clone();
            encode_windows(&windows, metrics.log_next_offset.get(), &mut out)?;
        }
        Ok(())
    }
}

fn encode_acceptor(snapshot: &AcceptorSnapshot, out: &mut DescriptorEncoder<'_>) -> Result<(), Error> {
    let endpoint = &snapshot.endpoint;
    let counters = [
        ("driftlog_frames_accepted", "Frames that authenticated and were taken in.", endpoint.datagrams_accepted),
        ("driftlog_events_received", "Events admitted for the first time.", endpoint.events_new),
        ("driftlog_events_duplicate", "Events received again and dropped as duplicates.", endpoint.events_duplicate),
        ("driftlog_events_tombstoned", "Sequence numbers devices reported dropped (tombstones).", endpoint.tombstoned),
        (
            "driftlog_events_unrecoverable",
            "Sequence numbers inferred lost (the device no longer holds them).",
            endpoint.unrecoverable,
        ),
        ("driftlog_acks_sent", "ACKs sent.", endpoint.acks_sent),
        ("driftlog_naks_sent", "NAKs sent.", endpoint.naks_sent),
        ("driftlog_clock_samples_rejected", "Clock samples rejected as inconsistent.", snapshot.clock_samples_rejected),
        (
            "driftlog_clock_models_evicted",
            "Clock models dropped for the clock.max_models bound.",
            snapshot.clock_models_evicted,
        ),
    ];
    for (name, help, value) in counters {
        counter(out, name, help, value)?;
    }
    gauge(out, "driftlog_streams", "Receivers (device, stream, epoch) held in memory.", snapshot.streams as f64)?;
    let states = &snapshot.stream_states;
    gauge(out, "driftlog_stream_states", "Stream dedup states the log holds.", states.states as f64)?;
    gauge(
        out,
        "driftlog_stream_floors",
        "(device, stream) pairs whose finished epochs are compacted.",
        states.floors as f64,
    )?;
    let stream_counters = [
        (
            "driftlog_streams_evicted",
            "Idle receivers dropped from memory (their state stays in the log).",
            endpoint.streams_evicted,
        ),
        (
            "driftlog_streams_restored",
            "Receivers brought back from the log for a frame of their stream.",
            endpoint.streams_restored,
        ),
        (
            "driftlog_streams_finished",
            "Receivers for frames of finished (compacted) epochs: all duplicates.",
            endpoint.streams_finished,
        ),
        ("driftlog_stream_states_compacted", "Stream states deleted because their epoch finished.", states.compacted),
    ];
    for (name, help, value) in stream_counters {
        counter(out, name, help, value)?;
    }
    let filter = &snapshot.source_filter;
    counter(
        out,
        "driftlog_frames_shed",
        "Frames dropped unread because their source address kept failing authentication (limits.source_failures_per_s).",
        filter.shed,
    )?;
    gauge(
        out,
        "driftlog_source_filter_sources",
        "Source addresses the pre-authentication filter tracks.",
        filter.sources as f64,
    )?;
    counter(
        out,
        "driftlog_source_filter_untracked",
        "Authentication failures of sources the full filter table could not track (limits.max_sources).",
        filter.untracked,
    )?;
    family(
        out,
        "driftlog_frames_rejected",
        "Frames rejected, by reason.",
        MetricType::Counter,
        "reason",
        endpoint.rejects.iter().map(|(reason, count)| (reason.name().to_string(), count as f64)),
    )?;
    family(
        out,
        "driftlog_device_last_seen_seconds",
        "When a device's last accepted frame arrived (unix time).",
        MetricType::Gauge,
        "device",
        snapshot.devices_last_seen_unix_ms.iter().map(|(device, ms)| (device.to_string(), *ms as f64 / 1e3)),
    )?;
    type PerDevice = (&'static str, &'static str, fn(&Estimate) -> f64);
    let per_device: [PerDevice; 5] = [
        (
            "driftlog_device_clock_offset_seconds",
            "Collector Unix time minus device monotonic time: the device's boot time on the collector clock.",
            |e| e.offset_us / 1e6,
        ),
        ("driftlog_device_clock_drift_ppm", "Estimated device clock rate error (positive: fast).", |e| e.drift_ppm),
        ("driftlog_device_clock_min_delay_seconds", "Least one-way or round-trip delay seen.", |e| {
            e.min_delay_us as f64 / 1e6
        }),
        ("driftlog_device_clock_uncertainty_seconds", "Error bound of the current correction.", |e| {
            e.uncertainty_us as f64 / 1e6
        }),
        ("driftlog_device_clock_samples", "Clock samples the model uses.", |e| e.samples_used as f64),
    ];
    for (name, help, value) in per_device {
        // `+ 0.0` turns -0 (a drift too small to estimate yet) into 0.
        let series = snapshot.clocks.iter().map(|(device, estimate)| (device.to_string(), value(estimate) + 0.0));
        family(out, name, help, MetricType::Gauge, "device", series)?;
    }
    Ok(())
}

fn watermark_seconds(unix_us: i64) -> f64 {
    match unix_us {
        i64::MIN => f64::NEG_INFINITY,
        i64::MAX => f64::INFINITY,
        us => us as f64 / 1e6,
    }
}

fn encode_windows(
    windows: &WindowsSnapshot,
    log_next_offset: u64,
    out: &mut DescriptorEncoder<'_>,
) -> Result<(), Error> {
    let stats = &windows.stats;
    gauge(
        out,
        "driftlog_windows_lag_offsets",
        "Log offsets the window processor has not read yet.",
        log_next_offset.saturating_sub(windows.next_offset) as f64,
    )?;
    gauge(
        out,
        "driftlog_watermark_seconds",
        "The fleet's event-time watermark (unix time; minimum over active devices).",
        watermark_seconds(windows.watermark_unix_us),
    )?;
    let state = &windows.state;
    let levels = [
        (
            "driftlog_windows_open",
            "Fleet windows in memory (open, or holding late updates).",
            state.fleet_windows_open as f64,
        ),
        (
            "driftlog_windows_stored",
            "Fleet windows that fired and wait in the log's file for late events or their cleanup.",
            state.fleet_windows_stored as f64,
        ),
        (
            "driftlog_windows_late_updates_pending",
            "Fleet windows holding late events not emitted yet (a draining device still owes them events).",
            state.late_updates_pending as f64,
        ),
        ("driftlog_windows_devices", "Devices the windows track.", state.devices as f64),
        (
            "driftlog_windows_devices_open",
            "Devices with per-device windows waiting for their completeness (or their time-out).",
            state.devices_with_open_windows as f64,
        ),
        (
            "driftlog_windows_devices_holding",
            "Devices draining a backlog that hold the fleet's watermark.",
            state.devices_holding as f64,
        ),
        (
            "driftlog_windows_devices_resident",
            "Devices whose window state is in memory (the rest is in the log's file).",
            state.devices_resident as f64,
        ),
        (
            "driftlog_windows_state_memory_bytes",
            "Estimated memory of window state in memory (watermark.state_memory_bytes bounds the device units).",
            (state.resident_bytes + state.pending_bytes) as f64,
        ),
    ];
    for (name, help, value) in levels {
        gauge(out, name, help, value)?;
    }
    let counters = [
        ("driftlog_windows_units_loaded", "Device window units read back from the log's file.", state.residency.loaded),
        ("driftlog_windows_units_evicted", "Device window units moved out of memory.", state.residency.evicted),
        (
            "driftlog_windows_units_unreadable",
            "Stored device window units that did not decode (the device started afresh).",
            state.residency.unreadable,
        ),
        ("driftlog_window_claims", "Completeness claims the windows read.", stats.claims),
        (
            "driftlog_window_results_timed_out",
            "Per-device window results emitted because the device stayed away watermark.max_outage_ms.",
            stats.timed_out,
        ),
        (
            "driftlog_window_completeness_refused",
            "Completeness inputs refused: claims going backwards, and what per-device bounds turned away.",
            stats.completeness_refused,
        ),
        (
            "driftlog_windows_devices_forgotten",
            "Devices forgotten for the watermark.max_devices bound.",
            stats.devices_forgotten,
        ),
        ("driftlog_window_events", "Numeric events the windows processed.", stats.events),
        ("driftlog_window_results", "Window results emitted (INSERT).", stats.results),
        (
            "driftlog_window_retractions",
            "Earlier results retracted by late updates or session merges.",
            stats.retractions,
        ),
        ("driftlog_event_times_clamped", "Corrected event times clamped to their receive time.", stats.clamped),
    ];
    for (name, help, value) in counters {
        counter(out, name, help, value)?;
    }
    family(
        out,
        "driftlog_event_times_quarantined",
        "Event times that fell back to receive time, by reason.",
        MetricType::Counter,
        "reason",
        stats.quarantined.iter().map(|(reason, count)| (reason.clone(), *count as f64)),
    )?;
    family(
        out,
        "driftlog_late_events",
        "Events later than a window's allowed lateness (stored as late records).",
        MetricType::Counter,
        "window",
        stats.late.iter().map(|(window, count)| (window.clone(), *count as f64)),
    )?;
    family(
        out,
        "driftlog_statsd_event_time",
        "StatsD by event time (agents' samples per device, |T lines per source): samples aggregated, results and retractions emitted, samples late or refused by a bound.",
        MetricType::Counter,
        "what",
        windows.statsd.series().into_iter().map(|(what, value)| (what.to_string(), value as f64)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn names_and_values_are_those_dashboards_read() {
        let metrics = Arc::new(Metrics::new());
        metrics.events_committed.inc_by(5);
        metrics.log_next_offset.set(12);
        metrics.forwarder_offset.set(10);
        metrics.observe_commit(0.003);
        {
            let mut snapshot = metrics.snapshot.lock().unwrap();
            snapshot.endpoint.events_new = 9;
            snapshot.endpoint.rejects.record(driftlog_protocol::wire::Reject::Forged);
            snapshot.devices_last_seen_unix_ms.insert(42, 1_500);
        }
        let mut registry = Registry::default();
        metrics.register(&mut registry, Parts { forwarder: true, windows: true });
        let text = driftlog_http::render(&registry).unwrap();
        for line in [
            "# TYPE driftlog_events_committed_total counter\n",
            "driftlog_events_committed_total 5\n",
            "driftlog_events_received_total 9\n",
            "driftlog_frames_rejected_total{reason=\"forged\"} 1\n",
            "driftlog_device_last_seen_seconds{device=\"42\"} 1.5\n",
            "driftlog_forwarder_lag_offsets 2",
            "driftlog_log_accepting 1\n",
            "driftlog_commit_seconds_bucket{le=\"0.005\"} 1\n",
            "driftlog_commit_seconds_count 1\n",
            "driftlog_watermark_seconds ",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        let mut without = Registry::default();
        Arc::new(Metrics::new()).register(&mut without, Parts::default());
        let text = driftlog_http::render(&without).unwrap();
        assert!(!text.contains("driftlog_forwarder") && !text.contains("driftlog_window"), "{text}");
    }
}
