//! The host's pools and load balancing, as the host sees them at the moment of the call.
//!
//! - [`Algorithm`]: the host's load-balancing algorithms, for [`pick`] and
//!   [`Decision::algorithm`](crate::Decision::algorithm).
//! - [`pick`] / [`pick_with_key`]: let the host choose an endpoint now, without forwarding.
//! - [`endpoints`]: every endpoint of a pool with its live state (health, requests in flight,
//!   latency), for policies that run their own algorithm.
//!
//! Which endpoints an algorithm may pick: those neither failing active health checks nor
//! ejected by outlier detection, and not at their in-flight limit. In *panic mode* (fewer than
//! the pool's `panic_threshold` of its endpoints healthy) every endpoint becomes eligible, as
//! in Envoy, so a pick can return an unhealthy endpoint: to know whether a pool has a healthy
//! endpoint, look at [`Endpoint::healthy`].

use std::fmt;
use std::str::FromStr;

use crate::__bindings::balancer as raw;
use crate::__bindings::types;

/// A load-balancing algorithm of the host: how it picks one endpoint of a pool.
///
/// Every pool has one in the host's config (`algorithm = "..."` in its `[[pool]]`, by the
/// names of [`name`](Self::name)); a policy can ask for another per request with
/// [`Decision::algorithm`](crate::Decision::algorithm) or per pick with [`pick`].
///
/// # Example
/// ```no_run
/// use sluice_sdk::prelude::*;
///
/// fn decide(req: &Request) -> Decision {
///     if req.path().starts_with("/cart/") {
///         // Keep a cart on one endpoint.
///         let cart = req.cookie("cart").unwrap_or_default();
///         return Decision::forward("shop").algorithm(Algorithm::Maglev).hash_key(cart);
///     }
///     Decision::forward("shop").algorithm(Algorithm::LeastRequest)
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Each eligible endpoint in turn, ignoring weights.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// let next = balancer::pick("web", Some(Algorithm::RoundRobin), None);
    /// ```
    RoundRobin,
    /// nginx's smooth weighted round robin: in proportion to weight, interleaved (weights 5, 1,
    /// 1 give `a a b a c a a`).
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// let d = Decision::forward("web").algorithm(Algorithm::WeightedRoundRobin);
    /// ```
    WeightedRoundRobin,
    /// Fewest in-flight requests relative to weight, over every eligible endpoint (like nginx
    /// `least_conn`).
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// // Long-lived downloads: balance by what is open now.
    /// let d = Decision::forward("downloads").algorithm(Algorithm::LeastConnections);
    /// ```
    LeastConnections,
    /// Power of two choices: two random eligible endpoints, the one with fewer in-flight
    /// requests relative to weight wins.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// let d = Decision::forward("api").algorithm(Algorithm::LeastRequest);
    /// ```
    LeastRequest,
    /// Power of two choices on peak-EWMA response latency × (in-flight + 1); an endpoint that
    /// answered 429 or 503 with `Retry-After` loses until that time has passed.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// let d = Decision::forward("search").algorithm(Algorithm::LeastResponseTime);
    /// ```
    LeastResponseTime,
    /// Weighted random.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// let d = Decision::forward("batch").algorithm(Algorithm::Random);
    /// ```
    Random,
    /// A hash of the client IP over the configured endpoints (like nginx `ip_hash`): a client
    /// keeps its endpoint while the pool is unchanged. Ignores the hash key.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// let d = Decision::forward("legacy").algorithm(Algorithm::IpHash);
    /// ```
    IpHash,
    /// Ketama-style consistent hash ring, weighted, optionally with bounded load: a key keeps
    /// its endpoint while the pool is unchanged, and a pool change moves only the keys of the
    /// endpoints added or removed. The key is the hash key, or the client IP without one. What
    /// a hash key uses unless another keyed algorithm is named.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// # fn f(req: &Request) -> Decision {
    /// Decision::forward("app").algorithm(Algorithm::RingHash).hash_key(req.client_ip())
    /// # }
    /// ```
    RingHash,
    /// Maglev consistent hashing (a prime-sized lookup table): faster lookups and a more even
    /// spread than [`RingHash`](Self::RingHash); slightly more keys move when the pool changes.
    /// The key is the hash key, or the client IP without one.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// let owner = balancer::pick("cache", Some(Algorithm::Maglev), Some(b"/video/42"));
    /// ```
    Maglev,
}

