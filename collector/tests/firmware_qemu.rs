//! The firmware end to end: the Cortex-M image boots in QEMU (`-icount shift=auto,sleep=off`,
//! so device minutes pass in seconds), its UART goes through the real bridge to the real
//! collector binary, and the collector's log is checked against what the firmware reports
//! over semihosting when it exits. Any firmware panic fails the test (its panic handler
//! reports over semihosting).
//!
//! QEMU's device clock runs tens of times faster than the host's here, so the collector's
//! group commit and ACK delay last about a device second, and a collector stalled by a slow
//! fsync for a host second lasts device half-minutes: the lossy runs sample once a device
//! second (2 events), so the 128-event ring holds a minute of device time, and the firmware
//! tests run one at a time.

mod firmware_support;
mod support;

use firmware_support::{Bridge, OUTBOX_EVENTS, Qemu, free_port, image, records, unix_now_us};
use std::time::Duration;
use support::{CollectorProcess, wait_until};

const RUN_TIMEOUT: Duration = Duration::from_secs(180);

fn collector(dir: &std::path::Path, image: &firmware_support::Image) -> CollectorProcess {
    std::fs::copy(&image.keys_toml, dir.join("keys.toml")).unwrap();
    CollectorProcess::start(dir, "")
}

/// Every event and tombstone of `epoch`, as the running collector's log holds them.
fn epoch_records(collector: &CollectorProcess, epoch: u64) -> firmware_support::EpochRecords {
    records(&collector.log_json(), epoch)
}

#[test]
fn every_event_arrives_exactly_once_through_a_bridge_losing_ten_percent_each_way() {
    let Some(image) = image() else { return };
    let dir = tempfile::tempdir().unwrap();
    let collector = collector(dir.path(), &image);
    let serial = free_port();
    let bridge = Bridge::start(serial, collector.udp, 0.10, 21);
    let booted_at_us = unix_now_us();
    let events = 300;
    let mut qemu = Qemu::boot(&image.elf, serial, 101, &format!("events={events} interval_ms=1000 drain_s=900"));
    assert_eq!(qemu.wait(RUN_TIMEOUT), 0, "{:?}", qemu.lines.lock().unwrap());
    let done = qemu.report("done").expect("final report");
    assert_eq!(done["produced"], events);
    assert_eq!(done["dropped"], 0, "the ring overflowed: {done:?}");
    assert_eq!(done["acknowledged"], events);
    let bridge = bridge.stop();

    // The firmware exits only once everything is acknowledged, so the log is complete.
    let stored = epoch_records(&collector, 101);
    let expected: std::collections::BTreeMap<u64, usize> = (0..events).map(|seq| (seq, 1)).collect();
    assert_eq!(stored.events, expected, "each event exactly once");
    assert!(stored.tombstones.is_empty(), "{:?}", stored.tombstones);
    // The loss really happened, both ways, and was repaired by retransmission.
    for direction in ["to_collector", "to_device"] {
        let dropped = bridge
            .dropped
            .get_or_create(&driftlog_agent::bridge::metrics::DropLabels { direction, reason: "injected" })
            .get();
        assert!(dropped > 0, "no frame dropped {direction}");
    }
    let sender = qemu.report("sender").unwrap();
    assert!(sender["events_retransmitted"] > 0);

    // Event times come from the device's since-boot clock (t1; the firmware has no wall
    // clock), mapped by the collector's clock model: never quarantined, never after arrival,
    // never before the device booted.
    for line in &stored.event_lines {
        assert!(line.get("t1_wall_unix_us").is_none());
        assert!(line.get("quarantine").is_none(), "{line}");
        let event_us = line["event_unix_us"].as_i64().unwrap();
        assert!(event_us <= line["t3_received_unix_us"].as_i64().unwrap(), "{line}");
        assert!(event_us >= booted_at_us - 1_000_000, "{line}");
        assert!(line["t1_mono_us"].as_u64().unwrap() <= line["t2_sent_us"].as_u64().unwrap());
    }
    assert_eq!(collector.metric("driftlog_frames_rejected_total{reason=\"forged\"}"), 0.0);
}

