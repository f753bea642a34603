//! Pieces several algorithms share: prefix sums of configured weights (weighted random,
//! `ip_hash`), stable per-endpoint address hashes (ring hash, Maglev) and the random draws of
//! the power-of-two-choices algorithms (least request, least response time).

use std::collections::HashMap;

use super::{Ctx, FNV_OFFSET, Set, fnv1a};

/// Random probes for an eligible endpoint before falling back to a scan. With half the
/// endpoints ineligible, 4 probes all miss 1 time in 16.
const PROBES: usize = 4;

/// Endpoint `i`'s configured weight, at least 1: the contract says weights are >= 1, and a 0
/// from a hand-built [`Set`] must not leave a table without entries.
pub(super) fn configured_weight(set: &Set, i: usize) -> u64 {
    u64::from(set.backends[i].weight.max(1))
}

/// Endpoint `i`'s slow-start-scaled weight, never 0 (so costs divided by it stay finite).
#[inline]
pub(super) fn effective_weight(set: &Set, i: usize, now: super::Nanos) -> f64 {
    set.effective_weight(i, now).max(f64::MIN_POSITIVE)
}

/// Cumulative configured weights: endpoint `i` owns the points `ends[i-1]..ends[i]` of
/// `0..total`, so a uniformly random point picks an endpoint with probability weight/total
/// (inverse-CDF sampling) in O(log n).
#[derive(Debug)]
pub(super) struct WeightPrefix {
    ends: Box<[u64]>,
}

impl WeightPrefix {
    pub(super) fn new(set: &Set) -> WeightPrefix {
        let ends = (0..set.len())
            .scan(0u64, |sum, i| {
                *sum += configured_weight(set, i);
                Some(*sum)
            })
            .collect();
        WeightPrefix { ends }
    }

    /// Number of endpoints covered.
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Sum of the weights; 0 only when there are no endpoints.
    pub(super) fn total(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// The endpoint owning `point`, which must be below [`Self::total`].
    #[inline]
    pub(super) fn locate(&self, point: u64) -> usize {
        self.ends.partition_point(|&end| end <= point)
    }
}

/// Per-endpoint FNV-1a state of the address, the seed of the consistent-hashing tables: it
/// depends only on the address, so an endpoint keeps its ring points and Maglev permutation
/// whatever the order or membership of the pool. The k-th repeat (k >= 1) of an address
/// continues the hash with `#k`, so duplicates get positions of their own (with equal seeds
/// the second copy would never be chosen) while unique addresses hash exactly as their text.
pub(super) fn address_seeds(set: &Set) -> Vec<u64> {
    let mut seen: HashMap<&str, u32> = HashMap::with_capacity(set.len());
    set.backends
        .iter()
        .map(|b| {
            let seed = fnv1a(b.address.as_bytes(), FNV_OFFSET);
            let repeat = seen.entry(&b.address).or_insert(0);
            let seed = match *repeat {
                0 => seed,
                k => fnv1a(k.to_string().as_bytes(), fnv1a(b"#", seed)),
            };
            *repeat += 1;
            seed
        })
        .collect()
}

/// A uniformly random eligible endpoint: [`PROBES`] random indices, then the first eligible
/// endpoint after a random start. `None` when no endpoint is eligible.
pub(super) fn random_eligible(set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
    let n = set.len();
    if n == 0 {
        return None;
    }
    for _ in 0..PROBES {
        let i = cx.rng.usize(0..n);
        if set.eligible(i, cx) {
            return Some(i);
        }
    }
    let start = cx.rng.usize(0..n);
    set.scan_from(start, cx)
}

/// The candidates of a power-of-two-choices pick (Mitzenmacher): two distinct eligible
/// endpoints drawn uniformly at random, in random order; the second is `None` when only one
/// endpoint is eligible, and the whole is `None` when none is. O(1) expected.
pub(super) fn two_choices(set: &Set, cx: &mut Ctx<'_>) -> Option<(usize, Option<usize>)> {
    let n = set.len();
    match n {
        0 => None,
        1 => set.eligible(0, cx).then_some((0, None)),
        2 => {
            let a = cx.rng.usize(0..2);
            let b = 1 - a;
            match (set.eligible(a, cx), set.eligible(b, cx)) {
                (true, true) => Some((a, Some(b))),
                (true, false) => Some((a, None)),
                (false, true) => Some((b, None)),
                (false, false) => None,
            }
        }
        _ => {
            let a = random_eligible(set, cx)?;
            for _ in 0..PROBES {
                // Uniform over the other n - 1 endpoints.
                let mut b = cx.rng.usize(0..n - 1);
                if b >= a {
                    b += 1;
                }
                if set.eligible(b, cx) {
                    return Some((a, Some(b)));
                }
            }
            // Few endpoints eligible: the next one after `a`, if it is not `a` itself.
            let b = set.scan_from(a + 1, cx).filter(|&b| b != a);
            Some((a, b))
        }
    }
}

/// Steps a cursor over `0..n` without a division: `i + 1`, wrapping to 0.
#[inline]
pub(super) fn next_index(i: usize, n: usize) -> usize {
    if i + 1 >= n { 0 } else { i + 1 }
}
