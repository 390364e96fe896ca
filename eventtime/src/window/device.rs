//! One device's windows, closed on the device's own watermark: its sequence completeness
//! ([`DeviceCompleteness`]) less the bound `B` on out-of-order stamping, instead of the fleet's.
//!
//! A device that is offline keeps its windows open: nothing says its data is complete, so
//! nothing fires. When it returns and its backlog lands, the watermark follows the backlog as
//! it becomes contiguous, and each window fires once, with an `Insert` only, holding all its
//! events. A device that never returns is closed by [`DeviceWindows::time_out`] (the caller
//! decides when, by its own clock): every open window fires as it stands, marked as closed by
//! timeout, and the watermark moves to the last of them, so events that still come later for
//! those windows are late (and counted), never a second first result.
//!
//! Driving it, per record of the device: each event goes to [`DeviceWindows::handle_event`]
//! (judged against the watermark in force before the record), then the record's sequence
//! numbers to `handle_events` / `handle_gap` / `handle_claim`, then
//! [`DeviceWindows::advance`] fires what the new watermark closes.

use serde::{Deserialize, Serialize};

use super::completeness::{Claim, CompletenessStats, DeviceCompleteness};
use super::operator::WindowOperator;
use super::output::Output;
use super::spec::WindowSpec;
use super::{NEG_INF, Ticks};

/// An output of one of the device's windows.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceOutput {
    /// Index of the window (as passed to [`DeviceWindows::new`]).
    pub window: usize,
    pub output: Output,
    /// Fired by [`DeviceWindows::time_out`], not by completeness.
    pub timed_out: bool,
    /// The device's watermark when it was emitted.
    pub watermark: Ticks,
}

/// See the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceWindows {
    completeness: DeviceCompleteness,
    /// The device's watermark: completeness less `B`, or where a time-out moved it; never
    /// decreases.
    watermark: Ticks,
    /// One operator per window spec, in the order given; labelled so a caller can match them
    /// to its configuration after a change.
    operators: Vec<(String, WindowOperator)>,
}

impl DeviceWindows {
    /// Empty windows for `(label, spec)` each; specs must be valid (they were validated).
    pub fn new(windows: &[(String, WindowSpec)]) -> DeviceWindows {
        let operators = windows
            .iter()
            .filter_map(|(label, spec)| WindowOperator::new(spec.clone()).ok().map(|op| (label.clone(), op)))
            .collect();
        DeviceWindows { completeness: DeviceCompleteness::default(), watermark: NEG_INF, operators }
    }

    /// Makes the operators match `windows` (by label and spec): unchanged ones keep their
    /// state, changed or new ones start empty, removed ones are dropped. Returns whether any
    /// was reset.
    pub fn reconcile(&mut self, windows: &[(String, WindowSpec)]) -> bool {
        let same = self.operators.len() == windows.len()
            && self.operators.iter().zip(windows).all(|((label, op), (want, spec))| label == want && op.spec() == spec);
        if same {
            return false;
        }
        let mut old = std::mem::take(&mut self.operators);
        for (label, spec) in windows {
            let kept = old.iter().position(|(l, op)| l == label && op.spec() == spec).map(|i| old.swap_remove(i));
            match kept {
                Some(entry) => self.operators.push(entry),
                None => {
                    if let Ok(op) = WindowOperator::new(spec.clone()) {
                        self.operators.push((label.clone(), op));
                    }
                }
            }
        }
        true
    }

    /// The device's watermark.
    pub fn watermark(&self) -> Ticks {
        self.watermark
    }

    /// Windows open over all of the device's operators.
    pub fn open_windows(&self) -> usize {
        self.operators.iter().map(|(_, op)| op.open_windows()).sum()
    }

    /// Whether some window has not fired yet: what [`Self::time_out`] would close.
    pub fn has_unfired(&self) -> bool {
        self.operators.iter().any(|(_, op)| op.has_unfired())
    }

    pub fn completeness_stats(&self) -> CompletenessStats {
        self.completeness.stats()
    }

    /// Whether the device's latest claims say it is draining a backlog.
    pub fn draining(&self, silence: Ticks) -> bool {
        self.completeness.draining(silence)
    }

    /// One element for window `window`, judged against the device's watermark.
    pub fn handle_event(
        &mut self,
        window: usize,
        key: &str,
        ts: Ticks,
        value: f64,
        scratch: &mut Vec<Output>,
        out: &mut Vec<DeviceOutput>,
    ) {
        let watermark = self.watermark;
        let Some((_, operator)) = self.operators.get_mut(window) else { return };
        scratch.clear();
        operator.handle_event(key, ts, value, watermark, scratch);
        out.extend(scratch.drain(..).map(|output| DeviceOutput { window, output, timed_out: false, watermark }));
    }

    /// See [`DeviceCompleteness::handle_events`].
    pub fn handle_events(&mut self, stream: u32, epoch: u64, first_seq: u64, count: u64, last_ts: Ticks) {
        self.completeness.handle_events(stream, epoch, first_seq, count, last_ts);
    }

    /// See [`DeviceCompleteness::handle_gap`].
    pub fn handle_gap(&mut self, stream: u32, epoch: u64, start: u64, end: u64) {
        self.completeness.handle_gap(stream, epoch, start, end);
    }

    /// See [`DeviceCompleteness::handle_claim`].
    pub fn handle_claim(&mut self, claim: &Claim) {
        self.completeness.handle_claim(claim);
    }

    /// Moves the watermark to completeness less `out_of_orderness` (if that is higher) and
    /// fires what it closes. Returns whether the watermark moved.
    pub fn advance(
        &mut self,
        out_of_orderness: Ticks,
        silence: Ticks,
        scratch: &mut Vec<Output>,
        out: &mut Vec<DeviceOutput>,
    ) -> bool {
        let complete = self.completeness.complete_through(silence);
        if complete == NEG_INF {
            return false;
        }
        let watermark = complete.saturating_sub(out_of_orderness.max(0));
        if watermark <= self.watermark {
            return false;
        }
        self.watermark = watermark;
        self.fire(false, scratch, out);
        true
    }

    /// Closes every open window as it stands (the device did not come back in time): each
    /// fires, marked as timed out, and the watermark moves to the last of them. Returns
    /// whether anything fired.
    pub fn time_out(&mut self, scratch: &mut Vec<Output>, out: &mut Vec<DeviceOutput>) -> bool {
        let before = out.len();
        let mut watermark = self.watermark;
        for (window, (_, operator)) in self.operators.iter_mut().enumerate() {
            scratch.clear();
            if let Some(fired_at) = operator.fire_all(scratch) {
                watermark = watermark.max(fired_at);
            }
            out.extend(scratch.drain(..).map(|output| DeviceOutput { window, output, timed_out: true, watermark }));
        }
        for output in &mut out[before..] {
            output.watermark = watermark;
        }
        self.watermark = watermark;
        // Retained windows (allowed lateness) are cleaned up as the watermark says.
        self.fire(true, scratch, out);
        out.len() > before
    }

    fn fire(&mut self, timed_out: bool, scratch: &mut Vec<Output>, out: &mut Vec<DeviceOutput>) {
        let watermark = self.watermark;
        for (window, (_, operator)) in self.operators.iter_mut().enumerate() {
            scratch.clear();
            operator.advance_watermark(watermark, scratch);
            out.extend(scratch.drain(..).map(|output| DeviceOutput { window, output, timed_out, watermark }));
        }
    }
}
