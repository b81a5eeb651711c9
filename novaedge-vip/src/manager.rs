//! Holds the VIPs a snapshot assigns to this node: starts, feeds and stops the drivers.
//!
//! [`VipManager::set`] takes the node's whole list of VIPs ([`novaedge_snapshot::Vip`]) and
//! makes the drivers match it, removing before adding so that an address that moves between
//! interfaces or peers is never held twice:
//!
//! - **L2**: one [`L2Driver`] per interface (the VIP's, or the interface of the default route
//!   for its address family). L2 VIPs are held only while the caller says they may be
//!   (`l2_allowed`): an agent allows them while its contact with the controller is fresh,
//!   `novaedge run` always.
//! - **BGP**: one [`BgpDriver`] per peer (address and port), announcing every VIP that lists
//!   the peer. VIPs that list the same peer must agree on the session's settings (local AS,
//!   router ID, peer AS, hold time, password); a VIP that disagrees with the first one to name
//!   the peer is not announced to it, and the reason is in [`VipManager::problems`]. A peer
//!   whose settings change gets a new session (the old one withdraws and says Cease).
//!   Peers with a password use TCP-MD5.
//! - **OSPF**: one [`OspfDriver`] for all OSPF VIPs, joining the area on the interfaces the
//!   first OSPF VIP names (with their hello/dead intervals, priority, network type and cost).
//!   A VIP whose OSPF settings (area and interfaces) differ from the first one's is not
//!   advertised, and the reason is in [`VipManager::problems`]; so are IPv6 addresses of OSPF
//!   VIPs (OSPFv2 carries IPv4 only). When the settings change, the speaker is restarted: the
//!   old one flushes its LSAs, a new one joins the area. The router ID is
//!   [`ManagerConfig::router_id`] if set, else the first IPv4 address of the first OSPF
//!   interface.
//!
//! Drivers that are left without VIPs are shut down (for BGP: withdraws, then Cease; for
//! OSPF: every LSA flushed).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use novaedge_snapshot::{BgpAnnounce, BgpPeer, OspfAnnounce, Vip, VipAnnounce};
use tokio::sync::Mutex;

use crate::bgp::{BgpConfig, BgpDriver, PeerConfig};
use crate::l2::{L2Config, L2Driver};
use crate::ospf::{OspfConfig, OspfDriver, OspfInterfaceConfig, OspfNetwork};
use crate::{DriverStatus, VipDriver, VipState};

/// Settings of a [`VipManager`] that do not come from the snapshot.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Valid lifetime of the L2 addresses (see [`L2Config::address_lease`]); the controller's
    /// fencing delay must exceed it.
    pub l2_lease: Duration,
    /// Gratuitous ARP / NA frames sent after each take-over.
    pub l2_announce_count: u32,
    /// Time between them.
    pub l2_announce_interval: Duration,
    /// Set `arp_ignore=1`/`arp_announce=2` on the VIP interfaces.
    pub set_arp_sysctls: bool,
    /// The BGP identifier for VIPs that do not give one, and the OSPF router ID; `None`: for
    /// BGP this node's IPv4 address towards each peer, for OSPF the first IPv4 address of the
    /// first OSPF interface.
    pub router_id: Option<Ipv4Addr>,
    /// First reconnect delay of BGP sessions (doubles up to a minute).
    pub bgp_connect_retry: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            l2_lease: Duration::from_secs(1),
            l2_announce_count: 3,
            l2_announce_interval: Duration::from_millis(300),
            set_arp_sysctls: false,
            router_id: None,
            bgp_connect_retry: Duration::from_secs(1),
        }
    }
}

/// The settings of one BGP session; VIPs that share a peer must agree on them.
#[derive(Clone, PartialEq, Eq)]
struct Session {
    local_as: u32,
    router_id: Ipv4Addr,
    remote_as: u32,
    hold_time: u16,
    password: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("local_as", &self.local_as)
            .field("router_id", &self.router_id)
            .field("remote_as", &self.remote_as)
            .field("hold_time", &self.hold_time)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The settings of the OSPF speaker; OSPF VIPs must agree on them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OspfSettings {
    router_id: Ipv4Addr,
    announce: OspfAnnounce,
}

/// What the OSPF VIPs of a snapshot ask for: the settings (area and interfaces) of the first
/// OSPF VIP, the IPv4 addresses of the VIPs that agree with it, and that VIP's name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OspfPlan {
    announce: OspfAnnounce,
    addresses: BTreeSet<IpAddr>,
    owner: String,
}

