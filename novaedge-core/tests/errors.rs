//! What a client sees when the proxy cannot forward a request (each failure has its status and
//! a short body saying why), and that the backend's own statuses pass through unchanged.

mod common;

use std::net::SocketAddr;

use common::*;
use http::{Method, StatusCode, header};
use http_body_util::Full;
use novaedge_snapshot::UpstreamProtocol::{H2c, Http1};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_errors_have_their_status_and_reason() {
    let live = echo("live").await;
    let unready = echo("unready").await;
    let refused = SocketAddr::new(LOCALHOST, free_port());

    // A backend that accepts connections and closes them without answering.
    let hangup = TcpListener::bind(SocketAddr::new(LOCALHOST, 0))
        .await
        .unwrap();
    let hangup_addr = hangup.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = hangup.accept().await {
            // Read some of the request, so the close is not a connect failure.
            let mut buf = [0; 64];
            let _ = stream.read(&mut buf).await;
        }
    });

    let mut not_ready = endpoint(unready.local_addr());
    not_ready.ready = false;
    let backends = vec![
        backend("live", Http1, &[&live]),
        backend_at("unready", Http1, vec![not_ready]),
        backend_at("empty", Http1, Vec::new()),
        backend_at("refused", Http1, vec![endpoint(refused)]),
        backend_at("refused-h2", H2c, vec![endpoint(refused)]),
        backend_at("hangup", Http1, vec![endpoint(hangup_addr)]),
    ];
    let routes = vec![
        route("default/live", "web", &["live.test"], vec![to("live")]),
        route(
            "default/unready",
            "web",
            &["unready.test"],
            vec![to("unready")],
        ),
        route("default/empty", "web", &["empty.test"], vec![to("empty")]),
        route(
            "default/refused",
            "web",
            &["refused.test"],
            vec![to("refused")],
        ),
        route(
            "default/refused-h2",
            "web",
            &["refused-h2.test"],
            vec![to("refused-h2")],
        ),
        route(
            "default/hangup",
            "web",
            &["hangup.test"],
            vec![to("hangup")],
        ),
        route(
            "default/zero",
            "web",
            &["zero.test"],
            vec![rule(Vec::new(), &[("live", 0), ("unready", 0)])],
        ),
        route(
            "default/none",
            "web",
            &["none.test"],
            vec![rule(Vec::new(), &[])],
        ),
    ];
    let engine = engine();
    engine
        .apply(&snapshot(1, vec![listener("web")], routes, backends))
        .expect("snapshot applies");
    let addr = engine.local_addr("web").expect("listener is bound");

    let cases = [
        (
            "unready.test",
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream\n",
        ),
        (
            "empty.test",
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream\n",
        ),
        (
            "refused.test",
            StatusCode::BAD_GATEWAY,
            "upstream connect error\n",
        ),
        (
            "refused-h2.test",
            StatusCode::BAD_GATEWAY,
            "upstream connect error\n",
        ),
        (
            "hangup.test",
            StatusCode::BAD_GATEWAY,
            "upstream request failed\n",
        ),
        (
            "zero.test",
            StatusCode::INTERNAL_SERVER_ERROR,
            "no backend\n",
        ),
        (
            "none.test",
            StatusCode::INTERNAL_SERVER_ERROR,
            "no backend\n",
        ),
        ("nothing.test", StatusCode::NOT_FOUND, "no route\n"),
    ];
    for proto in BOTH {
        let mut client = Client::connect(proto, addr).await;
        for (host, status, reason) in cases {
            // Twice: a failure must not poison anything for the next request.
            for _ in 0..2 {
                let response = client.get(host, "/").await;
                assert_eq!(response.status(), status, "{proto:?} {host}: {response:?}");
                assert_eq!(body_text(&response), reason, "{proto:?} {host}");
                assert_eq!(
                    response.headers()[header::CONTENT_TYPE],
                    "text/plain; charset=utf-8"
                );
            }
        }
        // The client connection survives every error.
        assert_eq!(info(&client.get("live.test", "/").await).name, "live");
        assert_eq!(client.get("zero.test", "/").await.status(), 500);
        assert!(client.is_open(), "{proto:?} connection closed");
    }
    assert_eq!(unready.requests(), 0, "a not-ready endpoint got traffic");
    assert_eq!(live.requests(), 2, "a weight-0 backend got traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_statuses_pass_through() {
    let live = echo("live").await;
    let engine = engine();
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![route("default/live", "web", &[], vec![to("live")])],
            vec![backend("live", Http1, &[&live])],
        ))
        .expect("snapshot applies");
    let addr = engine.local_addr("web").expect("listener is bound");

    for proto in BOTH {
        let mut client = Client::connect(proto, addr).await;
        for status in [201, 302, 400, 404, 418, 429, 500, 502, 503, 504] {
            let response = client
                .get("live.test", &format!("/x?status={status}"))
                .await;
            assert_eq!(
                response.status().as_u16(),
                status,
                "{proto:?}: {response:?}"
            );
            // The body is the backend's, not a proxy error page.
            assert_eq!(echo_name(&response), "live");
            let info: novaedge_echo::RequestInfo =
                serde_json::from_slice(response.body()).expect("echo JSON body");
            assert_eq!(info.query.as_deref(), Some(&*format!("status={status}")));
        }
        // Bodies of a given size, and HEAD, come through intact.
        let response = client.get("live.test", "/?size=100000").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body().len(), 100_000);
        assert_eq!(response.headers()[header::CONTENT_LENGTH], "100000");
        let head = client
            .request(Method::HEAD, "live.test", "/?size=5000")
            .body(Full::default())
            .unwrap();
        let response = client.send(head).await.expect("HEAD");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.body().is_empty());
        assert!(client.is_open());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_to_an_h2c_backend_is_a_502() {
    let grpc = echo("grpc").await;
    let engine = engine();
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![route("default/h2", "web", &[], vec![to("h2")])],
            vec![backend("h2", H2c, &[&grpc])],
        ))
        .expect("snapshot applies");
    let addr = engine.local_addr("web").expect("listener is bound");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    match tokio_tungstenite::client_async("ws://h2.test/", stream).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
            assert_eq!(
                response.body().as_deref(),
                Some(&b"upgrade not supported by upstream\n"[..])
            );
        }
        other => panic!("expected a 502, got {other:?}"),
    }
    assert_eq!(grpc.requests(), 0);
}
