//! One loaded policy component: checked, compiled, pre-instantiated, and called per request.
//!
//! Loading reads the `sluice:policy` version the component was built for from its imports
//! (0.3.x or 0.2.x; any other is refused, naming both), refuses one that imports `wasi:http`
//! (unless the operator allows it by name), links WASI as `wasi.rs` grants it and every other
//! unknown import to a function that traps if called (toolchains add imports a policy never
//! uses), and finds the exports: `decide`, and for a 0.3 component of the `responder` world
//! `on-response`. By default an instance serves up to 1000 calls, one at a time, taken from and
//! returned to a small idle list; it is discarded after any failure. With
//! `instances = { reuse = 1 }` every call gets a fresh one: new `Store` -> instantiate from the
//! `InstancePre` -> call -> drop, so nothing survives a request.

use super::bindings::{v02, v03};
use super::decision::{Checked, Decision, ResponseAction};
use super::store::{GuestState, Overtime, ResponseHead, Shared};
use super::{LoadError, PolicyRequest, engine};
use crate::config::{FailMode, InstanceMode, PolicyConfig, REFUSED_IMPORTS};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wasmtime::component::{
    Component, ComponentExportIndex, InstancePre, Linker, Resource, TypedFunc,
};
use wasmtime::{Store, Trap, UpdateDeadline};

/// Most idle instances a reuse pool keeps; more concurrent requests create extra instances
/// that are dropped afterwards.
const MAX_IDLE_INSTANCES: usize = 64;

/// Why a policy call produced no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The guest trapped (panic, `unreachable`, out-of-bounds access, a stub WASI call).
    Trap,
    /// The guest ran past its deadline.
    Deadline,
    /// The guest asked for more memory than its cap.
    Memory,
    /// The guest returned a decision the host refused (unknown pool, invalid header...).
    InvalidDecision,
    /// No instance could be created (the engine's instance slots are exhausted).
    Instantiate,
}

/// A failed call: what happened, in which revision and phase, and what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("policy {policy} revision {revision}: {phase}: {kind:?}: {detail}")]
pub struct PolicyFailure {
    pub kind: FailureKind,
    pub detail: String,
    /// Guest function names, innermost first, when the guest trapped.
    pub backtrace: Vec<String>,
    pub policy: Arc<str>,
    pub revision: u64,
    pub fail: FailMode,
    /// `decide` or `on-response`.
    pub phase: &'static str,
}

/// Counters of one phase, shown by `GET /policy`.
#[derive(Debug, Default)]
pub(super) struct Stats {
    pub calls: AtomicU64,
    pub traps: AtomicU64,
    pub deadlines: AtomicU64,
    pub memory: AtomicU64,
    pub invalid: AtomicU64,
    pub instantiate: AtomicU64,
    /// How long calls take, instantiation included.
    pub duration: crate::metrics::Histogram,
}

impl Stats {
    fn count(&self, kind: FailureKind) {
        let counter = match kind {
            FailureKind::Trap => &self.traps,
            FailureKind::Deadline => &self.deadlines,
            FailureKind::Memory => &self.memory,
            FailureKind::InvalidDecision => &self.invalid,
            FailureKind::Instantiate => &self.instantiate,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The two phases a revision may be called for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Decide,
    Respond,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Decide => "decide",
            Phase::Respond => "on-response",
        }
    }
}

pub(super) struct Revision {
    pub shared: Arc<Shared>,
    pub sha256: String,
    pub size: usize,
    pub fail: FailMode,
    /// `decide` calls.
    pub stats: Stats,
    /// `on-response` calls.
    pub response_stats: Stats,
    /// The package version the component was built for, e.g. `0.3.0`.
    pub world: String,
    exports: Exports,
    deadline_ticks: u64,
    memory_cap: usize,
    reuse: Option<ReusePool>,
}

