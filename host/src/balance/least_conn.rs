//! Weighted least connections: the eligible endpoint with the fewest in-flight requests per
//! unit of effective weight, as nginx's `least_conn` (`ngx_http_upstream_get_least_conn_peer`
//! in `src/http/modules/ngx_http_upstream_least_conn_module.c`) compares peers:
//! `in_flight(a) * weight(b) < in_flight(b) * weight(a)`, cross-multiplied so no division is
//! needed (in `f64`, because slow start makes effective weights fractional; integer weights
//! and counts are exact there).
//!
//! Ties: nginx breaks them by weighted round robin among the tied peers; here the scan starts
//! at a rotating position (an atomic counter) and the first endpoint of the lowest ratio
//! wins, so equal endpoints share an idle pool in turn, whatever their weights.
//!
//! Cost: O(n) per pick, a full scan of the pool, like nginx; one atomic increment, no lock,
//! no allocation. Pools of more than [`SCAN_LIMIT`] endpoints fall back to the power of two
//! choices over the same ratio (`least_request`'s pick, O(1)): the scan's exact minimum would
//! cost microseconds per request there, and two random choices keep the most loaded endpoint
//! within O(log log n) of the mean (see least_request.rs).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::common::{effective_weight, next_index};
use super::least_request::LeastRequest;
use super::smooth_wrr::SCAN_LIMIT;
use super::{Balance, Ctx, Set};

/// Weighted least connections; see the module documentation.
#[derive(Debug, Default)]
pub struct LeastConnections {
    /// Where the next scan starts (modulo the pool size), for fair tie-breaking.
    start: AtomicUsize,
}

impl LeastConnections {
    pub fn new(_set: &Set) -> LeastConnections {
        LeastConnections::default()
    }
}

impl Balance for LeastConnections {
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        let n = set.len();
        if n == 0 {
            return None;
        }
        if n > SCAN_LIMIT {
            return LeastRequest.pick(set, cx);
        }
        let mut i = self.start.fetch_add(1, Ordering::Relaxed) % n;
        // (index, in-flight, effective weight) of the best endpoint so far.
        let mut best: Option<(usize, f64, f64)> = None;
        for _ in 0..n {
            if set.eligible(i, cx) {
                let load = f64::from(set.backends[i].live.in_flight());
                let weight = effective_weight(set, i, cx.now);
                let better = match best {
                    None => true,
                    Some((_, best_load, best_weight)) => load * best_weight < best_load * weight,
                };
                if better {
                    best = Some((i, load, weight));
                }
            }
            i = next_index(i, n);
        }
        best.map(|(i, _, _)| i)
    }
}
