//! Firmware figures: flash and static RAM of both release images, the stack high-water mark
//! (painted stack, read by the firmware at exit), the events per second one firmware delivers
//! through the bridge to the collector binary, and the bytes per event on the serial link.
//!
//! `cargo bench -p driftlog-collector --bench firmware` (needs qemu-system-arm and both
//! Cortex-M targets; `FIGURES_FIRMWARE_EVENTS` sets the events per run, default 2000).
//!
//! Each run boots the image with `events=N`, so it ends when the collector has acknowledged
//! the last event; events/s is the events delivered (stored, not tombstoned) over the wall time
//! from boot to exit
//! (QEMU's UART has no baud rate, so this is the rate of the firmware's CPU, the bridge and the
//! collector, not of a wire: the serial bytes per event give the rate a real baud rate allows).

#[path = "../tests/firmware_support/mod.rs"]
mod firmware_support;
#[path = "../tests/support/mod.rs"]
mod support;

use firmware_support::{Bridge, Qemu, free_port, image, records};
use std::path::Path;
use std::time::{Duration, Instant};
use support::CollectorProcess;

/// (flash, static RAM): text + rodata + vector table + data, and data + bss.
fn sizes(elf: &Path) -> (u64, u64) {
    let output = std::process::Command::new("size").arg("-A").arg(elf).output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let section = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| {
                let mut fields = l.split_whitespace();
                (fields.next() == Some(name)).then(|| fields.next().unwrap().parse().unwrap())
            })
            .unwrap_or(0)
    };
    let flash = section(".vector_table") + section(".text") + section(".rodata") + section(".data");
    (flash, section(".data") + section(".bss"))
}

struct Run {
    events: u64,
    acknowledged: u64,
    dropped: u64,
    seconds: f64,
    serial_bytes: u64,
    stack: u64,
}

fn run(machine: &str, elf: &Path, keys_toml: &Path, epoch: u64, events: u64, interval_ms: u64, loss: f64) -> Run {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(keys_toml, dir.path().join("keys.toml")).unwrap();
    let collector = CollectorProcess::start(dir.path(), "");
    let serial = free_port();
    let bridge = Bridge::start(serial, collector.udp, loss, epoch);
    let started = Instant::now();
    let mut qemu =
        Qemu::boot_on(machine, elf, serial, epoch, &format!("events={events} interval_ms={interval_ms} drain_s=900"));
    assert_eq!(qemu.wait(Duration::from_secs(600)), 0);
    let seconds = started.elapsed().as_secs_f64();
    let bridge = bridge.stop();
    let done = qemu.report("done").unwrap();
    let stored = records(&collector.log_json(), epoch);
    assert!(stored.events.values().all(|&count| count == 1), "an event stored twice");
    let bytes = |direction| {
        bridge.serial_bytes.get_or_create(&driftlog_agent::bridge::metrics::DirectionLabel { direction }).get()
    };
    Run {
        events,
        acknowledged: stored.events.len() as u64,
        dropped: done["dropped"],
        seconds,
        serial_bytes: bytes("to_collector") + bytes("to_device"),
        stack: qemu.report("sender").unwrap()["stack_high_water_bytes"],
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(image) = image() else { return };
    let mps2 = image.build_mps2();
    let events: u64 = std::env::var("FIGURES_FIRMWARE_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    println!(
        "| board | flash (vectors + text + rodata + data) | static RAM (data + bss) | stack high-water | run | events delivered | dropped (tombstoned) | wall s | events/s | serial bytes per event (both ways) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut epoch = 900 + (support::free_tcp_port() as u64 % 1000) * 1000;
    for (board, machine, elf) in [("LM3S6965", "lm3s6965evb", image.elf.clone()), ("MPS2-AN386", "mps2-an386", mps2)] {
        let (flash, ram) = sizes(&elf);
        // Faster sampling until the ring overflows (the collector acknowledges about once per
        // 35 ms of host time, a device second under QEMU), then the lossy run of the tests.
        let runs = [
            ("100 ms sampling, no loss", 100, 0.0, events),
            ("20 ms sampling, no loss", 20, 0.0, events),
            ("5 ms sampling, no loss", 5, 0.0, events),
            ("1 s sampling, 10 % loss each way", 1_000, 0.10, 200),
        ];
        for (label, interval_ms, loss, count) in runs {
            epoch += 1;
            let run = run(machine, &elf, &image.keys_toml, epoch, count, interval_ms, loss);
            println!(
                "| {board} | {flash} B | {ram} B | {} B | {label} | {} of {} | {} | {:.2} | {:.0} | {:.1} |",
                run.stack,
                run.acknowledged,
                run.events,
                run.dropped,
                run.seconds,
                run.acknowledged as f64 / run.seconds,
                run.serial_bytes as f64 / run.acknowledged.max(1) as f64,
            );
        }
    }
}
