//! Blocks: the unit the log commits and stores under one key.
//!
//! A block is a postcard [`BlockHead`] followed by records, each prefixed with its length as a
//! varint. The key of a block is the offset of its first record; a record of width `w` takes
//! offsets `o..o+w`, so a reader finds offset `x` in the last block whose key is `<= x`.
//! A group commit stores one block or a few (each bounded by `log.max_block_bytes`): redb
//! pays one B-tree entry per block instead of one per event.

use super::record::{EventsHead, Record, RecordError, Slots, encode_events, encode_events_next};
use super::varint;
use crate::id_hash::IdMap;
use driftlog_eventtime::clock::ClockFix;
use driftlog_protocol::{DeviceId, Epoch, StreamId};
use serde::{Deserialize, Serialize};

/// A [`BlockHead`] encoded: two varints of at most 10 bytes.
const BLOCK_HEAD_MAX_BYTES: usize = 20;

/// What redb adds to a block in the leaf page that holds it (page head 4 bytes, value length
/// 4, key 8), rounded up. redb gives each such leaf a power-of-two number of pages, so a
/// block of `max_block_bytes` (a power of two) minus this fills its pages exactly, where one
/// a few bytes larger would take twice the disk.
pub const STORE_OVERHEAD_BYTES: usize = 64;

/// See [`BlockBuilder::new`].
pub const DEFAULT_MAX_BLOCK_BYTES: usize = 128 << 10;

/// Emptied buffers a builder keeps for its next blocks.
const POOL_BUFFERS: usize = 64;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHead {
    /// The collector's wall clock at commit, ms since 1970 (retention by age).
    pub written_unix_ms: u64,
    /// Offsets the block covers.
    pub offsets: u64,
}

/// A finished block: what the log stores under the block's first offset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedBlock {
    /// The head and the records.
    pub value: Vec<u8>,
    /// Offsets the block covers.
    pub offsets: u64,
}

/// What an events slot is: runs of one slot share everything but sequence numbers and times.
type SlotKey = (DeviceId, StreamId, Epoch, Epoch);

#[derive(Debug)]
struct Slot {
    index: u32,
    /// The slot's latest run, which the next one is encoded against.
    head: EventsHead,
}

/// Accumulates records for the next commit, as a run of blocks: a block is cut before a
/// record would take it past the size bound, so one commit may store several.
#[derive(Debug)]
pub struct BlockBuilder {
    /// The records of the open block.
    records: Vec<u8>,
    offsets: u64,
    count: u32,
    scratch: Vec<u8>,
    /// The events slots the open block has opened (bounded by its records).
    slots: IdMap<SlotKey, Slot>,
    /// Blocks cut since the last finish: their records and offsets.
    cut: Vec<(Vec<u8>, u64)>,
    /// The most record bytes one block holds.
    records_limit: usize,
    /// Emptied buffers for the next blocks (at most [`POOL_BUFFERS`]).
    pool: Vec<Vec<u8>>,
}

impl Default for BlockBuilder {
    fn default() -> Self {
        BlockBuilder::new(DEFAULT_MAX_BLOCK_BYTES)
    }
}

impl BlockBuilder {
    /// A builder whose blocks, stored, take at most `max_block_bytes` with redb's leaf
    /// overhead (see [`STORE_OVERHEAD_BYTES`]); a single record larger than that gets a block
    /// of its own.
    pub fn new(max_block_bytes: usize) -> BlockBuilder {
        BlockBuilder {
            records: Vec::new(),
            offsets: 0,
            count: 0,
            scratch: Vec::new(),
            slots: IdMap::default(),
            cut: Vec::new(),
            records_limit: max_block_bytes.saturating_sub(STORE_OVERHEAD_BYTES + BLOCK_HEAD_MAX_BYTES).max(1),
            pool: Vec::new(),
        }
    }

    /// Appends one record of `width` offsets, written by `encode`.
    pub fn push(&mut self, width: u64, encode: impl FnOnce(&mut Vec<u8>)) {
        self.scratch.clear();
        encode(&mut self.scratch);
        if !self.fits(self.scratch.len()) {
            self.cut_block();
        }
        self.append_scratch(width);
    }

