//! Virtual IPs a node is to hold, and how to make the network send their traffic to it.
//!
//! The controller decides placement: a per-node snapshot lists only the VIPs assigned to that
//! node (an L2 VIP to exactly one node, a BGP or OSPF VIP to every healthy matching node). The
//! agent binds and announces what is listed, and withdraws what no longer is.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// One ProxyVIP assigned to this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    /// `namespace/name` of the ProxyVIP; unique in the snapshot.
    pub name: String,
    /// Host addresses, announced as /32 or /128.
    pub addresses: Vec<IpAddr>,
    pub announce: VipAnnounce,
}

/// How the VIP is made reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VipAnnounce {
    /// Bound to an interface and announced by gratuitous ARP / unsolicited NA; `None`: the
    /// interface of the node's default route.
    L2 { interface: Option<String> },
    /// Announced to BGP peers.
    Bgp(BgpAnnounce),
    /// Advertised into an OSPF area.
    Ospf(OspfAnnounce),
}

impl VipAnnounce {
    /// `l2`, `bgp` or `ospf`.
    pub fn mode(&self) -> &'static str {
        match self {
            VipAnnounce::L2 { .. } => "l2",
            VipAnnounce::Bgp(_) => "bgp",
            VipAnnounce::Ospf(_) => "ospf",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpAnnounce {
    /// This node's AS number (4-octet).
    pub local_asn: u32,
    /// `None`: chosen by the agent (an IPv4 address of the node).
    pub router_id: Option<Ipv4Addr>,
    pub peers: Vec<BgpPeer>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct BgpPeer {
    pub address: IpAddr,
    pub asn: u32,
    pub port: u16,
    /// Proposed hold time: 0 or 3 s to 65535 s.
    pub hold_time: Duration,
    /// TCP-MD5 password (RFC 2385); never shown by `Debug`.
    pub password: Option<String>,
}

impl fmt::Debug for BgpPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BgpPeer")
            .field("address", &self.address)
            .field("asn", &self.asn)
            .field("port", &self.port)
            .field("hold_time", &self.hold_time)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OspfAnnounce {
    /// The area ID, in dotted-quad form.
    pub area: Ipv4Addr,
    pub interfaces: Vec<OspfInterface>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OspfInterface {
    pub name: String,
    pub hello_interval: Duration,
    pub dead_interval: Duration,
    /// Router priority for DR election; 0 never becomes DR/BDR.
    pub priority: u8,
    pub network: OspfNetwork,
    pub cost: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OspfNetwork {
    Broadcast,
    PointToPoint,
}

// === wire ===

use crate::error::FieldError;
use crate::proto;

const DEFAULT_BGP_PORT: u16 = 179;
const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(90);

/// Parses the wire VIPs; every unparsable field is reported.
pub(crate) fn vips_from_wire(wire: Vec<proto::Vip>, errors: &mut Vec<FieldError>) -> Vec<Vip> {
    wire.into_iter()
        .enumerate()
        .filter_map(|(i, v)| vip_from_wire(i, v, errors))
        .collect()
}

fn vip_from_wire(i: usize, v: proto::Vip, errors: &mut Vec<FieldError>) -> Option<Vip> {
    let object = crate::convert::object_name("vip", i, &v.name);
    let before = errors.len();
    let ip = |field: String, text: &str, errors: &mut Vec<FieldError>| {
        text.parse::<IpAddr>().map_err(|_| {
            errors.push(FieldError::new(
                &object,
                field,
                format!("{text:?} is not an IP address"),
            ));
        })
    };
    let addresses: Vec<IpAddr> = v
        .addresses
        .iter()
        .enumerate()
        .filter_map(|(j, a)| ip(format!("addresses[{j}]"), a, errors).ok())
        .collect();
    let announce = match v.announce {
        None => {
            errors.push(FieldError::new(
                &object,
                "announce",
                "required: l2, bgp or ospf",
            ));
            None
        }
        Some(proto::vip::Announce::L2(l2)) => Some(VipAnnounce::L2 {
            interface: (!l2.interface.is_empty()).then_some(l2.interface),
        }),
        Some(proto::vip::Announce::Bgp(b)) => {
            let router_id = if b.router_id.is_empty() {
                None
            } else {
                match b.router_id.parse::<Ipv4Addr>() {
                    Ok(id) => Some(id),
                    Err(_) => {
                        errors.push(FieldError::new(
                            &object,
                            "bgp.router_id",
                            format!("{:?} is not an IPv4 address", b.router_id),
                        ));
                        None
                    }
                }
            };
            let peers = b
                .peers
                .into_iter()
                .enumerate()
                .filter_map(|(j, p)| {
                    let address = ip(format!("bgp.peers[{j}].address"), &p.address, errors).ok()?;
                    let port = match u16::try_from(p.port) {
                        Ok(0) => DEFAULT_BGP_PORT,
                        Ok(port) => port,
                        Err(_) => {
                            errors.push(FieldError::new(
                                &object,
                                format!("bgp.peers[{j}].port"),
                                format!("{} is not a TCP port", p.port),
                            ));
                            return None;
                        }
                    };
                    Some(BgpPeer {
                        address,
                        asn: p.asn,
                        port,
                        hold_time: p
                            .hold_time_s
                            .map_or(DEFAULT_HOLD_TIME, |s| Duration::from_secs(s.into())),
                        password: (!p.password.is_empty()).then_some(p.password),
                    })
                })
                .collect();
            Some(VipAnnounce::Bgp(BgpAnnounce {
                local_asn: b.local_asn,
                router_id,
                peers,
            }))
        }
        Some(proto::vip::Announce::Ospf(o)) => {
            let area = o.area.parse::<Ipv4Addr>().map_err(|_| {
                errors.push(FieldError::new(
                    &object,
                    "ospf.area",
                    format!("{:?} is not a dotted-quad area ID", o.area),
                ));
            });
            let interfaces = o
                .interfaces
                .into_iter()
                .enumerate()
                .filter_map(|(j, i)| {
                    let priority = u8::try_from(i.priority).map_err(|_| {
                        errors.push(FieldError::new(
                            &object,
                            format!("ospf.interfaces[{j}].priority"),
                            format!("must be at most 255, got {}", i.priority),
                        ));
                    });
                    let cost = u16::try_from(i.cost).map_err(|_| {
                        errors.push(FieldError::new(
                            &object,
                            format!("ospf.interfaces[{j}].cost"),
                            format!("must be at most 65535, got {}", i.cost),
                        ));
                    });
                    let network = match proto::OspfNetwork::try_from(i.network) {
                        Ok(proto::OspfNetwork::Broadcast) => OspfNetwork::Broadcast,
                        Ok(proto::OspfNetwork::PointToPoint) => OspfNetwork::PointToPoint,
                        Err(_) => {
                            errors.push(FieldError::new(
                                &object,
                                format!("ospf.interfaces[{j}].network"),
                                format!("unknown network type {}", i.network),
                            ));
                            return None;
                        }
                    };
                    Some(OspfInterface {
                        name: i.name,
                        hello_interval: Duration::from_millis(i.hello_interval_ms.into()),
                        dead_interval: Duration::from_millis(i.dead_interval_ms.into()),
                        priority: priority.ok()?,
                        network,
                        cost: cost.ok()?,
                    })
                })
                .collect();
            area.ok()
                .map(|area| VipAnnounce::Ospf(OspfAnnounce { area, interfaces }))
        }
    };
    (errors.len() == before).then_some(Vip {
        name: v.name,
        addresses,
        announce: announce?,
    })
}

pub(crate) fn vip_to_wire(v: &Vip) -> proto::Vip {
    proto::Vip {
        name: v.name.clone(),
        addresses: v.addresses.iter().map(IpAddr::to_string).collect(),
        announce: Some(match &v.announce {
            VipAnnounce::L2 { interface } => proto::vip::Announce::L2(proto::L2Announce {
                interface: interface.clone().unwrap_or_default(),
            }),
            VipAnnounce::Bgp(b) => proto::vip::Announce::Bgp(proto::BgpAnnounce {
                local_asn: b.local_asn,
                router_id: b.router_id.map(|id| id.to_string()).unwrap_or_default(),
                peers: b
                    .peers
                    .iter()
                    .map(|p| proto::BgpPeer {
                        address: p.address.to_string(),
                        asn: p.asn,
                        port: p.port.into(),
                        hold_time_s: Some(u32::try_from(p.hold_time.as_secs()).unwrap_or(u32::MAX)),
                        password: p.password.clone().unwrap_or_default(),
                    })
                    .collect(),
            }),
            VipAnnounce::Ospf(o) => proto::vip::Announce::Ospf(proto::OspfAnnounce {
                area: o.area.to_string(),
                interfaces: o
                    .interfaces
                    .iter()
                    .map(|i| proto::OspfInterface {
                        name: i.name.clone(),
                        hello_interval_ms: millis(i.hello_interval),
                        dead_interval_ms: millis(i.dead_interval),
                        priority: i.priority.into(),
                        network: match i.network {
                            OspfNetwork::Broadcast => proto::OspfNetwork::Broadcast,
                            OspfNetwork::PointToPoint => proto::OspfNetwork::PointToPoint,
                        } as i32,
                        cost: i.cost.into(),
                    })
                    .collect(),
            }),
        }),
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

// === validation ===

/// Checks the VIPs: unique names, host addresses that are not special, each address in one VIP
/// only, and announcement settings a speaker can run with.
pub(crate) fn validate_vips(vips: &[Vip], errors: &mut Vec<FieldError>) {
    let mut names = std::collections::HashSet::new();
    let mut owners: std::collections::HashMap<IpAddr, &str> = std::collections::HashMap::new();
    for (i, v) in vips.iter().enumerate() {
        let object = crate::convert::object_name("vip", i, &v.name);
        let mut error = |field: String, message: String| {
            errors.push(FieldError::new(&object, field, message));
        };
        if v.name.is_empty() {
            error("name".into(), "required".into());
        } else if !names.insert(v.name.as_str()) {
            error("name".into(), format!("duplicate VIP name {:?}", v.name));
        }
        if v.addresses.is_empty() {
            error(
                "addresses".into(),
                "at least one address is required".into(),
            );
        }
        for (j, a) in v.addresses.iter().enumerate() {
            if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
                error(
                    format!("addresses[{j}]"),
                    format!("{a} cannot be a VIP (unspecified, multicast or loopback)"),
                );
            } else if let Some(other) = owners.insert(*a, &v.name)
                && other != v.name
            {
                error(
                    format!("addresses[{j}]"),
                    format!("{a} is also an address of VIP {other:?}"),
                );
            }
        }
        match &v.announce {
            VipAnnounce::L2 { interface } => {
                if interface.as_deref().is_some_and(|i| !valid_interface(i)) {
                    error(
                        "l2.interface".into(),
                        format!("{:?} is not an interface name", interface),
                    );
                }
            }
            VipAnnounce::Bgp(b) => {
                if b.local_asn == 0 {
                    error("bgp.local_asn".into(), "must not be 0".into());
                }
                if b.peers.is_empty() {
                    error("bgp.peers".into(), "at least one peer is required".into());
                }
                for (j, p) in b.peers.iter().enumerate() {
                    if p.asn == 0 {
                        error(format!("bgp.peers[{j}].asn"), "must not be 0".into());
                    }
                    let hold = p.hold_time.as_secs();
                    if p.hold_time.subsec_nanos() != 0
                        || (hold != 0 && !(3..=65_535).contains(&hold))
                    {
                        error(
                            format!("bgp.peers[{j}].hold_time"),
                            format!(
                                "must be 0 or whole seconds from 3 to 65535, got {:?}",
                                p.hold_time
                            ),
                        );
                    }
                    if p.password.as_ref().is_some_and(|pw| pw.len() > 80) {
                        error(
                            format!("bgp.peers[{j}].password"),
                            "TCP-MD5 keys are at most 80 bytes".into(),
                        );
                    }
                }
            }
            VipAnnounce::Ospf(o) => {
                if v.addresses.iter().any(IpAddr::is_ipv6) {
                    error(
                        "addresses".into(),
                        "OSPFv2 announces IPv4 addresses only".into(),
                    );
                }
                if o.interfaces.is_empty() {
                    error(
                        "ospf.interfaces".into(),
                        "at least one interface is required".into(),
                    );
                }
                for (j, i) in o.interfaces.iter().enumerate() {
                    if !valid_interface(&i.name) {
                        error(
                            format!("ospf.interfaces[{j}].name"),
                            format!("{:?} is not an interface name", i.name),
                        );
                    }
                    let hello = i.hello_interval.as_secs();
                    if i.hello_interval.subsec_nanos() != 0 || !(1..=65_535).contains(&hello) {
                        error(
                            format!("ospf.interfaces[{j}].hello_interval"),
                            format!(
                                "must be whole seconds from 1 to 65535, got {:?}",
                                i.hello_interval
                            ),
                        );
                    }
                    if i.dead_interval.subsec_nanos() != 0
                        || i.dead_interval <= i.hello_interval
                        || i.dead_interval.as_secs() > u64::from(u32::MAX)
                    {
                        error(
                            format!("ospf.interfaces[{j}].dead_interval"),
                            format!(
                                "must be whole seconds above the hello interval, got {:?}",
                                i.dead_interval
                            ),
                        );
                    }
                    if i.cost == 0 {
                        error(
                            format!("ospf.interfaces[{j}].cost"),
                            "must be at least 1".into(),
                        );
                    }
                }
            }
        }
    }
}

/// A Linux interface name: 1 to 15 bytes, no `/`, whitespace or NUL.
fn valid_interface(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConfigSnapshot;

    fn l2(name: &str, addresses: &[&str]) -> Vip {
        Vip {
            name: name.into(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            announce: VipAnnounce::L2 { interface: None },
        }
    }

    fn errors(vips: Vec<Vip>) -> Vec<String> {
        let snapshot = ConfigSnapshot {
            vips,
            ..ConfigSnapshot::default()
        };
        match snapshot.validate() {
            Ok(()) => Vec::new(),
            Err(e) => e
                .errors()
                .iter()
                .map(|e| format!("{}: {}: {}", e.object, e.field, e.message))
                .collect(),
        }
    }

    #[test]
    fn vips_are_checked_field_by_field() {
        assert!(errors(vec![l2("a", &["192.0.2.1", "2001:db8::1"])]).is_empty());
        let bgp = |hold: u64, asn: u32| Vip {
            name: "b".into(),
            addresses: vec!["192.0.2.2".parse().unwrap()],
            announce: VipAnnounce::Bgp(BgpAnnounce {
                local_asn: 65_001,
                router_id: None,
                peers: vec![BgpPeer {
                    address: "10.0.0.1".parse().unwrap(),
                    asn,
                    port: 179,
                    hold_time: Duration::from_secs(hold),
                    password: None,
                }],
            }),
        };
        assert!(errors(vec![bgp(0, 65_000)]).is_empty());
        assert!(errors(vec![bgp(3, 65_000)]).is_empty());
        let ospf = Vip {
            name: "o".into(),
            addresses: vec!["2001:db8::3".parse().unwrap()],
            announce: VipAnnounce::Ospf(OspfAnnounce {
                area: Ipv4Addr::UNSPECIFIED,
                interfaces: vec![OspfInterface {
                    name: "eth/0".into(),
                    hello_interval: Duration::from_secs(10),
                    dead_interval: Duration::from_secs(10),
                    priority: 0,
                    network: OspfNetwork::Broadcast,
                    cost: 0,
                }],
            }),
        };
        assert_eq!(
            errors(vec![
                l2("a", &["192.0.2.1", "0.0.0.0"]),
                l2("a", &["192.0.2.1"]),
                l2("c", &[]),
                bgp(2, 0),
                ospf,
            ]),
            [
                "vip \"a\": addresses[1]: 0.0.0.0 cannot be a VIP (unspecified, multicast or loopback)",
                "vip \"a\": name: duplicate VIP name \"a\"",
                "vip \"c\": addresses: at least one address is required",
                "vip \"b\": bgp.peers[0].asn: must not be 0",
                "vip \"b\": bgp.peers[0].hold_time: must be 0 or whole seconds from 3 to 65535, got 2s",
                "vip \"o\": addresses: OSPFv2 announces IPv4 addresses only",
                "vip \"o\": ospf.interfaces[0].name: \"eth/0\" is not an interface name",
                "vip \"o\": ospf.interfaces[0].dead_interval: must be whole seconds above the hello interval, got 10s",
                "vip \"o\": ospf.interfaces[0].cost: must be at least 1",
            ]
        );
        // The same address in two VIPs.
        assert_eq!(
            errors(vec![l2("a", &["192.0.2.1"]), l2("b", &["192.0.2.1"])]),
            ["vip \"b\": addresses[0]: 192.0.2.1 is also an address of VIP \"a\""]
        );
    }
}
