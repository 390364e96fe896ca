//! The durable log: append-only records addressed by a monotonically increasing offset, in one
//! redb file.
//!
//! The committer appends one block per group commit, in the same write transaction as the
//! dedup state of every receiver whose events the block holds (`streams` table), so a crash
//! either keeps both or neither: a retransmission after a crash meets the state that
//! matches the log. Retention deletes whole blocks from the front, by total size and by age,
//! and never past an offset a protected reader (the JetStream forwarder) has not passed yet:
//! when that leaves no room, the commit fails with [`LogError::Full`] and the collector stops
//! acknowledging instead of dropping.

pub mod block;
pub mod census;
pub mod record;
pub mod storage;
pub mod streams;
mod varint;
#[cfg(test)]
mod watch_tests;

use crate::windows::store::{StateStore, StoredEntry};
use block::{BlockHead, EncodedBlock, block_records, decode_block};
use driftlog_protocol::endpoint::RECEIVER_RANGES;
use driftlog_protocol::ids::StreamKey;
use driftlog_protocol::receiver::DedupState;
use driftlog_protocol::{DeviceId, Epoch, KeyId, StreamId};
use redb::{Builder, Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::sync::RwLock;

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const STREAMS: TableDefinition<(u64, u32, u64), &[u8]> = TableDefinition::new("streams");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const READERS: TableDefinition<&str, u64> = TableDefinition::new("readers");
/// Per `(device, epoch)` clock models, so skew correction survives a restart.
const CLOCKS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("clocks");
/// Derived-state checkpoints (window state), keyed by the reader that produced them.
const CHECKPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("checkpoints");
/// Window state that is not in memory (see `windows::store`): one unit per device ...
const WINDOW_UNITS: TableDefinition<u64, &[u8]> = TableDefinition::new("window_units");
/// ... and fleet windows that fired and wait for late events or their cleanup.
const WINDOW_STORED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("window_stored");

const NEXT_OFFSET: &str = "next_offset";
const HELD_BYTES: &str = "held_bytes";
const EPOCH: &str = "epoch";
const FORMAT: &str = "format";
/// The record format this build writes and reads. 2: events records carry a clock fix.
/// 3: `EventsNext` records (a run relative to its slot's previous one in the block).
pub const FORMAT_VERSION: u64 = 3;
/// Format 2 is format 3 without `EventsNext` records: such a log is read as it is and marked
/// 3 at open, so an older build refuses it once this one has written to it.
const FORMAT_READ_AS_CURRENT: u64 = 2;

pub type Dedup = DedupState<RECEIVER_RANGES>;
/// `(device, boot epoch)`: the key of a stored clock model.
pub type ClockKey = (u64, u64);
/// A clock model as stored: its key and postcard bytes.
pub type StoredClockModel = (ClockKey, Vec<u8>);

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Retention by size: the sum of stored block sizes.
    pub max_bytes: u64,
    /// Retention by age; `None` keeps records until the size bound needs their room.
    pub max_age_ms: Option<u64>,
    /// Readers whose offset retention must not pass (records they have not read stay).
    pub protected_readers: Vec<String>,
    /// redb's page cache.
    pub cache_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { max_bytes: 10 << 30, max_age_ms: None, protected_readers: Vec::new(), cache_bytes: 64 << 20 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("storage: {0}")]
    Storage(#[from] redb::Error),
    #[error(
        "log full: {held} bytes held, bound {bound}, and retention cannot free records a protected reader has not read"
    )]
    Full { held: u64, bound: u64 },
    #[error("the file system holding the log has {available} bytes free; a commit may need {needed}")]
    NoSpace { available: u64, needed: u64 },
    #[error("corrupt block at offset {offset}: {error}")]
    Corrupt { offset: u64, error: block::BlockError },
    #[error("corrupt stream state for {0:?}")]
    CorruptState(StreamKey),
    #[error("the log's file could not be opened again after a storage error")]
    Closed,
    #[error(
        "the log is in record format {found}; this build reads format {FORMAT_VERSION} (start with an empty data directory)"
    )]
    Format { found: u64 },
}

