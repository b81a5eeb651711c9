//! The trait every load balancing algorithm in this crate implements, and what a pick carries.
//!
//! A selector is a table built once from an endpoint set and never mutated afterwards, apart from
//! the atomics that picks advance. Changing the endpoint set means building a new table and
//! swapping it in, see [`EndpointSet`](crate::EndpointSet) and [`Balanced`](crate::Balanced).
//! Keeping tables immutable is what lets a pick take `&self` and run without locks on every
//! request.
//!
//! # Health, the fallback walk and the panic threshold
//!
//! Every table reads its endpoints' health flags ([`EndpointState::is_healthy`]) at pick time, so
//! marking an endpoint down or up takes effect on the next pick without a rebuild. A pick runs in
//! one of three modes, decided by one atomic load of the set's unhealthy count:
//!
//! 1. every endpoint healthy: the algorithm's choice is final, no flag is read;
//! 2. some unhealthy: if the algorithm's first choice is unhealthy, a bounded fallback walk
//!    tries up to [`FALLBACK_PROBES`] alternates in the algorithm's own order (the next slots of
//!    a round-robin schedule or a Maglev table, the next points clockwise on a ring, fresh
//!    weighted draws for random choices), then scans the endpoint list once from a position
//!    derived from the pick (from the hash key, for hashing tables, so a key keeps falling back
//!    to the same endpoint). The walk finds a healthy endpoint whenever there is one and costs at
//!    most `FALLBACK_PROBES + n` steps;
//! 3. panic: fewer than [`BuildOptions::panic_threshold`](crate::BuildOptions::panic_threshold)
//!    percent of the endpoints (counting those with a weight above 0) are healthy. Then health
//!    is ignored and the pick balances over all of them, as Envoy does: sending a share of the
//!    traffic to endpoints that may be down beats piling all of it onto the few that are up. A
//!    threshold of 0 disables panic mode, and with no healthy endpoint left a pick returns
//!    `None`.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::endpoint::{EndpointState, InFlight};

/// Alternates tried in the algorithm's own order before scanning the endpoint list. With equal
/// weights and above the default 50% panic threshold, each random alternate is unhealthy with
/// probability at most 1/2, so all 16 are with probability under 2^-16; the scan that follows
/// makes the walk succeed whenever any endpoint is healthy.
pub const FALLBACK_PROBES: usize = 16;

/// Picks one endpoint per call.
///
/// Implementations are immutable tables built once from an endpoint set, with a lock-free pick
/// (`&self`, atomics only). All implementations in this crate are `Send + Sync` whenever `E` is,
/// so one table can be shared by every worker thread.
pub trait Selector<E> {
    /// Chooses the endpoint for a request described by `ctx`, or `None` when no endpoint can be
    /// picked: the set is empty, every weight is 0, or (with panic mode disabled) every endpoint
    /// is unhealthy.
    fn pick_with(&self, ctx: &PickContext) -> Option<Picked<'_, E>>;

    /// Chooses an endpoint with no request information: no hash key (hashing tables then use a
    /// random one) and the current time.
    #[inline]
    fn pick(&self) -> Option<&E> {
        self.pick_with(&PickContext::new())
            .map(|picked| picked.endpoint())
    }

    /// Every endpoint the table was built from, including those that are never picked (weight
    /// 0). Tables built by [`LbPolicy::build`](crate::LbPolicy::build) or directly with `new`
    /// keep the order they were given; [`Picked::index`] indexes this slice.
    fn endpoints(&self) -> &[E];
}

/// What a pick may use from the request.
///
/// Build it with [`PickContext::new`] and the `with_` methods:
///
/// ```
/// use novaedge_lb::PickContext;
/// let ctx = PickContext::new().with_hash(Some(42));
/// assert_eq!(ctx.hash, Some(42));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct PickContext {
    /// The request's hash key, for [`RingHash`](crate::RingHash) and [`Maglev`](crate::Maglev),
    /// usually from [`HashPolicy::hash`](crate::HashPolicy::hash). Without one, hashing tables
    /// pick with a random key; other tables ignore it.
    pub hash: Option<u64>,
    /// The current time, for [`PeakEwma`](crate::PeakEwma)'s decaying latency estimates. `None`
    /// reads the system clock; tests and simulations pass their own.
    pub now: Option<Instant>,
}

impl PickContext {
    /// No hash key, the system clock.
    pub const fn new() -> Self {
        Self {
            hash: None,
            now: None,
        }
    }

    /// Sets the request's hash key.
    pub const fn with_hash(mut self, hash: Option<u64>) -> Self {
        self.hash = hash;
        self
    }

    /// Sets the current time.
    pub const fn at(mut self, now: Instant) -> Self {
        self.now = Some(now);
        self
    }

    pub(crate) fn now(&self) -> Instant {
        self.now.unwrap_or_else(Instant::now)
    }
}

/// The endpoint a pick chose, with what is needed to account for the request sent to it.
pub struct Picked<'a, E> {
    endpoint: &'a E,
    index: usize,
    state: &'a Arc<EndpointState>,
}

// === impl Picked ===

impl<'a, E> Picked<'a, E> {
    pub(crate) fn new(endpoint: &'a E, index: usize, state: &'a Arc<EndpointState>) -> Self {
        Self {
            endpoint,
            index,
            state,
        }
    }

    /// The chosen endpoint.
    #[inline]
    pub fn endpoint(&self) -> &'a E {
        self.endpoint
    }

    /// Its position in [`Selector::endpoints`].
    #[inline]
    pub fn index(&self) -> usize {
        self.index
    }

    /// Its shared state: health, requests in flight, latency estimate.
    #[inline]
    pub fn state(&self) -> &'a Arc<EndpointState> {
        self.state
    }

    /// Counts a request in flight on the endpoint, starting now, until the returned guard
    /// drops; [`InFlight::finish`] also records its latency. Least-request and peak-EWMA picks
    /// depend on callers doing this for every request they send.
    pub fn start(&self) -> InFlight {
        self.state.start_at(Instant::now())
    }

    /// As [`start`](Self::start), with the caller's clock.
    pub fn start_at(&self, now: Instant) -> InFlight {
        self.state.start_at(now)
    }
}

impl<E> Clone for Picked<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for Picked<'_, E> {}

impl<E: fmt::Debug> fmt::Debug for Picked<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picked")
            .field("endpoint", self.endpoint)
            .field("index", &self.index)
            .finish()
    }
}
