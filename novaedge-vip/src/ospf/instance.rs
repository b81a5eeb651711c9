//! The OSPFv2 protocol core, without I/O: interfaces, neighbours, the link-state database and
//! our own LSAs, driven by three inputs and producing packets to send.
//!
//! - [`Instance::handle_packet`]: an IP payload received on an interface, with the IP source
//!   and destination;
//! - [`Instance::tick`]: time has passed (call it at [`Instance::next_deadline`]);
//! - commands: [`Instance::advertise`], [`Instance::withdraw`], [`Instance::shutdown`].
//!
//! After each call, [`Instance::poll_transmit`] yields the packets to send (interface,
//! destination, OSPF packet bytes). Time is an argument everywhere, so the tests drive the
//! state machines with hand-built packets and a fake clock.
//!
//! What it implements of RFC 2328, by section:
//!
//! - 9: interface state machine for broadcast and point-to-point interfaces (Waiting with the
//!   wait timer, BackupSeen, NeighborChange); 9.4: DR/BDR election (`election.rs`);
//! - 10: neighbour state machine up to Full, Hello processing (10.5) with the parameter
//!   checks, master/slave negotiation and the database exchange (10.6, 10.8) with duplicate
//!   detection and retransmission by the master, Link State Requests (10.7, 10.9) with
//!   retransmission, SeqNumberMismatch and BadLSReq;
//! - 12.4: origination of our Router-LSA, of a Network-LSA while we are DR with a Full
//!   neighbour, and of one AS-external-LSA per VIP, each at most once per MinLSInterval;
//!   refresh at LSRefreshTime; sequence numbers from InitialSequenceNumber, wrapping by
//!   flushing at MaxSequenceNumber;
//! - 13: receiving LSAs (checksum, recency 13.1, MinLSArrival, installation, flooding 13.3,
//!   self-originated LSAs 13.4, delayed and direct acknowledgments 13.5), retransmission
//!   (13.6), acknowledgments received (13.7);
//! - 14: aging, MaxAge re-flooding, removal of MaxAge LSAs once no retransmission list holds
//!   them and no neighbour is in Exchange or Loading; 14.1 premature aging to withdraw.
//!
//! It stores and floods every LSA type 1 to 5 it receives, but computes no routes.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::OspfNetwork;
use super::election::{self, Candidate};
use super::lsdb::Lsdb;
use super::packet::{
    ALL_D_ROUTERS, ALL_SPF_ROUTERS, AUTH_NULL, Body, DBD_FIXED_LEN, DbDescription, ExternalLsa,
    ExternalMetric, HEADER_LEN, Hello, INITIAL_SEQUENCE_NUMBER, IP_HEADER_LEN, LS_REFRESH_TIME,
    LS_REQUEST_LEN, LSA_HEADER_LEN, LsRequest, Lsa, LsaBody, LsaHeader, LsaKey, MAX_AGE,
    MAX_SEQUENCE_NUMBER, NetworkLsa, Packet, RouterLink, RouterLsa, dbd_flags, link_type, ls_type,
    options, router_flags,
};
use crate::{
    OspfCounters, OspfInterfaceState as IfState, OspfInterfaceStatus,
    OspfNeighborState as NbrState, OspfNeighborStatus,
};

/// MinLSInterval: the shortest time between two originations of one LSA (appendix B).
pub const MIN_LS_INTERVAL: Duration = Duration::from_secs(5);
/// MinLSArrival: a new instance of an LSA arriving sooner after the last is dropped
/// (appendix B).
pub const MIN_LS_ARRIVAL: Duration = Duration::from_secs(1);
/// InfTransDelay in seconds: added to an LSA's age when it is sent.
const INF_TRANS_DELAY: u16 = 1;
/// Delayed acknowledgments are sent at most this long after the LSA arrived (and always
/// sooner than half the retransmission interval, section 13.5).
const MAX_ACK_DELAY: Duration = Duration::from_millis(500);
/// The default cap of the link-state database.
pub const DEFAULT_MAX_LSAS: usize = 100_000;
/// Neighbours kept per interface; Hellos from more are dropped.
pub const MAX_NEIGHBORS: usize = 256;
/// How long a graceful shutdown waits for the flushed LSAs to be acknowledged.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// What the core needs to know about an interface: its configuration and what the system
/// says about it.
#[derive(Debug, Clone)]
pub struct InterfaceSpec {
    /// Interface name (for logs and status).
    pub name: String,
    /// Network type.
    pub network: OspfNetwork,
    /// Its IPv4 address.
    pub address: Ipv4Addr,
    /// Its prefix length (0 to 32).
    pub prefix_len: u8,
    /// Its MTU: sent in Database Descriptions and used to size packets.
    pub mtu: u16,
    /// HelloInterval in seconds (at least 1).
    pub hello_interval: u16,
    /// RouterDeadInterval in seconds (more than the hello interval).
    pub dead_interval: u32,
    /// RxmtInterval.
    pub retransmit_interval: Duration,
    /// Router priority (0: never DR or BDR).
    pub priority: u8,
    /// Output cost of the interface.
    pub cost: u16,
}

impl InterfaceSpec {
    fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(prefix_mask(self.prefix_len))
    }

    fn network_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) & prefix_mask(self.prefix_len))
    }

    fn in_subnet(&self, addr: Ipv4Addr) -> bool {
        let m = prefix_mask(self.prefix_len);
        u32::from(addr) & m == u32::from(self.address) & m
    }
}

fn prefix_mask(len: u8) -> u32 {
    match len {
        0 => 0,
        l if l >= 32 => u32::MAX,
        l => u32::MAX << (32 - u32::from(l)),
    }
}

/// Settings of an [`Instance`].
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// Our router ID.
    pub router_id: Ipv4Addr,
    /// The area all interfaces are in.
    pub area: Ipv4Addr,
    /// The type 2 metric of the AS-external-LSAs for VIPs.
    pub external_metric: u32,
    /// The interfaces.
    pub interfaces: Vec<InterfaceSpec>,
    /// The cap of the link-state database ([`DEFAULT_MAX_LSAS`]).
    pub max_lsas: usize,
    /// Where DD sequence numbers start (anything; the driver takes a random number).
    pub dd_seq_seed: u32,
}

/// A packet to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Index of the interface in [`InstanceConfig::interfaces`].
    pub iface: usize,
    /// IP destination: a neighbour's address, AllSPFRouters or AllDRouters.
    pub dst: Ipv4Addr,
    /// The OSPF packet (the IP payload).
    pub packet: Vec<u8>,
}

/// A neighbour (RFC 2328 section 10).
#[derive(Debug)]
struct Neighbor {
    router_id: Ipv4Addr,
    address: Ipv4Addr,
    priority: u8,
    /// DR and BDR from its last Hello.
    dr: Ipv4Addr,
    bdr: Ipv4Addr,
    state: NbrState,
    inactivity: Instant,
    /// We are master of the database exchange.
    master: bool,
    dd_seq: u32,
    /// The options of its Database Descriptions.
    dd_options: u8,
    /// Flags, options and sequence number of the last Database Description received.
    last_rx: Option<(u8, u8, u32)>,
    /// The last Database Description sent (retransmitted by the master; re-sent by the slave
    /// on a duplicate).
    last_tx: Option<Vec<u8>>,
    /// Its M bit.
    last_tx_more: bool,
    dbd_rxmt: Option<Instant>,
    /// LSAs still to describe in the exchange.
    summary: VecDeque<LsaKey>,
    /// LSAs to request, with the header the neighbour described.
    requests: BTreeMap<LsaKey, LsaHeader>,
    /// Requested in the last LS Request, not yet received.
    outstanding: BTreeSet<LsaKey>,
    lsr_rxmt: Option<Instant>,
    /// LSAs flooded to it and not yet acknowledged: the instance and when it was last sent.
    rxmt: BTreeMap<LsaKey, (LsaHeader, Instant)>,
    rxmt_due: Option<Instant>,
}

impl Neighbor {
    fn new(router_id: Ipv4Addr, address: Ipv4Addr, now: Instant) -> Self {
        Self {
            router_id,
            address,
            priority: 0,
            dr: Ipv4Addr::UNSPECIFIED,
            bdr: Ipv4Addr::UNSPECIFIED,
            state: NbrState::Down,
            inactivity: now,
            master: true,
            dd_seq: 0,
            dd_options: 0,
            last_rx: None,
            last_tx: None,
            last_tx_more: false,
            dbd_rxmt: None,
            summary: VecDeque::new(),
            requests: BTreeMap::new(),
            outstanding: BTreeSet::new(),
            lsr_rxmt: None,
            rxmt: BTreeMap::new(),
            rxmt_due: None,
        }
    }

    /// Forgets the exchange and the lists (leaving ExStart or higher).
    fn clear_lists(&mut self) {
        self.summary.clear();
        self.requests.clear();
        self.outstanding.clear();
        self.rxmt.clear();
        self.rxmt_due = None;
        self.lsr_rxmt = None;
        self.dbd_rxmt = None;
        self.last_rx = None;
        self.last_tx = None;
        self.last_tx_more = false;
    }

    fn declares_dr(&self) -> bool {
        self.dr == self.address
    }

    fn declares_bdr(&self) -> bool {
        self.bdr == self.address
    }
}

