//! Hostile HTTP/2 clients, built frame by frame on raw sockets (h2c with prior knowledge):
//! stream floods, rapid reset, CONTINUATION floods, SETTINGS and PING floods, flow-control
//! abuse and protocol errors. Each case asserts what the client sees (the GOAWAY or RST_STREAM
//! code, or the status) and that the proxy goes on serving the next, well-behaved client.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use http::{Method, StatusCode};
use http_body_util::Full;
use novaedge_core::EngineConfig;
use novaedge_echo::EchoServer;
use novaedge_snapshot::UpstreamProtocol::Http1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

// === frames ===

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

const NO_ERROR: u32 = 0x0;
const PROTOCOL_ERROR: u32 = 0x1;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const FRAME_SIZE_ERROR: u32 = 0x6;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame length");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = values
        .iter()
        .flat_map(|(id, value)| {
            let mut entry = id.to_be_bytes().to_vec();
            entry.extend_from_slice(&value.to_be_bytes());
            entry
        })
        .collect();
    frame(SETTINGS, 0, 0, &payload)
}

fn u32_payload(value: u32) -> [u8; 4] {
    value.to_be_bytes()
}

/// An HPACK integer with an `n`-bit prefix whose other bits are `first`.
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// Header fields as HPACK literals without indexing, names and values not Huffman-coded.
fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn request_block(method: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = vec![
        (":method", method),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "h2.test"),
    ];
    fields.extend_from_slice(extra);
    hpack(&fields)
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    fn code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().expect("error code"))
    }
}

/// A raw HTTP/2 client connection.
struct Raw {
    stream: TcpStream,
    /// The server's SETTINGS.
    settings: Vec<(u16, u32)>,
    /// Frames read while waiting for others.
    seen: Vec<Frame>,
}

