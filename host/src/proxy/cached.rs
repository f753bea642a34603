//! The cache's part of the request pipeline: lookup, serving stored responses (with `Age`,
//! `Cache-Status`, conditional requests, HEAD and ranges), coalescing misses, revalidation,
//! stale-while-revalidate / stale-if-error, storing as the body streams, and invalidation
//! after unsafe methods.
//!
//! Order for a GET or HEAD (RFC 9111 §4): select a stored response by key and `Vary`; if it
//! may be used (fresh, or stale within what the client or the origin allows) serve it;
//! otherwise go upstream, conditionally when it has validators, coalesced with concurrent
//! requests for the same key; store what comes back if RFC 9111 §3 allows.

use super::body::{RequestBody, ResponseBody};
use super::error::{ProxyError, Side};
use super::{Answer, Outbound, Proxy};
use crate::cache::directives::{Qualified, RequestDirectives};
use crate::cache::object::{Context, Exchange, Meta, Object, RequestFacts};
use crate::cache::partial::{self, Partial};
use crate::cache::{self, Cache, Fill, Leader, Lookup, Streaming, Waited, bump};
use crate::config::CacheConfig;
use crate::policy::{CachePolicy, HeaderEdit, ResponseChanges, ResponseSource};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

type Served = Result<(Response<ResponseBody>, Option<Arc<str>>), ProxyError>;

/// A request's relation to the cache, fixed once the policy has decided.
#[derive(Clone)]
pub(super) struct CacheRequest {
    cache: Arc<Cache>,
    /// The store key: the policy's, or else the normalised URL itself (one allocation).
    key: Bytes,
    /// The normalised URL when the policy chose a key of its own.
    own_url: Option<Box<str>>,
    policy: CachePolicy,
    facts: RequestFacts,
}

impl CacheRequest {
    pub fn new(
        cache: Arc<Cache>,
        url: String,
        mut policy: CachePolicy,
        parts: &http::request::Parts,
    ) -> Self {
        let (key, own_url) = match policy.key.take() {
            Some(k) => (Bytes::from(k), Some(url.into_boxed_str())),
            None => (Bytes::from(url), None),
        };
        let lookup = parts.method == Method::GET || parts.method == Method::HEAD;
        let facts = RequestFacts {
            method: parts.method.clone(),
            authorization: parts.headers.contains_key(header::AUTHORIZATION),
            directives: if lookup {
                RequestDirectives::parse(&parts.headers)
            } else {
                RequestDirectives::default()
            },
        };
        CacheRequest {
            cache,
            key,
            own_url,
            policy,
            facts,
        }
    }

    /// The normalised URL of the request (the default key).
    fn url(&self) -> &str {
        match &self.own_url {
            Some(u) => u,
            // The default key is built from `&str`s, so it is UTF-8.
            None => std::str::from_utf8(&self.key).unwrap_or_default(),
        }
    }
}

/// The `Cache-Status` field (RFC 9211) of one response.
#[derive(Default, Clone, Copy)]
struct Status {
    hit: bool,
    fwd: Option<&'static str>,
    fwd_status: Option<u16>,
    stored: bool,
    ttl: Option<i64>,
    collapsed: bool,
    detail: Option<&'static str>,
}

impl Status {
    fn fwd(why: &'static str) -> Status {
        Status {
            fwd: Some(why),
            ..Status::default()
        }
    }

    fn render(&self, name: &str) -> HeaderValue {
        use std::fmt::Write;
        // Written on the stack and copied once into the value: one allocation.
        let mut s = StackStr::default();
        let _ = s.write_str(name);
        if self.hit {
            let _ = s.write_str("; hit");
        } else if let Some(f) = self.fwd {
            let _ = write!(s, "; fwd={f}");
        }
        if let Some(code) = self.fwd_status {
            let _ = write!(s, "; fwd-status={code}");
        }
        if self.stored {
            let _ = s.write_str("; stored");
        }
        if let Some(t) = self.ttl {
            let _ = write!(s, "; ttl={t}");
        }
        if self.collapsed {
            let _ = s.write_str("; collapsed");
        }
        if let Some(d) = self.detail {
            let _ = write!(s, "; detail={d}");
        }
        let value = match &s.spill {
            Some(long) => HeaderValue::from_str(long),
            None => HeaderValue::from_bytes(&s.buf[..s.len]),
        };
        value.expect("cache name is a validated token")
    }
}

/// A string written on the stack, moved to the heap only if it outgrows 128 bytes.
struct StackStr {
    buf: [u8; 128],
    len: usize,
    spill: Option<String>,
}

impl Default for StackStr {
    fn default() -> Self {
        StackStr {
            buf: [0; 128],
            len: 0,
            spill: None,
        }
    }
}

