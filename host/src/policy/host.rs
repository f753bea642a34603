//! The host side of the WIT imports, for both packages the host implements
//! (`bindings::v03`, `bindings::v02`), on the store data of `store.rs`.
//!
//! The request (and in `on-response` the response head) is the store's: 0.3 guests read it
//! through the `request`/`response` interfaces, which take no handle; 0.2 guests through the
//! `request` resource, whose borrowed handle's representation is ignored. Either way every
//! accessor reads `GuestState::request` and copies only what it returns, so a guest that reads
//! the path pays for the path. The other imports (balancer, health, cache, log, config) have
//! the same shape in both packages; one macro implements them for each.

use super::bindings::{v02, v03};
use super::store::{GuestState, RequestRep};
use super::{HealthState, ResponseSource};
use crate::cache::Purge;
use wasmtime::component::Resource;

/// Longest guest log line kept; longer ones are cut at a character boundary.
const MAX_LOG_LINE: usize = 4096;

/// The request accessors, shared by the 0.3 `request` interface and the 0.2 resource.
impl GuestState {
    fn method(&self) -> wasmtime::Result<String> {
        Ok(self.req()?.parts.method.as_str().to_owned())
    }

    fn scheme(&self) -> wasmtime::Result<String> {
        Ok(if self.req()?.tls { "https" } else { "http" }.to_owned())
    }

    fn authority(&self) -> wasmtime::Result<String> {
        Ok(match &self.req()?.authority {
            Some(a) => a.as_str().to_ascii_lowercase(),
            None => String::new(),
        })
    }

    fn path(&self) -> wasmtime::Result<String> {
        let uri = &self.req()?.parts.uri;
        Ok(if uri.path().is_empty() {
            "/".to_owned()
        } else {
            uri.path().to_owned()
        })
    }

    fn query(&self) -> wasmtime::Result<Option<String>> {
        Ok(self.req()?.parts.uri.query().map(str::to_owned))
    }

    fn request_headers(&self) -> wasmtime::Result<&http::HeaderMap> {
        Ok(&self.req()?.parts.headers)
    }

    fn client_ip(&self) -> wasmtime::Result<String> {
        Ok(self.req()?.client.ip().to_string())
    }

    fn tls_sni(&self) -> wasmtime::Result<Option<String>> {
        Ok(self.req()?.sni.as_deref().map(str::to_owned))
    }

    fn http_version(&self) -> wasmtime::Result<String> {
        Ok(match self.req()?.parts.version {
            http::Version::HTTP_09 => "HTTP/0.9",
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_3 => "HTTP/3",
            _ => "HTTP/1.1",
        }
        .to_owned())
    }
}

fn first(h: &http::HeaderMap, name: &str) -> Option<Vec<u8>> {
    h.get(name).map(|v| v.as_bytes().to_vec())
}

fn all(h: &http::HeaderMap, name: &str) -> Vec<Vec<u8>> {
    h.get_all(name)
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect()
}

/// Every field of `h` as WIT headers (`v03::...::Header` or `v02::...::Header`).
macro_rules! wit_headers {
    ($h:expr, $($header:ident)::+) => {
        $h.iter()
            .map(|(n, v)| $($header)::+ {
                name: n.as_str().to_owned(),
                value: v.as_bytes().to_vec(),
            })
            .collect()
    };
}

impl v03::sluice::policy::types::Host for GuestState {}

