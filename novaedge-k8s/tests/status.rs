//! Status conditions the translation computes for GatewayClasses, Gateways, listeners and routes,
//! with the reasons Gateway API lists, and how unresolved references are served.

use novaedge_k8s::objects::parse_yaml;
use novaedge_k8s::status::{Condition, GatewayStatus, RouteStatus};
use novaedge_k8s::{TranslateOptions, Translation, translate};

const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: novaedge, generation: 2}
spec: {controllerName: novaedge.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/gateway}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra, generation: 5}
spec:
  gatewayClassName: novaedge
  listeners:
    - {name: web, protocol: HTTP, port: 8080, allowedRoutes: {namespaces: {from: All}}}
    - {name: shop, protocol: HTTP, port: 8080, hostname: "*.shop.test", allowedRoutes: {namespaces: {from: All}}}
    - {name: local, protocol: HTTP, port: 8081}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: foreign, namespace: infra}
spec:
  gatewayClassName: other
  listeners: [{name: web, protocol: HTTP, port: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: app}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec: {ports: [{name: http, port: 80}]}
"#;

fn run(extra: &str) -> Translation {
    let (objects, diagnostics) = parse_yaml(&format!("{BASE}---\n{extra}"), None);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    translate(&objects, &TranslateOptions::default())
}

fn route<'t>(t: &'t Translation, ns: &str, name: &str) -> &'t RouteStatus {
    t.status
        .routes
        .get(&("HTTPRoute", (ns.to_owned(), name.to_owned())))
        .unwrap_or_else(|| panic!("no status for {ns}/{name}: {:#?}", t.status.routes))
}

fn gateway<'t>(t: &'t Translation, name: &str) -> &'t GatewayStatus {
    &t.status.gateways[&("infra".to_owned(), name.to_owned())]
}

/// `Type=Status/Reason` of each condition, for compact assertions.
fn short(conditions: &[Condition]) -> Vec<String> {
    conditions
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            format!("{}={status}/{}", c.type_, c.reason)
        })
        .collect()
}

fn http_route(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: {name}, namespace: app, generation: 7}}\nspec:\n{spec}\n"
    )
}

#[test]
fn an_attached_route_with_resolved_refs_is_accepted_and_counted() {
    let t = run(&http_route(
        "ok",
        "  parentRefs: [{name: gw, namespace: infra, sectionName: web}]\n  \
         rules: [{backendRefs: [{name: web, port: 80}]}]",
    ));
    assert!(!t.has_errors(), "{:?}", t.diagnostics);
    let r = route(&t, "app", "ok");
    assert_eq!(r.generation, Some(7));
    assert_eq!(r.parents.len(), 1);
    assert_eq!(r.parents[0].parent, "Gateway infra/gw section web");
    assert_eq!(
        short(&r.parents[0].conditions),
        ["Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"]
    );
    let g = gateway(&t, "gw");
    assert_eq!(g.generation, Some(5));
    assert_eq!(
        short(&g.conditions),
        ["Accepted=True/Accepted", "Programmed=True/Programmed"]
    );
    let attached: Vec<(&str, u32)> = g
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.attached_routes))
        .collect();
    assert_eq!(attached, [("web", 1), ("shop", 0), ("local", 0)]);
    assert_eq!(g.listeners[0].supported_kinds, ["HTTPRoute", "GRPCRoute"]);
    assert_eq!(
        short(&g.listeners[0].conditions),
        [
            "Accepted=True/Accepted",
            "ResolvedRefs=True/ResolvedRefs",
            "Conflicted=False/NoConflicts",
            "Programmed=True/Programmed"
        ]
    );
    // Our class is accepted; another controller's class and Gateway get no status from us.
    assert_eq!(
        short(&t.status.gateway_classes["novaedge"].conditions),
        ["Accepted=True/Accepted"]
    );
    assert_eq!(t.status.gateway_classes["novaedge"].generation, Some(2));
    assert!(!t.status.gateway_classes.contains_key("other"));
    assert!(
        !t.status
            .gateways
            .contains_key(&("infra".into(), "foreign".into()))
    );
}

