//! Retries, after Envoy's route retry policy (`retry_on`, `num_retries`, `per_try_timeout`,
//! `retry_back_off`, retry budgets) and the Gateway API's `HTTPRouteRetry` (GEP-1731:
//! `codes`, `attempts`, `backoff`), with linkerd's retry budget and replayable bodies.
//!
//! # Model
//!
//! The filter calls the inner service (the upstream call) and looks at what comes back
//! *before anything is sent to the client*: an error, a per-try timeout, or a response head.
//! A try is retried when all of these hold:
//!
//! 1. **A retry condition matches** (see [`RetryOn`]):
//!    - an error the user's [classifier](ClassifyError) names as [`RetryOn::ConnectFailure`],
//!      [`RetryOn::Reset`] or [`RetryOn::RefusedStream`] and that is enabled in
//!      [`RetryConfig::retry_on`]. The inner service's error type is generic, so the filter
//!      cannot know what a connect failure looks like; without a classifier no error is
//!      retried. [`classify_io_error`] recognizes the usual `std::io` and hyper cases;
//!    - the per-try timeout passing ([`RetryOn::PerTryTimeout`]);
//!    - a response status: any `5xx` ([`RetryOn::ServerError`], Envoy's `5xx`), `502`/`503`/
//!      `504` ([`RetryOn::GatewayError`], Envoy's `gateway-error`), or one of
//!      [`RetryConfig::retriable_status_codes`] (Gateway API `codes`, Envoy's
//!      `retriable-status-codes`);
//!    - a gRPC status in the response *headers* that is one of
//!      [`RetryConfig::retriable_grpc_codes`] (Envoy's `retry_on: unavailable,...`). Only
//!      trailers-only responses (a gRPC error before any message) carry `grpc-status` in the
//!      headers; a status in the trailers comes after the body started and is never retried.
//! 2. **Retries are left**: at most [`RetryConfig::max_retries`] retries after the first try
//!    (Envoy's `num_retries`, the Gateway API's `attempts`).
//! 3. **The method may be retried**: by default only the idempotent methods of RFC 9110
//!    §9.2.2 (GET, HEAD, OPTIONS, TRACE, PUT, DELETE); [`RetryConfig::methods`] may add others
//!    (POST for gRPC, say). Other requests are sent once.
//! 4. **The body can be replayed**: the request body is buffered as it is streamed to the
//!    first try, up to [`RetryConfig::max_buffered_body`] (64 KiB by default), into a
//!    [`ReplayBody`], the body type the inner service receives. A body larger than that (by
//!    its size hint, or once it grows past the limit) is streamed once and the request is
//!    never retried; so is one whose reading failed. See [`ReplayBody`].
//! 5. **A circuit breaker allows it**: the optional [retry permit](RetryLayer::with_retry_permit)
//!    hook returns a permit (see below).
//! 6. **The [budget](RetryBudget) allows it** (linkerd's `retryBudget`; on by default).
//!
//! If any fails, the last outcome is returned as it is: the last response (with its body
//! untouched), the last error, or for a per-try timeout a `504 Gateway Timeout` with an empty
//! body. A response that is not retried is returned at once, and its body streams to the
//! client; since the decision is made on the response head, nothing is ever retried after the
//! response body started streaming.
//!
//! Between tries the filter waits an exponential back-off with jitter: before the `n`-th retry
//! it sleeps a uniformly random time in `[base, min(max, base·2ⁿ)]`. Envoy's fully jittered
//! back-off draws from `[0, base·(2ⁿ−1)]`; here `base` is also a floor, because the Gateway
//! API defines `backoff` as the *minimum* wait between tries.
//!
//! Each try gets the per-try timeout (until its response head); the whole request, retries
//! included, is bounded by the [`timeout`](crate::timeout) layer outside this one.
//!
//! Every retried request carries `x-novaedge-retry-attempt: n` (the retry number, `1` for the
//! first retry; Envoy's `x-envoy-attempt-count` counts the first try as `1` instead). The
//! header name is configurable ([`RetryConfig::attempt_header`]) or can be turned off; a value
//! sent by the client is removed so the upstream can trust it.
//!
//! # Circuit breaker
//!
//! The engine's circuit breaker (Envoy's `max_retries` threshold: a cap on retries in flight
//! towards a cluster) plugs in through [`RetryLayer::with_retry_permit`]: a callback asked
//! before each retry. It returns `Some(permit)` to allow the retry, and the filter holds the
//! permit (any `Send` value, boxed) until that try's response head or error is in, then drops
//! it; `None` refuses the retry, and the last outcome is returned.
//!
//! # Requirements
//!
//! The inner service must be `Clone` (each request takes a clone, as tower's `Retry` does)
//! and `Send + 'static` with a `Send` future; the response future is boxed. The response body
//! needs `Default` (for the `504` of a per-try timeout): hyper's `Incoming` has none, so an
//! upstream client boxes it (`http_body_util::combinators::UnsyncBoxBody`), as
//! `tests/retry.rs` does.
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, atomic::{AtomicU32, Ordering}};
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use novaedge_filters::retry::{ReplayBody, RetryConfig, RetryLayer};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let mut config = RetryConfig::default();
//! config.max_retries = 2;
//! config.retriable_status_codes = vec![StatusCode::SERVICE_UNAVAILABLE];
//! let layer = RetryLayer::new(config).unwrap();
//!
//! // An upstream that is unavailable once, then echoes the request body.
//! let calls = Arc::new(AtomicU32::new(0));
//! let svc = layer.layer(service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
//!     let calls = calls.clone();
//!     async move {
//!         let body = req.into_body().collect().await?.to_bytes();
//!         let mut res = Response::new(Full::new(body));
//!         if calls.fetch_add(1, Ordering::SeqCst) == 0 {
//!             *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
//!         }
//!         Ok::<_, Box<dyn std::error::Error + Send + Sync>>(res)
//!     }
//! }));
//!
//! let req = Request::put("/item").body(Full::new(Bytes::from("payload"))).unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "payload");
//! # }
//! ```