impl Raw {
    /// Connects, exchanges prefaces and acknowledges the server's SETTINGS, so that they are
    /// in force.
    async fn connect(addr: SocketAddr) -> Raw {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut hello = PREFACE.to_vec();
        hello.extend_from_slice(&settings(&[]));
        stream.write_all(&hello).await.expect("preface");
        let mut raw = Raw {
            stream,
            settings: Vec::new(),
            seen: Vec::new(),
        };
        loop {
            let frame = raw.read().await.expect("server preface");
            if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                raw.settings = frame
                    .payload
                    .chunks(6)
                    .map(|c| {
                        (
                            u16::from_be_bytes([c[0], c[1]]),
                            u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                        )
                    })
                    .collect();
                break;
            }
            raw.seen.push(frame);
        }
        raw.send(&frame(SETTINGS, ACK, 0, &[])).await;
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write frames");
    }

    /// The next frame; `None` once the connection is closed (or reset). PINGs are acknowledged
    /// on the way, as any client does.
    async fn read(&mut self) -> Option<Frame> {
        let frame = self.read_frame().await?;
        if frame.kind == PING && frame.flags & ACK == 0 {
            let _ = self
                .stream
                .write_all(&self::frame(PING, ACK, 0, &frame.payload))
                .await;
        }
        Some(frame)
    }

    async fn read_frame(&mut self) -> Option<Frame> {
        let mut head = [0; 9];
        self.stream.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        self.stream.read_exact(&mut payload).await.ok()?;
        Some(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes(head[5..9].try_into().ok()?) & 0x7fff_ffff,
            payload,
        })
    }

    /// Reads until a frame `wanted` accepts; `None` if the connection closes first. Fails the
    /// test after 10 s.
    async fn until(&mut self, mut wanted: impl FnMut(&Frame) -> bool) -> Option<Frame> {
        timeout(Duration::from_secs(10), async {
            while let Some(frame) = self.read().await {
                if wanted(&frame) {
                    return Some(frame);
                }
                self.seen.push(frame);
            }
            None
        })
        .await
        .expect("the proxy answers within 10 s")
    }

    /// The code of the proxy's last GOAWAY (a graceful one comes in two), once the proxy has
    /// closed the connection.
    async fn goaway(mut self) -> u32 {
        let mut last = self
            .seen
            .iter()
            .rev()
            .find(|f| f.kind == GOAWAY)
            .map(Frame::code);
        let closed = timeout(Duration::from_secs(10), async {
            while let Some(frame) = self.read().await {
                if frame.kind == GOAWAY {
                    last = Some(frame.code());
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the connection stays open (GOAWAY {last:?})"
        );
        last.expect("a GOAWAY before the connection closes")
    }
}

// === proxy ===

async fn proxy(config: EngineConfig) -> (novaedge_core::Engine, SocketAddr, EchoServer) {
    let server = echo("backend").await;
    let (engine, addr) = serve_backend_with(config, backend("backend", Http1, &[&server]));
    (engine, addr, server)
}

/// A well-behaved h2c client on a new connection is served by the backend.
async fn assert_serves(addr: SocketAddr, what: &str) {
    let mut client = Client::connect(Proto::H2c, addr).await;
    let response = client.get("ok.test", "/ok").await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "after {what}: {response:?}"
    );
}

// === limits ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_announces_its_limits_and_windows() {
    let (_engine, addr, _server) = proxy(EngineConfig::default()).await;
    let mut raw = Raw::connect(addr).await;
    let setting = |id| raw.settings.iter().find(|(i, _)| *i == id).map(|(_, v)| *v);
    assert_eq!(setting(SETTINGS_MAX_CONCURRENT_STREAMS), Some(100));
    assert_eq!(setting(SETTINGS_INITIAL_WINDOW_SIZE), Some(1024 * 1024));
    assert_eq!(setting(SETTINGS_MAX_HEADER_LIST_SIZE), Some(60 * 1024));
    // The connection window grows from the protocol's 65 535 to 2 MiB.
    let update = match raw.seen.iter().find(|f| f.kind == WINDOW_UPDATE) {
        Some(update) => update.payload.clone(),
        None => {
            raw.until(|f| f.kind == WINDOW_UPDATE && f.stream == 0)
                .await
                .expect("a connection WINDOW_UPDATE")
                .payload
        }
    };
    let increment = u32::from_be_bytes(update[..4].try_into().unwrap());
    assert_eq!(increment + 65_535, 2 * 1024 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_concurrency_limit_are_refused() {
    let (_engine, addr, _server) = proxy(EngineConfig::default()).await;
    let mut raw = Raw::connect(addr).await;
    // 100 uploads that have not ended: all open at once.
    let mut frames = Vec::new();
    for i in 0..100u32 {
        frames.extend(frame(
            HEADERS,
            END_HEADERS,
            1 + 2 * i,
            &request_block("POST", &[]),
        ));
    }
    // One more.
    frames.extend(frame(
        HEADERS,
        END_HEADERS,
        201,
        &request_block("POST", &[]),
    ));
    raw.send(&frames).await;
    let reset = raw
        .until(|f| f.kind == RST_STREAM && f.stream == 201)
        .await
        .expect("the 101st stream is reset");
    assert_eq!(reset.code(), REFUSED_STREAM);

    // The connection still works: ending the first upload gets its response.
    raw.send(&frame(DATA, END_STREAM, 1, b"done")).await;
    let response = raw
        .until(|f| f.kind == HEADERS && f.stream == 1)
        .await
        .expect("a response on stream 1");
    assert_ne!(response.flags & END_HEADERS, 0);
    assert_serves(addr, "101 streams").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_list_over_the_limit_is_answered_431() {
    let (_engine, addr, server) = proxy(EngineConfig::default()).await;
    let mut client = Client::connect(Proto::H2c, addr).await;

    // Over 60 KiB of header list.
    let req = client
        .request(Method::GET, "h2.test", "/")
        .header("x-large", "a".repeat(61 * 1024))
        .body(Full::default())
        .unwrap();
    let response = client.send(req).await.expect("a response");
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );

    // Over 100 fields, each small: the proxy counts them.
    let mut req = client.request(Method::GET, "h2.test", "/");
    for i in 0..101 {
        req = req.header(format!("x-{i}"), "v");
    }
    let response = client
        .send(req.body(Full::default()).unwrap())
        .await
        .expect("a response");
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(server.requests(), 0);

    // The same connection goes on.
    let response = client.get("h2.test", "/").await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_answered_413() {
    let (_engine, addr, server) = proxy(EngineConfig {
        max_request_body_bytes: Some(1024),
        ..EngineConfig::default()
    })
    .await;
    let mut client = Client::connect(Proto::H2c, addr).await;
    // Declared.
    let req = client
        .request(Method::POST, "h2.test", "/")
        .header("content-length", "2048")
        .body(Full::from(vec![b'x'; 2048]))
        .unwrap();
    let response = client.send(req).await.expect("a response");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(server.requests(), 0);

    // Undeclared, in DATA frames: cut off at the limit.
    let mut raw = Raw::connect(addr).await;
    let mut frames = frame(HEADERS, END_HEADERS, 1, &request_block("POST", &[]));
    frames.extend(frame(DATA, 0, 1, &[b'y'; 1000]));
    frames.extend(frame(DATA, END_STREAM, 1, &[b'y'; 1000]));
    raw.send(&frames).await;
    let response = raw
        .until(|f| f.kind == HEADERS && f.stream == 1)
        .await
        .expect("a response");
    // `:status: 413` is not in HPACK's static table: a literal with the indexed name
    // `:status` (8) and the value, plain or Huffman-coded (both are 3 bytes).
    assert_eq!(response.payload[0] & 0x0f, 8, "{response:?}");
    let value = &response.payload[1..];
    let plain = value.starts_with(&[3, b'4', b'1', b'3']);
    let huffman = value.starts_with(&[0x83, 0x68, 0x2c, 0xff]);
    assert!(plain || huffman, "not 413: {response:?}");

    // The same client connection goes on.
    let response = client.get("h2.test", "/").await;
    assert_eq!(response.status(), StatusCode::OK);
}

// === floods ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_sent_goaway_enhance_your_calm() {
    let (_engine, addr, _server) = proxy(EngineConfig::default()).await;
    let mut raw = Raw::connect(addr).await;
    // CVE-2023-44487: open a stream and cancel it at once, over and over.
    let mut frames = Vec::new();
    for i in 0..2000u32 {
        let id = 1 + 2 * i;
        frames.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &request_block("GET", &[]),
        ));
        frames.extend(frame(RST_STREAM, 0, id, &u32_payload(CANCEL)));
    }
    // The proxy may stop reading (and close) before all of it is written.
    let _ = raw.stream.write_all(&frames).await;
    assert_eq!(raw.goaway().await, ENHANCE_YOUR_CALM);
    assert_serves(addr, "rapid reset").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_floods_are_sent_goaway() {
    let (_engine, addr, _server) = proxy(EngineConfig::default()).await;

    // CVE-2024-27316 and kin: a header block that never ends, in empty CONTINUATION frames.
    let mut raw = Raw::connect(addr).await;
    let mut frames = frame(HEADERS, 0, 1, &request_block("GET", &[]));
    for _ in 0..10_000 {
        frames.extend(frame(CONTINUATION, 0, 1, &[]));
    }
    let _ = raw.stream.write_all(&frames).await;
    assert_eq!(raw.goaway().await, ENHANCE_YOUR_CALM);
    assert_serves(addr, "a flood of empty CONTINUATION frames").await;

    // The same with full frames of header fields: cut off by size before the count.
    let mut raw = Raw::connect(addr).await;
    let field = hpack(&[("x-filler", &"f".repeat(16_000))]);
    let mut frames = frame(HEADERS, 0, 1, &request_block("GET", &[]));
    for _ in 0..64 {
        frames.extend(frame(CONTINUATION, 0, 1, &field));
    }
    let _ = raw.stream.write_all(&frames).await;
    let code = raw.goaway().await;
    assert!(
        code == ENHANCE_YOUR_CALM || code == PROTOCOL_ERROR,
        "GOAWAY code {code:#x}"
    );
    assert_serves(addr, "a flood of full CONTINUATION frames").await;
}

/// Writes `unit` over and over without reading the answers: the proxy must stop reading
/// (backpressure) rather than queue answers without bound, or close the connection.
async fn flood_until_pushed_back(raw: &mut Raw, unit: &[u8]) {
    let batch: Vec<u8> = unit.repeat(4096);
    let mut written = 0usize;
    // Far more than socket buffers on both sides hold.
    while written < 512 * 1024 * 1024 {
        match timeout(Duration::from_secs(2), raw.stream.write_all(&batch)).await {
            // Pushed back: the proxy stopped reading.
            Err(_) => return,
            // Closed by the proxy.
            Ok(Err(_)) => return,
            Ok(Ok(())) => written += batch.len(),
        }
    }
    panic!("the proxy read {written} bytes of flood without pushing back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_settings_floods_are_pushed_back() {
    let (_engine, addr, _server) = proxy(EngineConfig::default()).await;
    for (what, unit) in [
        ("PING flood", frame(PING, 0, 0, &[7; 8])),
        (
            "SETTINGS flood",
            settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 65_535)]),
        ),
    ] {
        let mut raw = Raw::connect(addr).await;
        flood_until_pushed_back(&mut raw, &unit).await;
        // Others are served meanwhile, and after the flood is gone.
        assert_serves(addr, what).await;
        drop(raw);
        assert_serves(addr, what).await;
    }
}

