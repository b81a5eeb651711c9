//! Whole-request timeout, after Gateway API `HTTPRoute` `timeouts.request` (GEP-1742) and
//! Envoy's route timeout.
//!
//! # Model
//!
//! The deadline starts when the filter is called (the request head has reached the proxy) and
//! covers everything below it, retries and their back-off included (the [`retry`](crate::retry)
//! layer sits inside this one), **and the response body**:
//!
//! - If the deadline passes before the inner service has produced a response head, the inner
//!   future is dropped (which cancels the upstream request) and the filter answers
//!   `504 Gateway Timeout` with an empty body (`ResB::default()`). The response carries a
//!   [`RequestTimedOut`] extension so that access logs can tell this `504` from an upstream's.
//! - If the head arrived in time, the body is wrapped in a [`TimeoutBody`] bound to the same
//!   deadline. When the deadline passes while the body is still streaming, the body yields a
//!   [`ResponseBodyTimeout`] error. A server such as hyper then resets the HTTP/2 stream or
//!   closes the HTTP/1.1 connection, so the client sees a truncated response as an error,
//!   never as a complete one (ending the stream cleanly would make a chunked body look whole).
//!
//! Covering the body follows Envoy (its route timeout runs until the end of the response) and
//! the Gateway API's intent that `timeouts.request` bound "the whole request-response
//! transaction". The consequence is the same as in Envoy: routes that stream long responses
//! (server-sent events, large downloads, gRPC server streaming) need a larger timeout or none.
//! As in the Gateway API, a zero duration disables the timeout.
//!
//! Once the response head has been sent the status cannot change, which is why a late body is
//! cut rather than turned into a `504`.
//!
//! The response body type becomes [`TimeoutBody<ResB>`](TimeoutBody), whose error is a
//! [`BoxError`]; `ResB` needs `Default` for the `504`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use novaedge_filters::timeout::{TimeoutConfig, TimeoutLayer};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer = TimeoutLayer::new(TimeoutConfig::new(Duration::from_secs(2))).unwrap();
//! let slow = layer.layer(service_fn(|_req: Request<String>| async {
//!     tokio::time::sleep(Duration::from_secs(10)).await;
//!     Ok::<_, std::convert::Infallible>(Response::new(String::from("late")))
//! }));
//! let res = slow.oneshot(Request::new(String::new())).await.unwrap();
//! assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
//! # }
//! ```

use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

