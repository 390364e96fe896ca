//! A simulated disk under the agent's real outbox (its [`SegmentStore`]), with the faults
//! of a real one, every choice from the run's seed.
//!
//! - Writes and truncations are visible at once and durable only after a sync of their
//!   file. A crash keeps an arbitrary prefix of the unsynced ones, the last kept one torn at
//!   any byte.
//! - A failed sync leaves what it covered unknown, as on Linux since 4.13: each unsynced
//!   write independently reached the disk, or part of it, or not, and no later sync brings
//!   the rest (reads still see it until a crash).
//! - A removal is durable only at the next directory sync (segment creation, epoch write):
//!   after a crash a removed segment may be back.
//! - Space is bounded: a write that would grow the disk past its capacity fails with
//!   `StorageFull` after writing a random part of what fits. [`SimDisk::fill`] and
//!   [`SimDisk::make_room`] move the capacity.
//! - [`SimDisk::flip_bit`] flips a bit of a stored segment byte, a latent fault.
//!
//! The faults are counted ([`DiskStats`]) so a run shows it exercised them.

use driftlog_agent::outbox::{SegmentStore, StoreFile};
use driftlog_protocol::{Epoch, SplitMix64};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::rc::Rc;

/// Fault rates of one disk.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiskFaults {
    /// Probability that a sync fails (EIO).
    pub sync_failure: f64,
}

/// What the disk did, for a run to prove it exercised each fault.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    pub writes: u64,
    pub syncs: u64,
    pub failed_syncs: u64,
    /// Unsynced writes a failed sync lost in whole or in part.
    pub writes_lost_by_failed_sync: u64,
    pub out_of_space: u64,
    pub crashes: u64,
    /// Crashes that cut an unsynced write part way.
    pub torn_writes: u64,
    /// Unsynced operations a crash lost.
    pub lost_unsynced: u64,
    /// Removed segments a crash brought back.
    pub resurrected: u64,
    pub bit_flips: u64,
    /// Distinct places a crash cut: `(file, operation, where in it)`.
    pub crash_points: BTreeSet<(&'static str, &'static str, u8)>,
}

#[derive(Clone, Debug)]
enum Op {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

impl Op {
    fn apply(&self, data: &mut Vec<u8>) {
        match self {
            Op::Write { offset, bytes } => {
                let end = *offset as usize + bytes.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[*offset as usize..end].copy_from_slice(bytes);
            }
            Op::SetLen(len) => data.resize(*len as usize, 0),
        }
    }

    /// The op cut after `keep` of its bytes (a truncation is all or nothing).
    fn torn(&self, keep: usize) -> Op {
        match self {
            Op::Write { offset, bytes } => Op::Write { offset: *offset, bytes: bytes[..keep].to_vec() },
            Op::SetLen(len) => Op::SetLen(*len),
        }
    }

