//! OSPFv2 packets and LSAs on the wire (RFC 2328 appendix A), with both checksums: the IP
//! checksum of a packet (section D.4, appendix A.3.1) and the Fletcher checksum of an LSA
//! (section 12.1.7).
//!
//! The decoder is written for hostile input: every length is checked before it is used, it
//! never panics, and it never allocates more than the input it was given can fill. Errors name
//! the packet and the field that was wrong.
//!
//! An [`Lsa`] keeps the bytes it was received (or built) as: an LSA is flooded on unchanged
//! except for its age, and its checksum covers exactly those bytes. Its body is decoded on
//! demand with [`Lsa::body`]; the speaker only needs that for the LSAs it originates and for
//! tests, since it never computes routes.
//!
//! Every packet type is decoded and encoded byte for byte: a packet that decodes re-encodes to
//! the same bytes, except that reserved fields are written as zero.

use std::fmt;
use std::net::Ipv4Addr;

/// Length of the OSPF packet header.
pub const HEADER_LEN: usize = 24;
/// Length of an LSA header.
pub const LSA_HEADER_LEN: usize = 20;
/// Length of one Link State Request entry.
pub const LS_REQUEST_LEN: usize = 12;
/// Fixed part of a Hello body (before the neighbour list).
pub const HELLO_FIXED_LEN: usize = 20;
/// Fixed part of a Database Description body (before the LSA headers).
pub const DBD_FIXED_LEN: usize = 8;
/// Length of the IPv4 header the kernel puts in front of what we send (no options).
pub const IP_HEADER_LEN: usize = 20;

/// IP protocol number of OSPF.
pub const IP_PROTOCOL: u8 = 89;
/// The multicast group every OSPF router listens on.
pub const ALL_SPF_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 5);
/// The multicast group the Designated Router and the Backup listen on.
pub const ALL_D_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 6);

/// MaxAge: an LSA this old is being flushed (RFC 2328 appendix B).
pub const MAX_AGE: u16 = 3600;
/// MaxAgeDiff: ages closer than this are the same instance (appendix B).
pub const MAX_AGE_DIFF: u16 = 900;
/// LSRefreshTime: a self-originated LSA is re-originated at this age (appendix B).
pub const LS_REFRESH_TIME: u16 = 1800;
/// The first sequence number of an LSA (section 12.1.6).
pub const INITIAL_SEQUENCE_NUMBER: i32 = i32::MIN + 1;
/// The last sequence number of an LSA (section 12.1.6).
pub const MAX_SEQUENCE_NUMBER: i32 = i32::MAX;

/// AuType 0: no authentication, the only one supported.
pub const AUTH_NULL: u16 = 0;
/// AuType 2: cryptographic authentication (appendix D.3); the packet checksum is not used.
pub const AUTH_CRYPTOGRAPHIC: u16 = 2;

/// Bits of the Options field (appendix A.2).
pub mod options {
    /// E: AS-external LSAs are flooded (the area is not a stub area).
    pub const E: u8 = 0x02;
    /// MC: multicast extensions (RFC 1584).
    pub const MC: u8 = 0x04;
    /// N/P: NSSA (RFC 3101).
    pub const NP: u8 = 0x08;
    /// L: link-local signalling data follows the packet (RFC 5613).
    pub const L: u8 = 0x10;
    /// DC: demand circuits (RFC 1793).
    pub const DC: u8 = 0x20;
    /// O: opaque LSAs (RFC 5250).
    pub const O: u8 = 0x40;
}

/// Bits of the Database Description flags (appendix A.3.3).
pub mod dbd_flags {
    /// I: the first packet of the exchange.
    pub const INIT: u8 = 0x04;
    /// M: more packets follow.
    pub const MORE: u8 = 0x02;
    /// MS: the sender is the master.
    pub const MASTER: u8 = 0x01;
}

/// Bits of the Router-LSA flags (appendix A.4.2).
pub mod router_flags {
    /// B: area border router.
    pub const B: u8 = 0x01;
    /// E: AS boundary router (originates AS-external LSAs).
    pub const E: u8 = 0x02;
    /// V: endpoint of a fully adjacent virtual link.
    pub const V: u8 = 0x04;
}

/// LS types (appendix A.4.1).
pub mod ls_type {
    /// Router-LSA.
    pub const ROUTER: u8 = 1;
    /// Network-LSA.
    pub const NETWORK: u8 = 2;
    /// Summary-LSA (IP network).
    pub const SUMMARY_NETWORK: u8 = 3;
    /// Summary-LSA (ASBR).
    pub const SUMMARY_ASBR: u8 = 4;
    /// AS-external-LSA.
    pub const AS_EXTERNAL: u8 = 5;
}

/// Router-LSA link types (appendix A.4.2).
pub mod link_type {
    /// Point-to-point connection to another router; link ID = its router ID.
    pub const POINT_TO_POINT: u8 = 1;
    /// Connection to a transit network; link ID = the DR's interface address.
    pub const TRANSIT: u8 = 2;
    /// Connection to a stub network; link ID = the network, link data = its mask.
    pub const STUB: u8 = 3;
    /// Virtual link; link ID = the neighbour's router ID.
    pub const VIRTUAL: u8 = 4;
}

// === errors ===

/// Why bytes are not a valid OSPFv2 packet or LSA. Each variant names the packet or LSA part
/// and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the field needs.
    #[error("{field}: truncated: needs {need} bytes, {have} left")]
    Truncated {
        /// The packet part and field.
        field: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A version other than 2.
    #[error("OSPF header: version {0}, expected 2")]
    Version(u8),
    /// A packet type other than 1 to 5.
    #[error("OSPF header: packet type {0} is not one of Hello, DD, LSR, LSU, LSAck (1 to 5)")]
    PacketType(u8),
    /// The packet length field disagrees with the bytes.
    #[error(
        "OSPF header: packet length {length} is shorter than the header or longer than the {available} bytes received"
    )]
    PacketLength {
        /// The length field.
        length: usize,
        /// Bytes received.
        available: usize,
    },
    /// The packet checksum does not verify.
    #[error("OSPF header: checksum 0x{found:04x} is wrong (the packet sums to 0x{expected:04x})")]
    Checksum {
        /// The checksum field.
        found: u16,
        /// The checksum of the packet's contents.
        expected: u16,
    },
    /// A list whose length is not a whole number of entries.
    #[error("{field}: {len} bytes is not a whole number of {entry}-byte entries")]
    Ragged {
        /// The packet part and field.
        field: &'static str,
        /// Bytes of the list.
        len: usize,
        /// Bytes per entry.
        entry: usize,
    },
    /// An LSA length field below the header length or beyond the packet.
    #[error(
        "{field}: LSA length {length} is shorter than the LSA header or longer than the {available} bytes left"
    )]
    LsaLength {
        /// The packet part.
        field: &'static str,
        /// The length field.
        length: usize,
        /// Bytes left in the packet.
        available: usize,
    },
    /// Bytes after the last item a count announced.
    #[error("{field}: {extra} bytes after the last entry")]
    Trailing {
        /// The packet part.
        field: &'static str,
        /// The extra bytes.
        extra: usize,
    },
}

