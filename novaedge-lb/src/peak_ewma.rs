//! Peak EWMA: the cheaper of two random endpoints, cost being latency times load.
//!
//! Finagle's `PeakEwma` load metric (Finagle's `Balancers.p2cPeakEwma`, described in "Load
//! balancing at the edge" and Marius Eriksen's talks), adopted by linkerd through tower's
//! `load::PeakEwma`. Each endpoint keeps an exponentially weighted moving average of its response
//! times that jumps up at once on a slower response (the *peak*) and decays toward faster ones
//! with time constant `decay` (see [`EndpointState::observe_rtt`]). A pick draws two endpoints
//! and takes the one with the lower cost
//!
//! ```text
//! cost = rtt_estimate × (1 + pending × w̄ / w)
//! ```
//!
//! where `pending` counts its requests in flight, `w` is its weight and `w̄` the mean weight. With
//! equal weights this is tower's `rtt × (pending + 1)`. An endpoint with no latency sample yet is
//! assumed to answer in `default_rtt`.
//!
//! # Differences from Finagle and tower
//!
//! - Reads have no side effects. Finagle and tower decay the stored estimate toward zero on every
//!   load read, so how often an endpoint is *looked at* changes its estimate. Here the stored
//!   estimate changes only with samples, and a read applies the decay toward zero as a function
//!   of the time since the last sample: an endpoint that stopped being picked for being slow
//!   still becomes attractive again after a few `decay`s, which is the point of the decay.
//! - The estimate lives in the endpoint's shared [`EndpointState`], so it survives table
//!   rebuilds, and is updated with atomics rather than under a mutex.
//! - Weights: candidates are drawn in proportion to weight, and load counts per unit of weight
//!   (`pending × w̄ / w`), so with equal latencies and no load every comparison is a tie and picks
//!   follow the weights exactly.

use std::fmt;
use std::time::Duration;

use crate::endpoint::EndpointState;
use crate::least_request::best_of;
use crate::members::Members;
use crate::policy::BuildOptions;
use crate::random::Alias;
use crate::selector::{PickContext, Picked, Selector};

/// The default `decay` of [`PeakEwma`]: linkerd's and tower's 10 seconds.
pub const DEFAULT_DECAY: Duration = crate::endpoint::DEFAULT_DECAY;

/// The default `default_rtt` of [`PeakEwma`]: linkerd's 30 ms.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// Sends each request to the cheaper of two random endpoints, by latency estimate × load.
pub struct PeakEwma<E> {
    members: Members<E>,
    alias: Alias,
    default_rtt_nanos: f64,
    /// `w̄ / w` per member: how much one request in flight weighs on it.
    load_factor: Box<[f64]>,
}

// === impl PeakEwma ===

impl<E> PeakEwma<E> {
    /// Builds a table from `(endpoint, weight)` pairs with the default decay (10 s) and default
    /// RTT (30 ms).
    pub fn new(endpoints: impl IntoIterator<Item = (E, u32)>) -> Self {
        Self::with_options(
            endpoints,
            DEFAULT_DECAY,
            DEFAULT_RTT,
            &BuildOptions::default(),
        )
    }

    /// Builds a table whose latency estimates decay with time constant `decay` and start at
    /// `default_rtt`.
    pub fn with_options(
        endpoints: impl IntoIterator<Item = (E, u32)>,
        decay: Duration,
        default_rtt: Duration,
        options: &BuildOptions,
    ) -> Self {
        Self::from_members(Members::standalone(endpoints, options), decay, default_rtt)
    }

    /// Sets `decay` on every member's state: they share it with the tables built before, which
    /// is what a policy change means.
    pub(crate) fn from_members(
        members: Members<E>,
        decay: Duration,
        default_rtt: Duration,
    ) -> Self {
        for state in members.states.iter() {
            state.set_decay(decay);
        }
        let alias = Alias::new(&members.weights);
        let active: Vec<f64> = members
            .weights
            .iter()
            .filter(|&&w| w > 0)
            .map(|&w| f64::from(w))
            .collect();
        let mean = active.iter().sum::<f64>() / active.len().max(1) as f64;
        let load_factor = members
            .weights
            .iter()
            .map(|&w| if w == 0 { 0.0 } else { mean / f64::from(w) })
            .collect();
        Self {
            members,
            alias,
            default_rtt_nanos: (default_rtt.as_nanos() as f64).max(1.0),
            load_factor,
        }
    }

    pub(crate) fn members(&self) -> &Members<E> {
        &self.members
    }

    /// The cost a pick at `now` compares for the member at `index`.
    #[inline]
    fn cost(&self, index: usize, now: std::time::Instant) -> f64 {
        let state: &EndpointState = &self.members.states[index];
        let rtt = state
            .rtt_estimate_nanos(now)
            .unwrap_or(self.default_rtt_nanos);
        rtt * (1.0 + state.pending() as f64 * self.load_factor[index])
    }
}

