//! The `novaedge` binary end to end: `check` diagnostics, `run` with live reload, a broken file
//! keeping the last good configuration, SIGTERM draining, and the quick start.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use novaedge_echo::EchoServer;

fn backend_name(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["name"].as_str().unwrap().to_owned()
}

/// Polls until the proxy answers on `addr`.
async fn wait_serving(addr: SocketAddr, host: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(addr, host, "/").await.is_err() {
        assert!(Instant::now() < deadline, "proxy never served on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn gateway(port: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: t}}
spec:
  gatewayClassName: novaedge
  listeners: [{{name: http, protocol: HTTP, port: {port}}}]
"
    )
}

fn route(service: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: t}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [app.test]
  rules:
    - backendRefs: [{{name: {service}, port: 80}}]
"
    )
}

/// Writes a Gateway listening on a free port, Service `a` at `backend` and a route to it to
/// `dir/all.yaml`; returns the listener's address.
fn write_one_route(dir: &Path, backend: SocketAddr) -> SocketAddr {
    let port = free_port();
    std::fs::write(
        dir.join("all.yaml"),
        format!(
            "{}---\n{}---\n{}",
            gateway(port),
            service("a", backend.port()),
            route("a")
        ),
    )
    .unwrap();
    ([127, 0, 0, 1], port).into()
}

/// Replaces a file the way editors do: write a temporary file, then rename it over the old one.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `novaedge check` finds and explains, naming the file, the object and the field: a route to a
/// missing Service or port and a cross-namespace reference without a ReferenceGrant (warnings:
/// served as 500s, with the route's `ResolvedRefs` condition), an invalid regex (the route is
/// not accepted), a listener port conflict, and a field of the wrong type (errors).
#[test]
fn check_names_file_object_and_field_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path());
    make_cert(dir.path(), "tls", "DNS:tls.test");
    let file = dir.path().join("app.yaml");
    std::fs::write(
        &file,
        format!(
            "{}---\n{}---\n{}",
            gateway(8080),
            service("api", 9001),
            "apiVersion: v1
kind: Secret
metadata:
  name: cert
  namespace: t
  annotations: {novaedge.io/cert-file: tls.crt, novaedge.io/key-file: tls.key}
type: kubernetes.io/tls
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: t}
spec:
  parentRefs: [{name: gw}]
  rules:
    - backendRefs: [{name: missing, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /x}}]
      backendRefs: [{name: api, port: 81}]
    - matches: [{path: {type: PathPrefix, value: /y}}]
      backendRefs: [{name: db, namespace: data, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: regex, namespace: t}
spec:
  parentRefs: [{name: gw}]
  rules:
    - matches: [{path: {type: RegularExpression, value: \"/users/(\"}}]
      backendRefs: [{name: api, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tls, namespace: t}
spec:
  gatewayClassName: novaedge
  listeners: [{name: https, protocol: HTTPS, port: 8080, tls: {certificateRefs: [{name: cert}]}}]
---
apiVersion: v1
kind: Service
metadata: {name: typo, namespace: t}
spec:
  ports: [{port: eighty}]
"
        ),
    )
    .unwrap();
    let out = Command::new(BIN).arg("check").arg(&file).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!out.status.success(), "{stdout}");
    let f = file.display();
    for expected in [
        format!(
            "warning: {f}: HTTPRoute t/shop: spec.rules[0].backendRefs[0].name: Service t/missing \
             not found; its share of requests is answered 500"
        ),
        format!(
            "warning: {f}: HTTPRoute t/shop: spec.rules[1].backendRefs[0].port: Service t/api has \
             no port 81"
        ),
        format!(
            "warning: {f}: HTTPRoute t/shop: spec.rules[2].backendRefs[0].namespace: Service \
             data/db is in another namespace and no ReferenceGrant there allows HTTPRoutes of \
             namespace t to refer to it"
        ),
        format!("error: {f}: HTTPRoute t/regex: spec.rules[0].matches[0].path.value: "),
        format!(
            "error: {f}: Gateway t/tls: spec.listeners[0].protocol: port 8080 is already HTTP for \
             listener \"http\" of Gateway t/gw; HTTP and HTTPS cannot share a port"
        ),
        format!("error: {f}: Service t/typo: spec.ports[0].port: invalid type"),
        "status: Gateway t/tls: listener \"https\": Conflicted=True (ProtocolConflict): port \
         8080 is already HTTP for listener \"http\" of Gateway t/gw"
            .to_owned(),
        "status: HTTPRoute t/regex: spec.parentRefs[0] (Gateway t/gw): Accepted=False \
         (UnsupportedValue): spec.rules[0].matches[0].path.value: "
            .to_owned(),
        "status: HTTPRoute t/shop: spec.parentRefs[0] (Gateway t/gw): ResolvedRefs=False \
         (BackendNotFound): spec.rules[0].backendRefs[0].name: Service t/missing not found"
            .to_owned(),
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&expected)),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(stdout.contains("3 error(s)"), "{stdout}");
}

