//! A changing endpoint set: the current table behind an atomic pointer, plus the per-endpoint
//! state that outlives tables.
//!
//! [`EndpointSet`] is what a proxy keeps per backend. The control plane side (service discovery,
//! a configuration reload, a health checker) calls its methods; each change of membership or
//! weight builds a new table on the caller's thread, off the request path, and publishes it with
//! one atomic store. Requests call [`EndpointSet::load`] and pick from whatever table is current,
//! lock-free. A request that loaded the old table just before an update finishes with it; the
//! endpoint it picked keeps its [`EndpointState`], so its in-flight count and latency sample land
//! where the new table sees them.
//!
//! The set keeps one [`EndpointState`] per key for as long as the key is in the set, and hands it
//! to every table it builds: load and health survive rebuilds, policy changes included. Health
//! changes ([`EndpointSet::set_healthy`]) flip the state's flag and rebuild nothing.
//!
//! Each endpoint may carry a value `S` (an endpoint `Service`, a connection pool) that the set
//! stores beside the table, index-aligned, so a pick finds it without a map lookup; the tower
//! [`Balance`](crate::Balance) service uses this. Plain selector users leave `S = ()`.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::{ArcSwap, Guard};
use tower::discover::Change;

use crate::endpoint::{EndpointState, HealthGroup};
use crate::hash::EndpointId;
use crate::members::Members;
use crate::policy::{BuildOptions, LbPolicy, Table};
use crate::selector::{PickContext, Picked, Selector};

/// A value with the weight its endpoint should get; what [`EndpointSet::apply`] and the
/// discovery driver insert. Any value converts into weight 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weighted<S> {
    /// The endpoint's value, e.g. its `Service`.
    pub value: S,
    /// Its weight; 0 keeps it in the set but never picked.
    pub weight: u32,
}

impl<S> Weighted<S> {
    /// `value` with `weight`.
    pub fn new(value: S, weight: u32) -> Self {
        Self { value, weight }
    }
}

impl<S> From<S> for Weighted<S> {
    fn from(value: S) -> Self {
        Weighted { value, weight: 1 }
    }
}

/// The endpoints of one backend: a table of the configured policy over them, rebuilt on every
/// membership or weight change and swapped atomically, plus each endpoint's shared state.
///
/// Cloning is cheap and shares the set: hand one clone to the request path and one to discovery.
pub struct EndpointSet<K, S = ()> {
    shared: Arc<Shared<K, S>>,
}

struct Shared<K, S> {
    control: Mutex<Control<K, S>>,
    current: ArcSwap<Snapshot<K, S>>,
}

/// What only the updating side touches, under the mutex.
struct Control<K, S> {
    policy: LbPolicy,
    options: BuildOptions,
    group: Arc<HealthGroup>,
    /// In insertion order, so that tables (and seeded picks) are reproducible.
    entries: Vec<Entry<K, S>>,
    index: HashMap<K, usize>,
    /// The health endpoints start with.
    new_healthy: bool,
}

struct Entry<K, S> {
    key: K,
    value: S,
    weight: u32,
    state: Arc<EndpointState>,
}

/// One published table with the endpoints' values, index-aligned with
/// [`Selector::endpoints`].
pub struct Snapshot<K, S> {
    table: Arc<Table<K>>,
    values: Box<[S]>,
}

// === impl Snapshot ===

impl<K, S> Snapshot<K, S> {
    /// The table.
    pub fn table(&self) -> &Table<K> {
        &self.table
    }

    /// The value of the endpoint at `index` (a [`Picked::index`]).
    pub fn value(&self, index: usize) -> &S {
        &self.values[index]
    }
}

impl<K, S> Selector<K> for Snapshot<K, S> {
    #[inline]
    fn pick_with(&self, ctx: &PickContext) -> Option<Picked<'_, K>> {
        self.table.pick_with(ctx)
    }

    fn endpoints(&self) -> &[K] {
        self.table.endpoints()
    }
}

impl<K: fmt::Debug, S> fmt::Debug for Snapshot<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

// === impl EndpointSet ===

