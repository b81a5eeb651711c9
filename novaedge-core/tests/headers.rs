//! Header rewriting between client and backend: hop-by-hop headers stay on their hop, the
//! `X-Forwarded-*` headers describe the client, and the host survives a change of protocol.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_body_util::Full;
use novaedge_echo::RequestInfo;
use novaedge_snapshot::UpstreamProtocol::{H2c, Http1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Headers that must never reach a backend, whatever the client sent.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-authorization",
    "http2-settings",
    "x-foo",
    "x-bar",
];

/// An engine with an HTTP/1.1 echo backend on host `h1.test` and an h2c one on `h2.test`.
struct Setup {
    addr: SocketAddr,
    _engine: novaedge_core::Engine,
    _backends: [novaedge_echo::EchoServer; 2],
}

async fn setup() -> Setup {
    let h1 = echo("h1").await;
    let h2 = echo("h2").await;
    let engine = engine();
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![
                route("default/h1", "web", &["h1.test"], vec![to("h1")]),
                route("default/h2", "web", &["h2.test"], vec![to("h2")]),
            ],
            vec![backend("h1", Http1, &[&h1]), backend("h2", H2c, &[&h2])],
        ))
        .expect("snapshot applies");
    Setup {
        addr: engine.local_addr("web").expect("listener is bound"),
        _engine: engine,
        _backends: [h1, h2],
    }
}

