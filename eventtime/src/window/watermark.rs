//! The combined event-time watermark over many sources (one per device in production, one per
//! partition in the test vectors).
//!
//! Each source's watermark is `maxTs - B - 1` (R2), and the combined watermark `W` is the minimum
//! over the active, *aligned* sources; `W` never decreases (R3, R10). Idleness follows R11 *as
//! written*, which differs from Flink's code in the two corners the design leaves to us:
//!
//! - **All sources idle.** `W` jumps to the maximum watermark of all sources, whichever source
//!   went idle last. Flink jumps only if the last source to go idle was the one holding `W`. We
//!   prefer the rule as written because an all-idle fleet then still closes its windows, the
//!   failure users complain about most (§4 item 1). In the design's example
//!   `p3:a@31=1 p1:a@6=2 p2:a@11=4 IDLE(p3) IDLE(p1) p1:a@7=8 IDLE(p2) IDLE(p1) p2:a@15=16 EOF`,
//!   `W` therefore jumps to 30 and `p2:a@15` is dropped, where Flink keeps `W = 10` and accepts it.
//! - **Return from idle, already aligned.** A source whose watermark is already `>= W` when it
//!   becomes active rejoins the minimum at once and `W` is recomputed. Flink does not recompute
//!   until the next watermark arrives.
//!
//! A source that returns from idle behind `W`, or that appears for the first time after `W` left
//! `-inf`, stays *unaligned*: it does not hold `W` back until its own watermark reaches `W`, and
//! meanwhile its elements are judged against the higher `W`, so they can be late (V11). A source
//! registered before `W` leaves `-inf` but silent holds `W` at `-inf` until it sends or goes idle.
//!
//! **Collector-clock floor (our extension, off unless enabled with
//! [`Watermarks::with_clock_floor`]).** Jumping to the maximum still leaves the windows that
//! hold the newest events open until new data arrives (V12: "the last window still waits"),
//! the complaint of §4 items 1 and 6. With the floor, while every source is idle at processing
//! time `now`, `W` rises to `now - idle_timeout - B - 1`. That is safe for live data because
//! corrected event times never exceed their receive time: a source that sends again at `now'`
//! stamps events near `now'`, far above the floor. Only events a device buffered while offline
//! can fall behind it, and those are late under any watermark that lets others progress.
//!
//! **Holds (our extension).** A source given a hold ([`Watermarks::set_holding`]) takes part
//! in the minimum even while it is behind `W`, until the hold ends or expires: `W` then stays
//! where it is (it never decreases) until the source catches up. The collector holds the
//! fleet's watermark for a device that reconnects and drains a backlog, so the fleet's windows
//! wait for its data instead of emitting without it; the expiry bounds how long one device
//! can stop the fleet.
//!
//! The number of tracked sources is bounded by `max_sources`. Events from sources beyond the
//! bound are counted ([`Watermarks::ignored_events`]) and do not move or hold `W`; their elements
//! are still windowed by the operator like any other, so nothing is lost, but a fleet larger than
//! the bound gets a watermark driven by the first `max_sources` sources only.

use std::cmp::Reverse;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BinaryHeap};

use serde::{Deserialize, Serialize};

use super::{NEG_INF, POS_INF, Ticks};

/// The state of one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Source {
    /// `max(ts) - B - 1` over the source's events, `-inf` before any.
    watermark: Ticks,
    /// Processing time of the last event (or of registration), for the idle timeout.
    last_active_at: Ticks,
    /// Idle sources leave the minimum (R11).
    idle: bool,
    /// Whether an active source takes part in the minimum: true once its watermark reached `W`.
    aligned: bool,
    /// Processing time until which the source holds `W` even if it is behind (see the module
    /// docs); `None` without a hold.
    hold_until: Option<Ticks>,
}