/// Groups the OSPF VIPs of `vips`: the first one decides the area and interfaces; VIPs that
/// differ, and IPv6 addresses, are reported in `problems` and left out.
fn plan_ospf(vips: &[Vip], problems: &mut Vec<String>) -> Option<OspfPlan> {
    let mut plan: Option<OspfPlan> = None;
    for vip in vips {
        let VipAnnounce::Ospf(o) = &vip.announce else {
            continue;
        };
        let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = vip.addresses.iter().partition(|a| a.is_ipv4());
        for a in v6 {
            problems.push(format!(
                "VIP {}: {a}: OSPFv2 advertises IPv4 addresses only; not advertised",
                vip.name
            ));
        }
        match &mut plan {
            None => {
                plan = Some(OspfPlan {
                    announce: o.clone(),
                    addresses: v4.into_iter().collect(),
                    owner: vip.name.clone(),
                });
            }
            Some(p) if p.announce == *o => p.addresses.extend(v4),
            Some(p) => problems.push(format!(
                "VIP {}: its OSPF settings (area {}, interfaces {}) differ from those of VIP {} \
                 (area {}, interfaces {}), which decide the node's OSPF speaker; not advertised",
                vip.name,
                o.area,
                interface_list(o),
                p.owner,
                p.announce.area,
                interface_list(&p.announce),
            )),
        }
    }
    plan
}

fn interface_list(o: &OspfAnnounce) -> String {
    let names: Vec<&str> = o.interfaces.iter().map(|i| i.name.as_str()).collect();
    format!("[{}]", names.join(", "))
}

/// The driver's configuration for `settings`.
fn ospf_config(settings: &OspfSettings) -> OspfConfig {
    let mut config = OspfConfig::new(settings.router_id, settings.announce.area);
    config.interfaces = settings
        .announce
        .interfaces
        .iter()
        .map(|i| OspfInterfaceConfig {
            hello_interval: i.hello_interval,
            dead_interval: i.dead_interval,
            priority: i.priority,
            cost: i.cost,
            ..OspfInterfaceConfig::new(
                i.name.clone(),
                match i.network {
                    novaedge_snapshot::OspfNetwork::Broadcast => OspfNetwork::Broadcast,
                    novaedge_snapshot::OspfNetwork::PointToPoint => OspfNetwork::PointToPoint,
                },
            )
        })
        .collect();
    config
}

#[derive(Debug)]
struct Running<D> {
    driver: D,
    /// What the driver was told to hold.
    assigned: BTreeSet<IpAddr>,
}

#[derive(Debug, Default)]
struct Drivers {
    l2: BTreeMap<String, Running<L2Driver>>,
    bgp: BTreeMap<SocketAddr, (Session, Running<BgpDriver>)>,
    ospf: Option<(OspfSettings, Running<OspfDriver>)>,
    /// L2 VIP address -> VIP name, for what the node says it holds.
    l2_names: BTreeMap<IpAddr, String>,
}

/// Keeps the drivers in line with the VIPs assigned to this node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct VipManager {
    config: Arc<ManagerConfig>,
    drivers: Arc<Mutex<Drivers>>,
    /// Names of the L2 VIPs with at least one address bound: what the node claims to hold.
    held: Arc<SyncMutex<Vec<String>>>,
    problems: Arc<SyncMutex<Vec<String>>>,
}

impl VipManager {
    /// A manager holding nothing.
    pub fn new(config: ManagerConfig) -> Self {
        Self {
            config: Arc::new(config),
            drivers: Arc::default(),
            held: Arc::default(),
            problems: Arc::default(),
        }
    }

    /// The L2 VIPs (by name) with an address bound on this node now, or being bound: a node
    /// claims a VIP from the moment it starts adding its address until the address is gone.
    pub fn held_l2(&self) -> Vec<String> {
        lock(&self.held).clone()
    }

