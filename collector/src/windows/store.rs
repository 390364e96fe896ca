//! Where window state lives when it is not in memory: the log's redb file, in two tables the
//! window processor alone writes (through the committer, with its checkpoint):
//!
//! - **device units**, one value per device: its completeness, watermark and per-device
//!   windows ([`driftlog_eventtime::window::DeviceWindows`]). A device that is offline costs
//!   no memory; its unit comes back when its next record, or its time-out, needs it.
//! - **stored fleet windows**: fleet windows that fired and hold nothing back, kept only for
//!   late elements within their allowed lateness (a day by default). The key orders them by
//!   section, then cleanup time, so the ones a watermark passed are one range.
//!
//! The pipeline reads through [`StateStore`] and writes into [`Pending`], which it also reads
//! first; the processor commits `Pending` with each checkpoint and clears it afterwards.
//! `log replay` uses [`NoStore`]: everything stays pending, in memory.

use crate::log::LogError;
use driftlog_protocol::DeviceId;
use std::collections::BTreeMap;

/// A stored fleet window: its key and encoded state.
pub type StoredEntry = (Vec<u8>, Vec<u8>);

/// Committed window state, read by the pipeline (see the [module docs](self)).
pub trait StateStore {
    fn unit(&self, device: DeviceId) -> Result<Option<Vec<u8>>, LogError>;
    fn stored_window(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError>;
    /// Stored windows with keys in `[from, to)`, in key order, at most `limit` of them.
    fn stored_windows(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<StoredEntry>, LogError>;
}

/// A store that holds nothing (replays keep all their state pending, in memory).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoStore;

impl StateStore for NoStore {
    fn unit(&self, _: DeviceId) -> Result<Option<Vec<u8>>, LogError> {
        Ok(None)
    }
    fn stored_window(&self, _: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        Ok(None)
    }
    fn stored_windows(&self, _: &[u8], _: &[u8], _: usize) -> Result<Vec<StoredEntry>, LogError> {
        Ok(Vec::new())
    }
}

/// Writes not committed yet: `None` deletes. Read before the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub units: BTreeMap<DeviceId, Option<Vec<u8>>>,
    pub windows: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.units.is_empty() && self.windows.is_empty()
    }