/// The combined watermark over all sources; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermarks {
    /// The bound `B` on out-of-orderness, >= 0.
    out_of_orderness: Ticks,
    /// Processing time without events after which [`Watermarks::handle_tick`] marks a source idle;
    /// <= 0 disables that.
    idle_timeout: Ticks,
    /// The most sources tracked; bounds memory.
    max_sources: usize,
    sources: BTreeMap<u64, Source>,
    /// The combined watermark `W`.
    current: Ticks,
    /// Events from sources beyond `max_sources`.
    ignored_events: u64,
    /// See the module docs.
    #[serde(default)]
    clock_floor: bool,
    /// The earliest processing time at which a tick could find a source newly idle; a cache
    /// (not state: never saved, never compared) so that ticks and events do not scan every
    /// source. `-inf` forces the next tick to scan.
    #[serde(skip)]
    idle_check_at: IdleCheck,
    /// Candidates for the minimum over the counted sources, so that `W` does not need a scan
    /// of every source each time the source holding it moves (in a fleet sending at one rate,
    /// that is nearly every event). A cache like `idle_check_at`.
    #[serde(skip)]
    minimum: MinimumCache,
}

/// Whether a source takes part in the minimum.
fn counted(state: &Source) -> bool {
    !state.idle && (state.aligned || state.hold_until.is_some())
}

/// A lazy min-heap of `(watermark, source)`: every counted source has an entry with its
/// current watermark; entries that no longer match their source are stale and dropped when
/// they reach the top. Watermarks mostly rise, so a push rarely sifts up past its parent.
/// `None` (the default, and after deserialising) is rebuilt from the sources on first use.
#[derive(Clone, Debug, Default)]
struct MinimumCache(Option<BinaryHeap<Reverse<(Ticks, u64)>>>);

impl PartialEq for MinimumCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for MinimumCache {}

impl MinimumCache {
    /// Records that counted `source` now has `watermark`. Call after the state changed.
    fn push(&mut self, source: u64, watermark: Ticks, sources: usize) {
        let Some(heap) = &mut self.0 else { return };
        if heap.len() >= 2 * sources + 64 {
            // Mostly stale: rebuilding from the sources (at the next query) bounds its size.
            self.0 = None;
            return;
        }
        heap.push(Reverse((watermark, source)));
    }

    /// The least watermark of a counted source.
    fn least(&mut self, sources: &BTreeMap<u64, Source>) -> Option<Ticks> {
        let heap = self.0.get_or_insert_with(|| {
            sources
                .iter()
                .filter(|(_, state)| counted(state))
                .map(|(id, state)| Reverse((state.watermark, *id)))
                .collect()
        });
        while let Some(&Reverse((watermark, source))) = heap.peek() {
            match sources.get(&source) {
                Some(state) if counted(state) && state.watermark == watermark => return Some(watermark),
                _ => {
                    heap.pop();
                }
            }
        }
        None
    }
}

/// A lower bound that only saves work: equal whatever it holds, `-inf` by default.
#[derive(Clone, Copy, Debug)]
struct IdleCheck(Ticks);

impl Default for IdleCheck {
    fn default() -> Self {
        IdleCheck(NEG_INF)
    }
}

impl PartialEq for IdleCheck {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for IdleCheck {}

impl Watermarks {
    /// A watermark at `-inf` with no sources.
    ///
    /// `out_of_orderness` is `B` in R2; a negative value is treated as 0, since it would declare
    /// elements late before they are seen. `idle_timeout <= 0` disables timeout-based idleness
    /// ([`mark_idle`](Self::mark_idle) still works).
    pub fn new(out_of_orderness: Ticks, idle_timeout: Ticks, max_sources: usize) -> Self {
        Watermarks {
            out_of_orderness: out_of_orderness.max(0),
            idle_timeout,
            max_sources,
            sources: BTreeMap::new(),
            current: NEG_INF,
            ignored_events: 0,
            clock_floor: false,
            idle_check_at: IdleCheck::default(),
            minimum: MinimumCache::default(),
        }
    }

    /// [`Watermarks::new`] with the collector-clock floor (see the module docs).
    pub fn with_clock_floor(out_of_orderness: Ticks, idle_timeout: Ticks, max_sources: usize) -> Self {
        Watermarks { clock_floor: true, ..Watermarks::new(out_of_orderness, idle_timeout, max_sources) }
    }

