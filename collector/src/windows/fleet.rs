//! The fleet half of the window pipeline: windows not kept per device, closed on the fleet's
//! watermark (the minimum over devices that are not idle, R10/R11), with three things a
//! heuristic engine cannot do:
//!
//! - **Holds.** A device whose heartbeats say it is draining a backlog holds the watermark at
//!   its own completeness, up to `watermark.max_backlog_hold_ms`: a device back from a short
//!   outage delays the fleet's windows instead of making its data late.
//! - **Coalesced late updates.** Events behind an emitted window (within its allowed lateness,
//!   by default the maximum outage) update it once, when the devices still draining have
//!   passed it, or at the end of the log block when none is: one RETRACT + INSERT per window,
//!   never one pair per event.
//! - **Settled windows out of memory.** A window that fired and holds nothing back waits in
//!   the log's file for late events or its cleanup (see [`super::store`]); only open windows
//!   and those with pending updates stay in memory. The watermark's cleanup of stored windows
//!   is one range of keys.

use super::store::{Pending, StateStore, due_range, parse_stored_key, stored_window_key};
use crate::log::LogError;
use driftlog_eventtime::window::{Output, POS_INF, StoredWindow, Ticks, Watermarks, WindowOperator, WindowSpec};
use driftlog_protocol::DeviceId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct FleetSection {
    name: String,
    operator: WindowOperator,
    /// No stored window of this section has a cleanup time below this: the watermark's
    /// cleanup reads the store only once it passes it.
    stored_cleanup_from: Ticks,
}

/// A device draining a backlog: it holds the watermark at `watermark` until `until`. Kept
/// after the drain (`active` false) until `until`, so a device that says it drains, stops and
/// starts again gets no new hold before the last one's time is up: one device holds the fleet
/// at most `max_backlog_hold_ms` in any such span.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Hold {
    until: Ticks,
    watermark: Ticks,
    active: bool,
}

/// See the [module docs](self). Checkpointed with the pipeline's header.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fleet {
    watermarks: Watermarks,
    sections: Vec<FleetSection>,
    holds: BTreeMap<DeviceId, Hold>,
}

fn new_section(name: &str, spec: &WindowSpec) -> Option<FleetSection> {
    let operator = WindowOperator::new(spec.clone()).ok()?.with_coalesced_late().with_settled_tracking();
    Some(FleetSection { name: name.to_string(), operator, stored_cleanup_from: POS_INF })
}

impl Fleet {
    pub fn new(sections: &[(String, WindowSpec)], watermarks: Watermarks) -> Fleet {
        let sections = sections.iter().filter_map(|(name, spec)| new_section(name, spec)).collect();
        Fleet { watermarks, sections, holds: BTreeMap::new() }
    }

    /// Makes the sections match `sections` (by name and spec): changed or new ones start
    /// empty, and their stored windows are deleted. Returns the names that were reset.
    pub fn reconcile(
        &mut self,
        sections: &[(String, WindowSpec)],
        pending: &mut Pending,
        store: &dyn StateStore,
    ) -> Result<Vec<String>, LogError> {
        let mut old: Vec<FleetSection> = std::mem::take(&mut self.sections);
        let mut reset = Vec::new();
        for (name, spec) in sections {
            match old.iter().position(|s| &s.name == name && s.operator.spec() == spec) {
                Some(index) => self.sections.push(old.swap_remove(index)),
                None => {
                    reset.push(name.clone());
                    if let Some(section) = new_section(name, spec) {
                        self.sections.push(section);
                    }
                }
            }
        }
        // Stored windows of sections that are gone or reset would never be read again.
        for name in old.iter().map(|s| s.name.clone()).chain(reset.iter().cloned()) {
            let (from, to) = due_range(&name, i64::MAX);
            for (key, _) in pending.stored_windows(store, &from, &to)? {
                pending.windows.insert(key, None);
            }
        }
        Ok(reset)
    }

    /// Applies new watermark settings (a config change between runs).
    pub fn reconfigure(&mut self, out_of_orderness: Ticks, idle_timeout: Ticks, max_devices: usize) {
        self.watermarks.reconfigure(out_of_orderness, idle_timeout, max_devices);
    }

