//! The window operator: assigns elements to windows, merges sessions, fires windows as the
//! watermark passes them and drops their state after the allowed lateness.
//!
//! It follows Flink's `WindowOperator` with `EventTimeTrigger` (R5–R9, R13–R18) and writes the
//! retracting changelog of §1.6 instead of Flink's plain records:
//! - the first firing of a window is an `Insert`;
//! - a late element accepted into a fired window (R15) fires it at once as `Retract` of the last
//!   result, then `Insert` of the new one;
//! - a session merge that replaces sessions which already fired retracts each of them with its
//!   last emitted result, then inserts the merged session when it fires; if that is not at once
//!   (its timer is still above `W`), the retractions are held and emitted just before its first
//!   `Insert`, so a consumer never sees a session vanish without its replacement;
//! - with `emit_final`, a `Final` marker when the state is dropped.
//!
//! Two modes for the collector's fleet windows (off by default, so the design's vectors see
//! Flink's behaviour):
//! - **Coalesced late firings** ([`WindowOperator::with_coalesced_late`]): a late element accepted
//!   into a fired window marks it pending instead of firing at once, and
//!   [`WindowOperator::flush_late`] fires the pending windows, once each however many late
//!   elements they took. A device draining an hour of backlog into a fleet window then costs
//!   one RETRACT + INSERT for that window, not one pair per event.
//! - **Settled windows out of memory** ([`WindowOperator::with_settled_tracking`]): a window that
//!   fired and holds nothing back is only kept for late elements and its cleanup;
//!   [`WindowOperator::take_settled`] hands such windows to the caller to store, and
//!   [`WindowOperator::restore`] takes one back when a late element needs it. Stored windows
//!   still count against `max_open_windows`, so the bound and every refusal are the same
//!   wherever a window happens to live.
//!
//! Not implemented: V10's "our option" (remembering purged sessions for `gap` longer so that a
//! late element touching one can retract and re-insert it). We keep Flink's R18 behaviour: the
//! element opens a new, overlapping session and the purged one stands.
//!
//! A consequence of R7 + R9 worth knowing: with `allowed_lateness = 0` a session is purged when
//! it fires at `last + gap - 1`, so an on-time element at exactly `last + gap`, which touches it,
//! opens a separate session. Any `allowed_lateness >= 1` keeps the session long enough to merge.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use super::aggregate::Aggregate;
use super::assign::{WindowBounds, assign, session_window};
use super::output::{Change, Output, WindowResult};
use super::spec::{SpecError, WindowKind, WindowSpec};
use super::state::{WindowState, WindowTable};
use super::{NEG_INF, Ticks};

/// Counters for metrics; all but `windows_open` only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStats {
    /// Elements too late for every window they belong to (R14, R16), or whose window cannot be
    /// represented in `i64` ticks (it could not fire before end of input anyway).
    pub late_dropped: u64,
    /// Windows open now.
    pub windows_open: u64,
    /// Elements refused by at least one window because opening it would exceed
    /// `max_open_windows`.
    pub dropped_over_limit: u64,
    /// `Insert` records emitted (first and late firings).
    pub fired: u64,
    /// `Retract` records emitted.
    pub retracted: u64,
}

/// Why an element was not placed in all its windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Late,
    OverLimit,
}

/// A fired window's whole state, as [`WindowOperator::take_settled`] hands it out and
/// [`WindowOperator::restore`] takes it back. Opaque except for its cleanup time, which is
/// when the caller may forget it ([`WindowOperator::forget_stored`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredWindow(WindowState);

impl StoredWindow {
    /// `end - 1 + allowed_lateness`: once the watermark reaches it, the window is gone.
    pub fn cleanup_at(&self) -> Ticks {
        self.0.cleanup_at()
    }
}

/// Event-time windows for one stream of keyed elements; see the [module docs](self).
///
/// Serialisable so that the collector can checkpoint it (with postcard) and resume with
/// identical outputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowOperator {
    spec: WindowSpec,
    /// The highest watermark seen; lateness is judged against it.
    watermark: Ticks,
    table: WindowTable,
    stats: OperatorStats,
    /// See the module docs: late firings wait for [`Self::flush_late`].
    coalesce_late: bool,
    /// Windows with late elements not yet emitted, by `(end - 1, key, start)`.
    late_pending: BTreeSet<(Ticks, String, Ticks)>,
    /// See the module docs: fired windows are offered to [`Self::take_settled`].
    track_settled: bool,
    /// Windows fired since the last [`Self::take_settled`] (candidates to leave memory).
    fired_recently: Vec<(String, Ticks)>,
    /// Windows the caller holds (taken, not restored nor forgotten): they count against
    /// `max_open_windows` like the ones in the table.
    stored_elsewhere: u64,
}

