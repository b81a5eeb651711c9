//! TLS from the proxy to backends, against real TLS servers on 127.0.0.1 (tokio-rustls + hyper,
//! HTTP/1.1 or HTTP/2 as ALPN decides) with certificates made by rcgen in each test: server
//! verification by CA, DNS name (SNI) or IP address, ALPN, mTLS, refused material, connection
//! reuse and WebSocket upgrades.

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use novaedge_core::{ApplyError, CompileError, Engine, UPSTREAM_TLS_HEADER};
use novaedge_snapshot::UpstreamProtocol::{self, H2c, Http1};
use novaedge_snapshot::{Backend, TlsCertificate, UpstreamTls};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

// === certificates ===

/// A CA made for the test.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate signed by a [`Ca`], with its key.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses).
    fn leaf(&self, names: &[&str]) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

impl Leaf {
    fn client_certificate(&self, source: &str) -> TlsCertificate {
        TlsCertificate {
            source: source.to_owned(),
            server_names: Vec::new(),
            cert_chain_pem: self.cert_pem.clone(),
            private_key_pem: self.key_pem.clone(),
        }
    }
}

// === a TLS backend ===

/// What a [`TlsServer`] is set up with.
struct ServerSetup<'a> {
    cert: &'a Leaf,
    /// ALPN protocols the server picks from, in its order of preference; empty: no ALPN.
    alpn: &'a [&'a [u8]],
    /// Client certificates must chain to this CA; `None`: none is asked for.
    client_ca: Option<&'a Ca>,
    /// With `client_ca`: a client without a certificate is let in too.
    client_optional: bool,
}

