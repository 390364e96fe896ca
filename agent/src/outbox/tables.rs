//! Table definitions and the on-disk codes of drop reasons (stable: they are persisted).

use driftlog_protocol::wire::DropReason;
use driftlog_protocol::{Epoch, Seq, StreamId};
use redb::TableDefinition;

pub(super) const EVENTS: TableDefinition<(StreamId, Epoch, Seq), &[u8]> = TableDefinition::new("events");
pub(super) const TOMBSTONES: TableDefinition<(StreamId, Epoch, Seq), (u64, u8)> = TableDefinition::new("tombstones");
pub(super) const NEXT_SEQ: TableDefinition<(StreamId, Epoch), Seq> = TableDefinition::new("next_seq");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(super) fn drop_reason_code(reason: DropReason) -> u8 {
    match reason {
        DropReason::BufferFull => 1,
        DropReason::RejectedNew => 2,
        DropReason::TooOld => 3,
        DropReason::StorageFailure => 4,
        DropReason::Oversized => 5,
        DropReason::Unrecoverable => 6,
    }
}

pub(super) fn drop_reason_from_code(code: u8) -> Option<DropReason> {
    Some(match code {
        1 => DropReason::BufferFull,
        2 => DropReason::RejectedNew,
        3 => DropReason::TooOld,
        4 => DropReason::StorageFailure,
        5 => DropReason::Oversized,
        6 => DropReason::Unrecoverable,
        _ => return None,
    })
}