impl std::fmt::Write for StackStr {
    fn write_str(&mut self, part: &str) -> std::fmt::Result {
        if let Some(long) = &mut self.spill {
            long.push_str(part);
        } else if self.len + part.len() <= self.buf.len() {
            self.buf[self.len..self.len + part.len()].copy_from_slice(part.as_bytes());
            self.len += part.len();
        } else {
            let mut long = String::from_utf8_lossy(&self.buf[..self.len]).into_owned();
            long.push_str(part);
            self.spill = Some(long);
        }
        Ok(())
    }
}

/// What a stored response can do for a request.
enum Use {
    Fresh,
    /// Serve it stale without asking the origin; the detail says under which rule.
    Stale(&'static str),
    /// Go upstream (`fwd=` this).
    Forward(&'static str),
}

fn usability(obj: &Object, req: &RequestDirectives, now: Instant) -> Use {
    let fresh = obj.is_fresh(now) && obj.directives.no_cache != Qualified::All;
    let fwd = if fresh { "request" } else { "stale" };
    if req.no_cache {
        return Use::Forward(fwd);
    }
    if let Some(max) = req.max_age {
        // RFC 8246: a fresh immutable response is not revalidated because a client reloads.
        if obj.age(now) > Duration::from_secs(max) && !(fresh && obj.directives.immutable) {
            return Use::Forward(fwd);
        }
    }
    if let Some(min) = req.min_fresh {
        if obj.ttl(now) < min as i64 {
            return Use::Forward(fwd);
        }
    }
    if fresh {
        return Use::Fresh;
    }
    if obj.directives.forbids_stale() {
        return Use::Forward("stale");
    }
    let staleness = obj.staleness(now);
    // A client's max-stale cannot override s-maxage (RFC 9111 §5.2.2.10: it implies
    // proxy-revalidate).
    if let Some(max) = req.max_stale {
        if obj.directives.s_maxage.is_none()
            && max.is_none_or(|m| staleness <= Duration::from_secs(m))
        {
            return Use::Stale("max-stale");
        }
    }
    if cache::within(staleness, obj.directives.stale_while_revalidate) {
        return Use::Stale("stale-while-revalidate");
    }
    Use::Forward("stale")
}

/// Whether `obj` may stand in for an upstream failure, and under which rule: the client's
/// or the origin's `stale-if-error` (RFC 5861 §4), else the cache's own `stale_on_error`
/// bound for an origin it cannot reach (RFC 9111 §4.2.4: a disconnected cache may serve
/// stale), which `s-maxage` also forbids (it implies `proxy-revalidate`, §5.2.2.10).
fn stale_for_error(
    obj: &Object,
    req: &RequestDirectives,
    config: &CacheConfig,
    now: Instant,
) -> Option<&'static str> {
    if obj.directives.forbids_stale() {
        return None;
    }
    let staleness = obj.staleness(now);
    if cache::within(staleness, req.stale_if_error)
        || cache::within(staleness, obj.directives.stale_if_error)
    {
        return Some("stale-if-error");
    }
    (!config.stale_on_error.is_zero()
        && staleness <= config.stale_on_error
        && obj.directives.s_maxage.is_none())
    .then_some("stale-on-error")
}

/// The statuses RFC 5861 counts as errors.
fn is_error_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 500 | 502 | 503 | 504)
}

/// What a fetch may store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Nothing: the request goes upstream as it is.
    Nothing,
    /// The complete response: the client's conditions are taken off the request and
    /// answered from the response afterwards.
    Whole,
    /// What a range request gets as it is: a 206 as a part, a 200 whole.
    Part,
}

/// Request fields that make a conditional or partial request.
const CONDITIONALS: [HeaderName; 3] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_RANGE,
];

