//! Interop with real routers in network namespaces: GoBGP (`gobgpd`) and BIRD 2 as passive
//! routers in netns `…r`, our speaker (the `novaedge-vip-bgp` binary) in netns `…n`, joined by a
//! veth pair carrying IPv4 and IPv6. Each test runs one router with eBGP or iBGP and two
//! sessions (IPv4 and IPv6) and checks the router's RIB after assign, unassign, graceful
//! shutdown and SIGKILL.
//!
//! Needs root, `ip`, and the Debian packages `gobgpd` and `bird2` (see
//! `scripts/test-packages.txt`). Without them the tests fail with a message saying what is
//! missing; they never skip silently. Every namespace and process a test creates is removed by
//! a guard's `Drop`, also when the test fails.
#![allow(
    clippy::print_stdout,
    reason = "the tests report the RIB observations they make"
)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_novaedge-vip-bgp");
const RTR_V4: &str = "172.31.255.1";
const NODE_V4: &str = "172.31.255.2";
const RTR_V6: &str = "fd00:31::1";
const NODE_V6: &str = "fd00:31::2";
const VIP4: &str = "192.0.2.10";
const VIP6: &str = "2001:db8::10";
const PFX4: &str = "192.0.2.10/32";
const PFX6: &str = "2001:db8::10/128";
const RTR_AS: u32 = 64512;
const HOLD: u64 = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Router {
    Gobgp,
    Bird,
}

mod common;
use common::{must, sh};

fn require_tools() {
    common::require_root_and_tools(
        "the BGP interop tests",
        &["ip", "gobgpd", "gobgp", "bird", "birdc"],
        "gobgpd, bird2, iproute2",
    );
}

