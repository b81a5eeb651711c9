//! The parking lot: where a listener's quiet cleartext HTTP/1.1 connections wait for their
//! next request.
//!
//! A keep-alive connection spends most of its life waiting. Served by a task of its own, it
//! would wait as that task: the task's cell, its future's states, its idle timer, its share of
//! the listener's stop signal, the connection's state and tokio's registration of its socket,
//! about 2 KB in all. Once a connection has been quiet for the park time and then the lot time
//! (`EngineConfig::lot_after`), the task serving it hands it to its listener's lot and ends. In the lot a connection is its socket, its counts
//! and what it holds (its place under the connection limit, its metrics): one slot of about
//! 90 bytes in a table. The lot waits for all of its sockets with an epoll instance of its
//! own, which tokio waits for as one file descriptor, as nginx waits for its connections:
//!
//! - when a connection's client sends (or closes), the lot gives the socket back to tokio and
//!   spawns a task that serves it again, from the counts it kept;
//! - when it reaches the idle timeout, the lot closes it. The lot looks for those in sweeps,
//!   not with a timer each: at most one every sixteenth of the idle timeout (between 10 ms and
//!   1 s), so a connection closes at most that late;
//! - when the listener stops, or the engine cuts its tasks, the lot closes them all.
//!
//! Parking and waking cost a few system calls each (the socket leaves one epoll instance for
//! the other) and a task spawned, about 20 us of CPU in all, once per quiet spell of at least
//! the park time and the lot time: a client that pauses for less wakes its task, as before.
//!
//! TLS connections do not park here: rustls holds the session and its buffers, which are
//! much more than the task, and may hold bytes already read from the socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tokio::io::unix::AsyncFd;
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

/// Readiness events taken from the lot's epoll instance at a time.
const EVENTS: usize = 256;

/// Connections woken in one turn of the keeper at most; then it lets its worker thread run
/// other tasks, and comes back for the rest.
const WAKE_PER_TURN: usize = 1024;

/// Where the serving tasks of a listener hand their quiet connections.
#[derive(Debug, Clone)]
pub(crate) struct Lot {
    parked: mpsc::UnboundedSender<Parked>,
}

/// A cleartext HTTP/1.1 connection with nothing in flight, nothing read, and nothing but
/// what it needs to be served again, on its way to the lot.
#[derive(Debug)]
pub(crate) struct Parked {
    pub(crate) stream: TcpStream,
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
    /// or dropped, closing the connections in it. Fails if the lot's epoll instance cannot be
    /// made (out of file descriptors). Must be called within a tokio runtime.
    pub(crate) fn start(
        shared: Arc<Shared>,
        key: Arc<SocketKey>,
        local: SocketAddr,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let poll = Poll::new()?;
        // SAFETY: `register` asks that the descriptor stay open, and the same, for as long as
        // the `AsyncFd` owns it: a `mio::Poll` owns its epoll descriptor for its whole life,
        // closes it only when dropped, and always gives that one.
        #[allow(unsafe_code)]
        let epoll = unsafe { AsyncFd::register(poll) }.map_err(std::io::Error::from)?;
        let (parked, arrivals) = mpsc::unbounded_channel();
        let lot = Self { parked };
        let keeper = Keeper {
            shared: shared.clone(),
            key,
            local,
            stop,
            lot: lot.clone(),
            epoch: Instant::now(),
            slots: Slab::new(),
        };
        let cut = shared.cut.clone();
        shared
            .tasks
            .spawn(cut.run_until_cancelled_owned(keeper.run(epoll, arrivals)));
        Ok(lot)
    }

