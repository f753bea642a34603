//! Least request by the power of two choices (Mitzenmacher, "The Power of Two Choices in
//! Randomized Load Balancing", IEEE TPDS 12(10), 2001): draw two distinct eligible endpoints
//! at random and send the request to the one with the lower `(in_flight + 1) / weight`
//! (effective weight, so slow start applies). Choosing the better of two random endpoints
//! keeps the most loaded one within O(log log n) of the mean, against O(log n / log log n)
//! for one random choice, without looking at the whole pool; Envoy's `LEAST_REQUEST` and
//! linkerd use the same idea.
//!
//! The `+ 1` counts the request being placed, so an idle heavy endpoint beats an idle light
//! one, and under load each endpoint settles at in-flight proportional to its weight. With
//! one eligible endpoint it is returned; with a pool of two both are compared; on a tie the
//! first (random) candidate wins.
//!
//! Cost: O(1) expected (two random draws, a retry or two when endpoints are ineligible, a
//! scan only when most are); no lock, no allocation.

use super::common::{effective_weight, two_choices};
use super::{Balance, Ctx, Set};

/// Power-of-two-choices least request; see the module documentation.
#[derive(Debug, Default)]
pub struct LeastRequest;

impl LeastRequest {
    pub fn new(_set: &Set) -> LeastRequest {
        LeastRequest
    }
}

impl Balance for LeastRequest {
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        let (a, b) = two_choices(set, cx)?;
        let Some(b) = b else {
            return Some(a);
        };
        // (load_a + 1) / w_a <= (load_b + 1) / w_b, cross-multiplied.
        let load = |i: usize| f64::from(set.backends[i].live.in_flight()) + 1.0;
        let (wa, wb) = (
            effective_weight(set, a, cx.now),
            effective_weight(set, b, cx.now),
        );
        Some(if load(a) * wb <= load(b) * wa { a } else { b })
    }
}
