//! Weighted random: each pick draws an endpoint with probability proportional to its weight.
//!
//! Draws use Walker's alias method (A. J. Walker, "An efficient method for generating discrete
//! random variables with general distributions", ACM TOMS 1977) in Vose's linear-time
//! construction (M. D. Vose, "A linear algorithm for generating random numbers with a given
//! distribution", IEEE TSE 1991): a table of `n` columns, each holding one endpoint up to a
//! threshold and another (its *alias*) above it. A draw takes one uniform column and one uniform
//! coin, so it costs the same at 10 and at 10,000 endpoints. The thresholds are integers (weights
//! scaled by `n`, columns of height `W`, the total weight), so the table is exact: endpoint `i`
//! is drawn with probability `w_i / W` exactly, up to the multiply-shift mapping of random words
//! onto ranges (bias below `n / 2^64`). Equal weights skip the table: a uniform column is the
//! answer.
//!
//! Unlike round robin, random picks need no shared counter, so threads picking from one table do
//! not contend on a cache line. The price is variance: over `k` picks an endpoint with share `p`
//! gets `k·p ± √(k·p(1-p))`, where round robin is exact.

use std::fmt;

use crate::members::Members;
use crate::policy::BuildOptions;
use crate::rng::{Entropy, below, below_u64};
use crate::selector::{PickContext, Picked, Selector};

/// Picks endpoints at random in proportion to their weights.
pub struct Random<E> {
    members: Members<E>,
    alias: Alias,
}

// === impl Random ===

impl<E> Random<E> {
    /// Builds a table from `(endpoint, weight)` pairs; weight-0 endpoints are never picked.
    pub fn new(endpoints: impl IntoIterator<Item = (E, u32)>) -> Self {
        Self::with_options(endpoints, &BuildOptions::default())
    }

    /// As [`new`](Self::new), with a panic threshold and, for reproducible picks, a seed.
    pub fn with_options(
        endpoints: impl IntoIterator<Item = (E, u32)>,
        options: &BuildOptions,
    ) -> Self {
        Self::from_members(Members::standalone(endpoints, options))
    }

    pub(crate) fn from_members(members: Members<E>) -> Self {
        let alias = Alias::new(&members.weights);
        Self { members, alias }
    }

    pub(crate) fn members(&self) -> &Members<E> {
        &self.members
    }
}

impl<E> Selector<E> for Random<E> {
    #[inline]
    fn pick_with(&self, _ctx: &PickContext) -> Option<Picked<'_, E>> {
        let entropy = &self.members.entropy;
        let first = self.alias.sample(entropy)?;
        self.members.settle(
            first,
            |_| self.alias.sample_some(entropy),
            entropy.next_u64(),
        )
    }

    fn endpoints(&self) -> &[E] {
        &self.members.endpoints
    }
}

impl<E: fmt::Debug> fmt::Debug for Random<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Random")
            .field("members", &self.members)
            .finish()
    }
}

// === alias table ===

/// Draws member indices in proportion to their weights in O(1).
#[derive(Clone)]
pub(crate) struct Alias {
    /// Member index of each column: the members with a weight above 0.
    columns: Box<[u32]>,
    /// Below this coin value a column yields its own member, else its alias. Empty when all
    /// weights are equal: every column then yields its own member.
    thresholds: Box<[u64]>,
    aliases: Box<[u32]>,
    /// Coins are drawn from `0..height`, the total weight.
    height: u64,
}

