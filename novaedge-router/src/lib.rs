//! HTTP and gRPC route matching with Gateway API (`HTTPRoute`, `GRPCRoute`)
//! and Ingress semantics, generic over the route target.
//!
//! A [`Router`] is compiled once from a list of [`Route`]s and is immutable
//! afterwards: rebuild it when the routes change and swap it in (for example
//! with `ArcSwap`). Lookups never sort and never scan the whole table: routes
//! are indexed by host (a hash map for exact hosts, one for wildcard
//! suffixes) and, per host, by path (a hash map for exact paths, a segment
//! trie for prefixes). For lowercase hosts and no percent-encoded query
//! values, a lookup does not allocate.
//!
//! The crate depends on no other NovaEdge crate; any proxy can embed it.
//!
//! # Matching
//!
//! - **Hosts** are compared case-insensitively, without their `:port` (IPv6
//!   literals such as `[::1]:8080` are understood) and without a trailing
//!   dot. A route hostname is exact (`api.example.com`) or a wildcard
//!   (`*.example.com`), which never matches the bare suffix. A Gateway API
//!   wildcard stands for one or more labels (`a.b.example.com` matches), an
//!   Ingress one for exactly one ([`Dialect`]). A route without hostnames
//!   serves every host. For a route attached to a listener that has a
//!   hostname, pass the routes' hostnames through [`intersect_hostnames`].
//! - **Paths** are matched after [normalisation](normalize_path) (percent
//!   encoding, dot segments, duplicate slashes; a path that leaves the root is
//!   rejected). [`PathMatch::Exact`] compares the whole path;
//!   [`PathMatch::Prefix`] matches whole segments (`/v2` matches `/v2`,
//!   `/v2/` and `/v2/x`, not `/v2example`) and ignores a trailing slash;
//!   [`PathMatch::RegularExpression`] must match the whole path. Ingress path
//!   types map onto these with [`PathMatch::ingress`].
//! - **Headers** ([`HeaderMatch`]): names case-insensitive, values exact or
//!   regex; a repeated header matches when any of its values does.
//! - **Query parameters** ([`QueryParamMatch`]): names case-sensitive, names
//!   and values percent-decoded, exact or regex; the first occurrence counts.
//! - **Method**: exact.
//! - **gRPC** ([`GrpcMethodMatch`], via [`RouteMatch::grpc`]): service and
//!   method of the `/service/method` path, exact or regex.
//!
//! Regular expressions use the `regex` crate's RE2-like syntax, match the
//! whole value, are compiled once and are limited to [`REGEX_SIZE_LIMIT`].
//! Routes with the same pattern share one compiled expression, and
//! [`Router::with_regexes`] hands them from one build to the next
//! ([`Regexes`]), so rebuilding a large table compiles only new patterns.
//!
//! # Precedence
//!
//! When several routes match, the one with the smallest key wins. The key
//! depends on the route's family:
//!
//! **HTTPRoute** ([`Dialect::GatewayApi`], any path match but gRPC), from
//! `HTTPRouteRule.matches`: "Proxy or Load Balancer routing configuration
//! generated from HTTPRoutes MUST prioritize matches based on the following
//! criteria, continuing on ties. Across all rules specified on applicable
//! Routes, precedence must be given to the match having":
//!
//! 1. an `Exact` path match;
//! 2. (implementation-specific, as common implementations order it) a
//!    `RegularExpression` path match, the longer pattern first;
//! 3. a `PathPrefix` match with the largest number of characters (trailing
//!    slash not counted);
//! 4. a method match;
//! 5. the largest number of header matches;
//! 6. the largest number of query param matches;
//! 7. the most specific hostname: an exact hostname, then the longest
//!    wildcard, then a route without hostnames (`HTTPRouteSpec.hostnames`:
//!    "precedence must be given to rules from the HTTPRoute with the largest
//!    number of characters in a matching non-wildcard hostname, characters in
//!    a matching hostname");
//! 8. [`Route::rank`], which the caller sets to "the oldest Route based on
//!    creation timestamp", then "the Route appearing first in alphabetical
//!    order by {namespace}/{name}", then the first rule and match within it;
//! 9. the position in the input, only between routes equal on all of the
//!    above.
//!
//! The hostname comes after the match criteria, not before: the Gateway API
//! conformance test `HTTPRouteMatchingAcrossRoutes` requires that, for host
//! `example.com`, a `*.com` route's `PathPrefix /v2` beats an `example.com`
//! route's `PathPrefix /`, and a `*.com` route's header match beats an
//! `example.com` route without one. So rules of all routes serving a host are
//! merged and compete on their matches; the hostname breaks ties.
//!
//! **GRPCRoute** (a [`PathMatch::Grpc`] match): "Precedence MUST be given to
//! the rule with the largest number of: characters in a matching
//! non-wildcard hostname; characters in a matching hostname; characters in a
//! matching service; characters in a matching method; header matches", then
//! rank and input position as above. An exact service or method comes before
//! a pattern of the same length.
//!
//! **Ingress** ([`Dialect::Ingress`]): the most specific host first (exact,
//! then the longest wildcard, then rules without host), then, per the Ingress
//! API, "precedence will be given first to the longest matching path. If two
//! paths are still equally matched, precedence will be given to paths with an
//! exact path type over prefix path type", then rank and input position.
//!
//! If nothing matches under the most specific host, less specific hosts are
//! tried (a host-first order is still a total order over all matching
//! routes). Families never interleave: gRPC routes come before HTTPRoutes,
//! which come before Ingress rules; a router normally holds one family per
//! host, as the Gateway API requires HTTPRoute and GRPCRoute hostname
//! conflicts on a listener to be resolved before routing.
//!
//! As long as ranks differ, the result does not depend on the order in which
//! routes are handed to [`Router::new`].
//!
//! # Example
//!
//! ```
//! use http::{HeaderMap, HeaderName, Method, Request};
//! use novaedge_router::{Dialect, HeaderMatch, PathMatch, Route, RouteMatch, Router};
//!
//! let router = Router::new([
//!     Route {
//!         hostnames: vec!["*.example.com".to_owned()],
//!         route_match: RouteMatch::default(),
//!         rank: 0,
//!         target: "web",
//!         dialect: Dialect::GatewayApi,
//!     },
//!     Route {
//!         hostnames: vec!["api.example.com".to_owned()],
//!         route_match: RouteMatch {
//!             path: PathMatch::Prefix("/v2".to_owned()),
//!             ..RouteMatch::default()
//!         },
//!         rank: 1,
//!         target: "api-v2",
//!         dialect: Dialect::GatewayApi,
//!     },
//!     Route {
//!         hostnames: vec!["*.example.com".to_owned()],
//!         route_match: RouteMatch {
//!             path: PathMatch::Prefix("/v2".to_owned()),
//!             headers: vec![HeaderMatch::exact(HeaderName::from_static("x-canary"), "1")],
//!             ..RouteMatch::default()
//!         },
//!         rank: 2,
//!         target: "api-v2-canary",
//!         dialect: Dialect::GatewayApi,
//!     },
//! ])?;
//!
//! let get = |uri: &str| Request::get(uri).body(()).unwrap();
//! let find = |req: &Request<()>| router.find_request(req).copied();
//! assert_eq!(find(&get("http://API.example.com:443/v2/users")), Some("api-v2"));
//! // Segment-wise prefix: /v2beta is not under /v2.
//! assert_eq!(find(&get("http://api.example.com/v2beta")), Some("web"));
//! // A header match outranks a more specific hostname.
//! let canary = Request::get("http://api.example.com/v2").header("x-canary", "1").body(())?;
//! assert_eq!(find(&canary), Some("api-v2-canary"));
//! // The path is normalised before matching, and the normalised path is
//! // what should be forwarded.
//! let dotted = get("http://api.example.com/static/../v2/%7Euser");
//! let resolved = router.resolve(&dotted).expect("a valid path");
//! assert_eq!((resolved.target, &*resolved.path), (Some(&"api-v2"), "/v2/~user"));
//! // A path that leaves the root is an error (400), not a route.
//! assert!(router.resolve(&get("http://api.example.com/../etc/passwd")).is_err());
//! // A wildcard does not match its bare suffix.
//! assert_eq!(router.find("example.com", "/", &Method::GET, &HeaderMap::new()), None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod error;
mod explain;
mod host;
mod matcher;
mod path;
pub mod reference;
mod route;
mod router;

pub use error::{Field, RouterError};
pub use explain::{
    Condition, ConditionVerdict, Explanation, HostnameVerdict, Outcome, PrecedenceStep,
    RouteExplanation, ValueCondition,
};
pub use host::{HostnameError, intersect_hostnames};
pub use matcher::{REGEX_SIZE_LIMIT, Regexes, RequestParts};
pub use path::{EncodedSlashes, PathError, normalize_path};
pub use route::{
    Dialect, GrpcMethodMatch, HeaderMatch, IngressPathType, MatchType, PathMatch, QueryParamMatch,
    Route, RouteMatch,
};
pub use router::{Resolved, Router};
