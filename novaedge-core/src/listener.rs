//! Listening sockets and the client connections they accept.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use socket2::{Domain, SockRef, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::server::TlsStream;

use crate::conn::{ClientStream, ConnState, GuardedIo};
use crate::engine::Shared;
use crate::lot::{Lot, Parked};
use crate::observe::ConnectionGuard;
use crate::proxy::ProxyService;
use crate::runtime::SocketKey;
use crate::tls::Session;

/// Binds a listening socket the way a proxy wants it: `SO_REUSEADDR` so a restart does not wait
/// for TIME_WAIT, non-blocking, and a deep accept queue.
pub(crate) fn bind(addr: SocketAddr, backlog: i32) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// A running listener: its accept loop stops when `stop` is dropped or set.
#[derive(Debug)]
pub(crate) struct ListenerHandle {
    pub(crate) name: String,
    pub(crate) local_addr: SocketAddr,
    /// Shared with the accept loop, so that [`stop`](Self::stop) can close the socket itself
    /// instead of leaving that to the loop's next turn on some worker thread.
    socket: SharedSocket,
    stop: watch::Sender<bool>,
}

/// The listening socket, `None` once closed.
type SharedSocket = Arc<Mutex<Option<TcpListener>>>;

impl ListenerHandle {
    /// Starts accepting on `socket`. Must be called within a tokio runtime.
    pub(crate) fn start(
        name: String,
        socket: std::net::TcpListener,
        key: SocketKey,
        shared: Arc<Shared>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::from_std(socket)?;
        let local_addr = listener.local_addr()?;
        let socket = Arc::new(Mutex::new(Some(listener)));
        let (stop, stopped) = watch::channel(false);
        let key = Arc::new(key);
        // Without a lot, quiet connections wait in their own tasks.
        let lot = Lot::start(shared.clone(), key.clone(), local_addr, stopped.clone())
            .inspect_err(|e| {
                tracing::warn!(%local_addr, error = %e, "no parking lot: quiet connections keep their tasks");
            })
            .ok();
        tokio::spawn(accept_loop(
            socket.clone(),
            local_addr,
            key,
            shared,
            lot,
            stopped,
        ));
        Ok(Self {
            name,
            local_addr,
            socket,
            stop,
        })
    }

    /// Stops accepting; connections already accepted finish their requests and close.
    ///
    /// The socket is closed before this returns: from then on the port refuses connections
    /// (none is left in the accept queue, unserved) and a following `apply` can bind it again.
    pub(crate) fn stop(&self) {
        self.stop.send_replace(true);
        drop(crate::sync::lock(&self.socket).take());
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    socket: SharedSocket,
    local: SocketAddr,
    key: Arc<SocketKey>,
    shared: Arc<Shared>,
    lot: Option<Lot>,
    mut stop: watch::Receiver<bool>,
) {
    // The lock is held only while polling, which never blocks.
    let accept = || {
        poll_fn(|cx| match &*crate::sync::lock(&socket) {
            Some(listener) => listener.poll_accept(cx).map(Some),
            None => Poll::Ready(None),
        })
    };
    let connections = shared
        .config
        .max_connections_per_listener
        .map(|max| Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))));
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            accepted = accept() => match accepted {
                // Closed by `stop`, which has set the signal too.
                None => break,
                Some(Ok(conn)) => conn,
                Some(Err(e)) => {
                    // Out of file descriptors and similar: back off instead of spinning; the
                    // kernel keeps queueing connections meanwhile.
                    tracing::warn!(%local, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Over the limit, the connection is refused at once rather than left in the accept
        // queue, where its client would wait without knowing: closed with a reset, which also
        // leaves no TIME_WAIT behind on the proxy's side.
        let permit = match &connections {
            None => None,
            Some(connections) => match connections.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    tracing::debug!(%local, %peer, "connection limit reached, refusing");
                    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    drop(stream);
                    continue;
                }
            },
        };
        // The TLS configuration of the runtime the connection is accepted under: a rotated
        // certificate serves from the next connection on.
        let (tls, held) = {
            let runtime = shared.runtime.load();
            let listener = runtime.listener(&key);
            let open = shared.observe.connection_opened(listener);
            (listener.and_then(|l| l.tls.clone()), Held { open, permit })
        };
        let service = ProxyService {
            shared: shared.clone(),
            key: key.clone(),
            peer,
            local,
            session: None,
            conn: ConnState::new(),
        };
        let _ = stream.set_nodelay(true);
        let conn_stop = stop.clone();
        // A future is as large as its largest state, for as long as it lives, and keeps room
        // for what it captured even once moved on. So each phase is boxed on its own, made
        // here rather than captured by the task: a connection holds only what its current
        // phase needs (a cleartext one no room for TLS, a TLS one none for the handshake once
        // done, a parked one none for hyper).
        let serve: Serving = match tls {
            None => {
                let io = http1_io(stream, &service);
                let lot = lot.clone();
                serve_connection(io, service, conn_stop, Http::Either, held, lot)
            }
            Some(config) => {
                let timeout = shared.config.tls_handshake_timeout;
                let handshake = Box::pin(handshake(config, stream, service, timeout));
                Box::pin(async move {
                    let Some((stream, service, protocol)) = handshake.await else {
                        return Ok(());
                    };
                    let io = match protocol {
                        Http::Http2 => GuardedIo::http2(stream, service.conn.clone()),
                        _ => http1_io(stream, &service),
                    };
                    serve_connection(io, service, conn_stop, protocol, held, None).await
                })
            }
        };
        spawn_connection(&shared, peer, serve);
    }
    tracing::info!(%local, "listener stopped accepting");
}

