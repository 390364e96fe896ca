//! Tombstones: the ranges dropped on purpose, kept until the collector acknowledges them.
//!
//! They live in their own small file, not in the segments: under `drop_newest` every commit
//! while full extends a tombstone, and an append-only record of each extension would eat
//! the very space the policy protects. The file has two slots written alternately (the
//! newer valid generation wins on load), so a torn write leaves the previous set readable.
//!
//! ```text
//! slot:  generation u64 | count u32 | crc32 u32 (over generation, count, entries) | entries
//! entry: stream u32 | epoch u64 | start u64 | end u64 | reason u8
//! ```

use super::codes::{drop_reason_code, drop_reason_from_code};
use super::store::StoreFile;
use driftlog_protocol::wire::DropReason;
use driftlog_protocol::{Epoch, Position, Seq, StreamId};
use std::collections::BTreeMap;

/// At most this many disjoint tombstones are kept. Drops coalesce into few ranges (the
/// oldest segments go in order; `drop_newest` drops a contiguous tail), so reaching it
/// means something pathological; the oldest tombstone is then forgotten and counted, and
/// the collector sees that range as an unexplained gap instead.
pub(super) const MAX_TOMBSTONES: usize = 1024;
const ENTRY_BYTES: usize = 29;
/// What one tombstone adds to [`Tombstones::disk_bytes`].
pub(super) const TOMBSTONE_DISK_BYTES: u64 = 2 * ENTRY_BYTES as u64;
const SLOT_HEADER_BYTES: usize = 16;
const SLOT_BYTES: u64 = (SLOT_HEADER_BYTES + MAX_TOMBSTONES * ENTRY_BYTES) as u64;
/// Each slot keeps room for this many more entries than it holds written out (as zeros)
/// ahead of need. Under `drop_oldest` the disk filling up is exactly when tombstones are
/// written, and they must be durable before the segments they cover are deleted: a save
/// that needed a fresh page then failed with "no space", so nothing was ever deleted and
/// the outbox refused every event until something else freed the disk. Overwriting
/// allocated pages needs no space (on file systems that overwrite in place).
const ENTRIES_AHEAD: usize = 64;

pub(super) type Key = (StreamId, Epoch, Seq);
/// One dropped range: `(stream, epoch, start, end, reason)`.
pub(super) type Dropped = (StreamId, Epoch, Seq, Seq, DropReason);

#[derive(Debug)]
pub(super) struct Tombstones<F> {
    file: F,
    /// `(stream, epoch, start)` → `(end, reason)`.
    map: BTreeMap<Key, (Seq, DropReason)>,
    generation: u64,
    /// Tombstones forgotten at the bound.
    pub(super) forgotten: u64,
}

impl<F: StoreFile> Tombstones<F> {
    pub(super) fn open(file: F) -> std::io::Result<Tombstones<F>> {
        let mut best: Option<Slot> = None;
        for slot in 0..2 {
            if let Some((generation, map)) = read_slot(&file, slot)?
                && best.as_ref().is_none_or(|(g, _)| generation > *g)
            {
                best = Some((generation, map));
            }
        }
        let (generation, map) = best.unwrap_or_default();
        let tombstones = Tombstones { file, map, generation, forgotten: 0 };
        tombstones.allocate_ahead();
        Ok(tombstones)
    }

