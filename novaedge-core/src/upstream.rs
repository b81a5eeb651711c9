//! Upstream connections, shared by every runtime so that a reload keeps them warm.
//!
//! - HTTP/1.1: a stack of idle connections per endpoint. A request takes the most recently used
//!   idle connection (or dials a new one); once its response body is done the connection goes
//!   back, unless it was upgraded or closed. Idle connections expire after
//!   [`EngineConfig::upstream_idle_timeout`](crate::EngineConfig), which is also how the pools of
//!   endpoints removed by a reload drain: in-flight requests finish, then nothing reuses them.
//! - HTTP/2 (h2c, gRPC): one multiplexed connection per endpoint, redialled when it closes.
//!
//! Circuit breaking: a request that needs a new connection is *pending* until the connection is
//! up, and holds a `max_pending_requests` permit meanwhile; the connection holds a
//! `max_connections` permit of the backend that opened it for as long as it is open, idle in
//! the pool included. Either limit reached fails the request at once
//! ([`UpstreamError::Overloaded`]); nothing waits for a connection to free up. Pools are per
//! endpoint address, so a connection opened for one backend may serve another backend with the
//! same endpoint; it counts against the backend that opened it.
//!
//! A pooled connection can be closed by the upstream just as a request is handed to it. hyper
//! gives such a request back unsent (`try_send_request`), and it is retried once on a fresh
//! connection: the request never reached the upstream, so this is safe for any method.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use novaedge_health::{CircuitBreaker, Overflow, Permit};

use crate::config::EngineConfig;

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
    #[error("request: {0}")]
    Request(#[source] hyper::Error),
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
        )
    }
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
    Http1,
    H2c,
}

#[derive(Debug)]
pub(crate) struct Upstreams {
    inner: Arc<Pools>,
}

#[derive(Debug)]
struct Pools {
    idle_h1: Mutex<HashMap<SocketAddr, Vec<IdleH1>>>,
    h2: Mutex<HashMap<SocketAddr, http2::SendRequest<UpstreamBody>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
}

