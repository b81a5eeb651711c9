//! Passive health with no configuration: a request that cannot connect to an endpoint goes to
//! another one, so a client never sees a 502 for a dead endpoint while a live one exists.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::*;
use http::StatusCode;
use novaedge_snapshot::{HashOn, LbPolicy, UpstreamProtocol};

async fn dead_endpoint_is_invisible(protocol: UpstreamProtocol, hashed: bool) {
    let (a, b) = (echo("a").await, echo("b").await);
    // Bound and released: connections to it are refused.
    let dead = std::net::SocketAddr::new(LOCALHOST, free_port());
    let mut endpoints: Vec<_> = [a.local_addr(), dead, b.local_addr()]
        .into_iter()
        .map(endpoint)
        .collect();
    endpoints.sort_by_key(|e| e.address);
    let mut backend = backend_at("mixed", protocol, endpoints);
    if hashed {
        backend.load_balancing.policy = LbPolicy::Maglev { table_size: 65_537 };
        backend.load_balancing.hash_on = Some(HashOn::QueryParam("user".into()));
    }
    let (_engine, addr) = serve_backend(backend);

    let statuses = Arc::new(Mutex::new(HashMap::<u16, usize>::new()));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let statuses = statuses.clone();
        tasks.push(tokio::spawn(async move {
            let proto = if i % 2 == 0 { Proto::Http1 } else { Proto::H2c };
            let mut client = Client::connect(proto, addr).await;
            for j in 0..50 {
                let response = client.get("x", &format!("/?user=u{i}-{j}")).await;
                *statuses
                    .lock()
                    .unwrap()
                    .entry(response.status().as_u16())
                    .or_default() += 1;
                if response.status() == StatusCode::OK {
                    assert!(["a", "b"].contains(&echo_name(&response)));
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let statuses = statuses.lock().unwrap().clone();
    assert_eq!(
        statuses,
        HashMap::from([(200, 300)]),
        "{protocol:?} hashed={hashed}"
    );
    assert_eq!(a.requests() + b.requests(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_go_to_another_endpoint_http1() {
    dead_endpoint_is_invisible(UpstreamProtocol::Http1, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_go_to_another_endpoint_h2c() {
    dead_endpoint_is_invisible(UpstreamProtocol::H2c, false).await;
}

/// Keys that hash to the dead endpoint are rehashed onto a live one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_go_to_another_endpoint_when_hashing() {
    dead_endpoint_is_invisible(UpstreamProtocol::Http1, true).await;
}
