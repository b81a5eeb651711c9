//! TLS through the public path a user's manifests take: YAML (or files) parsed into objects,
//! translated into a snapshot, diagnostics as printed. Certificates are generated with rcgen.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use novaedge_k8s::file_source::FileSource;
use novaedge_k8s::objects::parse_yaml;
use novaedge_k8s::{Diagnostic, TranslateOptions, Translation, translate};
use novaedge_snapshot::{ClientAuth, ListenerProtocol, TlsCertificate, UpstreamTls};

// === fixtures ===

/// A self-signed certificate and its key, PEM.
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

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn secret(namespace: &str, name: &str, p: &Pair) -> String {
    secret_data(namespace, name, &p.cert, &p.key)
}

fn secret_data(namespace: &str, name: &str, cert: &str, key: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\n\
         metadata: {{name: {name}, namespace: {namespace}}}\n\
         data: {{tls.crt: {}, tls.key: {}}}\n",
        b64(cert),
        b64(key)
    )
}

fn block(text: &str, indent: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(indent)))
        .collect()
}

fn config_map(namespace: &str, name: &str, pem: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         data:\n  ca.crt: |\n{}",
        block(pem, 4)
    )
}

/// Service `shop/web` (ports 80 `http` and 443 `https`, with `annotations` as YAML lines),
/// its endpoints, and a route from Gateway `gw` to both ports.
fn backend(annotations: &str) -> String {
    let annotations = if annotations.is_empty() {
        String::new()
    } else {
        format!("  annotations:\n{}", block(annotations, 4))
    };
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
{annotations}spec:
  ports: [{{name: http, port: 80}}, {{name: https, port: 443}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 9001}}, {{name: https, port: 9443}}]
endpoints: [{{addresses: [10.0.0.1]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: shop}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [shop.example.test]
  rules:
    - backendRefs: [{{name: web, port: 80}}]
    - matches: [{{path: {{value: /secure}}}}]
      backendRefs: [{{name: web, port: 443}}]
"#
    )
}

fn run(yaml: &str) -> Translation {
    let (objects, diagnostics) = parse_yaml(yaml, None);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    translate(&objects, &TranslateOptions::default())
}

/// The translation must be clean.
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

fn errors(yaml: &str) -> Vec<String> {
    lines(&run(yaml), true)
}

fn warnings(yaml: &str) -> Vec<String> {
    let t = run(yaml);
    assert!(!t.has_errors(), "{:#?}", t.diagnostics);
    lines(&t, false)
}

fn gateway(annotations: &str, listeners: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  \
         namespace: shop\n  annotations: {{{annotations}}}\nspec:\n  gatewayClassName: novaedge\n  \
         listeners:\n{}",
        block(listeners, 4)
    )
}

fn https(name: &str, port: u16, hostname: Option<&str>, secrets: &[&str]) -> String {
    let refs: Vec<String> = secrets.iter().map(|s| format!("{{name: {s}}}")).collect();
    let host = hostname.map_or(String::new(), |h| format!(", hostname: '{h}'"));
    format!(
        "- {{name: {name}, protocol: HTTPS, port: {port}{host}, tls: {{mode: Terminate, \
         certificateRefs: [{}]}}}}\n",
        refs.join(", ")
    )
}

fn cert(source: &str, names: &[&str], p: &Pair) -> TlsCertificate {
    TlsCertificate {
        source: source.into(),
        server_names: names.iter().map(|n| n.to_string()).collect(),
        cert_chain_pem: p.cert.clone(),
        private_key_pem: p.key.clone(),
    }
}

// === HTTPS listeners ===

