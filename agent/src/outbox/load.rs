//! Opening: the in-memory state rebuilt from storage, at start and after a failed write.

use super::block::Kind;
use super::index::{HeldIndex, Segment};
use super::scan::{self, Found};
use super::store::{SegmentStore, StoreFile};
use super::{Outbox, OutboxError, TOMBSTONE_RESERVE_BYTES, damage, sizing};
use driftlog_protocol::{Epoch, Seq, StreamId};

impl<S: SegmentStore> Outbox<S> {
    /// Rebuilds the in-memory state from the segment files (truncating an uncommitted tail
    /// of the last one) and their release records, against the tombstones already loaded.
    pub(super) fn load(&mut self) -> Result<(), OutboxError> {
        self.index = HeldIndex::default();
        self.active = None;
        self.read_cache = None;
        self.pending_releases.clear();
        let ids = self.store.list_segments()?;
        let mut tombstones_changed = false;
        let mut damage = damage::DamageTracker::default();
        for (position, &id) in ids.iter().enumerate() {
            let file = self.store.open_segment(id)?;
            let scan = scan::scan(&file)?;
            let mut len = scan.file_len;
            // What follows the readable part looks torn. In the segment a crashed process
            // was writing, that is an append that did not finish (never reported accepted);
            // in any other (sealed, synced before the next one was made), it is damage.
            let torn_tail = scan.readable_len < scan.file_len;
            let is_last = position + 1 == ids.len();
            if torn_tail && is_last {
                file.set_len(scan.readable_len)?;
                file.sync_all()?;
                len = scan.readable_len;
            }
            if scan.is_damaged() || (torn_tail && !is_last) {
                self.note_damaged(id);
                tracing::error!(
                    segment = %self.store.segment_name(id),
                    readable_bytes = scan.readable_len,
                    file_bytes = scan.file_len,
                    "outbox segment damaged; keeping what still reads"
                );
            }
            self.index.push_segment(Segment { id, len, blocks: scan.blocks().count() as u32, runs: Vec::new() });
            for found in &scan.found {
                match *found {
                    Found::Block(header, _) if header.kind == Kind::Events => {
                        damage.events(header.stream, header.epoch, header.start, header.end);
                        self.index.store(header.stream, header.epoch, header.start, header.end);
                    }
                    Found::Block(header, _) => {
                        damage.release(header.stream, header.epoch, header.start, header.end);
                        self.index.unhold(header.stream, header.epoch, header.start, header.end);
                        tombstones_changed |=
                            self.tombstones.release(header.stream, header.epoch, header.start, header.end);
                    }
                    Found::Damage { header, .. } => damage.damaged(header),
                }
            }
            if torn_tail && !is_last {
                damage.damaged(None);
            }
            self.next_segment_id = id + 1;
        }
        for (stream, epoch, start, end) in damage.lost() {
            tombstones_changed |= self.tombstone_unreadable(stream, epoch, start, end) > 0;
        }
        // A crash between saving tombstones and deleting the segments they cover.
        let dropped: Vec<(StreamId, Epoch, Seq, Seq)> =
            self.tombstones.iter().map(|(&(stream, epoch, start), &(end, _))| (stream, epoch, start, end)).collect();
        for (stream, epoch, start, end) in dropped {
            self.index.unhold(stream, epoch, start, end);
        }
        if tombstones_changed {
            self.tombstones.save(true)?;
        }
        self.delete_released_segments()?;
        Ok(())
    }

    /// Recovers from a failed write (typically a full disk): cuts the segment being written
    /// back to its last commit, reloads the segments from disk, and lowers the byte bound to
    /// what is held, so the drop policy makes room from now on (one oldest segment, 1/16 of
    /// the bound, per append that needs it) instead of the disk refusing the write.
    pub fn recover_from_storage_error(&mut self) -> Result<(), OutboxError> {
        self.stats.storage_errors += 1;
        if let (Some(active), Some(segment)) = (&self.active, self.index.segments().back()) {
            active.file.set_len(segment.len)?;
        }
        // The tombstones stay as they are in memory: those not saved yet (the save failed
        // with the write) are still true, and the sender may have sent them already.
        // Releases not on disk yet are still true: the sender will not send those events
        // again, so held again they would stay forever.
        let pending = std::mem::take(&mut self.pending_releases);
        let loaded = self.load();
        // Even if the reload failed: the sender must learn of these sequence numbers.
        self.settle_failed_append();
        for &(stream, epoch, start, end) in &pending {
            self.index.unhold(stream, epoch, start, end);
            self.tombstones.release(stream, epoch, start, end);
        }
        self.pending_releases = pending;
        loaded?;
        self.delete_released_segments()?;
        // From the configured bound, not the one in force: what is held grew since the last
        // failure only by writes that found room, and by tombstones, which need none.
        self.max_bytes =
            sizing::bound_after_storage_error(self.config.max_bytes, self.held_bytes(), TOMBSTONE_RESERVE_BYTES);
        Ok(())
    }

    /// Settles the sequence numbers of the append that failed last. If none of it can be
    /// on disk (the write failed before any sync), they are given again. If part of it can
    /// (tombstones it saved, blocks a failed sync left unknown), those are never given
    /// again: what of them is neither held nor tombstoned gets a `storage_failure`
    /// tombstone, so the collector sees no unexplained gap and no sequence number ever
    /// stands for two events. The tombstones are saved when they can be; until then the
    /// sender has them from memory.
    pub(super) fn settle_failed_append(&mut self) {
        let Some(failed) = self.failed_append.take() else { return };
        let epoch = self.epoch;
        let end = if failed.unknown {
            failed.end
        } else {
            self.tombstones
                .iter()
                .filter(|(key, _)| key.0 == failed.stream && key.1 == epoch)
                .filter(|(key, _)| (failed.start..failed.end).contains(&key.2))
                .map(|(_, &(end, _))| end)
                .max()
                .unwrap_or(failed.start)
        };
        if end <= failed.start {
            return;
        }
        let events = self.tombstone_storage_failure(failed.stream, epoch, failed.start, end);
        self.stats.failed_append_events += events;
        let next = self.next_seq.entry(failed.stream).or_insert(0);
        *next = (*next).max(end);
        tracing::warn!(
            stream = failed.stream,
            epoch,
            first_seq = failed.start,
            events,
            "failed append tombstoned as storage_failure"
        );
        if let Err(error) = self.tombstones.save(true) {
            tracing::warn!(%error, "cannot save the tombstones of a failed append yet");
        }
    }

    /// A tombstone save of the failing append did not complete: what it wrote is unknown.
    pub(super) fn mark_failed_append_unknown(&mut self) {
        if let Some(failed) = &mut self.failed_append {
            failed.unknown = true;
        }
    }
}
