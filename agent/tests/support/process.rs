//! The agent binary as a child process for tests: killed when the test ends (even by a
//! failed assertion), started once its ingest socket answers.
#![allow(dead_code, unreachable_pub)]

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant as StdInstant};

pub const AGENT: &str = env!("CARGO_BIN_EXE_driftlog-agent");

/// An agent process that is killed when the test ends, even by a failed assertion, so no
/// test leaves a process behind.
pub struct AgentProcess(pub Child);

impl std::ops::Deref for AgentProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for AgentProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn start_agent(config: &Path) -> AgentProcess {
    start_agent_with(config, &[])
}

/// [`start_agent`] with more `run` arguments.
pub fn start_agent_with(config: &Path, args: &[&str]) -> AgentProcess {
    let child = AgentProcess(
        Command::new(AGENT).args(["run", "--config"]).arg(config).args(args).stderr(Stdio::null()).spawn().unwrap(),
    );
    let socket = config.parent().unwrap().join("data/ingest.sock");
    let deadline = StdInstant::now() + Duration::from_secs(20);
    while UnixStream::connect(&socket).is_err() {
        assert!(StdInstant::now() < deadline, "the agent did not open its ingest socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = StdInstant::now() + Duration::from_secs(30);
    while !done() {
        assert!(StdInstant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn sigterm(child: &mut AgentProcess) -> std::process::ExitStatus {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let deadline = StdInstant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(StdInstant::now() < deadline, "agent did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
