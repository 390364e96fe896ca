//! StatsD samples as driftlog events: how an agent's StatsD listener writes a sample into an
//! event, and how the collector reads it back. The wire's event format carries them as it is
//! (format version 2): this module is a convention over its payload kinds and tags, which
//! the firmware and every collector already speak.
//!
//! | StatsD sample | event payload |
//! | --- | --- |
//! | `c` | `Counter` of `value × (1 / rate)`: the reference's own arithmetic, done once on the device, so the event holds the count it stands for |
//! | `g` | `Gauge`; a signed Etsy value (`+3`, `-5`) is a `GaugeDelta` of the signed value |
//! | `ms` | `Timer` of the raw value; a rate other than 1 travels in the tag [`RATE_TAG`] (the reference keeps timer values raw and counts `1 / rate`) |
//! | DogStatsD `h`, `d` | `Histogram`, as timers (both aggregate as timers) |
//! | `s` | `Set` of the member (invalid UTF-8 replaced by U+FFFD, as the reference decodes it) |
//!
//! The event's name is the sample's name, sanitized as the reference sanitizes keys. Its
//! tags are the sample's tags in the order the dialect's canonical key holds them (as given
//! for `etsy`; sorted and deduplicated for `dogstatsd`), each as that key writes it (first
//! `:` made `=`, first `;` made `_`, sanitized), split at its first `=` into key and value
//! when both sides are non-empty, otherwise the whole tag is the key and the value is empty.
//! An empty tag (nothing left after sanitizing) is left out. So the collector rebuilds the
//! canonical key exactly with [`write_event_key`]: `name;key=value;bare…` in the tags'
//! order, [`RATE_TAG`] skipped.
//!
//! The event's times are the device's: the listener stamps a sample when it receives it (a
//! DogStatsD `|T` does not move it; the device clock is the time source).

use super::{Dialect, Key, MetricKind, Sample, SampleValue};
use crate::StreamId;
use crate::wire::Payload;

/// The agent stream StatsD samples travel on (0 is applications, 1 host sensors).
pub const STATSD_STREAM: StreamId = 2;

/// The tag holding a timer's sample rate when it is not 1. Sanitized StatsD tags never
/// contain `@`, so it cannot collide with a user's tag.
pub const RATE_TAG: &str = "@rate";

/// Why a sample that parsed cannot become an event (the wire's limits, which the reference
/// does not have).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventRefusal {
    /// The reference accepts an empty name; an event needs one.
    EmptyName,
    /// A name longer than [`crate::wire::MAX_NAME_BYTES`] after sanitizing.
    NameTooLong,
    /// A tag key or value longer than [`crate::wire::MAX_TAG_BYTES`].
    TagTooLong,
    /// More than [`crate::wire::MAX_TAGS`] tags ([`RATE_TAG`] included).
    TooManyTags,
    /// NaN or an infinity (the reference accepts `Infinity`, and a counter at `@0` is
    /// infinite); events carry finite values only.
    NonFiniteValue,
    /// A set member longer than [`crate::wire::MAX_TAG_BYTES`].
    MemberTooLong,
}

impl EventRefusal {
    pub const ALL: [EventRefusal; 6] = [
        EventRefusal::EmptyName,
        EventRefusal::NameTooLong,
        EventRefusal::TagTooLong,
        EventRefusal::TooManyTags,
        EventRefusal::NonFiniteValue,
        EventRefusal::MemberTooLong,
    ];

    /// A stable name for metrics (`reason` label).
    pub fn name(self) -> &'static str {
        match self {
            EventRefusal::EmptyName => "empty_name",
            EventRefusal::NameTooLong => "name_too_long",
            EventRefusal::TagTooLong => "tag_too_long",
            EventRefusal::TooManyTags => "too_many_event_tags",
            EventRefusal::NonFiniteValue => "non_finite_value",
            EventRefusal::MemberTooLong => "member_too_long",
        }
    }
}

