//! What the proxy keeps per client connection to bound it in time and in requests.
//!
//! - [`GuardedIo`] sits between the socket (or TLS stream) and hyper. On HTTP/1.1 it runs the
//!   [`Scanner`] over the bytes read (request smuggling checks, see [`crate::framing`]) and
//!   enforces the header read timeout: the first head must be complete within it from the
//!   connection's start, later heads from their first byte. A client too slow fails the
//!   connection's read, and hyper closes it without an answer, as it does for its own header
//!   timeout. (hyper's own timer also runs while a keep-alive connection waits for its next
//!   request, which would make it the idle timeout too; it is off.) It also gives back bytes
//!   read before hyper had the connection ([`GuardedIo::replay`]), and keeps the stream open
//!   when hyper ends a connection that is being parked (see `listener::serve_http1`).
//! - [`ConnState`] counts the connection's requests and those in flight; a request's
//!   [`RequestGuard`] rides in its response body ([`ConnBody`]) and leaves when the body ends.
//!   [`ConnState::idle`] resolves when the connection has had nothing in flight for a while:
//!   an HTTP/1.1 connection is then parked (after the park time) or closed between requests
//!   (after the idle timeout). [`ConnState::wind_down`], for HTTP/2, also resolves when the
//!   connection is told to drain (its last allowed request); the connection then sends
//!   GOAWAY and finishes its open streams. A client that keeps the connection from ending
//!   (an HTTP/2 client that never acknowledges the GOAWAY's PING) is dropped once it has had
//!   nothing in flight for another idle timeout.

use bytes::Bytes;
use http::HeaderValue;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::framing::{Refusal, Refused, Scanner};
use crate::observe::{ClientText, ObservedBody};

/// The longest [`ConnState::idle`] waits between looks at a connection busy with requests,
/// unless its `idle` is longer.
const BUSY_RECHECK: Duration = Duration::from_secs(5);

/// The state one client connection shares between its I/O, its requests and the task serving
/// it.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// The origin of `last_active`.
    start: Instant,
    /// Requests begun on the connection.
    requests: AtomicU64,
    /// Requests whose response has not ended.
    in_flight: AtomicUsize,
    /// When a request last began or ended, in milliseconds since `start`.
    last_active: AtomicU64,
    /// The HTTP/1.1 head the scanner refused.
    refused: OnceLock<Refused>,
    /// Told when the connection should stop taking requests.
    drain: Notify,
    /// Set while the connection's HTTP/1.1 state is being dropped to park it: hyper's closing
    /// shutdown of the stream is then skipped, since the stream lives on.
    parking: AtomicBool,
    /// The client's address as access log lines show it, made by the first line.
    pub(crate) client_text: OnceLock<ClientText>,
    /// The client's address as `X-Forwarded-For` gives it, made by the first request.
    pub(crate) forwarded_for: OnceLock<HeaderValue>,
}

impl ConnState {
    pub(crate) fn new() -> Arc<Self> {
        Self::resumed(0)
    }

    /// The state of a connection that has begun `requests` requests before: one that comes
    /// back from the parking lot, where it kept only that count.
    pub(crate) fn resumed(requests: u64) -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            requests: AtomicU64::new(requests),
            in_flight: AtomicUsize::new(0),
            last_active: AtomicU64::new(0),
            refused: OnceLock::new(),
            drain: Notify::new(),
            parking: AtomicBool::new(false),
            client_text: OnceLock::new(),
            forwarded_for: OnceLock::new(),
        })
    }

    /// Counts a request beginning: its number on the connection (from 1), and the guard that
    /// keeps it in flight.
    pub(crate) fn request_started(self: &Arc<Self>) -> (u64, RequestGuard) {
        let number = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        (number, RequestGuard { conn: self.clone() })
    }

    /// Requests begun on the connection.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// While set, the stream's shutdown is skipped: see [`GuardedIo::poll_shutdown`].
    pub(crate) fn set_parking(&self, parking: bool) {
        self.parking.store(parking, Ordering::Relaxed);
    }

    /// Why request `number` must be refused, if the scanner refused its head.
    pub(crate) fn refusal(&self, number: u64) -> Option<Refusal> {
        match self.refused.get() {
            Some(&(n, refusal)) if n == number => Some(refusal),
            _ => None,
        }
    }

    /// Asks the task serving the connection to shut it down gracefully.
    pub(crate) fn drain(&self) {
        self.drain.notify_one();
    }

    /// Resolves when the connection should shut down gracefully: it was told to drain, or it
    /// had no request in flight for `idle`.
    pub(crate) async fn wind_down(&self, idle: Duration) {
        tokio::select! {
            () = self.drain.notified() => {}
            () = self.idle(idle) => {}
        }
    }

    /// Resolves once the connection has had no request in flight for `idle`, counted from the
    /// last time a request began or ended, or the connection was [touched](Self::touch).
    ///
    /// While requests are in flight it looks again after `idle`, then twice as long each time
    /// up to [`BUSY_RECHECK`] (or `idle`, if longer): a short `idle` (the park time) does not
    /// wake a connection busy with a long request several times a second.
    pub(crate) async fn idle(&self, idle: Duration) {
        let mut deadline = self.last_active() + idle;
        let mut busy_wait = idle;
        loop {
            tokio::time::sleep_until(deadline).await;
            let now = Instant::now();
            let idle_until = self.last_active() + idle;
            deadline = if self.in_flight.load(Ordering::Acquire) > 0 {
                // Busy: look again in a while, not at once.
                let wait = busy_wait;
                busy_wait = (busy_wait * 2).min(BUSY_RECHECK.max(idle));
                now + wait
            } else if idle_until <= now {
                return;
            } else {
                idle_until
            };
        }
    }

    /// Counts now as activity: [`idle`](Self::idle) starts over.
    pub(crate) fn touch(&self) {
        let since = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active.store(since, Ordering::Release);
    }

    /// When the connection will have had nothing in flight for `idle`, if nothing happens
    /// until then (see [`idle`](Self::idle)).
    pub(crate) fn idle_deadline(&self, idle: Duration) -> Instant {
        self.last_active() + idle
    }

    /// How long since the connection was last active (see [`idle`](Self::idle)).
    pub(crate) fn quiet_for(&self) -> Duration {
        self.last_active().elapsed()
    }

    fn last_active(&self) -> Instant {
        self.start + Duration::from_millis(self.last_active.load(Ordering::Acquire))
    }
}

