//! The active policy revision, its predecessors, and how a new one replaces it.
//!
//! A new revision is compiled off the request path (a blocking task), type-checked against the
//! world, rehearsed on sample requests under its deadline, and only then published with one
//! atomic pointer swap. A request loads the active revision once and finishes its `decide` on
//! it, so a swap never affects a call in progress. A module that fails any step never replaces
//! the active one: the caller gets the reason and the log says it.

use super::revision::{Context, PolicyFailure, Revision, Stats};
use super::sha256_hex;
use super::store::ResponseHead;
use super::{Decision, LoadError, PolicyRequest, ResponseAction, ResponseSource, Upstreams};
use crate::cache::Cache;
use crate::config::{FailMode, InstanceMode, PolicyConfig};
use crate::metrics::Reload;
use arc_swap::ArcSwap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::watch;

/// Previous revisions kept for rollback.
const HISTORY: usize = 5;

/// The outcome of asking the policy about a request.
#[derive(Debug)]
pub enum Verdict {
    Decided(Decision),
    /// The policy failed; [`PolicyFailure::fail`] says whether to forward anyway or refuse.
    Failed(PolicyFailure),
}

/// A revision as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RevisionInfo {
    pub id: u64,
    pub sha256: String,
    pub size: usize,
    /// Where the bytes came from: `file:<path>`, `builtin:default`, `admin upload`.
    pub source: String,
    /// RFC 3339, UTC.
    pub loaded_at: String,
    pub fail: &'static str,
    pub deadline_ms: f64,
    pub memory_bytes: usize,
    /// Requests one instance serves; `1` means a fresh instance per request.
    pub reuse: u32,
    pub calls: u64,
    pub traps: u64,
    pub deadline_exceeded: u64,
    pub memory_exceeded: u64,
    pub invalid_decisions: u64,
    pub instantiate_failures: u64,
    /// The `sluice:policy` version the component was built for.
    pub world: String,
    /// The `on-response` counters; `null` when the component does not export it.
    pub on_response: Option<PhaseStats>,
}

/// One phase's counters (the `decide` ones are `RevisionInfo`'s own fields, as before 0.3).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseStats {
    pub calls: u64,
    pub traps: u64,
    pub deadline_exceeded: u64,
    pub memory_exceeded: u64,
    pub invalid_decisions: u64,
    pub instantiate_failures: u64,
}

impl PhaseStats {
    fn of(s: &Stats) -> PhaseStats {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PhaseStats {
            calls: n(&s.calls),
            traps: n(&s.traps),
            deadline_exceeded: n(&s.deadlines),
            memory_exceeded: n(&s.memory),
            invalid_decisions: n(&s.invalid),
            instantiate_failures: n(&s.instantiate),
        }
    }
}

/// What [`PolicyRuntime::decide`] gives back: the request, the verdict, the response phase
/// to run, the deciding revision's id.
pub type Decided = (PolicyRequest, Verdict, Option<ResponseHook>, u64);

/// One revision's figures for `/metrics`.
pub struct RevisionMetrics {
    pub policy: String,
    pub revision: u64,
    pub active: bool,
    /// `(phase, counters, duration histogram (buckets, sum in seconds))`.
    pub phases: Vec<(&'static str, PhaseStats, crate::metrics::Snapshot)>,
}

/// The response phase of one forwarded request: the revision that decided it (a swap in
/// between does not change who answers) and a copy of the request for the guest to read.
/// Only made for a revision that exports `on-response`.
pub struct ResponseHook {
    loaded: Arc<Loaded>,
    request: Mutex<Option<PolicyRequest>>,
}

impl ResponseHook {
    /// Runs `on-response` on a response head about to be served; the head is lent to the
    /// guest and put back unchanged (the returned action says what to change).
    pub fn run(
        &self,
        status: http::StatusCode,
        headers: &mut http::HeaderMap,
        source: ResponseSource,
        endpoint: Option<Arc<str>>,
    ) -> Result<ResponseAction, PolicyFailure> {
        let mut slot = self.request.lock().unwrap_or_else(|p| p.into_inner());
        let request = slot
            .take()
            .expect("the request is put back after every call");
        let context = Context {
            request,
            response: Some(ResponseHead {
                status: status.as_u16(),
                headers: std::mem::take(headers),
                source: Some(source),
                endpoint,
            }),
        };
        let (context, result) = self.loaded.revision.on_response(context, false);
        *slot = Some(context.request);
        if let Some(head) = context.response {
            *headers = head.headers;
        }
        if let Err(f) = &result {
            tracing::warn!(policy = %f.policy, revision = f.revision, phase = f.phase,
                kind = ?f.kind, fail = ?f.fail, detail = %f.detail, "policy failed");
        }
        result
    }
}

impl std::fmt::Debug for ResponseHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseHook")
            .field("revision", &self.loaded.revision.id())
            .finish()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyStatus {
    pub name: String,
    pub active: RevisionInfo,
    /// Newest first; `POST /policy/rollback` activates the first.
    pub previous: Vec<RevisionInfo>,
}

struct Loaded {
    revision: Revision,
    config: PolicyConfig,
    source: String,
    loaded_at: SystemTime,
}

/// The policy of one running proxy.
pub struct PolicyRuntime {
    active: ArcSwap<Loaded>,
    /// Newest first. Changed only together with `active`, under this lock.
    previous: Mutex<VecDeque<Arc<Loaded>>>,
    upstreams: Arc<dyn Upstreams>,
    /// The host's HTTP cache, for the guests' `cache` import.
    cache: Option<Arc<Cache>>,
    /// One build at a time, so revisions publish in the order they were asked for.
    build: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    swaps: watch::Sender<u64>,
    /// Loads (reload, watched file, upload) that took effect or changed nothing, and failed
    /// ones.
    loads: crate::metrics::Reloads,
}

impl PolicyRuntime {
    /// Loads the configured module (or the built-in default policy), with no HTTP cache for
    /// the guests' `cache` import (`peek` finds nothing, purges purge nothing). Blocking:
    /// compiles.
    pub fn new(
        config: &PolicyConfig,
        upstreams: Arc<dyn Upstreams>,
    ) -> Result<PolicyRuntime, LoadError> {
        Self::with_cache(config, upstreams, None)
    }

