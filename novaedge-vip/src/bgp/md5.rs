//! TCP-MD5 signatures (RFC 2385) on BGP sockets: the one place in this crate with `unsafe`.
//!
//! Linux signs and checks TCP segments once a key for the remote address is installed on the
//! socket with `setsockopt(IPPROTO_TCP, TCP_MD5SIG, struct tcp_md5sig)`. On a connecting
//! socket the key must be set before `connect`, so the SYN is signed; on a listening socket one
//! key per peer address makes the kernel accept (and sign) connections from that peer, while
//! unsigned segments from it, or segments signed with another key, are dropped silently.
//!
//! Neither tokio, socket2 0.6, nix nor rustix wrap `TCP_MD5SIG`, and `libc` does not define
//! `struct tcp_md5sig`, so [`TcpMd5Sig`] mirrors `linux/tcp.h` and [`set_key`] makes the one
//! `setsockopt` call. Everything else (the address encoding, the length checks) is safe code.

use std::io;
use std::mem::{offset_of, size_of};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Longest key the kernel accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub(crate) const MAX_KEY_LEN: usize = 80;

/// `struct __kernel_sockaddr_storage`: 128 bytes, aligned like a pointer.
#[repr(C, align(8))]
struct SockaddrStorage([u8; 128]);

/// `struct tcp_md5sig` from `linux/tcp.h`:
///
/// ```c
/// struct tcp_md5sig {
///     struct __kernel_sockaddr_storage tcpm_addr;
///     __u8  tcpm_flags;     /* only read with TCP_MD5SIG_EXT */
///     __u8  tcpm_prefixlen; /* only read with TCP_MD5SIG_EXT */
///     __u16 tcpm_keylen;
///     int   tcpm_ifindex;   /* only read with TCP_MD5SIG_EXT */
///     __u8  tcpm_key[TCP_MD5SIG_MAXKEYLEN];
/// };
/// ```
#[repr(C)]
struct TcpMd5Sig {
    addr: SockaddrStorage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: i32,
    key: [u8; MAX_KEY_LEN],
}

// The layout the kernel expects (it copies exactly `sizeof(struct tcp_md5sig)` bytes).
const _: () = {
    assert!(size_of::<TcpMd5Sig>() == 216);
    assert!(offset_of!(TcpMd5Sig, flags) == 128);
    assert!(offset_of!(TcpMd5Sig, keylen) == 130);
    assert!(offset_of!(TcpMd5Sig, ifindex) == 132);
    assert!(offset_of!(TcpMd5Sig, key) == 136);
    assert!(libc::TCP_MD5SIG_MAXKEYLEN == MAX_KEY_LEN);
};

/// Errors from installing a key.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Md5Error {
    /// The key is longer than the kernel allows.
    #[error("TCP-MD5 password is {len} bytes; at most {MAX_KEY_LEN} are allowed")]
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
    },
    /// The kernel refused the key (for example a kernel built without `CONFIG_TCP_MD5SIG`).
    #[error("setsockopt(TCP_MD5SIG) for {peer}: {source}")]
    Setsockopt {
        /// The peer address the key was for.
        peer: IpAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Encodes `peer` as a `sockaddr_in`/`sockaddr_in6` in the socket's family: an IPv6 socket
/// needs an IPv4 peer as a v4-mapped address (the kernel then installs an IPv4 key), an IPv4
/// socket cannot have an IPv6 peer.
fn sockaddr(peer: IpAddr, socket_is_v6: bool) -> Result<SockaddrStorage, io::Error> {
    let mut s = SockaddrStorage([0; 128]);
    match (peer, socket_is_v6) {
        (IpAddr::V4(v4), false) => {
            // sockaddr_in: sa_family_t family (host order), in_port_t port, struct in_addr.
            s.0[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            s.0[4..8].copy_from_slice(&v4.octets());
        }
        (ip, true) => {
            let v6 = match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            // sockaddr_in6: family, port, flowinfo (4), struct in6_addr (16), scope id.
            s.0[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            s.0[8..24].copy_from_slice(&v6.octets());
        }
        (IpAddr::V6(_), false) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an IPv6 peer on an IPv4 socket",
            ));
        }
    }
    Ok(s)
}