impl Algorithm {
    /// Every algorithm, in the order of the WIT enum.
    ///
    /// ```
    /// # use sluice_sdk::Algorithm;
    /// assert_eq!(Algorithm::ALL.len(), 9);
    /// ```
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RoundRobin,
        Algorithm::WeightedRoundRobin,
        Algorithm::LeastConnections,
        Algorithm::LeastRequest,
        Algorithm::LeastResponseTime,
        Algorithm::Random,
        Algorithm::IpHash,
        Algorithm::RingHash,
        Algorithm::Maglev,
    ];

    /// The name the host's config uses for it (`round_robin`, `ring_hash`, ...), which is also
    /// how [`Display`](fmt::Display) shows it and what `sluice policy test` prints.
    ///
    /// ```
    /// # use sluice_sdk::Algorithm;
    /// assert_eq!(Algorithm::LeastResponseTime.name(), "least_response_time");
    /// assert_eq!(Algorithm::RingHash.to_string(), "ring_hash");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::WeightedRoundRobin => "weighted_round_robin",
            Algorithm::LeastConnections => "least_connections",
            Algorithm::LeastRequest => "least_request",
            Algorithm::LeastResponseTime => "least_response_time",
            Algorithm::Random => "random",
            Algorithm::IpHash => "ip_hash",
            Algorithm::RingHash => "ring_hash",
            Algorithm::Maglev => "maglev",
        }
    }

    /// Whether it chooses by a key (the hash key, or the client IP for
    /// [`IpHash`](Self::IpHash)) rather than by load. With a hash key, the host replaces an
    /// algorithm that is not keyed by [`RingHash`](Self::RingHash).
    ///
    /// ```
    /// # use sluice_sdk::Algorithm;
    /// assert!(Algorithm::Maglev.is_keyed());
    /// assert!(!Algorithm::LeastRequest.is_keyed());
    /// ```
    pub fn is_keyed(self) -> bool {
        matches!(
            self,
            Algorithm::IpHash | Algorithm::RingHash | Algorithm::Maglev
        )
    }

    pub(crate) fn to_raw(self) -> types::Algorithm {
        match self {
            Algorithm::RoundRobin => types::Algorithm::RoundRobin,
            Algorithm::WeightedRoundRobin => types::Algorithm::WeightedRoundRobin,
            Algorithm::LeastConnections => types::Algorithm::LeastConnections,
            Algorithm::LeastRequest => types::Algorithm::LeastRequest,
            Algorithm::LeastResponseTime => types::Algorithm::LeastResponseTime,
            Algorithm::Random => types::Algorithm::Random,
            Algorithm::IpHash => types::Algorithm::IpHash,
            Algorithm::RingHash => types::Algorithm::RingHash,
            Algorithm::Maglev => types::Algorithm::Maglev,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An algorithm name that [`Algorithm::from_str`] does not know.
///
/// # Example
/// ```
/// # use sluice_sdk::Algorithm;
/// let e = "fastest".parse::<Algorithm>().unwrap_err();
/// assert!(e.to_string().starts_with("unknown algorithm `fastest`"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownAlgorithm(
    /// The name that was not recognised.
    ///
    /// ```
    /// # use sluice_sdk::Algorithm;
    /// assert_eq!("x".parse::<Algorithm>().unwrap_err().0, "x");
    /// ```
    pub String,
);

impl fmt::Display for UnknownAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
        write!(
            f,
            "unknown algorithm `{}` (expected one of {})",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownAlgorithm {}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    /// Parses a [`name`](Algorithm::name), also accepting `-` for `_` (the WIT spelling,
    /// `ring-hash`) and any case; so an algorithm can be a setting read with
    /// [`config::get_parsed`](crate::config::get_parsed).
    ///
    /// ```
    /// # use sluice_sdk::Algorithm;
    /// assert_eq!("ring_hash".parse(), Ok(Algorithm::RingHash));
    /// assert_eq!("Least-Request".parse(), Ok(Algorithm::LeastRequest));
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim().to_ascii_lowercase().replace('-', "_");
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

/// One endpoint of a pool, as returned by [`endpoints`]: its live state at the time of the
/// call.
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
    /// Whether it is healthy: neither failing active health checks nor ejected by outlier
    /// detection (always true without either). [`health::status`](crate::health::status)
    /// tells which of the two an unhealthy endpoint is. In panic mode the host sends traffic
    /// to unhealthy endpoints too; this stays false for them.
    ///
    /// ```no_run
    /// # use sluice_sdk::balancer;
    /// let any_up = balancer::endpoints("web").iter().any(|e| e.healthy);
    /// ```
    pub healthy: bool,
    /// Requests the host has sent to it that have not finished yet.
    ///
    /// ```no_run
    /// # use sluice_sdk::balancer;
    /// let busy = balancer::endpoints("web").iter().filter(|e| e.in_flight > 100).count();
    /// ```
    pub in_flight: u32,
    /// Peak-EWMA of its response-head latency (request sent to response head received), in
    /// microseconds: a slower response raises it at once, faster ones pull it down over about
    /// ten seconds. 0 before the first response.
    ///
    /// ```no_run
    /// # use sluice_sdk::balancer;
    /// let slow = balancer::endpoints("web").iter().any(|e| e.ewma_latency_us > 250_000);
    /// ```
    pub ewma_latency_us: u32,
}

/// Picks an endpoint of `pool` the way the host would for
/// `Decision::forward(pool)` with the same [`algorithm`](crate::Decision::algorithm) and
/// [`hash_key`](crate::Decision::hash_key): with `algorithm`, or the pool's configured one when
/// `None`; with a `hash_key`, by weighted consistent hashing of the key (ring hash, unless
/// `algorithm` or the pool names [`Algorithm::Maglev`]; [`Algorithm::IpHash`] hashes the
/// client IP).
///
/// `None` when the pool is unknown or no endpoint is eligible. In panic mode every endpoint is
/// eligible, so the endpoint returned may be unhealthy; check [`endpoints`] to find out
/// whether any is healthy.
///
/// # Example
/// ```no_run
/// # use sluice_sdk::prelude::*;
/// fn decide(req: &Request) -> Decision {
///     let key = req.cookie("session").unwrap_or_default();
///     match balancer::pick("app", Some(Algorithm::Maglev), Some(key.as_bytes())) {
///         Some(addr) => Decision::forward("app")
///             .endpoint(&addr)
///             .set_request_header("x-picked", addr),
///         None => Decision::forward("fallback"),
///     }
/// }
/// ```
pub fn pick(pool: &str, algorithm: Option<Algorithm>, hash_key: Option<&[u8]>) -> Option<String> {
    raw::pick(pool, algorithm.map(Algorithm::to_raw), hash_key)
}

/// [`pick`] by a hash key with the pool's algorithm (the ring hash unless the pool is
/// configured with another keyed one): the endpoint
/// `Decision::forward(pool).hash_key(key)` goes to.
///
/// # Example
/// ```no_run
/// # use sluice_sdk::prelude::*;
/// fn decide(req: &Request) -> Decision {
///     let tenant = req.header_str("x-tenant").unwrap_or_default();
///     match balancer::pick_with_key("app", &tenant) {
///         Some(addr) => Decision::forward("app").endpoint(addr),
///         None => Decision::respond(503, "no endpoint for this tenant\n"),
///     }
/// }
/// ```
pub fn pick_with_key(pool: &str, key: impl AsRef<[u8]>) -> Option<String> {
    pick(pool, None, Some(key.as_ref()))
}

/// Every endpoint of `pool` in config order, with its live state; empty when the pool is
/// unknown.
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
            in_flight: e.in_flight,
            ewma_latency_us: e.ewma_latency_us,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        for a in Algorithm::ALL {
            assert_eq!(a.name().parse(), Ok(a));
            assert_eq!(a.name().replace('_', "-").parse(), Ok(a));
        }
        let mut names: Vec<_> = Algorithm::ALL.iter().map(|a| a.name()).collect();
        names.dedup();
        assert_eq!(names.len(), Algorithm::ALL.len());
        assert_eq!(
            "nope".parse::<Algorithm>().unwrap_err().to_string(),
            "unknown algorithm `nope` (expected one of round_robin, weighted_round_robin, \
             least_connections, least_request, least_response_time, random, ip_hash, \
             ring_hash, maglev)"
        );
    }

    #[test]
    fn raw_values_follow_the_wit_order() {
        for (i, a) in Algorithm::ALL.into_iter().enumerate() {
            assert_eq!(a.to_raw() as usize, i);
        }
    }
}