#[test]
fn https_listeners_serve_certificates_per_hostname_and_a_default() {
    let (shop, api, api2, fallback) = (
        pair("shop.example.test"),
        pair("api.example.test"),
        pair("api.example.test"),
        pair("fallback.example.test"),
    );
    let listeners = format!(
        "- {{name: http, protocol: HTTP, port: 8080}}\n{}{}{}",
        https("shop", 8443, Some("shop.example.test"), &["shop-tls"]),
        https(
            "api",
            8443,
            Some("*.api.example.test"),
            &["api-rsa", "api-ec"]
        ),
        https("fallback", 8443, None, &["fallback-tls"]),
    );
    let t = clean(&format!(
        "{}{}{}{}{}{}",
        gateway("", &listeners),
        secret("shop", "shop-tls", &shop),
        secret("shop", "api-rsa", &api),
        secret("shop", "api-ec", &api2),
        secret("shop", "fallback-tls", &fallback),
        backend(""),
    ));
    let s = &t.snapshot;
    let names: Vec<(&str, ListenerProtocol)> = s
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.protocol))
        .collect();
    assert_eq!(
        names,
        [
            ("http-8080", ListenerProtocol::Http),
            ("https-8443", ListenerProtocol::Https)
        ]
    );
    assert_eq!(s.listeners[0].tls, None);
    let tls = s.listeners[1].tls.as_ref().unwrap();
    assert_eq!(
        tls.certificates,
        [
            cert("Secret shop/shop-tls", &["shop.example.test"], &shop),
            cert("Secret shop/api-rsa", &["*.api.example.test"], &api),
            cert("Secret shop/api-ec", &["*.api.example.test"], &api2),
            cert("Secret shop/fallback-tls", &[], &fallback),
        ]
    );
    assert_eq!(tls.default_certificate, Some(3));
    assert_eq!(tls.client_auth, None);
    // The route attaches to both ports, with the hostname intersection on each.
    let routes: Vec<(&str, &[String])> = s
        .routes
        .iter()
        .map(|r| (r.listener.as_str(), r.hostnames.as_slice()))
        .collect();
    assert_eq!(
        routes,
        [
            ("http-8080", &["shop.example.test".to_owned()][..]),
            ("https-8443", &["shop.example.test".to_owned()][..]),
        ]
    );
    // No private key in the snapshot's Debug output.
    let printed = format!("{s:?}");
    assert!(!printed.contains(shop.key.lines().nth(1).unwrap()));
}

#[test]
fn stringdata_secrets_and_a_shared_port_across_gateways() {
    let (a, b) = (pair("a.example.test"), pair("b.example.test"));
    let string_data = format!(
        "---\napiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\n\
         metadata: {{name: b-tls, namespace: shop}}\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        block(&b.cert, 4),
        block(&b.key, 4)
    );
    let second =
        gateway("", &https("b", 443, None, &["b-tls"])).replace("name: gw\n", "name: gw2\n");
    let yaml = format!(
        "{}{second}{}{string_data}",
        gateway("", &https("a", 443, None, &["a-tls"])),
        secret("shop", "a-tls", &a),
    );
    let t = run(&yaml);
    // Gateway shop/gw comes first (sorted by name): its certificate is the default.
    assert_eq!(
        lines(&t, false),
        [
            "Gateway shop/gw2 | spec.listeners[0].tls.certificateRefs | port 443 already serves \
          the certificates of listener \"a\" of Gateway shop/gw to clients without a known SNI \
          name; these are served only for their own DNS names"
        ]
    );
    assert!(!t.has_errors());
    let tls = t.snapshot.listeners[0].tls.as_ref().unwrap();
    assert_eq!(
        tls.certificates,
        [
            cert("Secret shop/a-tls", &[], &a),
            cert("Secret shop/b-tls", &[], &b)
        ]
    );
    assert_eq!(tls.default_certificate, Some(0));

    // The same certificate through two hostname-less listeners is one certificate, no warning.
    let same = gateway("", &https("b", 443, None, &["a-tls"])).replace("name: gw\n", "name: gw2\n");
    let t = clean(&format!(
        "{}{same}{}",
        gateway("", &https("a", 443, None, &["a-tls"])),
        secret("shop", "a-tls", &a),
    ));
    assert_eq!(
        t.snapshot.listeners[0]
            .tls
            .as_ref()
            .unwrap()
            .certificates
            .len(),
        1
    );
}

#[test]
fn passthrough_and_other_protocols_are_skipped_with_a_warning() {
    let listeners = "- {name: pass, protocol: HTTPS, port: 443, tls: {mode: Passthrough}}\n\
                     - {name: tcp, protocol: TCP, port: 5432}\n";
    assert_eq!(
        warnings(&gateway("", listeners)),
        [
            "Gateway shop/gw | spec.listeners[0].tls.mode | Passthrough is not supported; \
             listener skipped",
            "Gateway shop/gw | spec.listeners[1].protocol | TCP listeners are not supported \
             yet; listener skipped",
        ]
    );
    assert!(run(&gateway("", listeners)).snapshot.listeners.is_empty());
}

