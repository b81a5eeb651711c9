//! Virtual IP drivers for NovaEdge: one trait, [`VipDriver`], and the drivers behind it.
//!
//! A driver makes the network deliver a VIP's traffic to this node. The controller decides
//! *which* node holds a VIP; a driver only carries out `assign`/`unassign` on the node and
//! reports what it has actually achieved:
//!
//! - [`bgp::BgpDriver`]: a BGP-4 speaker that announces each assigned VIP as a /32 or /128 with
//!   next-hop self to every configured peer, and withdraws it on unassignment and on shutdown.
//!   It only announces; it never installs routes.
//! - [`l2::L2Driver`]: binds each assigned VIP to a configured interface with rtnetlink (/32 or
//!   /128) and announces it with gratuitous ARP (IPv4) or unsolicited neighbour advertisement
//!   (IPv6); the kernel then answers ARP/ND for it. Removes only the addresses it added.
//! - [`ospf::OspfDriver`]: an OSPFv2 speaker that joins one area on one or more interfaces,
//!   forms adjacencies with the routers there, and advertises each assigned IPv4 VIP as an
//!   AS-external LSA (type 5, E2); withdrawal and shutdown flush the LSAs (MaxAge). It
//!   computes no routes.
//!
//! # The trait as an object
//!
//! [`VipDriver`] is object safe: the mutating methods return a boxed future ([`BoxFuture`]),
//! so an agent can hold a `Box<dyn VipDriver>` (or `Arc<dyn VipDriver>`) chosen at run time.
//! Drivers are cheap handles around background tasks; the futures only hand a command to those
//! tasks and return once the desired state is recorded, not once every peer has heard of it.
//! Progress is observed through [`VipDriver::status`] and [`VipDriver::subscribe`].

// `deny`, not `forbid`: `bgp::md5` allows it for its one `setsockopt(TCP_MD5SIG)` call.
#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;

use tokio::sync::watch;

pub mod bgp;
pub mod l2;
#[cfg(feature = "cli")]
pub mod lab;
pub mod manager;
pub mod ospf;

/// A boxed, sendable future, so [`VipDriver`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Errors a driver returns to its caller.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    /// The driver has been shut down and accepts no more commands.
    #[error("the VIP driver is shut down")]
    ShutDown,
    /// The driver's background task ended unexpectedly.
    #[error("the VIP driver's task ended unexpectedly: {0}")]
    TaskFailed(String),
}

/// Makes this node receive traffic for virtual IPs.
///
/// `assign` and `unassign` are idempotent: assigning an assigned VIP or unassigning an unknown
/// one succeeds and changes nothing. `shutdown` withdraws every VIP (for BGP: UPDATE withdraws,
/// then NOTIFICATION Cease/Administrative Shutdown on each session) and resolves when that is
/// done or has timed out; after it, `assign` returns [`VipError::ShutDown`].
pub trait VipDriver: Send + Sync + std::fmt::Debug {
    /// A short name for logs and status ("bgp", "l2").
    fn kind(&self) -> &'static str;

    /// Starts holding `vip`.
    fn assign(&self, vip: IpAddr) -> BoxFuture<'_, Result<(), VipError>>;

    /// Stops holding `vip`.
    fn unassign(&self, vip: IpAddr) -> BoxFuture<'_, Result<(), VipError>>;

    /// Withdraws everything and stops the driver.
    fn shutdown(&self) -> BoxFuture<'_, Result<(), VipError>>;

    /// The current state.
    fn status(&self) -> DriverStatus {
        self.subscribe().borrow().clone()
    }

    /// A receiver that sees every change of [`DriverStatus`].
    fn subscribe(&self) -> watch::Receiver<DriverStatus>;
}

/// What a driver has achieved for one VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipState {
    /// Assigned, but not yet active anywhere (for BGP: no established session announces it).
    Pending,
    /// Active: for BGP, announced on `peers` established sessions.
    Active {
        /// How many sessions announce the VIP (always 1 for L2).
        peers: usize,
    },
}

/// BGP session state (RFC 4271 section 8.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Not trying to connect (waiting out a connect-retry backoff, or shut down).
    Idle,
    /// Trying to open a TCP connection.
    Connect,
    /// Waiting for the peer to connect to us (passive peers).
    Active,
    /// OPEN sent, waiting for the peer's OPEN.
    OpenSent,
    /// OPENs exchanged, waiting for the KEEPALIVE that confirms ours.
    OpenConfirm,
    /// Session up; routes are exchanged.
    Established,
}

