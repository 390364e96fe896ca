//! Reading a segment back from the start: every block that checks out, and the damage
//! between them told apart from a torn tail.
//!
//! A crash can only cut the end of what was written since the last sync, so a torn write is
//! always the tail of a file, a prefix of one write (possibly followed by zeros where the
//! file grew). Anything else that does not check out is damage, which costs the blocks it
//! hit and never the ones after it:
//! - bytes that do not check out, followed by a block that does: damage; the scan goes on
//!   from that block (found by trying each offset: a header that decodes, then its checksum);
//! - a block that fails its checksum but checks out with one bit flipped back (see
//!   [`Header::repair`]): damage, and its header says which events it held; a torn write
//!   does not look like that.
//!
//! What remains at the end is a torn tail, cut by the outbox if the segment is the one a
//! crashed process was writing. Damage that mimics one (a whole sector of zeros in the last
//! block of the newest segment) is out of reach of a checksum: nothing records how far that
//! segment was synced.

use super::block::{HEADER_BYTES, Header, MAX_PAYLOAD_BYTES};
use super::store::StoreFile;

/// One thing found, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Found {
    /// A block that checks out, at this offset.
    Block(Header, u64),
    /// Damaged bytes `[offset, end)`, with the header of the damaged block when a single
    /// flipped bit explains the damage (then exactly what it held is known).
    Damage { offset: u64, end: u64, header: Option<Header> },
}

/// What reading a segment from the start found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Blocks of complete commits and damage, in file order.
    pub found: Vec<Found>,
    /// The length up to the end of the last complete commit or damage: what follows is a
    /// torn or uncommitted tail.
    pub readable_len: u64,
    pub file_len: u64,
}

impl Scan {
    /// The blocks that check out, with their offsets.
    pub(super) fn blocks(&self) -> impl Iterator<Item = (&Header, u64)> {
        self.found.iter().filter_map(|found| match found {
            Found::Block(header, offset) => Some((header, *offset)),
            Found::Damage { .. } => None,
        })
    }

    pub(super) fn is_damaged(&self) -> bool {
        self.found.iter().any(|found| matches!(found, Found::Damage { .. }))
    }
}

/// Reads every block of `file`, checking each checksum, past damage to the torn tail if any.
pub(super) fn scan(file: &impl StoreFile) -> std::io::Result<Scan> {
    let file_len = file.len()?;
    let mut window = Window { file, file_len, start: 0, bytes: Vec::new() };
    let mut scan = Scan { file_len, ..Scan::default() };
    // Blocks of a commit whose last block is not read yet.
    let mut pending = Vec::new();
    let mut offset = 0u64;
    while offset < file_len {
        if let Some(header) = window.block_at(offset)? {
            pending.push(Found::Block(header, offset));
            offset += header.block_bytes();
            if header.commit_end {
                scan.found.append(&mut pending);
                scan.readable_len = offset;
            }
            continue;
        }
        let repaired = Header::repair(window.get(offset, HEADER_BYTES + MAX_PAYLOAD_BYTES)?);
        // Past the damaged block if its extent is known (so no forged block inside its
        // payload is ever met), else from the next byte.
        let search_from = repaired.map_or(offset + 1, |header| offset + header.block_bytes());
        let end = match (window.next_block(search_from)?, repaired) {
            (Some(next), _) => next,
            (None, Some(header)) => offset + header.block_bytes(),
            // Nothing checks out after it: a torn tail.
            (None, None) => break,
        };
        // The commit the damage cut into was complete: it is followed by more data, or its
        // block checks out but for one bit.
        scan.found.append(&mut pending);
        scan.found.push(Found::Damage { offset, end, header: repaired });
        scan.readable_len = end;
        offset = end;
    }
    Ok(scan)
}

/// A buffered view of a file for the scan: mostly sequential, with look-ahead.
struct Window<'f, F> {
    file: &'f F,
    file_len: u64,
    start: u64,
    bytes: Vec<u8>,
}

/// What one read fetches at least.
const WINDOW_BYTES: usize = 64 * 1024;

