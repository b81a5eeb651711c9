//! IP allow / deny lists: requests from clients outside the allowed CIDRs, or inside the denied
//! ones, are refused with `403 Forbidden` before any other work is done.
//!
//! The model is nginx's `allow` / `deny` with `real_ip` (`set_real_ip_from`,
//! `real_ip_recursive`) and Envoy's RBAC `remote_ip` with `xff_num_trusted_hops`.
//!
//! # Decision
//!
//! - A client in a `deny` CIDR is refused, whatever the allow list says: deny wins.
//! - With a non-empty `allow` list, a client in none of its CIDRs is refused.
//! - Everyone else is let through. Empty lists refuse no one: the layer then only resolves the
//!   client address (below) and records it, which the engine can use for routes whose rate limit
//!   keys on the client IP.
//! - When no client address can be found at all (no [`ClientAddr`] extension and no usable
//!   `X-Forwarded-For`), the request is refused if there is any rule, since it cannot be checked,
//!   and let through without [`ClientIp`] otherwise.
//!
//! A refusal is `403 Forbidden` with an empty body and no further header: there is no standard
//! header to say why, and the client learns nothing about the lists.
//!
//! IPv4 and IPv6 CIDRs can be mixed. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as a
//! dual-stack socket reports IPv4 peers) are treated as the IPv4 address `a.b.c.d`: they match
//! IPv4 CIDRs, and mapped CIDRs in the configuration (`::ffff:10.0.0.0/104`) are read as the IPv4
//! CIDRs they denote (`10.0.0.0/8`). Other IPv6 CIDRs match IPv6 clients only. Lists are merged
//! into sorted ranges when the layer is built, so a check is a binary search.
//!
//! # Client address
//!
//! [`ClientIpSource`] says where the client's address comes from:
//!
//! - [`ClientIpSource::Peer`] (the default): the socket peer, from the [`ClientAddr`] extension.
//! - [`ClientIpSource::XForwardedFor`] with `trusted_hops: N`: every connection is known to come
//!   through a chain of proxies, the last of which is our peer and appends, as every proxy does,
//!   the address it received the request from to `X-Forwarded-For`. The rightmost `N` entries
//!   were added by further trusted proxies in front of it and are skipped; the client is the entry
//!   just left of them. With `N = 0` the client is the rightmost entry (one load balancer in
//!   front). Example with `N = 1`: `X-Forwarded-For: 203.0.113.9, 198.51.100.7, 10.0.0.5` gives
//!   `198.51.100.7`; whatever a client wrote further left is never read. When the header is
//!   missing, has `N` entries or fewer, or one of the rightmost `N + 1` entries is not an address,
//!   the filter falls back to the peer address: that is what the proxy chain itself guarantees, and
//!   a client cannot pick its address by sending a short or broken header. Use this source only
//!   when nothing can reach the listener except through those proxies: otherwise a client can
//!   write its own header.
//! - [`ClientIpSource::TrustedProxies`]: `X-Forwarded-For` is read only when the peer itself is in
//!   one of the trusted-proxy CIDRs; then the entries are walked right to left, skipping those in
//!   the trusted CIDRs too, and the first address outside them is the client (nginx
//!   `real_ip_recursive on`). When every entry is a trusted proxy, the leftmost one is the client.
//!   When the peer is not trusted, the header is missing, or a malformed entry is reached before
//!   the client, the peer address is the client.
//!
//! Entries may be bare addresses (`192.0.2.1`, `2001:db8::1`), bracketed IPv6 (`[2001:db8::1]`),
//! or carry a port (`192.0.2.1:4711`, `[2001:db8::1]:4711`), as some proxies write them. Several
//! `X-Forwarded-For` header lines are read as one list, in order. The RFC 7239 `Forwarded` header
//! is not read.
//!
//! The address the filter settles on (IPv4-mapped addresses as IPv4) is put in the [`ClientIp`]
//! request extension, so that later filters (the rate limit) key on the same client.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::convert::Infallible;
//! use std::net::SocketAddr;
//!
//! use http::{Request, Response, StatusCode};
//! use novaedge_filters::ClientAddr;
//! use novaedge_filters::ip::{ClientIp, ClientIpSource, IpFilterConfig, IpFilterLayer, parse_cidrs};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! let layer = IpFilterLayer::new(IpFilterConfig {
//!     allow: parse_cidrs("allow", ["10.0.0.0/8", "2001:db8::/32"])?,
//!     deny: parse_cidrs("deny", ["10.9.0.0/16"])?,
//!     client_ip: ClientIpSource::Peer,
//! })?;
//! let svc = layer.layer(service_fn(|req: Request<()>| async move {
//!     // Later filters and the upstream see the resolved client address.
//!     let ip = req.extensions().get::<ClientIp>().map(|c| c.0.to_string());
//!     Ok::<_, Infallible>(Response::new(ip.unwrap_or_default()))
//! }));
//!
//! let from = |peer: &str| {
//!     let mut req = Request::new(());
//!     req.extensions_mut().insert(ClientAddr(peer.parse::<SocketAddr>().unwrap()));
//!     req
//! };
//! // In the allow list.
//! let res = svc.clone().oneshot(from("10.1.2.3:50000")).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(res.into_body(), "10.1.2.3");
//! // An IPv4-mapped peer address counts as IPv4.
//! let res = svc.clone().oneshot(from("[::ffff:10.1.2.3]:50000")).await?;
//! assert_eq!(res.into_body(), "10.1.2.3");
//! // Denied, although also allowed: deny wins.
//! let res = svc.clone().oneshot(from("10.9.0.1:50000")).await?;
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! // Not in the allow list.
//! let res = svc.oneshot(from("192.0.2.1:50000")).await?;
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! assert!(res.into_body().is_empty());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::HeaderName;
use http::{HeaderMap, Request, Response, StatusCode};
use ipnet::{IpNet, Ipv4Net};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::ClientAddr;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client address the IP filter settled on, as a request extension: the peer or a trusted
/// `X-Forwarded-For` entry, IPv4-mapped IPv6 addresses given as IPv4. Read it with
/// `req.extensions().get::<ClientIp>()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

