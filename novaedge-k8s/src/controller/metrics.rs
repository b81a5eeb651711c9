//! The controller's own metrics, registered with [`ControllerMetrics::register`]. The
//! snapshot distribution's (pushes, agents, failovers) are the
//! [`Publisher`](novaedge_snapshot::distribution::Publisher)'s.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Handles to the controller's metrics; clones share them.
#[derive(Debug, Clone)]
pub struct ControllerMetrics {
    watch_events: Family<WatchLabels, Counter>,
    reconciliation: Histogram,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WatchLabels {
    kind: &'static str,
    event: &'static str,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self {
            watch_events: Family::default(),
            // 1 ms to about 16 s.
            reconciliation: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        }
    }
}

impl ControllerMetrics {
    /// Registers `novaedge_watch_events_total{kind, event}` (objects added, changed or deleted,
    /// as the watches deliver them) and `novaedge_reconciliation_duration_seconds` (reading the
    /// objects, translating them and publishing the snapshots).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "novaedge_watch_events",
            "Objects applied or deleted, as the watches deliver them",
            self.watch_events.clone(),
        );
        registry.register(
            "novaedge_reconciliation_duration_seconds",
            "Time to translate the configuration and publish the snapshots",
            self.reconciliation.clone(),
        );
    }

    /// Counts a watch event of `kind` (`event`: `apply` or `delete`).
    pub fn watch_event(&self, kind: &'static str, event: &'static str) {
        self.watch_events
            .get_or_create(&WatchLabels { kind, event })
            .inc();
    }

    /// Records how long a reconciliation took.
    pub fn reconciled(&self, took: std::time::Duration) {
        self.reconciliation.observe(took.as_secs_f64());
    }
}
