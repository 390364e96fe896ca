//! What a simulation run does: devices, their clocks and links, the faults, the bounds.

use crate::clock::SimClock;
use crate::disk::DiskFaults;
use crate::link::{LinkConfig, LossModel};
use driftlog_protocol::SplitMix64;
use driftlog_protocol::sender::DropPolicy;

/// Where a device keeps its events.
#[derive(Clone, Debug)]
pub enum Storage {
    /// The protocol's in-memory backlog (`backlog_capacity_events`, `drop_policy`); a
    /// reboot keeps it.
    Memory,
    /// The agent's real outbox on a simulated disk; a reboot is a power cut.
    Disk(DiskScenario),
}

/// Which storage faults [`Scenario::random_disk`] draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskFaultMix {
    pub crashes: bool,
    pub failed_fsyncs: bool,
    pub full_disks: bool,
    pub bit_flips: bool,
}

impl DiskFaultMix {
    pub const ALL: DiskFaultMix =
        DiskFaultMix { crashes: true, failed_fsyncs: true, full_disks: true, bit_flips: true };
    /// What the outbox survives on every seed swept so far (see the README's Testing).
    pub const ALL_BUT_BIT_FLIPS: DiskFaultMix =
        DiskFaultMix { crashes: true, failed_fsyncs: true, full_disks: true, bit_flips: false };
    pub const FULL_DISKS: DiskFaultMix =
        DiskFaultMix { crashes: false, failed_fsyncs: false, full_disks: true, bit_flips: false };
}

#[derive(Clone, Debug)]
pub struct DiskScenario {
    /// The outbox's byte bound.
    pub max_bytes: u64,
    pub policy: driftlog_agent::outbox::DropPolicy,
    pub faults: DiskFaults,
    /// True times at which the disk fills up (a few KiB left) and at which room returns.
    pub full: Vec<(u64, u64)>,
    /// True times at which a bit of a stored segment byte flips.
    pub bit_flips: Vec<u64>,
}

#[derive(Clone, Debug)]
pub struct DeviceScenario {
    /// Events this device generates.
    pub events: u64,
    /// Mean true time between events; each gap is jittered by ±50 %.
    pub interval_micros: u64,
    pub start_at: u64,
    pub clock: SimClock,
    pub uplink: LinkConfig,
    pub downlink: LinkConfig,
    pub backlog_capacity_events: usize,
    pub drop_policy: DropPolicy,
    /// True times at which the device reboots (new epoch; its buffer survives).
    pub reboots: Vec<u64>,
    pub backlog_events_per_second: u32,
    pub storage: Storage,
}

/// What happens to the collector: its disk's latency and faults, its crashes.
#[derive(Clone, Debug)]
pub struct CollectorScenario {
    /// A commit takes between half and one and a half times this, µs.
    pub commit_latency_micros: u64,
    /// When the collector's process dies (it restarts shortly after).
    pub crashes: Vec<u64>,
    /// The chance that an fsync of the log fails.
    pub sync_failure: f64,
    /// `(from, to)`: the log's file system is full.
    pub full: Vec<(u64, u64)>,
}

impl Default for CollectorScenario {
    fn default() -> Self {
        CollectorScenario { commit_latency_micros: 500, crashes: Vec::new(), sync_failure: 0.0, full: Vec::new() }
    }
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub devices: Vec<DeviceScenario>,
    /// Group-commit interval of the simulated collector log.
    /// The collector's flush interval (whole milliseconds, at least one).
    pub commit_interval_micros: u64,
    pub collector: CollectorScenario,
    /// After the last event and the last partition, how long the system may take to deliver
    /// and acknowledge everything once the links are calm.
    pub drain_limit_micros: u64,
}

/// True time 0 of the simulation is this Unix time (2026-01-01T00:00:00Z), so device wall
/// clocks read plausible dates.
pub const SIMULATION_EPOCH_UNIX_MICROS: i64 = 1_767_225_600_000_000;