/// What a client connection holds for as long as it is open, whichever task serves it and
/// while it is parked: its place under the listener's connection limit and its count in the
/// metrics.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) open: Option<ConnectionGuard>,
    #[expect(dead_code, reason = "held for its drop, which gives the place back")]
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

/// Serves a client connection with a task of its own, which the engine's shutdown waits for
/// and, past its deadline, cuts.
fn spawn_connection(shared: &Shared, peer: SocketAddr, serve: Serving) {
    let cut = shared.cut.clone();
    shared.tasks.spawn(async move {
        match cut.run_until_cancelled(serve).await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::debug!(%peer, error = %e, "client connection ended with an error");
            }
            None => tracing::debug!(%peer, "client connection cut at the shutdown deadline"),
        }
    });
}

/// Serves again a connection whose client sent something (or closed) while it was in the
/// parking lot.
pub(crate) fn resume(
    io: GuardedIo<TcpStream>,
    service: ProxyService,
    stop: watch::Receiver<bool>,
    held: Held,
    lot: Lot,
) {
    let peer = service.peer;
    let shared = service.shared.clone();
    let serve = Box::pin(serve_http1(io, service, stop, false, held, Some(lot)));
    spawn_connection(&shared, peer, serve);
}

/// The guarded stream of a connection that may speak HTTP/1.1.
fn http1_io<I>(stream: I, service: &ProxyService) -> GuardedIo<I> {
    let config = &service.shared.config;
    GuardedIo::http1(
        stream,
        service.conn.clone(),
        config.header_read_timeout,
        config.max_request_headers_bytes,
        config.max_request_headers,
    )
}

/// The HTTP versions a client connection may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Http {
    /// Cleartext: HTTP/2 when the connection opens with HTTP/2's preface (prior knowledge),
    /// HTTP/1.1 otherwise.
    Either,
    /// TLS without ALPN `h2`.
    Http1,
    /// TLS with ALPN `h2`.
    Http2,
}

/// What an HTTP/2 connection opens with (RFC 9113 section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The server side of a TLS handshake, bounded in time. On success, the HTTP version is the
/// one ALPN agreed on (HTTP/1.1 without ALPN), and the service knows the session.
async fn handshake(
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    mut service: ProxyService,
    timeout: Duration,
) -> Option<(TlsStream<TcpStream>, ProxyService, Http)> {
    let peer = service.peer;
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    let stream = match tokio::time::timeout(timeout, accept).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, ?timeout, "TLS handshake timed out");
            return None;
        }
    };
    let (_, conn) = stream.get_ref();
    let protocol = match conn.alpn_protocol() {
        Some(b"h2") => Http::Http2,
        _ => Http::Http1,
    };
    service.session = Some(Arc::new(Session::of(conn)));
    Some((stream, service, protocol))
}

/// What serves one client connection, boxed.
type Serving = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// Serves one client connection until it ends: it closes, the listener stops (graceful
/// shutdown), or the connection winds down (idle for the idle timeout, or its last allowed
/// request on HTTP/2; graceful shutdown too), or, cleartext HTTP/1.1, goes to `lot` to wait.
///
/// The futures here are written as functions returning `async move` blocks: an `async fn`
/// keeps a second copy of its arguments for as long as it runs, and a connection's future
/// lives as long as the connection. This one is not async at all: an async block would keep
/// room for the stream and service it hands on to the phase it awaits.
fn serve_connection<I: ClientStream>(
    io: GuardedIo<I>,
    service: ProxyService,
    stop: watch::Receiver<bool>,
    protocol: Http,
    held: Held,
    lot: Option<Lot>,
) -> Serving {
    match protocol {
        Http::Http2 => Box::pin(serve_http2(io, service, stop, held)),
        Http::Http1 => Box::pin(serve_http1(io, service, stop, false, held, lot)),
        Http::Either => Box::pin(serve_http1(io, service, stop, true, held, lot)),
    }
}

