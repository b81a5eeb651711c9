//! BGP-4 message encoding and decoding (RFC 4271 section 4), with the capabilities and path
//! attributes a VIP speaker needs: 4-octet AS numbers (RFC 6793), multiprotocol extensions
//! (RFC 4760) for IPv4/IPv6 unicast, and route refresh (RFC 2918).
//!
//! The decoder is written for hostile input: it never panics and never indexes without a bounds
//! check. Anything it does not understand but may legally ignore (unknown capabilities, unknown
//! optional attributes, other address families in MP_REACH/MP_UNREACH) is kept as raw bytes.
//! Anything malformed is returned as a [`DecodeError`] that carries the NOTIFICATION
//! (error code, subcode, data) the RFC prescribes, so the session can send it and close.
//!
//! We decode received UPDATEs only to check them: the speaker announces, it never installs
//! routes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Length of the fixed header: 16-byte marker, 2-byte length, 1-byte type.
pub const HEADER_LEN: usize = 19;
/// Largest BGP message without the extended message capability (RFC 4271 section 4.1).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// The 2-octet AS number placed in OPEN's "My AS" when the real one does not fit (RFC 6793).
pub const AS_TRANS: u16 = 23456;

/// Message type codes.
const TYPE_OPEN: u8 = 1;
const TYPE_UPDATE: u8 = 2;
const TYPE_NOTIFICATION: u8 = 3;
const TYPE_KEEPALIVE: u8 = 4;
const TYPE_ROUTE_REFRESH: u8 = 5;

/// Address family identifiers (IANA).
pub const AFI_IPV4: u16 = 1;
/// IPv6 address family.
pub const AFI_IPV6: u16 = 2;
/// Unicast sub-address family.
pub const SAFI_UNICAST: u8 = 1;

/// Path attribute type codes.
const ATTR_ORIGIN: u8 = 1;
const ATTR_AS_PATH: u8 = 2;
const ATTR_NEXT_HOP: u8 = 3;
const ATTR_MED: u8 = 4;
const ATTR_LOCAL_PREF: u8 = 5;
const ATTR_ATOMIC_AGGREGATE: u8 = 6;
const ATTR_AGGREGATOR: u8 = 7;
const ATTR_MP_REACH: u8 = 14;
const ATTR_MP_UNREACH: u8 = 15;

/// Attribute flag bits.
const FLAG_OPTIONAL: u8 = 0x80;
const FLAG_TRANSITIVE: u8 = 0x40;
const FLAG_PARTIAL: u8 = 0x20;
const FLAG_EXTENDED_LENGTH: u8 = 0x10;

/// NOTIFICATION error codes (RFC 4271 section 4.5, RFC 7313).
pub mod code {
    /// Message Header Error.
    pub const HEADER: u8 = 1;
    /// OPEN Message Error.
    pub const OPEN: u8 = 2;
    /// UPDATE Message Error.
    pub const UPDATE: u8 = 3;
    /// Hold Timer Expired.
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    /// Finite State Machine Error.
    pub const FSM: u8 = 5;
    /// Cease.
    pub const CEASE: u8 = 6;
    /// ROUTE-REFRESH Message Error (RFC 7313).
    pub const ROUTE_REFRESH: u8 = 7;
}

/// NOTIFICATION error subcodes, grouped by error code.
pub mod subcode {
    /// Header: Connection Not Synchronized (bad marker).
    pub const NOT_SYNCHRONIZED: u8 = 1;
    /// Header: Bad Message Length.
    pub const BAD_LENGTH: u8 = 2;
    /// Header: Bad Message Type.
    pub const BAD_TYPE: u8 = 3;
    /// OPEN: Unsupported Version Number.
    pub const UNSUPPORTED_VERSION: u8 = 1;
    /// OPEN: Bad Peer AS.
    pub const BAD_PEER_AS: u8 = 2;
    /// OPEN: Bad BGP Identifier.
    pub const BAD_BGP_ID: u8 = 3;
    /// OPEN: Unsupported Optional Parameter.
    pub const UNSUPPORTED_OPT_PARAM: u8 = 4;
    /// OPEN: Unacceptable Hold Time.
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    /// UPDATE: Malformed Attribute List.
    pub const MALFORMED_ATTR_LIST: u8 = 1;
    /// UPDATE: Unrecognized Well-known Attribute.
    pub const UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    /// UPDATE: Missing Well-known Attribute.
    pub const MISSING_WELL_KNOWN: u8 = 3;
    /// UPDATE: Attribute Flags Error.
    pub const ATTR_FLAGS: u8 = 4;
    /// UPDATE: Attribute Length Error.
    pub const ATTR_LENGTH: u8 = 5;
    /// UPDATE: Invalid ORIGIN Attribute.
    pub const INVALID_ORIGIN: u8 = 6;
    /// UPDATE: Invalid NEXT_HOP Attribute.
    pub const INVALID_NEXT_HOP: u8 = 8;
    /// UPDATE: Optional Attribute Error.
    pub const OPTIONAL_ATTR: u8 = 9;
    /// UPDATE: Invalid Network Field.
    pub const INVALID_NETWORK: u8 = 10;
    /// UPDATE: Malformed AS_PATH.
    pub const MALFORMED_AS_PATH: u8 = 11;
    /// FSM: Receive Unexpected Message in OpenSent State (RFC 6608).
    pub const FSM_IN_OPENSENT: u8 = 1;
    /// FSM: Receive Unexpected Message in OpenConfirm State (RFC 6608).
    pub const FSM_IN_OPENCONFIRM: u8 = 2;
    /// FSM: Receive Unexpected Message in Established State (RFC 6608).
    pub const FSM_IN_ESTABLISHED: u8 = 3;
    /// Cease: Administrative Shutdown (RFC 4486).
    pub const ADMIN_SHUTDOWN: u8 = 2;
    /// Cease: Connection Collision Resolution (RFC 4486).
    pub const COLLISION: u8 = 7;
    /// ROUTE-REFRESH: Invalid Message Length (RFC 7313).
    pub const INVALID_RR_LENGTH: u8 = 1;
}

/// A prefix as carried in NLRI: an address and a prefix length. Host bits beyond the length are
/// zero after decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length in bits (0..=32 or 0..=128).
    pub len: u8,
}

impl Prefix {
    /// The host route for an address: /32 for IPv4, /128 for IPv6.
    pub fn host(addr: IpAddr) -> Self {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, len }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A BGP capability from an OPEN message (RFC 5492).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Multiprotocol extensions (code 1, RFC 4760).
    Multiprotocol {
        /// Address family.
        afi: u16,
        /// Subsequent address family.
        safi: u8,
    },
    /// Route refresh (code 2, RFC 2918).
    RouteRefresh,
    /// Support for 4-octet AS numbers, with the speaker's AS (code 65, RFC 6793).
    FourOctetAs(u32),
    /// Any other capability, kept as received.
    Unknown {
        /// Capability code.
        code: u8,
        /// Capability value.
        value: Vec<u8>,
    },
}

/// An OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// Protocol version, 4.
    pub version: u8,
    /// The 2-octet "My Autonomous System" field (AS_TRANS for a 4-octet AS).
    pub my_as: u16,
    /// Proposed hold time in seconds.
    pub hold_time: u16,
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Capabilities from all capability optional parameters, in order.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// The OPEN a speaker with AS `asn` sends: AS_TRANS in "My AS" when `asn` does not fit in
    /// two octets, and the 4-octet AS capability always.
    pub fn new(
        asn: u32,
        hold_time: u16,
        bgp_id: Ipv4Addr,
        mut capabilities: Vec<Capability>,
    ) -> Self {
        let my_as = u16::try_from(asn).unwrap_or(AS_TRANS);
        if !capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
        {
            capabilities.push(Capability::FourOctetAs(asn));
        }
        Self {
            version: 4,
            my_as,
            hold_time,
            bgp_id,
            capabilities,
        }
    }

    /// The sender's AS: from the 4-octet AS capability if present, else "My AS".
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(u32::from(self.my_as))
    }

    /// The AS carried in the 4-octet AS capability, if the sender supports 4-octet AS numbers.
    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
    }

    /// Whether the sender announced route refresh.
    pub fn route_refresh(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::RouteRefresh))
    }

    /// The (AFI, SAFI) pairs the sender can exchange. Without any multiprotocol capability
    /// that is IPv4 unicast alone (RFC 4760 section 8).
    pub fn families(&self) -> Vec<(u16, u8)> {
        let fams: Vec<(u16, u8)> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol { afi, safi } => Some((*afi, *safi)),
                _ => None,
            })
            .collect();
        if fams.is_empty() {
            vec![(AFI_IPV4, SAFI_UNICAST)]
        } else {
            fams
        }
    }
}

