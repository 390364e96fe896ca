//! `status.json`: what `driftlog-agent status` prints. The driver rewrites it atomically
//! (write, then rename) every second and at shutdown, so a reader never sees half a file and
//! no extra socket protocol is needed.

use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// Unix seconds when this was written; a stale file means the agent is not running.
    pub written_at_unix_s: u64,
    pub epoch: u64,
    pub backlog_events: u64,
    pub backlog_bytes: u64,
    /// Age of the oldest event not yet acknowledged, by the device's own clocks.
    pub oldest_unacknowledged_age_s: Option<f64>,
    pub appended_events: u64,
    pub dropped_events: u64,
    pub refused_events: u64,
    pub released_events: u64,
    /// Failed outbox writes (disk full, I/O errors); each reopened the outbox.
    pub storage_errors: u64,
    /// The outbox byte bound in force (lowered after the disk filled up).
    pub outbox_max_bytes: u64,
    /// Outbox segments found damaged, at open (their readable prefix was kept) or on read.
    #[serde(default)]
    pub corrupt_segments: u64,
    /// Events lost to that damage, each tombstoned as `storage_failure`.
    #[serde(default)]
    pub corrupt_events: u64,
    /// Tombstones forgotten at their bound: the collector sees those ranges as gaps.
    #[serde(default)]
    pub tombstones_forgotten: u64,
    /// Events of failed appends (their inputs were told) whose sequence numbers got a
    /// `storage_failure` tombstone, since whether they reached the disk is unknown.
    #[serde(default)]
    pub failed_append_events: u64,
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    pub datagrams_rejected: u64,
    pub send_errors: u64,
    pub streams: Vec<StreamStatus>,
    /// The StatsD listener's counters, when it runs.
    #[serde(default)]
    pub statsd: Option<crate::statsd::StatsdStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamStatus {
    pub stream: u32,
    pub rtt_ms: f64,
    /// How long a frame waits for its ACK (round trip, the collector's commit and ACK
    /// delay), smoothed: what the retransmission timeout allows for.
    #[serde(default)]
    pub ack_wait_ms: f64,
    pub events_sent: u64,
    pub events_retransmitted: u64,
    pub backlog_events_sent: u64,
    pub tombstone_frames_sent: u64,
    pub timeouts: u64,
    pub unreachable: bool,
    pub in_flight_frames: u64,
}

/// Room the file keeps beyond its content (trailing spaces), so an overwrite in place on a
/// full disk needs no new block even when the status grew (another stream, longer numbers).
const SLACK_BYTES: usize = 2_048;
const PAGE_BYTES: usize = 4_096;

