//! Deterministic tests of the protocol core: hand-built packets from a simulated router, a
//! fake clock, and assertions on the packets the core sends and the state it reports.

use super::*;
use crate::ospf::packet::{ExternalLsa, ExternalMetric, LsaBody, MAX_AGE};

const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
/// A router ID above ours (it is master of the exchange).
const HIGH: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
/// A router ID below ours (we are master).
const LOW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const AREA: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn spec(network: OspfNetwork, address: &str, prefix_len: u8, priority: u8) -> InterfaceSpec {
    InterfaceSpec {
        name: "eth0".into(),
        network,
        address: ip(address),
        prefix_len,
        mtu: 1500,
        hello_interval: 1,
        dead_interval: 4,
        retransmit_interval: Duration::from_secs(2),
        priority,
        cost: 10,
    }
}

fn ptp() -> InterfaceSpec {
    spec(OspfNetwork::PointToPoint, "172.31.0.2", 30, 0)
}

fn bcast(priority: u8) -> InterfaceSpec {
    spec(OspfNetwork::Broadcast, "172.31.1.5", 24, priority)
}

struct Lab {
    inst: Instance,
    now: Instant,
    t0: Instant,
    /// Neighbours that say Hello (source, router ID, Hello) each time the clock moves.
    peers: Vec<(&'static str, Ipv4Addr, Body)>,
}

impl Lab {
    fn new(spec: InterfaceSpec) -> Lab {
        Self::with(spec, DEFAULT_MAX_LSAS)
    }

    fn with(spec: InterfaceSpec, max_lsas: usize) -> Lab {
        let t0 = Instant::now();
        let inst = Instance::new(
            InstanceConfig {
                router_id: ME,
                area: AREA,
                external_metric: 20,
                interfaces: vec![spec],
                max_lsas,
                dd_seq_seed: 7000,
            },
            t0,
        );
        Lab {
            inst,
            now: t0,
            t0,
            peers: Vec::new(),
        }
    }

    fn at(&mut self, since_start: Duration) {
        assert!(self.t0 + since_start >= self.now, "time goes forward");
        let d = self.t0 + since_start - self.now;
        self.advance(d);
    }

    /// Moves the clock; the peers say Hello (at most every second), then the timers run.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = end.min(self.now + Duration::from_secs(1));
            for (src, rid, body) in self.peers.clone() {
                self.feed(src, ALL_SPF_ROUTERS, rid, body);
            }
            self.inst.tick(self.now);
        }
        self.inst.tick(self.now);
    }

    /// Everything sent since the last call, decoded.
    fn sent(&mut self) -> Vec<(Ipv4Addr, Packet)> {
        let mut out = Vec::new();
        while let Some(t) = self.inst.poll_transmit() {
            assert_eq!(t.iface, 0);
            let p = Packet::decode(&t.packet).expect("we send valid packets");
            assert_eq!(p.router_id, ME);
            assert_eq!(p.area_id, AREA);
            assert_eq!(p.auth_type, AUTH_NULL);
            out.push((t.dst, p));
        }
        out
    }

    fn sent_bodies(&mut self) -> Vec<(Ipv4Addr, Body)> {
        self.sent().into_iter().map(|(d, p)| (d, p.body)).collect()
    }

    fn feed(&mut self, src: &str, dst: Ipv4Addr, rid: Ipv4Addr, body: Body) {
        let p = Packet {
            router_id: rid,
            area_id: AREA,
            auth_type: AUTH_NULL,
            auth: [0; 8],
            body,
        };
        let bytes = p.encode().unwrap();
        self.inst.handle_packet(0, ip(src), dst, &bytes, self.now);
    }

    fn nbr_state(&self, rid: Ipv4Addr) -> Option<NbrState> {
        self.inst.interface_status()[0]
            .neighbors
            .iter()
            .find(|n| n.router_id == rid)
            .map(|n| n.state)
    }

    fn iface(&self) -> OspfInterfaceStatus {
        self.inst.interface_status().remove(0)
    }

    /// Our Router-LSA's body as it is in the database.
    fn router_lsa(&self) -> RouterLsa {
        match self
            .inst
            .lsa(&self.inst.router_key(), self.now)
            .unwrap()
            .body()
            .unwrap()
        {
            LsaBody::Router(r) => r,
            other => panic!("{other:?}"),
        }
    }
}

fn hello(mask: &str, priority: u8, dr: &str, bdr: &str, neighbors: &[Ipv4Addr]) -> Body {
    Body::Hello(Hello {
        network_mask: ip(mask),
        hello_interval: 1,
        options: options::E,
        priority,
        dead_interval: 4,
        dr: ip(dr),
        bdr: ip(bdr),
        neighbors: neighbors.to_vec(),
    })
}

fn dd(flags: u8, seq: u32, headers: Vec<LsaHeader>) -> Body {
    Body::DbDescription(DbDescription {
        interface_mtu: 576,
        options: options::E,
        flags,
        seq,
        lsa_headers: headers,
    })
}

/// The router's own Router-LSA: a stub link for the point-to-point subnet.
fn their_router_lsa(rid: Ipv4Addr, seq: i32) -> Lsa {
    Lsa::build(
        1,
        options::E,
        rid,
        rid,
        seq,
        &LsaBody::Router(RouterLsa {
            flags: 0,
            links: vec![RouterLink {
                id: ip("172.31.0.0"),
                data: ip("255.255.255.252"),
                link_type: link_type::STUB,
                metric: 10,
                tos: vec![],
            }],
        }),
    )
    .unwrap()
}

fn external(id: Ipv4Addr, adv: Ipv4Addr, seq: i32, age: u16) -> Lsa {
    Lsa::build(
        age,
        options::E,
        id,
        adv,
        seq,
        &LsaBody::External(ExternalLsa {
            mask: Ipv4Addr::BROADCAST,
            entries: vec![ExternalMetric {
                type2: true,
                tos: 0,
                metric: 20,
                forwarding: Ipv4Addr::UNSPECIFIED,
                tag: 0,
            }],
        }),
    )
    .unwrap()
}

