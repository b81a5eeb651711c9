//! BGP VIPs end to end, in network namespaces: `novaedge controller` (files source) and two
//! `novaedge agent`s announce a ProxyVIP in BGP mode, with a TCP-MD5 password from a Secret,
//! to GoBGP (`gobgpd`, Debian) as the router.
//!
//! ```text
//!   netns …r (router, gobgpd AS 64500)  eth0 198.51.100.1 ─┐
//!   netns …c (controller)               eth0 198.51.100.9 ─┼─ br0 (netns …s)
//!   netns …a (node-a, AS 64512)         eth0 198.51.100.2 ─┤
//!   netns …b (node-b, AS 64512)         eth0 198.51.100.3 ─┘
//! ```
//!
//! Both nodes announce the VIP (a BGP VIP goes to every healthy node), so the router has a path
//! through each. A gracefully stopped agent withdraws at once; a node that vanishes (link down)
//! is dropped by the router when the hold time (3 s) runs out; a SIGKILLed agent's connection
//! is closed by its kernel, so the router drops it at once; a VIP removed from the
//! configuration is withdrawn everywhere.
//!
//! Needs root, `ip`, `gobgpd` and `gobgp` (Debian `gobgpd`); fails, never skips, without them.
#![allow(
    clippy::print_stdout,
    reason = "the test reports the times it measures"
)]

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Proxy;
use common::netns::{
    Guard, bridge, dev_certs, link, must, require_root_and_tools, sh, start_agent,
    start_controller, wait_for,
};

const VIP: &str = "192.0.2.100";
const PREFIX: &str = "192.0.2.100/32";
const ROUTER: &str = "198.51.100.1";
const CONTROLLER: &str = "198.51.100.9:9400";
const PASSWORD: &str = "novaedge-lab-md5";
const NODES: [(&str, &str); 2] = [("node-a", "198.51.100.2"), ("node-b", "198.51.100.3")];

struct Lab {
    agents: [Option<Proxy>; 2],
    controller: Option<Proxy>,
    router: String,
    switch: String,
    ctl: String,
    nodes: [String; 2],
    dir: tempfile::TempDir,
    _guard: Guard,
}

impl Lab {
    fn new() -> Lab {
        require_root_and_tools("the BGP VIP test", &["ip", "gobgpd", "gobgp"]);
        let p = format!("nvb{}", std::process::id() % 100_000);
        let mut guard = Guard::default();
        let sw = guard.netns(format!("{p}s"));
        let router = guard.netns(format!("{p}r"));
        let ctl = guard.netns(format!("{p}c"));
        let na = guard.netns(format!("{p}a"));
        let nb = guard.netns(format!("{p}b"));
        bridge(&sw, "br0");
        link(&sw, "br0", "pr", &router, "eth0", &format!("{ROUTER}/24"));
        link(&sw, "br0", "pc", &ctl, "eth0", "198.51.100.9/24");
        link(&sw, "br0", "pa", &na, "eth0", &format!("{}/24", NODES[0].1));
        link(&sw, "br0", "pb", &nb, "eth0", &format!("{}/24", NODES[1].1));

        let dir = tempfile::tempdir().expect("tempdir");
        let mut gobgpd = format!(
            "[global.config]\n  as = 64500\n  router-id = \"{ROUTER}\"\n  \
             local-address-list = [\"{ROUTER}\"]\n"
        );
        for (_, addr) in NODES {
            gobgpd += &format!(
                "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{addr}\"\n    \
                 peer-as = 64512\n    auth-password = \"{PASSWORD}\"\n  \
                 [neighbors.transport.config]\n    passive-mode = true\n  \
                 [neighbors.timers.config]\n    hold-time = 3\n    keepalive-interval = 1\n  \
                 [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      \
                 afi-safi-name = \"ipv4-unicast\"\n"
            );
        }
        let conf = dir.path().join("gobgpd.toml");
        std::fs::write(&conf, gobgpd).expect("write gobgpd.toml");
        let log = std::fs::File::create(dir.path().join("gobgpd.log")).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &router, "gobgpd", "-f"])
            .arg(&conf)
            .args(["--api-hosts", "127.0.0.1:50051", "--pprof-disable", "-p"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn gobgpd");
        guard.children.push(child);

        dev_certs(dir.path(), &[NODES[0].0, NODES[1].0]);
        std::fs::create_dir(dir.path().join("conf")).expect("conf dir");
        let lab = Lab {
            agents: [None, None],
            controller: None,
            router,
            switch: sw,
            ctl,
            nodes: [na, nb],
            dir,
            _guard: guard,
        };
        lab.write_vip(true);
        wait_for("gobgpd's API", Duration::from_secs(10), || {
            sh(&["ip", "netns", "exec", &lab.router, "gobgp", "global"])
                .status
                .success()
        });
        lab
    }

    /// Writes the configuration: the ProxyVIP and its password Secret, or nothing.
    fn write_vip(&self, with_vip: bool) {
        let text = if with_vip {
            format!(
                "apiVersion: novaedge.io/v1alpha1
kind: ProxyVIP
metadata: {{name: api, namespace: t}}
spec:
  addresses: [{VIP}]
  mode: BGP
  bgp:
    localASN: 64512
    peers:
      - {{address: {ROUTER}, asn: 64500, holdTime: 3s, passwordSecretRef: {{name: bgp-auth}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: bgp-auth, namespace: t}}
stringData: {{password: {PASSWORD}}}
"
            )
        } else {
            String::new()
        };
        let tmp = self.dir.path().join("conf/.vip.yaml.tmp");
        std::fs::write(&tmp, text).expect("write the configuration");
        std::fs::rename(tmp, self.dir.path().join("conf/vip.yaml")).expect("rename");
    }

    fn start_controller(&mut self) {
        self.controller = Some(start_controller(&self.ctl, self.dir.path(), CONTROLLER));
    }

    fn start_agent(&mut self, i: usize) {
        let agent = start_agent(&self.nodes[i], self.dir.path(), CONTROLLER, NODES[i].0);
        self.agents[i] = Some(agent);
    }

    /// The nodes (by address) the router has a path to the VIP through.
    fn paths(&self) -> BTreeSet<&'static str> {
        let out = sh(&[
            "ip",
            "netns",
            "exec",
            &self.router,
            "gobgp",
            "global",
            "rib",
            "-a",
            "ipv4",
            "-j",
        ]);
        let rib: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let text = rib.get(PREFIX).map(ToString::to_string).unwrap_or_default();
        NODES
            .iter()
            .map(|(_, addr)| *addr)
            .filter(|addr| text.contains(&format!("\"{addr}\"")))
            .collect()
    }

    fn wait_paths(&self, what: &str, want: &[&str]) -> Duration {
        let want: BTreeSet<&str> = want.iter().copied().collect();
        wait_for(what, Duration::from_secs(15), || self.paths() == want)
    }
}

