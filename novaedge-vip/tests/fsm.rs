//! Session state machine tests against a scripted peer on 127.0.0.1: the test plays the router
//! byte by byte with the crate's own codec and checks what the speaker sends and reports.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use novaedge_vip::bgp::msg::{
    AFI_IPV4, Capability, Codec, Message, Notification, Open, PathAttribute, RouteRefresh,
    SAFI_UNICAST, code, subcode,
};
use novaedge_vip::bgp::{BgpConfig, BgpDriver, PeerConfig};
use novaedge_vip::{SessionState, VipDriver, VipState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LOCAL_AS: u32 = 65000;
const PEER_AS: u32 = 65001;

struct Scripted {
    stream: TcpStream,
    buf: Vec<u8>,
    codec: Codec,
}

impl Scripted {
    async fn accept(l: &TcpListener) -> Self {
        let (stream, _) = tokio::time::timeout(Duration::from_secs(5), l.accept())
            .await
            .expect("speaker connects")
            .unwrap();
        Self {
            stream,
            buf: Vec::new(),
            codec: Codec::default(),
        }
    }

    async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
            codec: Codec::default(),
        }
    }

    /// The next message, or `None` on EOF.
    async fn recv(&mut self, limit: Duration) -> Option<Message> {
        tokio::time::timeout(limit, async {
            loop {
                if let Some((m, n)) = self
                    .codec
                    .decode(&self.buf)
                    .expect("speaker sends well-formed messages")
                {
                    self.buf.drain(..n);
                    return Some(m);
                }
                let mut chunk = [0u8; 4096];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .expect("timed out waiting for a message from the speaker")
    }

    async fn send(&mut self, m: &Message) {
        self.stream.write_all(&self.codec.encode(m)).await.unwrap();
    }

    async fn send_raw(&mut self, b: &[u8]) {
        self.stream.write_all(b).await.unwrap();
    }

    /// Plays the router's side of the OPEN exchange with `hold` seconds.
    async fn open(&mut self, hold: u16) -> Open {
        let Some(Message::Open(theirs)) = self.recv(Duration::from_secs(5)).await else {
            panic!("expected OPEN")
        };
        let ours = Open::new(
            PEER_AS,
            hold,
            Ipv4Addr::new(10, 0, 0, 9),
            vec![
                Capability::Multiprotocol {
                    afi: AFI_IPV4,
                    safi: SAFI_UNICAST,
                },
                Capability::RouteRefresh,
            ],
        );
        self.send(&Message::Open(ours)).await;
        assert_eq!(
            self.recv(Duration::from_secs(5)).await,
            Some(Message::Keepalive)
        );
        self.send(&Message::Keepalive).await;
        theirs
    }

    /// Skips KEEPALIVEs; returns the next other message.
    async fn recv_non_keepalive(&mut self, limit: Duration) -> Option<Message> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                Some(Message::Keepalive) => continue,
                other => return other,
            }
        }
    }
}

async fn speaker(port: u16, hold: u16, tweak: impl FnOnce(&mut BgpConfig)) -> BgpDriver {
    let mut cfg = BgpConfig::new(LOCAL_AS, Ipv4Addr::new(10, 0, 0, 1));
    cfg.hold_time = hold;
    cfg.connect_retry = Duration::from_millis(200);
    cfg.max_connect_retry = Duration::from_millis(800);
    let mut p = PeerConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST), PEER_AS);
    p.port = port;
    cfg.peers.push(p);
    tweak(&mut cfg);
    BgpDriver::start(cfg).await.unwrap()
}

async fn wait_state(d: &BgpDriver, state: SessionState) {
    let mut rx = d.subscribe();
    tokio::time::timeout(
        Duration::from_secs(5),
        rx.wait_for(|s| s.peers[0].state == state),
    )
    .await
    .unwrap_or_else(|_| panic!("peer never reached {state:?}: {:?}", d.status()))
    .unwrap();
}

fn notification(m: Option<Message>) -> (u8, u8) {
    match m {
        Some(Message::Notification(n)) => (n.code, n.subcode),
        other => panic!("expected NOTIFICATION, got {other:?}"),
    }
}

async fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

