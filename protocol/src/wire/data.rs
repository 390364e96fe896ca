//! The `Data` frame: a batch of consecutive events of one stream.
//!
//! ```text
//! body    = head event+
//! head    = stream (varint u32) epoch_back (varint u64) first_seq (varint u64)   (postcard)
//! event   = flags (1 byte) time (varint u64) [wall (zigzag i64)] name (str) value [tags]
//! flags   = bit 0-2 kind: 0 counter, 1 gauge, 2 gauge delta, 3 timer, 4 histogram, 5 set, 6 opaque
//!           bit 3-5 wall: 0 absent, 1 same as previous, 2 shift (delta follows),
//!                         3 unsynchronized (offset follows), 4 synchronized (offset follows)
//!           bit 6   tags follow;  bit 7 reserved, 0
//! value   = f64 little-endian | member (str, for sets) | bytes (for opaque)
//! tags    = count (varint, 1..=16) (key str, value str)*
//!         | 0   (the same tags as the last explicit list in this batch)
//! str     = varint length, UTF-8 bytes
//! ```
//! - `epoch_back`: the events' epoch is `header.epoch - epoch_back` (0 for live data; more
//!   when a rebooted device replays an older boot's backlog).
//! - `time`: the first event's device monotonic µs; every later one is the delta from the
//!   event before it (so a batch never goes back in time; the writer starts a new frame
//!   instead). The sequence number of the i-th event is `first_seq + i`: it costs nothing.
//! - `wall` is stored as the offset `wall - mono`; an event whose offset and quality equal
//!   the previous event's costs nothing beyond its flags.
//! - Tags usually repeat from event to event (`host=gw-17` on every metric): a repeated list
//!   costs one byte.
//! - There is no event count: the events run to the tag. The decoder validates all of them
//!   before it hands the frame out, so iterating a [`DataFrame`] cannot fail.
//!
//! Varints, strings and floats are encoded as postcard encodes them; the one-byte flags
//! replace serde's enum and option tags, which would cost three bytes per event.

use super::codec::{Overflow, Reader, Writer};
use super::event::{Event, MAX_TAGS, Member, Opaque, Payload, Sample, Tags};
use super::{EncodeError, Header, MAC_BYTES, Reject};
use crate::{ClockQuality, Epoch, Instant, Seq, SeqRange, StreamId, WallTime};

/// What a data body starts with: three varints (postcard's layout of this struct).
struct DataHead {
    stream: StreamId,
    epoch_back: u64,
    first_seq: Seq,
}

/// `wall - mono`, with wrapping arithmetic so that every pair round-trips exactly.
fn wall_offset(mono: Instant, wall: WallTime) -> i64 {
    (wall.unix_micros as u64).wrapping_sub(mono.as_micros()) as i64
}

const WALL_ABSENT: u8 = 0;
const WALL_SAME: u8 = 1;
const WALL_SHIFT: u8 = 2;
const WALL_UNSYNCHRONIZED: u8 = 3;
const WALL_SYNCHRONIZED: u8 = 4;
const HAS_TAGS: u8 = 1 << 6;

fn kind_code(payload: &Payload<'_>) -> u8 {
    match payload {
        Payload::Counter(_) => 0,
        Payload::Gauge(_) => 1,
        Payload::GaugeDelta(_) => 2,
        Payload::Timer(_) => 3,
        Payload::Histogram(_) => 4,
        Payload::Set(_) => 5,
        Payload::Opaque(_) => 6,
    }
}

/// Per-batch state shared by the encoder and the decoder.
#[derive(Clone, Copy, Debug, Default)]
struct Chain {
    mono: Option<u64>,
    wall: Option<(i64, ClockQuality)>,
}

