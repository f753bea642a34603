//! The access log: one line per request, written when the response body is done, so it can
//! report bytes sent and the full duration. Lines are formatted here and queued to the
//! writer thread (`logging::AccessLog`), never written on the request path.
//!
//! JSON lines (`[log] format = "json"`) have a stable set of fields, documented in the
//! README: Envoy's default access-log fields plus the pool, the policy revision and its
//! decision, and the cache status. Text lines carry the same fields in a fixed order.

use super::ConnInfo;
use super::body::OnComplete;
use super::forwarded::Client;
use crate::activity::RequestGuard;
use crate::config::LogFormat;
use crate::logging::AccessLog;
use crate::metrics::PoolStats;
use http::{Request, StatusCode};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What the pipeline learned about a request's route, for the log and the metrics.
#[derive(Default)]
pub(super) struct Routed {
    /// The pool it was routed to.
    pub pool: Option<Arc<crate::upstream::Pool>>,
    /// The policy revision that decided it (0: no policy was asked).
    pub revision: u64,
    /// `forward`, `respond`, `failed-open`, `failed-closed`; empty when no policy was asked.
    pub decision: &'static str,
}

pub(super) struct AccessRecord {
    at: SystemTime,
    /// The connection's peer.
    peer: std::net::SocketAddr,
    /// The client as `[proxy] client_ip` decides; `forwarded` when from `X-Forwarded-For`.
    client: std::net::IpAddr,
    forwarded: bool,
    listener: Arc<str>,
    sni: Option<Arc<str>>,
    method: http::Method,
    host: String,
    path: String,
    version: http::Version,
    request_id: Option<String>,
    trace_id: Option<String>,
    user_agent: Option<String>,
    start: Instant,
    status: StatusCode,
    upstream: Option<Arc<str>>,
    pool: Option<Arc<str>>,
    revision: u64,
    decision: &'static str,
    cache: Option<String>,
    headers_after: Duration,
    /// This proxy's span, when spans are exported and the trace is sampled.
    span: Option<super::forwarded::SpanIds>,
}

/// A request header as text, if it is.
fn text<B>(req: &Request<B>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl AccessRecord {
    pub(super) fn new<B>(
        req: &Request<B>,
        conn: &ConnInfo,
        client: &Client,
        start: Instant,
    ) -> Self {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| text(req, "host"))
            .unwrap_or_default();
        AccessRecord {
            at: SystemTime::now(),
            peer: conn.client,
            client: client.ip,
            forwarded: client.forwarded,
            listener: conn.listener.name.clone(),
            sni: conn.sni.clone(),
            method: req.method().clone(),
            host,
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            version: req.version(),
            request_id: text(req, "x-request-id"),
            trace_id: text(req, "traceparent").and_then(|t| Some(t.get(3..35)?.to_owned())),
            user_agent: text(req, "user-agent"),
            start,
            status: StatusCode::OK,
            upstream: None,
            pool: None,
            revision: 0,
            decision: "",
            cache: None,
            headers_after: Duration::ZERO,
            span: client.span,
        }
    }

    pub(super) fn finish(
        mut self,
        status: StatusCode,
        response: &http::HeaderMap,
        upstream: Option<Arc<str>>,
        routed: &Routed,
    ) -> Self {
        self.status = status;
        self.upstream = upstream;
        self.pool = routed.pool.as_ref().map(|p| p.name.clone());
        self.revision = routed.revision;
        self.decision = routed.decision;
        self.cache = response
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.headers_after = self.start.elapsed();
        self
    }

    fn line(&self, format: LogFormat, bytes: u64, complete: bool) -> String {
        let protocol = match self.version {
            http::Version::HTTP_09 => "HTTP/0.9",
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_3 => "HTTP/3",
            _ => "HTTP/1.1",
        };
        let time = humantime::format_rfc3339_millis(self.at).to_string();
        let (duration, headers) = (ms(self.start.elapsed()), ms(self.headers_after));
        match format {
            LogFormat::Json => {
                let line = JsonLine {
                    time: &time,
                    request_id: self.request_id.as_deref(),
                    trace_id: self.trace_id.as_deref(),
                    client: self.client,
                    client_from: if self.forwarded {
                        "x-forwarded-for"
                    } else {
                        "peer"
                    },
                    peer: self.peer,
                    listener: &self.listener,
                    sni: self.sni.as_deref(),
                    method: self.method.as_str(),
                    authority: &self.host,
                    path: &self.path,
                    protocol,
                    user_agent: self.user_agent.as_deref(),
                    status: self.status.as_u16(),
                    bytes_sent: bytes,
                    complete,
                    duration_ms: duration,
                    response_headers_ms: headers,
                    pool: self.pool.as_deref(),
                    upstream: self.upstream.as_deref(),
                    policy_revision: (self.revision != 0).then_some(self.revision),
                    decision: (!self.decision.is_empty()).then_some(self.decision),
                    cache_status: self.cache.as_deref(),
                };
                serde_json::to_string(&line).expect("serialisable")
            }
            LogFormat::Text => format!(
                "{time} {client} \"{method} {authority}{path} {protocol}\" {status} {bytes} {duration}ms complete={complete} listener={listener} pool={pool} upstream={upstream} revision={revision} decision={decision} cache=\"{cache}\" request_id={id} trace_id={trace}",
                client = self.client,
                method = self.method,
                authority = self.host,
                path = self.path,
                status = self.status.as_u16(),
                listener = self.listener,
                pool = self.pool.as_deref().unwrap_or("-"),
                upstream = self.upstream.as_deref().unwrap_or("-"),
                revision = self.revision,
                decision = if self.decision.is_empty() {
                    "-"
                } else {
                    self.decision
                },
                cache = self.cache.as_deref().unwrap_or("-"),
                id = self.request_id.as_deref().unwrap_or("-"),
                trace = self.trace_id.as_deref().unwrap_or("-"),
            ),
        }
    }
}

