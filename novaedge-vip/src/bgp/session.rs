//! The per-peer session state machine (RFC 4271 section 8), reduced to what an
//! announce-only speaker needs.
//!
//! ```text
//!  Idle --(backoff elapsed)--> Connect --(TCP up)--> OpenSent --(OPEN ok)--> OpenConfirm
//!   ^                            |  (passive: Active, waits for the peer)         |
//!   |                            v                                          (KEEPALIVE)
//!   +----- any error: NOTIFICATION if we detected it, close, backoff <-- Established
//! ```
//!
//! Connection collisions (RFC 4271 section 6.8): if the peer connects to us while a
//! connection is in OpenSent or OpenConfirm, both run the OPEN exchange side by side. As soon
//! as an OPEN arrives on one of them while the other exists, the peer's BGP identifier is known
//! and the collision is settled: the connection opened by the side with the higher identifier
//! (compared as unsigned 32-bit integers; on a tie, RFC 6286's higher AS) survives, the other
//! gets NOTIFICATION Cease / Connection Collision Resolution (6/7). A connection that reaches
//! Established wins over any other: later ones, and one still in OpenSent, get the same Cease.
//! GoBGP and BIRD apply the same rule, so both ends close the same connection.
//!
//! Reconnects back off exponentially (connect_retry, doubling up to max_connect_retry) with
//! ±25% jitter so that many nodes restarting together do not reconnect in lockstep; the
//! backoff resets once a session reaches Established.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};

use super::msg::{
    self, AFI_IPV4, AFI_IPV6, AsSegment, Capability, Codec, DecodeError, Message, Notification,
    Open, PathAttribute, Prefix, SAFI_UNICAST, Update,
};
use super::{BgpConfig, PeerConfig, Shared, md5, stopped};
use crate::SessionState;

/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Hold timer while waiting for the peer's OPEN (RFC 4271 suggests 4 minutes).
const OPEN_HOLD: Duration = Duration::from_secs(240);
/// Prefixes per UPDATE: keeps every UPDATE well under 4096 bytes (IPv6 /128 is 17 bytes).
const BATCH: usize = 200;

/// The reconnect delay after `failures` consecutive failures; `jitter` in [0, 1) picks a point
/// in the ±25% window.
pub(crate) fn backoff(base: Duration, max: Duration, failures: u32, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX));
    let capped = exp.min(max);
    capped.mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// Why a session ended.
enum End {
    /// Graceful shutdown done: stop the task.
    Shutdown,
    /// An error; reconnect after a backoff.
    Error(String),
}

/// A connection: a cancel-safe message reader and a writer.
struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: Vec<u8>,
    codec: Codec,
}

enum ReadError {
    Closed,
    Io(std::io::Error),
    Malformed(DecodeError),
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        let (rd, wr) = stream.into_split();
        Self {
            rd,
            wr,
            buf: Vec::with_capacity(8192),
            codec: Codec::default(),
        }
    }

    /// The next message. Cancel safe: bytes read are kept in `buf` until a whole message is
    /// there, and `read` itself is cancel safe.
    async fn next(&mut self) -> Result<Message, ReadError> {
        loop {
            if let Some((m, n)) = self.codec.decode(&self.buf).map_err(ReadError::Malformed)? {
                self.buf.drain(..n);
                return Ok(m);
            }
            let mut chunk = [0u8; 4096];
            let n = self.rd.read(&mut chunk).await.map_err(ReadError::Io)?;
            if n == 0 {
                return Err(ReadError::Closed);
            }
            self.buf
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    }

    async fn send(&mut self, m: &Message) -> std::io::Result<()> {
        self.wr.write_all(&self.codec.encode(m)).await
    }

    /// Sends a NOTIFICATION and closes our side; errors are irrelevant at that point.
    async fn notify_and_close(&mut self, n: Notification) {
        let _ = timeout(Duration::from_secs(1), async {
            let _ = self.send(&Message::Notification(n)).await;
            let _ = self.wr.shutdown().await;
        })
        .await;
    }
}

/// One peer's session task.
pub(crate) struct PeerTask {
    idx: usize,
    cfg: PeerConfig,
    global: Arc<BgpConfig>,
    shared: Arc<Shared>,
    incoming: mpsc::Receiver<TcpStream>,
    desired: watch::Receiver<BTreeSet<IpAddr>>,
    shutdown: watch::Receiver<bool>,
}

