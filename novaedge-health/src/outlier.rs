//! Passive outlier detection: eject endpoints whose real traffic fails, re-admit them after a
//! growing ejection time. The semantics follow Envoy's outlier detection
//! (<https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/outlier>,
//! `source/common/upstream/outlier_detection_impl.cc`), with the departures listed below.
//!
//! # How it works
//!
//! The data plane reports the [`Outcome`] of every request to an endpoint with
//! [`OutlierDetector::record`]. Three detectors look at those outcomes:
//!
//! - **consecutive 5xx** ([`OutlierConfig::consecutive_5xx`], default 5): any 5xx response, and
//!   any gateway error, adds one; any other response resets the count.
//! - **consecutive gateway failures** ([`OutlierConfig::consecutive_gateway_failure`], default
//!   5): 502, 503, 504 and [`Outcome::GatewayError`] (connect failure, reset, timeout) add one;
//!   any other response, including a 500, resets it. Gateway errors count for both detectors:
//!   this is Envoy's default mode (`split_external_local_origin_errors: false`), in which a
//!   local-origin failure is treated as a 503 from the host.
//! - **success rate** ([`OutlierConfig::success_rate`]): at every interval, among the hosts
//!   (not ejected) with at least `request_volume` requests in that interval, and only if there
//!   are at least `minimum_hosts` of them, a host whose success rate is below
//!   `mean − (stdev_factor / 1000) · stdev` is ejected. Envoy's defaults: 5 hosts, 100 requests,
//!   factor 1900.
//!
//! - **failure percentage** ([`OutlierConfig::failure_percentage`], off by default as in Envoy,
//!   whose `enforcing_failure_percentage` defaults to 0): at every interval, among the hosts
//!   (not ejected) with at least `request_volume` requests, and only if there are at least
//!   `minimum_hosts` of them, a host whose failure percentage is at least `threshold` is
//!   ejected. Envoy's defaults: 5 hosts, 50 requests, 85 %.
//!
//! When a consecutive detector reaches its threshold its count is reset, whether or not the host
//! could be ejected, as Envoy does.
//!
//! # Ejection and re-admission
//!
//! An ejected host stays out for `base_ejection_time × n` (capped at
//! `max(max_ejection_time, base_ejection_time)`), `n` being how many times it has been ejected
//! without having since stayed healthy: 30 s, 60 s, 90 s … 300 s with the defaults. Re-admission
//! happens at the interval tick ([`OutlierDetector::tick`], or the task from
//! [`OutlierDetector::spawn`]) that finds the time passed, so a host may stay out up to one
//! interval longer, as in Envoy. A host that stays healthy for `base_ejection_time` after
//! re-admission has `n` lowered by one at the next tick (Envoy's backoff decay).
//!
//! # `max_ejection_percent`
//!
//! A host is ejected only if, counting it, at most `max_ejection_percent` of the known hosts are
//! ejected: `(ejected + 1) · 100 ≤ max_ejection_percent · hosts`. This is current Envoy's rule,
//! which means that with the default of 10 % a backend with fewer than 10 hosts ejects
//! nothing. [`OutlierConfig::always_eject_one_host`] (Envoy's `always_eject_one_host`, default
//! off) lets one host be ejected whatever the percentage, when none is.
//!
//! # Departures from Envoy, and what is not built
//!
//! - `consecutive_gateway_failure` is *enforced* by default (Envoy counts it but enforces 0 %
//!   by default); the `enforcing_*` percentages are not modelled: every detector that is enabled
//!   is enforced at 100 %. Set a threshold to `None` to disable a detector.
//! - Not built: the split local-origin mode (`consecutive_local_origin_failure`), failure
//!   `max_ejection_time_jitter`. `successful_active_health_check_uneject_host` is left to the
//!   data plane, which calls [`OutlierDetector::uneject`].
//! - All hosts live behind one mutex taken per recorded outcome; it is held for a few counter
//!   updates only. A per-host atomic fast path is a possible later optimisation.
//!
//! Time is `tokio::time::Instant`: [`OutlierDetector::record_at`] and
//! [`OutlierDetector::tick_at`] take it explicitly, the other methods read the tokio clock, so
//! tests drive everything with `tokio::time::pause()`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::event::{Health, HealthEvent, HealthSink};

