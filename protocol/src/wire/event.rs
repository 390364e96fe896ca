//! Events: what a device measured, and when by its own clock.

use crate::{Instant, WallTime};

/// Longest metric name or opaque-payload name accepted from an input.
pub const MAX_NAME_BYTES: usize = 200;
/// Longest tag key or value.
pub const MAX_TAG_BYTES: usize = 200;
/// Most tags on one event. The decoder enforces it too, so a tag list can live on the stack.
pub const MAX_TAGS: usize = 16;

/// `key=value` pairs attached to a metric, in the order the input gave them.
pub type Tags<'a> = heapless::Vec<Tag<'a>, MAX_TAGS>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tag<'a> {
    pub key: &'a str,
    pub value: &'a str,
}

/// One event as the device stamped it. The times are the device's and are never rewritten:
/// correcting them is the collector's job.
#[derive(Clone, Debug, PartialEq)]
pub struct Event<'a> {
    /// Device monotonic time since boot, µs.
    pub mono: Instant,
    /// Device wall-clock time, when the device has one.
    pub wall: Option<WallTime>,
    pub payload: Payload<'a>,
}

/// What was measured. The variant is the metric kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload<'a> {
    /// A count to be summed (StatsD `c`).
    Counter(Sample<'a>),
    /// An absolute level (StatsD `g`).
    Gauge(Sample<'a>),
    /// A relative change to a gauge (StatsD `g` with a leading sign).
    GaugeDelta(Sample<'a>),
    /// A duration sample in milliseconds (StatsD `ms`).
    Timer(Sample<'a>),
    /// A distribution sample (StatsD `h`).
    Histogram(Sample<'a>),
    /// A member of a set whose distinct members are counted (StatsD `s`).
    Set(Member<'a>),
    /// Application bytes the protocol does not interpret.
    Opaque(Opaque<'a>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub value: f64,
    pub tags: Tags<'a>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Member<'a> {
    pub name: &'a str,
    pub member: &'a str,
    pub tags: Tags<'a>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Opaque<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
}

/// Why an input's event cannot be enqueued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    #[error("name is empty")]
    EmptyName,
    #[error("name longer than {MAX_NAME_BYTES} bytes")]
    NameTooLong,
    #[error("tag key or value longer than {MAX_TAG_BYTES} bytes")]
    TagTooLong,
    #[error("tag key is empty")]
    EmptyTagKey,
    #[error("value is NaN or infinite")]
    NonFiniteValue,
}

impl<'a> Payload<'a> {
    pub fn name(&self) -> &'a str {
        match self {
            Payload::Counter(s) | Payload::Gauge(s) | Payload::GaugeDelta(s) | Payload::Timer(s) | Payload::Histogram(s) => s.name,
            Payload::Set(m) => m.name,
            Payload::Opaque(o) => o.name,
        }
    }

    pub fn tags(&self) -> &[Tag<'a>] {
        match self {
            Payload::Counter(s) | Payload::Gauge(s) | Payload::GaugeDelta(s) | Payload::Timer(s) | Payload::Histogram(s) => &s.tags,
            Payload::Set(m) => &m.tags,
            Payload::Opaque(_) => &[],
        }
    }

    /// A short name of the kind, as configs and logs spell it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Payload::Counter(_) => "counter",
            Payload::Gauge(_) => "gauge",
            Payload::GaugeDelta(_) => "gauge_delta",
            Payload::Timer(_) => "timer",
            Payload::Histogram(_) => "histogram",
            Payload::Set(_) => "set",
            Payload::Opaque(_) => "opaque",
        }
    }

    /// Checks the limits an input must enforce before enqueueing. The decoder does not call
    /// this: on the wire, only the datagram length bounds a name.
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        let name = self.name();
        if name.is_empty() {
            return Err(InvalidEvent::EmptyName);
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(InvalidEvent::NameTooLong);
        }
        for tag in self.tags() {
            if tag.key.is_empty() {
                return Err(InvalidEvent::EmptyTagKey);
            }
            if tag.key.len() > MAX_TAG_BYTES || tag.value.len() > MAX_TAG_BYTES {
                return Err(InvalidEvent::TagTooLong);
            }
        }
        match self {
            Payload::Counter(s) | Payload::Gauge(s) | Payload::GaugeDelta(s) | Payload::Timer(s) | Payload::Histogram(s)
                if !s.value.is_finite() =>
            {
                Err(InvalidEvent::NonFiniteValue)
            }
            Payload::Set(m) if m.member.len() > MAX_TAG_BYTES => Err(InvalidEvent::TagTooLong),
            _ => Ok(()),
        }
    }
}