#[test]
fn certificate_mistakes_name_the_listener_field_and_the_secret() {
    let (good, other) = (pair("shop.example.test"), pair("other.example.test"));
    let listeners = format!(
        "- {{name: http, protocol: HTTP, port: 8080}}\n{}{}{}{}{}{}\
         - {{name: bare, protocol: HTTPS, port: 8448}}\n\
         - {{name: empty, protocol: HTTPS, port: 8449, tls: {{certificateRefs: []}}}}\n\
         - {{name: kind, protocol: HTTPS, port: 8450, tls: {{certificateRefs: [{{kind: ConfigMap, name: x}}]}}}}\n\
         - {{name: far, protocol: HTTPS, port: 8451, tls: {{certificateRefs: [{{name: t, namespace: other}}]}}}}\n\
         - {{name: clash, protocol: HTTPS, port: 8080, tls: {{certificateRefs: [{{name: good}}]}}}}\n",
        https("nokey", 8443, None, &["web-tls"]),
        https("missing", 8444, None, &["nope"]),
        https("mismatch", 8445, None, &["mismatch"]),
        https("nocert", 8446, None, &["nocert"]),
        https("partial", 8447, None, &["good", "broken"]),
        "",
    );
    let broken = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: broken, namespace: shop}\n\
                  data: {tls.crt: '*', tls.key: '*'}\n";
    let yaml = format!(
        "{}{}{}{}{}{}",
        gateway("", &listeners),
        secret_data("shop", "web-tls", &good.cert, &good.cert),
        secret_data("shop", "mismatch", &good.cert, &other.key),
        secret_data("shop", "nocert", "hello", &good.key),
        secret("shop", "good", &good),
        secret("other", "t", &good),
    );
    let (mut objects, parse) = parse_yaml(&format!("{yaml}{broken}"), None);
    assert_eq!(
        parse
            .iter()
            .map(|d| format!("{} | {} | {}", d.object, d.field, d.message))
            .collect::<Vec<_>>(),
        [
            "Secret shop/broken | data[tls.crt] | not valid base64",
            "Secret shop/broken | data[tls.key] | not valid base64",
        ]
    );
    let t = translate(&objects, &TranslateOptions::default());
    let got = lines(&t, true);
    let g = "Gateway shop/gw | spec.listeners";
    assert_eq!(
        got,
        [
            format!(
                "{g}[1].tls.certificateRefs[0] | Secret shop/web-tls: tls.key: no private key \
                 (a PKCS#8, PKCS#1 or SEC1 PEM block)"
            ),
            format!("{g}[2].tls.certificateRefs[0] | Secret shop/nope not found"),
            format!(
                "{g}[3].tls.certificateRefs[0] | Secret shop/mismatch: tls.key: does not belong \
                 to the certificate in tls.crt (the public keys differ)"
            ),
            format!(
                "{g}[4].tls.certificateRefs[0] | Secret shop/nocert: tls.crt: no PEM CERTIFICATE \
                 block"
            ),
            format!(
                "{g}[5].tls.certificateRefs[1] | Secret shop/broken is unusable (see the errors \
                 reported for it)"
            ),
            format!(
                "{g}[6].tls | required for an HTTPS listener (mode Terminate and certificateRefs)"
            ),
            format!(
                "{g}[7].tls.certificateRefs | an HTTPS listener needs at least one certificate"
            ),
            format!(
                "{g}[8].tls.certificateRefs[0].kind | ConfigMap () is not supported; use a core \
                 Secret"
            ),
            format!(
                "{g}[9].tls.certificateRefs[0].namespace | Secret other/t is in another \
                 namespace and no ReferenceGrant there allows Gateways of namespace shop to \
                 refer to it"
            ),
            format!(
                "{g}[10].protocol | port 8080 is already HTTP for listener \"http\" of Gateway \
                 shop/gw; HTTP and HTTPS cannot share a port"
            ),
        ]
    );
    // No diagnostic, and no Debug output of the objects or the translation, shows a key.
    let printed = format!("{t:?} {objects:?} {parse:?}");
    for key in [&good.key, &other.key] {
        for line in key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!printed.contains(line), "a key line leaked");
        }
        assert!(!printed.contains(&b64(key)[..40]), "a key's base64 leaked");
    }
    // A ReferenceGrant in the Secret's namespace lets the Gateway refer to it.
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
                 metadata: {name: certs, namespace: other}\n\
                 spec:\n  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: shop}]\n  \
                 to: [{group: '', kind: Secret, name: t}]\n";
    objects.extend(parse_yaml(grant, None).0);
    let t = translate(&objects, &TranslateOptions::default());
    assert!(
        !lines(&t, true).iter().any(|l| l.contains("[9]")),
        "{:#?}",
        lines(&t, true)
    );
}

