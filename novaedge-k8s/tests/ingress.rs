//! `networking.k8s.io/v1` Ingress through the public path a user's manifests take: YAML parsed
//! into objects, translated into a snapshot, diagnostics as printed. Certificates are generated
//! with rcgen.

use base64::Engine as _;
use novaedge_k8s::file_source::FileSource;
use novaedge_k8s::objects::parse_yaml;
use novaedge_k8s::{TranslateOptions, Translation, translate};
use novaedge_snapshot::{
    ListenerProtocol, PathMatch, RequestRedirect, Route, RouteDialect, TlsCertificate,
};

// === fixtures ===

struct Pair {
    cert: String,
    key: String,
}

fn pair(name: &str) -> Pair {
    let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    Pair {
        cert: c.cert.pem(),
        key: c.signing_key.serialize_pem(),
    }
}

fn secret(name: &str, p: &Pair) -> String {
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    format!(
        "---\napiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\n\
         metadata: {{name: {name}, namespace: shop}}\n\
         data: {{tls.crt: {}, tls.key: {}}}\n",
        b64(&p.cert),
        b64(&p.key)
    )
}

/// Services `shop/web` (ports 80 `http`, 8080 `admin`) and `shop/api` (port 9000 `grpc`)
/// with their endpoints.
const SERVICES: &str = r#"
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{name: http, port: 80}, {name: admin, port: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 9001}, {name: admin, port: 9080}]
endpoints: [{addresses: [10.0.0.1]}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  ports: [{name: grpc, port: 9000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: shop, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: grpc, port: 9900}]
endpoints: [{addresses: [10.0.0.2]}]
"#;

/// An Ingress `shop/NAME`; `head` is extra YAML under `metadata` (indented two spaces),
/// `spec` the spec's lines (indented two spaces).
fn ingress(name: &str, head: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  \
         namespace: shop\n{head}spec:\n{spec}"
    )
}

/// A one-path Ingress to `web:80` for host `HOST`, with an optional class.
fn simple(name: &str, class: Option<&str>, host: &str) -> String {
    let class = class
        .map(|c| format!("  ingressClassName: {c}\n"))
        .unwrap_or_default();
    ingress(
        name,
        "",
        &format!(
            "{class}  rules:\n  - host: {host}\n    http:\n      paths:\n      - {{path: /, \
             pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n"
        ),
    )
}

fn class(name: &str, controller: &str, default: bool) -> String {
    let annotations = if default {
        "\n  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}"
    } else {
        ""
    };
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: {name}\
         {annotations}\nspec: {{controller: {controller}}}\n"
    )
}

fn run_with(yaml: &str, options: &TranslateOptions) -> Translation {
    let (objects, diagnostics) = parse_yaml(yaml, None);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    translate(&objects, options)
}

fn run(yaml: &str) -> Translation {
    run_with(yaml, &TranslateOptions::default())
}

fn clean(yaml: &str) -> Translation {
    let t = run(yaml);
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
    t
}

/// Every diagnostic of a severity as `object | field | message`.
fn lines(t: &Translation, errors: bool) -> Vec<String> {
    t.diagnostics
        .iter()
        .filter(|d| d.is_error() == errors)
        .map(|d| format!("{} | {} | {}", d.object, d.field, d.message))
        .collect()
}

/// `(name, listener, hostnames)` of every route.
fn routes(t: &Translation) -> Vec<(String, String, Vec<String>)> {
    t.snapshot
        .routes
        .iter()
        .map(|r| (r.name.clone(), r.listener.clone(), r.hostnames.clone()))
        .collect()
}

fn route<'t>(t: &'t Translation, name: &str, listener: &str) -> &'t Route {
    t.snapshot
        .routes
        .iter()
        .find(|r| r.name == name && r.listener == listener)
        .unwrap_or_else(|| panic!("no route {name} on {listener}: {:#?}", routes(t)))
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// === classes ===

