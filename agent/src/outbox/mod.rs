//! The durable outbox: every event the agent accepts, on disk until the collector ACKs it.
//!
//! One redb file. Tables:
//! - `events`: `(stream, epoch, seq)` → the event as a standalone record
//!   ([`driftlog_protocol::wire::encode_event_record`]);
//! - `tombstones`: `(stream, epoch, start)` → `(end, reason)`: ranges dropped on purpose,
//!   kept until acknowledged so the collector learns of every drop;
//! - `next_seq`: `(stream, epoch)` → the next sequence number of that stream in that epoch;
//! - `meta`: the boot epoch and the byte and event counts, updated in the same transaction
//!   as the rows they count, so they are right after any crash.
//!
//! Opening the outbox starts a new boot epoch: the counter is incremented and committed
//! before any event of the new epoch exists. A fresh file starts from a random 31-bit high
//! half, so reinstalling an agent (same key, empty disk) never reuses an epoch the collector
//! already has state for.
//!
//! An append is one write transaction committed with `Durability::Immediate` (fsync): the
//! caller batches appends (group commit) and reports an event accepted only after it
//! returns. Releases (ACKs) commit without fsync: losing one in a crash only makes the
//! device resend events the collector will recognise as duplicates.
//!
//! Memory stays flat however large the backlog: nothing is cached; every read is a short
//! redb read transaction over a key range.

mod backlog;
mod tables;

pub use backlog::StreamBacklog;

use driftlog_protocol::sender::OwnedEvent;
use driftlog_protocol::wire::{DropReason, EncodeError, Event, encode_event_record};
use driftlog_protocol::{Epoch, Seq, StreamId};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use std::collections::BTreeMap;
use std::path::Path;
use tables::{EVENTS, META, NEXT_SEQ, TOMBSTONES, drop_reason_code};

/// Largest stored event record. An event this large cannot fit a datagram anyway.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;
/// What a row costs beyond its record: the key and redb's per-entry bookkeeping (estimate).
const ROW_OVERHEAD_BYTES: u64 = 32;
/// What a tombstone row costs.
const TOMBSTONE_BYTES: u64 = ROW_OVERHEAD_BYTES + 16;

/// What happens when an append would exceed `max_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropPolicy {
    /// Drop the oldest held events (leaving tombstones) to make room: fresh data wins.
    DropOldest,
    /// Keep the held events; the new event gets its sequence number and a tombstone.
    DropNewest,
    /// Refuse the new event: the input sees the error and applies back-pressure.
    Block,
}

#[derive(Clone, Debug)]
pub struct OutboxConfig {
    /// Bound on held events and tombstones, in estimated bytes on disk.
    pub max_bytes: u64,
    pub policy: DropPolicy,
}

/// redb's page cache. Its default (1 GiB) would let RSS grow with the backlog while it
/// drains; the outbox reads each range once, so a small cache loses little.
const CACHE_BYTES: usize = 2 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("storage: {0}")]
    Storage(#[from] redb::Error),
    #[error("event record larger than {MAX_RECORD_BYTES} bytes")]
    EventTooLarge,
    #[error("outbox full and the drop policy is `block`")]
    Full,
    #[error("corrupt outbox record at stream {stream} epoch {epoch} seq {seq}")]
    Corrupt { stream: StreamId, epoch: Epoch, seq: Seq },
}

macro_rules! storage_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for OutboxError {
            fn from(error: $t) -> OutboxError {
                OutboxError::Storage(error.into())
            }
        }
    )*};
}
storage_error_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

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
    /// Writes that failed (disk full, I/O error) and made the outbox reopen.
    pub storage_errors: u64,
}

/// The result of one [`Outbox::append`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Sequence number of the first accepted event; the accepted events are consecutive.
    pub first_seq: Seq,
    /// Events that got a sequence number (stored, or tombstoned under `drop_newest`).
    pub accepted: usize,
    /// Events refused under `block` (the tail of the batch).
    pub refused: usize,
}

#[derive(Debug)]
pub struct Outbox {
    db: Database,
    path: std::path::PathBuf,
    /// The byte bound in force: the configured one, or lower once the disk filled up.
    max_bytes: u64,
    epoch: Epoch,
    next_seq: BTreeMap<StreamId, Seq>,
    held_bytes: u64,
    held_events: u64,
    config: OutboxConfig,
    stats: OutboxStats,
}

