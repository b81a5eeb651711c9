//! Health: unhealthy endpoints are skipped without a rebuild, hashing tables fall back
//! consistently, and the panic threshold balances over everyone when too few are healthy.
//!
//! Tables are seeded and keys come from a seeded generator, so every run is the same; the
//! statistical bounds are documented where they are asserted.

use std::collections::HashMap;

use novaedge_lb::{BuildOptions, EndpointSet, LbPolicy, PickContext, Selector, Table};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn policies() -> [LbPolicy; 6] {
    [
        LbPolicy::RoundRobin,
        LbPolicy::Random,
        LbPolicy::least_request(),
        LbPolicy::peak_ewma(),
        LbPolicy::ring_hash(),
        LbPolicy::maglev(),
    ]
}

fn table(policy: &LbPolicy, n: u32, options: &BuildOptions) -> Table<u32> {
    policy.build_with((0..n).map(|i| (i, 1)), options)
}

fn counts(table: &Table<u32>, picks: usize, seed: u64) -> HashMap<u32, usize> {
    let mut keys = StdRng::seed_from_u64(seed);
    let mut counts = HashMap::new();
    for _ in 0..picks {
        let ctx = PickContext::new().with_hash(Some(keys.random()));
        if let Some(picked) = table.pick_with(&ctx) {
            *counts.entry(*picked.endpoint()).or_default() += 1;
        }
    }
    counts
}

#[test]
fn unhealthy_endpoints_are_never_picked_above_the_threshold() {
    for policy in policies() {
        let t = table(&policy, 10, &BuildOptions::seeded(1));
        // 4 of 10 down: 60% healthy, above the default 50% threshold.
        for i in [0, 3, 4, 9] {
            t.states()[i].set_healthy(false);
        }
        let c = counts(&t, 20_000, 2);
        for down in [0, 3, 4, 9] {
            assert_eq!(
                c.get(&down),
                None,
                "{}: picked unhealthy {down}",
                policy.name()
            );
        }
        // The others share the traffic: each of 6 expects 3,333; random ones vary by
        // √(20000·(1/6)(5/6)) ≈ 53, and fallbacks spread the down endpoints' share unevenly
        // for the hashing tables, but never by half.
        for up in [1, 2, 5, 6, 7, 8] {
            let got = c.get(&up).copied().unwrap_or(0);
            assert!(
                got > 1_666,
                "{}: endpoint {up} got only {got}",
                policy.name()
            );
        }
    }
}

#[test]
fn below_the_threshold_everyone_is_used() {
    for policy in policies() {
        let t = table(&policy, 10, &BuildOptions::seeded(1));
        // 6 of 10 down: 40% healthy, below 50%: panic, health ignored.
        for i in 0..6 {
            t.states()[i].set_healthy(false);
        }
        let c = counts(&t, 20_000, 3);
        assert_eq!(c.len(), 10, "{}: {c:?}", policy.name());
        // Exactly at the threshold (5 of 10 healthy, 50%) there is no panic: Envoy's rule is
        // "below".
        t.states()[5].set_healthy(true);
        let c = counts(&t, 20_000, 3);
        assert_eq!(c.len(), 5, "{}: {c:?}", policy.name());
        assert!((0..5).all(|i| !c.contains_key(&i)));
    }
}

#[test]
fn with_panic_mode_disabled_nothing_healthy_means_no_pick() {
    for policy in policies() {
        let t = table(&policy, 4, &BuildOptions::seeded(1).with_panic_threshold(0));
        for s in t.states() {
            s.set_healthy(false);
        }
        assert!(t.pick().is_none(), "{}", policy.name());
        // One back: every pick goes to it.
        t.states()[2].set_healthy(true);
        assert_eq!(
            counts(&t, 1_000, 4),
            HashMap::from([(2, 1_000)]),
            "{}",
            policy.name()
        );
    }
}

