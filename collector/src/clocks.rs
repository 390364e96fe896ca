//! The acceptor's clock models: one per `(device, boot epoch)`, fed by every accepted frame
//! (one-way samples: the frame's send time t2 against its receive time t3) and by the
//! four-timestamp exchanges devices report in heartbeats. Each events record stores the fix
//! in force when it was written, so readers and replays never need the models themselves.
//!
//! Changed models are persisted with a commit at most every [`PERSIST_INTERVAL_US`] each (a
//! model is kilobytes and a busy device changes it with every frame; a crash forgets at most
//! that much of its samples, which only makes the next fixes slightly looser), so a restart
//! keeps hours of drift history. Bounded by `clock.max_models`: the least recently used is
//! evicted.

use crate::log::{ClockKey, StoredClockModel};
use driftlog_eventtime::clock::{ClockConfig, ClockFix, ClockModel, Estimate};
use driftlog_protocol::{DeviceId, Epoch};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How often one model is written to the log at most (collector time).
pub const PERSIST_INTERVAL_US: i64 = 10_000_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    model: ClockModel,
    /// Collector time of the last sample, for eviction.
    last_used_unix_us: i64,
    /// Collector time of the last write to the log.
    #[serde(default)]
    persisted_unix_us: i64,
    /// Whether the key is in `Clocks::dirty` (so a sample costs no set insert).
    #[serde(skip)]
    dirty: bool,
}

/// Clock models to write and to delete with a commit.
#[derive(Clone, Debug, Default)]
pub struct ClockChanges {
    pub changed: Vec<StoredClockModel>,
    pub removed: Vec<ClockKey>,
}

#[derive(Debug)]
pub struct Clocks {
    config: ClockConfig,
    max_models: usize,
    models: BTreeMap<(DeviceId, Epoch), Entry>,
    dirty: BTreeSet<(DeviceId, Epoch)>,
    removed: Vec<(DeviceId, Epoch)>,
    pub samples_rejected: u64,
    pub models_evicted: u64,
}

impl Clocks {
    pub fn new(config: ClockConfig, max_models: usize) -> Clocks {
        Clocks {
            config,
            max_models: max_models.max(1),
            models: BTreeMap::new(),
            dirty: BTreeSet::new(),
            removed: Vec::new(),
            samples_rejected: 0,
            models_evicted: 0,
        }
    }

    /// Loads persisted models (from [`crate::log::Log::clocks`]); unreadable ones are skipped
    /// (the device's next frames rebuild them), the oldest beyond the bound are dropped.
    pub fn restore(&mut self, stored: Vec<StoredClockModel>) -> usize {
        for (key, bytes) in stored {
            match postcard::from_bytes::<Entry>(&bytes) {
                Ok(entry) => {
                    self.models.insert(key, entry);
                }
                Err(_) => self.removed.push(key),
            }
        }
        while self.models.len() > self.max_models {
            self.evict();
        }
        self.models.len()
    }

    fn entry(&mut self, device: DeviceId, epoch: Epoch, now_unix_us: i64) -> &mut Entry {
        let key = (device, epoch);
        if self.models.len() >= self.max_models && !self.models.contains_key(&key) {
            self.evict();
        }
        let config = &self.config;
        let entry = self.models.entry(key).or_insert_with(|| Entry {
            model: ClockModel::new(config),
            last_used_unix_us: now_unix_us,
            persisted_unix_us: 0,
            dirty: false,
        });
        if !entry.dirty {
            entry.dirty = true;
            self.dirty.insert(key);
        }
        entry.last_used_unix_us = entry.last_used_unix_us.max(now_unix_us);
        entry
    }

    fn evict(&mut self) {
        let oldest = self.models.iter().min_by_key(|(_, e)| e.last_used_unix_us).map(|(k, _)| *k);
        if let Some(key) = oldest {
            self.models.remove(&key);
            self.dirty.remove(&key);
            self.removed.push(key);
            self.models_evicted += 1;
        }
    }

    /// A frame of boot `epoch` sealed at device time `sent_us` arrived at `received_unix_us`.
    pub fn handle_frame(&mut self, device: DeviceId, epoch: Epoch, sent_us: u64, received_unix_us: i64) {
        let config = self.config.clone();
        self.entry(device, epoch, received_unix_us).model.handle_batch(&config, sent_us, received_unix_us);
    }

