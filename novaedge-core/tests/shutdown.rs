//! Graceful shutdown: requests in flight finish, no new connection is accepted, and what is
//! still open at the deadline is cut.

mod common;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Method, StatusCode};
use http_body_util::Full;
use novaedge_core::{ApplyError, Engine};
use novaedge_echo::EchoServer;
use novaedge_snapshot::UpstreamProtocol::Http1;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

async fn start(server: &EchoServer) -> (Engine, SocketAddr) {
    let engine = engine();
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![route("default/app", "web", &[], vec![to("app")])],
            vec![backend("app", Http1, &[server])],
        ))
        .expect("snapshot applies");
    let addr = engine.local_addr("web").expect("listener is bound");
    (engine, addr)
}

/// Waits until `server` has received `n` requests, i.e. until they are in flight behind the
/// proxy. Yields instead of sleeping; the timeout only turns a hang into a failure.
async fn in_flight(server: &EchoServer, n: u64) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while server.requests() < n {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("requests reach the backend");
}

#[track_caller]
fn assert_refused(result: std::io::Result<TcpStream>, what: &str) {
    match result {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{what}: {e}"),
        Ok(stream) => panic!("{what}: connection accepted by {:?}", stream.peer_addr()),
    }
}

/// Sends `GET path` on a new connection of `proto`, in a task.
fn spawn_get(
    proto: Proto,
    addr: SocketAddr,
    path: &'static str,
) -> tokio::task::JoinHandle<Result<http::Response<bytes::Bytes>, hyper::Error>> {
    tokio::spawn(async move {
        let mut client = Client::connect(proto, addr).await;
        let req = client
            .request(Method::GET, "app.test", path)
            .body(Full::default())
            .unwrap();
        client.send(req).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish() {
    let app = echo("app").await;
    let (engine, addr) = start(&app).await;

    // An idle keep-alive connection, and a slow request on each protocol.
    let mut idle = Client::connect(Proto::Http1, addr).await;
    assert_eq!(info(&idle.get("app.test", "/").await).name, "app");
    let slow = [Proto::Http1, Proto::H2c].map(|proto| spawn_get(proto, addr, "/?delay_ms=500"));
    in_flight(&app, 3).await;

    let shutdown = engine.shutdown(Duration::from_secs(5));
    tokio::pin!(shutdown);
    // Poll the shutdown once: the listeners close at once, before the drain is over.
    let early = tokio::select! {
        biased;
        report = &mut shutdown => Some(report),
        () = std::future::ready(()) => None,
    };
    assert_refused(TcpStream::connect(addr).await, "during the drain");
    let report = match early {
        Some(report) => report,
        None => shutdown.await,
    };
    assert!(report.drained, "{report:?}");

    for (proto, task) in [Proto::Http1, Proto::H2c].into_iter().zip(slow) {
        let response = task
            .await
            .expect("client task")
            .unwrap_or_else(|e| panic!("{proto:?} slow request failed: {e}"));
        let seen = info(&response);
        assert_eq!(seen.name, "app", "{proto:?}");
        assert_eq!(seen.query.as_deref(), Some("delay_ms=500"), "{proto:?}");
    }
    assert_refused(TcpStream::connect(addr).await, "after the shutdown");
    idle.closed()
        .await
        .expect("the idle connection is closed cleanly");
    assert_eq!(engine.local_addr("web"), None);
    assert_eq!(app.requests(), 3);

    let again = snapshot(2, vec![listener("web")], Vec::new(), Vec::new());
    assert!(matches!(engine.apply(&again), Err(ApplyError::ShutDown)));
    assert_eq!(engine.version(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_what_is_left_at_the_deadline() {
    let app = echo("app").await;
    let (engine, addr) = start(&app).await;

    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://app.test/", stream)
        .await
        .expect("WebSocket handshake");
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));
    // Far longer than the test may take.
    let stuck = spawn_get(Proto::H2c, addr, "/?delay_ms=600000");
    in_flight(&app, 2).await;

    let report = engine.shutdown(Duration::from_millis(200)).await;
    assert!(!report.drained, "{report:?}");

    // Both were cut: the WebSocket carries nothing more and ends, and the request fails
    // instead of being answered. (The send may or may not notice the cut yet.)
    let _ = ws.send(Message::text("after")).await;
    // The timeouts only turn a hang into a failure.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        // A message may have been in flight; what matters is that the stream ends.
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Close(_))) => {}
                Some(Ok(other)) => panic!("WebSocket still carries {other:?}"),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the WebSocket was not cut");
    let stuck = tokio::time::timeout(Duration::from_secs(20), stuck)
        .await
        .expect("the stuck request was not cut")
        .expect("client task");
    match stuck {
        Err(_) => {}
        Ok(response) => assert_ne!(response.status(), StatusCode::OK, "{response:?}"),
    }
}
