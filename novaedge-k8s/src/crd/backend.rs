//! `ProxyBackend`: a set of endpoints and how NovaEdge talks to them.
//!
//! ```yaml
//! apiVersion: novaedge.io/v1alpha1
//! kind: ProxyBackend
//! metadata: {name: api, namespace: shop}
//! spec:
//!   serviceRef: {name: api, port: 8080}      # or endpoints: [{address: 10.0.0.7, port: 8080}]
//!   protocol: GRPC
//!   loadBalancing: {policy: RingHash, hashOn: {header: x-user}, panicThreshold: 30}
//!   healthCheck: {grpc: {}, interval: 5s}
//!   outlierDetection: {consecutive5xx: 5}
//!   circuitBreaker: {maxRequests: 200}
//!   tls: {serverName: api.shop.internal, caConfigMap: shop-ca}
//! ```
//!
//! It says in one object what a Service says through the `novaedge.io/*` annotations (see
//! [`crate::health`] and [`crate::tls::UpstreamTlsSpec`], whose types it reuses), and it can
//! name endpoints that no Service has. [`to_backend`] turns it, with the Service and
//! EndpointSlices its `serviceRef` names and the ConfigMaps and Secrets its `tls` names, into a
//! snapshot [`Backend`], checking every field against what the snapshot accepts.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::CustomResource;
use novaedge_snapshot::{
    Backend, DEFAULT_PANIC_THRESHOLD_PERCENT, Endpoint, HashOn, HealthPolicy, LbPolicy,
    LoadBalancing, TlsCertificate, UpstreamProtocol, UpstreamTls, check_hostname,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::Status;
use super::{DNS_1035_LABEL_PATTERN, HEADER_NAME_PATTERN, MAX_WEIGHT, Problems};
use crate::diagnostics::Diagnostic;
use crate::health::{CircuitBreakerSpec, HealthCheckSpec, OutlierDetectionSpec};
use crate::objects::namespace_of;
use crate::policy::{Empty, null_is_empty};
use crate::tls::{CA_CRT, Secret, UpstreamTlsSpec, ca_bundle, key_pair};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A set of endpoints (a Service port's, or listed) and how NovaEdge talks to them: protocol,
/// balancing, health checks, outlier detection, circuit breakers and TLS.
// Clippy reads the `type_ = "string"` of two `printcolumn(...)` entries as one attribute given
// twice.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "novaedge.io",
    version = "v1alpha1",
    kind = "ProxyBackend",
    namespaced,
    status = "Status",
    derive = "PartialEq",
    shortname = "pbe",
    category = "novaedge",
    doc = "A set of endpoints (a Service port's, or listed) and how NovaEdge talks to them: \
           protocol, balancing, health checks, outlier detection, circuit breakers and TLS.",
    printcolumn(
        name = "Service",
        type_ = "string",
        json_path = ".spec.serviceRef.name"
    ),
    printcolumn(name = "Protocol", type_ = "string", json_path = ".spec.protocol"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.serviceRef) != has(self.endpoints)",
    "message": "set exactly one of serviceRef and endpoints",
}]))]
pub struct ProxyBackendSpec {
    /// A Service port, whose ready endpoints (from its EndpointSlices) are balanced over.
    /// Exactly one of `serviceRef` and `endpoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_ref: Option<ServicePortRef>,
    /// Endpoints listed here, each an address and port. Exactly one of `serviceRef` and
    /// `endpoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        extend(
            "x-kubernetes-list-type" = "map",
            "x-kubernetes-list-map-keys" = ["address", "port"],
        )
    )]
    pub endpoints: Option<Vec<StaticEndpoint>>,
    /// How requests are sent: `HTTP1`, `H2C` (HTTP/2 without TLS; with `tls`, HTTP/2 by ALPN),
    /// `GRPC` (as `H2C`) or `WebSocket` (HTTP/1.1, upgrades passed through). Default: from the
    /// Service port's `appProtocol` (`h2c`, `grpc`, `ws`, `http`), else `HTTP1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<BackendProtocol>,
    /// How requests are spread over the endpoints; default round robin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing: Option<LoadBalancingSpec>,
    /// Active health checks: probes on an interval. Default none (endpoints are judged by
    /// outlier detection alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    /// Passive outlier detection: ejection of endpoints that fail real requests. Default on:
    /// 3 gateway failures in a row eject, at most half of the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionSpec>,
    /// Limits on connections, pending and active requests and retries; a request over a limit
    /// is answered 503. Default 1024 connections and requests, 3 retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    /// TLS to the endpoints; default cleartext. ConfigMaps and Secrets it names are in the
    /// backend's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTlsSpec>,
}