/// The hosts by key. Looked up on every recorded response; keys are endpoints from the
/// configuration, not values a client chooses, so they need no DoS-resistant (and slower)
/// SipHash.
type Hosts<K> = HashMap<K, HostState, foldhash::fast::RandomState>;

/// What happened to one request sent to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response that is not a 5xx.
    Success,
    /// A 5xx response with this status; 502, 503 and 504 are also gateway failures.
    Http5xx(u16),
    /// The request failed before a response: connect failure, connection reset, timeout.
    /// Counts as a 5xx and as a gateway failure.
    GatewayError,
}

impl Outcome {
    /// Classifies an HTTP response status.
    pub fn from_status(status: u16) -> Self {
        if (500..600).contains(&status) {
            Outcome::Http5xx(status)
        } else {
            Outcome::Success
        }
    }

    fn is_5xx(self) -> bool {
        !matches!(self, Outcome::Success)
    }

    fn is_gateway_failure(self) -> bool {
        matches!(self, Outcome::GatewayError | Outcome::Http5xx(502..=504))
    }
}

/// Why a host was ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EjectionReason {
    /// [`OutlierConfig::consecutive_5xx`] reached.
    Consecutive5xx,
    /// [`OutlierConfig::consecutive_gateway_failure`] reached.
    ConsecutiveGatewayFailure,
    /// Success rate below the interval's threshold.
    SuccessRate,
    /// Failure percentage at or above [`FailurePercentageConfig::threshold`].
    FailurePercentage,
}

/// Outlier detection settings, named and defaulted as Envoy's `OutlierDetection`.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierConfig {
    /// How often ejections are reviewed and success rates computed. Default 10 s.
    pub interval: Duration,
    /// Ejection time per ejection in a row. Default 30 s.
    pub base_ejection_time: Duration,
    /// Cap of the ejection time. Default 300 s.
    pub max_ejection_time: Duration,
    /// At most this percentage of hosts ejected at once (see the module docs). Default 10.
    pub max_ejection_percent: u8,
    /// Allow one ejection when no host is ejected, whatever the percentage. Default `false`.
    pub always_eject_one_host: bool,
    /// Eject after this many 5xx in a row; `None` disables. Default `Some(5)`.
    pub consecutive_5xx: Option<u32>,
    /// Eject after this many gateway failures in a row; `None` disables. Default `Some(5)`.
    pub consecutive_gateway_failure: Option<u32>,
    /// Success-rate ejection; `None` disables. Default on, with Envoy's parameters.
    pub success_rate: Option<SuccessRateConfig>,
    /// Failure-percentage ejection; `None` disables. Default off, as in Envoy.
    pub failure_percentage: Option<FailurePercentageConfig>,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            always_eject_one_host: false,
            consecutive_5xx: Some(5),
            consecutive_gateway_failure: Some(5),
            success_rate: Some(SuccessRateConfig::default()),
            failure_percentage: None,
        }
    }
}

/// Success-rate ejection settings (Envoy's `success_rate_*` fields).
#[derive(Clone, Debug, PartialEq)]
pub struct SuccessRateConfig {
    /// Hosts with enough volume needed before any is judged. Default 5.
    pub minimum_hosts: usize,
    /// Requests in the interval for a host to be judged. Default 100.
    pub request_volume: u64,
    /// Threshold is `mean − stdev_factor / 1000 · stdev`. Default 1900.
    pub stdev_factor: u32,
}

impl Default for SuccessRateConfig {
    fn default() -> Self {
        Self {
            minimum_hosts: 5,
            request_volume: 100,
            stdev_factor: 1900,
        }
    }
}

