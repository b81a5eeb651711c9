//! Ingress through `novaedge run` on the ports `--ingress-http-port` and `--ingress-https-port`
//! name: Exact against Prefix paths, the one-label wildcard host, the default backend losing to
//! a catch-all rule added by a reload, HTTPS checked by curl against a test CA, and the opt-in
//! `novaedge.io/ssl-redirect`. Certificates are made by `openssl` in a temporary directory.

mod common;

use std::net::SocketAddr;

use common::*;
use novaedge_echo::EchoServer;

const INGRESSES: &str = r#"---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: novaedge}
spec: {controller: novaedge.io/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: a-plain, namespace: t}
spec:
  ingressClassName: novaedge
  defaultBackend: {service: {name: fallback, port: {name: http}}}
  rules:
  - host: plain.test
    http:
      paths:
      - {path: /exact, pathType: Exact, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /prefix, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
  - host: "*.wild.test"
    http:
      paths:
      - path: /
        pathType: ImplementationSpecific
        backend: {service: {name: wild, port: {number: 80}}}
---
apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata:
  name: shop-tls
  namespace: t
  annotations: {novaedge.io/cert-file: shop.crt, novaedge.io/key-file: shop.key}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: secure
  namespace: t
  annotations: {novaedge.io/ssl-redirect: "true"}
spec:
  ingressClassName: novaedge
  tls: [{hosts: [shop.test], secretName: shop-tls}]
  rules:
  - host: shop.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
"#;

/// A later Ingress whose host-less `Prefix /` rule ties with the default backend's catch-all;
/// the rule must win although `a-plain` is first by name.
const ROOT: &str = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: b-root, namespace: t}
spec:
  rules:
  - http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;

/// The name of the echo server that answered `host` and `path`, or the status if not 200.
async fn served_by(addr: SocketAddr, host: &str, path: &str) -> String {
    let (status, body) = get(addr, host, path).await.unwrap();
    if status != 200 {
        return status.to_string();
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["name"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_paths_hosts_default_backend_tls_and_redirect() {
    let mut echoes = Vec::new();
    let mut services = String::new();
    for name in ["api", "web", "wild", "fallback"] {
        let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), name)
            .await
            .unwrap();
        services.push_str("---\n");
        services.push_str(&service(name, echo.local_addr().port()));
        echoes.push(echo);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d);
    make_cert(d, "shop", "DNS:shop.test");
    std::fs::write(d.join("services.yaml"), services).unwrap();
    std::fs::write(d.join("ingress.yaml"), INGRESSES).unwrap();
    let (http_port, https_port) = (free_port(), free_port());
    let proxy = Proxy::start(&[
        "run",
        "--bind",
        "127.0.0.1",
        "--ingress-http-port",
        &http_port.to_string(),
        "--ingress-https-port",
        &https_port.to_string(),
        d.to_str().unwrap(),
    ]);
    proxy.wait_log("watching for changes", 0);
    let http: SocketAddr = ([127, 0, 0, 1], http_port).into();

    // Exact against Prefix (element-wise), then everything else of the host to the default
    // backend.
    let cases = [
        ("plain.test", "/exact", "api"),
        ("plain.test", "/exact/", "fallback"),
        ("plain.test", "/exact/more", "fallback"),
        ("plain.test", "/prefix", "web"),
        ("plain.test", "/prefix/", "web"),
        ("plain.test", "/prefix/a/b", "web"),
        ("plain.test", "/prefixes", "fallback"),
        ("plain.test", "/", "fallback"),
        // An Ingress wildcard covers exactly one label.
        ("a.wild.test", "/x", "wild"),
        ("a.b.wild.test", "/x", "fallback"),
        ("wild.test", "/x", "fallback"),
        ("unknown.test", "/", "fallback"),
    ];
    for (host, path, expected) in cases {
        assert_eq!(
            served_by(http, host, path).await,
            expected,
            "http://{host}{path}"
        );
    }

    // ssl-redirect: the TLS Ingress's host answers 301 on the HTTP port, with the HTTPS port.
    let out = ok(run(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "-H",
            "Host: shop.test",
            &format!("http://127.0.0.1:{http_port}/cart?id=7"),
        ],
        d,
    ));
    assert_eq!(out, format!("301 https://shop.test:{https_port}/cart?id=7"));
    // Only its host: the other Ingress still serves HTTP.
    assert_eq!(served_by(http, "plain.test", "/exact").await, "api");

    // HTTPS with the Secret's certificate, verified against the test CA.
    let (status, body) = curl(d, "shop.test", https_port, "/cart", "--http2");
    assert_eq!(status, "2 200", "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["name"], "api");
    assert_eq!(seen["path"], "/cart");
    // The plain Ingress has no TLS: it is not on the HTTPS port.
    let (status, _) = curl(d, "shop.test", https_port, "/exact", "--http1.1");
    assert_eq!(status, "1.1 200");

    // A host-less `Prefix /` rule of a later Ingress beats the default backend's catch-all.
    let mark = proxy.log_len();
    std::fs::write(d.join("root.yaml"), ROOT).unwrap();
    proxy.wait_log("snapshot applied", mark);
    assert_eq!(served_by(http, "unknown.test", "/").await, "web");
    assert_eq!(served_by(http, "plain.test", "/exact/more").await, "web");
    assert_eq!(served_by(http, "plain.test", "/exact").await, "api");
    assert_eq!(served_by(http, "a.wild.test", "/").await, "wild");
}

#[test]
fn check_takes_the_ingress_ports_and_accepts_the_example() {
    let example =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/ingress");
    let out = std::process::Command::new(BIN)
        .args(["check", "--ingress-http-port", "8080"])
        .arg(&example)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("ok"), "{stdout}");

    // An HTTPS Gateway on the chosen Ingress HTTP port is an error on the Ingress.
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path());
    make_cert(dir.path(), "gw", "DNS:gw.test");
    let gateway = dir.path().join("gateway.yaml");
    std::fs::write(
        &gateway,
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, \
         namespace: demo}\nspec:\n  gatewayClassName: novaedge\n  listeners: [{name: tls, \
         protocol: HTTPS, port: 8080, tls: {certificateRefs: [{name: gw-tls}]}}]\n---\n\
         apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata:\n  name: gw-tls\n  \
         namespace: demo\n  annotations: {novaedge.io/cert-file: gw.crt, novaedge.io/key-file: \
         gw.key}\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "--ingress-http-port", "8080"])
        .arg(&example)
        .arg(&gateway)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "ingress.yaml: Ingress demo/shop: port 8080 (the Ingress HTTP port) is HTTPS for \
             listener \"tls\" of Gateway demo/gw; HTTP and HTTPS cannot share a port"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("1 error(s)"), "{stdout}");
    let zero = std::process::Command::new(BIN)
        .args(["check", "--ingress-https-port", "0"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(!zero.status.success(), "port 0 is refused by the flag");
}