/// A port of a Service in the backend's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePortRef {
    /// The Service's name.
    #[schemars(length(min = 1, max = 63), pattern(DNS_1035_LABEL_PATTERN))]
    pub name: String,
    /// The Service port (its `port`, not the `targetPort`).
    #[schemars(range(min = 1))]
    pub port: u16,
}

/// An endpoint listed in the backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticEndpoint {
    /// An IPv4 or IPv6 address.
    #[schemars(
        length(min = 1, max = 45),
        extend("x-kubernetes-validations" = [{
            "rule": "isIP(self)",
            "message": "must be an IPv4 or IPv6 address",
        }])
    )]
    pub address: String,
    /// The TCP port.
    #[schemars(range(min = 1))]
    pub port: u16,
    /// Its share of requests relative to the other endpoints; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub weight: Option<u32>,
}

/// How requests are sent to the endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = super::field_describes)]
pub enum BackendProtocol {
    /// HTTP/1.1 (with `tls`, HTTP/2 when the server picks it by ALPN).
    #[serde(rename = "HTTP1")]
    Http1,
    /// HTTP/2 with prior knowledge (with `tls`, `h2` by ALPN).
    #[serde(rename = "H2C")]
    H2c,
    /// gRPC: HTTP/2, as `H2C`.
    #[serde(rename = "GRPC")]
    Grpc,
    /// HTTP/1.1 with WebSocket upgrades passed through.
    WebSocket,
}

/// A balancing algorithm and what it hashes on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.hashOn) == (has(self.policy) && self.policy in ['RingHash', 'Maglev'])",
    "message": "hashOn is required for RingHash and Maglev, and only for them",
}]))]
pub struct LoadBalancingSpec {
    /// `RoundRobin` (the default), `Random`, `LeastRequest` (the less loaded of two random
    /// endpoints), `PeakEWMA` (latency times load), `RingHash` or `Maglev` (consistent
    /// hashing on `hashOn`). The parameters are those of the Service annotation
    /// `novaedge.io/load-balancer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<LoadBalancingPolicy>,
    /// What `RingHash` and `Maglev` hash: exactly one of `header`, `cookie`, `queryParam` and
    /// `sourceIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOnSpec>,
    /// Below this percentage of healthy endpoints, health is ignored and every endpoint takes
    /// requests (Envoy's panic threshold); 0 never. Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub panic_threshold: Option<u8>,
}

/// The balancing algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = super::field_describes)]
pub enum LoadBalancingPolicy {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Weighted random.
    Random,
    /// The less loaded of two endpoints chosen at random.
    LeastRequest,
    /// The lowest latency times outstanding requests, with a decaying average.
    #[serde(rename = "PeakEWMA")]
    PeakEwma,
    /// Ketama-style ring hash on `hashOn`.
    RingHash,
    /// Maglev hashing on `hashOn`.
    Maglev,
}

/// What a request is hashed on: exactly one of the four.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.header), has(self.cookie), has(self.queryParam), has(self.sourceIP)]\
             .filter(x, x).size() == 1",
    "message": "set exactly one of header, cookie, queryParam and sourceIP",
}]))]
pub struct HashOnSpec {
    /// The value of this request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), pattern(HEADER_NAME_PATTERN))]
    pub header: Option<String>,
    /// The value of this cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub cookie: Option<String>,
    /// The value of this query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub query_param: Option<String>,
    /// The client's address (`sourceIP: {}`).
    #[serde(
        rename = "sourceIP",
        default,
        deserialize_with = "null_is_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_ip: Option<Empty>,
}

// === admission ===

