//! Simulated one-way links (TigerBeetle's packet simulator, turmoil's fail/repair).

use driftlog_protocol::SplitMix64;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LossModel {
    None,
    /// Each datagram is lost independently.
    Iid {
        probability: f64,
    },
    /// Two-state bursty loss: in the bad state most datagrams are lost. The long-run loss
    /// rate is `p_gb / (p_gb + p_bg) * loss_bad + p_bg / (p_gb + p_bg) * loss_good`.
    GilbertElliott {
        good_to_bad: f64,
        bad_to_good: f64,
        loss_good: f64,
        loss_bad: f64,
    },
}

#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// Fixed one-way delay.
    pub delay_micros: u64,
    /// Extra delay, uniform in `[0, jitter]`, per datagram: the source of reordering.
    pub jitter_micros: u64,
    pub loss: LossModel,
    pub duplicate_probability: f64,
    /// True-time intervals `[start, end)` during which everything sent is dropped.
    pub partitions: Vec<(u64, u64)>,
}

impl LinkConfig {
    pub fn ideal(delay_micros: u64) -> LinkConfig {
        LinkConfig {
            delay_micros,
            jitter_micros: 0,
            loss: LossModel::None,
            duplicate_probability: 0.0,
            partitions: Vec::new(),
        }
    }

    pub fn is_partitioned(&self, now: u64) -> bool {
        self.partitions.iter().any(|&(start, end)| start <= now && now < end)
    }

    /// The time after which no partition starts.
    pub fn healed_at(&self) -> u64 {
        self.partitions.iter().map(|&(_, end)| end).max().unwrap_or(0)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub sent: u64,
    pub lost: u64,
    pub partitioned: u64,
    pub duplicated: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug)]
pub struct SimLink {
    config: LinkConfig,
    rng: SplitMix64,
    bad_state: bool,
    /// When true, losses and duplicates stop (the drain phase at the end of a run).
    calm: bool,
    stats: LinkStats,
}

impl SimLink {
    pub fn new(config: LinkConfig, seed: u64) -> SimLink {
        SimLink { config, rng: SplitMix64::new(seed), bad_state: false, calm: false, stats: LinkStats::default() }
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    pub fn calm_down(&mut self) {
        self.calm = true;
    }

    /// Sends one datagram of `bytes` at `now`; returns its arrival times (none if lost, two if
    /// duplicated).
    pub fn transmit(&mut self, now: u64, bytes: usize) -> impl Iterator<Item = u64> {
        self.stats.sent += 1;
        self.stats.bytes += bytes as u64;
        let mut arrivals = [None, None];
        if self.config.is_partitioned(now) {
            self.stats.partitioned += 1;
            return arrivals.into_iter().flatten();
        }
        if !self.calm && self.lose() {
            self.stats.lost += 1;
            return arrivals.into_iter().flatten();
        }
        arrivals[0] = Some(self.arrival(now));
        if !self.calm && self.rng.unit_f64() < self.config.duplicate_probability {
            self.stats.duplicated += 1;
            arrivals[1] = Some(self.arrival(now));
        }
        arrivals.into_iter().flatten()
    }

    fn arrival(&mut self, now: u64) -> u64 {
        now + self.config.delay_micros + self.rng.below_inclusive(self.config.jitter_micros)
    }

    fn lose(&mut self) -> bool {
        match self.config.loss {
            LossModel::None => false,
            LossModel::Iid { probability } => self.rng.unit_f64() < probability,
            LossModel::GilbertElliott { good_to_bad, bad_to_good, loss_good, loss_bad } => {
                let flip = self.rng.unit_f64();
                if self.bad_state && flip < bad_to_good {
                    self.bad_state = false;
                } else if !self.bad_state && flip < good_to_bad {
                    self.bad_state = true;
                }
                let loss = if self.bad_state { loss_bad } else { loss_good };
                self.rng.unit_f64() < loss
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iid_loss_rate_and_duplicates_match_configuration() {
        let config = LinkConfig {
            loss: LossModel::Iid { probability: 0.1 },
            duplicate_probability: 0.05,
            ..LinkConfig::ideal(1_000)
        };
        let mut link = SimLink::new(config, 1);
        let arrivals: usize = (0..100_000).map(|i| link.transmit(i, 100).count()).sum();
        let stats = link.stats();
        assert!((9_000..11_000).contains(&stats.lost), "lost {}", stats.lost);
        assert!((4_000..5_000).contains(&stats.duplicated), "dup {}", stats.duplicated);
        assert_eq!(arrivals as u64, 100_000 - stats.lost + stats.duplicated);
    }

    #[test]
    fn gilbert_elliott_loss_comes_in_bursts() {
        let config = LinkConfig {
            loss: LossModel::GilbertElliott { good_to_bad: 0.01, bad_to_good: 0.2, loss_good: 0.0, loss_bad: 0.9 },
            ..LinkConfig::ideal(1_000)
        };
        let mut link = SimLink::new(config, 2);
        let lost: Vec<bool> = (0..100_000).map(|i| link.transmit(i, 10).count() == 0).collect();
        let rate = lost.iter().filter(|l| **l).count() as f64 / lost.len() as f64;
        // Long-run rate: 0.01 / 0.21 * 0.9 ≈ 4.3 %.
        assert!((0.03..0.06).contains(&rate), "rate {rate}");
        // A loss is followed by another loss far more often than 4 % of the time.
        let pairs = lost.windows(2).filter(|w| w[0]).count() as f64;
        let both = lost.windows(2).filter(|w| w[0] && w[1]).count() as f64;
        assert!(both / pairs > 0.5, "conditional {}", both / pairs);
    }

    #[test]
    fn partitions_drop_everything_inside_the_interval() {
        let config = LinkConfig { partitions: vec![(100, 200)], ..LinkConfig::ideal(10) };
        let mut link = SimLink::new(config, 3);
        assert_eq!(link.transmit(99, 1).count(), 1);
        assert_eq!(link.transmit(100, 1).count(), 0);
        assert_eq!(link.transmit(199, 1).count(), 0);
        assert_eq!(link.transmit(200, 1).count(), 1);
    }
}