fn lsus(sent: &[(Ipv4Addr, Body)]) -> Vec<(Ipv4Addr, Lsa)> {
    sent.iter()
        .filter_map(|(d, b)| match b {
            Body::LsUpdate(l) => Some(l.iter().map(|l| (*d, l.clone())).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn acks(sent: &[(Ipv4Addr, Body)]) -> Vec<(Ipv4Addr, LsaHeader)> {
    sent.iter()
        .filter_map(|(d, b)| match b {
            Body::LsAck(h) => Some(h.iter().map(|h| (*d, *h)).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn dds(sent: &[(Ipv4Addr, Body)]) -> Vec<(Ipv4Addr, DbDescription)> {
    sent.iter()
        .filter_map(|(d, b)| match b {
            Body::DbDescription(x) => Some((*d, x.clone())),
            _ => None,
        })
        .collect()
}

/// Brings a point-to-point adjacency with a master router (`HIGH`) to Full: it holds its
/// Router-LSA, which we request and receive. Returns that LSA.
fn ptp_full_as_slave(lab: &mut Lab) -> Lsa {
    let rtr = "172.31.0.1";
    lab.sent();
    lab.feed(
        rtr,
        ALL_SPF_ROUTERS,
        HIGH,
        hello("255.255.255.252", 1, "0.0.0.0", "0.0.0.0", &[]),
    );
    assert_eq!(lab.nbr_state(HIGH), Some(NbrState::Init));
    lab.feed(
        rtr,
        ALL_SPF_ROUTERS,
        HIGH,
        hello("255.255.255.252", 1, "0.0.0.0", "0.0.0.0", &[ME]),
    );
    assert_eq!(lab.nbr_state(HIGH), Some(NbrState::ExStart));
    let sent = lab.sent_bodies();
    let first = dds(&sent);
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0].0, ALL_SPF_ROUTERS,
        "point-to-point: always AllSPFRouters"
    );
    assert_eq!(
        first[0].1.flags,
        dbd_flags::INIT | dbd_flags::MORE | dbd_flags::MASTER
    );
    assert!(first[0].1.lsa_headers.is_empty());
    assert_eq!(first[0].1.interface_mtu, 1500);

    // The router is master (higher ID): its I|M|MS packet makes us slave.
    lab.feed(
        rtr,
        ALL_SPF_ROUTERS,
        HIGH,
        dd(
            dbd_flags::INIT | dbd_flags::MORE | dbd_flags::MASTER,
            1000,
            vec![],
        ),
    );
    assert_eq!(lab.nbr_state(HIGH), Some(NbrState::Exchange));
    let reply = dds(&lab.sent_bodies());
    assert_eq!(reply.len(), 1);
    assert_eq!(
        reply[0].1.seq, 1000,
        "the slave echoes the master's sequence number"
    );
    assert_eq!(reply[0].1.flags & (dbd_flags::INIT | dbd_flags::MASTER), 0);
    let keys: Vec<LsaKey> = reply[0].1.lsa_headers.iter().map(LsaHeader::key).collect();
    assert!(
        keys.contains(&lab.inst.router_key()),
        "our Router-LSA is described"
    );

    // The master describes its Router-LSA and has no more.
    let theirs = their_router_lsa(HIGH, INITIAL_SEQUENCE_NUMBER + 4);
    lab.feed(
        rtr,
        ALL_SPF_ROUTERS,
        HIGH,
        dd(dbd_flags::MASTER, 1001, vec![*theirs.header()]),
    );
    let sent = lab.sent_bodies();
    let reply = dds(&sent);
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].1.seq, 1001);
    assert_eq!(reply[0].1.flags & dbd_flags::MORE, 0);
    assert_eq!(lab.nbr_state(HIGH), Some(NbrState::Loading));
    let lsr: Vec<&LsRequest> = sent
        .iter()
        .filter_map(|(_, b)| match b {
            Body::LsRequest(r) => Some(r.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(lsr.len(), 1);
    assert_eq!(
        (lsr[0].ls_type, lsr[0].id, lsr[0].adv_router),
        (1, HIGH, HIGH)
    );

    lab.feed(
        rtr,
        ALL_SPF_ROUTERS,
        HIGH,
        Body::LsUpdate(vec![theirs.clone()]),
    );
    assert_eq!(lab.nbr_state(HIGH), Some(NbrState::Full));
    lab.peers = vec![(
        rtr,
        HIGH,
        hello("255.255.255.252", 1, "0.0.0.0", "0.0.0.0", &[ME]),
    )];
    theirs
}

#[test]
fn first_hello_and_router_lsa() {
    let mut lab = Lab::new(ptp());
    let sent = lab.sent();
    assert_eq!(sent.len(), 1);
    let (dst, p) = &sent[0];
    assert_eq!(*dst, ALL_SPF_ROUTERS);
    let Body::Hello(h) = &p.body else {
        panic!("{p:?}")
    };
    assert_eq!((h.hello_interval, h.dead_interval, h.priority), (1, 4, 0));
    assert_eq!(h.network_mask, ip("255.255.255.252"));
    assert_eq!(h.options, options::E);
    assert!(h.neighbors.is_empty());
    // A Router-LSA with the stub link is originated at once (nobody to flood it to).
    let r = lab.router_lsa();
    assert_eq!(r.flags, router_flags::E, "an ASBR from the start");
    assert_eq!(r.links.len(), 1);
    assert_eq!(r.links[0].link_type, link_type::STUB);
    assert_eq!(r.links[0].id, ip("172.31.0.0"));
    // Hellos every second.
    lab.advance(Duration::from_millis(999));
    assert!(lab.sent().is_empty());
    lab.advance(Duration::from_millis(1));
    assert_eq!(lab.sent().len(), 1);
    assert_eq!(
        lab.inst.next_deadline(),
        Some(lab.now + Duration::from_secs(1))
    );
}

#[test]
fn ptp_adjacency_as_slave_then_vip_advertised_retransmitted_acked_and_withdrawn() {
    let mut lab = Lab::new(ptp());
    let theirs = ptp_full_as_slave(&mut lab);
    // The router's LSA is acknowledged (delayed, to AllSPFRouters on point-to-point).
    lab.advance(Duration::from_millis(500));
    let sent = lab.sent_bodies();
    let a = acks(&sent);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0], (ALL_SPF_ROUTERS, *theirs.header()));

    // Our Router-LSA gains the point-to-point link, but not before MinLSInterval after its
    // first origination at t0.
    assert_eq!(lab.router_lsa().links.len(), 1);
    lab.at(Duration::from_millis(4990));
    assert_eq!(lab.router_lsa().links.len(), 1);
    lab.at(MIN_LS_INTERVAL);
    let r = lab.router_lsa();
    assert_eq!(r.links.len(), 2);
    assert_eq!(
        (
            r.links[0].link_type,
            r.links[0].id,
            r.links[0].data,
            r.links[0].metric
        ),
        (link_type::POINT_TO_POINT, HIGH, ip("172.31.0.2"), 10)
    );
    assert_eq!(r.links[1].link_type, link_type::STUB);
    let flooded = lsus(&lab.sent_bodies());
    assert_eq!(flooded.len(), 1);
    assert_eq!(flooded[0].0, ALL_SPF_ROUTERS);
    assert_eq!(flooded[0].1.key(), lab.inst.router_key());
    assert_eq!(flooded[0].1.header().seq, INITIAL_SEQUENCE_NUMBER + 1);
    assert_eq!(flooded[0].1.header().age, 1, "InfTransDelay added");
    lab.feed(
        "172.31.0.1",
        ALL_SPF_ROUTERS,
        HIGH,
        Body::LsAck(vec![*flooded[0].1.header()]),
    );

    // Advertise: the AS-external-LSA goes out at once; the Router-LSA is untouched (an ASBR
    // from the start).
    assert_eq!(lab.router_lsa().flags, router_flags::E, "always an ASBR");
    lab.inst.advertise(VIP, lab.now);
    let flooded = lsus(&lab.sent_bodies());
    assert_eq!(flooded.len(), 1);
    let ext = flooded[0].1.clone();
    assert_eq!(ext.key(), lab.inst.external_key(VIP));
    assert!(ext.checksum_ok());
    let LsaBody::External(e) = ext.body().unwrap() else {
        panic!()
    };
    assert_eq!(e.mask, Ipv4Addr::BROADCAST);
    assert_eq!(
        e.entries,
        vec![ExternalMetric {
            type2: true,
            tos: 0,
            metric: 20,
            forwarding: Ipv4Addr::UNSPECIFIED,
            tag: 0
        }]
    );
    assert_eq!(ext.header().options, options::E);
    assert_eq!(lab.inst.vip_adjacencies(VIP), 0, "not acknowledged yet");

    // Not acknowledged: retransmitted after RxmtInterval, directly.
    lab.sent();
    lab.advance(Duration::from_secs(2));
    let again = lsus(&lab.sent_bodies());
    assert!(again.iter().any(|(_, l)| l.key() == ext.key()), "{again:?}");
    lab.feed(
        "172.31.0.1",
        ALL_SPF_ROUTERS,
        HIGH,
        Body::LsAck(again.iter().map(|(_, l)| *l.header()).collect()),
    );
    assert_eq!(lab.inst.vip_adjacencies(VIP), 1);
    lab.advance(Duration::from_secs(3));
    assert!(
        lsus(&lab.sent_bodies()).is_empty(),
        "nothing left to retransmit"
    );

    // Withdraw: a MaxAge flush of the same instance.
    lab.inst.withdraw(VIP, lab.now);
    let flush: Vec<_> = lsus(&lab.sent_bodies())
        .into_iter()
        .filter(|(_, l)| l.key() == ext.key())
        .collect();
    assert_eq!(flush.len(), 1, "{flush:#?}");
    assert_eq!(flush[0].1.key(), ext.key());
    assert_eq!(flush[0].1.header().age, MAX_AGE);
    assert_eq!(flush[0].1.header().seq, ext.header().seq);
    assert_eq!(lab.inst.vip_adjacencies(VIP), 0);
    lab.feed(
        "172.31.0.1",
        ALL_SPF_ROUTERS,
        HIGH,
        Body::LsAck(vec![*flush[0].1.header()]),
    );
    lab.advance(Duration::from_secs(1));
    assert!(
        lab.inst.lsa(&ext.key(), lab.now).is_none(),
        "removed once acknowledged"
    );
    assert_eq!(lab.router_lsa().flags, router_flags::E, "still an ASBR");
    lab.advance(MIN_LS_INTERVAL);

    // Advertised again: a new instance, past the flushed one.
    lab.inst.advertise(VIP, lab.now);
    let back = lsus(&lab.sent_bodies());
    let back: Vec<_> = back.iter().filter(|(_, l)| l.key() == ext.key()).collect();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].1.header().seq, ext.header().seq + 1);
    assert_eq!(back[0].1.header().age, 1);
}

#[test]
fn ptp_adjacency_as_master_with_retransmission_duplicates_and_mismatch() {
    let mut lab = Lab::new(ptp());
    let rtr = "172.31.0.1";
    lab.sent();
    lab.feed(
        rtr,
        ALL_SPF_ROUTERS,
        LOW,
        hello("255.255.255.252", 1, "0.0.0.0", "0.0.0.0", &[ME]),
    );
    assert_eq!(lab.nbr_state(LOW), Some(NbrState::ExStart));
    lab.peers = vec![(
        rtr,
        LOW,
        hello("255.255.255.252", 1, "0.0.0.0", "0.0.0.0", &[ME]),
    )];
    let first = dds(&lab.sent_bodies()).remove(0).1;
    let x = first.seq;
    // Unanswered: the master retransmits the same packet every RxmtInterval.
    lab.advance(Duration::from_secs(2));
    let again = dds(&lab.sent_bodies());
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1, first);
    // Its own I|M|MS packet is ignored: its ID is lower.
    lab.feed(
        rtr,
        ALL_SPF_ROUTERS,
        LOW,
        dd(
            dbd_flags::INIT | dbd_flags::MORE | dbd_flags::MASTER,
            5,
            vec![],
        ),
    );
    assert_eq!(lab.nbr_state(LOW), Some(NbrState::ExStart));
    assert!(dds(&lab.sent_bodies()).is_empty());
    // The slave's answer with our sequence number: we are master, Exchange; we send our
    // headers with x + 1.
    lab.feed(rtr, ALL_SPF_ROUTERS, LOW, dd(dbd_flags::MORE, x, vec![]));
    assert_eq!(lab.nbr_state(LOW), Some(NbrState::Exchange));
    let next = dds(&lab.sent_bodies());
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].1.seq, x + 1);
    assert_eq!(
        next[0].1.flags,
        dbd_flags::MASTER,
        "all headers fit: M clear"
    );
    assert_eq!(next[0].1.lsa_headers.len(), 1);
    // A duplicate of the slave's previous packet is ignored by the master.
    lab.feed(rtr, ALL_SPF_ROUTERS, LOW, dd(dbd_flags::MORE, x, vec![]));
    assert!(dds(&lab.sent_bodies()).is_empty());
    // A wrong sequence number: SeqNumberMismatch, back to ExStart with a new number.
    lab.feed(rtr, ALL_SPF_ROUTERS, LOW, dd(0, x + 7, vec![]));
    assert_eq!(lab.nbr_state(LOW), Some(NbrState::ExStart));
    let restart = dds(&lab.sent_bodies());
    assert_eq!(restart.len(), 1);
    assert_eq!(
        restart[0].1.flags,
        dbd_flags::INIT | dbd_flags::MORE | dbd_flags::MASTER
    );
    let y = restart[0].1.seq;
    assert_ne!(y, x);
    // This time it goes through: slave answers y, we send y + 1 (M clear), slave answers
    // y + 1 with M clear: Full (nothing to request).
    lab.feed(rtr, ALL_SPF_ROUTERS, LOW, dd(dbd_flags::MORE, y, vec![]));
    let next = dds(&lab.sent_bodies());
    assert_eq!(next[0].1.seq, y + 1);
    lab.feed(rtr, ALL_SPF_ROUTERS, LOW, dd(0, y + 1, vec![]));
    assert_eq!(lab.nbr_state(LOW), Some(NbrState::Full));
    // No more DD retransmissions.
    lab.advance(Duration::from_secs(3));
    assert!(dds(&lab.sent_bodies()).is_empty());
    // A Database Description now is a mismatch (not a duplicate).
    lab.feed(rtr, ALL_SPF_ROUTERS, LOW, dd(0, y + 5, vec![]));
    assert_eq!(lab.nbr_state(LOW), Some(NbrState::ExStart));
}

