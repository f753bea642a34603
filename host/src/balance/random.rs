//! STUB: to be written (step 3).

use super::{Balance, Ctx, Set};

pub struct WeightedRandom;

impl WeightedRandom {
    pub fn new(_set: &Set) -> WeightedRandom {
        WeightedRandom
    }
}

impl Balance for WeightedRandom {
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        set.scan_from(0, cx)
    }
}
