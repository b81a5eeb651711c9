//! Smooth weighted round robin, as in nginx, precomputed so that picking is lock-free.
//!
//! # The algorithm
//!
//! nginx's upstream module keeps a `current_weight` per endpoint, starting at 0 (commit
//! "Upstream: smooth weighted round-robin balancing", Maxim Dounin, 2012; today
//! `ngx_http_upstream_get_peer()` in `src/http/ngx_http_upstream_round_robin.c`). For each
//! request:
//!
//! 1. every endpoint's `current_weight` grows by its weight;
//! 2. the endpoint with the largest `current_weight` is picked (the first one on a tie);
//! 3. the picked endpoint's `current_weight` drops by the total weight `S`.
//!
//! Over `S` picks every endpoint is picked exactly `weight` times and all `current_weight`s are
//! back at 0, so the sequence repeats with period `S`. Unlike plain weighted round robin the picks
//! are spread out: weights `a=5, b=1, c=1` give `a a b a c a a`, not `a a a a a b c`.
//!
//! # Lock-free picking
//!
//! nginx runs those steps under a lock (or in a single-threaded worker). Here the whole cycle,
//! the *schedule*, is computed once when the table is built and stored as `u32` endpoint indices;
//! [`pick`](Selector::pick) then only advances an atomic counter through it, starting at a random
//! slot so that freshly rebuilt tables do not all begin with the same endpoint. An unhealthy
//! endpoint's turns go to weighted random alternates (see [`Selector`] for the fallback walk). Any `k` whole
//! cycles of picks, from any number of threads together, give each endpoint exactly `k × weight`
//! picks.
//!
//! # Smoothness
//!
//! After `t` picks an endpoint's `current_weight` is `t·w − S·picks`, so nginx's rule picks the
//! endpoint that lags furthest behind its share. Two consequences, both checked by the tests:
//!
//! - From the start of the cycle an endpoint is never ahead of its share: after `t` picks it has
//!   had at most `⌈t·w/S⌉` of them. Proof: before each pick the `current_weight`s sum to `S`, so
//!   the largest, the one picked, is at least `S/n > 0` and stays above `−S` after paying `S`;
//!   between its picks an endpoint's `current_weight` only grows. So `t·w − S·picks > −S`.
//! - In any run of `L` consecutive picks (wrapping around the cycle) an endpoint is picked within
//!   3 of `L·w/S` times: at most `⌈L·w/S⌉ + 2`, at least `⌊L·w/S⌋ − 2`. This one is measured, not
//!   proven. nginx's greedy rule has no constant bound for every endpoint count (with hundreds of
//!   weight-1 endpoints beside a few heavy ones, the heavy ones bunch up slightly more as `n`
//!   grows); searching weight vectors of up to 20 endpoints with weights up to 100, the widest
//!   deviation found was 2.88, for weights `1 ×14, 13, 13, 97`, and the property tests check the
//!   bound on random vectors of that size. The tighter `⌈L·w/S⌉ + 1` does not hold for nginx's
//!   sequence. Either way the picks interleave: plain weighted round robin would send a whole
//!   `w` picks in a row to each endpoint.
//!
//! # Schedule length and the error bound
//!
//! Weights are first divided by their greatest common divisor, which changes nothing about the
//! proportions (`100, 200` schedules like `1, 2`). If the reduced total still exceeds
//! [`MAX_SCHEDULE_LEN`] (65,536 slots, 256 KiB of `u32`), the weights are scaled down to a
//! resolution of `T` slots: each non-zero weight `w` becomes `max(1, ⌊w·T/S⌋)`, with `T` the
//! largest value for which the scaled total fits the cap, which is always at least
//! `MAX_SCHEDULE_LEN − n` for `n` endpoints with non-zero weight. So every endpoint keeps within
//! one slot of its exact proportional share `w·T/S`: an endpoint whose exact share is `x` slots
//! gets more than `x − 1` and at most `x` of them (a relative error below `1/x`, e.g. under 0.2%
//! for an endpoint holding 1% of the total weight among up to 1,000 endpoints), and an endpoint
//! whose share is below one slot is rounded up to exactly one, so no endpoint with a non-zero
//! weight is ever dropped. As a share of all traffic, an endpoint configured for share `p` gets
//! it within `(1 + n·p) / (MAX_SCHEDULE_LEN − 2n)`, for `n` below half the cap. (The scaled
//! weights are then reduced by their gcd again, which keeps these proportions.) With more than
//! [`MAX_SCHEDULE_LEN`] non-zero endpoints there is no room for weights at all and every endpoint
//! gets one slot: the schedule then holds `n` slots and behaves like plain round robin.
//!
//! # Build cost
//!
//! Simulating nginx naively costs `O(S·n)`: `S` steps, each scanning all `n` endpoints. Endpoints
//! with equal weight, however, always take their turns in index order (they gain
//! `current_weight` at the same rate, and ties go to the first one), so a step only needs to
//! compare the next endpoint of each distinct weight. That makes the build `O(S·g)`, where `g`,
//! the number of distinct weights, is at most `n` and at most `√(2S)` (distinct positive weights
//! summing to `S`): at most 362 comparisons per slot at the cap, about 24 million in the worst
//! case. Equal weights, the common case, need no simulation at all: the schedule is then the
//! endpoints in order, built in `O(n)`. On a 2-core development machine the `build` benchmark
//! puts 1,000 endpoints with weights 1 to 100 (`S` = 50,500, 100 distinct weights) at about 7 ms,
//! and 1,000 weights of up to a million, scaled down to the cap, at about 12 ms. Tables are built off the hot path, once per
//! endpoint change, which is why an exact `O(S·g)` simulation is preferred to an approximation
//! of nginx's order.

