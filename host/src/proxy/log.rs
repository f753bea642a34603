//! The access log: one line per request, written when the response body is done, so it can
//! report bytes sent and the full duration. Emitted as a `tracing` event with target
//! `sluice::access`; the subscriber's format (text or JSON) applies.

use super::ConnInfo;
use super::body::OnComplete;
use super::forwarded::Client;
use crate::activity::RequestGuard;
use crate::metrics::PoolStats;
use http::{Request, StatusCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) struct AccessRecord {
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
    start: Instant,
    status: StatusCode,
    upstream: Option<Arc<str>>,
    headers_after: Duration,
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
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        AccessRecord {
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
            start,
            status: StatusCode::OK,
            upstream: None,
            headers_after: Duration::ZERO,
        }
    }

    pub(super) fn finish(
        mut self,
        status: StatusCode,
        upstream: Option<Arc<str>>,
        start: Instant,
    ) -> Self {
        self.status = status;
        self.upstream = upstream;
        self.headers_after = start.elapsed();
        self
    }

    fn emit(&self, bytes: u64, finished: bool) {
        tracing::info!(
            target: "sluice::access",
            client = %self.client,
            client_from = if self.forwarded { "x-forwarded-for" } else { "peer" },
            peer = %self.peer,
            listener = %self.listener,
            sni = self.sni.as_deref().unwrap_or("-"),
            method = %self.method,
            host = %self.host,
            path = %self.path,
            proto = ?self.version,
            status = self.status.as_u16(),
            upstream = self.upstream.as_deref().unwrap_or("-"),
            bytes,
            complete = finished,
            headers_ms = ms(self.headers_after),
            total_ms = ms(self.start.elapsed()),
        );
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// Runs when a response body is done: ends the request for the idle watchdog, logs it, and
/// records its duration with its pool's figures.
pub(super) struct Completion {
    pub(super) guard: RequestGuard,
    pub(super) record: Option<AccessRecord>,
    pub(super) pool: Option<Arc<PoolStats>>,
    pub(super) start: Instant,
}

impl OnComplete for Completion {
    fn complete(&mut self, bytes: u64, finished: bool) {
        if let Some(r) = &self.record {
            r.emit(bytes, finished);
        }
        if let Some(p) = &self.pool {
            p.duration.observe(self.start.elapsed());
        }
        self.guard.finish();
    }
}
