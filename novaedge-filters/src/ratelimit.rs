//! Per-key rate limiting: a GCRA bucket per client IP, header value, [`RateLimitKey`], or one
//! for the whole route; requests over the limit get `429 Too Many Requests`.
//!
//! Peers: Envoy's local rate limit filter (a token bucket per route, `429` with
//! `x-ratelimit-*` headers) and nginx `limit_req` (per-key leaky bucket with a burst).
//!
//! # Model
//!
//! The limiter is [governor]'s GCRA (generic cell rate algorithm, the ATM traffic-shaping
//! algorithm, equivalent to a token bucket): a key may send `burst` requests at once, then one
//! every `period / requests`. Each key's whole state is one timestamp, its theoretical arrival
//! time (TAT); a request is allowed when the TAT is at most `(burst - 1)` intervals ahead of
//! now, and then pushes the TAT one interval further. Over any time `T` a key gets at most
//! `burst + T × requests / period` requests through.
//!
//! The key comes from a [`KeySource`]: the client IP (from the [`ClientAddr`] extension, IPv6
//! addresses grouped by `/64` by default), a request header, a [`RateLimitKey`] extension that
//! an earlier filter sets (to key on a JWT claim, the JWT filter inserts the verified claim's
//! value as a `RateLimitKey`; this module knows nothing of tokens), or nothing ([`KeySource::Global`]: one lock-free bucket for the route). A request without its
//! key goes to one shared bucket or is not limited, as [`MissingKey`] says.
//!
//! # Responses
//!
//! A refused request is answered here, without calling the inner service: `429` with an empty
//! body, `Retry-After` (delta-seconds, rounded up, at least 1) and the `RateLimit-*` fields.
//! The fields follow [draft-ietf-httpapi-ratelimit-headers-06] (December 2022), the last draft
//! with separate fields; from -07 on they are combined into structured `RateLimit` /
//! `RateLimit-Policy` fields. The separate form was chosen because each field is a plain
//! integer that any client can read without a structured-field parser:
//!
//! | field | value |
//! |---|---|
//! | `RateLimit-Limit` | `burst`: the most requests a client can send at once |
//! | `RateLimit-Remaining` | requests the client could send right now |
//! | `RateLimit-Reset` | seconds, rounded up, until the bucket is full again (`Remaining` = `Limit`) |
//!
//! `RateLimit-Policy` is left out: a GCRA has no fixed window to describe. Allowed responses
//! carry the same three fields unless [`RateLimitConfig::response_headers`] is off, and unless
//! the upstream already set `RateLimit-Limit` (its own limits are then left as they are). On
//! allowed responses `RateLimit-Reset` is an upper bound, exact to one request interval,
//! because governor reports the remaining burst but not the TAT.
//!
//! # Memory
//!
//! The per-key state lives in a store capped at [`RateLimitConfig::max_keys`] keys (default
//! [`DEFAULT_MAX_KEYS`], 100,000), however many distinct keys clients send. It is sharded, with
//! one short mutex hold per request on one shard and no global lock. When a shard is full, a
//! new key replaces first a key whose bucket is full again (which is exactly like forgetting a
//! key that was never seen: nothing is lost), and otherwise the least recently used key.
//!
//! The trade-off: a key evicted while its bucket is not full comes back with a full burst, so
//! each such eviction can let that client send up to `burst` more requests than its limit.
//! That needs more than `max_keys` keys all active within their refill time (`burst` ×
//! `period / requests`): a client who controls that many keys (addresses, `/64`s, verified
//! identities) can exceed its per-key limit. Per-key limits cannot stop such a client anyway;
//! put a [`KeySource::Global`] limit beside the per-key one for that. Header keys that a client
//! can choose freely give no per-client bound at all, capped store or not; prefer verified
//! identities ([`RateLimitKey`] from the JWT filter).
//!
//! A stored key takes about 80 bytes of tables (the key is 24 bytes whatever its length, since
//! text keys are stored as a 128-bit keyed hash), and about 140 bytes of peak resident memory
//! once allocator slack and table growth are counted: `examples/ratelimit_memory.rs` pushes a
//! million distinct keys through the default cap and sees the peak RSS grow by 14 MB, then
//! stay there. So the default cap costs at most about 14 MB per route, reached only when that
//! many clients are active; the store does not give memory back when traffic falls.
//! [`RateLimitLayer::stats`] counts keys dropped each way.
//!
//! # Sharing
//!
//! One [`RateLimitLayer`] is one limiter: every service it builds, and every clone of them,
//! shares its buckets. Build one layer per route.
//!
//! # Time
//!
//! The limiter reads tokio's clock, so `tokio::time::pause` and `advance` drive it in tests.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use http::{HeaderName, Request, Response, StatusCode};
//! use novaedge_filters::ratelimit::{KeySource, RateLimitConfig, RateLimitLayer};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Ten requests a second per API key, at most two at once.
//! let layer = RateLimitLayer::new(
//!     RateLimitConfig::new(10, Duration::from_secs(1))
//!         .with_burst(2)
//!         .with_key(KeySource::header(HeaderName::from_static("x-api-key"))),
//! )?;
//! let svc = layer.layer(service_fn(|_req: Request<()>| async {
//!     Ok::<_, Infallible>(Response::new(String::new()))
//! }));
//! let req = || Request::builder().header("x-api-key", "k1").body(()).unwrap();
//!
//! let ok = svc.clone().oneshot(req()).await?;
//! assert_eq!(ok.status(), StatusCode::OK);
//! assert_eq!(ok.headers()["ratelimit-remaining"], "1");
//! assert_eq!(svc.clone().oneshot(req()).await?.status(), StatusCode::OK);
//!
//! let limited = svc.clone().oneshot(req()).await?;
//! assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(limited.headers()["retry-after"], "1");
//! assert_eq!(limited.headers()["ratelimit-remaining"], "0");
//!
//! tokio::time::advance(Duration::from_millis(100)).await;
//! assert_eq!(svc.oneshot(req()).await?.status(), StatusCode::OK);
//! # Ok(())
//! # }
//! ```
//!
//! [governor]: https://docs.rs/governor/0.10
//! [draft-ietf-httpapi-ratelimit-headers-06]: https://datatracker.ietf.org/doc/html/draft-ietf-httpapi-ratelimit-headers-06
//! [`ClientAddr`]: crate::ClientAddr

