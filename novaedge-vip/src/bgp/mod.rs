//! The BGP driver: a small BGP-4 speaker (RFC 4271) that announces VIPs as host routes.
//!
//! One task per configured peer runs the session state machine (`session.rs`): connect (or wait
//! for the peer to connect), exchange OPENs with the 4-octet AS (RFC 6793), multiprotocol
//! (RFC 4760, IPv4 and IPv6 unicast) and route refresh (RFC 2918) capabilities, negotiate the
//! hold time, then keep the peer's view equal to the set of assigned VIPs. Every session reads
//! the desired set from one `watch` channel and diffs it against what it has announced, so a
//! session that comes up announces everything, and `assign`/`unassign` reach every session.
//!
//! Announcements: ORIGIN IGP; AS_PATH `[local AS]` for eBGP and empty for iBGP; LOCAL_PREF for
//! iBGP; NEXT_HOP = our address on the session (IPv4), or MP_REACH_NLRI with our global IPv6
//! address as next hop (IPv6). An IPv4 VIP is only announced on a session that has an IPv4 next
//! hop (an IPv4 session, or `next_hop_v4` set), and likewise for IPv6.
//!
//! TCP-MD5 (RFC 2385): a peer with a `password` gets its key installed with
//! `setsockopt(TCP_MD5SIG)` on the connecting socket before `connect`, and on the listening
//! socket for its address (`md5.rs`). That call has no safe wrapper in tokio, socket2, nix or
//! rustix, so `md5.rs` holds the crate's only `unsafe` block: one `setsockopt` with a pointer to
//! a fully initialised `#[repr(C)]` copy of the kernel's `struct tcp_md5sig` (its size and field
//! offsets are checked at compile time) and exactly its length; the kernel only reads it
//! during the call. An error (for example a kernel without `CONFIG_TCP_MD5SIG`) ends up in the
//! peer's `last_error` and in a log line naming the peer.
//!
//! Connection collisions (RFC 4271 section 6.8) are resolved by BGP identifier (`session.rs`);
//! an OPEN with identifier 0, a multicast or broadcast one, or our own from an iBGP peer is
//! answered with OPEN error / Bad BGP Identifier.
//!
//! Not implemented yet: extended next hop (RFC 8950); TCP-AO (RFC 5925).

mod md5;
pub mod msg;
mod session;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::{BoxFuture, DriverStatus, PeerStatus, SessionState, VipDriver, VipError, VipState};

/// The well-known BGP port.
pub const BGP_PORT: u16 = 179;

/// Speaker-wide settings.
#[derive(Debug, Clone)]
pub struct BgpConfig {
    /// Our AS number (4-octet numbers are fine; AS_TRANS goes in OPEN's "My AS").
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Proposed hold time in seconds: 0 (no keepalives) or at least 3. Default 90.
    pub hold_time: u16,
    /// Keepalive interval in seconds; `None` means a third of the negotiated hold time. It is
    /// never longer than that.
    pub keepalive: Option<u16>,
    /// First delay before reconnecting after a failure; doubles with each consecutive failure
    /// up to `max_connect_retry`, with ±25% jitter. Default 5 s.
    pub connect_retry: Duration,
    /// Upper bound of the reconnect delay. Default 60 s.
    pub max_connect_retry: Duration,
    /// Where to accept connections from peers (needed for passive peers; active peers accept
    /// one too while they have no session). `None`: accept nothing.
    pub listen: Option<SocketAddr>,
    /// LOCAL_PREF sent to iBGP peers. Default 100.
    pub local_pref: u32,
    /// How long `shutdown` waits for sessions to send their withdraws. Default 5 s.
    pub shutdown_timeout: Duration,
    /// The peers.
    pub peers: Vec<PeerConfig>,
}

impl BgpConfig {
    /// A configuration with defaults and no peers.
    pub fn new(local_as: u32, router_id: Ipv4Addr) -> Self {
        Self {
            local_as,
            router_id,
            hold_time: 90,
            keepalive: None,
            connect_retry: Duration::from_secs(5),
            max_connect_retry: Duration::from_secs(60),
            listen: None,
            local_pref: 100,
            shutdown_timeout: Duration::from_secs(5),
            peers: Vec::new(),
        }
    }
}

