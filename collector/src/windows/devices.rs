//! The per-device half of the window pipeline: every device's [`Unit`] (its completeness,
//! its watermark, its per-device windows and its event-time StatsD windows), in memory while
//! the device is active and in the log's file otherwise, and the index of every device known
//! (when it was last heard from, whether it has open windows), which orders time-outs.
//! `|T` StatsD sources have units here too, under ids from [`SOURCE_IDS`] up.
//!
//! Where a unit lives never changes what it computes: a unit read back is the unit that was
//! written (postcard of plain data), and nothing here depends on another unit. So eviction can
//! follow memory pressure and processing time freely; outputs and replays stay identical.

use super::statsd::StatsdWindows;
use super::store::{Pending, StateStore};
use crate::id_hash::IdMap;
use crate::log::LogError;
use driftlog_eventtime::window::{DeviceWindows, Ticks, WindowSpec};
use driftlog_protocol::DeviceId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::collections::hash_map::Entry;

/// Units of `|T` StatsD sources have ids from here up (device ids this high are reserved).
pub const SOURCE_IDS: DeviceId = 1 << 63;

/// Everything the pipeline keeps for one device (or `|T` source), stored as one value.
#[derive(Debug, Serialize, Deserialize)]
pub struct Unit {
    pub windows: DeviceWindows,
    pub statsd: StatsdWindows,
}

impl Unit {
    fn new(windows: &[(String, WindowSpec)]) -> Unit {
        Unit { windows: DeviceWindows::new(windows), statsd: StatsdWindows::default() }
    }

    /// Whether a window has not fired yet: what a time-out would close.
    pub fn has_unfired(&self) -> bool {
        self.windows.has_unfired() || self.statsd.has_unfired()
    }
}

/// What the index keeps of every device (checkpointed with the pipeline's header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Processing time of the device's last record.
    pub last_heard: Ticks,
    /// Processing time when the device's watermark last moved (or it was first heard): a
    /// device whose completeness stops, offline or stuck behind a gap it never fills, has its
    /// open windows closed `max_outage` after this.
    pub last_progress: Ticks,
    /// Whether it has per-device windows that have not fired (so a time-out is due for it).
    pub open: bool,
}

/// Memory a unit is taken to use per byte of its encoding (maps, strings, sketches).
const MEMORY_PER_ENCODED_BYTE: usize = 4;
/// What a unit not encoded yet is taken to use.
const NEW_UNIT_BYTES: usize = 2_048;

#[derive(Debug)]
struct Resident {
    unit: Unit,
    dirty: bool,
    /// When it was last used (a counter), for least-recently-used eviction.
    touched: u64,
    bytes: usize,
}

/// Counters of where units moved; not checkpointed (they depend on memory, not on the log).
#[derive(Clone, Copy, Debug, Default)]
pub struct Residency {
    pub loaded: u64,
    pub evicted: u64,
    /// Stored units that did not decode; the device starts afresh (counted, never a panic).
    pub unreadable: u64,
}

/// Every device's record costs one index update; the ordered sets below are kept lazily (an
/// entry may be older than the index says, and is fixed when it comes up), so that a record
/// does not pay for reordering them.
#[derive(Debug, Default)]
pub struct Devices {
    index: IdMap<DeviceId, IndexEntry>,
    /// Devices with open windows.
    open: usize,
    /// `(deadline, device)`: an entry for each device with open windows, at or before its
    /// deadline (`last_progress + max_outage`).
    deadlines: BTreeSet<(Ticks, DeviceId)>,
    /// `(last_heard, device)`: an entry for each device, at or before it was last heard.
    heard: BTreeSet<(Ticks, DeviceId)>,
    resident: IdMap<DeviceId, Resident>,
    touches: u64,
    resident_bytes: usize,
    max_outage: Ticks,
    pub residency: Residency,
}

impl Devices {
    pub fn new(index: Vec<(DeviceId, IndexEntry)>, max_outage: Ticks) -> Devices {
        let mut devices = Devices { max_outage, ..Devices::default() };
        for (device, entry) in &index {
            devices.heard.insert((entry.last_heard, *device));
            if entry.open {
                devices.open += 1;
                devices.deadlines.insert((entry.last_progress.saturating_add(max_outage), *device));
            }
        }
        devices.index = index.into_iter().collect();
        devices
    }

