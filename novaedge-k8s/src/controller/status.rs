//! Writing what the translation found to the status subresources: in Gateway API's types,
//! GatewayClass conditions; Gateway conditions, listeners (name, supported kinds, attached
//! routes, conditions) and addresses; HTTPRoute and GRPCRoute `parents`, one per parent
//! reference NovaEdge answers for, with `controllerName` [`GATEWAY_CONTROLLER_NAME`]. In
//! NovaEdge's own types ([`crate::crd`]), the same for ProxyGateways (conditions and listeners)
//! and ProxyRoutes (`parents`). For Ingresses of NovaEdge's classes, `loadBalancer.ingress`.
//!
//! - `lastTransitionTime` is kept from the current status when a condition's status did not
//!   change (its reason or message may have), and is now otherwise; `observedGeneration` is the
//!   generation the translation read.
//! - Writes are server-side apply patches of the status subresource, with the one field
//!   manager [`FIELD_MANAGER`], forced, and only when the status differs from what the API
//!   server has (the reflector's copy; or, until the watch has delivered our own last write,
//!   that write).
//! - A route's `parents` list is replaced as a whole, as its schema makes it atomic: the
//!   entries of other controllers are copied from the current status, so that a route attached
//!   to Gateways of several implementations keeps theirs. An entry of ours whose parent is no
//!   longer ours to answer for is dropped. A ProxyRoute's parents are all ours.
//! - Addresses ([`ControllerConfig::publish_addresses`](super::ControllerConfig)): a served
//!   Ingress's `status.loadBalancer.ingress` and an accepted Gateway's `status.addresses` are
//!   the publish addresses, in their order. Those lists are atomic and NovaEdge's to say for
//!   what it serves: an Ingress left out for its errors, a Gateway not accepted, or an empty
//!   list of publish addresses gets an empty list applied, which removes the entries there
//!   (whoever wrote them); a status without entries is left alone. An Ingress that changes to
//!   another controller's class is left to that controller, which replaces the list.
//!
//! GRPCRoute's status has the same shape as HTTPRoute's; both are built with the HTTPRoute
//! types.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use gateway_api::gatewayclasses::{GatewayClass, GatewayClassStatus};
use gateway_api::gateways::{
    Gateway, GatewayStatus as ApiGatewayStatus, GatewayStatusAddresses, GatewayStatusListeners,
    GatewayStatusListenersSupportedKinds,
};
use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::httproutes::{
    HttpRoute, HttpRouteStatus, HttpRouteStatusParents, HttpRouteStatusParentsParentRef,
};
use k8s_openapi::api::networking::v1::{
    Ingress, IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition as ApiCondition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::events::Events;
use super::publish::PublishAddress;
use super::watch::Stores;
use super::{ControllerConfig, FIELD_MANAGER, Round, is_not_found};
use crate::crd::{
    ParentRef, ProxyGateway, ProxyGatewayStatus, ProxyListenerStatus, ProxyRoute,
    ProxyRouteParentStatus, ProxyRouteStatus,
};
use crate::status::{Condition, GatewayStatus, ListenerStatus, ObjectStatus, RouteStatus, types};
use crate::translate::GATEWAY_CONTROLLER_NAME;

/// The group of every route kind a listener lists.
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// How long after a failed write it is tried again (if nothing else changed meanwhile).
const RETRY: Duration = Duration::from_secs(5);
/// Status writes in flight at once.
const CONCURRENCY: usize = 8;

// === the statuses ===

/// The kinds whose status the controller writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Kind {
    GatewayClass,
    Gateway,
    HttpRoute,
    GrpcRoute,
    Ingress,
    ProxyGateway,
    ProxyRoute,
}

impl Kind {
    /// The kind's name, as objects and the translation's statuses name it.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::GatewayClass => "GatewayClass",
            Self::Gateway => "Gateway",
            Self::HttpRoute => "HTTPRoute",
            Self::GrpcRoute => "GRPCRoute",
            Self::Ingress => "Ingress",
            Self::ProxyGateway => "ProxyGateway",
            Self::ProxyRoute => "ProxyRoute",
        }
    }

    fn api_version(self) -> String {
        match self {
            Self::GatewayClass => GatewayClass::api_version(&()).into_owned(),
            Self::Gateway => Gateway::api_version(&()).into_owned(),
            Self::HttpRoute => HttpRoute::api_version(&()).into_owned(),
            Self::GrpcRoute => GrpcRoute::api_version(&()).into_owned(),
            Self::Ingress => <Ingress as Resource>::api_version(&()).into_owned(),
            Self::ProxyGateway => ProxyGateway::api_version(&()).into_owned(),
            Self::ProxyRoute => ProxyRoute::api_version(&()).into_owned(),
        }
    }
}