/// How to call a component, by the package version it was built for.
enum Exports {
    /// 0.2.x: `decide(req: borrow<request>)`, through the generated wrapper.
    V02(v02::PolicyPre<GuestState>),
    /// 0.3.x: `decide()`, and `on-response()` in the `responder` world.
    V03 {
        pre: InstancePre<GuestState>,
        decide: ComponentExportIndex,
        on_response: Option<ComponentExportIndex>,
    },
}

type Decide03 = TypedFunc<(), (v03::sluice::policy::types::Decision,)>;
type Respond03 = TypedFunc<(), (v03::sluice::policy::types::ResponseDecision,)>;

/// An instance's entry points.
enum Entry {
    V02(v02::Policy),
    V03 {
        decide: Decide03,
        on_response: Option<Respond03>,
    },
}

struct ReusePool {
    max_uses: u32,
    idle: Mutex<Vec<Reusable>>,
}

struct Reusable {
    store: Store<GuestState>,
    entry: Entry,
    uses: u32,
}

/// What a call hands the guest and gets back: the request, and for `on-response` the head.
pub(super) struct Context {
    pub request: PolicyRequest,
    pub response: Option<ResponseHead>,
}

impl Revision {
    /// Compiles and checks `bytes`. Blocking (Cranelift may take seconds); call off the
    /// request path.
    pub fn load(
        bytes: &[u8],
        config: &PolicyConfig,
        revision: u64,
        upstreams: Arc<dyn super::Upstreams>,
        cache: Option<Arc<crate::cache::Cache>>,
    ) -> Result<Revision, LoadError> {
        let engine = engine::engine().map_err(LoadError)?;
        if !is_component(bytes) {
            return Err(LoadError(if bytes.starts_with(b"\0asm") {
                "this is a core Wasm module, not a component: build it with `sluice policy \
                 build`, for wasm32-wasip2, or run `wasm-tools component new`"
                    .into()
            } else {
                "not a Wasm component (no \\0asm header)".into()
            }));
        }
        let component = Component::new(engine, bytes)
            .map_err(|e| LoadError(format!("invalid component: {}", root_cause(&e))))?;
        let world = world_version(&component, engine)?;
        check_imports(&component, engine, &config.allow_imports)?;

        let mut linker = Linker::<GuestState>::new(engine);
        let link = |e: wasmtime::Error| LoadError(format!("linking host imports: {e:#}"));
        let v03 = world.starts_with("0.3.");
        if v03 {
            v03::Responder::add_to_linker::<_, wasmtime::component::HasSelf<GuestState>>(
                &mut linker,
                |s| s,
            )
            .map_err(link)?;
        } else {
            v02::Policy::add_to_linker::<_, wasmtime::component::HasSelf<GuestState>>(
                &mut linker,
                |s| s,
            )
            .map_err(link)?;
            // The 0.2 world's `use types.{request}` also makes the component import `request`
            // at the top level, as a type equal to the interface's. Left to the stubs below, it
            // would get a different resource type and fail the match, so give it the same one.
            linker
                .root()
                .resource(
                    "request",
                    wasmtime::component::ResourceType::host::<super::store::RequestRep>(),
                    |_, _| Ok(()),
                )
                .map_err(link)?;
        }
        super::wasi::link(&mut linker).map_err(link)?;
        stub_unknown_imports(&mut linker, &component, engine)
            .map_err(|e| LoadError(format!("linking imports: {e:#}")))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            LoadError(format!(
                "imports do not match the sluice:policy@{world} world: {e:#}"
            ))
        })?;
        let exports = if v03 {
            let decide = component.get_export_index(None, "decide").ok_or_else(|| {
                LoadError(format!(
                    "exports do not match the sluice:policy@{world} world: no `decide` export \
                     (expected `decide: func() -> decision`)"
                ))
            })?;
            let on_response = component.get_export_index(None, "on-response");
            Exports::V03 {
                pre,
                decide,
                on_response,
            }
        } else {
            Exports::V02(v02::PolicyPre::new(pre).map_err(|e| {
                LoadError(format!(
                    "exports do not match the sluice:policy@{world} world (expected `decide: \
                     func(req: borrow<request>) -> decision`): {e:#}"
                ))
            })?)
        };

        let sha256 = super::sha256_hex(bytes);
        let revision = Revision {
            shared: Arc::new(Shared {
                name: config.name.as_str().into(),
                revision,
                settings: config.settings.clone(),
                upstreams,
                cache,
            }),
            sha256,
            size: bytes.len(),
            fail: config.fail,
            stats: Stats::default(),
            response_stats: Stats::default(),
            world,
            exports,
            deadline_ticks: engine::deadline_ticks(config.deadline),
            memory_cap: config.memory,
            reuse: match config.instances {
                InstanceMode::Fresh => None,
                InstanceMode::Reuse(n) => Some(ReusePool {
                    max_uses: n,
                    idle: Mutex::new(Vec::new()),
                }),
            },
        };
        revision.check_exports()?;
        Ok(revision)
    }

    /// Type-checks the 0.3 exports in one instance (0.2's wrapper checked `decide` already),
    /// so that a wrong signature fails the load, not a request.
    fn check_exports(&self) -> Result<(), LoadError> {
        let Exports::V03 {
            pre,
            decide,
            on_response,
        } = &self.exports
        else {
            return Ok(());
        };
        let mut store = self.new_store();
        store.set_epoch_deadline(self.instantiate_ticks());
        let instance = pre.instantiate(&mut store).map_err(|e| {
            let f = instantiate_failure(&e, store.data().memory_denied);
            if f.kind == FailureKind::Memory {
                return LoadError(format!(
                    "the component needs more memory than its cap to start (policy.memory = \
                     {} bytes): raise policy.memory ({})",
                    self.memory_cap, f.detail
                ));
            }
            LoadError(format!("instantiating: {:?}: {}", f.kind, f.detail))
        })?;
        let world = &self.world;
        let mismatch = |name: &str, sig: &str, e: wasmtime::Error| {
            LoadError(format!(
                "exports do not match the sluice:policy@{world} world: expected `{name}: {sig}`: \
                 {e:#}"
            ))
        };
        instance
            .get_typed_func::<(), (v03::sluice::policy::types::Decision,)>(&mut store, decide)
            .map_err(|e| mismatch("decide", "func() -> decision", e))?;
        if let Some(i) = on_response {
            instance
                .get_typed_func::<(), (v03::sluice::policy::types::ResponseDecision,)>(
                    &mut store, i,
                )
                .map_err(|e| mismatch("on-response", "func() -> response-decision", e))?;
        }
        Ok(())
    }

    pub fn id(&self) -> u64 {
        self.shared.revision
    }

    /// Whether the component exports `on-response`.
    pub fn has_response_phase(&self) -> bool {
        matches!(
            self.exports,
            Exports::V03 {
                on_response: Some(_),
                ..
            }
        )
    }

    /// Drops idle reuse-mode instances: a revision that is no longer active should not hold
    /// the engine's instance slots (a rollback creates new ones on demand).
    pub fn retire(&self) {
        if let Some(pool) = &self.reuse {
            pool.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    /// Runs `decide` for one request and hands the request back.
    pub fn decide(&self, req: PolicyRequest) -> (PolicyRequest, Result<Decision, PolicyFailure>) {
        self.decide_as(req, false)
    }

    /// [`decide`](Self::decide) for a rehearsal request before the revision is published: the
    /// guest's `cache` import sees no cache, so loading a policy never purges anything.
    pub fn rehearse(&self, req: PolicyRequest) -> (PolicyRequest, Result<Decision, PolicyFailure>) {
        self.decide_as(req, true)
    }

    fn decide_as(
        &self,
        req: PolicyRequest,
        rehearsal: bool,
    ) -> (PolicyRequest, Result<Decision, PolicyFailure>) {
        let context = Context {
            request: req,
            response: None,
        };
        let (context, result) = self.call(context, rehearsal, Phase::Decide, |entry, store| {
            let upstreams = store.data().shared.upstreams.clone();
            let checked = match entry {
                Entry::V02(p) => p
                    .call_decide(&mut *store, Resource::new_borrow(0))?
                    .check(&*upstreams),
                Entry::V03 { decide, .. } => decide.call(&mut *store, ())?.0.check(&*upstreams),
            };
            Ok(checked)
        });
        (context.request, result)
    }

    /// Runs `on-response` on a response head (`context.response`) and hands both back. Only
    /// for a revision with [`has_response_phase`](Self::has_response_phase).
    pub fn on_response(
        &self,
        context: Context,
        rehearsal: bool,
    ) -> (Context, Result<ResponseAction, PolicyFailure>) {
        self.call(context, rehearsal, Phase::Respond, |entry, store| {
            let upstreams = store.data().shared.upstreams.clone();
            match entry {
                Entry::V03 {
                    on_response: Some(f),
                    ..
                } => Ok(f.call(&mut *store, ())?.0.check(&*upstreams)),
                _ => Err(wasmtime::format_err!(
                    "the component has no on-response export"
                )),
            }
        })
    }

    fn call<T>(
        &self,
        context: Context,
        rehearsal: bool,
        phase: Phase,
        run: impl FnOnce(&Entry, &mut Store<GuestState>) -> wasmtime::Result<Result<T, String>>,
    ) -> (Context, Result<T, PolicyFailure>) {
        let stats = match phase {
            Phase::Decide => &self.stats,
            Phase::Respond => &self.response_stats,
        };
        stats.calls.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let (context, result) = match &self.reuse {
            None => self.call_fresh(context, rehearsal, run),
            Some(pool) => self.call_reused(pool, context, rehearsal, run),
        };
        stats.duration.observe(started.elapsed());
        let result = result.map_err(
            |Failed {
                 kind,
                 detail,
                 backtrace,
             }| {
                stats.count(kind);
                PolicyFailure {
                    kind,
                    detail,
                    backtrace,
                    policy: self.shared.name.clone(),
                    revision: self.shared.revision,
                    fail: self.fail,
                    phase: phase.name(),
                }
            },
        );
        (context, result)
    }

    fn new_store(&self) -> Store<GuestState> {
        let engine = engine::engine().expect("the engine exists once a revision is loaded");
        let mut store = Store::new(
            engine,
            GuestState::new(self.shared.clone(), self.memory_cap),
        );
        store.limiter(|s| s);
        let max_rounds = self.deadline_ticks * MAX_OVERTIME_FACTOR;
        store.epoch_deadline_callback(move |mut cx| {
            on_deadline(&mut cx.data_mut().overtime, max_rounds)
        });
        store
    }

    /// The CPU budget for instantiating (start functions, an interpreter's initialisation):
    /// its own, not the call's, so a runtime that starts in a few milliseconds does not fail
    /// the first call of every new instance.
    fn instantiate_ticks(&self) -> u64 {
        self.deadline_ticks
            .max(engine::deadline_ticks(INSTANTIATE_BUDGET))
    }

    /// Instantiates the component in `store` and finds its entry points, under
    /// [`INSTANTIATE_BUDGET`]; leaves the store's deadline set for a call.
    fn instantiate(&self, store: &mut Store<GuestState>) -> Result<Entry, Failed> {
        store.data_mut().overtime = Overtime::default();
        store.set_epoch_deadline(self.instantiate_ticks());
        let entry = self.instantiate_entry(store);
        store.data_mut().overtime = Overtime::default();
        store.set_epoch_deadline(self.deadline_ticks);
        entry
    }

    fn instantiate_entry(&self, store: &mut Store<GuestState>) -> Result<Entry, Failed> {
        let failed = |e: wasmtime::Error, store: &Store<GuestState>| {
            instantiate_failure(&e, store.data().memory_denied)
        };
        match &self.exports {
            Exports::V02(pre) => match pre.instantiate(&mut *store) {
                Ok(p) => Ok(Entry::V02(p)),
                Err(e) => Err(failed(e, store)),
            },
            Exports::V03 {
                pre,
                decide,
                on_response,
            } => {
                let instance = match pre.instantiate(&mut *store) {
                    Ok(i) => i,
                    Err(e) => return Err(failed(e, store)),
                };
                let typed = |store: &mut Store<GuestState>| -> wasmtime::Result<Entry> {
                    Ok(Entry::V03 {
                        decide: instance.get_typed_func(&mut *store, decide)?,
                        on_response: on_response
                            .as_ref()
                            .map(|i| instance.get_typed_func(&mut *store, i))
                            .transpose()?,
                    })
                };
                typed(store)
                    .map_err(|e| Failed::new(FailureKind::Instantiate, format!("exports: {e:#}")))
            }
        }
    }

    fn call_fresh<T>(
        &self,
        context: Context,
        rehearsal: bool,
        run: impl FnOnce(&Entry, &mut Store<GuestState>) -> wasmtime::Result<Result<T, String>>,
    ) -> (Context, Result<T, Failed>) {
        let mut store = self.new_store();
        put(&mut store, context, rehearsal);
        store.set_epoch_deadline(self.deadline_ticks);
        let result = self
            .instantiate(&mut store)
            .and_then(|entry| finish(run(&entry, &mut store), &store));
        (take(&mut store), result)
    }

    fn call_reused<T>(
        &self,
        pool: &ReusePool,
        context: Context,
        rehearsal: bool,
        run: impl FnOnce(&Entry, &mut Store<GuestState>) -> wasmtime::Result<Result<T, String>>,
    ) -> (Context, Result<T, Failed>) {
        let idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut inst = match idle {
            Some(i) => i,
            None => {
                let mut store = self.new_store();
                store.set_epoch_deadline(self.deadline_ticks);
                match self.instantiate(&mut store) {
                    Ok(entry) => Reusable {
                        store,
                        entry,
                        uses: 0,
                    },
                    Err(f) => return (context, Err(f)),
                }
            }
        };
        put(&mut inst.store, context, rehearsal);
        inst.store.set_epoch_deadline(self.deadline_ticks);
        let result = finish(run(&inst.entry, &mut inst.store), &inst.store);
        let context = take(&mut inst.store);
        inst.uses += 1;
        // A failed instance may be in any state: never reuse it. An invalid decision is the
        // guest's answer, not a broken instance, but it is treated the same: simple and safe.
        if result.is_ok() && inst.uses < pool.max_uses {
            let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE_INSTANCES {
                idle.push(inst);
            }
        }
        (context, result)
    }
}

/// Moves the call's context into the store.
fn put(store: &mut Store<GuestState>, context: Context, rehearsal: bool) {
    let data = store.data_mut();
    data.request = Some(context.request);
    data.response = context.response;
    data.overtime = Overtime::default();
    data.memory_denied = false;
    data.rehearsal = rehearsal;
}

/// Takes the call's context back out of the store.
fn take(store: &mut Store<GuestState>) -> Context {
    let data = store.data_mut();
    Context {
        request: data
            .request
            .take()
            .expect("the host put the request in the store before the call"),
        response: data.response.take(),
    }
}

/// A guest call's outcome: a trap classified, a refused answer as an invalid decision.
fn finish<T>(
    result: wasmtime::Result<Result<T, String>>,
    store: &Store<GuestState>,
) -> Result<T, Failed> {
    match result {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(detail)) => Err(Failed::new(FailureKind::InvalidDecision, detail)),
        Err(e) => Err(classify(&e, store.data().memory_denied)),
    }
}

