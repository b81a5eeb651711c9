//! Helpers shared by the namespace tests (`interop.rs`, `md5.rs`, `capture.rs`, `l2.rs`,
//! `ospf_interop.rs`, `ospf_capture.rs`): root and tool checks that
//! fail loudly instead of skipping, command runners, and a guard that deletes network
//! namespaces and kills the processes a test started (by PID) when it is dropped.
#![allow(dead_code, reason = "each test file uses a different subset")]

pub(crate) mod bgplab;
pub(crate) mod ospflab;

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// Panics unless running as root and every tool in `tools` is on PATH; `packages` names the
/// Debian packages that provide them (see scripts/test-packages.txt).
pub(crate) fn require_root_and_tools(what: &str, tools: &[&str], packages: &str) {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    assert_eq!(
        uid.as_deref().ok(),
        Some("0"),
        "{what} need root (network namespaces)"
    );
    for tool in tools {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|o| o.status.success());
        assert_eq!(
            found.ok(),
            Some(true),
            "`{tool}` is missing: install the Debian packages in scripts/test-packages.txt ({packages})"
        );
    }
}

/// Runs a command and returns its output (panics only if it cannot be started).
pub(crate) fn sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Runs a command that must succeed.
pub(crate) fn must(args: &[&str]) {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `f` every 50 ms until it returns true; panics after `limit`. Returns the time taken.
pub(crate) fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t.elapsed()
}

/// Owns network namespaces and child processes; `Drop` kills the children (by PID, through
/// their `Child` handles) and deletes the namespaces, also when the test panics.
#[derive(Debug, Default)]
pub(crate) struct NetnsGuard {
    pub(crate) namespaces: Vec<String>,
    pub(crate) children: Vec<Child>,
}

impl NetnsGuard {
    /// Creates namespace `name` with `lo` up and takes ownership of it.
    pub(crate) fn add_netns(&mut self, name: &str) {
        must(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_string());
        must(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
