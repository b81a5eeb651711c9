//! Maglev hashing: a lookup table of prime size filled from per-endpoint permutations.
//!
//! From Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load Balancer", NSDI 2016,
//! §3.4 and Pseudocode 1. Each endpoint `i` has a preference list over the `M` table slots,
//! `permutation[i][j] = (offset_i + j · skip_i) mod M`, with
//!
//! ```text
//! offset_i = h1(name_i) mod M          skip_i = h2(name_i) mod (M - 1) + 1
//! ```
//!
//! Since `M` is prime and `1 ≤ skip < M`, every list visits every slot exactly once. Endpoints
//! then take turns: on its turn an endpoint claims the first slot on its list not yet claimed,
//! until the table is full. A request with hash key `k` goes to the endpoint in slot `k mod M`.
//!
//! - **Balance**: with equal weights every endpoint claims `⌊M/n⌋` or `⌈M/n⌉` slots.
//! - **Minimal disruption**: when an endpoint leaves, its slots are claimed by others and most
//!   other slots keep their owner, because each endpoint walks the same list as before. Unlike a
//!   ring, a few slots do change hands between remaining endpoints; the paper measures this and
//!   the crate's disruption tests bound it (see `tests/disruption.rs`).
//! - **Lookups** are one modulo and one load, whatever the number of endpoints.
//!
//! # Hashes
//!
//! As Envoy's `MaglevTable`: `h1` is xxHash64 with seed 0 and `h2` xxHash64 with seed 1 of the
//! endpoint's [`EndpointId`] bytes (for an address, its text `"10.0.0.1:8080"`).
//!
//! # Weights
//!
//! The paper notes that weights can be honoured by changing how often endpoints take turns; this
//! follows Envoy's weighted Maglev: the turns run in rounds, and in round `r` an endpoint of
//! weight `w` takes its `k`-th turn once `r · w ≥ k · w_max`. The heaviest endpoint takes a turn
//! every round, one of half its weight every other round, so slot counts are proportional to
//! weights. Equal weights give the paper's plain rotation. Envoy compares these in floating point;
//! here the `k`-th turn of endpoint `i` happens in round `⌈k · w_max / w_i⌉`, exactly, and turns
//! within a round go in endpoint order.
//!
//! # Order independence
//!
//! Turns within a round go in a fixed order, so the table depends on the order of the endpoints.
//! Endpoints are therefore sorted by their id bytes before filling, and every proxy builds the
//! same table from the same set, however it was listed.
//!
//! # Table size
//!
//! `M` must be prime and should be much larger than the number of endpoints (the paper uses
//! 65,537 and suggests `M > 100 · n` for balance within 1%). [`MaglevSize`] checks primality; the
//! default is 65,537, as in the paper and Envoy. Filling costs about `M · ln M` probes (the coupon
//! collector's bound the paper gives), independent of `n`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;

use xxhash_rust::xxh64::xxh64;

use crate::hash::EndpointId;
use crate::members::Members;
use crate::policy::{BuildOptions, PolicyError};
use crate::selector::{PickContext, Picked, Selector};

/// A Maglev lookup table size: a prime between 3 and [`MaglevSize::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaglevSize(u32);

impl MaglevSize {
    /// 65,537, the paper's and Envoy's default.
    pub const DEFAULT: MaglevSize = MaglevSize(65_537);

    /// The largest size accepted: 5,000,011, Envoy's limit (20 MB of slots).
    pub const MAX: u32 = 5_000_011;

    /// Checks that `size` is a prime in `3..=MAX`.
    pub fn new(size: u32) -> Result<Self, PolicyError> {
        if !(3..=Self::MAX).contains(&size) || !is_prime(size) {
            return Err(PolicyError::new(
                "maglev.tableSize",
                format!(
                    "must be a prime between 3 and {}, got {size} (65537 is the usual choice)",
                    Self::MAX
                ),
            ));
        }
        Ok(MaglevSize(size))
    }

    /// The size as a number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for MaglevSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

/// One endpoint's preference list and weight, as the paper's Pseudocode 1 takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permutation {
    /// The first slot on the list, `< M`.
    pub offset: u32,
    /// The step between slots, in `1..M`.
    pub skip: u32,
    /// Turns taken relative to the other endpoints; 0 takes none.
    pub weight: u32,
}

impl Permutation {
    /// The list of an endpoint named `id` in a table of `size` slots, with xxHash64 seeds 0 and 1
    /// as `h1` and `h2`.
    pub fn of(id: &[u8], size: MaglevSize, weight: u32) -> Self {
        let m = u64::from(size.get());
        Permutation {
            offset: (xxh64(id, 0) % m) as u32,
            skip: (xxh64(id, 1) % (m - 1) + 1) as u32,
            weight,
        }
    }
}

