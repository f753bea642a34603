//! Sending a request to an endpoint of its pool, and again to another one when that is safe.
//!
//! Per attempt: pick an eligible endpoint (the policy's named one first), take an in-flight
//! slot (the circuit breaker: over `max_in_flight` per endpoint or pool the request gets 503
//! at once), send, then feed what happened to the balancer (peak-EWMA latency, `Retry-After`
//! penalty) and to passive outlier detection.
//!
//! Retry rules (nginx's `proxy_next_upstream error` semantics, with Envoy's retry budget):
//! - only before any response byte: once a response head arrives it is the answer;
//! - a request the upstream cannot have seen (connect failed, or never written) is retried
//!   whatever its method, because it comes back from the connection layer untouched;
//! - a request that was written and then failed (reset, broken HTTP) is retried only if its
//!   method is idempotent (RFC 9110 §9.2.2) and its body can be sent again: empty, or
//!   buffered up front because its declared length was within `retry_buffer`. A streamed
//!   body is never replayed;
//! - a response timeout is not retried (the upstream may still be working on it);
//! - each retry goes to an endpoint this request has not tried; a request the endpoint saw
//!   (written, then failed) may retry only while the pool's retries in flight are within
//!   its budget, one it never saw (connect failed, never written) retries without a permit.

use super::body::{Held, RequestBody};
use super::error::{ErrorKind, ProxyError, Side};
use crate::balance::{self, Algorithm, Full};
use crate::config::UpstreamProtocol;
use crate::health::{self, Outcome};
use crate::metrics::bump;
use crate::upstream::connection::{PooledConn, SendError};
use crate::upstream::{Endpoint, Pool, RetryPermit};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Most attempts per request (`retries` is at most 10).
const MAX_ATTEMPTS: usize = 11;

/// Longest `Retry-After` honoured as a least-response-time penalty.
const MAX_PENALTY: Duration = Duration::from_secs(300);

/// One request's attempts at its pool.
pub(super) struct Attempts<'a> {
    pub pool: &'a Arc<Pool>,
    /// The endpoint the policy named, for the first attempt.
    pub named: Option<usize>,
    pub key: Option<&'a [u8]>,
    pub algorithm: Option<Algorithm>,
    pub client: IpAddr,
    /// The authority to send (a policy `Host` edit or the client's); else the endpoint's.
    pub fixed_authority: Option<&'a http::uri::Authority>,
    pub retries: u32,
    pub idempotent: bool,
    pub timeout: Duration,
}

/// A response head from an endpoint, and what must live as long as its body.
pub(super) struct Answer {
    pub response: Response<Incoming>,
    pub conn: Option<PooledConn>,
    pub endpoint: Arc<str>,
    pub held: Held,
}

impl Attempts<'_> {
    pub async fn run(&self, mut req: Request<RequestBody>) -> Result<Answer, ProxyError> {
        let pool = self.pool;
        let mut tried = [usize::MAX; MAX_ATTEMPTS];
        let mut permit: Option<RetryPermit> = None;
        let mut attempt = 0usize;
        let mut last_error: Option<ProxyError> = None;
        loop {
            let picked = match (attempt, self.named) {
                (0, Some(i)) => Some(i),
                _ => pool.pick(
                    self.algorithm,
                    self.key,
                    Some(self.client),
                    &tried[..attempt],
                ),
            };
            let Some(i) = picked else {
                return Err(last_error.unwrap_or_else(|| no_endpoint(pool)));
            };
            let in_flight = match pool.set.acquire(i) {
                Ok(g) => g,
                Err(full) => {
                    bump(&pool.stats.breaker_refusals);
                    return Err(last_error.unwrap_or_else(|| circuit_open(pool, full)));
                }
            };
            let endpoint = &pool.endpoints[i];
            target(&mut req, pool, endpoint, self.fixed_authority)?;
            let may_retry = (attempt as u32) < self.retries;
            let replay = if may_retry && self.idempotent {
                copy(&req)
            } else {
                None
            };
            let started = Instant::now();
            let sent = tokio::time::timeout(self.timeout, endpoint.upstream.send(req)).await;
            let (error, unsent) = match sent {
                Ok(Ok((response, conn))) => {
                    self.learn(i, &response, started.elapsed());
                    pool.earn_retry_credit();
                    return Ok(Answer {
                        response,
                        conn,
                        endpoint: endpoint.address.clone(),
                        held: Held {
                            in_flight,
                            retry: permit,
                        },
                    });
                }
                Err(_) => {
                    health::observe(pool, i, Outcome::LocalFailure);
                    let detail = format!(
                        "{} gave no response within {:?}",
                        endpoint.address, self.timeout
                    );
                    return Err(ProxyError::new(ErrorKind::UpstreamTimeout, detail));
                }
                Ok(Err((e, unsent))) => (e, unsent),
            };
            let err = super::classify_send_error(&error, &endpoint.address);
            if err.side == Side::Client {
                // The client's body failed: nothing the endpoint did, nothing to retry.
                return Err(err);
            }
            let outcome = match error {
                SendError::Connect(_) => Outcome::ConnectFailure,
                SendError::Http(_) => Outcome::LocalFailure,
            };
            health::observe(pool, i, outcome);
            // A request that comes back unsent was never seen by the endpoint: retrying it
            // elsewhere is its first delivery, not added load, so it needs no budget (a burst
            // of refused connections to a dead endpoint must not become client errors).
            let seen = unsent.is_none();
            let Some(next) = unsent.or(replay).filter(|_| may_retry) else {
                return Err(err);
            };
            if seen && permit.is_none() {
                permit = pool.retry_permit();
                if permit.is_none() {
                    bump(&pool.stats.budget_refusals);
                    return Err(err.with_reason("retry budget exhausted"));
                }
            }
            tracing::debug!(pool = %pool.name, endpoint = %endpoint.address, error = %err,
                attempt = attempt + 1, "retrying on another endpoint");
            bump(&pool.stats.retries);
            drop(in_flight);
            tried[attempt] = i;
            attempt += 1;
            req = next;
            last_error = Some(err);
        }
    }

    /// What a response head teaches: latency, `Retry-After` back-off, passive health.
    fn learn(&self, i: usize, response: &Response<Incoming>, latency: Duration) {
        let now = balance::now();
        let live = self.pool.live(i);
        live.observe_latency(latency, now);
        self.pool.stats.upstream_head.observe(latency);
        let status = response.status();
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            if let Some(wait) = retry_after(response.headers().get(header::RETRY_AFTER)) {
                live.penalize(now + wait.min(MAX_PENALTY).as_nanos() as u64);
            }
        }
        let outcome = if status.is_server_error() {
            Outcome::Status(status.as_u16())
        } else {
            Outcome::Success
        };
        health::observe(self.pool, i, outcome);
    }
}

