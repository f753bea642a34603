//! Consistent hashing on a ring (Karger et al., "Consistent Hashing and Random Trees", STOC
//! 1997), laid out as in ketama (Richard Jones, last.fm's `libketama`, 2007) and Envoy's
//! `RING_HASH`, with optional bounded loads (Mirrokni, Thorup, Zadimoghaddam, "Consistent
//! Hashing with Bounded Loads", SODA 2018, arXiv:1608.01350).
//!
//! Build: every *configured* endpoint `i` puts `weight(i) * ring_points_per_weight` points
//! on a 64-bit ring, point `p` at `mix64(fnv1a("{address}-{p}"))`; the points are sorted
//! (hashes and owners in two arrays, so the binary search walks a dense `u64` array). The
//! ring depends only on the endpoints' addresses and weights: an endpoint keeps its points
//! across reloads and reorderings. Rings above [`MAX_POINTS`] points are scaled down in
//! proportion (each endpoint keeps at least one point), as Envoy caps its ring size.
//!
//! Pick: [`super::key_hash`] (the request's hash key, else the client IP) is located by binary
//! search, narrowed first by a radix index of the hashes' top bits (one bucket per ~4 points,
//! so the search touches two or three cache lines instead of one per level), and the first
//! point clockwise whose endpoint is eligible wins. Runs of points of
//! an endpoint already refused are skipped without checking it again, and the walk gives up
//! after `2n + 16` endpoint checks (then the first eligible endpoint in index order after the
//! key's own endpoint). Because the ring is built over the configured endpoints, the keys of
//! an ineligible endpoint go to the next distinct endpoint clockwise and no other key moves;
//! removing an endpoint from the configuration moves only its own keys, the minimum.
//!
//! Bounded load (`Options::bounded_load = Some(c)`, c >= 1): an endpoint is acceptable only
//! if `in_flight + 1 <= ceil(c * (pool_in_flight + 1) / eligible)`, the paper's capacity for
//! the request being placed, and the walk goes on clockwise past endpoints at capacity. So no
//! endpoint carries more than `c` times the mean load, and a hot key spills over to the next
//! endpoints on the ring while the others keep their keys. Counting the eligible endpoints is
//! a scan, so it is done only when the candidate fails the bound computed with all `n`
//! endpoints (a lower bound of the real one): a lightly loaded pool never pays for it.
//!
//! Cost: O(log(points per bucket)), O(1) expected, per pick (a plain binary search would be
//! O(log(n * points)), 17 cache-missing steps for 300 endpoints of weight 3 at 160 points
//! per weight), plus O(n) with bounded load when endpoints are at capacity. Memory: about 13
//! bytes per point. No lock, no allocation per pick.

use super::common::address_seeds;
use super::{Balance, Ctx, Set, fnv1a, key_hash, mix64};

/// Largest ring, in points (48 MiB).
pub(super) const MAX_POINTS: u64 = 1 << 22;

/// A consistent-hash ring over the configured endpoints; see the module documentation.
#[derive(Debug)]
pub struct RingHash {
    /// Point hashes, ascending.
    hashes: Box<[u64]>,
    /// `owners[k]` is the endpoint of point `hashes[k]`.
    owners: Box<[u32]>,
    /// Radix index: the points whose hash has top bits `b` (`hash >> shift == b`) are
    /// `buckets[b]..buckets[b + 1]`, about 4 of them; the binary search runs only there.
    buckets: Box<[u32]>,
    /// `64 - bits` for `2^bits` buckets; in 40..=63.
    shift: u32,
    /// Pool size the ring was built for.
    endpoints: usize,
}

impl RingHash {
    pub fn new(set: &Set) -> RingHash {
        let seeds = address_seeds(set);
        let weights: Vec<u32> = set.backends.iter().map(|b| b.weight).collect();
        let (counts, total) = point_counts(&weights, set.opts.ring_points_per_weight);
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(total as usize);
        for (i, (&seed, &count)) in seeds.iter().zip(&counts).enumerate() {
            // A u32 index: pools are far smaller (the table is for endpoints, not keys).
            let Ok(owner) = u32::try_from(i) else { break };
            let dash = fnv1a(b"-", seed);
            let mut digits = [0u8; 20];
            points.extend((0..count).map(|p| (mix64(fnv1a(decimal(p, &mut digits), dash)), owner)));
        }
        // Equal hashes (vanishingly rare) are ordered by endpoint index, deterministically.
        points.sort_unstable();
        let (hashes, owners) = points.into_iter().unzip::<_, _, Vec<_>, Vec<_>>();
        let (buckets, shift) = radix_index(&hashes);
        RingHash {
            hashes: hashes.into(),
            owners: owners.into(),
            buckets,
            shift,
            endpoints: set.len(),
        }
    }

