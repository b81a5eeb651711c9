//! A bounded, sharded governor [`StateStore`]: at most `capacity` keys, whatever the traffic.
//!
//! governor's own keyed stores (a `HashMap` or `DashMap`) keep one entry per key ever seen
//! until someone calls `retain_recent`, so a client that cycles through source addresses or
//! header values grows them without bound. This store caps the number of keys instead.
//!
//! # Layout
//!
//! The keys are split over shards by a random hash; each shard is a `Mutex` around a map from
//! key to slot, a dense slab of slots, and an intrusive doubly linked list through the slots in
//! order of use (most recent at the head). A request locks one shard for a map lookup, a GCRA
//! update and a relink, all O(1); there is no global lock, and shards are many times the
//! number of CPUs so that tasks rarely meet on one.
//!
//! The capacity is split over the shards (their capacities sum to it exactly), so the number
//! of stored keys never exceeds it. The price is that a shard can be full while another still
//! has room; with random shard choice that only matters for tiny capacities.
//!
//! # Eviction
//!
//! Each slot holds the key's GCRA theoretical arrival time (TAT). A key whose TAT is not after
//! now has a full bucket, exactly as if it had never been seen, so dropping it loses nothing.
//! When a full shard needs a slot for a new key it takes, in order:
//!
//! 1. a key with a full bucket among the 8 least recently used ones (lossless, O(1));
//! 2. otherwise, at most once per `capacity / 4` insertions, every key with a full bucket in
//!    the shard (lossless; O(shard), so O(1) amortized);
//! 3. otherwise the least recently used key, though its bucket is not full: that key starts
//!    over with a full burst if it comes back (counted in [`StoreStats::evicted`]).
//!
//! Case 3 happens only when a shard holds more keys than its capacity that were all used within
//! their refill time (`burst` × the interval between requests); see the module documentation
//! of `ratelimit` for the trade-off and the default capacity.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use governor::clock::Clock;
use governor::nanos::Nanos;
use governor::state::StateStore;

use super::clock::TokioClock;

/// End of the use-order list.
const NIL: u32 = u32::MAX;

/// How many keys from the least recently used end a full shard looks at for a full bucket
/// before it considers a sweep.
const SCAN: usize = 8;

/// The largest capacity a store takes: slots are addressed by `u32` within a shard.
pub(crate) const MAX_CAPACITY: usize = u32::MAX as usize - 1;

/// Counts across all shards, read one shard at a time (not a consistent snapshot under load).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StoreStats {
    pub(crate) keys: usize,
    pub(crate) capacity: usize,
    pub(crate) expired: u64,
    pub(crate) evicted: u64,
}

/// The state of up to `capacity` keys. See the module documentation.
pub(crate) struct BoundedStore<K> {
    shards: Box<[Mutex<Shard<K>>]>,
    /// Picks a key's shard; independent of the shards' own map hashers.
    picker: RandomState,
    clock: TokioClock,
    /// The clock reading that TATs count from (governor stores them relative to the instant
    /// its `RateLimiter` was made). Until set, nothing counts as refilled.
    origin: AtomicU64,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> BoundedStore<K> {
    /// A store for `capacity` keys (at least 1, at most [`MAX_CAPACITY`]) over a number of
    /// shards chosen from the CPU count.
    pub(crate) fn new(capacity: usize, clock: TokioClock) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let shards = (cpus * 4).next_power_of_two().clamp(16, 256);
        Self::with_shards(capacity, shards, clock)
    }

    /// A store for `capacity` keys over `shards` shards (fewer if the capacity is smaller).
    pub(crate) fn with_shards(capacity: usize, shards: usize, clock: TokioClock) -> Self {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        let n = shards.clamp(1, capacity);
        let shards = (0..n)
            .map(|i| Mutex::new(Shard::new(capacity / n + usize::from(i < capacity % n))))
            .collect();
        BoundedStore {
            shards,
            picker: RandomState::new(),
            clock,
            origin: AtomicU64::new(u64::MAX),
            capacity,
        }
    }

