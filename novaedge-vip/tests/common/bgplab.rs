//! The BGP lab of the namespace tests (`interop.rs`, `md5.rs`, `capture.rs`): a router (GoBGP
//! or BIRD 2) in netns `…r`, our speaker (the `novaedge-vip-bgp` binary) in netns `…n`, joined
//! by a veth pair carrying IPv4 and IPv6, with one BGP session per address family.
//!
//! Dropping the [`Lab`] kills every process it started (by PID) and deletes the namespaces.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use super::{must, sh};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_novaedge-vip-bgp");
pub(crate) const RTR_V4: &str = "172.31.255.1";
pub(crate) const NODE_V4: &str = "172.31.255.2";
pub(crate) const RTR_V6: &str = "fd00:31::1";
pub(crate) const NODE_V6: &str = "fd00:31::2";
pub(crate) const VIP4: &str = "192.0.2.10";
pub(crate) const VIP6: &str = "2001:db8::10";
pub(crate) const PFX4: &str = "192.0.2.10/32";
pub(crate) const PFX6: &str = "2001:db8::10/128";
pub(crate) const RTR_AS: u32 = 64512;
pub(crate) const HOLD: u64 = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Router {
    Gobgp,
    Bird,
}

/// How the router is configured.
#[derive(Clone, Debug, Default)]
pub(crate) struct RouterOpts {
    /// TCP-MD5 password on both sessions.
    pub(crate) password: Option<String>,
    /// The router connects on the IPv6 session (the speaker is passive there); on IPv4 the
    /// router is always passive.
    pub(crate) active_v6: bool,
    /// Turn on the optional capabilities the router supports (graceful restart, add-path,
    /// extended messages, hostname, ...) and export a few routes, for the message captures.
    pub(crate) rich: bool,
}

/// How the speaker is started.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpeakerOpts {
    /// TCP-MD5 password on both sessions.
    pub(crate) password: Option<String>,
    /// Wait for the router on the IPv6 session (listening on `[::]:179`).
    pub(crate) passive_v6: bool,
}

pub(crate) fn require_tools() {
    super::require_root_and_tools(
        "the BGP interop tests",
        &["ip", "gobgpd", "gobgp", "bird", "birdc"],
        "gobgpd, bird2, iproute2",
    );
}

