//! The route description a caller hands to [`Router::new`](crate::Router::new).
//!
//! These types are plain data with public fields, so a translator (Gateway API
//! HTTPRoute, a static config file, a test) can build them directly. Validation
//! and normalisation happen once, when the router is compiled.

use http::{HeaderName, Method};

/// How a route matches the request path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// The request path must equal this value exactly.
    Exact(String),
    /// The request path must start with this value on a `/` boundary:
    /// `Prefix("/v2")` matches `/v2`, `/v2/` and `/v2/x`, but not `/v2example`.
    /// A trailing slash is ignored, so `Prefix("/v2/")` behaves like
    /// `Prefix("/v2")`, and `Prefix("/")` matches every path.
    Prefix(String),
}

impl Default for PathMatch {
    /// `Prefix("/")`: every path.
    fn default() -> Self {
        Self::Prefix("/".to_owned())
    }
}

/// A request header that must be present with exactly this value.
///
/// The name is case-insensitive (as every [`HeaderName`] is); the value is
/// compared byte for byte. A request that carries several values for the name
/// matches when any one of them equals `value`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: String,
}

/// Everything about a request, other than its host, that a route requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// Defaults to `Prefix("/")`, which matches every path.
    pub path: PathMatch,
    /// `None` matches every method.
    pub method: Option<Method>,
    /// Every entry must match (AND). As in the Gateway API, when several
    /// entries name the same header only the first of them is considered.
    pub headers: Vec<HeaderMatch>,
}

impl Default for RouteMatch {
    /// Matches every request: `Prefix("/")`, any method, no header conditions.
    fn default() -> Self {
        Self {
            path: PathMatch::default(),
            method: None,
            headers: Vec::new(),
        }
    }
}

/// One route: the hosts it serves, what it requires of a request, and what a
/// matching request is sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<T> {
    /// Hostnames this route serves; empty means any host. An entry is either
    /// an exact hostname (`api.example.com`, any case) or a wildcard whose
    /// leftmost label is `*` (`*.example.com`), which matches one or more
    /// labels in its place but not the bare suffix (`example.com`).
    pub hostnames: Vec<String>,
    pub route_match: RouteMatch,
    /// Tie-breaker chosen by the caller (for Gateway API: creation time, then
    /// namespace/name). When two routes are equally specific the lower rank
    /// wins, whatever order the routes were given in.
    pub rank: u64,
    pub target: T,
}