impl WindowOperator {
    /// An operator with no windows, at watermark `-inf`. Fails if the spec does not validate.
    pub fn new(spec: WindowSpec) -> Result<Self, SpecError> {
        spec.validate()?;
        Ok(WindowOperator {
            spec,
            watermark: NEG_INF,
            table: WindowTable::default(),
            stats: OperatorStats::default(),
            coalesce_late: false,
            late_pending: BTreeSet::new(),
            track_settled: false,
            fired_recently: Vec::new(),
            stored_elsewhere: 0,
        })
    }

    /// Late firings wait for [`Self::flush_late`] (see the module docs).
    pub fn with_coalesced_late(mut self) -> Self {
        self.coalesce_late = true;
        self
    }

    /// Fired windows are offered to [`Self::take_settled`] (see the module docs). Session
    /// windows stay in memory: a late element may merge any of them.
    pub fn with_settled_tracking(mut self) -> Self {
        self.track_settled = !matches!(self.spec.kind, WindowKind::Session { .. });
        self
    }

    /// Emits every window holding late elements whose `end - 1` is below `before` (all of them
    /// with `POS_INF`): one `Retract` of its last result (if it had one) and one `Insert`.
    pub fn flush_late(&mut self, before: Ticks, out: &mut Vec<Output>) {
        while let Some((max_timestamp, _, _)) = self.late_pending.first() {
            if *max_timestamp >= before {
                break;
            }
            let Some((_, key, start)) = self.late_pending.pop_first() else { break };
            self.fire(&key, start, out);
        }
    }

    /// Windows with late elements not yet emitted.
    pub fn late_pending(&self) -> usize {
        self.late_pending.len()
    }

    /// Removes the windows that fired since the last call and hold nothing back, for the
    /// caller to store; they keep counting against `max_open_windows` until restored or
    /// forgotten. Empty unless [`Self::with_settled_tracking`].
    pub fn take_settled(&mut self) -> Vec<(String, Ticks, StoredWindow)> {
        let mut taken = Vec::new();
        for (key, start) in std::mem::take(&mut self.fired_recently) {
            let Some(state) = self.table.get(&key, start) else { continue };
            let pending = (state.end.saturating_sub(1), key.clone(), start);
            if !state.is_settled() || self.late_pending.contains(&pending) {
                continue;
            }
            if let Some(state) = self.table.remove(&key, start) {
                self.stored_elsewhere += 1;
                taken.push((key, start, StoredWindow(state)));
            }
        }
        taken
    }

    /// The windows an element at `ts` of `key` would update that [`Self::take_settled`] may
    /// have handed out (fired, not cleaned up, not in memory): restore those the caller holds
    /// before [`Self::handle_event`], or the element opens a fresh window instead.
    pub fn stored_candidates(&self, key: &str, ts: Ticks) -> Vec<WindowBounds> {
        if !self.track_settled || self.stored_elsewhere == 0 {
            return Vec::new();
        }
        let lateness = self.spec.allowed_lateness;
        assign(&self.spec.kind, ts)
            .filter(|bounds| {
                bounds.max_timestamp() <= self.watermark
                    && bounds.cleanup_time(lateness) > self.watermark
                    && self.table.get(key, bounds.start).is_none()
            })
            .collect()
    }

    /// Takes back a window [`Self::take_settled`] handed out.
    pub fn restore(&mut self, key: &str, start: Ticks, window: StoredWindow) {
        self.stored_elsewhere = self.stored_elsewhere.saturating_sub(1);
        self.table.insert(key, start, window.0);
    }

    /// The caller dropped `count` stored windows whose cleanup time the watermark reached.
    pub fn forget_stored(&mut self, count: u64) {
        self.stored_elsewhere = self.stored_elsewhere.saturating_sub(count);
    }

    /// Windows the caller holds for this operator.
    pub fn stored_elsewhere(&self) -> u64 {
        self.stored_elsewhere
    }