#[track_caller]
fn assert_no_hop_by_hop(info: &RequestInfo, what: &str) {
    for name in HOP_BY_HOP {
        assert!(
            !info.headers.contains_key(name),
            "{what}: backend saw {name}: {:?}",
            info.headers
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_stay_on_the_client_hop() {
    let s = setup().await;
    let mut client = Client::connect(Proto::Http1, s.addr).await;
    for host in ["h1.test:8080", "h2.test:8080"] {
        let req = client
            .request(Method::GET, host, "/hop")
            .header("connection", "keep-alive, x-foo")
            .header("keep-alive", "timeout=5")
            .header("proxy-connection", "keep-alive")
            .header("te", "gzip")
            .header("upgrade", "foo/2")
            .header("proxy-authorization", "Basic dXNlcjpwYXNz")
            .header("x-foo", "1")
            .header("x-kept", "yes")
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "spoofed.test")
            .body(Full::default())
            .unwrap();
        let info = info(&client.send(req).await.expect("request"));
        assert_no_hop_by_hop(&info, host);
        assert_eq!(info.header("x-kept"), Some("yes"));
        assert_eq!(
            info.header("x-forwarded-for"),
            Some("203.0.113.7, 127.0.0.1")
        );
        assert_eq!(info.header("x-forwarded-proto"), Some("http"));
        assert_eq!(info.header("x-forwarded-host"), Some(host));
        assert_eq!(info.headers["x-forwarded-for"].len(), 1);
        assert_eq!(info.headers["x-forwarded-proto"].len(), 1);
        assert_eq!(info.headers["x-forwarded-host"].len(), 1);
        assert_eq!(info.host.as_deref(), Some(host));
    }
    assert!(client.is_open());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_websocket_upgrades_are_forwarded() {
    let s = setup().await;
    let mut client = Client::connect(Proto::Http1, s.addr).await;
    // An h2c upgrade (RFC 7540 section 3.2) is about the client's connection to the proxy; the
    // backend must get a plain request.
    let req = client
        .request(Method::GET, "h1.test", "/")
        .header("connection", "Upgrade, HTTP2-Settings")
        .header("upgrade", "h2c")
        .header("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA")
        .body(Full::default())
        .unwrap();
    let response = client.send(req).await.expect("request");
    assert_no_hop_by_hop(&info(&response), "h2c upgrade");
    assert!(response.headers().get("upgrade").is_none());

    // `Upgrade: websocket` without `Connection: upgrade` is no upgrade either.
    let req = client
        .request(Method::GET, "h1.test", "/")
        .header("upgrade", "websocket")
        .body(Full::default())
        .unwrap();
    let response = client.send(req).await.expect("request");
    assert_no_hop_by_hop(&info(&response), "upgrade without connection");
    assert!(client.is_open());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn te_trailers_is_kept_and_other_te_values_are_not() {
    let s = setup().await;
    for proto in BOTH {
        let mut client = Client::connect(proto, s.addr).await;
        for host in ["h1.test", "h2.test"] {
            let mut req = client
                .request(Method::GET, host, "/")
                .header("te", "trailers");
            if proto == Proto::Http1 {
                req = req.header("connection", "te");
            }
            let info = info(
                &client
                    .send(req.body(Full::default()).unwrap())
                    .await
                    .unwrap(),
            );
            assert_eq!(info.headers.get("te"), Some(&vec!["trailers".to_owned()]));
        }
        if proto == Proto::Http1 {
            let req = client
                .request(Method::GET, "h1.test", "/")
                .header("te", "deflate, trailers")
                .header("connection", "te")
                .body(Full::default())
                .unwrap();
            let info = info(&client.send(req).await.unwrap());
            assert_eq!(info.headers.get("te"), Some(&vec!["trailers".to_owned()]));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_reframed_for_the_backend() {
    let s = setup().await;
    let mut client = Client::connect(Proto::Http1, s.addr).await;
    // A chunked upload: the client's framing ends at the proxy, the body arrives whole.
    for host in ["h1.test", "h2.test"] {
        let body = Bytes::from(vec![b'z'; 100_000]);
        let req = client
            .request(Method::POST, host, "/upload")
            .header("transfer-encoding", "chunked")
            .body(Full::new(body))
            .unwrap();
        let info = info(&client.send(req).await.expect("upload"));
        assert_eq!(info.body_len, 100_000, "{host}");
        assert_eq!(info.method, "POST");
        assert!(info.header("content-length").is_none(), "{host}");
        if host == "h2.test" {
            assert_no_hop_by_hop(&info, host);
        } else {
            // The proxy's own framing of a body of unknown length, not the client's header.
            assert_eq!(info.headers["transfer-encoding"], ["chunked"], "{host}");
        }
    }
    // With a length: the backend gets it.
    let req = client
        .request(Method::PUT, "h1.test", "/upload")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let info = info(&client.send(req).await.expect("upload"));
    assert_eq!(info.body_len, 5);
    assert_eq!(info.header("content-length"), Some("5"));
    assert_no_hop_by_hop(&info, "PUT with a length");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_survives_a_change_of_protocol() {
    let s = setup().await;

    // h2c client -> HTTP/1.1 backend: the :authority becomes the Host header.
    let mut h2 = Client::connect(Proto::H2c, s.addr).await;
    let seen = info(&h2.get("h1.test:8443", "/a").await);
    assert_eq!(seen.version, "HTTP/1.1");
    assert_eq!(seen.headers["host"], ["h1.test:8443"]);
    assert_eq!(seen.header("x-forwarded-host"), Some("h1.test:8443"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_no_hop_by_hop(&seen, "h2c -> h1");

    // HTTP/1.1 client -> h2c backend: the Host header becomes the :authority, and no Host
    // header is sent beside it.
    let mut h1 = Client::connect(Proto::Http1, s.addr).await;
    let seen = info(&h1.get("h2.test:8443", "/b").await);
    assert_eq!(seen.version, "HTTP/2.0");
    assert_eq!(seen.host.as_deref(), Some("h2.test:8443"));
    assert!(seen.header("host").is_none(), "{:?}", seen.headers);
    assert_eq!(seen.header("x-forwarded-host"), Some("h2.test:8443"));
    assert_no_hop_by_hop(&seen, "h1 -> h2c");

    // Same protocol on both sides.
    let seen = info(&h1.get("h1.test", "/c").await);
    assert_eq!(seen.headers["host"], ["h1.test"]);
    let seen = info(&h2.get("h2.test", "/d").await);
    assert_eq!(seen.host.as_deref(), Some("h2.test"));
    assert_eq!(seen.version, "HTTP/2.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_lines_are_folded_into_one_list() {
    let s = setup().await;
    let mut client = Client::connect(Proto::Http1, s.addr).await;
    let req = client
        .request(Method::GET, "h1.test", "/")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-for", "198.51.100.1, 192.0.2.4")
        .body(Full::default())
        .unwrap();
    let info = info(&client.send(req).await.unwrap());
    assert_eq!(
        info.headers["x-forwarded-for"],
        ["203.0.113.7, 198.51.100.1, 192.0.2.4, 127.0.0.1"]
    );
}

/// A backend that answers every request on a connection with `response`, whatever it was.
async fn raw_backend(response: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::new(LOCALHOST, 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0; 4096];
                loop {
                    // Requests here have no body: a request ends with its head.
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        if stream.write_all(response).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_stay_on_the_backend_hop() {
    let raw = raw_backend(
        b"HTTP/1.1 200 OK\r\n\
          Connection: x-bar\r\n\
          X-Bar: secret\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          Proxy-Authenticate: Basic realm=\"x\"\r\n\
          Upgrade: foo/2\r\n\
          X-Kept: yes\r\n\
          Content-Length: 2\r\n\
          \r\n\
          ok",
    )
    .await;
    let engine = engine();
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![route("default/raw", "web", &[], vec![to("raw")])],
            vec![backend_at("raw", Http1, vec![endpoint(raw)])],
        ))
        .expect("snapshot applies");
    let addr = engine.local_addr("web").expect("listener is bound");

    for proto in BOTH {
        let mut client = Client::connect(proto, addr).await;
        // Twice: the upstream connection is reused for the second one.
        for _ in 0..2 {
            let response = client.get("raw.test", "/").await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.body().as_ref(), b"ok");
            assert_eq!(response.headers()["x-kept"], "yes");
            for name in [
                "connection",
                "x-bar",
                "keep-alive",
                "proxy-connection",
                "proxy-authenticate",
                "upgrade",
            ] {
                assert!(
                    response.headers().get(name).is_none(),
                    "{proto:?}: client saw {name}: {response:?}"
                );
            }
        }
        assert!(client.is_open());
    }
}
