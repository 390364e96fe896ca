//! The durable outbox: every event the agent accepts, on disk until the collector ACKs it.
//!
//! A directory of append-only segment files plus two small files:
//! - `<id>.seg`: blocks ([`block`]) of up to 64 events of one stream, encoded as an event
//!   chain (the batch form of a data frame: delta times, repeated tags as one byte), and
//!   release records (what the collector acknowledged). One append is one commit: its
//!   blocks, one `pwrite`, one `fdatasync`.
//! - `tombstones`: the ranges dropped on purpose, until acknowledged ([`tombstones`]).
//! - `epoch`: the boot epoch, replaced atomically (write, fsync, rename, fsync the directory).
//!
//! Why not redb (which the collector's log uses): every redb commit rewrites at least about
//! 28 KB of B-tree pages and headers, 37x the event at 20 events per commit (measured). An
//! append-only file writes what the commit holds, rounded up to the pages it touches.
//!
//! Opening the outbox starts a new boot epoch: the counter is incremented and made durable
//! before any event of the new epoch exists. A fresh directory starts from a random 31-bit
//! high half, so reinstalling an agent (same key, empty disk) never reuses an epoch the
//! collector already has state for.
//!
//! What is held lives in memory only as ranges ([`index`]), plus the block index of the
//! segment being written and of the one being read ([`read`]). Event bytes are read from
//! disk when sent, so memory stays flat however large the backlog.
//!
//! The parts: [`policy`] decides what an append keeps and drops (pure); [`index`] is what
//! is held; [`store`] is the storage as a trait, [`FileStore`] the real directory (the
//! simulator in `driftlog-tests` has a simulated disk); this file carries the decisions out
//! in the order that keeps the guarantees (tombstones durable before segments go, one
//! fdatasync per append, nothing reported accepted before it).
//!
//! Releases (ACKs) are recorded without fsync, in the next commit: losing one in a crash only
//! makes the device resend events the collector recognises as duplicates. Segments are
//! deleted oldest first once nothing in them is held, so a release record is never deleted
//! before the events it releases.
//!
//! Damage (a block that no longer checks out) costs the events it makes unreadable, never a
//! stream nor the blocks after it, and is never mistaken for a torn tail when one flipped
//! bit explains it ([`scan`]): found when the outbox opens ([`damage`]) or when a block is
//! read to be sent,
//! those events get a `storage_failure` tombstone and are counted (`corrupt_events`), so the
//! collector records a gap and everything after it still flows.

mod backlog;
mod block;
mod codes;
mod damage;
mod encode;
mod file_store;
mod index;
mod load;
mod policy;
mod ranges;
mod read;
mod scan;
mod segment;
mod sizing;
mod store;
mod tombstones;

pub use backlog::StreamBacklog;
pub use file_store::FileStore;
pub use policy::DropPolicy;
pub use store::{SegmentStore, StoreFile};

use block::{HEADER_BYTES, Header, Kind, MAX_PAYLOAD_BYTES};
use driftlog_protocol::sender::OwnedEvent;
use driftlog_protocol::wire::{DropReason, Event};
use driftlog_protocol::{Epoch, Seq, StreamId};
use encode::{BlockEncoder, Encoded};
use index::{HeldIndex, Segment};
use segment::{BlockIndex, BlockRef, MAX_SEGMENT_BLOCKS};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use tombstones::Tombstones;

/// Largest stored event record. An event this large cannot fit a datagram anyway.
pub const MAX_RECORD_BYTES: usize = MAX_PAYLOAD_BYTES;
/// Room kept for new tombstones under every policy: four (one append starts at most two of
/// its own, dropped segments mostly extend existing ones; a failed append or damage found
/// needs `storage_failure` ones, `block` included).
const TOMBSTONE_RESERVE_BYTES: u64 = 4 * tombstones::TOMBSTONE_DISK_BYTES;
/// Release records kept in memory before they are written out without waiting for a commit.
const MAX_PENDING_RELEASES: usize = 256;

#[derive(Clone, Debug)]
pub struct OutboxConfig {
    /// Bound on the bytes the outbox occupies on disk (segments and tombstones).
    pub max_bytes: u64,
    pub policy: DropPolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("storage: {0}")]
    Storage(#[from] std::io::Error),
    #[error("event record larger than {MAX_RECORD_BYTES} bytes")]
    EventTooLarge,
    #[error("outbox full and the drop policy is `block`")]
    Full,
    #[error("corrupt outbox block in segment {segment:016x} at offset {offset}")]
    Corrupt { segment: u64, offset: u64 },
    #[error(
        "{0} is an outbox of an earlier driftlog-agent (redb format): drain it with that version, or remove it to discard its events"
    )]
    Legacy(PathBuf),
}

