//! Ring hash (consistent hashing): endpoints own arcs of a 64-bit hash ring.
//!
//! Karger et al., "Consistent hashing and random trees", STOC 1997, as popularised by libketama
//! (Richard Jones, last.fm, 2007) and used by nginx's `hash ... consistent`, pingora-ketama and
//! Envoy's `RING_HASH`. Every endpoint is hashed onto the ring at many points; a request with hash
//! key `k` goes to the endpoint owning the first point at or after `k`, wrapping around. When an
//! endpoint leaves, only the keys on its arcs move, to the owners of the next points; when it
//! comes back, it takes exactly those keys back. No other key moves.
//!
//! # Points
//!
//! Ketama-style, points are per unit of weight: an endpoint of weight `w` gets
//! `w × points_per_weight` points (160 by default, as libketama, nginx and pingora-ketama). An
//! endpoint's points depend only on its own name and weight, which is what keeps the disruption
//! minimal: adding or removing one endpoint never moves another's points. Each point is
//! xxHash64 (seed 0) of `"<name>_<i>"` for `i` in `0..points`, the endpoint's
//! [`EndpointId`] bytes followed by `_` and the point number in decimal, as Envoy names its points.
//!
//! More points per endpoint balance better: an endpoint's share of the ring is a sum of `p`
//! random arcs, off its fair share by about `1/√p` relative (8% at 160 points, 1% at 10,000). A
//! ring holds at most `max_ring_size` points (1,048,576 by default, 12 MiB); past that every
//! endpoint gets proportionally fewer points (at least one), and, only then, a change of the
//! total weight moves points of every endpoint.
//!
//! Lookups take the top bits of the key to a bucket of a small index (about four points per
//! bucket), then binary search the few points of that bucket: two or three cache misses on a
//! ring of a million points, where a plain binary search would take twenty.

use std::fmt;

use xxhash_rust::xxh64::xxh64;

use crate::hash::EndpointId;
use crate::members::Members;
use crate::policy::BuildOptions;
use crate::selector::{PickContext, Picked, Selector};

/// The default points per unit of weight: libketama's 160.
pub const DEFAULT_POINTS_PER_WEIGHT: u32 = 160;

/// The default largest ring: 2^20 points.
pub const DEFAULT_MAX_RING_SIZE: u32 = 1 << 20;

/// Sends each hash key to the owner of the next point on a hash ring.
pub struct RingHash<E> {
    members: Members<E>,
    /// Point hashes, sorted.
    hashes: Box<[u64]>,
    /// Member index owning each point.
    owners: Box<[u32]>,
    /// `index[b]`: the first point whose top `64 - shift` bits are at least `b`; one entry more
    /// than there are buckets.
    index: Box<[u32]>,
    shift: u32,
}

// === impl RingHash ===

impl<E: EndpointId> RingHash<E> {
    /// Builds a ring with the default 160 points per unit of weight.
    pub fn new(endpoints: impl IntoIterator<Item = (E, u32)>) -> Self {
        Self::with_options(
            endpoints,
            DEFAULT_POINTS_PER_WEIGHT,
            DEFAULT_MAX_RING_SIZE,
            &BuildOptions::default(),
        )
    }

    /// Builds a ring with `points_per_weight` points per unit of weight (at least 1) and at most
    /// `max_ring_size` points in all (at least one per endpoint of weight above 0).
    pub fn with_options(
        endpoints: impl IntoIterator<Item = (E, u32)>,
        points_per_weight: u32,
        max_ring_size: u32,
        options: &BuildOptions,
    ) -> Self {
        Self::from_members(
            Members::standalone(endpoints, options),
            points_per_weight,
            max_ring_size,
        )
    }

