//! Which windows an event time belongs to.
//!
//! The arithmetic runs in `i128`, where `ts - offset`, `start + size` and the hopping loop cannot
//! overflow for any `i64` input; a window that does not fit back into `i64` ticks is reported as
//! absent instead. The operator treats an element with no representable window as late: such a
//! window could only fire at end of input anyway, and an extreme timestamp must never panic the
//! collector.

use serde::{Deserialize, Serialize};

use super::Ticks;
use super::spec::{MAX_WINDOWS_PER_ELEMENT, WindowKind};

/// A half-open window `[start, end)` (R1). Always `start < end` when produced here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowBounds {
    /// First tick inside the window.
    pub start: Ticks,
    /// First tick after the window.
    pub end: Ticks,
}

impl WindowBounds {
    /// The largest member timestamp, `end - 1`: the window fires once the watermark reaches it
    /// (R1, R6, R9).
    pub fn max_timestamp(self) -> Ticks {
        // Saturating only guards hand-built bounds; assigned ones have `end > start >= i64::MIN`.
        self.end.saturating_sub(1)
    }

    /// When the window's state may be dropped: `end - 1 + allowed_lateness` (R13). Saturates, so
    /// a window at the top of the tick range is kept until end of input rather than overflowing.
    pub fn cleanup_time(self, allowed_lateness: Ticks) -> Ticks {
        self.max_timestamp().saturating_add(allowed_lateness)
    }

    /// Whether `ts` lies inside `[start, end)`.
    pub fn contains(self, ts: Ticks) -> bool {
        self.start <= ts && ts < self.end
    }

    /// Whether two session windows merge (R7): they overlap or touch, so two events exactly `gap`
    /// apart share a session, as in Flink and Kafka Streams (Beam requires overlap).
    pub fn merges_with(self, other: WindowBounds) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    /// The smallest window covering both.
    pub fn cover(self, other: WindowBounds) -> WindowBounds {
        WindowBounds { start: self.start.min(other.start), end: self.end.max(other.end) }
    }

    fn from_wide(start: i128, end: i128) -> Option<WindowBounds> {
        Some(WindowBounds { start: Ticks::try_from(start).ok()?, end: Ticks::try_from(end).ok()? })
    }
}

/// The tumbling window holding `ts` (R4): `start = ts - floorMod(ts - offset, size)`.
///
/// `rem_euclid` is the floor modulo for a positive divisor, so negative timestamps land in the
/// right window (V2: `-8` with size 10 and offset 3 is in `[-17, -7)`, not `[-7, 3)` as with the
/// old truncating formula). `None` if `size <= 0` or the window does not fit in `i64` ticks.
pub fn tumbling_window(ts: Ticks, size: Ticks, offset: Ticks) -> Option<WindowBounds> {
    if size <= 0 {
        return None;
    }
    // The common case in i64; the same formula in i128 where a step would overflow.
    if let Some(shifted) = ts.checked_sub(offset)
        && let Some(start) = ts.checked_sub(shifted.rem_euclid(size))
        && let Some(end) = start.checked_add(size)
    {
        return Some(WindowBounds { start, end });
    }
    let (ts, size, offset) = (i128::from(ts), i128::from(size), i128::from(offset));
    let start = ts - (ts - offset).rem_euclid(size);
    WindowBounds::from_wide(start, start + size)
}

/// Every hopping window holding `ts`, in increasing start order (Flink's
/// `SlidingEventTimeWindows`): starts are aligned to `slide` (shifted by `offset`), and a window
/// of length `size` starts at each of them that lies in `(ts - size, ts]`.
///
/// Windows that do not fit in `i64` ticks are left out. Away from the ends of the tick range there
/// are `size / slide` windows when `slide` divides `size`, otherwise that number rounded down or
/// up depending on `ts`. For a spec that [`validate`](super::WindowSpec::validate) rejects, the
/// result is at most [`MAX_WINDOWS_PER_ELEMENT`] windows and never a panic.
pub fn hopping_windows(ts: Ticks, size: Ticks, slide: Ticks, offset: Ticks) -> Vec<WindowBounds> {
    if size <= 0 || slide <= 0 {
        return Vec::new();
    }
    let (ts, size, slide, offset) = (i128::from(ts), i128::from(size), i128::from(slide), i128::from(offset));
    let last_start = ts - (ts - offset).rem_euclid(slide);
    let mut windows: Vec<WindowBounds> = Vec::new();
    let mut start = last_start;
    let mut produced: Ticks = 0;
    while start > ts - size && produced < MAX_WINDOWS_PER_ELEMENT {
        if let Some(window) = WindowBounds::from_wide(start, start + size) {
            windows.push(window);
        }
        start -= slide;
        produced += 1;
    }
    windows.reverse();
    windows
}

/// The session proto-window `[ts, ts + gap)` (R7). `None` if `gap <= 0` or `ts + gap` overflows.
pub fn session_window(ts: Ticks, gap: Ticks) -> Option<WindowBounds> {
    if gap <= 0 {
        return None;
    }
    Some(WindowBounds { start: ts, end: ts.checked_add(gap)? })
}

