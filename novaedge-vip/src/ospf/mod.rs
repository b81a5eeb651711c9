//! The OSPF driver: a small OSPFv2 speaker (RFC 2328) that advertises VIPs to the routers of
//! one area.
//!
//! The speaker joins the area on one or more interfaces (broadcast or point-to-point), forms
//! adjacencies with the routers there as any OSPF router would (Hello, DR/BDR election,
//! database exchange, flooding with acknowledgment and retransmission), keeps a link-state
//! database of everything the routers flood, and originates:
//!
//! - its **Router-LSA**: on a point-to-point interface a type 1 link to each Full neighbour
//!   plus a type 3 stub link for the interface subnet; on a broadcast interface a type 2
//!   transit link to the DR while fully adjacent to it (or while DR with a Full neighbour),
//!   else a stub link for the subnet. Link cost = interface cost. The E (ASBR) bit is always
//!   set: routers only use AS-external-LSAs from an ASBR they can reach, and setting it only
//!   while a VIP is advertised would hold the first VIP back by up to MinLSInterval (5 s)
//!   whenever the Router-LSA changed just before (as it does when the adjacency comes up).
//!   An ASBR with no external LSAs costs the routers nothing;
//! - a **Network-LSA** while it is DR of a broadcast network with a Full neighbour (only
//!   possible with a non-zero priority; the agent's default is 0, which never becomes DR);
//! - one **AS-external-LSA** (type 5) per VIP: link-state ID = the VIP, mask /32, E2 (type 2
//!   metric, default 20, configurable), forwarding address 0 (forward to us), tag 0.
//!
//! It computes no routes: it stores, acknowledges, ages and re-floods what it receives as
//! RFC 2328 section 13 requires, and that is all. The protocol core is free of I/O
//! ([`instance::Instance`]); this module runs it in a tokio task with one raw socket per
//! interface (`socket.rs`).
//!
//! # Why AS-external-LSAs
//!
//! A VIP could also be a stub link in our Router-LSA. Type 5 LSAs were chosen because:
//! each VIP is an independent LSA, so adding or removing one does not change the Router-LSA
//! and does not make every router in the area run a full SPF calculation (only the external
//! routes are recomputed); it is what "redistribute" means on every router, so operators
//! read it as such (E2, metric, tag); and each VIP is withdrawn on its own by flushing its
//! LSA (premature aging to MaxAge, section 14.1), without touching the others. The cost:
//! AS-external-LSAs are not flooded into stub or NSSA areas, so **the area must be a normal
//! (non-stub, non-NSSA) area**; the speaker sets the E option bit and drops Hellos without
//! it. Only /32s are originated, so the link-state ID is always the VIP itself and the
//! host-bit rule of appendix E is never needed.
//!
//! # Withdrawal and shutdown
//!
//! `unassign` re-issues that VIP's LSA at MaxAge and floods it, so every router drops it at
//! once (if the LSA was originated less than MinLSArrival, 1 s, before, the flush waits for
//! that second: routers drop instances that follow each other faster). `shutdown` flushes every
//! self-originated LSA (the AS-external-LSAs, the Network-LSA if any and the Router-LSA),
//! waits until the neighbours acknowledged the flushes or 2 s passed, then sends a last
//! Hello that lists no neighbour (the routers drop the adjacency at once instead of after
//! the dead interval) and stops. A speaker killed without shutdown is dropped by the routers
//! after the dead interval; its LSAs then stay in their databases, unreachable, until they
//! age out or the speaker comes back.
//!
//! # Sequence numbers and timers
//!
//! LSAs start at InitialSequenceNumber. If a router holds a newer instance of one of our LSAs
//! (after a restart, say), we issue one with a sequence number past it, or flush it if we no
//! longer want it (section 13.4). Our LSAs are refreshed every LSRefreshTime (30 minutes);
//! an LSA is re-originated at most once per MinLSInterval (5 s), so a VIP re-assigned shortly
//! after its LSA changed (a quick unassign and assign) reaches the routers up to 5 s later. The database ages every LSA and
//! removes MaxAge LSAs once no retransmission list holds them. The database is capped at
//! [`instance::DEFAULT_MAX_LSAS`] LSAs: further LSAs are dropped (unacknowledged, so the
//! router keeps retransmitting them) with a warning in the status.
//!
//! # Not supported
//!
//! Authentication other than null (AuType 0): packets with another AuType are dropped and
//! counted (`rx_auth_dropped`). Also not supported: NBMA, point-to-multipoint and virtual
//! links; several areas; opaque LSAs (we do not set the O bit, so routers do not send them;
//! any that arrive are dropped); demand circuits (DoNotAge); OSPFv3. Interfaces are read once
//! at start (address, index, MTU): an address change needs a restart of the driver.
//!
//! # Status
//!
//! [`VipState::Active`]`{peers}` counts the Full adjacencies the VIP's current LSA has been
//! acknowledged on; 0 (Pending) while no adjacency is Full or the LSA waits for
//! MinLSInterval. `DriverStatus::ospf` lists each interface's state, DR/BDR, counters and
//! neighbours. An IPv6 VIP is accepted but not advertised (OSPFv2 carries IPv4 only): it
//! stays Pending and is named in `DriverStatus::warnings`.

