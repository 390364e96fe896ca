//! A token bucket in integer micro-tokens, so pacing is exact and deterministic.

use crate::Instant;
use core::time::Duration;

const MICRO: i64 = 1_000_000;

#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenBucket {
    /// Events per second; 0 disables pacing.
    rate_per_second: u32,
    burst_micro_tokens: i64,
    /// May go negative: a frame that starts with a positive balance may overdraw it, and the
    /// debt delays the next frame, so the long-run rate is exact.
    micro_tokens: i64,
    refilled_at: Option<Instant>,
}

impl TokenBucket {
    pub(crate) fn new(rate_per_second: u32, burst: u32) -> TokenBucket {
        let burst_micro_tokens = i64::from(burst.max(1)) * MICRO;
        TokenBucket { rate_per_second, burst_micro_tokens, micro_tokens: burst_micro_tokens, refilled_at: None }
    }

    pub(crate) fn is_unlimited(&self) -> bool {
        self.rate_per_second == 0
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.refilled_at {
            let elapsed = now.saturating_duration_since(last).as_micros().min(i64::MAX as u128) as i64;
            let added = elapsed.saturating_mul(i64::from(self.rate_per_second));
            self.micro_tokens = self.micro_tokens.saturating_add(added).min(self.burst_micro_tokens);
        }
        self.refilled_at = Some(now);
    }

    /// True when a frame may start now.
    pub(crate) fn ready(&mut self, now: Instant) -> bool {
        if self.is_unlimited() {
            return true;
        }
        self.refill(now);
        self.micro_tokens > 0
    }

    pub(crate) fn consume(&mut self, events: u32) {
        if !self.is_unlimited() {
            self.micro_tokens -= i64::from(events) * MICRO;
        }
    }

    /// When the balance turns positive again; `None` when it already is or pacing is off.
    pub(crate) fn next_ready(&self) -> Option<Instant> {
        if self.is_unlimited() || self.micro_tokens > 0 {
            return None;
        }
        let needed = (1 - self.micro_tokens) as u64;
        let rate = u64::from(self.rate_per_second);
        let wait_micros = needed.div_ceil(rate);
        Some(self.refilled_at.unwrap_or(Instant::ZERO) + Duration::from_micros(wait_micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_run_rate_is_exact() {
        let mut bucket = TokenBucket::new(1_000, 10);
        let mut now = Instant::ZERO;
        let mut sent = 0u32;
        // Frames of 7 events for one simulated second.
        while now < Instant::from_micros(1_000_000) {
            if bucket.ready(now) {
                bucket.consume(7);
                sent += 7;
            } else {
                now = bucket.next_ready().unwrap();
            }
        }
        // 1000 per second plus the initial burst of 10 (and at most one frame of overdraw).
        assert!((1_000..=1_017).contains(&sent), "sent {sent}");
    }
}
