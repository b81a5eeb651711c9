//! From one translated configuration to each node's snapshot: the Gateways a node serves and
//! the VIPs placed on it, republished whenever the configuration or a node's health changes.
//! Both sources of `novaedge controller` (files and the API server) publish through it.
//!
//! # Node health
//!
//! Read from the agents' streams ([`Publisher::reports`]) every [`HEALTH_TICK`]: *healthy*
//! while a node's agent is connected, ready and has sent a heartbeat within three intervals;
//! *suspect* once not, until it has been silent for the fencing delay; *fenced* after that,
//! when its agent has dropped its L2 VIPs on its own (it measures the same delay from the last
//! heartbeat the controller answered) and the kernel has expired its addresses.
//!
//! # L2 VIPs are never held by two nodes
//!
//! [`place`] keeps an L2 VIP with its holder until the holder is fenced. On top of that:
//!
//! - **Release before take-over.** A node newly chosen for an L2 VIP gets it only once no other
//!   node that is not fenced says (in its heartbeats) that it holds it. When a VIP moves
//!   because its holder no longer matches the VIP's node selector, the old holder is sent a
//!   snapshot without the VIP first, and the new one gets it after the old one reports it
//!   dropped.
//! - **Claims.** An agent says in every Hello and heartbeat which L2 VIPs it holds. A VIP
//!   without a holder (the controller has just started) goes to the node that claims it.
//! - **Start-up grace.** For one fencing delay after the controller starts, an L2 VIP that no
//!   connected node claims is not placed: an agent that has not reconnected yet may still
//!   hold it, and it will have dropped it by the end of the grace period if it cannot reach
//!   the controller.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use novaedge_snapshot::ConfigSnapshot;
use novaedge_snapshot::distribution::{NodeReport, Publisher};

use crate::file_source::Loaded;
use crate::nodes::NodeScope;
use crate::placement::{NodeCandidate, NodeHealth, ScopedVip, place};

/// How often node health is looked at.
pub const HEALTH_TICK: Duration = Duration::from_millis(100);

/// A translated configuration, before it is cut into per-node snapshots.
#[derive(Debug, Clone)]
pub struct Desired {
    /// Everything every node may serve, without VIPs.
    pub snapshot: ConfigSnapshot,
    /// Which nodes serve which Gateways.
    pub nodes: NodeScope,
    /// The labels of every known Node, by name.
    pub node_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// The ProxyVIPs to place.
    pub vips: Vec<ScopedVip>,
}

impl From<Loaded> for Desired {
    fn from(loaded: Loaded) -> Self {
        Desired {
            snapshot: loaded.snapshot,
            nodes: loaded.nodes,
            node_labels: loaded.node_labels,
            vips: loaded.vips,
        }
    }
}

/// What the placement was last made from: each node's health and the L2 VIPs it holds.
type View = Vec<(String, NodeHealth, Vec<String>)>;

/// Turns the configuration and what the agents report into each node's snapshot.
#[derive(Debug)]
pub struct Distributor {
    publisher: Publisher,
    heartbeat: Duration,
    /// `Duration::MAX` when the publisher has none: nodes are never fenced.
    fencing_delay: Duration,
    started: Instant,
    desired: Option<Desired>,
    /// L2 VIP -> the node chosen to hold it.
    holders: BTreeMap<String, String>,
    /// L2 VIPs whose new holder waits for another node to release them (logged once).
    releasing: BTreeSet<String>,
    /// L2 VIP -> the node last sent it (a later different one is a failover).
    assigned: BTreeMap<String, String>,
    last_view: View,
    /// Whether the last placement was made in the start-up grace period.
    last_in_grace: bool,
}

impl Distributor {
    /// A distributor publishing through `publisher`, whose configuration gives the heartbeat
    /// interval and the fencing delay.
    pub fn new(publisher: Publisher) -> Self {
        let config = publisher.config();
        Self {
            publisher,
            heartbeat: config.heartbeat,
            fencing_delay: config.fencing_delay.unwrap_or(Duration::MAX),
            started: Instant::now(),
            desired: None,
            holders: BTreeMap::new(),
            releasing: BTreeSet::new(),
            assigned: BTreeMap::new(),
            last_view: Vec::new(),
            last_in_grace: true,
        }
    }

