//! The capture harness behind `tests/data/captured/`: runs GoBGP and BIRD 2 against our
//! speaker in the namespace lab, with `tcpdump` on the router's veth, makes each router send
//! every message type it can (OPEN with all the optional capabilities it supports, KEEPALIVE,
//! UPDATEs of a few exported routes and End-of-RIB, ROUTE-REFRESH, NOTIFICATION Cease), and
//! stores the router-to-speaker BGP messages, one hex file per distinct message, for the
//! codec tests in `src/bgp/msg.rs`.
//!
//! It rewrites the data, so it is `#[ignore]`d: run it on purpose with
//! `novaedge-vip/scripts/capture-bgp.sh` (root, `gobgpd`, `bird2`, `tcpdump`). The pcap reader
//! below is the small subset tcpdump writes on a veth: classic pcap, Ethernet, IPv4/IPv6
//! without extension headers, TCP.
#![allow(clippy::print_stdout, reason = "the harness reports what it stored")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;
use common::bgplab::{Lab, NODE_V4, NODE_V6, Router, RouterOpts};
use common::must;

const NODE_AS: u32 = 4_200_000_001;

/// One TCP segment from the router's port 179.
struct Segment {
    v6: bool,
    seq: u32,
    syn: bool,
    payload: Vec<u8>,
}

fn be16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([b[at], b[at + 1]]))
}

/// The TCP segments sent from port 179 in a classic little-endian pcap of Ethernet frames.
fn segments_from_port_179(pcap: &[u8]) -> Vec<Segment> {
    assert_eq!(
        pcap[..4],
        [0xd4, 0xc3, 0xb2, 0xa1],
        "little-endian classic pcap"
    );
    assert_eq!(
        u32::from_le_bytes(pcap[20..24].try_into().unwrap()),
        1,
        "Ethernet link type"
    );
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &pcap[at + 16..at + 16 + caplen];
        at += 16 + caplen;
        let (v6, ip) = match be16(frame, 12) {
            0x0800 => (false, &frame[14..]),
            0x86dd => (true, &frame[14..]),
            _ => continue,
        };
        let (proto, tcp) = if v6 {
            let len = be16(ip, 4);
            (ip[6], &ip[40..40 + len])
        } else {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = be16(ip, 2);
            (ip[9], &ip[ihl..total])
        };
        if proto != 6 || be16(tcp, 0) != 179 {
            continue;
        }
        let data_off = usize::from(tcp[12] >> 4) * 4;
        out.push(Segment {
            v6,
            seq: u32::from_be_bytes(tcp[4..8].try_into().unwrap()),
            syn: tcp[13] & 0x02 != 0,
            payload: tcp[data_off..].to_vec(),
        });
    }
    out
}

/// Reassembles the byte stream of one direction (retransmissions and overlaps dropped).
fn stream(segments: &[Segment], v6: bool) -> Vec<u8> {
    let mut next: Option<u32> = None;
    let mut data = Vec::new();
    for s in segments.iter().filter(|s| s.v6 == v6) {
        if s.syn {
            next = Some(s.seq.wrapping_add(1));
            continue;
        }
        let Some(n) = next else { continue };
        let skip = n.wrapping_sub(s.seq) as usize;
        if skip >= s.payload.len() || s.seq.wrapping_sub(n) as i32 > 0 {
            // Already seen, or a gap (never on a veth): skip.
            continue;
        }
        data.extend_from_slice(&s.payload[skip..]);
        next = Some(n.wrapping_add((s.payload.len() - skip) as u32));
    }
    data
}

/// Splits a BGP byte stream into messages by their length field.
fn messages(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while data.len() >= 19 {
        assert!(data[..16].iter().all(|b| *b == 0xff), "BGP marker");
        let len = be16(data, 16);
        assert!(len >= 19 && len <= data.len(), "message length {len}");
        out.push(data[..len].to_vec());
        data = &data[len..];
    }
    out
}

fn type_name(msg: &[u8]) -> &'static str {
    match msg[18] {
        1 => "open",
        2 => "update",
        3 => "notification",
        4 => "keepalive",
        5 => "route-refresh",
        _ => "unknown",
    }
}

fn to_hex(msg: &[u8]) -> String {
    let mut s = String::new();
    for (i, chunk) in msg.chunks(16).enumerate() {
        if i > 0 {
            s.push('\n');
        }
        for b in chunk {
            s += &format!("{b:02x}");
        }
    }
    s.push('\n');
    s
}

