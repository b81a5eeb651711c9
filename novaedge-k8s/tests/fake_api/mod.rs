//! A fake Kubernetes API server for the controller's tests: objects as JSON in memory, with the
//! parts of the API the controller uses: list (label and field selectors, pages), watch (from a
//! resource version, streamed), get, create (with `generateName`), replace (with
//! `resourceVersion` preconditions: `409 Conflict`), server-side apply of `status` (the fields
//! sent replace the object's), and delete. Every request is recorded with the client that made
//! it (`tag`).
//!
//! It is served over HTTP on 127.0.0.1 ([`FakeApi::serve`]) or called in memory
//! ([`FakeApi::client`], for tests on tokio's paused clock).

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::watch;

/// `apiVersion/plural` → (kind, namespaced).
const RESOURCES: &[(&str, &str, &str, bool)] = &[
    (
        "gateway.networking.k8s.io/v1",
        "gatewayclasses",
        "GatewayClass",
        false,
    ),
    ("gateway.networking.k8s.io/v1", "gateways", "Gateway", true),
    (
        "gateway.networking.k8s.io/v1",
        "httproutes",
        "HTTPRoute",
        true,
    ),
    (
        "gateway.networking.k8s.io/v1",
        "grpcroutes",
        "GRPCRoute",
        true,
    ),
    (
        "gateway.networking.k8s.io/v1",
        "referencegrants",
        "ReferenceGrant",
        true,
    ),
    (
        "gateway.networking.k8s.io/v1",
        "backendtlspolicies",
        "BackendTLSPolicy",
        true,
    ),
    ("v1", "services", "Service", true),
    ("v1", "secrets", "Secret", true),
    ("v1", "configmaps", "ConfigMap", true),
    ("v1", "nodes", "Node", false),
    (
        "discovery.k8s.io/v1",
        "endpointslices",
        "EndpointSlice",
        true,
    ),
    ("networking.k8s.io/v1", "ingresses", "Ingress", true),
    (
        "networking.k8s.io/v1",
        "ingressclasses",
        "IngressClass",
        false,
    ),
    ("novaedge.io/v1alpha1", "proxypolicies", "ProxyPolicy", true),
    (
        "novaedge.io/v1alpha1",
        "proxygateways",
        "ProxyGateway",
        true,
    ),
    ("novaedge.io/v1alpha1", "proxyroutes", "ProxyRoute", true),
    (
        "novaedge.io/v1alpha1",
        "proxybackends",
        "ProxyBackend",
        true,
    ),
    ("novaedge.io/v1alpha1", "proxyvips", "ProxyVIP", true),
    ("coordination.k8s.io/v1", "leases", "Lease", true),
    ("events.k8s.io/v1", "events", "Event", true),
];

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub tag: String,
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// `apiVersion/plural` of resources that answer 404, as a CRD that is not installed.
    absent: Vec<String>,
    /// (`apiVersion/plural`, namespace, name) → object.
    objects: BTreeMap<(String, String, String), Value>,
    /// (rv, `apiVersion/plural`, type, object).
    log: Vec<(u64, String, &'static str, Value)>,
    requests: Vec<Recorded>,
    names: u64,
    /// Clients (tags) whose requests all fail with `503`, as if the API server were unreachable.
    cut_off: Vec<String>,
    /// `apiVersion/plural` of resources whose requests fail with `503`.
    unavailable: Vec<String>,
}

#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    changed: Arc<watch::Sender<u64>>,
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed_unsync()
}

