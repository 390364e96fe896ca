//! The RAM outbox: the protocol's `Backlog` for one stream in one boot epoch.
//!
//! A ring of `N` readings with consecutive sequence numbers `[base, head)`. A reading stays
//! until an ACK covers it (`release`); released readings leave from the front. When a new
//! reading finds the ring full, the oldest held one is dropped and becomes a tombstone
//! (drop-oldest: fresh data wins), merged with the previous tombstone when they touch, so the
//! collector learns of every drop instead of seeing a silent gap. Tombstones live below `base`
//! in a list of `T`; when that is full too, the oldest tombstone is forgotten and counted (the
//! collector then infers the range as unrecoverable from the heartbeat's held range).
//!
//! RAM is lost at reset, and so is what the ring held: a device that must keep unacknowledged
//! events across a power cut needs a flash outbox (not written yet).

use crate::sensors::{Channel, Kind, Reading};
use driftlog_protocol::sender::{Item, Position};
use driftlog_protocol::wire::{DataWriter, DropReason, Event, Payload, Sample, Tags};
use driftlog_protocol::{Backlog, Epoch, Instant, Seq, SeqRange};

/// Series one ring can name.
pub const MAX_CHANNELS: usize = 8;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    pub produced: u64,
    pub dropped: u64,
    pub released: u64,
    pub tombstones_forgotten: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tombstone {
    range: SeqRange,
    reason: DropReason,
}

pub struct Ring<const N: usize, const T: usize> {
    epoch: Epoch,
    /// Sequence number of the oldest slot still in the ring.
    base: Seq,
    /// Sequence number the next reading gets.
    head: Seq,
    slots: [Reading; N],
    released: [bool; N],
    /// Dropped ranges below `base`, ascending, not yet acknowledged.
    tombstones: heapless::Vec<Tombstone, T>,
    channels: heapless::Vec<Channel, MAX_CHANNELS>,
    stats: RingStats,
}

impl<const N: usize, const T: usize> Ring<N, T> {
    /// A ring for `epoch`; readings name their series by index into `channels` (at most
    /// [`MAX_CHANNELS`]; more are ignored).
    pub fn new(epoch: Epoch, channels: &[Channel]) -> Self {
        Ring {
            epoch,
            base: 0,
            head: 0,
            slots: [Reading::EMPTY; N],
            released: [false; N],
            tombstones: heapless::Vec::new(),
            channels: channels.iter().copied().take(MAX_CHANNELS).collect(),
            stats: RingStats { produced: 0, dropped: 0, released: 0, tombstones_forgotten: 0 },
        }
    }

    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// Readings held (sent or not), tombstones excluded.
    pub fn held(&self) -> u64 {
        (self.base..self.head).filter(|&seq| !self.released[self.index(seq)]).count() as u64
    }

    /// True when nothing waits for an acknowledgement: no reading, no tombstone.
    pub fn is_empty(&self) -> bool {
        self.tombstones.is_empty() && self.base == self.head
    }

    fn index(&self, seq: Seq) -> usize {
        (seq % N as u64) as usize
    }

    /// Stores a reading under the next sequence number, dropping the oldest one if the ring
    /// is full.
    pub fn push(&mut self, reading: Reading) -> Seq {
        self.pop_released();
        if self.head - self.base == N as u64 {
            self.drop_oldest();
        }
        let seq = self.head;
        let index = self.index(seq);
        self.slots[index] = reading;
        self.released[index] = false;
        self.head += 1;
        self.stats.produced += 1;
        seq
    }

    fn drop_oldest(&mut self) {
        let seq = self.base;
        self.base += 1;
        self.stats.dropped += 1;
        if let Some(last) = self.tombstones.last_mut()
            && last.range.end == seq
            && last.reason == DropReason::BufferFull
        {
            last.range.end += 1;
            return;
        }
        if self.tombstones.is_full() {
            self.tombstones.remove(0);
            self.stats.tombstones_forgotten += 1;
        }
        // Room was made just above.
        let _ = self.tombstones.push(Tombstone { range: SeqRange::with_len(seq, 1), reason: DropReason::BufferFull });
    }

