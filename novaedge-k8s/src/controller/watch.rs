//! One reflector per kind, and the objects of all stores in the translator's terms.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use gateway_api::backendtlspolicies::BackendTlsPolicy;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::httproutes::HttpRoute;
use gateway_api::referencegrants::ReferenceGrant;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret as CoreSecret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::Event;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Notify;

use crate::crd::{ProxyBackend, ProxyGateway, ProxyRoute, ProxyVip};
use crate::diagnostics::Diagnostic;
use crate::objects::{Object, Sourced};
use crate::policy::ProxyPolicy;
use crate::tls::{CA_FILE_ANNOTATION, CERT_FILE_ANNOTATION, KEY_FILE_ANNOTATION, parse_secret};

/// The label every EndpointSlice of a Service carries (set by the EndpointSlice controller).
pub(super) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The only Secrets the controller receives (see the module docs of [`super`]).
pub(super) const TLS_SECRETS: &str = "type=kubernetes.io/tls";
/// kubectl's copy of the whole object, Secret data included.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

pub(super) type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where the initial list of a kind stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// Not listed yet (or the list keeps failing).
    Pending,
    /// Listed; the store holds every object.
    Listed,
    /// The API server does not serve this resource (its CRD is not installed): empty.
    Absent,
}

/// What the watch tasks share with the rebuild loop.
#[derive(Debug)]
struct Shared {
    listing: Mutex<BTreeMap<&'static str, Listing>>,
    changed: Arc<Notify>,
    metrics: super::ControllerMetrics,
}

impl Shared {
    fn set(&self, kind: &'static str, listing: Listing) {
        let mut all = self.listing.lock().unwrap_or_else(|e| e.into_inner());
        let before = all.insert(kind, listing);
        drop(all);
        if before != Some(listing) {
            match listing {
                Listing::Absent => tracing::warn!(
                    kind,
                    "the API server does not serve this kind (is its CRD installed?); \
                     taken as empty until it does"
                ),
                Listing::Listed if before == Some(Listing::Absent) => {
                    tracing::info!(kind, "the API server serves this kind now");
                }
                _ => {}
            }
        }
    }

    fn get(&self, kind: &'static str) -> Listing {
        let all = self.listing.lock().unwrap_or_else(|e| e.into_inner());
        all.get(kind).copied().unwrap_or(Listing::Pending)
    }
}

/// The reflectors' stores, one per kind. Cheap to clone.
#[derive(Clone)]
pub(super) struct Stores {
    shared: Arc<Shared>,
    pub(super) gateway_classes: Store<GatewayClass>,
    pub(super) gateways: Store<Gateway>,
    pub(super) http_routes: Store<HttpRoute>,
    pub(super) grpc_routes: Store<GrpcRoute>,
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    secrets: Store<CoreSecret>,
    config_maps: Store<ConfigMap>,
    backend_tls_policies: Store<BackendTlsPolicy>,
    reference_grants: Store<ReferenceGrant>,
    pub(super) ingresses: Store<Ingress>,
    ingress_classes: Store<IngressClass>,
    proxy_policies: Store<ProxyPolicy>,
    pub(super) proxy_gateways: Store<ProxyGateway>,
    pub(super) proxy_routes: Store<ProxyRoute>,
    proxy_backends: Store<ProxyBackend>,
    pub(super) proxy_vips: Store<ProxyVip>,
    /// Their labels, which `allowedRoutes.namespaces.selector` selects on.
    namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Their labels, which node selectors select on.
    nodes: Store<PartialObjectMeta<Node>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("listing", &self.shared.listing)
            .finish_non_exhaustive()
    }
}

/// Kind names, as logs and the listing state name them.
mod kinds {
    pub(super) const GATEWAY_CLASS: &str = "GatewayClass";
    pub(super) const GATEWAY: &str = "Gateway";
    pub(super) const HTTP_ROUTE: &str = "HTTPRoute";
    pub(super) const GRPC_ROUTE: &str = "GRPCRoute";
    pub(super) const SERVICE: &str = "Service";
    pub(super) const ENDPOINT_SLICE: &str = "EndpointSlice";
    pub(super) const SECRET: &str = "Secret";
    pub(super) const CONFIG_MAP: &str = "ConfigMap";
    pub(super) const BACKEND_TLS_POLICY: &str = "BackendTLSPolicy";
    pub(super) const REFERENCE_GRANT: &str = "ReferenceGrant";
    pub(super) const INGRESS: &str = "Ingress";
    pub(super) const INGRESS_CLASS: &str = "IngressClass";
    pub(super) const PROXY_POLICY: &str = "ProxyPolicy";
    pub(super) const PROXY_GATEWAY: &str = "ProxyGateway";
    pub(super) const PROXY_ROUTE: &str = "ProxyRoute";
    pub(super) const PROXY_BACKEND: &str = "ProxyBackend";
    pub(super) const PROXY_VIP: &str = "ProxyVIP";
    pub(super) const NAMESPACE: &str = "Namespace";
    pub(super) const NODE: &str = "Node";
}