    /// Sets the instant TATs count from. Set it to a reading taken after the governor
    /// `RateLimiter` was made: a later origin only makes the refill check stricter.
    pub(crate) fn set_origin(&self, origin: Nanos) {
        self.origin.store(origin.as_u64(), Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> StoreStats {
        let mut stats = StoreStats {
            capacity: self.capacity,
            ..StoreStats::default()
        };
        for shard in self.shards.iter() {
            let shard = lock(shard);
            stats.keys += shard.map.len();
            stats.expired += shard.expired;
            stats.evicted += shard.evicted;
        }
        stats
    }

    /// Now, in the TATs' time base.
    fn now(&self) -> u64 {
        self.clock
            .now()
            .as_u64()
            .saturating_sub(self.origin.load(Ordering::Relaxed))
    }

    fn shard(&self, key: &K) -> &Mutex<Shard<K>> {
        let hash = self.picker.hash_one(key);
        // Multiply-shift maps the hash onto 0..len without a division.
        let i = ((u128::from(hash) * self.shards.len() as u128) >> 64) as usize;
        &self.shards[i]
    }

    /// The stored TAT of `key`, without counting as a use.
    #[cfg(test)]
    fn peek(&self, key: &K) -> Option<u64> {
        let shard = lock(self.shard(key));
        shard.map.get(key).map(|&i| shard.nodes[i as usize].tat)
    }

    /// Implements [`StateStore::measure_and_replace`].
    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut shard = lock(self.shard(key));
        if let Some(&i) = shard.map.get(key) {
            // A refused request is a use too: a client being limited is the last one to drop.
            shard.touch(i);
            let (outcome, tat) = f(Some(Nanos::new(shard.nodes[i as usize].tat)))?;
            shard.nodes[i as usize].tat = tat.as_u64();
            return Ok(outcome);
        }
        // A new key is never refused (its bucket is full), so it is only stored once allowed.
        let (outcome, tat) = f(None)?;
        shard.insert(key.clone(), tat.as_u64(), || self.now());
        Ok(outcome)
    }
}

impl<K> fmt::Debug for BoundedStore<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedStore")
            .field("capacity", &self.capacity)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

/// A [`BoundedStore`] shared between the governor `RateLimiter` that owns it and the layer
/// that reads its statistics.
#[derive(Debug)]
pub(crate) struct SharedStore<K>(pub(crate) Arc<BoundedStore<K>>);

impl<K: Hash + Eq + Clone> StateStore for SharedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while a shard is locked, short of a bug; a poisoned shard still holds a
    // usable map, and rate limiting with it beats failing every request.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl Shard ===

struct Shard<K> {
    /// Key to slot index.
    map: HashMap<K, u32>,
    /// Dense: `nodes.len() == map.len()`.
    nodes: Vec<Node<K>>,
    /// Most recently used slot.
    head: u32,
    /// Least recently used slot.
    tail: u32,
    capacity: usize,
    inserts_since_sweep: usize,
    /// Keys dropped with a full bucket.
    expired: u64,
    /// Keys dropped while their bucket was not full.
    evicted: u64,
}

struct Node<K> {
    key: K,
    /// GCRA theoretical arrival time, in nanoseconds from the limiter's start.
    tat: u64,
    prev: u32,
    next: u32,
}

impl<K: Hash + Eq + Clone> Shard<K> {
    fn new(capacity: usize) -> Self {
        Shard {
            map: HashMap::new(),
            nodes: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity,
            inserts_since_sweep: 0,
            expired: 0,
            evicted: 0,
        }
    }