#[test]
fn classes_decide_which_ingresses_are_served() {
    let yaml = [
        SERVICES.to_owned(),
        class("novaedge", "novaedge.io/ingress-controller", false),
        class("nginx", "k8s.io/ingress-nginx", false),
        simple("mine", Some("novaedge"), "mine.test"),
        simple("theirs", Some("nginx"), "theirs.test"),
        ingress(
            "legacy",
            "  annotations: {kubernetes.io/ingress.class: nginx}\n",
            "  rules: [{host: legacy.test, http: {paths: [{path: /, pathType: Prefix, backend: \
             {service: {name: web, port: {number: 80}}}}]}}]\n",
        ),
        simple("absent-class", Some("elsewhere"), "absent.test"),
        simple("no-class", None, "none.test"),
    ]
    .concat();
    let t = run(&yaml);
    assert!(!t.has_errors(), "{:#?}", t.diagnostics);
    assert_eq!(
        lines(&t, false),
        [
            "Ingress shop/legacy | metadata.annotations[kubernetes.io/ingress.class] | \
             IngressClass nginx belongs to controller \"k8s.io/ingress-nginx\"; not served",
            "Ingress shop/theirs | spec.ingressClassName | IngressClass nginx belongs to \
             controller \"k8s.io/ingress-nginx\"; not served",
        ]
    );
    // A class absent from the input is served, as is an Ingress without a class when no
    // IngressClass is the default. Routes come in Ingress name order.
    assert_eq!(
        routes(&t),
        [
            (
                "ingress:shop/absent-class/absent.test".into(),
                "http-80".into(),
                s(&["absent.test"])
            ),
            (
                "ingress:shop/mine/mine.test".into(),
                "http-80".into(),
                s(&["mine.test"])
            ),
            (
                "ingress:shop/no-class/none.test".into(),
                "http-80".into(),
                s(&["none.test"])
            ),
        ]
    );

    // The default class decides for an Ingress without one.
    let theirs_default = [
        SERVICES.to_owned(),
        class("nginx", "k8s.io/ingress-nginx", true),
        simple("no-class", None, "none.test"),
    ]
    .concat();
    let t = run(&theirs_default);
    assert_eq!(
        lines(&t, false),
        [
            "Ingress shop/no-class | spec.ingressClassName | not set, and the default \
          IngressClass nginx belongs to controller \"k8s.io/ingress-nginx\"; not served"
        ]
    );
    assert!(t.snapshot.routes.is_empty());
    assert!(t.snapshot.listeners.is_empty(), "no Ingress, no listener");

    let ours_default = [
        SERVICES.to_owned(),
        class("nginx", "k8s.io/ingress-nginx", false),
        class("novaedge", "novaedge.io/ingress-controller", true),
        simple("no-class", None, "none.test"),
    ]
    .concat();
    let t = clean(&ours_default);
    assert_eq!(t.snapshot.routes.len(), 1);

    // The class field wins over a legacy annotation that disagrees.
    let both = [
        SERVICES.to_owned(),
        class("nginx", "k8s.io/ingress-nginx", false),
        simple("both", Some("novaedge"), "both.test").replace(
            "  namespace: shop\n",
            "  namespace: shop\n  annotations: {kubernetes.io/ingress.class: nginx}\n",
        ),
    ]
    .concat();
    let t = run(&both);
    assert_eq!(
        lines(&t, false),
        [
            "Ingress shop/both | metadata.annotations[kubernetes.io/ingress.class] | \"nginx\" \
          differs from spec.ingressClassName \"novaedge\"; ignored"
        ]
    );
    assert_eq!(t.snapshot.routes.len(), 1);

    // IngressClass is cluster-scoped, as diagnostics print it.
    let (objects, _) = parse_yaml(&class("novaedge", "x", false), None);
    assert_eq!(objects[0].object.describe(), "IngressClass novaedge");
}

// === rules ===

#[test]
fn path_types_named_ports_and_backends_shared_with_httproutes() {
    let yaml = [
        SERVICES,
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  gatewayClassName: novaedge
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{name: gw}]
  hostnames: [gateway.test]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site, namespace: shop, creationTimestamp: "2024-01-02T03:04:05Z"}