    /// Parks `conn`. If the lot has ended (its listener stopped), the connection is closed.
    pub(crate) fn park(&self, conn: Parked) {
        if self.parked.send(conn).is_err() {
            tracing::trace!("listener stopped, parked connection closed");
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
    /// The origin of the slots' deadlines.
    epoch: Instant,
    /// The connections in the lot; a slot's key is its token in the epoll instance.
    slots: Slab<Slot>,
}

/// A connection in the lot.
#[derive(Debug)]
struct Slot {
    stream: mio::net::TcpStream,
    requests: u64,
    heads: Option<u64>,
    held: Held,
    _counted: Option<ParkedGuard>,
    /// When it reaches the idle timeout, in milliseconds since the lot's epoch.
    idle_until: u64,
}

impl Keeper {
    async fn run(
        mut self,
        mut epoll: AsyncFd<Poll>,
        mut arrivals: mpsc::UnboundedReceiver<Parked>,
    ) {
        let idle = self.shared.config.idle_timeout;
        let every = (idle / 16).clamp(SWEEP.0, SWEEP.1);
        let mut events = Events::with_capacity(EVENTS);
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
                    if self.admit(epoll.get_ref(), conn) && due.is_none_or(|due| at < due) {
                        due = Some(at);
                        sweep.as_mut().reset(at);
                    }
                }
                ready = epoll.readable_mut() => {
                    let mut ready = match ready {
                        Ok(ready) => ready,
                        Err(e) => {
                            tracing::error!(local = %self.local, error = %e, "parking lot failed, closing its connections");
                            break;
                        }
                    };
                    // Every event, until none is left: tokio hears of the next ones anew.
                    let mut woken = 0;
                    while woken < WAKE_PER_TURN {
                        match ready.get_inner_mut().poll(&mut events, Some(Duration::ZERO)) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            Err(e) => {
                                tracing::error!(local = %self.local, error = %e, "parking lot failed, closing its connections");
                                return;
                            }
                        }
                        if events.is_empty() {
                            ready.clear_ready();
                            break;
                        }
                        for event in &events {
                            self.wake(ready.get_inner(), event.token().0);
                            woken += 1;
                        }
                    }
                    drop(ready);
                    if woken >= WAKE_PER_TURN {
                        tokio::task::yield_now().await;
                    }
                }
                () = &mut sweep, if due.is_some() => {
                    let now = Instant::now();
                    due = self.sweep(epoll.get_ref(), now).map(|at| at.max(now + every));
                    swept = now;
                    if let Some(at) = due {
                        sweep.as_mut().reset(at);
                    }
                }
            }
        }
        tracing::debug!(
            local = %self.local,
            parked = self.slots.len(),
            "listener stopped, closing its parked connections"
        );
    }

    /// Takes `conn` into the lot; false if its socket could not be watched (it is closed).
    fn admit(&mut self, epoll: &Poll, conn: Parked) -> bool {
        let Parked {
            stream,
            requests,
            heads,
            held,
            idle_until,
        } = conn;
        // Out of tokio's epoll instance, into the lot's.
        let stream = match stream.into_std() {
            Ok(stream) => mio::net::TcpStream::from_std(stream),
            Err(e) => {
                tracing::debug!(error = %e, "parked connection failed");
                return false;
            }
        };
        let idle_until = self.millis(idle_until);
        let slot = self.slots.vacant_entry();
        let mut slot_stream = stream;
        if let Err(e) =
            epoll
                .registry()
                .register(&mut slot_stream, Token(slot.key()), Interest::READABLE)
        {
            tracing::warn!(local = %self.local, error = %e, "cannot park a connection, closing it");
            return false;
        }
        let counted = held.open.as_ref().map(|open| open.parked());
        slot.insert(Slot {
            stream: slot_stream,
            requests,
            heads,
            held,
            _counted: counted,
            idle_until,
        });
        true
    }

    /// Serves the connection in slot `key`, whose client sent something (or closed), with a
    /// task of its own.
    fn wake(&mut self, epoll: &Poll, key: usize) {
        let Some(mut slot) = self.slots.try_remove(key) else {
            return;
        };
        // Out of the lot's epoll instance, back into tokio's.
        let _ = epoll.registry().deregister(&mut slot.stream);
        let Slot {
            stream,
            requests,
            heads,
            held,
            ..
        } = slot;
        let stream = std::net::TcpStream::from(stream);
        // A reset connection has no peer any more: it is closed here.
        let (stream, peer) = match stream
            .peer_addr()
            .and_then(|peer| Ok((TcpStream::from_std(stream)?, peer)))
        {
            Ok(woken) => woken,
            Err(e) => {
                tracing::debug!(error = %e, "parked connection failed");
                return;
            }
        };
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

    /// Closes the connections that reached the idle timeout by `now`; returns when the next
    /// one will, if any is left.
    fn sweep(&mut self, epoll: &Poll, now: Instant) -> Option<Instant> {
        let now = self.millis(now);
        let mut next: Option<u64> = None;
        self.slots.retain(|_, slot| {
            if slot.idle_until <= now {
                let _ = epoll.registry().deregister(&mut slot.stream);
                return false;
            }
            next = Some(next.map_or(slot.idle_until, |next| next.min(slot.idle_until)));
            true
        });
        next.map(|at| self.epoch + Duration::from_millis(at))
    }

    /// `at` in milliseconds since the lot's epoch.
    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }
}
