//! Kubernetes Events (`events.k8s.io/v1`) for translation errors, so that `kubectl describe`
//! on the object shows why it is not served, and for snapshots an agent refused (on the Node).
//!
//! An error becomes one Event when it first appears (while this replica leads); it is not
//! repeated on every rebuild while it lasts. Once it is gone, its return is a new Event.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use gateway_api::backendtlspolicies::BackendTlsPolicy;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::httproutes::HttpRoute;
use gateway_api::referencegrants::ReferenceGrant;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client, Resource};

use crate::diagnostics::Diagnostic;
use crate::objects::{Object, Sourced};
use crate::policy::ProxyPolicy;
use crate::translate::GATEWAY_CONTROLLER_NAME;

/// The `reason` of Events for translation errors.
pub(super) const REASON: &str = "InvalidConfiguration";
/// The `action` of Events for translation errors.
pub(super) const ACTION: &str = "Translate";
/// At most this many Events are created in one go; the rest follow a moment later.
const BURST: usize = 20;
/// The API server refuses longer notes.
pub(super) const NOTE_MAX: usize = 1024;

/// An error about an object, as an Event will say it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Problem {
    /// `(apiVersion, kind, namespace, name, uid)` of the object.
    pub(super) regarding: (String, String, Option<String>, String, Option<String>),
    pub(super) note: String,
    /// The Event's `reason` and `action`.
    pub(super) reason: &'static str,
    pub(super) action: &'static str,
}

impl Problem {
    fn reference(&self) -> ObjectReference {
        let (api_version, kind, namespace, name, uid) = self.regarding.clone();
        ObjectReference {
            api_version: Some(api_version),
            kind: Some(kind),
            namespace,
            name: Some(name),
            uid,
            ..ObjectReference::default()
        }
    }
}

/// The problems among `diagnostics` that name one of `objects` (others, such as a Secret
/// that could not be converted at all, are only logged).
pub(super) fn problems<'a>(
    objects: &[Sourced],
    diagnostics: impl Iterator<Item = &'a Diagnostic>,
) -> Vec<Problem> {
    let by_name: HashMap<String, &Object> = objects
        .iter()
        .map(|o| (o.object.describe(), &o.object))
        .collect();
    let mut out = BTreeSet::new();
    for d in diagnostics {
        let Some(object) = by_name.get(&d.object) else {
            continue;
        };
        let meta = object.metadata();
        let mut note = if d.field.is_empty() {
            d.message.clone()
        } else {
            format!("{}: {}", d.field, d.message)
        };
        truncate(&mut note, NOTE_MAX);
        out.insert(Problem {
            reason: REASON,
            action: ACTION,
            regarding: (
                api_version(object),
                object.kind().to_owned(),
                object.is_namespaced().then(|| {
                    meta.namespace
                        .clone()
                        .unwrap_or_else(|| "default".to_owned())
                }),
                meta.name.clone().unwrap_or_default(),
                meta.uid.clone(),
            ),
            note,
        });
    }
    out.into_iter().collect()
}

/// Cuts `text` to at most `max` bytes, on a character boundary, marking the cut.
pub(super) fn truncate(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
}

fn api_version(object: &Object) -> String {
    fn of<K: Resource<DynamicType = ()>>() -> String {
        K::api_version(&()).into_owned()
    }
    match object {
        Object::GatewayClass(_) => of::<GatewayClass>(),
        Object::Gateway(_) => of::<Gateway>(),
        Object::HttpRoute(_) => of::<HttpRoute>(),
        Object::GrpcRoute(_) => of::<GrpcRoute>(),
        Object::Service(_) => of::<Service>(),
        Object::EndpointSlice(_) => of::<EndpointSlice>(),
        Object::ProxyPolicy(_) => of::<ProxyPolicy>(),
        Object::Secret(_) => "v1".to_owned(),
        Object::ConfigMap(_) => of::<ConfigMap>(),
        Object::BackendTlsPolicy(_) => of::<BackendTlsPolicy>(),
        Object::ReferenceGrant(_) => of::<ReferenceGrant>(),
        Object::Ingress(_) => of::<Ingress>(),
        Object::IngressClass(_) => of::<IngressClass>(),
        Object::Namespace(_) | Object::Node(_) => "v1".to_owned(),
        Object::ProxyGateway(_)
        | Object::ProxyRoute(_)
        | Object::ProxyBackend(_)
        | Object::ProxyVip(_) => crate::crd::API_VERSION.to_owned(),
    }
}

