//! The parking lot: where a listener's quiet cleartext HTTP/1.1 connections wait for their
//! next request.
//!
//! A keep-alive connection spends most of its life waiting. Served by a task of its own, it
//! would wait as that task: the task's cell, its future's states, its idle timer, its share of
//! the listener's stop signal and the connection's state, about 2 KB in all. Once a
//! connection has been quiet for the park time, the task serving it hands it to its
//! listener's lot and ends. In the lot the connection is the socket, its client's address,
//! its counts and what it holds (its place under the connection limit, its metrics): a couple
//! of hundred bytes besides tokio's registration of the socket. One task per listener waits
//! for all of them:
//!
//! - when a connection's client sends (or closes), the lot spawns a task that serves it
//!   again, from the state it kept;
//! - when it reaches the idle timeout, the lot closes it. The lot looks for those in sweeps,
//!   not with a timer each: at most one every sixteenth of the idle timeout (between 10 ms and
//!   1 s), so a connection closes at most that late;
//! - when the listener stops, or the engine cuts its tasks, the lot closes them all.
//!
//! TLS connections do not park here: rustls holds the session and its buffers, which are
//! much more than the task, and may hold bytes already read from the socket.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::conn::{ConnState, GuardedIo};
use crate::engine::Shared;
use crate::listener::{Held, resume, stopped};
use crate::observe::ParkedGuard;
use crate::proxy::ProxyService;
use crate::runtime::SocketKey;

/// The shortest and longest time between two sweeps for idle connections.
const SWEEP: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Where the serving tasks of a listener hand their quiet connections.
#[derive(Debug, Clone)]
pub(crate) struct Lot {
    parked: mpsc::UnboundedSender<Parked>,
}

/// A cleartext HTTP/1.1 connection with nothing in flight, nothing read, and nothing but
/// what it needs to be served again.
#[derive(Debug)]
pub(crate) struct Parked {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    /// Requests begun on the connection.
    pub(crate) requests: u64,
    /// Heads its scanner followed; `None` if it had stopped.
    pub(crate) heads: Option<u64>,
    pub(crate) held: Held,
    /// When it reaches the idle timeout.
    pub(crate) idle_until: Instant,
}

impl Lot {
    /// Starts the lot of the listener `key`, listening at `local`; it ends when `stop` is set
    /// or dropped, closing the connections in it. Must be called within a tokio runtime.
    pub(crate) fn start(
        shared: Arc<Shared>,
        key: Arc<SocketKey>,
        local: SocketAddr,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let (parked, arrivals) = mpsc::unbounded_channel();
        let lot = Self { parked };
        let keeper = Keeper {
            shared: shared.clone(),
            key,
            local,
            stop,
            lot: lot.clone(),
        };
        let cut = shared.cut.clone();
        shared
            .tasks
            .spawn(cut.run_until_cancelled_owned(keeper.run(arrivals)));
        lot
    }

    /// Parks `conn`. If the lot has ended (its listener stopped), the connection is closed.
    pub(crate) fn park(&self, conn: Parked) {
        if let Err(mpsc::error::SendError(conn)) = self.parked.send(conn) {
            tracing::trace!(peer = %conn.peer, "listener stopped, parked connection closed");
        }
    }
}

/// The task that keeps a listener's lot.
struct Keeper {
    shared: Arc<Shared>,
    key: Arc<SocketKey>,
    local: SocketAddr,
    stop: watch::Receiver<bool>,
    /// Given to the tasks it spawns, to park their connections here again.
    lot: Lot,
}

impl Keeper {
    async fn run(mut self, mut arrivals: mpsc::UnboundedReceiver<Parked>) {
        let idle = self.shared.config.idle_timeout;
        let every = (idle / 16).clamp(SWEEP.0, SWEEP.1);
        let mut waiting = FuturesUnordered::new();
        let mut swept = Instant::now();
        // When the next sweep is due; `None` while no connection waits for one.
        let mut due: Option<Instant> = None;
        let sweep = tokio::time::sleep_until(swept);
        tokio::pin!(sweep);
        loop {
            tokio::select! {
                () = stopped(&mut self.stop) => break,
                arrived = arrivals.recv() => {
                    // `None` cannot happen: the keeper holds a sender itself.
                    let Some(conn) = arrived else { break };
                    let at = conn.idle_until.max(swept + every);
                    if due.is_none_or(|due| at < due) {
                        due = Some(at);
                        sweep.as_mut().reset(at);
                    }
                    waiting.push(Waiting::new(conn));
                }
                Some(woken) = waiting.next(), if !waiting.is_empty() => {
                    if let Some(conn) = woken {
                        self.serve(conn);
                    }
                }
                () = &mut sweep, if due.is_some() => {
                    let now = Instant::now();
                    let mut next: Option<Instant> = None;
                    for conn in waiting.iter_mut() {
                        match conn.idle_until() {
                            Some(at) if at <= now => conn.expire(),
                            Some(at) => next = Some(next.map_or(at, |next| next.min(at))),
                            None => {}
                        }
                    }
                    swept = now;
                    due = next.map(|at| at.max(now + every));
                    if let Some(at) = due {
                        sweep.as_mut().reset(at);
                    }
                }
            }
        }
        tracing::debug!(
            local = %self.local,
            parked = waiting.len(),
            "listener stopped, closing its parked connections"
        );
    }

    /// Serves a connection whose client sent something (or closed) with a task of its own.
    fn serve(&self, conn: Parked) {
        let Parked {
            stream,
            peer,
            requests,
            heads,
            held,
            idle_until: _,
        } = conn;
        let config = &self.shared.config;
        let state = ConnState::resumed(requests);
        let io = GuardedIo::resumed(
            stream,
            state.clone(),
            config.header_read_timeout,
            config.max_request_headers_bytes,
            config.max_request_headers,
            heads,
        );
        let service = ProxyService {
            shared: self.shared.clone(),
            key: self.key.clone(),
            peer,
            local: self.local,
            session: None,
            conn: state,
        };
        resume(io, service, self.stop.clone(), held, self.lot.clone());
    }
}

/// A connection in the lot, as a future that resolves with it once its client sends or
/// closes: `None` if it expired or failed (it is then closed).
#[derive(Debug)]
struct Waiting {
    conn: Option<Parked>,
    /// To wake the lot when the connection expires: it then resolves, and leaves the lot.
    waker: Option<Waker>,
    _counted: Option<ParkedGuard>,
}

impl Waiting {
    fn new(conn: Parked) -> Self {
        let counted = conn.held.open.as_ref().map(|open| open.parked());
        Self {
            conn: Some(conn),
            waker: None,
            _counted: counted,
        }
    }

    fn idle_until(&self) -> Option<Instant> {
        self.conn.as_ref().map(|conn| conn.idle_until)
    }

    /// Closes the connection, and has the lot let go of the rest.
    fn expire(&mut self) {
        if let Some(conn) = self.conn.take() {
            tracing::trace!(peer = %conn.peer, "parked connection idle, closing");
        }
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

impl Future for Waiting {
    type Output = Option<Parked>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Parked>> {
        let this = self.get_mut();
        let Some(conn) = &this.conn else {
            return Poll::Ready(None);
        };
        match conn.stream.poll_read_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(this.conn.take()),
            Poll::Ready(Err(e)) => {
                tracing::debug!(peer = %conn.peer, error = %e, "parked connection failed");
                Poll::Ready(None)
            }
            Poll::Pending => {
                if !this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    this.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}
