//! The engine: owns listeners, upstream pools and the current runtime, and applies snapshots.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use novaedge_snapshot::{ConfigSnapshot, ValidationErrors};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::EngineConfig;
use crate::listener::{self, ListenerHandle};
use crate::observe::Observe;
use crate::runtime::{Carried, CompileError, Runtime, SocketKey};
use crate::upstream::Upstreams;

/// Streams a client may reset before the proxy has accepted them, the defence against rapid
/// reset (CVE-2023-44487): a connection that resets more is sent GOAWAY `ENHANCE_YOUR_CALM`.
/// The h2 crate's default.
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// Streams the proxy may reset for a client's protocol errors on one connection before it sends
/// GOAWAY `ENHANCE_YOUR_CALM` (the "MadeYouReset" variant of rapid reset, CVE-2025-8671).
/// hyper's default.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// The HTTP server settings of client connections, one builder per protocol: the listener
/// picks the protocol itself (ALPN, or the first bytes of a cleartext connection).
#[derive(Debug)]
pub(crate) struct ServerHttp {
    pub(crate) http1: http1::Builder,
    pub(crate) http2: http2::Builder<TokioExecutor>,
}

impl ServerHttp {
    /// Limits from `config`; the header read timeout off, since
    /// [`GuardedIo`](crate::conn::GuardedIo) keeps it instead.
    fn new(config: &EngineConfig) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            // hyper's read buffer bounds the head (`431` when full), and cannot be below 8 KiB.
            .max_buf_size(config.max_request_headers_bytes.max(8192));
        if config.max_request_headers != crate::upstream::HYPER_MAX_HEADERS {
            // Other than hyper's default, the field index is allocated per request.
            http1.max_headers(config.max_request_headers);
        }
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.h2_max_concurrent_streams)
            .max_header_list_size(
                u32::try_from(config.max_request_headers_bytes).unwrap_or(u32::MAX),
            )
            .initial_stream_window_size(config.h2_stream_window)
            .initial_connection_window_size(config.h2_connection_window)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS);
        Self { http1, http2 }
    }
}

/// Why a snapshot was not applied. In every case nothing changed: the previous runtime, if
/// any, keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    #[error("snapshot does not compile: {0}")]
    Compile(#[from] CompileError),
    #[error("listener {listener:?}: cannot bind {addr}: {source}")]
    Bind {
        listener: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("engine is shut down")]
    ShutDown,
}

/// What [`Engine::shutdown`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// True if every connection finished before the deadline; false if some were cut.
    pub drained: bool,
}

/// The data plane. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

/// State shared by the engine, its listeners and every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) runtime: ArcSwap<Runtime>,
    pub(crate) upstreams: Upstreams,
    pub(crate) http: ServerHttp,
    /// Client connections and upgraded tunnels, so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
    /// Cancelled when the shutdown deadline passes: every task in `tasks` then drops its
    /// connections.
    pub(crate) cut: CancellationToken,
    pub(crate) config: EngineConfig,
    pub(crate) observe: Observe,
    /// Serialises `apply` and `shutdown`; never taken on the request path.
    control: Mutex<Control>,
}

#[derive(Debug, Default)]
struct Control {
    listeners: HashMap<SocketKey, ListenerHandle>,
    /// What the next snapshot's runtime builds on.
    carried: Carried,
    applied: bool,
    shut_down: bool,
}

impl Engine {
    /// Creates an engine with no listeners. Must be called within a tokio runtime.
    pub fn new(config: EngineConfig) -> Self {
        let http = ServerHttp::new(&config);
        let empty = Runtime::empty(config.default_bind);
        Self {
            shared: Arc::new(Shared {
                runtime: ArcSwap::from_pointee(empty),
                upstreams: Upstreams::new(&config),
                http,
                tasks: TaskTracker::new(),
                cut: CancellationToken::new(),
                observe: Observe::new(&config.observe),
                config,
                control: Mutex::default(),
            }),
        }
    }

