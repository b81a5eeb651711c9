//! The trait every load balancing algorithm in this crate implements.
//!
//! A selector is a table built once from an endpoint set and never mutated afterwards, apart from
//! the atomics that `pick` advances. Changing the endpoint set means building a new table and
//! swapping it in, see [`Balanced`](crate::Balanced). Keeping tables immutable is what lets `pick`
//! take `&self` and run without locks on every request.

/// Picks one endpoint per call.
///
/// Implementations are immutable tables built once from an endpoint set, with a lock-free `pick`
/// (`&self`, atomics only). All implementations in this crate are `Send + Sync` whenever `E` is,
/// so one table can be shared by every worker thread.
pub trait Selector<E> {
    /// Chooses the endpoint for the next request, or `None` when no endpoint can be picked (the
    /// set is empty, or every endpoint has weight 0).
    fn pick(&self) -> Option<&E>;

    /// Every endpoint the table was built from, in the order it was given, including those that
    /// are never picked (weight 0). Useful for fallbacks that skip unhealthy endpoints and for
    /// admin views.
    fn endpoints(&self) -> &[E];
}
