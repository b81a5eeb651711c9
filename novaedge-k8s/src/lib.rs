//! Kubernetes objects in, NovaEdge snapshots out.
//!
//! - [`objects`]: parsing Kubernetes YAML (multi-document, files or directories) into typed
//!   objects, using the upstream `k8s-openapi` and `gateway-api` types, with errors that name the
//!   file, the object and the field.
//! - [`translate()`]: one pure function from a set of objects to a
//!   [`ConfigSnapshot`](novaedge_snapshot::ConfigSnapshot) plus diagnostics. The controller and
//!   `novaedge run` both use it.
//! - [`file_source`]: the standalone source behind `novaedge run` and `novaedge check`: load
//!   paths, translate, and watch them for changes.
//! - `controller` (feature `controller`): the Kubernetes API source of `novaedge controller`:
//!   watchers, debounced rebuilds, leader election, status and Events.
//! - [`crd`]: NovaEdge's own kinds (`novaedge.io/v1alpha1`: `ProxyGateway`, `ProxyRoute`,
//!   `ProxyBackend`, `ProxyPolicy`, `ProxyVIP`), their generated CRDs, the schema's rules checked
//!   when a file is loaded, and their conversions. Of these the translator takes `ProxyPolicy`
//!   so far.
//!
//! What is translated today: Gateway API `GatewayClass`, `Gateway` (HTTP listeners: port,
//! hostname, allowed route namespaces: `Same`, `All`, or a label `Selector` over the labels of
//! core `Namespace` objects), `HTTPRoute` (hostnames, parentRefs with sectionName and
//! port, Exact, PathPrefix and RegularExpression path matches, exact and regular-expression header
//! and query parameter matches, method matches, the rule filters `RequestHeaderModifier`,
//! `ResponseHeaderModifier`, `URLRewrite` and `RequestRedirect`, weighted
//! `backendRefs` to Services in the route's namespace), `GRPCRoute` (translated as the equivalent
//! HTTPRoute: service and method matches as path matches, header matches, the header modifier
//! and mirror filters, backends that speak h2c), core `Service` (ports, `appProtocol`) and
//! `discovery.k8s.io/v1` `EndpointSlice` (IPv4/IPv6 addresses, ports by name, the ready
//! condition). A Service chooses its balancing with annotations (until the translator takes the
//! `ProxyBackend` kind): [`LOAD_BALANCER_ANNOTATION`], [`HASH_ON_ANNOTATION`], [`PANIC_THRESHOLD_ANNOTATION`];
//! and its health policy with three more, each a small YAML or JSON object (see [`health`]):
//! [`HEALTH_CHECK_ANNOTATION`] (active HTTP, TCP or gRPC probes),
//! [`OUTLIER_DETECTION_ANNOTATION`] (passive ejection) and [`CIRCUIT_BREAKER_ANNOTATION`]
//! (per-backend limits). Anything a route asks for that is not implemented yet is an error,
//! never silently dropped, because dropping a match condition would widen what a route accepts;
//! a Service annotation that does not parse or is out of range is an error naming its field.
//!
//! TLS (see [`tls`]): HTTPS Gateway listeners with `certificateRefs` to `kubernetes.io/tls`
//! Secrets (checked when translated; standalone, a Secret may name PEM files, which the file
//! source watches), cross-namespace references through `ReferenceGrant`, client certificate
//! validation from the Gateway's `spec.tls.frontend` (CA bundles in ConfigMaps), HTTP to HTTPS
//! redirects ([`HTTPS_REDIRECT_ANNOTATION`]), and TLS to backends from `BackendTLSPolicy` and
//! the Service annotation [`UPSTREAM_TLS_ANNOTATION`].
//!
//! Ingress: `networking.k8s.io/v1` `Ingress` and `IngressClass` (controller
//! [`INGRESS_CONTROLLER_NAME`]): hosts, `Exact`, `Prefix` and `ImplementationSpecific` (read as
//! `Prefix`) paths, Service backends by port number or name, `defaultBackend`, `spec.tls`, and
//! the opt-in [`SSL_REDIRECT_ANNOTATION`]. An Ingress names no port, so it is served on
//! [`TranslateOptions::ingress_http_port`] and, with TLS, on
//! [`TranslateOptions::ingress_https_port`], sharing those ports with Gateway listeners of the
//! same protocol.

#![forbid(unsafe_code)]

#[cfg(feature = "controller")]
pub mod controller;
pub mod crd;
mod diagnostics;
mod endpoints;
pub mod file_source;
mod filters;
pub mod health;
pub mod nodes;
pub mod objects;
pub mod placement;
pub mod policy;
pub mod status;
pub mod tls;
mod translate;

pub use diagnostics::{Diagnostic, Severity};
pub use health::{
    CIRCUIT_BREAKER_ANNOTATION, HEALTH_CHECK_ANNOTATION, OUTLIER_DETECTION_ANNOTATION,
};
pub use policy::{PROXY_POLICY_API_VERSION, ProxyPolicy, ProxyPolicySpec};
pub use status::{Condition, Statuses};
pub use tls::{
    CA_FILE_ANNOTATION, CERT_FILE_ANNOTATION, HTTPS_REDIRECT_ANNOTATION, KEY_FILE_ANNOTATION,
    UPSTREAM_TLS_ANNOTATION, UpstreamTlsSpec,
};
pub use translate::{
    GATEWAY_CONTROLLER_NAME, HASH_ON_ANNOTATION, INGRESS_CONTROLLER_NAME, LOAD_BALANCER_ANNOTATION,
    PANIC_THRESHOLD_ANNOTATION, SSL_REDIRECT_ANNOTATION, TranslateOptions, Translation, translate,
};
