//! Objects to snapshot: one pure function, shared by the controller and the file source.

mod grpc;
mod ingress;
mod namespaces;
mod proxy;
mod status;
mod tls;
mod vips;

use std::collections::{BTreeMap, HashMap, HashSet};

use std::path::PathBuf;

use gateway_api::backendtlspolicies::BackendTlsPolicy;
use gateway_api::gateways::Gateway;
use gateway_api::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType,
    HttpRouteRulesMatchesMethod, HttpRouteRulesMatchesPathType,
    HttpRouteRulesMatchesQueryParamsType,
};
use gateway_api::referencegrants::ReferenceGrant;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use novaedge_snapshot::{
    self as snapshot, Backend, BackendRef, ClientAuth, ConfigSnapshot, Endpoint, HashOn,
    HeaderMatch, LbPolicy, Listener, ListenerProtocol, LoadBalancing, MatchType, PathMatch,
    QueryParamMatch, RequestMirror, RouteMatch, RouteRule, TlsCertificate, UpstreamProtocol,
    check_hostname, check_regex,
};

use crate::diagnostics::Diagnostic;
use crate::filters::RuleFilters;
use crate::objects::{Object, Sourced, namespace_of};
use crate::policy::{Placement, ProxyPolicy, Target};
use crate::status::{
    Condition, GatewayStatus, ListenerStatus, ObjectStatus, RouteParentStatus, RouteStatus,
    Statuses, reasons, types,
};
use crate::tls::Secret;
use grpc::{AllowedKinds, RouteKind};
use namespaces::{AllowedNamespaces, NamespaceLabels};

/// The `controllerName` of GatewayClasses that NovaEdge serves.
pub const GATEWAY_CONTROLLER_NAME: &str = "novaedge.io/gateway-controller";

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Service annotation choosing the balancing algorithm: `round-robin` (default), `random`,
/// `least-request`, `peak-ewma`, `ring-hash`, `maglev`.
pub const LOAD_BALANCER_ANNOTATION: &str = "novaedge.io/load-balancer";
/// Service annotation saying what `ring-hash` and `maglev` hash on: `header:NAME`,
/// `cookie:NAME`, `query:NAME` or `source-ip`.
pub const HASH_ON_ANNOTATION: &str = "novaedge.io/hash-on";
/// Service annotation: the percentage of healthy endpoints below which health is ignored.
pub const PANIC_THRESHOLD_ANNOTATION: &str = "novaedge.io/panic-threshold";

pub use ingress::{INGRESS_CONTROLLER_NAME, SSL_REDIRECT_ANNOTATION};

/// Inputs to a translation that do not come from the objects.
#[derive(Debug, Clone)]
pub struct TranslateOptions {
    /// The version stamped on the snapshot.
    pub version: u64,
    /// The port every Ingress is served on (an Ingress names no port of its own).
    pub ingress_http_port: u16,
    /// The port Ingresses with `spec.tls` are also served on, over HTTPS.
    pub ingress_https_port: u16,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        Self {
            version: 0,
            ingress_http_port: 80,
            ingress_https_port: 443,
        }
    }
}

/// The result of a translation: a snapshot, everything worth telling the user, and the status of
/// the objects.
///
/// Objects with errors are left out of the snapshot, which is otherwise complete: the controller
/// may serve it (one tenant's mistake must not freeze everyone's configuration) while
/// `novaedge run` refuses it and keeps the last good one (the file's author sees the error). A
/// reference that cannot be resolved (a missing Service, a cross-namespace reference no
/// ReferenceGrant allows) is not an error but a warning and a `ResolvedRefs=False` condition:
/// as Gateway API says, the route is served and that backend's share of requests is answered
/// `500`.
#[derive(Debug, Clone)]
pub struct Translation {
    pub snapshot: ConfigSnapshot,
    pub diagnostics: Vec<Diagnostic>,
    pub status: Statuses,
    /// Which nodes serve which Gateways, for [`Translation::for_node`].
    pub nodes: crate::nodes::NodeScope,
    /// The labels of the Node objects read, by node name.
    pub node_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// The checked ProxyVIPs, for placement on nodes (see [`crate::placement`]).
    pub vips: Vec<crate::placement::ScopedVip>,
}

impl Translation {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

type Key = (String, String); // (namespace, name)

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        namespace_of(meta).to_owned(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Translates Kubernetes objects into the snapshot a data plane serves.
pub fn translate(objects: &[Sourced], options: &TranslateOptions) -> Translation {
    // GRPCRoutes are translated as the HTTPRoutes they are equivalent to; the converted routes
    // must outlive the translator, which borrows them like the input objects.
    let mut diagnostics = Vec::new();
    let grpc_routes = grpc::convert_all(objects, &mut diagnostics);
    let mut t = Translator {
        diagnostics,
        ..Translator::default()
    };
    let proxy_gateways = proxy::convert_gateways(objects);
    let proxy_routes = proxy::convert_routes(objects);
    t.index(objects);
    for c in &grpc_routes {
        t.grpc_routes.insert(c.key.clone(), (&c.route, c.file));
    }
    t.index_proxy(&proxy_gateways, &proxy_routes);
    let vips = t.scoped_vips();
    t.backend_tls_policies();
    let mut listeners = t.gateways();
    let mut table = t.ports(&mut listeners);
    let ingress_routes = t.ingresses(&mut table, options);
    let ports: BTreeMap<u16, Listener> = table
        .into_iter()
        .map(|(port, entry)| (port, entry.listener))
        .collect();
    for l in &listeners {
        if let Some(state) = t.listener_state(&l.gateway, l.index) {
            state.programmed = true;
        }
        if let Some(listener) = ports.get(&l.port) {
            t.node_scope
                .listener_gateways
                .entry(listener.name.clone())
                .or_default()
                .insert(l.gateway.clone());
        }
    }
    let snapshot = t.routes(&listeners, ports, ingress_routes, options.version);
    if let Err(errors) = snapshot.validate() {
        // The translator should never produce an invalid snapshot; if it does, say so plainly
        // rather than serve it.
        for e in errors.errors() {
            t.diagnostics.push(Diagnostic::error(
                format!("translated {}", e.object),
                &e.field,
                format!("{} (internal translation error)", e.message),
            ));
        }
    }
    let status = t.statuses();
    // A Service problem shows once, even when several routes or ports reach the Service.
    let mut seen = HashSet::new();
    let diagnostics = t
        .diagnostics
        .into_iter()
        .filter(|d| seen.insert(d.to_string()))
        .collect();
    Translation {
        snapshot,
        diagnostics,
        status,
        nodes: std::mem::take(&mut t.node_scope),
        node_labels: std::mem::take(&mut t.node_labels),
        vips,
    }
}

#[derive(Default)]
struct Translator<'a> {
    diagnostics: Vec<Diagnostic>,
    classes: HashMap<&'a str, &'a str>, // class name -> controller name
    class_generations: BTreeMap<&'a str, Option<i64>>,
    /// IngressClass name -> (controller name, whether it is the default class).
    ingress_classes: BTreeMap<&'a str, (&'a str, bool)>,
    ingresses: BTreeMap<Key, (&'a Ingress, Option<&'a PathBuf>)>,
    gateways: BTreeMap<Key, (&'a Gateway, Option<&'a PathBuf>)>,
    routes: BTreeMap<Key, (&'a HttpRoute, Option<&'a PathBuf>)>,
    /// GRPCRoutes, converted to HTTPRoutes (see [`grpc`]); their own namespace/name space.
    grpc_routes: BTreeMap<Key, (&'a HttpRoute, Option<&'a PathBuf>)>,
    /// ProxyRoutes, as the HTTPRoutes they convert to.
    proxy_routes: BTreeMap<Key, (&'a HttpRoute, Option<&'a PathBuf>)>,
    /// Which entries of `gateways` are ProxyGateways (converted to Gateways).
    proxy_gateway_keys: HashSet<Key>,
    proxy_backends: HashMap<Key, (&'a crate::crd::ProxyBackend, Option<&'a PathBuf>)>,
    /// Which nodes serve which Gateways.
    node_scope: crate::nodes::NodeScope,
    node_labels: BTreeMap<String, BTreeMap<String, String>>,
    proxy_vips: Vec<(&'a crate::crd::ProxyVip, Option<&'a PathBuf>)>,
    /// ProxyBackends whose errors have been reported.
    invalid_proxy_backends: HashSet<Key>,
    services: HashMap<Key, (&'a Service, Option<&'a PathBuf>)>,
    slices: HashMap<Key, Vec<(&'a EndpointSlice, Option<&'a PathBuf>)>>,
    policies: Vec<(&'a ProxyPolicy, Option<&'a PathBuf>)>,
    secrets: HashMap<Key, &'a Secret>,
    config_maps: HashMap<Key, &'a ConfigMap>,
    tls_policies: Vec<(&'a BackendTlsPolicy, Option<&'a PathBuf>)>,
    grants: Vec<&'a ReferenceGrant>,
    namespace_labels: NamespaceLabels<'a>,
    /// BackendTLSPolicies by target Service, checked, oldest first.
    backend_tls: HashMap<Key, Vec<tls::PolicyTls>>,
    backends: BTreeMap<String, Backend>,
    /// Status of the Gateways served, filled in as their listeners are checked and used.
    gateway_state: BTreeMap<Key, GatewayState>,
    route_status: BTreeMap<(&'static str, Key), RouteStatus>,
    /// Ingresses of NovaEdge's classes: whether each is served.
    ingress_status: BTreeMap<Key, bool>,
    /// The first unresolved reference of the route being translated: the reason and message of
    /// its `ResolvedRefs=False` condition.
    unresolved: Option<(&'static str, String)>,
}

/// Why a Gateway listener is not (fully) served, as a condition of its status says.
#[derive(Debug, Clone)]
pub(crate) struct ListenerProblem {
    type_: &'static str,
    reason: &'static str,
    message: String,
}

impl ListenerProblem {
    /// `Accepted=False`: the listener is not served.
    pub(crate) fn accepted(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_: types::ACCEPTED,
            reason,
            message: message.into(),
        }
    }

    /// `ResolvedRefs=False`: a reference of the listener does not resolve.
    pub(crate) fn refs(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_: types::RESOLVED_REFS,
            reason,
            message: message.into(),
        }
    }

