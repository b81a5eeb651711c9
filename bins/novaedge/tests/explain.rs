//! `novaedge explain` and `novaedge snapshot diff`, run as the binary: the route a request
//! takes and why the others do not (host, path, method, header, precedence), unknown ports and
//! HTTPS listeners; and diffs of manifests and snapshot caches, secrets redacted.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use novaedge_k8s::TranslateOptions;
use novaedge_k8s::file_source::FileSource;

/// An HTTP listener on 8080 and an HTTPS one on 8443 (certificate for `secure.test`), and
/// routes on them.
fn manifests(dir: &Path) {
    make_ca(dir);
    make_cert(dir, "tls", "DNS:secure.test");
    let services: String = ["api", "api2", "canary", "web", "admin", "beta", "secure"]
        .iter()
        .enumerate()
        .map(|(i, name)| service(name, 9001 + i as u16) + "---\n")
        .collect();
    std::fs::write(dir.join("services.yaml"), services).unwrap();
    std::fs::write(dir.join("gateway.yaml"), GATEWAY).unwrap();
    std::fs::write(dir.join("routes.yaml"), ROUTES).unwrap();
}

const GATEWAY: &str = "apiVersion: v1
kind: Secret
metadata:
  name: cert
  namespace: t
  annotations: {novaedge.io/cert-file: tls.crt, novaedge.io/key-file: tls.key}
type: kubernetes.io/tls
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: t}
spec:
  gatewayClassName: novaedge
  listeners:
    - {name: http, protocol: HTTP, port: 8080}
    - {name: https, protocol: HTTPS, port: 8443, tls: {certificateRefs: [{name: cert}]}}
";