impl<'a> ServerSetup<'a> {
    fn new(cert: &'a Leaf, alpn: &'a [&'a [u8]]) -> Self {
        Self {
            cert,
            alpn,
            client_ca: None,
            client_optional: false,
        }
    }
}

/// One completed TLS handshake, as the server saw it.
#[derive(Debug, Clone)]
struct Accepted {
    sni: Option<String>,
    alpn: Option<String>,
    client_cert: bool,
}

/// A TLS server on 127.0.0.1 answering every request with what it saw (the HTTP version, the
/// host, the SNI, ALPN and client certificate of its connection) in `x-*` headers, gRPC-style
/// trailers on `application/grpc` requests, and WebSocket echo on upgrades. Health probes
/// (`/healthz`, `grpc.health.v1.Health/Check`) are answered apart, by [`TlsServer::set_health`],
/// and not counted as requests.
struct TlsServer {
    addr: SocketAddr,
    accepted: Arc<Mutex<Vec<Accepted>>>,
    /// Handshakes the server failed, with rustls' reason.
    failed: Arc<Mutex<Vec<String>>>,
    requests: Arc<AtomicUsize>,
    /// The status `/healthz` answers; gRPC health checks are `SERVING` on 200.
    health: Arc<AtomicU16>,
    /// The connections health probes came on, one entry per probe.
    probes: Arc<Mutex<Vec<Accepted>>>,
    task: JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsServer {
    async fn start(setup: ServerSetup<'_>) -> TlsServer {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match setup.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.issuer.der().clone()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
                let verifier = match setup.client_optional {
                    true => verifier.allow_unauthenticated(),
                    false => verifier,
                };
                builder.with_client_cert_verifier(verifier.build().unwrap())
            }
        };
        let mut config = builder
            .with_single_cert(
                vec![setup.cert.der.clone()],
                PrivateKeyDer::Pkcs8(setup.cert.key_der.clone().into()),
            )
            .unwrap();
        config.alpn_protocols = setup.alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = TcpListener::bind(SocketAddr::new(LOCALHOST, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(AtomicU16::new(200));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (accepted, failed, requests) = (accepted.clone(), failed.clone(), requests.clone());
            let (health, probes) = (health.clone(), probes.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    let (accepted, failed, requests) =
                        (accepted.clone(), failed.clone(), requests.clone());
                    let (health, probes) = (health.clone(), probes.clone());
                    tokio::spawn(async move {
                        let tls = match acceptor.accept(stream).into_fallible().await {
                            Ok(tls) => tls,
                            Err((e, mut stream)) => {
                                failed.lock().unwrap().push(e.to_string());
                                // The alert is sent; close gently, as a real server does. A TLS
                                // 1.3 client may already have sent its request: closing with
                                // it unread would reset the connection, and the reset can
                                // overtake the alert on the client's side.
                                let _ = stream.shutdown().await;
                                let mut sink = [0; 4096];
                                let drain = async {
                                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                                };
                                let _ =
                                    tokio::time::timeout(std::time::Duration::from_secs(1), drain)
                                        .await;
                                return;
                            }
                        };
                        let connection = tls.get_ref().1;
                        let seen = Accepted {
                            sni: connection.server_name().map(str::to_owned),
                            alpn: connection
                                .alpn_protocol()
                                .map(|p| String::from_utf8_lossy(p).into_owned()),
                            client_cert: connection.peer_certificates().is_some(),
                        };
                        accepted.lock().unwrap().push(seen.clone());
                        let h2 = seen.alpn.as_deref() == Some("h2");
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let path = req.uri().path();
                            if path == "/healthz" || path == GRPC_HEALTH_CHECK {
                                probes.lock().unwrap().push(seen.clone());
                                let status = health.load(Ordering::SeqCst);
                                return futures_util::future::Either::Left(
                                    futures_util::future::ready(Ok(answer_probe(&req, status))),
                                );
                            }
                            requests.fetch_add(1, Ordering::SeqCst);
                            futures_util::future::Either::Right(answer(req, seen.clone()))
                        });
                        let io = TokioIo::new(tls);
                        // Errors are the client's doing (a closed connection): nothing to serve.
                        let _ = if h2 {
                            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(io, service)
                                .await
                        } else {
                            hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, service)
                                .with_upgrades()
                                .await
                        };
                    });
                }
            }
        });
        TlsServer {
            addr,
            accepted,
            failed,
            requests,
            health,
            probes,
            task,
        }
    }

    /// Health probes get `status` from now on (gRPC: `SERVING` on 200, else `NOT_SERVING`).
    fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::SeqCst);
    }

    /// The connections of the probes so far.
    fn probes(&self) -> Vec<Accepted> {
        self.probes.lock().unwrap().clone()
    }

    /// Waits until `n` more probes than `since` arrived. Panics after a while.
    async fn probed(&self, since: usize, n: usize) {
        for _ in 0..1000 {
            if self.probes.lock().unwrap().len() >= since + n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{n} probes did not arrive in 10 s");
    }

    fn accepted(&self) -> Vec<Accepted> {
        self.accepted.lock().unwrap().clone()
    }

    fn handshakes(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    fn failed(&self) -> Vec<String> {
        self.failed.lock().unwrap().clone()
    }

    /// The failed handshakes once there are `n` of them: the server learns of a failure a
    /// moment after the proxy does. Panics after a while.
    async fn failed_handshakes(&self, n: usize) -> Vec<String> {
        for _ in 0..200 {
            if self.failed.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.failed()
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

type ServerBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

const GRPC_HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// A health probe's answer: `status` to `GET /healthz`; to a gRPC health check, a
/// `HealthCheckResponse` saying `SERVING` (1) on 200, else `NOT_SERVING` (2).
fn answer_probe(req: &Request<Incoming>, status: u16) -> Response<ServerBody> {
    if req.uri().path() != GRPC_HEALTH_CHECK {
        let mut response = Response::new(Full::default().boxed());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        return response;
    }
    let serving: u8 = if status == 200 { 1 } else { 2 };
    // One uncompressed gRPC message of two bytes: field 1 (status), varint.
    let message = Bytes::from(vec![0, 0, 0, 0, 2, 0x08, serving]);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames: VecDeque<Result<Frame<Bytes>, Infallible>> =
        VecDeque::from([Ok(Frame::data(message)), Ok(Frame::trailers(trailers))]);
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
        frames,
    ))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

async fn answer(
    mut req: Request<Incoming>,
    seen: Accepted,
) -> Result<Response<ServerBody>, Infallible> {
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let version = format!("{:?}", req.version());
    let scheme = req.uri().scheme_str().unwrap_or("").to_owned();
    let mut response = if let Some(key) = req.headers().get("sec-websocket-key") {
        let accept = derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                None,
            )
            .await;
            while let Some(Ok(message)) = ws.next().await {
                if message.is_close() {
                    break;
                }
                if ws.send(message).await.is_err() {
                    break;
                }
            }
        });
        let mut response = Response::new(Full::default().boxed());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("sec-websocket-accept", accept.parse().unwrap());
        response
    } else if req.headers().get(header::CONTENT_TYPE)
        == Some(&HeaderValue::from_static("application/grpc"))
    {
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("grpc-message", HeaderValue::from_static("served"));
        let frames: VecDeque<Result<Frame<Bytes>, Infallible>> = VecDeque::from([
            Ok(Frame::data(body.unwrap_or_default())),
            Ok(Frame::trailers(trailers)),
        ]);
        let mut response = Response::new(BodyExt::boxed(StreamBody::new(
            futures_util::stream::iter(frames),
        )));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        response
    } else {
        Response::new(Full::new(Bytes::from_static(b"ok")).boxed())
    };
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        headers.insert(name, HeaderValue::from_str(value).unwrap());
    };
    set("x-version", &version);
    set("x-host", &host);
    set("x-scheme", &scheme);
    set("x-sni", seen.sni.as_deref().unwrap_or("-"));
    set("x-alpn", seen.alpn.as_deref().unwrap_or("-"));
    set(
        "x-client-cert",
        if seen.client_cert {
            "present"
        } else {
            "absent"
        },
    );
    Ok(response)
}

