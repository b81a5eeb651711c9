//! A stable, human-readable view of a snapshot, for people: `config_dump`, golden tests,
//! `novaedge check`. The wire format is protobuf (see [`crate::proto`]); this is not a second
//! one and is never read back.
//!
//! Every domain type implements [`serde::Serialize`] here, as this view, so that a part of a
//! snapshot (a backend, a route) prints the same way on its own as inside [`to_yaml`] or
//! [`to_json`]. The impls live here rather than as derives on the model so that the model stays
//! plain and each impl destructures its type exhaustively: a field added to the model does not
//! compile until this module decides how it is shown, and whether it is a secret.
//!
//! The view:
//!
//! - **Order.** Lists keep the snapshot's order; fields come in a fixed order (names and scalars
//!   before long lists). The same snapshot always prints the same text.
//! - **Names.** snake_case, as in the protobuf schema and in [`FieldError`](crate::FieldError)
//!   paths (`filters.request_header_modifier.set[0]`), so an error message points into a dump.
//! - **Values.** Durations are Gateway API durations (`1h30m`, `1s500ms`, `0s`), with `us`/`ns`
//!   parts only for sub-millisecond durations, which no translator produces. Addresses, header
//!   names, methods and regular expressions are strings.
//! - **Enums.** A variant without data is a snake_case string (`round_robin`); one with data is a
//!   map with one entry (`{least_request: {choices: 2}}`, `{prefix: /api}`). No YAML tags.
//! - **Defaults.** A field left out holds its default: `None`, an empty list, `false`/`0`
//!   where noted, an endpoint weight of 1, and a health policy (or part) equal to
//!   [`HealthPolicy::default`].
//! - **Secrets** are never serialized: a private key prints as `<redacted: N bytes>`, and an
//!   inline JWKS prints with its secret members (`k` of HMAC keys, the private parts `d`, `p`,
//!   `q`, `dp`, `dq`, `qi`, `oth`) redacted the same way, or wholly redacted if it is not JSON.
//!   Certificates and CA bundles are public and print in full. A JWKS URL loses its user info.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;

use crate::filters::{
    Cors, HeaderModifier, IpFilter, JwtAuthentication, JwtKeys, PathModifier, RateLimit,
    RateLimitKey, RequestMirror, RequestRedirect, RetryPolicy, RouteFilters, Timeouts,
    TokenLocation, UrlRewrite,
};
use crate::health::{
    ActiveHealthCheck, CircuitBreakers, FailurePercentageEjection, HealthPolicy, HealthProbe,
    OutlierDetection, SuccessRateEjection,
};
use crate::model::{
    Backend, BackendRef, ConfigSnapshot, Endpoint, HashOn, HeaderMatch, LbPolicy, Listener,
    ListenerProtocol, LoadBalancing, MatchType, PathMatch, QueryParamMatch, Route, RouteDialect,
    RouteMatch, RouteRule, UpstreamProtocol,
};
use crate::tls::{ClientAuth, ListenerTls, TlsCertificate, UpstreamTls};
use crate::vip::{OspfNetwork, Vip, VipAnnounce};

/// The snapshot as YAML (see the module docs for the shape).
pub fn to_yaml(snapshot: &ConfigSnapshot) -> String {
    // Cannot fail: every impl here is infallible, maps have string keys, and the text is
    // written to memory. Said in the output rather than panicking, should that ever change.
    serde_norway::to_string(snapshot)
        .unwrap_or_else(|e| format!("# the snapshot could not be shown: {e}\n"))
}

/// The snapshot as pretty-printed JSON, the same view as [`to_yaml`].
pub fn to_json(snapshot: &ConfigSnapshot) -> String {
    // Cannot fail, as for `to_yaml`.
    serde_json::to_string_pretty(snapshot).unwrap_or_else(|e| {
        Value::from(format!("the snapshot could not be shown: {e}")).to_string()
    })
}

// === values ===

/// A duration in Gateway API form: `1h30m`, `1m30s500ms`, `0s`.
#[derive(Debug, Clone, Copy)]
struct Dur(Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0s");
        }
        let secs = d.as_secs();
        let nanos = d.subsec_nanos();
        let parts = [
            (secs / 3600, "h"),
            (secs / 60 % 60, "m"),
            (secs % 60, "s"),
            (u64::from(nanos / 1_000_000), "ms"),
            (u64::from(nanos / 1000 % 1000), "us"),
            (u64::from(nanos % 1000), "ns"),
        ];
        for (n, unit) in parts {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A value shown through its `Display`.
#[derive(Debug)]
struct Shown<T>(T);

impl<T: fmt::Display> Serialize for Shown<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// What a secret of `len` bytes prints as.
fn redacted(len: usize) -> String {
    format!("<redacted: {len} bytes>")
}

/// A secret: only its length is shown.
#[derive(Debug)]
struct Redacted(usize);

impl Serialize for Redacted {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redacted(self.0))
    }
}

