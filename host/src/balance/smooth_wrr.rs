//! STUB: to be written (step 3).

use super::{Balance, Ctx, Set};

pub struct SmoothWrr;

impl SmoothWrr {
    pub fn new(_set: &Set) -> SmoothWrr {
        SmoothWrr
    }
}

impl Balance for SmoothWrr {
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        set.scan_from(0, cx)
    }
}

/// nginx's smooth weighted round-robin sequence for `weights` (one full cycle).
pub fn smooth_wrr_sequence(weights: &[u32]) -> Vec<usize> {
    let _ = weights;
    Vec::new()
}