mod budget;
mod replay;

use std::{
    any::Any,
    error::Error as StdError,
    fmt,
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use rand::Rng;
use tower::{Layer, Service, ServiceExt};

pub use budget::{RetryBudget, RetryBudgetConfig, RetryBudgetConfigError};
pub use replay::{BoxError, ReplayBody, ReplayError};

/// The default name of the header that numbers retried requests.
pub const ATTEMPT_HEADER: &str = "x-novaedge-retry-attempt";

/// The default limit on a buffered request body: 64 KiB.
pub const DEFAULT_MAX_BUFFERED_BODY: usize = 64 * 1024;

/// gRPC status codes (`grpc-status` values) that are commonly retried.
pub mod grpc {
    /// `CANCELLED`.
    pub const CANCELLED: u32 = 1;
    /// `DEADLINE_EXCEEDED`.
    pub const DEADLINE_EXCEEDED: u32 = 4;
    /// `RESOURCE_EXHAUSTED`.
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    /// `INTERNAL`.
    pub const INTERNAL: u32 = 13;
    /// `UNAVAILABLE`.
    pub const UNAVAILABLE: u32 = 14;
}

/// Marks a `504` that the [`Retry`] filter wrote itself when the last try ran out of its
/// per-try timeout, as a response extension, so that access logs can tell it from an
/// upstream's `504`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TryTimedOut;

/// A retry condition, after Envoy's `retry_on` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryOn {
    /// The connection to the upstream could not be made (refused, unreachable, connect
    /// timeout). Envoy's `connect-failure`. Classified from an error.
    ConnectFailure,
    /// The connection or stream was reset or closed before a response head. Envoy's `reset`.
    /// Classified from an error.
    Reset,
    /// The upstream refused the HTTP/2 stream (`REFUSED_STREAM`, or the request was above a
    /// `GOAWAY`), so it never processed it. Envoy's `refused-stream`. Classified from an
    /// error.
    RefusedStream,
    /// The per-try timeout passed before a response head.
    PerTryTimeout,
    /// Any `5xx` response. Envoy's `5xx` (which also implies the error conditions; here they
    /// are enabled separately).
    ServerError,
    /// A `502`, `503` or `504` response. Envoy's `gateway-error`.
    GatewayError,
}

