//! Network tests that need a namespace of their own (multicast, kernel packet loss): the test
//! binary runs one of its own ignored helper tests inside `unshare -n` (root, which CI has).
#![allow(dead_code, unreachable_pub)]

use std::process::Command;

/// Runs the ignored helper test `helper` of this test binary in a fresh network namespace;
/// whether it passed.
pub fn run_in_new_network_namespace(helper: &str) -> bool {
    Command::new("unshare")
        .args(["-n", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", helper, "--ignored", "--nocapture", "--test-threads", "1"])
        .status()
        .unwrap()
        .success()
}
