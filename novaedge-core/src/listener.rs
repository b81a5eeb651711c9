//! Listening sockets and the client connections they accept.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::server::TlsStream;

use crate::conn::{ConnState, GuardedIo};
use crate::engine::Shared;
use crate::proxy::ProxyService;
use crate::runtime::SocketKey;
use crate::tls::Session;

/// Binds a listening socket the way a proxy wants it: `SO_REUSEADDR` so a restart does not wait
/// for TIME_WAIT, non-blocking, and a deep accept queue.
pub(crate) fn bind(addr: SocketAddr, backlog: i32) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
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
        tokio::spawn(accept_loop(
            socket.clone(),
            local_addr,
            Arc::new(key),
            shared,
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
        let (tls, open) = {
            let runtime = shared.runtime.load();
            let listener = runtime.listener(&key);
            let open = shared.observe.connection_opened(listener);
            (listener.and_then(|l| l.tls.clone()), open)
        };
        let service = ProxyService {
            shared: shared.clone(),
            key: key.clone(),
            peer,
            local,
            session: None,
            conn: ConnState::new(),
        };
        let conn_stop = stop.clone();
        let cut = shared.cut.clone();
        let handshake_timeout = shared.config.tls_handshake_timeout;
        let http = shared.http.clone();
        shared.tasks.spawn(async move {
            let _open = open;
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            // A future is as large as its largest state, for as long as it lives. Each phase
            // is boxed on its own, so that a connection holds only what its current phase
            // needs: a cleartext one no room for TLS, a TLS one none for the handshake once
            // done. This is most of what an idle connection costs (12.9 KB were 3.6 KB).
            let serve: Pin<Box<dyn Future<Output = ()> + Send>> = match tls {
                None => {
                    let io = http1_io(stream, &service);
                    Box::pin(serve_connection(http, io, service, conn_stop))
                }
                Some(config) => Box::pin(async move {
                    let handshake =
                        Box::pin(handshake(config, stream, service, http, handshake_timeout));
                    let Some((stream, service, http)) = handshake.await else {
                        return;
                    };
                    let io = if http.is_http1_available() {
                        http1_io(stream, &service)
                    } else {
                        GuardedIo::http2(stream, service.conn.clone())
                    };
                    Box::pin(serve_connection(http, io, service, conn_stop)).await;
                }),
            };
            if cut.run_until_cancelled(serve).await.is_none() {
                tracing::debug!(%peer, "client connection cut at the shutdown deadline");
            }
        });
    }
    tracing::info!(%local, "listener stopped accepting");
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

/// The server side of a TLS handshake, bounded in time. On success, the HTTP version is the
/// one ALPN agreed on (HTTP/1.1 without ALPN), and the service knows the session.
async fn handshake(
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    mut service: ProxyService,
    http: auto::Builder<TokioExecutor>,
    timeout: Duration,
) -> Option<(
    TlsStream<TcpStream>,
    ProxyService,
    auto::Builder<TokioExecutor>,
)> {
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
    let http = match conn.alpn_protocol() {
        Some(b"h2") => http.http2_only(),
        _ => http.http1_only(),
    };
    service.session = Some(Arc::new(Session::of(conn)));
    Some((stream, service, http))
}

/// Serves one client connection until it ends: it closes, the listener stops (graceful
/// shutdown), or the connection winds down (idle for the idle timeout, or its last allowed
/// request on HTTP/2; graceful shutdown too).
async fn serve_connection<I>(
    builder: auto::Builder<TokioExecutor>,
    io: GuardedIo<I>,
    service: ProxyService,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = service.peer;
    let conn_state = service.conn.clone();
    let idle = service.shared.config.idle_timeout;
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stopped(&mut stop) => {
            // HTTP/1.1: close after the request in flight; HTTP/2: GOAWAY, finish open streams.
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
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
}

/// Resolves once the listener is told to stop, or is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here, not across the caller's awaits.
    let _ = stop.wait_for(|stopped| *stopped).await.map(drop);
}