pub(crate) struct Lab {
    pub(crate) rtr: String,
    pub(crate) node: String,
    dir: tempfile::TempDir,
    pub(crate) router: Router,
    pub(crate) children: Vec<Child>,
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
    pub(crate) fn new(tag: &str, router: Router) -> Lab {
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

    pub(crate) fn start_router(&mut self, node_as: u32) {
        self.start_router_with(node_as, &RouterOpts::default());
    }

    pub(crate) fn start_router_with(&mut self, node_as: u32, opts: &RouterOpts) {
        match self.router {
            Router::Gobgp => {
                let mut conf = format!(
                    "[global.config]\n  as = {RTR_AS}\n  router-id = \"{RTR_V4}\"\n  local-address-list = [\"{RTR_V4}\", \"{RTR_V6}\"]\n"
                );
                for (addr, fam, v6) in [
                    (NODE_V4, "ipv4-unicast", false),
                    (NODE_V6, "ipv6-unicast", true),
                ] {
                    let passive = !(v6 && opts.active_v6);
                    conf += &format!(
                        "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{addr}\"\n    peer-as = {node_as}\n"
                    );
                    if let Some(pw) = &opts.password {
                        conf += &format!("    auth-password = \"{pw}\"\n");
                    }
                    conf += &format!(
                        "  [neighbors.transport.config]\n    passive-mode = {passive}\n  [neighbors.timers.config]\n    hold-time = {HOLD}\n    \
                         keepalive-interval = 1\n    connect-retry = 1\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{fam}\"\n"
                    );
                    if opts.rich {
                        conf += "    [neighbors.afi-safis.add-paths.config]\n      receive = true\n      send-max = 2\n    \
                                 [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n  \
                                 [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 120\n";
                    }
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
                if opts.rich {
                    conf += "hostname \"rtr-bird\";\n";
                    conf += "protocol static s4 { ipv4; route 198.51.100.0/24 blackhole; }\n\
                             protocol static s6 { ipv6; route 2001:db8:100::/48 blackhole; }\n";
                }
                for (name, local, addr, fam, v6) in [
                    ("n4", RTR_V4, NODE_V4, "ipv4", false),
                    ("n6", RTR_V6, NODE_V6, "ipv6", true),
                ] {
                    let passive = if v6 && opts.active_v6 { "off" } else { "on" };
                    let mut extra = String::new();
                    if let Some(pw) = &opts.password {
                        extra += &format!("  password \"{pw}\";\n");
                    }
                    let mut channel = "import all; export none;".to_string();
                    if opts.rich {
                        extra += "  graceful restart on; long lived graceful restart on;\n  \
                                  enable extended messages on; advertise hostname on;\n";
                        channel = "import all; export where source = RTS_STATIC; add paths on;"
                            .to_string();
                    }
                    conf += &format!(
                        "protocol bgp {name} {{\n  local {local} as {RTR_AS};\n  neighbor {addr} as {node_as};\n  passive {passive};\n  \
                         hold time {HOLD}; keepalive time 1;\n  connect delay time 1; connect retry time 1; error wait time 1, 2;\n{extra}  \
                         {fam} {{ {channel} }};\n}}\n"
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

    /// Runs a command in the router's namespace and returns its stdout.
    pub(crate) fn rtr(&self, args: &[&str]) -> String {
        let mut cmd = vec!["ip", "netns", "exec", &self.rtr];
        cmd.extend_from_slice(args);
        let out = sh(&cmd);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn birdc(&self, args: &[&str]) -> String {
        let ctl = self.path("bird.ctl").display().to_string();
        let mut cmd = vec!["birdc", "-s", &ctl];
        cmd.extend_from_slice(args);
        String::from_utf8_lossy(&sh(&cmd).stdout).into_owned()
    }

    /// Whether the router's session on the IPv4 or IPv6 transport is Established.
    pub(crate) fn established(&self, v6: bool) -> bool {
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
    pub(crate) fn route(&self, prefix: &str) -> Option<String> {
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

    pub(crate) fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Polls `f` every 50 ms; panics with the router and speaker logs after `limit`.
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
            std::thread::sleep(Duration::from_millis(50));
        }
        t.elapsed()
    }

    /// Panics with `what` and the tail of the router log and the speaker log.
    pub(crate) fn fail(&self, what: &str) -> ! {
        let router_log = self.log("router.log");
        let tail: Vec<&str> = router_log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{what}\n--- router log (tail) ---\n{}\n--- speaker log ---\n{}",
            tail.join("\n"),
            self.log("speaker.log")
        );
    }

    pub(crate) fn start_speaker(&mut self, node_as: u32, vips: &[&str]) -> usize {
        self.start_speaker_with(node_as, vips, &SpeakerOpts::default())
    }

    pub(crate) fn start_speaker_with(
        &mut self,
        node_as: u32,
        vips: &[&str],
        opts: &SpeakerOpts,
    ) -> usize {
        let bin = BIN.to_string();
        let mut peer4 = format!("{RTR_V4},{RTR_AS}");
        let mut peer6 = format!("{RTR_V6},{RTR_AS}");
        if let Some(pw) = &opts.password {
            let file = self.path("peer.password");
            std::fs::write(&file, format!("{pw}\n")).expect("write password file");
            let opt = format!(",password-file={}", file.display());
            peer4 += &opt;
            peer6 += &opt;
        }
        if opts.passive_v6 {
            peer6 += ",passive";
        }
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
        if opts.passive_v6 {
            args.extend_from_slice(&["--listen", "[::]:179"]);
        }
        for v in vips {
            args.extend_from_slice(&["--vip", v]);
        }
        let ns = self.node.clone();
        self.spawn(&ns, &args, "speaker.log", true)
    }

    pub(crate) fn stdin(&mut self, idx: usize) -> &mut ChildStdin {
        self.children[idx].stdin.as_mut().expect("speaker stdin")
    }

    pub(crate) fn command(&mut self, idx: usize, line: &str) {
        writeln!(self.stdin(idx), "{line}").expect("write to speaker");
    }

    /// Stops child `idx` (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self, idx: usize) {
        let _ = self.children[idx].kill();
        let _ = self.children[idx].wait();
    }
}
