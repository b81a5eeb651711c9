//! Ports for tests that need one known before something binds it.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out.
const LOWEST: u16 = 10_000;

/// A port on 127.0.0.1 that was free a moment ago: for a listener a test names in a
/// configuration, or an address that refuses connections.
///
/// It is taken below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), which a
/// `bind` to port 0 would draw from: so is every outgoing connection's local port, and one of
/// those could take the port between this call and the bind it is for. Below that range only
/// an explicit bind can, such as another test's; each process starts at its own place.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let highest = ephemeral_start().saturating_sub(1).max(LOWEST + 1000);
    let span = u32::from(highest - LOWEST);
    let start = std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..span {
        let offset = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        // In range: `offset` < `span`, which fits a port.
        let port = LOWEST + u16::try_from(offset).unwrap_or(0);
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {LOWEST} and {highest}");
}

/// The first port of the kernel's ephemeral range; 32768 (Linux's default) if unknown.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for port in ports {
            assert!((LOWEST..ephemeral_start()).contains(&port), "{port}");
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("still free");
        }
    }
}