impl v03::sluice::policy::request::Host for GuestState {
    fn method(&mut self) -> wasmtime::Result<String> {
        GuestState::method(self)
    }
    fn scheme(&mut self) -> wasmtime::Result<String> {
        GuestState::scheme(self)
    }
    fn authority(&mut self) -> wasmtime::Result<String> {
        GuestState::authority(self)
    }
    fn path(&mut self) -> wasmtime::Result<String> {
        GuestState::path(self)
    }
    fn query(&mut self) -> wasmtime::Result<Option<String>> {
        GuestState::query(self)
    }
    fn header(&mut self, name: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(first(self.request_headers()?, &name))
    }
    fn header_all(&mut self, name: String) -> wasmtime::Result<Vec<Vec<u8>>> {
        Ok(all(self.request_headers()?, &name))
    }
    fn headers(&mut self) -> wasmtime::Result<Vec<v03::sluice::policy::types::Header>> {
        Ok(wit_headers!(
            self.request_headers()?,
            v03::sluice::policy::types::Header
        ))
    }
    fn client_ip(&mut self) -> wasmtime::Result<String> {
        GuestState::client_ip(self)
    }
    fn tls_sni(&mut self) -> wasmtime::Result<Option<String>> {
        GuestState::tls_sni(self)
    }
    fn http_version(&mut self) -> wasmtime::Result<String> {
        GuestState::http_version(self)
    }
}

impl v03::sluice::policy::response::Host for GuestState {
    fn status(&mut self) -> wasmtime::Result<u16> {
        Ok(self.resp()?.status)
    }
    fn header(&mut self, name: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(first(&self.resp()?.headers, &name))
    }
    fn header_all(&mut self, name: String) -> wasmtime::Result<Vec<Vec<u8>>> {
        Ok(all(&self.resp()?.headers, &name))
    }
    fn headers(&mut self) -> wasmtime::Result<Vec<v03::sluice::policy::types::Header>> {
        Ok(wit_headers!(
            self.resp()?.headers,
            v03::sluice::policy::types::Header
        ))
    }
    fn source(&mut self) -> wasmtime::Result<v03::sluice::policy::response::ResponseSource> {
        use v03::sluice::policy::response::ResponseSource as Source;
        Ok(match self.resp()?.source {
            Some(ResponseSource::Cache) => Source::Cache,
            _ => Source::Upstream,
        })
    }
    fn endpoint(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.resp()?.endpoint.as_deref().map(str::to_owned))
    }
}

impl v02::sluice::policy::types::Host for GuestState {}

impl v02::sluice::policy::types::HostRequest for GuestState {
    fn method(&mut self, _: Resource<RequestRep>) -> wasmtime::Result<String> {
        GuestState::method(self)
    }
    fn scheme(&mut self, _: Resource<RequestRep>) -> wasmtime::Result<String> {
        GuestState::scheme(self)
    }
    fn authority(&mut self, _: Resource<RequestRep>) -> wasmtime::Result<String> {
        GuestState::authority(self)
    }
    fn path(&mut self, _: Resource<RequestRep>) -> wasmtime::Result<String> {
        GuestState::path(self)
    }
    fn query(&mut self, _: Resource<RequestRep>) -> wasmtime::Result<Option<String>> {
        GuestState::query(self)
    }
    fn header(
        &mut self,
        _: Resource<RequestRep>,
        name: String,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(first(self.request_headers()?, &name))
    }
    fn header_all(
        &mut self,
        _: Resource<RequestRep>,
        name: String,
    ) -> wasmtime::Result<Vec<Vec<u8>>> {
        Ok(all(self.request_headers()?, &name))
    }
    fn headers(
        &mut self,
        _: Resource<RequestRep>,
    ) -> wasmtime::Result<Vec<v02::sluice::policy::types::Header>> {
        Ok(wit_headers!(
            self.request_headers()?,
            v02::sluice::policy::types::Header
        ))
    }
    fn client_ip(&mut self, _: Resource<RequestRep>) -> wasmtime::Result<String> {
        GuestState::client_ip(self)
    }
    fn tls_sni(&mut self, _: Resource<RequestRep>) -> wasmtime::Result<Option<String>> {
        GuestState::tls_sni(self)
    }
    fn http_version(&mut self, _: Resource<RequestRep>) -> wasmtime::Result<String> {
        GuestState::http_version(self)
    }
    fn drop(&mut self, _: Resource<RequestRep>) -> wasmtime::Result<()> {
        // Handles are borrowed for one call; there is nothing to free.
        Ok(())
    }
}

