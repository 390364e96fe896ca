//! The hand-worked vectors V1–V14 and K1 of `shared/design/time-and-windows.md` §2, run through
//! the real `WindowOperator` and `Watermarks`.
//!
//! Each vector is data: its input in the design's syntax (`a@11=4`, `p2:a@5=32`, `IDLE(p2)`,
//! `EOF`) and the expected trace, one line per input:
//! `<input> [p<N>=<source watermark>] W=<combined watermark> [=> <output>; <output>...]`.
//! Outputs are in our changelog form: the design's INITIAL is `INSERT`, its UPDATE is `RETRACT`
//! of the previous result then `INSERT` of the new one, its DROP is `LATE` (the side output).
//! Same-step outputs that the design lists as `{...}` appear in our fixed order: timer, then key,
//! then window start.
//!
//! The driver does, per input, exactly what the collector does: the element is handled against
//! the watermark in force before it, then the watermark generator sees it, then the operator
//! advances to the new watermark.

use std::collections::BTreeMap;

use driftlog_eventtime::window::{
    Change, NEG_INF, Output, POS_INF, Ticks, Watermarks, WindowKind, WindowOperator, WindowSpec,
};

enum Input {
    Event { source: u64, key: String, ts: Ticks, value: f64 },
    Idle(u64),
    Eof,
}

fn parse_partition(text: &str) -> u64 {
    text.strip_prefix('p').and_then(|number| number.parse().ok()).unwrap_or_else(|| panic!("bad partition {text:?}"))
}

fn parse(token: &str) -> Input {
    if token == "EOF" {
        return Input::Eof;
    }
    if let Some(inner) = token.strip_prefix("IDLE(").and_then(|rest| rest.strip_suffix(')')) {
        return Input::Idle(parse_partition(inner));
    }
    let (source, element) = match token.split_once(':') {
        Some((partition, element)) => (parse_partition(partition), element),
        None => (0, token),
    };
    let (key, rest) = element.split_once('@').unwrap_or_else(|| panic!("bad element {token:?}"));
    let (ts, value) = rest.split_once('=').unwrap_or_else(|| panic!("bad element {token:?}"));
    Input::Event {
        source,
        key: key.to_owned(),
        ts: ts.parse().unwrap_or_else(|_| panic!("bad ts in {token:?}")),
        value: value.parse().unwrap_or_else(|_| panic!("bad value in {token:?}")),
    }
}

fn format_ticks(ticks: Ticks) -> String {
    match ticks {
        NEG_INF => String::from("-inf"),
        POS_INF => String::from("+inf"),
        _ => ticks.to_string(),
    }
}

fn format_output(output: &Output) -> String {
    match output {
        Output::Window { change, result } => {
            let kind = match change {
                Change::Insert => "INSERT",
                Change::Retract => "RETRACT",
                Change::Final => "FINAL",
            };
            let aggregate = &result.aggregate;
            format!("{kind} {}[{},{}) c={} s={}", result.key, result.start, result.end, aggregate.count, aggregate.sum)
        }
        Output::Late { key, ts, value } => format!("LATE {key}@{ts}={value}"),
    }
}

struct Vector {
    kind: WindowKind,
    out_of_orderness: Ticks,
    allowed_lateness: Ticks,
    partitions: &'static [u64],
    emit_final: bool,
}

impl Vector {
    fn tumbling(size: Ticks, offset: Ticks, out_of_orderness: Ticks, allowed_lateness: Ticks) -> Self {
        Vector {
            kind: WindowKind::Tumbling { size, offset },
            out_of_orderness,
            allowed_lateness,
            partitions: &[],
            emit_final: false,
        }
    }

    fn session(gap: Ticks, out_of_orderness: Ticks, allowed_lateness: Ticks) -> Self {
        Vector {
            kind: WindowKind::Session { gap },
            out_of_orderness,
            allowed_lateness,
            partitions: &[],
            emit_final: false,
        }
    }

    fn partitions(self, partitions: &'static [u64]) -> Self {
        Vector { partitions, ..self }
    }

