//! Response bodies that carry what must live exactly as long as the response does.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use novaedge_health::Permit;
use novaedge_lb::InFlight;

use crate::upstream::ResponseBody;
use tokio::time::{Instant, Sleep};

/// What a proxied request holds until its response is done: its place in the endpoint's load
/// and its backend's `max_requests` permit.
#[derive(Debug)]
#[expect(dead_code, reason = "held for what dropping them releases")]
pub(crate) struct Held {
    pub(crate) in_flight: InFlight,
    pub(crate) request: Permit,
}

/// An upstream response body that keeps its request counted as in flight by the balancer
/// until the body ends (or the client goes away): a streaming gRPC call or a large download is
/// load on its endpoint for its whole length, not only until the response head. It fails if
/// the upstream goes quiet for too long ([`IdleBody`]).
pub(crate) type InFlightBody = Holding<IdleBody<ResponseBody>, Held>;

/// The error of an upstream response body that sent nothing for its idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream response body idle for {timeout:?}")]
pub(crate) struct UpstreamBodyIdle {
    pub(crate) timeout: Duration,
}

pin_project_lite::pin_project! {
    /// A body that fails with [`UpstreamBodyIdle`] when no frame comes for `timeout`: a backend
    /// that sent a response head and then stalls holds the client's request (and a stream or
    /// connection of each side) for no longer than that. The timer is armed only while the
    /// body waits, so that a body whose frames are ready when asked for (most short responses)
    /// never touches it; a frame disarms it without resetting it, at the cost of at most one
    /// early wake-up per timeout.
    #[derive(Debug)]
    pub(crate) struct IdleBody<B> {
        #[pin]
        inner: B,
        timeout: Option<Duration>,
        // Boxed so that the body stays `Unpin` when `B` is; allocated on the first wait.
        sleep: Option<Pin<Box<Sleep>>>,
        armed: bool,
    }
}

impl<B> IdleBody<B> {
    /// `None`: no idle timeout.
    pub(crate) fn new(inner: B, timeout: Option<Duration>) -> Self {
        Self {
            inner,
            timeout,
            sleep: None,
            armed: false,
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.armed = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let Some(timeout) = *this.timeout else {
                    return Poll::Pending;
                };
                if !*this.armed {
                    let deadline = Instant::now() + timeout;
                    match this.sleep {
                        Some(sleep) => sleep.as_mut().reset(deadline),
                        None => *this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                    *this.armed = true;
                }
                match this.sleep.as_mut().map(|sleep| sleep.as_mut().poll(cx)) {
                    Some(Poll::Ready(())) => {
                        // Failed once; never again (hyper stops polling a failed body).
                        *this.timeout = None;
                        Poll::Ready(Some(Err(Box::new(UpstreamBodyIdle { timeout }))))
                    }
                    _ => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A body that holds a `T` until it ends, fails or is dropped, whichever comes first: what
    /// dropping the `T` releases (a balancer's in-flight count, a connection's request count)
    /// is released as soon as the body is done, not when hyper gets round to dropping it.
    #[derive(Debug)]
    pub(crate) struct Holding<B, T> {
        #[pin]
        inner: B,
        held: Option<T>,
    }
}

impl<B, T> Holding<B, T> {
    pub(crate) fn new(inner: B, held: Option<T>) -> Self {
        Self { inner, held }
    }
}

impl<B: Body, T> Body for Holding<B, T> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = &polled {
            this.held.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// Every response body the proxy sends: the upstream's, streamed, or a short one the proxy
    /// (or a filter, which builds it with `Default`) wrote itself.
    #[project = ProxyBodyProj]
    #[derive(Debug)]
    pub(crate) enum ProxyBody {
        Upstream { #[pin] body: InFlightBody },
        Local { #[pin] body: Full<Bytes> },
        /// A body some filter wrapped (a timeout's deadline, say).
        Boxed { #[pin] body: UnsyncBoxBody<Bytes, BoxError> },
    }
}

impl ProxyBody {
    pub(crate) fn upstream(body: InFlightBody) -> Self {
        ProxyBody::Upstream { body }
    }

    pub(crate) fn local(bytes: Bytes) -> Self {
        ProxyBody::Local {
            body: Full::new(bytes),
        }
    }

    pub(crate) fn boxed<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        ProxyBody::Boxed {
            body: body.map_err(Into::into).boxed_unsync(),
        }
    }
}

impl Default for ProxyBody {
    fn default() -> Self {
        Self::local(Bytes::new())
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ProxyBodyProj::Upstream { body } => body.poll_frame(cx),
            ProxyBodyProj::Local { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(|never| match never {}))),
            ProxyBodyProj::Boxed { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body } => body.is_end_stream(),
            ProxyBody::Local { body } => body.is_end_stream(),
            ProxyBody::Boxed { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body } => body.size_hint(),
            ProxyBody::Local { body } => body.size_hint(),
            ProxyBody::Boxed { body } => body.size_hint(),
        }
    }
}

/// The error of bodies that may come from several sources.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    /// A request body on its way upstream: the client's, streamed as it is, or whatever the
    /// route's filters made of it (a retry's replay buffer, a mirror's tee, a mirrored copy).
    #[project = RequestBodyProj]
    #[derive(Debug)]
    pub(crate) enum RequestBody {
        Client { #[pin] body: Incoming },
        Filtered { #[pin] body: UnsyncBoxBody<Bytes, BoxError> },
    }
}

impl RequestBody {
    pub(crate) fn filtered<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        RequestBody::Filtered {
            body: body.map_err(Into::into).boxed_unsync(),
        }
    }
}

impl From<Incoming> for RequestBody {
    fn from(body: Incoming) -> Self {
        RequestBody::Client { body }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            RequestBodyProj::Client { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(BoxError::from))),
            RequestBodyProj::Filtered { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client { body } => body.is_end_stream(),
            RequestBody::Filtered { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client { body } => body.size_hint(),
            RequestBody::Filtered { body } => body.size_hint(),
        }
    }
}

/// The error of a request body that went past the configured limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {limit} bytes")]
pub(crate) struct BodyTooLarge {
    pub(crate) limit: u64,
}

/// Shared by a [`LimitedBody`] and the forwarding of its request: whether the body went past
/// its limit. hyper reports a request body that failed with the body's own error on HTTP/1.1,
/// but on HTTP/2 only as the stream it reset, so forwarding asks this instead.
#[derive(Debug)]
pub(crate) struct LimitTrip {
    pub(crate) limit: u64,
    tripped: AtomicBool,
}

impl LimitTrip {
    pub(crate) fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            tripped: AtomicBool::new(false),
        })
    }

    pub(crate) fn tripped(&self) -> bool {
        self.tripped.load(Ordering::Acquire)
    }
}

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyTooLarge`] once it goes past its limit, before the
    /// data past the limit is sent on.
    #[derive(Debug)]
    pub(crate) struct LimitedBody<B> {
        #[pin]
        inner: B,
        left: u64,
        trip: Arc<LimitTrip>,
    }
}

impl<B> LimitedBody<B> {
    pub(crate) fn new(inner: B, trip: Arc<LimitTrip>) -> Self {
        Self {
            inner,
            left: trip.limit,
            trip,
        }
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let len = data.len() as u64;
            if len > *this.left {
                *this.left = 0;
                this.trip.tripped.store(true, Ordering::Release);
                let limit = this.trip.limit;
                return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit }))));
            }
            *this.left -= len;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
