//! The acceptor's clock models: one per `(device, boot epoch)`, fed by every accepted frame
//! (one-way samples: the frame's send time t2 against its receive time t3) and by the
//! four-timestamp exchanges devices report in heartbeats. Each events record stores the fix
//! in force when it was written, so readers and replays never need the models themselves.
//!
//! Models are persisted with the commit that follows a change (so a restart keeps hours of
//! drift history) and bounded by `clock.max_models`: the least recently used is evicted.

use crate::log::{ClockKey, StoredClockModel};
use driftlog_eventtime::clock::{ClockConfig, ClockFix, ClockModel, Estimate};
use driftlog_protocol::{DeviceId, Epoch};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    model: ClockModel,
    /// Collector time of the last sample, for eviction.
    last_used_unix_us: i64,
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
        if !self.models.contains_key(&key) && self.models.len() >= self.max_models {
            self.evict();
        }
        self.dirty.insert(key);
        let config = &self.config;
        let entry = self
            .models
            .entry(key)
            .or_insert_with(|| Entry { model: ClockModel::new(config), last_used_unix_us: now_unix_us });
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

    /// Changed models to persist with the next commit, and those to delete.
    pub fn take_dirty(&mut self) -> ClockChanges {
        let dirty = std::mem::take(&mut self.dirty);
        let changed = dirty
            .into_iter()
            .filter_map(|key| Some((key, postcard::to_allocvec(self.models.get(&key)?).ok()?)))
            .collect();
        ClockChanges { changed, removed: std::mem::take(&mut self.removed) }
    }

    /// Puts back what a failed commit did not persist.
    pub fn restore_dirty(&mut self, changes: ClockChanges) {
        self.dirty.extend(changes.changed.iter().map(|(key, _)| *key).filter(|key| self.models.contains_key(key)));
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