const ROUTES: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: t}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [shop.test]
  rules:
    - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-canary, value: '1'}]}]
      backendRefs: [{name: canary, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /api}}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: x-from, value: proxy}]
      backendRefs: [{name: api, port: 80, weight: 90}, {name: api2, port: 80, weight: 10}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: t}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [shop.test]
  rules:
    - backendRefs: [{name: web, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: admin, namespace: t}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [admin.test]
  rules:
    - matches: [{path: {type: Exact, value: /admin}, method: POST}]
      backendRefs: [{name: admin, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: beta, namespace: t}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [admin.test]
  rules:
    - matches: [{path: {type: PathPrefix, value: /beta}, headers: [{name: x-beta, value: 'on'}]}]
      backendRefs: [{name: beta, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: secure, namespace: t}
spec:
  parentRefs: [{name: gw, sectionName: https}]
  hostnames: [secure.test]
  rules:
    - backendRefs: [{name: secure, port: 80}]
";

fn novaedge(args: &[&str]) -> (i32, String, String) {
    let out: Output = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn explain(dir: &Path, request: &str, headers: &[&str]) -> (i32, String) {
    let mut args = vec!["explain", dir.to_str().unwrap(), "--request", request];
    for h in headers {
        args.extend(["-H", h]);
    }
    let (code, stdout, stderr) = novaedge(&args);
    assert!(
        !stderr.contains("error"),
        "unexpected errors:\n{stderr}\n{stdout}"
    );
    (code, stdout)
}

fn explain_json(dir: &Path, request: &str, headers: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec![
        "explain",
        dir.to_str().unwrap(),
        "--output",
        "json",
        "--request",
        request,
    ];
    for h in headers {
        args.extend(["-H", h]);
    }
    let (code, stdout, stderr) = novaedge(&args);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}:\n{stdout}\n{stderr}"));
    (code, json)
}

#[track_caller]
fn has_line(stdout: &str, expected: &str) {
    assert!(
        stdout.lines().any(|l| l.trim() == expected),
        "no line {expected:?} in:\n{stdout}"
    );
}

#[track_caller]
fn has_line_starting(stdout: &str, prefix: &str) -> String {
    stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{stdout}"))
        .to_owned()
}

/// The route a request takes: listener, route, rule, why it matched, backends with weights
/// and filters; and in JSON the same, with stable field names.
#[test]
fn explains_the_matching_route() {
    let dir = tempfile::tempdir().unwrap();
    manifests(dir.path());
    let (code, out) = explain(dir.path(), "GET http://shop.test:8080/api/items?x=1", &[]);
    assert_eq!(code, 0, "{out}");
    has_line(&out, "host: shop.test:8080 (from the URL)");
    has_line_starting(&out, "listener: ");
    assert!(out.contains("(port 8080, http)"), "{out}");
    has_line(&out, "route: t/api rules[1].matches[0]");
    has_line(&out, "hostname shop.test: matched");
    has_line(&out, "path prefix /api: matched");
    has_line(&out, "t/api:80 weight 90");
    has_line(&out, "t/api2:80 weight 10");
    has_line(&out, "filters: request_header_modifier");
    // The canary rule lacks its header; the catch-all route matches with a shorter prefix.
    has_line(
        &out,
        "t/api rules[0].matches[0]: header x-canary = \"1\" does not match (no x-canary header)",
    );
    has_line(
        &out,
        "t/web rules[0] (no matches: every request): matches, but has lower precedence: the \
         selected route's path match is longer",
    );
    has_line(
        &out,
        "t/admin rules[0].matches[0]: hostname mismatch: \"shop.test\" is none of [admin.test]; \
         path exact /admin does not match (path /api/items); method POST does not match \
         (method GET)",
    );
    // Routes of the HTTPS listener are not on this one.
    assert!(!out.contains("t/secure"), "{out}");

    let (code, json) = explain_json(dir.path(), "GET http://shop.test:8080/api/items?x=1", &[]);
    assert_eq!(code, 0);
    assert_eq!(json["result"], "routed");
    assert_eq!(json["listener"]["port"], 8080);
    assert_eq!(json["request"]["host_source"], "url");
    assert_eq!(json["request"]["routed_host"], "shop.test");
    assert_eq!(json["request"]["routed_path"], "/api/items");
    let selected = &json["selected"];
    assert_eq!(selected["route"], "t/api");
    assert_eq!(selected["rule"], 1);
    assert_eq!(selected["match"], 0);
    assert_eq!(selected["hostname"]["hostname"], "shop.test");
    assert_eq!(
        selected["backends"],
        serde_json::json!([{"name": "t/api:80", "weight": 90}, {"name": "t/api2:80", "weight": 10}])
    );
    assert_eq!(
        selected["filters"],
        serde_json::json!(["request_header_modifier"])
    );
    let web = json["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "t/web")
        .unwrap();
    assert_eq!(web["outcome"], "lower_precedence");
    assert_eq!(web["precedence"], "path_length");
}

/// A 404: every route says why it does not match (host, path, method, missing header).
#[test]
fn explains_a_request_no_route_matches() {
    let dir = tempfile::tempdir().unwrap();
    manifests(dir.path());
    let (code, out) = explain(dir.path(), "GET http://Admin.Test:8080/admin", &[]);
    assert_eq!(code, 1, "{out}");
    has_line(&out, "no route matches: 404 Not Found");
    has_line(
        &out,
        "t/admin rules[0].matches[0]: method POST does not match (method GET)",
    );
    has_line(
        &out,
        "t/beta rules[0].matches[0]: path prefix /beta does not match (path /admin); header \
         x-beta = \"on\" does not match (no x-beta header)",
    );
    has_line_starting(
        &out,
        "t/web rules[0] (no matches: every request): hostname mismatch: \"admin.test\" is none \
         of [shop.test]",
    );

    // A header with the wrong value is shown with the value it has.
    let (code, out) = explain(
        dir.path(),
        "GET http://admin.test:8080/beta/x",
        &["x-beta: off"],
    );
    assert_eq!(code, 1, "{out}");
    has_line(
        &out,
        "t/beta rules[0].matches[0]: header x-beta = \"on\" does not match (x-beta: \"off\")",
    );
    // With it, the route matches.
    let (code, out) = explain(
        dir.path(),
        "GET http://admin.test:8080/beta/x",
        &["x-beta: on"],
    );
    assert_eq!(code, 0, "{out}");
    has_line(&out, "route: t/beta rules[0].matches[0]");

    let (code, json) = explain_json(dir.path(), "GET http://admin.test:8080/admin", &[]);
    assert_eq!(code, 1);
    assert_eq!(json["result"], "not_found");
    assert_eq!(json["selected"], serde_json::Value::Null);
    let admin = json["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "t/admin")
        .unwrap();
    assert_eq!(admin["outcome"], "not_matched");
    assert_eq!(
        admin["conditions"],
        serde_json::json!([
            {"condition": "path exact /admin", "matched": true},
            {"condition": "method POST", "matched": false},
        ])
    );
}

/// Two rules match: the one with the header match wins, the other is reported as lower
/// precedence. A Host header given with -H is what is routed on.
#[test]
fn explains_precedence_and_the_host_header() {
    let dir = tempfile::tempdir().unwrap();
    manifests(dir.path());
    let (code, out) = explain(
        dir.path(),
        "GET http://127.0.0.1:8080/api",
        &["Host: shop.test", "x-canary: 1"],
    );
    assert_eq!(code, 0, "{out}");
    has_line(&out, "host: shop.test (from -H Host)");
    has_line(&out, "route: t/api rules[0].matches[0]");
    has_line(&out, "header x-canary = \"1\": matched");
    has_line(&out, "t/canary:80 weight 1");
    has_line(
        &out,
        "t/api rules[1].matches[0]: matches, but has lower precedence: the selected route has \
         more header matches",
    );
    has_line(
        &out,
        "t/web rules[0] (no matches: every request): matches, but has lower precedence: the \
         selected route's path match is longer",
    );
}

/// A port no listener has: said, with the ports there are. HTTPS: the TLS listener of the port,
/// the certificate the SNI picks; plain HTTP to it is not answered.
#[test]
fn explains_ports_and_https() {
    let dir = tempfile::tempdir().unwrap();
    manifests(dir.path());
    let (code, out) = explain(dir.path(), "GET http://shop.test:9999/", &[]);
    assert_eq!(code, 1, "{out}");
    has_line(&out, "no listener on port 9999");
    has_line_starting(&out, "8080 http");
    has_line_starting(&out, "8443 https");
    let (code, json) = explain_json(dir.path(), "http://shop.test/", &[]);
    assert_eq!(code, 1);
    assert_eq!(json["result"], "no_listener");
    assert_eq!(json["request"]["port"], 80);

    let (code, out) = explain(dir.path(), "GET https://secure.test:8443/x", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(port 8443, https)"), "{out}");
    has_line(
        &out,
        "tls: SNI secure.test -> certificates[0] Secret t/cert [secure.test] (by name)",
    );
    has_line(&out, "route: t/secure rules[0] (no matches: every request)");
    has_line(&out, "t/secure:80 weight 1");

    // The SNI is the URL's host, whatever the Host header says; the listener's only
    // certificate is also its default.
    let (code, json) = explain_json(
        dir.path(),
        "GET https://other.test:8443/",
        &["Host: secure.test"],
    );
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["listener"]["tls"]["sni"], "other.test");
    assert_eq!(json["listener"]["tls"]["certificate"]["index"], 0);
    assert_eq!(
        json["listener"]["tls"]["certificate"]["chosen_by"],
        "default"
    );
    assert_eq!(json["selected"]["route"], "t/secure");

    let (code, out) = explain(dir.path(), "GET http://secure.test:8443/", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is HTTPS, the request is HTTP"), "{out}");
}

/// Usage and configuration errors exit 2; configuration errors print as `check` prints them.
#[test]
fn explain_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    manifests(dir.path());
    let d = dir.path().to_str().unwrap();
    let (code, _, stderr) = novaedge(&["explain", d, "--request", "GET /relative"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("the URL must be absolute"), "{stderr}");
    let (code, _, stderr) = novaedge(&["explain", d, "--request", "http://a/", "-H", "nocolon"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("expected 'name: value'"), "{stderr}");

    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: typo, namespace: t}\nspec:\n  ports: [{port: eighty}]\n",
    )
    .unwrap();
    let (code, stdout, _) = novaedge(&["explain", d, "--request", "http://shop.test:8080/"]);
    assert_eq!(code, 2, "{stdout}");
    let bad = dir.path().join("bad.yaml");
    has_line_starting(
        &stdout,
        &format!(
            "error: {}: Service t/typo: spec.ports[0].port: invalid type",
            bad.display()
        ),
    );
    has_line(&stdout, "1 error(s)");
}

// === snapshot diff ===

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn diff(a: &Path, b: &Path, json: bool) -> (i32, String) {
    let mut args = vec!["snapshot", "diff", a.to_str().unwrap(), b.to_str().unwrap()];
    if json {
        args.extend(["--output", "json"]);
    }
    let (code, stdout, stderr) = novaedge(&args);
    assert!(!stderr.contains("error"), "{stderr}");
    (code, stdout)
}

#[test]
fn diff_of_manifests() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    std::fs::create_dir(&a).unwrap();
    manifests(&a);
    let b = root.path().join("b");
    copy_dir(&a, &b);

    let (code, out) = diff(&a, &b, false);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("equal (manifests version 1"), "{out}");

    // A weight changes, a route goes, another comes.
    let routes = ROUTES
        .replace("weight: 90", "weight: 80")
        .replace("name: beta, namespace: t", "name: gamma, namespace: t");
    std::fs::write(b.join("routes.yaml"), routes).unwrap();
    let (code, out) = diff(&a, &b, false);
    assert_eq!(code, 1, "{out}");
    has_line_starting(&out, "~ route t/api (listener ");
    has_line(&out, "rules[1].backends[0].weight: 90 -> 80");
    has_line_starting(&out, "- route t/beta (listener ");
    has_line_starting(&out, "+ route t/gamma (listener ");
    has_line(&out, "3 object(s) differ");

    let (code, out) = diff(&a, &b, true);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["equal"], false);
    assert_eq!(json["a"]["kind"], "manifests");
    let changes = json["changes"].as_array().unwrap();
    let api = changes.iter().find(|c| c["name"] == "t/api").unwrap();
    assert_eq!(api["kind"], "route");
    assert_eq!(api["change"], "changed");
    assert_eq!(
        api["fields"],
        serde_json::json!([{"path": "rules[1].backends[0].weight", "old": 90, "new": 80, "secret": false}])
    );
    let gamma = changes.iter().find(|c| c["name"] == "t/gamma").unwrap();
    assert_eq!(gamma["change"], "added");
    assert_eq!(
        gamma["object"]["hostnames"],
        serde_json::json!(["admin.test"])
    );
}

/// A new certificate and private key: the certificate (public) is shown, the key is reported
/// as changed and never printed.
#[test]
fn diff_redacts_a_changed_secret() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    std::fs::create_dir(&a).unwrap();
    manifests(&a);
    let b = root.path().join("b");
    copy_dir(&a, &b);
    // A new certificate and key for the same name (the key must belong to the certificate).
    make_cert(&b, "tls", "DNS:secure.test");
    let old_key = std::fs::read_to_string(a.join("tls.key")).unwrap();
    let new_key = std::fs::read_to_string(b.join("tls.key")).unwrap();
    assert_ne!(old_key, new_key);

    for json in [false, true] {
        let (code, out) = diff(&a, &b, json);
        assert_eq!(code, 1, "{out}");
        assert!(!out.contains("PRIVATE KEY"), "a key is shown:\n{out}");
        for line in old_key
            .lines()
            .chain(new_key.lines())
            .filter(|l| l.len() > 20)
        {
            assert!(!out.contains(line), "key material is shown:\n{out}");
        }
        if json {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            let listener = &v["changes"][0];
            assert_eq!(listener["kind"], "listener");
            let fields = listener["fields"].as_array().unwrap();
            let paths: Vec<&str> = fields.iter().map(|f| f["path"].as_str().unwrap()).collect();
            assert_eq!(
                paths,
                [
                    "tls.certificates[0].cert_chain_pem",
                    "tls.certificates[0].private_key_pem"
                ]
            );
            assert_eq!(fields[0]["secret"], false);
            assert!(
                fields[0]["new"]
                    .as_str()
                    .unwrap()
                    .contains("BEGIN CERTIFICATE")
            );
            assert_eq!(fields[1]["secret"], true);
            assert!(
                fields[1]["old"]
                    .as_str()
                    .unwrap()
                    .starts_with("<redacted: ")
            );
            assert!(
                fields[1]["new"]
                    .as_str()
                    .unwrap()
                    .starts_with("<redacted: ")
            );
        } else {
            let line =
                has_line_starting(&out, "tls.certificates[0].private_key_pem: \"<redacted: ");
            assert!(line.ends_with("(secret changed, redacted)"), "{line}");
        }
    }
}

/// An agent's snapshot cache (the protobuf snapshot, as `novaedge agent --cache` writes it)
/// against manifests.
#[test]
fn diff_of_a_cache_and_manifests() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    std::fs::create_dir(&a).unwrap();
    manifests(&a);
    let loaded = FileSource::new(vec![a.clone()])
        .with_options(TranslateOptions::default())
        .load()
        .expect("valid manifests");
    let cache = root.path().join("snapshot.cache");
    std::fs::write(&cache, loaded.snapshot.encode_to_vec()).unwrap();

    let (code, out) = diff(&cache, &a, false);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("equal (cache version 1 and manifests version 1"),
        "{out}"
    );

    std::fs::write(
        a.join("routes.yaml"),
        ROUTES.replace("value: /beta", "value: /b"),
    )
    .unwrap();
    let (code, out) = diff(&cache, &a, true);
    assert_eq!(code, 1, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["a"]["kind"], "cache");
    assert_eq!(json["b"]["kind"], "manifests");
    assert_eq!(
        json["changes"][0]["fields"],
        serde_json::json!([{
            "path": "rules[0].matches[0].path.prefix",
            "old": "/beta",
            "new": "/b",
            "secret": false,
        }])
    );

    // Neither manifests nor a snapshot.
    let junk = root.path().join("junk");
    std::fs::write(&junk, [0xff, 0xfe, 0x00, 0x07]).unwrap();
    let (code, _, stderr) = novaedge(&[
        "snapshot",
        "diff",
        junk.to_str().unwrap(),
        a.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("neither manifests nor a snapshot cache"),
        "{stderr}"
    );
}