    /// Appends a run of events (`head.clock` is ignored). The first run of its slot in a
    /// block stores the whole head with the clock fix `clock()` gives; later runs store the
    /// differences and share that fix, so `clock` is called once per slot and block.
    pub fn push_events(&mut self, head: EventsHead, clock: impl FnOnce() -> Option<ClockFix>, events: &[u8]) {
        self.scratch.clear();
        let key = (head.device, head.stream, head.epoch, head.sent_epoch);
        if let Some(slot) = self.slots.get_mut(&key) {
            let head = EventsHead { clock: slot.head.clock, ..head };
            encode_events_next(slot.index, &slot.head, &head, events, &mut self.scratch);
            if self.records.len() + varint::MAX_BYTES + self.scratch.len() <= self.records_limit {
                slot.head = head;
                self.append_scratch(u64::from(head.count));
                return;
            }
            // The run does not fit: it opens its slot again in the next block.
            self.scratch.clear();
            self.cut_block();
        }
        let head = EventsHead { clock: clock(), ..head };
        encode_events(&head, events, &mut self.scratch);
        if !self.fits(self.scratch.len()) {
            self.cut_block();
        }
        let index = self.slots.len() as u32;
        self.slots.insert(key, Slot { index, head });
        self.append_scratch(u64::from(head.count));
    }

    /// Whether a record of `len` bytes fits the open block (an empty block takes any).
    fn fits(&self, len: usize) -> bool {
        self.count == 0 || self.records.len() + varint::MAX_BYTES + len <= self.records_limit
    }

    fn cut_block(&mut self) {
        if self.count == 0 {
            return;
        }
        let fresh = self.pool.pop().unwrap_or_default();
        let records = std::mem::replace(&mut self.records, fresh);
        self.cut.push((records, self.offsets));
        self.offsets = 0;
        self.count = 0;
        self.slots.clear();
    }

    fn append_scratch(&mut self, width: u64) {
        varint::put(&mut self.records, self.scratch.len() as u64);
        self.records.extend_from_slice(&self.scratch);
        self.offsets += width;
        self.count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.cut.is_empty()
    }

    /// Offsets of every block since the last finish.
    pub fn offsets(&self) -> u64 {
        self.cut.iter().map(|(_, offsets)| offsets).sum::<u64>() + self.offsets
    }

    /// Record bytes of every block since the last finish.
    pub fn bytes(&self) -> usize {
        self.cut.iter().map(|(records, _)| records.len()).sum::<usize>() + self.records.len()
    }

    /// The finished blocks in offset order (none if empty), and a fresh builder in place.
    pub fn finish(&mut self, written_unix_ms: u64) -> Vec<EncodedBlock> {
        self.finish_into(written_unix_ms, Vec::new())
    }

    /// [`Self::finish`], encoding into the buffers of `spares` (blocks of an earlier commit,
    /// handed back by the committer), whose capacity is reused: a fresh allocation per block
    /// costs a page fault and a zeroed page every 4 KiB.
    pub fn finish_into(&mut self, written_unix_ms: u64, mut spares: Vec<EncodedBlock>) -> Vec<EncodedBlock> {
        self.cut_block();
        let mut blocks = Vec::with_capacity(self.cut.len());
        let cut = std::mem::take(&mut self.cut);
        for (records, offsets) in cut {
            let head = BlockHead { written_unix_ms, offsets };
            let mut value = spares.pop().map(|spare| spare.value).unwrap_or_default();
            value.clear();
            value.reserve(BLOCK_HEAD_MAX_BYTES + records.len());
            // Two varints of at most 10 bytes each: the head cannot fail to encode.
            let mut encoded = [0u8; BLOCK_HEAD_MAX_BYTES];
            value.extend_from_slice(postcard::to_slice(&head, &mut encoded).map(|head| &head[..]).unwrap_or_default());
            value.extend_from_slice(&records);
            blocks.push(EncodedBlock { value, offsets });
            self.recycle(records);
        }
        for spare in spares {
            self.recycle(spare.value);
        }
        blocks
    }

    fn recycle(&mut self, mut buffer: Vec<u8>) {
        if self.pool.len() < POOL_BUFFERS {
            buffer.clear();
            self.pool.push(buffer);
        }
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
    let (head, records) = block_records(first_offset, value)?;
    Ok((head, records.collect::<Result<_, _>>()?))
}

/// The head of a stored block and an iterator over its `(offset, record)` pairs, for readers
/// that take one record at a time (a block of single events holds tens of thousands). A
/// malformed record, or records that do not cover the offsets the head names, end the
/// iteration with an error after the records before it.
pub fn block_records(first_offset: u64, value: &[u8]) -> Result<(BlockHead, BlockRecords<'_>), BlockError> {
    let (head, rest) = postcard::take_from_bytes::<BlockHead>(value).map_err(|_| BlockError::Head)?;
    let records = BlockRecords {
        rest,
        slots: Slots::new(),
        first_offset,
        offset: first_offset,
        head_offsets: head.offsets,
        done: false,
    };
    Ok((head, records))
}

#[derive(Debug)]
pub struct BlockRecords<'a> {
    rest: &'a [u8],
    slots: Slots,
    first_offset: u64,
    /// The next record's offset.
    offset: u64,
    /// How many offsets the head says the records cover.
    head_offsets: u64,
    done: bool,
}

