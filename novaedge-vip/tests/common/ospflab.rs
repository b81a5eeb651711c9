//! The OSPF lab of the namespace tests (`ospf_interop.rs`, `ospf_capture.rs`): BIRD 2 as the
//! router in netns `…r`, and one or more OSPF speakers (the `novaedge-vip-ospf` binary) in
//! netns `…n0`, `…n1`, ...
//!
//! - point-to-point: one veth pair, router 172.31.250.1/30, speaker 172.31.250.2/30;
//! - broadcast: a bridge `br0` in the router's namespace (router 172.31.251.1/24) with one
//!   veth per speaker (`eth0` in the speaker's namespace, 172.31.251.2, .3, ...).
//!
//! Hello 1 s, dead 4 s, retransmit 2 s on both sides. Dropping the [`Lab`] kills every
//! process it started (by PID) and deletes the namespaces.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{must, sh};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_novaedge-vip-ospf");
pub(crate) const HELLO: u64 = 1;
pub(crate) const DEAD: u64 = 4;
pub(crate) const RETRANSMIT: u64 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Net {
    PointToPoint,
    Broadcast,
}

pub(crate) fn require_tools() {
    super::require_root_and_tools(
        "the OSPF interop tests",
        &["ip", "bird", "birdc"],
        "bird2, iproute2",
    );
}