/// The imports whose shape 0.2 and 0.3 share, for the generated module `$p` of each.
macro_rules! shared_imports {
    ($($p:ident)::+) => {
impl $($p)::+::balancer::Host for GuestState {
    fn pick(
        &mut self,
        pool: String,
        algorithm: Option<$($p)::+::balancer::Algorithm>,
        hash_key: Option<Vec<u8>>,
    ) -> wasmtime::Result<Option<String>> {
        let client = self.req()?.client.ip();
        Ok(self.shared
            .upstreams
            .pick(
                Some(&pool),
                algorithm.map(|a| a.into()),
                hash_key.as_deref(),
                client,
            )
            .map(|a| a.to_string()))
    }

    fn endpoints(&mut self, pool: String) -> wasmtime::Result<Vec<$($p)::+::balancer::Endpoint>> {
        Ok(self.shared
            .upstreams
            .endpoints(&pool)
            .unwrap_or_default()
            .into_iter()
            .map(|e| $($p)::+::balancer::Endpoint {
                addr: e.addr.to_string(),
                weight: e.weight,
                healthy: e.healthy,
                in_flight: e.in_flight,
                ewma_latency_us: e.ewma_latency_us,
            })
            .collect())
    }
}

impl $($p)::+::health::Host for GuestState {
    fn status(&mut self, pool: String, addr: String) -> wasmtime::Result<Option<$($p)::+::health::State>> {
        let Some(state) = self.shared.upstreams.health(&pool, &addr) else {
            return Ok(None);
        };
        Ok(Some(match state {
            HealthState::Healthy => $($p)::+::health::State::Healthy,
            HealthState::Unhealthy => $($p)::+::health::State::Unhealthy,
            HealthState::Ejected => $($p)::+::health::State::Ejected,
        }))
    }
}

impl $($p)::+::cache::Host for GuestState {
    fn peek(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<$($p)::+::cache::Entry>> {
        let Some(object) = self.cache().and_then(|c| c.peek(&key)) else {
            return Ok(None);
        };
        let now = std::time::Instant::now();
        Ok(Some($($p)::+::cache::Entry {
            age_secs: object.age(now).as_secs(),
            ttl_secs: object.ttl(now),
            status: object.status.as_u16(),
            size: object.body.len() as u64,
            tags: object.tags.iter().map(|t| t.to_string()).collect(),
        }))
    }

    fn purge_key(&mut self, key: Vec<u8>, soft: bool) -> wasmtime::Result<u64> {
        Ok(self
            .cache()
            .map_or(0, |c| c.purge_everywhere(Purge::Key(key.into()), soft)))
    }

    fn purge_tag(&mut self, tag: String, soft: bool) -> wasmtime::Result<u64> {
        Ok(self
            .cache()
            .map_or(0, |c| c.purge_everywhere(Purge::Tag(tag), soft)))
    }
}

impl $($p)::+::log::Host for GuestState {
    fn log(&mut self, level: $($p)::+::log::Level, mut message: String) -> wasmtime::Result<()> {
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
            $($p)::+::log::Level::Trace => {
                tracing::trace!(target: "sluice::guest", policy, revision, "{message}")
            }
            $($p)::+::log::Level::Debug => {
                tracing::debug!(target: "sluice::guest", policy, revision, "{message}")
            }
            $($p)::+::log::Level::Info => {
                tracing::info!(target: "sluice::guest", policy, revision, "{message}")
            }
            $($p)::+::log::Level::Warn => {
                tracing::warn!(target: "sluice::guest", policy, revision, "{message}")
            }
            $($p)::+::log::Level::Error => {
                tracing::error!(target: "sluice::guest", policy, revision, "{message}")
            }
        }
        Ok(())
    }
}

impl $($p)::+::config::Host for GuestState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.shared.settings.get(&key).cloned())
    }
}
    };
}

shared_imports!(v03::sluice::policy);
shared_imports!(v02::sluice::policy);