/// Waits for the next bytes of a connection that hyper does not hold: its first ones, or
/// those that wake it once parked. With `sniff`, reads until they tell HTTP/2's preface from
/// anything else. `None` if the connection closed or failed (the header read timeout
/// included), the listener stopped, or the connection stayed idle for `idle`.
async fn wake<I: AsyncRead + Unpin>(
    io: &mut GuardedIo<I>,
    conn: &ConnState,
    stop: &mut watch::Receiver<bool>,
    idle: Duration,
    sniff: bool,
) -> Option<Bytes> {
    let read = async {
        let mut buf = [0; PREFACE.len()];
        let mut len = 0;
        loop {
            let n = io.read(&mut buf[len..]).await?;
            len += n;
            let undecided = sniff && len < PREFACE.len() && buf[..len] == PREFACE[..len];
            if n == 0 || !undecided {
                return std::io::Result::Ok(Bytes::copy_from_slice(&buf[..len]));
            }
        }
    };
    tokio::select! {
        read = read => match read {
            Ok(bytes) if bytes.is_empty() => None,
            Ok(bytes) => Some(bytes),
            Err(e) => {
                tracing::debug!(error = %e, "client connection failed while idle");
                None
            }
        },
        _ = stopped(stop) => None,
        () = conn.idle(idle) => None,
    }
}

/// Why an HTTP/1.1 connection is taken from hyper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quiet {
    /// Nothing in flight for the park time after hyper answered at least one request: hyper
    /// is waiting for the next one, or finishing the last (HTTP/1.1 ends it with no
    /// `Connection: close`, the response having gone out).
    Park,
    /// Nothing in flight for the idle timeout, before hyper answered a request (a head begun
    /// and never finished, when the header read timeout is longer).
    Idle,
}

/// Resolves when an HTTP/1.1 connection that has begun `served` requests before hyper took it
/// should be taken from hyper.
async fn quiet(conn: &ConnState, served: u64, park_after: Duration, idle: Duration) -> Quiet {
    let park_after = park_after.min(idle);
    loop {
        conn.idle(park_after).await;
        if conn.requests() > served {
            return Quiet::Park;
        }
        if conn.quiet_for() >= idle {
            return Quiet::Idle;
        }
        // A head begun and not finished: look again later.
        tokio::time::sleep(park_after).await;
    }
}

/// How hyper's turn with an HTTP/1.1 connection ended.
enum Turn<I> {
    /// The connection is done (closed, failed, upgraded, or shut down).
    Ended(hyper::Result<()>),
    /// Parked: the stream and service back, and what hyper had read and not handled.
    Parked(GuardedIo<I>, ProxyService, Bytes),
}

/// Serves an HTTP/1.1 connection: hyper while requests come, parked while they do not. With
/// `sniff`, a cleartext connection that opens with HTTP/2's preface is served as HTTP/2.
///
/// A parked connection is the stream, the service and what waits for the client: hyper's
/// state and buffers (about 17 KB), made when the client sends, are dropped once the
/// connection has been quiet for the park time, with a request hyper had begun to read given
/// back to the next ones. With a `lot` (cleartext), the connection then waits there once it has
/// been quiet for the lot time too, and this task ends; the first wait, for the connection's
/// first bytes or those that woke it in the lot, is this task's.
#[allow(clippy::manual_async_fn)] // Not `async fn`: see `serve_connection`.
fn serve_http1<I: ClientStream>(
    mut io: GuardedIo<I>,
    mut service: ProxyService,
    mut stop: watch::Receiver<bool>,
    mut sniff: bool,
    held: Held,
    lot: Option<Lot>,
) -> impl Future<Output = hyper::Result<()>> + Send {
    async move {
        let conn = service.conn.clone();
        let idle = service.shared.config.idle_timeout;
        let lot_after = service.shared.config.lot_after;
        let mut unread = Bytes::new();
        let mut served = false;
        loop {
            if unread.is_empty() {
                // Even empty, what hyper left unread holds its whole read buffer.
                drop(std::mem::take(&mut unread));
                io.park();
                let parked = held.open.as_ref().map(ConnectionGuard::parked);
                let woke = 'woke: {
                    if let Some(lot) = lot.as_ref().filter(|_| served && I::PARKS) {
                        // A while in this task first: a client that pauses briefly between
                        // requests wakes it more cheaply than one from the lot. The wait ends
                        // without reading when the time is up (one read: no preface to sniff
                        // once a request was served).
                        let waiting = wake(&mut io, &conn, &mut stop, idle, false);
                        if let Ok(woke) = tokio::time::timeout(lot_after, waiting).await {
                            break 'woke woke;
                        }
                        match I::into_parked(io) {
                            Ok((stream, heads)) => {
                                drop(parked);
                                lot.park(Parked {
                                    stream,
                                    requests: conn.requests(),
                                    heads,
                                    held,
                                    idle_until: conn.idle_deadline(idle),
                                });
                                return Ok(());
                            }
                            Err(back) => io = back,
                        }
                    }
                    wake(&mut io, &conn, &mut stop, idle, sniff).await
                };
                drop(parked);
                let Some(bytes) = woke else {
                    return Ok(());
                };
                // Activity: the park time starts over, and hyper has its request before then.
                conn.touch();
                unread = bytes;
            }
            if std::mem::take(&mut sniff) && unread[..] == PREFACE[..] {
                io.replay(unread);
                return Box::pin(serve_http2(io, service, stop, held)).await;
            }
            io.replay(std::mem::take(&mut unread));
            // Boxed: hyper's connection, and what waits beside it, only while it serves.
            match Box::pin(http1_turn(io, service, &mut stop)).await {
                Turn::Ended(result) => return result,
                Turn::Parked(parked_io, parked_service, rest) => {
                    (io, service, unread) = (parked_io, parked_service, rest);
                    served = true;
                }
            }
        }
    }
}

