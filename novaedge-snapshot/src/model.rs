//! Domain types: what the engine runs. Parsed and typed; cross references are checked by
//! [`ConfigSnapshot::validate`](crate::ConfigSnapshot::validate).

use std::net::{IpAddr, SocketAddr};

use http::{HeaderName, Method};

/// Everything one data plane runs, as one versioned value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSnapshot {
    /// Monotonic per node.
    pub version: u64,
    pub listeners: Vec<Listener>,
    pub routes: Vec<Route>,
    pub backends: Vec<Backend>,
}

/// A socket that accepts client connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Unique within the snapshot; routes attach by this name.
    pub name: String,
    /// Address to bind; `None` means the data plane's default.
    pub bind: Option<IpAddr>,
    /// 0 asks the OS for a free port.
    pub port: u16,
    pub protocol: ListenerProtocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerProtocol {
    /// Cleartext HTTP/1.1 and HTTP/2 with prior knowledge, told apart by the preface.
    Http,
}

/// A set of rules attached to one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `namespace/name` of the source object; unique per listener.
    pub name: String,
    /// The listener it attaches to.
    pub listener: String,
    /// Exact hostnames or `*.suffix` wildcards; empty means any host.
    pub hostnames: Vec<String>,
    pub rules: Vec<RouteRule>,
    /// Unix seconds the source object was created: precedence ties go to the oldest route.
    pub creation_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    /// Any of these; empty means every request.
    pub matches: Vec<RouteMatch>,
    pub backends: Vec<BackendRef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub method: Option<Method>,
    /// All must match.
    pub headers: Vec<HeaderMatch>,
}

impl Default for RouteMatch {
    fn default() -> Self {
        Self {
            path: PathMatch::Prefix("/".to_owned()),
            method: None,
            headers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    /// Matches whole path segments: `/v2` matches `/v2` and `/v2/x`, not `/v2x`.
    Prefix(String),
}

impl PathMatch {
    /// The path value, whatever the kind.
    pub fn value(&self) -> &str {
        match self {
            PathMatch::Exact(v) | PathMatch::Prefix(v) => v,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: HeaderName,
    /// Exact value.
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendRef {
    /// A [`Backend::name`] in the same snapshot.
    pub backend: String,
    /// Relative weight; 0 is never chosen.
    pub weight: u32,
}

/// A group of interchangeable endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Unique within the snapshot, e.g. `namespace/service:port`.
    pub name: String,
    pub protocol: UpstreamProtocol,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2 over cleartext with prior knowledge; also what gRPC backends speak.
    H2c,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub address: SocketAddr,
    /// Only ready endpoints receive new requests.
    pub ready: bool,
    /// Relative weight among the backend's endpoints, at least 1.
    pub weight: u32,
}

impl ConfigSnapshot {
    /// Whether two snapshots configure the same thing, whatever their versions.
    pub fn same_config(&self, other: &ConfigSnapshot) -> bool {
        self.listeners == other.listeners
            && self.routes == other.routes
            && self.backends == other.backends
    }
}
