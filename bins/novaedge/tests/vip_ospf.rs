//! OSPF VIPs end to end, in network namespaces: `novaedge controller` (files source) and two
//! `novaedge agent`s advertise a ProxyVIP in OSPF mode to BIRD 2 (Debian `bird2`) as the
//! router, on one broadcast network.
//!
//! ```text
//!   netns …r (router, BIRD, priority 1) eth0 198.51.100.1 ─┐
//!   netns …c (controller)               eth0 198.51.100.9 ─┼─ br0 (netns …s)
//!   netns …a (node-a, priority 0)       eth0 198.51.100.2 ─┤
//!   netns …b (node-b, priority 0)       eth0 198.51.100.3 ─┘
//! ```
//!
//! An OSPF VIP goes to every healthy node, like a BGP one: both nodes advertise it (an
//! AS-external-LSA each), so the router has two next hops (ECMP). BIRD is the designated
//! router; the nodes, at the default priority 0, never are. A gracefully stopped agent flushes
//! its LSAs at once; a SIGKILLed one is dropped when the dead interval (4 s) runs out; a VIP
//! removed from the configuration is flushed everywhere.
//!
//! Needs root, `ip`, `bird` and `birdc` (Debian `bird2`); fails, never skips, without them.
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
    Guard, bridge, dev_certs, link, require_root_and_tools, sh, start_agent, start_controller,
    wait_for,
};

const VIP: &str = "192.0.2.100";
const PREFIX: &str = "192.0.2.100/32";
const ROUTER: &str = "198.51.100.1";
const CONTROLLER: &str = "198.51.100.9:9400";
const NODES: [(&str, &str); 2] = [("node-a", "198.51.100.2"), ("node-b", "198.51.100.3")];

struct Lab {
    agents: [Option<Proxy>; 2],
    controller: Option<Proxy>,
    ctl: String,
    nodes: [String; 2],
    dir: tempfile::TempDir,
    _guard: Guard,
}