impl Outbox {
    /// Opens (or creates) the outbox at `path` and starts a new boot epoch.
    pub fn open(path: &Path, config: OutboxConfig) -> Result<Outbox, OutboxError> {
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(path)?;
        let txn = db.begin_write()?;
        let (epoch, held_bytes, held_events);
        {
            let mut meta = txn.open_table(META)?;
            let previous = meta.get("boot_epoch")?.map(|v| v.value());
            epoch = match previous {
                Some(previous) => previous + 1,
                None => (random_u64() >> 33 << 32) | 1,
            };
            meta.insert("boot_epoch", epoch)?;
            held_bytes = meta.get("held_bytes")?.map_or(0, |v| v.value());
            held_events = meta.get("held_events")?.map_or(0, |v| v.value());
            // Create the other tables so readers never meet a missing table.
            txn.open_table(EVENTS)?;
            txn.open_table(TOMBSTONES)?;
            txn.open_table(NEXT_SEQ)?;
        }
        txn.commit()?;
        Ok(Outbox {
            db,
            path: path.to_path_buf(),
            max_bytes: config.max_bytes,
            epoch,
            next_seq: BTreeMap::new(),
            held_bytes,
            held_events,
            config,
            stats: OutboxStats::default(),
        })
    }

    /// Recovers from a failed write (typically a full disk): redb refuses every operation
    /// after an I/O error until the file is reopened. Reopens it in the same epoch, reloads
    /// the counts the failed transaction did not change, and lowers the byte bound to 90 %
    /// of what is held, so the drop policy makes room from now on instead of failing.
    pub fn recover_from_storage_error(&mut self) -> Result<(), OutboxError> {
        self.stats.storage_errors += 1;
        // Only one handle per file may be open: release the poisoned one first.
        let placeholder = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
        drop(std::mem::replace(&mut self.db, placeholder));
        self.db = Database::builder().set_cache_size(CACHE_BYTES).create(&self.path)?;
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        self.held_bytes = meta.get("held_bytes")?.map_or(0, |v| v.value());
        self.held_events = meta.get("held_events")?.map_or(0, |v| v.value());
        drop(meta);
        drop(txn);
        self.reload_next_seqs()?;
        self.max_bytes = self.max_bytes.min(self.held_bytes / 10 * 9);
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
        self.stats
    }

    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

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

    /// Appends `events` to `stream` in one durable transaction and returns the sequence
    /// numbers they got. Nothing is written if any event is too large to store.
    pub fn append(&mut self, stream: StreamId, events: &[Event<'_>]) -> Result<Appended, OutboxError> {
        let mut scratch = vec![0u8; MAX_RECORD_BYTES];
        let records = events.iter().map(|event| encode(event, &mut scratch)).collect::<Result<Vec<_>, _>>()?;
        self.append_records(stream, &records)
    }

    /// [`Self::append`] for events that own their strings (what inputs produce).
    pub fn append_owned(&mut self, stream: StreamId, events: &[OwnedEvent]) -> Result<Appended, OutboxError> {
        let mut scratch = vec![0u8; MAX_RECORD_BYTES];
        let records = events
            .iter()
            .map(|event| event.with_event(|event| encode(event, &mut scratch)))
            .collect::<Result<Vec<_>, _>>()?;
        self.append_records(stream, &records)
    }

    fn append_records(&mut self, stream: StreamId, records: &[Vec<u8>]) -> Result<Appended, OutboxError> {
        let first_seq = self.next_seq(stream);
        let mut next_seq = first_seq;
        let (mut held_bytes, mut held_events) = (self.held_bytes, self.held_events);
        let (mut dropped, mut refused) = (0u64, 0usize);
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(EVENTS)?;
            let mut tombstones = txn.open_table(TOMBSTONES)?;
            for (index, record) in records.iter().enumerate() {
                let cost = record.len() as u64 + ROW_OVERHEAD_BYTES;
                let mut store = true;
                while held_bytes + cost > self.max_bytes {
                    match self.config.policy {
                        DropPolicy::Block => {
                            refused = records.len() - index;
                            break;
                        }
                        DropPolicy::DropNewest => {
                            store = false;
                            break;
                        }
                        DropPolicy::DropOldest => {
                            let Some(freed) = drop_oldest(&mut table, &mut tombstones)? else {
                                // Nothing older left: this event alone exceeds the bound.
                                store = false;
                                break;
                            };
                            held_bytes = held_bytes + freed.tombstone_cost - freed.record_cost;
                            held_events -= 1;
                            dropped += 1;
                        }
                    }
                }
                if refused > 0 {
                    break;
                }
                let key = (stream, self.epoch, next_seq);
                if store {
                    table.insert(key, record.as_slice())?;
                    held_bytes += cost;
                    held_events += 1;
                } else {
                    held_bytes += add_tombstone(&mut tombstones, key, DropReason::RejectedNew)?;
                    dropped += 1;
                    // A new tombstone row needs room too: the oldest events make it, so the
                    // bound holds for everything on disk.
                    while held_bytes > self.max_bytes {
                        let Some(freed) = drop_oldest(&mut table, &mut tombstones)? else { break };
                        held_bytes = held_bytes + freed.tombstone_cost - freed.record_cost;
                        held_events -= 1;
                        dropped += 1;
                    }
                }
                next_seq += 1;
            }
            txn.open_table(NEXT_SEQ)?.insert((stream, self.epoch), next_seq)?;
            let mut meta = txn.open_table(META)?;
            meta.insert("held_bytes", held_bytes)?;
            meta.insert("held_events", held_events)?;
        }
        let mut txn = txn;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        self.next_seq.insert(stream, next_seq);
        self.held_bytes = held_bytes;
        self.held_events = held_events;
        self.stats.commits += 1;
        self.stats.appended += next_seq - first_seq;
        self.stats.dropped += dropped;
        self.stats.refused += refused as u64;
        Ok(Appended { first_seq, accepted: (next_seq - first_seq) as usize, refused })
    }

