//! WebSockets through the engine: the HTTP/1.1 upgrade is routed like any request, then the
//! connection is spliced byte for byte, and a reload does not touch it.

mod common;

use std::net::SocketAddr;

use common::*;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use novaedge_snapshot::UpstreamProtocol::Http1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket to `url` through the proxy at `addr`; returns it and the name of the
/// backend that accepted it.
async fn open(addr: SocketAddr, url: &str) -> (Ws, String) {
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    let (ws, response) = tokio_tungstenite::client_async(url, stream)
        .await
        .unwrap_or_else(|e| panic!("WebSocket handshake for {url}: {e}"));
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let name = response.headers()[novaedge_echo::NAME_HEADER]
        .to_str()
        .expect("ASCII name")
        .to_owned();
    (ws, name)
}

/// Sends `message` and expects it back unchanged.
async fn round_trip(ws: &mut Ws, message: Message) {
    ws.send(message.clone()).await.expect("send");
    let echoed = ws
        .next()
        .await
        .expect("WebSocket still open")
        .expect("WebSocket read");
    assert_eq!(echoed, message);
}

/// Text and binary messages of several sizes, tagged with `round`.
async fn exchange(ws: &mut Ws, round: u32) {
    round_trip(ws, Message::text(format!("hello {round}"))).await;
    round_trip(ws, Message::binary(vec![round as u8; 10 + round as usize])).await;
    round_trip(ws, Message::text("é".repeat(1000 + round as usize))).await;
}

/// Closes from the client side and expects the server's close reply, then the end.
async fn close(mut ws: Ws) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    };
    ws.close(Some(frame.clone())).await.expect("send close");
    match ws.next().await {
        Some(Ok(Message::Close(Some(reply)))) => assert_eq!(reply.code, CloseCode::Normal),
        other => panic!("expected the close reply, got {other:?}"),
    }
    match ws.next().await {
        None | Some(Err(tungstenite::Error::ConnectionClosed)) => {}
        other => panic!("expected the end of the WebSocket, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_flow_both_ways() {
    let chat = echo("chat").await;
    let web = echo("web").await;
    let engine = engine();
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![
                route("default/chat", "web", &["chat.test"], vec![to("chat")]),
                route("default/web", "web", &[], vec![to("web")]),
            ],
            vec![
                backend("chat", Http1, &[&chat]),
                backend("web", Http1, &[&web]),
            ],
        ))
        .expect("snapshot applies");
    let addr = engine.local_addr("web").expect("listener is bound");

    let (mut ws, name) = open(addr, "ws://chat.test/socket").await;
    assert_eq!(name, "chat", "routed by host");
    for round in 0..5 {
        exchange(&mut ws, round).await;
    }
    // A message larger than any socket buffer.
    round_trip(&mut ws, Message::binary(vec![7u8; 512 * 1024])).await;
    close(ws).await;

    // Several at once, on the other route, interleaved.
    let (mut first, name_1) = open(addr, "ws://any.test/").await;
    let (mut second, name_2) = open(addr, "ws://any.test/").await;
    assert_eq!((name_1.as_str(), name_2.as_str()), ("web", "web"));
    for round in 0..3 {
        exchange(&mut first, round).await;
        exchange(&mut second, round + 10).await;
    }
    close(first).await;
    close(second).await;
    assert_eq!(chat.requests(), 1);
    assert_eq!(web.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_survives_reloads() {
    let chat = echo("chat").await;
    let other = echo("other").await;
    let engine = engine();
    let backends = || {
        vec![
            backend("chat", Http1, &[&chat]),
            backend("other", Http1, &[&other]),
        ]
    };
    let chat_route = || route("default/chat", "web", &["chat.test"], vec![to("chat")]);
    let other_route = || route("default/other", "web", &["other.test"], vec![to("other")]);
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![chat_route()],
            backends(),
        ))
        .expect("snapshot 1 applies");
    let addr = engine.local_addr("web").expect("listener is bound");

    let (mut ws, name) = open(addr, "ws://chat.test/").await;
    assert_eq!(name, "chat");
    exchange(&mut ws, 0).await;

    // A route is added: it serves at once, and the WebSocket goes on.
    engine
        .apply(&snapshot(
            2,
            vec![listener("web")],
            vec![chat_route(), other_route()],
            backends(),
        ))
        .expect("snapshot 2 applies");
    assert_eq!(engine.local_addr("web"), Some(addr), "the listener stays");
    let mut client = Client::connect(Proto::Http1, addr).await;
    assert_eq!(info(&client.get("other.test", "/").await).name, "other");
    for round in 1..4 {
        exchange(&mut ws, round).await;
    }

    // The WebSocket's own route is removed: new upgrades get a 404, the open one goes on.
    engine
        .apply(&snapshot(
            3,
            vec![listener("web")],
            vec![other_route()],
            backends(),
        ))
        .expect("snapshot 3 applies");
    let response = client.get("chat.test", "/").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    match tokio_tungstenite::client_async("ws://chat.test/", stream).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
        }
        other => panic!("expected a 404 for the removed route, got {other:?}"),
    }
    for round in 4..8 {
        exchange(&mut ws, round).await;
    }
    assert_eq!(engine.version(), Some(3));
    close(ws).await;
    assert_eq!(chat.requests(), 1, "the WebSocket never reconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_opens_on_a_parked_connection() {
    let chat = echo("chat").await;
    let config = novaedge_core::EngineConfig {
        park_after: std::time::Duration::from_millis(50),
        ..novaedge_core::EngineConfig::default()
    };
    let (_engine, addr) = serve_backend_with(config, backend("chat", Http1, &[&chat]));

    // A plain request first, then a pause long enough to park the connection.
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    stream
        .write_all(b"GET /plain HTTP/1.1\r\nHost: chat.test\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = stream.read_u8().await.expect("a response head");
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    let length = content_length(&head);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.expect("the body");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // The upgrade wakes it.
    let (mut ws, response) = tokio_tungstenite::client_async("ws://chat.test/", stream)
        .await
        .expect("WebSocket handshake on the parked connection");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for round in 0..3 {
        exchange(&mut ws, round).await;
    }
    close(ws).await;
    assert_eq!(chat.requests(), 2);
}
