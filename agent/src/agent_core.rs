//! The agent's sans-IO core: group commit into the outbox, one protocol [`Sender`] per
//! stream, ACKs and NAKs fed back, the once-a-second housekeeping.
//!
//! No clock, socket, channel or timer in here (quinn's shape): the caller passes the
//! device's monotonic time in and carries the results out.
//! - in: [`AgentCore::handle_submission`] (events from an input, with a reply token),
//!   [`AgentCore::handle_datagram`] (from the collector), [`AgentCore::handle_timeout`];
//! - out: [`AgentCore::poll_transmit`] (a datagram to send), [`AgentCore::poll_reply`]
//!   (an input's answer, once its events are durable or refused),
//!   [`AgentCore::poll_timeout`] (when to call `handle_timeout` next),
//!   [`AgentCore::take_status_due`] (time to publish the status).
//!
//! [`crate::driver::Driver`] runs it on tokio with real sockets and the outbox on a real
//! directory; the simulator in `driftlog-tests` runs the same core on a simulated disk
//! and network, across power cuts.
//!
//! Panics: none, on any datagram, submission or time (time going backwards included). The
//! outbox's storage errors are recovered from here (the outbox reloaded from disk) and
//! counted; an input is told when its events were not stored.

use crate::outbox::{Appended, FileStore, Outbox, OutboxError, SegmentStore};
use driftlog_protocol::sender::{Item, OwnedEvent, SendError};
use driftlog_protocol::wire::{Body, DataWriter, Direction, MacKey, ReplayGuard, Sealer, open};
use driftlog_protocol::{
    Backlog, Epoch, Instant, KeyId, Position, Sender, SenderConfig, SenderStats, Seq, SeqRange, StreamId, WallTime,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// How often release records are written out and the status is due.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// What the core needs beyond the outbox.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// The template for every stream's sender (its `stream` is set per stream).
    pub sender: SenderConfig,
    /// How long the first pending event waits for others to share its commit.
    pub flush_interval: Duration,
    /// A commit starts at once when this many events are pending.
    pub flush_max_events: usize,
    pub key_id: KeyId,
    pub key: MacKey,
}

/// Where an input's events landed: `first_seq..` of `stream` in boot epoch `epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub stream: StreamId,
    pub epoch: Epoch,
    pub first_seq: Seq,
}

/// Why an input's events were not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotAccepted {
    /// Refused before they got sequence numbers: the outbox is full under `block`, or a
    /// drop's tombstone would not fit under the byte bound. Nothing of them is stored.
    #[error("outbox full: refused (drop_policy = \"block\", or no room left to record a drop)")]
    Full,
    /// Writing them failed. What reached the disk is unknown (a failed fsync), so they may
    /// still be delivered, as `first_seq..` of `epoch`, and never under another number.
    #[error("{message}")]
    Failed { message: String, epoch: Epoch, first_seq: Seq },
}

/// What one datagram from the network was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// An ACK: the sender asked the outbox to free these ranges.
    Ack {
        stream: StreamId,
        released: Vec<(Epoch, SeqRange)>,
    },
    Nak {
        stream: StreamId,
    },
    /// Did not verify (forged, corrupt, another key, malformed); the reason's name.
    Rejected(&'static str),
    /// Verified, but seen before or too old: a duplicate or a replay.
    Replayed,
    /// Verified, but not a frame a collector sends.
    Unexpected,
}

/// Counters for `status` and the shutdown log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Datagrams `poll_transmit` gave and the caller sent (it reports a failed send with
    /// [`AgentCore::handle_send_error`], which moves it to `send_errors`).
    pub datagrams_sent: u64,
    pub send_errors: u64,
    pub datagrams_received: u64,
    /// Datagrams from the network that did not verify (forged, replayed, malformed ...).
    pub datagrams_rejected: u64,
    pub commits: u64,
    /// Blocks found damaged as they were read to be sent (quarantined and tombstoned).
    pub corrupt_reads: u64,
    /// Reads of the outbox that failed for another reason (the stream waits for the next
    /// event and tries again).
    pub read_errors: u64,
    /// Frames that could not be encoded: a bug, never expected.
    pub encode_errors: u64,
}

struct Pending<R> {
    stream: StreamId,
    events: Vec<OwnedEvent>,
    reply: R,
}

