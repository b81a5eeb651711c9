//! A fairness report: how far each algorithm's picks stray from the weights.
//!
//! Not a timing benchmark: it prints, for each algorithm, 100,000 picks over 10 endpoints of
//! weights 1..=10 (hash keys uniformly random for the hashing tables), the largest relative
//! deviation of an endpoint's pick count from its weight's share, and Pearson's χ² against the
//! weights (9 degrees of freedom: about 9 for a fair weighted die, 27.9 at the 99.9th
//! percentile). For the hashing tables it also prints the table's own largest deviation (slot or
//! arc shares), which no number of picks averages away. `cargo bench --bench fairness` runs it;
//! `tests/fairness.rs` asserts the bounds.
// A report: it prints.
#![allow(clippy::print_stdout)]

use novaedge_lb::{BuildOptions, LbPolicy, PickContext, RingHash, Selector, Table};

const PICKS: usize = 100_000;

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn report(name: &str, table: &Table<u32>, table_shares: Option<Vec<f64>>) {
    let weights: Vec<f64> = (1..=10).map(f64::from).collect();
    let total: f64 = weights.iter().sum();
    let mut counts = [0u64; 10];
    for i in 0..PICKS as u64 {
        let ctx = PickContext::new().with_hash(Some(mix(i)));
        counts[*table.pick_with(&ctx).expect("pickable").endpoint() as usize] += 1;
    }
    let mut max_dev = 0f64;
    let mut chi2 = 0f64;
    for (count, w) in counts.iter().zip(&weights) {
        let expected = PICKS as f64 * w / total;
        max_dev = max_dev.max((*count as f64 / expected - 1.0).abs());
        chi2 += (*count as f64 - expected).powi(2) / expected;
    }
    let table_dev = table_shares.map(|shares| {
        shares
            .iter()
            .zip(&weights)
            .map(|(s, w)| (s / (w / total) - 1.0).abs())
            .fold(0f64, f64::max)
    });
    println!(
        "{name:<34} max deviation {:>6.2}%   X² {:>8.2}   table's own {}",
        max_dev * 100.0,
        chi2,
        table_dev.map_or("-".to_owned(), |d| format!("{:.2}%", d * 100.0)),
    );
}

fn main() {
    let endpoints = || (0..10u32).map(|i| (i, i + 1));
    let options = BuildOptions::seeded(1);
    println!("fairness: {PICKS} picks over 10 endpoints, weights 1..=10");
    for policy in [
        LbPolicy::RoundRobin,
        LbPolicy::Random,
        LbPolicy::least_request(),
        LbPolicy::peak_ewma(),
        LbPolicy::maglev(),
    ] {
        let table = policy.build_with(endpoints(), &options);
        let shares = match &table {
            Table::Maglev(m) => {
                let mut slots = vec![0f64; 10];
                for &s in m.table() {
                    slots[s as usize] += 1.0 / m.table().len() as f64;
                }
                Some(slots)
            }
            _ => None,
        };
        report(policy.name(), &table, shares);
    }
    for points in [160, 1_024, 16_384] {
        let policy = LbPolicy::RingHash {
            points_per_weight: points,
            max_ring_size: 1 << 20,
        };
        let table = policy.build_with(endpoints(), &options);
        let shares = match &table {
            Table::RingHash(ring) => Some(RingHash::shares(ring)),
            _ => None,
        };
        report(
            &format!("RingHash ({points} points/weight)"),
            &table,
            shares,
        );
    }
}