#[test]
fn events_buffered_while_the_bridge_is_absent_arrive_and_the_overflow_is_tombstoned() {
    let Some(image) = image() else { return };
    let dir = tempfile::tempdir().unwrap();
    let collector = collector(dir.path(), &image);
    let serial = free_port();
    let events = 400;
    // No bridge yet: QEMU retries the connection, the firmware samples into its ring.
    let mut qemu = Qemu::boot(&image.elf, serial, 202, &format!("events={events} interval_ms=100 drain_s=900"));
    let produced = qemu.wait_for_report("produced", RUN_TIMEOUT, |r| r["events"] == events);
    assert_eq!(produced["epoch"], 202);
    let bridge = Bridge::start(serial, collector.udp, 0.0, 22);
    assert_eq!(qemu.wait(RUN_TIMEOUT), 0);
    drop(bridge);
    let done = qemu.report("done").unwrap();
    // Nothing could be acknowledged while the bridge was away: the ring kept the newest 128.
    assert_eq!(done["dropped"], events - OUTBOX_EVENTS, "{done:?}");
    assert_eq!(done["tombstones_forgotten"], 0);

    let stored = epoch_records(&collector, 202);
    let kept: std::collections::BTreeMap<u64, usize> = (events - OUTBOX_EVENTS..events).map(|seq| (seq, 1)).collect();
    assert_eq!(stored.events, kept, "the buffered events, each once");
    // The overflow is covered by tombstones, exactly: no silent gap, no overlap.
    let mut covered: Vec<u64> = stored.tombstones.iter().flat_map(|&(start, end)| start..end).collect();
    covered.sort_unstable();
    assert_eq!(covered, (0..events - OUTBOX_EVENTS).collect::<Vec<_>>(), "{:?}", stored.tombstones);
    // The metrics snapshot trails the log by up to a second.
    let tombstoned = (events - OUTBOX_EVENTS) as f64;
    assert!(
        wait_until(Duration::from_secs(5), || collector.metric("driftlog_events_tombstoned_total") == tombstoned),
        "{}",
        collector.metric("driftlog_events_tombstoned_total")
    );
}

#[test]
fn a_killed_device_keeps_everything_acknowledged_and_its_next_epoch_follows_after_a_bridge_restart() {
    let Some(image) = image() else { return };
    let dir = tempfile::tempdir().unwrap();
    let collector = collector(dir.path(), &image);
    let serial = free_port();
    let bridge = Bridge::start(serial, collector.udp, 0.10, 23);
    // Runs until killed.
    let mut first = Qemu::boot(&image.elf, serial, 301, "events=0 interval_ms=1000");
    first.wait_for_report("acked", RUN_TIMEOUT, |r| r["below"] >= 60);
    // The bridge restarts mid-stream; QEMU reconnects to the new one.
    let before_restart = bridge.stop();
    assert!(before_restart.frames_total("to_collector") > 0);
    std::thread::sleep(Duration::from_millis(300));
    let bridge = Bridge::start(serial, collector.udp, 0.10, 24);
    let acked = first.wait_for_report("acked", RUN_TIMEOUT, |r| r["below"] >= 160)["below"];
    first.assert_no_panic();
    first.kill();
    let acked_before_kill = first.report("acked").unwrap()["below"].max(acked);

    let events = 300;
    let mut second = Qemu::boot(&image.elf, serial, 302, &format!("events={events} interval_ms=1000 drain_s=900"));
    assert_eq!(second.wait(RUN_TIMEOUT), 0);
    assert_eq!(second.report("done").unwrap()["dropped"], 0);
    let bridge = bridge.stop();
    assert!(bridge.connections.get() >= 2, "the restarted bridge served both boots");

    let lines = collector.log_json();
    let old = records(&lines, 301);
    for seq in 0..acked_before_kill {
        assert_eq!(old.events.get(&seq), Some(&1), "acknowledged event {seq} of the killed boot");
    }
    assert!(old.events.values().all(|&count| count == 1), "nothing twice");
    let new = records(&lines, 302);
    assert_eq!(new.events, (0..events).map(|seq| (seq, 1)).collect(), "the new epoch, each event once");
    // The new epoch follows: stored after everything of the old one.
    assert!(new.offsets.iter().min() > old.offsets.iter().max());
}
