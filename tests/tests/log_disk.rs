//! The collector's log on the simulated disk, one fault at a time.

use driftlog_collector::log::{Checkpoint, Commit, Log, LogConfig, LogError};
use driftlog_tests::log_disk::SimLogDisk;
use std::sync::Arc;

/// A commit that stores only a reader's offset.
fn offset(next_offset: u64) -> Commit {
    Commit {
        checkpoint: Some(Checkpoint { reader: "forwarder".into(), next_offset, ..Checkpoint::default() }),
        ..Commit::default()
    }
}

fn open(disk: &SimLogDisk) -> Log {
    Log::open_on(Arc::new(disk.clone()), LogConfig::default()).expect("the log opens")
}

/// Found by the whole-system simulation (seed 0 of `sim_system`): after a failed fsync the
/// log reopened its file, and when that failed too (the repair's own fsync failed) it kept
/// an empty in-memory stand-in, into which the next commits "succeeded" and were
/// acknowledged. Now every use fails until the file opens again.
#[test]
fn a_log_that_cannot_reopen_after_a_failed_fsync_refuses_writes_until_it_can() {
    let disk = SimLogDisk::new(7, 0.0);
    let log = open(&disk);
    log.commit(&offset(5), 0).expect("a healthy disk takes a commit");
    disk.set_sync_failure(1.0);
    assert!(log.commit(&offset(6), 0).is_err(), "the fsync failed");
    // The reopen after the failure needed an fsync as well: the log has no database now.
    let refused = log.commit(&offset(7), 0);
    assert!(refused.is_err(), "a write landed while the file could not be opened: {refused:?}");
    assert!(matches!(log.reader_offset("forwarder"), Err(LogError::Storage(_) | LogError::Closed)));
    disk.set_sync_failure(0.0);
    // The failed commit may or may not have reached the disk; nothing after it did.
    let after = log.reader_offset("forwarder").expect("the file opens again");
    assert!(matches!(after, Some(5 | 6)), "{after:?}");
    log.commit(&offset(8), 0).expect("commits again");
    drop(log);
    disk.crash();
    disk.restart();
    assert_eq!(open(&disk).reader_offset("forwarder").expect("reads"), Some(8));
}