#[test]
fn slave_answers_duplicates_with_its_last_packet() {
    let mut lab = Lab::new(ptp());
    ptp_full_as_slave(&mut lab);
    lab.sent();
    // The master did not hear our last answer and sends 1001 again.
    let theirs = their_router_lsa(HIGH, INITIAL_SEQUENCE_NUMBER + 4);
    lab.feed(
        "172.31.0.1",
        ALL_SPF_ROUTERS,
        HIGH,
        dd(dbd_flags::MASTER, 1001, vec![*theirs.header()]),
    );
    let again = dds(&lab.sent_bodies());
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1.seq, 1001);
    assert_eq!(lab.nbr_state(HIGH), Some(NbrState::Full));
}

#[test]
fn received_lsas_are_stored_acknowledged_and_answered() {
    let mut lab = Lab::new(ptp());
    ptp_full_as_slave(&mut lab);
    lab.advance(Duration::from_secs(1));
    lab.sent();
    let rtr = "172.31.0.1";
    // A new AS-external-LSA from the router: stored, delayed ack, not flooded back.
    let e1 = external(ip("203.0.113.0"), HIGH, INITIAL_SEQUENCE_NUMBER, 1);
    lab.feed(rtr, ALL_SPF_ROUTERS, HIGH, Body::LsUpdate(vec![e1.clone()]));
    assert!(lab.inst.lsa(&e1.key(), lab.now).is_some());
    let sent = lab.sent_bodies();
    assert!(
        lsus(&sent).is_empty(),
        "not flooded back to its only neighbour"
    );
    lab.advance(Duration::from_millis(500));
    assert_eq!(
        acks(&lab.sent_bodies()),
        vec![(ALL_SPF_ROUTERS, *e1.header())]
    );
    // The same instance again (the router did not get our ack): a direct ack at once.
    lab.feed(rtr, ALL_SPF_ROUTERS, HIGH, Body::LsUpdate(vec![e1.clone()]));
    assert_eq!(
        acks(&lab.sent_bodies()),
        vec![(ALL_SPF_ROUTERS, *e1.header())]
    );
    // A newer instance within MinLSArrival is dropped, without an ack.
    let e2 = external(ip("203.0.113.0"), HIGH, INITIAL_SEQUENCE_NUMBER + 1, 1);
    lab.feed(rtr, ALL_SPF_ROUTERS, HIGH, Body::LsUpdate(vec![e2.clone()]));
    assert!(lab.sent_bodies().is_empty());
    assert_eq!(
        lab.inst.lsa(&e1.key(), lab.now).unwrap().header().seq,
        INITIAL_SEQUENCE_NUMBER
    );
    // After it, accepted.
    lab.advance(Duration::from_secs(1));
    lab.sent();
    lab.feed(rtr, ALL_SPF_ROUTERS, HIGH, Body::LsUpdate(vec![e2.clone()]));
    assert_eq!(
        lab.inst.lsa(&e1.key(), lab.now).unwrap().header().seq,
        INITIAL_SEQUENCE_NUMBER + 1
    );
    // An older instance: we send ours back, once per MinLSArrival.
    lab.feed(rtr, ALL_SPF_ROUTERS, HIGH, Body::LsUpdate(vec![e1.clone()]));
    let back = lsus(&lab.sent_bodies());
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].1.header().seq, INITIAL_SEQUENCE_NUMBER + 1);
    lab.feed(rtr, ALL_SPF_ROUTERS, HIGH, Body::LsUpdate(vec![e1.clone()]));
    assert!(lsus(&lab.sent_bodies()).is_empty());
    // A bad checksum is dropped and counted.
    let mut bytes = e2.bytes().to_vec();
    // (Not 0xff: the Fletcher sums are modulo 255, so 0x00 and 0xff look alike.)
    bytes[30] ^= 0x01;
    let bad = Lsa::from_bytes(bytes).unwrap();
    lab.feed(rtr, ALL_SPF_ROUTERS, HIGH, Body::LsUpdate(vec![bad]));
    assert_eq!(lab.iface().counters.lsa_checksum_errors, 1);
    // A MaxAge LSA we do not have: acknowledged directly, not stored.
    let gone = external(ip("203.0.113.99"), HIGH, INITIAL_SEQUENCE_NUMBER, MAX_AGE);
    lab.sent();
    lab.feed(
        rtr,
        ALL_SPF_ROUTERS,
        HIGH,
        Body::LsUpdate(vec![gone.clone()]),
    );
    assert_eq!(
        acks(&lab.sent_bodies()),
        vec![(ALL_SPF_ROUTERS, *gone.header())]
    );
    assert!(lab.inst.lsa(&gone.key(), lab.now).is_none());
    // Requests are answered with the LSAs, age + InfTransDelay.
    lab.feed(
        rtr,
        ALL_SPF_ROUTERS,
        HIGH,
        Body::LsRequest(vec![LsRequest {
            ls_type: 5,
            id: ip("203.0.113.0"),
            adv_router: HIGH,
        }]),
    );
    let answer = lsus(&lab.sent_bodies());
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].1.key(), e2.key());
    assert_eq!(answer[0].1.header().age, 2);
    // A request for something we do not have: BadLSReq, the exchange starts over.
    lab.feed(
        rtr,
        ALL_SPF_ROUTERS,
        HIGH,
        Body::LsRequest(vec![LsRequest {
            ls_type: 5,
            id: ip("203.0.113.77"),
            adv_router: HIGH,
        }]),
    );
    assert_eq!(lab.nbr_state(HIGH), Some(NbrState::ExStart));
}

