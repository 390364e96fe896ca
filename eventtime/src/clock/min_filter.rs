//! The minimum filter (`time-and-windows.md` §3.3 item 1) over a sliding window of device time.
//!
//! `t3 - t2` is the offset plus that batch's one-way delay, so the smallest value in a window
//! has the least queueing, retransmission and radio-wake time in it. The same filter keeps the
//! tightest exchange legs: the smallest up leg and the largest down leg. The window is cut into
//! a fixed number of slots that each keep their own tightest bound: the window slides in slot
//! steps (1/64 of it) and memory stays bounded however fast a device sends. Bounds are compared
//! after removing the fitted drift, which the design note suggests so that a drifting clock does
//! not always favour the end of the window where the offset happens to be lowest.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::bound::{Bound, BoundSide};

/// Slots per window. 64 slots of a 10 min window are ~9 s: about one batch each.
const SLOTS_PER_WINDOW: u64 = 64;

/// A slot: the tightest one-way bound seen in its stretch of device time.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Slot {
    index: u64,
    tightest: Bound,
    /// Samples folded into this slot, for `samples_used`.
    samples: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct MinFilter {
    /// Sorted by `index`, hence by device time.
    slots: VecDeque<Slot>,
}

impl MinFilter {
    /// Adds one bound (all of one side); `slope` is the fitted drift used to compare bounds.
    /// Call [`evict`](Self::evict) after it.
    pub(crate) fn insert(&mut self, window_us: u64, sample: Bound, slope: f64) {
        let slot_width_us = (window_us / SLOTS_PER_WINDOW).max(1);
        let index = sample.device_us / slot_width_us;
        let position = super::sorted::position(&self.slots, index, |slot| slot.index);
        match self.slots.get_mut(position) {
            Some(slot) if slot.index == index => {
                slot.samples = slot.samples.saturating_add(1);
                if sample.tighter_than(&slot.tightest, slope) {
                    slot.tightest = sample;
                }
            }
            _ => self.slots.insert(position, Slot { index, tightest: sample, samples: 1 }),
        }
    }

    /// Drops slots older than the window ending at `newest_device_us`. The hard cap also covers a window changed between
    /// calls or samples that arrive in an order the slot arithmetic did not foresee.
    pub(crate) fn evict(&mut self, window_us: u64, newest_device_us: u64) {
        let oldest_kept_us = newest_device_us.saturating_sub(window_us);
        while self.slots.front().is_some_and(|slot| slot.tightest.device_us < oldest_kept_us) {
            self.slots.pop_front();
        }
        while self.slots.len() > 2 * SLOTS_PER_WINDOW as usize {
            self.slots.pop_front();
        }
    }

    /// The tightest bound of each slot in the window.
    pub(crate) fn bounds(&self) -> impl Iterator<Item = Bound> + '_ {
        self.slots.iter().map(|slot| slot.tightest)
    }

    /// How many samples the current minima were chosen from.
    pub(crate) fn samples(&self) -> usize {
        self.slots.iter().map(|slot| slot.samples as usize).sum()
    }

    /// A one-way sample as the bound it is.
    pub(crate) fn bound(sent_device_us: u64, offset_us: i64) -> Bound {
        Bound { device_us: sent_device_us, offset_us, side: BoundSide::Upper }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_minimum_per_slot_and_slides() {
        let mut filter = MinFilter::default();
        let window_us = 6400;
        for (device_us, offset_us) in [(0, 50), (50, 40), (99, 60), (100, 70), (6460, 80)] {
            filter.insert(window_us, MinFilter::bound(device_us, offset_us), 0.0);
            filter.evict(window_us, device_us);
        }
        let kept: Vec<_> = filter.bounds().map(|bound| (bound.device_us, bound.offset_us)).collect();
        // Slot 0 (0..100, minimum at 50) left the window ending at 6460; slot 1 holds 100.
        assert_eq!(kept, [(100, 70), (6460, 80)]);
        assert_eq!(filter.samples(), 2);
    }

    #[test]
    fn memory_is_bounded() {
        let mut filter = MinFilter::default();
        for device_us in 0..10_000 {
            filter.insert(1_000_000, MinFilter::bound(device_us * 1_000, 0), 0.0);
            filter.evict(1_000_000, device_us * 1_000);
        }
        assert!(filter.slots.len() <= 2 * SLOTS_PER_WINDOW as usize);
    }
}