impl Proxy {
    /// Forwards or serves a request through the cache.
    pub(super) async fn through_cache(
        self: &Arc<Self>,
        c: CacheRequest,
        out: Outbound,
        req: Request<RequestBody>,
    ) -> Served {
        let method = req.method().clone();
        if method != Method::GET && method != Method::HEAD {
            let invalidating = method != Method::OPTIONS && method != Method::TRACE;
            let (resp, endpoint) = self.pass(&c, &out, req, Status::fwd("method")).await?;
            if invalidating && (resp.status().is_success() || resp.status().is_redirection()) {
                self.invalidate_after_unsafe(&c, resp.headers());
            }
            return Ok((resp, endpoint));
        }
        if c.policy.bypass {
            bump(&c.cache.stats.bypasses);
            return self.pass(&c, &out, req, Status::fwd("bypass")).await;
        }
        let head = method == Method::HEAD;
        let ranged = req.headers().contains_key(header::RANGE);
        // Without the store's help (a request it must not answer), what it may still keep.
        let keep = match (ranged, head) {
            (_, true) => Keep::Nothing,
            (true, false) => Keep::Part,
            (false, false) => Keep::Whole,
        };
        let dirs = &c.facts.directives;
        let mut collapsed = false;
        // The shared tier is asked once per request, by the request leading the key's fetch.
        let mut shared_asked = self.fleet.is_none();
        // What the shared tier returned, in case the memory cache did not keep it (a small
        // or busy store may evict it, or not admit it, before the lookup that follows).
        let mut shared_hit: Option<Arc<Object>> = None;
        loop {
            let now = Instant::now();
            let found = match (c.cache.lookup(&c.key, req.headers()), shared_hit.clone()) {
                (Lookup::Miss | Lookup::VaryMiss, Some(o)) => Lookup::Found(o),
                (found, _) => found,
            };
            let (obj, why) = match found {
                Lookup::Found(obj)
                    if c.facts.authorization && !obj.directives.allows_authorized() =>
                {
                    // RFC 9111 §3.5 protects what was stored for one user from another.
                    let st = Status {
                        detail: Some("authorization"),
                        ..Status::fwd("request")
                    };
                    return self.fetch(&c, &out, req, None, None, st, keep).await;
                }
                Lookup::Found(obj) => match usability(&obj, dirs, now) {
                    Use::Fresh => {
                        bump(&c.cache.stats.hits);
                        let st = Status {
                            hit: true,
                            collapsed,
                            detail: shared_hit.is_some().then_some("shared"),
                            ..Status::default()
                        };
                        return Ok((self.serve(&c, &out, req.headers(), &obj, st, false), None));
                    }
                    Use::Stale(detail) => {
                        bump(&c.cache.stats.stale_served);
                        if detail == "stale-while-revalidate" {
                            self.refresh_in_background(&c, &out, &req, obj.clone());
                        }
                        let st = Status {
                            hit: true,
                            collapsed,
                            detail: Some(detail),
                            ..Status::default()
                        };
                        return Ok((self.serve(&c, &out, req.headers(), &obj, st, false), None));
                    }
                    Use::Forward(why) => (Some(obj), why),
                },
                Lookup::Miss => (None, "uri-miss"),
                Lookup::VaryMiss => (None, "vary-miss"),
                Lookup::Uncacheable => {
                    bump(&c.cache.stats.hit_for_miss);
                    let st = Status {
                        detail: Some("hit-for-miss"),
                        ..Status::fwd("uri-miss")
                    };
                    return self.fetch(&c, &out, req, None, None, st, keep).await;
                }
                Lookup::Parts(p) => {
                    let usable = ranged
                        && !head
                        && (!c.facts.authorization || p.head.directives.allows_authorized())
                        && !CONDITIONALS[..2]
                            .iter()
                            .any(|h| req.headers().contains_key(h))
                        && matches!(usability(&p.head, dirs, now), Use::Fresh);
                    if let Some(resp) = usable
                        .then(|| self.serve_part(&c, &out, req.headers(), &p))
                        .flatten()
                    {
                        bump(&c.cache.stats.hits);
                        return Ok((resp, None));
                    }
                    (None, "partial")
                }
            };
            if dirs.only_if_cached {
                return Ok((self.only_if_cached(&c, &out), None));
            }
            if obj.is_none() && !collapsed {
                // Once per request, not again after waiting on another's fetch.
                bump(&c.cache.stats.misses);
            }
            let st = Status::fwd(why);
            // A range request goes upstream as it is and may store a part (or the whole
            // response if that is the answer); a HEAD that is not converted into a GET stores
            // nothing, but a 200 to it may update what is stored (RFC 9111 §4.3.5), so it
            // takes the stored response along.
            if ranged || (head && !c.cache.config().convert_head) {
                let obj = obj.filter(|_| head);
                return self.fetch(&c, &out, req, obj, None, st, keep).await;
            }
            let keep = Keep::Whole;
            match c.cache.join(&c.key) {
                Ok(mut leader) if !shared_asked && obj.is_none() => {
                    shared_asked = true;
                    let fleet = self.fleet.as_ref().expect("asked only with a fleet");
                    match fleet.find_or_lock(&c.key, req.headers()).await {
                        crate::fleet::Shared::Hit(object) => {
                            // Stored here, the flight ends: this request and those waiting
                            // on it find it in the memory cache.
                            shared_hit = Some(c.cache.insert_from_tier(c.key.clone(), *object));
                            drop(leader);
                            continue;
                        }
                        crate::fleet::Shared::Fetch(lock) => {
                            if let Some(lock) = lock {
                                leader.hold(Box::new(lock));
                            }
                            return self.fetch(&c, &out, req, obj, Some(leader), st, keep).await;
                        }
                    }
                }
                Ok(leader) => return self.fetch(&c, &out, req, obj, Some(leader), st, keep).await,
                Err(flight) if !collapsed => {
                    collapsed = true;
                    // A plain GET can read the leader's response while it arrives; a HEAD or
                    // a conditional request waits for the stored object.
                    let stream =
                        !head && !CONDITIONALS.iter().any(|h| req.headers().contains_key(h));
                    match c.cache.wait(flight, stream).await {
                        Waited::Done => continue,
                        Waited::Streaming(s) => {
                            bump(&c.cache.stats.streamed);
                            return Ok((self.serve_streaming(&c, &out, &s), None));
                        }
                        Waited::TimedOut => {}
                    }
                    let st = Status {
                        detail: Some("coalesce-timeout"),
                        ..st
                    };
                    return self.fetch(&c, &out, req, obj, None, st, keep).await;
                }
                Err(_) => return self.fetch(&c, &out, req, obj, None, st, keep).await,
            }
        }
    }

