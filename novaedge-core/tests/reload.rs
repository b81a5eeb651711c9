//! Reloads under load: clients keep sending on long-lived HTTP/1.1 and h2c connections while
//! snapshot after snapshot is applied, and not one request fails nor one connection closes.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use http::{Method, StatusCode};
use http_body_util::Full;
use novaedge_echo::EchoServer;
use novaedge_snapshot::ConfigSnapshot;
use novaedge_snapshot::UpstreamProtocol::{H2c, Http1};
use tokio::sync::watch;

const CLIENTS: usize = 8;
const RELOADS: u64 = 100;
/// Responses to wait for between two reloads, so that every reload lands among requests.
const RESPONSES_PER_RELOAD: u64 = 20;
const NAMES: [&str; 3] = ["a", "b", "c"];

/// Snapshot `version`: one of four variants that change weights, add and remove a route, and
/// add and remove endpoints of an HTTP/1.1 and an h2c backend, among backends that all live.
/// Every variant routes `app.test` somewhere.
fn variant(version: u64, servers: &[EchoServer; 3]) -> ConfigSnapshot {
    let [a, b, c] = servers;
    // Endpoints of the HTTP/1.1 backend `pool` and of the h2c backend `h2`, the weights of
    // the two in the app's rule, and whether the extra route exists.
    let (pool, h2, weights, extra) = match version % 4 {
        0 => (vec![a, b], vec![c], &[("pool", 1)][..], false),
        1 => (vec![a, b, c], vec![c], &[("pool", 3), ("h2", 1)][..], true),
        2 => (vec![b, c], vec![a, c], &[("pool", 1), ("h2", 1)][..], false),
        _ => (vec![a], vec![a, b, c], &[("h2", 1)][..], true),
    };
    let mut routes = vec![route(
        "default/app",
        "web",
        &["app.test"],
        vec![rule(Vec::new(), weights)],
    )];
    if extra {
        routes.push(route(
            "default/extra",
            "web",
            &["extra.test"],
            vec![to("h2")],
        ));
    }
    snapshot(
        version,
        vec![listener("web")],
        routes,
        vec![backend("pool", Http1, &pool), backend("h2", H2c, &h2)],
    )
}

/// What one client task did.
struct Outcome {
    proto: Proto,
    ok: u64,
    failure: Option<String>,
    open: bool,
}

/// Sends requests for `app.test` on one connection until `stop`, counting each good response
/// in `progress`. The first failure ends the task and is reported.
async fn client(
    proto: Proto,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    progress: Arc<watch::Sender<u64>>,
) -> Outcome {
    let mut client = Client::connect(proto, addr).await;
    let mut ok = 0;
    while !stop.load(Ordering::Relaxed) {
        let req = client
            .request(Method::GET, "app.test", &format!("/load?n={ok}"))
            .body(Full::default())
            .expect("valid request");
        let failure = match client.send(req).await {
            Ok(response)
                if response.status() == StatusCode::OK
                    && response
                        .headers()
                        .get(novaedge_echo::NAME_HEADER)
                        .is_some_and(|name| NAMES.iter().any(|n| name == n)) =>
            {
                ok += 1;
                progress.send_modify(|n| *n += 1);
                continue;
            }
            Ok(response) => format!("{proto:?} request {ok}: bad response {response:?}"),
            Err(e) => format!("{proto:?} request {ok}: {e}"),
        };
        return Outcome {
            proto,
            ok,
            failure: Some(failure),
            open: client.is_open(),
        };
    }
    Outcome {
        proto,
        ok,
        failure: None,
        open: client.is_open(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_request_and_close_no_connection() {
    let servers = [echo("a").await, echo("b").await, echo("c").await];
    let engine = engine();
    engine
        .apply(&variant(0, &servers))
        .expect("first snapshot applies");
    let addr = engine.local_addr("web").expect("listener is bound");

    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(watch::Sender::new(0u64));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let proto = BOTH[i % 2];
            tokio::spawn(client(proto, addr, stop.clone(), progress.clone()))
        })
        .collect();

    let mut seen = progress.subscribe();
    for version in 1..=RELOADS {
        // Progress, not time: the clients must have been served between two reloads. The
        // timeout only turns a hang into a failure.
        let target = *seen.borrow() + RESPONSES_PER_RELOAD;
        let waited = tokio::time::timeout(Duration::from_secs(20), seen.wait_for(|n| *n >= target))
            .await
            .map(|r| r.map(drop));
        assert!(
            matches!(waited, Ok(Ok(()))),
            "clients stopped making progress before reload {version}"
        );
        engine
            .apply(&variant(version, &servers))
            .unwrap_or_else(|e| panic!("snapshot {version}: {e}"));
        assert_eq!(engine.version(), Some(version));
        assert_eq!(engine.local_addr("web"), Some(addr), "listener kept");
    }
    // And some more on the last snapshot.
    let target = *seen.borrow() + RESPONSES_PER_RELOAD;
    let _ = tokio::time::timeout(Duration::from_secs(20), seen.wait_for(|n| *n >= target)).await;
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    let mut failures = Vec::new();
    for task in tasks {
        let outcome = task.await.expect("client task");
        total += outcome.ok;
        if let Some(failure) = outcome.failure {
            failures.push(failure);
        } else if !outcome.open {
            failures.push(format!("{:?} connection was closed", outcome.proto));
        } else if outcome.ok == 0 {
            failures.push(format!("{:?} client was never served", outcome.proto));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        total >= RELOADS * RESPONSES_PER_RELOAD,
        "only {total} requests overlapped the reloads"
    );
    // Every response came from a backend, and every request a backend saw was answered.
    let served: u64 = servers.iter().map(EchoServer::requests).sum();
    assert_eq!(served, total);
    for server in &servers {
        assert!(server.requests() > 0, "{} never served", server.name());
    }

    // The last snapshot (version 100: variant 0) is what serves now.
    let mut fresh = Client::connect(Proto::Http1, addr).await;
    for _ in 0..4 {
        let name = info(&fresh.get("app.test", "/").await).name;
        assert!(
            name == "a" || name == "b",
            "variant 0 sends to a and b, not {name}"
        );
    }
    assert_eq!(
        fresh.get("extra.test", "/").await.status(),
        StatusCode::NOT_FOUND
    );
}
