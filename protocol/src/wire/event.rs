//! Events: what a device measured, and when by its own clock.

use crate::{Instant, WallTime};

/// Longest metric name or opaque-payload name accepted from an input.
pub const MAX_NAME_BYTES: usize = 200;
/// Longest tag key or value.
pub const MAX_TAG_BYTES: usize = 200;
/// Most tags on one event. The decoder enforces it too, so a tag list can live on the stack.
pub const MAX_TAGS: usize = 16;

/// `key=value` pairs attached to a metric, in the order the input gave them.
///
/// A view, not a container: the caller's slice when encoding, or a validated region of a
/// received datagram when decoding. It is `Copy` and 24 bytes, so an event stays small
/// however many tags it carries (an inline array of 16 tags would make every decoded event
/// half a kilobyte to move around).
#[derive(Clone, Copy)]
pub struct Tags<'a> {
    repr: TagsRepr<'a>,
}

#[derive(Clone, Copy)]
enum TagsRepr<'a> {
    Slice(&'a [Tag<'a>]),
    /// `count` pairs of length-prefixed UTF-8 strings, validated by the decoder.
    Encoded {
        count: u8,
        bytes: &'a [u8],
    },
}

impl<'a> Tags<'a> {
    pub const EMPTY: Tags<'static> = Tags { repr: TagsRepr::Slice(&[]) };

    pub const fn new(tags: &'a [Tag<'a>]) -> Tags<'a> {
        Tags { repr: TagsRepr::Slice(tags) }
    }

    pub(crate) fn encoded(count: u8, bytes: &'a [u8]) -> Tags<'a> {
        Tags { repr: TagsRepr::Encoded { count, bytes } }
    }

    pub fn len(&self) -> usize {
        match self.repr {
            TagsRepr::Slice(tags) => tags.len(),
            TagsRepr::Encoded { count, .. } => usize::from(count),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> TagIter<'a> {
        match self.repr {
            TagsRepr::Slice(tags) => TagIter { repr: TagIterRepr::Slice(tags.iter()) },
            TagsRepr::Encoded { count, bytes } => {
                TagIter { repr: TagIterRepr::Encoded { remaining: count, input: super::codec::Reader::new(bytes) } }
            }
        }
    }
}

impl Default for Tags<'_> {
    fn default() -> Self {
        Tags::EMPTY
    }
}

impl PartialEq for Tags<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl core::fmt::Debug for Tags<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for Tags<'a> {
    type Item = Tag<'a>;
    type IntoIter = TagIter<'a>;

    fn into_iter(self) -> TagIter<'a> {
        self.iter()
    }
}

/// Iterates a [`Tags`] view.
#[derive(Clone, Debug)]
pub struct TagIter<'a> {
    repr: TagIterRepr<'a>,
}

#[derive(Clone, Debug)]
enum TagIterRepr<'a> {
    Slice(core::slice::Iter<'a, Tag<'a>>),
    Encoded { remaining: u8, input: super::codec::Reader<'a> },
}

impl<'a> Iterator for TagIter<'a> {
    type Item = Tag<'a>;

    fn next(&mut self) -> Option<Tag<'a>> {
        match &mut self.repr {
            TagIterRepr::Slice(iter) => iter.next().copied(),
            TagIterRepr::Encoded { remaining, input } => {
                if *remaining == 0 {
                    return None;
                }
                *remaining -= 1;
                // Validated when the frame was decoded: these cannot fail.
                Some(Tag { key: input.str()?, value: input.str()? })
            }
        }
    }
}

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
    #[error("more than {MAX_TAGS} tags")]
    TooManyTags,
    #[error("value is NaN or infinite")]
    NonFiniteValue,
}

impl<'a> Payload<'a> {
    pub fn name(&self) -> &'a str {
        match self {
            Payload::Counter(s)
            | Payload::Gauge(s)
            | Payload::GaugeDelta(s)
            | Payload::Timer(s)
            | Payload::Histogram(s) => s.name,
            Payload::Set(m) => m.name,
            Payload::Opaque(o) => o.name,
        }
    }

    pub fn tags(&self) -> Tags<'a> {
        match self {
            Payload::Counter(s)
            | Payload::Gauge(s)
            | Payload::GaugeDelta(s)
            | Payload::Timer(s)
            | Payload::Histogram(s) => s.tags,
            Payload::Set(m) => m.tags,
            Payload::Opaque(_) => Tags::EMPTY,
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
        if self.tags().len() > MAX_TAGS {
            return Err(InvalidEvent::TooManyTags);
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
            Payload::Counter(s)
            | Payload::Gauge(s)
            | Payload::GaugeDelta(s)
            | Payload::Timer(s)
            | Payload::Histogram(s)
                if !s.value.is_finite() =>
            {
                Err(InvalidEvent::NonFiniteValue)
            }
            Payload::Set(m) if m.member.len() > MAX_TAG_BYTES => Err(InvalidEvent::TagTooLong),
            _ => Ok(()),
        }
    }
}