    /// `Conflicted=True`: the listener cannot share its port with another.
    pub(crate) fn conflicted(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_: types::CONFLICTED,
            reason,
            message: message.into(),
        }
    }
}

#[derive(Debug, Default)]
struct GatewayState {
    /// `Gateway` or `ProxyGateway`.
    kind: &'static str,
    generation: Option<i64>,
    /// In `spec.listeners` order.
    listeners: Vec<ListenerState>,
}

#[derive(Debug)]
struct ListenerState {
    name: String,
    supported_kinds: Vec<&'static str>,
    problems: Vec<ListenerProblem>,
    attached_routes: u32,
    /// Made it into the snapshot.
    programmed: bool,
}

/// What a route attaches to on one port.
struct Attachment {
    /// The hostnames it serves there; `None`: any host.
    hosts: Option<Vec<String>>,
    /// The Gateways it is attached through.
    gateways: Vec<Key>,
}

/// Where a route attaches, see `Translator::attach`.
struct Attached {
    ports: BTreeMap<u16, Attachment>,
    /// The parent references NovaEdge answers for.
    parents: Vec<ParentOutcome>,
    /// The Gateway listeners (Gateway, index) the route attaches to.
    listeners: Vec<(Key, usize)>,
}

/// How one parent reference of a route fared.
struct ParentOutcome {
    index: usize,
    parent: String,
    /// Why the route is not attached through it: the reason and message of `Accepted=False`.
    refused: Option<(&'static str, String)>,
}

/// The status of a route: per parent, `Accepted` (false for every parent if the route itself is
/// `invalid`, with the first error) and `ResolvedRefs`.
fn route_status(
    generation: Option<i64>,
    parents: Vec<ParentOutcome>,
    invalid: Option<String>,
    unresolved: Option<(&'static str, String)>,
) -> RouteStatus {
    let resolved = match unresolved {
        Some((reason, message)) => Condition::new(types::RESOLVED_REFS, false, reason, message),
        None => Condition::new(types::RESOLVED_REFS, true, reasons::RESOLVED_REFS, ""),
    };
    let parents = parents
        .into_iter()
        .map(|p| {
            let accepted = match (&invalid, p.refused) {
                (Some(why), _) => Condition::new(
                    types::ACCEPTED,
                    false,
                    reasons::UNSUPPORTED_VALUE,
                    why.clone(),
                ),
                (None, Some((reason, message))) => {
                    Condition::new(types::ACCEPTED, false, reason, message)
                }
                (None, None) => Condition::new(types::ACCEPTED, true, reasons::ACCEPTED, ""),
            };
            RouteParentStatus {
                index: p.index,
                parent: p.parent,
                conditions: vec![accepted, resolved.clone()],
            }
        })
        .collect();
    RouteStatus {
        generation,
        parents,
    }
}

/// Where a backend reference is written, for reporting that it does not resolve.
struct RefSite<'s> {
    file: Option<&'s PathBuf>,
    object: &'s str,
    field: &'s str,
    /// What becomes of the requests, e.g. "its share of requests is answered 500".
    consequence: &'s str,
}

/// What a backend reference resolved to.
enum Resolved<'a> {
    /// A backend already in the snapshot (a ProxyBackend).
    Backend(String),
    /// A Service port, whose backend depends on the route kind (gRPC speaks h2c).
    ServicePort(Key, &'a ServicePort),
}

/// Why a backend reference names no Service port.
enum RefError {
    /// Well formed, but it does not resolve (reported as a warning): answered 500.
    Unresolved,
    /// Malformed (reported as an error): the route is not accepted.
    Invalid,
}

/// A reference to a Service port, as `backendRefs` and mirror filters write it.
struct ServiceRef<'r> {
    group: Option<&'r str>,
    kind: Option<&'r str>,
    name: &'r str,
    namespace: Option<&'r str>,
    port: Option<i32>,
}

/// A Gateway listener NovaEdge serves.
struct GatewayListener<'a> {
    gateway: Key,
    file: Option<&'a PathBuf>,
    /// Its index in `spec.listeners`, for field paths.
    index: usize,
    name: &'a str,
    port: u16,
    hostname: Option<&'a str>,
    namespaces: AllowedNamespaces,
    kinds: AllowedKinds,
    protocol: ListenerProtocol,
    /// HTTPS: its certificates, `server_names` already set from the hostname.
    certificates: Vec<TlsCertificate>,
    /// HTTPS: the Gateway's client certificate validation for this port.
    client_auth: Option<ClientAuth>,
    /// HTTP: the HTTPS port every request is redirected to.
    redirect_to: Option<u16>,
}