    /// [`new`](Self::new), offering `cache` to guests through the `cache` import.
    pub fn with_cache(
        config: &PolicyConfig,
        upstreams: Arc<dyn Upstreams>,
        cache: Option<Arc<Cache>>,
    ) -> Result<PolicyRuntime, LoadError> {
        let (bytes, source) = read_module(config)?;
        let loaded = build(
            &bytes,
            config.clone(),
            source,
            1,
            upstreams.clone(),
            cache.clone(),
        )?;
        log_published(&loaded);
        Ok(PolicyRuntime {
            active: ArcSwap::from_pointee(loaded),
            previous: Mutex::new(VecDeque::new()),
            upstreams,
            cache,
            build: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(2),
            swaps: watch::Sender::new(0),
            loads: Default::default(),
        })
    }

    /// Asks the active revision about one request and hands the request back, with the
    /// response phase to run on its response when the revision has one and forwarded it,
    /// and the id of the revision that decided.
    pub fn decide(&self, req: PolicyRequest) -> Decided {
        let active = self.active.load();
        let id = active.revision.id();
        if active.config.native {
            let d = super::native::default_decision(&req);
            return (req, Verdict::Decided(d), None, id);
        }
        let (req, result) = active.revision.decide(req);
        let verdict = match result {
            Ok(d) => Verdict::Decided(d),
            Err(f) => {
                tracing::warn!(policy = %f.policy, revision = f.revision, phase = f.phase,
                    kind = ?f.kind, fail = ?f.fail, detail = %f.detail, "policy failed");
                Verdict::Failed(f)
            }
        };
        let hook = match &verdict {
            Verdict::Decided(Decision::Forward(_)) if active.revision.has_response_phase() => {
                Some(ResponseHook {
                    request: Mutex::new(Some(req.copy())),
                    loaded: arc_swap::Guard::into_inner(active),
                })
            }
            _ => None,
        };
        (req, verdict, hook, id)
    }

    /// Re-reads the module file, with `config` replacing the current policy settings when
    /// given (SIGHUP re-reads the config file). Unchanged bytes and settings keep the active
    /// revision.
    pub async fn reload(&self, config: Option<PolicyConfig>) -> Result<RevisionInfo, LoadError> {
        let config = config.unwrap_or_else(|| self.active.load().config.clone());
        let read = config.clone();
        let read = tokio::task::spawn_blocking(move || read_module(&read))
            .await
            .map_err(|e| LoadError(format!("reading the module: {e}")))
            .and_then(|r| r);
        match read {
            Ok((bytes, source)) => self.publish(bytes, config, source).await,
            Err(e) => {
                self.loads.count(Reload::Policy, false);
                Err(e)
            }
        }
    }

    /// Loads that took effect (or found nothing to change) and loads that failed.
    pub fn loads(&self) -> (u64, u64) {
        self.loads.get(Reload::Policy)
    }

    /// Replaces the module with uploaded bytes, keeping the current settings.
    pub async fn upload(&self, bytes: Vec<u8>) -> Result<RevisionInfo, LoadError> {
        let config = self.active.load().config.clone();
        self.publish(bytes, config, "admin upload".into()).await
    }