/// CPU time an instantiation may take (see [`Revision::instantiate_ticks`]).
const INSTANTIATE_BUDGET: Duration = Duration::from_millis(100);

/// A guest that is still running this many deadlines (in wall time) after its start is
/// stopped whatever its CPU use: a request never hangs on a starved machine.
const MAX_OVERTIME_FACTOR: u64 = 10;

/// Called by wasmtime when a call reaches its epoch deadline (wall clock). The deadline is
/// meant as CPU time: on a busy machine a worker thread can be descheduled for milliseconds
/// (the scheduler's slice), and counting that against the guest would fail requests whenever
/// something else, such as compiling a new revision, competes for the cores. Reading the
/// thread's CPU clock costs about a microsecond here (a syscall; no vDSO for CPU clocks), too
/// much for every request, so it is read only once a call is already late: the guest gets one
/// more tick, and if its thread spent at least half of that tick on the CPU it is genuinely
/// running long and is stopped; otherwise the thread was waiting for a core and the check
/// repeats, up to `max_rounds` ticks.
fn on_deadline(o: &mut Overtime, max_rounds: u64) -> wasmtime::Result<UpdateDeadline> {
    let now = thread_cpu_time();
    let ran_last_tick = o
        .probation_start
        .is_some_and(|start| now.saturating_sub(start) >= engine::TICK / 2);
    o.rounds += 1;
    if ran_last_tick || o.rounds > max_rounds {
        return Err(Trap::Interrupt.into());
    }
    o.probation_start = Some(now);
    Ok(UpdateDeadline::Continue(1))
}

fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// A failure before it is tagged with the revision.
struct Failed {
    kind: FailureKind,
    detail: String,
    backtrace: Vec<String>,
}

impl Failed {
    fn new(kind: FailureKind, detail: String) -> Failed {
        Failed {
            kind,
            detail,
            backtrace: Vec::new(),
        }
    }
}

fn classify(e: &wasmtime::Error, memory_denied: bool) -> Failed {
    let kind = match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => FailureKind::Deadline,
        _ if memory_denied => FailureKind::Memory,
        _ => FailureKind::Trap,
    };
    let backtrace: Vec<String> = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| {
            bt.frames()
                .iter()
                .map(|f| match f.func_name() {
                    // `{:#}` leaves out the hash suffix.
                    Some(name) => format!("{:#}", rustc_demangle::demangle(name)),
                    None => format!("<function {}>", f.func_index()),
                })
                .collect()
        })
        .unwrap_or_default();
    // The trap and the innermost frames of the policy's own code (a panic's innermost frames
    // are the standard library's abort path), on one line for the log.
    let runtime = |f: &&String| {
        ["std::", "core::", "alloc::", "__rustc::", "abort"]
            .iter()
            .any(|p| f.starts_with(p))
    };
    let mut frames: Vec<&String> = backtrace.iter().filter(|f| !runtime(f)).take(3).collect();
    if frames.is_empty() {
        frames = backtrace.iter().take(3).collect();
    }
    let mut detail = root_cause(e);
    if !frames.is_empty() {
        detail.push_str(" in ");
        detail.push_str(
            &frames
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(" <- "),
        );
    }
    Failed {
        kind,
        detail,
        backtrace,
    }
}