    pub(crate) fn from_members(
        members: Members<E>,
        points_per_weight: u32,
        max_ring_size: u32,
    ) -> Self {
        let counts = point_counts(&members.weights, points_per_weight, max_ring_size);
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(total);
        let mut id_hashes = vec![0u64; members.len()];
        let mut key = Vec::new();
        for (index, (endpoint, &count)) in members.endpoints.iter().zip(&counts).enumerate() {
            if count == 0 {
                continue;
            }
            let id = endpoint.id_bytes();
            id_hashes[index] = xxh64(&id, 0);
            key.clear();
            key.extend_from_slice(&id);
            key.push(b'_');
            let prefix = key.len();
            let mut digits = itoa_buffer();
            for i in 0..count {
                key.truncate(prefix);
                key.extend_from_slice(decimal(i, &mut digits));
                points.push((xxh64(&key, 0), index as u32));
            }
        }
        // Equal point hashes (1 in 2^64 per pair) are ordered by the owner's id hash, so that the
        // ring does not depend on the order of the endpoints either.
        points.sort_unstable_by_key(|&(hash, owner)| (hash, id_hashes[owner as usize], owner));
        let (hashes, owners): (Vec<u64>, Vec<u32>) = points.into_iter().unzip();
        let (index, shift) = bucket_index(&hashes);
        Self {
            members,
            hashes: hashes.into_boxed_slice(),
            owners: owners.into_boxed_slice(),
            index,
            shift,
        }
    }
}

impl<E> RingHash<E> {
    /// The number of points on the ring.
    pub fn ring_size(&self) -> usize {
        self.hashes.len()
    }

    /// The endpoint owning `hash`, ignoring health: what a pick returns while every endpoint is
    /// healthy.
    pub fn owner(&self, hash: u64) -> Option<&E> {
        let point = self.point(hash)?;
        Some(&self.members.endpoints[self.owners[point] as usize])
    }

    /// The first point at or after `hash`, wrapping around.
    #[inline]
    fn point(&self, hash: u64) -> Option<usize> {
        if self.hashes.is_empty() {
            return None;
        }
        let bucket = (hash >> self.shift) as usize;
        let (start, end) = (self.index[bucket] as usize, self.index[bucket + 1] as usize);
        // If no point of the bucket is at or after `hash`, the next bucket's first point is:
        // `end`, which is what the search returns then.
        let point = start + self.hashes[start..end].partition_point(|&p| p < hash);
        Some(if point == self.hashes.len() { 0 } else { point })
    }

    /// Each member's share of the ring (the arcs ending at its points), for tests and reports.
    pub fn shares(&self) -> Vec<f64> {
        let mut shares = vec![0.0; self.members.len()];
        let n = self.hashes.len();
        for i in 0..n {
            // Point i owns the keys in (previous point, point i].
            let previous = self.hashes[(i + n - 1) % n];
            let arc = self.hashes[i].wrapping_sub(previous);
            let arc = if n == 1 { u64::MAX } else { arc };
            shares[self.owners[i] as usize] += arc as f64 / 2f64.powi(64);
        }
        shares
    }

    pub(crate) fn members(&self) -> &Members<E> {
        &self.members
    }
}

impl<E> Selector<E> for RingHash<E> {
    #[inline]
    fn pick_with(&self, ctx: &PickContext) -> Option<Picked<'_, E>> {
        let hash = ctx.hash.unwrap_or_else(|| self.members.entropy.next_u64());
        let point = self.point(hash)?;
        let first = self.owners[point] as usize;
        let n = self.hashes.len();
        // Fallback: on clockwise past the first choice's points, as the ring would send the key
        // if that endpoint were removed.
        let mut at = point;
        self.members.settle(
            first,
            |_| {
                for _ in 0..n {
                    at = (at + 1) % n;
                    if self.owners[at] as usize != first {
                        break;
                    }
                }
                self.owners[at] as usize
            },
            hash,
        )
    }

    fn endpoints(&self) -> &[E] {
        &self.members.endpoints
    }
}

impl<E: fmt::Debug> fmt::Debug for RingHash<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingHash")
            .field("members", &self.members)
            .field("ring_size", &self.hashes.len())
            .finish()
    }
}

/// Points per member: `w × points_per_weight`, or, past `max_ring_size`, proportionally fewer
/// (at least one per member of weight above 0).
fn point_counts(weights: &[u32], points_per_weight: u32, max_ring_size: u32) -> Vec<u32> {
    let points_per_weight = u64::from(points_per_weight.max(1));
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total.saturating_mul(points_per_weight) <= u64::from(max_ring_size) {
        return weights
            .iter()
            .map(|&w| (u64::from(w) * points_per_weight) as u32)
            .collect();
    }
    let per_weight = f64::from(max_ring_size.max(1)) / total as f64;
    weights
        .iter()
        .map(|&w| match w {
            0 => 0,
            w => ((f64::from(w) * per_weight).floor() as u32).max(1),
        })
        .collect()
}