    /// Forwards without looking up or storing.
    async fn pass(
        &self,
        c: &CacheRequest,
        out: &Outbound,
        req: Request<RequestBody>,
        st: Status,
    ) -> Served {
        let mut answer = out.route.send(req).await?;
        let changes = match self.upstream_phase(out, &mut answer) {
            Ok(changes) => changes,
            Err(instead) => return Ok((*instead, Some(answer.endpoint))),
        };
        Ok(self.upstream_response(c, out, answer, st, None, &changes.edits))
    }

    /// The response phase on an upstream answer (its head without hop-by-hop fields).
    fn upstream_phase(
        &self,
        out: &Outbound,
        answer: &mut Answer,
    ) -> Result<ResponseChanges, Box<Response<ResponseBody>>> {
        if out.hook.is_none() {
            return Ok(ResponseChanges::default());
        }
        let status = answer.response.status();
        let headers = answer.response.headers_mut();
        super::headers::strip_hop_by_hop(headers);
        self.response_phase(
            out,
            status,
            headers,
            ResponseSource::Upstream,
            Some(&answer.endpoint),
        )
    }

    /// The response head and body from upstream, with the cache's header fields.
    fn upstream_response(
        &self,
        c: &CacheRequest,
        out: &Outbound,
        answer: Answer,
        st: Status,
        fill: Option<Fill>,
        extra: &[HeaderEdit],
    ) -> (Response<ResponseBody>, Option<Arc<str>>) {
        let (mut rp, incoming) = answer.response.into_parts();
        let mut body = self.upstream_body(&mut rp, incoming, answer.conn);
        body.hold(answer.held);
        if let Some(f) = fill {
            body.fill(f);
        }
        // Tags are for the cache, not for clients.
        rp.headers.remove("surrogate-key");
        rp.headers.remove("cache-tag");
        self.mark(c, &mut rp.headers, st, false);
        self.finish(out, &mut rp, extra);
        (Response::from_parts(rp, body), Some(answer.endpoint))
    }

    /// The cache's own fields on a response to the client: `Cache-Status`, `X-Cache`; and the
    /// targeted fields go unless `forward_targeted`.
    fn mark(&self, c: &CacheRequest, h: &mut HeaderMap, st: Status, from_store: bool) {
        if !c.cache.config().forward_targeted {
            for name in &c.cache.config().targeted {
                h.remove(name);
            }
        }
        h.insert(
            HeaderName::from_static("cache-status"),
            st.render(&c.cache.config().name),
        );
        if c.cache.config().x_cache {
            h.insert(
                HeaderName::from_static("x-cache"),
                HeaderValue::from_static(if from_store { "HIT" } else { "MISS" }),
            );
        }
    }

