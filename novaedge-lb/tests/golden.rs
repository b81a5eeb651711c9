//! Acceptance 3: golden tables computed by hand from the published algorithms.
//!
//! # Maglev
//!
//! `fill_table` is checked against the paper's own example (Eisenbud et al., NSDI 2016, §3.4,
//! Table 1: M = 7, three backends with given offsets and skips), then the whole pipeline
//! (endpoint names → xxHash64 → offsets and skips → table) against a table filled by hand.
//!
//! The hashes used by [`Maglev`] are xxHash64 of the endpoint's id bytes: seed 0 for `h1`
//! (offset = h1 mod M), seed 1 for `h2` (skip = h2 mod (M − 1) + 1), as Envoy's Maglev. For the
//! names `a`, `b`, `c` they are (the seed-0 value of `a` is also a published XXH64 test vector):
//!
//! | name | h1 = xxh64(name, 0) | h2 = xxh64(name, 1) | offset (mod 13) | skip (mod 12 + 1) |
//! |---|---|---|---|---|
//! | a | `0xd24ec4f1a98c6e5b` | `0xdec2bc81c3cd46c6` | 12 | 7 |
//! | b | `0x78452aa11af39f9b` | `0x5938689cb3656a3c` | 8 | 9 |
//! | c | `0xa3dad144c40657ed` | `0xa9f80fcc47a33e41` | 11 | 2 |
//!
//! giving the preference lists (offset + j·skip mod 13, j = 0..12):
//!
//! ```text
//! a: 12  6  0  7  1  8  2  9  3 10  4 11  5
//! b:  8  4  0  9  5  1 10  6  2 11  7  3 12
//! c: 11  0  2  4  6  8 10 12  1  3  5  7  9
//! ```
//!
//! Filled by hand, turns in name order (each takes the first free slot on its list):
//!
//! ```text
//! round 1: a→12  b→8   c→11
//! round 2: a→6   b→4   c→0
//! round 3: a→7 (0 taken)   b→9 (0 taken)   c→2
//! round 4: a→1   b→5   c→10 (4, 6, 8 taken)
//! round 5: a→3 (8, 2, 9 taken): 13 slots filled
//! slot:   0 1 2 3 4 5 6 7 8 9 10 11 12
//! owner:  c a c a b b a a b b c  c  a
//! ```
//!
//! # Ring hash
//!
//! Points are xxHash64 (seed 0) of `"<name>_<i>"`. With two points each for `a` and `b`:
//!
//! | point | hash |
//! |---|---|
//! | `b_0` | `0x4e3d083a4cbbd78c` |
//! | `b_1` | `0x5b0cfd75da0157cc` |
//! | `a_0` | `0x6d2cebf82cdbf7ac` |
//! | `a_1` | `0xfa0cc5004b3d4c53` |
//!
//! so keys up to `b_1` go to `b`, keys in `(b_1, a_1]` to `a`, and keys past `a_1` wrap to `b`.

use novaedge_lb::maglev::{Permutation, fill_table};
use novaedge_lb::{BuildOptions, Maglev, MaglevSize, PickContext, RingHash, Selector};

fn size(m: u32) -> MaglevSize {
    MaglevSize::new(m).unwrap()
}

/// The paper's backends B0, B1, B2 (Table 1).
const B0: Permutation = Permutation {
    offset: 3,
    skip: 4,
    weight: 1,
};
const B1: Permutation = Permutation {
    offset: 0,
    skip: 2,
    weight: 1,
};
const B2: Permutation = Permutation {
    offset: 3,
    skip: 1,
    weight: 1,
};

#[test]
fn maglev_paper_table_1() {
    // Lists: B0 3 0 4 1 5 2 6; B1 0 2 4 6 1 3 5; B2 3 4 5 6 0 1 2.
    // Round 1: B0→3, B1→0, B2→4 (3 taken). Round 2: B0→1 (0, 4 taken), B1→2, B2→5.
    // Round 3: B0→6 (5, 2 taken). Full.
    assert_eq!(&*fill_table(size(7), &[B0, B1, B2]), &[1, 0, 1, 0, 2, 2, 0]);
}