/// Configuration of the [`RetryLayer`]. [`Default`] gives a working policy; see each field.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryConfig {
    /// Retries after the first try (Envoy's `num_retries`, Gateway API `attempts`). Default 1;
    /// 0 disables retries (bodies are then not buffered).
    pub max_retries: u32,
    /// The enabled conditions. Default: connect failure, reset, refused stream and per-try
    /// timeout, the connection errors the Gateway API asks to retry once a retry is
    /// configured.
    pub retry_on: Vec<RetryOn>,
    /// Response statuses to retry (Gateway API `codes`). Default none.
    pub retriable_status_codes: Vec<StatusCode>,
    /// gRPC statuses (`grpc-status` in the response headers) to retry; see [`grpc`]. Default
    /// none.
    pub retriable_grpc_codes: Vec<u32>,
    /// The timeout of each try, until its response head. Default none.
    pub per_try_timeout: Option<Duration>,
    /// The back-off floor and base (Gateway API `backoff`, Envoy's `base_interval`).
    /// Default 25 ms, Envoy's.
    pub backoff_base: Duration,
    /// The back-off ceiling (Envoy's `max_interval`). Default 250 ms (ten times the base, as
    /// Envoy).
    pub backoff_max: Duration,
    /// The retry budget; `None` turns it off. Default [`RetryBudgetConfig::default`].
    pub budget: Option<RetryBudgetConfig>,
    /// Methods that may be retried. Default: GET, HEAD, OPTIONS, TRACE, PUT, DELETE.
    pub methods: Vec<Method>,
    /// The largest request body buffered for replay, in bytes. Default 64 KiB.
    pub max_buffered_body: usize,
    /// The header that numbers retried requests; `None` sends none. Default
    /// `x-novaedge-retry-attempt`.
    pub attempt_header: Option<HeaderName>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 1,
            retry_on: vec![
                RetryOn::ConnectFailure,
                RetryOn::Reset,
                RetryOn::RefusedStream,
                RetryOn::PerTryTimeout,
            ],
            retriable_status_codes: Vec::new(),
            retriable_grpc_codes: Vec::new(),
            per_try_timeout: None,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            budget: Some(RetryBudgetConfig::default()),
            methods: vec![
                Method::GET,
                Method::HEAD,
                Method::OPTIONS,
                Method::TRACE,
                Method::PUT,
                Method::DELETE,
            ],
            max_buffered_body: DEFAULT_MAX_BUFFERED_BODY,
            attempt_header: Some(HeaderName::from_static(ATTEMPT_HEADER)),
        }
    }
}

/// An error in a [`RetryConfig`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RetryConfigError {
    /// `backoff_max` is below `backoff_base`.
    #[error("retry.backoff_max: {max:?} is below retry.backoff_base {base:?}")]
    Backoff {
        /// The base.
        base: Duration,
        /// The ceiling.
        max: Duration,
    },
    /// `per_try_timeout` is zero.
    #[error("retry.per_try_timeout: must be above zero (leave it unset for none)")]
    PerTryTimeout,
    /// A `retriable_grpc_codes` entry is not a gRPC status code.
    #[error("retry.retriable_grpc_codes: {0} is not a gRPC status code (0 to 16)")]
    GrpcCode(u32),
    /// A `retriable_status_codes` entry is not an error status.
    #[error("retry.retriable_status_codes: {0} is not a 4xx or 5xx status")]
    StatusCode(StatusCode),
    /// The budget is invalid.
    #[error(transparent)]
    Budget(#[from] RetryBudgetConfigError),
}

/// Names the retry condition an inner service error matches, if any.
///
/// Closures `Fn(&E) -> Option<RetryOn>` implement it. A classifier should only name
/// [`RetryOn::ConnectFailure`], [`RetryOn::Reset`] or [`RetryOn::RefusedStream`] for errors
/// that happened before the upstream could have acted on the request, or where acting twice
/// is safe (the method filter already limits retries to idempotent requests).
pub trait ClassifyError<E> {
    /// The condition `error` matches, or `None` to never retry it.
    fn classify(&self, error: &E) -> Option<RetryOn>;
}

