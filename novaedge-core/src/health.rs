//! Endpoint health of one backend: the `novaedge-health` detectors a backend's
//! [`HealthPolicy`] asks for, wired to its balancer.
//!
//! Active checks and outlier detection report through a [`HealthCombiner`], so that a passing
//! probe cannot undo an ejection and the other way round; the combined verdict marks the
//! endpoint in the backend's [`EndpointSet`], which skips unhealthy endpoints (down to the panic
//! threshold).
//!
//! Probes of a TLS backend's traffic port speak TLS with the backend's settings (its CA, server
//! name and client certificate), as Envoy probes a TLS cluster with the cluster's transport
//! socket. Probes of a separate `port` stay cleartext: a health port next to a TLS port is
//! usually plain. TCP probes only connect, TLS or not.
//!
//! A backend's detectors are rebuilt only when its active check or outlier settings change, or
//! the TLS settings its probes use (so that probes never keep dialling with a stale CA or client
//! certificate).
//! Requests of an older runtime may still report outcomes to the detector they started with;
//! a replaced detector is *retired* first, and a retired detector's verdicts go nowhere, so it
//! can neither eject an endpoint after it was replaced nor leave one ejected for good.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use novaedge_health::{
    ActiveChecker, ActiveConfig, FailurePercentageConfig, GrpcProbe, Health, HealthCombiner,
    HealthEvent, HttpProbe, OutlierConfig, OutlierDetector, Probe, ProbeTls, Source,
    SuccessRateConfig,
};
use novaedge_lb::EndpointSet;
use novaedge_snapshot::{ActiveHealthCheck, HealthPolicy, HealthProbe, OutlierDetection};
use tokio::task::JoinHandle;

use crate::upstream_tls::UpstreamTlsConfig;

/// How many probes of one backend may be in flight at once.
const MAX_CONCURRENT_PROBES: usize = 64;

/// The health detectors of one backend, built from its active check and outlier settings.
#[derive(Debug)]
pub(crate) struct BackendHealth {
    active_policy: Option<ActiveHealthCheck>,
    /// The identity of the TLS configuration the probes use; `None`: cleartext.
    probe_tls: Option<u64>,
    outlier_policy: OutlierDetection,
    combiner: HealthCombiner<SocketAddr>,
    pub(crate) outlier: Arc<OutlierDetector<SocketAddr>>,
    active: Option<ActiveChecker<SocketAddr>>,
    /// Set once, when the detectors are replaced; see the module docs.
    retired: Arc<Mutex<bool>>,
    ticks: JoinHandle<()>,
    /// The endpoints being judged.
    endpoints: Mutex<HashSet<SocketAddr>>,
    /// The balancer whose endpoints are judged.
    set: EndpointSet<SocketAddr>,
}

impl BackendHealth {
    /// Detectors for `policy` that will mark endpoints of `set` once
    /// [`activated`](Self::activate), probing over `tls` (the backend's) where the probes need
    /// it. Spawns the outlier interval task, stopped on drop.
    pub(crate) fn new(
        policy: &HealthPolicy,
        tls: Option<&UpstreamTlsConfig>,
        set: &EndpointSet<SocketAddr>,
    ) -> Self {
        let retired = Arc::new(Mutex::new(false));
        let combiner = HealthCombiner::new({
            let set = set.clone();
            let retired = retired.clone();
            move |event: HealthEvent<SocketAddr>| {
                // Under the lock, so that `retire` cannot slip between the check and the mark.
                let retired = retired.lock().unwrap_or_else(PoisonError::into_inner);
                if !*retired {
                    tracing::info!(endpoint = %event.key, health = ?event.health, "endpoint health changed");
                    set.set_healthy(&event.key, event.health.is_healthy());
                }
            }
        });
        let outlier = Arc::new(OutlierDetector::new(
            outlier_config(&policy.outlier_detection),
            combiner.sink(Source::Outlier),
        ));
        let ticks = outlier.spawn();
        let probe_tls = probe_tls(policy, tls);
        let active = policy.active.as_ref().map(|a| {
            let tls = probe_tls.as_ref().map(|(_, tls)| tls.clone());
            ActiveChecker::new(active_config(a, tls), combiner.sink(Source::Active))
        });
        Self {
            active_policy: policy.active.clone(),
            probe_tls: probe_tls.map(|(id, _)| id),
            outlier_policy: policy.outlier_detection.clone(),
            combiner,
            outlier,
            active,
            retired,
            ticks,
            endpoints: Mutex::default(),
            set: set.clone(),
        }
    }

    /// Makes these the detectors of the balancer: endpoints that have not passed a probe yet get
    /// no traffic (down to the panic threshold); without active checks, every endpoint starts
    /// healthy.
    pub(crate) fn activate(&self) {
        self.set.set_new_endpoints_healthy(self.active.is_none());
    }

    /// Whether these detectors are what `policy` asks for, probing over `tls`.
    pub(crate) fn matches(&self, policy: &HealthPolicy, tls: Option<&UpstreamTlsConfig>) -> bool {
        self.active_policy == policy.active
            && self.outlier_policy == policy.outlier_detection
            && self.probe_tls == probe_tls(policy, tls).map(|(id, _)| id)
    }

