//! The host's HTTP cache (the `[cache]` table of its config), as it is at the moment of the
//! call: look at what is stored under a key, and purge by key or by tag.
//!
//! - [`peek`]: the newest response stored under a key, as a [`CacheEntry`].
//! - [`purge_key`]: purge what is stored under one key.
//! - [`purge_tag`]: purge everything with a tag.
//!
//! Keys are the ones decisions use: [`Request::default_cache_key`](crate::Request::default_cache_key)
//! when a decision sets none, or what it set with
//! [`Decision::cache_key`](crate::Decision::cache_key). Tags come from
//! [`Decision::cache_tag`](crate::Decision::cache_tag) and from the response's `Surrogate-Key`
//! and `Cache-Tag` headers.
//!
//! Without a cache in the host's config (and under `sluice policy test`, and in the sample
//! requests a host rehearses a new revision on before it serves) [`peek`] returns `None` and
//! the purges return 0. Needs a host that implements `sluice:policy@0.2.1` or later.

use crate::__bindings::cache as raw;

/// A stored response, as the host would serve it at the moment of the call. Returned by
/// [`peek`].
///
/// # Example
/// ```no_run
/// use sluice_sdk::prelude::*;
///
/// fn decide(req: &Request) -> Decision {
///     match cache::peek(req.default_cache_key()) {
///         Some(e) if e.is_fresh() => Decision::forward_default(),
///         // Nothing fresh stored: send misses to the pool that can take them.
///         _ => Decision::forward("origin-shield"),
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    /// Its current age in seconds: what the `Age` header would say if it were served now.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// let old = cache::peek("https://example.com:443/").is_some_and(|e| e.age_secs > 3600);
    /// ```
    pub age_secs: u64,
    /// Seconds of freshness left; zero or negative once stale (at once after a soft purge).
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// let expiring = cache::peek("https://example.com:443/").is_some_and(|e| e.ttl_secs < 10);
    /// ```
    pub ttl_secs: i64,
    /// The stored response's status code.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// let cached_404 = cache::peek("https://example.com:443/x").is_some_and(|e| e.status == 404);
    /// ```
    pub status: u16,
    /// The body size in bytes.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// let big = cache::peek("https://example.com:443/video").is_some_and(|e| e.size > 1 << 20);
    /// ```
    pub size: u64,
    /// Its tags: from the decision that stored it and the response's `Surrogate-Key` and
    /// `Cache-Tag` headers.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// let tagged = cache::peek("https://example.com:443/")
    ///     .is_some_and(|e| e.tags.iter().any(|t| t == "catalog"));
    /// ```
    pub tags: Vec<String>,
}

impl CacheEntry {
    /// Whether it is still fresh (would be served without asking the origin).
    ///
    /// ```
    /// # use sluice_sdk::cache::CacheEntry;
    /// let e = CacheEntry { age_secs: 50, ttl_secs: 10, status: 200, size: 5, tags: vec![] };
    /// assert!(e.is_fresh());
    /// assert!(!CacheEntry { ttl_secs: 0, ..e }.is_fresh());
    /// ```
    pub fn is_fresh(&self) -> bool {
        self.ttl_secs > 0
    }
}

/// The newest response stored under `key`, or `None` when nothing is stored (or the host has
/// no cache). Looking does not count as a use: it does not keep the entry from being evicted.
///
/// # Example
/// ```no_run
/// use sluice_sdk::prelude::*;
///
/// fn decide(req: &Request) -> Decision {
///     if req.path() == "/_cache" {
///         let url = req.query_param("url").unwrap_or_default();
///         return match cache::peek(url) {
///             Some(e) => Decision::respond(200, format!("{} {}s {}B\n", e.status, e.ttl_secs, e.size)),
///             None => Decision::respond(404, "not cached\n"),
///         };
///     }
///     Decision::forward_default()
/// }
/// ```
pub fn peek(key: impl AsRef<[u8]>) -> Option<CacheEntry> {
    raw::peek(key.as_ref()).map(|e| CacheEntry {
        age_secs: e.age_secs,
        ttl_secs: e.ttl_secs,
        status: e.status,
        size: e.size,
        tags: e.tags,
    })
}

/// Purges the responses stored under `key` (every `Vary` variant): removes them, or with
/// `soft` marks them stale, so the next request revalidates with the origin and
/// `stale-if-error` can still serve them. Returns how many it purged (0 without a cache).
///
/// # Example
/// ```no_run
/// use sluice_sdk::prelude::*;
///
/// fn decide(req: &Request) -> Decision {
///     // `PURGE /some/path` drops that URL's cached response.
///     let token = config::get("purge_token");
///     if req.method() == "PURGE" && token.is_some() && req.header_str("x-purge-token") == token {
///         let n = cache::purge_key(req.default_cache_key(), false);
///         return Decision::respond(200, format!("purged {n}\n"));
///     }
///     Decision::forward_default()
/// }
/// ```
pub fn purge_key(key: impl AsRef<[u8]>, soft: bool) -> u64 {
    raw::purge_key(key.as_ref(), soft)
}

/// Purges every response tagged `tag` (by [`Decision::cache_tag`](crate::Decision::cache_tag),
/// `Surrogate-Key` or `Cache-Tag`): removes them, or with `soft` marks them stale. Returns how
/// many it purged (0 without a cache).
///
/// It visits the whole store, so its cost grows with the number of entries: call it from a
/// purge endpoint, not on every request.
///
/// # Example
/// ```no_run
/// use sluice_sdk::prelude::*;
///
/// fn decide(req: &Request) -> Decision {
///     if req.path() == "/_purge" && req.method() == "POST" {
///         let Some(tag) = req.query_param("tag") else {
///             return Decision::respond(400, "tag= is required\n");
///         };
///         let n = cache::purge_tag(tag, req.query_param("soft") == Some("1"));
///         return Decision::respond(200, format!("purged {n}\n"));
///     }
///     Decision::forward_default().cache_tag("site")
/// }
/// ```
pub fn purge_tag(tag: &str, soft: bool) -> u64 {
    raw::purge_tag(tag, soft)
}