/// The event payload of `sample` (see the [module docs](self)).
#[cfg(feature = "alloc")]
pub fn sample_to_payload(sample: &Sample<'_>) -> Result<crate::sender::OwnedPayload, EventRefusal> {
    use crate::sender::OwnedPayload;
    use crate::wire::{MAX_NAME_BYTES, MAX_TAG_BYTES, MAX_TAGS};
    use alloc::string::String;
    use alloc::vec::Vec;

    let ascii = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap_or_default();
    let mut name = Vec::new();
    sample.key.write_name(&mut |piece| name.extend_from_slice(piece));
    if name.is_empty() {
        return Err(EventRefusal::EmptyName);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(EventRefusal::NameTooLong);
    }
    let name = ascii(name);
    let mut tags: Vec<(String, String)> = Vec::new();
    for raw in sample.key.tags_in_order() {
        let mut text = Vec::new();
        super::key::write_tag(raw, &mut |piece| text.extend_from_slice(piece));
        let (key, value) = match text.iter().position(|&b| b == b'=') {
            Some(at) if at > 0 && at + 1 < text.len() => (text[..at].to_vec(), text[at + 1..].to_vec()),
            _ => (text, Vec::new()),
        };
        if key.is_empty() {
            continue;
        }
        if key.len() > MAX_TAG_BYTES || value.len() > MAX_TAG_BYTES {
            return Err(EventRefusal::TagTooLong);
        }
        if tags.len() >= MAX_TAGS {
            return Err(EventRefusal::TooManyTags);
        }
        tags.push((ascii(key), ascii(value)));
    }
    let number = match sample.value {
        SampleValue::Number(value) => value,
        SampleValue::Member(_) => 0.0,
    };
    let finite = |value: f64| if value.is_finite() { Ok(value) } else { Err(EventRefusal::NonFiniteValue) };
    Ok(match sample.kind {
        // `Number(value) * (1 / sampleRate)`, in that order, as the reference computes it.
        MetricKind::Counter => {
            OwnedPayload::Counter { name, value: finite(number * (1.0 / sample.sample_rate))?, tags }
        }
        MetricKind::Gauge if sample.gauge_delta => OwnedPayload::GaugeDelta { name, value: finite(number)?, tags },
        MetricKind::Gauge => OwnedPayload::Gauge { name, value: finite(number)?, tags },
        MetricKind::Timer | MetricKind::Histogram | MetricKind::Distribution => {
            let value = finite(number)?;
            if sample.sample_rate != 1.0 {
                if tags.len() >= MAX_TAGS {
                    return Err(EventRefusal::TooManyTags);
                }
                tags.push((String::from(RATE_TAG), format_rate(sample.sample_rate)));
            }
            if sample.kind == MetricKind::Timer {
                OwnedPayload::Timer { name, value, tags }
            } else {
                OwnedPayload::Histogram { name, value, tags }
            }
        }
        MetricKind::Set => {
            let SampleValue::Member(member) = sample.value else { return Err(EventRefusal::NonFiniteValue) };
            let member = String::from_utf8_lossy(member).into_owned();
            if member.len() > MAX_TAG_BYTES {
                return Err(EventRefusal::MemberTooLong);
            }
            OwnedPayload::Set { name, member, tags }
        }
    })
}

/// A rate as the shortest decimal that reads back to the same `f64`.
#[cfg(feature = "alloc")]
fn format_rate(rate: f64) -> alloc::string::String {
    let plain = alloc::format!("{rate}");
    // `Display` never uses an exponent: 1e-300 would be 300 digits.
    if plain.len() <= 24 { plain } else { alloc::format!("{rate:e}") }
}

/// The sample an event stands for, as the collector aggregates it: kind, value, rate and
/// whether a gauge value is a delta. Its `key` holds the name only; [`write_event_key`]
/// writes the canonical key. `None` for payloads no sample becomes (opaque).
pub fn event_sample<'a>(payload: &Payload<'a>) -> Option<Sample<'a>> {
    let (kind, value, gauge_delta, rated) = match payload {
        Payload::Counter(s) => (MetricKind::Counter, SampleValue::Number(s.value), false, false),
        Payload::Gauge(s) => (MetricKind::Gauge, SampleValue::Number(s.value), false, false),
        Payload::GaugeDelta(s) => (MetricKind::Gauge, SampleValue::Number(s.value), true, false),
        Payload::Timer(s) => (MetricKind::Timer, SampleValue::Number(s.value), false, true),
        Payload::Histogram(s) => (MetricKind::Histogram, SampleValue::Number(s.value), false, true),
        Payload::Set(m) => (MetricKind::Set, SampleValue::Member(m.member.as_bytes()), false, false),
        Payload::Opaque(_) => return None,
    };
    // A rate that does not read as a non-negative number (no agent writes one) counts as 1.
    let sample_rate = if rated {
        payload
            .tags()
            .iter()
            .find(|tag| tag.key == RATE_TAG)
            .and_then(|tag| tag.value.parse::<f64>().ok())
            .filter(|rate| rate.is_finite() && *rate >= 0.0)
            .unwrap_or(1.0)
    } else {
        1.0
    };
    Some(Sample::new(Key::new(payload.name().as_bytes(), &[], Dialect::Etsy), kind, value, gauge_delta, sample_rate))
}

