//! The admin listener: its own socket, never reachable through a proxy listener, guarded by a
//! bearer token when one is configured. HTTP/1.1 only; JSON responses.
//!
//! Endpoints:
//! - `GET /health`
//! - `GET /policy`: the active policy revision (id, sha256, source, load time, counters) and
//!   the previous ones;
//! - `PUT /policy`: the body is a new component; answers 200 with the new revision once it
//!   serves, or 422 with the reason (the active revision keeps serving);
//! - `POST /policy/rollback`: makes the newest previous revision active again;
//! - `GET /pools`: every pool and endpoint: health state and since when, the last active
//!   check, in-flight requests, peak-EWMA latency, counters.
//! - `GET /stats`: cache counters, entries and bytes (`"cache": null` without a cache);
//! - `GET /metrics`: Prometheus metrics (`metrics.rs`);
//! - `POST /cache/purge`: JSON `{"url"|"key"|"prefix"|"tag": "...", "soft": bool}` or
//!   `{"all": true}`; answers `{"purged": N, "soft": bool}`, and with `[cache.shared]`
//!   `"fleet": {"sent": bool, "error": ..}` once the shared tier is purged and every other
//!   node told;
//! - `GET /fleet` (with `[cache.shared]`): the nodes of the fleet, their revision and
//!   health, and the policy rollout;
//! - `POST /fleet/policy?canary=PERCENT&window=SECONDS`: the body is a component to publish
//!   to the fleet (checked here first; canary share of the nodes, then all).

mod metrics;
mod status;

use crate::cache::{Cache, Purge};
use crate::config::AdminConfig;
use crate::policy::PolicyRuntime;
use crate::upstream::{PoolTable, Pools};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// State the admin API reports on.
pub struct AdminState {
    pub token: Option<String>,
    pub started: Instant,
    pub started_wall: std::time::SystemTime,
    pub policy: Arc<PolicyRuntime>,
    pub pools: Arc<PoolTable>,
    pub cache: Option<Arc<Cache>>,
    /// The listeners' counters, replaced when a reload adds or removes listeners.
    pub listeners: Arc<crate::metrics::ListenerList>,
    pub reloads: Arc<crate::metrics::Reloads>,
    pub access_log: Option<Arc<crate::logging::AccessLog>>,
    /// Span export, when `[otlp]` is on.
    pub spans: Option<Arc<crate::otlp::Exporter>>,
    /// The fleet, when `[cache.shared]` is on.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
    /// The status page's ring of samples.
    history: status::History,
}

impl AdminState {
    pub fn new(
        policy: Arc<PolicyRuntime>,
        pools: Arc<PoolTable>,
        cache: Option<Arc<Cache>>,
        listeners: Arc<crate::metrics::ListenerList>,
        reloads: Arc<crate::metrics::Reloads>,
        access_log: Option<Arc<crate::logging::AccessLog>>,
    ) -> AdminState {
        AdminState {
            token: None,
            started: Instant::now(),
            started_wall: std::time::SystemTime::now(),
            policy,
            pools,
            cache,
            listeners,
            reloads,
            access_log,
            spans: None,
            fleet: None,
            history: status::History::default(),
        }
    }
}

/// Largest policy component accepted by `PUT /policy`.
const MAX_UPLOAD: usize = 64 << 20;

pub async fn run(
    listener: TcpListener,
    cfg: AdminConfig,
    state: AdminState,
    mut shutdown: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
) {
    let state = Arc::new(AdminState {
        token: cfg.token,
        ..state
    });
    // The status page's samples, taken while the admin listener runs.
    state.history.sample(&state);
    let sampled = state.clone();
    let mut stop = shutdown.clone();
    tokio::spawn(async move {
        let first = tokio::time::Instant::now() + status::EVERY;
        let mut every = tokio::time::interval_at(first, status::EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => sampled.history.sample(&sampled),
                _ = stop.changed() => return,
            }
        }
    });
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let state = state.clone();
        let drain = drain.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _drain = drain;
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

