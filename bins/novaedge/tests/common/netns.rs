//! Network namespace labs for the VIP tests (`vip_l2.rs`, `vip_bgp.rs`): root and tool checks
//! that fail loudly instead of skipping, command runners, and a guard that kills the processes
//! a test started (by PID) and deletes its namespaces when dropped, also on failure.

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// Polls `f` every 20 ms until it holds; panics after `limit`. Returns the time taken.
pub(crate) fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}

/// Seconds since the Unix epoch, as tcpdump's `-tt` prints them.
pub(crate) fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Panics unless running as root with every tool of `tools` on PATH.
pub(crate) fn require_root_and_tools(what: &str, tools: &[&str]) {
    let uid = sh(&["id", "-u"]);
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "{what} needs root (network namespaces)"
    );
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "`{tool}` is missing for {what}: install the Debian packages in \
             scripts/test-packages.txt"
        );
    }
}

/// Namespaces and processes of a lab, removed on drop.
#[derive(Debug, Default)]
pub(crate) struct Guard {
    pub(crate) namespaces: Vec<String>,
    pub(crate) children: Vec<Child>,
}

impl Guard {
    /// Creates namespace `name` with `lo` up, owned by the guard.
    pub(crate) fn netns(&mut self, name: String) -> String {
        must(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        must(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        name
    }
}

impl Drop for Guard {
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

/// Joins `ns` to `bridge` (in `switch`) by a veth pair: `port` on the switch side, `dev` with
/// `addr` in `ns`.
pub(crate) fn link(switch: &str, bridge: &str, port: &str, ns: &str, dev: &str, addr: &str) {
    must(&[
        "ip", "link", "add", port, "netns", switch, "type", "veth", "peer", "name", dev, "netns",
        ns,
    ]);
    must(&[
        "ip", "-n", switch, "link", "set", port, "master", bridge, "up",
    ]);
    must(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
    must(&["ip", "-n", ns, "link", "set", dev, "up"]);
}

/// Creates bridge `name` in `switch`.
pub(crate) fn bridge(switch: &str, name: &str) {
    must(&["ip", "-n", switch, "link", "add", name, "type", "bridge"]);
    must(&["ip", "-n", switch, "link", "set", name, "up"]);
}

/// Writes a development CA and certificates for the controller and `nodes` into `dir/certs`.
pub(crate) fn dev_certs(dir: &std::path::Path, nodes: &[&str]) {
    let out = Command::new(super::BIN)
        .args(["certs", "--out"])
        .arg(dir.join("certs"))
        .args(nodes)
        .output()
        .expect("novaedge certs");
    assert!(out.status.success(), "{out:?}");
}

/// Starts `novaedge controller` in `ns` with the files of `dir/conf`, listening on `listen`,
/// with the certificates of [`dev_certs`]; returns once it serves.
pub(crate) fn start_controller(ns: &str, dir: &std::path::Path, listen: &str) -> super::Proxy {
    let path = |p: &str| dir.join(p).display().to_string();
    let controller = super::Proxy::start_in_netns(
        ns,
        &[
            "controller",
            "--source",
            &format!("files:{}", path("conf")),
            "--listen",
            listen,
            "--tls-cert",
            &path("certs/controller.crt"),
            "--tls-key",
            &path("certs/controller.key"),
            "--tls-ca",
            &path("certs/ca.crt"),
        ],
    );
    controller.wait_log("serving snapshots", 0);
    controller
}

/// Starts `novaedge agent` for `node` in `ns`, against the controller at `controller`
/// (`host:port`), with the certificates of [`dev_certs`] and default timings.
pub(crate) fn start_agent(
    ns: &str,
    dir: &std::path::Path,
    controller: &str,
    node: &str,
) -> super::Proxy {
    let path = |p: &str| dir.join(p).display().to_string();
    super::Proxy::start_in_netns(
        ns,
        &[
            "agent",
            "--controller",
            &format!("https://{controller}"),
            "--node",
            node,
            "--tls-cert",
            &path(&format!("certs/agent-{node}.crt")),
            "--tls-key",
            &path(&format!("certs/agent-{node}.key")),
            "--tls-ca",
            &path("certs/ca.crt"),
            "--cache",
            &path(&format!("{node}.cache")),
        ],
    )
}

/// The MAC address of `dev` in `ns`, lower case.
pub(crate) fn mac(ns: &str, dev: &str) -> String {
    let out = sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "cat",
        &format!("/sys/class/net/{dev}/address"),
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_lowercase()
}

/// A ProxyVIP `t/web` in L2 mode on `eth0`, as YAML.
pub(crate) fn l2_vip_yaml(address: &str) -> String {
    format!(
        "apiVersion: novaedge.io/v1alpha1
kind: ProxyVIP
metadata: {{name: web, namespace: t}}
spec:
  addresses: [{address}]
  mode: L2
  interface: eth0
"
    )
}