/// Why a packet or LSA cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// It would exceed the 16-bit length field.
    #[error("{what}: {len} bytes exceed the 65535 a 16-bit length field can say")]
    TooLong {
        /// The packet or LSA.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A count or a field out of range.
    #[error("{what}: {detail}")]
    Field {
        /// The packet part and field.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
}

// === reading ===

/// A bounds-checked reader over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
    field: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], field: &'static str) -> Self {
        Self { buf, field }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                field: self.field,
                need: n,
                have: self.buf.len(),
            });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u24(&mut self) -> Result<u32, DecodeError> {
        let [a, b, c] = self.array()?;
        Ok(u32::from_be_bytes([0, a, b, c]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn addr(&mut self) -> Result<Ipv4Addr, DecodeError> {
        Ok(Ipv4Addr::from(self.array::<4>()?))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn len(&self) -> usize {
        self.buf.len()
    }

    /// Splits the rest into `entry`-byte pieces; fails unless it divides evenly.
    fn entries(&mut self, entry: usize) -> Result<std::slice::ChunksExact<'a, u8>, DecodeError> {
        let rest = self.rest();
        if !rest.len().is_multiple_of(entry) {
            return Err(DecodeError::Ragged {
                field: self.field,
                len: rest.len(),
                entry,
            });
        }
        Ok(rest.chunks_exact(entry))
    }
}

fn put_addr(out: &mut Vec<u8>, a: Ipv4Addr) {
    out.extend_from_slice(&a.octets());
}

fn put_u24(out: &mut Vec<u8>, v: u32, what: &'static str) -> Result<(), EncodeError> {
    if v > 0x00ff_ffff {
        return Err(EncodeError::Field {
            what,
            detail: format!("metric {v} does not fit in 24 bits"),
        });
    }
    out.extend_from_slice(&v.to_be_bytes()[1..]);
    Ok(())
}

fn count_u16(n: usize, what: &'static str) -> Result<u16, EncodeError> {
    u16::try_from(n).map_err(|_| EncodeError::Field {
        what,
        detail: format!("{n} entries do not fit in a 16-bit count"),
    })
}

// === checksums ===

/// The Internet checksum (RFC 1071) over `parts` taken as one sequence; every part but the
/// last must have an even length.
fn ip_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for w in part.chunks(2) {
            let word = match *w {
                [a, b] => u16::from_be_bytes([a, b]),
                [a] => u16::from_be_bytes([a, 0]),
                _ => 0,
            };
            sum += u32::from(word);
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    !(sum as u16)
}

/// The checksum of an OSPF packet (header and body): the IP checksum of the whole packet
/// except the 64-bit authentication field (bytes 16..24), with the checksum field (12..14)
/// counted as zero (RFC 2328 appendix A.3.1).
fn packet_checksum(packet: &[u8]) -> u16 {
    let part = |r: std::ops::Range<usize>| packet.get(r).unwrap_or_default();
    ip_checksum(&[
        part(0..12),
        part(14..16),
        packet.get(24..).unwrap_or_default(),
    ])
}

/// The Fletcher checksum (ISO 8473 annex C) of an LSA, as RFC 2328 section 12.1.7 defines
/// it: over the whole LSA except the LS age, with the checksum field counted as zero, placed
/// so that the LSA then sums to zero. `lsa` must hold at least the 20-byte header.
pub fn lsa_checksum(lsa: &[u8]) -> u16 {
    // The checksummed data starts after the 2-byte age; the checksum is at data[14..16].
    const AT: usize = 14;
    let data = lsa.get(2..).unwrap_or_default();
    let (mut c0, mut c1) = (0i64, 0i64);
    for (i, &b) in data.iter().enumerate() {
        let b = if i == AT || i == AT + 1 { 0 } else { b };
        c0 = (c0 + i64::from(b)) % 255;
        c1 = (c1 + c0) % 255;
    }
    // RFC 905 / ISO 8473: X = ((L - n) * C0 - C1) mod 255, Y = (C1 - (L - n + 1) * C0) mod
    // 255, n being the 1-based position of the first checksum octet.
    let len = i64::try_from(data.len()).unwrap_or(i64::MAX);
    let mut x = ((len - AT as i64 - 1) * c0 - c1) % 255;
    if x <= 0 {
        x += 255;
    }
    let mut y = 510 - c0 - x;
    if y > 255 {
        y -= 255;
    }
    // Both are in 1..=255 here.
    (((x & 0xff) as u16) << 8) | (y & 0xff) as u16
}

/// Whether an LSA's checksum verifies: its Fletcher sums over everything but the age are both
/// zero (RFC 2328 section 12.1.7). An LSA shorter than its header never verifies.
pub fn lsa_checksum_ok(lsa: &[u8]) -> bool {
    if lsa.len() < LSA_HEADER_LEN {
        return false;
    }
    let (mut c0, mut c1) = (0u32, 0u32);
    for &b in &lsa[2..] {
        c0 = (c0 + u32::from(b)) % 255;
        c1 = (c1 + c0) % 255;
    }
    c0 == 0 && c1 == 0 && lsa[16..18] != [0, 0]
}

// === LSA header and LSA ===

/// Identifies an LSA: LS type, Link State ID, Advertising Router (RFC 2328 section 12.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LsaKey {
    /// The LS type.
    pub ls_type: u8,
    /// The Link State ID.
    pub id: Ipv4Addr,
    /// The Advertising Router.
    pub adv_router: Ipv4Addr,
}

impl fmt::Display for LsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "type-{} {} from {}",
            self.ls_type, self.id, self.adv_router
        )
    }
}