/// The agent minus its IO. `R` is the caller's reply token, handed back with the answer.
pub struct AgentCore<R, S: SegmentStore = FileStore> {
    config: CoreConfig,
    outbox: Outbox<S>,
    senders: BTreeMap<StreamId, Sender>,
    sealer: Sealer,
    /// Replay protection for collector frames, per collector boot epoch.
    replay: ReplayGuard<4, 256>,
    pending: Vec<Pending<R>>,
    pending_events: usize,
    flush_at: Option<Instant>,
    housekeeping_at: Instant,
    status_due: bool,
    replies: VecDeque<(R, Result<Accepted, NotAccepted>)>,
    /// The stream `poll_transmit` asks first (round robin).
    next_stream: StreamId,
    /// Streams whose outbox read failed: skipped until the next `handle_*` call.
    stalled: BTreeSet<StreamId>,
    stats: DriverStats,
}

impl<R, S: SegmentStore> std::fmt::Debug for AgentCore<R, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCore")
            .field("epoch", &self.outbox.epoch())
            .field("streams", &self.senders.len())
            .field("pending_events", &self.pending_events)
            .field("stats", &self.stats)
            .finish()
    }
}

impl<R, S: SegmentStore> AgentCore<R, S> {
    /// Streams with events from earlier boots get a sender at once, so their backlog drains.
    pub fn new(config: CoreConfig, mut outbox: Outbox<S>, now: Instant) -> Result<AgentCore<R, S>, OutboxError> {
        let sealer = Sealer::new(config.key_id, config.key.clone(), outbox.epoch());
        let mut senders = BTreeMap::new();
        for stream in outbox.streams()? {
            senders.insert(stream, new_sender(&config.sender, &mut outbox, stream));
        }
        Ok(AgentCore {
            config,
            outbox,
            senders,
            sealer,
            replay: ReplayGuard::new(60_000_000),
            pending: Vec::new(),
            pending_events: 0,
            flush_at: None,
            housekeeping_at: now + HOUSEKEEPING_INTERVAL,
            status_due: false,
            replies: VecDeque::new(),
            next_stream: 0,
            stalled: BTreeSet::new(),
            stats: DriverStats::default(),
        })
    }

    /// Events from an input, stored with the next commit: at `flush_interval` after the
    /// first pending event, or at once when `flush_max_events` are pending. The answer
    /// comes from [`AgentCore::poll_reply`].
    pub fn handle_submission(&mut self, now: Instant, stream: StreamId, events: Vec<OwnedEvent>, reply: R) {
        self.stalled.clear();
        self.pending_events += events.len();
        self.pending.push(Pending { stream, events, reply });
        self.flush_at.get_or_insert(now + self.config.flush_interval);
        if self.pending_events >= self.config.flush_max_events {
            self.flush();
        }
    }

    /// Group commit: one durable append per stream for everything pending, then the answers.
    pub fn flush(&mut self) {
        self.flush_at = None;
        self.pending_events = 0;
        let mut by_stream: BTreeMap<StreamId, Vec<Pending<R>>> = BTreeMap::new();
        for pending in std::mem::take(&mut self.pending) {
            by_stream.entry(pending.stream).or_default().push(pending);
        }
        for (stream, group) in by_stream {
            let mut events = Vec::with_capacity(group.iter().map(|p| p.events.len()).sum());
            let mut replies = Vec::with_capacity(group.len());
            for pending in group {
                replies.push((pending.reply, pending.events.len()));
                events.extend(pending.events);
            }
            // Where a failed append's events may still turn up (see `NotAccepted::Failed`).
            let (epoch, first_seq) = (self.outbox.epoch(), self.outbox.next_seq(stream));
            let result = self.outbox.append_owned(stream, &events);
            self.stats.commits += 1;
            if let Err(OutboxError::Storage(error)) = &result {
                self.recover(error);
            }
            if !self.senders.contains_key(&stream) {
                let sender = new_sender(&self.config.sender, &mut self.outbox, stream);
                self.senders.insert(stream, sender);
            }
            self.answer(replies, stream, epoch, first_seq, result);
        }
    }