/// Where the client's address comes from (see the [module docs](self)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ClientIpSource {
    /// The socket peer ([`ClientAddr`]).
    #[default]
    Peer,
    /// `X-Forwarded-For` written by a known chain of proxies: skip the rightmost `trusted_hops`
    /// entries and take the one left of them; the peer when the header is too short or malformed.
    XForwardedFor {
        /// How many rightmost entries were added by trusted proxies beyond the peer.
        trusted_hops: usize,
    },
    /// `X-Forwarded-For` read only when the peer is in one of these CIDRs, walking right to left
    /// past the entries that are in them too.
    TrustedProxies(Vec<IpNet>),
}

/// The configuration of the IP filter. The default refuses no one and takes the peer address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpFilterConfig {
    /// When not empty, only clients in one of these CIDRs are let through.
    pub allow: Vec<IpNet>,
    /// Clients in one of these CIDRs are refused, even when they are in `allow`.
    pub deny: Vec<IpNet>,
    /// Where the client's address comes from.
    pub client_ip: ClientIpSource,
}

/// A configuration [`IpFilterLayer::new`] or [`parse_cidrs`] refused; the message names the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpConfigError {
    /// A list entry is neither an IP address nor a CIDR.
    #[error(
        "{field}[{index}]: {value:?} is not an IP address or CIDR (like 10.0.0.0/8 or 2001:db8::/32)"
    )]
    Cidr {
        /// The field, as given to [`parse_cidrs`].
        field: String,
        /// Position of the entry in the list.
        index: usize,
        /// The entry as given.
        value: String,
        /// What the CIDR parser said.
        #[source]
        source: ipnet::AddrParseError,
    },
    /// [`ClientIpSource::TrustedProxies`] with no CIDR would never trust `X-Forwarded-For`.
    #[error(
        "client_ip.trusted_proxies: the list is empty, so X-Forwarded-For would never be read; use ClientIpSource::Peer to mean that"
    )]
    NoTrustedProxies,
}

