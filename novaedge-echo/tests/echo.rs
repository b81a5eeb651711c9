//! The echo server over real sockets: HTTP/1.1, h2c, WebSocket and gRPC
//! clients against a server on 127.0.0.1 with port 0.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, stream};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use novaedge_echo::{
    EchoServer, RequestInfo, SET_HEADER,
    proto::{EchoReply, EchoRequest, echo_client::EchoClient},
};
use tokio::{net::TcpStream, sync::mpsc};
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};
use tonic::{Code, metadata::MetadataMap, transport::Channel};

const NAME: &str = "echo-a";

async fn start() -> EchoServer {
    EchoServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), NAME)
        .await
        .expect("echo server starts")
}

/// Sends `request` over a fresh HTTP/1.1 connection; returns the response
/// with its body collected, and the client's address.
async fn http1(addr: SocketAddr, request: Request<Full<Bytes>>) -> (Response<Bytes>, SocketAddr) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    (collect(response).await, local)
}

/// Sends `request` over a fresh h2c (prior knowledge) connection.
async fn h2c(addr: SocketAddr, request: Request<Empty<Bytes>>) -> Response<Bytes> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    collect(response).await
}

async fn collect(response: Response<hyper::body::Incoming>) -> Response<Bytes> {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Response::from_parts(parts, body)
}

fn get(addr: SocketAddr, path_and_query: &str) -> Request<Full<Bytes>> {
    Request::get(path_and_query)
        .header(header::HOST, addr.to_string())
        .body(Full::default())
        .unwrap()
}

fn info(response: &Response<Bytes>) -> RequestInfo {
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/json",
        "{response:?}"
    );
    serde_json::from_slice(response.body()).expect("body is a RequestInfo")
}

async fn grpc_client(server: &EchoServer) -> EchoClient<Channel> {
    EchoClient::connect(format!("http://{}", server.local_addr()))
        .await
        .expect("gRPC channel connects")
}

fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
        ..EchoRequest::default()
    }
}

fn reply(message: &str, index: u32) -> EchoReply {
    EchoReply {
        message: message.to_owned(),
        server: NAME.to_owned(),
        index,
    }
}

fn server_metadata(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get("x-echo-server")
        .and_then(|value| value.to_str().ok())
}

// === plain HTTP ===