    /// Number of points on the ring.
    #[cfg(test)]
    pub(super) fn points(&self) -> usize {
        self.hashes.len()
    }
}

/// Points of each endpoint, `weight * per_weight` (weights and `per_weight` at least 1),
/// scaled down in proportion if that exceeds [`MAX_POINTS`] in all, each keeping at least
/// one; and their sum.
pub(super) fn point_counts(weights: &[u32], per_weight: u32) -> (Vec<u64>, u64) {
    let per_weight = u64::from(per_weight.max(1));
    let wanted: Vec<u64> = weights
        .iter()
        .map(|&w| u64::from(w.max(1)) * per_weight)
        .collect();
    let sum: u64 = wanted.iter().sum();
    let counts: Vec<u64> = if sum <= MAX_POINTS {
        wanted
    } else {
        wanted
            .iter()
            .map(|&w| {
                let scaled = u128::from(w) * u128::from(MAX_POINTS) / u128::from(sum);
                u64::try_from(scaled).unwrap_or(MAX_POINTS).max(1)
            })
            .collect()
    };
    let total = counts.iter().sum();
    (counts, total)
}

/// The radix index of sorted `hashes` and its shift: `2^bits` buckets for about 4 points
/// each (at least 2 buckets, at most 2^24).
fn radix_index(hashes: &[u64]) -> (Box<[u32]>, u32) {
    let bits = (hashes.len().max(1).ilog2()).saturating_sub(2).clamp(1, 24);
    let shift = 64 - bits;
    let mut buckets = Vec::with_capacity((1 << bits) + 1);
    let mut k = 0;
    for b in 0..=1u64 << bits {
        while k < hashes.len() && hashes[k] >> shift < b {
            k += 1;
        }
        // Ring sizes are capped far below u32::MAX.
        buckets.push(k as u32);
    }
    (buckets.into(), shift)
}

/// `v` in decimal ASCII, written into `buf`.
fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[start..];
        }
    }
}

/// The bounded-load capacity of one pick.
struct Capacity {
    factor: f64,
    /// Pool in-flight requests, plus the one being placed.
    demand: f64,
    /// The capacity were every endpoint eligible: a lower bound of the real one.
    floor: u64,
    /// The real capacity, once needed.
    exact: Option<u64>,
}

impl Capacity {
    fn new(set: &Set, factor: f64) -> Capacity {
        let demand = f64::from(set.live.in_flight()) + 1.0;
        Capacity {
            factor,
            demand,
            floor: ceil_div(factor * demand, set.len()),
            exact: None,
        }
    }

    /// Whether endpoint `i` (eligible) may take one more request.
    fn admits(&mut self, set: &Set, cx: &Ctx<'_>, i: usize) -> bool {
        let load = u64::from(set.backends[i].live.in_flight()) + 1;
        if load <= self.floor {
            return true;
        }
        let (factor, demand) = (self.factor, self.demand);
        let exact = *self.exact.get_or_insert_with(|| {
            let eligible = (0..set.len()).filter(|&j| set.eligible(j, cx)).count();
            ceil_div(factor * demand, eligible.max(1))
        });
        load <= exact
    }
}

/// `ceil(x / n)` for a non-negative `x`.
fn ceil_div(x: f64, n: usize) -> u64 {
    (x / n as f64).ceil() as u64
}

impl Balance for RingHash {
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        let n = set.len();
        let len = self.hashes.len();
        if len == 0 || self.endpoints != n {
            // Empty, or a Set other than the one this was built for.
            return set.scan_from(0, cx);
        }
        let key = key_hash(cx);
        // The first point at or after the key: binary search within the key's bucket.
        let bucket = (key >> self.shift) as usize;
        let (lo, hi) = (
            self.buckets[bucket] as usize,
            self.buckets[bucket + 1] as usize,
        );
        let start = match lo + self.hashes[lo..hi].partition_point(|&h| h < key) {
            k if k == len => 0,
            k => k,
        };
        let mut capacity = set
            .opts
            .bounded_load
            .map(|factor| Capacity::new(set, factor));
        let max_checks = 2 * n + 16;
        let mut checks = 0;
        let mut refused = u32::MAX;
        let mut k = start;
        for _ in 0..len {
            let owner = self.owners[k];
            if owner != refused {
                let i = owner as usize;
                if set.eligible(i, cx) && capacity.as_mut().is_none_or(|c| c.admits(set, cx, i)) {
                    return Some(i);
                }
                refused = owner;
                checks += 1;
                if checks == max_checks {
                    break;
                }
            }
            k += 1;
            if k == len {
                k = 0;
            }
        }
        set.scan_from(self.owners[start] as usize, cx)
    }
}
