//! A cheap filter in front of authentication, per source address.
//!
//! Every datagram costs a MAC check (BLAKE2s over the whole frame: about 4 µs for a full
//! 1 400-byte one), so one host sending forged or garbage frames as fast as it can keeps the
//! acceptor busy and the queue full, and the devices' frames wait behind them or are dropped
//! by the kernel. Each source address gets a token bucket that only failures drain: a frame
//! that fails before authentication or is a replay takes a token; while a source has no
//! token left its frames are dropped unread (shed, counted) until the bucket refills. A
//! flood from one address then costs the acceptor a hash lookup per frame and
//! `failures_per_s` MAC checks a second, and devices at other addresses are not slowed.
//!
//! Only sources that failed are in the table (a legitimate device never is), and entries
//! whose bucket refilled are dropped every second; the table is bounded (`max_sources`),
//! and a failing source that finds it full is simply not tracked (counted). IPv6 sources
//! are keyed by their /64: one host commonly owns a whole /64. A flood from random spoofed
//! source addresses is not stopped by this (each address fails once); it is counted.

use driftlog_protocol::Instant;
use driftlog_protocol::wire::Reject;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SourceFilterConfig {
    /// Failed frames a source may cost per second once its burst is spent; 0 turns the
    /// filter off.
    pub failures_per_s: u32,
    /// Failed frames a source may cost at once.
    pub burst: u32,
    /// Sources tracked at once.
    pub max_sources: usize,
}

impl Default for SourceFilterConfig {
    fn default() -> SourceFilterConfig {
        SourceFilterConfig { failures_per_s: 100, burst: 1_000, max_sources: 65_536 }
    }
}

/// Counts for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceFilterStats {
    /// Frames dropped unread because their source had spent its failures.
    pub shed: u64,
    /// Sources in the table.
    pub sources: u64,
    /// Failures of sources the full table could not track.
    pub untracked: u64,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Debug)]
pub struct SourceFilter {
    config: SourceFilterConfig,
    buckets: HashMap<IpAddr, Bucket>,
    next_cleanup: Option<Instant>,
    stats: SourceFilterStats,
}

/// How often buckets that refilled are dropped.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(1);

/// The address a bucket is kept for: the IP, IPv6 narrowed to its /64.
fn source_of(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("checked")),
        v4 => v4,
    }
}

/// Whether `reason` says the frame never authenticated or was a replay: what a source that
/// is not a device (or an attacker replaying captures) produces. Refusals of authenticated
/// frames (bounds, a malformed body behind a valid MAC) are a device's, never shed.
pub fn is_unauthenticated(reason: Reject) -> bool {
    !matches!(reason, Reject::TooManyStreams | Reject::DeviceQuota | Reject::ReorderWindowFull | Reject::Malformed)
}

impl SourceFilter {
    pub fn new(config: SourceFilterConfig) -> SourceFilter {
        SourceFilter { config, buckets: HashMap::new(), next_cleanup: None, stats: SourceFilterStats::default() }
    }

    pub fn stats(&self) -> SourceFilterStats {
        SourceFilterStats { sources: self.buckets.len() as u64, ..self.stats }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens =
            (bucket.tokens + elapsed * f64::from(self.config.failures_per_s)).min(f64::from(self.config.burst));
        bucket.updated = now;
    }

    /// Whether a frame from `peer` is worth checking: false (and counted as shed) while the
    /// source has spent its failures.
    pub fn admits(&mut self, peer: Option<SocketAddr>, now: Instant) -> bool {
        if self.buckets.is_empty() {
            return true; // the common case: nobody has failed
        }
        let Some(peer) = peer else { return true };
        let source = source_of(peer);
        let Some(mut bucket) = self.buckets.get(&source).copied() else { return true };
        self.refill(&mut bucket, now);
        self.buckets.insert(source, bucket);
        if bucket.tokens >= 1.0 {
            return true;
        }
        self.stats.shed += 1;
        false
    }

