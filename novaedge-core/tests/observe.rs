//! Request observability end to end: `x-request-id`, W3C trace context with spans received by
//! an in-process OTLP collector, access log lines in both formats, and request metrics.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_body_util::Full;
use novaedge_core::observe::REQUEST_ID_HEADER;
use novaedge_core::{
    AccessLog, AccessLogFormat, Engine, EngineConfig, ObserveConfig, OtlpConfig, OtlpTracer,
};
use novaedge_snapshot::{
    Backend, CircuitBreakers, RateLimit, RateLimitKey, RouteFilters, UpstreamProtocol,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::pipe;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn engine_with(observe: ObserveConfig) -> Engine {
    Engine::new(EngineConfig {
        default_bind: LOCALHOST,
        observe,
        ..EngineConfig::default()
    })
}

/// Listener `web`: host `app` to backend `echo`, host `limited` to `echo` behind a rate limit
/// of one request a minute, anything else unrouted.
fn apply(engine: &Engine, echo: Backend) -> SocketAddr {
    let mut limited = to("echo");
    limited.filters = RouteFilters {
        rate_limit: Some(RateLimit {
            requests: 1,
            period: Duration::from_secs(60),
            burst: 1,
            key: RateLimitKey::Global,
        }),
        ..RouteFilters::default()
    }
    .into();
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![
                route("default/r", "web", &["app"], vec![to("echo")]),
                route("default/limited", "web", &["limited"], vec![limited]),
            ],
            vec![echo],
        ))
        .expect("snapshot applies");
    engine.local_addr("web").expect("listener is bound")
}