impl Scenario {
    /// `devices` identical devices on identical links, no clock or capacity faults.
    pub fn uniform(
        seed: u64,
        devices: usize,
        events_per_device: u64,
        events_per_second: u64,
        link: LinkConfig,
    ) -> Scenario {
        let interval_micros = 1_000_000 / events_per_second.max(1);
        let devices = (0..devices)
            .map(|index| DeviceScenario {
                events: events_per_device,
                interval_micros,
                start_at: 1_000 * index as u64,
                clock: SimClock::new(0, 0.0, SIMULATION_EPOCH_UNIX_MICROS),
                uplink: link.clone(),
                downlink: link.clone(),
                backlog_capacity_events: 1_000_000,
                drop_policy: DropPolicy::DropOldest,
                reboots: Vec::new(),
                backlog_events_per_second: 0,
                storage: Storage::Memory,
            })
            .collect();
        Scenario {
            seed,
            devices,
            commit_interval_micros: 2_000,
            collector: CollectorScenario::default(),
            drain_limit_micros: 120_000_000,
        }
    }

    /// A randomised fault mix derived entirely from `seed`: loss (iid or bursty), duplication,
    /// reordering, asymmetric delay, partitions that heal, skewed and drifting clocks, small
    /// buffers that overflow into tombstones, and reboots.
    pub fn random(seed: u64) -> Scenario {
        let mut rng = SplitMix64::new(seed ^ 0x5EED_CAFE);
        let device_count = 1 + rng.below_inclusive(4) as usize;
        let devices = (0..device_count)
            .map(|_| {
                let events = 200 + rng.below_inclusive(1_800);
                let interval_micros = 500 + rng.below_inclusive(20_000);
                let span = events * interval_micros;
                let random_link = |rng: &mut SplitMix64| {
                    let loss = match rng.below_inclusive(3) {
                        0 => LossModel::None,
                        1 | 2 => LossModel::Iid { probability: rng.unit_f64() * 0.5 },
                        _ => LossModel::GilbertElliott {
                            good_to_bad: 0.01 + rng.unit_f64() * 0.05,
                            bad_to_good: 0.1 + rng.unit_f64() * 0.4,
                            loss_good: rng.unit_f64() * 0.02,
                            loss_bad: 0.5 + rng.unit_f64() * 0.5,
                        },
                    };
                    let mut partitions = Vec::new();
                    if rng.below_inclusive(2) == 0 {
                        let start = rng.below_inclusive(span);
                        partitions.push((start, start + rng.below_inclusive(5_000_000)));
                    }
                    LinkConfig {
                        delay_micros: 100 + rng.below_inclusive(80_000),
                        jitter_micros: rng.below_inclusive(30_000),
                        loss,
                        duplicate_probability: rng.unit_f64() * 0.1,
                        partitions,
                    }
                };
                let uplink = random_link(&mut rng);
                let downlink = random_link(&mut rng);
                let small_buffer = rng.below_inclusive(3) == 0;
                let reboots = if rng.below_inclusive(3) == 0 { vec![rng.below_inclusive(span)] } else { Vec::new() };
                DeviceScenario {
                    events,
                    interval_micros,
                    start_at: rng.below_inclusive(100_000),
                    clock: SimClock::new(
                        0,
                        rng.unit_f64() * 200.0 - 100.0,
                        SIMULATION_EPOCH_UNIX_MICROS + rng.below_inclusive(7_200_000_000) as i64 - 3_600_000_000,
                    ),
                    uplink,
                    downlink,
                    backlog_capacity_events: if small_buffer {
                        20 + rng.below_inclusive(200) as usize
                    } else {
                        100_000
                    },
                    drop_policy: if rng.below_inclusive(1) == 0 {
                        DropPolicy::DropOldest
                    } else {
                        DropPolicy::DropNewest
                    },
                    reboots,
                    backlog_events_per_second: [0, 500, 5_000][rng.below_inclusive(2) as usize],
                    storage: Storage::Memory,
                }
            })
            .collect();
        Scenario {
            seed,
            devices,
            commit_interval_micros: 1_000 + rng.below_inclusive(10_000),
            collector: CollectorScenario::default(),
            drain_limit_micros: 600_000_000,
        }
    }