/// Parses a list of CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or bare addresses (a `/32` or `/128`),
/// for [`IpFilterConfig`]. Host bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
///
/// # Errors
///
/// [`IpConfigError::Cidr`] for the first entry that is neither, named `field[index]`.
pub fn parse_cidrs<I>(field: &str, items: I) -> Result<Vec<IpNet>, IpConfigError>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let value = item.as_ref().trim();
            match value.parse::<IpNet>() {
                Ok(net) => Ok(net.trunc()),
                Err(source) => {
                    value
                        .parse::<IpAddr>()
                        .map(IpNet::from)
                        .map_err(|_| IpConfigError::Cidr {
                            field: field.to_owned(),
                            index,
                            value: item.as_ref().to_owned(),
                            source,
                        })
                }
            }
        })
        .collect()
}

/// A [`Layer`] that wraps services in [`IpFilter`]. Cheap to clone: the compiled lists are shared.
#[derive(Clone, Debug)]
pub struct IpFilterLayer {
    policy: Arc<Policy>,
}

impl IpFilterLayer {
    /// Compiles `config`.
    ///
    /// # Errors
    ///
    /// [`IpConfigError::NoTrustedProxies`] for an empty [`ClientIpSource::TrustedProxies`] list.
    pub fn new(config: IpFilterConfig) -> Result<Self, IpConfigError> {
        let source = match config.client_ip {
            ClientIpSource::Peer => Source::Peer,
            ClientIpSource::XForwardedFor { trusted_hops } => Source::Hops(trusted_hops),
            ClientIpSource::TrustedProxies(nets) if nets.is_empty() => {
                return Err(IpConfigError::NoTrustedProxies);
            }
            ClientIpSource::TrustedProxies(nets) => Source::Trusted(IpSet::new(&nets)),
        };
        Ok(Self {
            policy: Arc::new(Policy {
                allow: IpSet::new(&config.allow),
                deny: IpSet::new(&config.deny),
                source,
            }),
        })
    }

    /// The client address this layer's services would settle on for `req` (before the lists are
    /// checked); `None` when there is none.
    pub fn client_ip<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        self.policy.client_ip(req)
    }
}

impl<S> Layer<S> for IpFilterLayer {
    type Service = IpFilter<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IpFilter {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The IP filter service built by [`IpFilterLayer`]: refuses clients the lists do not let in,
/// and passes the others to `S` with a [`ClientIp`] extension.
#[derive(Clone, Debug)]
pub struct IpFilter<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for IpFilter<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Default,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let client = self.policy.client_ip(&req);
        let allowed = match client {
            Some(ip) => self.policy.allows(ip),
            None => !self.policy.has_rules(),
        };
        if !allowed {
            tracing::debug!(client = ?client, "IP filter refused the request");
            let mut response = Response::new(ResB::default());
            *response.status_mut() = StatusCode::FORBIDDEN;
            return ResponseFuture {
                state: State::Refused {
                    response: Some(response),
                },
            };
        }
        if let Some(ip) = client {
            req.extensions_mut().insert(ClientIp(ip));
        }
        ResponseFuture {
            state: State::Inner {
                future: self.inner.call(req),
            },
        }
    }
}

pin_project! {
    /// The response future of [`IpFilter`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Refused { response: Option<Response<B>> },
        Inner { #[pin] future: F },
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    #[allow(
        clippy::expect_used,
        reason = "Future's contract: a future polled after it completed may panic"
    )]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("ip::ResponseFuture polled after completion"))),
            StateProj::Inner { future } => future.poll(cx),
        }
    }
}

// === impl Policy ===

#[derive(Debug)]
struct Policy {
    allow: IpSet,
    deny: IpSet,
    source: Source,
}

#[derive(Debug)]
enum Source {
    Peer,
    Hops(usize),
    Trusted(IpSet),
}

impl Policy {
    fn has_rules(&self) -> bool {
        !self.allow.is_empty() || !self.deny.is_empty()
    }

    /// `ip` is canonical (IPv4-mapped addresses as IPv4).
    fn allows(&self, ip: IpAddr) -> bool {
        !self.deny.contains(ip) && (self.allow.is_empty() || self.allow.contains(ip))
    }

    fn client_ip<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        let peer = req
            .extensions()
            .get::<ClientAddr>()
            .map(|addr| addr.0.ip().to_canonical());
        match &self.source {
            Source::Peer => peer,
            Source::Hops(hops) => xff_after_hops(req.headers(), *hops).or(peer),
            Source::Trusted(proxies) => {
                let peer = peer?;
                if !proxies.contains(peer) {
                    return Some(peer);
                }
                Some(xff_past_trusted(req.headers(), proxies).unwrap_or(peer))
            }
        }
    }
}