    /// Goes upstream for a request the store could not answer: conditionally when
    /// `validating` has validators, storing what `keep` says when RFC 9111 allows.
    /// `leader` (this request's claim on the key) is held until the object is stored. A HEAD
    /// to store for is sent as a GET (`convert_head`): the client gets the head, the body
    /// goes on into the cache.
    #[allow(clippy::too_many_arguments)]
    async fn fetch(
        self: &Arc<Self>,
        c: &CacheRequest,
        out: &Outbound,
        req: Request<RequestBody>,
        validating: Option<Arc<Object>>,
        leader: Option<Leader>,
        mut st: Status,
        keep: Keep,
    ) -> Served {
        let (mut parts, body) = req.into_parts();
        let mut client = HeaderMap::new();
        let mut request_headers = HeaderMap::new();
        let head = c.facts.method == Method::HEAD;
        let whole = keep == Keep::Whole;
        let converted = whole && head;
        if converted {
            parts.method = Method::GET;
        }
        if whole {
            // Fetch the full response to fill the cache; the client's own conditions are
            // answered from it afterwards.
            for name in CONDITIONALS {
                if let Some(v) = parts.headers.remove(&name) {
                    client.insert(name, v);
                }
            }
            if let Some(obj) = &validating {
                if let Some(etag) = &obj.etag {
                    parts.headers.insert(header::IF_NONE_MATCH, etag.clone());
                }
                if let Some(lm) = obj.headers.get(header::LAST_MODIFIED) {
                    parts.headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
                }
                if obj.has_validator() {
                    bump(&c.cache.stats.revalidations);
                }
            }
        }
        if keep != Keep::Nothing {
            request_headers = parts.headers.clone();
        }
        let sent = Instant::now();
        let result = out.route.send(Request::from_parts(parts, body)).await;
        let when = Exchange {
            request_sent: sent,
            response_at: Instant::now(),
            response_wall: SystemTime::now(),
        };
        let now = when.response_at;
        let answer = match result {
            Ok(a) => a,
            Err(e) => {
                let stale = validating.and_then(|o| {
                    let rule = stale_for_error(&o, &c.facts.directives, &c.cache.config(), now)?;
                    Some((o, rule))
                });
                if let Some((obj, rule)) = stale.filter(|_| e.side != Side::Client) {
                    tracing::debug!(error = %e, url = %c.url(), rule, "serving stale");
                    bump(&c.cache.stats.stale_served);
                    let st = Status {
                        detail: Some(rule),
                        ..Status::fwd("stale")
                    };
                    return Ok((self.serve(c, out, &client, &obj, st, false), None));
                }
                return Err(e);
            }
        };
        let status = answer.response.status();
        if st.fwd == Some("stale") || st.fwd == Some("request") {
            st.fwd_status = Some(status.as_u16());
        }
        if let Some(obj) = &validating {
            if status == StatusCode::NOT_MODIFIED && whole {
                bump(&c.cache.stats.not_modified);
                let meta = Meta::refreshed(
                    obj,
                    answer.response.headers(),
                    c.policy.ttl_secs,
                    when,
                    &c.cache.config(),
                );
                let fresh = c.cache.insert(
                    c.key.clone(),
                    Object::new(meta, obj.body.clone(), c.key.len()),
                );
                drop(leader);
                // The 304's (empty) body, read so the connection can be reused.
                drop(self.upstream_response(c, out, answer, st, None, &[]));
                st.stored = true;
                return Ok((self.serve(c, out, &client, &fresh, st, true), None));
            }
            let rule = is_error_status(status)
                .then(|| stale_for_error(obj, &c.facts.directives, &c.cache.config(), now))
                .flatten()
                .filter(|r| *r == "stale-if-error" || c.cache.config().stale_on_5xx);
            if let Some(rule) = rule {
                bump(&c.cache.stats.stale_served);
                drop(self.upstream_response(c, out, answer, st, None, &[]));
                st.detail = Some(rule);
                return Ok((self.serve(c, out, &client, obj, st, false), None));
            }
            if head && keep == Keep::Nothing && status == StatusCode::OK {
                self.update_from_head(c, obj, answer.response.headers(), when);
            }
        }
        let mut answer = answer;
        let changes = match self.upstream_phase(out, &mut answer) {
            Ok(changes) => changes,
            Err(instead) => return Ok((*instead, Some(answer.endpoint))),
        };
        let store = keep != Keep::Nothing && !changes.no_store;
        let ttl = changes.ttl_secs.or(c.policy.ttl_secs);
        let mut fill = None;
        if store {
            let response = answer.response.headers();
            let length = response
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            // A part is stored only if it can be combined, and the whole must fit.
            let part = (status == StatusCode::PARTIAL_CONTENT)
                .then(|| partial::storable_range(response))
                .flatten()
                .filter(|r| length.is_none_or(|n| n == r.bytes()));
            let too_large = length.is_some_and(|n| n > c.cache.config().max_object_size)
                || part.is_some_and(|r| r.complete > c.cache.config().max_object_size);
            let as_get;
            let facts = if converted {
                as_get = RequestFacts {
                    method: Method::GET,
                    ..c.facts.clone()
                };
                &as_get
            } else {
                &c.facts
            };
            let cx = Context {
                request_headers: &request_headers,
                config: &c.cache.config(),
            };
            let evaluated = match (keep, part) {
                (Keep::Part, Some(_)) => {
                    Meta::evaluate_part(facts, cx, response, ttl, c.url(), when)
                }
                (Keep::Part, None) if status != StatusCode::OK => Err("part"),
                _ => Meta::evaluate(facts, cx, status, response, ttl, c.url(), when),
            };
            match evaluated {
                Ok(mut meta) if !too_large => {
                    for t in c.policy.tags.iter().chain(&changes.tags) {
                        if !meta.tags.iter().any(|x| **x == **t) {
                            meta.tags.push(t.as_str().into());
                        }
                    }
                    st.stored = true;
                    let (cache, key) = (c.cache.clone(), c.key.clone());
                    fill = Some(match part {
                        Some(range) => Fill::part(cache, key, meta, range),
                        None => Fill::new(cache, key, meta, length, leader),
                    });
                }
                Ok(_) if part.is_some() => {}
                Ok(_) => c.cache.mark_uncacheable(&c.key),
                // What this request asked, not what the resource is (others may store it),
                // or an answer to a range request that cannot be a stored part.
                Err("request no-store" | "authorization" | "part") => {}
                Err(reason) => {
                    tracing::trace!(url = %c.url(), reason, "not storing");
                    if validating.is_some() && !is_error_status(status) {
                        // The origin no longer lets it be cached.
                        c.cache.purge_key(&c.key, false);
                    }
                    c.cache.mark_uncacheable(&c.key);
                }
            }
        }
        let filling = fill.is_some();
        let (mut resp, endpoint) = self.upstream_response(c, out, answer, st, fill, &changes.edits);
        if whole && resp.status() == StatusCode::OK && not_modified(&client, resp.headers()) {
            // The client already has it: answer 304 and finish filling the cache without it.
            let body = std::mem::replace(resp.body_mut(), ResponseBody::empty());
            tokio::spawn(drain(body));
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            keep_304_fields(resp.headers_mut());
        } else if converted {
            // The client asked HEAD: the body only fills the cache (one not stored is dropped,
            // which closes its upstream connection rather than read what nobody wants).
            let body = std::mem::replace(resp.body_mut(), ResponseBody::empty());
            if filling {
                tokio::spawn(drain(body));
            }
        }
        Ok((resp, endpoint))
    }

