//! The default policy written in Rust and run natively: the same decision as
//! `examples/default-policy` (forward to the default pool, cache key = method, scheme,
//! authority, path and sorted query, formatted as `sluice-sdk`'s `default_cache_key`). It exists
//! to measure what running the policy in Wasm costs (`policy.native = true`, see
//! `bench/RESULTS.md`); a test checks both make the same decision.

use super::{CachePolicy, Decision, Forward, PolicyRequest};

pub(super) fn default_decision(req: &PolicyRequest) -> Decision {
    let uri = &req.parts.uri;
    let authority = req
        .authority
        .as_ref()
        .map(|a| a.as_str().to_ascii_lowercase())
        .unwrap_or_default();
    let path = if uri.path().is_empty() {
        "/"
    } else {
        uri.path()
    };
    let scheme = if req.tls { "https" } else { "http" };
    let mut key = format!("{} {scheme}://{authority}{path}", req.parts.method);
    if let Some(q) = uri.query() {
        let mut pairs: Vec<(&str, &str, &str)> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (n, v) = p.split_once('=').unwrap_or((p, ""));
                (n, v, p)
            })
            .collect();
        pairs.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        if !pairs.is_empty() {
            key.push('?');
            let joined: Vec<&str> = pairs.iter().map(|p| p.2).collect();
            key.push_str(&joined.join("&"));
        }
    }
    Decision::Forward(Forward {
        cache: CachePolicy {
            key: Some(key.into_bytes()),
            ..CachePolicy::default()
        },
        ..Forward::to_default_pool()
    })
}