async fn handle(state: &Arc<AdminState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() == Method::GET && req.uri().path() == "/" {
        // The page holds no data (its script fetches /status with the token).
        let mut r = Response::new(Full::new(Bytes::from_static(status::PAGE.as_bytes())));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            http::HeaderValue::from_static(
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
            ),
        );
        return r;
    }
    if let Some(token) = &state.token {
        if !authorized(&req, token) {
            let mut r = json(
                StatusCode::UNAUTHORIZED,
                r#"{"error":"missing or wrong bearer token"}"#.into(),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => {
            let body = serde_json::json!({
                "status": "ok",
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_secs": state.started.elapsed().as_secs(),
            });
            json(StatusCode::OK, body.to_string())
        }
        (&Method::GET, "/policy") => ok_json(&state.policy.status()),
        (&Method::GET, "/pools") => ok_json(&pools_json(&state.pools.current())),
        (&Method::GET, "/status") => json(
            StatusCode::OK,
            status::json(state, &state.history).to_string(),
        ),
        (&Method::GET, "/metrics") => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let (body, content_type) = metrics::render(state, accept);
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
            r
        }
        (&Method::GET, "/fleet") => match &state.fleet {
            None => error(
                StatusCode::NOT_FOUND,
                "no fleet: [cache.shared] is not configured",
            ),
            Some(f) => match f.registry().await {
                Ok(v) => ok_json(&v),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e),
            },
        },
        (&Method::POST, "/fleet/policy") => {
            let Some(fleet) = state.fleet.clone() else {
                return error(
                    StatusCode::NOT_FOUND,
                    "no fleet: [cache.shared] is not configured",
                );
            };
            let (percent, window) = match rollout_params(req.uri().query().unwrap_or("")) {
                Ok(p) => p,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e),
            };
            let body = match upload(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match fleet.publish(body.to_vec(), percent, window).await {
                Ok(r) => ok_json(&r),
                Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
            }
        }
        (&Method::PUT, "/policy") => {
            let body = match upload(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match state.policy.upload(body.to_vec()).await {
                Ok(info) => ok_json(&info),
                Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
            }
        }
        (&Method::POST, "/policy/rollback") => match state.policy.rollback() {
            Ok(info) => ok_json(&info),
            Err(e) => error(StatusCode::CONFLICT, &e.to_string()),
        },
        (&Method::GET, "/stats") => {
            let mut stats = serde_json::json!({
                "cache": state.cache.as_ref().map(|c| c.stats_json()),
                "shared": state.fleet.as_ref().map(|f| f.stats_json()),
            });
            if let Some((count, bytes)) = crate::alloc_count::snapshot() {
                stats["allocations"] = serde_json::json!({ "count": count, "bytes": bytes });
            }
            ok_json(&stats)
        }
        (&Method::POST, "/cache/purge") => {
            let Some(cache) = &state.cache else {
                return error(StatusCode::NOT_FOUND, "no cache configured");
            };
            use http_body_util::BodyExt;
            let body = match http_body_util::Limited::new(req.into_body(), 64 << 10)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")),
            };
            let (what, soft) = match purge_request(&body) {
                Ok(p) => p,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e),
            };
            let mut answer = serde_json::json!({
                "purged": cache.purge_here(&what, soft),
                "soft": soft,
            });
            if let Some(f) = &state.fleet {
                answer["fleet"] = match f.purge(&what, soft).await {
                    Ok(()) => serde_json::json!({ "sent": true }),
                    Err(e) => serde_json::json!({ "sent": false, "error": e }),
                };
            }
            ok_json(&answer)
        }
        (
            _,
            "/health" | "/policy" | "/policy/rollback" | "/pools" | "/stats" | "/cache/purge"
            | "/fleet" | "/fleet/policy" | "/metrics" | "/status" | "/",
        ) => json(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"method not allowed"}"#.into(),
        ),
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"error":"no such admin endpoint"}"#.into(),
        ),
    }
}

/// The body of `POST /cache/purge`: exactly one selector.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    url: Option<String>,
    key: Option<String>,
    prefix: Option<String>,
    tag: Option<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    soft: bool,
}

/// Reads an uploaded component (at most [`MAX_UPLOAD`]), or the error response.
async fn upload(req: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(req.into_body(), MAX_UPLOAD)
        .collect()
        .await
    {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => {
            let status = if e.is::<http_body_util::LengthLimitError>() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            Err(error(status, &format!("reading the upload: {e}")))
        }
    }
}