/// The 20-byte LSA header (appendix A.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LsaHeader {
    /// Seconds since origination.
    pub age: u16,
    /// Options.
    pub options: u8,
    /// LS type.
    pub ls_type: u8,
    /// Link State ID.
    pub id: Ipv4Addr,
    /// Advertising Router.
    pub adv_router: Ipv4Addr,
    /// LS sequence number (signed; see section 12.1.6).
    pub seq: i32,
    /// Fletcher checksum.
    pub checksum: u16,
    /// Length of the whole LSA in bytes, header included.
    pub length: u16,
}

impl LsaHeader {
    /// The key of the LSA.
    pub fn key(&self) -> LsaKey {
        LsaKey {
            ls_type: self.ls_type,
            id: self.id,
            adv_router: self.adv_router,
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            age: r.u16()?,
            options: r.u8()?,
            ls_type: r.u8()?,
            id: r.addr()?,
            adv_router: r.addr()?,
            seq: i32::from_be_bytes(r.array()?),
            checksum: r.u16()?,
            length: r.u16()?,
        })
    }

    /// Decodes a header from its 20 bytes (or more; the rest is ignored).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::decode(&mut Reader::new(bytes, "LSA header"))
    }

    /// Appends the 20 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.age.to_be_bytes());
        out.push(self.options);
        out.push(self.ls_type);
        put_addr(out, self.id);
        put_addr(out, self.adv_router);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.checksum.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }

    /// The age, counting anything above MaxAge (e.g. the DoNotAge bit, which this speaker
    /// does not support) as MaxAge.
    pub fn effective_age(&self) -> u16 {
        self.age.min(MAX_AGE)
    }

    /// Which of two instances of one LSA is more recent (RFC 2328 section 13.1):
    /// `Greater` if `self` is.
    pub fn compare_recency(&self, other: &LsaHeader) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match self.seq.cmp(&other.seq) {
            Ordering::Equal => {}
            o => return o,
        }
        match self.checksum.cmp(&other.checksum) {
            Ordering::Equal => {}
            o => return o,
        }
        let (a, b) = (self.effective_age(), other.effective_age());
        match (a == MAX_AGE, b == MAX_AGE) {
            (true, false) => return Ordering::Greater,
            (false, true) => return Ordering::Less,
            _ => {}
        }
        if a.abs_diff(b) > MAX_AGE_DIFF {
            // The younger one is more recent.
            return b.cmp(&a);
        }
        Ordering::Equal
    }
}

/// A whole LSA as bytes, with its header decoded. Only the age changes as it is flooded;
/// [`Lsa::set_age`] patches it in place (the checksum does not cover it).
#[derive(Clone, PartialEq, Eq)]
pub struct Lsa {
    header: LsaHeader,
    bytes: Vec<u8>,
}

impl fmt::Debug for Lsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lsa")
            .field("header", &self.header)
            .field(
                "body_len",
                &(self.bytes.len().saturating_sub(LSA_HEADER_LEN)),
            )
            .finish()
    }
}

impl Lsa {
    /// Takes an LSA from its bytes: the header's length must equal `bytes.len()`. The
    /// checksum is not checked here (see [`Lsa::checksum_ok`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, DecodeError> {
        let header = LsaHeader::from_bytes(&bytes)?;
        if usize::from(header.length) != bytes.len() || bytes.len() < LSA_HEADER_LEN {
            return Err(DecodeError::LsaLength {
                field: "LSA",
                length: usize::from(header.length),
                available: bytes.len(),
            });
        }
        Ok(Self { header, bytes })
    }

    /// Builds an LSA: encodes `body`, fills in the length and the Fletcher checksum.
    pub fn build(
        age: u16,
        options: u8,
        id: Ipv4Addr,
        adv_router: Ipv4Addr,
        seq: i32,
        body: &LsaBody,
    ) -> Result<Self, EncodeError> {
        let mut bytes = Vec::with_capacity(64);
        let mut header = LsaHeader {
            age,
            options,
            ls_type: body.ls_type(),
            id,
            adv_router,
            seq,
            checksum: 0,
            length: 0,
        };
        header.encode(&mut bytes);
        body.encode(&mut bytes)?;
        header.length = u16::try_from(bytes.len()).map_err(|_| EncodeError::TooLong {
            what: "LSA",
            len: bytes.len(),
        })?;
        bytes[18..20].copy_from_slice(&header.length.to_be_bytes());
        header.checksum = lsa_checksum(&bytes);
        bytes[16..18].copy_from_slice(&header.checksum.to_be_bytes());
        Ok(Self { header, bytes })
    }

    /// The header.
    pub fn header(&self) -> &LsaHeader {
        &self.header
    }

    /// The key.
    pub fn key(&self) -> LsaKey {
        self.header.key()
    }

    /// The whole LSA, header included.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The body after the header.
    pub fn body_bytes(&self) -> &[u8] {
        self.bytes.get(LSA_HEADER_LEN..).unwrap_or_default()
    }

    /// Decodes the body according to the LS type.
    pub fn body(&self) -> Result<LsaBody, DecodeError> {
        LsaBody::decode(self.header.ls_type, self.body_bytes())
    }

    /// Whether the Fletcher checksum verifies.
    pub fn checksum_ok(&self) -> bool {
        lsa_checksum_ok(&self.bytes)
    }

    /// Sets the LS age (not covered by the checksum).
    pub fn set_age(&mut self, age: u16) {
        self.header.age = age;
        if let Some(b) = self.bytes.get_mut(0..2) {
            b.copy_from_slice(&age.to_be_bytes());
        }
    }

    /// A copy with the given age.
    pub fn with_age(&self, age: u16) -> Self {
        let mut l = self.clone();
        l.set_age(age);
        l
    }
}

// === LSA bodies ===

/// A decoded LSA body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LsaBody {
    /// Type 1.
    Router(RouterLsa),
    /// Type 2.
    Network(NetworkLsa),
    /// Type 3 or 4.
    Summary {
        /// 3 (network) or 4 (ASBR).
        ls_type: u8,
        /// The body.
        lsa: SummaryLsa,
    },
    /// Type 5.
    External(ExternalLsa),
    /// Any other type (opaque LSAs, type 7, ...), kept as bytes.
    Other {
        /// The LS type.
        ls_type: u8,
        /// The body.
        bytes: Vec<u8>,
    },
}

