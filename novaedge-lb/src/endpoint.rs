//! What the balancer knows about one endpoint beyond its key and weight: whether it is healthy,
//! how many requests it has in flight, and how long it has been taking to answer.
//!
//! Tables are immutable and rebuilt whenever the endpoint set changes, but this state must not be
//! reset by a rebuild: a pod that has 40 requests in flight still has them after a sibling pod
//! was added, and an endpoint that a health checker marked down stays down after a weight edit.
//! So each endpoint's state lives in an [`EndpointState`] behind an `Arc`, which every table built
//! for that endpoint shares. An [`EndpointSet`](crate::EndpointSet) keeps one per endpoint key
//! and hands the same `Arc` to every table it builds, which is how a proxy that rebuilds its
//! tables on every configuration reload keeps load and health: keep the `EndpointSet` (one per
//! backend) across reloads and call its `update`. Tables built directly with `new` get fresh
//! state of their own.
//!
//! Everything here is atomics, so the request path reads and updates it without locks:
//!
//! - health: a flag per endpoint. Flipping it does not rebuild anything; pickers skip unhealthy
//!   endpoints (see [`Selector`](crate::Selector) for the fallback walk and the panic
//!   threshold). The endpoints of one set share a counter of unhealthy members, so a pick learns
//!   "everyone is healthy" from one load and only then looks at flags at all.
//! - load: a count of requests in flight, raised by [`Picked::start`](crate::Picked::start) and
//!   lowered when the returned [`InFlight`] guard drops.
//! - latency: a peak-sensitive exponentially weighted moving average of response times, fed by
//!   [`InFlight::finish`] (or [`EndpointState::observe_rtt`]) and read by
//!   [`PeakEwma`](crate::PeakEwma). The algorithm is described in the
//!   [`peak_ewma`](crate::peak_ewma) module.