// === client certificates ===

#[test]
fn frontend_validation_asks_for_client_certificates() {
    let (web, ca, ca2) = (pair("shop.example.test"), pair("ca.test"), pair("ca2.test"));
    let listeners = format!(
        "{}{}",
        https("a", 443, None, &["web"]),
        https("b", 8443, None, &["web"])
    );
    let gw = gateway("", &listeners).replace(
        "spec:\n",
        "spec:\n  tls:\n    frontend:\n      default:\n        validation:\n          \
         caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}, {group: '', kind: ConfigMap, name: ca2}]\n          \
         mode: AllowInsecureFallback\n      perPort:\n        - port: 8443\n          tls:\n            \
         validation: {caCertificateRefs: [{group: '', kind: ConfigMap, name: ca2}]}\n",
    );
    let t = clean(&format!(
        "{gw}{}{}{}",
        secret("shop", "web", &web),
        config_map("shop", "ca", &ca.cert),
        config_map("shop", "ca2", &ca2.cert)
    ));
    let auth = |i: usize| {
        t.snapshot.listeners[i]
            .tls
            .as_ref()
            .unwrap()
            .client_auth
            .clone()
    };
    assert_eq!(
        auth(0),
        Some(ClientAuth {
            ca_pem: format!("{}{}", ca.cert, ca2.cert),
            optional: true
        })
    );
    assert_eq!(
        auth(1),
        Some(ClientAuth {
            ca_pem: ca2.cert.clone(),
            optional: false
        })
    );

    // A missing ConfigMap, one without ca.crt, and a wrong kind.
    let bad = gateway("", &https("a", 443, None, &["web"])).replace(
        "spec:\n",
        "spec:\n  tls:\n    frontend:\n      default:\n        validation:\n          \
         caCertificateRefs: [{group: '', kind: ConfigMap, name: nope}, {group: '', kind: ConfigMap, name: empty}, {group: x, kind: Y, name: z}]\n",
    );
    let empty = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: empty, namespace: shop}\ndata: {other: x}\n";
    let f = "Gateway shop/gw | spec.tls.frontend.default.validation.caCertificateRefs";
    assert_eq!(
        errors(&format!("{bad}{}{empty}", secret("shop", "web", &web))),
        [
            format!("{f}[0] | ConfigMap shop/nope not found"),
            format!("{f}[1] | ConfigMap shop/empty: ca.crt: missing"),
            format!("{f}[2].kind | Y (x) is not supported; use a core ConfigMap with ca.crt"),
        ]
    );
}

// === redirects ===

#[test]
fn https_redirect_annotation_redirects_named_http_listeners() {
    let web = pair("shop.example.test");
    let listeners = format!(
        "- {{name: http, protocol: HTTP, port: 80}}\n- {{name: plain, protocol: HTTP, port: 8080}}\n{}",
        https("https", 443, None, &["web"])
    );
    let t = clean(&format!(
        "{}{}",
        gateway("novaedge.io/https-redirect: http", &listeners),
        secret("shop", "web", &web)
    ));
    let redirects: Vec<(&str, Option<u16>)> = t
        .snapshot
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.https_redirect_port))
        .collect();
    assert_eq!(
        redirects,
        [
            ("http-80", Some(443)),
            ("https-443", None),
            ("http-8080", None)
        ]
    );

    let a = "Gateway shop/gw | metadata.annotations[novaedge.io/https-redirect]";
    assert_eq!(
        errors(&format!(
            "{}{}",
            gateway(
                "novaedge.io/https-redirect: 'nope, https, plain'",
                &listeners
            ),
            secret("shop", "web", &web)
        )),
        [
            format!("{a} | the Gateway has no listener named \"nope\""),
            format!("{a} | listener \"https\" is HTTPS; only HTTP listeners redirect"),
        ]
    );
    assert_eq!(
        errors(&gateway(
            "novaedge.io/https-redirect: http",
            "- {name: http, protocol: HTTP, port: 80}\n"
        )),
        [format!(
            "{a} | the Gateway has no HTTPS listener to redirect to"
        )]
    );
    let two = format!(
        "- {{name: http, protocol: HTTP, port: 80}}\n{}{}",
        https("a", 443, None, &["web"]),
        https("b", 8443, None, &["web"])
    );
    assert_eq!(
        errors(&format!(
            "{}{}",
            gateway("novaedge.io/https-redirect: http", &two),
            secret("shop", "web", &web)
        )),
        [format!(
            "{a} | the Gateway has HTTPS listeners on several ports (443, 8443); the redirect \
             needs exactly one"
        )]
    );
    // Another Gateway serving plain HTTP on the redirected port.
    let other = gateway("", "- {name: web, protocol: HTTP, port: 80}\n")
        .replace("name: gw\n", "name: gx\n");
    assert_eq!(
        errors(&format!(
            "{}{other}{}",
            gateway("novaedge.io/https-redirect: http", &listeners),
            secret("shop", "web", &web)
        )),
        [format!(
            "{a} | port 80 is shared with listener \"web\" of Gateway shop/gx, which does not \
             redirect the same way; a redirect applies to the whole port"
        )]
    );
}

