//! Active health checks: a task per endpoint probes it on an interval and reports a change once
//! enough probes in a row agree. The model is Envoy's active health checking
//! (<https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/health_checking>,
//! `envoy.config.core.v3.HealthCheck`): `interval` plus a random `interval_jitter`, a `timeout`
//! per probe, `healthy_threshold` successes in a row to become healthy and
//! `unhealthy_threshold` failures in a row to become unhealthy.
//!
//! # Probes
//!
//! - [`Probe::Tcp`]: the TCP connection is established.
//! - [`Probe::Http`]: an HTTP/1.1 `GET` of a path, answered with a status in the expected ranges
//!   (default `200..400`). Every probe opens its *own* connection with `Connection: close`, never
//!   one shared with user traffic: a probe must see what a new client would see, and a probe's
//!   failure must not break a user's request.
//! - [`Probe::Grpc`]: `grpc.health.v1.Health/Check` for a service name over an h2c connection,
//!   healthy only on `SERVING` (the gRPC health checking protocol, as Envoy's gRPC checker).
//!
//! A probe that does not finish within `timeout` fails. All probes of one [`ActiveChecker`]
//! share a semaphore of [`ActiveConfig::max_concurrent_probes`] permits, so a large backend
//! cannot open thousands of probe connections at once; a probe waiting for a permit is late,
//! not failed.
//!
//! # First verdict
//!
//! An endpoint's health is unknown until its first probe, which decides it at once either way
//! and reports it (Envoy likewise lets the first successful check make a new host healthy
//! without waiting for `healthy_threshold`). A data plane that wants Envoy's "new hosts are not
//! used before their first check passes" adds endpoints to its balancer as unhealthy.
//! After that, the thresholds apply.
//!
//! # Membership
//!
//! [`ActiveChecker::add`], [`remove`](ActiveChecker::remove) and
//! [`set_endpoints`](ActiveChecker::set_endpoints) start and stop checker tasks without touching
//! the others. Dropping the checker stops all of its tasks. Methods that start tasks must be
//! called within a tokio runtime.
//!
//! Not built: `no_traffic_interval`, `unhealthy_interval`, `unhealthy_edge_interval`, HTTP/2
//! HTTP probes, TLS, response body matching, custom request headers beyond `Host`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::event::{Health, HealthEvent, HealthSink};

/// What a probe checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connection can be established.
    Tcp,
    /// An HTTP/1.1 `GET` answers with an expected status.
    Http(HttpProbe),
    /// `grpc.health.v1.Health/Check` answers `SERVING`.
    Grpc(GrpcProbe),
}

/// An HTTP probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProbe {
    /// Path and query, starting with `/`.
    pub path: String,
    /// `Host` header; the endpoint's address if `None`.
    pub host: Option<String>,
    /// Statuses counted as healthy, as half-open ranges; Envoy's default is `200..201`, ours
    /// `200..400` so that redirects from a `/` probe count as alive.
    pub expected_statuses: Vec<Range<u16>>,
}

impl HttpProbe {
    /// `GET path`, healthy on `200..400`.
    // A list holding one range is meant here, not the range's elements.
    #[allow(clippy::single_range_in_vec_init)]
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            host: None,
            expected_statuses: vec![200..400],
        }
    }

    /// Sends this `Host` header.
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Counts only these statuses as healthy.
    pub fn with_expected_statuses(mut self, ranges: Vec<Range<u16>>) -> Self {
        self.expected_statuses = ranges;
        self
    }
}

/// A gRPC health probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcProbe {
    /// The service name asked about; empty asks about the server as a whole.
    pub service: String,
    /// `:authority` to send; the endpoint's address if `None`.
    pub authority: Option<String>,
}

impl GrpcProbe {
    /// Asks about `service`.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            authority: None,
        }
    }
}

/// Active health check settings for one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveConfig {
    /// Time between the end of one probe and the start of the next, before jitter. Default 5 s.
    pub interval: Duration,
    /// Up to this much is added at random to each interval, so that checkers started together
    /// drift apart. Default 1 s.
    pub jitter: Duration,
    /// A probe not finished in this time fails. Default 1 s.
    pub timeout: Duration,
    /// Successes in a row for an unhealthy endpoint to become healthy. Default 2 (at least 1).
    pub healthy_threshold: u32,
    /// Failures in a row for a healthy endpoint to become unhealthy. Default 3 (at least 1).
    pub unhealthy_threshold: u32,
    /// Probes in flight at once across the checker's endpoints. Default 64 (at least 1).
    pub max_concurrent_probes: usize,
    /// What to probe.
    pub probe: Probe,
}