// === snapshots ===

fn tls_backend(
    name: &str,
    protocol: UpstreamProtocol,
    servers: &[&TlsServer],
    tls: UpstreamTls,
) -> Backend {
    let mut b = backend_at(
        name,
        protocol,
        servers.iter().map(|s| endpoint(s.addr)).collect(),
    );
    b.tls = Some(tls);
    b
}

fn verify(server_name: &str, ca: &Ca) -> UpstreamTls {
    UpstreamTls {
        server_name: server_name.to_owned(),
        ca_pem: ca.pem(),
        client_certificate: None,
    }
}

/// The host routed to a backend: its name, made a hostname.
fn host_of(backend: &str) -> String {
    backend.replace(['/', ':'], "-")
}

/// An engine routing [`host_of`] each backend to it.
fn serve_hosts(backends: Vec<Backend>) -> (Engine, SocketAddr) {
    let engine = engine();
    engine
        .apply(&hosts_snapshot(1, backends))
        .expect("snapshot applies");
    let addr = engine.local_addr("web").expect("listener is bound");
    (engine, addr)
}

fn hosts_snapshot(version: u64, backends: Vec<Backend>) -> novaedge_snapshot::ConfigSnapshot {
    let routes = backends
        .iter()
        .map(|b| {
            route(
                &format!("default/{}", b.name),
                "web",
                &[&host_of(&b.name)],
                vec![to(&b.name)],
            )
        })
        .collect();
    snapshot(version, vec![listener("web")], routes, backends)
}

#[track_caller]
fn header<'a>(response: &'a Response<Bytes>, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header: {response:?}"))
}