    /// The fleet's watermark.
    pub fn current(&self) -> Ticks {
        self.watermarks.current()
    }

    /// Windows open in memory.
    pub fn open_windows(&self) -> usize {
        self.sections.iter().map(|s| s.operator.open_windows()).sum()
    }

    /// Windows that fired and wait in the store for late events or their cleanup.
    pub fn stored_windows(&self) -> u64 {
        self.sections.iter().map(|s| s.operator.stored_elsewhere()).sum()
    }

    /// Windows holding late events not emitted yet.
    pub fn late_pending(&self) -> usize {
        self.sections.iter().map(|s| s.operator.late_pending()).sum()
    }

    /// Devices holding the watermark now.
    pub fn holding(&self, now: Ticks) -> usize {
        self.holds.values().filter(|hold| hold.active && hold.until > now).count()
    }

    /// Whether only time passing could still change something (ticks are worth writing).
    pub fn waiting_on_time(&self) -> bool {
        self.open_windows() > 0 || self.late_pending() > 0 || self.holds.values().any(|hold| hold.active)
    }

    /// One element for section `section`, judged against the fleet's watermark; outputs into
    /// `out`. A window stored out of memory that the element updates is read back first.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_event(
        &mut self,
        section: usize,
        key: &str,
        ts: Ticks,
        value: f64,
        pending: &mut Pending,
        store: &dyn StateStore,
        out: &mut Vec<Output>,
    ) -> Result<(), LogError> {
        let watermark = self.watermarks.current();
        let Some(section) = self.sections.get_mut(section) else { return Ok(()) };
        let lateness = section.operator.spec().allowed_lateness;
        for bounds in section.operator.stored_candidates(key, ts) {
            let stored_key = stored_window_key(&section.name, bounds.cleanup_time(lateness), bounds.start, key);
            if let Some(bytes) = pending.stored_window(store, &stored_key)?
                && let Ok(window) = postcard::from_bytes::<StoredWindow>(&bytes)
            {
                section.operator.restore(key, bounds.start, window);
                pending.windows.insert(stored_key, None);
            }
        }
        section.operator.handle_event(key, ts, value, watermark, out);
        Ok(())
    }

    /// A device's watermark is `watermark` as of `now`, and whether it is draining a backlog
    /// (which gives it a hold of `max_hold` when the drain starts).
    pub fn device(&mut self, device: DeviceId, watermark: Ticks, draining: bool, now: Ticks, max_hold: Ticks) {
        if self.sections.is_empty() {
            return; // No fleet windows: the fleet's watermark serves nothing.
        }
        self.watermarks.handle_watermark(device, watermark, now);
        match (draining, self.holds.get_mut(&device)) {
            (true, Some(hold)) if hold.active || hold.until > now => hold.watermark = watermark,
            (true, _) => {
                let until = now.saturating_add(max_hold);
                self.holds.insert(device, Hold { until, watermark, active: true });
                self.watermarks.set_holding(device, Some(until));
            }
            (false, Some(hold)) if hold.active => {
                hold.active = false;
                self.watermarks.set_holding(device, None);
            }
            (false, Some(hold)) if hold.until <= now => {
                self.holds.remove(&device);
            }
            (false, _) => {}
        }
    }

    /// Forgets a device (the `max_devices` bound).
    pub fn forget(&mut self, device: DeviceId) {
        self.holds.remove(&device);
        self.watermarks.remove(device);
    }

    /// Processing time moved to `now`: idleness, the clock floor and hold expiry.
    pub fn tick(&mut self, now: Ticks) {
        if !self.sections.is_empty() {
            self.watermarks.handle_tick(now);
        }
    }

    /// Fires what the fleet's watermark closes and cleans up what it passed, stored windows
    /// included (read back first where their FINAL must be written, counted otherwise).
    pub fn advance(
        &mut self,
        pending: &mut Pending,
        store: &dyn StateStore,
        out: &mut Vec<(usize, Output)>,
        scratch: &mut Vec<Output>,
    ) -> Result<(), LogError> {
        let watermark = self.watermarks.current();
        for (index, section) in self.sections.iter_mut().enumerate() {
            if section.operator.watermark() >= watermark {
                continue;
            }
            if section.stored_cleanup_from <= watermark {
                clean_up_stored(section, watermark, pending, store)?;
            }
            scratch.clear();
            section.operator.advance_watermark(watermark, scratch);
            out.extend(scratch.drain(..).map(|output| (index, output)));
        }
        Ok(())
    }

    /// The end of a log block: emits the late updates no draining device still owes events
    /// to, and moves settled windows out of memory.
    pub fn end_block(
        &mut self,
        now: Ticks,
        pending: &mut Pending,
        out: &mut Vec<(usize, Output)>,
        scratch: &mut Vec<Output>,
    ) {
        // A hold that expired stops holding updates back too.
        let held_at =
            self.holds.values().filter(|hold| hold.active && hold.until > now).map(|hold| hold.watermark).min();
        // A device's watermark W says nothing at or before W is still to come.
        let before = held_at.map_or(POS_INF, |w| w.saturating_add(1));
        for (index, section) in self.sections.iter_mut().enumerate() {
            scratch.clear();
            section.operator.flush_late(before, scratch);
            out.extend(scratch.drain(..).map(|output| (index, output)));
            for (key, start, window) in section.operator.take_settled() {
                let cleanup_at = window.cleanup_at();
                section.stored_cleanup_from = section.stored_cleanup_from.min(cleanup_at);
                let bytes = postcard::to_allocvec(&window).unwrap_or_default();
                pending.windows.insert(stored_window_key(&section.name, cleanup_at, start, &key), Some(bytes));
            }
        }
    }
}

