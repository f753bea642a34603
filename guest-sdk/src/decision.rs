//! [`Decision`]: what the policy answers, built with chained methods.
//!
//! A decision is either *forward* (send the request upstream, with a target, a cache policy,
//! header edits and an optional rewrite) or *local* (answer the client directly). The host
//! validates what it receives: an unknown pool, an invalid header name or value, an edit of a
//! framing header (`content-length`, `transfer-encoding`, `connection`, ...), a rewrite that
//! does not start with `/`, or a status outside 200..=599 makes the decision a policy failure,
//! handled by the operator's `fail` setting. The builders do not check these themselves.

use crate::__bindings::types;
use crate::Algorithm;

/// The answer to one request: forward it upstream, or respond locally.
///
/// Start with [`forward`](Self::forward), [`forward_default`](Self::forward_default) or
/// [`respond`](Self::respond), then chain. Header names are sent lower-cased.
///
/// Methods that only make sense for a forwarded request ([`endpoint`](Self::endpoint),
/// [`algorithm`](Self::algorithm), [`hash_key`](Self::hash_key), the cache methods, the
/// request-header methods and [`rewrite`](Self::rewrite)) have no effect on a local response.
/// The response-header methods work on both: on a local response they edit its header list
/// directly.
///
/// # Example
/// ```no_run
/// use sluice_sdk::prelude::*;
///
/// fn decide(req: &Request) -> Decision {
///     if req.path().starts_with("/api/") {
///         return Decision::forward("api").hash_key(req.client_ip()).no_cache();
///     }
///     Decision::forward("web").cache_key(req.method_path_sorted_query()).ttl(60)
/// }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a Decision does nothing until the policy returns it"]
pub struct Decision(types::Decision);

impl Decision {
    /// Forwards the request to the pool named `pool` in the host's config.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(_req: &Request) -> Decision {
    ///     Decision::forward("web")
    /// }
    /// ```
    pub fn forward(pool: impl Into<String>) -> Self {
        Self::forward_to(Some(pool.into()))
    }

