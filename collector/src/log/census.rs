//! `log stats`: what the log holds, counted by reading every block (in chunks, each under
//! its own read transaction, so a running collector's writer is never held up for long).

use super::block::block_records;
use super::record::Record;
use super::{Log, LogError, LogStats};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Blocks read per read transaction.
const BLOCKS_PER_READ: usize = 64;

/// [`LogStats`] plus the counts a full read gives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Census {
    #[serde(flatten)]
    pub stats: LogStats,
    /// Offsets held per record kind (`events` counts each event, the rest each record).
    pub records: BTreeMap<&'static str, u64>,
    /// Devices with at least one event held.
    pub devices: u64,
    /// Blocks that failed to decode; their records are not counted.
    pub corrupt_blocks: u64,
}

pub fn census(log: &Log) -> Result<Census, LogError> {
    let stats = log.stats()?;
    let mut census = Census { stats, ..Census::default() };
    let mut devices = BTreeSet::new();
    // Blocks by key: each read starts at the block holding `from`, which is the last one
    // already counted (skipped) or the first of the log.
    let mut last_counted: Option<u64> = None;
    loop {
        let from = last_counted.map_or(stats.first_offset, |key| key + 1);
        let mut counted_any = false;
        log.visit_blocks::<LogError>(from, BLOCKS_PER_READ, |block| {
            if last_counted.is_some_and(|key| block.first_offset <= key) {
                return Ok(());
            }
            last_counted = Some(block.first_offset);
            counted_any = true;
            let Ok((_, records)) = block_records(block.first_offset, block.value) else {
                census.corrupt_blocks += 1;
                return Ok(());
            };
            let counted: Result<Vec<(&'static str, u64, Option<u64>)>, _> = records
                .map(|record| {
                    record.map(|(_, record)| {
                        let device = match &record {
                            Record::Events { head, .. } => Some(head.device),
                            _ => None,
                        };
                        (record.kind_name(), record.width(), device)
                    })
                })
                .collect();
            match counted {
                Ok(counted) => {
                    for (kind, width, device) in counted {
                        *census.records.entry(kind).or_default() += width;
                        devices.extend(device);
                    }
                }
                Err(_) => census.corrupt_blocks += 1,
            }
            Ok(())
        })?;
        if !counted_any {
            break;
        }
    }
    census.devices = devices.len() as u64;
    Ok(census)
}
