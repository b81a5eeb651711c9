//! The distributed mode end to end on 127.0.0.1, without a cluster: `novaedge controller
//! --source files:DIR` and two `novaedge agent`s (binding 127.0.0.1 and 127.0.0.2), over mutual
//! TLS with certificates from `novaedge certs`.
//!
//! A file change reaches both agents; an agent whose certificate names another node is refused;
//! a snapshot one agent cannot apply is NACKed there while it keeps serving the previous one;
//! with the controller killed both agents keep serving, an agent restarted meanwhile serves its
//! cached snapshot, and a restarted controller resyncs them. Both exit cleanly on SIGTERM.

// The propagation times are reported on stderr (visible with --nocapture).
#![allow(clippy::print_stderr)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use novaedge_echo::EchoServer;

const AGENTS: [(&str, [u8; 4]); 2] = [("node-a", [127, 0, 0, 1]), ("node-b", [127, 0, 0, 2])];

/// The Gateway on `port` (and `extra_port`, if any) and one HTTPRoute per `(path, service)`.
fn config(port: u16, extra_port: Option<u16>, routes: &[(&str, &str)]) -> String {
    let mut listeners = format!("    - {{name: http, protocol: HTTP, port: {port}}}\n");
    if let Some(extra) = extra_port {
        listeners.push_str(&format!(
            "    - {{name: extra, protocol: HTTP, port: {extra}}}\n"
        ));
    }
    let mut out = format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: t}}
spec:
  gatewayClassName: novaedge
  listeners:
{listeners}"
    );
    let rules: String = routes
        .iter()
        .map(|(path, service)| {
            format!(
                "    - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n      \
                 backendRefs: [{{name: {service}, port: 80}}]\n"
            )
        })
        .collect();
    out.push_str(&format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: t}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
{rules}"
    ));
    out
}

