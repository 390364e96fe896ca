//! Segment files: append-only sequences of blocks, named by a counter (`<id>.seg`).
//!
//! Only the newest segment of a process is written; every other one is read-only. A commit
//! never spans two segments, so after a crash only the last segment can end in a torn or
//! uncommitted tail, which [`super::scan`] finds and the outbox truncates.

use super::block::Kind;
use super::scan::Scan;
use driftlog_protocol::{Epoch, Seq, StreamId};
use std::collections::BTreeMap;

/// Blocks per segment at most, which bounds the block index the outbox keeps for a segment
/// it reads (about 40 bytes a block).
pub(super) const MAX_SEGMENT_BLOCKS: u32 = 4096;

/// Where one event block lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BlockRef {
    pub offset: u64,
    pub len: u32,
    pub start: Seq,
    pub end: Seq,
}

/// The event blocks of one segment by `(stream, epoch)`, each list in sequence order.
#[derive(Clone, Debug, Default)]
pub(super) struct BlockIndex {
    by_stream: BTreeMap<(StreamId, Epoch), Vec<BlockRef>>,
}

impl BlockIndex {
    pub(super) fn push(&mut self, stream: StreamId, epoch: Epoch, block: BlockRef) {
        self.by_stream.entry((stream, epoch)).or_default().push(block);
    }

    /// The block holding `seq`.
    pub(super) fn find(&self, stream: StreamId, epoch: Epoch, seq: Seq) -> Option<BlockRef> {
        self.at_or_after(stream, epoch, seq).filter(|block| block.start <= seq)
    }

    /// Where the first block holding `seq` or a later sequence number starts, if any.
    pub(super) fn next_start(&self, stream: StreamId, epoch: Epoch, seq: Seq) -> Option<Seq> {
        self.at_or_after(stream, epoch, seq).map(|block| block.start)
    }

    fn at_or_after(&self, stream: StreamId, epoch: Epoch, seq: Seq) -> Option<BlockRef> {
        let blocks = self.by_stream.get(&(stream, epoch))?;
        let at = blocks.partition_point(|block| block.end <= seq);
        blocks.get(at).copied()
    }
}

/// The block index of a scanned segment.
pub(super) fn index_of(scan: &Scan) -> BlockIndex {
    let mut index = BlockIndex::default();
    for (header, offset) in scan.blocks() {
        if header.kind == Kind::Events {
            let block = BlockRef { offset, len: header.len, start: header.start, end: header.end };
            index.push(header.stream, header.epoch, block);
        }
    }
    index
}