    /// Forwards the request to the host's default pool (`proxy.default_pool`).
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(_req: &Request) -> Decision {
    ///     Decision::forward_default()
    /// }
    /// ```
    pub fn forward_default() -> Self {
        Self::forward_to(None)
    }

    fn forward_to(pool: Option<String>) -> Self {
        Decision(types::Decision::Forward(types::Forward {
            target: types::Target {
                pool,
                endpoint: None,
                hash_key: None,
                algorithm: None,
            },
            cache: types::CachePolicy {
                key: None,
                bypass: false,
                ttl_secs: None,
                tags: Vec::new(),
            },
            request_edits: Vec::new(),
            response_edits: Vec::new(),
            rewrite: None,
        }))
    }

    /// Answers the client directly with `status` (200..=599) and `body`, without contacting
    /// an upstream. The host adds `content-length`; add other headers with
    /// [`header`](Self::header).
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     if req.path() == "/robots.txt" {
    ///         return Decision::respond(200, "User-agent: *\nDisallow: /\n")
    ///             .header("content-type", "text/plain");
    ///     }
    ///     Decision::forward_default()
    /// }
    /// ```
    pub fn respond(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Decision(types::Decision::Respond(types::LocalResponse {
            status,
            headers: Vec::new(),
            body: body.into(),
        }))
    }

    /// Whether this decision forwards the request upstream.
    ///
    /// ```
    /// # use sluice_sdk::Decision;
    /// assert!(Decision::forward("web").is_forward());
    /// assert!(!Decision::respond(404, "").is_forward());
    /// ```
    pub fn is_forward(&self) -> bool {
        matches!(self.0, types::Decision::Forward(_))
    }

    /// Whether this decision is a local response.
    ///
    /// ```
    /// # use sluice_sdk::Decision;
    /// assert!(Decision::respond(404, "").is_local());
    /// ```
    pub fn is_local(&self) -> bool {
        !self.is_forward()
    }

    /// Sends the request to this endpoint of the pool (`host:port` as in the config, e.g. from
    /// [`balancer::pick`](crate::balancer::pick)) instead of letting the pool pick one.
    /// No effect on a local response.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(_req: &Request) -> Decision {
    ///     match balancer::pick_with_key("web", "tenant-7") {
    ///         Some(addr) => Decision::forward("web").endpoint(addr),
    ///         None => Decision::respond(503, "no endpoint available\n"),
    ///     }
    /// }
    /// ```
    pub fn endpoint(mut self, addr: impl Into<String>) -> Self {
        if let Some(f) = self.forward_mut() {
            f.target.endpoint = Some(addr.into());
        }
        self
    }

    /// Picks the endpoint with `algorithm` instead of the pool's configured one, for this
    /// request only (unless [`endpoint`](Self::endpoint) is set). With a
    /// [`hash_key`](Self::hash_key), an algorithm that is not keyed
    /// ([`Algorithm::is_keyed`]) gives way to [`Algorithm::RingHash`].
    /// No effect on a local response.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     if req.path().starts_with("/search") {
    ///         // Slow, uneven queries: prefer the endpoints answering fastest now.
    ///         return Decision::forward("api").algorithm(Algorithm::LeastResponseTime);
    ///     }
    ///     Decision::forward("api")
    /// }
    /// ```
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        if let Some(f) = self.forward_mut() {
            f.target.algorithm = Some(algorithm.to_raw());
        }
        self
    }

    /// Keeps requests with the same `key` on the same endpoint: the host picks the endpoint by
    /// weighted consistent hashing of the key (unless [`endpoint`](Self::endpoint) is set):
    /// with the ring hash, or [`Algorithm::Maglev`] when [`algorithm`](Self::algorithm) or the
    /// pool's configured algorithm says so. No effect on a local response.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     Decision::forward("app").hash_key(req.client_ip())
    /// }
    /// ```
    pub fn hash_key(mut self, key: impl AsRef<[u8]>) -> Self {
        if let Some(f) = self.forward_mut() {
            f.target.hash_key = Some(key.as_ref().to_vec());
        }
        self
    }

    /// The cache key for the response. Without one the host uses
    /// [`Request::default_cache_key`](crate::Request::default_cache_key), the normalised URL
    /// (no method: a HEAD is served from a stored GET). No effect on a local response.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     // One cache entry per language, whatever else the URL says.
    ///     let lang = req.query_param("lang").unwrap_or("en");
    ///     Decision::forward_default().cache_key(format!("{}|{lang}", req.path()))
    /// }
    /// ```
    pub fn cache_key(mut self, key: impl AsRef<[u8]>) -> Self {
        if let Some(f) = self.forward_mut() {
            f.cache.key = Some(key.as_ref().to_vec());
        }
        self
    }

    /// Cache the response for `secs` seconds, whatever freshness the origin's headers give it.
    /// It never makes storable a response that `no-store`, `private`, a request
    /// `Authorization` or a `Set-Cookie` keeps out of the cache. No effect on a local response.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(_req: &Request) -> Decision {
    ///     Decision::forward("static").ttl(86_400)
    /// }
    /// ```
    pub fn ttl(mut self, secs: u32) -> Self {
        if let Some(f) = self.forward_mut() {
            f.cache.ttl_secs = Some(secs);
        }
        self
    }

    /// Neither look this request up in the cache nor store its response.
    /// No effect on a local response (local responses are never cached).
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     if req.cookie("session").is_some() {
    ///         return Decision::forward_default().no_cache();
    ///     }
    ///     Decision::forward_default()
    /// }
    /// ```
    pub fn no_cache(mut self) -> Self {
        if let Some(f) = self.forward_mut() {
            f.cache.bypass = true;
        }
        self
    }

    /// Labels the cached response with `tag`, for purging groups of entries
    /// ([`cache::purge_tag`](crate::cache::purge_tag), the admin API). Repeatable; the host also
    /// takes tags from the response's `Surrogate-Key` and `Cache-Tag` headers. No effect on a
    /// local response.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     Decision::forward_default().cache_tag("catalog").cache_tag(req.host())
    /// }
    /// ```
    pub fn cache_tag(mut self, tag: impl Into<String>) -> Self {
        if let Some(f) = self.forward_mut() {
            f.cache.tags.push(tag.into());
        }
        self
    }

    /// Sets request header `name` to `value` upstream, replacing every value it had.
    /// No effect on a local response.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     Decision::forward_default().set_request_header("x-client-ip", req.client_ip())
    /// }
    /// ```
    pub fn set_request_header(self, name: impl AsRef<str>, value: impl AsRef<[u8]>) -> Self {
        self.request_edit(types::EditOp::Set, name.as_ref(), value.as_ref())
    }

    /// Adds `value` as one more line of request header `name` upstream.
    /// No effect on a local response.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(_req: &Request) -> Decision {
    ///     Decision::forward_default().append_request_header("x-route", "edge")
    /// }
    /// ```
    pub fn append_request_header(self, name: impl AsRef<str>, value: impl AsRef<[u8]>) -> Self {
        self.request_edit(types::EditOp::Append, name.as_ref(), value.as_ref())
    }

    /// Removes every value of request header `name` before forwarding.
    /// No effect on a local response.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(_req: &Request) -> Decision {
    ///     Decision::forward_default().remove_request_header("x-api-key")
    /// }
    /// ```
    pub fn remove_request_header(self, name: impl AsRef<str>) -> Self {
        self.request_edit(types::EditOp::Remove, name.as_ref(), b"")
    }

    /// Sets response header `name` to `value`, replacing every value it had. On a local
    /// response this replaces the header in its list (adding it if absent).
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(_req: &Request) -> Decision {
    ///     Decision::forward_default().set_response_header("cache-control", "no-store")
    /// }
    /// ```
    pub fn set_response_header(self, name: impl AsRef<str>, value: impl AsRef<[u8]>) -> Self {
        self.response_edit(types::EditOp::Set, name.as_ref(), value.as_ref())
    }

    /// Adds `value` as one more line of response header `name` (e.g. a second `set-cookie`).
    /// On a local response this is the same as [`header`](Self::header).
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(_req: &Request) -> Decision {
    ///     Decision::forward_default().append_response_header("set-cookie", "seen=1; Path=/")
    /// }
    /// ```
    pub fn append_response_header(self, name: impl AsRef<str>, value: impl AsRef<[u8]>) -> Self {
        self.response_edit(types::EditOp::Append, name.as_ref(), value.as_ref())
    }

    /// Removes every value of response header `name` before the response reaches the client.
    /// On a local response this removes it from its list.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(_req: &Request) -> Decision {
    ///     Decision::forward_default().remove_response_header("server")
    /// }
    /// ```
    pub fn remove_response_header(self, name: impl AsRef<str>) -> Self {
        self.response_edit(types::EditOp::Remove, name.as_ref(), b"")
    }

    /// Adds a header to the response the client gets: on a local response, one more entry in
    /// its header list; on a forward, the same as
    /// [`append_response_header`](Self::append_response_header).
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(_req: &Request) -> Decision {
    ///     Decision::respond(401, "unauthorized\n").header("www-authenticate", "Bearer")
    /// }
    /// ```
    pub fn header(self, name: impl AsRef<str>, value: impl AsRef<[u8]>) -> Self {
        self.response_edit(types::EditOp::Append, name.as_ref(), value.as_ref())
    }

    /// Replaces the request target (path and query) sent upstream, in origin form: it must
    /// start with `/`. No effect on a local response.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     match req.path().strip_prefix("/v1") {
    ///         Some(rest) if rest.starts_with('/') => Decision::forward("api").rewrite(rest),
    ///         _ => Decision::forward_default(),
    ///     }
    /// }
    /// ```
    pub fn rewrite(mut self, path_and_query: impl Into<String>) -> Self {
        if let Some(f) = self.forward_mut() {
            f.rewrite = Some(path_and_query.into());
        }
        self
    }

    fn forward_mut(&mut self) -> Option<&mut types::Forward> {
        match &mut self.0 {
            types::Decision::Forward(f) => Some(f),
            types::Decision::Respond(_) => None,
        }
    }

    fn request_edit(mut self, op: types::EditOp, name: &str, value: &[u8]) -> Self {
        if let Some(f) = self.forward_mut() {
            f.request_edits.push(edit(op, name, value));
        }
        self
    }

    fn response_edit(mut self, op: types::EditOp, name: &str, value: &[u8]) -> Self {
        match &mut self.0 {
            types::Decision::Forward(f) => f.response_edits.push(edit(op, name, value)),
            types::Decision::Respond(local) => {
                let name = name.to_ascii_lowercase();
                if matches!(op, types::EditOp::Set | types::EditOp::Remove) {
                    local.headers.retain(|h| h.name != name);
                }
                if !matches!(op, types::EditOp::Remove) {
                    local.headers.push(types::Header {
                        name,
                        value: value.to_vec(),
                    });
                }
            }
        }
        self
    }

    pub(crate) fn into_raw(self) -> types::Decision {
        self.0
    }
}

fn edit(op: types::EditOp, name: &str, value: &[u8]) -> types::HeaderEdit {
    types::HeaderEdit {
        op,
        name: name.to_ascii_lowercase(),
        value: value.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(d: Decision) -> types::LocalResponse {
        match d.into_raw() {
            types::Decision::Respond(r) => r,
            types::Decision::Forward(_) => panic!("expected a local response"),
        }
    }

    fn forward(d: Decision) -> types::Forward {
        match d.into_raw() {
            types::Decision::Forward(f) => f,
            types::Decision::Respond(_) => panic!("expected a forward"),
        }
    }

    #[test]
    fn forward_builders_fill_the_record() {
        let f = forward(
            Decision::forward("api")
                .endpoint("10.0.0.1:80")
                .algorithm(Algorithm::Maglev)
                .hash_key("k")
                .cache_key(b"key")
                .ttl(60)
                .no_cache()
                .cache_tag("a")
                .cache_tag("b")
                .set_request_header("X-A", "1")
                .append_request_header("x-b", b"2")
                .remove_request_header("x-c")
                .set_response_header("x-d", "4")
                .header("x-e", "5")
                .rewrite("/new?q"),
        );
        assert_eq!(f.target.pool.as_deref(), Some("api"));
        assert_eq!(f.target.endpoint.as_deref(), Some("10.0.0.1:80"));
        assert_eq!(f.target.hash_key.as_deref(), Some(&b"k"[..]));
        assert!(matches!(f.target.algorithm, Some(types::Algorithm::Maglev)));
        assert_eq!(f.cache.key.as_deref(), Some(&b"key"[..]));
        assert_eq!(f.cache.ttl_secs, Some(60));
        assert!(f.cache.bypass);
        assert_eq!(f.cache.tags, ["a", "b"]);
        let names: Vec<_> = f.request_edits.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["x-a", "x-b", "x-c"]);
        assert!(matches!(f.request_edits[2].op, types::EditOp::Remove));
        assert!(matches!(f.response_edits[1].op, types::EditOp::Append));
        assert_eq!(f.rewrite.as_deref(), Some("/new?q"));
        let plain = forward(Decision::forward_default());
        assert_eq!(plain.target.pool, None);
        assert!(plain.target.algorithm.is_none());
    }

    #[test]
    fn local_response_headers_are_edited_in_place() {
        let r = local(
            Decision::respond(503, "down")
                .header("Retry-After", "1")
                .header("x-a", "1")
                .append_response_header("x-a", "2")
                .set_response_header("retry-after", "120")
                .remove_response_header("x-gone")
                .ttl(5)
                .algorithm(Algorithm::Random)
                .set_request_header("x-ignored", "1"),
        );
        assert_eq!(r.status, 503);
        assert_eq!(r.body, b"down");
        let headers: Vec<_> = r
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_slice()))
            .collect();
        assert_eq!(
            headers,
            [
                ("x-a", &b"1"[..]),
                ("x-a", &b"2"[..]),
                ("retry-after", &b"120"[..])
            ]
        );
        let r = local(
            Decision::respond(200, "")
                .header("x-a", "1")
                .remove_response_header("X-A"),
        );
        assert!(r.headers.is_empty());
    }
}