#[test]
fn maglev_paper_table_1_after_removing_b1() {
    // Round 1: B0→3, B2→4. Round 2: B0→0, B2→5. Round 3: B0→1 (4 taken), B2→6.
    // Round 4: B0→2 (5 taken). Slot 6 moved from B0 to B2 although B0 stayed: Maglev's small
    // extra disruption.
    let table = fill_table(size(7), &[B0, B2]);
    let names: Vec<&str> = table.iter().map(|&i| ["B0", "B2"][i as usize]).collect();
    assert_eq!(names, ["B0", "B0", "B0", "B0", "B2", "B2", "B2"]);
}

#[test]
fn maglev_weighted_turns_by_hand() {
    // B0 with weight 2, B1 with weight 1: B0 takes a turn every round, B1 every other round
    // (rounds 0, 2, 4, ...). Round 0: B0→3, B1→0. Round 1: B0→4 (0 taken).
    // Round 2: B0→1, B1→2. Round 3: B0→5. Round 4: B0→6 (2 taken). Full: B0 5 slots, B1 2.
    let heavy = Permutation { weight: 2, ..B0 };
    assert_eq!(&*fill_table(size(7), &[heavy, B1]), &[1, 0, 1, 0, 0, 0, 0]);
}

#[test]
fn maglev_from_names_by_hand() {
    let by_hand = [
        "c", "a", "c", "a", "b", "b", "a", "a", "b", "b", "c", "c", "a",
    ];
    // Listed out of order: the table sorts by name.
    for order in [["a", "b", "c"], ["c", "a", "b"], ["b", "c", "a"]] {
        let maglev =
            Maglev::with_options(order.map(|n| (n, 1)), size(13), &BuildOptions::default());
        let owners: Vec<&str> = maglev
            .table()
            .iter()
            .map(|&i| maglev.endpoints()[i as usize])
            .collect();
        assert_eq!(owners, by_hand, "listed as {order:?}");
        // A key goes to the owner of slot key mod 13.
        for key in [0u64, 1, 13, 25, 1_000_003] {
            let picked = maglev
                .pick_with(&PickContext::new().with_hash(Some(key)))
                .unwrap();
            assert_eq!(
                *picked.endpoint(),
                by_hand[(key % 13) as usize],
                "key {key}"
            );
        }
    }
    for (name, offset, skip) in [("a", 12, 7), ("b", 8, 9), ("c", 11, 2)] {
        let p = Permutation::of(name.as_bytes(), size(13), 1);
        assert_eq!((p.offset, p.skip), (offset, skip), "{name}");
    }
}

#[test]
fn ring_points_by_hand() {
    let ring = RingHash::with_options([("a", 1), ("b", 1)], 2, 100, &BuildOptions::default());
    assert_eq!(ring.ring_size(), 4);
    let owner = |key: u64| *ring.owner(key).unwrap();
    assert_eq!(owner(0), "b");
    assert_eq!(owner(0x4e3d_083a_4cbb_d78c), "b", "exactly at b_0");
    assert_eq!(owner(0x5b0c_fd75_da01_57cc), "b", "exactly at b_1");
    assert_eq!(owner(0x5b0c_fd75_da01_57cd), "a", "just past b_1");
    assert_eq!(owner(0x6d2c_ebf8_2cdb_f7ac), "a", "exactly at a_0");
    assert_eq!(owner(0xfa0c_c500_4b3d_4c53), "a", "exactly at a_1");
    assert_eq!(
        owner(0xfa0c_c500_4b3d_4c54),
        "b",
        "past the last point: wraps"
    );
    assert_eq!(owner(u64::MAX), "b");
    let shares = ring.shares();
    let a = (0xfa0c_c500_4b3d_4c53u64 - 0x5b0c_fd75_da01_57cc) as f64 / 2f64.powi(64);
    assert!((shares[0] - a).abs() < 1e-12, "{shares:?}");
}
