//! Sender tuning. Every bound is explicit; defaults suit a LAN or a cellular uplink.

use crate::StreamId;
use crate::time::duration_micros;
use core::time::Duration;

#[derive(Clone, Debug)]
pub struct SenderConfig {
    pub stream: StreamId,
    /// Largest datagram the sender builds (the caller's buffer must be at least this long).
    pub max_datagram_bytes: usize,
    pub max_events_per_frame: u32,
    /// Bound on unacknowledged bytes on the wire (the frame bound is the `FRAMES` parameter).
    pub max_in_flight_bytes: usize,
    /// RTT assumed before the first sample.
    pub initial_rtt: Duration,
    pub min_rto: Duration,
    pub max_rto: Duration,
    /// The longest the receiver says it holds an ACK (its `ack_delay_max`). The probe timeout
    /// allows at least a round trip plus this, or the measured wait for ACKs when that is
    /// longer (a collector also holds an ACK until the events are committed), so a delayed
    /// ACK is not taken for a loss.
    pub peer_ack_delay_max: Duration,
    /// Added to the 9/8-RTT time threshold of loss detection: the receiver's commit latency
    /// and network reordering that an RTT sample does not show.
    pub reorder_slack: Duration,
    /// Heartbeats carry the held range and clock samples; one goes out at least this often.
    pub heartbeat_interval: Duration,
    /// Pace for replaying the backlog after an outage or a restart, in events per second;
    /// 0 means unpaced. Live events are never paced.
    pub backlog_events_per_second: u32,
    pub backlog_burst_events: u32,
    /// Consecutive timeouts after which the collector counts as unreachable: when it answers
    /// again, everything not yet sent becomes backlog, so live data goes first.
    pub unreachable_after_timeouts: u32,
}

impl SenderConfig {
    pub fn new(stream: StreamId) -> SenderConfig {
        SenderConfig {
            stream,
            max_datagram_bytes: 1_200,
            max_events_per_frame: 64,
            max_in_flight_bytes: 256 * 1024,
            initial_rtt: Duration::from_millis(100),
            min_rto: Duration::from_millis(20),
            max_rto: Duration::from_secs(30),
            peer_ack_delay_max: Duration::from_millis(25),
            reorder_slack: Duration::from_millis(10),
            heartbeat_interval: Duration::from_secs(1),
            backlog_events_per_second: 5_000,
            backlog_burst_events: 256,
            unreachable_after_timeouts: 3,
        }
    }
}

/// The config's durations in µs, converted once: the timers do their arithmetic in `u64`
/// microseconds (see `rtt.rs`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimersUs {
    pub(crate) min_rto: u64,
    pub(crate) max_rto: u64,
    pub(crate) peer_ack_delay_max: u64,
    pub(crate) reorder_slack: u64,
    pub(crate) heartbeat_interval: u64,
}

impl TimersUs {
    pub(crate) fn new(config: &SenderConfig) -> TimersUs {
        TimersUs {
            min_rto: duration_micros(config.min_rto),
            max_rto: duration_micros(config.max_rto),
            peer_ack_delay_max: duration_micros(config.peer_ack_delay_max),
            reorder_slack: duration_micros(config.reorder_slack),
            heartbeat_interval: duration_micros(config.heartbeat_interval),
        }
    }
}
