//! The clock model against the hand-worked vectors of `time-and-windows.md` §3.4, the guards of
//! §3.3 item 4, refused samples, persistence and bounds.

use driftlog_eventtime::clock::{ClockConfig, ClockFix, ClockModel, Corrected, Method, Quarantine, SampleRejected};

/// Vector C1: the device is 300 ahead, ρ = 0. Batches m1–m3 leave at true 1000, 2000, 3000
/// with one-way delays 80, 20, 45; an event in m3 has t1 = 3250 (true 2950).
#[test]
fn vector_c1() {
    // The vector's ticks are far apart in its own terms but µs here: refit on every batch.
    let config = ClockConfig { batch_refit_interval_us: 0, ..ClockConfig::default() };
    let mut model = ClockModel::new(&config);
    let event = |model: &ClockModel| model.fix().correct(&config, 3250, 3300, 3045);

    // Naive with m3's own Δ = -255: 2995 (error +45).
    assert_eq!(ClockFix::naive(3250, 3300, 3045), 2995);
    model.handle_batch(&config, 3300, 3045);
    assert_eq!(model.fix().method, Method::Naive);
    assert_eq!(event(&model).unix_us, 2995);

    // Minimum filter, Δ* = -280 (m2): 2970 (error +20 = d_min).
    model.handle_batch(&config, 1300, 1080);
    model.handle_batch(&config, 2300, 2020);
    assert_eq!(model.fix().method, Method::MinFilter);
    // With one-way samples only, the uncertainty is the spread of the window's slot minima: one
    // slot here (slots are 1/64 of the 10 min window), so 0. One-way samples have no lower
    // bound; the spread is a scale, not a bound. Plus 500 ppm (`max_drift_ppm`, no drift fitted)
    // over the 50 µs from the reference (t2 of m3), rounded up.
    assert_eq!(event(&model), Corrected { unix_us: 2970, uncertainty_us: 1, quarantine: None, clamped: false });

    // The ack of m2: T1 = 2300, T2 = 2020, T3 = 2021, T4 = 2346, so θ = -302.5 and δ = 45:
    // 2947.5 (error -2.5, within δ/2 = 22.5).
    assert_eq!(model.handle_exchange(&config, 2300, 2020, 2021, 2346), Ok(()));
    let estimate = model.estimate();
    assert_eq!(estimate.method, Method::Exchange);
    // Bounds loosen at NTP's 15 ppm per µs of age until a drift is fitted: 0.0003 µs here.
    assert!((estimate.offset_us + 302.5).abs() < 1e-3, "{estimate:?}");
    assert_eq!((estimate.min_delay_us, estimate.exchange_samples), (45, 1));
    // ClockFix is integer: the offset rounds to nearest (ties towards +∞, so an exact -302.5
    // would also give -302), and 2947.5 is stored as 2948. The uncertainty is δ/2 rounded up,
    // plus the same drift term.
    assert_eq!(model.fix().offset_us, -302);
    assert_eq!(event(&model), Corrected { unix_us: 2948, uncertainty_us: 23 + 1, quarantine: None, clamped: false });
}

