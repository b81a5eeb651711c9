//! Hashing for the consistent hashing tables: the key a request hashes to, and the name an
//! endpoint is placed by.
//!
//! Both use xxHash64 with seed 0 (Yann Collet's XXH64), as Envoy's `HashUtil::xxHash64` does, and
//! hash the same inputs Envoy does: a header's value, a cookie's value, a query parameter's value,
//! the client address as text; endpoints by their address as text. A request thus gets the same
//! key here as in Envoy, and proxies that agree on the endpoint names agree on which endpoint
//! serves which key.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Request, Uri, header};
use xxhash_rust::xxh64::{Xxh64, xxh64};

/// The stable name of an endpoint, which consistent hashing tables ([`RingHash`](crate::RingHash),
/// [`Maglev`](crate::Maglev)) place it by.
///
/// It must be the same on every proxy and across restarts, or the proxies would disagree on which
/// endpoint a key maps to; it should be unique within a set. Addresses use their text
/// (`"10.0.0.1:8080"`, as Envoy hashes them), strings their bytes, integers their decimal text.
/// Implement it for your own endpoint type by returning such a name.
pub trait EndpointId {
    /// The bytes the endpoint is hashed by.
    fn id_bytes(&self) -> Cow<'_, [u8]>;
}

impl EndpointId for str {
    fn id_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl EndpointId for String {
    fn id_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl EndpointId for [u8] {
    fn id_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
}

impl EndpointId for Vec<u8> {
    fn id_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
}

macro_rules! id_by_display {
    ($($t:ty),*) => {$(
        impl EndpointId for $t {
            fn id_bytes(&self) -> Cow<'_, [u8]> {
                Cow::Owned(self.to_string().into_bytes())
            }
        }
    )*};
}

id_by_display!(
    SocketAddr, IpAddr, Ipv4Addr, Ipv6Addr, u8, u16, u32, u64, u128, usize, i8, i16, i32, i64,
    i128, isize, char
);

impl<T: EndpointId + ?Sized> EndpointId for &T {
    fn id_bytes(&self) -> Cow<'_, [u8]> {
        (**self).id_bytes()
    }
}

impl<T: EndpointId + ?Sized> EndpointId for Box<T> {
    fn id_bytes(&self) -> Cow<'_, [u8]> {
        (**self).id_bytes()
    }
}

impl<T: EndpointId + ?Sized> EndpointId for Arc<T> {
    fn id_bytes(&self) -> Cow<'_, [u8]> {
        (**self).id_bytes()
    }
}

impl<T: EndpointId + ?Sized> EndpointId for Rc<T> {
    fn id_bytes(&self) -> Cow<'_, [u8]> {
        (**self).id_bytes()
    }
}

impl<T: EndpointId + ToOwned + ?Sized> EndpointId for Cow<'_, T> {
    fn id_bytes(&self) -> Cow<'_, [u8]> {
        self.as_ref().id_bytes()
    }
}

/// xxHash64 with seed 0 of `bytes`: the hash of a request key, as Envoy computes it.
#[inline]
pub fn hash_key(bytes: &[u8]) -> u64 {
    xxh64(bytes, 0)
}

/// Where a request's hash key comes from, for [`RingHash`](crate::RingHash) and
/// [`Maglev`](crate::Maglev). Chosen per backend by configuration.
///
/// ```
/// use std::net::{IpAddr, Ipv4Addr};
/// use novaedge_lb::HashPolicy;
///
/// let req = http::Request::get("/cart?user=42")
///     .header("x-user", "alice")
///     .header("cookie", "theme=dark; session=abc123")
///     .body(())
///     .unwrap();
/// let peer = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
/// let by_header = HashPolicy::Header(http::HeaderName::from_static("x-user"));
/// assert_eq!(by_header.hash(&req, peer), Some(novaedge_lb::hash_key(b"alice")));
/// let by_cookie = HashPolicy::Cookie("session".into());
/// assert_eq!(by_cookie.hash(&req, peer), Some(novaedge_lb::hash_key(b"abc123")));
/// let by_query = HashPolicy::QueryParam("user".into());
/// assert_eq!(by_query.hash(&req, peer), Some(novaedge_lb::hash_key(b"42")));
/// assert_eq!(HashPolicy::SourceIp.hash(&req, peer), Some(novaedge_lb::hash_key(b"192.0.2.7")));
/// // Absent inputs give no key; the table then picks with a random one.
/// assert_eq!(HashPolicy::Cookie("missing".into()).hash(&req, peer), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashPolicy {
    /// The value of a request header. A header sent several times hashes all its values, sorted,
    /// so that their order does not matter (as Envoy does).
    Header(HeaderName),
    /// The value of a cookie in the `Cookie` header(s), without surrounding double quotes.
    Cookie(String),
    /// The client's IP address as text (`"192.0.2.7"`, `"2001:db8::1"`).
    SourceIp,
    /// The raw (not percent-decoded) value of the first query parameter of this name; a
    /// parameter without `=` has the empty value.
    QueryParam(String),
}