    fn answer(
        &mut self,
        replies: Vec<(R, usize)>,
        stream: StreamId,
        epoch: Epoch,
        first_seq: Seq,
        result: Result<Appended, OutboxError>,
    ) {
        let appended = match result {
            Ok(appended) => appended,
            Err(error) => {
                let message = error.to_string();
                let mut seq = first_seq;
                for (reply, count) in replies {
                    let failed = NotAccepted::Failed { message: message.clone(), epoch, first_seq: seq };
                    self.replies.push_back((reply, Err(failed)));
                    seq += count as u64;
                }
                return;
            }
        };
        // The accepted events are a prefix of the concatenated submissions (a refusal takes
        // the tail), so a submission is accepted only if all of its events were.
        let mut seq = appended.first_seq;
        let mut accepted_left = appended.accepted;
        for (reply, count) in replies {
            let outcome = if accepted_left >= count {
                accepted_left -= count;
                let accepted = Accepted { stream, epoch, first_seq: seq };
                seq += count as u64;
                Ok(accepted)
            } else {
                accepted_left = 0;
                Err(NotAccepted::Full)
            };
            self.replies.push_back((reply, outcome));
        }
    }

    /// Before the agent exits: the pending events committed (their answers to poll) and
    /// the release records written out.
    pub fn close(&mut self) {
        self.flush();
        if let Err(error) = self.outbox.write_pending_releases(false) {
            tracing::debug!(%error, "cannot write release records");
        }
    }

    /// The next answer to an input, in submission order within a stream.
    pub fn poll_reply(&mut self) -> Option<(R, Result<Accepted, NotAccepted>)> {
        self.replies.pop_front()
    }