#[test]
fn lsas_reaching_maxage_are_reflooded_and_removed() {
    let mut lab = Lab::new(ptp());
    ptp_full_as_slave(&mut lab);
    let old = external(
        ip("203.0.113.0"),
        HIGH,
        INITIAL_SEQUENCE_NUMBER,
        MAX_AGE - 2,
    );
    lab.feed(
        "172.31.0.1",
        ALL_SPF_ROUTERS,
        HIGH,
        Body::LsUpdate(vec![old.clone()]),
    );
    lab.sent();
    lab.advance(Duration::from_secs(1));
    assert!(lsus(&lab.sent_bodies()).is_empty());
    lab.advance(Duration::from_secs(1));
    let flooded = lsus(&lab.sent_bodies());
    assert_eq!(flooded.len(), 1);
    assert_eq!(flooded[0].1.header().age, MAX_AGE);
    // Still held until acknowledged.
    lab.advance(Duration::from_secs(1));
    assert!(lab.inst.lsa(&old.key(), lab.now).is_some());
    lab.feed(
        "172.31.0.1",
        ALL_SPF_ROUTERS,
        HIGH,
        Body::LsAck(vec![*flooded[0].1.header()]),
    );
    lab.advance(Duration::from_secs(1));
    assert!(lab.inst.lsa(&old.key(), lab.now).is_none());
}

