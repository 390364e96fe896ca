//! Seed conventions (madsim's): `SIM_SEED=n` replays one run, `SIM_SEEDS=a..b` sweeps, and a
//! failure names the seed that reproduces it.

use std::ops::Range;

/// The seeds to run: `SIM_SEED` if set, else `SIM_SEEDS` (`a..b`), else `default`.
pub fn seeds(default: Range<u64>) -> anyhow::Result<Vec<u64>> {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed = seed.trim().parse().map_err(|_| anyhow::anyhow!("SIM_SEED must be an integer, got {seed:?}"))?;
        return Ok(vec![seed]);
    }
    if let Ok(range) = std::env::var("SIM_SEEDS") {
        let (start, end) =
            range.split_once("..").ok_or_else(|| anyhow::anyhow!("SIM_SEEDS must look like 0..100, got {range:?}"))?;
        let start: u64 = start.trim().parse()?;
        let end: u64 = end.trim().parse()?;
        anyhow::ensure!(start < end, "SIM_SEEDS range is empty: {range:?}");
        return Ok((start..end).collect());
    }
    Ok(default.collect())
}
