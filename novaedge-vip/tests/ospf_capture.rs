//! The capture harness behind `tests/data/ospf/`: runs BIRD 2 against our OSPF speaker in the
//! namespace lab (point-to-point and broadcast), with `tcpdump` on the router's interface,
//! makes BIRD send every packet type and every LSA type it can in this setup (Hello, DD,
//! LS Request, LS Update with Router-, Network- and AS-external-LSAs, a MaxAge flush, LS
//! Acknowledgment), and stores the first packet of each kind BIRD sent, as hex, for the
//! codec tests in `src/ospf/packet.rs`.
//!
//! It rewrites the data, so it is `#[ignore]`d: run it on purpose with
//! `novaedge-vip/scripts/capture-ospf.sh` (root, `bird2`, `tcpdump`). The pcap reader below
//! is the small subset tcpdump writes here: classic little-endian pcap, Ethernet, IPv4.
#![allow(clippy::print_stdout, reason = "the harness reports what it stored")]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;
use common::must;
use common::ospflab::{Lab, Net};

const VIP: &str = "198.51.100.10";
const PFX: &str = "198.51.100.10/32";

fn be16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([b[at], b[at + 1]]))
}

/// The OSPF packets (IP payloads) `src` sent, in a classic little-endian pcap of Ethernet
/// frames.
fn ospf_packets_from(pcap: &[u8], src: Ipv4Addr) -> Vec<Vec<u8>> {
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
        if be16(frame, 12) != 0x0800 {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = be16(ip, 2);
        let from = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        if ip[9] != 89 || from != src {
            continue;
        }
        out.push(ip[ihl..total].to_vec());
    }
    out
}

/// What kind of packet this is, for picking one of each: the type, and for Hellos whether
/// they list a neighbour, for DDs the I bit or headers, for LS Updates the LSA types they
/// carry and whether one is at MaxAge.
fn kind(p: &[u8]) -> String {
    match p[1] {
        1 => if p.len() > 44 {
            "hello-neighbors"
        } else {
            "hello"
        }
        .to_string(),
        2 if p[27] & 0x04 != 0 => "dd-init".to_string(),
        2 if p.len() > 32 => "dd-headers".to_string(),
        2 => "dd-empty".to_string(),
        3 => "lsr".to_string(),
        4 => {
            let mut types = BTreeSet::new();
            let mut maxage = false;
            let mut at = 28;
            while at + 20 <= p.len() {
                types.insert(p[at + 3]);
                maxage |= be16(p, at) >= 3600;
                at += be16(p, at + 18).max(20);
            }
            let types: Vec<String> = types.iter().map(|t| format!("t{t}")).collect();
            format!(
                "lsu-{}{}",
                types.join(""),
                if maxage { "-maxage" } else { "" }
            )
        }
        5 => "lsack".to_string(),
        _ => "unknown".to_string(),
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

fn capture(tag: &str, net: Net, out: &Path, prefix: &str) {
    let mut lab = Lab::new(tag, net, 1);
    let ns = lab.rtr.clone();
    let pcap = lab.path("ospf.pcap").display().to_string();
    let iface = lab.router_iface();
    let tcpdump = lab.spawn(
        &ns,
        &[
            "tcpdump", "-i", &iface, "-U", "-s", "0", "-w", &pcap, "ip", "proto", "89",
        ],
        "tcpdump.log",
        false,
    );
    lab.wait("tcpdump to listen", Duration::from_secs(5), || {
        lab.log("tcpdump.log").contains("listening on")
    });
    lab.start_router(true);
    let sp = lab.start_speaker(0, &[VIP]);
    lab.wait(
        "adjacency Full and the VIP in BIRD's RIB",
        Duration::from_secs(30),
        || lab.full_neighbors() == 1 && lab.route(PFX).is_some(),
    );
    // BIRD flushes its AS-external-LSA (MaxAge LS Update) when the static route goes, and
    // acknowledges our flush of the VIP's LSA.
    lab.birdc(&["disable", "s4"]);
    lab.command(sp, &format!("unassign {VIP}"));
    lab.wait(
        "the VIP gone from BIRD's RIB",
        Duration::from_secs(10),
        || lab.route(PFX).is_none(),
    );
    std::thread::sleep(Duration::from_secs(2));
    lab.command(sp, "shutdown");
    std::thread::sleep(Duration::from_secs(2));
    let pid = lab.children[tcpdump].id().to_string();
    must(&["kill", "-INT", &pid]);
    let _ = lab.children[tcpdump].wait();

    let pcap = std::fs::read(&pcap).expect("read pcap");
    let router: Ipv4Addr = lab.router_addr().parse().unwrap();
    let packets = ospf_packets_from(&pcap, router);
    std::fs::create_dir_all(out).expect("create output directory");
    for old in std::fs::read_dir(out).expect("read output directory") {
        let old = old.expect("directory entry").path();
        let name = old.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(".hex") {
            std::fs::remove_file(old).expect("remove old capture");
        }
    }
    let mut seen = BTreeSet::new();
    for p in &packets {
        let k = kind(p);
        if !seen.insert(k.clone()) {
            continue;
        }
        let file = out.join(format!("{prefix}-{:02}-{k}.hex", seen.len()));
        std::fs::write(&file, to_hex(p)).expect("write capture");
        println!("[{net:?}] {}", file.display());
    }
    // BIRD's router ID is the lower, so it is the slave: whether it sends an I-bit DD of
    // its own before it sees ours is a race, and not required here.
    for needed in ["hello", "dd-headers", "lsr", "lsack"] {
        assert!(
            seen.iter().any(|k| k.starts_with(needed)),
            "{net:?}: no {needed} captured (got {seen:?})"
        );
    }
    for t in ["t1", "t5"] {
        assert!(
            seen.iter().any(|k| k.starts_with("lsu") && k.contains(t)),
            "{net:?}: no LS Update with a {t} LSA (got {seen:?})"
        );
    }
    if net == Net::Broadcast {
        assert!(
            seen.iter()
                .any(|k| k.starts_with("lsu") && k.contains("t2")),
            "no LS Update with a Network-LSA (got {seen:?})"
        );
    }
}

fn out_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ospf")
}

#[test]
#[ignore = "rewrites tests/data/ospf; run scripts/capture-ospf.sh"]
fn capture_bird_ptp() {
    capture("cp", Net::PointToPoint, &out_dir(), "bird-ptp");
}

#[test]
#[ignore = "rewrites tests/data/ospf; run scripts/capture-ospf.sh"]
fn capture_bird_broadcast() {
    capture("cb", Net::Broadcast, &out_dir(), "bird-broadcast");
}