/// The schema's rules, for an object no API server has checked.
pub(super) fn admit(spec: &ProxyBackendSpec, p: &mut Problems) {
    if spec.service_ref.is_some() == spec.endpoints.is_some() {
        p.error("spec", "set exactly one of serviceRef and endpoints");
    }
    if let Some(r) = &spec.service_ref {
        p.service_name("spec.serviceRef.name", &r.name);
        p.port("spec.serviceRef.port", r.port);
    }
    if let Some(endpoints) = &spec.endpoints {
        p.min_items("spec.endpoints", endpoints.len(), 1);
        p.max_items("spec.endpoints", endpoints.len(), 256);
        for (i, e) in endpoints.iter().enumerate() {
            let field = format!("spec.endpoints[{i}]");
            if e.address.parse::<IpAddr>().is_err() {
                p.error(
                    format!("{field}.address"),
                    format!("{:?}: must be an IPv4 or IPv6 address", e.address),
                );
            }
            p.port(&format!("{field}.port"), e.port);
            if let Some(w) = e.weight {
                p.range(&format!("{field}.weight"), w, 1, MAX_WEIGHT);
            }
            if endpoints[..i]
                .iter()
                .any(|o| o.address == e.address && o.port == e.port)
            {
                p.error(
                    &field,
                    format!("{} port {} is listed more than once", e.address, e.port),
                );
            }
        }
    }
    if let Some(lb) = &spec.load_balancing {
        let hashing = matches!(
            lb.policy,
            Some(LoadBalancingPolicy::RingHash | LoadBalancingPolicy::Maglev)
        );
        if lb.hash_on.is_some() != hashing {
            p.error(
                "spec.loadBalancing.hashOn",
                "hashOn is required for RingHash and Maglev, and only for them",
            );
        }
        if let Some(h) = &lb.hash_on {
            let field = "spec.loadBalancing.hashOn";
            let set = [
                h.header.is_some(),
                h.cookie.is_some(),
                h.query_param.is_some(),
                h.source_ip.is_some(),
            ];
            if set.iter().filter(|s| **s).count() != 1 {
                p.error(
                    field,
                    "set exactly one of header, cookie, queryParam and sourceIP",
                );
            }
            if let Some(name) = &h.header {
                p.header_name(&format!("{field}.header"), name);
            }
            for (key, value) in [("cookie", &h.cookie), ("queryParam", &h.query_param)] {
                if let Some(v) = value {
                    if v.is_empty() {
                        p.error(format!("{field}.{key}"), "must not be empty");
                    }
                    p.max_len(&format!("{field}.{key}"), v, 256);
                }
            }
        }
        if let Some(t) = lb.panic_threshold {
            p.range("spec.loadBalancing.panicThreshold", t, 0, 100);
        }
    }
    if let Some(h) = &spec.health_check {
        let probes = [h.http.is_some(), h.tcp.is_some(), h.grpc.is_some()];
        if probes.iter().filter(|s| **s).count() != 1 {
            p.error(
                "spec.healthCheck",
                "set exactly one probe: http, tcp or grpc",
            );
        }
    }
    if let Some(tls) = &spec.tls
        && tls.ca_config_map.is_some()
        && tls.ca_bundle.is_some()
    {
        p.error("spec.tls", "set caConfigMap or caBundle, not both");
    }
}

// === conversion ===

/// What a ProxyBackend refers to, as the caller found it in the backend's namespace.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BackendInputs<'a> {
    /// The Service `spec.serviceRef` names, if it exists.
    pub(crate) service: Option<&'a Service>,
    /// That Service's EndpointSlices; slices of other Services are ignored.
    pub(crate) endpoint_slices: &'a [&'a EndpointSlice],
    /// ConfigMaps `spec.tls.caConfigMap` may name.
    pub(crate) config_maps: &'a [&'a ConfigMap],
    /// Secrets `spec.tls.clientCertificateSecret` may name.
    pub(crate) secrets: &'a [&'a Secret],
}