    /// RFC 9111 §4.3.5: a 200 to a HEAD updates the stored GET response it would have
    /// selected when every validator it carries (`ETag`, `Last-Modified`) and its
    /// `Content-Length` agree with the stored ones, and otherwise makes that response stale.
    /// A HEAD answer with none of the three proves nothing, nor may one that forbids storing
    /// update anything: both make it stale too.
    fn update_from_head(&self, c: &CacheRequest, obj: &Object, head: &HeaderMap, when: Exchange) {
        let agrees = |name: &HeaderName| {
            head.get(name)
                .is_none_or(|v| obj.headers.get(name) == Some(v))
        };
        let length_agrees = head.get(header::CONTENT_LENGTH).is_none_or(|v| {
            v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()) == Some(obj.body.len())
        });
        let proof = [header::ETAG, header::LAST_MODIFIED, header::CONTENT_LENGTH]
            .iter()
            .any(|n| head.contains_key(n));
        if proof && agrees(&header::ETAG) && agrees(&header::LAST_MODIFIED) && length_agrees {
            let meta = Meta::refreshed(obj, head, c.policy.ttl_secs, when, &c.cache.config());
            if !meta.directives.no_store && !matches!(meta.directives.private, Qualified::All) {
                c.cache.insert(
                    c.key.clone(),
                    Object::new(meta, obj.body.clone(), c.key.len()),
                );
                return;
            }
        }
        obj.invalidate();
    }

    /// A response another request is fetching and storing, read as it arrives
    /// (read-while-write): its head as it will be stored, its body from the leader's fill.
    fn serve_streaming(
        &self,
        c: &CacheRequest,
        out: &Outbound,
        s: &Streaming,
    ) -> Response<ResponseBody> {
        let meta = &s.meta;
        let now = Instant::now();
        let mut rp = Response::new(()).into_parts().0;
        rp.status = meta.status;
        rp.headers = meta.headers.clone();
        if let Qualified::Fields(fields) = &meta.directives.no_cache {
            for f in fields {
                rp.headers.remove(f);
            }
        }
        let age = meta.initial_age + now.saturating_duration_since(meta.stored_at).as_secs();
        rp.headers.insert(header::AGE, HeaderValue::from(age));
        rp.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(s.length));
        let st = Status {
            hit: true,
            collapsed: true,
            ttl: Some(meta.lifetime as i64 - age as i64),
            ..Status::default()
        };
        self.answer_from_store(
            c,
            out,
            rp,
            st,
            ResponseBody::streaming(s.reader(), s.length),
        )
    }

    /// The last steps of every response the cache answers itself: its own fields, the
    /// response phase (source `cache`), the decision's edits.
    fn answer_from_store(
        &self,
        c: &CacheRequest,
        out: &Outbound,
        mut rp: http::response::Parts,
        st: Status,
        body: ResponseBody,
    ) -> Response<ResponseBody> {
        self.mark(c, &mut rp.headers, st, true);
        let changes =
            match self.response_phase(out, rp.status, &mut rp.headers, ResponseSource::Cache, None)
            {
                Ok(changes) => changes,
                Err(instead) => return *instead,
            };
        self.finish(out, &mut rp, &changes.edits);
        Response::from_parts(rp, body)
    }

    /// A response from the store.
    fn serve(
        &self,
        c: &CacheRequest,
        out: &Outbound,
        client: &HeaderMap,
        obj: &Object,
        mut st: Status,
        validated: bool,
    ) -> Response<ResponseBody> {
        let now = Instant::now();
        let mut rp = stored_head(obj, validated, now);
        st.ttl = Some(obj.ttl(now));
        let head = c.facts.method == Method::HEAD;
        let mut body = Bytes::new();
        if obj.status == StatusCode::OK && not_modified(client, &obj.headers) {
            rp.status = StatusCode::NOT_MODIFIED;
            keep_304_fields(&mut rp.headers);
        } else {
            body = obj.body.clone();
            if obj.status == StatusCode::OK && !head {
                let len = obj.body.len() as u64;
                let slice = |start, end| Some(obj.body.slice(start as usize..end as usize));
                if let Some((status, content_range, part)) = ranged(client, obj, len, slice) {
                    rp.status = status;
                    rp.headers.insert(header::CONTENT_RANGE, content_range);
                    body = part;
                }
            }
            // Explicit, so a HEAD answer says how long the GET's body is.
            rp.headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            if head {
                body = Bytes::new();
            }
        }
        self.answer_from_store(c, out, rp, st, ResponseBody::full(body))
    }

    /// A range request answered from stored parts (RFC 9111 §3.3), if they hold its range;
    /// `None` to go upstream.
    fn serve_part(
        &self,
        c: &CacheRequest,
        out: &Outbound,
        client: &HeaderMap,
        p: &Partial,
    ) -> Option<Response<ResponseBody>> {
        let (status, content_range, body) =
            ranged(client, &p.head, p.complete, |start, end| p.get(start, end))?;
        let now = Instant::now();
        let mut rp = stored_head(&p.head, false, now);
        rp.status = status;
        rp.headers.insert(header::CONTENT_RANGE, content_range);
        rp.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let st = Status {
            hit: true,
            ttl: Some(p.head.ttl(now)),
            ..Status::default()
        };
        Some(self.answer_from_store(c, out, rp, st, ResponseBody::full(body)))
    }

    /// RFC 9111 §5.2.1.7: nothing usable stored and the client will not wait for upstream.
    fn only_if_cached(&self, c: &CacheRequest, out: &Outbound) -> Response<ResponseBody> {
        let mut rp = Response::new(()).into_parts().0;
        rp.status = StatusCode::GATEWAY_TIMEOUT;
        let st = Status {
            detail: Some("only-if-cached"),
            ..Status::default()
        };
        self.mark(c, &mut rp.headers, st, false);
        self.finish(out, &mut rp, &[]);
        Response::from_parts(rp, ResponseBody::empty())
    }

    /// stale-while-revalidate: refreshes `obj` upstream off the request path, unless a fetch
    /// of its key is already under way.
    fn refresh_in_background(
        self: &Arc<Self>,
        c: &CacheRequest,
        out: &Outbound,
        req: &Request<RequestBody>,
        obj: Arc<Object>,
    ) {
        let Ok(leader) = c.cache.join(&c.key) else {
            return;
        };
        let mut head = Request::new(RequestBody::empty());
        *head.method_mut() = Method::GET;
        *head.uri_mut() = req.uri().clone();
        *head.version_mut() = req.version();
        *head.headers_mut() = req.headers().clone();
        let mut c = c.clone();
        c.facts = RequestFacts {
            method: Method::GET,
            authorization: c.facts.authorization,
            directives: RequestDirectives::default(),
        };
        let out = out.clone();
        let proxy = self.clone();
        tokio::spawn(async move {
            let st = Status::fwd("stale");
            match proxy
                .fetch(&c, &out, head, Some(obj), Some(leader), st, Keep::Whole)
                .await
            {
                Ok((resp, _)) => drain(resp.into_body()).await,
                Err(e) => {
                    tracing::debug!(url = %c.url(), error = %e, "background revalidation failed")
                }
            }
        });
    }

    /// RFC 9111 §4.4: a successful unsafe request invalidates its target URI and the
    /// same-origin URIs in `Location` and `Content-Location`.
    fn invalidate_after_unsafe(&self, c: &CacheRequest, response: &HeaderMap) {
        c.cache.invalidate(&c.key);
        if c.key.as_ref() != c.url().as_bytes() {
            c.cache.invalidate(c.url().as_bytes());
        }
        let origin = cache::key::origin_of(c.url());
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(v) = response.get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let target = if v.starts_with('/') && !v.starts_with("//") {
                Some(format!("{origin}{v}")).and_then(|u| cache::key::key_of_url(&u).ok())
            } else {
                cache::key::key_of_url(v)
                    .ok()
                    .filter(|k| cache::key::origin_of(k) == origin)
            };
            if let Some(k) = target {
                c.cache.invalidate(k.as_bytes());
            }
        }
    }
}