    /// Applies new settings to restored state (a config change between runs). Sources beyond
    /// a lower `max_sources` stay tracked; new ones are not added until there is room.
    pub fn reconfigure(&mut self, out_of_orderness: Ticks, idle_timeout: Ticks, max_sources: usize) {
        self.out_of_orderness = out_of_orderness.max(0);
        self.idle_timeout = idle_timeout;
        self.max_sources = max_sources;
        self.idle_check_at = IdleCheck::default();
    }

    /// Declares a source that is expected to send. Until it sends or goes idle, it holds `W` at
    /// `-inf` if `W` is still `-inf`, and otherwise joins unaligned. No effect on a known source,
    /// nor beyond `max_sources` (see [`source_count`](Self::source_count)).
    pub fn register(&mut self, source: u64, now: Ticks) {
        self.track(source, now);
    }

    /// Records an event of `source` with event time `ts`, seen at processing time `now`.
    pub fn handle_event(&mut self, source: u64, ts: Ticks, now: Ticks) {
        let candidate = ts.saturating_sub(self.out_of_orderness).saturating_sub(1);
        self.handle_watermark(source, candidate, now);
    }

    /// Records that `source`'s own watermark is now `watermark` (never lowered), seen at
    /// processing time `now`: for sources that know their progress, such as a device's
    /// completeness, rather than inferring it from event times (R2).
    pub fn handle_watermark(&mut self, source: u64, watermark: Ticks, now: Ticks) {
        let current = self.current;
        let tracked = self.sources.len();
        // One lookup for a known source; a new one is tracked as `register` would.
        let (state, new) = match self.sources.entry(source) {
            Entry::Occupied(entry) => (entry.into_mut(), false),
            Entry::Vacant(entry) => {
                if tracked >= self.max_sources {
                    self.ignored_events = self.ignored_events.saturating_add(1);
                    return;
                }
                self.idle_check_at.0 = self.idle_check_at.0.min(now.saturating_add(self.idle_timeout));
                let aligned = current == NEG_INF;
                let source = Source { watermark: NEG_INF, last_active_at: now, idle: false, aligned, hold_until: None };
                (entry.insert(source), true)
            }
        };
        let candidate = watermark;
        let counted_before = counted(state);
        let watermark_before = state.watermark;
        state.watermark = state.watermark.max(candidate);
        state.last_active_at = state.last_active_at.max(now);
        if state.idle {
            state.idle = false;
            state.aligned = false;
            let check_at = state.last_active_at.saturating_add(self.idle_timeout);
            self.idle_check_at.0 = self.idle_check_at.0.min(check_at);
        }
        if !state.aligned && state.watermark >= current {
            state.aligned = true;
        }
        let counted_after = counted(state);
        let watermark = state.watermark;
        if counted_after && (new || !counted_before || watermark != watermark_before) {
            self.minimum.push(source, watermark, self.sources.len());
        }
        // A source in the minimum both before and after, whose watermark was already above
        // `W`, was not the minimum: raising it cannot move `W`.
        let unchanged_minimum = !new && counted_before && counted_after && watermark_before > current;
        if !unchanged_minimum {
            self.recompute();
        }
    }

    /// Gives `source` a hold until processing time `until` (see the module docs), or ends its
    /// hold with `None`. Unknown and idle sources get none: a hold is for a source that sends.
    pub fn set_holding(&mut self, source: u64, until: Option<Ticks>) {
        let current = self.current;
        let Some(state) = self.sources.get_mut(&source) else { return };
        let until = until.filter(|_| !state.idle);
        if state.hold_until == until {
            return;
        }
        state.hold_until = until;
        if until.is_none() && state.watermark < current {
            state.aligned = false;
        }
        if let Some(until) = until {
            self.idle_check_at.0 = self.idle_check_at.0.min(until);
        }
        if counted(state) {
            let (watermark, sources) = (state.watermark, self.sources.len());
            self.minimum.push(source, watermark, sources);
        }
        self.recompute();
    }

    /// Marks a source idle (an explicit `IDLE(p)`): it leaves the minimum until its next event.
    pub fn mark_idle(&mut self, source: u64) {
        if let Some(state) = self.sources.get_mut(&source) {
            state.idle = true;
            // A silent source is not draining anything: its hold ends (as in `handle_tick`).
            state.hold_until = None;
            self.idle_check_at = IdleCheck::default();
            self.recompute();
        }
    }