impl Chain {
    /// The wall mode and the value that follows it, if any.
    fn encode_wall(&self, mono: Instant, wall: Option<WallTime>) -> (u8, Option<i64>) {
        let Some(wall) = wall else { return (WALL_ABSENT, None) };
        let offset = wall_offset(mono, wall);
        match self.wall {
            Some((previous, quality)) if quality == wall.quality => {
                if previous == offset {
                    (WALL_SAME, None)
                } else {
                    (WALL_SHIFT, Some(offset.wrapping_sub(previous)))
                }
            }
            _ => match wall.quality {
                ClockQuality::Unsynchronized => (WALL_UNSYNCHRONIZED, Some(offset)),
                ClockQuality::Synchronized => (WALL_SYNCHRONIZED, Some(offset)),
            },
        }
    }

    /// Writes the event; returns where its tag list starts in `out`, if it has one.
    fn write(&mut self, event: &Event<'_>, out: &mut Writer<'_>) -> Result<Option<usize>, Overflow> {
        let mono = event.mono.as_micros();
        let time = match self.mono {
            None => mono,
            // The writer checked that time does not go backwards.
            Some(previous) => mono - previous,
        };
        let (wall_mode, wall_value) = self.encode_wall(event.mono, event.wall);
        let tags = event.payload.tags();
        let mut flags = kind_code(&event.payload) | wall_mode << 3;
        if !tags.is_empty() {
            flags |= HAS_TAGS;
        }
        out.byte(flags)?;
        out.varint(time)?;
        if let Some(value) = wall_value {
            out.zigzag(value)?;
        }
        out.bytes(event.payload.name().as_bytes())?;
        match &event.payload {
            Payload::Counter(s)
            | Payload::Gauge(s)
            | Payload::GaugeDelta(s)
            | Payload::Timer(s)
            | Payload::Histogram(s) => out.f64(s.value)?,
            Payload::Set(m) => out.bytes(m.member.as_bytes())?,
            Payload::Opaque(o) => out.bytes(o.bytes)?,
        }
        let tags_at = (!tags.is_empty()).then_some(out.len());
        if !tags.is_empty() {
            // Last field of the event, so the writer can replace it with a repeat marker.
            out.varint(tags.len() as u64)?;
            for tag in tags.iter() {
                out.bytes(tag.key.as_bytes())?;
                out.bytes(tag.value.as_bytes())?;
            }
        }
        self.mono = Some(mono);
        self.wall = event.wall.map(|w| (wall_offset(event.mono, w), w.quality));
        Ok(tags_at)
    }

    /// Decodes one event; `None` on any malformation (including non-canonical flags).
    fn read<'a>(&mut self, input: &mut Reader<'a>, last_tags: &mut Tags<'a>) -> Option<Event<'a>> {
        let flags = input.byte()?;
        let kind = flags & 0b111;
        let wall_mode = (flags >> 3) & 0b111;
        let has_tags = flags & HAS_TAGS != 0;
        if flags & 0x80 != 0 {
            return None;
        }
        let time = input.varint()?;
        let mono = match self.mono {
            None => time,
            Some(previous) => previous.checked_add(time)?,
        };
        let wall = match wall_mode {
            WALL_ABSENT => None,
            WALL_SAME => Some(self.wall?),
            WALL_SHIFT => {
                let (offset, quality) = self.wall?;
                Some((offset.wrapping_add(input.zigzag()?), quality))
            }
            WALL_UNSYNCHRONIZED => Some((input.zigzag()?, ClockQuality::Unsynchronized)),
            WALL_SYNCHRONIZED => Some((input.zigzag()?, ClockQuality::Synchronized)),
            _ => return None,
        };
        let name = input.str()?;
        let mut tags = Tags::EMPTY;
        let payload = match kind {
            0..=4 => {
                let value = input.f64()?;
                if has_tags {
                    read_tags(input, &mut tags, last_tags)?;
                }
                let sample = Sample { name, value, tags };
                match kind {
                    0 => Payload::Counter(sample),
                    1 => Payload::Gauge(sample),
                    2 => Payload::GaugeDelta(sample),
                    3 => Payload::Timer(sample),
                    _ => Payload::Histogram(sample),
                }
            }
            5 => {
                let member = input.str()?;
                if has_tags {
                    read_tags(input, &mut tags, last_tags)?;
                }
                Payload::Set(Member { name, member, tags })
            }
            6 if !has_tags => Payload::Opaque(Opaque { name, bytes: input.bytes()? }),
            _ => return None,
        };
        self.mono = Some(mono);
        self.wall = wall;
        let wall =
            wall.map(|(offset, quality)| WallTime { unix_micros: mono.wrapping_add(offset as u64) as i64, quality });
        Some(Event { mono: Instant::from_micros(mono), wall, payload })
    }
}