#[tokio::test]
async fn http1_request_is_described_back() {
    let server = start().await;
    let request = Request::post("/some/path?x=1&y=2")
        .header(header::HOST, "example.test")
        .header("x-test", "one")
        .header("x-test", "two")
        .body(Full::new(Bytes::from_static(b"hello world")))
        .unwrap();

    let (response, client_addr) = http1(server.local_addr(), request).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-echo-name"], NAME);
    let info = info(&response);
    assert_eq!(info.name, NAME);
    assert_eq!(info.method, "POST");
    assert_eq!(info.path, "/some/path");
    assert_eq!(info.query.as_deref(), Some("x=1&y=2"));
    assert_eq!(info.host.as_deref(), Some("example.test"));
    assert_eq!(info.version, "HTTP/1.1");
    assert_eq!(info.headers["x-test"], ["one", "two"]);
    assert_eq!(info.header("content-length"), Some("11"));
    assert_eq!(info.body_len, 11);
    assert_eq!(info.remote_addr, client_addr);
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn h2c_request_reports_http2() {
    let server = start().await;
    let addr = server.local_addr();
    let request = Request::get(format!("http://{addr}/over/h2?q"))
        .header("x-test", "h2")
        .body(Empty::new())
        .unwrap();

    let response = h2c(addr, request).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-echo-name"], NAME);
    let info = info(&response);
    assert_eq!(info.version, "HTTP/2.0");
    assert_eq!(info.method, "GET");
    assert_eq!(info.path, "/over/h2");
    assert_eq!(info.query.as_deref(), Some("q"));
    assert_eq!(info.host, Some(addr.to_string()));
    assert_eq!(info.header("x-test"), Some("h2"));
    assert_eq!(info.body_len, 0);
}

#[tokio::test]
async fn status_parameter_sets_the_status() {
    let server = start().await;
    let (response, _) = http1(
        server.local_addr(),
        get(server.local_addr(), "/?status=503"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(info(&response).query.as_deref(), Some("status=503"));
}

#[tokio::test]
async fn set_header_adds_response_headers() {
    let server = start().await;
    let mut request = get(server.local_addr(), "/");
    request.headers_mut().insert(
        SET_HEADER,
        "X-Header-Set:one,x-multi:a,X-Multi:b".parse().unwrap(),
    );
    let (response, _) = http1(server.local_addr(), request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-header-set"], "one");
    let multi: Vec<_> = response.headers().get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);

    let mut request = get(server.local_addr(), "/");
    request
        .headers_mut()
        .insert(SET_HEADER, "no-colon".parse().unwrap());
    let (response, _) = http1(server.local_addr(), request).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn size_parameter_returns_that_many_bytes() {
    let server = start().await;
    for size in [0usize, 1000, 100_000] {
        let (response, _) = http1(
            server.local_addr(),
            get(server.local_addr(), &format!("/bytes?size={size}")),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/octet-stream"
        );
        assert_eq!(response.headers()[header::CONTENT_LENGTH], size.to_string());
        assert_eq!(response.body().len(), size);
    }
}

#[tokio::test]
async fn malformed_parameters_are_refused() {
    let server = start().await;
    let (response, _) = http1(
        server.local_addr(),
        get(server.local_addr(), "/?delay_ms=soon"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.body(),
        "query parameter `delay_ms=soon`: expected a number of milliseconds\n"
    );
}

#[tokio::test(start_paused = true)]
async fn delay_parameter_waits_before_answering() {
    let server = start().await;
    let started = tokio::time::Instant::now();
    let (response, _) = http1(
        server.local_addr(),
        get(server.local_addr(), "/slow?delay_ms=200"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "answered after {:?}",
        started.elapsed()
    );
}

// === WebSocket ===

#[tokio::test]
async fn websocket_messages_are_echoed() {
    let server = start().await;
    let stream = TcpStream::connect(server.local_addr()).await.unwrap();
    let url = format!("ws://{}/ws", server.local_addr());
    let (mut socket, response) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("WebSocket handshake succeeds");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["x-echo-name"], NAME);

    socket.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("hello")
    );

    let binary = Message::binary(vec![0u8, 1, 2, 255]);
    socket.send(binary.clone()).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), binary);

    socket
        .send(Message::Ping(Bytes::from_static(b"p")))
        .await
        .unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::Pong(Bytes::from_static(b"p"))
    );

    socket.close(None).await.unwrap();
    assert!(matches!(
        socket.next().await,
        Some(Ok(Message::Close(_))) | None
    ));
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn shutdown_closes_websockets_and_the_listener() {
    let server = start().await;
    let addr = server.local_addr();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut socket, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
        .await
        .unwrap();
    // Make sure the upgrade is done before shutting down.
    socket.send(Message::text("ready")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("ready")
    );

    server.shutdown().await;

    match socket.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a Going Away close, got {other:?}"),
    }
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let server = start().await;
    let addr = server.local_addr();
    drop(server);
    // The server task is aborted, which takes effect when the runtime next
    // gets to it.
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{addr} still accepts connections after the handle was dropped");
}

#[tokio::test]
async fn serve_runs_until_its_shutdown_future_completes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(novaedge_echo::serve(
        listener,
        "cli".to_owned(),
        async move {
            let _ = stopped.await;
        },
    ));

    let (response, _) = http1(addr, get(addr, "/")).await;
    assert_eq!(info(&response).name, "cli");

    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn names_that_are_not_header_values_are_refused() {
    let error = EchoServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), "a\nb")
        .await
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}

