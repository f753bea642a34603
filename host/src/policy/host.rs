//! The data of one guest store and the host side of the WIT imports.
//!
//! The `request` resource is the one request in the store: `decide` receives a borrowed handle
//! whose representation is ignored, and every accessor reads `GuestState::request`. Accessors
//! copy only what they return, so a guest that reads the path pays for the path.

use super::bindings::sluice::policy::{balancer, cache, config, health, log, types};
use super::decision::algorithm_from_wit;
use super::{HealthState, PolicyRequest, Upstreams};
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::Resource;

/// Type parameter of the `request` resource handle (never instantiated).
pub enum RequestRep {}

/// Longest guest log line kept; longer ones are cut at a character boundary.
const MAX_LOG_LINE: usize = 4096;

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
    /// Present for the duration of a `decide` call.
    pub request: Option<PolicyRequest>,
    pub shared: Arc<Shared>,
    pub memory_cap: usize,
    /// Set when the guest asked for more memory than its cap: the trap that usually follows
    /// (a Rust guest aborts on allocation failure) is then reported as memory exhaustion.
    pub memory_denied: bool,
    /// CPU-time check after the wall-clock deadline (see `revision::on_deadline`).
    pub overtime: super::revision::Overtime,
    /// Set during the rehearsal calls before a revision is published: the `cache` import then
    /// sees no cache, so loading a policy never purges (or peeks at) live entries.
    pub rehearsal: bool,
}

impl GuestState {
    fn req(&self) -> &PolicyRequest {
        // `decide` is the only export and the host sets the request before calling it; a guest
        // can hold no request handle outside that call because the handle is borrowed.
        self.request
            .as_ref()
            .expect("request accessors are only reachable during decide")
    }

    /// The cache the `cache` import works on: none without `[cache]` or while rehearsing.
    fn cache(&self) -> Option<&crate::cache::Cache> {
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

impl types::Host for GuestState {}

impl types::HostRequest for GuestState {
    fn method(&mut self, _: Resource<RequestRep>) -> String {
        self.req().parts.method.as_str().to_owned()
    }

    fn scheme(&mut self, _: Resource<RequestRep>) -> String {
        if self.req().tls { "https" } else { "http" }.to_owned()
    }

    fn authority(&mut self, _: Resource<RequestRep>) -> String {
        match &self.req().authority {
            Some(a) => a.as_str().to_ascii_lowercase(),
            None => String::new(),
        }
    }

    fn path(&mut self, _: Resource<RequestRep>) -> String {
        let uri = &self.req().parts.uri;
        if uri.path().is_empty() {
            "/".to_owned()
        } else {
            uri.path().to_owned()
        }
    }

    fn query(&mut self, _: Resource<RequestRep>) -> Option<String> {
        self.req().parts.uri.query().map(str::to_owned)
    }

    fn header(&mut self, _: Resource<RequestRep>, name: String) -> Option<Vec<u8>> {
        self.req()
            .parts
            .headers
            .get(name.as_str())
            .map(|v| v.as_bytes().to_vec())
    }

    fn header_all(&mut self, _: Resource<RequestRep>, name: String) -> Vec<Vec<u8>> {
        self.req()
            .parts
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect()
    }

    fn headers(&mut self, _: Resource<RequestRep>) -> Vec<types::Header> {
        self.req()
            .parts
            .headers
            .iter()
            .map(|(n, v)| types::Header {
                name: n.as_str().to_owned(),
                value: v.as_bytes().to_vec(),
            })
            .collect()
    }

    fn client_ip(&mut self, _: Resource<RequestRep>) -> String {
        self.req().client.ip().to_string()
    }

    fn tls_sni(&mut self, _: Resource<RequestRep>) -> Option<String> {
        self.req().sni.as_deref().map(str::to_owned)
    }

    fn http_version(&mut self, _: Resource<RequestRep>) -> String {
        match self.req().parts.version {
            http::Version::HTTP_09 => "HTTP/0.9",
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_3 => "HTTP/3",
            _ => "HTTP/1.1",
        }
        .to_owned()
    }

    fn drop(&mut self, _: Resource<RequestRep>) -> wasmtime::Result<()> {
        // Handles are borrowed for one call; there is nothing to free.
        Ok(())
    }
}

impl balancer::Host for GuestState {
    fn pick(
        &mut self,
        pool: String,
        algorithm: Option<balancer::Algorithm>,
        hash_key: Option<Vec<u8>>,
    ) -> Option<String> {
        self.shared
            .upstreams
            .pick(
                Some(&pool),
                algorithm.map(algorithm_from_wit),
                hash_key.as_deref(),
                self.req().client.ip(),
            )
            .map(|a| a.to_string())
    }

    fn endpoints(&mut self, pool: String) -> Vec<balancer::Endpoint> {
        self.shared
            .upstreams
            .endpoints(&pool)
            .unwrap_or_default()
            .into_iter()
            .map(|e| balancer::Endpoint {
                addr: e.addr.to_string(),
                weight: e.weight,
                healthy: e.healthy,
                in_flight: e.in_flight,
                ewma_latency_us: e.ewma_latency_us,
            })
            .collect()
    }
}

impl health::Host for GuestState {
    fn status(&mut self, pool: String, addr: String) -> Option<health::State> {
        let state = self.shared.upstreams.health(&pool, &addr)?;
        Some(match state {
            HealthState::Healthy => health::State::Healthy,
            HealthState::Unhealthy => health::State::Unhealthy,
            HealthState::Ejected => health::State::Ejected,
        })
    }
}

impl cache::Host for GuestState {
    fn peek(&mut self, key: Vec<u8>) -> Option<cache::Entry> {
        let object = self.cache()?.peek(&key)?;
        let now = std::time::Instant::now();
        Some(cache::Entry {
            age_secs: object.age(now).as_secs(),
            ttl_secs: object.ttl(now),
            status: object.status.as_u16(),
            size: object.body.len() as u64,
            tags: object.tags.iter().map(|t| t.to_string()).collect(),
        })
    }

    fn purge_key(&mut self, key: Vec<u8>, soft: bool) -> u64 {
        self.cache().map_or(0, |c| c.purge_key(&key, soft))
    }

    fn purge_tag(&mut self, tag: String, soft: bool) -> u64 {
        self.cache()
            .map_or(0, |c| c.purge(soft, |_, o| o.has_tag(&tag)))
    }
}

impl log::Host for GuestState {
    fn log(&mut self, level: log::Level, mut message: String) {
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let (policy, revision) = (&*self.shared.name, self.shared.revision);
        // `target` lets operators filter guest output (`sluice::guest=warn`).
        match level {
            log::Level::Trace => {
                tracing::trace!(target: "sluice::guest", policy, revision, "{message}")
            }
            log::Level::Debug => {
                tracing::debug!(target: "sluice::guest", policy, revision, "{message}")
            }
            log::Level::Info => {
                tracing::info!(target: "sluice::guest", policy, revision, "{message}")
            }
            log::Level::Warn => {
                tracing::warn!(target: "sluice::guest", policy, revision, "{message}")
            }
            log::Level::Error => {
                tracing::error!(target: "sluice::guest", policy, revision, "{message}")
            }
        }
    }
}

impl config::Host for GuestState {
    fn get(&mut self, key: String) -> Option<String> {
        self.shared.settings.get(&key).cloned()
    }
}