impl<K, S> Clone for EndpointSet<K, S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K, S> EndpointSet<K, S>
where
    K: EndpointId + Eq + Hash + Clone,
    S: Clone,
{
    /// An empty set balanced by `policy`, with default options.
    pub fn new(policy: LbPolicy) -> Self {
        Self::with_options(policy, BuildOptions::default())
    }

    /// An empty set balanced by `policy`.
    pub fn with_options(policy: LbPolicy, options: BuildOptions) -> Self {
        let control = Control {
            policy,
            options,
            group: Arc::default(),
            entries: Vec::new(),
            index: HashMap::new(),
            new_healthy: true,
        };
        let snapshot = control.build();
        Self {
            shared: Arc::new(Shared {
                control: Mutex::new(control),
                current: ArcSwap::from_pointee(snapshot),
            }),
        }
    }

    /// The current table and values, for one request or a short burst of picks.
    ///
    /// Lock-free. The guard is meant to be short-lived; to keep the snapshot across an `.await`
    /// or for long, use [`snapshot`](Self::snapshot).
    #[inline]
    pub fn load(&self) -> Guard<Arc<Snapshot<K, S>>> {
        self.shared.current.load()
    }

    /// The current table and values, owned.
    pub fn snapshot(&self) -> Arc<Snapshot<K, S>> {
        self.shared.current.load_full()
    }

    /// Adds an endpoint, or replaces its value and weight; rebuilds the table. An endpoint
    /// already in the set keeps its state (load, latency, health).
    pub fn insert(&self, key: K, value: S, weight: u32) {
        self.apply([Change::Insert(key, Weighted::new(value, weight))]);
    }

    /// Removes an endpoint; rebuilds the table. Requests in flight on it are unaffected.
    /// Returns whether it was in the set.
    pub fn remove(&self, key: &K) -> bool {
        let mut control = self.lock();
        if !control.remove(key) {
            return false;
        }
        self.publish(&control);
        true
    }

    /// Changes an endpoint's weight; rebuilds the table. Returns whether it was in the set.
    pub fn set_weight(&self, key: &K, weight: u32) -> bool {
        let mut control = self.lock();
        let Some(&i) = control.index.get(key) else {
            return false;
        };
        if control.entries[i].weight != weight {
            control.entries[i].weight = weight;
            self.publish(&control);
        }
        true
    }

    /// Applies a batch of changes with a single rebuild: what a discovery stream delivers at
    /// once. An insert of a key already present replaces its value and weight.
    pub fn apply(&self, changes: impl IntoIterator<Item = Change<K, Weighted<S>>>) {
        let mut control = self.lock();
        let mut changed = false;
        for change in changes {
            changed = true;
            match change {
                Change::Insert(key, Weighted { value, weight }) => {
                    control.insert(key, value, weight)
                }
                Change::Remove(key) => {
                    control.remove(&key);
                }
            }
        }
        if changed {
            self.publish(&control);
        }
    }

    /// Replaces the whole set, as a configuration reload does: endpoints not listed are
    /// removed, listed ones keep their state. A key listed twice keeps its first value and gets
    /// the sum of the weights. If the keys and weights are unchanged the table is kept and only
    /// the values are swapped.
    pub fn replace(&self, endpoints: impl IntoIterator<Item = (K, S, u32)>) {
        let mut control = self.lock();
        let mut listed: Vec<(K, S, u32)> = Vec::new();
        let mut seen: HashMap<K, usize> = HashMap::new();
        for (key, value, weight) in endpoints {
            match seen.entry(key) {
                MapEntry::Occupied(at) => {
                    let w = &mut listed[*at.get()].2;
                    *w = w.saturating_add(weight);
                }
                MapEntry::Vacant(slot) => {
                    listed.push((slot.key().clone(), value, weight));
                    slot.insert(listed.len() - 1);
                }
            }
        }
        let unchanged = listed.len() == control.entries.len()
            && listed
                .iter()
                .zip(&control.entries)
                .all(|((k, _, w), e)| *k == e.key && *w == e.weight);
        if unchanged {
            for ((_, value, _), entry) in listed.into_iter().zip(control.entries.iter_mut()) {
                entry.value = value;
            }
            let table = Arc::clone(&self.shared.current.load().table);
            let values = control.entries.iter().map(|e| e.value.clone()).collect();
            self.shared
                .current
                .store(Arc::new(Snapshot { table, values }));
            return;
        }
        let kept: std::collections::HashSet<&K> = listed.iter().map(|(k, _, _)| k).collect();
        let removed: Vec<K> = control
            .entries
            .iter()
            .filter(|e| !kept.contains(&e.key))
            .map(|e| e.key.clone())
            .collect();
        for key in &removed {
            control.remove(key);
        }
        // Reorder to the listed order, so that a reload reproduces a fresh build exactly.
        let mut old: HashMap<K, Entry<K, S>> = control
            .entries
            .drain(..)
            .map(|e| (e.key.clone(), e))
            .collect();
        control.index.clear();
        for (key, value, weight) in listed {
            let state = match old.remove(&key) {
                Some(entry) => entry.state,
                None => control.new_state(),
            };
            control.push(Entry {
                key,
                value,
                weight,
                state,
            });
        }
        self.publish(&control);
    }

    /// Changes the policy or options, keeping every endpoint's state; rebuilds the table.
    pub fn set_policy(&self, policy: LbPolicy, options: BuildOptions) {
        let mut control = self.lock();
        if control.policy == policy && control.options == options {
            return;
        }
        control.policy = policy;
        control.options = options;
        self.publish(&control);
    }

    /// Whether endpoints added from now on start healthy (the default) or unhealthy. A proxy
    /// with active health checks starts new endpoints unhealthy, so that none gets traffic
    /// before its first probe passes (Envoy's behaviour); the panic threshold still lets a
    /// backend whose endpoints are all new serve.
    pub fn set_new_endpoints_healthy(&self, healthy: bool) {
        self.lock().new_healthy = healthy;
    }

    /// The policy the current table was built with.
    pub fn policy(&self) -> LbPolicy {
        self.lock().policy.clone()
    }

    /// Marks an endpoint healthy or unhealthy, effective for the next pick, without a rebuild.
    /// Returns whether it is in the set.
    pub fn set_healthy(&self, key: &K, healthy: bool) -> bool {
        match self.state(key) {
            Some(state) => {
                state.set_healthy(healthy);
                true
            }
            None => false,
        }
    }

    /// An endpoint's shared state, while it is in the set.
    pub fn state(&self, key: &K) -> Option<Arc<EndpointState>> {
        let control = self.lock();
        let &i = control.index.get(key)?;
        Some(Arc::clone(&control.entries[i].state))
    }

    /// The number of endpoints, weight 0 included.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the set has no endpoint.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Control<K, S>> {
        // A panic while updating leaves entries and index consistent (each step keeps them so),
        // so a poisoned lock is still usable.
        self.shared
            .control
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, control: &Control<K, S>) {
        self.shared.current.store(Arc::new(control.build()));
    }
}

