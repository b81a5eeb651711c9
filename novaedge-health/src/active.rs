//! Active health checks: a task per endpoint probes it on an interval and reports a change once
//! enough probes in a row agree. The model is Envoy's active health checking
//! (<https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/health_checking>,
//! `envoy.config.core.v3.HealthCheck`): `interval` plus a random `interval_jitter`, a `timeout`
//! per probe, `healthy_threshold` successes in a row to become healthy and
//! `unhealthy_threshold` failures in a row to become unhealthy.
//!
//! # Probes
//!
//! - [`Probe::Tcp`]: the TCP connection is established.
//! - [`Probe::Http`]: an HTTP/1.1 `GET` of a path, answered with a status in the expected ranges
//!   (default `200..400`). Every probe opens its *own* connection with `Connection: close`, never
//!   one shared with user traffic: a probe must see what a new client would see, and a probe's
//!   failure must not break a user's request.
//! - [`Probe::Grpc`]: `grpc.health.v1.Health/Check` for a service name over an HTTP/2
//!   connection, healthy only on `SERVING` (the gRPC health checking protocol, as Envoy's gRPC
//!   checker).
//!
//! # TLS
//!
//! HTTP and gRPC probes can speak TLS ([`HttpProbe::with_tls`], [`GrpcProbe::with_tls`]), as
//! Envoy probes a TLS cluster with the cluster's own transport socket: the caller hands over a
//! rustls [`ClientConfig`] (the roots to verify the server with, a client certificate for mTLS)
//! and the name to verify in a [`ProbeTls`]. The probe connects, completes the handshake and
//! then speaks HTTP/1.1 or HTTP/2 on it, all within `timeout`; without a configured `Host` or
//! `:authority` it names the server by the TLS server name.
//!
//! ALPN is the probe's business, not the caller's: an HTTP probe offers only `http/1.1`, a gRPC
//! probe only `h2`. A configuration that offers anything else is copied with the right list
//! once, when the probe is configured (the copy shares the original's session cache), never per
//! probe.
//!
//! A failed handshake, or a TLS alert after it (a TLS 1.3 server refuses a client certificate
//! only after the client's part of the handshake), fails the probe with [`ProbeError::Tls`] and
//! rustls' reason. TCP probes stay plain connects: a handshake would test the certificate rather
//! than whether the endpoint is up, and cost the server a handshake per probe.
//!
//! A probe that does not finish within `timeout` fails. All probes of one [`ActiveChecker`]
//! share a semaphore of [`ActiveConfig::max_concurrent_probes`] permits, so a large backend
//! cannot open thousands of probe connections at once; a probe waiting for a permit is late,
//! not failed.
//!
//! # First verdict
//!
//! An endpoint's health is unknown until its first probe, which decides it at once either way
//! and reports it (Envoy likewise lets the first successful check make a new host healthy
//! without waiting for `healthy_threshold`). A data plane that wants Envoy's "new hosts are not
//! used before their first check passes" adds endpoints to its balancer as unhealthy.
//! After that, the thresholds apply.
//!
//! # Membership
//!
//! [`ActiveChecker::add`], [`remove`](ActiveChecker::remove) and
//! [`set_endpoints`](ActiveChecker::set_endpoints) start and stop checker tasks without touching
//! the others. Dropping the checker stops all of its tasks. Methods that start tasks must be
//! called within a tokio runtime.
//!
//! Not built: `no_traffic_interval`, `unhealthy_interval`, `unhealthy_edge_interval`, HTTP/2
//! HTTP probes, TLS on TCP probes, response body matching, custom request headers beyond `Host`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rand::Rng;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::event::{Health, HealthEvent, HealthSink};

/// What a probe checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connection can be established.
    Tcp,
    /// An HTTP/1.1 `GET` answers with an expected status.
    Http(HttpProbe),
    /// `grpc.health.v1.Health/Check` answers `SERVING`.
    Grpc(GrpcProbe),
}