async fn get_with(
    client: &mut Client,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> http::Response<Bytes> {
    let mut req = client.request(Method::GET, host, path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    client
        .send(req.body(Full::default()).unwrap())
        .await
        .expect("request is answered")
}

fn response_id(response: &http::Response<Bytes>) -> &str {
    response.headers()[REQUEST_ID_HEADER].to_str().unwrap()
}

// === x-request-id ===

#[tokio::test]
async fn request_id_is_kept_when_sane_and_made_up_otherwise() {
    let server = echo("echo").await;
    let engine = engine_with(ObserveConfig::default());
    let addr = apply(
        &engine,
        backend("echo", UpstreamProtocol::Http1, &[&server]),
    );
    for proto in BOTH {
        let mut client = Client::connect(proto, addr).await;

        let kept = get_with(&mut client, "app", "/", &[("x-request-id", "client-id-42")]).await;
        assert_eq!(response_id(&kept), "client-id-42", "{proto:?}");
        assert_eq!(info(&kept).header("x-request-id"), Some("client-id-42"));

        let made = get_with(&mut client, "app", "/", &[]).await;
        let id = response_id(&made).to_owned();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(info(&made).header("x-request-id"), Some(id.as_str()));
        let other = get_with(&mut client, "app", "/", &[]).await;
        assert_ne!(response_id(&other), id, "each request gets its own id");

        let long = "x".repeat(129);
        for bad in ["has space", long.as_str()] {
            let replaced = get_with(&mut client, "app", "/", &[("x-request-id", bad)]).await;
            let id = response_id(&replaced).to_owned();
            assert_ne!(id, bad);
            assert_eq!(id.len(), 36);
            assert_eq!(info(&replaced).header("x-request-id"), Some(id.as_str()));
        }

        // The proxy's own answers carry one too.
        let unrouted = get_with(&mut client, "nowhere", "/", &[("x-request-id", "r-404")]).await;
        assert_eq!(unrouted.status(), StatusCode::NOT_FOUND);
        assert_eq!(response_id(&unrouted), "r-404");
    }
}

#[tokio::test]
async fn request_id_can_be_turned_off() {
    let server = echo("echo").await;
    let engine = engine_with(ObserveConfig {
        request_id: false,
        ..ObserveConfig::default()
    });
    let addr = apply(
        &engine,
        backend("echo", UpstreamProtocol::Http1, &[&server]),
    );
    let mut client = Client::connect(Proto::Http1, addr).await;
    let response = get_with(&mut client, "app", "/", &[]).await;
    assert!(response.headers().get(REQUEST_ID_HEADER).is_none());
    assert_eq!(info(&response).header("x-request-id"), None);
}

// === trace context ===

#[tokio::test]
async fn traceparent_passes_through_untouched_without_a_tracer() {
    let server = echo("echo").await;
    let engine = engine_with(ObserveConfig::default());
    let addr = apply(
        &engine,
        backend("echo", UpstreamProtocol::Http1, &[&server]),
    );
    let mut client = Client::connect(Proto::Http1, addr).await;
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let response = get_with(
        &mut client,
        "app",
        "/",
        &[("traceparent", &traceparent), ("tracestate", "vendor=abc")],
    )
    .await;
    let seen = info(&response);
    assert_eq!(seen.header("traceparent"), Some(traceparent.as_str()));
    assert_eq!(seen.header("tracestate"), Some("vendor=abc"));
}

/// An OTLP/gRPC collector on 127.0.0.1 that keeps every span it is sent.
#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn collector() -> (Collector, SocketAddr) {
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector::default();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (collector, addr)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// Splits `00-trace-parent-flags`.
fn traceparent_parts(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00", "{value}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_with_the_client_trace_as_parent() {
    let (collector, collector_addr) = collector().await;
    let tracer = OtlpTracer::start(&OtlpConfig::new(format!("http://{collector_addr}"))).unwrap();
    let server = echo("echo").await;
    let engine = engine_with(ObserveConfig {
        tracer: Some(tracer.clone()),
        ..ObserveConfig::default()
    });
    let addr = apply(
        &engine,
        backend("echo", UpstreamProtocol::Http1, &[&server]),
    );
    let mut client = Client::connect(Proto::H2c, addr).await;

    // With the client's trace context.
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let joined = get_with(
        &mut client,
        "app",
        "/",
        &[("traceparent", &traceparent), ("tracestate", "vendor=abc")],
    )
    .await;
    let seen = info(&joined);
    let (trace, parent, flags) = traceparent_parts(seen.header("traceparent").unwrap());
    assert_eq!(trace, TRACE_ID, "the upstream continues the client's trace");
    assert_ne!(parent, CLIENT_SPAN, "with our span as parent");
    assert_eq!(flags, "01");
    assert_eq!(seen.header("tracestate"), Some("vendor=abc"));
    let joined_id = response_id(&joined).to_owned();

    // Without: a new trace.
    let fresh = get_with(&mut client, "app", "/", &[]).await;
    let (fresh_trace, fresh_parent, _) =
        traceparent_parts(info(&fresh).header("traceparent").unwrap());
    assert_ne!(fresh_trace, TRACE_ID);
    assert_ne!(fresh_trace, "0".repeat(32));

    // An invalid one (uppercase hex): a new trace, and its tracestate is dropped.
    let bad = format!("00-{}-{CLIENT_SPAN}-01", TRACE_ID.to_uppercase());
    let restarted = get_with(
        &mut client,
        "app",
        "/",
        &[("traceparent", &bad), ("tracestate", "vendor=abc")],
    )
    .await;
    let seen_restarted = info(&restarted);
    let (restarted_trace, _, _) = traceparent_parts(seen_restarted.header("traceparent").unwrap());
    assert_ne!(restarted_trace, TRACE_ID.to_lowercase());
    assert_eq!(seen_restarted.header("tracestate"), None);

    // Unrouted: a server span without an upstream child.
    let unrouted = get_with(&mut client, "nowhere", "/", &[]).await;
    assert_eq!(unrouted.status(), StatusCode::NOT_FOUND);

    // Spans end when the response body does, just after the client has it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let spans = loop {
        tracer.flush().await.unwrap();
        let spans = collector.spans.lock().unwrap().clone();
        if spans.len() >= 7 || tokio::time::Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let by_trace = |trace: &str, kind: SpanKind| -> Vec<&Span> {
        spans
            .iter()
            .filter(|s| hex(&s.trace_id) == trace && s.kind == kind as i32)
            .collect()
    };

    let server_spans = by_trace(TRACE_ID, SpanKind::Server);
    assert_eq!(server_spans.len(), 1, "{spans:#?}");
    let request = server_spans[0];
    assert_eq!(request.name, "GET default/r");
    assert_eq!(hex(&request.parent_span_id), CLIENT_SPAN);
    assert_eq!(
        attribute(request, "novaedge.request_id").as_deref(),
        Some(joined_id.as_str())
    );
    assert_eq!(
        attribute(request, "novaedge.route").as_deref(),
        Some("default/r")
    );
    assert_eq!(
        attribute(request, "novaedge.listener").as_deref(),
        Some("web")
    );
    assert_eq!(
        attribute(request, "novaedge.backend").as_deref(),
        Some("echo")
    );
    assert_eq!(
        attribute(request, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attribute(request, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(request, "network.protocol.version").as_deref(),
        Some("2")
    );
    assert!(request.events.iter().any(|e| e.name == "route matched"));
    assert_eq!(request.trace_state, "vendor=abc");

    let upstream_spans = by_trace(TRACE_ID, SpanKind::Client);
    assert_eq!(upstream_spans.len(), 1, "{spans:#?}");
    let upstream = upstream_spans[0];
    assert_eq!(upstream.name, "upstream echo");
    assert_eq!(
        upstream.parent_span_id, request.span_id,
        "the upstream span is the request span's child"
    );
    assert_eq!(
        hex(&upstream.span_id),
        parent,
        "and the parent the upstream was told about"
    );
    assert_eq!(
        attribute(upstream, "server.port").as_deref(),
        Some(server.local_addr().port().to_string().as_str())
    );
    assert!(upstream.start_time_unix_nano >= request.start_time_unix_nano);
    assert!(upstream.end_time_unix_nano <= request.end_time_unix_nano);

    let fresh_server = by_trace(&fresh_trace, SpanKind::Server);
    assert_eq!(fresh_server.len(), 1, "{spans:#?}");
    assert!(
        fresh_server[0].parent_span_id.is_empty(),
        "a new trace's root"
    );
    let fresh_upstream = by_trace(&fresh_trace, SpanKind::Client);
    assert_eq!(hex(&fresh_upstream[0].span_id), fresh_parent);

    let unrouted_spans: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "GET" && s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(unrouted_spans.len(), 1, "{spans:#?}");
    assert_eq!(
        attribute(unrouted_spans[0], "novaedge.response_flags").as_deref(),
        Some("NR")
    );
    let unrouted_trace = &unrouted_spans[0].trace_id;
    assert_eq!(
        spans
            .iter()
            .filter(|s| &s.trace_id == unrouted_trace)
            .count(),
        1
    );

    tracer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_filters_get_a_span_of_their_own() {
    let (collector, collector_addr) = collector().await;
    let tracer = OtlpTracer::start(&OtlpConfig::new(format!("http://{collector_addr}"))).unwrap();
    let server = echo("echo").await;
    let engine = engine_with(ObserveConfig {
        tracer: Some(tracer.clone()),
        ..ObserveConfig::default()
    });
    let addr = apply(
        &engine,
        backend("echo", UpstreamProtocol::Http1, &[&server]),
    );
    let mut client = Client::connect(Proto::Http1, addr).await;
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let passed = get_with(
        &mut client,
        "limited",
        "/",
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(passed.status(), StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let spans = loop {
        tracer.flush().await.unwrap();
        let spans = collector.spans.lock().unwrap().clone();
        if spans.len() >= 3 || tokio::time::Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let named = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span: {spans:#?}"))
    };
    let request = named("GET default/limited");
    let filters = named("filters");
    let upstream = named("upstream echo");
    assert_eq!(filters.parent_span_id, request.span_id);
    assert_eq!(upstream.parent_span_id, request.span_id);
    assert!(filters.end_time_unix_nano <= upstream.start_time_unix_nano);
    tracer.shutdown().await.unwrap();
}

// === access log ===

/// An access log writing into a pipe, and the pipe's lines.
fn piped_log(format: AccessLogFormat) -> (AccessLog, Lines<BufReader<pipe::Receiver>>) {
    let (read, write) = std::io::pipe().unwrap();
    let log = AccessLog::new(format, write, 64).unwrap();
    let read = pipe::Receiver::from_owned_fd(read.into()).unwrap();
    (log, BufReader::new(read).lines())
}

async fn next_line(lines: &mut Lines<BufReader<pipe::Receiver>>) -> String {
    tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .expect("an access log line is written")
        .unwrap()
        .expect("the log is open")
}

#[tokio::test]
async fn access_log_json_lines() {
    let (log, mut lines) = piped_log(AccessLogFormat::Json);
    let server = echo("echo").await;
    let engine = engine_with(ObserveConfig {
        access_log: Some(log.clone()),
        ..ObserveConfig::default()
    });
    let addr = apply(
        &engine,
        backend("echo", UpstreamProtocol::Http1, &[&server]),
    );
    let mut client = Client::connect(Proto::Http1, addr).await;

    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let req = client
        .request(Method::POST, "app", "/upload/it?token=secret")
        .header("traceparent", &traceparent)
        .header("user-agent", "test-agent/1")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let response = client.send(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let line: serde_json::Value = serde_json::from_str(&next_line(&mut lines).await).unwrap();
    assert_eq!(line["request_id"], response_id(&response));
    assert_eq!(line["trace_id"], TRACE_ID);
    assert_eq!(line["method"], "POST");
    assert_eq!(line["authority"], "app");
    assert_eq!(line["path"], "/upload/it", "the query is not logged");
    assert_eq!(line["protocol"], "HTTP/1.1");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_in"], 5);
    assert_eq!(line["bytes_out"], response.body().len());
    assert_eq!(line["upstream"], server.local_addr().to_string());
    assert_eq!(line["listener"], "web");
    assert_eq!(line["route"], "default/r");
    assert_eq!(line["backend"], "echo");
    assert_eq!(line["flags"], "-");
    assert_eq!(line["user_agent"], "test-agent/1");
    assert_eq!(line["referer"], serde_json::Value::Null);
    assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(line["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(line["time"].as_str().unwrap().ends_with('Z'));

    let unrouted = get_with(&mut client, "nowhere", "/x", &[]).await;
    assert_eq!(unrouted.status(), StatusCode::NOT_FOUND);
    let line: serde_json::Value = serde_json::from_str(&next_line(&mut lines).await).unwrap();
    assert_eq!(line["status"], 404);
    assert_eq!(line["flags"], "NR");
    assert_eq!(line["listener"], "web");
    assert_eq!(line["route"], serde_json::Value::Null);
    assert_eq!(line["backend"], serde_json::Value::Null);
    assert_eq!(line["upstream"], serde_json::Value::Null);
    assert_eq!(line["trace_id"], serde_json::Value::Null);

    // The rate limit's 429 is told apart from an upstream's.
    assert_eq!(
        get_with(&mut client, "limited", "/", &[]).await.status(),
        StatusCode::OK
    );
    let line: serde_json::Value = serde_json::from_str(&next_line(&mut lines).await).unwrap();
    assert_eq!(line["flags"], "-");
    assert_eq!(
        get_with(&mut client, "limited", "/", &[]).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let line: serde_json::Value = serde_json::from_str(&next_line(&mut lines).await).unwrap();
    assert_eq!(line["flags"], "RL");
    assert_eq!(line["route"], "default/limited");
    let upstream_429 = get_with(&mut client, "app", "/?status=429", &[]).await;
    assert_eq!(upstream_429.status(), StatusCode::TOO_MANY_REQUESTS);
    let line: serde_json::Value = serde_json::from_str(&next_line(&mut lines).await).unwrap();
    assert_eq!(line["flags"], "-");
    assert_eq!(line["backend"], "echo");
    assert_eq!(log.dropped(), 0);
}

/// A rule that splits its requests between backends: each line names the one that answered,
/// in both formats, and metrics count each request under its backend.
#[tokio::test]
async fn lines_name_the_backend_of_a_weighted_rule() {
    for format in [AccessLogFormat::Json, AccessLogFormat::Common] {
        let (log, mut lines) = piped_log(format);
        let (blue, green) = (echo("blue").await, echo("green").await);
        let engine = engine_with(ObserveConfig {
            access_log: Some(log),
            ..ObserveConfig::default()
        });
        let mut registry = Registry::default();
        engine.register_metrics(&mut registry);
        engine
            .apply(&snapshot(
                1,
                vec![listener("web")],
                vec![route(
                    "default/split",
                    "web",
                    &["app"],
                    vec![rule(Vec::new(), &[("blue", 1), ("green", 1)])],
                )],
                vec![
                    backend("blue", UpstreamProtocol::Http1, &[&blue]),
                    backend("green", UpstreamProtocol::H2c, &[&green]),
                ],
            ))
            .expect("snapshot applies");
        let addr = engine.local_addr("web").expect("listener is bound");
        let mut client = Client::connect(Proto::H2c, addr).await;
        let mut answered = std::collections::BTreeMap::<String, u32>::new();
        for _ in 0..6 {
            let response = get_with(&mut client, "app", "/", &[]).await;
            assert_eq!(response.status(), StatusCode::OK);
            let name = response.headers()["x-echo-name"]
                .to_str()
                .unwrap()
                .to_owned();
            let line = next_line(&mut lines).await;
            let logged = match format {
                AccessLogFormat::Json => {
                    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
                    assert_eq!(line["listener"], "web");
                    assert_eq!(line["route"], "default/split");
                    line["backend"].as_str().unwrap().to_owned()
                }
                AccessLogFormat::Common => {
                    assert!(
                        line.contains(" listener=web route=default/split "),
                        "{line}"
                    );
                    let (_, rest) = line.split_once(" backend=").expect("a backend field");
                    rest.split(' ').next().unwrap().to_owned()
                }
            };
            assert_eq!(logged, name, "{format:?}");
            *answered.entry(name).or_default() += 1;
        }
        assert_eq!(answered.len(), 2, "both backends answered: {answered:?}");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for (name, count) in &answered {
            let series = format!(
                "novaedge_requests_total{{route=\"default/split\",backend=\"{name}\",code_class=\"2xx\"}} {count}"
            );
            assert!(text.contains(&series), "{series} in\n{text}");
        }
    }
}

#[tokio::test]
async fn access_log_common_lines() {
    let (log, mut lines) = piped_log(AccessLogFormat::Common);
    // An endpoint that refuses connections: the upstream connect failure is flagged.
    let dead = endpoint(SocketAddr::new(LOCALHOST, free_port()));
    let server = echo("echo").await;
    let engine = engine_with(ObserveConfig {
        access_log: Some(log),
        ..ObserveConfig::default()
    });
    let addr = apply(
        &engine,
        backend("echo", UpstreamProtocol::Http1, &[&server]),
    );
    let mut client = Client::connect(Proto::H2c, addr).await;

    let ok = get_with(&mut client, "app", "/a/b?q=1", &[("x-request-id", "rid-7")]).await;
    let line = next_line(&mut lines).await;
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.contains(" +0000] \"GET /a/b HTTP/2\" 200 "), "{line}");
    let bytes = ok.body().len();
    assert!(
        line.contains(&format!(
            " 200 {bytes} \"-\" \"-\" rid=rid-7 trace=- authority=\"app\" dur_ms="
        )),
        "{line}"
    );
    assert!(
        line.ends_with(&format!(
            " upstream={} listener=web route=default/r backend=echo flags=- bytes_in=0",
            server.local_addr()
        )),
        "{line}"
    );

    let broken = backend_at("echo", UpstreamProtocol::Http1, vec![dead]);
    let addr2 = apply(&engine, broken);
    assert_eq!(addr, addr2);
    let failed = get_with(&mut client, "app", "/", &[]).await;
    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
    let line = next_line(&mut lines).await;
    assert!(line.contains("\"GET / HTTP/2\" 502 "), "{line}");
    assert!(
        line.contains(&format!("upstream={} ", dead.address)),
        "{line}"
    );
    assert!(line.ends_with("backend=echo flags=UF bytes_in=0"), "{line}");

    // A smuggling attempt (Content-Length and Transfer-Encoding together), refused before
    // routing: a downstream protocol error.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(
        b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 400 "), "{answer:?}");
    let line = next_line(&mut lines).await;
    assert!(line.contains("\"POST / HTTP/1.1\" 400 "), "{line}");
    assert!(line.contains(" flags=DPE "), "{line}");
}

/// A response body cut at the upstream body idle timeout is flagged `SI` (the status logged
/// is the upstream's, which the client had already been sent).
#[tokio::test]
async fn access_log_flags_a_body_cut_at_the_idle_timeout() {
    let (log, mut lines) = piped_log(AccessLogFormat::Json);
    // An upstream that sends a head and part of the body, then nothing.
    let stalls = tokio::net::TcpListener::bind(SocketAddr::new(LOCALHOST, 0))
        .await
        .unwrap();
    let stalled = stalls.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = stalls.accept().await {
            tokio::spawn(async move {
                let mut head = [0; 1024];
                let _ = stream.read(&mut head).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\npart")
                    .await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let engine = Engine::new(EngineConfig {
        default_bind: LOCALHOST,
        upstream_body_idle_timeout: Some(Duration::from_millis(200)),
        observe: ObserveConfig {
            access_log: Some(log),
            ..ObserveConfig::default()
        },
        ..EngineConfig::default()
    });
    let addr = apply(
        &engine,
        backend_at("echo", UpstreamProtocol::Http1, vec![endpoint(stalled)]),
    );
    let mut client = Client::connect(Proto::H2c, addr).await;
    let req = client
        .request(Method::GET, "app", "/")
        .body(Default::default())
        .unwrap();
    client.send(req).await.expect_err("the body is cut off");
    let line: serde_json::Value = serde_json::from_str(&next_line(&mut lines).await).unwrap();
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["flags"], "SI", "{line}");
    assert_eq!(line["bytes_out"], 4, "{line}");
}

// === metrics ===

fn metrics_text(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
    out
}

/// The value of the sample `series` (`name{labels}`), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until the sample reaches `want`: counts are taken when a response body ends, which
/// is just after the client has the response.
async fn eventually(registry: &Registry, series: &str, want: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics_text(registry);
        if sample(&text, series) == want || tokio::time::Instant::now() > deadline {
            assert_eq!(sample(&text, series), want, "{series}\n{text}");
            return text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_parked_connections() {
    let server = echo("echo").await;
    let engine = Engine::new(EngineConfig {
        default_bind: LOCALHOST,
        park_after: Duration::from_millis(50),
        observe: ObserveConfig::default(),
        ..EngineConfig::default()
    });
    let mut registry = Registry::default();
    engine.register_metrics(&mut registry);
    let addr = apply(
        &engine,
        backend("echo", UpstreamProtocol::Http1, &[&server]),
    );
    let parked = r#"novaedge_parked_connections{listener="web"}"#;
    let open = r#"novaedge_active_connections{listener="web"}"#;

    // A new connection waits for its first bytes parked.
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    eventually(&registry, parked, 1.0).await;

    // A request held at the backend: not parked while in flight.
    client
        .write_all(b"GET /?delay_ms=400 HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    eventually(&registry, parked, 0.0).await;
    let text = eventually(&registry, open, 1.0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sample(&metrics_text(&registry), parked), 0.0, "{text}");

    // Answered, then quiet for the park time: parked again, still open.
    let mut response = vec![0; 4096];
    let n = client.read(&mut response).await.unwrap();
    assert!(response[..n].starts_with(b"HTTP/1.1 200 OK"));
    eventually(&registry, parked, 1.0).await;
    assert_eq!(sample(&metrics_text(&registry), open), 1.0);

    drop(client);
    eventually(&registry, parked, 0.0).await;
    eventually(&registry, open, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_backend_and_class() {
    let server = echo("echo").await;
    let engine = engine_with(ObserveConfig::default());
    let mut registry = Registry::default();
    engine.register_metrics(&mut registry);
    let mut echo_backend = backend("echo", UpstreamProtocol::Http1, &[&server]);
    echo_backend.health.circuit_breakers = CircuitBreakers {
        max_requests: 1,
        ..CircuitBreakers::default()
    };
    let addr = apply(&engine, echo_backend);
    let mut client = Client::connect(Proto::Http1, addr).await;
    eventually(
        &registry,
        r#"novaedge_active_connections{listener="web"}"#,
        1.0,
    )
    .await;

    for _ in 0..3 {
        assert_eq!(
            get_with(&mut client, "app", "/", &[]).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        get_with(&mut client, "app", "/?status=503", &[])
            .await
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get_with(&mut client, "nowhere", "/", &[]).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get_with(&mut client, "limited", "/", &[]).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get_with(&mut client, "limited", "/", &[]).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    // A slow request holds the backend's one request permit: the next overflows.
    let before = server.requests();
    let slow = tokio::spawn(async move {
        let mut client = Client::connect(Proto::Http1, addr).await;
        client.get("app", "/?delay_ms=800").await.status()
    });
    while server.requests() == before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut other = Client::connect(Proto::Http1, addr).await;
    assert_eq!(
        other.get("app", "/").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(slow.await.unwrap(), StatusCode::OK);

    let text = eventually(
        &registry,
        r#"novaedge_requests_total{route="default/r",backend="echo",code_class="2xx"}"#,
        4.0,
    )
    .await;
    let text = eventually(
        &registry,
        r#"novaedge_requests_total{route="default/r",backend="echo",code_class="5xx"}"#,
        2.0,
    )
    .await
        + &text;
    for (series, want) in [
        (
            r#"novaedge_requests_total{route="",backend="",code_class="4xx"}"#,
            1.0,
        ),
        (
            r#"novaedge_requests_total{route="default/limited",backend="echo",code_class="2xx"}"#,
            1.0,
        ),
        (
            r#"novaedge_requests_total{route="default/limited",backend="",code_class="4xx"}"#,
            1.0,
        ),
        (
            r#"novaedge_request_duration_seconds_count{route="default/r",backend="echo"}"#,
            6.0,
        ),
        (
            r#"novaedge_request_duration_seconds_count{route="",backend=""}"#,
            1.0,
        ),
        // The overflowed request never reached an endpoint.
        (
            r#"novaedge_upstream_rtt_seconds_count{backend="echo"}"#,
            6.0,
        ),
        (
            r#"novaedge_rate_limited_total{route="default/limited"}"#,
            1.0,
        ),
        (
            r#"novaedge_circuit_breaker_overflows_total{backend="echo",limit="max_requests"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, series), want, "{series}\n{text}");
    }
    // The slow request is in the top buckets only.
    assert!(
        sample(
            &text,
            r#"novaedge_request_duration_seconds_bucket{le="0.5",route="default/r",backend="echo"}"#
        ) >= 4.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            r#"novaedge_request_duration_seconds_sum{route="default/r",backend="echo"}"#
        ) >= 0.8,
        "{text}"
    );
    assert!(
        !text.contains("127.0.0.1"),
        "no addresses in labels: {text}"
    );

    drop(other);
    eventually(
        &registry,
        r#"novaedge_active_connections{listener="web"}"#,
        1.0,
    )
    .await;

    // A reload without route default/limited drops its series; default/r keeps counting.
    engine
        .apply(&snapshot(
            2,
            vec![listener("web")],
            vec![route("default/r", "web", &["app"], vec![to("echo")])],
            vec![backend("echo", UpstreamProtocol::Http1, &[&server])],
        ))
        .unwrap();
    let text = metrics_text(&registry);
    assert!(!text.contains("default/limited"), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"novaedge_requests_total{route="default/r",backend="echo",code_class="2xx"}"#
        ),
        4.0
    );
    drop(client);
    eventually(
        &registry,
        r#"novaedge_active_connections{listener="web"}"#,
        0.0,
    )
    .await;
}
