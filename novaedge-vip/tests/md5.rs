//! TCP-MD5 (RFC 2385) against real routers in network namespaces: GoBGP (`auth-password`) and
//! BIRD 2 (`password`). The speaker connects on the IPv4 session (key on the connecting
//! socket) and waits for the router on the IPv6 session (key on the listening socket).
//!
//! A wrong password must keep both sessions down (the kernels drop the unsigned or badly
//! signed SYNs), and the speaker must say why; the right one must bring them up and carry the
//! VIPs into the router's RIB. Needs root, `gobgpd` and `bird2` like `interop.rs`.
#![allow(clippy::print_stdout, reason = "the tests report what they observed")]

use std::time::{Duration, Instant};

mod common;
use common::bgplab::{Lab, PFX4, PFX6, RTR_V4, Router, RouterOpts, SpeakerOpts, VIP4, VIP6};

const NODE_AS: u32 = 4_200_000_001;

fn md5_case(tag: &str, router: Router) {
    let mut lab = Lab::new(tag, router);
    lab.start_router_with(
        NODE_AS,
        &RouterOpts {
            password: Some("n0va-edge secret".into()),
            active_v6: true,
            rich: false,
        },
    );
    std::thread::sleep(Duration::from_millis(300));

    // 1. Wrong password: nothing comes up, on either side, for a few seconds.
    let sp = lab.start_speaker_with(
        NODE_AS,
        &[VIP4, VIP6],
        &SpeakerOpts {
            password: Some("wrong secret".into()),
            passive_v6: true,
        },
    );
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(4) {
        if lab.established(false) || lab.established(true) {
            lab.fail("a session came up with a wrong TCP-MD5 password");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(lab.route(PFX4).is_none() && lab.route(PFX6).is_none());
    // The speaker says why the active session is down: its signed SYNs go unanswered until
    // the connect times out (5 s).
    let reported = |log: &str| {
        log.lines().any(|l| {
            l.starts_with(&format!("peer {RTR_V4}:179"))
                && l.contains("last_error=connect to")
                && l.contains("timed out")
        })
    };
    let t = Instant::now();
    while !reported(&lab.log("speaker.log")) {
        if t.elapsed() > Duration::from_secs(6) {
            lab.fail("the speaker never reported the failing connect");
        }
        lab.command(sp, "status");
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = lab.log("speaker.log");
    assert!(
        !log.contains("BGP session established"),
        "speaker log:\n{log}"
    );
    println!("[{router:?}] wrong password: no session for 4 s");
    lab.kill(sp);

    // 2. The right password: both sessions come up and the VIPs reach the RIB.
    lab.start_speaker_with(
        NODE_AS,
        &[VIP4, VIP6],
        &SpeakerOpts {
            password: Some("n0va-edge secret".into()),
            passive_v6: true,
        },
    );
    let t = lab.wait(
        "both sessions Established with TCP-MD5",
        Duration::from_secs(15),
        || lab.established(false) && lab.established(true),
    );
    lab.wait("the VIPs in the RIB", Duration::from_secs(10), || {
        lab.route(PFX4).is_some() && lab.route(PFX6).is_some()
    });
    println!(
        "[{router:?}] right password: Established after {t:?}; {}",
        lab.route(PFX4).unwrap_or_default()
    );
}

#[test]
fn gobgp_md5() {
    md5_case("gm", Router::Gobgp);
}

#[test]
fn bird_md5() {
    md5_case("bm", Router::Bird);
}