/// The windows `ts` belongs to before any session merging, in increasing start order; empty when
/// none is representable. Tumbling and session windows allocate nothing.
pub fn assign(kind: &WindowKind, ts: Ticks) -> Assigned {
    match *kind {
        WindowKind::Tumbling { size, offset } => Assigned::One(tumbling_window(ts, size, offset)),
        WindowKind::Hopping { size, slide, offset } => {
            Assigned::Many(hopping_windows(ts, size, slide, offset).into_iter())
        }
        WindowKind::Session { gap } => Assigned::One(session_window(ts, gap)),
    }
}

/// What [`assign`] returns: an iterator over window bounds.
#[derive(Debug)]
pub enum Assigned {
    /// At most one window (tumbling, session).
    One(Option<WindowBounds>),
    /// Hopping windows.
    Many(std::vec::IntoIter<WindowBounds>),
}

impl Iterator for Assigned {
    type Item = WindowBounds;

    fn next(&mut self) -> Option<WindowBounds> {
        match self {
            Assigned::One(window) => window.take(),
            Assigned::Many(windows) => windows.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(start: Ticks, end: Ticks) -> WindowBounds {
        WindowBounds { start, end }
    }

    /// The i64 fast path gives what the i128 formula gives, at the ends of the range too.
    #[test]
    fn tumbling_fast_path_equals_the_wide_formula() {
        let edge = proptest::prop_oneof![
            proptest::num::i64::ANY,
            -1_000i64..1_000,
            (i64::MAX - 1_000)..=i64::MAX,
            i64::MIN..(i64::MIN + 1_000),
        ];
        proptest::proptest!(|(ts in edge.clone(), size in proptest::prop_oneof![1i64..100, 1i64..=i64::MAX], offset in edge)| {
            let (wide_ts, wide_size, wide_offset) = (i128::from(ts), i128::from(size), i128::from(offset));
            let start = wide_ts - (wide_ts - wide_offset).rem_euclid(wide_size);
            proptest::prop_assert_eq!(tumbling_window(ts, size, offset), WindowBounds::from_wide(start, start + wide_size));
        });
    }

    #[test]
    fn tumbling_matches_v1_and_v2() {
        assert_eq!(tumbling_window(9, 10, 0), Some(bounds(0, 10)));
        assert_eq!(tumbling_window(10, 10, 0), Some(bounds(10, 20)));
        // V2: offset 3, including the negative remainder the old Flink formula got wrong.
        assert_eq!(tumbling_window(-8, 10, 3), Some(bounds(-17, -7)));
        assert_eq!(tumbling_window(2, 10, 3), Some(bounds(-7, 3)));
        assert_eq!(tumbling_window(3, 10, 3), Some(bounds(3, 13)));
        assert_eq!(tumbling_window(12, 10, 3), Some(bounds(3, 13)));
        assert_eq!(tumbling_window(13, 10, 3), Some(bounds(13, 23)));
        assert_eq!(tumbling_window(-1, 10, -3), Some(bounds(-3, 7)));
    }

    #[test]
    fn hopping_lists_every_window_in_start_order() {
        assert_eq!(hopping_windows(7, 10, 5, 0), vec![bounds(0, 10), bounds(5, 15)]);
        assert_eq!(hopping_windows(5, 10, 5, 0), vec![bounds(0, 10), bounds(5, 15)]);
        assert_eq!(hopping_windows(-1, 10, 4, 1), vec![bounds(-7, 3), bounds(-3, 7)]);
        assert_eq!(hopping_windows(0, 10, 10, 0), vec![bounds(0, 10)]);
    }

    #[test]
    fn extreme_timestamps_give_no_window_instead_of_panicking() {
        assert_eq!(tumbling_window(i64::MIN, 10, 0), None);
        assert_eq!(tumbling_window(i64::MAX, 10, 0), None);
        assert_eq!(tumbling_window(i64::MAX, i64::MAX, i64::MAX - 1), None);
        assert_eq!(tumbling_window(i64::MAX - 1, i64::MAX, 0), Some(bounds(0, i64::MAX)));
        assert_eq!(tumbling_window(5, 0, 0), None);
        assert_eq!(session_window(i64::MAX, 1), None);
        assert_eq!(session_window(i64::MAX - 1, 1), Some(bounds(i64::MAX - 1, i64::MAX)));
        assert!(hopping_windows(i64::MIN, 10, 3, 0).iter().all(|window| window.contains(i64::MIN)));
        assert!(hopping_windows(i64::MAX, i64::MAX, 1, 0).len() <= MAX_WINDOWS_PER_ELEMENT as usize);
    }

    #[test]
    fn sessions_merge_when_touching() {
        assert!(bounds(0, 5).merges_with(bounds(5, 10)));
        assert!(!bounds(0, 5).merges_with(bounds(6, 11)));
        assert_eq!(bounds(0, 5).cover(bounds(3, 8)), bounds(0, 8));
    }
}