/// Vector C1's drift case: ρ = +50 ppm and b = 24 h. Naive is 4.32 s early; the drift fitted
/// over two hours before the outage and a few samples after it cancels that.
#[test]
fn vector_c1_drift_case() {
    const MINUTE_US: i64 = 60_000_000;
    const DAY_US: i64 = 1440 * MINUTE_US;
    let config = ClockConfig::default();
    let mut model = ClockModel::new(&config);
    // Device clock: 50 ppm fast, exactly (1/20000); collector clock: true time + 1.7·10¹⁵.
    let device = |true_us: i64| (3_600_000_000 + true_us + true_us / 20_000) as u64;
    let unix = |true_us: i64| 1_700_000_000_000_000 + true_us;
    // Zero delays isolate the drift term; the collector takes 1 ms to ack.
    let sample = |model: &mut ClockModel, true_us: i64| {
        model.handle_batch(&config, device(true_us), unix(true_us));
        let acked = model.handle_exchange(
            &config,
            device(true_us),
            unix(true_us),
            unix(true_us) + 1000,
            device(true_us + 1000),
        );
        assert_eq!(acked, Ok(()));
    };
    for minute in 0..120 {
        sample(&mut model, minute * MINUTE_US);
    }
    let reconnect_us = 120 * MINUTE_US + DAY_US;
    for second in [0, 10, 20] {
        sample(&mut model, reconnect_us + second * 1_000_000);
    }
    let (sealed_us, happened_us) = (reconnect_us + 30_000_000, reconnect_us + 30_000_000 - DAY_US);
    model.handle_batch(&config, device(sealed_us), unix(sealed_us));

    let (t1, t2, t3) = (device(happened_us), device(sealed_us), unix(sealed_us));
    assert_eq!(ClockFix::naive(t1, t2, t3) - unix(happened_us), -4_320_000);
    let fix = model.fix();
    assert_eq!(fix.method, Method::Drift);
    // The slope of offset against device time is ρ/(1+ρ): 49.9975 ppm.
    assert!((fix.drift_ppb - 49_998).abs() <= 1, "{fix:?}");
    // What is left is the fix's resolution: drift_ppb is whole ppb, and half a ppb over a day
    // is 43 µs. The uncertainty covers it.
    let corrected = fix.correct(&config, t1, t2, t3);
    let error_us = corrected.unix_us - unix(happened_us);
    assert!(error_us.abs() <= 45, "{corrected:?} {fix:?}");
    assert!(error_us.unsigned_abs() <= corrected.uncertainty_us, "{corrected:?} {fix:?}");
    assert_eq!(corrected.quarantine, None);
}

fn fixed(offset_us: i64) -> ClockFix {
    ClockFix {
        reference_device_us: 1_000_000,
        offset_us,
        drift_ppb: 0,
        uncertainty_us: 7,
        drift_uncertainty_ppb: 0,
        method: Method::Exchange,
    }
}

#[test]
fn guards_quarantine_or_clamp_implausible_times() {
    let config = ClockConfig::default();
    let (tolerance_us, max_age_us) = (config.future_tolerance_us as i64, config.max_age_us as i64);
    let fix = fixed(1_000);
    // Every case maps t1 = 2 000 000 to 2 001 000.
    let correct = |t2: u64, t3: i64| fix.correct(&config, 2_000_000, t2, t3);
    let quarantined =
        |reason, t3| Corrected { unix_us: t3, uncertainty_us: u64::MAX, quarantine: Some(reason), clamped: false };

    assert_eq!(correct(1_999_999, 5_000_000), quarantined(Quarantine::EventAfterSend, 5_000_000));
    assert_eq!(
        correct(2_000_000, 2_001_000),
        Corrected { unix_us: 2_001_000, uncertainty_us: 7, quarantine: None, clamped: false }
    );
    // An event cannot postdate its own arrival: pulled back to t3, within the tolerance.
    assert_eq!(
        correct(2_000_000, 2_000_999),
        Corrected { unix_us: 2_000_999, uncertainty_us: 7, quarantine: None, clamped: true }
    );
    assert!(correct(2_000_000, 2_001_000 - tolerance_us).clamped);
    let far = 2_001_000 - tolerance_us - 1;
    assert_eq!(correct(2_000_000, far), quarantined(Quarantine::FarFuture, far));
    assert_eq!(correct(2_000_000, 2_001_000 + max_age_us).quarantine, None);
    let late = 2_001_000 + max_age_us + 1;
    assert_eq!(correct(2_000_000, late), quarantined(Quarantine::TooOld, late));
    assert_eq!(ClockFix::NONE.correct(&config, 1, 2, 3), quarantined(Quarantine::NoModel, 3));
    assert_eq!(ClockModel::new(&config).fix(), ClockFix::NONE);
}

