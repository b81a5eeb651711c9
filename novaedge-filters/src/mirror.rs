//! Request mirroring (shadowing), after the Gateway API's `RequestMirror` filter (with
//! `percent` / `fraction`, GEP-3171) and Envoy's `request_mirror_policies`.
//!
//! # Model
//!
//! For a chosen fraction of requests, a copy of the request is sent to a second service, the
//! mirror target (a [`tower::Service`] given to the layer and cloned per copy), in a spawned
//! task. It is fire and forget: the copy's response is dropped, and its errors, slowness or
//! panics never reach the primary request, whose response is the inner service's, untouched.
//!
//! - **What is copied**: the method, URI, version, headers and extensions of the request as it
//!   reaches this filter (after the header modifier and URL rewrite, see the
//!   [crate docs](crate)), and the body. The body is copied as the primary request streams it
//!   to the inner service (a [`MirrorBody`] tee, a `Bytes` clone per chunk, no copy of the
//!   data), up to [`MirrorConfig::max_body`] (64 KiB by default); the copy is sent once the
//!   primary body has ended, so a copy never holds up the primary request. Like Envoy, which
//!   buffers the body for its shadow, a request whose body is larger than the limit (by its
//!   size hint, or once it grows past it) is **not mirrored at all**: a copy with a cut or
//!   empty body could do harm on the mirror target. Nor is one whose body failed or was not
//!   read to the end. Request trailers are not copied.
//! - **Host**: as Envoy does, the copy's `Host` header and URI authority get a suffix,
//!   `-shadow` by default, put before any port (`api.example.com:8080` becomes
//!   `api.example.com-shadow:8080`), so that the mirror target can tell copies from real
//!   traffic. [`MirrorConfig::host_suffix`] changes it, or `None` leaves the host alone.
//! - **Which requests**: a fraction `numerator / denominator` (Gateway API `fraction`;
//!   `percent` is `n / 100`). The choice is a hash of a per-layer counter and seed, so it is
//!   random-looking, costs one atomic add, and is reproducible given
//!   [`MirrorConfig::seed`].
//! - **Bounded**: at most [`MirrorConfig::max_in_flight`] copies (128 by default) are in
//!   flight per layer, from the moment a request is chosen until its copy's response, error
//!   or timeout; beyond that, copies are dropped and counted. Each copy's whole life is
//!   bounded by [`MirrorConfig::timeout`] (15 s by default, Envoy's default route timeout), so
//!   a mirror target that hangs cannot hold the slots for ever.
//!
//! What happened to copies is counted in [`MirrorStats`] ([`MirrorLayer::stats`]).
//!
//! The filter must be called within a Tokio runtime (it spawns); outside one, copies are
//! dropped. The primary request's body type becomes [`MirrorBody`], whose data are [`Bytes`]
//! and whose error is the client body's, unchanged.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use novaedge_filters::mirror::{MirrorBody, MirrorConfig, MirrorFraction, MirrorLayer, MirrorRequestBody};
//! use tokio::sync::mpsc;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // The mirror target: here it hands the copies it gets to the test.
//! let (tx, mut copies) = mpsc::unbounded_channel();
//! let target = service_fn(move |req: Request<MirrorRequestBody>| {
//!     let tx = tx.clone();
//!     async move {
//!         let host = req.headers()["host"].clone();
//!         let body = req.into_body().collect().await?.to_bytes();
//!         tx.send((host, body)).ok();
//!         Ok::<_, std::convert::Infallible>(Response::new(()))
//!     }
//! });
//! let config = MirrorConfig { fraction: MirrorFraction::percent(100), ..MirrorConfig::default() };
//! let layer = MirrorLayer::new(config, target).unwrap();
//!
//! let primary = layer.layer(service_fn(|req: Request<MirrorBody<Full<Bytes>>>| async move {
//!     let body = req.into_body().collect().await?.to_bytes();
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::new(body)))
//! }));
//! let req = Request::post("/orders")
//!     .header("host", "shop.example")
//!     .body(Full::new(Bytes::from("order-1")))
//!     .unwrap();
//! let res = primary.oneshot(req).await.unwrap();
//! assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "order-1");
//!
//! let (host, body) = copies.recv().await.unwrap();
//! assert_eq!(host, "shop.example-shadow");
//! assert_eq!(body, "order-1");
//! # }
//! ```