/// The snapshot backend a ProxyBackend describes, named `namespace/name` (Service backends are
/// `namespace/service:port`, so the two never collide). Every field is checked: the schema's
/// rules (as [`admit`]), then what only the conversion can check (addresses, the Service and its
/// port, header names, health-check ranges, certificates). `Err` holds the problems when any is
/// an error (the backend cannot be used); `Ok` holds the warnings beside the backend. Problems
/// of an EndpointSlice name the slice.
pub(crate) fn to_backend(
    backend: &ProxyBackend,
    inputs: &BackendInputs<'_>,
) -> Result<(Backend, Vec<Diagnostic>), Vec<Diagnostic>> {
    let namespace = namespace_of(&backend.metadata);
    let name = backend.metadata.name.as_deref().unwrap_or_default();
    let mut p = Problems::new(format!("ProxyBackend {namespace}/{name}"));
    let mut others = Vec::new();
    let spec = &backend.spec;
    admit(spec, &mut p);

    let (endpoints, port) = match (&spec.service_ref, &spec.endpoints) {
        (Some(r), _) => match service_port(r, namespace, inputs.service, &mut p) {
            Some(port) => (
                endpoints_of(
                    &r.name,
                    namespace,
                    port.name.as_deref().unwrap_or(""),
                    inputs.endpoint_slices,
                    &mut others,
                ),
                Some(port),
            ),
            None => (Vec::new(), None),
        },
        (None, Some(list)) => (static_endpoints(list), None),
        (None, None) => (Vec::new(), None),
    };
    let protocol = match (spec.protocol, port) {
        (Some(BackendProtocol::Http1 | BackendProtocol::WebSocket), _) => UpstreamProtocol::Http1,
        (Some(BackendProtocol::H2c | BackendProtocol::Grpc), _) => UpstreamProtocol::H2c,
        (None, Some(port)) => {
            let service = spec.service_ref.as_ref().map_or("", |r| r.name.as_str());
            app_protocol(port, &format!("Service {namespace}/{service}"), &mut others)
        }
        (None, None) => UpstreamProtocol::Http1,
    };
    let load_balancing = load_balancing(spec.load_balancing.as_ref());
    let mut health = HealthPolicy::default();
    if let Some(h) = &spec.health_check {
        match h.to_active() {
            Ok(active) => health.active = Some(active),
            Err(e) => p.spec_errors("spec.healthCheck", e),
        }
    }
    if let Some(o) = &spec.outlier_detection {
        match o.to_outlier_detection() {
            Ok(o) => health.outlier_detection = o,
            Err(e) => p.spec_errors("spec.outlierDetection", e),
        }
    }
    if let Some(c) = &spec.circuit_breaker {
        match c.to_circuit_breakers() {
            Ok(c) => health.circuit_breakers = c,
            Err(e) => p.spec_errors("spec.circuitBreaker", e),
        }
    }
    let tls = spec
        .tls
        .as_ref()
        .map(|tls| upstream_tls(tls, namespace, inputs, &mut p));

    let backend = Backend {
        name: format!("{namespace}/{name}"),
        protocol,
        endpoints,
        load_balancing,
        health,
        tls,
    };
    let failed = p.has_errors() || others.iter().any(Diagnostic::is_error);
    let mut all = p.into_vec();
    all.extend(others);
    if failed { Err(all) } else { Ok((backend, all)) }
}

/// The Service port a `serviceRef` names; `None` after saying why there is none.
fn service_port<'s>(
    r: &ServicePortRef,
    namespace: &str,
    service: Option<&'s Service>,
    p: &mut Problems,
) -> Option<&'s ServicePort> {
    let service = service.filter(|s| {
        s.metadata.name.as_deref() == Some(r.name.as_str())
            && namespace_of(&s.metadata) == namespace
    });
    let Some(service) = service else {
        p.error(
            "spec.serviceRef.name",
            format!("Service {namespace}/{} not found", r.name),
        );
        return None;
    };
    let port = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|ports| ports.iter().find(|port| port.port == i32::from(r.port)));
    if port.is_none() {
        p.error(
            "spec.serviceRef.port",
            format!("Service {namespace}/{} has no port {}", r.name, r.port),
        );
    }
    port
}

/// The protocol a Service port's `appProtocol` asks for; an unknown one is a warning on the
/// Service and means HTTP/1.1. (The Service path of the translator reads it the same way.)
fn app_protocol(port: &ServicePort, service: &str, out: &mut Vec<Diagnostic>) -> UpstreamProtocol {
    let app_protocol = port.app_protocol.as_deref();
    match crate::endpoints::upstream_protocol(app_protocol) {
        Some(protocol) => protocol,
        None => {
            let other = app_protocol.unwrap_or_default();
            out.push(Diagnostic::warning(
                service,
                format!("spec.ports[port={}].appProtocol", port.port),
                format!("{other:?} is not known; speaking HTTP/1.1"),
            ));
            UpstreamProtocol::Http1
        }
    }
}

/// The endpoints of Service `namespace/service`'s port `port_name` in `slices` (slices of other
/// Services are ignored), read as Service backends read them.
fn endpoints_of(
    service: &str,
    namespace: &str,
    port_name: &str,
    slices: &[&EndpointSlice],
    out: &mut Vec<Diagnostic>,
) -> Vec<Endpoint> {
    let of_service = slices.iter().copied().filter(|s| {
        namespace_of(&s.metadata) == namespace
            && s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .is_some_and(|name| name == service)
    });
    crate::endpoints::slice_endpoints(namespace, of_service.map(|s| (s, None)), port_name, out)
}