    /// Frees `[range)` of `stream` in `epoch`: events and fully covered tombstones.
    fn release(&mut self, stream: StreamId, epoch: Epoch, start: Seq, end: Seq) -> Result<(), OutboxError> {
        if start >= end {
            return Ok(());
        }
        let (mut freed_bytes, mut freed_events) = (0u64, 0u64);
        let mut txn = self.db.begin_write()?;
        // Losing a release in a crash only causes a duplicate the collector drops.
        txn.set_durability(Durability::None)?;
        {
            let mut table = txn.open_table(EVENTS)?;
            let doomed: Vec<((StreamId, Epoch, Seq), u64)> = table
                .range((stream, epoch, start)..(stream, epoch, end))?
                .map(|row| row.map(|(key, value)| (key.value(), value.value().len() as u64)))
                .collect::<Result<_, _>>()?;
            for (key, len) in &doomed {
                table.remove(*key)?;
                freed_bytes += len + ROW_OVERHEAD_BYTES;
                freed_events += 1;
            }
            let mut tombstones = txn.open_table(TOMBSTONES)?;
            let covered: Vec<(StreamId, Epoch, Seq)> = tombstones
                .range((stream, epoch, start)..(stream, epoch, end))?
                .filter_map(|row| match row {
                    Ok((key, value)) if value.value().0 <= end => Some(Ok(key.value())),
                    Ok(_) => None,
                    Err(error) => Some(Err(error)),
                })
                .collect::<Result<_, _>>()?;
            for key in &covered {
                tombstones.remove(*key)?;
                freed_bytes += TOMBSTONE_BYTES;
            }
            if freed_bytes > 0 {
                let mut meta = txn.open_table(META)?;
                meta.insert("held_bytes", self.held_bytes.saturating_sub(freed_bytes))?;
                meta.insert("held_events", self.held_events.saturating_sub(freed_events))?;
            }
        }
        if freed_bytes == 0 {
            txn.abort()?;
            return Ok(());
        }
        txn.commit()?;
        self.held_bytes = self.held_bytes.saturating_sub(freed_bytes);
        self.held_events = self.held_events.saturating_sub(freed_events);
        self.stats.released += freed_events;
        Ok(())
    }

    fn database(&self) -> &Database {
        &self.db
    }

    /// Next sequence numbers of every stream in the current epoch, from disk (a new epoch
    /// starts every stream at 0, so only streams written since this open appear).
    pub fn reload_next_seqs(&mut self) -> Result<(), OutboxError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(NEXT_SEQ)?;
        for row in table.iter()? {
            let (key, value) = row?;
            let (stream, epoch) = key.value();
            if epoch == self.epoch {
                self.next_seq.insert(stream, value.value());
            }
        }
        Ok(())
    }
}

