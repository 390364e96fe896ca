//! Splitting an append's events into blocks.

use super::OutboxError;
use driftlog_protocol::wire::{Event, EventChainWriter, PushError};

use super::block::MAX_BLOCK_EVENTS;

/// One encoded block of an append, before it is written.
pub(super) struct Encoded {
    pub payload: Vec<u8>,
    pub events: u64,
}

/// Splits events into blocks: at most [`MAX_BLOCK_EVENTS`] each, a new block where time goes
/// back (the chain encodes forward deltas) or the payload is full. An event that does not
/// fit an empty block is too large to store.
pub(super) struct BlockEncoder<'b> {
    writer: EventChainWriter<'b>,
    blocks: Vec<Encoded>,
}

impl<'b> BlockEncoder<'b> {
    pub(super) fn new(buf: &'b mut [u8]) -> BlockEncoder<'b> {
        BlockEncoder { writer: EventChainWriter::new(buf), blocks: Vec::new() }
    }

    pub(super) fn push(&mut self, event: &Event<'_>) -> Result<(), OutboxError> {
        if self.writer.count() as u64 >= MAX_BLOCK_EVENTS {
            self.finish_block();
        }
        match self.writer.push(event) {
            Ok(()) => Ok(()),
            Err(PushError::Full | PushError::BackInTime) if !self.writer.is_empty() => {
                self.finish_block();
                self.writer.push(event).map_err(|_| OutboxError::EventTooLarge)
            }
            Err(_) => Err(OutboxError::EventTooLarge),
        }
    }

    fn finish_block(&mut self) {
        if !self.writer.is_empty() {
            let payload = self.writer.bytes().to_vec();
            self.blocks.push(Encoded { payload, events: u64::from(self.writer.count()) });
            self.writer.reset();
        }
    }

    pub(super) fn finish(mut self) -> Vec<Encoded> {
        self.finish_block();
        self.blocks
    }
}
