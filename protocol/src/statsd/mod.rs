//! The StatsD line protocol: the reference server's grammar (Etsy statsd 0.9) exactly, and
//! the DogStatsD extensions, as a zero-copy parser that allocates nothing.
//!
//! A packet (a UDP datagram, or the complete lines of a stream) is split on `\n`; empty
//! lines are skipped. Each line yields one result per sample: a [`Sample`] borrowing the
//! packet, or a [`SampleError`] with its [`ErrorReason`]. A bad sample never stops the
//! rest of its line or packet, as in the reference.
//!
//! ```
//! use driftlog_protocol::statsd::{Dialect, SampleValue, parse_packet};
//! let mut values = 0.0;
//! let mut bad = 0;
//! for result in parse_packet(b"a:1|c:250|ms\nb:x|g\n", Dialect::Etsy) {
//!     match result {
//!         Ok(sample) => if let SampleValue::Number(v) = sample.value { values += v },
//!         Err(_) => bad += 1,
//!     }
//! }
//! assert_eq!((values, bad), (251.0, 1));
//! ```
//!
//! # Dialects
//! - [`Dialect::Etsy`] (the default) is the reference: `key:value|type[|@rate][:value|type…][|#tags]`;
//!   several samples per line; types `c`, `g` (with `+`/`-` deltas), `ms`, `s`, and every
//!   other type string is a counter (so `h` and `d` are counters); values are JavaScript
//!   numbers; tags are folded into the key in the order given; fields after the rate are
//!   ignored, so a DogStatsD `|c:`/`|T` after the tags ends up glued to the last tag, and a
//!   `|T` where the rate belongs makes the sample bad. Every quirk is kept on purpose: users
//!   of the reference get the same flushes.
//! - [`Dialect::DogStatsd`]: `name:value[:value…]|type[|@rate][|#tags][|c:container][|T<unix s>]`
//!   with the optional fields in any order; types `c`, `g` (no deltas: `+5` sets 5), `ms`,
//!   `h` and `d` (both timer-like), `s`; strict finite decimal values; rates in (0, 1]; tags
//!   sorted and deduplicated in the key; `_e{` events and `_sc|` service checks are refused
//!   with their own reasons.
//!
//! # Events
//! [`event`] is how a StatsD sample travels as a driftlog event (the agent's listener writes
//! it, the collector reads it back), over the wire's event format unchanged.
//!
//! # Panics
//! None: every function here accepts any bytes (`tests/statsd_properties.rs`).

pub mod event;
mod key;
mod number;

pub use key::{Key, MAX_TAGS, TagsInOrder, write_tag};
pub use number::{js_number, js_trim, strict_number};

/// Which grammar a listener speaks where the reference and DogStatsD disagree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// The reference server's (Etsy statsd) behaviour, quirks included.
    #[default]
    Etsy,
    /// DogStatsD's datagram format.
    DogStatsd,
}

/// How a sample is aggregated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter,
    Gauge,
    Timer,
    Set,
    /// DogStatsD `h` (aggregated as a timer).
    Histogram,
    /// DogStatsD `d` (aggregated as a timer).
    Distribution,
}

/// A sample's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SampleValue<'a> {
    Number(f64),
    /// A set member, compared as bytes (an empty member is `0`, as in the reference).
    Member(&'a [u8]),
}

/// One parsed sample, borrowing the packet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample<'a> {
    pub key: Key<'a>,
    pub kind: MetricKind,
    pub value: SampleValue<'a>,
    /// A gauge value written with a leading `+` or `-` (Etsy dialect): added to a gauge that
    /// exists and is non-zero, otherwise it sets the gauge.
    pub gauge_delta: bool,
    /// `@rate`, 1 when absent. In the Etsy dialect it is whatever the reference reads, so it
    /// can be 0 (the counter gains infinity) or above 1.
    pub sample_rate: f64,
    /// DogStatsD `|T`: the sample's time, Unix seconds.
    pub timestamp_s: Option<i64>,
    /// DogStatsD `|c:`: the container id.
    pub container_id: Option<&'a [u8]>,
}