/// A Router-LSA body (appendix A.4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterLsa {
    /// V, E and B bits ([`router_flags`]); other bits are kept as received.
    pub flags: u8,
    /// The links.
    pub links: Vec<RouterLink>,
}

/// One link of a Router-LSA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterLink {
    /// Link ID (meaning depends on the type; see [`link_type`]).
    pub id: Ipv4Addr,
    /// Link Data.
    pub data: Ipv4Addr,
    /// Link type ([`link_type`]).
    pub link_type: u8,
    /// The TOS 0 metric.
    pub metric: u16,
    /// TOS-specific metrics (obsolete; kept for byte-exact re-encoding).
    pub tos: Vec<(u8, u16)>,
}

/// A Network-LSA body (appendix A.4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkLsa {
    /// The network mask.
    pub mask: Ipv4Addr,
    /// Router IDs of the routers fully adjacent to the DR, the DR included.
    pub routers: Vec<Ipv4Addr>,
}

/// A Summary-LSA body (appendix A.4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryLsa {
    /// The network mask (0 for type 4).
    pub mask: Ipv4Addr,
    /// The TOS 0 metric (24 bits).
    pub metric: u32,
    /// TOS-specific metrics.
    pub tos: Vec<(u8, u32)>,
}

/// An AS-external-LSA body (appendix A.4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalLsa {
    /// The network mask.
    pub mask: Ipv4Addr,
    /// The TOS 0 entry first, then TOS-specific ones.
    pub entries: Vec<ExternalMetric>,
}

/// One metric entry of an AS-external-LSA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalMetric {
    /// E bit: a type 2 external metric.
    pub type2: bool,
    /// TOS (7 bits).
    pub tos: u8,
    /// The metric (24 bits).
    pub metric: u32,
    /// Forwarding address (0: forward to the originator).
    pub forwarding: Ipv4Addr,
    /// External route tag.
    pub tag: u32,
}

impl LsaBody {
    /// The LS type this body belongs to.
    pub fn ls_type(&self) -> u8 {
        match self {
            LsaBody::Router(_) => ls_type::ROUTER,
            LsaBody::Network(_) => ls_type::NETWORK,
            LsaBody::Summary { ls_type, .. } | LsaBody::Other { ls_type, .. } => *ls_type,
            LsaBody::External(_) => ls_type::AS_EXTERNAL,
        }
    }

    /// Decodes the body of an LSA of type `ls_type`.
    pub fn decode(ls_type: u8, bytes: &[u8]) -> Result<Self, DecodeError> {
        match ls_type {
            ls_type::ROUTER => {
                let mut r = Reader::new(bytes, "Router-LSA");
                let flags = r.u8()?;
                let _reserved = r.u8()?;
                let count = r.u16()?;
                let mut links = Vec::with_capacity(usize::from(count).min(r.len() / 12));
                let mut r = Reader::new(r.rest(), "Router-LSA link");
                for _ in 0..count {
                    let id = r.addr()?;
                    let data = r.addr()?;
                    let link_type = r.u8()?;
                    let ntos = r.u8()?;
                    let metric = r.u16()?;
                    let mut tos = Vec::with_capacity(usize::from(ntos).min(r.len() / 4));
                    for _ in 0..ntos {
                        let t = r.u8()?;
                        let _reserved = r.u8()?;
                        tos.push((t, r.u16()?));
                    }
                    links.push(RouterLink {
                        id,
                        data,
                        link_type,
                        metric,
                        tos,
                    });
                }
                if !r.is_empty() {
                    return Err(DecodeError::Trailing {
                        field: "Router-LSA",
                        extra: r.len(),
                    });
                }
                Ok(LsaBody::Router(RouterLsa { flags, links }))
            }
            ls_type::NETWORK => {
                let mut r = Reader::new(bytes, "Network-LSA");
                let mask = r.addr()?;
                let routers = r
                    .entries(4)?
                    .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                    .collect();
                Ok(LsaBody::Network(NetworkLsa { mask, routers }))
            }
            ls_type::SUMMARY_NETWORK | ls_type::SUMMARY_ASBR => {
                let mut r = Reader::new(bytes, "Summary-LSA");
                let mask = r.addr()?;
                let _reserved = r.u8()?;
                let metric = r.u24()?;
                let mut tos = Vec::new();
                for c in r.entries(4)? {
                    tos.push((c[0], u32::from_be_bytes([0, c[1], c[2], c[3]])));
                }
                Ok(LsaBody::Summary {
                    ls_type,
                    lsa: SummaryLsa { mask, metric, tos },
                })
            }
            ls_type::AS_EXTERNAL => {
                let mut r = Reader::new(bytes, "AS-external-LSA");
                let mask = r.addr()?;
                if r.is_empty() {
                    return Err(DecodeError::Truncated {
                        field: "AS-external-LSA TOS 0 metric",
                        need: 12,
                        have: 0,
                    });
                }
                let mut entries = Vec::new();
                for c in r.entries(12)? {
                    entries.push(ExternalMetric {
                        type2: c[0] & 0x80 != 0,
                        tos: c[0] & 0x7f,
                        metric: u32::from_be_bytes([0, c[1], c[2], c[3]]),
                        forwarding: Ipv4Addr::new(c[4], c[5], c[6], c[7]),
                        tag: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
                    });
                }
                Ok(LsaBody::External(ExternalLsa { mask, entries }))
            }
            other => Ok(LsaBody::Other {
                ls_type: other,
                bytes: bytes.to_vec(),
            }),
        }
    }

