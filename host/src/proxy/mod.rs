//! The request pipeline: validate -> policy decides -> pick upstream -> edit headers ->
//! forward -> respond.
//!
//! `proxy/` never touches a listening socket and never names a TLS or Wasm type: it gets a
//! request plus [`ConnInfo`], asks the [`PolicyRuntime`] for a decision in plain Rust types,
//! and returns a response. Errors become responses in one place
//! ([`error::ProxyError::to_response`]).

mod attempt;
pub mod body;
mod cached;
pub mod error;
pub mod forwarded;
pub mod headers;
mod log;
mod upgrade;

use crate::cache::{self, Cache};
use crate::config::{Config, FailMode, Limits, ProxySettings, Timeouts, UpstreamProtocol};
use crate::policy::{
    Decision, Forward, HeaderEdit, LocalResponse, PolicyRequest, PolicyRuntime, ResponseAction,
    ResponseChanges, ResponseHook, ResponseSource, Verdict,
};
use crate::upstream::connection::SendError;
use crate::upstream::{Pool, PoolTable, chain};
use attempt::Answer;
use body::{BodyTooLarge, RequestBody, ResponseBody};
use error::{ErrorKind, ProxyError};
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Facts about the downstream connection a request arrived on.
#[derive(Debug)]
pub struct ConnInfo {
    pub client: SocketAddr,
    pub tls: bool,
    pub sni: Option<Arc<str>>,
    /// The listener: its name (for logs) and counters.
    pub listener: Arc<crate::metrics::ListenerStats>,
    /// Per-connection activity, read by the listener's idle watchdog.
    pub activity: crate::activity::Activity,
    /// `client`'s IP address as an `X-Forwarded-For` element, made once per connection.
    pub forwarded_for: HeaderValue,
}

impl ConnInfo {
    pub fn new(
        client: SocketAddr,
        tls: bool,
        sni: Option<Arc<str>>,
        listener: Arc<crate::metrics::ListenerStats>,
        activity: crate::activity::Activity,
    ) -> ConnInfo {
        let forwarded_for = HeaderValue::try_from(client.ip().to_string())
            .expect("an IP address is a valid header value");
        ConnInfo {
            client,
            tls,
            sni,
            listener,
            activity,
            forwarded_for,
        }
    }
}

/// Precomputed `Via` values, one per received HTTP version.
struct ViaValues {
    h10: HeaderValue,
    h11: HeaderValue,
    h2: HeaderValue,
}

impl ViaValues {
    fn new(name: &str) -> Self {
        let v = |ver| {
            HeaderValue::from_str(&headers::via_value(ver, name)).expect("validated via_name")
        };
        ViaValues {
            h10: v(Version::HTTP_10),
            h11: v(Version::HTTP_11),
            h2: v(Version::HTTP_2),
        }
    }

    fn for_version(&self, v: Version) -> &HeaderValue {
        match v {
            Version::HTTP_10 | Version::HTTP_09 => &self.h10,
            Version::HTTP_2 => &self.h2,
            _ => &self.h11,
        }
    }
}

/// Where and how a request goes upstream; owned, so a background revalidation can use it
/// after the client's request is done.
#[derive(Clone)]
struct Route {
    pool: Arc<Pool>,
    named: Option<usize>,
    key: Option<Vec<u8>>,
    algorithm: Option<crate::balance::Algorithm>,
    client: std::net::IpAddr,
    fixed_authority: Option<http::uri::Authority>,
    retries: u32,
    timeout: std::time::Duration,
}

impl Route {
    async fn send(&self, req: Request<RequestBody>) -> Result<Answer, ProxyError> {
        attempt::Attempts {
            pool: &self.pool,
            named: self.named,
            key: self.key.as_deref(),
            algorithm: self.algorithm,
            client: self.client,
            fixed_authority: self.fixed_authority.as_ref(),
            retries: self.retries,
            idempotent: attempt::is_idempotent(req.method()),
            timeout: self.timeout,
        }
        .run(req)
        .await
    }
}