    fn insert(&mut self, key: K, tat: u64, now: impl FnOnce() -> u64) {
        if self.map.len() >= self.capacity {
            self.make_room(now());
        }
        if self.nodes.len() == self.nodes.capacity() {
            // Grow by doubling, but never past the capacity.
            let more = self
                .nodes
                .len()
                .max(4)
                .min(self.capacity - self.nodes.len());
            self.nodes.reserve_exact(more);
        }
        let i = self.nodes.len() as u32;
        self.nodes.push(Node {
            key: key.clone(),
            tat,
            prev: NIL,
            next: NIL,
        });
        self.map.insert(key, i);
        self.push_front(i);
        self.inserts_since_sweep += 1;
    }

    /// Frees one slot or more; see the module documentation for the order.
    fn make_room(&mut self, now: u64) {
        let mut i = self.tail;
        for _ in 0..SCAN {
            if i == NIL {
                break;
            }
            if self.nodes[i as usize].tat <= now {
                self.remove(i);
                self.expired += 1;
                return;
            }
            i = self.nodes[i as usize].prev;
        }
        if self.inserts_since_sweep >= (self.capacity / 4).max(1) {
            self.sweep(now);
            if self.map.len() < self.capacity {
                return;
            }
        }
        let lru = self.tail;
        if lru != NIL {
            self.remove(lru);
            self.evicted += 1;
        }
    }

    /// Drops every key whose bucket is full.
    fn sweep(&mut self, now: u64) {
        self.inserts_since_sweep = 0;
        let mut i = 0;
        while i < self.nodes.len() {
            if self.nodes[i].tat <= now {
                // The last slot moves into `i`: look at `i` again.
                self.remove(i as u32);
                self.expired += 1;
            } else {
                i += 1;
            }
        }
    }

    fn touch(&mut self, i: u32) {
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }

    fn push_front(&mut self, i: u32) {
        let old_head = self.head;
        let node = &mut self.nodes[i as usize];
        node.prev = NIL;
        node.next = old_head;
        if old_head == NIL {
            self.tail = i;
        } else {
            self.nodes[old_head as usize].prev = i;
        }
        self.head = i;
    }