/// Listed endpoints; ready until health checks or outlier detection say otherwise. Addresses
/// that do not parse were reported by [`admit`].
fn static_endpoints(list: &[StaticEndpoint]) -> Vec<Endpoint> {
    list.iter()
        .filter_map(|e| {
            Some(Endpoint {
                address: SocketAddr::new(e.address.parse().ok()?, e.port),
                ready: true,
                weight: e.weight.unwrap_or(1),
            })
        })
        .collect()
}

/// The balancing a `loadBalancing` section asks for, with the parameters of the Service
/// annotation `novaedge.io/load-balancer`. Problems of the schema's rules were reported by
/// [`admit`]; here the snapshot is kept consistent.
fn load_balancing(spec: Option<&LoadBalancingSpec>) -> LoadBalancing {
    let Some(spec) = spec else {
        return LoadBalancing::default();
    };
    let policy = match spec.policy.unwrap_or(LoadBalancingPolicy::RoundRobin) {
        LoadBalancingPolicy::RoundRobin => LbPolicy::RoundRobin,
        LoadBalancingPolicy::Random => LbPolicy::Random,
        LoadBalancingPolicy::LeastRequest => LbPolicy::LeastRequest { choices: 2 },
        LoadBalancingPolicy::PeakEwma => LbPolicy::PeakEwma {
            decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
        },
        LoadBalancingPolicy::RingHash => LbPolicy::RingHash {
            points_per_weight: 160,
            max_ring_size: 1 << 20,
        },
        LoadBalancingPolicy::Maglev => LbPolicy::Maglev { table_size: 65_537 },
    };
    let hash_on = if policy.uses_hash() {
        Some(match spec.hash_on.as_ref() {
            Some(HashOnSpec {
                header: Some(name), ..
            }) => match http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => HashOn::Header(name),
                Err(_) => {
                    // Also refused by `admit`, which already said so.
                    HashOn::SourceIp
                }
            },
            Some(HashOnSpec {
                cookie: Some(name), ..
            }) => HashOn::Cookie(name.clone()),
            Some(HashOnSpec {
                query_param: Some(name),
                ..
            }) => HashOn::QueryParam(name.clone()),
            Some(HashOnSpec {
                source_ip: Some(_), ..
            }) => HashOn::SourceIp,
            // Without hashOn (or with several) `admit` reported an error; any choice keeps the
            // snapshot consistent.
            _ => HashOn::SourceIp,
        })
    } else {
        None
    };
    LoadBalancing {
        policy,
        hash_on,
        panic_threshold_percent: spec
            .panic_threshold
            .filter(|t| *t <= 100)
            .unwrap_or(DEFAULT_PANIC_THRESHOLD_PERCENT),
    }
}