/// A status subresource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Target {
    pub(super) kind: Kind,
    pub(super) namespace: Option<String>,
    pub(super) name: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind.name();
        match &self.namespace {
            Some(ns) => write!(f, "{kind} {ns}/{}", self.name),
            None => write!(f, "{kind} {}", self.name),
        }
    }
}

/// The status to apply to an object.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StatusPatch {
    pub(super) target: Target,
    /// The `resourceVersion` of the object the status was computed against.
    pub(super) resource_version: Option<String>,
    /// The fields of `status` NovaEdge owns.
    pub(super) status: Value,
}

impl StatusPatch {
    /// The server-side apply body.
    pub(super) fn body(&self) -> Value {
        let mut metadata = json!({ "name": self.target.name });
        if let Some(ns) = &self.target.namespace {
            metadata["namespace"] = json!(ns);
        }
        json!({
            "apiVersion": self.target.kind.api_version(),
            "kind": self.target.kind.name(),
            "metadata": metadata,
            "status": self.status,
        })
    }
}

/// `status` of an object as JSON (`null` when it has none).
fn to_json<T: Serialize>(status: &Option<T>) -> Value {
    serde_json::to_value(status).unwrap_or(Value::Null)
}

/// `current` read as `T`, or `T`'s default when absent or not readable.
fn from_json<T: DeserializeOwned + Default>(current: &Value) -> T {
    if current.is_null() {
        return T::default();
    }
    serde_json::from_value(current.clone()).unwrap_or_default()
}

/// Whether applying `desired` would change `current`: compares the fields `desired` sets.
fn differs(desired: &Value, current: &Value) -> bool {
    match desired.as_object() {
        Some(fields) => fields
            .iter()
            .any(|(k, v)| current.get(k).unwrap_or(&Value::Null) != v),
        None => true,
    }
}

