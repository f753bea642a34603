//! The policy sluice runs when the config names none: every request goes to the default pool
//! (`proxy.default_pool`), cached (when `[cache]` is configured) under the host's default key,
//! the normalised URL (see [`Request::default_cache_key`]).

use sluice_sdk::prelude::*;

#[sluice_sdk::policy]
fn decide(_req: &Request) -> Decision {
    Decision::forward_default()
}