/// Removes `section`'s stored windows whose cleanup time `watermark` reached: with
/// `emit_final` they come back into memory so the operator writes their FINAL in order;
/// otherwise they are deleted and counted.
fn clean_up_stored(
    section: &mut FleetSection,
    watermark: Ticks,
    pending: &mut Pending,
    store: &dyn StateStore,
) -> Result<(), LogError> {
    let (from, to) = due_range(&section.name, watermark);
    let mut forgotten = 0;
    for (stored_key, bytes) in pending.stored_windows(store, &from, &to)? {
        let parsed = parse_stored_key(&section.name, &stored_key);
        let window = postcard::from_bytes::<StoredWindow>(&bytes).ok();
        match (section.operator.spec().emit_final, parsed, window) {
            (true, Some((_, start, key)), Some(window)) => section.operator.restore(key, start, window),
            _ => forgotten += 1,
        }
        pending.windows.insert(stored_key, None);
    }
    section.operator.forget_stored(forgotten);
    // What is left starts after the watermark.
    let (_, rest) = due_range(&section.name, i64::MAX);
    let next = pending.first_stored_window(store, &to, &rest)?;
    section.stored_cleanup_from =
        next.and_then(|key| parse_stored_key(&section.name, &key).map(|(cleanup, _, _)| cleanup)).unwrap_or(POS_INF);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that says it drains, stops, and starts again gets no second hold before its
    /// first one's time is up: one device cannot hold the fleet by flapping.
    #[test]
    fn a_flapping_drain_gets_one_hold_per_hold_time() {
        let spec = WindowSpec {
            kind: driftlog_eventtime::window::WindowKind::Tumbling { size: 10, offset: 0 },
            allowed_lateness: 0,
            emit_final: false,
            max_open_windows: 10,
        };
        let mut fleet = Fleet::new(&[("w".to_string(), spec)], Watermarks::new(0, 1_000, 10));
        let max_hold = 5;
        fleet.device(1, 100, false, 0, max_hold);
        fleet.device(2, 100, false, 0, max_hold);
        fleet.device(1, 100, true, 1, max_hold);
        assert_eq!(fleet.holding(1), 1);
        fleet.device(1, 101, false, 2, max_hold);
        assert_eq!(fleet.holding(2), 0, "the drain ended");
        fleet.device(1, 101, true, 3, max_hold);
        assert_eq!(fleet.holding(3), 0, "a new drain within the first hold's time holds nothing");
        fleet.device(1, 101, false, 4, max_hold);
        fleet.device(1, 101, true, 7, max_hold);
        assert_eq!(fleet.holding(7), 1, "after it, a new drain holds again");
    }
}