    /// Fires every window that has not fired, as the watermark reaching the last of them would
    /// (a device that never came back, closed as it stands). Returns that watermark.
    pub fn fire_all(&mut self, out: &mut Vec<Output>) -> Option<Ticks> {
        let last = self.table.last_fire_time()?;
        self.advance_watermark(last, out);
        Some(last)
    }

    /// Processes one element against `watermark`, the watermark in force before it (the vector
    /// convention: an element never makes itself late).
    ///
    /// If `watermark` is above the last one passed to [`advance_watermark`](Self::advance_watermark),
    /// it is applied first, with its firings written to `out` before the element's own outputs; a
    /// lower one is ignored in favour of the current one (R3).
    ///
    /// Writes `Output::Late` for an element too late for every window it belongs to (counted in
    /// `late_dropped`) or refused by the window bound (counted in `dropped_over_limit`), and
    /// `Retract` + `Insert` for each fired window the element updates (R15, R17).
    pub fn handle_event(&mut self, key: &str, ts: Ticks, value: f64, watermark: Ticks, out: &mut Vec<Output>) {
        self.advance_watermark(watermark, out);
        let refusal = match self.spec.kind {
            WindowKind::Session { gap } => self.add_to_session(key, ts, value, gap, out),
            WindowKind::Tumbling { .. } | WindowKind::Hopping { .. } => self.add_to_windows(key, ts, value, out),
        };
        match refusal {
            None => {}
            Some(Refusal::Late) => self.stats.late_dropped = self.stats.late_dropped.saturating_add(1),
            Some(Refusal::OverLimit) => self.stats.dropped_over_limit = self.stats.dropped_over_limit.saturating_add(1),
        }
        if refusal.is_some() {
            out.push(Output::Late { key: key.to_owned(), ts, value });
        }
    }

