//! [`ReplayBody`]: a request body that can be sent again.

use std::{
    error::Error as StdError,
    fmt,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// A boxed error, the error type of [`ReplayBody`].
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a [`ReplayBody`] cannot be read. See [`ReplayBody`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// A newer try of the same request now owns the body; this try was abandoned.
    #[error("request body taken over by a newer retry of the request")]
    Superseded,
    /// The body outgrew the buffer limit, so it cannot be replayed.
    #[error("request body exceeded the retry buffer limit and cannot be replayed")]
    Capped,
    /// Reading the client's body failed earlier, so it cannot be replayed.
    #[error("request body failed earlier and cannot be replayed")]
    Failed,
}

/// The request body the inner service of [`Retry`](super::Retry) receives: the client's body,
/// either passed through once or buffered so that it can be replayed for a retry.
///
/// Its data are [`Bytes`]; its error is a [`BoxError`] (the client body's error, or a
/// [`ReplayError`]).
///
/// The body is buffered *as it is read*, not before the first try: the first try streams the
/// client's body to the upstream while each chunk is also kept (a `Bytes` clone, no copy) in a
/// buffer shared by every try of the request. A retry gets a new reader that replays the
/// buffered chunks and then, if the first try had not read the whole body (the upstream
/// answered or failed early), goes on reading the client's body where the previous try left
/// off. Nothing waits for the whole body before the first try starts, so streaming requests
/// (a gRPC bidirectional stream, a client that waits for the response before sending more)
/// are not held back.
///
/// Buffering is bounded. A body whose size hint already exceeds the limit is not buffered at
/// all. A body that grows past the limit while streaming stops being buffered (what was
/// buffered is freed) and the try that is reading it carries on unharmed; the request can then
/// no longer be retried. The same holds after the client's body failed.
///
/// Only the newest reader may read: when a retry starts, the previous try's body (which an
/// HTTP client may still be polling in its connection task) fails with
/// [`ReplayError::Superseded`] on its next poll. Failing (rather than ending the stream) makes
/// sure an upstream never mistakes a cut-off upload for a whole one.
pub struct ReplayBody<B> {
    kind: Kind<B>,
}

enum Kind<B> {
    /// Sent once, never replayed.
    Once(Pin<Box<B>>),
    /// One reader of a buffered body.
    Replay(Reader<B>),
}

struct Reader<B> {
    shared: Arc<Shared<B>>,
    /// Only the reader whose generation is the shared state's may be polled.
    generation: u64,
    /// The next buffered chunk to replay.
    next: usize,
    /// Set once this reader has replayed the buffer and reads from the client's body.
    live: bool,
    trailers_sent: bool,
}

struct Shared<B> {
    state: Mutex<State<B>>,
    /// The client's body was empty to begin with (a GET): every reader is empty.
    was_empty: bool,
}

struct State<B> {
    chunks: Vec<Bytes>,
    buffered: usize,
    limit: usize,
    capped: bool,
    failed: bool,
    trailers: Option<HeaderMap>,
    /// The client's body, `None` once it has ended.
    rest: Option<Pin<Box<B>>>,
    generation: u64,
}

/// The retry engine's handle on a buffered body: tells whether it can still be replayed and
/// makes a reader for each try.
pub(super) struct ReplayHandle<B> {
    shared: Arc<Shared<B>>,
}

fn lock<B>(shared: &Shared<B>) -> MutexGuard<'_, State<B>> {
    // A panic while the lock was held leaves at worst a partial buffer; the body is still
    // usable for the reader that owns it.
    shared.state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn into_bytes<D: Buf>(mut data: D) -> Bytes {
    // A `Bytes` (hyper's data type) is moved here, not copied.
    data.copy_to_bytes(data.remaining())
}

// === impl ReplayBody ===

impl<B: Body> ReplayBody<B> {
    /// Wraps a body that is sent once and never replayed.
    pub fn once(body: B) -> Self {
        Self {
            kind: Kind::Once(Box::pin(body)),
        }
    }

    /// Wraps a body for replay, buffering at most `limit` bytes. Returns the body for the
    /// first try and the handle to replay it, or no handle when the body's size hint already
    /// says it is larger than `limit`.
    pub(super) fn replayable(body: B, limit: usize) -> (Self, Option<ReplayHandle<B>>) {
        if body.size_hint().lower() > limit as u64 {
            return (Self::once(body), None);
        }
        let shared = Arc::new(Shared {
            was_empty: body.is_end_stream(),
            state: Mutex::new(State {
                chunks: Vec::new(),
                buffered: 0,
                limit,
                capped: false,
                failed: false,
                trailers: None,
                rest: Some(Box::pin(body)),
                generation: 0,
            }),
        });
        let handle = ReplayHandle { shared };
        let first = handle.reader();
        (first, Some(handle))
    }

    /// Whether this body is a reader of a replayable buffer (as opposed to a body sent once).
    pub fn is_replayable(&self) -> bool {
        matches!(self.kind, Kind::Replay(_))
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Once(_) => f.debug_struct("ReplayBody::Once").finish_non_exhaustive(),
            Kind::Replay(r) => f
                .debug_struct("ReplayBody::Replay")
                .field("generation", &r.generation)
                .field("next", &r.next)
                .field("live", &r.live)
                .finish_non_exhaustive(),
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // `ReplayBody` is `Unpin`: the client's body is boxed.
        match &mut self.get_mut().kind {
            Kind::Once(body) => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                Poll::Ready(frame.map(|f| f.map(|f| f.map_data(into_bytes)).map_err(Into::into)))
            }
            Kind::Replay(reader) => reader.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Once(body) => body.is_end_stream(),
            Kind::Replay(reader) => reader.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Once(body) => body.size_hint(),
            Kind::Replay(reader) => reader.size_hint(),
        }
    }
}

