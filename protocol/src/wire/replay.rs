//! Replay protection.
//!
//! Every frame carries `(epoch, sent_at)` under its MAC, and a sender never reuses a
//! `sent_at` within an epoch (see [`super::Sealer::header`]). A receiver keeps, per key and
//! epoch, a floor and the set of values it accepted above the floor: anything at or below the
//! floor, or already in the set, is a replay. The set is bounded; when it is full the smallest
//! value is evicted and becomes the floor, so the filter stays exact (never accepts a replay)
//! at the cost of rejecting a frame delayed behind more than `N` newer ones.
//!
//! Epochs: a guard keeps windows for the `EPOCHS` most recently used epochs of a key. A frame
//! from an epoch it does not hold starts a new window. So a replay of a frame from an epoch
//! that was evicted long ago passes this filter; it then meets the per-stream dedup state,
//! which the collector persists, so it can never deliver an event twice.

use super::Reject;
use crate::Epoch;

#[derive(Clone, Debug)]
pub struct ReplayWindow<const N: usize> {
    /// Every value at or below the floor is rejected.
    floor: Option<u64>,
    /// Accepted values above the floor, ascending.
    recent: SortedRing<N>,
    /// Values more than this far below the highest accepted one are rejected.
    window_micros: u64,
}

impl<const N: usize> ReplayWindow<N> {
    pub const fn new(window_micros: u64) -> Self {
        ReplayWindow { floor: None, recent: SortedRing::new(), window_micros }
    }

    pub fn check(&self, sent_at: u64) -> Result<(), Reject> {
        if self.floor.is_some_and(|floor| sent_at <= floor) {
            return Err(Reject::Replayed);
        }
        let Some(highest) = self.recent.last() else { return Ok(()) };
        // Frames mostly arrive in the order they were sealed: above every value held.
        if sent_at > highest {
            return Ok(());
        }
        if sent_at.saturating_add(self.window_micros) < highest {
            return Err(Reject::Replayed);
        }
        if self.recent.binary_search(sent_at).is_ok() {
            return Err(Reject::Replayed);
        }
        Ok(())
    }

    /// Records `sent_at`. Call only after [`Self::check`] passed and the frame was accepted.
    pub fn accept(&mut self, sent_at: u64) {
        // In order (the common case): above every value held, so not among them, and its
        // place is the end.
        let newest = self.recent.last().is_none_or(|highest| sent_at > highest);
        if !newest && self.recent.binary_search(sent_at).is_ok() {
            return;
        }
        if self.recent.is_full() {
            let Some(evicted) = self.recent.pop_front() else { return };
            self.raise_floor(evicted);
            if sent_at <= evicted {
                return;
            }
        }
        let at = if newest {
            self.recent.len
        } else {
            let Err(at) = self.recent.binary_search(sent_at) else { return };
            at
        };
        self.recent.insert(at, sent_at);
        let highest = self.recent.last().unwrap_or(sent_at);
        let cutoff = highest.saturating_sub(self.window_micros);
        while self.recent.first().is_some_and(|v| v < cutoff) {
            if let Some(evicted) = self.recent.pop_front() {
                self.raise_floor(evicted);
            }
        }
    }

    fn raise_floor(&mut self, value: u64) {
        self.floor = Some(self.floor.map_or(value, |floor| floor.max(value)));
    }
}

/// Up to `N` ascending values in a ring, so evicting the smallest (every frame, once the
/// window is full) moves nothing; an insert moves only the values above it, which for
/// frames arriving in order is none.
#[derive(Clone, Debug)]
struct SortedRing<const N: usize> {
    values: [u64; N],
    /// Where the smallest value is.
    head: usize,
    len: usize,
}

impl<const N: usize> SortedRing<N> {
    const fn new() -> Self {
        SortedRing { values: [0; N], head: 0, len: 0 }
    }

    /// The slot of the `index`-th smallest value; `index <= len <= N`.
    fn slot(&self, index: usize) -> usize {
        let slot = self.head + index;
        if slot >= N { slot - N } else { slot }
    }

    fn get(&self, index: usize) -> u64 {
        self.values[self.slot(index)]
    }

    fn is_full(&self) -> bool {
        self.len == N
    }

    fn first(&self) -> Option<u64> {
        (self.len > 0).then(|| self.get(0))
    }

    fn last(&self) -> Option<u64> {
        self.len.checked_sub(1).map(|index| self.get(index))
    }

