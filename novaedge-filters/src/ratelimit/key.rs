//! Where a request's rate-limit key comes from, and the compact form the limiter stores.
//!
//! Text keys (header values, [`RateLimitKey`]s) are not stored as they came: they are hashed to
//! 128 bits with a per-limiter random SipHash key. That keeps every stored key the same small
//! size whatever a client sends (a 16 KiB header value costs as much as a 4-byte one), and the
//! random hash key keeps clients from choosing values that collide. Two distinct values share a
//! bucket only on a 128-bit collision (about 10^-29 for 100,000 live keys).

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::{HeaderName, Request};

use crate::ClientAddr;

/// Where the rate limiter takes a request's key from: each key has its own bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The client's IP address, with addresses
    /// grouped by prefix: IPv6 clients usually hold a whole `/64` (and can pick any address in
    /// it), so a per-address key would give each of them 2^64 buckets.
    ///
    /// The address is the [`ClientIp`](crate::ip::ClientIp) request extension when an IP filter
    /// earlier in the stack resolved one (from `X-Forwarded-For` behind trusted proxies, say),
    /// else the socket peer from the [`ClientAddr`] extension. IPv4-mapped IPv6 addresses
    /// (`::ffff:192.0.2.1`) count as the IPv4 address.
    ClientIp {
        /// Prefix length IPv4 addresses are grouped by (0..=32); 32 keys each address alone.
        ipv4_prefix: u8,
        /// Prefix length IPv6 addresses are grouped by (0..=128); the default is 64.
        ipv6_prefix: u8,
    },
    /// The value of a request header (the first one, if the header is repeated), byte for
    /// byte: `Bearer a` and `bearer a` are two keys.
    Header(HeaderName),
    /// The [`RateLimitKey`] request extension set by an earlier filter.
    Extension,
    /// A claim of the token the JWT filter verified (its
    /// [`VerifiedClaims`](crate::jwt::VerifiedClaims) extension); a dotted name walks into
    /// nested objects. A string claim is the key as it is, any other value its JSON text. No
    /// verified token, or no such claim: the request has no key (see [`MissingKey`]).
    JwtClaim(String),
    /// One bucket shared by every request of the route.
    Global,
}

impl KeySource {
    /// Keys on the client IP, IPv4 addresses alone and IPv6 addresses grouped by `/64`.
    pub fn client_ip() -> Self {
        KeySource::ClientIp {
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }

    /// Keys on the value of the request header `name`.
    pub fn header(name: HeaderName) -> Self {
        KeySource::Header(name)
    }
}

impl Default for KeySource {
    /// [`KeySource::client_ip`].
    fn default() -> Self {
        KeySource::client_ip()
    }
}

/// What to do with a request that has no key: no [`ClientAddr`], no such header, no
/// [`RateLimitKey`] extension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingKey {
    /// All requests without a key share one bucket (the default): a client cannot escape the
    /// limit by leaving the key out, at the price of limiting all such clients together.
    #[default]
    SharedBucket,
    /// Requests without a key are not limited: for keys that only some clients are meant to be
    /// limited by (an API key header that anonymous traffic does not carry, say).
    NoLimit,
}

/// A rate-limit key as a request extension, for [`KeySource::Extension`].
///
/// Any filter that runs before the rate limiter may insert it. The JWT filter is its intended
/// producer: keying on a JWT claim means the JWT filter, once it has verified a token, inserts
/// the configured claim's value (`sub`, a tenant id) as a `RateLimitKey`. Keeping the claim
/// choice on the JWT side leaves this module knowing nothing about tokens, and lets any other
/// authentication filter key the limiter the same way.
///
/// ```
/// use novaedge_filters::ratelimit::RateLimitKey;
///
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(RateLimitKey::new("tenant-42"));
/// assert_eq!(req.extensions().get::<RateLimitKey>().unwrap().as_str(), "tenant-42");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RateLimitKey(pub String);

