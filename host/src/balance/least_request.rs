//! STUB: to be written (step 3).

use super::{Balance, Ctx, Set};

pub struct LeastRequest;

impl LeastRequest {
    pub fn new(_set: &Set) -> LeastRequest {
        LeastRequest
    }
}

impl Balance for LeastRequest {
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        set.scan_from(0, cx)
    }
}
