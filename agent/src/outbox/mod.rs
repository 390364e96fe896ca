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
//! What is held lives in memory only as ranges: per `(stream, epoch)` the sequence numbers
//! still held, per segment the runs of sequence numbers it stores, and the block index of the
//! segment being written plus the one being read. Event bytes are read from disk when sent,
//! so memory stays flat however large the backlog.
//!
//! Releases (ACKs) are recorded without fsync, in the next commit: losing one in a crash only
//! makes the device resend events the collector recognises as duplicates. Segments are
//! deleted oldest first once nothing in them is held, so a release record is never deleted
//! before the events it releases.
//!
//! Damage (a block that no longer checks out) costs the events it makes unreadable, never a
//! stream: found when the outbox opens ([`damage`]) or when a block is read to be sent,
//! those events get a `storage_failure` tombstone and are counted (`corrupt_events`), so the
//! collector records a gap and everything after it still flows.

mod backlog;
mod block;
mod codes;
mod damage;
mod ranges;
mod segment;
mod sizing;
mod tombstones;

pub use backlog::StreamBacklog;

use block::{HEADER_BYTES, Header, Kind, MAX_BLOCK_EVENTS, MAX_PAYLOAD_BYTES};
use driftlog_protocol::sender::OwnedEvent;
use driftlog_protocol::wire::{DropReason, Event, EventChainReader, EventChainWriter, PushError};
use driftlog_protocol::{Epoch, Position, Seq, StreamId};
use ranges::SeqSet;
use segment::{BlockIndex, BlockRef, MAX_SEGMENT_BLOCKS};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use tombstones::Tombstones;

/// Largest stored event record. An event this large cannot fit a datagram anyway.
pub const MAX_RECORD_BYTES: usize = MAX_PAYLOAD_BYTES;
/// Room kept for new tombstones under the drop policies: four (one append starts at most
/// two of its own; dropped segments mostly extend existing ones).
const TOMBSTONE_RESERVE_BYTES: u64 = 4 * tombstones::TOMBSTONE_DISK_BYTES;
/// Release records kept in memory before they are written out without waiting for a commit.
const MAX_PENDING_RELEASES: usize = 256;

/// What happens when an append would exceed `max_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropPolicy {
    /// Drop the oldest held events (a whole segment at a time, leaving tombstones) to make
    /// room: fresh data wins.
    DropOldest,
    /// Keep the held events; the new events get their sequence numbers and a tombstone.
    DropNewest,
    /// Refuse the new events: the input sees the error and applies back-pressure.
    Block,
}

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
    /// Segments found damaged, when the outbox was opened (their readable prefix is kept) or
    /// when a block failed its checksum as it was read to be sent.
    pub corrupt_segments: u64,
    /// Events lost to that damage (each covered by a `storage_failure` tombstone). Not
    /// counted: events after the damage of a stream that has none in a later segment.
    pub corrupt_events: u64,
    /// Tombstones forgotten at their bound (the collector sees those ranges as gaps).
    pub tombstones_forgotten: u64,
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

/// How [`Outbox::visit_block`] left a block.
enum BlockVisit {
    /// `visit` asked to stop, or `end` was reached.
    Stopped,
    /// Every event of the block from the start position was visited; `next` follows them.
    Finished { next: Seq },
}

/// A run of consecutive sequence numbers one segment stores for one stream and epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    stream: StreamId,
    epoch: Epoch,
    start: Seq,
    end: Seq,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    /// Bytes of complete commits.
    len: u64,
    blocks: u32,
    runs: Vec<Run>,
}

/// The segment this process appends to.
#[derive(Debug)]
struct Active {
    file: File,
    index: BlockIndex,
}

/// One encoded block of an append, before it is written.
struct Encoded {
    payload: Vec<u8>,
    events: u64,
}

