//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, section 3.4), weighted as in Envoy's `MAGLEV` load balancer.
//!
//! Build: a lookup table of `M` slots (`Options::maglev_table_size`, a prime; a non-prime
//! size is rounded up to the next prime, since the permutations below only cover the table
//! when `M` is prime). Every *configured* endpoint has a preference list, the permutation
//! `(offset + j * skip) mod M` with `offset = h1(address) mod M` and
//! `skip = h2(address) mod (M - 1) + 1`, where `h1` and `h2` are two independent 64-bit
//! mixes of the FNV-1a hash of the address. Endpoints then take turns claiming their next
//! preferred free slot until the table is full. Weights (as Envoy does it): in each round
//! every endpoint adds its weight to a credit and takes a turn for each whole `max_weight`
//! in it, so an endpoint of the largest weight claims a slot every round and one of a third
//! of it every third round; slot counts, hence key shares, follow the weights to within a
//! slot or so.
//!
//! Pick: `table[key_hash mod M]`, O(1). If that endpoint is ineligible the key is re-mixed
//! (`mix64(h ^ attempt) mod M`) up to [`REHASHES`] times, so its keys spread over the other
//! endpoints by weight while every other key stays put; then the first eligible endpoint
//! after the last candidate. Removing an endpoint from the configuration moves its own keys
//! and, the price of Maglev's near-perfect balance, a small fraction of the others (the
//! paper's figure 12; measured in the tests).
//!
//! Cost: one hash and one table read per pick. Memory: `M` entries of 2 bytes (pools of up to
//! 65536 endpoints) or 4; the build is O(M log M) time, done once per pool generation.

use super::common::{address_seeds, configured_weight};
use super::{Balance, Ctx, Set, key_hash, mix64};

/// Re-mixes of the key before the scan fallback.
pub(super) const REHASHES: u64 = 16;

/// Slot contents: an endpoint index, narrow when the pool allows.
#[derive(Debug)]
enum Table {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

/// A Maglev lookup table over the configured endpoints; see the module documentation.
#[derive(Debug)]
pub struct Maglev {
    table: Table,
    /// Table size `M`, a prime; 0 when the pool is empty.
    size: u64,
    /// Pool size the table was built for.
    endpoints: usize,
}

impl Maglev {
    pub fn new(set: &Set) -> Maglev {
        let n = set.len();
        let size = if n == 0 {
            0
        } else {
            next_prime(u64::from(set.opts.maglev_table_size).max(2))
        };
        let slots = populate(set, size);
        let table = if n <= 1 << 16 {
            Table::Narrow(slots.iter().map(|&e| e as u16).collect())
        } else {
            Table::Wide(slots.into())
        };
        Maglev {
            table,
            size,
            endpoints: n,
        }
    }

    /// Endpoint of slot `slot` (< `size`).
    #[inline]
    fn entry(&self, slot: u64) -> usize {
        match &self.table {
            Table::Narrow(t) => usize::from(t[slot as usize]),
            Table::Wide(t) => t[slot as usize] as usize,
        }
    }

    /// Slots held by each endpoint.
    #[cfg(test)]
    pub(super) fn slot_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.endpoints];
        for slot in 0..self.size {
            counts[self.entry(slot)] += 1;
        }
        counts
    }
}

/// Marks a free slot during the build.
const FREE: u32 = u32::MAX;

/// Fills a table of `size` slots (a prime, or 0 for an empty pool) with endpoint indices.
fn populate(set: &Set, size: u64) -> Vec<u32> {
    let n = set.len().min(FREE as usize);
    let mut table = vec![FREE; size as usize];
    if n == 0 || size == 0 {
        return table;
    }
    let seeds = address_seeds(set);
    // The slot each endpoint would claim next, and its step through the table.
    let mut next: Vec<u64> = seeds.iter().map(|&s| mix64(s) % size).collect();
    let skip: Vec<u64> = seeds
        .iter()
        .map(|&s| mix64(s.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15) % (size - 1).max(1) + 1)
        .collect();
    let weights: Vec<u64> = (0..n).map(|i| configured_weight(set, i)).collect();
    let max_weight = weights.iter().copied().max().unwrap_or(1);
    let mut credit = vec![0u64; n];
    let mut filled = 0u64;
    while filled < size {
        for i in 0..n {
            credit[i] += weights[i];
            if credit[i] < max_weight {
                continue;
            }
            credit[i] -= max_weight;
            // The endpoint's next preferred free slot: its permutation visits every slot
            // once (skip is coprime with the prime size), so one is found while any is free.
            let mut slot = next[i];
            while table[slot as usize] != FREE {
                slot = advance(slot, skip[i], size);
            }
            table[slot as usize] = i as u32;
            next[i] = advance(slot, skip[i], size);
            filled += 1;
            if filled == size {
                break;
            }
        }
    }
    table
}

/// `(slot + skip) mod size` for `slot < size` and `skip < size`, without a division.
#[inline]
fn advance(slot: u64, skip: u64, size: u64) -> u64 {
    let s = slot + skip;
    if s >= size { s - size } else { s }
}

/// The smallest prime `>= n` (trial division: a table build does it once).
fn next_prime(n: u64) -> u64 {
    let is_prime = |p: u64| p >= 2 && (2..).take_while(|d| d * d <= p).all(|d| p % d != 0);
    (n..).find(|&p| is_prime(p)).unwrap_or(n)
}

impl Balance for Maglev {
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        if self.size == 0 || self.endpoints != set.len() {
            // Empty, or a Set other than the one this was built for.
            return set.scan_from(0, cx);
        }
        let h = key_hash(cx);
        let mut i = self.entry(h % self.size);
        for attempt in 1..=REHASHES {
            if set.eligible(i, cx) {
                return Some(i);
            }
            i = self.entry(mix64(h ^ attempt) % self.size);
        }
        // The last candidate first, then the next eligible one.
        set.scan_from(i, cx)
    }
}
