//! The data of one guest store ([`GuestState`]) and what a revision shares with all of its
//! stores ([`Shared`]). The bottom of `policy/`: it names no generated binding; `host.rs` and
//! `wasi.rs` implement the imports on it, `revision.rs` creates and calls stores of it.

use super::{PolicyRequest, ResponseSource, Upstreams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Type parameter of the 0.2 `request` resource handle (never instantiated).
pub enum RequestRep {}

/// The response head an `on-response` call looks at. Moved into the store for the call and
/// handed back.
#[derive(Debug, Default)]
pub(super) struct ResponseHead {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub source: Option<ResponseSource>,
    pub endpoint: Option<Arc<str>>,
}

/// What a revision shares with every store it creates.
pub(super) struct Shared {
    pub name: Arc<str>,
    pub revision: u64,
    pub settings: BTreeMap<String, String>,
    pub upstreams: Arc<dyn Upstreams>,
    /// The host's HTTP cache, offered through the `cache` import; `None` without `[cache]`
    /// (and in `sluice policy test`).
    pub cache: Option<Arc<crate::cache::Cache>>,
}

/// The `T` of `Store<T>` for policy guests.
pub(super) struct GuestState {
    /// Present for the duration of a `decide` or `on-response` call.
    pub request: Option<PolicyRequest>,
    /// Present for the duration of an `on-response` call.
    pub response: Option<ResponseHead>,
    pub shared: Arc<Shared>,
    pub memory_cap: usize,
    /// Set when the guest asked for more memory than its cap: the trap that usually follows
    /// (a Rust guest aborts on allocation failure) is then reported as memory exhaustion.
    pub memory_denied: bool,
    /// CPU-time check after the wall-clock deadline (see `revision::on_deadline`).
    pub overtime: Overtime,
    /// Set during the rehearsal calls before a revision is published: the `cache` import then
    /// sees no cache, so loading a policy never purges (or peeks at) live entries.
    pub rehearsal: bool,
    /// Built on the first WASI call (see `wasi.rs`).
    pub wasi: Option<wasmtime_wasi::WasiCtx>,
    /// WASI's streams and other resources.
    pub table: wasmtime::component::ResourceTable,
}

impl GuestState {
    pub fn new(shared: Arc<Shared>, memory_cap: usize) -> GuestState {
        GuestState {
            request: None,
            response: None,
            shared,
            memory_cap,
            memory_denied: false,
            overtime: Default::default(),
            rehearsal: false,
            wasi: None,
            table: wasmtime::component::ResourceTable::new(),
        }
    }
}

impl GuestState {
    /// The request of the current call. Outside a call (a guest's start function, say) the
    /// import traps.
    pub(super) fn req(&self) -> wasmtime::Result<&PolicyRequest> {
        self.request.as_ref().ok_or_else(|| {
            wasmtime::format_err!("the request is readable only during decide and on-response")
        })
    }

    pub(super) fn resp(&self) -> wasmtime::Result<&ResponseHead> {
        self.response.as_ref().ok_or_else(|| {
            wasmtime::format_err!("the response is readable only during on-response")
        })
    }

    /// The cache the `cache` import works on: none without `[cache]` or while rehearsing.
    pub(super) fn cache(&self) -> Option<&crate::cache::Cache> {
        if self.rehearsal {
            None
        } else {
            self.shared.cache.as_deref()
        }
    }
}

impl wasmtime::ResourceLimiter for GuestState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.memory_cap;
        self.memory_denied |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// State of the CPU-time check that follows a missed wall-clock deadline.
#[derive(Debug, Default)]
pub(super) struct Overtime {
    /// Thread CPU time when the current one-tick probation began.
    pub probation_start: Option<Duration>,
    pub rounds: u64,
}
