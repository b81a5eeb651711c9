//! Load balancing selectors for NovaEdge, usable by any Rust proxy.
//!
//! A selector is an immutable table built once from an endpoint set; [`Selector::pick`] then
//! chooses one endpoint per request using atomics only, so many threads can pick from the same
//! table without locks. When the endpoint set changes, a new table is built off the
//! hot path and swapped in atomically through [`Balanced`] while pickers keep going: this is the
//! model pingora's `pingora-load-balancing` uses for its weighted and ketama tables.
//!
//! The crate is generic over the endpoint type `E` (a socket address, a connection pool handle, a
//! name): it never looks inside an endpoint, it only hands back a reference to one.
//!
//! Algorithms, one module each, all implementing [`Selector`]:
//!
//! - [`round_robin`]: every endpoint in turn.
//! - [`weighted_round_robin`]: nginx's smooth weighted round robin, precomputed into a schedule so
//!   that picking stays lock-free.
//!
//! Further algorithms (power of two choices, peak EWMA, ring hash, Maglev) belong in modules of
//! their own beside these, each a table type implementing [`Selector`], so that [`Balanced`] and
//! callers stay unchanged.
//!
//! # Example
//!
//! ```
//! use novaedge_lb::{Balanced, RoundRobin, Selector, WeightedRoundRobin};
//!
//! // Plain round robin over two addresses.
//! let rr = RoundRobin::new(vec!["10.0.0.1:8080", "10.0.0.2:8080"]);
//! let first = *rr.pick().expect("two endpoints");
//! let second = *rr.pick().expect("two endpoints");
//! assert_ne!(first, second);
//!
//! // Weighted, behind a handle that the control plane updates while requests keep picking.
//! let lb = Balanced::new(WeightedRoundRobin::new([("a", 5), ("b", 1), ("c", 1)]));
//! let picks: Vec<&str> = {
//!     let table = lb.load();
//!     (0..7).map(|_| *table.pick().expect("non-zero weights")).collect()
//! };
//! assert_eq!(picks.iter().filter(|e| **e == "a").count(), 5);
//!
//! // Draining "a" and "b": weight 0 keeps them listed but never picked.
//! lb.update(WeightedRoundRobin::new([("a", 0), ("b", 0), ("c", 1)]));
//! assert_eq!(lb.load().pick(), Some(&"c"));
//! assert_eq!(lb.load().endpoints().len(), 3);
//! ```
#![forbid(unsafe_code)]

pub mod balanced;
mod cursor;
pub mod round_robin;
pub mod selector;
pub mod weighted_round_robin;

pub use balanced::Balanced;
pub use round_robin::RoundRobin;
pub use selector::Selector;
pub use weighted_round_robin::{MAX_SCHEDULE_LEN, WeightedRoundRobin};