#[test]
fn unresolved_backends_are_served_as_500_with_resolved_refs_false() {
    let t = run(&http_route(
        "half",
        "  parentRefs: [{name: gw, namespace: infra, sectionName: web}]\n  \
         rules:\n  \
         - backendRefs: [{name: web, port: 80, weight: 1}, {name: missing, port: 80, weight: 3}]\n  \
         - matches: [{path: {value: /db}}]\n    \
           backendRefs: [{name: db, namespace: data, port: 80}]\n  \
         - matches: [{path: {value: /bucket}}]\n    \
           backendRefs: [{group: example.com, kind: Bucket, name: b}]\n  \
         - matches: [{path: {value: /port}}]\n    \
           backendRefs: [{name: web, port: 81}]",
    ));
    // Warnings, not errors: the route is served.
    assert!(!t.has_errors(), "{:?}", t.diagnostics);
    let rules = &t.snapshot.routes[0].rules;
    let shape: Vec<(usize, u32)> = rules
        .iter()
        .map(|r| (r.backends.len(), r.invalid_backend_weight))
        .collect();
    assert_eq!(shape, [(1, 3), (0, 1), (0, 1), (0, 1)]);
    let r = route(&t, "app", "half");
    let resolved = &r.parents[0].conditions[1];
    assert_eq!(
        (resolved.status, resolved.reason),
        (false, "BackendNotFound")
    );
    assert_eq!(
        resolved.message,
        "spec.rules[0].backendRefs[1].name: Service app/missing not found"
    );
    assert!(r.parents[0].conditions[0].status, "still Accepted");

    let kinds = |spec: &str| {
        let t = run(&http_route("r", spec));
        let c = route(&t, "app", "r").parents[0].conditions[1].clone();
        (c.status, c.reason)
    };
    assert_eq!(
        kinds(
            "  parentRefs: [{name: gw, namespace: infra}]\n  \
             rules: [{backendRefs: [{name: db, namespace: data, port: 80}]}]"
        ),
        (false, "RefNotPermitted")
    );
    assert_eq!(
        kinds(
            "  parentRefs: [{name: gw, namespace: infra}]\n  \
             rules: [{backendRefs: [{group: example.com, kind: Bucket, name: b}]}]"
        ),
        (false, "InvalidKind")
    );
}

#[test]
fn a_reference_grant_allows_a_cross_namespace_backend() {
    let grant = r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: app-to-db, namespace: data}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: app}]
  to: [{group: "", kind: Service, name: db}]
"#;
    let spec = "  parentRefs: [{name: gw, namespace: infra}]\n  \
                rules: [{backendRefs: [{name: db, namespace: data, port: 80}]}]";
    let t = run(&format!("{}---{grant}", http_route("r", spec)));
    assert!(
        t.diagnostics
            .iter()
            .all(|d| d.object == "Gateway infra/foreign"),
        "{:?}",
        t.diagnostics
    );
    assert_eq!(
        t.snapshot.routes[0].rules[0].backends[0].backend,
        "data/db:80"
    );
    assert_eq!(t.snapshot.routes[0].rules[0].invalid_backend_weight, 0);
    assert!(route(&t, "app", "r").parents[0].conditions[1].status);

    // A grant for another Service, or from another namespace, does not.
    for other in [
        grant.replace("name: db}", "name: cache}"),
        grant.replace("namespace: app}", "namespace: web}"),
        grant.replace("kind: HTTPRoute", "kind: GRPCRoute"),
    ] {
        let t = run(&format!("{}---{other}", http_route("r", spec)));
        let c = &route(&t, "app", "r").parents[0].conditions[1];
        assert_eq!((c.status, c.reason), (false, "RefNotPermitted"), "{other}");
    }
}

