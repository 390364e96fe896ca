//! [`Log::watch_next_offset`]: what readers in the process wait on instead of a metric.

use super::block::BlockBuilder;
use super::{Commit, Log, LogConfig, LogError};

fn one_block(records: u64) -> Commit {
    let mut builder = BlockBuilder::new(4_096);
    for _ in 0..records {
        builder.push(1, |out| out.extend_from_slice(b"record"));
    }
    Commit { blocks: builder.finish(0), ..Commit::default() }
}

#[test]
fn every_commit_publishes_the_next_offset_and_a_failed_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let log = Log::open(&path, LogConfig { max_bytes: 4_096, ..LogConfig::default() }).unwrap();
    let mut next = log.watch_next_offset();
    assert_eq!(*next.borrow_and_update(), 0);
    let committed = log.commit(&one_block(3), 0).unwrap();
    assert!(next.has_changed().unwrap(), "a reader waiting on the watch is woken");
    assert_eq!(*next.borrow_and_update(), committed.next_offset);
    assert_eq!(committed.next_offset, 3);

    let too_big = Commit { reserve_bytes: 1 << 20, ..Commit::default() };
    assert!(matches!(log.commit(&too_big, 0), Err(LogError::Full { .. })));
    assert!(!next.has_changed().unwrap(), "a failed commit publishes nothing");

    drop((next, log));
    let reopened = Log::open(&path, LogConfig::default()).unwrap();
    assert_eq!(*reopened.watch_next_offset().borrow(), 3, "a reopened log starts from what it holds");
}