spec:
  rules:
  - host: "*.shop.test"
    http:
      paths:
      - {path: /exact, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /admin, pathType: Prefix, backend: {service: {name: web, port: {name: admin}}}}
      - path: /api
        pathType: ImplementationSpecific
        backend: {service: {name: api, port: {name: grpc}}}
  - http:
      paths:
      - {pathType: ImplementationSpecific, backend: {service: {name: web, port: {name: http}}}}
  - host: "*.shop.test"
    http:
      paths:
      - {path: /more, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#,
    ]
    .concat();
    let t = clean(&yaml);
    let s_ = &t.snapshot;
    // The Gateway's HTTP listener on port 80 is the Ingress HTTP port too: one listener.
    assert_eq!(s_.listeners.len(), 1);
    assert_eq!(s_.listeners[0].name, "http-80");
    assert_eq!(
        routes(&t),
        [
            ("shop/r".into(), "http-80".into(), s(&["gateway.test"])),
            (
                "ingress:shop/site/*.shop.test".into(),
                "http-80".into(),
                s(&["*.shop.test"])
            ),
            ("ingress:shop/site".into(), "http-80".into(), vec![]),
        ]
    );
    let site = route(&t, "ingress:shop/site/*.shop.test", "http-80");
    assert_eq!(site.dialect, RouteDialect::Ingress);
    assert_eq!(site.creation_timestamp, 1_704_164_645);
    let paths: Vec<(PathMatch, String)> = site
        .rules
        .iter()
        .map(|r| (r.matches[0].path.clone(), r.backends[0].backend.clone()))
        .collect();
    assert_eq!(
        paths,
        [
            (PathMatch::Exact("/exact".into()), "shop/web:80".into()),
            (PathMatch::Prefix("/admin".into()), "shop/web:8080".into()),
            (PathMatch::Prefix("/api".into()), "shop/api:9000".into()),
            // The second rule for the same host joins the same route.
            (PathMatch::Prefix("/more".into()), "shop/web:80".into()),
        ]
    );
    let any = route(&t, "ingress:shop/site", "http-80");
    assert_eq!(any.rules[0].matches[0].path, PathMatch::Prefix("/".into()));
    assert_eq!(any.rules[0].backends[0].backend, "shop/web:80");
    assert_eq!(
        route(&t, "shop/r", "http-80").dialect,
        RouteDialect::GatewayApi
    );
    // One Service port is one backend, whoever routes to it; named ports resolve to theirs.
    let backends: Vec<(&str, Vec<String>)> = s_
        .backends
        .iter()
        .map(|b| {
            (
                b.name.as_str(),
                b.endpoints.iter().map(|e| e.address.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(
        backends,
        [
            ("shop/api:9000", s(&["10.0.0.2:9900"])),
            ("shop/web:80", s(&["10.0.0.1:9001"])),
            ("shop/web:8080", s(&["10.0.0.1:9080"])),
        ]
    );
}

#[test]
fn the_default_backend_is_a_catch_all_that_loses_to_every_rule() {
    let yaml = [
        SERVICES,
        r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: newer, namespace: shop, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  rules:
  - http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 9000}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: older, namespace: shop, creationTimestamp: "2020-01-01T00:00:00Z"}
spec:
  defaultBackend: {service: {name: web, port: {name: http}}}
"#,
    ]
    .concat();
    let t = clean(&yaml);
    let default = route(&t, "ingress:shop/older/defaultBackend", "http-80");
    assert!(default.hostnames.is_empty());
    assert_eq!(
        default.rules[0].matches[0].path,
        PathMatch::Prefix("/".into())
    );
    assert_eq!(default.rules[0].backends[0].backend, "shop/web:80");
    // Same host (any) and same path as the newer Ingress's rule: the data plane breaks the tie
    // by creation time, and the default backend's is later than any real one.
    let rule = route(&t, "ingress:shop/newer", "http-80");
    assert!(default.creation_timestamp > rule.creation_timestamp);
    assert!(default.creation_timestamp > 4_102_444_800, "after 2100");
    assert_eq!(default.dialect, RouteDialect::Ingress);
}

#[test]
fn resource_backends_are_skipped_with_a_warning() {
    let yaml = [
        SERVICES,
        &ingress(
            "mixed",
            "",
            "  rules:\n  - host: a.test\n    http:\n      paths:\n      - {path: /bucket, \
             pathType: Prefix, backend: {resource: {apiGroup: k8s.example.com, kind: \
             StorageBucket, name: assets}}}\n      - {path: /, pathType: Prefix, backend: \
             {service: {name: web, port: {number: 80}}}}\n",
        ),
    ]
    .concat();
    let t = run(&yaml);
    assert!(!t.has_errors(), "{:#?}", t.diagnostics);
    assert_eq!(
        lines(&t, false),
        [
            "Ingress shop/mixed | spec.rules[0].http.paths[0].backend.resource | resource \
          backends are not supported; skipped"
        ]
    );
    let r = route(&t, "ingress:shop/mixed/a.test", "http-80");
    assert_eq!(r.rules.len(), 1);
    assert_eq!(r.rules[0].matches[0].path, PathMatch::Prefix("/".into()));
}

#[test]
fn mistakes_name_the_object_and_field_and_drop_the_ingress() {
    let bad_path = |name: &str, path: &str| {
        ingress(
            name,
            "",
            &format!(
                "  rules:\n  - host: a.test\n    http:\n      paths:\n      - {path}\n      - \
                 {{path: /ok, pathType: Prefix, backend: {{service: {{name: web, port: \
                 {{number: 80}}}}}}}}\n"
            ),
        )
    };
    let yaml = [
        SERVICES.to_owned(),
        bad_path(
            "a-no-service",
            "{path: /, pathType: Prefix, backend: {service: {name: nope, port: {number: 80}}}}",
        ),
        bad_path(
            "b-no-port",
            "{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 81}}}}",
        ),
        bad_path(
            "c-no-named-port",
            "{path: /, pathType: Prefix, backend: {service: {name: web, port: {name: https}}}}",
        ),
        bad_path(
            "d-path-type",
            "{path: /, pathType: Regex, backend: {service: {name: web, port: {number: 80}}}}",
        ),
        bad_path(
            "e-relative",
            "{path: api, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}",
        ),
        ingress(
            "f-host",
            "",
            "  rules: [{host: \"Bad_Host\", http: {paths: [{path: /, pathType: Prefix, backend: \
             {service: {name: web, port: {number: 80}}}}]}}]\n",
        ),
        ingress(
            "g-annotation",
            "  annotations: {novaedge.io/ssl-redirect: \"yes\"}\n",
            "  defaultBackend: {service: {name: web, port: {number: 80}}}\n",
        ),
        ingress(
            "h-default",
            "",
            "  defaultBackend: {service: {name: web}}\n",
        ),
        ingress(
            "i-secret",
            "",
            "  tls: [{hosts: [a.test], secretName: missing}]\n  defaultBackend: {service: {name: \
             web, port: {number: 80}}}\n",
        ),
        ingress(
            "j-no-secret-name",
            "",
            "  tls: [{hosts: [a.test]}]\n  defaultBackend: {service: {name: web, port: {number: \
             80}}}\n",
        ),
    ]
    .concat();
    let t = run(&yaml);
    assert_eq!(
        lines(&t, true),
        [
            "Ingress shop/a-no-service | spec.rules[0].http.paths[0].backend.service.name | \
             Service shop/nope not found",
            "Ingress shop/b-no-port | spec.rules[0].http.paths[0].backend.service.port.number | \
             Service shop/web has no port 81",
            "Ingress shop/c-no-named-port | spec.rules[0].http.paths[0].backend.service.port.name \
             | Service shop/web has no port named \"https\"",
            "Ingress shop/d-path-type | spec.rules[0].http.paths[0].pathType | \"Regex\": use \
             Exact, Prefix or ImplementationSpecific",
            "Ingress shop/e-relative | spec.rules[0].http.paths[0].path | \"api\" must start \
             with '/'",
            "Ingress shop/f-host | spec.rules[0].host | \"Bad_Host\": labels may hold only \
             lowercase letters, digits and '-'",
            "Ingress shop/g-annotation | metadata.annotations[novaedge.io/ssl-redirect] | \
             \"yes\": use \"true\" or \"false\"",
            "Ingress shop/h-default | spec.defaultBackend.service.port | required: a number or \
             a name",
            "Ingress shop/i-secret | spec.tls[0].secretName | Secret shop/missing not found",
            "Ingress shop/j-no-secret-name | spec.tls[0].secretName | required: NovaEdge has no \
             certificate of its own to fall back on",
        ]
    );
    // Every one of them is dropped whole, the good paths too.
    assert!(t.snapshot.routes.is_empty(), "{:#?}", routes(&t));
}

#[test]
fn a_secret_whose_key_is_not_the_certificates_is_an_error_on_the_ingress() {
    let (a, b) = (pair("a.test"), pair("b.test"));
    let mixed = Pair {
        cert: a.cert.clone(),
        key: b.key.clone(),
    };
    let yaml = [
        SERVICES.to_owned(),
        secret("mixed", &mixed),
        ingress(
            "site",
            "",
            "  tls: [{hosts: [a.test], secretName: mixed}]\n  defaultBackend: {service: {name: \
             web, port: {number: 80}}}\n",
        ),
    ]
    .concat();
    let errors = lines(&run(&yaml), true);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("Ingress shop/site | spec.tls[0].secretName | Secret shop/mixed: "),
        "{errors:#?}"
    );
}

