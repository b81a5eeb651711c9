//! L2 VIP failover end to end, in network namespaces: `novaedge controller` (files source) and
//! two `novaedge agent`s, all with default timings, over mTLS.
//!
//! ```text
//!   netns …o (observer)  eth0 198.51.100.1 ─┐
//!   netns …a (node-a)    eth0 198.51.100.2 ─┼─ br0 (data, netns …s)
//!   netns …b (node-b)    eth0 198.51.100.3 ─┘
//!                        ctl0 10.77.0.2 ────┐
//!                        ctl0 10.77.0.3 ────┼─ br1 (control, netns …s)
//!   netns …c (controller) ctl0 10.77.0.1 ───┘
//! ```
//!
//! The VIP 198.51.100.100 is a ProxyVIP in L2 mode on `eth0`. The observer captures ARP with
//! `tcpdump` and asks who has the VIP with `arping`; a monitor thread does so all along and
//! also looks at both nodes' addresses, and the test fails if two nodes ever hold the VIP at
//! once. The control network is separate so that a node can be cut off from the controller
//! while it still reaches the observer: the split-brain case the agents' self-fencing is for.
//!
//! Needs root, `ip`, `tcpdump` and `arping` (Debian `iputils-arping`; see
//! `scripts/test-packages.txt`); fails, never skips, without them. Every namespace and process
//! the test creates is removed by the guard's `Drop`, also on failure.
#![allow(
    clippy::print_stdout,
    reason = "the test reports the failover times it measures"
)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::Proxy;
use common::netns::{
    Guard, bridge, dev_certs, epoch_now, l2_vip_yaml, link, mac, must, require_root_and_tools, sh,
    start_agent, start_controller, wait_for,
};

const VIP: &str = "198.51.100.100";
const CONTROLLER: &str = "10.77.0.1:9400";

struct Node {
    name: &'static str,
    ns: String,
    mac: String,
    /// The switch-side port of its control link.
    ctl_port: String,
}

struct Lab {
    // Dropped last: processes first (fields drop in order), then the namespaces.
    agents: [Option<Proxy>; 2],
    controller: Option<Proxy>,
    nodes: [Node; 2],
    obs: String,
    ctl: String,
    sw: String,
    dir: tempfile::TempDir,
    guard: Guard,
}

impl Lab {
    fn new() -> Lab {
        require_root_and_tools("the L2 failover test", &["ip", "tcpdump", "arping"]);
        let p = format!("nvf{}", std::process::id() % 100_000);
        let mut guard = Guard::default();
        let sw = guard.netns(format!("{p}s"));
        let obs = guard.netns(format!("{p}o"));
        let ctl = guard.netns(format!("{p}c"));
        let na = guard.netns(format!("{p}a"));
        let nb = guard.netns(format!("{p}b"));
        bridge(&sw, "br0");
        bridge(&sw, "br1");
        link(&sw, "br0", "do", &obs, "eth0", "198.51.100.1/24");
        link(&sw, "br1", "cc", &ctl, "ctl0", "10.77.0.1/24");
        link(&sw, "br0", "da", &na, "eth0", "198.51.100.2/24");
        link(&sw, "br1", "ca", &na, "ctl0", "10.77.0.2/24");
        link(&sw, "br0", "db", &nb, "eth0", "198.51.100.3/24");
        link(&sw, "br1", "cb", &nb, "ctl0", "10.77.0.3/24");
        // A gratuitous ARP creates the observer's neighbour entry (default: only updates it).
        must(&[
            "ip",
            "netns",
            "exec",
            &obs,
            "sysctl",
            "-qw",
            "net.ipv4.conf.eth0.arp_accept=1",
        ]);
        let nodes = [
            Node {
                name: "node-a",
                mac: mac(&na, "eth0"),
                ns: na,
                ctl_port: "ca".into(),
            },
            Node {
                name: "node-b",
                mac: mac(&nb, "eth0"),
                ns: nb,
                ctl_port: "cb".into(),
            },
        ];

        let dir = tempfile::tempdir().expect("tempdir");
        dev_certs(dir.path(), &["node-a", "node-b"]);
        let conf = dir.path().join("conf");
        std::fs::create_dir(&conf).expect("conf dir");
        std::fs::write(conf.join("vip.yaml"), l2_vip_yaml(VIP)).expect("write the ProxyVIP");
        Lab {
            agents: [None, None],
            controller: None,
            nodes,
            obs,
            ctl,
            sw,
            dir,
            guard,
        }
    }