/// Failure-percentage ejection settings (Envoy's `failure_percentage_*` fields).
#[derive(Clone, Debug, PartialEq)]
pub struct FailurePercentageConfig {
    /// Hosts with enough volume needed before any is judged. Default 5.
    pub minimum_hosts: usize,
    /// Requests in the interval for a host to be judged. Default 50.
    pub request_volume: u64,
    /// A host failing at least this percentage of its requests is ejected. Default 85.
    pub threshold: u8,
}

impl Default for FailurePercentageConfig {
    fn default() -> Self {
        Self {
            minimum_hosts: 5,
            request_volume: 50,
            threshold: 85,
        }
    }
}

/// Passive outlier detector for one backend's endpoints. See the module docs.
pub struct OutlierDetector<K> {
    config: OutlierConfig,
    hosts: Mutex<Hosts<K>>,
    sink: Box<dyn HealthSink<K>>,
}

#[derive(Debug, Default)]
struct HostState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    /// Ejections in a row (the backoff multiplier).
    ejections: u32,
    ejected_until: Option<Instant>,
    /// When the host was last re-admitted, or its backoff last decayed.
    healthy_since: Option<Instant>,
    interval_success: u64,
    interval_failure: u64,
}

// === impl Outcome handling ===

impl<K> OutlierDetector<K>
where
    K: Clone + Eq + Hash + Debug + Send + Sync + 'static,
{
    /// A detector with no hosts yet; changes go to `sink`.
    pub fn new(config: OutlierConfig, sink: impl HealthSink<K>) -> Self {
        Self {
            config,
            hosts: Mutex::new(Hosts::default()),
            sink: Box::new(sink),
        }
    }

    /// The settings.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Hosts<K>> {
        // Every update leaves host state consistent before anything can panic (a sink runs
        // last), so a poisoned lock is still usable.
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts tracking `key` as healthy; does nothing if it is tracked.
    pub fn add(&self, key: K) {
        self.lock().entry(key).or_default();
    }

    /// Stops tracking `key`. No event is sent: the endpoint is gone.
    pub fn remove(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Makes the tracked set exactly `keys`, keeping the state of hosts that stay.
    pub fn set_endpoints(&self, keys: impl IntoIterator<Item = K>) {
        let keys: HashMap<K, ()> = keys.into_iter().map(|k| (k, ())).collect();
        let mut hosts = self.lock();
        hosts.retain(|k, _| keys.contains_key(k));
        for (k, ()) in keys {
            hosts.entry(k).or_default();
        }
    }

    /// Whether `key` is currently ejected (`None` if unknown).
    pub fn is_ejected(&self, key: &K) -> Option<bool> {
        self.lock().get(key).map(|h| h.ejected_until.is_some())
    }

    /// When `key`'s current ejection ends (re-admission happens at the first tick after).
    pub fn ejected_until(&self, key: &K) -> Option<Instant> {
        self.lock().get(key).and_then(|h| h.ejected_until)
    }

    /// How many hosts are ejected now.
    pub fn ejected_count(&self) -> usize {
        self.lock()
            .values()
            .filter(|h| h.ejected_until.is_some())
            .count()
    }

    /// Records one request outcome for `key`, now. Unknown keys are ignored.
    pub fn record(&self, key: &K, outcome: Outcome) {
        self.record_at(key, outcome, Instant::now());
    }

    /// Records one request outcome for `key` at `now`. Unknown keys are ignored.
    pub fn record_at(&self, key: &K, outcome: Outcome, now: Instant) {
        let mut hosts = self.lock();
        let ejected = {
            let Some(host) = hosts.get_mut(key) else {
                return;
            };
            if outcome.is_5xx() {
                host.interval_failure += 1;
                host.consecutive_5xx += 1;
            } else {
                host.interval_success += 1;
                host.consecutive_5xx = 0;
            }
            if outcome.is_gateway_failure() {
                host.consecutive_gateway += 1;
            } else {
                host.consecutive_gateway = 0;
            }
            let mut reason = None;
            if let Some(limit) = self.config.consecutive_5xx
                && host.consecutive_5xx >= limit
            {
                host.consecutive_5xx = 0;
                reason = Some(EjectionReason::Consecutive5xx);
            }
            if let Some(limit) = self.config.consecutive_gateway_failure
                && host.consecutive_gateway >= limit
            {
                host.consecutive_gateway = 0;
                reason = reason.or(Some(EjectionReason::ConsecutiveGatewayFailure));
            }
            match reason {
                Some(reason) => self.try_eject(&mut hosts, key, reason, now),
                None => false,
            }
        };
        if ejected {
            // Under the lock, like every event: a re-admission by a concurrent tick and this
            // ejection must reach the sink in the order they happened.
            self.emit(key.clone(), Health::Unhealthy);
        }
    }

    /// Ejects `key` if it is not ejected and `max_ejection_percent` allows it.
    fn try_eject(
        &self,
        hosts: &mut Hosts<K>,
        key: &K,
        reason: EjectionReason,
        now: Instant,
    ) -> bool {
        let total = hosts.len();
        let ejected = hosts.values().filter(|h| h.ejected_until.is_some()).count();
        let Some(host) = hosts.get_mut(key) else {
            return false;
        };
        if host.ejected_until.is_some() {
            return false;
        }
        let percent = usize::from(self.config.max_ejection_percent.min(100));
        let allowed = (ejected + 1) * 100 <= percent * total
            || (self.config.always_eject_one_host && ejected == 0);
        if !allowed {
            tracing::debug!(
                ?key,
                ?reason,
                ejected,
                total,
                "outlier ejection blocked by max_ejection_percent"
            );
            return false;
        }
        host.ejections = host.ejections.saturating_add(1);
        let duration = self.ejection_time(host.ejections);
        host.ejected_until = Some(now + duration);
        host.healthy_since = None;
        tracing::info!(
            ?key,
            ?reason,
            ejections = host.ejections,
            ?duration,
            "outlier ejected"
        );
        true
    }

    fn ejection_time(&self, ejections: u32) -> Duration {
        let base = self.config.base_ejection_time;
        let cap = self.config.max_ejection_time.max(base);
        base.checked_mul(ejections).unwrap_or(cap).min(cap)
    }

    /// Re-admits `key` now if it is ejected, and returns whether it was. For a data plane that
    /// wants Envoy's `successful_active_health_check_uneject_host`: call it when an active check
    /// of an ejected endpoint passes. The backoff multiplier is kept.
    pub fn uneject(&self, key: &K) -> bool {
        self.uneject_at(key, Instant::now())
    }

    /// [`uneject`](Self::uneject) at `now`.
    pub fn uneject_at(&self, key: &K, now: Instant) -> bool {
        let mut hosts = self.lock();
        let Some(host) = hosts.get_mut(key) else {
            return false;
        };
        if host.ejected_until.take().is_none() {
            return false;
        }
        host.healthy_since = Some(now);
        tracing::info!(?key, "outlier re-admitted early");
        self.emit(key.clone(), Health::Healthy);
        true
    }

    /// Runs one interval's work now; see [`tick_at`](Self::tick_at).
    pub fn tick(&self) {
        self.tick_at(Instant::now());
    }

    /// Runs one interval's work at `now`: re-admits hosts whose ejection time has passed, decays
    /// the backoff of hosts that stayed healthy, runs success-rate ejection and starts a new
    /// counting interval.
    pub fn tick_at(&self, now: Instant) {
        let mut events = Vec::new();
        // Events are sent before the lock is released; see `record_at`.
        {
            let mut hosts = self.lock();
            let base = self.config.base_ejection_time;
            for (key, host) in hosts.iter_mut() {
                match host.ejected_until {
                    Some(until) if until <= now => {
                        host.ejected_until = None;
                        host.healthy_since = Some(now);
                        tracing::info!(?key, "outlier re-admitted");
                        events.push(HealthEvent {
                            key: key.clone(),
                            health: Health::Healthy,
                        });
                    }
                    Some(_) => {}
                    None => {
                        if host.ejections > 0
                            && host
                                .healthy_since
                                .is_some_and(|since| now.saturating_duration_since(since) >= base)
                        {
                            host.ejections -= 1;
                            host.healthy_since = Some(now);
                        }
                    }
                }
            }
            if let Some(sr) = &self.config.success_rate {
                for key in success_rate_outliers(&hosts, sr) {
                    if self.try_eject(&mut hosts, &key, EjectionReason::SuccessRate, now) {
                        events.push(HealthEvent {
                            key,
                            health: Health::Unhealthy,
                        });
                    }
                }
            }
            if let Some(fp) = &self.config.failure_percentage {
                for key in failure_percentage_outliers(&hosts, fp) {
                    if self.try_eject(&mut hosts, &key, EjectionReason::FailurePercentage, now) {
                        events.push(HealthEvent {
                            key,
                            health: Health::Unhealthy,
                        });
                    }
                }
            }
            for host in hosts.values_mut() {
                host.interval_success = 0;
                host.interval_failure = 0;
            }
            for event in events {
                self.sink.report(event);
            }
        }
    }

    fn emit(&self, key: K, health: Health) {
        self.sink.report(HealthEvent { key, health });
    }

    /// Spawns the interval task (first tick one interval from now). It holds only a weak
    /// reference and ends when the detector is dropped; abort the handle to stop it sooner.
    pub fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        let period = self.config.interval;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval_at(Instant::now() + period, period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                match weak.upgrade() {
                    Some(detector) => detector.tick(),
                    None => return,
                }
            }
        })
    }
}

