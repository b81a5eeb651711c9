//! NovaEdge's own kinds: API group `novaedge.io`, version `v1alpha1`.
//!
//! | kind | what it is | becomes |
//! |---|---|---|
//! | [`ProxyGateway`] | listeners (port, protocol, hostname, TLS), the VIP that carries them, the nodes that serve them | a Gateway API `Gateway` (`to_gateway`) |
//! | [`ProxyRoute`] | hostnames, matches, filters and weighted backends, attached to ProxyGateways | a Gateway API `HTTPRoute` (`to_http_route`) |
//! | [`ProxyBackend`] | a Service port or static endpoints, with balancing, health checks, outlier detection, circuit breakers and upstream TLS | a snapshot [`Backend`](novaedge_snapshot::Backend) (`to_backend`) |
//! | [`ProxyPolicy`] | JWT, rate limits, CORS, IP filters and retries for a Gateway or HTTPRoute | route filters (see [`crate::policy`]) |
//! | [`ProxyVip`] (`ProxyVIP`) | virtual addresses announced by L2 (ARP/NDP), BGP or OSPF from selected nodes | a checked [`VipSpec`] ([`to_vip_spec`]) |
//!
//! Every kind is namespaced and has a `status` subresource ([`Status`]: `conditions` and
//! `observedGeneration`, as Gateway API statuses have; a ProxyGateway's adds its `listeners`,
//! [`ProxyGatewayStatus`], and a ProxyRoute's has `parents` instead of `conditions`,
//! [`ProxyRouteStatus`]). The schemas are generated from these
//! types ([`crds`], `novaedge crdgen`, `config/crd/`): field docs become descriptions, and what
//! OpenAPI and CEL can say is in them (ranges, patterns, enums, "exactly one of" rules), so that
//! the API server refuses a bad object when it is applied.
//!
//! Standalone (`novaedge run`, `novaedge check`) no API server checks the manifests, so the
//! loader does what admission would: `admit` repeats the schema's rules in Rust, and an object
//! that breaks one is reported (object and field path, e.g. `spec.listeners[1].tls`) and left
//! out, as a cluster would have refused it. What a schema cannot say (an address parses, a
//! referenced Service has the port, a regular expression compiles) is checked where the object
//! is converted: by the Gateway API translator for `to_gateway` and `to_http_route`, whose
//! output keeps the field paths of the input, and by `to_backend` and [`to_vip_spec`]
//! themselves.
//!
//! The test `tests/crd.rs` keeps the two in step: every sample in `config/samples/` passes both
//! the generated schema (OpenAPI constraints and CEL rules) and `admit`, and each invalid case
//! in its table is refused by both.

pub(crate) mod backend;
pub(crate) mod gateway;
pub(crate) mod route;
mod status;
pub(crate) mod vip;

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diagnostics::Diagnostic;
use crate::objects::Object;
use crate::policy::ProxyPolicy;

pub use backend::{
    BackendProtocol, HashOnSpec, LoadBalancingPolicy, LoadBalancingSpec, ProxyBackend,
    ProxyBackendSpec, ServicePortRef, StaticEndpoint,
};
pub use gateway::{
    AllowedRoutes, FromNamespaces, ListenerProtocol, ListenerSpec, ListenerTls,
    PROXY_GATEWAY_CLASS, ProxyGateway, ProxyGatewaySpec, RouteNamespaces, TlsMode,
};
pub use route::{
    BackendKind, HeaderMatch, HeaderMatchType, HeaderModifier, HeaderValue, HttpMethod,
    MirrorBackendRef, MirrorFraction, ParentRef, PathMatch, PathMatchType, PathModifier,
    PathModifierType, ProxyRoute, ProxyRouteSpec, QueryParamMatch, RedirectScheme, RequestMirror,
    RequestRedirect, RouteBackendRef, RouteFilter, RouteFilterType, RouteMatch, RouteRule,
    UrlRewrite,
};
pub use status::{
    ProxyGatewayStatus, ProxyListenerStatus, ProxyRouteParentStatus, ProxyRouteStatus, Status,
};
pub use vip::{
    Announce, BgpAnnounce, BgpPeer, BgpPeerSpec, BgpSpec, OspfAnnounce, OspfInterface,
    OspfInterfaceSpec, OspfNetworkType, OspfSpec, ProxyVip, ProxyVipSpec, SecretKeyRef, VipMode,
    VipSpec, to_vip_spec,
};

