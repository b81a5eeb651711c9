//! `novaedge-vip-bgp`: runs the BGP VIP driver on its own, for labs and interop tests.
//!
//! ```text
//! novaedge-vip-bgp --local-as 64513 --router-id 10.0.0.2 \
//!     --peer 10.0.0.1,64512 --peer fd00::1,64512,port=179 [--listen 0.0.0.0:179] \
//!     [--hold 3] [--keepalive 1] [--connect-retry-ms 500] [--vip 192.0.2.10]...
//! ```
//!
//! Peer options after the address and AS: `port=N`, `passive`, `local=IP`, `nh4=IP`, `nh6=IP`,
//! and the TCP-MD5 password as `password=SECRET` (no commas; visible in `ps`) or
//! `password-file=PATH` (the file's first line).
//! Commands on stdin, one per line: `assign IP`, `unassign IP`, `status`, `shutdown`. Each
//! command is answered on stdout (`ok`, status lines, or `error: ...`). SIGTERM and SIGINT
//! shut down gracefully (withdraw, then NOTIFICATION Cease) like `shutdown`.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool talks on stdout"
)]
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::Duration;

use novaedge_vip::VipDriver;
use novaedge_vip::bgp::{BgpConfig, BgpDriver, PeerConfig};

fn parse_args(args: &[String]) -> Result<(BgpConfig, Vec<IpAddr>), String> {
    let mut local_as = None;
    let mut router_id = None;
    let mut peers = Vec::new();
    let mut vips = Vec::new();
    let mut hold = None;
    let mut keepalive = None;
    let mut retry = None;
    let mut listen = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let bad = |v: &str| format!("{flag}: invalid value {v:?}");
        match flag.as_str() {
            "--local-as" => {
                let v = value()?;
                local_as = Some(v.parse::<u32>().map_err(|_| bad(&v))?);
            }
            "--router-id" => {
                let v = value()?;
                router_id = Some(v.parse().map_err(|_| bad(&v))?);
            }
            "--hold" => {
                let v = value()?;
                hold = Some(v.parse::<u16>().map_err(|_| bad(&v))?);
            }
            "--keepalive" => {
                let v = value()?;
                keepalive = Some(v.parse::<u16>().map_err(|_| bad(&v))?);
            }
            "--connect-retry-ms" => {
                let v = value()?;
                retry = Some(Duration::from_millis(v.parse().map_err(|_| bad(&v))?));
            }
            "--listen" => {
                let v = value()?;
                listen = Some(v.parse().map_err(|_| bad(&v))?);
            }
            "--vip" => {
                let v = value()?;
                vips.push(v.parse().map_err(|_| bad(&v))?);
            }
            "--peer" => {
                let v = value()?;
                peers.push(parse_peer(&v).map_err(|e| format!("--peer {v}: {e}"))?);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let local_as = local_as.ok_or("--local-as is required")?;
    let router_id = router_id.ok_or("--router-id is required")?;
    let mut cfg = BgpConfig::new(local_as, router_id);
    if let Some(h) = hold {
        cfg.hold_time = h;
    }
    cfg.keepalive = keepalive;
    if let Some(r) = retry {
        cfg.connect_retry = r;
        cfg.max_connect_retry = r * 8;
    }
    cfg.listen = listen;
    cfg.peers = peers;
    Ok((cfg, vips))
}

fn parse_peer(s: &str) -> Result<PeerConfig, String> {
    let mut parts = s.split(',');
    let addr: IpAddr = parts
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|_| "bad address")?;
    let asn: u32 = parts
        .next()
        .ok_or("missing AS")?
        .parse()
        .map_err(|_| "bad AS")?;
    let mut p = PeerConfig::new(addr, asn);
    for opt in parts {
        match opt.split_once('=') {
            None if opt == "passive" => p.passive = true,
            Some(("port", v)) => p.port = v.parse().map_err(|_| "bad port")?,
            Some(("local", v)) => p.local_addr = Some(v.parse().map_err(|_| "bad local address")?),
            Some(("nh4", v)) => p.next_hop_v4 = Some(v.parse().map_err(|_| "bad nh4")?),
            Some(("nh6", v)) => p.next_hop_v6 = Some(v.parse().map_err(|_| "bad nh6")?),
            Some(("password", v)) => p.password = Some(v.to_string()),
            Some(("password-file", path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("password-file {path}: {e}"))?;
                p.password = Some(text.lines().next().unwrap_or_default().to_string());
            }
            _ => return Err(format!("unknown peer option {opt:?}")),
        }
    }
    Ok(p)
}

fn print_status(driver: &BgpDriver) {
    let s = driver.status();
    for p in &s.peers {
        let announced: Vec<String> = p.announced.iter().map(|a| a.to_string()).collect();
        println!(
            "peer {} as={} state={:?} hold={} established={} announced=[{}] last_error={}",
            p.addr,
            p.remote_as,
            p.state,
            p.hold_time.map_or("-".to_string(), |h| h.to_string()),
            p.established_count,
            announced.join(" "),
            p.last_error.as_deref().unwrap_or("-"),
        );
    }
    for (vip, state) in &s.vips {
        println!("vip {vip} {state:?}");
    }
    println!("end");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    novaedge_vip::lab::main(
        "novaedge-vip-bgp",
        parse_args,
        BgpDriver::start,
        print_status,
    )
    .await
}