impl Stores {
    /// Starts nothing: returns the stores and the tasks that fill them (to be spawned), which
    /// notify `changed` on every change once their kind is listed.
    pub(super) fn watch(
        client: &Client,
        page_size: u32,
        changed: Arc<Notify>,
        metrics: super::ControllerMetrics,
    ) -> (Self, Vec<Task>) {
        let shared = Arc::new(Shared {
            listing: Mutex::default(),
            changed,
            metrics,
        });
        let all = watcher::Config::default().page_size(page_size);
        let mut tasks = Vec::new();
        macro_rules! reflect {
            ($kind:expr, $config:expr) => {{
                let (store, task) =
                    reflect_kind(Api::all(client.clone()), $config.clone(), $kind, &shared);
                tasks.push(task);
                store
            }};
        }
        let gateway_classes = reflect!(kinds::GATEWAY_CLASS, all);
        let gateways = reflect!(kinds::GATEWAY, all);
        let http_routes = reflect!(kinds::HTTP_ROUTE, all);
        let grpc_routes = reflect!(kinds::GRPC_ROUTE, all);
        let services = reflect!(kinds::SERVICE, all);
        let endpoint_slices = reflect!(
            kinds::ENDPOINT_SLICE,
            all.clone().labels(SERVICE_NAME_LABEL)
        );
        let secrets = reflect!(kinds::SECRET, all.clone().fields(TLS_SECRETS));
        let config_maps = reflect!(kinds::CONFIG_MAP, all);
        let backend_tls_policies = reflect!(kinds::BACKEND_TLS_POLICY, all);
        let reference_grants = reflect!(kinds::REFERENCE_GRANT, all);
        let ingresses = reflect!(kinds::INGRESS, all);
        let ingress_classes = reflect!(kinds::INGRESS_CLASS, all);
        let proxy_policies = reflect!(kinds::PROXY_POLICY, all);
        let proxy_gateways = reflect!(kinds::PROXY_GATEWAY, all);
        let proxy_routes = reflect!(kinds::PROXY_ROUTE, all);
        let proxy_backends = reflect!(kinds::PROXY_BACKEND, all);
        let proxy_vips = reflect!(kinds::PROXY_VIP, all);
        let (namespaces, task) = reflect_metadata(
            Api::all(client.clone()),
            all.clone(),
            kinds::NAMESPACE,
            &shared,
        );
        tasks.push(task);
        let (nodes, task) = reflect_metadata(Api::all(client.clone()), all, kinds::NODE, &shared);
        tasks.push(task);
        let stores = Stores {
            shared,
            gateway_classes,
            gateways,
            http_routes,
            grpc_routes,
            services,
            endpoint_slices,
            secrets,
            config_maps,
            backend_tls_policies,
            reference_grants,
            ingresses,
            ingress_classes,
            proxy_policies,
            proxy_gateways,
            proxy_routes,
            proxy_backends,
            proxy_vips,
            namespaces,
            nodes,
        };
        (stores, tasks)
    }

    /// The kinds not listed yet.
    pub(super) fn pending(&self) -> Vec<&'static str> {
        let listing = self
            .shared
            .listing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        listing
            .iter()
            .filter(|(_, l)| **l == Listing::Pending)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Whether every kind has been listed (or is not served at all).
    pub(super) fn all_listed(&self) -> bool {
        // Every kind is registered as pending when its reflector is made.
        let listing = self
            .shared
            .listing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        listing.values().all(|l| *l != Listing::Pending)
    }