    fn unlink(&mut self, i: u32) {
        let Node { prev, next, .. } = self.nodes[i as usize];
        if prev == NIL {
            self.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
    }

    /// Removes slot `i`, moving the last slot into its place to keep the slab dense.
    fn remove(&mut self, i: u32) {
        self.unlink(i);
        let removed = self.nodes.swap_remove(i as usize);
        self.map.remove(&removed.key);
        if (i as usize) < self.nodes.len() {
            let Node { prev, next, .. } = self.nodes[i as usize];
            if prev == NIL {
                self.head = i;
            } else {
                self.nodes[prev as usize].next = i;
            }
            if next == NIL {
                self.tail = i;
            } else {
                self.nodes[next as usize].prev = i;
            }
            let slot = self.map.get_mut(&self.nodes[i as usize].key);
            debug_assert!(slot.is_some(), "every slot's key is in the map");
            if let Some(slot) = slot {
                *slot = i;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use governor::middleware::NoOpMiddleware;
    use governor::{Quota, RateLimiter};

    use super::*;

    /// A store with one shard whose TATs count from the clock's zero.
    fn store(capacity: usize) -> BoundedStore<u32> {
        let store = BoundedStore::with_shards(capacity, 1, TokioClock::new());
        store.set_origin(Nanos::new(0));
        store
    }

    fn put(store: &BoundedStore<u32>, key: u32, tat: Duration) {
        store
            .measure_and_replace(&key, |_| Ok::<_, ()>(((), Nanos::from(tat))))
            .unwrap();
    }

    /// Walks the use-order list both ways and checks it against the map.
    fn check_links(store: &BoundedStore<u32>) -> Vec<u32> {
        let shard = lock(&store.shards[0]);
        let mut order = Vec::new();
        let mut i = shard.head;
        let mut prev = NIL;
        while i != NIL {
            let node = &shard.nodes[i as usize];
            assert_eq!(node.prev, prev);
            assert_eq!(shard.map[&node.key], i);
            order.push(node.key);
            prev = i;
            i = node.next;
        }
        assert_eq!(shard.tail, prev);
        assert_eq!(order.len(), shard.map.len());
        assert_eq!(shard.nodes.len(), shard.map.len());
        order
    }

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn keeps_keys_in_order_of_use() {
        let s = store(10);
        for k in 1..=4 {
            put(&s, k, LONG);
        }
        assert_eq!(check_links(&s), [4, 3, 2, 1]);
        put(&s, 2, LONG);
        assert_eq!(check_links(&s), [2, 4, 3, 1]);
        put(&s, 1, LONG);
        assert_eq!(check_links(&s), [1, 2, 4, 3]);
        put(&s, 1, LONG);
        assert_eq!(check_links(&s), [1, 2, 4, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_request_counts_as_a_use() {
        let s = store(10);
        put(&s, 1, LONG);
        put(&s, 2, LONG);
        let refused: Result<(), ()> = s.measure_and_replace(&1, |_| Err(()));
        assert!(refused.is_err());
        assert_eq!(check_links(&s), [1, 2]);
        assert_eq!(s.peek(&1), Some(LONG.as_nanos() as u64), "TAT unchanged");
    }

    #[tokio::test(start_paused = true)]
    async fn evicts_least_recently_used_when_no_bucket_is_full() {
        let s = store(2);
        put(&s, 1, LONG);
        put(&s, 2, LONG);
        put(&s, 1, LONG); // 2 is now the least recently used
        put(&s, 3, LONG);
        assert_eq!(check_links(&s), [3, 1]);
        assert_eq!(s.peek(&2), None);
        let stats = s.stats();
        assert_eq!((stats.keys, stats.expired, stats.evicted), (2, 0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn evicts_a_full_bucket_before_the_least_recently_used() {
        let s = store(2);
        put(&s, 1, LONG); // least recently used, still limited
        put(&s, 2, Duration::from_millis(10)); // refilled once 10 ms have passed
        tokio::time::advance(Duration::from_millis(10)).await;
        put(&s, 3, LONG);
        assert_eq!(check_links(&s), [3, 1], "2 had a full bucket, 1 did not");
        let stats = s.stats();
        assert_eq!((stats.keys, stats.expired, stats.evicted), (2, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn sweeps_full_buckets_beyond_the_scan() {
        let s = store(100);
        // The 20 least recently used keys are limited; the 80 after them have refilled.
        for k in 0..20 {
            put(&s, k, LONG);
        }
        for k in 20..100 {
            put(&s, k, Duration::from_millis(1));
        }
        tokio::time::advance(Duration::from_millis(1)).await;
        put(&s, 100, LONG);
        let order = check_links(&s);
        assert_eq!(order.len(), 21, "the sweep dropped the 80 refilled keys");
        assert_eq!(order[0], 100);
        assert!(order[1..].iter().all(|&k| k < 20));
        let stats = s.stats();
        assert_eq!((stats.expired, stats.evicted), (80, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn sweeps_at_most_once_per_quarter_capacity_of_inserts() {
        let s = store(8);
        for k in 0..8 {
            put(&s, k, LONG);
        }
        // A sweep finds nothing; the next 1 (= 8 / 4 - 1) insertions may not sweep again.
        put(&s, 100, LONG);
        assert_eq!(lock(&s.shards[0]).inserts_since_sweep, 1);
        put(&s, 101, LONG);
        assert_eq!(lock(&s.shards[0]).inserts_since_sweep, 2);
        put(&s, 102, LONG);
        assert_eq!(lock(&s.shards[0]).inserts_since_sweep, 1, "swept again");
        assert_eq!(s.stats().evicted, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn never_holds_more_than_its_capacity() {
        let s = BoundedStore::with_shards(1000, 16, TokioClock::new());
        s.set_origin(Nanos::new(0));
        for k in 0..50_000u32 {
            // A mix of keys that refill soon and keys that stay limited.
            let tat = if k % 3 == 0 {
                LONG
            } else {
                Duration::from_millis(1)
            };
            s.measure_and_replace(&k, |_| Ok::<_, ()>(((), Nanos::from(tat))))
                .unwrap();
            if k % 100 == 0 {
                tokio::time::advance(Duration::from_millis(1)).await;
            }
            assert!(s.stats().keys <= 1000);
        }
        let stats = s.stats();
        assert_eq!(stats.capacity, 1000);
        assert_eq!(
            stats.keys + stats.expired as usize + stats.evicted as usize,
            50_000
        );
        assert!(stats.expired > 0 && stats.evicted > 0, "{stats:?}");
    }

    #[test]
    fn capacity_is_split_exactly_over_the_shards() {
        let s = BoundedStore::<u32>::with_shards(10, 4, TokioClock::new());
        let caps: Vec<_> = s.shards.iter().map(|sh| lock(sh).capacity).collect();
        assert_eq!(caps, [3, 3, 2, 2]);
        let small = BoundedStore::<u32>::with_shards(3, 16, TokioClock::new());
        assert_eq!(small.shards.len(), 3, "no shard without room");
    }

    #[test]
    fn nothing_counts_as_refilled_before_the_origin_is_set() {
        let s = BoundedStore::<u32>::with_shards(1, 1, TokioClock::new());
        assert_eq!(s.now(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_evicted_limited_key_comes_back_with_a_full_burst() {
        // The documented trade-off, through governor: capacity 1, so key 2 pushes out key 1
        // while key 1 is still limited.
        let clock = TokioClock::new();
        let store = Arc::new(BoundedStore::with_shards(1, 1, clock));
        let quota = Quota::per_hour(NonZeroU32::new(2).unwrap());
        let limiter: RateLimiter<u32, _, _, NoOpMiddleware<Nanos>> =
            RateLimiter::new(quota, SharedStore(Arc::clone(&store)), clock);
        store.set_origin(clock.now());

        assert!(limiter.check_key(&1).is_ok());
        assert!(limiter.check_key(&1).is_ok());
        assert!(limiter.check_key(&1).is_err(), "burst of 2 used up");
        assert!(limiter.check_key(&2).is_ok());
        assert_eq!(store.stats().evicted, 1);
        assert!(limiter.check_key(&1).is_ok(), "1 starts over");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refilled_key_dropped_from_the_store_loses_nothing() {
        let clock = TokioClock::new();
        let store = Arc::new(BoundedStore::with_shards(1, 1, clock));
        let quota = Quota::per_second(NonZeroU32::new(1).unwrap());
        let limiter: RateLimiter<u32, _, _, NoOpMiddleware<Nanos>> =
            RateLimiter::new(quota, SharedStore(Arc::clone(&store)), clock);
        store.set_origin(clock.now());

        assert!(limiter.check_key(&1).is_ok());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(limiter.check_key(&2).is_ok(), "1 is still limited: evicted");
        assert_eq!(store.stats().evicted, 1);
        // 2's bucket, used at 999 ms, is full again at 1999 ms: replacing it is lossless.
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert!(limiter.check_key(&3).is_ok());
        assert_eq!(store.stats().expired, 1);
        assert_eq!(store.stats().evicted, 1);
    }

    #[test]
    fn many_threads_share_the_store() {
        // One key hammered from 8 threads gets exactly its burst: each decision is atomic.
        let clock = TokioClock::new();
        let store = Arc::new(BoundedStore::with_shards(1000, 16, clock));
        let quota = Quota::per_hour(NonZeroU32::new(100).unwrap());
        let limiter: Arc<RateLimiter<u32, _, _, NoOpMiddleware<Nanos>>> =
            Arc::new(RateLimiter::new(quota, SharedStore(store), clock));
        let allowed: usize = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let limiter = &limiter;
                    scope.spawn(move || (0..1000).filter(|_| limiter.check_key(&7).is_ok()).count())
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).sum()
        });
        assert_eq!(allowed, 100);
    }
}