/// Installs `key` for `peer` on `socket` (`socket_is_v6`: the socket is AF_INET6). An empty
/// key removes the key for `peer`.
pub(crate) fn set_key(
    socket: BorrowedFd<'_>,
    socket_is_v6: bool,
    peer: IpAddr,
    key: &[u8],
) -> Result<(), Md5Error> {
    if key.len() > MAX_KEY_LEN {
        return Err(Md5Error::KeyTooLong { len: key.len() });
    }
    let setsockopt_err = |source| Md5Error::Setsockopt { peer, source };
    let mut sig = TcpMd5Sig {
        addr: sockaddr(peer, socket_is_v6).map_err(setsockopt_err)?,
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; MAX_KEY_LEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    setsockopt(socket, &sig).map_err(setsockopt_err)
}

#[allow(
    unsafe_code,
    reason = "no safe wrapper for TCP_MD5SIG exists; this is the crate's only unsafe call"
)]
fn setsockopt(socket: BorrowedFd<'_>, sig: &TcpMd5Sig) -> io::Result<()> {
    let len = size_of::<TcpMd5Sig>() as libc::socklen_t;
    // SAFETY:
    // - The descriptor is open for the whole call: `BorrowedFd` guarantees it outlives the
    //   borrow, and the kernel checks that it is a TCP socket (ENOTSOCK/ENOPROTOOPT otherwise).
    // - `optval` points to a live, fully initialised `TcpMd5Sig` (every field, padding-free by
    //   the layout assertions above) borrowed for the call, and `optlen` is exactly its size,
    //   so the kernel's `copy_from_sockptr(&cmd, optval, sizeof(cmd))` reads only that memory.
    // - The kernel only reads `optval` and keeps no pointer to it after returning.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            std::ptr::from_ref(sig).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    use std::os::fd::AsFd;
    use std::time::Duration;

    use tokio::net::{TcpListener, TcpSocket, TcpStream};

    use super::*;

    #[test]
    fn sockaddr_layout() {
        let s = sockaddr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), false).unwrap();
        assert_eq!(u16::from_ne_bytes([s.0[0], s.0[1]]), libc::AF_INET as u16);
        assert_eq!(s.0[2..8], [0, 0, 192, 0, 2, 1]);
        assert!(s.0[8..].iter().all(|b| *b == 0));

        let s = sockaddr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), true).unwrap();
        assert_eq!(u16::from_ne_bytes([s.0[0], s.0[1]]), libc::AF_INET6 as u16);
        assert_eq!(
            s.0[8..24],
            Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets()
        );

        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let s = sockaddr(IpAddr::V6(v6), true).unwrap();
        assert_eq!(s.0[8..24], v6.octets());
        assert!(sockaddr(IpAddr::V6(v6), false).is_err());
    }

    #[test]
    fn key_too_long_is_refused_before_the_kernel() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = set_key(
            sock.as_fd(),
            false,
            "127.0.0.1".parse().unwrap(),
            &[b'k'; 81],
        )
        .unwrap_err();
        assert!(matches!(err, Md5Error::KeyTooLong { len: 81 }), "{err}");
        // 80 bytes pass the length check; the kernel then refuses a UDP socket, and the error
        // names the peer.
        let err = set_key(
            sock.as_fd(),
            false,
            "127.0.0.1".parse().unwrap(),
            &[b'k'; 80],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("setsockopt(TCP_MD5SIG) for 127.0.0.1:"),
            "{err}"
        );
    }

    async fn signed_listener(addr: &str, peer: IpAddr, key: &[u8]) -> TcpListener {
        let addr: SocketAddr = addr.parse().unwrap();
        let l = TcpListener::bind(addr).await.unwrap();
        set_key(l.as_fd(), addr.is_ipv6(), peer, key).unwrap();
        l
    }

    async fn connect(to: SocketAddr, key: Option<&[u8]>) -> io::Result<TcpStream> {
        let s = if to.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(key) = key {
            set_key(s.as_fd(), to.is_ipv6(), to.ip(), key).map_err(io::Error::other)?;
        }
        tokio::time::timeout(Duration::from_millis(500), s.connect(to))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
    }

    /// The kernel really signs and checks: on loopback, a matching key connects; a wrong key
    /// or none leaves the SYN unanswered (dropped, not refused).
    #[tokio::test]
    async fn loopback_signed_connections_ipv4_ipv6_and_v4_mapped() {
        for (listen, peer, connect_to_ip) in [
            ("127.0.0.1:0", "127.0.0.1", "127.0.0.1"),
            ("[::1]:0", "::1", "::1"),
            // A dual-stack listener and an IPv4 peer: the key is installed v4-mapped.
            ("[::]:0", "127.0.0.1", "127.0.0.1"),
        ] {
            let l = signed_listener(listen, peer.parse().unwrap(), b"s3cret").await;
            let to = SocketAddr::new(
                connect_to_ip.parse().unwrap(),
                l.local_addr().unwrap().port(),
            );
            let ok = connect(to, Some(b"s3cret")).await;
            assert!(ok.is_ok(), "{listen}: matching key: {ok:?}");
            let (_accepted, from) = l.accept().await.unwrap();
            assert_eq!(from.ip().to_canonical(), to.ip());

            let wrong = connect(to, Some(b"other")).await;
            assert_eq!(
                wrong.map(|_| ()).map_err(|e| e.kind()),
                Err(io::ErrorKind::TimedOut),
                "{listen}: wrong key"
            );
            let none = connect(to, None).await;
            assert_eq!(
                none.map(|_| ()).map_err(|e| e.kind()),
                Err(io::ErrorKind::TimedOut),
                "{listen}: no key"
            );
        }
    }
}