/// One AS_PATH segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsSegment {
    /// AS_SET (type 1).
    Set(Vec<u32>),
    /// AS_SEQUENCE (type 2).
    Sequence(Vec<u32>),
    /// Any other segment type (confederations, RFC 5065), kept with its AS numbers.
    Other(u8, Vec<u32>),
}

/// A path attribute of an UPDATE message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathAttribute {
    /// ORIGIN (0 IGP, 1 EGP, 2 INCOMPLETE).
    Origin(u8),
    /// AS_PATH.
    AsPath(Vec<AsSegment>),
    /// NEXT_HOP for IPv4 NLRI.
    NextHop(Ipv4Addr),
    /// MULTI_EXIT_DISC.
    Med(u32),
    /// LOCAL_PREF (iBGP).
    LocalPref(u32),
    /// ATOMIC_AGGREGATE.
    AtomicAggregate,
    /// MP_REACH_NLRI (RFC 4760).
    MpReach {
        /// Address family.
        afi: u16,
        /// Subsequent address family.
        safi: u8,
        /// Next hop bytes as received (16 or 32 for IPv6: global, then link-local).
        next_hop: Vec<u8>,
        /// Reachable prefixes (decoded for IPv4/IPv6 unicast, empty otherwise).
        nlri: Vec<Prefix>,
    },
    /// MP_UNREACH_NLRI (RFC 4760).
    MpUnreach {
        /// Address family.
        afi: u16,
        /// Subsequent address family.
        safi: u8,
        /// Withdrawn prefixes (decoded for IPv4/IPv6 unicast, empty otherwise).
        withdrawn: Vec<Prefix>,
    },
    /// Any other attribute (AGGREGATOR, communities, unknown optional ones), kept as received.
    Other {
        /// Attribute flags as received.
        flags: u8,
        /// Attribute type code.
        type_code: u8,
        /// Attribute value.
        value: Vec<u8>,
    },
}

/// An UPDATE message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// Withdrawn IPv4 routes.
    pub withdrawn: Vec<Prefix>,
    /// Path attributes, in order.
    pub attributes: Vec<PathAttribute>,
    /// Reachable IPv4 prefixes.
    pub nlri: Vec<Prefix>,
}

/// A NOTIFICATION message; also what a decoding error turns into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Error code.
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Diagnostic data.
    pub data: Vec<u8>,
}

impl Notification {
    /// A NOTIFICATION with the given code, subcode and data.
    pub fn new(code: u8, subcode: u8, data: Vec<u8>) -> Self {
        Self {
            code,
            subcode,
            data,
        }
    }

    /// Cease / Administrative Shutdown, sent on graceful shutdown.
    pub fn admin_shutdown() -> Self {
        Self::new(code::CEASE, subcode::ADMIN_SHUTDOWN, Vec::new())
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match (self.code, self.subcode) {
            (code::HEADER, subcode::NOT_SYNCHRONIZED) => {
                "message header error: connection not synchronized"
            }
            (code::HEADER, subcode::BAD_LENGTH) => "message header error: bad message length",
            (code::HEADER, subcode::BAD_TYPE) => "message header error: bad message type",
            (code::HEADER, _) => "message header error",
            (code::OPEN, subcode::UNSUPPORTED_VERSION) => "OPEN error: unsupported version number",
            (code::OPEN, subcode::BAD_PEER_AS) => "OPEN error: bad peer AS",
            (code::OPEN, subcode::BAD_BGP_ID) => "OPEN error: bad BGP identifier",
            (code::OPEN, subcode::UNSUPPORTED_OPT_PARAM) => {
                "OPEN error: unsupported optional parameter"
            }
            (code::OPEN, subcode::UNACCEPTABLE_HOLD_TIME) => "OPEN error: unacceptable hold time",
            (code::OPEN, _) => "OPEN error",
            (code::UPDATE, _) => "UPDATE error",
            (code::HOLD_TIMER_EXPIRED, _) => "hold timer expired",
            (code::FSM, _) => "finite state machine error",
            (code::CEASE, subcode::ADMIN_SHUTDOWN) => "cease: administrative shutdown",
            (code::CEASE, subcode::COLLISION) => "cease: connection collision resolution",
            (code::CEASE, _) => "cease",
            (code::ROUTE_REFRESH, _) => "ROUTE-REFRESH error",
            _ => "unknown error",
        };
        write!(f, "{name} ({}/{})", self.code, self.subcode)
    }
}

/// A ROUTE-REFRESH message (RFC 2918; the subtype byte is RFC 7313's, 0 for a plain refresh).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    /// Address family.
    pub afi: u16,
    /// Message subtype (0 normal request; RFC 7313 BoRR/EoRR are 1 and 2).
    pub subtype: u8,
    /// Subsequent address family.
    pub safi: u8,
}

/// A BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH.
    RouteRefresh(RouteRefresh),
}

/// A malformed message: the NOTIFICATION to send before closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed BGP message: {notification}")]
pub struct DecodeError {
    /// What to tell the peer.
    pub notification: Notification,
}

impl DecodeError {
    fn new(code: u8, subcode: u8, data: Vec<u8>) -> Self {
        Self {
            notification: Notification::new(code, subcode, data),
        }
    }
    fn update(subcode: u8, data: Vec<u8>) -> Self {
        Self::new(code::UPDATE, subcode, data)
    }
}

/// Session parameters that change how messages are encoded and decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    /// Both sides announced 4-octet AS support: AS_PATH carries 4-octet AS numbers.
    pub four_octet_as: bool,
}

impl Default for Codec {
    /// Before OPENs are exchanged only OPEN/NOTIFICATION/KEEPALIVE matter; this assumes
    /// 4-octet AS numbers, which every router we talk to supports.
    fn default() -> Self {
        Self {
            four_octet_as: true,
        }
    }
}

// === decoding ===

/// A bounds-checked reader over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).and_then(|b| b.first().copied())
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

