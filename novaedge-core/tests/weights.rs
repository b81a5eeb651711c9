//! Weighted backends: over many requests each backend of a rule gets its weight's share of the
//! traffic, with concurrent HTTP/1.1 and h2c clients.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use common::*;
use http::StatusCode;
use novaedge_echo::EchoServer;
use novaedge_snapshot::UpstreamProtocol::Http1;

const REQUESTS: usize = 10_000;
const TASKS: usize = 8;

/// Sends [`REQUESTS`] requests for `host` from [`TASKS`] concurrent clients, half HTTP/1.1 and
/// half h2c, each on one keep-alive connection; returns how many each backend answered.
async fn spread(addr: SocketAddr, host: &'static str) -> BTreeMap<String, usize> {
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let proto = BOTH[i % 2];
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(proto, addr).await;
            let mut seen = BTreeMap::<String, usize>::new();
            for _ in 0..REQUESTS / TASKS {
                let response = client.get(host, "/?size=0").await;
                assert_eq!(response.status(), StatusCode::OK, "{response:?}");
                *seen.entry(echo_name(&response).to_owned()).or_default() += 1;
            }
            assert!(client.is_open(), "{proto:?} connection closed");
            seen
        }));
    }
    let mut total = BTreeMap::new();
    for task in tasks {
        for (name, n) in task.await.expect("client task") {
            *total.entry(name).or_default() += n;
        }
    }
    total
}

/// Asserts that each backend's share is within 5% (relative) of its weight's share.
#[track_caller]
fn assert_shares(seen: &BTreeMap<String, usize>, weights: &[(&str, u32)]) {
    let sum: u32 = weights.iter().map(|(_, w)| w).sum();
    let served: usize = seen.values().sum();
    assert_eq!(served, REQUESTS, "{seen:?}");
    assert_eq!(seen.len(), weights.len(), "unexpected backends: {seen:?}");
    for (name, weight) in weights {
        let expected = REQUESTS as f64 * f64::from(*weight) / f64::from(sum);
        let observed = seen.get(*name).copied().unwrap_or(0) as f64;
        assert!(
            (observed - expected).abs() <= 0.05 * expected,
            "backend {name}: {observed} requests, expected {expected} +- 5%: {seen:?}"
        );
    }
}

async fn weighted(weights: &'static [(&'static str, u32)]) {
    let mut servers: Vec<EchoServer> = Vec::new();
    for (name, _) in weights {
        servers.push(echo(name).await);
    }
    let engine = engine();
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![route(
                "default/split",
                "web",
                &["split.test"],
                vec![rule(Vec::new(), weights)],
            )],
            servers
                .iter()
                .map(|s| backend(s.name(), Http1, &[s]))
                .collect(),
        ))
        .expect("snapshot applies");
    let addr = engine.local_addr("web").expect("listener is bound");

    let seen = spread(addr, "split.test").await;
    assert_shares(&seen, weights);
    // What the proxy counted is what the backends received.
    for server in &servers {
        assert_eq!(server.requests() as usize, seen[server.name()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_weighted_3_to_1() {
    weighted(&[("three", 3), ("one", 1)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_weighted_70_20_10() {
    weighted(&[("seventy", 70), ("twenty", 20), ("ten", 10)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_of_one_backend_weighted_2_to_1() {
    let heavy = echo("heavy").await;
    let light = echo("light").await;
    let mut b = backend("pool", Http1, &[&heavy, &light]);
    b.endpoints[0].weight = 2;
    let engine = engine();
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![route("default/pool", "web", &[], vec![to("pool")])],
            vec![b],
        ))
        .expect("snapshot applies");
    let addr = engine.local_addr("web").expect("listener is bound");

    let seen = spread(addr, "pool.test").await;
    assert_shares(&seen, &[("heavy", 2), ("light", 1)]);
}

/// Gateway API: the share of a rule's weight that belongs to backend references that could not
/// be resolved is answered 500; the rest still reaches the valid backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolved_backend_weight_is_answered_500() {
    let valid = echo("valid").await;
    let mut split = rule(Vec::new(), &[("valid", 1)]);
    split.invalid_backend_weight = 3;
    let mut only_invalid = rule(vec![prefix("/gone")], &[]);
    only_invalid.invalid_backend_weight = 1;
    let engine = engine();
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![route(
                "default/split",
                "web",
                &[],
                vec![only_invalid, split],
            )],
            vec![backend("valid", Http1, &[&valid])],
        ))
        .expect("snapshot applies");
    let addr = engine.local_addr("web").expect("listener is bound");

    let mut client = Client::connect(BOTH[0], addr).await;
    let mut statuses = BTreeMap::<u16, usize>::new();
    for _ in 0..400 {
        let response = client.get("split.test", "/?size=0").await;
        *statuses.entry(response.status().as_u16()).or_default() += 1;
    }
    // The schedule is exact over each cycle of 4 picks.
    assert_eq!(statuses, BTreeMap::from([(200, 100), (500, 300)]));
    assert_eq!(valid.requests(), 100);
    for _ in 0..3 {
        let response = client.get("split.test", "/gone/x").await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert!(
        client.is_open(),
        "a 500 for an unresolved backend keeps the connection"
    );
}