use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota};
use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

mod clock;
mod key;
mod store;

pub use key::{KeySource, MissingKey, RateLimitKey};

use clock::TokioClock;
use key::{Key, KeyExtractor};
use store::{BoundedStore, SharedStore};

/// The default [`RateLimitConfig::max_keys`]: 100,000 keys, at most about 14 MB of memory.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// The longest a bucket may take to refill (`burst × period / requests`): 100 years, which
/// keeps every GCRA timestamp well inside governor's 64-bit nanoseconds.
const MAX_REFILL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// How many small integers [`int_value`] serves from [`DIGITS`].
const SMALL_INTS: usize = 1000;

/// The decimal digits of 0..1000, each in a 3-byte slot.
static DIGITS: [u8; SMALL_INTS * 3] = {
    let mut table = [0u8; SMALL_INTS * 3];
    let mut n = 0;
    while n < SMALL_INTS {
        let digits = [(n / 100) as u8, (n / 10 % 10) as u8, (n % 10) as u8];
        let skip = if n >= 100 {
            0
        } else if n >= 10 {
            1
        } else {
            2
        };
        let mut d = skip;
        while d < 3 {
            table[n * 3 + d - skip] = b'0' + digits[d];
            d += 1;
        }
        n += 1;
    }
    table
};

/// `n` as a header value. Below 1000, which covers nearly every value these fields take, the
/// value points into a static table: no allocation and no reference count on the hot path
/// (`HeaderValue::from(u64)` allocates).
fn int_value(n: u64) -> HeaderValue {
    if n < SMALL_INTS as u64 {
        let start = n as usize * 3;
        let len = if n >= 100 {
            3
        } else if n >= 10 {
            2
        } else {
            1
        };
        let digits = Bytes::from_static(&DIGITS[start..start + len]);
        if let Ok(value) = HeaderValue::from_maybe_shared(digits) {
            return value;
        }
    }
    HeaderValue::from(n)
}

// === Config ===

/// A route's rate limit: `requests` per `period` per key, in bursts of up to `burst`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Requests a key may send per `period`, sustained; at least 1.
    pub requests: u32,
    /// The period `requests` are counted over; longer than zero.
    pub period: Duration,
    /// The most requests a key may send at once (the bucket size); at least 1.
    /// [`RateLimitConfig::new`] sets it to `requests`.
    pub burst: u32,
    /// Where a request's key comes from.
    pub key: KeySource,
    /// What happens to requests without a key.
    pub missing_key: MissingKey,
    /// The most keys whose state is kept; at least 1. See the module documentation.
    pub max_keys: usize,
    /// Whether allowed responses carry the `RateLimit-*` fields too (refusals always do).
    pub response_headers: bool,
}