#[test]
fn check_accepts_the_quick_start() {
    let quickstart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
    let out = Command::new(BIN)
        .arg("check")
        .arg(quickstart)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("ok"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reloads_on_change_and_keeps_the_last_good_config() {
    let a = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a")
        .await
        .unwrap();
    let b = EchoServer::start("127.0.0.1:0".parse().unwrap(), "b")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    std::fs::write(dir.path().join("gateway.yaml"), gateway(port)).unwrap();
    std::fs::write(
        dir.path().join("services.yaml"),
        format!(
            "{}---\n{}",
            service("a", a.local_addr().port()),
            service("b", b.local_addr().port())
        ),
    )
    .unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(&routes, route("a")).unwrap();

    let proxy = Proxy::start(&["run", "--bind", "127.0.0.1", dir.path().to_str().unwrap()]);
    wait_serving(addr, "app.test").await;
    let (status, body) = get(addr, "app.test", "/").await.unwrap();
    assert_eq!((status, backend_name(&body).as_str()), (200, "a"));
    proxy.wait_log("watching for changes", 0);

    // A good change is picked up.
    let mark = proxy.log_len();
    replace(&routes, &route("b"));
    proxy.wait_log("snapshot applied", mark);
    let (status, body) = get(addr, "app.test", "/").await.unwrap();
    assert_eq!((status, backend_name(&body).as_str()), (200, "b"));

    // A broken change is reported with file, object and field; the last good config serves.
    let mark = proxy.log_len();
    replace(&routes, &route("b").replace("port: 80", "port: 8o"));
    let at = proxy.wait_log("keeping the last good one", mark);
    let log = proxy.log.lock().unwrap()[mark..=at].join("\n");
    assert!(
        log.contains("routes.yaml: HTTPRoute t/r: spec.rules[0].backendRefs[0].port"),
        "{log}"
    );
    for _ in 0..20 {
        let (status, body) = get(addr, "app.test", "/").await.unwrap();
        assert_eq!((status, backend_name(&body).as_str()), (200, "b"));
    }

    // Fixed again: served again.
    let mark = proxy.log_len();
    replace(&routes, &route("a"));
    proxy.wait_log("snapshot applied", mark);
    let (status, body) = get(addr, "app.test", "/").await.unwrap();
    assert_eq!((status, backend_name(&body).as_str()), (200, "a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_then_exits() {
    let a = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = write_one_route(dir.path(), a.local_addr());
    let mut proxy = Proxy::start(&[
        "run",
        "--bind",
        "127.0.0.1",
        "--drain-timeout",
        "10s",
        dir.path().to_str().unwrap(),
    ]);
    wait_serving(addr, "app.test").await;

    let slow = tokio::spawn(async move { get(addr, "app.test", "/slow?delay_ms=1500").await });
    // The request is in flight once the backend has counted it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.requests() < 2 {
        assert!(
            Instant::now() < deadline,
            "slow request never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.terminate();
    proxy.wait_log("draining", 0);
    let (status, body) = slow.await.unwrap().expect("in-flight request completes");
    assert_eq!(status, 200, "{body}");
    let exit = proxy.wait_exit();
    assert!(exit.success(), "{exit:?}");
    proxy.wait_log("drained; exiting", 0);
    assert!(
        get(addr, "app.test", "/").await.is_err(),
        "still accepting after exit"
    );
}

/// The README's quick start: the example manifests with demo backends. Uses the example's fixed
/// ports (8080, 9001-9005).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_serves_the_readme_examples() {
    let quickstart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut proxy = Proxy::start(&[
        "run",
        "--bind",
        "127.0.0.1",
        "--demo-backends",
        "--admin-addr",
        &admin.to_string(),
        quickstart.to_str().unwrap(),
    ]);
    let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    wait_serving(addr, "shop.example.com").await;
    let (_, body) = get(addr, "shop.example.com", "/api/items").await.unwrap();
    assert_eq!(backend_name(&body), "demo/api:80#0");
    let (status, _) = get(addr, "nowhere.example.com", "/").await.unwrap();
    assert_eq!(status, 404);

    // The admin listener: probes, the snapshot in force, the backends, the VIPs, metrics.
    assert_eq!(get(admin, "admin", "/live").await.unwrap().0, 200);
    assert_eq!(get(admin, "admin", "/ready").await.unwrap().0, 200);
    let json = |body: &str| -> serde_json::Value { serde_json::from_str(body).unwrap() };
    let (_, dump) = get(admin, "admin", "/config_dump").await.unwrap();
    let dump = json(&dump);
    assert!(
        dump["listeners"].as_array().is_some_and(|l| !l.is_empty()),
        "{dump}"
    );
    let (_, endpoints) = get(admin, "admin", "/endpoints").await.unwrap();
    let endpoints = json(&endpoints);
    let api = endpoints
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "demo/api:80")
        .unwrap_or_else(|| panic!("{endpoints}"));
    assert_eq!(api["endpoints"][0]["address"], "127.0.0.1:9001", "{api}");
    assert_eq!(api["endpoints"][0]["healthy"], true, "{api}");
    let (_, vips) = get(admin, "admin", "/vips").await.unwrap();
    assert_eq!(json(&vips)["drivers"], serde_json::json!([]));
    let (_, metrics) = get(admin, "admin", "/metrics").await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("novaedge_snapshot_version ")),
        "{metrics}"
    );
    let healthy = "novaedge_backend_endpoints{backend=\"demo/api:80\",health=\"healthy\"} 1";
    assert!(metrics.lines().any(|l| l == healthy), "{metrics}");
    // The requests above, by route, backend and status class (the 404 has no route).
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("novaedge_requests_total{")
                && l.contains("backend=\"demo/api:80\"")
                && l.contains("code_class=\"2xx\"")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("novaedge_requests_total{route=\"\"")
                && l.contains("code_class=\"4xx\"")),
        "{metrics}"
    );
    promtool_accepts(&metrics);

    proxy.terminate();
    assert!(proxy.wait_exit().success());
}

