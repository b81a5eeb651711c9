//! gRPC through the engine to an h2c backend: all four call kinds, status codes, and metadata
//! and trailers arriving at a tonic client.

mod common;

use std::net::SocketAddr;

use common::*;
use futures_util::stream;
use novaedge_echo::EchoServer;
use novaedge_echo::proto::echo_client::EchoClient;
use novaedge_echo::proto::{EchoReply, EchoRequest};
use novaedge_snapshot::UpstreamProtocol::{H2c, Http1};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// An engine sending the Echo service to an h2c backend named `grpc` and everything else to an
/// HTTP/1.1 backend named `plain`, and a tonic client connected to the proxy.
struct Setup {
    client: EchoClient<Channel>,
    grpc: EchoServer,
    _plain: EchoServer,
    _engine: novaedge_core::Engine,
    addr: SocketAddr,
}

async fn setup() -> Setup {
    let grpc = echo("grpc").await;
    let plain = echo("plain").await;
    let engine = engine();
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![route(
                "default/grpc",
                "web",
                &[],
                vec![
                    rule(vec![prefix("/novaedge.echo.v1.Echo")], &[("grpc", 1)]),
                    to("plain"),
                ],
            )],
            vec![
                backend("grpc", H2c, &[&grpc]),
                backend("plain", Http1, &[&plain]),
            ],
        ))
        .expect("snapshot applies");
    let addr = engine.local_addr("web").expect("listener is bound");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("valid URI")
        .connect()
        .await
        .expect("gRPC channel to the proxy");
    Setup {
        client: EchoClient::new(channel),
        grpc,
        _plain: plain,
        _engine: engine,
        addr,
    }
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
        server: "grpc".to_owned(),
        index,
    }
}

#[track_caller]
fn assert_server(metadata: &MetadataMap, what: &str) {
    assert_eq!(
        metadata
            .get(novaedge_echo::GRPC_SERVER_METADATA)
            .and_then(|v| v.to_str().ok()),
        Some("grpc"),
        "{what}: {metadata:?}"
    );
}

#[track_caller]
fn assert_failure(status: &Status, code: Code) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(status.message(), "requested failure", "{status:?}");
    assert_server(status.metadata(), "status metadata");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary() {
    let mut s = setup().await;
    for i in 0..3 {
        let message = format!("hello {i}");
        let response = s.client.unary(request(&message)).await.expect("unary call");
        assert_server(response.metadata(), "response metadata");
        assert_eq!(response.into_inner(), reply(&message, 0));
    }
    assert_eq!(s.grpc.requests(), 3);

    // The rest of the listener goes to the other backend: gRPC was routed by its path.
    let mut client = Client::connect(Proto::H2c, s.addr).await;
    assert_eq!(info(&client.get("x.test", "/").await).name, "plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming() {
    let mut s = setup().await;
    let response = s
        .client
        .server_stream(EchoRequest {
            count: 5,
            ..request("tick")
        })
        .await
        .expect("server streaming call");
    assert_server(response.metadata(), "response metadata");
    let mut replies = response.into_inner();
    let mut got = Vec::new();
    while let Some(reply) = replies.message().await.expect("stream message") {
        got.push(reply);
    }
    let want: Vec<EchoReply> = (0..5).map(|i| reply("tick", i)).collect();
    assert_eq!(got, want, "5 replies, in order");
    let trailers = replies
        .trailers()
        .await
        .expect("trailers")
        .expect("trailers present");
    assert_server(&trailers, "trailers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_streaming() {
    let mut s = setup().await;
    let requests = stream::iter(["ab", "cd", "ef", "g"].map(request));
    let response = s
        .client
        .client_stream(requests)
        .await
        .expect("client streaming call");
    assert_server(response.metadata(), "response metadata");
    assert_eq!(response.into_inner(), reply("abcdefg", 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_streaming() {
    let mut s = setup().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<EchoRequest>(1);
    let outbound = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let response = s.client.bidi(outbound).await.expect("bidi call");
    assert_server(response.metadata(), "response metadata");
    let mut replies = response.into_inner();
    // Strict ping-pong: each reply arrives before the next request is sent, so both directions
    // really stream through the proxy instead of being buffered to the end.
    for i in 0..5 {
        let message = format!("ping {i}");
        tx.send(request(&message)).await.expect("send");
        let got = replies
            .message()
            .await
            .expect("stream message")
            .expect("a reply");
        assert_eq!(got, reply(&message, i));
    }
    drop(tx);
    assert_eq!(replies.message().await.expect("end of stream"), None);
    let trailers = replies
        .trailers()
        .await
        .expect("trailers")
        .expect("trailers present");
    assert_server(&trailers, "trailers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_reach_the_client() {
    let mut s = setup().await;
    for (fail_code, code) in [
        (5, Code::NotFound),
        (7, Code::PermissionDenied),
        (14, Code::Unavailable),
    ] {
        let failing = EchoRequest {
            fail_code,
            ..request("x")
        };
        let status = s.client.unary(failing.clone()).await.unwrap_err();
        assert_failure(&status, code);
        let status = s
            .client
            .server_stream(EchoRequest {
                count: 3,
                ..failing.clone()
            })
            .await
            .unwrap_err();
        assert_failure(&status, code);
        // Client streaming: the failure comes after two good messages.
        let requests = stream::iter([request("a"), request("b"), failing]);
        let status = s.client.client_stream(requests).await.unwrap_err();
        assert_failure(&status, code);
    }
    // The channel is still fine after failed calls.
    let response = s.client.unary(request("after")).await.expect("unary call");
    assert_eq!(response.into_inner(), reply("after", 0));
}