/// Reads a body to its end (which completes a cache fill) and drops it.
async fn drain(mut body: ResponseBody) {
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
}

/// Whether the client's `If-None-Match` / `If-Modified-Since` (RFC 9110 §13.1.2, §13.1.3)
/// are satisfied by a response with these header fields, so it can be answered 304.
fn not_modified(client: &HeaderMap, stored: &HeaderMap) -> bool {
    let inm: Vec<&HeaderValue> = client.get_all(header::IF_NONE_MATCH).iter().collect();
    if !inm.is_empty() {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return inm.iter().any(|v| v.as_bytes() == b"*");
        };
        let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
        let ours = opaque(etag);
        // Weak comparison (§8.8.3.2).
        return inm
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim() == "*" || opaque(t) == ours);
    }
    let Some(since) = crate::cache::directives::date(client, &header::IF_MODIFIED_SINCE).flatten()
    else {
        return false;
    };
    crate::cache::directives::date(stored, &header::LAST_MODIFIED)
        .flatten()
        .is_some_and(|lm| lm <= since)
}

/// Keeps what a 304 carries (RFC 9110 §15.4.5) plus our own fields.
fn keep_304_fields(h: &mut HeaderMap) {
    const KEEP: [&str; 11] = [
        "cache-control",
        "cdn-cache-control",
        "content-location",
        "date",
        "etag",
        "expires",
        "vary",
        "last-modified",
        "age",
        "cache-status",
        "x-cache",
    ];
    let drop: Vec<HeaderName> = h
        .keys()
        .filter(|n| !KEEP.contains(&n.as_str()))
        .cloned()
        .collect();
    for n in drop {
        h.remove(n);
    }
}

