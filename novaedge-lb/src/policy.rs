//! Choosing an algorithm by configuration: [`LbPolicy`] builds a [`Table`] per endpoint set.
//!
//! A proxy reads the algorithm from its configuration (one per backend), keeps the [`LbPolicy`]
//! value, and builds a table from it whenever the backend's endpoints change, usually through an
//! [`EndpointSet`](crate::EndpointSet), which also keeps load and health across the rebuilds.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::endpoint::EndpointState;
use crate::hash::EndpointId;
use crate::least_request::LeastRequest;
use crate::maglev::{Maglev, MaglevSize};
use crate::members::Members;
use crate::peak_ewma::{self, PeakEwma};
use crate::random::Random;
use crate::ring_hash::{self, RingHash};
use crate::selector::{PickContext, Picked, Selector};
use crate::weighted_round_robin::WeightedRoundRobin;

/// A load balancing algorithm and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum LbPolicy {
    /// Smooth weighted round robin ([`WeightedRoundRobin`]); plain round robin with equal
    /// weights.
    #[default]
    RoundRobin,
    /// Weighted random ([`Random`]).
    Random,
    /// The least loaded of `choices` weighted random draws ([`LeastRequest`]); 2 is the usual
    /// power of two choices, 1 is weighted random.
    LeastRequest {
        /// Candidates per pick, at least 1.
        choices: u32,
    },
    /// The cheaper of two weighted random draws by latency estimate × load ([`PeakEwma`]).
    PeakEwma {
        /// The time constant of the latency estimates; linkerd uses 10 s.
        decay: Duration,
        /// The estimate of endpoints not measured yet; linkerd uses 30 ms.
        default_rtt: Duration,
    },
    /// Consistent hashing on a ring ([`RingHash`]).
    RingHash {
        /// Points per unit of weight, at least 1; libketama's 160 by default.
        points_per_weight: u32,
        /// The most points on the ring, at least 1.
        max_ring_size: u32,
    },
    /// Maglev consistent hashing ([`Maglev`]).
    Maglev {
        /// The lookup table size, a prime; 65,537 by default.
        table_size: MaglevSize,
    },
}

// === impl LbPolicy ===

impl LbPolicy {
    /// Least request with two choices.
    pub const fn least_request() -> Self {
        LbPolicy::LeastRequest { choices: 2 }
    }

    /// Peak EWMA with linkerd's defaults: 10 s decay, 30 ms default RTT.
    pub const fn peak_ewma() -> Self {
        LbPolicy::PeakEwma {
            decay: peak_ewma::DEFAULT_DECAY,
            default_rtt: peak_ewma::DEFAULT_RTT,
        }
    }

    /// Ring hash with 160 points per unit of weight and at most 2^20 points.
    pub const fn ring_hash() -> Self {
        LbPolicy::RingHash {
            points_per_weight: ring_hash::DEFAULT_POINTS_PER_WEIGHT,
            max_ring_size: ring_hash::DEFAULT_MAX_RING_SIZE,
        }
    }

    /// Maglev with a 65,537-slot table.
    pub const fn maglev() -> Self {
        LbPolicy::Maglev {
            table_size: MaglevSize::DEFAULT,
        }
    }