/// Writes the configuration the way editors do: a new file renamed over the old one.
fn write(dir: &Path, text: &str) {
    let tmp = dir.join(".app.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join("app.yaml")).unwrap();
}

fn backend_name(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    Some(v["name"].as_str()?.to_owned())
}

/// Which backend answers `path` on `addr`; `None` for no answer or not a 200.
async fn answered_by(addr: SocketAddr, path: &str) -> Option<String> {
    match get(addr, "app.test", path).await {
        Ok((200, body)) => backend_name(&body),
        _ => None,
    }
}

/// Polls until every address answers `path` from `backend`; returns how long it took.
async fn wait_served(addrs: &[SocketAddr], path: &str, backend: &str) -> Duration {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(20);
    for addr in addrs {
        loop {
            if answered_by(*addr, path).await.as_deref() == Some(backend) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{addr}{path} never answered from {backend} (now: {:?})",
                answered_by(*addr, path).await
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    start.elapsed()
}

struct Cluster {
    dir: tempfile::TempDir,
    controller_port: u16,
    admin_port: u16,
}

impl Cluster {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn controller(&self) -> Proxy {
        let controller = Proxy::start(&[
            "controller",
            "--fencing-delay",
            "1s",
            "--source",
            &format!("files:{}", self.path("conf")),
            "--listen",
            &format!("127.0.0.1:{}", self.controller_port),
            "--tls-cert",
            &self.path("certs/controller.crt"),
            "--tls-key",
            &self.path("certs/controller.key"),
            "--tls-ca",
            &self.path("certs/ca.crt"),
            "--admin-addr",
            &format!("127.0.0.1:{}", self.admin_port),
        ]);
        controller.wait_log("serving snapshots", 0);
        controller
    }

    /// An agent for `node` binding `bind`, authenticating with the certificate of `cert_node`.
    fn agent(&self, node: &str, cert_node: &str, bind: IpAddr) -> Proxy {
        Proxy::start(&[
            "agent",
            "--controller",
            &format!("https://127.0.0.1:{}", self.controller_port),
            "--node",
            node,
            "--bind",
            &bind.to_string(),
            "--tls-cert",
            &self.path(&format!("certs/agent-{cert_node}.crt")),
            "--tls-key",
            &self.path(&format!("certs/agent-{cert_node}.key")),
            "--tls-ca",
            &self.path("certs/ca.crt"),
            "--cache",
            &self.path(&format!("{node}.cache")),
        ])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_streams_snapshots_to_agents_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = std::process::Command::new(BIN)
        .args(["certs", "--out"])
        .arg(dir.path().join("certs"))
        .args(["node-a", "node-b"])
        .output()
        .unwrap();
    assert!(certs.status.success(), "{certs:?}");
    let v1 = EchoServer::start("127.0.0.1:0".parse().unwrap(), "v1")
        .await
        .unwrap();
    let v2 = EchoServer::start("127.0.0.1:0".parse().unwrap(), "v2")
        .await
        .unwrap();
    let services = format!(
        "{}---\n{}",
        service("v1", v1.local_addr().port()),
        service("v2", v2.local_addr().port())
    );
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("services.yaml"), &services).unwrap();
    let port = free_port();
    write(&conf, &config(port, None, &[("/", "v1")]));
    let cluster = Cluster {
        dir,
        controller_port: free_port(),
        admin_port: free_port(),
    };
    let addrs: Vec<SocketAddr> = AGENTS
        .iter()
        .map(|(_, ip)| SocketAddr::from((*ip, port)))
        .collect();

    let mut controller = cluster.controller();
    let mut agents: Vec<Proxy> = AGENTS
        .iter()
        .map(|(node, ip)| cluster.agent(node, node, IpAddr::from(*ip)))
        .collect();
    wait_served(&addrs, "/", "v1").await;
    controller.wait_log("snapshot applied node=\"node-a\"", 0);
    controller.wait_log("snapshot applied node=\"node-b\"", 0);

    // An agent whose certificate is node-a's cannot get node-c's snapshot.
    let impostor = cluster.agent("node-c", "node-a", IpAddr::from([127, 0, 0, 3]));
    impostor.wait_log(
        "the client certificate is for node \\\"node-a\\\", not \\\"node-c\\\"",
        0,
    );
    controller.wait_log("refused node=\"node-c\"", 0);
    drop(impostor);

    // File changes reach both agents. 20 changes give the propagation time's median.
    let mut times = Vec::new();
    for i in 0..20 {
        let path = format!("/change-{i}");
        write(&conf, &config(port, None, &[("/", "v1"), (&path, "v2")]));
        times.push(wait_served(&addrs, &path, "v2").await);
    }
    times.sort();
    eprintln!(
        "file change -> new route served on both agents: median {:?}, max {:?} (20 changes)",
        times[times.len() / 2],
        times[times.len() - 1]
    );

    // A snapshot node-b cannot apply (its port is taken there) is NACKed by node-b, applied by
    // node-a; node-b keeps serving the previous snapshot.
    let extra = free_port();
    let _taken = std::net::TcpListener::bind(("127.0.0.2", extra)).unwrap();
    let mark = controller.log_len();
    write(
        &conf,
        &config(port, Some(extra), &[("/", "v1"), ("/nacked", "v2")]),
    );
    wait_served(&addrs[..1], "/nacked", "v2").await;
    controller.wait_log("snapshot refused by the agent node=\"node-b\"", mark);
    // The refusal shows in the controller's metrics and in its view of the agents.
    let admin = SocketAddr::from(([127, 0, 0, 1], cluster.admin_port));
    let (status, metrics) = get(admin, "admin", "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("novaedge_config_pushes_total{result=\"nack\"} ")),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l == "novaedge_agents_connected 2"),
        "{metrics}"
    );
    let reconciled = "novaedge_reconciliation_duration_seconds_count ";
    assert!(
        metrics.lines().any(|l| l.starts_with(reconciled)),
        "{metrics}"
    );
    promtool_accepts(&metrics);
    let (_, view) = get(admin, "admin", "/agents").await.unwrap();
    let view: serde_json::Value = serde_json::from_str(&view).unwrap();
    assert!(
        view["node-b"]["nacked"]["error"]
            .as_str()
            .is_some_and(|e| e.contains(&extra.to_string())),
        "{view}"
    );
    assert!(view["node-a"]["nacked"].is_null(), "{view}");
    let (_, dump) = get(admin, "admin", "/config_dump").await.unwrap();
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert!(
        dump["default"]["routes"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{dump}"
    );
    assert!(dump["node_versions"]["node-b"].is_u64(), "{dump}");
    assert_eq!(
        answered_by(addrs[1], "/nacked").await.as_deref(),
        Some("v1")
    );
    assert_eq!(
        answered_by(addrs[1], "/change-19").await.as_deref(),
        Some("v2")
    );
    write(
        &conf,
        &config(port, None, &[("/", "v1"), ("/nacked", "v2")]),
    );
    wait_served(&addrs, "/nacked", "v2").await;

    // Per-node snapshots: a Gateway limited to nodes labelled role=edge (node-a, by its Node
    // object) is served by node-a only.
    let edge_port = free_port();
    std::fs::write(
        conf.join("edge.yaml"),
        format!(
            "apiVersion: v1
kind: Node
metadata: {{name: node-a, labels: {{role: edge}}}}
---
apiVersion: v1
kind: Node
metadata: {{name: node-b}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: t
  annotations: {{novaedge.io/node-selector: role=edge}}
spec:
  gatewayClassName: novaedge
  listeners: [{{name: http, protocol: HTTP, port: {edge_port}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: edge, namespace: t}}
spec:
  parentRefs: [{{name: edge}}]
  rules: [{{backendRefs: [{{name: v2, port: 80}}]}}]
"
        ),
    )
    .unwrap();
    let edge_addrs: Vec<SocketAddr> = AGENTS
        .iter()
        .map(|(_, ip)| SocketAddr::from((*ip, edge_port)))
        .collect();
    wait_served(&edge_addrs[..1], "/", "v2").await;
    controller.wait_log("node snapshot published node=\"node-b\"", 0);
    // node-b applied its snapshot (without the edge listener) and still serves the rest.
    wait_served(&addrs, "/nacked", "v2").await;
    assert!(
        tokio::net::TcpStream::connect(edge_addrs[1]).await.is_err(),
        "node-b must not listen on the edge Gateway's port"
    );
    std::fs::remove_file(conf.join("edge.yaml")).unwrap();

    // Without the controller, both agents keep serving; node-a restarted serves its cache.
    controller.child.kill().unwrap();
    controller.wait_exit();
    agents[0].child.kill().unwrap();
    agents[0].wait_exit();
    agents[0] = cluster.agent("node-a", "node-a", IpAddr::from(AGENTS[0].1));
    agents[0].wait_log("serving the cached snapshot", 0);
    wait_served(&addrs, "/nacked", "v2").await;

    // A change made while the controller is down arrives when it is back.
    write(&conf, &config(port, None, &[("/", "v2")]));
    let mut controller = cluster.controller();
    wait_served(&addrs, "/", "v2").await;

    // SIGTERM: the controller ends the agents' streams and exits; the agents drain and exit.
    controller.terminate();
    assert!(controller.wait_exit().success());
    for agent in &mut agents {
        agent.terminate();
        assert!(agent.wait_exit().success());
    }
}

/// The VIPs in node `node`'s cached snapshot (what its agent last applied), by name.
fn cached_vips(cluster: &Cluster, node: &str) -> Vec<String> {
    let bytes = std::fs::read(cluster.dir.path().join(format!("{node}.cache"))).unwrap_or_default();
    novaedge_snapshot::ConfigSnapshot::decode(&bytes)
        .map(|s| s.vips.into_iter().map(|v| v.name).collect())
        .unwrap_or_default()
}

/// Polls until node `node` runs exactly the VIPs `want`; returns how long it took.
async fn wait_vips(cluster: &Cluster, node: &str, want: &[&str]) -> Duration {
    let start = Instant::now();
    loop {
        let have = cached_vips(cluster, node);
        if have == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{node} runs VIPs {have:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// VIP placement by the controller: an L2 VIP on exactly one node, a BGP VIP on every node; the
/// L2 VIP moves when its holder dies (after the fencing delay), and does not move back when the
/// holder returns.
///
/// The agents run on this machine, outside any network namespace, so the VIPs are made such
/// that holding them sends nothing anywhere: the L2 interface does not exist, and the BGP peer
/// is a closed port on 127.0.0.1. The agents try, and say why they cannot. Holding VIPs for
/// real is tested in network namespaces (`tests/vip_l2.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_places_vips_and_moves_an_l2_vip_off_a_dead_node() {
    let dir = tempfile::tempdir().unwrap();
    let certs = std::process::Command::new(BIN)
        .args(["certs", "--out"])
        .arg(dir.path().join("certs"))
        .args(["node-a", "node-b"])
        .output()
        .unwrap();
    assert!(certs.status.success(), "{certs:?}");
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("vips.yaml"),
        "apiVersion: novaedge.io/v1alpha1
kind: ProxyVIP
metadata: {name: web, namespace: t}
spec:
  addresses: [192.0.2.10]
  mode: L2
  interface: ne-absent0
---
apiVersion: novaedge.io/v1alpha1
kind: ProxyVIP
metadata: {name: api, namespace: t}
spec:
  addresses: [192.0.2.20]
  mode: BGP
  bgp:
    localASN: 64512
    peers: [{address: 127.0.0.1, port: BGP_PORT, asn: 64500}]
"
        .replace("BGP_PORT", &free_port().to_string()),
    )
    .unwrap();
    write(&conf, &config(free_port(), None, &[]));
    let cluster = Cluster {
        dir,
        controller_port: free_port(),
        admin_port: free_port(),
    };
    let controller = cluster.controller();
    let mut a = cluster.agent("node-a", "node-a", IpAddr::from(AGENTS[0].1));
    wait_vips(&cluster, "node-a", &["t/api", "t/web"]).await;
    a.wait_log(
        "L2 VIPs on ne-absent0: interface \"ne-absent0\": no such interface",
        0,
    );
    let _b = cluster.agent("node-b", "node-b", IpAddr::from(AGENTS[1].1));
    wait_vips(&cluster, "node-b", &["t/api"]).await;

    // node-a dies: after the fencing delay node-b holds the L2 VIP.
    a.child.kill().unwrap();
    a.wait_exit();
    let moved = wait_vips(&cluster, "node-b", &["t/api", "t/web"]).await;
    // The fencing delay counts from when node-a was last heard of (its last heartbeat, up to
    // one heartbeat interval before the kill), so this is between 0 and 1 s plus delivery.
    eprintln!("L2 VIP moved {moved:?} after its holder was killed (fencing delay 1s)");
    controller.wait_log(
        "L2 VIP assigned vip=\"t/web\" node=\"node-b\" from=\"node-a\"",
        0,
    );
    let admin = SocketAddr::from(([127, 0, 0, 1], cluster.admin_port));
    let (_, metrics) = get(admin, "admin", "/metrics").await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "novaedge_vip_failovers_total 1"),
        "{metrics}"
    );

    // node-a returns: it announces the BGP VIP again, and node-b keeps the L2 VIP.
    let _a = cluster.agent("node-a", "node-a", IpAddr::from(AGENTS[0].1));
    controller.wait_log("agent subscribed node=\"node-a\"", 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_vips(&cluster, "node-a", &["t/api"]).await;
    assert_eq!(cached_vips(&cluster, "node-b"), ["t/api", "t/web"]);
}