impl<E, F> ClassifyError<E> for F
where
    F: Fn(&E) -> Option<RetryOn>,
{
    fn classify(&self, error: &E) -> Option<RetryOn> {
        self(error)
    }
}

/// The default classifier: no error is retried.
#[derive(Clone, Copy, Debug, Default)]
pub struct NeverRetryErrors;

impl<E> ClassifyError<E> for NeverRetryErrors {
    fn classify(&self, _: &E) -> Option<RetryOn> {
        None
    }
}

/// Classifies an error by walking its source chain: a `std::io::Error` of kind
/// `ConnectionRefused`, `HostUnreachable` or `NetworkUnreachable` is a
/// [`RetryOn::ConnectFailure`]; `ConnectionReset`, `ConnectionAborted`, `BrokenPipe` or
/// `UnexpectedEof` a [`RetryOn::Reset`]; a `hyper::Error` that is an incomplete message (the
/// connection closed before the response) or a canceled request (the connection went away
/// before the request was written) a [`RetryOn::Reset`].
///
/// HTTP/2 `REFUSED_STREAM` needs the `h2` error, which this crate does not see: the engine's
/// classifier should name [`RetryOn::RefusedStream`] itself.
///
/// For a boxed error: `RetryLayer::new(config)?.with_classifier(|e: &BoxError|
/// classify_io_error(&**e))`.
pub fn classify_io_error(error: &(dyn StdError + 'static)) -> Option<RetryOn> {
    let mut next = Some(error);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable => return Some(RetryOn::ConnectFailure),
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => return Some(RetryOn::Reset),
                _ => {}
            }
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled())
        {
            return Some(RetryOn::Reset);
        }
        next = err.source();
    }
    None
}

/// A permit from the circuit breaker for one retry, held until that try is done.
pub type RetryPermit = Box<dyn Any + Send>;

type PermitFn = Arc<dyn Fn() -> Option<RetryPermit> + Send + Sync>;

/// The checked policy.
#[derive(Debug)]
struct Policy {
    max_retries: u32,
    retry_on: Vec<RetryOn>,
    status_codes: Vec<StatusCode>,
    grpc_codes: Vec<u32>,
    per_try_timeout: Option<Duration>,
    backoff_base: Duration,
    backoff_max: Duration,
    methods: Vec<Method>,
    max_buffered_body: usize,
    attempt_header: Option<HeaderName>,
}

impl Policy {
    fn enabled(&self, on: RetryOn) -> bool {
        self.retry_on.contains(&on)
    }