/// Counters for `status` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub appended: u64,
    /// Events dropped by the policy (each covered by a tombstone).
    pub dropped: u64,
    /// Events refused under `block`.
    pub refused: u64,
    pub released: u64,
    pub commits: u64,
    /// Writes that failed (disk full, I/O errors); each made the outbox reload from disk.
    pub storage_errors: u64,
    /// Segments found damaged, when the outbox was opened (every block that still checks
    /// out is kept) or when a block failed its checksum as it was read to be sent.
    pub corrupt_segments: u64,
    /// Events lost to that damage (each covered by a `storage_failure` tombstone). Not
    /// counted: events of damage whose extent is unknown (more than one flipped bit) after a
    /// stream's last readable block.
    pub corrupt_events: u64,
    /// Tombstones forgotten at their bound (the collector sees those ranges as gaps).
    pub tombstones_forgotten: u64,
    /// Events of appends that failed (their inputs were told) whose sequence numbers got a
    /// `storage_failure` tombstone, since whether they reached the disk is unknown.
    pub failed_append_events: u64,
}

/// The result of one [`Outbox::append`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Sequence number of the first accepted event; the accepted events are consecutive.
    pub first_seq: Seq,
    /// Events that got a sequence number (stored, or tombstoned under a drop policy).
    pub accepted: usize,
    /// Events refused under `block` (the tail of the batch).
    pub refused: usize,
}

/// An append that failed: `[start, end)` of `stream` in this epoch.
#[derive(Clone, Copy, Debug)]
struct FailedAppend {
    stream: StreamId,
    start: Seq,
    end: Seq,
    /// A sync failed: its data may be on disk or not.
    unknown: bool,
}

/// The segment this process appends to.
#[derive(Debug)]
struct Active<F> {
    file: F,
    index: BlockIndex,
}

#[derive(Debug)]
pub struct Outbox<S: SegmentStore = FileStore> {
    store: S,
    config: OutboxConfig,
    /// The byte bound in force: the configured one, or lower once the disk filled up.
    max_bytes: u64,
    segment_bytes: u64,
    epoch: Epoch,
    next_seq: std::collections::BTreeMap<StreamId, Seq>,
    /// The append that failed last, until its sequence numbers are settled (see
    /// [`Outbox::settle_failed_append`]).
    failed_append: Option<FailedAppend>,
    /// Segments, runs and what is held; the last segment is [`Outbox::active`]'s when that
    /// is `Some`.
    index: HeldIndex,
    active: Option<Active<S::File>>,
    tombstones: Tombstones<S::File>,
    /// Releases not yet written: `(stream, epoch, start, end)`.
    pending_releases: Vec<(StreamId, Epoch, Seq, Seq)>,
    read_cache: read::ReadCache<S::File>,
    read_buf: Vec<u8>,
    next_segment_id: u64,
    /// Segments found damaged by this process (so each counts once).
    damaged_segments: BTreeSet<u64>,
    stats: OutboxStats,
}

impl Outbox<FileStore> {
    /// Opens (or creates) the outbox directory `dir` and starts a new boot epoch.
    pub fn open(dir: &Path, config: OutboxConfig) -> Result<Outbox<FileStore>, OutboxError> {
        Outbox::open_store(FileStore::open(dir)?, config, file_store::random_u64())
    }
}

impl<S: SegmentStore> Outbox<S> {
    /// Opens the outbox on `store` and starts a new boot epoch. `entropy` picks the first
    /// epoch of an empty store (its high 31 bits).
    pub fn open_store(store: S, config: OutboxConfig, entropy: u64) -> Result<Outbox<S>, OutboxError> {
        let epoch = match store.read_epoch()? {
            Some(previous) => previous + 1,
            None => (entropy >> 33 << 32) | 1,
        };
        store.write_epoch(epoch)?;
        let tombstones = Tombstones::open(store.open_tombstones()?)?;
        let mut outbox = Outbox {
            store,
            max_bytes: config.max_bytes,
            config,
            // Set when a segment is opened (see `sizing`).
            segment_bytes: sizing::MAX_SEGMENT_BYTES,
            epoch,
            next_seq: Default::default(),
            failed_append: None,
            index: HeldIndex::default(),
            active: None,
            tombstones,
            pending_releases: Vec::new(),
            read_cache: None,
            read_buf: vec![0u8; HEADER_BYTES + MAX_PAYLOAD_BYTES],
            next_segment_id: 0,
            damaged_segments: BTreeSet::new(),
            stats: OutboxStats::default(),
        };
        outbox.load()?;
        Ok(outbox)
    }

