//! How large segments are cut, and the bound after the disk fills up.
//!
//! `drop_oldest` drops whole segments, so a segment's size is what one drop costs. Each new
//! segment is cut at 1/16 of the bound in force when it is opened: the configured
//! `max_bytes`, the lower bound set after the disk filled up, or what the file system can
//! hold for the outbox (what it holds plus what is free, counted at 90 % for the file
//! system's own overhead), whichever is least. A bound fixed at open (`max_bytes / 16`,
//! 4 MiB for the default 256 MiB) on a 4 MiB disk put everything into one segment, and the
//! first out-of-space error dropped 99.5 % of the buffer.

/// Largest segment file.
pub(super) const MAX_SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// Smallest segment target: a page (each commit writes at least one anyway).
const MIN_SEGMENT_BYTES: u64 = 4 * 1024;

/// The size to cut the next segment at: 1/16 of the least of `max_bytes` and what the file
/// system can hold for the outbox (`held_bytes` plus 90 % of `available`).
pub(super) fn segment_target(max_bytes: u64, held_bytes: u64, available: Option<u64>) -> u64 {
    let room = available.map_or(u64::MAX, |free| (held_bytes + free) / 10 * 9);
    (max_bytes.min(room) / 16).clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES)
}

/// The bound after a write failed for want of space: what the outbox held when it failed,
/// plus the room the drop policy keeps for the tombstones one append can start (their
/// pages are written ahead, so recording a drop needs no new space). From then on the
/// policy makes room before writing, one oldest segment (1/16 of the bound) per append that
/// needs it, instead of the disk refusing the write.
pub(super) fn bound_after_storage_error(max_bytes: u64, held_bytes: u64, tombstone_reserve_bytes: u64) -> u64 {
    max_bytes.min(held_bytes + tombstone_reserve_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_the_least_bound() {
        const MIB: u64 = 1 << 20;
        assert_eq!(segment_target(256 * MIB, 0, None), MAX_SEGMENT_BYTES, "the default bound, a large disk");
        assert_eq!(segment_target(256 * MIB, 0, Some(4 * MIB)), 4 * MIB / 10 * 9 / 16, "a 4 MiB disk");
        assert_eq!(segment_target(256 * MIB, 3 * MIB, Some(MIB)), 4 * MIB / 10 * 9 / 16, "what is held counts");
        assert_eq!(segment_target(8 * MIB, 0, Some(100 * MIB)), MIB / 2, "the configured bound");
        assert_eq!(segment_target(16 * 1024, 0, None), MIN_SEGMENT_BYTES);
        assert_eq!(bound_after_storage_error(256 * MIB, 3 * MIB, 100), 3 * MIB + 100);
        assert_eq!(bound_after_storage_error(MIB, 3 * MIB, 100), MIB);
    }
}