impl RateLimitConfig {
    /// `requests` per `period` per client IP, with a burst of `requests`, the default key
    /// limits and `RateLimit-*` fields on every response.
    pub fn new(requests: u32, period: Duration) -> Self {
        RateLimitConfig {
            requests,
            period,
            burst: requests,
            key: KeySource::default(),
            missing_key: MissingKey::default(),
            max_keys: DEFAULT_MAX_KEYS,
            response_headers: true,
        }
    }

    /// Sets [`burst`](Self::burst).
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// Sets [`key`](Self::key).
    pub fn with_key(mut self, key: KeySource) -> Self {
        self.key = key;
        self
    }

    /// Sets [`missing_key`](Self::missing_key).
    pub fn with_missing_key(mut self, missing_key: MissingKey) -> Self {
        self.missing_key = missing_key;
        self
    }

    /// Sets [`max_keys`](Self::max_keys).
    pub fn with_max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Sets [`response_headers`](Self::response_headers).
    pub fn with_response_headers(mut self, response_headers: bool) -> Self {
        self.response_headers = response_headers;
        self
    }

    /// The governor quota, or what is wrong with the config.
    fn quota(&self) -> Result<Quota, RateLimitConfigError> {
        let requests = NonZeroU32::new(self.requests).ok_or(RateLimitConfigError::ZeroRequests)?;
        if self.period.is_zero() {
            return Err(RateLimitConfigError::ZeroPeriod);
        }
        let burst = NonZeroU32::new(self.burst).ok_or(RateLimitConfigError::ZeroBurst)?;
        let interval = self.period / requests.get();
        let too_fast = RateLimitConfigError::TooFast {
            requests: self.requests,
            period: self.period,
        };
        if interval.is_zero() {
            return Err(too_fast);
        }
        if interval
            .checked_mul(burst.get())
            .is_none_or(|refill| refill > MAX_REFILL)
        {
            return Err(RateLimitConfigError::TooSlow {
                burst: self.burst,
                interval,
            });
        }
        if self.max_keys == 0 {
            return Err(RateLimitConfigError::ZeroMaxKeys);
        }
        if self.max_keys > store::MAX_CAPACITY {
            return Err(RateLimitConfigError::TooManyKeys(self.max_keys));
        }
        if let KeySource::ClientIp {
            ipv4_prefix,
            ipv6_prefix,
        } = self.key
        {
            if ipv4_prefix > 32 {
                return Err(RateLimitConfigError::Ipv4Prefix(ipv4_prefix));
            }
            if ipv6_prefix > 128 {
                return Err(RateLimitConfigError::Ipv6Prefix(ipv6_prefix));
            }
        }
        Ok(Quota::with_period(interval)
            .ok_or(too_fast)?
            .allow_burst(burst))
    }
}

/// What is wrong with a [`RateLimitConfig`]; each message names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitConfigError {
    /// `requests` is 0.
    #[error("requests: must be at least 1")]
    ZeroRequests,
    /// `period` is zero.
    #[error("period: must be longer than zero")]
    ZeroPeriod,
    /// `burst` is 0.
    #[error("burst: must be at least 1")]
    ZeroBurst,
    /// `requests` per `period` is more than one request per nanosecond.
    #[error("requests: {requests} per {period:?} is more than one request per nanosecond")]
    TooFast {
        /// The configured `requests`.
        requests: u32,
        /// The configured `period`.
        period: Duration,
    },
    /// A full bucket would take more than 100 years to refill.
    #[error("burst: {burst} requests at one per {interval:?} take more than 100 years to refill")]
    TooSlow {
        /// The configured `burst`.
        burst: u32,
        /// `period / requests`.
        interval: Duration,
    },
    /// `max_keys` is 0.
    #[error("max_keys: must be at least 1")]
    ZeroMaxKeys,
    /// `max_keys` is more than the store can address.
    #[error("max_keys: {0} is more than {max}", max = store::MAX_CAPACITY)]
    TooManyKeys(usize),
    /// `key.ipv4_prefix` is longer than 32 bits.
    #[error("key.ipv4_prefix: {0} is longer than 32")]
    Ipv4Prefix(u8),
    /// `key.ipv6_prefix` is longer than 128 bits.
    #[error("key.ipv6_prefix: {0} is longer than 128")]
    Ipv6Prefix(u8),
}

/// Marks a `429` that the [`RateLimit`] filter wrote itself, as a response extension, so that
/// access logs and metrics can tell it from an upstream's `429`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimited;