    /// The byte bound in force (lower than configured after the disk filled up).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The boot epoch this process writes events into.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    pub fn stats(&self) -> OutboxStats {
        OutboxStats { tombstones_forgotten: self.tombstones.forgotten, ..self.stats }
    }

    /// Bytes the outbox occupies on disk (what `max_bytes` bounds). Up to one segment of
    /// acknowledged events stays until the segment is full.
    pub fn held_bytes(&self) -> u64 {
        self.index.segment_bytes() + self.tombstones.disk_bytes()
    }

    /// Events stored and not yet acknowledged.
    pub fn held_events(&self) -> u64 {
        self.index.held_events()
    }

    pub fn next_seq(&self, stream: StreamId) -> Seq {
        self.next_seq.get(&stream).copied().unwrap_or(0)
    }

    /// The protocol's view of one stream, for a [`driftlog_protocol::Sender`].
    pub fn backlog(&mut self, stream: StreamId) -> StreamBacklog<'_, S> {
        StreamBacklog::new(self, stream)
    }

    /// Appends `events` to `stream` in one durable commit and returns the sequence numbers
    /// they got. Nothing is written if any event is too large to store.
    pub fn append(&mut self, stream: StreamId, events: &[Event<'_>]) -> Result<Appended, OutboxError> {
        let mut buf = vec![0u8; MAX_PAYLOAD_BYTES];
        let mut encoder = BlockEncoder::new(&mut buf);
        for event in events {
            encoder.push(event)?;
        }
        let blocks = encoder.finish();
        self.append_blocks(stream, blocks)
    }

    /// [`Self::append`] for events that own their strings (what inputs produce).
    pub fn append_owned(&mut self, stream: StreamId, events: &[OwnedEvent]) -> Result<Appended, OutboxError> {
        let mut buf = vec![0u8; MAX_PAYLOAD_BYTES];
        let mut encoder = BlockEncoder::new(&mut buf);
        for event in events {
            event.with_event(|event| encoder.push(event))?;
        }
        let blocks = encoder.finish();
        self.append_blocks(stream, blocks)
    }

    fn append_blocks(&mut self, stream: StreamId, blocks: Vec<Encoded>) -> Result<Appended, OutboxError> {
        self.settle_failed_append();
        let first_seq = self.next_seq(stream);
        // Decide before writing anything: which old segments go, which blocks are kept.
        let segment_bytes: Vec<u64> = self.index.segments().iter().map(|segment| segment.len).collect();
        let sizes: Vec<policy::BlockSize> = blocks
            .iter()
            .map(|block| policy::BlockSize { bytes: (HEADER_BYTES + block.payload.len()) as u64, events: block.events })
            .collect();
        let budget = policy::Budget {
            policy: self.config.policy,
            max_bytes: self.max_bytes,
            held_bytes: self.held_bytes(),
            tombstone_reserve_bytes: TOMBSTONE_RESERVE_BYTES,
            segment_bytes: &segment_bytes,
            release_bytes: (self.pending_releases.len() * HEADER_BYTES) as u64,
        };
        let plan = policy::plan(&budget, &sizes, |plan| {
            self.tombstones.bytes_to_add(&self.planned_drops(stream, first_seq, plan))
        });
        let assigned = plan.assigned();
        // Until it completes; if it fails, what of it reached the disk decides which of its
        // sequence numbers may be given again (see `settle_failed_append`).
        self.failed_append = Some(FailedAppend { stream, start: first_seq, end: first_seq + assigned, unknown: false });

        // 1. Tombstones for everything dropped, durable before any segment goes.
        let mut dropped = 0u64;
        for (drop_stream, epoch, start, end, reason) in self.planned_drops(stream, first_seq, &plan) {
            self.tombstones.add(drop_stream, epoch, start, end, reason);
            // The append's own dropped events are not held: this frees only the doomed ones.
            dropped += self.index.unhold(drop_stream, epoch, start, end);
        }
        dropped += plan.dropped_before + plan.dropped_after;
        // Counted before the save: if it fails part way, these tombstones may be on disk.
        self.stats.dropped += dropped;
        if plan.doomed_segments > 0 || plan.dropped_before + plan.dropped_after > 0 {
            self.tombstones.save(true).inspect_err(|_| self.mark_failed_append_unknown())?;
        }
        for _ in 0..plan.doomed_segments {
            self.remove_oldest_segment()?;
        }

        // 2. The kept blocks (after the pending release records), one write, one fdatasync.
        let kept_blocks = &blocks[plan.keep.clone()];
        if !kept_blocks.is_empty() {
            self.write_commit(stream, first_seq + plan.dropped_before, kept_blocks, true)?;
        }
        self.next_seq.insert(stream, first_seq + assigned);
        self.failed_append = None;
        self.stats.commits += 1;
        self.stats.appended += assigned;
        self.stats.refused += plan.refused;
        Ok(Appended { first_seq, accepted: assigned as usize, refused: plan.refused as usize })
    }

    /// The ranges `plan` drops, each to be covered by a tombstone: what the doomed segments
    /// hold, then the append's own dropped events (`[first_seq, ..)` of `stream`).
    fn planned_drops(&self, stream: StreamId, first_seq: Seq, plan: &policy::Plan) -> Vec<tombstones::Dropped> {
        let mut drops = Vec::new();
        for segment in self.index.segments().iter().take(plan.doomed_segments) {
            for run in &segment.runs {
                for (start, end) in self.index.held_in(run.stream, run.epoch, run.start, run.end) {
                    drops.push((run.stream, run.epoch, start, end, DropReason::BufferFull));
                }
            }
        }
        let (kept_from, dropped_after_from) =
            (first_seq + plan.dropped_before, first_seq + plan.dropped_before + plan.kept);
        drops.push((stream, self.epoch, first_seq, kept_from, DropReason::BufferFull));
        drops.push((
            stream,
            self.epoch,
            dropped_after_from,
            dropped_after_from + plan.dropped_after,
            DropReason::RejectedNew,
        ));
        drops.retain(|&(_, _, start, end, _)| start < end);
        drops
    }

    /// Writes the pending release records and `blocks` (events `first_seq..` of `stream`) as
    /// one commit to the active segment, rolling to a new one when this one is full.
    fn write_commit(
        &mut self,
        stream: StreamId,
        first_seq: Seq,
        blocks: &[Encoded],
        durable: bool,
    ) -> std::io::Result<()> {
        let releases = std::mem::take(&mut self.pending_releases);
        let mut bytes = Vec::new();
        let mut headers = Vec::new();
        for (index, &(release_stream, epoch, start, end)) in releases.iter().enumerate() {
            let commit_end = blocks.is_empty() && index + 1 == releases.len();
            let header = Header { len: 0, kind: Kind::Release, commit_end, stream: release_stream, epoch, start, end };
            bytes.extend_from_slice(&header.encode(&[]));
        }
        let mut seq = first_seq;
        for (index, block) in blocks.iter().enumerate() {
            let header = Header {
                len: block.payload.len() as u32,
                kind: Kind::Events,
                commit_end: index + 1 == blocks.len(),
                stream,
                epoch: self.epoch,
                start: seq,
                end: seq + block.events,
            };
            headers.push((header, bytes.len() as u64));
            bytes.extend_from_slice(&header.encode(&block.payload));
            bytes.extend_from_slice(&block.payload);
            seq += block.events;
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let block_count = (releases.len() + blocks.len()) as u32;
        let roll = self.index.segments().back().is_some_and(|segment| {
            segment.len > 0
                && (segment.len + bytes.len() as u64 > self.segment_bytes
                    || segment.blocks + block_count > MAX_SEGMENT_BLOCKS)
        });
        if self.active.is_none() || roll {
            self.open_new_segment()?;
        }
        let active = self.active.as_mut().expect("a segment was just opened");
        let base = self.index.segments().back().expect("the active segment is the last").len;
        let result = active.file.write_all_at(&bytes, base).and_then(|()| match durable {
            true => active.file.sync_data().inspect_err(|_| {
                // Written but not known durable: on Linux the data may or may not be on
                // disk after a crash, whatever later syncs say.
                if let Some(failed) = &mut self.failed_append {
                    failed.unknown = true;
                }
            }),
            false => Ok(()),
        });
        if let Err(error) = result {
            // The records stay pending; the caller reloads from disk.
            self.pending_releases = releases;
            return Err(error);
        }
        self.index.grow_last(bytes.len() as u64, block_count);
        for (header, offset) in headers {
            let block = BlockRef { offset: base + offset, len: header.len, start: header.start, end: header.end };
            active.index.push(stream, header.epoch, block);
            self.index.store(stream, header.epoch, header.start, header.end);
        }
        Ok(())
    }

    /// Seals the active segment (if any) and creates the next one, durably named, cut at 1/16
    /// of the bound in force (see `sizing`).
    fn open_new_segment(&mut self) -> std::io::Result<()> {
        let available = self.store.available_bytes();
        self.segment_bytes = sizing::segment_target(self.max_bytes, self.held_bytes(), available);
        let id = self.next_segment_id;
        let file = self.store.create_segment(id)?;
        self.next_segment_id = id + 1;
        self.index.push_segment(Segment { id, len: 0, blocks: 0, runs: Vec::new() });
        self.active = Some(Active { file, index: BlockIndex::default() });
        Ok(())
    }

    /// Deletes the oldest segment (what it held is released or tombstoned already).
    fn remove_oldest_segment(&mut self) -> Result<(), OutboxError> {
        let segment = self.index.pop_oldest().expect("a segment to remove");
        if self.read_cache.as_ref().is_some_and(|(id, _, _)| *id == segment.id) {
            self.read_cache = None;
        }
        if self.index.segments().is_empty() {
            self.active = None;
        }
        self.store.remove_segment(segment.id)?;
        Ok(())
    }

    /// Deletes the oldest segments while they hold nothing; never the one being written.
    fn delete_released_segments(&mut self) -> Result<(), OutboxError> {
        while !self.index.segments().is_empty() {
            let is_active = self.active.is_some() && self.index.segments().len() == 1;
            if is_active || self.index.holds_any(0) {
                break;
            }
            self.remove_oldest_segment()?;
        }
        Ok(())
    }

    /// Frees `[start, end)` of `stream` in `epoch`: events and fully covered tombstones.
    fn release(&mut self, stream: StreamId, epoch: Epoch, start: Seq, end: Seq) -> Result<(), OutboxError> {
        if start >= end {
            return Ok(());
        }
        let released = self.index.unhold(stream, epoch, start, end);
        let tombstones_changed = self.tombstones.release(stream, epoch, start, end);
        if released == 0 && !tombstones_changed {
            return Ok(());
        }
        self.stats.released += released;
        self.pending_releases.push((stream, epoch, start, end));
        if tombstones_changed {
            self.tombstones.save(false)?;
        }
        if self.pending_releases.len() >= MAX_PENDING_RELEASES {
            self.write_pending_releases(false)?;
        }
        self.delete_released_segments()
    }

    /// Writes the release records not yet written (without fsync unless `durable`).
    ///
    /// Not into the room kept for tombstones (nor past the byte bound): there they wait for
    /// the next append, which makes room for them under the drop policy, and beyond
    /// [`MAX_PENDING_RELEASES`] the oldest are forgotten. A release record only spares the
    /// collector duplicates after a restart; written into that room, they left a full
    /// `drop_newest` outbox none for a new boot's first tombstone.
    pub fn write_pending_releases(&mut self, durable: bool) -> Result<(), OutboxError> {
        if self.pending_releases.is_empty() || self.index.segments().is_empty() {
            // With no segment left there is nothing a release record could still free.
            self.pending_releases.clear();
            return Ok(());
        }
        let bytes = (self.pending_releases.len() * HEADER_BYTES) as u64;
        if self.held_bytes() + bytes + TOMBSTONE_RESERVE_BYTES > self.max_bytes {
            let excess = self.pending_releases.len().saturating_sub(MAX_PENDING_RELEASES);
            self.pending_releases.drain(..excess);
            return Ok(());
        }
        Ok(self.write_commit(0, 0, &[], durable)?)
    }
}

impl<S: SegmentStore> Drop for Outbox<S> {
    /// Best effort: release records not yet written only cost duplicates if lost.
    fn drop(&mut self) {
        if let Err(error) = self.write_pending_releases(true) {
            tracing::debug!(%error, "could not write the last release records");
        }
    }
}