impl<'a> Translator<'a> {
    fn error(&mut self, file: Option<&PathBuf>, object: String, field: String, message: String) {
        self.diagnostics
            .push(Diagnostic::error(object, field, message).in_file(file.cloned()));
    }

    fn warning(&mut self, file: Option<&PathBuf>, object: String, field: String, message: String) {
        self.diagnostics
            .push(Diagnostic::warning(object, field, message).in_file(file.cloned()));
    }

    fn index(&mut self, objects: &'a [Sourced]) {
        // Kind, namespace and name, borrowed from the objects.
        let mut seen: HashSet<(&str, &str, &str)> = HashSet::with_capacity(objects.len());
        for sourced in objects {
            let o = &sourced.object;
            let file = sourced.file.as_ref();
            let meta = o.metadata();
            let name = meta.name.as_deref().unwrap_or_default();
            if !seen.insert((o.kind(), namespace_of(meta), name)) {
                self.error(
                    file,
                    o.describe(),
                    "metadata.name".into(),
                    "defined more than once".into(),
                );
                continue;
            }
            let key = key_of(meta);
            match o {
                Object::GatewayClass(c) => {
                    let name = c.metadata.name.as_deref().unwrap_or_default();
                    self.classes.insert(name, c.spec.controller_name.as_str());
                    self.class_generations.insert(name, c.metadata.generation);
                }
                Object::Gateway(g) => {
                    let annotation = g
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(crate::nodes::NODE_SELECTOR_ANNOTATION));
                    if let Some(text) = annotation {
                        match crate::nodes::parse_annotation(text) {
                            Ok(selector) => {
                                self.node_scope.selectors.insert(key.clone(), selector);
                            }
                            Err(why) => self.error(
                                file,
                                o.describe(),
                                format!(
                                    "metadata.annotations[{}]",
                                    crate::nodes::NODE_SELECTOR_ANNOTATION
                                ),
                                why,
                            ),
                        }
                    }
                    self.gateways.insert(key, (g, file));
                }
                Object::Node(n) => {
                    self.node_labels
                        .insert(key.1.clone(), n.metadata.labels.clone().unwrap_or_default());
                }
                Object::HttpRoute(r) => {
                    self.routes.insert(key, (r, file));
                }
                // Converted in `translate`, before the index.
                Object::GrpcRoute(_) => {}
                Object::Service(s) => {
                    self.services.insert(key, (s, file));
                }
                Object::ProxyPolicy(p) => self.policies.push((p.as_ref(), file)),
                Object::Secret(s) => {
                    self.secrets.insert(key, s.as_ref());
                }
                Object::ConfigMap(c) => {
                    self.config_maps.insert(key, c);
                }
                Object::BackendTlsPolicy(p) => self.tls_policies.push((p, file)),
                Object::ReferenceGrant(g) => self.grants.push(g),
                Object::Namespace(n) => {
                    if let (Some(name), Some(labels)) = (&n.metadata.name, &n.metadata.labels) {
                        self.namespace_labels.insert(name, labels);
                    }
                }
                Object::Ingress(i) => {
                    self.ingresses.insert(key, (i, file));
                }
                Object::IngressClass(c) => {
                    let name = c.metadata.name.as_deref().unwrap_or_default();
                    let controller = c
                        .spec
                        .as_ref()
                        .and_then(|s| s.controller.as_deref())
                        .unwrap_or_default();
                    let default = c
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(ingress::DEFAULT_CLASS_ANNOTATION))
                        .is_some_and(|v| v == "true");
                    self.ingress_classes.insert(name, (controller, default));
                }
                // Converted in `translate`, then indexed by `index_proxy`.
                Object::ProxyGateway(g) => {
                    if let Some(selector) = g
                        .spec
                        .node_selector
                        .as_ref()
                        .filter(|s| **s != crate::crd::NodeSelector::default())
                    {
                        self.node_scope.selectors.insert(key, selector.clone());
                    }
                }
                Object::ProxyRoute(_) => {}
                Object::ProxyBackend(b) => {
                    self.proxy_backends.insert(key, (b.as_ref(), file));
                }
                Object::ProxyVip(v) => self.proxy_vips.push((v.as_ref(), file)),
                Object::EndpointSlice(s) => {
                    match s
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    {
                        Some(service) => self
                            .slices
                            .entry((key.0, service.clone()))
                            .or_default()
                            .push((s, file)),
                        None => self.warning(
                            file,
                            o.describe(),
                            format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
                            "missing: the slice belongs to no Service and is ignored".into(),
                        ),
                    }
                }
            }
        }
    }

    /// The listeners of every Gateway this controller serves.
    fn gateways(&mut self) -> Vec<GatewayListener<'a>> {
        let mut out = Vec::new();
        let gateways: Vec<_> = self.gateways.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for (key, (gateway, file)) in gateways {
            let object = self.gateway_object(&key);
            let class = gateway.spec.gateway_class_name.as_str();
            // A class that is present and names another controller is not ours to serve. A class
            // that is absent is served: standalone configurations often leave it out.
            if let Some(controller) = self.classes.get(class)
                && *controller != GATEWAY_CONTROLLER_NAME
            {
                self.warning(
                    file,
                    object,
                    "spec.gatewayClassName".into(),
                    format!("GatewayClass {class} belongs to controller {controller}; not served"),
                );
                continue;
            }
            self.gateway_state.insert(
                key.clone(),
                GatewayState {
                    kind: if self.proxy_gateway_keys.contains(&key) {
                        "ProxyGateway"
                    } else {
                        "Gateway"
                    },
                    generation: gateway.metadata.generation,
                    listeners: gateway
                        .spec
                        .listeners
                        .iter()
                        .map(|l| ListenerState {
                            name: l.name.clone(),
                            supported_kinds: Vec::new(),
                            problems: Vec::new(),
                            attached_routes: 0,
                            programmed: false,
                        })
                        .collect(),
                },
            );
            let frontend = self.frontend_validation(gateway, &key, &object, file);
            let mut mine = Vec::new();
            let mut names = HashSet::new();
            for (i, l) in gateway.spec.listeners.iter().enumerate() {
                let field = format!("spec.listeners[{i}]");
                if !names.insert(l.name.as_str()) {
                    self.error(
                        file,
                        object.clone(),
                        format!("{field}.name"),
                        format!("duplicate listener name {:?}", l.name),
                    );
                    self.listener_problem(
                        &key,
                        i,
                        ListenerProblem::accepted(reasons::UNSUPPORTED_VALUE, "duplicate name"),
                    );
                    continue;
                }
                let protocol = match l.protocol.as_str() {
                    "HTTP" => ListenerProtocol::Http,
                    "HTTPS" => ListenerProtocol::Https,
                    other => {
                        self.warning(
                            file,
                            object.clone(),
                            format!("{field}.protocol"),
                            format!("{other} listeners are not supported yet; listener skipped"),
                        );
                        self.listener_problem(
                            &key,
                            i,
                            ListenerProblem::accepted(
                                reasons::UNSUPPORTED_PROTOCOL,
                                format!("{other} is not supported"),
                            ),
                        );
                        continue;
                    }
                };
                let Some(port) = u16::try_from(l.port).ok().filter(|p| *p != 0) else {
                    self.error(
                        file,
                        object.clone(),
                        format!("{field}.port"),
                        format!("{} is not a TCP port (1-65535)", l.port),
                    );
                    self.listener_problem(
                        &key,
                        i,
                        ListenerProblem::accepted(
                            reasons::PORT_UNAVAILABLE,
                            format!("{} is not a TCP port", l.port),
                        ),
                    );
                    continue;
                };
                if let Some(h) = &l.hostname
                    && let Err(why) = check_hostname(h)
                {
                    self.error(
                        file,
                        object.clone(),
                        format!("{field}.hostname"),
                        format!("{h:?}: {why}"),
                    );
                    self.listener_problem(
                        &key,
                        i,
                        ListenerProblem::accepted(
                            reasons::UNSUPPORTED_VALUE,
                            format!("hostname {h:?}: {why}"),
                        ),
                    );
                    continue;
                }
                let allowed = l.allowed_routes.as_ref();
                let namespaces =
                    match AllowedNamespaces::parse(allowed.and_then(|a| a.namespaces.as_ref())) {
                        Ok(namespaces) => namespaces,
                        Err(e) => {
                            let part = format!("allowedRoutes.namespaces.{}", e.field);
                            self.error(
                                file,
                                object.clone(),
                                format!("{field}.{part}"),
                                e.message.clone(),
                            );
                            self.listener_problem(
                                &key,
                                i,
                                ListenerProblem::accepted(
                                    reasons::UNSUPPORTED_VALUE,
                                    format!("{part}: {}", e.message),
                                ),
                            );
                            continue;
                        }
                    };
                self.supported_kinds(
                    allowed.and_then(|a| a.kinds.as_deref()),
                    &key,
                    i,
                    &field,
                    &object,
                    file,
                );
                let kinds = AllowedKinds::of(allowed.and_then(|a| a.kinds.as_deref()));
                let (certificates, client_auth) = match protocol {
                    ListenerProtocol::Http => (Vec::new(), None),
                    ListenerProtocol::Https => {
                        let certificates =
                            match self.listener_certificates(l, &key.0, &field, &object, file) {
                                Ok(certificates) => certificates,
                                Err(problem) => {
                                    self.listener_problem(&key, i, problem);
                                    continue;
                                }
                            };
                        (certificates, frontend.for_port(port))
                    }
                };
                mine.push(GatewayListener {
                    gateway: key.clone(),
                    file,
                    index: i,
                    name: l.name.as_str(),
                    port,
                    hostname: l.hostname.as_deref(),
                    namespaces,
                    kinds,
                    protocol,
                    certificates,
                    client_auth,
                    redirect_to: None,
                });
            }
            self.https_redirect(gateway, &mut mine, &object, file);
            out.extend(mine);
        }
        out
    }

    fn routes(
        &mut self,
        listeners: &[GatewayListener<'a>],
        snapshot_listeners: BTreeMap<u16, Listener>,
        ingress_routes: Vec<snapshot::Route>,
        version: u64,
    ) -> ConfigSnapshot {
        let ports: BTreeMap<u16, String> = snapshot_listeners
            .iter()
            .map(|(port, l)| (*port, l.name.clone()))
            .collect();
        let mut routes = Vec::new();
        let mut placements = Vec::new();
        let http = self.routes.iter().map(|(k, v)| (RouteKind::Http, k, v));
        let grpc = self
            .grpc_routes
            .iter()
            .map(|(k, v)| (RouteKind::Grpc, k, v));
        let proxy = self
            .proxy_routes
            .iter()
            .map(|(k, v)| (RouteKind::Proxy, k, v));
        let all: Vec<_> = http
            .chain(grpc)
            .chain(proxy)
            .map(|(t, k, v)| (t, k.clone(), *v))
            .collect();
        for (kind, (namespace, name), (route, file)) in all {
            let object = format!("{} {namespace}/{name}", kind.name());
            let first_diagnostic = self.diagnostics.len();
            self.unresolved = None;
            let hostnames = route.spec.hostnames.clone().unwrap_or_default();
            let mut valid = true;
            for (i, h) in hostnames.iter().enumerate() {
                if let Err(why) = check_hostname(h) {
                    self.error(
                        file,
                        object.clone(),
                        format!("spec.hostnames[{i}]"),
                        format!("{h:?}: {why}"),
                    );
                    valid = false;
                }
            }
            let rules = self.rules(route, kind, &namespace, &object, file);
            let attached = self.attach(
                route, kind, &namespace, &hostnames, listeners, &object, file,
            );
            let invalid = (rules.is_none() || !valid)
                .then(|| self.first_error_since(first_diagnostic, &object));
            self.route_status.insert(
                (kind.name(), (namespace.clone(), name.clone())),
                route_status(
                    route.metadata.generation,
                    attached.parents,
                    invalid,
                    self.unresolved.take(),
                ),
            );
            let (Some(rules), true) = (rules, valid) else {
                continue;
            };
            for (gateway, index) in &attached.listeners {
                if let Some(state) = self.listener_state(gateway, *index) {
                    state.attached_routes += 1;
                }
            }
            let attachments = attached.ports;
            let created = route
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second());
            for (port, attachment) in attachments {
                routes.push(snapshot::Route {
                    name: kind.route_name(&namespace, &name),
                    listener: ports[&port].clone(),
                    hostnames: attachment.hosts.unwrap_or_default(),
                    rules: rules.clone(),
                    creation_timestamp: created,
                    dialect: Default::default(),
                });
                placements.push(Placement {
                    route: kind.target((namespace.clone(), name.clone())),
                    gateways: attachment.gateways,
                });
            }
        }
        let (gateways, http_routes, grpc_routes, proxy_routes) = (
            &self.gateways,
            &self.routes,
            &self.grpc_routes,
            &self.proxy_routes,
        );
        let exists = |target: &Target| match target {
            Target::Gateway(key) => gateways.contains_key(key),
            Target::Route(key) => http_routes.contains_key(key),
            Target::GrpcRoute(key) => grpc_routes.contains_key(key),
            Target::ProxyRoute(key) => proxy_routes.contains_key(key),
        };
        crate::policy::apply(
            &self.policies,
            exists,
            &mut routes,
            &placements,
            &mut self.diagnostics,
        );
        // After the policies: they attach through Gateways and HTTPRoutes, never to Ingresses.
        for (route, placement) in routes.iter().zip(&placements) {
            self.node_scope.route_gateways.insert(
                (route.listener.clone(), route.name.clone()),
                placement.gateways.clone(),
            );
        }
        self.node_scope
            .ingress_listeners
            .extend(ingress_routes.iter().map(|r| r.listener.clone()));
        routes.extend(ingress_routes);
        ConfigSnapshot {
            version,
            listeners: snapshot_listeners.into_values().collect(),
            routes,
            backends: std::mem::take(&mut self.backends).into_values().collect(),
            vips: Vec::new(),
        }
    }

    /// Where a route attaches: the ports, with the hostnames it serves and the Gateways it is
    /// attached through on each, and how each of its parent references fared.
    #[allow(clippy::too_many_arguments, reason = "the route's parts, each needed")]
    fn attach(
        &mut self,
        route: &HttpRoute,
        route_kind: RouteKind,
        namespace: &str,
        hostnames: &[String],
        listeners: &[GatewayListener<'a>],
        object: &str,
        file: Option<&PathBuf>,
    ) -> Attached {
        let mut out: BTreeMap<u16, Attachment> = BTreeMap::new();
        let mut parents = Vec::new();
        let mut attached_to = Vec::new();
        for (p, parent) in route.spec.parent_refs.iter().flatten().enumerate() {
            let field = format!("spec.parentRefs[{p}]");
            let group = parent.group.as_deref().unwrap_or(GATEWAY_GROUP);
            let kind = parent.kind.as_deref().unwrap_or("Gateway");
            if group != GATEWAY_GROUP || kind != "Gateway" {
                self.warning(
                    file,
                    object.into(),
                    field,
                    format!("parent kind {kind} ({group}) is not served by NovaEdge; ignored"),
                );
                continue;
            }
            let gateway: Key = (
                parent.namespace.clone().unwrap_or_else(|| namespace.into()),
                parent.name.clone(),
            );
            // ProxyRoutes attach to ProxyGateways, Gateway API routes to Gateways.
            let wanted = if route_kind == RouteKind::Proxy {
                "ProxyGateway"
            } else {
                "Gateway"
            };
            let mut label = format!("{wanted} {}/{}", gateway.0, gateway.1);
            if let Some(section) = &parent.section_name {
                label.push_str(&format!(" section {section}"));
            }
            if let Some(port) = parent.port {
                label.push_str(&format!(" port {port}"));
            }
            if !self.gateways.contains_key(&gateway)
                || self.proxy_gateway_keys.contains(&gateway) != (route_kind == RouteKind::Proxy)
            {
                let message = format!(
                    "no {wanted} {}/{}: the route attaches nowhere through this parent",
                    gateway.0, gateway.1
                );
                self.warning(
                    file,
                    object.into(),
                    format!("{field}.name"),
                    message.clone(),
                );
                parents.push(ParentOutcome {
                    index: p,
                    parent: label,
                    refused: Some((reasons::NO_MATCHING_PARENT, message)),
                });
                continue;
            }
            if !self.gateway_state.contains_key(&gateway) {
                continue; // another controller's Gateway: its status is not ours to write
            }
            let mut why_not = (
                reasons::NO_MATCHING_PARENT,
                "no listener of the Gateway matches",
            );
            let mut attached = false;
            for l in listeners.iter().filter(|l| l.gateway == gateway) {
                if parent.section_name.as_deref().is_some_and(|s| s != l.name)
                    || parent.port.is_some_and(|port| port != i32::from(l.port))
                {
                    continue;
                }
                if !l.kinds.allows(route_kind)
                    || !l
                        .namespaces
                        .allows(&gateway.0, namespace, &self.namespace_labels)
                {
                    why_not = (
                        reasons::NOT_ALLOWED_BY_LISTENERS,
                        "the listener does not allow this route (allowedRoutes)",
                    );
                    continue;
                }
                let Some(hosts) = effective_hostnames(l.hostname, hostnames) else {
                    why_not = (
                        reasons::NO_MATCHING_LISTENER_HOSTNAME,
                        "no route hostname intersects the listener hostname",
                    );
                    continue;
                };
                attached = true;
                attached_to.push((gateway.clone(), l.index));
                let entry = out.entry(l.port).or_insert_with(|| Attachment {
                    hosts: Some(Vec::new()),
                    gateways: Vec::new(),
                });
                if !entry.gateways.contains(&gateway) {
                    entry.gateways.push(gateway.clone());
                }
                let entry = &mut entry.hosts;
                match (entry.as_mut(), hosts) {
                    (Some(all), Some(hosts)) => {
                        for h in hosts {
                            if !all.contains(&h) {
                                all.push(h);
                            }
                        }
                    }
                    // Any host through one listener means any host on the port.
                    (_, None) => *entry = None,
                    (None, Some(_)) => {}
                }
            }
            parents.push(ParentOutcome {
                index: p,
                parent: label,
                refused: (!attached).then(|| (why_not.0, why_not.1.to_owned())),
            });
            if !attached {
                self.warning(
                    file,
                    object.into(),
                    field,
                    format!(
                        "not attached to Gateway {}/{}: {}",
                        gateway.0, gateway.1, why_not.1
                    ),
                );
            }
        }
        Attached {
            ports: out,
            parents,
            listeners: attached_to,
        }
    }

    /// `field: message` of the first error reported about `object` since diagnostic `since`.
    fn first_error_since(&self, since: usize, object: &str) -> String {
        self.diagnostics[since..]
            .iter()
            .find(|d| d.is_error() && d.object == object)
            .map_or_else(
                || "the route is not valid".to_owned(),
                |d| format!("{}: {}", d.field, d.message),
            )
    }

    fn rules(
        &mut self,
        route: &HttpRoute,
        kind: RouteKind,
        namespace: &str,
        object: &str,
        file: Option<&PathBuf>,
    ) -> Option<Vec<RouteRule>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (k, rule) in route.spec.rules.iter().flatten().enumerate() {
            let field = format!("spec.rules[{k}]");
            let RuleFilters {
                mut filters,
                mirrors,
                ok: filters_ok,
            } = crate::filters::rule_filters(rule, &field, object, file, &mut self.diagnostics);
            ok &= filters_ok;
            for m in mirrors {
                let r = m.backend_ref;
                let target = ServiceRef {
                    group: r.group.as_deref(),
                    kind: r.kind.as_deref(),
                    name: &r.name,
                    namespace: r.namespace.as_deref(),
                    port: r.port,
                };
                let consequence = "requests are not mirrored";
                let resolved =
                    self.resolve_ref(&target, namespace, &m.field, object, file, consequence);
                match resolved {
                    // A mirror of nothing (already warned about) adds no backend.
                    Ok(_) if m.fraction_ppm == 0 => {}
                    Ok(resolved) => filters.mirrors.push(RequestMirror {
                        backend: self.backend_of(resolved, kind),
                        fraction_ppm: m.fraction_ppm,
                    }),
                    // Nothing to copy requests to; the route is served without the mirror.
                    Err(RefError::Unresolved) => {}
                    Err(RefError::Invalid) => ok = false,
                }
            }
            let mut matches = Vec::new();
            for (j, m) in rule.matches.iter().flatten().enumerate() {
                match self.route_match(m, &format!("{field}.matches[{j}]"), object, file) {
                    Some(m) => matches.push(m),
                    None => ok = false,
                }
            }
            match self.backend_refs(rule, kind, namespace, &field, object, file) {
                Some((backends, invalid_backend_weight)) => out.push(RouteRule {
                    matches,
                    backends,
                    invalid_backend_weight,
                    filters: filters.into(),
                }),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn route_match(
        &mut self,
        m: &HttpRouteRulesMatches,
        field: &str,
        object: &str,
        file: Option<&PathBuf>,
    ) -> Option<RouteMatch> {
        let mut ok = true;
        let mut out = RouteMatch::default();
        if let Some(path) = &m.path {
            let value = path.value.clone().unwrap_or_else(|| "/".into());
            let field = format!("{field}.path.value");
            out.path = match path.r#type {
                Some(HttpRouteRulesMatchesPathType::Exact) => PathMatch::Exact(value),
                None | Some(HttpRouteRulesMatchesPathType::PathPrefix) => PathMatch::Prefix(value),
                Some(HttpRouteRulesMatchesPathType::RegularExpression) => {
                    if let Err(why) = check_regex(&value) {
                        self.error(file, object.into(), field.clone(), why);
                        ok = false;
                    }
                    PathMatch::RegularExpression(value)
                }
            };
            if !matches!(out.path, PathMatch::RegularExpression(_))
                && !out.path.value().starts_with('/')
            {
                self.error(
                    file,
                    object.into(),
                    field,
                    format!("{:?} must start with '/'", out.path.value()),
                );
                ok = false;
            }
        }
        for (h, header) in m.headers.iter().flatten().enumerate() {
            let field = format!("{field}.headers[{h}]");
            let kind = match header.r#type {
                Some(HttpRouteRulesMatchesHeadersType::RegularExpression) => {
                    MatchType::RegularExpression
                }
                Some(HttpRouteRulesMatchesHeadersType::Exact) | None => MatchType::Exact,
            };
            ok &= self.check_value(kind, &header.value, &field, object, file);
            match http::HeaderName::from_bytes(header.name.as_bytes()) {
                Ok(name) => out.headers.push(HeaderMatch {
                    name,
                    value: header.value.clone(),
                    kind,
                }),
                Err(_) => {
                    self.error(
                        file,
                        object.into(),
                        format!("{field}.name"),
                        format!("{:?} is not a valid header name", header.name),
                    );
                    ok = false;
                }
            }
        }
        for (q, param) in m.query_params.iter().flatten().enumerate() {
            let field = format!("{field}.queryParams[{q}]");
            let kind = match param.r#type {
                Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression) => {
                    MatchType::RegularExpression
                }
                Some(HttpRouteRulesMatchesQueryParamsType::Exact) | None => MatchType::Exact,
            };
            ok &= self.check_value(kind, &param.value, &field, object, file);
            if param.name.is_empty() {
                self.error(
                    file,
                    object.into(),
                    format!("{field}.name"),
                    "required".into(),
                );
                ok = false;
            }
            out.query_params.push(QueryParamMatch {
                name: param.name.clone(),
                value: param.value.clone(),
                kind,
            });
        }
        out.method = m.method.as_ref().map(|method| match method {
            HttpRouteRulesMatchesMethod::Get => http::Method::GET,
            HttpRouteRulesMatchesMethod::Head => http::Method::HEAD,
            HttpRouteRulesMatchesMethod::Post => http::Method::POST,
            HttpRouteRulesMatchesMethod::Put => http::Method::PUT,
            HttpRouteRulesMatchesMethod::Delete => http::Method::DELETE,
            HttpRouteRulesMatchesMethod::Connect => http::Method::CONNECT,
            HttpRouteRulesMatchesMethod::Options => http::Method::OPTIONS,
            HttpRouteRulesMatchesMethod::Trace => http::Method::TRACE,
            HttpRouteRulesMatchesMethod::Patch => http::Method::PATCH,
        });
        ok.then_some(out)
    }

    /// A regular expression value must compile within the size limit.
    fn check_value(
        &mut self,
        kind: MatchType,
        value: &str,
        field: &str,
        object: &str,
        file: Option<&PathBuf>,
    ) -> bool {
        if kind != MatchType::RegularExpression {
            return true;
        }
        match check_regex(value) {
            Ok(()) => true,
            Err(why) => {
                self.error(file, object.into(), format!("{field}.value"), why);
                false
            }
        }
    }

    /// The rule's backends, and the summed weight of the references that do not resolve (their
    /// share of requests is answered 500); `None` if a reference is invalid as written.
    fn backend_refs(
        &mut self,
        rule: &HttpRouteRules,
        kind: RouteKind,
        namespace: &str,
        field: &str,
        object: &str,
        file: Option<&PathBuf>,
    ) -> Option<(Vec<BackendRef>, u32)> {
        let mut out = Vec::new();
        let mut invalid_weight = 0u32;
        let mut ok = true;
        for (j, b) in rule.backend_refs.iter().flatten().enumerate() {
            let field = format!("{field}.backendRefs[{j}]");
            let weight = b.weight.unwrap_or(1);
            let Ok(weight) = u32::try_from(weight) else {
                self.error(
                    file,
                    object.into(),
                    format!("{field}.weight"),
                    format!("{weight} is negative"),
                );
                ok = false;
                continue;
            };
            let target = ServiceRef {
                group: b.group.as_deref(),
                kind: b.kind.as_deref(),
                name: &b.name,
                namespace: b.namespace.as_deref(),
                port: b.port,
            };
            let consequence = "its share of requests is answered 500";
            match self.resolve_ref(&target, namespace, &field, object, file, consequence) {
                Ok(resolved) => out.push(BackendRef {
                    backend: self.backend_of(resolved, kind),
                    weight,
                }),
                Err(RefError::Unresolved) => invalid_weight = invalid_weight.saturating_add(weight),
                Err(RefError::Invalid) => ok = false,
            }
        }
        ok.then_some((out, invalid_weight))
    }

    /// Reports a reference that is well formed but does not resolve: a warning under
    /// `field.sub`, and the route's `ResolvedRefs=False` condition with `reason`.
    fn unresolved_ref(
        &mut self,
        site: &RefSite<'_>,
        sub: &str,
        reason: &'static str,
        message: String,
    ) -> RefError {
        let field = format!("{}.{sub}", site.field);
        self.warning(
            site.file,
            site.object.into(),
            field.clone(),
            format!("{message}; {}", site.consequence),
        );
        self.unresolved(reason, format!("{field}: {message}"));
        RefError::Unresolved
    }

    /// What a backend reference names: a ProxyBackend (built on first use), or a Service port;
    /// otherwise why not (reported).
    fn resolve_ref(
        &mut self,
        r: &ServiceRef<'_>,
        namespace: &str,
        field: &str,
        object: &str,
        file: Option<&PathBuf>,
        consequence: &str,
    ) -> Result<Resolved<'a>, RefError> {
        if r.group == Some(crate::crd::GROUP) && r.kind == Some("ProxyBackend") {
            return self
                .proxy_backend(r, namespace, field, object, file, consequence)
                .map(Resolved::Backend);
        }
        let (key, port) = self.service_port(r, namespace, field, object, file, consequence)?;
        Ok(Resolved::ServicePort(key, port))
    }

    /// The snapshot backend for a resolved reference, built on first use.
    fn backend_of(&mut self, resolved: Resolved<'a>, kind: RouteKind) -> String {
        match resolved {
            Resolved::Backend(name) => name,
            Resolved::ServicePort(key, port) => self.backend(&key, port, kind),
        }
    }

    /// The Service port a reference names (in the route's `namespace` unless it says otherwise
    /// and a ReferenceGrant allows it); otherwise why not, reported under `field`: a reference
    /// that is well formed but does not resolve is a warning (and the route's `ResolvedRefs`
    /// condition, ending with the `consequence`), one that is malformed an error.
    fn service_port(
        &mut self,
        r: &ServiceRef<'_>,
        namespace: &str,
        field: &str,
        object: &str,
        file: Option<&PathBuf>,
        consequence: &str,
    ) -> Result<(Key, &'a ServicePort), RefError> {
        let site = RefSite {
            file,
            object,
            field,
            consequence,
        };
        let unresolved = |t: &mut Self, sub: &str, reason: &'static str, message: String| {
            Err(t.unresolved_ref(&site, sub, reason, message))
        };
        if r.group.is_some_and(|g| !g.is_empty()) || r.kind.is_some_and(|k| k != "Service") {
            let kind = r.kind.unwrap_or("Service");
            let group = r.group.unwrap_or("");
            return unresolved(
                self,
                "kind",
                reasons::INVALID_KIND,
                format!("{kind} ({group}) is not a supported backend kind; use a core Service"),
            );
        }
        let Some(port) = r.port else {
            self.error(
                file,
                object.into(),
                format!("{field}.port"),
                "required when referring to a Service".into(),
            );
            return Err(RefError::Invalid);
        };
        let to_namespace = r.namespace.unwrap_or(namespace);
        if to_namespace != namespace
            && !self.granted("HTTPRoute", namespace, "Service", to_namespace, r.name)
        {
            return unresolved(
                self,
                "namespace",
                reasons::REF_NOT_PERMITTED,
                format!(
                    "Service {to_namespace}/{} is in another namespace and no ReferenceGrant \
                     there allows HTTPRoutes of namespace {namespace} to refer to it",
                    r.name
                ),
            );
        }
        let key: Key = (to_namespace.into(), r.name.to_owned());
        let Some((service, _)) = self.services.get(&key).copied() else {
            return unresolved(
                self,
                "name",
                reasons::BACKEND_NOT_FOUND,
                format!("Service {to_namespace}/{} not found", r.name),
            );
        };
        let service_port = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .and_then(|ports| ports.iter().find(|p| p.port == port));
        let Some(service_port) = service_port else {
            return unresolved(
                self,
                "port",
                reasons::BACKEND_NOT_FOUND,
                format!("Service {to_namespace}/{} has no port {port}", r.name),
            );
        };
        Ok((key, service_port))
    }

    /// The backend for one Service port, built on first use; returns its name. The backends of
    /// a GRPCRoute speak HTTP/2 whatever the port says: where the port does not say h2c, that
    /// is a backend of its own (see [`grpc::H2C_BACKEND_SUFFIX`]).
    fn backend(&mut self, service: &Key, port: &ServicePort, kind: RouteKind) -> String {
        let app_protocol = port.app_protocol.as_deref();
        // `namespace/service:port`, sized once: a backend is looked up by it for every
        // reference of every rule.
        let mut name = String::with_capacity(service.0.len() + service.1.len() + 16);
        name.push_str(&service.0);
        name.push('/');
        name.push_str(&service.1);
        let _ = std::fmt::Write::write_fmt(&mut name, format_args!(":{}", port.port));
        if kind == RouteKind::Grpc && !grpc::speaks_h2c(app_protocol) {
            name.push_str(grpc::H2C_BACKEND_SUFFIX);
        }
        if self.backends.contains_key(&name) {
            return name;
        }
        let object = format!("Service {}/{}", service.0, service.1);
        let file = self.services.get(service).and_then(|(_, file)| *file);
        let field = format!("spec.ports[port={}].appProtocol", port.port);
        let protocol = match crate::endpoints::upstream_protocol(app_protocol) {
            Some(UpstreamProtocol::H2c) => UpstreamProtocol::H2c,
            _ if kind == RouteKind::Grpc => {
                if let Some(p) = app_protocol {
                    self.warning(file, object.clone(), field, grpc::not_h2c_message(p));
                }
                UpstreamProtocol::H2c
            }
            Some(protocol) => protocol,
            None => {
                let other = app_protocol.unwrap_or_default();
                self.warning(
                    file,
                    object,
                    field,
                    format!("{other:?} is not known; speaking HTTP/1.1"),
                );
                UpstreamProtocol::Http1
            }
        };
        let endpoints = self.endpoints(service, port.name.as_deref().unwrap_or(""));
        let load_balancing = self.load_balancing(service);
        let annotations = self
            .services
            .get(service)
            .and_then(|&(s, _)| s.metadata.annotations.as_ref());
        let (health, errors) = crate::health::from_annotations(annotations);
        for e in errors {
            let object = format!("Service {}/{}", service.0, service.1);
            self.error(file, object, e.field, e.message);
        }
        let tls = self.upstream_tls(service, port, file);
        self.backends.insert(
            name.clone(),
            Backend {
                name: name.clone(),
                protocol,
                endpoints,
                load_balancing,
                health,
                tls,
            },
        );
        name
    }

    /// The balancing a Service asks for through its `novaedge.io/*` annotations. A bad value is
    /// an error: falling back to round robin would silently break session affinity.
    fn load_balancing(&mut self, service: &Key) -> LoadBalancing {
        let mut lb = LoadBalancing::default();
        let Some((annotations, file)) = self
            .services
            .get(service)
            .and_then(|(s, file)| Some((s.metadata.annotations.as_ref()?, *file)))
        else {
            return lb;
        };
        let object = format!("Service {}/{}", service.0, service.1);
        let field = |name: &str| format!("metadata.annotations[{name}]");
        if let Some(policy) = annotations.get(LOAD_BALANCER_ANNOTATION) {
            lb.policy = match policy.as_str() {
                "round-robin" => LbPolicy::RoundRobin,
                "random" => LbPolicy::Random,
                "least-request" => LbPolicy::LeastRequest { choices: 2 },
                "peak-ewma" => LbPolicy::PeakEwma {
                    decay: std::time::Duration::from_secs(10),
                    default_rtt: std::time::Duration::from_millis(30),
                },
                "ring-hash" => LbPolicy::RingHash {
                    points_per_weight: 160,
                    max_ring_size: 1 << 20,
                },
                "maglev" => LbPolicy::Maglev { table_size: 65_537 },
                other => {
                    self.error(
                        file,
                        object.clone(),
                        field(LOAD_BALANCER_ANNOTATION),
                        format!(
                            "unknown load balancer {other:?}; use round-robin, random, \
                             least-request, peak-ewma, ring-hash or maglev"
                        ),
                    );
                    LbPolicy::RoundRobin
                }
            };
        }
        if let Some(hash_on) = annotations.get(HASH_ON_ANNOTATION) {
            let parsed = match hash_on.split_once(':') {
                _ if hash_on == "source-ip" => Some(HashOn::SourceIp),
                Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes())
                    .ok()
                    .map(HashOn::Header),
                Some(("cookie", name)) if !name.is_empty() => Some(HashOn::Cookie(name.into())),
                Some(("query", name)) if !name.is_empty() => Some(HashOn::QueryParam(name.into())),
                _ => None,
            };
            match parsed {
                Some(h) if lb.policy.uses_hash() => lb.hash_on = Some(h),
                Some(_) => self.error(
                    file,
                    object.clone(),
                    field(HASH_ON_ANNOTATION),
                    format!(
                        "only ring-hash and maglev hash requests; set {LOAD_BALANCER_ANNOTATION}"
                    ),
                ),
                None => {
                    self.error(
                        file,
                        object.clone(),
                        field(HASH_ON_ANNOTATION),
                        format!(
                            "{hash_on:?}: use header:NAME, cookie:NAME, query:NAME or source-ip"
                        ),
                    );
                    // As when it is missing (below): a consistent snapshot, never served.
                    if lb.policy.uses_hash() {
                        lb.hash_on = Some(HashOn::SourceIp);
                    }
                }
            }
        } else if lb.policy.uses_hash() {
            self.error(
                file,
                object.clone(),
                field(HASH_ON_ANNOTATION),
                format!("required with {LOAD_BALANCER_ANNOTATION}: ring-hash or maglev"),
            );
            // Keep the snapshot consistent; the error stops it from being served anyway.
            lb.hash_on = Some(HashOn::SourceIp);
        }
        if let Some(p) = annotations.get(PANIC_THRESHOLD_ANNOTATION) {
            match p.trim_end_matches('%').parse::<u8>() {
                Ok(p) if p <= 100 => lb.panic_threshold_percent = p,
                _ => self.error(
                    file,
                    object,
                    field(PANIC_THRESHOLD_ANNOTATION),
                    format!("{p:?} is not a percentage from 0 to 100"),
                ),
            }
        }
        lb
    }

    /// Endpoints of a Service port from all of the Service's EndpointSlices (see
    /// [`crate::endpoints::slice_endpoints`]).
    fn endpoints(&mut self, service: &Key, port_name: &str) -> Vec<Endpoint> {
        let slices = self.slices.get(service).cloned().unwrap_or_default();
        crate::endpoints::slice_endpoints(
            &service.0,
            slices.iter().map(|(s, file)| (*s, *file)),
            port_name,
            &mut self.diagnostics,
        )
    }
}