impl Alias {
    pub(crate) fn new(weights: &[u32]) -> Self {
        let columns: Box<[u32]> = (0..weights.len() as u32)
            .filter(|&i| weights[i as usize] > 0)
            .collect();
        let n = columns.len() as u64;
        let first = columns.first().map(|&i| weights[i as usize]);
        if columns.iter().all(|&i| Some(weights[i as usize]) == first) {
            return Self {
                columns,
                thresholds: Box::new([]),
                aliases: Box::new([]),
                height: 0,
            };
        }
        // Column c holds `scaled[c] = w·n` units of its own member's probability out of a height
        // of W: members with less than W are "small" and get topped up from a "large" one.
        // n·w < 2^32·2^32 and W < 2^32·2^32 fit u64.
        let height: u64 = columns
            .iter()
            .map(|&i| u64::from(weights[i as usize]))
            .sum();
        let mut scaled: Vec<u64> = columns
            .iter()
            .map(|&i| u64::from(weights[i as usize]) * n)
            .collect();
        let mut thresholds = vec![height; columns.len()];
        let mut aliases: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<u32>, Vec<u32>) =
            (0..n as u32).partition(|&c| scaled[c as usize] < height);
        while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
            small.pop();
            thresholds[s as usize] = scaled[s as usize];
            aliases[s as usize] = l;
            // The large column gives away what the small one lacked.
            scaled[l as usize] -= height - scaled[s as usize];
            if scaled[l as usize] < height {
                large.pop();
                small.push(l);
            }
        }
        // Integer arithmetic leaves nothing over: what remains is exactly full, and keeps the
        // threshold `height` (always its own member).
        debug_assert!(
            small
                .iter()
                .chain(&large)
                .all(|&c| scaled[c as usize] == height)
        );
        Self {
            aliases: aliases.into_iter().map(|c| columns[c as usize]).collect(),
            columns,
            thresholds: thresholds.into_boxed_slice(),
            height,
        }
    }

    /// A member index, or `None` when no member has a weight above 0.
    #[inline]
    pub(crate) fn sample(&self, entropy: &Entropy) -> Option<usize> {
        if self.columns.is_empty() {
            return None;
        }
        Some(self.sample_some(entropy))
    }

    /// As [`sample`](Self::sample) for a table known to be non-empty.
    #[inline]
    pub(crate) fn sample_some(&self, entropy: &Entropy) -> usize {
        let column = below(entropy.next_u64(), self.columns.len());
        if self.thresholds.is_empty() {
            return self.columns[column] as usize;
        }
        let coin = below_u64(entropy.next_u64(), self.height);
        if coin < self.thresholds[column] {
            self.columns[column] as usize
        } else {
            self.aliases[column] as usize
        }
    }

    /// The exact probability of each member, as a numerator over `len() · height`; for tests.
    #[cfg(test)]
    fn mass(&self, members: usize) -> Vec<u64> {
        let mut mass = vec![0u64; members];
        if self.thresholds.is_empty() {
            for &m in self.columns.iter() {
                mass[m as usize] += 1;
            }
            return mass;
        }
        for c in 0..self.columns.len() {
            mass[self.columns[c] as usize] += self.thresholds[c];
            mass[self.aliases[c] as usize] += self.height - self.thresholds[c];
        }
        mass
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_and_zero_weights_pick_nothing() {
        assert_eq!(Random::<u8>::new([]).pick(), None);
        assert_eq!(Random::new([('a', 0), ('b', 0)]).pick(), None);
    }

    #[test]
    fn zero_weights_are_never_picked() {
        let r = Random::with_options([('a', 0), ('b', 3), ('c', 0)], &BuildOptions::seeded(1));
        for _ in 0..1_000 {
            assert_eq!(r.pick(), Some(&'b'));
        }
    }

    #[test]
    fn equal_weights_skip_the_alias_table() {
        let alias = Alias::new(&[4, 0, 4, 4]);
        assert!(alias.thresholds.is_empty());
        assert_eq!(alias.mass(4), vec![1, 0, 1, 1]);
    }

    #[test]
    fn alias_mass_is_exact_for_a_known_case() {
        // Weights 1, 2, 5 over n = 3 columns of height 8: masses must be 3, 6, 15 of 24.
        let alias = Alias::new(&[1, 2, 5]);
        assert_eq!(alias.height, 8);
        assert_eq!(alias.mass(3), vec![3, 6, 15]);
    }

    proptest! {
        #[test]
        fn alias_mass_is_proportional_to_weight(
            weights in proptest::collection::vec(0u32..=1_000_000, 1..=60),
        ) {
            let alias = Alias::new(&weights);
            let mass = alias.mass(weights.len());
            let n = alias.columns.len() as u64;
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            if alias.thresholds.is_empty() {
                let w0 = weights.iter().copied().find(|&w| w > 0);
                for (&m, &w) in mass.iter().zip(&weights) {
                    prop_assert_eq!(m, u64::from(w > 0 && Some(w) == w0));
                }
            } else {
                // mass_i / (n · W) == w_i / W exactly.
                for (&m, &w) in mass.iter().zip(&weights) {
                    prop_assert_eq!(m, u64::from(w) * n);
                }
                prop_assert_eq!(mass.iter().sum::<u64>(), n * total);
            }
        }
    }
}