// === flow control and protocol errors ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_are_sent_goaway_with_their_code() {
    let (_engine, addr, _server) = proxy(EngineConfig::default()).await;
    // Where the h2 crate's code differs from RFC 9113's, both are accepted: either ends the
    // connection.
    let cases: Vec<(&str, Vec<u8>, &[u32])> = vec![
        (
            "connection window over 2^31-1",
            frame(WINDOW_UPDATE, 0, 0, &u32_payload(0x7fff_ffff)),
            &[FLOW_CONTROL_ERROR],
        ),
        (
            "connection WINDOW_UPDATE of 0",
            frame(WINDOW_UPDATE, 0, 0, &u32_payload(0)),
            &[PROTOCOL_ERROR],
        ),
        (
            "WINDOW_UPDATE on an idle stream",
            frame(WINDOW_UPDATE, 0, 5, &u32_payload(1)),
            &[PROTOCOL_ERROR],
        ),
        (
            "initial window over 2^31-1",
            settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0x8000_0000)]),
            &[FLOW_CONTROL_ERROR, PROTOCOL_ERROR],
        ),
        (
            "ENABLE_PUSH of 2",
            settings(&[(SETTINGS_ENABLE_PUSH, 2)]),
            &[PROTOCOL_ERROR],
        ),
        (
            "SETTINGS on a stream",
            frame(SETTINGS, 0, 1, &[]),
            &[PROTOCOL_ERROR],
        ),
        (
            "SETTINGS of a length not a multiple of 6",
            frame(SETTINGS, 0, 0, &[0; 5]),
            &[FRAME_SIZE_ERROR, PROTOCOL_ERROR],
        ),
        (
            "PING of 7 bytes",
            frame(PING, 0, 0, &[0; 7]),
            &[FRAME_SIZE_ERROR, PROTOCOL_ERROR],
        ),
        (
            "DATA on stream 0",
            frame(DATA, 0, 0, b"x"),
            &[PROTOCOL_ERROR],
        ),
        (
            "HEADERS on a server stream id",
            frame(HEADERS, END_HEADERS, 2, &request_block("GET", &[])),
            &[PROTOCOL_ERROR],
        ),
        (
            "a frame over the maximum frame size",
            frame(DATA, 0, 1, &vec![0; 16_385]),
            &[FRAME_SIZE_ERROR],
        ),
        (
            "CONTINUATION without HEADERS",
            frame(CONTINUATION, END_HEADERS, 1, &request_block("GET", &[])),
            &[PROTOCOL_ERROR],
        ),
        (
            "undecodable header block",
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &[0xff, 0xff, 0xff, 0xff],
            ),
            // RFC 9113 says COMPRESSION_ERROR (0x9).
            &[0x9, PROTOCOL_ERROR],
        ),
    ];
    for (what, bad, codes) in cases {
        let mut raw = Raw::connect(addr).await;
        raw.send(&bad).await;
        let code = raw.goaway().await;
        assert!(
            codes.contains(&code),
            "{what}: GOAWAY {code:#x}, wanted {codes:x?}"
        );
        assert_serves(addr, what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_flow_control_overflow_resets_the_stream_only() {
    let (_engine, addr, _server) = proxy(EngineConfig::default()).await;
    let mut raw = Raw::connect(addr).await;
    let mut frames = frame(HEADERS, END_HEADERS, 1, &request_block("POST", &[]));
    frames.extend(frame(WINDOW_UPDATE, 0, 1, &u32_payload(0x7fff_ffff)));
    raw.send(&frames).await;
    let reset = raw
        .until(|f| f.kind == RST_STREAM && f.stream == 1)
        .await
        .expect("stream 1 is reset");
    assert_eq!(reset.code(), FLOW_CONTROL_ERROR);
    // The connection goes on.
    raw.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        &request_block("GET", &[]),
    ))
    .await;
    raw.until(|f| f.kind == HEADERS && f.stream == 3)
        .await
        .expect("a response on stream 3");
}

