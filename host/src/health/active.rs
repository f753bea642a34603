//! One active health check of one endpoint: a TCP connect (plus the TLS handshake for a TLS
//! pool), or an HTTP request over a fresh connection, like HAProxy's and nginx's checks: a
//! check must not ride on (or disturb) a pooled connection that carries traffic.

use crate::config::{HealthCheckConfig, HealthCheckKind, HttpCheck, UpstreamProtocol};
use crate::upstream::Pool;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

/// Bytes of the body read for `expect_body`.
const MAX_BODY: usize = 64 * 1024;

/// Checks endpoint `i` of `pool`: `Ok(what passed)` or `Err(why it failed)`, within the
/// configured timeout.
pub(super) async fn check(
    pool: &Pool,
    i: usize,
    cfg: &HealthCheckConfig,
) -> Result<String, String> {
    match tokio::time::timeout(cfg.timeout, run(pool, i, cfg)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", cfg.timeout)),
    }
}

async fn run(pool: &Pool, i: usize, cfg: &HealthCheckConfig) -> Result<String, String> {
    let endpoint = &pool.endpoints[i];
    let stream = endpoint
        .upstream
        .dialer()
        .dial()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let http = match &cfg.kind {
        HealthCheckKind::Tcp => return Ok("connected".into()),
        HealthCheckKind::Http(h) => h,
    };
    let host = http
        .host
        .clone()
        .unwrap_or_else(|| endpoint.authority.to_string());
    let io = TokioIo::new(stream);
    let resp = match pool.protocol {
        UpstreamProtocol::Http1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            let req = request(http, &host, None)?;
            sender.send_request(req).await
        }
        UpstreamProtocol::Http2 => {
            let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            let scheme = if pool.tls { "https" } else { "http" };
            let req = request(http, &host, Some(scheme))?;
            sender.send_request(req).await
        }
    }
    .map_err(|e| format!("request: {}", crate::upstream::chain(&e)))?;
    let status = resp.status().as_u16();
    if !http
        .expect_status
        .iter()
        .any(|&(lo, hi)| (lo..=hi).contains(&status))
    {
        return Err(format!("status {status}"));
    }
    if let Some(want) = &http.expect_body {
        let body = read_prefix(resp.into_body()).await?;
        if !contains(&body, want.as_bytes()) {
            return Err(format!("status {status}, body does not contain {want:?}"));
        }
    }
    Ok(format!("status {status}"))
}

fn request(
    http: &HttpCheck,
    host: &str,
    h2_scheme: Option<&str>,
) -> Result<http::Request<Empty<Bytes>>, String> {
    let mut b = http::Request::builder()
        .method(http.method.clone())
        .header(http::header::USER_AGENT, "sluice-health-check");
    b = match h2_scheme {
        None => b
            .uri(http.path.as_str())
            .header(http::header::HOST, host)
            .header(http::header::CONNECTION, "close"),
        Some(scheme) => b
            .uri(format!("{scheme}://{host}{}", http.path))
            .version(http::Version::HTTP_2),
    };
    b.body(Empty::new()).map_err(|e| format!("request: {e}"))
}

/// The first [`MAX_BODY`] bytes of a body.
async fn read_prefix(mut body: hyper::body::Incoming) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while out.len() < MAX_BODY {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Err(format!("body: {e}")),
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    out.extend_from_slice(&d[..d.len().min(MAX_BODY - out.len())]);
                }
            }
        }
    }
    Ok(out)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