fn instantiate_failure(e: &wasmtime::Error, memory_denied: bool) -> Failed {
    match e.downcast_ref::<Trap>() {
        // A trap in a start function or initialiser is the guest's.
        Some(_) => classify(e, memory_denied),
        // Its initial memory is larger than the cap.
        None if memory_denied => Failed::new(FailureKind::Memory, format!("{e:#}")),
        None => Failed::new(
            FailureKind::Instantiate,
            format!("cannot instantiate: {e:#}"),
        ),
    }
}

fn root_cause(e: &wasmtime::Error) -> String {
    e.root_cause().to_string()
}

fn is_component(bytes: &[u8]) -> bool {
    // A component's preamble: magic, then version 0x0d with layer 1 (component model spec,
    // Binary.md "Component Definitions").
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [0x01, 0x00]
}

/// The versions of the `sluice:policy` package this host implements: `wit/policy.wit`'s, and
/// the frozen `host/wit/0.2.1/policy.wit`. The first is current (what error messages name).
pub(super) const WORLD_VERSIONS: [&str; 2] = ["0.3.0", "0.2.1"];

/// The version of the `sluice:policy` package the component was built for, read from its
/// imports; refused when no implemented version is semver-compatible (the same major version,
/// or the same minor for 0.x). Without this an old component would fail the type check with
/// a message about some import or type that does not say the real problem: it was built with
/// an older SDK. A component that imports nothing of the package (possible for a 0.3 policy
/// that reads nothing) is taken as the current version.
fn world_version(component: &Component, engine: &wasmtime::Engine) -> Result<String, LoadError> {
    let ty = component.component_type();
    let mut found: Option<String> = None;
    for (name, _) in ty.imports(engine) {
        let Some(interface) = name.strip_prefix("sluice:policy/") else {
            continue;
        };
        let version = interface.split_once('@').map(|(_, v)| v);
        let supported = version.and_then(|v| {
            WORLD_VERSIONS
                .iter()
                .find(|w| semver_track(w) == semver_track(v))
                .map(|_| v)
        });
        match (supported, &found) {
            (Some(v), None) => found = Some(v.to_owned()),
            (Some(v), Some(f)) if semver_track(v) == semver_track(f) => {}
            _ => {
                let built_for = match version {
                    Some(v) => format!("sluice:policy@{v}"),
                    None => "an unversioned sluice:policy".to_owned(),
                };
                let current = WORLD_VERSIONS[0];
                return Err(LoadError(format!(
                    "built for {built_for} (it imports `{name}`); this host implements \
                     sluice:policy@{current} (and {older}): rebuild it with sluice-sdk {sdk}",
                    older = WORLD_VERSIONS[1..].join(", "),
                    sdk = semver_track(current),
                )));
            }
        }
    }
    Ok(found.unwrap_or_else(|| WORLD_VERSIONS[0].to_owned()))
}