/// One BGP neighbour.
#[derive(Clone)]
pub struct PeerConfig {
    /// The peer's address.
    pub addr: IpAddr,
    /// The peer's TCP port (179).
    pub port: u16,
    /// The peer's AS: equal to `local_as` for iBGP.
    pub remote_as: u32,
    /// Wait for the peer to connect instead of connecting.
    pub passive: bool,
    /// Local address to connect from (the kernel chooses when `None`).
    pub local_addr: Option<IpAddr>,
    /// IPv4 next hop to announce; default: our address on an IPv4 session.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// IPv6 next hop to announce; default: our address on an IPv6 session (if not link-local).
    pub next_hop_v6: Option<Ipv6Addr>,
    /// TCP-MD5 password (RFC 2385), 1 to 80 bytes: set on the connecting socket before
    /// `connect`, and on the listening socket for this peer's address. `Debug` prints it
    /// redacted.
    pub password: Option<String>,
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("addr", &self.addr)
            .field("port", &self.port)
            .field("remote_as", &self.remote_as)
            .field("passive", &self.passive)
            .field("local_addr", &self.local_addr)
            .field("next_hop_v4", &self.next_hop_v4)
            .field("next_hop_v6", &self.next_hop_v6)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl PeerConfig {
    /// An active peer on port 179 with default next hops.
    pub fn new(addr: IpAddr, remote_as: u32) -> Self {
        Self {
            addr,
            port: BGP_PORT,
            remote_as,
            passive: false,
            local_addr: None,
            next_hop_v4: None,
            next_hop_v6: None,
            password: None,
        }
    }
}

/// Errors from starting the BGP driver.
#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    /// The configuration is unusable.
    #[error("invalid BGP configuration: {0}")]
    Config(String),
    /// The listening socket could not be bound.
    #[error("cannot listen for BGP connections on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// State shared by the driver handle and the session tasks.
#[derive(Debug)]
struct Shared {
    desired: watch::Sender<BTreeSet<IpAddr>>,
    status: watch::Sender<DriverStatus>,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    /// Recomputes the per-VIP states from the desired set and what each session announces.
    fn refresh_vips(&self) {
        let desired = self.desired.borrow().clone();
        self.status.send_modify(|s| {
            s.vips = desired
                .iter()
                .map(|vip| {
                    let peers = s.peers.iter().filter(|p| p.announced.contains(vip)).count();
                    let state = if peers == 0 {
                        VipState::Pending
                    } else {
                        VipState::Active { peers }
                    };
                    (*vip, state)
                })
                .collect();
        });
    }

