//! Write [sluice](https://example.invalid/sluice) routing policies in Rust.
//!
//! A policy is a WebAssembly component with one function: for every request the proxy calls
//! it with the [`Request`] and it answers with a [`Decision`]: forward the request to a pool
//! (with a hash key, cache policy, header edits, a rewrite) or respond locally.
//!
//! ```no_run
//! use sluice_sdk::prelude::*;
//!
//! #[sluice_sdk::policy]
//! fn decide(req: &Request) -> Decision {
//!     if req.path().starts_with("/api/") {
//!         return Decision::forward("api").hash_key(req.client_ip()).no_cache();
//!     }
//!     Decision::forward("web").cache_key(req.method_path_sorted_query()).ttl(60)
//! }
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip2`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! sluice-sdk = { path = "../guest-sdk" }
//! ```
//!
//! ```sh
//! cargo build --target wasm32-wasip2 --release   # -> target/wasm32-wasip2/release/<name>.wasm
//! ```
//!
//! What the host gives a policy besides the request: [`balancer`] (its pools, its
//! load-balancing [`Algorithm`]s and each endpoint's live state), [`health`] (each endpoint's
//! health-check and outlier-detection state), [`cache`] (look at and purge the host's HTTP
//! cache), [`config`] (the policy's settings from the host's config) and [`log`]. Nothing
//! else: no filesystem, network, clock, randomness or environment. Do not rely on global state
//! between requests: an instance serves several requests, but which one serves a request is
//! not specified.
//!
//! A policy can also act on the response: name a function with `#[policy(on_response = f)]`
//! and the host calls `f(&Request, &Response) -> ResponseDecision` with every response head to
//! a request `decide` forwarded (from the upstream or the cache), before it is served: edit
//! its headers, change whether and how long it is stored, or answer with something else.
//!
//! ```no_run
//! use sluice_sdk::prelude::*;
//!
//! #[sluice_sdk::policy(on_response = pages)]
//! fn decide(_req: &Request) -> Decision {
//!     Decision::forward_default()
//! }
//!
//! fn pages(_req: &Request, resp: &Response) -> ResponseDecision {
//!     if resp.status() >= 500 {
//!         return ResponseDecision::respond(503, "<h1>Back soon</h1>")
//!             .header("content-type", "text/html");
//!     }
//!     ResponseDecision::serve().set_header("x-frame-options", "DENY")
//! }
//! ```
//!
//! This is `sluice-sdk` 0.3.0, for the WIT package `sluice:policy@0.3.0`; a host refuses at
//! load a component built with an SDK for a version it does not implement, naming both.
//! Hosts since 0.3 still load policies built with sluice-sdk 0.2.
//!
//! A panic is logged through the host's log at error level (the SDK installs a panic hook),
//! then traps; the host answers per its `fail` setting (forward to the default pool, or 503).
//!
//! The crate also compiles for native targets, where the host functions are stubs that panic
//! if called: policies can be type-checked, linted and unit-tested natively (the pure parts,
//! such as the [`Decision`] builders), but run only inside the host.
#![deny(missing_docs)]

// wit-bindgen's generated code names this crate by its external name.
extern crate self as sluice_sdk;

#[doc(hidden)]
#[path = "bindings.rs"]
pub mod __bindings;

pub mod balancer;
pub mod cache;
pub mod config;
mod decision;
pub mod health;
pub mod log;
mod request;
mod response;

pub use balancer::Algorithm;
pub use decision::Decision;
pub use health::HealthState;
pub use request::{Header, Request};
pub use response::{Response, ResponseDecision, Source};

/// Exports a function as the policy's `decide`, and with `on_response = f` the function `f`
/// as its `on-response`.
///
/// The function takes `&Request` and returns [`Decision`]; its name does not matter. `f` takes
/// `(&Request, &Response)` and returns [`ResponseDecision`]. Put the attribute on exactly one
/// function of the crate (a `cdylib`). The functions stay ordinary functions that other code
/// can call. Without `on_response` the component does not export `on-response`, and the host
/// calls nothing per response.
///
/// The attribute refers to this crate as `::sluice_sdk`, so depend on it under that name. The
/// export glue it generates is `unsafe` (as all component exports are) under an
/// `#[allow(unsafe_code)]`, so it works in crates that `deny(unsafe_code)` but not in crates
/// that `forbid` it.
///
/// # Example
/// ```no_run
/// use sluice_sdk::prelude::*;
///
/// #[sluice_sdk::policy]
/// fn route(req: &Request) -> Decision {
///     match req.host() {
///         "static.example.com" => Decision::forward("static").ttl(86_400),
///         _ => Decision::forward_default(),
///     }
/// }
/// ```
pub use sluice_sdk_macros::policy;

/// Everything a typical policy uses: `use sluice_sdk::prelude::*;`.
///
/// Brings in [`Request`], [`Decision`], [`Header`], [`Algorithm`], [`HealthState`] and the
/// [`balancer`], [`cache`], [`config`], [`health`] and [`log`] modules.
///
/// # Example
/// ```no_run
/// use sluice_sdk::prelude::*;
///
/// fn decide(_req: &Request) -> Decision {
///     log::debug("default route");
///     Decision::forward(config::get_or("pool", "web")).algorithm(Algorithm::LeastRequest)
/// }
/// ```
pub mod prelude {
    pub use crate::{
        Algorithm, Decision, Header, HealthState, Request, Response, ResponseDecision, Source,
        balancer, cache, config, health, log,
    };
}
