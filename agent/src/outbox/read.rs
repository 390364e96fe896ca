//! The read path: held events and tombstones as the sender asks for them, event bytes read
//! from the segments block by block, damage found on the way quarantined.

use super::block::{HEADER_BYTES, Header};
use super::scan;
use super::segment::{self, BlockIndex, BlockRef};
use super::store::{SegmentStore, StoreFile};
use super::{Outbox, OutboxError};
use driftlog_protocol::wire::{DropReason, Event, EventChainReader};
use driftlog_protocol::{Epoch, Position, Seq, StreamId};
use std::collections::BTreeSet;

/// The block index and an open handle of the last sealed segment read.
pub(super) type ReadCache<F> = Option<(u64, BlockIndex, F)>;

/// How [`Outbox::visit_block`] left a block.
enum BlockVisit {
    /// `visit` asked to stop, or `end` was reached.
    Stopped,
    /// Every event of the block from the start position was visited; `next` follows them.
    Finished { next: Seq },
}

impl<S: SegmentStore> Outbox<S> {
    /// The block index of segment `id` (the active one, or a sealed one read from storage).
    fn index_of(&mut self, id: u64) -> Result<&BlockIndex, OutboxError> {
        if let Some(active) = &self.active
            && self.index.segments().back().is_some_and(|segment| segment.id == id)
        {
            return Ok(&active.index);
        }
        if self.read_cache.as_ref().is_none_or(|(cached, _, _)| *cached != id) {
            let file = self.store.open_segment(id)?;
            let index = segment::index_of(&scan::scan(&file)?);
            self.read_cache = Some((id, index, file));
        }
        Ok(&self.read_cache.as_ref().expect("just filled").1)
    }

    /// Calls `visit` with the held events of `stream` from `from` on, in order, until `end`,
    /// the first sequence number not held, or `visit` returning false.
    ///
    /// A block that no longer reads back is quarantined (see [`Self::quarantine`]) and
    /// reported as [`OutboxError::Corrupt`]; the next call goes on past it.
    pub(super) fn visit_events(
        &mut self,
        stream: StreamId,
        from: Position,
        end: Seq,
        mut visit: impl FnMut(&Event<'_>) -> bool,
    ) -> Result<(), OutboxError> {
        let epoch = from.epoch;
        let Some(held_end) = self.index.held_run_end(stream, epoch, from.seq) else {
            return Ok(());
        };
        let end = end.min(held_end);
        let mut seq = from.seq;
        while seq < end {
            let Some((run_end, id)) = self.index.run_at(stream, epoch, seq) else { break };
            let blocks = self.index_of(id)?;
            let Some(block) = blocks.find(stream, epoch, seq) else {
                // The segment was read again and the block holding `seq` no longer checks
                // out: what of this run it held, up to the next block that does, is lost.
                let lost_end = blocks.next_start(stream, epoch, seq).map_or(run_end, |next| next.min(run_end));
                self.quarantine(id, stream, epoch, seq, lost_end)?;
                return Err(OutboxError::Corrupt { segment: id, offset: 0 });
            };
            let block_bytes = HEADER_BYTES + block.len as usize;
            let file = match (&self.active, &self.read_cache) {
                (Some(active), _) if self.index.segments().back().is_some_and(|s| s.id == id) => &active.file,
                (_, Some((cached, _, file))) if *cached == id => file,
                _ => return Err(OutboxError::Corrupt { segment: id, offset: block.offset }),
            };
            file.read_exact_at(&mut self.read_buf[..block_bytes], block.offset)?;
            match self.visit_block(&block, seq, end, &mut visit) {
                Some(BlockVisit::Stopped) => return Ok(()),
                Some(BlockVisit::Finished { next }) => seq = next,
                None => {
                    self.quarantine(id, stream, epoch, block.start, block.end)?;
                    return Err(OutboxError::Corrupt { segment: id, offset: block.offset });
                }
            }
        }
        Ok(())
    }

    /// Visits the events of `block` (just read into `read_buf`) from `seq` on, below `end`;
    /// `None` when it does not check out or holds fewer events than its header says.
    fn visit_block(
        &self,
        block: &BlockRef,
        mut seq: Seq,
        end: Seq,
        visit: &mut impl FnMut(&Event<'_>) -> bool,
    ) -> Option<BlockVisit> {
        let block_bytes = HEADER_BYTES + block.len as usize;
        let (header_bytes, payload) = self.read_buf[..block_bytes].split_at(HEADER_BYTES);
        let header_bytes: &[u8; HEADER_BYTES] = header_bytes.try_into().expect("header length");
        if !Header::verify(header_bytes, payload) {
            return None;
        }
        for (block_seq, event) in (block.start..block.end).zip(EventChainReader::new(payload)) {
            let event = event.ok()?;
            if block_seq < seq {
                continue;
            }
            if block_seq >= end || !visit(&event) {
                return Some(BlockVisit::Stopped);
            }
            seq = block_seq + 1;
        }
        if seq < block.end.min(end) {
            return None;
        }
        Some(BlockVisit::Finished { next: seq })
    }

    /// The first held event or tombstone of `stream` in `[from, until)`.
    pub(super) fn first_held(
        &self,
        stream: StreamId,
        from: Position,
        until: Position,
    ) -> Option<(Position, Option<(Seq, DropReason)>)> {
        if from >= until {
            return None;
        }
        let event = self.index.first_held(stream, from, until);
        let tombstone = self.tombstones.first_at_or_after(stream, from, until);
        match (event, tombstone) {
            (Some(event), Some((position, end, reason))) if position < event => Some((position, Some((end, reason)))),
            (Some(event), _) => Some((event, None)),
            (None, Some((position, end, reason))) => Some((position, Some((end, reason)))),
            (None, None) => None,
        }
    }

    /// The oldest held event's device times (epoch, monotonic µs, wall µs if stamped), for
    /// the "oldest unacknowledged" figure of `status`.
    pub fn oldest_event(&mut self) -> Result<Option<(Epoch, u64, Option<i64>)>, OutboxError> {
        let mut oldest: Option<(Epoch, u64, Option<i64>)> = None;
        let mut seen = BTreeSet::new();
        for (stream, position) in self.index.firsts() {
            if !seen.insert(stream) {
                continue; // a later epoch of a stream already visited
            }
            self.visit_events(stream, position, position.seq + 1, |event| {
                let candidate = (position.epoch, event.mono.as_micros(), event.wall.map(|w| w.unix_micros));
                if oldest.is_none_or(|current| (candidate.0, candidate.1) < (current.0, current.1)) {
                    oldest = Some(candidate);
                }
                false
            })?;
        }
        Ok(oldest)
    }

    /// Every stream that holds events or tombstones, in any epoch.
    pub fn streams(&self) -> Result<Vec<StreamId>, OutboxError> {
        let streams: BTreeSet<StreamId> =
            self.index.streams().chain(self.tombstones.iter().map(|(key, _)| key.0)).collect();
        Ok(streams.into_iter().collect())
    }
}