/// A forwarded request's route and what its response needs at the end.
#[derive(Clone)]
struct Outbound {
    route: Route,
    response_edits: Vec<HeaderEdit>,
    client_version: Version,
    /// The policy's `on-response`, when it has one.
    hook: Option<Arc<ResponseHook>>,
}

/// Everything a request needs, built once per configuration.
pub struct Proxy {
    pools: Arc<PoolTable>,
    policy: Arc<PolicyRuntime>,
    settings: ProxySettings,
    timeouts: Timeouts,
    limits: Limits,
    access_log: Option<Arc<crate::logging::AccessLog>>,
    /// Span export, when `[otlp]` is on.
    spans: Option<Arc<crate::otlp::Exporter>>,
    via: ViaValues,
    cache: Option<Arc<Cache>>,
    /// The shared cache tier behind `cache` (`[cache.shared]`).
    fleet: Option<Arc<crate::fleet::Fleet>>,
}

impl Proxy {
    pub fn new(
        config: &Config,
        pools: Arc<PoolTable>,
        policy: Arc<PolicyRuntime>,
        cache: Option<Arc<Cache>>,
        fleet: Option<Arc<crate::fleet::Fleet>>,
        access_log: Option<Arc<crate::logging::AccessLog>>,
        spans: Option<Arc<crate::otlp::Exporter>>,
    ) -> Proxy {
        Proxy {
            pools,
            policy,
            cache,
            fleet,
            via: ViaValues::new(&config.proxy.via_name),
            settings: config.proxy.clone(),
            timeouts: config.timeouts,
            limits: config.limits,
            access_log,
            spans,
        }
    }

    /// Serves one request. Never fails: errors become local responses.
    pub async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Response<ResponseBody> {
        let start = Instant::now();
        let guard = conn.activity.request_started(req.version());
        if req.version() != http::Version::HTTP_2 && !http_body::Body::is_end_stream(req.body()) {
            conn.activity.linger_on_close();
        }
        let sampling = self.spans.as_ref().map(|s| s.sample_ratio);
        let client = forwarded::admit(
            &self.settings,
            conn.client.ip(),
            req.headers_mut(),
            sampling,
        );
        let record = (self.access_log.is_some() || client.span.is_some())
            .then(|| log::AccessRecord::new(&req, &conn, &client, start));
        let (version, method) = (req.version(), req.method().clone());
        let mut routed = log::Routed::default();
        let (mut resp, upstream) = match self.forward(req, &conn, &client, &mut routed).await {
            Ok(r) => r,
            Err(e) => {
                match e.side {
                    error::Side::Client => {
                        tracing::debug!(client = %conn.client, error = %e, "request rejected")
                    }
                    _ => tracing::warn!(client = %conn.client, error = %e, "request failed"),
                }
                (e.to_response(), None)
            }
        };
        let status = resp.status();
        conn.listener.request(version, &method, status.as_u16());
        let record = record.map(|r| r.finish(status, resp.headers(), upstream, &routed));
        resp.body_mut().set_on_complete(Box::new(log::Completion {
            guard,
            record,
            log: self.access_log.clone(),
            spans: client.span.and(self.spans.clone()),
            pool: routed.pool.map(|p| p.stats.clone()),
            start,
        }));
        resp
    }