impl<'a> Sample<'a> {
    /// A sample without the DogStatsD extras (`|T`, `|c:`), as stored samples are read back.
    pub fn new(
        key: Key<'a>,
        kind: MetricKind,
        value: SampleValue<'a>,
        gauge_delta: bool,
        sample_rate: f64,
    ) -> Sample<'a> {
        Sample { key, kind, value, gauge_delta, sample_rate, timestamp_s: None, container_id: None }
    }
}

/// Why a sample was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorReason {
    /// A line without `:` (the reference reads it as the value `1` without a type).
    MissingValue,
    /// No `|type` field.
    MissingType,
    /// The rate field is not `@` and a non-negative number (or, in the DogStatsD dialect,
    /// not in (0, 1]).
    BadSampleRate,
    /// A value that is not a number (for every type but sets).
    BadValue,
    /// A negative `ms` value (Etsy dialect).
    NegativeTimer,
    /// A type the DogStatsD dialect does not know.
    UnknownType,
    /// A `|T` that is not a Unix time in seconds.
    BadTimestamp,
    /// More than [`MAX_TAGS`] tags (DogStatsD dialect).
    TooManyTags,
    /// A DogStatsD event (`_e{…}`), which is not a metric.
    Event,
    /// A DogStatsD service check (`_sc|…`), which is not a metric.
    ServiceCheck,
}

impl ErrorReason {
    pub const ALL: [ErrorReason; 10] = [
        ErrorReason::MissingValue,
        ErrorReason::MissingType,
        ErrorReason::BadSampleRate,
        ErrorReason::BadValue,
        ErrorReason::NegativeTimer,
        ErrorReason::UnknownType,
        ErrorReason::BadTimestamp,
        ErrorReason::TooManyTags,
        ErrorReason::Event,
        ErrorReason::ServiceCheck,
    ];

    /// A stable name for metrics (`reason` label).
    pub fn name(self) -> &'static str {
        match self {
            ErrorReason::MissingValue => "missing_value",
            ErrorReason::MissingType => "missing_type",
            ErrorReason::BadSampleRate => "bad_sample_rate",
            ErrorReason::BadValue => "bad_value",
            ErrorReason::NegativeTimer => "negative_timer",
            ErrorReason::UnknownType => "unknown_type",
            ErrorReason::BadTimestamp => "bad_timestamp",
            ErrorReason::TooManyTags => "too_many_tags",
            ErrorReason::Event => "event",
            ErrorReason::ServiceCheck => "service_check",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A refused sample: why, and its text (for a sampled log line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleError<'a> {
    pub reason: ErrorReason,
    pub text: &'a [u8],
}

/// The non-empty lines of a packet.
pub fn lines(packet: &[u8]) -> impl Iterator<Item = &[u8]> {
    packet.split(|&b| b == b'\n').filter(|line| !line.is_empty())
}

/// Every sample of every line of `packet`.
pub fn parse_packet(packet: &[u8], dialect: Dialect) -> impl Iterator<Item = Result<Sample<'_>, SampleError<'_>>> {
    lines(packet).flat_map(move |line| parse_line(line, dialect))
}

/// The samples of one line (without its `\n`).
pub fn parse_line(line: &[u8], dialect: Dialect) -> LineSamples<'_> {
    match dialect {
        Dialect::Etsy => etsy_line(line),
        Dialect::DogStatsd => dogstatsd_line(line),
    }
}

/// The results of one line, one per sample.
#[derive(Clone, Debug)]
pub struct LineSamples<'a> {
    key: Key<'a>,
    state: State<'a>,
}

#[derive(Clone, Debug)]
enum State<'a> {
    /// Etsy: the samples after the key, `:` separated.
    Etsy(Option<&'a [u8]>),
    /// DogStatsD: values left (`:` separated) sharing one type and fields.
    Dog { values: Option<&'a [u8]>, shared: Shared<'a> },
    /// One error for the whole line, then done.
    Fail(Option<SampleError<'a>>),
}

#[derive(Clone, Copy, Debug)]
struct Shared<'a> {
    kind: MetricKind,
    sample_rate: f64,
    timestamp_s: Option<i64>,
    container_id: Option<&'a [u8]>,
}

