//! Smooth weighted round robin, as nginx does it (`ngx_http_upstream_get_peer` in
//! `src/http/ngx_http_upstream_round_robin.c`, nginx 1.3.1, 2012).
//!
//! Each endpoint keeps a running `current` weight. On every pick, each *eligible* endpoint's
//! `current` grows by its effective weight; the endpoint with the largest `current` (the first
//! one on ties) wins and loses the sum of the effective weights that took part. Over a cycle
//! of `sum(weights)` picks each endpoint is chosen exactly `weight` times, and its turns are
//! spread out rather than bunched: weights 5, 1, 1 give `a a b a c a a`. Ineligible endpoints
//! take no part and keep their `current` until they come back, as in nginx.
//!
//! Effective weights come from [`Set::effective_weight`] (the configured weight scaled by slow
//! start). They are kept in fixed point, in units of 1/1024: scaling every weight by the same
//! factor leaves all comparisons unchanged, so without slow start the sequence is exactly
//! nginx's integer one, and with it a fractional weight is still summed exactly.
//!
//! Cost: O(n) per pick under a mutex, like nginx (which scans every peer too); a pool with a
//! single endpoint skips the lock. No allocation.

use std::sync::Mutex;

use super::{Balance, Ctx, Set};

/// Fixed-point unit of effective weights: 1.0 = 1 << SHIFT = 1024.
const SHIFT: u32 = 10;
const ONE: f64 = (1 << SHIFT) as f64;

/// nginx's smooth weighted round robin; see the module documentation.
#[derive(Debug)]
pub struct SmoothWrr {
    /// Each endpoint's `current` weight, in units of 1/[`ONE`].
    current: Mutex<Vec<i64>>,
}

impl SmoothWrr {
    pub fn new(set: &Set) -> SmoothWrr {
        SmoothWrr {
            current: Mutex::new(vec![0; set.len()]),
        }
    }
}

impl Balance for SmoothWrr {
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        let n = set.len();
        if n <= 1 {
            // nginx's `peers->single` short cut: nothing to weigh.
            return (n == 1 && set.eligible(0, cx)).then_some(0);
        }
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.len() != n {
            // Only if handed a Set other than the one it was built for.
            current.clear();
            current.resize(n, 0);
        }
        let now = cx.now;
        let slow_start = set.opts.slow_start.is_some();
        let peers = (0..n).filter(|&i| set.eligible(i, cx)).map(|i| {
            let weight = if slow_start {
                fixed_point(set.effective_weight(i, now))
            } else {
                (i64::from(set.backends[i].weight) << SHIFT).max(1)
            };
            (i, weight)
        });
        step(&mut current, peers)
    }
}

/// An effective weight (>= 0) in units of 1/[`ONE`], rounded, at least 1 so every eligible
/// endpoint takes part. (`+ 0.5` and truncation rather than `f64::round`, a libm call.)
fn fixed_point(weight: f64) -> i64 {
    ((weight * ONE + 0.5) as i64).max(1)
}

/// One nginx selection round over `(index, weight)` pairs: returns the winner (`None` when
/// `peers` is empty) after updating `current`.
fn step(current: &mut [i64], peers: impl Iterator<Item = (usize, i64)>) -> Option<usize> {
    let mut total: i64 = 0;
    let mut best: Option<usize> = None;
    for (i, weight) in peers {
        current[i] += weight;
        total += weight;
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    let best = best?;
    current[best] -= total;
    Some(best)
}

/// One full cycle of nginx's smooth weighted round robin over `weights` with every endpoint
/// eligible: `sum(weights)` indices, endpoint `i` appearing `weights[i]` times. Endpoints
/// of weight 0 never appear. For tests and documentation: the cycle is as long as the sum.
///
/// ```
/// assert_eq!(sluice::balance::smooth_wrr_sequence(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
/// ```
pub fn smooth_wrr_sequence(weights: &[u32]) -> Vec<usize> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let mut current = vec![0; weights.len()];
    (0..total)
        .filter_map(|_| {
            let peers = weights
                .iter()
                .enumerate()
                .filter(|&(_, &w)| w > 0)
                .map(|(i, &w)| (i, i64::from(w)));
            step(&mut current, peers)
        })
        .collect()
}