#[derive(Debug)]
struct IdleH1 {
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
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
        });
        tokio::spawn(reap(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Sends `req` to `addr` and returns the response head; the body streams from there.
    /// An HTTP/1.1 connection that answers `101` leaves the pool: it belongs to the upgrade.
    /// When no connection to `addr` could be made, nothing was sent and the request comes back
    /// with the error, so that it can go to another endpoint.
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        wire: Wire,
        req: Request<UpstreamBody>,
        breaker: &CircuitBreaker,
    ) -> Result<Response<Incoming>, SendError> {
        match wire {
            Wire::Http1 => self.send_h1(addr, req, breaker).await,
            Wire::H2c => self.send_h2(addr, req, breaker).await,
        }
    }

    async fn send_h1(
        &self,
        addr: SocketAddr,
        req: Request<UpstreamBody>,
        breaker: &CircuitBreaker,
    ) -> Result<Response<Incoming>, SendError> {
        let req = match self.inner.checkout_h1(addr) {
            Some(mut pooled) => match pooled.try_send_request(req).await {
                Ok(response) => return Ok(self.release_h1(addr, pooled, response)),
                Err(e) => retry_or_fail(e)?,
            },
            None => req,
        };
        let permits = match new_connection_permits(breaker) {
            Ok(permits) => permits,
            Err(overflow) => return Err(SendError::unsent(overflow.into(), req)),
        };
        let mut sender = match self.inner.connect_h1(addr, permits).await {
            Ok(sender) => sender,
            Err(error) => return Err(SendError::unsent(error, req)),
        };
        let response = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Request)?;
        Ok(self.release_h1(addr, sender, response))
    }

    /// Returns the connection to the pool once the response body is done, unless the
    /// connection switched protocols.
    fn release_h1(
        &self,
        addr: SocketAddr,
        mut sender: http1::SendRequest<UpstreamBody>,
        response: Response<Incoming>,
    ) -> Response<Incoming> {
        if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            let pools = Arc::downgrade(&self.inner);
            tokio::spawn(async move {
                // Ready again means the response was read to the end on a keep-alive connection.
                if sender.ready().await.is_ok()
                    && let Some(pools) = pools.upgrade()
                {
                    pools.checkin_h1(addr, sender);
                }
            });
        }
        response
    }

    async fn send_h2(
        &self,
        addr: SocketAddr,
        req: Request<UpstreamBody>,
        breaker: &CircuitBreaker,
    ) -> Result<Response<Incoming>, SendError> {
        let pooled = self.inner.h2.lock().expect("pool lock").get(&addr).cloned();
        let req = match pooled {
            Some(mut sender) if !sender.is_closed() => match sender.try_send_request(req).await {
                Ok(response) => return Ok(response),
                Err(e) => retry_or_fail(e)?,
            },
            _ => req,
        };
        let permits = match new_connection_permits(breaker) {
            Ok(permits) => permits,
            Err(overflow) => return Err(SendError::unsent(overflow.into(), req)),
        };
        let mut sender = match self.inner.connect_h2(addr, permits).await {
            Ok(sender) => sender,
            Err(error) => return Err(SendError::unsent(error, req)),
        };
        Ok(sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Request)?)
    }
}

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
    fn checkout_h1(&self, addr: SocketAddr) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut idle = self.idle_h1.lock().expect("pool lock");
        let stack = idle.get_mut(&addr)?;
        while let Some(conn) = stack.pop() {
            if conn.sender.is_ready() && conn.since.elapsed() < self.idle_timeout {
                return Some(conn.sender);
            }
        }
        None
    }

    fn checkin_h1(&self, addr: SocketAddr, sender: http1::SendRequest<UpstreamBody>) {
        let mut idle = self.idle_h1.lock().expect("pool lock");
        let stack = idle.entry(addr).or_default();
        if stack.len() < self.max_idle {
            stack.push(IdleH1 {
                sender,
                since: Instant::now(),
            });
        }
    }

    async fn dial(&self, addr: SocketAddr) -> Result<TokioIo<TcpStream>, UpstreamError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(self.connect_timeout))?
            .map_err(UpstreamError::Connect)?;
        stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
        Ok(TokioIo::new(stream))
    }

    async fn connect_h1(
        &self,
        addr: SocketAddr,
        permits: ConnectPermits,
    ) -> Result<http1::SendRequest<UpstreamBody>, UpstreamError> {
        let io = self.dial(addr).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(UpstreamError::Handshake)?;
        let ConnectPermits {
            pending,
            connection,
        } = permits;
        drop(pending);
        tokio::spawn(async move {
            let _connection = connection;
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "upstream HTTP/1.1 connection ended");
            }
        });
        Ok(sender)
    }

    async fn connect_h2(
        &self,
        addr: SocketAddr,
        permits: ConnectPermits,
    ) -> Result<http2::SendRequest<UpstreamBody>, UpstreamError> {
        let io = self.dial(addr).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(io)
            .await
            .map_err(UpstreamError::Handshake)?;
        let ConnectPermits {
            pending,
            connection,
        } = permits;
        drop(pending);
        tokio::spawn(async move {
            let _connection = connection;
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        // Concurrent first requests may each dial; the last one stored is shared from then on and
        // the others close once their own requests are done.
        self.h2
            .lock()
            .expect("pool lock")
            .insert(addr, sender.clone());
        Ok(sender)
    }

    /// Drops idle HTTP/1.1 connections past their time and closed HTTP/2 connections.
    fn reap(&self) {
        let now = Instant::now();
        self.idle_h1.lock().expect("pool lock").retain(|_, stack| {
            stack.retain(|c| !c.sender.is_closed() && now - c.since < self.idle_timeout);
            !stack.is_empty()
        });
        self.h2
            .lock()
            .expect("pool lock")
            .retain(|_, sender| !sender.is_closed());
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
