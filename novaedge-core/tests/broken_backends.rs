//! Backends that misbehave: garbage for an answer, a connection closed before or in the middle
//! of the response, no answer at all, a response head too large, a connect that never
//! completes. Each fails only its own request, with a clean status (`502`, or `504` when the
//! backend is too slow), or an aborted response when the response had begun; requests to a
//! healthy backend, sent at the same time, all succeed.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use http::StatusCode;
use novaedge_core::{Engine, EngineConfig};
use novaedge_echo::EchoServer;
use novaedge_snapshot::UpstreamProtocol::{self, H2c, Http1};
use novaedge_snapshot::{Backend, Timeouts};
use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// What a broken backend does once it has read a request head.
#[derive(Debug, Clone, Copy)]
enum Broken {
    /// Writes these bytes and closes.
    Answer(&'static [u8]),
    /// Writes these bytes and keeps the connection open, silent.
    AnswerAndStall(&'static [u8]),
    /// A response head of this many header bytes.
    HugeHead(usize),
    /// A response head with this many header fields.
    ManyFields(usize),
    /// A chunked `200` whose body is this many 1-byte chunks, one every this long, then ends.
    Dribble(usize, Duration),
    /// Writes these bytes, keeps the connection open this long without reading, then closes
    /// it: a server closing a kept-alive connection that went idle.
    AnswerThenClose(&'static [u8], Duration),
}

/// A backend that reads each request head and then misbehaves as `broken` says.
async fn broken(broken: Broken) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::new(LOCALHOST, 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(misbehave(stream, broken));
        }
    });
    addr
}

async fn misbehave(mut stream: TcpStream, broken: Broken) {
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if stream.read_buf(&mut head).await.unwrap_or(0) == 0 {
            return;
        }
    }
    let _ = match broken {
        Broken::Answer(bytes) => stream.write_all(bytes).await,
        Broken::AnswerAndStall(bytes) => {
            let _ = stream.write_all(bytes).await;
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }
        Broken::HugeHead(size) => {
            let mut answer = b"HTTP/1.1 200 OK\r\nx-huge: ".to_vec();
            answer.resize(answer.len() + size, b'h');
            answer.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
            stream.write_all(&answer).await
        }
        Broken::ManyFields(count) => {
            let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..count {
                answer.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
            }
            answer.extend_from_slice(b"content-length: 0\r\n\r\n");
            stream.write_all(&answer).await
        }
        Broken::Dribble(chunks, every) => {
            let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            let _ = stream.write_all(head).await;
            for _ in 0..chunks {
                tokio::time::sleep(every).await;
                let _ = stream.write_all(b"1\r\nx\r\n").await;
            }
            stream.write_all(b"0\r\n\r\n").await
        }
        Broken::AnswerThenClose(bytes, after) => {
            let _ = stream.write_all(bytes).await;
            tokio::time::sleep(after).await;
            Ok(())
        }
    };
}

/// A backend whose connects never complete: its accept queue is full and it never accepts.
/// Returns the listening socket (keep it) and the connections that fill the queue.
async fn unreachable() -> (Socket, SocketAddr, Vec<Socket>) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(LOCALHOST, 0).into()).unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    // Fill the queue with connects of our own, until one does not complete.
    let mut fillers = Vec::new();
    for _ in 0..16 {
        let filler = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        filler.set_nonblocking(true).unwrap();
        let _ = filler.connect(&addr.into());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let connected = filler.peer_addr().is_ok();
        fillers.push(filler);
        if !connected {
            break;
        }
    }
    (socket, addr, fillers)
}

fn broken_backend(name: &str, protocol: UpstreamProtocol, addr: SocketAddr) -> Backend {
    let mut backend = backend_at(name, protocol, vec![endpoint(addr)]);
    // Every request here fails on purpose: nothing is to be ejected.
    backend.health.outlier_detection.consecutive_5xx = None;
    backend.health.outlier_detection.consecutive_gateway_failure = None;
    backend
}

