//! HTTP route matching with Gateway API (`HTTPRoute`) semantics, generic over
//! the route target.
//!
//! A [`Router`] is compiled once from a list of [`Route`]s and is immutable
//! afterwards: rebuild it when the routes change and swap it in (for example
//! with `ArcSwap`). Lookups never sort and, for lowercase hosts, never
//! allocate.
//!
//! # Precedence
//!
//! Routes are grouped into buckets by hostname, and a request is tried
//! against the buckets from the most to the least specific host:
//!
//! 1. routes naming the request's host exactly (one hash lookup);
//! 2. wildcard routes (`*.example.com`) whose suffix matches the host, longer
//!    suffixes first, so `*.b.example.com` is tried before `*.example.com`. A
//!    wildcard stands for one or more labels: `*.example.com` matches
//!    `foo.example.com` and `a.b.example.com`, never `example.com`;
//! 3. routes without hostnames, which serve any host.
//!
//! The first bucket holding a route that matches the request decides; if no
//! route in a bucket matches, the lookup falls through to the next one.
//! Request hosts are compared case-insensitively, without their `:port`
//! (IPv6 literals such as `[::1]:8080` are understood) and without a
//! trailing dot.
//!
//! Within a bucket the routes are ordered by, in turn:
//!
//! 1. an exact path before any prefix;
//! 2. a longer prefix before a shorter one, counted in characters after
//!    dropping trailing slashes (`/v2/` counts as `/v2`);
//! 3. a route with a method before one without;
//! 4. more header conditions before fewer;
//! 5. the lower [`Route::rank`], a tie-breaker the caller chooses (for the
//!    Gateway API: oldest creation time, then namespace/name);
//! 6. only between routes equal on all of the above, rank included, the
//!    order the routes were given in.
//!
//! So, as long as ranks differ, the result does not depend on the order in
//! which routes are handed to [`Router::new`].
//!
//! Prefix paths match whole segments: `/v2` matches `/v2`, `/v2/` and
//! `/v2/x`, not `/v2example`; `/` matches every path. Header conditions all
//! have to hold; a header sent several times matches when any of its values
//! is equal.
//!
//! # Example
//!
//! ```
//! use http::{HeaderMap, Method};
//! use novaedge_router::{PathMatch, Route, RouteMatch, Router};
//!
//! let router = Router::new([
//!     Route {
//!         hostnames: vec!["*.example.com".to_owned()],
//!         route_match: RouteMatch::default(),
//!         rank: 0,
//!         target: "web",
//!     },
//!     Route {
//!         hostnames: vec!["api.example.com".to_owned()],
//!         route_match: RouteMatch {
//!             path: PathMatch::Prefix("/v2".to_owned()),
//!             ..RouteMatch::default()
//!         },
//!         rank: 0,
//!         target: "api-v2",
//!     },
//! ])?;
//!
//! let headers = HeaderMap::new();
//! let find = |host, path| router.find(host, path, &Method::GET, &headers).copied();
//! assert_eq!(find("API.example.com:443", "/v2/users"), Some("api-v2"));
//! // Nothing for api.example.com matches /v1: fall through to the wildcard.
//! assert_eq!(find("api.example.com", "/v1"), Some("web"));
//! // Segment-wise prefix.
//! assert_eq!(find("api.example.com", "/v2beta"), Some("web"));
//! // A wildcard does not match its bare suffix.
//! assert_eq!(find("example.com", "/"), None);
//! # Ok::<(), novaedge_router::RouterError>(())
//! ```

#![forbid(unsafe_code)]

mod error;
mod host;
mod route;
mod router;

pub use error::RouterError;
pub use route::{HeaderMatch, PathMatch, Route, RouteMatch};
pub use router::Router;
