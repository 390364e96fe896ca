//! A simulated disk under the collector's log: the real redb database, on bytes that behave
//! like a file on Linux.
//!
//! - Writes and length changes are visible at once but durable only after `sync_data`.
//! - A crash keeps an arbitrary prefix of the unsynced operations, the last kept write torn
//!   at any byte, and loses the rest. A crash can also be set to strike inside a commit:
//!   after a given number of operations, that operation and every later one fail, and the
//!   database cannot be opened again until the collector restarts.
//! - A failed `sync_data` leaves the unsynced data unknown, as on Linux after a failed
//!   fsync: each unsynced operation is kept, torn or lost, and reads then see what is on
//!   the disk.
//! - A full disk refuses to grow the file past its capacity.
//! - A new log is created in a scratch file and renamed into place once complete, as the
//!   collector does (see [`LogStorage::create_scratch`]): a crash before the rename leaves
//!   no log, never a torn one.
//!
//! Every choice comes from the disk's own seeded generator; every fault is counted, and
//! each crash inside a commit is recorded as a crash point (operation kind, position).

use driftlog_collector::log::storage::LogStorage;
use driftlog_protocol::SplitMix64;
use redb::{Builder, Database, DatabaseError, StorageBackend};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

/// What a run did to the log's disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogDiskStats {
    pub syncs: u64,
    pub failed_syncs: u64,
    pub crashes: u64,
    /// Crashes that found unsynced operations (some lost, the last kept one torn).
    pub crashes_losing_writes: u64,
    /// Refused growths of the file on a full disk.
    pub out_of_space: u64,
    /// Distinct crash points inside commits: `(operation, its index since the last sync)`.
    pub crash_points: BTreeSet<(Operation, u32)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Write,
    SetLen,
    Sync,
}

#[derive(Clone, Debug)]
enum Unsynced {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

/// One file's bytes.
#[derive(Debug, Default)]
struct File {
    /// What survives a crash.
    durable: Vec<u8>,
    /// What reads see: the durable bytes with the unsynced operations applied.
    visible: Vec<u8>,
    unsynced: Vec<Unsynced>,
}

/// The log's file, and the scratch file a new log is created in (see
/// [`LogStorage::create_scratch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Log,
    Scratch,
}

#[derive(Debug)]
struct State {
    log: File,
    /// False until a created log is published (renamed into place, the directory synced).
    log_exists: bool,
    scratch: File,
    /// Operations since the last sync (a crash point's position).
    since_sync: u32,
    /// Bumped by a crash: handles of the process that crashed fail from then on.
    generation: u64,
    /// A crash has struck and the collector has not restarted yet.
    down: bool,
    /// Strike a crash at this operation (counted down).
    crash_in: Option<u32>,
    capacity: Option<u64>,
    sync_failure: f64,
    rng: SplitMix64,
    stats: LogDiskStats,
}

/// The disk, shared by the simulated collector and the handles redb opens on it.
#[derive(Clone, Debug)]
pub struct SimLogDisk {
    state: Arc<Mutex<State>>,
}