    /// Runs the input and returns the trace and every output in order.
    fn run(&self, input: &str) -> (Vec<String>, Vec<Output>, WindowOperator) {
        let spec = WindowSpec {
            kind: self.kind.clone(),
            allowed_lateness: self.allowed_lateness,
            emit_final: self.emit_final,
            max_open_windows: 1000,
        };
        let mut operator = WindowOperator::new(spec).expect("vector specs are valid");
        // Idleness only through explicit IDLE(p) in the vectors.
        let mut watermarks = Watermarks::new(self.out_of_orderness, 0, 16);
        for &partition in self.partitions {
            watermarks.register(partition, 0);
        }
        let mut trace = Vec::new();
        let mut all = Vec::new();
        for (step, token) in input.split_whitespace().enumerate() {
            let now = step as Ticks;
            let mut out = Vec::new();
            let mut line = String::from(token);
            match parse(token) {
                Input::Event { source, key, ts, value } => {
                    operator.handle_event(&key, ts, value, watermarks.current(), &mut out);
                    watermarks.handle_event(source, ts, now);
                    if token.contains(':') {
                        let own = watermarks.source_watermark(source).expect("registered");
                        line.push_str(&format!(" p{source}={}", format_ticks(own)));
                    }
                }
                Input::Idle(source) => watermarks.mark_idle(source),
                Input::Eof => watermarks.finish(),
            }
            operator.advance_watermark(watermarks.current(), &mut out);
            line.push_str(&format!(" W={}", format_ticks(watermarks.current())));
            if !out.is_empty() {
                let outputs: Vec<String> = out.iter().map(format_output).collect();
                line.push_str(&format!(" => {}", outputs.join("; ")));
            }
            trace.push(line);
            all.extend(out);
        }
        (trace, all, operator)
    }

    /// Runs the input and compares the trace line by line (whitespace-insensitive), then checks
    /// that the counters agree with the outputs and that EOF left no state behind.
    fn check(&self, input: &str, expected: &str) {
        let (trace, outputs, operator) = self.run(input);
        let normalise = |line: &str| line.split_whitespace().collect::<Vec<_>>().join(" ");
        let expected: Vec<String> = expected.lines().map(normalise).filter(|line| !line.is_empty()).collect();
        assert_eq!(trace, expected, "\nactual trace:\n{}\n", trace.join("\n"));
        let count = |wanted: Change| {
            outputs.iter().filter(|output| matches!(output, Output::Window { change, .. } if *change == wanted)).count()
                as u64
        };
        let late = outputs.iter().filter(|output| matches!(output, Output::Late { .. })).count() as u64;
        let stats = operator.stats();
        assert_eq!(stats.fired, count(Change::Insert));
        assert_eq!(stats.retracted, count(Change::Retract));
        assert_eq!(stats.late_dropped + stats.dropped_over_limit, late);
        if input.ends_with("EOF") {
            assert_eq!((stats.windows_open, operator.open_windows()), (0, 0), "EOF cleans up every window");
        }
    }
}

#[test]
fn v1_half_open_bounds_and_firing_instant() {
    Vector::tumbling(10, 0, 0, 0).check(
        "a@1=1 a@9=2 a@10=3 a@19=4 a@20=5 EOF",
        "
        a@1=1   W=0
        a@9=2   W=8
        a@10=3  W=9    => INSERT a[0,10) c=2 s=3
        a@19=4  W=18
        a@20=5  W=19   => INSERT a[10,20) c=2 s=7
        EOF     W=+inf => INSERT a[20,30) c=1 s=5
        ",
    );
}

#[test]
fn v2_offset_and_negative_timestamps() {
    Vector::tumbling(10, 3, 0, 0).check(
        "a@-8=1 a@2=2 a@3=4 a@12=8 a@13=16 EOF",
        "
        a@-8=1  W=-9
        a@2=2   W=1    => INSERT a[-17,-7) c=1 s=1
        a@3=4   W=2    => INSERT a[-7,3) c=1 s=2
        a@12=8  W=11
        a@13=16 W=12   => INSERT a[3,13) c=2 s=12
        EOF     W=+inf => INSERT a[13,23) c=1 s=16
        ",
    );
}

