//! HTTP filters as tower [`Layer`](tower::Layer)s over `http::Request` / `http::Response`, each
//! usable alone in any tower, hyper or axum stack. The crate depends on no other NovaEdge crate.
//!
//! | module | filter | after |
//! |---|---|---|
//! | [`ip`] | allow / deny by CIDR, on the client address or a trusted `X-Forwarded-For` hop | Envoy RBAC, nginx `allow`/`deny` |
//! | [`cors`] | CORS preflight and response headers | Gateway API `CORS` filter, Envoy CORS |
//! | [`jwt`] | JWT authentication against JWKS (inline, file, URL), claims to headers | Envoy `jwt_authn` |
//! | [`ratelimit`] | per-key rate limiting (client IP, header, JWT claim), `429` with `RateLimit-*` | Envoy local rate limit |
//! | [`redirect`] | Gateway API `RequestRedirect` | Gateway API |
//! | [`headers`] | Gateway API `RequestHeaderModifier` / `ResponseHeaderModifier` | Gateway API |
//! | [`rewrite`] | Gateway API `URLRewrite`: hostname, full path, prefix | Gateway API |
//! | [`mirror`] | Gateway API `RequestMirror`: a copy of some requests, fire and forget | Gateway API, Envoy shadowing |
//! | [`timeout`] | whole-request timeout | Gateway API `timeouts.request` |
//! | [`retry`] | retries with per-try timeout, retry budget, body buffering | Envoy retry policy |
//!
//! # Order
//!
//! A route's filters always run in this order, outermost first, whatever order its
//! configuration lists them in:
//!
//! 1. **IP filter**: the cheapest refusal comes first, before any work is done for a client
//!    that is not allowed in.
//! 2. **CORS**: a preflight is answered here, before authentication, since browsers send
//!    preflights without credentials.
//! 3. **JWT**: authentication, which may add claim headers.
//! 4. **Rate limit**: after authentication, so that it can key on a verified claim.
//! 5. **Redirect**: answers at once; nothing after it runs.
//! 6. **Request header modifier**, then **URL rewrite**: the request as the upstream will see it.
//! 7. **Mirror**: copies that rewritten request.
//! 8. **Response header modifier**: applies to what comes back from below (the upstream's
//!    response, or a timeout's `504`), not to refusals of the filters above it.
//! 9. **Timeout** for the whole request, retries included, then **retry** with its per-try
//!    timeout, innermost, around the upstream call.
//!
//! # Client address
//!
//! Filters that need the client's address (IP filter, rate limit keyed by IP) read the
//! [`ClientAddr`] request extension, which the server inserts for every request, as it does
//! [`LocalListener`] (redirects) and [`rewrite::MatchedPrefix`] (prefix rewrites and redirects).

#![forbid(unsafe_code)]

use std::net::SocketAddr;

pub mod cors;
pub mod headers;
pub mod ip;
pub mod jwt;
pub mod mirror;
pub mod ratelimit;
pub mod redirect;
pub mod retry;
pub mod rewrite;
pub mod timeout;

/// The listener a request arrived on, as a request extension: the port it listens on and the
/// scheme its clients use. The redirect filter derives default ports and schemes from it, as
/// Gateway API asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalListener {
    pub port: u16,
    pub scheme: http::uri::Scheme,
}

/// The certificate a client presented on a TLS connection, verified by the listener against
/// its client CA, as a request extension: who the client is, for filters and services after
/// the listener. Absent when the connection is cleartext or the client sent no certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate(pub std::sync::Arc<CertificateIdentity>);

/// What a verified client certificate says about its holder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertificateIdentity {
    /// The subject distinguished name, RFC 4514 style (`CN=alice,O=Example`).
    pub subject: String,
    /// DNS names of the subject alternative name extension.
    pub dns_names: Vec<String>,
    /// URIs of the subject alternative name extension (SPIFFE IDs, for one).
    pub uris: Vec<String>,
    /// E-mail addresses of the subject alternative name extension.
    pub emails: Vec<String>,
    /// SHA-256 of the leaf certificate's DER, lowercase hex (what Envoy's
    /// `x-forwarded-client-cert` carries as `Hash`).
    pub sha256: String,
    /// The leaf certificate, DER.
    pub der: bytes::Bytes,
}

/// The address of the peer a request came from, as a request extension (like axum's
/// `ConnectInfo`). Servers insert it; filters read it with
/// `req.extensions().get::<ClientAddr>()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);
