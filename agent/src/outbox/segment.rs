//! Segment files: append-only sequences of blocks, named by a counter (`<id>.seg`).
//!
//! Only the newest segment of a process is written; every other one is read-only. A commit
//! never spans two segments, so after a crash only the last segment can end in a torn or
//! uncommitted tail, which [`scan`] finds and the outbox truncates.

use super::block::{HEADER_BYTES, Header, Kind, MAX_PAYLOAD_BYTES};
use super::store::StoreFile;
use driftlog_protocol::{Epoch, Seq, StreamId};
use std::collections::BTreeMap;
use std::io::{BufReader, Read};

/// Blocks per segment at most, which bounds the block index the outbox keeps for a segment
/// it reads (about 40 bytes a block).
pub(super) const MAX_SEGMENT_BLOCKS: u32 = 4096;

/// Where one event block lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BlockRef {
    pub offset: u64,
    pub len: u32,
    pub start: Seq,
    pub end: Seq,
}

/// The event blocks of one segment by `(stream, epoch)`, each list in sequence order.
#[derive(Clone, Debug, Default)]
pub(super) struct BlockIndex {
    by_stream: BTreeMap<(StreamId, Epoch), Vec<BlockRef>>,
}

impl BlockIndex {
    pub(super) fn push(&mut self, stream: StreamId, epoch: Epoch, block: BlockRef) {
        self.by_stream.entry((stream, epoch)).or_default().push(block);
    }

    /// The block holding `seq`, and the block after it in the same stream (if any).
    pub(super) fn find(&self, stream: StreamId, epoch: Epoch, seq: Seq) -> Option<BlockRef> {
        let blocks = self.by_stream.get(&(stream, epoch))?;
        let at = blocks.partition_point(|block| block.end <= seq);
        blocks.get(at).filter(|block| block.start <= seq).copied()
    }
}

/// What reading a segment from the start found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Valid blocks up to the last complete commit: header and offset.
    pub blocks: Vec<(Header, u64)>,
    /// The length up to the end of the last complete commit.
    pub committed_len: u64,
    /// The file was longer than that (a torn or uncommitted tail, or corruption).
    pub file_len: u64,
}

/// Reads every block header (checking each block's checksum) until the end or the first
/// block that does not check out.
pub(super) fn scan(file: &impl StoreFile) -> std::io::Result<Scan> {
    let file_len = file.len()?;
    let mut reader = BufReader::with_capacity(64 * 1024, Cursor { file, offset: 0 });
    let mut scan = Scan { file_len, ..Scan::default() };
    let mut pending = Vec::new();
    let mut offset = 0u64;
    let mut payload = vec![0u8; MAX_PAYLOAD_BYTES];
    loop {
        let mut header_bytes = [0u8; HEADER_BYTES];
        if read_full(&mut reader, &mut header_bytes)? < HEADER_BYTES {
            break;
        }
        let Some(header) = Header::decode(&header_bytes) else { break };
        let payload = &mut payload[..header.len as usize];
        if read_full(&mut reader, payload)? < payload.len() || !Header::verify(&header_bytes, payload) {
            break;
        }
        pending.push((header, offset));
        offset += header.block_bytes();
        if header.commit_end {
            scan.blocks.append(&mut pending);
            scan.committed_len = offset;
        }
    }
    Ok(scan)
}

/// Like `read_exact`, but returns how much it read instead of failing at end of file.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// A [`StoreFile`] read from the start, for [`BufReader`].
struct Cursor<'f, F> {
    file: &'f F,
    offset: u64,
}

impl<F: StoreFile> Read for Cursor<'_, F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// The block index of a scanned segment.
pub(super) fn index_of(scan: &Scan) -> BlockIndex {
    let mut index = BlockIndex::default();
    for (header, offset) in &scan.blocks {
        if header.kind == Kind::Events {
            let block = BlockRef { offset: *offset, len: header.len, start: header.start, end: header.end };
            index.push(header.stream, header.epoch, block);
        }
    }
    index
}