use std::{
    error::Error as StdError,
    fmt,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http::{HeaderValue, Request, Uri, header::HOST, uri::Authority};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tower::{Layer, Service, ServiceExt};

/// The body of a mirrored copy: the whole buffered body.
pub type MirrorRequestBody = Full<Bytes>;

/// The default suffix put on the copy's host, as Envoy.
pub const DEFAULT_HOST_SUFFIX: &str = "-shadow";

/// Which share of requests to mirror: `numerator / denominator` (Gateway API `fraction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MirrorFraction {
    /// Requests mirrored per `denominator`.
    pub numerator: u32,
    /// Must be above zero and at least `numerator`.
    pub denominator: u32,
}

impl MirrorFraction {
    /// Every request (Gateway API's default when neither `percent` nor `fraction` is set).
    pub const ALL: Self = Self {
        numerator: 1,
        denominator: 1,
    };

    /// Gateway API `percent`: `percent / 100`.
    pub fn percent(percent: u32) -> Self {
        Self {
            numerator: percent,
            denominator: 100,
        }
    }
}

/// Configuration of the [`MirrorLayer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorConfig {
    /// Which share of requests to mirror. Default all.
    pub fraction: MirrorFraction,
    /// The most copies in flight at once; more are dropped. Default 128.
    pub max_in_flight: usize,
    /// The largest body copied, in bytes; requests with larger bodies are not mirrored.
    /// Default 64 KiB.
    pub max_body: usize,
    /// Put on the copy's host, before any port; `None` leaves it alone. Default `-shadow`.
    pub host_suffix: Option<String>,
    /// The longest life of a copy, from the request being chosen to the mirror's response;
    /// `None` for no limit. Default 15 s.
    pub timeout: Option<Duration>,
    /// Seed of the sampling; `None` picks one at random. Set it for reproducible choices.
    pub seed: Option<u64>,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        Self {
            fraction: MirrorFraction::ALL,
            max_in_flight: 128,
            max_body: 64 * 1024,
            host_suffix: Some(DEFAULT_HOST_SUFFIX.to_owned()),
            timeout: Some(Duration::from_secs(15)),
            seed: None,
        }
    }
}

/// An error in a [`MirrorConfig`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MirrorConfigError {
    /// The fraction's denominator is zero or below its numerator.
    #[error(
        "mirror.fraction: {numerator}/{denominator} is not a fraction (the denominator must be above zero and at least the numerator)"
    )]
    Fraction {
        /// The numerator.
        numerator: u32,
        /// The denominator.
        denominator: u32,
    },
    /// `max_in_flight` is zero or too large.
    #[error("mirror.max_in_flight: {0} is not between 1 and {max}", max = Semaphore::MAX_PERMITS)]
    MaxInFlight(usize),
    /// The host suffix cannot be part of a host name.
    #[error("mirror.host_suffix: {0:?} is not valid in a host name")]
    HostSuffix(String),
    /// The timeout is zero.
    #[error("mirror.timeout: must be above zero (leave it unset for none)")]
    Timeout,
}

/// Counters of what happened to mirrored copies since the layer was built. See
/// [`MirrorLayer::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MirrorStats {
    /// Requests chosen by the fraction.
    pub sampled: u64,
    /// Chosen, but dropped because `max_in_flight` copies were in flight.
    pub dropped_in_flight: u64,
    /// Chosen, but not mirrored because the body was over `max_body`.
    pub dropped_body_too_large: u64,
    /// Chosen, but not mirrored because the primary request's body failed or was not read to
    /// its end (or no Tokio runtime was there to spawn on).
    pub abandoned: u64,
    /// Copies the mirror target answered (any status).
    pub completed: u64,
    /// Copies that failed: the target's error, or a panic in it.
    pub failed: u64,
    /// Copies still running when `timeout` passed.
    pub timed_out: u64,
    /// Copies in flight now.
    pub in_flight: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sampled: AtomicU64,
    dropped_in_flight: AtomicU64,
    dropped_body_too_large: AtomicU64,
    abandoned: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Shared {
    numerator: u32,
    denominator: u32,
    max_in_flight: usize,
    max_body: usize,
    host_suffix: Option<String>,
    timeout: Option<Duration>,
    /// Sampling state: a counter advanced by an odd constant, hashed per request.
    sample: AtomicU64,
    in_flight: Arc<Semaphore>,
    counters: Counters,
}