// === TLS and redirects ===

fn cert(source: &str, names: &[&str], p: &Pair) -> TlsCertificate {
    TlsCertificate {
        source: source.into(),
        server_names: s(names),
        cert_chain_pem: p.cert.clone(),
        private_key_pem: p.key.clone(),
    }
}

#[test]
fn tls_entries_give_certificates_per_host_and_a_default() {
    let (shop, fallback) = (pair("shop.test"), pair("fallback.test"));
    let yaml = [
        SERVICES.to_owned(),
        secret("shop-tls", &shop),
        secret("fallback-tls", &fallback),
        ingress(
            "site",
            "",
            "  tls:\n  - {hosts: [shop.test, \"*.shop.test\"], secretName: shop-tls}\n  - \
             {secretName: fallback-tls}\n  rules:\n  - host: shop.test\n    http: {paths: \
             [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: \
             80}}}}]}\n",
        ),
    ]
    .concat();
    let t = run_with(
        &yaml,
        &TranslateOptions {
            ingress_http_port: 8080,
            ingress_https_port: 8443,
            ..TranslateOptions::default()
        },
    );
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
    let names: Vec<(&str, u16, ListenerProtocol)> = t
        .snapshot
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.port, l.protocol))
        .collect();
    assert_eq!(
        names,
        [
            ("http-8080", 8080, ListenerProtocol::Http),
            ("https-8443", 8443, ListenerProtocol::Https),
        ]
    );
    let tls = t.snapshot.listeners[1].tls.as_ref().unwrap();
    assert_eq!(
        tls.certificates,
        [
            cert("Secret shop/shop-tls", &["shop.test", "*.shop.test"], &shop),
            cert("Secret shop/fallback-tls", &[], &fallback),
        ]
    );
    assert_eq!(tls.default_certificate, Some(1));
    assert_eq!(tls.client_auth, None);
    // Served on both ports, without a redirect (it is opt-in).
    assert_eq!(
        routes(&t),
        [
            (
                "ingress:shop/site/shop.test".into(),
                "http-8080".into(),
                s(&["shop.test"])
            ),
            (
                "ingress:shop/site/shop.test".into(),
                "https-8443".into(),
                s(&["shop.test"])
            ),
        ]
    );
    assert!(t.snapshot.listeners[0].https_redirect_port.is_none());
    assert!(
        t.snapshot.routes[0].rules[0].filters.redirect.is_none(),
        "no redirect unless asked for"
    );
}

