//! STUB: to be written (step 3).

use super::{Balance, Ctx, Set};

pub struct LeastConnections;

impl LeastConnections {
    pub fn new(_set: &Set) -> LeastConnections {
        LeastConnections
    }
}

impl Balance for LeastConnections {
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        set.scan_from(0, cx)
    }
}
