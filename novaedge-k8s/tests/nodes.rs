//! Per-node snapshots: Gateways limited to nodes by a selector, Ingresses on every node.

use std::collections::BTreeMap;

use novaedge_k8s::objects::parse_yaml;
use novaedge_k8s::{TranslateOptions, translate};

const OBJECTS: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: edge-1, labels: {role: edge, zone: a}}
---
apiVersion: v1
kind: Node
metadata: {name: worker-1, labels: {zone: b}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: t
  annotations: {novaedge.io/node-selector: "role=edge"}
spec:
  gatewayClassName: novaedge
  listeners:
    - {name: http, protocol: HTTP, port: 8080}
    - {name: shared, protocol: HTTP, port: 9000, hostname: edge.test}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: everywhere, namespace: t}
spec:
  gatewayClassName: novaedge
  listeners:
    - {name: shared, protocol: HTTP, port: 9000, hostname: all.test}
---
apiVersion: novaedge.io/v1alpha1
kind: ProxyGateway
metadata: {name: zone-b, namespace: t}
spec:
  nodeSelector: {matchExpressions: [{key: zone, operator: In, values: [b]}]}
  listeners: [{name: http, port: 8082, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: edge-only, namespace: t}
spec:
  parentRefs: [{name: edge}]
  rules: [{backendRefs: [{name: edge-svc, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: all, namespace: t}
spec:
  parentRefs: [{name: everywhere}]
  rules: [{backendRefs: [{name: all-svc, port: 80}]}]
---
apiVersion: novaedge.io/v1alpha1
kind: ProxyRoute
metadata: {name: zone-b, namespace: t}
spec:
  parentRefs: [{name: zone-b}]
  rules: [{backendRefs: [{name: all-svc, port: 80}]}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: legacy, namespace: t}
spec:
  defaultBackend: {service: {name: legacy-svc, port: {number: 80}}}
---
apiVersion: v1
kind: Service
metadata: {name: edge-svc, namespace: t}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: all-svc, namespace: t}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: legacy-svc, namespace: t}
spec: {ports: [{port: 80}]}
"#;

/// (listeners, routes as `listener route`, backends) of a snapshot, sorted.
fn shape(s: &novaedge_snapshot::ConfigSnapshot) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut listeners: Vec<String> = s.listeners.iter().map(|l| l.name.clone()).collect();
    let mut routes: Vec<String> = s
        .routes
        .iter()
        .map(|r| format!("{} {}", r.listener, r.name))
        .collect();
    let mut backends: Vec<String> = s.backends.iter().map(|b| b.name.clone()).collect();
    listeners.sort();
    routes.sort();
    backends.sort();
    (listeners, routes, backends)
}

#[test]
fn each_node_serves_the_gateways_that_select_it() {
    let (objects, diagnostics) = parse_yaml(OBJECTS, None);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let t = translate(&objects, &TranslateOptions::default());
    assert!(!t.has_errors(), "{:?}", t.diagnostics);
    assert!(!t.nodes.is_uniform());
    assert_eq!(t.node_labels["edge-1"]["role"], "edge");

    let edge = t.for_node(&t.node_labels["edge-1"]);
    assert_eq!(
        shape(&edge),
        (
            vec!["http-80".into(), "http-8080".into(), "http-9000".into()],
            vec![
                "http-80 ingress:t/legacy/defaultBackend".into(),
                "http-8080 t/edge-only".into(),
                "http-9000 t/all".into(),
                "http-9000 t/edge-only".into(),
            ],
            vec![
                "t/all-svc:80".into(),
                "t/edge-svc:80".into(),
                "t/legacy-svc:80".into()
            ],
        )
    );
    edge.validate().expect("a per-node snapshot is valid");

    // worker-1: not the edge Gateway (its port 8080, its routes on the shared port 9000 and
    // its backend), but the zone-b ProxyGateway; the Ingress everywhere.
    let worker = t.for_node(&t.node_labels["worker-1"]);
    assert_eq!(
        shape(&worker),
        (
            vec!["http-80".into(), "http-8082".into(), "http-9000".into()],
            vec![
                "http-80 ingress:t/legacy/defaultBackend".into(),
                "http-8082 proxyroute:t/zone-b".into(),
                "http-9000 t/all".into(),
            ],
            vec!["t/all-svc:80".into(), "t/legacy-svc:80".into()],
        )
    );
    worker.validate().expect("a per-node snapshot is valid");

    // A node nobody described has no labels: only what is not limited.
    let unknown = t.for_node(&BTreeMap::new());
    assert_eq!(
        shape(&unknown).0,
        ["http-80".to_owned(), "http-9000".to_owned()]
    );
}

#[test]
fn without_selectors_every_node_gets_the_whole_snapshot() {
    let plain = OBJECTS
        .replace(
            "annotations: {novaedge.io/node-selector: \"role=edge\"}",
            "",
        )
        .replace(
            "nodeSelector: {matchExpressions: [{key: zone, operator: In, values: [b]}]}",
            "",
        );
    let (objects, diagnostics) = parse_yaml(&plain, None);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let t = translate(&objects, &TranslateOptions::default());
    assert!(t.nodes.is_uniform());
    assert_eq!(t.for_node(&BTreeMap::new()), t.snapshot);
}

#[test]
fn a_bad_node_selector_annotation_names_the_field() {
    let bad = OBJECTS.replace("\"role=edge\"", "\"role\"");
    let (objects, _) = parse_yaml(&bad, None);
    let t = translate(&objects, &TranslateOptions::default());
    let errors: Vec<String> = t
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [
            "error: Gateway t/edge: metadata.annotations[novaedge.io/node-selector]: \"role\": use key=value"
        ]
    );
}