#[test]
fn ssl_redirect_sends_the_ingress_hosts_to_https() {
    let shop = pair("shop.test");
    let body = "  tls: [{hosts: [shop.test], secretName: shop-tls}]\n  defaultBackend: {service: \
                {name: web, port: {number: 80}}}\n  rules:\n  - host: shop.test\n    http: \
                {paths: [{path: /app, pathType: Prefix, backend: {service: {name: web, port: \
                {number: 80}}}}]}\n  - http: {paths: [{path: /status, pathType: Exact, backend: \
                {service: {name: web, port: {number: 80}}}}]}\n";
    let yaml = [
        SERVICES.to_owned(),
        secret("shop-tls", &shop),
        ingress(
            "site",
            "  annotations: {novaedge.io/ssl-redirect: \"true\"}\n",
            body,
        ),
        // Without the annotation, a neighbour keeps its HTTP traffic.
        simple("plain", None, "plain.test"),
    ]
    .concat();
    let t = clean(&yaml);
    let to_https = RequestRedirect {
        scheme: Some("https".into()),
        port: None, // 443 is left out of the Location
        status_code: 301,
        ..RequestRedirect::default()
    };
    // On HTTP: every path of the Ingress's host, the host-less paths it serves, and its
    // default backend answer with the redirect; nothing goes to a backend.
    let host = route(&t, "ingress:shop/site/shop.test", "http-80");
    assert_eq!(host.rules.len(), 1);
    assert_eq!(host.rules[0].matches[0].path, PathMatch::Prefix("/".into()));
    assert_eq!(host.rules[0].filters.redirect.as_ref(), Some(&to_https));
    assert!(host.rules[0].backends.is_empty());
    let any = route(&t, "ingress:shop/site", "http-80");
    assert_eq!(
        any.rules[0].matches[0].path,
        PathMatch::Exact("/status".into())
    );
    assert_eq!(any.rules[0].filters.redirect.as_ref(), Some(&to_https));
    let default = route(&t, "ingress:shop/site/defaultBackend", "http-80");
    assert_eq!(default.rules[0].filters.redirect.as_ref(), Some(&to_https));
    // On HTTPS: the backends.
    let host = route(&t, "ingress:shop/site/shop.test", "https-443");
    assert_eq!(host.rules[0].backends[0].backend, "shop/web:80");
    assert!(host.rules[0].filters.redirect.is_none());
    let plain = route(&t, "ingress:shop/plain/plain.test", "http-80");
    assert!(plain.rules[0].filters.redirect.is_none());
    assert!(
        t.snapshot
            .listeners
            .iter()
            .all(|l| l.https_redirect_port.is_none()),
        "the redirect is per host, not per listener"
    );

    // Another HTTPS port appears in the Location.
    let t = run_with(
        &yaml,
        &TranslateOptions {
            ingress_http_port: 8080,
            ingress_https_port: 8443,
            ..TranslateOptions::default()
        },
    );
    let host = route(&t, "ingress:shop/site/shop.test", "http-8080");
    assert_eq!(
        host.rules[0].filters.redirect.as_ref().and_then(|r| r.port),
        Some(8443)
    );

    // A redirected host that no TLS entry names would fail the handshake: say so.
    let yaml = [
        SERVICES.to_owned(),
        secret("shop-tls", &shop),
        ingress(
            "site",
            "  annotations: {novaedge.io/ssl-redirect: \"true\"}\n",
            "  tls: [{hosts: [\"*.shop.test\"], secretName: shop-tls}]\n  rules:\n  - host: \
             a.shop.test\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: \
             {name: web, port: {number: 80}}}}]}\n  - host: blog.test\n    http: {paths: [{path: \
             /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}\n",
        ),
    ]
    .concat();
    let t = run(&yaml);
    assert_eq!(
        lines(&t, false),
        [
            "Ingress shop/site | spec.rules[1].host | blog.test is redirected to HTTPS \
          (novaedge.io/ssl-redirect), but no spec.tls entry of the Ingress names it"
        ]
    );

    // Without TLS there is nothing to redirect to.
    let yaml = [
        SERVICES.to_owned(),
        ingress(
            "site",
            "  annotations: {novaedge.io/ssl-redirect: \"true\"}\n",
            "  defaultBackend: {service: {name: web, port: {number: 80}}}\n",
        ),
    ]
    .concat();
    let t = run(&yaml);
    assert_eq!(
        lines(&t, false),
        [
            "Ingress shop/site | metadata.annotations[novaedge.io/ssl-redirect] | the Ingress has \
          no spec.tls, so it is not served over HTTPS; no redirect"
        ]
    );
    let default = route(&t, "ingress:shop/site/defaultBackend", "http-80");
    assert!(default.rules[0].filters.redirect.is_none());
}

