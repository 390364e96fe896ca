//! Hand-worked vectors for the per-device path: one device's windows closed on its own
//! sequence completeness ([`DeviceWindows`]), not on the fleet's heuristic watermark. They
//! extend the design note's V1–V14 (which stay the fleet path's) with what only a device that
//! numbers its events can give: an outage, a reboot in the middle of one, a tombstoned gap in a
//! backlog, a device that never returns, and a clock model that changes during a drain.
//!
//! Syntax, one token per input:
//! - `s0e1:a#3@12=8`: an event of stream 0, epoch 1, sequence number 3, key `a`, corrected
//!   event time 12, value 8 (a record of one event);
//! - `TOMB(s0e1#4..6)`: a tombstone (or an inferred gap) occupying `[4, 6)`;
//! - `CLAIM(s0e1@20<7)`: a heartbeat claim on the collector's clock: at 20 every sequence
//!   number below 7 had been assigned; flags `older` (an older epoch still held) and `draining`
//!   follow after a comma;
//! - `TIMEOUT`: the device stayed away for the maximum outage.
//!
//! Trace line per input: `<token> W=<device watermark> [=> outputs]`, where the watermark is
//! the device's completeness less `B`. Outputs are the changelog (`INSERT`, `RETRACT`, `LATE`), `(timeout)` marking
//! windows closed by `TIMEOUT`. All vectors: tumbling windows of 10, B = 2, stream silence 100.

use driftlog_eventtime::window::{
    Change, Claim, DeviceOutput, DeviceWindows, NEG_INF, Output, Ticks, WindowKind, WindowSpec,
};

const B: Ticks = 2;
const SILENCE: Ticks = 100;

fn ticks(t: Ticks) -> String {
    if t == NEG_INF { "-inf".into() } else { t.to_string() }
}

/// `s0e1` → (stream, epoch).
fn stream_epoch(text: &str) -> (u32, u64) {
    let (stream, epoch) = text.strip_prefix('s').and_then(|rest| rest.split_once('e')).expect("sNeM");
    (stream.parse().expect("stream"), epoch.parse().expect("epoch"))
}

fn describe(output: &DeviceOutput) -> String {
    let text = match &output.output {
        Output::Window { change, result } => {
            let kind = match change {
                Change::Insert => "INSERT",
                Change::Retract => "RETRACT",
                Change::Final => "FINAL",
            };
            let a = &result.aggregate;
            format!("{kind} {}[{},{}) c={} s={}", result.key, result.start, result.end, a.count, a.sum)
        }
        Output::Late { key, ts, value } => format!("LATE {key}@{ts}={value}"),
    };
    if output.timed_out { format!("{text} (timeout)") } else { text }
}

fn run(input: &str) -> Vec<String> {
    let spec = WindowSpec {
        kind: WindowKind::Tumbling { size: 10, offset: 0 },
        allowed_lateness: 0,
        emit_final: false,
        max_open_windows: 100,
    };
    let mut device = DeviceWindows::new(&[("w".to_string(), spec)]);
    let mut scratch = Vec::new();
    let mut trace = Vec::new();
    for token in input.split_whitespace() {
        let mut out = Vec::new();
        if token == "TIMEOUT" {
            device.time_out(&mut scratch, &mut out);
        } else if let Some(inner) = token.strip_prefix("TOMB(").and_then(|t| t.strip_suffix(')')) {
            let (key, range) = inner.split_once('#').expect("TOMB(sNeM#a..b)");
            let (stream, epoch) = stream_epoch(key);
            let (start, end) = range.split_once("..").expect("a..b");
            device.handle_gap(stream, epoch, start.parse().expect("start"), end.parse().expect("end"));
            device.advance(B, SILENCE, &mut scratch, &mut out);
        } else if let Some(inner) = token.strip_prefix("CLAIM(").and_then(|t| t.strip_suffix(')')) {
            let mut parts = inner.split(',');
            let head = parts.next().expect("claim");
            let flags: Vec<&str> = parts.collect();
            let (key, rest) = head.split_once('@').expect("CLAIM(sNeM@T<N)");
            let (at, end) = rest.split_once('<').expect("@T<N");
            let (stream, epoch) = stream_epoch(key);
            device.handle_claim(&Claim {
                stream,
                epoch,
                at: at.parse().expect("at"),
                assigned_end: end.parse().expect("end"),
                older_epochs_held: flags.contains(&"older"),
                draining: flags.contains(&"draining"),
            });
            device.advance(B, SILENCE, &mut scratch, &mut out);
        } else {
            let (key, rest) = token.split_once(':').expect("sNeM:k#seq@ts=v");
            let (stream, epoch) = stream_epoch(key);
            let (name, rest) = rest.split_once('#').expect("#seq");
            let (seq, rest) = rest.split_once('@').expect("@ts");
            let (ts, value) = rest.split_once('=').expect("=value");
            let (seq, ts, value): (u64, Ticks, f64) =
                (seq.parse().expect("seq"), ts.parse().expect("ts"), value.parse().expect("value"));
            device.handle_event(0, name, ts, value, &mut scratch, &mut out);
            device.handle_events(stream, epoch, seq, 1, ts);
            device.advance(B, SILENCE, &mut scratch, &mut out);
        }
        let mut line = format!("{token} W={}", ticks(device.watermark()));
        if !out.is_empty() {
            line.push_str(" => ");
            line.push_str(&out.iter().map(describe).collect::<Vec<_>>().join("; "));
        }
        trace.push(line);
    }
    trace
}

