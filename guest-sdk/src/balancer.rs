//! The host's pools and load balancing, as the host sees them at the moment of the call.

use crate::__bindings::balancer as raw;

/// One endpoint of a pool, as returned by [`endpoints`].
///
/// # Example
/// ```no_run
/// # use sluice_sdk::balancer::{self, Endpoint};
/// let healthy: Vec<Endpoint> = balancer::endpoints("web").into_iter().filter(|e| e.healthy).collect();
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` as written in the host's config.
    ///
    /// ```no_run
    /// # let e = sluice_sdk::balancer::endpoints("web").remove(0);
    /// println!("{}", e.addr);
    /// ```
    pub addr: String,
    /// The endpoint's weight in its pool (1 unless configured).
    ///
    /// ```no_run
    /// # use sluice_sdk::balancer;
    /// let total: u32 = balancer::endpoints("web").iter().map(|e| e.weight).sum();
    /// ```
    pub weight: u32,
    /// Whether the host would send traffic to it (always true without health checks).
    ///
    /// ```no_run
    /// # use sluice_sdk::balancer;
    /// let any_up = balancer::endpoints("web").iter().any(|e| e.healthy);
    /// ```
    pub healthy: bool,
}

/// Picks an endpoint of `pool` the way the host would: with `hash_key` by weighted consistent
/// hashing (the same choice [`Decision::hash_key`](crate::Decision::hash_key) makes), otherwise
/// with the pool's algorithm. `None` when the pool is unknown or has no healthy endpoint.
///
/// # Example
/// ```no_run
/// # use sluice_sdk::prelude::*;
/// fn decide(req: &Request) -> Decision {
///     let key = req.cookie("session").unwrap_or_default();
///     match balancer::pick("app", Some(key.as_bytes())) {
///         Some(addr) => Decision::forward("app").endpoint(addr),
///         None => Decision::forward("fallback"),
///     }
/// }
/// ```
pub fn pick(pool: &str, hash_key: Option<&[u8]>) -> Option<String> {
    raw::pick(pool, hash_key)
}

/// Every endpoint of `pool` in config order; empty when the pool is unknown.
///
/// # Example
/// ```no_run
/// # use sluice_sdk::prelude::*;
/// fn decide(_req: &Request) -> Decision {
///     if balancer::endpoints("primary").iter().any(|e| e.healthy) {
///         Decision::forward("primary")
///     } else {
///         Decision::forward("backup")
///     }
/// }
/// ```
pub fn endpoints(pool: &str) -> Vec<Endpoint> {
    raw::endpoints(pool)
        .into_iter()
        .map(|e| Endpoint {
            addr: e.addr,
            weight: e.weight,
            healthy: e.healthy,
        })
        .collect()
}