pub mod election;
pub mod instance;
mod lsdb;
pub mod packet;
mod socket;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::{BoxFuture, DriverStatus, VipDriver, VipError, VipState};
use instance::{InstanceConfig, InterfaceSpec};
use socket::RawSocket;

/// The network type of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OspfNetwork {
    /// A broadcast network (Ethernet): DR/BDR election, adjacencies with the DR and BDR.
    Broadcast,
    /// A point-to-point link: one neighbour, always adjacent.
    PointToPoint,
}

/// Speaker-wide settings.
#[derive(Debug, Clone)]
pub struct OspfConfig {
    /// Our router ID (not 0.0.0.0, unique in the area).
    pub router_id: Ipv4Addr,
    /// The area (a normal area: not stub, not NSSA).
    pub area: Ipv4Addr,
    /// The interfaces, all in `area`.
    pub interfaces: Vec<OspfInterfaceConfig>,
    /// The type 2 external metric of the VIPs' LSAs (1 to 16777214). Default 20.
    pub external_metric: u32,
}

impl OspfConfig {
    /// A configuration with metric 20 and no interfaces.
    pub fn new(router_id: Ipv4Addr, area: Ipv4Addr) -> Self {
        Self {
            router_id,
            area,
            interfaces: Vec::new(),
            external_metric: 20,
        }
    }
}

/// One interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OspfInterfaceConfig {
    /// Interface name; it must have an IPv4 address.
    pub name: String,
    /// Network type.
    pub network: OspfNetwork,
    /// HelloInterval: whole seconds, 1 to 65535. Must equal the routers'. Default 10 s.
    pub hello_interval: Duration,
    /// RouterDeadInterval: whole seconds, more than the hello interval. Must equal the
    /// routers'. Default 40 s.
    pub dead_interval: Duration,
    /// RxmtInterval: at least 1 s. Default 5 s.
    pub retransmit_interval: Duration,
    /// Router priority; 0 (the default) never becomes DR or BDR.
    pub priority: u8,
    /// Interface output cost (1 to 65535). Default 10.
    pub cost: u16,
}

impl OspfInterfaceConfig {
    /// An interface with the defaults (hello 10 s, dead 40 s, retransmit 5 s, priority 0,
    /// cost 10).
    pub fn new(name: impl Into<String>, network: OspfNetwork) -> Self {
        Self {
            name: name.into(),
            network,
            hello_interval: Duration::from_secs(10),
            dead_interval: Duration::from_secs(40),
            retransmit_interval: Duration::from_secs(5),
            priority: 0,
            cost: 10,
        }
    }
}