/// Counts from a limiter's key store, for metrics and tests. A [`KeySource::Global`] limiter
/// keeps no per-key state and reports zeros.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitStats {
    /// Keys whose state is stored now.
    pub keys: usize,
    /// The most keys that can be stored ([`RateLimitConfig::max_keys`]).
    pub max_keys: usize,
    /// Keys dropped to make room because their bucket was full again: nothing lost.
    pub expired: u64,
    /// Keys dropped to make room while their bucket was not full: each may get a fresh burst.
    pub evicted: u64,
}

// === impl RateLimitLayer ===

/// A [`Layer`] that rate-limits requests; one per route (see [Sharing](self#sharing)).
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

impl RateLimitLayer {
    /// A limiter for `config`, or what is wrong with it.
    pub fn new(config: RateLimitConfig) -> Result<Self, RateLimitConfigError> {
        let quota = config.quota()?;
        let clock = TokioClock::new();
        let limiter = match config.key {
            KeySource::Global => {
                Limiter::Global(GlobalLimiter::new(quota, InMemoryState::default(), clock))
            }
            _ => {
                let store = Arc::new(BoundedStore::new(config.max_keys, clock));
                let limiter = KeyedLimiter::new(quota, SharedStore(Arc::clone(&store)), clock);
                // Read after governor took its start instant, so never earlier than it.
                store.set_origin(clock.now());
                Limiter::Keyed { limiter, store }
            }
        };
        Ok(RateLimitLayer {
            shared: Arc::new(Shared {
                limiter,
                extractor: KeyExtractor::new(config.key),
                missing_key: config.missing_key,
                response_headers: config.response_headers,
                burst: quota.burst_size().get(),
                interval: quota.replenish_interval(),
                clock,
            }),
        })
    }

    /// Counts from the key store.
    pub fn stats(&self) -> RateLimitStats {
        self.shared.stats()
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

// === impl RateLimit ===

/// The rate-limiting service made by [`RateLimitLayer`]; clones share its limiter.
///
/// `poll_ready` is the inner service's: a request refused here never reaches the inner service,
/// though its readiness was already awaited.
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> RateLimit<S> {
    /// Counts from the key store.
    pub fn stats(&self) -> RateLimitStats {
        self.shared.stats()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for RateLimit<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Default,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let state = match self.shared.check(&req) {
            Verdict::Unlimited => State::Inner {
                future: self.inner.call(req),
                status: None,
            },
            Verdict::Allowed(status) => State::Inner {
                future: self.inner.call(req),
                status: self.shared.response_headers.then_some(status),
            },
            Verdict::Limited(status) => State::Limited {
                response: Some(status.too_many_requests()),
            },
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// The response future of [`RateLimit`]: the inner service's response with the
    /// `RateLimit-*` fields added, or a `429`.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Inner {
            #[pin]
            future: F,
            status: Option<Status>,
        },
        Limited {
            response: Option<Response<B>>,
        },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    #[allow(
        clippy::expect_used,
        reason = "Future's contract: a future polled after it completed may panic"
    )]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future, status } => {
                let mut response = ready!(future.poll(cx))?;
                if let Some(status) = status.take() {
                    // The upstream's own limits, if it sends them, are left as they are.
                    if !response.headers().contains_key(RATELIMIT_LIMIT) {
                        status.write(response.headers_mut());
                    }
                }
                Poll::Ready(Ok(response))
            }
            StateProj::Limited { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

// === impl Shared ===

type KeyedLimiter =
    governor::RateLimiter<Key, SharedStore<Key>, TokioClock, StateInformationMiddleware>;
type GlobalLimiter =
    governor::RateLimiter<NotKeyed, InMemoryState, TokioClock, StateInformationMiddleware>;

enum Limiter {
    Keyed {
        limiter: KeyedLimiter,
        store: Arc<BoundedStore<Key>>,
    },
    /// One atomic TAT, no lock at all.
    Global(GlobalLimiter),
}

struct Shared {
    limiter: Limiter,
    extractor: KeyExtractor,
    missing_key: MissingKey,
    response_headers: bool,
    burst: u32,
    /// `period / requests`: the time one request's worth of bucket takes to refill.
    interval: Duration,
    clock: TokioClock,
}

enum Verdict {
    /// No key and [`MissingKey::NoLimit`].
    Unlimited,
    Allowed(Status),
    Limited(Status),
}

/// What a response says about the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Status {
    limit: u32,
    remaining: u32,
    /// Until the bucket is full again.
    reset: Duration,
    /// Until the next request can pass; set on refusals.
    retry_after: Option<Duration>,
}

impl Shared {
    fn check<B>(&self, req: &Request<B>) -> Verdict {
        let outcome = match &self.limiter {
            Limiter::Global(limiter) => limiter.check(),
            Limiter::Keyed { limiter, .. } => {
                let key = match (self.extractor.extract(req), self.missing_key) {
                    (Some(key), _) => key,
                    (None, MissingKey::SharedBucket) => Key::Missing,
                    (None, MissingKey::NoLimit) => return Verdict::Unlimited,
                };
                let outcome = limiter.check_key(&key);
                if outcome.is_err() {
                    tracing::debug!(?key, "rate limited");
                }
                outcome
            }
        };
        match outcome {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity().min(self.burst);
                Verdict::Allowed(Status {
                    limit: self.burst,
                    remaining,
                    // The TAT is at most this far ahead: (burst - remaining) intervals.
                    reset: self.interval * (self.burst - remaining),
                    retry_after: None,
                })
            }
            Err(not_until) => Verdict::Limited(self.refusal(&not_until)),
        }
    }

