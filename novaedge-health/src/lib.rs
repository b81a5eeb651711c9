//! Endpoint health for load balancers, usable by any Rust proxy: passive outlier detection,
//! circuit breaking and active health checks, generic over the endpoint key.
//!
//! # Model
//!
//! This crate decides *whether* an endpoint is fit for traffic; it does not pick endpoints. It
//! depends on no other NovaEdge crate: the key `K` is whatever the proxy uses to name an
//! endpoint (a `SocketAddr`, a pod name), and every verdict leaves the crate as a
//! [`HealthEvent`] `(key, Health)` through a [`HealthSink`] — a closure, or the sending half of
//! a `tokio::sync::mpsc` channel. A data plane forwards those events to its balancer, e.g.
//! `novaedge_lb::EndpointSet::set_healthy(&key, health.is_healthy())`.
//!
//! | module | what | after |
//! |---|---|---|
//! | [`outlier`] | passive outlier detection from real traffic: consecutive 5xx, consecutive gateway failures, success rate, failure percentage; ejection time growing per ejection, bounded by `max_ejection_percent` | Envoy outlier detection |
//! | [`circuit`] | per-backend limits on connections, pending requests, requests and retries; lock-free, never queueing | Envoy cluster circuit breakers |
//! | [`active`] | active probes (TCP connect, HTTP/1.1 `GET`, gRPC `grpc.health.v1.Health/Check`; HTTP and gRPC in cleartext or over TLS), a task per endpoint, thresholds, bounded probe concurrency | Envoy active health checking |
//! | [`combine`] | one verdict per endpoint from several detectors, so that an active check's "healthy" cannot undo an outlier ejection | Envoy's per-source host health flags |
//!
//! # Example
//!
//! Outlier detection and active checks feeding one balancer through a [`HealthCombiner`]:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use novaedge_health::{
//!     ActiveChecker, ActiveConfig, Health, HealthCombiner, HealthEvent, OutlierConfig,
//!     OutlierDetector, Outcome, Probe, Source,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Stands in for `novaedge_lb::EndpointSet::set_healthy`.
//! let balancer = Arc::new(Mutex::new(Vec::new()));
//! let combiner = HealthCombiner::new({
//!     let balancer = Arc::clone(&balancer);
//!     move |event: HealthEvent<&'static str>| balancer.lock().unwrap().push(event.into_parts())
//! });
//!
//! let config = OutlierConfig { max_ejection_percent: 100, ..OutlierConfig::default() };
//! let outlier = Arc::new(OutlierDetector::new(config, combiner.sink(Source::Outlier)));
//! let _ticks = outlier.spawn(); // re-admits ejected endpoints on its interval
//! let active = ActiveChecker::new(ActiveConfig::new(Probe::Tcp), combiner.sink(Source::Active));
//! # let _ = &active;
//! // For each endpoint: active.add(key, addr); outlier.add(key);
//! outlier.add("pod-a");
//!
//! // On the request path: report what happened.
//! for _ in 0..5 {
//!     outlier.record(&"pod-a", Outcome::from_status(503));
//! }
//! assert_eq!(*balancer.lock().unwrap(), [("pod-a", Health::Unhealthy)]);
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod active;
pub mod circuit;
pub mod combine;
pub mod event;
pub mod outlier;

pub use active::{ActiveChecker, ActiveConfig, GrpcProbe, HttpProbe, Probe, ProbeError, ProbeTls};
pub use circuit::{CircuitBreaker, Limit, Limits, Overflow, Permit};
pub use combine::{HealthCombiner, Source, SourceSink};
pub use event::{Health, HealthEvent, HealthSink};
pub use outlier::{
    EjectionReason, FailurePercentageConfig, Outcome, OutlierConfig, OutlierDetector,
    SuccessRateConfig,
};