    /// Forwards or answers `req`; says in `routed` which revision decided what, and where to.
    async fn forward(
        self: &Arc<Self>,
        req: Request<Incoming>,
        conn: &ConnInfo,
        client: &forwarded::Client,
        routed: &mut log::Routed,
    ) -> Result<(Response<ResponseBody>, Option<Arc<str>>), ProxyError> {
        let (parts, body) = req.into_parts();
        if parts.method == http::Method::CONNECT {
            // We are a reverse proxy, not a tunnel for arbitrary destinations.
            return Err(ProxyError::new(ErrorKind::MethodNotSupported, "CONNECT"));
        }
        let authority = request_authority(&parts)?;
        check_framing(&parts, &self.limits)?;

        let (returned, verdict, hook, revision) = self.policy.decide(PolicyRequest {
            parts,
            authority,
            client: SocketAddr::new(client.ip, conn.client.port()),
            tls: conn.tls,
            sni: conn.sni.clone(),
        });
        let PolicyRequest {
            mut parts,
            authority,
            ..
        } = returned;
        routed.revision = revision;
        routed.decision = match &verdict {
            Verdict::Decided(Decision::Forward(_)) => "forward",
            Verdict::Decided(Decision::Respond(_)) => "respond",
            Verdict::Failed(f) if f.fail == FailMode::Open => "failed-open",
            Verdict::Failed(_) => "failed-closed",
        };
        let mut forward = match verdict {
            Verdict::Decided(Decision::Forward(f)) => f,
            Verdict::Decided(Decision::Respond(r)) => return Ok((local_response(r), None)),
            Verdict::Failed(f) if f.fail == FailMode::Open => Forward::to_default_pool(),
            Verdict::Failed(f) => {
                return Err(ProxyError::new(ErrorKind::PolicyFailed, f.to_string()));
            }
        };
        let missing = |what: String| ProxyError::new(ErrorKind::PolicyFailed, what);
        let pool = self
            .pools
            .load()
            .get(forward.pool.as_deref())
            .cloned()
            .ok_or_else(|| missing(format!("no pool {:?}", forward.pool)))?;
        routed.pool = Some(pool.clone());
        let named = match &forward.endpoint {
            Some(addr) => Some(
                pool.index_of(addr)
                    .ok_or_else(|| missing(format!("no endpoint {addr}")))?,
            ),
            None => None,
        };
        // The cache key names the resource the client asked for, so it is taken before a
        // rewrite changes the target.
        let url = self
            .cache
            .as_ref()
            .map(|_| cache::key::default_key(conn.tls, authority.as_ref(), &parts.uri));
        if let Some(target) = forward.rewrite.take() {
            parts.uri = Uri::from(target);
        }

        let client_version = parts.version;
        let hop = headers::strip_hop_by_hop(&mut parts.headers);
        for edit in &forward.request_edits {
            edit.apply(&mut parts.headers);
        }
        // An upgrade request with content is forwarded as a plain request: after a 101 the
        // bytes that follow belong to the tunnel, so a body would be ambiguous.
        let upgrade = hop.upgrade.clone().filter(|_| {
            client_version == Version::HTTP_11
                && pool.protocol == UpstreamProtocol::Http1
                && http_body::Body::is_end_stream(&body)
        });
        // A policy that sets `Host` chooses the upstream authority; otherwise the client's is
        // kept (preserve_host) or the endpoint's address is used (chosen per attempt).
        let host_edit = forward
            .request_edits
            .iter()
            .rfind(|e| e.name == header::HOST && e.op != crate::policy::EditOp::Remove);
        let fixed_authority = match (host_edit, &authority, self.settings.preserve_host) {
            (Some(e), _, _) => Some(http::uri::Authority::try_from(e.value.as_bytes()).map_err(
                |_| {
                    missing(format!(
                        "request edit: Host {:?} is not an authority",
                        e.value
                    ))
                },
            )?),
            (None, Some(a), true) => Some(a.clone()),
            _ => None,
        };
        // What the cache needs of the request, as the origin will see it (after the policy's
        // edits, before the forwarding headers).
        let cached = match (&self.cache, url) {
            (Some(c), Some(url)) if upgrade.is_none() => Some(cached::CacheRequest::new(
                c.clone(),
                url,
                std::mem::take(&mut forward.cache),
                &parts,
            )),
            _ => None,
        };
        self.rewrite_request_headers(&mut parts, &pool, &hop, authority.as_ref(), conn, client);

        let mut client_upgrade = None;
        let retries = if upgrade.is_some() {
            0
        } else {
            pool.retry.retries
        };
        let body = match upgrade {
            Some(protocol) => {
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(header::UPGRADE, protocol);
                client_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
                // After a 101 the bytes that follow belong to the tunnel, not to a body.
                RequestBody::empty()
            }
            // No body: nothing to stream, and the request can be sent again as it is.
            None if http_body::Body::is_end_stream(&body) => RequestBody::empty(),
            None if retries > 0 && buffers_for_retry(&parts, &body, pool.retry.buffer) => {
                RequestBody::buffer(body, pool.retry.buffer)
                    .await
                    .map_err(|e| classify_body_error(&*e))?
            }
            None => RequestBody::new(body, self.limits.max_request_body),
        };
        let route = Route {
            pool,
            named,
            key: forward.hash_key.take(),
            algorithm: forward.algorithm,
            client: client.ip,
            fixed_authority,
            retries,
            timeout: self.timeouts.upstream_response,
        };
        let out = Outbound {
            route,
            response_edits: std::mem::take(&mut forward.response_edits),
            client_version,
            hook: hook.map(Arc::new),
        };
        if let Some(c) = cached {
            return self
                .through_cache(c, out, Request::from_parts(parts, body))
                .await;
        }

        let Answer {
            response: resp,
            conn: upstream_conn,
            endpoint,
            held,
        } = out.route.send(Request::from_parts(parts, body)).await?;
        let (mut rp, incoming) = resp.into_parts();
        let mut extra = Vec::new();
        if rp.status != http::StatusCode::SWITCHING_PROTOCOLS {
            headers::strip_hop_by_hop(&mut rp.headers);
            let source = ResponseSource::Upstream;
            match self.response_phase(&out, rp.status, &mut rp.headers, source, Some(&endpoint)) {
                Ok(changes) => extra = changes.edits,
                // The upstream's answer is dropped unread: its connection is not reused.
                Err(instead) => return Ok((*instead, Some(endpoint))),
            }
        }
        let mut body = if rp.status == http::StatusCode::SWITCHING_PROTOCOLS {
            let (Some(client_upgrade), Some(upstream_upgrade)) = (
                client_upgrade,
                rp.extensions.remove::<hyper::upgrade::OnUpgrade>(),
            ) else {
                return Err(ProxyError::new(
                    ErrorKind::UpstreamReset,
                    "101 without an upgrade request",
                ));
            };
            if let Some(c) = upstream_conn {
                c.detach(); // hyper hands over the upgraded I/O only while polled
            }
            upgrade::spawn_tunnel(client_upgrade, upstream_upgrade, conn.activity.clone());
            // `Connection: upgrade` and `Upgrade` are what a 101 is about: kept as received.
            ResponseBody::empty()
        } else {
            self.upstream_body(&mut rp, incoming, upstream_conn)
        };
        body.hold(held);
        self.finish(&out, &mut rp, &extra);
        Ok((Response::from_parts(rp, body), Some(endpoint)))
    }

