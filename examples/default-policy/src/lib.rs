//! The policy sluice runs when the config names none: every request goes to the default pool
//! (`proxy.default_pool`), cached under the SDK's standard key
//! ([`Request::default_cache_key`]): method, scheme, authority, path and sorted query.

use sluice_sdk::prelude::*;

#[sluice_sdk::policy]
fn decide(req: &Request) -> Decision {
    Decision::forward_default().cache_key(req.default_cache_key())
}