fn read_tags<'a>(input: &mut Reader<'a>, tags: &mut Tags<'a>, last_tags: &mut Tags<'a>) -> Option<()> {
    let count = input.varint()?;
    if count == 0 {
        if last_tags.is_empty() {
            return None;
        }
        *tags = *last_tags;
        return Some(());
    }
    if count > MAX_TAGS as u64 {
        return None;
    }
    let start = input.rest();
    for _ in 0..count {
        input.str()?;
        input.str()?;
    }
    let consumed = start.len() - input.rest().len();
    *tags = Tags::encoded(count as u8, &start[..consumed]);
    *last_tags = *tags;
    Some(())
}

/// Why an event was not added to a batch. The batch is unchanged either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// No room left in the datagram (or the event limit is reached): send this batch first.
    #[error("batch full")]
    Full,
    /// The event is older than the previous one in the batch: start a new batch.
    #[error("event goes back in time")]
    BackInTime,
}

/// Builds one `Data` datagram in a caller-owned buffer.
#[derive(Debug)]
pub struct DataWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    first_seq: Seq,
    count: u32,
    max_events: u32,
    chain: Chain,
    /// Where the last explicitly written tag list sits in `buf`.
    last_tags: Option<(usize, usize)>,
}

impl<'b> DataWriter<'b> {
    /// Starts a batch of events of `stream` and `epoch` whose first event has `first_seq`.
    /// `buf` is the whole datagram buffer (its length is the datagram size limit).
    pub fn new(
        buf: &'b mut [u8],
        header: &Header,
        stream: StreamId,
        epoch: Epoch,
        first_seq: Seq,
        max_events: u32,
    ) -> Result<DataWriter<'b>, EncodeError> {
        let epoch_back = header.epoch.checked_sub(epoch).ok_or(EncodeError::OutOfRange)?;
        let header_len = header.emit(buf)?;
        let body_limit = buf.len().checked_sub(MAC_BYTES).ok_or(EncodeError::BufferTooSmall)?;
        if header_len > body_limit {
            return Err(EncodeError::BufferTooSmall);
        }
        let mut head = Writer::new(&mut buf[header_len..body_limit]);
        let written =
            head.varint(u64::from(stream)).and_then(|()| head.varint(epoch_back)).and_then(|()| head.varint(first_seq));
        written.map_err(|_| EncodeError::BufferTooSmall)?;
        let head_len = head.len();
        Ok(DataWriter {
            buf,
            len: header_len + head_len,
            first_seq,
            count: 0,
            max_events,
            chain: Chain::default(),
            last_tags: None,
        })
    }

    /// Appends the event with sequence number `first_seq + count()`.
    pub fn push(&mut self, event: &Event<'_>) -> Result<(), PushError> {
        if self.count >= self.max_events {
            return Err(PushError::Full);
        }
        let body_limit = self.buf.len() - MAC_BYTES;
        self.len = push_chained(&mut self.buf[..body_limit], self.len, &mut self.chain, &mut self.last_tags, event)?;
        self.count += 1;
        Ok(())
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The sequence numbers written so far.
    pub fn range(&self) -> SeqRange {
        SeqRange::with_len(self.first_seq, u64::from(self.count))
    }

    /// Bytes written so far, tag excluded.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The unsealed datagram and its length, for [`super::Sealer::seal`].
    pub fn into_parts(self) -> (&'b mut [u8], usize) {
        (self.buf, self.len)
    }
}

