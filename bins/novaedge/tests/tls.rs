//! HTTPS through `novaedge run`, checked with the command-line clients operators use: curl
//! (`--resolve`, HTTP/2 and HTTP/1.1 by ALPN), `openssl s_client` (SNI, ALPN, the certificate
//! served), certificate files rotated on disk, a broken replacement refused, and the HTTP
//! listener redirecting to HTTPS. Certificates are made by `openssl` in a temporary directory.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use novaedge_echo::EchoServer;

/// The SHA-256 fingerprint of a certificate file.
fn fingerprint_of_file(dir: &Path, file: &str) -> String {
    ok(run(
        "openssl",
        &["x509", "-noout", "-fingerprint", "-sha256", "-in", file],
        dir,
    ))
}

/// `openssl s_client` against the proxy with `sni` and ALPN `h2,http/1.1`: (whether the
/// handshake completed and verified, its output, the served certificate's fingerprint).
fn s_client(dir: &Path, port: u16, sni: &str) -> (bool, String, String) {
    let output = run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            sni,
            "-alpn",
            "h2,http/1.1",
            "-CAfile",
            "ca.crt",
            "-verify_hostname",
            sni,
            "-verify_return_error",
        ],
        dir,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let served = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            sni,
            "-showcerts",
        ])
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            let pem = String::from_utf8_lossy(&o.stdout).into_owned();
            let start = pem.find("-----BEGIN CERTIFICATE-----")?;
            let end = pem.find("-----END CERTIFICATE-----")? + "-----END CERTIFICATE-----".len();
            let leaf = dir.join("served.pem");
            std::fs::write(&leaf, &pem[start..end]).ok()?;
            Some(fingerprint_of_file(dir, "served.pem"))
        })
        .unwrap_or_default();
    (output.status.success(), text, served)
}

fn manifests(http_port: u16, https_port: u16, backend: SocketAddr) -> String {
    let backend_port = backend.port();
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: t
  annotations: {{novaedge.io/https-redirect: http}}
spec:
  gatewayClassName: novaedge
  listeners:
  - {{name: http, protocol: HTTP, port: {http_port}}}
  - name: shop
    protocol: HTTPS
    port: {https_port}
    hostname: shop.test
    tls: {{mode: Terminate, certificateRefs: [{{name: shop-tls}}]}}
  - name: api
    protocol: HTTPS
    port: {https_port}
    hostname: "*.api.test"
    tls: {{mode: Terminate, certificateRefs: [{{name: api-tls}}]}}
---
apiVersion: v1
kind: Secret
metadata:
  name: shop-tls
  namespace: t
  annotations: {{novaedge.io/cert-file: shop.crt, novaedge.io/key-file: shop.key}}
type: kubernetes.io/tls
---
apiVersion: v1
kind: Secret
metadata:
  name: api-tls
  namespace: t
  annotations: {{novaedge.io/cert-file: api.crt, novaedge.io/key-file: api.key}}
type: kubernetes.io/tls
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: t}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{name: echo, port: 80}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: t}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-1, namespace: t, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
ports: [{{name: http, port: {backend_port}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_curl_and_openssl_rotation_and_redirect() {
    let backend = EchoServer::start("127.0.0.1:0".parse().unwrap(), "echo")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d);
    make_cert(d, "shop", "DNS:shop.test");
    make_cert(d, "api", "DNS:*.api.test");
    let (http_port, https_port) = (free_port(), free_port());
    std::fs::write(
        d.join("gateway.yaml"),
        manifests(http_port, https_port, backend.local_addr()),
    )
    .unwrap();
    let proxy = Proxy::start(&[
        "run",
        "--bind",
        "127.0.0.1",
        d.join("gateway.yaml").to_str().unwrap(),
    ]);
    proxy.wait_log("watching for changes", 0);

    // curl: HTTP/2 and HTTP/1.1 by ALPN, the name verified against the test CA.
    let (status, body) = curl(d, "shop.test", https_port, "/x?y=1", "--http2");
    assert_eq!(status, "2 200", "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["path"], "/x");
    assert_eq!(seen["headers"]["x-forwarded-proto"][0], "https");
    let (status, _) = curl(d, "shop.test", https_port, "/", "--http1.1");
    assert_eq!(status, "1.1 200");
    let (status, _) = curl(d, "a.api.test", https_port, "/", "--http2");
    assert_eq!(status, "2 200");

    // openssl: SNI picks each listener's certificate, ALPN says h2; a name no listener
    // serves (and there is no hostname-less listener, so no default) fails the handshake.
    let (verified, text, served) = s_client(d, https_port, "b.api.test");
    assert!(verified, "{text}");
    assert!(text.contains("ALPN protocol: h2"), "{text}");
    assert_eq!(served, fingerprint_of_file(d, "api.crt"));
    let (verified, text, served) = s_client(d, https_port, "shop.test");
    assert!(verified, "{text}");
    assert_eq!(served, fingerprint_of_file(d, "shop.crt"));
    let (verified, text, _) = s_client(d, https_port, "nothing.test");
    assert!(!verified, "no certificate for nothing.test: {text}");

    // The HTTP listener sends everything to HTTPS.
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
            &format!("http://127.0.0.1:{http_port}/a?b=1"),
        ],
        d,
    ));
    assert_eq!(out, format!("301 https://shop.test:{https_port}/a?b=1"));

    // Rotation: new files on disk serve new handshakes, without a restart.
    let old = fingerprint_of_file(d, "shop.crt");
    let mark = proxy.log_len();
    make_cert(d, "shop", "DNS:shop.test");
    let new = fingerprint_of_file(d, "shop.crt");
    assert_ne!(old, new);
    proxy.wait_log("snapshot applied", mark);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (verified, text, served) = s_client(d, https_port, "shop.test");
        assert!(verified, "{text}");
        if served == new {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate is never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = curl(d, "shop.test", https_port, "/", "--http2");
    assert_eq!(status, "2 200");

    // A broken replacement (a key that is not the certificate's) is refused, with the
    // Secret named, and the current certificate keeps serving.
    let mark = proxy.log_len();
    ok(run(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "other.key",
        ],
        d,
    ));
    std::fs::rename(d.join("other.key"), d.join("shop.key")).unwrap();
    let at = proxy.wait_log("keeping the last good one", mark);
    let log = proxy.log.lock().unwrap()[mark..=at].join("\n");
    assert!(log.contains("shop-tls"), "the Secret is named: {log}");
    for _ in 0..5 {
        let (verified, text, served) = s_client(d, https_port, "shop.test");
        assert!(verified, "{text}");
        assert_eq!(served, new);
    }
}
