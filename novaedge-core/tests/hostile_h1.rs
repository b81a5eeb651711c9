//! Hostile HTTP/1.1 clients, written byte by byte on raw sockets: request smuggling vectors,
//! head and body limits, slow and idle clients, too many requests or connections. Each case
//! asserts what the client sees (status, and whether the connection is closed) and that the
//! proxy goes on serving the next, well-behaved client.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use http::StatusCode;
use novaedge_core::{Engine, EngineConfig};
use novaedge_echo::EchoServer;
use novaedge_snapshot::UpstreamProtocol::{self, H2c, Http1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// What a raw client read before the proxy closed the connection (or it gave up waiting).
#[derive(Debug)]
struct Raw {
    bytes: Vec<u8>,
    closed: bool,
}

impl Raw {
    /// The status of the first response, if one came.
    fn status(&self) -> Option<u16> {
        let text = std::str::from_utf8(self.bytes.get(..12)?).ok()?;
        text.strip_prefix("HTTP/1.1 ")?.parse().ok()
    }

    /// How many responses came.
    fn responses(&self) -> usize {
        self.text().matches("HTTP/1.1 ").count()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The start of what was read, for failure messages.
    fn summary(&self) -> String {
        let text = self.text();
        match text.char_indices().nth(400) {
            Some((cut, _)) => format!("{}...", &text[..cut]),
            None => text,
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// Reads until the proxy closes the connection (a reset counts), for at most `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Raw {
    let mut bytes = Vec::new();
    let closed = timeout(within, async {
        loop {
            match stream.read_buf(&mut bytes).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok();
    Raw { bytes, closed }
}

/// Sends `request` on a connection of its own and reads until the proxy closes it. A write the
/// proxy cut short (it answered and closed early) is not an error.
async fn send_raw(addr: SocketAddr, request: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    let _ = stream.write_all(request).await;
    read_until_closed(&mut stream, Duration::from_secs(10)).await
}

/// The proxy answers `status` to `request`, once, and closes the connection.
async fn assert_refused(addr: SocketAddr, what: &str, request: &[u8], status: StatusCode) {
    let raw = send_raw(addr, request).await;
    assert_eq!(
        raw.status(),
        Some(status.as_u16()),
        "{what}: got {:?}",
        raw.summary()
    );
    assert!(raw.closed, "{what}: the connection was left open");
    assert_eq!(raw.responses(), 1, "{what}: {:?}", raw.summary());
}

/// A well-behaved client on a new connection is served by the backend.
async fn assert_serves(addr: SocketAddr, what: &str) {
    let mut client = Client::connect(Proto::Http1, addr).await;
    let response = client.get("ok.test", "/ok").await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "after {what}: {response:?}"
    );
}

async fn proxy(config: EngineConfig) -> (novaedge_core::Engine, SocketAddr, EchoServer) {
    proxy_to(config, Http1).await
}

/// A proxy whose backend speaks `protocol`.
async fn proxy_to(
    config: EngineConfig,
    protocol: UpstreamProtocol,
) -> (novaedge_core::Engine, SocketAddr, EchoServer) {
    let server = echo("backend").await;
    let (engine, addr) = serve_backend_with(config, backend("backend", protocol, &[&server]));
    (engine, addr, server)
}

// === request smuggling ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_vectors_are_refused_with_400_and_close() {
    let (_engine, addr, server) = proxy(EngineConfig::default()).await;
    // Each head is complete; what follows some of them is the request a smuggler hopes the
    // next hop sees.
    let vectors: &[(&str, &[u8])] = &[
        (
            "Content-Length and Transfer-Encoding",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n\
              0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "Transfer-Encoding and Content-Length",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n\
              0\r\n\r\n",
        ),
        (
            "repeated equal Content-Length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
        ),
        (
            "differing Content-Length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        ),
        (
            "Content-Length list",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n\r\nab",
        ),
        (
            "signed Content-Length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\n\r\nab",
        ),
        (
            "hex Content-Length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x2\r\n\r\nab",
        ),
        (
            "Transfer-Encoding with another coding",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding not chunked",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "repeated Transfer-Encoding",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\
              Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
        ),
        (
            "obs-fold hiding Transfer-Encoding",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX: y\r\n\tTransfer-Encoding: chunked\r\n\r\n\
              0\r\n\r\n",
        ),
        (
            "bare LF between fields",
            b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
        ),
        (
            "bare LF hiding Transfer-Encoding",
            b"POST / HTTP/1.1\r\nHost: a\r\nX: y\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "bare LF ending the head",
            b"GET / HTTP/1.1\nHost: a\n\n",
        ),
        (
            "space before the colon",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "invalid header name",
            b"GET / HTTP/1.1\r\nHost: a\r\nX(y): z\r\n\r\n",
        ),
        (
            "control character in a header value",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
        ),
        (
            "bare CR in a header value",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
        ),
        (
            "invalid request line",
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
    ];
    for (what, request) in vectors {
        assert_refused(addr, what, request, StatusCode::BAD_REQUEST).await;
        assert_serves(addr, what).await;
    }
    // Not one of them reached the backend: only the well-behaved requests did.
    assert_eq!(server.requests(), vectors.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_bodies_are_refused_with_400_and_close() {
    for upstream in [Http1, H2c] {
        malformed_chunked_bodies_to(upstream).await;
    }
}

/// The body fails while it is forwarded, to an upstream of `protocol`.
async fn malformed_chunked_bodies_to(protocol: UpstreamProtocol) {
    let (_engine, addr, _server) = proxy_to(EngineConfig::default(), protocol).await;
    let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let bodies: &[(&str, &[u8])] = &[
        ("chunk size not hex", b"zz\r\nhello\r\n0\r\n\r\n"),
        ("chunk size with a sign", b"+5\r\nhello\r\n0\r\n\r\n"),
        (
            "chunk size overflow",
            b"10000000000000000\r\nhello\r\n0\r\n\r\n",
        ),
        ("bare LF after the chunk size", b"5\nhello\r\n0\r\n\r\n"),
        ("bare LF after the chunk data", b"5\r\nhello\n0\r\n\r\n"),
        ("chunk longer than its size", b"3\r\nhello\r\n0\r\n\r\n"),
        ("LF in a chunk extension", b"5;a=b\nc\r\nhello\r\n0\r\n\r\n"),
    ];
    for (what, body) in bodies {
        let request = [&head[..], body].concat();
        let what = format!("{what} to {protocol:?}");
        assert_refused(addr, &what, &request, StatusCode::BAD_REQUEST).await;
        assert_serves(addr, &what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_after_a_refused_one_are_not_served() {
    // A request the scanner refuses, pipelined behind a good one: the good one is answered,
    // the refused one gets 400, and what follows it (the smuggled request) nothing.
    let (_engine, addr, server) = proxy(EngineConfig::default()).await;
    let raw = send_raw(
        addr,
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(raw.closed, "{:?}", raw.summary());
    assert_eq!(raw.responses(), 2, "{:?}", raw.summary());
    assert_eq!(raw.status(), Some(200), "{:?}", raw.summary());
    assert!(
        raw.text().contains("HTTP/1.1 400 Bad Request"),
        "{:?}",
        raw.summary()
    );
    assert_eq!(server.requests(), 1);
    assert_serves(addr, "pipelined refusal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_and_keep_alive_are_followed_across_requests() {
    // Well-formed requests of every framing on one connection, with chunk data that looks like
    // a refused head: all are served, none is refused.
    let (_engine, addr, server) = proxy(EngineConfig::default()).await;
    let lookalike = "GET / HTTP/1.1\r\nContent-Length: 1\nX: y\r\nContent-Length: 1\r\n\r\n";
    let requests = format!(
        "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{lookalike}\r\n0\r\nT: x\r\n\r\n\
         POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
         GET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        lookalike.len()
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(requests.as_bytes()).await.unwrap();
    let raw = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(raw.responses(), 3, "{:?}", raw.summary());
    assert_eq!(raw.text().matches("HTTP/1.1 200 OK").count(), 3);
    assert_eq!(server.requests(), 3);
}

// === head limits ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_are_refused_with_431_and_close() {
    // The defaults: 100 header fields, 60 KiB of head.
    let (_engine, addr, server) = proxy(EngineConfig::default()).await;

    let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..100 {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");

    let mut large = b"GET / HTTP/1.1\r\nHost: a\r\nX-Large: ".to_vec();
    large.resize(large.len() + 61 * 1024, b'a');
    large.extend_from_slice(b"\r\n\r\n");

    let mut line = b"GET /".to_vec();
    line.resize(line.len() + 61 * 1024, b'a');
    line.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");

    let mut spread = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..90 {
        spread.extend_from_slice(format!("X-{i}: {}\r\n", "b".repeat(700)).as_bytes());
    }
    spread.extend_from_slice(b"\r\n");

    for (what, request) in [
        ("101 header fields", &many),
        ("a 61 KiB header field", &large),
        ("a 61 KiB request line", &line),
        ("90 fields of 700 bytes", &spread),
    ] {
        assert_refused(
            addr,
            what,
            request,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        )
        .await;
        assert_serves(addr, what).await;
    }
    assert_eq!(server.requests(), 4);

    // Just under the limits is served. (The proxy adds fields the echo backend counts: it
    // too allows 100.)
    let mut fine = b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n".to_vec();
    for i in 0..90 {
        fine.extend_from_slice(format!("X-{i}: {}\r\n", "c".repeat(600)).as_bytes());
    }
    fine.extend_from_slice(b"\r\n");
    let raw = send_raw(addr, &fine).await;
    assert_eq!(raw.status(), Some(200), "{:?}", raw.summary());
}

// === body limit ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_refused_with_413() {
    for upstream in [Http1, H2c] {
        bodies_over_the_limit_to(upstream).await;
    }
}

async fn bodies_over_the_limit_to(protocol: UpstreamProtocol) {
    let config = EngineConfig {
        max_request_body_bytes: Some(1024),
        ..EngineConfig::default()
    };
    let (_engine, addr, server) = proxy_to(config, protocol).await;

    // Declared too large: refused before anything reaches the backend, the body unread.
    let raw = send_raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n",
    )
    .await;
    assert_eq!(raw.status(), Some(413), "{:?}", raw.summary());
    assert!(raw.closed);
    assert_eq!(raw.header("connection").as_deref(), Some("close"));
    assert_eq!(server.requests(), 0);
    assert_serves(addr, "a declared body over the limit").await;

    // Chunked, without a declared length: refused once the limit is crossed.
    let mut chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'x'; 0x200]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_refused(
        addr,
        "a chunked body over the limit",
        &chunked,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_serves(addr, "a chunked body over the limit").await;

    // At the limit, both ways: served, on a connection that stays open.
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut exact = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1024\r\n\r\n".to_vec();
    exact.resize(exact.len() + 1024, b'y');
    exact.extend_from_slice(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    exact.extend_from_slice(b"400\r\n");
    exact.extend_from_slice(&[b'z'; 1024]);
    exact.extend_from_slice(b"\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    client.write_all(&exact).await.unwrap();
    let raw = read_until_closed(&mut client, Duration::from_secs(10)).await;
    assert_eq!(
        raw.text().matches("HTTP/1.1 200 OK").count(),
        3,
        "{:?}",
        raw.summary()
    );
    assert!(
        raw.text().contains("\"body_len\":1024"),
        "{:?}",
        raw.summary()
    );
}

/// A route's own limit (a `ProxyPolicy`'s `requestBody`) replaces the engine's, both ways: a
/// smaller one refuses what the engine would allow, a larger one allows what it would refuse;
/// rules without one keep the engine's. Requests are told apart by path, so that one listener
/// carries all three rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_limit_replaces_the_engine_limit() {
    let server = echo("backend").await;
    let engine = Engine::new(EngineConfig {
        default_bind: std::net::Ipv4Addr::LOCALHOST.into(),
        max_request_body_bytes: Some(1024),
        ..EngineConfig::default()
    });
    let limited = |path: &str, limit: Option<u64>| {
        let mut rule = rule(vec![prefix(path)], &[("backend", 1)]);
        rule.filters.max_request_body_bytes = limit;
        rule
    };
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![route(
                "default/r",
                "web",
                &[],
                vec![
                    limited("/small", Some(16)),
                    limited("/none", Some(0)),
                    limited("/large", Some(4096)),
                    limited("/", None),
                ],
            )],
            vec![backend("backend", Http1, &[&server])],
        ))
        .expect("snapshot applies");
    let addr = engine.local_addr("web").expect("listener is bound");

    let post = |path: &str, length: usize| {
        let mut request =
            format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {length}\r\n\r\n")
                .into_bytes();
        request.resize(request.len() + length, b'x');
        request
    };
    let chunked = |path: &str, length: usize| {
        let mut request =
            format!("POST {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
                .into_bytes();
        if length > 0 {
            request.extend_from_slice(format!("{length:x}\r\n").as_bytes());
            request.resize(request.len() + length, b'x');
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        request
    };
    let refused = [
        ("/small", 17, "over the rule's limit"),
        ("/none", 1, "a body where the rule allows none"),
        ("/large", 4097, "over the rule's larger limit"),
        (
            "/other",
            1025,
            "over the engine's limit, on a rule without one",
        ),
    ];
    for (path, length, what) in refused {
        for (how, request) in [
            ("declared", post(path, length)),
            ("chunked", chunked(path, length)),
        ] {
            let what = format!("{how} {length} bytes to {path}: {what}");
            assert_refused(addr, &what, &request, StatusCode::PAYLOAD_TOO_LARGE).await;
        }
    }
    assert_eq!(
        server.requests(),
        0,
        "a refused declared body reached the backend"
    );
    let served = [
        ("/small", 16),
        ("/none", 0),
        ("/large", 4096),
        ("/other", 1024),
    ];
    for (path, length) in served {
        for (how, request) in [
            ("declared", post(path, length)),
            ("chunked", chunked(path, length)),
        ] {
            let raw = send_raw(
                addr,
                &[
                    request,
                    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec(),
                ]
                .concat(),
            )
            .await;
            assert_eq!(
                raw.text().matches("HTTP/1.1 200 OK").count(),
                2,
                "{how} {length} bytes to {path}: {:?}",
                raw.summary()
            );
            assert!(
                raw.text().contains(&format!("\"body_len\":{length}")),
                "{how} {length} bytes to {path}: {:?}",
                raw.summary()
            );
        }
    }
}

// === slow and idle clients ===

fn timing() -> EngineConfig {
    EngineConfig {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(1500),
        ..EngineConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_are_cut_at_the_header_read_timeout() {
    let (_engine, addr, server) = proxy(timing()).await;

    // Nothing at all after connecting.
    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let raw = read_until_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(raw.closed && raw.bytes.is_empty(), "{:?}", raw.summary());
    assert!(started.elapsed() < Duration::from_secs(5));

    // Half a head, then nothing.
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let raw = read_until_closed(&mut half, Duration::from_secs(10)).await;
    assert!(raw.closed && raw.bytes.is_empty(), "{:?}", raw.summary());

    // Slowloris: a byte every 50 ms, each one in time, the head as a whole not.
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = false;
    for byte in head {
        if trickle.write_all(std::slice::from_ref(byte)).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let raw = read_until_closed(&mut trickle, Duration::from_secs(10)).await;
    assert!(raw.closed, "the slow client was not cut");
    assert!(
        cut || raw.bytes.is_empty(),
        "the slow client was answered: {:?}",
        raw.summary()
    );
    assert_eq!(server.requests(), 0);
    assert_serves(addr, "slow clients").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_close_at_the_idle_timeout() {
    let (_engine, addr, _server) = proxy(timing()).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 64 * 1024];
    let n = client.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    let answered = Instant::now();

    // Idle for twice the header read timeout: still open, a keep-alive wait is not a slow head.
    tokio::time::sleep(Duration::from_millis(600)).await;
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let n = client.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200 OK"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    // Then idle past the idle timeout: closed, without a response.
    let idle_from = Instant::now();
    let raw = read_until_closed(&mut client, Duration::from_secs(10)).await;
    assert!(raw.closed && raw.bytes.is_empty(), "{:?}", raw.summary());
    assert!(idle_from.elapsed() >= Duration::from_millis(1000));
    assert!(answered.elapsed() < Duration::from_secs(8));
    assert_serves(addr, "an idle connection").await;
}

// === parked connections ===

/// Parks keep-alive connections after 100 ms of quiet.
fn parking() -> EngineConfig {
    EngineConfig {
        park_after: Duration::from_millis(100),
        lot_after: Duration::ZERO,
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(10),
        ..EngineConfig::default()
    }
}

/// Longer than the park time, with margin.
const PARKED: Duration = Duration::from_millis(400);

/// Reads one response whose body has a `Content-Length`: its head, lower-cased, and body.
/// `bytes` holds what was read past earlier responses (pipelined ones), and keeps what is read
/// past this one.
async fn read_response(stream: &mut TcpStream, bytes: &mut Vec<u8>) -> (String, Vec<u8>) {
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let read = timeout(Duration::from_secs(10), stream.read_buf(bytes))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(
            read > 0,
            "closed before a response head: {:?}",
            String::from_utf8_lossy(bytes)
        );
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_lowercase();
    let length = content_length(&head);
    while bytes.len() < head_end + length {
        let read = stream.read_buf(bytes).await.expect("read");
        assert!(read > 0, "closed in the body");
    }
    let rest = bytes.split_off(head_end + length);
    let body = bytes.split_off(head_end);
    *bytes = rest;
    (head, body)
}

/// Expects a `200` kept alive.
fn assert_kept_alive(head: &str, what: &str) {
    assert!(head.starts_with("http/1.1 200 ok"), "{what}: {head}");
    assert!(!head.contains("connection: close"), "{what}: {head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_serve_what_comes_next() {
    let (_engine, addr, server) = proxy(parking()).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    let get = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n";

    // Requests with pauses between them: each pause parks the connection.
    for round in 0..3 {
        client.write_all(get).await.unwrap();
        let (head, _) = read_response(&mut client, &mut pending).await;
        assert_kept_alive(&head, &format!("round {round}"));
        tokio::time::sleep(PARKED).await;
    }

    // A request, at once a head begun, a pause that parks the connection, and the head's
    // end: the part hyper had read is given back.
    client.write_all(get).await.unwrap();
    let (head, _) = read_response(&mut client, &mut pending).await;
    assert_kept_alive(&head, "before the split head");
    client
        .write_all(b"GET /split HTTP/1.1\r\nHo")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.write_all(b"st: a\r\n\r\n").await.unwrap();
    let (head, body) = read_response(&mut client, &mut pending).await;
    assert_kept_alive(&head, "a head split by a pause");
    assert!(String::from_utf8_lossy(&body).contains("/split"));
    tokio::time::sleep(PARKED).await;

    // Two requests at once wake it: both are answered, in order.
    client
        .write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    for path in ["/one", "/two"] {
        let (head, body) = read_response(&mut client, &mut pending).await;
        assert_kept_alive(&head, path);
        assert!(String::from_utf8_lossy(&body).contains(path), "{path}");
    }
    tokio::time::sleep(PARKED).await;

    // A request body with a pause in it: the request is in flight, the connection not parked.
    client
        .write_all(b"POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234")
        .await
        .unwrap();
    tokio::time::sleep(PARKED).await;
    client.write_all(b"56789").await.unwrap();
    let (head, _) = read_response(&mut client, &mut pending).await;
    assert_kept_alive(&head, "a body split by a pause");
    assert_eq!(server.requests(), 8);
    tokio::time::sleep(PARKED).await;

    // A head begun after parking has the header read timeout.
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    let raw = read_until_closed(&mut client, Duration::from_secs(10)).await;
    assert!(raw.closed && raw.bytes.is_empty(), "{:?}", raw.summary());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(server.requests(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_wait_in_the_lot_without_a_task_each() {
    let (_engine, addr, server) = proxy(EngineConfig {
        park_after: Duration::from_secs(1),
        ..parking()
    })
    .await;
    let tasks = alive_tasks;
    let get = b"GET /lot HTTP/1.1\r\nHost: a\r\n\r\n";
    let baseline = task_baseline(addr, get).await;
    let mut clients = kept_alive_clients(addr, 50, get).await;
    // Served, before the park time: a task each.
    assert!(
        tasks() >= baseline + 50,
        "{} tasks, {baseline} before",
        tasks()
    );

    // Parked: the lot holds them, and no task of their own.
    let parked = wait_for_tasks(tasks, |n| n <= baseline).await;
    assert!(
        parked <= baseline,
        "{parked} tasks parked, {baseline} before"
    );

    // Each wakes with its next request, and is served.
    for (n, client) in clients.iter_mut().enumerate() {
        client.write_all(get).await.unwrap();
        let (head, body) = read_response(client, &mut Vec::new()).await;
        assert_kept_alive(&head, &format!("client {n}, woken"));
        assert!(String::from_utf8_lossy(&body).contains("/lot"));
    }
    assert_eq!(server.requests(), 101);
    assert!(
        tasks() >= baseline + 50,
        "{} tasks, {baseline} before",
        tasks()
    );

    // Parked again, then closed by their clients: the lot lets go of them.
    wait_for_tasks(tasks, |n| n <= baseline).await;
    drop(clients);
    let closed = wait_for_tasks(tasks, |n| n <= baseline).await;
    assert!(closed <= baseline, "{closed} tasks, {baseline} before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_connections_wait_the_lot_time_in_their_task_first() {
    let (_engine, addr, server) = proxy(EngineConfig {
        lot_after: Duration::from_millis(1500),
        ..parking()
    })
    .await;
    let tasks = alive_tasks;
    let get = b"GET /stage HTTP/1.1\r\nHost: a\r\n\r\n";
    let baseline = task_baseline(addr, get).await;
    let mut clients = kept_alive_clients(addr, 20, get).await;
    // Parked (longer than the park time), not yet in the lot: still a task each, which the
    // next request wakes.
    for round in 0..2 {
        tokio::time::sleep(PARKED).await;
        assert!(
            tasks() >= baseline + 20,
            "round {round}: {} tasks, {baseline} before",
            tasks()
        );
        for (n, client) in clients.iter_mut().enumerate() {
            client.write_all(get).await.unwrap();
            let (head, _) = read_response(client, &mut Vec::new()).await;
            assert_kept_alive(&head, &format!("client {n}, round {round}"));
        }
    }

    // Quiet for the lot time too: in the lot, and woken from there.
    let parked = wait_for_tasks(tasks, |n| n <= baseline).await;
    assert!(parked <= baseline, "{parked} tasks, {baseline} before");
    for (n, client) in clients.iter_mut().enumerate() {
        client.write_all(get).await.unwrap();
        let (head, body) = read_response(client, &mut Vec::new()).await;
        assert_kept_alive(&head, &format!("client {n}, from the lot"));
        assert!(String::from_utf8_lossy(&body).contains("/stage"));
    }
    assert_eq!(server.requests(), 81);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_parking_and_waking_at_once_lose_no_request() {
    // Pauses around the park time: a request often comes just as its connection is being
    // handed to the lot, or has just arrived there.
    let park_after = Duration::from_millis(20);
    let (_engine, addr, server) = proxy(EngineConfig {
        park_after,
        ..parking()
    })
    .await;
    let clients = (0..40u64).map(|n| {
        tokio::spawn(async move {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let mut pending = Vec::new();
            for i in 0..15u64 {
                let path = format!("/c{n}/r{i}");
                let get = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
                client.write_all(get.as_bytes()).await.unwrap();
                let (head, body) = read_response(&mut client, &mut pending).await;
                assert_kept_alive(&head, &path);
                assert!(String::from_utf8_lossy(&body).contains(&path), "{path}");
                // 0 to 40 ms, spread differently on each connection.
                let pause = (n * 7 + i * 13) % 41;
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        })
    });
    for client in clients.collect::<Vec<_>>() {
        client.await.unwrap();
    }
    assert_eq!(server.requests(), 40 * 15);
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// The runtime's tasks after a first request `get` on a connection since closed: that request
/// opens the upstream connection the later ones reuse (they go one at a time), so its tasks
/// count in the baseline.
async fn task_baseline(addr: SocketAddr, get: &[u8]) -> usize {
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(get).await.unwrap();
    read_response(&mut first, &mut Vec::new()).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    alive_tasks()
}

/// `n` connections, each with its request `get` answered and kept alive.
async fn kept_alive_clients(addr: SocketAddr, n: usize, get: &[u8]) -> Vec<TcpStream> {
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(get).await.unwrap();
        let (head, _) = read_response(&mut client, &mut Vec::new()).await;
        assert_kept_alive(&head, &format!("client {i}"));
        clients.push(client);
    }
    clients
}

/// Waits up to 5 s for the runtime's task count to satisfy `done`; returns the last count.
async fn wait_for_tasks(tasks: impl Fn() -> usize, done: impl Fn(usize) -> bool) -> usize {
    let started = Instant::now();
    loop {
        let n = tasks();
        if done(n) || started.elapsed() > Duration::from_secs(5) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_follow_reloads_and_close_with_their_listener() {
    let (one, two) = (echo("one").await, echo("two").await);
    let engine = Engine::new(EngineConfig {
        default_bind: LOCALHOST,
        ..parking()
    });
    let web = listener_on("web", free_port());
    let serving = |version, listener: novaedge_snapshot::Listener, to_backend: &str| {
        snapshot(
            version,
            vec![listener.clone()],
            vec![route(
                "default/r",
                &listener.name,
                &[],
                vec![to(to_backend)],
            )],
            vec![
                backend("one", Http1, &[&one]),
                backend("two", Http1, &[&two]),
            ],
        )
    };
    engine.apply(&serving(1, web.clone(), "one")).unwrap();
    let addr = engine.local_addr("web").unwrap();
    let mut client = TcpStream::connect(addr).await.unwrap();
    let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    client.write_all(get).await.unwrap();
    let (head, _) = read_response(&mut client, &mut Vec::new()).await;
    assert_kept_alive(&head, "before the reload");
    assert!(head.contains("x-echo-name: one"), "{head}");
    tokio::time::sleep(PARKED).await;

    // The listener stays: its parked connection wakes into the new routes.
    engine.apply(&serving(2, web, "two")).unwrap();
    client.write_all(get).await.unwrap();
    let (head, _) = read_response(&mut client, &mut Vec::new()).await;
    assert_kept_alive(&head, "after the reload");
    assert!(head.contains("x-echo-name: two"), "{head}");
    tokio::time::sleep(PARKED).await;

    // The listener goes: so do the connections parked in its lot.
    engine.apply(&serving(3, listener("other"), "two")).unwrap();
    let raw = read_until_closed(&mut client, Duration::from_secs(5)).await;
    assert!(raw.closed && raw.bytes.is_empty(), "{:?}", raw.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_close_at_shutdown_and_idle_timeout() {
    let (engine, addr, _server) = proxy(EngineConfig {
        idle_timeout: Duration::from_millis(1500),
        ..parking()
    })
    .await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut idle, &mut Vec::new()).await;
    assert_kept_alive(&head, "the first request");
    let answered = Instant::now();

    // Parked, then idle for the idle timeout: closed without a response.
    let raw = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(raw.closed && raw.bytes.is_empty(), "{:?}", raw.summary());
    assert!(answered.elapsed() >= Duration::from_millis(1400));
    assert!(answered.elapsed() < Duration::from_secs(5));

    let mut stopped = TcpStream::connect(addr).await.unwrap();
    stopped
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut stopped, &mut Vec::new()).await;
    assert_kept_alive(&head, "the first request");
    tokio::time::sleep(PARKED).await;

    // Parked when the engine shuts down: closed at once, which counts as drained.
    let report = timeout(
        Duration::from_secs(5),
        engine.shutdown(Duration::from_secs(30)),
    )
    .await
    .expect("shutdown does not wait for parked connections");
    assert!(report.drained);
    let raw = read_until_closed(&mut stopped, Duration::from_secs(5)).await;
    assert!(raw.closed && raw.bytes.is_empty(), "{:?}", raw.summary());
}

// === requests and connections ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_request_allowed_on_a_connection_closes_it() {
    let (_engine, addr, _server) = proxy(EngineConfig {
        max_requests_per_connection: Some(3),
        ..EngineConfig::default()
    })
    .await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0; 64 * 1024];
    for n in 1..=2 {
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let read = client.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..read]).to_lowercase();
        assert!(text.starts_with("http/1.1 200 ok"), "request {n}: {text}");
        assert!(!text.contains("connection: close"), "request {n}: {text}");
    }
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let raw = read_until_closed(&mut client, Duration::from_secs(10)).await;
    assert!(raw.closed);
    assert_eq!(raw.responses(), 1, "{:?}", raw.summary());
    assert_eq!(raw.status(), Some(200));
    assert_eq!(raw.header("connection").as_deref(), Some("close"));
    assert_serves(addr, "the last request of a connection").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_listener_limit_are_refused_at_once() {
    let (_engine, addr, _server) = proxy(EngineConfig {
        max_connections_per_listener: Some(2),
        ..EngineConfig::default()
    })
    .await;
    let mut first = Client::connect(Proto::Http1, addr).await;
    let mut second = Client::connect(Proto::Http1, addr).await;
    assert_eq!(first.get("a", "/").await.status(), StatusCode::OK);
    assert_eq!(second.get("a", "/").await.status(), StatusCode::OK);

    // The third is accepted and reset at once, without an answer (the reset may come before
    // the client's connect returns).
    let started = Instant::now();
    if let Ok(mut third) = TcpStream::connect(addr).await {
        let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let raw = read_until_closed(&mut third, Duration::from_secs(10)).await;
        assert!(raw.closed && raw.bytes.is_empty(), "{:?}", raw.summary());
    }
    assert!(started.elapsed() < Duration::from_secs(2));

    // The two it holds still work; once one closes, a new client gets its place.
    assert_eq!(first.get("a", "/").await.status(), StatusCode::OK);
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(mut client) = TcpStream::connect(addr).await {
            let _ = client
                .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .await;
            let raw = read_until_closed(&mut client, Duration::from_secs(10)).await;
            if raw.status() == Some(200) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no place freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(first.get("a", "/").await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_the_client_breaks_eject_no_endpoint() {
    // Passive health ejects an endpoint after 3 gateway failures in a row (the default); a
    // client whose bodies fail, or go past the limit, must not make its endpoints look broken.
    for protocol in [Http1, H2c] {
        let (a, b) = (echo("a").await, echo("b").await);
        let (engine, addr) = serve_backend_with(
            EngineConfig {
                max_request_body_bytes: Some(16),
                ..EngineConfig::default()
            },
            backend("backend", protocol, &[&a, &b]),
        );
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        for _ in 0..4 {
            let bad = [&head[..], b"5\r\nhello\r\nzz\r\n"].concat();
            assert_refused(addr, "a broken body", &bad, StatusCode::BAD_REQUEST).await;
            let large = [
                &head[..],
                b"20\r\n0123456789abcdef0123456789abcdef\r\n0\r\n\r\n",
            ]
            .concat();
            assert_refused(addr, "a large body", &large, StatusCode::PAYLOAD_TOO_LARGE).await;
        }
        let backends = engine.backends();
        let endpoints = &backends[0].endpoints;
        assert_eq!(endpoints.len(), 2);
        for endpoint in endpoints {
            assert!(
                endpoint.healthy && endpoint.ejected_for.is_none(),
                "{protocol:?}: {endpoint:?}"
            );
        }
        assert_serves(addr, "broken bodies").await;
    }
}