    /// A completed four-timestamp exchange reported in a heartbeat.
    pub fn handle_exchange(
        &mut self,
        device: DeviceId,
        epoch: Epoch,
        times: (u64, i64, i64, u64),
        received_unix_us: i64,
    ) {
        let config = self.config.clone();
        let (t1, t2, t3, t4) = times;
        if self.entry(device, epoch, received_unix_us).model.handle_exchange(&config, t1, t2, t3, t4).is_err() {
            self.samples_rejected += 1;
        }
    }

    /// The fix for events of `(device, epoch)`, if a model exists.
    pub fn fix(&self, device: DeviceId, epoch: Epoch) -> Option<ClockFix> {
        self.models.get(&(device, epoch)).map(|e| e.model.fix())
    }

    /// Changed models due for a write (see [`PERSIST_INTERVAL_US`]), and those to delete.
    /// `shutting_down` takes every changed model.
    pub fn take_dirty(&mut self, now_unix_us: i64, shutting_down: bool) -> ClockChanges {
        let mut changed = Vec::new();
        let models = &mut self.models;
        self.dirty.retain(|key| {
            let Some(entry) = models.get_mut(key) else { return false };
            if !shutting_down && now_unix_us.saturating_sub(entry.persisted_unix_us) < PERSIST_INTERVAL_US {
                return true; // Stays dirty for a later commit.
            }
            entry.persisted_unix_us = now_unix_us;
            entry.dirty = false;
            if let Ok(bytes) = postcard::to_allocvec(&*entry) {
                changed.push((*key, bytes));
            }
            false
        });
        ClockChanges { changed, removed: std::mem::take(&mut self.removed) }
    }

    /// Puts back what a failed commit did not persist.
    pub fn restore_dirty(&mut self, changes: ClockChanges) {
        for (key, _) in &changes.changed {
            if let Some(entry) = self.models.get_mut(key) {
                entry.persisted_unix_us = 0;
                entry.dirty = true;
                self.dirty.insert(*key);
            }
        }
        self.removed.extend(changes.removed);
    }

    /// Each device's newest-epoch estimate, for metrics.
    pub fn estimates(&self) -> BTreeMap<DeviceId, Estimate> {
        let mut out = BTreeMap::new();
        // Keys are ordered by (device, epoch): the last entry per device wins.
        for ((device, _), entry) in &self.models {
            out.insert(*device, entry.model.estimate());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_written_at_most_every_interval_and_all_at_shutdown() {
        let mut clocks = Clocks::new(ClockConfig::default(), 2);
        let t0 = 1_795_000_000_000_000;
        clocks.handle_frame(7, 1, 1_000_000, t0);
        assert_eq!(clocks.take_dirty(t0, false).changed.len(), 1);
        clocks.handle_frame(7, 1, 2_000_000, t0 + 1_000_000);
        assert!(clocks.take_dirty(t0 + 1_000_000, false).changed.is_empty(), "written 1 s ago");
        assert_eq!(clocks.take_dirty(t0 + 2_000_000, true).changed.len(), 1, "shutdown takes everything");
        clocks.handle_frame(7, 1, 3_000_000, t0 + 3_000_000);
        let due = clocks.take_dirty(t0 + 2_000_000 + PERSIST_INTERVAL_US, false);
        assert_eq!(due.changed.len(), 1);
        // A failed commit puts the models back, due at once.
        clocks.restore_dirty(due);
        assert_eq!(clocks.take_dirty(t0 + 2_000_001 + PERSIST_INTERVAL_US, false).changed.len(), 1);
        // The bound evicts the least recently used model and deletes it from the log.
        clocks.handle_frame(8, 1, 1_000_000, t0 + 4_000_000);
        clocks.handle_frame(9, 1, 1_000_000, t0 + 5_000_000);
        assert!(clocks.fix(7, 1).is_none());
        assert_eq!(clocks.models_evicted, 1);
        let changes = clocks.take_dirty(t0 + 5_000_000, false);
        assert_eq!(changes.removed, vec![(7, 1)]);
        // Stored models come back.
        let stored = changes.changed;
        let mut restored = Clocks::new(ClockConfig::default(), 2);
        assert_eq!(restored.restore(stored), 2);
        assert_eq!(restored.fix(9, 1), clocks.fix(9, 1));
    }
}
