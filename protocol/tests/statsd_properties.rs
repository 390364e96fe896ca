//! The StatsD parser's contract over arbitrary input: never a panic, every non-empty line
//! accounted for (at least one result each), and well-formed lines round-trip.

use driftlog_protocol::statsd::{Dialect, MetricKind, SampleValue, lines, parse_line, parse_packet};
use proptest::prelude::*;

const DIALECTS: [Dialect; 2] = [Dialect::Etsy, Dialect::DogStatsd];

/// Bytes biased towards the protocol's separators, so that arbitrary input reaches every
/// branch rather than failing at the first `:`.
fn statsd_ish() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => any::<u8>(),
        2 => prop::sample::select(b":|#@,;\n -+.0123456789cgmsdhTe".to_vec()),
    ];
    proptest::collection::vec(byte, 0..600)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_packets_never_panic_and_every_line_gives_a_result(bytes in statsd_ish()) {
        for dialect in DIALECTS {
            for line in lines(&bytes) {
                let mut results = 0;
                for result in parse_line(line, dialect) {
                    results += 1;
                    if let Ok(sample) = result {
                        // Rendering any key never panics and matches its length.
                        let mut rendered = Vec::new();
                        sample.key.write(&mut |piece| rendered.extend_from_slice(piece));
                        prop_assert_eq!(rendered.len(), sample.key.len());
                        prop_assert!(rendered.iter().all(|b| b.is_ascii_alphanumeric() || b"_-.;=".contains(b)));
                        if let Some(plain) = sample.key.as_plain() {
                            prop_assert_eq!(plain, &rendered[..]);
                        }
                    }
                }
                prop_assert!(results >= 1, "line {:?} gave no result", line);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        for dialect in DIALECTS {
            let _ = parse_packet(&bytes, dialect).count();
        }
    }

    #[test]
    fn well_formed_lines_round_trip(
        name in "[a-z][a-z0-9._-]{0,20}",
        values in proptest::collection::vec(-1e9f64..1e9, 1..5),
        kind in prop::sample::select(vec!["c", "g", "ms", "h", "d"]),
        rate in prop::sample::select(vec![None, Some(0.5), Some(0.1), Some(1.0)]),
        tags in proptest::collection::vec("[a-z]{1,5}(:[a-z0-9]{1,5})?", 0..4),
    ) {
        let rate_text = rate.map(|r| format!("|@{r}")).unwrap_or_default();
        let tag_text = if tags.is_empty() { String::new() } else { format!("|#{}", tags.join(",")) };
        // Etsy: one sample per `:`-separated piece, each with its own type.
        let mut etsy = name.clone();
        for value in &values {
            etsy += &format!(":{value}|{kind}{rate_text}");
        }
        etsy += &tag_text;
        let results: Vec<_> = parse_line(etsy.as_bytes(), Dialect::Etsy).collect();
        prop_assert_eq!(results.len(), values.len());
        for (result, value) in results.iter().zip(&values) {
            match result {
                Ok(sample) => {
                    prop_assert_eq!(sample.value, SampleValue::Number(*value));
                    prop_assert_eq!(sample.sample_rate, rate.unwrap_or(1.0));
                    let expected = match kind { "ms" => MetricKind::Timer, "g" => MetricKind::Gauge, _ => MetricKind::Counter };
                    prop_assert_eq!(sample.kind, expected);
                }
                Err(error) => prop_assert!(kind == "ms" && *value < 0.0, "{:?}", error),
            }
        }
        // DogStatsD: several values share one type.
        let joined: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let dog = format!("{name}:{}|{kind}{rate_text}{tag_text}", joined.join(":"));
        let parsed: Vec<_> = parse_line(dog.as_bytes(), Dialect::DogStatsd).collect();
        prop_assert_eq!(parsed.len(), values.len());
        for (result, value) in parsed.iter().zip(&values) {
            let sample = result.as_ref().unwrap();
            prop_assert_eq!(sample.value, SampleValue::Number(*value));
        }
    }
}