impl SimLogDisk {
    pub fn new(seed: u64, sync_failure: f64) -> SimLogDisk {
        let state = State {
            log: File::default(),
            log_exists: false,
            scratch: File::default(),
            since_sync: 0,
            generation: 0,
            down: false,
            crash_in: None,
            capacity: None,
            sync_failure,
            rng: SplitMix64::new(seed),
            stats: LogDiskStats::default(),
        };
        SimLogDisk { state: Arc::new(Mutex::new(state)) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn stats(&self) -> LogDiskStats {
        self.lock().stats.clone()
    }

    /// The process crashes now (if a crash struck inside a commit, it already has).
    pub fn crash(&self) {
        let mut state = self.lock();
        if !state.down {
            state.strike();
        }
    }

    /// A crash strikes at the `operations`-th operation from now (0: the next one).
    pub fn crash_after(&self, operations: u32) {
        self.lock().crash_in = Some(operations);
    }

    /// Whether a crash has struck and the collector is down.
    pub fn is_down(&self) -> bool {
        self.lock().down
    }

    /// The collector starts again on what the crash left.
    pub fn restart(&self) {
        let mut state = self.lock();
        state.down = false;
        state.crash_in = None;
    }

    /// The file system fills: the file may grow by at most `room` more bytes.
    pub fn fill(&self, room: u64) {
        let mut state = self.lock();
        state.capacity = Some(state.used_bytes() + room);
    }

    pub fn make_room(&self) {
        self.lock().capacity = None;
    }

    /// From now on each fsync fails with this chance.
    pub fn set_sync_failure(&self, chance: f64) {
        self.lock().sync_failure = chance;
    }
}

impl File {
    /// Keeps a prefix of the unsynced operations, the last kept write torn; reports whether
    /// any were unsynced.
    fn crash(&mut self, rng: &mut SplitMix64) -> bool {
        let lost = !self.unsynced.is_empty();
        let kept = rng.below_inclusive(self.unsynced.len() as u64) as usize;
        let mut unsynced = std::mem::take(&mut self.unsynced);
        unsynced.truncate(kept);
        if let Some(Unsynced::Write { bytes, .. }) = unsynced.last_mut() {
            let torn = rng.below_inclusive(bytes.len() as u64) as usize;
            bytes.truncate(torn);
        }
        for operation in &unsynced {
            apply(&mut self.durable, operation);
        }
        self.visible = self.durable.clone();
        lost
    }

    /// A failed fsync: each unsynced operation kept, torn or lost (the page cache may have
    /// written some of it); reads then see what is on the disk.
    fn lose_unsynced(&mut self, rng: &mut SplitMix64) {
        for mut operation in std::mem::take(&mut self.unsynced) {
            match rng.below_inclusive(2) {
                0 => continue,
                1 => {
                    if let Unsynced::Write { bytes, .. } = &mut operation {
                        let torn = rng.below_inclusive(bytes.len() as u64) as usize;
                        bytes.truncate(torn);
                    }
                }
                _ => {}
            }
            apply(&mut self.durable, &operation);
        }
        self.visible = self.durable.clone();
    }

    fn sync(&mut self) {
        for operation in std::mem::take(&mut self.unsynced) {
            apply(&mut self.durable, &operation);
        }
    }
}

impl State {
    fn file(&mut self, which: Which) -> &mut File {
        match which {
            Which::Log => &mut self.log,
            Which::Scratch => &mut self.scratch,
        }
    }

    fn used_bytes(&self) -> u64 {
        (self.log.visible.len() + self.scratch.visible.len()) as u64
    }

    /// Every file keeps a prefix of its unsynced operations, the last kept write torn; every
    /// open handle fails from now on.
    fn strike(&mut self) {
        self.stats.crashes += 1;
        let lost = self.log.crash(&mut self.rng) | self.scratch.crash(&mut self.rng);
        if lost {
            self.stats.crashes_losing_writes += 1;
        }
        self.since_sync = 0;
        self.generation += 1;
        self.down = true;
        self.crash_in = None;
    }

    /// Counts an operation towards a crash set to strike inside a commit.
    fn operation(&mut self, generation: u64, operation: Operation) -> std::io::Result<()> {
        if self.down || generation != self.generation {
            return Err(std::io::Error::other("the simulated collector has crashed"));
        }
        if let Some(left) = self.crash_in {
            if left == 0 {
                self.stats.crash_points.insert((operation, self.since_sync));
                self.strike();
                return Err(std::io::Error::other("the simulated collector crashed here"));
            }
            self.crash_in = Some(left - 1);
        }
        self.since_sync += 1;
        Ok(())
    }

    fn sync(&mut self, generation: u64, which: Which) -> std::io::Result<()> {
        self.operation(generation, Operation::Sync)?;
        self.stats.syncs += 1;
        self.since_sync = 0;
        if self.sync_failure > 0.0 && self.rng.unit_f64() < self.sync_failure {
            self.stats.failed_syncs += 1;
            let mut rng = SplitMix64::new(self.rng.next_u64());
            self.file(which).lose_unsynced(&mut rng);
            return Err(std::io::Error::other("simulated fsync failure"));
        }
        self.file(which).sync();
        Ok(())
    }
}

fn apply(file: &mut Vec<u8>, operation: &Unsynced) {
    match operation {
        Unsynced::Write { offset, bytes } => {
            let end = *offset as usize + bytes.len();
            if file.len() < end {
                file.resize(end, 0);
            }
            file[*offset as usize..end].copy_from_slice(bytes);
        }
        Unsynced::SetLen(len) => file.resize(*len as usize, 0),
    }
}

impl SimLogDisk {
    fn handle(&self, which: Which) -> Result<Handle, DatabaseError> {
        let state = self.lock();
        if state.down {
            return Err(DatabaseError::Storage(redb::StorageError::Io(std::io::Error::other(
                "the simulated collector has crashed",
            ))));
        }
        Ok(Handle { disk: self.clone(), generation: state.generation, which })
    }
}

impl LogStorage for SimLogDisk {
    fn exists(&self) -> bool {
        self.lock().log_exists
    }

    fn open(&self, builder: &Builder) -> Result<Database, DatabaseError> {
        builder.create_with_backend(self.handle(Which::Log)?)
    }

    fn create_scratch(&self, builder: &Builder) -> Result<Database, DatabaseError> {
        let handle = self.handle(Which::Scratch)?;
        self.lock().scratch = File::default();
        builder.create_with_backend(handle)
    }

    fn publish_scratch(&self) -> std::io::Result<()> {
        let mut state = self.lock();
        let generation = state.generation;
        state.operation(generation, Operation::Sync)?;
        // A rename and a directory fsync: the scratch file's synced bytes become the log.
        let scratch = std::mem::take(&mut state.scratch);
        state.log = File { visible: scratch.durable.clone(), durable: scratch.durable, unsynced: Vec::new() };
        state.log_exists = true;
        Ok(())
    }

    fn available_bytes(&self) -> Option<u64> {
        let state = self.lock();
        state.capacity.map(|capacity| capacity.saturating_sub(state.used_bytes()))
    }

    fn file_bytes(&self) -> u64 {
        self.lock().log.visible.len() as u64
    }
}

/// One open database's view of one file on the disk.
#[derive(Debug)]
struct Handle {
    disk: SimLogDisk,
    generation: u64,
    which: Which,
}

impl StorageBackend for Handle {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.disk.lock().file(self.which).visible.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let mut state = self.disk.lock();
        if state.down || state.generation != self.generation {
            return Err(std::io::Error::other("the simulated collector has crashed"));
        }
        let end = offset as usize + out.len();
        let bytes = state.file(self.which).visible.get(offset as usize..end).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end of the simulated file")
        })?;
        out.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut state = self.disk.lock();
        state.operation(self.generation, Operation::SetLen)?;
        let current = state.file(self.which).visible.len() as u64;
        if len > current && state.capacity.is_some_and(|capacity| state.used_bytes() + (len - current) > capacity) {
            state.stats.out_of_space += 1;
            return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
        }
        let operation = Unsynced::SetLen(len);
        let file = state.file(self.which);
        apply(&mut file.visible, &operation);
        file.unsynced.push(operation);
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.disk.lock().sync(self.generation, self.which)
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut state = self.disk.lock();
        state.operation(self.generation, Operation::Write)?;
        let end = offset + data.len() as u64;
        let current = state.file(self.which).visible.len() as u64;
        if end > current && state.capacity.is_some_and(|capacity| state.used_bytes() + (end - current) > capacity) {
            state.stats.out_of_space += 1;
            return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
        }
        let operation = Unsynced::Write { offset, bytes: data.to_vec() };
        let file = state.file(self.which);
        apply(&mut file.visible, &operation);
        file.unsynced.push(operation);
        Ok(())
    }
}