/// The API group of every NovaEdge kind.
pub const GROUP: &str = "novaedge.io";
/// The version of the kinds defined here.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of the kinds defined here.
pub const API_VERSION: &str = "novaedge.io/v1alpha1";

/// The largest weight of a backend reference or endpoint (Gateway API's bound, and the
/// snapshot's).
pub(crate) const MAX_WEIGHT: u32 = 1_000_000;

// Patterns of the schema. Each is checked again in Rust by the function named beside it, since
// the loader has no regular expression engine for schemas and must say what is wrong anyway.

/// An RFC 1123 label (listener and section names): [`is_dns_label`].
pub(crate) const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// An RFC 1123 subdomain (object names): [`is_dns_subdomain`].
pub(crate) const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// An RFC 1035 label (Service names): [`is_dns_1035_label`].
pub(crate) const DNS_1035_LABEL_PATTERN: &str = r"^[a-z]([-a-z0-9]*[a-z0-9])?$";
/// A hostname, optionally with a leading wildcard label (Gateway API `Hostname`):
/// [`novaedge_snapshot::check_hostname`].
pub(crate) const HOSTNAME_PATTERN: &str =
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A label key: [`check_label_key`]. (The prefix's own bound of 253 characters is checked only
/// there; the schema bounds the whole key.)
pub(crate) const LABEL_KEY_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$";
/// A label value: [`check_label_value`].
pub(crate) const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$";
/// An HTTP header name (RFC 7230 token): [`is_token`].
pub(crate) const HEADER_NAME_PATTERN: &str = r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$";

/// Every NovaEdge CRD, in a fixed order: ProxyGateway, ProxyRoute, ProxyBackend, ProxyPolicy,
/// ProxyVIP.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        ProxyGateway::crd(),
        ProxyRoute::crd(),
        ProxyBackend::crd(),
        ProxyPolicy::crd(),
        ProxyVip::crd(),
    ]
}

/// [`crds`] as one multi-document YAML text, as `novaedge crdgen` prints it and
/// `config/crd/novaedge.io.yaml` holds it.
pub fn crd_yaml() -> Result<String, serde_norway::Error> {
    let mut out = String::from(
        "# NovaEdge CRDs (novaedge.io/v1alpha1), generated from the Rust types by \
         `novaedge crdgen`.\n# Do not edit: change the types in novaedge-k8s/src/crd/ and \
         run the command again.\n",
    );
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&crd)?);
    }
    Ok(out)
}

/// The errors the API server would find on admission from the CRD schema (ranges, lengths,
/// patterns, unique list keys, CEL rules) in a NovaEdge object read from a file: an object with
/// any is refused. None for other kinds, nor for ProxyPolicy, whose schema states only what its
/// conversion checks (see [`crate::policy`]).
pub(crate) fn admit(object: &Object) -> Vec<Diagnostic> {
    let mut p = Problems::new(object.describe());
    match object {
        Object::ProxyGateway(g) => gateway::admit(&g.spec, &mut p),
        Object::ProxyRoute(r) => route::admit(&r.spec, &mut p),
        Object::ProxyBackend(b) => backend::admit(&b.spec, &mut p),
        Object::ProxyVip(v) => vip::admit(&v.spec, &mut p),
        _ => {}
    }
    p.into_vec()
}

/// Schema transform for enums: the description of an optional field (`Option<Enum>`) would be
/// replaced by the enum's own when kube's `OptionalEnum` transform flattens it, so enums leave
/// the describing to the fields that use them.
pub(crate) fn field_describes(schema: &mut schemars::Schema) {
    schema.remove("description");
}

/// Schema transform for settings objects without fields (`tcp: {}`): schemars closes them with
/// `additionalProperties: false`, which a CRD's structural schema may not say. Unknown fields
/// there are still pruned by the API server and refused by the loader.
pub(crate) fn open_empty_object(schema: &mut schemars::Schema) {
    schema.remove("additionalProperties");
}

// === shared spec types ===