    /// Moves to `watermark` (ignored unless higher than the current one, R3): fires every window
    /// whose timer `end - 1` is `<= watermark`, in increasing timer order with ties by key, then
    /// start; then drops every window whose cleanup time `end - 1 + allowed_lateness` is
    /// `<= watermark` (R13), in the same order, writing `Final` for each if `emit_final`.
    pub fn advance_watermark(&mut self, watermark: Ticks, out: &mut Vec<Output>) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        while let Some((key, start)) = self.table.pop_fire_due(watermark) {
            self.fire(&key, start, out);
        }
        while let Some((key, start)) = self.table.pop_cleanup_due(watermark) {
            if let Some(state) = self.table.get(&key, start)
                && self.late_pending.remove(&(state.end.saturating_sub(1), key.clone(), start))
            {
                // Its late elements are emitted before it goes.
                self.fire(&key, start, out);
            }
            let Some(state) = self.table.remove(&key, start) else { continue };
            if self.spec.emit_final {
                let aggregate = state.emitted.unwrap_or(state.acc);
                let result = WindowResult { key, start, end: state.end, aggregate };
                out.push(Output::Window { change: Change::Final, result });
            }
        }
    }

    /// The counters, with `windows_open` as of now (stored windows included).
    pub fn stats(&self) -> OperatorStats {
        OperatorStats { windows_open: self.table.len() as u64 + self.stored_elsewhere, ..self.stats }
    }

    /// How many windows are open in memory, over all keys.
    pub fn open_windows(&self) -> usize {
        self.table.len()
    }

    /// Whether some window has not fired yet (others only wait for late elements).
    pub fn has_unfired(&self) -> bool {
        self.table.last_fire_time().is_some()
    }

    /// Windows kept, in memory or stored by the caller: what `max_open_windows` bounds.
    fn kept_windows(&self) -> usize {
        self.table.len().saturating_add(self.stored_elsewhere as usize)
    }

    /// The highest watermark seen.
    pub fn watermark(&self) -> Ticks {
        self.watermark
    }

    /// The spec the operator was built with.
    pub fn spec(&self) -> &WindowSpec {
        &self.spec
    }

    /// Tumbling and hopping windows (R5, R14–R16): the element goes into every window it belongs
    /// to that is not past its cleanup time; it is refused only if every window refused it, or if
    /// the bound kept it out of any window.
    fn add_to_windows(&mut self, key: &str, ts: Ticks, value: f64, out: &mut Vec<Output>) -> Option<Refusal> {
        let watermark = self.watermark;
        let lateness = self.spec.allowed_lateness;
        let mut accepted = false;
        let mut over_limit = false;
        for bounds in assign(&self.spec.kind, ts) {
            if bounds.cleanup_time(lateness) <= watermark {
                continue;
            }
            let fire_now = bounds.max_timestamp() <= watermark;
            if let Some(state) = self.table.get_mut(key, bounds.start) {
                state.acc.add(ts, value);
            } else if self.kept_windows() >= self.spec.max_open_windows {
                over_limit = true;
                continue;
            } else {
                let fire_at = (!fire_now).then_some(bounds.max_timestamp());
                let state =
                    WindowState::new(bounds.end, Aggregate::new(ts, value), fire_at, bounds.cleanup_time(lateness));
                self.table.insert(key, bounds.start, state);
            }
            accepted = true;
            // A window whose timer already passed has fired (or, if new, would have): fire at
            // once with the whole accumulated result (R15), or when coalescing, once per flush.
            if fire_now {
                self.fire_late(key, bounds, out);
            }
        }
        if over_limit {
            Some(Refusal::OverLimit)
        } else if accepted {
            None
        } else {
            Some(Refusal::Late)
        }
    }

    /// Session windows (R7–R9, R14, R17, R18): the proto-window `[ts, ts + gap)` merges with every
    /// session of the key it overlaps or touches; lateness is judged on the merged window.
    fn add_to_session(
        &mut self,
        key: &str,
        ts: Ticks,
        value: f64,
        gap: Ticks,
        out: &mut Vec<Output>,
    ) -> Option<Refusal> {
        let watermark = self.watermark;
        let lateness = self.spec.allowed_lateness;
        let Some(proto) = session_window(ts, gap) else { return Some(Refusal::Late) };
        let merging = self.table.sessions_merging_with(key, proto);
        if merging.is_empty() {
            // R18: judged on `ts + gap - 1 + L`, so an element behind W can still open a session.
            if proto.cleanup_time(lateness) <= watermark {
                return Some(Refusal::Late);
            }
            if self.kept_windows() >= self.spec.max_open_windows {
                return Some(Refusal::OverLimit);
            }
            self.open(key, proto, Aggregate::new(ts, value), Vec::new(), out);
            return None;
        }
        // Every session in the table has its cleanup time above W (cleanup runs before elements
        // are handled), and the merged window ends no earlier than any of them, so a merge is
        // never late.
        let mut merged = proto;
        let mut acc: Option<Aggregate> = None;
        let mut retractions: Vec<WindowResult> = Vec::new();
        for start in merging {
            let Some(state) = self.table.remove(key, start) else { continue };
            // A pending late firing of a replaced session becomes the merged session's.
            self.late_pending.remove(&(state.end.saturating_sub(1), key.to_owned(), start));
            merged = merged.cover(WindowBounds { start, end: state.end });
            retractions.extend(state.pending_retractions);
            if let Some(aggregate) = state.emitted {
                retractions.push(WindowResult { key: key.to_owned(), start, end: state.end, aggregate });
            }
            // Merged in start order, then the element last: it is the most recently added.
            match acc.as_mut() {
                Some(acc) => acc.merge(&state.acc),
                None => acc = Some(state.acc),
            }
        }
        let acc = match acc {
            Some(mut acc) => {
                acc.add(ts, value);
                acc
            }
            None => Aggregate::new(ts, value),
        };
        self.open(key, merged, acc, retractions, out);
        None
    }

    /// Installs a session window and fires it at once if its timer already passed (R15, R17).
    fn open(
        &mut self,
        key: &str,
        bounds: WindowBounds,
        acc: Aggregate,
        retractions: Vec<WindowResult>,
        out: &mut Vec<Output>,
    ) {
        let fire_now = bounds.max_timestamp() <= self.watermark;
        let fire_at = (!fire_now).then_some(bounds.max_timestamp());
        let mut state = WindowState::new(bounds.end, acc, fire_at, bounds.cleanup_time(self.spec.allowed_lateness));
        state.pending_retractions = retractions;
        self.table.insert(key, bounds.start, state);
        if fire_now {
            self.fire_late(key, bounds, out);
        }
    }

    /// A window whose timer the watermark already passed took an element: fire it now, or
    /// when coalescing, mark it for [`Self::flush_late`].
    fn fire_late(&mut self, key: &str, bounds: WindowBounds, out: &mut Vec<Output>) {
        if self.coalesce_late {
            self.late_pending.insert((bounds.max_timestamp(), key.to_owned(), bounds.start));
        } else {
            self.fire(key, bounds.start, out);
        }
    }

    /// Emits a window's result: held retractions, then the retraction of its previous result,
    /// then the new result.
    fn fire(&mut self, key: &str, start: Ticks, out: &mut Vec<Output>) {
        let Some(state) = self.table.get_mut(key, start) else { return };
        for result in state.pending_retractions.drain(..) {
            out.push(Output::Window { change: Change::Retract, result });
            self.stats.retracted = self.stats.retracted.saturating_add(1);
        }
        let end = state.end;
        if let Some(previous) = state.emitted.replace(state.acc.clone()) {
            let result = WindowResult { key: key.to_owned(), start, end, aggregate: previous };
            out.push(Output::Window { change: Change::Retract, result });
            self.stats.retracted = self.stats.retracted.saturating_add(1);
        }
        let result = WindowResult { key: key.to_owned(), start, end, aggregate: state.acc.clone() };
        out.push(Output::Window { change: Change::Insert, result });
        self.stats.fired = self.stats.fired.saturating_add(1);
        if self.track_settled {
            self.fired_recently.push((key.to_owned(), start));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::POS_INF;

    fn operator(kind: WindowKind, allowed_lateness: Ticks) -> WindowOperator {
        let spec = WindowSpec { kind, allowed_lateness, emit_final: false, max_open_windows: 100 };
        WindowOperator::new(spec).expect("valid spec")
    }

    fn describe(outputs: &[Output]) -> Vec<String> {
        outputs
            .iter()
            .map(|output| match output {
                Output::Window { change, result } => {
                    format!("{change:?} {}[{},{}) c={}", result.key, result.start, result.end, result.aggregate.count)
                }
                Output::Late { key, ts, .. } => format!("Late {key}@{ts}"),
            })
            .collect()
    }

    #[test]
    fn invalid_spec_is_refused() {
        let spec = WindowSpec {
            kind: WindowKind::Session { gap: 0 },
            allowed_lateness: 0,
            emit_final: false,
            max_open_windows: 1,
        };
        assert_eq!(WindowOperator::new(spec).err(), Some(SpecError::NotPositive { field: "gap", value: 0 }));
    }

    #[test]
    fn handle_event_applies_a_newer_watermark_first() {
        let mut operator = operator(WindowKind::Tumbling { size: 10, offset: 0 }, 5);
        let mut out = Vec::new();
        operator.handle_event("a", 1, 1.0, NEG_INF, &mut out);
        // Not advanced yet: the element's call fires [0,10) first, then re-fires it with a@2.
        operator.handle_event("a", 2, 1.0, 10, &mut out);
        assert_eq!(describe(&out), ["Insert a[0,10) c=1", "Retract a[0,10) c=1", "Insert a[0,10) c=2"]);
        // A lower watermark changes nothing: a@3 is still judged against 10 (accepted, L=5).
        out.clear();
        operator.handle_event("a", 3, 1.0, 0, &mut out);
        assert_eq!(describe(&out), ["Retract a[0,10) c=2", "Insert a[0,10) c=3"]);
        assert_eq!(operator.watermark(), 10);
    }

    #[test]
    fn late_element_inside_a_fired_session_updates_it_in_place() {
        let mut operator = operator(WindowKind::Session { gap: 5 }, 10);
        let mut out = Vec::new();
        operator.handle_event("a", 0, 1.0, NEG_INF, &mut out);
        operator.handle_event("a", 4, 1.0, NEG_INF, &mut out);
        operator.advance_watermark(9, &mut out);
        operator.handle_event("a", 2, 1.0, 9, &mut out);
        assert_eq!(describe(&out), ["Insert a[0,9) c=2", "Retract a[0,9) c=2", "Insert a[0,9) c=3"]);
        let stats = operator.stats();
        assert_eq!((stats.fired, stats.retracted, stats.windows_open), (2, 1, 1));
        operator.advance_watermark(POS_INF, &mut out);
        assert_eq!(operator.open_windows(), 0);
    }

    #[test]
    fn unrepresentable_windows_count_as_late() {
        let mut operator = operator(WindowKind::Session { gap: 5 }, 0);
        let mut out = Vec::new();
        operator.handle_event("a", i64::MAX, 1.0, NEG_INF, &mut out);
        assert_eq!(describe(&out), [format!("Late a@{}", i64::MAX)]);
        assert_eq!(operator.stats().late_dropped, 1);
    }

    #[test]
    fn coalesced_late_elements_update_a_fired_window_once_per_flush() {
        let mut operator = operator(WindowKind::Tumbling { size: 10, offset: 0 }, 100).with_coalesced_late();
        let mut out = Vec::new();
        operator.handle_event("a", 1, 1.0, NEG_INF, &mut out);
        operator.advance_watermark(20, &mut out);
        assert_eq!(describe(&out), ["Insert a[0,10) c=1"]);
        out.clear();
        for ts in 2..9 {
            operator.handle_event("a", ts, 1.0, 20, &mut out);
        }
        // A late element opening a window that never fired is held back too.
        operator.handle_event("a", 12, 1.0, 20, &mut out);
        assert!(out.is_empty());
        assert_eq!(operator.late_pending(), 2);
        operator.flush_late(10, &mut out);
        assert_eq!(describe(&out), ["Retract a[0,10) c=1", "Insert a[0,10) c=8"]);
        out.clear();
        operator.flush_late(POS_INF, &mut out);
        assert_eq!(describe(&out), ["Insert a[10,20) c=1"]);
        // A pending window reaching its cleanup is emitted before it goes.
        out.clear();
        operator.handle_event("a", 3, 1.0, 20, &mut out);
        operator.advance_watermark(200, &mut out);
        assert_eq!(describe(&out), ["Retract a[0,10) c=8", "Insert a[0,10) c=9"]);
    }

    /// Handing settled windows out and restoring them when a late element needs them changes
    /// no output and no refusal: the same input gives the same changelog as keeping them all.
    #[test]
    fn settled_windows_stored_elsewhere_change_nothing() {
        proptest::proptest!(|(steps in proptest::collection::vec((0u8..4, 0i64..120, 0i64..30), 1..200),
                              hopping: bool)| {
            let kind = if hopping {
                WindowKind::Hopping { size: 10, slide: 5, offset: 0 }
            } else {
                WindowKind::Tumbling { size: 10, offset: 0 }
            };
            let spec = WindowSpec { kind, allowed_lateness: 25, emit_final: true, max_open_windows: 12 };
            let mut kept = WindowOperator::new(spec.clone()).unwrap().with_coalesced_late();
            let mut moving = WindowOperator::new(spec).unwrap().with_coalesced_late().with_settled_tracking();
            let mut stored: std::collections::BTreeMap<(String, Ticks), StoredWindow> = Default::default();
            let (mut out_kept, mut out_moving) = (Vec::new(), Vec::new());
            let mut watermark = NEG_INF;
            for (op, ts, step) in steps {
                let key = ["a", "b"][(ts % 2) as usize];
                match op {
                    0 | 1 => {
                        kept.handle_event(key, ts, 1.0, watermark, &mut out_kept);
                        for bounds in moving.stored_candidates(key, ts) {
                            if let Some(window) = stored.remove(&(key.to_owned(), bounds.start)) {
                                moving.restore(key, bounds.start, window);
                            }
                        }
                        moving.handle_event(key, ts, 1.0, watermark, &mut out_moving);
                    }
                    2 => {
                        watermark = watermark.max(ts - 10 + step);
                        // Due stored windows come back first, so their cleanup (and FINAL)
                        // happens in order with the others.
                        let due: Vec<_> = stored.iter().filter(|(_, w)| w.cleanup_at() <= watermark).map(|(k, _)| k.clone()).collect();
                        for (key, start) in due {
                            if let Some(window) = stored.remove(&(key.clone(), start)) {
                                moving.restore(&key, start, window);
                            }
                        }
                        kept.advance_watermark(watermark, &mut out_kept);
                        moving.advance_watermark(watermark, &mut out_moving);
                    }
                    _ => {
                        kept.flush_late(POS_INF, &mut out_kept);
                        moving.flush_late(POS_INF, &mut out_moving);
                        for (key, start, window) in moving.take_settled() {
                            stored.insert((key, start), window);
                        }
                    }
                }
                proptest::prop_assert_eq!(&out_kept, &out_moving);
                proptest::prop_assert_eq!(kept.stats().windows_open, moving.stats().windows_open);
            }
        });
    }
}
