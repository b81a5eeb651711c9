//! The shared atomic position that round robin style selectors walk.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A lock-free position in a cyclic sequence of `len` slots.
///
/// Tables start it at a random slot so that the many tables rebuilt after an endpoint change (one
/// per proxy, one per worker, one per update) do not all send their first request to slot 0.
#[derive(Debug)]
pub(crate) struct Cursor {
    next: AtomicUsize,
}

impl Cursor {
    pub(crate) fn starting_at(start: usize) -> Self {
        Self {
            next: AtomicUsize::new(start),
        }
    }

    /// The slot for this call, in `0..len`; `len` must be non-zero.
    ///
    /// `Relaxed` is enough: the counter orders nothing but itself, and `fetch_add` alone makes
    /// every caller get a distinct value, so over any run of `k * len` calls each slot is returned
    /// exactly `k` times, whatever the thread interleaving. The counter wraps at `usize::MAX`,
    /// which breaks the cycle once for a `len` that is not a power of two: harmless (one slot seen
    /// early) and, on 64-bit targets, out of reach anyway.
    #[inline]
    pub(crate) fn next(&self, len: usize) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % len
    }
}