/// An interface (RFC 2328 section 9).
#[derive(Debug)]
struct Interface {
    spec: InterfaceSpec,
    state: IfState,
    dr: Ipv4Addr,
    bdr: Ipv4Addr,
    nbrs: Vec<Neighbor>,
    hello_at: Instant,
    wait_until: Option<Instant>,
    delayed_acks: Vec<LsaHeader>,
    ack_at: Option<Instant>,
    /// LSAs to flood out of this interface, sent together after the current input.
    flood_queue: Vec<Lsa>,
    counters: OspfCounters,
    last_problem: Option<String>,
}

impl Interface {
    fn ack_delay(&self) -> Duration {
        MAX_ACK_DELAY.min(self.spec.retransmit_interval / 2)
    }

    /// Where flooded LSAs and delayed acknowledgments go (sections 13.3 and 13.5).
    fn flood_dst(&self) -> Ipv4Addr {
        match (self.spec.network, self.state) {
            (OspfNetwork::Broadcast, IfState::Dr | IfState::Backup)
            | (OspfNetwork::PointToPoint, _) => ALL_SPF_ROUTERS,
            (OspfNetwork::Broadcast, _) => ALL_D_ROUTERS,
        }
    }

    /// Where packets for one neighbour go: on point-to-point networks always AllSPFRouters
    /// (section 8.1), else its address.
    fn nbr_dst(&self, n: &Neighbor) -> Ipv4Addr {
        match self.spec.network {
            OspfNetwork::PointToPoint => ALL_SPF_ROUTERS,
            OspfNetwork::Broadcast => n.address,
        }
    }

    /// Whether an adjacency should be formed with `n` (section 10.4).
    fn adj_ok(&self, n: &Neighbor) -> bool {
        match self.spec.network {
            OspfNetwork::PointToPoint => true,
            OspfNetwork::Broadcast => {
                let me = self.spec.address;
                self.dr == me || self.bdr == me || self.dr == n.address || self.bdr == n.address
            }
        }
    }

    fn problem(&mut self, msg: String) {
        tracing::debug!(iface = %self.spec.name, "OSPF: {msg}");
        self.last_problem = Some(msg);
    }

    /// The most an LSU body may carry without exceeding the MTU.
    fn lsu_room(&self) -> usize {
        usize::from(self.spec.mtu)
            .saturating_sub(IP_HEADER_LEN + HEADER_LEN + 4)
            .max(LSA_HEADER_LEN)
    }
}

/// Our own LSAs: what we last did with each.
#[derive(Debug, Default, Clone, Copy)]
struct Own {
    /// The last sequence number we used (or saw for it, section 13.4).
    seq: Option<i32>,
    originated: Option<Instant>,
    flushed: Option<Instant>,
    /// A newer instance than ours arrived (section 13.4): originate anew (or flush).
    force: bool,
}

/// The protocol core: one OSPFv2 instance in one area.
#[derive(Debug)]
pub struct Instance {
    router_id: Ipv4Addr,
    area: Ipv4Addr,
    external_metric: u32,
    ifaces: Vec<Interface>,
    lsdb: Lsdb,
    own: BTreeMap<LsaKey, Own>,
    vips: BTreeSet<Ipv4Addr>,
    out: VecDeque<Transmit>,
    next_dd_seq: u32,
    next_age_scan: Instant,
    next_origination: Option<Instant>,
    /// The deadline of a graceful shutdown in progress.
    shutdown: Option<Instant>,
    finished: bool,
    lsdb_full_drops: u64,
    max_lsas: usize,
}

impl Instance {
    /// Brings every interface up (RFC 2328 section 9.3, InterfaceUp) at `now` and originates
    /// the first Router-LSA. The first Hellos are ready in [`poll_transmit`](Self::poll_transmit).
    pub fn new(config: InstanceConfig, now: Instant) -> Self {
        let addresses = config.interfaces.iter().map(|i| i.address).collect();
        let ifaces = config
            .interfaces
            .into_iter()
            .map(|spec| {
                let (state, wait_until) = match spec.network {
                    OspfNetwork::PointToPoint => (IfState::PointToPoint, None),
                    OspfNetwork::Broadcast if spec.priority == 0 => (IfState::DrOther, None),
                    OspfNetwork::Broadcast => (
                        IfState::Waiting,
                        Some(now + Duration::from_secs(u64::from(spec.dead_interval))),
                    ),
                };
                tracing::info!(iface = %spec.name, address = %spec.address, ?state, "OSPF interface up");
                Interface {
                    spec,
                    state,
                    dr: Ipv4Addr::UNSPECIFIED,
                    bdr: Ipv4Addr::UNSPECIFIED,
                    nbrs: Vec::new(),
                    hello_at: now,
                    wait_until,
                    delayed_acks: Vec::new(),
                    ack_at: None,
                    flood_queue: Vec::new(),
                    counters: OspfCounters::default(),
                    last_problem: None,
                }
            })
            .collect();
        let mut inst = Self {
            router_id: config.router_id,
            area: config.area,
            external_metric: config.external_metric,
            ifaces,
            lsdb: Lsdb::new(config.router_id, addresses, config.max_lsas),
            own: BTreeMap::new(),
            vips: BTreeSet::new(),
            out: VecDeque::new(),
            next_dd_seq: config.dd_seq_seed,
            next_age_scan: now,
            next_origination: None,
            shutdown: None,
            finished: false,
            lsdb_full_drops: 0,
            max_lsas: config.max_lsas,
        };
        inst.tick(now);
        inst
    }

    // === inputs ===

    /// Handles an OSPF packet (the IP payload `bytes`) received on interface `iface` from
    /// `src` to `dst` (RFC 2328 section 8.2).
    pub fn handle_packet(
        &mut self,
        iface: usize,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        bytes: &[u8],
        now: Instant,
    ) {
        if self.finished {
            return;
        }
        let router_id = self.router_id;
        let area = self.area;
        let Some(ifc) = self.ifaces.get_mut(iface) else {
            return;
        };
        ifc.counters.rx_packets += 1;
        if ifc.state == IfState::Down {
            return;
        }
        let packet = match Packet::decode(bytes) {
            Ok(p) => p,
            Err(e) => {
                ifc.counters.rx_malformed += 1;
                ifc.problem(format!("packet from {src} dropped: {e}"));
                return;
            }
        };
        if packet.auth_type != AUTH_NULL {
            ifc.counters.rx_auth_dropped += 1;
            ifc.problem(format!(
                "{} from {src} dropped: AuType {} is not supported (only null authentication)",
                packet.body.name(),
                packet.auth_type
            ));
            return;
        }
        if packet.area_id != area {
            ifc.counters.rx_mismatched += 1;
            ifc.problem(format!(
                "{} from {src} dropped: area {} is not ours ({area})",
                packet.body.name(),
                packet.area_id
            ));
            return;
        }
        if src == ifc.spec.address {
            return;
        }
        if packet.router_id == router_id {
            ifc.counters.rx_mismatched += 1;
            ifc.problem(format!(
                "{} from {src} dropped: it carries our own router ID {router_id} (router ID conflict?)",
                packet.body.name()
            ));
            return;
        }
        let to_us = dst == ifc.spec.address
            || dst == ALL_SPF_ROUTERS
            || (dst == ALL_D_ROUTERS && matches!(ifc.state, IfState::Dr | IfState::Backup));
        if !to_us {
            return;
        }
        if ifc.spec.network == OspfNetwork::Broadcast && !ifc.spec.in_subnet(src) {
            ifc.counters.rx_mismatched += 1;
            ifc.problem(format!(
                "{} from {src} dropped: source is outside {}/{}",
                packet.body.name(),
                ifc.spec.network_address(),
                ifc.spec.prefix_len
            ));
            return;
        }
        let rid = packet.router_id;
        if let Body::Hello(h) = &packet.body {
            self.rx_hello(iface, src, rid, h, now);
        } else {
            let found = match ifc.spec.network {
                OspfNetwork::Broadcast => ifc.nbrs.iter().position(|n| n.address == src),
                OspfNetwork::PointToPoint => ifc.nbrs.iter().position(|n| n.router_id == rid),
            };
            let Some(n) = found else {
                ifc.counters.rx_mismatched += 1;
                ifc.problem(format!(
                    "{} from {src} (router {rid}) dropped: not a neighbour",
                    packet.body.name()
                ));
                return;
            };
            match packet.body {
                Body::DbDescription(d) => self.rx_dbd(iface, n, &d, now),
                Body::LsRequest(r) => self.rx_lsr(iface, n, &r, now),
                Body::LsUpdate(l) => self.rx_lsu(iface, n, l, now),
                Body::LsAck(a) => self.rx_ack(iface, n, &a),
                Body::Hello(_) => {}
            }
        }
        self.after(now);
    }

    /// Runs the timers due at `now`: Hellos, the wait timer, inactivity, retransmissions,
    /// delayed acknowledgments, aging, deferred originations and the shutdown deadline.
    pub fn tick(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        for i in 0..self.ifaces.len() {
            let Some(ifc) = self.ifaces.get_mut(i) else {
                continue;
            };
            if ifc.state == IfState::Down {
                continue;
            }
            if now >= ifc.hello_at {
                ifc.hello_at = now + Duration::from_secs(u64::from(ifc.spec.hello_interval));
                self.send_hello(i, false);
            }
            if self.ifaces[i].wait_until.is_some_and(|w| now >= w) {
                self.ifaces[i].wait_until = None;
                self.election(i, now);
            }
            if self.ifaces[i].ack_at.is_some_and(|a| now >= a) {
                self.send_delayed_acks(i);
            }
            let mut n = self.ifaces[i].nbrs.len();
            while n > 0 {
                n -= 1;
                if self.ifaces[i]
                    .nbrs
                    .get(n)
                    .is_some_and(|x| now >= x.inactivity)
                {
                    self.kill(
                        i,
                        n,
                        now,
                        "inactivity timer (no Hello within the dead interval)",
                    );
                }
            }
            for n in 0..self.ifaces[i].nbrs.len() {
                self.neighbor_timers(i, n, now);
            }
        }
        self.age_scan(now);
        self.after(now);
    }

