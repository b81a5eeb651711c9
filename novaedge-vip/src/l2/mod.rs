//! The L2 driver: the VIP as an address on a local interface, announced with gratuitous ARP
//! (IPv4) or unsolicited neighbour advertisement (IPv6).
//!
//! `assign(vip)`:
//! 1. binds the VIP to the configured interface with rtnetlink, as /32 (IPv4) or /128 (IPv6,
//!    `nodad`, so it is usable at once instead of after duplicate address detection). If the
//!    address is already there, it is used as it is and marked `pre_existing`: the driver never
//!    removes an address it did not add.
//! 2. sends `announce_count` announcements (default 3), `announce_interval` apart (default
//!    500 ms), from the interface's MAC on an AF_PACKET socket. IPv4: ARP *request* with
//!    sender = target = VIP, target MAC zero, to broadcast: this is RFC 5227's "ARP
//!    Announcement", the form hosts are required to accept, and every RFC 826 receiver updates
//!    an existing entry from the sender fields whatever the opcode. Set `garp_reply` to also
//!    send the reply form (`arping -A`), which some old switches and routers want.
//!    IPv6: unsolicited NA to ff02::1 with the override flag and a target link-layer address
//!    option.
//! 3. From then on the kernel answers ARP / neighbour solicitations for the VIP.
//!
//! # Address lease (fencing)
//!
//! An address added by the driver is given a valid lifetime of `address_lease` (default 3 s),
//! refreshed every third of it. If the driver process dies (SIGKILL, OOM) the kernel removes
//! the address when the lease runs out, so the node stops answering ARP for the VIP by itself;
//! the controller's fencing delay must be at least the lease before it moves the VIP. With
//! `address_lease: None` the address stays until it is removed, also after a crash.
//!
//! # ARP sysctls
//!
//! Linux answers ARP for any local address on any interface (`arp_ignore=0`) and may use any
//! local address as the sender of its own requests (`arp_announce=0`). With several
//! interfaces in the VIP's subnet that makes other interfaces answer for the VIP too. The
//! recommended settings on the VIP interface are `arp_ignore=1` (answer only for addresses
//! on the interface the request came in on) and `arp_announce=2` (use the best local address
//! for the target as the ARP sender). The driver reads them at start (the effective value is
//! the larger of `all` and the interface's) and reports weaker values in
//! [`DriverStatus::warnings`]; it changes them only when `set_arp_sysctls` is set.
//!
//! # Sending frames
//!
//! socket2 0.6 opens AF_PACKET sockets but has no safe way to build the `sockaddr_ll` that
//! binds one to an interface, and this workspace forbids `unsafe`. Frames are therefore sent
//! through `pnet_datalink`'s AF_PACKET channel, which contains that `unsafe` in a reviewed
//! crate. A channel is opened per announcement burst and closed after it.

pub mod frame;
mod netlink;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::{BoxFuture, DriverStatus, L2VipStatus, VipDriver, VipError, VipState};
use frame::{GarpKind, Mac};

/// Settings of the L2 driver.
#[derive(Debug, Clone)]
pub struct L2Config {
    /// The interface that holds the VIPs and sends the announcements.
    pub interface: String,
    /// Announcements sent after each assign (default 3).
    pub announce_count: u32,
    /// Time between announcements (default 500 ms).
    pub announce_interval: Duration,
    /// Also send the ARP reply form of gratuitous ARP (default false: request form only).
    pub garp_reply: bool,
    /// Valid lifetime of the addresses the driver adds, refreshed every third of it; `None`
    /// adds permanent addresses. Default 3 s. See the module docs.
    pub address_lease: Option<Duration>,
    /// Set `arp_ignore=1` and `arp_announce=2` on the interface at start (default false:
    /// only check and report).
    pub set_arp_sysctls: bool,
}

impl L2Config {
    /// Defaults for `interface`.
    pub fn new(interface: impl Into<String>) -> Self {
        Self {
            interface: interface.into(),
            announce_count: 3,
            announce_interval: Duration::from_millis(500),
            garp_reply: false,
            address_lease: Some(Duration::from_secs(3)),
            set_arp_sysctls: false,
        }
    }
}

