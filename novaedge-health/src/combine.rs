//! Combining health verdicts from several detectors into one per endpoint.
//!
//! An endpoint that active checks find healthy may still be ejected by outlier detection, and
//! the other way round. If both detectors called a balancer's `set_healthy` directly, the
//! active checker's next "healthy" would undo an ejection. Envoy keeps one failure flag per
//! source on each host (`FAILED_ACTIVE_HC`, `FAILED_OUTLIER_CHECK`) and routes to a host only
//! when no flag is set; [`HealthCombiner`] does the same: each detector reports to its own
//! [`SourceSink`], and the combiner reports to the data plane's sink only when the combined
//! verdict — healthy iff no source says unhealthy — changes.
//!
//! Every endpoint starts healthy from every source's point of view, so the first event
//! forwarded for an endpoint is "unhealthy".

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::event::{Health, HealthEvent, HealthSink};

/// Who reports a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Active health checks ([`crate::active`]).
    Active,
    /// Passive outlier detection ([`crate::outlier`]).
    Outlier,
}

impl Source {
    fn bit(self) -> u8 {
        match self {
            Source::Active => 0b01,
            Source::Outlier => 0b10,
        }
    }
}

/// Combines per-source verdicts; cheap to clone, clones share state.
pub struct HealthCombiner<K> {
    inner: Arc<Inner<K>>,
}

struct Inner<K> {
    /// Failure bits per endpoint; endpoints with no bit set are not stored.
    failing: Mutex<HashMap<K, u8>>,
    sink: Box<dyn HealthSink<K>>,
}

// === impl HealthCombiner ===

impl<K> Clone for HealthCombiner<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K> HealthCombiner<K>
where
    K: Clone + Eq + Hash + Debug + Send + Sync + 'static,
{
    /// Combined changes go to `sink`.
    pub fn new(sink: impl HealthSink<K>) -> Self {
        Self {
            inner: Arc::new(Inner {
                failing: Mutex::new(HashMap::new()),
                sink: Box::new(sink),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, u8>> {
        self.inner
            .failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A sink for one detector's events.
    pub fn sink(&self, source: Source) -> SourceSink<K> {
        SourceSink {
            combiner: self.clone(),
            source,
        }
    }

    /// Applies one source's verdict, forwarding a change of the combined verdict.
    pub fn report(&self, source: Source, event: HealthEvent<K>) {
        let mut failing = self.lock();
        let before = failing.get(&event.key).copied().unwrap_or(0);
        let after = match event.health {
            Health::Healthy => before & !source.bit(),
            Health::Unhealthy => before | source.bit(),
        };
        if after == 0 {
            failing.remove(&event.key);
        } else {
            failing.insert(event.key.clone(), after);
        }
        if (before == 0) != (after == 0) {
            let health = if after == 0 {
                Health::Healthy
            } else {
                Health::Unhealthy
            };
            // Forwarded under the lock, so that two sources racing on one endpoint cannot
            // deliver their combined verdicts out of order. Sinks must not block anyway.
            self.inner.sink.report(HealthEvent {
                key: event.key,
                health,
            });
        }
    }

    /// The combined verdict for `key` (healthy if no source said otherwise).
    pub fn health(&self, key: &K) -> Health {
        if self.lock().contains_key(key) {
            Health::Unhealthy
        } else {
            Health::Healthy
        }
    }

    /// Forgets `key` (the endpoint is gone); nothing is forwarded.
    pub fn remove(&self, key: &K) {
        self.lock().remove(key);
    }
}

impl<K> Debug for HealthCombiner<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthCombiner")
            .field("failing", &self.inner.failing.lock().map(|m| m.len()).ok())
            .finish_non_exhaustive()
    }
}

/// One source's entry into a [`HealthCombiner`]; give it to that detector as its sink.
#[derive(Debug)]
pub struct SourceSink<K> {
    combiner: HealthCombiner<K>,
    source: Source,
}

impl<K> HealthSink<K> for SourceSink<K>
where
    K: Clone + Eq + Hash + Debug + Send + Sync + 'static,
{
    fn report(&self, event: HealthEvent<K>) {
        self.combiner.report(self.source, event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::unbounded_channel;

    fn ev(key: &'static str, health: Health) -> HealthEvent<&'static str> {
        HealthEvent { key, health }
    }

    #[test]
    fn unhealthy_while_any_source_says_so() {
        let (tx, mut rx) = unbounded_channel();
        let combiner = HealthCombiner::new(tx);
        let active = combiner.sink(Source::Active);
        let outlier = combiner.sink(Source::Outlier);

        active.report(ev("a", Health::Healthy)); // already healthy: nothing
        outlier.report(ev("a", Health::Unhealthy));
        active.report(ev("a", Health::Unhealthy)); // still unhealthy: nothing
        active.report(ev("a", Health::Healthy)); // the ejection still holds: nothing
        assert_eq!(combiner.health(&"a"), Health::Unhealthy);
        outlier.report(ev("a", Health::Healthy));
        assert_eq!(combiner.health(&"a"), Health::Healthy);

        let events: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(HealthEvent::into_parts)
            .collect();
        assert_eq!(events, [("a", Health::Unhealthy), ("a", Health::Healthy)]);
    }

    #[test]
    fn removed_endpoints_are_forgotten() {
        let (tx, mut rx) = unbounded_channel();
        let combiner = HealthCombiner::new(tx);
        combiner.report(Source::Active, ev("a", Health::Unhealthy));
        combiner.remove(&"a");
        assert_eq!(combiner.health(&"a"), Health::Healthy);
        combiner.report(Source::Active, ev("a", Health::Unhealthy));
        assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), 2);
    }
}
