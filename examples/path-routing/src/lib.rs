//! Routes by path prefix: `/api/` to the API pool (never cached), `/static/` to the static
//! pool (cached for a day), everything else to the default pool.
//!
//! Settings: `api_pool` (default `api`), `static_pool` (default `static`).

use sluice_sdk::prelude::*;

/// One day, in seconds.
const STATIC_TTL: u32 = 86_400;

#[sluice_sdk::policy]
fn decide(req: &Request) -> Decision {
    let path = req.path();
    if path.starts_with("/api/") {
        Decision::forward(config::get_or("api_pool", "api")).no_cache()
    } else if path.starts_with("/static/") {
        Decision::forward(config::get_or("static_pool", "static")).ttl(STATIC_TTL)
    } else {
        Decision::forward_default()
    }
}
