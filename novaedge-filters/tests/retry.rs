//! The mirror, timeout and retry layers stacked over a real HTTP/1.1 client talking to real
//! servers on 127.0.0.1: request bodies are replayed through hyper, a refused connection is
//! classified from the real `io::Error`, and the stack composes in the documented order.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use novaedge_filters::{
    mirror::{MirrorConfig, MirrorLayer, MirrorRequestBody},
    retry::{BoxError, RetryConfig, RetryLayer, RetryOn, classify_io_error},
    timeout::{TimeoutConfig, TimeoutLayer},
};
use tokio::net::{TcpListener, TcpStream};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// What the test server saw: the attempt header and body of each request.
type Seen = Arc<Mutex<Vec<(Option<String>, Bytes)>>>;

/// A server that answers `503` to its first `failures` requests, then echoes the body.
async fn server(failures: usize) -> (SocketAddr, Seen) {
    server_with(failures, true).await
}

/// As [`server`]; with `read_failing` false the `503`s are sent at once, without reading the
/// request body.
async fn server_with(failures: usize, read_failing: bool) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (s, count) = (s.clone(), count.clone());
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (s, count) = (s.clone(), count.clone());
                async move {
                    let attempt = req
                        .headers()
                        .get("x-novaedge-retry-attempt")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let fail = count.fetch_add(1, Ordering::SeqCst) < failures;
                    if fail && !read_failing {
                        s.lock().unwrap().push((attempt, Bytes::new()));
                        let mut res = Response::new(Full::default());
                        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                        return Ok(res);
                    }
                    let body = req.into_body().collect().await?.to_bytes();
                    s.lock().unwrap().push((attempt, body.clone()));
                    let mut res = Response::new(Full::new(body));
                    if fail {
                        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    }
                    Ok::<_, hyper::Error>(res)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// An address nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// The response body: filters that answer themselves need a body with a `Default`, which
/// hyper's `Incoming` has not, so the client boxes it (as an engine would).
type ResBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// A client that opens a connection per request to the next address of `addrs` (the last
/// one repeats).
fn client<B>(
    addrs: Vec<SocketAddr>,
) -> impl Service<
    Request<B>,
    Response = Response<ResBody>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<ResBody>, BoxError>> + Send,
> + Clone
+ Send
+ 'static
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let next = Arc::new(AtomicUsize::new(0));
    service_fn(move |req: Request<B>| {
        let n = next.fetch_add(1, Ordering::SeqCst);
        let addr = addrs[n.min(addrs.len() - 1)];
        async move {
            let stream = TcpStream::connect(addr).await?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let res = send.send_request(req).await?;
            Ok::<_, BoxError>(res.map(BodyExt::boxed_unsync))
        }
    })
}

fn retry_config() -> RetryConfig {
    RetryConfig {
        max_retries: 2,
        retry_on: vec![
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::ServerError,
        ],
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(2),
        ..RetryConfig::default()
    }
}

#[tokio::test]
async fn body_is_replayed_through_a_real_client() {
    let (addr, seen) = server(1).await;
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(retry_config()).unwrap())
        .service(client(vec![addr]));
    let req = Request::put("/item")
        .header("host", "upstream.test")
        .body(Full::new(Bytes::from(vec![b'q'; 10_000])))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 10_000);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, None);
    assert_eq!(seen[1].0.as_deref(), Some("1"));
    assert!(seen.iter().all(|(_, b)| b.len() == 10_000));
}

#[tokio::test]
async fn body_not_read_by_the_first_try_is_replayed_and_continued() {
    // The upstream fails the first try before reading the body, which is still streaming in
    // from the client: the retry replays what was buffered, then reads the rest.
    let (addr, seen) = server_with(1, false).await;
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(retry_config()).unwrap())
        .service(client(vec![addr]));
    let chunks = futures_util::stream::unfold(0u8, |i| async move {
        if i == 6 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let chunk = Bytes::from(vec![b'a' + i; 10_000]);
        Some((Ok::<_, Infallible>(http_body::Frame::data(chunk)), i + 1))
    });
    let body = http_body_util::StreamBody::new(chunks);
    let req = Request::put("/big")
        .header("host", "upstream.test")
        .body(body)
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let want: Vec<u8> = (0..6u8).flat_map(|i| vec![b'a' + i; 10_000]).collect();
    assert_eq!(body.len(), want.len());
    assert!(body == want, "the retried body differs from the client's");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].0.as_deref(), Some("1"));
}

#[tokio::test]
async fn refused_connection_is_classified_and_retried() {
    let (addr, seen) = server(0).await;
    let dead = closed_port().await;
    let svc = ServiceBuilder::new()
        .layer(
            RetryLayer::new(retry_config())
                .unwrap()
                .with_classifier(|e: &BoxError| classify_io_error(&**e)),
        )
        .service(client(vec![dead, addr]));
    let req = Request::get("/").body(Full::<Bytes>::default()).unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // The refused try never reached a server; the retry did, and says so.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0.as_deref(), Some("1"));
}

#[tokio::test]
async fn documented_stack_composes() {
    let (addr, seen) = server(1).await;
    let (tx, mut copies) = tokio::sync::mpsc::unbounded_channel();
    let target = service_fn(move |req: Request<MirrorRequestBody>| {
        let tx = tx.clone();
        async move {
            let host = req.headers()["host"].to_str().unwrap().to_owned();
            let body = req.into_body().collect().await?.to_bytes();
            tx.send((host, body)).ok();
            Ok::<_, Infallible>(Response::new(()))
        }
    });
    // Mirror, then the whole-request timeout, then retries, around the upstream call.
    let svc = ServiceBuilder::new()
        .layer(MirrorLayer::new(MirrorConfig::default(), target).unwrap())
        .layer(TimeoutLayer::new(TimeoutConfig::new(Duration::from_secs(10))).unwrap())
        .layer(RetryLayer::new(retry_config()).unwrap())
        .service(client(vec![addr]));
    let req = Request::put("/doc")
        .header("host", "app.test")
        .body(Full::new(Bytes::from_static(b"v1")))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "v1");
    assert_eq!(seen.lock().unwrap().len(), 2);
    // One copy, whatever the retries below the mirror did.
    let (host, body) = copies.recv().await.unwrap();
    assert_eq!((host.as_str(), &body[..]), ("app.test-shadow", &b"v1"[..]));
    assert!(copies.try_recv().is_err());
}
