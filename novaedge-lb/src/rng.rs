//! Cheap randomness for picks: splitmix64, per thread or per table.
//!
//! Random picks need a few random words per request, so the generator must cost about a
//! nanosecond and must not be shared between cores. Each thread keeps a splitmix64 state seeded
//! once from `rand`'s thread RNG. A table built with a seed (see
//! [`BuildOptions::seed`](crate::BuildOptions::seed)) instead advances one atomic splitmix64
//! counter of its own, which makes its picks reproducible in tests and simulations; that counter
//! is shared by every thread picking from the table, so seeded tables are for tests, not for a
//! multi-core hot path.
//!
//! splitmix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
//! OOPSLA 2014) passes BigCrush and needs one addition and three multiply-xorshift steps, which is
//! plenty for choosing among endpoints; nothing here needs cryptographic randomness.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 output function: a bijective mix of a 64-bit word.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

thread_local! {
    static THREAD_STATE: Cell<u64> = Cell::new(rand::random());
}

/// Where a table's random words come from.
#[derive(Debug)]
pub(crate) enum Entropy {
    /// The calling thread's generator.
    Thread,
    /// The table's own counter: reproducible for a given seed and call sequence.
    Seeded(AtomicU64),
}

impl Entropy {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        match seed {
            Some(seed) => Entropy::Seeded(AtomicU64::new(seed)),
            None => Entropy::Thread,
        }
    }

    /// A uniformly distributed 64-bit word.
    #[inline]
    pub(crate) fn next_u64(&self) -> u64 {
        match self {
            Entropy::Thread => THREAD_STATE.with(|state| {
                let next = state.get().wrapping_add(GOLDEN_GAMMA);
                state.set(next);
                mix64(next)
            }),
            Entropy::Seeded(counter) => mix64(
                counter
                    .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
                    .wrapping_add(GOLDEN_GAMMA),
            ),
        }
    }

    /// A uniform index in `0..n`; `n` must be non-zero.
    #[inline]
    pub(crate) fn below(&self, n: usize) -> usize {
        below(self.next_u64(), n)
    }
}

/// Maps a uniform 64-bit word onto `0..n` by multiply-shift (Lemire, "Fast random integer
/// generation in an interval", 2019) without its rejection step: the bias is below `n / 2^64`,
/// far under anything a test of 10^5 or 10^9 picks could see, and it avoids a division.
#[inline]
pub(crate) fn below(word: u64, n: usize) -> usize {
    ((u128::from(word) * n as u128) >> 64) as usize
}

/// A uniform value in `0..n` for a 64-bit `n`, as [`below`].
#[inline]
pub(crate) fn below_u64(word: u64, n: u64) -> u64 {
    ((u128::from(word) * u128::from(n)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sequences_repeat() {
        let a = Entropy::new(Some(7));
        let b = Entropy::new(Some(7));
        let c = Entropy::new(Some(8));
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..5).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn splitmix_reference_values() {
        // The first outputs of splitmix64 seeded with 0, as in Vigna's reference `splitmix64.c`.
        let e = Entropy::new(Some(0));
        assert_eq!(e.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(e.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn below_covers_the_range_evenly() {
        let e = Entropy::new(Some(1));
        let mut counts = [0u32; 7];
        for _ in 0..70_000 {
            counts[e.below(7)] += 1;
        }
        // Each count is Binomial(70000, 1/7): mean 10000, sd 92.6; 8 sd never happens.
        for c in counts {
            assert!((9_260..=10_740).contains(&c), "{counts:?}");
        }
        assert_eq!(below(u64::MAX, 7), 6);
        assert_eq!(below(0, 7), 0);
    }

    #[test]
    fn threads_draw_different_words() {
        let e = Entropy::Thread;
        let here = e.next_u64();
        let there = std::thread::spawn(|| Entropy::Thread.next_u64())
            .join()
            .unwrap();
        assert_ne!(here, there);
    }
}