/// Keeps a request counted as in flight on its connection until dropped.
#[derive(Debug)]
pub(crate) struct RequestGuard {
    conn: Arc<ConnState>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.conn.touch();
        self.conn.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// A response body that keeps its request in flight on the client connection until it ends
/// (or the client goes away).
pub(crate) type ConnBody = crate::body::Holding<ObservedBody, RequestGuard>;

/// The error of a client connection's read when its request head took too long.
#[derive(Debug, thiserror::Error)]
#[error("request head not received within {0:?}")]
pub(crate) struct HeadTimeout(Duration);

pin_project_lite::pin_project! {
    /// A client connection's byte stream, as hyper reads it: see the module docs.
    #[derive(Debug)]
    pub(crate) struct GuardedIo<I> {
        #[pin]
        inner: I,
        conn: Arc<ConnState>,
        // `None` on connections that speak HTTP/2 only, and once the scanner stopped.
        scanner: Option<Box<Scanner>>,
        head_timeout: Duration,
        // The header read deadline, when `armed`; kept to be reset rather than reallocated,
        // except while parked.
        deadline: Option<Pin<Box<Sleep>>>,
        armed: bool,
        // Bytes read (and scanned) before, given back before anything new is read: the
        // first bytes of a connection, read to tell HTTP/1.1 from HTTP/2, or those a parked
        // connection woke with, or a request hyper had begun to read when it was parked.
        replay: Bytes,
    }
}

impl<I> GuardedIo<I> {
    /// A connection that may speak HTTP/1.1: its scanner follows the requests and the first
    /// head's deadline starts now. `max_head` and `max_headers` are the request head limits.
    pub(crate) fn http1(
        inner: I,
        conn: Arc<ConnState>,
        head_timeout: Duration,
        max_head: usize,
        max_headers: usize,
    ) -> Self {
        Self {
            inner,
            conn,
            scanner: Some(Box::new(Scanner::new(max_head, max_headers))),
            head_timeout,
            deadline: Some(Box::pin(tokio::time::sleep(head_timeout))),
            armed: true,
            replay: Bytes::new(),
        }
    }

    /// A connection that speaks HTTP/2 only (ALPN `h2`): its bytes are hyper's to judge.
    pub(crate) fn http2(inner: I, conn: Arc<ConnState>) -> Self {
        Self {
            inner,
            conn,
            scanner: None,
            head_timeout: Duration::ZERO,
            deadline: None,
            armed: false,
            replay: Bytes::new(),
        }
    }

    /// A connection back from the parking lot, with the scanner where it was (`heads` heads
    /// followed; `None` if it had stopped): like a parked one, no deadline until the next head
    /// begins. `max_head` and `max_headers` are the request head limits.
    pub(crate) fn resumed(
        inner: I,
        conn: Arc<ConnState>,
        head_timeout: Duration,
        max_head: usize,
        max_headers: usize,
        heads: Option<u64>,
    ) -> Self {
        Self {
            inner,
            conn,
            scanner: heads.map(|heads| Box::new(Scanner::resume(max_head, max_headers, heads))),
            head_timeout,
            deadline: None,
            armed: false,
            replay: Bytes::new(),
        }
    }

    /// Gives `bytes`, read from this stream before, to the next reads.
    pub(crate) fn replay(&mut self, bytes: Bytes) {
        debug_assert!(self.replay.is_empty(), "replayed bytes would be lost");
        self.replay = bytes;
    }

