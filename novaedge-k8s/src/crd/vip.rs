//! `ProxyVIP`: virtual addresses, announced from selected nodes by L2 (ARP/NDP), BGP or OSPF.
//!
//! ```yaml
//! apiVersion: novaedge.io/v1alpha1
//! kind: ProxyVIP
//! metadata: {name: shop-vip, namespace: shop}
//! spec:
//!   addresses: [192.0.2.10, "2001:db8::10"]
//!   mode: BGP
//!   nodeSelector: {matchLabels: {node-role.kubernetes.io/edge: ""}}
//!   bgp:
//!     localASN: 64512
//!     peers:
//!       - {address: 192.0.2.1, asn: 64500, holdTime: 90s,
//!          passwordSecretRef: {name: bgp-auth}}
//! ```
//!
//! [`to_vip_spec`] checks it all (the schema's rules, then what only code can: reserved AS
//! numbers, whole-second timers, address kinds, OSPF area syntax) and gives a plain [`VipSpec`]
//! with parsed addresses and durations, which is what the VIP drivers are configured from.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::Status;
use super::{DNS_SUBDOMAIN_PATTERN, NodeSelector, Problems};
use crate::diagnostics::Diagnostic;
use crate::health::GatewayDuration;
use crate::objects::namespace_of;

/// A Linux interface name: at most 15 characters (IFNAMSIZ less the NUL): [`is_interface`].
const INTERFACE_PATTERN: &str = r"^[A-Za-z0-9][-A-Za-z0-9_.@]{0,14}$";
/// An OSPF area ID: a dotted quad or a decimal number. Octet and number ranges are checked on
/// conversion.
const OSPF_AREA_PATTERN: &str = r"^([0-9]{1,10}|[0-9]{1,3}(\.[0-9]{1,3}){3})$";
/// A key of a Secret's data.
const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";

/// The BGP port.
const BGP_PORT: u16 = 179;
/// AS numbers no speaker may use as its own or its peer's: 0 (RFC 7607), `AS_TRANS`
/// (RFC 6793) and the last 2- and 4-octet numbers (RFC 7300).
const RESERVED_ASNS: [u32; 4] = [0, 23_456, 65_535, u32::MAX];

/// Virtual addresses and how they are announced: L2 (ARP/NDP on an interface), BGP (routes to
/// peers) or OSPF, from the nodes the selector picks.
// Clippy reads the `type_ = "string"` of two `printcolumn(...)` entries as one attribute given
// twice.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "novaedge.io",
    version = "v1alpha1",
    kind = "ProxyVIP",
    root = "ProxyVip",
    namespaced,
    status = "Status",
    derive = "PartialEq",
    shortname = "pvip",
    category = "novaedge",
    doc = "Virtual addresses and how they are announced: L2 (ARP/NDP on an interface), BGP \
           (routes to peers) or OSPF, from the nodes the selector picks.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Addresses", type_ = "string", json_path = ".spec.addresses"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.interface) == (self.mode == 'L2')",
        "message": "interface is required for mode L2, and only for it",
    },
    {
        "rule": "has(self.bgp) == (self.mode == 'BGP')",
        "message": "bgp is required for mode BGP, and only for it",
    },
    {
        "rule": "has(self.ospf) == (self.mode == 'OSPF')",
        "message": "ospf is required for mode OSPF, and only for it",
    },
]))]
pub struct ProxyVipSpec {
    /// The addresses, IPv4 or IPv6, each without a prefix length.
    #[schemars(
        length(min = 1, max = 16),
        inner(length(max = 45)),
        extend(
            "x-kubernetes-list-type" = "set",
            "x-kubernetes-validations" = [{
                "rule": "self.all(a, isIP(a))",
                "message": "each address must be an IPv4 or IPv6 address",
            }],
        )
    )]
    pub addresses: Vec<String>,
    /// How the addresses are announced: `L2` (with `interface`), `BGP` (with `bgp`) or `OSPF`
    /// (with `ospf`).
    pub mode: VipMode,
    /// The nodes that may hold or announce the addresses; default every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<NodeSelector>,
    /// L2: the interface that holds the addresses and answers ARP and neighbour solicitations
    /// for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15), pattern(INTERFACE_PATTERN))]
    pub interface: Option<String>,
    /// BGP: the speaker and its peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<BgpSpec>,
    /// OSPF: the area and the interfaces that speak it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ospf: Option<OspfSpec>,
}