/// A reference to an object of a known kind in the referrer's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectRef {
    /// The object's name.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// A Secret, by default in the referrer's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretObjectRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Its namespace; default the referrer's. Another namespace needs a ReferenceGrant there
    /// that allows the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub namespace: Option<String>,
}

/// Which nodes: a Kubernetes label selector over node labels. Empty selects every node. Label
/// keys and values in `matchLabels` are checked when the object is loaded from a file (as
/// Kubernetes checks its own selectors); the schema bounds only the expressions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelector {
    /// Labels a node must carry, with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements on a node's labels; every one must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub match_expressions: Vec<LabelRequirement>,
}

/// One requirement of a node selector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
    "message": "values must be non-empty for In and NotIn, and absent for Exists and DoesNotExist",
}]))]
pub struct LabelRequirement {
    /// The label key: an optional DNS subdomain prefix and `/`, then a name.
    #[schemars(length(min = 1, max = 317), pattern(LABEL_KEY_PATTERN))]
    pub key: String,
    /// How the key's value is compared with `values`.
    pub operator: LabelOperator,
    /// The values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(max = 63), pattern(LABEL_VALUE_PATTERN))
    )]
    pub values: Vec<String>,
}

/// The operators of a [`LabelRequirement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = field_describes)]
pub enum LabelOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl NodeSelector {
    /// Whether a node with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    LabelOperator::In => value.is_some_and(|v| r.values.contains(v)),
                    LabelOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    LabelOperator::Exists => value.is_some(),
                    LabelOperator::DoesNotExist => value.is_none(),
                }
            })
    }

    fn admit(&self, field: &str, p: &mut Problems) {
        for (key, value) in &self.match_labels {
            let f = format!("{field}.matchLabels[{key}]");
            if let Err(why) = check_label_key(key) {
                p.error(&f, format!("{key:?} is not a label key: {why}"));
            }
            if let Err(why) = check_label_value(value) {
                p.error(&f, format!("{value:?} is not a label value: {why}"));
            }
        }
        p.max_items(
            &format!("{field}.matchExpressions"),
            self.match_expressions.len(),
            16,
        );
        for (i, r) in self.match_expressions.iter().enumerate() {
            let f = format!("{field}.matchExpressions[{i}]");
            if let Err(why) = check_label_key(&r.key) {
                p.error(
                    format!("{f}.key"),
                    format!("{:?} is not a label key: {why}", r.key),
                );
            }
            let wants_values = matches!(r.operator, LabelOperator::In | LabelOperator::NotIn);
            if wants_values == r.values.is_empty() {
                p.error(
                    format!("{f}.values"),
                    "values must be non-empty for In and NotIn, and absent for Exists and \
                     DoesNotExist",
                );
            }
            p.max_items(&format!("{f}.values"), r.values.len(), 64);
            for (j, v) in r.values.iter().enumerate() {
                if let Err(why) = check_label_value(v) {
                    p.error(
                        format!("{f}.values[{j}]"),
                        format!("{v:?} is not a label value: {why}"),
                    );
                }
            }
        }
    }
}

// === checks ===

/// Errors found in one object, as diagnostics that name it and the field.
#[derive(Debug)]
pub(crate) struct Problems {
    object: String,
    list: Vec<Diagnostic>,
}