    fn update_peer(&self, idx: usize, f: impl FnOnce(&mut PeerStatus)) {
        self.status.send_modify(|s| {
            if let Some(p) = s.peers.get_mut(idx) {
                f(p);
            }
        });
    }
}

/// The BGP VIP driver. Cheap to share behind an `Arc`; dropping it without `shutdown` aborts
/// the sessions without withdrawing (the peers notice at hold-time expiry or connection close).
#[derive(Debug)]
pub struct BgpDriver {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    listen_addr: Option<SocketAddr>,
    shutdown_timeout: Duration,
}

impl BgpDriver {
    /// Validates `config`, binds the listener if any, and starts one session task per peer.
    /// Must be called inside a tokio runtime.
    pub async fn start(config: BgpConfig) -> Result<Self, BgpError> {
        if config.hold_time != 0 && config.hold_time < 3 {
            return Err(BgpError::Config(format!(
                "hold time {} s: must be 0 or at least 3 s (RFC 4271 section 4.2)",
                config.hold_time
            )));
        }
        if config.keepalive == Some(0) {
            return Err(BgpError::Config(
                "keepalive 0 s: must be at least 1 s".into(),
            ));
        }
        if config.router_id.is_unspecified() {
            return Err(BgpError::Config(
                "router id 0.0.0.0 is not a valid BGP identifier".into(),
            ));
        }
        for (i, p) in config.peers.iter().enumerate() {
            if config.peers.iter().take(i).any(|q| q.addr == p.addr) {
                return Err(BgpError::Config(format!(
                    "peer {} is configured twice",
                    p.addr
                )));
            }
            if p.passive && config.listen.is_none() {
                return Err(BgpError::Config(format!(
                    "peer {} is passive but no listen address is set",
                    p.addr
                )));
            }
            match p.password.as_deref().map(str::len) {
                Some(0) => {
                    return Err(BgpError::Config(format!(
                        "peers[{i}] ({}).password is empty; leave it unset to disable TCP-MD5",
                        p.addr
                    )));
                }
                Some(len) if len > md5::MAX_KEY_LEN => {
                    return Err(BgpError::Config(format!(
                        "peers[{i}] ({}).password is {len} bytes; TCP-MD5 allows at most {} \
                         (RFC 2385, Linux TCP_MD5SIG_MAXKEYLEN)",
                        p.addr,
                        md5::MAX_KEY_LEN
                    )));
                }
                _ => {}
            }
        }
        let listener = match config.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| BgpError::Listen { addr, source })?,
            ),
            None => None,
        };
        let listen_addr = listener.as_ref().and_then(|l| l.local_addr().ok());

        let mut status = DriverStatus {
            peers: config
                .peers
                .iter()
                .map(|p| PeerStatus {
                    addr: SocketAddr::new(p.addr, p.port),
                    remote_as: p.remote_as,
                    state: SessionState::Idle,
                    hold_time: None,
                    last_error: None,
                    established_count: 0,
                    announced: Vec::new(),
                })
                .collect(),
            ..DriverStatus::default()
        };
        if let (Some(listener), Some(addr)) = (&listener, listen_addr) {
            for (p, st) in config.peers.iter().zip(status.peers.iter_mut()) {
                if let Err(e) = listener_key(listener, addr, p) {
                    tracing::warn!(peer = %p.addr, error = %e, "BGP: cannot set the TCP-MD5 key on the listening socket; connections from this peer will be dropped by the kernel");
                    st.last_error = Some(format!("listening socket: {e}"));
                }
            }
        }
        let shared = Arc::new(Shared {
            desired: watch::channel(BTreeSet::new()).0,
            status: watch::channel(status).0,
            shutdown: watch::channel(false).0,
        });
        let config = Arc::new(config);
        let mut tasks = Vec::new();
        let mut inboxes = Vec::new();
        for idx in 0..config.peers.len() {
            let (tx, rx) = mpsc::channel(1);
            inboxes.push(tx);
            let peer = session::PeerTask::new(idx, config.clone(), shared.clone(), rx);
            tasks.push(tokio::spawn(peer.run()));
        }
        if let Some(listener) = listener {
            tasks.push(tokio::spawn(accept_loop(
                listener,
                config.clone(),
                inboxes,
                shared.shutdown.subscribe(),
            )));
        }
        Ok(Self {
            shared,
            tasks: Mutex::new(tasks),
            listen_addr,
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen_addr
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
            tracing::info!(%vip, assigned = on, "BGP VIP");
            self.shared.refresh_vips();
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
        for mut task in tasks {
            match tokio::time::timeout(self.shutdown_timeout, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(VipError::TaskFailed(e.to_string())),
                Err(_) => {
                    tracing::warn!(
                        "a BGP session did not finish its withdraws in time; aborting it"
                    );
                    task.abort();
                }
            }
        }
        self.shared.status.send_modify(|s| {
            s.shut_down = true;
            for p in &mut s.peers {
                p.state = SessionState::Idle;
                p.announced.clear();
                p.hold_time = None;
            }
        });
        self.shared.refresh_vips();
        result
    }
}

impl Drop for BgpDriver {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.get_mut() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }
}

impl VipDriver for BgpDriver {
    fn kind(&self) -> &'static str {
        "bgp"
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

/// Installs `peer`'s TCP-MD5 key on the listening socket, so the kernel accepts its signed
/// connections. Peers of the other address family than an IPv4 listener cannot reach it and
/// are skipped; an IPv6 listener takes IPv4 peers as v4-mapped addresses.
fn listener_key(
    listener: &TcpListener,
    listen: SocketAddr,
    peer: &PeerConfig,
) -> Result<(), md5::Md5Error> {
    let Some(password) = &peer.password else {
        return Ok(());
    };
    if listen.is_ipv4() && canonical(peer.addr).is_ipv6() {
        return Ok(());
    }
    md5::set_key(
        listener.as_fd(),
        listen.is_ipv6(),
        canonical(peer.addr),
        password.as_bytes(),
    )
}

/// Accepts connections and hands each to the session task of the peer it comes from.
async fn accept_loop(
    listener: TcpListener,
    config: Arc<BgpConfig>,
    inboxes: Vec<mpsc::Sender<TcpStream>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped(&mut shutdown) => return,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "BGP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let remote_ip = canonical(remote.ip());
        let idx = config
            .peers
            .iter()
            .position(|p| canonical(p.addr) == remote_ip);
        match idx.and_then(|i| inboxes.get(i)) {
            Some(inbox) => {
                if inbox.try_send(stream).is_err() {
                    tracing::debug!(%remote, "BGP peer already has a pending connection; dropping this one");
                }
            }
            None => tracing::info!(%remote, "BGP connection from an unknown peer refused"),
        }
    }
}

/// IPv4-mapped IPv6 addresses compare equal to their IPv4 form.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Resolves once shutdown is requested (or the driver is gone). Drops the watch guard before
/// returning, so the future stays `Send`.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
