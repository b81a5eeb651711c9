//! Active health checks against real servers on 127.0.0.1. Intervals are short real times; the
//! tests wait for events (with a generous deadline against hangs) and count probes, never
//! assert on timing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use novaedge_health::{
    ActiveChecker, ActiveConfig, GrpcProbe, Health, HealthEvent, HttpProbe, Probe, ProbeError,
    active,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tonic_health::ServingStatus;

type Events = UnboundedReceiver<HealthEvent<&'static str>>;

fn fast(probe: Probe) -> ActiveConfig {
    ActiveConfig {
        interval: Duration::from_millis(10),
        jitter: Duration::from_millis(5),
        timeout: Duration::from_secs(2),
        ..ActiveConfig::new(probe)
    }
}

async fn next_event(rx: &mut Events) -> (&'static str, Health) {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("no health event within 20 s")
        .expect("sink alive")
        .into_parts()
}

#[derive(Default)]
struct HttpBackend {
    /// The status to answer, and how many probes were answered with it since it was set; one
    /// lock so that a response is counted under the status it carried.
    status: Mutex<(u16, usize)>,
    requests: Mutex<Vec<(String, String)>>,
}

impl HttpBackend {
    fn set_status(&self, status: u16) {
        *self.status.lock().unwrap() = (status, 0);
    }

    fn answered(&self) -> usize {
        self.status.lock().unwrap().1
    }
}

async fn http_backend(state: Arc<HttpBackend>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let state = Arc::clone(&state);
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let host = req
                        .headers()
                        .get(http::header::HOST)
                        .map(|h| h.to_str().unwrap().to_owned());
                    state
                        .requests
                        .lock()
                        .unwrap()
                        .push((req.uri().to_string(), host.unwrap_or_default()));
                    let status = {
                        let mut current = state.status.lock().unwrap();
                        current.1 += 1;
                        current.0
                    };
                    async move {
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(status)
                                .body(Empty::<Bytes>::new())
                                .unwrap(),
                        )
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

#[tokio::test]
async fn http_probe_marks_503_unhealthy_after_threshold_and_recovers() {
    let backend = Arc::new(HttpBackend::default());
    backend.set_status(200);
    let addr = http_backend(Arc::clone(&backend)).await;
    let probe = Probe::Http(HttpProbe::new("/healthz?full=1").with_host("api.example"));
    // The sink notes how many probes the current status had answered when the event was sent.
    // A checker probes one endpoint sequentially, so this is exactly the threshold.
    let (tx, mut rx) = unbounded_channel();
    let sink = {
        let backend = Arc::clone(&backend);
        move |event: HealthEvent<&'static str>| {
            let _ = tx.send((event.into_parts(), backend.answered()));
        }
    };
    let checker = ActiveChecker::new(fast(probe), sink);
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("no health event within 20 s")
            .expect("sink alive")
    };
    checker.add("a", addr);

    // The first probe decides at once.
    assert_eq!(next().await, (("a", Health::Healthy), 1));
    assert_eq!(checker.health(&"a"), Some(Health::Healthy));

    backend.set_status(503);
    assert_eq!(next().await, (("a", Health::Unhealthy), 3)); // unhealthy_threshold

    backend.set_status(204);
    assert_eq!(next().await, (("a", Health::Healthy), 2)); // healthy_threshold
    assert_eq!(checker.health(&"a"), Some(Health::Healthy));

    let requests = backend.requests.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .all(|(uri, host)| uri == "/healthz?full=1" && host == "api.example"),
        "{requests:?}"
    );
}

#[tokio::test]
#[allow(clippy::single_range_in_vec_init)] // a list of one status range
async fn http_probe_checks_status_ranges_and_uses_the_address_as_default_host() {
    let backend = Arc::new(HttpBackend::default());
    backend.set_status(302);
    let addr = http_backend(Arc::clone(&backend)).await;
    let timeout = Duration::from_secs(5);
    active::probe(&Probe::Http(HttpProbe::new("/")), addr, timeout)
        .await
        .unwrap();
    let strict = Probe::Http(HttpProbe::new("/").with_expected_statuses(vec![200..201]));
    match active::probe(&strict, addr, timeout).await {
        Err(ProbeError::Status { status: 302, .. }) => {}
        other => panic!("expected a status error, got {other:?}"),
    }
    assert_eq!(backend.requests.lock().unwrap()[0].1, addr.to_string());
}

async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
    // dropped here: nothing listens any more
}

