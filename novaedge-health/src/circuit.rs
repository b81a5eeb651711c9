//! Per-backend circuit breaking: caps on connections, pending requests, concurrent requests and
//! concurrent retries, after Envoy's cluster circuit breakers
//! (<https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/circuit_breaking>,
//! `envoy.config.cluster.v3.CircuitBreakers.Thresholds`).
//!
//! Each limit is a counter of resources in use. [`CircuitBreaker::try_acquire`] takes one unit
//! if the count is below its maximum and returns an RAII [`Permit`] that gives it back on drop;
//! otherwise it fails *at once* with [`Overflow`], naming the limit, and the caller fails the
//! request fast (Envoy answers 503 with `x-envoy-overloaded`). Nothing ever queues here: a
//! breaker that waited would turn an overload into latency instead of shedding it.
//!
//! Like Envoy's, the counters are shared by all workers and lock-free. Unlike Envoy's
//! check-then-increment, taking a unit is one compare-and-swap loop, so a limit is never
//! exceeded, even briefly. Maxima can be changed at run time ([`CircuitBreaker::set_limits`]);
//! permits already held stay valid, and a lowered limit only refuses new ones until the count
//! falls below it.
//!
//! Defaults are Envoy's: 1024 connections, 1024 pending requests, 1024 requests, 3 retries.
//! What counts as a "pending request" (one waiting for a connection from the pool) or a "retry"
//! (a retry attempt in flight) is up to the data plane, which acquires the matching permit.
//!
//! Not built: Envoy's retry budgets (`retry_budget`), `max_connection_pools`, per-priority
//! thresholds, and `track_remaining` gauges (though [`CircuitBreaker::in_use`] gives the counts).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Which circuit breaker limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Connections open to the backend (`max_connections`).
    Connections,
    /// Requests waiting for a connection (`max_pending_requests`).
    PendingRequests,
    /// Requests in flight (`max_requests`).
    Requests,
    /// Retries in flight (`max_retries`).
    Retries,
}

impl Limit {
    const ALL: [Limit; 4] = [
        Limit::Connections,
        Limit::PendingRequests,
        Limit::Requests,
        Limit::Retries,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Connections => "max_connections",
            Limit::PendingRequests => "max_pending_requests",
            Limit::Requests => "max_requests",
            Limit::Retries => "max_retries",
        })
    }
}

/// The maxima of one backend's breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Default 1024.
    pub max_connections: u64,
    /// Default 1024.
    pub max_pending_requests: u64,
    /// Default 1024.
    pub max_requests: u64,
    /// Default 3.
    pub max_retries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

impl Limits {
    fn get(&self, limit: Limit) -> u64 {
        match limit {
            Limit::Connections => self.max_connections,
            Limit::PendingRequests => self.max_pending_requests,
            Limit::Requests => self.max_requests,
            Limit::Retries => self.max_retries,
        }
    }
}

/// A limit was reached; the request or connection must fail now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker open: {limit} of {max} reached")]
pub struct Overflow {
    /// Which limit.
    pub limit: Limit,
    /// Its maximum at the time.
    pub max: u64,
}

/// One backend's circuit breaker; cheap to clone, clones share the counters.
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max: [AtomicU64; 4],
    used: [AtomicU64; 4],
}

// === impl CircuitBreaker ===

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl CircuitBreaker {
    /// A breaker with these maxima and nothing in use.
    pub fn new(limits: Limits) -> Self {
        Self {
            inner: Arc::new(Inner {
                max: Limit::ALL.map(|l| AtomicU64::new(limits.get(l))),
                used: Default::default(),
            }),
        }
    }

    /// Changes the maxima; permits held stay valid.
    pub fn set_limits(&self, limits: Limits) {
        for l in Limit::ALL {
            self.inner.max[l.index()].store(limits.get(l), Ordering::Release);
        }
    }

    /// The current maxima.
    pub fn limits(&self) -> Limits {
        let max = |l: Limit| self.inner.max[l.index()].load(Ordering::Acquire);
        Limits {
            max_connections: max(Limit::Connections),
            max_pending_requests: max(Limit::PendingRequests),
            max_requests: max(Limit::Requests),
            max_retries: max(Limit::Retries),
        }
    }

    /// Units of `limit` in use.
    pub fn in_use(&self, limit: Limit) -> u64 {
        self.inner.used[limit.index()].load(Ordering::Acquire)
    }

    /// Takes one unit of `limit`, or fails at once if it is at its maximum.
    pub fn try_acquire(&self, limit: Limit) -> Result<Permit, Overflow> {
        let max = self.inner.max[limit.index()].load(Ordering::Acquire);
        self.inner.used[limit.index()]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < max).then_some(used + 1)
            })
            .map(|_| Permit {
                inner: Arc::clone(&self.inner),
                limit,
            })
            .map_err(|_| Overflow { limit, max })
    }

    /// [`try_acquire`](Self::try_acquire)`(Limit::Connections)`.
    pub fn try_acquire_connection(&self) -> Result<Permit, Overflow> {
        self.try_acquire(Limit::Connections)
    }

    /// [`try_acquire`](Self::try_acquire)`(Limit::PendingRequests)`.
    pub fn try_acquire_pending(&self) -> Result<Permit, Overflow> {
        self.try_acquire(Limit::PendingRequests)
    }

    /// [`try_acquire`](Self::try_acquire)`(Limit::Requests)`.
    pub fn try_acquire_request(&self) -> Result<Permit, Overflow> {
        self.try_acquire(Limit::Requests)
    }

    /// [`try_acquire`](Self::try_acquire)`(Limit::Retries)`.
    pub fn try_acquire_retry(&self) -> Result<Permit, Overflow> {
        self.try_acquire(Limit::Retries)
    }
}

