use core::time::Duration;

/// Counters a driver exports as metrics. Monotonic except the gauges at the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderStats {
    pub data_frames_sent: u64,
    pub events_sent: u64,
    /// Events sent again after a NAK, a loss inference or a timeout.
    pub events_retransmitted: u64,
    /// First transmissions from the paced backlog region (the rest of `events_sent` minus
    /// retransmissions went out live).
    pub backlog_events_sent: u64,
    pub tombstone_frames_sent: u64,
    pub heartbeats_sent: u64,
    pub acks_received: u64,
    pub naks_received: u64,
    /// NAKed ranges ignored because the events were sent too recently (linger) or not yet.
    pub nak_ranges_ignored: u64,
    pub timeouts: u64,
    /// Frames declared lost by the ACK-based detector (packet or time threshold).
    pub frames_declared_lost: u64,
    /// Transitions back from unreachable.
    pub reconnects: u64,
    pub smoothed_rtt: Duration,
    /// How long a frame waits for its ACK (round trip, the receiver's commit and ACK delay),
    /// smoothed.
    pub smoothed_ack_wait: Duration,
    pub in_flight_frames: u64,
    pub in_flight_bytes: u64,
}