    /// Why some assigned VIPs are not held (as of the last [`set`](Self::set)).
    pub fn problems(&self) -> Vec<String> {
        lock(&self.problems).clone()
    }

    /// The status of every running driver, named `l2/<interface>`, `bgp/<peer>` or
    /// `ospf/<area>`.
    pub async fn statuses(&self) -> Vec<(String, DriverStatus)> {
        let drivers = self.drivers.lock().await;
        let l2 = drivers
            .l2
            .iter()
            .map(|(i, r)| (format!("l2/{i}"), r.driver.status()));
        let bgp = drivers
            .bgp
            .iter()
            .map(|(p, (_, r))| (format!("bgp/{p}"), r.driver.status()));
        let ospf = drivers
            .ospf
            .iter()
            .map(|(s, r)| (format!("ospf/{}", s.announce.area), r.driver.status()));
        l2.chain(bgp).chain(ospf).collect()
    }

    /// Makes the drivers hold exactly `vips` (L2 ones only if `l2_allowed`).
    pub async fn set(&self, vips: &[Vip], l2_allowed: bool) {
        let mut drivers = self.drivers.lock().await;
        let mut problems = Vec::new();

        // What each driver is to hold.
        let mut l2: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
        let mut l2_names = BTreeMap::new();
        let mut bgp: BTreeMap<SocketAddr, (Session, BTreeSet<IpAddr>, String)> = BTreeMap::new();
        for vip in vips {
            match &vip.announce {
                VipAnnounce::L2 { interface } if l2_allowed => {
                    for &addr in &vip.addresses {
                        let iface = match interface {
                            Some(i) => i.clone(),
                            None => match default_route_interface(addr) {
                                Ok(i) => i,
                                Err(e) => {
                                    problems.push(format!("VIP {}: {addr}: {e}", vip.name));
                                    continue;
                                }
                            },
                        };
                        l2.entry(iface).or_default().insert(addr);
                        l2_names.insert(addr, vip.name.clone());
                    }
                }
                VipAnnounce::L2 { .. } => {}
                VipAnnounce::Bgp(b) => {
                    for peer in &b.peers {
                        let key = SocketAddr::new(peer.address, peer.port);
                        let session = match self.session(b, peer) {
                            Ok(s) => s,
                            Err(e) => {
                                problems.push(format!("VIP {}: BGP peer {key}: {e}", vip.name));
                                continue;
                            }
                        };
                        match bgp.get_mut(&key) {
                            Some((first, addrs, _)) if *first == session => {
                                addrs.extend(&vip.addresses);
                            }
                            Some((_, _, owner)) => problems.push(format!(
                                "VIP {}: BGP peer {key}: its session settings differ from those \
                                 of VIP {owner}, which names the same peer; not announced there",
                                vip.name
                            )),
                            None => {
                                bgp.insert(
                                    key,
                                    (
                                        session,
                                        vip.addresses.iter().copied().collect(),
                                        vip.name.clone(),
                                    ),
                                );
                            }
                        }
                    }
                }
                // Grouped by `plan_ospf` below.
                VipAnnounce::Ospf(_) => {}
            }
        }
        let ospf = match plan_ospf(vips, &mut problems) {
            Some(plan) => match self.ospf_router_id(&plan.announce) {
                Ok(router_id) => Some((
                    OspfSettings {
                        router_id,
                        announce: plan.announce,
                    },
                    plan.addresses,
                )),
                Err(e) => {
                    problems.push(format!(
                        "OSPF VIPs (settings of VIP {}): {e}; not advertised",
                        plan.owner
                    ));
                    None
                }
            },
            None => None,
        };

        // Removals first: an address leaves its old interface or peer before it is added
        // anywhere else.
        for (iface, running) in &mut drivers.l2 {
            let keep = l2.get(iface);
            unassign_missing(running, keep).await;
        }
        for (key, (session, running)) in &mut drivers.bgp {
            let keep = bgp
                .get(key)
                .filter(|(wanted, _, _)| wanted == session)
                .map(|(_, addrs, _)| addrs);
            unassign_missing(running, keep).await;
        }
        if let Some((settings, running)) = &mut drivers.ospf {
            let keep = ospf
                .as_ref()
                .filter(|(wanted, _)| wanted == settings)
                .map(|(_, addrs)| addrs);
            unassign_missing(running, keep).await;
        }
        let idle_l2: Vec<String> = drivers
            .l2
            .iter()
            .filter(|(_, r)| r.assigned.is_empty())
            .map(|(i, _)| i.clone())
            .collect();
        for iface in idle_l2 {
            if let Some(r) = drivers.l2.remove(&iface) {
                let _ = r.driver.shutdown().await;
            }
        }
        let idle_bgp: Vec<SocketAddr> = drivers
            .bgp
            .iter()
            .filter(|(k, (s, r))| {
                r.assigned.is_empty() || bgp.get(k).is_none_or(|(wanted, _, _)| wanted != s)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in idle_bgp {
            if let Some((_, r)) = drivers.bgp.remove(&key) {
                tracing::info!(peer = %key, "stopping the BGP session");
                let _ = r.driver.shutdown().await;
            }
        }
        let stop_ospf = drivers.ospf.as_ref().is_some_and(|(settings, r)| {
            r.assigned.is_empty() || ospf.as_ref().is_none_or(|(wanted, _)| wanted != settings)
        });
        if stop_ospf && let Some((settings, r)) = drivers.ospf.take() {
            tracing::info!(area = %settings.announce.area, "stopping the OSPF speaker");
            let _ = r.driver.shutdown().await;
        }

        // The names are claimed before the addresses are bound.
        drivers.l2_names = l2_names;
        *lock(&self.held) = claimed(&drivers, l2.values().flatten());

        for (iface, addrs) in l2 {
            if !drivers.l2.contains_key(&iface) {
                let config = L2Config {
                    announce_count: self.config.l2_announce_count,
                    announce_interval: self.config.l2_announce_interval,
                    address_lease: Some(self.config.l2_lease),
                    set_arp_sysctls: self.config.set_arp_sysctls,
                    ..L2Config::new(iface.clone())
                };
                match L2Driver::start(config).await {
                    Ok(driver) => {
                        drivers.l2.insert(
                            iface.clone(),
                            Running {
                                driver,
                                assigned: BTreeSet::new(),
                            },
                        );
                    }
                    Err(e) => {
                        problems.push(format!("L2 VIPs on {iface}: {e}"));
                        continue;
                    }
                }
            }
            if let Some(running) = drivers.l2.get_mut(&iface) {
                assign_new(running, &addrs).await;
            }
        }
        for (key, (session, addrs, _)) in bgp {
            if let Entry::Vacant(slot) = drivers.bgp.entry(key) {
                match self.start_bgp(key, &session).await {
                    Ok(driver) => {
                        tracing::info!(peer = %key, "starting the BGP session");
                        slot.insert((
                            session,
                            Running {
                                driver,
                                assigned: BTreeSet::new(),
                            },
                        ));
                    }
                    Err(e) => {
                        problems.push(format!("BGP peer {key}: {e}"));
                        continue;
                    }
                }
            }
            if let Some((_, running)) = drivers.bgp.get_mut(&key) {
                assign_new(running, &addrs).await;
            }
        }

        if let Some((settings, addrs)) = ospf {
            if drivers.ospf.is_none() && !addrs.is_empty() {
                match OspfDriver::start(ospf_config(&settings)).await {
                    Ok(driver) => {
                        tracing::info!(area = %settings.announce.area, router_id = %settings.router_id, "starting the OSPF speaker");
                        drivers.ospf = Some((
                            settings,
                            Running {
                                driver,
                                assigned: BTreeSet::new(),
                            },
                        ));
                    }
                    Err(e) => problems.push(format!("OSPF VIPs not advertised: {e}")),
                }
            }
            if let Some((_, running)) = &mut drivers.ospf {
                assign_new(running, &addrs).await;
            }
        }

        // Addresses that could not be bound are not claimed.
        let bound: Vec<IpAddr> = drivers
            .l2
            .values()
            .flat_map(|r| {
                let status = r.driver.status();
                r.assigned
                    .iter()
                    .copied()
                    .filter(|a| matches!(status.vips.get(a), Some(VipState::Active { .. })))
                    .collect::<Vec<_>>()
            })
            .collect();
        *lock(&self.held) = claimed(&drivers, bound.iter());
        let mut last = lock(&self.problems);
        for p in problems.iter().filter(|p| !last.contains(p)) {
            tracing::warn!("{p}");
        }
        *last = problems;
    }

    /// Withdraws everything and stops every driver.
    pub async fn shutdown(&self) {
        let mut drivers = self.drivers.lock().await;
        let l2 = std::mem::take(&mut drivers.l2);
        let bgp = std::mem::take(&mut drivers.bgp);
        let ospf = drivers.ospf.take();
        let stops = l2
            .into_values()
            .map(|r| Box::new(r.driver) as Box<dyn VipDriver>)
            .chain(
                bgp.into_values()
                    .map(|(_, r)| Box::new(r.driver) as Box<dyn VipDriver>),
            )
            .chain(ospf.map(|(_, r)| Box::new(r.driver) as Box<dyn VipDriver>))
            .collect::<Vec<_>>();
        futures_util::future::join_all(stops.iter().map(|d| d.shutdown())).await;
        lock(&self.held).clear();
    }

    async fn start_bgp(&self, key: SocketAddr, session: &Session) -> Result<BgpDriver, String> {
        let mut peer = PeerConfig::new(key.ip(), session.remote_as);
        peer.port = key.port();
        peer.password.clone_from(&session.password);
        let config = BgpConfig {
            hold_time: session.hold_time,
            connect_retry: self.config.bgp_connect_retry,
            peers: vec![peer],
            ..BgpConfig::new(session.local_as, session.router_id)
        };
        BgpDriver::start(config).await.map_err(|e| e.to_string())
    }

    /// The OSPF router ID: the configured one, else the first IPv4 address of the first
    /// interface.
    fn ospf_router_id(&self, o: &OspfAnnounce) -> Result<Ipv4Addr, String> {
        if let Some(id) = self.config.router_id {
            return Ok(id);
        }
        let first = o
            .interfaces
            .first()
            .ok_or("no interface given".to_string())?;
        crate::ospf::interface_ipv4(&first.name).map_err(|e| {
            format!(
                "cannot choose a router ID from interface {}: {e}; set the agent's router ID",
                first.name
            )
        })
    }

    fn session(&self, b: &BgpAnnounce, peer: &BgpPeer) -> Result<Session, String> {
        let router_id = match b.router_id.or(self.config.router_id) {
            Some(id) => id,
            None => local_ipv4_towards(peer.address)?,
        };
        Ok(Session {
            local_as: b.local_asn,
            router_id,
            remote_as: peer.asn,
            hold_time: u16::try_from(peer.hold_time.as_secs()).unwrap_or(u16::MAX),
            password: peer.password.clone(),
        })
    }
}

fn lock<T>(m: &SyncMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The names of the L2 VIPs among `addrs`.
fn claimed<'a>(drivers: &Drivers, addrs: impl Iterator<Item = &'a IpAddr>) -> Vec<String> {
    let names: BTreeSet<&String> = addrs.filter_map(|a| drivers.l2_names.get(a)).collect();
    names.into_iter().cloned().collect()
}

async fn unassign_missing<D: VipDriver>(running: &mut Running<D>, keep: Option<&BTreeSet<IpAddr>>) {
    let gone: Vec<IpAddr> = running
        .assigned
        .iter()
        .filter(|a| keep.is_none_or(|k| !k.contains(a)))
        .copied()
        .collect();
    for addr in gone {
        match running.driver.unassign(addr).await {
            Ok(()) => tracing::info!(vip = %addr, driver = running.driver.kind(), "VIP released"),
            Err(e) => tracing::warn!(vip = %addr, error = %e, "cannot release VIP"),
        }
        running.assigned.remove(&addr);
    }
}

async fn assign_new<D: VipDriver>(running: &mut Running<D>, addrs: &BTreeSet<IpAddr>) {
    for &addr in addrs {
        if running.assigned.contains(&addr) {
            continue;
        }
        match running.driver.assign(addr).await {
            Ok(()) => {
                tracing::info!(vip = %addr, driver = running.driver.kind(), "VIP assigned");
                running.assigned.insert(addr);
            }
            Err(e) => tracing::warn!(vip = %addr, error = %e, "cannot assign VIP"),
        }
    }
}

/// The interface of the default route for `addr`'s family, from `/proc/net/route` or
/// `/proc/net/ipv6_route`.
fn default_route_interface(addr: IpAddr) -> Result<String, String> {
    let (path, found) = match addr {
        IpAddr::V4(_) => {
            let table = std::fs::read_to_string("/proc/net/route")
                .map_err(|e| format!("cannot read /proc/net/route: {e}"))?;
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            let found = table.lines().skip(1).find_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_owned())
            });
            ("/proc/net/route", found)
        }
        IpAddr::V6(_) => {
            let table = std::fs::read_to_string("/proc/net/ipv6_route")
                .map_err(|e| format!("cannot read /proc/net/ipv6_route: {e}"))?;
            // dest dest_len src src_len next_hop metric refcnt use flags iface
            let found = table.lines().find_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                (f.len() > 9 && f[0].bytes().all(|b| b == b'0') && f[1] == "00" && f[9] != "lo")
                    .then(|| f[9].to_owned())
            });
            ("/proc/net/ipv6_route", found)
        }
    };
    found
        .ok_or_else(|| format!("no interface given and no default route in {path} to take it from"))
}

