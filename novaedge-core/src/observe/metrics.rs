//! Request metrics in Prometheus form.
//!
//! | metric | labels | when |
//! |---|---|---|
//! | `novaedge_requests_total` | route, backend, code_class | a response ends (or the client goes away) |
//! | `novaedge_request_duration_seconds` | route, backend | same moment: arrival to the last body byte |
//! | `novaedge_upstream_rtt_seconds` | backend | each try that got a response head: request sent to head received |
//! | `novaedge_active_connections` | listener | client connections open now |
//! | `novaedge_circuit_breaker_overflows_total` | backend, limit | a request answered 503 by a breaker |
//! | `novaedge_rate_limited_total` | route | a request answered 429 by the route's rate limit |
//! | `novaedge_access_log_dropped_total` | | an access log line dropped, its queue full |
//!
//! Labels are names from the configuration, never request data: `route` is the route's
//! `namespace/name` (`""` for a request that matched no route), `backend` the backend that
//! answered (`""` when none did: no route, a filter answered, no endpoint), `code_class` `1xx`
//! to `5xx`. So the number of series is bounded by the configuration, and **a reload removes the
//! series of routes, backends and listeners the new snapshot no longer has**: a route renamed
//! or deleted does not leave its series behind for the life of the process. (A request still
//! finishing on the old configuration may add one back; the next reload removes it again.)
//! Counters of routes that stay keep counting across reloads.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use novaedge_health::Limit;
use novaedge_snapshot::ConfigSnapshot;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets, in seconds: sub-millisecond for local hops up to a minute for slow
/// uploads and long polls.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(BUCKETS)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) route: Arc<str>,
    pub(crate) backend: Arc<str>,
    pub(crate) code_class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteBackend {
    pub(crate) route: Arc<str>,
    pub(crate) backend: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendLabel {
    pub(crate) backend: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabel {
    pub(crate) route: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ListenerLabel {
    pub(crate) listener: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OverflowLabels {
    pub(crate) backend: Arc<str>,
    pub(crate) limit: &'static str,
}

/// A metric family that remembers which label sets it made, so that those of routes gone
/// after a reload can be removed (prometheus-client's `Family` cannot list them).
#[derive(Debug)]
struct Tracked<S, M, C = fn() -> M> {
    family: Family<S, M, C>,
    made: Mutex<HashSet<S>>,
}

impl<S, M, C> Tracked<S, M, C>
where
    S: Clone + Hash + Eq,
    C: MetricConstructor<M>,
{
    fn new(family: Family<S, M, C>) -> Self {
        Self {
            family,
            made: Mutex::default(),
        }
    }

    /// Runs `f` on the metric for `labels`; the lookup is a read lock and a hash, the lock
    /// on the label index is only taken for a label set seen for the first time.
    fn with<R>(&self, labels: &S, f: impl FnOnce(&M) -> R) -> R {
        if let Some(metric) = self.family.get(labels) {
            return f(&metric);
        }
        self.made
            .lock()
            .expect("metric label index")
            .insert(labels.clone());
        f(&self.family.get_or_create(labels))
    }

    fn retain(&self, keep: impl Fn(&S) -> bool) {
        self.made
            .lock()
            .expect("metric label index")
            .retain(|labels| {
                let kept = keep(labels);
                if !kept {
                    self.family.remove(labels);
                }
                kept
            });
    }
}

/// The engine's request metrics; made by the first
/// [`Engine::register_metrics`](crate::Engine::register_metrics).
#[derive(Debug)]
pub(crate) struct Metrics {
    requests: Tracked<RequestLabels, Counter>,
    duration: Tracked<RouteBackend, Histogram, Buckets>,
    upstream_rtt: Tracked<BackendLabel, Histogram, Buckets>,
    connections: Tracked<ListenerLabel, Gauge>,
    overflows: Tracked<OverflowLabels, Counter>,
    rate_limited: Tracked<RouteLabel, Counter>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Self {
            requests: Tracked::new(Family::default()),
            duration: Tracked::new(Family::new_with_constructor(Buckets)),
            upstream_rtt: Tracked::new(Family::new_with_constructor(Buckets)),
            connections: Tracked::new(Family::default()),
            overflows: Tracked::new(Family::default()),
            rate_limited: Tracked::new(Family::default()),
        }
    }

    /// Registers every family into `registry` (they are shared: registering into two
    /// registries shows the same values in both).
    pub(crate) fn register(&self, registry: &mut Registry, dropped_lines: Option<Counter>) {
        registry.register(
            "novaedge_requests",
            "Requests answered, by route, backend and status class",
            self.requests.family.clone(),
        );
        registry.register(
            "novaedge_request_duration_seconds",
            "Time from a request's arrival to the end of its response",
            self.duration.family.clone(),
        );
        registry.register(
            "novaedge_upstream_rtt_seconds",
            "Time from sending a request to an endpoint to its response head",
            self.upstream_rtt.family.clone(),
        );
        registry.register(
            "novaedge_active_connections",
            "Client connections open, by listener",
            self.connections.family.clone(),
        );
        registry.register(
            "novaedge_circuit_breaker_overflows",
            "Requests refused because a backend circuit breaker limit was reached",
            self.overflows.family.clone(),
        );
        registry.register(
            "novaedge_rate_limited",
            "Requests refused by a route's rate limit",
            self.rate_limited.family.clone(),
        );
        if let Some(dropped) = dropped_lines {
            registry.register(
                "novaedge_access_log_dropped",
                "Access log lines dropped because the writer fell behind",
                dropped,
            );
        }
    }

    /// Counts one finished request.
    pub(crate) fn request(
        &self,
        route: &Arc<str>,
        backend: &Arc<str>,
        status: u16,
        duration: Duration,
    ) {
        let labels = RequestLabels {
            route: route.clone(),
            backend: backend.clone(),
            code_class: code_class(status),
        };
        self.requests.with(&labels, |c| c.inc());
        let labels = RouteBackend {
            route: labels.route,
            backend: labels.backend,
        };
        self.duration
            .with(&labels, |h| h.observe(duration.as_secs_f64()));
    }

    pub(crate) fn upstream_rtt(&self, backend: &Arc<str>, rtt: Duration) {
        let labels = BackendLabel {
            backend: backend.clone(),
        };
        self.upstream_rtt
            .with(&labels, |h| h.observe(rtt.as_secs_f64()));
    }

    pub(crate) fn overflow(&self, backend: &Arc<str>, limit: Limit) {
        let labels = OverflowLabels {
            backend: backend.clone(),
            limit: match limit {
                Limit::Connections => "max_connections",
                Limit::PendingRequests => "max_pending_requests",
                Limit::Requests => "max_requests",
                Limit::Retries => "max_retries",
            },
        };
        self.overflows.with(&labels, |c| c.inc());
    }

    pub(crate) fn rate_limited(&self, route: &Arc<str>) {
        let labels = RouteLabel {
            route: route.clone(),
        };
        self.rate_limited.with(&labels, |c| c.inc());
    }

    /// The gauge of a listener's open connections, already counting one more.
    pub(crate) fn connection_opened(&self, listener: &Arc<str>) -> Gauge {
        let labels = ListenerLabel {
            listener: listener.clone(),
        };
        self.connections.with(&labels, |g| {
            g.inc();
            g.clone()
        })
    }

    /// Removes the series of routes, backends and listeners `snapshot` does not have.
    pub(crate) fn retain(&self, snapshot: &ConfigSnapshot) {
        let routes: HashSet<&str> = snapshot.routes.iter().map(|r| r.name.as_str()).collect();
        let backends: HashSet<&str> = snapshot.backends.iter().map(|b| b.name.as_str()).collect();
        let listeners: HashSet<&str> = snapshot.listeners.iter().map(|l| l.name.as_str()).collect();
        // The empty name stands for "none" and always stays.
        let route_ok = |r: &str| r.is_empty() || routes.contains(r);
        let backend_ok = |b: &str| b.is_empty() || backends.contains(b);
        self.requests
            .retain(|l| route_ok(&l.route) && backend_ok(&l.backend));
        self.duration
            .retain(|l| route_ok(&l.route) && backend_ok(&l.backend));
        self.upstream_rtt.retain(|l| backend_ok(&l.backend));
        self.overflows.retain(|l| backend_ok(&l.backend));
        self.rate_limited.retain(|l| route_ok(&l.route));
        // A listener's gauge goes with the listener; connections it still drains count on
        // their own handle, unseen.
        self.connections
            .retain(|l| listeners.contains(&*l.listener));
    }
}

/// `1xx` to `5xx`; anything outside 100 to 599 (hyper refuses those) is counted as `5xx`.
fn code_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn text(metrics: &Metrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry, None);
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn retain_drops_series_of_routes_gone() {
        let metrics = Metrics::new();
        let (a, b, none): (Arc<str>, Arc<str>, Arc<str>) =
            ("ns/a".into(), "ns/b".into(), "".into());
        let be: Arc<str> = "be".into();
        metrics.request(&a, &be, 200, Duration::from_millis(1));
        metrics.request(&b, &be, 503, Duration::from_millis(1));
        metrics.request(&none, &none, 404, Duration::from_millis(1));
        let out = text(&metrics);
        assert!(
            out.contains(
                r#"novaedge_requests_total{route="ns/a",backend="be",code_class="2xx"} 1"#
            ),
            "{out}"
        );
        assert!(
            out.contains(
                r#"novaedge_requests_total{route="ns/b",backend="be",code_class="5xx"} 1"#
            ),
            "{out}"
        );

        let mut snapshot = ConfigSnapshot::default();
        snapshot.routes.push(novaedge_snapshot::Route {
            name: "ns/a".into(),
            listener: "web".into(),
            hostnames: Vec::new(),
            rules: Vec::new(),
            creation_timestamp: 0,
            dialect: Default::default(),
        });
        snapshot.backends.push(novaedge_snapshot::Backend {
            name: "be".into(),
            protocol: novaedge_snapshot::UpstreamProtocol::Http1,
            endpoints: Vec::new(),
            load_balancing: Default::default(),
            health: Default::default(),
            tls: None,
        });
        metrics.retain(&snapshot);
        let out = text(&metrics);
        assert!(out.contains(r#"route="ns/a""#), "{out}");
        assert!(!out.contains(r#"route="ns/b""#), "{out}");
        assert!(
            out.contains(r#"novaedge_requests_total{route="",backend="",code_class="4xx"} 1"#),
            "{out}"
        );
        // A series removed and used again starts over, and is tracked again.
        metrics.request(&b, &be, 200, Duration::from_millis(1));
        assert!(
            text(&metrics).contains(
                r#"novaedge_requests_total{route="ns/b",backend="be",code_class="2xx"} 1"#
            )
        );
        metrics.retain(&snapshot);
        assert!(!text(&metrics).contains(r#"route="ns/b""#));
    }

    #[test]
    fn code_classes() {
        assert_eq!(code_class(101), "1xx");
        assert_eq!(code_class(204), "2xx");
        assert_eq!(code_class(308), "3xx");
        assert_eq!(code_class(429), "4xx");
        assert_eq!(code_class(504), "5xx");
    }
}