/// A variant with data: a map with one entry.
fn variant<S: Serializer, V: Serialize + ?Sized>(
    s: S,
    name: &'static str,
    value: &V,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(1))?;
    map.serialize_entry(name, value)?;
    map.end()
}

fn is_empty<T>(list: &&[T]) -> bool {
    list.is_empty()
}

fn is_empty_str(s: &&str) -> bool {
    s.is_empty()
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn is_default<T: Default + PartialEq>(value: &&T) -> bool {
    **value == T::default()
}

/// `(name, value)` pairs as `{name, value}` maps.
#[derive(Serialize)]
struct NameValue<'a> {
    name: &'a str,
    value: &'a str,
}

fn name_values(pairs: &[(String, String)]) -> Vec<NameValue<'_>> {
    pairs
        .iter()
        .map(|(name, value)| NameValue { name, value })
        .collect()
}

// === impl ConfigSnapshot ===

impl Serialize for ConfigSnapshot {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ConfigSnapshot {
            version,
            listeners,
            routes,
            backends,
            vips,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            version: u64,
            listeners: &'a [Listener],
            routes: &'a [Route],
            backends: &'a [Backend],
            #[serde(skip_serializing_if = "is_empty")]
            vips: &'a [Vip],
        }
        View {
            version: *version,
            listeners,
            routes,
            backends,
            vips,
        }
        .serialize(s)
    }
}

// === VIPs ===

impl Serialize for Vip {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Vip {
            name,
            addresses,
            announce,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            name: &'a str,
            addresses: Vec<Shown<&'a IpAddr>>,
            #[serde(flatten)]
            announce: AnnounceView<'a>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "snake_case")]
        enum AnnounceView<'a> {
            L2 {
                #[serde(skip_serializing_if = "Option::is_none")]
                interface: Option<&'a str>,
            },
            Bgp {
                local_asn: u32,
                #[serde(skip_serializing_if = "Option::is_none")]
                router_id: Option<Shown<Ipv4Addr>>,
                peers: Vec<PeerView<'a>>,
            },
            Ospf {
                area: Shown<Ipv4Addr>,
                interfaces: Vec<OspfView<'a>>,
            },
        }
        #[derive(Serialize)]
        struct PeerView<'a> {
            address: Shown<&'a IpAddr>,
            asn: u32,
            port: u16,
            hold_time: Dur,
            /// Never shown: only whether there is one.
            #[serde(skip_serializing_if = "Option::is_none")]
            password: Option<Redacted>,
        }
        #[derive(Serialize)]
        struct OspfView<'a> {
            name: &'a str,
            hello_interval: Dur,
            dead_interval: Dur,
            priority: u8,
            network: &'static str,
            cost: u16,
        }
        let announce = match announce {
            VipAnnounce::L2 { interface } => AnnounceView::L2 {
                interface: interface.as_deref(),
            },
            VipAnnounce::Bgp(b) => AnnounceView::Bgp {
                local_asn: b.local_asn,
                router_id: b.router_id.map(Shown),
                peers: b
                    .peers
                    .iter()
                    .map(|p| PeerView {
                        address: Shown(&p.address),
                        asn: p.asn,
                        port: p.port,
                        hold_time: Dur(p.hold_time),
                        password: p.password.as_ref().map(|pw| Redacted(pw.len())),
                    })
                    .collect(),
            },
            VipAnnounce::Ospf(o) => AnnounceView::Ospf {
                area: Shown(o.area),
                interfaces: o
                    .interfaces
                    .iter()
                    .map(|i| OspfView {
                        name: &i.name,
                        hello_interval: Dur(i.hello_interval),
                        dead_interval: Dur(i.dead_interval),
                        priority: i.priority,
                        network: match i.network {
                            OspfNetwork::Broadcast => "broadcast",
                            OspfNetwork::PointToPoint => "point_to_point",
                        },
                        cost: i.cost,
                    })
                    .collect(),
            },
        };
        View {
            name,
            addresses: addresses.iter().map(Shown).collect(),
            announce,
        }
        .serialize(s)
    }
}