impl Lab {
    fn new() -> Lab {
        require_root_and_tools("the OSPF VIP test", &["ip", "bird", "birdc"]);
        let p = format!("nvo{}", std::process::id() % 100_000);
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
        // `ecmp` and `merge external` let BIRD keep both nodes' equal E2 routes as next hops.
        let bird = format!(
            "log \"{log}\" all;
router id {ROUTER};
protocol device {{ scan time 1; }}
protocol ospf v2 ospf1 {{
  ecmp yes;
  merge external yes;
  ipv4 {{ import all; export none; }};
  area 0 {{
    interface \"eth0\" {{ type broadcast; priority 1; hello 1; dead 4; retransmit 2; wait 2; }};
  }};
}}
",
            log = dir.path().join("bird.log").display()
        );
        let conf = dir.path().join("bird.conf");
        std::fs::write(&conf, bird).expect("write bird.conf");
        let ctl_socket = dir.path().join("bird.ctl");
        let child = Command::new("ip")
            .args(["netns", "exec", &router, "bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&ctl_socket)
            .arg("-P")
            .arg(dir.path().join("bird.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn bird");
        guard.children.push(child);

        dev_certs(dir.path(), &[NODES[0].0, NODES[1].0]);
        std::fs::create_dir(dir.path().join("conf")).expect("conf dir");
        let lab = Lab {
            agents: [None, None],
            controller: None,
            ctl,
            nodes: [na, nb],
            dir,
            _guard: guard,
        };
        lab.write_vip(true);
        wait_for("BIRD's control socket", Duration::from_secs(10), || {
            lab.birdc(&["show", "status"]).contains("Daemon is up")
        });
        lab
    }

    fn birdc(&self, args: &[&str]) -> String {
        let socket = self.dir.path().join("bird.ctl").display().to_string();
        let mut cmd = vec!["birdc", "-s", &socket];
        cmd.extend_from_slice(args);
        String::from_utf8_lossy(&sh(&cmd).stdout).into_owned()
    }

    /// Writes the configuration: the ProxyVIP, or nothing.
    fn write_vip(&self, with_vip: bool) {
        let text = if with_vip {
            format!(
                "apiVersion: novaedge.io/v1alpha1
kind: ProxyVIP
metadata: {{name: api, namespace: t}}
spec:
  addresses: [{VIP}]
  mode: OSPF
  ospf:
    area: 0.0.0.0
    interfaces:
      - {{name: eth0, helloInterval: 1s, deadInterval: 4s}}
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

    /// The nodes (by address) the router's route to the VIP goes through.
    fn next_hops(&self) -> BTreeSet<&'static str> {
        let out = self.birdc(&["show", "route", "for", PREFIX, "all"]);
        if !out.contains(PREFIX) {
            return BTreeSet::new();
        }
        NODES
            .iter()
            .map(|(_, addr)| *addr)
            .filter(|addr| out.contains(&format!("via {addr} ")))
            .collect()
    }

    fn wait_hops(&self, what: &str, want: &[&str]) -> Duration {
        let want: BTreeSet<&str> = want.iter().copied().collect();
        wait_for(what, Duration::from_secs(20), || self.next_hops() == want)
    }
}

#[test]
fn agents_advertise_an_ospf_vip_with_ecmp_and_flush_it() {
    let mut lab = Lab::new();
    let started = Instant::now();
    lab.start_controller();
    lab.start_agent(0);
    lab.start_agent(1);
    let (a, b) = (NODES[0].1, NODES[1].1);

    // Assignment: both nodes advertise the VIP; the router has a next hop through each.
    lab.wait_hops("next hops through both nodes", &[a, b]);
    println!(
        "controller and agents started -> the router routes the VIP through both nodes: {:?}",
        started.elapsed()
    );
    let neighbors = lab.birdc(&["show", "ospf", "neighbors"]);
    for (_, addr) in NODES {
        let line = neighbors
            .lines()
            .find(|l| l.contains(addr))
            .unwrap_or_else(|| panic!("{addr} is not BIRD's neighbour:\n{neighbors}"));
        // Priority 0: a DROther, fully adjacent to BIRD, the DR.
        assert!(line.contains("Full/Other"), "{line}");
    }

    // Graceful stop of node-a: its LSA is flushed, the next hop goes at once.
    let agent = lab.agents[0].as_mut().expect("node-a");
    agent.terminate();
    let t = Instant::now();
    agent.wait_exit();
    let flushed = lab.wait_hops("node-a's next hop withdrawn", &[b]);
    println!(
        "SIGTERM of node-a -> its next hop gone: {:?} after the signal ({flushed:?} after exit)",
        t.elapsed()
    );

    // SIGKILL of node-b: nothing is flushed; BIRD drops the adjacency after the dead interval.
    let agent = lab.agents[1].as_mut().expect("node-b");
    agent.child.kill().expect("SIGKILL node-b");
    let t = Instant::now();
    agent.wait_exit();
    lab.wait_hops("node-b's next hop dropped after the dead interval", &[]);
    let gone = t.elapsed();
    println!("SIGKILL of node-b -> its next hop gone: {gone:?} (dead interval 4 s)");
    assert!(
        gone > Duration::from_secs(2),
        "gone before the dead interval: {gone:?}"
    );

    // Both back: advertised again. Then the VIP leaves the configuration: flushed everywhere.
    lab.start_agent(0);
    lab.start_agent(1);
    let back = lab.wait_hops("next hops through both nodes again", &[a, b]);
    println!("agents restarted -> both next hops back: {back:?}");
    lab.write_vip(false);
    let t = Instant::now();
    lab.wait_hops("the VIP flushed after its removal", &[]);
    println!(
        "ProxyVIP removed -> flushed by both nodes: {:?}",
        t.elapsed()
    );
}
