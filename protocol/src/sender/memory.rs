//! An in-memory [`Backlog`] (feature `alloc`): the simulator's device buffer, the benchmark's,
//! and a reference for the trait contract. Bounded in events, with a drop policy that leaves
//! tombstones.

use super::backlog::{Backlog, Item, Position};
use crate::wire::{DataWriter, DropReason, Event, Member, Opaque, Payload, Sample, Tag, Tags};
use crate::{ClockQuality, Epoch, Instant, Seq, SeqRange, WallTime};
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

/// An event that owns its strings.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedEvent {
    pub mono: Instant,
    pub wall: Option<WallTime>,
    pub payload: OwnedPayload,
}

#[derive(Clone, Debug, PartialEq)]
pub enum OwnedPayload {
    Counter { name: String, value: f64, tags: Vec<(String, String)> },
    Gauge { name: String, value: f64, tags: Vec<(String, String)> },
    GaugeDelta { name: String, value: f64, tags: Vec<(String, String)> },
    Timer { name: String, value: f64, tags: Vec<(String, String)> },
    Histogram { name: String, value: f64, tags: Vec<(String, String)> },
    Set { name: String, member: String, tags: Vec<(String, String)> },
    Opaque { name: String, bytes: Vec<u8> },
}

impl OwnedEvent {
    pub fn gauge(mono: Instant, name: &str, value: f64) -> OwnedEvent {
        OwnedEvent { mono, wall: None, payload: OwnedPayload::Gauge { name: name.into(), value, tags: Vec::new() } }
    }

    pub fn with_wall(mut self, unix_micros: i64, quality: ClockQuality) -> OwnedEvent {
        self.wall = Some(WallTime { unix_micros, quality });
        self
    }

    /// Calls `f` with this event borrowed as a wire [`Event`]. Tags past
    /// [`crate::wire::MAX_TAGS`] are not carried.
    pub fn with_event<R>(&self, f: impl FnOnce(&Event<'_>) -> R) -> R {
        let list = match &self.payload {
            OwnedPayload::Counter { tags, .. }
            | OwnedPayload::Gauge { tags, .. }
            | OwnedPayload::GaugeDelta { tags, .. }
            | OwnedPayload::Timer { tags, .. }
            | OwnedPayload::Histogram { tags, .. }
            | OwnedPayload::Set { tags, .. } => tags.as_slice(),
            OwnedPayload::Opaque { .. } => &[],
        };
        let tag_refs: Vec<Tag<'_>> =
            list.iter().take(crate::wire::MAX_TAGS).map(|(key, value)| Tag { key, value }).collect();
        let tags = Tags::new(&tag_refs);
        let payload = match &self.payload {
            OwnedPayload::Counter { name, value, .. } => Payload::Counter(Sample { name, value: *value, tags }),
            OwnedPayload::Gauge { name, value, .. } => Payload::Gauge(Sample { name, value: *value, tags }),
            OwnedPayload::GaugeDelta { name, value, .. } => Payload::GaugeDelta(Sample { name, value: *value, tags }),
            OwnedPayload::Timer { name, value, .. } => Payload::Timer(Sample { name, value: *value, tags }),
            OwnedPayload::Histogram { name, value, .. } => Payload::Histogram(Sample { name, value: *value, tags }),
            OwnedPayload::Set { name, member, .. } => Payload::Set(Member { name, member, tags }),
            OwnedPayload::Opaque { name, bytes } => Payload::Opaque(Opaque { name, bytes }),
        };
        f(&Event { mono: self.mono, wall: self.wall, payload })
    }
}

/// What to do when the backlog is at its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropPolicy {
    /// Turn the oldest held event into a tombstone (telemetry default: fresh data wins).
    DropOldest,
    /// Give the new event its sequence number, but store a tombstone instead of it.
    DropNewest,
}

#[derive(Clone, Debug)]
enum Slot {
    Event(OwnedEvent),
    Tombstone { end: Seq, reason: DropReason },
}

#[derive(Clone, Debug)]
struct Entry {
    position: Position,
    slot: Slot,
    released: bool,
}

impl Entry {
    fn end(&self) -> Seq {
        match self.slot {
            Slot::Event(_) => self.position.seq + 1,
            Slot::Tombstone { end, .. } => end,
        }
    }
}

/// Counters for the checker and for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryBacklogStats {
    pub enqueued: u64,
    pub dropped: u64,
    pub released_events: u64,
    pub held_events_max: u64,
}

#[derive(Clone, Debug)]
pub struct MemoryBacklog {
    head: Position,
    entries: VecDeque<Entry>,
    capacity_events: usize,
    held_events: usize,
    policy: DropPolicy,
    stats: MemoryBacklogStats,
}

impl MemoryBacklog {
    /// # Panics
    /// If `capacity_events` is 0.
    pub fn new(epoch: Epoch, capacity_events: usize, policy: DropPolicy) -> MemoryBacklog {
        assert!(capacity_events > 0, "a backlog must hold at least one event");
        MemoryBacklog {
            head: Position::new(epoch, 0),
            entries: VecDeque::new(),
            capacity_events,
            held_events: 0,
            policy,
            stats: MemoryBacklogStats::default(),
        }
    }