// === impl Reader ===

impl<B> Reader<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.shared.was_empty {
            return Poll::Ready(None);
        }
        let mut state = lock(&self.shared);
        if state.generation != self.generation {
            return Poll::Ready(Some(Err(ReplayError::Superseded.into())));
        }
        if !self.live {
            if state.capped {
                return Poll::Ready(Some(Err(ReplayError::Capped.into())));
            }
            if let Some(chunk) = state.chunks.get(self.next) {
                self.next += 1;
                return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
            }
            if state.failed {
                return Poll::Ready(Some(Err(ReplayError::Failed.into())));
            }
            self.live = true;
        }
        let Some(rest) = state.rest.as_mut() else {
            // The client's body has ended: replay its trailers, if any, then end.
            if !self.trailers_sent {
                self.trailers_sent = true;
                if let Some(trailers) = state.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
            }
            return Poll::Ready(None);
        };
        match ready!(rest.as_mut().poll_frame(cx)) {
            None => {
                state.rest = None;
                self.trailers_sent = true;
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                state.failed = true;
                state.rest = None;
                state.chunks = Vec::new();
                Poll::Ready(Some(Err(e.into())))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let data = into_bytes(data);
                    state.buffer(data.clone());
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        // Trailers are the last frame: the body is over.
                        state.trailers = Some(trailers.clone());
                        state.rest = None;
                        self.trailers_sent = true;
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    // A frame of a kind this version of http-body does not know: skip it
                    // rather than fail the request.
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.shared.was_empty {
            return true;
        }
        let state = lock(&self.shared);
        if state.generation != self.generation {
            // Let the reader be polled, so that it reports `Superseded`.
            return false;
        }
        let replayed = self.live || (!state.capped && self.next >= state.chunks.len());
        let trailers_pending = !self.trailers_sent && state.trailers.is_some();
        let rest_done = state.rest.as_ref().is_none_or(|b| b.is_end_stream());
        replayed && !trailers_pending && rest_done
    }

    fn size_hint(&self) -> SizeHint {
        if self.shared.was_empty {
            return SizeHint::with_exact(0);
        }
        let state = lock(&self.shared);
        let pending: u64 = if self.live {
            0
        } else {
            state
                .chunks
                .iter()
                .skip(self.next)
                .map(|c| c.len() as u64)
                .sum()
        };
        match state.rest.as_ref() {
            None => SizeHint::with_exact(pending),
            Some(rest) => {
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(pending + rest.lower());
                if let Some(upper) = rest.upper() {
                    hint.set_upper(pending + upper);
                }
                hint
            }
        }
    }
}

// === impl State ===

impl<B> State<B> {
    fn buffer(&mut self, data: Bytes) {
        if self.capped {
            return;
        }
        self.buffered += data.len();
        if self.buffered > self.limit {
            tracing::debug!(
                limit = self.limit,
                "request body exceeds the retry buffer; the request will not be retried"
            );
            self.capped = true;
            self.chunks = Vec::new();
        } else if !data.is_empty() {
            self.chunks.push(data);
        }
    }
}

// === impl ReplayHandle ===

impl<B> ReplayHandle<B> {
    /// Whether a new reader would replay the whole body.
    pub(super) fn is_replayable(&self) -> bool {
        let state = lock(&self.shared);
        !state.capped && !state.failed
    }

    /// A reader for the next try; every older reader is superseded.
    pub(super) fn reader(&self) -> ReplayBody<B> {
        let mut state = lock(&self.shared);
        state.generation += 1;
        ReplayBody {
            kind: Kind::Replay(Reader {
                shared: self.shared.clone(),
                generation: state.generation,
                next: 0,
                live: false,
                trailers_sent: false,
            }),
        }
    }
}