struct Freed {
    record_cost: u64,
    tombstone_cost: u64,
}

/// Drops the oldest held event of any stream, leaving (or extending) a tombstone.
fn drop_oldest(
    table: &mut redb::Table<(StreamId, Epoch, Seq), &[u8]>,
    tombstones: &mut redb::Table<(StreamId, Epoch, Seq), (u64, u8)>,
) -> Result<Option<Freed>, OutboxError> {
    let Some((key, len)) = table.first()?.map(|(key, value)| (key.value(), value.value().len() as u64)) else {
        return Ok(None);
    };
    table.remove(key)?;
    let tombstone_cost = add_tombstone(tombstones, key, DropReason::BufferFull)?;
    Ok(Some(Freed { record_cost: len + ROW_OVERHEAD_BYTES, tombstone_cost }))
}

/// Records `key.2` as dropped, extending a tombstone that ends right before it. Returns the
/// bytes the tombstone table grew by.
fn add_tombstone(
    tombstones: &mut redb::Table<(StreamId, Epoch, Seq), (u64, u8)>,
    key: (StreamId, Epoch, Seq),
    reason: DropReason,
) -> Result<u64, OutboxError> {
    let (stream, epoch, seq) = key;
    let code = drop_reason_code(reason);
    let previous = tombstones
        .range((stream, epoch, 0)..=(stream, epoch, seq))?
        .next_back()
        .transpose()?
        .map(|(start, value)| (start.value(), value.value()));
    if let Some((start, (end, previous_code))) = previous
        && end == seq
        && previous_code == code
    {
        tombstones.insert(start, (seq + 1, code))?;
        return Ok(0);
    }
    tombstones.insert(key, (seq + 1, code))?;
    Ok(TOMBSTONE_BYTES)
}

fn encode(event: &Event<'_>, scratch: &mut [u8]) -> Result<Vec<u8>, OutboxError> {
    let len = encode_event_record(event, scratch).map_err(|error| match error {
        EncodeError::BufferTooSmall | EncodeError::OutOfRange => OutboxError::EventTooLarge,
    })?;
    Ok(scratch[..len].to_vec())
}

/// 64 bits from the OS, for the first epoch of a fresh outbox.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's random source once per process.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish()
}

impl Outbox {
    /// The oldest held event's device times (epoch, monotonic µs, wall µs if stamped), for
    /// the "oldest unacknowledged" figure of `status`.
    pub fn oldest_event(&self) -> Result<Option<(Epoch, u64, Option<i64>)>, OutboxError> {
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let mut oldest: Option<(Epoch, u64, Option<i64>)> = None;
        for stream in self.streams()? {
            let Some((key, value)) = events.range((stream, 0, 0)..)?.next().transpose()? else { continue };
            let (row_stream, epoch, seq) = key.value();
            if row_stream != stream {
                continue;
            }
            let event = driftlog_protocol::wire::decode_event_record(value.value())
                .map_err(|_| OutboxError::Corrupt { stream, epoch, seq })?;
            let candidate = (epoch, event.mono.as_micros(), event.wall.map(|w| w.unix_micros));
            if oldest.is_none_or(|current| (candidate.0, candidate.1) < (current.0, current.1)) {
                oldest = Some(candidate);
            }
        }
        Ok(oldest)
    }

    /// Every stream that holds events or tombstones, in any epoch.
    pub fn streams(&self) -> Result<Vec<StreamId>, OutboxError> {
        let txn = self.db.begin_read()?;
        let mut streams = std::collections::BTreeSet::new();
        let events = txn.open_table(EVENTS)?;
        let tombstones = txn.open_table(TOMBSTONES)?;
        // Hop from stream to stream: one range lookup per stream, not per row.
        let mut from: StreamId = 0;
        loop {
            let next_event = events.range((from, 0, 0)..)?.next().transpose()?.map(|(k, _)| k.value().0);
            let next_tombstone = tombstones.range((from, 0, 0)..)?.next().transpose()?.map(|(k, _)| k.value().0);
            let Some(stream) = next_event.into_iter().chain(next_tombstone).min() else { break };
            streams.insert(stream);
            match stream.checked_add(1) {
                Some(next) => from = next,
                None => break,
            }
        }
        Ok(streams.into_iter().collect())
    }
}