    /// The index in device order, as checkpoints store it.
    pub fn index(&self) -> Vec<(DeviceId, IndexEntry)> {
        let mut index: Vec<(DeviceId, IndexEntry)> = self.index.iter().map(|(d, e)| (*d, *e)).collect();
        index.sort_unstable_by_key(|(device, _)| *device);
        index
    }

    pub fn known(&self) -> usize {
        self.index.len()
    }

    pub fn with_open_windows(&self) -> usize {
        self.open
    }

    pub fn resident(&self) -> usize {
        self.resident.len()
    }

    pub fn resident_bytes(&self) -> usize {
        self.resident_bytes
    }

    /// The device's unit, loaded if it is not in memory (a new one if it was never stored),
    /// its windows made to match `windows`. Marked changed: it is written at the next
    /// checkpoint.
    pub fn unit(
        &mut self,
        device: DeviceId,
        windows: &[(String, WindowSpec)],
        pending: &Pending,
        store: &dyn StateStore,
    ) -> Result<&mut Unit, LogError> {
        self.touches += 1;
        let resident = match self.resident.entry(device) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let (unit, bytes) = load(device, windows, pending, store, &mut self.residency)?;
                self.resident_bytes += bytes;
                entry.insert(Resident { unit, dirty: true, touched: 0, bytes })
            }
        };
        resident.touched = self.touches;
        resident.dirty = true;
        Ok(&mut resident.unit)
    }

    /// A resident unit, if the device's is in memory (after [`Self::unit`]).
    pub fn resident_unit(&self, device: DeviceId) -> Option<&Unit> {
        self.resident.get(&device).map(|r| &r.unit)
    }

    /// Notes that the device was heard from at `now` (and whether its watermark moved), and
    /// whether it has windows open.
    pub fn heard(&mut self, device: DeviceId, now: Ticks, progressed: bool) {
        let open = self.resident.get(&device).is_some_and(|r| r.unit.has_unfired());
        let max_outage = self.max_outage;
        match self.index.entry(device) {
            Entry::Occupied(mut entry) => {
                let entry = entry.get_mut();
                entry.last_heard = entry.last_heard.max(now);
                if progressed {
                    entry.last_progress = entry.last_progress.max(now);
                }
                if open && !entry.open {
                    self.open += 1;
                    // Windows opening anew count their outage from now.
                    entry.last_progress = entry.last_progress.max(now);
                    self.deadlines.insert((entry.last_progress.saturating_add(max_outage), device));
                } else if !open && entry.open {
                    self.open -= 1;
                }
                entry.open = open;
            }
            Entry::Vacant(entry) => {
                entry.insert(IndexEntry { last_heard: now, last_progress: now, open });
                self.heard.insert((now, device));
                if open {
                    self.open += 1;
                    self.deadlines.insert((now.saturating_add(max_outage), device));
                }
            }
        }
    }

    /// Updates whether the device has open windows (after a time-out), keeping when it was
    /// last heard from.
    pub fn refresh_open(&mut self, device: DeviceId) {
        let Some(last_heard) = self.index.get(&device).map(|e| e.last_heard) else { return };
        self.heard(device, last_heard, false);
    }

    /// Devices whose maximum outage passed at `now` with windows open, in deadline order.
    pub fn timed_out(&mut self, now: Ticks) -> Vec<DeviceId> {
        let mut due = Vec::new();
        while let Some(&(deadline, device)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(entry) = self.index.get(&device) else { continue };
            if !entry.open {
                continue;
            }
            let actual = entry.last_progress.saturating_add(self.max_outage);
            if actual > now {
                self.deadlines.insert((actual, device));
            } else {
                due.push(device);
            }
        }
        due
    }

    /// Forgets devices beyond `max_devices`, least recently heard first, skipping those with
    /// open windows (they time out first). Returns the forgotten ones.
    pub fn enforce_bound(&mut self, max_devices: usize, pending: &mut Pending) -> Vec<DeviceId> {
        let mut forgotten = Vec::new();
        if self.index.len() <= max_devices {
            return forgotten;
        }
        let mut skipped = Vec::new();
        while self.index.len() > max_devices {
            let Some((heard, device)) = self.heard.pop_first() else { break };
            let Some(entry) = self.index.get(&device).copied() else { continue };
            if entry.last_heard > heard || entry.open {
                // Heard since (or waiting for a time-out): keep it, in its place.
                skipped.push((entry.last_heard, device));
                continue;
            }
            self.forget(device, pending);
            forgotten.push(device);
        }
        self.heard.extend(skipped);
        forgotten
    }

    /// Forgets a device (or source) and deletes its stored unit.
    pub fn forget(&mut self, device: DeviceId, pending: &mut Pending) {
        // The ordered sets are lazy: their entries for a device no longer indexed are skipped.
        if self.index.remove(&device).is_some_and(|entry| entry.open) {
            self.open -= 1;
        }
        if let Some(resident) = self.resident.remove(&device) {
            self.resident_bytes = self.resident_bytes.saturating_sub(resident.bytes);
        }
        pending.units.insert(device, None);
    }

    /// Writes every changed unit into `pending`.
    pub fn flush(&mut self, pending: &mut Pending) {
        for (device, resident) in &mut self.resident {
            if resident.dirty {
                write(*device, resident, pending, &mut self.resident_bytes);
            }
        }
    }

    /// Drops units from memory (writing changed ones into `pending` first): those of devices
    /// not heard from since `quiet_since`, then the least recently used while the units take
    /// more than `budget_bytes`.
    pub fn evict(&mut self, quiet_since: Option<Ticks>, budget_bytes: usize, pending: &mut Pending) {
        if let Some(quiet_since) = quiet_since {
            let quiet: Vec<DeviceId> = self
                .resident
                .keys()
                .filter(|device| self.index.get(device).is_none_or(|e| e.last_heard < quiet_since))
                .copied()
                .collect();
            for device in quiet {
                self.evict_one(device, pending);
            }
        }
        if self.resident_bytes <= budget_bytes {
            return;
        }
        // Over the budget: least recently used first, down to nine tenths of it, so that the
        // sort is paid once per tenth of the budget, not once per record.
        let target = budget_bytes / 10 * 9;
        let mut by_use: Vec<(u64, DeviceId)> = self.resident.iter().map(|(d, r)| (r.touched, *d)).collect();
        by_use.sort_unstable();
        for (_, device) in by_use {
            if self.resident_bytes <= target {
                break;
            }
            self.evict_one(device, pending);
        }
    }

    fn evict_one(&mut self, device: DeviceId, pending: &mut Pending) {
        let Some(mut resident) = self.resident.remove(&device) else { return };
        if resident.dirty {
            write(device, &mut resident, pending, &mut self.resident_bytes);
        }
        self.resident_bytes = self.resident_bytes.saturating_sub(resident.bytes);
        self.residency.evicted += 1;
    }
}

