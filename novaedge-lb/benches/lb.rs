//! Pick and build costs of every algorithm.
//!
//! Picks are measured single-threaded at 10, 100 and 1,000 endpoints with weights 1..=100 in a
//! repeating pattern, every endpoint healthy and no request in flight (the common case: one
//! atomic load says "all healthy"). Hashing tables get a different key per pick (a splitmix
//! sequence), so lookups touch the table as real traffic does. Peak EWMA is given the time in its
//! context, as a proxy that reads its clock once per request would; reading the system clock
//! (`Instant::now`) adds about 20 ns.
//!
//! Builds happen off the hot path, on every endpoint change; the 1,000-endpoint builds show what
//! an update costs.

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use novaedge_lb::{
    BuildOptions, EndpointSet, LbPolicy, LeastRequest, Maglev, MaglevSize, PeakEwma, PickContext,
    Random, RingHash, RoundRobin, Selector, WeightedRoundRobin,
};

const SIZES: [usize; 3] = [10, 100, 1_000];

/// Weights 1..=100 in a repeating pattern: 100 distinct weights at 1,000 endpoints, a total of
/// 50,500, under the weighted round robin schedule cap.
fn weighted(n: usize) -> Vec<(usize, u32)> {
    (0..n).map(|i| (i, (i % 100) as u32 + 1)).collect()
}

fn equal(n: usize) -> Vec<(usize, u32)> {
    (0..n).map(|i| (i, 1)).collect()
}

/// Weights spread over 1..=1,000,000 with no common divisor, so the total exceeds the cap and
/// the build also scales them down; every one of the 1,000 weights is distinct.
fn weighted_heavy(n: usize) -> Vec<(usize, u32)> {
    (0..n)
        .map(|i| (i, ((i as u64 * 7_919 + 13) % 1_000_000) as u32 + 1))
        .collect()
}

/// A different, well-mixed hash key per call.
struct Keys(u64);

impl Keys {
    #[inline]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn bench_pick<S: Selector<usize>>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    n: usize,
    table: &S,
) {
    let now = Instant::now();
    let mut keys = Keys(n as u64);
    c.bench_with_input(BenchmarkId::new(name, n), table, |b, table| {
        b.iter(|| {
            let ctx = PickContext::new().with_hash(Some(keys.next())).at(now);
            *black_box(table)
                .pick_with(&ctx)
                .expect("pickable")
                .endpoint()
        })
    });
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for n in SIZES {
        bench_pick(
            &mut group,
            "round_robin",
            n,
            &RoundRobin::new((0..n).collect()),
        );
        bench_pick(
            &mut group,
            "weighted_round_robin",
            n,
            &WeightedRoundRobin::new(weighted(n)),
        );
        bench_pick(&mut group, "random", n, &Random::new(weighted(n)));
        bench_pick(
            &mut group,
            "least_request",
            n,
            &LeastRequest::new(weighted(n)),
        );
        bench_pick(&mut group, "peak_ewma", n, &PeakEwma::new(weighted(n)));
        bench_pick(&mut group, "ring_hash", n, &RingHash::new(weighted(n)));
        bench_pick(&mut group, "maglev", n, &Maglev::new(weighted(n)));
    }
    // Through the swappable set, as a proxy calls it per request.
    let set = EndpointSet::new(LbPolicy::maglev());
    set.update(weighted(1_000));
    let mut keys = Keys(7);
    group.bench_function("endpoint_set_maglev/1000", |b| {
        b.iter(|| {
            let ctx = PickContext::new().with_hash(Some(keys.next()));
            *black_box(&set)
                .load()
                .pick_with(&ctx)
                .expect("pickable")
                .endpoint()
        })
    });
    // Some endpoints unhealthy: every pick reads flags, some fall back.
    let lr = LeastRequest::with_options(weighted(1_000), 2, &BuildOptions::new());
    for state in lr_states(&lr).iter().step_by(10) {
        state.set_healthy(false);
    }
    bench_pick(&mut group, "least_request_10pct_unhealthy", 1_000, &lr);
    group.finish();
}

fn lr_states(lr: &LeastRequest<usize>) -> Vec<std::sync::Arc<novaedge_lb::EndpointState>> {
    // Each pick of a distinct endpoint exposes its state; collect one per endpoint.
    let mut states = vec![None; lr.endpoints().len()];
    let mut missing = states.len();
    while missing > 0 {
        let picked = lr.pick_with(&PickContext::new()).expect("pickable");
        if states[picked.index()].is_none() {
            states[picked.index()] = Some(picked.state().clone());
            missing -= 1;
        }
    }
    states.into_iter().map(|s| s.expect("collected")).collect()
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    let n = 1_000;
    for (label, endpoints) in [("weighted", weighted(n)), ("equal", equal(n))] {
        group.bench_with_input(
            BenchmarkId::new(format!("maglev_{label}"), n),
            &endpoints,
            |b, endpoints| {
                b.iter(|| {
                    Maglev::with_options(
                        black_box(endpoints.iter().copied()),
                        MaglevSize::DEFAULT,
                        &BuildOptions::new(),
                    )
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new(format!("ring_hash_{label}"), n),
            &endpoints,
            |b, endpoints| b.iter(|| RingHash::new(black_box(endpoints.iter().copied()))),
        );
        group.bench_with_input(
            BenchmarkId::new(format!("weighted_round_robin_{label}"), n),
            &endpoints,
            |b, endpoints| b.iter(|| WeightedRoundRobin::new(black_box(endpoints.iter().copied()))),
        );
    }
    let heavy = weighted_heavy(n);
    group.bench_with_input(
        BenchmarkId::new("weighted_round_robin_capped", n),
        &heavy,
        |b, heavy| b.iter(|| WeightedRoundRobin::new(black_box(heavy.iter().copied()))),
    );
    group.finish();
}

criterion_group!(benches, pick, build);
criterion_main!(benches);