/// What `explain` says is what the proxy does: the same manifests served by `novaedge run`,
/// with echo backends that answer with their names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_agrees_with_the_proxy() {
    use novaedge_echo::EchoServer;

    let dir = tempfile::tempdir().unwrap();
    manifests(dir.path());
    let mut echoes = Vec::new();
    let mut services = String::new();
    for name in ["api", "api2", "canary", "web", "admin", "beta", "secure"] {
        let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), name)
            .await
            .unwrap();
        services += &(service(name, echo.local_addr().port()) + "---\n");
        echoes.push(echo);
    }
    std::fs::write(dir.path().join("services.yaml"), services).unwrap();
    let (http, https) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("gateway.yaml"),
        GATEWAY
            .replace("port: 8080", &format!("port: {http}"))
            .replace("port: 8443", &format!("port: {https}")),
    )
    .unwrap();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], http).into();
    let _proxy = Proxy::start(&["run", "--bind", "127.0.0.1", dir.path().to_str().unwrap()]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while get(addr, "shop.test", "/").await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    type Headers = &'static [(&'static str, &'static str)];
    let cases: [(&str, &str, Headers); 6] = [
        ("shop.test", "/api/x", &[("x-canary", "1")]),
        ("shop.test", "/other", &[]),
        ("SHOP.test", "/api/../web", &[]),
        ("admin.test", "/beta/x", &[("x-beta", "on")]),
        ("admin.test", "/beta/x", &[("x-beta", "off")]),
        ("admin.test", "/admin", &[]),
    ];
    for (host, path, headers) in cases {
        let mut args = vec![format!("Host: {host}")];
        args.extend(
            headers
                .iter()
                .map(|(name, value)| format!("{name}: {value}")),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, json) = explain_json(
            dir.path(),
            &format!("GET http://127.0.0.1:{http}{path}"),
            &args,
        );
        let (status, _, body) = get_with_headers(addr, host, path, headers).await.unwrap();
        match code {
            0 => {
                let backends = json["selected"]["backends"].as_array().unwrap();
                assert_eq!(backends.len(), 1, "{json:#}");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let name = v["name"].as_str().unwrap();
                assert_eq!(status, 200, "{host} {path}");
                assert_eq!(
                    backends[0]["name"],
                    format!("t/{name}:80"),
                    "{host} {path} {headers:?}"
                );
            }
            1 => assert_eq!(status, 404, "{host} {path} {headers:?}: {json:#}"),
            other => panic!("exit {other}: {json:#}"),
        }
    }
}