    fn refusal(&self, not_until: &NotUntil<governor::nanos::Nanos>) -> Status {
        let wait = not_until.wait_time_from(self.clock.now());
        Status {
            limit: self.burst,
            remaining: 0,
            // The next request is `wait` away, and the whole burst `burst - 1` intervals more.
            reset: wait + self.interval * (self.burst - 1),
            retry_after: Some(wait),
        }
    }

    fn stats(&self) -> RateLimitStats {
        match &self.limiter {
            Limiter::Global(_) => RateLimitStats::default(),
            Limiter::Keyed { store, .. } => {
                let stats = store.stats();
                RateLimitStats {
                    keys: stats.keys,
                    max_keys: stats.capacity,
                    expired: stats.expired,
                    evicted: stats.evicted,
                }
            }
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let store = match &self.limiter {
            Limiter::Global(_) => None,
            Limiter::Keyed { store, .. } => Some(store),
        };
        f.debug_struct("Shared")
            .field("extractor", &self.extractor)
            .field("missing_key", &self.missing_key)
            .field("burst", &self.burst)
            .field("interval", &self.interval)
            .field("store", &store)
            .finish_non_exhaustive()
    }
}

impl Status {
    fn write(&self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_LIMIT, int_value(self.limit.into()));
        headers.insert(RATELIMIT_REMAINING, int_value(self.remaining.into()));
        headers.insert(RATELIMIT_RESET, int_value(ceil_secs(self.reset)));
    }

    fn too_many_requests<B: Default>(&self) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        response.extensions_mut().insert(RateLimited);
        let retry_after = self.retry_after.map_or(1, |wait| ceil_secs(wait).max(1));
        response
            .headers_mut()
            .insert(RETRY_AFTER, int_value(retry_after));
        self.write(response.headers_mut());
        response
    }
}