impl<'a> LineSamples<'a> {
    /// The key every sample of the line shares.
    pub fn key(&self) -> Key<'a> {
        self.key
    }
}

impl<'a> Iterator for LineSamples<'a> {
    type Item = Result<Sample<'a>, SampleError<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.state {
            State::Fail(error) => error.take().map(Err),
            State::Etsy(rest) => {
                let text = split_first(rest, b':')?;
                Some(etsy_sample(self.key, text))
            }
            State::Dog { values, shared } => {
                let shared = *shared;
                let text = if shared.kind == MetricKind::Set { values.take()? } else { split_first(values, b':')? };
                Some(dog_sample(self.key, text, shared))
            }
        }
    }
}

/// Takes the text up to the next `separator` from `rest` (all of it when there is none).
fn split_first<'a>(rest: &mut Option<&'a [u8]>, separator: u8) -> Option<&'a [u8]> {
    let text = (*rest)?;
    match text.iter().position(|&b| b == separator) {
        Some(at) => {
            *rest = Some(&text[at + 1..]);
            Some(&text[..at])
        }
        None => {
            *rest = None;
            Some(text)
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn etsy_line(line: &[u8]) -> LineSamples<'_> {
    // Cut at the first `|#`; the tags are what follows, up to a second `|#` if any
    // (the reference keeps only `split('|#')[1]`).
    let (body, tags) = match find(line, b"|#") {
        Some(at) => {
            let after = &line[at + 2..];
            (&line[..at], find(after, b"|#").map_or(after, |end| &after[..end]))
        }
        None => (line, &[][..]),
    };
    let (name, samples) = match body.iter().position(|&b| b == b':') {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let key = Key { name, tags, dialect: Dialect::Etsy };
    let state = match samples {
        Some(samples) => State::Etsy(Some(samples)),
        None => State::Fail(Some(SampleError { reason: ErrorReason::MissingValue, text: line })),
    };
    LineSamples { key, state }
}

/// One Etsy sample `value|type[|@rate][|…]`, validated as `is_valid_packet` does, then
/// dispatched on the trimmed type.
fn etsy_sample<'a>(key: Key<'a>, text: &'a [u8]) -> Result<Sample<'a>, SampleError<'a>> {
    let fail = |reason| Err(SampleError { reason, text });
    let mut fields = text.split(|&b| b == b'|');
    let value = fields.next().unwrap_or_default();
    let Some(kind_text) = fields.next() else { return fail(ErrorReason::MissingType) };
    let mut sample_rate = 1.0;
    if let Some(rate) = fields.next() {
        // Valid: `@` then a JavaScript number not starting with `-`. The reference then
        // reads `^@([\d.]+)`; where that does not match (`@+1`, `@ 1`, `@Infinity`) it
        // throws and the process dies: here those are bad samples.
        let Some(number) = rate.strip_prefix(b"@").filter(|n| !n.is_empty() && n[0] != b'-') else {
            return fail(ErrorReason::BadSampleRate);
        };
        if js_number(number).is_none() {
            return fail(ErrorReason::BadSampleRate);
        }
        let digits = number.iter().take_while(|b| b.is_ascii_digit() || **b == b'.').count();
        match js_number(&number[..digits]) {
            Some(rate) if digits > 0 => sample_rate = rate,
            _ => return fail(ErrorReason::BadSampleRate),
        }
    }
    let number = if value.is_empty() { None } else { js_number(value) };
    // Validation looks at the raw type; dispatch at the trimmed one (so `" ms"` is
    // validated as an unknown type and then aggregated as a timer).
    match kind_text {
        b"s" => {}
        b"ms" => match number {
            None => return fail(ErrorReason::BadValue),
            Some(v) if v < 0.0 => return fail(ErrorReason::NegativeTimer),
            Some(_) => {}
        },
        _ if number.is_none() => return fail(ErrorReason::BadValue),
        _ => {}
    }
    let (kind, sample_value) = match js_trim(kind_text) {
        b"ms" => (MetricKind::Timer, SampleValue::Number(number.unwrap_or(0.0))),
        b"g" => (MetricKind::Gauge, SampleValue::Number(number.unwrap_or(0.0))),
        b"s" => (MetricKind::Set, SampleValue::Member(if value.is_empty() { b"0" } else { value })),
        _ => (MetricKind::Counter, SampleValue::Number(number.unwrap_or(1.0))),
    };
    Ok(Sample {
        key,
        kind,
        value: sample_value,
        gauge_delta: matches!(value.first(), Some(b'+' | b'-')),
        sample_rate,
        timestamp_s: None,
        container_id: None,
    })
}

fn dogstatsd_line(line: &[u8]) -> LineSamples<'_> {
    let fail = |reason, name| LineSamples {
        key: Key { name, tags: &[], dialect: Dialect::DogStatsd },
        state: State::Fail(Some(SampleError { reason, text: line })),
    };
    if line.starts_with(b"_e{") {
        return fail(ErrorReason::Event, &[]);
    }
    if line.starts_with(b"_sc|") {
        return fail(ErrorReason::ServiceCheck, &[]);
    }
    let (head, fields) = match line.iter().position(|&b| b == b'|') {
        Some(at) => (&line[..at], Some(&line[at + 1..])),
        None => (line, None),
    };
    let Some(colon) = head.iter().position(|&b| b == b':') else { return fail(ErrorReason::MissingValue, head) };
    let (name, values) = (&head[..colon], &head[colon + 1..]);
    let Some(fields) = fields else { return fail(ErrorReason::MissingType, name) };
    let mut fields = fields.split(|&b| b == b'|');
    let kind = match fields.next().unwrap_or_default() {
        b"c" => MetricKind::Counter,
        b"g" => MetricKind::Gauge,
        b"ms" => MetricKind::Timer,
        b"h" => MetricKind::Histogram,
        b"d" => MetricKind::Distribution,
        b"s" => MetricKind::Set,
        b"" => return fail(ErrorReason::MissingType, name),
        _ => return fail(ErrorReason::UnknownType, name),
    };
    let mut shared = Shared { kind, sample_rate: 1.0, timestamp_s: None, container_id: None };
    let mut tags: &[u8] = &[];
    for field in fields {
        match field {
            [b'@', rate @ ..] => match strict_number(rate) {
                Some(rate) if rate > 0.0 && rate <= 1.0 => shared.sample_rate = rate,
                _ => return fail(ErrorReason::BadSampleRate, name),
            },
            [b'#', list @ ..] => tags = list,
            [b'c', b':', id @ ..] => shared.container_id = Some(id),
            [b'T', seconds @ ..] => match parse_i64(seconds) {
                Some(seconds) => shared.timestamp_s = Some(seconds),
                None => return fail(ErrorReason::BadTimestamp, name),
            },
            // Fields this build does not know (`e:`, `card:` …) are ignored, as DogStatsD
            // servers do with fields newer than themselves.
            _ => {}
        }
    }
    if tags.split(|&b| b == b',').count() > MAX_TAGS {
        return fail(ErrorReason::TooManyTags, name);
    }
    LineSamples {
        key: Key { name, tags, dialect: Dialect::DogStatsd },
        state: State::Dog { values: Some(values), shared },
    }
}

fn dog_sample<'a>(key: Key<'a>, text: &'a [u8], shared: Shared<'a>) -> Result<Sample<'a>, SampleError<'a>> {
    let value = if shared.kind == MetricKind::Set {
        SampleValue::Member(if text.is_empty() { b"0" } else { text })
    } else {
        match strict_number(text) {
            Some(number) => SampleValue::Number(number),
            None => return Err(SampleError { reason: ErrorReason::BadValue, text }),
        }
    };
    Ok(Sample {
        key,
        kind: shared.kind,
        value,
        gauge_delta: false,
        sample_rate: shared.sample_rate,
        timestamp_s: shared.timestamp_s,
        container_id: shared.container_id,
    })
}

fn parse_i64(text: &[u8]) -> Option<i64> {
    if text.is_empty() || text.len() > 18 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    core::str::from_utf8(text).ok()?.parse().ok()
}