impl Shared {
    fn sample(&self) -> bool {
        if self.numerator == 0 {
            return false;
        }
        if self.numerator >= self.denominator {
            return true;
        }
        let x = self
            .sample
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        // SplitMix64's finalizer: consecutive counter values give independent-looking bits.
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // Scale to [0, denominator) without modulo bias.
        let draw = ((u128::from(z) * u128::from(self.denominator)) >> 64) as u32;
        draw < self.numerator
    }
}

// === impl MirrorLayer ===

/// A [`Layer`] that mirrors a share of requests to a target service. See the
/// [module docs](self).
#[derive(Clone)]
pub struct MirrorLayer<M> {
    target: M,
    shared: Arc<Shared>,
}

impl<M> MirrorLayer<M> {
    /// Builds the layer, checking the configuration. `target` receives the copies.
    pub fn new(config: MirrorConfig, target: M) -> Result<Self, MirrorConfigError> {
        let MirrorFraction {
            numerator,
            denominator,
        } = config.fraction;
        if denominator == 0 || numerator > denominator {
            return Err(MirrorConfigError::Fraction {
                numerator,
                denominator,
            });
        }
        if config.max_in_flight == 0 || config.max_in_flight > Semaphore::MAX_PERMITS {
            return Err(MirrorConfigError::MaxInFlight(config.max_in_flight));
        }
        if let Some(suffix) = &config.host_suffix {
            let valid = !suffix.is_empty()
                && suffix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if !valid {
                return Err(MirrorConfigError::HostSuffix(suffix.clone()));
            }
        }
        if config.timeout == Some(Duration::ZERO) {
            return Err(MirrorConfigError::Timeout);
        }
        Ok(Self {
            target,
            shared: Arc::new(Shared {
                numerator,
                denominator,
                max_in_flight: config.max_in_flight,
                max_body: config.max_body,
                host_suffix: config.host_suffix,
                timeout: config.timeout,
                sample: AtomicU64::new(config.seed.unwrap_or_else(rand::random)),
                in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
                counters: Counters::default(),
            }),
        })
    }

    /// The counters, shared by every service this layer built.
    pub fn stats(&self) -> MirrorStats {
        let c = &self.shared.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MirrorStats {
            sampled: load(&c.sampled),
            dropped_in_flight: load(&c.dropped_in_flight),
            dropped_body_too_large: load(&c.dropped_body_too_large),
            abandoned: load(&c.abandoned),
            completed: load(&c.completed),
            failed: load(&c.failed),
            timed_out: load(&c.timed_out),
            in_flight: (self.shared.max_in_flight - self.shared.in_flight.available_permits())
                as u64,
        }
    }
}

impl<M> fmt::Debug for MirrorLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MirrorLayer")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<S, M: Clone> Layer<S> for MirrorLayer<M> {
    type Service = Mirror<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Mirror {
            inner,
            target: self.target.clone(),
            shared: self.shared.clone(),
        }
    }
}

// === impl Mirror ===

/// The service built by [`MirrorLayer`].
#[derive(Clone)]
pub struct Mirror<S, M> {
    inner: S,
    target: M,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug, M> fmt::Debug for Mirror<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mirror")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, M, ReqB, ResB> Service<Request<ReqB>> for Mirror<S, M>
where
    S: Service<Request<MirrorBody<ReqB>>, Response = http::Response<ResB>>,
    M: Service<Request<MirrorRequestBody>> + Clone + Send + 'static,
    M::Future: Send,
    M::Error: Into<Box<dyn StdError + Send + Sync>>,
    ReqB: Body,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let req = match self.start_copy(&req) {
            Some(copy) => req.map(|body| MirrorBody::tee(body, copy, self.shared.max_body)),
            None => req.map(MirrorBody::passthrough),
        };
        self.inner.call(req)
    }
}

impl<S, M> Mirror<S, M> {
    /// Chooses whether to mirror `req`; if so, spawns the copy's task and returns the sender
    /// of its body.
    fn start_copy<B>(&self, req: &Request<B>) -> Option<BodySender>
    where
        B: Body,
        M: Service<Request<MirrorRequestBody>> + Clone + Send + 'static,
        M::Future: Send,
        M::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let shared = &self.shared;
        if !shared.sample() {
            return None;
        }
        Counters::bump(&shared.counters.sampled);
        if req.body().size_hint().lower() > shared.max_body as u64 {
            Counters::bump(&shared.counters.dropped_body_too_large);
            return None;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            Counters::bump(&shared.counters.abandoned);
            return None;
        };
        let Ok(permit) = shared.in_flight.clone().try_acquire_owned() else {
            Counters::bump(&shared.counters.dropped_in_flight);
            tracing::debug!(
                max_in_flight = shared.max_in_flight,
                "mirror copy dropped: too many in flight"
            );
            return None;
        };