// === ports shared with Gateways ===

fn gateway(listeners: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, \
         namespace: shop}}\nspec:\n  gatewayClassName: novaedge\n  listeners:\n{listeners}"
    )
}

#[test]
fn an_https_port_shared_with_a_gateway_merges_certificates_by_server_name() {
    let (gw_shop, gw_default, ing_shop, ing_other, ing_default) = (
        pair("shop.test"),
        pair("gw.test"),
        pair("shop.test"),
        pair("other.test"),
        pair("ing.test"),
    );
    let yaml = [
        SERVICES.to_owned(),
        secret("gw-shop", &gw_shop),
        secret("gw-default", &gw_default),
        secret("ing-shop", &ing_shop),
        secret("ing-other", &ing_other),
        secret("ing-default", &ing_default),
        gateway(
            "  - {name: shop, protocol: HTTPS, port: 443, hostname: shop.test, tls: \
             {certificateRefs: [{name: gw-shop}]}}\n  - {name: any, protocol: HTTPS, port: 443, \
             tls: {certificateRefs: [{name: gw-default}]}}\n",
        ),
        ingress(
            "site",
            "",
            "  tls:\n  - {hosts: [shop.test, other.test], secretName: ing-shop}\n  - {hosts: \
             [more.test], secretName: ing-other}\n  - {hosts: [other2.test], secretName: \
             ing-other}\n  - {secretName: ing-default}\n  defaultBackend: {service: {name: web, \
             port: {number: 80}}}\n",
        ),
    ]
    .concat();
    let t = run(&yaml);
    assert!(!t.has_errors(), "{:#?}", t.diagnostics);
    assert_eq!(
        lines(&t, false),
        [
            "Ingress shop/site | spec.tls[0].hosts[0] | shop.test is already served on port 443 \
             with the certificate of Secret shop/gw-shop; Secret shop/ing-shop is not used for it",
            "Ingress shop/site | spec.tls[3] | port 443 already serves the certificates of \
             listener \"any\" of Gateway shop/gw to clients without a known SNI name; Secret \
             shop/ing-default is served only for its own DNS names",
        ]
    );
    let https: Vec<_> = t
        .snapshot
        .listeners
        .iter()
        .filter(|l| l.port == 443)
        .collect();
    assert_eq!(https.len(), 1);
    assert_eq!(https[0].name, "https-443");
    let tls = https[0].tls.as_ref().unwrap();
    assert_eq!(
        tls.certificates,
        [
            cert("Secret shop/gw-shop", &["shop.test"], &gw_shop),
            cert("Secret shop/gw-default", &[], &gw_default),
            cert("Secret shop/ing-shop", &["other.test"], &ing_shop),
            // Two entries with one Secret: one certificate for both names.
            cert(
                "Secret shop/ing-other",
                &["more.test", "other2.test"],
                &ing_other
            ),
            cert("Secret shop/ing-default", &[], &ing_default),
        ]
    );
    assert_eq!(
        tls.default_certificate,
        Some(1),
        "the Gateway's default stays"
    );
    assert_eq!(
        routes(&t),
        [
            (
                "ingress:shop/site/defaultBackend".into(),
                "http-80".into(),
                vec![]
            ),
            (
                "ingress:shop/site/defaultBackend".into(),
                "https-443".into(),
                vec![]
            ),
        ]
    );
}