/// Creates the Events, each once while its problem lasts.
pub(super) struct Events {
    client: Client,
    identity: String,
    published: BTreeSet<Problem>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("identity", &self.identity)
            .field("published", &self.published.len())
            .finish_non_exhaustive()
    }
}

impl Events {
    pub(super) fn new(client: Client, identity: &str) -> Self {
        Self {
            client,
            identity: identity.to_owned(),
            published: BTreeSet::new(),
        }
    }

    /// Forgets what was published (on losing the lead: the next leader starts afresh).
    pub(super) fn forget(&mut self) {
        self.published.clear();
    }

    /// Creates an Event for each problem not published yet. Returns `false` if some are left
    /// for later (a burst limit, or a failure).
    pub(super) async fn publish(&mut self, problems: &[Problem]) -> bool {
        let current: BTreeSet<&Problem> = problems.iter().collect();
        self.published.retain(|p| current.contains(p));
        let new: Vec<&Problem> = problems
            .iter()
            .filter(|p| !self.published.contains(*p))
            .collect();
        let mut done = new.len() <= BURST;
        let mut apis: BTreeMap<String, Api<Event>> = BTreeMap::new();
        for problem in new.into_iter().take(BURST) {
            let reference = problem.reference();
            // Cluster-scoped objects' Events go to `default`, as kubectl looks for them there.
            let namespace = reference
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned());
            let api = apis
                .entry(namespace.clone())
                .or_insert_with(|| Api::namespaced(self.client.clone(), &namespace));
            let event = Event {
                metadata: ObjectMeta {
                    generate_name: Some(format!(
                        "{}.",
                        reference.name.as_deref().unwrap_or("novaedge")
                    )),
                    namespace: Some(namespace),
                    ..ObjectMeta::default()
                },
                event_time: Some(MicroTime(Timestamp::now())),
                type_: Some("Warning".to_owned()),
                reason: Some(problem.reason.to_owned()),
                action: Some(problem.action.to_owned()),
                note: Some(problem.note.clone()),
                regarding: Some(reference),
                reporting_controller: Some(GATEWAY_CONTROLLER_NAME.to_owned()),
                reporting_instance: Some(self.identity.clone()),
                ..Event::default()
            };
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => {
                    self.published.insert(problem.clone());
                }
                Err(e) => {
                    tracing::warn!(
                        object = %format!("{} {}", problem.regarding.1, problem.regarding.3),
                        error = %e,
                        "cannot create an Event"
                    );
                    done = false;
                }
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_on_a_character_boundary() {
        let mut note = "é".repeat(600);
        truncate(&mut note, NOTE_MAX);
        assert!(note.len() <= NOTE_MAX, "{}", note.len());
        assert!(note.ends_with('…'));
        let mut short = "fine".to_owned();
        truncate(&mut short, NOTE_MAX);
        assert_eq!(short, "fine");
    }

    #[test]
    fn problems_name_the_object_and_the_field() {
        let (objects, _) = crate::objects::parse_yaml(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: web, namespace: shop, uid: u-1}\nspec: {}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n\
             metadata: {name: novaedge}\nspec: {controllerName: novaedge.io/gateway-controller}\n",
            None,
        );
        let diagnostics = [
            Diagnostic::error(
                "HTTPRoute shop/web",
                "spec.rules[0].matches[0].path.value",
                "not a valid regular expression",
            ),
            Diagnostic::error("GatewayClass novaedge", "", "broken"),
            Diagnostic::error("translated listener x", "port", "internal"),
        ];
        let problems = problems(&objects, diagnostics.iter());
        assert_eq!(problems.len(), 2, "{problems:?}");
        let route = problems
            .iter()
            .find(|p| p.regarding.1 == "HTTPRoute")
            .unwrap();
        assert_eq!(
            route.regarding,
            (
                "gateway.networking.k8s.io/v1".to_owned(),
                "HTTPRoute".to_owned(),
                Some("shop".to_owned()),
                "web".to_owned(),
                Some("u-1".to_owned())
            )
        );
        assert_eq!(
            route.note,
            "spec.rules[0].matches[0].path.value: not a valid regular expression"
        );
        let class = problems
            .iter()
            .find(|p| p.regarding.1 == "GatewayClass")
            .unwrap();
        assert_eq!(class.regarding.2, None);
        assert_eq!(class.note, "broken");
    }
}
