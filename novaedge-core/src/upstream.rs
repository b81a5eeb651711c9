//! Upstream connections, shared by every runtime so that a reload keeps them warm.
//!
//! - HTTP/1.1: a stack of idle connections per endpoint. A request takes the most recently used
//!   idle connection (or dials a new one); once its response body is done the connection goes
//!   back, unless it was upgraded or closed. Idle connections expire after
//!   [`EngineConfig::upstream_idle_timeout`](crate::EngineConfig), which is also how the pools of
//!   endpoints removed by a reload drain: in-flight requests finish, then nothing reuses them.
//! - HTTP/2 (h2c, gRPC): one multiplexed connection per endpoint, redialled when it closes.
//! - TLS (see [`crate::upstream_tls`]): the TLS handshake follows the TCP connect, both within
//!   the connect timeout. An HTTP/1.1 backend then speaks whatever ALPN picked (HTTP/2 for `h2`,
//!   HTTP/1.1 otherwise); an h2c backend over TLS requires `h2`. Pools are keyed by endpoint
//!   address *and* TLS configuration ([`TlsDial::id`]), so cleartext connections and
//!   connections made with different TLS settings to one address never mix. A failed handshake
//!   is a failed connect: nothing was sent.
//!
//! Circuit breaking: a request that needs a new connection is *pending* until the connection is
//! up, and holds a `max_pending_requests` permit meanwhile; the connection holds a
//! `max_connections` permit of the backend that opened it for as long as it is open, idle in
//! the pool included. Either limit reached fails the request at once
//! ([`UpstreamError::Overloaded`]); nothing waits for a connection to free up. Pools are per
//! endpoint address (and TLS configuration), so a cleartext connection opened for one backend
//! may serve another backend with the same endpoint; it counts against the backend that opened
//! it.
//!
//! A pooled connection can be closed by the upstream just as a request is handed to it. hyper
//! gives such a request back unsent (`try_send_request`), and it is retried once on a fresh
//! connection: the request never reached the upstream, so this is safe for any method.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use novaedge_health::{CircuitBreaker, Overflow, Permit};

use crate::config::EngineConfig;
use crate::upstream_tls::{ALPN_H2, TlsDial};

/// The body sent upstream: the client's own request body, streamed (possibly through a retry
/// filter's replay buffer).
pub(crate) type UpstreamBody = crate::body::RequestBody;