/// An engine routing host `<name>.test` to backend `<name>`, and `good.test` to an echo server.
async fn proxy(config: EngineConfig, backends: Vec<Backend>) -> (Engine, SocketAddr, EchoServer) {
    let good = echo("good").await;
    let mut routes = vec![route(
        "default/good",
        "web",
        &["good.test"],
        vec![to("good")],
    )];
    for b in &backends {
        let host = format!("{}.test", b.name);
        routes.push(route(
            &format!("default/{}", b.name),
            "web",
            &[&host],
            vec![to(&b.name)],
        ));
    }
    let mut all = backends;
    all.push(backend("good", Http1, &[&good]));
    let engine = Engine::new(EngineConfig {
        default_bind: LOCALHOST,
        ..config
    });
    engine
        .apply(&snapshot(1, vec![listener("web")], routes, all))
        .expect("snapshot applies");
    let addr = engine.local_addr("web").unwrap();
    (engine, addr, good)
}

fn config() -> EngineConfig {
    EngineConfig {
        connect_timeout: Duration::from_millis(300),
        upstream_response_timeout: Some(Duration::from_millis(500)),
        max_response_headers_bytes: 16 * 1024,
        ..EngineConfig::default()
    }
}

/// Requests to the healthy backend, over both protocols, for as long as it runs; every one
/// must succeed.
struct Bystander {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Bystander {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (stop, served) = (stop.clone(), served.clone());
            async move {
                let mut clients = [
                    Client::connect(Proto::Http1, addr).await,
                    Client::connect(Proto::H2c, addr).await,
                ];
                while !stop.load(Ordering::Relaxed) {
                    for client in &mut clients {
                        let response = client.get("good.test", "/").await;
                        assert_eq!(echo_name(&response), "good", "{response:?}");
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Self { stop, served, task }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task
            .await
            .expect("every request to the healthy backend succeeds");
        self.served.load(Ordering::Relaxed)
    }
}

/// `GET /` on host `host` over both protocols: the status each got.
async fn statuses(addr: SocketAddr, host: &str) -> Vec<(Proto, Result<StatusCode, String>)> {
    let mut out = Vec::new();
    for proto in BOTH {
        out.push((proto, status(addr, proto, host).await));
    }
    out
}

/// `GET /` on host `host` over `proto`, on a new client connection: the status it got.
async fn status(addr: SocketAddr, proto: Proto, host: &str) -> Result<StatusCode, String> {
    let mut client = Client::connect(proto, addr).await;
    let req = client
        .request(http::Method::GET, host, "/")
        .body(Default::default())
        .unwrap();
    timeout(Duration::from_secs(10), client.send(req))
        .await
        .expect("an answer within 10 s")
        .map(|r| r.status())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_hangups_are_502_for_that_request_only() {
    let cases: &[(&str, Broken)] = &[
        (
            "garbage",
            Broken::Answer(b"this is not HTTP at all\r\n\r\n"),
        ),
        (
            "binary",
            Broken::Answer(&[0, 159, 146, 150, 255, 0, 13, 10, 13, 10]),
        ),
        (
            "badstatus",
            Broken::Answer(b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n"),
        ),
        (
            "badheader",
            Broken::Answer(b"HTTP/1.1 200 OK\r\nbad header: x\r\n\r\n"),
        ),
        (
            "badlength",
            Broken::Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\nx"),
        ),
        ("hangup", Broken::Answer(b"")),
        ("halfhead", Broken::Answer(b"HTTP/1.1 200 OK\r\ncontent-le")),
        ("hugehead", Broken::HugeHead(20 * 1024)),
        ("manyfields", Broken::ManyFields(101)),
    ];
    let mut backends = Vec::new();
    for (name, behaviour) in cases {
        backends.push(broken_backend(name, Http1, broken(*behaviour).await));
    }
    let (_engine, addr, _good) = proxy(config(), backends).await;
    let bystander = Bystander::start(addr);
    for (name, _) in cases {
        for (proto, got) in statuses(addr, &format!("{name}.test")).await {
            assert_eq!(got, Ok(StatusCode::BAD_GATEWAY), "{name} over {proto:?}");
        }
    }
    assert!(bystander.finish().await > 0);
}

/// A backend that closes a kept-alive connection once it has been idle a while (as nginx does
/// at its `keepalive_timeout`) is not sent the next request on it, or if it is (the close read
/// only as the request goes out), the request comes back unsent and goes out on a new
/// connection: the client never sees the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_backend_closed_is_not_used_again() {
    let closer = broken(Broken::AnswerThenClose(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        Duration::from_millis(50),
    ))
    .await;
    let (_engine, addr, _good) =
        proxy(config(), vec![broken_backend("closer", Http1, closer)]).await;
    for round in 0..5 {
        for proto in BOTH {
            let got = status(addr, proto, "closer.test").await;
            assert_eq!(got, Ok(StatusCode::OK), "round {round} over {proto:?}");
            // The backend has closed the connection the proxy pooled.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_backend_that_speaks_garbage_is_502() {
    let backends = vec![
        broken_backend(
            "h2garbage",
            H2c,
            broken(Broken::Answer(
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            ))
            .await,
        ),
        broken_backend("h2hangup", H2c, broken(Broken::Answer(b"")).await),
    ];
    let (_engine, addr, _good) = proxy(config(), backends).await;
    let bystander = Bystander::start(addr);
    for name in ["h2garbage", "h2hangup"] {
        for (proto, got) in statuses(addr, &format!("{name}.test")).await {
            assert_eq!(got, Ok(StatusCode::BAD_GATEWAY), "{name} over {proto:?}");
        }
    }
    assert!(bystander.finish().await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_that_do_not_answer_in_time_are_504() {
    let backends = vec![
        broken_backend("silent", Http1, broken(Broken::AnswerAndStall(b"")).await),
        broken_backend(
            "statusonly",
            Http1,
            broken(Broken::AnswerAndStall(b"HTTP/1.1 200 OK\r\n")).await,
        ),
        broken_backend("h2silent", H2c, broken(Broken::AnswerAndStall(b"")).await),
    ];
    let (_engine, addr, _good) = proxy(config(), backends).await;
    let bystander = Bystander::start(addr);
    for name in ["silent", "statusonly", "h2silent"] {
        let started = Instant::now();
        for (proto, got) in statuses(addr, &format!("{name}.test")).await {
            assert_eq!(
                got,
                Ok(StatusCode::GATEWAY_TIMEOUT),
                "{name} over {proto:?}"
            );
        }
        // Two requests of 500 ms each (an h2c backend that never answers its handshake fails
        // at the connect timeout instead, 300 ms).
        assert!(started.elapsed() >= Duration::from_millis(600), "{name}");
    }
    assert!(bystander.finish().await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_with_its_own_timeout_is_not_held_to_the_engine_default() {
    let slow = echo("slow").await;
    let engine = Engine::new(EngineConfig {
        default_bind: LOCALHOST,
        upstream_response_timeout: Some(Duration::from_millis(200)),
        ..EngineConfig::default()
    });
    let mut patient = to("slow");
    patient.filters.timeouts = Timeouts {
        request: Some(Duration::from_secs(5)),
        backend_request: None,
    };
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![
                route("default/patient", "web", &["patient.test"], vec![patient]),
                route(
                    "default/default",
                    "web",
                    &["default.test"],
                    vec![to("slow")],
                ),
            ],
            vec![backend("slow", Http1, &[&slow])],
        ))
        .unwrap();
    let addr = engine.local_addr("web").unwrap();
    let mut client = Client::connect(Proto::Http1, addr).await;
    let response = client.get("patient.test", "/?delay_ms=600").await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = client.get("default.test", "/?delay_ms=600").await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body_text(&response), "upstream response timeout\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_that_never_completes_is_502_at_the_connect_timeout() {
    let (_listener, unreachable_addr, _fillers) = unreachable().await;
    let backends = vec![broken_backend("unreachable", Http1, unreachable_addr)];
    let (_engine, addr, _good) = proxy(config(), backends).await;
    let bystander = Bystander::start(addr);
    let started = Instant::now();
    let mut client = Client::connect(Proto::Http1, addr).await;
    let response = client.get("unreachable.test", "/").await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(body_text(&response), "upstream connect error\n");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(bystander.finish().await > 0);
}

/// Reads a raw HTTP/1.1 response until the proxy closes the connection.
async fn raw_get(addr: SocketAddr, host: &str) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let closed = timeout(Duration::from_secs(10), async {
        loop {
            match stream.read_buf(&mut bytes).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok();
    (bytes, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cut_off_midway_is_aborted_for_the_client() {
    let backends = vec![
        broken_backend(
            "shortlength",
            Http1,
            broken(Broken::Answer(
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part of it",
            ))
            .await,
        ),
        broken_backend(
            "shortchunked",
            Http1,
            broken(Broken::Answer(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
            ))
            .await,
        ),
    ];
    let (_engine, addr, _good) = proxy(config(), backends).await;
    let bystander = Bystander::start(addr);

    // HTTP/1.1 with a length: fewer bytes than it said, then the connection closes.
    let (bytes, closed) = raw_get(addr, "shortlength.test").await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(closed, "{text}");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.to_lowercase().contains("content-length: 100"),
        "{text}"
    );
    assert!(text.ends_with("only part of it"), "{text}");

    // HTTP/1.1 chunked: the chunks that came, no last chunk, then the connection closes.
    let (bytes, closed) = raw_get(addr, "shortchunked.test").await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(closed, "{text}");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("5\r\nhello\r\n"), "{text}");
    assert!(!text.ends_with("0\r\n\r\n"), "{text}");

    // HTTP/2: the stream is reset, the connection goes on.
    let mut client = Client::connect(Proto::H2c, addr).await;
    for name in ["shortlength", "shortchunked"] {
        let req = client
            .request(http::Method::GET, &format!("{name}.test"), "/")
            .body(Default::default())
            .unwrap();
        let err = client.send(req).await.expect_err("the body is cut off");
        // RST_STREAM INTERNAL_ERROR from the proxy.
        let err = format!("{err:?}");
        assert!(
            err.contains("INTERNAL_ERROR") && err.contains("Remote"),
            "{err}"
        );
    }
    let response = client.get("good.test", "/").await;
    assert_eq!(echo_name(&response), "good");
    assert!(bystander.finish().await > 0);
}

/// A backend that sends a response head and part of the body, then goes quiet, is cut off at
/// the body idle timeout: the client never takes the cut body for a whole one. A body that
/// comes slowly but steadily, for longer than that timeout in all, is not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_that_stalls_is_cut_at_the_idle_timeout() {
    let backends = vec![
        broken_backend(
            "stalls",
            Http1,
            broken(Broken::AnswerAndStall(
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part of it",
            ))
            .await,
        ),
        broken_backend(
            "dribbles",
            Http1,
            broken(Broken::Dribble(8, Duration::from_millis(100))).await,
        ),
    ];
    let idle = Duration::from_millis(400);
    let config = EngineConfig {
        upstream_body_idle_timeout: Some(idle),
        ..config()
    };
    let (_engine, addr, _good) = proxy(config, backends).await;
    let bystander = Bystander::start(addr);

    // HTTP/1.1: the part that came, then the connection closes, short of the length.
    let started = Instant::now();
    let (bytes, closed) = raw_get(addr, "stalls.test").await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(closed, "{text}");
    assert!(started.elapsed() >= idle, "{:?}", started.elapsed());
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("only part of it"), "{text}");

    // HTTP/2: the stream is reset, the connection goes on.
    let mut client = Client::connect(Proto::H2c, addr).await;
    let req = client
        .request(http::Method::GET, "stalls.test", "/")
        .body(Default::default())
        .unwrap();
    let err = client.send(req).await.expect_err("the body is cut off");
    assert!(format!("{err:?}").contains("INTERNAL_ERROR"), "{err:?}");
    assert_eq!(echo_name(&client.get("good.test", "/").await), "good");

    // 800 ms of body, never 400 ms without a byte: whole, over both protocols.
    for proto in BOTH {
        let mut client = Client::connect(proto, addr).await;
        let response = client.get("dribbles.test", "/").await;
        assert_eq!(response.status(), StatusCode::OK, "{proto:?}");
        assert_eq!(body_text(&response), "xxxxxxxx", "{proto:?}");
    }
    assert!(bystander.finish().await > 0);
}