    /// Everything in the stores, as the translator takes it (sorted by kind, namespace and
    /// name, so that a translation does not depend on the stores' order), with the problems met
    /// converting Secrets.
    pub(super) fn objects(&self) -> (Vec<Sourced>, Vec<Diagnostic>) {
        let mut objects = Vec::new();
        let mut diagnostics = Vec::new();
        let mut add = |object| {
            objects.push(Sourced { object, file: None });
        };
        macro_rules! take {
            ($store:expr, $kind:expr, $wrap:expr) => {
                if self.shared.get($kind) != Listing::Absent {
                    for o in sorted(&$store) {
                        add($wrap(o.as_ref().clone()));
                    }
                }
            };
        }
        take!(
            self.gateway_classes,
            kinds::GATEWAY_CLASS,
            Object::GatewayClass
        );
        take!(self.gateways, kinds::GATEWAY, Object::Gateway);
        take!(self.http_routes, kinds::HTTP_ROUTE, Object::HttpRoute);
        take!(self.grpc_routes, kinds::GRPC_ROUTE, Object::GrpcRoute);
        take!(self.services, kinds::SERVICE, Object::Service);
        take!(
            self.endpoint_slices,
            kinds::ENDPOINT_SLICE,
            Object::EndpointSlice
        );
        take!(self.config_maps, kinds::CONFIG_MAP, Object::ConfigMap);
        take!(
            self.backend_tls_policies,
            kinds::BACKEND_TLS_POLICY,
            Object::BackendTlsPolicy
        );
        take!(
            self.reference_grants,
            kinds::REFERENCE_GRANT,
            Object::ReferenceGrant
        );
        take!(self.ingresses, kinds::INGRESS, Object::Ingress);
        take!(
            self.ingress_classes,
            kinds::INGRESS_CLASS,
            Object::IngressClass
        );
        take!(self.proxy_policies, kinds::PROXY_POLICY, |p| {
            Object::ProxyPolicy(Box::new(p))
        });
        take!(self.proxy_gateways, kinds::PROXY_GATEWAY, |g| {
            Object::ProxyGateway(Box::new(g))
        });
        take!(self.proxy_routes, kinds::PROXY_ROUTE, |r| {
            Object::ProxyRoute(Box::new(r))
        });
        take!(self.proxy_backends, kinds::PROXY_BACKEND, |b| {
            Object::ProxyBackend(Box::new(b))
        });
        // A ProxyVIP being deleted is left out, so that it is withdrawn everywhere before its
        // finalizer lets it go (see `finalizer`).
        if self.shared.get(kinds::PROXY_VIP) != Listing::Absent {
            for v in sorted(&self.proxy_vips) {
                if v.metadata.deletion_timestamp.is_none() {
                    add(Object::ProxyVip(Box::new(v.as_ref().clone())));
                }
            }
        }
        // Only their names and labels matter; their metadata is all that is watched.
        take!(self.namespaces, kinds::NAMESPACE, |n: PartialObjectMeta<
            Namespace,
        >| {
            Object::Namespace(Namespace {
                metadata: n.metadata,
                ..Namespace::default()
            })
        });
        take!(self.nodes, kinds::NODE, |n: PartialObjectMeta<Node>| {
            Object::Node(Box::new(Node {
                metadata: n.metadata,
                ..Node::default()
            }))
        });
        if self.shared.get(kinds::SECRET) != Listing::Absent {
            for s in sorted(&self.secrets) {
                if let Some(secret) = secret(&s, &mut diagnostics) {
                    add(Object::Secret(Box::new(secret)));
                }
            }
        }
        (objects, diagnostics)
    }
}

/// The objects of a store by namespace and name.
fn sorted<K: Resource + Clone>(store: &Store<K>) -> Vec<Arc<K>>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut all = store.state();
    all.sort_by_key(|o| (o.namespace(), o.name_any()));
    all
}

/// Drops what the controller never reads and that can be large.
fn slim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

/// A reflector for `K`, and the task that drives it.
fn reflect_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: &'static str,
    shared: &Arc<Shared>,
) -> (Store<K>, Task)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let shared = shared.clone();
    shared.set(kind, Listing::Pending);
    let stream = watcher(api, config)
        .default_backoff()
        .modify(slim::<K>)
        .reflect(writer);
    let task = async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                // The store swaps in the listed objects at `InitDone`; nothing changes before.
                Ok(Event::Init | Event::InitApply(_)) => {}
                Ok(Event::InitDone) => {
                    tracing::debug!(kind, "listed");
                    shared.set(kind, Listing::Listed);
                    shared.changed.notify_one();
                }
                Ok(Event::Apply(_)) => {
                    shared.metrics.watch_event(kind, "apply");
                    shared.changed.notify_one();
                }
                Ok(Event::Delete(_)) => {
                    shared.metrics.watch_event(kind, "delete");
                    shared.changed.notify_one();
                }
                Err(e) => watch_failed(kind, &e, &shared),
            }
        }
    };
    (store, Box::pin(task))
}

/// Logs a failed list or watch (the stream retries it after a backoff). A kind the API server
/// does not serve is taken as empty meanwhile, so that the other kinds are not held up.
fn watch_failed(kind: &'static str, e: &watcher::Error, shared: &Shared) {
    let not_served = matches!(e, watcher::Error::InitialListFailed(e) if super::is_not_found(e));
    if not_served {
        let before = shared.get(kind);
        shared.set(kind, Listing::Absent);
        if before != Listing::Absent {
            shared.changed.notify_one();
        }
    } else {
        tracing::warn!(kind, error = %e, "list or watch failed; retrying with backoff");
    }
}