impl<'a> BlockRecords<'a> {
    fn take(&mut self) -> Result<Option<(u64, Record<'a>)>, BlockError> {
        if self.rest.is_empty() {
            let records = self.offset - self.first_offset;
            if records != self.head_offsets {
                return Err(BlockError::Width { records, head: self.head_offsets });
            }
            return Ok(None);
        }
        let length = varint::take(&mut self.rest).ok_or(BlockError::Truncated)?;
        let length = usize::try_from(length).map_err(|_| BlockError::Truncated)?;
        if self.rest.len() < length {
            return Err(BlockError::Truncated);
        }
        let (bytes, rest) = self.rest.split_at(length);
        let record = Record::decode(bytes, &mut self.slots)?;
        let offset = self.offset;
        // Widths come from the stored bytes: saturating, so a corrupt one is a width error.
        self.offset = self.offset.saturating_add(record.width());
        self.rest = rest;
        Ok(Some((offset, record)))
    }
}

impl<'a> Iterator for BlockRecords<'a> {
    type Item = Result<(u64, Record<'a>), BlockError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.take().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftlog_eventtime::clock::Method;

    fn fix(offset_us: i64) -> ClockFix {
        ClockFix {
            reference_device_us: 5_000_000,
            offset_us,
            drift_ppb: -20_000,
            uncertainty_us: 700,
            drift_uncertainty_ppb: 90,
            method: Method::Drift,
        }
    }

    fn head(device: u64, sent_epoch: u64, first_seq: u64, count: u32, sent_at_us: u64, t3: i64) -> EventsHead {
        EventsHead {
            device,
            stream: 1,
            epoch: 0x3a5c_91d0_7e11_2b44,
            first_seq,
            count,
            sent_at_us,
            sent_epoch,
            received_unix_us: t3,
            clock: None,
        }
    }

    const EPOCH: u64 = 0x3a5c_91d0_7e11_2b44;

    #[test]
    fn runs_of_a_slot_decode_to_full_heads_sharing_the_first_runs_clock_fix() {
        let t3 = 1_795_000_000_000_000;
        let runs = [
            (head(7, EPOCH, 10, 1, 9_000_000, t3), b"a".as_slice()),
            (head(8, EPOCH, 0, 3, 4_000, t3 + 5), b"bbb"),
            (head(7, EPOCH, 11, 1, 9_000_640, t3 + 700), b"c"),
            // Out of order within the slot: a retransmitted older run, an earlier t3.
            (head(7, EPOCH, 2, 4, 8_000_000, t3 - 20), b"dddd"),
            // The same device replaying an older epoch's backlog: its own slot.
            (head(7, 99, 12, 1, 9_100_000, t3 + 900), b"e"),
            (head(7, EPOCH, u64::MAX - 1, 1, 0, i64::MIN), b"f"),
        ];
        let mut builder = BlockBuilder::default();
        let mut calls = 0;
        for (index, (run, events)) in runs.iter().enumerate() {
            builder.push_events(
                *run,
                || {
                    calls += 1;
                    Some(fix(index as i64))
                },
                events,
            );
        }
        assert_eq!(calls, 3, "one clock fix per slot");
        assert_eq!(builder.offsets(), 11);
        let blocks = builder.finish(42);
        assert_eq!(blocks.len(), 1);
        let (block_head, records) = decode_block(100, &blocks[0].value).unwrap();
        assert_eq!(block_head, BlockHead { written_unix_ms: 42, offsets: 11 });
        let slot_fix = |run: &EventsHead| match (run.device, run.sent_epoch) {
            (7, 99) => Some(fix(4)),
            (7, _) => Some(fix(0)),
            _ => Some(fix(1)),
        };
        let mut offset = 100;
        for ((run, events), (at, record)) in runs.iter().zip(&records) {
            assert_eq!(*at, offset);
            let Record::Events { head, events: stored } = record else { panic!("not events: {record:?}") };
            assert_eq!(*head, EventsHead { clock: slot_fix(run), ..*run });
            assert_eq!(stored, events);
            offset += u64::from(run.count);
        }
        assert!(builder.is_empty() && builder.bytes() == 0);
    }

    #[test]
    fn a_commit_is_cut_into_blocks_that_fit_the_bound_and_decode_on_their_own() {
        const MAX: usize = 4_096;
        let mut builder = BlockBuilder::new(MAX);
        let t3 = 1_795_000_000_000_000;
        let mut clock_calls = 0;
        let mut pushed = Vec::new();
        for seq in 0..400u64 {
            let run = head(7 + seq % 3, EPOCH, seq, 1, 9_000_000 + seq * 20_000, t3 + seq as i64 * 20_000);
            let events = vec![seq as u8; 30 + (seq % 7) as usize];
            builder.push_events(
                run,
                || {
                    clock_calls += 1;
                    Some(fix(1))
                },
                &events,
            );
            pushed.push((run, events));
        }
        // A record larger than a block takes one of its own.
        let huge = vec![9u8; MAX * 2];
        builder.push(2, |out| out.extend_from_slice(&huge));
        assert_eq!(builder.offsets(), 402);
        let blocks = builder.finish(42);
        assert!(blocks.len() > 5, "{} blocks", blocks.len());
        // Each slot is opened once per block: the clock fix is asked again after every cut.
        assert!(clock_calls >= 3 * (blocks.len() - 1), "{clock_calls} clock fixes for {} blocks", blocks.len());
        let mut offset = 100;
        let mut decoded = Vec::new();
        for block in &blocks[..blocks.len() - 1] {
            assert!(block.value.len() + STORE_OVERHEAD_BYTES <= MAX, "a {} byte block", block.value.len());
            let (block_head, records) = decode_block(offset, &block.value).unwrap();
            assert_eq!(block_head.offsets, block.offsets);
            offset += block.offsets;
            decoded.extend(records.into_iter().map(|(at, record)| match record {
                Record::Events { head, events } => (at, head, events.to_vec()),
                other => panic!("not events: {other:?}"),
            }));
        }
        for (expected_offset, ((run, events), (at, head, stored))) in (100..).zip(pushed.iter().zip(&decoded)) {
            assert_eq!(*at, expected_offset);
            assert_eq!(*head, EventsHead { clock: Some(fix(1)), ..*run });
            assert_eq!(stored, events);
        }
        assert_eq!(decoded.len(), pushed.len());
        let last = blocks.last().unwrap();
        assert!(last.value.len() > MAX);
        assert_eq!((last.offsets, offset), (2, 500));
        assert!(builder.is_empty() && builder.bytes() == 0 && builder.offsets() == 0);
    }

    #[test]
    fn a_continued_single_event_run_costs_about_ten_bytes_over_its_event() {
        let mut builder = BlockBuilder::default();
        let t3 = 1_795_000_000_000_000;
        builder.push_events(head(7, EPOCH, 0, 1, 9_000_000, t3), || Some(fix(1)), &[0; 40]);
        let first = builder.bytes();
        for seq in 1..101 {
            let run = head(7, EPOCH, seq, 1, 9_000_000 + seq * 20_000, t3 + seq as i64 * 20_000);
            builder.push_events(run, || unreachable!("the slot is open"), &[0; 40]);
        }
        let per_run = (builder.bytes() - first) as f64 / 100.0;
        // Length, kind, slot, sequence gap, count: a byte each; 20 ms of t2 and t3: 3 bytes each.
        assert!(per_run <= 40.0 + 11.0, "{per_run} bytes per continued run");
        assert!(first >= 40 + 30, "the first run holds the whole head ({first} bytes)");
    }

    #[test]
    fn a_run_referring_to_an_unopened_slot_is_corrupt_not_a_panic() {
        let mut value = postcard::to_allocvec(&BlockHead { written_unix_ms: 1, offsets: 1 }).unwrap();
        let mut record = Vec::new();
        encode_events_next(3, &head(1, 1, 0, 1, 0, 0), &head(1, 1, 1, 1, 0, 0), b"x", &mut record);
        varint::put(&mut value, record.len() as u64);
        value.extend_from_slice(&record);
        assert_eq!(decode_block(0, &value).unwrap_err(), BlockError::Record(RecordError::Slot(3)));
        // Truncated heads are refused too, at every cut.
        for cut in 1..record.len() - 1 {
            let mut value = postcard::to_allocvec(&BlockHead { written_unix_ms: 1, offsets: 1 }).unwrap();
            value.push(cut as u8);
            value.extend_from_slice(&record[..cut]);
            assert!(decode_block(0, &value).is_err(), "cut at {cut}");
        }
    }
}
