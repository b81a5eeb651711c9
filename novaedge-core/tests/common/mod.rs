//! Helpers shared by the integration tests: echo backends, snapshot builders and HTTP/1.1 and
//! h2c clients that keep one connection for their whole life, so a test can tell whether the
//! proxy ever closed it.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use novaedge_core::{Engine, EngineConfig};
use novaedge_echo::{EchoServer, RequestInfo};
use novaedge_snapshot::{
    Backend, BackendRef, ConfigSnapshot, Endpoint, HeaderMatch, Listener, ListenerProtocol,
    PathMatch, Route, RouteMatch, RouteRule, UpstreamProtocol,
};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

pub(crate) const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// === backends and engine ===

/// An echo server on 127.0.0.1 with a free port, answering as `name`.
pub(crate) async fn echo(name: &str) -> EchoServer {
    EchoServer::start(SocketAddr::new(LOCALHOST, 0), name)
        .await
        .expect("echo server starts")
}

/// An engine whose listeners bind 127.0.0.1 unless told otherwise.
pub(crate) fn engine() -> Engine {
    Engine::new(EngineConfig {
        default_bind: LOCALHOST,
        ..EngineConfig::default()
    })
}

/// A port that was free a moment ago, for fixed-port listeners and for endpoints that refuse
/// connections.
// Not every test binary that includes `common` uses it.
#[allow(unused_imports)]
pub(crate) use novaedge_echo::free_port;

/// An engine serving every request on listener `web` (any host, any path) from `backend`;
/// returns the engine (keep it alive) and the listener's address.
// Not every test binary that includes `common` uses it.
#[allow(dead_code)]
pub(crate) fn serve_backend(backend: Backend) -> (Engine, SocketAddr) {
    serve_backend_with(EngineConfig::default(), backend)
}

/// [`serve_backend`] with an engine of `config` (its `default_bind` replaced by 127.0.0.1).
pub(crate) fn serve_backend_with(config: EngineConfig, backend: Backend) -> (Engine, SocketAddr) {
    let engine = Engine::new(EngineConfig {
        default_bind: LOCALHOST,
        ..config
    });
    let name = backend.name.clone();
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![route("default/r", "web", &[], vec![to(&name)])],
            vec![backend],
        ))
        .expect("snapshot applies");
    let addr = engine.local_addr("web").expect("listener is bound");
    (engine, addr)
}

/// The `Content-Length` of a response head, lower-cased.
#[allow(dead_code)]
pub(crate) fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .expect("a content-length")
        .trim()
        .parse()
        .expect("a length")
}

// === snapshot builders ===

pub(crate) fn snapshot(
    version: u64,
    listeners: Vec<Listener>,
    routes: Vec<Route>,
    backends: Vec<Backend>,
) -> ConfigSnapshot {
    ConfigSnapshot {
        version,
        listeners,
        routes,
        backends,
        vips: Vec::new(),
    }
}

/// A listener on 127.0.0.1 with a port of the OS's choosing.
pub(crate) fn listener(name: &str) -> Listener {
    listener_on(name, 0)
}

pub(crate) fn listener_on(name: &str, port: u16) -> Listener {
    Listener {
        name: name.to_owned(),
        bind: Some(LOCALHOST),
        port,
        protocol: ListenerProtocol::Http,
        tls: None,
        https_redirect_port: None,
    }
}

/// A backend whose endpoints are the given echo servers, all ready, weight 1.
pub(crate) fn backend(name: &str, protocol: UpstreamProtocol, servers: &[&EchoServer]) -> Backend {
    backend_at(
        name,
        protocol,
        servers.iter().map(|s| endpoint(s.local_addr())).collect(),
    )
}

pub(crate) fn backend_at(
    name: &str,
    protocol: UpstreamProtocol,
    endpoints: Vec<Endpoint>,
) -> Backend {
    Backend {
        name: name.to_owned(),
        protocol,
        endpoints,
        load_balancing: Default::default(),
        health: Default::default(),
        tls: None,
    }
}

pub(crate) fn endpoint(address: SocketAddr) -> Endpoint {
    Endpoint {
        address,
        ready: true,
        weight: 1,
    }
}

pub(crate) fn route(
    name: &str,
    listener: &str,
    hostnames: &[&str],
    rules: Vec<RouteRule>,
) -> Route {
    Route {
        name: name.to_owned(),
        listener: listener.to_owned(),
        hostnames: hostnames.iter().map(|h| (*h).to_owned()).collect(),
        rules,
        creation_timestamp: 0,
        dialect: Default::default(),
    }
}

/// A rule sending requests that match any of `matches` (all requests if empty) to the weighted
/// `backends`.
pub(crate) fn rule(matches: Vec<RouteMatch>, backends: &[(&str, u32)]) -> RouteRule {
    RouteRule {
        matches,
        backends: backends
            .iter()
            .map(|(name, weight)| BackendRef {
                backend: (*name).to_owned(),
                weight: *weight,
            })
            .collect(),
        invalid_backend_weight: 0,
        filters: Default::default(),
    }
}

/// A rule sending every request to one backend.
pub(crate) fn to(backend: &str) -> RouteRule {
    rule(Vec::new(), &[(backend, 1)])
}