impl PeerTask {
    pub(crate) fn new(
        idx: usize,
        global: Arc<BgpConfig>,
        shared: Arc<Shared>,
        incoming: mpsc::Receiver<TcpStream>,
    ) -> Self {
        let cfg = global
            .peers
            .get(idx)
            .cloned()
            .unwrap_or_else(|| super::PeerConfig::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
        let desired = shared.desired.subscribe();
        let shutdown = shared.shutdown.subscribe();
        Self {
            idx,
            cfg,
            global,
            shared,
            incoming,
            desired,
            shutdown,
        }
    }

    fn peer_addr(&self) -> SocketAddr {
        SocketAddr::new(self.cfg.addr, self.cfg.port)
    }

    fn set_state(&self, state: SessionState) {
        self.shared.update_peer(self.idx, |p| {
            if p.state != state {
                tracing::debug!(peer = %p.addr, from = ?p.state, to = ?state, "BGP session state");
            }
            p.state = state;
            if state != SessionState::Established {
                p.hold_time = None;
            }
        });
    }

    fn is_shutdown(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub(crate) async fn run(mut self) {
        let mut failures: u32 = 0;
        // A connection the peer opened while we were backing off.
        let mut pending: Option<TcpStream> = None;
        loop {
            if self.is_shutdown() {
                self.set_state(SessionState::Idle);
                return;
            }
            let stream = match pending.take() {
                Some(s) => Ok(Some((s, false))),
                None => self.connect().await,
            };
            let (stream, outbound) = match stream {
                Ok(Some(s)) => s,
                Ok(None) => {
                    self.set_state(SessionState::Idle);
                    return;
                }
                Err(e) => {
                    self.record_error(e);
                    failures = failures.saturating_add(1);
                    if let Some(s) = self.wait_backoff(failures).await {
                        pending = s;
                        continue;
                    }
                    return;
                }
            };
            let before = self.established_count();
            let end = self.session(stream, outbound).await;
            self.shared.update_peer(self.idx, |p| p.announced.clear());
            self.shared.refresh_vips();
            self.set_state(SessionState::Idle);
            match end {
                End::Shutdown => return,
                End::Error(e) => {
                    self.record_error(e);
                    if self.established_count() > before {
                        failures = 0;
                    }
                    failures = failures.saturating_add(1);
                    match self.wait_backoff(failures).await {
                        Some(s) => pending = s,
                        None => return,
                    }
                }
            }
        }
    }

    fn established_count(&self) -> u64 {
        self.shared
            .status
            .borrow()
            .peers
            .get(self.idx)
            .map_or(0, |p| p.established_count)
    }

    fn record_error(&self, e: String) {
        tracing::warn!(peer = %self.peer_addr(), error = %e, "BGP session down");
        self.shared
            .update_peer(self.idx, |p| p.last_error = Some(e));
    }

    /// Waits out the reconnect delay. `None`: shut down. `Some(Some(stream))`: the peer
    /// connected to us meanwhile. Passive peers do not wait: they go back to listening.
    async fn wait_backoff(&mut self, failures: u32) -> Option<Option<TcpStream>> {
        if self.cfg.passive {
            return Some(None);
        }
        let delay = backoff(
            self.global.connect_retry,
            self.global.max_connect_retry,
            failures.saturating_sub(1),
            rand::rng().random::<f64>(),
        );
        tracing::debug!(peer = %self.peer_addr(), ?delay, "BGP reconnect backoff");
        tokio::select! {
            _ = tokio::time::sleep(delay) => Some(None),
            Some(s) = self.incoming.recv() => Some(Some(s)),
            _ = stopped(&mut self.shutdown) => None,
        }
    }

    /// Opens the transport: connect (active) or wait for the peer (passive). `Ok(None)` means
    /// shutdown was requested; otherwise the stream and whether we opened it (outbound).
    async fn connect(&mut self) -> Result<Option<(TcpStream, bool)>, String> {
        if self.cfg.passive {
            self.set_state(SessionState::Active);
            return tokio::select! {
                Some(s) = self.incoming.recv() => Ok(Some((s, false))),
                _ = stopped(&mut self.shutdown) => Ok(None),
            };
        }
        self.set_state(SessionState::Connect);
        let addr = self.peer_addr();
        let local = self.cfg.local_addr;
        let password = self.cfg.password.clone();
        let connect = async move {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if let Some(password) = password {
                // Before connect: the SYN must already be signed.
                md5::set_key(
                    socket.as_fd(),
                    addr.is_ipv6(),
                    addr.ip(),
                    password.as_bytes(),
                )
                .map_err(std::io::Error::other)?;
            }
            if let Some(ip) = local {
                socket.bind(SocketAddr::new(ip, 0))?;
            }
            socket.connect(addr).await
        };
        tokio::select! {
            r = timeout(CONNECT_TIMEOUT, connect) => match r {
                Ok(Ok(s)) => Ok(Some((s, true))),
                Ok(Err(e)) => Err(format!("connect to {addr}: {e}")),
                Err(_) => Err(format!("connect to {addr}: timed out")),
            },
            // The peer was faster: no collision yet, our attempt is simply dropped.
            Some(s) = self.incoming.recv() => Ok(Some((s, false))),
            _ = stopped(&mut self.shutdown) => Ok(None),
        }
    }

    fn our_open(&self) -> Open {
        Open::new(
            self.global.local_as,
            self.global.hold_time,
            self.global.router_id,
            vec![
                Capability::Multiprotocol {
                    afi: AFI_IPV4,
                    safi: SAFI_UNICAST,
                },
                Capability::Multiprotocol {
                    afi: AFI_IPV6,
                    safi: SAFI_UNICAST,
                },
                Capability::RouteRefresh,
                Capability::FourOctetAs(self.global.local_as),
            ],
        )
    }

    /// Checks the peer's OPEN (RFC 4271 section 6.2) and returns the negotiated hold time.
    fn check_open(&self, open: &Open) -> Result<u16, Notification> {
        if open.asn() != self.cfg.remote_as {
            return Err(Notification::new(
                msg::code::OPEN,
                msg::subcode::BAD_PEER_AS,
                Vec::new(),
            ));
        }
        let ibgp = self.cfg.remote_as == self.global.local_as;
        if open.bgp_id.is_unspecified()
            || open.bgp_id.is_multicast()
            || open.bgp_id.is_broadcast()
            || (ibgp && open.bgp_id == self.global.router_id)
        {
            return Err(Notification::new(
                msg::code::OPEN,
                msg::subcode::BAD_BGP_ID,
                Vec::new(),
            ));
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            return Err(Notification::new(
                msg::code::OPEN,
                msg::subcode::UNACCEPTABLE_HOLD_TIME,
                Vec::new(),
            ));
        }
        Ok(open.hold_time.min(self.global.hold_time))
    }

    /// Runs one session on an open connection until it fails or shutdown completes.
    async fn session(&mut self, stream: TcpStream, outbound: bool) -> End {
        let first = match self.opening(stream, outbound).await {
            Ok(o) => o,
            Err(e) => return End::Error(e),
        };
        let Opening {
            conn, local, open, ..
        } = match self.handshake(first).await {
            Ok(o) => o,
            Err(end) => return end,
        };
        let Some((open, hold)) = open else {
            return End::Error("internal: handshake ended without the peer's OPEN".into());
        };
        let hold_dur = Duration::from_secs(u64::from(hold));
        let keepalive = if hold == 0 {
            None
        } else {
            let third = (hold / 3).max(1);
            Some(Duration::from_secs(u64::from(
                self.global.keepalive.map_or(third, |k| k.min(third)),
            )))
        };

        // Established.
        let peer_fams = open.families();
        let ann = Announcer {
            ebgp: self.cfg.remote_as != self.global.local_as,
            local_as: self.global.local_as,
            local_pref: self.global.local_pref,
            v4_next_hop: if peer_fams.contains(&(AFI_IPV4, SAFI_UNICAST)) {
                self.cfg.next_hop_v4.or(match local {
                    IpAddr::V4(a) => Some(a),
                    IpAddr::V6(a) => a.to_ipv4_mapped(),
                })
            } else {
                None
            },
            v6_next_hop: if peer_fams.contains(&(AFI_IPV6, SAFI_UNICAST)) {
                self.cfg.next_hop_v6.or(match local {
                    IpAddr::V6(a) if !a.is_unicast_link_local() && a.to_ipv4_mapped().is_none() => {
                        Some(a)
                    }
                    _ => None,
                })
            } else {
                None
            },
        };
        self.shared.update_peer(self.idx, |p| {
            p.state = SessionState::Established;
            p.hold_time = Some(hold);
            p.established_count += 1;
            p.last_error = None;
        });
        tracing::info!(peer = %self.peer_addr(), hold, remote_id = %open.bgp_id, "BGP session established");
        self.established(conn, ann, hold_dur, keepalive).await
    }

    /// Starts the OPEN exchange on a new connection: sends our OPEN (OpenSent).
    async fn opening(&self, stream: TcpStream, outbound: bool) -> Result<Opening, String> {
        let _ = stream.set_nodelay(true);
        let local = stream
            .local_addr()
            .map_err(|e| format!("local address: {e}"))?
            .ip();
        let mut conn = Conn::new(stream);
        conn.send(&Message::Open(self.our_open()))
            .await
            .map_err(|e| format!("sending OPEN: {e}"))?;
        Ok(Opening {
            conn,
            outbound,
            local,
            open: None,
            deadline: Instant::now() + OPEN_HOLD,
        })
    }

    /// Which of two connections survives a collision, once the peer's identifier is known
    /// (RFC 4271 section 6.8): the one opened by the speaker with the higher BGP identifier
    /// (compared as 32-bit unsigned integers), or, when the identifiers are equal (possible
    /// with eBGP, RFC 6286 section 2.3), by the speaker with the higher AS. Returns whether
    /// `older` (the connection that existed first) wins. Two connections opened by the peer
    /// (it gave up on one and retried) cannot be told apart that way: the older one wins, as
    /// with an Established session.
    fn older_wins(&self, remote_id: Ipv4Addr, older: &Opening, newer: &Opening) -> bool {
        if older.outbound == newer.outbound {
            return true;
        }
        let (local, remote) = (u32::from(self.global.router_id), u32::from(remote_id));
        let we_dominate =
            local > remote || (local == remote && self.global.local_as > self.cfg.remote_as);
        // The dominant side's connection survives.
        older.outbound == we_dominate
    }

    /// OpenSent and OpenConfirm, on one connection or, while a collision lasts, on two.
    /// Returns the connection on which the peer's KEEPALIVE confirmed our OPEN.
    async fn handshake(&mut self, first: Opening) -> Result<Opening, End> {
        let peer = self.peer_addr();
        let mut conns = vec![first];
        loop {
            let confirm = conns.iter().any(|c| c.open.is_some());
            self.set_state(if confirm {
                SessionState::OpenConfirm
            } else {
                SessionState::OpenSent
            });
            let step = {
                let Some((a, rest)) = conns.split_first_mut() else {
                    return Err(End::Error(
                        "internal: no connection in the handshake".into(),
                    ));
                };
                let a_deadline = a.deadline;
                let has_b = !rest.is_empty();
                let b_deadline = rest.first().map_or(a_deadline + OPEN_HOLD, |b| b.deadline);
                tokio::select! {
                    m = a.conn.next() => Step::Read(0, m),
                    m = next_on(rest.first_mut()) => Step::Read(1, m),
                    _ = sleep_until(a_deadline) => Step::Expired(0),
                    _ = sleep_until(b_deadline), if has_b => Step::Expired(1),
                    Some(s) = self.incoming.recv() => Step::Incoming(s),
                    _ = stopped(&mut self.shutdown) => Step::Shutdown,
                }
            };
            // A failure on one connection ends the session only if it was the last one.
            let failed = |conns: &mut Vec<Opening>, i: usize, why: String| {
                conns.remove(i);
                if conns.is_empty() {
                    Err(End::Error(why))
                } else {
                    tracing::info!(peer = %peer, error = %why, "BGP: one of two colliding connections closed; continuing on the other");
                    Ok(())
                }
            };
            match step {
                Step::Shutdown => {
                    for c in &mut conns {
                        c.conn
                            .notify_and_close(Notification::admin_shutdown())
                            .await;
                    }
                    return Err(End::Shutdown);
                }
                Step::Incoming(s) => {
                    if conns.len() >= 2 {
                        refuse_collision(s).await;
                        continue;
                    }
                    tracing::info!(peer = %peer, "BGP: the peer opened a second connection during the OPEN exchange; resolving the collision by BGP identifier");
                    match self.opening(s, false).await {
                        Ok(o) => conns.push(o),
                        Err(e) => {
                            tracing::info!(peer = %peer, error = %e, "BGP: second connection failed")
                        }
                    }
                }
                Step::Expired(i) => {
                    let state = conn_state(&conns, i);
                    if let Some(c) = conns.get_mut(i) {
                        c.conn
                            .notify_and_close(Notification::new(
                                msg::code::HOLD_TIMER_EXPIRED,
                                0,
                                Vec::new(),
                            ))
                            .await;
                    }
                    failed(&mut conns, i, format!("hold timer expired in {state:?}"))?;
                }
                Step::Read(i, Err(e)) => {
                    let Some(c) = conns.get_mut(i) else { continue };
                    match read_error(&mut c.conn, e).await {
                        End::Error(why) => failed(&mut conns, i, why)?,
                        End::Shutdown => return Err(End::Shutdown),
                    }
                }
                Step::Read(i, Ok(Message::Notification(n))) => {
                    let state = conn_state(&conns, i);
                    failed(
                        &mut conns,
                        i,
                        format!("peer sent NOTIFICATION in {state:?}: {n}"),
                    )?;
                }
                Step::Read(i, Ok(Message::Open(open)))
                    if conn_state(&conns, i) == SessionState::OpenSent =>
                {
                    let hold = match self.check_open(&open) {
                        Ok(h) => h,
                        Err(n) => {
                            let why = format!("rejected the peer's OPEN: {n}");
                            if let Some(c) = conns.get_mut(i) {
                                c.conn.notify_and_close(n).await;
                            }
                            failed(&mut conns, i, why)?;
                            continue;
                        }
                    };
                    // The peer's identifier is known now: settle a collision (RFC 4271
                    // section 6.8) before this connection goes on to OpenConfirm.
                    if conns.len() == 2 {
                        let older_wins = match (conns.first(), conns.get(1)) {
                            (Some(o), Some(n)) => self.older_wins(open.bgp_id, o, n),
                            _ => true,
                        };
                        let loser = usize::from(older_wins);
                        let kept_outbound = conns.get(1 - loser).is_some_and(|c| c.outbound);
                        tracing::info!(
                            peer = %peer,
                            local_id = %self.global.router_id,
                            remote_id = %open.bgp_id,
                            kept = if kept_outbound { "ours" } else { "the peer's" },
                            "BGP connection collision resolved"
                        );
                        if let Some(c) = conns.get_mut(loser) {
                            c.conn
                                .notify_and_close(Notification::new(
                                    msg::code::CEASE,
                                    msg::subcode::COLLISION,
                                    Vec::new(),
                                ))
                                .await;
                        }
                        conns.remove(loser);
                        if loser == i {
                            continue;
                        }
                    }
                    let i = if conns.len() == 1 { 0 } else { i };
                    let Some(c) = conns.get_mut(i) else { continue };
                    c.conn.codec.four_octet_as = open.four_octet_as().is_some();
                    c.deadline = if hold == 0 {
                        Instant::now() + OPEN_HOLD
                    } else {
                        Instant::now() + Duration::from_secs(u64::from(hold))
                    };
                    c.open = Some((open, hold));
                    if let Err(e) = c.conn.send(&Message::Keepalive).await {
                        failed(&mut conns, i, format!("sending KEEPALIVE: {e}"))?;
                    }
                }
                Step::Read(i, Ok(Message::Keepalive))
                    if conn_state(&conns, i) == SessionState::OpenConfirm =>
                {
                    let winner = conns.remove(i);
                    // A connection still in OpenSent loses to one about to be Established.
                    for mut other in conns {
                        refuse(&mut other.conn).await;
                    }
                    return Ok(winner);
                }
                Step::Read(i, Ok(other)) => {
                    let state = conn_state(&conns, i);
                    let (subcode, expected) = if state == SessionState::OpenSent {
                        (msg::subcode::FSM_IN_OPENSENT, "OPEN")
                    } else {
                        (msg::subcode::FSM_IN_OPENCONFIRM, "KEEPALIVE in OpenConfirm")
                    };
                    if let Some(c) = conns.get_mut(i) {
                        c.conn
                            .notify_and_close(Notification::new(
                                msg::code::FSM,
                                subcode,
                                Vec::new(),
                            ))
                            .await;
                    }
                    failed(
                        &mut conns,
                        i,
                        format!("expected {expected}, got {}", name(&other)),
                    )?;
                }
            }
        }
    }

    async fn established(
        &mut self,
        mut conn: Conn,
        ann: Announcer,
        hold: Duration,
        keepalive: Option<Duration>,
    ) -> End {
        let peer = self.peer_addr();
        let mut announced: BTreeSet<IpAddr> = BTreeSet::new();
        let far = Instant::now() + Duration::from_secs(86400 * 365);
        let mut hold_deadline = if hold.is_zero() {
            far
        } else {
            Instant::now() + hold
        };
        let mut ka_deadline = keepalive.map_or(far, |k| Instant::now() + k);
        // Announce everything currently assigned.
        self.desired.mark_changed();
        loop {
            tokio::select! {
                m = conn.next() => {
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => return read_error(&mut conn, e).await,
                    };
                    if !hold.is_zero() {
                        hold_deadline = Instant::now() + hold;
                    }
                    match m {
                        Message::Keepalive | Message::Update(_) => {}
                        Message::RouteRefresh(rr) => {
                            tracing::debug!(peer = %peer, afi = rr.afi, safi = rr.safi, "route refresh");
                            let fam: Vec<IpAddr> = announced
                                .iter()
                                .copied()
                                .filter(|ip| (rr.afi == AFI_IPV4 && ip.is_ipv4()) || (rr.afi == AFI_IPV6 && ip.is_ipv6()))
                                .collect();
                            if rr.safi == SAFI_UNICAST
                                && let Err(e) = send_all(&mut conn, ann.announce(&fam)).await
                            {
                                return End::Error(format!("sending UPDATE: {e}"));
                            }
                        }
                        Message::Notification(n) => return End::Error(format!("peer sent NOTIFICATION: {n}")),
                        Message::Open(_) => {
                            conn.notify_and_close(Notification::new(msg::code::FSM, msg::subcode::FSM_IN_ESTABLISHED, Vec::new())).await;
                            return End::Error("peer sent OPEN in Established".into());
                        }
                    }
                }
                _ = sleep_until(ka_deadline) => {
                    if let Err(e) = conn.send(&Message::Keepalive).await {
                        return End::Error(format!("sending KEEPALIVE: {e}"));
                    }
                    ka_deadline = keepalive.map_or(far, |k| Instant::now() + k);
                }
                _ = sleep_until(hold_deadline) => {
                    conn.notify_and_close(Notification::new(msg::code::HOLD_TIMER_EXPIRED, 0, Vec::new())).await;
                    return End::Error(format!("hold timer expired ({} s without a message)", hold.as_secs()));
                }
                r = self.desired.changed() => {
                    if r.is_err() {
                        return End::Shutdown;
                    }
                    let desired = self.desired.borrow_and_update().clone();
                    let add: Vec<IpAddr> = desired.difference(&announced).copied().filter(|ip| ann.can_announce(ip)).collect();
                    let del: Vec<IpAddr> = announced.difference(&desired).copied().collect();
                    if let Err(e) = send_all(&mut conn, ann.withdraw(&del)).await {
                        return End::Error(format!("sending UPDATE: {e}"));
                    }
                    if let Err(e) = send_all(&mut conn, ann.announce(&add)).await {
                        return End::Error(format!("sending UPDATE: {e}"));
                    }
                    for ip in &del {
                        announced.remove(ip);
                    }
                    announced.extend(add.iter().copied());
                    if !add.is_empty() || !del.is_empty() {
                        tracing::info!(peer = %peer, announced = ?add, withdrawn = ?del, "BGP UPDATE sent");
                        ka_deadline = keepalive.map_or(far, |k| Instant::now() + k);
                    }
                    let list: Vec<IpAddr> = announced.iter().copied().collect();
                    self.shared.update_peer(self.idx, |p| p.announced = list);
                    self.shared.refresh_vips();
                }
                _ = stopped(&mut self.shutdown) => {
                    let all: Vec<IpAddr> = announced.iter().copied().collect();
                    let _ = timeout(Duration::from_secs(2), send_all(&mut conn, ann.withdraw(&all))).await;
                    conn.notify_and_close(Notification::admin_shutdown()).await;
                    tracing::info!(peer = %peer, withdrawn = all.len(), "BGP session closed: administrative shutdown");
                    return End::Shutdown;
                }
                Some(s) = self.incoming.recv() => refuse_collision(s).await,
            }
        }
    }
}

async fn read_error(conn: &mut Conn, e: ReadError) -> End {
    match e {
        ReadError::Closed => End::Error("connection closed by peer".into()),
        ReadError::Io(e) => End::Error(format!("read: {e}")),
        ReadError::Malformed(d) => {
            let text = d.to_string();
            conn.notify_and_close(d.notification).await;
            End::Error(text)
        }
    }
}

/// Refuses a connection from a peer that already has an Established session (or two
/// connections in the OPEN exchange): the Established one wins (RFC 4271 section 6.8).
async fn refuse_collision(stream: TcpStream) {
    refuse(&mut Conn::new(stream)).await;
}

/// Closes a connection that lost a collision: NOTIFICATION Cease / Connection Collision
/// Resolution (RFC 4486).
async fn refuse(conn: &mut Conn) {
    conn.notify_and_close(Notification::new(
        msg::code::CEASE,
        msg::subcode::COLLISION,
        Vec::new(),
    ))
    .await;
}

/// One connection in OpenSent or OpenConfirm.
struct Opening {
    conn: Conn,
    /// We connected to the peer (false: the peer connected to us).
    outbound: bool,
    /// Our address on the connection.
    local: IpAddr,
    /// The peer's accepted OPEN and the negotiated hold time: set in OpenConfirm.
    open: Option<(Open, u16)>,
    /// When the hold timer of the current state expires.
    deadline: Instant,
}

/// What happened during the OPEN exchange.
enum Step {
    Read(usize, Result<Message, ReadError>),
    Expired(usize),
    Incoming(TcpStream),
    Shutdown,
}

fn conn_state(conns: &[Opening], i: usize) -> SessionState {
    match conns.get(i) {
        Some(Opening { open: Some(_), .. }) => SessionState::OpenConfirm,
        _ => SessionState::OpenSent,
    }
}

/// The next message on the second connection, if there is one (else never).
async fn next_on(c: Option<&mut Opening>) -> Result<Message, ReadError> {
    match c {
        Some(c) => c.conn.next().await,
        None => std::future::pending().await,
    }
}

async fn send_all(conn: &mut Conn, msgs: Vec<Message>) -> std::io::Result<()> {
    for m in &msgs {
        conn.send(m).await?;
    }
    Ok(())
}

fn name(m: &Message) -> &'static str {
    match m {
        Message::Open(_) => "OPEN",
        Message::Update(_) => "UPDATE",
        Message::Notification(_) => "NOTIFICATION",
        Message::Keepalive => "KEEPALIVE",
        Message::RouteRefresh(_) => "ROUTE-REFRESH",
    }
}

