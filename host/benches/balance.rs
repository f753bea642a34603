//! STUB: pick cost per algorithm (step 3).
fn main() {}
