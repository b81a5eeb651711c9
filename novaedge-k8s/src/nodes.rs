//! Per-node snapshots: which Gateways a node serves.
//!
//! A Gateway serves on every node unless a selector limits it: a ProxyGateway's
//! `spec.nodeSelector`, or a Gateway API Gateway's [`NODE_SELECTOR_ANNOTATION`]
//! (`key=value,key=value`, the labels a node must carry). [`Translation::for_node`] gives a
//! node the part of the snapshot it serves: the listeners of Gateways that select it (and of
//! Ingresses, which every node serves), the routes attached through those Gateways, and the
//! backends those routes use.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use novaedge_snapshot::ConfigSnapshot;

use crate::crd::NodeSelector;
use crate::translate::Translation;

/// Gateway annotation limiting the nodes that serve it: `key=value[,key=value...]`.
pub const NODE_SELECTOR_ANNOTATION: &str = "novaedge.io/node-selector";

type Key = (String, String);

/// Where the parts of a snapshot come from, for [`Translation::for_node`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeScope {
    /// Gateways (and ProxyGateways) limited to some nodes.
    pub(crate) selectors: BTreeMap<Key, NodeSelector>,
    /// Per snapshot listener: the Gateways whose listeners it carries.
    pub(crate) listener_gateways: BTreeMap<String, BTreeSet<Key>>,
    /// Snapshot listeners that carry Ingresses, which every node serves.
    pub(crate) ingress_listeners: BTreeSet<String>,
    /// Per snapshot route (listener, name): the Gateways it is attached through; routes not
    /// listed (Ingress rules) are served wherever their listener is.
    pub(crate) route_gateways: BTreeMap<(String, String), Vec<Key>>,
}

impl NodeScope {
    /// Whether any Gateway is limited to some nodes; if not, every node gets the same snapshot.
    pub fn is_uniform(&self) -> bool {
        self.selectors.is_empty()
    }
}

impl Translation {
    /// The snapshot a node with `labels` serves.
    pub fn for_node(&self, labels: &BTreeMap<String, String>) -> ConfigSnapshot {
        self.nodes.snapshot_for(&self.snapshot, labels)
    }
}

impl NodeScope {
    /// The part of `whole` (the snapshot this scope was computed with) that a node with
    /// `labels` serves.
    pub fn snapshot_for(
        &self,
        whole: &ConfigSnapshot,
        labels: &BTreeMap<String, String>,
    ) -> ConfigSnapshot {
        if self.is_uniform() {
            return whole.clone();
        }
        let selected = |gateway: &Key| {
            self.selectors
                .get(gateway)
                .is_none_or(|s| s.matches(labels))
        };
        let mut snapshot = ConfigSnapshot {
            version: whole.version,
            listeners: Vec::new(),
            routes: Vec::new(),
            backends: Vec::new(),
            vips: whole.vips.clone(),
        };
        let mut listeners = HashSet::new();
        for l in &whole.listeners {
            let keep = self.ingress_listeners.contains(&l.name)
                || self
                    .listener_gateways
                    .get(&l.name)
                    .is_some_and(|gateways| gateways.iter().any(selected));
            if keep {
                listeners.insert(l.name.as_str());
                snapshot.listeners.push(l.clone());
            }
        }
        let mut backends = HashSet::new();
        for r in &whole.routes {
            if !listeners.contains(r.listener.as_str()) {
                continue;
            }
            let through = self
                .route_gateways
                .get(&(r.listener.clone(), r.name.clone()));
            if through.is_some_and(|gateways| !gateways.iter().any(selected)) {
                continue;
            }
            for rule in &r.rules {
                backends.extend(rule.backends.iter().map(|b| b.backend.as_str()));
                backends.extend(rule.filters.mirrors.iter().map(|m| m.backend.as_str()));
            }
            snapshot.routes.push(r.clone());
        }
        snapshot.backends = whole
            .backends
            .iter()
            .filter(|b| backends.contains(b.name.as_str()))
            .cloned()
            .collect();
        snapshot
    }
}

/// Parses [`NODE_SELECTOR_ANNOTATION`]: `key=value` pairs separated by commas.
pub(crate) fn parse_annotation(text: &str) -> Result<NodeSelector, String> {
    let mut selector = NodeSelector::default();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = part.split_once('=') else {
            return Err(format!("{part:?}: use key=value"));
        };
        let (key, value) = (key.trim(), value.trim());
        crate::crd::check_label_key(key).map_err(|why| format!("{key:?}: {why}"))?;
        crate::crd::check_label_value(value).map_err(|why| format!("{value:?}: {why}"))?;
        selector
            .match_labels
            .insert(key.to_owned(), value.to_owned());
    }
    Ok(selector)
}