/// Fills a Maglev table of `size` slots: slot `s` holds the index into `entries` of its owner.
///
/// This is the paper's Pseudocode 1 with weighted turns (see the [module docs](self)), in the
/// order given: the caller sorts `entries` if the table must not depend on their order. Entries
/// of weight 0 take no slot; with no entry of weight above 0 the table is empty.
pub fn fill_table(size: MaglevSize, entries: &[Permutation]) -> Box<[u32]> {
    const EMPTY: u32 = u32::MAX;
    let m = size.get();
    let mut table = vec![EMPTY; m as usize];
    let Some(max_weight) = entries.iter().map(|e| e.weight).max().filter(|&w| w > 0) else {
        return Box::new([]);
    };
    // Next slot to try on each list: offset + skip · next mod M, advanced incrementally.
    let mut position: Vec<u32> = entries.iter().map(|e| e.offset % m).collect();
    let mut filled = 0u32;
    let mut turn = |j: usize, table: &mut [u32]| -> bool {
        let skip = entries[j].skip;
        let mut c = position[j];
        while table[c as usize] != EMPTY {
            c = step(c, skip, m);
        }
        table[c as usize] = j as u32;
        position[j] = step(c, skip, m);
        filled += 1;
        filled == m
    };

    if entries.iter().all(|e| e.weight == max_weight) {
        // The paper's rotation: every endpoint, in order, round after round.
        loop {
            for j in 0..entries.len() {
                if turn(j, &mut table) {
                    return table.into_boxed_slice();
                }
            }
        }
    }

    // Weighted rounds: the k-th turn (from 0) of entry j comes in round ⌈k·w_max/w_j⌉; turns
    // are taken by (round, j), which is the order of Envoy's loop over rounds and entries.
    let round_of = |k: u64, weight: u32| (k * u64::from(max_weight)).div_ceil(u64::from(weight));
    let mut turns_taken = vec![0u64; entries.len()];
    let total: u64 = entries.iter().map(|e| u64::from(e.weight)).sum();
    let active = entries.iter().filter(|e| e.weight > 0).count() as u64;
    // Scanning every entry each round costs n per round, about M·w_max/w̄ checks in all; a
    // priority queue costs about M·log2(n). Scan while weights are within a factor 16 of their
    // mean (the usual case), queue otherwise (a few heavy endpoints among many light ones).
    if u64::from(max_weight) * active <= 16 * total {
        let mut next_round = vec![0u64; entries.len()];
        let mut round = 0;
        loop {
            let mut following = u64::MAX;
            for j in 0..entries.len() {
                let weight = entries[j].weight;
                if weight == 0 {
                    continue;
                }
                if next_round[j] == round {
                    if turn(j, &mut table) {
                        return table.into_boxed_slice();
                    }
                    turns_taken[j] += 1;
                    next_round[j] = round_of(turns_taken[j], weight);
                }
                following = following.min(next_round[j]);
            }
            // Rounds in which nobody takes a turn are skipped.
            round = following;
        }
    }
    let mut queue: BinaryHeap<Reverse<(u64, u32)>> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.weight > 0)
        .map(|(j, _)| Reverse((0, j as u32)))
        .collect();
    while let Some(Reverse((_, j))) = queue.pop() {
        let j = j as usize;
        if turn(j, &mut table) {
            break;
        }
        turns_taken[j] += 1;
        queue.push(Reverse((
            round_of(turns_taken[j], entries[j].weight),
            j as u32,
        )));
    }
    table.into_boxed_slice()
}

/// `(c + skip) mod m` for `c < m` and `skip < m`, without a division.
#[inline]
fn step(c: u32, skip: u32, m: u32) -> u32 {
    let next = u64::from(c) + u64::from(skip);
    if next >= u64::from(m) {
        (next - u64::from(m)) as u32
    } else {
        next as u32
    }
}

/// Sends each hash key to the endpoint owning its slot in a Maglev lookup table.
pub struct Maglev<E> {
    members: Members<E>,
    /// Member index per slot; empty when nothing can be picked.
    table: Box<[u32]>,
}

// === impl Maglev ===

impl<E: EndpointId> Maglev<E> {
    /// Builds a table of the default 65,537 slots from `(endpoint, weight)` pairs.
    pub fn new(endpoints: impl IntoIterator<Item = (E, u32)>) -> Self {
        Self::with_options(endpoints, MaglevSize::DEFAULT, &BuildOptions::default())
    }

    /// Builds a table of `size` slots.
    pub fn with_options(
        endpoints: impl IntoIterator<Item = (E, u32)>,
        size: MaglevSize,
        options: &BuildOptions,
    ) -> Self {
        Self::from_members(Members::standalone(endpoints, options), size)
    }