/// A bucket index over sorted `hashes` with about four points per bucket (at least 2 buckets, at
/// most 2^24), and the shift that takes a hash to its bucket.
fn bucket_index(hashes: &[u64]) -> (Box<[u32]>, u32) {
    let bits = (hashes.len().max(1).ilog2().saturating_sub(2)).clamp(1, 24);
    let shift = 64 - bits;
    let buckets = 1usize << bits;
    let mut index = Vec::with_capacity(buckets + 1);
    let mut point = 0;
    for bucket in 0..=buckets as u64 {
        while point < hashes.len() && (hashes[point] >> shift) < bucket {
            point += 1;
        }
        index.push(point as u32);
    }
    (index.into_boxed_slice(), shift)
}

fn itoa_buffer() -> [u8; 10] {
    [0; 10]
}

/// `n` in decimal, without allocating.
fn decimal(mut n: u32, buffer: &mut [u8; 10]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buffer[start..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_matches_to_string() {
        let mut buf = itoa_buffer();
        for n in [0, 7, 10, 159, 1_000_000, u32::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }

    #[test]
    fn points_follow_weights() {
        assert_eq!(point_counts(&[1, 0, 3], 160, 1 << 20), vec![160, 0, 480]);
        // Capped: 4 weight units into 100 points, 25 per unit.
        assert_eq!(point_counts(&[1, 0, 3], 160, 100), vec![25, 0, 75]);
        // Never below one point.
        assert_eq!(point_counts(&[1, 1_000_000], 160, 1000), vec![1, 999]);
    }

    #[test]
    fn points_are_named_like_envoys() {
        let ring = RingHash::with_options([("10.0.0.1:80", 1)], 3, 100, &BuildOptions::default());
        let mut expected: Vec<u64> = (0..3)
            .map(|i| xxh64(format!("10.0.0.1:80_{i}").as_bytes(), 0))
            .collect();
        expected.sort_unstable();
        assert_eq!(&*ring.hashes, expected.as_slice());
    }

    #[test]
    fn keys_go_to_the_next_point_clockwise() {
        let ring = RingHash::with_options([("a", 1), ("b", 1)], 2, 100, &BuildOptions::default());
        let h = &ring.hashes;
        for (i, &point) in h.iter().enumerate() {
            let owner = Some(&["a", "b"][ring.owners[i] as usize]);
            assert_eq!(ring.owner(point), owner, "a point's own hash");
            assert_eq!(ring.owner(point - 1), owner, "just before the point");
        }
        // Past the last point the ring wraps to the first.
        let first = Some(&["a", "b"][ring.owners[0] as usize]);
        assert_eq!(ring.owner(h[h.len() - 1] + 1), first);
        assert_eq!(ring.owner(0), first);
    }

    #[test]
    fn the_bucket_index_agrees_with_a_plain_binary_search() {
        for points in [1u32, 2, 3, 17, 500] {
            let ring = RingHash::with_options(
                [("a", 1), ("b", 2)],
                points,
                1 << 20,
                &BuildOptions::default(),
            );
            let h = &ring.hashes;
            let plain = |hash: u64| {
                let p = h.partition_point(|&x| x < hash);
                if p == h.len() { 0 } else { p }
            };
            let mut probes: Vec<u64> = vec![0, 1, u64::MAX, u64::MAX - 1, 1 << 63];
            for &x in h.iter() {
                probes.extend([x, x.wrapping_sub(1), x.wrapping_add(1)]);
            }
            probes.extend((0..2_000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            for hash in probes {
                assert_eq!(
                    ring.point(hash),
                    Some(plain(hash)),
                    "{points} points, hash {hash:#x}"
                );
            }
        }
    }

    #[test]
    fn shares_add_up_to_one() {
        let ring = RingHash::new((0..5u32).map(|i| (i, i + 1)));
        let total: f64 = ring.shares().iter().sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        let single = RingHash::with_options([("x", 1)], 1, 10, &BuildOptions::default());
        assert_eq!(single.shares(), vec![1.0]);
    }

    #[test]
    fn empty_ring_picks_nothing() {
        let ring = RingHash::<&str>::new([("a", 0)]);
        assert_eq!(ring.ring_size(), 0);
        assert_eq!(ring.pick(), None);
        assert_eq!(ring.owner(1), None);
    }
}