/// One JSON access-log line: the documented field set, in this order. Absent values are
/// `null`, never left out, so every line has every field.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    time: &'a str,
    request_id: Option<&'a str>,
    trace_id: Option<&'a str>,
    client: std::net::IpAddr,
    client_from: &'static str,
    peer: std::net::SocketAddr,
    listener: &'a str,
    sni: Option<&'a str>,
    method: &'a str,
    authority: &'a str,
    path: &'a str,
    protocol: &'static str,
    user_agent: Option<&'a str>,
    status: u16,
    bytes_sent: u64,
    complete: bool,
    duration_ms: f64,
    response_headers_ms: f64,
    pool: Option<&'a str>,
    upstream: Option<&'a str>,
    policy_revision: Option<u64>,
    decision: Option<&'static str>,
    cache_status: Option<&'a str>,
}

fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// Runs when a response body is done: ends the request for the idle watchdog, logs it, and
/// records its duration with its pool's figures.
pub(super) struct Completion {
    pub(super) guard: RequestGuard,
    /// Built when the access log or span export is on.
    pub(super) record: Option<AccessRecord>,
    pub(super) log: Option<Arc<AccessLog>>,
    pub(super) spans: Option<Arc<crate::otlp::Exporter>>,
    pub(super) pool: Option<Arc<PoolStats>>,
    pub(super) start: Instant,
}

impl OnComplete for Completion {
    fn complete(&mut self, bytes: u64, finished: bool) {
        if let (Some(r), Some(log)) = (&self.record, &self.log) {
            log.write(r.line(log.format, bytes, finished));
        }
        if let Some(spans) = &self.spans {
            if let Some(record) = self.record.take().filter(|r| r.span.is_some()) {
                spans.record(Box::new(Finished {
                    duration: record.start.elapsed(),
                    record,
                    bytes,
                    complete: finished,
                }));
            }
        }
        if let Some(p) = &self.pool {
            p.duration.observe(self.start.elapsed());
        }
        self.guard.finish();
    }
}

/// A request whose response is done, on its way to the span exporter.
struct Finished {
    record: AccessRecord,
    duration: Duration,
    bytes: u64,
    complete: bool,
}

impl crate::otlp::IntoSpan for Finished {
    /// A server span with the stable HTTP semantic conventions' attributes
    /// (https://opentelemetry.io/docs/specs/semconv/http/http-spans/) and sluice's own.
    fn into_span(self: Box<Self>) -> opentelemetry_proto::tonic::trace::v1::Span {
        use crate::otlp::{attribute, int, text};
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        use opentelemetry_proto::tonic::trace::v1::{Span, Status, span::SpanKind, status};
        let r = &self.record;
        let ids = r.span.expect("only sampled requests are queued");
        let nanos = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        };
        let (path, query) = r.path.split_once('?').unwrap_or((&r.path, ""));
        let mut attributes = vec![
            text("http.request.method", r.method.as_str()),
            int("http.response.status_code", r.status.as_u16().into()),
            text("url.path", path),
            text("server.address", r.host.clone()),
            text(
                "network.protocol.version",
                match r.version {
                    http::Version::HTTP_10 => "1.0",
                    http::Version::HTTP_2 => "2",
                    _ => "1.1",
                },
            ),
            text("client.address", r.client.to_string()),
            int("http.response.body.size", self.bytes as i64),
            text("sluice.listener", &*r.listener),
            attribute("sluice.complete", Value::BoolValue(self.complete)),
        ];
        if !query.is_empty() {
            attributes.push(text("url.query", query));
        }
        let optional = [
            ("user_agent.original", r.user_agent.as_deref()),
            ("sluice.pool", r.pool.as_deref()),
            ("sluice.upstream", r.upstream.as_deref()),
            (
                "sluice.policy.decision",
                Some(r.decision).filter(|d| !d.is_empty()),
            ),
            ("sluice.cache_status", r.cache.as_deref()),
            ("sluice.request_id", r.request_id.as_deref()),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                attributes.push(text(key, v));
            }
        }
        if r.revision > 0 {
            attributes.push(int("sluice.policy.revision", r.revision as i64));
        }
        // A server span is an error on a 5xx, or when the response did not complete.
        let failed = r.status.is_server_error() || !self.complete;
        Span {
            trace_id: ids.trace.to_be_bytes().to_vec(),
            span_id: ids.span.to_be_bytes().to_vec(),
            parent_span_id: ids
                .parent
                .map_or_else(Vec::new, |p| p.to_be_bytes().to_vec()),
            // W3C trace flags (sampled) in the low byte.
            flags: 1,
            name: r.method.as_str().to_owned(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: nanos(r.at),
            end_time_unix_nano: nanos(r.at + self.duration),
            attributes,
            status: failed.then(|| Status {
                code: status::StatusCode::Error as i32,
                message: String::new(),
            }),
            ..Default::default()
        }
    }
}
