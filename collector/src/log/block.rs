//! Blocks: the unit the log commits and stores under one key.
//!
//! A block is a postcard [`BlockHead`] followed by records, each prefixed with its length as a
//! varint. The key of a block is the offset of its first record; a record of width `w` takes
//! offsets `o..o+w`, so a reader finds offset `x` in the last block whose key is `<= x`.
//! Storing a group commit as one value costs redb one B-tree entry per commit instead of one
//! per event.

use super::record::{EventsHead, Record, RecordError, Slots, encode_events, encode_events_next};
use super::varint;
use crate::id_hash::IdMap;
use driftlog_eventtime::clock::ClockFix;
use driftlog_protocol::{DeviceId, Epoch, StreamId};
use serde::{Deserialize, Serialize};

/// A [`BlockHead`] encoded: two varints of at most 10 bytes.
const BLOCK_HEAD_MAX_BYTES: usize = 20;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHead {
    /// The collector's wall clock at commit, ms since 1970 (retention by age).
    pub written_unix_ms: u64,
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

/// Accumulates records for the next commit.
#[derive(Debug, Default)]
pub struct BlockBuilder {
    records: Vec<u8>,
    offsets: u64,
    count: u32,
    scratch: Vec<u8>,
    /// The events slots this block has opened (bounded by its records).
    slots: IdMap<SlotKey, Slot>,
}

impl BlockBuilder {
    /// Appends one record of `width` offsets, written by `encode`.
    pub fn push(&mut self, width: u64, encode: impl FnOnce(&mut Vec<u8>)) {
        self.scratch.clear();
        encode(&mut self.scratch);
        self.append_scratch(width);
    }

    /// Appends a run of events (`head.clock` is ignored). The first run of its slot in this
    /// block stores the whole head with the clock fix `clock()` gives; later runs store the
    /// differences and share that fix, so `clock` is called once per slot and block.
    pub fn push_events(&mut self, head: EventsHead, clock: impl FnOnce() -> Option<ClockFix>, events: &[u8]) {
        self.scratch.clear();
        let key = (head.device, head.stream, head.epoch, head.sent_epoch);
        match self.slots.get_mut(&key) {
            Some(slot) => {
                let head = EventsHead { clock: slot.head.clock, ..head };
                encode_events_next(slot.index, &slot.head, &head, events, &mut self.scratch);
                slot.head = head;
            }
            None => {
                let head = EventsHead { clock: clock(), ..head };
                encode_events(&head, events, &mut self.scratch);
                let index = self.slots.len() as u32;
                self.slots.insert(key, Slot { index, head });
            }
        }
        self.append_scratch(u64::from(head.count));
    }

    fn append_scratch(&mut self, width: u64) {
        varint::put(&mut self.records, self.scratch.len() as u64);
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
        self.finish_into(written_unix_ms, Vec::new())
    }

    /// [`Self::finish`] into `buffer` (cleared first), whose capacity is reused.
    pub fn finish_into(&mut self, written_unix_ms: u64, buffer: Vec<u8>) -> Vec<u8> {
        let head = BlockHead { written_unix_ms, offsets: self.offsets };
        let mut value = buffer;
        value.clear();
        value.reserve(BLOCK_HEAD_MAX_BYTES + self.records.len());
        // Two varints of at most 10 bytes each: the head cannot fail to encode.
        let mut encoded = [0u8; BLOCK_HEAD_MAX_BYTES];
        value.extend_from_slice(postcard::to_slice(&head, &mut encoded).map(|head| &head[..]).unwrap_or_default());
        value.extend_from_slice(&self.records);
        self.records.clear();
        self.offsets = 0;
        self.count = 0;
        self.slots.clear();
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
        let value = builder.finish(42);
        let (block_head, records) = decode_block(100, &value).unwrap();
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
