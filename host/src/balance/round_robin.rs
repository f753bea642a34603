//! STUB: to be written (step 3).

use super::{Balance, Ctx, Set};

pub struct RoundRobin;

impl RoundRobin {
    pub fn new(_set: &Set) -> RoundRobin {
        RoundRobin
    }
}

impl Balance for RoundRobin {
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        set.scan_from(0, cx)
    }
}
