//! The protocol's [`Backlog`] over the outbox, for one stream.

use super::store::SegmentStore;
use super::{FileStore, Outbox, OutboxError};
use driftlog_protocol::sender::Item;
use driftlog_protocol::wire::DataWriter;
use driftlog_protocol::{Backlog, Epoch, Position, Seq, SeqRange, StreamId};

/// One stream of an [`Outbox`], as a [`driftlog_protocol::Sender`] sees it.
#[derive(Debug)]
pub struct StreamBacklog<'o, S: SegmentStore = FileStore> {
    outbox: &'o mut Outbox<S>,
    stream: StreamId,
}

impl<'o, S: SegmentStore> StreamBacklog<'o, S> {
    pub(super) fn new(outbox: &'o mut Outbox<S>, stream: StreamId) -> StreamBacklog<'o, S> {
        StreamBacklog { outbox, stream }
    }
}

impl<S: SegmentStore> Backlog for StreamBacklog<'_, S> {
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
