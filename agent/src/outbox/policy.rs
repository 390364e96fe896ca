//! The drop policy as a pure function: sizes in, a keep/drop plan out.
//!
//! Nothing here touches storage: [`plan`] decides, before anything is written, which oldest
//! segments an append deletes and which of its blocks it stores, drops or refuses. The
//! outbox then carries the plan out (tombstones first, durable before any segment goes).
//!
//! The byte bound is a hard promise, and so is a tombstone for every drop: when the
//! tombstones a drop needs do not fit under the bound (or their table is full), the append
//! is refused as under `block` instead. Nothing older is dropped to make room for them and
//! no tombstone is forgotten.

use std::ops::Range;

/// What happens when an append would exceed `max_bytes` (`outbox.drop_policy` in the config:
/// `drop_oldest`, `drop_newest`, `block`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicy {
    /// Drop the oldest held events (a whole segment at a time, leaving tombstones) to make
    /// room: fresh data wins.
    DropOldest,
    /// Keep the held events; the new events get their sequence numbers and a tombstone.
    DropNewest,
    /// Refuse the new events: the input sees the error and applies back-pressure. Under the
    /// other two policies an append whose drops' tombstones would not fit is refused too.
    Block,
}

/// What one append must fit into.
#[derive(Clone, Copy, Debug)]
pub(super) struct Budget<'a> {
    pub policy: DropPolicy,
    /// The byte bound in force.
    pub max_bytes: u64,
    /// Bytes held now (segments and tombstones).
    pub held_bytes: u64,
    /// Room kept for tombstones the outbox must be able to record without making room first:
    /// those of one append's drops, and under every policy (`block` included) the
    /// `storage_failure` ones of a failed append or of damage. Stored blocks never use it;
    /// the drops' tombstones may, up to `max_bytes`.
    pub tombstone_reserve_bytes: u64,
    /// Bytes of each segment, oldest first.
    pub segment_bytes: &'a [u64],
    /// Bytes of the release records this commit writes first.
    pub release_bytes: u64,
}

/// One block of the append: its bytes on disk and the events it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BlockSize {
    pub bytes: u64,
    pub events: u64,
}

/// The decision for one append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Plan {
    /// This many oldest segments are deleted (their held events tombstoned) first.
    pub doomed_segments: usize,
    /// The blocks stored; those before are dropped (`drop_oldest`: the append alone is too
    /// large), those after are dropped (`drop_newest`) or refused (`block`, or a drop whose
    /// tombstones would not fit).
    pub keep: Range<usize>,
    pub dropped_before: u64,
    pub kept: u64,
    pub dropped_after: u64,
    pub refused: u64,
}

impl Plan {
    /// Events that get a sequence number (stored or tombstoned).
    pub(super) fn assigned(&self) -> u64 {
        self.dropped_before + self.kept + self.dropped_after
    }

    /// Whether the plan drops anything (held events or its own).
    fn drops(&self) -> bool {
        self.doomed_segments > 0 || self.dropped_before + self.dropped_after > 0
    }
}

/// Plans one append of `blocks`. `tombstone_bytes` tells what the tombstones recording a
/// plan's drops add to the held bytes (`None`: they would not fit in the tombstone table);
/// when the held bytes after the append would then pass `max_bytes`, the append is planned
/// as under `block` (kept what fits, the rest refused).
pub(super) fn plan(
    budget: &Budget<'_>,
    blocks: &[BlockSize],
    tombstone_bytes: impl FnOnce(&Plan) -> Option<u64>,
) -> Plan {
    let planned = plan_under(budget.policy, budget, blocks);
    if !planned.drops() {
        return planned;
    }
    let freed: u64 = budget.segment_bytes[..planned.doomed_segments].iter().sum();
    // The pending release records go out with the first kept block.
    let written = match planned.keep.is_empty() {
        true => 0,
        false => budget.release_bytes + blocks[planned.keep.clone()].iter().map(|b| b.bytes).sum::<u64>(),
    };
    let fits = tombstone_bytes(&planned)
        .is_some_and(|tombstones| budget.held_bytes.saturating_sub(freed) + written + tombstones <= budget.max_bytes);
    match fits {
        true => planned,
        false => plan_under(DropPolicy::Block, budget, blocks),
    }
}

