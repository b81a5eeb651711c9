//! Gateway API GRPCRoute through the public path a user's manifests take: YAML text parsed into
//! objects, translated into a snapshot, and diagnostics as printed.

use novaedge_k8s::objects::parse_yaml;
use novaedge_k8s::{Diagnostic, TranslateOptions, Translation, translate};
use novaedge_snapshot::{
    BackendRef, HeaderModifier, MatchType, PathMatch, RequestMirror, Route, RouteMatch,
    UpstreamProtocol,
};

/// A Gateway `t/gw` with an HTTP listener on 8080, and Services in `t`, each with one endpoint:
/// `greeter` (port 9000, no appProtocol), `echo` (port 9000, `kubernetes.io/h2c`) and `legacy`
/// (port 80, `http`).
const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: t}
spec:
  gatewayClassName: novaedge
  listeners: [{name: http, protocol: HTTP, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: greeter, namespace: t}
spec:
  ports: [{name: grpc, port: 9000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: greeter-1, namespace: t, labels: {kubernetes.io/service-name: greeter}}
addressType: IPv4
ports: [{name: grpc, port: 9001}]
endpoints: [{addresses: [10.0.0.1]}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: t}
spec:
  ports: [{name: grpc, port: 9000, appProtocol: kubernetes.io/h2c}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-1, namespace: t, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: grpc, port: 9002}]
endpoints: [{addresses: [10.0.0.2]}]
---
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: t}
spec:
  ports: [{name: http, port: 80, appProtocol: http}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: legacy-1, namespace: t, labels: {kubernetes.io/service-name: legacy}}
addressType: IPv4
ports: [{name: http, port: 9003}]
endpoints: [{addresses: [10.0.0.3]}]
"#;

fn translate_with(extra: &str) -> Translation {
    let (objects, diagnostics) = parse_yaml(&format!("{BASE}---\n{extra}"), None);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    translate(&objects, &TranslateOptions::default())
}

fn route<'s>(t: &'s Translation, name: &str) -> &'s Route {
    t.snapshot
        .routes
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no route {name}: {:#?}", t.snapshot.routes))
}

/// Diagnostics as `severity object | field: message`.
fn printed(diagnostics: &[Diagnostic]) -> Vec<String> {
    diagnostics
        .iter()
        .map(|d| {
            let severity = if d.is_error() { "error" } else { "warning" };
            format!("{severity} {} | {}: {}", d.object, d.field, d.message)
        })
        .collect()
}

fn backend(name: &str, weight: u32) -> BackendRef {
    BackendRef {
        backend: name.to_owned(),
        weight,
    }
}

#[test]
fn a_grpc_route_is_served_as_its_http_twin_beside_an_http_route_of_the_same_name() {
    let t = translate_with(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: api, namespace: t}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.example.com]
  rules:
    - matches:
        - method: {service: helloworld.Greeter, method: SayHello}
      backendRefs: [{name: greeter, port: 9000}]
    - matches:
        - method: {service: novaedge.echo.v1.Echo}
          headers: [{name: x-canary, value: "true"}]
      filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier: {set: [{name: x-route, value: canary}]}
        - type: RequestMirror
          requestMirror: {backendRef: {name: greeter, port: 9000}}
      backendRefs:
        - {name: echo, port: 9000, weight: 3}
        - {name: greeter, port: 9000, weight: 1}
    - backendRefs: [{name: legacy, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: t}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.example.com]
  rules:
    - matches: [{path: {type: PathPrefix, value: /status}}]
      backendRefs: [{name: greeter, port: 9000}]