fn check(input: &str, expected: &[&str]) {
    let trace = run(input);
    assert_eq!(trace, expected, "\ninput: {input}\ntrace:\n{}", trace.join("\n"));
}

/// D1, an outage: before it, the device's claims and contiguous events move its watermark; while
/// it is away nothing fires; its live events come back first (a window far ahead opens), then
/// the backlog oldest first, and the watermark follows the backlog as it becomes contiguous.
/// Every window fires once, with all its events, as an INSERT; nothing is late.
#[test]
fn d1_an_outage_fills_its_windows_before_they_fire() {
    check(
        "s0e1:a#0@1=1 s0e1:a#1@5=2 CLAIM(s0e1@6<2) s0e1:a#2@9=4 \
         s0e1:a#9@60=512 CLAIM(s0e1@61<10,draining) \
         s0e1:a#3@12=8 s0e1:a#4@15=16 s0e1:a#5@22=32 s0e1:a#6@25=64 s0e1:a#7@31=128 s0e1:a#8@34=256 \
         CLAIM(s0e1@72<10)",
        &[
            "s0e1:a#0@1=1 W=-inf",
            "s0e1:a#1@5=2 W=-inf",
            "CLAIM(s0e1@6<2) W=4",
            "s0e1:a#2@9=4 W=7",
            "s0e1:a#9@60=512 W=7",
            "CLAIM(s0e1@61<10,draining) W=7",
            "s0e1:a#3@12=8 W=10 => INSERT a[0,10) c=3 s=7",
            "s0e1:a#4@15=16 W=13",
            "s0e1:a#5@22=32 W=20 => INSERT a[10,20) c=2 s=24",
            "s0e1:a#6@25=64 W=23",
            "s0e1:a#7@31=128 W=29 => INSERT a[20,30) c=2 s=96",
            "s0e1:a#8@34=256 W=59 => INSERT a[30,40) c=2 s=384",
            "CLAIM(s0e1@72<10) W=70 => INSERT a[60,70) c=1 s=512",
        ],
    );
}

/// D2, a reboot in the middle of an outage: the new epoch's live events and claims arrive
/// first, but its claims say epoch 1 is still held, so they do not count; epoch 1's backlog
/// advances the watermark, and the first claim of epoch 2 that holds nothing older moves the
/// device to epoch 2.
#[test]
fn d2_a_reboot_mid_outage_waits_for_the_old_epoch() {
    check(
        "s0e1:a#0@1=1 CLAIM(s0e1@2<1) \
         s0e2:a#1@40=8 CLAIM(s0e2@41<2,older,draining) \
         s0e1:a#1@5=2 s0e1:a#2@12=4 s0e2:a#0@20=16 CLAIM(s0e2@42<2)",
        &[
            "s0e1:a#0@1=1 W=-inf",
            "CLAIM(s0e1@2<1) W=0",
            "s0e2:a#1@40=8 W=0",
            "CLAIM(s0e2@41<2,older,draining) W=0",
            "s0e1:a#1@5=2 W=3",
            "s0e1:a#2@12=4 W=10 => INSERT a[0,10) c=2 s=3",
            "s0e2:a#0@20=16 W=10",
            "CLAIM(s0e2@42<2) W=40 => INSERT a[10,20) c=1 s=4; INSERT a[20,30) c=1 s=16",
        ],
    );
}