    /// A datagram from the network: verified, checked against replays, and fed to its
    /// stream's sender.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) -> Received {
        self.stalled.clear();
        self.stats.datagrams_received += 1;
        let key_id = self.config.key_id;
        let key = &self.config.key;
        let opened = match open(datagram, Direction::FromCollector, datagram.len(), |id| (id == key_id).then_some(key))
        {
            Ok(opened) => opened,
            Err(reason) => {
                self.stats.datagrams_rejected += 1;
                tracing::debug!(reason = reason.name(), "rejected a datagram");
                return Received::Rejected(reason.name());
            }
        };
        let header = opened.header;
        if self.replay.check(header.epoch, header.sent_at.as_micros()).is_err() {
            self.stats.datagrams_rejected += 1;
            return Received::Replayed;
        }
        self.replay.accept(header.epoch, header.sent_at.as_micros());
        match opened.body {
            Body::Ack(ack) => {
                let mut released = Vec::new();
                if let Some(sender) = self.senders.get_mut(&ack.stream) {
                    let mut backlog = Releases { inner: self.outbox.backlog(ack.stream), released: &mut released };
                    if let Err(error) = sender.handle_ack(now, &header, &ack, &mut backlog) {
                        tracing::warn!(%error, stream = ack.stream, "could not release acknowledged events");
                        self.recover(&error);
                    }
                }
                Received::Ack { stream: ack.stream, released }
            }
            Body::Nak(nak) => {
                if let Some(sender) = self.senders.get_mut(&nak.stream) {
                    sender.handle_nak(now, &nak, &self.outbox.backlog(nak.stream));
                }
                Received::Nak { stream: nak.stream }
            }
            _ => {
                self.stats.datagrams_rejected += 1;
                Received::Unexpected
            }
        }
    }

    /// Runs what is due at `now`: the group commit, the housekeeping (release records
    /// written out, the status due), the senders' timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.stalled.clear();
        if self.flush_at.is_some_and(|at| at <= now) {
            self.flush();
        }
        if self.housekeeping_at <= now {
            self.housekeeping_at = now + HOUSEKEEPING_INTERVAL;
            // Release records otherwise wait for the next commit; a quiet agent writes them here.
            if let Err(error) = self.outbox.write_pending_releases(false) {
                tracing::debug!(%error, "cannot write release records");
            }
            self.status_due = true;
        }
        for sender in self.senders.values_mut() {
            sender.handle_timeout(now);
        }
    }

    /// When [`AgentCore::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Instant {
        let senders = self.senders.values().filter_map(|sender| sender.poll_timeout());
        senders.chain(self.flush_at).fold(self.housekeeping_at, Instant::min)
    }

    /// True once per housekeeping interval: time to publish the status.
    pub fn take_status_due(&mut self) -> bool {
        std::mem::take(&mut self.status_due)
    }

    /// The next datagram to send, written into `buf` (its length returned), taking the
    /// streams in turn; `None` when no stream has anything to send now.
    pub fn poll_transmit(&mut self, now: Instant, wall: WallTime, buf: &mut [u8]) -> Option<usize> {
        for _ in 0..self.senders.len() {
            let stream = match self.senders.range(self.next_stream..).next() {
                Some((&stream, _)) => stream,
                None => *self.senders.keys().next()?,
            };
            self.next_stream = stream.wrapping_add(1);
            if self.stalled.contains(&stream) {
                continue;
            }
            let Some(sender) = self.senders.get_mut(&stream) else { continue };
            sender.handle_wall_clock(now, wall);
            let mut backlog = self.outbox.backlog(stream);
            match sender.poll_transmit(now, &mut backlog, &mut self.sealer, buf) {
                Ok(Some(transmit)) => {
                    self.stats.datagrams_sent += 1;
                    return Some(transmit.len);
                }
                Ok(None) => {}
                Err(error) => {
                    match &error {
                        // Quarantined as it was read; the next pass goes on past it.
                        SendError::Backlog(OutboxError::Corrupt { .. }) => self.stats.corrupt_reads += 1,
                        SendError::Backlog(_) => self.stats.read_errors += 1,
                        SendError::Encode(_) => self.stats.encode_errors += 1,
                    }
                    tracing::warn!(%error, stream, "reading the outbox failed");
                    self.stalled.insert(stream);
                }
            }
        }
        None
    }

    /// A datagram `poll_transmit` gave could not be sent (no route, unreachable): counted;
    /// the sender's timers send it again.
    pub fn handle_send_error(&mut self) {
        self.stats.datagrams_sent = self.stats.datagrams_sent.saturating_sub(1);
        self.stats.send_errors += 1;
    }

    /// After a failed write the outbox must be reloaded from disk before it works again.
    fn recover(&mut self, error: &dyn std::fmt::Display) {
        match self.outbox.recover_from_storage_error() {
            Ok(()) => {
                tracing::warn!(%error, max_bytes = self.outbox.max_bytes(), "outbox write failed; reopened it and lowered its bound")
            }
            Err(reopen) => tracing::error!(%error, %reopen, "outbox write failed and reopening it failed too"),
        }
    }

    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// Events handed in and not yet committed (answered by the next flush).
    pub fn pending_events(&self) -> usize {
        self.pending_events
    }

    pub fn sender_stats(&self, stream: StreamId) -> Option<SenderStats> {
        self.senders.get(&stream).map(|sender| sender.stats())
    }

    /// Whether the sender of `stream` gave up reaching the collector for now.
    pub fn is_unreachable(&self, stream: StreamId) -> bool {
        self.senders.get(&stream).is_some_and(|sender| sender.is_unreachable())
    }

    pub fn streams(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.senders.keys().copied()
    }

    pub fn outbox(&self) -> &Outbox<S> {
        &self.outbox
    }

    /// For reads that need `&mut` (the backlog of a stream); the core's invariants do not
    /// depend on the caller leaving it alone, only on it not appending or releasing.
    pub fn outbox_mut(&mut self) -> &mut Outbox<S> {
        &mut self.outbox
    }

    /// Gives the outbox back (the pending events are not stored: flush first).
    pub fn into_outbox(self) -> Outbox<S> {
        self.outbox
    }
}

fn new_sender<S: SegmentStore>(template: &SenderConfig, outbox: &mut Outbox<S>, stream: StreamId) -> Sender {
    let mut config = template.clone();
    config.stream = stream;
    Sender::new(config, &outbox.backlog(stream))
}

/// A stream's backlog that notes every range the sender releases.
struct Releases<'a, B> {
    inner: B,
    released: &'a mut Vec<(Epoch, SeqRange)>,
}

impl<B: Backlog> Backlog for Releases<'_, B> {
    type Error = B::Error;

    fn head(&self) -> Position {
        self.inner.head()
    }

    fn tail(&self) -> Position {
        self.inner.tail()
    }

    fn first_at_or_after(&mut self, from: Position, until: Position) -> Result<Option<(Position, Item)>, B::Error> {
        self.inner.first_at_or_after(from, until)
    }

    fn fill(&mut self, from: Position, end: Seq, writer: &mut DataWriter<'_>) -> Result<(), B::Error> {
        self.inner.fill(from, end, writer)
    }

    fn release(&mut self, epoch: Epoch, range: SeqRange) -> Result<(), B::Error> {
        self.released.push((epoch, range));
        self.inner.release(epoch, range)
    }
}