/// How a VIP's addresses are announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = super::field_describes)]
pub enum VipMode {
    /// Gratuitous ARP and unsolicited neighbour advertisements from the node that holds them.
    L2,
    /// Host routes to BGP peers from every selected node.
    #[serde(rename = "BGP")]
    Bgp,
    /// Host routes in an OSPF area from every selected node.
    #[serde(rename = "OSPF")]
    Ospf,
}

/// The BGP speaker on each node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpSpec {
    /// Our AS number (4-octet numbers are fine).
    #[serde(rename = "localASN")]
    #[schemars(range(min = 1, max = 4_294_967_294u32))]
    pub local_asn: u32,
    /// Our BGP identifier, an IPv4 address; default the node's IPv4 address.
    #[serde(rename = "routerID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 15),
        extend("x-kubernetes-validations" = [{
            "rule": "isIP(self) && ip(self).family() == 4",
            "message": "must be an IPv4 address",
        }])
    )]
    pub router_id: Option<String>,
    /// The peers, each address once.
    #[schemars(
        length(min = 1, max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["address"])
    )]
    pub peers: Vec<BgpPeerSpec>,
}

/// One BGP neighbour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeerSpec {
    /// The peer's address.
    #[schemars(
        length(min = 1, max = 45),
        extend("x-kubernetes-validations" = [{
            "rule": "isIP(self)",
            "message": "must be an IPv4 or IPv6 address",
        }])
    )]
    pub address: String,
    /// The peer's AS number: ours for iBGP.
    #[schemars(range(min = 1, max = 4_294_967_294u32))]
    pub asn: u32,
    /// The peer's TCP port; default 179.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
    /// The hold time proposed to the peer, in whole seconds: 0s (no keepalives) or 3s to
    /// 65535s; default 90s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<GatewayDuration>,
    /// A Secret in the VIP's namespace holding the TCP MD5 password for the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

/// A key of a Secret in the referrer's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// The key; default `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(SECRET_KEY_PATTERN))]
    pub key: Option<String>,
}

/// OSPF on each node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OspfSpec {
    /// The area the addresses are announced in: a dotted quad (`0.0.0.0`) or a number (`0`).
    #[schemars(length(min = 1, max = 15), pattern(OSPF_AREA_PATTERN))]
    pub area: String,
    /// The interfaces that speak OSPF, each name once.
    #[schemars(
        length(min = 1, max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub interfaces: Vec<OspfInterfaceSpec>,
}

/// One interface speaking OSPF.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OspfInterfaceSpec {
    /// The interface name.
    #[schemars(length(min = 1, max = 15), pattern(INTERFACE_PATTERN))]
    pub name: String,
    /// Time between hellos, whole seconds from 1s to 65535s; default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hello_interval: Option<GatewayDuration>,
    /// Silence after which a neighbour is down, whole seconds above `helloInterval`, up to
    /// 65535s; default four hello intervals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_interval: Option<GatewayDuration>,
    /// Router priority in the designated router election; default 0, never the designated
    /// router: a node should not become the DR of its routers' network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// `broadcast` (the default; elects a designated router) or `pointToPoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_type: Option<OspfNetworkType>,
    /// The interface's output cost, 1 to 65535; default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub cost: Option<u16>,
}

/// The OSPF network types NovaEdge speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::field_describes)]
pub enum OspfNetworkType {
    /// A multi-access network: a designated router is elected.
    Broadcast,
    /// A link with one neighbour: no election.
    PointToPoint,
}

// === the checked form ===

/// A ProxyVIP, checked: what the VIP drivers are configured from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipSpec {
    /// `namespace/name` of the ProxyVIP.
    pub name: String,
    /// The addresses, in the order written, each once.
    pub addresses: Vec<IpAddr>,
    /// The nodes that may announce them (empty: every node).
    pub node_selector: NodeSelector,
    /// How.
    pub announce: Announce,
}

/// How a VIP is announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Announce {
    L2 { interface: String },
    Bgp(BgpAnnounce),
    Ospf(OspfAnnounce),
}