use std::collections::BTreeMap;
use std::fmt;

use crate::cursor::Cursor;
use crate::members::Members;
use crate::policy::BuildOptions;
use crate::selector::{PickContext, Picked, Selector};

/// The longest schedule built from weights: weights whose reduced total exceeds it are scaled
/// down, see the [module docs](self) for the resulting error bound. The one exception is a set
/// with more non-zero endpoints than this, which gets one slot per endpoint.
pub const MAX_SCHEDULE_LEN: usize = 65_536;

/// Picks endpoints in proportion to their weights, interleaved as nginx's smooth weighted round
/// robin does, lock-free.
pub struct WeightedRoundRobin<E> {
    members: Members<E>,
    /// Picks per cycle for each endpoint, after gcd reduction and scaling; 0 for excluded ones.
    weights: Box<[u32]>,
    /// One cycle of endpoint indices.
    schedule: Box<[u32]>,
    cursor: Cursor,
}

// === impl WeightedRoundRobin ===

impl<E> WeightedRoundRobin<E> {
    /// Builds a table from `(endpoint, weight)` pairs.
    ///
    /// Endpoints with weight 0 are never picked. If all weights are 0 (or no endpoints),
    /// [`pick`](Selector::pick) returns `None`. [`endpoints`](Selector::endpoints) lists every
    /// endpoint, weight 0 or not, in the order given.
    ///
    /// # Panics
    ///
    /// If given more than `u32::MAX` endpoints, as the schedule stores indices as `u32`.
    pub fn new(endpoints: impl IntoIterator<Item = (E, u32)>) -> Self {
        Self::with_options(endpoints, &BuildOptions::default())
    }

    /// As [`new`](Self::new), with a panic threshold and, for a reproducible start and fallback
    /// order, a seed.
    pub fn with_options(
        endpoints: impl IntoIterator<Item = (E, u32)>,
        options: &BuildOptions,
    ) -> Self {
        Self::from_members(Members::standalone(endpoints, options))
    }

    pub(crate) fn from_members(members: Members<E>) -> Self {
        let weights = effective_weights(&members.weights, MAX_SCHEDULE_LEN as u64);
        let schedule = smooth_schedule(&weights);
        let start = if schedule.is_empty() {
            0
        } else {
            members.entropy.below(schedule.len())
        };
        Self {
            members,
            weights,
            schedule,
            cursor: Cursor::starting_at(start),
        }
    }

    /// The number of picks after which the sequence repeats: the sum of the effective weights
    /// (after gcd reduction and any scaling), 0 when nothing can be picked. Over each cycle every
    /// endpoint is picked exactly its effective weight times.
    pub fn cycle_len(&self) -> usize {
        self.schedule.len()
    }

    pub(crate) fn members(&self) -> &Members<E> {
        &self.members
    }
}

