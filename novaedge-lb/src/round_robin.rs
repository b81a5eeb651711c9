//! Round robin: every endpoint in turn.
//!
//! The simplest fair selector: pick `i` goes to endpoint `(start + i) mod n`. Every endpoint gets
//! exactly one pick in each run of `n` consecutive picks, across all threads together, because
//! the position is a single atomic counter. `start` is random per table (see the crate's cursor)
//! so that tables rebuilt at the same moment do not all begin with the first endpoint.
//!
//! Use [`WeightedRoundRobin`](crate::WeightedRoundRobin) when endpoints have different
//! capacities. An unhealthy endpoint's turns go to random alternates (see
//! [`Selector`] for the fallback walk).

use std::fmt;

use crate::cursor::Cursor;
use crate::members::Members;
use crate::policy::BuildOptions;
use crate::selector::{PickContext, Picked, Selector};

/// Picks every endpoint in turn, lock-free.
pub struct RoundRobin<E> {
    members: Members<E>,
    cursor: Cursor,
}

// === impl RoundRobin ===

impl<E> RoundRobin<E> {
    /// Builds a table over `endpoints`, starting at a random one of them.
    pub fn new(endpoints: Vec<E>) -> Self {
        Self::with_options(endpoints, &BuildOptions::default())
    }

    /// As [`new`](Self::new), with a panic threshold and, for a reproducible start and fallback
    /// order, a seed.
    pub fn with_options(endpoints: Vec<E>, options: &BuildOptions) -> Self {
        let members = Members::standalone(endpoints.into_iter().map(|e| (e, 1)), options);
        let start = if members.len() == 0 {
            0
        } else {
            members.entropy.below(members.len())
        };
        Self {
            members,
            cursor: Cursor::starting_at(start),
        }
    }

    #[cfg(test)]
    fn starting_at(endpoints: Vec<E>, start: usize) -> Self {
        Self {
            cursor: Cursor::starting_at(start),
            ..Self::new(endpoints)
        }
    }
}

impl<E> Selector<E> for RoundRobin<E> {
    #[inline]
    fn pick_with(&self, _ctx: &PickContext) -> Option<Picked<'_, E>> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let entropy = &self.members.entropy;
        self.members.settle(
            self.cursor.next(n),
            |_| entropy.below(n),
            entropy.next_u64(),
        )
    }

    fn endpoints(&self) -> &[E] {
        &self.members.endpoints
    }
}

impl<E: fmt::Debug> fmt::Debug for RoundRobin<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoundRobin")
            .field("endpoints", &self.members.endpoints)
            .field("cursor", &self.cursor)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn empty_picks_nothing() {
        let rr = RoundRobin::<u32>::new(Vec::new());
        assert_eq!(rr.pick(), None);
        assert_eq!(rr.pick(), None);
        assert!(rr.endpoints().is_empty());
    }

    #[test]
    fn single_endpoint_is_always_picked() {
        let rr = RoundRobin::new(vec!["only"]);
        for _ in 0..10 {
            assert_eq!(rr.pick(), Some(&"only"));
        }
    }

    #[test]
    fn visits_every_endpoint_once_per_cycle() {
        let endpoints: Vec<u32> = (0..7).collect();
        let rr = RoundRobin::new(endpoints.clone());
        for _cycle in 0..5 {
            let mut seen: Vec<u32> = (0..endpoints.len()).map(|_| *rr.pick().unwrap()).collect();
            seen.sort_unstable();
            assert_eq!(seen, endpoints);
        }
    }

    #[test]
    fn walks_in_order_from_the_start() {
        let rr = RoundRobin::starting_at(vec!['a', 'b', 'c'], 2);
        let picks: String = (0..6).map(|_| *rr.pick().unwrap()).collect();
        assert_eq!(picks, "cabcab");
    }

    #[test]
    fn endpoints_keep_their_order() {
        let rr = RoundRobin::new(vec![3, 1, 2]);
        assert_eq!(rr.endpoints(), &[3, 1, 2]);
    }

    #[test]
    fn start_offset_varies_between_tables() {
        // With 64 endpoints, 32 tables all starting at the same endpoint by chance has
        // probability 64^-31: a failure means the start is not random.
        let firsts: std::collections::HashSet<u32> = (0..32)
            .map(|_| *RoundRobin::new((0..64).collect()).pick().unwrap())
            .collect();
        assert!(firsts.len() > 1, "every table started at {firsts:?}");
    }

    #[test]
    fn concurrent_picks_are_exactly_fair() {
        const ENDPOINTS: usize = 13;
        const THREADS: usize = 4;
        const CYCLES_PER_THREAD: usize = 1_000;
        let rr = Arc::new(RoundRobin::new((0..ENDPOINTS).collect::<Vec<_>>()));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let rr = Arc::clone(&rr);
                std::thread::spawn(move || {
                    let mut counts = [0usize; ENDPOINTS];
                    for _ in 0..CYCLES_PER_THREAD * ENDPOINTS {
                        counts[*rr.pick().unwrap()] += 1;
                    }
                    counts
                })
            })
            .collect();
        let mut total = [0usize; ENDPOINTS];
        for handle in handles {
            for (sum, count) in total.iter_mut().zip(handle.join().unwrap()) {
                *sum += count;
            }
        }
        // Each thread alone may be uneven, but all picks together cover whole cycles.
        assert_eq!(total, [THREADS * CYCLES_PER_THREAD; ENDPOINTS]);
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RoundRobin<std::net::SocketAddr>>();
    }
}