impl Codec {
    /// Splits one complete message off the front of `buf`.
    ///
    /// Returns `Ok(None)` if `buf` does not yet hold a whole message, or `Ok(Some((message,
    /// consumed)))`. The header is checked as soon as 19 bytes are there, so a bad marker or
    /// length is reported without waiting for the body.
    pub fn decode(&self, buf: &[u8]) -> Result<Option<(Message, usize)>, DecodeError> {
        let Some(header) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut r = Reader::new(header);
        let marker = r.take(16).unwrap_or_default();
        if marker.iter().any(|b| *b != 0xff) {
            return Err(DecodeError::new(
                code::HEADER,
                subcode::NOT_SYNCHRONIZED,
                Vec::new(),
            ));
        }
        let len_field = r.u16().unwrap_or_default();
        let len = usize::from(len_field);
        let msg_type = r.u8().unwrap_or_default();
        let bad_len = || {
            DecodeError::new(
                code::HEADER,
                subcode::BAD_LENGTH,
                len_field.to_be_bytes().to_vec(),
            )
        };
        if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
            return Err(bad_len());
        }
        let min_len = match msg_type {
            TYPE_OPEN => 29,
            TYPE_UPDATE => 23,
            TYPE_NOTIFICATION => 21,
            TYPE_KEEPALIVE => 19,
            TYPE_ROUTE_REFRESH => 23,
            other => {
                return Err(DecodeError::new(
                    code::HEADER,
                    subcode::BAD_TYPE,
                    vec![other],
                ));
            }
        };
        if len < min_len || (msg_type == TYPE_KEEPALIVE && len != HEADER_LEN) {
            return Err(bad_len());
        }
        let Some(body) = buf.get(HEADER_LEN..len) else {
            return Ok(None);
        };
        let msg = match msg_type {
            TYPE_OPEN => Message::Open(decode_open(body)?),
            TYPE_UPDATE => Message::Update(self.decode_update(body)?),
            TYPE_NOTIFICATION => {
                let mut r = Reader::new(body);
                let code = r.u8().unwrap_or_default();
                let subcode = r.u8().unwrap_or_default();
                Message::Notification(Notification {
                    code,
                    subcode,
                    data: r.rest().to_vec(),
                })
            }
            TYPE_KEEPALIVE => Message::Keepalive,
            _ => {
                if len != 23 {
                    // RFC 7313 section 5: the whole message is the data.
                    return Err(DecodeError::new(
                        code::ROUTE_REFRESH,
                        subcode::INVALID_RR_LENGTH,
                        buf.get(..len).unwrap_or_default().to_vec(),
                    ));
                }
                let mut r = Reader::new(body);
                let afi = r.u16().unwrap_or_default();
                let subtype = r.u8().unwrap_or_default();
                let safi = r.u8().unwrap_or_default();
                Message::RouteRefresh(RouteRefresh { afi, subtype, safi })
            }
        };
        Ok(Some((msg, len)))
    }

    fn decode_update(&self, body: &[u8]) -> Result<Update, DecodeError> {
        let malformed = || DecodeError::update(subcode::MALFORMED_ATTR_LIST, Vec::new());
        let mut r = Reader::new(body);
        let wlen = r.u16().ok_or_else(malformed)?;
        let wbytes = r.take(usize::from(wlen)).ok_or_else(malformed)?;
        let withdrawn = decode_prefixes(wbytes, AFI_IPV4).map_err(|_| malformed())?;
        let alen = r.u16().ok_or_else(malformed)?;
        let abytes = r.take(usize::from(alen)).ok_or_else(malformed)?;
        let nlri = decode_prefixes(r.rest(), AFI_IPV4)
            .map_err(|_| DecodeError::update(subcode::INVALID_NETWORK, Vec::new()))?;
        let attributes = self.decode_attributes(abytes)?;

        if !nlri.is_empty() {
            // RFC 4271 section 6.3: ORIGIN, AS_PATH and NEXT_HOP are mandatory with IPv4 NLRI.
            for (code, name_present) in [
                (
                    ATTR_ORIGIN,
                    attributes
                        .iter()
                        .any(|a| matches!(a, PathAttribute::Origin(_))),
                ),
                (
                    ATTR_AS_PATH,
                    attributes
                        .iter()
                        .any(|a| matches!(a, PathAttribute::AsPath(_))),
                ),
                (
                    ATTR_NEXT_HOP,
                    attributes
                        .iter()
                        .any(|a| matches!(a, PathAttribute::NextHop(_))),
                ),
            ] {
                if !name_present {
                    return Err(DecodeError::update(subcode::MISSING_WELL_KNOWN, vec![code]));
                }
            }
        }
        Ok(Update {
            withdrawn,
            attributes,
            nlri,
        })
    }

    fn decode_attributes(&self, buf: &[u8]) -> Result<Vec<PathAttribute>, DecodeError> {
        let malformed = || DecodeError::update(subcode::MALFORMED_ATTR_LIST, Vec::new());
        let mut r = Reader::new(buf);
        let mut attrs = Vec::new();
        let mut seen = [false; 256];
        while !r.is_empty() {
            let start = r.buf;
            let flags = r.u8().ok_or_else(malformed)?;
            let type_code = r.u8().ok_or_else(malformed)?;
            let len = if flags & FLAG_EXTENDED_LENGTH != 0 {
                usize::from(r.u16().ok_or_else(malformed)?)
            } else {
                usize::from(r.u8().ok_or_else(malformed)?)
            };
            let header_len = start.len() - r.buf.len();
            // The whole attribute, for the NOTIFICATION data field.
            let whole = start.get(..header_len + len).unwrap_or(start).to_vec();
            let value = match r.take(len) {
                Some(v) => v,
                // The length runs past the attribute list (RFC 4271 section 6.3).
                None => return Err(DecodeError::update(subcode::ATTR_LENGTH, whole)),
            };
            let seen_before = seen
                .get_mut(usize::from(type_code))
                .map(|s| std::mem::replace(s, true));
            if seen_before == Some(true) {
                // The same attribute twice.
                return Err(malformed());
            }
            attrs.push(self.decode_attribute(flags, type_code, value, whole)?);
        }
        Ok(attrs)
    }

    fn decode_attribute(
        &self,
        flags: u8,
        type_code: u8,
        value: &[u8],
        whole: Vec<u8>,
    ) -> Result<PathAttribute, DecodeError> {
        let well_known = matches!(
            type_code,
            ATTR_ORIGIN | ATTR_AS_PATH | ATTR_NEXT_HOP | ATTR_LOCAL_PREF | ATTR_ATOMIC_AGGREGATE
        );
        let optional_non_transitive =
            matches!(type_code, ATTR_MED | ATTR_MP_REACH | ATTR_MP_UNREACH);
        let category = flags & (FLAG_OPTIONAL | FLAG_TRANSITIVE);
        let flags_ok = if well_known {
            // Well-known: optional 0, transitive 1, partial 0.
            category == FLAG_TRANSITIVE && flags & FLAG_PARTIAL == 0
        } else if optional_non_transitive {
            category == FLAG_OPTIONAL && flags & FLAG_PARTIAL == 0
        } else {
            true
        };
        if !flags_ok {
            return Err(DecodeError::update(subcode::ATTR_FLAGS, whole));
        }
        let len_err = || DecodeError::update(subcode::ATTR_LENGTH, whole.clone());
        let mut r = Reader::new(value);
        let attr = match type_code {
            ATTR_ORIGIN => {
                if value.len() != 1 {
                    return Err(len_err());
                }
                let origin = r.u8().unwrap_or_default();
                if origin > 2 {
                    return Err(DecodeError::update(subcode::INVALID_ORIGIN, whole));
                }
                PathAttribute::Origin(origin)
            }
            ATTR_AS_PATH => PathAttribute::AsPath(
                decode_as_path(value, self.four_octet_as)
                    .ok_or_else(|| DecodeError::update(subcode::MALFORMED_AS_PATH, Vec::new()))?,
            ),
            ATTR_NEXT_HOP => {
                let b: [u8; 4] = value.try_into().map_err(|_| len_err())?;
                let nh = Ipv4Addr::from(b);
                if nh.is_unspecified() || nh.is_broadcast() || nh.is_multicast() {
                    return Err(DecodeError::update(subcode::INVALID_NEXT_HOP, whole));
                }
                PathAttribute::NextHop(nh)
            }
            ATTR_MED | ATTR_LOCAL_PREF => {
                let b: [u8; 4] = value.try_into().map_err(|_| len_err())?;
                let v = u32::from_be_bytes(b);
                if type_code == ATTR_MED {
                    PathAttribute::Med(v)
                } else {
                    PathAttribute::LocalPref(v)
                }
            }
            ATTR_ATOMIC_AGGREGATE => {
                if !value.is_empty() {
                    return Err(len_err());
                }
                PathAttribute::AtomicAggregate
            }
            ATTR_MP_REACH => {
                let opt_err = || DecodeError::update(subcode::OPTIONAL_ATTR, whole.clone());
                let afi = r.u16().ok_or_else(opt_err)?;
                let safi = r.u8().ok_or_else(opt_err)?;
                let nh_len = r.u8().ok_or_else(opt_err)?;
                let next_hop = r.take(usize::from(nh_len)).ok_or_else(opt_err)?.to_vec();
                let _reserved = r.u8().ok_or_else(opt_err)?;
                let nlri = if safi == SAFI_UNICAST && (afi == AFI_IPV4 || afi == AFI_IPV6) {
                    decode_prefixes(r.rest(), afi).map_err(|_| opt_err())?
                } else {
                    Vec::new()
                };
                PathAttribute::MpReach {
                    afi,
                    safi,
                    next_hop,
                    nlri,
                }
            }
            ATTR_MP_UNREACH => {
                let opt_err = || DecodeError::update(subcode::OPTIONAL_ATTR, whole.clone());
                let afi = r.u16().ok_or_else(opt_err)?;
                let safi = r.u8().ok_or_else(opt_err)?;
                let withdrawn = if safi == SAFI_UNICAST && (afi == AFI_IPV4 || afi == AFI_IPV6) {
                    decode_prefixes(r.rest(), afi).map_err(|_| opt_err())?
                } else {
                    Vec::new()
                };
                PathAttribute::MpUnreach {
                    afi,
                    safi,
                    withdrawn,
                }
            }
            _ if flags & FLAG_OPTIONAL == 0 && type_code != ATTR_AGGREGATOR => {
                // A well-known attribute we do not know (RFC 4271 section 6.3).
                return Err(DecodeError::update(subcode::UNRECOGNIZED_WELL_KNOWN, whole));
            }
            // The extended-length bit describes the encoding, not the attribute: the encoder
            // sets it when the value needs it.
            _ => PathAttribute::Other {
                flags: flags & !FLAG_EXTENDED_LENGTH,
                type_code,
                value: value.to_vec(),
            },
        };
        Ok(attr)
    }
}