    pub(crate) fn from_members(members: Members<E>, size: MaglevSize) -> Self {
        // Sorted by name, so that the table does not depend on the order of the endpoints.
        let ids: Vec<_> = members.endpoints.iter().map(|e| e.id_bytes()).collect();
        let mut order: Vec<u32> = (0..members.len() as u32)
            .filter(|&i| members.weights[i as usize] > 0)
            .collect();
        order.sort_by(|&a, &b| ids[a as usize].cmp(&ids[b as usize]));
        let entries: Vec<Permutation> = order
            .iter()
            .map(|&i| Permutation::of(&ids[i as usize], size, members.weights[i as usize]))
            .collect();
        let mut table = fill_table(size, &entries);
        for slot in table.iter_mut() {
            *slot = order[*slot as usize];
        }
        Self { members, table }
    }
}

impl<E> Maglev<E> {
    /// The lookup table: for each slot, the index in [`endpoints`](Selector::endpoints) of its
    /// owner. Empty when no endpoint has a weight above 0.
    pub fn table(&self) -> &[u32] {
        &self.table
    }

    /// The endpoint owning `hash`'s slot, ignoring health: what a pick returns while every
    /// endpoint is healthy.
    pub fn owner(&self, hash: u64) -> Option<&E> {
        let slot = self.slot(hash)?;
        Some(&self.members.endpoints[self.table[slot] as usize])
    }

    #[inline]
    fn slot(&self, hash: u64) -> Option<usize> {
        let m = self.table.len() as u64;
        (m != 0).then(|| (hash % m) as usize)
    }

    pub(crate) fn members(&self) -> &Members<E> {
        &self.members
    }
}

impl<E> Selector<E> for Maglev<E> {
    #[inline]
    fn pick_with(&self, ctx: &PickContext) -> Option<Picked<'_, E>> {
        let hash = ctx.hash.unwrap_or_else(|| self.members.entropy.next_u64());
        let slot = self.slot(hash)?;
        let m = self.table.len();
        // Fallback: the following slots, whose owners are spread like the whole table's, so an
        // unhealthy endpoint's keys are shared among the others in proportion to their weights,
        // and each key always falls back the same way.
        self.members.settle(
            self.table[slot] as usize,
            |k| self.table[(slot + 1 + k) % m] as usize,
            hash,
        )
    }

    fn endpoints(&self) -> &[E] {
        &self.members.endpoints
    }
}

