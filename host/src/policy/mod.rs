//! The Wasm policy runtime: compiles policy components, runs their `decide` export once per
//! request under a CPU deadline and a memory cap, and swaps revisions without a restart.
//!
//! `policy/` never touches a socket and is the only module that names a wasmtime type: the
//! proxy hands it a [`PolicyRequest`] and gets back a [`Verdict`] made of plain Rust values
//! ([`Decision`]). What the host offers guests about upstreams comes in through the
//! [`Upstreams`] trait (defined with the pools, in `upstream/`); the guests' `cache` import reads and
//! purges the host's [`crate::cache::Cache`] (a store with no socket or proxy type in it),
//! when [`PolicyRuntime::with_cache`] is given one.
//!
//! - `engine.rs`: the one process-wide wasmtime `Engine` (pooling allocator, copy-on-write
//!   memory images, epoch ticker, on-disk cache of compiled artifacts).
//! - `revision.rs`: one loaded component: import checks, pre-instantiation, the per-request
//!   call (fresh instance or bounded reuse) and failure classification.
//! - `store.rs`: the store's data; `host.rs`: the host side of the WIT imports on it.
//! - `decision.rs`: the guest's decision checked and converted to host types.
//! - `wasi.rs`: the WASI a guest gets (clocks, random, stdio to the log; no files or sockets).
//! - `runtime.rs`: the active revision, history, hot swap, rollback and status.
//! - `watch.rs`: reload when the module file changes.

mod bindings;
mod decision;
pub mod engine;
mod host;
pub mod local;
mod native;
mod revision;
mod runtime;
mod store;
mod wasi;
pub mod watch;

pub use decision::{
    CachePolicy, Decision, EditOp, Forward, HeaderEdit, LocalResponse, ResponseAction,
    ResponseChanges, checked_edit,
};
pub use engine::EngineOptions;
pub use revision::{FailureKind, PolicyFailure};
pub use runtime::{PhaseStats, PolicyRuntime, PolicyStatus, ResponseHook, RevisionInfo, Verdict};

pub use crate::balance::{Algorithm, HealthState};
pub use crate::upstream::{EndpointInfo, Upstreams};

use std::net::SocketAddr;
use std::sync::Arc;

/// The default policy (`examples/default-policy`), built into the binary by `build.rs`. Used by
/// `sluice demo` and whenever a config names no policy module.
pub const DEFAULT_POLICY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/default_policy.wasm"));

/// The request as a policy sees it. Moved into the guest's store for the call and handed back
/// afterwards, so no header is copied unless the guest asks for it.
#[derive(Debug)]
pub struct PolicyRequest {
    pub parts: http::request::Parts,
    /// The authority the proxy validated (URI authority or `Host`), if any.
    pub authority: Option<http::uri::Authority>,
    pub client: SocketAddr,
    pub tls: bool,
    pub sni: Option<Arc<str>>,
}

/// Where a response the response phase looks at comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseSource {
    /// The upstream's answer to this request.
    Upstream,
    /// A stored response (a hit, a stale one, or one just revalidated).
    Cache,
}

impl PolicyRequest {
    /// A copy for the response phase, which reads the request after the proxy has consumed
    /// it (extensions are not copied).
    pub fn copy(&self) -> PolicyRequest {
        let mut parts = http::Request::new(()).into_parts().0;
        parts.method = self.parts.method.clone();
        parts.uri = self.parts.uri.clone();
        parts.version = self.parts.version;
        parts.headers = self.parts.headers.clone();
        PolicyRequest {
            parts,
            authority: self.authority.clone(),
            client: self.client,
            tls: self.tls,
            sni: self.sni.clone(),
        }
    }
}

/// Why a component could not become a revision. The message is for the operator: it names
/// the file or source, and the import, export or trap at fault.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(pub String);

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