/// Errors from starting the OSPF driver.
#[derive(Debug, thiserror::Error)]
pub enum OspfError {
    /// The configuration is unusable; the message names the field.
    #[error("invalid OSPF configuration: {0}")]
    Config(String),
    /// An interface cannot be used.
    #[error("OSPF interface {name}: {reason}")]
    Interface {
        /// The interface.
        name: String,
        /// Why.
        reason: String,
    },
    /// The raw socket of an interface cannot be opened or configured (needs CAP_NET_RAW).
    #[error("OSPF interface {name}: raw IP socket (protocol 89)")]
    Socket {
        /// The interface.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// State shared by the handle and the task.
#[derive(Debug)]
struct Shared {
    desired: watch::Sender<BTreeSet<IpAddr>>,
    status: watch::Sender<DriverStatus>,
    shutdown: watch::Sender<bool>,
}

/// The OSPF VIP driver. Dropping it without `shutdown` stops the speaker without flushing
/// (the routers drop the adjacency after the dead interval).
#[derive(Debug)]
pub struct OspfDriver {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Received packets waiting for the core, per driver.
const RX_QUEUE: usize = 1024;

impl OspfDriver {
    /// Validates `config`, reads each interface's address, index and MTU, opens its raw
    /// socket and starts the speaker. Must be called inside a tokio runtime; needs
    /// CAP_NET_RAW.
    pub async fn start(config: OspfConfig) -> Result<Self, OspfError> {
        let specs = validate(&config)?;
        let mut sockets = Vec::new();
        let mut resolved = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            let (index, address, prefix_len, mtu) = resolve_interface(&spec.name)?;
            let socket = RawSocket::open(&spec.name, index, address).map_err(|source| {
                OspfError::Socket {
                    name: spec.name.clone(),
                    source,
                }
            })?;
            tracing::debug!(iface = %spec.name, index, %address, prefix_len, mtu, n = i, "OSPF interface resolved");
            sockets.push(Arc::new(socket));
            resolved.push(InterfaceSpec {
                address,
                prefix_len,
                mtu,
                ..spec
            });
        }
        let shared = Arc::new(Shared {
            desired: watch::channel(BTreeSet::new()).0,
            status: watch::channel(DriverStatus::default()).0,
            shutdown: watch::channel(false).0,
        });
        let (rx_tx, rx) = mpsc::channel(RX_QUEUE);
        let mut tasks = Vec::new();
        for (i, socket) in sockets.iter().enumerate() {
            tasks.push(tokio::spawn(read_loop(
                i,
                resolved.get(i).map(|s| s.name.clone()).unwrap_or_default(),
                socket.clone(),
                rx_tx.clone(),
            )));
        }
        let now = tokio::time::Instant::now().into_std();
        let inst = instance::Instance::new(
            InstanceConfig {
                router_id: config.router_id,
                area: config.area,
                external_metric: config.external_metric,
                interfaces: resolved,
                max_lsas: instance::DEFAULT_MAX_LSAS,
                dd_seq_seed: rand::random(),
            },
            now,
        );
        tracing::info!(router_id = %config.router_id, area = %config.area, "OSPF speaker started");
        tasks.push(tokio::spawn(run(inst, sockets, rx, shared.clone())));
        Ok(Self {
            shared,
            tasks: Mutex::new(tasks),
        })
    }

    fn set_vip(&self, vip: IpAddr, on: bool) -> Result<(), VipError> {
        if *self.shared.shutdown.borrow() {
            return Err(VipError::ShutDown);
        }
        let changed = self
            .shared
            .desired
            .send_if_modified(|d| if on { d.insert(vip) } else { d.remove(&vip) });
        if changed {
            tracing::info!(%vip, assigned = on, "OSPF VIP");
        }
        Ok(())
    }

    async fn stop(&self) -> Result<(), VipError> {
        self.shared.shutdown.send_replace(true);
        let tasks = match self.tasks.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        let mut result = Ok(());
        // The last task is the speaker; the others only read sockets.
        let mut tasks = tasks.into_iter().rev();
        if let Some(mut speaker) = tasks.next() {
            let limit = instance::SHUTDOWN_TIMEOUT + Duration::from_secs(1);
            match tokio::time::timeout(limit, &mut speaker).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(VipError::TaskFailed(e.to_string())),
                Err(_) => {
                    tracing::warn!(
                        "the OSPF speaker did not finish its shutdown in time; aborting it"
                    );
                    speaker.abort();
                }
            }
        }
        for t in tasks {
            t.abort();
        }
        self.shared.status.send_modify(|s| {
            s.shut_down = true;
            for v in s.vips.values_mut() {
                *v = VipState::Pending;
            }
        });
        result
    }
}

impl Drop for OspfDriver {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.get_mut() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }
}

impl VipDriver for OspfDriver {
    fn kind(&self) -> &'static str {
        "ospf"
    }

    fn assign(&self, vip: IpAddr) -> BoxFuture<'_, Result<(), VipError>> {
        let r = self.set_vip(vip, true);
        Box::pin(async move { r })
    }

    fn unassign(&self, vip: IpAddr) -> BoxFuture<'_, Result<(), VipError>> {
        let r = self.set_vip(vip, false);
        Box::pin(async move { r })
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), VipError>> {
        Box::pin(self.stop())
    }

    fn subscribe(&self) -> watch::Receiver<DriverStatus> {
        self.shared.status.subscribe()
    }
}