impl<K> EndpointSet<K, ()>
where
    K: EndpointId + Eq + Hash + Clone,
{
    /// Replaces the whole set with `(endpoint, weight)` pairs, see [`replace`](Self::replace).
    pub fn update(&self, endpoints: impl IntoIterator<Item = (K, u32)>) {
        self.replace(endpoints.into_iter().map(|(k, w)| (k, (), w)));
    }
}

impl<K: fmt::Debug, S> fmt::Debug for EndpointSet<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointSet")
            .field("current", &self.shared.current.load())
            .finish()
    }
}

// === impl Control ===

impl<K, S> Control<K, S>
where
    K: EndpointId + Eq + Hash + Clone,
    S: Clone,
{
    fn insert(&mut self, key: K, value: S, weight: u32) {
        if let Some(&i) = self.index.get(&key) {
            let entry = &mut self.entries[i];
            entry.value = value;
            entry.weight = weight;
            return;
        }
        let state = self.new_state();
        self.push(Entry {
            key,
            value,
            weight,
            state,
        });
    }

    fn new_state(&self) -> Arc<EndpointState> {
        let state = EndpointState::new(self.group.clone());
        if !self.new_healthy {
            state.set_healthy(false);
        }
        Arc::new(state)
    }

    fn push(&mut self, entry: Entry<K, S>) {
        self.index.insert(entry.key.clone(), self.entries.len());
        self.entries.push(entry);
    }

    fn remove(&mut self, key: &K) -> bool {
        let Some(i) = self.index.remove(key) else {
            return false;
        };
        // Keep the order of the others (tables and seeded picks stay reproducible).
        let entry = self.entries.remove(i);
        entry.state.detach();
        for (j, e) in self.entries.iter().enumerate().skip(i) {
            self.index.insert(e.key.clone(), j);
        }
        true
    }

    /// A table over the entries; attaches exactly the states with a weight above 0.
    fn build(&self) -> Snapshot<K, S> {
        for entry in &self.entries {
            if entry.weight > 0 {
                entry.state.attach();
            } else {
                entry.state.detach();
            }
        }
        let members = Members::from_parts(
            self.entries.iter().map(|e| e.key.clone()).collect(),
            self.entries.iter().map(|e| e.weight).collect(),
            self.entries.iter().map(|e| Arc::clone(&e.state)).collect(),
            Arc::clone(&self.group),
            &self.options,
        );
        Snapshot {
            table: Arc::new(self.policy.build_members(members)),
            values: self.entries.iter().map(|e| e.value.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn picks(set: &EndpointSet<&'static str>, n: usize) -> HashMap<&'static str, usize> {
        let mut counts = HashMap::new();
        let table = set.load();
        for _ in 0..n {
            *counts.entry(*table.pick().unwrap()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn state_survives_rebuilds_and_policy_changes() {
        let set = EndpointSet::new(LbPolicy::least_request());
        set.update([("a", 1), ("b", 1)]);
        let a = set.state(&"a").unwrap();
        let _in_flight = a.start_at(Instant::now());
        set.update([("a", 2), ("b", 1), ("c", 1)]);
        set.set_policy(LbPolicy::maglev(), BuildOptions::default());
        let a_again = set.state(&"a").unwrap();
        assert!(Arc::ptr_eq(&a, &a_again));
        assert_eq!(a_again.pending(), 1);
        let snapshot = set.load();
        let i = snapshot.endpoints().iter().position(|e| *e == "a").unwrap();
        assert!(Arc::ptr_eq(&snapshot.table().states()[i], &a));
    }

    #[test]
    fn removed_and_readded_endpoints_start_fresh() {
        let set = EndpointSet::new(LbPolicy::RoundRobin);
        set.update([("a", 1), ("b", 1)]);
        let old = set.state(&"a").unwrap();
        old.set_healthy(false);
        set.update([("b", 1)]);
        assert!(set.state(&"a").is_none());
        set.update([("a", 1), ("b", 1)]);
        let new = set.state(&"a").unwrap();
        assert!(!Arc::ptr_eq(&old, &new));
        assert!(new.is_healthy());
        // The removed state no longer counts against the set's health.
        assert!(!set.load().table().members().must_filter());
        assert_eq!(picks(&set, 100).len(), 2);
    }

    #[test]
    fn health_changes_need_no_rebuild() {
        let set = EndpointSet::new(LbPolicy::RoundRobin);
        set.update([("a", 1), ("b", 1), ("c", 1)]);
        let before = set.snapshot();
        assert!(set.set_healthy(&"b", false));
        assert!(!set.set_healthy(&"zz", false));
        let after = set.snapshot();
        assert!(Arc::ptr_eq(&before, &after), "no new table");
        let counts = picks(&set, 300);
        assert_eq!(counts.get("b"), None);
        assert_eq!(counts.values().sum::<usize>(), 300);
        set.set_healthy(&"b", true);
        assert_eq!(picks(&set, 300).get("b"), Some(&100));
    }

    #[test]
    fn unchanged_reload_keeps_the_table() {
        let set: EndpointSet<&str, u32> = EndpointSet::new(LbPolicy::maglev());
        set.replace([("a", 1, 1), ("b", 2, 1)]);
        let before = set.snapshot();
        set.replace([("a", 10, 1), ("b", 20, 1)]);
        let after = set.snapshot();
        assert!(Arc::ptr_eq(&before.table, &after.table));
        assert_eq!(*after.value(1), 20);
        set.replace([("a", 10, 1), ("b", 20, 2)]);
        assert!(!Arc::ptr_eq(&before.table, &set.snapshot().table));
    }

    #[test]
    fn duplicate_keys_merge_their_weights() {
        let set = EndpointSet::new(LbPolicy::RoundRobin);
        set.update([("a", 1), ("b", 1), ("a", 2)]);
        assert_eq!(set.load().endpoints(), &["a", "b"]);
        assert_eq!(set.load().table().weights(), &[3, 1]);
    }

    #[test]
    fn apply_batches_inserts_and_removals() {
        let set: EndpointSet<&str, char> = EndpointSet::new(LbPolicy::RoundRobin);
        set.apply([
            Change::Insert("a", 'a'.into()),
            Change::Insert("b", Weighted::new('b', 3)),
            Change::Insert("c", 'c'.into()),
            Change::Remove("a"),
        ]);
        let snapshot = set.load();
        assert_eq!(snapshot.endpoints(), &["b", "c"]);
        assert_eq!(snapshot.table().weights(), &[3, 1]);
        assert_eq!(*snapshot.value(1), 'c');
        assert!(set.set_weight(&"c", 0));
        assert!(!set.remove(&"zz"));
        assert!(set.remove(&"b"));
        assert_eq!(set.load().pick(), None, "only c left, with weight 0");
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn endpoints_can_start_unhealthy() {
        let set = EndpointSet::with_options(
            LbPolicy::RoundRobin,
            BuildOptions::new().with_panic_threshold(0),
        );
        set.update([("a", 1)]);
        set.set_new_endpoints_healthy(false);
        set.update([("a", 1), ("b", 1)]);
        set.insert("c", (), 1);
        // Only the endpoint that was there before is picked; the new ones wait for a verdict.
        assert_eq!(picks(&set, 30), HashMap::from([("a", 30)]));
        set.set_healthy(&"b", true);
        let counts = picks(&set, 30);
        assert_eq!(counts.keys().count(), 2, "{counts:?}");
        assert!(counts["a"] > 0 && counts["b"] > 0, "{counts:?}");
    }
}