/// The hostnames a route serves through a listener (Gateway API hostname intersection):
/// `Some(list)`, or `None` for any host; `None` from the outer option when nothing intersects.
fn effective_hostnames(listener: Option<&str>, route: &[String]) -> Option<Option<Vec<String>>> {
    match (listener, route.is_empty()) {
        (None, true) => Some(None),
        (None, false) => Some(Some(route.to_vec())),
        (Some(l), true) => Some(Some(vec![l.to_owned()])),
        (Some(l), false) => {
            let hosts: Vec<String> = route.iter().filter_map(|r| intersect(l, r)).collect();
            (!hosts.is_empty()).then_some(Some(hosts))
        }
    }
}

/// The more specific of two hostnames if one covers the other.
fn intersect(a: &str, b: &str) -> Option<String> {
    if a == b {
        return Some(a.to_owned());
    }
    if covers(a, b) {
        return Some(b.to_owned());
    }
    if covers(b, a) {
        return Some(a.to_owned());
    }
    None
}

/// Whether wildcard `pattern` (`*.suffix`) covers `host` (exact or a narrower wildcard).
fn covers(pattern: &str, host: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    // suffix is ".example.com"; the host needs at least one label before it.
    let host = host.strip_prefix('*').unwrap_or(host);
    host.len() > suffix.len() && host.ends_with(suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_intersection_follows_gateway_api() {
        assert_eq!(
            intersect("*.example.com", "foo.example.com").as_deref(),
            Some("foo.example.com")
        );
        assert_eq!(
            intersect("foo.example.com", "*.example.com").as_deref(),
            Some("foo.example.com")
        );
        assert_eq!(
            intersect("*.example.com", "*.foo.example.com").as_deref(),
            Some("*.foo.example.com")
        );
        assert_eq!(intersect("*.example.com", "example.com"), None);
        assert_eq!(intersect("a.com", "b.com"), None);
        assert_eq!(effective_hostnames(None, &[]), Some(None));
        assert_eq!(
            effective_hostnames(Some("*.a.com"), &["x.a.com".into(), "b.com".into()]),
            Some(Some(vec!["x.a.com".to_owned()]))
        );
        assert_eq!(effective_hostnames(Some("a.com"), &["b.com".into()]), None);
    }
}

#[cfg(test)]
mod translation_tests {
    use super::*;
    use crate::objects::parse_yaml;

    const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: t}
spec:
  gatewayClassName: novaedge
  listeners: [{name: http, protocol: HTTP, port: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: t, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: http, port: 9001}]
endpoints: [{addresses: [10.0.0.1, 10.0.0.2]}, {addresses: [10.0.0.3], conditions: {ready: false}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: t}
spec:
  parentRefs: [{name: gw}]
  rules:
    - matches:
        - path: {type: RegularExpression, value: "/users/[0-9]+"}
          headers: [{name: x-v, type: RegularExpression, value: "v[23]"}]
          queryParams: [{name: env, value: canary}]
      backendRefs: [{name: api, port: 80}]
"#;

    fn translate_with(service: &str) -> Translation {
        let (objects, diagnostics) = parse_yaml(&format!("{BASE}---\n{service}"), None);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        translate(
            &objects,
            &TranslateOptions {
                version: 3,
                ..TranslateOptions::default()
            },
        )
    }

    #[test]
    fn regex_and_query_matches_and_service_load_balancing() {
        let t = translate_with(
            r#"
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: t
  annotations:
    novaedge.io/load-balancer: maglev
    novaedge.io/hash-on: "header:x-user"
    novaedge.io/panic-threshold: "30"
spec:
  ports: [{name: http, port: 80}]
"#,
        );
        assert!(!t.has_errors(), "{:?}", t.diagnostics);
        let s = &t.snapshot;
        assert_eq!(s.version, 3);
        let m = &s.routes[0].rules[0].matches[0];
        assert_eq!(m.path, PathMatch::RegularExpression("/users/[0-9]+".into()));
        assert_eq!(m.headers[0].kind, MatchType::RegularExpression);
        assert_eq!(m.query_params[0].name, "env");
        assert_eq!(m.query_params[0].kind, MatchType::Exact);
        let b = &s.backends[0];
        assert_eq!(b.name, "t/api:80");
        assert_eq!(
            b.load_balancing,
            LoadBalancing {
                policy: LbPolicy::Maglev { table_size: 65_537 },
                hash_on: Some(HashOn::Header(http::HeaderName::from_static("x-user"))),
                panic_threshold_percent: 30,
            }
        );
        let ready: Vec<_> = b
            .endpoints
            .iter()
            .map(|e| (e.address.to_string(), e.ready))
            .collect();
        assert_eq!(
            ready,
            [
                ("10.0.0.1:9001".to_owned(), true),
                ("10.0.0.2:9001".to_owned(), true),
                ("10.0.0.3:9001".to_owned(), false)
            ]
        );
    }

    #[test]
    fn bad_annotations_and_regexes_name_the_field() {
        let t = translate_with(
            r#"
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: t
  annotations:
    novaedge.io/load-balancer: fastest
    novaedge.io/hash-on: "header:x-user"
    novaedge.io/panic-threshold: "150"
spec:
  ports: [{name: http, port: 80}]
"#,
        );
        let errors: Vec<String> = t
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| format!("{} | {}", d.object, d.field))
            .collect();
        assert_eq!(
            errors,
            [
                "Service t/api | metadata.annotations[novaedge.io/load-balancer]",
                "Service t/api | metadata.annotations[novaedge.io/hash-on]",
                "Service t/api | metadata.annotations[novaedge.io/panic-threshold]",
            ]
        );

        let broken = BASE
            .replace("/users/[0-9]+", "/users/(unclosed")
            .replace("v[23]", "v[")
            + "---\napiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: t}\nspec: {ports: [{port: 80}]}\n";
        let (objects, _) = parse_yaml(&broken, None);
        let t = translate(&objects, &TranslateOptions::default());
        let fields: Vec<&str> = t.diagnostics.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.rules[0].matches[0].path.value",
                "spec.rules[0].matches[0].headers[0].value",
            ]
        );
    }
}