#[test]
fn our_lsas_held_by_the_router_are_superseded_or_flushed() {
    let mut lab = Lab::new(ptp());
    lab.inst.advertise(VIP, lab.now);
    ptp_full_as_slave(&mut lab);
    lab.advance(Duration::from_secs(1));
    lab.sent();
    let rtr = "172.31.0.1";
    // From a previous life: our LSA for a VIP we no longer advertise, and a newer instance
    // of the one we do.
    let stale = external(ip("198.51.100.7"), ME, INITIAL_SEQUENCE_NUMBER + 40, 100);
    let newer = external(VIP, ME, INITIAL_SEQUENCE_NUMBER + 60, 100);
    lab.feed(
        rtr,
        ALL_SPF_ROUTERS,
        HIGH,
        Body::LsUpdate(vec![stale.clone(), newer.clone()]),
    );
    let mut sent = lsus(&lab.sent_bodies());
    let flush: Vec<_> = sent
        .iter()
        .filter(|(_, l)| l.key() == stale.key())
        .collect();
    assert_eq!(flush.len(), 1, "{sent:?}");
    assert_eq!(flush[0].1.header().age, MAX_AGE);
    assert_eq!(flush[0].1.header().seq, stale.header().seq);
    // The VIP's LSA is re-issued past the router's copy (at most MinLSArrival after our last
    // origination).
    lab.advance(MIN_LS_ARRIVAL);
    sent.extend(lsus(&lab.sent_bodies()));
    let reissued: Vec<_> = sent
        .iter()
        .filter(|(_, l)| l.key() == newer.key())
        .collect();
    assert_eq!(reissued.len(), 1, "{sent:?}");
    assert_eq!(reissued[0].1.header().seq, newer.header().seq + 1);
    assert_eq!(reissued[0].1.header().age, 1);
}

#[test]
fn inactivity_drops_the_neighbour_and_its_link() {
    let mut lab = Lab::new(ptp());
    ptp_full_as_slave(&mut lab);
    lab.at(MIN_LS_INTERVAL);
    assert_eq!(lab.router_lsa().links.len(), 2);
    // The router falls silent: gone after the dead interval, not before.
    lab.peers.clear();
    let silent = lab.now;
    lab.advance(Duration::from_millis(3999));
    assert_eq!(lab.nbr_state(HIGH), Some(NbrState::Full));
    lab.now = silent + Duration::from_secs(4);
    lab.inst.tick(lab.now);
    assert_eq!(lab.nbr_state(HIGH), None);
    lab.advance(MIN_LS_INTERVAL);
    assert_eq!(lab.router_lsa().links.len(), 1);
}

#[test]
fn hello_mismatches_and_bad_packets_are_dropped_and_counted() {
    let mut lab = Lab::new(bcast(0));
    let rtr = "172.31.1.1";
    // Wrong mask, wrong intervals, stub area.
    lab.feed(
        rtr,
        ALL_SPF_ROUTERS,
        LOW,
        hello("255.255.0.0", 1, "0.0.0.0", "0.0.0.0", &[]),
    );
    let Body::Hello(mut h) = hello("255.255.255.0", 1, "0.0.0.0", "0.0.0.0", &[]) else {
        unreachable!()
    };
    h.hello_interval = 10;
    lab.feed(rtr, ALL_SPF_ROUTERS, LOW, Body::Hello(h.clone()));
    h.hello_interval = 1;
    h.dead_interval = 40;
    lab.feed(rtr, ALL_SPF_ROUTERS, LOW, Body::Hello(h.clone()));
    h.dead_interval = 4;
    h.options = 0;
    lab.feed(rtr, ALL_SPF_ROUTERS, LOW, Body::Hello(h.clone()));
    assert_eq!(lab.iface().counters.rx_mismatched, 4);
    assert!(lab.iface().neighbors.is_empty());
    assert!(lab.iface().last_problem.unwrap().contains("E bit"));
    // Outside the subnet.
    lab.feed(
        "10.9.9.9",
        ALL_SPF_ROUTERS,
        LOW,
        hello("255.255.255.0", 1, "0.0.0.0", "0.0.0.0", &[]),
    );
    assert_eq!(lab.iface().counters.rx_mismatched, 5);
    // Another area.
    let mut p = Packet {
        router_id: LOW,
        area_id: ip("0.0.0.1"),
        auth_type: AUTH_NULL,
        auth: [0; 8],
        body: hello("255.255.255.0", 1, "0.0.0.0", "0.0.0.0", &[]),
    };
    lab.inst
        .handle_packet(0, ip(rtr), ALL_SPF_ROUTERS, &p.encode().unwrap(), lab.now);
    assert_eq!(lab.iface().counters.rx_mismatched, 6);
    // Simple password authentication: not supported.
    p.area_id = AREA;
    p.auth_type = 1;
    p.auth = *b"secret\0\0";
    lab.inst
        .handle_packet(0, ip(rtr), ALL_SPF_ROUTERS, &p.encode().unwrap(), lab.now);
    assert_eq!(lab.iface().counters.rx_auth_dropped, 1);
    assert!(
        lab.iface()
            .last_problem
            .unwrap()
            .contains("AuType 1 is not supported")
    );
    // Garbage and a bad checksum.
    lab.inst
        .handle_packet(0, ip(rtr), ALL_SPF_ROUTERS, &[2, 1, 0, 3], lab.now);
    p.auth_type = AUTH_NULL;
    let mut b = p.encode().unwrap();
    b[30] ^= 1;
    lab.inst
        .handle_packet(0, ip(rtr), ALL_SPF_ROUTERS, &b, lab.now);
    assert_eq!(lab.iface().counters.rx_malformed, 2);
    // Our own router ID.
    lab.feed(
        rtr,
        ALL_SPF_ROUTERS,
        ME,
        hello("255.255.255.0", 1, "0.0.0.0", "0.0.0.0", &[]),
    );
    assert!(lab.iface().neighbors.is_empty());
    // AllDRouters while DROther: not for us.
    lab.feed(
        rtr,
        ALL_D_ROUTERS,
        LOW,
        hello("255.255.255.0", 1, "0.0.0.0", "0.0.0.0", &[]),
    );
    assert!(lab.iface().neighbors.is_empty());
    // A Database Description from a stranger.
    lab.feed(rtr, ip("172.31.1.5"), LOW, dd(0, 1, vec![]));
    assert!(
        lab.iface()
            .last_problem
            .unwrap()
            .contains("not a neighbour")
    );
    assert_eq!(lab.iface().counters.rx_packets, 12);
}