/// Gives an HTTP/1.1 connection to hyper until it ends or is parked (see [`serve_http1`]).
#[allow(clippy::manual_async_fn)] // Not `async fn`: see `serve_connection`.
fn http1_turn<'a, I>(
    io: GuardedIo<I>,
    service: ProxyService,
    stop: &'a mut watch::Receiver<bool>,
) -> impl Future<Output = Turn<I>> + Send + 'a
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        let peer = service.peer;
        let shared = service.shared.clone();
        let conn = service.conn.clone();
        let (idle, park_after) = (shared.config.idle_timeout, shared.config.park_after);
        let served = conn.requests();
        let mut http = shared
            .http
            .http1
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let quiet = tokio::select! {
            result = &mut http => return Turn::Ended(result),
            _ = stopped(stop) => {
                // Closes after the request in flight, if any.
                Pin::new(&mut http).graceful_shutdown();
                return Turn::Ended(http.await);
            }
            quiet = quiet(&conn, served, park_after, idle) => quiet,
        };
        // Idle, hyper closes at once; finishing a response, once it is out.
        conn.set_parking(quiet == Quiet::Park);
        if quiet == Quiet::Idle {
            tracing::trace!(%peer, "client connection idle, closing");
            conn.touch();
        }
        Pin::new(&mut http).graceful_shutdown();
        let ended = tokio::select! {
            result = &mut http => result,
            () = conn.idle(idle) => {
                tracing::debug!(%peer, "client connection did not end after its last response, dropped");
                return Turn::Ended(Ok(()));
            }
        };
        conn.set_parking(false);
        if quiet == Quiet::Idle || ended.is_err() {
            return Turn::Ended(ended);
        }
        // `None`: upgraded, and the tunnel has the stream.
        match http.into_parts() {
            Some(parts) => Turn::Parked(parts.io.into_inner(), parts.service, parts.read_buf),
            None => Turn::Ended(Ok(())),
        }
    }
}

/// Serves an HTTP/2 connection.
async fn serve_http2<I>(
    io: GuardedIo<I>,
    service: ProxyService,
    mut stop: watch::Receiver<bool>,
    held: Held,
) -> hyper::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _held = held;
    let peer = service.peer;
    let shared = service.shared.clone();
    let conn_state = service.conn.clone();
    let idle = shared.config.idle_timeout;
    let conn = shared
        .http
        .http2
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => result,
        _ = stopped(&mut stop) => {
            // GOAWAY, then the open streams finish.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = conn_state.wind_down(idle) => {
            tracing::trace!(%peer, "client connection idle or done, closing");
            conn.as_mut().graceful_shutdown();
            // HTTP/2 ends the connection once the client acknowledges the GOAWAY's PING and
            // its streams are done; a client that never does is dropped.
            conn_state.touch();
            tokio::select! {
                result = conn.as_mut() => result,
                () = conn_state.idle(idle) => {
                    tracing::debug!(%peer, "client connection did not end after GOAWAY, dropped");
                    Ok(())
                }
            }
        }
    }
}

/// Resolves once the listener is told to stop, or is gone.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here, not across the caller's awaits.
    let _ = stop.wait_for(|stopped| *stopped).await.map(drop);
}
