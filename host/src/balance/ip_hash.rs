//! Client-IP hash, after nginx's `ip_hash` (`ngx_http_upstream_get_ip_hash_peer` in
//! `src/http/modules/ngx_http_upstream_ip_hash_module.c`): the same client address goes to
//! the same endpoint while it is eligible.
//!
//! The hash is [`super::key_hash`]'s function of the client IP alone (FNV-1a of the address
//! bytes, then `mix64`); the request's hash key is ignored, which is the difference from the
//! ring hash and Maglev. (nginx hashes only the first three octets of an IPv4 address; this
//! hashes the whole address, IPv4 or IPv6.) The hash is mapped over the *configured*
//! endpoints by weight: `h mod sum(weights)` located in the prefix sums of the weights. If
//! that endpoint is ineligible the hash is re-mixed (`h = mix64(h + attempt)`) and located
//! again, up to 20 times as nginx does, then the first eligible endpoint after the last
//! candidate is taken. Because the mapping is over the configured endpoints, a client whose
//! endpoint is up never moves when another endpoint goes down or comes back; only the
//! clients of an ineligible endpoint move, and they spread over the others by weight. (Adding
//! or removing an endpoint from the configuration moves most clients, as in nginx; use the
//! ring hash or Maglev for consistent hashing.)
//!
//! A request without a client address (e.g. a Unix socket listener) gets round robin.
//!
//! Cost: one hash of 4 or 16 bytes and an O(log n) search; no lock, no allocation.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::common::WeightPrefix;
use super::{Balance, Ctx, FNV_OFFSET, Set, fnv1a, mix64};

/// Re-mixes of the hash before the scan fallback (nginx's limit).
const REHASHES: u64 = 20;

/// Client-IP hash over the configured endpoints; see the module documentation.
#[derive(Debug)]
pub struct IpHash {
    prefix: WeightPrefix,
    /// Round-robin cursor for requests without a client address.
    cursor: AtomicUsize,
}

impl IpHash {
    pub fn new(set: &Set) -> IpHash {
        IpHash {
            prefix: WeightPrefix::new(set),
            cursor: AtomicUsize::new(0),
        }
    }
}

/// [`super::key_hash`] of a request with this client address and no hash key.
fn client_hash(ip: IpAddr) -> u64 {
    let h = match ip {
        IpAddr::V4(ip) => fnv1a(&ip.octets(), FNV_OFFSET),
        IpAddr::V6(ip) => fnv1a(&ip.octets(), FNV_OFFSET),
    };
    mix64(h)
}

impl Balance for IpHash {
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize> {
        let n = set.len();
        if n == 0 {
            return None;
        }
        let (Some(ip), true) = (cx.client, self.prefix.len() == n) else {
            // No address (or a Set other than the one this was built for): round robin.
            let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
            return set.scan_from(start, cx);
        };
        let total = self.prefix.total();
        let mut h = client_hash(ip);
        let mut i = self.prefix.locate(h % total);
        for attempt in 1..=REHASHES {
            if set.eligible(i, cx) {
                return Some(i);
            }
            h = mix64(h.wrapping_add(attempt));
            i = self.prefix.locate(h % total);
        }
        // The last candidate first, then the next eligible one.
        set.scan_from(i, cx)
    }
}
