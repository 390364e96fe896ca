//! Property tests of the window engine: assignment, session merging against a reference,
//! watermark monotonicity, mergeable aggregates, replay determinism across checkpoints, and
//! sharding by key.

use std::collections::BTreeMap;

use driftlog_eventtime::window::{
    Aggregate, Change, NEG_INF, Output, POS_INF, QuantileSketch, Ticks, Watermarks, WindowKind, WindowOperator,
    WindowSpec, hopping_windows, tumbling_window,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Assignment

proptest! {
    #[test]
    fn tumbling_window_holds_ts_and_is_aligned(ts in any::<i64>(), size in 1i64..=1_000_000_000_000, offset_seed in any::<i64>()) {
        let offset = offset_seed % size;
        let wide_start = i128::from(ts) - (i128::from(ts) - i128::from(offset)).rem_euclid(i128::from(size));
        match tumbling_window(ts, size, offset) {
            Some(window) => {
                prop_assert!(window.contains(ts));
                prop_assert_eq!(i128::from(window.end) - i128::from(window.start), i128::from(size));
                prop_assert_eq!((i128::from(window.start) - i128::from(offset)).rem_euclid(i128::from(size)), 0);
            }
            // Only a window that does not fit in i64 ticks may be missing.
            None => prop_assert!(wide_start < i128::from(i64::MIN) || wide_start + i128::from(size) > i128::from(i64::MAX)),
        }
    }

    #[test]
    fn hopping_windows_are_exactly_those_holding_ts(
        ts in -1_000_000_000_000_000i64..1_000_000_000_000_000,
        slide in 1i64..=1000,
        windows_per_slide in 1i64..=20,
        remainder_seed in any::<i64>(),
        divisible in any::<bool>(),
        offset_seed in any::<i64>(),
    ) {
        let remainder = if divisible { 0 } else { remainder_seed.rem_euclid(slide) };
        let size = slide * windows_per_slide + remainder;
        let offset = offset_seed % slide;
        let windows = hopping_windows(ts, size, slide, offset);
        // size / slide windows when slide divides size; otherwise floor or ceil of it, by ts.
        let count = windows.len() as i64;
        prop_assert!(count == size / slide || count == size / slide + 1, "{} windows", count);
        if divisible {
            prop_assert_eq!(count, size / slide);
        }
        for window in &windows {
            prop_assert!(window.contains(ts));
            prop_assert_eq!(window.end - window.start, size);
            prop_assert_eq!((window.start - offset).rem_euclid(slide), 0);
        }
        for pair in windows.windows(2) {
            prop_assert_eq!(pair[1].start - pair[0].start, slide);
        }
        // No window missed: the aligned starts just outside the list do not hold ts.
        let first = windows[0].start;
        let last = windows[windows.len() - 1].start;
        prop_assert!(first - slide + size <= ts);
        prop_assert!(last + slide > ts);
    }
}

// ---------------------------------------------------------------------------------------------
// Aggregates and the sketch

fn aggregate_of(elements: &[(Ticks, i32)]) -> Aggregate {
    let mut aggregate = Aggregate::new(elements[0].0, f64::from(elements[0].1));
    for &(ts, value) in &elements[1..] {
        aggregate.add(ts, f64::from(value));
    }
    aggregate
}

fn merged(left: &Aggregate, right: &Aggregate) -> Aggregate {
    let mut result = left.clone();
    result.merge(right);
    result
}

fn elements() -> impl Strategy<Value = Vec<(Ticks, i32)>> {
    prop::collection::vec((-20i64..20, -1000i32..1000), 1..20)
}

proptest! {
    // Integer values keep every sum exact, so equality can be exact.
    #[test]
    fn aggregate_merge_is_associative_and_commutative(a in elements(), b in elements(), c in elements()) {
        let (a, b, c) = (aggregate_of(&a), aggregate_of(&b), aggregate_of(&c));
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        let (ab, ba) = (merged(&a, &b), merged(&b, &a));
        prop_assert_eq!((ab.count, ab.sum, ab.min, ab.max), (ba.count, ba.sum, ba.min, ba.max));
        prop_assert_eq!(&ab.sketch, &ba.sketch);
        prop_assert_eq!(ab.last_ts, ba.last_ts);
        // `last` breaks ties by order (the later-added wins), so it commutes when the ts differ.
        if a.last_ts != b.last_ts {
            prop_assert_eq!(ab.last, ba.last);
        }
    }

    #[test]
    fn merge_equals_adding_in_sequence(a in elements(), b in elements()) {
        let sequential = aggregate_of(&[a.clone(), b.clone()].concat());
        prop_assert_eq!(merged(&aggregate_of(&a), &aggregate_of(&b)), sequential);
    }

    #[test]
    fn quantiles_are_within_one_percent(values in prop::collection::vec(1e-6f64..1e9, 1..300), q in 0.0f64..=1.0) {
        let mut aggregate = Aggregate::new(0, values[0]);
        for &value in &values[1..] {
            aggregate.add(0, value);
        }
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let truth = sorted[(q * (sorted.len() - 1) as f64) as usize];
        let estimate = aggregate.quantile(q).unwrap_or(f64::NAN);
        prop_assert!(((estimate - truth) / truth).abs() <= 0.01 * (1.0 + 1e-9), "q={} {} vs {}", q, estimate, truth);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    // Exponents over 600 decades need more than the 2048 buckets, so collapsing happens.
    #[test]
    fn sketch_merge_is_order_independent_even_when_collapsing(
        exponents in prop::collection::vec((-300i32..300, any::<bool>()), 2500..3000),
        split in 0.0f64..1.0,
    ) {
        let values: Vec<f64> = exponents.iter().map(|&(e, negative)| if negative { -(10f64.powi(e)) } else { 10f64.powi(e) }).collect();
        let mut whole = QuantileSketch::new();
        values.iter().for_each(|&value| whole.add(value));
        let at = (split * values.len() as f64) as usize;
        let (mut left, mut right) = (QuantileSketch::new(), QuantileSketch::new());
        values[..at].iter().for_each(|&value| left.add(value));
        values[at..].iter().rev().for_each(|&value| right.add(value));
        let mut right_then_left = right.clone();
        right_then_left.merge(&left);
        left.merge(&right);
        prop_assert_eq!(&left, &whole);
        prop_assert_eq!(&right_then_left, &whole);
        prop_assert!(whole.bucket_count() <= 2 * 2048);
        prop_assert_eq!(whole.count(), values.len() as u64);
    }
}

// ---------------------------------------------------------------------------------------------
// Watermarks

#[derive(Clone, Debug)]
enum WatermarkOp {
    Register(u64),
    Event(u64, Ticks),
    Idle(u64),
    Tick,
    Remove(u64),
    Finish,
}

fn watermark_op() -> impl Strategy<Value = WatermarkOp> {
    let timestamp = prop_oneof![4 => -100i64..100, 1 => any::<i64>()];
    prop_oneof![
        1 => (0u64..6).prop_map(WatermarkOp::Register),
        8 => ((0u64..6), timestamp).prop_map(|(source, ts)| WatermarkOp::Event(source, ts)),
        2 => (0u64..6).prop_map(WatermarkOp::Idle),
        2 => Just(WatermarkOp::Tick),
        1 => (0u64..6).prop_map(WatermarkOp::Remove),
        1 => Just(WatermarkOp::Finish),
    ]
}

proptest! {
    #[test]
    fn watermark_never_decreases(
        bound in -5i64..50,
        idle_timeout in -5i64..40,
        max_sources in 0usize..5,
        ops in prop::collection::vec(watermark_op(), 0..80),
    ) {
        let mut watermarks = Watermarks::new(bound, idle_timeout, max_sources);
        let mut previous = watermarks.current();
        let mut finished = false;
        for (step, op) in ops.into_iter().enumerate() {
            let now = step as Ticks * 7;
            match op {
                WatermarkOp::Register(source) => watermarks.register(source, now),
                WatermarkOp::Event(source, ts) => watermarks.handle_event(source, ts, now),
                WatermarkOp::Idle(source) => watermarks.mark_idle(source),
                WatermarkOp::Tick => watermarks.handle_tick(now),
                WatermarkOp::Remove(source) => watermarks.remove(source),
                WatermarkOp::Finish => { watermarks.finish(); finished = true; }
            }
            prop_assert!(watermarks.current() >= previous, "W went from {} to {}", previous, watermarks.current());
            prop_assert!(watermarks.source_count() <= max_sources);
            if finished {
                prop_assert_eq!(watermarks.current(), POS_INF);
            }
            previous = watermarks.current();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Whole-engine runs

#[derive(Clone, Debug)]
enum Step {
    Event { source: u64, key: u8, ts: Ticks, value: i32 },
    Idle(u64),
    Tick,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (0u64..3, 0u8..4, -20i64..200, -50i32..50)
            .prop_map(|(source, key, ts, value)| Step::Event { source, key, ts, value }),
        1 => (0u64..3).prop_map(Step::Idle),
        1 => Just(Step::Tick),
    ]
}

fn kind() -> impl Strategy<Value = WindowKind> {
    prop_oneof![
        (1i64..30, any::<i64>()).prop_map(|(size, seed)| WindowKind::Tumbling { size, offset: seed % size }),
        (1i64..10, 1i64..4, any::<i64>()).prop_map(|(slide, n, seed)| WindowKind::Hopping {
            size: slide * n,
            slide,
            offset: seed % slide
        }),
        (1i64..20).prop_map(|gap| WindowKind::Session { gap }),
    ]
}

fn key_name(key: u8) -> String {
    format!("k{key}")
}

/// One collector: the operator and the watermark generator it is driven by.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Engine {
    operator: WindowOperator,
    watermarks: Watermarks,
}

impl Engine {
    fn new(spec: WindowSpec, bound: Ticks) -> Engine {
        Engine {
            operator: WindowOperator::new(spec).expect("generated specs are valid"),
            watermarks: Watermarks::new(bound, 30, 8),
        }
    }

    fn step(&mut self, index: usize, step: &Step, out: &mut Vec<Output>) {
        let now = index as Ticks * 10;
        match *step {
            Step::Event { source, key, ts, value } => {
                self.operator.handle_event(&key_name(key), ts, f64::from(value), self.watermarks.current(), out);
                self.watermarks.handle_event(source, ts, now);
            }
            Step::Idle(source) => self.watermarks.mark_idle(source),
            Step::Tick => self.watermarks.handle_tick(now),
        }
        self.operator.advance_watermark(self.watermarks.current(), out);
    }

    fn finish(&mut self, out: &mut Vec<Output>) {
        self.watermarks.finish();
        self.operator.advance_watermark(self.watermarks.current(), out);
    }

    fn run(mut self, steps: &[Step]) -> Vec<Output> {
        let mut out = Vec::new();
        for (index, step) in steps.iter().enumerate() {
            self.step(index, step, &mut out);
        }
        self.finish(&mut out);
        out
    }
}

type Row = (String, Ticks, Ticks);

/// Applies a changelog, checking that every retraction withdraws exactly the live row.
fn materialise(outputs: &[Output]) -> Result<BTreeMap<Row, Aggregate>, TestCaseError> {
    let mut table = BTreeMap::new();
    for output in outputs {
        if let Output::Window { change, result } = output {
            let row = (result.key.clone(), result.start, result.end);
            match change {
                Change::Insert => {
                    prop_assert!(table.insert(row, result.aggregate.clone()).is_none(), "insert over a live row")
                }
                Change::Retract => {
                    let removed = table.remove(&row);
                    prop_assert_eq!(removed.as_ref(), Some(&result.aggregate));
                }
                Change::Final => prop_assert_eq!(table.get(&row), Some(&result.aggregate)),
            }
        }
    }
    Ok(table)
}

/// Events that arrive at most `bound` behind the largest event time seen so far: none is late
/// under a watermark with out-of-orderness `bound`.
fn bounded_disorder(events: Vec<(u8, Ticks, i32, Ticks)>, bound: Ticks) -> Vec<Step> {
    let mut keyed: Vec<(Ticks, usize, Step)> = events
        .into_iter()
        .enumerate()
        .map(|(index, (key, ts, value, jitter))| {
            (ts + jitter.rem_euclid(bound + 1), index, Step::Event { source: 0, key, ts, value })
        })
        .collect();
    keyed.sort_by_key(|&(arrival, index, _)| (arrival, index));
    keyed.into_iter().map(|(_, _, step)| step).collect()
}

fn summary(aggregate: &Aggregate) -> (u64, f64, f64, f64) {
    (aggregate.count, aggregate.sum, aggregate.min, aggregate.max)
}

proptest! {
    #[test]
    fn sessions_match_a_reference_whatever_the_arrival_order(
        events in prop::collection::vec((0u8..3, 0i64..150, -50i32..50, any::<i64>()), 1..40),
        gap in 1i64..15,
        bound in 0i64..10,
        lateness in 1i64..10,
    ) {
        let mut reference: BTreeMap<Row, (u64, f64, f64, f64)> = BTreeMap::new();
        let mut by_key: BTreeMap<u8, Vec<(Ticks, i32)>> = BTreeMap::new();
        for &(key, ts, value, _) in &events {
            by_key.entry(key).or_default().push((ts, value));
        }
        for (key, mut elements) in by_key {
            elements.sort();
            let mut sessions: Vec<(Ticks, Ticks, Vec<i32>)> = Vec::new();
            for (ts, value) in elements {
                match sessions.last_mut() {
                    // Touching merges (R7): ts may be exactly last + gap.
                    Some((_, last, values)) if ts <= *last + gap => { *last = ts; values.push(value); }
                    _ => sessions.push((ts, ts, vec![value])),
                }
            }
            for (first, last, values) in sessions {
                let values: Vec<f64> = values.into_iter().map(f64::from).collect();
                let sum: f64 = values.iter().sum();
                let min = values.iter().copied().fold(f64::INFINITY, f64::min);
                let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                reference.insert((key_name(key), first, last + gap), (values.len() as u64, sum, min, max));
            }
        }

        let steps = bounded_disorder(events, bound);
        let spec = WindowSpec { kind: WindowKind::Session { gap }, allowed_lateness: lateness, emit_final: true, max_open_windows: 1000 };
        let outputs = Engine::new(spec, bound).run(&steps);
        let late = outputs.iter().filter(|output| matches!(output, Output::Late { .. })).count();
        prop_assert_eq!(late, 0);
        let table = materialise(&outputs)?;
        let actual: BTreeMap<Row, (u64, f64, f64, f64)> = table.iter().map(|(row, aggregate)| (row.clone(), summary(aggregate))).collect();
        prop_assert_eq!(actual, reference);
    }

    #[test]
    fn tumbling_and_hopping_match_a_reference(
        events in prop::collection::vec((0u8..3, -30i64..150, -50i32..50, any::<i64>()), 1..40),
        kind in kind().prop_filter("aligned windows", |kind| !matches!(kind, WindowKind::Session { .. })),
        bound in 0i64..10,
        lateness in 0i64..5,
    ) {
        let mut reference: BTreeMap<Row, (u64, f64, f64, f64)> = BTreeMap::new();
        for &(key, ts, value, _) in &events {
            for window in driftlog_eventtime::window::assign(&kind, ts) {
                let value = f64::from(value);
                let entry = reference.entry((key_name(key), window.start, window.end)).or_insert((0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
                *entry = (entry.0 + 1, entry.1 + value, entry.2.min(value), entry.3.max(value));
            }
        }
        let steps = bounded_disorder(events, bound);
        let spec = WindowSpec { kind, allowed_lateness: lateness, emit_final: false, max_open_windows: 10_000 };
        let outputs = Engine::new(spec, bound).run(&steps);
        // Nothing is late, so every window fires exactly once and nothing is retracted.
        let not_insert = outputs.iter().filter(|output| !matches!(output, Output::Window { change: Change::Insert, .. })).count();
        prop_assert_eq!(not_insert, 0);
        let table = materialise(&outputs)?;
        let actual: BTreeMap<Row, (u64, f64, f64, f64)> = table.iter().map(|(row, aggregate)| (row.clone(), summary(aggregate))).collect();
        prop_assert_eq!(actual, reference);
    }

    #[test]
    fn replay_and_checkpoint_resume_give_identical_outputs(
        steps in prop::collection::vec(step(), 0..60),
        kind in kind(),
        bound in 0i64..10,
        lateness in 0i64..15,
        emit_final in any::<bool>(),
        max_open_windows in 1usize..40,
        split_seed in any::<usize>(),
    ) {
        let spec = WindowSpec { kind, allowed_lateness: lateness, emit_final, max_open_windows };
        let first = Engine::new(spec.clone(), bound).run(&steps);
        let second = Engine::new(spec.clone(), bound).run(&steps);
        prop_assert_eq!(&first, &second);

        let split = if steps.is_empty() { 0 } else { split_seed % (steps.len() + 1) };
        let mut engine = Engine::new(spec, bound);
        let mut resumed = Vec::new();
        for (index, step) in steps[..split].iter().enumerate() {
            engine.step(index, step, &mut resumed);
        }
        let checkpoint = serde_json::to_string(&engine).expect("serialise");
        let mut restored: Engine = serde_json::from_str(&checkpoint).expect("deserialise");
        prop_assert_eq!(&restored, &engine);
        for (index, step) in steps.iter().enumerate().skip(split) {
            restored.step(index, step, &mut resumed);
        }
        restored.finish(&mut resumed);
        prop_assert_eq!(&resumed, &first);
        // Every window is gone after EOF, and the changelog is consistent.
        prop_assert_eq!(restored.operator.open_windows(), 0);
        materialise(&first)?;
    }

    #[test]
    fn sharding_by_key_gives_the_same_outputs(
        steps in prop::collection::vec(step(), 0..60),
        kind in kind(),
        bound in 0i64..10,
        lateness in 0i64..15,
        emit_final in any::<bool>(),
    ) {
        let spec = WindowSpec { kind, allowed_lateness: lateness, emit_final, max_open_windows: 10_000 };
        let mut whole = Engine::new(spec.clone(), bound);
        let mut shards = [WindowOperator::new(spec.clone()).expect("valid"), WindowOperator::new(spec).expect("valid")];
        let mut whole_out = Vec::new();
        let mut shard_out = Vec::new();
        for (index, step) in steps.iter().enumerate() {
            // The shards see the watermark in force before each element, as the whole does.
            let before = whole.watermarks.current();
            if let Step::Event { key, ts, value, .. } = *step {
                shards[usize::from(key % 2)].handle_event(&key_name(key), ts, f64::from(value), before, &mut shard_out);
            }
            whole.step(index, step, &mut whole_out);
            for shard in &mut shards {
                shard.advance_watermark(whole.watermarks.current(), &mut shard_out);
            }
        }
        whole.finish(&mut whole_out);
        for shard in &mut shards {
            shard.advance_watermark(POS_INF, &mut shard_out);
        }
        let canonical = |outputs: &[Output]| {
            let mut lines: Vec<String> = outputs.iter().map(|output| format!("{output:?}")).collect();
            lines.sort();
            lines
        };
        prop_assert_eq!(canonical(&shard_out), canonical(&whole_out));
    }
}

#[test]
fn operator_starts_at_negative_infinity() {
    let spec = WindowSpec {
        kind: WindowKind::Session { gap: 3 },
        allowed_lateness: 0,
        emit_final: false,
        max_open_windows: 1,
    };
    assert_eq!(WindowOperator::new(spec).expect("valid").watermark(), NEG_INF);
}
