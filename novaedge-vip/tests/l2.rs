//! The L2 driver in network namespaces: a bridge (netns `…s`) joins an observer (`…o`,
//! 198.51.100.1) and two nodes (`…a` .2, `…b` .3), each on a veth. The driver (the
//! `novaedge-vip-l2` binary) runs in a node under `ip netns exec`. The observer captures the
//! announcements with `tcpdump -w` and reads them back with `tcpdump -r`, and asks who answers
//! for the VIP with `arping` (two MACs would be split brain).
//!
//! Needs root, `ip`, `tcpdump` and `arping` (Debian `iputils-arping`; see
//! `scripts/test-packages.txt`). Without them the tests fail saying what is missing; they never
//! skip. The guard's `Drop` kills the processes the test started and deletes the namespaces.
#![allow(
    clippy::print_stdout,
    reason = "the tests report the MACs and timings they observe"
)]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{NetnsGuard, must, sh, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_novaedge-vip-l2");
const VIP: &str = "198.51.100.100";
const VIP_PRE: &str = "198.51.100.101";
const VIP6: &str = "2001:db8::100";

struct Lab {
    guard: NetnsGuard,
    obs: String,
    a: String,
    b: String,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        common::require_root_and_tools(
            "the L2 namespace tests",
            &["ip", "tcpdump", "arping"],
            "iproute2, tcpdump, iputils-arping",
        );
        let id = std::process::id() % 100_000;
        let p = format!("nvl2{id}{tag}");
        let mut lab = Lab {
            guard: NetnsGuard::default(),
            obs: format!("{p}o"),
            a: format!("{p}a"),
            b: format!("{p}b"),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let sw = format!("{p}s");
        lab.guard.add_netns(&sw);
        must(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        for (i, (ns, side)) in [(&lab.obs, "o"), (&lab.a, "a"), (&lab.b, "b")]
            .into_iter()
            .enumerate()
        {
            let ns = ns.clone();
            lab.guard.add_netns(&ns);
            let port = format!("v{tag}{side}");
            must(&[
                "ip", "link", "add", &port, "netns", &sw, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            must(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"]);
            let v4 = format!("198.51.100.{}/24", i + 1);
            let v6 = format!("2001:db8::{}/64", i + 1);
            must(&["ip", "-n", &ns, "addr", "add", &v4, "dev", "eth0"]);
            must(&["ip", "-n", &ns, "addr", "add", &v6, "dev", "eth0", "nodad"]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        }
        // Let a gratuitous ARP create a neighbour entry on the observer (default: only update).
        must(&[
            "ip",
            "netns",
            "exec",
            &lab.obs,
            "sysctl",
            "-qw",
            "net.ipv4.conf.eth0.arp_accept=1",
        ]);
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn mac(&self, ns: &str) -> String {
        let out = sh(&[
            "ip",
            "netns",
            "exec",
            ns,
            "cat",
            "/sys/class/net/eth0/address",
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_lowercase()
    }

    /// Starts `tcpdump -w` on the observer and waits until it listens.
    fn capture(&mut self, name: &str) -> PathBuf {
        let pcap = self.path(&format!("{name}.pcap"));
        let err = self.path(&format!("{name}.tcpdump.log"));
        let child = Command::new("ip")
            .args([
                "netns", "exec", &self.obs, "tcpdump", "-i", "eth0", "-n", "-U", "-w",
            ])
            .arg(&pcap)
            .arg("arp or icmp6")
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

    /// Starts the driver in `ns`; returns its index in the guard's children.
    fn start_driver(&mut self, ns: &str, log: &str) -> usize {
        let ns = ns.to_string();
        let out = std::fs::File::create(self.path(log)).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, BIN, "--interface", "eth0"])
            .stdin(Stdio::piped())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn novaedge-vip-l2");
        self.guard.children.push(child);
        self.guard.children.len() - 1
    }

    fn command(&mut self, idx: usize, line: &str) {
        let stdin = self.guard.children[idx].stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to driver");
    }

    fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.path(log)).unwrap_or_default()
    }

    /// Asks for `status` and returns the lines printed for it.
    fn status(&mut self, idx: usize, log: &str) -> String {
        let before =
            self.log(log).matches("\nend").count() + usize::from(self.log(log).starts_with("end"));
        self.command(idx, "status");
        wait_for("status output", Duration::from_secs(5), || {
            let l = self.log(log);
            l.matches("\nend").count() + usize::from(l.starts_with("end")) > before
        });
        self.log(log)
    }

    /// The MACs that answer `arping` for `ip` from the observer.
    fn who_answers(&self, ip: &str, count: u32) -> BTreeSet<String> {
        let c = count.to_string();
        let out = sh(&[
            "ip", "netns", "exec", &self.obs, "arping", "-c", &c, "-w", &c, "-I", "eth0", ip,
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        let macs: BTreeSet<String> = text
            .split(['[', ']'])
            .filter(|w| w.len() == 17 && w.matches(':').count() == 5)
            .map(str::to_string)
            .collect();
        assert!(
            macs.len() <= 1,
            "split brain: {ip} answered by {macs:?}\n{text}"
        );
        macs
    }

    /// `tcpdump -r` of a capture, one line per frame (with -vv details).
    fn read_pcap(pcap: &Path) -> String {
        let p = pcap.display().to_string();
        String::from_utf8_lossy(&sh(&["tcpdump", "-r", &p, "-n", "-e", "-vv", "-tt"]).stdout)
            .into_owned()
    }
}

fn garps_from(pcap: &str, mac: &str, ip: &str) -> usize {
    pcap.lines()
        .filter(|l| {
            l.contains(&format!("{mac} > ff:ff:ff:ff:ff:ff, ethertype ARP"))
                && l.contains(&format!("Request who-has {ip} tell {ip}"))
        })
        .count()
}

/// Capture timestamps (seconds since the epoch) of the GARPs from `mac` for `ip`.
fn garp_times(pcap: &str, mac: &str, ip: &str) -> Vec<f64> {
    pcap.lines()
        .filter(|l| garps_from(l, mac, ip) == 1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[test]
fn garp_arping_unassign_preexisting_and_sigkill_takeover() {
    let mut lab = Lab::new("4");
    let (mac_a, mac_b) = (lab.mac(&lab.a.clone()), lab.mac(&lab.b.clone()));
    println!("node A {mac_a}, node B {mac_b}");
    let pcap = lab.capture("v4");

    // Assign on A: the observer sees the GARP from A, and only A answers.
    let a = lab.start_driver(&lab.a.clone(), "a.log");
    let t = Instant::now();
    lab.command(a, &format!("assign {VIP}"));
    let first = wait_for("the first GARP from A", Duration::from_secs(5), || {
        garps_from(&Lab::read_pcap(&pcap), &mac_a, VIP) >= 1
    });
    println!("assign -> first GARP seen by the observer: {first:?}");
    wait_for("three GARPs from A", Duration::from_secs(5), || {
        garps_from(&Lab::read_pcap(&pcap), &mac_a, VIP) >= 3
    });
    println!("three GARPs after {:?}", t.elapsed());
    let neigh = sh(&["ip", "-n", &lab.obs, "neigh", "show", VIP]);
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_lowercase();
    assert!(neigh.contains(&mac_a), "observer neighbour entry: {neigh}");
    let answers = lab.who_answers(VIP, 3);
    println!("arping {VIP} after assign on A: {answers:?}");
    assert_eq!(answers, BTreeSet::from([mac_a.clone()]));
    let status = lab.status(a, "a.log");
    assert!(
        status.contains(&format!(
            "vip {VIP} Active {{ peers: 1 }} interface=eth0 added=true pre_existing=false announcements=3"
        )),
        "{status}"
    );

    // Unassign: nobody answers, and the address is gone from A.
    lab.command(a, &format!("unassign {VIP}"));
    wait_for("the VIP to leave A", Duration::from_secs(5), || {
        !String::from_utf8_lossy(&sh(&["ip", "-n", &lab.a, "addr", "show", "dev", "eth0"]).stdout)
            .contains(&format!("{VIP}/32"))
    });
    let answers = lab.who_answers(VIP, 2);
    println!("arping {VIP} after unassign: {answers:?}");
    assert!(answers.is_empty(), "answers after unassign: {answers:?}");

    // An address that was there before assign is used, reported, and left on unassign.
    must(&[
        "ip",
        "-n",
        &lab.a,
        "addr",
        "add",
        &format!("{VIP_PRE}/32"),
        "dev",
        "eth0",
    ]);
    lab.command(a, &format!("assign {VIP_PRE}"));
    let status = lab.status(a, "a.log");
    assert!(
        status.contains(&format!(
            "vip {VIP_PRE} Active {{ peers: 1 }} interface=eth0 added=false pre_existing=true"
        )),
        "{status}"
    );
    lab.command(a, &format!("unassign {VIP_PRE}"));
    let _ = lab.status(a, "a.log");
    let addrs = sh(&["ip", "-n", &lab.a, "addr", "show", "dev", "eth0"]);
    assert!(
        String::from_utf8_lossy(&addrs.stdout).contains(&format!("{VIP_PRE}/32")),
        "a pre-existing address was removed"
    );

    // SIGKILL A while it holds the VIP; its address lease (3 s by default) expires, then B
    // takes over. Every arping along the way must see at most one MAC.
    lab.command(a, &format!("assign {VIP}"));
    wait_for("A to answer again", Duration::from_secs(5), || {
        lab.who_answers(VIP, 1) == BTreeSet::from([mac_a.clone()])
    });
    lab.guard.children[a].kill().expect("SIGKILL the driver");
    let killed = Instant::now();
    let gone = wait_for("A's lease to expire", Duration::from_secs(10), || {
        lab.who_answers(VIP, 1).is_empty()
    });
    println!("SIGKILL -> A stops answering: {gone:?}");
    let b = lab.start_driver(&lab.b.clone(), "b.log");
    let t = Instant::now();
    lab.command(b, &format!("assign {VIP}"));
    let garp = wait_for("the GARP from B", Duration::from_secs(5), || {
        garps_from(&Lab::read_pcap(&pcap), &mac_b, VIP) >= 1
    });
    println!(
        "assign on B -> GARP from B seen: {garp:?} (SIGKILL of A -> B's GARP: {:?}; includes A's lease)",
        killed.elapsed() - t.elapsed() + garp
    );
    let answers = lab.who_answers(VIP, 3);
    println!("arping {VIP} after takeover: {answers:?}");
    assert_eq!(answers, BTreeSet::from([mac_b.clone()]));
    let neigh = sh(&["ip", "-n", &lab.obs, "neigh", "show", VIP]);
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_lowercase();
    assert!(neigh.contains(&mac_b), "observer neighbour entry: {neigh}");

    // assign -> first GARP on the wire (capture timestamp), median of 10 re-assignments.
    let mut delays = Vec::new();
    for _ in 0..10 {
        lab.command(b, &format!("unassign {VIP}"));
        wait_for("unassign on B", Duration::from_secs(5), || {
            lab.who_answers(VIP, 1).is_empty()
        });
        let before = garp_times(&Lab::read_pcap(&pcap), &mac_b, VIP).len();
        let t0 = epoch_now();
        lab.command(b, &format!("assign {VIP}"));
        wait_for("a new GARP from B", Duration::from_secs(5), || {
            garp_times(&Lab::read_pcap(&pcap), &mac_b, VIP).len() > before
        });
        let times = garp_times(&Lab::read_pcap(&pcap), &mac_b, VIP);
        delays.push(((times[before] - t0) * 1000.0).max(0.0));
    }
    delays.sort_by(f64::total_cmp);
    println!(
        "assign command -> first GARP on the wire, 10 runs: median {:.1} ms, max {:.1} ms",
        delays[5], delays[9]
    );
    assert!(delays[5] < 2000.0, "median assign-to-GARP {delays:?} ms");
    assert_eq!(lab.who_answers(VIP, 2), BTreeSet::from([mac_b.clone()]));
    let status = lab.status(b, "b.log");
    assert!(
        status.contains("warning net.ipv4.conf.eth0.arp_ignore=0 (effective)"),
        "the default arp_ignore is reported: {status}"
    );

    // Graceful shutdown removes the address it added.
    lab.command(b, "shutdown");
    wait_for("B to shut down", Duration::from_secs(5), || {
        lab.log("b.log").contains("shut down")
    });
    assert!(lab.who_answers(VIP, 1).is_empty());
}

#[test]
fn ipv6_unsolicited_na() {
    let mut lab = Lab::new("6");
    let mac_a = lab.mac(&lab.a.clone());
    // RFC 9131: a router (forwarding=1) with accept_untracked_na=1 creates a STALE neighbour
    // entry from an unsolicited NA; the observer plays that router.
    for s in [
        "net.ipv6.conf.eth0.forwarding=1",
        "net.ipv6.conf.eth0.accept_untracked_na=1",
    ] {
        must(&["ip", "netns", "exec", &lab.obs, "sysctl", "-qw", s]);
    }
    let pcap = lab.capture("v6");
    let a = lab.start_driver(&lab.a.clone(), "a.log");
    lab.command(a, &format!("assign {VIP6}"));
    let want = format!("{mac_a} > 33:33:00:00:00:01, ethertype IPv6");
    let took = wait_for(
        "three unsolicited NAs from A",
        Duration::from_secs(5),
        || {
            let text = Lab::read_pcap(&pcap);
            let lines: Vec<&str> = text.lines().collect();
            lines
                .iter()
                .filter(|l| {
                    l.contains(&want)
                        && l.contains(&format!(
                            "{VIP6} > ff02::1: [icmp6 sum ok] ICMP6, neighbor advertisement"
                        ))
                        && l.contains(&format!("tgt is {VIP6}, Flags [override]"))
                })
                .count()
                >= 3
        },
    );
    println!("assign -> third NA seen: {took:?}");
    let text = Lab::read_pcap(&pcap);
    assert!(
        text.contains(&format!(
            "destination link-address option (2), length 8 (1): {mac_a}"
        )),
        "{text}"
    );
    // The observer's kernel created a neighbour entry from the unsolicited NA alone.
    let neigh = sh(&["ip", "-n", &lab.obs, "-6", "neigh", "show", VIP6]);
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_lowercase();
    println!("observer: {}", neigh.trim());
    assert!(neigh.contains(&mac_a), "observer neighbour entry: {neigh}");
}