#[test]
fn v3_out_of_order_inside_the_bound() {
    Vector::tumbling(10, 0, 5, 0).check(
        "a@3=1 a@12=2 a@7=4 a@14=8 a@9=16 a@16=32 a@25=64 EOF",
        "
        a@3=1   W=-3
        a@12=2  W=6
        a@7=4   W=6
        a@14=8  W=8
        a@9=16  W=8
        a@16=32 W=10   => INSERT a[0,10) c=3 s=21
        a@25=64 W=19   => INSERT a[10,20) c=3 s=42
        EOF     W=+inf => INSERT a[20,30) c=1 s=64
        ",
    );
}

#[test]
fn v4_too_late_is_dropped_and_counted() {
    let vector = Vector::tumbling(10, 0, 2, 0);
    vector.check(
        "a@1=1 a@5=2 a@12=4 a@8=8 a@11=16 EOF",
        "
        a@1=1   W=-2
        a@5=2   W=2
        a@12=4  W=9    => INSERT a[0,10) c=2 s=3
        a@8=8   W=9    => LATE a@8=8
        a@11=16 W=9
        EOF     W=+inf => INSERT a[10,20) c=2 s=20
        ",
    );
    let (_, _, operator) = vector.run("a@1=1 a@5=2 a@12=4 a@8=8 a@11=16 EOF");
    assert_eq!(operator.stats().late_dropped, 1);
}

#[test]
fn v5_late_firings_then_cleanup_then_drop() {
    // Flink UPDATE = our RETRACT of the previous result + INSERT of the new one.
    Vector::tumbling(10, 0, 0, 5).check(
        "a@2=1 a@4=2 a@11=4 a@6=8 a@13=16 a@7=32 a@15=64 a@8=128 EOF",
        "
        a@2=1    W=1
        a@4=2    W=3
        a@11=4   W=10   => INSERT a[0,10) c=2 s=3
        a@6=8    W=10   => RETRACT a[0,10) c=2 s=3; INSERT a[0,10) c=3 s=11
        a@13=16  W=12
        a@7=32   W=12   => RETRACT a[0,10) c=3 s=11; INSERT a[0,10) c=4 s=43
        a@15=64  W=14
        a@8=128  W=14   => LATE a@8=128
        EOF      W=+inf => INSERT a[10,20) c=3 s=84
        ",
    );
}

#[test]
fn v6_global_watermark_makes_key_b_late() {
    Vector::tumbling(10, 0, 0, 0).check(
        "a@1=1 b@2=10 a@5=2 a@12=4 b@8=30 b@13=20 EOF",
        "
        a@1=1   W=0
        b@2=10  W=1
        a@5=2   W=4
        a@12=4  W=11   => INSERT a[0,10) c=2 s=3; INSERT b[0,10) c=1 s=10
        b@8=30  W=11   => LATE b@8=30
        b@13=20 W=12
        EOF     W=+inf => INSERT a[10,20) c=1 s=4; INSERT b[10,20) c=1 s=20
        ",
    );
}

#[test]
fn v7_session_merge_with_inclusive_gap() {
    Vector::session(5, 0, 0).check(
        "a@0=1 a@3=2 a@8=4 a@14=8 a@20=16 EOF",
        "
        a@0=1   W=-1
        a@3=2   W=2
        a@8=4   W=7
        a@14=8  W=13   => INSERT a[0,13) c=3 s=7
        a@20=16 W=19   => INSERT a[14,19) c=1 s=8
        EOF     W=+inf => INSERT a[20,25) c=1 s=16
        ",
    );
}

const V8_INPUT: &str = "a@0=1 a@2=2 a@10=4 a@11=8 a@20=16 a@6=32 a@40=64 EOF";

#[test]
fn v8_late_event_bridges_two_fired_sessions() {
    // Flink emits a[0,16) c=5 s=47 and lets the earlier results stand; we retract both first.
    Vector::session(5, 0, 20).check(
        V8_INPUT,
        "
        a@0=1   W=-1
        a@2=2   W=1
        a@10=4  W=9    => INSERT a[0,7) c=2 s=3
        a@11=8  W=10
        a@20=16 W=19   => INSERT a[10,16) c=2 s=12
        a@6=32  W=19   => RETRACT a[0,7) c=2 s=3; RETRACT a[10,16) c=2 s=12; INSERT a[0,16) c=5 s=47
        a@40=64 W=39   => INSERT a[20,25) c=1 s=16
        EOF     W=+inf => INSERT a[40,45) c=1 s=64
        ",
    );
}