/// Writes the canonical key of an event's sample: its name, then `;key=value` (or `;key`
/// when the value is empty) for each tag in order, [`RATE_TAG`] skipped.
pub fn write_event_key(payload: &Payload<'_>, out: &mut impl FnMut(&[u8])) {
    out(payload.name().as_bytes());
    for tag in payload.tags().iter().filter(|tag| tag.key != RATE_TAG) {
        out(b";");
        out(tag.key.as_bytes());
        if !tag.value.is_empty() {
            out(b"=");
            out(tag.value.as_bytes());
        }
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use crate::sender::OwnedEvent;
    use crate::statsd::parse_packet;
    use crate::{ClockQuality, Instant};
    use alloc::vec::Vec;

    /// What the collector reads back: canonical key, kind, value, gauge delta, rate.
    type ReadBack = (Vec<u8>, MetricKind, f64, bool, f64);

    /// Each sample of `line` through an event and back, or the refusal.
    fn through(line: &str, dialect: Dialect) -> Vec<Result<ReadBack, EventRefusal>> {
        parse_packet(line.as_bytes(), dialect)
            .map(|sample| {
                let sample = sample.expect("the test lines parse");
                let payload = sample_to_payload(&sample)?;
                let event = OwnedEvent { mono: Instant::from_micros(1), wall: None, payload }
                    .with_wall(5, ClockQuality::Synchronized);
                Ok(event.with_event(|event| {
                    let back = event_sample(&event.payload).expect("a sample");
                    let mut key = Vec::new();
                    write_event_key(&event.payload, &mut |piece| key.extend_from_slice(piece));
                    let value = match back.value {
                        SampleValue::Number(v) => v,
                        SampleValue::Member(m) => m.len() as f64,
                    };
                    (key, back.kind, value, back.gauge_delta, back.sample_rate)
                }))
            })
            .collect()
    }

    fn canonical(line: &str, dialect: Dialect) -> Vec<u8> {
        let sample = parse_packet(line.as_bytes(), dialect).next().unwrap().unwrap();
        let mut key = Vec::new();
        sample.key.write(&mut |piece| key.extend_from_slice(piece));
        key
    }

    #[test]
    fn the_collector_rebuilds_the_canonical_key_of_every_tag_shape() {
        for (line, dialect) in [
            ("a.b:1|c", Dialect::Etsy),
            ("a b/c$:1|c|#env:prod,bare,x;y:z:w,k=v,bare:,=v", Dialect::Etsy),
            ("k:1|c|#b:1,a:2", Dialect::Etsy),
            ("k:1|c|#b:1,a:2,b:1,,c|@0.5", Dialect::DogStatsd),
            ("k:1|ms|#t:v|c:abc", Dialect::Etsy),
        ] {
            let (key, ..) = through(line, dialect)[0].clone().unwrap();
            assert_eq!(
                core::str::from_utf8(&key).unwrap(),
                core::str::from_utf8(&canonical(line, dialect)).unwrap(),
                "{line}"
            );
        }
        // An empty tag is left out (the reference's key would hold `;;`).
        let (key, ..) = through("k:1|c|#a,,b", Dialect::Etsy)[0].clone().unwrap();
        assert_eq!(key, b"k;a;b");
    }

    #[test]
    fn kinds_values_and_rates_follow_the_reference() {
        let all = through("c:3|c|@0.1:2|ms|@0.25:-4|g:+2|g:7|g:9|h", Dialect::Etsy);
        let kinds: Vec<(MetricKind, f64, bool, f64)> =
            all.into_iter().map(|r| r.map(|(_, k, v, d, rate)| (k, v, d, rate)).unwrap()).collect();
        assert_eq!(
            kinds,
            [
                // The counter carries the count it stands for; the collector adds it at rate 1.
                (MetricKind::Counter, 3.0 * (1.0 / 0.1), false, 1.0),
                (MetricKind::Timer, 2.0, false, 0.25),
                (MetricKind::Gauge, -4.0, true, 1.0),
                (MetricKind::Gauge, 2.0, true, 1.0),
                (MetricKind::Gauge, 7.0, false, 1.0),
                // `h` is a counter in the reference's dialect.
                (MetricKind::Counter, 9.0, false, 1.0),
            ]
        );
        let dog = through("t:1:2|h|@0.5\nd:3|d\nset:x|s", Dialect::DogStatsd);
        let dog: Vec<(MetricKind, f64)> = dog.into_iter().map(|r| r.map(|(_, k, v, _, _)| (k, v)).unwrap()).collect();
        assert_eq!(
            dog,
            [
                (MetricKind::Histogram, 1.0),
                (MetricKind::Histogram, 2.0),
                (MetricKind::Histogram, 3.0),
                (MetricKind::Set, 1.0)
            ]
        );
        assert_eq!(format_rate(0.1), "0.1");
        assert_eq!(format_rate(1e-300).parse::<f64>(), Ok(1e-300));
    }

    #[test]
    fn what_the_wire_cannot_carry_is_refused_with_its_reason() {
        let long = "n".repeat(201);
        let refused = |line: &str| through(line, Dialect::Etsy)[0].clone().unwrap_err();
        assert_eq!(refused(":1|c"), EventRefusal::EmptyName);
        assert_eq!(refused(&alloc::format!("{long}:1|c")), EventRefusal::NameTooLong);
        assert_eq!(refused(&alloc::format!("k:1|c|#{long}")), EventRefusal::TagTooLong);
        assert_eq!(refused("k:Infinity|c"), EventRefusal::NonFiniteValue);
        assert_eq!(refused("k:1|c|@0"), EventRefusal::NonFiniteValue);
        assert_eq!(refused(&alloc::format!("k:{long}|s")), EventRefusal::MemberTooLong);
        let tags: Vec<alloc::string::String> = (0..16).map(|i| alloc::format!("t{i}")).collect();
        let line = alloc::format!("k:1|ms|@0.5|#{}", tags.join(","));
        assert_eq!(refused(&line), EventRefusal::TooManyTags, "the rate tag is one too many");
        assert!(through(&alloc::format!("k:1|ms|#{}", tags.join(",")), Dialect::Etsy)[0].is_ok());
    }
}
