//! OSPF interop with BIRD 2 in network namespaces: BIRD is the router (netns `…r`), our
//! speaker (the `novaedge-vip-ospf` binary) runs in netns `…n0` (and `…n1`), on a
//! point-to-point veth or on a bridge (broadcast, BIRD is DR, the speakers have priority 0).
//! Hello 1 s, dead 4 s, retransmit 2 s.
//!
//! Each case measures, in milliseconds, and prints (run with `--nocapture`): the adjacency
//! reaching Full, the VIP /32 appearing in BIRD's RIB after `assign`, disappearing after
//! `unassign`, reappearing after a second `assign`, disappearing after SIGTERM (graceful
//! shutdown: MaxAge flush) and, after a restart, after SIGKILL (the dead interval). The ECMP
//! case runs two speakers with the same VIP on one bridge and checks that BIRD installs both
//! next hops. Only correctness is asserted, with generous limits; the times are reported.
//!
//! Needs root, `ip` and the Debian package `bird2` (see `scripts/test-packages.txt`). Without
//! them the tests fail with a message saying what is missing; they never skip silently.
//! Every namespace and process a test creates is removed by the lab's `Drop`, also when the
//! test fails.
#![allow(
    clippy::print_stderr,
    reason = "the tests report the times they measure"
)]

use std::time::{Duration, Instant};

mod common;
use common::ospflab::{DEAD, Lab, Net};

const VIP: &str = "198.51.100.10";
const PFX: &str = "198.51.100.10/32";

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn run_case(tag: &str, net: Net) {
    let kind = format!("{net:?}");
    let mut lab = Lab::new(tag, net, 1);
    lab.start_router(false);

    // 1. Adjacency.
    let sp = lab.start_speaker(0, &[]);
    let full = lab.wait(
        "the adjacency to reach Full",
        Duration::from_secs(30),
        || lab.full_neighbors() == 1,
    );
    assert!(lab.route(PFX).is_none(), "no VIP before assign");

    // 2. assign -> the /32 appears, as an E2 route through the speaker.
    lab.command(sp, &format!("assign {VIP}"));
    let appear = lab.wait("the VIP in BIRD's RIB", Duration::from_secs(15), || {
        lab.route(PFX).is_some()
    });
    let route = lab.route(PFX).unwrap_or_default();
    assert!(route.contains("E2"), "an E2 external route: {route}");
    assert_eq!(lab.next_hops(PFX), vec![lab.speaker_addr(0)], "{route}");

    // 3. unassign -> gone (MaxAge flush of its LSA); the adjacency stays.
    lab.command(sp, &format!("unassign {VIP}"));
    let unassign = lab.wait(
        "the VIP gone after unassign",
        Duration::from_secs(10),
        || lab.route(PFX).is_none(),
    );
    assert_eq!(lab.full_neighbors(), 1, "unassign keeps the adjacency");

    // 4. assign again -> back (a new instance, past the flushed one).
    lab.command(sp, &format!("assign {VIP}"));
    let reassign = lab.wait(
        "the VIP back after re-assign",
        Duration::from_secs(15),
        || lab.route(PFX).is_some(),
    );

    // 5. SIGTERM -> graceful shutdown: every LSA flushed, a last Hello, exit 0.
    let t = Instant::now();
    lab.signal(sp, "-TERM");
    let sigterm = lab.wait(
        "the VIP gone after SIGTERM",
        Duration::from_secs(10),
        || lab.route(PFX).is_none(),
    );
    let status = lab.children[sp].wait().expect("speaker exit");
    let exited = t.elapsed();
    assert!(
        status.success(),
        "speaker exit status after SIGTERM: {status}"
    );
    let ours = lab.speaker_addr(0);
    let held = || {
        lab.birdc(&["show", "ospf", "lsadb"])
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some(ours.as_str()))
    };
    lab.wait(
        "BIRD to drop every LSA of the speaker after the flush",
        Duration::from_secs(10),
        || !held(),
    );

    // 6. Restart with the VIP on the command line (BIRD's copies of our old LSAs are
    //    superseded), then SIGKILL: gone once BIRD's dead interval expires.
    let t = Instant::now();
    let sp = lab.start_speaker(0, &[VIP]);
    lab.wait(
        "the VIP back after a restart",
        Duration::from_secs(30),
        || lab.route(PFX).is_some(),
    );
    let restart = t.elapsed();
    lab.signal(sp, "-KILL");
    let _ = lab.children[sp].wait();
    let sigkill = lab.wait(
        "the VIP gone after SIGKILL",
        Duration::from_secs(DEAD + 6),
        || lab.route(PFX).is_none(),
    );

    eprintln!(
        "[OSPF {kind}] Full after start:                 {:>6} ms",
        ms(full)
    );
    eprintln!(
        "[OSPF {kind}] assign -> /32 in BIRD's RIB:      {:>6} ms   ({route})",
        ms(appear)
    );
    eprintln!(
        "[OSPF {kind}] unassign -> gone:                 {:>6} ms",
        ms(unassign)
    );
    eprintln!(
        "[OSPF {kind}] re-assign -> back:                {:>6} ms",
        ms(reassign)
    );
    eprintln!(
        "[OSPF {kind}] SIGTERM -> gone:                  {:>6} ms   (process exited after {} ms)",
        ms(sigterm),
        ms(exited)
    );
    eprintln!(
        "[OSPF {kind}] restart with --vip -> back:       {:>6} ms",
        ms(restart)
    );
    eprintln!(
        "[OSPF {kind}] SIGKILL -> gone:                  {:>6} ms   (dead interval {DEAD} s)",
        ms(sigkill)
    );
}

#[test]
fn bird_point_to_point() {
    run_case("p", Net::PointToPoint);
}

#[test]
fn bird_broadcast() {
    run_case("b", Net::Broadcast);
}

#[test]
fn bird_broadcast_ecmp_two_speakers() {
    let mut lab = Lab::new("e", Net::Broadcast, 2);
    lab.start_router(false);
    let a = lab.start_speaker(0, &[VIP]);
    let _b = lab.start_speaker(1, &[VIP]);
    let both = [lab.speaker_addr(0), lab.speaker_addr(1)];
    let t = lab.wait(
        "two next hops for the VIP in BIRD's RIB",
        Duration::from_secs(30),
        || {
            let mut hops = lab.next_hops(PFX);
            hops.sort();
            hops == both
        },
    );
    let route = lab.route(PFX).unwrap_or_default();
    assert_eq!(lab.full_neighbors(), 2);
    eprintln!(
        "[OSPF ECMP] two speakers, one VIP: {} next hops after {} ms: {route}",
        lab.next_hops(PFX).len(),
        ms(t)
    );
    // One speaker leaves gracefully: one next hop is left.
    lab.signal(a, "-TERM");
    let t = lab.wait("one next hop left", Duration::from_secs(10), || {
        lab.next_hops(PFX) == vec![lab.speaker_addr(1)]
    });
    eprintln!(
        "[OSPF ECMP] after SIGTERM to {}: one next hop after {} ms: {}",
        lab.speaker_addr(0),
        ms(t),
        lab.route(PFX).unwrap_or_default()
    );
}
