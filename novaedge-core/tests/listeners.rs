//! Listener changes across snapshots, and snapshots that fail to apply: a moved listener binds
//! its new port and lets go of the old one, and a failed apply changes nothing at all.

mod common;

use std::io::ErrorKind;
use std::net::SocketAddr;

use common::*;
use novaedge_core::{ApplyError, Engine};
use novaedge_echo::EchoServer;
use novaedge_snapshot::{ConfigSnapshot, Listener, UpstreamProtocol::Http1};
use tokio::net::TcpStream;

/// Listener `web` as given, routing every request to `target` (`a` or `b`).
fn config(
    version: u64,
    web: Listener,
    target: &str,
    a: &EchoServer,
    b: &EchoServer,
) -> ConfigSnapshot {
    snapshot(
        version,
        vec![web],
        vec![route("default/app", "web", &[], vec![to(target)])],
        vec![backend("a", Http1, &[a]), backend("b", Http1, &[b])],
    )
}

#[track_caller]
fn assert_refused(result: std::io::Result<TcpStream>, what: &str) {
    match result {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{what}: {e}"),
        Ok(stream) => panic!("{what}: connection accepted by {:?}", stream.peer_addr()),
    }
}

fn two_free_ports() -> (u16, u16) {
    let one = free_port();
    let mut two = free_port();
    while two == one {
        two = free_port();
    }
    (one, two)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_moved_to_another_port_leaves_the_old_one() {
    let a = echo("a").await;
    let b = echo("b").await;
    let (p1, p2) = two_free_ports();
    let at = |port| SocketAddr::new(LOCALHOST, port);
    let engine = engine();

    engine
        .apply(&config(1, listener_on("web", p1), "a", &a, &b))
        .expect("snapshot 1 applies");
    assert_eq!(engine.local_addr("web"), Some(at(p1)));
    let mut old = Client::connect(Proto::Http1, at(p1)).await;
    assert_eq!(info(&old.get("x.test", "/").await).name, "a");

    engine
        .apply(&config(2, listener_on("web", p2), "b", &a, &b))
        .expect("snapshot 2 applies");
    assert_refused(TcpStream::connect(at(p1)).await, "old port after the move");
    assert_eq!(engine.local_addr("web"), Some(at(p2)));
    for proto in BOTH {
        let mut client = Client::connect(proto, at(p2)).await;
        assert_eq!(info(&client.get("x.test", "/").await).name, "b");
    }
    // The idle connection accepted on the old port is closed, not left dangling.
    old.closed().await.expect("closed cleanly");

    // Back and forth between the two ports, checking each old port at once: it must refuse
    // connections as soon as `apply` returns, and be free to bind again straight away.
    let mut version = 2;
    for (from, to) in [(p2, p1), (p1, p2)].repeat(10) {
        version += 1;
        engine
            .apply(&config(version, listener_on("web", to), "a", &a, &b))
            .unwrap_or_else(|e| panic!("snapshot {version} moves the listener back: {e}"));
        assert_refused(
            TcpStream::connect(at(from)).await,
            "old port right after apply",
        );
        assert_eq!(engine.local_addr("web"), Some(at(to)));
    }
    let mut client = Client::connect(Proto::H2c, at(p2)).await;
    assert_eq!(info(&client.get("x.test", "/").await).name, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_listener_gets_a_socket_of_its_own() {
    let a = echo("a").await;
    let b = echo("b").await;
    let engine = engine();
    engine
        .apply(&config(1, listener("web"), "a", &a, &b))
        .expect("snapshot 1 applies");
    let first = engine.local_addr("web").expect("web is bound");

    let mut renamed = config(2, listener("web2"), "b", &a, &b);
    renamed.routes[0].listener = "web2".to_owned();
    engine.apply(&renamed).expect("snapshot 2 applies");
    assert_eq!(engine.local_addr("web"), None);
    let second = engine.local_addr("web2").expect("web2 is bound");
    assert_ne!(first, second);
    assert_refused(TcpStream::connect(first).await, "the old listener's port");
    let mut client = Client::connect(Proto::Http1, second).await;
    assert_eq!(info(&client.get("x.test", "/").await).name, "b");
}

/// Asserts that snapshot 1 still serves: its version, its listener, and routes to `a` on the
/// same open connections.
async fn unchanged(engine: &Engine, addr: SocketAddr, clients: &mut [Client], what: &str) {
    assert_eq!(engine.version(), Some(1), "{what}");
    assert_eq!(engine.local_addr("web"), Some(addr), "{what}");
    for client in clients {
        let proto = client.proto();
        assert_eq!(
            info(&client.get("x.test", "/").await).name,
            "a",
            "{what}: {proto:?}"
        );
        assert!(client.is_open(), "{what}: {proto:?} connection closed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_apply_changes_nothing() {
    let a = echo("a").await;
    let b = echo("b").await;
    let engine = engine();
    engine
        .apply(&config(1, listener("web"), "a", &a, &b))
        .expect("snapshot 1 applies");
    let addr = engine.local_addr("web").expect("web is bound");
    let mut clients = Vec::new();
    for proto in BOTH {
        let mut client = Client::connect(proto, addr).await;
        assert_eq!(info(&client.get("x.test", "/").await).name, "a");
        clients.push(client);
    }
    // Invalid: a rule names a backend that does not exist. The valid part (route to b) must not
    // be applied either.
    let mut invalid = config(2, listener("web"), "b", &a, &b);
    invalid.routes[0].rules.push(to("missing"));
    match engine.apply(&invalid) {
        Err(ApplyError::Invalid(errors)) => {
            assert_eq!(errors.errors().len(), 1, "{errors}");
            let error = &errors.errors()[0];
            assert_eq!(error.field, "rules[1].backends[0].backend", "{errors}");
            assert!(error.message.contains("\"missing\""), "{errors}");
            assert!(error.object.contains("default/app"), "{errors}");
        }
        other => panic!("expected ApplyError::Invalid, got {other:?}"),
    }
    unchanged(&engine, addr, &mut clients, "after an invalid snapshot").await;

    // A port that is taken: nothing changes, not even the listener that could be bound.
    let taken = std::net::TcpListener::bind(SocketAddr::new(LOCALHOST, 0)).unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let free = SocketAddr::new(LOCALHOST, free_port());
    let mut busy = config(3, listener("web"), "b", &a, &b);
    busy.listeners.push(listener_on("also", free.port()));
    busy.listeners.push(listener_on("busy", taken_addr.port()));
    match engine.apply(&busy) {
        Err(ApplyError::Bind { listener, addr, .. }) => {
            assert_eq!(listener, "busy");
            assert_eq!(addr, taken_addr);
        }
        other => panic!("expected ApplyError::Bind, got {other:?}"),
    }
    assert_eq!(engine.local_addr("busy"), None);
    assert_eq!(engine.local_addr("also"), None);
    assert_refused(
        TcpStream::connect(free).await,
        "listener of the failed snapshot",
    );
    unchanged(&engine, addr, &mut clients, "after a bind failure").await;
    // The socket bound before the failure was let go: its port is free again.
    drop(std::net::TcpListener::bind(free).expect("port of the failed snapshot is free"));

    // A good snapshot after the failures applies, on the same connections.
    drop(taken);
    busy.version = 4;
    engine.apply(&busy).expect("snapshot 4 applies");
    assert_eq!(engine.version(), Some(4));
    for client in &mut clients {
        assert_eq!(info(&client.get("x.test", "/").await).name, "b");
        assert!(client.is_open());
    }
    // The listener that could not be bound before is bound now; no route attaches to it.
    assert_eq!(engine.local_addr("busy"), Some(taken_addr));
    let mut client = Client::connect(Proto::Http1, taken_addr).await;
    assert_eq!(client.get("x.test", "/").await.status(), 404);
}
