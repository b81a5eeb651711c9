//! GRPCRoute through `novaedge run`, called by a tonic client: calls routed by service, method
//! and metadata, a catch-all rule for every other service, a response header filter, trailers
//! of a streaming call, and an HTTPRoute of the same name on another host. The Services' ports
//! name no `appProtocol`: the proxy must speak h2c to them because a GRPCRoute uses them.

mod common;

use std::net::SocketAddr;

use common::*;
use novaedge_echo::proto::echo_client::EchoClient;
use novaedge_echo::proto::{EchoReply, EchoRequest};
use novaedge_echo::{EchoServer, GRPC_SERVER_METADATA, NAME_HEADER};
use tonic::codec::Streaming;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

/// Both routes are named `t/echo`: a GRPCRoute and an HTTPRoute are different objects.
fn manifests(port: u16) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: t}}
spec:
  gatewayClassName: novaedge
  listeners: [{{name: http, protocol: HTTP, port: {port}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: echo, namespace: t}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [grpc.test]
  rules:
    - matches:
        - method: {{service: novaedge.echo.v1.Echo, method: Unary}}
      backendRefs: [{{name: unary, port: 80}}]
    - matches:
        - method: {{service: novaedge.echo.v1.Echo}}
          headers: [{{name: x-canary, value: "true"}}]
      filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier: {{set: [{{name: x-route, value: canary}}]}}
      backendRefs: [{{name: canary, port: 80}}]
    - matches:
        - method: {{service: novaedge.echo.v1.Echo}}
      backendRefs: [{{name: echo, port: 80}}]
    - backendRefs: [{{name: rest, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: echo, namespace: t}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [web.test]
  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]
"#
    )
}

fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
        count: 2,
        ..EchoRequest::default()
    }
}

/// A request with `x-canary: true` metadata.
fn canary(message: &str) -> Request<EchoRequest> {
    let mut request = Request::new(request(message));
    request
        .metadata_mut()
        .insert("x-canary", "true".parse().unwrap());
    request
}

fn server(metadata: &MetadataMap, key: &str) -> String {
    metadata
        .get(key)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {key} in {metadata:?}"))
        .to_owned()
}

/// Every reply of a server stream, and its trailers.
async fn drain(mut stream: Streaming<EchoReply>) -> (Vec<EchoReply>, MetadataMap) {
    let mut replies = Vec::new();
    while let Some(reply) = stream.message().await.expect("stream message") {
        replies.push(reply);
    }
    let trailers = stream.trailers().await.expect("trailers").expect("some");
    (replies, trailers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_route_sends_calls_by_service_method_and_metadata() {
    let mut echoes = Vec::new();
    let mut services = String::new();
    for name in ["unary", "canary", "echo", "rest", "web"] {
        let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), name)
            .await
            .unwrap();
        services.push_str("---\n");
        services.push_str(&service(name, echo.local_addr().port()));
        echoes.push(echo);
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(dir.path().join("services.yaml"), services).unwrap();
    std::fs::write(dir.path().join("routes.yaml"), manifests(port)).unwrap();
    let mut proxy = Proxy::start(&["run", "--bind", "127.0.0.1", dir.path().to_str().unwrap()]);
    proxy.wait_log("watching for changes", 0);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    // The proxy's address, with `grpc.test` as the authority of every call.
    let channel: Channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .origin("http://grpc.test".parse().unwrap())
        .connect()
        .await
        .expect("gRPC channel to the proxy");
    let mut client = EchoClient::new(channel.clone());

    // Service and method.
    let response = client.unary(request("a")).await.expect("unary");
    assert_eq!(server(response.metadata(), GRPC_SERVER_METADATA), "unary");
    assert_eq!(response.into_inner().server, "unary");
    // The exact method outranks the service with a header match.
    let response = client.unary(canary("b")).await.expect("unary, canary");
    assert_eq!(response.into_inner().server, "unary");

    // The service's other methods, streaming: replies and trailers arrive through the proxy.
    let response = client
        .server_stream(request("c"))
        .await
        .expect("server stream");
    assert_eq!(server(response.metadata(), GRPC_SERVER_METADATA), "echo");
    let (replies, trailers) = drain(response.into_inner()).await;
    let servers: Vec<(&str, u32)> = replies
        .iter()
        .map(|r| (r.server.as_str(), r.index))
        .collect();
    assert_eq!(servers, [("echo", 0), ("echo", 1)]);
    assert_eq!(server(&trailers, GRPC_SERVER_METADATA), "echo");

    // With the header, to the canary, with the rule's response header.
    let response = client
        .server_stream(canary("d"))
        .await
        .expect("server stream, canary");
    assert_eq!(server(response.metadata(), GRPC_SERVER_METADATA), "canary");
    assert_eq!(server(response.metadata(), "x-route"), "canary");
    let (replies, _) = drain(response.into_inner()).await;
    assert_eq!(replies.len(), 2);

    // Another service: the rule without matches, whose backend does not implement it.
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<EchoRequest, EchoReply, _>(
            Request::new(request("e")),
            http::uri::PathAndQuery::from_static("/other.v1.Other/Unary"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("no such service");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert_eq!(server(status.metadata(), NAME_HEADER), "rest");

    // The backends speak HTTP/2 although their ports do not say so: a plain request for a gRPC
    // path (no method condition) shows the version the backend saw.
    let (status, body) = get(addr, "grpc.test", "/novaedge.echo.v1.Echo/Unary")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&seen["name"], &seen["version"]),
        (&"unary".into(), &"HTTP/2.0".into())
    );

    // The HTTPRoute of the same name serves its own host, over HTTP/1.1 to its backend.
    let (status, body) = get(addr, "web.test", "/").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&seen["name"], &seen["version"]),
        (&"web".into(), &"HTTP/1.1".into())
    );

    let calls: Vec<u64> = echoes.iter().map(EchoServer::requests).collect();
    assert_eq!(calls, [3, 1, 1, 1, 1], "unary, canary, echo, rest, web");

    proxy.terminate();
    assert!(proxy.wait_exit().success());
}

#[test]
fn check_accepts_the_grpc_example() {
    let example = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/grpc");
    let out = std::process::Command::new(BIN)
        .arg("check")
        .arg(&example)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("ok"), "{stdout}");
}