/// The BGP speaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpAnnounce {
    pub local_asn: u32,
    /// `None`: the node's IPv4 address.
    pub router_id: Option<Ipv4Addr>,
    pub peers: Vec<BgpPeer>,
}

/// A checked BGP neighbour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpPeer {
    pub address: IpAddr,
    pub asn: u32,
    pub port: u16,
    /// Seconds: 0 or 3-65535. `None`: the speaker's default.
    pub hold_time: Option<u16>,
    /// The Secret (name, key) holding the TCP MD5 password.
    pub password: Option<(String, String)>,
}

/// OSPF in one area.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OspfAnnounce {
    /// The area ID (`0` is `0.0.0.0`).
    pub area: Ipv4Addr,
    pub interfaces: Vec<OspfInterface>,
}

/// A checked OSPF interface, defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OspfInterface {
    pub name: String,
    pub hello_interval: Duration,
    pub dead_interval: Duration,
    pub priority: u8,
    pub network_type: OspfNetworkType,
    pub cost: u16,
}

// === admission ===

/// The schema's rules, for an object no API server has checked.
pub(super) fn admit(spec: &ProxyVipSpec, p: &mut Problems) {
    p.min_items("spec.addresses", spec.addresses.len(), 1);
    p.max_items("spec.addresses", spec.addresses.len(), 16);
    for (i, a) in spec.addresses.iter().enumerate() {
        let field = format!("spec.addresses[{i}]");
        if a.parse::<IpAddr>().is_err() {
            p.error(
                &field,
                format!("{a:?}: each address must be an IPv4 or IPv6 address"),
            );
        }
        if spec.addresses[..i].contains(a) {
            p.error(&field, format!("{a} is listed more than once"));
        }
    }
    for (set, key, mode, name) in [
        (spec.interface.is_some(), "interface", VipMode::L2, "L2"),
        (spec.bgp.is_some(), "bgp", VipMode::Bgp, "BGP"),
        (spec.ospf.is_some(), "ospf", VipMode::Ospf, "OSPF"),
    ] {
        if set != (spec.mode == mode) {
            p.error(
                format!("spec.{key}"),
                format!("{key} is required for mode {name}, and only for it"),
            );
        }
    }
    if let Some(selector) = &spec.node_selector {
        selector.admit("spec.nodeSelector", p);
    }
    if let Some(i) = &spec.interface {
        interface("spec.interface", i, p);
    }
    if let Some(bgp) = &spec.bgp {
        p.range("spec.bgp.localASN", bgp.local_asn, 1, u32::MAX - 1);
        if let Some(id) = &bgp.router_id
            && id.parse::<Ipv4Addr>().is_err()
        {
            p.error(
                "spec.bgp.routerID",
                format!("{id:?}: must be an IPv4 address"),
            );
        }
        p.min_items("spec.bgp.peers", bgp.peers.len(), 1);
        p.max_items("spec.bgp.peers", bgp.peers.len(), 16);
        for (i, peer) in bgp.peers.iter().enumerate() {
            let field = format!("spec.bgp.peers[{i}]");
            if peer.address.parse::<IpAddr>().is_err() {
                p.error(
                    format!("{field}.address"),
                    format!("{:?}: must be an IPv4 or IPv6 address", peer.address),
                );
            }
            if bgp.peers[..i].iter().any(|o| o.address == peer.address) {
                p.error(
                    format!("{field}.address"),
                    format!("{} is listed more than once", peer.address),
                );
            }
            p.range(&format!("{field}.asn"), peer.asn, 1, u32::MAX - 1);
            if let Some(port) = peer.port {
                p.port(&format!("{field}.port"), port);
            }
            if let Some(secret) = &peer.password_secret_ref {
                secret_key_ref(&format!("{field}.passwordSecretRef"), secret, p);
            }
        }
    }
    if let Some(ospf) = &spec.ospf {
        if !area_syntax(&ospf.area) {
            p.error(
                "spec.ospf.area",
                format!("{:?} is not an area ID (e.g. 0.0.0.0 or 0)", ospf.area),
            );
        }
        p.min_items("spec.ospf.interfaces", ospf.interfaces.len(), 1);
        p.max_items("spec.ospf.interfaces", ospf.interfaces.len(), 16);
        for (i, iface) in ospf.interfaces.iter().enumerate() {
            let field = format!("spec.ospf.interfaces[{i}]");
            interface(&format!("{field}.name"), &iface.name, p);
            if ospf.interfaces[..i].iter().any(|o| o.name == iface.name) {
                p.error(
                    format!("{field}.name"),
                    format!("{:?} is listed more than once", iface.name),
                );
            }
            if iface.cost == Some(0) {
                p.error(format!("{field}.cost"), "must be from 1 to 65535, got 0");
            }
        }
    }
}