/// An HTTP probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProbe {
    /// Path and query, starting with `/`.
    pub path: String,
    /// `Host` header; if `None`, the TLS server name when there is one, else the endpoint's
    /// address.
    pub host: Option<String>,
    /// Statuses counted as healthy, as half-open ranges; Envoy's default is `200..201`, ours
    /// `200..400` so that redirects from a `/` probe count as alive.
    pub expected_statuses: Vec<Range<u16>>,
    /// Probe over TLS; cleartext if `None`. Set it with [`with_tls`](Self::with_tls).
    pub tls: Option<ProbeTls>,
}

impl HttpProbe {
    /// `GET path`, healthy on `200..400`.
    // A list holding one range is meant here, not the range's elements.
    #[allow(clippy::single_range_in_vec_init)]
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            host: None,
            expected_statuses: vec![200..400],
            tls: None,
        }
    }

    /// Probes over TLS, offering ALPN `http/1.1` only.
    pub fn with_tls(mut self, tls: ProbeTls) -> Self {
        self.tls = Some(tls.offering(ALPN_HTTP11).into_owned());
        self
    }

    /// Sends this `Host` header.
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Counts only these statuses as healthy.
    pub fn with_expected_statuses(mut self, ranges: Vec<Range<u16>>) -> Self {
        self.expected_statuses = ranges;
        self
    }
}

/// A gRPC health probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcProbe {
    /// The service name asked about; empty asks about the server as a whole.
    pub service: String,
    /// `:authority` to send; if `None`, the TLS server name when there is one, else the
    /// endpoint's address.
    pub authority: Option<String>,
    /// Probe over TLS; h2c if `None`. Set it with [`with_tls`](Self::with_tls).
    pub tls: Option<ProbeTls>,
}

impl GrpcProbe {
    /// Asks about `service`.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            authority: None,
            tls: None,
        }
    }

    /// Probes over TLS, offering ALPN `h2` only.
    pub fn with_tls(mut self, tls: ProbeTls) -> Self {
        self.tls = Some(tls.offering(ALPN_H2).into_owned());
        self
    }
}

/// ALPN name of HTTP/2.
const ALPN_H2: &[u8] = b"h2";
/// ALPN name of HTTP/1.1.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// TLS on a probe's own connection: a rustls client configuration and the name to verify.
///
/// Two settings are equal when they share one configuration (the same `Arc`) and name: rustls
/// configurations cannot be compared, so a rebuilt one counts as a change even with the same
/// contents.
#[derive(Clone)]
pub struct ProbeTls {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

// === impl ProbeTls ===

impl ProbeTls {
    /// Dials with `config`, verifying that the server's certificate names `server_name`, which
    /// is also sent as SNI; with `None`, the certificate must name the endpoint's IP address and
    /// no SNI is sent. The configuration's ALPN list does not matter: the probe sets its own.
    pub fn new(config: Arc<ClientConfig>, server_name: Option<ServerName<'static>>) -> Self {
        Self {
            config,
            server_name,
        }
    }

    /// The client configuration.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// The name verified and sent as SNI; `None`: the endpoint's IP address, no SNI.
    pub fn server_name(&self) -> Option<&ServerName<'static>> {
        self.server_name.as_ref()
    }

    /// These settings offering exactly `alpn`: themselves if they do, else a copy of the
    /// configuration (which shares its session cache) with that list.
    fn offering(&self, alpn: &[u8]) -> Cow<'_, ProbeTls> {
        if matches!(self.config.alpn_protocols.as_slice(), [only] if only == alpn) {
            return Cow::Borrowed(self);
        }
        let mut config = ClientConfig::clone(&self.config);
        config.alpn_protocols = vec![alpn.to_vec()];
        Cow::Owned(ProbeTls {
            config: Arc::new(config),
            server_name: self.server_name.clone(),
        })
    }

    /// The name a request names its server by when none is configured: the DNS server name,
    /// or `None` for the endpoint's address.
    fn dns_name(&self) -> Option<&str> {
        match &self.server_name {
            Some(ServerName::DnsName(name)) => Some(name.as_ref()),
            _ => None,
        }
    }

    async fn handshake(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ProbeError> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::IpAddress(addr.ip().into()),
        };
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(name, stream)
            .await
            .map_err(|source| match rustls_cause(&source) {
                Some(source) => ProbeError::Tls { addr, source },
                // Not TLS' doing: the connection broke.
                None => ProbeError::Connect { addr, source },
            })
    }
}