/// Gateway API's filter examples through `novaedge run`, as the echo backend sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_filters_behave_as_the_spec_examples() {
    let app = EchoServer::start("127.0.0.1:0".parse().unwrap(), "app")
        .await
        .unwrap();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let routes = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: t}
spec:
  parentRefs: [{name: gw}]
  hostnames: [app.test]
  rules:
    - matches: [{path: {type: PathPrefix, value: /prefix}}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: my-header, value: bar}]
            add: [{name: my-added, value: \"bar,baz\"}]
            remove: [x-remove]
        - type: URLRewrite
          urlRewrite:
            hostname: rewritten.test
            path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            set: [{name: x-header-set, value: set-overwrites-values}]
            add: [{name: x-header-add, value: add-appends-values}]
            remove: [x-echo-name]
      backendRefs: [{name: app, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /full}}]
      filters:
        - type: URLRewrite
          urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /one}}
      backendRefs: [{name: app, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /secure}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {scheme: https, statusCode: 301}
    - matches: [{path: {type: PathPrefix, value: /moved}}]
      filters:
        - type: RequestRedirect
          requestRedirect:
            hostname: example.org
            path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
";
    std::fs::write(
        dir.path().join("all.yaml"),
        format!(
            "{}---\n{}---\n{routes}",
            gateway(port),
            service("app", app.local_addr().port())
        ),
    )
    .unwrap();
    let mut proxy = Proxy::start(&["run", "--bind", "127.0.0.1", dir.path().to_str().unwrap()]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_serving(addr, "app.test").await;

    // Request headers and the prefix rewrite: /prefix/two becomes /one/two on rewritten.test.
    let (status, headers, body) = get_with_headers(
        addr,
        "app.test",
        "/prefix/two?q=1",
        &[("my-header", "foo"), ("my-added", "foo"), ("x-remove", "1")],
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let seen: novaedge_echo::RequestInfo = serde_json::from_str(&body).unwrap();
    assert_eq!(seen.path, "/one/two");
    assert_eq!(seen.query.as_deref(), Some("q=1"));
    assert_eq!(seen.host.as_deref(), Some("rewritten.test"));
    assert_eq!(seen.header("my-header"), Some("bar"));
    assert_eq!(seen.header("my-added"), Some("foo,bar,baz"));
    assert_eq!(seen.header("x-remove"), None);
    // The response headers.
    assert_eq!(headers["x-header-set"], "set-overwrites-values");
    assert_eq!(headers["x-header-add"], "add-appends-values");
    assert!(headers.get("x-echo-name").is_none());

    let (_, _, body) = get_with_headers(addr, "app.test", "/full/anything", &[])
        .await
        .unwrap();
    let seen: novaedge_echo::RequestInfo = serde_json::from_str(&body).unwrap();
    assert_eq!(seen.path, "/one");

    // Redirects: to https on its own port, and to another host on the listener's port.
    let (status, headers, _) = get_with_headers(addr, "app.test", "/secure/login", &[])
        .await
        .unwrap();
    assert_eq!(status, 301);
    assert_eq!(headers["location"], "https://app.test/secure/login");
    let (status, headers, _) = get_with_headers(addr, "app.test", "/moved/page?x=1", &[])
        .await
        .unwrap();
    assert_eq!(status, 302);
    assert_eq!(
        headers["location"],
        format!("http://example.org:{port}/new/page?x=1")
    );
    assert_eq!(
        app.requests(),
        2,
        "only the two rewritten requests reach the backend"
    );

    proxy.terminate();
    assert!(proxy.wait_exit().success());
}

/// The engine's settings from the command line: the runtime's worker threads, the idle timeout
/// (a keep-alive connection closed after 1 s instead of 60 s) and the request body limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_takes_the_engine_settings_from_its_flags() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let a = EchoServer::start("127.0.0.1:0".parse().unwrap(), "a")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = write_one_route(dir.path(), a.local_addr());
    let proxy = Proxy::start(&[
        "run",
        "--bind",
        "127.0.0.1",
        "--worker-threads",
        "1",
        "--idle-timeout",
        "1s",
        "--park-after",
        "100ms",
        "--max-request-body",
        "1k",
        dir.path().to_str().unwrap(),
    ]);
    wait_serving(addr, "app.test").await;

    let line = proxy.wait_log("worker threads", 0);
    let logged = proxy.log.lock().unwrap()[line].clone();
    assert!(logged.contains("serving with 1 worker threads"), "{logged}");

    // A keep-alive connection, once answered, is closed by the proxy after the idle timeout.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response))
        .await
        .expect("closed at the 1 s idle timeout, not the default 60 s")
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // A body declared larger than 1 KiB is refused before it is read.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1025\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");

    // Settings that cannot work are refused, naming the flags.
    let output = Command::new(BIN)
        .args(["run", "--idle-timeout", "1s", "--park-after", "2s"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--park-after 2s: must not be longer than --idle-timeout 1s"),
        "{stderr}"
    );
}