/// Hosts below the interval's success-rate threshold, per Envoy's `success_rate` detector.
fn success_rate_outliers<K: Clone>(hosts: &Hosts<K>, config: &SuccessRateConfig) -> Vec<K> {
    let rates: Vec<(&K, f64)> = hosts
        .iter()
        .filter(|(_, h)| h.ejected_until.is_none())
        .filter_map(|(k, h)| {
            let total = h.interval_success + h.interval_failure;
            (total >= config.request_volume.max(1))
                .then(|| (k, h.interval_success as f64 / total as f64))
        })
        .collect();
    if rates.is_empty() || rates.len() < config.minimum_hosts {
        return Vec::new();
    }
    let n = rates.len() as f64;
    let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / n;
    let variance = rates.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
    let threshold = mean - f64::from(config.stdev_factor) / 1000.0 * variance.sqrt();
    rates
        .into_iter()
        .filter(|(_, r)| *r < threshold)
        .map(|(k, _)| k.clone())
        .collect()
}

/// Hosts at or above the failure-percentage threshold, per Envoy's `failure_percentage`
/// detector.
fn failure_percentage_outliers<K: Clone>(
    hosts: &Hosts<K>,
    config: &FailurePercentageConfig,
) -> Vec<K> {
    let judged: Vec<(&K, &HostState)> = hosts
        .iter()
        .filter(|(_, h)| h.ejected_until.is_none())
        .filter(|(_, h)| h.interval_success + h.interval_failure >= config.request_volume.max(1))
        .collect();
    if judged.len() < config.minimum_hosts {
        return Vec::new();
    }
    judged
        .into_iter()
        .filter(|(_, h)| {
            let total = h.interval_success + h.interval_failure;
            h.interval_failure * 100 >= u64::from(config.threshold) * total
        })
        .map(|(k, _)| k.clone())
        .collect()
}