    /// Validates and compiles `snapshot`, binds the sockets of new listeners, then swaps the
    /// new runtime in atomically and stops listeners the snapshot no longer has. Listeners
    /// whose address did not change keep their socket and connections. On error nothing changes.
    pub fn apply(&self, snapshot: &ConfigSnapshot) -> Result<(), ApplyError> {
        snapshot.validate()?;
        let default_bind = self.shared.config.default_bind;
        let mut control = crate::sync::lock(&self.shared.control);
        if control.shut_down {
            return Err(ApplyError::ShutDown);
        }
        let prepared = Runtime::prepare(
            snapshot,
            default_bind,
            &control.carried,
            &Arc::downgrade(&self.shared),
        )?;

        // Bind everything new before touching anything, so a failure leaves no trace.
        let mut wanted: HashMap<SocketKey, &str> = HashMap::new();
        let mut fresh = Vec::new();
        for l in &snapshot.listeners {
            let key = SocketKey::of(l, default_bind);
            if !control.listeners.contains_key(&key) {
                let addr = key.bind_addr();
                let socket =
                    listener::bind(addr, self.shared.config.listen_backlog).map_err(|source| {
                        ApplyError::Bind {
                            listener: l.name.clone(),
                            addr,
                            source,
                        }
                    })?;
                fresh.push((key.clone(), l.name.clone(), socket));
            }
            wanted.insert(key, &l.name);
        }

        let version = prepared.version();
        let (runtime, carried) = prepared.commit();
        control.carried = carried;
        let replaced = self.shared.runtime.swap(Arc::new(runtime));
        control.applied = true;
        self.shared.observe.retain(snapshot);

        for (key, name, socket) in fresh {
            // Only fails without a tokio runtime, which `new` already required.
            let handle =
                match ListenerHandle::start(name.clone(), socket, key.clone(), self.shared.clone())
                {
                    Ok(handle) => handle,
                    Err(e) => {
                        tracing::error!(listener = %name, error = %e, "cannot serve the listener");
                        continue;
                    }
                };
            tracing::info!(listener = %handle.name, addr = %handle.local_addr, "listening");
            control.listeners.insert(key, handle);
        }
        control.listeners.retain(|key, handle| match wanted.get(key) {
            Some(name) => {
                if handle.name != *name {
                    handle.name = (*name).to_owned();
                }
                true
            }
            None => {
                tracing::info!(listener = %handle.name, addr = %handle.local_addr, "listener removed");
                handle.stop();
                false
            }
        });
        drop(control);
        tracing::info!(version, "snapshot applied");
        retire(replaced);
        Ok(())
    }

    /// Registers the request metrics (see [`observe::metrics`](crate::observe::metrics)) into
    /// `registry`, and starts counting: until the first call, no request pays for metrics.
    /// Further calls register the same metrics into other registries.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.shared.observe.register(registry);
    }

    /// The version of the snapshot being served, if one was applied.
    pub fn version(&self) -> Option<u64> {
        let control = crate::sync::lock(&self.shared.control);
        control.applied.then(|| self.shared.runtime.load().version)
    }

    /// Every backend with its endpoints, health and load, by name (see
    /// [`BackendView`](crate::BackendView)).
    pub fn backends(&self) -> Vec<crate::BackendView> {
        let control = crate::sync::lock(&self.shared.control);
        let now = std::time::Instant::now();
        let mut views: Vec<crate::BackendView> = control
            .carried
            .balancers
            .iter()
            .map(|(name, state)| state.view(name, now))
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    /// The address a listener is bound to (useful when its port was 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        let control = crate::sync::lock(&self.shared.control);
        control
            .listeners
            .values()
            .find(|h| h.name == listener)
            .map(|h| h.local_addr)
    }

    /// Stops accepting on every listener, asks every connection to finish what it is doing
    /// (HTTP/1.1 closes after the response in flight, HTTP/2 sends GOAWAY), and waits for them
    /// up to `timeout`. Upgraded connections (WebSocket) have no graceful end and are cut at the
    /// deadline. Further `apply` calls fail.
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        {
            let mut control = crate::sync::lock(&self.shared.control);
            control.shut_down = true;
            for handle in control.listeners.values() {
                handle.stop();
            }
            control.listeners.clear();
        }
        self.shared.tasks.close();
        let drained = tokio::time::timeout(timeout, self.shared.tasks.wait())
            .await
            .is_ok();
        if !drained {
            // Cut what is left, and wait for it to let go of its sockets: it ends at once.
            tracing::info!(
                open = self.shared.tasks.len(),
                "shutdown deadline passed, cutting"
            );
            self.shared.cut.cancel();
            self.shared.tasks.wait().await;
        }
        // Nothing serves any more: drop the backends, which stops their health probes.
        // The version stays: it is what was last applied.
        let mut empty = Runtime::empty(self.shared.config.default_bind);
        empty.version = self.shared.runtime.load().version;
        self.shared.runtime.store(Arc::new(empty));
        let mut control = crate::sync::lock(&self.shared.control);
        control.carried = Carried::default();
        drop(control);
        ShutdownReport { drained }
    }
}

/// Frees a runtime the engine no longer serves. Requests still in flight may hold it, and the
/// last of them frees it. When the engine holds the last reference, the runtime is freed on
/// tokio's blocking pool: freeing a table of tens of thousands of routes takes as long as a
/// good part of building it, and neither the apply nor a worker thread should wait for that.
fn retire(runtime: Arc<Runtime>) {
    let Some(runtime) = Arc::into_inner(runtime) else {
        return;
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn_blocking(move || drop(runtime))),
        Err(_) => drop(runtime),
    }
}
