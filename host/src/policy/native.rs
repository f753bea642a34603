//! The default policy written in Rust and run natively: the same decision as
//! `examples/default-policy` (forward to the default pool; the cache uses the host's default
//! key). It exists to measure what running the policy in Wasm costs (`policy.native = true`,
//! see `bench/RESULTS.md`); a test checks both make the same decision.

use super::{Decision, Forward, PolicyRequest};

pub(super) fn default_decision(_req: &PolicyRequest) -> Decision {
    Decision::Forward(Forward::to_default_pool())
}
