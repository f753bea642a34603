//! A stored response and the RFC 9111 rules that decide whether a response may be stored
//! (§3), how long it is fresh (§4.2.1, §4.2.2) and how old it is (§4.2.3).

use super::directives::{self, Qualified, RequestDirectives, ResponseDirectives};
use super::vary::Vary;
use crate::config::CacheConfig;
use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Statuses a cache may give a heuristic freshness lifetime (RFC 9110 §15.1).
const HEURISTIC: [u16; 12] = [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// The statuses whose caching this cache implements (`must-understand`, RFC 9111 §5.2.2.3):
/// the heuristically cacheable ones (RFC 9110 §15.1; 206 as parts it combines, see
/// `cache/partial.rs`) and the redirects it stores with explicit freshness.
const UNDERSTOOD: [u16; 14] = [
    200, 203, 204, 206, 300, 301, 302, 307, 308, 404, 405, 410, 414, 501,
];

/// The fraction of `Date - Last-Modified` used as a heuristic lifetime (RFC 9111 §4.2.2
/// suggests 10%).
const HEURISTIC_FRACTION: u64 = 10;

/// Bytes charged per object on top of its body, header fields and keys: the `Object`, its
/// `HeaderMap` tables, the variant list and the store's own node; and per header field on
/// top of its name and value. Fitted to resident memory (`benches/cache_memory.rs`: 1 KiB
/// body with 4 fields, 128 B body with 16; bench/RESULTS.md), allocator overhead included.
const OBJECT_OVERHEAD: u64 = 776;
const FIELD_OVERHEAD: u64 = 76;

/// Bytes charged per tag, and per object for its origin, for a slot in the store's index (a
/// shared key handle in a hash set, with the set's spare room).
const TAG_INDEX_SLOT: u64 = 64;

/// Header fields a cache must not store or forward from its store (hop-by-hop, RFC 9110
/// §7.6.1) and the tag headers sluice consumes.
const NOT_STORED: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "surrogate-key",
    "cache-tag",
];

/// The request side of a cacheable exchange: what storing and matching need.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    pub method: Method,
    pub authorization: bool,
    pub directives: RequestDirectives,
}

/// What else storing a response depends on: the request's header fields (for `Vary`) and
/// the cache's settings (how `Vary` compares, the targeted fields).
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub request_headers: &'a HeaderMap,
    pub config: &'a CacheConfig,
}

/// When the exchange happened, for the age calculation (RFC 9111 §4.2.3).
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    pub request_sent: Instant,
    pub response_at: Instant,
    pub response_wall: SystemTime,
}

impl Exchange {
    pub fn now() -> Exchange {
        let now = Instant::now();
        Exchange {
            request_sent: now,
            response_at: now,
            response_wall: SystemTime::now(),
        }
    }
}

/// Everything about a response but its body, decided when its head arrives.
#[derive(Debug, Clone)]
pub struct Meta {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub directives: ResponseDirectives,
    pub vary: Vary,
    pub url: Box<str>,
    pub tags: Vec<Box<str>>,
    /// Freshness lifetime (RFC 9111 §4.2.1), whole seconds.
    pub lifetime: u64,
    /// `corrected_initial_age` (RFC 9111 §4.2.3), whole seconds.
    pub initial_age: u64,
    pub stored_at: Instant,
}

/// Why a response is not stored; reported in logs and `Cache-Status` details.
pub type NotStored = &'static str;