/// A Linux interface name, as [`INTERFACE_PATTERN`].
fn is_interface(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 15
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'@'))
}

fn interface(field: &str, name: &str, p: &mut Problems) {
    if !is_interface(name) {
        p.error(
            field,
            format!(
                "{name:?} is not an interface name (at most 15 letters, digits, '-', '_', '.' \
                 and '@', starting with a letter or digit)"
            ),
        );
    }
}

fn secret_key_ref(field: &str, r: &SecretKeyRef, p: &mut Problems) {
    p.name(&format!("{field}.name"), &r.name);
    if let Some(key) = &r.key {
        let ok = !key.is_empty()
            && key.len() <= 253
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !ok {
            p.error(
                format!("{field}.key"),
                format!("{key:?} is not a Secret key (letters, digits, '-', '.' and '_')"),
            );
        }
    }
}

/// [`OSPF_AREA_PATTERN`]: up to ten digits, or four groups of one to three digits.
fn area_syntax(area: &str) -> bool {
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    digits(area, 10) || {
        let parts: Vec<&str> = area.split('.').collect();
        parts.len() == 4 && parts.iter().all(|p| digits(p, 3))
    }
}

// === conversion ===

/// Checks a ProxyVIP (the schema's rules, then the rest) and returns its plain form, or every
/// problem found, each naming the field.
pub fn to_vip_spec(vip: &ProxyVip) -> Result<VipSpec, Vec<Diagnostic>> {
    let namespace = namespace_of(&vip.metadata);
    let name = vip.metadata.name.as_deref().unwrap_or_default();
    let mut p = Problems::new(format!("ProxyVIP {namespace}/{name}"));
    let spec = &vip.spec;
    admit(spec, &mut p);

    let mut addresses = Vec::new();
    for (i, a) in spec.addresses.iter().enumerate() {
        let Ok(ip) = a.parse::<IpAddr>() else {
            continue; // reported by admit
        };
        if let Some(why) = unusable_vip(ip) {
            p.error(format!("spec.addresses[{i}]"), format!("{ip} is {why}"));
        }
        if !addresses.contains(&ip) {
            // The same address written twice differently (`::1` and `0::1`).
            addresses.push(ip);
        } else if !spec.addresses[..i].contains(a) {
            p.error(
                format!("spec.addresses[{i}]"),
                format!("{ip} is listed more than once"),
            );
        }
    }

    let announce = match spec.mode {
        VipMode::L2 => spec.interface.as_ref().map(|interface| Announce::L2 {
            interface: interface.clone(),
        }),
        VipMode::Bgp => spec
            .bgp
            .as_ref()
            .map(|bgp| Announce::Bgp(bgp_announce(bgp, &mut p))),
        VipMode::Ospf => spec
            .ospf
            .as_ref()
            .map(|ospf| Announce::Ospf(ospf_announce(ospf, &mut p))),
    };
    let result = VipSpec {
        name: format!("{namespace}/{name}"),
        addresses,
        node_selector: spec.node_selector.clone().unwrap_or_default(),
        // Without the section its mode needs, `admit` reported an error and `finish` fails.
        announce: announce.unwrap_or(Announce::L2 {
            interface: String::new(),
        }),
    };
    p.finish(result)
}

/// Why an address cannot be a VIP, if it cannot.
fn unusable_vip(ip: IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        Some("the broadcast address")
    } else {
        None
    }
}

