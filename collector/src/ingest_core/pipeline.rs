//! Commit pipelining: one commit in flight while the next block fills, ACKs released only by
//! its success, and rollback when it fails.
//!
//! A failed commit makes every receiver forget what is not durable, including what was
//! admitted after the commit was cut (the devices still hold it and will send it again), and
//! frames are refused until a probe commit (an empty one that reserves a full commit's bytes)
//! succeeds: nothing unwritten is ever acknowledged or remembered as seen.

use super::{IngestCore, PROBE_INTERVAL};
use crate::committer::CommitResult;
use crate::log::Commit;
use crate::log::{Dedup, LogError};
use driftlog_protocol::ids::StreamKey;
use driftlog_protocol::{DeviceId, Epoch, Instant, StreamId};

/// What the core remembers of the commit in flight, to release its ACKs or undo it.
#[derive(Debug)]
pub struct InFlight {
    /// The receivers' states the commit makes durable.
    states: Vec<(StreamKey, Dedup)>,
    events: u64,
    /// Stream floors in the commit, put back if it fails.
    floors: Vec<((DeviceId, StreamId), Epoch)>,
}

impl IngestCore {
    /// The next commit for the committer, if one is due: the filled block after the flush
    /// interval, when it is full, or at once while draining; a probe while refusing. `None`
    /// while a commit is in flight.
    pub fn poll_commit(&mut self, now: Instant) -> Option<Commit> {
        if self.in_flight.is_some() {
            return None;
        }
        if !self.accepting {
            if now < self.next_probe {
                return None;
            }
            // Ask whether a full commit fits again; frames stay refused until it does.
            self.next_probe = now + PROBE_INTERVAL;
            self.in_flight = Some(InFlight { states: Vec::new(), events: 0, floors: Vec::new() });
            return Some(Commit { reserve_bytes: self.config.max_commit_bytes as u64, ..Commit::default() });
        }
        let started = self.filling.started?;
        let due = self.draining
            || now.saturating_duration_since(started) >= self.config.flush_interval
            || self.filling.builder.bytes() >= self.config.max_commit_bytes;
        if !due {
            return None;
        }
        self.filling.started = None;
        let states = self.endpoint.uncommitted();
        if states.is_empty() && self.filling.builder.is_empty() && !self.bounds.states.has_pending_floors() {
            return None; // Nothing changed (a heartbeat, a duplicate).
        }
        let streams = states
            .iter()
            .map(|(key, state)| (*key, self.endpoint.key_id(key).unwrap_or_default(), state.clone()))
            .collect();
        let changes = self.clocks.take_dirty(now.as_micros() as i64, self.draining);
        let floors = self.bounds.states.take_floors();
        let spares = std::mem::take(&mut self.filling.spares);
        let commit = Commit {
            blocks: self.filling.builder.finish_into(now.as_micros() / 1_000, spares),
            streams,
            clocks: changes.changed.clone(),
            clocks_removed: changes.removed.clone(),
            floors: floors.clone(),
            ..Commit::default()
        };
        self.clocks_in_flight = changes;
        let events = std::mem::take(&mut self.filling.events);
        self.in_flight = Some(InFlight { states, events, floors });
        Some(commit)
    }

    /// The outcome of the commit [`IngestCore::poll_commit`] handed out: success releases
    /// its ACKs (and, for a probe, ends the refusal); failure rolls back.
    pub fn handle_committed(&mut self, now: Instant, result: CommitResult) {
        let Some(in_flight) = self.in_flight.take() else { return };
        match result {
            Ok(committed) => {
                self.bounds.states.committed(&committed.stream_states);
                self.clocks_in_flight = Default::default();
                for (stream, state) in &in_flight.states {
                    self.endpoint.handle_durable(now, *stream, state);
                }
                self.counters.events_committed += in_flight.events;
                if in_flight.events > 0 {
                    self.counters.last_events_commit_unix_us = Some(now.as_micros());
                }
                if !self.accepting {
                    tracing::info!("log accepts writes again; acknowledging");
                    self.set_accepting(true);
                }
            }
            Err(error) => {
                if self.accepting {
                    tracing::error!(%error, "commit failed: not acknowledging until the log takes writes again");
                }
                self.set_accepting(false);
                // A storage error may have left the commit on disk (a failed fsync): the
                // receivers then restore from the log, not from memory.
                let outcome_unknown = matches!(error, LogError::Storage(_) | LogError::Closed);
                self.roll_back(in_flight, outcome_unknown);
                self.next_probe = now + PROBE_INTERVAL;
            }
        }
    }

    /// The committer did not take the commit (it has stopped: shutdown): what it held is
    /// forgotten as after a failed commit, without refusing what comes next.
    pub fn handle_not_taken(&mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            tracing::error!("commit not taken; rolling back");
            self.roll_back(in_flight, false);
        }
    }

    /// Forgets everything not durable: receivers, floors, clock models, claims and the block
    /// being filled. When the commit may have reached the log after all, the receivers it
    /// touched leave memory instead of going back to their last known durable state.
    fn roll_back(&mut self, in_flight: InFlight, outcome_unknown: bool) {
        if outcome_unknown {
            self.endpoint.forget_uncommitted();
        } else {
            self.endpoint.rollback_uncommitted();
        }
        self.bounds.states.restore_floors(in_flight.floors);
        self.clocks.restore_dirty(std::mem::take(&mut self.clocks_in_flight));
        if let Some(claims) = &mut self.claims {
            claims.forget();
        }
        self.filling.builder.finish(0);
        self.filling.events = 0;
        self.filling.started = None;
    }
}