/// TLS to the endpoints: the server name checked, the CA bundle read and checked from the
/// ConfigMap or inline, the client certificate read and checked from its Secret.
fn upstream_tls(
    spec: &UpstreamTlsSpec,
    namespace: &str,
    inputs: &BackendInputs<'_>,
    p: &mut Problems,
) -> UpstreamTls {
    let mut tls = UpstreamTls::default();
    if let Some(name) = &spec.server_name {
        if name.starts_with("*.") || check_hostname(name).is_err() {
            p.error("spec.tls.serverName", format!("{name:?} is not a DNS name"));
        } else {
            tls.server_name = name.clone();
        }
    }
    // Both set was reported by `admit`.
    if let Some(map) = &spec.ca_config_map {
        let source = format!("ConfigMap {namespace}/{map}");
        let found = inputs.config_maps.iter().find(|c| {
            c.metadata.name.as_deref() == Some(map.as_str())
                && namespace_of(&c.metadata) == namespace
        });
        let ca = match found {
            None => Err(format!("{source} not found")),
            Some(c) => c
                .data
                .as_ref()
                .and_then(|d| d.get(CA_CRT))
                .ok_or_else(|| format!("{source}: {CA_CRT}: missing"))
                .and_then(|pem| ca_bundle(pem.as_bytes()).map_err(|e| format!("{source}: {e}"))),
        };
        match ca {
            Ok(ca) => tls.ca_pem = ca,
            Err(message) => p.error("spec.tls.caConfigMap", message),
        }
    } else if let Some(bundle) = &spec.ca_bundle {
        match ca_bundle(bundle.as_bytes()) {
            Ok(ca) => tls.ca_pem = ca,
            Err(message) => p.error("spec.tls.caBundle", message),
        }
    }
    if let Some(secret) = &spec.client_certificate_secret {
        let source = format!("Secret {namespace}/{secret}");
        let found = inputs.secrets.iter().find(|s| {
            s.metadata.name.as_deref() == Some(secret.as_str())
                && namespace_of(&s.metadata) == namespace
        });
        let certificate = match found {
            None => Err(format!("{source} not found")),
            Some(s) if s.broken => Err(format!(
                "{source} is unusable (see the errors reported for it)"
            )),
            Some(s) => key_pair(s)
                .map(|pair| TlsCertificate {
                    source: source.clone(),
                    server_names: Vec::new(),
                    cert_chain_pem: pair.cert_chain_pem,
                    private_key_pem: pair.private_key_pem,
                })
                .map_err(|e| format!("{source}: {e}")),
        };
        match certificate {
            Ok(c) => tls.client_certificate = Some(c),
            Err(message) => p.error("spec.tls.clientCertificateSecret", message),
        }
    }
    tls
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use novaedge_snapshot::{ConfigSnapshot, OutlierDetection};

    use super::*;
    use crate::objects::{Object, parse_yaml};

    /// Parses a YAML text of objects: the ProxyBackend, Services, slices, ConfigMaps, Secrets.
    struct World {
        objects: Vec<Object>,
    }

    impl World {
        fn new(text: &str) -> Self {
            let (objects, diags) = parse_yaml(text, None);
            assert!(diags.is_empty(), "{diags:#?}");
            Self {
                objects: objects.into_iter().map(|o| o.object).collect(),
            }
        }

        fn convert(&self) -> Result<(Backend, Vec<Diagnostic>), Vec<Diagnostic>> {
            let backend = self
                .objects
                .iter()
                .find_map(|o| match o {
                    Object::ProxyBackend(b) => Some(b.as_ref()),
                    _ => None,
                })
                .expect("a ProxyBackend");
            let service = self.objects.iter().find_map(|o| match o {
                Object::Service(s) => Some(s),
                _ => None,
            });
            let slices: Vec<&EndpointSlice> = self
                .objects
                .iter()
                .filter_map(|o| match o {
                    Object::EndpointSlice(s) => Some(s),
                    _ => None,
                })
                .collect();
            let maps: Vec<&ConfigMap> = self
                .objects
                .iter()
                .filter_map(|o| match o {
                    Object::ConfigMap(c) => Some(c),
                    _ => None,
                })
                .collect();
            let secrets: Vec<&Secret> = self
                .objects
                .iter()
                .filter_map(|o| match o {
                    Object::Secret(s) => Some(s.as_ref()),
                    _ => None,
                })
                .collect();
            to_backend(
                backend,
                &BackendInputs {
                    service,
                    endpoint_slices: &slices,
                    config_maps: &maps,
                    secrets: &secrets,
                },
            )
        }
    }

    fn backend(spec: &str) -> String {
        format!(
            "apiVersion: novaedge.io/v1alpha1\nkind: ProxyBackend\n\
             metadata: {{name: api, namespace: shop}}\nspec:\n{spec}\n---\n"
        )
    }

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}
spec: {ports: [{name: grpc, port: 8080, appProtocol: grpc}, {name: web, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-a, namespace: shop, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: grpc, port: 9090}, {name: web, port: 8000}]
endpoints:
  - {addresses: [10.0.0.1]}
  - {addresses: [10.0.0.2], conditions: {ready: false}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-b, namespace: shop, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: grpc, port: 9090}]