/// A boxed error, the error type of [`TimeoutBody`].
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Configuration of the [`TimeoutLayer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeoutConfig {
    /// Gateway API `timeouts.request`: the longest time from the filter being called until the
    /// end of the response body. [`Duration::ZERO`] disables the timeout.
    pub request: Duration,
}

impl TimeoutConfig {
    /// A configuration with the given request timeout.
    pub fn new(request: Duration) -> Self {
        Self { request }
    }
}

/// An error in a [`TimeoutConfig`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TimeoutConfigError {
    /// The timeout is too large to be added to the current time.
    #[error("timeout.request: {0:?} is too large")]
    TooLarge(Duration),
}

/// Marks a `504` that the [`Timeout`] filter wrote itself, as a response extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestTimedOut {
    /// The timeout that passed.
    pub timeout: Duration,
}

/// The error a [`TimeoutBody`] yields when the request deadline passes while the response body
/// is still streaming.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("request timeout of {timeout:?} passed while the response body was streaming")]
pub struct ResponseBodyTimeout {
    /// The timeout that passed.
    pub timeout: Duration,
}

// === impl TimeoutLayer ===

/// A [`Layer`] that bounds the whole request, response body included. See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct TimeoutLayer {
    /// `None` when disabled.
    timeout: Option<Duration>,
}

impl TimeoutLayer {
    /// Builds the layer, checking the configuration.
    pub fn new(config: TimeoutConfig) -> Result<Self, TimeoutConfigError> {
        if config.request.is_zero() {
            return Ok(Self { timeout: None });
        }
        // Reject durations that overflow `Instant` here rather than per request.
        if Instant::now().checked_add(config.request).is_none() {
            return Err(TimeoutConfigError::TooLarge(config.request));
        }
        Ok(Self {
            timeout: Some(config.request),
        })
    }

    /// The timeout in force, `None` when disabled.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            timeout: self.timeout,
        }
    }
}

// === impl Timeout ===

/// The service built by [`TimeoutLayer`].
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    timeout: Option<Duration>,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Timeout<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Default,
{
    type Response = Response<TimeoutBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let deadline = self
            .timeout
            .and_then(|t| Some((Instant::now().checked_add(t)?, t)));
        ResponseFuture {
            inner: self.inner.call(req),
            sleep: deadline.map(|(at, _)| tokio::time::sleep_until(at)),
            deadline,
        }
    }
}

pin_project! {
    /// The future of [`Timeout`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        deadline: Option<(Instant, Duration)>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<F, ResB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    ResB: Default,
{
    type Output = Result<Response<TimeoutBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The inner future first: a response that is ready when the deadline passes wins.
        if let Poll::Ready(res) = this.inner.poll(cx) {
            let deadline = *this.deadline;
            return Poll::Ready(res.map(|res| res.map(|b| TimeoutBody::new(b, deadline))));
        }
        if let Some(sleep) = this.sleep.as_pin_mut() {
            ready!(sleep.poll(cx));
            let timeout = this.deadline.map(|(_, t)| t).unwrap_or_default();
            tracing::debug!(?timeout, "request timed out before the response head");
            let mut res = Response::new(TimeoutBody::new(ResB::default(), None));
            *res.status_mut() = StatusCode::GATEWAY_TIMEOUT;
            res.extensions_mut().insert(RequestTimedOut { timeout });
            return Poll::Ready(Ok(res));
        }
        Poll::Pending
    }
}

// === impl TimeoutBody ===

pin_project! {
    /// A response body bound to the request deadline: it yields a [`ResponseBodyTimeout`]
    /// error if the deadline passes before its end.
    pub struct TimeoutBody<B> {
        #[pin]
        inner: B,
        // Boxed so that the body is `Unpin` when `B` is, as many body consumers require.
        sleep: Option<Pin<Box<Sleep>>>,
        timeout: Duration,
        // Set once the deadline error was returned: the body then ends.
        expired: bool,
    }
}

impl<B> TimeoutBody<B> {
    fn new(inner: B, deadline: Option<(Instant, Duration)>) -> Self {
        Self {
            inner,
            sleep: deadline.map(|(at, _)| Box::pin(tokio::time::sleep_until(at))),
            timeout: deadline.map(|(_, t)| t).unwrap_or_default(),
            expired: false,
        }
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Default> Default for TimeoutBody<B> {
    /// An empty body with no deadline.
    fn default() -> Self {
        Self::new(B::default(), None)
    }
}

impl<B: fmt::Debug> fmt::Debug for TimeoutBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutBody")
            .field("inner", &self.inner)
            .field("has_deadline", &self.sleep.is_some())
            .field("expired", &self.expired)
            .finish()
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.expired {
            return Poll::Ready(None);
        }
        // The deadline first, so that a body that is always ready cannot outrun it.
        if let Some(sleep) = this.sleep.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            *this.expired = true;
            tracing::debug!(timeout = ?this.timeout, "request timed out while streaming the response body");
            return Poll::Ready(Some(Err(ResponseBodyTimeout {
                timeout: *this.timeout,
            }
            .into())));
        }
        this.inner.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
    use std::convert::Infallible;
    use std::sync::Arc;
    use tower::{ServiceExt, service_fn};

    fn layer(secs: u64) -> TimeoutLayer {
        TimeoutLayer::new(TimeoutConfig::new(Duration::from_secs(secs))).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn fast_response_passes_through() {
        let svc = layer(5).layer(service_fn(|_req: Request<Empty<Bytes>>| async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
        }));
        let res = svc.oneshot(Request::new(Empty::new())).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.extensions().get::<RequestTimedOut>().is_none());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_head_gets_504_at_the_deadline() {
        let start = Instant::now();
        let svc = layer(5).layer(service_fn(|_req: Request<Empty<Bytes>>| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"late"))))
        }));
        let res = svc.oneshot(Request::new(Empty::new())).await.unwrap();
        assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(
            res.extensions().get::<RequestTimedOut>(),
            Some(&RequestTimedOut {
                timeout: Duration::from_secs(5)
            })
        );
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn inner_future_is_dropped_on_timeout() {
        struct Flag(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = dropped.clone();
        let svc = layer(1).layer(service_fn(move |_req: Request<Empty<Bytes>>| {
            let flag = Flag(d.clone());
            async move {
                let _flag = flag;
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            }
        }));
        let res = svc.oneshot(Request::new(Empty::new())).await.unwrap();
        assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn inner_error_passes_through() {
        let svc = layer(5).layer(service_fn(|_req: Request<Empty<Bytes>>| async {
            Err::<Response<Empty<Bytes>>, _>("boom")
        }));
        let err = svc.oneshot(Request::new(Empty::new())).await.unwrap_err();
        assert_eq!(err, "boom");
    }

    #[tokio::test(start_paused = true)]
    async fn upstream_status_is_kept() {
        let svc = layer(5).layer(service_fn(|_req: Request<Empty<Bytes>>| async {
            let mut res = Response::new(Empty::<Bytes>::new());
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            Ok::<_, Infallible>(res)
        }));
        let res = svc.oneshot(Request::new(Empty::new())).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    type Chunks = UnsyncBoxBody<Bytes, Infallible>;

    /// A body that sends one chunk every `every`, `n` times.
    fn slow_body(n: u64, every: Duration) -> Chunks {
        let stream = futures_util::stream::unfold(0u64, move |i| async move {
            if i == n {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{i};")))),
                i + 1,
            ))
        });
        UnsyncBoxBody::new(StreamBody::new(stream))
    }

    #[tokio::test(start_paused = true)]
    async fn slow_body_is_cut_with_an_error() {
        let svc = layer(5).layer(service_fn(|_req: Request<Empty<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(slow_body(10, Duration::from_secs(1))))
        }));
        let res = svc.oneshot(Request::new(Empty::new())).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let mut body = res.into_body();
        let mut got = Vec::new();
        let err = loop {
            match body.frame().await {
                Some(Ok(frame)) => got.push(frame.into_data().unwrap()),
                Some(Err(e)) => break e,
                None => panic!("the body ended cleanly after the deadline"),
            }
        };
        // Chunks at t=1..=4 made it; t=5 is the deadline.
        assert_eq!(got.len(), 4);
        let err = err.downcast::<ResponseBodyTimeout>().unwrap();
        assert_eq!(err.timeout, Duration::from_secs(5));
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn body_within_the_deadline_is_whole() {
        let svc = layer(5).layer(service_fn(|_req: Request<Empty<Bytes>>| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<_, Infallible>(Response::new(slow_body(2, Duration::from_secs(1))))
        }));
        let res = svc.oneshot(Request::new(Empty::new())).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "0;1;");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_disables() {
        let l = TimeoutLayer::new(TimeoutConfig::new(Duration::ZERO)).unwrap();
        assert_eq!(l.timeout(), None);
        let svc = l.layer(service_fn(|_req: Request<Empty<Bytes>>| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, Infallible>(Response::new(slow_body(1, Duration::from_secs(3600))))
        }));
        let res = svc.oneshot(Request::new(Empty::new())).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "0;");
    }

    #[test]
    fn huge_timeout_is_a_config_error() {
        let err = TimeoutLayer::new(TimeoutConfig::new(Duration::MAX)).unwrap_err();
        assert!(err.to_string().contains("timeout.request"), "{err}");
    }
}