#[test]
fn v8_with_final_markers() {
    // Our addition: FINAL comes after the firings of the same step, in cleanup-time order
    // ([0,16) at 35; [20,25) at 44; [40,45) at 64).
    Vector { emit_final: true, ..Vector::session(5, 0, 20) }.check(
        V8_INPUT,
        "
        a@0=1   W=-1
        a@2=2   W=1
        a@10=4  W=9    => INSERT a[0,7) c=2 s=3
        a@11=8  W=10
        a@20=16 W=19   => INSERT a[10,16) c=2 s=12
        a@6=32  W=19   => RETRACT a[0,7) c=2 s=3; RETRACT a[10,16) c=2 s=12; INSERT a[0,16) c=5 s=47
        a@40=64 W=39   => INSERT a[20,25) c=1 s=16; FINAL a[0,16) c=5 s=47
        EOF     W=+inf => INSERT a[40,45) c=1 s=64; FINAL a[20,25) c=1 s=16; FINAL a[40,45) c=1 s=64
        ",
    );
}

#[test]
fn v9_bridge_before_any_firing_needs_no_retraction() {
    Vector::session(5, 3, 0).check(
        "a@0=1 b@1=10 a@7=2 a@4=4 b@12=20 a@20=8 EOF",
        "
        a@0=1   W=-4
        b@1=10  W=-3
        a@7=2   W=3
        a@4=4   W=3
        b@12=20 W=8    => INSERT b[1,6) c=1 s=10
        a@20=8  W=16   => INSERT a[0,12) c=3 s=7; INSERT b[12,17) c=1 s=20
        EOF     W=+inf => INSERT a[20,25) c=1 s=8
        ",
    );
}

#[test]
fn v10_element_behind_w_opens_an_overlapping_session() {
    // Flink's R18 behaviour. V10's "our option" (keep purged sessions for `gap` longer, then
    // RETRACT a[0,5) + INSERT a[0,8)) is not implemented.
    Vector::session(5, 0, 0).check(
        "a@0=1 b@6=100 a@3=2 b@20=200 a@1=4 EOF",
        "
        a@0=1    W=-1
        b@6=100  W=5    => INSERT a[0,5) c=1 s=1
        a@3=2    W=5
        b@20=200 W=19   => INSERT a[3,8) c=1 s=2; INSERT b[6,11) c=1 s=100
        a@1=4    W=19   => LATE a@1=4
        EOF      W=+inf => INSERT b[20,25) c=1 s=200
        ",
    );
}

#[test]
fn v11_idle_partition_then_its_data_comes_late() {
    Vector::tumbling(10, 0, 0, 0).partitions(&[1, 2]).check(
        "p1:a@1=1 p2:a@2=2 p1:a@11=4 p1:a@15=8 IDLE(p2) p1:a@21=16 p2:a@5=32 p2:a@23=64 EOF",
        "
        p1:a@1=1   p1=0  W=-inf
        p2:a@2=2   p2=1  W=0
        p1:a@11=4  p1=10 W=1
        p1:a@15=8  p1=14 W=1
        IDLE(p2)         W=14   => INSERT a[0,10) c=2 s=3
        p1:a@21=16 p1=20 W=20   => INSERT a[10,20) c=2 s=12
        p2:a@5=32  p2=4  W=20   => LATE a@5=32
        p2:a@23=64 p2=22 W=20
        EOF              W=+inf => INSERT a[20,30) c=2 s=80
        ",
    );
}

#[test]
fn v11_note_without_idle_the_late_partition_is_kept() {
    Vector::tumbling(10, 0, 0, 0).partitions(&[1, 2]).check(
        "p1:a@1=1 p2:a@2=2 p1:a@11=4 p1:a@15=8 p1:a@21=16 p2:a@5=32 p2:a@23=64 EOF",
        "
        p1:a@1=1   p1=0  W=-inf
        p2:a@2=2   p2=1  W=0
        p1:a@11=4  p1=10 W=1
        p1:a@15=8  p1=14 W=1
        p1:a@21=16 p1=20 W=1
        p2:a@5=32  p2=4  W=4
        p2:a@23=64 p2=22 W=20   => INSERT a[0,10) c=3 s=35; INSERT a[10,20) c=2 s=12
        EOF              W=+inf => INSERT a[20,30) c=2 s=80
        ",
    );
}