#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connect: timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
    /// The TLS handshake failed (the server's certificate did not verify, the server refused
    /// ours, no common parameters, ...).
    #[error("TLS handshake: {0}")]
    Tls(#[source] std::io::Error),
    /// An h2c (gRPC) backend over TLS whose server did not pick `h2` by ALPN.
    #[error("TLS: the server did not agree to HTTP/2 by ALPN (it chose {})", .0.as_deref().unwrap_or("nothing"))]
    NoH2(Option<String>),
    /// The server failed TLS right after the handshake, before answering: with TLS 1.3 this is
    /// how a server refuses a client certificate (or its absence), once the client's side of
    /// the handshake is done.
    #[error("TLS: {0}")]
    TlsRefused(String),
    #[error("request: {0}")]
    Request(#[source] hyper::Error),
    /// No response head within the response timeout.
    #[error("no response within {0:?}")]
    ResponseTimeout(Duration),
    /// The request body went past the body size limit, and the request failed with it.
    #[error("request body over the limit of {0} bytes")]
    BodyTooLarge(u64),
    /// The backend's circuit breaker refused a new connection or a pending request.
    #[error(transparent)]
    Overloaded(#[from] Overflow),
}

impl UpstreamError {
    /// True when nothing reached the upstream.
    pub(crate) fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_)
                | UpstreamError::ConnectTimeout(_)
                | UpstreamError::Handshake(_)
                | UpstreamError::Tls(_)
                | UpstreamError::NoH2(_)
                | UpstreamError::TlsRefused(_)
        )
    }

    /// True when the upstream did not answer in time.
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::ResponseTimeout(_))
    }

    /// How the request's own body failed the request, if it did; such a failure is the
    /// client's (or the body limit's), not the upstream's.
    pub(crate) fn body_fault(&self) -> Option<BodyFault> {
        let e = match self {
            UpstreamError::BodyTooLarge(_) => return Some(BodyFault::TooLarge),
            UpstreamError::Request(e) => e,
            _ => return None,
        };
        // HTTP/1.1: hyper reports a request body that failed as the user's error, caused by
        // the body's (the client connection's hyper error, as it read the body).
        let user = e.is_user();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            if user && c.is::<hyper::Error>() {
                return Some(BodyFault::Client);
            }
            // HTTP/2: hyper resets the stream itself when the body fails, and the request
            // fails with that reset; nothing else resets a stream from the proxy's side while
            // the request waits for its response.
            if let Some(h2) = c.downcast_ref::<h2::Error>()
                && h2.is_reset()
                && !h2.is_remote()
                && !h2.is_library()
            {
                return Some(BodyFault::Client);
            }
            cause = c.source();
        }
        None
    }

    /// Why TLS failed, when it did: in the handshake, by ALPN, or later (a TLS 1.3 server
    /// refuses a client certificate only after the client's handshake is done, so the refusal
    /// arrives as the answer to the request). `None` for failures that are not TLS's.
    pub(crate) fn tls_reason(&self) -> Option<String> {
        match self {
            UpstreamError::Tls(io) => Some(match rustls_cause(io) {
                Some(tls) => tls.to_string(),
                None => format!("handshake: {io}"),
            }),
            UpstreamError::NoH2(_) => Some("no ALPN h2".to_owned()),
            UpstreamError::TlsRefused(reason) => Some(reason.clone()),
            UpstreamError::Request(e) => {
                let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
                while let Some(e) = cause {
                    if let Some(io) = e.downcast_ref::<std::io::Error>() {
                        // Sockets never fail with `InvalidData`; TLS does. The rustls error
                        // itself does not always survive the trip through hyper (it can arrive
                        // as its message only), so the kind is what tells.
                        return match rustls_cause(io) {
                            Some(tls) => Some(tls.to_string()),
                            None if io.kind() == std::io::ErrorKind::InvalidData => {
                                Some(io.to_string())
                            }
                            None => None,
                        };
                    }
                    cause = e.source();
                }
                None
            }
            _ => None,
        }
    }
}

/// How a request's own body failed it ([`UpstreamError::body_fault`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFault {
    /// The body went past the body size limit.
    TooLarge,
    /// The client's body failed: malformed chunked framing, the client went away, ...
    Client,
}

/// The rustls error an I/O error of a TLS stream carries.
fn rustls_cause(io: &std::io::Error) -> Option<&rustls::Error> {
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

/// A failed send: why, and the request itself when it never left (no connection could be made).
#[derive(Debug)]
pub(crate) struct SendError {
    pub(crate) error: UpstreamError,
    pub(crate) unsent: Option<Request<UpstreamBody>>,
}

impl SendError {
    fn unsent(error: UpstreamError, req: Request<UpstreamBody>) -> Self {
        Self {
            error,
            unsent: Some(req),
        }
    }
}

impl From<UpstreamError> for SendError {
    fn from(error: UpstreamError) -> Self {
        Self {
            error,
            unsent: None,
        }
    }
}

/// Which wire protocol to speak to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    /// HTTP/1.1; over TLS, HTTP/2 when the server picks `h2` by ALPN.
    Http1,
    /// HTTP/2 with prior knowledge; over TLS, `h2` by ALPN.
    H2c,
}

/// What a pool holds connections to: an address, reached in cleartext or with one TLS
/// configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PoolKey {
    addr: SocketAddr,
    /// [`TlsDial::id`]; `None`: cleartext.
    tls: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Upstreams {
    inner: Arc<Pools>,
}

