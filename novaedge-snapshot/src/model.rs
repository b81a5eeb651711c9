//! Domain types: what the engine runs. Parsed and typed; cross references are checked by
//! [`ConfigSnapshot::validate`](crate::ConfigSnapshot::validate).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::{HeaderName, Method};

use crate::filters::SharedFilters;
use crate::health::HealthPolicy;
use crate::tls::{ListenerTls, UpstreamTls};
use crate::vip::Vip;

/// Everything one data plane runs, as one versioned value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSnapshot {
    /// Monotonic per node.
    pub version: u64,
    pub listeners: Vec<Listener>,
    pub routes: Vec<Route>,
    pub backends: Vec<Backend>,
    /// The virtual IPs this node is to hold.
    pub vips: Vec<Vip>,
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
    /// Certificates and client verification; set exactly for HTTPS listeners.
    pub tls: Option<ListenerTls>,
    /// HTTP listeners only: answer every request with a `301` to the same URL over `https`
    /// on this port (omitted from the URL when 443).
    pub https_redirect_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerProtocol {
    /// Cleartext HTTP/1.1 and HTTP/2 with prior knowledge, told apart by the preface.
    Http,
    /// TLS, then HTTP/2 or HTTP/1.1 as ALPN decides (HTTP/1.1 without ALPN).
    Https,
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
    /// Whose matching rules the route follows where they differ.
    pub dialect: RouteDialect,
}

/// Whose matching rules a route follows: Gateway API or Ingress (see `novaedge-router`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum RouteDialect {
    /// HTTPRoute and GRPCRoute.
    #[default]
    GatewayApi,
    /// `networking.k8s.io/v1` Ingress: a wildcard host covers exactly one label, and the
    /// most specific host wins before the path is looked at.
    Ingress,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    /// Any of these; empty means every request.
    pub matches: Vec<RouteMatch>,
    pub backends: Vec<BackendRef>,
    /// The summed weight of the rule's backend references that could not be resolved (a
    /// missing Service, a reference no ReferenceGrant allows, ...). As Gateway API says, that
    /// share of the rule's requests is answered `500`, the rest goes to `backends`.
    pub invalid_backend_weight: u32,
    pub filters: SharedFilters,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub method: Option<Method>,
    /// All must match; only the first entry per name counts (Gateway API).
    pub headers: Vec<HeaderMatch>,
    /// All must match; only the first entry per name counts (Gateway API).
    pub query_params: Vec<QueryParamMatch>,
}

impl Default for RouteMatch {
    fn default() -> Self {
        Self {
            path: PathMatch::Prefix("/".to_owned()),
            method: None,
            headers: Vec::new(),
            query_params: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    /// Matches whole path segments: `/v2` matches `/v2` and `/v2/x`, not `/v2x`.
    Prefix(String),
    /// An RE2-syntax regular expression that must match the whole normalised path.
    RegularExpression(String),
}

impl PathMatch {
    /// The path value, whatever the kind.
    pub fn value(&self) -> &str {
        match self {
            PathMatch::Exact(v) | PathMatch::Prefix(v) | PathMatch::RegularExpression(v) => v,
        }
    }
}

/// How a header or query parameter value is compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum MatchType {
    #[default]
    Exact,
    /// An RE2-syntax regular expression that must match the whole value.
    RegularExpression,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Case-insensitive, as every `HeaderName` is.
    pub name: HeaderName,
    pub value: String,
    pub kind: MatchType,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryParamMatch {
    /// Case-sensitive; compared after percent-decoding.
    pub name: String,
    pub value: String,
    pub kind: MatchType,
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
    pub load_balancing: LoadBalancing,
    pub health: HealthPolicy,
    /// TLS to the endpoints; `None`: cleartext.
    pub tls: Option<UpstreamTls>,
}

/// How a backend spreads requests over its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancing {
    pub policy: LbPolicy,
    /// What requests are hashed on; set exactly when the policy is a hashing one.
    pub hash_on: Option<HashOn>,
    /// Below this percentage of healthy endpoints health is ignored (Envoy's panic threshold);
    /// 0 never.
    pub panic_threshold_percent: u8,
}

impl Default for LoadBalancing {
    fn default() -> Self {
        Self {
            policy: LbPolicy::RoundRobin,
            hash_on: None,
            panic_threshold_percent: DEFAULT_PANIC_THRESHOLD_PERCENT,
        }
    }
}

/// Envoy's default healthy panic threshold.
pub const DEFAULT_PANIC_THRESHOLD_PERCENT: u8 = 50;

/// A balancing algorithm and its parameters (see `novaedge-lb` for each algorithm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Weighted random.
    Random,
    /// The least loaded of `choices` random endpoints.
    LeastRequest { choices: u32 },
    /// Latency times outstanding requests, with a decaying average.
    PeakEwma {
        decay: Duration,
        default_rtt: Duration,
    },
    /// Ketama-style ring hash.
    RingHash {
        points_per_weight: u32,
        max_ring_size: u32,
    },
    /// Maglev; `table_size` is a prime.
    Maglev { table_size: u32 },
}

impl LbPolicy {
    /// Whether the policy balances on a request hash.
    pub fn uses_hash(&self) -> bool {
        matches!(self, LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. })
    }
}

/// What a request is hashed on, for the hashing policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    Header(HeaderName),
    Cookie(String),
    SourceIp,
    QueryParam(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    /// HTTP/1.1; over TLS, HTTP/2 when the server picks it by ALPN.
    Http1,
    /// HTTP/2 with prior knowledge (`h2` by ALPN over TLS); also what gRPC backends speak.
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
            && self.vips == other.vips
    }
}