    /// A frame from `peer` failed before authentication (or was a replay): it takes a token.
    pub fn failed(&mut self, peer: Option<SocketAddr>, now: Instant) {
        if self.config.failures_per_s == 0 {
            return;
        }
        let Some(peer) = peer else { return };
        let source = source_of(peer);
        let full = Bucket { tokens: f64::from(self.config.burst), updated: now };
        let mut bucket = match self.buckets.get(&source) {
            Some(bucket) => *bucket,
            None if self.buckets.len() >= self.config.max_sources => {
                self.stats.untracked += 1;
                return;
            }
            None => full,
        };
        self.refill(&mut bucket, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
        self.buckets.insert(source, bucket);
    }

    /// Drops the buckets that refilled (their sources stopped failing); once a second.
    pub fn cleanup(&mut self, now: Instant) {
        if self.next_cleanup.is_some_and(|at| now < at) {
            return;
        }
        self.next_cleanup = Some(now + CLEANUP_INTERVAL);
        let (rate, burst) = (f64::from(self.config.failures_per_s), f64::from(self.config.burst));
        self.buckets.retain(|_, bucket| {
            let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
            bucket.tokens + elapsed * rate < burst
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_failing_source_is_shed_after_its_burst_and_others_are_not() {
        let config = SourceFilterConfig { failures_per_s: 10, burst: 20, max_sources: 2 };
        let mut filter = SourceFilter::new(config);
        let start = Instant::from_micros(1_000_000);
        let attacker: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let device: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let mut checked = 0;
        for _ in 0..1_000 {
            if filter.admits(Some(attacker), start) {
                checked += 1;
                filter.failed(Some(attacker), start);
            }
        }
        assert_eq!(checked, 20, "the burst, then shed");
        assert_eq!(filter.stats().shed, 980);
        assert!(filter.admits(Some(device), start), "another address is not affected");
        // Other ports of the same host share its bucket.
        assert!(!filter.admits(Some("10.0.0.9:5001".parse().unwrap()), start));
        // The bucket refills at the rate: one second later, ten more checks.
        let mut later = 0;
        for _ in 0..100 {
            if filter.admits(Some(attacker), at(start, 1_000)) {
                later += 1;
                filter.failed(Some(attacker), at(start, 1_000));
            }
        }
        assert_eq!(later, 10);
        // A source that stops failing leaves the table once its bucket is full again.
        filter.cleanup(at(start, 1_000));
        assert_eq!(filter.stats().sources, 1);
        filter.cleanup(at(start, 4_000));
        assert_eq!(filter.stats().sources, 0);
    }

    #[test]
    fn the_table_is_bounded_and_ipv6_hosts_are_their_64() {
        let config = SourceFilterConfig { failures_per_s: 1, burst: 1, max_sources: 2 };
        let mut filter = SourceFilter::new(config);
        let now = Instant::from_micros(1_000_000);
        for last in 1..=5u8 {
            filter.failed(Some(SocketAddr::from(([192, 0, 2, last], 1))), now);
        }
        assert_eq!((filter.stats().sources, filter.stats().untracked), (2, 3));
        let mut filter = SourceFilter::new(config);
        filter.failed(Some("[2001:db8:1:2::1]:9".parse().unwrap()), now);
        assert!(!filter.admits(Some("[2001:db8:1:2:ffff::7]:9".parse().unwrap()), now), "same /64");
        assert!(filter.admits(Some("[2001:db8:1:3::1]:9".parse().unwrap()), now), "another /64");
    }

    #[test]
    fn off_means_nothing_is_tracked() {
        let mut filter = SourceFilter::new(SourceFilterConfig { failures_per_s: 0, ..SourceFilterConfig::default() });
        let peer = Some("10.0.0.9:5000".parse().unwrap());
        for _ in 0..10_000 {
            assert!(filter.admits(peer, Instant::from_micros(1_000_000)));
            filter.failed(peer, Instant::from_micros(1_000_000));
        }
        assert_eq!(filter.stats(), SourceFilterStats::default());
    }
}
