//! Ethernet frames that announce a VIP: gratuitous ARP (RFC 826 layout, RFC 5227 section 3
//! "ARP Announcement") and unsolicited neighbour advertisement (RFC 4861 sections 4.4 and
//! 7.2.6).
//!
//! The builders are written out by hand (a few dozen bytes each) so that the byte layout is
//! visible next to the RFC and tested against fixed vectors; they allocate one `Vec` and never
//! fail.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A MAC address.
pub type Mac = [u8; 6];

/// Ethernet broadcast.
pub const BROADCAST: Mac = [0xff; 6];

const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Minimum Ethernet frame length without the FCS; shorter frames are padded with zeros.
const ETH_MIN: usize = 60;

/// Which ARP operation a gratuitous ARP uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GarpKind {
    /// ARP request, sender = target = VIP, target MAC zero (RFC 5227 "ARP Announcement").
    Request,
    /// ARP reply, sender = target = VIP, target MAC broadcast (what `arping -A` sends).
    Reply,
}

fn ethernet(dst: Mac, src: Mac, ethertype: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src);
    out.extend_from_slice(&ethertype.to_be_bytes());
}

/// A gratuitous ARP for `vip` from `mac`, sent to the Ethernet broadcast address and padded
/// to 60 bytes.
///
/// RFC 826 layout: hardware type 1 (Ethernet), protocol type 0x0800, hardware length 6,
/// protocol length 4, operation (1 request, 2 reply), sender MAC, sender IP, target MAC,
/// target IP. In both forms sender IP = target IP = VIP: a receiver that already has an entry
/// for the VIP updates it with the sender MAC (RFC 826 "merge" step, before the opcode is
/// looked at), so either form moves the traffic.
pub fn gratuitous_arp(mac: Mac, vip: Ipv4Addr, kind: GarpKind) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_MIN);
    ethernet(BROADCAST, mac, ETHERTYPE_ARP, &mut f);
    f.extend_from_slice(&1u16.to_be_bytes()); // htype Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // ptype IPv4
    f.push(6); // hlen
    f.push(4); // plen
    let (op, target_mac) = match kind {
        GarpKind::Request => (1u16, [0u8; 6]),
        GarpKind::Reply => (2u16, BROADCAST),
    };
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&mac);
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&target_mac);
    f.extend_from_slice(&vip.octets());
    f.resize(ETH_MIN, 0);
    f
}

/// The all-nodes multicast address ff02::1 and its Ethernet mapping 33:33:00:00:00:01
/// (RFC 2464 section 7).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: Mac = [0x33, 0x33, 0, 0, 0, 1];

/// An unsolicited neighbour advertisement for `vip` from `mac` to ff02::1.
///
/// IPv6 header: hop limit 255 (receivers drop ND messages with any other value), source =
/// the VIP, destination ff02::1, next header 58. ICMPv6: type 136, code 0, flags R=0, S=0
/// (unsolicited), O=1 (override: replace the cached link-layer address), target = VIP, and a
/// target link-layer address option (type 2, length 1 = 8 bytes) carrying `mac`.
pub fn unsolicited_na(mac: Mac, vip: Ipv6Addr) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(32);
    icmp.push(136); // type: neighbour advertisement
    icmp.push(0); // code
    icmp.extend_from_slice(&[0, 0]); // checksum, filled below
    icmp.extend_from_slice(&0x2000_0000u32.to_be_bytes()); // R=0 S=0 O=1, reserved
    icmp.extend_from_slice(&vip.octets());
    icmp.push(2); // option: target link-layer address
    icmp.push(1); // length in units of 8 bytes
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(&vip, &ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    ethernet(ALL_NODES_MAC, mac, ETHERTYPE_IPV6, &mut f);
    f.extend_from_slice(&0x6000_0000u32.to_be_bytes()); // version 6, class 0, flow 0
    // The ICMPv6 message is 32 bytes, so the cast cannot truncate.
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.push(58); // next header ICMPv6
    f.push(255); // hop limit
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&ALL_NODES.octets());
    f.extend_from_slice(&icmp);
    f
}

/// The ICMPv6 checksum (RFC 4443 section 2.3): the one's complement of the one's complement
/// sum over the IPv6 pseudo-header (RFC 8200 section 8.1: source, destination, upper-layer
/// length as 32 bits, three zero bytes, next header 58) and the message with its checksum
/// field zero.
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for chunk in bytes.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
            sum += u32::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn garp_request_matches_rfc826_layout() {
        let f = gratuitous_arp(MAC, Ipv4Addr::new(198, 51, 100, 100), GarpKind::Request);
        let want = hex("ffffffffffff 02005e100001 0806 \
             0001 0800 06 04 0001 \
             02005e100001 c6336464 \
             000000000000 c6336464");
        assert_eq!(&f[..42], &want[..]);
        assert_eq!(f.len(), 60);
        assert!(f[42..].iter().all(|&b| b == 0), "padding is zero");
    }

    #[test]
    fn garp_reply_has_opcode_2_and_broadcast_target() {
        let f = gratuitous_arp(MAC, Ipv4Addr::new(10, 0, 0, 1), GarpKind::Reply);
        let want = hex("ffffffffffff 02005e100001 0806 \
             0001 0800 06 04 0002 \
             02005e100001 0a000001 \
             ffffffffffff 0a000001");
        assert_eq!(&f[..42], &want[..]);
    }

    #[test]
    fn na_matches_rfc4861_layout() {
        let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let f = unsolicited_na(MAC, vip);
        let want = hex("333300000001 02005e100001 86dd \
             60000000 0020 3a ff \
             20010db8000000000000000000000100 \
             ff020000000000000000000000000001 \
             88 00 CSUM 20000000 \
             20010db8000000000000000000000100 \
             02 01 02005e100001"
            .replace("CSUM", "0000")
            .as_str());
        assert_eq!(f.len(), 86);
        let mut zeroed = f.clone();
        zeroed[56..58].copy_from_slice(&[0, 0]);
        assert_eq!(zeroed, want);
    }

    /// The checksum of the NA above, computed independently: `tcpdump -vv` prints
    /// "[icmp6 sum ok]" for the frame our lab sends (tests/data/na-2001-db8--100.hex holds
    /// that captured frame), and a hand sum gives the same value.
    #[test]
    fn na_checksum_matches_captured_frame() {
        let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let f = unsolicited_na(MAC, vip);
        let captured = hex(include_str!("../../tests/data/na-2001-db8--100.hex"));
        assert_eq!(f, captured);
        // Summing the whole message including a correct checksum gives 0xffff, i.e. the
        // complement is zero.
        assert_eq!(icmpv6_checksum(&vip, &ALL_NODES, &f[54..]), 0);
    }
}