/// Links every import outside the `sluice:policy` package to a function that traps if called
/// (resources to a placeholder type), as wasmtime's `define_unknown_imports_as_traps` does, but
/// leaving the package's own imports to the definitions `Policy::add_to_linker` made.
///
/// Those definitions are named for the implemented version (`sluice:policy/log@0.2.1`), and a
/// component built for an earlier compatible version imports `sluice:policy/log@0.2.0`.
/// wasmtime's `Linker` resolves such a name to the semver-compatible definition by itself, but
/// only when nothing is defined under the exact name: `define_unknown_imports_as_traps` looks
/// instances up by exact name and would define a trapping `...@0.2.0` instance that wins the
/// lookup (and whose `request` resource is not the host's, so loading fails). Every
/// `sluice:policy` import left here is on an implemented version's track (`world_version` ran
/// first); one the host lacks (a newer minor's addition) fails `instantiate_pre` by name. The
/// WASI interfaces `wasi.rs` provides are left alone for the same reason.
fn stub_unknown_imports(
    linker: &mut Linker<GuestState>,
    component: &Component,
    engine: &wasmtime::Engine,
) -> wasmtime::Result<()> {
    use wasmtime::component::types::ComponentItem;
    use wasmtime::component::{LinkerInstance, ResourceType};

    fn stub(
        linker: &mut LinkerInstance<'_, GuestState>,
        engine: &wasmtime::Engine,
        name: &str,
        item: &ComponentItem,
        path: &str,
    ) -> wasmtime::Result<()> {
        match item {
            ComponentItem::ComponentFunc(_) => {
                let qualified = if path.is_empty() {
                    name.to_owned()
                } else {
                    format!("{path}#{name}")
                };
                linker.func_new(name, move |_, _, _, _| {
                    Err(wasmtime::format_err!(
                        "unknown import: `{qualified}` has not been defined"
                    ))
                })
            }
            ComponentItem::ComponentInstance(instance) => {
                let mut inner = linker.instance(name)?;
                for (export, ext) in instance.exports(engine) {
                    stub(&mut inner, engine, export, &ext.ty, name)?;
                }
                Ok(())
            }
            // One placeholder type for every other stub resource, so that a stub interface
            // that `use`s another's resource sees the same type.
            // A stubbed interface that `use`s a WASI stream or pollable (wasi:sockets does)
            // must see the type the real `wasi:io` has, or the component does not link.
            ComponentItem::Resource(_) => {
                let ty = super::wasi::io_resource(name).unwrap_or(ResourceType::host::<()>());
                linker.resource(name, ty, |_, _| Ok(()))
            }
            ComponentItem::Component(_) | ComponentItem::Module(_) => Err(wasmtime::format_err!(
                "cannot link `{name}`: a component or module import"
            )),
            ComponentItem::CoreFunc(_) | ComponentItem::Type(_) => Ok(()),
        }
    }

    let ty = component.component_type();
    let mut root = linker.root();
    for (name, ext) in ty.imports(engine) {
        // `request`: the world's own `use types.{request}`, defined by the caller.
        if name == "request" || name.starts_with("sluice:policy/") || super::wasi::provides(name) {
            continue;
        }
        stub(&mut root, engine, name, &ext.ty, "")?;
    }
    Ok(())
}