    /// The policy's response phase on a head about to be served: the changes to make, or the
    /// response to serve instead (the guest's local response, or 503 when it failed and
    /// `fail = "closed"`). Without an `on-response` export nothing is called.
    fn response_phase(
        &self,
        out: &Outbound,
        status: http::StatusCode,
        headers: &mut http::HeaderMap,
        source: ResponseSource,
        endpoint: Option<&Arc<str>>,
    ) -> Result<ResponseChanges, Box<Response<ResponseBody>>> {
        let Some(hook) = &out.hook else {
            return Ok(ResponseChanges::default());
        };
        match hook.run(status, headers, source, endpoint.cloned()) {
            Ok(ResponseAction::Serve(changes)) => Ok(changes),
            Ok(ResponseAction::Respond(r)) => Err(Box::new(local_response(r))),
            Err(f) if f.fail == FailMode::Open => Ok(ResponseChanges::default()),
            Err(f) => Err(Box::new(
                ProxyError::new(ErrorKind::PolicyFailed, f.to_string()).to_response(),
            )),
        }
    }

    /// An upstream response's body, its head stripped of hop-by-hop fields.
    fn upstream_body(
        &self,
        rp: &mut http::response::Parts,
        incoming: Incoming,
        conn: Option<crate::upstream::connection::PooledConn>,
    ) -> ResponseBody {
        headers::strip_hop_by_hop(&mut rp.headers);
        ResponseBody::upstream(incoming, conn, self.timeouts.upstream_response)
    }