impl Meta {
    /// Applies RFC 9111 §3 to a response head: `Ok` with what to store, or why not.
    ///
    /// `ttl` is the policy's override of the freshness lifetime. It never overrides what
    /// protects privacy: `no-store`, `private`, `Authorization`, `Set-Cookie`.
    pub fn evaluate(
        req: &RequestFacts,
        cx: Context<'_>,
        status: StatusCode,
        response: &HeaderMap,
        ttl: Option<u32>,
        url: &str,
        when: Exchange,
    ) -> Result<Meta, NotStored> {
        if req.method != Method::GET {
            return Err("method");
        }
        if req.directives.no_store {
            return Err("request no-store");
        }
        // Final statuses only; a 206 is part of a response and a 304 is not one at all.
        if status.is_informational() || status == StatusCode::PARTIAL_CONTENT {
            return Err("partial");
        }
        if status == StatusCode::NOT_MODIFIED {
            return Err("not modified");
        }
        let d = ResponseDirectives::parse_targeted(response, &cx.config.targeted);
        // must-understand: a cache that understands the status may ignore no-store; one
        // that does not must not store the response (RFC 9111 §5.2.2.3).
        if d.no_store && !(d.must_understand && UNDERSTOOD.contains(&status.as_u16())) {
            return Err("no-store");
        }
        if d.private == Qualified::All {
            return Err("private");
        }
        if req.authorization && !d.allows_authorized() {
            return Err("authorization");
        }
        if response.contains_key(header::SET_COOKIE) && !d.public {
            return Err("set-cookie");
        }
        let vary = Vary::capture(response, cx.request_headers, &cx.config.vary).ok_or("vary *")?;
        let explicit = d.s_maxage.is_some()
            || d.max_age.is_some()
            || (response.contains_key(header::EXPIRES) && !d.targeted)
            || ttl.is_some();
        if !explicit && !d.public && !HEURISTIC.contains(&status.as_u16()) {
            return Err("no freshness");
        }

        let (lifetime, initial_age) = clock(&d, response, response, status, ttl, when);
        let has_validator =
            response.contains_key(header::ETAG) || response.contains_key(header::LAST_MODIFIED);
        if lifetime == 0
            && !has_validator
            && d.stale_if_error.is_none()
            && d.stale_while_revalidate.is_none()
        {
            return Err("stale on arrival");
        }

        let mut headers = response.clone();
        strip_unstored(&mut headers);
        if let Qualified::Fields(fields) = &d.private {
            for f in fields {
                headers.remove(f);
            }
        }
        let tags = tags_of(response);
        Ok(Meta {
            status,
            headers,
            directives: d,
            vary,
            url: url.into(),
            tags,
            lifetime,
            initial_age,
            stored_at: when.response_at,
        })
    }

    /// [`Meta::evaluate`] for a 206 to a range request: a part is stored by the rules of the
    /// complete response it is part of (RFC 9111 §3.3). The caller checks that it is a part
    /// that can be combined (`partial::storable_range`).
    pub fn evaluate_part(
        req: &RequestFacts,
        cx: Context<'_>,
        response: &HeaderMap,
        ttl: Option<u32>,
        url: &str,
        when: Exchange,
    ) -> Result<Meta, NotStored> {
        let mut meta = Meta::evaluate(req, cx, StatusCode::OK, response, ttl, url, when)?;
        meta.status = StatusCode::PARTIAL_CONTENT;
        Ok(meta)
    }

    /// The stored response updated by a 304 (RFC 9111 §4.3.4): header fields in the 304
    /// replace the stored ones, except those describing the body, and freshness starts over
    /// from this exchange.
    pub fn refreshed(
        old: &Object,
        not_modified: &HeaderMap,
        ttl: Option<u32>,
        when: Exchange,
        config: &CacheConfig,
    ) -> Meta {
        let mut headers = old.headers.clone();
        for name in not_modified.keys() {
            if matches!(
                name.as_str(),
                "content-length" | "content-encoding" | "content-range"
            ) || NOT_STORED.contains(&name.as_str())
            {
                continue;
            }
            headers.remove(name);
            for v in not_modified.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        let d = ResponseDirectives::parse_targeted(&headers, &config.targeted);
        let (lifetime, initial_age) = clock(&d, &headers, not_modified, old.status, ttl, when);
        let mut tags: Vec<Box<str>> = old.tags.to_vec();
        for t in tags_of(not_modified) {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        Meta {
            status: old.status,
            headers,
            directives: d,
            vary: old.vary.clone(),
            url: old.url.clone(),
            tags,
            lifetime,
            initial_age,
            stored_at: when.response_at,
        }
    }
}

/// The freshness lifetime (or the policy's `ttl`) and `corrected_initial_age` (RFC 9111
/// §4.2.3) of a response whose header fields are `h`; `Age` is read from `received`, the
/// message that just arrived (a 304 when refreshing).
fn clock(
    d: &ResponseDirectives,
    h: &HeaderMap,
    received: &HeaderMap,
    status: StatusCode,
    ttl: Option<u32>,
    when: Exchange,
) -> (u64, u64) {
    let date = match directives::date(h, &header::DATE) {
        Some(Some(d)) => d,
        _ => when.response_wall,
    };
    let lifetime = ttl.map_or_else(|| lifetime(d, h, date, status), u64::from);
    let apparent_age = when
        .response_wall
        .duration_since(date)
        .unwrap_or_default()
        .as_secs();
    let response_delay = when
        .response_at
        .saturating_duration_since(when.request_sent)
        .as_secs();
    let corrected_age_value = directives::age(received).saturating_add(response_delay);
    (lifetime, apparent_age.max(corrected_age_value))
}

/// Freshness lifetime for a shared cache (RFC 9111 §4.2.1): `s-maxage`, `max-age`,
/// `Expires - Date`, then the heuristic. Invalid values mean stale.
fn lifetime(d: &ResponseDirectives, h: &HeaderMap, date: SystemTime, status: StatusCode) -> u64 {
    if let Some(v) = d.s_maxage {
        return v.unwrap_or(0);
    }
    if let Some(v) = d.max_age {
        return v.unwrap_or(0);
    }
    if let Some(expires) = directives::date(h, &header::EXPIRES).filter(|_| !d.targeted) {
        return expires
            .and_then(|e| e.duration_since(date).ok())
            .map_or(0, |d| d.as_secs());
    }
    if !HEURISTIC.contains(&status.as_u16()) {
        return 0;
    }
    match directives::date(h, &header::LAST_MODIFIED) {
        Some(Some(lm)) => date
            .duration_since(lm)
            .map_or(0, |age| age.as_secs() / HEURISTIC_FRACTION),
        _ => 0,
    }
}

fn strip_unstored(h: &mut HeaderMap) {
    // Fields named by `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in NOT_STORED {
        h.remove(n);
    }
}

/// Tags from `Surrogate-Key` (space-separated, Fastly) and `Cache-Tag` (comma-separated,
/// Cloudflare).
pub fn tags_of(h: &HeaderMap) -> Vec<Box<str>> {
    let mut tags: Vec<Box<str>> = Vec::new();
    let mut add = |t: &str| {
        if !t.is_empty() && !tags.iter().any(|x| &**x == t) {
            tags.push(t.into());
        }
    };
    for v in h
        .get_all("surrogate-key")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        v.split_ascii_whitespace().for_each(&mut add);
    }
    for v in h
        .get_all("cache-tag")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        v.split(',').map(str::trim).for_each(&mut add);
    }
    tags
}