// === upstream TLS ===

fn policy(name: &str, created: &str, section: Option<&str>, validation: &str) -> String {
    let section = section.map_or(String::new(), |s| format!(", sectionName: {s}"));
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\n\
         metadata: {{name: {name}, namespace: shop, creationTimestamp: '{created}'}}\n\
         spec:\n  targetRefs: [{{group: '', kind: Service, name: web{section}}}]\n  \
         validation: {validation}\n"
    )
}

fn upstream(t: &Translation) -> Vec<(String, Option<UpstreamTls>)> {
    t.snapshot
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.tls.clone()))
        .collect()
}

const HTTP_GATEWAY: &str = "- {name: http, protocol: HTTP, port: 8080}\n";

#[test]
fn backend_tls_policy_sets_sni_and_ca_per_service_port() {
    let ca = pair("ca.test");
    let yaml = format!(
        "{}{}{}{}",
        gateway("", HTTP_GATEWAY),
        backend(""),
        policy(
            "web-tls",
            "2026-01-01T00:00:00Z",
            Some("https"),
            "{hostname: web.shop.internal, caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]}"
        ),
        config_map("shop", "ca", &ca.cert),
    );
    assert_eq!(
        upstream(&clean(&yaml)),
        [
            (
                "shop/web:443".into(),
                Some(UpstreamTls {
                    server_name: "web.shop.internal".into(),
                    ca_pem: ca.cert.clone(),
                    client_certificate: None,
                })
            ),
            ("shop/web:80".into(), None),
        ]
    );

    // Without sectionName, every port; System means the web PKI roots; an older policy wins.
    let yaml = format!(
        "{}{}{}{}",
        gateway("", HTTP_GATEWAY),
        backend(""),
        policy(
            "newer",
            "2026-02-01T00:00:00Z",
            None,
            "{hostname: other.internal, wellKnownCACertificates: System}"
        ),
        policy(
            "older",
            "2026-01-01T00:00:00Z",
            None,
            "{hostname: web.internal, wellKnownCACertificates: System, subjectAltNames: [{type: Hostname, hostname: x}]}"
        ),
    );
    let t = run(&yaml);
    assert_eq!(
        lines(&t, false),
        [
            "BackendTLSPolicy shop/older | spec.validation.subjectAltNames | not supported; the \
             server certificate is verified against spec.validation.hostname",
            "BackendTLSPolicy shop/newer | spec.targetRefs[0] | BackendTLSPolicy shop/older \
             already sets TLS for this target and is older; ignored for it",
        ]
    );
    let system = Some(UpstreamTls {
        server_name: "web.internal".into(),
        ..UpstreamTls::default()
    });
    assert_eq!(
        upstream(&t),
        [
            ("shop/web:443".into(), system.clone()),
            ("shop/web:80".into(), system)
        ]
    );
}