#[test]
fn v12_all_idle_jumps_to_the_maximum() {
    Vector::tumbling(10, 0, 0, 0).partitions(&[1, 2]).check(
        "p1:a@3=1 p2:b@14=2 IDLE(p2) IDLE(p1) EOF",
        "
        p1:a@3=1  p1=2  W=-inf
        p2:b@14=2 p2=13 W=2
        IDLE(p2)        W=2
        IDLE(p1)        W=13   => INSERT a[0,10) c=1 s=1
        EOF             W=+inf => INSERT b[10,20) c=1 s=2
        ",
    );
}

#[test]
fn r11_all_idle_corner_follows_the_rule_as_written() {
    // Flink keeps W=10 here (the last source to go idle, p1, does not hold W) and accepts
    // p2:a@15. We jump to the maximum, 30, whenever every source is idle, so it is dropped.
    Vector::tumbling(10, 0, 0, 0).partitions(&[1, 2, 3]).check(
        "p3:a@31=1 p1:a@6=2 p2:a@11=4 IDLE(p3) IDLE(p1) p1:a@7=8 IDLE(p2) IDLE(p1) p2:a@15=16 EOF",
        "
        p3:a@31=1  p3=30 W=-inf
        p1:a@6=2   p1=5  W=-inf
        p2:a@11=4  p2=10 W=5
        IDLE(p3)         W=5
        IDLE(p1)         W=10   => INSERT a[0,10) c=1 s=2
        p1:a@7=8   p1=6  W=10   => LATE a@7=8
        IDLE(p2)         W=10
        IDLE(p1)         W=30   => INSERT a[10,20) c=1 s=4
        p2:a@15=16 p2=14 W=30   => LATE a@15=16
        EOF              W=+inf => INSERT a[30,40) c=1 s=1
        ",
    );
}

#[test]
fn v13_fast_device_clock_makes_everyone_late() {
    // The Flink behaviour, on purpose: the fix is not here but in clock correction, where the
    // collector clamps corrected event time to the receive time, so W cannot pass its clock.
    Vector::tumbling(10, 0, 5, 0).check(
        "a@10=1 a@12=2 b@1000=4 a@14=8 a@18=16 EOF",
        "
        a@10=1   W=4
        a@12=2   W=6
        b@1000=4 W=994  => INSERT a[10,20) c=2 s=3
        a@14=8   W=994  => LATE a@14=8
        a@18=16  W=994  => LATE a@18=16
        EOF      W=+inf => INSERT b[1000,1010) c=1 s=4
        ",
    );
}

#[test]
fn v14_late_event_extends_a_fired_session() {
    Vector::session(5, 0, 10).check(
        "a@0=1 a@2=2 a@12=4 a@5=8 EOF",
        "
        a@0=1   W=-1
        a@2=2   W=1
        a@12=4  W=11   => INSERT a[0,7) c=2 s=3
        a@5=8   W=11   => RETRACT a[0,7) c=2 s=3; INSERT a[0,10) c=3 s=11
        EOF     W=+inf => INSERT a[12,17) c=1 s=4
        ",
    );
}

#[test]
fn held_retraction_travels_with_the_merged_sessions_first_firing() {
    // Our addition (§1.6): a@5 touches the fired a[0,5), but the merged a[0,10) fires only at
    // W >= 9, so its retraction waits for that firing instead of leaving a gap in the table.
    Vector::session(5, 0, 10).check(
        "a@0=1 b@9=100 a@5=2 b@20=200 EOF",
        "
        a@0=1    W=-1
        b@9=100  W=8    => INSERT a[0,5) c=1 s=1
        a@5=2    W=8
        b@20=200 W=19   => RETRACT a[0,5) c=1 s=1; INSERT a[0,10) c=2 s=3; INSERT b[9,14) c=1 s=100
        EOF      W=+inf => INSERT b[20,25) c=1 s=200
        ",
    );
}

