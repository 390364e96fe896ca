//! Bad input never panics: invalid specs are refused with a message naming the field, and
//! timestamps and watermarks at or near the ends of the tick range are handled (an element whose
//! window cannot be represented is reported late).

use driftlog_eventtime::window::{
    Change, NEG_INF, Output, POS_INF, Ticks, Watermarks, WindowKind, WindowOperator, WindowSpec,
};
use proptest::prelude::*;

fn spec(kind: WindowKind) -> WindowSpec {
    WindowSpec { kind, allowed_lateness: 0, emit_final: true, max_open_windows: 64 }
}

#[test]
fn invalid_specs_name_the_field() {
    let cases = [
        (spec(WindowKind::Tumbling { size: -10, offset: 0 }), "size"),
        (spec(WindowKind::Tumbling { size: 10, offset: -10 }), "offset"),
        (spec(WindowKind::Hopping { size: 10, slide: 0, offset: 0 }), "slide"),
        (spec(WindowKind::Hopping { size: 0, slide: 1, offset: 0 }), "size"),
        (spec(WindowKind::Session { gap: 0 }), "gap"),
        (WindowSpec { allowed_lateness: -5, ..spec(WindowKind::Session { gap: 1 }) }, "allowed_lateness"),
        (
            WindowSpec { allowed_lateness: i64::MAX - 1, ..spec(WindowKind::Tumbling { size: 10, offset: 0 }) },
            "allowed_lateness",
        ),
        (WindowSpec { max_open_windows: 0, ..spec(WindowKind::Session { gap: 1 }) }, "max_open_windows"),
    ];
    for (spec, field) in cases {
        let error = WindowOperator::new(spec.clone()).expect_err("invalid spec accepted");
        assert!(error.to_string().contains(field), "{spec:?}: {error} does not name {field}");
    }
}

const EXTREMES: [Ticks; 10] =
    [i64::MIN, i64::MIN + 1, i64::MIN + 9, -1, 0, 1, i64::MAX - 9, i64::MAX - 2, i64::MAX - 1, i64::MAX];

fn extreme_specs() -> Vec<WindowSpec> {
    vec![
        spec(WindowKind::Tumbling { size: 1, offset: 0 }),
        spec(WindowKind::Tumbling { size: 10, offset: -9 }),
        spec(WindowKind::Tumbling { size: i64::MAX, offset: i64::MAX - 1 }),
        spec(WindowKind::Hopping { size: 10, slide: 3, offset: 2 }),
        spec(WindowKind::Hopping { size: i64::MAX, slide: i64::MAX / 4096 + 1, offset: -1 }),
        spec(WindowKind::Session { gap: 1 }),
        spec(WindowKind::Session { gap: i64::MAX }),
        WindowSpec { allowed_lateness: i64::MAX - 10, ..spec(WindowKind::Session { gap: 10 }) },
        WindowSpec { allowed_lateness: 5, ..spec(WindowKind::Tumbling { size: 10, offset: 0 }) },
    ]
}

/// Runs events through the full driver and checks the changelog stays consistent.
fn run(spec: WindowSpec, bound: Ticks, events: &[(Ticks, i32)]) {
    let mut operator = WindowOperator::new(spec.clone()).expect("valid");
    let mut watermarks = Watermarks::new(bound, 1, 4);
    let mut out = Vec::new();
    for (index, &(ts, key)) in events.iter().enumerate() {
        let key = format!("k{}", key.rem_euclid(3));
        operator.handle_event(&key, ts, 1.0, watermarks.current(), &mut out);
        watermarks.handle_event(key.len() as u64 + u64::from(index % 2 == 0), ts, index as Ticks);
        watermarks.handle_tick(index as Ticks);
        operator.advance_watermark(watermarks.current(), &mut out);
    }
    watermarks.finish();
    operator.advance_watermark(watermarks.current(), &mut out);
    assert_eq!(operator.open_windows(), 0, "{spec:?}");
    let placed: u64 = out
        .iter()
        .filter_map(|output| match output {
            Output::Window { change: Change::Final, result } => Some(result.aggregate.count),
            _ => None,
        })
        .sum();
    let late = out.iter().filter(|output| matches!(output, Output::Late { .. })).count() as u64;
    // Non-hopping windows hold each element once, so every element is either final or late.
    if !matches!(spec.kind, WindowKind::Hopping { .. }) {
        assert_eq!(placed + late, events.len() as u64, "{spec:?}");
    }
}

#[test]
fn extreme_timestamps_never_panic() {
    for spec in extreme_specs() {
        for bound in [0, 5, i64::MAX] {
            let events: Vec<(Ticks, i32)> = EXTREMES.iter().map(|&ts| (ts, 0)).collect();
            run(spec.clone(), bound, &events);
            let reversed: Vec<(Ticks, i32)> = EXTREMES.iter().rev().map(|&ts| (ts, 1)).collect();
            run(spec.clone(), bound, &reversed);
        }
    }
}

#[test]
fn extreme_watermarks_never_panic() {
    for spec in extreme_specs() {
        let mut operator = WindowOperator::new(spec).expect("valid");
        let mut out = Vec::new();
        for &watermark in &[NEG_INF, i64::MIN + 1, 0, i64::MAX - 1, POS_INF] {
            for &ts in &EXTREMES {
                operator.handle_event("a", ts, f64::NAN, watermark, &mut out);
                operator.handle_event("b", ts, f64::INFINITY, watermark, &mut out);
            }
            operator.advance_watermark(watermark, &mut out);
        }
        assert_eq!(operator.open_windows(), 0);
    }
}

fn any_kind() -> impl Strategy<Value = WindowKind> {
    let length = prop_oneof![1i64..100, any::<i64>()];
    prop_oneof![
        (length.clone(), any::<i64>()).prop_map(|(size, offset)| WindowKind::Tumbling { size, offset }),
        (length.clone(), length.clone(), any::<i64>()).prop_map(|(size, slide, offset)| WindowKind::Hopping {
            size,
            slide,
            offset
        }),
        length.prop_map(|gap| WindowKind::Session { gap }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_specs_and_timestamps_never_panic(
        kind in any_kind(),
        allowed_lateness in prop_oneof![0i64..50, any::<i64>()],
        bound in any::<i64>(),
        events in prop::collection::vec((prop_oneof![-100i64..100, any::<i64>()], any::<i32>()), 0..30),
    ) {
        let spec = WindowSpec { kind, allowed_lateness, emit_final: true, max_open_windows: 16 };
        match spec.validate() {
            Ok(()) => run(spec, bound, &events),
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
    }
}