/// Checks the configuration and turns each interface into a spec (address, prefix and MTU
/// are filled in later from the system).
fn validate(config: &OspfConfig) -> Result<Vec<InterfaceSpec>, OspfError> {
    let err = |m: String| Err(OspfError::Config(m));
    if config.router_id.is_unspecified() {
        return err("router_id: 0.0.0.0 is not a valid router ID".into());
    }
    if !(1..=0x00ff_fffe).contains(&config.external_metric) {
        return err(format!(
            "external_metric: {} is outside 1..=16777214",
            config.external_metric
        ));
    }
    if config.interfaces.is_empty() {
        return err("interfaces: at least one interface is required".into());
    }
    let mut specs = Vec::new();
    for (i, c) in config.interfaces.iter().enumerate() {
        let at = format!("interfaces[{i}] ({})", c.name);
        if config.interfaces.iter().take(i).any(|o| o.name == c.name) {
            return err(format!("{at}: configured twice"));
        }
        let whole = |d: Duration, field: &str| -> Result<u64, OspfError> {
            if d.subsec_nanos() != 0 || d.is_zero() {
                return Err(OspfError::Config(format!(
                    "{at}.{field}: {d:?} is not a positive whole number of seconds"
                )));
            }
            Ok(d.as_secs())
        };
        let hello = whole(c.hello_interval, "hello_interval")?;
        let dead = whole(c.dead_interval, "dead_interval")?;
        let Ok(hello) = u16::try_from(hello) else {
            return err(format!("{at}.hello_interval: {hello} s exceeds 65535 s"));
        };
        let Ok(dead) = u32::try_from(dead) else {
            return err(format!("{at}.dead_interval: {dead} s is too long"));
        };
        if dead <= u32::from(hello) {
            return err(format!(
                "{at}.dead_interval: {dead} s must exceed the hello interval ({hello} s)"
            ));
        }
        if c.retransmit_interval < Duration::from_secs(1) {
            return err(format!(
                "{at}.retransmit_interval: {:?} is below 1 s",
                c.retransmit_interval
            ));
        }
        if c.cost == 0 {
            return err(format!("{at}.cost: must be at least 1"));
        }
        specs.push(InterfaceSpec {
            name: c.name.clone(),
            network: c.network,
            address: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            mtu: 1500,
            hello_interval: hello,
            dead_interval: dead,
            retransmit_interval: c.retransmit_interval,
            priority: c.priority,
            cost: c.cost,
        });
    }
    Ok(specs)
}

/// The first IPv4 address of interface `name` (the default router ID of the agent's OSPF
/// speaker).
pub fn interface_ipv4(name: &str) -> Result<Ipv4Addr, OspfError> {
    let (_, address, _) = interface_index_and_ipv4(name)?;
    Ok(address)
}

fn interface_index_and_ipv4(name: &str) -> Result<(u32, Ipv4Addr, u8), OspfError> {
    let bad = |reason: &str| OspfError::Interface {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let iface = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| bad("no such interface"))?;
    let (address, prefix) = iface
        .ips
        .iter()
        .find_map(|n| match n.ip() {
            IpAddr::V4(a) => Some((a, n.prefix())),
            IpAddr::V6(_) => None,
        })
        .ok_or_else(|| bad("has no IPv4 address"))?;
    Ok((iface.index, address, prefix))
}

/// The interface's index, first IPv4 address with its prefix length, and MTU (from
/// /sys/class/net/NAME/mtu).
fn resolve_interface(name: &str) -> Result<(u32, Ipv4Addr, u8, u16), OspfError> {
    let bad = |reason: String| OspfError::Interface {
        name: name.to_string(),
        reason,
    };
    let (index, address, prefix) = interface_index_and_ipv4(name)?;
    let path = format!("/sys/class/net/{name}/mtu");
    let mtu = std::fs::read_to_string(&path)
        .map_err(|e| bad(format!("cannot read {path}: {e}")))?
        .trim()
        .parse::<u32>()
        .map_err(|e| bad(format!("{path}: {e}")))?;
    if mtu < 576 {
        return Err(bad(format!("MTU {mtu} is below the 576 bytes OSPF needs")));
    }
    let mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
    Ok((index, address, prefix, mtu))
}

/// A packet read from an interface.
#[derive(Debug)]
struct Inbound {
    iface: usize,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    bytes: Vec<u8>,
}