macro_rules! storage_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for LogError {
            fn from(error: $t) -> LogError {
                LogError::Storage(error.into())
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

/// One group commit: a block and the receiver states it makes durable.
#[derive(Debug, Default)]
pub struct Commit {
    /// Encoded by [`block::BlockBuilder::finish`], in offset order; empty when only states
    /// change.
    pub blocks: Vec<EncodedBlock>,
    pub streams: Vec<(StreamKey, KeyId, Dedup)>,
    /// Fail with [`LogError::Full`] unless retention leaves room for at least this many
    /// bytes (a probe with an empty block asks whether a full block would fit again). A
    /// probe also fails with [`LogError::NoSpace`] unless the file system has that much free
    /// or retention freed that much inside the file.
    pub reserve_bytes: u64,
    /// Clock models `(device, epoch)` changed since the last commit (postcard bytes).
    pub clocks: Vec<StoredClockModel>,
    /// Clock models to forget (evicted for the bound).
    pub clocks_removed: Vec<ClockKey>,
    /// A processor's outputs (in `block`) committed with the offset it has read up to and its
    /// state, so a crash redoes exactly the work after the checkpoint.
    pub checkpoint: Option<Checkpoint>,
    /// New floors of `(device, stream)`: the states of the epochs below are finished and go
    /// (see [`streams`]).
    pub floors: Vec<((DeviceId, StreamId), Epoch)>,
}

/// See [`Commit::checkpoint`].
#[derive(Debug, Default)]
pub struct Checkpoint {
    pub reader: String,
    pub next_offset: u64,
    pub state: Vec<u8>,
    /// Window state written since the last checkpoint (`None` deletes).
    pub window_units: Vec<(u64, Option<Vec<u8>>)>,
    pub window_stored: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Drop all stored window state first (the windows start afresh).
    pub reset_window_state: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    pub first_offset: u64,
    pub next_offset: u64,
    pub held_bytes: u64,
    /// Blocks retention deleted in this commit.
    pub blocks_deleted: u64,
    /// What the commit did to the stream states (new ones, compacted ones).
    pub stream_states: streams::StateChanges,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LogStats {
    pub first_offset: u64,
    pub next_offset: u64,
    pub held_bytes: u64,
    pub blocks: u64,
    pub file_bytes: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredStream {
    key_id: KeyId,
    state: Dedup,
}

/// A stored block, copied out of the database.
#[derive(Clone, Debug)]
pub struct OwnedBlock {
    pub first_offset: u64,
    pub value: Vec<u8>,
}

impl OwnedBlock {
    pub fn decode(&self) -> Result<(BlockHead, Vec<(u64, record::Record<'_>)>), LogError> {
        self.as_ref().decode()
    }

    /// The block's records one at a time (see [`block_records`]).
    pub fn records(&self) -> Result<impl Iterator<Item = Result<(u64, record::Record<'_>), LogError>>, LogError> {
        self.as_ref().records()
    }

    pub fn as_ref(&self) -> BlockRef<'_> {
        BlockRef { first_offset: self.first_offset, value: &self.value }
    }
}

/// A stored block borrowed from a read transaction (see [`Log::visit_blocks`]).
#[derive(Clone, Copy, Debug)]
pub struct BlockRef<'a> {
    pub first_offset: u64,
    pub value: &'a [u8],
}

impl<'a> BlockRef<'a> {
    pub fn decode(&self) -> Result<(BlockHead, Vec<(u64, record::Record<'a>)>), LogError> {
        decode_block(self.first_offset, self.value)
            .map_err(|error| LogError::Corrupt { offset: self.first_offset, error })
    }

    /// The block's records one at a time (see [`block_records`]).
    pub fn records(
        &self,
    ) -> Result<impl Iterator<Item = Result<(u64, record::Record<'a>), LogError>> + use<'a>, LogError> {
        let first_offset = self.first_offset;
        let corrupt = move |error| LogError::Corrupt { offset: first_offset, error };
        let (_, records) = block_records(first_offset, self.value).map_err(corrupt)?;
        Ok(records.map(move |item| item.map_err(corrupt)))
    }
}

fn builder(config: &LogConfig) -> Builder {
    let mut builder = Database::builder();
    builder.set_cache_size(config.cache_bytes);
    builder
}

/// The database while it is open (see [`Log::db`]).
struct OpenDatabase<'a>(std::sync::RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for OpenDatabase<'_> {
    type Target = Database;

    fn deref(&self) -> &Database {
        // Only made from a guard holding `Some` (see `Log::db`).
        self.0.as_ref().expect("an open database")
    }
}

#[derive(Debug)]
pub struct Log {
    storage: Arc<dyn storage::LogStorage>,
    config: LogConfig,
    /// Replaced on reopen: redb refuses all work after an I/O error until reopened, and only
    /// one handle per file may exist, so readers hold the read lock while they use it. `None`
    /// while a reopen fails.
    db: RwLock<Option<Database>>,
    /// The offset after the last committed record, published after every commit: readers in
    /// this process (the JetStream forwarder) wait on it instead of polling the file.
    next_offset: tokio::sync::watch::Sender<u64>,
}

impl Log {
    /// Opens (or creates) the log in the file at `path`.
    pub fn open(path: &Path, config: LogConfig) -> Result<Log, LogError> {
        Log::open_on(Arc::new(storage::LogPath(path.to_path_buf())), config)
    }

    /// Opens (or creates) the log on `storage`.
    pub fn open_on(storage: Arc<dyn storage::LogStorage>, config: LogConfig) -> Result<Log, LogError> {
        if !storage.exists() {
            // Created whole or not at all (see `storage::LogStorage`).
            // `close` writes and syncs the new file, and says if that failed.
            storage.create_scratch(&builder(&config))?.close()?;
            storage.publish_scratch().map_err(|error| LogError::Storage(error.into()))?;
        }
        let db = storage.open(&builder(&config))?;
        let txn = db.begin_write()?;
        let next_offset;
        txn.open_table(BLOCKS)?;
        txn.open_table(STREAMS)?;
        txn.open_table(META)?;
        txn.open_table(READERS)?;
        txn.open_table(CLOCKS)?;
        txn.open_table(CHECKPOINTS)?;
        txn.open_table(WINDOW_UNITS)?;
        txn.open_table(WINDOW_STORED)?;
        txn.open_table(streams::FLOORS)?;
        {
            let mut meta = txn.open_table(META)?;
            let format = meta.get(FORMAT)?.map(|v| v.value());
            next_offset = meta.get(NEXT_OFFSET)?.map_or(0, |v| v.value());
            let used = next_offset > 0;
            match format {
                Some(FORMAT_VERSION) => {}
                Some(FORMAT_READ_AS_CURRENT) => {
                    meta.insert(FORMAT, FORMAT_VERSION)?;
                }
                None if !used => {
                    meta.insert(FORMAT, FORMAT_VERSION)?;
                }
                found => return Err(LogError::Format { found: found.unwrap_or(1) }),
            }
        }
        txn.commit()?;
        let next_offset = tokio::sync::watch::Sender::new(next_offset);
        Ok(Log { storage, config, db: RwLock::new(Some(db)), next_offset })
    }

    /// The size of the log's file.
    pub fn file_bytes(&self) -> u64 {
        self.storage.file_bytes()
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The offset after the last committed record, updated after every commit.
    pub fn watch_next_offset(&self) -> tokio::sync::watch::Receiver<u64> {
        self.next_offset.subscribe()
    }

    /// The open database; if the last reopen failed, opens it first (or fails again).
    fn db(&self) -> Result<OpenDatabase<'_>, LogError> {
        let read = || self.db.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let db = read();
        if db.is_some() {
            return Ok(OpenDatabase(db));
        }
        drop(db);
        self.reopen()?;
        let db = read();
        // Another thread's reopen may have failed in between.
        if db.is_none() {
            return Err(LogError::Closed);
        }
        Ok(OpenDatabase(db))
    }

    /// Reopens the file after a storage error. While it fails, the log has no database:
    /// every read and commit fails (and tries to open it again), none lands anywhere else.
    pub fn reopen(&self) -> Result<(), LogError> {
        let mut db = self.db.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        // redb allows one handle per file: the failed one goes before the new one opens.
        drop(db.take());
        *db = Some(self.storage.open(&builder(&self.config))?);
        Ok(())
    }

    /// The collector's boot epoch for this run: one more than the last, persisted. A fresh
    /// log starts at a random point in the upper half, so a reinstalled collector does not
    /// reuse epochs an agent's replay filter remembers.
    pub fn next_epoch(&self, fresh_start: u64) -> Result<u64, LogError> {
        let db = self.db()?;
        let txn = db.begin_write()?;
        let epoch = {
            let mut meta = txn.open_table(META)?;
            let last = meta.get(EPOCH)?.map(|v| v.value());
            let epoch = last.map_or(fresh_start | (1 << 62), |last| last + 1);
            meta.insert(EPOCH, epoch)?;
            epoch
        };
        txn.commit()?;
        Ok(epoch)
    }

    /// Appends `commit` in one fsynced transaction, applying retention first. After a
    /// storage error the database is opened again (redb refuses all work after one until
    /// then) and the error returned: the commit did not happen, or it is not known whether
    /// it did (a failed fsync leaves the written data unknown).
    pub fn commit(&self, commit: &Commit, now_unix_ms: u64) -> Result<Committed, LogError> {
        let result = self.write_commit(commit, now_unix_ms);
        if matches!(result, Err(LogError::Storage(_)))
            && let Err(error) = self.reopen()
        {
            tracing::error!(%error, "cannot reopen the log");
        }
        result
    }

    fn write_commit(&self, commit: &Commit, now_unix_ms: u64) -> Result<Committed, LogError> {
        let db = self.db()?;
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let committed = {
            let mut blocks = txn.open_table(BLOCKS)?;
            let mut meta = txn.open_table(META)?;
            let mut readers = txn.open_table(READERS)?;
            let next_offset = meta.get(NEXT_OFFSET)?.map_or(0, |v| v.value());
            let mut held = meta.get(HELD_BYTES)?.map_or(0, |v| v.value());
            let floor = self.protected_floor(&readers)?;
            let incoming: u64 = commit.blocks.iter().map(|block| block.value.len() as u64).sum();
            let mut deleted = 0;
            let mut freed_bytes = 0;
            // Whole blocks from the front: over the size bound, or past the age bound.
            loop {
                // Only the head and the length: the block itself is not copied.
                let Some((first, head, len)) = blocks.first()?.map(|(k, v)| {
                    let value = v.value();
                    let head: BlockHead = postcard::take_from_bytes(value).map(|(h, _)| h).unwrap_or_default();
                    (k.value(), head, value.len() as u64)
                }) else {
                    break;
                };
                let over_size = held + incoming.max(commit.reserve_bytes) > self.config.max_bytes;
                let over_age =
                    self.config.max_age_ms.is_some_and(|age| head.written_unix_ms.saturating_add(age) < now_unix_ms);
                if !(over_size || over_age) || first + head.offsets > floor.unwrap_or(u64::MAX) {
                    break;
                }
                blocks.remove(first)?;
                held = held.saturating_sub(len);
                freed_bytes += len;
                deleted += 1;
            }
            if commit.blocks.is_empty() && commit.reserve_bytes > 0 {
                self.check_disk_room(commit.reserve_bytes, freed_bytes)?;
            }
            let needed = incoming.max(commit.reserve_bytes);
            if needed > 0 && held + needed > self.config.max_bytes {
                return Err(LogError::Full { held, bound: self.config.max_bytes });
            }
            let mut next = next_offset;
            for block in &commit.blocks {
                blocks.insert(next, block.value.as_slice())?;
                next += block.offsets;
            }
            held += incoming;
            meta.insert(NEXT_OFFSET, next)?;
            meta.insert(HELD_BYTES, held)?;
            let stream_states = streams::write_stream_states(&txn, &commit.floors, &commit.streams)?;
            if !commit.clocks.is_empty() || !commit.clocks_removed.is_empty() {
                let mut clocks = txn.open_table(CLOCKS)?;
                for (key, bytes) in &commit.clocks {
                    clocks.insert(*key, bytes.as_slice())?;
                }
                for key in &commit.clocks_removed {
                    clocks.remove(*key)?;
                }
            }
            if let Some(checkpoint) = &commit.checkpoint {
                readers.insert(checkpoint.reader.as_str(), checkpoint.next_offset)?;
                txn.open_table(CHECKPOINTS)?.insert(checkpoint.reader.as_str(), checkpoint.state.as_slice())?;
                write_window_state(&txn, checkpoint)?;
            }
            let first_offset = blocks.first()?.map_or(next, |(k, _)| k.value());
            Committed { first_offset, next_offset: next, held_bytes: held, blocks_deleted: deleted, stream_states }
        };
        txn.commit()?;
        self.next_offset.send_replace(committed.next_offset);
        Ok(committed)
    }

    /// A probe's question after a failed write (typically a full disk): would a full commit
    /// fit now? An empty probe transaction writes next to nothing, so it succeeded on a disk
    /// that a real commit then failed on, and the collector flipped between accepting and
    /// refusing every second while the disk stayed full. A commit can reuse pages that
    /// retention freed inside the file, or grow the file; so a probe passes if either would
    /// hold `needed` bytes. A file system that cannot say how much it has free is not a
    /// reason to refuse.
    fn check_disk_room(&self, needed: u64, freed_bytes: u64) -> Result<(), LogError> {
        if freed_bytes >= needed {
            return Ok(());
        }
        let Some(available) = self.storage.available_bytes() else { return Ok(()) };
        if available < needed {
            return Err(LogError::NoSpace { available, needed });
        }
        Ok(())
    }

    fn protected_floor(&self, readers: &impl ReadableTable<&'static str, u64>) -> Result<Option<u64>, LogError> {
        let mut floor: Option<u64> = None;
        for name in &self.config.protected_readers {
            let offset = readers.get(name.as_str())?.map_or(0, |v| v.value());
            floor = Some(floor.map_or(offset, |f| f.min(offset)));
        }
        Ok(floor)
    }

    /// Calls `visit` with up to `max_blocks` blocks holding offsets at or after `offset`, in
    /// order, read in place: the hot reader (the window processor) used to spend a quarter of
    /// its time copying (then 1 MiB) blocks out and faulting in fresh memory for the copies.
    /// The read transaction and the database's read lock (see [`Self::reopen`]) are held
    /// meanwhile, so `visit` should not block.
    pub fn visit_blocks<E: From<LogError>>(
        &self,
        offset: u64,
        max_blocks: usize,
        mut visit: impl FnMut(BlockRef<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(LogError::from)?;
        let table = txn.open_table(BLOCKS).map_err(LogError::from)?;
        // The block holding `offset` starts at or before it.
        let before = table.range(..=offset).map_err(LogError::from)?.next_back().transpose().map_err(LogError::from)?;
        let start = before.map_or(offset, |(k, _)| k.value());
        for entry in table.range(start..).map_err(LogError::from)?.take(max_blocks) {
            let (key, value) = entry.map_err(LogError::from)?;
            visit(BlockRef { first_offset: key.value(), value: value.value() })?;
        }
        Ok(())
    }

    /// [`Self::visit_blocks`] that also hands `visit` the stored window state, read in the
    /// same transaction (a second one would take the database's read lock twice).
    pub fn visit_blocks_with_state<E: From<LogError>>(
        &self,
        offset: u64,
        max_blocks: usize,
        mut visit: impl FnMut(BlockRef<'_>, &dyn StateStore) -> Result<(), E>,
    ) -> Result<(), E> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(LogError::from)?;
        let store = TxnStore { txn: &txn };
        let table = txn.open_table(BLOCKS).map_err(LogError::from)?;
        let before = table.range(..=offset).map_err(LogError::from)?.next_back().transpose().map_err(LogError::from)?;
        let start = before.map_or(offset, |(k, _)| k.value());
        for entry in table.range(start..).map_err(LogError::from)?.take(max_blocks) {
            let (key, value) = entry.map_err(LogError::from)?;
            visit(BlockRef { first_offset: key.value(), value: value.value() }, &store)?;
        }
        Ok(())
    }

    /// The stored window state, read in its own transaction.
    pub fn with_window_state<T>(&self, read: impl FnOnce(&dyn StateStore) -> T) -> Result<T, LogError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        Ok(read(&TxnStore { txn: &txn }))
    }

    /// Up to `max_blocks` blocks holding offsets at or after `offset`, in order, copied out.
    pub fn read_blocks(&self, offset: u64, max_blocks: usize) -> Result<Vec<OwnedBlock>, LogError> {
        let mut out = Vec::new();
        self.visit_blocks(offset, max_blocks, |block| {
            out.push(OwnedBlock { first_offset: block.first_offset, value: block.value.to_vec() });
            Ok::<_, LogError>(())
        })?;
        Ok(out)
    }

    pub fn stats(&self) -> Result<LogStats, LogError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let blocks = txn.open_table(BLOCKS)?;
        let next_offset = meta.get(NEXT_OFFSET)?.map_or(0, |v| v.value());
        Ok(LogStats {
            first_offset: blocks.first()?.map_or(next_offset, |(k, _)| k.value()),
            next_offset,
            held_bytes: meta.get(HELD_BYTES)?.map_or(0, |v| v.value()),
            blocks: blocks.len()?,
            file_bytes: self.storage.file_bytes(),
        })
    }

    /// Every stored clock model, `(device, epoch)` → postcard bytes.
    pub fn clocks(&self) -> Result<Vec<StoredClockModel>, LogError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(CLOCKS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            out.push((key.value(), value.value().to_vec()));
        }
        Ok(out)
    }

    /// A processor's last checkpoint: the offset it has read up to and its state.
    pub fn checkpoint(&self, reader: &str) -> Result<Option<(u64, Vec<u8>)>, LogError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let readers = txn.open_table(READERS)?;
        let checkpoints = txn.open_table(CHECKPOINTS)?;
        let offset = readers.get(reader)?.map(|v| v.value());
        let state = checkpoints.get(reader)?.map(|v| v.value().to_vec());
        Ok(offset.zip(state))
    }

    pub fn reader_offset(&self, name: &str) -> Result<Option<u64>, LogError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let readers = txn.open_table(READERS)?;
        Ok(readers.get(name)?.map(|v| v.value()))
    }

    /// Stores a reader's offset (the next offset it will read), fsynced. A forwarder stores
    /// only offsets its destination has acknowledged, so a crash makes it resend, never skip.
    pub fn set_reader_offset(&self, name: &str, offset: u64) -> Result<(), LogError> {
        let db = self.db()?;
        let txn = db.begin_write()?;
        txn.open_table(READERS)?.insert(name, offset)?;
        txn.commit()?;
        Ok(())
    }
}

/// Applies a checkpoint's window state changes.
fn write_window_state(txn: &redb::WriteTransaction, checkpoint: &Checkpoint) -> Result<(), LogError> {
    let mut units = txn.open_table(WINDOW_UNITS)?;
    let mut stored = txn.open_table(WINDOW_STORED)?;
    if checkpoint.reset_window_state {
        units.retain(|_, _| false)?;
        stored.retain(|_, _| false)?;
    }
    for (device, value) in &checkpoint.window_units {
        match value {
            Some(bytes) => units.insert(*device, bytes.as_slice())?,
            None => units.remove(*device)?,
        };
    }
    for (key, value) in &checkpoint.window_stored {
        match value {
            Some(bytes) => stored.insert(key.as_slice(), bytes.as_slice())?,
            None => stored.remove(key.as_slice())?,
        };
    }
    Ok(())
}

/// Window state read from one read transaction.
struct TxnStore<'t> {
    txn: &'t redb::ReadTransaction,
}

impl StateStore for TxnStore<'_> {
    fn unit(&self, device: u64) -> Result<Option<Vec<u8>>, LogError> {
        let table = self.txn.open_table(WINDOW_UNITS)?;
        Ok(table.get(device)?.map(|v| v.value().to_vec()))
    }

    fn stored_window(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        let table = self.txn.open_table(WINDOW_STORED)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    fn stored_windows(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<StoredEntry>, LogError> {
        let table = self.txn.open_table(WINDOW_STORED)?;
        let mut out = Vec::new();
        for entry in table.range(from..to)?.take(limit) {
            let (key, value) = entry?;
            out.push((key.value().to_vec(), value.value().to_vec()));
        }
        Ok(out)
    }
}