impl Problems {
    pub(crate) fn new(object: String) -> Self {
        Self {
            object,
            list: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.list
            .push(Diagnostic::error(&self.object, field, message));
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.list.is_empty()
    }

    pub(crate) fn into_vec(self) -> Vec<Diagnostic> {
        self.list
    }

    /// `value` if nothing was found, else the errors.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, Vec<Diagnostic>> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(self.list)
        }
    }

    /// Errors of a spec conversion from [`crate::health`] (fields relative to `prefix`).
    pub(crate) fn spec_errors(&mut self, prefix: &str, errors: Vec<crate::health::SpecError>) {
        for e in errors {
            let field = if e.field.is_empty() {
                prefix.to_owned()
            } else {
                format!("{prefix}.{}", e.field)
            };
            self.error(field, e.message);
        }
    }

    pub(crate) fn min_items(&mut self, field: &str, len: usize, min: usize) {
        if len < min {
            self.error(field, format!("needs at least {min} item(s), has {len}"));
        }
    }

    pub(crate) fn max_items(&mut self, field: &str, len: usize, max: usize) {
        if len > max {
            self.error(field, format!("may have at most {max} items, has {len}"));
        }
    }

    pub(crate) fn max_len(&mut self, field: &str, value: &str, max: usize) {
        if value.len() > max {
            self.error(
                field,
                format!("longer than {max} characters ({})", value.len()),
            );
        }
    }

    /// An object name (RFC 1123 subdomain).
    pub(crate) fn name(&mut self, field: &str, name: &str) {
        if !is_dns_subdomain(name) {
            self.error(
                field,
                format!(
                    "{name:?} is not an object name (lowercase letters, digits, '-' and '.', \
                     starting and ending with a letter or digit, at most 253 characters)"
                ),
            );
        }
    }

    /// A namespace, listener or section name (RFC 1123 label).
    pub(crate) fn label(&mut self, field: &str, name: &str) {
        if !is_dns_label(name) {
            self.error(
                field,
                format!(
                    "{name:?} is not a valid name (lowercase letters, digits and '-', starting \
                     and ending with a letter or digit, at most 63 characters)"
                ),
            );
        }
    }

    /// A Service name (RFC 1035 label).
    pub(crate) fn service_name(&mut self, field: &str, name: &str) {
        if !is_dns_1035_label(name) {
            self.error(
                field,
                format!(
                    "{name:?} is not a Service name (lowercase letters, digits and '-', \
                     starting with a letter, at most 63 characters)"
                ),
            );
        }
    }

    pub(crate) fn hostname(&mut self, field: &str, host: &str) {
        if let Err(why) = novaedge_snapshot::check_hostname(host) {
            self.error(field, format!("{host:?} is not a hostname: {why}"));
        }
    }

    pub(crate) fn header_name(&mut self, field: &str, name: &str) {
        if !is_token(name) || name.len() > 256 {
            self.error(
                field,
                format!("{name:?} is not an HTTP header name (at most 256 token characters)"),
            );
        }
    }

    /// A TCP port: the schema's minimum of 1 (the type already bounds it by 65535).
    pub(crate) fn port(&mut self, field: &str, port: u16) {
        if port == 0 {
            self.error(field, "0 is not a port (1-65535)");
        }
    }

    /// An integer within `min..=max`.
    pub(crate) fn range<T>(&mut self, field: &str, value: T, min: T, max: T)
    where
        T: PartialOrd + std::fmt::Display,
    {
        if value < min || value > max {
            self.error(field, format!("must be from {min} to {max}, got {value}"));
        }
    }
}

fn is_label_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

/// An RFC 1123 label, as [`DNS_LABEL_PATTERN`] and at most 63 characters.
pub(crate) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().copied().all(is_label_char)
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// An RFC 1123 subdomain, as [`DNS_SUBDOMAIN_PATTERN`] and at most 253 characters.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    // The pattern allows labels of any length; only the whole is bounded.
    s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter().copied().all(is_label_char)
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// An RFC 1035 label, as [`DNS_1035_LABEL_PATTERN`] and at most 63 characters.
pub(crate) fn is_dns_1035_label(s: &str) -> bool {
    is_dns_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// An RFC 7230 token, as [`HEADER_NAME_PATTERN`].
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of at most 63 characters.
pub(crate) fn check_label_key(key: &str) -> Result<(), &'static str> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix) {
                return Err("the prefix before '/' must be a DNS subdomain");
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("the name part must not be empty");
    }
    check_label_value(name)
}