    /// The reason to retry a response, if any (for logs).
    fn classify_response<B>(&self, res: &Response<B>) -> Option<&'static str> {
        let status = res.status();
        if self.status_codes.contains(&status) {
            return Some("status code");
        }
        if status.is_server_error() && self.enabled(RetryOn::ServerError) {
            return Some("5xx");
        }
        if matches!(status.as_u16(), 502..=504) && self.enabled(RetryOn::GatewayError) {
            return Some("gateway error");
        }
        if !self.grpc_codes.is_empty()
            && let Some(code) = res.headers().get("grpc-status")
            && let Some(code) = code
                .to_str()
                .ok()
                .and_then(|c| c.trim().parse::<u32>().ok())
            && self.grpc_codes.contains(&code)
        {
            return Some("grpc status");
        }
        None
    }

    /// The wait before the `n`-th retry (1-based).
    fn backoff(&self, n: u32) -> Duration {
        let base = self.backoff_base;
        let ceiling = base
            .checked_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
            .unwrap_or(Duration::MAX)
            .min(self.backoff_max);
        if ceiling <= base {
            return base;
        }
        let nanos = rand::rng().random_range(base.as_nanos()..=ceiling.as_nanos());
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

// === impl RetryLayer ===

/// A [`Layer`] that retries failed tries. See the [module docs](self).
#[derive(Clone)]
pub struct RetryLayer<C = NeverRetryErrors> {
    policy: Arc<Policy>,
    budget: Option<Arc<RetryBudget>>,
    classifier: C,
    permit: Option<PermitFn>,
}

impl RetryLayer {
    /// Builds the layer, checking the configuration. No error is retried until a classifier
    /// is set with [`with_classifier`](Self::with_classifier).
    pub fn new(config: RetryConfig) -> Result<Self, RetryConfigError> {
        if config.backoff_max < config.backoff_base {
            return Err(RetryConfigError::Backoff {
                base: config.backoff_base,
                max: config.backoff_max,
            });
        }
        if config.per_try_timeout == Some(Duration::ZERO) {
            return Err(RetryConfigError::PerTryTimeout);
        }
        if let Some(&code) = config.retriable_grpc_codes.iter().find(|&&c| c > 16) {
            return Err(RetryConfigError::GrpcCode(code));
        }
        if let Some(&code) = config
            .retriable_status_codes
            .iter()
            .find(|c| !(c.is_client_error() || c.is_server_error()))
        {
            return Err(RetryConfigError::StatusCode(code));
        }
        let budget = match &config.budget {
            Some(b) => Some(Arc::new(RetryBudget::new(b)?)),
            None => None,
        };
        Ok(Self {
            policy: Arc::new(Policy {
                max_retries: config.max_retries,
                retry_on: config.retry_on,
                status_codes: config.retriable_status_codes,
                grpc_codes: config.retriable_grpc_codes,
                per_try_timeout: config.per_try_timeout,
                backoff_base: config.backoff_base,
                backoff_max: config.backoff_max,
                methods: config.methods,
                max_buffered_body: config.max_buffered_body,
                attempt_header: config.attempt_header,
            }),
            budget,
            classifier: NeverRetryErrors,
            permit: None,
        })
    }
}

impl<C> RetryLayer<C> {
    /// Sets the classifier of inner service errors (a closure `Fn(&E) -> Option<RetryOn>` or
    /// a [`ClassifyError`]).
    pub fn with_classifier<C2>(self, classifier: C2) -> RetryLayer<C2> {
        RetryLayer {
            policy: self.policy,
            budget: self.budget,
            classifier,
            permit: self.permit,
        }
    }

    /// Sets the circuit breaker hook, asked before each retry: `Some(permit)` allows the retry
    /// and is held until that try's response head or error; `None` refuses it.
    pub fn with_retry_permit<F>(mut self, permit: F) -> Self
    where
        F: Fn() -> Option<RetryPermit> + Send + Sync + 'static,
    {
        self.permit = Some(Arc::new(permit));
        self
    }

    /// Uses the given budget (for example one shared by several routes) instead of the one
    /// built from [`RetryConfig::budget`]; `None` turns the budget off.
    pub fn with_budget(mut self, budget: Option<Arc<RetryBudget>>) -> Self {
        self.budget = budget;
        self
    }

    /// The budget in use.
    pub fn budget(&self) -> Option<&Arc<RetryBudget>> {
        self.budget.as_ref()
    }
}

impl<C> fmt::Debug for RetryLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", &self.policy)
            .field("budget", &self.budget)
            .field("permit", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            shared: Arc::new(Shared {
                policy: self.policy.clone(),
                budget: self.budget.clone(),
                classifier: self.classifier.clone(),
                permit: self.permit.clone(),
            }),
        }
    }
}

// === impl Retry ===

struct Shared<C> {
    policy: Arc<Policy>,
    budget: Option<Arc<RetryBudget>>,
    classifier: C,
    permit: Option<PermitFn>,
}

/// The service built by [`RetryLayer`].
pub struct Retry<S, C = NeverRetryErrors> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S: Clone, C> Clone for Retry<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Retry<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

/// The future of [`Retry`].
pub type ResponseFuture<ResB, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResB>, E>> + Send + 'static>>;

impl<S, C, ReqB, ResB> Service<Request<ReqB>> for Retry<S, C>
where
    S: Service<Request<ReplayBody<ReqB>>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    C: ClassifyError<S::Error> + Send + Sync + 'static,
    ReqB: Body + Send + 'static,
    ResB: Default + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // The service that was polled ready serves the first try; `self` keeps a fresh clone.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(run(inner, self.shared.clone(), req))
    }
}

/// What one try came back with.
enum Outcome<ResB, E> {
    Response(Response<ResB>),
    Error(E),
    TimedOut,
}