    /// Appends the encoded body.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            LsaBody::Router(r) => {
                out.push(r.flags);
                out.push(0);
                out.extend_from_slice(&count_u16(r.links.len(), "Router-LSA links")?.to_be_bytes());
                for l in &r.links {
                    put_addr(out, l.id);
                    put_addr(out, l.data);
                    out.push(l.link_type);
                    out.push(u8::try_from(l.tos.len()).map_err(|_| EncodeError::Field {
                        what: "Router-LSA link TOS metrics",
                        detail: format!("{} do not fit in an 8-bit count", l.tos.len()),
                    })?);
                    out.extend_from_slice(&l.metric.to_be_bytes());
                    for (tos, metric) in &l.tos {
                        out.push(*tos);
                        out.push(0);
                        out.extend_from_slice(&metric.to_be_bytes());
                    }
                }
            }
            LsaBody::Network(n) => {
                put_addr(out, n.mask);
                for r in &n.routers {
                    put_addr(out, *r);
                }
            }
            LsaBody::Summary { lsa, .. } => {
                put_addr(out, lsa.mask);
                out.push(0);
                put_u24(out, lsa.metric, "Summary-LSA metric")?;
                for (tos, metric) in &lsa.tos {
                    out.push(*tos);
                    put_u24(out, *metric, "Summary-LSA TOS metric")?;
                }
            }
            LsaBody::External(e) => {
                put_addr(out, e.mask);
                if e.entries.is_empty() {
                    return Err(EncodeError::Field {
                        what: "AS-external-LSA",
                        detail: "needs at least the TOS 0 metric".into(),
                    });
                }
                for m in &e.entries {
                    out.push(if m.type2 { 0x80 } else { 0 } | (m.tos & 0x7f));
                    put_u24(out, m.metric, "AS-external-LSA metric")?;
                    put_addr(out, m.forwarding);
                    out.extend_from_slice(&m.tag.to_be_bytes());
                }
            }
            LsaBody::Other { bytes, .. } => out.extend_from_slice(bytes),
        }
        Ok(())
    }
}

// === packets ===

/// An OSPFv2 packet (appendix A.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The sender's router ID.
    pub router_id: Ipv4Addr,
    /// The area the packet belongs to.
    pub area_id: Ipv4Addr,
    /// Authentication type (only [`AUTH_NULL`] is accepted by the speaker).
    pub auth_type: u16,
    /// The 64-bit authentication field.
    pub auth: [u8; 8],
    /// The body.
    pub body: Body,
}

/// The body of a packet, by type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Type 1.
    Hello(Hello),
    /// Type 2.
    DbDescription(DbDescription),
    /// Type 3.
    LsRequest(Vec<LsRequest>),
    /// Type 4.
    LsUpdate(Vec<Lsa>),
    /// Type 5.
    LsAck(Vec<LsaHeader>),
}

impl Body {
    /// The packet type number.
    pub fn type_code(&self) -> u8 {
        match self {
            Body::Hello(_) => 1,
            Body::DbDescription(_) => 2,
            Body::LsRequest(_) => 3,
            Body::LsUpdate(_) => 4,
            Body::LsAck(_) => 5,
        }
    }

    /// The packet type's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Hello(_) => "Hello",
            Body::DbDescription(_) => "Database Description",
            Body::LsRequest(_) => "Link State Request",
            Body::LsUpdate(_) => "Link State Update",
            Body::LsAck(_) => "Link State Acknowledgment",
        }
    }
}

/// A Hello body (appendix A.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sending interface's network mask.
    pub network_mask: Ipv4Addr,
    /// HelloInterval in seconds.
    pub hello_interval: u16,
    /// Options.
    pub options: u8,
    /// Router priority.
    pub priority: u8,
    /// RouterDeadInterval in seconds.
    pub dead_interval: u32,
    /// The Designated Router's interface address (0.0.0.0: none).
    pub dr: Ipv4Addr,
    /// The Backup Designated Router's interface address (0.0.0.0: none).
    pub bdr: Ipv4Addr,
    /// Router IDs of the routers heard from within the dead interval.
    pub neighbors: Vec<Ipv4Addr>,
}

/// A Database Description body (appendix A.3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbDescription {
    /// The largest IP datagram the sending interface can send unfragmented.
    pub interface_mtu: u16,
    /// Options.
    pub options: u8,
    /// I, M and MS bits ([`dbd_flags`]); other bits are kept as received.
    pub flags: u8,
    /// DD sequence number.
    pub seq: u32,
    /// LSA headers.
    pub lsa_headers: Vec<LsaHeader>,
}

impl DbDescription {
    /// The I bit.
    pub fn init(&self) -> bool {
        self.flags & dbd_flags::INIT != 0
    }
    /// The M bit.
    pub fn more(&self) -> bool {
        self.flags & dbd_flags::MORE != 0
    }
    /// The MS bit.
    pub fn master(&self) -> bool {
        self.flags & dbd_flags::MASTER != 0
    }
}

/// One Link State Request entry (appendix A.3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LsRequest {
    /// LS type (a 32-bit field on the wire).
    pub ls_type: u32,
    /// Link State ID.
    pub id: Ipv4Addr,
    /// Advertising Router.
    pub adv_router: Ipv4Addr,
}