    /// Starts the controller, with default timings.
    fn start_controller(&mut self) {
        self.controller = Some(start_controller(&self.ctl, self.dir.path(), CONTROLLER));
    }

    /// Starts node `i`'s agent, with default timings.
    fn start_agent(&mut self, i: usize) {
        let node = &self.nodes[i];
        self.agents[i] = Some(start_agent(
            &node.ns,
            self.dir.path(),
            CONTROLLER,
            node.name,
        ));
    }

    fn controller(&self) -> &Proxy {
        self.controller.as_ref().expect("controller running")
    }

    /// Starts `tcpdump -w` of ARP on the observer and waits until it listens.
    fn capture(&mut self) -> PathBuf {
        let pcap = self.dir.path().join("arp.pcap");
        let err = self.dir.path().join("tcpdump.log");
        let child = Command::new("ip")
            .args([
                "netns", "exec", &self.obs, "tcpdump", "-i", "eth0", "-n", "-U", "-w",
            ])
            .arg(&pcap)
            .arg("arp")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).expect("log file"))
            .spawn()
            .expect("spawn tcpdump");
        self.guard.children.push(child);
        wait_for("tcpdump to listen", Duration::from_secs(5), || {
            std::fs::read_to_string(&err)
                .unwrap_or_default()
                .contains("listening on")
        });
        pcap
    }

    /// Which node's MAC answers for the VIP now (`None`: nobody).
    fn holder(&self) -> Option<usize> {
        let macs = who_answers(&self.obs, 1);
        let mac = macs.iter().next()?;
        self.nodes.iter().position(|n| n.mac == *mac)
    }
}

/// The MACs that answer `arping` for the VIP from the observer; more than one is split brain.
fn who_answers(obs: &str, count: u32) -> BTreeSet<String> {
    let c = count.to_string();
    let out = sh(&[
        "ip", "netns", "exec", obs, "arping", "-c", &c, "-w", &c, "-I", "eth0", VIP,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let macs: BTreeSet<String> = text
        .split(['[', ']'])
        .filter(|w| w.len() == 17 && w.matches(':').count() == 5)
        .map(str::to_owned)
        .collect();
    assert!(
        macs.len() <= 1,
        "split brain: {VIP} answered by {macs:?}\n{text}"
    );
    macs
}

fn has_vip(ns: &str) -> bool {
    let out = sh(&["ip", "-n", ns, "-4", "addr", "show", "dev", "eth0"]);
    String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/32"))
}

/// Watches for split brain until stopped: both nodes holding the address, or two MACs
/// answering one ARP request.
struct Monitor {
    stop: Arc<AtomicBool>,
    violations: Arc<Mutex<Vec<String>>>,
    checks: Arc<Mutex<u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    fn start(lab: &Lab) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let checks = Arc::new(Mutex::new(0));
        let (obs, a, b) = (
            lab.obs.clone(),
            lab.nodes[0].ns.clone(),
            lab.nodes[1].ns.clone(),
        );
        let thread = {
            let (stop, violations, checks) = (stop.clone(), violations.clone(), checks.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if has_vip(&a) && has_vip(&b) {
                        violations
                            .lock()
                            .unwrap()
                            .push(format!("{:.3}: both nodes hold {VIP}", epoch_now()));
                    }
                    let c = "1";
                    let out = sh(&[
                        "ip", "netns", "exec", &obs, "arping", "-c", c, "-w", c, "-I", "eth0", VIP,
                    ]);
                    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
                    let macs: BTreeSet<&str> = text
                        .split(['[', ']'])
                        .filter(|w| w.len() == 17 && w.matches(':').count() == 5)
                        .collect();
                    if macs.len() > 1 {
                        violations
                            .lock()
                            .unwrap()
                            .push(format!("{:.3}: two MACs answer: {macs:?}", epoch_now()));
                    }
                    *checks.lock().unwrap() += 1;
                }
            })
        };
        Monitor {
            stop,
            violations,
            checks,
            thread: Some(thread),
        }
    }

    /// Stops the monitor; returns how many checks it made, and fails on any violation.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("monitor thread");
        }
        let violations = self.violations.lock().unwrap().clone();
        assert!(violations.is_empty(), "split brain: {violations:#?}");
        *self.checks.lock().unwrap()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Capture timestamps (epoch seconds) of the gratuitous ARPs from `mac` for the VIP.