/// A unit from `pending` or the store, or a new one; with the memory it is taken to use.
fn load(
    device: DeviceId,
    windows: &[(String, WindowSpec)],
    pending: &Pending,
    store: &dyn StateStore,
    residency: &mut Residency,
) -> Result<(Unit, usize), LogError> {
    let Some(bytes) = pending.unit(store, device)? else {
        return Ok((Unit::new(windows), NEW_UNIT_BYTES));
    };
    // A unit stored before StatsD windows existed is its `DeviceWindows` alone.
    let decoded = postcard::from_bytes::<Unit>(&bytes).or_else(|_| {
        postcard::from_bytes::<DeviceWindows>(&bytes).map(|windows| Unit { windows, statsd: StatsdWindows::default() })
    });
    match decoded {
        Ok(mut unit) => {
            residency.loaded += 1;
            unit.windows.reconcile(windows);
            Ok((unit, bytes.len() * MEMORY_PER_ENCODED_BYTE))
        }
        Err(_) => {
            residency.unreadable += 1;
            Ok((Unit::new(windows), NEW_UNIT_BYTES))
        }
    }
}

/// Encodes a unit into `pending` and re-estimates its memory.
fn write(device: DeviceId, resident: &mut Resident, pending: &mut Pending, total: &mut usize) {
    // Plain data: encoding into a Vec cannot fail.
    let bytes = postcard::to_allocvec(&resident.unit).unwrap_or_default();
    let estimate = bytes.len() * MEMORY_PER_ENCODED_BYTE;
    *total = total.saturating_sub(resident.bytes).saturating_add(estimate);
    resident.bytes = estimate;
    resident.dirty = false;
    pending.units.insert(device, Some(bytes));
}
