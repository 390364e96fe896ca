//! The committer: the log's only writer. One thread that takes commits from its clients (the
//! acceptor's blocks, the window processor's outputs and checkpoints), writes each in one
//! fsynced transaction, and sends every outcome back to the client that asked.
//!
//! Why one writer: redb serialises write transactions behind one lock, and whoever holds it
//! holds up every ACK. With all writes on this thread, the window processor never holds it,
//! so it can run at a lower CPU priority without starving ingest (priority inversion).
//! Why a thread of its own: the acceptor keeps admitting the next block while the disk works.

use crate::log::block::EncodedBlock;
use crate::log::{Commit, Committed, Log, LogError};
use crate::metrics::Metrics;
use crate::wall_clock::now_unix_ms;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

/// The outcome of one commit.
pub type CommitResult = Result<Committed, LogError>;

/// Which client a commit comes from: only ingest commits feed the commit latency histogram
/// (what a device waits for before its ACK).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    Ingest,
    Windows,
    Statsd,
}

#[derive(Debug)]
struct Request {
    commit: Commit,
    writer: Writer,
    reply: SyncSender<Reply>,
}

/// A commit's outcome, with its blocks handed back for the buffers of the client's next
/// ones (see [`crate::log::block::BlockBuilder::finish_into`]).
#[derive(Debug)]
struct Reply {
    result: CommitResult,
    spares: Vec<EncodedBlock>,
}

/// Starts committers' clients; the thread ends when every client is gone.
#[derive(Clone, Debug)]
pub struct Committer {
    requests: SyncSender<Request>,
}

/// A client of the committer with at most one commit in flight, which is what bounds the
/// request queue: it holds one slot per client.
#[derive(Debug)]
pub struct Client {
    writer: Writer,
    requests: SyncSender<Request>,
    reply: SyncSender<Reply>,
    results: Receiver<Reply>,
    /// The blocks of the last commit, for [`Client::spare_blocks`].
    spares: std::cell::RefCell<Vec<EncodedBlock>>,
}

/// Why a commit was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the committer's queue is full (a client has more than one commit in flight)")]
    Busy,
    #[error("the committer has stopped")]
    Stopped,
}

impl Client {
    /// Hands `commit` over without waiting; its outcome comes from [`Client::try_result`]
    /// or [`Client::result_timeout`].
    pub fn submit(&self, commit: Commit) -> Result<(), SubmitError> {
        let request = Request { commit, writer: self.writer, reply: self.reply.clone() };
        self.requests.try_send(request).map_err(|error| match error {
            TrySendError::Full(_) => SubmitError::Busy,
            TrySendError::Disconnected(_) => SubmitError::Stopped,
        })
    }

    pub fn try_result(&self) -> Option<CommitResult> {
        self.results.try_recv().ok().map(|reply| self.keep_spare(reply))
    }

    pub fn result_timeout(&self, timeout: Duration) -> Option<CommitResult> {
        self.results.recv_timeout(timeout).ok().map(|reply| self.keep_spare(reply))
    }

    /// Submits and waits for the outcome. `None` if the committer has stopped (shutdown).
    pub fn commit(&self, commit: Commit) -> Option<CommitResult> {
        let request = Request { commit, writer: self.writer, reply: self.reply.clone() };
        self.requests.send(request).ok()?;
        self.results.recv().ok().map(|reply| self.keep_spare(reply))
    }

    /// The blocks of the last commit (or none yet), whose buffers the next ones reuse.
    pub fn spare_blocks(&self) -> Vec<EncodedBlock> {
        self.spares.take()
    }

    fn keep_spare(&self, reply: Reply) -> CommitResult {
        self.spares.replace(reply.spares);
        reply.result
    }
}

impl Committer {
    /// A client for `writer`. Each client adds one slot to the request queue's bound.
    pub fn client(&self, writer: Writer) -> Client {
        let (reply, results) = std::sync::mpsc::sync_channel(1);
        Client { writer, requests: self.requests.clone(), reply, results, spares: Default::default() }
    }
}

/// Spawns the committer for `clients` clients (the request queue holds one commit each).
pub fn spawn(
    log: Arc<Log>,
    clients: usize,
    metrics: Arc<Metrics>,
) -> std::io::Result<(Committer, std::thread::JoinHandle<()>)> {
    let (requests, queue) = std::sync::mpsc::sync_channel::<Request>(clients.max(1));
    let thread = std::thread::Builder::new().name("committer".into()).spawn(move || {
        // Ends when every client (and the `Committer` that makes them) is gone.
        while let Ok(Request { commit, writer, reply }) = queue.recv() {
            let started = std::time::Instant::now();
            let result = log.commit(&commit, now_unix_ms());
            match &result {
                Ok(committed) => {
                    if writer == Writer::Ingest && !commit.blocks.is_empty() {
                        metrics.observe_commit(started.elapsed().as_secs_f64());
                    }
                    metrics.log_held_bytes.set(committed.held_bytes);
                    metrics.log_first_offset.set(committed.first_offset);
                    metrics.log_next_offset.set(committed.next_offset);
                    metrics.log_blocks_deleted.inc_by(committed.blocks_deleted);
                    metrics.log_file_bytes.set(log.file_bytes());
                }
                // The log has reopened itself after a storage error.
                Err(_) => {
                    metrics.commit_failures.inc();
                }
            }
            // A client that has gone (shutting down) no longer needs its answer.
            let _ = reply.send(Reply { result, spares: commit.blocks });
        }
    })?;
    Ok((Committer { requests }, thread))
}