    /// Lets go of what the stream needs only while a head is being read, when none is.
    pub(crate) fn park(&mut self) {
        if !self.armed {
            self.deadline = None;
        }
    }
}

/// A client connection's stream: TCP, or TLS over it.
pub(crate) trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether a stream of this kind may wait in the parking lot at all.
    const PARKS: bool;
    /// What `io` can be reduced to while it waits in the parking lot: its TCP stream and the
    /// heads its scanner followed (see [`GuardedIo::into_parked`]); `io` back when it cannot
    /// be (TLS, whose session lives above the socket, or a stream in the middle of a request).
    fn into_parked(io: GuardedIo<Self>) -> Result<(TcpStream, Option<u64>), GuardedIo<Self>>
    where
        Self: Sized;
}

impl ClientStream for TcpStream {
    const PARKS: bool = true;
    fn into_parked(io: GuardedIo<Self>) -> Result<(TcpStream, Option<u64>), GuardedIo<Self>> {
        io.into_parked()
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    const PARKS: bool = false;
    fn into_parked(io: GuardedIo<Self>) -> Result<(TcpStream, Option<u64>), GuardedIo<Self>> {
        Err(io)
    }
}

impl GuardedIo<TcpStream> {
    /// The TCP stream, and the heads the scanner followed (`None` if it had stopped), when
    /// all the rest can be made again: nothing read and not given to hyper, no head begun,
    /// and the scanner between heads. Otherwise the stream back as it was.
    pub(crate) fn into_parked(self) -> Result<(TcpStream, Option<u64>), Self> {
        let heads = match &self.scanner {
            None => None,
            Some(scanner) => match scanner.between_heads() {
                Some(heads) => Some(heads),
                None => return Err(self),
            },
        };
        if self.armed || !self.replay.is_empty() {
            return Err(self);
        }
        Ok((self.inner, heads))
    }
}

impl<I: AsyncRead> AsyncRead for GuardedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay.split_to(n));
            return Poll::Ready(Ok(()));
        }
        if *this.armed
            && let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            *this.armed = false;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                HeadTimeout(*this.head_timeout),
            )));
        }
        let before = buf.filled().len();
        ready!(this.inner.poll_read(cx, buf))?;
        let read = &buf.filled()[before..];
        if read.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let Some(scanner) = this.scanner.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        if let Some(refused) = scanner.feed(read) {
            let _ = this.conn.refused.set(refused);
        }
        let in_head = scanner.in_head();
        if scanner.is_off() {
            *this.scanner = None;
        }
        if in_head != *this.armed {
            *this.armed = in_head;
            if in_head {
                let at = Instant::now() + *this.head_timeout;
                match this.deadline.as_mut() {
                    Some(deadline) => deadline.as_mut().reset(at),
                    None => *this.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite> AsyncWrite for GuardedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    /// Shuts the stream down, unless the connection is [parking](ConnState::set_parking): then
    /// it is only flushed, and stays open.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.conn.parking.load(Ordering::Relaxed) {
            this.inner.poll_flush(cx)
        } else {
            this.inner.poll_shutdown(cx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_times_out_and_a_prompt_one_does_not() {
        let (client, server) = tokio::io::duplex(1024);
        let conn = ConnState::new();
        let mut io = GuardedIo::http1(server, conn, Duration::from_secs(10), 8192, 100);
        let mut client = client;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0; 1024];
        assert!(io.read(&mut buf).await.unwrap() > 0);
        // Idle between requests: no deadline.
        tokio::time::advance(Duration::from_secs(60)).await;
        client.write_all(b"GET / HT").await.unwrap();
        assert!(io.read(&mut buf).await.unwrap() > 0);
        // The second head began: it has 10 s.
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(Instant::now() >= io.conn.start + Duration::from_secs(70));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_head_has_its_time_from_the_start() {
        let (_client, server) = tokio::io::duplex(1024);
        let mut io = GuardedIo::http1(server, ConnState::new(), Duration::from_secs(5), 8192, 100);
        let mut buf = [0; 16];
        let started = Instant::now();
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn winds_down_after_idle_time_with_nothing_in_flight() {
        let conn = ConnState::new();
        let (_, guard) = conn.request_started();
        let idle = Duration::from_secs(60);
        let wind_down = conn.wind_down(idle);
        tokio::pin!(wind_down);
        // In flight for two idle periods: no wind-down.
        assert!(
            tokio::time::timeout(2 * idle, wind_down.as_mut())
                .await
                .is_err()
        );
        let ended = Instant::now();
        drop(guard);
        wind_down.await;
        assert_eq!(ended.elapsed(), idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_idle_ends_within_its_busy_recheck_after_a_long_request() {
        let conn = ConnState::new();
        let (_, guard) = conn.request_started();
        let idle = Duration::from_millis(250);
        let waiting = conn.idle(idle);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_secs(30), waiting.as_mut())
                .await
                .is_err()
        );
        let ended = Instant::now();
        drop(guard);
        waiting.await;
        let after = ended.elapsed();
        assert!(after >= idle && after <= BUSY_RECHECK + idle, "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn drain_winds_down_at_once() {
        let conn = ConnState::new();
        conn.drain();
        tokio::time::timeout(
            Duration::from_secs(1),
            conn.wind_down(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    }
}