/// The head of a stored response as it goes out: its fields but those `no-cache="field"`
/// names unless `validated`, and its `Age`.
fn stored_head(obj: &Object, validated: bool, now: Instant) -> http::response::Parts {
    let mut rp = Response::new(()).into_parts().0;
    rp.status = obj.status;
    rp.headers = obj.headers.clone();
    if !validated {
        if let Qualified::Fields(fields) = &obj.directives.no_cache {
            for f in fields {
                rp.headers.remove(f);
            }
        }
    }
    rp.headers
        .insert(header::AGE, HeaderValue::from(obj.age(now).as_secs()));
    rp
}

/// The answer to the client's range request from a stored representation of `len` bytes
/// (`obj`'s validators; `get` gives bytes `start..end`): its status, `Content-Range` and
/// body. `None` when the request is to be answered without a range, or `get` does not have
/// the bytes.
fn ranged(
    client: &HeaderMap,
    obj: &Object,
    len: u64,
    get: impl FnOnce(u64, u64) -> Option<Bytes>,
) -> Option<(StatusCode, HeaderValue, Bytes)> {
    let field = |s: String| HeaderValue::from_str(&s).expect("digits");
    match range(client, obj, len) {
        Range::Full => None,
        Range::Part(start, end) => Some((
            StatusCode::PARTIAL_CONTENT,
            field(format!("bytes {start}-{}/{len}", end - 1)),
            get(start, end)?,
        )),
        Range::Unsatisfiable => Some((
            StatusCode::RANGE_NOT_SATISFIABLE,
            field(format!("bytes */{len}")),
            Bytes::new(),
        )),
    }
}

enum Range {
    Full,
    /// `start..end` of the body.
    Part(u64, u64),
    Unsatisfiable,
}

/// A single `bytes` range of a stored representation of `len` bytes (RFC 9110 §14.1.2);
/// anything else (several ranges, another unit, bad syntax, an `If-Range` that does not
/// match) is answered in full, which §14.2 allows.
fn range(client: &HeaderMap, obj: &Object, len: u64) -> Range {
    let Some(spec) = client.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Range::Full;
    };
    if let Some(cond) = client.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        let matches = if cond.starts_with('"') {
            // Strong comparison only.
            obj.etag.as_ref().and_then(|e| e.to_str().ok()) == Some(cond)
        } else {
            obj.headers
                .get(header::LAST_MODIFIED)
                .and_then(|v| v.to_str().ok())
                == Some(cond)
        };
        if !matches {
            return Range::Full;
        }
    }
    let Some(set) = spec.trim().strip_prefix("bytes=") else {
        return Range::Full;
    };
    if set.contains(',') {
        return Range::Full;
    }
    let Some((a, b)) = set.trim().split_once('-') else {
        return Range::Full;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => match num(suffix) {
            Some(0) => return Range::Unsatisfiable,
            Some(n) => (len.saturating_sub(n), len),
            None => return Range::Full,
        },
        (first, "") => match num(first) {
            Some(f) => (f, len),
            None => return Range::Full,
        },
        (first, last) => match (num(first), num(last)) {
            (Some(f), Some(l)) if f <= l => (f, (l + 1).min(len)),
            _ => return Range::Full,
        },
    };
    if start >= len {
        return Range::Unsatisfiable;
    }
    Range::Part(start, end)
}