    /// What every response to a forwarded request gets last, wherever it came from (an
    /// upstream or the cache): the decision's response edits, then the response phase's
    /// (`extra`), `Via`, the client's version.
    fn finish(&self, out: &Outbound, rp: &mut http::response::Parts, extra: &[HeaderEdit]) {
        for edit in out.response_edits.iter().chain(extra) {
            edit.apply(&mut rp.headers);
        }
        if self.settings.via {
            headers::add_via(&mut rp.headers, self.via.for_version(rp.version));
        }
        rp.version = out.client_version;
    }

    /// `Host`/`:authority`, `TE`, `X-Forwarded-*` and `Via` for the upstream request.
    fn rewrite_request_headers(
        &self,
        parts: &mut http::request::Parts,
        pool: &Pool,
        hop: &headers::HopInfo,
        client_authority: Option<&http::uri::Authority>,
        conn: &ConnInfo,
        client: &forwarded::Client,
    ) {
        let client_version = parts.version;
        let h = &mut parts.headers;
        match pool.protocol {
            UpstreamProtocol::Http1 => {
                // `Host` is set per attempt ([`target_endpoint`]).
                parts.version = Version::HTTP_11;
            }
            UpstreamProtocol::Http2 => {
                parts.version = Version::HTTP_2;
                // :authority carries it (RFC 9113 §8.3.1).
                h.remove(header::HOST);
                if hop.te_trailers {
                    h.insert(header::TE, HeaderValue::from_static("trailers"));
                }
            }
        }
        if self.settings.forwarded_headers {
            headers::append_list(
                h,
                header::HeaderName::from_static("x-forwarded-for"),
                &conn.forwarded_for,
            );
            // A trusted proxy's claims about the original request stand (from any other
            // peer they were removed on arrival, `forwarded::admit`).
            let proto = header::HeaderName::from_static("x-forwarded-proto");
            if !(client.trusted_peer && h.contains_key(&proto)) {
                h.insert(
                    proto,
                    HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
                );
            }
            let host = header::HeaderName::from_static("x-forwarded-host");
            if let Some(a) =
                client_authority.filter(|_| !(client.trusted_peer && h.contains_key(&host)))
            {
                h.insert(host, authority_value(a));
            }
        }
        if self.settings.via {
            headers::add_via(h, self.via.for_version(client_version));
        }
    }
}

/// A policy's local response. hyper adds `content-length` from the body's exact size.
fn local_response(r: LocalResponse) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(r.body));
    *resp.status_mut() = r.status;
    let h = resp.headers_mut();
    for (name, value) in r.headers {
        h.append(name, value);
    }
    resp
}

/// HTTP/1.1 is sent in origin-form (RFC 9112 §3.2.1) with `Host`; h2 needs scheme and
/// `:authority` in the URI.
fn upstream_uri(
    uri: &Uri,
    pool: &Pool,
    authority: &http::uri::Authority,
) -> Result<Uri, ProxyError> {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    match pool.protocol {
        UpstreamProtocol::Http1 => Ok(Uri::from(path)),
        UpstreamProtocol::Http2 => {
            let scheme = if pool.tls {
                http::uri::Scheme::HTTPS
            } else {
                http::uri::Scheme::HTTP
            };
            Uri::builder()
                .scheme(scheme)
                .authority(authority.clone())
                .path_and_query(path)
                .build()
                .map_err(|e| ProxyError::new(ErrorKind::BadRequest, format!("uri: {e}")))
        }
    }
}