fn bgp_announce(bgp: &BgpSpec, p: &mut Problems) -> BgpAnnounce {
    reserved_asn("spec.bgp.localASN", bgp.local_asn, p);
    let router_id = bgp.router_id.as_ref().and_then(|id| {
        let id: Ipv4Addr = id.parse().ok()?; // a bad one was reported by admit
        if id.is_unspecified() || id.is_broadcast() {
            p.error(
                "spec.bgp.routerID",
                format!("{id} is not a usable BGP identifier"),
            );
        }
        Some(id)
    });
    let peers = bgp
        .peers
        .iter()
        .enumerate()
        .filter_map(|(i, peer)| {
            let field = format!("spec.bgp.peers[{i}]");
            reserved_asn(&format!("{field}.asn"), peer.asn, p);
            let address: IpAddr = peer.address.parse().ok()?;
            if address.is_unspecified() || address.is_multicast() {
                p.error(
                    format!("{field}.address"),
                    format!("{address} cannot be a BGP peer"),
                );
            }
            let hold_time = peer.hold_time.and_then(|GatewayDuration(d)| {
                let secs = whole_seconds(&format!("{field}.holdTime"), d, p)?;
                if secs != 0 && !(3..=65_535).contains(&secs) {
                    p.error(
                        format!("{field}.holdTime"),
                        format!(
                            "must be 0s or from 3s to 65535s, got {}",
                            GatewayDuration(d)
                        ),
                    );
                    return None;
                }
                u16::try_from(secs).ok()
            });
            Some(BgpPeer {
                address,
                asn: peer.asn,
                port: peer.port.unwrap_or(BGP_PORT),
                hold_time,
                password: peer.password_secret_ref.as_ref().map(|r| {
                    (
                        r.name.clone(),
                        r.key.clone().unwrap_or_else(|| "password".to_owned()),
                    )
                }),
            })
        })
        .collect();
    BgpAnnounce {
        local_asn: bgp.local_asn,
        router_id,
        peers,
    }
}

fn reserved_asn(field: &str, asn: u32, p: &mut Problems) {
    if RESERVED_ASNS.contains(&asn) {
        p.error(
            field,
            format!("{asn} is a reserved AS number (0, 23456, 65535 and 4294967295 are)"),
        );
    }
}

/// A duration in whole seconds; `None` after reporting one with a fraction.
fn whole_seconds(field: &str, d: Duration, p: &mut Problems) -> Option<u64> {
    if d.subsec_nanos() != 0 {
        p.error(
            field,
            format!("must be whole seconds, got {}", GatewayDuration(d)),
        );
        return None;
    }
    Some(d.as_secs())
}

fn ospf_announce(ospf: &OspfSpec, p: &mut Problems) -> OspfAnnounce {
    let area = parse_area(&ospf.area).unwrap_or_else(|| {
        if area_syntax(&ospf.area) {
            // The syntax was fine (so admit said nothing), the numbers are not.
            p.error(
                "spec.ospf.area",
                format!(
                    "{:?} is out of range (a number up to 4294967295, or four octets up to 255)",
                    ospf.area
                ),
            );
        }
        Ipv4Addr::UNSPECIFIED
    });
    let interfaces = ospf
        .interfaces
        .iter()
        .enumerate()
        .map(|(i, iface)| {
            let field = format!("spec.ospf.interfaces[{i}]");
            let seconds =
                |key: &str, value: Option<GatewayDuration>, default: u64, p: &mut Problems| {
                    let Some(GatewayDuration(d)) = value else {
                        return default;
                    };
                    let field = format!("{field}.{key}");
                    match whole_seconds(&field, d, p) {
                        Some(s @ 1..=65_535) => s,
                        Some(_) => {
                            p.error(
                                field,
                                format!("must be from 1s to 65535s, got {}", GatewayDuration(d)),
                            );
                            default
                        }
                        None => default,
                    }
                };
            let hello = seconds("helloInterval", iface.hello_interval, 10, p);
            let dead = seconds(
                "deadInterval",
                iface.dead_interval,
                (4 * hello).min(65_535),
                p,
            );
            if dead <= hello {
                p.error(
                    format!("{field}.deadInterval"),
                    format!("must be longer than helloInterval ({hello}s), got {dead}s"),
                );
            }
            OspfInterface {
                name: iface.name.clone(),
                hello_interval: Duration::from_secs(hello),
                dead_interval: Duration::from_secs(dead),
                priority: iface.priority.unwrap_or(0),
                network_type: iface.network_type.unwrap_or(OspfNetworkType::Broadcast),
                cost: iface.cost.filter(|c| *c != 0).unwrap_or(10),
            }
        })
        .collect();
    OspfAnnounce { area, interfaces }
}