#[test]
fn broadcast_drother_forms_adjacencies_with_the_dr_only() {
    let mut lab = Lab::new(bcast(0));
    assert_eq!(
        lab.iface().state,
        IfState::DrOther,
        "priority 0 skips Waiting"
    );
    let mask = "255.255.255.0";
    // The DR (priority 1, declares itself) and another DROther.
    lab.feed(
        "172.31.1.1",
        ALL_SPF_ROUTERS,
        LOW,
        hello(mask, 1, "172.31.1.1", "0.0.0.0", &[ME]),
    );
    lab.feed(
        "172.31.1.7",
        ALL_SPF_ROUTERS,
        ip("10.0.0.7"),
        hello(mask, 0, "172.31.1.1", "0.0.0.0", &[ME]),
    );
    let st = lab.iface();
    assert_eq!(
        (st.dr, st.bdr, st.state),
        (ip("172.31.1.1"), Ipv4Addr::UNSPECIFIED, IfState::DrOther)
    );
    assert_eq!(lab.nbr_state(LOW), Some(NbrState::ExStart));
    assert_eq!(lab.nbr_state(ip("10.0.0.7")), Some(NbrState::TwoWay));
    assert!(!lab.inst.wants_all_d_routers(0));
    // Database Descriptions go to the DR's address.
    let sent = lab.sent_bodies();
    let d = dds(&sent);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, ip("172.31.1.1"));
    let x = d[0].1.seq;
    // We are master (ID 10.0.0.5 > 10.0.0.1).
    lab.feed(
        "172.31.1.1",
        ip("172.31.1.5"),
        LOW,
        dd(dbd_flags::MORE, x, vec![]),
    );
    lab.feed("172.31.1.1", ip("172.31.1.5"), LOW, dd(0, x + 1, vec![]));
    assert_eq!(lab.nbr_state(LOW), Some(NbrState::Full));
    lab.peers = vec![
        (
            "172.31.1.1",
            LOW,
            hello(mask, 1, "172.31.1.1", "0.0.0.0", &[ME]),
        ),
        (
            "172.31.1.7",
            ip("10.0.0.7"),
            hello(mask, 0, "172.31.1.1", "0.0.0.0", &[ME]),
        ),
    ];
    lab.at(MIN_LS_INTERVAL);
    let r = lab.router_lsa();
    assert_eq!(r.links.len(), 1);
    assert_eq!(
        (
            r.links[0].link_type,
            r.links[0].id,
            r.links[0].data,
            r.links[0].metric
        ),
        (link_type::TRANSIT, ip("172.31.1.1"), ip("172.31.1.5"), 10)
    );
    // A DROther floods to AllDRouters.
    let flooded = lsus(&lab.sent_bodies());
    assert_eq!(flooded.len(), 1);
    assert_eq!(flooded[0].0, ALL_D_ROUTERS);
    // An LSA from the DR is not flooded back; its delayed ack goes to AllDRouters.
    let e = external(ip("203.0.113.0"), LOW, INITIAL_SEQUENCE_NUMBER, 1);
    lab.feed(
        "172.31.1.1",
        ALL_SPF_ROUTERS,
        LOW,
        Body::LsUpdate(vec![e.clone()]),
    );
    assert!(lsus(&lab.sent_bodies()).is_empty());
    lab.advance(Duration::from_millis(500));
    assert_eq!(acks(&lab.sent_bodies()), vec![(ALL_D_ROUTERS, *e.header())]);
    // The DR goes silent: after the dead interval the other DROther is not eligible and
    // there is no DR; the link becomes a stub.
    lab.peers.remove(0);
    lab.advance(Duration::from_secs(5));
    assert_eq!(lab.nbr_state(LOW), None);
    assert_eq!(lab.nbr_state(ip("10.0.0.7")), Some(NbrState::TwoWay));
    assert_eq!(lab.iface().dr, Ipv4Addr::UNSPECIFIED);
    lab.advance(MIN_LS_INTERVAL);
    let r = lab.router_lsa();
    assert_eq!(r.links[0].link_type, link_type::STUB);
    assert_eq!(r.links[0].id, ip("172.31.1.0"));
}

#[test]
fn broadcast_we_become_dr_and_originate_the_network_lsa() {
    let mut lab = Lab::new(bcast(1));
    assert_eq!(lab.iface().state, IfState::Waiting);
    let mask = "255.255.255.0";
    let other = ip("10.0.0.7");
    // A neighbour with priority 0 declares nobody: we wait the full dead interval.
    for s in 0..4 {
        lab.feed(
            "172.31.1.7",
            ALL_SPF_ROUTERS,
            other,
            hello(mask, 0, "0.0.0.0", "0.0.0.0", &[ME]),
        );
        assert_eq!(lab.iface().state, IfState::Waiting);
        assert_eq!(lab.nbr_state(other), Some(NbrState::TwoWay));
        lab.at(Duration::from_secs(s) + Duration::from_millis(999));
    }
    lab.at(Duration::from_secs(4));
    let st = lab.iface();
    assert_eq!(
        (st.state, st.dr, st.bdr),
        (IfState::Dr, ip("172.31.1.5"), Ipv4Addr::UNSPECIFIED)
    );
    assert!(lab.inst.wants_all_d_routers(0));
    assert_eq!(
        lab.nbr_state(other),
        Some(NbrState::ExStart),
        "the DR is adjacent to all"
    );
    lab.sent();
    lab.peers = vec![(
        "172.31.1.7",
        other,
        hello(mask, 0, "172.31.1.5", "0.0.0.0", &[ME]),
    )];
    lab.advance(Duration::from_secs(1));
    let hellos: Vec<Hello> = lab
        .sent_bodies()
        .into_iter()
        .filter_map(|(_, b)| match b {
            Body::Hello(h) => Some(h),
            _ => None,
        })
        .collect();
    assert_eq!(hellos[0].dr, ip("172.31.1.5"));
    assert_eq!(hellos[0].priority, 1);
    // The neighbour has the higher router ID: it is master.
    lab.feed(
        "172.31.1.7",
        ip("172.31.1.5"),
        other,
        dd(
            dbd_flags::INIT | dbd_flags::MORE | dbd_flags::MASTER,
            42,
            vec![],
        ),
    );
    assert_eq!(lab.nbr_state(other), Some(NbrState::Exchange));
    lab.feed(
        "172.31.1.7",
        ip("172.31.1.5"),
        other,
        dd(dbd_flags::MASTER, 43, vec![]),
    );
    assert_eq!(lab.nbr_state(other), Some(NbrState::Full));
    lab.advance(MIN_LS_INTERVAL);
    let net_key = LsaKey {
        ls_type: ls_type::NETWORK,
        id: ip("172.31.1.5"),
        adv_router: ME,
    };
    let net = lab.inst.lsa(&net_key, lab.now).expect("Network-LSA");
    assert_eq!(
        net.body().unwrap(),
        LsaBody::Network(NetworkLsa {
            mask: ip(mask),
            routers: vec![ME, other]
        })
    );
    let r = lab.router_lsa();
    assert_eq!(
        (r.links[0].link_type, r.links[0].id),
        (link_type::TRANSIT, ip("172.31.1.5"))
    );
    // As DR we flood to AllSPFRouters (retransmissions go to the neighbour's address) and
    // listen on AllDRouters.
    let flooded = lsus(&lab.sent_bodies());
    let net_flood: Vec<_> = flooded.iter().filter(|(_, l)| l.key() == net_key).collect();
    assert_eq!(net_flood[0].0, ALL_SPF_ROUTERS, "{flooded:?}");
    lab.feed(
        "172.31.1.7",
        ALL_D_ROUTERS,
        other,
        Body::LsAck(flooded.iter().map(|(_, l)| *l.header()).collect()),
    );
    assert_eq!(lab.iface().counters.rx_mismatched, 0);
    // The neighbour leaves: the Network-LSA is flushed.
    lab.peers.clear();
    lab.advance(Duration::from_secs(5));
    assert_eq!(lab.nbr_state(other), None);
    let flushed = lab.inst.lsa(&net_key, lab.now);
    assert!(flushed.is_none_or(|l| l.header().age == MAX_AGE));
}

