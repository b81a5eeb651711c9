//! A tower [`Service`] that balances requests over a changing set of endpoint services.
//!
//! [`Balance`] holds an [`EndpointSet`] whose values are the endpoint services. Each call picks an
//! endpoint with the set's policy (hashing the request first if the policy needs a key), counts
//! the request in the endpoint's [`pending`](crate::EndpointState::pending) load until the
//! response arrives, records the response time in its latency estimate, and drives a clone of
//! the endpoint's service with [`oneshot`](tower::ServiceExt::oneshot).
//!
//! The set changes from outside the request path: [`discover`] feeds it from a tower
//! [`Discover`] stream (spawn it as a task), or the proxy calls the set's methods itself.
//! Either way tables are rebuilt by the updating side and swapped atomically; a call only loads
//! the current one.
//!
//! # Design notes
//!
//! - `Balance` is `Clone` and always ready. Readiness of the endpoint services is driven per
//!   call by `oneshot`, because the endpoint is known only once the request is (a hash policy
//!   looks at it), and because endpoint services in a proxy are usually cheap clones of a
//!   connection pool. This differs from tower's `p2c::Balance`, which picks in `poll_ready` and
//!   so cannot hash requests.
//! - A call with no endpoint to pick fails at once with [`NoEndpoint`] instead of waiting: a
//!   proxy answers 503 rather than holding the request until discovery catches up.
//! - The request counts as pending until the response future resolves (the response head, for
//!   HTTP); the latency sample is taken then, for successful responses only, since an error that
//!   comes back fast (connection refused) would make a broken endpoint look like the fastest.

use std::error::Error;
use std::fmt;
use std::future::{Future, poll_fn};
use std::hash::Hash;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use pin_project_lite::pin_project;
use tower::Service;
use tower::discover::{Change, Discover};
use tower::util::{Oneshot, ServiceExt};

use crate::endpoint::InFlight;
use crate::hash::{EndpointId, HashPolicy};
use crate::selector::{PickContext, Selector};
use crate::set::{EndpointSet, Weighted};

/// The error type of [`Balance`]: endpoint errors, boxed, or [`NoEndpoint`].
pub type BoxError = Box<dyn Error + Send + Sync>;

/// How a request's hash key is computed, for hashing policies.
pub trait RequestHash<Req> {
    /// The key, or `None` to let the table pick at random.
    fn hash(&self, req: &Req) -> Option<u64>;
}

/// No hash key: for policies that do not use one.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHash;

impl<Req> RequestHash<Req> for NoHash {
    fn hash(&self, _req: &Req) -> Option<u64> {
        None
    }
}

impl<Req, F: Fn(&Req) -> Option<u64>> RequestHash<Req> for F {
    fn hash(&self, req: &Req) -> Option<u64> {
        self(req)
    }
}

/// The client address of a request, as a request extension. A proxy inserts it per connection
/// so that [`HashPolicy::SourceIp`] can hash it when used as a [`RequestHash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Reads the client address from the [`PeerAddr`] extension; without one,
/// [`HashPolicy::SourceIp`] gives no key.
impl<B> RequestHash<http::Request<B>> for HashPolicy {
    fn hash(&self, req: &http::Request<B>) -> Option<u64> {
        match (self, req.extensions().get::<PeerAddr>()) {
            (_, Some(PeerAddr(peer))) => HashPolicy::hash(self, req, peer.ip()),
            (HashPolicy::SourceIp, None) => None,
            // Other policies do not look at the peer.
            (_, None) => HashPolicy::hash(self, req, std::net::Ipv4Addr::UNSPECIFIED.into()),
        }
    }
}

/// Where [`Balance`] reads the time for latency samples.
pub trait Clock {
    /// The current time.
    fn now(&self) -> Instant;
}

/// [`Instant::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
}

impl<F: Fn() -> Instant> Clock for F {
    fn now(&self) -> Instant {
        self()
    }
}

/// No endpoint could be picked: the set is empty, every weight is 0, or every endpoint is
/// unhealthy with panic mode disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoEndpoint;

impl fmt::Display for NoEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "no endpoint to balance to: the set is empty, every weight is 0, \
             or every endpoint is unhealthy",
        )
    }
}

impl Error for NoEndpoint {}

/// Balances requests over the endpoint services of an [`EndpointSet`].
pub struct Balance<K, S, H = NoHash, C = SystemClock> {
    endpoints: EndpointSet<K, S>,
    hash: H,
    clock: C,
}

// === impl Balance ===

impl<K, S> Balance<K, S> {
    /// Balances over `endpoints` without hashing requests, timing with the system clock.
    pub fn new(endpoints: EndpointSet<K, S>) -> Self {
        Self {
            endpoints,
            hash: NoHash,
            clock: SystemClock,
        }
    }
}