fn respond(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(full(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn failure(code: StatusCode, reason: &str, message: String) -> Response<Body> {
    respond(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason,
            "code": code.as_u16(),
        }),
    )
}

/// `apiVersion` and `plural` of a path, the namespace and name it names, and a subresource.
struct Target {
    resource: String,
    kind: &'static str,
    namespaced: bool,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// (`apiVersion/plural`, namespace, name) of a stored object.
type Key = (String, String, String);

/// The key of `target`'s object `name` and the object, or `404 Not Found`.
fn stored(state: &State, target: &Target, name: &str) -> Result<(Key, Value), Box<Response<Body>>> {
    let key = (
        target.resource.clone(),
        target.namespace.clone().unwrap_or_default(),
        name.to_owned(),
    );
    match state.objects.get(&key).cloned() {
        Some(object) => Ok((key, object)),
        None => Err(Box::new(failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{name:?} not found"),
        ))),
    }
}

/// `409 Conflict`: a resourceVersion precondition failed.
fn conflict(target: &Target, name: &str) -> Response<Body> {
    failure(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} {name:?}: the object has been modified",
            target.kind
        ),
    )
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("v1".to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        rest => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some((*name).to_owned()), None),
        [plural, name, sub] => (*plural, Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return None,
    };
    let &(_, _, kind, namespaced) = RESOURCES
        .iter()
        .find(|(v, p, _, _)| *v == api_version && *p == plural)?;
    Some(Target {
        resource: format!("{api_version}/{plural}"),
        kind,
        namespaced,
        namespace,
        name,
        subresource,
    })
}

fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Whether `object` matches a label selector of `key` and `key=value` terms.
fn labels_match(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    let labels = &object["metadata"]["labels"];
    selector.split(',').all(|term| match term.split_once('=') {
        Some((k, v)) => labels[k.trim()].as_str() == Some(v.trim()),
        None => labels.get(term.trim()).is_some(),
    })
}

/// Whether `object` matches a field selector of `path=value` terms (`type`, `metadata.name`).
fn fields_match(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| {
        let Some((path, value)) = term.split_once('=') else {
            return false;
        };
        let pointer = format!("/{}", path.trim().replace('.', "/"));
        object.pointer(&pointer).and_then(Value::as_str) == Some(value.trim())
    })
}

fn api_version_of(resource: &str) -> &str {
    resource.rsplit_once('/').map_or("", |(v, _)| v)
}

impl FakeApi {
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            changed: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Answers 404 for `api_version/plural`, as for a CRD that is not installed.
    pub fn without(self, resource: &str) -> Self {
        self.state.lock().unwrap().absent.push(resource.to_owned());
        self
    }

    /// Creates or updates an object (a full manifest with apiVersion and kind) as a user would:
    /// the generation grows when the spec changes.
    pub fn apply(&self, mut object: Value) {
        let api_version = object["apiVersion"].as_str().unwrap().to_owned();
        let kind = object["kind"].as_str().unwrap().to_owned();
        let &(_, plural, _, namespaced) = RESOURCES
            .iter()
            .find(|(v, _, k, _)| *v == api_version && *k == kind)
            .unwrap_or_else(|| panic!("unknown kind {api_version} {kind}"));
        if namespaced && object["metadata"]["namespace"].is_null() {
            object["metadata"]["namespace"] = json!("default");
        }
        let resource = format!("{api_version}/{plural}");
        let mut state = self.state.lock().unwrap();
        let key = (
            resource.clone(),
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            object["metadata"]["name"].as_str().unwrap().to_owned(),
        );
        let event = match state.objects.get(&key) {
            Some(old) => {
                let old_generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                let generation = if old["spec"] != object["spec"] {
                    old_generation + 1
                } else {
                    old_generation
                };
                object["metadata"]["generation"] = json!(generation);
                object["metadata"]["uid"] = old["metadata"]["uid"].clone();
                object["metadata"]["creationTimestamp"] =
                    old["metadata"]["creationTimestamp"].clone();
                if object.get("status").is_none() && old.get("status").is_some() {
                    object["status"] = old["status"].clone();
                }
                "MODIFIED"
            }
            None => {
                if object["metadata"]["generation"].is_null() {
                    object["metadata"]["generation"] = json!(1);
                }
                "ADDED"
            }
        };
        Self::store(&mut state, &resource, key, object, event);
        drop(state);
        self.changed.send_modify(|g| *g += 1);
    }