/// Builds the UPDATEs of one session.
#[derive(Debug, Clone)]
pub(crate) struct Announcer {
    pub(crate) ebgp: bool,
    pub(crate) local_as: u32,
    pub(crate) local_pref: u32,
    pub(crate) v4_next_hop: Option<Ipv4Addr>,
    pub(crate) v6_next_hop: Option<Ipv6Addr>,
}

impl Announcer {
    fn can_announce(&self, ip: &IpAddr) -> bool {
        match ip {
            IpAddr::V4(_) => self.v4_next_hop.is_some(),
            IpAddr::V6(_) => self.v6_next_hop.is_some(),
        }
    }

    fn common_attrs(&self) -> Vec<PathAttribute> {
        let mut attrs = vec![
            PathAttribute::Origin(0),
            PathAttribute::AsPath(if self.ebgp {
                vec![AsSegment::Sequence(vec![self.local_as])]
            } else {
                Vec::new()
            }),
        ];
        if !self.ebgp {
            attrs.push(PathAttribute::LocalPref(self.local_pref));
        }
        attrs
    }

    /// UPDATEs announcing `vips` (those this session has a next hop for).
    pub(crate) fn announce(&self, vips: &[IpAddr]) -> Vec<Message> {
        let mut out = Vec::new();
        let v4: Vec<Prefix> = vips
            .iter()
            .filter(|ip| ip.is_ipv4())
            .map(|ip| Prefix::host(*ip))
            .collect();
        let v6: Vec<Prefix> = vips
            .iter()
            .filter(|ip| ip.is_ipv6())
            .map(|ip| Prefix::host(*ip))
            .collect();
        if let Some(nh) = self.v4_next_hop {
            for chunk in v4.chunks(BATCH) {
                let mut attributes = self.common_attrs();
                // Keep attributes in type-code order: NEXT_HOP (3) before LOCAL_PREF (5).
                attributes.insert(2, PathAttribute::NextHop(nh));
                out.push(Message::Update(Update {
                    withdrawn: Vec::new(),
                    attributes,
                    nlri: chunk.to_vec(),
                }));
            }
        }
        if let Some(nh) = self.v6_next_hop {
            for chunk in v6.chunks(BATCH) {
                let mut attributes = self.common_attrs();
                attributes.push(PathAttribute::MpReach {
                    afi: AFI_IPV6,
                    safi: SAFI_UNICAST,
                    next_hop: nh.octets().to_vec(),
                    nlri: chunk.to_vec(),
                });
                out.push(Message::Update(Update {
                    withdrawn: Vec::new(),
                    attributes,
                    nlri: Vec::new(),
                }));
            }
        }
        out
    }