// === impl HashPolicy ===

impl HashPolicy {
    /// The hash key of `req` from client `peer`, or `None` if the request lacks the input.
    pub fn hash<B>(&self, req: &Request<B>, peer: IpAddr) -> Option<u64> {
        self.hash_parts(req.uri(), req.headers(), peer)
    }

    /// As [`hash`](Self::hash), from the parts a proxy may hold instead of a whole request.
    pub fn hash_parts(&self, uri: &Uri, headers: &HeaderMap, peer: IpAddr) -> Option<u64> {
        match self {
            HashPolicy::Header(name) => {
                let mut values = headers.get_all(name).iter();
                let first = values.next()?;
                let Some(second) = values.next() else {
                    return Some(hash_key(first.as_bytes()));
                };
                let mut all: Vec<&[u8]> = vec![first.as_bytes(), second.as_bytes()];
                all.extend(values.map(|v| v.as_bytes()));
                all.sort_unstable();
                let mut hasher = Xxh64::new(0);
                for value in all {
                    hasher.update(value);
                }
                Some(hasher.digest())
            }
            HashPolicy::Cookie(name) => cookie(headers, name).map(hash_key),
            HashPolicy::SourceIp => Some(hash_key(peer.to_string().as_bytes())),
            HashPolicy::QueryParam(name) => query_param(uri, name).map(hash_key),
        }
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (key, value) = (&pair[..eq], &pair[eq + 1..]);
            (key.trim_ascii() == name.as_bytes()).then(|| {
                let value = value.trim_ascii();
                match value {
                    [b'"', inner @ .., b'"'] => inner,
                    _ => value,
                }
            })
        })
}

fn query_param<'a>(uri: &'a Uri, name: &str) -> Option<&'a [u8]> {
    uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap()
    }

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn xxh64_reference_values() {
        // Published XXH64 test vectors, seed 0.
        assert_eq!(hash_key(b""), 0xEF46_DB37_51D8_E999);
        assert_eq!(hash_key(b"a"), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(hash_key(b"abc"), 0x44BC_2CF5_AD77_0999);
    }

    #[test]
    fn header_values_hash_in_any_order() {
        let policy = HashPolicy::Header(HeaderName::from_static("x-key"));
        let ab = req("/", &[("x-key", "a"), ("x-key", "b")]);
        let ba = req("/", &[("x-key", "b"), ("x-key", "a")]);
        let a = req("/", &[("x-key", "a")]);
        assert_eq!(policy.hash(&ab, PEER), policy.hash(&ba, PEER));
        assert_eq!(policy.hash(&ab, PEER), Some(hash_key(b"ab")));
        assert_ne!(policy.hash(&ab, PEER), policy.hash(&a, PEER));
        assert_eq!(policy.hash(&req("/", &[]), PEER), None);
    }

    #[test]
    fn cookies_are_found_across_headers_and_unquoted() {
        let policy = HashPolicy::Cookie("sid".into());
        let r = req(
            "/",
            &[
                ("cookie", "a=1; sidx=2"),
                ("cookie", "b=3;  sid=\"xyz\" ;c=4"),
            ],
        );
        assert_eq!(policy.hash(&r, PEER), Some(hash_key(b"xyz")));
        let r = req("/", &[("cookie", "sid=; other=1")]);
        assert_eq!(policy.hash(&r, PEER), Some(hash_key(b"")));
        let r = req("/", &[("cookie", "nosid")]);
        assert_eq!(policy.hash(&r, PEER), None);
    }

    #[test]
    fn query_params_use_the_first_raw_value() {
        let policy = HashPolicy::QueryParam("u".into());
        let r = req("/p?x=1&u=a%20b&u=c", &[]);
        assert_eq!(policy.hash(&r, PEER), Some(hash_key(b"a%20b")));
        let r = req("/p?u&x=1", &[]);
        assert_eq!(policy.hash(&r, PEER), Some(hash_key(b"")));
        assert_eq!(policy.hash(&req("/p?uu=1", &[]), PEER), None);
        assert_eq!(policy.hash(&req("/p", &[]), PEER), None);
    }

    #[test]
    fn source_ip_hashes_the_address_text() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let r = req("/", &[]);
        assert_eq!(
            HashPolicy::SourceIp.hash(&r, v6),
            Some(hash_key(b"2001:db8::1"))
        );
    }

    #[test]
    fn endpoint_ids() {
        let addr: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        assert_eq!(&*addr.id_bytes(), b"10.0.0.1:8080");
        assert_eq!(&*Arc::new(addr).id_bytes(), b"10.0.0.1:8080");
        assert_eq!(&*42u32.id_bytes(), b"42");
        assert_eq!(&*"pod-a".id_bytes(), b"pod-a");
        assert_eq!(&*String::from("pod-a").id_bytes(), b"pod-a");
    }
}
