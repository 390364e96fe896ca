//! Counters summed over devices and boots.

use crate::disk::DiskStats;
use crate::link::LinkStats;
use driftlog_protocol::sender::SenderStats;

pub(super) fn add_sender_stats(total: &mut SenderStats, add: &SenderStats) {
    *total = sum_stats(total, add);
}

pub(crate) fn sum_stats(a: &SenderStats, b: &SenderStats) -> SenderStats {
    SenderStats {
        data_frames_sent: a.data_frames_sent + b.data_frames_sent,
        events_sent: a.events_sent + b.events_sent,
        events_retransmitted: a.events_retransmitted + b.events_retransmitted,
        backlog_events_sent: a.backlog_events_sent + b.backlog_events_sent,
        tombstone_frames_sent: a.tombstone_frames_sent + b.tombstone_frames_sent,
        heartbeats_sent: a.heartbeats_sent + b.heartbeats_sent,
        acks_received: a.acks_received + b.acks_received,
        naks_received: a.naks_received + b.naks_received,
        nak_ranges_ignored: a.nak_ranges_ignored + b.nak_ranges_ignored,
        timeouts: a.timeouts + b.timeouts,
        frames_declared_lost: a.frames_declared_lost + b.frames_declared_lost,
        reconnects: a.reconnects + b.reconnects,
        smoothed_rtt: a.smoothed_rtt.max(b.smoothed_rtt),
        smoothed_ack_wait: a.smoothed_ack_wait.max(b.smoothed_ack_wait),
        in_flight_frames: 0,
        in_flight_bytes: 0,
    }
}

pub(super) fn add_link_stats(total: &mut LinkStats, add: &LinkStats) {
    total.sent += add.sent;
    total.lost += add.lost;
    total.partitioned += add.partitioned;
    total.duplicated += add.duplicated;
    total.bytes += add.bytes;
}

pub(super) fn add_disk_stats(total: &mut DiskStats, add: &DiskStats) {
    total.writes += add.writes;
    total.syncs += add.syncs;
    total.failed_syncs += add.failed_syncs;
    total.writes_lost_by_failed_sync += add.writes_lost_by_failed_sync;
    total.out_of_space += add.out_of_space;
    total.crashes += add.crashes;
    total.torn_writes += add.torn_writes;
    total.lost_unsynced += add.lost_unsynced;
    total.resurrected += add.resurrected;
    total.bit_flips += add.bit_flips;
    total.crash_points.extend(add.crash_points.iter().copied());
}