#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    config: OutboxConfig,
    /// The byte bound in force: the configured one, or lower once the disk filled up.
    max_bytes: u64,
    segment_bytes: u64,
    epoch: Epoch,
    next_seq: BTreeMap<StreamId, Seq>,
    /// Oldest first; the last one is [`Outbox::active`]'s when that is `Some`.
    segments: VecDeque<Segment>,
    active: Option<Active>,
    /// `(stream, epoch, run start)` → `(run end, segment id)`, over every segment.
    runs: damage::Runs,
    /// Sequence numbers held (stored, not released, not dropped) per `(stream, epoch)`.
    live: BTreeMap<(StreamId, Epoch), SeqSet>,
    tombstones: Tombstones,
    /// Releases not yet written: `(stream, epoch, start, end)`.
    pending_releases: Vec<(StreamId, Epoch, Seq, Seq)>,
    /// The block index and an open handle of the last sealed segment read.
    read_cache: Option<(u64, BlockIndex, File)>,
    read_buf: Vec<u8>,
    segment_disk_bytes: u64,
    next_segment_id: u64,
    held_events: u64,
    /// Segments found damaged by this process (so each counts once).
    damaged_segments: BTreeSet<u64>,
    stats: OutboxStats,
}

impl Outbox {
    /// Opens (or creates) the outbox directory `dir` and starts a new boot epoch.
    pub fn open(dir: &Path, config: OutboxConfig) -> Result<Outbox, OutboxError> {
        let legacy = dir.with_extension("redb");
        if legacy.exists() {
            return Err(OutboxError::Legacy(legacy));
        }
        std::fs::create_dir_all(dir)?;
        let epoch = match read_epoch(dir)? {
            Some(previous) => previous + 1,
            None => (random_u64() >> 33 << 32) | 1,
        };
        write_epoch(dir, epoch)?;
        let mut outbox = Outbox {
            dir: dir.to_path_buf(),
            max_bytes: config.max_bytes,
            config,
            // Set when a segment is opened (see `sizing`).
            segment_bytes: sizing::MAX_SEGMENT_BYTES,
            epoch,
            next_seq: BTreeMap::new(),
            segments: VecDeque::new(),
            active: None,
            runs: BTreeMap::new(),
            live: BTreeMap::new(),
            tombstones: Tombstones::open(&dir.join("tombstones"))?,
            pending_releases: Vec::new(),
            read_cache: None,
            read_buf: vec![0u8; HEADER_BYTES + MAX_PAYLOAD_BYTES],
            segment_disk_bytes: 0,
            next_segment_id: 0,
            held_events: 0,
            damaged_segments: BTreeSet::new(),
            stats: OutboxStats::default(),
        };
        outbox.load()?;
        Ok(outbox)
    }

    /// Rebuilds the in-memory state from the segment files (truncating an uncommitted tail
    /// of the last one) and their release records, against the tombstones already loaded.
    fn load(&mut self) -> Result<(), OutboxError> {
        self.segments.clear();
        self.active = None;
        self.runs.clear();
        self.live.clear();
        self.read_cache = None;
        self.pending_releases.clear();
        self.segment_disk_bytes = 0;
        let ids = segment::list(&self.dir)?;
        let mut tombstones_changed = false;
        let mut damage = damage::DamageTracker::default();
        for (index, &id) in ids.iter().enumerate() {
            let path = segment::path(&self.dir, id);
            let scan = segment::scan(&path)?;
            let mut len = scan.file_len;
            let mut damaged = false;
            if scan.committed_len < scan.file_len {
                if index + 1 == ids.len() {
                    // An append that did not finish: it was never reported accepted.
                    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
                    file.set_len(scan.committed_len)?;
                    file.sync_all()?;
                    len = scan.committed_len;
                } else {
                    damaged = true;
                    self.note_damaged(id);
                    tracing::error!(
                        segment = %path.display(),
                        readable_bytes = scan.committed_len,
                        file_bytes = scan.file_len,
                        "outbox segment damaged; keeping its readable part"
                    );
                }
            }
            let mut segment = Segment { id, len, blocks: scan.blocks.len() as u32, runs: Vec::new() };
            for (header, _) in &scan.blocks {
                match header.kind {
                    Kind::Events => {
                        self.add_run(&mut segment, header.stream, header.epoch, header.start, header.end);
                        self.live.entry((header.stream, header.epoch)).or_default().insert(header.start, header.end);
                    }
                    Kind::Release => {
                        damage.release(header.stream, header.epoch, header.start, header.end);
                        self.remove_live(header.stream, header.epoch, header.start, header.end);
                        tombstones_changed |=
                            self.tombstones.release(header.stream, header.epoch, header.start, header.end);
                    }
                }
            }
            if damaged {
                damage.damaged(id);
            }
            self.segment_disk_bytes += len;
            self.segments.push_back(segment);
            self.next_segment_id = id + 1;
        }
        for (stream, epoch, start, end) in damage.lost(&self.runs) {
            tombstones_changed |= self.tombstone_unreadable(stream, epoch, start, end) > 0;
        }
        // A crash between saving tombstones and deleting the segments they cover.
        let dropped: Vec<(StreamId, Epoch, Seq, Seq)> =
            self.tombstones.iter().map(|(&(stream, epoch, start), &(end, _))| (stream, epoch, start, end)).collect();
        for (stream, epoch, start, end) in dropped {
            self.remove_live(stream, epoch, start, end);
        }
        if tombstones_changed {
            self.tombstones.save(true)?;
        }
        self.held_events = self.live.values().map(SeqSet::len).sum();
        self.delete_released_segments()?;
        Ok(())
    }

