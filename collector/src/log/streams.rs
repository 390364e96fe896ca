//! The receivers' dedup states in the log (`streams`: one per `(device, stream, epoch)`),
//! and the high-water mark their finished epochs compact into (`floors`: one per
//! `(device, stream)`).
//!
//! A device that reboots starts a new epoch, so each boot used to add a state that stayed
//! forever. A state is finished once the device has said (in a heartbeat of a later epoch
//! of that stream, with its oldest held sequence number above 0) that it holds nothing of
//! any earlier epoch: then the epochs below that one are folded into the stream's floor and
//! their states deleted. A frame of an epoch below the floor, sent by a boot at or above it,
//! can only be a replay of something the collector acknowledged (an agent that lost its
//! release records in a crash): all duplicates. Floors and deletions are committed with the
//! same transaction as the states, and every change of the row count per device is reported
//! back, so the per-device bound on states holds without scanning.

use super::{Dedup, Log, LogError, STREAMS, StoredStream};
use driftlog_protocol::ids::StreamKey;
use driftlog_protocol::{DeviceId, Epoch, KeyId, StreamId};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use std::collections::BTreeMap;

pub(super) const FLOORS: TableDefinition<(u64, u32), u64> = TableDefinition::new("floors");

/// `(device, stream)` → the lowest epoch that is not finished.
pub type Floors = BTreeMap<(DeviceId, StreamId), Epoch>;

/// What the log holds of stream states, read once at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamCensus {
    /// States per device.
    pub per_device: BTreeMap<DeviceId, u32>,
    pub floors: Floors,
}

impl StreamCensus {
    pub fn total(&self) -> u64 {
        self.per_device.values().map(|n| u64::from(*n)).sum()
    }
}

impl Log {
    /// One stream's committed state, if the log has it.
    pub fn stream_state(&self, stream: &StreamKey) -> Result<Option<(KeyId, Dedup)>, LogError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(STREAMS)?;
        let Some(value) = table.get((stream.device, stream.stream, stream.epoch))? else { return Ok(None) };
        let stored: StoredStream = postcard::from_bytes(value.value()).map_err(|_| LogError::CorruptState(*stream))?;
        Ok(Some((stored.key_id, stored.state)))
    }

    /// Counts the states per device (keys only) and reads the floors.
    pub fn stream_census(&self) -> Result<StreamCensus, LogError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let mut census = StreamCensus::default();
        for entry in txn.open_table(STREAMS)?.iter()? {
            let (key, _) = entry?;
            *census.per_device.entry(key.value().0).or_insert(0) += 1;
        }
        for entry in txn.open_table(FLOORS)?.iter()? {
            let (key, value) = entry?;
            census.floors.insert(key.value(), value.value());
        }
        Ok(census)
    }
}

/// What a commit did to the stream states.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateChanges {
    /// States each device gained (positive) or lost, net.
    pub per_device: Vec<(DeviceId, i64)>,
    /// States deleted below a raised floor.
    pub compacted: u64,
}

/// Raises (or, for a reinstalled device, sets) floors and writes states, inside a commit's
/// transaction: first the states below each new floor go, then the commit's states are
/// written (so a state the commit carries survives its floor).
pub(super) fn write_stream_states(
    txn: &WriteTransaction,
    floors: &[((DeviceId, StreamId), Epoch)],
    streams: &[(StreamKey, KeyId, Dedup)],
) -> Result<StateChanges, LogError> {
    let mut compacted = 0;
    let mut changes: BTreeMap<DeviceId, i64> = BTreeMap::new();
    let mut table = txn.open_table(STREAMS)?;
    if !floors.is_empty() {
        let mut floor_table = txn.open_table(FLOORS)?;
        for &((device, stream), floor) in floors {
            floor_table.insert((device, stream), floor)?;
            let finished: Vec<(u64, u32, u64)> = table
                .range((device, stream, 0)..(device, stream, floor))?
                .map(|entry| entry.map(|(key, _)| key.value()))
                .collect::<Result<_, _>>()?;
            for key in finished {
                table.remove(key)?;
                *changes.entry(device).or_insert(0) -= 1;
                compacted += 1;
            }
        }
    }
    for (key, key_id, state) in streams {
        let stored = postcard::to_allocvec(&StoredStream { key_id: *key_id, state: state.clone() })
            .map_err(|_| LogError::CorruptState(*key))?;
        if table.insert((key.device, key.stream, key.epoch), stored.as_slice())?.is_none() {
            *changes.entry(key.device).or_insert(0) += 1;
        }
    }
    let per_device = changes.into_iter().filter(|(_, change)| *change != 0).collect();
    Ok(StateChanges { per_device, compacted })
}
