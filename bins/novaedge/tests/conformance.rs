//! Gateway API conformance behaviour, end to end through `novaedge run`.
//!
//! Every directory under `tests/conformance/` is one HTTPRoute test of the upstream Gateway
//! API conformance suite, transcribed as data (see `tests/conformance/README.md`):
//! `manifests.yaml` holds the objects, `cases.yaml` the requests and what must come of them.
//! For each directory this test
//!
//! 1. starts one echo backend per `${ECHO_PORT:namespace/name}` placeholder of the manifests,
//!    named `namespace/name` so every answer says which Service's backend it came from (the
//!    suite's echo pods report their pod name and namespace the same way);
//! 2. replaces every `${PORT_NAME}` placeholder with a free port on 127.0.0.1, writes the
//!    manifests (and the certificates the case asks for) to a temporary directory;
//! 3. checks `novaedge check --status` against the status conditions the upstream test asserts;
//! 4. starts `novaedge run` on the directory and sends every request on a fresh connection
//!    (HTTP/1.1, or HTTP/2 prior knowledge, over TLS or a WebSocket when the case asks), with
//!    the `Host` header the case names, comparing status, the backend that answered, the
//!    request as the backend saw it, the response headers, the redirect `Location`, mirrored
//!    copies and weighted distributions as the suite's `CompareRoundTrip` does;
//! 5. applies the case's changes (objects deleted from the manifests), waits for the reload
//!    and checks again.
//!
//! Mismatches are collected across all cases; the test fails once, listing every one with its
//! case and request.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use novaedge_echo::{EchoServer, RequestInfo, SET_HEADER};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where the transcribed cases live.
fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

// === the case files ===

/// `cases.yaml`: what the upstream test asserts, in NovaEdge's terms.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    /// The upstream test file the case is transcribed from.
    upstream: String,
    /// What the upstream test checks, in one sentence.
    description: String,
    /// Certificates written next to the manifests, for Secrets that name them by file.
    #[serde(default)]
    certificates: Vec<Certificate>,
    #[serde(default)]
    status: Vec<StatusExpectation>,
    #[serde(default)]
    requests: Vec<Expectation>,
    #[serde(default)]
    distributions: Vec<Distribution>,
    /// Later phases: objects removed from the manifests, then more checks.
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    /// `Kind namespace/name` of the objects to delete.
    delete: Vec<String>,
    #[serde(default)]
    status: Vec<StatusExpectation>,
    #[serde(default)]
    requests: Vec<Expectation>,
}

/// A certificate `NAME.crt` / `NAME.key` for `hosts`, signed by the test CA (`ca.crt`, which
/// HTTPS requests trust).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Certificate {
    name: String,
    hosts: Vec<String>,
}

/// One condition, or the attached-route count, that `novaedge check --status` must report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusExpectation {
    /// `namespace/name` of an HTTPRoute; `parent` names the Gateway (`namespace/name`) whose
    /// parent status is meant.
    route: Option<String>,
    parent: Option<String>,
    /// `namespace/name` of a Gateway; with `listener`, that listener's status.
    gateway: Option<String>,
    listener: Option<String>,
    /// `Type=Status` or `Type=Status (Reason)`, each of which must be reported.
    #[serde(default)]
    conditions: Vec<String>,
    attached_routes: Option<u32>,
}

