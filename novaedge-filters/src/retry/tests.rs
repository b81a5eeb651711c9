use super::*;

use std::sync::{
    Mutex,
    atomic::{AtomicUsize, Ordering},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
use tokio::time::Instant;
use tower::{ServiceExt, service_fn, util::BoxCloneService};

/// What the mock upstream does on one try.
#[derive(Clone, Copy, Debug)]
enum Step {
    Status(u16),
    /// A trailers-only gRPC response: `200` with `grpc-status` in the headers.
    Grpc(u32),
    Fail(&'static str),
    Hang,
}

/// What the mock upstream saw on one try.
#[derive(Clone, Debug)]
struct Seen {
    headers: HeaderMap,
    body: Result<Bytes, String>,
    replayable: bool,
    at: Instant,
}

type Log = Arc<Mutex<Vec<Seen>>>;
type ResBody = Full<Bytes>;
type Upstream<B> = BoxCloneService<Request<ReplayBody<B>>, Response<ResBody>, &'static str>;

/// An upstream that follows `steps` (the last one repeats) and logs every try. It reads the
/// whole request body before answering, except when it hangs.
fn upstream<B>(steps: Vec<Step>) -> (Upstream<B>, Log)
where
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
{
    let log: Log = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc_log = log.clone();
    let svc = service_fn(move |req: Request<ReplayBody<B>>| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let step = steps[n.min(steps.len() - 1)];
        let log = svc_log.clone();
        async move {
            let at = Instant::now();
            let headers = req.headers().clone();
            let replayable = req.body().is_replayable();
            if let Step::Hang = step {
                log.lock().unwrap().push(Seen {
                    headers,
                    body: Err("not read".into()),
                    replayable,
                    at,
                });
                return std::future::pending().await;
            }
            let body = match req.into_body().collect().await {
                Ok(c) => Ok(c.to_bytes()),
                Err(e) => Err(e.to_string()),
            };
            log.lock().unwrap().push(Seen {
                headers,
                body,
                replayable,
                at,
            });
            match step {
                Step::Status(code) => {
                    let mut res = Response::new(Full::new(Bytes::from(format!("try {n}"))));
                    *res.status_mut() = StatusCode::from_u16(code).unwrap();
                    Ok(res)
                }
                Step::Grpc(code) => {
                    let mut res = Response::new(Full::default());
                    res.headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/grpc"));
                    res.headers_mut()
                        .insert("grpc-status", HeaderValue::from(code));
                    Ok(res)
                }
                Step::Fail(e) => Err(e),
                Step::Hang => unreachable!(),
            }
        }
    });
    (BoxCloneService::new(svc), log)
}

/// A copy of the tries logged so far.
fn tries(log: &Log) -> Vec<Seen> {
    log.lock().unwrap().clone()
}

fn config() -> RetryConfig {
    RetryConfig {
        max_retries: 2,
        retry_on: vec![RetryOn::ServerError, RetryOn::PerTryTimeout],
        budget: None,
        ..RetryConfig::default()
    }
}

fn layer(config: RetryConfig) -> RetryLayer {
    RetryLayer::new(config).unwrap()
}

fn get() -> Request<Empty<Bytes>> {
    Request::get("/").body(Empty::new()).unwrap()
}

async fn body_of(res: Response<ResBody>) -> Bytes {
    res.into_body().collect().await.unwrap().to_bytes()
}

// === retry conditions ===

#[tokio::test(start_paused = true)]
async fn server_error_is_retried_and_numbered() {
    let (svc, log) = upstream(vec![
        Step::Status(500),
        Step::Status(503),
        Step::Status(200),
    ]);
    let mut req = get();
    // A client cannot forge the attempt header.
    req.headers_mut()
        .insert(ATTEMPT_HEADER, HeaderValue::from_static("7"));
    let res = layer(config()).layer(svc).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_of(res).await, "try 2");
    let log = tries(&log);
    assert_eq!(log.len(), 3);
    let attempts: Vec<_> = log
        .iter()
        .map(|s| {
            s.headers
                .get(ATTEMPT_HEADER)
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(attempts, [None, Some("1".into()), Some("2".into())]);
}

#[tokio::test(start_paused = true)]
async fn retries_are_bounded_and_the_last_response_is_returned() {
    let (svc, log) = upstream(vec![Step::Status(502)]);
    let res = layer(config()).layer(svc).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    // The last try's body reaches the client untouched.
    assert_eq!(body_of(res).await, "try 2");
    assert_eq!(tries(&log).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn success_and_client_errors_are_not_retried() {
    for code in [200, 404, 429] {
        let (svc, log) = upstream(vec![Step::Status(code), Step::Status(200)]);
        let res = layer(config()).layer(svc).oneshot(get()).await.unwrap();
        assert_eq!(res.status().as_u16(), code);
        assert_eq!(tries(&log).len(), 1, "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn listed_status_codes_only() {
    let cfg = RetryConfig {
        retry_on: vec![],
        retriable_status_codes: vec![StatusCode::SERVICE_UNAVAILABLE, StatusCode::CONFLICT],
        ..config()
    };
    let (svc, log) = upstream(vec![
        Step::Status(503),
        Step::Status(409),
        Step::Status(200),
    ]);
    let res = layer(cfg.clone()).layer(svc).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(tries(&log).len(), 3);

    let (svc, log) = upstream(vec![Step::Status(500), Step::Status(200)]);
    let res = layer(cfg).layer(svc).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(tries(&log).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn gateway_error_is_502_503_504() {
    let cfg = RetryConfig {
        retry_on: vec![RetryOn::GatewayError],
        max_retries: 1,
        ..config()
    };
    for (code, expected) in [(502, 2), (503, 2), (504, 2), (500, 1), (501, 1)] {
        let (svc, log) = upstream(vec![Step::Status(code), Step::Status(200)]);
        layer(cfg.clone()).layer(svc).oneshot(get()).await.unwrap();
        assert_eq!(tries(&log).len(), expected, "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn grpc_status_in_headers_is_retried() {
    let cfg = RetryConfig {
        retry_on: vec![],
        retriable_grpc_codes: vec![grpc::UNAVAILABLE, grpc::RESOURCE_EXHAUSTED],
        methods: vec![Method::POST],
        ..config()
    };
    let (svc, log) = upstream(vec![Step::Grpc(14), Step::Grpc(8), Step::Grpc(0)]);
    let req = Request::post("/pkg.Svc/Method")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi")))
        .unwrap();
    let res = layer(cfg.clone()).layer(svc).oneshot(req).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "0");
    let log = tries(&log);
    assert_eq!(log.len(), 3);
    // Every try got the whole message.
    assert!(
        log.iter()
            .all(|s| s.body.as_deref() == Ok(&b"\0\0\0\0\x02hi"[..]))
    );

    // A status that is not listed (INVALID_ARGUMENT) is returned at once.
    let (svc, log) = upstream(vec![Step::Grpc(3), Step::Grpc(0)]);
    let req = Request::post("/pkg.Svc/Method")
        .body(Full::<Bytes>::default())
        .unwrap();
    let res = layer(cfg).layer(svc).oneshot(req).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "3");
    assert_eq!(tries(&log).len(), 1);
}

// === errors ===

#[tokio::test(start_paused = true)]
async fn errors_are_retried_as_classified() {
    let classify = |e: &&'static str| match *e {
        "refused" => Some(RetryOn::ConnectFailure),
        "reset" => Some(RetryOn::Reset),
        _ => None,
    };
    let cfg = RetryConfig {
        retry_on: vec![RetryOn::ConnectFailure, RetryOn::Reset],
        ..config()
    };

    let (svc, log) = upstream(vec![
        Step::Fail("refused"),
        Step::Fail("reset"),
        Step::Status(200),
    ]);
    let svc = layer(cfg.clone()).with_classifier(classify).layer(svc);
    let res = svc.oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(tries(&log).len(), 3);

    // An unclassified error passes through, unchanged, after one try.
    let (svc, log) = upstream(vec![Step::Fail("bad request"), Step::Status(200)]);
    let svc = layer(cfg.clone()).with_classifier(classify).layer(svc);
    assert_eq!(svc.oneshot(get()).await.unwrap_err(), "bad request");
    assert_eq!(tries(&log).len(), 1);

    // The last error is returned when retries run out.
    let (svc, log) = upstream(vec![Step::Fail("refused")]);
    let svc = layer(cfg).with_classifier(classify).layer(svc);
    assert_eq!(svc.oneshot(get()).await.unwrap_err(), "refused");
    assert_eq!(tries(&log).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_classified_condition_must_be_enabled() {
    let cfg = RetryConfig {
        retry_on: vec![RetryOn::ConnectFailure],
        ..config()
    };
    let (svc, log) = upstream(vec![Step::Fail("reset"), Step::Status(200)]);
    let svc = layer(cfg)
        .with_classifier(|_: &&'static str| Some(RetryOn::Reset))
        .layer(svc);
    assert_eq!(svc.oneshot(get()).await.unwrap_err(), "reset");
    assert_eq!(tries(&log).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn without_a_classifier_errors_are_not_retried() {
    let (svc, log) = upstream(vec![Step::Fail("refused"), Step::Status(200)]);
    let svc = layer(RetryConfig::default()).layer(svc);
    assert_eq!(svc.oneshot(get()).await.unwrap_err(), "refused");
    assert_eq!(tries(&log).len(), 1);
}

#[test]
fn io_errors_are_classified() {
    let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
    assert_eq!(classify_io_error(&refused), Some(RetryOn::ConnectFailure));
    let reset = io::Error::from(io::ErrorKind::ConnectionReset);
    assert_eq!(classify_io_error(&reset), Some(RetryOn::Reset));
    let other = io::Error::other("disk full");
    assert_eq!(classify_io_error(&other), None);

    // Found through the source chain of a boxed wrapper.
    #[derive(Debug, thiserror::Error)]
    #[error("upstream call failed")]
    struct Wrapped(#[source] io::Error);
    let boxed: BoxError = Box::new(Wrapped(io::Error::from(io::ErrorKind::BrokenPipe)));
    assert_eq!(classify_io_error(&*boxed), Some(RetryOn::Reset));
    let boxed: BoxError = "plain".into();
    assert_eq!(classify_io_error(&*boxed), None);
}

// === methods and bodies ===

#[tokio::test(start_paused = true)]
async fn non_idempotent_methods_are_sent_once() {
    for method in [Method::POST, Method::PATCH, Method::CONNECT] {
        let (svc, log) = upstream(vec![Step::Status(503), Step::Status(200)]);
        let req = Request::builder()
            .method(method.clone())
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap();
        let res = layer(config()).layer(svc).oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{method}");
        let log = tries(&log);
        assert_eq!(log.len(), 1, "{method}");
        // Not buffered either.
        assert!(!log[0].replayable);
    }
}

#[tokio::test(start_paused = true)]
async fn idempotent_methods_are_retried() {
    for method in [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ] {
        let (svc, log) = upstream(vec![Step::Status(503), Step::Status(200)]);
        let req = Request::builder()
            .method(method.clone())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = layer(config()).layer(svc).oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{method}");
        assert_eq!(tries(&log).len(), 2, "{method}");
    }
}

#[tokio::test(start_paused = true)]
async fn body_is_replayed_on_each_try() {
    let (svc, log) = upstream(vec![
        Step::Status(503),
        Step::Status(503),
        Step::Status(200),
    ]);
    let req = Request::put("/x")
        .body(Full::new(Bytes::from(vec![b'a'; 1000])))
        .unwrap();
    let res = layer(config()).layer(svc).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let log = tries(&log);
    assert_eq!(log.len(), 3);
    for seen in log.iter() {
        assert!(seen.replayable);
        assert_eq!(seen.body.as_ref().unwrap().len(), 1000);
    }
}

#[tokio::test(start_paused = true)]
async fn body_over_the_limit_by_size_hint_is_sent_once() {
    let cfg = RetryConfig {
        max_buffered_body: 16,
        ..config()
    };
    let (svc, log) = upstream(vec![Step::Status(503), Step::Status(200)]);
    let req = Request::put("/x")
        .body(Full::new(Bytes::from(vec![b'a'; 17])))
        .unwrap();
    let res = layer(cfg).layer(svc).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let log = tries(&log);
    assert_eq!(log.len(), 1);
    assert!(!log[0].replayable);
    assert_eq!(log[0].body.as_ref().unwrap().len(), 17);
}

type Streaming = UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// A streaming body of `chunks` chunks of `size` bytes, with no size hint.
fn streaming(chunks: usize, size: usize) -> Streaming {
    let frames = (0..chunks).map(move |_| {
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b'z'; size])))
    });
    UnsyncBoxBody::new(StreamBody::new(futures_util::stream::iter(frames)))
}

#[tokio::test(start_paused = true)]
async fn streaming_body_past_the_limit_is_not_retried() {
    let cfg = RetryConfig {
        max_buffered_body: 100,
        ..config()
    };
    let (svc, log) = upstream(vec![Step::Status(503), Step::Status(200)]);
    let req = Request::put("/x").body(streaming(3, 40)).unwrap();
    let res = layer(cfg.clone()).layer(svc).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let log = tries(&log);
    assert_eq!(log.len(), 1);
    // The one try got the whole body, streamed.
    assert_eq!(log[0].body.as_ref().unwrap().len(), 120);

    // Within the limit the same body is replayed.
    let (svc, log) = upstream(vec![Step::Status(503), Step::Status(200)]);
    let req = Request::put("/x").body(streaming(2, 40)).unwrap();
    let res = layer(cfg).layer(svc).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let log = tries(&log);
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].body.as_ref().unwrap().len(), 80);
}

#[tokio::test(start_paused = true)]
async fn max_retries_zero_sends_once_unbuffered() {
    let cfg = RetryConfig {
        max_retries: 0,
        ..config()
    };
    let (svc, log) = upstream(vec![Step::Status(503), Step::Status(200)]);
    let res = layer(cfg).layer(svc).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let log = tries(&log);
    assert_eq!(log.len(), 1);
    assert!(!log[0].replayable);
}

// === time ===

#[tokio::test(start_paused = true)]
async fn per_try_timeout_retries_a_hung_try() {
    let cfg = RetryConfig {
        per_try_timeout: Some(Duration::from_secs(1)),
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_millis(100),
        ..config()
    };
    let (svc, log) = upstream(vec![Step::Hang, Step::Status(200)]);
    let start = Instant::now();
    let res = layer(cfg).layer(svc).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(start.elapsed(), Duration::from_millis(1100));
    assert_eq!(tries(&log).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_gives_504_when_retries_run_out() {
    let cfg = RetryConfig {
        per_try_timeout: Some(Duration::from_secs(1)),
        backoff_base: Duration::ZERO,
        backoff_max: Duration::ZERO,
        ..config()
    };
    let (svc, log) = upstream(vec![Step::Hang]);
    let start = Instant::now();
    let res = layer(cfg.clone()).layer(svc).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(body_of(res).await.is_empty());
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(tries(&log).len(), 3);

    // Not retried when the condition is off, but still bounded.
    let cfg = RetryConfig {
        retry_on: vec![RetryOn::ServerError],
        ..cfg
    };
    let (svc, log) = upstream(vec![Step::Hang]);
    let res = layer(cfg).layer(svc).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(tries(&log).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_applies_to_requests_sent_once() {
    let cfg = RetryConfig {
        per_try_timeout: Some(Duration::from_secs(2)),
        ..config()
    };
    let (svc, _log) = upstream(vec![Step::Hang]);
    let req = Request::post("/").body(Empty::<Bytes>::new()).unwrap();
    let start = Instant::now();
    let res = layer(cfg).layer(svc).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_within_its_bounds() {
    let base = Duration::from_millis(100);
    let max = Duration::from_millis(500);
    let cfg = RetryConfig {
        max_retries: 5,
        backoff_base: base,
        backoff_max: max,
        ..config()
    };
    for _ in 0..20 {
        let (svc, log) = upstream(vec![Step::Status(503)]);
        layer(cfg.clone()).layer(svc).oneshot(get()).await.unwrap();
        let log = tries(&log);
        assert_eq!(log.len(), 6);
        for (n, pair) in log.windows(2).enumerate() {
            let gap = pair[1].at - pair[0].at;
            let ceiling = (base * 2u32.pow(n as u32 + 1)).min(max);
            assert!(gap >= base && gap <= ceiling, "retry {}: {gap:?}", n + 1);
        }
    }
}

#[test]
fn backoff_jitters() {
    let policy = layer(RetryConfig {
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_secs(10),
        ..config()
    })
    .policy;
    let waits: std::collections::HashSet<_> = (0..50).map(|_| policy.backoff(3)).collect();
    assert!(waits.len() > 1, "no jitter: {waits:?}");
    assert!(
        waits
            .iter()
            .all(|w| *w >= Duration::from_millis(10) && *w <= Duration::from_millis(80))
    );
    // Large retry numbers saturate at the ceiling instead of overflowing.
    assert!(policy.backoff(200) <= Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn budget_exhaustion_stops_retries() {
    let cfg = RetryConfig {
        max_retries: 3,
        budget: Some(RetryBudgetConfig {
            retry_ratio: 0.0,
            min_retries_per_sec: 2,
            ttl: Duration::from_secs(1),
        }),
        ..config()
    };
    let layer = layer(cfg);
    // The reserve is two retries per second: the first request uses both.
    let (svc, log) = upstream(vec![Step::Status(503)]);
    let svc = layer.layer(svc);
    let res = svc.clone().oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(tries(&log).len(), 3);
    // The next one is sent once.
    svc.clone().oneshot(get()).await.unwrap();
    assert_eq!(tries(&log).len(), 4);
    // Clones of the layer share the budget.
    let (other, other_log) = upstream(vec![Step::Status(503)]);
    layer.layer(other).oneshot(get()).await.unwrap();
    assert_eq!(tries(&other_log).len(), 1);
    // Once the window has slid by, retries are allowed again.
    tokio::time::advance(Duration::from_secs(2)).await;
    svc.oneshot(get()).await.unwrap();
    assert_eq!(tries(&log).len(), 7);
}

#[tokio::test(start_paused = true)]
async fn budget_ratio_follows_traffic() {
    let cfg = RetryConfig {
        max_retries: 1,
        budget: Some(RetryBudgetConfig {
            retry_ratio: 0.5,
            min_retries_per_sec: 0,
            ttl: Duration::from_secs(10),
        }),
        ..config()
    };
    let (svc, log) = upstream(vec![Step::Status(503)]);
    let svc = layer(cfg).layer(svc);
    for _ in 0..10 {
        svc.clone().oneshot(get()).await.unwrap();
    }
    // 10 requests, 0.5 retries each at most: 5 retries.
    assert_eq!(tries(&log).len(), 15);
}

// === circuit breaker ===

#[tokio::test(start_paused = true)]
async fn permit_refusal_stops_retries() {
    let asked = Arc::new(AtomicUsize::new(0));
    let a = asked.clone();
    let (svc, log) = upstream(vec![Step::Status(503), Step::Status(200)]);
    let svc = layer(config())
        .with_retry_permit(move || {
            a.fetch_add(1, Ordering::SeqCst);
            None
        })
        .layer(svc);
    let res = svc.oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(tries(&log).len(), 1);
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn permit_is_held_during_the_retry() {
    /// A permit that counts the live ones, as a breaker's in-flight counter would.
    struct Permit(Arc<AtomicUsize>);
    impl Drop for Permit {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let active = Arc::new(AtomicUsize::new(0));
    let seen_by_tries = Arc::new(Mutex::new(Vec::new()));
    let (inner, _log) = upstream::<Empty<Bytes>>(vec![
        Step::Status(503),
        Step::Status(503),
        Step::Status(200),
    ]);
    let (seen, a) = (seen_by_tries.clone(), active.clone());
    let inner = tower::ServiceBuilder::new()
        .map_request(move |req| {
            seen.lock().unwrap().push(a.load(Ordering::SeqCst));
            req
        })
        .service(inner);
    let a = active.clone();
    let svc = layer(config())
        .with_retry_permit(move || {
            a.fetch_add(1, Ordering::SeqCst);
            Some(Box::new(Permit(a.clone())) as RetryPermit)
        })
        .layer(inner);
    let res = svc.oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // No permit on the first try, one during each retry, none left afterwards.
    assert_eq!(*seen_by_tries.lock().unwrap(), [0, 1, 1]);
    assert_eq!(active.load(Ordering::SeqCst), 0);
}

// === config ===

#[test]
fn config_errors_name_the_field() {
    let cases = [
        (
            RetryConfig {
                backoff_base: Duration::from_secs(2),
                backoff_max: Duration::from_secs(1),
                ..RetryConfig::default()
            },
            "retry.backoff_max",
        ),
        (
            RetryConfig {
                per_try_timeout: Some(Duration::ZERO),
                ..RetryConfig::default()
            },
            "retry.per_try_timeout",
        ),
        (
            RetryConfig {
                retriable_grpc_codes: vec![17],
                ..RetryConfig::default()
            },
            "retry.retriable_grpc_codes",
        ),
        (
            RetryConfig {
                retriable_status_codes: vec![StatusCode::OK],
                ..RetryConfig::default()
            },
            "retry.retriable_status_codes",
        ),
        (
            RetryConfig {
                budget: Some(RetryBudgetConfig {
                    retry_ratio: -1.0,
                    ..Default::default()
                }),
                ..RetryConfig::default()
            },
            "retry.budget.retry_ratio",
        ),
    ];
    for (cfg, field) in cases {
        let err = RetryLayer::new(cfg).unwrap_err();
        assert!(err.to_string().contains(field), "{err} should name {field}");
    }
}

#[tokio::test(start_paused = true)]
async fn attempt_header_can_be_renamed_or_turned_off() {
    let cfg = RetryConfig {
        attempt_header: Some(HeaderName::from_static("x-envoy-attempt")),
        ..config()
    };
    let (svc, log) = upstream(vec![Step::Status(503), Step::Status(200)]);
    layer(cfg).layer(svc).oneshot(get()).await.unwrap();
    let log = tries(&log);
    assert_eq!(log[1].headers["x-envoy-attempt"], "1");
    assert!(log[1].headers.get(ATTEMPT_HEADER).is_none());

    let cfg = RetryConfig {
        attempt_header: None,
        ..config()
    };
    let (svc, log) = upstream(vec![Step::Status(503), Step::Status(200)]);
    layer(cfg).layer(svc).oneshot(get()).await.unwrap();
    assert!(tries(&log)[1].headers.get(ATTEMPT_HEADER).is_none());
}

#[tokio::test(start_paused = true)]
async fn request_head_is_kept_on_retries() {
    let (svc, log) = upstream(vec![Step::Status(503), Step::Status(200)]);
    let req = Request::get("/a?b=c")
        .header("authorization", "Bearer t")
        .body(Empty::<Bytes>::new())
        .unwrap();
    layer(config()).layer(svc).oneshot(req).await.unwrap();
    let log = tries(&log);
    assert_eq!(log[1].headers["authorization"], "Bearer t");
}