impl Packet {
    /// Decodes one packet: `bytes` is the IP payload. Bytes after the length the header gives
    /// (such as RFC 5613 link-local signalling, or cryptographic authentication data) are
    /// ignored. The checksum is verified unless the AuType is cryptographic.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "OSPF header");
        let version = r.u8()?;
        if version != 2 {
            return Err(DecodeError::Version(version));
        }
        let ptype = r.u8()?;
        if !(1..=5).contains(&ptype) {
            return Err(DecodeError::PacketType(ptype));
        }
        let length = usize::from(r.u16()?);
        let router_id = r.addr()?;
        let area_id = r.addr()?;
        let checksum = r.u16()?;
        let auth_type = r.u16()?;
        let auth = r.array::<8>()?;
        if length < HEADER_LEN || length > bytes.len() {
            return Err(DecodeError::PacketLength {
                length,
                available: bytes.len(),
            });
        }
        let packet = &bytes[..length];
        if auth_type != AUTH_CRYPTOGRAPHIC {
            let expected = packet_checksum(packet);
            if expected != checksum {
                return Err(DecodeError::Checksum {
                    found: checksum,
                    expected,
                });
            }
        }
        let body = &packet[HEADER_LEN..];
        let body = match ptype {
            1 => Body::Hello(decode_hello(body)?),
            2 => Body::DbDescription(decode_dbd(body)?),
            3 => {
                let mut r = Reader::new(body, "Link State Request");
                let entries = r.entries(LS_REQUEST_LEN)?;
                Body::LsRequest(
                    entries
                        .map(|c| LsRequest {
                            ls_type: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                            id: Ipv4Addr::new(c[4], c[5], c[6], c[7]),
                            adv_router: Ipv4Addr::new(c[8], c[9], c[10], c[11]),
                        })
                        .collect(),
                )
            }
            4 => Body::LsUpdate(decode_lsu(body)?),
            _ => {
                let mut r = Reader::new(body, "Link State Acknowledgment");
                let mut headers = Vec::with_capacity(body.len() / LSA_HEADER_LEN);
                for c in r.entries(LSA_HEADER_LEN)? {
                    headers.push(LsaHeader::decode(&mut Reader::new(
                        c,
                        "Link State Acknowledgment LSA header",
                    ))?);
                }
                Body::LsAck(headers)
            }
        };
        Ok(Packet {
            router_id,
            area_id,
            auth_type,
            auth,
            body,
        })
    }

    /// Encodes the packet with its length and checksum (zero for cryptographic AuType, whose
    /// digest is not produced here).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(128);
        out.push(2);
        out.push(self.body.type_code());
        out.extend_from_slice(&[0, 0]);
        put_addr(&mut out, self.router_id);
        put_addr(&mut out, self.area_id);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.auth_type.to_be_bytes());
        out.extend_from_slice(&self.auth);
        match &self.body {
            Body::Hello(h) => {
                put_addr(&mut out, h.network_mask);
                out.extend_from_slice(&h.hello_interval.to_be_bytes());
                out.push(h.options);
                out.push(h.priority);
                out.extend_from_slice(&h.dead_interval.to_be_bytes());
                put_addr(&mut out, h.dr);
                put_addr(&mut out, h.bdr);
                for n in &h.neighbors {
                    put_addr(&mut out, *n);
                }
            }
            Body::DbDescription(d) => {
                out.extend_from_slice(&d.interface_mtu.to_be_bytes());
                out.push(d.options);
                out.push(d.flags);
                out.extend_from_slice(&d.seq.to_be_bytes());
                for h in &d.lsa_headers {
                    h.encode(&mut out);
                }
            }
            Body::LsRequest(reqs) => {
                for q in reqs {
                    out.extend_from_slice(&q.ls_type.to_be_bytes());
                    put_addr(&mut out, q.id);
                    put_addr(&mut out, q.adv_router);
                }
            }
            Body::LsUpdate(lsas) => {
                let count = u32::try_from(lsas.len()).map_err(|_| EncodeError::Field {
                    what: "Link State Update",
                    detail: "too many LSAs".into(),
                })?;
                out.extend_from_slice(&count.to_be_bytes());
                for l in lsas {
                    out.extend_from_slice(l.bytes());
                }
            }
            Body::LsAck(headers) => {
                for h in headers {
                    h.encode(&mut out);
                }
            }
        }
        let len = u16::try_from(out.len()).map_err(|_| EncodeError::TooLong {
            what: self.body.name(),
            len: out.len(),
        })?;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        if self.auth_type != AUTH_CRYPTOGRAPHIC {
            let sum = packet_checksum(&out);
            out[12..14].copy_from_slice(&sum.to_be_bytes());
        }
        Ok(out)
    }
}

fn decode_hello(body: &[u8]) -> Result<Hello, DecodeError> {
    let mut r = Reader::new(body, "Hello");
    let network_mask = r.addr()?;
    let hello_interval = r.u16()?;
    let options = r.u8()?;
    let priority = r.u8()?;
    let dead_interval = r.u32()?;
    let dr = r.addr()?;
    let bdr = r.addr()?;
    let mut r = Reader::new(r.rest(), "Hello neighbor list");
    let neighbors = r
        .entries(4)?
        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
        .collect();
    Ok(Hello {
        network_mask,
        hello_interval,
        options,
        priority,
        dead_interval,
        dr,
        bdr,
        neighbors,
    })
}

fn decode_dbd(body: &[u8]) -> Result<DbDescription, DecodeError> {
    let mut r = Reader::new(body, "Database Description");
    let interface_mtu = r.u16()?;
    let options = r.u8()?;
    let flags = r.u8()?;
    let seq = r.u32()?;
    let mut r = Reader::new(r.rest(), "Database Description LSA headers");
    let mut lsa_headers = Vec::with_capacity(r.len() / LSA_HEADER_LEN);
    for c in r.entries(LSA_HEADER_LEN)? {
        lsa_headers.push(LsaHeader::decode(&mut Reader::new(
            c,
            "Database Description LSA header",
        ))?);
    }
    Ok(DbDescription {
        interface_mtu,
        options,
        flags,
        seq,
        lsa_headers,
    })
}