    /// [`Scenario::random`]'s network and clocks, every device on the agent's real outbox on
    /// a simulated disk: power cuts at random moments (crashes tear unsynced writes), failing
    /// fsyncs, disks that fill up and get room back, flipped bits, small byte bounds under
    /// each drop policy, as far as `mix` turns them on. Derived entirely from `seed`.
    pub fn random_disk(seed: u64, mix: DiskFaultMix) -> Scenario {
        let mut scenario = Scenario::random(seed);
        let mut rng = SplitMix64::new(seed ^ 0xD15C_D15C);
        for device in &mut scenario.devices {
            let span = device.events * device.interval_micros;
            let at = |rng: &mut SplitMix64, count: u64| -> Vec<u64> {
                let mut times: Vec<u64> =
                    (0..rng.below_inclusive(count)).map(|_| device.start_at + rng.below_inclusive(span)).collect();
                times.sort_unstable();
                times
            };
            let crashes = at(&mut rng, 4);
            let bit_flips = if rng.below_inclusive(2) == 0 { at(&mut rng, 2) } else { Vec::new() };
            let full = at(&mut rng, 2)
                .into_iter()
                .map(|start| (start, start + 100_000 + rng.below_inclusive(3_000_000)))
                .collect();
            let small = rng.below_inclusive(2) == 0;
            let policy = match rng.below_inclusive(2) {
                0 => driftlog_agent::outbox::DropPolicy::DropOldest,
                1 => driftlog_agent::outbox::DropPolicy::DropNewest,
                _ => driftlog_agent::outbox::DropPolicy::Block,
            };
            let sync_failure = if rng.below_inclusive(2) == 0 { 0.0 } else { 0.001 + rng.unit_f64() * 0.02 };
            // Drawn whatever the mix, so a seed's other choices do not depend on it.
            let crashes = if mix.crashes { crashes } else { Vec::new() };
            let bit_flips = if mix.bit_flips { bit_flips } else { Vec::new() };
            let full = if mix.full_disks { full } else { Vec::new() };
            let sync_failure = if mix.failed_fsyncs { sync_failure } else { 0.0 };
            device.reboots = crashes;
            device.storage = Storage::Disk(DiskScenario {
                max_bytes: if small { 8_192 + rng.below_inclusive(56_000) } else { 1 << 30 },
                policy,
                faults: DiskFaults { sync_failure },
                full,
                bit_flips,
            });
        }
        scenario
    }

    /// The whole system: [`Scenario::random_disk`]'s devices with every fault but bit flips
    /// (the outbox's own sweep covers those), and a collector whose process dies at random
    /// moments (inside commits too), whose log's fsyncs fail and whose disk fills up.
    pub fn random_system(seed: u64) -> Scenario {
        let mut scenario = Scenario::random_disk(seed, DiskFaultMix::ALL_BUT_BIT_FLIPS);
        let mut rng = SplitMix64::new(seed ^ 0xC011_EC70);
        let span = scenario.devices.iter().map(|d| d.start_at + d.events * d.interval_micros).max().unwrap_or(0);
        let mut crashes: Vec<u64> = (0..rng.below_inclusive(4)).map(|_| rng.below_inclusive(span)).collect();
        crashes.sort_unstable();
        let full = (0..rng.below_inclusive(1))
            .map(|_| {
                let start = rng.below_inclusive(span);
                (start, start + 100_000 + rng.below_inclusive(3_000_000))
            })
            .collect();
        scenario.collector = CollectorScenario {
            commit_latency_micros: 100 + rng.below_inclusive(5_000),
            crashes,
            sync_failure: if rng.below_inclusive(1) == 0 { 0.0 } else { 0.001 + rng.unit_f64() * 0.05 },
            full,
        };
        scenario
    }

    /// Base round trip of device `index` (delays plus mean jitter both ways), µs.
    pub fn round_trip_micros(&self, index: usize) -> u64 {
        let device = &self.devices[index];
        device.uplink.delay_micros
            + device.downlink.delay_micros
            + (device.uplink.jitter_micros + device.downlink.jitter_micros) / 2
    }
}