fn decode_open(body: &[u8]) -> Result<Open, DecodeError> {
    let bad_len = || {
        DecodeError::new(
            code::HEADER,
            subcode::BAD_LENGTH,
            ((body.len() + HEADER_LEN) as u16).to_be_bytes().to_vec(),
        )
    };
    let mut r = Reader::new(body);
    let version = r.u8().ok_or_else(bad_len)?;
    if version != 4 {
        // Data: the largest version we support.
        return Err(DecodeError::new(
            code::OPEN,
            subcode::UNSUPPORTED_VERSION,
            4u16.to_be_bytes().to_vec(),
        ));
    }
    let my_as = r.u16().ok_or_else(bad_len)?;
    let hold_time = r.u16().ok_or_else(bad_len)?;
    let bgp_id = Ipv4Addr::from(r.u32().ok_or_else(bad_len)?);
    let opt_len = r.u8().ok_or_else(bad_len)?;
    let opt_err = || DecodeError::new(code::OPEN, 0, Vec::new());
    let params = r.take(usize::from(opt_len)).ok_or_else(opt_err)?;
    if !r.is_empty() {
        return Err(opt_err());
    }
    let mut capabilities = Vec::new();
    let mut p = Reader::new(params);
    while !p.is_empty() {
        let ptype = p.u8().ok_or_else(opt_err)?;
        let plen = p.u8().ok_or_else(opt_err)?;
        let pval = p.take(usize::from(plen)).ok_or_else(opt_err)?;
        if ptype != 2 {
            return Err(DecodeError::new(
                code::OPEN,
                subcode::UNSUPPORTED_OPT_PARAM,
                Vec::new(),
            ));
        }
        let mut c = Reader::new(pval);
        while !c.is_empty() {
            let ccode = c.u8().ok_or_else(opt_err)?;
            let clen = c.u8().ok_or_else(opt_err)?;
            let cval = c.take(usize::from(clen)).ok_or_else(opt_err)?;
            let mut v = Reader::new(cval);
            let cap = match (ccode, clen) {
                (1, 4) => {
                    let afi = v.u16().unwrap_or_default();
                    let _reserved = v.u8();
                    let safi = v.u8().unwrap_or_default();
                    Capability::Multiprotocol { afi, safi }
                }
                (2, 0) => Capability::RouteRefresh,
                (65, 4) => Capability::FourOctetAs(v.u32().unwrap_or_default()),
                // Known codes with a wrong length are kept raw rather than rejected: a
                // capability we cannot use is not an error (RFC 5492 section 3).
                _ => Capability::Unknown {
                    code: ccode,
                    value: cval.to_vec(),
                },
            };
            capabilities.push(cap);
        }
    }
    Ok(Open {
        version,
        my_as,
        hold_time,
        bgp_id,
        capabilities,
    })
}

/// Decodes NLRI-style prefixes (length byte then the minimum number of address bytes).
fn decode_prefixes(buf: &[u8], afi: u16) -> Result<Vec<Prefix>, ()> {
    let max_len: u8 = if afi == AFI_IPV6 { 128 } else { 32 };
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while !r.is_empty() {
        let len = r.u8().ok_or(())?;
        if len > max_len {
            return Err(());
        }
        let nbytes = usize::from(len).div_ceil(8);
        let bytes = r.take(nbytes).ok_or(())?;
        let addr = if afi == AFI_IPV6 {
            let mut a = [0u8; 16];
            a.get_mut(..nbytes).ok_or(())?.copy_from_slice(bytes);
            IpAddr::V6(mask_v6(Ipv6Addr::from(a), len))
        } else {
            let mut a = [0u8; 4];
            a.get_mut(..nbytes).ok_or(())?.copy_from_slice(bytes);
            IpAddr::V4(mask_v4(Ipv4Addr::from(a), len))
        };
        out.push(Prefix { addr, len });
    }
    Ok(out)
}

fn mask_v4(a: Ipv4Addr, len: u8) -> Ipv4Addr {
    let bits = u32::from(a);
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    Ipv4Addr::from(bits & mask)
}

fn mask_v6(a: Ipv6Addr, len: u8) -> Ipv6Addr {
    let bits = u128::from(a);
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    Ipv6Addr::from(bits & mask)
}

fn decode_as_path(buf: &[u8], four_octet: bool) -> Option<Vec<AsSegment>> {
    let mut r = Reader::new(buf);
    let mut segs = Vec::new();
    while !r.is_empty() {
        let stype = r.u8()?;
        let count = r.u8()?;
        if count == 0 {
            return None;
        }
        let mut asns = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            asns.push(if four_octet {
                r.u32()?
            } else {
                u32::from(r.u16()?)
            });
        }
        segs.push(match stype {
            1 => AsSegment::Set(asns),
            2 => AsSegment::Sequence(asns),
            3 | 4 => AsSegment::Other(stype, asns),
            _ => return None,
        });
    }
    Some(segs)
}

// === encoding ===

fn put_header(out: &mut Vec<u8>, msg_type: u8) {
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&[0, 0]);
    out.push(msg_type);
}

fn put_prefix(out: &mut Vec<u8>, p: &Prefix) {
    out.push(p.len);
    let nbytes = usize::from(p.len).div_ceil(8);
    match p.addr {
        IpAddr::V4(a) => out.extend_from_slice(a.octets().get(..nbytes).unwrap_or_default()),
        IpAddr::V6(a) => out.extend_from_slice(a.octets().get(..nbytes).unwrap_or_default()),
    }
}

fn put_attr(out: &mut Vec<u8>, flags: u8, type_code: u8, value: &[u8]) {
    if value.len() > 255 {
        out.push(flags | FLAG_EXTENDED_LENGTH);
        out.push(type_code);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        out.push(flags & !FLAG_EXTENDED_LENGTH);
        out.push(type_code);
        out.push(value.len() as u8);
    }
    out.extend_from_slice(value);
}

