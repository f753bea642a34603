//! STUB: to be written (step 3).

use super::{Balance, Ctx, Set};

pub struct IpHash;

impl IpHash {
    pub fn new(_set: &Set) -> IpHash {
        IpHash
    }
}

impl Balance for IpHash {
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        set.scan_from(0, cx)
    }
}
