//! `swap-b`: for the hot-swap test. Forwards every request to the default pool and sets the
//! response header `x-policy: b`, so a response tells which revision decided it (`swap-a`
//! and `swap-b` differ only in that letter, hence in their bytes).

use sluice_sdk::prelude::*;

#[sluice_sdk::policy]
fn decide(_req: &Request) -> Decision {
    Decision::forward_default().set_response_header("x-policy", "b")
}
