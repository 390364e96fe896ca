//! The operator's window table: per key, the open windows by start, plus their timers.
//!
//! Timers live in ordered sets keyed by `(time, key, start)`, so "every timer `<= W`" is a prefix
//! and equal times come out by key, then start: the deterministic tie order the operator
//! promises (Flink leaves it unspecified, R6). Windows are nested maps (key, then start) rather
//! than one map keyed by a tuple so that the table serialises to formats whose map keys must be
//! strings or integers (JSON), and so that a key's sessions form one ordered range.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::Ticks;
use super::aggregate::Aggregate;
use super::assign::WindowBounds;
use super::output::WindowResult;

/// One open window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct WindowState {
    /// Exclusive end; the start is the table key.
    pub(crate) end: Ticks,
    /// Everything accepted so far (accumulating, R15).
    pub(crate) acc: Aggregate,
    /// What the last `Insert` carried, retracted when the window fires again or is merged away.
    pub(crate) emitted: Option<Aggregate>,
    /// Retractions of fired sessions that a merge replaced before this session fired; emitted
    /// just before its first `Insert` (§1.6: retractions travel with the merged result).
    pub(crate) pending_retractions: Vec<WindowResult>,
    /// The pending firing timer (`end - 1`), `None` once the window has fired.
    fire_at: Option<Ticks>,
    /// The cleanup timer (`end - 1 + allowed_lateness`, R13).
    cleanup_at: Ticks,
}

impl WindowState {
    /// A window that has not fired. `fire_at` is `None` if the caller fires it at once.
    pub(crate) fn new(end: Ticks, acc: Aggregate, fire_at: Option<Ticks>, cleanup_at: Ticks) -> Self {
        WindowState { end, acc, emitted: None, pending_retractions: Vec::new(), fire_at, cleanup_at }
    }

    /// Fired, with nothing held back: what may move out of memory until a late element or its
    /// cleanup needs it again.
    pub(crate) fn is_settled(&self) -> bool {
        self.fire_at.is_none() && self.pending_retractions.is_empty()
    }

    pub(crate) fn cleanup_at(&self) -> Ticks {
        self.cleanup_at
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Timer {
    at: Ticks,
    key: String,
    start: Ticks,
}

/// All open windows and their timers; keeps the three in step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct WindowTable {
    windows: BTreeMap<String, BTreeMap<Ticks, WindowState>>,
    fire_timers: BTreeSet<Timer>,
    cleanup_timers: BTreeSet<Timer>,
    /// Number of windows over all keys, kept to check the bound in O(1).
    len: usize,
}

impl WindowTable {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, key: &str, start: Ticks) -> Option<&WindowState> {
        self.windows.get(key)?.get(&start)
    }

    pub(crate) fn get_mut(&mut self, key: &str, start: Ticks) -> Option<&mut WindowState> {
        self.windows.get_mut(key)?.get_mut(&start)
    }

    /// Adds a window with its timers. A window already at `(key, start)` is replaced.
    pub(crate) fn insert(&mut self, key: &str, start: Ticks, state: WindowState) {
        self.remove(key, start);
        if let Some(at) = state.fire_at {
            self.fire_timers.insert(Timer { at, key: key.to_owned(), start });
        }
        self.cleanup_timers.insert(Timer { at: state.cleanup_at, key: key.to_owned(), start });
        self.windows.entry(key.to_owned()).or_default().insert(start, state);
        self.len += 1;
    }

    /// Removes a window and its timers.
    pub(crate) fn remove(&mut self, key: &str, start: Ticks) -> Option<WindowState> {
        let per_key = self.windows.get_mut(key)?;
        let state = per_key.remove(&start)?;
        if per_key.is_empty() {
            self.windows.remove(key);
        }
        self.len = self.len.saturating_sub(1);
        self.remove_timers(key, start, &state);
        Some(state)
    }

    /// Starts of the sessions of `key` that merge with `proto` (R7), in increasing order.
    ///
    /// Sessions of one key in the table never merge with each other (each insert merged all it
    /// touched), so sorted by start they are also sorted by end, and the sessions that merge with
    /// `proto` are the ones just before `proto.end` whose end reaches `proto.start`.
    pub(crate) fn sessions_merging_with(&self, key: &str, proto: WindowBounds) -> Vec<Ticks> {
        let Some(per_key) = self.windows.get(key) else { return Vec::new() };
        let mut starts: Vec<Ticks> = per_key
            .range(..=proto.end)
            .rev()
            .take_while(|(_, state)| state.end >= proto.start)
            .map(|(&start, _)| start)
            .collect();
        starts.reverse();
        starts
    }

    /// The latest `end - 1` of any window that has not fired yet.
    pub(crate) fn last_fire_time(&self) -> Option<Ticks> {
        self.fire_timers.last().map(|timer| timer.at)
    }

    /// Takes the earliest firing timer `<= watermark` and marks its window fired.
    pub(crate) fn pop_fire_due(&mut self, watermark: Ticks) -> Option<(String, Ticks)> {
        let timer = pop_due(&mut self.fire_timers, watermark)?;
        if let Some(state) = self.get_mut(&timer.key, timer.start) {
            state.fire_at = None;
        }
        Some((timer.key, timer.start))
    }

    /// Takes the earliest cleanup timer `<= watermark`.
    pub(crate) fn pop_cleanup_due(&mut self, watermark: Ticks) -> Option<(String, Ticks)> {
        pop_due(&mut self.cleanup_timers, watermark).map(|timer| (timer.key, timer.start))
    }

    fn remove_timers(&mut self, key: &str, start: Ticks, state: &WindowState) {
        if let Some(at) = state.fire_at {
            self.fire_timers.remove(&Timer { at, key: key.to_owned(), start });
        }
        self.cleanup_timers.remove(&Timer { at: state.cleanup_at, key: key.to_owned(), start });
    }
}

fn pop_due(timers: &mut BTreeSet<Timer>, watermark: Ticks) -> Option<Timer> {
    if timers.first()?.at > watermark {
        return None;
    }
    timers.pop_first()
}
