//! The `Data` frame: a batch of consecutive events of one stream.
//!
//! ```text
//! body    = head event+
//! head    = stream (varint u32) epoch_back (varint u64) first_seq (varint u64)
//! event   = time (varint u64) wall payload
//! ```
//! - `epoch_back`: the events' epoch is `header.epoch - epoch_back` (0 for live data; more
//!   when a rebooted device replays an older boot's backlog).
//! - `time`: the first event's device monotonic µs; every later one is the delta from the
//!   event before it (so a batch never goes back in time; the writer starts a new frame
//!   instead). The sequence number of the i-th event is `first_seq + i`: it costs nothing.
//! - `wall`: an enum whose common case (`Same`: same wall - mono offset as the previous event)
//!   is one byte; `Shift` carries a small delta; the full offset appears once per batch.
//! - There is no event count: the events run to the tag. The decoder validates all of them
//!   before it hands the frame out, so iterating a [`DataFrame`] cannot fail.

use super::event::{Event, Payload};
use super::{EncodeError, Header, MAC_BYTES, Reject};
use crate::{ClockQuality, Epoch, Instant, Seq, SeqRange, StreamId, WallTime};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct DataHead {
    stream: StreamId,
    epoch_back: u64,
    first_seq: Seq,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum WallWire {
    Absent,
    Same,
    Shift(i64),
    Unsynchronized(i64),
    Synchronized(i64),
}

#[derive(Serialize)]
struct EventOut<'e, 'a> {
    time: u64,
    wall: WallWire,
    payload: &'e Payload<'a>,
}

#[derive(Deserialize)]
struct EventIn<'a> {
    time: u64,
    wall: WallWire,
    #[serde(borrow)]
    payload: Payload<'a>,
}

/// `wall - mono`, with wrapping arithmetic so that every pair round-trips exactly.
fn wall_offset(mono: Instant, wall: WallTime) -> i64 {
    (wall.unix_micros as u64).wrapping_sub(mono.as_micros()) as i64
}

/// Per-batch state shared by the encoder and the decoder.
#[derive(Clone, Copy, Debug, Default)]
struct Chain {
    mono: Option<u64>,
    wall: Option<(i64, ClockQuality)>,
}

impl Chain {
    fn encode_wall(&self, mono: Instant, wall: Option<WallTime>) -> WallWire {
        let Some(wall) = wall else { return WallWire::Absent };
        let offset = wall_offset(mono, wall);
        match self.wall {
            Some((previous, quality)) if quality == wall.quality => {
                if previous == offset {
                    WallWire::Same
                } else {
                    WallWire::Shift(offset.wrapping_sub(previous))
                }
            }
            _ => match wall.quality {
                ClockQuality::Unsynchronized => WallWire::Unsynchronized(offset),
                ClockQuality::Synchronized => WallWire::Synchronized(offset),
            },
        }
    }

    /// Applies one event's encoded time and wall fields; `None` when they are inconsistent.
    fn decode(&mut self, time: u64, wall: WallWire) -> Option<(Instant, Option<WallTime>)> {
        let mono = match self.mono {
            None => time,
            Some(previous) => previous.checked_add(time)?,
        };
        self.mono = Some(mono);
        self.wall = match wall {
            WallWire::Absent => None,
            WallWire::Same => Some(self.wall?),
            WallWire::Shift(delta) => {
                let (offset, quality) = self.wall?;
                Some((offset.wrapping_add(delta), quality))
            }
            WallWire::Unsynchronized(offset) => Some((offset, ClockQuality::Unsynchronized)),
            WallWire::Synchronized(offset) => Some((offset, ClockQuality::Synchronized)),
        };
        let wall = self.wall.map(|(offset, quality)| WallTime {
            unix_micros: mono.wrapping_add(offset as u64) as i64,
            quality,
        });
        Some((Instant::from_micros(mono), wall))
    }
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
        let head = DataHead { stream, epoch_back, first_seq };
        let head_len = postcard::to_slice(&head, &mut buf[header_len..body_limit])
            .map_err(|_| EncodeError::BufferTooSmall)?
            .len();
        Ok(DataWriter { buf, len: header_len + head_len, first_seq, count: 0, max_events, chain: Chain::default() })
    }

    /// Appends the event with sequence number `first_seq + count()`.
    pub fn push(&mut self, event: &Event<'_>) -> Result<(), PushError> {
        if self.count >= self.max_events {
            return Err(PushError::Full);
        }
        let mono = event.mono.as_micros();
        let time = match self.chain.mono {
            None => mono,
            Some(previous) => mono.checked_sub(previous).ok_or(PushError::BackInTime)?,
        };
        let wall = self.chain.encode_wall(event.mono, event.wall);
        let body_limit = self.buf.len() - MAC_BYTES;
        let out = EventOut { time, wall, payload: &event.payload };
        let written = postcard::to_slice(&out, &mut self.buf[self.len..body_limit]).map_err(|_| PushError::Full)?.len();
        self.len += written;
        self.count += 1;
        self.chain.mono = Some(mono);
        self.chain.wall = event.wall.map(|w| (wall_offset(event.mono, w), w.quality));
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
    pub(crate) fn decode(header: &Header, body: &'a [u8]) -> Result<DataFrame<'a>, Reject> {
        let (head, events) = postcard::take_from_bytes::<DataHead>(body).map_err(|_| Reject::Malformed)?;
        let epoch = header.epoch.checked_sub(head.epoch_back).ok_or(Reject::Malformed)?;
        let mut count = 0u32;
        let mut chain = Chain::default();
        let mut rest = events;
        while !rest.is_empty() {
            let (event, tail) = postcard::take_from_bytes::<EventIn<'a>>(rest).map_err(|_| Reject::Malformed)?;
            chain.decode(event.time, event.wall).ok_or(Reject::Malformed)?;
            count = count.checked_add(1).ok_or(Reject::Malformed)?;
            rest = tail;
        }
        if count == 0 || head.first_seq.checked_add(u64::from(count)).is_none() {
            return Err(Reject::Malformed);
        }
        Ok(DataFrame { stream: head.stream, epoch, first_seq: head.first_seq, count, events })
    }

    pub fn range(&self) -> SeqRange {
        SeqRange::with_len(self.first_seq, u64::from(self.count))
    }

    /// The events with their sequence numbers, in order.
    pub fn events(&self) -> EventIter<'a> {
        EventIter { rest: self.events, seq: self.first_seq, chain: Chain::default() }
    }
}

/// Iterates a validated batch. Yields `(seq, event)`.
#[derive(Clone, Debug)]
pub struct EventIter<'a> {
    rest: &'a [u8],
    seq: Seq,
    chain: Chain,
}

impl<'a> Iterator for EventIter<'a> {
    type Item = (Seq, Event<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        // Validated in `DataFrame::decode`; a failure here would end the iteration, not panic.
        let (event, tail) = postcard::take_from_bytes::<EventIn<'a>>(self.rest).ok()?;
        let (mono, wall) = self.chain.decode(event.time, event.wall)?;
        self.rest = tail;
        let seq = self.seq;
        self.seq += 1;
        Some((seq, Event { mono, wall, payload: event.payload }))
    }
}