    /// Takes a new configuration and publishes what changed.
    pub fn load(&mut self, desired: Desired) {
        self.desired = Some(desired);
        let view = self.view();
        self.publish(view);
    }

    /// Looks at node health and claims; places and publishes again if they changed. Call it
    /// every [`HEALTH_TICK`].
    pub fn tick(&mut self) {
        let view = self.view();
        if view != self.last_view || self.in_grace() != self.last_in_grace {
            self.publish(view);
        }
    }

    /// The L2 VIP holders, by VIP name.
    pub fn holders(&self) -> &BTreeMap<String, String> {
        &self.holders
    }

    /// Whether the VIP named `vip` (`namespace/name`) is gone from every node that can still
    /// be reached: it is not in the configuration, no node that is not fenced says it holds
    /// it, and every such node has applied the snapshot published for it now. A fenced node
    /// cannot be asked; it has dropped its L2 VIPs on its own, but may still announce a BGP
    /// VIP until it is back.
    pub fn withdrawn(&self, vip: &str) -> bool {
        let Some(desired) = &self.desired else {
            return false;
        };
        if desired.vips.iter().any(|v| v.vip.name == vip) {
            return false;
        }
        let reports = self.publisher.reports();
        self.last_view.iter().all(|(node, health, held)| {
            *health == NodeHealth::Fenced
                || (!held.iter().any(|h| h == vip)
                    && reports.get(node).and_then(|r| r.acked) >= self.publisher.node_version(node))
        })
    }

    /// Starts the start-up grace period again: for a replica that has just become the one
    /// that places VIPs (the leader), which knows nothing of the previous placement but what
    /// the agents say.
    pub fn restart(&mut self) {
        self.started = Instant::now();
        self.holders.clear();
        self.releasing.clear();
        self.assigned.clear();
        self.last_in_grace = true;
    }

    fn in_grace(&self) -> bool {
        self.started.elapsed() < self.fencing_delay
    }

    /// Every node known from Node objects or from a stream, with its health and claims.
    fn view(&self) -> View {
        let reports = self.publisher.reports();
        let mut nodes: BTreeSet<&String> = reports.keys().collect();
        if let Some(desired) = &self.desired {
            nodes.extend(desired.node_labels.keys());
        }
        nodes
            .into_iter()
            .map(|name| {
                let report = reports.get(name);
                let health = self.health(report);
                let held = match (report, health) {
                    (Some(r), NodeHealth::Healthy | NodeHealth::Suspect) => r.held_vips.clone(),
                    _ => Vec::new(),
                };
                (name.clone(), health, held)
            })
            .collect()
    }

    fn health(&self, report: Option<&NodeReport>) -> NodeHealth {
        match report {
            Some(r) if r.connected && r.ready && r.last_seen.elapsed() < self.heartbeat * 3 => {
                NodeHealth::Healthy
            }
            Some(r) if r.last_seen.elapsed() < self.fencing_delay => NodeHealth::Suspect,
            _ => NodeHealth::Fenced,
        }
    }

