//! Least response time: the power of two choices (Mitzenmacher 2001) on the cost of Finagle's
//! `P2CPeakEwma` balancer (the metric is the `PeakEwma` trait in
//! `finagle-core/.../loadbalancer/PeakEwma.scala`; described in linkerd's "Beyond Round
//! Robin: Load Balancing for Latency", 2016):
//! `latency * (in_flight + 1) / weight`, where `latency` is the endpoint's peak-EWMA response
//! time ([`super::Live::ewma_ns`]: jumps up to a slower sample at once, decays towards faster
//! ones with a 10 s time constant, and keeps decaying while no response arrives, so an
//! endpoint that was slow is retried eventually). Two distinct random eligible endpoints are
//! drawn and the cheaper one wins.
//!
//! An endpoint that answered 429 or 503 with `Retry-After` is penalised until then
//! ([`super::Live::penalized`]) and loses to any candidate that is not; between two penalised
//! candidates the cost decides.
//!
//! Unmeasured endpoints (no response yet): an endpoint with no estimate is assumed as fast as
//! the candidate it is compared with, so load and weight decide, and a new endpoint is
//! neither flooded (as a default of 0 would do) nor starved (as a large default would do,
//! since it would never get the request that measures it). Between two unmeasured candidates
//! this is least request.
//!
//! Cost: O(1) expected: two random draws plus two uncontended mutex reads of the EWMAs; no
//! allocation.

use super::common::{effective_weight, two_choices};
use super::{Balance, Ctx, Set};

/// Peak-EWMA power-of-two-choices; see the module documentation.
#[derive(Debug, Default)]
pub struct LeastResponseTime;

impl LeastResponseTime {
    pub fn new(_set: &Set) -> LeastResponseTime {
        LeastResponseTime
    }
}

impl Balance for LeastResponseTime {
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        let (a, b) = two_choices(set, cx)?;
        let Some(b) = b else {
            return Some(a);
        };
        let now = cx.now;
        let (live_a, live_b) = (&set.backends[a].live, &set.backends[b].live);
        match (live_a.penalized(now), live_b.penalized(now)) {
            (true, false) => return Some(b),
            (false, true) => return Some(a),
            _ => {}
        }
        let (ewma_a, ewma_b) = (live_a.ewma_ns(now), live_b.ewma_ns(now));
        // Unmeasured: as fast as the other candidate; both unmeasured: equal.
        let latency_a = ewma_a.or(ewma_b).unwrap_or(1.0);
        let latency_b = ewma_b.or(ewma_a).unwrap_or(1.0);
        let cost_a = latency_a * (f64::from(live_a.in_flight()) + 1.0);
        let cost_b = latency_b * (f64::from(live_b.in_flight()) + 1.0);
        // cost_a / w_a <= cost_b / w_b, cross-multiplied.
        let (wa, wb) = (effective_weight(set, a, now), effective_weight(set, b, now));
        Some(if cost_a * wb <= cost_b * wa { a } else { b })
    }
}