    /// Recovers from a failed write (typically a full disk): cuts the segment being written
    /// back to its last commit, reloads everything from disk, and lowers the byte bound to
    /// what is held, so the drop policy makes room from now on (one oldest segment, 1/16 of
    /// the bound, per append that needs it) instead of the disk refusing the write.
    pub fn recover_from_storage_error(&mut self) -> Result<(), OutboxError> {
        self.stats.storage_errors += 1;
        if let (Some(active), Some(segment)) = (&self.active, self.segments.back()) {
            active.file.set_len(segment.len)?;
        }
        let forgotten = self.tombstones.forgotten;
        self.tombstones = Tombstones::open(&self.dir.join("tombstones"))?;
        self.tombstones.forgotten = forgotten;
        self.load()?;
        // The next commit opens a new segment (`load` closed the active one), cut to the
        // lowered bound.
        self.max_bytes = sizing::bound_after_storage_error(self.max_bytes, self.held_bytes());
        Ok(())
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
        self.segment_disk_bytes + self.tombstones.disk_bytes()
    }

    /// Events stored and not yet acknowledged.
    pub fn held_events(&self) -> u64 {
        self.held_events
    }

    pub fn next_seq(&self, stream: StreamId) -> Seq {
        self.next_seq.get(&stream).copied().unwrap_or(0)
    }