"#,
    );
    // A port that says HTTP/1.1 explicitly still gets h2c, with a warning on the Service.
    assert_eq!(
        printed(&t.diagnostics),
        [
            r#"warning Service t/legacy | spec.ports[port=80].appProtocol: "http" is not HTTP/2, but a GRPCRoute sends gRPC to this port: speaking h2c to it (set appProtocol: kubernetes.io/h2c)"#
        ]
    );
    assert_eq!(t.snapshot.routes.len(), 2);

    let http = route(&t, "t/api");
    assert_eq!(http.rules[0].backends, [backend("t/greeter:9000", 1)]);

    let grpc = route(&t, "grpcroute:t/api");
    assert_eq!(grpc.listener, http.listener);
    assert_eq!(grpc.hostnames, ["grpc.example.com"]);
    let rules = &grpc.rules;
    assert_eq!(rules.len(), 3);
    assert_eq!(
        rules[0].matches,
        [RouteMatch {
            path: PathMatch::Exact("/helloworld.Greeter/SayHello".into()),
            ..RouteMatch::default()
        }]
    );
    assert_eq!(rules[0].backends, [backend("t/greeter:9000/h2c", 1)]);
    assert_eq!(
        rules[1].matches[0].path,
        PathMatch::Prefix("/novaedge.echo.v1.Echo/".into())
    );
    assert_eq!(
        rules[1].matches[0].method, None,
        "gRPC adds no method condition"
    );
    let header = &rules[1].matches[0].headers[0];
    assert_eq!(
        (header.name.as_str(), header.value.as_str(), header.kind),
        ("x-canary", "true", MatchType::Exact)
    );
    // The port that says h2c is one backend for both kinds of route.
    assert_eq!(
        rules[1].backends,
        [backend("t/echo:9000", 3), backend("t/greeter:9000/h2c", 1)]
    );
    let filters = &rules[1].filters;
    assert_eq!(
        filters.response_headers,
        Some(HeaderModifier {
            set: vec![("x-route".into(), "canary".into())],
            ..HeaderModifier::default()
        })
    );
    assert_eq!(
        filters.mirrors,
        [RequestMirror {
            backend: "t/greeter:9000/h2c".into(),
            fraction_ppm: 1_000_000,
        }]
    );
    assert!(
        rules[2].matches.is_empty(),
        "a rule without matches takes every call"
    );
    assert_eq!(rules[2].backends, [backend("t/legacy:80/h2c", 1)]);

    let protocols: Vec<(&str, UpstreamProtocol)> = t
        .snapshot
        .backends
        .iter()
        .map(|b| (b.name.as_str(), b.protocol))
        .collect();
    assert_eq!(
        protocols,
        [
            ("t/echo:9000", UpstreamProtocol::H2c),
            ("t/greeter:9000", UpstreamProtocol::Http1),
            ("t/greeter:9000/h2c", UpstreamProtocol::H2c),
            ("t/legacy:80/h2c", UpstreamProtocol::H2c),
        ]
    );
    // Same endpoints, whatever the protocol.
    let endpoints = |name: &str| {
        let b = t.snapshot.backends.iter().find(|b| b.name == name).unwrap();
        b.endpoints.clone()
    };
    assert_eq!(endpoints("t/greeter:9000"), endpoints("t/greeter:9000/h2c"));
    assert_eq!(endpoints("t/greeter:9000")[0].address.port(), 9001);
}

