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
//!
//! **Large pools** (more than [`SCAN_LIMIT`] endpoints) use an earliest-deadline-first
//! scheduler instead, as Envoy does for weighted round robin: each endpoint holds a virtual
//! deadline, the one with the earliest is picked and its deadline moves on by `1 / weight`.
//! Over any stretch of virtual time an endpoint is picked in proportion to its weight (over
//! `sum(weights)` picks from the start, exactly `weight` times), its turns are evenly spaced,
//! and a pick costs O(log n) (a binary heap) instead of a scan. The order differs from
//! nginx's; the proportions and the spreading do not. An ineligible endpoint at the top is
//! set aside and put back with its deadline moved up to the current virtual time, so it
//! neither loses its place while briefly busy nor, after a long absence, comes back with a
//! burst of overdue turns.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;

use super::{Balance, Ctx, Set};

/// Pools up to this size use nginx's scan (bit-exact sequences); larger ones the EDF
/// scheduler. At 64 endpoints the scan costs about what a few heap operations do.
pub const SCAN_LIMIT: usize = 64;

/// Fixed-point unit of effective weights: 1.0 = 1 << SHIFT = 1024.
const SHIFT: u32 = 10;
const ONE: f64 = (1 << SHIFT) as f64;

/// nginx's smooth weighted round robin, or EDF for large pools; see the module documentation.
#[derive(Debug)]
pub struct SmoothWrr {
    state: Mutex<State>,
}

#[derive(Debug)]
enum State {
    /// Each endpoint's `current` weight, in units of 1/[`ONE`].
    Scan(Vec<i64>),
    Edf(Edf),
}

impl SmoothWrr {
    pub fn new(set: &Set) -> SmoothWrr {
        SmoothWrr {
            state: Mutex::new(State::new(set)),
        }
    }
}

impl State {
    fn new(set: &Set) -> State {
        match set.len() {
            n if n > SCAN_LIMIT => State::Edf(Edf::new(set)),
            n => State::Scan(vec![0; n]),
        }
    }
}

/// An endpoint's weight (slow start applied) in units of 1/[`ONE`], at least 1.
fn weight_of(set: &Set, i: usize, now: super::Nanos) -> i64 {
    if set.opts.slow_start.is_some() {
        fixed_point(set.effective_weight(i, now))
    } else {
        (i64::from(set.backends[i].weight) << SHIFT).max(1)
    }
}

impl Balance for SmoothWrr {
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        let n = set.len();
        if n <= 1 {
            // nginx's `peers->single` short cut: nothing to weigh.
            return (n == 1 && set.eligible(0, cx)).then_some(0);
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let built_for = match &*state {
            State::Scan(current) => current.len(),
            State::Edf(edf) => edf.len,
        };
        if built_for != n {
            // Only if handed a Set other than the one it was built for.
            *state = State::new(set);
        }
        let now = cx.now;
        match &mut *state {
            State::Scan(current) => {
                let peers = (0..n)
                    .filter(|&i| set.eligible(i, cx))
                    .map(|i| (i, weight_of(set, i, now)));
                step(current, peers)
            }
            State::Edf(edf) => edf.pick(set, cx),
        }
    }
}

/// Virtual time of one pick of an endpoint of weight 1 (fixed point: a weight-`w` endpoint's
/// deadline advances by `PERIOD / w`). 2^50 over weights in units of 1/1024 leaves steps of
/// at least 2^24 for weights up to 2^16, so rounding moves proportions by < 1e-7.
const PERIOD: u64 = 1 << 50;

/// Earliest-deadline-first weighted round robin over a binary heap.
#[derive(Debug)]
struct Edf {
    /// (deadline, endpoint) of every endpoint, earliest on top; ties go to the lower index.
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    /// Endpoints taken off the top for being ineligible during one pick (kept to reuse its
    /// allocation).
    skipped: Vec<(u64, u32)>,
    /// Virtual time: the deadline of the last pick.
    now: u64,
    len: usize,
}

impl Edf {
    fn new(set: &Set) -> Edf {
        let t = super::now();
        let heap = (0..set.len())
            .map(|i| Reverse((PERIOD / weight_of(set, i, t) as u64, i as u32)))
            .collect();
        Edf {
            heap,
            skipped: Vec::new(),
            now: 0,
            len: set.len(),
        }
    }

    fn pick(&mut self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        let mut picked = None;
        while let Some(Reverse((deadline, i))) = self.heap.pop() {
            if set.eligible(i as usize, cx) {
                self.now = self.now.max(deadline);
                let step = PERIOD / weight_of(set, i as usize, cx.now) as u64;
                self.heap.push(Reverse((self.now + step, i)));
                picked = Some(i as usize);
                break;
            }
            self.skipped.push((deadline, i));
        }
        let now = self.now;
        for (deadline, i) in self.skipped.drain(..) {
            self.heap.push(Reverse((deadline.max(now), i)));
        }
        picked
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
