//! Sends a stable share of clients to the `canary` pool and the rest to `stable`.
//!
//! A client is in the canary when `fnv1a_32(client IP) % 100 < percent`, so the same client
//! always gets the same answer, or always when it sends `x-canary: always` or the cookie
//! `canary=always`. Canary responses carry `x-canary: 1` and are never cached (so a cached
//! canary page is never served to a stable client and vice versa).
//!
//! Settings: `percent` (0..=100, default 5), `canary_pool` (default `canary`), `stable_pool`
//! (default `stable`).

use sluice_sdk::prelude::*;

#[sluice_sdk::policy]
fn decide(req: &Request) -> Decision {
    if in_canary(req) {
        Decision::forward(config::get_or("canary_pool", "canary"))
            .no_cache()
            .set_response_header("x-canary", "1")
    } else {
        Decision::forward(config::get_or("stable_pool", "stable"))
    }
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
    fn buckets_are_below_100() {
        assert!(bucket("192.0.2.7") < 100);
        assert_eq!(bucket("127.0.0.1"), fnv1a_32(b"127.0.0.1") % 100);
    }
}