#[test]
fn listeners_admit_grpc_routes_by_kind_section_port_and_hostname() {
    let t = translate_with(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: kinds, namespace: t}
spec:
  gatewayClassName: novaedge
  listeners:
    - {name: web, protocol: HTTP, port: 8081, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}
    - name: rpc
      protocol: HTTP
      port: 8082
      allowedRoutes: {kinds: [{group: gateway.networking.k8s.io, kind: GRPCRoute}]}
    - {name: any, protocol: HTTP, port: 8083, hostname: "*.example.com"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: everywhere, namespace: t}
spec:
  parentRefs: [{name: kinds}]
  hostnames: [a.example.com, b.example.org]
  rules: [{backendRefs: [{name: echo, port: 9000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: by-port, namespace: t}
spec:
  parentRefs: [{name: kinds, port: 8083}]
  rules: [{backendRefs: [{name: echo, port: 9000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: refused, namespace: t}
spec:
  parentRefs: [{name: kinds, sectionName: web}]
  rules: [{backendRefs: [{name: echo, port: 9000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: t}
spec:
  parentRefs: [{name: kinds}]
  rules: [{backendRefs: [{name: echo, port: 9000}]}]
"#,
    );
    assert_eq!(
        printed(&t.diagnostics),
        [
            "warning GRPCRoute t/refused | spec.parentRefs[0]: not attached to Gateway t/kinds: \
          the listener does not allow this route (allowedRoutes)"
        ]
    );
    let placed: Vec<(&str, &str, Vec<&str>)> = t
        .snapshot
        .routes
        .iter()
        .map(|r| {
            let port = t
                .snapshot
                .listeners
                .iter()
                .find(|l| l.name == r.listener)
                .unwrap()
                .port;
            let port = match port {
                8081 => "web",
                8082 => "rpc",
                8083 => "any",
                other => panic!("port {other}"),
            };
            let hosts = r.hostnames.iter().map(String::as_str).collect();
            (r.name.as_str(), port, hosts)
        })
        .collect();
    assert_eq!(
        placed,
        [
            ("t/web", "web", vec![]),
            ("t/web", "any", vec!["*.example.com"]),
            ("grpcroute:t/by-port", "any", vec!["*.example.com"]),
            (
                "grpcroute:t/everywhere",
                "rpc",
                vec!["a.example.com", "b.example.org"]
            ),
            ("grpcroute:t/everywhere", "any", vec!["a.example.com"]),
        ]
    );
}

#[test]
fn problems_name_the_grpc_route_and_the_field() {
    let t = translate_with(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: shared, namespace: t}
spec:
  parentRefs: [{name: gw}]
  hostnames: [Bad_Host]
  rules:
    - filters: [{type: ExtensionRef, extensionRef: {group: example.io, kind: Auth, name: a}}]
      backendRefs: [{name: echo, port: 9000}]
    - matches:
        - headers: [{name: x-v, type: RegularExpression, value: "v["}]
      backendRefs: [{name: missing, port: 9000}, {name: echo}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: methods, namespace: t}
spec:
  parentRefs: [{name: gw}]
  rules:
    - matches: [{method: {service: "pkg.Svc", method: "Get-It"}}]
      backendRefs: [{name: echo, port: 9000}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: methods, namespace: t}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: echo, port: 9000}]}]
"#,
    );
    let errors: Vec<String> = printed(&t.diagnostics)
        .into_iter()
        .map(|d| d.split(": ").next().unwrap().to_owned())
        .collect();
    assert_eq!(
        errors,
        [
            "error GRPCRoute t/methods | spec.rules[0].matches[0].method.method",
            "error GRPCRoute t/methods | metadata.name",
            "error GRPCRoute t/shared | spec.hostnames[0]",
            "error GRPCRoute t/shared | spec.rules[0].filters[0].type",
            "error GRPCRoute t/shared | spec.rules[1].matches[0].headers[0].value",
            // A Service that does not exist is answered 500 (Gateway API), not an error.
            "warning GRPCRoute t/shared | spec.rules[1].backendRefs[0].name",
            "error GRPCRoute t/shared | spec.rules[1].backendRefs[1].port",
        ],
        "{:#?}",
        t.diagnostics
    );
    let messages: Vec<&str> = t.diagnostics.iter().map(|d| d.message.as_str()).collect();
    assert!(
        messages[0].contains("not a gRPC method name"),
        "{}",
        messages[0]
    );
    assert_eq!(messages[1], "defined more than once");
    assert_eq!(messages[3], "ExtensionRef filters are not supported yet");
    assert_eq!(
        messages[5],
        "Service t/missing not found; its share of requests is answered 500"
    );
    assert!(t.snapshot.routes.is_empty(), "{:#?}", t.snapshot.routes);
}

#[test]
fn a_proxy_policy_targets_the_grpc_route_not_its_http_namesake() {
    let t = translate_with(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: api, namespace: t}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: echo, port: 9000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: t}
spec:
  parentRefs: [{name: gw}]
  hostnames: [web.example.com]
  rules: [{backendRefs: [{name: greeter, port: 9000}]}]
---
apiVersion: novaedge.io/v1alpha1
kind: ProxyPolicy
metadata: {name: rpc-only, namespace: t}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: GRPCRoute, name: api}
  ipFilter: {allow: [10.0.0.0/8]}
---
apiVersion: novaedge.io/v1alpha1
kind: ProxyPolicy
metadata: {name: nowhere, namespace: t}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: GRPCRoute, name: web}
  ipFilter: {deny: [192.0.2.0/24]}
"#,
    );
    let warnings: Vec<String> = printed(&t.diagnostics);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].starts_with("warning ProxyPolicy t/nowhere | spec.targetRef")
            && warnings[0].contains("GRPCRoute t/web"),
        "{warnings:#?}"
    );
    let ip_filter = |name: &str| route(&t, name).rules[0].filters.ip_filter.clone();
    assert_eq!(ip_filter("grpcroute:t/api").unwrap().allow, ["10.0.0.0/8"]);
    assert_eq!(ip_filter("t/api"), None);
}