#[test]
fn parents_that_do_not_take_the_route_say_why() {
    let t = run(&http_route(
        "r",
        "  hostnames: [api.example.com]\n  \
         parentRefs:\n  \
         - {name: gw, namespace: infra, sectionName: shop}\n  \
         - {name: gw, namespace: infra, sectionName: local}\n  \
         - {name: gw, namespace: infra, sectionName: nope}\n  \
         - {name: gone, namespace: infra}\n  \
         - {name: foreign, namespace: infra}\n  \
         - {name: gw, namespace: infra, port: 8080}\n  \
         rules: [{backendRefs: [{name: web, port: 80}]}]",
    ));
    let r = route(&t, "app", "r");
    let accepted: Vec<(usize, &str, bool, &str)> = r
        .parents
        .iter()
        .map(|p| {
            let c = &p.conditions[0];
            (p.index, p.parent.as_str(), c.status, c.reason)
        })
        .collect();
    assert_eq!(
        accepted,
        [
            (
                0,
                "Gateway infra/gw section shop",
                false,
                "NoMatchingListenerHostname"
            ),
            (
                1,
                "Gateway infra/gw section local",
                false,
                "NotAllowedByListeners"
            ),
            (
                2,
                "Gateway infra/gw section nope",
                false,
                "NoMatchingParent"
            ),
            (3, "Gateway infra/gone", false, "NoMatchingParent"),
            // index 4 is another controller's Gateway: no status from NovaEdge.
            (5, "Gateway infra/gw port 8080", true, "Accepted"),
        ]
    );
    // Attached through port 8080's "web" listener only.
    let g = gateway(&t, "gw");
    assert_eq!(g.listeners[0].attached_routes, 1);
    assert_eq!(g.listeners[1].attached_routes, 0);
}

#[test]
fn an_invalid_route_is_not_accepted_and_not_counted() {
    let t = run(&http_route(
        "bad",
        "  parentRefs: [{name: gw, namespace: infra}]\n  \
         rules:\n  \
         - matches: [{path: {type: RegularExpression, value: \"/(unclosed\"}}]\n    \
           backendRefs: [{name: web, port: 80}]",
    ));
    assert!(t.has_errors());
    assert!(t.snapshot.routes.is_empty());
    let r = route(&t, "app", "bad");
    let c = &r.parents[0].conditions[0];
    assert_eq!((c.status, c.reason), (false, "UnsupportedValue"));
    assert!(
        c.message
            .starts_with("spec.rules[0].matches[0].path.value: "),
        "{}",
        c.message
    );
    assert!(
        gateway(&t, "gw")
            .listeners
            .iter()
            .all(|l| l.attached_routes == 0)
    );
    assert!(
        t.status
            .problems()
            .iter()
            .any(|p| p.starts_with("HTTPRoute app/bad: spec.parentRefs[0] (Gateway infra/gw): Accepted=False (UnsupportedValue): spec.rules[0].matches[0].path.value")),
        "{:?}",
        t.status.problems()
    );
}

