//! Request metrics in Prometheus form.
//!
//! | metric | labels | when |
//! |---|---|---|
//! | `novaedge_requests_total` | route, backend, code_class | a response ends (or the client goes away) |
//! | `novaedge_request_duration_seconds` | route, backend | same moment: arrival to the last body byte |
//! | `novaedge_upstream_rtt_seconds` | backend | each try that got a response head: request sent to head received |
//! | `novaedge_active_connections` | listener | client connections open now |
//! | `novaedge_parked_connections` | listener | of those, the ones waiting for a request with no HTTP state: HTTP/1.1 between requests (parked), and new ones before their first bytes |
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

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use novaedge_health::Limit;
use novaedge_snapshot::ConfigSnapshot;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// Latency buckets, in seconds: sub-millisecond for local hops up to a minute for slow
/// uploads and long polls.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// [`BUCKETS`] in nanoseconds, for comparing durations without floating point.
const BUCKET_NANOS: [u64; 16] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// A latency histogram over [`BUCKETS`] whose `observe` is two atomic adds.
///
/// prometheus-client's `Histogram` takes a lock for every observation; this one, on the request
/// path of every request, takes none. The count is the sum of the buckets, so a scrape never
/// sees a count that disagrees with them; the sum (kept in nanoseconds, exact) may run ahead
/// or behind them by the observations made while the scrape reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct Latency(Arc<LatencyCounts>);

#[derive(Debug, Default)]
struct LatencyCounts {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Latency {
    pub(crate) fn observe(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NANOS.partition_point(|&bound| bound < nanos);
        self.0.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut count = 0;
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.0.buckets)
            .map(|(bound, n)| {
                let n = n.load(Ordering::Relaxed);
                count += n;
                (bound, n)
            })
            .collect();
        #[expect(
            clippy::cast_precision_loss,
            reason = "a sum of seconds for Prometheus"
        )]
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Makes [`Latency`] histograms for a family.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Buckets;

impl MetricConstructor<Latency> for Buckets {
    fn new_metric(&self) -> Latency {
        Latency::default()
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
        crate::sync::lock(&self.made).insert(labels.clone());
        f(&self.family.get_or_create(labels))
    }

    fn retain(&self, keep: impl Fn(&S) -> bool) {
        crate::sync::lock(&self.made).retain(|labels| {
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
    duration: Tracked<RouteBackend, Latency, Buckets>,
    upstream_rtt: Tracked<BackendLabel, Latency, Buckets>,
    connections: Tracked<ListenerLabel, Gauge>,
    parked: Tracked<ListenerLabel, Gauge>,
    overflows: Tracked<OverflowLabels, Counter>,
    rate_limited: Tracked<RouteLabel, Counter>,
    /// The series every request updates, by route and backend, read without a lock.
    by_route: Handles<Arc<RouteSeries>>,
}

/// The series of one route and backend: counters per status class (made at first use, so
/// that classes never seen show no series) and the duration histogram.
#[derive(Debug)]
struct RouteSeries {
    labels: RouteBackend,
    classes: [OnceLock<Counter>; 5],
    duration: Latency,
}

/// Metric handles by route and backend, for the request path, keyed by the **addresses** of
/// the names a request carries: the `Arc<str>`s of the runtime it was routed on. A lookup is an
/// atomic load and one probe of a hash of two addresses, where a lookup by text hashes and
/// compares both names, and a `Family` lookup takes a read lock, hashes the label set with
/// SipHash and clones its `Arc`s.
///
/// Each entry holds its names, so that their addresses cannot be reused for other names while
/// it is there. Entries are added under a mutex the first time a pair is seen, by copying the
/// map (rare: the set is bounded by the configuration). A reload makes new names, so
/// [`Metrics::retain`] empties the map; the series live on in their families, where the next
/// request of each finds them again. Names must be made once per runtime, never per request:
/// each new address is a new entry (a map past [`MAX_HANDLES`] entries starts over, so that
/// such a mistake costs speed, not memory).
struct Handles<V> {
    map: ArcSwap<HandleMap<V>>,
    write: Mutex<()>,
}

type HandleMap<V> = HashMap<(usize, usize), Handle<V>, foldhash::fast::RandomState>;

/// Entries a [`Handles`] map holds at most: far more route and backend pairs than a
/// configuration has.
const MAX_HANDLES: usize = 1 << 16;

#[derive(Clone)]
struct Handle<V> {
    /// Held for their addresses, the key.
    _names: (Arc<str>, Arc<str>),
    value: V,
}

impl<V> std::fmt::Debug for Handles<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handles")
            .field("entries", &self.map.load().len())
            .finish()
    }
}

/// Where a name lives: the key of its handles.
fn address(name: &Arc<str>) -> usize {
    Arc::as_ptr(name).cast::<u8>().addr()
}

impl<V: Clone> Handles<V> {
    fn new() -> Self {
        Self {
            map: ArcSwap::from_pointee(HashMap::default()),
            write: Mutex::new(()),
        }
    }