fn capture(tag: &str, router: Router, out: &Path) {
    let mut lab = Lab::new(tag, router);
    let pcap = lab.path("bgp.pcap").display().to_string();
    let ns = lab.rtr.clone();
    let tcpdump = lab.spawn(
        &ns,
        &[
            "tcpdump", "-i", "veth-rtr", "-U", "-s", "0", "-w", &pcap, "tcp", "port", "179",
        ],
        "tcpdump.log",
        false,
    );
    lab.wait("tcpdump to listen", Duration::from_secs(5), || {
        lab.log("tcpdump.log").contains("listening on")
    });
    lab.start_router_with(
        NODE_AS,
        &RouterOpts {
            rich: true,
            ..RouterOpts::default()
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    if router == Router::Gobgp {
        for args in [
            &["gobgp", "global", "rib", "add", "198.51.100.0/24"][..],
            &[
                "gobgp",
                "global",
                "rib",
                "add",
                "-a",
                "ipv6",
                "2001:db8:100::/48",
            ][..],
        ] {
            let mut cmd = vec!["ip", "netns", "exec", &ns];
            cmd.extend_from_slice(args);
            must(&cmd);
        }
    }
    let sp = lab.start_speaker(NODE_AS, &[]);
    lab.wait("both sessions Established", Duration::from_secs(20), || {
        lab.established(false) && lab.established(true)
    });
    // Initial UPDATEs, End-of-RIB and a few KEEPALIVEs.
    std::thread::sleep(Duration::from_secs(2));
    // ROUTE-REFRESH, then NOTIFICATION Cease / Administrative Shutdown (with a shutdown
    // communication, RFC 8203) on both sessions.
    match router {
        Router::Gobgp => {
            for addr in [NODE_V4, NODE_V6] {
                must(&[
                    "ip",
                    "netns",
                    "exec",
                    &ns,
                    "gobgp",
                    "neighbor",
                    addr,
                    "softresetin",
                ]);
            }
            std::thread::sleep(Duration::from_secs(1));
            for addr in [NODE_V4, NODE_V6] {
                lab.rtr(&[
                    "gobgp",
                    "neighbor",
                    addr,
                    "disable",
                    "--reason",
                    "capture done",
                ]);
            }
        }
        Router::Bird => {
            lab.birdc(&["reload", "in", "n4"]);
            lab.birdc(&["reload", "in", "n6"]);
            std::thread::sleep(Duration::from_secs(1));
            lab.birdc(&["disable", "n4", "\"capture done\""]);
            lab.birdc(&["disable", "n6", "\"capture done\""]);
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    lab.kill(sp);
    let pid = lab.children[tcpdump].id().to_string();
    must(&["kill", "-INT", &pid]);
    let _ = lab.children[tcpdump].wait();

    let pcap = std::fs::read(&pcap).expect("read pcap");
    let segments = segments_from_port_179(&pcap);
    std::fs::create_dir_all(out).expect("create output directory");
    for old in std::fs::read_dir(out).expect("read output directory") {
        let old = old.expect("directory entry").path();
        if old.extension().is_some_and(|e| e == "hex") {
            std::fs::remove_file(old).expect("remove old capture");
        }
    }
    for (session, v6) in [("v4", false), ("v6", true)] {
        let mut seen = BTreeMap::new();
        for m in messages(&stream(&segments, v6)) {
            if seen.contains_key(&m) {
                continue;
            }
            let n = seen.len() + 1;
            let file = out.join(format!("{session}-{n:02}-{}.hex", type_name(&m)));
            std::fs::write(&file, to_hex(&m)).expect("write capture");
            println!("[{router:?}] {}", file.display());
            seen.insert(m, n);
        }
        let types: Vec<&str> = seen.keys().map(|m| type_name(m)).collect();
        // GoBGP keeps every Adj-RIB-In, so `softresetin` re-runs its import policy locally
        // and sends no ROUTE-REFRESH.
        let needed: &[&str] = match router {
            Router::Gobgp => &["open", "keepalive", "update", "notification"],
            Router::Bird => &[
                "open",
                "keepalive",
                "update",
                "route-refresh",
                "notification",
            ],
        };
        for needed in needed {
            assert!(
                types.contains(needed),
                "{router:?} {session}: no {needed} captured (got {types:?})"
            );
        }
    }
}

fn out_dir(router: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/captured")
        .join(router)
}

#[test]
#[ignore = "rewrites tests/data/captured; run scripts/capture-bgp.sh"]
fn capture_gobgp() {
    capture("cg", Router::Gobgp, &out_dir("gobgp"));
}

#[test]
#[ignore = "rewrites tests/data/captured; run scripts/capture-bgp.sh"]
fn capture_bird() {
    capture("cb", Router::Bird, &out_dir("bird"));
}