    /// Places the VIPs and publishes each node's snapshot: the part of the configuration its
    /// labels select (everything, when no Gateway is limited to some nodes) and its VIPs.
    /// Nodes nobody knows of get the part that needs no labels, and no VIPs.
    fn publish(&mut self, view: View) {
        let Some(desired) = &self.desired else {
            self.last_view = view;
            return;
        };
        let no_labels = BTreeMap::new();
        let candidates: Vec<NodeCandidate> = view
            .iter()
            .map(|(name, health, _)| NodeCandidate {
                name: name.clone(),
                labels: desired.node_labels.get(name).cloned().unwrap_or_default(),
                health: *health,
            })
            .collect();
        let claimers = |vip: &str| -> Vec<&str> {
            view.iter()
                .filter(|(_, _, held)| held.iter().any(|h| h == vip))
                .map(|(name, _, _)| name.as_str())
                .collect()
        };

        // A VIP nobody is known to hold goes to a node that says it holds it. In the grace
        // period, a VIP nobody holds or claims waits.
        let mut previous = self.holders.clone();
        let mut waiting = Vec::new();
        let in_grace = self.in_grace();
        self.last_in_grace = in_grace;
        let vips: Vec<ScopedVip> = desired
            .vips
            .iter()
            .filter(|v| {
                if !is_l2(v) {
                    return true;
                }
                let name = v.vip.name.as_str();
                if !previous.contains_key(name)
                    && let Some(claimer) = claimers(name).first()
                {
                    previous.insert(name.to_owned(), (*claimer).to_owned());
                }
                let known = previous.contains_key(name);
                if in_grace && !known {
                    waiting.push(name);
                }
                !in_grace || known
            })
            .cloned()
            .collect();
        let mut placement = place(&vips, &candidates, &previous);

        // Release before take-over: a node gets an L2 VIP it does not hold yet only when no
        // other live node holds it.
        let mut releasing = BTreeSet::new();
        for (vip, node) in &placement.l2_holders {
            let (holds_it, others): (Vec<&str>, Vec<&str>) =
                claimers(vip).into_iter().partition(|c| c == node);
            if !others.is_empty() && holds_it.is_empty() {
                if let Some(list) = placement.per_node.get_mut(node) {
                    list.retain(|v| v.name != *vip);
                }
                if !self.releasing.contains(vip) {
                    tracing::info!(vip, node, from = ?others, "L2 VIP waits for its release");
                }
                releasing.insert(vip.clone());
            } else if self.assigned.get(vip) != Some(node) {
                match self.assigned.insert(vip.clone(), node.clone()) {
                    Some(from) => {
                        tracing::info!(vip, node, from, "L2 VIP assigned");
                        self.publisher.record_vip_failover();
                    }
                    None => tracing::info!(vip, node, "L2 VIP assigned"),
                }
            }
        }
        for vip in &placement.unplaced {
            tracing::warn!(vip, "no healthy node may hold this VIP");
        }
        if !waiting.is_empty() {
            tracing::debug!(vips = ?waiting, "start-up grace: unclaimed L2 VIPs wait");
        }
        self.holders = placement.l2_holders.clone();
        self.releasing = releasing;
        if let Some(desired) = &self.desired {
            self.assigned
                .retain(|vip, _| desired.vips.iter().any(|v| v.vip.name == *vip));
        }

        let whole = &desired.snapshot;
        match self
            .publisher
            .publish_default(&desired.nodes.snapshot_for(whole, &no_labels))
        {
            Some(version) => tracing::info!(version, "snapshot published"),
            None => tracing::debug!("the default snapshot did not change"),
        }
        for (node, _, _) in &view {
            let vips = placement.per_node.get(node).filter(|v| !v.is_empty());
            if desired.nodes.is_uniform() && vips.is_none() {
                self.publisher.remove_node(node);
                continue;
            }
            let labels = desired.node_labels.get(node).unwrap_or(&no_labels);
            let mut snapshot = desired.nodes.snapshot_for(whole, labels);
            snapshot.vips = vips.cloned().unwrap_or_default();
            if let Some(version) = self.publisher.publish_node(node, &snapshot) {
                tracing::info!(node, version, "node snapshot published");
            }
        }
        self.last_view = view;
    }
}

fn is_l2(v: &ScopedVip) -> bool {
    matches!(v.vip.announce, novaedge_snapshot::VipAnnounce::L2 { .. })
}

/// Locks a shared distributor. Every method leaves it consistent, so a panic in one cannot
/// corrupt it.
pub fn lock(distributor: &Mutex<Distributor>) -> std::sync::MutexGuard<'_, Distributor> {
    distributor.lock().unwrap_or_else(|e| e.into_inner())
}

/// Calls [`Distributor::tick`] every [`HEALTH_TICK`], forever.
pub async fn watch_health(distributor: &Mutex<Distributor>) {
    let mut tick = tokio::time::interval(HEALTH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        lock(distributor).tick();
    }
}