impl RateLimitKey {
    /// A key from any string.
    pub fn new(key: impl Into<String>) -> Self {
        RateLimitKey(key.into())
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for RateLimitKey {
    fn from(key: String) -> Self {
        RateLimitKey(key)
    }
}

impl From<&str> for RateLimitKey {
    fn from(key: &str) -> Self {
        RateLimitKey(key.to_owned())
    }
}

/// A key as the limiter stores it: small, fixed-size and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// A client address, already cut to its prefix.
    Ip(IpAddr),
    /// A 128-bit keyed hash of a header value or [`RateLimitKey`].
    Text([u64; 2]),
    /// The shared bucket of requests without a key ([`MissingKey::SharedBucket`]).
    Missing,
}

/// Reads keys from requests for one limiter; holds that limiter's random hash key.
#[derive(Debug)]
pub(crate) struct KeyExtractor {
    source: KeySource,
    hasher: std::collections::hash_map::RandomState,
}

impl KeyExtractor {
    pub(crate) fn new(source: KeySource) -> Self {
        KeyExtractor {
            source,
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The request's key; `None` when the request has none (see [`MissingKey`]). Never called
    /// for [`KeySource::Global`], which has no keyed state.
    pub(crate) fn extract<B>(&self, req: &Request<B>) -> Option<Key> {
        match &self.source {
            KeySource::ClientIp {
                ipv4_prefix,
                ipv6_prefix,
            } => {
                let ip = match req.extensions().get::<crate::ip::ClientIp>() {
                    Some(crate::ip::ClientIp(ip)) => *ip,
                    None => req.extensions().get::<ClientAddr>()?.0.ip(),
                };
                Some(Key::Ip(ip_prefix(ip, *ipv4_prefix, *ipv6_prefix)))
            }
            KeySource::Header(name) => {
                let value = req.headers().get(name)?;
                Some(Key::Text(self.hash_text(value.as_bytes())))
            }
            KeySource::Extension => {
                let key = req.extensions().get::<RateLimitKey>()?;
                Some(Key::Text(self.hash_text(key.0.as_bytes())))
            }
            KeySource::JwtClaim(claim) => {
                let claims = req.extensions().get::<crate::jwt::VerifiedClaims>()?;
                let text = match claims.get(claim)? {
                    serde_json::Value::String(s) => self.hash_text(s.as_bytes()),
                    other => self.hash_text(other.to_string().as_bytes()),
                };
                Some(Key::Text(text))
            }
            KeySource::Global => Some(Key::Missing),
        }
    }

    fn hash_text(&self, text: &[u8]) -> [u64; 2] {
        // Two SipHash-1-3 outputs under the same random key, told apart by a domain byte.
        let half = |domain: u8| {
            let mut h = self.hasher.build_hasher();
            h.write_u8(domain);
            text.hash(&mut h);
            h.finish()
        };
        [half(0), half(1)]
    }
}

/// `addr` with all bits past its family's prefix length cleared.
pub(crate) fn ip_prefix(addr: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(ipv4_prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(ipv6_prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http::HeaderValue;

    use super::*;

    fn from(addr: &str) -> Request<()> {
        let mut req = Request::new(());
        let addr: SocketAddr = addr.parse().unwrap();
        req.extensions_mut().insert(ClientAddr(addr));
        req
    }

    #[test]
    fn ipv4_addresses_are_their_own_keys_by_default() {
        let x = KeyExtractor::new(KeySource::client_ip());
        let a = x.extract(&from("192.0.2.1:1000")).unwrap();
        let a_other_port = x.extract(&from("192.0.2.1:2000")).unwrap();
        let b = x.extract(&from("192.0.2.2:1000")).unwrap();
        assert_eq!(a, Key::Ip("192.0.2.1".parse().unwrap()));
        assert_eq!(a, a_other_port, "the port is not part of the key");
        assert_ne!(a, b);
    }

    #[test]
    fn ipv4_prefix_groups_addresses() {
        let x = KeyExtractor::new(KeySource::ClientIp {
            ipv4_prefix: 24,
            ipv6_prefix: 64,
        });
        let a = x.extract(&from("192.0.2.1:1")).unwrap();
        let b = x.extract(&from("192.0.2.254:1")).unwrap();
        let c = x.extract(&from("192.0.3.1:1")).unwrap();
        assert_eq!(a, Key::Ip("192.0.2.0".parse().unwrap()));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn ipv6_addresses_are_grouped_by_their_64() {
        let x = KeyExtractor::new(KeySource::client_ip());
        let a = x.extract(&from("[2001:db8:1:2::1]:1")).unwrap();
        let b = x
            .extract(&from("[2001:db8:1:2:ffff:ffff:ffff:ffff]:1"))
            .unwrap();
        let c = x.extract(&from("[2001:db8:1:3::1]:1")).unwrap();
        assert_eq!(a, Key::Ip("2001:db8:1:2::".parse().unwrap()));
        assert_eq!(a, b, "same /64, same bucket");
        assert_ne!(a, c, "next /64, another bucket");
    }

    #[test]
    fn ipv6_prefix_is_configurable() {
        let per_address = KeyExtractor::new(KeySource::ClientIp {
            ipv4_prefix: 32,
            ipv6_prefix: 128,
        });
        let a = per_address.extract(&from("[2001:db8::1]:1")).unwrap();
        let b = per_address.extract(&from("[2001:db8::2]:1")).unwrap();
        assert_ne!(a, b);

        let per_48 = KeyExtractor::new(KeySource::ClientIp {
            ipv4_prefix: 32,
            ipv6_prefix: 48,
        });
        let a = per_48.extract(&from("[2001:db8:1:2::1]:1")).unwrap();
        let b = per_48.extract(&from("[2001:db8:1:ffff::1]:1")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, Key::Ip("2001:db8:1::".parse().unwrap()));
    }

    #[test]
    fn zero_prefix_puts_every_address_in_one_bucket() {
        assert_eq!(
            ip_prefix("203.0.113.9".parse().unwrap(), 0, 0),
            "0.0.0.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            ip_prefix("2001:db8::9".parse().unwrap(), 0, 0),
            "::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_ipv4() {
        let x = KeyExtractor::new(KeySource::client_ip());
        let mapped = x.extract(&from("[::ffff:192.0.2.1]:1")).unwrap();
        let plain = x.extract(&from("192.0.2.1:1")).unwrap();
        assert_eq!(mapped, plain);
    }

    #[test]
    fn no_client_addr_is_no_key() {
        let x = KeyExtractor::new(KeySource::client_ip());
        assert_eq!(x.extract(&Request::new(())), None);
    }

    #[test]
    fn header_values_are_keys() {
        let x = KeyExtractor::new(KeySource::header(HeaderName::from_static("x-api-key")));
        let with = |v: &'static str| {
            let mut req = Request::new(());
            req.headers_mut()
                .insert("x-api-key", HeaderValue::from_static(v));
            x.extract(&req)
        };
        assert_eq!(with("alpha"), with("alpha"));
        assert_ne!(with("alpha"), with("beta"));
        assert_ne!(with("alpha"), with("Alpha"), "values compare byte for byte");
        assert!(matches!(with("alpha"), Some(Key::Text(_))));
        assert_eq!(x.extract(&Request::new(())), None, "missing header");
    }

    #[test]
    fn first_value_of_a_repeated_header_is_the_key() {
        let x = KeyExtractor::new(KeySource::header(HeaderName::from_static("x-api-key")));
        let mut one = Request::new(());
        one.headers_mut()
            .append("x-api-key", HeaderValue::from_static("a"));
        let mut two = Request::new(());
        two.headers_mut()
            .append("x-api-key", HeaderValue::from_static("a"));
        two.headers_mut()
            .append("x-api-key", HeaderValue::from_static("b"));
        assert_eq!(x.extract(&one), x.extract(&two));
    }

    #[test]
    fn extension_keys() {
        let x = KeyExtractor::new(KeySource::Extension);
        let with = |k: &str| {
            let mut req = Request::new(());
            req.extensions_mut().insert(RateLimitKey::new(k));
            x.extract(&req)
        };
        assert_eq!(with("user-1"), with("user-1"));
        assert_ne!(with("user-1"), with("user-2"));
        assert_eq!(x.extract(&Request::new(())), None, "missing extension");
    }

    #[test]
    fn text_hashes_differ_between_limiters() {
        // Each limiter draws its own hash key, so one route's key values say nothing about
        // another's collisions.
        let a = KeyExtractor::new(KeySource::Extension);
        let b = KeyExtractor::new(KeySource::Extension);
        assert_ne!(a.hash_text(b"same"), b.hash_text(b"same"));
    }

    #[test]
    fn stored_keys_are_small_whatever_the_input() {
        // The module documentation's memory figures count on this.
        assert_eq!(std::mem::size_of::<Key>(), 24);
    }

    #[test]
    fn global_is_one_key() {
        let x = KeyExtractor::new(KeySource::Global);
        assert_eq!(x.extract(&from("192.0.2.1:1")), Some(Key::Missing));
        assert_eq!(x.extract(&Request::new(())), Some(Key::Missing));
    }

    #[test]
    fn the_ip_filter_s_client_ip_wins_over_the_peer() {
        let extractor = KeyExtractor::new(KeySource::client_ip());
        let mut req = Request::new(());
        req.extensions_mut()
            .insert(ClientAddr("10.0.0.1:5000".parse::<SocketAddr>().unwrap()));
        let peer = extractor.extract(&req);
        req.extensions_mut()
            .insert(crate::ip::ClientIp("192.0.2.7".parse().unwrap()));
        assert_eq!(
            extractor.extract(&req),
            Some(Key::Ip("192.0.2.7".parse().unwrap()))
        );
        assert_ne!(extractor.extract(&req), peer);
    }

    #[test]
    fn jwt_claims_key_by_value() {
        let extractor = KeyExtractor::new(KeySource::JwtClaim("org.id".into()));
        let claims = |value: serde_json::Value| {
            let mut req = Request::new(());
            let map = serde_json::json!({ "org": { "id": value } });
            req.extensions_mut()
                .insert(crate::jwt::VerifiedClaims(map.as_object().unwrap().clone()));
            req
        };
        let a = extractor.extract(&claims(serde_json::json!("acme")));
        assert!(a.is_some());
        assert_eq!(extractor.extract(&claims(serde_json::json!("acme"))), a);
        assert_ne!(extractor.extract(&claims(serde_json::json!("other"))), a);
        assert!(extractor.extract(&claims(serde_json::json!(42))).is_some());
        // No verified token: no key.
        assert_eq!(extractor.extract(&Request::new(())), None);
    }
}