/// The `X-Forwarded-For` entries, right to left; `None` when a header line is not text.
fn xff_entries_from_right(headers: &HeaderMap) -> Option<impl Iterator<Item = &str>> {
    let lines = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<Vec<&str>>>()?;
    Some(lines.into_iter().rev().flat_map(|line| line.rsplit(',')))
}

/// The entry left of the rightmost `hops` entries, when it and all of those are addresses.
fn xff_after_hops(headers: &HeaderMap, hops: usize) -> Option<IpAddr> {
    let mut entries = xff_entries_from_right(headers)?;
    for _ in 0..hops {
        parse_xff_entry(entries.next()?)?;
    }
    parse_xff_entry(entries.next()?)
}

/// The rightmost entry outside `proxies`, or the leftmost entry when all are in it; `None` when
/// there is no entry or a malformed one comes first.
fn xff_past_trusted(headers: &HeaderMap, proxies: &IpSet) -> Option<IpAddr> {
    let mut last = None;
    for entry in xff_entries_from_right(headers)? {
        let ip = parse_xff_entry(entry)?;
        if !proxies.contains(ip) {
            return Some(ip);
        }
        last = Some(ip);
    }
    last
}

/// One `X-Forwarded-For` entry: an address, bracketed IPv6, or either with a port; canonical.
fn parse_xff_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|sa| sa.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        })?;
    Some(ip.to_canonical())
}

// === impl IpSet ===

/// CIDRs as sorted, disjoint, non-adjacent inclusive ranges, per family.
#[derive(Debug, Default)]
struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    fn new(nets: &[IpNet]) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match canonical_net(*net) {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Self {
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// `ip` is canonical (IPv4-mapped addresses as IPv4).
    fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => in_ranges(&self.v4, u32::from(ip)),
            IpAddr::V6(ip) => in_ranges(&self.v6, u128::from(ip)),
        }
    }
}

/// An IPv4-mapped IPv6 CIDR (`::ffff:0:0/96` or narrower) as the IPv4 CIDR it denotes.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net
        && n.prefix_len() >= 96
        && let Some(v4) = n.network().to_ipv4_mapped()
        && let Ok(v4net) = Ipv4Net::new(v4, n.prefix_len() - 96)
    {
        return IpNet::V4(v4net);
    }
    net
}

fn merge<T: Ord + Copy + num_like::Succ>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            // Overlapping or adjacent: one range.
            Some(last) if last.1.succ().is_none_or(|next| start <= next) => {
                last.1 = last.1.max(end);
            }
            _ => merged.push((start, end)),
        }
    }
    merged
}

fn in_ranges<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|&(start, _)| start <= x);
    i > 0 && ranges[i - 1].1 >= x
}