#[test]
fn listener_problems_become_listener_conditions() {
    let (objects, diagnostics) = parse_yaml(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: a, namespace: infra}
spec:
  gatewayClassName: novaedge
  listeners:
    - {name: http, protocol: HTTP, port: 8443}
    - {name: tcp, protocol: TCP, port: 9000}
    - {name: kinds, protocol: HTTP, port: 8080, allowedRoutes: {kinds: [{kind: TCPRoute}, {kind: HTTPRoute}]}}
    - {name: cert, protocol: HTTPS, port: 9443, tls: {certificateRefs: [{name: missing}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: b, namespace: infra}
spec:
  gatewayClassName: novaedge
  listeners:
    - {name: https, protocol: HTTPS, port: 8443, tls: {certificateRefs: [{name: elsewhere, namespace: certs}]}}
"#,
        None,
    );
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let t = translate(&objects, &TranslateOptions::default());
    let a = &t.status.gateways[&("infra".to_owned(), "a".to_owned())];
    let by_name = |g: &GatewayStatus, name: &str| {
        short(
            &g.listeners
                .iter()
                .find(|l| l.name == name)
                .unwrap_or_else(|| panic!("listener {name}"))
                .conditions,
        )
    };
    assert_eq!(
        by_name(a, "tcp"),
        [
            "Accepted=False/UnsupportedProtocol",
            "ResolvedRefs=True/ResolvedRefs",
            "Conflicted=False/NoConflicts",
            "Programmed=False/Invalid"
        ]
    );
    assert_eq!(
        by_name(a, "kinds"),
        [
            "Accepted=True/Accepted",
            "ResolvedRefs=False/InvalidRouteKinds",
            "Conflicted=False/NoConflicts",
            "Programmed=True/Programmed"
        ]
    );
    assert_eq!(
        a.listeners[2].supported_kinds,
        ["HTTPRoute"],
        "the valid kind is still served"
    );
    assert_eq!(
        by_name(a, "cert")[1..],
        [
            "ResolvedRefs=False/InvalidCertificateRef",
            "Conflicted=False/NoConflicts",
            "Programmed=False/Invalid"
        ]
    );
    // Some listeners are served: the Gateway is accepted, saying not all are valid.
    assert_eq!(
        short(&a.conditions),
        [
            "Accepted=True/ListenersNotValid",
            "Programmed=True/Programmed"
        ]
    );

    // Gateway b's HTTPS listener wants port 8443, which gateway a serves as HTTP; and its
    // certificate is in another namespace without a grant.
    let b = &t.status.gateways[&("infra".to_owned(), "b".to_owned())];
    assert_eq!(by_name(b, "https")[1], "ResolvedRefs=False/RefNotPermitted");
    assert_eq!(
        short(&b.conditions),
        [
            "Accepted=False/ListenersNotValid",
            "Programmed=False/Invalid"
        ]
    );
}

#[test]
fn a_protocol_conflict_on_a_port_is_conflicted() {
    let (objects, _) = parse_yaml(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: a, namespace: infra}
spec:
  gatewayClassName: novaedge
  listeners: [{name: http, protocol: HTTP, port: 8443}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: c, namespace: infra}
spec:
  gatewayClassName: novaedge
  listeners: [{name: also-http, protocol: HTTP, port: 8443}, {name: other, protocol: HTTP, port: 8444}]
"#,
        None,
    );
    let t = translate(&objects, &TranslateOptions::default());
    // Two HTTP listeners share a port without conflict.
    let c = &t.status.gateways[&("infra".to_owned(), "c".to_owned())];
    assert!(c.listeners.iter().all(|l| !l.conditions[2].status));

    let (objects, _) = parse_yaml(
        &format!(
            "{}\n---\n{}",
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: a, namespace: infra}
spec:
  gatewayClassName: novaedge
  listeners: [{name: http, protocol: HTTP, port: 8443}]"#,
            self_signed_gateway()
        ),
        None,
    );
    let t = translate(&objects, &TranslateOptions::default());
    assert!(t.has_errors(), "a port conflict is an error");
    let b = &t.status.gateways[&("infra".to_owned(), "b".to_owned())];
    let conflicted = &b.listeners[0].conditions[2];
    assert_eq!(
        (conflicted.status, conflicted.reason),
        (true, "ProtocolConflict")
    );
    assert!(
        conflicted.message.contains("port 8443 is already HTTP"),
        "{}",
        conflicted.message
    );
    assert!(!b.listeners[0].conditions[3].status, "not programmed");
}

/// Gateway infra/b with an HTTPS listener on 8443 and a valid certificate Secret.
fn self_signed_gateway() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["b.test".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let indent = |pem: String| pem.replace('\n', "\n    ");
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: b-cert, namespace: infra}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
    {}
  tls.key: |
    {}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: b, namespace: infra}}
spec:
  gatewayClassName: novaedge
  listeners:
    - {{name: https, protocol: HTTPS, port: 8443, tls: {{certificateRefs: [{{name: b-cert}}]}}}}
"#,
        indent(cert.pem()),
        indent(key.serialize_pem())
    )
}
