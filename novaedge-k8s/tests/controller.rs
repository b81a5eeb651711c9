//! The Kubernetes API source of the controller against a fake API server (`fake_api`): watch
//! events reach a subscribed agent as snapshots; the status patches and Events sent for
//! accepted and rejected routes; leader election and its handover.

mod fake_api;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_api::{FakeApi, Recorded};
use http::Method;
use novaedge_k8s::controller::{Controller, ControllerConfig, Elector, LeaseConfig};
use novaedge_snapshot::ConfigSnapshot;
use novaedge_snapshot::distribution::{
    Applier, Authorize, Backoff, Publisher, PublisherConfig, Subscriber, SubscriberConfig,
};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Endpoint, Server};

const LEASES: &str = "coordination.k8s.io/v1/leases";
const ROUTES: &str = "gateway.networking.k8s.io/v1/httproutes";
const OURS: &str = "novaedge.io/gateway-controller";

// === objects ===

fn gateway_class() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "novaedge"},
        "spec": {"controllerName": OURS}
    })
}

fn gateway() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "gatewayClassName": "novaedge",
            "listeners": [{"name": "http", "protocol": "HTTP", "port": 8080}]
        }
    })
}

fn service(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 80}]}
    })
}

fn endpoint_slice(name: &str, service: Option<&str>, address: &str) -> Value {
    let mut labels = json!({});
    if let Some(service) = service {
        labels["kubernetes.io/service-name"] = json!(service);
    }
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "shop", "labels": labels},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 9000}]
    })
}

fn route(name: &str, backend: &str, hostname: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "parentRefs": [{"name": "web"}],
            "hostnames": [hostname],
            "rules": [{"backendRefs": [{"name": backend, "port": 80}]}]
        }
    })
}

/// A Gateway with its class, the Service `app` with one endpoint, slices of other Services
/// (and one without the label, which the controller must not ask for), and an Opaque Secret.
fn seed(fake: &FakeApi) {
    fake.apply(gateway_class());
    fake.apply(gateway());
    fake.apply(service("app"));
    fake.apply(endpoint_slice("app-1", Some("app"), "127.0.0.1"));
    for i in 0..3 {
        fake.apply(endpoint_slice(
            &format!("other-{i}"),
            Some("other"),
            "127.0.0.9",
        ));
    }
    fake.apply(endpoint_slice("hand-made", None, "127.0.0.8"));
    fake.apply(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "database", "namespace": "shop"},
        "data": {"password": "aHVudGVyMg=="}
    }));
}

fn lease(identity: &str) -> LeaseConfig {
    LeaseConfig::new("novaedge-controller", "novaedge-system", identity)
}

fn config(identity: &str) -> ControllerConfig {
    let mut config = ControllerConfig::new(lease(identity));
    // Small pages, so that the EndpointSlices are listed in several.
    config.page_size = 2;
    config
}

// === harness ===

/// Polls `condition` (up to 20 s, on tokio's clock) until it holds.
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An agent's applier: keeps every snapshot it is sent (or refuses them, with `refuse`).
#[derive(Clone, Default)]
struct Agent {
    applied: Arc<Mutex<Vec<ConfigSnapshot>>>,
    current: Arc<Mutex<(u64, Vec<u8>)>>,
    refuse: Arc<Mutex<Option<String>>>,
}

impl Applier for Agent {
    fn apply(&mut self, snapshot: ConfigSnapshot, digest: Vec<u8>) -> Result<(), String> {
        if let Some(why) = self.refuse.lock().unwrap().clone() {
            return Err(why);
        }
        *self.current.lock().unwrap() = (snapshot.version, digest);
        self.applied.lock().unwrap().push(snapshot);
        Ok(())
    }

    fn current(&self) -> (u64, Vec<u8>) {
        self.current.lock().unwrap().clone()
    }
}

impl Agent {
    fn latest(&self) -> Option<ConfigSnapshot> {
        self.applied.lock().unwrap().last().cloned()
    }

    fn has_route(&self, name: &str) -> bool {
        self.latest()
            .is_some_and(|s| s.routes.iter().any(|r| r.name == name))
    }
}

/// Serves `publisher` on 127.0.0.1 and subscribes an agent of node `node` to it.
async fn subscribe(publisher: &Publisher, node: &str) -> Agent {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let allow: Authorize = Arc::new(|_: &tonic::Request<()>, _: &str| Ok(()));
    let service = publisher.service(allow);
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let agent = Agent::default();
    let subscriber = Subscriber::new(
        SubscriberConfig {
            endpoint: Endpoint::from_shared(format!("http://{addr}")).unwrap(),
            node: node.into(),
            agent_version: "test".into(),
            backoff: Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(100),
            },
        },
        agent.clone(),
    );
    tokio::spawn(subscriber.run());
    agent
}

/// Runs a controller until the returned sender is used (or dropped).
fn start(
    client: kube::Client,
    publisher: &Publisher,
    config: ControllerConfig,
) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    let controller = Controller::new(client, publisher.clone(), config);
    tokio::spawn(controller.run(async {
        let _ = stopped.await;
    }));
    stop
}

fn status_patches(fake: &FakeApi, path_end: &str) -> Vec<Recorded> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method == Method::PATCH && r.path.ends_with(path_end))
        .collect()
}

fn event_posts(fake: &FakeApi) -> Vec<Recorded> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method == Method::POST && r.path.contains("/events.k8s.io/"))
        .collect()
}