#[test]
fn backend_tls_policy_mistakes_name_their_field() {
    let yaml = format!(
        "{}{}{}{}{}{}{}",
        gateway("", HTTP_GATEWAY),
        backend(""),
        policy(
            "a",
            "2026-01-01T00:00:00Z",
            None,
            "{hostname: '*.x.internal', wellKnownCACertificates: System}"
        ),
        policy("b", "2026-01-02T00:00:00Z", None, "{hostname: b.internal}"),
        policy(
            "c",
            "2026-01-03T00:00:00Z",
            None,
            "{hostname: c.internal, wellKnownCACertificates: System, caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]}"
        ),
        policy(
            "d",
            "2026-01-04T00:00:00Z",
            None,
            "{hostname: d.internal, wellKnownCACertificates: Mozilla}"
        ),
        policy(
            "e",
            "2026-01-05T00:00:00Z",
            None,
            "{hostname: e.internal, caCertificateRefs: [{group: '', kind: ConfigMap, name: nope}]}"
        ),
    );
    assert_eq!(
        errors(&yaml),
        [
            "BackendTLSPolicy shop/a | spec.validation.hostname | \"*.x.internal\" is not a DNS name",
            "BackendTLSPolicy shop/b | spec.validation | needs caCertificateRefs or \
             wellKnownCACertificates: System",
            "BackendTLSPolicy shop/c | spec.validation | set caCertificateRefs or \
             wellKnownCACertificates, not both",
            "BackendTLSPolicy shop/d | spec.validation.wellKnownCACertificates | \"Mozilla\" is \
             not supported; use System",
            "BackendTLSPolicy shop/e | spec.validation.caCertificateRefs[0] | ConfigMap \
             shop/nope not found",
        ]
    );
    let stray = policy(
        "f",
        "2026-01-01T00:00:00Z",
        Some("grpc"),
        "{hostname: f.internal, wellKnownCACertificates: System}",
    ) + &policy(
        "g",
        "2026-01-01T00:00:00Z",
        None,
        "{hostname: g.internal, wellKnownCACertificates: System}",
    )
    .replace("name: web}", "name: gone}");
    assert_eq!(
        warnings(&format!(
            "{}{}{stray}",
            gateway("", HTTP_GATEWAY),
            backend("")
        )),
        [
            "BackendTLSPolicy shop/f | spec.targetRefs[0].sectionName | Service shop/web has no \
             port named \"grpc\"; ignored",
            "BackendTLSPolicy shop/g | spec.targetRefs[0].name | Service shop/gone not found; \
             ignored",
        ]
    );
}

#[test]
fn upstream_tls_annotation_gives_sni_ca_and_a_client_certificate() {
    let (ca, client) = (pair("ca.test"), pair("proxy.shop.internal"));
    let annotation = "novaedge.io/upstream-tls: |\n  serverName: web.shop.internal\n  \
                      caConfigMap: ca\n  clientCertificateSecret: proxy-client";
    let yaml = format!(
        "{}{}{}{}",
        gateway("", HTTP_GATEWAY),
        backend(annotation),
        config_map("shop", "ca", &ca.cert),
        secret("shop", "proxy-client", &client),
    );
    let expected = UpstreamTls {
        server_name: "web.shop.internal".into(),
        ca_pem: ca.cert.clone(),
        client_certificate: Some(cert("Secret shop/proxy-client", &[], &client)),
    };
    let t = clean(&yaml);
    assert_eq!(t.snapshot.backends[0].tls, Some(expected.clone()));
    assert_eq!(t.snapshot.backends[1].tls, Some(expected.clone()));

    // An inline bundle; `{}` alone is TLS against the web PKI roots without SNI.
    let inline = format!(
        "novaedge.io/upstream-tls: |\n  caBundle: |\n{}",
        block(&ca.cert, 4)
    );
    let t = clean(&format!(
        "{}{}",
        gateway("", HTTP_GATEWAY),
        backend(&inline)
    ));
    assert_eq!(t.snapshot.backends[0].tls.as_ref().unwrap().ca_pem, ca.cert);
    let t = clean(&format!(
        "{}{}",
        gateway("", HTTP_GATEWAY),
        backend("novaedge.io/upstream-tls: '{}'")
    ));
    assert_eq!(t.snapshot.backends[0].tls, Some(UpstreamTls::default()));

    // A BackendTLSPolicy on the same Service wins for hostname and CA; the client certificate
    // still comes from the annotation.
    let t = run(&format!(
        "{yaml}{}",
        policy(
            "p",
            "2026-01-01T00:00:00Z",
            Some("https"),
            "{hostname: policy.internal, wellKnownCACertificates: System}"
        )
    ));
    assert_eq!(
        lines(&t, false),
        [
            "Service shop/web | metadata.annotations[novaedge.io/upstream-tls] | BackendTLSPolicy \
          shop/p also applies to port 443; its hostname and CA certificates are used, and only \
          clientCertificateSecret is taken from the annotation"
        ]
    );
    assert_eq!(
        upstream(&t),
        [
            (
                "shop/web:443".into(),
                Some(UpstreamTls {
                    server_name: "policy.internal".into(),
                    ca_pem: String::new(),
                    client_certificate: expected.client_certificate.clone(),
                })
            ),
            ("shop/web:80".into(), Some(expected)),
        ]
    );
}