#[tokio::test]
async fn open_capabilities_announce_withdraw_refresh_and_shutdown() {
    let (l, port) = listener().await;
    let d = speaker(port, 9, |_| {}).await;
    d.assign("192.0.2.10".parse().unwrap()).await.unwrap();
    d.assign("192.0.2.10".parse().unwrap()).await.unwrap(); // idempotent
    assert_eq!(
        d.status().vips.values().collect::<Vec<_>>(),
        vec![&VipState::Pending]
    );
    let mut peer = Scripted::accept(&l).await;
    let open = peer.open(9).await;
    assert_eq!(open.asn(), LOCAL_AS);
    assert_eq!(open.hold_time, 9);
    assert!(open.route_refresh());
    assert!(open.four_octet_as().is_some());
    wait_state(&d, SessionState::Established).await;
    assert_eq!(d.status().peers[0].hold_time, Some(9));

    // The assigned VIP is announced when the session comes up, with eBGP attributes.
    let Some(Message::Update(u)) = peer.recv_non_keepalive(Duration::from_secs(3)).await else {
        panic!("UPDATE")
    };
    assert_eq!(u.nlri.len(), 1);
    assert!(
        u.attributes
            .contains(&PathAttribute::NextHop(Ipv4Addr::LOCALHOST))
    );
    let mut rx = d.subscribe();
    rx.wait_for(|s| s.vips.values().all(|v| *v == VipState::Active { peers: 1 }))
        .await
        .unwrap();

    // Route refresh re-sends it; unknown UPDATEs from the peer are accepted.
    peer.send(&Message::RouteRefresh(RouteRefresh {
        afi: AFI_IPV4,
        subtype: 0,
        safi: SAFI_UNICAST,
    }))
    .await;
    let Some(Message::Update(again)) = peer.recv_non_keepalive(Duration::from_secs(3)).await else {
        panic!("UPDATE")
    };
    assert_eq!(again, u);

    // Unassign: a withdraw; unassigning again sends nothing.
    d.unassign("192.0.2.10".parse().unwrap()).await.unwrap();
    d.unassign("192.0.2.10".parse().unwrap()).await.unwrap();
    let Some(Message::Update(w)) = peer.recv_non_keepalive(Duration::from_secs(3)).await else {
        panic!("UPDATE")
    };
    assert_eq!(w.withdrawn, u.nlri);

    // Shutdown: withdraws, then Cease / Administrative Shutdown, then close.
    d.assign("192.0.2.11".parse().unwrap()).await.unwrap();
    let Some(Message::Update(_)) = peer.recv_non_keepalive(Duration::from_secs(3)).await else {
        panic!("UPDATE")
    };
    d.shutdown().await.unwrap();
    let Some(Message::Update(w)) = peer.recv_non_keepalive(Duration::from_secs(3)).await else {
        panic!("UPDATE")
    };
    assert_eq!(w.withdrawn.len(), 1);
    assert_eq!(
        notification(peer.recv_non_keepalive(Duration::from_secs(3)).await),
        (code::CEASE, subcode::ADMIN_SHUTDOWN)
    );
    assert_eq!(peer.recv(Duration::from_secs(3)).await, None);
    assert!(d.status().shut_down);
    assert!(d.assign("192.0.2.12".parse().unwrap()).await.is_err());
}