    /// Every request of `tag` fails with `503 Service Unavailable` (or works again).
    pub fn cut_off(&self, tag: &str, cut: bool) {
        let mut state = self.state.lock().unwrap();
        state.cut_off.retain(|t| t != tag);
        if cut {
            state.cut_off.push(tag.to_owned());
        }
    }

    /// Every request for `api_version/plural` fails with `503` (or works again).
    pub fn unavailable(&self, resource: &str, unavailable: bool) {
        let mut state = self.state.lock().unwrap();
        state.unavailable.retain(|r| r != resource);
        if unavailable {
            state.unavailable.push(resource.to_owned());
        }
    }

    /// Deletes an object as a user would: one with finalizers only gets a
    /// `deletionTimestamp`, and goes once its finalizers are removed.
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) {
        let mut state = self.state.lock().unwrap();
        let key = (resource.to_owned(), namespace.to_owned(), name.to_owned());
        let mut object = state.objects.get(&key).cloned().expect("no such object");
        let finalized = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if finalized {
            object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            Self::store(&mut state, resource, key, object, "MODIFIED");
        } else {
            Self::remove(&mut state, resource, &key);
        }
        drop(state);
        self.changed.send_modify(|g| *g += 1);
    }

    fn remove(state: &mut State, resource: &str, key: &(String, String, String)) {
        if let Some(object) = state.objects.remove(key) {
            state.rv += 1;
            let rv = state.rv;
            state.log.push((rv, resource.to_owned(), "DELETED", object));
        }
    }

    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let state = self.state.lock().unwrap();
        state
            .objects
            .get(&(resource.to_owned(), namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Stamps `object` with a new resourceVersion (and uid and creation time if it has none),
    /// keeps it and logs the event.
    fn store(
        state: &mut State,
        resource: &str,
        key: (String, String, String),
        mut object: Value,
        event: &'static str,
    ) -> Value {
        state.rv += 1;
        let rv = state.rv;
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = json!(rv.to_string());
        if meta["uid"].is_null() {
            meta["uid"] = json!(format!("uid-{rv}"));
        }
        if meta["creationTimestamp"].is_null() {
            meta["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
        }
        state.objects.insert(key, object.clone());
        state
            .log
            .push((rv, resource.to_owned(), event, object.clone()));
        object
    }

    /// Serves the API on 127.0.0.1; requests are recorded with `tag`.
    pub async fn serve(&self, tag: &str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = self.clone();
        let tag = tag.to_owned();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let fake = fake.clone();
                let tag = tag.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let fake = fake.clone();
                            let tag = tag.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                Ok::<_, Infallible>(
                                    fake.handle(&tag, Request::from_parts(parts, body)),
                                )
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    /// A client of the API served over 127.0.0.1, whose requests are recorded with `tag`.
    pub async fn client_over_tcp(&self, tag: &str) -> kube::Client {
        let addr = self.serve(tag).await;
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// A client that calls the fake in memory (no socket: for tokio's paused clock).
    pub fn client(&self, tag: &str) -> kube::Client {
        let fake = self.clone();
        let tag = tag.to_owned();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let fake = fake.clone();
            let tag = tag.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                Ok::<_, Infallible>(fake.handle(&tag, Request::from_parts(parts, body)))
            }
        });
        kube::Client::new(service, "default")
    }

    fn handle(&self, tag: &str, req: Request<Bytes>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let query = parse_query(req.uri().query());
        let body: Value = if req.body().is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(req.body()).unwrap_or(Value::Null)
        };
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.state.lock().unwrap().requests.push(Recorded {
            tag: tag.to_owned(),
            method: req.method().clone(),
            path: path.clone(),
            query: query.clone(),
            content_type,
            body: body.clone(),
        });
        if self.state.lock().unwrap().cut_off.iter().any(|t| t == tag) {
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "cut off by the test".into(),
            );
        }
        let Some(target) = parse_path(&path) else {
            return failure(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{path}: no such path"),
            );
        };
        if self
            .state
            .lock()
            .unwrap()
            .unavailable
            .contains(&target.resource)
        {
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "unavailable by the test".into(),
            );
        }
        if self.state.lock().unwrap().absent.contains(&target.resource) {
            return failure(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource".into(),
            );
        }
        match (req.method().clone(), &target.name) {
            (Method::GET, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                self.watch(&target, &query)
            }
            (Method::GET, None) => self.list(&target, &query),
            (Method::GET, Some(name)) => match self.get(
                &target.resource,
                target.namespace.as_deref().unwrap_or_default(),
                name,
            ) {
                Some(object) => respond(StatusCode::OK, &object),
                None => failure(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{} {name:?} not found", target.kind),
                ),
            },
            (Method::POST, None) => self.create(&target, body),
            (Method::PUT, Some(name)) => self.replace(&target, name, body),
            (Method::PATCH, Some(name)) if target.subresource.as_deref() == Some("status") => {
                self.apply_status(&target, name, &body)
            }
            (Method::PATCH, Some(name))
                if target.subresource.is_none()
                    && req
                        .headers()
                        .get("content-type")
                        .is_some_and(|c| c == "application/merge-patch+json") =>
            {
                self.merge_metadata(&target, name, &body)
            }
            (method, _) => failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} {path} is not faked"),
            ),
        }
    }

    fn list(&self, target: &Target, query: &BTreeMap<String, String>) -> Response<Body> {
        let state = self.state.lock().unwrap();
        let items: Vec<Value> = state
            .objects
            .iter()
            .filter(|((resource, ns, _), object)| {
                *resource == target.resource
                    && target.namespace.as_ref().is_none_or(|want| want == ns)
                    && labels_match(object, query.get("labelSelector"))
                    && fields_match(object, query.get("fieldSelector"))
            })
            .map(|(_, object)| object.clone())
            .collect();
        let offset: usize = query
            .get("continue")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let limit: usize = query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let page: Vec<Value> = items.iter().skip(offset).take(limit).cloned().collect();
        let mut metadata = json!({ "resourceVersion": state.rv.to_string() });
        if offset.saturating_add(limit) < items.len() {
            metadata["continue"] = json!((offset + limit).to_string());
        }
        respond(
            StatusCode::OK,
            &json!({
                "apiVersion": api_version_of(&target.resource),
                "kind": format!("{}List", target.kind),
                "metadata": metadata,
                "items": page,
            }),
        )
    }

    fn watch(&self, target: &Target, query: &BTreeMap<String, String>) -> Response<Body> {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        let resource = target.resource.clone();
        let namespace = target.namespace.clone();
        let labels = query.get("labelSelector").cloned();
        let fields = query.get("fieldSelector").cloned();
        let state = self.state.clone();
        let changed = self.changed.subscribe();
        let events =
            futures_util::stream::unfold((from, changed), move |(mut cursor, mut changed)| {
                let state = state.clone();
                let resource = resource.clone();
                let namespace = namespace.clone();
                let labels = labels.clone();
                let fields = fields.clone();
                async move {
                    loop {
                        let mut lines = Vec::new();
                        {
                            let state = state.lock().unwrap();
                            for (rv, r, kind, object) in &state.log {
                                if *rv <= cursor || *r != resource {
                                    continue;
                                }
                                cursor = *rv;
                                let ns =
                                    object["metadata"]["namespace"].as_str().unwrap_or_default();
                                if namespace.as_deref().is_some_and(|want| want != ns)
                                    || !labels_match(object, labels.as_ref())
                                    || !fields_match(object, fields.as_ref())
                                {
                                    continue;
                                }
                                let mut line =
                                    serde_json::to_vec(&json!({ "type": kind, "object": object }))
                                        .unwrap();
                                line.push(b'\n');
                                lines.extend(line);
                            }
                        }
                        if !lines.is_empty() {
                            let frame = Ok::<_, Infallible>(Frame::data(Bytes::from(lines)));
                            return Some((frame, (cursor, changed)));
                        }
                        changed.changed().await.ok()?;
                    }
                }
            });
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(BodyExt::boxed_unsync(StreamBody::new(events.boxed())))
            .unwrap()
    }

    fn create(&self, target: &Target, mut object: Value) -> Response<Body> {
        let mut state = self.state.lock().unwrap();
        if target.namespaced {
            object["metadata"]["namespace"] = json!(target.namespace.clone().unwrap_or_default());
        }
        if object["metadata"]["name"].is_null() {
            let Some(prefix) = object["metadata"]["generateName"]
                .as_str()
                .map(str::to_owned)
            else {
                return failure(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "no name".into(),
                );
            };
            state.names += 1;
            object["metadata"]["name"] = json!(format!("{prefix}{:05}", state.names));
        }
        let key = (
            target.resource.clone(),
            target.namespace.clone().unwrap_or_default(),
            object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        if state.objects.contains_key(&key) {
            return failure(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{} {:?} already exists", target.kind, key.2),
            );
        }
        object["metadata"]["generation"] = json!(1);
        let stored = Self::store(&mut state, &target.resource, key, object, "ADDED");
        drop(state);
        self.changed.send_modify(|g| *g += 1);
        respond(StatusCode::CREATED, &stored)
    }

    fn replace(&self, target: &Target, name: &str, object: Value) -> Response<Body> {
        let mut state = self.state.lock().unwrap();
        let (key, old) = match stored(&state, target, name) {
            Ok(found) => found,
            Err(response) => return *response,
        };
        let precondition = object["metadata"]["resourceVersion"].as_str();
        if precondition.is_some_and(|rv| Some(rv) != old["metadata"]["resourceVersion"].as_str()) {
            return conflict(target, name);
        }
        let mut object = object;
        object["metadata"]["uid"] = old["metadata"]["uid"].clone();
        object["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1)
            + i64::from(old["spec"] != object["spec"]);
        object["metadata"]["generation"] = json!(generation);
        let stored = Self::store(&mut state, &target.resource, key, object, "MODIFIED");
        drop(state);
        self.changed.send_modify(|g| *g += 1);
        respond(StatusCode::OK, &stored)
    }

    /// A JSON merge patch of `metadata.finalizers` and labels, with `metadata.resourceVersion`
    /// as a precondition, as the API server takes it; an object being deleted whose last
    /// finalizer goes is deleted.
    fn merge_metadata(&self, target: &Target, name: &str, body: &Value) -> Response<Body> {
        let mut state = self.state.lock().unwrap();
        let (key, mut object) = match stored(&state, target, name) {
            Ok(found) => found,
            Err(response) => return *response,
        };
        let patch = &body["metadata"];
        if let Some(rv) = patch["resourceVersion"].as_str()
            && Some(rv) != object["metadata"]["resourceVersion"].as_str()
        {
            return conflict(target, name);
        }
        for field in ["finalizers", "labels"] {
            if !patch[field].is_null() {
                object["metadata"][field] = patch[field].clone();
            }
        }
        let gone = !object["metadata"]["deletionTimestamp"].is_null()
            && object["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty);
        let stored = if gone {
            Self::remove(&mut state, &target.resource, &key);
            object
        } else {
            Self::store(&mut state, &target.resource, key, object, "MODIFIED")
        };
        drop(state);
        self.changed.send_modify(|g| *g += 1);
        respond(StatusCode::OK, &stored)
    }

    fn apply_status(&self, target: &Target, name: &str, body: &Value) -> Response<Body> {
        let mut state = self.state.lock().unwrap();
        let (key, mut object) = match stored(&state, target, name) {
            Ok(found) => found,
            Err(response) => return *response,
        };
        if !object["status"].is_object() {
            object["status"] = json!({});
        }
        if let Some(fields) = body["status"].as_object() {
            for (k, v) in fields {
                object["status"][k] = v.clone();
            }
        }
        let stored = Self::store(&mut state, &target.resource, key, object, "MODIFIED");
        drop(state);
        self.changed.send_modify(|g| *g += 1);
        respond(StatusCode::OK, &stored)
    }
}