fn condition<'a>(conditions: &'a Value, type_: &str) -> &'a Value {
    conditions
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:#}"))
}

fn our_parent(status: &Value) -> &Value {
    status["parents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["controllerName"] == OURS)
        .unwrap_or_else(|| panic!("no parent of ours in {status:#}"))
}

// === (a) watch -> rebuild -> publish ===

#[tokio::test]
async fn a_watched_route_is_translated_and_reaches_a_subscribed_agent() {
    let fake = FakeApi::new();
    seed(&fake);
    let publisher = Publisher::new(Duration::from_millis(200));
    let agent = subscribe(&publisher, "node-a").await;
    let client = fake.client_over_tcp("a").await;
    let mut registry = prometheus_client::registry::Registry::default();
    let config = config("a");
    config.metrics.register(&mut registry);
    let _stop = start(client, &publisher, config);

    wait_for("the first snapshot", || {
        agent
            .latest()
            .is_some_and(|s| s.listeners.iter().any(|l| l.port == 8080))
    })
    .await;
    assert!(agent.latest().unwrap().routes.is_empty());

    fake.apply(route("store", "app", "shop.example"));
    wait_for("the new route at the agent", || {
        agent.has_route("shop/store")
    })
    .await;
    let snapshot = agent.latest().unwrap();
    let route = snapshot
        .routes
        .iter()
        .find(|r| r.name == "shop/store")
        .unwrap();
    assert_eq!(route.hostnames, ["shop.example"]);
    let backend = snapshot
        .backends
        .iter()
        .find(|b| b.name.starts_with("shop/app"))
        .unwrap_or_else(|| panic!("no backend for shop/app in {:?}", snapshot.backends));
    let endpoints: Vec<String> = backend
        .endpoints
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(endpoints, ["127.0.0.1:9000"]);

    // A new endpoint of the Service reaches the agent too.
    fake.apply(endpoint_slice("app-2", Some("app"), "127.0.0.2"));
    wait_for("the second endpoint", || {
        agent.latest().is_some_and(|s| {
            s.backends
                .iter()
                .any(|b| b.name.starts_with("shop/app") && b.endpoints.len() == 2)
        })
    })
    .await;

    fake.delete(ROUTES, "shop", "store");
    wait_for("the route gone from the agent", || {
        agent.latest().is_some_and(|s| s.routes.is_empty())
    })
    .await;

    // The watch events and the reconciliations were counted (the route's own status writes
    // come back as watch events too).
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &registry).unwrap();
    for line in [
        "novaedge_watch_events_total{kind=\"HTTPRoute\",event=\"delete\"} 1",
        "novaedge_watch_events_total{kind=\"EndpointSlice\",event=\"apply\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l
                .starts_with("novaedge_watch_events_total{kind=\"HTTPRoute\",event=\"apply\"} ")),
        "{metrics}"
    );
    let reconciliations: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("novaedge_reconciliation_duration_seconds_count "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(reconciliations >= 3, "{metrics}");

    // What was asked of the API server: EndpointSlices of Services only, in pages; only TLS
    // Secrets.
    let requests = fake.requests();
    let lists = |plural: &str| -> Vec<Recorded> {
        requests
            .iter()
            .filter(|r| r.method == Method::GET && r.path.ends_with(plural))
            .cloned()
            .collect()
    };
    let slices = lists("/endpointslices");
    assert!(!slices.is_empty());
    for r in &slices {
        assert_eq!(
            r.query.get("labelSelector").map(String::as_str),
            Some("kubernetes.io/service-name"),
            "{r:?}"
        );
    }
    let pages: Vec<&Recorded> = slices
        .iter()
        .filter(|r| !r.query.contains_key("watch"))
        .collect();
    assert!(
        pages
            .iter()
            .all(|r| r.query.get("limit").map(String::as_str) == Some("2"))
    );
    // Four labelled slices when listed: two pages, the second continuing the first.
    assert_eq!(pages.len(), 2, "{pages:#?}");
    assert!(!pages[0].query.contains_key("continue"));
    assert_eq!(
        pages[1].query.get("continue").map(String::as_str),
        Some("2")
    );
    let secrets = lists("/secrets");
    assert!(!secrets.is_empty());
    for r in &secrets {
        assert_eq!(
            r.query.get("fieldSelector").map(String::as_str),
            Some("type=kubernetes.io/tls"),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn a_kind_the_api_server_does_not_serve_does_not_hold_the_others_up() {
    // No ProxyPolicy CRD: its list answers 404, and the snapshot is built without it.
    let fake = FakeApi::new().without("novaedge.io/v1alpha1/proxypolicies");
    seed(&fake);
    fake.apply(route("store", "app", "shop.example"));
    let publisher = Publisher::new(Duration::from_millis(200));
    let agent = subscribe(&publisher, "node-a").await;
    let client = fake.client_over_tcp("a").await;
    let _stop = start(client, &publisher, config("a"));
    wait_for("the route at the agent", || agent.has_route("shop/store")).await;
}

#[tokio::test]
async fn the_first_snapshot_waits_for_every_kind_even_the_last_and_empty_one() {
    // Nodes cannot be listed at first: everything else is listed, and nothing is published
    // until the (empty) list of Nodes comes in.
    let fake = FakeApi::new();
    seed(&fake);
    fake.apply(route("store", "app", "shop.example"));
    fake.unavailable("v1/nodes", true);
    let publisher = Publisher::new(Duration::from_secs(1));
    let _stop = start(fake.client("a"), &publisher, config("a"));
    let listed = |plural: &str| {
        fake.requests()
            .iter()
            .any(|r| r.path.ends_with(plural) && r.query.contains_key("watch"))
    };
    wait_for("the other kinds to be watched", || {
        listed("/httproutes") && listed("/endpointslices") && listed("/proxypolicies")
    })
    .await;
    let agent = subscribe(&publisher, "node-a").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        agent.latest().is_none(),
        "published before the Nodes were listed"
    );
    assert!(!agent.has_route("shop/store"));

    fake.unavailable("v1/nodes", false);
    wait_for("the route at the agent", || agent.has_route("shop/store")).await;
}

// === (b) status patches and Events ===

#[tokio::test]
async fn status_is_applied_for_accepted_and_rejected_routes() {
    let fake = FakeApi::new();
    seed(&fake);
    // `ok` was written before, by us (Accepted since 2020, a backend missing then) and by
    // another implementation for another parent.
    let mut ok = route("ok", "app", "ok.example");
    ok["metadata"]["generation"] = json!(4);
    ok["status"] = json!({"parents": [
        {
            "controllerName": "example.com/other",
            "parentRef": {"name": "elsewhere"},
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                            "message": "", "lastTransitionTime": "2019-05-05T00:00:00Z"}]
        },
        {
            "controllerName": OURS,
            "parentRef": {"name": "web"},
            "conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                 "observedGeneration": 3, "lastTransitionTime": "2020-01-01T00:00:00Z"},
                {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound",
                 "message": "gone", "observedGeneration": 3,
                 "lastTransitionTime": "2020-01-01T00:00:00Z"}
            ]
        }
    ]});
    fake.apply(ok);
    fake.apply(route("broken", "missing", "broken.example"));
    let mut regex = route("regex", "app", "regex.example");
    regex["spec"]["rules"][0]["matches"] =
        json!([{"path": {"type": "RegularExpression", "value": "/users/(unclosed"}}]);
    fake.apply(regex);

    let publisher = Publisher::new(Duration::from_millis(200));
    let agent = subscribe(&publisher, "node-a").await;
    let client = fake.client_over_tcp("a").await;
    let _stop = start(client, &publisher, config("a"));

    wait_for(
        "the status of both routes, the Gateway and its class",
        || {
            !status_patches(&fake, "/httproutes/ok/status").is_empty()
                && !status_patches(&fake, "/httproutes/broken/status").is_empty()
                && !status_patches(&fake, "/gateways/web/status").is_empty()
                && !status_patches(&fake, "/gatewayclasses/novaedge/status").is_empty()
        },
    )
    .await;

    // The accepted route.
    let patch = &status_patches(&fake, "/httproutes/ok/status")[0];
    assert_eq!(
        patch.path,
        "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/ok/status"
    );
    assert_eq!(
        patch.query.get("fieldManager").map(String::as_str),
        Some("novaedge-controller")
    );
    assert_eq!(patch.query.get("force").map(String::as_str), Some("true"));
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(patch.body["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(patch.body["kind"], "HTTPRoute");
    assert_eq!(
        patch.body["metadata"],
        json!({"name": "ok", "namespace": "shop"})
    );
    let parents = patch.body["status"]["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 2, "{:#}", patch.body);
    assert_eq!(
        parents[0]["controllerName"], "example.com/other",
        "kept as it was"
    );
    assert_eq!(
        parents[0]["conditions"][0]["lastTransitionTime"],
        "2019-05-05T00:00:00Z"
    );
    let ours = our_parent(&patch.body["status"]);
    assert_eq!(ours["parentRef"], json!({"name": "web"}));
    let accepted = condition(&ours["conditions"], "Accepted");
    assert_eq!(accepted["status"], "True");
    assert_eq!(accepted["reason"], "Accepted");
    assert_eq!(accepted["observedGeneration"], 4);
    assert_eq!(
        accepted["lastTransitionTime"], "2020-01-01T00:00:00Z",
        "the status did not change: its time is kept"
    );
    let resolved = condition(&ours["conditions"], "ResolvedRefs");
    assert_eq!(resolved["status"], "True");
    assert_eq!(resolved["reason"], "ResolvedRefs");
    assert_eq!(resolved["observedGeneration"], 4);
    let resolved_since = resolved["lastTransitionTime"].as_str().unwrap().to_owned();
    assert!(
        resolved_since.as_str() > "2024-",
        "a new transition: {resolved_since}"
    );

    // The rejected one: its backend does not exist.
    let patch = &status_patches(&fake, "/httproutes/broken/status")[0];
    let ours = our_parent(&patch.body["status"]);
    assert_eq!(patch.body["status"]["parents"].as_array().unwrap().len(), 1);
    assert_eq!(condition(&ours["conditions"], "Accepted")["status"], "True");
    let resolved = condition(&ours["conditions"], "ResolvedRefs");
    assert_eq!(resolved["status"], "False");
    assert_eq!(resolved["reason"], "BackendNotFound");
    assert_eq!(resolved["observedGeneration"], 1);
    let message = resolved["message"].as_str().unwrap();
    assert!(
        message.contains("spec.rules[0].backendRefs[0]")
            && message.contains("Service shop/missing not found"),
        "{message}"
    );

    // The Gateway and its class.
    let patch = &status_patches(&fake, "/gateways/web/status")[0];
    assert_eq!(patch.body["kind"], "Gateway");
    let status = &patch.body["status"];
    assert_eq!(
        condition(&status["conditions"], "Accepted")["status"],
        "True"
    );
    assert_eq!(
        condition(&status["conditions"], "Programmed")["status"],
        "True"
    );
    let listener = &status["listeners"][0];
    assert_eq!(listener["name"], "http");
    assert_eq!(
        listener["supportedKinds"],
        json!([
            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
            {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}
        ])
    );
    assert!(
        listener["attachedRoutes"].as_i64().unwrap() >= 2,
        "{listener:#}"
    );
    assert_eq!(
        condition(&listener["conditions"], "Programmed")["status"],
        "True"
    );
    let patch = &status_patches(&fake, "/gatewayclasses/novaedge/status")[0];
    assert_eq!(
        patch.path,
        "/apis/gateway.networking.k8s.io/v1/gatewayclasses/novaedge/status"
    );
    let accepted = condition(&patch.body["status"]["conditions"], "Accepted");
    assert_eq!(accepted["status"], "True");
    assert_eq!(accepted["observedGeneration"], 1);

    // The route with an invalid regular expression is an Event on it.
    wait_for("the Event", || !event_posts(&fake).is_empty()).await;
    let events = event_posts(&fake);
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event.path, "/apis/events.k8s.io/v1/namespaces/shop/events");
    assert_eq!(event.body["type"], "Warning");
    assert_eq!(event.body["reason"], "InvalidConfiguration");
    assert_eq!(event.body["reportingController"], OURS);
    assert_eq!(event.body["reportingInstance"], "a");
    assert_eq!(event.body["regarding"]["kind"], "HTTPRoute");
    assert_eq!(event.body["regarding"]["name"], "regex");
    assert_eq!(event.body["regarding"]["namespace"], "shop");
    assert!(event.body["regarding"]["uid"].is_string());
    let note = event.body["note"].as_str().unwrap();
    assert!(
        note.starts_with("spec.rules[0].matches[0].path.value: "),
        "{note}"
    );

    // A change that does not touch any status: a rebuild, and nothing is written again.
    let written = |fake: &FakeApi| status_patches(fake, "/status").len();
    let before = written(&fake);
    fake.apply(endpoint_slice("app-2", Some("app"), "127.0.0.2"));
    wait_for("the second endpoint at the agent", || {
        agent.latest().is_some_and(|s| {
            s.backends
                .iter()
                .any(|b| b.name.starts_with("shop/app") && b.endpoints.len() == 2)
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(written(&fake), before, "no status changed");
    assert_eq!(
        event_posts(&fake).len(),
        1,
        "the same error is not told twice"
    );

    // A new generation of `ok`: written again, the transition times kept from the API server.
    let mut ok = fake.get(ROUTES, "shop", "ok").unwrap();
    ok["spec"]["hostnames"] = json!(["ok.example", "www.ok.example"]);
    fake.apply(ok);
    wait_for("the status of generation 5", || {
        status_patches(&fake, "/httproutes/ok/status")
            .iter()
            .any(|p| our_parent(&p.body["status"])["conditions"][0]["observedGeneration"] == 5)
    })
    .await;
    let patches = status_patches(&fake, "/httproutes/ok/status");
    let ours = our_parent(&patches.last().unwrap().body["status"]);
    assert_eq!(
        condition(&ours["conditions"], "Accepted")["lastTransitionTime"],
        "2020-01-01T00:00:00Z"
    );
    assert_eq!(
        condition(&ours["conditions"], "ResolvedRefs")["lastTransitionTime"],
        resolved_since.as_str()
    );
}

// === (c) leader election ===

fn holder(fake: &FakeApi) -> Option<String> {
    fake.get(LEASES, "novaedge-system", "novaedge-controller")
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

/// Runs an elector; `None` as the stop signal means it is only ever aborted (a crash).
fn elect(
    fake: &FakeApi,
    identity: &str,
) -> (
    watch::Receiver<bool>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (leading_tx, leading) = watch::channel(false);
    let (stop, stopped) = oneshot::channel::<()>();
    let elector = Elector::new(fake.client(identity), lease(identity));
    let task = tokio::spawn(elector.run(leading_tx, async {
        let _ = stopped.await;
    }));
    (leading, stop, task)
}

#[tokio::test(start_paused = true)]
async fn the_lease_is_taken_over_when_its_leader_stops_renewing() {
    let fake = FakeApi::new();
    let (a, _stop_a, task_a) = elect(&fake, "a");
    wait_for("a to lead", || *a.borrow()).await;
    let (b, _stop_b, _task_b) = elect(&fake, "b");

    // While `a` renews, `b` waits, however long.
    let first_renewal = fake
        .get(LEASES, "novaedge-system", "novaedge-controller")
        .unwrap()["spec"]["renewTime"]
        .clone();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(*a.borrow());
    assert!(!*b.borrow());
    assert_eq!(holder(&fake).as_deref(), Some("a"));
    let lease = fake
        .get(LEASES, "novaedge-system", "novaedge-controller")
        .unwrap();
    assert_ne!(lease["spec"]["renewTime"], first_renewal, "renewed");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);

    // `a` dies without a word: `b` takes over once the Lease has not changed for 15 s.
    task_a.abort();
    let died = tokio::time::Instant::now();
    wait_for("b to lead", || *b.borrow()).await;
    let waited = died.elapsed();
    assert!(
        waited >= Duration::from_secs(13) && waited <= Duration::from_secs(19),
        "{waited:?}"
    );
    let lease = fake
        .get(LEASES, "novaedge-system", "novaedge-controller")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_shuts_down_hands_over_at_once() {
    let fake = FakeApi::new();
    let (a, stop_a, task_a) = elect(&fake, "a");
    wait_for("a to lead", || *a.borrow()).await;
    let (b, _stop_b, _task_b) = elect(&fake, "b");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!*b.borrow());

    stop_a.send(()).unwrap();
    task_a.await.unwrap();
    assert!(!*a.borrow());
    let released = tokio::time::Instant::now();
    wait_for("b to lead", || *b.borrow()).await;
    assert!(
        released.elapsed() <= Duration::from_secs(2),
        "{:?}",
        released.elapsed()
    );
    assert_eq!(holder(&fake).as_deref(), Some("b"));
}

#[tokio::test(start_paused = true)]
async fn a_leader_cut_off_from_the_api_server_steps_down_before_its_lease_expires() {
    let fake = FakeApi::new();
    let (a, _stop_a, _task_a) = elect(&fake, "a");
    wait_for("a to lead", || *a.borrow()).await;
    let (b, _stop_b, _task_b) = elect(&fake, "b");
    tokio::time::sleep(Duration::from_secs(3)).await;

    fake.cut_off("a", true);
    let cut = tokio::time::Instant::now();
    wait_for("a to step down", || !*a.borrow()).await;
    let stepped_down = cut.elapsed();
    // Its last renewal was at most 2 s before the cut; it stops 10 s after it.
    assert!(stepped_down <= Duration::from_secs(11), "{stepped_down:?}");
    assert!(!*b.borrow(), "b cannot have taken over yet");
    wait_for("b to lead", || *b.borrow()).await;
    assert!(cut.elapsed() > stepped_down);

    // `a` is back: it follows.
    fake.cut_off("a", false);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!*a.borrow());
    assert!(*b.borrow());
}

#[tokio::test(start_paused = true)]
async fn only_the_leader_writes_status_and_its_successor_takes_over() {
    let fake = FakeApi::new();
    seed(&fake);
    fake.apply(route("store", "app", "shop.example"));
    let publisher_a = Publisher::new(Duration::from_secs(1));
    let publisher_b = Publisher::new(Duration::from_secs(1));
    let stop_a = start(fake.client("a"), &publisher_a, config("a"));
    wait_for("a to lead", || holder(&fake).as_deref() == Some("a")).await;
    let _stop_b = start(fake.client("b"), &publisher_b, config("b"));

    wait_for("the route's status", || {
        !status_patches(&fake, "/httproutes/store/status").is_empty()
    })
    .await;
    // Let both replicas rebuild a few more times.
    let mut route = fake.get(ROUTES, "shop", "store").unwrap();
    route["spec"]["hostnames"] = json!(["shop.example", "www.shop.example"]);
    fake.apply(route);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes = |fake: &FakeApi| -> Vec<String> {
        fake.requests()
            .into_iter()
            .filter(|r| r.method == Method::PATCH && r.path.ends_with("/status"))
            .map(|r| r.tag)
            .collect()
    };
    let before = writes(&fake);
    assert!(before.len() >= 3, "{before:?}");
    assert!(before.iter().all(|t| t == "a"), "{before:?}");

    // `a` shuts down; `b` takes over and writes the next change.
    stop_a.send(()).unwrap();
    wait_for("b to lead", || holder(&fake).as_deref() == Some("b")).await;
    let mut route = fake.get(ROUTES, "shop", "store").unwrap();
    route["spec"]["hostnames"] = json!(["shop.example"]);
    fake.apply(route);
    wait_for("b's status write of generation 3", || {
        status_patches(&fake, "/httproutes/store/status")
            .iter()
            .any(|p| {
                p.tag == "b"
                    && our_parent(&p.body["status"])["conditions"][0]["observedGeneration"] == 3
            })
    })
    .await;
    let after = writes(&fake);
    assert!(after[before.len()..].iter().all(|t| t == "b"), "{after:?}");
}

// === per-node snapshots, VIPs, the ProxyVIP finalizer, refused snapshots ===

const VIPS: &str = "novaedge.io/v1alpha1/proxyvips";

fn node(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels}
    })
}

fn proxy_vip(name: &str, address: &str, mode: &str, selector: Value) -> Value {
    let mut spec = json!({"addresses": [address], "mode": mode, "nodeSelector": selector});
    if mode == "BGP" {
        spec["bgp"] = json!({"localASN": 64512, "peers": [{"address": "127.0.0.1", "asn": 64500}]});
    } else {
        spec["interface"] = json!("eth0");
    }
    json!({
        "apiVersion": "novaedge.io/v1alpha1", "kind": "ProxyVIP",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": spec
    })
}

impl Agent {
    fn vips(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .latest()
            .map(|s| s.vips.into_iter().map(|v| v.name).collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}

fn vip_publisher() -> Publisher {
    Publisher::with_config(PublisherConfig {
        heartbeat: Duration::from_millis(50),
        fencing_delay: Some(Duration::from_millis(300)),
    })
}

#[tokio::test]
async fn the_leader_places_vips_per_node_and_holds_a_deleted_vip_until_it_is_withdrawn() {
    let fake = FakeApi::new();
    seed(&fake);
    fake.apply(node("node-a", json!({"edge": "true"})));
    fake.apply(node("node-b", json!({})));
    fake.apply(proxy_vip("web", "192.0.2.10", "L2", json!({})));
    fake.apply(proxy_vip(
        "api",
        "192.0.2.20",
        "BGP",
        json!({"matchLabels": {"edge": "true"}}),
    ));
    let publisher = vip_publisher();
    let a = subscribe(&publisher, "node-a").await;
    let b = subscribe(&publisher, "node-b").await;
    let client = fake.client_over_tcp("a").await;
    let _stop = start(client, &publisher, config("a"));

    // The L2 VIP on exactly one node, the BGP VIP on the one edge node.
    wait_for("the VIPs placed", || {
        let (va, vb) = (a.vips(), b.vips());
        va.contains(&"shop/api".to_owned())
            && !vb.contains(&"shop/api".to_owned())
            && usize::from(va.contains(&"shop/web".to_owned()))
                + usize::from(vb.contains(&"shop/web".to_owned()))
                == 1
    })
    .await;
    // Every node serves the Gateway, which selects no nodes.
    assert!(b.latest().unwrap().listeners.iter().any(|l| l.port == 8080));

    // node-b becomes an edge node: it announces the BGP VIP too.
    fake.apply(node("node-b", json!({"edge": "true"})));
    wait_for("the BGP VIP on node-b", || {
        b.vips().contains(&"shop/api".to_owned())
    })
    .await;

    // The leader put its finalizer on the ProxyVIPs.
    wait_for("the finalizer", || {
        fake.get(VIPS, "shop", "api").is_some_and(|v| {
            v["metadata"]["finalizers"] == json!([novaedge_k8s::controller::VIP_FINALIZER])
        })
    })
    .await;

    // Deleted: the VIP leaves both nodes' snapshots, and only then does the object go.
    fake.delete(VIPS, "shop", "api");
    let mut withdrawn_first = true;
    wait_for("the ProxyVIP gone", || {
        let gone = fake.get(VIPS, "shop", "api").is_none();
        if gone {
            withdrawn_first &= !a.vips().contains(&"shop/api".to_owned())
                && !b.vips().contains(&"shop/api".to_owned());
        }
        gone
    })
    .await;
    assert!(
        withdrawn_first,
        "the object went before the nodes withdrew the VIP"
    );
    let released = fake
        .requests()
        .into_iter()
        .rfind(|r| r.method == Method::PATCH && r.path.ends_with("/proxyvips/api"))
        .unwrap();
    assert_eq!(
        released.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(released.body["metadata"]["finalizers"], json!([]));
    assert!(released.body["metadata"]["resourceVersion"].is_string());

    // A node that refuses its snapshot gets a Warning Event on its Node.
    *b.refuse.lock().unwrap() = Some("port 8080 is taken".into());
    fake.apply(route("store", "app", "shop.example"));
    wait_for("the Event on node-b", || {
        event_posts(&fake).iter().any(|e| {
            e.body["regarding"]["kind"] == "Node"
                && e.body["regarding"]["name"] == "node-b"
                && e.body["reason"] == novaedge_k8s::controller::NACK_REASON
                && e.body["note"].as_str().is_some_and(|n| {
                    n.ends_with("keeps serving the previous one: port 8080 is taken")
                })
        })
    })
    .await;
}

#[tokio::test]
async fn only_the_leader_serves_snapshots() {
    let fake = FakeApi::new();
    seed(&fake);
    let publisher_a = vip_publisher();
    let publisher_b = vip_publisher();
    let stop_a = start(fake.client("a"), &publisher_a, config("a"));
    wait_for("a to lead", || holder(&fake).as_deref() == Some("a")).await;
    let _stop_b = start(fake.client("b"), &publisher_b, config("b"));

    // An agent of the follower is refused; one of the leader is served.
    let on_b = subscribe(&publisher_b, "node-b").await;
    let on_a = subscribe(&publisher_a, "node-a").await;
    wait_for("the leader's snapshot", || on_a.latest().is_some()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(on_b.latest().is_none(), "a follower served a snapshot");
    assert!(!publisher_b.reports().contains_key("node-b"));

    // The leader goes: the follower takes over and serves.
    stop_a.send(()).unwrap();
    wait_for("b to lead", || holder(&fake).as_deref() == Some("b")).await;
    wait_for("the new leader's snapshot", || on_b.latest().is_some()).await;
}

// === publish addresses, and the status of NovaEdge's own kinds ===

const INGRESSES: &str = "networking.k8s.io/v1/ingresses";

fn ingress(name: &str, class: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "ingressClassName": class,
            "rules": [{"host": format!("{name}.example"), "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "app", "port": {"number": 80}}}
            }]}}]
        }
    })
}

