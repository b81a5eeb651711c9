//! Endpoint health through the engine: active probes take failing endpoints out of rotation and
//! bring them back, passive detection ejects a killed endpoint under load, circuit breakers
//! answer overflow with an immediate 503.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use novaedge_core::OVERLOADED_HEADER;
use novaedge_snapshot::{
    ActiveHealthCheck, Backend, CircuitBreakers, HealthPolicy, HealthProbe, UpstreamProtocol,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// An HTTP/1.1 backend whose `/healthz` answers a status the test sets, and which remembers
/// when it last served a request other than a probe.
struct Backend1 {
    name: &'static str,
    addr: SocketAddr,
    health_status: AtomicU16,
    served: AtomicU64,
    last_served: Mutex<Option<Instant>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Backend1 {
    async fn start(name: &'static str) -> Arc<Self> {
        Self::start_on(TcpListener::bind((LOCALHOST, 0)).await.unwrap(), name)
    }

    fn start_on(listener: TcpListener, name: &'static str) -> Arc<Self> {
        let backend = Arc::new(Self {
            name,
            addr: listener.local_addr().unwrap(),
            health_status: AtomicU16::new(200),
            served: AtomicU64::new(0),
            last_served: Mutex::new(None),
            task: Mutex::new(None),
        });
        let state = backend.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, hyper::Error>(state.answer(&req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        *backend.task.lock().unwrap() = Some(task);
        backend
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let status = if req.uri().path() == "/healthz" {
            self.health_status.load(Ordering::SeqCst)
        } else {
            self.served.fetch_add(1, Ordering::SeqCst);
            *self.last_served.lock().unwrap() = Some(Instant::now());
            200
        };
        Response::builder()
            .status(status)
            .header("x-backend", self.name)
            .body(Full::default())
            .unwrap()
    }

    fn set_health(&self, status: u16) {
        self.health_status.store(status, Ordering::SeqCst);
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    fn last_served(&self) -> Option<Instant> {
        *self.last_served.lock().unwrap()
    }
}

impl Drop for Backend1 {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }
}

fn backend_of(backends: &[&Arc<Backend1>], health: HealthPolicy) -> Backend {
    let mut backend = backend_at(
        "app",
        UpstreamProtocol::Http1,
        backends.iter().map(|b| endpoint(b.addr)).collect(),
    );
    backend.health = health;
    backend
}

const INTERVAL: Duration = Duration::from_millis(300);
const UNHEALTHY_THRESHOLD: u32 = 2;

fn http_check() -> ActiveHealthCheck {
    ActiveHealthCheck {
        interval: INTERVAL,
        jitter: Duration::ZERO,
        timeout: Duration::from_millis(250),
        healthy_threshold: 2,
        unhealthy_threshold: UNHEALTHY_THRESHOLD,
        ..ActiveHealthCheck::new(HealthProbe::Http {
            path: "/healthz".into(),
            host: None,
            expected_statuses: vec![200..=299],
        })
    }
}

/// Sends requests until `done` says stop or `limit` passes; returns the statuses seen. The
/// limits are generous: they only bound a failing test, and a loaded machine is slow.
async fn drive(
    addr: SocketAddr,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Vec<StatusCode> {
    let mut client = Client::connect(Proto::Http1, addr).await;
    let deadline = Instant::now() + limit;
    let mut statuses = Vec::new();
    while !done() {
        assert!(
            Instant::now() < deadline,
            "condition not reached in {limit:?}"
        );
        statuses.push(client.get("app", "/").await.status());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_http_probe_takes_an_endpoint_out_and_recovery_brings_it_back() {
    let (a, b, c) = (
        Backend1::start("a").await,
        Backend1::start("b").await,
        Backend1::start("c").await,
    );
    let health = HealthPolicy {
        active: Some(http_check()),
        ..HealthPolicy::default()
    };
    let (_engine, addr) = serve_backend(backend_of(&[&a, &b, &c], health));

    // Every endpoint passes its first probe and gets traffic.
    drive(addr, Duration::from_secs(30), || {
        a.served() > 5 && b.served() > 5 && c.served() > 5
    })
    .await;

    // b starts failing its probe. Within interval x unhealthy threshold (+ one interval for the
    // probe cycle in progress) it gets no more traffic, and no client request fails meanwhile.
    b.set_health(503);
    let failing_since = Instant::now();
    let bound = INTERVAL * (UNHEALTHY_THRESHOLD + 1);
    let statuses = drive(addr, Duration::from_secs(30), || {
        failing_since.elapsed() > bound + Duration::from_secs(1)
    })
    .await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let last = b.last_served().unwrap();
    let out_after = last.saturating_duration_since(failing_since);
    assert!(
        out_after <= bound,
        "b served a request {out_after:?} after it began failing its probe (bound {bound:?})"
    );
    let served_b = b.served();
    drive(addr, Duration::from_secs(30), || {
        a.served() + c.served() > 200
    })
    .await;
    assert_eq!(b.served(), served_b, "an unhealthy endpoint got traffic");

    // b recovers: after `healthy_threshold` passing probes it is back.
    b.set_health(200);
    drive(addr, Duration::from_secs(30), || b.served() > served_b + 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_never_passed_a_probe_gets_no_traffic() {
    let (a, b) = (Backend1::start("a").await, Backend1::start("b").await);
    b.set_health(500);
    let health = HealthPolicy {
        active: Some(http_check()),
        ..HealthPolicy::default()
    };
    let mut snapshot_backend = backend_of(&[&a, &b], health);
    // No panic mode: with one of two endpoints unhealthy, the default threshold (50%) would
    // still route to both until a verdict arrives.
    snapshot_backend.load_balancing.panic_threshold_percent = 0;
    let (engine, addr) = serve_backend(snapshot_backend.clone());
    drive(addr, Duration::from_secs(30), || a.served() > 100).await;
    assert_eq!(b.served(), 0);

    // A reload that adds a third, new endpoint: it waits for its first probe too.
    let c = Backend1::start("c").await;
    c.set_health(500);
    snapshot_backend.endpoints.push(endpoint(c.addr));
    engine
        .apply(&snapshot(
            2,
            vec![listener("web")],
            vec![route("default/r", "web", &[], vec![to("app")])],
            vec![snapshot_backend],
        ))
        .unwrap();
    drive(addr, Duration::from_secs(30), || a.served() > 300).await;
    assert_eq!((b.served(), c.served()), (0, 0));
    c.set_health(200);
    drive(addr, Duration::from_secs(30), || c.served() > 5).await;
}

/// The gRPC probe against a real `grpc.health.v1` service (tonic-health), on a port of its own
/// next to each endpoint (`port` override): 127.0.0.1 and 127.0.0.2 each run a traffic backend
/// and a health server on the same health port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_probe_follows_the_health_service() {
    let a = Backend1::start("a").await;
    let b_listener = TcpListener::bind(("127.0.0.2", 0)).await.unwrap();
    let b = Backend1::start_on(b_listener, "b");

    let health_a = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let health_port = health_a.local_addr().unwrap().port();
    let health_b = TcpListener::bind(("127.0.0.2", health_port)).await.unwrap();
    let (reporter_a, _server_a) = grpc_health_server(health_a).await;
    let (reporter_b, _server_b) = grpc_health_server(health_b).await;
    reporter_a
        .set_service_status("app", tonic_health::ServingStatus::Serving)
        .await;
    reporter_b
        .set_service_status("app", tonic_health::ServingStatus::Serving)
        .await;

    let health = HealthPolicy {
        active: Some(ActiveHealthCheck {
            port: Some(health_port),
            ..ActiveHealthCheck {
                probe: HealthProbe::Grpc {
                    service: "app".into(),
                    authority: None,
                },
                ..http_check()
            }
        }),
        ..HealthPolicy::default()
    };
    let (_engine, addr) = serve_backend(backend_of(&[&a, &b], health));
    drive(addr, Duration::from_secs(30), || {
        a.served() > 5 && b.served() > 5
    })
    .await;

    reporter_b
        .set_service_status("app", tonic_health::ServingStatus::NotServing)
        .await;
    // Give the probes time to notice, then b must stay out.
    tokio::time::sleep(INTERVAL * (UNHEALTHY_THRESHOLD + 1)).await;
    let served_b = b.served();
    drive(addr, Duration::from_secs(30), || a.served() > 200).await;
    assert_eq!(b.served(), served_b, "NOT_SERVING endpoint got traffic");

    reporter_b
        .set_service_status("app", tonic_health::ServingStatus::Serving)
        .await;
    drive(addr, Duration::from_secs(30), || b.served() > served_b + 5).await;
}

async fn grpc_health_server(
    listener: TcpListener,
) -> (tonic_health::server::HealthReporter, JoinHandle<()>) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    (reporter, task)
}

fn with_breakers(mut backend: Backend, breakers: CircuitBreakers) -> Backend {
    backend.health.circuit_breakers = breakers;
    backend
}

/// Starts a slow request on a connection of its own and waits until the backend has it.
async fn slow_request(
    addr: SocketAddr,
    server: &novaedge_echo::EchoServer,
) -> JoinHandle<StatusCode> {
    let before = server.requests();
    let task = tokio::spawn(async move {
        let mut client = Client::connect(Proto::Http1, addr).await;
        client.get("app", "/?delay_ms=1500").await.status()
    });
    while server.requests() == before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_overflow_is_an_immediate_503_naming_the_limit() {
    let server = echo("a").await;
    let backend = with_breakers(
        backend("app", UpstreamProtocol::Http1, &[&server]),
        CircuitBreakers {
            max_requests: 2,
            ..CircuitBreakers::default()
        },
    );
    let (_engine, addr) = serve_backend(backend);
    let slow = [
        slow_request(addr, &server).await,
        slow_request(addr, &server).await,
    ];

    for proto in BOTH {
        let mut client = Client::connect(proto, addr).await;
        let response = client.get("app", "/").await;
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{proto:?}"
        );
        assert_eq!(response.headers()[OVERLOADED_HEADER], "max_requests");
    }
    // Answered while the two requests holding the limit were still in flight: not queued.
    assert!(slow.iter().all(|t| !t.is_finished()));
    for task in slow {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    // The permits came back with the responses.
    let mut client = Client::connect(Proto::Http1, addr).await;
    assert_eq!(client.get("app", "/").await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_overflow_is_an_immediate_503_and_pooled_connections_are_reused() {
    let server = echo("a").await;
    let backend = with_breakers(
        backend("app", UpstreamProtocol::Http1, &[&server]),
        CircuitBreakers {
            max_connections: 1,
            ..CircuitBreakers::default()
        },
    );
    let (_engine, addr) = serve_backend(backend);
    let slow = slow_request(addr, &server).await;
    let mut client = Client::connect(Proto::Http1, addr).await;
    let response = client.get("app", "/").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[OVERLOADED_HEADER], "max_connections");
    assert!(!slow.is_finished());
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    // The one connection is back in the pool and serves request after request.
    for _ in 0..5 {
        assert_eq!(client.get("app", "/").await.status(), StatusCode::OK);
    }
}

/// Health verdicts survive a reload that keeps the health settings; a reload that changes them
/// starts over with new detectors, and what the old ones decided no longer counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_verdicts_unless_the_health_settings_change() {
    let (a, b) = (Backend1::start("a").await, Backend1::start("b").await);
    let checked = HealthPolicy {
        active: Some(http_check()),
        ..HealthPolicy::default()
    };
    let mut app = backend_of(&[&a, &b], checked.clone());
    app.load_balancing.panic_threshold_percent = 0;
    let (engine, addr) = serve_backend(app.clone());
    let apply = |version: u64, app: Backend| {
        engine
            .apply(&snapshot(
                version,
                vec![listener("web")],
                vec![route("default/r", "web", &[], vec![to("app")])],
                vec![app],
            ))
            .expect("snapshot applies");
    };
    drive(addr, Duration::from_secs(30), || b.served() > 5).await;
    b.set_health(503);
    tokio::time::sleep(INTERVAL * (UNHEALTHY_THRESHOLD + 1)).await;
    let out = b.served();

    // Same settings, new version: b stays out.
    apply(2, app.clone());
    drive(addr, Duration::from_secs(30), || a.served() > 200).await;
    assert_eq!(
        b.served(),
        out,
        "a reload with the same settings forgot b's verdict"
    );

    // Active checks removed: their verdict goes with them, and b is back.
    app.health = HealthPolicy::default();
    apply(3, app.clone());
    drive(addr, Duration::from_secs(30), || b.served() > out + 5).await;

    // Checks back: b keeps serving until its first probe says otherwise, then it is out again.
    app.health = checked;
    apply(4, app);
    tokio::time::sleep(INTERVAL * (UNHEALTHY_THRESHOLD + 1)).await;
    let out = b.served();
    drive(addr, Duration::from_secs(30), || a.served() > 600).await;
    assert_eq!(b.served(), out);
}