fn plan_under(policy: DropPolicy, budget: &Budget<'_>, blocks: &[BlockSize]) -> Plan {
    let total: u64 = blocks.iter().map(|b| b.bytes).sum::<u64>() + budget.release_bytes;
    let mut room = budget.max_bytes.saturating_sub(budget.held_bytes + budget.tombstone_reserve_bytes);
    let mut doomed = 0usize;
    if policy == DropPolicy::DropOldest {
        while room < total && doomed < budget.segment_bytes.len() {
            room += budget.segment_bytes[doomed];
            doomed += 1;
        }
    }
    let (mut keep_from, mut keep_to) = (0, blocks.len());
    let mut used = budget.release_bytes;
    match policy {
        DropPolicy::DropOldest => {
            while keep_from < keep_to && used + blocks[keep_from..].iter().map(|b| b.bytes).sum::<u64>() > room {
                keep_from += 1;
            }
        }
        DropPolicy::DropNewest | DropPolicy::Block => {
            keep_to = 0;
            while keep_to < blocks.len() && used + blocks[keep_to].bytes <= room {
                used += blocks[keep_to].bytes;
                keep_to += 1;
            }
        }
    }
    let events_in = |range: Range<usize>| blocks[range].iter().map(|b| b.events).sum::<u64>();
    let after = events_in(keep_to..blocks.len());
    let (dropped_after, refused) = match policy {
        DropPolicy::Block => (0, after),
        _ => (after, 0),
    };
    Plan {
        doomed_segments: doomed,
        keep: keep_from..keep_to,
        dropped_before: events_in(0..keep_from),
        kept: events_in(keep_from..keep_to),
        dropped_after,
        refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(policy: DropPolicy, held_bytes: u64, segment_bytes: &[u64]) -> Budget<'_> {
        Budget { policy, max_bytes: 1_000, held_bytes, tombstone_reserve_bytes: 100, segment_bytes, release_bytes: 0 }
    }

    const BLOCKS: [BlockSize; 3] = [
        BlockSize { bytes: 100, events: 10 },
        BlockSize { bytes: 100, events: 20 },
        BlockSize { bytes: 100, events: 30 },
    ];

    #[test]
    fn with_room_everything_is_kept_and_nothing_deleted() {
        for policy in [DropPolicy::DropOldest, DropPolicy::DropNewest, DropPolicy::Block] {
            let plan = plan(&budget(policy, 500, &[250, 250]), &BLOCKS, |_| unreachable!("nothing is dropped"));
            assert_eq!(plan.doomed_segments, 0, "{policy:?}");
            assert_eq!((plan.keep.clone(), plan.kept, plan.assigned(), plan.refused), (0..3, 60, 60, 0), "{policy:?}");
        }
    }

    #[test]
    fn drop_oldest_deletes_the_fewest_oldest_segments_that_make_room() {
        // 850 held + 100 reserve leaves 50: the first 250-byte segment makes 300.
        let plan = plan(&budget(DropPolicy::DropOldest, 850, &[250, 250, 350]), &BLOCKS, |_| Some(58));
        assert_eq!(plan.doomed_segments, 1);
        assert_eq!(plan.keep, 0..3);
        // Nothing to delete and too little room: the append's own oldest blocks go.
        let plan = super::plan(&budget(DropPolicy::DropOldest, 750, &[]), &BLOCKS, |_| Some(58));
        assert_eq!((plan.keep.clone(), plan.dropped_before, plan.kept), (2..3, 30, 30));
    }

    #[test]
    fn drop_newest_tombstones_and_block_refuses_the_tail() {
        let newest = plan(&budget(DropPolicy::DropNewest, 750, &[750]), &BLOCKS, |_| Some(58));
        assert_eq!(
            (newest.doomed_segments, newest.keep.clone(), newest.dropped_after, newest.refused),
            (0, 0..1, 50, 0)
        );
        // `block` keeps the same room for tombstones: a failed append or damage needs
        // `storage_failure` ones under any policy (simulator seed 199 passed the bound).
        let block = plan(&budget(DropPolicy::Block, 750, &[750]), &BLOCKS, |_| unreachable!("`block` drops nothing"));
        assert_eq!((block.keep.clone(), block.dropped_after, block.refused, block.assigned()), (0..1, 0, 50, 10));
    }

    #[test]
    fn release_records_take_room_first() {
        // 500 held + 100 reserve leaves 400: all three blocks would fit, two do.
        let mut budget = budget(DropPolicy::Block, 500, &[500]);
        budget.release_bytes = 200;
        let plan = plan(&budget, &BLOCKS, |_| unreachable!("`block` drops nothing"));
        assert_eq!((plan.keep, plan.refused), (0..2, 30));
    }

    #[test]
    fn a_drop_whose_tombstones_do_not_fit_is_refused_instead() {
        // 990 held leaves 10 bytes under the bound: a new 58-byte tombstone does not fit,
        // one that extends an existing tombstone (0 bytes) does.
        let newest = budget(DropPolicy::DropNewest, 990, &[900]);
        let refused = plan(&newest, &BLOCKS, |_| Some(58));
        assert_eq!((refused.keep.clone(), refused.assigned(), refused.refused), (0..0, 0, 60));
        let extended = plan(&newest, &BLOCKS, |_| Some(0));
        assert_eq!((extended.dropped_after, extended.refused), (60, 0));
        // A full tombstone table refuses too: no tombstone is forgotten to record a drop.
        assert_eq!(plan(&newest, &BLOCKS, |_| None).refused, 60);
        // `drop_oldest` with nothing left to delete (the bytes are tombstones) drops the
        // append's own oldest blocks only if their tombstone fits.
        let oldest = budget(DropPolicy::DropOldest, 990, &[]);
        assert_eq!(plan(&oldest, &BLOCKS, |_| Some(58)).refused, 60);
        assert_eq!(plan(&oldest, &BLOCKS, |_| Some(0)).dropped_before, 60);
        // Deleting segments pays for the tombstones that record them.
        let oldest = budget(DropPolicy::DropOldest, 990, &[400, 500]);
        let plan = plan(&oldest, &BLOCKS, |plan| Some(58 * plan.doomed_segments as u64));
        assert_eq!((plan.doomed_segments, plan.kept, plan.refused), (1, 60, 0));
    }
}
