//! The caller-owned store that a [`super::Sender`] reads events from.

use crate::wire::{DataWriter, DropReason};
use crate::{Epoch, Seq};

/// A place in a device's event history: epochs in boot order, then sequence numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub epoch: Epoch,
    pub seq: Seq,
}

impl Position {
    pub const fn new(epoch: Epoch, seq: Seq) -> Position {
        Position { epoch, seq }
    }
}

/// What occupies the lowest held position of a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// An event (and possibly more after it: use [`Backlog::fill`]).
    Event,
    /// A dropped range `[position.seq, end)`, kept until acknowledged so the collector learns
    /// of the drop.
    Tombstone { end: Seq, reason: DropReason },
}

/// The device's durable (or RAM) buffer for one stream, seen by the sender.
///
/// Implementations: the agent's redb outbox, the firmware's RAM ring, the simulator's
/// in-memory store. The sender never holds events itself: memory stays flat however large
/// the backlog.
///
/// Contract: positions in `[tail(), head())` that were not released hold an event or belong
/// to a tombstone; `release` is idempotent; nothing is ever freed except by `release`.
pub trait Backlog {
    type Error;

    /// The current epoch and the sequence number the next event will get.
    fn head(&self) -> Position;

    /// The oldest position still held, or `head()` when nothing is held. An implementation
    /// that cannot tell (a storage error) must answer low, never high: heartbeats report
    /// this position, and a collector treats anything below it that it lacks as lost.
    fn tail(&self) -> Position;

    /// The lowest held item at a position in `[from, until)`, with that position.
    fn first_at_or_after(&mut self, from: Position, until: Position) -> Result<Option<(Position, Item)>, Self::Error>;

    /// Pushes the consecutive events starting at `from` (which holds an event) into `writer`,
    /// stopping before `end`, at the first gap or tombstone, or when the writer is full.
    fn fill(&mut self, from: Position, end: Seq, writer: &mut DataWriter<'_>) -> Result<(), Self::Error>;

    /// Frees `[range.start, range.end)` of `epoch`: the collector made it durable.
    fn release(&mut self, epoch: Epoch, range: crate::SeqRange) -> Result<(), Self::Error>;
}