impl<E: fmt::Debug> fmt::Debug for Maglev<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("members", &self.members)
            .field("table_size", &self.table.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn size(m: u32) -> MaglevSize {
        MaglevSize::new(m).unwrap()
    }

    #[test]
    fn sizes_must_be_prime() {
        assert!(MaglevSize::new(65_537).is_ok());
        assert!(MaglevSize::new(7).is_ok());
        assert!(MaglevSize::new(3).is_ok());
        for bad in [0, 1, 2, 4, 9, 65_536, 65_535, MaglevSize::MAX + 2] {
            let err = MaglevSize::new(bad).unwrap_err();
            assert!(err.to_string().contains("prime"), "{err}");
        }
        assert!(is_prime(MaglevSize::MAX));
    }

    #[test]
    fn equal_weights_split_slots_evenly() {
        let entries: Vec<Permutation> = (0..10u32)
            .map(|i| Permutation::of(i.to_string().as_bytes(), MaglevSize::DEFAULT, 1))
            .collect();
        let table = fill_table(MaglevSize::DEFAULT, &entries);
        let mut counts = [0u32; 10];
        for &s in table.iter() {
            counts[s as usize] += 1;
        }
        // 65537 = 10 · 6553 + 7: the rotation gives 6554 to seven endpoints and 6553 to three.
        let mut sorted = counts;
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            [6553, 6553, 6553, 6554, 6554, 6554, 6554, 6554, 6554, 6554]
        );
    }

    #[test]
    fn weighted_slot_counts_follow_weights() {
        let weights = [1u32, 2, 3, 10];
        let entries: Vec<Permutation> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Permutation::of(&[i as u8], MaglevSize::DEFAULT, w))
            .collect();
        let table = fill_table(MaglevSize::DEFAULT, &entries);
        let mut counts = [0u32; 4];
        for &s in table.iter() {
            counts[s as usize] += 1;
        }
        // Entry j has taken `t·w_j/w_max + δ_j` turns after t rounds, with δ_j in [0, 1] for the
        // turn of round 0 and the partial last round. The table holds M = t·W/w_max + Σδ slots,
        // so count_j - M·w_j/W = δ_j - Σδ·w_j/W, within [-n·w_j/W, 1] for n entries.
        let n = weights.len() as f64;
        for (i, &w) in weights.iter().enumerate() {
            let share = f64::from(w) / 16.0;
            let diff = f64::from(counts[i]) - 65_537.0 * share;
            assert!(
                (-n * share..=1.0).contains(&diff),
                "{counts:?}: weight {w} off by {diff}"
            );
        }
    }

    #[test]
    fn zero_weights_take_no_slot() {
        let entries = [
            Permutation {
                offset: 0,
                skip: 1,
                weight: 0,
            },
            Permutation {
                offset: 3,
                skip: 2,
                weight: 1,
            },
        ];
        assert!(fill_table(size(7), &entries).iter().all(|&s| s == 1));
        assert!(fill_table(size(7), &entries[..1]).is_empty());
        let empty = Maglev::<u8>::new([(1, 0)]);
        assert!(empty.table().is_empty());
        assert_eq!(empty.pick(), None);
        assert_eq!(empty.owner(5), None);
    }

    #[test]
    fn keys_map_to_slot_owners() {
        let m = Maglev::with_options(
            ["a", "b", "c"].map(|e| (e, 1)),
            size(13),
            &BuildOptions::default(),
        );
        for hash in 0..100u64 {
            let owner = m.table()[(hash % 13) as usize] as usize;
            let ctx = PickContext::new().with_hash(Some(hash));
            assert_eq!(m.pick_with(&ctx).unwrap().index(), owner);
            assert_eq!(m.owner(hash), Some(&["a", "b", "c"][owner]));
        }
    }

    /// Envoy's loop, literally: rounds over all entries, a turn when `round · w ≥ target`, the
    /// target growing by `w_max` per turn, the permutation recomputed with a multiplication.
    fn envoy_reference(entries: &[Permutation], m: u64) -> Vec<u32> {
        let max = entries.iter().map(|e| e.weight).max().unwrap_or(0);
        if max == 0 {
            return Vec::new();
        }
        let mut table = vec![u32::MAX; m as usize];
        let mut next = vec![0u64; entries.len()];
        let mut target = vec![0u64; entries.len()];
        let mut filled = 0;
        for round in 0u64.. {
            for (j, e) in entries.iter().enumerate() {
                if e.weight == 0 || round * u64::from(e.weight) < target[j] {
                    continue;
                }
                target[j] += u64::from(max);
                let slot = |next: u64| (u64::from(e.offset) + u64::from(e.skip) * next) % m;
                while table[slot(next[j]) as usize] != u32::MAX {
                    next[j] += 1;
                }
                table[slot(next[j]) as usize] = j as u32;
                next[j] += 1;
                filled += 1;
                if filled == m {
                    return table;
                }
            }
        }
        unreachable!("the rounds fill the table")
    }

    proptest! {
        #[test]
        fn weighted_rounds_match_envoys_loop(
            weights in proptest::collection::vec(0u32..=6, 1..=6),
            seed in any::<u64>(),
        ) {
            // Envoy's loop, literally: rounds over all entries, a turn when r·w ≥ target.
            let m = size(61);
            let entries: Vec<Permutation> = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| Permutation::of(&(seed ^ i as u64).to_le_bytes(), m, w))
                .collect();
            prop_assert_eq!(fill_table(m, &entries).to_vec(), envoy_reference(&entries, 61));
        }

        #[test]
        fn skewed_weights_match_envoys_loop_too(
            light in proptest::collection::vec(1u32..=2, 20..=40),
            heavy in 200u32..=1_000,
            seed in any::<u64>(),
        ) {
            // One heavy entry among many light ones: the priority queue path.
            let mut weights = light;
            weights.push(heavy);
            let m = size(251);
            let entries: Vec<Permutation> = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| Permutation::of(&(seed ^ i as u64).to_le_bytes(), m, w))
                .collect();
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            prop_assert!(u64::from(heavy) * weights.len() as u64 > 16 * total);
            prop_assert_eq!(fill_table(m, &entries).to_vec(), envoy_reference(&entries, 251));
        }

        #[test]
        fn table_ignores_endpoint_order(
            names in proptest::collection::hash_set("[a-z]{1,6}", 1..=12),
            rotate in 0usize..12,
        ) {
            let names: Vec<String> = names.into_iter().collect();
            let mut rotated = names.clone();
            rotated.rotate_left(rotate % names.len());
            let a = Maglev::with_options(names.iter().map(|n| (n.clone(), 1)), size(101), &BuildOptions::default());
            let b = Maglev::with_options(rotated.iter().map(|n| (n.clone(), 1)), size(101), &BuildOptions::default());
            for hash in 0..101u64 {
                prop_assert_eq!(a.owner(hash), b.owner(hash));
            }
        }
    }
}