/// The pools are looked up once or twice per request; their keys come from the configuration,
/// not from clients, so they need no DoS-resistant (and slower) SipHash.
type PoolMap<V> = HashMap<PoolKey, V, foldhash::fast::RandomState>;

#[derive(Debug)]
struct Pools {
    idle_h1: Mutex<PoolMap<Vec<IdleH1>>>,
    h2: Mutex<PoolMap<http2::SendRequest<UpstreamBody>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    /// Response head limits: bytes (HTTP/1.1 head, HTTP/2 header list) and HTTP/1.1 fields.
    max_head: usize,
    max_headers: usize,
}

#[derive(Debug)]
struct IdleH1 {
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

/// A connected socket, before HTTP.
enum Connected {
    Plain(TcpStream),
    Tls(Box<WatchedTls>),
}

/// A new connection, in the protocol it turned out to speak.
enum Dialed {
    H1(http1::SendRequest<UpstreamBody>),
    H2(http2::SendRequest<UpstreamBody>),
}

/// The first TLS failure read on a connection, kept by [`WatchedTls`] for the request that
/// opened the connection: hyper may cancel that request as "connection closed" and keep the
/// actual error to the connection.
type TlsFailure = Arc<OnceLock<String>>;

pin_project_lite::pin_project! {
    /// A TLS stream that records the first TLS error it reads.
    struct WatchedTls {
        #[pin]
        inner: tokio_rustls::client::TlsStream<TcpStream>,
        failure: TlsFailure,
    }
}

impl tokio::io::AsyncRead for WatchedTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let polled = this.inner.poll_read(cx, buf);
        if let Poll::Ready(Err(e)) = &polled
            && e.kind() == std::io::ErrorKind::InvalidData
        {
            let _ = this.failure.set(e.to_string());
        }
        polled
    }
}

impl tokio::io::AsyncWrite for WatchedTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// The error of the first request on a new connection: what TLS said, if it failed, and the
/// request when hyper gave it back unsent.
fn first_request_failed(
    mut e: TrySendError<Request<UpstreamBody>>,
    tls: Option<&TlsFailure>,
) -> SendError {
    let unsent = e.take_message();
    let error = match tls.and_then(|t| t.get()) {
        Some(reason) => UpstreamError::TlsRefused(reason.clone()),
        None => UpstreamError::Request(e.into_error()),
    };
    SendError { error, unsent }
}