// === listeners ===

impl Serialize for Listener {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Listener {
            name,
            bind,
            port,
            protocol,
            tls,
            https_redirect_port,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            name: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            bind: Option<Shown<IpAddr>>,
            port: u16,
            protocol: ListenerProtocol,
            #[serde(skip_serializing_if = "Option::is_none")]
            https_redirect_port: Option<u16>,
            #[serde(skip_serializing_if = "Option::is_none")]
            tls: Option<&'a ListenerTls>,
        }
        View {
            name,
            bind: bind.map(Shown),
            port: *port,
            protocol: *protocol,
            https_redirect_port: *https_redirect_port,
            tls: tls.as_ref(),
        }
        .serialize(s)
    }
}

impl Serialize for ListenerProtocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            ListenerProtocol::Http => "http",
            ListenerProtocol::Https => "https",
        })
    }
}

impl Serialize for ListenerTls {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ListenerTls {
            certificates,
            default_certificate,
            client_auth,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            default_certificate: Option<usize>,
            #[serde(skip_serializing_if = "Option::is_none")]
            client_auth: Option<&'a ClientAuth>,
            certificates: &'a [TlsCertificate],
        }
        View {
            default_certificate: *default_certificate,
            client_auth: client_auth.as_ref(),
            certificates,
        }
        .serialize(s)
    }
}

impl Serialize for TlsCertificate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let TlsCertificate {
            source,
            server_names,
            cert_chain_pem,
            private_key_pem,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            #[serde(skip_serializing_if = "is_empty_str")]
            source: &'a str,
            #[serde(skip_serializing_if = "is_empty")]
            server_names: &'a [String],
            cert_chain_pem: &'a str,
            private_key_pem: Redacted,
        }
        View {
            source,
            server_names,
            cert_chain_pem,
            private_key_pem: Redacted(private_key_pem.len()),
        }
        .serialize(s)
    }
}

impl Serialize for ClientAuth {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ClientAuth { ca_pem, optional } = self;
        #[derive(Serialize)]
        struct View<'a> {
            optional: bool,
            ca_pem: &'a str,
        }
        View {
            optional: *optional,
            ca_pem,
        }
        .serialize(s)
    }
}

impl Serialize for UpstreamTls {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let UpstreamTls {
            server_name,
            ca_pem,
            client_certificate,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            #[serde(skip_serializing_if = "is_empty_str")]
            server_name: &'a str,
            #[serde(skip_serializing_if = "is_empty_str")]
            ca_pem: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            client_certificate: Option<&'a TlsCertificate>,
        }
        View {
            server_name,
            ca_pem,
            client_certificate: client_certificate.as_ref(),
        }
        .serialize(s)
    }
}

// === routes ===

impl Serialize for Route {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Route {
            name,
            listener,
            hostnames,
            rules,
            creation_timestamp,
            dialect,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            name: &'a str,
            listener: &'a str,
            #[serde(skip_serializing_if = "is_default")]
            dialect: &'a RouteDialect,
            #[serde(skip_serializing_if = "is_zero")]
            creation_timestamp: i64,
            #[serde(skip_serializing_if = "is_empty")]
            hostnames: &'a [String],
            rules: &'a [RouteRule],
        }
        View {
            name,
            listener,
            dialect,
            creation_timestamp: *creation_timestamp,
            hostnames,
            rules,
        }
        .serialize(s)
    }
}

impl Serialize for RouteDialect {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            RouteDialect::GatewayApi => "gateway_api",
            RouteDialect::Ingress => "ingress",
        })
    }
}

impl Serialize for RouteRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let RouteRule {
            matches,
            backends,
            invalid_backend_weight,
            filters,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            #[serde(skip_serializing_if = "is_empty")]
            matches: &'a [RouteMatch],
            #[serde(skip_serializing_if = "is_default")]
            filters: &'a RouteFilters,
            #[serde(skip_serializing_if = "is_empty")]
            backends: &'a [BackendRef],
            #[serde(skip_serializing_if = "is_default")]
            invalid_backend_weight: &'a u32,
        }
        View {
            matches,
            filters,
            backends,
            invalid_backend_weight,
        }
        .serialize(s)
    }
}

impl Serialize for RouteMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let RouteMatch {
            path,
            method,
            headers,
            query_params,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            path: &'a PathMatch,
            #[serde(skip_serializing_if = "Option::is_none")]
            method: Option<&'a str>,
            #[serde(skip_serializing_if = "is_empty")]
            headers: &'a [HeaderMatch],
            #[serde(skip_serializing_if = "is_empty")]
            query_params: &'a [QueryParamMatch],
        }
        View {
            path,
            method: method.as_ref().map(http::Method::as_str),
            headers,
            query_params,
        }
        .serialize(s)
    }
}