mod num_like {
    /// The next integer, `None` at the maximum.
    pub(super) trait Succ: Sized {
        fn succ(self) -> Option<Self>;
    }
    impl Succ for u32 {
        fn succ(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
    impl Succ for u128 {
        fn succ(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use http::HeaderValue;
    use tower::{ServiceExt, service_fn};

    use super::*;

    fn nets(items: &[&str]) -> Vec<IpNet> {
        parse_cidrs("test", items).expect("valid CIDRs")
    }

    /// Sends a request from `peer` (when given) with the given `X-Forwarded-For` lines; returns
    /// the status and the `ClientIp` the upstream saw (`None` when refused or absent).
    async fn send(
        config: IpFilterConfig,
        peer: Option<&str>,
        xff: &[&str],
    ) -> (StatusCode, Option<IpAddr>) {
        let seen = Arc::new(Mutex::new(None));
        let seen2 = seen.clone();
        let svc = IpFilterLayer::new(config)
            .expect("valid config")
            .layer(service_fn(move |req: Request<String>| {
                *seen2.lock().unwrap() = Some(req.extensions().get::<ClientIp>().map(|c| c.0));
                async { Ok::<_, Infallible>(Response::new(String::from("upstream body"))) }
            }));
        let mut req = Request::new(String::new());
        if let Some(peer) = peer {
            let addr = match peer.parse::<SocketAddr>() {
                Ok(addr) => addr,
                Err(_) => SocketAddr::new(peer.parse().unwrap(), 40000),
            };
            req.extensions_mut().insert(ClientAddr(addr));
        }
        for line in xff {
            req.headers_mut()
                .append(X_FORWARDED_FOR, HeaderValue::from_str(line).unwrap());
        }
        let res = svc.oneshot(req).await.unwrap();
        let called = seen.lock().unwrap().take();
        match res.status() {
            StatusCode::OK => {
                assert_eq!(res.body(), "upstream body");
                (StatusCode::OK, called.expect("upstream called"))
            }
            status => {
                assert!(called.is_none(), "a refused request reached the upstream");
                assert!(res.body().is_empty());
                (status, None)
            }
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn allow_deny(allow: &[&str], deny: &[&str]) -> IpFilterConfig {
        IpFilterConfig {
            allow: nets(allow),
            deny: nets(deny),
            client_ip: ClientIpSource::Peer,
        }
    }

    // --- lists ---

    #[tokio::test]
    async fn ipv4_allow_list() {
        let cfg = allow_deny(&["10.0.0.0/8", "192.0.2.7"], &[]);
        assert_eq!(
            send(cfg.clone(), Some("10.200.3.4"), &[]).await,
            (StatusCode::OK, ip("10.200.3.4"))
        );
        assert_eq!(
            send(cfg.clone(), Some("192.0.2.7"), &[]).await.0,
            StatusCode::OK
        );
        assert_eq!(
            send(cfg.clone(), Some("192.0.2.8"), &[]).await,
            (StatusCode::FORBIDDEN, None)
        );
        assert_eq!(
            send(cfg, Some("11.0.0.1"), &[]).await.0,
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test]
    async fn ipv6_allow_and_deny() {
        let cfg = allow_deny(&["2001:db8::/32"], &["2001:db8:bad::/48"]);
        assert_eq!(
            send(cfg.clone(), Some("[2001:db8:1::5]:443"), &[]).await,
            (StatusCode::OK, ip("2001:db8:1::5"))
        );
        assert_eq!(
            send(cfg.clone(), Some("[2001:db8:bad::1]:443"), &[])
                .await
                .0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            send(cfg.clone(), Some("[2001:db9::1]:443"), &[]).await.0,
            StatusCode::FORBIDDEN
        );
        // An IPv4 client is not in an IPv6-only allow list.
        assert_eq!(
            send(cfg, Some("10.0.0.1"), &[]).await.0,
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test]
    async fn deny_wins_over_allow() {
        let cfg = allow_deny(&["10.0.0.0/8"], &["10.9.0.0/16", "10.1.2.3"]);
        assert_eq!(
            send(cfg.clone(), Some("10.9.1.1"), &[]).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            send(cfg.clone(), Some("10.1.2.3"), &[]).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(send(cfg, Some("10.1.2.4"), &[]).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn deny_only_lets_the_rest_through() {
        let cfg = allow_deny(&[], &["203.0.113.0/24", "2001:db8::/32"]);
        assert_eq!(
            send(cfg.clone(), Some("203.0.113.9"), &[]).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            send(cfg.clone(), Some("[2001:db8::9]:1"), &[]).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            send(cfg.clone(), Some("203.0.114.1"), &[]).await.0,
            StatusCode::OK
        );
        assert_eq!(
            send(cfg, Some("[2001:db9::9]:1"), &[]).await.0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn ipv4_mapped_peer_matches_ipv4_cidrs() {
        let cfg = allow_deny(&["10.0.0.0/8"], &["10.9.0.0/16"]);
        assert_eq!(
            send(cfg.clone(), Some("[::ffff:10.1.2.3]:8080"), &[]).await,
            (StatusCode::OK, ip("10.1.2.3"))
        );
        assert_eq!(
            send(cfg.clone(), Some("[::ffff:10.9.0.1]:8080"), &[])
                .await
                .0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            send(cfg, Some("[::ffff:192.0.2.1]:8080"), &[]).await.0,
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test]
    async fn ipv4_mapped_cidrs_in_config_are_ipv4_cidrs() {
        let cfg = allow_deny(&["::ffff:10.0.0.0/104"], &[]);
        assert_eq!(
            send(cfg.clone(), Some("10.3.3.3"), &[]).await.0,
            StatusCode::OK
        );
        assert_eq!(
            send(cfg.clone(), Some("[::ffff:10.3.3.3]:1"), &[]).await.0,
            StatusCode::OK
        );
        assert_eq!(
            send(cfg, Some("11.3.3.3"), &[]).await.0,
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test]
    async fn empty_lists_refuse_no_one_and_record_the_client() {
        let cfg = IpFilterConfig::default();
        assert_eq!(
            send(cfg.clone(), Some("198.51.100.1"), &[]).await,
            (StatusCode::OK, ip("198.51.100.1"))
        );
        // No address at all: nothing to check, nothing recorded.
        assert_eq!(send(cfg, None, &[]).await, (StatusCode::OK, None));
    }

    #[tokio::test]
    async fn unknown_client_is_refused_when_there_are_rules() {
        let cfg = allow_deny(&[], &["203.0.113.0/24"]);
        assert_eq!(send(cfg, None, &[]).await.0, StatusCode::FORBIDDEN);
    }

    // --- X-Forwarded-For with trusted hops ---

    fn hops(n: usize, allow: &[&str]) -> IpFilterConfig {
        IpFilterConfig {
            allow: nets(allow),
            deny: Vec::new(),
            client_ip: ClientIpSource::XForwardedFor { trusted_hops: n },
        }
    }

    #[tokio::test]
    async fn xff_zero_hops_takes_rightmost() {
        let res = send(hops(0, &[]), Some("10.0.0.1"), &["1.1.1.1, 203.0.113.9"]).await;
        assert_eq!(res, (StatusCode::OK, ip("203.0.113.9")));
    }

    #[tokio::test]
    async fn xff_skips_trusted_hops() {
        let xff = &["203.0.113.9, 198.51.100.7, 10.0.0.5"];
        assert_eq!(
            send(hops(1, &[]), Some("10.0.0.1"), xff).await.1,
            ip("198.51.100.7")
        );
        assert_eq!(
            send(hops(2, &[]), Some("10.0.0.1"), xff).await.1,
            ip("203.0.113.9")
        );
    }

    #[tokio::test]
    async fn xff_multiple_lines_are_one_list() {
        let xff = &["203.0.113.9", "198.51.100.7, 10.0.0.5"];
        assert_eq!(
            send(hops(2, &[]), Some("10.0.0.1"), xff).await.1,
            ip("203.0.113.9")
        );
    }

    #[tokio::test]
    async fn xff_client_is_checked_against_the_lists() {
        let xff = &["203.0.113.9, 10.0.0.5"];
        // The peer is allowed, but the client resolved from the header is not.
        assert_eq!(
            send(hops(1, &["10.0.0.0/8"]), Some("10.0.0.1"), xff)
                .await
                .0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            send(hops(1, &["203.0.113.0/24"]), Some("10.0.0.1"), xff)
                .await
                .0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn xff_too_few_entries_falls_back_to_peer() {
        let res = send(hops(2, &[]), Some("10.0.0.1"), &["198.51.100.7, 10.0.0.5"]).await;
        assert_eq!(res, (StatusCode::OK, ip("10.0.0.1")));
        let res = send(hops(0, &[]), Some("10.0.0.1"), &[]).await;
        assert_eq!(res, (StatusCode::OK, ip("10.0.0.1")));
    }

    #[tokio::test]
    async fn xff_malformed_entries_fall_back_to_peer() {
        for xff in [
            "203.0.113.9, unknown",
            "203.0.113.9, garbage, 10.0.0.5",
            "",
            " , ",
            "1.2.3.4;5",
        ] {
            let res = send(hops(1, &[]), Some("10.0.0.1"), &[xff]).await;
            assert_eq!(res, (StatusCode::OK, ip("10.0.0.1")), "{xff:?}");
        }
    }

    #[tokio::test]
    async fn xff_garbage_left_of_the_client_is_ignored() {
        let res = send(
            hops(1, &[]),
            Some("10.0.0.1"),
            &["not-an-ip, 203.0.113.9, 10.0.0.5"],
        )
        .await;
        assert_eq!(res.1, ip("203.0.113.9"));
    }

    #[tokio::test]
    async fn xff_entries_with_ports_brackets_and_mapped_addresses() {
        let cases = [
            ("192.0.2.1:4711", "192.0.2.1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            (" 2001:db8::2 ", "2001:db8::2"),
            ("::ffff:192.0.2.3", "192.0.2.3"),
        ];
        for (entry, want) in cases {
            let res = send(hops(0, &[]), Some("10.0.0.1"), &[entry]).await;
            assert_eq!(res.1, ip(want), "{entry:?}");
        }
    }

    #[tokio::test]
    async fn xff_without_peer_still_resolves_from_header() {
        assert_eq!(
            send(hops(0, &[]), None, &["203.0.113.9"]).await.1,
            ip("203.0.113.9")
        );
        // Short header and no peer: unknown, so refused under rules.
        assert_eq!(
            send(hops(1, &["0.0.0.0/0"]), None, &["203.0.113.9"])
                .await
                .0,
            StatusCode::FORBIDDEN
        );
    }

    // --- trusted proxies ---

    fn trusted(proxies: &[&str], deny: &[&str]) -> IpFilterConfig {
        IpFilterConfig {
            allow: Vec::new(),
            deny: nets(deny),
            client_ip: ClientIpSource::TrustedProxies(nets(proxies)),
        }
    }

    #[tokio::test]
    async fn trusted_proxy_peer_uses_xff() {
        let cfg = trusted(&["10.0.0.0/8"], &[]);
        let res = send(cfg, Some("10.0.0.1"), &["203.0.113.9"]).await;
        assert_eq!(res, (StatusCode::OK, ip("203.0.113.9")));
    }

    #[tokio::test]
    async fn untrusted_peer_ignores_xff() {
        let cfg = trusted(&["10.0.0.0/8"], &["192.0.2.0/24"]);
        // A client cannot launder a denied address through its own header...
        let res = send(cfg.clone(), Some("192.0.2.66"), &["198.51.100.1"]).await;
        assert_eq!(res.0, StatusCode::FORBIDDEN);
        // ...nor pick someone else's.
        let res = send(cfg, Some("198.51.100.1"), &["192.0.2.66"]).await;
        assert_eq!(res, (StatusCode::OK, ip("198.51.100.1")));
    }

    #[tokio::test]
    async fn trusted_proxies_are_skipped_recursively() {
        let cfg = trusted(&["10.0.0.0/8", "2001:db8:ffff::/48"], &[]);
        let xff = &["1.1.1.1, 203.0.113.9, 10.1.1.1, 2001:db8:ffff::2"];
        assert_eq!(send(cfg, Some("10.0.0.1"), xff).await.1, ip("203.0.113.9"));
    }

    #[tokio::test]
    async fn trusted_proxies_all_trusted_gives_leftmost() {
        let cfg = trusted(&["10.0.0.0/8"], &[]);
        assert_eq!(
            send(cfg, Some("10.0.0.1"), &["10.3.3.3, 10.2.2.2"]).await.1,
            ip("10.3.3.3")
        );
    }

    #[tokio::test]
    async fn trusted_proxies_missing_or_malformed_header_falls_back_to_peer() {
        let cfg = trusted(&["10.0.0.0/8"], &[]);
        assert_eq!(
            send(cfg.clone(), Some("10.0.0.1"), &[]).await.1,
            ip("10.0.0.1")
        );
        assert_eq!(
            send(cfg.clone(), Some("10.0.0.1"), &["bogus"]).await.1,
            ip("10.0.0.1")
        );
        // Malformed before the first untrusted entry: peer.
        assert_eq!(
            send(
                cfg.clone(),
                Some("10.0.0.1"),
                &["203.0.113.9, bogus, 10.2.2.2"]
            )
            .await
            .1,
            ip("10.0.0.1")
        );
        // Malformed beyond it: never read.
        assert_eq!(
            send(cfg, Some("10.0.0.1"), &["bogus, 203.0.113.9, 10.2.2.2"])
                .await
                .1,
            ip("203.0.113.9")
        );
    }

    #[tokio::test]
    async fn trusted_proxies_with_mapped_peer() {
        let cfg = trusted(&["10.0.0.0/8"], &[]);
        let res = send(cfg, Some("[::ffff:10.0.0.1]:80"), &["::ffff:203.0.113.9"]).await;
        assert_eq!(res.1, ip("203.0.113.9"));
    }

    #[tokio::test]
    async fn trusted_proxies_without_peer_is_unknown() {
        let cfg = trusted(&["10.0.0.0/8"], &["192.0.2.0/24"]);
        assert_eq!(
            send(cfg, None, &["203.0.113.9"]).await.0,
            StatusCode::FORBIDDEN
        );
    }

    // --- plumbing ---

    #[tokio::test]
    async fn inner_errors_pass_through() {
        let svc = IpFilterLayer::new(IpFilterConfig::default())
            .unwrap()
            .layer(service_fn(|_req: Request<String>| async {
                Err::<Response<String>, _>("upstream failed")
            }));
        let mut req = Request::new(String::new());
        req.extensions_mut()
            .insert(ClientAddr("127.0.0.1:1".parse().unwrap()));
        assert_eq!(svc.oneshot(req).await.unwrap_err(), "upstream failed");
    }

    #[test]
    fn layer_client_ip_matches_service() {
        let layer = IpFilterLayer::new(hops(1, &[])).unwrap();
        let mut req = Request::new(());
        req.headers_mut().insert(
            X_FORWARDED_FOR,
            HeaderValue::from_static("192.0.2.1, 10.0.0.5"),
        );
        assert_eq!(layer.client_ip(&req), ip("192.0.2.1"));
    }

    #[test]
    fn parse_cidrs_accepts_addresses_and_names_bad_entries() {
        let parsed = nets(&["10.1.2.3/8", "192.0.2.1", "2001:db8::1", " 2001:db8::/32 "]);
        assert_eq!(
            parsed,
            [
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "192.0.2.1/32".parse().unwrap(),
                "2001:db8::1/128".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ]
        );
        for (items, field) in [
            (&["10.0.0.0/8", "10.0.0.0/33"][..], "allow[1]"),
            (&["example.com"][..], "allow[0]"),
            (&[""][..], "allow[0]"),
        ] {
            let err = parse_cidrs("allow", items).unwrap_err().to_string();
            assert!(err.starts_with(field), "{err}");
        }
    }

    #[test]
    fn empty_trusted_proxies_is_an_error() {
        let err = IpFilterLayer::new(IpFilterConfig {
            client_ip: ClientIpSource::TrustedProxies(Vec::new()),
            ..IpFilterConfig::default()
        })
        .unwrap_err();
        assert!(
            err.to_string().starts_with("client_ip.trusted_proxies"),
            "{err}"
        );
    }

    #[test]
    fn ip_set_merges_and_searches() {
        let set = IpSet::new(&nets(&[
            "10.0.0.0/24",
            "10.0.1.0/24",
            "10.0.0.128/25",
            "255.255.255.255/32",
            "0.0.0.0/32",
            "::/128",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
        ]));
        assert_eq!(
            set.v4.len(),
            3,
            "adjacent and nested ranges merge: {:?}",
            set.v4
        );
        for inside in [
            "10.0.0.0",
            "10.0.1.255",
            "255.255.255.255",
            "0.0.0.0",
            "::",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            assert!(set.contains(inside.parse().unwrap()), "{inside}");
        }
        for outside in ["10.0.2.0", "9.255.255.255", "0.0.0.1", "::1"] {
            assert!(!set.contains(outside.parse().unwrap()), "{outside}");
        }
        let all = IpSet::new(&nets(&["0.0.0.0/0", "::/0"]));
        assert!(
            all.contains("1.2.3.4".parse().unwrap()) && all.contains("2001::1".parse().unwrap())
        );
    }

    #[test]
    fn services_are_cheap_clones_and_send() {
        fn assert_send_clone<T: Send + Sync + Clone + 'static>(_: &T) {}
        let svc = IpFilterLayer::new(IpFilterConfig::default())
            .unwrap()
            .layer(service_fn(|_req: Request<String>| async {
                Ok::<_, Infallible>(Response::new(String::new()))
            }));
        assert_send_clone(&svc);
        fn assert_send<T: Send>(_: &T) {}
        assert_send(&svc.oneshot(Request::new(String::new())));
    }
}