#[test]
fn agents_announce_a_bgp_vip_with_md5_and_withdraw_it() {
    let mut lab = Lab::new();
    let started = Instant::now();
    lab.start_controller();
    lab.start_agent(0);
    lab.start_agent(1);
    let (a, b) = (NODES[0].1, NODES[1].1);

    // Assignment: both nodes announce the VIP over MD5-signed sessions.
    lab.wait_paths("paths through both nodes", &[a, b]);
    println!(
        "controller and agents started -> the router has a path through each node: {:?}",
        started.elapsed()
    );
    let neighbor = sh(&["ip", "netns", "exec", &lab.router, "gobgp", "neighbor", a]);
    let neighbor = String::from_utf8_lossy(&neighbor.stdout);
    assert!(neighbor.contains("BGP state = ESTABLISHED"), "{neighbor}");

    // Graceful stop of node-a: its path is withdrawn at once.
    let agent = lab.agents[0].as_mut().expect("node-a");
    agent.terminate();
    let t = Instant::now();
    agent.wait_exit();
    lab.wait_paths("node-a's path withdrawn", &[b]);
    println!("SIGTERM of node-a -> its path withdrawn: {:?}", t.elapsed());

    // node-b vanishes (its link goes down, nothing is closed): the router drops its path when
    // the hold time (3 s) runs out.
    must(&["ip", "-n", &lab.switch, "link", "set", "pb", "down"]);
    let gone = lab.wait_paths("node-b's path dropped after the hold time", &[]);
    println!("node-b's link down -> its path dropped: {gone:?} (hold time 3 s)");
    assert!(
        gone > Duration::from_secs(2),
        "dropped before the hold time: {gone:?}"
    );
    must(&["ip", "-n", &lab.switch, "link", "set", "pb", "up"]);
    lab.wait_paths("node-b back", &[b]);

    // SIGKILL of node-b: the kernel closes its connection, and the router drops the path.
    let agent = lab.agents[1].as_mut().expect("node-b");
    agent.child.kill().expect("SIGKILL node-b");
    let t = Instant::now();
    agent.wait_exit();
    lab.wait_paths("node-b's path dropped after SIGKILL", &[]);
    println!("SIGKILL of node-b -> its path dropped: {:?}", t.elapsed());

    // Both back: announced again. Then the VIP leaves the configuration: unassigned, withdrawn.
    lab.start_agent(0);
    lab.start_agent(1);
    lab.wait_paths("paths through both nodes again", &[a, b]);
    lab.write_vip(false);
    let t = Instant::now();
    lab.wait_paths("the VIP withdrawn after its removal", &[]);
    println!(
        "ProxyVIP removed -> withdrawn by both nodes: {:?}",
        t.elapsed()
    );
    for agent in lab.agents.iter().flatten() {
        agent.wait_log("stopping the BGP session", 0);
    }
}
