//! The route description a caller hands to [`Router::new`](crate::Router::new).
//!
//! These types are plain data with public fields, so a translator (Gateway API
//! HTTPRoute or GRPCRoute, Ingress, a static config file, a test) can build
//! them directly. They mirror the Gateway API objects field for field (`type`
//! becomes [`MatchType`]). Validation, normalisation and regex compilation
//! happen once, when the router is compiled.

use http::{HeaderName, Method};

/// How a value (header, query parameter, gRPC service or method) is compared,
/// as the Gateway API's `type` field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum MatchType {
    /// Equal, byte for byte.
    #[default]
    Exact,
    /// An RE2-style regular expression (the `regex` crate's syntax) that must
    /// match the *whole* value, as if written `^(?:pattern)$`. Compiled once,
    /// limited to [`REGEX_SIZE_LIMIT`](crate::REGEX_SIZE_LIMIT).
    RegularExpression,
}

/// How a route matches the request path.
///
/// Exact and prefix paths are compared with the request path *after*
/// [normalisation](crate::normalize_path); the route's own path is normalised
/// the same way when the router is compiled (so `Exact("/a/./b")` is stored
/// as `/a/b`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// The request path must equal this value exactly (case-sensitive).
    Exact(String),
    /// The request path must start with this value on a `/` boundary:
    /// `Prefix("/v2")` matches `/v2`, `/v2/` and `/v2/x`, but not `/v2example`.
    /// A trailing slash is ignored, so `Prefix("/v2/")` behaves like
    /// `Prefix("/v2")`, and `Prefix("/")` matches every path (Gateway API
    /// `PathPrefix`, Ingress `Prefix`).
    Prefix(String),
    /// A regular expression that must match the whole normalised path
    /// (Gateway API `RegularExpression`).
    RegularExpression(String),
    /// A GRPCRoute method match: the request path is `/{service}/{method}`.
    Grpc(GrpcMethodMatch),
}

impl Default for PathMatch {
    /// `Prefix("/")`: every path.
    fn default() -> Self {
        Self::Prefix("/".to_owned())
    }
}

/// An Ingress `pathType` (`networking.k8s.io/v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IngressPathType {
    Exact,
    Prefix,
    /// Left to the implementation by the Ingress API; NovaEdge treats it as
    /// `Prefix` (segment-wise), as ingress-nginx does without regex
    /// annotations.
    ImplementationSpecific,
}

impl PathMatch {
    /// The path match for an Ingress path of the given type.
    pub fn ingress(path_type: IngressPathType, path: impl Into<String>) -> Self {
        let path = path.into();
        match path_type {
            IngressPathType::Exact => Self::Exact(path),
            IngressPathType::Prefix | IngressPathType::ImplementationSpecific => Self::Prefix(path),
        }
    }
}

/// A GRPCRoute `GRPCMethodMatch`.
///
/// A gRPC request path is `/{service}/{method}`, for example
/// `/helloworld.Greeter/SayHello`. `service: None` matches any service and
/// `method: None` any method; with both `None` every request matches (a
/// GRPCRouteMatch without `method`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct GrpcMethodMatch {
    pub kind: MatchType,
    /// A fully qualified service name (`helloworld.Greeter`), or a pattern.
    pub service: Option<String>,
    /// A method name (`SayHello`), or a pattern.
    pub method: Option<String>,
}

impl GrpcMethodMatch {
    /// An exact service and/or method.
    pub fn exact(service: Option<&str>, method: Option<&str>) -> Self {
        Self {
            kind: MatchType::Exact,
            service: service.map(str::to_owned),
            method: method.map(str::to_owned),
        }
    }

    /// A service and/or method pattern.
    pub fn regex(service: Option<&str>, method: Option<&str>) -> Self {
        Self {
            kind: MatchType::RegularExpression,
            ..Self::exact(service, method)
        }
    }
}

/// A request header condition (Gateway API `HTTPHeaderMatch`).
///
/// The name is case-insensitive (as every [`HeaderName`] is). A request that
/// carries the header several times matches when any one of its values
/// matches; a comma-separated list in one header line is one value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: String,
    pub kind: MatchType,
}

impl HeaderMatch {
    pub fn exact(name: HeaderName, value: impl Into<String>) -> Self {
        Self {
            name,
            value: value.into(),
            kind: MatchType::Exact,
        }
    }

    pub fn regex(name: HeaderName, pattern: impl Into<String>) -> Self {
        Self {
            name,
            value: pattern.into(),
            kind: MatchType::RegularExpression,
        }
    }
}

/// A query parameter condition (Gateway API `HTTPQueryParamMatch`).
///
/// The name is case-sensitive. Names and values are compared after
/// percent-decoding (`+` is not turned into a space). When a parameter is
/// repeated, only its first occurrence is considered, as the Gateway API
/// recommends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueryParamMatch {
    pub name: String,
    pub value: String,
    pub kind: MatchType,
}

impl QueryParamMatch {
    pub fn exact(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            kind: MatchType::Exact,
        }
    }

    pub fn regex(name: impl Into<String>, pattern: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: pattern.into(),
            kind: MatchType::RegularExpression,
        }
    }
}

/// Everything about a request, other than its host, that a route requires
/// (one Gateway API `HTTPRouteMatch` or `GRPCRouteMatch`; all conditions must
/// hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// Defaults to `Prefix("/")`, which matches every path.
    pub path: PathMatch,
    /// `None` matches every method.
    pub method: Option<Method>,
    /// Every entry must match. As in the Gateway API, when several entries
    /// name the same header only the first of them is considered.
    pub headers: Vec<HeaderMatch>,
    /// Every entry must match; only the first entry per name is considered.
    pub query_params: Vec<QueryParamMatch>,
}

impl Default for RouteMatch {
    /// Matches every request: `Prefix("/")`, any method, no conditions.
    fn default() -> Self {
        Self {
            path: PathMatch::default(),
            method: None,
            headers: Vec::new(),
            query_params: Vec::new(),
        }
    }
}

impl RouteMatch {
    /// A GRPCRouteMatch: a method match and header conditions.
    pub fn grpc(method: GrpcMethodMatch, headers: Vec<HeaderMatch>) -> Self {
        Self {
            path: PathMatch::Grpc(method),
            headers,
            ..Self::default()
        }
    }
}

/// Which API's rules a route follows where the Gateway API and Ingress
/// disagree. See the [crate documentation](crate#precedence).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// HTTPRoute and GRPCRoute: `*.example.com` stands for one or more
    /// labels.
    #[default]
    GatewayApi,
    /// `networking.k8s.io/v1` Ingress: `*.example.com` stands for exactly one
    /// label, and the most specific host is chosen before the path.
    Ingress,
}

/// One route: the hosts it serves, what it requires of a request, and what a
/// matching request is sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<T> {
    /// Hostnames this route serves; empty means any host. An entry is either
    /// an exact hostname (`api.example.com`, any case) or a wildcard whose
    /// leftmost label is `*` (`*.example.com`), which never matches the bare
    /// suffix (`example.com`). For a Gateway API route attached to a listener
    /// with a hostname, pass the result of
    /// [`intersect_hostnames`](crate::intersect_hostnames).
    pub hostnames: Vec<String>,
    pub route_match: RouteMatch,
    /// Tie-breaker chosen by the caller (for Gateway API: creation time, then
    /// namespace/name, then rule index). When two routes are equally specific
    /// the lower rank wins, whatever order the routes were given in.
    pub rank: u64,
    pub target: T,
    pub dialect: Dialect,
}