        let mut head = Request::new(());
        *head.method_mut() = req.method().clone();
        *head.uri_mut() = req.uri().clone();
        *head.version_mut() = req.version();
        *head.headers_mut() = req.headers().clone();
        *head.extensions_mut() = req.extensions().clone();
        if let Some(suffix) = &shared.host_suffix {
            shadow_host(&mut head, suffix);
        }

        let (tx, rx) = oneshot::channel();
        let task = copy_task(self.target.clone(), head, rx, permit, self.shared.clone());
        runtime.spawn(task);
        Some(BodySender(tx))
    }
}

/// The life of one copy: wait for the primary body, send it, count the outcome.
async fn copy_task<M>(
    target: M,
    head: Request<()>,
    body: oneshot::Receiver<Result<Bytes, Abandoned>>,
    permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
) where
    M: Service<Request<MirrorRequestBody>> + Send + 'static,
    M::Future: Send,
    M::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    // Held until the copy is done, even if the target panics (the task unwinds).
    let _permit = permit;
    let counters = &shared.counters;
    let copy = async {
        let body = match body.await {
            Ok(Ok(body)) => body,
            Ok(Err(Abandoned::TooLarge)) => return Some(&counters.dropped_body_too_large),
            Ok(Err(Abandoned::BodyFailed)) | Err(_) => return Some(&counters.abandoned),
        };
        let req = head.map(|()| Full::new(body));
        // A panic in the target's code fails this copy only.
        let result = AssertUnwindSafe(target.oneshot(req)).catch_unwind().await;
        match result {
            Ok(Ok(_response)) => Some(&counters.completed),
            Ok(Err(e)) => {
                let e: Box<dyn StdError + Send + Sync> = e.into();
                tracing::debug!(error = %e, "mirror copy failed");
                Some(&counters.failed)
            }
            Err(_panic) => {
                tracing::debug!("mirror target panicked");
                Some(&counters.failed)
            }
        }
    };
    let counter = match shared.timeout {
        Some(t) => match tokio::time::timeout(t, copy).await {
            Ok(counter) => counter,
            Err(_) => {
                tracing::debug!(timeout = ?t, "mirror copy timed out");
                Some(&counters.timed_out)
            }
        },
        None => copy.await,
    };
    if let Some(counter) = counter {
        Counters::bump(counter);
    }
}

/// Puts `suffix` on the copy's `Host` header and URI authority, before any port.
fn shadow_host(head: &mut Request<()>, suffix: &str) {
    if let Some(host) = head.headers().get(HOST).and_then(|h| h.to_str().ok())
        && let Ok(value) = HeaderValue::try_from(with_suffix(host, suffix))
    {
        head.headers_mut().insert(HOST, value);
    }
    if let Some(authority) = head.uri().authority() {
        // Keep any userinfo out of the way: put the suffix on the host[:port] part only.
        let (userinfo, hostport) = match authority.as_str().rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority.as_str()),
        };
        let hostport = with_suffix(hostport, suffix);
        let new = match userinfo {
            Some(u) => format!("{u}@{hostport}"),
            None => hostport,
        };
        if let Ok(authority) = Authority::try_from(new) {
            let mut parts = head.uri().clone().into_parts();
            parts.authority = Some(authority);
            if let Ok(uri) = Uri::from_parts(parts) {
                *head.uri_mut() = uri;
            }
        }
    }
}

/// `host[:port]` with `suffix` put after the host.
fn with_suffix(hostport: &str, suffix: &str) -> String {
    if let Some((host, port)) = hostport.rsplit_once(':') {
        let is_port = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
        // An IPv6 literal has colons of its own: only `[...]:port` has a port.
        let host_ok = !host.contains(':') || host.ends_with(']');
        if is_port && host_ok {
            return format!("{host}{suffix}:{port}");
        }
    }
    format!("{hostport}{suffix}")
}

// === impl MirrorBody ===

/// Why a copy's body never came.
#[derive(Debug)]
enum Abandoned {
    TooLarge,
    BodyFailed,
}

