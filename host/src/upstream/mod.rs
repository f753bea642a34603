//! Upstream endpoints and pools: the layer below the proxy, health checks, the policy
//! runtime and the admin API, which all use it; it imports none of them (only `balance`,
//! `config` and its own files).
//!
//! - `pool.rs`: [`Endpoint`], [`Pool`] (endpoints + `balance::Set` + balancers), [`Pools`] (one
//!   config generation), [`PoolTable`] (the current generation), retry permits.
//! - `connection.rs`: dialling (TCP/TLS/ALPN), h1 idle-connection reuse, shared h2 connection.
//! - `body.rs`: [`RequestBody`], the body sent upstream (size limit, replay buffer).
//! - `health_state.rs`: [`EndpointHealth`], each endpoint's health counters and record.

pub mod body;
pub mod connection;
mod health_state;
mod pool;

pub use body::RequestBody;
pub use health_state::{CheckResult, EndpointHealth, Record};
pub use pool::{Endpoint, Pool, PoolError, PoolTable, Pools, RetryPermit};

use crate::balance::{Algorithm, HealthState};
use std::sync::Arc;

/// One endpoint as the guest's `balancer.endpoints` reports it: live state at the moment of
/// the call.
#[derive(Debug, Clone)]
pub struct EndpointInfo {
    pub addr: Arc<str>,
    pub weight: u32,
    /// Neither failing active checks nor ejected (the endpoint's own state; panic mode aside).
    pub healthy: bool,
    pub state: HealthState,
    /// Requests in flight to it now.
    pub in_flight: u32,
    /// Peak-EWMA response-head latency in microseconds; 0 before the first response.
    pub ewma_latency_us: u32,
}

/// What the host knows about upstreams, offered to guests through the `balancer` and
/// `health` imports and used to check a decision's target. Implemented by [`PoolTable`];
/// `sluice policy test` has its own.
pub trait Upstreams: Send + Sync + 'static {
    /// Picks an eligible endpoint of `pool` (`None`: the default pool) with `algorithm`, or the
    /// pool's algorithm when `None` (the ring hash when a `hash_key` is given and the pool's
    /// algorithm is not keyed). `client` feeds IP hash. `None` when the pool is unknown or
    /// nothing is eligible.
    fn pick(
        &self,
        pool: Option<&str>,
        algorithm: Option<Algorithm>,
        hash_key: Option<&[u8]>,
        client: std::net::IpAddr,
    ) -> Option<Arc<str>>;
    /// The endpoints of `pool` in config order; `None` if there is no such pool.
    fn endpoints(&self, pool: &str) -> Option<Vec<EndpointInfo>>;
    /// The health of endpoint `addr` of `pool`; `None` if there is no such endpoint.
    fn health(&self, pool: &str, addr: &str) -> Option<HealthState>;
    /// Whether `pool` exists and, when given, `endpoint` is one of its endpoints; the error
    /// says which part is wrong.
    fn check_target(&self, pool: Option<&str>, endpoint: Option<&str>) -> Result<(), String>;
}

/// `a: b: c` from an error and its sources.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