impl Serialize for PathMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PathMatch::Exact(p) => variant(s, "exact", p),
            PathMatch::Prefix(p) => variant(s, "prefix", p),
            PathMatch::RegularExpression(p) => variant(s, "regular_expression", p),
        }
    }
}

impl Serialize for MatchType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            MatchType::Exact => "exact",
            MatchType::RegularExpression => "regular_expression",
        })
    }
}

/// A header or query parameter match: `{name, value}`, plus `type: regular_expression` when
/// the value is one.
#[derive(Serialize)]
struct ValueMatch<'a> {
    name: &'a str,
    value: &'a str,
    #[serde(rename = "type", skip_serializing_if = "is_default")]
    kind: &'a MatchType,
}

impl Serialize for HeaderMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let HeaderMatch { name, value, kind } = self;
        ValueMatch {
            name: name.as_str(),
            value,
            kind,
        }
        .serialize(s)
    }
}

impl Serialize for QueryParamMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let QueryParamMatch { name, value, kind } = self;
        ValueMatch { name, value, kind }.serialize(s)
    }
}

impl Serialize for BackendRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let BackendRef { backend, weight } = self;
        #[derive(Serialize)]
        struct View<'a> {
            backend: &'a str,
            weight: u32,
        }
        View {
            backend,
            weight: *weight,
        }
        .serialize(s)
    }
}

// === filters ===

impl Serialize for RouteFilters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let RouteFilters {
            request_headers,
            response_headers,
            url_rewrite,
            redirect,
            mirrors,
            cors,
            ip_filter,
            jwt,
            rate_limit,
            timeouts,
            retry,
            max_request_body_bytes,
        } = self;
        // In the order the data plane runs them (see `novaedge-filters`), timeouts and retries
        // last.
        #[derive(Serialize)]
        struct View<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            ip_filter: Option<&'a IpFilter>,
            #[serde(skip_serializing_if = "Option::is_none")]
            cors: Option<&'a Cors>,
            #[serde(skip_serializing_if = "Option::is_none")]
            jwt: Option<&'a JwtAuthentication>,
            #[serde(skip_serializing_if = "Option::is_none")]
            rate_limit: Option<&'a RateLimit>,
            #[serde(skip_serializing_if = "Option::is_none")]
            request_redirect: Option<&'a RequestRedirect>,
            #[serde(skip_serializing_if = "Option::is_none")]
            request_header_modifier: Option<&'a HeaderModifier>,
            #[serde(skip_serializing_if = "Option::is_none")]
            url_rewrite: Option<&'a UrlRewrite>,
            #[serde(skip_serializing_if = "is_empty")]
            request_mirror: &'a [RequestMirror],
            #[serde(skip_serializing_if = "Option::is_none")]
            response_header_modifier: Option<&'a HeaderModifier>,
            #[serde(skip_serializing_if = "is_default")]
            timeouts: &'a Timeouts,
            #[serde(skip_serializing_if = "Option::is_none")]
            retry: Option<&'a RetryPolicy>,
            #[serde(skip_serializing_if = "Option::is_none")]
            max_request_body_bytes: Option<u64>,
        }
        View {
            ip_filter: ip_filter.as_ref(),
            cors: cors.as_ref(),
            jwt: jwt.as_ref(),
            rate_limit: rate_limit.as_ref(),
            request_redirect: redirect.as_ref(),
            request_header_modifier: request_headers.as_ref(),
            url_rewrite: url_rewrite.as_ref(),
            request_mirror: mirrors,
            response_header_modifier: response_headers.as_ref(),
            timeouts,
            retry: retry.as_ref(),
            max_request_body_bytes: *max_request_body_bytes,
        }
        .serialize(s)
    }
}

impl Serialize for HeaderModifier {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let HeaderModifier { set, add, remove } = self;
        #[derive(Serialize)]
        struct View<'a> {
            #[serde(skip_serializing_if = "Vec::is_empty")]
            set: Vec<NameValue<'a>>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            add: Vec<NameValue<'a>>,
            #[serde(skip_serializing_if = "is_empty")]
            remove: &'a [String],
        }
        View {
            set: name_values(set),
            add: name_values(add),
            remove,
        }
        .serialize(s)
    }
}