fn ingress_class(name: &str, controller: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": name},
        "spec": {"controller": controller}
    })
}

/// The one status patch of `path_end` (panics if there is not exactly one).
fn only_patch(fake: &FakeApi, path_end: &str) -> Recorded {
    let patches = status_patches(fake, path_end);
    assert_eq!(patches.len(), 1, "{path_end}: {patches:#?}");
    patches.into_iter().next().unwrap()
}

#[tokio::test]
async fn publish_addresses_are_written_to_served_ingresses_and_accepted_gateways() {
    let fake = FakeApi::new();
    seed(&fake);
    fake.apply(ingress_class("novaedge", "novaedge.io/ingress-controller"));
    fake.apply(ingress_class("nginx", "k8s.io/ingress-nginx"));
    fake.apply(ingress("store", "novaedge"));
    // Another controller's: never written.
    fake.apply(ingress("theirs", "nginx"));
    // Ours, but left out for its error (a backend port that is neither number nor name): its
    // stale address (from an earlier version of it) is removed.
    let mut broken = ingress("broken", "novaedge");
    broken["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] = json!({});
    broken["status"] = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}});
    fake.apply(broken);

    let publisher = Publisher::new(Duration::from_millis(200));
    let mut publishing = config("a");
    publishing.publish_addresses = vec![
        "192.0.2.10".parse().unwrap(),
        "lb.example.com".parse().unwrap(),
    ];
    let stop = start(fake.client_over_tcp("a").await, &publisher, publishing);
    wait_for("the status of the Ingresses and the Gateway", || {
        !status_patches(&fake, "/ingresses/store/status").is_empty()
            && !status_patches(&fake, "/ingresses/broken/status").is_empty()
            && !status_patches(&fake, "/gateways/web/status").is_empty()
    })
    .await;

    let patch = only_patch(&fake, "/ingresses/store/status");
    assert_eq!(
        patch.path,
        "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/store/status"
    );
    assert_eq!(
        patch.query.get("fieldManager").map(String::as_str),
        Some("novaedge-controller")
    );
    assert_eq!(patch.query.get("force").map(String::as_str), Some("true"));
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(
        patch.body,
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "store", "namespace": "shop"},
            "status": {"loadBalancer": {"ingress": [
                {"ip": "192.0.2.10"},
                {"hostname": "lb.example.com"}
            ]}}
        })
    );
    assert_eq!(
        only_patch(&fake, "/ingresses/broken/status").body["status"],
        json!({"loadBalancer": {"ingress": []}})
    );
    let patch = only_patch(&fake, "/gateways/web/status");
    assert_eq!(
        patch.body["status"]["addresses"],
        json!([
            {"type": "IPAddress", "value": "192.0.2.10"},
            {"type": "Hostname", "value": "lb.example.com"}
        ])
    );

    // A rebuild changes nothing: nothing is written again.
    fake.apply(endpoint_slice("app-2", Some("app"), "127.0.0.2"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let ingress_patches = |fake: &FakeApi| {
        status_patches(fake, "/status")
            .into_iter()
            .filter(|r| r.path.contains("/ingresses/"))
            .count()
    };
    assert_eq!(ingress_patches(&fake), 2, "no Ingress is written again");
    assert_eq!(status_patches(&fake, "/gateways/web/status").len(), 1);
    let stored = fake.get(INGRESSES, "shop", "store").unwrap();
    assert_eq!(
        stored["status"]["loadBalancer"]["ingress"][1]["hostname"],
        "lb.example.com"
    );

    // The next leader publishes no addresses: ours are removed, from the Ingress and the
    // Gateway alike.
    stop.send(()).unwrap();
    wait_for("a to give the Lease up", || holder(&fake).is_none()).await;
    let _stop = start(fake.client_over_tcp("b").await, &publisher, config("b"));
    wait_for("the addresses removed", || {
        status_patches(&fake, "/ingresses/store/status").len() == 2
            && status_patches(&fake, "/gateways/web/status").len() == 2
    })
    .await;
    let patches = status_patches(&fake, "/ingresses/store/status");
    assert_eq!(patches[1].tag, "b");
    assert_eq!(
        patches[1].body["status"],
        json!({"loadBalancer": {"ingress": []}})
    );
    let patches = status_patches(&fake, "/gateways/web/status");
    assert_eq!(patches[1].body["status"]["addresses"], json!([]));
    assert_eq!(
        condition(&patches[1].body["status"]["conditions"], "Accepted")["status"],
        "True"
    );
    // Nothing more to remove from `broken`; `theirs` is never written.
    assert_eq!(status_patches(&fake, "/ingresses/broken/status").len(), 1);
    assert_eq!(ingress_patches(&fake), 3, "only `store` is written again");
}

#[tokio::test]
async fn proxy_gateways_and_proxy_routes_get_their_status() {
    const NOVAEDGE: &str = "novaedge.io/v1alpha1";
    let fake = FakeApi::new();
    seed(&fake);
    fake.apply(json!({
        "apiVersion": NOVAEDGE, "kind": "ProxyGateway",
        "metadata": {"name": "edge", "namespace": "shop"},
        "spec": {"listeners": [{"name": "http", "port": 8081, "protocol": "HTTP"}]}
    }));
    // Accepted since 2020 (written by an earlier leader), its backend missing then.
    fake.apply(json!({
        "apiVersion": NOVAEDGE, "kind": "ProxyRoute",
        "metadata": {"name": "good", "namespace": "shop", "generation": 2},
        "spec": {
            "parentRefs": [{"name": "edge", "sectionName": "http"}],
            "hostnames": ["good.example"],
            "rules": [{"backendRefs": [{"name": "app", "port": 80}]}]
        },
        "status": {"observedGeneration": 1, "parents": [{
            "parentRef": {"name": "edge", "sectionName": "http"},
            "conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                 "observedGeneration": 1, "lastTransitionTime": "2020-01-01T00:00:00Z"},
                {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound",
                 "message": "gone", "observedGeneration": 1,
                 "lastTransitionTime": "2020-01-01T00:00:00Z"}
            ]
        }]}
    }));
    // Its ProxyBackend does not exist, and its second parent is no ProxyGateway.
    fake.apply(json!({
        "apiVersion": NOVAEDGE, "kind": "ProxyRoute",
        "metadata": {"name": "bad", "namespace": "shop"},
        "spec": {
            "parentRefs": [{"name": "edge"}, {"name": "nowhere"}],
            "hostnames": ["bad.example"],
            "rules": [{"backendRefs": [{"name": "nope", "kind": "ProxyBackend"}]}]
        }
    }));

    let publisher = Publisher::new(Duration::from_millis(200));
    let mut publishing = config("a");
    // Not for ProxyGateways: they are reached on their ProxyVIP.
    publishing.publish_addresses = vec!["192.0.2.10".parse().unwrap()];
    let _stop = start(fake.client_over_tcp("a").await, &publisher, publishing);
    wait_for(
        "the status of the ProxyGateway and both ProxyRoutes",
        || {
            !status_patches(&fake, "/proxygateways/edge/status").is_empty()
                && !status_patches(&fake, "/proxyroutes/good/status").is_empty()
                && !status_patches(&fake, "/proxyroutes/bad/status").is_empty()
        },
    )
    .await;

    // A condition's new transition time: now, which the test cannot know; checked, then
    // replaced by `NOW` so that the rest compares whole.
    let stamped = |condition: &mut Value| {
        let since = condition["lastTransitionTime"].as_str().unwrap();
        assert!(since > "2024-", "a new transition: {since}");
        condition["lastTransitionTime"] = json!("NOW");
    };

    let mut patch = only_patch(&fake, "/proxyroutes/good/status");
    assert_eq!(
        patch.path,
        "/apis/novaedge.io/v1alpha1/namespaces/shop/proxyroutes/good/status"
    );
    assert_eq!(
        patch.query.get("fieldManager").map(String::as_str),
        Some("novaedge-controller")
    );
    assert_eq!(patch.query.get("force").map(String::as_str), Some("true"));
    stamped(&mut patch.body["status"]["parents"][0]["conditions"][1]);
    assert_eq!(
        patch.body,
        json!({
            "apiVersion": NOVAEDGE, "kind": "ProxyRoute",
            "metadata": {"name": "good", "namespace": "shop"},
            "status": {"observedGeneration": 2, "parents": [{
                "parentRef": {"name": "edge", "sectionName": "http"},
                "conditions": [
                    {"type": "Accepted", "status": "True", "reason": "Accepted",
                     "message": "", "observedGeneration": 2,
                     "lastTransitionTime": "2020-01-01T00:00:00Z"},
                    {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs",
                     "message": "", "observedGeneration": 2, "lastTransitionTime": "NOW"}
                ]
            }]}
        })
    );

    let mut patch = only_patch(&fake, "/proxyroutes/bad/status");
    let status = &mut patch.body["status"];
    for p in 0..2 {
        for c in 0..2 {
            stamped(&mut status["parents"][p]["conditions"][c]);
        }
    }
    let not_found = status["parents"][0]["conditions"][1]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        not_found.contains("spec.rules[0].backendRefs[0]")
            && not_found.contains("ProxyBackend shop/nope not found"),
        "{not_found}"
    );
    let no_parent = status["parents"][1]["conditions"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        no_parent.contains("no ProxyGateway shop/nowhere"),
        "{no_parent}"
    );
    let unresolved = json!({"type": "ResolvedRefs", "status": "False",
                            "reason": "BackendNotFound", "message": not_found,
                            "observedGeneration": 1, "lastTransitionTime": "NOW"});
    assert_eq!(
        *status,
        json!({"observedGeneration": 1, "parents": [
            {"parentRef": {"name": "edge"}, "conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                 "observedGeneration": 1, "lastTransitionTime": "NOW"},
                unresolved
            ]},
            {"parentRef": {"name": "nowhere"}, "conditions": [
                {"type": "Accepted", "status": "False", "reason": "NoMatchingParent",
                 "message": no_parent, "observedGeneration": 1, "lastTransitionTime": "NOW"},
                unresolved
            ]}
        ]})
    );

    let mut patch = only_patch(&fake, "/proxygateways/edge/status");
    assert_eq!(
        patch.path,
        "/apis/novaedge.io/v1alpha1/namespaces/shop/proxygateways/edge/status"
    );
    let status = &mut patch.body["status"];
    for c in 0..2 {
        stamped(&mut status["conditions"][c]);
    }
    for c in 0..4 {
        stamped(&mut status["listeners"][0]["conditions"][c]);
    }
    let condition = |type_: &str, status: &str, reason: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": "",
               "observedGeneration": 1, "lastTransitionTime": "NOW"})
    };
    assert_eq!(
        patch.body,
        json!({
            "apiVersion": NOVAEDGE, "kind": "ProxyGateway",
            "metadata": {"name": "edge", "namespace": "shop"},
            "status": {
                "observedGeneration": 1,
                "conditions": [
                    condition("Accepted", "True", "Accepted"),
                    condition("Programmed", "True", "Programmed"),
                ],
                "listeners": [{
                    "name": "http",
                    "attachedRoutes": 2,
                    "conditions": [
                        condition("Accepted", "True", "Accepted"),
                        condition("ResolvedRefs", "True", "ResolvedRefs"),
                        condition("Conflicted", "False", "NoConflicts"),
                        condition("Programmed", "True", "Programmed"),
                    ]
                }]
            }
        })
    );
    // What was written is what the API server has.
    let stored = fake
        .get("novaedge.io/v1alpha1/proxyroutes", "shop", "good")
        .unwrap();
    assert_eq!(stored["status"]["observedGeneration"], 2);
}