impl Status {
    /// Replaces `path` atomically (write a temporary file, rename). When that fails, as it
    /// does on a full disk, the file is overwritten in place instead: it keeps some slack for
    /// exactly this, so the status stays current (and `status` does not report a running
    /// agent as stopped) while the disk is full.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        let padded = (bytes.len() + SLACK_BYTES).div_ceil(PAGE_BYTES) * PAGE_BYTES;
        let content = bytes.len();
        bytes.resize(padded, b' ');
        let temporary = path.with_extension("json.tmp");
        let atomic = std::fs::write(&temporary, &bytes).and_then(|()| std::fs::rename(&temporary, path));
        let Err(error) = atomic else { return Ok(()) };
        let _ = std::fs::remove_file(&temporary);
        Self::overwrite(path, &mut bytes, content).map_err(|_| error)
    }

    /// Writes `bytes[..content]` over the start of `path`, blanking the rest of what it held,
    /// within the file's current length (no block to allocate).
    fn overwrite(path: &Path, bytes: &mut Vec<u8>, content: usize) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        let length = file.metadata()?.len() as usize;
        if content > length {
            return Err(std::io::Error::other("status outgrew its file"));
        }
        bytes.resize(length, b' ');
        file.write_all_at(bytes, 0)
    }

    /// Reads `path`, retrying briefly if it catches an overwrite in place half done.
    pub fn read(path: &Path) -> anyhow::Result<Status> {
        use anyhow::Context;
        let mut attempts = 0;
        loop {
            let bytes = std::fs::read(path)
                .with_context(|| format!("no status at {} (is the agent running?)", path.display()))?;
            match serde_json::from_slice(&bytes) {
                Ok(status) => return Ok(status),
                Err(_) if attempts < 3 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The human-readable form.
    pub fn render(&self, now_unix_s: u64) -> String {
        let mut out = String::new();
        let age = now_unix_s.saturating_sub(self.written_at_unix_s);
        if age > 5 {
            out.push_str(&format!("warning: status is {age} s old; the agent is probably not running\n"));
        }
        out.push_str(&format!("epoch                  {}\n", self.epoch));
        out.push_str(&format!("backlog                {} events, {} bytes\n", self.backlog_events, self.backlog_bytes));
        match self.oldest_unacknowledged_age_s {
            Some(age) => out.push_str(&format!("oldest unacknowledged  {age:.1} s\n")),
            None => out.push_str("oldest unacknowledged  -\n"),
        }
        out.push_str(&format!(
            "events                 {} appended, {} released, {} dropped (tombstoned), {} refused\n",
            self.appended_events, self.released_events, self.dropped_events, self.refused_events
        ));
        if self.storage_errors > 0 {
            out.push_str(&format!(
                "storage errors         {} (outbox bound lowered to {} bytes; {} events of failed writes tombstoned)\n",
                self.storage_errors, self.outbox_max_bytes, self.failed_append_events
            ));
        }
        if self.corrupt_segments > 0 || self.tombstones_forgotten > 0 {
            out.push_str(&format!(
                "outbox damage          {} corrupt segments ({} events lost, tombstoned), {} tombstones forgotten at their bound\n",
                self.corrupt_segments, self.corrupt_events, self.tombstones_forgotten
            ));
        }
        out.push_str(&format!(
            "datagrams              {} sent, {} received, {} rejected, {} send errors\n",
            self.datagrams_sent, self.datagrams_received, self.datagrams_rejected, self.send_errors
        ));
        if let Some(statsd) = &self.statsd {
            let list = |map: &std::collections::BTreeMap<String, u64>| {
                map.iter().map(|(reason, count)| format!("{reason} {count}")).collect::<Vec<_>>().join(", ")
            };
            out.push_str(&format!(
                "statsd                 {} datagrams, {} lines, {} samples to the outbox; bad: {}; dropped: {}\n",
                statsd.packets,
                statsd.lines,
                statsd.samples,
                if statsd.bad_samples.is_empty() { "none".to_string() } else { list(&statsd.bad_samples) },
                if statsd.dropped.is_empty() { "none".to_string() } else { list(&statsd.dropped) },
            ));
        }
        for stream in &self.streams {
            out.push_str(&format!(
                "stream {:<3}             rtt {:.1} ms, ack wait {:.1} ms, {} sent, {} retransmitted, {} from backlog, {} tombstone frames, {} timeouts{}\n",
                stream.stream,
                stream.rtt_ms,
                stream.ack_wait_ms,
                stream.events_sent,
                stream.events_retransmitted,
                stream.backlog_events_sent,
                stream.tombstone_frames_sent,
                stream.timeouts,
                if stream.unreachable { ", collector unreachable" } else { "" },
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overwrite_in_place_reads_back_and_fits_a_grown_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        let small = Status { backlog_events: 1, ..Status::default() };
        small.write(&path).unwrap();
        let length = std::fs::metadata(&path).unwrap().len() as usize;
        assert_eq!(length % PAGE_BYTES, 0);
        let grown = Status {
            backlog_events: u64::MAX,
            streams: vec![StreamStatus { stream: 7, ..StreamStatus::default() }],
            ..Status::default()
        };
        let mut bytes = serde_json::to_vec_pretty(&grown).unwrap();
        let content = bytes.len();
        Status::overwrite(&path, &mut bytes, content).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, length, "no growth");
        let read = Status::read(&path).unwrap();
        assert_eq!((read.backlog_events, read.streams.len()), (u64::MAX, 1));
    }
}