/// A label value: empty, or at most 63 letters, digits, `-`, `_` and `.`, starting and ending
/// with a letter or digit.
pub(crate) fn check_label_value(value: &str) -> Result<(), &'static str> {
    let b = value.as_bytes();
    if b.len() > 63 {
        return Err("longer than 63 characters");
    }
    let ok = b.is_empty()
        || (b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err("only letters, digits, '-', '_' and '.', starting and ending with a letter or digit")
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use gateway_api::httproutes::HttpRoute;
    use k8s_openapi::api::core::v1::{ConfigMap, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use novaedge_snapshot::{ConfigSnapshot, ListenerProtocol, UpstreamProtocol};

    use super::*;
    use crate::objects::{Sourced, load_paths, namespace_of};
    use crate::tls::Secret;
    use crate::{TranslateOptions, translate};

    fn samples() -> Vec<Sourced> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/samples");
        let (objects, diagnostics) = load_paths(&[dir]);
        assert!(
            !diagnostics.iter().any(Diagnostic::is_error),
            "{diagnostics:#?}"
        );
        objects
    }

    /// The samples' ProxyVIPs and ProxyBackends convert without a problem, and the backends
    /// pass the snapshot validator.
    #[test]
    fn sample_vips_and_backends_convert() {
        let objects = samples();
        let all = || objects.iter().map(|o| &o.object);
        let mut vips = Vec::new();
        for o in all() {
            if let Object::ProxyVip(v) = o {
                vips.push(to_vip_spec(v).unwrap());
            }
        }
        let names: Vec<&str> = vips.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["shop/shop-vip", "shop/office-vip"]);
        assert!(matches!(&vips[0].announce, Announce::Bgp(b) if b.peers.len() == 2));

        let slices: Vec<&EndpointSlice> = all()
            .filter_map(|o| match o {
                Object::EndpointSlice(s) => Some(s),
                _ => None,
            })
            .collect();
        let maps: Vec<&ConfigMap> = all()
            .filter_map(|o| match o {
                Object::ConfigMap(c) => Some(c),
                _ => None,
            })
            .collect();
        let secrets: Vec<&Secret> = all()
            .filter_map(|o| match o {
                Object::Secret(s) => Some(s.as_ref()),
                _ => None,
            })
            .collect();
        let mut backends = Vec::new();
        for o in all() {
            let Object::ProxyBackend(b) = o else { continue };
            let service: Option<&Service> = b.spec.service_ref.as_ref().and_then(|r| {
                all().find_map(|o| match o {
                    Object::Service(s)
                        if s.metadata.name.as_ref() == Some(&r.name)
                            && namespace_of(&s.metadata) == namespace_of(&b.metadata) =>
                    {
                        Some(s)
                    }
                    _ => None,
                })
            });
            let inputs = backend::BackendInputs {
                service,
                endpoint_slices: &slices,
                config_maps: &maps,
                secrets: &secrets,
            };
            let (backend, warnings) = backend::to_backend(b, &inputs).unwrap();
            assert!(warnings.is_empty(), "{warnings:#?}");
            backends.push(backend);
        }
        assert_eq!(backends[0].name, "shop/catalog");
        assert_eq!(backends[0].protocol, UpstreamProtocol::H2c);
        assert_eq!(backends[0].endpoints.len(), 3);
        assert_eq!(backends[1].name, "shop/legacy-inventory");
        assert!(
            backends[1]
                .tls
                .as_ref()
                .is_some_and(|t| !t.ca_pem.is_empty())
        );
        let snapshot = ConfigSnapshot {
            version: 1,
            listeners: Vec::new(),
            routes: Vec::new(),
            backends,
            vips: Vec::new(),
        };
        snapshot.validate().unwrap();
    }

    /// The samples' ProxyGateways and ProxyRoutes, converted, are served by the Gateway API
    /// translator: listeners, TLS and every rule. The translator does not resolve ProxyBackend
    /// references yet, so this test takes them out of the converted routes (their rules then
    /// have no backends, which Gateway API answers with 500).
    #[test]
    fn sample_gateways_and_routes_translate() {
        let mut converted = Vec::new();
        for sourced in samples() {
            let object = match sourced.object {
                Object::ProxyGateway(g) => Object::Gateway(gateway::to_gateway(&g)),
                Object::ProxyRoute(r) => {
                    let mut route: HttpRoute = route::to_http_route(&r);
                    for rule in route.spec.rules.iter_mut().flatten() {
                        if let Some(refs) = &mut rule.backend_refs {
                            refs.retain(|b| b.kind.as_deref() != Some("ProxyBackend"));
                        }
                    }
                    Object::HttpRoute(route)
                }
                Object::ProxyBackend(_) | Object::ProxyVip(_) => continue,
                other => other,
            };
            converted.push(Sourced {
                object,
                file: sourced.file,
            });
        }
        let t = translate(&converted, &TranslateOptions::default());
        assert!(!t.has_errors(), "{:#?}", t.diagnostics);
        let listeners: Vec<(u16, ListenerProtocol, usize)> = t
            .snapshot
            .listeners
            .iter()
            .map(|l| {
                let certificates = l.tls.as_ref().map_or(0, |tls| tls.certificates.len());
                (l.port, l.protocol, certificates)
            })
            .collect();
        assert_eq!(
            listeners,
            [
                (8080, ListenerProtocol::Http, 0),
                (8443, ListenerProtocol::Https, 1),
                (9080, ListenerProtocol::Http, 0),
            ]
        );
        let routes: Vec<(&str, u16, usize)> = t
            .snapshot
            .routes
            .iter()
            .map(|r| {
                let port = t
                    .snapshot
                    .listeners
                    .iter()
                    .find(|l| l.name == r.listener)
                    .map_or(0, |l| l.port);
                (r.name.as_str(), port, r.rules.len())
            })
            .collect();
        assert_eq!(
            routes,
            [
                ("shop/https-redirect", 8080, 1),
                ("shop/partner-api", 9080, 1),
                ("shop/storefront", 8443, 6),
            ]
        );
        let storefront = t
            .snapshot
            .routes
            .iter()
            .find(|r| r.name == "shop/storefront")
            .unwrap();
        assert_eq!(storefront.hostnames, ["shop.example.test"]);
        let last = storefront.rules.last().unwrap();
        let weights: Vec<u32> = last.backends.iter().map(|b| b.weight).collect();
        assert_eq!(weights, [90, 10]);
        assert!(last.filters.request_headers.is_some());
        // The partner API's ProxyPolicy applied.
        let partner = t
            .snapshot
            .routes
            .iter()
            .find(|r| r.name == "shop/partner-api")
            .unwrap();
        let filters = &partner.rules[0].filters;
        assert!(filters.jwt.is_some() && filters.rate_limit.is_some() && filters.cors.is_some());
    }

    #[test]
    fn name_checks_follow_the_schema_patterns() {
        for ok in ["a", "web-1", "0a", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        for ok in ["a.b", "shop-tls", "a.b-c.d"] {
            assert!(is_dns_subdomain(ok), "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.", "a.-b", "A.b", &"a".repeat(254)] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
        assert!(is_dns_1035_label("web"));
        assert!(!is_dns_1035_label("1web"));
        assert!(is_token("X-Request-Id"));
        assert!(!is_token("x y") && !is_token("") && !is_token("x:y"));
    }

    #[test]
    fn label_keys_and_values() {
        for ok in ["zone", "topology.kubernetes.io/zone", "a_b.c-d"] {
            assert_eq!(check_label_key(ok), Ok(()), "{ok}");
        }
        for bad in ["", "/zone", "a/", "Bad_Prefix/zone", "-a", "a/b/c"] {
            assert!(check_label_key(bad).is_err(), "{bad}");
        }
        assert_eq!(check_label_value(""), Ok(()));
        assert!(check_label_value("-x").is_err());
        assert!(check_label_value(&"x".repeat(64)).is_err());
    }

    #[test]
    fn node_selectors_match_as_kubernetes_does() {
        let labels: BTreeMap<String, String> = [("zone", "a"), ("role", "edge")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let selector = |yaml: &str| serde_norway::from_str::<NodeSelector>(yaml).unwrap();
        assert!(selector("{}").matches(&labels));
        assert!(selector("{matchLabels: {zone: a}}").matches(&labels));
        assert!(!selector("{matchLabels: {zone: b}}").matches(&labels));
        let expr = |op: &str, values: &str| {
            selector(&format!(
                "{{matchExpressions: [{{key: role, operator: {op}{values}}}]}}"
            ))
        };
        assert!(expr("In", ", values: [edge, core]").matches(&labels));
        assert!(!expr("NotIn", ", values: [edge]").matches(&labels));
        assert!(expr("Exists", "").matches(&labels));
        assert!(!expr("DoesNotExist", "").matches(&labels));
        let missing = selector("{matchExpressions: [{key: gpu, operator: NotIn, values: [x]}]}");
        assert!(missing.matches(&labels), "NotIn holds for a missing label");
    }
}