/// A decoded, fully validated `Data` frame borrowing the datagram.
#[derive(Clone, Copy, Debug)]
pub struct DataFrame<'a> {
    pub stream: StreamId,
    /// The events' epoch (the header's epoch minus `epoch_back`).
    pub epoch: Epoch,
    pub first_seq: Seq,
    pub count: u32,
    events: &'a [u8],
}

impl<'a> DataFrame<'a> {
    /// Validates the whole batch; iterating the returned frame cannot fail.
    pub(crate) fn decode(header: &Header, body: &'a [u8]) -> Result<DataFrame<'a>, Reject> {
        Self::decode_each(header, body, |_, _| {})
    }

    /// Decodes every event, handing each to `each` as it goes; any malformation rejects the
    /// whole frame.
    fn decode_each(
        header: &Header,
        body: &'a [u8],
        mut each: impl FnMut(Seq, Event<'a>),
    ) -> Result<DataFrame<'a>, Reject> {
        let mut head_reader = Reader::new(body);
        let head = (|| {
            let stream = StreamId::try_from(head_reader.varint()?).ok()?;
            Some(DataHead { stream, epoch_back: head_reader.varint()?, first_seq: head_reader.varint()? })
        })()
        .ok_or(Reject::Malformed)?;
        let events = head_reader.rest();
        let epoch = header.epoch.checked_sub(head.epoch_back).ok_or(Reject::Malformed)?;
        let mut count = 0u32;
        let mut chain = Chain::default();
        let mut input = Reader::new(events);
        let mut last_tags = Tags::EMPTY;
        while !input.is_empty() {
            let event = chain.read(&mut input, &mut last_tags).ok_or(Reject::Malformed)?;
            let seq = head.first_seq.checked_add(u64::from(count)).ok_or(Reject::Malformed)?;
            each(seq, event);
            count = count.checked_add(1).ok_or(Reject::Malformed)?;
        }
        if count == 0 || head.first_seq.checked_add(u64::from(count)).is_none() {
            return Err(Reject::Malformed);
        }
        Ok(DataFrame { stream: head.stream, epoch, first_seq: head.first_seq, count, events })
    }

    pub fn range(&self) -> SeqRange {
        SeqRange::with_len(self.first_seq, u64::from(self.count))
    }

    /// The encoded events (the batch chain), to store as they came: an
    /// [`EventChainReader`] reads them back.
    pub fn event_bytes(&self) -> &'a [u8] {
        self.events
    }

    /// The events with their sequence numbers, in order.
    pub fn events(&self) -> EventIter<'a> {
        EventIter {
            input: Reader::new(self.events),
            seq: self.first_seq,
            chain: Chain::default(),
            last_tags: Tags::EMPTY,
        }
    }
}

/// Iterates a validated batch. Yields `(seq, event)`.
#[derive(Clone, Debug)]
pub struct EventIter<'a> {
    input: Reader<'a>,
    seq: Seq,
    chain: Chain,
    last_tags: Tags<'a>,
}

impl<'a> Iterator for EventIter<'a> {
    type Item = (Seq, Event<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.input.is_empty() {
            return None;
        }
        // Validated in `DataFrame::decode`; a failure here would end the iteration, not panic.
        let event = self.chain.read(&mut self.input, &mut self.last_tags)?;
        let seq = self.seq;
        self.seq += 1;
        Some((seq, event))
    }
}

