//! Where the log's bytes live: a file for the collector, or storage a caller provides (the
//! simulator's disk, which keeps unsynced writes until a sync and loses them in a crash).
//!
//! redb refuses all work after an I/O error until the database is opened again, so the log
//! keeps its storage, not just a handle, and reopens on it.

use redb::{Builder, Database, DatabaseError};
use std::path::{Path, PathBuf};

/// The bytes under the log's database.
///
/// A new log is created whole or not at all: in a scratch file, closed (redb syncs it), then
/// renamed into place ([`crate::log::Log::open_on`] does this with the three calls below).
/// A crash while redb writes a fresh file's first pages would otherwise leave a file that
/// is not a database yet, which no start could open again.
pub trait LogStorage: std::fmt::Debug + Send + Sync + 'static {
    /// Whether the log's file exists.
    fn exists(&self) -> bool;
    /// Opens the database in the log's file.
    fn open(&self, builder: &Builder) -> Result<Database, DatabaseError>;
    /// Creates a database in a fresh scratch file (any earlier one is discarded).
    fn create_scratch(&self, builder: &Builder) -> Result<Database, DatabaseError>;
    /// Makes the scratch file the log's file, durably (a rename and a directory fsync).
    fn publish_scratch(&self) -> std::io::Result<()>;
    /// Bytes the storage can still grow by; `None` when it cannot say.
    fn available_bytes(&self) -> Option<u64>;
    /// The size of the database's file.
    fn file_bytes(&self) -> u64;
}

/// A file on a file system: the collector's log.
#[derive(Debug)]
pub struct LogPath(pub PathBuf);

impl LogStorage for LogPath {
    fn exists(&self) -> bool {
        self.0.exists()
    }

    fn open(&self, builder: &Builder) -> Result<Database, DatabaseError> {
        builder.create(&self.0)
    }

    fn create_scratch(&self, builder: &Builder) -> Result<Database, DatabaseError> {
        let scratch = self.scratch_path();
        match std::fs::remove_file(&scratch) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error.into()),
            _ => {}
        }
        builder.create(&scratch)
    }

    fn publish_scratch(&self) -> std::io::Result<()> {
        std::fs::rename(self.scratch_path(), &self.0)?;
        let directory = self.0.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::File::open(directory)?.sync_all()
    }

    fn available_bytes(&self) -> Option<u64> {
        let stats = nix::sys::statvfs::statvfs(&self.0).ok()?;
        // Both are u64 here, narrower on 32-bit targets.
        #[allow(clippy::useless_conversion)]
        Some(u64::from(stats.blocks_available()).saturating_mul(u64::from(stats.fragment_size())))
    }

    fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.0).map_or(0, |m| m.len())
    }
}

impl LogPath {
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Where a new log is created before it is renamed into place.
    fn scratch_path(&self) -> PathBuf {
        let mut name = self.0.file_name().unwrap_or_default().to_os_string();
        name.push(".creating");
        self.0.with_file_name(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Log, LogConfig};
    use std::sync::Arc;

    /// A crash while a new log was being created leaves only the scratch file: the next start
    /// discards it and creates the log; a torn file never takes the log's name.
    #[test]
    fn a_log_is_created_whole_and_a_leftover_scratch_file_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        let storage = LogPath(path.clone());
        std::fs::write(storage.scratch_path(), b"torn: not a database yet").unwrap();
        let log = Log::open_on(Arc::new(LogPath(path.clone())), LogConfig::default()).expect("the log is created");
        assert!(path.exists());
        assert!(!storage.scratch_path().exists(), "the scratch file became the log");
        assert_eq!(log.stats().unwrap().next_offset, 0);
        drop(log);
        Log::open(&path, LogConfig::default()).expect("the created log opens again");
    }
}