async fn try_once<S, ReqB, ResB>(
    svc: &mut S,
    req: Request<ReplayBody<ReqB>>,
    per_try_timeout: Option<Duration>,
) -> Outcome<ResB, S::Error>
where
    S: Service<Request<ReplayBody<ReqB>>, Response = Response<ResB>>,
{
    let call = svc.call(req);
    let res = match per_try_timeout {
        Some(t) => match tokio::time::timeout(t, call).await {
            Ok(res) => res,
            Err(_) => return Outcome::TimedOut,
        },
        None => call.await,
    };
    match res {
        Ok(res) => Outcome::Response(res),
        Err(e) => Outcome::Error(e),
    }
}

fn finish<ResB: Default, E>(outcome: Outcome<ResB, E>) -> Result<Response<ResB>, E> {
    match outcome {
        Outcome::Response(res) => Ok(res),
        Outcome::Error(e) => Err(e),
        Outcome::TimedOut => {
            let mut res = Response::new(ResB::default());
            *res.status_mut() = StatusCode::GATEWAY_TIMEOUT;
            res.extensions_mut().insert(TryTimedOut);
            Ok(res)
        }
    }
}

async fn run<S, C, ReqB, ResB>(
    mut svc: S,
    shared: Arc<Shared<C>>,
    req: Request<ReqB>,
) -> Result<Response<ResB>, S::Error>
where
    S: Service<Request<ReplayBody<ReqB>>, Response = Response<ResB>>,
    C: ClassifyError<S::Error>,
    ReqB: Body,
    ResB: Default,
{
    let policy = &*shared.policy;
    if let Some(budget) = &shared.budget {
        budget.deposit();
    }
    let (mut parts, body) = req.into_parts();
    if let Some(name) = &policy.attempt_header {
        parts.headers.remove(name);
    }

    let retriable = policy.max_retries > 0 && policy.methods.contains(&parts.method);
    let (body, handle) = if retriable {
        ReplayBody::replayable(body, policy.max_buffered_body)
    } else {
        (ReplayBody::once(body), None)
    };
    let Some(handle) = handle else {
        let req = Request::from_parts(parts, body);
        return finish(try_once(&mut svc, req, policy.per_try_timeout).await);
    };

    let template = parts.clone();
    let mut outcome = try_once(
        &mut svc,
        Request::from_parts(parts, body),
        policy.per_try_timeout,
    )
    .await;
    let mut retries = 0;
    loop {
        let reason = match &outcome {
            Outcome::Response(res) => policy.classify_response(res),
            Outcome::Error(e) => shared
                .classifier
                .classify(e)
                .filter(|&on| policy.enabled(on))
                .map(|_| "error"),
            Outcome::TimedOut => policy
                .enabled(RetryOn::PerTryTimeout)
                .then_some("per-try timeout"),
        };
        let Some(reason) = reason else { break };
        if retries >= policy.max_retries {
            tracing::debug!(retries, reason, "retries exhausted");
            break;
        }
        if !handle.is_replayable() {
            tracing::debug!(reason, "request body cannot be replayed, not retrying");
            break;
        }
        let permit = match &shared.permit {
            Some(permit) => match permit() {
                Some(p) => Some(p),
                None => {
                    tracing::debug!(reason, "retry refused by the circuit breaker");
                    break;
                }
            },
            None => None,
        };
        if let Some(budget) = &shared.budget
            && !budget.withdraw()
        {
            tracing::debug!(reason, "retry budget exhausted");
            break;
        }
        retries += 1;
        // Let go of the failed try (its connection, its body) before waiting.
        drop(outcome);
        let wait = policy.backoff(retries);
        tracing::debug!(retry = retries, reason, ?wait, "retrying request");
        tokio::time::sleep(wait).await;

        let mut req = Request::from_parts(template.clone(), handle.reader());
        if let Some(name) = &policy.attempt_header {
            req.headers_mut()
                .insert(name.clone(), HeaderValue::from(retries));
        }
        let svc = svc.ready().await?;
        outcome = try_once(svc, req, policy.per_try_timeout).await;
        drop(permit);
    }
    finish(outcome)
}

#[cfg(test)]
mod tests;