    /// Runs `f` on the handle of `(outer, inner)`, made by `make` the first time. The handle
    /// is borrowed from the map, not cloned: no reference count shared by every request's
    /// thread is touched on the way.
    fn with<R>(
        &self,
        outer: &Arc<str>,
        inner: &Arc<str>,
        make: impl FnOnce() -> V,
        f: impl FnOnce(&V) -> R,
    ) -> R {
        let key = (address(outer), address(inner));
        if let Some(handle) = self.map.load().get(&key) {
            return f(&handle.value);
        }
        let _write = crate::sync::lock(&self.write);
        let current = self.map.load_full();
        if let Some(handle) = current.get(&key) {
            return f(&handle.value);
        }
        let value = make();
        let r = f(&value);
        let mut next = match current.len() < MAX_HANDLES {
            true => HandleMap::clone(&current),
            false => HandleMap::default(),
        };
        let names = (outer.clone(), inner.clone());
        next.insert(
            key,
            Handle {
                _names: names,
                value,
            },
        );
        self.map.store(Arc::new(next));
        r
    }

    /// Forgets every handle (they are found again from their families at next use).
    fn clear(&self) {
        let _write = crate::sync::lock(&self.write);
        self.map.store(Arc::new(HashMap::default()));
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Self {
            requests: Tracked::new(Family::default()),
            duration: Tracked::new(Family::new_with_constructor(Buckets)),
            upstream_rtt: Tracked::new(Family::new_with_constructor(Buckets)),
            connections: Tracked::new(Family::default()),
            parked: Tracked::new(Family::default()),
            overflows: Tracked::new(Family::default()),
            rate_limited: Tracked::new(Family::default()),
            by_route: Handles::new(),
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
            "novaedge_parked_connections",
            "Client connections waiting for a request with no HTTP state held, by listener",
            self.parked.family.clone(),
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
        let make = || {
            let labels = RouteBackend {
                route: route.clone(),
                backend: backend.clone(),
            };
            Arc::new(RouteSeries {
                duration: self.duration.with(&labels, Latency::clone),
                labels,
                classes: Default::default(),
            })
        };
        self.by_route.with(route, backend, make, |series| {
            let class = code_class(status);
            let index = usize::from(class.as_bytes()[0] - b'1');
            series.classes[index]
                .get_or_init(|| {
                    let labels = RequestLabels {
                        route: series.labels.route.clone(),
                        backend: series.labels.backend.clone(),
                        code_class: class,
                    };
                    self.requests.with(&labels, Counter::clone)
                })
                .inc();
            series.duration.observe(duration);
        });
    }

    /// The `novaedge_upstream_rtt_seconds` series of `backend`: the request path keeps it with
    /// the backend's runtime, made at its first use, and finds it there without a lookup.
    pub(crate) fn upstream_rtt(&self, backend: &Arc<str>) -> Latency {
        let labels = BackendLabel {
            backend: backend.clone(),
        };
        self.upstream_rtt.with(&labels, Latency::clone)
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

    /// The gauges of a listener's open connections, already counting one more, and of its
    /// parked ones.
    pub(crate) fn connection_opened(&self, listener: &Arc<str>) -> (Gauge, Gauge) {
        let labels = ListenerLabel {
            listener: listener.clone(),
        };
        let open = self.connections.with(&labels, |g| {
            g.inc();
            g.clone()
        });
        (open, self.parked.with(&labels, Gauge::clone))
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
        self.parked.retain(|l| listeners.contains(&*l.listener));
        self.by_route.clear();
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

    /// Asserts that the exposition `out` has `line`.
    fn has(out: &str, line: &str) {
        assert!(out.contains(line), "no {line} in:\n{out}");
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
        has(
            &out,
            r#"novaedge_requests_total{route="ns/a",backend="be",code_class="2xx"} 1"#,
        );
        has(
            &out,
            r#"novaedge_requests_total{route="ns/b",backend="be",code_class="5xx"} 1"#,
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
        has(&out, r#"route="ns/a""#);
        assert!(!out.contains(r#"route="ns/b""#), "{out}");
        has(
            &out,
            r#"novaedge_requests_total{route="",backend="",code_class="4xx"} 1"#,
        );
        // A series removed and used again starts over, and is tracked again.
        metrics.request(&b, &be, 200, Duration::from_millis(1));
        has(
            &text(&metrics),
            r#"novaedge_requests_total{route="ns/b",backend="be",code_class="2xx"} 1"#,
        );
        metrics.retain(&snapshot);
        assert!(!text(&metrics).contains(r#"route="ns/b""#));
    }

    #[test]
    fn names_count_by_text_whatever_their_address() {
        let metrics = Metrics::new();
        // A reload makes new `Arc`s of the same names: their requests add to the same series,
        // before and after the handles are cleared.
        let (a1, be1): (Arc<str>, Arc<str>) = ("ns/a".into(), "be".into());
        let (a2, be2): (Arc<str>, Arc<str>) = ("ns/a".into(), "be".into());
        metrics.request(&a1, &be1, 200, Duration::from_millis(1));
        metrics.request(&a2, &be2, 200, Duration::from_millis(1));
        metrics.by_route.clear();
        metrics.request(&a2, &be2, 201, Duration::from_millis(1));
        metrics.upstream_rtt(&be1).observe(Duration::from_millis(1));
        metrics.upstream_rtt(&be2).observe(Duration::from_millis(1));
        let out = text(&metrics);
        has(
            &out,
            r#"novaedge_requests_total{route="ns/a",backend="be",code_class="2xx"} 3"#,
        );
        has(
            &out,
            r#"novaedge_request_duration_seconds_count{route="ns/a",backend="be"} 3"#,
        );
        has(
            &out,
            r#"novaedge_upstream_rtt_seconds_count{backend="be"} 2"#,
        );
    }

    #[test]
    fn bucket_bounds_agree() {
        for (secs, nanos) in BUCKETS.iter().zip(BUCKET_NANOS) {
            assert_eq!((secs * 1e9).round() as u64, nanos, "{secs}");
        }
    }

    #[test]
    fn latency_buckets_count_and_sum() {
        let metrics = Metrics::new();
        let be: Arc<str> = "be".into();
        for micros in [300, 1_000, 1_001, 120_000_000] {
            metrics
                .upstream_rtt(&be)
                .observe(Duration::from_micros(micros));
        }
        let out = text(&metrics);
        for line in [
            r#"novaedge_upstream_rtt_seconds_bucket{le="0.0005",backend="be"} 1"#,
            // A bound is inclusive.
            r#"novaedge_upstream_rtt_seconds_bucket{le="0.001",backend="be"} 2"#,
            r#"novaedge_upstream_rtt_seconds_bucket{le="0.0025",backend="be"} 3"#,
            r#"novaedge_upstream_rtt_seconds_bucket{le="60.0",backend="be"} 3"#,
            r#"novaedge_upstream_rtt_seconds_bucket{le="+Inf",backend="be"} 4"#,
            r#"novaedge_upstream_rtt_seconds_count{backend="be"} 4"#,
            r#"novaedge_upstream_rtt_seconds_sum{backend="be"} 120.002301"#,
        ] {
            assert!(out.contains(line), "{line} missing from\n{out}");
        }
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
