//! The committer: one thread that writes the acceptor's blocks to the log, one fsynced
//! transaction each, and reports every outcome back. It is a thread of its own so the
//! acceptor keeps admitting the next block while the disk works.

use crate::acceptor::{CommitResult, now_unix_ms};
use crate::log::{Commit, Log, LogError};
use crate::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};

pub fn spawn(
    log: Arc<Log>,
    commits: Receiver<Commit>,
    results: SyncSender<CommitResult>,
    metrics: Arc<Metrics>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("committer".into()).spawn(move || {
        // Ends when the acceptor drops its sender.
        while let Ok(commit) = commits.recv() {
            let started = std::time::Instant::now();
            let result = log.commit(&commit, now_unix_ms());
            match &result {
                Ok(committed) => {
                    if !commit.block.is_empty() {
                        metrics.observe_commit(started.elapsed().as_secs_f64());
                    }
                    metrics.log_held_bytes.store(committed.held_bytes, Ordering::Relaxed);
                    metrics.log_first_offset.store(committed.first_offset, Ordering::Relaxed);
                    metrics.log_next_offset.store(committed.next_offset, Ordering::Relaxed);
                    metrics.log_blocks_deleted.fetch_add(committed.blocks_deleted, Ordering::Relaxed);
                    if let Ok(file) = std::fs::metadata(log.path()) {
                        metrics.log_file_bytes.store(file.len(), Ordering::Relaxed);
                    }
                }
                Err(error) => {
                    metrics.commit_failures.fetch_add(1, Ordering::Relaxed);
                    if matches!(error, LogError::Storage(_)) {
                        // redb refuses all work after an I/O error until reopened.
                        if let Err(reopen) = log.reopen() {
                            tracing::error!(error = %reopen, "cannot reopen the log");
                        }
                    }
                }
            }
            if results.send(result).is_err() {
                return;
            }
        }
    })
}