    /// [`PolicyRuntime::upload`] with the bytes' source named (`fleet rollout`, ...).
    pub async fn upload_from(
        &self,
        bytes: Vec<u8>,
        source: &str,
    ) -> Result<RevisionInfo, LoadError> {
        let config = self.active.load().config.clone();
        self.publish(bytes, config, source.into()).await
    }

    /// Loads and rehearses `bytes` as an upload would, without making them active (and
    /// without the cache: a check never purges).
    pub async fn check(&self, bytes: Vec<u8>) -> Result<(), LoadError> {
        let config = self.active.load().config.clone();
        let upstreams = self.upstreams.clone();
        tokio::task::spawn_blocking(move || {
            build(&bytes, config, "the check".into(), 0, upstreams, None).map(drop)
        })
        .await
        .map_err(|e| LoadError(format!("checking the revision: {e}")))?
    }

    async fn publish(
        &self,
        bytes: Vec<u8>,
        config: PolicyConfig,
        source: String,
    ) -> Result<RevisionInfo, LoadError> {
        let result = self.publish_counted(bytes, config, source).await;
        self.loads.count(Reload::Policy, result.is_ok());
        result
    }

    async fn publish_counted(
        &self,
        bytes: Vec<u8>,
        config: PolicyConfig,
        source: String,
    ) -> Result<RevisionInfo, LoadError> {
        let _one_at_a_time = self.build.lock().await;
        {
            let active = self.active.load();
            if active.config == config && active.revision.sha256 == sha256_hex(&bytes) {
                return Ok(info(&active));
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (upstreams, cache) = (self.upstreams.clone(), self.cache.clone());
        let built = tokio::task::spawn_blocking(move || {
            build(&bytes, config, source, id, upstreams, cache)
        })
        .await
        .map_err(|e| LoadError(format!("building the revision: {e}")))?;
        let loaded = match built {
            Ok(l) => Arc::new(l),
            Err(e) => {
                tracing::error!(error = %e, "policy not loaded; the active revision keeps serving");
                return Err(e);
            }
        };
        {
            let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
            let old = self.active.swap(loaded.clone());
            old.revision.retire();
            previous.push_front(old);
            previous.truncate(HISTORY);
        }
        log_published(&loaded);
        self.swaps.send_modify(|n| *n += 1);
        Ok(info(&loaded))
    }

    /// Makes the newest previous revision active again; the replaced one is discarded.
    pub fn rollback(&self) -> Result<RevisionInfo, LoadError> {
        let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        let Some(prev) = previous.pop_front() else {
            return Err(LoadError("no previous revision to roll back to".into()));
        };
        let replaced = self.active.swap(prev.clone());
        replaced.revision.retire();
        drop(previous);
        tracing::info!(policy = %prev.config.name, revision = prev.revision.id(), "policy rolled back");
        self.swaps.send_modify(|n| *n += 1);
        Ok(info(&prev))
    }

    pub fn status(&self) -> PolicyStatus {
        let active = self.active.load();
        let previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        PolicyStatus {
            name: active.config.name.clone(),
            active: info(&active),
            previous: previous.iter().map(|l| info(l)).collect(),
        }
    }

    /// Every revision's counters and call durations, by phase, for `/metrics`: the active
    /// one first.
    pub fn metrics(&self) -> Vec<RevisionMetrics> {
        let active = self.active.load_full();
        let previous: Vec<Arc<Loaded>> = {
            let p = self.previous.lock().unwrap_or_else(|p| p.into_inner());
            p.iter().cloned().collect()
        };
        std::iter::once((active, true))
            .chain(previous.into_iter().map(|l| (l, false)))
            .map(|(l, active)| {
                let r = &l.revision;
                let mut phases = vec![(
                    "decide",
                    PhaseStats::of(&r.stats),
                    r.stats.duration.snapshot(),
                )];
                if r.has_response_phase() {
                    let s = &r.response_stats;
                    phases.push(("on-response", PhaseStats::of(s), s.duration.snapshot()));
                }
                RevisionMetrics {
                    policy: l.config.name.clone(),
                    revision: r.id(),
                    active,
                    phases,
                }
            })
            .collect()
    }

    /// The module file to watch, when the active config has one and asks for watching.
    pub fn watched_file(&self) -> Option<std::path::PathBuf> {
        let active = self.active.load();
        active.config.module.clone().filter(|_| active.config.watch)
    }

    /// Counts published swaps and rollbacks; tests wait on it.
    pub fn swaps(&self) -> watch::Receiver<u64> {
        self.swaps.subscribe()
    }
}

fn read_module(config: &PolicyConfig) -> Result<(Vec<u8>, String), LoadError> {
    match &config.module {
        None => Ok((super::DEFAULT_POLICY.to_vec(), "builtin:default".into())),
        Some(path) => std::fs::read(path)
            .map(|b| (b, format!("file:{}", path.display())))
            .map_err(|e| LoadError(format!("{}: cannot read: {e}", path.display()))),
    }
}

/// Compiles, checks and rehearses a revision. Blocking.
fn build(
    bytes: &[u8],
    config: PolicyConfig,
    source: String,
    id: u64,
    upstreams: Arc<dyn Upstreams>,
    cache: Option<Arc<Cache>>,
) -> Result<Loaded, LoadError> {
    let revision = Revision::load(bytes, &config, id, upstreams, cache)
        .map_err(|e| LoadError(format!("policy from {source}: {e}")))?;
    rehearse(&revision).map_err(|e| LoadError(format!("policy from {source}: {e}")))?;
    Ok(Loaded {
        revision,
        config,
        source,
        loaded_at: SystemTime::now(),
    })
}

/// Runs `decide` on a few ordinary requests under the revision's own limits, and `on-response`
/// (when exported) on ordinary responses to them: a module that traps, loops or returns an
/// invalid decision on these would fail real traffic.
fn rehearse(revision: &Revision) -> Result<(), LoadError> {
    for (method, uri, headers) in [
        ("GET", "/", &[("host", "localhost")][..]),
        (
            "GET",
            "/index.html?b=2&a=1",
            &[
                ("host", "www.example.com"),
                ("accept", "text/html"),
                ("user-agent", "sluice-rehearsal"),
                ("cookie", "a=1; b=2"),
            ][..],
        ),
        (
            "POST",
            "/api/items",
            &[
                ("host", "api.example.com"),
                ("content-type", "application/json"),
            ][..],
        ),
    ] {
        let mut req = http::Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let (parts, ()) = req
            .body(())
            .expect("static rehearsal requests are valid")
            .into_parts();
        let authority = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
        let sample = PolicyRequest {
            parts,
            authority,
            client: std::net::SocketAddr::from(([192, 0, 2, 1], 40000)),
            tls: false,
            sni: None,
        };
        let (mut sample, result) = revision.rehearse(sample);
        if let Err(f) = result {
            return Err(LoadError(format!(
                "rehearsal request `{method} {uri}` failed: {:?}: {}",
                f.kind, f.detail
            )));
        }
        if !revision.has_response_phase() {
            continue;
        }
        for (status, source) in [
            (200, ResponseSource::Upstream),
            (503, ResponseSource::Upstream),
            (200, ResponseSource::Cache),
        ] {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                "text/html".parse().expect("valid"),
            );
            let context = Context {
                request: sample,
                response: Some(ResponseHead {
                    status,
                    headers,
                    source: Some(source),
                    endpoint: Some("192.0.2.10:80".into()),
                }),
            };
            let (context, result) = revision.on_response(context, true);
            sample = context.request;
            if let Err(f) = result {
                return Err(LoadError(format!(
                    "rehearsal response {status} ({source:?}) to `{method} {uri}` failed in \
                     on-response: {:?}: {}",
                    f.kind, f.detail
                )));
            }
        }
    }
    Ok(())
}

fn log_published(l: &Loaded) {
    tracing::info!(policy = %l.config.name, revision = l.revision.id(), sha256 = %l.revision.sha256,
        source = %l.source, "policy revision active");
}

fn info(l: &Loaded) -> RevisionInfo {
    let s = &l.revision.stats;
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    RevisionInfo {
        id: l.revision.id(),
        sha256: l.revision.sha256.clone(),
        size: l.revision.size,
        source: l.source.clone(),
        loaded_at: humantime::format_rfc3339_seconds(l.loaded_at).to_string(),
        fail: match l.config.fail {
            FailMode::Open => "open",
            FailMode::Closed => "closed",
        },
        deadline_ms: l.config.deadline.as_secs_f64() * 1000.0,
        memory_bytes: l.config.memory,
        reuse: match l.config.instances {
            InstanceMode::Fresh => 1,
            InstanceMode::Reuse(n) => n,
        },
        calls: n(&s.calls),
        traps: n(&s.traps),
        deadline_exceeded: n(&s.deadlines),
        memory_exceeded: n(&s.memory),
        invalid_decisions: n(&s.invalid),
        instantiate_failures: n(&s.instantiate),
        world: l.revision.world.clone(),
        on_response: l
            .revision
            .has_response_phase()
            .then(|| PhaseStats::of(&l.revision.response_stats)),
    }
}
