//! Span export over OTLP/HTTP with protobuf bodies (`[otlp]`, off by default): one server span
//! per sampled request, batched and POSTed to a collector.
//!
//! The wire types come from `opentelemetry-proto`; the batching and the HTTP client are ours.
//! The OpenTelemetry SDK would add a span object, a context and a processor per request, and
//! its batch processor runs its own thread whose exporter cannot use our runtime's hyper
//! client: here a finished request hands its access record (already built for the log) to a
//! bounded queue, and everything else (attributes, encoding, the POST) happens on one task off
//! the request path. A full queue drops the span and counts it; a request never waits.

use crate::config::OtlpConfig;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Finished requests waiting for the exporter task.
const QUEUE: usize = 8192;
/// Spans per POST at most (the OTLP batch processor's default).
const BATCH: usize = 512;
/// Longest a collector may take to connect and to answer one POST.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A finished request that can become a span (built on the exporter task).
pub trait IntoSpan: Send {
    fn into_span(self: Box<Self>) -> Span;
}

/// The queue to the exporter task. The task ends once every `Exporter` is dropped, after
/// sending what it holds.
pub struct Exporter {
    queue: mpsc::Sender<Box<dyn IntoSpan>>,
    /// Share of requests without a sampled parent that start a sampled trace.
    pub sample_ratio: f64,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl Exporter {
    /// Starts the exporter task on the current tokio runtime.
    pub fn start(config: &OtlpConfig) -> Arc<Exporter> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let counts = Arc::new(Counts::default());
        tokio::spawn(run(config.clone(), rx, counts.clone()));
        Arc::new(Exporter {
            queue,
            sample_ratio: config.sample_ratio,
            counts,
        })
    }

    /// Queues a finished request's span; drops it (counted) when the queue is full.
    pub fn record(&self, span: Box<dyn IntoSpan>) {
        if self.queue.try_send(span).is_err() {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Spans exported, dropped on a full queue, and lost to failed exports.
    pub fn counts(&self) -> (u64, u64, u64) {
        let c = &self.counts;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (g(&c.exported), g(&c.dropped), g(&c.failed))
    }
}

/// An attribute with a string value.
pub fn text(key: &str, value: impl Into<String>) -> KeyValue {
    attribute(key, Value::StringValue(value.into()))
}

/// An attribute with an integer value.
pub fn int(key: &str, value: i64) -> KeyValue {
    attribute(key, Value::IntValue(value))
}

pub fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

async fn run(config: OtlpConfig, mut rx: mpsc::Receiver<Box<dyn IntoSpan>>, counts: Arc<Counts>) {
    let resource = Resource {
        attributes: vec![
            text("service.name", config.service_name.clone()),
            text("service.version", env!("CARGO_PKG_VERSION")),
        ],
        ..Default::default()
    };
    let scope = InstrumentationScope {
        name: "sluice".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    let mut conn = None;
    let mut warned = false;
    while let Some(first) = rx.recv().await {
        let mut spans = vec![first.into_span()];
        let deadline = tokio::time::Instant::now() + config.flush_interval;
        while spans.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => spans.push(s.into_span()),
                Ok(None) | Err(_) => break,
            }
        }
        let n = spans.len() as u64;
        let body = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope.clone()),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
        .encode_to_vec();
        match post_with_retries(&config.endpoint, &mut conn, body).await {
            Ok(()) => {
                counts.exported.fetch_add(n, Ordering::Relaxed);
                warned = false;
            }
            Err(e) => {
                counts.failed.fetch_add(n, Ordering::Relaxed);
                // Once per outage, not once per batch.
                if !warned {
                    tracing::warn!(endpoint = %config.endpoint, error = %e, spans = n, "OTLP export failed; spans dropped");
                    warned = true;
                }
            }
        }
    }
}

/// Why a POST failed, and whether sending it again may help.
struct Failed {
    why: String,
    retry: bool,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// Tries a batch up to three times, 100 ms then 400 ms apart, when the collector could not
/// be reached or answered 429, 502, 503 or 504 (the OTLP/HTTP spec's retryable answers); a
/// `Retry-After` is not waited for, the queue behind the batch being bounded.
async fn post_with_retries(
    endpoint: &http::Uri,
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    body: Vec<u8>,
) -> Result<(), Failed> {
    let body = Bytes::from(body);
    let mut wait = Duration::from_millis(100);
    for attempt in 1.. {
        match post(endpoint, conn, body.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                *conn = None;
                if !e.retry || attempt == 3 {
                    return Err(e);
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait *= 4;
    }
    unreachable!("the loop returns by the third attempt")
}

/// POSTs one batch on the kept connection (made anew when there is none or it closed).
async fn post(
    endpoint: &http::Uri,
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    body: Bytes,
) -> Result<(), Failed> {
    let transient = |why: String| Failed { why, retry: true };
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = Some(connect(endpoint).await.map_err(transient)?);
    }
    let Some(c) = conn.as_mut() else {
        unreachable!("connected above")
    };
    let authority = endpoint.authority().map_or("", |a| a.as_str());
    let req = http::Request::post(endpoint.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(body))
        .map_err(|e| Failed {
            why: e.to_string(),
            retry: false,
        })?;
    let exchange = async {
        c.ready().await?;
        let resp = c.send_request(req).await?;
        let status = resp.status();
        // Read the answer (a partial-success message at most) so the connection can be reused.
        resp.into_body().collect().await?;
        Ok::<_, hyper::Error>(status)
    };
    match tokio::time::timeout(TIMEOUT, exchange).await {
        Err(_) => Err(transient("the collector did not answer in time".into())),
        Ok(Err(e)) => Err(transient(e.to_string())),
        Ok(Ok(s)) if s.is_success() => Ok(()),
        Ok(Ok(s)) => Err(Failed {
            why: format!("the collector answered {s}"),
            retry: matches!(s.as_u16(), 429 | 502 | 503 | 504),
        }),
    }
}

async fn connect(endpoint: &http::Uri) -> Result<SendRequest<Full<Bytes>>, String> {
    let host = endpoint.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = endpoint.port_u16().unwrap_or(80);
    let tcp = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| "connecting to the collector timed out".to_string())?
        .map_err(|e| format!("cannot connect to the collector: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (send, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(send)
}