#[test]
fn hashing_tables_fall_back_consistently_and_only_for_the_unhealthy_endpoints_keys() {
    for policy in [LbPolicy::ring_hash(), LbPolicy::maglev()] {
        let t = table(&policy, 10, &BuildOptions::seeded(1));
        let mut rng = StdRng::seed_from_u64(5);
        let keys: Vec<u64> = (0..20_000).map(|_| rng.random()).collect();
        let owner = |key: u64| {
            *t.pick_with(&PickContext::new().with_hash(Some(key)))
                .unwrap()
                .endpoint()
        };
        let before: Vec<u32> = keys.iter().map(|&k| owner(k)).collect();
        t.states()[7].set_healthy(false);
        let during: Vec<u32> = keys.iter().map(|&k| owner(k)).collect();
        let mut fallbacks: HashMap<u32, usize> = HashMap::new();
        for (i, (&b, &d)) in before.iter().zip(&during).enumerate() {
            if b == 7 {
                assert_ne!(d, 7);
                *fallbacks.entry(d).or_default() += 1;
                // The same key falls back to the same endpoint every time.
                assert_eq!(owner(keys[i]), d);
            } else {
                assert_eq!(b, d, "{}: a key of a healthy endpoint moved", policy.name());
            }
        }
        // Endpoint 7's ~2,000 keys are spread over the others rather than dumped on one:
        // at least 5 of the 9 get some, none gets more than half.
        let moved: usize = fallbacks.values().sum();
        assert!(fallbacks.len() >= 5, "{}: {fallbacks:?}", policy.name());
        assert!(
            fallbacks.values().all(|&c| c * 2 < moved),
            "{}: {fallbacks:?}",
            policy.name()
        );
        // Healthy again: every key is back.
        t.states()[7].set_healthy(true);
        let after: Vec<u32> = keys.iter().map(|&k| owner(k)).collect();
        assert_eq!(before, after);
    }
}

#[test]
fn round_robin_hands_an_unhealthy_endpoints_turns_to_the_others() {
    let t = table(&LbPolicy::RoundRobin, 5, &BuildOptions::seeded(1));
    t.states()[1].set_healthy(false);
    let c = counts(&t, 5_000, 6);
    // Endpoints 0, 2, 3, 4 keep their 1,000 turns each and share endpoint 1's 1,000 at random:
    // 1,250 each on average, Binomial(1000, 1/4) sd 13.7 on top of the exact 1,000.
    for up in [0, 2, 3, 4] {
        let got = c[&up];
        assert!((1_180..=1_320).contains(&got), "{up}: {got} of {c:?}");
    }
}

#[test]
fn health_marks_survive_rebuilds_and_policy_changes() {
    let set = EndpointSet::with_options(LbPolicy::RoundRobin, BuildOptions::seeded(1));
    set.update((0..4u32).map(|i| (i, 1)));
    set.set_healthy(&2, false);
    set.update((0..5u32).map(|i| (i, 1)));
    set.set_policy(LbPolicy::maglev(), BuildOptions::seeded(1));
    let snapshot = set.load();
    let c = counts(snapshot.table(), 5_000, 7);
    assert_eq!(c.get(&2), None, "{c:?}");
    assert_eq!(c.len(), 4);
}

#[test]
fn weight_zero_endpoints_do_not_count_toward_the_threshold() {
    // Two active endpoints and eight drained ones (weight 0, healthy). One active endpoint down
    // is 50% healthy among those that count: no panic, so the down one is skipped. Counting the
    // drained ones would make it 90% either way; counting them as down would panic.
    let set = EndpointSet::with_options(LbPolicy::Random, BuildOptions::seeded(1));
    set.update((0..10u32).map(|i| (i, u32::from(i < 2))));
    set.set_healthy(&0, false);
    let c = counts(set.load().table(), 1_000, 8);
    assert_eq!(c, HashMap::from([(1, 1_000)]));
    // Now drain endpoint 1 as well, and bring a third one in: 1 of 2 healthy again.
    set.update([(0, 1), (1, 0), (2, 1)]);
    let c = counts(set.load().table(), 1_000, 9);
    assert_eq!(c, HashMap::from([(2, 1_000)]));
}
