//! Passive health with no configuration: a request that cannot connect to an endpoint goes to
//! another one, so a client never sees a 502 for a dead endpoint while a live one exists; an
//! endpoint killed under load costs only the requests that were on their way to it.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// The error bound of a killed endpoint under load, with default (passive-only) health: only
/// requests that were already on their way to it when it died can fail, which is at most one
/// per client connection; everything after goes elsewhere (connect failures are re-dispatched,
/// and three of them in a row eject the endpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_endpoint_is_ejected_passively_and_costs_at_most_the_requests_in_flight() {
    const CLIENTS: usize = 8;
    let (a, b, c) = (echo("a").await, echo("b").await, echo("c").await);
    let (_engine, addr) = serve_backend(backend("app", UpstreamProtocol::Http1, &[&a, &b, &c]));

    let stop = Arc::new(AtomicBool::new(false));
    // (time, status) of every response, per client.
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let proto = if i % 2 == 0 { Proto::Http1 } else { Proto::H2c };
            let mut client = Client::connect(proto, addr).await;
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let response = client.get("app", "/?delay_ms=2").await;
                seen.push((Instant::now(), response.status()));
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served_b = b.requests();
    assert!(served_b > 0, "b got no traffic before the kill");
    drop(b); // the listener and every connection close at once
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);

    let mut total = 0;
    let mut failed = Vec::new();
    for client in clients {
        for (at, status) in client.await.unwrap() {
            total += 1;
            if status != StatusCode::OK {
                failed.push((at.saturating_duration_since(killed_at), status));
            }
        }
    }
    assert!(
        failed.len() <= CLIENTS,
        "{} of {total} requests failed, bound {CLIENTS}: {failed:?}",
        failed.len()
    );
    // Failures only right around the kill; after that, nothing.
    assert!(
        failed
            .iter()
            .all(|(after, _)| *after < Duration::from_millis(500)),
        "late failures: {failed:?}"
    );
    assert!(a.requests() > 0 && c.requests() > 0);
}