impl Codec {
    /// Encodes a message. The caller keeps UPDATEs under [`MAX_MESSAGE_LEN`] (the speaker
    /// splits its announcements into batches that fit).
    pub fn encode(&self, msg: &Message) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match msg {
            Message::Open(open) => {
                put_header(&mut out, TYPE_OPEN);
                out.push(open.version);
                out.extend_from_slice(&open.my_as.to_be_bytes());
                out.extend_from_slice(&open.hold_time.to_be_bytes());
                out.extend_from_slice(&open.bgp_id.octets());
                // One capabilities optional parameter per capability, as most speakers do;
                // both forms are valid (RFC 5492 section 4).
                let mut params = Vec::new();
                for cap in &open.capabilities {
                    let (ccode, value) = match cap {
                        Capability::Multiprotocol { afi, safi } => {
                            let [a, b] = afi.to_be_bytes();
                            (1, vec![a, b, 0, *safi])
                        }
                        Capability::RouteRefresh => (2, Vec::new()),
                        Capability::FourOctetAs(asn) => (65, asn.to_be_bytes().to_vec()),
                        Capability::Unknown { code, value } => (*code, value.clone()),
                    };
                    params.push(2);
                    params.push((value.len() + 2) as u8);
                    params.push(ccode);
                    params.push(value.len() as u8);
                    params.extend_from_slice(&value);
                }
                out.push(params.len() as u8);
                out.extend_from_slice(&params);
            }
            Message::Update(update) => {
                put_header(&mut out, TYPE_UPDATE);
                let mut w = Vec::new();
                for p in &update.withdrawn {
                    put_prefix(&mut w, p);
                }
                out.extend_from_slice(&(w.len() as u16).to_be_bytes());
                out.extend_from_slice(&w);
                let mut a = Vec::new();
                for attr in &update.attributes {
                    self.put_attribute(&mut a, attr);
                }
                out.extend_from_slice(&(a.len() as u16).to_be_bytes());
                out.extend_from_slice(&a);
                for p in &update.nlri {
                    put_prefix(&mut out, p);
                }
            }
            Message::Notification(n) => {
                put_header(&mut out, TYPE_NOTIFICATION);
                out.push(n.code);
                out.push(n.subcode);
                out.extend_from_slice(&n.data);
            }
            Message::Keepalive => put_header(&mut out, TYPE_KEEPALIVE),
            Message::RouteRefresh(rr) => {
                put_header(&mut out, TYPE_ROUTE_REFRESH);
                out.extend_from_slice(&rr.afi.to_be_bytes());
                out.push(rr.subtype);
                out.push(rr.safi);
            }
        }
        let len = (out.len() as u16).to_be_bytes();
        if let Some(field) = out.get_mut(16..18) {
            field.copy_from_slice(&len);
        }
        out
    }

    fn put_attribute(&self, out: &mut Vec<u8>, attr: &PathAttribute) {
        match attr {
            PathAttribute::Origin(o) => put_attr(out, FLAG_TRANSITIVE, ATTR_ORIGIN, &[*o]),
            PathAttribute::AsPath(segs) => {
                let mut v = Vec::new();
                for seg in segs {
                    let (stype, asns) = match seg {
                        AsSegment::Set(a) => (1, a),
                        AsSegment::Sequence(a) => (2, a),
                        AsSegment::Other(t, a) => (*t, a),
                    };
                    v.push(stype);
                    v.push(asns.len() as u8);
                    for asn in asns {
                        if self.four_octet_as {
                            v.extend_from_slice(&asn.to_be_bytes());
                        } else {
                            let two = u16::try_from(*asn).unwrap_or(AS_TRANS);
                            v.extend_from_slice(&two.to_be_bytes());
                        }
                    }
                }
                put_attr(out, FLAG_TRANSITIVE, ATTR_AS_PATH, &v);
            }
            PathAttribute::NextHop(nh) => {
                put_attr(out, FLAG_TRANSITIVE, ATTR_NEXT_HOP, &nh.octets())
            }
            PathAttribute::Med(v) => put_attr(out, FLAG_OPTIONAL, ATTR_MED, &v.to_be_bytes()),
            PathAttribute::LocalPref(v) => {
                put_attr(out, FLAG_TRANSITIVE, ATTR_LOCAL_PREF, &v.to_be_bytes())
            }
            PathAttribute::AtomicAggregate => {
                put_attr(out, FLAG_TRANSITIVE, ATTR_ATOMIC_AGGREGATE, &[])
            }
            PathAttribute::MpReach {
                afi,
                safi,
                next_hop,
                nlri,
            } => {
                let mut v = Vec::new();
                v.extend_from_slice(&afi.to_be_bytes());
                v.push(*safi);
                v.push(next_hop.len() as u8);
                v.extend_from_slice(next_hop);
                v.push(0);
                for p in nlri {
                    put_prefix(&mut v, p);
                }
                put_attr(out, FLAG_OPTIONAL, ATTR_MP_REACH, &v);
            }
            PathAttribute::MpUnreach {
                afi,
                safi,
                withdrawn,
            } => {
                let mut v = Vec::new();
                v.extend_from_slice(&afi.to_be_bytes());
                v.push(*safi);
                for p in withdrawn {
                    put_prefix(&mut v, p);
                }
                put_attr(out, FLAG_OPTIONAL, ATTR_MP_UNREACH, &v);
            }
            PathAttribute::Other {
                flags,
                type_code,
                value,
            } => put_attr(out, *flags, *type_code, value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const M: [u8; 16] = [0xff; 16];

    /// Marker + length + type + body, as the RFC lays a message out.
    fn msg(msg_type: u8, body: &[u8]) -> Vec<u8> {
        let mut v = M.to_vec();
        v.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
        v.push(msg_type);
        v.extend_from_slice(body);
        v
    }

    fn roundtrip(m: &Message, bytes: &[u8]) {
        let c = Codec::default();
        assert_eq!(c.encode(m), bytes, "encoding of {m:?}");
        assert_eq!(
            c.decode(bytes),
            Ok(Some((m.clone(), bytes.len()))),
            "decoding of {m:?}"
        );
    }

    fn err(bytes: &[u8]) -> (u8, u8, Vec<u8>) {
        let n = Codec::default()
            .decode(bytes)
            .expect_err("must be rejected")
            .notification;
        (n.code, n.subcode, n.data)
    }

    fn v4(s: &str) -> Prefix {
        Prefix::host(s.parse().unwrap())
    }

    #[test]
    fn keepalive() {
        roundtrip(&Message::Keepalive, &msg(4, &[]));
        assert_eq!(msg(4, &[])[16..], [0x00, 0x13, 0x04]);
    }

    #[test]
    fn notification_cease_admin_shutdown() {
        let bytes = msg(3, &[6, 2]);
        assert_eq!(bytes[16..], [0x00, 0x15, 0x03, 0x06, 0x02]);
        roundtrip(
            &Message::Notification(Notification::admin_shutdown()),
            &bytes,
        );
        // With data (hold timer expired carries none; an OPEN error may).
        roundtrip(
            &Message::Notification(Notification::new(2, 1, vec![0, 4])),
            &msg(3, &[2, 1, 0, 4]),
        );
    }

    #[test]
    fn route_refresh() {
        let rr = RouteRefresh {
            afi: AFI_IPV6,
            subtype: 0,
            safi: SAFI_UNICAST,
        };
        roundtrip(
            &Message::RouteRefresh(rr),
            &msg(5, &[0x00, 0x02, 0x00, 0x01]),
        );
    }

    #[test]
    fn open_with_capabilities_two_octet_as() {
        let open = Open::new(
            65001,
            90,
            Ipv4Addr::new(10, 0, 0, 1),
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
            ],
        );
        #[rustfmt::skip]
        let body = [
            0x04, 0xfd, 0xe9, 0x00, 0x5a, 10, 0, 0, 1, 28,
            0x02, 0x06, 0x01, 0x04, 0x00, 0x01, 0x00, 0x01, // MP IPv4 unicast
            0x02, 0x06, 0x01, 0x04, 0x00, 0x02, 0x00, 0x01, // MP IPv6 unicast
            0x02, 0x02, 0x02, 0x00,                         // route refresh
            0x02, 0x06, 0x41, 0x04, 0x00, 0x00, 0xfd, 0xe9, // 4-octet AS 65001
        ];
        let bytes = msg(1, &body);
        assert_eq!(bytes.len(), 57);
        roundtrip(&Message::Open(open.clone()), &bytes);
        assert_eq!(open.asn(), 65001);
        assert!(open.route_refresh());
        assert_eq!(
            open.families(),
            vec![(AFI_IPV4, SAFI_UNICAST), (AFI_IPV6, SAFI_UNICAST)]
        );
    }

    #[test]
    fn open_four_octet_as_uses_as_trans() {
        let open = Open::new(4_200_000_001, 3, Ipv4Addr::new(10, 0, 0, 2), Vec::new());
        let body = [
            0x04, 0x5b, 0xa0, 0x00, 0x03, 10, 0, 0, 2, 8, 0x02, 0x06, 0x41, 0x04, 0xfa, 0x56, 0xea,
            0x01,
        ];
        roundtrip(&Message::Open(open.clone()), &msg(1, &body));
        assert_eq!(open.my_as, AS_TRANS);
        assert_eq!(open.asn(), 4_200_000_001);
        // No multiprotocol capability: IPv4 unicast only.
        assert_eq!(open.families(), vec![(AFI_IPV4, SAFI_UNICAST)]);
    }

    #[test]
    fn open_unknown_capabilities_are_kept() {
        // Graceful restart (64) and FQDN (73) in one parameter, plus an empty parameter.
        #[rustfmt::skip]
        let body = [
            0x04, 0xfc, 0x00, 0x00, 0xb4, 1, 2, 3, 4, 17,
            0x02, 0x0d, 0x40, 0x02, 0x00, 0x78, 0x49, 0x07, 0x03, b'r', b't', b'r', 0x01, b'x', 0x00,
            0x02, 0x00,
        ];
        let Ok(Some((Message::Open(open), _))) = Codec::default().decode(&msg(1, &body)) else {
            panic!("not decoded")
        };
        assert_eq!(
            open.capabilities,
            vec![
                Capability::Unknown {
                    code: 64,
                    value: vec![0x00, 0x78]
                },
                Capability::Unknown {
                    code: 73,
                    value: vec![3, b'r', b't', b'r', 1, b'x', 0]
                },
            ]
        );
        assert_eq!(open.asn(), 64512);
    }

    #[test]
    fn open_errors() {
        // Version 3: Unsupported Version Number with the version we support.
        assert_eq!(
            err(&msg(1, &[3, 0xfc, 0, 0, 0xb4, 1, 2, 3, 4, 0])),
            (2, 1, vec![0, 4])
        );
        // Optional parameter type 1 (authentication, deprecated).
        assert_eq!(
            err(&msg(1, &[4, 0xfc, 0, 0, 0xb4, 1, 2, 3, 4, 3, 1, 1, 0])),
            (2, 4, vec![])
        );
        // Optional parameter length runs past the message.
        assert_eq!(
            err(msg(1, &[4, 0xfc, 0, 0, 0xb4, 1, 2, 3, 4, 9, 2, 2, 2, 0]).as_slice()).0,
            2
        );
        // Too short for an OPEN: Bad Message Length.
        assert_eq!(err(&msg(1, &[4, 0xfc, 0, 0, 0xb4])), (1, 2, vec![0, 24]));
    }

    #[test]
    fn update_ebgp_ipv4() {
        let u = Update {
            withdrawn: vec![],
            attributes: vec![
                PathAttribute::Origin(0),
                PathAttribute::AsPath(vec![AsSegment::Sequence(vec![4_200_000_001])]),
                PathAttribute::NextHop(Ipv4Addr::new(10, 0, 0, 2)),
            ],
            nlri: vec![v4("192.0.2.10")],
        };
        #[rustfmt::skip]
        let body = [
            0x00, 0x00,             // no withdrawn routes
            0x00, 0x14,             // 20 bytes of attributes
            0x40, 0x01, 0x01, 0x00, // ORIGIN IGP
            0x40, 0x02, 0x06, 0x02, 0x01, 0xfa, 0x56, 0xea, 0x01, // AS_PATH SEQ [4200000001]
            0x40, 0x03, 0x04, 10, 0, 0, 2, // NEXT_HOP
            0x20, 192, 0, 2, 10,    // 192.0.2.10/32
        ];
        roundtrip(&Message::Update(u), &msg(2, &body));
    }

    #[test]
    fn update_ibgp_local_pref_and_two_octet_as_path() {
        let u = Update {
            withdrawn: vec![],
            attributes: vec![
                PathAttribute::Origin(0),
                PathAttribute::AsPath(vec![]),
                PathAttribute::NextHop(Ipv4Addr::new(10, 0, 0, 2)),
                PathAttribute::LocalPref(100),
            ],
            nlri: vec![v4("192.0.2.10")],
        };
        #[rustfmt::skip]
        let body = [
            0x00, 0x00, 0x00, 0x15,
            0x40, 0x01, 0x01, 0x00,
            0x40, 0x02, 0x00,
            0x40, 0x03, 0x04, 10, 0, 0, 2,
            0x40, 0x05, 0x04, 0x00, 0x00, 0x00, 0x64,
            0x20, 192, 0, 2, 10,
        ];
        roundtrip(&Message::Update(u), &msg(2, &body));

        // A session without 4-octet AS support: 2-octet AS_PATH.
        let c = Codec {
            four_octet_as: false,
        };
        let path = PathAttribute::AsPath(vec![AsSegment::Sequence(vec![65001, 65002])]);
        let u = Update {
            withdrawn: vec![],
            attributes: vec![path],
            nlri: vec![],
        };
        let bytes = c.encode(&Message::Update(u.clone()));
        assert_eq!(
            bytes[19..],
            [
                0, 0, 0, 9, 0x40, 0x02, 0x06, 0x02, 0x02, 0xfd, 0xe9, 0xfd, 0xea
            ]
        );
        assert_eq!(
            c.decode(&bytes),
            Ok(Some((Message::Update(u), bytes.len())))
        );
    }

    #[test]
    fn update_withdraw_ipv4() {
        let u = Update {
            withdrawn: vec![v4("192.0.2.10")],
            attributes: vec![],
            nlri: vec![],
        };
        roundtrip(
            &Message::Update(u),
            &msg(2, &[0x00, 0x05, 0x20, 192, 0, 2, 10, 0x00, 0x00]),
        );
    }

    #[test]
    fn update_mp_reach_and_unreach_ipv6() {
        let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let nh: Ipv6Addr = "fd00::2".parse().unwrap();
        let p = Prefix::host(IpAddr::V6(vip));
        let reach = Update {
            withdrawn: vec![],
            attributes: vec![
                PathAttribute::Origin(0),
                PathAttribute::AsPath(vec![AsSegment::Sequence(vec![65001])]),
                PathAttribute::MpReach {
                    afi: AFI_IPV6,
                    safi: SAFI_UNICAST,
                    next_hop: nh.octets().to_vec(),
                    nlri: vec![p],
                },
            ],
            nlri: vec![],
        };
        let mut body = vec![0x00, 0x00, 0x00, 4 + 9 + 3 + 38];
        body.extend_from_slice(&[0x40, 0x01, 0x01, 0x00]);
        body.extend_from_slice(&[0x40, 0x02, 0x06, 0x02, 0x01, 0x00, 0x00, 0xfd, 0xe9]);
        body.extend_from_slice(&[0x80, 0x0e, 38, 0x00, 0x02, 0x01, 16]);
        body.extend_from_slice(&nh.octets());
        body.push(0x00); // reserved
        body.push(128);
        body.extend_from_slice(&vip.octets());
        roundtrip(&Message::Update(reach), &msg(2, &body));

        let unreach = Update {
            withdrawn: vec![],
            attributes: vec![PathAttribute::MpUnreach {
                afi: AFI_IPV6,
                safi: SAFI_UNICAST,
                withdrawn: vec![p],
            }],
            nlri: vec![],
        };
        let mut body = vec![0x00, 0x00, 0x00, 23, 0x80, 0x0f, 20, 0x00, 0x02, 0x01, 128];
        body.extend_from_slice(&vip.octets());
        roundtrip(&Message::Update(unreach), &msg(2, &body));
    }

    #[test]
    fn update_unknown_and_other_attributes_are_tolerated() {
        #[rustfmt::skip]
        let body = [
            0x00, 0x00, 0x00, 0x1f,
            0x40, 0x01, 0x01, 0x02,
            0x40, 0x02, 0x00,
            0x40, 0x03, 0x04, 10, 0, 0, 1,
            0xc0, 0x08, 0x04, 0xfc, 0x00, 0x00, 0x01,       // COMMUNITIES 64512:1
            0xe0, 0x63, 0x02, 0xab, 0xcd,                   // unknown optional transitive, partial
            0x90, 0x64, 0x00, 0x01, 0x7f,                   // unknown optional non-transitive, extended length
            0x18, 198, 51, 100,                             // 198.51.100.0/24
        ];
        let Ok(Some((Message::Update(u), _))) = Codec::default().decode(&msg(2, &body)) else {
            panic!("not decoded")
        };
        assert_eq!(
            u.nlri,
            vec![Prefix {
                addr: "198.51.100.0".parse().unwrap(),
                len: 24
            }]
        );
        assert_eq!(
            u.attributes[3],
            PathAttribute::Other {
                flags: 0xc0,
                type_code: 8,
                value: vec![0xfc, 0, 0, 1]
            }
        );
        assert_eq!(
            u.attributes[4],
            PathAttribute::Other {
                flags: 0xe0,
                type_code: 99,
                value: vec![0xab, 0xcd]
            }
        );
        assert_eq!(
            u.attributes[5],
            PathAttribute::Other {
                flags: 0x80,
                type_code: 100,
                value: vec![0x7f]
            }
        );
        // MP_REACH for another family (IPv4 flowspec, SAFI 133) is kept without decoding NLRI.
        let body = [
            0x00, 0x00, 0x00, 0x0a, 0x80, 0x0e, 0x07, 0x00, 0x01, 0x85, 0x00, 0x00, 0x02, 0x01,
        ];
        let Ok(Some((Message::Update(u), _))) = Codec::default().decode(&msg(2, &body)) else {
            panic!("not decoded")
        };
        assert_eq!(
            u.attributes,
            vec![PathAttribute::MpReach {
                afi: 1,
                safi: 133,
                next_hop: vec![],
                nlri: vec![]
            }]
        );
    }

    #[test]
    fn header_errors() {
        let mut bad_marker = msg(4, &[]);
        bad_marker[3] = 0;
        assert_eq!(err(&bad_marker), (1, 1, vec![]));
        let mut short = msg(4, &[]);
        short[17] = 18;
        assert_eq!(err(&short), (1, 2, vec![0, 18]));
        let mut long = msg(4, &[]);
        long[16..18].copy_from_slice(&4097u16.to_be_bytes());
        assert_eq!(err(&long), (1, 2, vec![0x10, 0x01]));
        assert_eq!(
            err(&msg(4, &[0])),
            (1, 2, vec![0, 20]),
            "KEEPALIVE must be exactly 19 bytes"
        );
        assert_eq!(err(&msg(9, &[])), (1, 3, vec![9]));
        assert_eq!(
            err(&msg(3, &[6])),
            (1, 2, vec![0, 20]),
            "NOTIFICATION needs code and subcode"
        );
        assert_eq!(err(&msg(5, &[0, 1, 0, 1, 0])).0, code::ROUTE_REFRESH);
        assert_eq!(err(&msg(5, &[0, 1, 0, 1, 0])).1, subcode::INVALID_RR_LENGTH);
        // Incomplete input is not an error: wait for more.
        assert_eq!(Codec::default().decode(&msg(4, &[])[..18]), Ok(None));
        assert_eq!(Codec::default().decode(&msg(3, &[6, 2])[..20]), Ok(None));
    }

    #[test]
    fn update_errors() {
        // Attribute length runs past the attribute list: Attribute Length Error with the attribute.
        assert_eq!(
            err(&msg(2, &[0, 0, 0, 4, 0x40, 0x01, 0x05, 0x00])),
            (3, 5, vec![0x40, 0x01, 0x05, 0x00])
        );
        // Total attribute length runs past the message: Malformed Attribute List.
        assert_eq!(
            err(&msg(2, &[0, 0, 0, 9, 0x40, 0x01, 0x01, 0x00])),
            (3, 1, vec![])
        );
        // Withdrawn length runs past the message.
        assert_eq!(err(&msg(2, &[0, 9, 0, 0])), (3, 1, vec![]));
        // Truncated attribute header.
        assert_eq!(err(&msg(2, &[0, 0, 0, 1, 0x40])), (3, 1, vec![]));
        // ORIGIN 3 is invalid.
        assert_eq!(
            err(&msg(2, &[0, 0, 0, 4, 0x40, 0x01, 0x01, 0x03])),
            (3, 6, vec![0x40, 0x01, 0x01, 0x03])
        );
        // ORIGIN marked optional: Attribute Flags Error.
        assert_eq!(
            err(&msg(2, &[0, 0, 0, 4, 0xc0, 0x01, 0x01, 0x00])),
            (3, 4, vec![0xc0, 0x01, 0x01, 0x00])
        );
        // NEXT_HOP of 3 bytes.
        assert_eq!(
            err(&msg(2, &[0, 0, 0, 6, 0x40, 0x03, 0x03, 1, 2, 3])).1,
            subcode::ATTR_LENGTH
        );
        // An unknown well-known attribute.
        assert_eq!(
            err(&msg(2, &[0, 0, 0, 3, 0x40, 0x63, 0x00])),
            (3, 2, vec![0x40, 0x63, 0x00])
        );
        // The same attribute twice.
        assert_eq!(
            err(&msg(
                2,
                &[0, 0, 0, 8, 0x40, 0x01, 0x01, 0x00, 0x40, 0x01, 0x01, 0x00]
            )),
            (3, 1, vec![])
        );
        // AS_PATH segment runs past the attribute.
        assert_eq!(
            err(&msg(
                2,
                &[0, 0, 0, 7, 0x40, 0x02, 0x04, 0x02, 0x02, 0x00, 0x01]
            )),
            (3, 11, vec![])
        );
        // NLRI without NEXT_HOP: Missing Well-known Attribute, data = the type code.
        assert_eq!(
            err(&msg(
                2,
                &[
                    0, 0, 0, 7, 0x40, 0x01, 0x01, 0x00, 0x40, 0x02, 0x00, 0x20, 192, 0, 2, 1
                ]
            )),
            (3, 3, vec![3])
        );
        // A prefix length of 33.
        assert_eq!(
            err(&msg(2, &[0, 0, 0, 0, 33, 1, 2, 3, 4, 5])),
            (3, 10, vec![])
        );
        // Prefix bytes cut short.
        assert_eq!(err(&msg(2, &[0, 0, 0, 0, 32, 1, 2])), (3, 10, vec![]));
        // MP_REACH next-hop length past the attribute: Optional Attribute Error.
        assert_eq!(
            err(&msg(
                2,
                &[0, 0, 0, 7, 0x80, 0x0e, 0x04, 0x00, 0x02, 0x01, 0x10]
            ))
            .1,
            subcode::OPTIONAL_ATTR
        );
    }

    fn samples() -> Vec<Vec<u8>> {
        let c = Codec::default();
        let a = super::super::session::tests_support::sample_updates();
        let mut v: Vec<Vec<u8>> = a.iter().map(|m| c.encode(m)).collect();
        v.push(c.encode(&Message::Open(Open::new(
            4_200_000_001,
            90,
            Ipv4Addr::new(1, 2, 3, 4),
            vec![
                Capability::Multiprotocol { afi: 2, safi: 1 },
                Capability::RouteRefresh,
            ],
        ))));
        v.push(c.encode(&Message::Keepalive));
        v.push(c.encode(&Message::Notification(Notification::new(
            6,
            2,
            b"bye".to_vec(),
        ))));
        v.push(c.encode(&Message::RouteRefresh(RouteRefresh {
            afi: 1,
            subtype: 0,
            safi: 1,
        })));
        v
    }

    /// Every prefix of every sample, and every single-byte corruption of it, decodes to a
    /// message, "need more", or an error: never a panic, never a length past the input.
    #[test]
    fn exhaustive_truncation_and_corruption_never_panic() {
        let c = Codec::default();
        let c2 = Codec {
            four_octet_as: false,
        };
        for s in samples() {
            for end in 0..=s.len() {
                for codec in [c, c2] {
                    if let Ok(Some((_, n))) = codec.decode(&s[..end]) {
                        assert!(n <= end);
                    }
                }
            }
            for i in 0..s.len() {
                for b in [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, s[i].wrapping_add(1)] {
                    let mut m = s.clone();
                    m[i] = b;
                    let _ = c.decode(&m);
                    let _ = c2.decode(&m);
                }
            }
        }
    }

    /// Found by the fuzzer: unknown attributes with the extended-length bit on short values
    /// must re-encode to the same message.
    #[test]
    fn fuzz_regression_extended_length_round_trip() {
        #[rustfmt::skip]
        let bytes = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x00, 0x2c, 0x02, 0x00, 0x00, 0x00, 0x15, 0xdf, 0xad, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0xff,
            0x20, 0x00, 0x09, 0xf2, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00, 0x00, 0x00, 0x01, 0x2d, 0x00,
        ];
        let c = Codec::default();
        let (m, n) = c.decode(&bytes).unwrap().unwrap();
        assert_eq!(n, 44);
        let again = c.encode(&m);
        assert_eq!(c.decode(&again), Ok(Some((m, again.len()))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn decode_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300), t in 0u8..7, four in any::<bool>()) {
            let bytes = msg(t, &body);
            let c = Codec { four_octet_as: four };
            if let Ok(Some((m, n))) = c.decode(&bytes) {
                prop_assert_eq!(n, bytes.len());
                // What decodes re-encodes to something that decodes to the same message.
                let again = c.encode(&m);
                prop_assert_eq!(c.decode(&again), Ok(Some((m, again.len()))));
            }
        }

        #[test]
        fn decode_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Codec::default().decode(&bytes);
        }
    }
}