/// The authority the client addressed: the URI's (h2 `:authority`, absolute-form) or `Host`.
/// HTTP/1.1 requires exactly one valid `Host` (RFC 9112 §3.2).
fn request_authority(
    parts: &http::request::Parts,
) -> Result<Option<http::uri::Authority>, ProxyError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::new(
            ErrorKind::MissingHost,
            "more than one Host",
        ));
    }
    if let Some(a) = parts.uri.authority() {
        return Ok(Some(a.clone()));
    }
    match host {
        Some(v) => {
            let a = http::uri::Authority::try_from(v.as_bytes())
                .map_err(|_| ProxyError::new(ErrorKind::MissingHost, "invalid Host"))?;
            if a.as_str().contains('@') {
                return Err(ProxyError::new(ErrorKind::MissingHost, "userinfo in Host"));
            }
            Ok(Some(a))
        }
        None if parts.version == Version::HTTP_11 => Err(ProxyError::new(
            ErrorKind::MissingHost,
            "HTTP/1.1 request without Host",
        )),
        None if parts.version == Version::HTTP_2 => Err(ProxyError::new(
            ErrorKind::MissingHost,
            "h2 request without :authority or Host",
        )),
        None => Ok(None),
    }
}

/// Rejects ambiguous framing and bodies declared larger than the limit.
fn check_framing(parts: &http::request::Parts, limits: &Limits) -> Result<(), ProxyError> {
    let te = parts.headers.contains_key(header::TRANSFER_ENCODING);
    let mut lengths = parts.headers.get_all(header::CONTENT_LENGTH).iter();
    let cl = lengths.next();
    if te && cl.is_some() {
        return Err(ProxyError::new(
            ErrorKind::ConflictingFraming,
            "both Transfer-Encoding and Content-Length",
        ));
    }
    if let Some(cl) = cl {
        let n: u64 = std::str::from_utf8(cl.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| {
                ProxyError::new(ErrorKind::ConflictingFraming, "invalid Content-Length")
            })?;
        if lengths.any(|other| other != cl) {
            return Err(ProxyError::new(
                ErrorKind::ConflictingFraming,
                "differing Content-Length values",
            ));
        }
        if n > limits.max_request_body {
            return Err(ProxyError::new(
                ErrorKind::BodyTooLarge,
                format!("Content-Length {n}"),
            ));
        }
    }
    Ok(())
}

/// Whether to read the body before sending, so a retry can send it again: only when its
/// declared length is within the retry buffer (a chunked or larger body is streamed).
fn buffers_for_retry(parts: &http::request::Parts, body: &Incoming, limit: u64) -> bool {
    if !attempt::is_idempotent(&parts.method) {
        return false;
    }
    http_body::Body::size_hint(body)
        .exact()
        .is_some_and(|n| n <= limit)
}

/// Maps a failure while buffering the client's body.
fn classify_body_error(e: &(dyn std::error::Error + 'static)) -> ProxyError {
    ProxyError::new(
        ErrorKind::ClientAborted,
        format!("request body: {}", chain(e)),
    )
}

fn authority_value(a: &http::uri::Authority) -> HeaderValue {
    HeaderValue::from_str(a.as_str()).expect("an Authority is a valid header value")
}

/// Maps an upstream exchange failure to a proxy error by walking its causes.
fn classify_send_error(e: &SendError, addr: &str) -> ProxyError {
    let h = match e {
        SendError::Connect(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            return ProxyError::new(ErrorKind::UpstreamTimeout, format!("{addr}: {io}"));
        }
        SendError::Connect(io) => {
            return ProxyError::new(ErrorKind::UpstreamUnreachable, format!("{addr}: {io}"));
        }
        SendError::Http(h) => h,
    };
    // Our own limit first: hyper wraps a body error as "user body write aborted".
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(h);
    while let Some(s) = source {
        if s.downcast_ref::<BodyTooLarge>().is_some() {
            return ProxyError::new(ErrorKind::BodyTooLarge, s.to_string());
        }
        source = s.source();
    }
    if h.is_user() || h.is_body_write_aborted() {
        // Our side of the exchange failed: the client's body stream broke.
        return ProxyError::new(ErrorKind::ClientAborted, format!("{addr}: {}", chain(h)));
    }
    if h.is_timeout() {
        return ProxyError::new(ErrorKind::UpstreamTimeout, format!("{addr}: {}", chain(h)));
    }
    ProxyError::new(ErrorKind::UpstreamReset, format!("{addr}: {}", chain(h)))
}
