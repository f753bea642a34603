//! STUB: to be written (step 3).

use super::{Balance, Ctx, Set};

pub struct LeastResponseTime;

impl LeastResponseTime {
    pub fn new(_set: &Set) -> LeastResponseTime {
        LeastResponseTime
    }
}

impl Balance for LeastResponseTime {
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        set.scan_from(0, cx)
    }
}
