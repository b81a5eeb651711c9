//! The admin listener over real TCP on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use novaedge_admin::{Admin, OPENMETRICS, PROMETHEUS_TEXT};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request on its own connection; returns the status line, headers and body.
async fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    get_with(addr, method, path, "").await
}

/// As [`get`], with `extra` header lines (each ending in CRLF).
async fn get_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &str,
) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("{method} {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_owned())
}

#[tokio::test]
async fn serves_probes_metrics_and_views() {
    let ready = Arc::new(AtomicBool::new(false));
    let requests = Counter::<u64>::default();
    let mut admin = Admin::builder();
    admin
        .registry_mut()
        .register("novaedge_test_requests", "Requests seen", requests.clone());
    let flag = ready.clone();
    let admin = admin
        .ready(move || {
            if flag.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("no configuration yet".into())
            }
        })
        .view("config_dump", || async {
            serde_json::json!({"listeners": [{"port": 80}]})
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(admin.serve(listener, async {
        let _ = stopped.await;
    }));

    assert_eq!(get(addr, "GET", "/live").await.0, 200);
    let (status, _, body) = get(addr, "GET", "/ready").await;
    assert_eq!((status, body.as_str()), (503, "no configuration yet\n"));
    ready.store(true, Ordering::Relaxed);
    assert_eq!(get(addr, "GET", "/ready").await.0, 200);

    requests.inc_by(3);
    // Prometheus asks for OpenMetrics...
    let accept = "accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n";
    let (status, head, body) = get_with(addr, "GET", "/metrics", accept).await;
    assert_eq!(status, 200);
    assert!(
        head.contains(&format!("content-type: {OPENMETRICS}")),
        "{head}"
    );
    assert!(
        body.contains("# TYPE novaedge_test_requests counter"),
        "{body}"
    );
    assert!(body.contains("novaedge_test_requests_total 3"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    // ...anything else gets the classic text format, where a counter's family ends in _total.
    let (status, head, body) = get(addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.contains(&format!("content-type: {PROMETHEUS_TEXT}")),
        "{head}"
    );
    assert_eq!(
        body,
        "# HELP novaedge_test_requests_total Requests seen.\n\
         # TYPE novaedge_test_requests_total counter\n\
         novaedge_test_requests_total 3\n"
    );

    let (status, head, body) = get(addr, "GET", "/config_dump").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["listeners"][0]["port"], 80);

    let (status, _, body) = get(addr, "GET", "/nope").await;
    assert_eq!(status, 404);
    assert!(body.contains("/config_dump"), "{body}");
    assert_eq!(get(addr, "POST", "/ready").await.0, 405);
    let (status, _, body) = get(addr, "HEAD", "/live").await;
    assert_eq!((status, body.as_str()), (200, ""));

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
