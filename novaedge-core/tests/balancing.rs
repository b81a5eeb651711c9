//! Balancing policies chosen per backend in the snapshot, end to end: consistent hashing keeps
//! a key on one endpoint (and moves few keys when the set changes), least request steers away
//! from a slow endpoint.

mod common;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{HeaderName, Method, Request, Response};
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use novaedge_echo::EchoServer;
use novaedge_snapshot::{Backend, HashOn, LbPolicy, LoadBalancing, UpstreamProtocol::Http1};
use tokio::net::TcpListener;

fn with_policy(mut b: Backend, policy: LbPolicy, hash_on: Option<HashOn>) -> Backend {
    b.load_balancing = LoadBalancing {
        policy,
        hash_on,
        ..LoadBalancing::default()
    };
    b
}

fn maglev_on_user(servers: &[&EchoServer]) -> Backend {
    with_policy(
        backend("users", Http1, servers),
        LbPolicy::Maglev { table_size: 65_537 },
        Some(HashOn::Header(HeaderName::from_static("x-user"))),
    )
}

/// Which echo server answers each of `users`, asking twice each.
async fn owners(client: &mut Client, users: &[String]) -> HashMap<String, String> {
    let mut owners = HashMap::new();
    for user in users {
        let mut seen = HashSet::new();
        for _ in 0..2 {
            let req = client
                .request(Method::GET, "app.test", "/")
                .header("x-user", user)
                .body(Full::default())
                .unwrap();
            let response = client.send(req).await.unwrap();
            seen.insert(echo_name(&response).to_owned());
        }
        assert_eq!(seen.len(), 1, "user {user} went to {seen:?}");
        owners.insert(user.clone(), seen.into_iter().next().unwrap());
    }
    owners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maglev_keeps_keys_on_their_endpoint_across_changes() {
    let (a, b, c) = (echo("a").await, echo("b").await, echo("c").await);
    let engine = engine();
    let apply = |version, servers: &[&EchoServer]| {
        engine.apply(&snapshot(
            version,
            vec![listener("web")],
            vec![route(
                "default/users",
                "web",
                &["app.test"],
                vec![to("users")],
            )],
            vec![maglev_on_user(servers)],
        ))
    };
    apply(1, &[&a, &b, &c]).unwrap();
    let addr = engine.local_addr("web").unwrap();
    let mut client = Client::connect(Proto::Http1, addr).await;
    let users: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();

    let before = owners(&mut client, &users).await;
    let mut share: HashMap<&str, usize> = HashMap::new();
    for owner in before.values() {
        *share.entry(owner).or_default() += 1;
    }
    // 300 keys over 3 endpoints: about 100 each; 50 is five standard deviations away.
    for name in ["a", "b", "c"] {
        assert!(share.get(name).copied().unwrap_or(0) >= 50, "{share:?}");
    }

    // Remove c: its keys move, the others (nearly all) stay.
    apply(2, &[&a, &b]).unwrap();
    let after = owners(&mut client, &users).await;
    let stayed = users
        .iter()
        .filter(|u| before[*u] != "c")
        .filter(|u| before[*u] == after[*u])
        .count();
    let kept = users.iter().filter(|u| before[*u] != "c").count();
    assert!(after.values().all(|o| o != "c"));
    // Maglev is near-minimal: the paper's tables move well under 10% of the surviving keys.
    assert!(stayed * 100 >= kept * 90, "{stayed} of {kept} stayed");

    // Put c back: the table is the same as at first, so every key is home again.
    apply(3, &[&a, &b, &c]).unwrap();
    assert_eq!(owners(&mut client, &users).await, before);
    assert!(client.is_open());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_on_the_source_ip_pins_a_client() {
    let (a, b, c) = (echo("a").await, echo("b").await, echo("c").await);
    let (_engine, addr) = serve_backend(with_policy(
        backend("pinned", Http1, &[&a, &b, &c]),
        LbPolicy::RingHash {
            points_per_weight: 160,
            max_ring_size: 1 << 20,
        },
        Some(HashOn::SourceIp),
    ));
    let mut names = HashSet::new();
    for proto in BOTH {
        let mut client = Client::connect(proto, addr).await;
        for _ in 0..20 {
            names.insert(echo_name(&client.get("x", "/").await).to_owned());
        }
    }
    assert_eq!(
        names.len(),
        1,
        "one client address, one endpoint: {names:?}"
    );
}

/// Where a slow backend spends its time.
#[derive(Debug, Clone, Copy)]
enum Slow {
    /// Before the response head.
    Head,
    /// After the head, before the body ends (a long download or stream).
    Body,
}

/// A backend that takes `delay` over every request, with `x-echo-name: name`.
async fn slow_server(name: &'static str, delay: Duration, slow: Slow) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |_: Request<hyper::body::Incoming>| async move {
                        if let Slow::Head = slow {
                            tokio::time::sleep(delay).await;
                        }
                        let body = StreamBody::new(futures_util::stream::once(async move {
                            if let Slow::Body = slow {
                                tokio::time::sleep(delay).await;
                            }
                            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"slow")))
                        }));
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header(novaedge_echo::NAME_HEADER, name)
                                .body(body)
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_steers_away_from_a_slow_endpoint() {
    least_request_avoids(Slow::Head).await;
}

/// A request is load on its endpoint until its response body ends, not only until the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_counts_a_streaming_response_as_load() {
    least_request_avoids(Slow::Body).await;
}

async fn least_request_avoids(slow: Slow) {
    let (a, b) = (echo("a").await, echo("b").await);
    let slow = slow_server("slow", Duration::from_millis(300), slow).await;
    let mut endpoints: Vec<_> = [a.local_addr(), b.local_addr(), slow]
        .into_iter()
        .map(endpoint)
        .collect();
    endpoints.sort_by_key(|e| e.address);
    let mut backend = backend_at("mixed", Http1, endpoints);
    backend.load_balancing.policy = LbPolicy::LeastRequest { choices: 2 };
    let (_engine, addr) = serve_backend(backend);

    // 8 clients, 40 requests each. Round robin would send a third (about 107) to the slow
    // endpoint; least request sees its requests pile up and picks it only when both draws land
    // on it or it is idle.
    let counts = Arc::new(std::sync::Mutex::new(HashMap::<String, usize>::new()));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let counts = counts.clone();
        tasks.push(tokio::spawn(async move {
            let proto = if i % 2 == 0 { Proto::Http1 } else { Proto::H2c };
            let mut client = Client::connect(proto, addr).await;
            for _ in 0..40 {
                let response = client.get("x", "/").await;
                *counts
                    .lock()
                    .unwrap()
                    .entry(echo_name(&response).to_owned())
                    .or_default() += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let counts = counts.lock().unwrap().clone();
    let total: usize = counts.values().sum();
    let slow = counts.get("slow").copied().unwrap_or(0);
    assert_eq!(total, 320);
    assert!(
        slow * 100 < total * 15,
        "slow endpoint got {slow} of {total}: {counts:?}"
    );
}