impl Serialize for UrlRewrite {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let UrlRewrite { hostname, path } = self;
        #[derive(Serialize)]
        struct View<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            hostname: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            path: Option<&'a PathModifier>,
        }
        View {
            hostname: hostname.as_deref(),
            path: path.as_ref(),
        }
        .serialize(s)
    }
}

impl Serialize for PathModifier {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PathModifier::ReplaceFullPath(p) => variant(s, "replace_full_path", p),
            PathModifier::ReplacePrefixMatch(p) => variant(s, "replace_prefix_match", p),
        }
    }
}

impl Serialize for RequestRedirect {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let RequestRedirect {
            scheme,
            hostname,
            port,
            path,
            status_code,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            scheme: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            hostname: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            port: Option<u16>,
            #[serde(skip_serializing_if = "Option::is_none")]
            path: Option<&'a PathModifier>,
            status_code: u16,
        }
        View {
            scheme: scheme.as_deref(),
            hostname: hostname.as_deref(),
            port: *port,
            path: path.as_ref(),
            status_code: *status_code,
        }
        .serialize(s)
    }
}

impl Serialize for RequestMirror {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let RequestMirror {
            backend,
            fraction_ppm,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            backend: &'a str,
            fraction_ppm: u32,
        }
        View {
            backend,
            fraction_ppm: *fraction_ppm,
        }
        .serialize(s)
    }
}

impl Serialize for Cors {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Cors {
            allow_origins,
            allow_methods,
            allow_headers,
            expose_headers,
            allow_credentials,
            max_age,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            #[serde(skip_serializing_if = "is_empty")]
            allow_origins: &'a [String],
            #[serde(skip_serializing_if = "is_empty")]
            allow_methods: &'a [String],
            #[serde(skip_serializing_if = "is_empty")]
            allow_headers: &'a [String],
            #[serde(skip_serializing_if = "is_empty")]
            expose_headers: &'a [String],
            allow_credentials: bool,
            max_age: Dur,
        }
        View {
            allow_origins,
            allow_methods,
            allow_headers,
            expose_headers,
            allow_credentials: *allow_credentials,
            max_age: Dur(*max_age),
        }
        .serialize(s)
    }
}

impl Serialize for IpFilter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let IpFilter {
            allow,
            deny,
            xff_trusted_hops,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            #[serde(skip_serializing_if = "is_empty")]
            allow: &'a [String],
            #[serde(skip_serializing_if = "is_empty")]
            deny: &'a [String],
            xff_trusted_hops: u32,
        }
        View {
            allow,
            deny,
            xff_trusted_hops: *xff_trusted_hops,
        }
        .serialize(s)
    }
}

impl Serialize for JwtAuthentication {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let JwtAuthentication {
            keys,
            jwks_ca_pem,
            refresh,
            max_stale,
            issuers,
            audiences,
            algorithms,
            clock_skew,
            required_claims,
            locations,
            forward_claims,
            remove_token,
            allow_missing,
        } = self;
        #[derive(Serialize)]
        struct Forward<'a> {
            claim: &'a str,
            header: &'a str,
        }
        #[derive(Serialize)]
        struct View<'a> {
            keys: &'a JwtKeys,
            #[serde(skip_serializing_if = "is_empty_str")]
            jwks_ca_pem: &'a str,
            refresh: Dur,
            max_stale: Dur,
            #[serde(skip_serializing_if = "is_empty")]
            issuers: &'a [String],
            #[serde(skip_serializing_if = "is_empty")]
            audiences: &'a [String],
            #[serde(skip_serializing_if = "is_empty")]
            algorithms: &'a [String],
            clock_skew: Dur,
            #[serde(skip_serializing_if = "is_empty")]
            required_claims: &'a [String],
            #[serde(skip_serializing_if = "is_empty")]
            locations: &'a [TokenLocation],
            #[serde(skip_serializing_if = "Vec::is_empty")]
            forward_claims: Vec<Forward<'a>>,
            remove_token: bool,
            allow_missing: bool,
        }
        View {
            keys,
            jwks_ca_pem,
            refresh: Dur(*refresh),
            max_stale: Dur(*max_stale),
            issuers,
            audiences,
            algorithms,
            clock_skew: Dur(*clock_skew),
            required_claims,
            locations,
            forward_claims: forward_claims
                .iter()
                .map(|(claim, header)| Forward { claim, header })
                .collect(),
            remove_token: *remove_token,
            allow_missing: *allow_missing,
        }
        .serialize(s)
    }
}