/// Metav1 conditions for `desired`, keeping the transition time of a condition whose status is
/// unchanged in `previous`.
fn conditions(
    desired: &[Condition],
    previous: &[ApiCondition],
    generation: Option<i64>,
    now: &Time,
) -> Vec<ApiCondition> {
    desired
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == status)
                .map_or_else(|| now.clone(), |p| p.last_transition_time.clone());
            ApiCondition {
                type_: c.type_.to_owned(),
                status: status.to_owned(),
                reason: c.reason.to_owned(),
                message: c.message.clone(),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// A GatewayClass's status (conditions).
pub(super) fn gateway_class_status(desired: &ObjectStatus, current: &Value, now: &Time) -> Value {
    let current: GatewayClassStatus = from_json(current);
    let status = GatewayClassStatus {
        conditions: Some(conditions(
            &desired.conditions,
            current.conditions.as_deref().unwrap_or_default(),
            desired.generation,
            now,
        )),
        supported_features: None,
    };
    serde_json::to_value(status).unwrap_or(Value::Null)
}

/// The conditions of the entry of `previous` that `is` picks (none if there is none), whose
/// transition times [`conditions`] keeps.
fn previous_of<T>(
    previous: &[T],
    is: impl Fn(&T) -> bool,
    conditions: impl Fn(&T) -> &[ApiCondition],
) -> &[ApiCondition] {
    previous
        .iter()
        .find(|p| is(p))
        .map(conditions)
        .unwrap_or_default()
}

/// Whether the translation accepted the object.
fn is_accepted(desired: &[Condition]) -> bool {
    desired
        .iter()
        .any(|c| c.type_ == types::ACCEPTED && c.status)
}

/// A Gateway's status (conditions, listeners and, once accepted, `addresses`).
pub(super) fn gateway_status(
    desired: &GatewayStatus,
    addresses: &[PublishAddress],
    current: &Value,
    now: &Time,
) -> Value {
    let current: ApiGatewayStatus = from_json(current);
    let previous_listeners = current.listeners.unwrap_or_default();
    let listeners = desired
        .listeners
        .iter()
        .map(|l: &ListenerStatus| {
            let previous =
                previous_of(&previous_listeners, |p| p.name == l.name, |p| &p.conditions);
            GatewayStatusListeners {
                name: l.name.clone(),
                supported_kinds: Some(
                    l.supported_kinds
                        .iter()
                        .map(|kind| GatewayStatusListenersSupportedKinds {
                            group: Some(GATEWAY_GROUP.to_owned()),
                            kind: (*kind).to_owned(),
                        })
                        .collect(),
                ),
                attached_routes: i32::try_from(l.attached_routes).unwrap_or(i32::MAX),
                conditions: conditions(&l.conditions, previous, desired.generation, now),
            }
        })
        .collect();
    let addresses: Vec<GatewayStatusAddresses> = if is_accepted(&desired.conditions) {
        addresses
            .iter()
            .map(|a| GatewayStatusAddresses {
                r#type: Some(a.gateway_type().to_owned()),
                value: a.to_string(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let had_addresses = current.addresses.as_ref().is_some_and(|a| !a.is_empty());
    let status = ApiGatewayStatus {
        conditions: Some(conditions(
            &desired.conditions,
            current.conditions.as_deref().unwrap_or_default(),
            desired.generation,
            now,
        )),
        listeners: Some(listeners),
        // An empty list only to remove entries: see the module docs.
        addresses: (!addresses.is_empty() || had_addresses).then_some(addresses),
        attached_listener_sets: None,
    };
    serde_json::to_value(status).unwrap_or(Value::Null)
}

/// A ProxyGateway's status: as a Gateway's (without addresses), in [`ProxyGatewayStatus`].
pub(super) fn proxy_gateway_status(desired: &GatewayStatus, current: &Value, now: &Time) -> Value {
    let current: ProxyGatewayStatus = from_json(current);
    let listeners = desired
        .listeners
        .iter()
        .map(|l| {
            let previous = previous_of(&current.listeners, |p| p.name == l.name, |p| &p.conditions);
            ProxyListenerStatus {
                name: l.name.clone(),
                attached_routes: i32::try_from(l.attached_routes).unwrap_or(i32::MAX),
                conditions: conditions(&l.conditions, previous, desired.generation, now),
            }
        })
        .collect();
    let status = ProxyGatewayStatus {
        observed_generation: desired.generation,
        conditions: conditions(
            &desired.conditions,
            &current.conditions,
            desired.generation,
            now,
        ),
        listeners,
    };
    serde_json::to_value(status).unwrap_or(Value::Null)
}

/// Our entries of a route's status: for each parent of `desired`, its reference (`refs`, by
/// the parent's index in `spec.parentRefs`) and conditions, keeping the transition times of
/// the `previous` conditions for the same reference. A parent whose reference is gone is
/// skipped: the route changed since it was translated, and the next round has it right.
fn route_parents<'p, R>(
    desired: &RouteStatus,
    refs: impl Fn(usize) -> Option<R>,
    previous: impl Fn(&R) -> &'p [ApiCondition],
    now: &Time,
) -> Vec<(R, Vec<ApiCondition>)> {
    desired
        .parents
        .iter()
        .filter_map(|parent| {
            let parent_ref = refs(parent.index)?;
            let conditions = conditions(
                &parent.conditions,
                previous(&parent_ref),
                desired.generation,
                now,
            );
            Some((parent_ref, conditions))
        })
        .collect()
}

/// A route's status (`parents`): the other controllers' entries as they are, then ours for
/// `desired` (none when the route is not ours at all). `parent_refs` is the route's
/// `spec.parentRefs`. `None` when there is nothing of ours to write or remove.
pub(super) fn route_status(
    desired: Option<&RouteStatus>,
    parent_refs: &Value,
    current: &Value,
    now: &Time,
) -> Option<Value> {
    let current: HttpRouteStatus = from_json(current);
    let ours = |p: &&HttpRouteStatusParents| p.controller_name == GATEWAY_CONTROLLER_NAME;
    let had_ours = current.parents.iter().any(|p| ours(&p));
    if desired.is_none_or(|d| d.parents.is_empty()) && !had_ours {
        return None;
    }
    let mut parents: Vec<HttpRouteStatusParents> = current
        .parents
        .iter()
        .filter(|p| !ours(p))
        .cloned()
        .collect();
    if let Some(desired) = desired {
        let refs = |index: usize| {
            parent_refs.get(index).and_then(|r| {
                serde_json::from_value::<HttpRouteStatusParentsParentRef>(r.clone()).ok()
            })
        };
        let previous = |parent_ref: &HttpRouteStatusParentsParentRef| {
            previous_of(
                &current.parents,
                |p| ours(&p) && p.parent_ref == *parent_ref,
                |p| &p.conditions,
            )
        };
        parents.extend(route_parents(desired, refs, previous, now).into_iter().map(
            |(parent_ref, conditions)| HttpRouteStatusParents {
                conditions,
                controller_name: GATEWAY_CONTROLLER_NAME.to_owned(),
                parent_ref,
            },
        ));
    }
    serde_json::to_value(HttpRouteStatus { parents }).ok()
}

/// A ProxyRoute's status: an entry per parent reference of `desired`, all ours.
pub(super) fn proxy_route_status(
    desired: &RouteStatus,
    parent_refs: &[ParentRef],
    current: &Value,
    now: &Time,
) -> Value {
    let current: ProxyRouteStatus = from_json(current);
    let previous = |parent_ref: &ParentRef| {
        previous_of(
            &current.parents,
            |p| p.parent_ref == *parent_ref,
            |p| &p.conditions,
        )
    };
    let parents = route_parents(desired, |i| parent_refs.get(i).cloned(), previous, now)
        .into_iter()
        .map(|(parent_ref, conditions)| ProxyRouteParentStatus {
            parent_ref,
            conditions,
        })
        .collect();
    let status = ProxyRouteStatus {
        observed_generation: desired.generation,
        parents,
    };
    serde_json::to_value(status).unwrap_or(Value::Null)
}

/// An Ingress's status (`loadBalancer.ingress`): the publish addresses if it is `served`, and
/// otherwise none. `None` when there is nothing to write or remove.
pub(super) fn ingress_status(
    addresses: &[PublishAddress],
    served: bool,
    current: &Value,
) -> Option<Value> {
    let current: IngressStatus = from_json(current);
    let had = current
        .load_balancer
        .and_then(|lb| lb.ingress)
        .is_some_and(|entries| !entries.is_empty());
    let entries: Vec<IngressLoadBalancerIngress> = if served {
        addresses
            .iter()
            .map(|a| match a {
                PublishAddress::Ip(ip) => IngressLoadBalancerIngress {
                    ip: Some(ip.to_string()),
                    ..IngressLoadBalancerIngress::default()
                },
                PublishAddress::Hostname(name) => IngressLoadBalancerIngress {
                    hostname: Some(name.clone()),
                    ..IngressLoadBalancerIngress::default()
                },
            })
            .collect()
    } else {
        Vec::new()
    };
    if entries.is_empty() && !had {
        return None;
    }
    let status = IngressStatus {
        load_balancer: Some(IngressLoadBalancerStatus {
            ingress: Some(entries),
        }),
    };
    serde_json::to_value(status).ok()
}

// === impl StatusWriter ===

/// Writes statuses and Events while this replica leads.
pub(super) struct StatusWriter {
    client: Client,
    stores: Stores,
    events: Events,
    /// Where clients reach the proxies, without repeats.
    addresses: Vec<PublishAddress>,
    /// Our last write to each object: the `resourceVersion` it was computed against and the
    /// status sent. While the store still has that version, the write is what the object has.
    written: HashMap<Target, (Option<String>, Value)>,
}

impl fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusWriter")
            .field("written", &self.written.len())
            .finish_non_exhaustive()
    }
}

impl StatusWriter {
    pub(super) fn new(client: Client, stores: Stores, config: &ControllerConfig) -> Self {
        let mut addresses: Vec<PublishAddress> = Vec::new();
        for a in &config.publish_addresses {
            if !addresses.contains(a) {
                addresses.push(a.clone());
            }
        }
        Self {
            events: Events::new(client.clone(), &config.lease.identity),
            client,
            stores,
            addresses,
            written: HashMap::new(),
        }
    }

    /// Writes the latest round whenever there is a new one or this replica becomes the leader.
    pub(super) async fn run(
        mut self,
        mut rounds: watch::Receiver<Option<Arc<Round>>>,
        mut leading: watch::Receiver<bool>,
    ) {
        let mut retry: Option<Instant> = None;
        loop {
            tokio::select! {
                changed = rounds.changed() => if changed.is_err() { return },
                changed = leading.changed() => if changed.is_err() { return },
                () = sleep_until(retry) => {}
            }
            retry = None;
            if !*leading.borrow_and_update() {
                self.written.clear();
                self.events.forget();
                continue;
            }
            // Nothing is written before the first translation of complete stores.
            let Some(round) = rounds.borrow_and_update().clone() else {
                continue;
            };
            if !self.write(&round, &leading).await {
                retry = Some(Instant::now() + RETRY);
            }
        }
    }

    /// The current status of `target` as the API server has it: the store's, unless the
    /// store has not seen our last write yet.
    fn current(
        &mut self,
        target: &Target,
        resource_version: &Option<String>,
        status: Value,
    ) -> Value {
        match self.written.get(target) {
            Some((before, written)) if before == resource_version => {
                let mut merged = if status.is_object() {
                    status
                } else {
                    json!({})
                };
                if let (Some(merged), Some(written)) = (merged.as_object_mut(), written.as_object())
                {
                    for (k, v) in written {
                        merged.insert(k.clone(), v.clone());
                    }
                }
                merged
            }
            Some(_) => {
                self.written.remove(target);
                status
            }
            None => status,
        }
    }

    /// The statuses that differ from what the objects have.
    pub(super) fn patches(&mut self, round: &Round, now: &Time) -> Vec<StatusPatch> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut consider = |this: &mut Self,
                            target: Target,
                            rv: Option<String>,
                            current: Value,
                            desired: Option<Value>| {
            let current = this.current(&target, &rv, current);
            seen.insert(target.clone());
            if let Some(status) = desired
                && differs(&status, &current)
            {
                out.push(StatusPatch {
                    target,
                    resource_version: rv,
                    status,
                });
            }
        };
        for (name, desired) in &round.status.gateway_classes {
            let Some(class) = self.stores.gateway_classes.get(&ObjectRef::new(name)) else {
                continue;
            };
            let current = to_json(&class.status);
            let status = gateway_class_status(desired, &current, now);
            let target = Target {
                kind: Kind::GatewayClass,
                namespace: None,
                name: name.clone(),
            };
            consider(
                self,
                target,
                class.resource_version(),
                current,
                Some(status),
            );
        }
        for ((ns, name), desired) in &round.status.gateways {
            let (target, rv, current, status) = if desired.kind == Kind::ProxyGateway.name() {
                let Some(gateway) = self
                    .stores
                    .proxy_gateways
                    .get(&ObjectRef::new(name).within(ns))
                else {
                    continue;
                };
                let current = to_json(&gateway.status);
                let status = proxy_gateway_status(desired, &current, now);
                let target = Target {
                    kind: Kind::ProxyGateway,
                    namespace: Some(ns.clone()),
                    name: name.clone(),
                };
                (target, gateway.resource_version(), current, status)
            } else {
                let Some(gateway) = self.stores.gateways.get(&ObjectRef::new(name).within(ns))
                else {
                    continue;
                };
                let current = to_json(&gateway.status);
                let status = gateway_status(desired, &self.addresses, &current, now);
                let target = Target {
                    kind: Kind::Gateway,
                    namespace: Some(ns.clone()),
                    name: name.clone(),
                };
                (target, gateway.resource_version(), current, status)
            };
            consider(self, target, rv, current, Some(status));
        }
        for route in self.stores.http_routes.state() {
            let target = object_target(Kind::HttpRoute, route.as_ref());
            let current = to_json(&route.status);
            let refs = serde_json::to_value(&route.spec.parent_refs).unwrap_or(Value::Null);
            let desired = round
                .status
                .routes
                .get(&(Kind::HttpRoute.name(), key(&target)));
            let status = route_status(desired, &refs, &current, now);
            consider(self, target, route.resource_version(), current, status);
        }
        for route in self.stores.grpc_routes.state() {
            let target = object_target(Kind::GrpcRoute, route.as_ref());
            let current = to_json(&route.status);
            let refs = serde_json::to_value(&route.spec.parent_refs).unwrap_or(Value::Null);
            let desired = round
                .status
                .routes
                .get(&(Kind::GrpcRoute.name(), key(&target)));
            let status = route_status(desired, &refs, &current, now);
            consider(self, target, route.resource_version(), current, status);
        }
        for route in self.stores.proxy_routes.state() {
            let target = object_target(Kind::ProxyRoute, route.as_ref());
            let current = to_json(&route.status);
            let desired = round
                .status
                .routes
                .get(&(Kind::ProxyRoute.name(), key(&target)));
            let status =
                desired.map(|d| proxy_route_status(d, &route.spec.parent_refs, &current, now));
            consider(self, target, route.resource_version(), current, status);
        }
        for ingress in self.stores.ingresses.state() {
            let target = object_target(Kind::Ingress, ingress.as_ref());
            // Another controller's Ingress: not ours to write.
            let Some(&served) = round.status.ingresses.get(&key(&target)) else {
                continue;
            };
            let current = to_json(&ingress.status);
            let status = ingress_status(&self.addresses, served, &current);
            consider(self, target, ingress.resource_version(), current, status);
        }
        // Objects that are gone, or no longer ours, need no memory of our writes.
        self.written.retain(|target, _| seen.contains(target));
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }

    /// Writes every changed status, then the Events. Returns `false` if something is to be
    /// tried again.
    async fn write(&mut self, round: &Round, leading: &watch::Receiver<bool>) -> bool {
        let now = Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_default());
        let patches = self.patches(round, &now);
        let client = &self.client;
        let results: Vec<(StatusPatch, Result<(), kube::Error>)> =
            futures_util::stream::iter(patches)
                .map(|patch| async move {
                    // A replica that lost the lead meanwhile leaves the rest to the new leader.
                    if !*leading.borrow() {
                        return (patch, Ok(()));
                    }
                    let result = apply(client, &patch).await;
                    (patch, result)
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
        let mut done = true;
        for (patch, result) in results {
            match result {
                Ok(()) => {
                    tracing::debug!(object = %patch.target, "status written");
                    self.written
                        .insert(patch.target, (patch.resource_version, patch.status));
                }
                // Deleted meanwhile: nothing to write.
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    tracing::warn!(object = %patch.target, error = %e, "cannot write the status");
                    done = false;
                }
            }
        }
        if !*leading.borrow() {
            return true;
        }
        self.events.publish(&round.problems).await && done
    }
}

fn object_target<K: Resource>(kind: Kind, object: &K) -> Target {
    Target {
        kind,
        namespace: object.meta().namespace.clone(),
        name: object.meta().name.clone().unwrap_or_default(),
    }
}

fn key(target: &Target) -> (String, String) {
    (
        target.namespace.clone().unwrap_or_default(),
        target.name.clone(),
    )
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Server-side applies the status of `patch`'s object.
async fn apply(client: &Client, patch: &StatusPatch) -> Result<(), kube::Error> {
    let target = &patch.target;
    let ns = target.namespace.as_deref().unwrap_or_default();
    let body = patch.body();
    match target.kind {
        Kind::GatewayClass => {
            patch_status::<GatewayClass>(Api::all(client.clone()), &target.name, &body).await
        }
        Kind::Gateway => {
            patch_status::<Gateway>(Api::namespaced(client.clone(), ns), &target.name, &body).await
        }
        Kind::HttpRoute => {
            patch_status::<HttpRoute>(Api::namespaced(client.clone(), ns), &target.name, &body)
                .await
        }
        Kind::GrpcRoute => {
            patch_status::<GrpcRoute>(Api::namespaced(client.clone(), ns), &target.name, &body)
                .await
        }
        Kind::Ingress => {
            patch_status::<Ingress>(Api::namespaced(client.clone(), ns), &target.name, &body).await
        }
        Kind::ProxyGateway => {
            patch_status::<ProxyGateway>(Api::namespaced(client.clone(), ns), &target.name, &body)
                .await
        }
        Kind::ProxyRoute => {
            patch_status::<ProxyRoute>(Api::namespaced(client.clone(), ns), &target.name, &body)
                .await
        }
    }
}

async fn patch_status<K>(api: Api<K>, name: &str, body: &Value) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + fmt::Debug,
{
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &Patch::Apply(body)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{RouteParentStatus, reasons, types};

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn accepted(status: bool) -> Condition {
        Condition::new(
            types::ACCEPTED,
            status,
            if status {
                reasons::ACCEPTED
            } else {
                reasons::NOT_ALLOWED_BY_LISTENERS
            },
            "",
        )
    }

    #[test]
    fn a_condition_keeps_its_time_while_its_status_holds() {
        let previous = conditions(
            &[accepted(true)],
            &[],
            Some(1),
            &time("2020-01-01T00:00:00Z"),
        );
        let mut changed_message = accepted(true);
        changed_message.message = "now with a message".into();
        let same = conditions(
            &[changed_message],
            &previous,
            Some(2),
            &time("2024-06-01T00:00:00Z"),
        );
        assert_eq!(same[0].last_transition_time, time("2020-01-01T00:00:00Z"));
        assert_eq!(same[0].observed_generation, Some(2));
        assert_eq!(same[0].message, "now with a message");
        let flipped = conditions(
            &[accepted(false)],
            &previous,
            Some(2),
            &time("2024-06-01T00:00:00Z"),
        );
        assert_eq!(
            flipped[0].last_transition_time,
            time("2024-06-01T00:00:00Z")
        );
        assert_eq!(flipped[0].status, "False");
        assert_eq!(flipped[0].reason, "NotAllowedByListeners");
    }

    #[test]
    fn route_parents_of_other_controllers_are_kept_and_stale_ones_of_ours_dropped() {
        let current = json!({"parents": [
            {"controllerName": "example.com/other", "parentRef": {"name": "theirs"},
             "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                             "message": "", "lastTransitionTime": "2019-01-01T00:00:00Z"}]},
            {"controllerName": GATEWAY_CONTROLLER_NAME, "parentRef": {"name": "gone"},
             "conditions": []},
        ]});
        let refs = json!([{"name": "theirs"}, {"name": "web", "sectionName": "http"}]);
        let desired = RouteStatus {
            generation: Some(3),
            parents: vec![RouteParentStatus {
                index: 1,
                parent: "shop/web/http".into(),
                conditions: vec![accepted(true)],
            }],
        };
        let now = time("2024-06-01T00:00:00Z");
        let status = route_status(Some(&desired), &refs, &current, &now).unwrap();
        let parents = status["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 2, "{status:#}");
        assert_eq!(parents[0], current["parents"][0]);
        assert_eq!(parents[1]["controllerName"], GATEWAY_CONTROLLER_NAME);
        assert_eq!(
            parents[1]["parentRef"],
            json!({"name": "web", "sectionName": "http"})
        );
        assert_eq!(parents[1]["conditions"][0]["observedGeneration"], 3);
        assert_eq!(
            parents[1]["conditions"][0]["lastTransitionTime"],
            "2024-06-01T00:00:00Z"
        );

        // Not ours any more: our entries go, theirs stay.
        let status = route_status(None, &refs, &current, &now).unwrap();
        assert_eq!(status["parents"], json!([current["parents"][0]]));
        // Never ours: nothing to write.
        let theirs = json!({"parents": [current["parents"][0]]});
        assert_eq!(route_status(None, &refs, &theirs, &now), None);
    }

    #[test]
    fn an_unchanged_status_is_not_written_again() {
        let desired = GatewayStatus {
            kind: "Gateway",
            generation: Some(1),
            conditions: vec![accepted(true)],
            listeners: vec![ListenerStatus {
                name: "http".into(),
                supported_kinds: vec!["HTTPRoute", "GRPCRoute"],
                attached_routes: 2,
                conditions: vec![accepted(true)],
            }],
        };
        let first = gateway_status(&desired, &[], &Value::Null, &time("2020-01-01T00:00:00Z"));
        assert_eq!(
            first["listeners"][0]["supportedKinds"],
            json!([
                {"group": GATEWAY_GROUP, "kind": "HTTPRoute"},
                {"group": GATEWAY_GROUP, "kind": "GRPCRoute"}
            ])
        );
        assert_eq!(first["listeners"][0]["attachedRoutes"], 2);
        assert!(first.get("addresses").is_none(), "{first:#}");
        // The API server adds fields of its own (here `attachedListenerSets`).
        let mut stored = first.clone();
        stored["attachedListenerSets"] = json!(0);
        let again = gateway_status(&desired, &[], &stored, &time("2024-06-01T00:00:00Z"));
        assert!(!differs(&again, &stored), "{again:#} vs {stored:#}");
        let mut more = desired.clone();
        more.listeners[0].attached_routes = 3;
        let changed = gateway_status(&more, &[], &stored, &time("2024-06-01T00:00:00Z"));
        assert!(differs(&changed, &stored));
        assert_eq!(changed["conditions"], first["conditions"]);
    }

    fn addresses() -> Vec<PublishAddress> {
        vec![
            "192.0.2.10".parse().unwrap(),
            "lb.example.com".parse().unwrap(),
        ]
    }

    #[test]
    fn an_accepted_gateway_lists_the_addresses_and_one_not_accepted_clears_them() {
        let mut desired = GatewayStatus {
            kind: "Gateway",
            generation: Some(1),
            conditions: vec![accepted(true)],
            listeners: Vec::new(),
        };
        let now = time("2024-06-01T00:00:00Z");
        let status = gateway_status(&desired, &addresses(), &Value::Null, &now);
        assert_eq!(
            status["addresses"],
            json!([
                {"type": "IPAddress", "value": "192.0.2.10"},
                {"type": "Hostname", "value": "lb.example.com"}
            ])
        );
        // Rejected: the entries are removed, once.
        desired.conditions = vec![accepted(false)];
        let cleared = gateway_status(&desired, &addresses(), &status, &now);
        assert_eq!(cleared["addresses"], json!([]));
        let again = gateway_status(&desired, &addresses(), &cleared, &now);
        assert!(again.get("addresses").is_none(), "{again:#}");
        // Accepted again, but no addresses to publish: the same.
        desired.conditions = vec![accepted(true)];
        assert_eq!(
            gateway_status(&desired, &[], &status, &now)["addresses"],
            json!([])
        );
    }

    #[test]
    fn a_served_ingress_lists_the_addresses_and_an_unserved_one_clears_them() {
        let written = ingress_status(&addresses(), true, &Value::Null).unwrap();
        assert_eq!(
            written,
            json!({"loadBalancer": {"ingress": [
                {"ip": "192.0.2.10"},
                {"hostname": "lb.example.com"}
            ]}})
        );
        assert!(!differs(
            &ingress_status(&addresses(), true, &written).unwrap(),
            &written
        ));
        // Someone else's port list is replaced: the list is ours for an Ingress we serve.
        let mut theirs = written.clone();
        theirs["loadBalancer"]["ingress"][0]["ports"] = json!([{"port": 80, "protocol": "TCP"}]);
        assert!(differs(
            &ingress_status(&addresses(), true, &theirs).unwrap(),
            &theirs
        ));
        let cleared = ingress_status(&addresses(), false, &written).unwrap();
        assert_eq!(cleared, json!({"loadBalancer": {"ingress": []}}));
        assert_eq!(ingress_status(&[], true, &written), Some(cleared.clone()));
        assert_eq!(ingress_status(&[], true, &cleared), None);
        assert_eq!(ingress_status(&addresses(), false, &Value::Null), None);
        assert_eq!(
            ingress_status(&[], true, &json!({"loadBalancer": {}})),
            None
        );
    }

    #[test]
    fn proxy_route_parents_keep_their_times_by_reference() {
        let refs: Vec<ParentRef> = serde_json::from_value(json!([
            {"name": "edge", "sectionName": "http"},
            {"name": "gone"}
        ]))
        .unwrap();
        let current = json!({"observedGeneration": 1, "parents": [
            {"parentRef": {"name": "edge", "sectionName": "http"},
             "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                             "message": "", "observedGeneration": 1,
                             "lastTransitionTime": "2020-01-01T00:00:00Z"}]}
        ]});
        let desired = RouteStatus {
            generation: Some(2),
            parents: vec![
                RouteParentStatus {
                    index: 0,
                    parent: "ProxyGateway shop/edge section http".into(),
                    conditions: vec![accepted(true)],
                },
                RouteParentStatus {
                    index: 1,
                    parent: "ProxyGateway shop/gone".into(),
                    conditions: vec![accepted(false)],
                },
                // Not in the spec any more.
                RouteParentStatus {
                    index: 2,
                    parent: "ProxyGateway shop/other".into(),
                    conditions: vec![accepted(true)],
                },
            ],
        };
        let now = time("2024-06-01T00:00:00Z");
        let status = proxy_route_status(&desired, &refs, &current, &now);
        assert_eq!(status["observedGeneration"], 2);
        let parents = status["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 2, "{status:#}");
        assert_eq!(
            parents[0]["parentRef"],
            json!({"name": "edge", "sectionName": "http"})
        );
        assert_eq!(
            parents[0]["conditions"][0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
        assert_eq!(parents[0]["conditions"][0]["observedGeneration"], 2);
        assert_eq!(parents[1]["parentRef"], json!({"name": "gone"}));
        assert_eq!(parents[1]["conditions"][0]["status"], "False");
        assert_eq!(
            parents[1]["conditions"][0]["lastTransitionTime"],
            "2024-06-01T00:00:00Z"
        );
    }
}