/// Sends the copied body to the copy's task.
#[derive(Debug)]
struct BodySender(oneshot::Sender<Result<Bytes, Abandoned>>);

#[derive(Debug)]
struct Tee {
    tx: BodySender,
    chunks: Vec<Bytes>,
    len: usize,
    limit: usize,
}

impl Tee {
    fn finish(self) {
        let mut body = BytesMut::with_capacity(self.len);
        for chunk in self.chunks {
            body.extend_from_slice(&chunk);
        }
        let _ = self.tx.0.send(Ok(body.freeze()));
    }

    fn abandon(self, why: Abandoned) {
        let _ = self.tx.0.send(Err(why));
    }
}

pin_project! {
    /// The primary request's body under the [`Mirror`] filter: the client's body, passed
    /// through, and copied for the mirror when the request was chosen. The copy is sent when
    /// the body ends (its last frame, or `is_end_stream` after a frame); if the body is
    /// dropped before that, the copy is abandoned.
    pub struct MirrorBody<B> {
        #[pin]
        inner: B,
        tee: Option<Tee>,
    }

}

impl<B: Body> MirrorBody<B> {
    /// A body that is not copied.
    pub fn passthrough(inner: B) -> Self {
        Self { inner, tee: None }
    }

    fn tee(inner: B, tx: BodySender, limit: usize) -> Self {
        let tee = Tee {
            tx,
            chunks: Vec::new(),
            len: 0,
            limit,
        };
        if inner.is_end_stream() {
            tee.finish();
            return Self::passthrough(inner);
        }
        Self {
            inner,
            tee: Some(tee),
        }
    }
}

