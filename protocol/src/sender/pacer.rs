//! A token bucket in integer micro-tokens, so pacing is exact and deterministic.

use crate::Instant;

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
            let elapsed = now.saturating_micros_since(last).min(i64::MAX as u64) as i64;
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
        // In 32 bits, a hardware division on a Cortex-M3 where 64 bits take a library call.
        // A debt beyond u32::MAX micro-tokens (more than 4 294 events in one frame) gets an
        // earlier wake-up, which finds the balance still negative and asks again: each wake
        // repays at least u32::MAX - rate micro-tokens, so the wait only comes in steps.
        let needed = u32::try_from(1 - self.micro_tokens).unwrap_or(u32::MAX);
        let wait_micros = needed.div_ceil(self.rate_per_second);
        Some(self.refilled_at.unwrap_or(Instant::ZERO).saturating_add_micros(u64::from(wait_micros)))
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

    #[test]
    fn a_debt_beyond_32_bits_is_waited_out_in_steps() {
        let mut bucket = TokenBucket::new(1_000, 1);
        assert!(bucket.ready(Instant::ZERO));
        // 10 000 events against a burst of 1 at 1 000 per second: a debt of 9 999 000 000
        // micro-tokens, more than u32 holds.
        bucket.consume(10_000);
        let mut now = Instant::ZERO;
        let mut wakes = 0;
        while !bucket.ready(now) {
            now = bucket.next_ready().unwrap();
            wakes += 1;
        }
        // Repaid (the balance above zero) after 9 999 001 µs, exactly as one 64-bit division
        // would have said, in three waits.
        assert_eq!(now, Instant::from_micros(9_999_001));
        assert_eq!(wakes, 3);
    }
}
