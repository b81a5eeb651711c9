//! `novaedge-vip-ospf`: runs the OSPF VIP driver on its own, for labs and interop tests.
//!
//! ```text
//! novaedge-vip-ospf --router-id 10.0.0.2 [--area 0.0.0.0] [--metric 20] \
//!     --interface eth0,type=ptp|broadcast,hello=1,dead=4,retransmit=2,priority=0,cost=10 \
//!     [--interface ...] [--vip 198.51.100.10]...
//! ```
//!
//! Interface options after the name (all optional): `type=broadcast` (default) or `ptp`,
//! `hello=S` (10), `dead=S` (40), `retransmit=S` (5), `priority=N` (0), `cost=N` (10).
//! Commands on stdin, one per line: `assign IP`, `unassign IP`, `status`, `shutdown`. Each
//! command is answered on stdout (`ok`, status lines ending with `end`, or `error: ...`).
//! SIGTERM and SIGINT shut down gracefully (flush every LSA, then a last Hello) like
//! `shutdown`.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool talks on stdout"
)]
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::Duration;

use novaedge_vip::VipDriver;
use novaedge_vip::ospf::{OspfConfig, OspfDriver, OspfInterfaceConfig, OspfNetwork};

fn parse_args(args: &[String]) -> Result<(OspfConfig, Vec<IpAddr>), String> {
    let mut router_id = None;
    let mut area = std::net::Ipv4Addr::UNSPECIFIED;
    let mut metric = None;
    let mut interfaces = Vec::new();
    let mut vips = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let bad = |v: &str| format!("{flag}: invalid value {v:?}");
        match flag.as_str() {
            "--router-id" => {
                let v = value()?;
                router_id = Some(v.parse().map_err(|_| bad(&v))?);
            }
            "--area" => {
                let v = value()?;
                area = v.parse().map_err(|_| bad(&v))?;
            }
            "--metric" => {
                let v = value()?;
                metric = Some(v.parse::<u32>().map_err(|_| bad(&v))?);
            }
            "--interface" => {
                let v = value()?;
                interfaces.push(parse_interface(&v).map_err(|e| format!("--interface {v}: {e}"))?);
            }
            "--vip" => {
                let v = value()?;
                vips.push(v.parse().map_err(|_| bad(&v))?);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let router_id = router_id.ok_or("--router-id is required")?;
    let mut cfg = OspfConfig::new(router_id, area);
    if let Some(m) = metric {
        cfg.external_metric = m;
    }
    cfg.interfaces = interfaces;
    Ok((cfg, vips))
}

fn parse_interface(s: &str) -> Result<OspfInterfaceConfig, String> {
    let mut parts = s.split(',');
    let name = parts.next().unwrap_or_default();
    if name.is_empty() {
        return Err("missing interface name".into());
    }
    let mut c = OspfInterfaceConfig::new(name, OspfNetwork::Broadcast);
    let secs = |v: &str, what: &str| -> Result<Duration, String> {
        v.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("bad {what} {v:?} (seconds)"))
    };
    for opt in parts {
        match opt.split_once('=') {
            Some(("type", "ptp" | "pointopoint" | "point-to-point")) => {
                c.network = OspfNetwork::PointToPoint;
            }
            Some(("type", "broadcast")) => c.network = OspfNetwork::Broadcast,
            Some(("hello", v)) => c.hello_interval = secs(v, "hello")?,
            Some(("dead", v)) => c.dead_interval = secs(v, "dead")?,
            Some(("retransmit", v)) => c.retransmit_interval = secs(v, "retransmit")?,
            Some(("priority", v)) => c.priority = v.parse().map_err(|_| "bad priority")?,
            Some(("cost", v)) => c.cost = v.parse().map_err(|_| "bad cost")?,
            _ => return Err(format!("unknown interface option {opt:?}")),
        }
    }
    Ok(c)
}

fn print_status(driver: &OspfDriver) {
    let s = driver.status();
    for i in &s.ospf {
        println!(
            "interface {} {}/{} state={:?} dr={} bdr={} rx={} tx={} malformed={} auth_dropped={} mismatched={} last_problem={}",
            i.name,
            i.address,
            i.prefix_len,
            i.state,
            i.dr,
            i.bdr,
            i.counters.rx_packets,
            i.counters.tx_packets,
            i.counters.rx_malformed,
            i.counters.rx_auth_dropped,
            i.counters.rx_mismatched,
            i.last_problem.as_deref().unwrap_or("-"),
        );
        for n in &i.neighbors {
            println!(
                "neighbor {} router_id={} address={} state={:?} priority={} dr={} bdr={}",
                i.name, n.router_id, n.address, n.state, n.priority, n.dr, n.bdr
            );
        }
    }
    for (vip, state) in &s.vips {
        println!("vip {vip} {state:?}");
    }
    for w in &s.warnings {
        println!("warning {w}");
    }
    println!("end");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    novaedge_vip::lab::main(
        "novaedge-vip-ospf",
        parse_args,
        OspfDriver::start,
        print_status,
    )
    .await
}