fn garp_times(pcap: &Path, mac: &str) -> Vec<f64> {
    let p = pcap.display().to_string();
    let text =
        String::from_utf8_lossy(&sh(&["tcpdump", "-r", &p, "-n", "-e", "-tt"]).stdout).into_owned();
    text.lines()
        .filter(|l| {
            l.contains(&format!("{mac} > ff:ff:ff:ff:ff:ff, ethertype ARP"))
                && l.contains(&format!("Request who-has {VIP} tell {VIP}"))
        })
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The time (epoch seconds) of the controller's log line saying the VIP went to `node`,
/// after log line `skip`.
fn assigned_at(controller: &Proxy, node: &str, skip: usize) -> f64 {
    let needle = format!("L2 VIP assigned vip=\"t/web\" node=\"{node}\"");
    let i = controller.wait_log(&needle, skip);
    let line = controller.log.lock().unwrap()[i].clone();
    let stamp = line.split_whitespace().next().unwrap_or_default();
    humantime::parse_rfc3339_weak(stamp.trim_end_matches('Z'))
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
        .unwrap_or_else(|| panic!("no timestamp in {line:?}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn an_l2_vip_fails_over_in_under_two_seconds_and_never_answers_from_two_nodes() {
    let mut lab = Lab::new();
    let pcap = lab.capture();
    lab.start_controller();
    lab.start_agent(0);

    // node-a is the only node: it gets the VIP once the controller's start-up grace (one
    // fencing delay) is over, and announces it.
    let mac_a = lab.nodes[0].mac.clone();
    let took = wait_for(
        "node-a to answer for the VIP",
        Duration::from_secs(10),
        || lab.holder() == Some(0),
    );
    println!("controller and node-a started -> node-a answers: {took:?}");
    assert!(!garp_times(&pcap, &mac_a).is_empty(), "no GARP from node-a");
    lab.start_agent(1);
    lab.controller()
        .wait_log("agent subscribed node=\"node-b\"", 0);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(who_answers(&lab.obs, 2), BTreeSet::from([mac_a.clone()]));
    assert!(!has_vip(&lab.nodes[1].ns));

    let monitor = Monitor::start(&lab);

    // Ten failovers: SIGKILL the holder's agent, time the other node's first GARP, restart the
    // killed agent and check it does not take the VIP back.
    let mut kill_to_garp = Vec::new();
    let mut decision_to_garp = Vec::new();
    for round in 0..10 {
        let holder = lab.holder().expect("someone holds the VIP");
        let other = 1 - holder;
        let other_mac = lab.nodes[other].mac.clone();
        let skip = lab.controller().log_len();
        let killed_at = epoch_now();
        let agent = lab.agents[holder].as_mut().expect("holder's agent runs");
        agent.child.kill().expect("SIGKILL the holder's agent");
        agent.wait_exit();
        let garp = wait_for(
            "a GARP from the other node",
            Duration::from_secs(10),
            || garp_times(&pcap, &other_mac).iter().any(|t| *t > killed_at),
        );
        let first = garp_times(&pcap, &other_mac)
            .into_iter()
            .find(|t| *t > killed_at)
            .expect("the GARP just seen");
        let decided = assigned_at(lab.controller(), lab.nodes[other].name, skip);
        kill_to_garp.push((first - killed_at) * 1000.0);
        decision_to_garp.push((first - decided) * 1000.0);
        println!(
            "round {round}: {} killed -> {} GARP after {:.0} ms (controller decision -> GARP \
             {:.0} ms; seen by the test after {garp:?})",
            lab.nodes[holder].name,
            lab.nodes[other].name,
            (first - killed_at) * 1000.0,
            (first - decided) * 1000.0,
        );
        assert_eq!(
            who_answers(&lab.obs, 1),
            BTreeSet::from([other_mac.clone()])
        );

        // The killed node comes back and takes nothing back.
        let skip = lab.controller().log_len();
        lab.start_agent(holder);
        let name = lab.nodes[holder].name;
        lab.controller()
            .wait_log(&format!("agent subscribed node=\"{name}\""), skip);
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(lab.holder(), Some(other), "the VIP moved back to {name}");
    }
    println!(
        "SIGKILL of the holder -> first GARP from the new holder, 10 rounds: median {:.0} ms, \
         max {:.0} ms (default settings: heartbeat 200 ms, fencing delay 1.5 s, L2 lease 1 s)",
        median(kill_to_garp.clone()),
        kill_to_garp.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "controller decision -> first GARP, 10 rounds: median {:.0} ms, max {:.0} ms",
        median(decision_to_garp.clone()),
        decision_to_garp.iter().copied().fold(0.0, f64::max)
    );

    // Cut the holder off from the controller (its data link stays up): it drops the VIP on its
    // own before the controller gives it to the other node.
    let holder = lab.holder().expect("someone holds the VIP");
    let other = 1 - holder;
    let skip = lab.controller().log_len();
    let agent_skip = lab.agents[holder].as_ref().expect("agent").log_len();
    must(&[
        "ip",
        "-n",
        &lab.sw,
        "link",
        "set",
        &lab.nodes[holder].ctl_port,
        "down",
    ]);
    let cut_at = Instant::now();
    lab.agents[holder]
        .as_ref()
        .expect("agent")
        .wait_log("dropping L2 VIPs", agent_skip);
    let dropped = cut_at.elapsed();
    assigned_at(lab.controller(), lab.nodes[other].name, skip);
    let moved = cut_at.elapsed();
    wait_for("the other node to answer", Duration::from_secs(10), || {
        lab.holder() == Some(other)
    });
    println!(
        "{} cut off from the controller: dropped the VIP itself after {dropped:?}; the \
         controller gave it to {} after {moved:?}",
        lab.nodes[holder].name, lab.nodes[other].name
    );
    assert!(dropped < moved);
    // The cut-off node stays fenced: nothing it said before the cut takes the VIP back.
    std::thread::sleep(Duration::from_secs(1));
    let log = lab.controller().log.lock().unwrap()[skip..].join("\n");
    assert!(
        !log.contains("waits for its release"),
        "the VIP was taken back from its new holder:\n{log}"
    );
    assert_eq!(lab.holder(), Some(other));

    // The link comes back: the cut-off node reconnects and does not take the VIP back.
    must(&[
        "ip",
        "-n",
        &lab.sw,
        "link",
        "set",
        &lab.nodes[holder].ctl_port,
        "up",
    ]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.holder(), Some(other));
    assert!(!has_vip(&lab.nodes[holder].ns));

    let checks = monitor.finish();
    println!("split-brain monitor: {checks} checks, none saw two holders");

    // Graceful shutdown of the holder: it removes the address at once.
    let agent = lab.agents[other].as_mut().expect("agent");
    agent.terminate();
    agent.wait_exit();
    assert!(!has_vip(&lab.nodes[other].ns));
}

/// `novaedge run` (one machine, no controller) holds the ProxyVIPs of its files, and releases
/// them when it stops.
#[test]
fn novaedge_run_holds_the_proxyvips_of_its_files() {
    require_root_and_tools("the `novaedge run` VIP test", &["ip", "arping"]);
    let p = format!("nvr{}", std::process::id() % 100_000);
    let mut guard = Guard::default();
    let sw = guard.netns(format!("{p}s"));
    let obs = guard.netns(format!("{p}o"));
    let node = guard.netns(format!("{p}n"));
    bridge(&sw, "br0");
    link(&sw, "br0", "po", &obs, "eth0", "198.51.100.1/24");
    link(&sw, "br0", "pn", &node, "eth0", "198.51.100.2/24");
    let mac = mac(&node, "eth0");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("vip.yaml"), l2_vip_yaml(VIP)).expect("write the ProxyVIP");
    let conf = dir.path().display().to_string();
    let mut run = Proxy::start_in_netns(&node, &["run", &conf]);
    wait_for(
        "the node to answer for the VIP",
        Duration::from_secs(10),
        || who_answers(&obs, 1) == BTreeSet::from([mac.clone()]),
    );
    assert!(has_vip(&node));

    run.terminate();
    run.wait_exit();
    assert!(!has_vip(&node), "the VIP outlived `novaedge run`");
    assert!(who_answers(&obs, 1).is_empty());
    drop(run);
    drop(guard);
}