    /// Marks idle every active source whose last event is at least `idle_timeout` of processing
    /// time before `now`.
    pub fn handle_tick(&mut self, now: Ticks) {
        if now >= self.idle_check_at.0 {
            let mut next_check = POS_INF;
            let current = self.current;
            let idle_timeout = self.idle_timeout;
            for state in self.sources.values_mut() {
                if idle_timeout > 0 && !state.idle && now.saturating_sub(state.last_active_at) >= idle_timeout {
                    state.idle = true;
                }
                if state.idle {
                    // A silent source is not draining anything: its hold ends.
                    state.hold_until = None;
                }
                match state.hold_until {
                    Some(until) if until <= now => {
                        state.hold_until = None;
                        state.aligned = state.watermark >= current;
                    }
                    Some(until) => next_check = next_check.min(until),
                    None => {}
                }
                if idle_timeout > 0 && !state.idle {
                    next_check = next_check.min(state.last_active_at.saturating_add(idle_timeout));
                }
            }
            self.idle_check_at = IdleCheck(next_check);
            self.recompute();
        }
        if self.idle_timeout <= 0 {
            return;
        }
        // Before the next scan is due some source is active; after one, `+inf` means none is
        // (or a check time saturated, hence the check).
        if self.clock_floor
            && !self.sources.is_empty()
            && self.idle_check_at.0 == POS_INF
            && self.sources.values().all(|state| state.idle)
        {
            let floor = now.saturating_sub(self.idle_timeout).saturating_sub(self.out_of_orderness).saturating_sub(1);
            self.current = self.current.max(floor);
        }
    }

    /// Forgets a source for good (a decommissioned device), freeing its slot. `W` does not
    /// decrease.
    pub fn remove(&mut self, source: u64) {
        if self.sources.remove(&source).is_some() {
            self.idle_check_at = IdleCheck::default();
            self.recompute();
        }
    }

    /// End of input: `W = +inf`, so every window fires and is cleaned up.
    pub fn finish(&mut self) {
        self.current = POS_INF;
    }

    /// The combined watermark `W`; never decreases.
    pub fn current(&self) -> Ticks {
        self.current
    }

    /// A source's own watermark, if it is tracked.
    pub fn source_watermark(&self, source: u64) -> Option<Ticks> {
        self.sources.get(&source).map(|state| state.watermark)
    }

    /// Whether a tracked source is idle.
    pub fn is_idle(&self, source: u64) -> Option<bool> {
        self.sources.get(&source).map(|state| state.idle)
    }

    /// How many sources are tracked.
    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// Events from sources beyond `max_sources`, which did not take part in the watermark.
    pub fn ignored_events(&self) -> u64 {
        self.ignored_events
    }

    /// Starts tracking `source` if there is room; false if it is unknown and there is none.
    fn track(&mut self, source: u64, now: Ticks) -> bool {
        if self.sources.contains_key(&source) {
            return true;
        }
        if self.sources.len() >= self.max_sources {
            return false;
        }
        let aligned = self.current == NEG_INF;
        let state = Source { watermark: NEG_INF, last_active_at: now, idle: false, aligned, hold_until: None };
        self.sources.insert(source, state);
        if aligned {
            self.minimum.push(source, NEG_INF, self.sources.len());
        }
        self.idle_check_at.0 = self.idle_check_at.0.min(now.saturating_add(self.idle_timeout));
        self.recompute();
        true
    }