/// JWK members (RFC 7518, section 6) that hold secrets: the key of a symmetric (`oct`) key and
/// the private parts of RSA, EC and OKP keys.
const JWK_SECRET_MEMBERS: [&str; 8] = ["k", "d", "p", "q", "dp", "dq", "qi", "oth"];

/// An inline JWKS with its secret members redacted, wherever they are nested (a set, a single
/// key, or anything else); text that is not JSON is redacted whole, since nothing in it can be
/// told apart.
fn redacted_jwks(text: &str) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(members) => {
                for (name, member) in members.iter_mut() {
                    if JWK_SECRET_MEMBERS.contains(&name.as_str()) {
                        let len = match &*member {
                            Value::String(s) => s.len(),
                            other => other.to_string().len(),
                        };
                        *member = Value::String(redacted(len));
                    } else {
                        walk(member);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    match serde_json::from_str::<Value>(text) {
        Ok(mut jwks) if jwks.is_object() => {
            walk(&mut jwks);
            jwks
        }
        _ => Value::String(format!("{} (not a JSON object)", redacted(text.len()))),
    }
}

/// A URL without its user info (`https://user:password@host/` becomes `https://<redacted>@host/`).
fn without_user_info(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://<redacted>{}", &rest[at..]),
        None => url.to_owned(),
    }
}

impl Serialize for JwtKeys {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            JwtKeys::Inline(jwks) => variant(s, "jwks_inline", &redacted_jwks(jwks)),
            JwtKeys::File(path) => variant(s, "jwks_file", path),
            JwtKeys::Url(url) => variant(s, "jwks_url", &without_user_info(url)),
        }
    }
}

impl Serialize for TokenLocation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Header<'a> {
            name: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            prefix: Option<&'a str>,
        }
        match self {
            TokenLocation::AuthorizationBearer => s.serialize_str("authorization_bearer"),
            TokenLocation::Header { name, prefix } => variant(
                s,
                "header",
                &Header {
                    name,
                    prefix: prefix.as_deref(),
                },
            ),
            TokenLocation::Cookie(c) => variant(s, "cookie", c),
            TokenLocation::QueryParam(q) => variant(s, "query_param", q),
        }
    }
}

impl Serialize for RateLimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let RateLimit {
            requests,
            period,
            burst,
            key,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            requests: u32,
            period: Dur,
            burst: u32,
            key: &'a RateLimitKey,
        }
        View {
            requests: *requests,
            period: Dur(*period),
            burst: *burst,
            key,
        }
        .serialize(s)
    }
}

impl Serialize for RateLimitKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct ClientIp {
            ipv6_prefix: u8,
        }
        match self {
            RateLimitKey::ClientIp { ipv6_prefix } => variant(
                s,
                "client_ip",
                &ClientIp {
                    ipv6_prefix: *ipv6_prefix,
                },
            ),
            RateLimitKey::Header(h) => variant(s, "header", h),
            RateLimitKey::JwtClaim(c) => variant(s, "jwt_claim", c),
            RateLimitKey::Global => s.serialize_str("global"),
        }
    }
}

impl Serialize for Timeouts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Timeouts {
            request,
            backend_request,
        } = self;
        #[derive(Serialize)]
        struct View {
            #[serde(skip_serializing_if = "Option::is_none")]
            request: Option<Dur>,
            #[serde(skip_serializing_if = "Option::is_none")]
            backend_request: Option<Dur>,
        }
        View {
            request: request.map(Dur),
            backend_request: backend_request.map(Dur),
        }
        .serialize(s)
    }
}

impl Serialize for RetryPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let RetryPolicy {
            attempts,
            statuses,
            on_5xx,
            on_connect_failure,
            on_reset,
            grpc_codes,
            backoff_base,
            backoff_max,
            budget_percent,
            budget_min_per_second,
            extra_methods,
            max_buffered_body_bytes,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            attempts: u32,
            #[serde(skip_serializing_if = "is_empty")]
            statuses: &'a [u16],
            on_5xx: bool,
            on_connect_failure: bool,
            on_reset: bool,
            #[serde(skip_serializing_if = "is_empty")]
            grpc_codes: &'a [u32],
            backoff_base: Dur,
            backoff_max: Dur,
            budget_percent: u32,
            budget_min_per_second: u32,
            #[serde(skip_serializing_if = "is_empty")]
            extra_methods: &'a [String],
            max_buffered_body_bytes: u64,
        }
        View {
            attempts: *attempts,
            statuses,
            on_5xx: *on_5xx,
            on_connect_failure: *on_connect_failure,
            on_reset: *on_reset,
            grpc_codes,
            backoff_base: Dur(*backoff_base),
            backoff_max: Dur(*backoff_max),
            budget_percent: *budget_percent,
            budget_min_per_second: *budget_min_per_second,
            extra_methods,
            max_buffered_body_bytes: *max_buffered_body_bytes,
        }
        .serialize(s)
    }
}