#[test]
fn hopping_windows_accept_what_any_window_still_takes() {
    // Our addition: a@3 is too late for [-5,5) but not for [0,10), so it is not reported late.
    Vector { kind: WindowKind::Hopping { size: 10, slide: 5, offset: 0 }, ..Vector::tumbling(10, 0, 0, 0) }.check(
        "a@1=1 a@7=2 a@3=8 a@12=4 a@2=16 EOF",
        "
        a@1=1   W=0
        a@7=2   W=6    => INSERT a[-5,5) c=1 s=1
        a@3=8   W=6
        a@12=4  W=11   => INSERT a[0,10) c=3 s=11
        a@2=16  W=11   => LATE a@2=16
        EOF     W=+inf => INSERT a[5,15) c=2 s=6; INSERT a[10,20) c=1 s=4
        ",
    );
}

#[test]
fn k1_materialised_changelog_matches_kafka_streams_final_table() {
    // K1's sessions are [first,last]; ours are [first, last+gap) with gap 5.
    let kafka_final: [(Ticks, Ticks, u64, f64); 3] = [(0, 11, 5, 47.0), (20, 20, 1, 16.0), (40, 40, 1, 64.0)];
    let expected: BTreeMap<(String, Ticks, Ticks), (u64, f64)> = kafka_final
        .iter()
        .map(|&(first, last, count, sum)| ((String::from("a"), first, last + 5), (count, sum)))
        .collect();

    let (_, outputs, _) = Vector::session(5, 0, 20).run(V8_INPUT);
    let mut table: BTreeMap<(String, Ticks, Ticks), (u64, f64)> = BTreeMap::new();
    for output in outputs {
        let Output::Window { change, result } = output else { panic!("V8 drops nothing") };
        let row = (result.key.clone(), result.start, result.end);
        let value = (result.aggregate.count, result.aggregate.sum);
        match change {
            Change::Insert => assert_eq!(table.insert(row, value), None, "insert over a live row"),
            Change::Retract => assert_eq!(table.remove(&row), Some(value), "retract of a row not emitted"),
            Change::Final => {}
        }
    }
    assert_eq!(table, expected);
}

#[test]
fn window_bound_refusals_are_reported_not_silent() {
    let spec = WindowSpec {
        kind: WindowKind::Tumbling { size: 10, offset: 0 },
        allowed_lateness: 0,
        emit_final: false,
        max_open_windows: 1,
    };
    let mut operator = WindowOperator::new(spec).expect("valid");
    let mut out = Vec::new();
    operator.handle_event("a", 1, 1.0, NEG_INF, &mut out);
    operator.handle_event("b", 2, 2.0, 0, &mut out);
    operator.handle_event("a", 3, 4.0, 1, &mut out);
    assert_eq!(out, vec![Output::Late { key: String::from("b"), ts: 2, value: 2.0 }]);
    let stats = operator.stats();
    assert_eq!((stats.dropped_over_limit, stats.late_dropped, stats.windows_open), (1, 0, 1));
    // Once a[0,10) is cleaned up, b gets its window.
    out.clear();
    operator.advance_watermark(9, &mut out);
    operator.handle_event("b", 12, 8.0, 9, &mut out);
    operator.advance_watermark(POS_INF, &mut out);
    let inserted: Vec<String> = out.iter().map(format_output).collect();
    assert_eq!(inserted, ["INSERT a[0,10) c=2 s=5", "INSERT b[10,20) c=1 s=8"]);
}

#[test]
fn touching_element_after_purge_opens_a_separate_session() {
    // Flink parity, our addition: with L=0, a[0,5) is purged when it fires at W=4, so the on-time
    // a@5, which touches it (R7), starts a new session. Any L >= 1 would merge them into a[0,10).
    Vector::session(5, 0, 0).check(
        "a@0=1 b@5=10 a@5=2 EOF",
        "
        a@0=1  W=-1
        b@5=10 W=4    => INSERT a[0,5) c=1 s=1
        a@5=2  W=4
        EOF    W=+inf => INSERT a[5,10) c=1 s=2; INSERT b[5,10) c=1 s=10
        ",
    );
    Vector::session(5, 0, 1).check(
        "a@0=1 b@5=10 a@5=2 EOF",
        "
        a@0=1  W=-1
        b@5=10 W=4    => INSERT a[0,5) c=1 s=1
        a@5=2  W=4
        EOF    W=+inf => RETRACT a[0,5) c=1 s=1; INSERT a[0,10) c=2 s=3; INSERT b[5,10) c=1 s=10
        ",
    );
}