    /// Stops these detectors from marking endpoints and clears every mark they made, before a
    /// replacement takes over.
    pub(crate) fn retire(&self) {
        *self.retired.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.ticks.abort();
        for endpoint in self.lock_endpoints().iter() {
            self.set.set_healthy(endpoint, true);
        }
    }

    fn lock_endpoints(&self) -> std::sync::MutexGuard<'_, HashSet<SocketAddr>> {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `endpoints` the judged set: forgets those that are gone and prepares verdicts for
    /// new ones. Call it before the balancer gets the new endpoints, and
    /// [`start_probes`](Self::start_probes) after.
    pub(crate) fn set_endpoints(&self, endpoints: &[SocketAddr]) {
        let wanted: HashSet<SocketAddr> = endpoints.iter().copied().collect();
        let mut current = self.lock_endpoints();
        for gone in current.difference(&wanted) {
            self.combiner.remove(gone);
        }
        if self.active.is_some() {
            // The balancer starts endpoints it does not have yet unhealthy; the combiner must
            // agree, or the first passing probe would change nothing it knows of and never be
            // forwarded. Endpoints the balancer already has keep their health until their first
            // probe (a reload that adds checks does not pull a serving backend into panic).
            for new in wanted
                .difference(&current)
                .filter(|addr| self.set.state(addr).is_none())
            {
                self.combiner.report(
                    Source::Active,
                    HealthEvent {
                        key: *new,
                        health: Health::Unhealthy,
                    },
                );
            }
        }
        self.outlier.set_endpoints(wanted.iter().copied());
        *current = wanted;
    }

    /// Probes exactly the judged endpoints: starts probing new ones, stops the gone ones. Once
    /// the balancer has the endpoints, so that no first verdict arrives before its endpoint.
    pub(crate) fn start_probes(&self) {
        let (Some(active), Some(policy)) = (&self.active, &self.active_policy) else {
            return;
        };
        let current = self.lock_endpoints();
        active.set_endpoints(current.iter().map(|&addr| {
            let probed = match policy.port {
                Some(port) => SocketAddr::new(addr.ip(), port),
                None => addr,
            };
            (addr, probed)
        }));
    }
}

impl Drop for BackendHealth {
    fn drop(&mut self) {
        self.ticks.abort();
    }
}

fn outlier_config(o: &OutlierDetection) -> OutlierConfig {
    OutlierConfig {
        interval: o.interval,
        base_ejection_time: o.base_ejection_time,
        max_ejection_time: o.max_ejection_time,
        max_ejection_percent: o.max_ejection_percent,
        always_eject_one_host: o.always_eject_one_host,
        consecutive_5xx: o.consecutive_5xx,
        consecutive_gateway_failure: o.consecutive_gateway_failure,
        success_rate: o.success_rate.as_ref().map(|s| SuccessRateConfig {
            minimum_hosts: s.minimum_hosts as usize,
            request_volume: s.request_volume,
            stdev_factor: s.stdev_factor,
        }),
        failure_percentage: o
            .failure_percentage
            .as_ref()
            .map(|f| FailurePercentageConfig {
                minimum_hosts: f.minimum_hosts as usize,
                request_volume: f.request_volume,
                threshold: f.threshold,
            }),
    }
}

/// The TLS the active probes of `policy` speak on a backend secured by `tls`, with its
/// identity: the backend's own for HTTP and gRPC probes of the traffic port; none for TCP
/// probes, which only connect, and for probes of a separate `port`, which is usually plain.
fn probe_tls(policy: &HealthPolicy, tls: Option<&UpstreamTlsConfig>) -> Option<(u64, ProbeTls)> {
    let active = policy.active.as_ref()?;
    if active.port.is_some() || matches!(active.probe, HealthProbe::Tcp) {
        return None;
    }
    tls.map(UpstreamTlsConfig::probe_tls)
}

fn active_config(a: &ActiveHealthCheck, tls: Option<ProbeTls>) -> ActiveConfig {
    let probe = match &a.probe {
        HealthProbe::Tcp => Probe::Tcp,
        HealthProbe::Http {
            path,
            host,
            expected_statuses,
        } => {
            let mut http = HttpProbe::new(path.clone()).with_expected_statuses(
                expected_statuses
                    .iter()
                    .map(|r| *r.start()..r.end().saturating_add(1))
                    .collect(),
            );
            if let Some(host) = host {
                http = http.with_host(host.clone());
            }
            if let Some(tls) = tls {
                http = http.with_tls(tls);
            }
            Probe::Http(http)
        }
        HealthProbe::Grpc { service, authority } => {
            let mut grpc = GrpcProbe {
                authority: authority.clone(),
                ..GrpcProbe::new(service.clone())
            };
            if let Some(tls) = tls {
                grpc = grpc.with_tls(tls);
            }
            Probe::Grpc(grpc)
        }
    };
    ActiveConfig {
        interval: a.interval.max(Duration::from_millis(1)),
        jitter: a.jitter,
        timeout: a.timeout,
        healthy_threshold: a.healthy_threshold,
        unhealthy_threshold: a.unhealthy_threshold,
        max_concurrent_probes: MAX_CONCURRENT_PROBES,
        probe,
    }
}