impl PartialEq for ProbeTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl Eq for ProbeTls {}

impl Debug for ProbeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let alpn: Vec<_> = self
            .config
            .alpn_protocols
            .iter()
            .map(|p| String::from_utf8_lossy(p))
            .collect();
        f.debug_struct("ProbeTls")
            .field("server_name", &self.server_name)
            .field("alpn", &alpn)
            .field(
                "client_certificate",
                &self.config.client_auth_cert_resolver.has_certs(),
            )
            .finish_non_exhaustive()
    }
}

/// The rustls error somewhere in `error`'s chain, if TLS is what failed.
fn rustls_cause(error: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls.clone());
        }
        // `io::Error::source` skips the error it wraps and goes on to that error's source.
        next = match error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    None
}

/// Active health check settings for one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveConfig {
    /// Time between the end of one probe and the start of the next, before jitter. Default 5 s.
    pub interval: Duration,
    /// Up to this much is added at random to each interval, so that checkers started together
    /// drift apart. Default 1 s.
    pub jitter: Duration,
    /// A probe not finished in this time fails. Default 1 s.
    pub timeout: Duration,
    /// Successes in a row for an unhealthy endpoint to become healthy. Default 2 (at least 1).
    pub healthy_threshold: u32,
    /// Failures in a row for a healthy endpoint to become unhealthy. Default 3 (at least 1).
    pub unhealthy_threshold: u32,
    /// Probes in flight at once across the checker's endpoints. Default 64 (at least 1).
    pub max_concurrent_probes: usize,
    /// What to probe.
    pub probe: Probe,
}

impl ActiveConfig {
    /// Defaults with this probe.
    pub fn new(probe: Probe) -> Self {
        Self {
            interval: Duration::from_secs(5),
            jitter: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            max_concurrent_probes: 64,
            probe,
        }
    }
}

// === impl Probe ===