// === gRPC ===

#[tokio::test]
async fn grpc_unary() {
    let server = start().await;
    let mut client = grpc_client(&server).await;

    let response = client.unary(request("hi")).await.unwrap();

    assert_eq!(server_metadata(response.metadata()), Some(NAME));
    assert_eq!(response.into_inner(), reply("hi", 0));
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn grpc_server_streaming() {
    let server = start().await;
    let mut client = grpc_client(&server).await;

    let response = client
        .server_stream(EchoRequest {
            count: 3,
            ..request("tick")
        })
        .await
        .unwrap();
    assert_eq!(server_metadata(response.metadata()), Some(NAME));
    let mut replies = response.into_inner();
    for index in 0..3 {
        assert_eq!(replies.message().await.unwrap(), Some(reply("tick", index)));
    }
    assert_eq!(replies.message().await.unwrap(), None);
    let trailers = replies.trailers().await.unwrap().expect("trailers");
    assert_eq!(server_metadata(&trailers), Some(NAME));
}

#[tokio::test]
async fn grpc_client_streaming() {
    let server = start().await;
    let mut client = grpc_client(&server).await;

    let requests = stream::iter([request("a"), request("b"), request("c")]);
    let response = client.client_stream(requests).await.unwrap();

    assert_eq!(server_metadata(response.metadata()), Some(NAME));
    assert_eq!(response.into_inner(), reply("abc", 3));
}

#[tokio::test]
async fn grpc_bidi_answers_each_message_as_it_arrives() {
    let server = start().await;
    let mut client = grpc_client(&server).await;
    let (requests, outbound) = mpsc::channel::<EchoRequest>(1);
    let outbound = stream::unfold(outbound, |mut outbound| async move {
        outbound.recv().await.map(|request| (request, outbound))
    });

    requests.send(request("one")).await.unwrap();
    let response = client.bidi(outbound).await.unwrap();
    assert_eq!(server_metadata(response.metadata()), Some(NAME));
    let mut replies = response.into_inner();
    assert_eq!(replies.message().await.unwrap(), Some(reply("one", 0)));
    // The second message is sent only after the first reply arrived.
    requests.send(request("two")).await.unwrap();
    assert_eq!(replies.message().await.unwrap(), Some(reply("two", 1)));
    drop(requests);
    assert_eq!(replies.message().await.unwrap(), None);
    let trailers = replies.trailers().await.unwrap().expect("trailers");
    assert_eq!(server_metadata(&trailers), Some(NAME));
}

#[tokio::test]
async fn grpc_fail_code_becomes_the_status() {
    let server = start().await;
    let mut client = grpc_client(&server).await;
    let failing = |code: Code| EchoRequest {
        fail_code: code as i32,
        count: 3,
        ..request("boom")
    };

    let status = client.unary(failing(Code::NotFound)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "requested failure");
    assert_eq!(server_metadata(status.metadata()), Some(NAME));

    let status = client
        .server_stream(failing(Code::Unavailable))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);

    let requests = stream::iter([request("fine"), failing(Code::PermissionDenied)]);
    let status = client.client_stream(requests).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let requests = stream::iter([request("fine"), failing(Code::ResourceExhausted)]);
    let mut replies = client.bidi(requests).await.unwrap().into_inner();
    assert_eq!(replies.message().await.unwrap(), Some(reply("fine", 0)));
    let status = replies.message().await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "requested failure");
}

#[tokio::test]
async fn every_kind_of_request_is_counted() {
    let server = start().await;
    let addr = server.local_addr();
    http1(addr, get(addr, "/")).await;
    h2c(
        addr,
        Request::get(format!("http://{addr}/"))
            .body(Empty::new())
            .unwrap(),
    )
    .await;
    grpc_client(&server)
        .await
        .unary(request("x"))
        .await
        .unwrap();
    assert_eq!(server.requests(), 3);
}