pub(crate) fn prefix(path: &str) -> RouteMatch {
    RouteMatch {
        path: PathMatch::Prefix(path.to_owned()),
        ..RouteMatch::default()
    }
}

pub(crate) fn exact(path: &str) -> RouteMatch {
    RouteMatch {
        path: PathMatch::Exact(path.to_owned()),
        ..RouteMatch::default()
    }
}

/// Requires header `name: value` on top of `m`.
pub(crate) fn with_header(mut m: RouteMatch, name: &'static str, value: &str) -> RouteMatch {
    m.headers.push(HeaderMatch {
        name: http::HeaderName::from_static(name),
        value: value.to_owned(),
        kind: Default::default(),
    });
    m
}

// === clients ===

/// How a test client talks to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Http1,
    /// HTTP/2 with prior knowledge, on the same port as HTTP/1.1.
    H2c,
}

pub(crate) const BOTH: [Proto; 2] = [Proto::Http1, Proto::H2c];

/// One client connection, HTTP/1.1 with keep-alive or h2c, used for every request of a test.
#[derive(Debug)]
pub(crate) struct Client {
    proto: Proto,
    sender: Sender,
    connection: JoinHandle<Result<(), hyper::Error>>,
}

#[derive(Debug)]
enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Client {
    pub(crate) async fn connect(proto: Proto, addr: SocketAddr) -> Client {
        Self::try_connect(proto, addr)
            .await
            .unwrap_or_else(|e| panic!("{proto:?} client connects to {addr}: {e}"))
    }

    pub(crate) async fn try_connect(
        proto: Proto,
        addr: SocketAddr,
    ) -> Result<Client, Box<dyn std::error::Error + Send + Sync>> {
        let io = TokioIo::new(TcpStream::connect(addr).await?);
        let (sender, connection) = match proto {
            Proto::Http1 => {
                let (sender, conn) = http1::handshake(io).await?;
                (Sender::H1(sender), tokio::spawn(conn))
            }
            Proto::H2c => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
                (Sender::H2(sender), tokio::spawn(conn))
            }
        };
        Ok(Client {
            proto,
            sender,
            connection,
        })
    }

    pub(crate) fn proto(&self) -> Proto {
        self.proto
    }

    /// A request for `path` (with its query) on virtual host `host`, in the form this client's
    /// protocol wants: a `Host` header on HTTP/1.1, the `:authority` on HTTP/2.
    pub(crate) fn request(&self, method: Method, host: &str, path: &str) -> http::request::Builder {
        match self.proto {
            Proto::Http1 => Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, host),
            Proto::H2c => Request::builder()
                .method(method)
                .uri(format!("http://{host}{path}")),
        }
    }

    /// Sends `req` on this client's connection and reads the whole response.
    pub(crate) async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Bytes>, hyper::Error> {
        let response = match &mut self.sender {
            Sender::H1(sender) => {
                sender.ready().await?;
                sender.send_request(req).await?
            }
            Sender::H2(sender) => {
                sender.ready().await?;
                sender.send_request(req).await?
            }
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Response::from_parts(parts, body))
    }

    /// `GET path` on `host`; panics if the exchange fails.
    pub(crate) async fn get(&mut self, host: &str, path: &str) -> Response<Bytes> {
        let req = self
            .request(Method::GET, host, path)
            .body(Full::default())
            .expect("valid request");
        let proto = self.proto;
        self.send(req)
            .await
            .unwrap_or_else(|e| panic!("{proto:?} GET {host}{path}: {e}"))
    }

    /// Waits until the connection is closed; the proxy closing it ends it without an error.
    /// The timeout only turns a hang into a failure.
    pub(crate) async fn closed(self) -> Result<(), hyper::Error> {
        tokio::time::timeout(std::time::Duration::from_secs(20), self.connection)
            .await
            .expect("the connection closes")
            .expect("connection task")
    }

    /// True while the connection has not been closed by either side.
    pub(crate) fn is_open(&self) -> bool {
        let closed = match &self.sender {
            Sender::H1(sender) => sender.is_closed(),
            Sender::H2(sender) => sender.is_closed(),
        };
        !closed && !self.connection.is_finished()
    }
}

// === responses ===

/// The request as the echo backend saw it; panics unless the response is a `200` with the echo
/// server's JSON.
#[track_caller]
pub(crate) fn info(response: &Response<Bytes>) -> RequestInfo {
    assert_eq!(response.status(), StatusCode::OK, "{response:?}");
    serde_json::from_slice(response.body())
        .unwrap_or_else(|e| panic!("body is not an echo RequestInfo ({e}): {response:?}"))
}

/// The `x-echo-name` of a response from an echo backend.
#[track_caller]
pub(crate) fn echo_name(response: &Response<Bytes>) -> &str {
    response
        .headers()
        .get(novaedge_echo::NAME_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {} header: {response:?}", novaedge_echo::NAME_HEADER))
}

pub(crate) fn body_text(response: &Response<Bytes>) -> &str {
    std::str::from_utf8(response.body()).expect("UTF-8 body")
}
