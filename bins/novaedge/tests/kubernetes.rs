//! `novaedge controller --source kubernetes` end to end on 127.0.0.1: the controller reads a
//! fake API server (novaedge-k8s's test fake, through a kubeconfig), an agent serves what it
//! is sent, a route changed in the API reaches the agent, the status of the route, an Ingress
//! (with `--publish-address`), a ProxyGateway and a ProxyRoute is written, and
//! on SIGTERM the controller gives its Lease up. Every request it made is one that the RBAC
//! rules of `config/rbac.yaml` allow, and the manifests of `config/` read as the Kubernetes
//! objects they claim to be.

mod common;
#[path = "../../../novaedge-k8s/tests/fake_api/mod.rs"]
mod fake_api;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use fake_api::{FakeApi, Recorded};
use http::Method;
use novaedge_echo::EchoServer;
use serde_json::{Value, json};

fn backend(fake: &FakeApi, name: &str, port: u16) {
    fake.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "t"},
        "spec": {"ports": [{"name": "http", "port": 80}]}
    }));
    fake.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-1"), "namespace": "t",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": port}]
    }));
}

fn route(service: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "app", "namespace": "t"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [{"backendRefs": [{"name": service, "port": 80}]}]
        }
    })
}

/// Polls until the echo backend `want` answers on `addr` (20 s at most); `logs` are shown if
/// it does not.
async fn wait_answer(addr: SocketAddr, want: &str, logs: &[&Proxy]) -> Duration {
    let start = Instant::now();
    loop {
        let answer = match get(addr, "app.test", "/").await {
            Ok((200, body)) => serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["name"].as_str().map(str::to_owned)),
            _ => None,
        };
        if answer.as_deref() == Some(want) {
            return start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(20) {
            let logs: Vec<String> = logs
                .iter()
                .map(|p| p.log.lock().unwrap().join("\n"))
                .collect();
            panic!(
                "{addr} never answered from {want} (now: {answer:?}); logs:\n{}",
                logs.join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_serves_what_the_api_server_holds_and_writes_status() {
    let v1 = EchoServer::start("127.0.0.1:0".parse().unwrap(), "v1")
        .await
        .unwrap();
    let v2 = EchoServer::start("127.0.0.1:0".parse().unwrap(), "v2")
        .await
        .unwrap();
    let port = free_port();
    let fake = FakeApi::new();
    fake.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "novaedge"},
        "spec": {"controllerName": "novaedge.io/gateway-controller"}
    }));
    fake.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "t"},
        "spec": {
            "gatewayClassName": "novaedge",
            "listeners": [{"name": "http", "protocol": "HTTP", "port": port}]
        }
    }));
    backend(&fake, "v1", v1.local_addr().port());
    backend(&fake, "v2", v2.local_addr().port());
    fake.apply(route("v1"));
    // An Ingress and NovaEdge's own kinds, whose status the controller writes too.
    let ingress_port = free_port();
    fake.apply(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web", "namespace": "t"},
        "spec": {"rules": [{"host": "ingress.test", "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "v1", "port": {"number": 80}}}
        }]}}]}
    }));
    fake.apply(json!({
        "apiVersion": "novaedge.io/v1alpha1", "kind": "ProxyGateway",
        "metadata": {"name": "edge", "namespace": "t"},
        "spec": {"listeners": [{"name": "http", "port": free_port(), "protocol": "HTTP"}]}
    }));
    fake.apply(json!({
        "apiVersion": "novaedge.io/v1alpha1", "kind": "ProxyRoute",
        "metadata": {"name": "app", "namespace": "t"},
        "spec": {
            "parentRefs": [{"name": "edge"}],
            "rules": [{"backendRefs": [{"name": "v1", "port": 80}]}]
        }
    }));
    let api = fake.serve("controller").await;

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: 'http://{api}'}}}}]
users: [{{name: test, user: {{}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: test, namespace: novaedge-system}}}}]
current-context: fake
"
        ),
    )
    .unwrap();
    let controller_port = free_port();
    let mut controller = Proxy::start_with_env(
        &[
            "controller",
            "--source",
            "kubernetes",
            "--identity",
            "replica-1",
            "--insecure",
            "--listen",
            &format!("127.0.0.1:{controller_port}"),
            "--ingress-http-port",
            &ingress_port.to_string(),
            "--publish-address",
            "192.0.2.10",
            "--publish-address",
            "lb.example.com",
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    controller.wait_log("serving snapshots", 0);
    let agent = Proxy::start(&[
        "agent",
        "--controller",
        &format!("http://127.0.0.1:{controller_port}"),
        "--node",
        "node-a",
        "--insecure",
        "--bind",
        "127.0.0.1",
    ]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_answer(addr, "v1", &[&controller, &agent]).await;

    // The route is changed in the API server: the agent serves the new backend.
    fake.apply(route("v2"));
    wait_answer(addr, "v2", &[&controller, &agent]).await;

    // The leader (the only replica) wrote the route's status, naming itself in the Lease.
    let lease = fake
        .get(
            "coordination.k8s.io/v1/leases",
            "novaedge-system",
            "novaedge-controller",
        )
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-1");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let route = fake
            .get("gateway.networking.k8s.io/v1/httproutes", "t", "app")
            .unwrap();
        if route["status"]["parents"][0]["conditions"][0]["observedGeneration"] == 2 {
            break route["status"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no status for generation 2: {route:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        status["parents"][0]["controllerName"],
        "novaedge.io/gateway-controller"
    );
    assert!(fake.requests().iter().any(|r| {
        r.method == Method::PATCH
            && r.query.get("fieldManager").map(String::as_str) == Some("novaedge-controller")
    }));
    // The Ingress lists the publish addresses; the ProxyGateway and ProxyRoute have status.
    let written = |resource: &str, name: &str, pointer: &str| {
        fake.get(resource, "t", name)
            .and_then(|o| o.pointer(pointer).cloned())
            .filter(|v| !v.is_null())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ingress = written(
            "networking.k8s.io/v1/ingresses",
            "web",
            "/status/loadBalancer",
        );
        let gateway = written(
            "novaedge.io/v1alpha1/proxygateways",
            "edge",
            "/status/listeners",
        );
        let route = written("novaedge.io/v1alpha1/proxyroutes", "app", "/status/parents");
        if let (Some(ingress), Some(_), Some(route)) = (ingress, gateway, route) {
            assert_eq!(
                ingress,
                json!({"ingress": [{"ip": "192.0.2.10"}, {"hostname": "lb.example.com"}]})
            );
            assert_eq!(route[0]["conditions"][0]["status"], "True", "{route:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no status for the Ingress or NovaEdge's kinds"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // SIGTERM: the controller exits cleanly and gives the Lease up.
    controller.terminate();
    assert!(controller.wait_exit().success());
    let lease = fake
        .get(
            "coordination.k8s.io/v1/leases",
            "novaedge-system",
            "novaedge-controller",
        )
        .unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease:#}");
    controller.wait_log("gave the Lease up", 0);

    // Everything it asked of the API server, the deployment's RBAC allows.
    let rules = controller_rules();
    let requests = fake.requests();
    assert!(requests.len() > 20);
    for request in &requests {
        let attributes = attributes(request);
        assert!(
            rules.iter().any(|r| allows(r, &attributes)),
            "config/rbac.yaml does not allow {attributes:?}"
        );
    }
}

fn config_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(config_dir().join(file)).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// A request in RBAC's terms: (verb, API group, resource[/subresource], namespace, name).
type Attributes = (String, String, String, Option<String>, Option<String>);

fn attributes(request: &Recorded) -> Attributes {
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("unexpected path {}", request.path),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        rest => (None, rest),
    };
    let (resource, name) = match rest {
        [plural] => ((*plural).to_owned(), None),
        [plural, name] => ((*plural).to_owned(), Some((*name).to_owned())),
        [plural, name, sub] => (format!("{plural}/{sub}"), Some((*name).to_owned())),
        _ => panic!("unexpected path {}", request.path),
    };
    let verb = match (request.method.clone(), &name) {
        (Method::GET, None) if request.query.contains_key("watch") => "watch",
        (Method::GET, None) => "list",
        (Method::GET, Some(_)) => "get",
        (Method::POST, _) => "create",
        (Method::PUT, _) => "update",
        (Method::PATCH, _) => "patch",
        (Method::DELETE, _) => "delete",
        (method, _) => panic!("unexpected method {method}"),
    };
    (verb.to_owned(), group.to_owned(), resource, namespace, name)
}

/// The rules that apply to the controller's ServiceAccount: its ClusterRoles everywhere, its
/// Roles in their namespace (`(namespace, rule)`).
fn controller_rules() -> Vec<(Option<String>, Value)> {
    let docs = documents("rbac.yaml");
    let bound = |binding_kind: &str| -> Vec<(Option<String>, String)> {
        docs.iter()
            .filter(|d| d["kind"] == binding_kind)
            .filter(|d| {
                d["subjects"].as_array().unwrap().iter().any(|s| {
                    s["kind"] == "ServiceAccount"
                        && s["name"] == "novaedge-controller"
                        && s["namespace"] == "novaedge-system"
                })
            })
            .map(|d| {
                (
                    d["metadata"]["namespace"].as_str().map(str::to_owned),
                    d["roleRef"]["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let mut rules = Vec::new();
    for (binding, role_kind) in [
        ("ClusterRoleBinding", "ClusterRole"),
        ("RoleBinding", "Role"),
    ] {
        for (namespace, role) in bound(binding) {
            let role = docs
                .iter()
                .find(|d| d["kind"] == role_kind && d["metadata"]["name"] == role.as_str())
                .unwrap_or_else(|| panic!("no {role_kind} {role}"));
            for rule in role["rules"].as_array().unwrap() {
                rules.push((namespace.clone(), rule.clone()));
            }
        }
    }
    rules
}

fn allows((namespace, rule): &(Option<String>, Value), a: &Attributes) -> bool {
    let (verb, group, resource, request_namespace, name) = a;
    let has = |field: &str, want: &str| {
        rule[field]
            .as_array()
            .is_some_and(|l| l.iter().any(|v| v == want || v == "*"))
    };
    let names = rule["resourceNames"].as_array();
    namespace
        .as_ref()
        .is_none_or(|ns| Some(ns) == request_namespace.as_ref())
        && has("apiGroups", group)
        && has("resources", resource)
        && has("verbs", verb)
        && names.is_none_or(|names| name.as_ref().is_some_and(|n| names.iter().any(|v| v == n)))
}

#[test]
fn the_manifests_are_the_objects_they_claim_to_be() {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
    use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};

    let mut kinds = Vec::new();
    for file in [
        "namespace.yaml",
        "rbac.yaml",
        "controller.yaml",
        "agent.yaml",
        "classes.yaml",
    ] {
        for doc in documents(file) {
            let kind = doc["kind"].as_str().unwrap().to_owned();
            let parsed = match kind.as_str() {
                "Namespace" => serde_json::from_value::<Namespace>(doc.clone()).map(drop),
                "ServiceAccount" => serde_json::from_value::<ServiceAccount>(doc.clone()).map(drop),
                "ClusterRole" => serde_json::from_value::<ClusterRole>(doc.clone()).map(drop),
                "ClusterRoleBinding" => {
                    serde_json::from_value::<ClusterRoleBinding>(doc.clone()).map(drop)
                }
                "Role" => serde_json::from_value::<Role>(doc.clone()).map(drop),
                "RoleBinding" => serde_json::from_value::<RoleBinding>(doc.clone()).map(drop),
                "Deployment" => serde_json::from_value::<Deployment>(doc.clone()).map(drop),
                "DaemonSet" => serde_json::from_value::<DaemonSet>(doc.clone()).map(drop),
                "Service" => serde_json::from_value::<Service>(doc.clone()).map(drop),
                "PodDisruptionBudget" => {
                    serde_json::from_value::<PodDisruptionBudget>(doc.clone()).map(drop)
                }
                "GatewayClass" | "IngressClass" => Ok(()),
                other => panic!("{file}: unexpected kind {other}"),
            };
            parsed.unwrap_or_else(|e| panic!("{file}: {kind}: {e}"));
            kinds.push(kind);
        }
    }
    for kind in ["Deployment", "DaemonSet", "Service", "ClusterRole", "Role"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind}");
    }

    let controller: Deployment = serde_json::from_value(
        documents("controller.yaml")
            .into_iter()
            .find(|d| d["kind"] == "Deployment")
            .unwrap(),
    )
    .unwrap();
    let spec = controller.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("novaedge-controller")
    );
    let args = pod.containers[0].args.clone().unwrap();
    assert!(args.contains(&"--source=kubernetes".to_owned()), "{args:?}");

    let agent: DaemonSet =
        serde_json::from_value(documents("agent.yaml").into_iter().next().unwrap()).unwrap();
    let pod = agent.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let container = &pod.containers[0];
    let node_name = container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "NODE_NAME")
        .unwrap();
    let field = node_name
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(field.field_path, "spec.nodeName");
    assert!(pod.volumes.unwrap().iter().any(|v| {
        v.secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some("novaedge-agent-tls"))
    }));
}