#[test]
fn reasons_and_methods_have_snake_case_labels() {
    let quarantines = [Quarantine::EventAfterSend, Quarantine::FarFuture, Quarantine::TooOld, Quarantine::NoModel];
    let names: Vec<_> = quarantines.iter().map(|reason| reason.name()).collect();
    assert_eq!(names, ["event_after_send", "far_future", "too_old", "no_model"]);
    let methods = [Method::None, Method::Naive, Method::MinFilter, Method::Exchange, Method::Drift];
    let names: Vec<_> = methods.iter().map(|method| method.name()).collect();
    assert_eq!(names, ["none", "naive", "min_filter", "exchange", "drift"]);
    assert_eq!(SampleRejected::NegativeDelay.name(), "negative_delay");
}

#[test]
fn inconsistent_exchanges_are_refused_counted_and_ignored() {
    let config = ClockConfig::default();
    let mut model = ClockModel::new(&config);
    model.handle_batch(&config, 1_000, 5_000);
    let before = model.clone();
    let cases = [
        ((2_000, 5_000, 5_001, 1_999), SampleRejected::DeviceClockBackwards),
        ((2_000, 5_000, 4_999, 2_100), SampleRejected::CollectorClockBackwards),
        // A 100 µs round trip with 200 µs spent at the collector.
        ((2_000, 5_000, 5_200, 2_100), SampleRejected::NegativeDelay),
        ((u64::MAX - 5, 5_000, 5_000, u64::MAX), SampleRejected::OutOfRange),
    ];
    for ((t1, t2, t3, t4), reason) in cases {
        assert_eq!(model.handle_exchange(&config, t1, t2, t3, t4), Err(reason));
    }
    assert_eq!(model.fix(), before.fix());
    let stats = model.estimate().stats;
    assert_eq!((stats.exchanges, stats.exchanges_rejected, stats.batches), (0, 4, 1));

    // A batch whose t3 - t2 does not fit in i64 is ignored, not wrapped.
    model.handle_batch(&config, u64::MAX, i64::MIN);
    assert_eq!(model.fix(), before.fix());
    assert_eq!(model.estimate().stats.batches_ignored, 1);
}

#[test]
fn a_corrupt_stamp_far_ahead_cannot_become_now() {
    let config = ClockConfig::default();
    let mut model = ClockModel::new(&config);
    let unix = |device_us: u64| 1_700_000_000_000_000 + device_us as i64 + 40_000;
    model.handle_batch(&config, 1_000_000, unix(1_000_000));
    // A day ahead of the device a second later: refused.
    model.handle_batch(&config, 86_400_000_000, unix(2_000_000));
    let day_ahead = model.handle_exchange(&config, 86_400_000_000, unix(2_000_000), unix(2_000_000), 86_400_000_001);
    assert_eq!(day_ahead, Err(SampleRejected::DeviceTimeJump));
    let stats = model.estimate().stats;
    assert_eq!((stats.batches, stats.batches_ignored, stats.exchanges_rejected), (1, 1, 1));
    // Normal samples go on moving the model; after a silent minute, a minute ahead is fine.
    model.handle_batch(&config, 3_000_000, unix(3_000_000));
    model.handle_batch(&config, 63_000_000, unix(63_000_000));
    assert_eq!(model.fix().reference_device_us, 63_000_000);
    assert_eq!(model.estimate().stats.batches, 3);
}

/// Feeds a device 20 ppm fast with a delay pattern, every `step_us` for `span_us`.
fn feed(model: &mut ClockModel, config: &ClockConfig, span_us: i64, step_us: i64) {
    let device = |true_us: i64| (true_us + true_us / 50_000) as u64;
    for (index, true_us) in (0..span_us).step_by(step_us as usize).enumerate() {
        let up = 20_000 + (index as i64 * 7_919) % 60_000;
        let down = 20_000 + (index as i64 * 104_729) % 60_000;
        let received = 1_700_000_000_000_000 + true_us + up;
        model.handle_batch(config, device(true_us), received);
        let acked =
            model.handle_exchange(config, device(true_us), received, received + 500, device(true_us + up + 500 + down));
        assert_eq!(acked, Ok(()));
    }
}