/// One request and what must come of it; fields left out are not checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectation {
    request: Request,
    /// The response status; 200 when left out.
    status: Option<u16>,
    /// With a 200: the Service whose echo backend must answer, and its namespace.
    backend: Option<String>,
    namespace: Option<String>,
    /// With a 200: the request as the backend must see it. When left out, the request as sent
    /// (path with query, method, and the host if the request names one).
    backend_request: Option<BackendRequest>,
    /// Response headers the backend is asked to send (the suite's `BackendSetResponseHeaders`).
    #[serde(default)]
    backend_response_headers: BTreeMap<String, String>,
    response: Option<ResponseExpectation>,
    redirect: Option<RedirectExpectation>,
    /// `namespace/name` of the backends that must receive a copy of the request.
    #[serde(default)]
    mirrored_to: Vec<String>,
    /// Instead of a plain request: a WebSocket upgrade to the request's path, then these
    /// messages, each of which must come back unchanged.
    websocket: Option<WebSocketExchange>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebSocketExchange {
    text: String,
    binary: Vec<u8>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    /// The `${PORT_NAME}` placeholder of the listener to send to; `HTTP` when left out.
    listener: Option<String>,
    /// `https` sends the request over TLS, trusting the test CA, with the host as SNI.
    scheme: Option<String>,
    /// `h2c`: HTTP/2 with prior knowledge, on a plain connection; HTTP/1.1 when left out.
    protocol: Option<String>,
    /// The `Host` header; `127.0.0.1:PORT` when left out, as the suite sends the Gateway's
    /// address.
    host: Option<String>,
    /// Path and query.
    path: String,
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendRequest {
    path: Option<String>,
    host: Option<String>,
    method: Option<String>,
    /// `HTTP/1.1` or `HTTP/2.0`: how the proxy spoke to the backend.
    version: Option<String>,
    /// Values of a header that arrives several times are joined with `,`, as the suite does.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    absent_headers: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseExpectation {
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    absent_headers: Vec<String>,
}

/// Parts of the `Location` of a redirect. Scheme and path default to the request's; host and
/// port are checked only when given (an empty port: the `Location` must name none).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedirectExpectation {
    scheme: Option<String>,
    host: Option<String>,
    port: Option<String>,
    path: Option<String>,
}

/// Weighted backends: `total` requests, the share each backend (`namespace/name`) must get
/// within `tolerance`; up to `attempts` rounds, as the suite retries an unlucky sample.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Distribution {
    request: Request,
    total: u32,
    tolerance: f64,
    attempts: u32,
    shares: BTreeMap<String, f64>,
}

// === placeholders ===

/// `${...}` placeholders in `text`, in order of appearance, without duplicates.
fn placeholders(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let name = &rest[start + 2..start + len];
        if !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
        rest = &rest[start + len + 1..];
    }
    out
}

fn substitute(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut text = text.to_owned();
    for (name, value) in values {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    text
}

// === status, as `novaedge check --status` prints it ===

/// The status report: the conditions of each object (`HTTPRoute ns/name`, ...) and of each of
/// its parts (`parentRefs[0] Gateway ns/gw`, `listener "http" (...)`).
#[derive(Debug, Default)]
struct StatusReport {
    /// (object, part header or "") -> conditions.
    entries: BTreeMap<(String, String), Vec<String>>,
}

impl StatusReport {
    fn parse(text: &str) -> StatusReport {
        let mut report = StatusReport::default();
        let (mut object, mut part) = (String::new(), String::new());
        let mut in_status = false;
        for line in text.lines() {
            if line == "status:" {
                in_status = true;
                continue;
            }
            if !in_status || line.trim().is_empty() {
                continue;
            }
            let indent = line.len() - line.trim_start().len();
            let body = line.trim();
            if let Some(condition) = body.strip_prefix("- ") {
                report
                    .entries
                    .entry((object.clone(), part.clone()))
                    .or_default()
                    .push(condition.to_owned());
            } else if indent == 0 {
                object = body.trim_end_matches(':').to_owned();
                part.clear();
                report
                    .entries
                    .entry((object.clone(), part.clone()))
                    .or_default();
            } else {
                part = body.trim_end_matches(':').to_owned();
                report
                    .entries
                    .entry((object.clone(), part.clone()))
                    .or_default();
            }
        }
        report
    }

    /// The parts of `object` whose header satisfies `matches`.
    fn parts<'s>(
        &'s self,
        object: &'s str,
        matches: impl Fn(&str) -> bool + 's,
    ) -> impl Iterator<Item = (&'s str, &'s [String])> + 's {
        self.entries
            .iter()
            .filter(move |((o, p), _)| o == object && !p.is_empty() && matches(p))
            .map(|((_, p), c)| (p.as_str(), c.as_slice()))
    }

    /// Every way `expected` is not met, one line each.
    fn check(&self, expected: &StatusExpectation) -> Vec<String> {
        let mut problems = Vec::new();
        let condition_met = |have: &[String], want: &str| {
            have.iter().any(|c| {
                c == want
                    || c.starts_with(&format!("{want}:"))
                    || c.starts_with(&format!("{want} "))
            })
        };
        match (&expected.route, &expected.gateway) {
            (Some(route), None) => {
                let object = format!("HTTPRoute {route}");
                let parent = expected.parent.as_deref().unwrap_or_default();
                let label = format!("Gateway {parent}");
                let parts: Vec<_> = self
                    .parts(&object, |p| {
                        p.split_once(' ')
                            .is_some_and(|(_, l)| l == label || l.starts_with(&format!("{label} ")))
                    })
                    .collect();
                if parts.is_empty() {
                    problems.push(format!("{object}: no status for parent {label}"));
                }
                for (part, have) in parts {
                    for want in &expected.conditions {
                        if !condition_met(have, want) {
                            problems.push(format!("{object} {part}: no {want}; has {have:?}"));
                        }
                    }
                }
            }
            (None, Some(gateway)) => {
                let object = format!("Gateway {gateway}");
                match &expected.listener {
                    None => {
                        let have = self
                            .entries
                            .get(&(object.clone(), String::new()))
                            .map(Vec::as_slice)
                            .unwrap_or_default();
                        for want in &expected.conditions {
                            if !condition_met(have, want) {
                                problems.push(format!("{object}: no {want}; has {have:?}"));
                            }
                        }
                    }
                    Some(listener) => {
                        let prefix = format!("listener {listener:?} ");
                        let parts: Vec<_> =
                            self.parts(&object, |p| p.starts_with(&prefix)).collect();
                        if parts.is_empty() {
                            problems.push(format!("{object}: no status for listener {listener}"));
                        }
                        for (part, have) in parts {
                            for want in &expected.conditions {
                                if !condition_met(have, want) {
                                    problems
                                        .push(format!("{object} {part}: no {want}; has {have:?}"));
                                }
                            }
                            if let Some(n) = expected.attached_routes
                                && !part.contains(&format!("attached routes: {n})"))
                            {
                                problems.push(format!("{object} {part}: want {n} attached routes"));
                            }
                        }
                    }
                }
            }
            _ => problems.push(format!(
                "status expectation names neither a route nor a gateway: {expected:?}"
            )),
        }
        problems
    }
}