impl ActiveConfig {
    /// Defaults with this probe.
    pub fn new(probe: Probe) -> Self {
        Self {
            interval: Duration::from_secs(5),
            jitter: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            max_concurrent_probes: 64,
            probe,
        }
    }
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Not finished within the timeout.
    #[error("probe of {addr} timed out after {timeout:?}")]
    Timeout {
        /// The endpoint.
        addr: SocketAddr,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The TCP connection failed.
    #[error("connecting to {addr} failed")]
    Connect {
        /// The endpoint.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The probe request could not be built from the configuration.
    #[error("invalid HTTP probe request for path {path:?}")]
    Request {
        /// The configured path.
        path: String,
        /// The cause.
        #[source]
        source: http::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP probe of {addr} failed")]
    Http {
        /// The endpoint.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The HTTP status was not an expected one.
    #[error("HTTP probe of {addr}{path} answered {status}, expected {expected:?}")]
    Status {
        /// The endpoint.
        addr: SocketAddr,
        /// The probed path.
        path: String,
        /// The status received.
        status: u16,
        /// The configured ranges.
        expected: Vec<Range<u16>>,
    },
    /// The gRPC connection could not be set up.
    #[error("gRPC connection to {addr} failed")]
    GrpcConnect {
        /// The endpoint.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The `Check` call failed (e.g. `NOT_FOUND` for an unknown service).
    #[error("gRPC health check of service {service:?} at {addr} failed")]
    GrpcCall {
        /// The endpoint.
        addr: SocketAddr,
        /// The service asked about.
        service: String,
        /// The gRPC status.
        #[source]
        source: tonic::Status,
    },
    /// The service answered, but not `SERVING`.
    #[error("gRPC service {service:?} at {addr} is {status}")]
    NotServing {
        /// The endpoint.
        addr: SocketAddr,
        /// The service asked about.
        service: String,
        /// The status name, e.g. `NOT_SERVING`.
        status: &'static str,
    },
}

/// Runs one probe against `addr`, within `timeout`.
pub async fn probe(probe: &Probe, addr: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
    let run = async {
        match probe {
            Probe::Tcp => connect(addr).await.map(drop),
            Probe::Http(http) => probe_http(http, addr).await,
            Probe::Grpc(grpc) => probe_grpc(grpc, addr).await,
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or(Err(ProbeError::Timeout { addr, timeout }))
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, ProbeError> {
    TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Connect { addr, source })
}

/// Aborts the connection task when the probe ends, however it ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn probe_http(probe: &HttpProbe, addr: SocketAddr) -> Result<(), ProbeError> {
    let host = probe.host.clone().unwrap_or_else(|| addr.to_string());
    let request = http::Request::get(probe.path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "novaedge-health")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|source| ProbeError::Request {
            path: probe.path.clone(),
            source,
        })?;
    let stream = connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ProbeError::Http { addr, source })?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        // Its errors also fail `send_request`, which reports them.
        let _ = conn.await;
    }));
    let response = send
        .send_request(request)
        .await
        .map_err(|source| ProbeError::Http { addr, source })?;
    let status = response.status().as_u16();
    if probe.expected_statuses.iter().any(|r| r.contains(&status)) {
        Ok(())
    } else {
        Err(ProbeError::Status {
            addr,
            path: probe.path.clone(),
            status,
            expected: probe.expected_statuses.clone(),
        })
    }
}

async fn probe_grpc(probe: &GrpcProbe, addr: SocketAddr) -> Result<(), ProbeError> {
    let grpc_err = |source| ProbeError::GrpcConnect { addr, source };
    let mut endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).map_err(grpc_err)?;
    if let Some(authority) = &probe.authority {
        let origin = format!("http://{authority}")
            .parse::<http::Uri>()
            .map_err(|_| ProbeError::GrpcCall {
                addr,
                service: probe.service.clone(),
                source: tonic::Status::invalid_argument(format!("invalid authority {authority:?}")),
            })?;
        endpoint = endpoint.origin(origin);
    }
    // A fresh channel per probe: its own h2c connection, closed when dropped.
    let channel = endpoint.connect().await.map_err(grpc_err)?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: probe.service.clone(),
        })
        .await
        .map_err(|source| ProbeError::GrpcCall {
            addr,
            service: probe.service.clone(),
            source,
        })?;
    match response.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(ProbeError::NotServing {
            addr,
            service: probe.service.clone(),
            status: other.as_str_name(),
        }),
    }
}

const UNKNOWN: u8 = 0;
const HEALTHY: u8 = 1;
const UNHEALTHY: u8 = 2;

/// Active health checking of a changing set of endpoints; see the module docs.
pub struct ActiveChecker<K> {
    shared: Arc<Shared<K>>,
}

struct Shared<K> {
    config: ActiveConfig,
    permits: Semaphore,
    sink: Box<dyn HealthSink<K>>,
    /// The checked endpoints. Tasks report under this lock, after checking they are still the
    /// endpoint's checker: see `check_loop`.
    endpoints: Mutex<HashMap<K, Checked>>,
}