/// Asserts a `502` that says the upstream's TLS failed, and why.
#[track_caller]
fn assert_tls_502(response: &Response<Bytes>, reason: &str) {
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{response:?}");
    assert_eq!(body_text(response), "upstream TLS error\n");
    assert_eq!(
        header(response, UPSTREAM_TLS_HEADER),
        reason,
        "{response:?}"
    );
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_over_tls_sends_sni_and_reuses_one_connection() {
    let ca = Ca::new("test CA");
    let cert = ca.leaf(&["api.test"]);
    // A server without ALPN, and one that only speaks HTTP/1.1: both get HTTP/1.1.
    let none = TlsServer::start(ServerSetup::new(&cert, &[])).await;
    let h1 = TlsServer::start(ServerSetup::new(&cert, &[b"http/1.1"])).await;
    let (_engine, addr) = serve_hosts(vec![
        tls_backend("none", Http1, &[&none], verify("api.test", &ca)),
        tls_backend("h1", Http1, &[&h1], verify("api.test", &ca)),
    ]);
    for proto in BOTH {
        let mut client = Client::connect(proto, addr).await;
        for _ in 0..10 {
            for host in ["none", "h1"] {
                let response = client.get(host, "/some/path?q=1").await;
                assert_eq!(response.status(), StatusCode::OK, "{response:?}");
                assert_eq!(body_text(&response), "ok");
                assert_eq!(header(&response, "x-version"), "HTTP/1.1");
                assert_eq!(header(&response, "x-host"), host);
                assert_eq!(header(&response, "x-sni"), "api.test");
            }
        }
    }
    assert_eq!(none.requests(), 20);
    assert_eq!(h1.requests(), 20);
    // Forty requests in a row, one TLS handshake each.
    for server in [&none, &h1] {
        let accepted = server.accepted();
        assert_eq!(accepted.len(), 1, "{accepted:?}");
        assert_eq!(accepted[0].sni.as_deref(), Some("api.test"));
        assert!(server.failed().is_empty(), "{:?}", server.failed());
    }
    assert_eq!(none.accepted()[0].alpn, None);
    assert_eq!(h1.accepted()[0].alpn.as_deref(), Some("http/1.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_is_chosen_by_alpn_and_multiplexed() {
    let ca = Ca::new("test CA");
    let cert = ca.leaf(&["api.test"]);
    let server = TlsServer::start(ServerSetup::new(&cert, &[b"h2", b"http/1.1"])).await;
    let (_engine, addr) = serve_hosts(vec![tls_backend(
        "app",
        Http1,
        &[&server],
        verify("api.test", &ca),
    )]);
    for proto in BOTH {
        let mut client = Client::connect(proto, addr).await;
        let response = client.get("app", "/").await;
        assert_eq!(response.status(), StatusCode::OK, "{response:?}");
        assert_eq!(header(&response, "x-version"), "HTTP/2.0");
        assert_eq!(header(&response, "x-alpn"), "h2");
        assert_eq!(header(&response, "x-scheme"), "https");
        // The client's host became the :authority.
        assert_eq!(header(&response, "x-host"), "app");
    }
    // Concurrent requests from several clients share the one HTTP/2 connection.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            tokio::spawn(async move {
                let proto = if i % 2 == 0 { Proto::Http1 } else { Proto::H2c };
                let mut client = Client::connect(proto, addr).await;
                client.get("app", "/").await.status()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(server.requests(), 22);
    assert_eq!(server.handshakes(), 1, "{:?}", server.accepted());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_style_h2c_backend_over_tls_offers_only_h2_and_trailers_arrive() {
    let ca = Ca::new("test CA");
    let cert = ca.leaf(&["grpc.test"]);
    let server = TlsServer::start(ServerSetup::new(&cert, &[b"h2", b"http/1.1"])).await;
    // A server that ignores ALPN cannot be spoken to with HTTP/2 by a gRPC backend.
    let no_alpn = TlsServer::start(ServerSetup::new(&cert, &[])).await;
    let (_engine, addr) = serve_hosts(vec![
        tls_backend("grpc", H2c, &[&server], verify("grpc.test", &ca)),
        tls_backend("old", H2c, &[&no_alpn], verify("grpc.test", &ca)),
    ]);

    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let call = || {
        Request::builder()
            .method(Method::POST)
            .uri("http://grpc/novaedge.test.Svc/Call")
            .header(header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi")))
            .unwrap()
    };
    let response = sender.send_request(call()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-version"], "HTTP/2.0");
    assert_eq!(response.headers()["x-alpn"], "h2");
    let body = response.into_body().collect().await.unwrap();
    let trailers = body.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "served");
    assert_eq!(&body.to_bytes()[..], b"\0\0\0\0\x02hi");

    // The server was offered h2 alone (it prefers h2 anyway, so ask the connection it saw).
    assert_eq!(server.accepted()[0].alpn.as_deref(), Some("h2"));

    let mut client = Client::connect(Proto::H2c, addr).await;
    let response = client.get("old", "/").await;
    assert_tls_502(&response, "no ALPN h2");
    assert_eq!(no_alpn.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_backend_over_tls_never_offers_http1() {
    let ca = Ca::new("test CA");
    let cert = ca.leaf(&["grpc.test"]);
    // Speaks only HTTP/1.1: with nothing in common, the server refuses the handshake.
    let server = TlsServer::start(ServerSetup::new(&cert, &[b"http/1.1"])).await;
    let (_engine, addr) = serve_hosts(vec![tls_backend(
        "grpc",
        H2c,
        &[&server],
        verify("grpc.test", &ca),
    )]);
    let mut client = Client::connect(Proto::H2c, addr).await;
    let response = client.get("grpc", "/").await;
    assert_tls_502(&response, "received fatal alert: NoApplicationProtocol");
    assert_eq!(server.handshakes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_endpoint_without_server_name_is_verified_by_its_ip_address() {
    let ca = Ca::new("test CA");
    let by_ip = ca.leaf(&["127.0.0.1"]);
    let by_name = ca.leaf(&["api.test"]);
    let ip_server = TlsServer::start(ServerSetup::new(&by_ip, &[])).await;
    let name_server = TlsServer::start(ServerSetup::new(&by_name, &[])).await;
    let (_engine, addr) = serve_hosts(vec![
        tls_backend("ip", Http1, &[&ip_server], verify("", &ca)),
        tls_backend("name", Http1, &[&name_server], verify("", &ca)),
    ]);
    let mut client = Client::connect(Proto::Http1, addr).await;
    let response = client.get("ip", "/").await;
    assert_eq!(response.status(), StatusCode::OK, "{response:?}");
    // No SNI is sent for an IP address.
    assert_eq!(header(&response, "x-sni"), "-");
    assert_eq!(ip_server.accepted()[0].sni, None);

    // A certificate that names only a DNS name does not do for an IP address.
    let response = client.get("name", "/").await;
    assert_tls_502(
        &response,
        "invalid peer certificate: certificate not valid for name \"127.0.0.1\"; \
         certificate is only valid for DnsName(\"api.test\")",
    );
    assert_eq!(name_server.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_of_an_unknown_ca_is_a_502_and_the_rest_keeps_serving() {
    let ca = Ca::new("test CA");
    let impostor = Ca::new("impostor CA");
    let good_cert = ca.leaf(&["api.test"]);
    let bad_cert = impostor.leaf(&["api.test"]);
    let good = TlsServer::start(ServerSetup::new(&good_cert, &[])).await;
    let bad1 = TlsServer::start(ServerSetup::new(&bad_cert, &[])).await;
    let bad2 = TlsServer::start(ServerSetup::new(&bad_cert, &[])).await;
    let (_engine, addr) = serve_hosts(vec![
        tls_backend("good", Http1, &[&good], verify("api.test", &ca)),
        tls_backend("bad", Http1, &[&bad1, &bad2], verify("api.test", &ca)),
    ]);
    for proto in BOTH {
        let mut client = Client::connect(proto, addr).await;
        for _ in 0..3 {
            let response = client.get("bad", "/").await;
            assert_tls_502(&response, "invalid peer certificate: UnknownIssuer");
            assert_eq!(client.get("good", "/").await.status(), StatusCode::OK);
        }
        assert!(client.is_open());
    }
    assert_eq!(bad1.requests() + bad2.requests(), 0);
    assert_eq!(bad1.handshakes() + bad2.handshakes(), 0);
    // A failed handshake is a failed connect: the request went on to the other endpoint.
    assert!(!bad1.failed_handshakes(1).await.is_empty());
    assert!(!bad2.failed_handshakes(1).await.is_empty());
    assert_eq!(good.requests(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_backend_requiring_a_client_certificate() {
    let ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let rogue_ca = Ca::new("rogue client CA");
    let server_cert = ca.leaf(&["secure.test"]);
    let client_cert = client_ca.leaf(&["proxy.test"]);
    let rogue_cert = rogue_ca.leaf(&["proxy.test"]);
    let server = TlsServer::start(ServerSetup {
        client_ca: Some(&client_ca),
        ..ServerSetup::new(&server_cert, &[b"h2", b"http/1.1"])
    })
    .await;
    let with_cert = |cert: Option<&Leaf>| UpstreamTls {
        client_certificate: cert.map(|c| c.client_certificate("Secret shop/client")),
        ..verify("secure.test", &ca)
    };
    let (_engine, addr) = serve_hosts(vec![
        tls_backend("mtls", Http1, &[&server], with_cert(Some(&client_cert))),
        tls_backend("mtls-grpc", H2c, &[&server], with_cert(Some(&client_cert))),
        tls_backend("anonymous", Http1, &[&server], with_cert(None)),
        tls_backend("rogue", Http1, &[&server], with_cert(Some(&rogue_cert))),
    ]);
    for proto in BOTH {
        let mut client = Client::connect(proto, addr).await;
        for host in ["mtls", "mtls-grpc"] {
            let response = client.get(host, "/").await;
            assert_eq!(response.status(), StatusCode::OK, "{host}: {response:?}");
            assert_eq!(header(&response, "x-client-cert"), "present");
        }
        // TLS 1.3: the server refuses after the client's part of the handshake, so the refusal
        // comes as the answer to the request; the reason is the server's alert either way.
        for _ in 0..2 {
            let response = client.get("anonymous", "/").await;
            assert_tls_502(&response, "received fatal alert: CertificateRequired");
            let response = client.get("rogue", "/").await;
            assert_tls_502(&response, "received fatal alert: UnknownCA");
        }
        // Nothing was poisoned: the good client certificate still works.
        assert_eq!(client.get("mtls", "/").await.status(), StatusCode::OK);
    }
    assert_eq!(server.requests(), 6);
    assert!(server.accepted().iter().all(|a| a.client_cert));
    let failed = server.failed_handshakes(8).await;
    assert_eq!(failed.len(), 8, "{failed:?}");
    assert!(
        failed
            .iter()
            .any(|f| f.contains("peer sent no certificates"))
            && failed.iter().any(|f| f.contains("UnknownIssuer")),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tls_configurations_to_one_address_never_share_connections() {
    let ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let server_cert = ca.leaf(&["shared.test"]);
    let client_cert = client_ca.leaf(&["proxy.test"]);
    let server = TlsServer::start(ServerSetup {
        client_ca: Some(&client_ca),
        client_optional: true,
        ..ServerSetup::new(&server_cert, &[b"http/1.1"])
    })
    .await;
    let (_engine, addr) = serve_hosts(vec![
        tls_backend(
            "with",
            Http1,
            &[&server],
            UpstreamTls {
                client_certificate: Some(client_cert.client_certificate("Secret shop/client")),
                ..verify("shared.test", &ca)
            },
        ),
        tls_backend("without", Http1, &[&server], verify("shared.test", &ca)),
    ]);
    let mut client = Client::connect(Proto::Http1, addr).await;
    for _ in 0..10 {
        let response = client.get("with", "/").await;
        assert_eq!(header(&response, "x-client-cert"), "present");
        let response = client.get("without", "/").await;
        assert_eq!(header(&response, "x-client-cert"), "absent");
    }
    assert_eq!(server.handshakes(), 2, "{:?}", server.accepted());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_tls_material_is_refused_and_the_old_snapshot_keeps_serving() {
    let ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let server_cert = ca.leaf(&["api.test"]);
    let client_cert = client_ca.leaf(&["proxy.test"]);
    let other_key = client_ca.leaf(&["other.test"]);
    let server = TlsServer::start(ServerSetup::new(&server_cert, &[])).await;
    let good = tls_backend(
        "shop/api:443",
        Http1,
        &[&server],
        UpstreamTls {
            client_certificate: Some(client_cert.client_certificate("Secret shop/client")),
            ..verify("api.test", &ca)
        },
    );
    let (engine, addr) = serve_hosts(vec![good.clone()]);
    let mut client = Client::connect(Proto::Http1, addr).await;
    let host = host_of("shop/api:443");
    assert_eq!(client.get(&host, "/").await.status(), StatusCode::OK);

    let refused = |backend: Backend| match engine.apply(&hosts_snapshot(2, vec![backend])) {
        Err(ApplyError::Compile(CompileError::UpstreamTls(e))) => e.to_string(),
        other => panic!("expected the snapshot to be refused, got {other:?}"),
    };
    let mut mismatched = good.clone();
    if let Some(c) = &mut mismatched.tls.as_mut().unwrap().client_certificate {
        c.private_key_pem = other_key.key_pem.clone();
    }
    assert_eq!(
        refused(mismatched),
        "backend \"shop/api:443\": tls.client_certificate (Secret shop/client): \
         private key does not match the certificate"
    );
    let mut bad_ca = good.clone();
    bad_ca.tls.as_mut().unwrap().ca_pem =
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".into();
    let message = refused(bad_ca);
    assert!(
        message.starts_with("backend \"shop/api:443\": tls.ca_pem: bad PEM"),
        "{message}"
    );
    let mut bad_chain = good.clone();
    if let Some(c) = &mut bad_chain.tls.as_mut().unwrap().client_certificate {
        c.cert_chain_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into();
    }
    let message = refused(bad_chain);
    assert!(
        message.starts_with(
            "backend \"shop/api:443\": tls.client_certificate.cert_chain_pem \
             (Secret shop/client): certificate rejected"
        ),
        "{message}"
    );

    // Nothing changed: version 1 keeps serving, on its connection.
    assert_eq!(engine.version(), Some(1));
    for _ in 0..3 {
        assert_eq!(client.get(&host, "/").await.status(), StatusCode::OK);
    }
    assert_eq!(server.handshakes(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_the_same_tls_settings_keeps_the_connections() {
    let ca = Ca::new("test CA");
    let cert = ca.leaf(&["api.test"]);
    let server = TlsServer::start(ServerSetup::new(&cert, &[b"h2"])).await;
    let app = tls_backend("app", Http1, &[&server], verify("api.test", &ca));
    let (engine, addr) = serve_hosts(vec![app.clone()]);
    let mut client = Client::connect(Proto::Http1, addr).await;
    assert_eq!(client.get("app", "/").await.status(), StatusCode::OK);
    engine.apply(&hosts_snapshot(2, vec![app.clone()])).unwrap();
    assert_eq!(client.get("app", "/").await.status(), StatusCode::OK);
    assert_eq!(server.handshakes(), 1, "the reload dropped the connection");

    // Changed settings: a connection of their own.
    let mut changed = app;
    changed.tls.as_mut().unwrap().ca_pem = format!("{}{}", ca.pem(), Ca::new("other").pem());
    engine.apply(&hosts_snapshot(3, vec![changed])).unwrap();
    assert_eq!(client.get("app", "/").await.status(), StatusCode::OK);
    assert_eq!(server.handshakes(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_to_a_tls_backend_goes_over_http1_even_when_requests_use_h2() {
    let ca = Ca::new("test CA");
    let cert = ca.leaf(&["ws.test"]);
    let server = TlsServer::start(ServerSetup::new(&cert, &[b"h2", b"http/1.1"])).await;
    let (_engine, addr) = serve_hosts(vec![tls_backend(
        "ws",
        Http1,
        &[&server],
        verify("ws.test", &ca),
    )]);
    let mut client = Client::connect(Proto::Http1, addr).await;
    assert_eq!(header(&client.get("ws", "/").await, "x-alpn"), "h2");

    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async("ws://ws/chat", stream)
        .await
        .expect("WebSocket handshake through the proxy");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["x-alpn"], "http/1.1");
    assert_eq!(response.headers()["x-version"], "HTTP/1.1");
    for i in 0..3 {
        let message = Message::text(format!("hello {i}"));
        ws.send(message.clone()).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), message);
    }
    ws.close(None).await.unwrap();
    // Requests still go over HTTP/2.
    assert_eq!(header(&client.get("ws", "/").await, "x-alpn"), "h2");
    let alpns: Vec<_> = server.accepted().into_iter().map(|a| a.alpn).collect();
    assert_eq!(
        alpns,
        [Some("h2".to_owned()), Some("http/1.1".to_owned())],
        "one h2 connection for requests, one HTTP/1.1 connection for the WebSocket"
    );
}

// === active health checks over TLS ===

/// The `GET /healthz` check, 2xx healthy.
fn healthz() -> novaedge_snapshot::HealthProbe {
    novaedge_snapshot::HealthProbe::Http {
        path: "/healthz".into(),
        host: None,
        expected_statuses: vec![200..=299],
    }
}

const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// An active check of `probe`, fast enough for a test; two probes in a row decide.
fn fast_check(probe: novaedge_snapshot::HealthProbe) -> novaedge_snapshot::ActiveHealthCheck {
    novaedge_snapshot::ActiveHealthCheck {
        interval: PROBE_INTERVAL,
        jitter: std::time::Duration::ZERO,
        timeout: std::time::Duration::from_secs(2),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        ..novaedge_snapshot::ActiveHealthCheck::new(probe)
    }
}

/// `backend` checked by `check`, without panic mode: an endpoint the check has not passed gets
/// no traffic at all.
fn checked(mut backend: Backend, check: novaedge_snapshot::ActiveHealthCheck) -> Backend {
    backend.health.active = Some(check);
    backend.load_balancing.panic_threshold_percent = 0;
    backend
}

/// Sends requests to `host` until one answers `status`. Panics after 10 s.
async fn until_status(client: &mut Client, host: &str, status: StatusCode) {
    let mut last = None;
    for _ in 0..500 {
        let response = client.get(host, "/").await;
        if response.status() == status {
            return;
        }
        last = Some(response);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{host} did not answer {status} in 10 s; last: {last:?}");
}

/// Sends requests to `host`, every one answered `200`, until `done`. Panics after 10 s.
async fn serve_until(client: &mut Client, host: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        let response = client.get(host, "/").await;
        assert_eq!(response.status(), StatusCode::OK, "{response:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_grpc_probes_on_the_tls_port_speak_tls_and_tcp_probes_only_connect() {
    use novaedge_snapshot::HealthProbe;
    let ca = Ca::new("test CA");
    let cert = ca.leaf(&["api.test"]);
    let server = TlsServer::start(ServerSetup::new(&cert, &[b"h2", b"http/1.1"])).await;
    let tls = || verify("api.test", &ca);
    let grpc_health = HealthProbe::Grpc {
        service: String::new(),
        authority: None,
    };
    // Refused before: accepted now.
    let (_engine, addr) = serve_hosts(vec![
        checked(
            tls_backend("http", Http1, &[&server], tls()),
            fast_check(healthz()),
        ),
        checked(
            tls_backend("grpc", H2c, &[&server], tls()),
            fast_check(grpc_health),
        ),
        checked(
            tls_backend("tcp", Http1, &[&server], tls()),
            fast_check(HealthProbe::Tcp),
        ),
    ]);
    let mut client = Client::connect(Proto::Http1, addr).await;
    for host in ["http", "grpc", "tcp"] {
        until_status(&mut client, host, StatusCode::OK).await;
    }
    let probes = server.probes();
    assert!(
        probes.iter().all(|p| p.sni.as_deref() == Some("api.test")),
        "{probes:?}"
    );
    // Each probe offered the one protocol it speaks, though the server would take either.
    let alpns: std::collections::HashSet<_> = probes.iter().map(|p| p.alpn.clone()).collect();
    assert_eq!(
        alpns,
        [Some("http/1.1".to_owned()), Some("h2".to_owned())].into()
    );

    // The probes read the server's answers: failing ones take the only endpoint out.
    server.set_health(503);
    until_status(&mut client, "http", StatusCode::SERVICE_UNAVAILABLE).await;
    until_status(&mut client, "grpc", StatusCode::SERVICE_UNAVAILABLE).await;
    // A TCP probe only connects; it cannot tell.
    assert_eq!(client.get("tcp", "/").await.status(), StatusCode::OK);
    server.set_health(200);
    until_status(&mut client, "http", StatusCode::OK).await;
    until_status(&mut client, "grpc", StatusCode::OK).await;
}

/// The task's end-to-end case: mTLS backend, HTTP check on the traffic port. The probes must
/// present the client certificate, or no endpoint would ever pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_its_probe_over_mtls_gets_no_traffic_until_it_recovers() {
    let ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let server_cert = ca.leaf(&["api.test"]);
    let client_cert = client_ca.leaf(&["proxy.test"]);
    let setup = || ServerSetup {
        client_ca: Some(&client_ca),
        ..ServerSetup::new(&server_cert, &[b"h2", b"http/1.1"])
    };
    let (a, b) = (
        TlsServer::start(setup()).await,
        TlsServer::start(setup()).await,
    );
    let tls = UpstreamTls {
        client_certificate: Some(client_cert.client_certificate("Secret shop/client")),
        ..verify("api.test", &ca)
    };
    let app = checked(
        tls_backend("app", Http1, &[&a, &b], tls),
        fast_check(healthz()),
    );
    let (_engine, addr) = serve_hosts(vec![app]);
    let mut client = Client::connect(Proto::Http1, addr).await;
    // Nothing is served before a first probe passes.
    until_status(&mut client, "app", StatusCode::OK).await;
    serve_until(&mut client, "app", || a.requests() > 5 && b.requests() > 5).await;

    // b fails its probes: once the second failure is decided (a third probe has come since),
    // b gets nothing, and no request fails.
    b.set_health(503);
    b.probed(b.probes().len(), 3).await;
    let served_b = b.requests();
    let served_a = a.requests();
    serve_until(&mut client, "app", || a.requests() > served_a + 50).await;
    assert_eq!(
        b.requests(),
        served_b,
        "an endpoint failing its probe got traffic"
    );

    // b recovers: back after two passing probes.
    b.set_health(200);
    serve_until(&mut client, "app", || b.requests() > served_b + 5).await;

    for server in [&a, &b] {
        let probes = server.probes();
        assert!(!probes.is_empty());
        for probe in probes {
            assert_eq!(probe.sni.as_deref(), Some("api.test"));
            assert_eq!(probe.alpn.as_deref(), Some("http/1.1"));
            assert!(probe.client_cert, "a probe without the client certificate");
        }
    }
    assert!(a.failed().is_empty() && b.failed().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_of_a_separate_health_port_stay_cleartext() {
    let ca = Ca::new("test CA");
    let cert = ca.leaf(&["api.test"]);
    let server = TlsServer::start(ServerSetup::new(&cert, &[])).await;
    let health_port = echo("health").await;
    let check = novaedge_snapshot::ActiveHealthCheck {
        port: Some(health_port.local_addr().port()),
        ..fast_check(healthz())
    };
    let app = checked(
        tls_backend("app", Http1, &[&server], verify("api.test", &ca)),
        check,
    );
    let (_engine, addr) = serve_hosts(vec![app]);
    let mut client = Client::connect(Proto::Http1, addr).await;
    until_status(&mut client, "app", StatusCode::OK).await;
    assert!(health_port.requests() > 0);
    assert!(server.probes().is_empty());
}

/// The health settings stay; only the CA changes. The probes must dial with the new one, so
/// the checker is rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changing_only_the_tls_settings_restarts_the_probes_with_them() {
    let (ca, other_ca) = (Ca::new("CA"), Ca::new("other CA"));
    let (cert, other_cert) = (ca.leaf(&["api.test"]), other_ca.leaf(&["api.test"]));
    let a = TlsServer::start(ServerSetup::new(&cert, &[])).await;
    let b = TlsServer::start(ServerSetup::new(&other_cert, &[])).await;
    let app = checked(
        tls_backend("app", Http1, &[&a, &b], verify("api.test", &ca)),
        fast_check(healthz()),
    );
    let (engine, addr) = serve_hosts(vec![app.clone()]);
    let mut client = Client::connect(Proto::Http1, addr).await;
    // b's certificate is of a CA not trusted: its probes fail the handshake, it gets nothing.
    until_status(&mut client, "app", StatusCode::OK).await;
    serve_until(&mut client, "app", || a.requests() > 20).await;
    assert!(!b.failed_handshakes(2).await.is_empty());
    assert_eq!((b.requests(), b.probes().len()), (0, 0));

    // Both CAs trusted: b passes its probes and gets traffic.
    let mut both = app.clone();
    both.tls.as_mut().unwrap().ca_pem = format!("{}{}", ca.pem(), other_ca.pem());
    engine.apply(&hosts_snapshot(2, vec![both])).unwrap();
    serve_until(&mut client, "app", || b.requests() > 5).await;
    assert!(!b.probes().is_empty());

    // And back: b's probes fail again; it is out.
    engine.apply(&hosts_snapshot(3, vec![app])).unwrap();
    let probes = b.probes().len();
    tokio::time::sleep(PROBE_INTERVAL * 6).await;
    let served_b = b.requests();
    let served_a = a.requests();
    serve_until(&mut client, "app", || a.requests() > served_a + 50).await;
    assert_eq!(b.requests(), served_b);
    assert!(
        b.probes().len() <= probes + 1,
        "probes with the old CA went on after the reload"
    );
}