#[test]
fn upstream_tls_annotation_mistakes_name_their_field() {
    let web = pair("web.test");
    let a = "Service shop/web | metadata.annotations[novaedge.io/upstream-tls]";
    let bad = "novaedge.io/upstream-tls: |\n  serverName: '*.wild'\n  caConfigMap: nope\n  \
               clientCertificateSecret: half";
    assert_eq!(
        errors(&format!(
            "{}{}{}",
            gateway("", HTTP_GATEWAY),
            backend(bad),
            secret_data("shop", "half", &web.cert, "not a key")
        )),
        [
            format!("{a}.serverName | \"*.wild\" is not a DNS name"),
            format!("{a}.caConfigMap | ConfigMap shop/nope not found"),
            format!(
                "{a}.clientCertificateSecret | Secret shop/half: tls.key: no private key (a \
                 PKCS#8, PKCS#1 or SEC1 PEM block)"
            ),
        ]
    );
    let both = "novaedge.io/upstream-tls: '{caConfigMap: x, caBundle: y}'";
    assert_eq!(
        errors(&format!("{}{}", gateway("", HTTP_GATEWAY), backend(both))),
        [format!(
            "{a}.caBundle | set caConfigMap or caBundle, not both"
        )]
    );
    let junk = "novaedge.io/upstream-tls: '{caBundle: junk, sni: x}'";
    let got = errors(&format!("{}{}", gateway("", HTTP_GATEWAY), backend(junk)));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with(&format!("{a}.sni | unknown field `sni`")),
        "{got:?}"
    );
    let junk = "novaedge.io/upstream-tls: '{caBundle: junk}'";
    assert_eq!(
        errors(&format!("{}{}", gateway("", HTTP_GATEWAY), backend(junk))),
        [format!("{a}.caBundle | ca.crt: no PEM CERTIFICATE block")]
    );
}

// === files ===

/// A Gateway with one HTTPS listener whose Secret reads `cert` and `key` (paths as written).
fn file_manifests(cert: &str, key: &str) -> String {
    format!(
        "{}---\napiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata:\n  name: web\n  \
         namespace: shop\n  annotations:\n    novaedge.io/cert-file: {cert}\n    \
         novaedge.io/key-file: {key}\n",
        gateway("", &https("https", 8443, None, &["web"]))
    )
}

fn write_pair(dir: &Path, p: &Pair) {
    std::fs::write(dir.join("web.crt"), &p.cert).unwrap();
    std::fs::write(dir.join("web.key"), &p.key).unwrap();
}

fn served(source: &mut FileSource) -> String {
    let loaded = source.load().unwrap_or_else(|d| panic!("{d:#?}"));
    let tls = loaded.snapshot.listeners[0].tls.clone().unwrap();
    tls.certificates[0].cert_chain_pem.clone()
}

