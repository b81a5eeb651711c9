//! `novaedge-vip-l2`: runs the L2 VIP driver on its own, for labs and the namespace tests.
//!
//! ```text
//! novaedge-vip-l2 --interface eth0 [--count 3] [--interval-ms 500] [--garp-reply]
//!     [--lease-s 3 | --no-lease] [--set-arp-sysctls] [--vip 198.51.100.100]...
//! ```
//!
//! Commands on stdin, one per line: `assign IP`, `unassign IP`, `status`, `shutdown`. Each
//! command is answered on stdout (`ok`, status lines ending with `end`, or `error: ...`).
//! SIGTERM and SIGINT shut down like `shutdown` (the addresses it added are removed).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool talks on stdout"
)]
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::Duration;

use novaedge_vip::VipDriver;
use novaedge_vip::l2::{L2Config, L2Driver};

fn parse_args(args: &[String]) -> Result<(L2Config, Vec<IpAddr>), String> {
    let mut cfg = L2Config::new("");
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
            "--interface" => cfg.interface = value()?,
            "--count" => {
                let v = value()?;
                cfg.announce_count = v.parse().map_err(|_| bad(&v))?;
            }
            "--interval-ms" => {
                let v = value()?;
                cfg.announce_interval = Duration::from_millis(v.parse().map_err(|_| bad(&v))?);
            }
            "--lease-s" => {
                let v = value()?;
                cfg.address_lease = Some(Duration::from_secs(v.parse().map_err(|_| bad(&v))?));
            }
            "--no-lease" => cfg.address_lease = None,
            "--garp-reply" => cfg.garp_reply = true,
            "--set-arp-sysctls" => cfg.set_arp_sysctls = true,
            "--vip" => {
                let v = value()?;
                vips.push(v.parse().map_err(|_| bad(&v))?);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if cfg.interface.is_empty() {
        return Err("--interface is required".into());
    }
    Ok((cfg, vips))
}

fn print_status(driver: &L2Driver) {
    let s = driver.status();
    for w in &s.warnings {
        println!("warning {w}");
    }
    for (vip, state) in &s.vips {
        let d = s.l2.get(vip).cloned().unwrap_or_default();
        println!(
            "vip {vip} {state:?} interface={} added={} pre_existing={} announcements={} last_error={}",
            d.interface,
            d.added,
            d.pre_existing,
            d.announcements,
            d.last_error.as_deref().unwrap_or("-"),
        );
    }
    println!("end");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    novaedge_vip::lab::main("novaedge-vip-l2", parse_args, L2Driver::start, print_status).await
}