    /// Bytes of the values held: memory the pending writes take.
    pub fn bytes(&self) -> usize {
        let units: usize = self.units.values().map(|v| v.as_ref().map_or(0, Vec::len) + 16).sum();
        let windows: usize = self.windows.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 16).sum();
        units + windows
    }

    pub fn unit(&self, store: &dyn StateStore, device: DeviceId) -> Result<Option<Vec<u8>>, LogError> {
        match self.units.get(&device) {
            Some(pending) => Ok(pending.clone()),
            None => store.unit(device),
        }
    }

    pub fn stored_window(&self, store: &dyn StateStore, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        match self.windows.get(key) {
            Some(pending) => Ok(pending.clone()),
            None => store.stored_window(key),
        }
    }

    /// The stored windows in `[from, to)` as they stand with the pending writes applied.
    pub fn stored_windows(&self, store: &dyn StateStore, from: &[u8], to: &[u8]) -> Result<Vec<StoredEntry>, LogError> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = store.stored_windows(from, to, usize::MAX)?.into_iter().collect();
        for (key, value) in self.windows.range(from.to_vec()..to.to_vec()) {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().collect())
    }

    /// The first stored window key in `[from, to)` with the pending writes applied, reading no
    /// more of the store than the pending deletes there could hide.
    pub fn first_stored_window(
        &self,
        store: &dyn StateStore,
        from: &[u8],
        to: &[u8],
    ) -> Result<Option<Vec<u8>>, LogError> {
        let pending = self.windows.range(from.to_vec()..to.to_vec());
        let deleted = pending.clone().filter(|(_, value)| value.is_none()).count();
        let stored = store.stored_windows(from, to, deleted + 1)?;
        let first_stored =
            stored.into_iter().map(|(key, _)| key).find(|key| !matches!(self.windows.get(key), Some(None)));
        let first_pending = pending.filter(|(_, value)| value.is_some()).map(|(key, _)| key.clone()).next();
        Ok(match (first_stored, first_pending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }
}

/// Orders `i64` as unsigned bytes do.
fn ordered(value: i64) -> [u8; 8] {
    ((value as u64) ^ (1 << 63)).to_be_bytes()
}

fn section_prefix(section: &str) -> Vec<u8> {
    let name = section.as_bytes();
    let mut key = Vec::with_capacity(1 + name.len() + 16);
    // Section names are at most 64 bytes (validated).
    key.push(name.len().min(255) as u8);
    key.extend_from_slice(&name[..name.len().min(255)]);
    key
}

/// The key of a stored fleet window: section, cleanup time, start, window key.
pub fn stored_window_key(section: &str, cleanup_at: i64, start: i64, key: &str) -> Vec<u8> {
    let mut out = section_prefix(section);
    out.extend_from_slice(&ordered(cleanup_at));
    out.extend_from_slice(&ordered(start));
    out.extend_from_slice(key.as_bytes());
    out
}

/// The range of `section`'s stored windows whose cleanup time is at most `cleanup_at`.
pub fn due_range(section: &str, cleanup_at: i64) -> (Vec<u8>, Vec<u8>) {
    let prefix = section_prefix(section);
    let mut from = prefix.clone();
    from.extend_from_slice(&ordered(i64::MIN));
    let mut to = prefix;
    match cleanup_at.checked_add(1) {
        Some(next) => to.extend_from_slice(&ordered(next)),
        None => to.extend_from_slice(&[0xFF; 17]),
    }
    (from, to)
}

/// A stored window's key read back: cleanup time, start and window key, if it is one of
/// `section`'s.
pub fn parse_stored_key<'a>(section: &str, key: &'a [u8]) -> Option<(i64, i64, &'a str)> {
    let prefix = section_prefix(section);
    let rest = key.strip_prefix(prefix.as_slice())?;
    let number = |bytes: &[u8]| -> Option<i64> {
        let bytes: [u8; 8] = bytes.try_into().ok()?;
        Some((u64::from_be_bytes(bytes) ^ (1 << 63)) as i64)
    };
    let cleanup_at = number(rest.get(..8)?)?;
    let start = number(rest.get(8..16)?)?;
    let window_key = std::str::from_utf8(rest.get(16..)?).ok()?;
    Some((cleanup_at, start, window_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_by_section_then_cleanup_time_and_ranges_take_exactly_the_due_ones() {
        let key = |cleanup: i64, start: i64, k: &str| stored_window_key("w", cleanup, start, k);
        let mut keys = vec![key(5, 0, "b"), key(-3, -9, "a"), key(5, 0, "a"), key(i64::MAX, 0, "z"), key(6, 1, "")];
        keys.push(stored_window_key("v", 0, 0, "a"));
        keys.push(stored_window_key("ww", 0, 0, "a"));
        keys.sort();
        let (from, to) = due_range("w", 5);
        let due: Vec<i64> = keys
            .iter()
            .filter(|k| k.as_slice() >= from.as_slice() && k.as_slice() < to.as_slice())
            .filter_map(|k| parse_stored_key("w", k).map(|(cleanup, _, _)| cleanup))
            .collect();
        assert_eq!(due, vec![-3, 5, 5]);
        let (from, to) = due_range("w", i64::MAX);
        let all = keys.iter().filter(|k| k.as_slice() >= from.as_slice() && k.as_slice() < to.as_slice()).count();
        assert_eq!(all, 5, "every key of section w, none of v or ww");
        assert_eq!(parse_stored_key("w", &key(-3, -9, "a")), Some((-3, -9, "a")));
        assert_eq!(parse_stored_key("v", &key(-3, -9, "a")), None);
    }

    #[test]
    fn pending_writes_override_the_store() {
        let mut pending = Pending::default();
        let a = stored_window_key("w", 1, 0, "a");
        let b = stored_window_key("w", 2, 0, "b");
        pending.windows.insert(a.clone(), Some(vec![1]));
        pending.windows.insert(b.clone(), None);
        let (from, to) = due_range("w", 10);
        assert_eq!(pending.stored_windows(&NoStore, &from, &to).unwrap(), vec![(a, vec![1])]);
        assert_eq!(pending.stored_window(&NoStore, &b).unwrap(), None);
        assert_eq!(pending.first_stored_window(&NoStore, &from, &to).unwrap(), Some(stored_window_key("w", 1, 0, "a")));
        pending.units.insert(7, Some(vec![9]));
        assert_eq!(pending.unit(&NoStore, 7).unwrap(), Some(vec![9]));
    }
}
