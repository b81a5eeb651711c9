//! The raw IP socket (protocol 89) of one OSPF interface, in safe code: socket2 opens and
//! configures it, tokio's `AsyncFd` waits on it.
//!
//! - `SO_BINDTODEVICE` to the interface, so each socket sees only its interface's packets and
//!   unicasts leave through it;
//! - membership of AllSPFRouters (224.0.0.5) by interface index, and of AllDRouters
//!   (224.0.0.6) while the interface is DR or BDR;
//! - `IP_MULTICAST_IF` = the interface address, multicast TTL 1 (OSPF packets never leave
//!   the link), multicast loop off (we must not hear ourselves), and TOS 0xc0 (internetwork
//!   control, RFC 2328 appendix A.1);
//! - a 1 MiB receive buffer, so a burst of LS Updates is not lost while the core is busy.
//!
//! A raw IPv4 socket receives the IP header too: the source and destination come from it
//! (and the payload is cut to its total length); the kernel reassembles fragments first.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::packet::{ALL_D_ROUTERS, ALL_SPF_ROUTERS, IP_PROTOCOL};

/// Internetwork control precedence.
const TOS_INTERNETWORK_CONTROL: u32 = 0xc0;

/// One interface's socket.
#[derive(Debug)]
pub(crate) struct RawSocket {
    fd: AsyncFd<Socket>,
    index: u32,
}

/// A received packet's addresses and where its OSPF payload is in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) src: Ipv4Addr,
    pub(crate) dst: Ipv4Addr,
    pub(crate) payload: (usize, usize),
}

impl RawSocket {
    /// Opens the socket on interface `name` (index `index`, address `address`) and joins
    /// AllSPFRouters. Needs CAP_NET_RAW.
    pub(crate) fn open(name: &str, index: u32, address: Ipv4Addr) -> io::Result<Self> {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IP_PROTOCOL))),
        )?;
        s.bind_device(Some(name.as_bytes()))?;
        s.set_multicast_if_v4(&address)?;
        s.set_multicast_ttl_v4(1)?;
        s.set_multicast_loop_v4(false)?;
        s.set_ttl_v4(1)?;
        s.set_tos_v4(TOS_INTERNETWORK_CONTROL)?;
        // Best effort: the kernel caps it at net.core.rmem_max.
        let _ = s.set_recv_buffer_size(1 << 20);
        s.join_multicast_v4_n(&ALL_SPF_ROUTERS, &InterfaceIndexOrAddress::Index(index))?;
        s.set_nonblocking(true)?;
        // tokio 1.54 deprecates `AsyncFd::new` (tokio#8587) because a generic `T: AsRawFd`
        // need not own its descriptor, and asks callers to promise that it does through the
        // `unsafe fn register`. A `socket2::Socket` owns its descriptor and the `AsyncFd`
        // owns the `Socket`, so the promise holds here; the safe constructor keeps this crate
        // free of `unsafe`.
        #[allow(deprecated)]
        let fd = AsyncFd::new(s)?;
        Ok(Self { fd, index })
    }

    /// Joins or leaves AllDRouters.
    pub(crate) fn set_all_d_routers(&self, join: bool) -> io::Result<()> {
        let iface = InterfaceIndexOrAddress::Index(self.index);
        if join {
            self.fd
                .get_ref()
                .join_multicast_v4_n(&ALL_D_ROUTERS, &iface)
        } else {
            self.fd
                .get_ref()
                .leave_multicast_v4_n(&ALL_D_ROUTERS, &iface)
        }
    }

    /// Receives one IP packet into `buf` and returns its addresses and the OSPF payload's
    /// position; datagrams that are not IPv4/OSPF with a sane header are skipped.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            let mut guard = self.fd.readable().await?;
            let n = match guard.try_io(|inner| {
                let mut s: &Socket = inner.get_ref();
                s.read(buf)
            }) {
                Ok(r) => r?,
                Err(_would_block) => continue,
            };
            if let Some(r) = parse_ip(buf.get(..n).unwrap_or_default()) {
                return Ok(r);
            }
        }
    }

    /// Sends an OSPF packet to `dst` (the kernel adds the IP header).
    pub(crate) async fn send(&self, dst: Ipv4Addr, packet: &[u8]) -> io::Result<()> {
        let addr = SockAddr::from(SocketAddrV4::new(dst, 0));
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|inner| inner.get_ref().send_to(packet, &addr)) {
                Ok(r) => return r.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The addresses and payload of an IPv4 packet carrying OSPF.
pub(crate) fn parse_ip(p: &[u8]) -> Option<Received> {
    let first = *p.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*p.get(2)?, *p.get(3)?]));
    if ihl < 20 || total < ihl || total > p.len() || *p.get(9)? != IP_PROTOCOL {
        return None;
    }
    let addr = |at: usize| -> Option<Ipv4Addr> {
        let b = p.get(at..at + 4)?;
        Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    };
    Some(Received {
        src: addr(12)?,
        dst: addr(16)?,
        payload: (ihl, total),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_header_parsing() {
        let mut p = vec![
            0x45, 0xc0, 0, 28, 0, 0, 0, 0, 1, 89, 0, 0, 172, 31, 0, 1, 224, 0, 0, 5,
        ];
        p.extend_from_slice(&[0; 8]);
        assert_eq!(
            parse_ip(&p),
            Some(Received {
                src: Ipv4Addr::new(172, 31, 0, 1),
                dst: ALL_SPF_ROUTERS,
                payload: (20, 28),
            })
        );
        // Truncated, wrong protocol, wrong version, bad header length: skipped.
        assert_eq!(parse_ip(&p[..27]), None);
        let mut q = p.clone();
        q[9] = 6;
        assert_eq!(parse_ip(&q), None);
        let mut q = p.clone();
        q[0] = 0x65;
        assert_eq!(parse_ip(&q), None);
        let mut q = p.clone();
        q[0] = 0x44;
        assert_eq!(parse_ip(&q), None);
        for n in 0..p.len() {
            let _ = parse_ip(&p[..n]);
        }
    }
}
