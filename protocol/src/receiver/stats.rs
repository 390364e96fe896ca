/// Counters a driver exports as metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    pub events_new: u64,
    pub events_duplicate: u64,
    /// Sequence numbers the device tombstoned.
    pub tombstoned: u64,
    /// Sequence numbers inferred lost from a heartbeat (never expected in a correct device).
    pub unrecoverable: u64,
    pub reorder_window_full: u64,
    pub acks_sent: u64,
    pub naks_sent: u64,
}
