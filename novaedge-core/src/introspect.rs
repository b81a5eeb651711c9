//! A read-only view of the engine's backends for operators (the admin listener's
//! `/endpoints`): each backend's endpoints with their weight, health, load and latency
//! estimate, and its outlier ejections. Taken under the control lock, never on the request
//! path.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::runtime::BackendState;

/// One backend as the engine runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendView {
    /// The snapshot's backend name.
    pub name: String,
    /// The balancing policy, as configuration spells it (`RoundRobin`, `Maglev`, ...).
    pub policy: &'static str,
    /// Its endpoints, in the balancer's order.
    pub endpoints: Vec<EndpointView>,
}

/// One endpoint of a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointView {
    pub address: SocketAddr,
    pub weight: u32,
    /// Whether the balancer sends it traffic (active checks and outlier detection combined).
    pub healthy: bool,
    /// Requests in flight to it.
    pub pending: u64,
    /// The balancer's latency estimate (peak EWMA of response times), if it has one.
    pub rtt_estimate: Option<Duration>,
    /// How much longer outlier detection keeps it ejected, if it is.
    pub ejected_for: Option<Duration>,
}

impl BackendState {
    pub(crate) fn view(&self, name: &str, now: Instant) -> BackendView {
        let snapshot = self.endpoints.snapshot();
        let table = snapshot.table();
        let endpoints = novaedge_lb::Selector::endpoints(table)
            .iter()
            .zip(table.weights())
            .zip(table.states())
            .map(|((address, weight), state)| EndpointView {
                address: *address,
                weight: *weight,
                healthy: state.is_healthy(),
                pending: state.pending(),
                rtt_estimate: state.rtt_estimate(now),
                ejected_for: self
                    .health
                    .outlier
                    .ejected_until(address)
                    .map(|until| until.saturating_duration_since(tokio::time::Instant::now())),
            })
            .collect();
        BackendView {
            name: name.to_owned(),
            policy: self.endpoints.policy().name(),
            endpoints,
        }
    }
}