/// Errors from starting the L2 driver.
#[derive(Debug, thiserror::Error)]
pub enum L2Error {
    /// The interface does not exist or has no MAC address.
    #[error("interface {0:?}: {1}")]
    Interface(String, String),
    /// The rtnetlink socket could not be opened.
    #[error("cannot open an rtnetlink socket")]
    Netlink(#[source] std::io::Error),
    /// A sysctl could not be written (`set_arp_sysctls`).
    #[error("cannot set {path}")]
    Sysctl {
        /// The /proc/sys path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct Held {
    added: bool,
    /// The announcement burst and lease refresher for this VIP.
    task: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct State {
    vips: BTreeMap<IpAddr, Held>,
    shut_down: bool,
}

#[derive(Debug)]
struct Inner {
    config: L2Config,
    mac: Mac,
    addrs: netlink::Addresses,
    state: Mutex<State>,
    status: watch::Sender<DriverStatus>,
}

/// The L2 VIP driver. Cheap to clone.
#[derive(Debug, Clone)]
pub struct L2Driver {
    inner: Arc<Inner>,
}

// === impl L2Driver ===

impl L2Driver {
    /// Looks up the interface, opens rtnetlink, and checks (or sets) the ARP sysctls. Needs
    /// `CAP_NET_ADMIN` (addresses) and `CAP_NET_RAW` (announcements) when VIPs are assigned.
    pub async fn start(config: L2Config) -> Result<Self, L2Error> {
        let iface = find_interface(&config.interface)?;
        let mac = iface
            .mac
            .map(|m| m.octets())
            .filter(|m| *m != [0; 6])
            .ok_or_else(|| L2Error::Interface(config.interface.clone(), "has no MAC".into()))?;
        if config.set_arp_sysctls {
            for (name, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
                let path = format!("/proc/sys/net/ipv4/conf/{}/{name}", config.interface);
                std::fs::write(&path, value).map_err(|source| L2Error::Sysctl { path, source })?;
            }
        }
        let warnings = check_arp_sysctls(&config.interface);
        for w in &warnings {
            tracing::warn!(interface = %config.interface, "{w}");
        }
        let addrs = netlink::Addresses::open(iface.index).map_err(L2Error::Netlink)?;
        let status = DriverStatus {
            warnings,
            ..DriverStatus::default()
        };
        Ok(Self {
            inner: Arc::new(Inner {
                mac,
                addrs,
                state: Mutex::new(State::default()),
                status: watch::channel(status).0,
                config,
            }),
        })
    }

    /// The MAC address announcements are sent from.
    pub fn mac(&self) -> Mac {
        self.inner.mac
    }

    async fn do_assign(&self, vip: IpAddr) -> Result<(), VipError> {
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        if state.shut_down {
            return Err(VipError::ShutDown);
        }
        if state.vips.contains_key(&vip) {
            return Ok(());
        }
        let mut st = L2VipStatus {
            interface: inner.config.interface.clone(),
            ..L2VipStatus::default()
        };
        let lease = inner.config.address_lease;
        let (vip_state, added) = match inner.addrs.ensure(vip, lease).await {
            Ok(netlink::Ensured::Added) => {
                st.added = true;
                (VipState::Active { peers: 1 }, true)
            }
            Ok(netlink::Ensured::PreExisting) => {
                st.pre_existing = true;
                tracing::info!(%vip, interface = %inner.config.interface,
                    "VIP already on the interface; using it and leaving it there on unassign");
                (VipState::Active { peers: 1 }, false)
            }
            Err(e) => {
                tracing::warn!(%vip, error = %e, "cannot add VIP");
                st.last_error = Some(format!("adding {vip}: {e}"));
                (VipState::Pending, false)
            }
        };
        let active = vip_state != VipState::Pending;
        inner.status.send_modify(|s| {
            s.vips.insert(vip, vip_state);
            s.l2.insert(vip, st);
        });
        let task = active.then(|| tokio::spawn(announce(self.inner.clone(), vip, added)));
        state.vips.insert(vip, Held { added, task });
        Ok(())
    }

    async fn do_unassign(&self, vip: IpAddr, state: &mut State) {
        let Some(held) = state.vips.remove(&vip) else {
            return;
        };
        if let Some(t) = held.task {
            t.abort();
        }
        let mut error = None;
        if held.added
            && let Err(e) = self.inner.addrs.remove(vip).await
        {
            tracing::warn!(%vip, error = %e, "cannot remove VIP");
            error = Some(format!("removing {vip}: {e}"));
        }
        self.inner.status.send_modify(|s| match error {
            // Keep the entry so the failure stays visible; the VIP is no longer assigned.
            Some(e) => {
                s.vips.remove(&vip);
                if let Some(st) = s.l2.get_mut(&vip) {
                    st.last_error = Some(e);
                }
            }
            None => {
                s.vips.remove(&vip);
                s.l2.remove(&vip);
            }
        });
    }
}

impl VipDriver for L2Driver {
    fn kind(&self) -> &'static str {
        "l2"
    }

    fn assign(&self, vip: IpAddr) -> BoxFuture<'_, Result<(), VipError>> {
        Box::pin(self.do_assign(vip))
    }

    fn unassign(&self, vip: IpAddr) -> BoxFuture<'_, Result<(), VipError>> {
        Box::pin(async move {
            let mut state = self.inner.state.lock().await;
            if state.shut_down {
                return Err(VipError::ShutDown);
            }
            self.do_unassign(vip, &mut state).await;
            Ok(())
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), VipError>> {
        Box::pin(async move {
            let mut state = self.inner.state.lock().await;
            let vips: Vec<IpAddr> = state.vips.keys().copied().collect();
            for vip in vips {
                self.do_unassign(vip, &mut state).await;
            }
            state.shut_down = true;
            self.inner.status.send_modify(|s| s.shut_down = true);
            Ok(())
        })
    }

    fn subscribe(&self) -> watch::Receiver<DriverStatus> {
        self.inner.status.subscribe()
    }
}

/// Sends the announcement burst for `vip`, then (for an address we added with a lease) keeps
/// refreshing the lease until aborted.
async fn announce(inner: Arc<Inner>, vip: IpAddr, added: bool) {
    let frames: Vec<Vec<u8>> = match vip {
        IpAddr::V4(v4) => {
            let mut f = vec![frame::gratuitous_arp(inner.mac, v4, GarpKind::Request)];
            if inner.config.garp_reply {
                f.push(frame::gratuitous_arp(inner.mac, v4, GarpKind::Reply));
            }
            f
        }
        IpAddr::V6(v6) => vec![frame::unsolicited_na(inner.mac, v6)],
    };
    let lease = inner.config.address_lease.filter(|_| added);
    let refresh = lease.map(|l| l / 3);
    let mut next_refresh = refresh.map(|r| tokio::time::Instant::now() + r);
    for i in 0..inner.config.announce_count {
        if i > 0 {
            tokio::time::sleep(inner.config.announce_interval).await;
        }
        let name = inner.config.interface.clone();
        let fr = frames.clone();
        let sent = tokio::task::spawn_blocking(move || send_frames(&name, &fr))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        inner.status.send_modify(|s| {
            if let Some(st) = s.l2.get_mut(&vip) {
                match &sent {
                    Ok(n) => st.announcements += *n,
                    Err(e) => st.last_error = Some(format!("announcing {vip}: {e}")),
                }
            }
        });
        match sent {
            Ok(_) => tracing::debug!(%vip, n = i + 1, "announced"),
            Err(e) => tracing::warn!(%vip, error = %e, "announcement failed"),
        }
        if let (Some(at), Some(r)) = (next_refresh, refresh)
            && tokio::time::Instant::now() >= at
        {
            refresh_lease(&inner, vip, lease).await;
            next_refresh = Some(at + r);
        }
    }
    let (Some(mut at), Some(r)) = (next_refresh, refresh) else {
        return;
    };
    loop {
        tokio::time::sleep_until(at).await;
        refresh_lease(&inner, vip, lease).await;
        at += r;
    }
}

async fn refresh_lease(inner: &Inner, vip: IpAddr, lease: Option<Duration>) {
    if let Err(e) = inner.addrs.refresh(vip, lease).await {
        tracing::warn!(%vip, error = %e, "cannot refresh the VIP's address lease");
        inner.status.send_modify(|s| {
            if let Some(st) = s.l2.get_mut(&vip) {
                st.last_error = Some(format!("refreshing {vip}: {e}"));
            }
        });
    }
}

fn find_interface(name: &str) -> Result<pnet_datalink::NetworkInterface, L2Error> {
    pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| L2Error::Interface(name.to_string(), "no such interface".into()))
}

/// Opens an AF_PACKET channel on `interface` and sends `frames`; returns how many were sent.
fn send_frames(interface: &str, frames: &[Vec<u8>]) -> Result<u64, String> {
    let iface = find_interface(interface).map_err(|e| e.to_string())?;
    let cfg = pnet_datalink::Config {
        read_timeout: Some(Duration::from_millis(1)),
        ..pnet_datalink::Config::default()
    };
    let mut tx = match pnet_datalink::channel(&iface, cfg) {
        Ok(pnet_datalink::Channel::Ethernet(tx, _rx)) => tx,
        Ok(_) => return Err("unexpected channel type".into()),
        Err(e) => return Err(format!("AF_PACKET socket on {interface}: {e}")),
    };
    let mut n = 0;
    for f in frames {
        match tx.send_to(f, None) {
            Some(Ok(())) => n += 1,
            Some(Err(e)) => return Err(format!("send on {interface}: {e}")),
            None => return Err(format!("send on {interface}: no buffer")),
        }
    }
    Ok(n)
}

/// Reads `arp_ignore` and `arp_announce` for `interface` (effective value: the larger of
/// `all` and the interface's own) and describes the ones weaker than recommended.
pub fn check_arp_sysctls(interface: &str) -> Vec<String> {
    let read = |scope: &str, name: &str| -> Option<u32> {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{scope}/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let mut out = Vec::new();
    for (name, want, why) in [
        (
            "arp_ignore",
            1,
            "the node answers ARP for the VIP on every interface",
        ),
        (
            "arp_announce",
            2,
            "ARP requests may carry the VIP (or another interface's address) as sender",
        ),
    ] {
        let eff = read("all", name)
            .into_iter()
            .chain(read(interface, name))
            .max();
        match eff {
            Some(v) if v >= want => {}
            Some(v) => out.push(format!(
                "net.ipv4.conf.{interface}.{name}={v} (effective): {why}; \
                 {want} is recommended when several interfaces share the VIP's subnet"
            )),
            None => out.push(format!("cannot read net.ipv4.conf.{interface}.{name}")),
        }
    }
    out
}