#[test]
fn graceful_shutdown_flushes_everything_and_says_goodbye() {
    let mut lab = Lab::new(ptp());
    lab.inst.advertise(VIP, lab.now);
    ptp_full_as_slave(&mut lab);
    lab.at(MIN_LS_INTERVAL);
    lab.sent();
    lab.inst.shutdown(lab.now);
    // The Router-LSA was originated just now (MinLSInterval after t0): its flush follows
    // MinLSArrival later.
    let mut flushed = lsus(&lab.sent_bodies());
    assert!(!lab.inst.is_finished());
    lab.advance(MIN_LS_ARRIVAL);
    flushed.extend(lsus(&lab.sent_bodies()));
    let keys: BTreeSet<LsaKey> = flushed.iter().map(|(_, l)| l.key()).collect();
    assert_eq!(
        keys,
        [lab.inst.router_key(), lab.inst.external_key(VIP)]
            .into_iter()
            .collect()
    );
    assert!(flushed.iter().all(|(_, l)| l.header().age == MAX_AGE));
    assert!(!lab.inst.is_finished(), "waits for the acknowledgments");
    lab.feed(
        "172.31.0.1",
        ALL_SPF_ROUTERS,
        HIGH,
        Body::LsAck(flushed.iter().map(|(_, l)| *l.header()).collect()),
    );
    assert!(lab.inst.is_finished());
    let last = lab.sent_bodies();
    assert_eq!(last.len(), 1);
    let Body::Hello(h) = &last[0].1 else {
        panic!("{last:?}")
    };
    assert!(h.neighbors.is_empty(), "the last Hello lists nobody");
    assert_eq!(lab.inst.next_deadline(), None);
    // Advertising after shutdown does nothing.
    lab.inst.advertise(VIP, lab.now);
    assert!(lab.sent().is_empty());
}

#[test]
fn graceful_shutdown_gives_up_after_the_timeout() {
    let mut lab = Lab::new(ptp());
    lab.inst.advertise(VIP, lab.now);
    ptp_full_as_slave(&mut lab);
    lab.sent();
    let start = lab.now;
    lab.inst.shutdown(lab.now);
    assert_eq!(
        lab.inst
            .next_deadline()
            .map(|d| d <= start + SHUTDOWN_TIMEOUT),
        Some(true)
    );
    lab.advance(SHUTDOWN_TIMEOUT - Duration::from_millis(1));
    assert!(!lab.inst.is_finished());
    lab.now = start + SHUTDOWN_TIMEOUT;
    lab.inst.tick(lab.now);
    assert!(lab.inst.is_finished());
}

#[test]
fn the_database_cap_holds() {
    let mut lab = Lab::with(ptp(), 4);
    ptp_full_as_slave(&mut lab);
    lab.advance(Duration::from_secs(1));
    // Ours and theirs are in; two more fit.
    let many: Vec<Lsa> = (1..=5)
        .map(|i| {
            external(
                Ipv4Addr::new(203, 0, 113, i),
                HIGH,
                INITIAL_SEQUENCE_NUMBER,
                1,
            )
        })
        .collect();
    lab.feed("172.31.0.1", ALL_SPF_ROUTERS, HIGH, Body::LsUpdate(many));
    assert_eq!(lab.inst.lsdb_len(), 4);
    assert_eq!(lab.inst.lsdb_full_drops(), 3);
    // Our own LSAs still go in.
    lab.inst.advertise(VIP, lab.now);
    assert!(lab.inst.lsa(&lab.inst.external_key(VIP), lab.now).is_some());
}

#[test]
fn updates_and_descriptions_fit_the_mtu() {
    let mut s = ptp();
    s.mtu = 576;
    let mut lab = Lab::new(s);
    for i in 0..40 {
        lab.inst.advertise(Ipv4Addr::new(198, 51, 100, i), lab.now);
    }
    // The exchange describes 41 LSAs: (576 - 20 - 24 - 8) / 20 = 26 headers per packet.
    let rtr = "172.31.0.1";
    lab.sent();
    lab.feed(
        rtr,
        ALL_SPF_ROUTERS,
        HIGH,
        hello("255.255.255.252", 1, "0.0.0.0", "0.0.0.0", &[ME]),
    );
    // A neighbour whose MTU is larger than ours is not accepted (section 10.6).
    let mut big = dd(
        dbd_flags::INIT | dbd_flags::MORE | dbd_flags::MASTER,
        1,
        vec![],
    );
    if let Body::DbDescription(d) = &mut big {
        d.interface_mtu = 1500;
    }
    lab.feed(rtr, ALL_SPF_ROUTERS, HIGH, big);
    assert_eq!(lab.nbr_state(HIGH), Some(NbrState::ExStart));
    assert_eq!(lab.iface().counters.rx_mismatched, 1);
    assert!(
        lab.iface()
            .last_problem
            .unwrap()
            .contains("MTU 1500 exceeds ours (576)")
    );
    lab.feed(
        rtr,
        ALL_SPF_ROUTERS,
        HIGH,
        dd(
            dbd_flags::INIT | dbd_flags::MORE | dbd_flags::MASTER,
            1,
            vec![],
        ),
    );
    let first = dds(&lab.sent_bodies()).pop().unwrap().1;
    assert_eq!(first.lsa_headers.len(), 26);
    assert_ne!(first.flags & dbd_flags::MORE, 0);
    lab.feed(
        rtr,
        ALL_SPF_ROUTERS,
        HIGH,
        dd(dbd_flags::MASTER | dbd_flags::MORE, 2, vec![]),
    );
    let second = dds(&lab.sent_bodies()).remove(0).1;
    assert_eq!(second.lsa_headers.len(), 15);
    assert_eq!(second.flags & dbd_flags::MORE, 0);
    lab.feed(rtr, ALL_SPF_ROUTERS, HIGH, dd(dbd_flags::MASTER, 3, vec![]));
    assert_eq!(lab.nbr_state(HIGH), Some(NbrState::Full));
    // It requests all 40 externals: answered in LS Updates of at most 576 bytes with IP.
    let reqs = (0..40)
        .map(|i| LsRequest {
            ls_type: 5,
            id: Ipv4Addr::new(198, 51, 100, i),
            adv_router: ME,
        })
        .collect();
    lab.feed(rtr, ALL_SPF_ROUTERS, HIGH, Body::LsRequest(reqs));
    let sent = lab.sent();
    let sizes: Vec<usize> = sent
        .iter()
        .filter(|(_, p)| matches!(p.body, Body::LsUpdate(_)))
        .map(|(_, p)| p.encode().unwrap().len())
        .collect();
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    assert!(sizes.iter().all(|s| *s + 20 <= 576), "{sizes:?}");
    assert_eq!(
        lsus(
            &sent
                .into_iter()
                .map(|(d, p)| (d, p.body))
                .collect::<Vec<_>>()
        )
        .len(),
        40
    );
}