// === connection lifetime ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_request_allowed_is_followed_by_goaway() {
    let (_engine, addr, _server) = proxy(EngineConfig {
        max_requests_per_connection: Some(2),
        ..EngineConfig::default()
    })
    .await;
    let mut raw = Raw::connect(addr).await;
    for id in [1, 3] {
        raw.send(&frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &request_block("GET", &[]),
        ))
        .await;
        raw.until(|f| f.kind == HEADERS && f.stream == id)
            .await
            .expect("a response");
    }
    assert_eq!(raw.goaway().await, NO_ERROR);
    assert_serves(addr, "the last request of a connection").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_ignores_goaway_is_dropped() {
    let (_engine, addr, _server) = proxy(EngineConfig {
        idle_timeout: Duration::from_millis(300),
        ..EngineConfig::default()
    })
    .await;
    // It never acknowledges the PING that would let the graceful shutdown end.
    let mut raw = Raw::connect(addr).await;
    let mut frames = Vec::new();
    let closed = timeout(Duration::from_secs(10), async {
        while let Some(frame) = raw.read_frame().await {
            frames.push(frame);
        }
    })
    .await;
    assert!(closed.is_ok(), "still open: {frames:?}");
    assert!(
        frames
            .iter()
            .any(|f| f.kind == GOAWAY && f.code() == NO_ERROR)
    );
    assert_serves(addr, "a client ignoring GOAWAY").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_sent_goaway_at_the_idle_timeout() {
    let (_engine, addr, _server) = proxy(EngineConfig {
        idle_timeout: Duration::from_millis(500),
        ..EngineConfig::default()
    })
    .await;
    let started = Instant::now();
    let raw = Raw::connect(addr).await;
    assert_eq!(raw.goaway().await, NO_ERROR);
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_serves(addr, "an idle connection").await;
}

// === telling HTTP/2 from HTTP/1.1 ===

/// A cleartext connection is HTTP/2 when it opens with the preface, however its first bytes are
/// split: the proxy reads on while what it has could still be the preface. One that could not
/// (an HTTP/1.1 `POST`, whose first byte is the preface's) is HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prior_knowledge_is_told_in_any_number_of_pieces() {
    let (_engine, addr, _server) = proxy(EngineConfig::default()).await;

    let mut stream = TcpStream::connect(addr).await.expect("connect");
    for piece in [
        &PREFACE[..1],
        &PREFACE[1..6],
        &PREFACE[6..16],
        &PREFACE[16..],
    ] {
        stream.write_all(piece).await.expect("preface piece");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stream.write_all(&settings(&[])).await.expect("settings");
    let mut raw = Raw {
        stream,
        settings: Vec::new(),
        seen: Vec::new(),
    };
    raw.until(|f| f.kind == SETTINGS && f.flags & ACK == 0)
        .await
        .expect("the server's SETTINGS: HTTP/2");
    raw.send(&frame(SETTINGS, ACK, 0, &[])).await;
    raw.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &request_block("GET", &[]),
    ))
    .await;
    let answer = raw
        .until(|f| f.kind == HEADERS && f.stream == 1)
        .await
        .expect("a response on stream 1");
    // `:status: 200` is entry 8 of HPACK's static table, sent indexed.
    assert_eq!(answer.payload.first(), Some(&0x88), "{answer:?}");

    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"P").await.expect("first byte");
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream
        .write_all(
            b"OST /ok HTTP/1.1\r\nHost: ok.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("the rest of the request");
    let mut response = Vec::new();
    timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("answered and closed")
        .expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}