impl<B> fmt::Debug for ReplayHandle<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayHandle").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty, Full, StreamBody};
    use tokio::sync::mpsc;

    type Chan = StreamBody<tokio_stream_shim::Receiver<Result<Frame<Bytes>, std::io::Error>>>;

    /// A tiny `Stream` over an mpsc receiver, so tests can feed a body chunk by chunk.
    mod tokio_stream_shim {
        use super::*;
        pub(super) struct Receiver<T>(pub(super) mpsc::UnboundedReceiver<T>);
        impl<T> futures_util::Stream for Receiver<T> {
            type Item = T;
            fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
                self.0.poll_recv(cx)
            }
        }
    }

    fn channel() -> (
        mpsc::UnboundedSender<Result<Frame<Bytes>, std::io::Error>>,
        Chan,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, StreamBody::new(tokio_stream_shim::Receiver(rx)))
    }

    async fn collect<B>(body: ReplayBody<B>) -> Result<(Bytes, Option<HeaderMap>), BoxError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok((collected.to_bytes(), trailers))
    }

    #[tokio::test]
    async fn empty_body_is_empty_for_every_reader() {
        let (first, handle) = ReplayBody::replayable(Empty::<Bytes>::new(), 16);
        let handle = handle.unwrap();
        assert!(first.is_end_stream());
        assert_eq!(first.size_hint().exact(), Some(0));
        let second = handle.reader();
        assert!(second.is_end_stream());
        assert!(handle.is_replayable());
    }

    #[tokio::test]
    async fn whole_body_is_replayed() {
        let body = Full::new(Bytes::from_static(b"hello world"));
        let (first, handle) = ReplayBody::replayable(body, 64);
        let handle = handle.unwrap();
        assert_eq!(collect(first).await.unwrap().0, "hello world");
        assert!(handle.is_replayable());
        let second = handle.reader();
        assert_eq!(second.size_hint().exact(), Some(11));
        assert_eq!(collect(second).await.unwrap().0, "hello world");
        assert_eq!(collect(handle.reader()).await.unwrap().0, "hello world");
    }

    #[tokio::test]
    async fn partly_read_body_is_replayed_then_continued() {
        let (tx, body) = channel();
        let (mut first, handle) = ReplayBody::replayable(body, 64);
        let handle = handle.unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"ab")))).unwrap();
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        // The first try gives up after one chunk; the retry replays it, then reads on.
        let second = handle.reader();
        drop(first);
        tx.send(Ok(Frame::data(Bytes::from_static(b"cd")))).unwrap();
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "1".parse().unwrap());
        tx.send(Ok(Frame::trailers(trailers.clone()))).unwrap();
        drop(tx);
        let (data, got_trailers) = collect(second).await.unwrap();
        assert_eq!(data, "abcd");
        assert_eq!(got_trailers, Some(trailers.clone()));
        // A third try replays everything, trailers included, from the buffer.
        let (data, got_trailers) = collect(handle.reader()).await.unwrap();
        assert_eq!(data, "abcd");
        assert_eq!(got_trailers, Some(trailers));
    }

    #[tokio::test]
    async fn superseded_reader_fails() {
        let (tx, body) = channel();
        let (mut first, handle) = ReplayBody::replayable(body, 64);
        let handle = handle.unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"ab")))).unwrap();
        first.frame().await.unwrap().unwrap();
        let _second = handle.reader();
        assert!(!first.is_end_stream());
        let err = first.frame().await.unwrap().unwrap_err();
        assert_eq!(
            err.downcast_ref::<ReplayError>(),
            Some(&ReplayError::Superseded)
        );
    }

    #[tokio::test]
    async fn body_over_the_limit_streams_once_and_is_not_replayable() {
        let (tx, body) = channel();
        let (first, handle) = ReplayBody::replayable(body, 4);
        let handle = handle.unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"abc"))))
            .unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"def"))))
            .unwrap();
        drop(tx);
        // The try that reads it is unharmed.
        assert_eq!(collect(first).await.unwrap().0, "abcdef");
        assert!(!handle.is_replayable());
        let err = collect(handle.reader()).await.unwrap_err();
        assert_eq!(
            err.downcast_ref::<ReplayError>(),
            Some(&ReplayError::Capped)
        );
    }

    #[tokio::test]
    async fn body_at_the_limit_is_replayable() {
        let (first, handle) = ReplayBody::replayable(Full::new(Bytes::from_static(b"abcd")), 4);
        let handle = handle.unwrap();
        collect(first).await.unwrap();
        assert!(handle.is_replayable());
        assert_eq!(collect(handle.reader()).await.unwrap().0, "abcd");
    }

    #[tokio::test]
    async fn size_hint_over_the_limit_is_not_buffered() {
        let (body, handle) = ReplayBody::replayable(Full::new(Bytes::from_static(b"abcde")), 4);
        assert!(handle.is_none());
        assert!(!body.is_replayable());
        assert_eq!(collect(body).await.unwrap().0, "abcde");
    }

    #[tokio::test]
    async fn failed_body_is_not_replayable() {
        let (tx, body) = channel();
        let (first, handle) = ReplayBody::replayable(body, 64);
        let handle = handle.unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"ab")))).unwrap();
        tx.send(Err(std::io::Error::other("client went away")))
            .unwrap();
        let err = collect(first).await.unwrap_err();
        assert!(err.to_string().contains("client went away"));
        assert!(!handle.is_replayable());
    }

    #[tokio::test]
    async fn once_passes_through() {
        let body = ReplayBody::once(Full::new(Bytes::from_static(b"x")));
        assert!(!body.is_replayable());
        assert_eq!(body.size_hint().exact(), Some(1));
        assert_eq!(collect(body).await.unwrap().0, "x");
    }
}
