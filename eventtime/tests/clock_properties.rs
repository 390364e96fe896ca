//! Properties of the clock model over arbitrary input: nothing panics, corrected times never
//! postdate arrival, and with a perfect device clock the uncertainty covers the error.

use driftlog_eventtime::clock::{ClockConfig, ClockFix, ClockModel, Method, Quarantine};
use proptest::prelude::*;

fn any_method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::None),
        Just(Method::Naive),
        Just(Method::MinFilter),
        Just(Method::Exchange),
        Just(Method::Drift)
    ]
}

fn any_fix() -> impl Strategy<Value = ClockFix> {
    (any::<u64>(), any::<i64>(), any::<i64>(), any::<u64>(), any::<u64>(), any_method()).prop_map(
        |(reference_device_us, offset_us, drift_ppb, uncertainty_us, drift_uncertainty_ppb, method)| ClockFix {
            reference_device_us,
            offset_us,
            drift_ppb,
            uncertainty_us,
            drift_uncertainty_ppb,
            method,
        },
    )
}

/// Configs as a careless operator might write them: nothing validated.
fn any_config() -> impl Strategy<Value = ClockConfig> {
    (any::<u64>(), any::<usize>(), any::<usize>(), any::<u64>(), any::<f64>(), any::<u64>(), any::<u64>(), any::<u64>())
        .prop_map(|(window, exchanges, regression, span, drift, future, age, refit)| ClockConfig {
            min_filter_window_us: window,
            exchange_samples: exchanges,
            regression_samples: regression,
            regression_min_span_us: span,
            max_drift_ppm: drift,
            future_tolerance_us: future,
            max_age_us: age,
            batch_refit_interval_us: refit,
        })
}

/// Either a small, realistic config or an arbitrary one.
fn some_config() -> impl Strategy<Value = ClockConfig> {
    prop_oneof![
        Just(ClockConfig::default()),
        Just(ClockConfig {
            min_filter_window_us: 1,
            regression_min_span_us: 1,
            regression_samples: 4,
            ..ClockConfig::default()
        }),
        any_config(),
    ]
}

#[derive(Clone, Debug)]
enum Input {
    Batch(u64, i64),
    Exchange(u64, i64, i64, u64),
}

/// Mostly plausible samples around one device (so the model gets past its early states), with
/// arbitrary values mixed in.
fn any_input() -> impl Strategy<Value = Input> {
    let device = prop_oneof![4 => 0u64..10_000_000_000, 1 => any::<u64>()];
    let unix = prop_oneof![4 => 1_000_000_000i64..11_000_000_000, 1 => any::<i64>()];
    prop_oneof![
        (device.clone(), unix.clone()).prop_map(|(t2, t3)| Input::Batch(t2, t3)),
        (device, unix, 0i64..1_000_000, 0u64..2_000_000).prop_map(|(t1, t2, turnaround, round_trip)| {
            Input::Exchange(t1, t2, t2.saturating_add(turnaround), t1.saturating_add(round_trip))
        }),
        (any::<u64>(), any::<i64>(), any::<i64>(), any::<u64>())
            .prop_map(|(t1, t2, t3, t4)| Input::Exchange(t1, t2, t3, t4)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn correct_is_total_and_never_postdates_arrival(
        fix in any_fix(),
        config in any_config(),
        t1 in any::<u64>(),
        t2 in any::<u64>(),
        t3 in any::<i64>(),
    ) {
        let corrected = fix.correct(&config, t1, t2, t3);
        prop_assert!(corrected.unix_us <= t3);
        if corrected.quarantine.is_some() {
            prop_assert_eq!(corrected.unix_us, t3);
            prop_assert!(!corrected.clamped);
        }
        if t1 > t2 {
            prop_assert_eq!(corrected.quarantine, Some(Quarantine::EventAfterSend));
        }
        if corrected.clamped {
            prop_assert_eq!(corrected.unix_us, t3);
        }
        let _ = ClockFix::naive(t1, t2, t3);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_model_is_total_on_any_input(
        config in some_config(),
        inputs in proptest::collection::vec(any_input(), 0..120),
        events in proptest::collection::vec((any::<u64>(), any::<u64>(), any::<i64>()), 1..8),
    ) {
        let mut model = ClockModel::new(&config);
        for input in inputs {
            match input {
                Input::Batch(t2, t3) => model.handle_batch(&config, t2, t3),
                Input::Exchange(t1, t2, t3, t4) => {
                    let _ = model.handle_exchange(&config, t1, t2, t3, t4);
                }
            }
            let fix = model.fix();
            for &(t1, t2, t3) in &events {
                prop_assert!(fix.correct(&config, t1, t2, t3).unix_us <= t3);
            }
            let estimate = model.estimate();
            prop_assert_eq!(estimate.method, fix.method);
            prop_assert!(!estimate.drift_ppm.is_nan() && !estimate.offset_us.is_nan());
        }
        let bytes = postcard::to_allocvec(&model).unwrap();
        let restored: ClockModel = postcard::from_bytes(&bytes).unwrap();
        prop_assert_eq!(restored.fix(), model.fix());
    }

    /// With a perfect device clock every sample is a true bound, so the offset lies within the
    /// fix's interval and the uncertainty covers the error of any event in the batch. (Drift
    /// fitting is off: a fitted slope is an estimate, so its covering is statistical, which the
    /// accuracy simulation measures instead.)
    #[test]
    fn with_a_perfect_clock_the_uncertainty_covers_the_error(
        offset_us in -4_000_000_000_000i64..4_000_000_000_000,
        samples in proptest::collection::vec((1_000u64..30_000_000, 0i64..200_000, 0i64..200_000, 0i64..5_000, any::<bool>()), 1..40),
        event_age_us in 0u64..20_000_000,
    ) {
        let config = ClockConfig { regression_min_span_us: u64::MAX, ..ClockConfig::default() };
        let mut model = ClockModel::new(&config);
        let unix = |device_us: u64| device_us as i64 + offset_us;
        let mut device_us = 10_000_000_000u64;
        for (gap_us, up_us, down_us, turnaround_us, acked) in samples {
            device_us += gap_us;
            let received = unix(device_us) + up_us;
            model.handle_batch(&config, device_us, received);
            if acked {
                let back_us = device_us + (up_us + turnaround_us + down_us) as u64;
                prop_assert!(model.handle_exchange(&config, device_us, received, received + turnaround_us, back_us).is_ok());
            }
            let fix = model.fix();
            let happened_us = device_us - event_age_us.min(device_us);
            let corrected = fix.correct(&config, happened_us, device_us, received);
            prop_assert_eq!(corrected.quarantine, None);
            let error_us = corrected.unix_us - unix(happened_us);
            if fix.method == Method::Exchange {
                // The interval holds the truth; rounding the midpoint adds up to half a µs.
                prop_assert!(error_us.unsigned_abs() <= corrected.uncertainty_us + 1, "{:?} {:?}", corrected, fix);
            } else {
                // One-way samples only bound from above: never early, late by at most the delay.
                prop_assert!((0..=200_000).contains(&error_us), "{:?} {:?}", corrected, fix);
            }
        }
    }
}