use std::fmt;
use std::sync::atomic::{AtomicIsize, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The decay used for latency estimates until a [`PeakEwma`](crate::PeakEwma) table sets its
/// own: linkerd's and tower's default of 10 seconds.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

const UNHEALTHY: u8 = 0b01;
const ATTACHED: u8 = 0b10;

/// The shared state of one endpoint: health, requests in flight, latency estimate.
///
/// Obtained from a table ([`Picked::state`](crate::Picked::state),
/// [`Table::states`](crate::Table::states)) or from an [`EndpointSet`](crate::EndpointSet) by
/// key; never built directly, since it belongs to the set whose health count it feeds.
pub struct EndpointState {
    /// `UNHEALTHY` and `ATTACHED` bits, changed together by compare-and-swap so that the group's
    /// unhealthy count stays exact.
    flags: AtomicU8,
    pending: AtomicU64,
    /// The latency estimate in nanoseconds as `f64` bits; `0.0` until the first sample.
    rtt_bits: AtomicU64,
    /// When the estimate was last sampled, in nanoseconds since [`time_origin`].
    rtt_stamp: AtomicU64,
    decay_nanos: AtomicU64,
    group: Arc<HealthGroup>,
}

/// The endpoints of one set: how many of its attached members are unhealthy.
///
/// A member is attached while it is in the set with a weight above 0; only attached members
/// count, so that removed or drained endpoints cannot push the set into panic mode.
#[derive(Debug, Default)]
pub(crate) struct HealthGroup {
    /// Signed: two concurrent flag changes may apply their counter updates in either order, so
    /// the count can dip below zero for an instant. Readers clamp it.
    unhealthy: AtomicIsize,
}

impl HealthGroup {
    #[inline]
    pub(crate) fn unhealthy(&self) -> usize {
        self.unhealthy.load(Ordering::Acquire).max(0) as usize
    }
}

// === impl EndpointState ===

impl EndpointState {
    pub(crate) fn new(group: Arc<HealthGroup>) -> Self {
        Self {
            flags: AtomicU8::new(0),
            pending: AtomicU64::new(0),
            rtt_bits: AtomicU64::new(0),
            rtt_stamp: AtomicU64::new(0),
            decay_nanos: AtomicU64::new(DEFAULT_DECAY.as_nanos() as u64),
            group,
        }
    }

    /// Whether the endpoint may be picked (as long as the set is not in panic mode).
    #[inline]
    pub fn is_healthy(&self) -> bool {
        self.flags.load(Ordering::Acquire) & UNHEALTHY == 0
    }

    /// Marks the endpoint healthy or unhealthy, at once and without rebuilding any table.
    /// Returns whether this changed the flag.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        let update = self
            .flags
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |flags| {
                let next = if healthy {
                    flags & !UNHEALTHY
                } else {
                    flags | UNHEALTHY
                };
                (next != flags).then_some(next)
            });
        match update {
            Ok(previous) => {
                if previous & ATTACHED != 0 {
                    let delta = if healthy { -1 } else { 1 };
                    self.group.unhealthy.fetch_add(delta, Ordering::AcqRel);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Counts the endpoint in its set's health (it is a member with a weight above 0).
    pub(crate) fn attach(&self) {
        let previous = self.flags.fetch_or(ATTACHED, Ordering::AcqRel);
        if previous & ATTACHED == 0 && previous & UNHEALTHY != 0 {
            self.group.unhealthy.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Stops counting the endpoint (removed from the set, or weight 0).
    pub(crate) fn detach(&self) {
        let previous = self.flags.fetch_and(!ATTACHED, Ordering::AcqRel);
        if previous & ATTACHED != 0 && previous & UNHEALTHY != 0 {
            self.group.unhealthy.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn group(&self) -> &Arc<HealthGroup> {
        &self.group
    }

    /// Requests started on this endpoint and not yet finished or dropped.
    #[inline]
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Counts one more request in flight until the returned guard drops; `now` is when it
    /// started, for the latency sample taken by [`InFlight::finish_at`].
    pub fn start_at(self: &Arc<Self>, now: Instant) -> InFlight {
        self.pending.fetch_add(1, Ordering::Relaxed);
        InFlight {
            state: Arc::clone(self),
            started: now,
        }
    }

    /// The time constant of the latency estimate: a sample `decay` old weighs `1/e` of a fresh
    /// one. Set by [`PeakEwma`](crate::PeakEwma) tables from their policy.
    pub fn decay(&self) -> Duration {
        Duration::from_nanos(self.decay_nanos.load(Ordering::Relaxed))
    }

    pub(crate) fn set_decay(&self, decay: Duration) {
        let nanos = u64::try_from(decay.as_nanos()).unwrap_or(u64::MAX);
        self.decay_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Feeds one response time, observed at `now`, into the latency estimate.
    ///
    /// A sample above the current estimate replaces it (the *peak*); a lower one is blended in
    /// with weight `1 - e^(-Δt/decay)`, `Δt` being the time since the previous sample. Concurrent
    /// samples each claim the time since the latest stamp (`fetch_max`), so the blend weights of
    /// racing samples never cover the same interval twice.
    pub fn observe_rtt(&self, rtt: Duration, now: Instant) {
        let now = nanos_since_origin(now);
        let previous = self.rtt_stamp.fetch_max(now, Ordering::AcqRel);
        let keep = self.keep_factor(now.saturating_sub(previous));
        // At least one nanosecond, so that 0.0 keeps meaning "no sample yet".
        let rtt = (rtt.as_nanos() as f64).max(1.0);
        // The closure always returns Some, so this cannot fail.
        let _ = self
            .rtt_bits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                let old = f64::from_bits(bits);
                let next = if old == 0.0 || rtt > old {
                    rtt
                } else {
                    old * keep + rtt * (1.0 - keep)
                };
                Some(next.to_bits())
            });
    }

    /// The latency estimate as of `now`, in nanoseconds, or `None` before the first sample.
    ///
    /// Reading has no side effects: the estimate decays toward zero with the time since the last
    /// sample, `estimate · e^(-Δt/decay)`, so an endpoint that stopped being picked because it
    /// was slow looks cheaper and cheaper until it is tried again.
    #[inline]
    pub fn rtt_estimate_nanos(&self, now: Instant) -> Option<f64> {
        let estimate = f64::from_bits(self.rtt_bits.load(Ordering::Acquire));
        if estimate == 0.0 {
            return None;
        }
        let stamp = self.rtt_stamp.load(Ordering::Acquire);
        let elapsed = nanos_since_origin(now).saturating_sub(stamp);
        Some(estimate * self.keep_factor(elapsed))
    }

    /// The latency estimate as of `now`, see [`rtt_estimate_nanos`](Self::rtt_estimate_nanos).
    pub fn rtt_estimate(&self, now: Instant) -> Option<Duration> {
        self.rtt_estimate_nanos(now)
            .map(|nanos| Duration::from_nanos(nanos as u64))
    }

    /// `e^(-elapsed/decay)`: how much of an estimate survives `elapsed` nanoseconds.
    #[inline]
    fn keep_factor(&self, elapsed: u64) -> f64 {
        if elapsed == 0 {
            return 1.0;
        }
        let decay = self.decay_nanos.load(Ordering::Relaxed);
        if decay == 0 {
            return 0.0;
        }
        (-(elapsed as f64) / decay as f64).exp()
    }
}

impl fmt::Debug for EndpointState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = self.flags.load(Ordering::Relaxed);
        f.debug_struct("EndpointState")
            .field("healthy", &(flags & UNHEALTHY == 0))
            .field("attached", &(flags & ATTACHED != 0))
            .field("pending", &self.pending())
            .field(
                "rtt_nanos",
                &f64::from_bits(self.rtt_bits.load(Ordering::Relaxed)),
            )
            .finish()
    }
}

/// One request in flight on an endpoint: counted in its [`pending`](EndpointState::pending)
/// requests until this guard is dropped.
///
/// Dropping it without [`finish`](Self::finish) (a cancelled request, a connection error) only
/// releases the count; finishing it also records the response time. Record only responses that
/// say something about the endpoint's speed: a connection refused in a microsecond would
/// otherwise make a broken endpoint look like the fastest one.
pub struct InFlight {
    state: Arc<EndpointState>,
    started: Instant,
}

// === impl InFlight ===

impl InFlight {
    /// The endpoint this request runs on.
    pub fn state(&self) -> &Arc<EndpointState> {
        &self.state
    }

    /// When the request started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Records the time from start to now as a latency sample and releases the count.
    pub fn finish(self) {
        self.finish_at(Instant::now());
    }

    /// Records `now - started` as a latency sample and releases the count; `now` comes from
    /// the caller's clock (tests pass simulated time).
    pub fn finish_at(self, now: Instant) {
        let rtt = now.saturating_duration_since(self.started);
        self.state.observe_rtt(rtt, now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("started", &self.started)
            .field("state", &self.state)
            .finish()
    }
}

// === time ===

/// A process-wide origin for the `u64` nanosecond stamps, a day before first use so that
/// instants a little in the past (a paused test clock started earlier, a caller-supplied
/// timestamp) still come after it.
fn time_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(|| {
        let now = Instant::now();
        [86_400, 3_600, 60, 1]
            .into_iter()
            .find_map(|secs| now.checked_sub(Duration::from_secs(secs)))
            .unwrap_or(now)
    })
}

fn nanos_since_origin(now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(time_origin()).as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> Arc<EndpointState> {
        Arc::new(EndpointState::new(Arc::default()))
    }

    #[test]
    fn in_flight_counts_until_dropped() {
        let s = state();
        let now = Instant::now();
        let a = s.start_at(now);
        let b = s.start_at(now);
        assert_eq!(s.pending(), 2);
        drop(a);
        assert_eq!(s.pending(), 1);
        b.finish_at(now + Duration::from_millis(5));
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn dropping_records_no_latency() {
        let s = state();
        let now = Instant::now();
        drop(s.start_at(now));
        assert_eq!(s.rtt_estimate(now), None);
        s.start_at(now).finish_at(now + Duration::from_millis(5));
        let estimate = s.rtt_estimate(now + Duration::from_millis(5)).unwrap();
        assert_eq!(estimate, Duration::from_millis(5));
    }

    #[test]
    fn peaks_replace_and_lower_samples_blend() {
        let s = state();
        s.set_decay(Duration::from_secs(1));
        let t0 = Instant::now();
        s.observe_rtt(Duration::from_millis(10), t0);
        // A peak replaces the estimate at once.
        s.observe_rtt(Duration::from_millis(100), t0);
        assert_eq!(s.rtt_estimate_nanos(t0), Some(100e6));
        // One decay later, a 10 ms sample weighs 1 - 1/e.
        let t1 = t0 + Duration::from_secs(1);
        s.observe_rtt(Duration::from_millis(10), t1);
        let expected = 100e6 / std::f64::consts::E + 10e6 * (1.0 - 1.0 / std::f64::consts::E);
        let got = s.rtt_estimate_nanos(t1).unwrap();
        assert!((got - expected).abs() < 1.0, "{got} vs {expected}");
    }

    #[test]
    fn reads_decay_toward_zero_without_changing_the_estimate() {
        let s = state();
        s.set_decay(Duration::from_secs(2));
        let t0 = Instant::now();
        s.observe_rtt(Duration::from_millis(50), t0);
        let later = t0 + Duration::from_secs(2);
        let read = s.rtt_estimate_nanos(later).unwrap();
        assert!((read - 50e6 / std::f64::consts::E).abs() < 1.0, "{read}");
        // Reading twice gives the same answer: reads have no side effects.
        assert_eq!(s.rtt_estimate_nanos(later), Some(read));
        assert_eq!(s.rtt_estimate_nanos(t0), Some(50e6));
    }

    #[test]
    fn zero_decay_keeps_only_the_last_sample() {
        let s = state();
        s.set_decay(Duration::ZERO);
        let t0 = Instant::now();
        s.observe_rtt(Duration::from_millis(50), t0);
        s.observe_rtt(Duration::from_millis(5), t0 + Duration::from_millis(1));
        assert_eq!(
            s.rtt_estimate_nanos(t0 + Duration::from_millis(1)),
            Some(5e6)
        );
    }

    #[test]
    fn health_flips_count_only_attached_members() {
        let group = Arc::new(HealthGroup::default());
        let a = EndpointState::new(group.clone());
        let b = EndpointState::new(group.clone());
        a.attach();
        assert!(a.set_healthy(false));
        assert!(!a.set_healthy(false), "no change the second time");
        assert_eq!(group.unhealthy(), 1);
        // b is not attached: its flag changes, the count does not.
        assert!(b.set_healthy(false));
        assert_eq!(group.unhealthy(), 1);
        // Attaching an unhealthy member counts it; detaching uncounts it.
        b.attach();
        assert_eq!(group.unhealthy(), 2);
        a.detach();
        assert_eq!(group.unhealthy(), 1);
        a.detach();
        assert_eq!(group.unhealthy(), 1, "detaching twice changes nothing");
        b.set_healthy(true);
        assert_eq!(group.unhealthy(), 0);
        assert!(!a.is_healthy() && b.is_healthy());
    }

    #[test]
    fn concurrent_flips_leave_an_exact_count() {
        let group = Arc::new(HealthGroup::default());
        let states: Arc<Vec<EndpointState>> =
            Arc::new((0..8).map(|_| EndpointState::new(group.clone())).collect());
        for s in states.iter() {
            s.attach();
        }
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let states = Arc::clone(&states);
                std::thread::spawn(move || {
                    for i in 0..10_000usize {
                        let s = &states[(i * 7 + t) % 8];
                        s.set_healthy(i % 3 == 0);
                        if i % 11 == 0 {
                            s.detach();
                            s.attach();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let unhealthy = states.iter().filter(|s| !s.is_healthy()).count();
        assert_eq!(group.unhealthy(), unhealthy);
    }
}