    fn len(&self) -> usize {
        match self {
            Op::Write { bytes, .. } => bytes.len(),
            Op::SetLen(_) => 1,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct File {
    /// What survives a crash.
    durable: Vec<u8>,
    /// What reads see.
    current: Vec<u8>,
    /// Operations since the last sync, in order.
    pending: Vec<Op>,
}

#[derive(Debug)]
struct State {
    rng: SplitMix64,
    faults: DiskFaults,
    /// Handles of an earlier boot fail: their process is gone.
    boot: u64,
    files: BTreeMap<String, File>,
    /// Files whose directory entry is not durable yet: created (`true`) or removed (`false`,
    /// with the contents a crash brings back).
    entries: BTreeMap<String, (bool, Option<File>)>,
    capacity_bytes: u64,
    stats: DiskStats,
}

impl State {
    fn used_bytes(&self) -> u64 {
        self.files.values().map(|file| file.current.len() as u64).sum()
    }

    /// The directory is synced: created and removed names are durable.
    fn sync_dir(&mut self) {
        self.entries.clear();
    }

    fn file(&mut self, boot: u64, name: &str) -> io::Result<&mut File> {
        if boot != self.boot {
            return Err(io::Error::other("the process that opened this file crashed"));
        }
        self.files.get_mut(name).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

/// One simulated disk, shared by every boot of one agent.
#[derive(Clone, Debug)]
pub struct SimDisk {
    state: Rc<RefCell<State>>,
}

const UNBOUNDED: u64 = u64::MAX / 4;

impl SimDisk {
    pub fn new(seed: u64, faults: DiskFaults) -> SimDisk {
        let state = State {
            rng: SplitMix64::new(seed),
            faults,
            boot: 0,
            files: BTreeMap::new(),
            entries: BTreeMap::new(),
            capacity_bytes: UNBOUNDED,
            stats: DiskStats::default(),
        };
        SimDisk { state: Rc::new(RefCell::new(state)) }
    }

    /// The store of the process booted now (earlier handles fail from here on).
    pub fn store(&self) -> SimStore {
        SimStore { disk: self.clone(), boot: self.state.borrow().boot }
    }

    pub fn stats(&self) -> DiskStats {
        self.state.borrow().stats.clone()
    }

    /// Bytes every file takes, as reads see them.
    pub fn used_bytes(&self) -> u64 {
        self.state.borrow().used_bytes()
    }

    /// The disk fills up: `slack` bytes stay free.
    pub fn fill(&self, slack: u64) {
        let mut state = self.state.borrow_mut();
        state.capacity_bytes = state.used_bytes() + slack;
    }

    /// Room again (another process freed its files).
    pub fn make_room(&self) {
        self.state.borrow_mut().capacity_bytes = UNBOUNDED;
    }

    pub fn is_full(&self) -> bool {
        self.state.borrow().capacity_bytes != UNBOUNDED
    }

    /// Power is cut: every file falls back to its durable contents plus a random prefix of
    /// its unsynced operations, the last kept one torn at a random byte; names not synced
    /// into the directory are lost or come back. Handles of the crashed process fail.
    pub fn crash(&self) {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        state.boot += 1;
        state.stats.crashes += 1;
        for (name, (created, removed)) in std::mem::take(&mut state.entries) {
            match (created, removed) {
                (true, _) => {
                    state.files.remove(&name);
                }
                (false, Some(file)) => {
                    state.stats.resurrected += 1;
                    state.files.insert(name, file);
                }
                (false, None) => {}
            }
        }
        for (name, file) in &mut state.files {
            let pending = std::mem::take(&mut file.pending);
            let kept = state.rng.below_inclusive(pending.len() as u64) as usize;
            let mut data = std::mem::take(&mut file.durable);
            for op in &pending[..kept] {
                op.apply(&mut data);
            }
            if let Some(cut) = pending.get(kept) {
                let keep = state.rng.below_inclusive(cut.len().saturating_sub(1) as u64) as usize;
                let kind = if name.starts_with("seg/") { "segment" } else { "tombstones" };
                let op = if matches!(cut, Op::Write { .. }) { "write" } else { "set_len" };
                state.stats.crash_points.insert((kind, op, offset_class(keep)));
                if keep > 0 {
                    state.stats.torn_writes += 1;
                    cut.torn(keep).apply(&mut data);
                }
                state.stats.lost_unsynced += (pending.len() - kept) as u64;
            }
            file.current = data.clone();
            file.durable = data;
        }
    }

    /// Flips one bit of a stored segment byte (chosen by the seed); false without segments.
    pub fn flip_bit(&self) -> bool {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let candidates: Vec<String> = state
            .files
            .iter()
            .filter(|(name, file)| name.starts_with("seg/") && !file.durable.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        if candidates.is_empty() {
            return false;
        }
        let name = &candidates[state.rng.below_inclusive(candidates.len() as u64 - 1) as usize];
        let file = state.files.get_mut(name).expect("a candidate");
        let at = state.rng.below_inclusive(file.durable.len() as u64 - 1) as usize;
        let bit = 1u8 << state.rng.below_inclusive(7);
        file.durable[at] ^= bit;
        if at < file.current.len() {
            file.current[at] ^= bit;
        }
        state.stats.bit_flips += 1;
        true
    }
}

/// Where in an operation a crash cut it: 0 = nothing kept, then by powers of two of the
/// bytes kept (a 40-byte block header ends inside class 6).
fn offset_class(kept: usize) -> u8 {
    if kept == 0 { 0 } else { (usize::BITS - kept.leading_zeros()) as u8 }
}

/// The outbox's view of a [`SimDisk`] for one boot.
#[derive(Clone, Debug)]
pub struct SimStore {
    disk: SimDisk,
    boot: u64,
}

/// An open file of a [`SimStore`].
#[derive(Debug)]
pub struct SimFile {
    disk: SimDisk,
    boot: u64,
    name: String,
}

fn segment_name(id: u64) -> String {
    format!("seg/{id:016x}")
}

impl SimStore {
    fn state(&self) -> io::Result<std::cell::RefMut<'_, State>> {
        let state = self.disk.state.borrow_mut();
        if state.boot != self.boot {
            return Err(io::Error::other("the process that opened this store crashed"));
        }
        Ok(state)
    }

    fn handle(&self, name: String) -> SimFile {
        SimFile { disk: self.disk.clone(), boot: self.boot, name }
    }
}

impl SegmentStore for SimStore {
    type File = SimFile;

    fn list_segments(&self) -> io::Result<Vec<u64>> {
        let state = self.state()?;
        Ok(state
            .files
            .keys()
            .filter_map(|name| name.strip_prefix("seg/").and_then(|hex| u64::from_str_radix(hex, 16).ok()))
            .collect())
    }

    fn create_segment(&self, id: u64) -> io::Result<SimFile> {
        let name = segment_name(id);
        let mut state = self.state()?;
        if state.files.contains_key(&name) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        state.files.insert(name.clone(), File::default());
        state.sync_dir();
        drop(state);
        Ok(self.handle(name))
    }

    fn open_segment(&self, id: u64) -> io::Result<SimFile> {
        let name = segment_name(id);
        if !self.state()?.files.contains_key(&name) {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(self.handle(name))
    }

    fn remove_segment(&self, id: u64) -> io::Result<()> {
        let name = segment_name(id);
        let mut state = self.state()?;
        let file = state.files.remove(&name).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let restored = File { current: file.durable.clone(), durable: file.durable, pending: Vec::new() };
        match state.entries.remove(&name) {
            // Created and removed since the last directory sync: as if it never was.
            Some((true, _)) => {}
            _ => {
                state.entries.insert(name, (false, Some(restored)));
            }
        }
        Ok(())
    }

    fn open_tombstones(&self) -> io::Result<SimFile> {
        let mut state = self.state()?;
        if !state.files.contains_key("tombstones") {
            state.files.insert("tombstones".into(), File::default());
            state.entries.insert("tombstones".into(), (true, None));
        }
        drop(state);
        Ok(self.handle("tombstones".into()))
    }

    fn read_epoch(&self) -> io::Result<Option<Epoch>> {
        let state = self.state()?;
        Ok(state.files.get("epoch").and_then(|file| file.current.clone().try_into().ok()).map(u64::from_le_bytes))
    }

    fn write_epoch(&self, epoch: Epoch) -> io::Result<()> {
        let mut state = self.state()?;
        let bytes = epoch.to_le_bytes().to_vec();
        state.files.insert("epoch".into(), File { durable: bytes.clone(), current: bytes, pending: Vec::new() });
        state.sync_dir();
        Ok(())
    }

    fn available_bytes(&self) -> Option<u64> {
        let state = self.disk.state.borrow();
        (state.capacity_bytes != UNBOUNDED).then(|| state.capacity_bytes.saturating_sub(state.used_bytes()))
    }

    fn segment_name(&self, id: u64) -> String {
        segment_name(id)
    }
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut State, &str) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.disk.state.borrow_mut();
        state.file(self.boot, &self.name)?;
        f(&mut state, &self.name)
    }

    fn sync(&self) -> io::Result<()> {
        self.with(|state, name| {
            state.stats.syncs += 1;
            let fail = state.rng.unit_f64() < state.faults.sync_failure;
            let file = state.files.get_mut(name).expect("checked");
            let pending = std::mem::take(&mut file.pending);
            if !fail {
                for op in &pending {
                    op.apply(&mut file.durable);
                }
                return Ok(());
            }
            state.stats.failed_syncs += 1;
            for op in &pending {
                // Reached the disk, in part, or not at all; no later sync retries it.
                let keep = match state.rng.below_inclusive(2) {
                    0 => op.len(),
                    1 => state.rng.below_inclusive(op.len() as u64) as usize,
                    _ => 0,
                };
                if keep < op.len() {
                    state.stats.writes_lost_by_failed_sync += 1;
                }
                let file = state.files.get_mut(name).expect("checked");
                if keep > 0 {
                    op.torn(keep).apply(&mut file.durable);
                }
            }
            Err(io::Error::other("simulated fsync failure (EIO)"))
        })
    }
}

impl StoreFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.with(|state, name| Ok(state.files[name].current.len() as u64))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(|state, name| {
            let data = &state.files[name].current;
            let start = (offset as usize).min(data.len());
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            Ok(n)
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(|state, name| {
            state.stats.writes += 1;
            let file_len = state.files[name].current.len() as u64;
            let growth = (offset + buf.len() as u64).saturating_sub(file_len);
            let free = state.capacity_bytes.saturating_sub(state.used_bytes());
            let (bytes, full) = if growth > free {
                // What fits, or a random part of it, is written before the error.
                let fits = (file_len.saturating_sub(offset) + free).min(buf.len() as u64);
                (&buf[..state.rng.below_inclusive(fits) as usize], true)
            } else {
                (buf, false)
            };
            if !bytes.is_empty() {
                let op = Op::Write { offset, bytes: bytes.to_vec() };
                let file = state.files.get_mut(name).expect("checked");
                op.apply(&mut file.current);
                file.pending.push(op);
            }
            if full {
                state.stats.out_of_space += 1;
                return Err(io::Error::new(io::ErrorKind::StorageFull, "simulated disk full (ENOSPC)"));
            }
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|state, name| {
            let file = state.files.get_mut(name).expect("checked");
            let op = Op::SetLen(len);
            op.apply(&mut file.current);
            file.pending.push(op);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk() -> (SimDisk, SimFile) {
        let disk = SimDisk::new(7, DiskFaults { sync_failure: 0.0 });
        let file = disk.store().create_segment(1).unwrap();
        (disk, file)
    }

    #[test]
    fn synced_writes_survive_a_crash_and_unsynced_ones_keep_at_most_a_prefix() {
        for seed in 0..200 {
            let disk = SimDisk::new(seed, DiskFaults { sync_failure: 0.0 });
            let file = disk.store().create_segment(1).unwrap();
            file.write_all_at(b"durable", 0).unwrap();
            file.sync_data().unwrap();
            file.write_all_at(b"-one", 7).unwrap();
            file.write_all_at(b"-two", 11).unwrap();
            disk.crash();
            assert!(file.len().is_err(), "a handle of the crashed process fails");
            let reopened = disk.store().open_segment(1).unwrap();
            let mut buf = vec![0u8; reopened.len().unwrap() as usize];
            reopened.read_exact_at(&mut buf, 0).unwrap();
            assert!(b"durable-one-two".starts_with(&buf) && buf.len() >= 7, "seed {seed}: {buf:?}");
        }
    }

    #[test]
    fn a_full_disk_refuses_growth_but_not_overwrites() {
        let (disk, file) = disk();
        file.write_all_at(&[1; 100], 0).unwrap();
        disk.fill(10);
        assert_eq!(file.write_all_at(&[2; 50], 100).unwrap_err().kind(), io::ErrorKind::StorageFull);
        assert!(disk.used_bytes() <= 110);
        file.write_all_at(&[3; 100], 0).unwrap();
        disk.make_room();
        file.write_all_at(&[2; 50], 200).unwrap();
        assert_eq!(disk.stats().out_of_space, 1);
    }

    #[test]
    fn a_failed_sync_leaves_the_data_visible_but_not_necessarily_durable() {
        let mut lost = 0;
        for seed in 0..100 {
            let disk = SimDisk::new(seed, DiskFaults { sync_failure: 1.0 });
            let file = disk.store().create_segment(1).unwrap();
            file.write_all_at(b"abcd", 0).unwrap();
            assert!(file.sync_data().is_err());
            assert_eq!(file.len().unwrap(), 4, "reads still see the write");
            disk.crash();
            let len = disk.store().open_segment(1).unwrap().len().unwrap();
            lost += u64::from(len < 4);
        }
        assert!(lost > 10 && lost < 90, "lost {lost} of 100");
    }

    #[test]
    fn a_removal_is_durable_only_with_the_directory() {
        let (disk, file) = disk();
        file.write_all_at(b"x", 0).unwrap();
        file.sync_data().unwrap();
        let store = disk.store();
        store.remove_segment(1).unwrap();
        assert!(store.list_segments().unwrap().is_empty());
        disk.crash();
        assert_eq!(disk.store().list_segments().unwrap(), vec![1], "back after the crash");
        let store = disk.store();
        store.remove_segment(1).unwrap();
        store.create_segment(2).unwrap();
        disk.crash();
        assert_eq!(disk.store().list_segments().unwrap(), vec![2]);
    }
}