/// Writes `event` at `buf[len..]` continuing `chain`; returns the new length. A tag list equal
/// to the last explicit one (at `last_tags` in `buf`) is written as one byte. On error nothing
/// changes.
fn push_chained(
    buf: &mut [u8],
    len: usize,
    chain: &mut Chain,
    last_tags: &mut Option<(usize, usize)>,
    event: &Event<'_>,
) -> Result<usize, PushError> {
    if chain.mono.is_some_and(|previous| event.mono.as_micros() < previous) {
        return Err(PushError::BackInTime);
    }
    let mut out = Writer::new(&mut buf[len..]);
    let mut next = *chain;
    let tags_at = next.write(event, &mut out).map_err(|_| PushError::Full)?;
    let end = len + out.len();
    let new_len = match tags_at {
        Some(relative) => {
            let start = len + relative;
            match *last_tags {
                Some((last_start, last_end)) if buf[last_start..last_end] == buf[start..end] => {
                    // Same list as before: one byte instead of the list.
                    buf[start] = 0;
                    start + 1
                }
                _ => {
                    *last_tags = Some((start, end));
                    end
                }
            }
        }
        None => end,
    };
    *chain = next;
    Ok(new_len)
}

/// Encodes a run of events in the batch form of a `Data` frame body without the frame (delta
/// times, repeated tag lists as one byte), for storage: the collector's log keeps events this
/// way. Read it back with [`EventChainReader`].
#[derive(Debug)]
pub struct EventChainWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    count: u32,
    chain: Chain,
    last_tags: Option<(usize, usize)>,
}

impl<'b> EventChainWriter<'b> {
    pub fn new(buf: &'b mut [u8]) -> Self {
        EventChainWriter { buf, len: 0, count: 0, chain: Chain::default(), last_tags: None }
    }

    /// Appends `event`; events must not go back in (monotonic) time.
    pub fn push(&mut self, event: &Event<'_>) -> Result<(), PushError> {
        self.len = push_chained(self.buf, self.len, &mut self.chain, &mut self.last_tags, event)?;
        self.count += 1;
        Ok(())
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The chain written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Empties the writer, to start a new chain in the same buffer.
    pub fn reset(&mut self) {
        self.len = 0;
        self.count = 0;
        self.chain = Chain::default();
        self.last_tags = None;
    }
}

/// Reads a chain written by [`EventChainWriter`] (or the events of a frame,
/// [`DataFrame::event_bytes`]). Yields an error once, then ends, on malformed input.
#[derive(Clone, Debug)]
pub struct EventChainReader<'a> {
    input: Reader<'a>,
    chain: Chain,
    last_tags: Tags<'a>,
    failed: bool,
}

impl<'a> EventChainReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        EventChainReader { input: Reader::new(bytes), chain: Chain::default(), last_tags: Tags::EMPTY, failed: false }
    }
}

impl<'a> Iterator for EventChainReader<'a> {
    type Item = Result<Event<'a>, Reject>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.input.is_empty() {
            return None;
        }
        match self.chain.read(&mut self.input, &mut self.last_tags) {
            Some(event) => Some(Ok(event)),
            None => {
                self.failed = true;
                Some(Err(Reject::Malformed))
            }
        }
    }
}

/// Encodes one event on its own (no batch context: absolute time, full wall offset, explicit
/// tags), the form a device stores in its buffer. Returns the length written.
pub fn encode_event_record(event: &Event<'_>, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let mut out = Writer::new(buf);
    Chain::default().write(event, &mut out).map_err(|_| EncodeError::BufferTooSmall)?;
    Ok(out.len())
}

/// Decodes a record written by [`encode_event_record`]; the whole input must be one event.
pub fn decode_event_record(bytes: &[u8]) -> Result<Event<'_>, Reject> {
    let mut input = Reader::new(bytes);
    let mut last_tags = Tags::EMPTY;
    let event = Chain::default().read(&mut input, &mut last_tags).ok_or(Reject::Malformed)?;
    if !input.is_empty() {
        return Err(Reject::Malformed);
    }
    Ok(event)
}