// === backends ===

impl Serialize for Backend {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Backend {
            name,
            protocol,
            endpoints,
            load_balancing,
            health,
            tls,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            name: &'a str,
            protocol: UpstreamProtocol,
            load_balancing: &'a LoadBalancing,
            #[serde(skip_serializing_if = "is_default")]
            health: &'a HealthPolicy,
            #[serde(skip_serializing_if = "Option::is_none")]
            tls: Option<&'a UpstreamTls>,
            endpoints: &'a [Endpoint],
        }
        View {
            name,
            protocol: *protocol,
            load_balancing,
            health,
            tls: tls.as_ref(),
            endpoints,
        }
        .serialize(s)
    }
}

impl Serialize for UpstreamProtocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
        })
    }
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Endpoint {
            address,
            ready,
            weight,
        } = self;
        #[derive(Serialize)]
        struct View {
            address: Shown<SocketAddr>,
            ready: bool,
            #[serde(skip_serializing_if = "is_one")]
            weight: u32,
        }
        View {
            address: Shown(*address),
            ready: *ready,
            weight: *weight,
        }
        .serialize(s)
    }
}

impl Serialize for LoadBalancing {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let LoadBalancing {
            policy,
            hash_on,
            panic_threshold_percent,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            policy: &'a LbPolicy,
            #[serde(skip_serializing_if = "Option::is_none")]
            hash_on: Option<&'a HashOn>,
            panic_threshold_percent: u8,
        }
        View {
            policy,
            hash_on: hash_on.as_ref(),
            panic_threshold_percent: *panic_threshold_percent,
        }
        .serialize(s)
    }
}

impl Serialize for LbPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct LeastRequest {
            choices: u32,
        }
        #[derive(Serialize)]
        struct PeakEwma {
            decay: Dur,
            default_rtt: Dur,
        }
        #[derive(Serialize)]
        struct RingHash {
            points_per_weight: u32,
            max_ring_size: u32,
        }
        #[derive(Serialize)]
        struct Maglev {
            table_size: u32,
        }
        match *self {
            LbPolicy::RoundRobin => s.serialize_str("round_robin"),
            LbPolicy::Random => s.serialize_str("random"),
            LbPolicy::LeastRequest { choices } => {
                variant(s, "least_request", &LeastRequest { choices })
            }
            LbPolicy::PeakEwma { decay, default_rtt } => variant(
                s,
                "peak_ewma",
                &PeakEwma {
                    decay: Dur(decay),
                    default_rtt: Dur(default_rtt),
                },
            ),
            LbPolicy::RingHash {
                points_per_weight,
                max_ring_size,
            } => variant(
                s,
                "ring_hash",
                &RingHash {
                    points_per_weight,
                    max_ring_size,
                },
            ),
            LbPolicy::Maglev { table_size } => variant(s, "maglev", &Maglev { table_size }),
        }
    }
}

impl Serialize for HashOn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HashOn::Header(h) => variant(s, "header", h.as_str()),
            HashOn::Cookie(c) => variant(s, "cookie", c),
            HashOn::SourceIp => s.serialize_str("source_ip"),
            HashOn::QueryParam(q) => variant(s, "query_param", q),
        }
    }
}

// === health ===

impl Serialize for HealthPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let HealthPolicy {
            active,
            outlier_detection,
            circuit_breakers,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            active: Option<&'a ActiveHealthCheck>,
            #[serde(skip_serializing_if = "is_default")]
            outlier_detection: &'a OutlierDetection,
            #[serde(skip_serializing_if = "is_default")]
            circuit_breakers: &'a CircuitBreakers,
        }
        View {
            active: active.as_ref(),
            outlier_detection,
            circuit_breakers,
        }
        .serialize(s)
    }
}

