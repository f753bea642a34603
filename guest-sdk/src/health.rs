//! The health of the host's endpoints, as its active health checks and passive outlier
//! detection see them at the moment of the call.
//!
//! [`balancer::endpoints`](crate::balancer::endpoints) already says whether each endpoint is
//! healthy; [`status`] says, for one endpoint, why it is not.

use crate::__bindings::health as raw;

/// One endpoint's health, as returned by [`status`].
///
/// # Example
/// ```no_run
/// use sluice_sdk::prelude::*;
///
/// fn decide(req: &Request) -> Decision {
///     let Some(addr) = req.header_str("x-debug-endpoint") else {
///         return Decision::forward("web");
///     };
///     match health::status("web", &addr) {
///         Some(HealthState::Healthy) => Decision::forward("web").endpoint(addr),
///         Some(state) => Decision::respond(503, format!("{addr} is {state:?}\n")),
///         None => Decision::respond(404, format!("{addr} is not in pool web\n")),
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// Neither failing active health checks nor ejected: receives traffic.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// let up = health::status("web", "10.0.0.1:80") == Some(HealthState::Healthy);
    /// ```
    Healthy,
    /// Failing its active health checks (the pool's `health_check`): receives no traffic
    /// until enough checks pass again, except in panic mode.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// let down = health::status("web", "10.0.0.1:80") == Some(HealthState::Unhealthy);
    /// ```
    Unhealthy,
    /// Ejected by passive outlier detection (too many errors or failed connections on real
    /// requests) and not failing active checks: receives no traffic until the ejection ends,
    /// except in panic mode.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// if health::status("web", "10.0.0.1:80") == Some(HealthState::Ejected) {
    ///     log::warn("10.0.0.1:80 is ejected");
    /// }
    /// ```
    Ejected,
}

impl HealthState {
    /// Whether this is [`Healthy`](Self::Healthy).
    ///
    /// ```
    /// # use sluice_sdk::prelude::*;
    /// assert!(HealthState::Healthy.is_healthy());
    /// assert!(!HealthState::Ejected.is_healthy());
    /// ```
    pub fn is_healthy(self) -> bool {
        self == HealthState::Healthy
    }
}

/// The health of endpoint `addr` (`host:port` as in
/// [`Endpoint::addr`](crate::balancer::Endpoint::addr)) of `pool`; `None` when there is no
/// such pool or the pool has no such endpoint.
///
/// # Example
/// ```no_run
/// use sluice_sdk::prelude::*;
///
/// fn decide(_req: &Request) -> Decision {
///     // Pin to the primary while it passes its checks, even if outlier detection ejected it.
///     match health::status("db-api", "10.0.0.10:8080") {
///         Some(HealthState::Healthy | HealthState::Ejected) => {
///             Decision::forward("db-api").endpoint("10.0.0.10:8080")
///         }
///         _ => Decision::forward("db-api"),
///     }
/// }
/// ```
pub fn status(pool: &str, addr: &str) -> Option<HealthState> {
    Some(match raw::status(pool, addr)? {
        raw::State::Healthy => HealthState::Healthy,
        raw::State::Unhealthy => HealthState::Unhealthy,
        raw::State::Ejected => HealthState::Ejected,
    })
}