impl Upstreams {
    /// Creates the pools and spawns their reaper on the current tokio runtime; the reaper stops
    /// when the pools are dropped.
    pub(crate) fn new(config: &EngineConfig) -> Self {
        let inner = Arc::new(Pools {
            idle_h1: Mutex::default(),
            h2: Mutex::default(),
            connect_timeout: config.connect_timeout,
            idle_timeout: config.upstream_idle_timeout,
            max_idle: config.max_idle_per_endpoint,
            max_head: config.max_response_headers_bytes,
            max_headers: config.max_response_headers,
        });
        tokio::spawn(reap(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Sends `req` to `addr` (over TLS with `tls`) and returns the response head; the body
    /// streams from there. The request may be in HTTP/1.1 or HTTP/2 form: it is put in the form
    /// of the connection it goes out on. An HTTP/1.1 connection that answers `101` leaves the
    /// pool: it belongs to the upgrade. When no connection to `addr` could be made, nothing was
    /// sent and the request comes back with the error, so that it can go to another endpoint.
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        wire: Wire,
        tls: Option<&TlsDial>,
        req: Request<UpstreamBody>,
        breaker: &CircuitBreaker,
    ) -> Result<Response<ResponseBody>, SendError> {
        let key = PoolKey {
            addr,
            tls: tls.map(TlsDial::id),
        };
        let scheme = match tls {
            Some(_) => Scheme::HTTPS,
            None => Scheme::HTTP,
        };
        // An HTTP/1.1 backend over TLS may have picked HTTP/2.
        let req = match (wire == Wire::H2c || tls.is_some())
            .then(|| self.inner.checkout_h2(key))
            .flatten()
        {
            Some(mut sender) => match sender.try_send_request(h2_form(req, &scheme)).await {
                Ok(response) => return Ok(response.map(ResponseBody::plain)),
                Err(e) => retry_or_fail(e)?,
            },
            None => req,
        };
        let req = match (wire == Wire::Http1)
            .then(|| self.inner.checkout_h1(key))
            .flatten()
        {
            Some(mut pooled) => match pooled.try_send_request(h1_form(req)).await {
                Ok(response) => return Ok(self.release_h1(key, pooled, response)),
                Err(e) => retry_or_fail(e)?,
            },
            None => req,
        };
        let permits = match new_connection_permits(breaker) {
            Ok(permits) => permits,
            Err(overflow) => return Err(SendError::unsent(overflow.into(), req)),
        };
        // Boxed: dialing (TCP, then TLS) is most of this future's size, and every request's
        // future, made and moved into a box of its own, would carry that room even when it
        // rides a pooled connection (2,400 bytes to about 1,000 here).
        match Box::pin(self.inner.connect(key, wire, tls, permits)).await {
            Ok((Dialed::H1(mut sender), failure)) => {
                match sender.try_send_request(h1_form(req)).await {
                    Ok(response) => Ok(self.release_h1(key, sender, response)),
                    Err(e) => Err(first_request_failed(e, failure.as_ref())),
                }
            }
            Ok((Dialed::H2(mut sender), failure)) => {
                match sender.try_send_request(h2_form(req, &scheme)).await {
                    Ok(response) => Ok(response.map(ResponseBody::plain)),
                    Err(e) => Err(first_request_failed(e, failure.as_ref())),
                }
            }
            Err(error) => Err(SendError::unsent(error, req)),
        }
    }

    /// The response, with a body that returns the connection to the pool once it is done,
    /// unless the connection switched protocols.
    fn release_h1(
        &self,
        key: PoolKey,
        sender: http1::SendRequest<UpstreamBody>,
        response: Response<Incoming>,
    ) -> Response<ResponseBody> {
        let checkin =
            (response.status() != http::StatusCode::SWITCHING_PROTOCOLS).then(|| Checkin {
                pools: Arc::downgrade(&self.inner),
                key,
                sender,
            });
        response.map(|inner| ResponseBody { inner, checkin })
    }
}

pin_project_lite::pin_project! {
    /// An upstream response body; over HTTP/1.1 it gives its connection back to the pool once
    /// it is done (read to its end, or known to be at its end when dropped: hyper stops
    /// polling a body that says it is at its end).
    #[derive(Debug)]
    pub(crate) struct ResponseBody {
        #[pin]
        inner: Incoming,
        checkin: Option<Checkin>,
    }

    impl PinnedDrop for ResponseBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(checkin) = this.checkin.take()
                && this.inner.is_end_stream()
            {
                checkin.release(&mut Context::from_waker(std::task::Waker::noop()));
            }
        }
    }
}

impl ResponseBody {
    /// A body whose connection is not pooled here (HTTP/2: the connection is shared).
    fn plain(inner: Incoming) -> Self {
        Self {
            inner,
            checkin: None,
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = polled
            && let Some(checkin) = this.checkin.take()
        {
            checkin.release(cx);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// An HTTP/1.1 connection to give back to its pool once its response is done.
#[derive(Debug)]
struct Checkin {
    pools: Weak<Pools>,
    key: PoolKey,
    sender: http1::SendRequest<UpstreamBody>,
}

impl Checkin {
    /// Gives the connection back once it is ready for another request: at once when it is
    /// already (usually, as the connection's task read the body's end before handing it on),
    /// else from a task that waits for it. One that closes instead is dropped.
    fn release(mut self, cx: &mut Context<'_>) {
        match self.sender.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                if let Some(pools) = self.pools.upgrade() {
                    pools.checkin_h1(self.key, self.sender);
                }
            }
            Poll::Ready(Err(_)) => {}
            Poll::Pending => {
                // Dropped outside a runtime (at shutdown), the connection just closes.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        if self.sender.ready().await.is_ok()
                            && let Some(pools) = self.pools.upgrade()
                        {
                            pools.checkin_h1(self.key, self.sender);
                        }
                    });
                }
            }
        }
    }
}