/// The part of a semver version that compatible versions share: `1` for `1.4.2`, `0.2` for
/// `0.2.1`, all of `0.0.3`. The SDK's version follows the package's, so this also names the
/// SDK line to rebuild with.
fn semver_track(version: &str) -> &str {
    let mut dots = version.match_indices('.').map(|(i, _)| i);
    let (first, second) = (dots.next(), dots.next());
    match (version.starts_with("0."), first, second) {
        (false, Some(i), _) => &version[..i],
        (true, Some(_), Some(j)) if !version.starts_with("0.0.") => &version[..j],
        _ => version,
    }
}

/// Refuses imports from the interfaces in [`REFUSED_IMPORTS`] unless allowed by name.
fn check_imports(
    component: &Component,
    engine: &wasmtime::Engine,
    allowed: &[String],
) -> Result<(), LoadError> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        for refused in REFUSED_IMPORTS {
            let matches = name
                .strip_prefix(refused)
                .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('@'));
            if matches && !allowed.iter().any(|a| a == refused) {
                return Err(LoadError(format!(
                    "the component imports `{name}`: policies get no {what}; rebuild it without \
                     that import, or allow it with policy.allow_imports = [\"{refused}\"] (its \
                     functions will trap if called)",
                    what = "outgoing HTTP",
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_versions_are_the_wit_package_versions() {
        for (wit, version) in [
            (include_str!("../../../wit/policy.wit"), WORLD_VERSIONS[0]),
            (
                include_str!("../../wit/0.2.1/policy.wit"),
                WORLD_VERSIONS[1],
            ),
        ] {
            let package = format!("\npackage sluice:policy@{version};\n");
            assert!(wit.contains(&package), "{package:?} not declared");
        }
    }

    #[test]
    fn semver_tracks() {
        assert_eq!(semver_track("0.2.0"), "0.2");
        assert_eq!(semver_track("0.2.7"), "0.2");
        assert_eq!(semver_track("0.1.0"), "0.1");
        assert_eq!(semver_track("1.4.2"), "1");
        assert_eq!(semver_track("0.0.3"), "0.0.3");
        assert_eq!(semver_track("2"), "2");
        assert_ne!(semver_track("0.1.0"), semver_track("0.2.0"));
    }
}
