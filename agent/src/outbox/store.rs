//! What the outbox needs from storage, as a trait: a real directory ([`super::FileStore`])
//! or a simulated disk (`driftlog-tests`), so the simulator runs the very code that holds
//! the outbox's guarantees.
//!
//! The contract is the one a POSIX file system on Linux gives, and no more:
//! - `write_all_at` and `set_len` are visible to reads at once and durable only after
//!   `sync_data` / `sync_all` on the same file returns `Ok`. A crash before that may keep
//!   any prefix of them, a write torn at any byte.
//! - After a failed sync, what was written since the last successful one is unknown: it
//!   may or may not be on disk after a crash, whatever later syncs return.
//! - `create_segment` and `write_epoch` are durable on return (the directory is synced);
//!   `remove_segment` is not: after a crash a removed segment may be back.
//! - Any write may fail for want of space.

use driftlog_protocol::Epoch;
use std::io;

/// One open file of a [`SegmentStore`]: a segment or the tombstone file.
#[allow(clippy::len_without_is_empty)] // a file length that can fail; emptiness is never asked
pub trait StoreFile {
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Reads at `offset` into `buf`; returns how many bytes it read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, growing the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Cuts (or grows with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes what was written durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// [`StoreFile::sync_data`] plus the file's metadata (`fsync`).
    fn sync_all(&self) -> io::Result<()>;

    /// Fills `buf` from `offset`, or fails with `UnexpectedEof` if the file ends first.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// The outbox's storage: numbered segment files, the tombstone file and the epoch file.
pub trait SegmentStore: std::fmt::Debug {
    type File: StoreFile + std::fmt::Debug;

    /// The segment ids present, ascending.
    fn list_segments(&self) -> io::Result<Vec<u64>>;
    /// Creates segment `id`, which must not exist yet; durably named on return.
    fn create_segment(&self, id: u64) -> io::Result<Self::File>;
    /// Opens an existing segment for reading and writing.
    fn open_segment(&self, id: u64) -> io::Result<Self::File>;
    /// Removes segment `id` (not necessarily durable before the next `create_segment`).
    fn remove_segment(&self, id: u64) -> io::Result<()>;
    /// Opens (creating it empty if need be) the tombstone file.
    fn open_tombstones(&self) -> io::Result<Self::File>;
    /// The boot epoch last written, if any.
    fn read_epoch(&self) -> io::Result<Option<Epoch>>;
    /// Replaces the boot epoch atomically and durably.
    fn write_epoch(&self, epoch: Epoch) -> io::Result<()>;
    /// Bytes the storage has free for the outbox, if it says.
    fn available_bytes(&self) -> Option<u64>;
    /// A name for segment `id` in logs.
    fn segment_name(&self, id: u64) -> String;
}