#[tokio::test]
async fn hold_timer_expiry_sends_notification() {
    let (l, port) = listener().await;
    let d = speaker(port, 3, |_| {}).await;
    let mut peer = Scripted::accept(&l).await;
    peer.open(3).await;
    wait_state(&d, SessionState::Established).await;
    // Stay silent: the speaker's keepalives arrive (hold/3 = 1 s), then Hold Timer Expired.
    let t = Instant::now();
    let n = notification(peer.recv_non_keepalive(Duration::from_secs(6)).await);
    assert_eq!(n, (code::HOLD_TIMER_EXPIRED, 0));
    assert!(
        t.elapsed() >= Duration::from_millis(2500),
        "expired early: {:?}",
        t.elapsed()
    );
    let mut rx = d.subscribe();
    rx.wait_for(|s| {
        s.peers[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("hold timer expired"))
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn open_in_established_is_an_fsm_error() {
    let (l, port) = listener().await;
    let d = speaker(port, 9, |_| {}).await;
    let mut peer = Scripted::accept(&l).await;
    let open = peer.open(9).await;
    wait_state(&d, SessionState::Established).await;
    peer.send(&Message::Open(open)).await;
    assert_eq!(
        notification(peer.recv_non_keepalive(Duration::from_secs(3)).await),
        (code::FSM, subcode::FSM_IN_ESTABLISHED)
    );
    // And the speaker reconnects after its backoff.
    let mut peer2 = Scripted::accept(&l).await;
    peer2.open(9).await;
    wait_state(&d, SessionState::Established).await;
    assert_eq!(d.status().peers[0].established_count, 2);
}

#[tokio::test]
async fn keepalive_before_open_is_an_fsm_error() {
    let (l, port) = listener().await;
    let _d = speaker(port, 9, |_| {}).await;
    let mut peer = Scripted::accept(&l).await;
    assert!(matches!(
        peer.recv(Duration::from_secs(3)).await,
        Some(Message::Open(_))
    ));
    peer.send(&Message::Keepalive).await;
    assert_eq!(
        notification(peer.recv(Duration::from_secs(3)).await),
        (code::FSM, subcode::FSM_IN_OPENSENT)
    );
}

#[tokio::test]
async fn bad_open_parameters_are_refused() {
    for (asn, hold, expect) in [
        (PEER_AS + 1, 9, (code::OPEN, subcode::BAD_PEER_AS)),
        (PEER_AS, 2, (code::OPEN, subcode::UNACCEPTABLE_HOLD_TIME)),
    ] {
        let (l, port) = listener().await;
        let _d = speaker(port, 9, |_| {}).await;
        let mut peer = Scripted::accept(&l).await;
        assert!(matches!(
            peer.recv(Duration::from_secs(3)).await,
            Some(Message::Open(_))
        ));
        peer.send(&Message::Open(Open::new(
            asn,
            hold,
            Ipv4Addr::new(10, 0, 0, 9),
            vec![],
        )))
        .await;
        assert_eq!(
            notification(peer.recv(Duration::from_secs(3)).await),
            expect
        );
    }
}

#[tokio::test]
async fn malformed_message_gets_the_right_notification() {
    let (l, port) = listener().await;
    let d = speaker(port, 9, |_| {}).await;
    let mut peer = Scripted::accept(&l).await;
    peer.open(9).await;
    wait_state(&d, SessionState::Established).await;
    let mut bad = Codec::default().encode(&Message::Keepalive);
    bad[0] = 0;
    peer.send_raw(&bad).await;
    assert_eq!(
        notification(peer.recv_non_keepalive(Duration::from_secs(3)).await),
        (code::HEADER, subcode::NOT_SYNCHRONIZED)
    );
    let mut rx = d.subscribe();
    rx.wait_for(|s| {
        s.peers[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("not synchronized"))
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn second_connection_while_established_is_refused_as_collision() {
    let (l, port) = listener().await;
    let d = speaker(port, 9, |c| c.listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let mut peer = Scripted::accept(&l).await;
    peer.open(9).await;
    wait_state(&d, SessionState::Established).await;
    let mut second = Scripted::connect(d.listen_addr().unwrap()).await;
    assert_eq!(
        notification(second.recv(Duration::from_secs(3)).await),
        (code::CEASE, subcode::COLLISION)
    );
    // The first session is unaffected.
    assert_eq!(d.status().peers[0].state, SessionState::Established);
    assert_eq!(d.status().peers[0].established_count, 1);
}

#[tokio::test]
async fn passive_peer_waits_for_the_router() {
    let d = speaker(1, 9, |c| {
        c.listen = Some("127.0.0.1:0".parse().unwrap());
        c.peers[0].passive = true;
    })
    .await;
    wait_state(&d, SessionState::Active).await;
    let mut peer = Scripted::connect(d.listen_addr().unwrap()).await;
    peer.open(9).await;
    wait_state(&d, SessionState::Established).await;
}

#[tokio::test]
async fn reconnects_back_off_exponentially() {
    // A router that accepts and hangs up at once: every attempt fails.
    let (l, port) = listener().await;
    let d = speaker(port, 9, |_| {}).await;
    let start = Instant::now();
    let mut attempts = Vec::new();
    while start.elapsed() < Duration::from_millis(3000) {
        if let Ok(Ok((s, _))) = tokio::time::timeout(Duration::from_millis(100), l.accept()).await {
            attempts.push(start.elapsed());
            drop(s);
        }
    }
    // 200 ms doubling to 800 ms (±25%): about 0, 0.2, 0.6, 1.4, 2.2, 3.0 s. Without backoff
    // there would be ~15 attempts. The bounds leave room for a loaded CI machine (a late
    // wake-up stretches a gap, never shortens one), while a missing backoff or cap still fails.
    assert!(
        (3..=7).contains(&attempts.len()),
        "attempts at {attempts:?}"
    );
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[1] > gaps[0], "gaps should grow: {gaps:?}");
    assert!(
        gaps.iter().all(|g| *g <= Duration::from_millis(2000)),
        "capped at 800 ms + 25% (plus scheduling slack): {gaps:?}"
    );
    let s = d.status();
    assert_ne!(s.peers[0].state, SessionState::Established);
    assert!(s.peers[0].last_error.is_some());
}

#[tokio::test]
async fn trait_object_and_notification_display() {
    let (_l, port) = listener().await;
    let d: Box<dyn VipDriver> = Box::new(speaker(port, 9, |_| {}).await);
    assert_eq!(d.kind(), "bgp");
    d.assign("2001:db8::1".parse().unwrap()).await.unwrap();
    assert_eq!(d.status().vips.len(), 1);
    d.shutdown().await.unwrap();
    assert_eq!(
        Notification::admin_shutdown().to_string(),
        "cease: administrative shutdown (6/2)"
    );
}

#[tokio::test]
async fn md5_passwords_are_checked_and_redacted() {
    for (password, expect) in [
        (String::new(), "peers[0] (127.0.0.1).password is empty"),
        ("x".repeat(81), "peers[0] (127.0.0.1).password is 81 bytes"),
    ] {
        let mut cfg = BgpConfig::new(LOCAL_AS, Ipv4Addr::new(10, 0, 0, 1));
        let mut p = PeerConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST), PEER_AS);
        p.password = Some(password);
        cfg.peers.push(p);
        let err = BgpDriver::start(cfg).await.unwrap_err().to_string();
        assert!(err.contains(expect), "{err}");
    }
    let mut p = PeerConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST), PEER_AS);
    p.password = Some("x".repeat(80));
    let debug = format!("{p:?}");
    assert!(debug.contains("password: Some(\"<redacted>\")"), "{debug}");
    assert!(!debug.contains("xxxx"), "{debug}");
}

#[tokio::test]
async fn bad_bgp_identifier_is_refused() {
    let ours = Ipv4Addr::new(10, 0, 0, 1);
    for (ibgp, id) in [
        (false, Ipv4Addr::UNSPECIFIED),
        (false, Ipv4Addr::new(224, 0, 0, 5)),
        (false, Ipv4Addr::BROADCAST),
        // Our own identifier from an internal peer (RFC 6286 section 2.2).
        (true, ours),
    ] {
        let remote_as = if ibgp { LOCAL_AS } else { PEER_AS };
        let (l, port) = listener().await;
        let d = speaker(port, 9, |c| c.peers[0].remote_as = remote_as).await;
        let mut peer = Scripted::accept(&l).await;
        assert!(matches!(
            peer.recv(Duration::from_secs(3)).await,
            Some(Message::Open(_))
        ));
        peer.send(&Message::Open(Open::new(remote_as, 9, id, vec![])))
            .await;
        assert_eq!(
            notification(peer.recv(Duration::from_secs(3)).await),
            (code::OPEN, subcode::BAD_BGP_ID),
            "identifier {id} (iBGP: {ibgp})"
        );
        let mut rx = d.subscribe();
        rx.wait_for(|s| {
            s.peers[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("bad BGP identifier"))
        })
        .await
        .unwrap();
    }
    // The same identifier on eBGP is allowed (RFC 6286): the session comes up.
    let (l, port) = listener().await;
    let d = speaker(port, 9, |c| c.router_id = Ipv4Addr::new(10, 0, 0, 9)).await;
    let mut peer = Scripted::accept(&l).await;
    peer.open(9).await;
    wait_state(&d, SessionState::Established).await;
}

/// RFC 4271 section 6.8: the speaker has connected to the peer (`ours`) and the peer connects
/// to the speaker (`theirs`) before either OPEN exchange finishes. When the peer's OPEN
/// reveals its identifier, the connection opened by the side with the higher identifier
/// survives and the other gets Cease / Connection Collision Resolution.
async fn collision(local_id: Ipv4Addr, peer_id: Ipv4Addr, ours_in_open_confirm: bool) {
    let what =
        format!("local {local_id}, peer {peer_id}, ours in OpenConfirm: {ours_in_open_confirm}");
    let (l, port) = listener().await;
    let d = speaker(port, 9, |c| {
        c.router_id = local_id;
        c.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let peer_open = Message::Open(Open::new(
        PEER_AS,
        9,
        peer_id,
        vec![Capability::Multiprotocol {
            afi: AFI_IPV4,
            safi: SAFI_UNICAST,
        }],
    ));
    let mut ours = Scripted::accept(&l).await;
    assert!(matches!(
        ours.recv(Duration::from_secs(3)).await,
        Some(Message::Open(_))
    ));
    if ours_in_open_confirm {
        ours.send(&peer_open).await;
        assert_eq!(
            ours.recv(Duration::from_secs(3)).await,
            Some(Message::Keepalive)
        );
        wait_state(&d, SessionState::OpenConfirm).await;
    }
    let mut theirs = Scripted::connect(d.listen_addr().unwrap()).await;
    let Some(Message::Open(speaker_open)) = theirs.recv(Duration::from_secs(3)).await else {
        panic!("{what}: the speaker must answer the peer's connection with OPEN")
    };
    assert_eq!(speaker_open.bgp_id, local_id);
    theirs.send(&peer_open).await;

    let survivor = if u32::from(local_id) < u32::from(peer_id) {
        // The peer dominates: its connection stays, ours is closed.
        assert_eq!(
            notification(ours.recv_non_keepalive(Duration::from_secs(3)).await),
            (code::CEASE, subcode::COLLISION),
            "{what}"
        );
        assert_eq!(
            ours.recv(Duration::from_secs(3)).await,
            None,
            "{what}: closed"
        );
        assert_eq!(
            theirs.recv(Duration::from_secs(3)).await,
            Some(Message::Keepalive)
        );
        theirs
    } else {
        assert_eq!(
            notification(theirs.recv(Duration::from_secs(3)).await),
            (code::CEASE, subcode::COLLISION),
            "{what}"
        );
        assert_eq!(
            theirs.recv(Duration::from_secs(3)).await,
            None,
            "{what}: closed"
        );
        if !ours_in_open_confirm {
            ours.send(&peer_open).await;
            assert_eq!(
                ours.recv(Duration::from_secs(3)).await,
                Some(Message::Keepalive)
            );
        }
        ours
    };
    let mut survivor = survivor;
    survivor.send(&Message::Keepalive).await;
    wait_state(&d, SessionState::Established).await;
    assert_eq!(d.status().peers[0].established_count, 1, "{what}");
    // The surviving connection carries the session.
    d.assign("192.0.2.10".parse().unwrap()).await.unwrap();
    let Some(Message::Update(u)) = survivor.recv_non_keepalive(Duration::from_secs(3)).await else {
        panic!("{what}: UPDATE on the surviving connection")
    };
    assert_eq!(u.nlri.len(), 1);
}

#[tokio::test]
async fn collision_local_id_lower_keeps_the_peers_connection() {
    let (local, peer) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 9));
    collision(local, peer, false).await;
    collision(local, peer, true).await;
}

#[tokio::test]
async fn collision_local_id_higher_keeps_our_connection() {
    // Compared as integers, not as text ("10.0.0.200" < "9.255.255.255" as strings).
    let (local, peer) = (
        Ipv4Addr::new(10, 0, 0, 200),
        Ipv4Addr::new(9, 255, 255, 255),
    );
    collision(local, peer, false).await;
    collision(local, peer, true).await;
}