impl Probe {
    /// The probe with the TLS configuration it will use, ALPN set: done once per checker, so
    /// that probes never copy a configuration.
    fn prepared(self) -> Self {
        match self {
            Probe::Tcp => Probe::Tcp,
            Probe::Http(mut http) => {
                if let Some(tls) = http.tls.take() {
                    http = http.with_tls(tls);
                }
                Probe::Http(http)
            }
            Probe::Grpc(mut grpc) => {
                if let Some(tls) = grpc.tls.take() {
                    grpc = grpc.with_tls(tls);
                }
                Probe::Grpc(grpc)
            }
        }
    }
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Not finished within the timeout.
    #[error("probe of {addr} timed out after {timeout:?}")]
    Timeout {
        /// The endpoint.
        addr: SocketAddr,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The TCP connection failed.
    #[error("connecting to {addr} failed")]
    Connect {
        /// The endpoint.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// TLS failed: in the handshake (e.g. the server's certificate is not trusted, or names
    /// another server) or by an alert after it (e.g. a TLS 1.3 server that wanted a client
    /// certificate).
    #[error("TLS with {addr} failed: {source}")]
    Tls {
        /// The endpoint.
        addr: SocketAddr,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// The probe request could not be built from the configuration.
    #[error("invalid HTTP probe request for path {path:?}")]
    Request {
        /// The configured path.
        path: String,
        /// The cause.
        #[source]
        source: http::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP probe of {addr} failed")]
    Http {
        /// The endpoint.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The HTTP status was not an expected one.
    #[error("HTTP probe of {addr}{path} answered {status}, expected {expected:?}")]
    Status {
        /// The endpoint.
        addr: SocketAddr,
        /// The probed path.
        path: String,
        /// The status received.
        status: u16,
        /// The configured ranges.
        expected: Vec<Range<u16>>,
    },
    /// The gRPC connection could not be set up.
    #[error("gRPC connection to {addr} failed")]
    GrpcConnect {
        /// The endpoint.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The `Check` call failed (e.g. `NOT_FOUND` for an unknown service).
    #[error("gRPC health check of service {service:?} at {addr} failed")]
    GrpcCall {
        /// The endpoint.
        addr: SocketAddr,
        /// The service asked about.
        service: String,
        /// The gRPC status.
        #[source]
        source: tonic::Status,
    },
    /// The service answered, but not `SERVING`.
    #[error("gRPC service {service:?} at {addr} is {status}")]
    NotServing {
        /// The endpoint.
        addr: SocketAddr,
        /// The service asked about.
        service: String,
        /// The status name, e.g. `NOT_SERVING`.
        status: &'static str,
    },
}

/// Runs one probe against `addr`, within `timeout`: connection, TLS handshake and exchange.
pub async fn probe(probe: &Probe, addr: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
    let run = async {
        match probe {
            Probe::Tcp => connect(addr).await.map(drop),
            Probe::Http(http) => probe_http(http, addr).await,
            Probe::Grpc(grpc) => probe_grpc(grpc, addr).await,
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or(Err(ProbeError::Timeout { addr, timeout }))
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, ProbeError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Aborts the connection task when the probe ends, however it ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The TLS error that broke a probe's connection after the handshake (an alert), noted by
/// [`Watched`]. HTTP/2 keeps only the message of an I/O error, so the error cannot always be
/// found in the chain of the exchange's error.
#[derive(Clone, Default)]
struct TlsFailure(Arc<Mutex<Option<rustls::Error>>>);

impl TlsFailure {
    fn note(&self, error: &std::io::Error) {
        if let Some(tls) = rustls_cause(error) {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert(tls);
        }
    }

    /// An error of the exchange: TLS' if TLS is what failed, else `or(error)`.
    fn or<E>(&self, addr: SocketAddr, error: E, or: impl FnOnce(E) -> ProbeError) -> ProbeError
    where
        E: std::error::Error + 'static,
    {
        let noted = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        match noted.or_else(|| rustls_cause(&error)) {
            Some(source) => ProbeError::Tls { addr, source },
            None => or(error),
        }
    }
}

/// A probe's TLS stream, noting the TLS error that breaks it in a [`TlsFailure`].
struct Watched<S> {
    inner: S,
    failure: TlsFailure,
}

impl<S> Watched<S> {
    fn noting<T>(&self, result: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if let Poll::Ready(Err(e)) = &result {
            self.failure.note(e);
        }
        result
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.noting(result)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.noting(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.noting(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.noting(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.noting(result)
    }
}

async fn probe_http(probe: &HttpProbe, addr: SocketAddr) -> Result<(), ProbeError> {
    let host = match (&probe.host, probe.tls.as_ref().and_then(ProbeTls::dns_name)) {
        (Some(host), _) => host.clone(),
        (None, Some(name)) => name.to_owned(),
        (None, None) => addr.to_string(),
    };
    let request = http::Request::get(probe.path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "novaedge-health")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|source| ProbeError::Request {
            path: probe.path.clone(),
            source,
        })?;
    let stream = connect(addr).await?;
    let failure = TlsFailure::default();
    let status = match &probe.tls {
        None => http_exchange(stream, request, addr, &failure).await?,
        Some(tls) => {
            let tls = tls.offering(ALPN_HTTP11);
            let inner = tls.handshake(stream, addr).await?;
            let stream = Watched {
                inner,
                failure: failure.clone(),
            };
            http_exchange(stream, request, addr, &failure).await?
        }
    };
    if probe.expected_statuses.iter().any(|r| r.contains(&status)) {
        Ok(())
    } else {
        Err(ProbeError::Status {
            addr,
            path: probe.path.clone(),
            status,
            expected: probe.expected_statuses.clone(),
        })
    }
}

/// Sends `request` over HTTP/1.1 on `stream`; the response's status.
async fn http_exchange<S>(
    stream: S,
    request: http::Request<Empty<Bytes>>,
    addr: SocketAddr,
    failure: &TlsFailure,
) -> Result<u16, ProbeError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let http_error = |source| failure.or(addr, source, |source| ProbeError::Http { addr, source });
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_error)?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        // Its errors also fail `send_request`, which reports them.
        let _ = conn.await;
    }));
    let response = send.send_request(request).await.map_err(http_error)?;
    Ok(response.status().as_u16())
}

async fn probe_grpc(probe: &GrpcProbe, addr: SocketAddr) -> Result<(), ProbeError> {
    let stream = connect(addr).await?;
    let failure = TlsFailure::default();
    match &probe.tls {
        None => grpc_check(probe, stream, "http", addr.to_string(), addr, &failure).await,
        Some(tls) => {
            let tls = tls.offering(ALPN_H2);
            let inner = tls.handshake(stream, addr).await?;
            let stream = Watched {
                inner,
                failure: failure.clone(),
            };
            let authority = tls
                .dns_name()
                .map_or_else(|| addr.to_string(), str::to_owned);
            grpc_check(probe, stream, "https", authority, addr, &failure).await
        }
    }
}

/// `Check` over HTTP/2 on `stream`, with `:scheme` `scheme` and, unless the probe names one,
/// `:authority` `authority`.
async fn grpc_check<S>(
    probe: &GrpcProbe,
    stream: S,
    scheme: &str,
    authority: String,
    addr: SocketAddr,
    failure: &TlsFailure,
) -> Result<(), ProbeError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let authority = probe.authority.clone().unwrap_or(authority);
    let origin = format!("{scheme}://{authority}")
        .parse::<http::Uri>()
        .map_err(|_| ProbeError::GrpcCall {
            addr,
            service: probe.service.clone(),
            source: tonic::Status::invalid_argument(format!("invalid authority {authority:?}")),
        })?;
    let connect_error = |source| {
        failure.or(addr, source, |source| ProbeError::GrpcConnect {
            addr,
            source,
        })
    };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(connect_error)?
        .origin(origin);
    // A channel of its own on the probe's connection, closed when dropped.
    let channel = endpoint
        .connect_with_connector(Connected(Some(stream)))
        .await
        .map_err(connect_error)?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: probe.service.clone(),
        })
        .await
        .map_err(|source| {
            failure.or(addr, source, |source| ProbeError::GrpcCall {
                addr,
                service: probe.service.clone(),
                source,
            })
        })?;
    match response.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(ProbeError::NotServing {
            addr,
            service: probe.service.clone(),
            status: other.as_str_name(),
        }),
    }
}

/// Hands tonic the connection the probe made, once: a probe's channel never reconnects.
struct Connected<S>(Option<S>);

impl<S> tonic::codegen::Service<http::Uri> for Connected<S>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Response = TokioIo<S>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<TokioIo<S>, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        std::future::ready(self.0.take().map(TokioIo::new).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "a probe's connection is used once",
            )
        }))
    }
}