/// Whole seconds, rounded up: a client that waits that long is never early.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::ClientAddr;

    type Body = String;

    /// A layer over an inner service that answers 200 and counts its calls.
    fn service(
        config: RateLimitConfig,
    ) -> (
        RateLimitLayer,
        impl Service<Request<()>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone,
        Arc<AtomicUsize>,
    ) {
        let layer = RateLimitLayer::new(config).unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let svc = layer.layer(service_fn(move |_req: Request<()>| {
            counter.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, Infallible>(Response::new(Body::from("upstream"))) }
        }));
        (layer, svc, calls)
    }

    fn from_ip(addr: &str) -> Request<()> {
        let mut req = Request::new(());
        let addr: SocketAddr = addr.parse().unwrap();
        req.extensions_mut().insert(ClientAddr(addr));
        req
    }

    fn with_header(value: &'static str) -> Request<()> {
        Request::builder()
            .header("x-api-key", value)
            .body(())
            .unwrap()
    }

    async fn status<S>(svc: &S, req: Request<()>) -> StatusCode
    where
        S: Service<Request<()>, Response = Response<Body>, Error = Infallible> + Clone,
    {
        svc.clone().oneshot(req).await.unwrap().status()
    }

    fn header(res: &Response<Body>, name: &str) -> String {
        res.headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
            .to_owned()
    }

    fn per_second(requests: u32, burst: u32) -> RateLimitConfig {
        RateLimitConfig::new(requests, Duration::from_secs(1)).with_burst(burst)
    }

    #[tokio::test(start_paused = true)]
    async fn allows_the_burst_then_refuses() {
        let (_, svc, calls) = service(per_second(1, 3));
        for _ in 0..3 {
            assert_eq!(status(&svc, from_ip("192.0.2.1:1")).await, StatusCode::OK);
        }
        assert_eq!(
            status(&svc, from_ip("192.0.2.1:1")).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            calls.load(Ordering::Relaxed),
            3,
            "refusals never reach upstream"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refills_one_request_per_interval() {
        let (_, svc, _) = service(per_second(2, 1));
        assert_eq!(status(&svc, from_ip("192.0.2.1:1")).await, StatusCode::OK);
        tokio::time::advance(Duration::from_millis(499)).await;
        assert_eq!(
            status(&svc, from_ip("192.0.2.1:1")).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(status(&svc, from_ip("192.0.2.1:1")).await, StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn each_client_ip_has_its_own_bucket() {
        let (layer, svc, _) = service(per_second(1, 1));
        assert_eq!(status(&svc, from_ip("192.0.2.1:1")).await, StatusCode::OK);
        assert_eq!(status(&svc, from_ip("192.0.2.2:1")).await, StatusCode::OK);
        assert_eq!(
            status(&svc, from_ip("192.0.2.1:2")).await,
            StatusCode::TOO_MANY_REQUESTS,
            "another port of the same address"
        );
        assert_eq!(layer.stats().keys, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_clients_in_one_64_share_a_bucket() {
        let (_, svc, _) = service(per_second(1, 1));
        assert_eq!(
            status(&svc, from_ip("[2001:db8:0:1::1]:1")).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&svc, from_ip("[2001:db8:0:1::2]:1")).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status(&svc, from_ip("[2001:db8:0:2::1]:1")).await,
            StatusCode::OK
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_grouping_follows_the_configured_prefix() {
        let (_, svc, _) = service(per_second(1, 1).with_key(KeySource::ClientIp {
            ipv4_prefix: 32,
            ipv6_prefix: 128,
        }));
        assert_eq!(
            status(&svc, from_ip("[2001:db8:0:1::1]:1")).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&svc, from_ip("[2001:db8:0:1::2]:1")).await,
            StatusCode::OK
        );
    }

    #[tokio::test(start_paused = true)]
    async fn header_values_are_keys() {
        let key = KeySource::header(HeaderName::from_static("x-api-key"));
        let (_, svc, _) = service(per_second(1, 1).with_key(key));
        assert_eq!(status(&svc, with_header("a")).await, StatusCode::OK);
        assert_eq!(status(&svc, with_header("b")).await, StatusCode::OK);
        assert_eq!(
            status(&svc, with_header("a")).await,
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_without_the_header_share_one_bucket_by_default() {
        let key = KeySource::header(HeaderName::from_static("x-api-key"));
        let (layer, svc, _) = service(per_second(1, 2).with_key(key));
        assert_eq!(status(&svc, from_ip("192.0.2.1:1")).await, StatusCode::OK);
        assert_eq!(status(&svc, from_ip("192.0.2.2:1")).await, StatusCode::OK);
        assert_eq!(
            status(&svc, from_ip("192.0.2.3:1")).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(status(&svc, with_header("a")).await, StatusCode::OK);
        assert_eq!(layer.stats().keys, 2, "the missing bucket and `a`");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_without_the_header_can_go_unlimited() {
        let key = KeySource::header(HeaderName::from_static("x-api-key"));
        let (layer, svc, calls) = service(
            per_second(1, 1)
                .with_key(key)
                .with_missing_key(MissingKey::NoLimit),
        );
        for _ in 0..10 {
            let res = svc.clone().oneshot(Request::new(())).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            assert!(
                !res.headers().contains_key("ratelimit-limit"),
                "not limited, so no limit to report"
            );
        }
        assert_eq!(calls.load(Ordering::Relaxed), 10);
        assert_eq!(layer.stats().keys, 0);
        assert_eq!(status(&svc, with_header("a")).await, StatusCode::OK);
        assert_eq!(
            status(&svc, with_header("a")).await,
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[tokio::test(start_paused = true)]
    async fn extension_keys() {
        let (_, svc, _) = service(per_second(1, 1).with_key(KeySource::Extension));
        let with = |k: &str| {
            let mut req = Request::new(());
            req.extensions_mut().insert(RateLimitKey::new(k));
            req
        };
        assert_eq!(status(&svc, with("alice")).await, StatusCode::OK);
        assert_eq!(status(&svc, with("bob")).await, StatusCode::OK);
        assert_eq!(
            status(&svc, with("alice")).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        // No extension: the shared bucket, separate from alice's and bob's.
        assert_eq!(status(&svc, Request::new(())).await, StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn missing_client_addr_uses_the_shared_bucket() {
        let (_, svc, _) = service(per_second(1, 1));
        assert_eq!(status(&svc, Request::new(())).await, StatusCode::OK);
        assert_eq!(
            status(&svc, Request::new(())).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(status(&svc, from_ip("192.0.2.1:1")).await, StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn global_is_one_bucket_for_everyone() {
        let (layer, svc, _) = service(per_second(1, 2).with_key(KeySource::Global));
        assert_eq!(status(&svc, from_ip("192.0.2.1:1")).await, StatusCode::OK);
        assert_eq!(status(&svc, with_header("x")).await, StatusCode::OK);
        assert_eq!(
            status(&svc, from_ip("198.51.100.7:1")).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(layer.stats(), RateLimitStats::default());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(status(&svc, Request::new(())).await, StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn refusal_is_a_429_with_retry_after_and_ratelimit_fields() {
        // 10 per 2 s: one every 200 ms, burst 5 (a full bucket in 1 s).
        let (_, svc, _) = service(RateLimitConfig::new(10, Duration::from_secs(2)).with_burst(5));
        for _ in 0..5 {
            assert_eq!(status(&svc, from_ip("192.0.2.1:1")).await, StatusCode::OK);
        }
        let res = svc.clone().oneshot(from_ip("192.0.2.1:1")).await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.body(), "", "empty body, not the upstream's");
        assert_eq!(header(&res, "retry-after"), "1", "200 ms, rounded up");
        assert_eq!(header(&res, "ratelimit-limit"), "5");
        assert_eq!(header(&res, "ratelimit-remaining"), "0");
        assert_eq!(header(&res, "ratelimit-reset"), "1", "full again in 1 s");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_rounded_up_to_whole_seconds() {
        // One request per 2.5 s, no burst.
        let (_, svc, _) = service(RateLimitConfig::new(2, Duration::from_secs(5)).with_burst(1));
        assert_eq!(status(&svc, from_ip("192.0.2.1:1")).await, StatusCode::OK);
        let retry_after = || async {
            let res = svc.clone().oneshot(from_ip("192.0.2.1:1")).await.unwrap();
            assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
            header(&res, "retry-after")
        };
        assert_eq!(retry_after().await, "3", "2.5 s");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(retry_after().await, "2", "exactly 2 s");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(retry_after().await, "2", "1.999 s");
        tokio::time::advance(Duration::from_millis(1998)).await;
        assert_eq!(retry_after().await, "1", "1 ms, never 0");
    }

    #[test]
    fn int_values_match_their_decimal_form() {
        for n in (0..2000).chain([u64::from(u32::MAX), u64::MAX]) {
            assert_eq!(int_value(n), n.to_string(), "{n}");
        }
    }

    #[test]
    fn ceil_secs_rounds_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2999)), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn allowed_responses_carry_the_ratelimit_fields() {
        // One every 100 ms, burst 3.
        let (_, svc, _) = service(per_second(10, 3));
        let res = svc.clone().oneshot(from_ip("192.0.2.1:1")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.body(), "upstream");
        assert_eq!(header(&res, "ratelimit-limit"), "3");
        assert_eq!(header(&res, "ratelimit-remaining"), "2");
        assert_eq!(header(&res, "ratelimit-reset"), "1");
        assert!(!res.headers().contains_key("retry-after"));
        let res = svc.clone().oneshot(from_ip("192.0.2.1:1")).await.unwrap();
        assert_eq!(header(&res, "ratelimit-remaining"), "1");
        tokio::time::advance(Duration::from_millis(100)).await;
        let res = svc.clone().oneshot(from_ip("192.0.2.1:1")).await.unwrap();
        assert_eq!(header(&res, "ratelimit-remaining"), "1", "refilled one");
    }

    #[tokio::test(start_paused = true)]
    async fn allowed_responses_can_go_without_the_fields() {
        let (_, svc, _) = service(per_second(1, 1).with_response_headers(false));
        let res = svc.clone().oneshot(from_ip("192.0.2.1:1")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(!res.headers().contains_key("ratelimit-limit"));
        let res = svc.clone().oneshot(from_ip("192.0.2.1:1")).await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            header(&res, "ratelimit-limit"),
            "1",
            "refusals always say why"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn upstream_ratelimit_fields_are_kept() {
        let layer = RateLimitLayer::new(per_second(1, 5)).unwrap();
        let svc = layer.layer(service_fn(|_req: Request<()>| async {
            let res = Response::builder()
                .header("ratelimit-limit", "100")
                .header("ratelimit-remaining", "7")
                .body(Body::new())
                .unwrap();
            Ok::<_, Infallible>(res)
        }));
        let res = svc.oneshot(from_ip("192.0.2.1:1")).await.unwrap();
        assert_eq!(header(&res, "ratelimit-limit"), "100");
        assert_eq!(header(&res, "ratelimit-remaining"), "7");
        assert!(!res.headers().contains_key("ratelimit-reset"));
    }

    #[tokio::test(start_paused = true)]
    async fn inner_errors_pass_through() {
        let layer = RateLimitLayer::new(per_second(1, 1)).unwrap();
        let svc = layer.layer(service_fn(|_req: Request<()>| async {
            Err::<Response<Body>, _>("upstream down")
        }));
        let err = svc
            .clone()
            .oneshot(from_ip("192.0.2.1:1"))
            .await
            .unwrap_err();
        assert_eq!(err, "upstream down");
        // The failed call still used the bucket: the limit is on requests, not on successes.
        let res = svc.oneshot(from_ip("192.0.2.1:1")).await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    #[tokio::test(start_paused = true)]
    async fn services_from_one_layer_share_the_limiter() {
        let layer = RateLimitLayer::new(per_second(1, 1)).unwrap();
        let ok = || {
            service_fn(|_req: Request<()>| async {
                Ok::<_, Infallible>(Response::new(Body::new()))
            })
        };
        let a = layer.layer(ok());
        let b = layer.layer(ok());
        assert_eq!(status(&a, from_ip("192.0.2.1:1")).await, StatusCode::OK);
        assert_eq!(
            status(&b, from_ip("192.0.2.1:1")).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        // Another layer is another limiter.
        let other = RateLimitLayer::new(per_second(1, 1)).unwrap().layer(ok());
        assert_eq!(status(&other, from_ip("192.0.2.1:1")).await, StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn the_key_store_stays_within_max_keys() {
        let (layer, svc, _) = service(per_second(1, 1).with_max_keys(100));
        for i in 0..1000u32 {
            let addr = SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + i), 1));
            let mut req = Request::new(());
            req.extensions_mut().insert(ClientAddr(addr));
            assert_eq!(status(&svc, req).await, StatusCode::OK);
            assert!(layer.stats().keys <= 100);
        }
        let stats = layer.stats();
        assert_eq!(stats.max_keys, 100);
        assert_eq!(
            stats.evicted, 900,
            "nothing refilled: all evictions are LRU"
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let base = || per_second(10, 10);
        let cases = [
            (base().with_burst(0), "burst: must be at least 1"),
            (
                RateLimitConfig::new(0, Duration::from_secs(1)),
                "requests: must be at least 1",
            ),
            (
                RateLimitConfig::new(1, Duration::ZERO),
                "period: must be longer than zero",
            ),
            (
                RateLimitConfig::new(10, Duration::from_nanos(5)),
                "requests: 10 per 5ns is more than one request per nanosecond",
            ),
            (
                RateLimitConfig::new(1, Duration::from_secs(200 * 365 * 24 * 3600)),
                "burst: 1 requests at one per 6307200000s take more than 100 years to refill",
            ),
            (base().with_max_keys(0), "max_keys: must be at least 1"),
            (
                base().with_key(KeySource::ClientIp {
                    ipv4_prefix: 33,
                    ipv6_prefix: 64,
                }),
                "key.ipv4_prefix: 33 is longer than 32",
            ),
            (
                base().with_key(KeySource::ClientIp {
                    ipv4_prefix: 32,
                    ipv6_prefix: 129,
                }),
                "key.ipv6_prefix: 129 is longer than 128",
            ),
        ];
        for (config, message) in cases {
            let err = RateLimitLayer::new(config).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn config_defaults() {
        let config = RateLimitConfig::new(50, Duration::from_secs(60));
        assert_eq!(config.burst, 50);
        assert_eq!(config.key, KeySource::client_ip());
        assert_eq!(
            config.key,
            KeySource::ClientIp {
                ipv4_prefix: 32,
                ipv6_prefix: 64
            }
        );
        assert_eq!(config.missing_key, MissingKey::SharedBucket);
        assert_eq!(config.max_keys, DEFAULT_MAX_KEYS);
        assert!(config.response_headers);
        assert!(RateLimitLayer::new(config).is_ok());
    }

    #[test]
    fn layers_services_and_futures_are_send_and_sync() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<RateLimitLayer>();
        send_sync::<RateLimit<tower::util::BoxCloneSyncService<Request<()>, Response<()>, ()>>>();
        fn send<T: Send>(_: &T) {}
        let layer = RateLimitLayer::new(per_second(1, 1)).unwrap();
        let mut svc = layer.layer(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Body::new()))
        }));
        send(&svc.call(Request::new(())));
    }
}