    fn pop_released(&mut self) {
        while self.base < self.head && self.released[self.index(self.base)] {
            self.base += 1;
        }
    }

    fn event(&self, seq: Seq) -> Event<'static> {
        let reading = self.slots[self.index(seq)];
        let channel = self.channels.get(usize::from(reading.channel)).copied().unwrap_or(Channel::UNKNOWN);
        let sample = Sample { name: channel.name, value: channel.value(reading.raw), tags: Tags::EMPTY };
        let payload = match channel.kind {
            Kind::Gauge => Payload::Gauge(sample),
            Kind::Counter => Payload::Counter(sample),
        };
        // No wall clock on the device: the collector corrects the monotonic time.
        Event { mono: Instant::from_micros(reading.mono_us), wall: None, payload }
    }

    /// `from` moved into this epoch: earlier epochs hold nothing (RAM does not survive a reset).
    fn clamp(&self, from: Position) -> Option<Seq> {
        match from.epoch.cmp(&self.epoch) {
            core::cmp::Ordering::Less => Some(0),
            core::cmp::Ordering::Equal => Some(from.seq),
            core::cmp::Ordering::Greater => None,
        }
    }
}

impl<const N: usize, const T: usize> Backlog for Ring<N, T> {
    type Error = core::convert::Infallible;

    fn head(&self) -> Position {
        Position::new(self.epoch, self.head)
    }

    fn tail(&self) -> Position {
        if let Some(first) = self.tombstones.first() {
            return Position::new(self.epoch, first.range.start);
        }
        let seq = (self.base..self.head).find(|&seq| !self.released[self.index(seq)]).unwrap_or(self.head);
        Position::new(self.epoch, seq)
    }

    fn first_at_or_after(&mut self, from: Position, until: Position) -> Result<Option<(Position, Item)>, Self::Error> {
        let Some(from_seq) = self.clamp(from) else { return Ok(None) };
        let at = |seq: Seq| Position::new(self.epoch, seq);
        for tombstone in &self.tombstones {
            if tombstone.range.end > from_seq {
                let position = at(tombstone.range.start.max(from_seq));
                if position >= until {
                    return Ok(None);
                }
                return Ok(Some((position, Item::Tombstone { end: tombstone.range.end, reason: tombstone.reason })));
            }
        }
        for seq in from_seq.max(self.base)..self.head {
            if at(seq) >= until {
                break;
            }
            if !self.released[self.index(seq)] {
                return Ok(Some((at(seq), Item::Event)));
            }
        }
        Ok(None)
    }

    fn fill(&mut self, from: Position, end: Seq, writer: &mut DataWriter<'_>) -> Result<(), Self::Error> {
        if from.epoch != self.epoch || from.seq < self.base {
            return Ok(());
        }
        for seq in from.seq..end.min(self.head) {
            if self.released[self.index(seq)] || writer.push(&self.event(seq)).is_err() {
                break;
            }
        }
        Ok(())
    }

    fn release(&mut self, epoch: Epoch, range: SeqRange) -> Result<(), Self::Error> {
        if epoch != self.epoch {
            return Ok(());
        }
        // A tombstone leaves when the acknowledgement covers it whole; a part acknowledged at
        // one end is trimmed off (a retransmitted tombstone may start inside the original).
        self.tombstones.retain_mut(|tombstone| {
            let covered = tombstone.range.intersect(range);
            if covered.is_empty() {
                return true;
            }
            if covered == tombstone.range {
                return false;
            }
            if covered.start == tombstone.range.start {
                tombstone.range.start = covered.end;
            } else if covered.end == tombstone.range.end {
                tombstone.range.end = covered.start;
            }
            true
        });
        for seq in range.start.max(self.base)..range.end.min(self.head) {
            let index = self.index(seq);
            if !self.released[index] {
                self.released[index] = true;
                self.stats.released += 1;
            }
        }
        self.pop_released();
        Ok(())
    }
}