/// Reads one interface's socket and hands the packets to the speaker; drops them (with a
/// log line) while the speaker's queue is full.
async fn read_loop(iface: usize, name: String, socket: Arc<RawSocket>, tx: mpsc::Sender<Inbound>) {
    let mut buf = vec![0u8; 65_535];
    let mut dropped = 0u64;
    let mut errors = 0u64;
    loop {
        match socket.recv(&mut buf).await {
            Ok(r) => {
                let bytes = buf
                    .get(r.payload.0..r.payload.1)
                    .unwrap_or_default()
                    .to_vec();
                let msg = Inbound {
                    iface,
                    src: r.src,
                    dst: r.dst,
                    bytes,
                };
                match tx.try_send(msg) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        dropped += 1;
                        if dropped.is_power_of_two() {
                            tracing::warn!(iface = %name, dropped, "OSPF: receive queue full; packets dropped");
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Err(e) => {
                errors += 1;
                if errors.is_power_of_two() {
                    tracing::warn!(iface = %name, error = %e, errors, "OSPF: receive failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The speaker: feeds the core with packets, commands and time, sends what it produces, and
/// publishes its status.
async fn run(
    mut inst: instance::Instance,
    sockets: Vec<Arc<RawSocket>>,
    mut rx: mpsc::Receiver<Inbound>,
    shared: Arc<Shared>,
) {
    let mut desired = shared.desired.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    let mut advertised: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let mut joined = vec![false; sockets.len()];
    let mut apply_desired = true;
    loop {
        let now = tokio::time::Instant::now().into_std();
        if apply_desired {
            apply_desired = false;
            let want: BTreeSet<Ipv4Addr> = desired
                .borrow_and_update()
                .iter()
                .filter_map(|v| match v {
                    IpAddr::V4(v4) => Some(*v4),
                    IpAddr::V6(_) => None,
                })
                .collect();
            for gone in advertised.difference(&want) {
                inst.withdraw(*gone, now);
            }
            for new in want.difference(&advertised) {
                inst.advertise(*new, now);
            }
            advertised = want;
        }
        while let Some(t) = inst.poll_transmit() {
            if let Some(s) = sockets.get(t.iface)
                && let Err(e) = s.send(t.dst, &t.packet).await
            {
                tracing::debug!(dst = %t.dst, error = %e, "OSPF: send failed");
            }
        }
        for (i, s) in sockets.iter().enumerate() {
            let want = inst.wants_all_d_routers(i);
            if let Some(j) = joined.get_mut(i)
                && *j != want
            {
                match s.set_all_d_routers(want) {
                    Ok(()) => *j = want,
                    Err(e) => {
                        tracing::warn!(error = %e, join = want, "OSPF: AllDRouters membership")
                    }
                }
            }
        }
        publish(&inst, &shared);
        if inst.is_finished() {
            return;
        }
        let deadline = inst.next_deadline().map(tokio::time::Instant::from_std);
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            p = rx.recv() => {
                let now = tokio::time::Instant::now().into_std();
                match p {
                    Some(p) => inst.handle_packet(p.iface, p.src, p.dst, &p.bytes, now),
                    None => inst.shutdown(now),
                }
            }
            r = desired.changed() => {
                if r.is_ok() {
                    apply_desired = true;
                } else {
                    inst.shutdown(tokio::time::Instant::now().into_std());
                }
            }
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow_and_update() {
                    inst.shutdown(tokio::time::Instant::now().into_std());
                }
            }
            () = sleep => inst.tick(tokio::time::Instant::now().into_std()),
        }
    }
}

/// Publishes the core's state when it changed.
fn publish(inst: &instance::Instance, shared: &Shared) {
    let desired = shared.desired.borrow().clone();
    let vips: BTreeMap<IpAddr, VipState> = desired
        .iter()
        .map(|vip| {
            let peers = match vip {
                IpAddr::V4(v4) => inst.vip_adjacencies(*v4),
                IpAddr::V6(_) => 0,
            };
            let state = if peers == 0 {
                VipState::Pending
            } else {
                VipState::Active { peers }
            };
            (*vip, state)
        })
        .collect();
    let mut warnings: Vec<String> = desired
        .iter()
        .filter(|v| v.is_ipv6())
        .map(|v| format!("VIP {v}: not advertised: OSPFv2 carries IPv4 prefixes only"))
        .collect();
    if inst.lsdb_full_drops() > 0 {
        warnings.push(format!(
            "link-state database full ({} LSAs): {} LSAs dropped",
            inst.lsdb_len(),
            inst.lsdb_full_drops()
        ));
    }
    let ospf = inst.interface_status();
    shared.status.send_if_modified(|s| {
        if s.vips == vips && s.warnings == warnings && s.ospf == ospf {
            return false;
        }
        s.vips = vips;
        s.warnings = warnings;
        s.ospf = ospf;
        true
    });
}