endpoints: [{addresses: [10.0.0.2]}, {addresses: [10.0.0.3]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: other, namespace: shop, labels: {kubernetes.io/service-name: other}}
addressType: IPv4
ports: [{name: grpc, port: 9090}]
endpoints: [{addresses: [10.9.9.9]}]
";

    fn ep(address: &str, ready: bool, weight: u32) -> Endpoint {
        Endpoint {
            address: address.parse().unwrap(),
            ready,
            weight,
        }
    }

    #[test]
    fn a_service_ref_takes_the_service_ports_endpoints_and_app_protocol() {
        let text = backend("  serviceRef: {name: api, port: 8080}") + SERVICE;
        let (b, warnings) = World::new(&text).convert().unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(b.name, "shop/api");
        assert_eq!(b.protocol, UpstreamProtocol::H2c, "appProtocol: grpc");
        assert_eq!(
            b.endpoints,
            [
                ep("10.0.0.1:9090", true, 1),
                ep("10.0.0.2:9090", true, 1),
                ep("10.0.0.3:9090", true, 1),
            ],
            "ready in any slice is ready; other Services' slices are ignored"
        );
        assert_eq!(b.load_balancing, LoadBalancing::default());
        assert_eq!(b.health, HealthPolicy::default());
        assert_eq!(b.tls, None);
        let text = backend("  serviceRef: {name: api, port: 80}\n  protocol: WebSocket") + SERVICE;
        let (b, _) = World::new(&text).convert().unwrap();
        assert_eq!(b.protocol, UpstreamProtocol::Http1);
        assert_eq!(
            b.endpoints,
            [ep("10.0.0.1:8000", true, 1), ep("10.0.0.2:8000", false, 1)]
        );
    }

    #[test]
    fn every_section_converts_into_a_valid_snapshot_backend() {
        let (ca, _) = cert();
        let text = backend(
            "  endpoints: [{address: 10.1.0.1, port: 8443, weight: 3}, {address: 'fd00::1', port: 8443}]
  protocol: H2C
  loadBalancing: {policy: RingHash, hashOn: {header: x-user}, panicThreshold: 0}
  healthCheck: {http: {path: /healthz, expectedStatuses: [200, '300-302']}, interval: 2s}
  outlierDetection: {consecutive5xx: 4, maxEjectionPercent: 20}
  circuitBreaker: {maxRequests: 7}
  tls: {serverName: api.shop.internal, caConfigMap: ca}",
        ) + &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ca, namespace: shop}}\n\
             data:\n  ca.crt: |\n{}",
            indent(&ca)
        );
        let (b, warnings) = World::new(&text).convert().unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            b.endpoints,
            [ep("10.1.0.1:8443", true, 3), ep("[fd00::1]:8443", true, 1)]
        );
        assert_eq!(b.protocol, UpstreamProtocol::H2c);
        assert_eq!(
            b.load_balancing,
            LoadBalancing {
                policy: LbPolicy::RingHash {
                    points_per_weight: 160,
                    max_ring_size: 1 << 20
                },
                hash_on: Some(HashOn::Header(http::HeaderName::from_static("x-user"))),
                panic_threshold_percent: 0,
            }
        );
        let active = b.health.active.as_ref().unwrap();
        assert_eq!(active.interval, Duration::from_secs(2));
        assert_eq!(b.health.outlier_detection.consecutive_5xx, Some(4));
        assert_eq!(b.health.outlier_detection.max_ejection_percent, 20);
        assert_eq!(
            b.health.outlier_detection.base_ejection_time,
            OutlierDetection::default().base_ejection_time
        );
        assert_eq!(b.health.circuit_breakers.max_requests, 7);
        let tls = b.tls.as_ref().unwrap();
        assert_eq!(tls.server_name, "api.shop.internal");
        assert_eq!(tls.ca_pem, ca);
        assert_eq!(tls.client_certificate, None);
        // The snapshot validator, which the data plane trusts, accepts it.
        let snapshot = ConfigSnapshot {
            version: 1,
            listeners: Vec::new(),
            routes: Vec::new(),
            backends: vec![b],
            vips: Vec::new(),
        };
        snapshot.validate().unwrap();
    }

    #[test]
    fn hash_policies_and_client_certificates() {
        let (c, k) = cert();
        let text = backend(
            "  endpoints: [{address: 10.1.0.1, port: 80}]
  loadBalancing: {policy: Maglev, hashOn: {sourceIP: }}
  tls: {clientCertificateSecret: client}",
        ) + &format!(
            "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\n\
             metadata: {{name: client, namespace: shop}}\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(&c),
            indent(&k)
        );
        let (b, _) = World::new(&text).convert().unwrap();
        assert_eq!(
            b.load_balancing.policy,
            LbPolicy::Maglev { table_size: 65_537 }
        );
        assert_eq!(b.load_balancing.hash_on, Some(HashOn::SourceIp));
        let client = b.tls.unwrap().client_certificate.unwrap();
        assert_eq!(client.source, "Secret shop/client");
        assert_eq!(client.cert_chain_pem, c);
        for (policy, want) in [
            ("{cookie: session}", HashOn::Cookie("session".into())),
            ("{queryParam: user}", HashOn::QueryParam("user".into())),
        ] {
            let text = backend(&format!(
                "  endpoints: [{{address: 10.1.0.1, port: 80}}]\n  \
                 loadBalancing: {{policy: RingHash, hashOn: {policy}}}"
            ));
            let (b, _) = World::new(&text).convert().unwrap();
            assert_eq!(b.load_balancing.hash_on, Some(want));
        }
    }

    #[test]
    fn every_problem_names_the_field() {
        let cases = [
            (
                backend("  serviceRef: {name: api, port: 8080}"),
                vec!["ProxyBackend shop/api | spec.serviceRef.name | Service shop/api not found"],
            ),
            (
                backend("  serviceRef: {name: api, port: 81}") + SERVICE,
                vec![
                    "ProxyBackend shop/api | spec.serviceRef.port | Service shop/api has no port 81",
                ],
            ),
            (
                backend(
                    "  endpoints: [{address: 10.0.0.1, port: 80}]\n  \
                     healthCheck: {tcp: {}, interval: 48h, unhealthyThreshold: 0}\n  \
                     outlierDetection: {maxEjectionPercent: 101}\n  \
                     circuitBreaker: {maxConnections: 0}",
                ),
                vec![
                    "ProxyBackend shop/api | spec.healthCheck.interval | must be between 1ms \
                     and 24h, got 48h",
                    "ProxyBackend shop/api | spec.healthCheck.unhealthyThreshold | must be at \
                     least 1",
                    "ProxyBackend shop/api | spec.outlierDetection.maxEjectionPercent | must be \
                     a percentage from 0 to 100, got 101",
                    "ProxyBackend shop/api | spec.circuitBreaker.maxConnections | must be at \
                     least 1",
                ],
            ),
            (
                backend(
                    "  endpoints: [{address: 10.0.0.1, port: 80}]\n  \
                     tls: {serverName: '*.shop', caConfigMap: nope, clientCertificateSecret: nope}",
                ),
                vec![
                    "ProxyBackend shop/api | spec.tls.serverName | \"*.shop\" is not a DNS name",
                    "ProxyBackend shop/api | spec.tls.caConfigMap | ConfigMap shop/nope not found",
                    "ProxyBackend shop/api | spec.tls.clientCertificateSecret | Secret shop/nope \
                     not found",
                ],
            ),
            (
                backend("  endpoints: [{address: 10.0.0.1, port: 80}]\n  tls: {caBundle: junk}"),
                vec![
                    "ProxyBackend shop/api | spec.tls.caBundle | ca.crt: no PEM CERTIFICATE block",
                ],
            ),
            (
                backend("  serviceRef: {name: api, port: 8080}")
                    + "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\n\
                       spec: {ports: [{name: grpc, port: 8080, appProtocol: thrift}]}\n---\n\
                       apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                       metadata: {name: s, namespace: shop, labels: {kubernetes.io/service-name: api}}\n\
                       addressType: IPv4\nports: [{name: grpc, port: 9}]\n\
                       endpoints: [{addresses: [10.0.0.1, nope]}]\n",
                vec![
                    "EndpointSlice shop/s | endpoints[0].addresses[1] | \"nope\" is not an IP \
                     address",
                    "Service shop/api | spec.ports[port=8080].appProtocol | \"thrift\" is not \
                     known; speaking HTTP/1.1",
                ],
            ),
        ];
        for (text, want) in cases {
            let got: Vec<String> = World::new(&text)
                .convert()
                .unwrap_err()
                .iter()
                .map(|d| format!("{} | {} | {}", d.object, d.field, d.message))
                .collect();
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn the_schema_rules_are_checked_on_conversion_too() {
        // As a cluster might hold an object stored before a rule existed, the conversion does
        // not assume admission ran.
        let mut b: ProxyBackend = serde_json::from_value(serde_json::json!({
            "apiVersion": "novaedge.io/v1alpha1",
            "kind": "ProxyBackend",
            "metadata": {"name": "api", "namespace": "shop"},
            "spec": {"endpoints": [{"address": "10.0.0.1", "port": 80}]},
        }))
        .unwrap();
        b.spec.service_ref = Some(ServicePortRef {
            name: "api".into(),
            port: 80,
        });
        b.spec.load_balancing = Some(LoadBalancingSpec {
            policy: Some(LoadBalancingPolicy::Maglev),
            ..LoadBalancingSpec::default()
        });
        let errors = to_backend(&b, &BackendInputs::default()).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec", "spec.loadBalancing.hashOn", "spec.serviceRef.name"]
        );
    }

    fn cert() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["api.shop.internal".to_owned()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn indent(pem: &str) -> String {
        pem.lines().map(|l| format!("    {l}\n")).collect()
    }
}
