//! `cache-policy`: for the cache integration tests (`tests/tests/cache.rs`). Forwards every
//! request to the default pool and sets the decision's cache fields from request headers:
//!
//! | request header        | decision |
//! |-----------------------|----------|
//! | `x-cache-key: K`      | `.cache_key(K)` (replaces the default key) |
//! | `x-cache-bypass: 1`   | `.no_cache()` (no lookup, no store) |
//! | `x-cache-ttl: N`      | `.ttl(N)` (freshness lifetime `N` seconds; ignored unless `N` parses as a `u32`) |
//! | `x-cache-tags: a,b`   | `.cache_tag("a").cache_tag("b")` (comma-separated, trimmed, empty items skipped) |
//!
//! A request with none of them gets a plain `Decision::forward_default()`.

use sluice_sdk::prelude::*;

#[sluice_sdk::policy]
fn decide(req: &Request) -> Decision {
    let mut decision = Decision::forward_default();
    if let Some(key) = req.header("x-cache-key") {
        decision = decision.cache_key(key);
    }
    if req.header("x-cache-bypass").as_deref() == Some(b"1".as_slice()) {
        decision = decision.no_cache();
    }
    if let Some(ttl) = req
        .header_str("x-cache-ttl")
        .and_then(|v| v.trim().parse::<u32>().ok())
    {
        decision = decision.ttl(ttl);
    }
    if let Some(tags) = req.header_str("x-cache-tags") {
        for tag in tags.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            decision = decision.cache_tag(tag);
        }
    }
    decision
}