/// D3, a tombstoned gap in a backlog: the device dropped sequence numbers 1 and 2 while away
/// (its buffer was full) and says so; the tombstone completes the prefix, so the claim is
/// satisfied and the window fires with the events that exist.
#[test]
fn d3_a_tombstone_in_the_backlog_completes_the_prefix() {
    check(
        "s0e1:a#0@1=1 CLAIM(s0e1@2<1) s0e1:a#3@12=8 CLAIM(s0e1@13<4,draining) TOMB(s0e1#1..3) CLAIM(s0e1@14<4)",
        &[
            "s0e1:a#0@1=1 W=-inf",
            "CLAIM(s0e1@2<1) W=0",
            "s0e1:a#3@12=8 W=0",
            "CLAIM(s0e1@13<4,draining) W=0",
            "TOMB(s0e1#1..3) W=11 => INSERT a[0,10) c=1 s=1",
            "CLAIM(s0e1@14<4) W=12",
        ],
    );
}

/// D4, a device that never returns: its open window waits until the caller's maximum outage,
/// then fires as it stands, marked as timed out; if the device does come back after all, its
/// events for that window are late (counted), never a second first result.
#[test]
fn d4_a_device_that_never_returns_is_closed_by_timeout() {
    check(
        "s0e1:a#0@1=1 s0e1:a#1@12=2 CLAIM(s0e1@13<2) TIMEOUT s0e1:a#2@15=4 s0e1:a#3@25=8",
        &[
            "s0e1:a#0@1=1 W=-inf",
            "s0e1:a#1@12=2 W=-inf",
            "CLAIM(s0e1@13<2) W=11 => INSERT a[0,10) c=1 s=1",
            "TIMEOUT W=19 => INSERT a[10,20) c=1 s=2 (timeout)",
            "s0e1:a#2@15=4 W=19 => LATE a@15=4",
            "s0e1:a#3@25=8 W=23",
        ],
    );
}

/// D5, the clock model changes during a drain: events stored after the refit are corrected
/// differently from those before it. A change smaller than B (here 1 tick earlier) keeps them
/// in their windows; one larger than B (4 ticks) makes an event late, and it is counted.
#[test]
fn d5_a_clock_model_changing_during_a_drain() {
    check(
        "s0e1:a#0@1=1 s0e1:a#1@8=2 CLAIM(s0e1@9<2) s0e1:a#2@8=4 s0e1:a#3@13=8 s0e1:a#4@15=16 s0e1:a#5@9=32",
        &[
            "s0e1:a#0@1=1 W=-inf",
            "s0e1:a#1@8=2 W=-inf",
            "CLAIM(s0e1@9<2) W=7",
            "s0e1:a#2@8=4 W=7",
            "s0e1:a#3@13=8 W=11 => INSERT a[0,10) c=3 s=7",
            "s0e1:a#4@15=16 W=13",
            "s0e1:a#5@9=32 W=13 => LATE a@9=32",
        ],
    );
}

/// Two streams (applications and host sensors): the device is as complete as the less complete
/// one, so a window waits for both; a stream that stops claiming for longer than the silence
/// (the agent stopped serving it) no longer holds the device.
#[test]
fn d6_the_device_waits_for_its_least_complete_stream() {
    check(
        "s0e1:a#0@5=1 s1e1:b#0@6=2 CLAIM(s1e1@8<1) CLAIM(s0e1@20<1) CLAIM(s1e1@12<1) CLAIM(s1e1@21<1) \
         CLAIM(s0e1@130<1)",
        &[
            "s0e1:a#0@5=1 W=-inf",
            "s1e1:b#0@6=2 W=-inf",
            "CLAIM(s1e1@8<1) W=6",
            "CLAIM(s0e1@20<1) W=6",
            "CLAIM(s1e1@12<1) W=10 => INSERT a[0,10) c=1 s=1; INSERT b[0,10) c=1 s=2",
            "CLAIM(s1e1@21<1) W=18",
            "CLAIM(s0e1@130<1) W=128",
        ],
    );
}
