//! Rate limiting as a user sees it: counts of `200` and `429` over a known time, over paused
//! tokio time (exact) and over a real socket in real time (with a tolerance); a million
//! distinct keys against the key cap; many tasks on one limiter.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use novaedge_filters::ClientAddr;
use novaedge_filters::ratelimit::{KeySource, RateLimitConfig, RateLimitLayer};
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, Service, ServiceExt, service_fn};

fn ok_service<B>()
-> impl Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send + 'static>
+ Clone
+ Send
+ 'static {
    service_fn(|_req: Request<B>| async { Ok(Response::new(Full::new(Bytes::from("ok")))) })
}

fn from(addr: SocketAddr) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut().insert(ClientAddr(addr));
    req
}

fn client(i: u32) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i), 40000))
}

/// 10 requests a second with a burst of 5; one client sends every 10 ms for 2 s (200
/// requests, at t = 0, 10, ..., 1990 ms).
///
/// Expected: the burst of 5 at 0..=40 ms, then one request each time the 100 ms interval comes
/// round (100, 200, ..., 1900 ms): 5 + 19 = 24, which is `burst + floor(T / interval)` with
/// T = 1990 ms. With paused time the count is exact; the bound it must respect is
/// `burst + T × rate` = 24.9.
#[tokio::test(start_paused = true)]
async fn counts_200_and_429_over_two_seconds() {
    let layer = RateLimitLayer::new(RateLimitConfig::new(10, Duration::from_secs(1)).with_burst(5))
        .unwrap();
    let svc = layer.layer(ok_service());

    let start = tokio::time::Instant::now();
    let (mut ok, mut limited, mut ok_at) = (0, 0, Vec::new());
    for _ in 0..200 {
        let res = svc.clone().oneshot(from(client(1))).await.unwrap();
        match res.status() {
            StatusCode::OK => {
                ok += 1;
                ok_at.push(start.elapsed().as_millis());
            }
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("unexpected {other}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!((ok, limited), (24, 176));
    let expected: Vec<u128> = [0, 10, 20, 30, 40]
        .into_iter()
        .chain((1..=19).map(|i| i * 100))
        .collect();
    assert_eq!(ok_at, expected);
}

/// Three clients at once, one within its limit, two over it by different amounts: each is
/// held to its own bucket.
#[tokio::test(start_paused = true)]
async fn clients_are_limited_independently() {
    // 5 a second, burst 2.
    let layer =
        RateLimitLayer::new(RateLimitConfig::new(5, Duration::from_secs(1)).with_burst(2)).unwrap();
    let svc = layer.layer(ok_service());
    let mut ok = [0u32; 3];
    // For 1 s, every 50 ms: client 0 sends every 250 ms (4 a second, under its limit),
    // client 1 every 100 ms, client 2 every 50 ms.
    for tick in 0..20u32 {
        for (c, every) in [(0usize, 5u32), (1, 2), (2, 1)] {
            if tick % every == 0 {
                let res = svc.clone().oneshot(from(client(c as u32))).await.unwrap();
                ok[c] += u32::from(res.status() == StatusCode::OK);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Client 0: all 4. Clients 1 and 2 (requests until 950 ms): the burst of 2, then one per
    // 200 ms at 200..=800 ms, so 2 + 4 = 6 each (bound: 2 + 0.95 s × 5 = 6.75).
    assert_eq!(ok, [4, 6, 6]);
}

/// Over a real socket and real time: hyper serves the limited service on 127.0.0.1 and one
/// client sends requests back to back for about a second.
///
/// GCRA lets at most `burst + T × rate` requests through in a span `T`, whatever the timing,
/// so `ok <= burst + T × rate + 1` holds exactly (T measured around all requests by the client,
/// which is at least the server's span). The lower bound depends on the scheduler (a stalled
/// client loses refill time once its bucket is full), so it is loose: half of that.
#[tokio::test]
async fn real_socket_counts_within_tolerance() {
    const RATE: f64 = 20.0;
    const BURST: f64 = 5.0;
    let layer = RateLimitLayer::new(RateLimitConfig::new(20, Duration::from_secs(1)).with_burst(5))
        .unwrap();
    let svc = layer.layer(ok_service::<hyper::body::Incoming>());

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let svc = svc.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut req| {
                    req.extensions_mut().insert(ClientAddr(peer));
                    svc.clone().oneshot(req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);

    let start = std::time::Instant::now();
    let (mut ok, mut limited) = (0u32, 0u32);
    let mut last_refusal = None;
    while start.elapsed() < Duration::from_secs(1) {
        sender.ready().await.unwrap();
        let req = Request::get("/").body(Empty::<Bytes>::new()).unwrap();
        let res = sender.send_request(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        match status {
            StatusCode::OK => {
                ok += 1;
                assert_eq!(body, "ok");
            }
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                assert!(body.is_empty());
                last_refusal = Some(headers);
            }
            other => panic!("unexpected {other}"),
        }
    }
    let span = start.elapsed().as_secs_f64();
    server.abort();

    let ceiling = BURST + span * RATE + 1.0;
    assert!(
        f64::from(ok) <= ceiling,
        "{ok} allowed in {span:.3} s, more than {ceiling:.1}"
    );
    assert!(
        f64::from(ok) >= (BURST + span * RATE) / 2.0,
        "{ok} allowed in {span:.3} s"
    );
    assert!(limited > 0, "the client sent faster than its limit");
    let refusal = last_refusal.unwrap();
    assert_eq!(refusal["retry-after"], "1");
    assert_eq!(refusal["ratelimit-limit"], "5");
    assert_eq!(refusal["ratelimit-remaining"], "0");
    assert_eq!(refusal["content-length"], "0");
}

/// A million distinct client addresses through a limiter capped at the default 100,000 keys:
/// the stored key count, checked after every request, never goes past the cap. Time stands
/// still (paused) except for 1 ms per 1,000 requests, so almost no bucket refills and the cap
/// is enforced by evicting least recently used keys, the hard case.
#[tokio::test(start_paused = true)]
async fn a_million_distinct_keys_never_exceed_the_cap() {
    let config = RateLimitConfig::new(1, Duration::from_secs(1)).with_burst(1);
    let max_keys = config.max_keys;
    assert_eq!(max_keys, 100_000);
    let layer = RateLimitLayer::new(config).unwrap();
    let mut svc = layer.layer(ok_service());

    let mut peak = 0;
    for i in 0..1_000_000u32 {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(from(client(i)))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "a new key has a full bucket");
        let keys = layer.stats().keys;
        assert!(keys <= max_keys, "{keys} keys stored after {i} requests");
        peak = peak.max(keys);
        if i % 1000 == 999 {
            tokio::time::advance(Duration::from_millis(1)).await;
        }
    }
    let stats = layer.stats();
    assert_eq!(peak, max_keys, "the store filled up to its cap");
    assert_eq!(stats.keys, max_keys);
    assert_eq!(
        stats.expired + stats.evicted,
        1_000_000 - max_keys as u64,
        "every key past the cap pushed one out"
    );
    // The most recent client is still tracked and still limited.
    let res = svc.oneshot(from(client(999_999))).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// Many tasks on a multi-threaded runtime share one limiter: per key, exactly the burst gets
/// through (the limit is an hour long, so nothing refills during the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_share_one_limiter() {
    let layer = RateLimitLayer::new(
        RateLimitConfig::new(1, Duration::from_secs(3600))
            .with_burst(50)
            .with_key(KeySource::Extension),
    )
    .unwrap();
    let svc = layer.layer(ok_service());
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let mut ok = std::collections::HashMap::<u32, u32>::new();
                for n in 0..2000u32 {
                    // 20 keys, visited by every task in a different order.
                    let key = (n * 7 + task) % 20;
                    let mut req = Request::new(());
                    req.extensions_mut()
                        .insert(novaedge_filters::ratelimit::RateLimitKey::new(format!(
                            "tenant-{key}"
                        )));
                    let res = svc.clone().oneshot(req).await.unwrap();
                    if res.status() == StatusCode::OK {
                        *ok.entry(key).or_default() += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let mut total = std::collections::HashMap::<u32, u32>::new();
    for task in tasks {
        for (key, n) in task.await.unwrap() {
            *total.entry(key).or_default() += n;
        }
    }
    assert_eq!(total.len(), 20);
    assert!(total.values().all(|&n| n == 50), "{total:?}");
}
