//! A changing endpoint set: the current selector table behind an atomic pointer.
//!
//! Selector tables are immutable, so an endpoint change (a pod added, a weight edited, an
//! endpoint drained) means building a whole new table, off the hot path, and publishing it with
//! [`Balanced::update`]. Requests call [`Balanced::load`] and pick from whatever table is current;
//! `arc_swap` makes that load a few atomic operations with no lock, and a request that loaded the
//! old table just before an update finishes with it while the next request sees the new one.
//! This mirrors pingora's load balancer, which swaps its `Selector` with `ArcSwap` on discovery
//! updates.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

/// The current table of a changing endpoint set, swapped atomically on update.
///
/// `S` is usually a [`Selector`](crate::Selector) such as
/// [`WeightedRoundRobin`](crate::WeightedRoundRobin).
#[derive(Debug)]
pub struct Balanced<S> {
    current: ArcSwap<S>,
}

// === impl Balanced ===

impl<S> Balanced<S> {
    /// Starts with `table` as the current table.
    pub fn new(table: S) -> Self {
        Self {
            current: ArcSwap::from_pointee(table),
        }
    }

    /// Replaces the current table. Picks already holding the old table finish with it; every
    /// `load` after this returns sees `table`.
    pub fn update(&self, table: S) {
        self.current.store(Arc::new(table));
    }

    /// The current table, for one request or a short burst of picks.
    ///
    /// The guard is cheap and lock-free but meant to be short-lived: holding many of them at once
    /// on one thread makes further loads fall back to a slower path. Keep one across an `.await`
    /// or for long by converting it with `Guard::into_inner` (an `Arc` clone).
    pub fn load(&self) -> Guard<Arc<S>> {
        self.current.load()
    }
}

impl<S: Default> Default for Balanced<S> {
    fn default() -> Self {
        Self::new(S::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RoundRobin, Selector, WeightedRoundRobin};
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn load_sees_the_latest_update() {
        let lb = Balanced::new(RoundRobin::new(vec![1]));
        assert_eq!(lb.load().pick(), Some(&1));
        lb.update(RoundRobin::new(vec![2]));
        assert_eq!(lb.load().pick(), Some(&2));
        lb.update(RoundRobin::new(Vec::new()));
        assert_eq!(lb.load().pick(), None);
    }

    #[test]
    fn a_loaded_table_outlives_the_update() {
        let lb = Balanced::new(WeightedRoundRobin::new([("old", 1)]));
        let held = lb.load();
        lb.update(WeightedRoundRobin::new([("new", 1)]));
        assert_eq!(held.pick(), Some(&"old"));
        assert_eq!(lb.load().pick(), Some(&"new"));
    }

    #[test]
    fn picks_during_updates_come_from_the_old_or_the_new_table() {
        const THREADS: usize = 3;
        const UPDATES: u32 = 2_000;
        // Generation g holds endpoints g*10 .. g*10+5 with weights 1..=5, so a pick names the
        // generation it came from; endpoints of other generations would mean a torn table.
        let table =
            |generation: u32| WeightedRoundRobin::new((0..5).map(|i| (generation * 10 + i, i + 1)));
        let lb = Arc::new(Balanced::new(table(0)));
        let done = Arc::new(AtomicBool::new(false));
        let pickers: Vec<_> = (0..THREADS)
            .map(|_| {
                let lb = Arc::clone(&lb);
                let done = Arc::clone(&done);
                std::thread::spawn(move || {
                    let mut last_generation = 0;
                    let mut picks = 0u64;
                    while !done.load(Ordering::Acquire) {
                        let endpoint = *lb.load().pick().expect("every table has endpoints");
                        let generation = endpoint / 10;
                        assert!(endpoint % 10 < 5, "{endpoint} is in no table");
                        assert!(generation <= UPDATES, "{endpoint} is in no table");
                        // Tables only move forward: a later load never sees an older table.
                        assert!(
                            generation >= last_generation,
                            "{generation} after {last_generation}"
                        );
                        last_generation = generation;
                        picks += 1;
                    }
                    picks
                })
            })
            .collect();
        for generation in 1..=UPDATES {
            lb.update(table(generation));
        }
        done.store(true, Ordering::Release);
        for picker in pickers {
            assert!(picker.join().expect("picker panicked") > 0);
        }
        let last = *lb.load().pick().unwrap();
        assert_eq!(
            last / 10,
            UPDATES,
            "after the last update only its table is seen"
        );
    }
}