    /// As `slice::binary_search`, over the ascending values.
    fn binary_search(&self, value: u64) -> Result<usize, usize> {
        let (mut low, mut high) = (0, self.len);
        while low < high {
            let mid = low + (high - low) / 2;
            match self.get(mid).cmp(&value) {
                core::cmp::Ordering::Less => low = mid + 1,
                core::cmp::Ordering::Greater => high = mid,
                core::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(low)
    }

    fn pop_front(&mut self) -> Option<u64> {
        let value = self.first()?;
        self.head = self.slot(1);
        self.len -= 1;
        Some(value)
    }

    /// Inserts `value` as the `index`-th smallest. Ignored when full (callers evict first).
    fn insert(&mut self, index: usize, value: u64) {
        if self.is_full() || index > self.len {
            return;
        }
        let mut at = self.len;
        while at > index {
            self.values[self.slot(at)] = self.get(at - 1);
            at -= 1;
        }
        let slot = self.slot(index);
        self.values[slot] = value;
        self.len += 1;
    }
}

/// Replay windows for the most recently used epochs of one key.
#[derive(Clone, Debug)]
pub struct ReplayGuard<const EPOCHS: usize, const N: usize> {
    windows: heapless::Vec<(Epoch, ReplayWindow<N>, u64), EPOCHS>,
    window_micros: u64,
    uses: u64,
}

impl<const EPOCHS: usize, const N: usize> ReplayGuard<EPOCHS, N> {
    pub const fn new(window_micros: u64) -> Self {
        ReplayGuard { windows: heapless::Vec::new(), window_micros, uses: 0 }
    }

    pub fn check(&self, epoch: Epoch, sent_at: u64) -> Result<(), Reject> {
        match self.windows.iter().find(|(e, _, _)| *e == epoch) {
            Some((_, window, _)) => window.check(sent_at),
            None => Ok(()),
        }
    }

    pub fn accept(&mut self, epoch: Epoch, sent_at: u64) {
        self.uses += 1;
        let uses = self.uses;
        if let Some((_, window, last_use)) = self.windows.iter_mut().find(|(e, _, _)| *e == epoch) {
            window.accept(sent_at);
            *last_use = uses;
            return;
        }
        if self.windows.is_full() {
            let lru = (0..self.windows.len()).min_by_key(|&i| self.windows[i].2).unwrap_or(0);
            self.windows.swap_remove(lru);
        }
        let mut window = ReplayWindow::new(self.window_micros);
        window.accept(sent_at);
        let pushed = self.windows.push((epoch, window, uses));
        debug_assert!(pushed.is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_old_values_are_rejected() {
        let mut w = ReplayWindow::<4>::new(1_000);
        for v in [100, 300, 200] {
            w.check(v).unwrap();
            w.accept(v);
        }
        assert_eq!(w.check(200), Err(Reject::Replayed));
        assert_eq!(w.check(300), Err(Reject::Replayed));
        w.check(250).unwrap();
        // Far below the highest: outside the time window.
        w.accept(5_000);
        assert_eq!(w.check(3_000), Err(Reject::Replayed));
        w.check(4_500).unwrap();
    }

    #[test]
    fn a_full_window_evicts_into_the_floor_and_stays_exact() {
        let mut w = ReplayWindow::<3>::new(u64::MAX);
        for v in [10, 20, 30, 40] {
            w.accept(v);
        }
        // 10 was evicted and is now the floor: rejected, as is anything below it.
        assert_eq!(w.check(10), Err(Reject::Replayed));
        assert_eq!(w.check(5), Err(Reject::Replayed));
        assert_eq!(w.check(20), Err(Reject::Replayed));
        w.check(15).unwrap();
    }

    /// The ring behaves as the plain sorted vector it replaced, including when it wraps.
    #[test]
    fn the_ring_window_agrees_with_a_sorted_vector() {
        struct Reference {
            floor: Option<u64>,
            recent: std::vec::Vec<u64>,
            window_micros: u64,
        }
        impl Reference {
            fn check(&self, v: u64) -> Result<(), Reject> {
                let replayed = self.floor.is_some_and(|f| v <= f)
                    || self.recent.last().is_some_and(|&h| v.saturating_add(self.window_micros) < h)
                    || self.recent.binary_search(&v).is_ok();
                if replayed { Err(Reject::Replayed) } else { Ok(()) }
            }
            fn evict(&mut self) -> u64 {
                let evicted = self.recent.remove(0);
                self.floor = Some(self.floor.map_or(evicted, |f| f.max(evicted)));
                evicted
            }
            fn accept(&mut self, v: u64) {
                if self.recent.binary_search(&v).is_ok() {
                    return;
                }
                if self.recent.len() == 5 && v <= self.evict() {
                    return;
                }
                let Err(at) = self.recent.binary_search(&v) else { return };
                self.recent.insert(at, v);
                let cutoff = self.recent.last().copied().unwrap_or(v).saturating_sub(self.window_micros);
                while self.recent.first().is_some_and(|&f| f < cutoff) {
                    self.evict();
                }
            }
        }
        proptest::proptest!(|(values in proptest::collection::vec(0u64..60, 1..200), window in 1u64..40)| {
            let mut ring = ReplayWindow::<5>::new(window);
            let mut reference = Reference { floor: None, recent: std::vec::Vec::new(), window_micros: window };
            for v in values {
                let checked = ring.check(v);
                proptest::prop_assert_eq!(checked, reference.check(v));
                if checked.is_ok() {
                    ring.accept(v);
                    reference.accept(v);
                }
                for probe in 0..64 {
                    proptest::prop_assert_eq!(ring.check(probe), reference.check(probe));
                }
            }
        });
    }

    #[test]
    fn guard_tracks_epochs_separately() {
        let mut g = ReplayGuard::<2, 8>::new(1_000_000);
        g.accept(1, 100);
        g.accept(2, 100);
        assert_eq!(g.check(1, 100), Err(Reject::Replayed));
        assert_eq!(g.check(2, 100), Err(Reject::Replayed));
        g.check(3, 100).unwrap();
    }
}
