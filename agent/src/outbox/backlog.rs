//! The protocol's [`Backlog`] over the outbox, for one stream.

use super::{Outbox, OutboxError};
use driftlog_protocol::sender::Item;
use driftlog_protocol::wire::DataWriter;
use driftlog_protocol::{Backlog, Epoch, Position, Seq, SeqRange, StreamId};

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
}

impl Backlog for StreamBacklog<'_> {
    type Error = OutboxError;

    fn head(&self) -> Position {
        Position::new(self.outbox.epoch(), self.outbox.next_seq(self.stream))
    }

    fn tail(&self) -> Position {
        let everything = (Position::new(0, 0), Position::new(Epoch::MAX, Seq::MAX));
        match self.outbox.first_held(self.stream, everything.0, everything.1) {
            Some((position, _)) => position,
            None => self.head(),
        }
    }

    fn first_at_or_after(&mut self, from: Position, until: Position) -> Result<Option<(Position, Item)>, OutboxError> {
        Ok(self.outbox.first_held(self.stream, from, until).map(|(position, tombstone)| match tombstone {
            Some((end, reason)) => (position, Item::Tombstone { end, reason }),
            None => (position, Item::Event),
        }))
    }

    fn fill(&mut self, from: Position, end: Seq, writer: &mut DataWriter<'_>) -> Result<(), OutboxError> {
        self.outbox.visit_events(self.stream, from, end, |event| writer.push(event).is_ok())
    }

    fn release(&mut self, epoch: Epoch, range: SeqRange) -> Result<(), OutboxError> {
        self.outbox.release(self.stream, epoch, range.start, range.end)
    }
}
