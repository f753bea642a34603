//! Sends a stable share of clients to the `canary` pool and the rest to `stable`.
//!
//! A client is in the canary when `fnv1a_32(client IP) % 100 < percent`, so the same client
//! always gets the same answer, or always when it sends `x-canary: always` or the cookie
//! `canary=always`. Canary responses carry `x-canary: 1` and are never cached (so a cached
//! canary page is never served to a stable client and vice versa).
//!
//! When the canary pool has no healthy endpoint (all failing their health checks or ejected by
//! outlier detection, or the pool is unknown), canary clients go to the stable pool too, with
//! `x-canary: fallback` on the response, instead of to a canary the host would only reach in
//! panic mode.
//!
//! Settings: `percent` (0..=100, default 5), `canary_pool` (default `canary`), `stable_pool`
//! (default `stable`).

use sluice_sdk::prelude::*;

#[sluice_sdk::policy]
fn decide(req: &Request) -> Decision {
    let stable = || Decision::forward(config::get_or("stable_pool", "stable"));
    if !in_canary(req) {
        return stable();
    }
    let canary_pool = config::get_or("canary_pool", "canary");
    if !any_healthy(&balancer::endpoints(&canary_pool)) {
        return stable().set_response_header("x-canary", "fallback");
    }
    Decision::forward(canary_pool)
        .no_cache()
        .set_response_header("x-canary", "1")
}

/// Whether any endpoint is healthy. In panic mode the host would still send the canary's
/// traffic to its unhealthy endpoints, so `balancer::pick` cannot tell; `healthy` can.
fn any_healthy(endpoints: &[balancer::Endpoint]) -> bool {
    endpoints.iter().any(|e| e.healthy)
}

fn in_canary(req: &Request) -> bool {
    let forced = req.header("x-canary").as_deref() == Some(b"always")
        || req.cookie("canary").as_deref() == Some("always");
    let percent: u32 = config::get_parsed("percent")
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or(5);
    forced || bucket(req.client_ip()) < percent
}

/// The client's bucket, 0..100.
fn bucket(client_ip: &str) -> u32 {
    fnv1a_32(client_ip.as_bytes()) % 100
}

/// 32-bit FNV-1a (Fowler, Noll, Vo; <http://www.isthe.com/chongo/tech/comp/fnv/>,
/// draft-eastlake-fnv): small, stable across platforms and releases, good enough to spread
/// IP addresses over buckets. Not a defence against clients choosing their bucket.
fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_32_reference_values() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn a_pool_needs_one_healthy_endpoint() {
        let ep = |healthy| balancer::Endpoint {
            addr: "127.0.0.1:9101".into(),
            weight: 1,
            healthy,
            in_flight: 0,
            ewma_latency_us: 0,
        };
        assert!(any_healthy(&[ep(false), ep(true)]));
        assert!(!any_healthy(&[ep(false), ep(false)]));
        assert!(!any_healthy(&[]));
    }

    #[test]
    fn buckets_are_below_100() {
        assert!(bucket("192.0.2.7") < 100);
        assert_eq!(bucket("127.0.0.1"), fnv1a_32(b"127.0.0.1") % 100);
    }
}