#[test]
fn http_and_https_on_one_port_is_an_error_on_the_ingress() {
    let shop = pair("shop.test");
    let tls_ingress = ingress(
        "site",
        "",
        "  tls: [{hosts: [shop.test], secretName: shop-tls}]\n  defaultBackend: {service: {name: \
         web, port: {number: 80}}}\n",
    );
    // A Gateway serves HTTPS on the Ingress HTTP port.
    let yaml = [
        SERVICES.to_owned(),
        secret("shop-tls", &shop),
        gateway(
            "  - {name: tls, protocol: HTTPS, port: 80, tls: {certificateRefs: [{name: \
             shop-tls}]}}\n",
        ),
        tls_ingress.clone(),
    ]
    .concat();
    let t = run(&yaml);
    assert_eq!(
        lines(&t, true),
        [
            "Ingress shop/site |  | port 80 (the Ingress HTTP port) is HTTPS for listener \"tls\" \
          of Gateway shop/gw; HTTP and HTTPS cannot share a port (see --ingress-http-port and \
          --ingress-https-port)"
        ]
    );
    assert!(t.snapshot.routes.is_empty());

    // A Gateway serves HTTP on the Ingress HTTPS port.
    let yaml = [
        SERVICES.to_owned(),
        secret("shop-tls", &shop),
        gateway("  - {name: web, protocol: HTTP, port: 443}\n"),
        tls_ingress.clone(),
    ]
    .concat();
    let t = run(&yaml);
    assert_eq!(
        lines(&t, true),
        [
            "Ingress shop/site | spec.tls | port 443 (the Ingress HTTPS port) is HTTP for \
          listener \"web\" of Gateway shop/gw; HTTP and HTTPS cannot share a port (see \
          --ingress-http-port and --ingress-https-port)"
        ]
    );

    // A Gateway whose HTTP listener on the Ingress HTTP port redirects the whole port.
    let yaml = [
        SERVICES.to_owned(),
        secret("shop-tls", &shop),
        gateway(
            "  - {name: web, protocol: HTTP, port: 80}\n  - {name: tls, protocol: HTTPS, port: \
             8443, tls: {certificateRefs: [{name: shop-tls}]}}\n",
        )
        .replace(
            "namespace: shop}",
            "namespace: shop, annotations: {novaedge.io/https-redirect: web}}",
        ),
        simple("plain", None, "plain.test"),
    ]
    .concat();
    let t = run(&yaml);
    assert!(!t.has_errors(), "{:#?}", t.diagnostics);
    assert_eq!(
        lines(&t, false),
        [
            "Ingress shop/plain |  | port 80 (the Ingress HTTP port) is shared with listener \
          \"web\" of Gateway shop/gw, whose Gateway redirects every request on it to HTTPS port \
          8443; the Ingress is not served over HTTP"
        ]
    );

    // Both Ingress ports set to one number.
    let yaml = [SERVICES.to_owned(), secret("shop-tls", &shop), tls_ingress].concat();
    let t = run_with(
        &yaml,
        &TranslateOptions {
            ingress_http_port: 8000,
            ingress_https_port: 8000,
            ..TranslateOptions::default()
        },
    );
    assert_eq!(lines(&t, true).len(), 1, "{:#?}", t.diagnostics);
    assert!(lines(&t, true)[0].starts_with("Ingress shop/site | spec.tls | port 8000"));
}

#[test]
fn the_file_source_translates_with_the_ingress_ports_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("ingress.yaml");
    std::fs::write(
        &yaml,
        [SERVICES.to_owned(), simple("site", None, "a.test")].concat(),
    )
    .unwrap();
    let mut source = FileSource::new(vec![yaml.clone()]).with_options(TranslateOptions {
        ingress_http_port: 18080,
        ..TranslateOptions::default()
    });
    let loaded = source.load().unwrap();
    assert_eq!(loaded.snapshot.listeners[0].name, "http-18080");
    assert_eq!(loaded.snapshot.version, 1);
    let diagnostics = FileSource::check(
        std::slice::from_ref(&yaml),
        &TranslateOptions {
            ingress_http_port: 443,
            ..TranslateOptions::default()
        },
    );
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
}

#[test]
fn the_ingress_example_is_accepted() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ingress");
    let diagnostics = FileSource::check(&[dir], &TranslateOptions::default());
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
}