impl<K, S, H, C> Balance<K, S, H, C> {
    /// Computes each request's hash key with `hash` (a [`HashPolicy`] for HTTP requests, or a
    /// closure).
    pub fn with_hash<H2>(self, hash: H2) -> Balance<K, S, H2, C> {
        Balance {
            endpoints: self.endpoints,
            hash,
            clock: self.clock,
        }
    }

    /// Times requests with `clock` (a closure returning an [`Instant`]), e.g. tokio's paused
    /// clock in tests: `|| tokio::time::Instant::now().into_std()`.
    pub fn with_clock<C2>(self, clock: C2) -> Balance<K, S, H, C2> {
        Balance {
            endpoints: self.endpoints,
            hash: self.hash,
            clock,
        }
    }

    /// The endpoint set, to change or inspect it.
    pub fn endpoints(&self) -> &EndpointSet<K, S> {
        &self.endpoints
    }
}

impl<K, S, H: Clone, C: Clone> Clone for Balance<K, S, H, C> {
    fn clone(&self) -> Self {
        Self {
            endpoints: self.endpoints.clone(),
            hash: self.hash.clone(),
            clock: self.clock.clone(),
        }
    }
}

impl<K: fmt::Debug, S, H, C> fmt::Debug for Balance<K, S, H, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl<K, S, H, C, Req> Service<Req> for Balance<K, S, H, C>
where
    K: EndpointId + Eq + Hash + Clone,
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    H: RequestHash<Req>,
    C: Clock + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<Oneshot<S, Req>, C>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let snapshot = self.endpoints.load();
        let now = self.clock.now();
        let ctx = PickContext::new().with_hash(self.hash.hash(&req)).at(now);
        match snapshot.pick_with(&ctx) {
            None => ResponseFuture {
                inner: None,
                in_flight: None,
                clock: self.clock.clone(),
            },
            Some(picked) => {
                let service = snapshot.value(picked.index()).clone();
                ResponseFuture {
                    in_flight: Some(picked.start_at(now)),
                    inner: Some(service.oneshot(req)),
                    clock: self.clock.clone(),
                }
            }
        }
    }
}

pin_project! {
    /// The response of a [`Balance`] call: the endpoint's response, with the request counted
    /// in the endpoint's load until it resolves.
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: Option<F>,
        in_flight: Option<InFlight>,
        clock: C,
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Clock,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(NoEndpoint.into()));
        };
        let result = ready!(inner.poll(cx));
        match (result, this.in_flight.take()) {
            (Ok(response), Some(in_flight)) => {
                in_flight.finish_at(this.clock.now());
                Poll::Ready(Ok(response))
            }
            (Ok(response), None) => Poll::Ready(Ok(response)),
            // Dropping the guard releases the count without a latency sample.
            (Err(error), _) => Poll::Ready(Err(error.into())),
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

/// The most changes applied in one rebuild, so that a stream that is always ready still gets
/// its changes published.
const MAX_BATCH: usize = 1024;

/// Feeds `discover`'s changes into `endpoints` until the stream ends (`Ok`) or fails (the
/// error, after applying what came before it). Changes that are ready together are applied with
/// one rebuild. Endpoints keep weight 1 unless the stream yields [`Weighted`] services.
///
/// Run it as a task beside the [`Balance`] service: tables are then built on that task, not on
/// the request path.
pub async fn discover<K, S, D>(endpoints: EndpointSet<K, S>, discover: D) -> Result<(), D::Error>
where
    K: EndpointId + Eq + Hash + Clone,
    S: Clone,
    D: Discover<Key = K>,
    D::Service: Into<Weighted<S>>,
{
    let mut discover = pin!(discover);
    loop {
        let (batch, end) = poll_fn(|cx| {
            let mut batch = Vec::new();
            loop {
                match discover.as_mut().poll_discover(cx) {
                    Poll::Ready(Some(Ok(change))) => {
                        batch.push(match change {
                            Change::Insert(key, service) => Change::Insert(key, service.into()),
                            Change::Remove(key) => Change::Remove(key),
                        });
                        if batch.len() == MAX_BATCH {
                            return Poll::Ready((batch, None));
                        }
                    }
                    Poll::Ready(Some(Err(error))) => return Poll::Ready((batch, Some(Err(error)))),
                    Poll::Ready(None) => return Poll::Ready((batch, Some(Ok(())))),
                    Poll::Pending if batch.is_empty() => return Poll::Pending,
                    Poll::Pending => return Poll::Ready((batch, None)),
                }
            }
        })
        .await;
        endpoints.apply(batch);
        if let Some(end) = end {
            return end;
        }
    }
}
