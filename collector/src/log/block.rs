//! Blocks: the unit the log commits and stores under one key.
//!
//! A block is a postcard [`BlockHead`] followed by records, each prefixed with its length as a
//! varint. The key of a block is the offset of its first record; a record of width `w` takes
//! offsets `o..o+w`, so a reader finds offset `x` in the last block whose key is `<= x`.
//! Storing a group commit as one value costs redb one B-tree entry per commit instead of one
//! per event.

use super::record::{Record, RecordError};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHead {
    /// The collector's wall clock at commit, ms since 1970 (retention by age).
    pub written_unix_ms: u64,
    /// Offsets the block covers.
    pub offsets: u64,
}

/// Accumulates records for the next commit.
#[derive(Debug, Default)]
pub struct BlockBuilder {
    records: Vec<u8>,
    offsets: u64,
    count: u32,
    scratch: Vec<u8>,
}

impl BlockBuilder {
    /// Appends one record of `width` offsets, written by `encode`.
    pub fn push(&mut self, width: u64, encode: impl FnOnce(&mut Vec<u8>)) {
        self.scratch.clear();
        encode(&mut self.scratch);
        let mut length = [0u8; 5];
        // A u32 varint fits in 5 bytes.
        if let Ok(prefix) = postcard::to_slice(&(self.scratch.len() as u32), &mut length) {
            self.records.extend_from_slice(prefix);
        }
        self.records.extend_from_slice(&self.scratch);
        self.offsets += width;
        self.count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn offsets(&self) -> u64 {
        self.offsets
    }

    pub fn bytes(&self) -> usize {
        self.records.len()
    }

    pub fn records(&self) -> u32 {
        self.count
    }

    /// The finished block value, and a fresh builder in its place.
    pub fn finish(&mut self, written_unix_ms: u64) -> Vec<u8> {
        let head = BlockHead { written_unix_ms, offsets: self.offsets };
        let mut value = postcard::to_allocvec(&head).unwrap_or_default();
        value.extend_from_slice(&self.records);
        self.records.clear();
        self.offsets = 0;
        self.count = 0;
        value
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block head is malformed")]
    Head,
    #[error("record length runs past the block")]
    Truncated,
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("records cover {records} offsets, the head says {head}")]
    Width { records: u64, head: u64 },
}

/// Splits a stored block into its head and `(offset, record)` pairs.
pub fn decode_block(first_offset: u64, value: &[u8]) -> Result<(BlockHead, Vec<(u64, Record<'_>)>), BlockError> {
    let (head, mut rest) = postcard::take_from_bytes::<BlockHead>(value).map_err(|_| BlockError::Head)?;
    let mut records = Vec::new();
    let mut offset = first_offset;
    while !rest.is_empty() {
        let (length, after) = postcard::take_from_bytes::<u32>(rest).map_err(|_| BlockError::Truncated)?;
        let length = length as usize;
        if after.len() < length {
            return Err(BlockError::Truncated);
        }
        let record = Record::decode(&after[..length])?;
        let width = record.width();
        records.push((offset, record));
        offset += width;
        rest = &after[length..];
    }
    if offset - first_offset != head.offsets {
        return Err(BlockError::Width { records: offset - first_offset, head: head.offsets });
    }
    Ok((head, records))
}