/// Objects read for their labels only (Nodes, Namespaces), by metadata; only a change of labels
/// (what node and namespace selectors read) is a change.
fn reflect_metadata<K>(
    api: Api<PartialObjectMeta<K>>,
    config: watcher::Config,
    kind: &'static str,
    shared: &Arc<Shared>,
) -> (Store<PartialObjectMeta<K>>, Task)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    type Labels = Option<BTreeMap<String, String>>;
    let (store, writer) = reflector::store();
    let shared = shared.clone();
    shared.set(kind, Listing::Pending);
    // Metadata only: an `Api` of `PartialObjectMeta` asks for no more.
    let stream = watcher(api, config)
        .default_backoff()
        .modify(slim::<PartialObjectMeta<K>>)
        .reflect(writer);
    let task = async move {
        let mut labels: HashMap<String, Labels> = HashMap::new();
        let mut listing: HashMap<String, Labels> = HashMap::new();
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let changed = match event {
                Ok(Event::Init) => {
                    listing.clear();
                    false
                }
                Ok(Event::InitApply(node)) => {
                    listing.insert(node.name_any(), node.metadata.labels);
                    false
                }
                // Always a change: the rebuild loop waits for every kind's first listing.
                Ok(Event::InitDone) => {
                    tracing::debug!(kind, nodes = listing.len(), "listed");
                    labels = std::mem::take(&mut listing);
                    shared.set(kind, Listing::Listed);
                    true
                }
                Ok(Event::Apply(node)) => {
                    shared.metrics.watch_event(kind, "apply");
                    let name = node.name_any();
                    labels.insert(name, node.metadata.labels.clone()) != Some(node.metadata.labels)
                }
                Ok(Event::Delete(node)) => {
                    shared.metrics.watch_event(kind, "delete");
                    labels.remove(&node.name_any()).is_some()
                }
                Err(e) => {
                    watch_failed(kind, &e, &shared);
                    false
                }
            };
            if changed {
                shared.changed.notify_one();
            }
        }
    };
    (store, Box::pin(task))
}

/// A `kubernetes.io/tls` Secret as the translator reads it. File annotations are dropped with
/// a warning: they name files on the controller's machine.
fn secret(secret: &CoreSecret, diagnostics: &mut Vec<Diagnostic>) -> Option<crate::tls::Secret> {
    let object = format!(
        "Secret {}/{}",
        secret.namespace().unwrap_or_default(),
        secret.name_any()
    );
    let mut value = match serde_json::to_value(secret) {
        Ok(value) => value,
        Err(e) => {
            diagnostics.push(Diagnostic::error(&object, "", format!("unreadable: {e}")));
            return None;
        }
    };
    if let Some(annotations) = value
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        for annotation in [
            CERT_FILE_ANNOTATION,
            KEY_FILE_ANNOTATION,
            CA_FILE_ANNOTATION,
        ] {
            if annotations.remove(annotation).is_some() {
                diagnostics.push(Diagnostic::warning(
                    &object,
                    format!("metadata.annotations[{annotation}]"),
                    "ignored: files are read only from manifests on disk (novaedge run); \
                     put the PEM in the Secret's data",
                ));
            }
        }
    }
    parse_secret(value, &object, None, diagnostics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_annotations_of_api_secrets_are_never_read() {
        let secret: CoreSecret = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {
                "name": "s",
                "namespace": "shop",
                "annotations": {
                    "novaedge.io/key-file": "/etc/novaedge/tls/controller.key",
                    "other": "kept"
                }
            },
            "data": {"tls.crt": "Y2VydA=="}
        }))
        .unwrap();
        let mut diagnostics = Vec::new();
        let parsed = super::secret(&secret, &mut diagnostics).unwrap();
        assert_eq!(parsed.keys().collect::<Vec<_>>(), ["tls.crt"]);
        assert_eq!(parsed.get("tls.crt"), Some(&b"cert"[..]));
        assert!(parsed.files.is_empty());
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert!(!diagnostics[0].is_error());
        assert_eq!(diagnostics[0].object, "Secret shop/s");
        assert_eq!(
            diagnostics[0].field,
            "metadata.annotations[novaedge.io/key-file]"
        );
        let annotations = parsed.metadata.annotations.unwrap();
        assert_eq!(annotations.get("other").map(String::as_str), Some("kept"));
    }

    #[test]
    fn slim_drops_managed_fields_and_the_last_applied_copy() {
        let mut service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "s",
                "annotations": {
                    LAST_APPLIED_ANNOTATION: "{\"data\": \"...\"}",
                    "novaedge.io/load-balancer": "maglev"
                },
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            }
        }))
        .unwrap();
        slim(&mut service);
        assert!(service.metadata.managed_fields.is_none());
        let annotations = service.metadata.annotations.unwrap();
        assert_eq!(annotations.len(), 1);
        assert!(annotations.contains_key("novaedge.io/load-balancer"));
    }
}