#[test]
fn secrets_read_pem_files_relative_to_their_yaml_and_reread_them_on_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    let yaml = dir.path().join("gateway.yaml");
    std::fs::write(&yaml, file_manifests("certs/web.crt", "certs/web.key")).unwrap();
    let (first, second) = (pair("shop.example.test"), pair("shop.example.test"));
    write_pair(&dir.path().join("certs"), &first);

    let mut source = FileSource::new(vec![yaml.clone()]);
    assert_eq!(served(&mut source), first.cert);
    assert_eq!(
        source
            .referenced_files()
            .iter()
            .cloned()
            .collect::<Vec<_>>(),
        [
            dir.path().join("certs/web.crt"),
            dir.path().join("certs/web.key")
        ]
    );
    write_pair(&dir.path().join("certs"), &second);
    assert_eq!(served(&mut source), second.cert, "rotated on the next load");

    // A key that does not belong to the certificate refuses the load (the running snapshot
    // stays), naming the listener and the Secret; so does a missing file.
    std::fs::write(dir.path().join("certs/web.key"), &first.key).unwrap();
    let errors = source.load().unwrap_err();
    let printed: Vec<String> = errors.iter().map(Diagnostic::to_string).collect();
    assert_eq!(
        printed,
        [format!(
            "error: {}: Gateway shop/gw: spec.listeners[0].tls.certificateRefs[0]: Secret \
             shop/web: tls.key: does not belong to the certificate in tls.crt (the public keys \
             differ)",
            yaml.display()
        )]
    );
    std::fs::remove_file(dir.path().join("certs/web.key")).unwrap();
    let errors = source.load().unwrap_err();
    assert!(errors[0].is_error());
    assert_eq!(errors[0].object, "Secret shop/web");
    assert_eq!(
        errors[0].field,
        "metadata.annotations[novaedge.io/key-file]"
    );
    assert!(
        errors[0].message.starts_with(&format!(
            "{}: cannot read",
            dir.path().join("certs/web.key").display()
        )),
        "{}",
        errors[0].message
    );
    assert_eq!(
        errors[1].field, "spec.listeners[0].tls.certificateRefs[0]",
        "{errors:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_referenced_pem_file_wakes_the_watcher() {
    // The PEM files live outside the watched manifest directory: only the referenced-file watch
    // can see them change.
    let manifests = tempfile::tempdir().unwrap();
    let pems = tempfile::tempdir().unwrap();
    let cert = pems.path().join("web.crt");
    let key = pems.path().join("web.key");
    std::fs::write(
        manifests.path().join("gateway.yaml"),
        file_manifests(&cert.display().to_string(), &key.display().to_string()),
    )
    .unwrap();
    let (first, second) = (pair("shop.example.test"), pair("shop.example.test"));
    write_pair(pems.path(), &first);

    let mut source = FileSource::new(vec![manifests.path().to_owned()]);
    assert_eq!(served(&mut source), first.cert);
    let mut changes = source.watch().unwrap();
    // Replace the files as cert-manager or an editor would: write elsewhere, rename over.
    for (name, text) in [("web.crt", &second.cert), ("web.key", &second.key)] {
        let tmp = pems.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, pems.path().join(name)).unwrap();
    }
    let woke = tokio::time::timeout(
        Duration::from_secs(10),
        changes.next(Duration::from_millis(100)),
    )
    .await;
    assert_eq!(woke, Ok(true), "the watcher saw the PEM files change");
    assert_eq!(served(&mut source), second.cert);
}

#[test]
fn the_tls_example_translates_to_a_redirect_and_two_certificates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tls");
    let mut source = FileSource::new(vec![dir]);
    let loaded = source.load().unwrap_or_else(|d| panic!("{d:#?}"));
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let listeners: Vec<(&str, Option<u16>)> = loaded
        .snapshot
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.https_redirect_port))
        .collect();
    assert_eq!(listeners, [("http-8080", Some(8443)), ("https-8443", None)]);
    let tls = loaded.snapshot.listeners[1].tls.as_ref().unwrap();
    let names: Vec<(&str, &[String])> = tls
        .certificates
        .iter()
        .map(|c| (c.source.as_str(), c.server_names.as_slice()))
        .collect();
    assert_eq!(
        names,
        [
            (
                "Secret demo/shop-tls",
                &["shop.example.test".to_owned()][..]
            ),
            ("Secret demo/api-tls", &["api.example.test".to_owned()][..]),
        ]
    );
    assert_eq!(tls.default_certificate, None);
    assert_eq!(source.referenced_files().len(), 4);
}

async fn next(
    changes: &mut novaedge_k8s::file_source::Changes,
) -> Result<bool, tokio::time::error::Elapsed> {
    tokio::time::timeout(
        Duration::from_secs(10),
        changes.next(Duration::from_millis(100)),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_referenced_after_watching_began_is_watched_from_the_next_load() {
    let manifests = tempfile::tempdir().unwrap();
    let (old, new) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let yaml = manifests.path().join("gateway.yaml");
    let refer_to = |dir: &Path| {
        let (cert, key) = (dir.join("web.crt"), dir.join("web.key"));
        file_manifests(&cert.display().to_string(), &key.display().to_string())
    };
    let (first, second) = (pair("shop.example.test"), pair("shop.example.test"));
    write_pair(old.path(), &first);
    write_pair(new.path(), &first);
    std::fs::write(&yaml, refer_to(old.path())).unwrap();
    let mut source = FileSource::new(vec![yaml.clone()]);
    assert_eq!(served(&mut source), first.cert);
    let mut changes = source.watch().unwrap();
    std::fs::write(&yaml, refer_to(new.path())).unwrap();
    assert_eq!(next(&mut changes).await, Ok(true), "the manifest changed");
    assert_eq!(served(&mut source), first.cert);
    write_pair(new.path(), &second);
    assert_eq!(
        next(&mut changes).await,
        Ok(true),
        "the new directory is watched"
    );
    assert_eq!(served(&mut source), second.cert);
}