impl Serialize for ActiveHealthCheck {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ActiveHealthCheck {
            interval,
            jitter,
            timeout,
            healthy_threshold,
            unhealthy_threshold,
            port,
            probe,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            probe: &'a HealthProbe,
            #[serde(skip_serializing_if = "Option::is_none")]
            port: Option<u16>,
            interval: Dur,
            jitter: Dur,
            timeout: Dur,
            healthy_threshold: u32,
            unhealthy_threshold: u32,
        }
        View {
            probe,
            port: *port,
            interval: Dur(*interval),
            jitter: Dur(*jitter),
            timeout: Dur(*timeout),
            healthy_threshold: *healthy_threshold,
            unhealthy_threshold: *unhealthy_threshold,
        }
        .serialize(s)
    }
}

/// `200-299`, or the number `200` for a range of one status (as the health annotation writes
/// them).
struct StatusRange<'a>(&'a RangeInclusive<u16>);

impl Serialize for StatusRange<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (start, end) = (self.0.start(), self.0.end());
        if start == end {
            s.serialize_u16(*start)
        } else {
            s.collect_str(&format_args!("{start}-{end}"))
        }
    }
}

impl Serialize for HealthProbe {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Http<'a> {
            path: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            host: Option<&'a str>,
            expected_statuses: Vec<StatusRange<'a>>,
        }
        #[derive(Serialize)]
        struct Grpc<'a> {
            #[serde(skip_serializing_if = "is_empty_str")]
            service: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            authority: Option<&'a str>,
        }
        match self {
            HealthProbe::Tcp => s.serialize_str("tcp"),
            HealthProbe::Http {
                path,
                host,
                expected_statuses,
            } => variant(
                s,
                "http",
                &Http {
                    path,
                    host: host.as_deref(),
                    expected_statuses: expected_statuses.iter().map(StatusRange).collect(),
                },
            ),
            HealthProbe::Grpc { service, authority } => variant(
                s,
                "grpc",
                &Grpc {
                    service,
                    authority: authority.as_deref(),
                },
            ),
        }
    }
}

impl Serialize for OutlierDetection {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let OutlierDetection {
            consecutive_5xx,
            consecutive_gateway_failure,
            interval,
            base_ejection_time,
            max_ejection_time,
            max_ejection_percent,
            always_eject_one_host,
            success_rate,
            failure_percentage,
        } = self;
        #[derive(Serialize)]
        struct View<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            consecutive_5xx: Option<u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            consecutive_gateway_failure: Option<u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            success_rate: Option<&'a SuccessRateEjection>,
            #[serde(skip_serializing_if = "Option::is_none")]
            failure_percentage: Option<&'a FailurePercentageEjection>,
            interval: Dur,
            base_ejection_time: Dur,
            max_ejection_time: Dur,
            max_ejection_percent: u8,
            always_eject_one_host: bool,
        }
        View {
            consecutive_5xx: *consecutive_5xx,
            consecutive_gateway_failure: *consecutive_gateway_failure,
            success_rate: success_rate.as_ref(),
            failure_percentage: failure_percentage.as_ref(),
            interval: Dur(*interval),
            base_ejection_time: Dur(*base_ejection_time),
            max_ejection_time: Dur(*max_ejection_time),
            max_ejection_percent: *max_ejection_percent,
            always_eject_one_host: *always_eject_one_host,
        }
        .serialize(s)
    }
}

impl Serialize for SuccessRateEjection {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let SuccessRateEjection {
            minimum_hosts,
            request_volume,
            stdev_factor,
        } = self;
        #[derive(Serialize)]
        struct View {
            minimum_hosts: u32,
            request_volume: u64,
            stdev_factor: u32,
        }
        View {
            minimum_hosts: *minimum_hosts,
            request_volume: *request_volume,
            stdev_factor: *stdev_factor,
        }
        .serialize(s)
    }
}

impl Serialize for FailurePercentageEjection {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let FailurePercentageEjection {
            minimum_hosts,
            request_volume,
            threshold,
        } = self;
        #[derive(Serialize)]
        struct View {
            minimum_hosts: u32,
            request_volume: u64,
            threshold: u8,
        }
        View {
            minimum_hosts: *minimum_hosts,
            request_volume: *request_volume,
            threshold: *threshold,
        }
        .serialize(s)
    }
}

impl Serialize for CircuitBreakers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let CircuitBreakers {
            max_connections,
            max_pending_requests,
            max_requests,
            max_retries,
        } = self;
        #[derive(Serialize)]
        struct View {
            max_connections: u32,
            max_pending_requests: u32,
            max_requests: u32,
            max_retries: u32,
        }
        View {
            max_connections: *max_connections,
            max_pending_requests: *max_pending_requests,
            max_requests: *max_requests,
            max_retries: *max_retries,
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests;
