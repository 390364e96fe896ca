//! Where a child process's CPU goes, by thread.

use std::collections::BTreeMap;

/// User + system CPU seconds of each thread of `pid`, by thread name (digits dropped, so
/// `udp-recv-0` and `udp-recv-1` add up).
pub(crate) fn thread_cpu_seconds(pid: u32) -> BTreeMap<String, f64> {
    let mut seconds = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return seconds };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name: String = stat[open + 1..close].chars().filter(|c| !c.is_ascii_digit()).collect();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        *seconds.entry(name).or_insert(0.0) += (ticks(11) + ticks(12)) / 100.0;
    }
    seconds
}