impl<E> Selector<E> for WeightedRoundRobin<E> {
    #[inline]
    fn pick_with(&self, _ctx: &PickContext) -> Option<Picked<'_, E>> {
        let len = self.schedule.len();
        if len == 0 {
            return None;
        }
        let first = self.schedule[self.cursor.next(len)] as usize;
        // Alternates are random slots of the schedule, i.e. weighted random draws: walking on to
        // the next slots instead would hand an unhealthy endpoint's turns to whoever follows it.
        let entropy = &self.members.entropy;
        self.members.settle(
            first,
            |_| self.schedule[entropy.below(len)] as usize,
            entropy.next_u64(),
        )
    }

    fn endpoints(&self) -> &[E] {
        &self.members.endpoints
    }
}

impl<E: fmt::Debug> fmt::Debug for WeightedRoundRobin<E> {
    // The schedule can hold 65,536 slots; the weights say the same in a readable size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightedRoundRobin")
            .field("endpoints", &self.members.endpoints)
            .field("weights", &self.weights)
            .field("cycle_len", &self.schedule.len())
            .field("cursor", &self.cursor)
            .finish()
    }
}

// === weights ===

/// The weights the schedule is built from: reduced by their gcd, then scaled to fit `cap`.
fn effective_weights(configured: &[u32], cap: u64) -> Box<[u32]> {
    let reduced = reduce_by_gcd(configured.iter().map(|&w| u64::from(w)).collect());
    let total: u64 = reduced.iter().sum();
    let weights = if total <= cap {
        reduced
    } else {
        let scaled = scale(&reduced, total, cap);
        let nonzero = reduced.iter().filter(|&&w| w > 0).count() as u64;
        // The documented error bound rests on this.
        debug_assert!(nonzero >= cap || scaled.resolution >= cap - nonzero);
        reduce_by_gcd(scaled.weights)
    };
    weights
        .into_iter()
        // Reduced or scaled weights never exceed the configured ones, which were u32.
        .map(|w| u32::try_from(w).unwrap_or(u32::MAX))
        .collect()
}

