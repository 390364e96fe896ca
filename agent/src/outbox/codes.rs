//! On-disk codes of drop reasons (stable: they are persisted in the tombstone file).

use driftlog_protocol::wire::DropReason;

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