/// Messages GoBGP and BIRD 2 sent to our speaker, captured with tcpdump by
/// `tests/capture.rs` (see `tests/data/captured/README.md`).
#[cfg(test)]
mod captured {
    use super::*;

    fn dir(router: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/captured")
            .join(router)
    }

    fn load(router: &str, file: &str) -> Vec<u8> {
        let path = dir(router).join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let hex: String = text.split_whitespace().collect();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn decode(router: &str, file: &str) -> Message {
        let bytes = load(router, file);
        let (m, n) = Codec::default()
            .decode(&bytes)
            .unwrap_or_else(|e| panic!("{router}/{file}: {e}"))
            .unwrap_or_else(|| panic!("{router}/{file}: incomplete"));
        assert_eq!(n, bytes.len(), "{router}/{file}: one whole message");
        m
    }

    /// Every captured message decodes, has the type its name says, and re-encodes to the
    /// same bytes, except where the router's encoding is not the one we produce: both put
    /// all capabilities in one optional parameter (we send one per capability; RFC 5492
    /// allows both), and BIRD sets the extended-length bit on a short MP_REACH_NLRI. Those
    /// still re-encode to bytes that decode to the same message.
    #[test]
    fn every_captured_message_decodes_and_re_encodes() {
        let mut count = 0;
        for router in ["gobgp", "bird"] {
            let mut files: Vec<String> = std::fs::read_dir(dir(router))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|f| f.ends_with(".hex"))
                .collect();
            files.sort();
            assert!(files.len() >= 8, "{router}: {files:?}");
            for file in files {
                let bytes = load(router, &file);
                let m = decode(router, &file);
                let kind = match m {
                    Message::Open(_) => "open",
                    Message::Update(_) => "update",
                    Message::Notification(_) => "notification",
                    Message::Keepalive => "keepalive",
                    Message::RouteRefresh(_) => "route-refresh",
                };
                assert!(
                    file.ends_with(&format!("-{kind}.hex")),
                    "{router}/{file}: {m:?}"
                );
                let again = Codec::default().encode(&m);
                let canonical = kind != "open" && !(router == "bird" && file == "v6-03-update.hex");
                if canonical {
                    assert_eq!(again, bytes, "{router}/{file} re-encoded");
                } else {
                    assert_ne!(
                        again, bytes,
                        "{router}/{file}: now canonical? update the test"
                    );
                    assert_eq!(
                        Codec::default().decode(&again),
                        Ok(Some((m, again.len()))),
                        "{router}/{file} round trip"
                    );
                }
                count += 1;
            }
        }
        assert!(count >= 20);
    }