    /// Whether the policy uses the request's hash key ([`PickContext::hash`]): only then does a
    /// proxy need to compute one.
    pub fn uses_hash(&self) -> bool {
        matches!(self, LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. })
    }

    /// The policy's name as configuration spells it: `RoundRobin`, `Random`, `LeastRequest`,
    /// `PeakEwma`, `RingHash`, `Maglev`.
    pub fn name(&self) -> &'static str {
        match self {
            LbPolicy::RoundRobin => "RoundRobin",
            LbPolicy::Random => "Random",
            LbPolicy::LeastRequest { .. } => "LeastRequest",
            LbPolicy::PeakEwma { .. } => "PeakEwma",
            LbPolicy::RingHash { .. } => "RingHash",
            LbPolicy::Maglev { .. } => "Maglev",
        }
    }

    /// Checks the parameters; building clamps out-of-range values instead (0 choices become 1,
    /// 0 points become 1), so call this where configuration is validated to reject them with a
    /// clear message.
    pub fn validate(&self) -> Result<(), PolicyError> {
        match *self {
            LbPolicy::LeastRequest { choices: 0 } => Err(PolicyError::new(
                "leastRequest.choices",
                "must be at least 1 (2 is the usual power of two choices), got 0",
            )),
            LbPolicy::PeakEwma { decay, .. } if decay.is_zero() => Err(PolicyError::new(
                "peakEwma.decay",
                "must be above 0 (linkerd uses 10s), got 0",
            )),
            LbPolicy::RingHash {
                points_per_weight: 0,
                ..
            } => Err(PolicyError::new(
                "ringHash.pointsPerWeight",
                "must be at least 1 (160 is the usual value), got 0",
            )),
            LbPolicy::RingHash {
                max_ring_size: 0, ..
            } => Err(PolicyError::new(
                "ringHash.maxRingSize",
                "must be at least 1, got 0",
            )),
            _ => Ok(()),
        }
    }

    /// Builds a table over `(endpoint, weight)` pairs with fresh state (no load, all healthy)
    /// and default options. To keep load and health across rebuilds, use an
    /// [`EndpointSet`](crate::EndpointSet).
    pub fn build<E: EndpointId>(&self, endpoints: impl IntoIterator<Item = (E, u32)>) -> Table<E> {
        self.build_with(endpoints, &BuildOptions::default())
    }

    /// As [`build`](Self::build), with options.
    pub fn build_with<E: EndpointId>(
        &self,
        endpoints: impl IntoIterator<Item = (E, u32)>,
        options: &BuildOptions,
    ) -> Table<E> {
        self.build_members(Members::standalone(endpoints, options))
    }

    pub(crate) fn build_members<E: EndpointId>(&self, members: Members<E>) -> Table<E> {
        match *self {
            LbPolicy::RoundRobin => Table::RoundRobin(WeightedRoundRobin::from_members(members)),
            LbPolicy::Random => Table::Random(Random::from_members(members)),
            LbPolicy::LeastRequest { choices } => {
                Table::LeastRequest(LeastRequest::from_members(members, choices))
            }
            LbPolicy::PeakEwma { decay, default_rtt } => {
                Table::PeakEwma(PeakEwma::from_members(members, decay, default_rtt))
            }
            LbPolicy::RingHash {
                points_per_weight,
                max_ring_size,
            } => Table::RingHash(RingHash::from_members(
                members,
                points_per_weight,
                max_ring_size,
            )),
            LbPolicy::Maglev { table_size } => {
                Table::Maglev(Maglev::from_members(members, table_size))
            }
        }
    }
}

/// How tables treat health, and where their randomness comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct BuildOptions {
    /// Below this percentage of healthy endpoints (among those with a weight above 0) the table
    /// ignores health and balances over all of them; 0 never does. Envoy's
    /// `healthy_panic_threshold`, default 50. Values above 100 count as 100.
    pub panic_threshold: u8,
    /// Makes the table's random choices (round robin start, random draws, fallback draws,
    /// hashing tables' keys for requests without one) a reproducible sequence. For tests and
    /// simulations: a seeded table advances one shared atomic counter, where an unseeded one uses
    /// a generator per thread.
    pub seed: Option<u64>,
}

impl BuildOptions {
    /// Envoy's default panic threshold: 50%.
    pub const DEFAULT_PANIC_THRESHOLD: u8 = 50;

    /// The defaults: 50% panic threshold, unseeded.
    pub const fn new() -> Self {
        Self {
            panic_threshold: Self::DEFAULT_PANIC_THRESHOLD,
            seed: None,
        }
    }

    /// The defaults with a seed.
    pub const fn seeded(seed: u64) -> Self {
        Self::new().with_seed(Some(seed))
    }

    /// Sets the panic threshold, in percent.
    pub const fn with_panic_threshold(mut self, percent: u8) -> Self {
        self.panic_threshold = percent;
        self
    }

    /// Sets or clears the seed.
    pub const fn with_seed(mut self, seed: Option<u64>) -> Self {
        self.seed = seed;
        self
    }
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// A configuration value that cannot work, with the field it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    field: &'static str,
    message: String,
}

impl PolicyError {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }

    /// The offending field, as configuration spells it (`maglev.tableSize`).
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for PolicyError {}

