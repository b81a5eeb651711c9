//! Numbers and addresses written as ASCII into a byte buffer, for what the request path writes
//! (access log lines, `X-Forwarded-For`): `core::fmt` costs several times more, with padding and
//! alignment nobody asked for.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::observe::request_id::HEX;

/// A decimal number. Below 1000 (statuses, empty and small bodies) the digits are written
/// straight in.
#[inline]
pub(crate) fn number(n: u64, out: &mut Vec<u8>) {
    match n {
        0..10 => digits::<1>(n, out),
        10..100 => digits::<2>(n, out),
        100..1000 => digits::<3>(n, out),
        _ => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
    }
}

/// The `WIDTH` low decimal digits of `n`, zero-padded. The width is a constant, so that the
/// digits are one store of a known size.
#[inline]
pub(crate) fn digits<const WIDTH: usize>(mut n: u64, out: &mut Vec<u8>) {
    let mut buf = [b'0'; WIDTH];
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&buf);
}

pub(crate) fn hex_byte(b: u8, out: &mut Vec<u8>) {
    out.push(HEX[usize::from(b >> 4)]);
    out.push(HEX[usize::from(b & 0xf)]);
}

/// 32 lowercase hex digits, as W3C trace ids are written.
pub(crate) fn hex128(id: u128, out: &mut Vec<u8>) {
    for byte in id.to_be_bytes() {
        hex_byte(byte, out);
    }
}

pub(crate) fn ip(addr: IpAddr, out: &mut Vec<u8>) {
    match addr {
        IpAddr::V4(v4) => {
            let mut buf = [0; V4_BUF];
            let len = ipv4(v4.octets(), &mut buf);
            out.extend_from_slice(&buf[..len]);
        }
        // RFC 5952's zero compression is std's to get right; IPv6 clients pay for it.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Room for `255.255.255.255:65535` and the padding [`ipv4`] writes past its end.
const V4_BUF: usize = 24;

/// Writes `a.b.c.d` at the start of `buf` and returns its length: each octet's digits from a
/// table, four bytes at a time, into a stack buffer that is then copied once. Four `itoa` calls
/// and seven pushes cost several times as much, and every access log line has one or two
/// addresses.
fn ipv4(octets: [u8; 4], buf: &mut [u8; V4_BUF]) -> usize {
    let mut len = 0;
    for octet in octets {
        let (digits, n) = OCTETS[usize::from(octet)];
        buf[len..len + 4].copy_from_slice(&digits);
        len += usize::from(n);
    }
    // The last octet's dot is not part of the address.
    len - 1
}

/// Writes `port`'s digits into `buf` at `at`, from the last digit back, so that nothing is
/// copied twice; returns where they end.
fn port_at(port: u16, buf: &mut [u8], at: usize) -> usize {
    let width = match port {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    };
    let mut n = port;
    for slot in buf[at..at + width].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    at + width
}

/// Every octet as its decimal digits followed by a dot, padded to four bytes, and how many of
/// the four are used (`(*b"7.\0\0", 2)`, `(*b"255.", 4)`).
const OCTETS: [([u8; 4], u8); 256] = {
    let mut table = [([0; 4], 0); 256];
    let mut i = 0;
    while i < 256 {
        let n = i as u8;
        let (hundreds, tens, ones) = (b'0' + n / 100, b'0' + n / 10 % 10, b'0' + n % 10);
        table[i] = match n {
            0..=9 => ([ones, b'.', 0, 0], 2),
            10..=99 => ([tens, ones, b'.', 0], 3),
            _ => ([hundreds, tens, ones, b'.'], 4),
        };
        i += 1;
    }
    table
};

/// `1.2.3.4:80` or `[::1]:80` (scope ids and flow info are not shown). An IPv4 address and its
/// port are put together on the stack and copied out once.
pub(crate) fn socket_addr(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(v4) => {
            let mut buf = [0; V4_BUF];
            let mut len = ipv4(v4.octets(), &mut buf);
            buf[len] = b':';
            len = port_at(addr.port(), &mut buf, len + 1);
            out.extend_from_slice(&buf[..len]);
        }
        IpAddr::V6(_) => {
            out.push(b'[');
            ip(addr.ip(), out);
            out.extend_from_slice(b"]:");
            number(u64::from(addr.port()), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_numbers() {
        let mut out = Vec::new();
        for addr in [
            "10.0.0.1:5123",
            "255.255.255.255:65535",
            "1.20.100.9:0",
            "0.99.199.250:1",
            "127.0.0.1:9",
            "127.0.0.1:10",
            "127.0.0.1:99",
            "127.0.0.1:100",
            "127.0.0.1:999",
            "127.0.0.1:1000",
            "127.0.0.1:9999",
            "127.0.0.1:10000",
            "[::1]:80",
            "[fd00::1:2]:8080",
        ] {
            out.clear();
            socket_addr(addr.parse().unwrap(), &mut out);
            assert_eq!(out, addr.as_bytes());
        }
        out.clear();
        ip("0.0.0.0".parse().unwrap(), &mut out);
        out.push(b' ');
        for n in [0, 9, 10, 42, 99, 100, 999, 1000, u64::MAX] {
            number(n, &mut out);
            out.push(b' ');
        }
        out.pop();
        out.push(b' ');
        digits::<3>(7, &mut out);
        out.push(b' ');
        hex128(0xab, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0.0.0.0 0 9 10 42 99 100 999 1000 18446744073709551615 007 000000000000000000000000000000ab"
        );
    }
}
