//! Table-driven vectors for the StatsD parser: each line with the samples (or errors) it
//! must give, in both dialects. The Etsy rows are the reference server's behaviour
//! (statsd 0.9 `stats.js` `handlePacket` and `lib/helpers.js` `is_valid_packet`), quirks
//! included; `collector/tests/statsd_differential.rs` checks the same against the real
//! reference server.

use driftlog_protocol::statsd::{Dialect, ErrorReason, MetricKind, Sample, SampleValue, parse_packet};

/// A sample or an error, written compactly: `C key=v@rate`, `G key=v` / `G key+=v`,
/// `T key=v@rate`, `S key=member`, `H`, `D`, or `!reason`.
fn show(result: Result<Sample<'_>, driftlog_protocol::statsd::SampleError<'_>>) -> String {
    let sample = match result {
        Ok(sample) => sample,
        Err(error) => return format!("!{}", error.reason.name()),
    };
    let mut key = Vec::new();
    sample.key.write(&mut |piece| key.extend_from_slice(piece));
    let key = String::from_utf8(key).unwrap();
    let kind = match sample.kind {
        MetricKind::Counter => "C",
        MetricKind::Gauge => "G",
        MetricKind::Timer => "T",
        MetricKind::Set => "S",
        MetricKind::Histogram => "H",
        MetricKind::Distribution => "D",
    };
    let value = match sample.value {
        SampleValue::Number(v) => format!("{v}"),
        SampleValue::Member(m) => String::from_utf8_lossy(m).into_owned(),
    };
    let op = if sample.kind == MetricKind::Gauge && sample.gauge_delta { "+=" } else { "=" };
    let mut out = format!("{kind} {key}{op}{value}");
    if sample.sample_rate != 1.0 {
        out += &format!("@{}", sample.sample_rate);
    }
    if let Some(t) = sample.timestamp_s {
        out += &format!(" T{t}");
    }
    if let Some(c) = sample.container_id {
        out += &format!(" c:{}", String::from_utf8_lossy(c));
    }
    out
}

fn parse(packet: &str, dialect: Dialect) -> Vec<String> {
    parse_packet(packet.as_bytes(), dialect).map(show).collect()
}

#[test]
fn etsy_vectors_follow_the_reference() {
    #[rustfmt::skip]
    let vectors: &[(&str, &[&str])] = &[
        ("a:1|c", &["C a=1"]),
        ("a:1|c:250|ms", &["C a=1", "T a=250"]),
        ("a:1|c|@0.1", &["C a=1@0.1"]),
        ("a:2|c|@0", &["C a=2@0"]),
        ("a:2|c|@2", &["C a=2@2"]),
        ("a:1|c|@1e-1", &["C a=1"]),           // the rate regex reads `1`
        ("a:1|c|@0x10", &["C a=1@0"]),          // ... and `0` here
        ("a:1|c|@-1", &["!bad_sample_rate"]),
        ("a:1|c|@NaN", &["!bad_sample_rate"]),
        ("a:1|c|@", &["!bad_sample_rate"]),
        ("a:1|c|", &["!bad_sample_rate"]),
        ("a:1|c|0.5", &["!bad_sample_rate"]),
        ("a:1|c|@+1", &["!bad_sample_rate"]),   // the reference throws here
        ("a:1|c|@0.5|T123|anything", &["C a=1@0.5"]),
        ("a:1|c|T1700000000", &["!bad_sample_rate"]),
        ("a:5|h", &["C a=5"]),
        ("a:5|d", &["C a=5"]),
        ("a:5|whatever", &["C a=5"]),
        ("a:5|", &["C a=5"]),
        ("a:x|c", &["!bad_value"]),
        ("a:|c", &["!bad_value"]),
        ("a: |c", &["C a=0"]),
        ("a:1e3|c", &["C a=1000"]),
        ("a:0x10|c", &["C a=16"]),
        ("a:Infinity|c", &["C a=inf"]),
        ("a:NaN|c", &["!bad_value"]),
        ("a:-5|ms", &["!negative_timer"]),
        ("a:-5| ms", &["T a=-5"]),               // validated as an unknown type, timed
        ("a:5|ms\r", &["T a=5"]),
        ("a:x|ms", &["!bad_value"]),
        ("a:-5|g", &["G a+=-5"]),
        ("a:+5|g", &["G a+=5"]),
        ("a: -5|g", &["G a=-5"]),
        ("a:x|g", &["!bad_value"]),
        ("a:hello|s", &["S a=hello"]),
        ("a:|s", &["S a=0"]),
        ("a:1.0|s", &["S a=1.0"]),
        ("a:x|s ", &["!bad_value"]),
        ("a:5|s ", &["S a=5"]),
        ("a", &["!missing_value"]),
        ("a:", &["!missing_type"]),
        ("a:1", &["!missing_type"]),
        ("a:1|c::2|c", &["C a=1", "!missing_type", "C a=2"]),
        (":1|c", &["C =1"]),
        ("a b/c$:1|c", &["C a_b-c=1"]),
        ("a:1|c|#env:prod,bare", &["C a;env=prod;bare=1"]),
        ("a:1|c:2|ms|#t:v", &["C a;t=v=1", "T a;t=v=2"]),
        ("a:1|c|#b:1,a:2", &["C a;b=1;a=2=1"]),
        ("a:1|c|#t:v|c:abc", &["C a;t=vcabc=1"]),
        ("a:1|c|#t|#u", &["C a;t=1"]),
        ("a:1|c|#", &["C a=1"]),
        ("a:1|c|@0.5|#t", &["C a;t=1@0.5"]),
        ("_e{5,4}:title|text", &["!bad_value"]),  // not an event in this dialect
    ];
    for (line, expected) in vectors {
        assert_eq!(parse(line, Dialect::Etsy), *expected, "{line:?}");
    }
}