/// This node's IPv4 address towards `peer` (a connected UDP socket sends nothing).
fn local_ipv4_towards(peer: IpAddr) -> Result<Ipv4Addr, String> {
    let IpAddr::V4(v4) = peer else {
        return Err("no router ID given and the peer is IPv6; set bgp.routerID".into());
    };
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .map_err(|e| format!("cannot choose a router ID: {e}"))?;
    socket
        .connect((v4, 179))
        .map_err(|e| format!("cannot choose a router ID (no route to the peer?): {e}"))?;
    match socket.local_addr() {
        Ok(SocketAddr::V4(a)) if !a.ip().is_unspecified() => Ok(*a.ip()),
        Ok(_) => Err("cannot choose a router ID: no local IPv4 address".into()),
        Err(e) => Err(format!("cannot choose a router ID: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use novaedge_snapshot::OspfInterface;

    use super::*;

    fn iface(name: &str, hello: u64) -> OspfInterface {
        OspfInterface {
            name: name.into(),
            hello_interval: Duration::from_secs(hello),
            dead_interval: Duration::from_secs(hello * 4),
            priority: 0,
            network: novaedge_snapshot::OspfNetwork::Broadcast,
            cost: 10,
        }
    }

    fn ospf_vip(name: &str, addrs: &[&str], area: &str, ifaces: Vec<OspfInterface>) -> Vip {
        Vip {
            name: name.into(),
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            announce: VipAnnounce::Ospf(OspfAnnounce {
                area: area.parse().unwrap(),
                interfaces: ifaces,
            }),
        }
    }

    fn addrs(v: &[&str]) -> BTreeSet<IpAddr> {
        v.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn ospf_vips_that_agree_share_one_speaker() {
        let vips = vec![
            ospf_vip(
                "a/one",
                &["198.51.100.1"],
                "0.0.0.0",
                vec![iface("eth0", 10)],
            ),
            Vip {
                name: "a/l2".into(),
                addresses: vec!["198.51.100.9".parse().unwrap()],
                announce: VipAnnounce::L2 { interface: None },
            },
            ospf_vip(
                "a/two",
                &["198.51.100.2", "198.51.100.3"],
                "0.0.0.0",
                vec![iface("eth0", 10)],
            ),
        ];
        let mut problems = Vec::new();
        let plan = plan_ospf(&vips, &mut problems).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(plan.owner, "a/one");
        assert_eq!(
            plan.addresses,
            addrs(&["198.51.100.1", "198.51.100.2", "198.51.100.3"])
        );
    }

    #[test]
    fn ospf_vips_that_disagree_or_are_ipv6_are_reported() {
        let vips = vec![
            ospf_vip(
                "a/one",
                &["198.51.100.1"],
                "0.0.0.0",
                vec![iface("eth0", 10)],
            ),
            ospf_vip(
                "a/area",
                &["198.51.100.2"],
                "0.0.0.1",
                vec![iface("eth0", 10)],
            ),
            ospf_vip(
                "a/timers",
                &["198.51.100.3"],
                "0.0.0.0",
                vec![iface("eth0", 1)],
            ),
            ospf_vip(
                "a/v6",
                &["198.51.100.4", "2001:db8::4"],
                "0.0.0.0",
                vec![iface("eth0", 10)],
            ),
        ];
        let mut problems = Vec::new();
        let plan = plan_ospf(&vips, &mut problems).unwrap();
        assert_eq!(plan.addresses, addrs(&["198.51.100.1", "198.51.100.4"]));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("VIP a/area: its OSPF settings (area 0.0.0.1, interfaces [eth0]) differ from those of VIP a/one (area 0.0.0.0, interfaces [eth0])"), "{}", problems[0]);
        assert!(
            problems[1].starts_with("VIP a/timers: its OSPF settings"),
            "{}",
            problems[1]
        );
        assert_eq!(
            problems[2],
            "VIP a/v6: 2001:db8::4: OSPFv2 advertises IPv4 addresses only; not advertised"
        );
    }

    #[test]
    fn no_ospf_vips_no_plan() {
        let mut problems = Vec::new();
        assert_eq!(plan_ospf(&[], &mut problems), None);
        assert!(problems.is_empty());
    }

    #[test]
    fn ospf_driver_configuration_follows_the_snapshot() {
        let mut i = iface("eth1", 2);
        i.network = novaedge_snapshot::OspfNetwork::PointToPoint;
        i.priority = 5;
        i.cost = 42;
        let settings = OspfSettings {
            router_id: "10.0.0.7".parse().unwrap(),
            announce: OspfAnnounce {
                area: "0.0.0.3".parse().unwrap(),
                interfaces: vec![i],
            },
        };
        let c = ospf_config(&settings);
        assert_eq!(c.router_id, settings.router_id);
        assert_eq!(c.area, settings.announce.area);
        assert_eq!(c.external_metric, 20);
        assert_eq!(
            c.interfaces,
            vec![OspfInterfaceConfig {
                name: "eth1".into(),
                network: OspfNetwork::PointToPoint,
                hello_interval: Duration::from_secs(2),
                dead_interval: Duration::from_secs(8),
                retransmit_interval: Duration::from_secs(5),
                priority: 5,
                cost: 42,
            }]
        );
    }

    #[test]
    fn the_configured_router_id_wins_and_a_missing_interface_is_named() {
        let announce = OspfAnnounce {
            area: Ipv4Addr::UNSPECIFIED,
            interfaces: vec![iface("nvtest-no-such-if0", 10)],
        };
        let m = VipManager::new(ManagerConfig {
            router_id: Some("10.9.9.9".parse().unwrap()),
            ..ManagerConfig::default()
        });
        assert_eq!(m.ospf_router_id(&announce), Ok("10.9.9.9".parse().unwrap()));
        let m = VipManager::new(ManagerConfig::default());
        let e = m.ospf_router_id(&announce).unwrap_err();
        assert!(e.contains("interface nvtest-no-such-if0"), "{e}");
        assert!(e.contains("no such interface"), "{e}");
    }

    /// A snapshot with OSPF VIPs on an interface that does not exist: the manager reports it
    /// instead of advertising, and holds nothing.
    #[tokio::test]
    async fn an_unusable_ospf_interface_is_a_problem() {
        let m = VipManager::new(ManagerConfig {
            router_id: Some("10.9.9.9".parse().unwrap()),
            ..ManagerConfig::default()
        });
        let vips = vec![ospf_vip(
            "a/one",
            &["198.51.100.1"],
            "0.0.0.0",
            vec![iface("nvtest-no-such-if0", 10)],
        )];
        m.set(&vips, true).await;
        let problems = m.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("OSPF interface nvtest-no-such-if0: no such interface"),
            "{problems:?}"
        );
        assert!(m.statuses().await.is_empty());
    }
}
