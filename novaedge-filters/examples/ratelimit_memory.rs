//! Pushes a million distinct keys through a rate limiter and prints the process's peak
//! resident memory (`VmHWM` in `/proc/self/status`, Linux) before and after, with the key
//! store's counts: the store holds at most `max_keys` keys, so memory stops growing there.
//!
//! ```text
//! cargo run --release -p novaedge-filters --example ratelimit_memory -- [options]
//!   --keys N       distinct keys to send (default 1000000)
//!   --max-keys N   the limiter's key cap (default 100000, the crate default)
//!   --key ip|header|ipv6
//!                  client IPv4 addresses, an `x-api-key` header value (hashed when
//!                  stored), or IPv6 clients each in their own /64 (default ip)
//! ```
//!
//! The quota is 1 request a minute with a burst of 10, so no key refills during the run and
//! every key past the cap pushes out a least recently used one: the worst case for the store.

// An example's job is to print its figures.
#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use novaedge_filters::ClientAddr;
use novaedge_filters::ratelimit::{KeySource, RateLimitConfig, RateLimitLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

/// A `Vm*` figure from `/proc/self/status`, in KiB.
fn vm_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "n/a".to_owned(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ipv4,
    Ipv6,
    Header,
}

fn request(kind: Kind, i: u32) -> Request<()> {
    match kind {
        Kind::Ipv4 => {
            let mut req = Request::new(());
            let addr = SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i), 40000));
            req.extensions_mut().insert(ClientAddr(addr));
            req
        }
        Kind::Ipv6 => {
            // One client per /64: the interface bits are noise the limiter drops.
            let ip = (0x2001_0db8_u128 << 96) | (u128::from(i) << 64) | 0xdead_beef;
            let mut req = Request::new(());
            let addr = SocketAddr::from((Ipv6Addr::from(ip), 40000));
            req.extensions_mut().insert(ClientAddr(addr));
            req
        }
        Kind::Header => Request::builder()
            .header("x-api-key", format!("client-{i:08}-with-a-longish-api-key"))
            .body(())
            .unwrap_or_default(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut keys: u32 = 1_000_000;
    let mut max_keys: usize = novaedge_filters::ratelimit::DEFAULT_MAX_KEYS;
    let mut kind = Kind::Ipv4;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or_else(|| format!("{arg}: needs a value"))?;
        match arg.as_str() {
            "--keys" => keys = value.parse()?,
            "--max-keys" => max_keys = value.parse()?,
            "--key" => {
                kind = match value.as_str() {
                    "ip" => Kind::Ipv4,
                    "ipv6" => Kind::Ipv6,
                    "header" => Kind::Header,
                    other => return Err(format!("--key: unknown {other}").into()),
                }
            }
            other => return Err(format!("unknown option {other}").into()),
        }
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    runtime.block_on(async move {
        let key = match kind {
            Kind::Ipv4 | Kind::Ipv6 => KeySource::client_ip(),
            Kind::Header => KeySource::header(http::HeaderName::from_static("x-api-key")),
        };
        let layer = RateLimitLayer::new(
            RateLimitConfig::new(1, Duration::from_secs(60))
                .with_burst(10)
                .with_key(key)
                .with_max_keys(max_keys),
        )?;
        let mut svc = layer.layer(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));

        let hwm_before = vm_kib("VmHWM");
        println!(
            "before: VmHWM {}, VmRSS {}",
            mib(hwm_before),
            mib(vm_kib("VmRSS"))
        );

        let start = Instant::now();
        let mut peak_keys = 0;
        for i in 0..keys {
            let res = svc.ready().await?.call(request(kind, i)).await?;
            if res.status() != StatusCode::OK {
                return Err(format!("key {i}: {}", res.status()).into());
            }
            if i % 1024 == 0 {
                peak_keys = peak_keys.max(layer.stats().keys);
            }
        }
        let elapsed = start.elapsed();
        let stats = layer.stats();
        peak_keys = peak_keys.max(stats.keys);

        let hwm_after = vm_kib("VmHWM");
        println!(
            "after:  VmHWM {}, VmRSS {}",
            mib(hwm_after),
            mib(vm_kib("VmRSS"))
        );
        println!(
            "{keys} distinct keys in {elapsed:.2?} ({:.0} ns each): {} stored (cap {}, peak seen {peak_keys}), {} dropped refilled, {} evicted while limited",
            elapsed.as_nanos() as f64 / f64::from(keys),
            stats.keys,
            stats.max_keys,
            stats.expired,
            stats.evicted,
        );
        if let (Some(before), Some(after)) = (hwm_before, hwm_after)
            && stats.keys > 0
        {
            println!(
                "peak growth {} = {:.0} bytes per stored key",
                mib(Some(after - before)),
                (after - before) as f64 * 1024.0 / stats.keys as f64
            );
        }
        Ok(())
    })
}