#[tokio::test]
async fn tcp_probe_fails_on_a_closed_port_and_passes_on_an_open_one() {
    let closed = closed_port().await;
    match active::probe(&Probe::Tcp, closed, Duration::from_secs(5)).await {
        Err(ProbeError::Connect { addr, .. }) => assert_eq!(addr, closed),
        other => panic!("expected a connect error, got {other:?}"),
    }
    let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
    active::probe(
        &Probe::Tcp,
        open.local_addr().unwrap(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();

    let (tx, mut rx) = unbounded_channel();
    let checker = ActiveChecker::new(fast(Probe::Tcp), tx);
    checker.add("closed", closed);
    assert_eq!(next_event(&mut rx).await, ("closed", Health::Unhealthy));
}

#[tokio::test]
async fn grpc_probe_follows_the_serving_status() {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("novaedge.Echo", ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let timeout = Duration::from_secs(5);
    match active::probe(&Probe::Grpc(GrpcProbe::new("no.Such")), addr, timeout).await {
        Err(ProbeError::GrpcCall { source, .. }) => {
            assert_eq!(source.code(), tonic::Code::NotFound)
        }
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }

    let with_authority = GrpcProbe {
        authority: Some("health.example:50051".into()),
        ..GrpcProbe::new("novaedge.Echo")
    };
    active::probe(&Probe::Grpc(with_authority), addr, timeout)
        .await
        .unwrap();

    let (tx, mut rx) = unbounded_channel();
    let checker = ActiveChecker::new(fast(Probe::Grpc(GrpcProbe::new("novaedge.Echo"))), tx);
    checker.add("grpc", addr);
    assert_eq!(next_event(&mut rx).await, ("grpc", Health::Healthy));

    reporter
        .set_service_status("novaedge.Echo", ServingStatus::NotServing)
        .await;
    assert_eq!(next_event(&mut rx).await, ("grpc", Health::Unhealthy));
    match active::probe(&Probe::Grpc(GrpcProbe::new("novaedge.Echo")), addr, timeout).await {
        Err(ProbeError::NotServing { status, .. }) => assert_eq!(status, "NOT_SERVING"),
        other => panic!("expected NOT_SERVING, got {other:?}"),
    }

    reporter
        .set_service_status("novaedge.Echo", ServingStatus::Serving)
        .await;
    assert_eq!(next_event(&mut rx).await, ("grpc", Health::Healthy));
}

#[tokio::test]
async fn endpoints_can_be_added_and_removed_while_running() {
    let backend = Arc::new(HttpBackend::default());
    backend.set_status(200);
    let up = http_backend(Arc::clone(&backend)).await;
    let down = closed_port().await;
    let (tx, mut rx) = unbounded_channel();
    let checker = ActiveChecker::new(fast(Probe::Http(HttpProbe::new("/"))), tx);

    checker.add("a", up);
    assert_eq!(next_event(&mut rx).await, ("a", Health::Healthy));
    checker.set_endpoints([("a", up), ("b", down)]);
    assert_eq!(next_event(&mut rx).await, ("b", Health::Unhealthy));
    assert_eq!(
        checker.health(&"a"),
        Some(Health::Healthy),
        "a kept its checker and state"
    );

    // Moving "b" to a working address restarts its checker, whose first probe decides.
    checker.add("b", up);
    assert_eq!(next_event(&mut rx).await, ("b", Health::Healthy));

    checker.remove(&"a");
    assert_eq!(checker.health(&"a"), None);
    assert_eq!(checker.len(), 1);
    drop(checker);
    // All tasks stopped: the sink (held by the tasks' shared state) is dropped with them.
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        while rx.recv().await.is_some() {}
    });
    closed.await.expect("checker tasks stopped");
}

#[tokio::test]
async fn probes_in_flight_are_bounded_across_endpoints() {
    // A server that accepts and never answers: each HTTP probe holds a connection until timeout.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let config = ActiveConfig {
        timeout: Duration::from_secs(60),
        max_concurrent_probes: 2,
        ..fast(Probe::Http(HttpProbe::new("/")))
    };
    let (tx, _rx) = unbounded_channel::<HealthEvent<u32>>();
    let checker = ActiveChecker::new(config, tx);
    checker.set_endpoints((0..5).map(|i| (i, addr)));

    tokio::time::timeout(Duration::from_secs(20), async {
        while accepted.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("two probes started");
    // Give the other three checkers ample chance to (wrongly) start their probes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
