//! Weighted random: endpoint `i` with probability `weight(i) / sum(weights)`, by inverse-CDF
//! sampling (a uniform point in `0..sum`, then a binary search of the prefix sums of the
//! configured weights; Walker's alias method would be O(1) but the search over a few hundred
//! endpoints is already a handful of cache-resident comparisons).
//!
//! An ineligible draw is redrawn, up to [`DRAWS`] draws in all, which keeps the other
//! endpoints' proportions exact as long as some draw succeeds; then the first eligible
//! endpoint after the last draw is taken. Slow start by rejection sampling: a drawn endpoint
//! inside its window is kept with probability [`Set::warmup`] and otherwise redrawn, so its
//! share scales with its effective weight.
//!
//! Cost: O(log n) per draw, one draw when all is well; no lock, no allocation.

use super::common::WeightPrefix;
use super::{Balance, Ctx, Set};

/// Draws per pick before falling back to a scan: with half the weight ineligible all miss
/// 1 time in 256.
const DRAWS: usize = 8;

/// Weighted random; see the module documentation.
#[derive(Debug)]
pub struct WeightedRandom {
    prefix: WeightPrefix,
}

impl WeightedRandom {
    pub fn new(set: &Set) -> WeightedRandom {
        WeightedRandom {
            prefix: WeightPrefix::new(set),
        }
    }
}

impl Balance for WeightedRandom {
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        let n = set.len();
        if n == 0 || self.prefix.len() != n {
            // Empty, or a Set other than the one this was built for.
            return set.scan_from(0, cx);
        }
        let total = self.prefix.total();
        let slow_start = set.opts.slow_start.is_some();
        let mut last = 0;
        for _ in 0..DRAWS {
            let i = self.prefix.locate(cx.rng.u64(0..total));
            last = i;
            if !set.eligible(i, cx) {
                continue;
            }
            if slow_start {
                let warmup = set.warmup(i, cx.now);
                if warmup < 1.0 && cx.rng.f64() >= warmup {
                    continue;
                }
            }
            return Some(i);
        }
        set.scan_from(last, cx)
    }
}