/// The state of one BGP peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's address and port.
    pub addr: SocketAddr,
    /// The peer's AS.
    pub remote_as: u32,
    /// Session state.
    pub state: SessionState,
    /// The negotiated hold time in seconds, while established.
    pub hold_time: Option<u16>,
    /// The last error that brought the session down (or kept it from coming up).
    pub last_error: Option<String>,
    /// How many times the session reached Established.
    pub established_count: u64,
    /// The prefixes currently announced on this session.
    pub announced: Vec<IpAddr>,
}

/// A snapshot of a driver's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverStatus {
    /// Every assigned VIP and what the driver achieved for it.
    pub vips: BTreeMap<IpAddr, VipState>,
    /// Per-peer session state (BGP only; empty for L2).
    pub peers: Vec<PeerStatus>,
    /// Whether the driver has been shut down.
    pub shut_down: bool,
    /// Per-VIP detail of the L2 driver (empty for BGP).
    pub l2: BTreeMap<IpAddr, L2VipStatus>,
    /// Conditions an operator should know about that do not belong to one VIP (for L2: ARP
    /// sysctls that let the node answer for the VIP on the wrong interface; for OSPF: a full
    /// link-state database, IPv6 VIPs).
    pub warnings: Vec<String>,
    /// Per-interface OSPF state with its neighbours (OSPF only; empty for the others).
    pub ospf: Vec<OspfInterfaceStatus>,
}

/// What the L2 driver did for one VIP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct L2VipStatus {
    /// The interface the VIP is bound to.
    pub interface: String,
    /// The driver added the address (and will remove it on unassign/shutdown).
    pub added: bool,
    /// The address was already on the interface before `assign`: it is left alone on
    /// unassign.
    pub pre_existing: bool,
    /// Gratuitous ARP / unsolicited NA frames sent since the last assign.
    pub announcements: u64,
    /// The last error (address management or sending), if any.
    pub last_error: Option<String>,
}

/// OSPF interface state (RFC 2328 section 9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OspfInterfaceState {
    /// Not running.
    Down,
    /// Broadcast, eligible to become DR: waiting (RouterDeadInterval) to learn the current DR
    /// and BDR before taking part in the election.
    Waiting,
    /// A point-to-point interface that is up.
    PointToPoint,
    /// Broadcast: neither DR nor BDR (always so with priority 0).
    DrOther,
    /// Broadcast: the Backup Designated Router.
    Backup,
    /// Broadcast: the Designated Router.
    Dr,
}

/// OSPF neighbour state (RFC 2328 section 10.1). `Attempt` (NBMA networks only) is not
/// modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OspfNeighborState {
    /// Nothing heard within the dead interval.
    Down,
    /// A Hello heard, but it does not list us yet.
    Init,
    /// Bidirectional, without an adjacency (broadcast: neither side is DR or BDR).
    TwoWay,
    /// Forming an adjacency: master/slave negotiation.
    ExStart,
    /// Exchanging database descriptions.
    Exchange,
    /// Requesting the LSAs we lack.
    Loading,
    /// Fully adjacent.
    Full,
}

/// One OSPF neighbour on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OspfNeighborStatus {
    /// Its router ID.
    pub router_id: Ipv4Addr,
    /// Its interface address.
    pub address: Ipv4Addr,
    /// Its state.
    pub state: OspfNeighborState,
    /// Its router priority.
    pub priority: u8,
    /// The DR its last Hello declared (0.0.0.0: none).
    pub dr: Ipv4Addr,
    /// The BDR its last Hello declared (0.0.0.0: none).
    pub bdr: Ipv4Addr,
}

/// Packet counters of one OSPF interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OspfCounters {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Received packets that did not decode (bad checksum, truncated, ...).
    pub rx_malformed: u64,
    /// Received packets dropped for an authentication type other than null (unsupported).
    pub rx_auth_dropped: u64,
    /// Received packets dropped for a mismatch: area, Hello or dead interval, network mask,
    /// options, MTU, source outside the subnet, or from no known neighbour.
    pub rx_mismatched: u64,
    /// LSAs dropped because their checksum did not verify.
    pub lsa_checksum_errors: u64,
}

/// One OSPF interface: its state, DR/BDR, neighbours and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OspfInterfaceStatus {
    /// Interface name.
    pub name: String,
    /// Its IPv4 address.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// Interface state.
    pub state: OspfInterfaceState,
    /// The Designated Router (broadcast only; 0.0.0.0: none).
    pub dr: Ipv4Addr,
    /// The Backup Designated Router (broadcast only; 0.0.0.0: none).
    pub bdr: Ipv4Addr,
    /// The neighbours heard from.
    pub neighbors: Vec<OspfNeighborStatus>,
    /// Packet counters.
    pub counters: OspfCounters,
    /// The last problem seen on the interface (a dropped packet and why).
    pub last_problem: Option<String>,
}
