//! The outbox on a real directory: `<id>.seg` segment files, `tombstones`, `epoch`.
//!
//! Writes are `pwrite`, syncs are `fdatasync`/`fsync`, and a created or renamed file is made
//! durable by an fsync of the directory.

use super::store::{SegmentStore, StoreFile};
use driftlog_protocol::Epoch;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The outbox directory.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// Opens (or creates) the directory `dir`. An outbox of an earlier version (a redb file
    /// beside it) is refused, so its events are never silently abandoned.
    pub fn open(dir: &Path) -> Result<FileStore, super::OutboxError> {
        let legacy = dir.with_extension("redb");
        if legacy.exists() {
            return Err(super::OutboxError::Legacy(legacy));
        }
        std::fs::create_dir_all(dir)?;
        Ok(FileStore { dir: dir.to_path_buf() })
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016x}.seg"))
    }
}

impl StoreFile for File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }
}

impl SegmentStore for FileStore {
    type File = File;

    fn list_segments(&self) -> io::Result<Vec<u64>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(hex) = name.strip_suffix(".seg")
                && hex.len() == 16
                && let Ok(id) = u64::from_str_radix(hex, 16)
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn create_segment(&self, id: u64) -> io::Result<File> {
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(self.segment_path(id))?;
        sync_dir(&self.dir)?;
        Ok(file)
    }

    fn open_segment(&self, id: u64) -> io::Result<File> {
        std::fs::OpenOptions::new().read(true).write(true).open(self.segment_path(id))
    }

    fn remove_segment(&self, id: u64) -> io::Result<()> {
        std::fs::remove_file(self.segment_path(id))
    }

    fn open_tombstones(&self) -> io::Result<File> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.dir.join("tombstones"))
    }

    fn read_epoch(&self) -> io::Result<Option<Epoch>> {
        match std::fs::read(self.dir.join("epoch")) {
            Ok(bytes) => Ok(bytes.try_into().ok().map(u64::from_le_bytes)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Write, fsync, rename, fsync the directory.
    fn write_epoch(&self, epoch: Epoch) -> io::Result<()> {
        let temporary = self.dir.join("epoch.tmp");
        let file = File::create(&temporary)?;
        FileExt::write_all_at(&file, &epoch.to_le_bytes(), 0)?;
        file.sync_all()?;
        std::fs::rename(&temporary, self.dir.join("epoch"))?;
        sync_dir(&self.dir)
    }

    fn available_bytes(&self) -> Option<u64> {
        let stats = nix::sys::statvfs::statvfs(&self.dir).ok()?;
        // Both are u64 here, narrower on 32-bit targets.
        #[allow(clippy::useless_conversion)]
        Some(u64::from(stats.blocks_available()).saturating_mul(u64::from(stats.fragment_size())))
    }

    fn segment_name(&self, id: u64) -> String {
        self.segment_path(id).display().to_string()
    }
}

/// fsync of a directory, so a file created or renamed in it survives a power cut.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// 64 bits from the OS, for the first epoch of a fresh outbox.
pub(super) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's random source once per process.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish()
}