    /// UPDATEs withdrawing `vips`.
    pub(crate) fn withdraw(&self, vips: &[IpAddr]) -> Vec<Message> {
        let mut out = Vec::new();
        let v4: Vec<Prefix> = vips
            .iter()
            .filter(|ip| ip.is_ipv4())
            .map(|ip| Prefix::host(*ip))
            .collect();
        let v6: Vec<Prefix> = vips
            .iter()
            .filter(|ip| ip.is_ipv6())
            .map(|ip| Prefix::host(*ip))
            .collect();
        for chunk in v4.chunks(BATCH) {
            out.push(Message::Update(Update {
                withdrawn: chunk.to_vec(),
                attributes: Vec::new(),
                nlri: Vec::new(),
            }));
        }
        for chunk in v6.chunks(BATCH) {
            out.push(Message::Update(Update {
                withdrawn: Vec::new(),
                attributes: vec![PathAttribute::MpUnreach {
                    afi: AFI_IPV6,
                    safi: SAFI_UNICAST,
                    withdrawn: chunk.to_vec(),
                }],
                nlri: Vec::new(),
            }));
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// UPDATEs as the speaker sends them, for codec tests.
    pub(crate) fn sample_updates() -> Vec<Message> {
        let a = Announcer {
            ebgp: false,
            local_as: 4_200_000_001,
            local_pref: 100,
            v4_next_hop: Some(Ipv4Addr::new(10, 0, 0, 2)),
            v6_next_hop: Some("fd00::2".parse().unwrap()),
        };
        let vips: Vec<IpAddr> = vec![
            "192.0.2.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ];
        let e = Announcer {
            ebgp: true,
            ..a.clone()
        };
        let mut v = a.announce(&vips);
        v.extend(e.announce(&vips));
        v.extend(a.withdraw(&vips));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(30);
        assert_eq!(backoff(base, max, 0, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(base, max, 1, 0.5), Duration::from_secs(2));
        assert_eq!(backoff(base, max, 3, 0.5), Duration::from_secs(8));
        assert_eq!(backoff(base, max, 10, 0.5), Duration::from_secs(30));
        assert_eq!(backoff(base, max, 1000, 0.5), Duration::from_secs(30));
        assert_eq!(backoff(base, max, 2, 0.0), Duration::from_secs(3));
        assert_eq!(backoff(base, max, 2, 1.0), Duration::from_secs(5));
    }

    #[test]
    fn ebgp_and_ibgp_attributes() {
        let e = Announcer {
            ebgp: true,
            local_as: 4_200_000_001,
            local_pref: 100,
            v4_next_hop: Some(Ipv4Addr::new(10, 0, 0, 2)),
            v6_next_hop: None,
        };
        let msgs = e.announce(&[
            "192.0.2.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ]);
        // No IPv6 next hop on this session: only the IPv4 VIP.
        assert_eq!(msgs.len(), 1);
        let Message::Update(u) = &msgs[0] else {
            panic!("not an UPDATE")
        };
        assert_eq!(
            u.attributes,
            vec![
                PathAttribute::Origin(0),
                PathAttribute::AsPath(vec![AsSegment::Sequence(vec![4_200_000_001])]),
                PathAttribute::NextHop(Ipv4Addr::new(10, 0, 0, 2)),
            ]
        );
        assert_eq!(u.nlri, vec![Prefix::host("192.0.2.10".parse().unwrap())]);

        let i = Announcer {
            ebgp: false,
            v6_next_hop: Some("2001:db8:1::2".parse().unwrap()),
            ..e
        };
        let msgs = i.announce(&["2001:db8::10".parse().unwrap()]);
        let Message::Update(u) = &msgs[0] else {
            panic!("not an UPDATE")
        };
        assert_eq!(u.attributes[1], PathAttribute::AsPath(Vec::new()));
        assert_eq!(u.attributes[2], PathAttribute::LocalPref(100));
        assert!(
            matches!(&u.attributes[3], PathAttribute::MpReach { afi: AFI_IPV6, next_hop, nlri, .. }
            if next_hop.len() == 16 && nlri.len() == 1 && nlri[0].len == 128)
        );
    }

    #[test]
    fn many_vips_fit_in_max_size_updates() {
        let a = Announcer {
            ebgp: true,
            local_as: 65000,
            local_pref: 100,
            v4_next_hop: Some(Ipv4Addr::new(10, 0, 0, 2)),
            v6_next_hop: Some("2001:db8::1".parse().unwrap()),
        };
        let vips: Vec<IpAddr> = (0..1000u32)
            .flat_map(|i| {
                [
                    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
                    IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i))),
                ]
            })
            .collect();
        let codec = Codec::default();
        for m in a.announce(&vips).iter().chain(a.withdraw(&vips).iter()) {
            let bytes = codec.encode(m);
            assert!(bytes.len() <= msg::MAX_MESSAGE_LEN, "{} bytes", bytes.len());
            let (back, n) = codec.decode(&bytes).unwrap().unwrap();
            assert_eq!(n, bytes.len());
            assert_eq!(&back, m);
        }
    }
}