fn reduce_by_gcd(mut weights: Vec<u64>) -> Vec<u64> {
    let divisor = weights.iter().fold(0, |acc, &w| gcd(acc, w));
    if divisor > 1 {
        for w in &mut weights {
            *w /= divisor;
        }
    }
    weights
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[derive(Debug)]
struct Scaled {
    weights: Vec<u64>,
    /// `T`: the scaled weights are the exact shares of `T` slots, rounded down but at least 1.
    resolution: u64,
}

/// Scales `weights` (summing to `total > cap`) to a total of at most `cap`, or to one slot per
/// non-zero weight when there are more of those than `cap`.
fn scale(weights: &[u64], total: u64, cap: u64) -> Scaled {
    let at = |resolution: u64| -> Vec<u64> {
        weights
            .iter()
            .map(|&w| match w {
                0 => 0,
                // u128: w < 2^32 and resolution <= cap, but cap is a parameter here.
                w => (u128::from(w) * u128::from(resolution) / u128::from(total)).max(1) as u64,
            })
            .collect()
    };
    let sum_at = |resolution: u64| -> u64 { at(resolution).iter().sum() };

    // The scaled total only grows with the resolution, so binary search the largest one that
    // fits. At resolution 1 every non-zero weight gets exactly one slot: after gcd reduction a
    // total above `cap` needs at least two non-zero weights, so each one is below `total`.
    let mut lo = 1;
    if sum_at(lo) <= cap {
        let mut hi = cap;
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if sum_at(mid) <= cap {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
    }
    Scaled {
        weights: at(lo),
        resolution: lo,
    }
}

// === schedule ===

/// One full cycle of nginx's smooth weighted round robin, as endpoint indices.
///
/// Endpoints that share a weight take their turns in index order: they gain `current_weight` at
/// the same rate, and ties go to the lower index. So of each such group only the next one in
/// line can hold the largest `current_weight`, and the simulation tracks one `current_weight` per
/// distinct weight, that of the group's next endpoint.
fn smooth_schedule(weights: &[u32]) -> Box<[u32]> {
    let mut by_weight: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (index, &weight) in weights.iter().enumerate() {
        if weight > 0 {
            // `new` checked that every index fits a u32.
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            by_weight.entry(weight).or_default().push(index);
        }
    }
    if by_weight.len() <= 1 {
        // A single weight, which is what a set with more endpoints than the cap is given: nginx
        // then degenerates to plain round robin in index order.
        return by_weight
            .into_iter()
            .next()
            .map(|(weight, members)| members.repeat(weight as usize))
            .unwrap_or_default()
            .into_boxed_slice();
    }

    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    // With two distinct weights or more, effective weights never total more than the cap (see
    // `effective_weights`). A `current_weight` stays above `-total` (see the module docs) and,
    // as they sum to `total` before a pick, below `n * total <= total^2`: at most 2^32 here.
    debug_assert!(total <= MAX_SCHEDULE_LEN as u64);
    let total = i64::try_from(total).unwrap_or(i64::MAX);

    let (weight, members): (Vec<i64>, Vec<Vec<u32>>) = by_weight
        .into_iter()
        .map(|(weight, members)| (i64::from(weight), members))
        .unzip();
    // Per group: position of the next endpoint in line, that endpoint, and its current weight.
    let mut next = vec![0; members.len()];
    let mut candidate: Vec<u32> = members.iter().map(|m| m[0]).collect();
    let mut current = vec![0i64; members.len()];

    let mut schedule = Vec::with_capacity(weights.iter().map(|&w| w as usize).sum());
    for _ in 0..total {
        for (current, weight) in current.iter_mut().zip(&weight) {
            *current += weight;
        }
        let mut best = 0;
        let (mut best_current, mut best_candidate) = (current[0], candidate[0]);
        for (g, (&current, &candidate)) in current.iter().zip(&candidate).enumerate().skip(1) {
            // nginx keeps the first endpoint with the largest current weight, so on a tie the
            // lower endpoint index wins.
            if current > best_current || (current == best_current && candidate < best_candidate) {
                (best, best_current, best_candidate) = (g, current, candidate);
            }
        }
        schedule.push(best_candidate);
        next[best] += 1;
        if next[best] == members[best].len() {
            // Every member has now paid `total` once more, and the first one is next again.
            next[best] = 0;
            current[best] -= total;
        }
        // Otherwise the next member has not been picked in this round yet: its current weight is
        // the one the picked member had before paying `total`, so `current` stays.
        candidate[best] = members[best][next[best]];
    }
    schedule.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    impl<E> WeightedRoundRobin<E> {
        fn starting_at(endpoints: impl IntoIterator<Item = (E, u32)>, start: usize) -> Self {
            let mut table = Self::new(endpoints);
            table.cursor = Cursor::starting_at(start);
            table
        }
    }

    /// nginx's loop, literally: O(S·n), one `current_weight` per endpoint.
    fn nginx_reference(weights: &[u32]) -> Vec<u32> {
        let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
        let mut current = vec![0i64; weights.len()];
        let mut schedule = Vec::new();
        for _ in 0..total {
            let mut best: Option<usize> = None;
            for (i, &w) in weights.iter().enumerate() {
                if w == 0 {
                    continue;
                }
                current[i] += i64::from(w);
                if best.is_none_or(|b| current[i] > current[b]) {
                    best = Some(i);
                }
            }
            let best = best.expect("total > 0");
            current[best] -= total;
            schedule.push(best as u32);
        }
        schedule
    }

    fn picks<E: Copy>(table: &impl Selector<E>, n: usize) -> Vec<E> {
        (0..n).map(|_| *table.pick().expect("pickable")).collect()
    }

    fn is_rotation_of(seq: &str, cycle: &str) -> bool {
        seq.len() == cycle.len() && cycle.repeat(2).contains(seq)
    }

    #[test]
    fn empty_picks_nothing() {
        let wrr = WeightedRoundRobin::<u32>::new([]);
        assert_eq!(wrr.pick(), None);
        assert_eq!(wrr.cycle_len(), 0);
        assert!(wrr.endpoints().is_empty());
    }

    #[test]
    fn single_endpoint_is_always_picked() {
        let wrr = WeightedRoundRobin::new([("only", 7)]);
        assert_eq!(wrr.cycle_len(), 1, "a lone weight reduces to 1");
        for _ in 0..10 {
            assert_eq!(wrr.pick(), Some(&"only"));
        }
    }

    #[test]
    fn nginx_example_interleaves() {
        let wrr = WeightedRoundRobin::starting_at([('a', 5), ('b', 1), ('c', 1)], 0);
        let seq: String = picks(&wrr, 14).into_iter().collect();
        assert_eq!(seq, "aabacaaaabacaa");
    }

    #[test]
    fn nginx_example_up_to_rotation_from_a_random_start() {
        for _ in 0..20 {
            let wrr = WeightedRoundRobin::new([('a', 5), ('b', 1), ('c', 1)]);
            let seq: String = picks(&wrr, 7).into_iter().collect();
            assert!(is_rotation_of(&seq, "aabacaa"), "{seq}");
        }
    }

    #[test]
    fn zero_weights_are_never_picked() {
        let wrr = WeightedRoundRobin::new([('a', 0), ('b', 2), ('c', 0), ('d', 1)]);
        assert_eq!(wrr.cycle_len(), 3);
        let seq: String = picks(&wrr, 30).into_iter().collect();
        assert!(!seq.contains('a') && !seq.contains('c'), "{seq}");
        assert_eq!(seq.matches('b').count(), 20);
        assert_eq!(seq.matches('d').count(), 10);
        assert_eq!(
            wrr.endpoints(),
            &[('a', 0), ('b', 2), ('c', 0), ('d', 1)].map(|(e, _)| e)
        );
    }

    #[test]
    fn all_zero_weights_pick_nothing() {
        let wrr = WeightedRoundRobin::new([('a', 0), ('b', 0)]);
        assert_eq!(wrr.pick(), None);
        assert_eq!(wrr.cycle_len(), 0);
        assert_eq!(wrr.endpoints().len(), 2);
    }

    #[test]
    fn weights_are_reduced_by_their_gcd() {
        let wrr = WeightedRoundRobin::starting_at([('a', 300), ('b', 100), ('c', 200)], 0);
        assert_eq!(wrr.cycle_len(), 6);
        assert_eq!(&*wrr.weights, &[3, 1, 2]);
        let reduced = WeightedRoundRobin::starting_at([('a', 3), ('b', 1), ('c', 2)], 0);
        assert_eq!(picks(&wrr, 12), picks(&reduced, 12));
    }

    #[test]
    fn gcd_handles_zero_and_coprime() {
        assert_eq!(gcd(0, 12), 12);
        assert_eq!(gcd(12, 18), 6);
        assert_eq!(gcd(7, 13), 1);
        assert_eq!(reduce_by_gcd(vec![0, 4, 0, 6]), vec![0, 2, 0, 3]);
        assert_eq!(reduce_by_gcd(vec![0, 0]), vec![0, 0]);
    }

    #[test]
    fn grouped_schedule_matches_nginx_on_ties() {
        // Several endpoints per weight, interleaved in the input, with zero weights between.
        let weights = [3, 1, 0, 3, 2, 1, 3, 0, 2, 1];
        assert_eq!(
            &*smooth_schedule(&weights),
            nginx_reference(&weights).as_slice()
        );
    }

    /// Checks the documented scaling bound on `scale`'s output.
    fn assert_within_bound(weights: &[u64], cap: u64) {
        let total: u64 = weights.iter().sum();
        let nonzero = weights.iter().filter(|&&w| w > 0).count() as u64;
        let Scaled {
            weights: scaled,
            resolution,
        } = scale(weights, total, cap);
        let scaled_total: u64 = scaled.iter().sum();
        if nonzero > cap {
            assert!(scaled.iter().all(|&w| w <= 1));
            assert_eq!(scaled_total, nonzero);
            return;
        }
        assert!(scaled_total <= cap, "{scaled_total} > {cap}");
        assert!(
            resolution >= cap - nonzero,
            "resolution {resolution}, cap {cap}"
        );
        for (&w, &s) in weights.iter().zip(&scaled) {
            if w == 0 {
                assert_eq!(s, 0);
                continue;
            }
            assert!(s >= 1);
            let exact = w as f64 * resolution as f64 / total as f64;
            assert!(
                (s as f64 - exact).abs() < 1.0,
                "weight {w} scaled to {s}, exact share {exact}"
            );
        }
    }

    #[test]
    fn scaling_keeps_every_endpoint_within_one_slot() {
        assert_within_bound(
            &[1_000_000, 1, 0, 333_333, 70_000, u64::from(u32::MAX)],
            65_536,
        );
        assert_within_bound(&[5, 1, 1], 3);
        assert_within_bound(&[100, 1, 1, 1, 1], 10);
        assert_within_bound(&[1, 1, 1, 1, 1], 3);
    }

    #[test]
    fn heavy_weights_are_capped_and_keep_their_ratios() {
        let configured: [u32; 5] = [u32::MAX, 1_000_000_007, 3, 123_456_789, 1];
        let wrr = WeightedRoundRobin::new(configured.iter().enumerate().map(|(i, &w)| (i, w)));
        let len = wrr.cycle_len();
        assert!(len <= MAX_SCHEDULE_LEN, "{len}");
        // Far more than the n = 5 slots that rounding up small weights could cost.
        assert!(len > MAX_SCHEDULE_LEN / 2, "{len}");
        let mut counts = [0usize; 5];
        for i in picks(&wrr, len) {
            counts[i] += 1;
        }
        let total: f64 = configured.iter().map(|&w| f64::from(w)).sum();
        let n = configured.len() as f64;
        for (i, (&count, &w)) in counts.iter().zip(&configured).enumerate() {
            assert!(count >= 1, "endpoint {i} dropped");
            // Each scaled weight is its exact share x of T slots plus an error e with |e| < 1,
            // and the errors add up to E = S' - T with |E| < n. The share error
            // (e - E * p) / S' is then below (1 + n * p) / S', with S' > T - n >= cap - 2n.
            // (The gcd reduction after scaling shrinks counts and cycle alike.)
            let share = count as f64 / len as f64;
            let p = f64::from(w) / total;
            let bound = (1.0 + n * p) / (MAX_SCHEDULE_LEN as f64 - 2.0 * n);
            assert!(
                (share - p).abs() < bound,
                "endpoint {i}: share {share}, configured {p}, bound {bound}"
            );
        }
    }

    #[test]
    fn more_endpoints_than_the_cap_get_one_slot_each() {
        let n = MAX_SCHEDULE_LEN + 10;
        let wrr = WeightedRoundRobin::new((0..n).map(|i| (i, (i % 7 + 1) as u32 * 1000)));
        assert_eq!(wrr.cycle_len(), n);
        let mut seen = picks(&wrr, n);
        seen.sort_unstable();
        assert!(seen.iter().copied().eq(0..n));
    }

    #[test]
    fn concurrent_picks_are_exactly_fair() {
        const THREADS: usize = 4;
        const CYCLES_PER_THREAD: usize = 500;
        let weights = [5u32, 1, 1, 7, 3];
        let wrr = Arc::new(WeightedRoundRobin::new(
            weights.iter().enumerate().map(|(i, &w)| (i, w)),
        ));
        let cycle = wrr.cycle_len();
        assert_eq!(cycle, 17);
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let wrr = Arc::clone(&wrr);
                std::thread::spawn(move || {
                    let mut counts = [0usize; 5];
                    for _ in 0..CYCLES_PER_THREAD * cycle {
                        counts[*wrr.pick().unwrap()] += 1;
                    }
                    counts
                })
            })
            .collect();
        let mut total = [0usize; 5];
        for handle in handles {
            for (sum, count) in total.iter_mut().zip(handle.join().unwrap()) {
                *sum += count;
            }
        }
        let expected = weights.map(|w| w as usize * THREADS * CYCLES_PER_THREAD);
        assert_eq!(total, expected);
    }

    #[test]
    fn debug_shows_weights_not_the_schedule() {
        let wrr = WeightedRoundRobin::new([("a", 2000), ("b", 1000)]);
        let debug = format!("{wrr:?}");
        assert!(debug.contains("weights: [2, 1]"), "{debug}");
        assert!(debug.contains("cycle_len: 3"), "{debug}");
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<WeightedRoundRobin<std::net::SocketAddr>>();
    }

    proptest! {
        #[test]
        fn grouped_schedule_matches_nginx(
            weights in proptest::collection::vec(0u32..=30, 0..=25),
        ) {
            prop_assert_eq!(smooth_schedule(&weights).to_vec(), nginx_reference(&weights));
        }

        #[test]
        fn never_ahead_of_its_share_from_the_cycle_start(
            weights in proptest::collection::vec(0u32..=100, 1..=20),
        ) {
            // The proven half of the smoothness claims in the module docs.
            let schedule = smooth_schedule(&weights);
            let total = schedule.len() as u64;
            let mut picks = vec![0u64; weights.len()];
            for (t, &picked) in (1u64..).zip(schedule.iter()) {
                picks[picked as usize] += 1;
                for (endpoint, (&count, &weight)) in picks.iter().zip(&weights).enumerate() {
                    let share = (t * u64::from(weight)).div_ceil(total);
                    prop_assert!(
                        count <= share,
                        "endpoint {} had {} picks of {}, share {}", endpoint, count, t, share
                    );
                }
            }
        }

        #[test]
        fn scaling_bound_holds(
            weights in proptest::collection::vec(0u64..=u64::from(u32::MAX), 1..=40),
            cap in 1u64..=100_000,
        ) {
            let total: u64 = weights.iter().sum();
            prop_assume!(total > cap);
            assert_within_bound(&weights, cap);
        }
    }
}