/// `Retry-After` as a wait: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
fn retry_after(v: Option<&HeaderValue>) -> Option<Duration> {
    let s = v?.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(s).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// Points `req` at `endpoint`: h2 carries the authority in the URI, HTTP/1.1 in `Host`
/// (always regenerated: an absolute-form target or h2 `:authority` overrides a differing
/// client `Host`, RFC 9112 §3.2.2).
fn target(
    req: &mut Request<RequestBody>,
    pool: &Pool,
    endpoint: &Endpoint,
    fixed: Option<&http::uri::Authority>,
) -> Result<(), ProxyError> {
    let authority = fixed.unwrap_or(&endpoint.authority);
    *req.uri_mut() = super::upstream_uri(req.uri(), pool, authority)?;
    if pool.protocol == UpstreamProtocol::Http1 {
        req.headers_mut()
            .insert(header::HOST, super::authority_value(authority));
    }
    Ok(())
}

/// A copy of `req` to send again, if its body can be replayed. Header values are copied into
/// their own storage rather than shared: hyper parses them as slices of the client
/// connection's read buffer, and a copy holding those slices while the exchange runs stops
/// hyper from reusing that buffer.
fn copy(req: &Request<RequestBody>) -> Option<Request<RequestBody>> {
    let mut r = Request::new(req.body().replay()?);
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    let headers = r.headers_mut();
    headers.reserve(req.headers().len());
    for (name, value) in req.headers() {
        let mut owned = HeaderValue::from_bytes(value.as_bytes()).ok()?;
        owned.set_sensitive(value.is_sensitive());
        headers.append(name.clone(), owned);
    }
    Some(r)
}

fn circuit_open(pool: &Pool, full: Full) -> ProxyError {
    let (what, max) = match full {
        Full::Endpoint(n) => ("endpoint", n),
        Full::Pool(n) => ("pool", n),
    };
    ProxyError::new(
        ErrorKind::Overloaded,
        format!("pool {}: {what} at max_in_flight ({max})", pool.name),
    )
    .with_reason(match full {
        Full::Endpoint(_) => "circuit open: endpoint max_in_flight",
        Full::Pool(_) => "circuit open: pool max_in_flight",
    })
}

/// Nothing eligible for a first attempt: every endpoint is at its in-flight limit (panic
/// mode makes unhealthy ones eligible).
fn no_endpoint(pool: &Pool) -> ProxyError {
    if (0..pool.endpoints.len()).any(|i| pool.set.full(i)) {
        return circuit_open(
            pool,
            Full::Endpoint(pool.set.opts.max_in_flight_per_endpoint),
        );
    }
    ProxyError::new(
        ErrorKind::Overloaded,
        format!("pool {}: no eligible endpoint", pool.name),
    )
    .with_reason("no eligible endpoint")
}

/// RFC 9110 §9.2.2.
pub(super) fn is_idempotent(m: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(m)
}