impl<K> Shared<K> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, Checked>> {
        // Entries are inserted and removed whole, so a poisoned map is still consistent.
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

struct Checked {
    addr: SocketAddr,
    health: Arc<AtomicU8>,
    task: JoinHandle<()>,
}

// === impl ActiveChecker ===

impl<K> ActiveChecker<K>
where
    K: Clone + Eq + Hash + Debug + Send + Sync + 'static,
{
    /// A checker with no endpoints yet; changes go to `sink`.
    pub fn new(config: ActiveConfig, sink: impl HealthSink<K>) -> Self {
        let permits = Semaphore::new(config.max_concurrent_probes.max(1));
        Self {
            shared: Arc::new(Shared {
                config,
                permits,
                sink: Box::new(sink),
                endpoints: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ActiveConfig {
        &self.shared.config
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Checked>> {
        self.shared.lock()
    }

    /// Starts checking `key` at `addr`. An endpoint already checked at the same address keeps its
    /// state; at a new address it starts over.
    pub fn add(&self, key: K, addr: SocketAddr) {
        let mut endpoints = self.lock();
        if endpoints.get(&key).is_some_and(|c| c.addr == addr) {
            return;
        }
        let health = Arc::new(AtomicU8::new(UNKNOWN));
        let task = tokio::spawn(check_loop(
            Arc::clone(&self.shared),
            key.clone(),
            addr,
            Arc::clone(&health),
        ));
        if let Some(old) = endpoints.insert(key, Checked { addr, health, task }) {
            old.task.abort();
        }
    }

    /// Stops checking `key`. No event for `key` is sent once this returns (until it is added
    /// again): the endpoint is gone.
    pub fn remove(&self, key: &K) {
        if let Some(old) = self.lock().remove(key) {
            old.task.abort();
        }
    }

    /// Makes the checked set exactly `endpoints`, keeping the checkers of those that stay.
    pub fn set_endpoints(&self, endpoints: impl IntoIterator<Item = (K, SocketAddr)>) {
        let wanted: HashMap<K, SocketAddr> = endpoints.into_iter().collect();
        self.lock().retain(|k, c| {
            let keep = wanted.contains_key(k);
            if !keep {
                c.task.abort();
            }
            keep
        });
        for (key, addr) in wanted {
            self.add(key, addr);
        }
    }

    /// `key`'s health, `None` before its first probe or if it is not checked.
    pub fn health(&self, key: &K) -> Option<Health> {
        match self.lock().get(key)?.health.load(Ordering::Acquire) {
            HEALTHY => Some(Health::Healthy),
            UNHEALTHY => Some(Health::Unhealthy),
            _ => None,
        }
    }

    /// How many endpoints are checked.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no endpoint is checked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K> Drop for ActiveChecker<K> {
    fn drop(&mut self) {
        for (_, checked) in self.shared.lock().drain() {
            checked.task.abort();
        }
    }
}

impl<K> Debug for ActiveChecker<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveChecker")
            .field("config", &self.shared.config)
            .field(
                "endpoints",
                &self.shared.endpoints.lock().map(|e| e.len()).ok(),
            )
            .finish_non_exhaustive()
    }
}

async fn check_loop<K>(shared: Arc<Shared<K>>, key: K, addr: SocketAddr, health: Arc<AtomicU8>)
where
    K: Clone + Eq + Hash + Debug + Send + Sync + 'static,
{
    let config = &shared.config;
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        let result = {
            // The semaphore is never closed, so this only waits.
            let _permit = shared.permits.acquire().await;
            probe(&config.probe, addr, config.timeout).await
        };
        let ok = match result {
            Ok(()) => {
                successes = successes.saturating_add(1);
                failures = 0;
                true
            }
            Err(error) => {
                tracing::debug!(?key, %addr, error = &error as &dyn std::error::Error, "health probe failed");
                failures = failures.saturating_add(1);
                successes = 0;
                false
            }
        };
        let next = match health.load(Ordering::Acquire) {
            UNKNOWN => Some(if ok {
                Health::Healthy
            } else {
                Health::Unhealthy
            }),
            HEALTHY if failures >= config.unhealthy_threshold.max(1) => Some(Health::Unhealthy),
            UNHEALTHY if successes >= config.healthy_threshold.max(1) => Some(Health::Healthy),
            _ => None,
        };
        if let Some(next) = next {
            let endpoints = shared.lock();
            // Only the endpoint's current checker reports. One that was removed or replaced is
            // being aborted but may still be running up to here; it stays silent, so no event
            // follows `remove`, and a replaced checker cannot report after its successor.
            if !endpoints
                .get(&key)
                .is_some_and(|c| Arc::ptr_eq(&c.health, &health))
            {
                return;
            }
            health.store(
                if next.is_healthy() {
                    HEALTHY
                } else {
                    UNHEALTHY
                },
                Ordering::Release,
            );
            tracing::info!(?key, %addr, health = %next, "active health check changed");
            shared.sink.report(HealthEvent {
                key: key.clone(),
                health: next,
            });
            drop(endpoints);
        }
        let jitter = u64::try_from(config.jitter.as_nanos()).unwrap_or(u64::MAX);
        let jitter = if jitter == 0 {
            0
        } else {
            rand::rng().random_range(0..=jitter)
        };
        tokio::time::sleep(config.interval + Duration::from_nanos(jitter)).await;
    }
}