/// `req` in HTTP/1.1 form: origin-form target, the host in `Host`.
fn h1_form(mut req: Request<UpstreamBody>) -> Request<UpstreamBody> {
    if req.version() == Version::HTTP_11 {
        return req;
    }
    *req.version_mut() = Version::HTTP_11;
    if let Some(authority) = req.uri().authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(header::HOST, host);
    }
    if let Some(path) = req.uri().path_and_query().cloned() {
        *req.uri_mut() = Uri::from(path);
    }
    req
}

/// `req` in HTTP/2 form: `:scheme` and `:authority` set, no `Host` header (RFC 9113 section
/// 8.3.1 forbids one that differs).
fn h2_form(mut req: Request<UpstreamBody>, scheme: &Scheme) -> Request<UpstreamBody> {
    *req.version_mut() = Version::HTTP_2;
    let host = req.headers_mut().remove(header::HOST);
    let mut parts = req.uri().clone().into_parts();
    if parts.authority.is_none() {
        parts.authority = host.and_then(|h| Authority::try_from(h.as_bytes()).ok());
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    parts.scheme = Some(scheme.clone());
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    req
}

/// hyper's default limit on HTTP/1.1 header fields, which it keeps on the stack.
pub(crate) const HYPER_MAX_HEADERS: usize = 100;

/// What opening a connection takes from the breaker: a pending-request permit until the
/// connection is up, and a connection permit for as long as it is open.
#[derive(Debug)]
struct ConnectPermits {
    pending: Permit,
    connection: Permit,
}

fn new_connection_permits(breaker: &CircuitBreaker) -> Result<ConnectPermits, Overflow> {
    let pending = breaker.try_acquire_pending()?;
    let connection = breaker.try_acquire_connection()?;
    Ok(ConnectPermits {
        pending,
        connection,
    })
}

/// A request that hyper handed back unsent may go out again; anything else is final.
fn retry_or_fail(
    mut e: TrySendError<Request<UpstreamBody>>,
) -> Result<Request<UpstreamBody>, UpstreamError> {
    match e.take_message() {
        Some(req) => {
            tracing::debug!(error = %e.error(), "pooled upstream connection closed; redialling");
            Ok(req)
        }
        None => Err(UpstreamError::Request(e.into_error())),
    }
}

impl Pools {
    fn checkout_h1(&self, key: PoolKey) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut idle = crate::sync::lock(&self.idle_h1);
        let stack = idle.get_mut(&key)?;
        while let Some(conn) = stack.pop() {
            if conn.sender.is_ready() && conn.since.elapsed() < self.idle_timeout {
                return Some(conn.sender);
            }
        }
        None
    }

    fn checkin_h1(&self, key: PoolKey, sender: http1::SendRequest<UpstreamBody>) {
        let mut idle = crate::sync::lock(&self.idle_h1);
        let stack = idle.entry(key).or_default();
        if stack.len() < self.max_idle {
            stack.push(IdleH1 {
                sender,
                since: Instant::now(),
            });
        }
    }

    fn checkout_h2(&self, key: PoolKey) -> Option<http2::SendRequest<UpstreamBody>> {
        let h2 = crate::sync::lock(&self.h2);
        h2.get(&key).filter(|sender| !sender.is_closed()).cloned()
    }

    /// A new connection to `key.addr`: TCP, then TLS with `tls`, both within the connect
    /// timeout; then HTTP/1.1 or HTTP/2 as `wire` and ALPN say.
    async fn connect(
        &self,
        key: PoolKey,
        wire: Wire,
        tls: Option<&TlsDial>,
        permits: ConnectPermits,
    ) -> Result<(Dialed, Option<TlsFailure>), UpstreamError> {
        let addr = key.addr;
        let dial = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(UpstreamError::Connect)?;
            stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
            match tls {
                None => Ok(Connected::Plain(stream)),
                Some(tls) => match tls.handshake(stream, addr).await {
                    Ok(stream) => Ok(Connected::Tls(Box::new(WatchedTls {
                        inner: stream,
                        failure: TlsFailure::default(),
                    }))),
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "upstream TLS handshake failed");
                        Err(UpstreamError::Tls(e))
                    }
                },
            }
        };
        let dialed = tokio::time::timeout(self.connect_timeout, dial)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(self.connect_timeout))??;
        match (dialed, wire) {
            (Connected::Plain(plain), Wire::Http1) => {
                Ok((self.handshake_h1(key, plain, permits).await?, None))
            }
            (Connected::Plain(plain), Wire::H2c) => {
                Ok((self.handshake_h2(key, plain, permits).await?, None))
            }
            (Connected::Tls(tls), wire) => {
                let failure = tls.failure.clone();
                let dialed = match (tls.inner.get_ref().1.alpn_protocol(), wire) {
                    (Some(ALPN_H2), _) => self.handshake_h2(key, tls, permits).await?,
                    (_, Wire::Http1) => self.handshake_h1(key, tls, permits).await?,
                    (other, Wire::H2c) => {
                        return Err(UpstreamError::NoH2(
                            other.map(|p| String::from_utf8_lossy(p).into_owned()),
                        ));
                    }
                };
                Ok((dialed, Some(failure)))
            }
        }
    }

    async fn handshake_h1<S>(
        &self,
        key: PoolKey,
        stream: S,
        permits: ConnectPermits,
    ) -> Result<Dialed, UpstreamError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut builder = http1::Builder::new();
        // hyper's read buffer bounds the head, and cannot be smaller than 8 KiB.
        builder.max_buf_size(self.max_head.max(8192));
        if self.max_headers != HYPER_MAX_HEADERS {
            // Other than hyper's default, the field index is allocated per response.
            builder.max_headers(self.max_headers);
        }
        let (sender, conn) = builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Handshake)?;
        let ConnectPermits {
            pending,
            connection,
        } = permits;
        drop(pending);
        let addr = key.addr;
        tokio::spawn(async move {
            let _connection = connection;
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "upstream HTTP/1.1 connection ended");
            }
        });
        Ok(Dialed::H1(sender))
    }

    async fn handshake_h2<S>(
        &self,
        key: PoolKey,
        stream: S,
        permits: ConnectPermits,
    ) -> Result<Dialed, UpstreamError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .max_header_list_size(u32::try_from(self.max_head).unwrap_or(u32::MAX))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Handshake)?;
        let ConnectPermits {
            pending,
            connection,
        } = permits;
        drop(pending);
        let addr = key.addr;
        tokio::spawn(async move {
            let _connection = connection;
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        // Concurrent first requests may each dial; the last one stored is shared from then on and
        // the others close once their own requests are done.
        crate::sync::lock(&self.h2).insert(key, sender.clone());
        Ok(Dialed::H2(sender))
    }

    /// Drops idle HTTP/1.1 connections past their time and closed HTTP/2 connections.
    fn reap(&self) {
        let now = Instant::now();
        crate::sync::lock(&self.idle_h1).retain(|_, stack| {
            stack.retain(|c| !c.sender.is_closed() && now - c.since < self.idle_timeout);
            !stack.is_empty()
        });
        crate::sync::lock(&self.h2).retain(|_, sender| !sender.is_closed());
    }
}

async fn reap(pools: Weak<Pools>) {
    let period = match pools.upgrade() {
        Some(p) => (p.idle_timeout / 2).max(Duration::from_millis(100)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pools.upgrade() {
            Some(p) => p.reap(),
            None => return,
        }
    }
}