/// An area ID: a number up to `u32::MAX` or a dotted quad.
fn parse_area(area: &str) -> Option<Ipv4Addr> {
    if area.bytes().all(|b| b.is_ascii_digit()) {
        return area.parse::<u32>().ok().map(Ipv4Addr::from);
    }
    // `Ipv4Addr` parsing refuses leading zeros, which an area ID may well have (`0.0.0.01`
    // would be odd, but unambiguous); read the octets by hand.
    let octets: Vec<u8> = area
        .split('.')
        .map(|o| o.parse::<u8>().ok())
        .collect::<Option<_>>()?;
    let octets: [u8; 4] = octets.try_into().ok()?;
    Some(Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{Object, parse_yaml};

    fn vip(spec: &str) -> ProxyVip {
        let text = format!(
            "apiVersion: novaedge.io/v1alpha1\nkind: ProxyVIP\n\
             metadata: {{name: v, namespace: shop}}\nspec:\n{spec}"
        );
        let (objects, diags) = parse_yaml(&text, None);
        assert!(diags.is_empty(), "{diags:#?}");
        match &objects[0].object {
            Object::ProxyVip(v) => (**v).clone(),
            other => panic!("{other:?}"),
        }
    }

    fn errors(v: &ProxyVip) -> Vec<String> {
        to_vip_spec(v)
            .unwrap_err()
            .iter()
            .map(|d| {
                assert_eq!(d.object, "ProxyVIP shop/v");
                format!("{} | {}", d.field, d.message)
            })
            .collect()
    }

    #[test]
    fn l2_bgp_and_ospf_convert_with_defaults() {
        let l2 = to_vip_spec(&vip(
            "  addresses: [192.0.2.10, '2001:db8::10']\n  mode: L2\n  interface: eth0\n  \
             nodeSelector: {matchLabels: {edge: 'true'}}",
        ))
        .unwrap();
        assert_eq!(l2.name, "shop/v");
        assert_eq!(
            l2.addresses,
            [
                "192.0.2.10".parse::<IpAddr>().unwrap(),
                "2001:db8::10".parse().unwrap()
            ]
        );
        assert_eq!(
            l2.announce,
            Announce::L2 {
                interface: "eth0".into()
            }
        );
        assert_eq!(l2.node_selector.match_labels["edge"], "true");

        let bgp = to_vip_spec(&vip(
            "  addresses: [192.0.2.10]\n  mode: BGP\n  bgp:\n    localASN: 4200000000\n    \
             routerID: 10.0.0.1\n    peers:\n      - {address: 10.0.0.254, asn: 64500}\n      \
             - {address: 'fd00::1', asn: 4200000000, port: 1179, holdTime: 9s, \
             passwordSecretRef: {name: bgp, key: md5}}",
        ))
        .unwrap();
        assert_eq!(
            bgp.announce,
            Announce::Bgp(BgpAnnounce {
                local_asn: 4_200_000_000,
                router_id: Some(Ipv4Addr::new(10, 0, 0, 1)),
                peers: vec![
                    BgpPeer {
                        address: "10.0.0.254".parse().unwrap(),
                        asn: 64_500,
                        port: 179,
                        hold_time: None,
                        password: None,
                    },
                    BgpPeer {
                        address: "fd00::1".parse().unwrap(),
                        asn: 4_200_000_000,
                        port: 1179,
                        hold_time: Some(9),
                        password: Some(("bgp".into(), "md5".into())),
                    },
                ],
            })
        );
        assert!(bgp.node_selector.match_labels.is_empty());

        let ospf = to_vip_spec(&vip(
            "  addresses: [192.0.2.10]\n  mode: OSPF\n  ospf:\n    area: '1'\n    interfaces:\n      \
             - {name: eth1}\n      - {name: eth2, helloInterval: 1s, deadInterval: 3s, priority: 5, \
             networkType: pointToPoint, cost: 100}",
        ))
        .unwrap();
        assert_eq!(
            ospf.announce,
            Announce::Ospf(OspfAnnounce {
                area: Ipv4Addr::new(0, 0, 0, 1),
                interfaces: vec![
                    OspfInterface {
                        name: "eth1".into(),
                        hello_interval: Duration::from_secs(10),
                        dead_interval: Duration::from_secs(40),
                        priority: 0,
                        network_type: OspfNetworkType::Broadcast,
                        cost: 10,
                    },
                    OspfInterface {
                        name: "eth2".into(),
                        hello_interval: Duration::from_secs(1),
                        dead_interval: Duration::from_secs(3),
                        priority: 5,
                        network_type: OspfNetworkType::PointToPoint,
                        cost: 100,
                    },
                ],
            })
        );
    }

    #[test]
    fn areas_parse_as_numbers_or_dotted_quads() {
        assert_eq!(parse_area("0"), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(parse_area("0.0.0.0"), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(parse_area("4294967295"), Some(Ipv4Addr::BROADCAST));
        assert_eq!(parse_area("10.0.0.01"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        for bad in ["4294967296", "256.0.0.0", "1.2.3", "1.2.3.4.5", "a"] {
            assert_eq!(parse_area(bad), None, "{bad}");
        }
        assert!(area_syntax("0") && area_syntax("192.168.0.1") && area_syntax("256.0.0.0"));
        assert!(!area_syntax("1.2.3") && !area_syntax("12345678901") && !area_syntax(""));
    }

    #[test]
    fn semantic_problems_name_the_field() {
        let v = vip(
            "  addresses: [127.0.0.1, 0.0.0.0, 224.0.0.5, '::1', '0::1']\n  mode: BGP\n  bgp:\n    \
             localASN: 23456\n    routerID: 0.0.0.0\n    peers:\n      \
             - {address: 10.0.0.1, asn: 65535, holdTime: 2s}\n      \
             - {address: 10.0.0.2, asn: 64500, holdTime: 1500ms}",
        );
        assert_eq!(
            errors(&v),
            [
                "spec.addresses[0] | 127.0.0.1 is a loopback address",
                "spec.addresses[1] | 0.0.0.0 is the unspecified address",
                "spec.addresses[2] | 224.0.0.5 is a multicast address",
                "spec.addresses[3] | ::1 is a loopback address",
                "spec.addresses[4] | ::1 is a loopback address",
                "spec.addresses[4] | ::1 is listed more than once",
                "spec.bgp.localASN | 23456 is a reserved AS number (0, 23456, 65535 and \
                 4294967295 are)",
                "spec.bgp.routerID | 0.0.0.0 is not a usable BGP identifier",
                "spec.bgp.peers[0].asn | 65535 is a reserved AS number (0, 23456, 65535 and \
                 4294967295 are)",
                "spec.bgp.peers[0].holdTime | must be 0s or from 3s to 65535s, got 2s",
                "spec.bgp.peers[1].holdTime | must be whole seconds, got 1s500ms",
            ]
        );
        let v = vip(
            "  addresses: [192.0.2.1]\n  mode: OSPF\n  ospf:\n    area: 256.1.1.1\n    \
             interfaces: [{name: eth0, helloInterval: 20s, deadInterval: 20s}, \
             {name: eth1, helloInterval: 70000s}]",
        );
        assert_eq!(
            errors(&v),
            [
                "spec.ospf.area | \"256.1.1.1\" is out of range (a number up to 4294967295, or \
                 four octets up to 255)",
                "spec.ospf.interfaces[0].deadInterval | must be longer than helloInterval (20s), \
                 got 20s",
                "spec.ospf.interfaces[1].helloInterval | must be from 1s to 65535s, got 19h26m40s",
            ]
        );
    }

    #[test]
    fn the_schema_rules_are_checked_too() {
        // Built in code, as an object stored before a rule existed could be: not admitted.
        let mut v = vip("  addresses: [192.0.2.1]\n  mode: L2\n  interface: eth0");
        v.spec.mode = VipMode::Bgp;
        v.spec.addresses.push("192.0.2.300".into());
        v.spec.interface = Some("this-name-is-too-long".into());
        assert_eq!(
            errors(&v),
            [
                "spec.addresses[1] | \"192.0.2.300\": each address must be an IPv4 or IPv6 \
                 address",
                "spec.interface | interface is required for mode L2, and only for it",
                "spec.bgp | bgp is required for mode BGP, and only for it",
                "spec.interface | \"this-name-is-too-long\" is not an interface name (at most 15 \
                 letters, digits, '-', '_', '.' and '@', starting with a letter or digit)",
            ]
        );
    }
}