// === requests ===

/// What came back for one request.
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

/// A connection to the proxy, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A running case: its ports, its echo backends and the client settings.
struct Running {
    ports: BTreeMap<String, u16>,
    echoes: BTreeMap<String, EchoServer>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Running {
    fn port(&self, listener: Option<&str>) -> Result<u16, String> {
        let name = listener.unwrap_or("HTTP");
        self.ports
            .get(name)
            .copied()
            .ok_or_else(|| format!("no ${{PORT_{name}}} in the manifests"))
    }

    /// The `Host` header a request is sent with.
    fn host(&self, request: &Request) -> Result<String, String> {
        match &request.host {
            Some(host) => Ok(host.clone()),
            None => Ok(format!(
                "127.0.0.1:{}",
                self.port(request.listener.as_deref())?
            )),
        }
    }

    /// A connection to the listener `request` names, through TLS if it asks for https.
    async fn connect(&self, request: &Request) -> Result<Box<dyn Io>, String> {
        let port = self.port(request.listener.as_deref())?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let host = self.host(request)?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        Ok(match request.scheme.as_deref() {
            None | Some("http") => Box::new(tcp),
            Some("https") => {
                let config = self
                    .tls
                    .clone()
                    .ok_or("an https request needs `certificates` in the case")?;
                let name = host.split(':').next().unwrap_or_default().to_owned();
                let server_name = rustls::pki_types::ServerName::try_from(name)
                    .map_err(|e| format!("SNI {host:?}: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(server_name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                Box::new(tls)
            }
            Some(other) => return Err(format!("unknown scheme {other:?}")),
        })
    }

    async fn send(
        &self,
        request: &Request,
        extra_headers: &[(String, String)],
    ) -> Result<Answer, String> {
        let host = self.host(request)?;
        let io = self.connect(request).await?;
        let method = request.method.as_deref().unwrap_or("GET");
        let h2c = match request.protocol.as_deref() {
            None | Some("http/1.1") => false,
            Some("h2c") => true,
            Some(other) => return Err(format!("unknown protocol {other:?}")),
        };
        // HTTP/2 carries the host as the URI's authority (`:authority`), not as `Host`.
        let mut builder = if h2c {
            http::Request::builder()
                .method(method)
                .version(http::Version::HTTP_2)
                .uri(format!("http://{host}{}", request.path))
        } else {
            http::Request::builder()
                .method(method)
                .uri(&request.path)
                .header(http::header::HOST, &host)
        };
        let extra = extra_headers.iter().map(|(n, v)| (n, v));
        for (name, value) in request.headers.iter().chain(extra) {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let req = builder
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("building the request: {e}"))?;
        let sent = async {
            if h2c {
                let (mut sender, conn) = hyper::client::conn::http2::handshake(
                    hyper_util::rt::TokioExecutor::new(),
                    TokioIo::new(io),
                )
                .await?;
                tokio::spawn(conn);
                sender.send_request(req).await
            } else {
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
                tokio::spawn(conn);
                sender.send_request(req).await
            }
        };
        let response = tokio::time::timeout(Duration::from_secs(10), sent)
            .await
            .map_err(|_| "no response within 10s".to_owned())?
            .map_err(|e| format!("request failed: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// Sends one request and compares; returns every mismatch.
    async fn check(&self, e: &Expectation) -> Vec<String> {
        let mut problems = Vec::new();
        let mirrored_before: Vec<u64> = e
            .mirrored_to
            .iter()
            .map(|m| self.echoes.get(m).map_or(0, EchoServer::requests))
            .collect();
        let set_header: Vec<(String, String)> = if e.backend_response_headers.is_empty() {
            Vec::new()
        } else {
            let pairs: Vec<_> = e
                .backend_response_headers
                .iter()
                .map(|(n, v)| format!("{n}:{v}"))
                .collect();
            vec![(SET_HEADER.to_owned(), pairs.join(","))]
        };
        if let Some(ws) = &e.websocket {
            return match self.websocket(&e.request, ws).await {
                Ok(()) => Vec::new(),
                Err(error) => vec![error],
            };
        }
        let answer = match self.send(&e.request, &set_header).await {
            Ok(answer) => answer,
            Err(error) => return vec![error],
        };
        let want_status = e.status.unwrap_or(200);
        if answer.status != want_status {
            problems.push(format!(
                "status {} (want {want_status}); body: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
            return problems;
        }
        if let Some(r) = &e.response {
            compare_headers(
                "response",
                &answer.headers,
                &r.headers,
                &r.absent_headers,
                &mut problems,
            );
        }
        let answered_by = if want_status == 200 {
            self.check_backend(e, &answer, &mut problems)
        } else {
            None
        };
        if let Some(redirect) = &e.redirect {
            check_redirect(&e.request, redirect, &answer, &mut problems);
        }
        for (m, before) in e.mirrored_to.iter().zip(mirrored_before) {
            let Some(echo) = self.echoes.get(m) else {
                problems.push(format!(
                    "mirror target {m} is not an echo backend of the case"
                ));
                continue;
            };
            // The copy comes on top of the request itself when the mirror also answered.
            let want = before + 1 + u64::from(answered_by.as_deref() == Some(m.as_str()));
            let deadline = Instant::now() + Duration::from_secs(5);
            while echo.requests() < want && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if echo.requests() < want {
                problems.push(format!("no copy of the request reached mirror {m}"));
            }
        }
        problems
    }

    /// Compares what the backend saw; returns the backend that answered (`namespace/name`).
    fn check_backend(
        &self,
        e: &Expectation,
        answer: &Answer,
        problems: &mut Vec<String>,
    ) -> Option<String> {
        let info: RequestInfo = match serde_json::from_slice(&answer.body) {
            Ok(info) => info,
            Err(error) => {
                problems.push(format!(
                    "the answer is not an echo backend's ({error}): {}",
                    String::from_utf8_lossy(&answer.body)
                ));
                return None;
            }
        };
        let (namespace, name) = info.name.split_once('/').unwrap_or(("", &info.name));
        if let Some(backend) = &e.backend
            && backend != name
        {
            problems.push(format!("answered by {name} (want {backend})"));
        }
        if let Some(want) = &e.namespace
            && want != namespace
        {
            problems.push(format!("answered from namespace {namespace} (want {want})"));
        }
        let none = BackendRequest::default();
        let want = e.backend_request.as_ref().unwrap_or(&none);
        let seen_path = match &info.query {
            Some(q) => format!("{}?{q}", info.path),
            None => info.path.clone(),
        };
        let want_path = want.path.as_deref().unwrap_or(&e.request.path);
        if seen_path != want_path {
            problems.push(format!(
                "backend saw path {seen_path:?} (want {want_path:?})"
            ));
        }
        let want_method = want
            .method
            .as_deref()
            .or(e.request.method.as_deref())
            .unwrap_or("GET");
        if info.method != want_method {
            problems.push(format!(
                "backend saw method {} (want {want_method})",
                info.method
            ));
        }
        if let Some(version) = &want.version
            && info.version != *version
        {
            problems.push(format!("backend spoke {} (want {version})", info.version));
        }
        if let Some(want_host) = want.host.as_ref().or(e.request.host.as_ref())
            && info.host.as_deref() != Some(want_host.as_str())
        {
            problems.push(format!(
                "backend saw host {:?} (want {want_host:?})",
                info.host
            ));
        }
        let mut seen = http::HeaderMap::new();
        for (name, values) in &info.headers {
            for value in values {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(name.as_bytes()),
                    http::HeaderValue::from_str(value),
                ) {
                    seen.append(n, v);
                }
            }
        }
        compare_headers(
            "backend request",
            &seen,
            &want.headers,
            &want.absent_headers,
            problems,
        );
        Some(info.name)
    }

    /// Upgrades to a WebSocket at the request's path and checks that a text and a binary
    /// message come back unchanged.
    async fn websocket(
        &self,
        request: &Request,
        exchange: &WebSocketExchange,
    ) -> Result<(), String> {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;

        let host = self.host(request)?;
        let io = self.connect(request).await?;
        let (mut socket, _) =
            tokio_tungstenite::client_async(format!("ws://{host}{}", request.path), io)
                .await
                .map_err(|e| format!("WebSocket handshake: {e}"))?;
        let sent = [
            Message::text(exchange.text.clone()),
            Message::binary(exchange.binary.clone()),
        ];
        for message in sent {
            socket
                .send(message.clone())
                .await
                .map_err(|e| format!("sending {message:?}: {e}"))?;
            let reply = tokio::time::timeout(Duration::from_secs(5), socket.next())
                .await
                .map_err(|_| format!("no reply to {message:?} within 5s"))?
                .ok_or_else(|| format!("the WebSocket closed instead of answering {message:?}"))?
                .map_err(|e| format!("receiving the reply to {message:?}: {e}"))?;
            if reply != message {
                return Err(format!("sent {message:?}, got back {reply:?}"));
            }
        }
        let _ = socket.close(None).await;
        Ok(())
    }

    /// Sends `total` requests, 10 at a time, and compares the shares; `Ok` when within
    /// tolerance, else why not.
    async fn distribution(&self, d: &Distribution) -> Result<(), String> {
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        let mut sent = 0;
        while sent < d.total {
            let batch = (d.total - sent).min(10);
            let answers =
                futures_util::future::join_all((0..batch).map(|_| self.send(&d.request, &[])))
                    .await;
            for answer in answers {
                let answer = answer?;
                if answer.status != 200 {
                    return Err(format!("status {} (want 200)", answer.status));
                }
                let info: RequestInfo = serde_json::from_slice(&answer.body)
                    .map_err(|e| format!("not an echo answer: {e}"))?;
                *seen.entry(info.name).or_default() += 1;
            }
            sent += batch;
        }
        let mut problems = Vec::new();
        for name in seen.keys() {
            if !d.shares.contains_key(name) {
                problems.push(format!("{name} answered but has no share"));
            }
        }
        for (name, share) in &d.shares {
            let count = seen.get(name).copied().unwrap_or(0);
            let got = f64::from(count) / f64::from(d.total);
            // A backend of weight 0 gets no request at all, not merely few.
            if *share == 0.0 && count > 0 {
                problems.push(format!("{name}: {count} requests (want none)"));
            } else if (got - share).abs() > d.tolerance {
                problems.push(format!(
                    "{name}: share {got:.3} (want {share} ± {})",
                    d.tolerance
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Compares headers as the suite does: names without regard to case, several values joined
/// with `,`.
fn compare_headers(
    what: &str,
    have: &http::HeaderMap,
    want: &BTreeMap<String, String>,
    absent: &[String],
    problems: &mut Vec<String>,
) {
    for (name, value) in want {
        let values: Vec<_> = have
            .get_all(name.to_ascii_lowercase().as_str())
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        if values.is_empty() {
            problems.push(format!("{what} header {name} missing (want {value:?})"));
        } else if values.join(",") != *value {
            problems.push(format!(
                "{what} header {name}: {:?} (want {value:?})",
                values.join(",")
            ));
        }
    }
    for name in absent {
        if let Some(value) = have.get(name.to_ascii_lowercase().as_str()) {
            problems.push(format!(
                "{what} header {name} present ({value:?}), want it absent"
            ));
        }
    }
}

fn check_redirect(
    request: &Request,
    want: &RedirectExpectation,
    answer: &Answer,
    problems: &mut Vec<String>,
) {
    let Some(location) = answer
        .headers
        .get(http::header::LOCATION)
        .and_then(|l| l.to_str().ok())
    else {
        problems.push("redirect without a Location".to_owned());
        return;
    };
    let uri: http::Uri = match location.parse() {
        Ok(uri) => uri,
        Err(e) => {
            problems.push(format!("Location {location:?} does not parse: {e}"));
            return;
        }
    };
    let scheme = uri.scheme_str().unwrap_or_default();
    let want_scheme = want
        .scheme
        .as_deref()
        .or(request.scheme.as_deref())
        .unwrap_or("http");
    if scheme != want_scheme {
        problems.push(format!(
            "Location {location}: scheme {scheme} (want {want_scheme})"
        ));
    }
    if let Some(host) = &want.host
        && uri.host() != Some(host.as_str())
    {
        problems.push(format!("Location {location}: host (want {host})"));
    }
    if let Some(port) = &want.port {
        let have = uri.port().map(|p| p.to_string()).unwrap_or_default();
        if have != *port {
            problems.push(format!(
                "Location {location}: port {have:?} (want {port:?})"
            ));
        }
    }
    let want_path = want
        .path
        .as_deref()
        .unwrap_or_else(|| request.path.split('?').next().unwrap_or_default());
    if uri.path() != want_path {
        problems.push(format!("Location {location}: path (want {want_path})"));
    }
}

// === running a case ===

/// The manifests without the documents `delete` names (`Kind namespace/name`).
fn without(manifests: &str, delete: &[String]) -> Result<String, String> {
    let mut out = String::new();
    let mut deleted = BTreeSet::new();
    for doc in manifests.split("\n---") {
        let value: serde_json::Value =
            serde_norway::from_str(doc).map_err(|e| format!("manifests do not parse: {e}"))?;
        if value.is_null() {
            continue; // comments only
        }
        let id = format!(
            "{} {}/{}",
            value["kind"].as_str().unwrap_or_default(),
            value["metadata"]["namespace"].as_str().unwrap_or("default"),
            value["metadata"]["name"].as_str().unwrap_or_default()
        );
        if delete.contains(&id) {
            deleted.insert(id);
        } else {
            out.push_str(doc);
            out.push_str("\n---");
        }
    }
    for d in delete {
        if !deleted.contains(d) {
            return Err(format!("nothing to delete: no {d} in the manifests"));
        }
    }
    Ok(out)
}

fn describe(r: &Request) -> String {
    let mut s = format!(
        "{} {}{}",
        r.method.as_deref().unwrap_or("GET"),
        r.host
            .as_deref()
            .map(|h| format!("//{h}"))
            .unwrap_or_default(),
        r.path
    );
    if let Some(listener) = &r.listener {
        let _ = write!(s, " on {listener}");
    }
    if r.scheme.as_deref() == Some("https") {
        s.push_str(" (https)");
    }
    if let Some(protocol) = &r.protocol {
        let _ = write!(s, " ({protocol})");
    }
    if !r.headers.is_empty() {
        let _ = write!(s, " {:?}", r.headers);
    }
    s
}

/// `novaedge check --status` on `dir`: the status problems of `expected`, or why the check
/// could not be made.
fn check_status(dir: &Path, expected: &[StatusExpectation]) -> Vec<String> {
    let output = std::process::Command::new(BIN)
        .args(["check", "--status"])
        .arg(dir)
        .output()
        .expect("run novaedge check");
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return vec![format!(
            "novaedge check failed:\n{text}{}",
            String::from_utf8_lossy(&output.stderr)
        )];
    }
    let report = StatusReport::parse(&text);
    let mut problems: Vec<_> = expected
        .iter()
        .flat_map(|e| report.check(e))
        .map(|p| format!("status: {p}"))
        .collect();
    // The whole report once, after the last problem, to see what was there instead.
    if let Some(last) = problems.last_mut() {
        let _ = write!(last, "\n--- novaedge check --status said:\n{text}");
    }
    problems
}

/// Runs one case directory; every mismatch, prefixed with the case name.
async fn run_case(dir: &Path) -> Vec<String> {
    let case = dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut mismatches = Vec::new();
    let mut fail = |what: String| mismatches.push(format!("{case}: {what}"));

    let manifests = std::fs::read_to_string(dir.join("manifests.yaml")).expect("manifests.yaml");
    let cases_text = std::fs::read_to_string(dir.join("cases.yaml")).expect("cases.yaml");

    // Ports and echo backends for the placeholders.
    let mut values = BTreeMap::new();
    let mut ports = BTreeMap::new();
    let mut echoes = BTreeMap::new();
    for name in placeholders(&manifests) {
        if let Some(port_name) = name.strip_prefix("PORT_") {
            let port = free_port();
            ports.insert(port_name.to_owned(), port);
            values.insert(name.clone(), port.to_string());
        } else if let Some(backend) = name.strip_prefix("ECHO_PORT:") {
            let echo = EchoServer::start("127.0.0.1:0".parse().unwrap(), backend)
                .await
                .expect("start an echo backend");
            values.insert(name.clone(), echo.local_addr().port().to_string());
            echoes.insert(backend.to_owned(), echo);
        } else {
            fail(format!("manifests.yaml: unknown placeholder ${{{name}}}"));
            return mismatches;
        }
    }
    for name in placeholders(&cases_text) {
        if !values.contains_key(&name) {
            fail(format!(
                "cases.yaml: placeholder ${{{name}}} is not in the manifests"
            ));
            return mismatches;
        }
    }
    let file: CaseFile = match serde_norway::from_str(&substitute(&cases_text, &values)) {
        Ok(file) => file,
        Err(e) => {
            fail(format!("cases.yaml: {e}"));
            return mismatches;
        }
    };
    assert!(
        !file.upstream.is_empty() && !file.description.is_empty(),
        "{case}: cases.yaml must say where it comes from"
    );
    let manifests = substitute(&manifests, &values);

    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let tls = if file.certificates.is_empty() {
        None
    } else {
        make_ca(work);
        for c in &file.certificates {
            let sans: Vec<_> = c.hosts.iter().map(|h| format!("DNS:{h}")).collect();
            make_cert(work, &c.name, &sans.join(","));
        }
        Some(client_config(&work.join("ca.crt")))
    };
    let manifest_path = work.join("manifests.yaml");
    std::fs::write(&manifest_path, &manifests).unwrap();

    for problem in check_status(work, &file.status) {
        fail(problem);
    }

    let (ingress_http, ingress_https) = (free_port(), free_port());
    let mut proxy = Proxy::start(&[
        "run",
        "--bind",
        "127.0.0.1",
        "--ingress-http-port",
        &ingress_http.to_string(),
        "--ingress-https-port",
        &ingress_https.to_string(),
        "--drain-timeout",
        "1s",
        work.to_str().unwrap(),
    ]);
    if !wait_for(&mut proxy, "watching for changes", 0) {
        fail(format!(
            "novaedge run did not start:\n{}",
            proxy.log.lock().unwrap().join("\n")
        ));
        return mismatches;
    }
    let running = Running { ports, echoes, tls };

    let mut phases = vec![(Vec::new(), Vec::new(), file.requests)];
    for change in file.changes {
        phases.push((change.delete, change.status, change.requests));
    }
    let mut current = manifests;
    for (i, (delete, status, requests)) in phases.into_iter().enumerate() {
        let phase = if i == 0 {
            String::new()
        } else {
            format!(" (after deleting {})", delete.join(", "))
        };
        if i > 0 {
            current = match without(&current, &delete) {
                Ok(m) => m,
                Err(e) => {
                    fail(e);
                    return mismatches;
                }
            };
            let skip = proxy.log_len();
            std::fs::write(&manifest_path, &current).unwrap();
            if !wait_for(&mut proxy, "snapshot applied", skip) {
                fail(format!(
                    "no reload{phase}:\n{}",
                    proxy.log.lock().unwrap().join("\n")
                ));
                return mismatches;
            }
            for problem in check_status(work, &status) {
                fail(format!("{problem}{phase}"));
            }
        }
        for e in &requests {
            for problem in running.check(e).await {
                fail(format!("{}{phase}: {problem}", describe(&e.request)));
            }
        }
        if i == 0 {
            for d in &file.distributions {
                let mut last = String::new();
                let mut ok = false;
                for _ in 0..d.attempts {
                    match running.distribution(d).await {
                        Ok(()) => {
                            ok = true;
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                if !ok {
                    fail(format!(
                        "{}: distribution over {} requests, {} attempts: {last}",
                        describe(&d.request),
                        d.total,
                        d.attempts
                    ));
                }
            }
        }
    }
    drop(proxy);
    mismatches
}

/// Like `Proxy::wait_log`, but reports a timeout or an exit instead of panicking, so one
/// broken case does not hide the others.
fn wait_for(proxy: &mut Proxy, needle: &str, skip: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if proxy
            .log
            .lock()
            .unwrap()
            .iter()
            .skip(skip)
            .any(|l| l.contains(needle))
        {
            return true;
        }
        if proxy.child.try_wait().ok().flatten().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A TLS client that trusts only the test CA.
fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca.crt") {
        roots.add(cert.expect("a CA certificate")).expect("trusted");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Runs every case directory under `tests/conformance/` (those with a `cases.yaml`; the ones
/// in `not-passing-yet/` are not run). `CONFORMANCE_CASE=Name` runs only that one, also one
/// of `not-passing-yet/`, to see where it stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_conformance() {
    let dirs: Vec<PathBuf> = match std::env::var("CONFORMANCE_CASE") {
        Ok(name) => {
            let dir = cases_dir().join(&name);
            assert!(
                dir.join("cases.yaml").is_file(),
                "no case {}",
                dir.display()
            );
            vec![dir]
        }
        Err(_) => {
            let mut dirs: Vec<_> = std::fs::read_dir(cases_dir())
                .expect("tests/conformance")
                .map(|e| e.unwrap().path())
                .filter(|p| p.join("cases.yaml").is_file())
                .collect();
            dirs.sort();
            dirs
        }
    };
    assert!(!dirs.is_empty(), "no cases in {}", cases_dir().display());
    let mut mismatches = Vec::new();
    for dir in &dirs {
        mismatches.extend(run_case(dir).await);
    }
    let ran = dirs.len();
    assert!(
        mismatches.is_empty(),
        "{} mismatch(es) in {ran} case(s):\n\n{}",
        mismatches.len(),
        mismatches.join("\n\n")
    );
}

#[test]
fn placeholders_are_found_once_each_in_order() {
    assert_eq!(
        placeholders("a ${PORT_HTTP} b ${ECHO_PORT:ns/x} ${PORT_HTTP} ${PORT_8080}"),
        ["PORT_HTTP", "ECHO_PORT:ns/x", "PORT_8080"]
    );
    let values = BTreeMap::from([("PORT_HTTP".to_owned(), "1234".to_owned())]);
    assert_eq!(substitute("port: ${PORT_HTTP}", &values), "port: 1234");
}

#[test]
fn status_report_parses_objects_parts_and_conditions() {
    let text = "ok (0 warning(s))\nstatus:\nGateway ns/gw:\n  - Accepted=True (Accepted)\n  listener \"http\" (kinds: HTTPRoute; attached routes: 0):\n    - Programmed=True (Programmed)\nHTTPRoute ns/r:\n  parentRefs[0] Gateway ns/gw section http:\n    - Accepted=False (NoMatchingParent): no listener\n";
    let report = StatusReport::parse(text);
    let route = StatusExpectation {
        route: Some("ns/r".into()),
        parent: Some("ns/gw".into()),
        gateway: None,
        listener: None,
        conditions: vec!["Accepted=False (NoMatchingParent)".into()],
        attached_routes: None,
    };
    assert!(
        report.check(&route).is_empty(),
        "{:?}",
        report.check(&route)
    );
    let wrong = StatusExpectation {
        conditions: vec!["Accepted=True".into()],
        ..route
    };
    assert_eq!(report.check(&wrong).len(), 1);
    let listener = StatusExpectation {
        route: None,
        parent: None,
        gateway: Some("ns/gw".into()),
        listener: Some("http".into()),
        conditions: vec!["Programmed=True".into()],
        attached_routes: Some(0),
    };
    assert!(
        report.check(&listener).is_empty(),
        "{:?}",
        report.check(&listener)
    );
    let attached = StatusExpectation {
        attached_routes: Some(1),
        ..listener
    };
    assert_eq!(report.check(&attached).len(), 1);
}

#[test]
fn deleting_objects_from_manifests() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: x}\n";
    let left = without(text, &["Service x/a".to_owned()]).unwrap();
    assert!(!left.contains("name: a"), "{left}");
    assert!(left.contains("name: b"), "{left}");
    assert!(without(text, &["Service x/c".to_owned()]).is_err());
}