impl<E> Selector<E> for PeakEwma<E> {
    #[inline]
    fn pick_with(&self, ctx: &PickContext) -> Option<Picked<'_, E>> {
        let now = ctx.now();
        best_of(&self.members, &self.alias, 2, |a, b| {
            self.cost(a, now) < self.cost(b, now)
        })
    }

    fn endpoints(&self) -> &[E] {
        &self.members.endpoints
    }
}

impl<E: fmt::Debug> fmt::Debug for PeakEwma<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeakEwma")
            .field("members", &self.members)
            .field("default_rtt_nanos", &self.default_rtt_nanos)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn avoids_the_slow_endpoint_until_its_estimate_decays() {
        let decay = Duration::from_secs(1);
        let ewma = PeakEwma::with_options(
            [("fast", 1), ("slow", 1)],
            decay,
            DEFAULT_RTT,
            &BuildOptions::seeded(11),
        );
        let t0 = Instant::now();
        let [fast, slow] = [0, 1].map(|i| ewma.members.states[i].clone());
        fast.start_at(t0).finish_at(t0 + Duration::from_millis(10));
        slow.start_at(t0).finish_at(t0 + Duration::from_millis(100));
        let t1 = t0 + Duration::from_millis(100);
        let ctx = PickContext::new().at(t1);
        // Two different candidates always pick "fast"; all six draws (first, second, four
        // redraws of the second) landing on "slow" has probability (1/2)^6 = 1/64.
        let slow_picks = (0..4_000)
            .filter(|_| *ewma.pick_with(&ctx).unwrap().endpoint() == "slow")
            .count();
        // Binomial(4000, 1/64): mean 62.5, sd 7.8.
        assert!((20..=110).contains(&slow_picks), "{slow_picks}");
        // Load changes the choice: with 20 requests in flight "fast" costs about
        // 9.1 ms (10 ms decayed over 90 ms) × 21 ≈ 192 ms, more than "slow"'s 100 ms.
        let _held: Vec<_> = (0..20).map(|_| fast.start_at(t1)).collect();
        let fast_picks = (0..4_000)
            .filter(|_| *ewma.pick_with(&ctx).unwrap().endpoint() == "fast")
            .count();
        assert!((20..=110).contains(&fast_picks), "{fast_picks}");
    }

    #[test]
    fn a_slow_endpoint_comes_back_once_its_estimate_decays() {
        let decay = Duration::from_secs(1);
        let ewma = PeakEwma::with_options(
            [("fast", 1), ("slow", 1)],
            decay,
            DEFAULT_RTT,
            &BuildOptions::seeded(4),
        );
        let t0 = Instant::now();
        let [fast, slow] = [0, 1].map(|i| ewma.members.states[i].clone());
        slow.start_at(t0).finish_at(t0 + Duration::from_millis(100));
        // "fast" keeps answering in 10 ms; "slow" is not sampled again. Its estimate is
        // 100 ms · e^(-t/1 s), below 10 ms after ln 10 ≈ 2.3 s.
        let at = |ms: u64| {
            let now = t0 + Duration::from_millis(ms);
            fast.start_at(now - Duration::from_millis(10))
                .finish_at(now);
            let ctx = PickContext::new().at(now);
            (0..1_000)
                .filter(|_| *ewma.pick_with(&ctx).unwrap().endpoint() == "slow")
                .count()
        };
        let before = at(2_000);
        let after = at(2_600);
        // Binomial(1000, 1/64) and (1000, 63/64): means 15.6 and 984.4, sd 3.9.
        assert!(before <= 40, "{before}");
        assert!((955..=1_000).contains(&after), "{after}");
    }

    #[test]
    fn unsampled_endpoints_cost_the_default_rtt() {
        let ewma = PeakEwma::with_options(
            [("new", 1), ("measured", 1)],
            DEFAULT_DECAY,
            Duration::from_millis(30),
            &BuildOptions::seeded(2),
        );
        let t0 = Instant::now();
        ewma.members.states[1]
            .start_at(t0)
            .finish_at(t0 + Duration::from_millis(40));
        let ctx = PickContext::new().at(t0 + Duration::from_millis(40));
        assert_eq!(ewma.cost(0, ctx.now.unwrap()), 30e6);
        let measured = (0..4_000)
            .filter(|_| *ewma.pick_with(&ctx).unwrap().endpoint() == "measured")
            .count();
        // 40 ms > 30 ms: "measured" wins only when all six draws are "measured", (1/2)^6:
        // Binomial(4000, 1/64), mean 62.5, sd 7.8.
        assert!((20..=110).contains(&measured), "{measured}");
    }

    #[test]
    fn weights_scale_the_load_term() {
        let ewma = PeakEwma::new([("heavy", 3), ("light", 1)]);
        assert_eq!(&*ewma.load_factor, &[2.0 / 3.0, 2.0]);
    }
}