    /// Writes both slots' room ahead (see [`ENTRIES_AHEAD`]) with the bytes already there, so
    /// their pages exist before the disk can fill. Best effort: on a disk that is already
    /// full this fails and changes nothing.
    fn allocate_ahead(&self) {
        let len = slot_len_ahead(self.map.len());
        let mut bytes = vec![0u8; len];
        for slot in 0..2 {
            let at = slot * SLOT_BYTES;
            bytes.fill(0);
            // Short reads past the end leave zeros, which is what a hole reads as.
            let mut read = 0;
            while read < len {
                match self.file.read_at(&mut bytes[read..], at + read as u64) {
                    Ok(0) => break,
                    Ok(n) => read += n,
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
            if self.file.write_all_at(&bytes, at).is_err() {
                return;
            }
        }
        let _ = self.file.sync_data();
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&Key, &(Seq, DropReason))> {
        self.map.iter()
    }

    /// Records `[start, end)` of `(stream, epoch)` as dropped, extending a tombstone with the
    /// same reason that ends at `start`. In memory only until [`Tombstones::save`].
    pub(super) fn add(&mut self, stream: StreamId, epoch: Epoch, start: Seq, end: Seq, reason: DropReason) {
        insert(&mut self.map, (stream, epoch, start, end, reason));
        while self.map.len() > MAX_TOMBSTONES {
            self.map.pop_first();
            self.forgotten += 1;
        }
    }

    /// What adding `drops` would add to [`Tombstones::disk_bytes`], or `None` if one would
    /// be forgotten at [`MAX_TOMBSTONES`]. Changes nothing.
    pub(super) fn bytes_to_add(&self, drops: &[Dropped]) -> Option<u64> {
        let mut map = self.map.clone();
        for &drop in drops {
            insert(&mut map, drop);
        }
        (map.len() <= MAX_TOMBSTONES).then(|| 2 * (map.len().saturating_sub(self.map.len()) * ENTRY_BYTES) as u64)
    }

    /// Forgets the tombstones lying wholly inside `[start, end)`: the collector has them.
    /// Returns whether any went.
    pub(super) fn release(&mut self, stream: StreamId, epoch: Epoch, start: Seq, end: Seq) -> bool {
        let covered: Vec<Key> = self
            .map
            .range((stream, epoch, start)..(stream, epoch, end))
            .filter(|(_, (tomb_end, _))| *tomb_end <= end)
            .map(|(key, _)| *key)
            .collect();
        for key in &covered {
            self.map.remove(key);
        }
        !covered.is_empty()
    }

    /// The first tombstone of `stream` covering or following `from`, before `until`: its
    /// position (clipped to `from`), end and reason.
    pub(super) fn first_at_or_after(
        &self,
        stream: StreamId,
        from: Position,
        until: Position,
    ) -> Option<(Position, Seq, DropReason)> {
        if let Some((&(_, epoch, _), &(end, reason))) =
            self.map.range((stream, from.epoch, 0)..=(stream, from.epoch, from.seq)).next_back()
            && end > from.seq
            && from < until
        {
            debug_assert_eq!(epoch, from.epoch);
            return Some((from, end, reason));
        }
        let (&(_, epoch, start), &(end, reason)) =
            self.map.range((stream, from.epoch, from.seq)..(stream, until.epoch, until.seq)).next()?;
        Some((Position::new(epoch, start), end, reason))
    }

    /// Writes the set to the next slot; `durable` adds an fdatasync.
    pub(super) fn save(&mut self, durable: bool) -> std::io::Result<()> {
        let generation = self.generation + 1;
        let mut bytes = Vec::with_capacity(SLOT_HEADER_BYTES + self.map.len() * ENTRY_BYTES);
        bytes.extend_from_slice(&generation.to_le_bytes());
        bytes.extend_from_slice(&(self.map.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        for (&(stream, epoch, start), &(end, reason)) in &self.map {
            bytes.extend_from_slice(&stream.to_le_bytes());
            bytes.extend_from_slice(&epoch.to_le_bytes());
            bytes.extend_from_slice(&start.to_le_bytes());
            bytes.extend_from_slice(&end.to_le_bytes());
            bytes.push(drop_reason_code(reason));
        }
        let crc = slot_checksum(&bytes);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        // Zeros after the entries: the room ahead (the count says where the entries end).
        bytes.resize(bytes.len().max(slot_len_ahead(self.map.len())), 0);
        self.file.write_all_at(&bytes, (generation % 2) * SLOT_BYTES)?;
        if durable {
            self.file.sync_data()?;
        }
        self.generation = generation;
        Ok(())
    }

    /// Bytes the entries take in both slots (the file is sparse: the rest of each slot is a
    /// hole; the two 16-byte slot headers and the room ahead, 2 × 64 entries or 3.7 KB, are
    /// not counted).
    pub(super) fn disk_bytes(&self) -> u64 {
        2 * (self.map.len() * ENTRY_BYTES) as u64
    }
}

/// Inserts one dropped range into `map`, merged with the tombstones of the same reason that
/// end where it starts or start where it ends.
fn insert(map: &mut BTreeMap<Key, (Seq, DropReason)>, (stream, epoch, start, end, reason): Dropped) {
    if start >= end {
        return;
    }
    let mut start = start;
    let mut end = end;
    if let Some((&key, &(previous_end, previous_reason))) =
        map.range((stream, epoch, 0)..(stream, epoch, start)).next_back()
        && previous_end == start
        && previous_reason == reason
    {
        map.remove(&key);
        start = key.2;
    }
    if let Some(&(next_end, next_reason)) = map.get(&(stream, epoch, end))
        && next_reason == reason
    {
        map.remove(&(stream, epoch, end));
        end = next_end;
    }
    map.insert((stream, epoch, start), (end, reason));
}

fn slot_checksum(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..12]);
    hasher.update(&bytes[16..]);
    hasher.finalize()
}

type Slot = (u64, BTreeMap<Key, (Seq, DropReason)>);

/// The bytes of a slot holding `entries`, with the room ahead.
fn slot_len_ahead(entries: usize) -> usize {
    SLOT_HEADER_BYTES + (entries + ENTRIES_AHEAD).min(MAX_TOMBSTONES) * ENTRY_BYTES
}

fn read_slot(file: &impl StoreFile, slot: u64) -> std::io::Result<Option<Slot>> {
    let mut header = [0u8; SLOT_HEADER_BYTES];
    match file.read_exact_at(&mut header, slot * SLOT_BYTES) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let generation = u64::from_le_bytes(header[0..8].try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as usize;
    if generation == 0 || count > MAX_TOMBSTONES {
        return Ok(None);
    }
    let mut bytes = vec![0u8; SLOT_HEADER_BYTES + count * ENTRY_BYTES];
    match file.read_exact_at(&mut bytes, slot * SLOT_BYTES) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    if u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) != slot_checksum(&bytes) {
        return Ok(None);
    }
    let mut map = BTreeMap::new();
    for entry in bytes[SLOT_HEADER_BYTES..].chunks_exact(ENTRY_BYTES) {
        let stream = u32::from_le_bytes(entry[0..4].try_into().expect("4 bytes"));
        let epoch = u64::from_le_bytes(entry[4..12].try_into().expect("8 bytes"));
        let start = u64::from_le_bytes(entry[12..20].try_into().expect("8 bytes"));
        let end = u64::from_le_bytes(entry[20..28].try_into().expect("8 bytes"));
        let Some(reason) = drop_reason_from_code(entry[28]) else { return Ok(None) };
        map.insert((stream, epoch, start), (end, reason));
    }
    Ok(Some((generation, map)))
}