/// One unit of a limit, given back when dropped.
#[derive(Debug)]
#[must_use = "the unit is released as soon as the permit is dropped"]
pub struct Permit {
    inner: Arc<Inner>,
    limit: Limit,
}

impl Permit {
    /// Which limit this permit counts against.
    pub fn limit(&self) -> Limit {
        self.limit
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.inner.used[self.limit.index()].fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> CircuitBreaker {
        CircuitBreaker::new(Limits {
            max_connections: 2,
            max_pending_requests: 1,
            max_requests: 3,
            max_retries: 1,
        })
    }

    #[test]
    fn requests_limit_enforced_and_released_on_drop() {
        let cb = small();
        let permits: Vec<_> = (0..3).map(|_| cb.try_acquire_request().unwrap()).collect();
        assert_eq!(cb.in_use(Limit::Requests), 3);
        let err = cb.try_acquire_request().unwrap_err();
        assert_eq!(
            err,
            Overflow {
                limit: Limit::Requests,
                max: 3
            }
        );
        assert_eq!(
            err.to_string(),
            "circuit breaker open: max_requests of 3 reached"
        );
        // A refused attempt takes nothing.
        assert_eq!(cb.in_use(Limit::Requests), 3);
        drop(permits);
        assert_eq!(cb.in_use(Limit::Requests), 0);
        assert!(cb.try_acquire_request().is_ok());
    }

    #[test]
    fn each_limit_is_independent_and_reported_by_name() {
        let cb = small();
        let _c1 = cb.try_acquire_connection().unwrap();
        let _c2 = cb.try_acquire_connection().unwrap();
        let _p = cb.try_acquire_pending().unwrap();
        let r = cb.try_acquire_retry().unwrap();
        assert_eq!(r.limit(), Limit::Retries);
        assert_eq!(
            cb.try_acquire_connection().unwrap_err().limit,
            Limit::Connections
        );
        assert_eq!(
            cb.try_acquire_pending().unwrap_err().limit,
            Limit::PendingRequests
        );
        assert_eq!(cb.try_acquire_retry().unwrap_err().limit, Limit::Retries);
        // Requests are untouched by the others.
        assert!(cb.try_acquire_request().is_ok());
        drop(r);
        assert!(cb.try_acquire_retry().is_ok());
    }

    #[test]
    fn clones_share_counters_and_limits_change_at_run_time() {
        let cb = small();
        let other = cb.clone();
        let mut held: Vec<_> = (0..3).map(|_| cb.try_acquire_request().unwrap()).collect();
        assert_eq!(
            other.try_acquire_request().unwrap_err().limit,
            Limit::Requests
        );
        other.set_limits(Limits {
            max_requests: 2,
            ..cb.limits()
        });
        held.pop();
        assert_eq!(cb.in_use(Limit::Requests), 2);
        // 2 in use, new maximum 2: still refused until one more is released.
        assert_eq!(
            cb.try_acquire_request().unwrap_err(),
            Overflow {
                limit: Limit::Requests,
                max: 2
            }
        );
        cb.set_limits(Limits {
            max_requests: 4,
            ..cb.limits()
        });
        assert!(cb.try_acquire_request().is_ok());
    }

    #[test]
    fn concurrent_acquirers_never_exceed_the_limit() {
        let cb = CircuitBreaker::new(Limits {
            max_requests: 8,
            ..Limits::default()
        });
        let granted = std::sync::atomic::AtomicU64::new(0);
        let peak = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..2000 {
                        if let Ok(p) = cb.try_acquire_request() {
                            granted.fetch_add(1, Ordering::Relaxed);
                            peak.fetch_max(cb.in_use(Limit::Requests), Ordering::Relaxed);
                            drop(p);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::Relaxed) <= 8);
        assert!(granted.load(Ordering::Relaxed) > 0);
        assert_eq!(cb.in_use(Limit::Requests), 0);
    }
}