proptest::proptest! {
    /// No input panics the core: valid packets of every type with random fields, and
    /// random bytes, in any order, on a point-to-point and a broadcast interface.
    #[test]
    fn arbitrary_input_never_panics(
        broadcast in proptest::bool::ANY,
        inputs in proptest::collection::vec(
            (0u8..8, proptest::collection::vec(proptest::num::u8::ANY, 0..120), 0u64..3000),
            1..40,
        ),
    ) {
        let spec = if broadcast { bcast(1) } else { ptp() };
        let mut lab = Lab::new(spec);
        lab.inst.advertise(VIP, lab.now);
        let src = if broadcast { "172.31.1.1" } else { "172.31.0.1" };
        for (kind, bytes, ms) in inputs {
            let word = |i: usize| u32::from_be_bytes([0, 1, 2, 3].map(|j| bytes.get(i * 4 + j).copied().unwrap_or(0)));
            let rid = if word(0) % 2 == 0 { HIGH } else { LOW };
            let hdr = |i: usize| LsaHeader {
                age: (word(i) % 3601) as u16,
                options: 2,
                ls_type: (word(i + 1) % 6) as u8,
                id: Ipv4Addr::from(word(i + 2) % 4),
                adv_router: if word(i + 3) % 2 == 0 { HIGH } else { ME },
                seq: INITIAL_SEQUENCE_NUMBER + (word(i + 4) % 4) as i32,
                checksum: word(i + 5) as u16,
                length: 36,
            };
            let body = match kind {
                0 => hello(if broadcast { "255.255.255.0" } else { "255.255.255.252" }, (word(1) % 3) as u8,
                    if word(2) % 2 == 0 { src } else { "0.0.0.0" }, "0.0.0.0",
                    if word(3) % 3 == 0 { &[] } else { &[ME] }),
                1 => dd((word(1) % 8) as u8, word(2) % 4 + 7000, (0..(word(3) % 3) as usize).map(|i| hdr(4 + i * 6)).collect()),
                2 => Body::LsRequest(vec![LsRequest { ls_type: word(1) % 7, id: Ipv4Addr::from(word(2) % 4), adv_router: HIGH }]),
                3 => Body::LsUpdate(vec![external(Ipv4Addr::from(word(1) % 4), if word(2) % 3 == 0 { ME } else { HIGH },
                    INITIAL_SEQUENCE_NUMBER + (word(3) % 4) as i32, (word(4) % 3601) as u16)]),
                4 => Body::LsAck((0..(word(1) % 3) as usize).map(|i| hdr(2 + i * 6)).collect()),
                5 => { lab.inst.handle_packet(0, ip(src), ALL_SPF_ROUTERS, &bytes, lab.now); continue; }
                6 => { lab.inst.withdraw(VIP, lab.now); lab.inst.advertise(Ipv4Addr::from(word(1) % 4 + 1), lab.now); continue; }
                _ => { lab.advance(Duration::from_millis(ms)); lab.sent(); continue; }
            };
            let dst = if word(5) % 4 == 0 { ALL_D_ROUTERS } else { ALL_SPF_ROUTERS };
            lab.feed(src, dst, rid, body);
            lab.sent();
        }
        lab.inst.shutdown(lab.now);
        lab.advance(SHUTDOWN_TIMEOUT);
        proptest::prop_assert!(lab.inst.is_finished());
    }
}

#[test]
fn waiting_ends_early_when_a_dr_is_declared() {
    // BackupSeen (section 9.3): a neighbour declaring itself DR with no BDR ends Waiting;
    // we (priority 1) become BDR, adjacent to the DR, and listen on AllDRouters.
    let mut lab = Lab::new(bcast(1));
    assert_eq!(lab.iface().state, IfState::Waiting);
    lab.feed(
        "172.31.1.1",
        ALL_SPF_ROUTERS,
        LOW,
        hello("255.255.255.0", 1, "172.31.1.1", "0.0.0.0", &[ME]),
    );
    let st = lab.iface();
    assert_eq!(
        (st.state, st.dr, st.bdr),
        (IfState::Backup, ip("172.31.1.1"), ip("172.31.1.5"))
    );
    assert!(lab.inst.wants_all_d_routers(0));
    assert_eq!(lab.nbr_state(LOW), Some(NbrState::ExStart));
    // Our next Hello declares us BDR.
    lab.sent();
    lab.advance(Duration::from_secs(1));
    let hello = lab
        .sent_bodies()
        .into_iter()
        .find_map(|(_, b)| match b {
            Body::Hello(h) => Some(h),
            _ => None,
        })
        .unwrap();
    assert_eq!((hello.dr, hello.bdr), (ip("172.31.1.1"), ip("172.31.1.5")));
}

#[test]
fn a_flush_right_after_an_origination_waits_for_min_ls_arrival() {
    // Routers drop an instance that follows the previous one by less than MinLSArrival, so a
    // withdrawal (or a shutdown) right after an assignment is flushed a second later.
    let mut lab = Lab::new(ptp());
    ptp_full_as_slave(&mut lab);
    lab.advance(Duration::from_secs(1));
    lab.sent();
    lab.inst.advertise(VIP, lab.now);
    let first = lsus(&lab.sent_bodies());
    assert_eq!(first.len(), 1);
    lab.advance(Duration::from_millis(300));
    lab.inst.shutdown(lab.now);
    let early = lsus(&lab.sent_bodies());
    assert!(
        early.iter().all(|(_, l)| l.key() != first[0].1.key()),
        "{early:?}"
    );
    assert!(!lab.inst.is_finished());
    lab.advance(Duration::from_millis(700));
    let flush: Vec<_> = lsus(&lab.sent_bodies())
        .into_iter()
        .filter(|(_, l)| l.key() == first[0].1.key())
        .collect();
    assert_eq!(flush.len(), 1);
    assert_eq!(flush[0].1.header().age, MAX_AGE);
    let acked: Vec<LsaHeader> = early
        .iter()
        .chain(&flush)
        .map(|(_, l)| *l.header())
        .collect();
    lab.feed("172.31.0.1", ALL_SPF_ROUTERS, HIGH, Body::LsAck(acked));
    assert!(lab.inst.is_finished());
}

#[test]
fn a_routers_flush_is_acknowledged_and_the_lsa_removed() {
    let mut lab = Lab::new(ptp());
    ptp_full_as_slave(&mut lab);
    let e = external(ip("203.0.113.0"), HIGH, INITIAL_SEQUENCE_NUMBER, 1);
    lab.feed(
        "172.31.0.1",
        ALL_SPF_ROUTERS,
        HIGH,
        Body::LsUpdate(vec![e.clone()]),
    );
    lab.advance(Duration::from_secs(2));
    lab.sent();
    // The router flushes it: the same instance at MaxAge is the more recent one.
    let flush = e.with_age(MAX_AGE);
    lab.feed(
        "172.31.0.1",
        ALL_SPF_ROUTERS,
        HIGH,
        Body::LsUpdate(vec![flush.clone()]),
    );
    assert_eq!(
        lab.inst.lsa(&e.key(), lab.now).map(|l| l.header().age),
        Some(MAX_AGE)
    );
    lab.advance(Duration::from_secs(1));
    let sent = lab.sent_bodies();
    assert_eq!(acks(&sent), vec![(ALL_SPF_ROUTERS, *flush.header())]);
    assert!(lsus(&sent).is_empty(), "not flooded again: {sent:?}");
    assert!(lab.inst.lsa(&e.key(), lab.now).is_none(), "removed");
}