/// The lab: two namespaces, a veth pair, a router, and the speaker. Dropping it kills every
/// process it started (by PID) and deletes the namespaces.
struct Lab {
    rtr: String,
    node: String,
    dir: tempfile::TempDir,
    router: Router,
    children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.rtr, &self.node] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    fn new(tag: &str, router: Router) -> Lab {
        require_tools();
        let id = std::process::id() % 100_000;
        let lab = Lab {
            rtr: format!("nvip{id}{tag}r"),
            node: format!("nvip{id}{tag}n"),
            dir: tempfile::tempdir().expect("tempdir"),
            router,
            children: Vec::new(),
        };
        must(&["ip", "netns", "add", &lab.rtr]);
        must(&["ip", "netns", "add", &lab.node]);
        must(&[
            "ip",
            "link",
            "add",
            "veth-rtr",
            "netns",
            &lab.rtr,
            "type",
            "veth",
            "peer",
            "name",
            "veth-node",
            "netns",
            &lab.node,
        ]);
        for (ns, dev, v4, v6) in [
            (&lab.rtr, "veth-rtr", RTR_V4, RTR_V6),
            (&lab.node, "veth-node", NODE_V4, NODE_V6),
        ] {
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            must(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v4}/30"),
                "dev",
                dev,
            ]);
            must(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&mut self, ns: &str, args: &[&str], log: &str, stdin: bool) -> usize {
        let logf = std::fs::File::create(self.path(log)).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(logf.try_clone().expect("log file"))
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
        self.children.push(child);
        self.children.len() - 1
    }

    fn start_router(&mut self, node_as: u32) {
        match self.router {
            Router::Gobgp => {
                let mut conf = format!(
                    "[global.config]\n  as = {RTR_AS}\n  router-id = \"{RTR_V4}\"\n  local-address-list = [\"{RTR_V4}\", \"{RTR_V6}\"]\n"
                );
                for (addr, fam) in [(NODE_V4, "ipv4-unicast"), (NODE_V6, "ipv6-unicast")] {
                    conf += &format!(
                        "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{addr}\"\n    peer-as = {node_as}\n  \
                         [neighbors.transport.config]\n    passive-mode = true\n  [neighbors.timers.config]\n    hold-time = {HOLD}\n    \
                         keepalive-interval = 1\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{fam}\"\n"
                    );
                }
                std::fs::write(self.path("gobgpd.toml"), conf).expect("write config");
                let conf = self.path("gobgpd.toml").display().to_string();
                let ns = self.rtr.clone();
                self.spawn(
                    &ns,
                    &[
                        "gobgpd",
                        "-f",
                        &conf,
                        "--api-hosts",
                        "127.0.0.1:50051",
                        "--pprof-disable",
                        "-p",
                    ],
                    "router.log",
                    false,
                );
            }
            Router::Bird => {
                let mut conf = format!(
                    "log stderr all;\nrouter id {RTR_V4};\nprotocol device {{ scan time 1; }}\nprotocol direct {{ ipv4; ipv6; }}\n"
                );
                for (name, local, addr, fam) in [
                    ("n4", RTR_V4, NODE_V4, "ipv4"),
                    ("n6", RTR_V6, NODE_V6, "ipv6"),
                ] {
                    conf += &format!(
                        "protocol bgp {name} {{\n  local {local} as {RTR_AS};\n  neighbor {addr} as {node_as};\n  passive on;\n  \
                         hold time {HOLD}; keepalive time 1;\n  connect retry time 1; error wait time 1, 2;\n  \
                         {fam} {{ import all; export none; }};\n}}\n"
                    );
                }
                std::fs::write(self.path("bird.conf"), conf).expect("write config");
                let conf = self.path("bird.conf").display().to_string();
                let ctl = self.path("bird.ctl").display().to_string();
                let pid = self.path("bird.pid").display().to_string();
                let ns = self.rtr.clone();
                self.spawn(
                    &ns,
                    &["bird", "-f", "-c", &conf, "-s", &ctl, "-P", &pid],
                    "router.log",
                    false,
                );
            }
        }
    }

    fn rtr(&self, args: &[&str]) -> String {
        let mut cmd = vec!["ip", "netns", "exec", &self.rtr];
        cmd.extend_from_slice(args);
        let out = sh(&cmd);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn birdc(&self, args: &[&str]) -> String {
        let ctl = self.path("bird.ctl").display().to_string();
        let mut cmd = vec!["birdc", "-s", &ctl];
        cmd.extend_from_slice(args);
        String::from_utf8_lossy(&sh(&cmd).stdout).into_owned()
    }

    /// Whether the router's session with `node_addr` is Established.
    fn established(&self, v6: bool) -> bool {
        match self.router {
            Router::Gobgp => {
                let addr = if v6 { NODE_V6 } else { NODE_V4 };
                self.rtr(&["gobgp", "neighbor", addr, "-j"])
                    .contains("\"session_state\":6")
            }
            Router::Bird => self
                .birdc(&["show", "protocols", if v6 { "n6" } else { "n4" }])
                .contains("Established"),
        }
    }

    /// The router's RIB entry for `prefix`, if it has one.
    fn route(&self, prefix: &str) -> Option<String> {
        let v6 = prefix.contains(':');
        match self.router {
            Router::Gobgp => {
                let out = self.rtr(&[
                    "gobgp",
                    "global",
                    "rib",
                    "-a",
                    if v6 { "ipv6" } else { "ipv4" },
                ]);
                let line = out.lines().find(|l| l.contains(prefix))?;
                Some(line.split_whitespace().collect::<Vec<_>>().join(" "))
            }
            Router::Bird => {
                let out = self.birdc(&["show", "route", prefix, "all"]);
                if out.lines().any(|l| l.starts_with(prefix)) {
                    Some(
                        out.lines()
                            .skip(2)
                            .map(str::trim)
                            .collect::<Vec<_>>()
                            .join(" | "),
                    )
                } else {
                    None
                }
            }
        }
    }

    fn wait(&self, what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
        let t = Instant::now();
        while !f() {
            if t.elapsed() > limit {
                let router_log =
                    std::fs::read_to_string(self.path("router.log")).unwrap_or_default();
                let speaker_log =
                    std::fs::read_to_string(self.path("speaker.log")).unwrap_or_default();
                panic!(
                    "timed out after {limit:?} waiting for: {what}\n--- router log (tail) ---\n{}\n--- speaker log ---\n{speaker_log}",
                    router_log
                        .lines()
                        .rev()
                        .take(40)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        t.elapsed()
    }

    fn start_speaker(&mut self, node_as: u32, vips: &[&str]) -> usize {
        let bin = BIN.to_string();
        let peer4 = format!("{RTR_V4},{RTR_AS}");
        let peer6 = format!("{RTR_V6},{RTR_AS}");
        let hold = HOLD.to_string();
        let asn = node_as.to_string();
        let mut args = vec![
            bin.as_str(),
            "--local-as",
            &asn,
            "--router-id",
            NODE_V4,
            "--hold",
            &hold,
            "--connect-retry-ms",
            "300",
            "--peer",
            &peer4,
            "--peer",
            &peer6,
        ];
        for v in vips {
            args.extend_from_slice(&["--vip", v]);
        }
        let ns = self.node.clone();
        // Append to one log across speaker restarts.
        self.spawn(&ns, &args, "speaker.log", true)
    }

    fn stdin(&mut self, idx: usize) -> &mut ChildStdin {
        self.children[idx].stdin.as_mut().expect("speaker stdin")
    }

    fn command(&mut self, idx: usize, line: &str) {
        writeln!(self.stdin(idx), "{line}").expect("write to speaker");
    }
}

fn present(lab: &Lab, pfx: &str) -> bool {
    lab.route(pfx).is_some()
}

fn run_case(tag: &str, router: Router, ibgp: bool) {
    let node_as = if ibgp { RTR_AS } else { 4_200_000_001 };
    let kind = format!("{router:?} {}", if ibgp { "iBGP" } else { "eBGP" });
    let mut lab = Lab::new(tag, router);
    lab.start_router(node_as);
    std::thread::sleep(Duration::from_millis(300));

    // 1. Sessions come up.
    let sp = lab.start_speaker(node_as, &[]);
    let t = lab.wait("both sessions Established", Duration::from_secs(20), || {
        lab.established(false) && lab.established(true)
    });
    println!("[{kind}] sessions IPv4+IPv6 Established after {t:?}");

    // 2. assign -> routes appear.
    lab.command(sp, &format!("assign {VIP4}"));
    lab.command(sp, &format!("assign {VIP6}"));
    let t = lab.wait(
        "VIPs in the RIB after assign",
        Duration::from_secs(10),
        || present(&lab, PFX4) && present(&lab, PFX6),
    );
    println!("[{kind}] assign: in RIB after {t:?}");
    println!("[{kind}]   {}", lab.route(PFX4).unwrap_or_default());
    println!("[{kind}]   {}", lab.route(PFX6).unwrap_or_default());

    // 3. unassign -> routes gone.
    lab.command(sp, &format!("unassign {VIP4}"));
    lab.command(sp, &format!("unassign {VIP6}"));
    let t = lab.wait("VIPs gone after unassign", Duration::from_secs(10), || {
        !present(&lab, PFX4) && !present(&lab, PFX6)
    });
    println!(
        "[{kind}] unassign: gone from RIB after {t:?}; sessions still up: {}",
        lab.established(false) && lab.established(true)
    );
    assert!(
        lab.established(false) && lab.established(true),
        "unassign must not drop the sessions"
    );

    // 4. graceful shutdown -> withdraw + Cease.
    lab.command(sp, &format!("assign {VIP4}"));
    lab.command(sp, &format!("assign {VIP6}"));
    lab.wait("VIPs back after re-assign", Duration::from_secs(10), || {
        present(&lab, PFX4) && present(&lab, PFX6)
    });
    lab.command(sp, "shutdown");
    let t = lab.wait(
        "VIPs gone after graceful shutdown",
        Duration::from_secs(10),
        || !present(&lab, PFX4) && !present(&lab, PFX6),
    );
    let status = lab.children[sp].wait().expect("speaker exit");
    assert!(
        status.success(),
        "speaker exit status after shutdown: {status}"
    );
    println!("[{kind}] graceful shutdown: gone from RIB after {t:?}; speaker exited with {status}");
    if router == Router::Bird {
        let p = lab.birdc(&["show", "protocols", "all", "n4"]);
        let why = p
            .lines()
            .find(|l| l.contains("Last error") || l.contains("Received"))
            .unwrap_or("")
            .trim()
            .to_string();
        println!("[{kind}]   BIRD n4 after shutdown: {why}");
    }

    // 5. restart with VIPs on the command line, then SIGKILL.
    let sp = lab.start_speaker(node_as, &[VIP4, VIP6]);
    let t = lab.wait(
        "VIPs announced after restart",
        Duration::from_secs(20),
        || present(&lab, PFX4) && present(&lab, PFX6),
    );
    println!("[{kind}] restart: sessions re-established and VIPs in RIB after {t:?}");
    let _ = lab.children[sp].kill();
    let _ = lab.children[sp].wait();
    let t = lab.wait(
        "VIPs gone after SIGKILL",
        Duration::from_secs(HOLD + 2),
        || !present(&lab, PFX4) && !present(&lab, PFX6),
    );
    println!(
        "[{kind}] SIGKILL: gone from RIB after {t:?} (hold time {HOLD} s; the kernel closes the TCP connection)"
    );

    // 6. a frozen speaker (SIGSTOP: the kernel keeps the connection, no KEEPALIVEs are sent)
    //    loses its routes when the router's hold timer expires.
    let sp = lab.start_speaker(node_as, &[VIP4, VIP6]);
    lab.wait(
        "VIPs announced after second restart",
        Duration::from_secs(20),
        || present(&lab, PFX4) && present(&lab, PFX6),
    );
    let pid = lab.children[sp].id().to_string();
    must(&["kill", "-STOP", &pid]);
    let t = lab.wait(
        "VIPs gone after SIGSTOP (hold timer)",
        Duration::from_secs(HOLD + 3),
        || !present(&lab, PFX4) && !present(&lab, PFX6),
    );
    println!("[{kind}] SIGSTOP (silent speaker): gone from RIB after {t:?} (hold time {HOLD} s)");
    assert!(
        t >= Duration::from_secs(HOLD - 1),
        "routes went away before the hold time: {t:?}"
    );
}

#[test]
fn gobgp_ebgp_ipv4_ipv6() {
    run_case("ge", Router::Gobgp, false);
}

#[test]
fn gobgp_ibgp_ipv4_ipv6() {
    run_case("gi", Router::Gobgp, true);
}

#[test]
fn bird_ebgp_ipv4_ipv6() {
    run_case("be", Router::Bird, false);
}

#[test]
fn bird_ibgp_ipv4_ipv6() {
    run_case("bi", Router::Bird, true);
}