    /// Starts advertising `vip` (an AS-external-LSA, /32, E2).
    pub fn advertise(&mut self, vip: Ipv4Addr, now: Instant) {
        if self.shutdown.is_none() && self.vips.insert(vip) {
            self.after(now);
        }
    }

    /// Stops advertising `vip`: its LSA is flushed (premature aging, section 14.1).
    pub fn withdraw(&mut self, vip: Ipv4Addr, now: Instant) {
        if self.vips.remove(&vip) {
            self.after(now);
        }
    }

    /// Starts a graceful shutdown: every self-originated LSA is flushed; once the neighbours
    /// have acknowledged the flushes (or [`SHUTDOWN_TIMEOUT`] has passed) a last Hello
    /// listing no neighbour goes out on each interface, so the routers drop the adjacency
    /// at once, and [`is_finished`](Self::is_finished) turns true.
    pub fn shutdown(&mut self, now: Instant) {
        if self.shutdown.is_none() && !self.finished {
            tracing::info!("OSPF: shutting down: flushing our LSAs");
            self.shutdown = Some(now + SHUTDOWN_TIMEOUT);
            self.vips.clear();
            self.after(now);
        }
    }

    // === outputs ===

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// When [`tick`](Self::tick) should be called next.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        let mut t: Option<Instant> = None;
        let mut at = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for ifc in &self.ifaces {
            if ifc.state == IfState::Down {
                continue;
            }
            at(Some(ifc.hello_at));
            at(ifc.wait_until);
            at(ifc.ack_at);
            for n in &ifc.nbrs {
                at(Some(n.inactivity));
                at(n.dbd_rxmt);
                at(n.lsr_rxmt);
                at(n.rxmt_due);
            }
        }
        if self.lsdb.len() > 0 {
            at(Some(self.next_age_scan));
        }
        at(self.next_origination);
        at(self.shutdown);
        t
    }

    /// Whether a graceful shutdown has completed.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether interface `iface` must receive AllDRouters (it is DR or BDR).
    pub fn wants_all_d_routers(&self, iface: usize) -> bool {
        self.ifaces
            .get(iface)
            .is_some_and(|i| matches!(i.state, IfState::Dr | IfState::Backup))
    }

    /// On how many Full adjacencies `vip`'s LSA is in place: originated, current, and
    /// acknowledged (not waiting on the neighbour's retransmission list). 0 while it is not
    /// advertised yet (for example during MinLSInterval) or no adjacency is Full.
    pub fn vip_adjacencies(&self, vip: Ipv4Addr) -> usize {
        let key = self.external_key(vip);
        if !self.vips.contains(&vip) {
            return 0;
        }
        match self.lsdb.get(&key) {
            Some(e) if e.lsa.header().effective_age() < MAX_AGE => {}
            _ => return 0,
        }
        self.ifaces
            .iter()
            .flat_map(|i| &i.nbrs)
            .filter(|n| n.state == NbrState::Full && !n.rxmt.contains_key(&key))
            .count()
    }

    /// The state of every interface and neighbour.
    pub fn interface_status(&self) -> Vec<OspfInterfaceStatus> {
        self.ifaces
            .iter()
            .map(|i| OspfInterfaceStatus {
                name: i.spec.name.clone(),
                address: i.spec.address,
                prefix_len: i.spec.prefix_len,
                state: i.state,
                dr: i.dr,
                bdr: i.bdr,
                neighbors: i
                    .nbrs
                    .iter()
                    .map(|n| OspfNeighborStatus {
                        router_id: n.router_id,
                        address: n.address,
                        state: n.state,
                        priority: n.priority,
                        dr: n.dr,
                        bdr: n.bdr,
                    })
                    .collect(),
                counters: i.counters.clone(),
                last_problem: i.last_problem.clone(),
            })
            .collect()
    }

    /// LSAs in the database.
    pub fn lsdb_len(&self) -> usize {
        self.lsdb.len()
    }

    /// LSAs refused because the database was full.
    pub fn lsdb_full_drops(&self) -> u64 {
        self.lsdb_full_drops
    }

    /// The database copy of an LSA with its current age, if any.
    pub fn lsa(&self, key: &LsaKey, now: Instant) -> Option<Lsa> {
        self.lsdb.get(key).map(|e| e.lsa(now))
    }

    /// The key of the AS-external-LSA of `vip`.
    pub fn external_key(&self, vip: Ipv4Addr) -> LsaKey {
        LsaKey {
            ls_type: ls_type::AS_EXTERNAL,
            id: vip,
            adv_router: self.router_id,
        }
    }

    /// The key of our Router-LSA.
    pub fn router_key(&self) -> LsaKey {
        LsaKey {
            ls_type: ls_type::ROUTER,
            id: self.router_id,
            adv_router: self.router_id,
        }
    }

    // === sending ===

    fn send(&mut self, i: usize, dst: Ipv4Addr, body: Body) {
        let name = body.name();
        let packet = Packet {
            router_id: self.router_id,
            area_id: self.area,
            auth_type: AUTH_NULL,
            auth: [0; 8],
            body,
        };
        match packet.encode() {
            Ok(packet) => {
                if let Some(ifc) = self.ifaces.get_mut(i) {
                    ifc.counters.tx_packets += 1;
                }
                self.out.push_back(Transmit {
                    iface: i,
                    dst,
                    packet,
                });
            }
            Err(e) => tracing::warn!(error = %e, packet = name, "OSPF: cannot encode a packet"),
        }
    }

    /// Sends `lsas` in as few LS Updates as fit the MTU.
    fn send_lsas(&mut self, i: usize, dst: Ipv4Addr, lsas: Vec<Lsa>) {
        let Some(room) = self.ifaces.get(i).map(Interface::lsu_room) else {
            return;
        };
        let mut batch = Vec::new();
        let mut size = 0;
        for l in lsas {
            let len = l.bytes().len();
            if !batch.is_empty() && size + len > room {
                self.send(i, dst, Body::LsUpdate(std::mem::take(&mut batch)));
                size = 0;
            }
            size += len;
            batch.push(l);
        }
        if !batch.is_empty() {
            self.send(i, dst, Body::LsUpdate(batch));
        }
    }

    /// Sends acknowledgments in as few packets as fit the MTU.
    fn send_acks(&mut self, i: usize, dst: Ipv4Addr, mut headers: Vec<LsaHeader>) {
        let Some(ifc) = self.ifaces.get(i) else {
            return;
        };
        let per = (usize::from(ifc.spec.mtu).saturating_sub(IP_HEADER_LEN + HEADER_LEN)
            / LSA_HEADER_LEN)
            .max(1);
        while !headers.is_empty() {
            let rest = headers.split_off(per.min(headers.len()));
            self.send(i, dst, Body::LsAck(std::mem::replace(&mut headers, rest)));
        }
    }

    fn send_hello(&mut self, i: usize, last: bool) {
        let Some(ifc) = self.ifaces.get(i) else {
            return;
        };
        let broadcast = ifc.spec.network == OspfNetwork::Broadcast;
        let hello = Hello {
            network_mask: ifc.spec.mask(),
            hello_interval: ifc.spec.hello_interval,
            options: options::E,
            priority: if last { 0 } else { ifc.spec.priority },
            dead_interval: ifc.spec.dead_interval,
            dr: if broadcast && !last {
                ifc.dr
            } else {
                Ipv4Addr::UNSPECIFIED
            },
            bdr: if broadcast && !last {
                ifc.bdr
            } else {
                Ipv4Addr::UNSPECIFIED
            },
            neighbors: if last {
                Vec::new()
            } else {
                ifc.nbrs
                    .iter()
                    .filter(|n| n.state >= NbrState::Init)
                    .map(|n| n.router_id)
                    .collect()
            },
        };
        self.send(i, ALL_SPF_ROUTERS, Body::Hello(hello));
    }

    fn send_delayed_acks(&mut self, i: usize) {
        let Some(ifc) = self.ifaces.get_mut(i) else {
            return;
        };
        ifc.ack_at = None;
        let acks = std::mem::take(&mut ifc.delayed_acks);
        let dst = ifc.flood_dst();
        self.send_acks(i, dst, acks);
    }

    fn delay_ack(&mut self, i: usize, h: LsaHeader, now: Instant) {
        if let Some(ifc) = self.ifaces.get_mut(i) {
            ifc.delayed_acks.push(h);
            if ifc.ack_at.is_none() {
                ifc.ack_at = Some(now + ifc.ack_delay());
            }
        }
    }

    /// Sends the queued floods of every interface.
    fn emit_floods(&mut self) {
        for i in 0..self.ifaces.len() {
            let Some(ifc) = self.ifaces.get_mut(i) else {
                continue;
            };
            if ifc.flood_queue.is_empty() {
                continue;
            }
            let lsas = std::mem::take(&mut ifc.flood_queue);
            let dst = ifc.flood_dst();
            self.send_lsas(i, dst, lsas);
        }
    }

    // === neighbour state machine ===

    fn set_state(&mut self, i: usize, n: usize, state: NbrState) {
        let Some(ifc) = self.ifaces.get_mut(i) else {
            return;
        };
        let name = &ifc.spec.name;
        if let Some(nbr) = ifc.nbrs.get_mut(n)
            && nbr.state != state
        {
            tracing::info!(iface = %name, neighbor = %nbr.router_id, address = %nbr.address, from = ?nbr.state, to = ?state, "OSPF neighbour state");
            nbr.state = state;
        }
    }

    fn nbr_state(&self, i: usize, n: usize) -> Option<NbrState> {
        self.ifaces.get(i)?.nbrs.get(n).map(|x| x.state)
    }

    fn rx_hello(&mut self, i: usize, src: Ipv4Addr, rid: Ipv4Addr, h: &Hello, now: Instant) {
        let Some(ifc) = self.ifaces.get_mut(i) else {
            return;
        };
        let spec = ifc.spec.clone();
        let mismatch = if spec.network == OspfNetwork::Broadcast && h.network_mask != spec.mask() {
            Some(format!(
                "network mask {} (ours {})",
                h.network_mask,
                spec.mask()
            ))
        } else if h.hello_interval != spec.hello_interval {
            Some(format!(
                "HelloInterval {} s (ours {} s)",
                h.hello_interval, spec.hello_interval
            ))
        } else if h.dead_interval != spec.dead_interval {
            Some(format!(
                "RouterDeadInterval {} s (ours {} s)",
                h.dead_interval, spec.dead_interval
            ))
        } else if h.options & options::E == 0 {
            Some("E bit clear (a stub area; ours is not)".to_string())
        } else {
            None
        };
        if let Some(m) = mismatch {
            ifc.counters.rx_mismatched += 1;
            ifc.problem(format!("Hello from {src} (router {rid}) dropped: {m}"));
            return;
        }
        let dead = Duration::from_secs(u64::from(spec.dead_interval));
        let found = match spec.network {
            OspfNetwork::Broadcast => ifc.nbrs.iter().position(|n| n.address == src),
            OspfNetwork::PointToPoint => ifc.nbrs.iter().position(|n| n.router_id == rid),
        };
        let n = match found {
            Some(n) if ifc.nbrs.get(n).is_some_and(|x| x.router_id == rid) => n,
            other => {
                if let Some(n) = other {
                    // Another router took this address: the old neighbour is gone.
                    self.kill(i, n, now, "another router ID at its address");
                }
                let Some(ifc) = self.ifaces.get_mut(i) else {
                    return;
                };
                if ifc.nbrs.len() >= MAX_NEIGHBORS {
                    ifc.counters.rx_mismatched += 1;
                    ifc.problem(format!(
                        "Hello from {src} (router {rid}) dropped: already {MAX_NEIGHBORS} neighbours"
                    ));
                    return;
                }
                ifc.nbrs.push(Neighbor::new(rid, src, now));
                ifc.nbrs.len() - 1
            }
        };
        let Some(ifc) = self.ifaces.get_mut(i) else {
            return;
        };
        let if_state = ifc.state;
        let broadcast = ifc.spec.network == OspfNetwork::Broadcast;
        let Some(nbr) = ifc.nbrs.get_mut(n) else {
            return;
        };
        let is_new = nbr.state == NbrState::Down;
        let (was_dr, was_bdr, old_priority) = (nbr.declares_dr(), nbr.declares_bdr(), nbr.priority);
        nbr.address = src;
        nbr.priority = h.priority;
        nbr.dr = h.dr;
        nbr.bdr = h.bdr;
        nbr.inactivity = now + dead;
        let (is_dr, is_bdr) = (nbr.declares_dr(), nbr.declares_bdr());
        if is_new {
            self.set_state(i, n, NbrState::Init);
        }
        if !h.neighbors.contains(&self.router_id) {
            self.one_way(i, n, now);
            return;
        }
        self.two_way_received(i, n, now);
        if !broadcast {
            return;
        }
        let mut change = !is_new && h.priority != old_priority;
        let mut backup_seen = false;
        if is_dr && h.bdr.is_unspecified() && if_state == IfState::Waiting {
            backup_seen = true;
        } else if is_dr != was_dr {
            change = true;
        }
        if is_bdr && if_state == IfState::Waiting {
            backup_seen = true;
        } else if is_bdr != was_bdr {
            change = true;
        }
        let waiting = self
            .ifaces
            .get(i)
            .is_some_and(|x| x.state == IfState::Waiting);
        if backup_seen && waiting {
            if let Some(ifc) = self.ifaces.get_mut(i) {
                ifc.wait_until = None;
            }
            self.election(i, now);
        } else if change {
            self.neighbor_change(i, now);
        }
    }

    /// 2-WayReceived (section 10.3).
    fn two_way_received(&mut self, i: usize, n: usize, now: Instant) {
        if self.nbr_state(i, n) != Some(NbrState::Init) {
            return;
        }
        let ok = self
            .ifaces
            .get(i)
            .and_then(|x| x.nbrs.get(n).map(|nb| x.adj_ok(nb)))
            .unwrap_or(false);
        if ok {
            self.start_exstart(i, n, now);
        } else {
            self.set_state(i, n, NbrState::TwoWay);
        }
        self.neighbor_change(i, now);
    }

    /// 1-WayReceived (section 10.3).
    fn one_way(&mut self, i: usize, n: usize, now: Instant) {
        if self.nbr_state(i, n).is_some_and(|s| s >= NbrState::TwoWay) {
            if let Some(nbr) = self.ifaces.get_mut(i).and_then(|x| x.nbrs.get_mut(n)) {
                nbr.clear_lists();
            }
            self.set_state(i, n, NbrState::Init);
            self.neighbor_change(i, now);
        }
    }

    /// KillNbr / InactivityTimer: the neighbour is removed.
    fn kill(&mut self, i: usize, n: usize, now: Instant, why: &str) {
        let Some(ifc) = self.ifaces.get_mut(i) else {
            return;
        };
        if n >= ifc.nbrs.len() {
            return;
        }
        let nbr = ifc.nbrs.remove(n);
        tracing::info!(iface = %ifc.spec.name, neighbor = %nbr.router_id, address = %nbr.address, from = ?nbr.state, "OSPF neighbour down: {why}");
        if nbr.state >= NbrState::TwoWay {
            self.neighbor_change(i, now);
        }
    }

    /// NeighborChange (section 9.3): re-run the election where one is held.
    fn neighbor_change(&mut self, i: usize, now: Instant) {
        let run = self.ifaces.get(i).is_some_and(|x| {
            x.spec.network == OspfNetwork::Broadcast
                && matches!(x.state, IfState::DrOther | IfState::Backup | IfState::Dr)
        });
        if run {
            self.election(i, now);
        }
    }

    /// DR election (section 9.4) and its consequences: the interface state, and AdjOK? on
    /// every bidirectional neighbour when the DR or BDR changed.
    fn election(&mut self, i: usize, now: Instant) {
        let router_id = self.router_id;
        let Some(ifc) = self.ifaces.get_mut(i) else {
            return;
        };
        if ifc.spec.network != OspfNetwork::Broadcast {
            return;
        }
        let me = Candidate {
            router_id,
            address: ifc.spec.address,
            priority: ifc.spec.priority,
            dr: ifc.dr,
            bdr: ifc.bdr,
        };
        let others: Vec<Candidate> = ifc
            .nbrs
            .iter()
            .filter(|n| n.state >= NbrState::TwoWay)
            .map(|n| Candidate {
                router_id: n.router_id,
                address: n.address,
                priority: n.priority,
                dr: n.dr,
                bdr: n.bdr,
            })
            .collect();
        let (dr, bdr) = election::elect(&me, &others);
        let changed = (dr, bdr) != (ifc.dr, ifc.bdr);
        ifc.dr = dr;
        ifc.bdr = bdr;
        let state = if dr == ifc.spec.address {
            IfState::Dr
        } else if bdr == ifc.spec.address {
            IfState::Backup
        } else {
            IfState::DrOther
        };
        if state != ifc.state || changed {
            tracing::info!(iface = %ifc.spec.name, from = ?ifc.state, to = ?state, %dr, %bdr, "OSPF interface state");
        }
        ifc.state = state;
        let count = ifc.nbrs.len();
        if changed {
            for n in 0..count {
                self.adj_ok_event(i, n, now);
            }
        }
    }

    /// AdjOK? (section 10.3).
    fn adj_ok_event(&mut self, i: usize, n: usize, now: Instant) {
        let Some((ok, state)) = self
            .ifaces
            .get(i)
            .and_then(|x| x.nbrs.get(n).map(|nb| (x.adj_ok(nb), nb.state)))
        else {
            return;
        };
        match state {
            NbrState::TwoWay if ok => self.start_exstart(i, n, now),
            s if s >= NbrState::ExStart && !ok => {
                if let Some(nbr) = self.ifaces.get_mut(i).and_then(|x| x.nbrs.get_mut(n)) {
                    nbr.clear_lists();
                }
                self.set_state(i, n, NbrState::TwoWay);
            }
            _ => {}
        }
    }

    /// Enters ExStart: a new DD sequence number, we claim to be master, and send the first
    /// (empty, I|M|MS) Database Description until the neighbour answers.
    fn start_exstart(&mut self, i: usize, n: usize, now: Instant) {
        let seq = self.next_dd_seq;
        self.next_dd_seq = self.next_dd_seq.wrapping_add(0x0001_0001);
        if let Some(nbr) = self.ifaces.get_mut(i).and_then(|x| x.nbrs.get_mut(n)) {
            nbr.clear_lists();
            nbr.dd_seq = seq;
            nbr.master = true;
        }
        self.set_state(i, n, NbrState::ExStart);
        self.send_dbd(i, n, now);
    }

    /// SeqNumberMismatch or BadLSReq: back to ExStart.
    fn restart_exchange(&mut self, i: usize, n: usize, now: Instant, why: &str) {
        if let Some(ifc) = self.ifaces.get_mut(i) {
            let rid = ifc.nbrs.get(n).map(|x| x.router_id);
            if let Some(rid) = rid {
                tracing::info!(iface = %ifc.spec.name, neighbor = %rid, "OSPF: restarting the database exchange: {why}");
            }
        }
        self.start_exstart(i, n, now);
    }

    /// Sends the next Database Description to neighbour `n`: the I|M|MS packet in ExStart,
    /// else as many summary headers as fit.
    fn send_dbd(&mut self, i: usize, n: usize, now: Instant) {
        let Some(ifc) = self.ifaces.get_mut(i) else {
            return;
        };
        let mtu = ifc.spec.mtu;
        let rxmt = ifc.spec.retransmit_interval;
        let per = (usize::from(mtu).saturating_sub(IP_HEADER_LEN + HEADER_LEN + DBD_FIXED_LEN)
            / LSA_HEADER_LEN)
            .max(1);
        let dst = match ifc.nbrs.get(n) {
            Some(nbr) => ifc.nbr_dst(nbr),
            None => return,
        };
        let Some(nbr) = ifc.nbrs.get_mut(n) else {
            return;
        };
        let mut flags = 0;
        let mut headers = Vec::new();
        if nbr.state == NbrState::ExStart {
            flags = dbd_flags::INIT | dbd_flags::MORE | dbd_flags::MASTER;
        } else {
            if nbr.master {
                flags |= dbd_flags::MASTER;
            }
            while headers.len() < per {
                let Some(key) = nbr.summary.pop_front() else {
                    break;
                };
                if let Some(e) = self.lsdb.get(&key) {
                    headers.push(e.header(now));
                }
            }
            if !nbr.summary.is_empty() {
                flags |= dbd_flags::MORE;
            }
        }
        nbr.last_tx_more = flags & dbd_flags::MORE != 0;
        nbr.dbd_rxmt = nbr.master.then(|| now + rxmt);
        let body = Body::DbDescription(DbDescription {
            interface_mtu: mtu,
            options: options::E,
            flags,
            seq: nbr.dd_seq,
            lsa_headers: headers,
        });
        let packet = Packet {
            router_id: self.router_id,
            area_id: self.area,
            auth_type: AUTH_NULL,
            auth: [0; 8],
            body,
        };
        match packet.encode() {
            Ok(bytes) => {
                nbr.last_tx = Some(bytes.clone());
                ifc.counters.tx_packets += 1;
                self.out.push_back(Transmit {
                    iface: i,
                    dst,
                    packet: bytes,
                });
            }
            Err(e) => tracing::warn!(error = %e, "OSPF: cannot encode a Database Description"),
        }
    }

    /// Re-sends the last Database Description as it was.
    fn resend_dbd(&mut self, i: usize, n: usize) {
        let Some(ifc) = self.ifaces.get_mut(i) else {
            return;
        };
        let Some(nbr) = ifc.nbrs.get(n) else {
            return;
        };
        let dst = ifc.nbr_dst(nbr);
        if let Some(bytes) = nbr.last_tx.clone() {
            ifc.counters.tx_packets += 1;
            self.out.push_back(Transmit {
                iface: i,
                dst,
                packet: bytes,
            });
        }
    }

    fn rx_dbd(&mut self, i: usize, n: usize, d: &DbDescription, now: Instant) {
        let Some(ifc) = self.ifaces.get_mut(i) else {
            return;
        };
        if d.interface_mtu > ifc.spec.mtu {
            let rid = ifc
                .nbrs
                .get(n)
                .map_or(Ipv4Addr::UNSPECIFIED, |x| x.router_id);
            ifc.counters.rx_mismatched += 1;
            ifc.problem(format!(
                "Database Description from router {rid} dropped: its interface MTU {} exceeds ours ({})",
                d.interface_mtu, ifc.spec.mtu
            ));
            return;
        }
        let Some(state) = self.nbr_state(i, n) else {
            return;
        };
        match state {
            NbrState::Down | NbrState::TwoWay => {}
            NbrState::Init => {
                self.two_way_received(i, n, now);
                if self.nbr_state(i, n) == Some(NbrState::ExStart) {
                    self.dbd_exstart(i, n, d, now);
                }
            }
            NbrState::ExStart => self.dbd_exstart(i, n, d, now),
            NbrState::Exchange => self.dbd_exchange(i, n, d, now),
            NbrState::Loading | NbrState::Full => {
                let Some(nbr) = self.ifaces.get(i).and_then(|x| x.nbrs.get(n)) else {
                    return;
                };
                if nbr.last_rx == Some((d.flags, d.options, d.seq)) {
                    // A duplicate: the slave answers it again (it keeps its last packet for
                    // the dead interval); the master ignores it.
                    if !nbr.master {
                        self.resend_dbd(i, n);
                    }
                } else {
                    self.restart_exchange(i, n, now, "Database Description after the exchange");
                }
            }
        }
    }

    fn dbd_exstart(&mut self, i: usize, n: usize, d: &DbDescription, now: Instant) {
        let my_rid = self.router_id;
        let Some(nbr) = self.ifaces.get_mut(i).and_then(|x| x.nbrs.get_mut(n)) else {
            return;
        };
        if d.init() && d.more() && d.master() && d.lsa_headers.is_empty() && nbr.router_id > my_rid
        {
            // The neighbour is master.
            nbr.master = false;
            nbr.dd_seq = d.seq;
            nbr.dd_options = d.options;
            nbr.last_rx = Some((d.flags, d.options, d.seq));
            nbr.dbd_rxmt = None;
            self.negotiation_done(i, n, now);
            self.send_dbd(i, n, now);
        } else if !d.init() && !d.master() && d.seq == nbr.dd_seq && nbr.router_id < my_rid {
            // We are master and this is the slave's first answer.
            nbr.master = true;
            nbr.dd_options = d.options;
            self.negotiation_done(i, n, now);
            self.dbd_accept(i, n, d, now);
        }
    }

    /// NegotiationDone: Exchange, with the summary list of the database; MaxAge LSAs go on
    /// the retransmission list instead (section 10.3).
    fn negotiation_done(&mut self, i: usize, n: usize, now: Instant) {
        self.set_state(i, n, NbrState::Exchange);
        let Some(ifc) = self.ifaces.get_mut(i) else {
            return;
        };
        let rxmt = ifc.spec.retransmit_interval;
        let Some(nbr) = ifc.nbrs.get_mut(n) else {
            return;
        };
        nbr.summary.clear();
        for (key, e) in self.lsdb.iter() {
            if e.age(now) >= MAX_AGE {
                nbr.rxmt.insert(*key, (e.header(now), now));
                nbr.rxmt_due.get_or_insert(now + rxmt);
            } else {
                nbr.summary.push_back(*key);
            }
        }
    }

    fn dbd_exchange(&mut self, i: usize, n: usize, d: &DbDescription, now: Instant) {
        let Some(nbr) = self.ifaces.get(i).and_then(|x| x.nbrs.get(n)) else {
            return;
        };
        if nbr.last_rx == Some((d.flags, d.options, d.seq)) {
            if !nbr.master {
                self.resend_dbd(i, n);
            }
            return;
        }
        let problem = if d.master() == nbr.master {
            Some("MS bit inconsistent with the master/slave relationship".to_string())
        } else if d.init() {
            Some("I bit set during the exchange".to_string())
        } else if d.options != nbr.dd_options {
            Some(format!(
                "options changed from 0x{:02x} to 0x{:02x}",
                nbr.dd_options, d.options
            ))
        } else {
            let expected = if nbr.master {
                nbr.dd_seq
            } else {
                nbr.dd_seq.wrapping_add(1)
            };
            (d.seq != expected)
                .then(|| format!("DD sequence number {} (expected {expected})", d.seq))
        };
        match problem {
            Some(p) => self.restart_exchange(i, n, now, &p),
            None => self.dbd_accept(i, n, d, now),
        }
    }

    /// Takes a Database Description in sequence: requests what is newer than ours, then
    /// answers (slave) or sends the next (master), or ends the exchange.
    fn dbd_accept(&mut self, i: usize, n: usize, d: &DbDescription, now: Instant) {
        let max_requests = self.max_lsas;
        let Some(ifc) = self.ifaces.get_mut(i) else {
            return;
        };
        let Some(nbr) = ifc.nbrs.get_mut(n) else {
            return;
        };
        nbr.last_rx = Some((d.flags, d.options, d.seq));
        let mut bad_type = None;
        for h in &d.lsa_headers {
            if !(ls_type::ROUTER..=ls_type::AS_EXTERNAL).contains(&h.ls_type) {
                bad_type = Some(h.ls_type);
                break;
            }
            let key = h.key();
            let newer = match self.lsdb.get(&key) {
                None => true,
                Some(e) => h.compare_recency(&e.header(now)) == Ordering::Greater,
            };
            if newer && (nbr.requests.len() < max_requests || nbr.requests.contains_key(&key)) {
                nbr.requests.insert(key, *h);
            }
        }
        if let Some(t) = bad_type {
            self.restart_exchange(i, n, now, &format!("LSA header of unknown LS type {t}"));
            return;
        }
        if nbr.master {
            nbr.dd_seq = nbr.dd_seq.wrapping_add(1);
            if !nbr.last_tx_more && !d.more() {
                nbr.dbd_rxmt = None;
                self.exchange_done(i, n, now);
            } else {
                self.send_dbd(i, n, now);
            }
        } else {
            nbr.dd_seq = d.seq;
            self.send_dbd(i, n, now);
            let done = self
                .ifaces
                .get(i)
                .and_then(|x| x.nbrs.get(n))
                .is_some_and(|x| !x.last_tx_more);
            if done && !d.more() {
                self.exchange_done(i, n, now);
            }
        }
        self.maybe_send_lsr(i, n, now);
    }

    /// ExchangeDone: Full if nothing is to be requested, else Loading.
    fn exchange_done(&mut self, i: usize, n: usize, now: Instant) {
        let empty = self
            .ifaces
            .get(i)
            .and_then(|x| x.nbrs.get(n))
            .is_none_or(|x| x.requests.is_empty());
        if empty {
            self.set_state(i, n, NbrState::Full);
        } else {
            self.set_state(i, n, NbrState::Loading);
            self.maybe_send_lsr(i, n, now);
        }
    }

    /// Sends the next LS Request when the previous one is answered.
    fn maybe_send_lsr(&mut self, i: usize, n: usize, now: Instant) {
        let Some(ifc) = self.ifaces.get_mut(i) else {
            return;
        };
        let per = (usize::from(ifc.spec.mtu).saturating_sub(IP_HEADER_LEN + HEADER_LEN)
            / LS_REQUEST_LEN)
            .max(1);
        let rxmt = ifc.spec.retransmit_interval;
        let Some(nbr) = ifc.nbrs.get_mut(n) else {
            return;
        };
        if !matches!(nbr.state, NbrState::Exchange | NbrState::Loading)
            || !nbr.outstanding.is_empty()
            || nbr.requests.is_empty()
        {
            return;
        }
        nbr.outstanding = nbr.requests.keys().take(per).copied().collect();
        nbr.lsr_rxmt = Some(now + rxmt);
        self.send_lsr(i, n);
    }

    fn send_lsr(&mut self, i: usize, n: usize) {
        let Some(ifc) = self.ifaces.get(i) else {
            return;
        };
        let Some(nbr) = ifc.nbrs.get(n) else {
            return;
        };
        let dst = ifc.nbr_dst(nbr);
        let reqs: Vec<LsRequest> = nbr
            .outstanding
            .iter()
            .map(|k| LsRequest {
                ls_type: u32::from(k.ls_type),
                id: k.id,
                adv_router: k.adv_router,
            })
            .collect();
        if !reqs.is_empty() {
            self.send(i, dst, Body::LsRequest(reqs));
        }
    }

    fn neighbor_timers(&mut self, i: usize, n: usize, now: Instant) {
        let Some(ifc) = self.ifaces.get_mut(i) else {
            return;
        };
        let rxmt = ifc.spec.retransmit_interval;
        let Some(nbr) = ifc.nbrs.get_mut(n) else {
            return;
        };
        if nbr.dbd_rxmt.is_some_and(|t| now >= t) {
            if nbr.master && matches!(nbr.state, NbrState::ExStart | NbrState::Exchange) {
                nbr.dbd_rxmt = Some(now + rxmt);
                self.resend_dbd(i, n);
            } else {
                nbr.dbd_rxmt = None;
            }
        }
        let Some(nbr) = self.ifaces.get_mut(i).and_then(|x| x.nbrs.get_mut(n)) else {
            return;
        };
        if nbr.lsr_rxmt.is_some_and(|t| now >= t) {
            nbr.outstanding.retain(|k| nbr.requests.contains_key(k));
            if nbr.outstanding.is_empty() {
                nbr.lsr_rxmt = None;
            } else {
                nbr.lsr_rxmt = Some(now + rxmt);
                self.send_lsr(i, n);
            }
        }
        self.retransmit(i, n, now);
    }

    /// Sends again every LSA on the neighbour's retransmission list that has waited
    /// RxmtInterval (section 13.6), directly to the neighbour.
    fn retransmit(&mut self, i: usize, n: usize, now: Instant) {
        let Some(ifc) = self.ifaces.get_mut(i) else {
            return;
        };
        let rxmt = ifc.spec.retransmit_interval;
        let Some(nbr) = ifc.nbrs.get(n) else {
            return;
        };
        let dst = ifc.nbr_dst(nbr);
        let Some(nbr) = ifc.nbrs.get_mut(n) else {
            return;
        };
        if nbr.rxmt_due.is_none_or(|t| now < t) {
            return;
        }
        let mut lsas = Vec::new();
        let mut gone = Vec::new();
        let mut next: Option<Instant> = None;
        for (key, (_, sent)) in nbr.rxmt.iter_mut() {
            if *sent + rxmt <= now {
                match self.lsdb.get(key) {
                    Some(e) => {
                        let l = e.lsa(now);
                        let age = tx_age(l.header().age);
                        lsas.push(l.with_age(age));
                        *sent = now;
                    }
                    None => {
                        gone.push(*key);
                        continue;
                    }
                }
            }
            let due = *sent + rxmt;
            next = Some(next.map_or(due, |t| t.min(due)));
        }
        for k in gone {
            nbr.rxmt.remove(&k);
        }
        nbr.rxmt_due = next;
        if !lsas.is_empty() {
            self.send_lsas(i, dst, lsas);
        }
    }

    // === link-state requests, updates, acknowledgments ===

    fn rx_lsr(&mut self, i: usize, n: usize, reqs: &[LsRequest], now: Instant) {
        if self.nbr_state(i, n).is_none_or(|s| s < NbrState::Exchange) {
            return;
        }
        let mut lsas = Vec::with_capacity(reqs.len());
        for r in reqs {
            let key = u8::try_from(r.ls_type).ok().map(|t| LsaKey {
                ls_type: t,
                id: r.id,
                adv_router: r.adv_router,
            });
            match key.and_then(|k| self.lsdb.get(&k)) {
                Some(e) => {
                    let l = e.lsa(now);
                    let age = tx_age(l.header().age);
                    lsas.push(l.with_age(age));
                }
                None => {
                    let why = format!(
                        "BadLSReq: it requested type-{} {} from {}, which we do not have",
                        r.ls_type, r.id, r.adv_router
                    );
                    self.restart_exchange(i, n, now, &why);
                    return;
                }
            }
        }
        let Some(dst) = self
            .ifaces
            .get(i)
            .and_then(|x| x.nbrs.get(n).map(|nb| x.nbr_dst(nb)))
        else {
            return;
        };
        self.send_lsas(i, dst, lsas);
    }

    fn rx_lsu(&mut self, i: usize, n: usize, lsas: Vec<Lsa>, now: Instant) {
        if self.nbr_state(i, n).is_none_or(|s| s < NbrState::Exchange) {
            return;
        }
        let mut direct = Vec::new();
        for lsa in lsas {
            if self.receive_lsa(i, n, lsa, now, &mut direct).is_err() {
                self.restart_exchange(
                    i,
                    n,
                    now,
                    "BadLSReq: an LSA it sent is older than or equal to what it described",
                );
                break;
            }
        }
        if !direct.is_empty() {
            let Some(dst) = self
                .ifaces
                .get(i)
                .and_then(|x| x.nbrs.get(n).map(|nb| x.nbr_dst(nb)))
            else {
                return;
            };
            self.send_acks(i, dst, direct);
        }
    }

    /// One received LSA (section 13, steps 1 to 8). `Err` is BadLSReq.
    fn receive_lsa(
        &mut self,
        i: usize,
        n: usize,
        lsa: Lsa,
        now: Instant,
        direct: &mut Vec<LsaHeader>,
    ) -> Result<(), ()> {
        let h = *lsa.header();
        let key = h.key();
        let Some(ifc) = self.ifaces.get_mut(i) else {
            return Ok(());
        };
        // (1) checksum.
        if !lsa.checksum_ok() {
            ifc.counters.lsa_checksum_errors += 1;
            ifc.problem(format!(
                "LSA {key} dropped: bad checksum 0x{:04x}",
                h.checksum
            ));
            return Ok(());
        }
        // (2) unknown LS type (we advertise no opaque capability).
        if !(ls_type::ROUTER..=ls_type::AS_EXTERNAL).contains(&h.ls_type) {
            ifc.problem(format!("LSA {key} dropped: LS type not supported"));
            return Ok(());
        }
        // (3) AS-external-LSAs are fine: the area is not a stub.
        let exchanging = self.any_exchanging();
        let db = self.lsdb.get(&key);
        // (4) a MaxAge LSA we do not have.
        if h.effective_age() == MAX_AGE && db.is_none() && !exchanging {
            direct.push(h);
            return Ok(());
        }
        let cmp = db.map(|e| h.compare_recency(&e.header(now)));
        // (5) new or newer.
        if cmp.is_none_or(|c| c == Ordering::Greater) {
            if let Some(r) = db.and_then(|e| e.received)
                && now.saturating_duration_since(r) < MIN_LS_ARRIVAL
            {
                return Ok(());
            }
            if self.lsdb.is_full_for(&key) && !self.lsdb.is_self(&key) {
                self.lsdb_full_drops += 1;
                if self.lsdb_full_drops == 1 || self.lsdb_full_drops.is_power_of_two() {
                    tracing::warn!(lsas = self.lsdb.len(), dropped = self.lsdb_full_drops, lsa = %key, "OSPF: the link-state database is full; LSAs are dropped");
                }
                return Ok(());
            }
            self.remove_from_rxmt(&key);
            let flooded_back = self.flood(&lsa, Some((i, n)), now);
            self.lsdb.install(lsa, now, Some(now));
            if let Some(ifc) = self.ifaces.get(i) {
                let from_dr = ifc.nbrs.get(n).is_some_and(|x| x.address == ifc.dr);
                if !flooded_back && (ifc.state != IfState::Backup || from_dr) {
                    self.delay_ack(i, h, now);
                }
            }
            if self.lsdb.is_self(&key) {
                tracing::info!(lsa = %key, seq = format_args!("0x{:08x}", h.seq), "OSPF: a newer instance of our own LSA arrived; issuing a newer one or flushing it (RFC 2328 13.4)");
                let own = self.own.entry(key).or_default();
                own.force = true;
                own.seq = Some(own.seq.map_or(h.seq, |s| s.max(h.seq)));
            }
            return Ok(());
        }
        let Some(ifc) = self.ifaces.get_mut(i) else {
            return Ok(());
        };
        let dr = ifc.dr;
        let backup = ifc.state == IfState::Backup;
        let Some(dst) = ifc.nbrs.get(n).map(|nb| ifc.nbr_dst(nb)) else {
            return Ok(());
        };
        let Some(nbr) = ifc.nbrs.get_mut(n) else {
            return Ok(());
        };
        // (6) it was requested but is not newer than what the neighbour described.
        if nbr.requests.contains_key(&key) {
            return Err(());
        }
        // (7) the same instance.
        if cmp == Some(Ordering::Equal) {
            if nbr.rxmt.remove(&key).is_some() {
                // An implied acknowledgment.
                if backup && nbr.address == dr {
                    self.delay_ack(i, h, now);
                }
            } else {
                direct.push(h);
            }
            return Ok(());
        }
        // (8) ours is newer: send it back, unless it is a MaxAge LSA at MaxSequenceNumber
        // being flushed, or we did so within MinLSArrival.
        let Some(e) = self.lsdb.get_mut(&key) else {
            return Ok(());
        };
        if e.age(now) >= MAX_AGE && e.lsa.header().seq == MAX_SEQUENCE_NUMBER {
            return Ok(());
        }
        if e.echoed
            .is_none_or(|t| now.saturating_duration_since(t) >= MIN_LS_ARRIVAL)
        {
            e.echoed = Some(now);
            let l = e.lsa(now);
            let age = tx_age(l.header().age);
            self.send_lsas(i, dst, vec![l.with_age(age)]);
        }
        Ok(())
    }

    fn rx_ack(&mut self, i: usize, n: usize, headers: &[LsaHeader]) {
        let Some(nbr) = self.ifaces.get_mut(i).and_then(|x| x.nbrs.get_mut(n)) else {
            return;
        };
        if nbr.state < NbrState::Exchange {
            return;
        }
        for h in headers {
            let key = h.key();
            if nbr
                .rxmt
                .get(&key)
                .is_some_and(|(mine, _)| h.compare_recency(mine) == Ordering::Equal)
            {
                nbr.rxmt.remove(&key);
            }
        }
        if nbr.rxmt.is_empty() {
            nbr.rxmt_due = None;
        }
    }

    /// Floods `lsa` (section 13.3); `origin` is the interface and neighbour it came from
    /// (None for our own). Returns whether it was flooded back out of the receiving
    /// interface.
    fn flood(&mut self, lsa: &Lsa, origin: Option<(usize, usize)>, now: Instant) -> bool {
        let h = *lsa.header();
        let key = h.key();
        let mut back = false;
        for (i, ifc) in self.ifaces.iter_mut().enumerate() {
            if ifc.state == IfState::Down {
                continue;
            }
            let rxmt = ifc.spec.retransmit_interval;
            let mut added = false;
            for (n, nbr) in ifc.nbrs.iter_mut().enumerate() {
                if nbr.state < NbrState::Exchange {
                    continue;
                }
                if nbr.state != NbrState::Full
                    && let Some(req) = nbr.requests.get(&key)
                {
                    let c = h.compare_recency(req);
                    if c != Ordering::Less {
                        nbr.requests.remove(&key);
                        nbr.outstanding.remove(&key);
                    }
                    if c != Ordering::Greater {
                        continue;
                    }
                }
                if origin == Some((i, n)) {
                    continue;
                }
                nbr.rxmt.insert(key, (h, now));
                nbr.rxmt_due.get_or_insert(now + rxmt);
                added = true;
            }
            if !added {
                continue;
            }
            if let Some((oi, on)) = origin
                && oi == i
            {
                let from_dr_or_bdr = ifc.spec.network == OspfNetwork::Broadcast
                    && ifc
                        .nbrs
                        .get(on)
                        .is_some_and(|o| o.address == ifc.dr || o.address == ifc.bdr);
                if from_dr_or_bdr || ifc.state == IfState::Backup {
                    continue;
                }
                back = true;
            }
            ifc.flood_queue.push(lsa.with_age(tx_age(h.age)));
        }
        back
    }

    fn remove_from_rxmt(&mut self, key: &LsaKey) {
        for nbr in self.ifaces.iter_mut().flat_map(|i| i.nbrs.iter_mut()) {
            nbr.rxmt.remove(key);
        }
    }

    fn any_exchanging(&self) -> bool {
        self.ifaces
            .iter()
            .flat_map(|i| &i.nbrs)
            .any(|n| matches!(n.state, NbrState::Exchange | NbrState::Loading))
    }

    /// LoadingDone and the next LS Requests, after LSAs arrived.
    fn settle(&mut self, now: Instant) {
        for i in 0..self.ifaces.len() {
            let count = self.ifaces.get(i).map_or(0, |x| x.nbrs.len());
            for n in 0..count {
                let Some(nbr) = self.ifaces.get(i).and_then(|x| x.nbrs.get(n)) else {
                    continue;
                };
                if nbr.state == NbrState::Loading && nbr.requests.is_empty() {
                    if let Some(nbr) = self.ifaces.get_mut(i).and_then(|x| x.nbrs.get_mut(n)) {
                        nbr.outstanding.clear();
                        nbr.lsr_rxmt = None;
                    }
                    self.set_state(i, n, NbrState::Full);
                } else {
                    self.maybe_send_lsr(i, n, now);
                }
            }
        }
    }

    // === aging ===

    /// Once a second: LSAs that reached MaxAge are flooded as such; MaxAge LSAs no
    /// retransmission list holds are removed while no neighbour is in Exchange or Loading.
    fn age_scan(&mut self, now: Instant) {
        if now < self.next_age_scan {
            return;
        }
        self.next_age_scan = now + Duration::from_secs(1);
        let expired: Vec<LsaKey> = self
            .lsdb
            .iter()
            .filter(|(_, e)| !e.maxage_flooded && e.age(now) >= MAX_AGE)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            let Some(e) = self.lsdb.get_mut(&key) else {
                continue;
            };
            e.lsa.set_age(MAX_AGE);
            e.stamp = now;
            e.maxage_flooded = true;
            let lsa = e.lsa.clone();
            tracing::debug!(lsa = %key, "OSPF: LSA reached MaxAge");
            self.remove_from_rxmt(&key);
            self.flood(&lsa, None, now);
        }
        if !self.any_exchanging() {
            let on_lists: BTreeSet<LsaKey> = self
                .ifaces
                .iter()
                .flat_map(|i| &i.nbrs)
                .flat_map(|n| n.rxmt.keys().copied())
                .collect();
            let removable: Vec<LsaKey> = self
                .lsdb
                .iter()
                .filter(|(k, e)| e.age(now) >= MAX_AGE && e.maxage_flooded && !on_lists.contains(k))
                .map(|(k, _)| *k)
                .collect();
            for key in removable {
                tracing::debug!(lsa = %key, "OSPF: MaxAge LSA removed");
                self.lsdb.remove(&key);
            }
        }
        // Forget what we did with LSAs that nobody can hold any more.
        let hour = Duration::from_secs(u64::from(MAX_AGE));
        let lsdb = &self.lsdb;
        self.own.retain(|k, o| {
            lsdb.get(k).is_some()
                || [o.originated, o.flushed]
                    .into_iter()
                    .flatten()
                    .any(|t| now.saturating_duration_since(t) < hour)
        });
    }

    // === our LSAs ===

    /// Our LSAs as they should be now: the Router-LSA, a Network-LSA per broadcast interface
    /// where we are DR with a Full neighbour, and an AS-external-LSA per VIP. Nothing while
    /// shutting down.
    fn desired(&self) -> BTreeMap<LsaKey, LsaBody> {
        let mut out = BTreeMap::new();
        if self.shutdown.is_some() {
            return out;
        }
        let mut links = Vec::new();
        for ifc in &self.ifaces {
            let s = &ifc.spec;
            let stub = RouterLink {
                id: s.network_address(),
                data: s.mask(),
                link_type: link_type::STUB,
                metric: s.cost,
                tos: Vec::new(),
            };
            let any_full = ifc.nbrs.iter().any(|n| n.state == NbrState::Full);
            match (s.network, ifc.state) {
                (_, IfState::Down) => {}
                (OspfNetwork::PointToPoint, _) => {
                    for n in ifc.nbrs.iter().filter(|n| n.state == NbrState::Full) {
                        links.push(RouterLink {
                            id: n.router_id,
                            data: s.address,
                            link_type: link_type::POINT_TO_POINT,
                            metric: s.cost,
                            tos: Vec::new(),
                        });
                    }
                    links.push(stub);
                }
                (OspfNetwork::Broadcast, IfState::Waiting) => links.push(stub),
                (OspfNetwork::Broadcast, _) => {
                    let adjacent_to_dr = if ifc.dr == s.address {
                        any_full
                    } else {
                        ifc.nbrs
                            .iter()
                            .any(|n| n.address == ifc.dr && n.state == NbrState::Full)
                    };
                    if adjacent_to_dr {
                        links.push(RouterLink {
                            id: ifc.dr,
                            data: s.address,
                            link_type: link_type::TRANSIT,
                            metric: s.cost,
                            tos: Vec::new(),
                        });
                    } else {
                        links.push(stub);
                    }
                    if ifc.dr == s.address && any_full {
                        let mut routers = vec![self.router_id];
                        routers.extend(
                            ifc.nbrs
                                .iter()
                                .filter(|n| n.state == NbrState::Full)
                                .map(|n| n.router_id),
                        );
                        out.insert(
                            LsaKey {
                                ls_type: ls_type::NETWORK,
                                id: s.address,
                                adv_router: self.router_id,
                            },
                            LsaBody::Network(NetworkLsa {
                                mask: s.mask(),
                                routers,
                            }),
                        );
                    }
                }
            }
        }
        // Always an ASBR, VIPs or not (see the module docs: the first VIP must not wait for
        // MinLSInterval after the Router-LSA changed with the adjacency).
        out.insert(
            self.router_key(),
            LsaBody::Router(RouterLsa {
                flags: router_flags::E,
                links,
            }),
        );
        for vip in &self.vips {
            out.insert(
                self.external_key(*vip),
                LsaBody::External(ExternalLsa {
                    mask: Ipv4Addr::BROADCAST,
                    entries: vec![ExternalMetric {
                        type2: true,
                        tos: 0,
                        metric: self.external_metric,
                        forwarding: Ipv4Addr::UNSPECIFIED,
                        tag: 0,
                    }],
                }),
            );
        }
        out
    }

    /// Makes our LSAs in the database match [`desired`](Self::desired): originates what is
    /// missing, changed, due for refresh or superseded (section 13.4), at most once per
    /// MinLSInterval per LSA, and flushes what is no longer wanted.
    fn reconcile(&mut self, now: Instant) {
        let desired = self.desired();
        self.next_origination = None;
        let unwanted: Vec<LsaKey> = self
            .lsdb
            .own_keys()
            .filter(|k| !desired.contains_key(k))
            .copied()
            .collect();
        for key in unwanted {
            let live = self.lsdb.get(&key).is_some_and(|e| e.age(now) < MAX_AGE);
            if let Some(o) = self.own.get_mut(&key) {
                o.force = false;
            }
            if !live {
                continue;
            }
            // A flush is a new instance too: the neighbours drop it if it follows the one
            // we originated by less than MinLSArrival (section 13, step 5a).
            let earliest = self
                .own
                .get(&key)
                .and_then(|o| o.originated)
                .map(|t| t + MIN_LS_ARRIVAL);
            if let Some(t) = earliest.filter(|t| *t > now) {
                self.next_origination = Some(self.next_origination.map_or(t, |x| x.min(t)));
                continue;
            }
            self.flush(key, now);
        }
        for (key, body) in desired {
            let mut bytes = Vec::new();
            if let Err(e) = body.encode(&mut bytes) {
                tracing::warn!(lsa = %key, error = %e, "OSPF: cannot encode our LSA");
                continue;
            }
            let own = self.own.get(&key).copied().unwrap_or_default();
            let db = self.lsdb.get(&key);
            let needed = match db {
                None => true,
                Some(e) => {
                    let age = e.age(now);
                    own.force
                        || age >= LS_REFRESH_TIME
                        || e.lsa.body_bytes() != bytes.as_slice()
                        || e.lsa.header().options != options::E
                }
            };
            if !needed {
                continue;
            }
            let interval = if own.force {
                MIN_LS_ARRIVAL
            } else {
                MIN_LS_INTERVAL
            };
            let earliest = [
                own.originated.map(|t| t + interval),
                own.flushed.map(|t| t + MIN_LS_ARRIVAL),
            ]
            .into_iter()
            .flatten()
            .max();
            if let Some(t) = earliest.filter(|t| *t > now) {
                self.next_origination = Some(self.next_origination.map_or(t, |x| x.min(t)));
                continue;
            }
            let current = [own.seq, db.map(|e| e.lsa.header().seq)]
                .into_iter()
                .flatten()
                .max();
            let db_live = db.is_some_and(|e| e.age(now) < MAX_AGE);
            let seq = match current {
                None => INITIAL_SEQUENCE_NUMBER,
                Some(MAX_SEQUENCE_NUMBER) => {
                    // Section 12.1.6: flush the instance at MaxSequenceNumber, then start
                    // again at InitialSequenceNumber once it has left the database.
                    if db_live {
                        self.flush(key, now);
                    } else if db.is_none() {
                        if let Some(o) = self.own.get_mut(&key) {
                            o.seq = None;
                        }
                        self.next_origination = Some(now);
                    }
                    continue;
                }
                Some(s) => s.wrapping_add(1),
            };
            match Lsa::build(0, options::E, key.id, key.adv_router, seq, &body) {
                Ok(lsa) => {
                    tracing::debug!(lsa = %key, seq = format_args!("0x{seq:08x}"), "OSPF: originating");
                    self.remove_from_rxmt(&key);
                    self.lsdb.install(lsa.clone(), now, None);
                    self.flood(&lsa, None, now);
                    let o = self.own.entry(key).or_default();
                    o.seq = Some(seq);
                    o.originated = Some(now);
                    o.force = false;
                }
                Err(e) => tracing::warn!(lsa = %key, error = %e, "OSPF: cannot build our LSA"),
            }
        }
    }

    /// Premature aging (section 14.1): the database copy goes to MaxAge and is flooded.
    fn flush(&mut self, key: LsaKey, now: Instant) {
        let Some(e) = self.lsdb.get_mut(&key) else {
            return;
        };
        tracing::debug!(lsa = %key, "OSPF: flushing");
        e.lsa.set_age(MAX_AGE);
        e.stamp = now;
        e.received = None;
        e.maxage_flooded = true;
        let lsa = e.lsa.clone();
        self.remove_from_rxmt(&key);
        self.flood(&lsa, None, now);
        let o = self.own.entry(key).or_default();
        o.flushed = Some(now);
        o.seq = Some(o.seq.map_or(lsa.header().seq, |s| s.max(lsa.header().seq)));
    }

    /// Ends a graceful shutdown once the flushes are acknowledged or the deadline passed.
    fn check_shutdown(&mut self, now: Instant) {
        let Some(deadline) = self.shutdown else {
            return;
        };
        let lsdb = &self.lsdb;
        let mut nbrs = self.ifaces.iter().flat_map(|i| &i.nbrs);
        let flooding = nbrs.clone().any(|n| n.state >= NbrState::Exchange);
        // Flushes not acknowledged yet, or not sent yet (MinLSArrival).
        let pending = flooding
            && (nbrs.any(|n| n.rxmt.keys().any(|k| lsdb.is_self(k)))
                || lsdb
                    .own_keys()
                    .any(|k| lsdb.get(k).is_some_and(|e| e.age(now) < MAX_AGE)));
        if pending && now < deadline {
            return;
        }
        if pending {
            tracing::warn!("OSPF: shutdown: not every flush was acknowledged in time");
        }
        for i in 0..self.ifaces.len() {
            self.send_hello(i, true);
        }
        for ifc in &mut self.ifaces {
            ifc.state = IfState::Down;
            ifc.nbrs.clear();
            ifc.dr = Ipv4Addr::UNSPECIFIED;
            ifc.bdr = Ipv4Addr::UNSPECIFIED;
        }
        self.finished = true;
        tracing::info!("OSPF: shut down");
    }

    /// What follows every input: finished loads, our LSAs, the floods, the shutdown.
    fn after(&mut self, now: Instant) {
        self.settle(now);
        self.reconcile(now);
        self.emit_floods();
        self.check_shutdown(now);
    }
}

/// The age an LSA is sent with: InfTransDelay more, at most MaxAge.
fn tx_age(age: u16) -> u16 {
    age.saturating_add(INF_TRANS_DELAY).min(MAX_AGE)
}

#[cfg(test)]
#[path = "instance_tests.rs"]
mod tests;