impl<F: StoreFile> Window<'_, F> {
    /// The bytes `[offset, offset + len)`, fewer where the file ends first.
    fn get(&mut self, offset: u64, len: usize) -> std::io::Result<&[u8]> {
        let end = (offset + len as u64).min(self.file_len).max(offset);
        if offset < self.start || end > self.start + self.bytes.len() as u64 {
            let fetch = (len.max(WINDOW_BYTES) as u64).min(self.file_len.saturating_sub(offset)) as usize;
            self.bytes.resize(fetch, 0);
            let read = read_full(self.file, &mut self.bytes, offset)?;
            self.bytes.truncate(read);
            self.start = offset;
        }
        let from = (offset - self.start) as usize;
        let to = ((end - self.start) as usize).min(self.bytes.len());
        Ok(&self.bytes[from..to.max(from)])
    }

    /// The header of the block at `offset` if the whole block is there and checks out.
    fn block_at(&mut self, offset: u64) -> std::io::Result<Option<Header>> {
        let bytes = self.get(offset, HEADER_BYTES)?;
        let Ok(header_bytes) = <[u8; HEADER_BYTES]>::try_from(bytes) else { return Ok(None) };
        let Some(header) = Header::decode(&header_bytes) else { return Ok(None) };
        let block = self.get(offset, header.block_bytes() as usize)?;
        Ok((block.len() as u64 == header.block_bytes() && Header::verify(&header_bytes, &block[HEADER_BYTES..]))
            .then_some(header))
    }

    /// The offset of the first block at or after `from` that checks out.
    fn next_block(&mut self, from: u64) -> std::io::Result<Option<u64>> {
        for offset in from..self.file_len.saturating_sub(HEADER_BYTES as u64 - 1) {
            if self.block_at(offset)?.is_some() {
                return Ok(Some(offset));
            }
        }
        Ok(None)
    }
}

/// Reads into `buf` from `offset` until it is full or the file ends; returns how much.
fn read_full(file: &impl StoreFile, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::super::block::Kind;
    use super::*;
    use std::cell::RefCell;

    /// A file in memory.
    #[derive(Debug, Default)]
    struct Bytes(RefCell<Vec<u8>>);

    impl StoreFile for Bytes {
        fn len(&self) -> std::io::Result<u64> {
            Ok(self.0.borrow().len() as u64)
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
            let data = self.0.borrow();
            let start = (offset as usize).min(data.len());
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            Ok(n)
        }
        fn write_all_at(&self, _: &[u8], _: u64) -> std::io::Result<()> {
            unreachable!("the scan only reads")
        }
        fn set_len(&self, _: u64) -> std::io::Result<()> {
            unreachable!("the scan only reads")
        }
        fn sync_data(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn sync_all(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Five single-block commits of events `10 * i .. 10 * i + 10`; their headers and offsets.
    fn segment() -> (Vec<u8>, Vec<(Header, u64)>) {
        let mut bytes = Vec::new();
        let mut blocks = Vec::new();
        for i in 0..5u64 {
            let payload = vec![i as u8 + 1; 30];
            let header = Header {
                len: 30,
                kind: Kind::Events,
                commit_end: true,
                stream: 0,
                epoch: 1,
                start: 10 * i,
                end: 10 * i + 10,
            };
            blocks.push((header, bytes.len() as u64));
            bytes.extend_from_slice(&header.encode(&payload));
            bytes.extend_from_slice(&payload);
        }
        (bytes, blocks)
    }

    fn scan_of(bytes: Vec<u8>) -> Scan {
        scan(&Bytes(RefCell::new(bytes))).unwrap()
    }

    #[test]
    fn a_torn_tail_ends_the_readable_part() {
        let (bytes, blocks) = segment();
        let (_, last) = blocks[4];
        for tail in [vec![], vec![0u8; 4096], bytes[..55].to_vec()] {
            let mut torn = bytes[..last as usize + 20].to_vec();
            torn.extend_from_slice(&tail);
            let scan = scan_of(torn);
            assert_eq!(scan.readable_len, last);
            assert!(!scan.is_damaged());
            assert_eq!(scan.blocks().count(), 4);
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_damage_and_the_blocks_after_it_still_read() {
        let (bytes, blocks) = segment();
        for (index, &(header, offset)) in blocks.iter().enumerate() {
            for bit in 0..header.block_bytes() * 8 {
                let mut flipped = bytes.clone();
                flipped[(offset + bit / 8) as usize] ^= 1 << (bit % 8);
                let scan = scan_of(flipped);
                let expected: Vec<Found> = blocks
                    .iter()
                    .map(|&(other, at)| match at == offset {
                        true => Found::Damage { offset, end: offset + header.block_bytes(), header: Some(header) },
                        false => Found::Block(other, at),
                    })
                    .collect();
                assert_eq!(scan.found, expected, "block {index}, bit {bit}");
                assert_eq!(scan.readable_len, bytes.len() as u64);
            }
        }
    }

    #[test]
    fn wider_damage_before_readable_blocks_is_damage_without_a_header() {
        let (mut bytes, blocks) = segment();
        let (_, second) = blocks[1];
        let (_, third) = blocks[2];
        bytes[second as usize..third as usize + 3].fill(0);
        let scan = scan_of(bytes);
        assert_eq!(scan.found[1], Found::Damage { offset: second, end: blocks[3].1, header: None });
        assert_eq!(scan.blocks().map(|(header, _)| header.start).collect::<Vec<_>>(), vec![0, 30, 40]);
    }
}
