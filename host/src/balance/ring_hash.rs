//! STUB: to be written (step 3).

use super::{Balance, Ctx, Set};

pub struct RingHash;

impl RingHash {
    pub fn new(_set: &Set) -> RingHash {
        RingHash
    }
}

impl Balance for RingHash {
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        set.scan_from(0, cx)
    }
}