/// `canary=PERCENT` (1..=100, default 100) and `window=SECONDS` of `POST /fleet/policy`.
fn rollout_params(query: &str) -> Result<(u8, Option<Duration>), String> {
    let mut percent = 100;
    let mut window = None;
    for (k, v) in query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
    {
        match k {
            "canary" => {
                percent = v
                    .parse::<u8>()
                    .ok()
                    .filter(|p| (1..=100).contains(p))
                    .ok_or_else(|| format!("canary={v}: give a percentage of nodes, 1 to 100"))?;
            }
            "window" => {
                let secs = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| *s > 0.0 && *s <= 86400.0)
                    .ok_or_else(|| {
                        format!("window={v}: give seconds, more than 0 and at most 86400")
                    })?;
                window = Some(Duration::from_secs_f64(secs));
            }
            other => return Err(format!("unknown parameter {other:?} (canary, window)")),
        }
    }
    Ok((percent, window))
}

/// The selector of a `POST /cache/purge` body.
fn purge_request(body: &[u8]) -> Result<(Purge, bool), String> {
    let r: PurgeRequest = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the body must be JSON such as {{\"url\": \"https://example.com/a\"}}, {{\"key\": ..}}, {{\"prefix\": ..}}, {{\"tag\": ..}} or {{\"all\": true}}, with optional \"soft\": true: {e}"
        )
    })?;
    let chosen = [
        r.url.is_some(),
        r.key.is_some(),
        r.prefix.is_some(),
        r.tag.is_some(),
        r.all,
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if chosen != 1 {
        return Err(
            "give exactly one of \"url\", \"key\", \"prefix\", \"tag\", \"all\": true".into(),
        );
    }
    let soft = r.soft;
    let what = if let Some(url) = r.url {
        Purge::Url(crate::cache::key::key_of_url(&url)?)
    } else if let Some(key) = r.key {
        Purge::Key(key.into())
    } else if let Some(prefix) = r.prefix {
        if prefix.is_empty() {
            return Err("\"prefix\" must not be empty (use \"all\": true)".into());
        }
        Purge::Prefix(prefix)
    } else if let Some(tag) = r.tag {
        Purge::Tag(tag)
    } else {
        Purge::All
    };
    Ok((what, soft))
}

/// `GET /pools`.
fn pools_json(pools: &Pools) -> serde_json::Value {
    use serde_json::json;
    let time = |t: std::time::SystemTime| humantime::format_rfc3339_millis(t).to_string();
    let now = crate::balance::now();
    let pools: Vec<_> = pools
        .iter()
        .map(|pool| {
            let endpoints: Vec<_> = pool
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let live = pool.live(i);
                    let record = e.health.record();
                    json!({
                        "address": &*e.address,
                        "weight": e.weight,
                        "state": live.health().name(),
                        "since": time(record.since),
                        "in_flight": live.in_flight(),
                        "requests": live.requests(),
                        "ewma_latency_ms": live.ewma_ns(now).map(|ns| (ns / 1e3).round() / 1e3),
                        "last_check": record.last_check.as_ref().map(|c| json!({
                            "at": time(c.at),
                            "passed": c.passed,
                            "detail": &c.detail,
                        })),
                        "checks_passed": record.checks_passed,
                        "checks_failed": record.checks_failed,
                        "ejections": record.ejections,
                        "ejected_until": record.ejected_until.map(time),
                    })
                })
                .collect();
            json!({
                "name": &*pool.name,
                "algorithm": pool.set.opts.algorithm.name(),
                "panic": pool.set.live.panicking(),
                "in_flight": pool.set.live.in_flight(),
                "retries_in_flight": pool.set.live.retries_in_flight.load(std::sync::atomic::Ordering::Relaxed),
                "active_checks": pool.health_check.is_some(),
                "outlier_detection": pool.outlier.is_some(),
                "endpoints": endpoints,
            })
        })
        .collect();
    json!({ "pools": pools })
}

fn authorized<B>(req: &Request<B>, token: &str) -> bool {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return false;
    };
    let Some(given) = value.as_bytes().strip_prefix(b"Bearer ") else {
        return false;
    };
    constant_time_eq(given, token.as_bytes())
}

/// Compares without an early exit, so timing does not reveal how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn ok_json<T: serde::Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_string_pretty(value) {
        Ok(s) => json(StatusCode::OK, s),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": message }).to_string())
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}