    pub fn stats(&self) -> MemoryBacklogStats {
        self.stats
    }

    pub fn held_events(&self) -> usize {
        self.held_events
    }

    /// A reboot of a device whose buffer survives (disk, flash): a new epoch, seq from 0.
    ///
    /// # Panics
    /// If `epoch` is not newer than the current one.
    pub fn start_epoch(&mut self, epoch: Epoch) {
        assert!(epoch > self.head.epoch, "epochs must increase");
        self.head = Position::new(epoch, 0);
    }

    /// Enqueues an event and returns its position; applies the drop policy at the bound.
    pub fn push(&mut self, event: OwnedEvent) -> Position {
        let position = self.head;
        self.head.seq += 1;
        self.stats.enqueued += 1;
        if self.held_events >= self.capacity_events {
            self.stats.dropped += 1;
            match self.policy {
                DropPolicy::DropNewest => {
                    self.push_tombstone(position, DropReason::RejectedNew);
                    return position;
                }
                DropPolicy::DropOldest => self.drop_oldest(),
            }
        }
        self.entries.push_back(Entry { position, slot: Slot::Event(event), released: false });
        self.held_events += 1;
        self.stats.held_events_max = self.stats.held_events_max.max(self.held_events as u64);
        position
    }

    fn push_tombstone(&mut self, position: Position, reason: DropReason) {
        if let Some(last) = self.entries.back_mut()
            && let Slot::Tombstone { end, reason: r } = &mut last.slot
            && !last.released
            && last.position.epoch == position.epoch
            && *end == position.seq
            && *r == reason
        {
            *end += 1;
            return;
        }
        self.entries.push_back(Entry {
            position,
            slot: Slot::Tombstone { end: position.seq + 1, reason },
            released: false,
        });
    }

    fn drop_oldest(&mut self) {
        let Some(index) = self.entries.iter().position(|e| !e.released && matches!(e.slot, Slot::Event(_))) else {
            return;
        };
        let position = self.entries[index].position;
        self.held_events -= 1;
        // Merge into a tombstone that ends right before it, if any.
        if index > 0 {
            let previous = &mut self.entries[index - 1];
            if let Slot::Tombstone { end, reason: DropReason::BufferFull } = &mut previous.slot
                && !previous.released
                && previous.position.epoch == position.epoch
                && *end == position.seq
            {
                *end += 1;
                self.entries.remove(index);
                return;
            }
        }
        self.entries[index].slot = Slot::Tombstone { end: position.seq + 1, reason: DropReason::BufferFull };
    }

    /// Index of the first entry that ends after `position`.
    fn index_at(&self, position: Position) -> usize {
        self.entries.partition_point(|e| (e.position.epoch, e.end()) <= (position.epoch, position.seq))
    }

    fn pop_released(&mut self) {
        while self.entries.front().is_some_and(|e| e.released) {
            self.entries.pop_front();
        }
    }
}

impl Backlog for MemoryBacklog {
    type Error = core::convert::Infallible;

    fn head(&self) -> Position {
        self.head
    }

    fn tail(&self) -> Position {
        self.entries.iter().find(|e| !e.released).map_or(self.head, |e| e.position)
    }

    fn first_at_or_after(&mut self, from: Position, until: Position) -> Result<Option<(Position, Item)>, Self::Error> {
        for entry in self.entries.range(self.index_at(from)..) {
            let position = entry.position.max(from);
            if position >= until {
                break;
            }
            if entry.released {
                continue;
            }
            let item = match entry.slot {
                Slot::Event(_) => Item::Event,
                Slot::Tombstone { end, reason } => Item::Tombstone { end, reason },
            };
            return Ok(Some((position, item)));
        }
        Ok(None)
    }

    fn fill(&mut self, from: Position, end: Seq, writer: &mut DataWriter<'_>) -> Result<(), Self::Error> {
        for (expected, entry) in (from.seq..).zip(self.entries.range(self.index_at(from)..)) {
            if entry.released || entry.position != Position::new(from.epoch, expected) || expected >= end {
                break;
            }
            let Slot::Event(event) = &entry.slot else { break };
            if event.with_event(|event| writer.push(event)).is_err() {
                break;
            }
        }
        Ok(())
    }

    fn release(&mut self, epoch: Epoch, range: SeqRange) -> Result<(), Self::Error> {
        let mut index = self.index_at(Position::new(epoch, range.start));
        while index < self.entries.len() {
            let entry = &mut self.entries[index];
            if entry.position >= Position::new(epoch, range.end) {
                break;
            }
            if !entry.released {
                match entry.slot {
                    Slot::Event(_) => {
                        entry.released = true;
                        entry.slot = Slot::Tombstone { end: entry.position.seq + 1, reason: DropReason::BufferFull };
                        self.held_events -= 1;
                        self.stats.released_events += 1;
                    }
                    Slot::Tombstone { end, .. } => {
                        // Acknowledged as a whole once the receiver has seen it; a partial
                        // acknowledgement keeps the tombstone until the rest is covered too.
                        if range.start <= entry.position.seq && end <= range.end {
                            entry.released = true;
                        }
                    }
                }
            }
            index += 1;
        }
        self.pop_released();
        Ok(())
    }
}