fn decode_lsu(body: &[u8]) -> Result<Vec<Lsa>, DecodeError> {
    let mut r = Reader::new(body, "Link State Update");
    let count = r.u32()?;
    let mut lsas = Vec::with_capacity(r.len() / LSA_HEADER_LEN);
    let mut r = Reader::new(r.rest(), "Link State Update LSA header");
    for _ in 0..count {
        let header = {
            let mut peek = Reader::new(r.buf, "Link State Update LSA header");
            LsaHeader::decode(&mut peek)?
        };
        let length = usize::from(header.length);
        if length < LSA_HEADER_LEN || length > r.len() {
            return Err(DecodeError::LsaLength {
                field: "Link State Update",
                length,
                available: r.len(),
            });
        }
        let bytes = r.take(length)?.to_vec();
        lsas.push(Lsa { header, bytes });
    }
    if !r.is_empty() {
        return Err(DecodeError::Trailing {
            field: "Link State Update",
            extra: r.len(),
        });
    }
    Ok(lsas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn external(vip: &str, seq: i32) -> Lsa {
        Lsa::build(
            0,
            options::E,
            ip(vip),
            ip("10.0.0.2"),
            seq,
            &LsaBody::External(ExternalLsa {
                mask: ip("255.255.255.255"),
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

    /// The IP checksum example of RFC 1071 section 3: the words sum to 0xddf2, so the checksum
    /// is its complement.
    #[test]
    fn ip_checksum_matches_rfc_1071() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ip_checksum(&[&data]), !0xddf2u16);
        assert_eq!(ip_checksum(&[&data[..2], &data[2..]]), !0xddf2u16);
    }

    /// An LSA the way RFC 2328 section 12.1.7 defines its checksum: the Fletcher sums over
    /// everything but the age come out zero, whatever the age.
    #[test]
    fn built_lsas_verify_and_corruption_is_caught() {
        let lsa = external("198.51.100.10", INITIAL_SEQUENCE_NUMBER);
        assert!(lsa.checksum_ok());
        assert!(lsa.with_age(MAX_AGE).checksum_ok(), "age is not covered");
        for i in 2..lsa.bytes().len() {
            let mut bad = lsa.bytes().to_vec();
            bad[i] ^= 0x01;
            assert!(!lsa_checksum_ok(&bad), "flip in byte {i} not caught");
        }
    }

    fn unhex(hex: &str) -> Vec<u8> {
        let hex: String = hex.split_whitespace().collect();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Known vectors: three LSAs BIRD 2.0.12 originated, as captured on the wire
    /// (tests/data/ospf/bird-ptp-06-lsu-t1t5.hex and bird-broadcast-08-lsu-t2.hex), with the
    /// checksums BIRD's own Fletcher code computed. Ours gives the same, they verify, and
    /// they decode to what BIRD was configured with.
    #[test]
    fn checksums_match_bird() {
        let vectors = [
            // Router-LSA 172.31.250.1: E bit, one stub link 172.31.250.0/30 cost 10.
            (
                "0001 4201 ac1ffa01 ac1ffa01 80000001 2192 0024 0200 0001 ac1ffa00 fffffffc 0300 000a",
                0x2192,
            ),
            // AS-external-LSA 203.0.113.0/24, E2 metric 10000.
            (
                "0001 0205 cb007100 ac1ffa01 80000001 bcd9 0024 ffffff00 80002710 00000000 00000000",
                0xbcd9,
            ),
            // Network-LSA of 172.31.251.0/24 with BIRD (DR) and our speaker attached.
            (
                "0001 4202 ac1ffb01 ac1ffb01 80000001 11e4 0020 ffffff00 ac1ffb01 ac1ffb02",
                0x11e4,
            ),
        ];
        for (hex, checksum) in vectors {
            let bytes = unhex(hex);
            assert!(lsa_checksum_ok(&bytes), "{hex}");
            assert_eq!(lsa_checksum(&bytes), checksum, "{hex}");
            let lsa = Lsa::from_bytes(bytes.clone()).unwrap();
            let body = lsa.body().unwrap();
            let mut again = Vec::new();
            body.encode(&mut again).unwrap();
            assert_eq!(again, lsa.body_bytes());
            let rebuilt = Lsa::build(
                lsa.header().age,
                lsa.header().options,
                lsa.header().id,
                lsa.header().adv_router,
                lsa.header().seq,
                &body,
            )
            .unwrap();
            assert_eq!(rebuilt.bytes(), &bytes[..], "{hex}");
        }
        match Lsa::from_bytes(unhex(vectors[1].0))
            .unwrap()
            .body()
            .unwrap()
        {
            LsaBody::External(e) => {
                assert_eq!(e.mask, ip("255.255.255.0"));
                assert_eq!(
                    e.entries,
                    vec![ExternalMetric {
                        type2: true,
                        tos: 0,
                        metric: 10000,
                        forwarding: Ipv4Addr::UNSPECIFIED,
                        tag: 0
                    }]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn checksum_never_zero_and_always_verifies() {
        // Every length and a spread of contents: the computed checksum makes the LSA verify.
        for len in [20usize, 21, 24, 36, 37, 100, 255, 256, 1000] {
            for seed in 0..50u32 {
                let mut b: Vec<u8> = (0..len)
                    .map(|i| (i as u32).wrapping_mul(seed).wrapping_add(seed * 7) as u8)
                    .collect();
                b[18..20].copy_from_slice(&(len as u16).to_be_bytes());
                let c = lsa_checksum(&b);
                b[16..18].copy_from_slice(&c.to_be_bytes());
                assert!(lsa_checksum_ok(&b), "len {len} seed {seed}");
                assert_ne!(c & 0xff00, 0);
                assert_ne!(c & 0x00ff, 0);
            }
        }
    }

    #[test]
    fn packets_round_trip() {
        let lsa = external("198.51.100.10", 5);
        let packets = vec![
            Body::Hello(Hello {
                network_mask: ip("255.255.255.0"),
                hello_interval: 10,
                options: options::E,
                priority: 1,
                dead_interval: 40,
                dr: ip("10.0.0.1"),
                bdr: Ipv4Addr::UNSPECIFIED,
                neighbors: vec![ip("1.1.1.1"), ip("2.2.2.2")],
            }),
            Body::DbDescription(DbDescription {
                interface_mtu: 1500,
                options: options::E,
                flags: dbd_flags::INIT | dbd_flags::MORE | dbd_flags::MASTER,
                seq: 0xdead_beef,
                lsa_headers: vec![*lsa.header()],
            }),
            Body::LsRequest(vec![LsRequest {
                ls_type: 5,
                id: ip("198.51.100.10"),
                adv_router: ip("10.0.0.2"),
            }]),
            Body::LsUpdate(vec![lsa.clone(), lsa.with_age(MAX_AGE)]),
            Body::LsAck(vec![*lsa.header()]),
        ];
        for body in packets {
            let p = Packet {
                router_id: ip("10.0.0.2"),
                area_id: Ipv4Addr::UNSPECIFIED,
                auth_type: AUTH_NULL,
                auth: [0; 8],
                body,
            };
            let bytes = p.encode().unwrap();
            assert_eq!(Packet::decode(&bytes).unwrap(), p);
            // Trailing bytes (LLS data) are ignored.
            let mut longer = bytes.clone();
            longer.extend_from_slice(&[1, 2, 3, 4]);
            assert_eq!(Packet::decode(&longer).unwrap(), p);
            // Every truncation is an error, never a panic.
            for n in 0..bytes.len() {
                assert!(Packet::decode(&bytes[..n]).is_err(), "{n} bytes");
            }
            // A flipped bit is caught by the checksum (or by the parser).
            for i in (0..bytes.len()).filter(|i| !(16..24).contains(i)) {
                let mut bad = bytes.clone();
                bad[i] ^= 0x40;
                assert_ne!(Packet::decode(&bad).ok().as_ref(), Some(&p), "byte {i}");
            }
        }
    }

    #[test]
    fn errors_name_the_field() {
        let hello = Packet {
            router_id: ip("10.0.0.2"),
            area_id: Ipv4Addr::UNSPECIFIED,
            auth_type: AUTH_NULL,
            auth: [0; 8],
            body: Body::Hello(Hello {
                network_mask: ip("255.255.255.0"),
                hello_interval: 10,
                options: 2,
                priority: 1,
                dead_interval: 40,
                dr: Ipv4Addr::UNSPECIFIED,
                bdr: Ipv4Addr::UNSPECIFIED,
                neighbors: vec![],
            }),
        };
        let mut b = hello.encode().unwrap();
        b.extend_from_slice(&[1, 2]);
        let len = (b.len() as u16).to_be_bytes();
        b[2..4].copy_from_slice(&len);
        let sum = packet_checksum(&b);
        b[12..14].copy_from_slice(&sum.to_be_bytes());
        let e = Packet::decode(&b).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Hello neighbor list: 2 bytes is not a whole number of 4-byte entries"
        );
        b[0] = 3;
        assert_eq!(Packet::decode(&b).unwrap_err(), DecodeError::Version(3));
    }

    #[test]
    fn lsu_with_huge_count_is_an_error_not_an_allocation() {
        let p = Packet {
            router_id: ip("10.0.0.2"),
            area_id: Ipv4Addr::UNSPECIFIED,
            auth_type: AUTH_NULL,
            auth: [0; 8],
            body: Body::LsUpdate(vec![]),
        };
        let mut b = p.encode().unwrap();
        b[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
        let sum = packet_checksum(&b);
        b[12..14].copy_from_slice(&sum.to_be_bytes());
        assert!(matches!(
            Packet::decode(&b),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn recency_follows_section_13_1() {
        use std::cmp::Ordering::*;
        let a = *external("198.51.100.10", 5).header();
        let mut b = a;
        b.seq = 6;
        assert_eq!(b.compare_recency(&a), Greater);
        let mut c = a;
        c.age = MAX_AGE;
        assert_eq!(c.compare_recency(&a), Greater, "MaxAge wins at equal seq");
        let mut d = a;
        d.age = MAX_AGE_DIFF + 1;
        assert_eq!(a.compare_recency(&d), Greater, "much younger wins");
        d.age = MAX_AGE_DIFF;
        assert_eq!(a.compare_recency(&d), Equal);
        let mut e = a;
        e.checksum = a.checksum.wrapping_add(1);
        assert_eq!(e.compare_recency(&a), Greater);
        let mut f = a;
        f.seq = INITIAL_SEQUENCE_NUMBER;
        assert_eq!(
            a.compare_recency(&f),
            Greater,
            "sequence numbers are signed"
        );
    }

    #[test]
    fn bodies_round_trip() {
        let bodies = vec![
            LsaBody::Router(RouterLsa {
                flags: router_flags::E,
                links: vec![
                    RouterLink {
                        id: ip("1.1.1.1"),
                        data: ip("10.0.0.2"),
                        link_type: link_type::POINT_TO_POINT,
                        metric: 10,
                        tos: vec![(8, 20)],
                    },
                    RouterLink {
                        id: ip("10.0.0.0"),
                        data: ip("255.255.255.252"),
                        link_type: link_type::STUB,
                        metric: 10,
                        tos: vec![],
                    },
                ],
            }),
            LsaBody::Network(NetworkLsa {
                mask: ip("255.255.255.0"),
                routers: vec![ip("1.1.1.1"), ip("2.2.2.2")],
            }),
            LsaBody::Summary {
                ls_type: 3,
                lsa: SummaryLsa {
                    mask: ip("255.255.0.0"),
                    metric: 0xabcdef,
                    tos: vec![(2, 7)],
                },
            },
            LsaBody::Other {
                ls_type: 10,
                bytes: vec![1, 2, 3, 4],
            },
        ];
        for body in bodies {
            let lsa = Lsa::build(1, 2, ip("1.2.3.4"), ip("5.6.7.8"), 9, &body).unwrap();
            assert!(lsa.checksum_ok());
            assert_eq!(lsa.body().unwrap(), body);
            assert_eq!(Lsa::from_bytes(lsa.bytes().to_vec()).unwrap(), lsa);
        }
    }

    /// Every packet BIRD sent in the capture lab (tests/data/ospf/, see the README there)
    /// decodes, re-encodes to the same bytes, and every LSA in it verifies, decodes and
    /// re-encodes to the same body.
    #[test]
    fn every_captured_packet_decodes_and_re_encodes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ospf");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "hex"))
            .collect();
        files.sort();
        let mut kinds = std::collections::BTreeSet::new();
        let mut lsa_types = std::collections::BTreeSet::new();
        for path in &files {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = unhex(&std::fs::read_to_string(path).unwrap());
            let p = Packet::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(p.encode().unwrap(), bytes, "{name}: re-encoding");
            assert_eq!(p.auth_type, AUTH_NULL, "{name}");
            assert_eq!(p.area_id, Ipv4Addr::UNSPECIFIED, "{name}");
            kinds.insert(p.body.type_code());
            let expected = match &p.body {
                Body::Hello(h) => {
                    assert_eq!((h.hello_interval, h.dead_interval), (1, 4), "{name}");
                    assert_ne!(h.options & options::E, 0, "{name}: E bit");
                    "hello"
                }
                Body::DbDescription(d) => {
                    for h in &d.lsa_headers {
                        lsa_types.insert(h.ls_type);
                    }
                    "dd"
                }
                Body::LsRequest(r) => {
                    assert!(!r.is_empty(), "{name}");
                    "lsr"
                }
                Body::LsUpdate(lsas) => {
                    for l in lsas {
                        assert!(l.checksum_ok(), "{name}: LSA {} checksum", l.key());
                        let body = l
                            .body()
                            .unwrap_or_else(|e| panic!("{name}: {}: {e}", l.key()));
                        assert!(!matches!(body, LsaBody::Other { .. }), "{name}");
                        let mut again = Vec::new();
                        body.encode(&mut again).unwrap();
                        assert_eq!(again, l.body_bytes(), "{name}: LSA {} body", l.key());
                        lsa_types.insert(l.header().ls_type);
                    }
                    "lsu"
                }
                Body::LsAck(a) => {
                    assert!(!a.is_empty(), "{name}");
                    "lsack"
                }
            };
            assert!(name.contains(expected), "{name} holds a {expected} packet");
            if name.contains("maxage") {
                let Body::LsUpdate(lsas) = &p.body else {
                    unreachable!()
                };
                assert!(lsas.iter().any(|l| l.header().age == MAX_AGE), "{name}");
            }
        }
        assert!(files.len() >= 10, "captures present: {files:?}");
        assert_eq!(kinds.len(), 5, "all five packet types");
        for t in [1, 2, 5] {
            assert!(lsa_types.contains(&t), "an LSA of type {t}");
        }
    }
}
