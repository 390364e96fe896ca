//! One log line when something starts failing, a summary now and then while it goes on,
//! and one when it recovers, instead of a line per retry: a full disk made the window
//! processor log "log unavailable" twice a second for as long as it lasted.

use std::time::{Duration, Instant};

/// How often a continuing failure is summarised.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// What to log about a failure or a recovery (the caller logs it, with its own words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// The first failure of an outage.
    Started,
    /// Still failing: `failures` since the last report.
    Continuing { failures: u64 },
    /// Working again after `failures` failures over `lasted`.
    Recovered { failures: u64, lasted: Duration },
    /// Nothing to log now.
    Quiet,
}

/// The state of one thing that can fail repeatedly (time passed in, so it is testable).
#[derive(Debug, Default)]
pub struct Outage {
    since: Option<Instant>,
    reported_at: Option<Instant>,
    unreported: u64,
    failures: u64,
}

impl Outage {
    pub fn failed(&mut self, now: Instant) -> Report {
        self.failures += 1;
        let Some(reported_at) = self.reported_at.filter(|_| self.since.is_some()) else {
            self.since = Some(now);
            self.reported_at = Some(now);
            self.unreported = 0;
            return Report::Started;
        };
        self.unreported += 1;
        if now.duration_since(reported_at) < SUMMARY_INTERVAL {
            return Report::Quiet;
        }
        self.reported_at = Some(now);
        Report::Continuing { failures: std::mem::take(&mut self.unreported) }
    }

    pub fn succeeded(&mut self, now: Instant) -> Report {
        let Some(since) = self.since.take() else { return Report::Quiet };
        let failures = std::mem::take(&mut self.failures);
        self.unreported = 0;
        Report::Recovered { failures, lasted: now.duration_since(since) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_outage_and_a_summary_a_minute() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut outage = Outage::default();
        assert_eq!(outage.succeeded(at(0)), Report::Quiet);
        assert_eq!(outage.failed(at(0)), Report::Started);
        let reports: Vec<Report> = (1..240).map(|i| outage.failed(at(i * 500))).collect();
        let loud: Vec<&Report> = reports.iter().filter(|r| **r != Report::Quiet).collect();
        assert_eq!(loud, [&Report::Continuing { failures: 120 }], "two minutes of retries twice a second");
        assert_eq!(outage.succeeded(at(120_000)), Report::Recovered { failures: 240, lasted: at(120_000) - at(0) });
        assert_eq!(outage.succeeded(at(120_500)), Report::Quiet);
        assert_eq!(outage.failed(at(121_000)), Report::Started, "a new outage is reported again");
    }
}
