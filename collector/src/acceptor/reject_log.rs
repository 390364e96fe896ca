//! Per-packet problems summarised in one log line per interval, whatever their rate.

use crate::source_filter::SourceFilterStats;
use driftlog_protocol::wire::RejectCounts;

#[derive(Debug, Default)]
pub(super) struct RejectLog {
    logged: u64,
}

impl RejectLog {
    /// Logs the rejects since the last call, if any. Frames shed unread by the source filter
    /// count here too: a flood is one line per interval.
    pub(super) fn report(&mut self, rejects: &RejectCounts, filter: &SourceFilterStats) {
        let total = rejects.total() + filter.shed;
        if total <= self.logged {
            return;
        }
        let by_reason: Vec<String> =
            rejects.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{}={n}", r.name())).collect();
        tracing::warn!(
            new = total - self.logged,
            totals = %by_reason.join(","),
            shed = filter.shed,
            shedding_sources = filter.sources,
            "frames rejected"
        );
        self.logged = total;
    }
}