#[test]
fn state_round_trips_through_postcard_and_resumes_identically() {
    let config = ClockConfig::default();
    let mut model = ClockModel::new(&config);
    feed(&mut model, &config, 3_600_000_000, 10_000_000);
    assert_eq!(model.fix().method, Method::Drift);
    let bytes = postcard::to_allocvec(&model).unwrap();
    let mut restored: ClockModel = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(restored, model);
    model.handle_batch(&config, 3_700_000_000, 1_700_003_700_050_000);
    restored.handle_batch(&config, 3_700_000_000, 1_700_003_700_050_000);
    assert_eq!(restored.fix(), model.fix());
}

#[test]
fn days_of_samples_stay_within_the_configured_bounds() {
    let config = ClockConfig::default();
    let mut model = ClockModel::new(&config);
    // Three days, a batch and an ack every 30 s.
    feed(&mut model, &config, 3 * 86_400_000_000, 30_000_000);
    let estimate = model.estimate();
    assert_eq!(estimate.method, Method::Drift);
    assert!((estimate.drift_ppm - 20.0).abs() < 0.1, "{estimate:?}");
    assert_eq!(estimate.exchange_samples, config.exchange_samples);
    // The window's exchanges (10 min at one per 30 s) plus at most `regression_samples` points.
    assert!(estimate.samples_used <= 21 + config.regression_samples, "{estimate:?}");
    assert!(estimate.regression_span_us > 2 * 86_400_000_000, "{estimate:?}");
    let bytes = postcard::to_allocvec(&model).unwrap();
    assert!(bytes.len() < 32 * 1024, "{} bytes", bytes.len());
}

#[test]
fn methods_progress_as_samples_arrive() {
    let config = ClockConfig::default();
    let mut model = ClockModel::new(&config);
    assert_eq!(model.estimate().method, Method::None);
    // The same device as `feed`, 30 ms away.
    let unix = |device_us: i64| 1_700_000_000_000_000 + device_us + 30_000;
    model.handle_batch(&config, 0, unix(0));
    assert_eq!(model.estimate().method, Method::Naive);
    model.handle_batch(&config, 5_000_000, unix(5_000_000));
    assert_eq!(model.estimate().method, Method::MinFilter);
    assert_eq!(model.handle_exchange(&config, 5_000_000, unix(5_000_000), unix(5_000_000) + 100, 5_060_100), Ok(()));
    assert_eq!(model.estimate().method, Method::Exchange);
    feed(&mut model, &config, 11 * 60_000_000, 10_000_000);
    assert_eq!(model.estimate().method, Method::Drift);
}

/// Acks every 15 min against a 10 min window: between acks the last exchanges, moved along the
/// drift and loosened by its uncertainty, still beat the one-way bounds.
#[test]
fn rare_acks_keep_the_exchange_method_between_windows() {
    let config = ClockConfig::default();
    let mut model = ClockModel::new(&config);
    // 20 ppm fast; one-way delays 30–60 ms each way.
    let device = |true_us: i64| (true_us + true_us / 50_000) as u64;
    let unix = |true_us: i64| 1_700_000_000_000_000 + true_us;
    let mut worst_us = 0;
    for step in 0..(3 * 360) {
        let true_us = step * 10_000_000;
        let up = 30_000 + (step * 7_919) % 30_000;
        model.handle_batch(&config, device(true_us), unix(true_us + up));
        if step % 90 == 0 {
            let down = 30_000 + (step * 104_729) % 30_000;
            let acked = model.handle_exchange(
                &config,
                device(true_us),
                unix(true_us + up),
                unix(true_us + up),
                device(true_us + up + down),
            );
            assert_eq!(acked, Ok(()));
        }
        let estimate = model.estimate();
        assert_ne!(estimate.method, Method::MinFilter, "step {step}: {estimate:?}");
        let corrected = model.fix().correct(&config, device(true_us), device(true_us), unix(true_us + up));
        worst_us = worst_us.max((corrected.unix_us - unix(true_us)).abs());
    }
    // One-way bounds alone would be late by at least the 30 ms minimum delay.
    assert!(worst_us < 20_000, "{worst_us}");
}