    /// The protocol's view of one stream, for a [`driftlog_protocol::Sender`].
    pub fn backlog(&mut self, stream: StreamId) -> StreamBacklog<'_> {
        StreamBacklog::new(self, stream)
    }

    /// Appends `events` to `stream` in one durable commit and returns the sequence numbers
    /// they got. Nothing is written if any event is too large to store.
    pub fn append(&mut self, stream: StreamId, events: &[Event<'_>]) -> Result<Appended, OutboxError> {
        let mut buf = vec![0u8; MAX_PAYLOAD_BYTES];
        let mut encoder = BlockEncoder { writer: EventChainWriter::new(&mut buf), blocks: Vec::new() };
        for event in events {
            encoder.push(event)?;
        }
        let blocks = encoder.finish();
        self.append_blocks(stream, blocks)
    }

    /// [`Self::append`] for events that own their strings (what inputs produce).
    pub fn append_owned(&mut self, stream: StreamId, events: &[OwnedEvent]) -> Result<Appended, OutboxError> {
        let mut buf = vec![0u8; MAX_PAYLOAD_BYTES];
        let mut encoder = BlockEncoder { writer: EventChainWriter::new(&mut buf), blocks: Vec::new() };
        for event in events {
            event.with_event(|event| encoder.push(event))?;
        }
        let blocks = encoder.finish();
        self.append_blocks(stream, blocks)
    }

    fn append_blocks(&mut self, stream: StreamId, blocks: Vec<Encoded>) -> Result<Appended, OutboxError> {
        let first_seq = self.next_seq(stream);
        let block_bytes = |block: &Encoded| HEADER_BYTES as u64 + block.payload.len() as u64;
        let release_bytes = (self.pending_releases.len() * HEADER_BYTES) as u64;
        let total: u64 = blocks.iter().map(block_bytes).sum::<u64>() + release_bytes;

        // Decide before writing anything: which old segments go, which blocks are kept. The
        // drop policies keep room for the few tombstones one append can start, so the bound
        // holds for the tombstone file too.
        let reserve = match self.config.policy {
            DropPolicy::Block => 0,
            DropPolicy::DropOldest | DropPolicy::DropNewest => TOMBSTONE_RESERVE_BYTES,
        };
        let mut room = self.max_bytes.saturating_sub(self.held_bytes() + reserve);
        let mut doomed = 0usize;
        if self.config.policy == DropPolicy::DropOldest {
            while room < total && doomed < self.segments.len() {
                room += self.segments[doomed].len;
                doomed += 1;
            }
        }
        // Blocks `[keep_from, keep_to)` are stored; before are dropped (`drop_oldest`, the
        // commit alone too large), after are dropped (`drop_newest`) or refused (`block`).
        let (mut keep_from, mut keep_to) = (0, blocks.len());
        let mut used = release_bytes;
        match self.config.policy {
            DropPolicy::DropOldest => {
                while keep_from < keep_to && used + blocks[keep_from..].iter().map(block_bytes).sum::<u64>() > room {
                    keep_from += 1;
                }
            }
            DropPolicy::DropNewest | DropPolicy::Block => {
                keep_to = 0;
                while keep_to < blocks.len() && used + block_bytes(&blocks[keep_to]) <= room {
                    used += block_bytes(&blocks[keep_to]);
                    keep_to += 1;
                }
            }
        }
        let events_in = |range: std::ops::Range<usize>| blocks[range].iter().map(|b| b.events).sum::<u64>();
        let dropped_before = events_in(0..keep_from);
        let kept = events_in(keep_from..keep_to);
        let after = events_in(keep_to..blocks.len());
        let (dropped_after, refused) = match self.config.policy {
            DropPolicy::Block => (0, after),
            _ => (after, 0),
        };
        let assigned = dropped_before + kept + dropped_after;

        // 1. Tombstones for everything dropped, durable before any segment goes.
        let mut dropped = 0u64;
        let doomed_segments: Vec<Segment> = self.segments.drain(..doomed).collect();
        for segment in &doomed_segments {
            for run in &segment.runs {
                let held = self.live.get(&(run.stream, run.epoch)).map(|set| set.ranges_in(run.start, run.end));
                for (start, end) in held.unwrap_or_default() {
                    self.tombstones.add(run.stream, run.epoch, start, end, DropReason::BufferFull);
                    dropped += self.remove_live(run.stream, run.epoch, start, end);
                }
            }
        }
        if dropped_before > 0 {
            self.tombstones.add(stream, self.epoch, first_seq, first_seq + dropped_before, DropReason::BufferFull);
        }
        if dropped_after > 0 {
            let start = first_seq + dropped_before + kept;
            self.tombstones.add(stream, self.epoch, start, start + dropped_after, DropReason::RejectedNew);
        }
        if doomed > 0 || dropped_before + dropped_after > 0 {
            self.tombstones.save(true)?;
        }
        for segment in doomed_segments {
            self.forget_segment(&segment);
            std::fs::remove_file(segment::path(&self.dir, segment.id))?;
        }

        // 2. The kept blocks (after the pending release records), one write, one fdatasync.
        let mut seq = first_seq + dropped_before;
        let kept_blocks = &blocks[keep_from..keep_to];
        if !kept_blocks.is_empty() {
            self.write_commit(stream, seq, kept_blocks, true)?;
            seq += kept;
        }
        debug_assert_eq!(seq + dropped_after, first_seq + assigned);
        self.next_seq.insert(stream, first_seq + assigned);
        self.held_events -= dropped;
        self.stats.commits += 1;
        self.stats.appended += assigned;
        self.stats.dropped += dropped + dropped_before + dropped_after;
        self.stats.refused += refused;
        let refused_events = refused as usize;
        Ok(Appended { first_seq, accepted: assigned as usize, refused: refused_events })
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
        let roll = self.segments.back().is_some_and(|segment| {
            segment.len > 0
                && (segment.len + bytes.len() as u64 > self.segment_bytes
                    || segment.blocks + block_count > MAX_SEGMENT_BLOCKS)
        });
        if self.active.is_none() || roll {
            self.open_new_segment()?;
        }
        let active = self.active.as_mut().expect("a segment was just opened");
        let segment = self.segments.back_mut().expect("the active segment is the last");
        let result = active.file.write_all_at(&bytes, segment.len).and_then(|()| match durable {
            true => active.file.sync_data(),
            false => Ok(()),
        });
        if let Err(error) = result {
            // The records stay pending; the caller reloads from disk.
            self.pending_releases = releases;
            return Err(error);
        }
        let base = segment.len;
        segment.len += bytes.len() as u64;
        segment.blocks += block_count;
        self.segment_disk_bytes += bytes.len() as u64;
        let mut segment = self.segments.pop_back().expect("the active segment is the last");
        for (header, offset) in headers {
            let block = BlockRef { offset: base + offset, len: header.len, start: header.start, end: header.end };
            self.active.as_mut().expect("active").index.push(stream, header.epoch, block);
            self.add_run(&mut segment, stream, header.epoch, header.start, header.end);
            self.live.entry((stream, header.epoch)).or_default().insert(header.start, header.end);
            self.held_events += header.end - header.start;
        }
        self.segments.push_back(segment);
        Ok(())
    }

    /// Seals the active segment (if any) and creates the next one, durably named, cut at 1/16
    /// of the bound in force (see `sizing`).
    fn open_new_segment(&mut self) -> std::io::Result<()> {
        let available = sizing::available_bytes(&self.dir);
        self.segment_bytes = sizing::segment_target(self.max_bytes, self.held_bytes(), available);
        let id = self.next_segment_id;
        let file =
            std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(segment::path(&self.dir, id))?;
        segment::sync_dir(&self.dir)?;
        self.next_segment_id = id + 1;
        self.segments.push_back(Segment { id, len: 0, blocks: 0, runs: Vec::new() });
        self.active = Some(Active { file, index: BlockIndex::default() });
        Ok(())
    }

    /// Registers `[start, end)` of `(stream, epoch)` as stored in `segment`.
    fn add_run(&mut self, segment: &mut Segment, stream: StreamId, epoch: Epoch, start: Seq, end: Seq) {
        if let Some(run) = segment.runs.iter_mut().rev().find(|run| run.stream == stream && run.epoch == epoch)
            && run.end == start
        {
            let key = (stream, epoch, run.start);
            run.end = end;
            self.runs.insert(key, (end, segment.id));
            return;
        }
        segment.runs.push(Run { stream, epoch, start, end });
        self.runs.insert((stream, epoch, start), (end, segment.id));
    }

    /// Drops a deleted segment from the indexes.
    fn forget_segment(&mut self, segment: &Segment) {
        for run in &segment.runs {
            if self.runs.get(&(run.stream, run.epoch, run.start)).is_some_and(|&(_, id)| id == segment.id) {
                self.runs.remove(&(run.stream, run.epoch, run.start));
            }
        }
        self.segment_disk_bytes -= segment.len;
        if self.read_cache.as_ref().is_some_and(|(id, _, _)| *id == segment.id) {
            self.read_cache = None;
        }
        if self.segments.is_empty() {
            self.active = None;
        }
    }

    fn note_damaged(&mut self, segment: u64) {
        if self.damaged_segments.insert(segment) {
            self.stats.corrupt_segments += 1;
        }
    }

    /// Tombstones (`storage_failure`) the pieces of `[start, end)` of `(stream, epoch)` that
    /// no tombstone covers yet; returns how many sequence numbers that was. In memory until
    /// the tombstones are saved.
    fn tombstone_unreadable(&mut self, stream: StreamId, epoch: Epoch, start: Seq, end: Seq) -> u64 {
        let mut unreadable = SeqSet::default();
        unreadable.insert(start, end);
        let covered: Vec<(Seq, Seq)> = self
            .tombstones
            .iter()
            .filter(|(key, _)| key.0 == stream && key.1 == epoch)
            .map(|(key, &(end, _))| (key.2, end))
            .collect();
        for (start, end) in covered {
            unreadable.remove(start, end);
        }
        let pieces = unreadable.ranges_in(start, end);
        for &(start, end) in &pieces {
            self.tombstones.add(stream, epoch, start, end, DropReason::StorageFailure);
        }
        let events = unreadable.len();
        self.stats.corrupt_events += events;
        if events > 0 {
            tracing::error!(
                stream,
                epoch,
                first_seq = start,
                events,
                "outbox events unreadable; tombstoned as storage_failure"
            );
        }
        events
    }

    /// A block of segment `id` that held `[start, end)` of `(stream, epoch)` no longer reads
    /// back: what of it is still held is tombstoned and no longer held, so the sender moves
    /// past it instead of failing on it forever.
    fn quarantine(&mut self, id: u64, stream: StreamId, epoch: Epoch, start: Seq, end: Seq) -> Result<(), OutboxError> {
        self.note_damaged(id);
        let held: Vec<(Seq, Seq)> =
            self.live.get(&(stream, epoch)).map(|set| set.ranges_in(start, end)).unwrap_or_default();
        let mut removed = 0;
        for (start, end) in held {
            removed += self.remove_live(stream, epoch, start, end);
            self.tombstone_unreadable(stream, epoch, start, end);
        }
        self.held_events -= removed;
        if removed > 0 {
            self.tombstones.save(true)?;
        }
        Ok(())
    }

    /// Removes `[start, end)` from what is held; returns how many were held.
    fn remove_live(&mut self, stream: StreamId, epoch: Epoch, start: Seq, end: Seq) -> u64 {
        let Some(set) = self.live.get_mut(&(stream, epoch)) else { return 0 };
        let removed = set.remove(start, end);
        if set.is_empty() {
            self.live.remove(&(stream, epoch));
        }
        removed
    }

    fn holds_any(&self, segment: &Segment) -> bool {
        segment
            .runs
            .iter()
            .any(|run| self.live.get(&(run.stream, run.epoch)).is_some_and(|set| set.intersects(run.start, run.end)))
    }

    /// Deletes the oldest segments while they hold nothing; never the one being written.
    fn delete_released_segments(&mut self) -> Result<(), OutboxError> {
        while let Some(front) = self.segments.front() {
            let is_active = self.active.is_some() && self.segments.len() == 1;
            if is_active || self.holds_any(front) {
                break;
            }
            let segment = self.segments.pop_front().expect("front exists");
            self.forget_segment(&segment);
            std::fs::remove_file(segment::path(&self.dir, segment.id))?;
        }
        Ok(())
    }

    /// Frees `[start, end)` of `stream` in `epoch`: events and fully covered tombstones.
    fn release(&mut self, stream: StreamId, epoch: Epoch, start: Seq, end: Seq) -> Result<(), OutboxError> {
        if start >= end {
            return Ok(());
        }
        let released = self.remove_live(stream, epoch, start, end);
        let tombstones_changed = self.tombstones.release(stream, epoch, start, end);
        if released == 0 && !tombstones_changed {
            return Ok(());
        }
        self.held_events -= released;
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
    pub fn write_pending_releases(&mut self, durable: bool) -> Result<(), OutboxError> {
        if self.pending_releases.is_empty() || self.segments.is_empty() {
            // With no segment left there is nothing a release record could still free.
            self.pending_releases.clear();
            return Ok(());
        }
        Ok(self.write_commit(0, 0, &[], durable)?)
    }

    /// The block index of segment `id` (the active one, or a sealed one read from disk).
    fn index_of(&mut self, id: u64) -> Result<&BlockIndex, OutboxError> {
        if let Some(active) = &self.active
            && self.segments.back().is_some_and(|segment| segment.id == id)
        {
            return Ok(&active.index);
        }
        if self.read_cache.as_ref().is_none_or(|(cached, _, _)| *cached != id) {
            let path = segment::path(&self.dir, id);
            let index = segment::index_of(&segment::scan(&path)?);
            self.read_cache = Some((id, index, File::open(&path)?));
        }
        Ok(&self.read_cache.as_ref().expect("just filled").1)
    }

    /// Calls `visit` with the held events of `stream` from `from` on, in order, until `end`,
    /// the first sequence number not held, or `visit` returning false.
    ///
    /// A block that no longer reads back is quarantined (see [`Self::quarantine`]) and
    /// reported as [`OutboxError::Corrupt`]; the next call goes on past it.
    fn visit_events(
        &mut self,
        stream: StreamId,
        from: Position,
        end: Seq,
        mut visit: impl FnMut(&Event<'_>) -> bool,
    ) -> Result<(), OutboxError> {
        let epoch = from.epoch;
        let Some(held_end) = self.live.get(&(stream, epoch)).and_then(|set| set.run_end(from.seq)) else {
            return Ok(());
        };
        let end = end.min(held_end);
        let mut seq = from.seq;
        while seq < end {
            let Some((_, &(run_end, id))) = self
                .runs
                .range(..=(stream, epoch, seq))
                .next_back()
                .filter(|(key, (run_end, _))| key.0 == stream && key.1 == epoch && *run_end > seq)
            else {
                break;
            };
            let Some(block) = self.index_of(id)?.find(stream, epoch, seq) else {
                // The segment was read again and now stops checking out before `seq`: the
                // rest of this run in it is out of reach.
                self.quarantine(id, stream, epoch, seq, run_end)?;
                return Err(OutboxError::Corrupt { segment: id, offset: 0 });
            };
            let block_bytes = HEADER_BYTES + block.len as usize;
            let file = match (&self.active, &self.read_cache) {
                (Some(active), _) if self.segments.back().is_some_and(|s| s.id == id) => &active.file,
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
    fn first_held(
        &self,
        stream: StreamId,
        from: Position,
        until: Position,
    ) -> Option<(Position, Option<(Seq, DropReason)>)> {
        if from >= until {
            return None;
        }
        let event = self.live.range((stream, from.epoch)..=(stream, until.epoch)).find_map(|(&(_, epoch), set)| {
            let low = if epoch == from.epoch { from.seq } else { 0 };
            let high = if epoch == until.epoch { until.seq } else { Seq::MAX };
            set.first_in(low, high).map(|seq| Position::new(epoch, seq))
        });
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
        let firsts: Vec<(StreamId, Position)> = self
            .live
            .iter()
            .filter_map(|(&(stream, epoch), set)| {
                set.first_in(0, Seq::MAX).map(|seq| (stream, Position::new(epoch, seq)))
            })
            .collect();
        let mut seen = BTreeSet::new();
        for (stream, position) in firsts {
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
            self.live.keys().map(|key| key.0).chain(self.tombstones.iter().map(|(key, _)| key.0)).collect();
        Ok(streams.into_iter().collect())
    }
}

impl Drop for Outbox {
    /// Best effort: release records not yet written only cost duplicates if lost.
    fn drop(&mut self) {
        if let Err(error) = self.write_pending_releases(true) {
            tracing::debug!(%error, "could not write the last release records");
        }
    }
}

/// Splits events into blocks: at most [`MAX_BLOCK_EVENTS`] each, a new block where time goes
/// back (the chain encodes forward deltas) or the payload is full. An event that does not
/// fit an empty block is too large to store.
struct BlockEncoder<'b> {
    writer: EventChainWriter<'b>,
    blocks: Vec<Encoded>,
}

impl BlockEncoder<'_> {
    fn push(&mut self, event: &Event<'_>) -> Result<(), OutboxError> {
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

    fn finish(mut self) -> Vec<Encoded> {
        self.finish_block();
        self.blocks
    }
}

fn read_epoch(dir: &Path) -> std::io::Result<Option<Epoch>> {
    match std::fs::read(dir.join("epoch")) {
        Ok(bytes) => Ok(bytes.try_into().ok().map(u64::from_le_bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Replaces the epoch file atomically and durably.
fn write_epoch(dir: &Path, epoch: Epoch) -> std::io::Result<()> {
    let temporary = dir.join("epoch.tmp");
    let file = File::create(&temporary)?;
    file.write_all_at(&epoch.to_le_bytes(), 0)?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join("epoch"))?;
    segment::sync_dir(dir)
}

/// 64 bits from the OS, for the first epoch of a fresh outbox.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's random source once per process.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish()
}
