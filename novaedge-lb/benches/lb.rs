//! Pick and build costs of the selectors.
//!
//! Picks are measured single-threaded: the cost is one relaxed `fetch_add` plus a modulo and
//! one or two loads, so what remains to see is how it scales with the endpoint count (it should
//! not, beyond cache effects of the larger schedule). Builds happen off the hot path on every
//! endpoint change; the WRR build at 1,000 endpoints shows what an update costs.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use novaedge_lb::{Balanced, RoundRobin, Selector, WeightedRoundRobin};

const SIZES: [usize; 3] = [10, 100, 1_000];

/// Weights 1..=100 in a repeating pattern: 100 distinct weights at 1,000 endpoints, a total of
/// 50,500, under the schedule cap.
fn weighted(n: usize) -> Vec<(usize, u32)> {
    (0..n).map(|i| (i, (i % 100) as u32 + 1)).collect()
}

/// Weights spread over 1..=1,000,000 with no common divisor, so the total exceeds the cap and
/// the build also scales them down; every one of the 1,000 weights is distinct.
fn weighted_heavy(n: usize) -> Vec<(usize, u32)> {
    (0..n)
        .map(|i| (i, ((i as u64 * 7_919 + 13) % 1_000_000) as u32 + 1))
        .collect()
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for n in SIZES {
        let rr = RoundRobin::new((0..n).collect());
        group.bench_with_input(BenchmarkId::new("round_robin", n), &rr, |b, rr| {
            b.iter(|| *black_box(rr).pick().expect("non-empty"))
        });
        let wrr = WeightedRoundRobin::new(weighted(n));
        group.bench_with_input(
            BenchmarkId::new("weighted_round_robin", n),
            &wrr,
            |b, wrr| b.iter(|| *black_box(wrr).pick().expect("non-zero weights")),
        );
    }
    // The same pick through the swappable handle, as a proxy would call it per request.
    let balanced = Balanced::new(WeightedRoundRobin::new(weighted(100)));
    group.bench_function("balanced_weighted_round_robin/100", |b| {
        b.iter(|| {
            *black_box(&balanced)
                .load()
                .pick()
                .expect("non-zero weights")
        })
    });
    group.finish();
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    let n = 1_000;
    let endpoints = weighted(n);
    group.bench_with_input(
        BenchmarkId::new("weighted_round_robin", n),
        &endpoints,
        |b, endpoints| b.iter(|| WeightedRoundRobin::new(black_box(endpoints.iter().copied()))),
    );
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