    fn open(router: &str, file: &str) -> Open {
        match decode(router, file) {
            Message::Open(o) => o,
            other => panic!("{router}/{file}: {other:?}"),
        }
    }

    fn unknown(code: u8, value: &[u8]) -> Capability {
        Capability::Unknown {
            code,
            value: value.to_vec(),
        }
    }

    #[test]
    fn gobgp_open() {
        for (file, afi) in [("v4-01-open.hex", AFI_IPV4), ("v6-01-open.hex", AFI_IPV6)] {
            let o = open("gobgp", file);
            assert_eq!(
                (o.version, o.my_as, o.hold_time, o.bgp_id),
                (4, 64512, 3, Ipv4Addr::new(172, 31, 255, 1))
            );
            assert_eq!(o.asn(), 64512);
            assert!(o.route_refresh());
            assert_eq!(o.families(), vec![(afi, SAFI_UNICAST)]);
            let [a0, a1] = afi.to_be_bytes();
            let mut expect = vec![
                Capability::RouteRefresh,
                // FQDN (draft-walton-bgp-hostname-capability): host name of the machine, no
                // domain. Kept raw.
                unknown(73, &[2, b'v', b'm', 0]),
                Capability::Multiprotocol {
                    afi,
                    safi: SAFI_UNICAST,
                },
                Capability::FourOctetAs(64512),
                // Graceful restart (RFC 4724): restart time 120 s, this family, no flags.
                unknown(64, &[0x00, 0x78, a0, a1, 1, 0x00]),
            ];
            if afi == AFI_IPV4 {
                // Extended next hop (RFC 8950): IPv4 unicast over an IPv6 next hop.
                expect.push(unknown(5, &[0, 1, 0, 1, 0, 2]));
            }
            // ADD-PATH (RFC 7911): this family, send and receive.
            expect.push(unknown(69, &[a0, a1, 1, 3]));
            assert_eq!(o.capabilities, expect, "gobgp/{file}");
        }
    }

