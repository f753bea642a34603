//! Round robin: each eligible endpoint in turn, ignoring weights.
//!
//! A shared atomic cursor hands out tickets; ticket `t` starts at endpoint `t mod n` and takes
//! the first eligible endpoint from there. When it had to skip endpoints (down, ejected, full,
//! excluded, or refused by slow start) it moves the cursor past them with a compare-exchange
//! that only succeeds if no other pick took a ticket meanwhile, so the endpoint after a down
//! one does not get a double turn (a lost race costs one uneven turn, never correctness).
//!
//! Slow start (Envoy's slow-start mode, linear here from 10%): an endpoint inside its window
//! is accepted with probability [`Set::warmup`] and otherwise passed over like an ineligible
//! one; after `n` candidates the first refused one is taken, so a pool that is all warming
//! still answers.
//!
//! Cost: one atomic increment and O(1) eligibility checks when endpoints are eligible; O(n)
//! when most are not. No lock, no allocation.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::common::next_index;
use super::{Balance, Ctx, Set};

/// Round robin over the eligible endpoints; see the module documentation.
#[derive(Debug, Default)]
pub struct RoundRobin {
    /// The next ticket; only its value modulo the pool size matters.
    cursor: AtomicUsize,
}

impl RoundRobin {
    pub fn new(_set: &Set) -> RoundRobin {
        RoundRobin::default()
    }
}

impl Balance for RoundRobin {
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        let n = set.len();
        if n == 0 {
            return None;
        }
        let ticket = self.cursor.fetch_add(1, Ordering::Relaxed);
        let slow_start = set.opts.slow_start.is_some();
        let mut refused = None;
        let mut i = ticket % n;
        for skipped in 0..n {
            if set.eligible(i, cx) {
                let accept = !slow_start || {
                    let warmup = set.warmup(i, cx.now);
                    warmup >= 1.0 || cx.rng.f64() < warmup
                };
                if accept {
                    if skipped > 0 {
                        // Pass over the skipped endpoints, unless another pick moved on.
                        let _ = self.cursor.compare_exchange(
                            ticket.wrapping_add(1),
                            ticket.wrapping_add(1 + skipped),
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    return Some(i);
                }
                refused.get_or_insert(i);
            }
            i = next_index(i, n);
        }
        refused
    }
}