const UNKNOWN: u8 = 0;
const HEALTHY: u8 = 1;
const UNHEALTHY: u8 = 2;

/// Active health checking of a changing set of endpoints; see the module docs.
pub struct ActiveChecker<K> {
    shared: Arc<Shared<K>>,
}

struct Shared<K> {
    config: ActiveConfig,
    permits: Semaphore,
    sink: Box<dyn HealthSink<K>>,
    /// The checked endpoints. Tasks report under this lock, after checking they are still the
    /// endpoint's checker: see `check_loop`.
    endpoints: Mutex<HashMap<K, Checked>>,
}

impl<K> Shared<K> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, Checked>> {
        // Entries are inserted and removed whole, so a poisoned map is still consistent.
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

struct Checked {
    addr: SocketAddr,
    health: Arc<AtomicU8>,
    task: JoinHandle<()>,
}

// === impl ActiveChecker ===

impl<K> ActiveChecker<K>
where
    K: Clone + Eq + Hash + Debug + Send + Sync + 'static,
{
    /// A checker with no endpoints yet; changes go to `sink`.
    pub fn new(mut config: ActiveConfig, sink: impl HealthSink<K>) -> Self {
        config.probe = config.probe.prepared();
        let permits = Semaphore::new(config.max_concurrent_probes.max(1));
        Self {
            shared: Arc::new(Shared {
                config,
                permits,
                sink: Box::new(sink),
                endpoints: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ActiveConfig {
        &self.shared.config
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Checked>> {
        self.shared.lock()
    }

    /// Starts checking `key` at `addr`. An endpoint already checked at the same address keeps its
    /// state; at a new address it starts over.
    pub fn add(&self, key: K, addr: SocketAddr) {
        let mut endpoints = self.lock();
        if endpoints.get(&key).is_some_and(|c| c.addr == addr) {
            return;
        }
        let health = Arc::new(AtomicU8::new(UNKNOWN));
        let task = tokio::spawn(check_loop(
            Arc::clone(&self.shared),
            key.clone(),
            addr,
            Arc::clone(&health),
        ));
        if let Some(old) = endpoints.insert(key, Checked { addr, health, task }) {
            old.task.abort();
        }
    }

    /// Stops checking `key`. No event for `key` is sent once this returns (until it is added
    /// again): the endpoint is gone.
    pub fn remove(&self, key: &K) {
        if let Some(old) = self.lock().remove(key) {
            old.task.abort();
        }
    }

    /// Makes the checked set exactly `endpoints`, keeping the checkers of those that stay.
    pub fn set_endpoints(&self, endpoints: impl IntoIterator<Item = (K, SocketAddr)>) {
        let wanted: HashMap<K, SocketAddr> = endpoints.into_iter().collect();
        self.lock().retain(|k, c| {
            let keep = wanted.contains_key(k);
            if !keep {
                c.task.abort();
            }
            keep
        });
        for (key, addr) in wanted {
            self.add(key, addr);
        }
    }

    /// `key`'s health, `None` before its first probe or if it is not checked.
    pub fn health(&self, key: &K) -> Option<Health> {
        match self.lock().get(key)?.health.load(Ordering::Acquire) {
            HEALTHY => Some(Health::Healthy),
            UNHEALTHY => Some(Health::Unhealthy),
            _ => None,
        }
    }

    /// How many endpoints are checked.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no endpoint is checked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K> Drop for ActiveChecker<K> {
    fn drop(&mut self) {
        for (_, checked) in self.shared.lock().drain() {
            checked.task.abort();
        }
    }
}

impl<K> Debug for ActiveChecker<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveChecker")
            .field("config", &self.shared.config)
            .field(
                "endpoints",
                &self.shared.endpoints.lock().map(|e| e.len()).ok(),
            )
            .finish_non_exhaustive()
    }
}

async fn check_loop<K>(shared: Arc<Shared<K>>, key: K, addr: SocketAddr, health: Arc<AtomicU8>)
where
    K: Clone + Eq + Hash + Debug + Send + Sync + 'static,
{
    let config = &shared.config;
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        let result = {
            // The semaphore is never closed, so this only waits.
            let _permit = shared.permits.acquire().await;
            probe(&config.probe, addr, config.timeout).await
        };
        let ok = match result {
            Ok(()) => {
                successes = successes.saturating_add(1);
                failures = 0;
                true
            }
            Err(error) => {
                tracing::debug!(?key, %addr, error = &error as &dyn std::error::Error, "health probe failed");
                failures = failures.saturating_add(1);
                successes = 0;
                false
            }
        };
        let next = match health.load(Ordering::Acquire) {
            UNKNOWN => Some(if ok {
                Health::Healthy
            } else {
                Health::Unhealthy
            }),
            HEALTHY if failures >= config.unhealthy_threshold.max(1) => Some(Health::Unhealthy),
            UNHEALTHY if successes >= config.healthy_threshold.max(1) => Some(Health::Healthy),
            _ => None,
        };
        if let Some(next) = next {
            let endpoints = shared.lock();
            // Only the endpoint's current checker reports. One that was removed or replaced is
            // being aborted but may still be running up to here; it stays silent, so no event
            // follows `remove`, and a replaced checker cannot report after its successor.
            if !endpoints
                .get(&key)
                .is_some_and(|c| Arc::ptr_eq(&c.health, &health))
            {
                return;
            }
            health.store(
                if next.is_healthy() {
                    HEALTHY
                } else {
                    UNHEALTHY
                },
                Ordering::Release,
            );
            tracing::info!(?key, %addr, health = %next, "active health check changed");
            shared.sink.report(HealthEvent {
                key: key.clone(),
                health: next,
            });
            drop(endpoints);
        }
        let jitter = u64::try_from(config.jitter.as_nanos()).unwrap_or(u64::MAX);
        let jitter = if jitter == 0 {
            0
        } else {
            rand::rng().random_range(0..=jitter)
        };
        tokio::time::sleep(config.interval + Duration::from_nanos(jitter)).await;
    }
}
