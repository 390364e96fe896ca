//! The protocol's [`Backlog`] over the outbox, for one stream.

use super::tables::{EVENTS, TOMBSTONES, drop_reason_from_code};
use super::{Outbox, OutboxError};
use driftlog_protocol::sender::Item;
use driftlog_protocol::wire::{DataWriter, decode_event_record};
use driftlog_protocol::{Backlog, Epoch, Position, Seq, SeqRange, StreamId};
use redb::ReadableDatabase;

/// One stream of an [`Outbox`], as a [`driftlog_protocol::Sender`] sees it.
#[derive(Debug)]
pub struct StreamBacklog<'o> {
    outbox: &'o mut Outbox,
    stream: StreamId,
}

impl<'o> StreamBacklog<'o> {
    pub(super) fn new(outbox: &'o mut Outbox, stream: StreamId) -> StreamBacklog<'o> {
        StreamBacklog { outbox, stream }
    }

    fn key(&self, position: Position) -> (StreamId, Epoch, Seq) {
        (self.stream, position.epoch, position.seq)
    }

    /// The first event at or after `from` and before `until`.
    fn first_event(&self, from: Position, until: Position) -> Result<Option<Position>, OutboxError> {
        let txn = self.outbox.database().begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let mut range = table.range(self.key(from)..self.key(until))?;
        Ok(range.next().transpose()?.map(|(key, _)| {
            let (_, epoch, seq) = key.value();
            Position::new(epoch, seq)
        }))
    }

    /// The first tombstone covering or following `from`, before `until`.
    fn first_tombstone(&self, from: Position, until: Position) -> Result<Option<(Position, Item)>, OutboxError> {
        let txn = self.outbox.database().begin_read()?;
        let table = txn.open_table(TOMBSTONES)?;
        let item = |start: (StreamId, Epoch, Seq), (end, code): (u64, u8)| -> Result<(Position, Item), OutboxError> {
            let reason = drop_reason_from_code(code).ok_or(OutboxError::Corrupt {
                stream: start.0,
                epoch: start.1,
                seq: start.2,
            })?;
            Ok((Position::new(start.1, start.2), Item::Tombstone { end, reason }))
        };
        // One that starts before `from` and still covers it.
        if let Some((start, value)) =
            table.range(self.key(Position::new(from.epoch, 0))..=self.key(from))?.next_back().transpose()?
        {
            let (start, value) = (start.value(), value.value());
            if value.0 > from.seq {
                let (_, item) = item(start, value)?;
                return Ok(Some((from, item)));
            }
        }
        match table.range(self.key(from)..self.key(until))?.next().transpose()? {
            Some((start, value)) => item(start.value(), value.value()).map(Some),
            None => Ok(None),
        }
    }
}

impl Backlog for StreamBacklog<'_> {
    type Error = OutboxError;

    fn head(&self) -> Position {
        Position::new(self.outbox.epoch(), self.outbox.next_seq(self.stream))
    }

    fn tail(&self) -> Position {
        let everything = (Position::new(0, 0), Position::new(Epoch::MAX, Seq::MAX));
        let (event, tombstone) =
            match (self.first_event(everything.0, everything.1), self.first_tombstone(everything.0, everything.1)) {
                (Ok(event), Ok(tombstone)) => (event, tombstone.map(|(position, _)| position)),
                (Err(error), _) | (_, Err(error)) => {
                    // The safe answer when the disk cannot say: "everything may still be held".
                    // Claiming less would let a heartbeat tell the collector that unacknowledged
                    // events are gone for good.
                    tracing::warn!(%error, stream = self.stream, "cannot read the outbox tail");
                    return Position::new(0, 0);
                }
            };
        match (event, tombstone) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or_else(|| self.head()),
        }
    }

    fn first_at_or_after(&mut self, from: Position, until: Position) -> Result<Option<(Position, Item)>, OutboxError> {
        let event = self.first_event(from, until)?;
        let tombstone = self.first_tombstone(from, until)?;
        Ok(match (event, tombstone) {
            (Some(event), Some((position, item))) if position < event => Some((position, item)),
            (Some(event), _) => Some((event, Item::Event)),
            (None, tombstone) => tombstone,
        })
    }

    fn fill(&mut self, from: Position, end: Seq, writer: &mut DataWriter<'_>) -> Result<(), OutboxError> {
        let txn = self.outbox.database().begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let rows = table.range(self.key(from)..self.key(Position::new(from.epoch, end)))?;
        for (expected, row) in (from.seq..).zip(rows) {
            let (key, value) = row?;
            let (stream, epoch, seq) = key.value();
            if seq != expected {
                break;
            }
            let record = value.value();
            let event = decode_event_record(record).map_err(|_| OutboxError::Corrupt { stream, epoch, seq })?;
            if writer.push(&event).is_err() {
                break;
            }
        }
        Ok(())
    }

    fn release(&mut self, epoch: Epoch, range: SeqRange) -> Result<(), OutboxError> {
        self.outbox.release(self.stream, epoch, range.start, range.end)
    }
}