pub(crate) struct Lab {
    pub(crate) rtr: String,
    pub(crate) nodes: Vec<String>,
    pub(crate) net: Net,
    dir: tempfile::TempDir,
    pub(crate) children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in std::iter::once(&self.rtr).chain(&self.nodes) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    /// Builds the namespaces and links for `speakers` speakers (1 on point-to-point).
    pub(crate) fn new(tag: &str, net: Net, speakers: usize) -> Lab {
        require_tools();
        assert!(
            net == Net::Broadcast || speakers == 1,
            "a point-to-point link has one speaker"
        );
        let id = std::process::id() % 100_000;
        let mut lab = Lab {
            rtr: format!("nvo{id}{tag}r"),
            nodes: Vec::new(),
            net,
            dir: tempfile::tempdir().expect("tempdir"),
            children: Vec::new(),
        };
        must(&["ip", "netns", "add", &lab.rtr]);
        must(&["ip", "-n", &lab.rtr, "link", "set", "lo", "up"]);
        if net == Net::Broadcast {
            must(&["ip", "-n", &lab.rtr, "link", "add", "br0", "type", "bridge"]);
            must(&[
                "ip",
                "-n",
                &lab.rtr,
                "addr",
                "add",
                &format!("{}/24", lab.router_addr()),
                "dev",
                "br0",
            ]);
            must(&["ip", "-n", &lab.rtr, "link", "set", "br0", "up"]);
        }
        for k in 0..speakers {
            let ns = format!("nvo{id}{tag}n{k}");
            must(&["ip", "netns", "add", &ns]);
            lab.nodes.push(ns.clone());
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            let rtr_end = lab.router_dev(k);
            must(&[
                "ip", "-n", &lab.rtr, "link", "add", &rtr_end, "type", "veth", "peer", "name",
                "eth0", "netns", &ns,
            ]);
            match net {
                Net::PointToPoint => must(&[
                    "ip",
                    "-n",
                    &lab.rtr,
                    "addr",
                    "add",
                    &format!("{}/30", lab.router_addr()),
                    "dev",
                    &rtr_end,
                ]),
                Net::Broadcast => must(&[
                    "ip", "-n", &lab.rtr, "link", "set", &rtr_end, "master", "br0",
                ]),
            }
            let plen = if net == Net::PointToPoint { 30 } else { 24 };
            must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/{plen}", lab.speaker_addr(k)),
                "dev",
                "eth0",
            ]);
            must(&["ip", "-n", &lab.rtr, "link", "set", &rtr_end, "up"]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        }
        lab
    }

    pub(crate) fn router_addr(&self) -> &'static str {
        match self.net {
            Net::PointToPoint => "172.31.250.1",
            Net::Broadcast => "172.31.251.1",
        }
    }

    /// The router's OSPF interface.
    pub(crate) fn router_iface(&self) -> String {
        match self.net {
            Net::PointToPoint => self.router_dev(0),
            Net::Broadcast => "br0".to_string(),
        }
    }

    fn router_dev(&self, k: usize) -> String {
        format!("veth{k}")
    }

    pub(crate) fn speaker_addr(&self, k: usize) -> String {
        match self.net {
            Net::PointToPoint => "172.31.250.2".to_string(),
            Net::Broadcast => format!("172.31.251.{}", k + 2),
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `args` in netns `ns` with stdout and stderr to `log` in the lab directory.
    pub(crate) fn spawn(&mut self, ns: &str, args: &[&str], log: &str, stdin: bool) -> usize {
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

    /// Starts BIRD with OSPF on the lab network (ECMP on, equal external routes from
    /// different ASBRs merged) and, with `export_static`, a static 203.0.113.0/24 exported
    /// as an AS-external route.
    pub(crate) fn start_router(&mut self, export_static: bool) {
        let kind = match self.net {
            Net::PointToPoint => "pointopoint",
            Net::Broadcast => "broadcast; wait 2",
        };
        let (statics, export) = if export_static {
            (
                "protocol static s4 { ipv4; route 203.0.113.0/24 blackhole; }\n",
                "export where proto = \"s4\";",
            )
        } else {
            ("", "export none;")
        };
        let conf = format!(
            "log stderr all;\nrouter id {rid};\nprotocol device {{ scan time 1; }}\n{statics}\
             protocol ospf v2 ospf1 {{\n  ecmp yes;\n  merge external yes;\n  ipv4 {{ import all; {export} }};\n  \
             area 0 {{ interface \"{iface}\" {{ type {kind}; hello {HELLO}; dead {DEAD}; retransmit {RETRANSMIT}; }}; }};\n}}\n",
            rid = self.router_addr(),
            iface = self.router_iface(),
        );
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
        let ctl = self.path("bird.ctl");
        self.wait("BIRD's control socket", Duration::from_secs(10), || {
            ctl.exists()
        });
    }

    /// Starts speaker `k` with `vips` on the command line; its log is `speaker{k}.log`.
    pub(crate) fn start_speaker(&mut self, k: usize, vips: &[&str]) -> usize {
        let kind = match self.net {
            Net::PointToPoint => "ptp",
            Net::Broadcast => "broadcast",
        };
        let iface = format!(
            "eth0,type={kind},hello={HELLO},dead={DEAD},retransmit={RETRANSMIT},priority=0,cost=10"
        );
        let rid = self.speaker_addr(k);
        let mut args = vec![BIN, "--router-id", &rid, "--interface", &iface];
        for v in vips {
            args.extend_from_slice(&["--vip", v]);
        }
        let ns = self.nodes[k].clone();
        self.spawn(&ns, &args, &format!("speaker{k}.log"), true)
    }

    pub(crate) fn birdc(&self, args: &[&str]) -> String {
        let ctl = self.path("bird.ctl").display().to_string();
        let mut cmd = vec!["birdc", "-s", &ctl];
        cmd.extend_from_slice(args);
        String::from_utf8_lossy(&sh(&cmd).stdout).into_owned()
    }

    /// How many of the router's OSPF neighbours are Full.
    pub(crate) fn full_neighbors(&self) -> usize {
        self.birdc(&["show", "ospf", "neighbors"])
            .lines()
            .filter(|l| l.contains("Full"))
            .count()
    }

    /// The router's route for `prefix` (the whole `show route` entry), if any.
    pub(crate) fn route(&self, prefix: &str) -> Option<String> {
        let out = self.birdc(&["show", "route", prefix]);
        let mut lines = out.lines().skip_while(|l| !l.starts_with(prefix));
        let first = lines.next()?;
        let rest: Vec<&str> = lines
            .take_while(|l| l.starts_with('\t'))
            .map(str::trim)
            .collect();
        Some(
            std::iter::once(first.trim())
                .chain(rest)
                .collect::<Vec<_>>()
                .join(" | "),
        )
    }

    /// The next hops of the router's route for `prefix`.
    pub(crate) fn next_hops(&self, prefix: &str) -> Vec<String> {
        self.route(prefix)
            .map(|r| {
                r.split(" | ")
                    .filter_map(|p| p.strip_prefix("via "))
                    .filter_map(|p| p.split_whitespace().next())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Polls `f` every 20 ms; panics with the router and speaker logs after `limit`.
    pub(crate) fn wait(
        &self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut() -> bool,
    ) -> Duration {
        let t = Instant::now();
        while !f() {
            if t.elapsed() > limit {
                self.fail(&format!("timed out after {limit:?} waiting for: {what}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        t.elapsed()
    }

    /// Panics with `what`, BIRD's view and the tails of the logs.
    pub(crate) fn fail(&self, what: &str) -> ! {
        let tail = |name: &str, n: usize| {
            let log = self.log(name);
            let lines: Vec<&str> = log.lines().rev().take(n).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        let mut speakers = String::new();
        for k in 0..self.nodes.len() {
            speakers += &format!(
                "--- speaker{k} log (tail) ---\n{}\n",
                tail(&format!("speaker{k}.log"), 40)
            );
        }
        panic!(
            "{what}\n--- BIRD: neighbors ---\n{}\n--- BIRD: lsadb ---\n{}\n--- BIRD: routes ---\n{}\n--- router log (tail) ---\n{}\n{speakers}",
            self.birdc(&["show", "ospf", "neighbors"]),
            self.birdc(&["show", "ospf", "lsadb"]),
            self.birdc(&["show", "route"]),
            tail("router.log", 30),
        );
    }

    pub(crate) fn command(&mut self, idx: usize, line: &str) {
        let stdin = self.children[idx].stdin.as_mut().expect("speaker stdin");
        writeln!(stdin, "{line}").expect("write to speaker");
    }

    /// Sends `signal` (e.g. "-TERM", "-KILL") to child `idx` by PID.
    pub(crate) fn signal(&self, idx: usize, signal: &str) {
        let pid = self.children[idx].id().to_string();
        must(&["kill", signal, &pid]);
    }
}