/// A stored response.
#[derive(Debug)]
pub struct Object {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub directives: ResponseDirectives,
    pub vary: Vary,
    /// The normalised URL it was stored for (the default key of its request).
    pub url: Box<str>,
    pub tags: Box<[Box<str>]>,
    pub etag: Option<HeaderValue>,
    pub last_modified: Option<SystemTime>,
    lifetime: u64,
    initial_age: u64,
    stored_at: Instant,
    /// Soft-purged: stale from now on, whatever its lifetime.
    invalidated: AtomicBool,
    weight: u64,
}

impl Object {
    pub fn new(meta: Meta, body: Bytes, key_len: usize) -> Object {
        let etag = meta.headers.get(header::ETAG).cloned();
        let last_modified = directives::date(&meta.headers, &header::LAST_MODIFIED).flatten();
        let header_bytes: u64 = meta
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().len() + v.len()) as u64 + FIELD_OVERHEAD)
            .sum();
        let weight = body.len() as u64
            + header_bytes
            + meta.url.len() as u64
            + key_len as u64
            + meta
                .tags
                .iter()
                .map(|t| t.len() as u64 + 16 + TAG_INDEX_SLOT)
                .sum::<u64>()
            + TAG_INDEX_SLOT // its slot in the origin index
            + OBJECT_OVERHEAD;
        Object {
            status: meta.status,
            headers: meta.headers,
            body,
            directives: meta.directives,
            vary: meta.vary,
            url: meta.url,
            tags: meta.tags.into(),
            etag,
            last_modified,
            lifetime: meta.lifetime,
            initial_age: meta.initial_age,
            stored_at: meta.stored_at,
            invalidated: AtomicBool::new(false),
            weight,
        }
    }

    pub fn weight(&self) -> u64 {
        self.weight
    }

    /// `current_age` (RFC 9111 §4.2.3).
    pub fn age(&self, now: Instant) -> Duration {
        Duration::from_secs(self.initial_age) + now.saturating_duration_since(self.stored_at)
    }

    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.lifetime)
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        !self.is_invalidated() && self.age(now) < self.lifetime()
    }

    /// Seconds of freshness left; negative once stale (as `Cache-Status: ttl` reports it).
    pub fn ttl(&self, now: Instant) -> i64 {
        let left = self.lifetime as i64 - self.age(now).as_secs() as i64;
        if self.is_invalidated() {
            left.min(0)
        } else {
            left
        }
    }

    /// How long it has been stale: zero while fresh, and for a soft-purged object that was
    /// still fresh (its stale-* windows start at the purge).
    pub fn staleness(&self, now: Instant) -> Duration {
        self.age(now).saturating_sub(self.lifetime())
    }

    pub fn invalidate(&self) {
        self.invalidated.store(true, Ordering::Relaxed);
    }

    pub fn is_invalidated(&self) -> bool {
        self.invalidated.load(Ordering::Relaxed)
    }

    /// Whether `tag` is one of its tags (the decision's, `Surrogate-Key`, `Cache-Tag`).
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| **t == *tag)
    }

    pub fn has_validator(&self) -> bool {
        self.etag.is_some() || self.headers.contains_key(header::LAST_MODIFIED)
    }

    pub fn same_vary_fields(&self, other: &Object) -> bool {
        self.vary.same_fields(&other.vary)
    }
}