#[test]
fn dogstatsd_vectors() {
    #[rustfmt::skip]
    let vectors: &[(&str, &[&str])] = &[
        ("a:1|c", &["C a=1"]),
        ("a:1:2:3|h", &["H a=1", "H a=2", "H a=3"]),
        ("a:1.5|d|@0.5", &["D a=1.5@0.5"]),
        ("a:+5|g", &["G a=5"]),
        ("a:-5|g", &["G a=-5"]),
        ("a:-5|ms", &["T a=-5"]),
        ("a:1|c|#b:1,a:2", &["C a;a=2;b=1=1"]),
        ("a:1|c|T1700000000|#t|c:abc|@0.5", &["C a;t=1@0.5 T1700000000 c:abc"]),
        ("a:1|c|c:abc|#t", &["C a;t=1 c:abc"]),
        ("a:1|c|e:ext|card:high", &["C a=1"]),
        ("a:x:2|c", &["!bad_value", "C a=2"]),
        ("a:user:1|s", &["S a=user:1"]),
        ("a:1|x", &["!unknown_type"]),
        ("a:1|", &["!missing_type"]),
        ("a:1", &["!missing_type"]),
        ("a", &["!missing_value"]),
        ("a:1|c|@0", &["!bad_sample_rate"]),
        ("a:1|c|@2", &["!bad_sample_rate"]),
        ("a:1|c|@-1", &["!bad_sample_rate"]),
        ("a:1|c|@NaN", &["!bad_sample_rate"]),
        ("a:1|c|Tsoon", &["!bad_timestamp"]),
        ("a:Infinity|c", &["!bad_value"]),
        ("a:NaN|g", &["!bad_value"]),
        ("a:1e400|g", &["!bad_value"]),
        ("_e{5,4}:title|text", &["!event"]),
        ("_sc|check|0", &["!service_check"]),
    ];
    for (line, expected) in vectors {
        assert_eq!(parse(line, Dialect::DogStatsd), *expected, "{line:?}");
    }
    let many_tags: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
    assert_eq!(parse(&format!("a:1|c|#{}", many_tags.join(",")), Dialect::DogStatsd), ["!too_many_tags"]);
}

#[test]
fn packets_split_on_newlines_and_skip_empty_lines() {
    assert_eq!(parse("a:1|c\n\nb:2|c\n", Dialect::Etsy), ["C a=1", "C b=2"]);
    assert_eq!(parse("\n\n", Dialect::Etsy), Vec::<String>::new());
    assert_eq!(parse("a:x|c\nb:2|c", Dialect::Etsy), ["!bad_value", "C b=2"]);
    assert_eq!(parse("\r\n", Dialect::Etsy), ["!missing_value"]);
}

#[test]
fn every_reason_has_a_distinct_name() {
    let mut names: Vec<&str> = ErrorReason::ALL.iter().map(|r| r.name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), ErrorReason::ALL.len());
    for (index, reason) in ErrorReason::ALL.iter().enumerate() {
        assert_eq!(reason.index(), index);
    }
}