    fn recompute(&mut self) {
        let active_aligned_min = self.minimum.least(&self.sources);
        let candidate = match active_aligned_min {
            Some(min) => min,
            None if self.sources.values().all(|state| state.idle) => {
                // Every source idle: jump to the maximum (R11 as written). With no sources at all
                // there is nothing to jump to.
                self.sources.values().map(|state| state.watermark).max().unwrap_or(NEG_INF)
            }
            // Active sources exist but none is aligned yet: hold W where it is.
            None => self.current,
        };
        self.current = self.current.max(candidate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shortcuts (no rescan before an idle check is due, no recompute when a source above
    /// `W` moves, the minimum from a heap) change nothing: a copy that rescans every source and
    /// recomputes after every step agrees.
    #[test]
    fn shortcuts_agree_with_a_full_rescan_after_every_step() {
        proptest::proptest!(|(steps in proptest::collection::vec((0u8..8, 0u64..6, -50i64..200, 0i64..40), 1..300),
                              floor: bool)| {
            let new = if floor { Watermarks::with_clock_floor } else { Watermarks::new };
            let (mut fast, mut full) = (new(5, 30, 4), new(5, 30, 4));
            let mut now = 0;
            for (op, source, ts, advance) in steps {
                now += advance;
                let apply = |w: &mut Watermarks| match op {
                    0 | 1 => w.handle_event(source, now + ts, now),
                    2 => w.handle_tick(now),
                    3 => w.mark_idle(source),
                    4 => w.remove(source),
                    5 => w.set_holding(source, Some(now + ts.max(0))),
                    6 => w.set_holding(source, None),
                    // A checkpoint round trip: the caches start empty.
                    _ => {
                        let bytes = postcard::to_allocvec(&*w).unwrap_or_default();
                        if let Ok(restored) = postcard::from_bytes(&bytes) {
                            *w = restored;
                        }
                    }
                };
                apply(&mut fast);
                full.idle_check_at = IdleCheck::default();
                apply(&mut full);
                full.idle_check_at = IdleCheck::default();
                full.handle_tick(i64::MIN); // no source is idle that long: only forces the rescan
                full.minimum = MinimumCache::default(); // the minimum from a scan of every source
                full.recompute();
                proptest::prop_assert_eq!(fast.current(), full.current());
                for source in 0..6 {
                    proptest::prop_assert_eq!(fast.is_idle(source), full.is_idle(source));
                }
            }
        });
    }

    #[test]
    fn single_source_follows_max_ts_minus_bound() {
        let mut watermarks = Watermarks::new(5, 0, 4);
        assert_eq!(watermarks.current(), NEG_INF);
        watermarks.handle_event(0, 3, 0);
        assert_eq!(watermarks.current(), -3);
        watermarks.handle_event(0, 12, 1);
        watermarks.handle_event(0, 7, 2);
        assert_eq!(watermarks.current(), 6);
        watermarks.handle_event(0, i64::MIN, 3);
        assert_eq!(watermarks.current(), 6);
        watermarks.finish();
        watermarks.handle_event(0, 100, 4);
        assert_eq!(watermarks.current(), POS_INF);
    }

    #[test]
    fn registered_silent_source_holds_w_until_idle_timeout() {
        let mut watermarks = Watermarks::new(0, 100, 4);
        watermarks.register(1, 0);
        watermarks.register(2, 0);
        watermarks.handle_event(1, 50, 10);
        assert_eq!(watermarks.current(), NEG_INF);
        watermarks.handle_tick(99);
        assert_eq!(watermarks.current(), NEG_INF);
        watermarks.handle_tick(100);
        assert_eq!(watermarks.is_idle(2), Some(true));
        assert_eq!(watermarks.is_idle(1), Some(false));
        assert_eq!(watermarks.current(), 49);
    }

    #[test]
    fn the_clock_floor_closes_the_last_window_of_an_idle_fleet() {
        let mut plain = Watermarks::new(5, 100, 4);
        let mut floored = Watermarks::with_clock_floor(5, 100, 4);
        for watermarks in [&mut plain, &mut floored] {
            watermarks.handle_event(1, 1_000, 1_000);
            watermarks.handle_tick(1_050);
            assert_eq!(watermarks.current(), 994);
            watermarks.handle_tick(1_100);
            assert_eq!(watermarks.is_idle(1), Some(true));
        }
        assert_eq!(plain.current(), 994);
        floored.handle_tick(2_000);
        assert_eq!(plain.current(), 994);
        plain.handle_tick(2_000);
        assert_eq!(plain.current(), 994, "Flink semantics: the last window waits");
        assert_eq!(floored.current(), 2_000 - 100 - 5 - 1);
        // A live event afterwards is ahead of the floor; the source rejoins aligned.
        floored.handle_event(1, 1_995, 2_000);
        assert_eq!(floored.is_idle(1), Some(false));
        assert_eq!(floored.current(), 1_989);
    }

    #[test]
    fn new_source_after_start_joins_unaligned() {
        let mut watermarks = Watermarks::new(0, 0, 4);
        watermarks.handle_event(1, 20, 0);
        watermarks.handle_event(2, 5, 0);
        assert_eq!(watermarks.current(), 19);
        watermarks.handle_event(2, 25, 0);
        watermarks.handle_event(1, 40, 0);
        assert_eq!(watermarks.current(), 24);
    }

    #[test]
    fn sources_beyond_the_bound_are_counted_and_ignored() {
        let mut watermarks = Watermarks::new(0, 0, 1);
        watermarks.handle_event(1, 10, 0);
        watermarks.handle_event(2, 1, 0);
        assert_eq!(watermarks.current(), 9);
        assert_eq!(watermarks.ignored_events(), 1);
        assert_eq!(watermarks.source_count(), 1);
        watermarks.remove(1);
        watermarks.handle_event(2, 1, 0);
        assert_eq!(watermarks.source_count(), 1);
        assert_eq!(watermarks.current(), 9);
    }

    #[test]
    fn returning_already_aligned_recomputes_at_once() {
        let mut watermarks = Watermarks::new(0, 0, 4);
        watermarks.handle_event(1, 11, 0);
        watermarks.handle_event(2, 21, 0);
        assert_eq!(watermarks.current(), 10);
        watermarks.mark_idle(2);
        watermarks.handle_event(1, 31, 0);
        assert_eq!(watermarks.current(), 30);
        watermarks.mark_idle(1);
        // p2 returns with 40 >= W = 30: aligned at once, W = min(p2) since p1 is idle.
        watermarks.handle_event(2, 41, 0);
        assert_eq!(watermarks.current(), 40);
    }

    #[test]
    fn a_hold_keeps_w_where_it_is_until_the_source_catches_up_or_the_hold_expires() {
        let returning = |until| {
            let mut watermarks = Watermarks::new(0, 100, 4);
            watermarks.handle_watermark(1, 50, 0);
            watermarks.handle_watermark(2, 60, 0);
            assert_eq!(watermarks.current(), 50);
            // Device 2 goes quiet; W follows device 1 alone.
            watermarks.handle_tick(100);
            watermarks.handle_watermark(1, 200, 150);
            assert_eq!(watermarks.current(), 200);
            // Device 2 comes back draining a backlog, far behind: without a hold it would not
            // count (R11); with one, W stops where it is.
            watermarks.handle_watermark(2, 70, 160);
            watermarks.set_holding(2, until);
            watermarks.handle_watermark(1, 300, 170);
            watermarks
        };
        assert_eq!(returning(None).current(), 300, "no hold: the fleet moves on");
        let mut held = returning(Some(260));
        assert_eq!(held.current(), 200);
        // It catches up to 250: W follows it, below device 1's 300.
        held.handle_watermark(2, 250, 180);
        assert_eq!(held.current(), 250);
        held.set_holding(2, None);
        held.handle_watermark(2, 280, 190);
        assert_eq!(held.current(), 280, "caught up, it is an aligned source like any other");

        let mut expiring = returning(Some(260));
        expiring.handle_tick(250);
        assert_eq!(expiring.current(), 200);
        expiring.handle_tick(260);
        assert_eq!(expiring.current(), 300, "the hold expired behind W");
        expiring.handle_watermark(2, 100, 265);
        assert_eq!(expiring.current(), 300);
    }

    /// A source marked idle loses its hold, whether the idleness came from `mark_idle` or from a
    /// tick: otherwise the shortcut (no rescan before a check is due) and a full rescan disagreed
    /// on whether the returning source still held `W` (a case the property test found).
    #[test]
    fn marking_a_source_idle_ends_its_hold() {
        let mut watermarks = Watermarks::new(5, 30, 4);
        watermarks.handle_event(0, 0, 0);
        watermarks.set_holding(0, Some(0));
        watermarks.handle_event(1, 12, 0);
        watermarks.mark_idle(0);
        assert_eq!(watermarks.current(), 6);
        // Back, behind W and without its hold: it does not count.
        watermarks.handle_event(0, 0, 0);
        watermarks.handle_event(1, 30, 13);
        assert_eq!(watermarks.current(), 24);
    }
}
