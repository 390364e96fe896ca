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
use crate::log::LogError;
use driftlog_eventtime::window::{DeviceWindows, Ticks, WindowSpec};
use driftlog_protocol::DeviceId;
use serde::{Deserialize, Serialize};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

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

#[derive(Debug, Default)]
pub struct Devices {
    index: BTreeMap<DeviceId, IndexEntry>,
    /// `(last_heard + max_outage, device)` of devices with open windows.
    deadlines: BTreeSet<(Ticks, DeviceId)>,
    /// `(last_heard, device)` of every device, for the `max_devices` bound.
    heard: BTreeSet<(Ticks, DeviceId)>,
    resident: HashMap<DeviceId, Resident>,
    /// `(touched, device)` of resident units: least recently used first.
    lru: BTreeSet<(u64, DeviceId)>,
    touches: u64,
    resident_bytes: usize,
    max_outage: Ticks,
    pub residency: Residency,
}

impl Devices {
    pub fn new(index: BTreeMap<DeviceId, IndexEntry>, max_outage: Ticks) -> Devices {
        let mut devices = Devices { max_outage, ..Devices::default() };
        for (device, entry) in &index {
            devices.heard.insert((entry.last_heard, *device));
            if entry.open {
                devices.deadlines.insert((entry.last_heard.saturating_add(max_outage), *device));
            }
        }
        devices.index = index;
        devices
    }

    pub fn index(&self) -> &BTreeMap<DeviceId, IndexEntry> {
        &self.index
    }

    pub fn known(&self) -> usize {
        self.index.len()
    }

    pub fn with_open_windows(&self) -> usize {
        self.deadlines.len()
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
        let touched = self.touches;
        let resident = match self.resident.entry(device) {
            Entry::Occupied(entry) => {
                let resident = entry.into_mut();
                self.lru.remove(&(resident.touched, device));
                resident
            }
            Entry::Vacant(entry) => {
                let (unit, bytes) = load(device, windows, pending, store, &mut self.residency)?;
                self.resident_bytes += bytes;
                entry.insert(Resident { unit, dirty: true, touched, bytes })
            }
        };
        self.lru.insert((touched, device));
        resident.touched = touched;
        resident.dirty = true;
        Ok(&mut resident.unit)
    }

    /// A resident unit, if the device's is in memory (after [`Self::unit`]).
    pub fn resident_unit(&self, device: DeviceId) -> Option<&Unit> {
        self.resident.get(&device).map(|r| &r.unit)
    }

    /// Notes that the device was heard from at `now`, and whether it has windows open.
    pub fn heard(&mut self, device: DeviceId, now: Ticks) {
        let open = self.resident.get(&device).is_some_and(|r| r.unit.has_unfired());
        let entry = IndexEntry { last_heard: now, open };
        self.set(device, Some(entry));
    }

    /// Updates whether the device has open windows (after a time-out), keeping when it was
    /// last heard from.
    pub fn refresh_open(&mut self, device: DeviceId) {
        let Some(mut entry) = self.index.get(&device).copied() else { return };
        entry.open = self.resident.get(&device).is_some_and(|r| r.unit.has_unfired());
        self.set(device, Some(entry));
    }

    fn set(&mut self, device: DeviceId, entry: Option<IndexEntry>) {
        if let Some(old) = self.index.get(&device).copied() {
            self.heard.remove(&(old.last_heard, device));
            if old.open {
                self.deadlines.remove(&(old.last_heard.saturating_add(self.max_outage), device));
            }
        }
        match entry {
            Some(entry) => {
                self.heard.insert((entry.last_heard, device));
                if entry.open {
                    self.deadlines.insert((entry.last_heard.saturating_add(self.max_outage), device));
                }
                self.index.insert(device, entry);
            }
            None => {
                self.index.remove(&device);
            }
        }
    }

    /// Devices whose maximum outage passed at `now` with windows open, in deadline order.
    pub fn timed_out(&self, now: Ticks) -> Vec<DeviceId> {
        self.deadlines.range(..=(now, DeviceId::MAX)).map(|(_, device)| *device).collect()
    }

    /// Forgets devices beyond `max_devices`, least recently heard first, skipping those with
    /// open windows (they time out first). Returns the forgotten ones.
    pub fn enforce_bound(&mut self, max_devices: usize, pending: &mut Pending) -> Vec<DeviceId> {
        let mut forgotten = Vec::new();
        let excess = self.index.len().saturating_sub(max_devices);
        if excess == 0 {
            return forgotten;
        }
        let candidates: Vec<DeviceId> = self
            .heard
            .iter()
            .map(|(_, device)| *device)
            .filter(|device| self.index.get(device).is_some_and(|e| !e.open))
            .take(excess)
            .collect();
        for device in candidates {
            self.forget(device, pending);
            forgotten.push(device);
        }
        forgotten
    }

    /// Forgets a device (or source) and deletes its stored unit.
    pub fn forget(&mut self, device: DeviceId, pending: &mut Pending) {
        self.set(device, None);
        if let Some(resident) = self.resident.remove(&device) {
            self.lru.remove(&(resident.touched, device));
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
        while self.resident_bytes > budget_bytes {
            let Some(&(_, device)) = self.lru.first() else { break };
            self.evict_one(device, pending);
        }
    }

    fn evict_one(&mut self, device: DeviceId, pending: &mut Pending) {
        let Some(mut resident) = self.resident.remove(&device) else { return };
        self.lru.remove(&(resident.touched, device));
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