impl<K: Debug> Debug for OutlierDetector<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutlierDetector")
            .field("config", &self.config)
            .field("hosts", &self.hosts.lock().map(|h| h.len()).ok())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

    type Events = UnboundedReceiver<HealthEvent<&'static str>>;

    /// Consecutive detectors only, no percentage cap: one concern per test.
    fn consecutive_only() -> OutlierConfig {
        OutlierConfig {
            max_ejection_percent: 100,
            success_rate: None,
            ..OutlierConfig::default()
        }
    }

    fn detector(
        config: OutlierConfig,
        keys: &[&'static str],
    ) -> (Arc<OutlierDetector<&'static str>>, Events) {
        let (tx, rx) = unbounded_channel();
        let d = Arc::new(OutlierDetector::new(config, tx));
        d.set_endpoints(keys.iter().copied());
        (d, rx)
    }

    fn drain(rx: &mut Events) -> Vec<(&'static str, Health)> {
        std::iter::from_fn(|| rx.try_recv().ok().map(HealthEvent::into_parts)).collect()
    }

    fn record_n(d: &OutlierDetector<&'static str>, key: &'static str, outcome: Outcome, n: usize) {
        for _ in 0..n {
            d.record(&key, outcome);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn five_consecutive_5xx_eject() {
        let (d, mut rx) = detector(consecutive_only(), &["a", "b"]);
        record_n(&d, "a", Outcome::Http5xx(500), 4);
        assert_eq!(d.is_ejected(&"a"), Some(false));
        assert!(drain(&mut rx).is_empty());
        d.record(&"a", Outcome::from_status(500));
        assert_eq!(d.is_ejected(&"a"), Some(true));
        assert_eq!(d.is_ejected(&"b"), Some(false));
        assert_eq!(drain(&mut rx), [("a", Health::Unhealthy)]);
        // Further failures while ejected send nothing more.
        record_n(&d, "a", Outcome::Http5xx(500), 10);
        assert!(drain(&mut rx).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_in_between_resets_the_count() {
        let (d, mut rx) = detector(consecutive_only(), &["a"]);
        record_n(&d, "a", Outcome::Http5xx(500), 4);
        d.record(&"a", Outcome::from_status(404)); // not a 5xx: a success for outlier purposes
        record_n(&d, "a", Outcome::Http5xx(500), 4);
        assert_eq!(d.is_ejected(&"a"), Some(false));
        d.record(&"a", Outcome::Http5xx(500));
        assert_eq!(drain(&mut rx), [("a", Health::Unhealthy)]);
    }

    #[tokio::test(start_paused = true)]
    async fn gateway_failures_count_separately_from_other_5xx() {
        let config = OutlierConfig {
            consecutive_5xx: None,
            ..consecutive_only()
        };
        let (d, mut rx) = detector(config, &["a"]);
        record_n(&d, "a", Outcome::Http5xx(503), 4);
        d.record(&"a", Outcome::Http5xx(500)); // a 5xx, but not a gateway failure: resets
        record_n(&d, "a", Outcome::GatewayError, 4);
        assert_eq!(d.is_ejected(&"a"), Some(false));
        d.record(&"a", Outcome::Http5xx(502));
        assert_eq!(drain(&mut rx), [("a", Health::Unhealthy)]);
    }

    #[tokio::test(start_paused = true)]
    async fn gateway_errors_also_count_as_5xx() {
        let config = OutlierConfig {
            consecutive_gateway_failure: None,
            ..consecutive_only()
        };
        let (d, mut rx) = detector(config, &["a"]);
        record_n(&d, "a", Outcome::GatewayError, 2);
        record_n(&d, "a", Outcome::Http5xx(500), 3);
        assert_eq!(drain(&mut rx), [("a", Health::Unhealthy)]);
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_time_grows_with_each_ejection_and_host_is_readmitted() {
        let (d, mut rx) = detector(consecutive_only(), &["a"]);
        for (round, secs) in [30u64, 60, 90].into_iter().enumerate() {
            let start = Instant::now();
            record_n(&d, "a", Outcome::GatewayError, 5);
            assert_eq!(
                d.ejected_until(&"a"),
                Some(start + Duration::from_secs(secs)),
                "round {round}"
            );
            tokio::time::advance(Duration::from_secs(secs - 1)).await;
            d.tick();
            assert_eq!(
                d.is_ejected(&"a"),
                Some(true),
                "round {round}: still out before its time"
            );
            tokio::time::advance(Duration::from_secs(1)).await;
            d.tick();
            assert_eq!(
                d.is_ejected(&"a"),
                Some(false),
                "round {round}: back after its time"
            );
            assert_eq!(
                drain(&mut rx),
                [("a", Health::Unhealthy), ("a", Health::Healthy)]
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_time_is_capped_and_decays_while_healthy() {
        let config = OutlierConfig {
            max_ejection_time: Duration::from_secs(100),
            ..consecutive_only()
        };
        let (d, _rx) = detector(config, &["a"]);
        let eject_and_wait = |d: &OutlierDetector<&'static str>| {
            let start = Instant::now();
            record_n(d, "a", Outcome::Http5xx(500), 5);
            d.ejected_until(&"a").unwrap() - start
        };
        let mut durations = Vec::new();
        for _ in 0..5 {
            let took = eject_and_wait(&d);
            durations.push(took.as_secs());
            tokio::time::advance(took).await;
            d.tick();
        }
        assert_eq!(durations, [30, 60, 90, 100, 100]);
        // Healthy for one base ejection time per step: the multiplier (5) goes down by one each.
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(30)).await;
            d.tick();
        }
        assert_eq!(eject_and_wait(&d).as_secs(), 90); // 5 - 3 = 2, +1 for this ejection
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_is_respected() {
        let keys: Vec<&'static str> =
            vec!["h0", "h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "h9"];
        let config = OutlierConfig {
            max_ejection_percent: 20,
            ..consecutive_only()
        };
        let (d, mut rx) = detector(config, &keys);
        for key in &keys[..3] {
            record_n(&d, key, Outcome::Http5xx(500), 5);
        }
        // 20 % of 10 hosts: two ejected, the third refused.
        assert_eq!(d.ejected_count(), 2);
        assert_eq!(
            drain(&mut rx),
            [("h0", Health::Unhealthy), ("h1", Health::Unhealthy)]
        );
        assert_eq!(d.is_ejected(&"h2"), Some(false));
        // Once one is back, the third can go (its count was reset at the refused attempt).
        tokio::time::advance(Duration::from_secs(30)).await;
        d.tick();
        assert_eq!(d.ejected_count(), 0);
        record_n(&d, "h2", Outcome::Http5xx(500), 5);
        assert_eq!(d.is_ejected(&"h2"), Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn default_percent_ejects_nothing_below_ten_hosts_unless_one_is_always_allowed() {
        let keys = ["a", "b", "c", "d", "e"];
        let strict = OutlierConfig {
            max_ejection_percent: 10,
            ..consecutive_only()
        };
        let (d, mut rx) = detector(strict.clone(), &keys);
        record_n(&d, "a", Outcome::Http5xx(500), 5);
        assert_eq!(d.ejected_count(), 0);
        assert!(drain(&mut rx).is_empty());

        let one = OutlierConfig {
            always_eject_one_host: true,
            ..strict
        };
        let (d, mut rx) = detector(one, &keys);
        record_n(&d, "a", Outcome::Http5xx(500), 5);
        record_n(&d, "b", Outcome::Http5xx(500), 5);
        assert_eq!(d.ejected_count(), 1);
        assert_eq!(drain(&mut rx), [("a", Health::Unhealthy)]);
    }

    #[tokio::test(start_paused = true)]
    async fn success_rate_outlier_is_ejected_at_the_interval() {
        let config = OutlierConfig {
            max_ejection_percent: 100,
            consecutive_5xx: None,
            consecutive_gateway_failure: None,
            ..OutlierConfig::default()
        };
        let keys = ["a", "b", "c", "d", "e"];
        let (d, mut rx) = detector(config.clone(), &keys);
        for key in &keys[..4] {
            record_n(&d, key, Outcome::Success, 100);
        }
        for _ in 0..50 {
            d.record(&"e", Outcome::Success);
            d.record(&"e", Outcome::Http5xx(500));
        }
        assert!(drain(&mut rx).is_empty());
        d.tick();
        assert_eq!(drain(&mut rx), [("e", Health::Unhealthy)]);

        // Fewer than minimum_hosts with enough volume: nobody is judged.
        let (d, mut rx) = detector(config, &keys);
        for key in &keys[..3] {
            record_n(&d, key, Outcome::Success, 100);
        }
        record_n(&d, "d", Outcome::Success, 99);
        record_n(&d, "e", Outcome::Http5xx(500), 100);
        d.tick();
        assert!(drain(&mut rx).is_empty());
        // Counters restart each interval: the next interval has no volume at all.
        d.tick();
        assert!(drain(&mut rx).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn failure_percentage_ejects_at_or_above_the_threshold() {
        let config = OutlierConfig {
            max_ejection_percent: 100,
            consecutive_5xx: None,
            consecutive_gateway_failure: None,
            success_rate: None,
            failure_percentage: Some(FailurePercentageConfig::default()),
            ..OutlierConfig::default()
        };
        let keys = ["a", "b", "c", "d", "e", "f"];
        let (d, mut rx) = detector(config, &keys);
        for key in &keys[..4] {
            record_n(&d, key, Outcome::Success, 50);
        }
        // e: exactly 85 % failures; f: 84 %.
        record_n(&d, "e", Outcome::Http5xx(500), 85);
        record_n(&d, "e", Outcome::Success, 15);
        record_n(&d, "f", Outcome::Http5xx(500), 84);
        record_n(&d, "f", Outcome::Success, 16);
        d.tick();
        assert_eq!(drain(&mut rx), [("e", Health::Unhealthy)]);
    }

    #[tokio::test(start_paused = true)]
    async fn spawned_task_readmits_on_its_interval() {
        let (d, mut rx) = detector(consecutive_only(), &["a"]);
        let task = d.spawn();
        let start = Instant::now();
        record_n(&d, "a", Outcome::GatewayError, 5);
        assert_eq!(
            rx.recv().await.map(HealthEvent::into_parts),
            Some(("a", Health::Unhealthy))
        );
        // Paused time auto-advances to the ticks; the third tick (30 s) re-admits.
        assert_eq!(
            rx.recv().await.map(HealthEvent::into_parts),
            Some(("a", Health::Healthy))
        );
        assert_eq!(Instant::now() - start, Duration::from_secs(30));
        drop(d);
        // The task holds a weak reference and ends once the detector is gone.
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn membership_changes_keep_state_and_drop_removed_hosts() {
        let (d, mut rx) = detector(consecutive_only(), &["a", "b"]);
        record_n(&d, "a", Outcome::Http5xx(500), 5);
        record_n(&d, "b", Outcome::Http5xx(500), 4);
        d.set_endpoints(["b", "c"]);
        assert_eq!(d.is_ejected(&"a"), None);
        assert_eq!(d.ejected_count(), 0);
        d.record(&"a", Outcome::Http5xx(500)); // unknown now: ignored
        d.record(&"b", Outcome::Http5xx(500)); // kept its count of 4
        assert_eq!(
            drain(&mut rx),
            [("a", Health::Unhealthy), ("b", Health::Unhealthy)]
        );
        d.remove(&"b");
        assert_eq!(d.ejected_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn uneject_readmits_early_and_keeps_the_backoff() {
        let (d, mut rx) = detector(consecutive_only(), &["a"]);
        assert!(!d.uneject(&"a"));
        record_n(&d, "a", Outcome::GatewayError, 5);
        assert!(d.uneject(&"a"));
        assert_eq!(d.is_ejected(&"a"), Some(false));
        assert_eq!(
            drain(&mut rx),
            [("a", Health::Unhealthy), ("a", Health::Healthy)]
        );
        let start = Instant::now();
        record_n(&d, "a", Outcome::GatewayError, 5);
        assert_eq!(d.ejected_until(&"a"), Some(start + Duration::from_secs(60)));
    }

    #[test]
    fn sinks_can_be_closures() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let seen = Arc::clone(&seen);
            move |e: HealthEvent<u32>| seen.lock().unwrap().push(e.into_parts())
        };
        let d = OutlierDetector::new(consecutive_only(), sink);
        d.add(7);
        let now = Instant::now();
        for _ in 0..5 {
            d.record_at(&7, Outcome::Http5xx(503), now);
        }
        d.tick_at(now + Duration::from_secs(30));
        assert_eq!(
            *seen.lock().unwrap(),
            [(7, Health::Unhealthy), (7, Health::Healthy)]
        );
    }
}