    #[test]
    fn bird_open() {
        for (file, afi) in [("v4-01-open.hex", AFI_IPV4), ("v6-01-open.hex", AFI_IPV6)] {
            let o = open("bird", file);
            assert_eq!(
                (o.version, o.my_as, o.hold_time, o.bgp_id),
                (4, 64512, 3, Ipv4Addr::new(172, 31, 255, 1))
            );
            let [a0, a1] = afi.to_be_bytes();
            assert_eq!(
                o.capabilities,
                vec![
                    Capability::Multiprotocol {
                        afi,
                        safi: SAFI_UNICAST
                    },
                    Capability::RouteRefresh,
                    // Extended messages (RFC 8654).
                    unknown(6, &[]),
                    // Graceful restart: 120 s, this family, forwarding state not kept.
                    unknown(64, &[0x00, 0x78, a0, a1, 1, 0x00]),
                    Capability::FourOctetAs(64512),
                    // ADD-PATH: this family, send and receive.
                    unknown(69, &[a0, a1, 1, 3]),
                    // Enhanced route refresh (RFC 7313).
                    unknown(70, &[]),
                    // Long-lived graceful restart: this family, stale time 3600 s.
                    unknown(71, &[a0, a1, 1, 0x00, 0x00, 0x0e, 0x10]),
                    // FQDN: host name "rtr-bird", no domain.
                    unknown(73, b"\x08rtr-bird\x00"),
                ],
                "bird/{file}"
            );
            assert_eq!(o.families(), vec![(afi, SAFI_UNICAST)]);
        }
    }

    fn update(router: &str, file: &str) -> Update {
        match decode(router, file) {
            Message::Update(u) => u,
            other => panic!("{router}/{file}: {other:?}"),
        }
    }

    #[test]
    fn updates_with_routes() {
        let p4 = Prefix {
            addr: "198.51.100.0".parse().unwrap(),
            len: 24,
        };
        let p6 = Prefix {
            addr: "2001:db8:100::".parse().unwrap(),
            len: 48,
        };
        let nh6: Ipv6Addr = "fd00:31::1".parse().unwrap();
        let path = PathAttribute::AsPath(vec![AsSegment::Sequence(vec![64512])]);
        // GoBGP: a route added with `gobgp global rib add` has ORIGIN INCOMPLETE.
        let u = update("gobgp", "v4-03-update.hex");
        assert_eq!(
            u.attributes,
            vec![
                PathAttribute::Origin(2),
                path.clone(),
                PathAttribute::NextHop(Ipv4Addr::new(172, 31, 255, 1))
            ]
        );
        assert_eq!((u.withdrawn, u.nlri), (vec![], vec![p4]));
        let u = update("gobgp", "v6-03-update.hex");
        assert_eq!(
            u.attributes,
            vec![
                PathAttribute::Origin(2),
                path.clone(),
                PathAttribute::MpReach {
                    afi: AFI_IPV6,
                    safi: SAFI_UNICAST,
                    next_hop: nh6.octets().to_vec(),
                    nlri: vec![p6]
                }
            ]
        );
        // BIRD: static routes have ORIGIN IGP; MP_REACH_NLRI comes first.
        let u = update("bird", "v4-03-update.hex");
        assert_eq!(
            u.attributes,
            vec![
                PathAttribute::Origin(0),
                path.clone(),
                PathAttribute::NextHop(Ipv4Addr::new(172, 31, 255, 1))
            ]
        );
        assert_eq!(u.nlri, vec![p4]);
        let u = update("bird", "v6-03-update.hex");
        assert_eq!(
            u.attributes,
            vec![
                PathAttribute::MpReach {
                    afi: AFI_IPV6,
                    safi: SAFI_UNICAST,
                    next_hop: nh6.octets().to_vec(),
                    nlri: vec![p6]
                },
                PathAttribute::Origin(0),
                path,
            ]
        );
    }

    /// BIRD's End-of-RIB markers (RFC 4724 section 2): an empty UPDATE for IPv4 unicast, and
    /// an MP_UNREACH_NLRI without prefixes for IPv6 unicast.
    #[test]
    fn bird_end_of_rib() {
        assert_eq!(update("bird", "v4-04-update.hex"), Update::default());
        assert_eq!(
            update("bird", "v6-04-update.hex").attributes,
            vec![PathAttribute::MpUnreach {
                afi: AFI_IPV6,
                safi: SAFI_UNICAST,
                withdrawn: vec![]
            }]
        );
    }

    #[test]
    fn route_refresh_keepalive_and_cease() {
        for (file, afi) in [
            ("v4-05-route-refresh.hex", AFI_IPV4),
            ("v6-05-route-refresh.hex", AFI_IPV6),
        ] {
            assert_eq!(
                decode("bird", file),
                Message::RouteRefresh(RouteRefresh {
                    afi,
                    subtype: 0,
                    safi: SAFI_UNICAST
                })
            );
        }
        for router in ["gobgp", "bird"] {
            assert_eq!(decode(router, "v4-02-keepalive.hex"), Message::Keepalive);
        }
        // `gobgp neighbor X disable`: Cease / Administrative Shutdown without data.
        assert_eq!(
            decode("gobgp", "v4-04-notification.hex"),
            Message::Notification(Notification::admin_shutdown())
        );
        // `birdc disable n4 "capture done"`: with a shutdown communication (RFC 9003: one
        // length byte, then UTF-8).
        let Message::Notification(n) = decode("bird", "v4-06-notification.hex") else {
            panic!("NOTIFICATION")
        };
        assert_eq!((n.code, n.subcode), (code::CEASE, subcode::ADMIN_SHUTDOWN));
        assert_eq!(n.data, b"\x0ccapture done");
        assert_eq!(n.to_string(), "cease: administrative shutdown (6/2)");
    }
}