/// A table of any algorithm, as [`LbPolicy::build`] returns it.
#[derive(Debug)]
pub enum Table<E> {
    /// Built by [`LbPolicy::RoundRobin`].
    RoundRobin(WeightedRoundRobin<E>),
    /// Built by [`LbPolicy::Random`].
    Random(Random<E>),
    /// Built by [`LbPolicy::LeastRequest`].
    LeastRequest(LeastRequest<E>),
    /// Built by [`LbPolicy::PeakEwma`].
    PeakEwma(PeakEwma<E>),
    /// Built by [`LbPolicy::RingHash`].
    RingHash(RingHash<E>),
    /// Built by [`LbPolicy::Maglev`].
    Maglev(Maglev<E>),
}

macro_rules! each_table {
    ($table:expr, $t:ident => $body:expr) => {
        match $table {
            Table::RoundRobin($t) => $body,
            Table::Random($t) => $body,
            Table::LeastRequest($t) => $body,
            Table::PeakEwma($t) => $body,
            Table::RingHash($t) => $body,
            Table::Maglev($t) => $body,
        }
    };
}

// === impl Table ===

impl<E> Table<E> {
    pub(crate) fn members(&self) -> &Members<E> {
        each_table!(self, t => t.members())
    }

    /// The configured weight of each endpoint, in [`endpoints`](Selector::endpoints) order.
    pub fn weights(&self) -> &[u32] {
        &self.members().weights
    }

    /// The shared state of each endpoint, in [`endpoints`](Selector::endpoints) order.
    pub fn states(&self) -> &[Arc<EndpointState>] {
        &self.members().states
    }
}

impl<E> Selector<E> for Table<E> {
    #[inline]
    fn pick_with(&self, ctx: &PickContext) -> Option<Picked<'_, E>> {
        each_table!(self, t => t.pick_with(ctx))
    }

    fn endpoints(&self) -> &[E] {
        each_table!(self, t => t.endpoints())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let bad = [
            LbPolicy::LeastRequest { choices: 0 },
            LbPolicy::PeakEwma {
                decay: Duration::ZERO,
                default_rtt: Duration::from_millis(1),
            },
            LbPolicy::RingHash {
                points_per_weight: 0,
                max_ring_size: 10,
            },
            LbPolicy::RingHash {
                points_per_weight: 1,
                max_ring_size: 0,
            },
        ];
        let fields: Vec<_> = bad
            .iter()
            .map(|p| p.validate().unwrap_err().field())
            .collect();
        assert_eq!(
            fields,
            [
                "leastRequest.choices",
                "peakEwma.decay",
                "ringHash.pointsPerWeight",
                "ringHash.maxRingSize"
            ]
        );
        for good in [
            LbPolicy::RoundRobin,
            LbPolicy::Random,
            LbPolicy::least_request(),
            LbPolicy::peak_ewma(),
            LbPolicy::ring_hash(),
            LbPolicy::maglev(),
        ] {
            assert_eq!(good.validate(), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn tables_sets_and_futures_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        fn assert_send<T: Send>() {}
        type Addr = std::net::SocketAddr;
        assert_send_sync::<Table<Addr>>();
        assert_send_sync::<crate::EndpointSet<Addr>>();
        assert_send_sync::<crate::InFlight>();
        type Svc = tower::util::BoxCloneSyncService<(), (), crate::BoxError>;
        assert_send_sync::<crate::Balance<Addr, Svc>>();
        assert_send::<crate::ResponseFuture<tower::util::Oneshot<Svc, ()>, crate::SystemClock>>();
    }

    #[test]
    fn every_policy_builds_its_table() {
        let policies = [
            LbPolicy::RoundRobin,
            LbPolicy::Random,
            LbPolicy::least_request(),
            LbPolicy::peak_ewma(),
            LbPolicy::ring_hash(),
            LbPolicy::maglev(),
        ];
        for policy in policies {
            let table = policy.build([("a", 1), ("b", 2), ("c", 0)]);
            assert_eq!(table.endpoints(), &["a", "b", "c"]);
            assert_eq!(table.weights(), &[1, 2, 0]);
            assert_eq!(table.states().len(), 3);
            for _ in 0..50 {
                assert_ne!(
                    table.pick(),
                    Some(&"c"),
                    "{policy:?} picked a weight-0 endpoint"
                );
            }
            let name = format!("{table:?}");
            assert!(name.starts_with(policy.name()), "{name} for {policy:?}");
        }
    }
}
