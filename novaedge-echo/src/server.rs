//! The accept loop, one task per connection, and the service that sends each
//! request to the gRPC, WebSocket or plain HTTP handler.
//!
//! Connection tasks live in a `JoinSet` owned by the accept loop, so dropping
//! the loop (as `EchoServer`'s `Drop` does by aborting its task) drops every
//! connection with it. A WebSocket is served by the task of the connection it
//! was upgraded from, for the same reason.
//!
//! Shutdown is announced on a `watch` channel: a sent value asks for a
//! graceful close, and a dropped sender means the same, so no connection
//! outlives the loop.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderName, Request, Response, header};
use http_body_util::{BodyExt, combinators::UnsyncBoxBody};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    task::JoinSet,
};
use tower::ServiceExt;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::{NAME_HEADER, SHUTDOWN_GRACE, Shared, grpc, plain, ws};

/// Errors crossing the hyper service boundary.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response, whichever handler produced it.
pub(crate) type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// How long to back off after an accept error that is not about a single
/// connection (such as running out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections on `listener` until `shutdown` completes, then closes
/// them gracefully, waiting at most [`SHUTDOWN_GRACE`].
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    let local_addr = listener.local_addr().ok();
    info!(addr = ?local_addr, name = %shared.name, "echo server listening");

    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let grpc = grpc::server(shared.clone());
    let (closing_tx, closing_rx) = watch::channel(());
    let mut connections = JoinSet::new();

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(joined) = connections.join_next() => {
                if let Err(error) = joined
                    && error.is_panic()
                {
                    warn!(%error, "connection task panicked");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let connection = serve_connection(
                        builder.clone(),
                        stream,
                        peer,
                        shared.clone(),
                        grpc.clone(),
                        closing_rx.clone(),
                    );
                    connections.spawn(connection.instrument(debug_span!("conn", %peer)));
                }
                Err(error) if is_connection_error(&error) => {
                    debug!(%error, "accept failed for one connection");
                }
                Err(error) => {
                    warn!(%error, "accept failed, backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }

    drop(listener);
    info!(
        addr = ?local_addr,
        open = connections.len(),
        "echo server shutting down"
    );
    let _ = closing_tx.send(());
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!(
            open = connections.len(),
            "grace period over, dropping connections"
        );
    }
}

/// Errors that concern only the connection being accepted.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection, then the WebSocket it was upgraded to, if any.
async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    grpc: grpc::Server,
    mut closing: watch::Receiver<()>,
) {
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%error, "could not set TCP_NODELAY");
    }
    let (upgrades, mut upgrades_rx) = mpsc::unbounded_channel();
    let service = EchoService {
        shared,
        grpc,
        peer,
        upgrades,
    };

    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut closing_seen = false;
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            _ = closing.changed(), if !closing_seen => {
                closing_seen = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(error) = result {
        debug!(%error, "connection ended with an error");
        return;
    }

    // hyper hands the socket over once the `101` is written, which ends the
    // connection future above.
    if let Ok(on_upgrade) = upgrades_rx.try_recv() {
        if closing_seen {
            // Shutdown began before the upgrade: let the WebSocket see it, so
            // it is closed at once.
            closing.mark_changed();
        }
        match on_upgrade.await {
            Ok(upgraded) => ws::echo(upgraded, closing).await,
            Err(error) => debug!(%error, "WebSocket upgrade failed"),
        }
    }
}

/// The per-connection hyper service: counts the request, picks a handler and
/// names the server on the response.
#[derive(Clone, Debug)]
struct EchoService {
    shared: Arc<Shared>,
    grpc: grpc::Server,
    peer: SocketAddr,
    /// Where the WebSocket handler leaves the upgrade for the connection task.
    upgrades: mpsc::UnboundedSender<OnUpgrade>,
}

// === impl EchoService ===

impl hyper::service::Service<Request<Incoming>> for EchoService {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
        let name = self.shared.name_header.clone();
        let this = self.clone();
        Box::pin(async move {
            let mut response = this.route(request).await?;
            response
                .headers_mut()
                .insert(HeaderName::from_static(NAME_HEADER), name);
            Ok(response)
        })
    }
}

impl EchoService {
    async fn route(self, request: Request<Incoming>) -> Result<Response<ResponseBody>, BoxError> {
        if is_grpc(&request) {
            let response = self.grpc.oneshot(request).await?;
            return Ok(response.map(|body| body.map_err(BoxError::from).boxed_unsync()));
        }
        if ws::is_upgrade(&request) {
            return Ok(ws::accept(request, &self.upgrades));
        }
        plain::echo(request, &self.shared.name, self.peer).await
    }
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|content_type| content_type.starts_with("application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_is_recognised_by_content_type() {
        let request = |content_type: &str| {
            Request::builder()
                .header(header::CONTENT_TYPE, content_type)
                .body(())
                .unwrap()
        };
        assert!(is_grpc(&request("application/grpc")));
        assert!(is_grpc(&request("application/grpc+proto")));
        assert!(!is_grpc(&request("application/json")));
        assert!(!is_grpc(&Request::new(())));
    }
}