impl<B> fmt::Debug for MirrorBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MirrorBody")
            .field("copying", &self.tee.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: Body> Body for MirrorBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        let frame = match frame {
            None => {
                if let Some(tee) = this.tee.take() {
                    tee.finish();
                }
                return Poll::Ready(None);
            }
            Some(Err(e)) => {
                if let Some(tee) = this.tee.take() {
                    tee.abandon(Abandoned::BodyFailed);
                }
                return Poll::Ready(Some(Err(e)));
            }
            Some(Ok(frame)) => frame.map_data(|mut d| d.copy_to_bytes(d.remaining())),
        };
        if let Some(tee) = this.tee.as_mut()
            && let Some(data) = frame.data_ref()
        {
            tee.len += data.len();
            if tee.len > tee.limit {
                tracing::debug!(limit = tee.limit, "mirror copy dropped: body too large");
                if let Some(tee) = this.tee.take() {
                    tee.abandon(Abandoned::TooLarge);
                }
            } else if !data.is_empty() {
                tee.chunks.push(data.clone());
            }
        }
        if this.inner.is_end_stream()
            && let Some(tee) = this.tee.take()
        {
            tee.finish();
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Response, StatusCode};
    use http_body_util::{BodyExt, Empty, StreamBody, combinators::UnsyncBoxBody};
    use std::{
        convert::Infallible,
        sync::Mutex,
        sync::atomic::{AtomicUsize, Ordering},
    };
    use tower::service_fn;

    /// What the mirror target does with a copy.
    #[derive(Clone, Copy, Debug)]
    enum Target {
        Answer,
        Fail,
        Hang,
        Panic,
    }

    /// A copy the target got.
    #[derive(Clone, Debug)]
    struct Seen {
        method: Method,
        uri: Uri,
        host: Option<HeaderValue>,
        body: Bytes,
    }

    type Copies = Arc<Mutex<Vec<Seen>>>;

    type TargetSvc =
        tower::util::BoxCloneService<Request<MirrorRequestBody>, Response<()>, &'static str>;

    fn target(behaviour: Target) -> (TargetSvc, Copies) {
        let copies: Copies = Arc::default();
        let c = copies.clone();
        let svc = service_fn(move |req: Request<MirrorRequestBody>| {
            let c = c.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                c.lock().unwrap().push(Seen {
                    method: parts.method,
                    uri: parts.uri,
                    host: parts.headers.get(HOST).cloned(),
                    body,
                });
                match behaviour {
                    Target::Answer => Ok(Response::new(())),
                    Target::Fail => Err("mirror down"),
                    Target::Hang => std::future::pending().await,
                    Target::Panic => panic!("mirror target bug"),
                }
            }
        });
        (TargetSvc::new(svc), copies)
    }

    type ResBody = Full<Bytes>;

    /// The primary upstream: answers 200 with the request body it read.
    fn primary<B>() -> impl Service<
        Request<MirrorBody<B>>,
        Response = Response<ResBody>,
        Error = B::Error,
        Future = impl Future<Output = Result<Response<ResBody>, B::Error>>,
    > + Clone
    where
        B: Body + 'static,
    {
        service_fn(|req: Request<MirrorBody<B>>| async move {
            let body = req.into_body().collect().await?.to_bytes();
            Ok(Response::new(Full::new(body)))
        })
    }

    fn config(fraction: MirrorFraction) -> MirrorConfig {
        MirrorConfig {
            fraction,
            seed: Some(7),
            ..MirrorConfig::default()
        }
    }

    /// Lets the spawned copies run until none is in flight (or a bound is hit).
    async fn settle<M>(layer: &MirrorLayer<M>) {
        for _ in 0..1000 {
            tokio::task::yield_now().await;
            if layer.stats().in_flight == 0 {
                return;
            }
        }
    }

    fn post(body: &'static str) -> Request<Full<Bytes>> {
        Request::post("/orders")
            .header(HOST, "shop.example:8080")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    #[tokio::test]
    async fn copy_has_the_body_and_a_shadow_host() {
        let (t, copies) = target(Target::Answer);
        let layer = MirrorLayer::new(config(MirrorFraction::ALL), t).unwrap();
        let res = layer
            .layer(primary())
            .oneshot(post("order-1"))
            .await
            .unwrap();
        assert_eq!(
            res.into_body().collect().await.unwrap().to_bytes(),
            "order-1"
        );
        settle(&layer).await;
        let copies = copies.lock().unwrap().clone();
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].method, Method::POST);
        assert_eq!(copies[0].uri, "/orders");
        assert_eq!(copies[0].host.as_ref().unwrap(), "shop.example-shadow:8080");
        assert_eq!(copies[0].body, "order-1");
        let stats = layer.stats();
        assert_eq!((stats.sampled, stats.completed, stats.in_flight), (1, 1, 0));
    }

    #[tokio::test]
    async fn streamed_body_is_copied_whole() {
        let (t, copies) = target(Target::Answer);
        let layer = MirrorLayer::new(config(MirrorFraction::ALL), t).unwrap();
        let frames = ["a", "bc", "def"]
            .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from_static(c.as_bytes()))));
        let body = UnsyncBoxBody::new(StreamBody::new(futures_util::stream::iter(frames)));
        let req = Request::put("http://api.example/x").body(body).unwrap();
        let res = layer.layer(primary()).oneshot(req).await.unwrap();
        assert_eq!(
            res.into_body().collect().await.unwrap().to_bytes(),
            "abcdef"
        );
        settle(&layer).await;
        let copies = copies.lock().unwrap().clone();
        assert_eq!(copies[0].body, "abcdef");
        // An absolute URI's authority is shadowed too.
        assert_eq!(copies[0].uri, "http://api.example-shadow/x");
    }

    #[tokio::test]
    async fn host_suffix_is_configurable() {
        for (suffix, want) in [
            (Some("-canary"), "shop.example-canary:8080"),
            (None, "shop.example:8080"),
        ] {
            let (t, copies) = target(Target::Answer);
            let cfg = MirrorConfig {
                host_suffix: suffix.map(str::to_owned),
                ..config(MirrorFraction::ALL)
            };
            let layer = MirrorLayer::new(cfg, t).unwrap();
            layer.layer(primary()).oneshot(post("")).await.unwrap();
            settle(&layer).await;
            assert_eq!(copies.lock().unwrap()[0].host.as_ref().unwrap(), want);
        }
    }

    #[test]
    fn suffix_goes_before_the_port() {
        assert_eq!(with_suffix("a.example", "-shadow"), "a.example-shadow");
        assert_eq!(
            with_suffix("a.example:80", "-shadow"),
            "a.example-shadow:80"
        );
        assert_eq!(with_suffix("10.0.0.1:80", "-s"), "10.0.0.1-s:80");
        assert_eq!(with_suffix("[::1]:443", "-s"), "[::1]-s:443");
        assert_eq!(with_suffix("[::1]", "-s"), "[::1]-s");
    }

    #[tokio::test]
    async fn fraction_is_respected() {
        for (fraction, n, low, high) in [
            (MirrorFraction::percent(25), 10_000u64, 2_350, 2_650),
            (
                MirrorFraction {
                    numerator: 1,
                    denominator: 1000,
                },
                20_000,
                8,
                35,
            ),
            (MirrorFraction::percent(0), 1_000, 0, 0),
            (MirrorFraction::percent(100), 1_000, 1_000, 1_000),
        ] {
            let (t, _copies) = target(Target::Answer);
            let layer = MirrorLayer::new(config(fraction), t).unwrap();
            let shared = &layer.shared;
            let chosen = (0..n).filter(|_| shared.sample()).count() as u64;
            assert!(
                (low..=high).contains(&chosen),
                "{fraction:?}: {chosen} of {n}"
            );
        }
    }

    #[tokio::test]
    async fn sampling_is_reproducible_with_a_seed() {
        let picks = |seed| {
            let (t, _copies) = target(Target::Answer);
            let cfg = MirrorConfig {
                seed: Some(seed),
                ..config(MirrorFraction::percent(50))
            };
            let layer = MirrorLayer::new(cfg, t).unwrap();
            (0..64).map(|_| layer.shared.sample()).collect::<Vec<_>>()
        };
        assert_eq!(picks(1), picks(1));
        assert_ne!(picks(1), picks(2));
    }

    #[tokio::test]
    async fn fraction_applies_to_requests() {
        let (t, copies) = target(Target::Answer);
        let layer = MirrorLayer::new(config(MirrorFraction::percent(10)), t).unwrap();
        let svc = layer.layer(primary());
        for _ in 0..1000 {
            svc.clone().oneshot(post("x")).await.unwrap();
        }
        settle(&layer).await;
        let stats = layer.stats();
        let mirrored = copies.lock().unwrap().len() as u64;
        assert_eq!(stats.sampled, mirrored);
        assert_eq!(stats.completed, mirrored);
        assert!((60..=140).contains(&mirrored), "{mirrored}");
    }

    #[tokio::test]
    async fn failing_mirror_does_not_affect_the_primary() {
        let (t, copies) = target(Target::Fail);
        let layer = MirrorLayer::new(config(MirrorFraction::ALL), t).unwrap();
        let res = layer.layer(primary()).oneshot(post("hi")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "hi");
        settle(&layer).await;
        assert_eq!(copies.lock().unwrap().len(), 1);
        assert_eq!(layer.stats().failed, 1);
    }

    #[tokio::test]
    async fn panicking_mirror_does_not_affect_the_primary() {
        let (t, _copies) = target(Target::Panic);
        let layer = MirrorLayer::new(config(MirrorFraction::ALL), t).unwrap();
        let res = layer.layer(primary()).oneshot(post("hi")).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "hi");
        settle(&layer).await;
        let stats = layer.stats();
        assert_eq!((stats.failed, stats.in_flight), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn hanging_mirror_does_not_hold_the_primary_and_times_out() {
        let (t, _copies) = target(Target::Hang);
        let layer = MirrorLayer::new(config(MirrorFraction::ALL), t).unwrap();
        let start = tokio::time::Instant::now();
        let res = layer.layer(primary()).oneshot(post("hi")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(start.elapsed(), Duration::ZERO);
        tokio::task::yield_now().await;
        assert_eq!(layer.stats().in_flight, 1);
        tokio::time::sleep(Duration::from_secs(16)).await;
        settle(&layer).await;
        let stats = layer.stats();
        assert_eq!((stats.timed_out, stats.in_flight), (1, 0));
    }

    #[tokio::test]
    async fn in_flight_copies_are_bounded() {
        let (t, copies) = target(Target::Hang);
        let cfg = MirrorConfig {
            max_in_flight: 2,
            timeout: None,
            ..config(MirrorFraction::ALL)
        };
        let layer = MirrorLayer::new(cfg, t).unwrap();
        let svc = layer.layer(primary());
        for _ in 0..5 {
            let res = svc.clone().oneshot(post("x")).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let stats = layer.stats();
        assert_eq!(stats.sampled, 5);
        assert_eq!(stats.in_flight, 2);
        assert_eq!(stats.dropped_in_flight, 3);
        assert_eq!(copies.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn large_body_is_not_mirrored() {
        let (t, copies) = target(Target::Answer);
        let cfg = MirrorConfig {
            max_body: 4,
            ..config(MirrorFraction::ALL)
        };
        let layer = MirrorLayer::new(cfg, t).unwrap();
        // Known too large from the size hint.
        let res = layer.layer(primary()).oneshot(post("12345")).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "12345");
        // Found too large while streaming.
        let frames = ["123", "45"]
            .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from_static(c.as_bytes()))));
        let body = UnsyncBoxBody::new(StreamBody::new(futures_util::stream::iter(frames)));
        let res = layer
            .layer(primary())
            .oneshot(Request::put("/").body(body).unwrap())
            .await
            .unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "12345");
        settle(&layer).await;
        assert!(copies.lock().unwrap().is_empty());
        let stats = layer.stats();
        assert_eq!((stats.sampled, stats.dropped_body_too_large), (2, 2));
        // At the limit it is mirrored.
        layer.layer(primary()).oneshot(post("1234")).await.unwrap();
        settle(&layer).await;
        assert_eq!(copies.lock().unwrap()[0].body, "1234");
    }

    #[tokio::test]
    async fn copy_is_sent_when_the_body_says_it_ended() {
        // Like hyper, this primary stops polling once `is_end_stream` is true, so it never
        // sees the body's `None`.
        let (t, copies) = target(Target::Answer);
        let layer = MirrorLayer::new(config(MirrorFraction::ALL), t).unwrap();
        let strict = service_fn(|req: Request<MirrorBody<Full<Bytes>>>| async move {
            let mut body = req.into_body();
            let frame = body.frame().await.unwrap().unwrap();
            assert!(body.is_end_stream());
            Ok::<_, Infallible>(Response::new(Full::new(frame.into_data().unwrap())))
        });
        layer.layer(strict).oneshot(post("once")).await.unwrap();
        settle(&layer).await;
        assert_eq!(copies.lock().unwrap()[0].body, "once");
    }

    #[tokio::test]
    async fn unread_body_abandons_the_copy() {
        let (t, copies) = target(Target::Answer);
        let layer = MirrorLayer::new(config(MirrorFraction::ALL), t).unwrap();
        // A primary that answers without reading the (streaming) body.
        let lazy = service_fn(
            |_req: Request<MirrorBody<UnsyncBoxBody<Bytes, Infallible>>>| async {
                Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
            },
        );
        let frames = ["never", "read"]
            .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from_static(c.as_bytes()))));
        let body = UnsyncBoxBody::new(StreamBody::new(futures_util::stream::iter(frames)));
        let res = layer
            .layer(lazy)
            .oneshot(Request::put("/").body(body).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        settle(&layer).await;
        assert!(copies.lock().unwrap().is_empty());
        assert_eq!(layer.stats().abandoned, 1);
    }

    #[tokio::test]
    async fn empty_body_is_mirrored_without_reading() {
        let (t, copies) = target(Target::Answer);
        let layer = MirrorLayer::new(config(MirrorFraction::ALL), t).unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let lazy = service_fn(move |_req: Request<MirrorBody<Empty<Bytes>>>| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Full::<Bytes>::default())) }
        });
        let req = Request::get("/ping").body(Empty::new()).unwrap();
        layer.layer(lazy).oneshot(req).await.unwrap();
        settle(&layer).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let copies = copies.lock().unwrap().clone();
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].method, Method::GET);
        assert!(copies[0].body.is_empty());
    }

    #[test]
    fn config_errors_name_the_field() {
        let (t, _) = target(Target::Answer);
        let cases = [
            (
                MirrorConfig {
                    fraction: MirrorFraction {
                        numerator: 3,
                        denominator: 2,
                    },
                    ..MirrorConfig::default()
                },
                "mirror.fraction",
            ),
            (
                MirrorConfig {
                    fraction: MirrorFraction {
                        numerator: 0,
                        denominator: 0,
                    },
                    ..MirrorConfig::default()
                },
                "mirror.fraction",
            ),
            (
                MirrorConfig {
                    max_in_flight: 0,
                    ..MirrorConfig::default()
                },
                "mirror.max_in_flight",
            ),
            (
                MirrorConfig {
                    host_suffix: Some("/evil".into()),
                    ..MirrorConfig::default()
                },
                "mirror.host_suffix",
            ),
            (
                MirrorConfig {
                    timeout: Some(Duration::ZERO),
                    ..MirrorConfig::default()
                },
                "mirror.timeout",
            ),
        ];
        for (cfg, field) in cases {
            let err = MirrorLayer::new(cfg, t.clone()).unwrap_err();
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
    }
}
