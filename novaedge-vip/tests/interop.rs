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

use std::time::Duration;

mod common;
use common::bgplab::{HOLD, Lab, PFX4, PFX6, RTR_AS, Router, VIP4, VIP6};
use common::must;

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
    lab.kill(sp);
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
