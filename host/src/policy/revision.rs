//! One loaded policy component: checked, compiled, pre-instantiated, and called per request.
//!
//! Loading refuses a component built for another version of the `sluice:policy` package (its
//! imports name the version) and one that imports `wasi:filesystem`, `wasi:sockets` or
//! `wasi:http` (unless the operator allows it by name), links every other unknown import to a function
//! that traps if called (toolchains add WASI imports that a policy never uses), and checks the
//! `decide` export's type. By default an instance serves up to 1000 requests, one at a time,
//! taken from and returned to a small idle list; it is discarded after any failure. With
//! `instances = { reuse = 1 }` every request gets a fresh one: new `Store` -> instantiate from
//! the `InstancePre` -> `decide` -> drop, so nothing survives a request.

use super::bindings::{Policy, PolicyPre};
use super::decision::{self, Decision};
use super::host::{GuestState, Shared};
use super::{LoadError, PolicyRequest, engine};
use crate::config::{FailMode, InstanceMode, PolicyConfig, REFUSED_IMPORTS};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, Linker, Resource};
use wasmtime::{Store, Trap, UpdateDeadline};

/// Most idle instances a reuse pool keeps; more concurrent requests create extra instances
/// that are dropped afterwards.
const MAX_IDLE_INSTANCES: usize = 64;

/// Why a `decide` call produced no usable decision.
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

/// A failed `decide` call: what happened, in which revision, and what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("policy {policy} revision {revision}: {kind:?}: {detail}")]
pub struct PolicyFailure {
    pub kind: FailureKind,
    pub detail: String,
    /// Guest function names, innermost first, when the guest trapped.
    pub backtrace: Vec<String>,
    pub policy: Arc<str>,
    pub revision: u64,
    pub fail: FailMode,
}

/// Counters shown by `GET /policy`.
#[derive(Debug, Default)]
pub(super) struct Stats {
    pub calls: AtomicU64,
    pub traps: AtomicU64,
    pub deadlines: AtomicU64,
    pub memory: AtomicU64,
    pub invalid: AtomicU64,
    pub instantiate: AtomicU64,
}

pub(super) struct Revision {
    pub shared: Arc<Shared>,
    pub sha256: String,
    pub size: usize,
    pub fail: FailMode,
    pub stats: Stats,
    pre: PolicyPre<GuestState>,
    deadline_ticks: u64,
    memory_cap: usize,
    reuse: Option<ReusePool>,
}

struct ReusePool {
    max_uses: u32,
    idle: Mutex<Vec<Reusable>>,
}

struct Reusable {
    store: Store<GuestState>,
    policy: Policy,
    uses: u32,
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
                "this is a core Wasm module, not a component: build for wasm32-wasip2 or run \
                 `wasm-tools component new`"
                    .into()
            } else {
                "not a Wasm component (no \\0asm header)".into()
            }));
        }
        let component = Component::new(engine, bytes)
            .map_err(|e| LoadError(format!("invalid component: {}", root_cause(&e))))?;
        check_world_version(&component, engine)?;
        check_imports(&component, engine, &config.allow_imports)?;

        let mut linker = Linker::<GuestState>::new(engine);
        Policy::add_to_linker::<_, wasmtime::component::HasSelf<GuestState>>(&mut linker, |s| s)
            .map_err(|e| LoadError(format!("linking host imports: {e:#}")))?;
        // The world's `use types.{request}` also makes the component import `request` at the
        // top level, as a type equal to the interface's. Left to the stubs below, it would get
        // a different resource type and fail the match, so give it the same one.
        linker
            .root()
            .resource(
                "request",
                wasmtime::component::ResourceType::host::<super::host::RequestRep>(),
                |_, _| Ok(()),
            )
            .map_err(|e| LoadError(format!("linking host imports: {e:#}")))?;
        stub_unknown_imports(&mut linker, &component, engine)
            .map_err(|e| LoadError(format!("linking imports: {e:#}")))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            LoadError(format!(
                "imports do not match the sluice:policy world: {e:#}"
            ))
        })?;
        let pre = PolicyPre::new(pre).map_err(|e| {
            LoadError(format!(
                "exports do not match the sluice:policy world (expected `decide: func(req: \
                 borrow<request>) -> decision`): {e:#}"
            ))
        })?;

        let sha256 = super::sha256_hex(bytes);
        Ok(Revision {
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
            pre,
            deadline_ticks: engine::deadline_ticks(config.deadline),
            memory_cap: config.memory,
            reuse: match config.instances {
                InstanceMode::Fresh => None,
                InstanceMode::Reuse(n) => Some(ReusePool {
                    max_uses: n,
                    idle: Mutex::new(Vec::new()),
                }),
            },
        })
    }

    pub fn id(&self) -> u64 {
        self.shared.revision
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
        self.call(req, false)
    }

    /// [`decide`](Self::decide) for a rehearsal request before the revision is published: the
    /// guest's `cache` import sees no cache, so loading a policy never purges anything.
    pub fn rehearse(&self, req: PolicyRequest) -> (PolicyRequest, Result<Decision, PolicyFailure>) {
        self.call(req, true)
    }

    fn call(
        &self,
        req: PolicyRequest,
        rehearsal: bool,
    ) -> (PolicyRequest, Result<Decision, PolicyFailure>) {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let (req, result) = match &self.reuse {
            None => self.decide_fresh(req, rehearsal),
            Some(pool) => self.decide_reused(pool, req, rehearsal),
        };
        let result = result.and_then(|d| {
            decision::convert(d, &*self.shared.upstreams)
                .map_err(|detail| Failed::new(FailureKind::InvalidDecision, detail))
        });
        let result = result.map_err(
            |Failed {
                 kind,
                 detail,
                 backtrace,
             }| {
                let counter = match kind {
                    FailureKind::Trap => &self.stats.traps,
                    FailureKind::Deadline => &self.stats.deadlines,
                    FailureKind::Memory => &self.stats.memory,
                    FailureKind::InvalidDecision => &self.stats.invalid,
                    FailureKind::Instantiate => &self.stats.instantiate,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                PolicyFailure {
                    kind,
                    detail,
                    backtrace,
                    policy: self.shared.name.clone(),
                    revision: self.shared.revision,
                    fail: self.fail,
                }
            },
        );
        (req, result)
    }

    fn new_store(&self, request: Option<PolicyRequest>) -> Store<GuestState> {
        let engine = self.pre.engine();
        let mut store = Store::new(
            engine,
            GuestState {
                request,
                shared: self.shared.clone(),
                memory_cap: self.memory_cap,
                memory_denied: false,
                overtime: Overtime::default(),
                rehearsal: false,
            },
        );
        store.limiter(|s| s);
        let max_rounds = self.deadline_ticks * MAX_OVERTIME_FACTOR;
        store.epoch_deadline_callback(move |mut cx| {
            on_deadline(&mut cx.data_mut().overtime, max_rounds)
        });
        store
    }

    fn decide_fresh(&self, req: PolicyRequest, rehearsal: bool) -> (PolicyRequest, Outcome) {
        let mut store = self.new_store(Some(req));
        store.data_mut().rehearsal = rehearsal;
        store.set_epoch_deadline(self.deadline_ticks);
        let result = match self.pre.instantiate(&mut store) {
            Ok(policy) => policy
                .call_decide(&mut store, Resource::new_borrow(0))
                .map_err(|e| classify(&e, store.data().memory_denied)),
            Err(e) => Err(instantiate_failure(&e, store.data().memory_denied)),
        };
        let req = take_request(&mut store);
        (req, result)
    }

    fn decide_reused(
        &self,
        pool: &ReusePool,
        req: PolicyRequest,
        rehearsal: bool,
    ) -> (PolicyRequest, Outcome) {
        let idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut inst = match idle {
            Some(i) => i,
            None => {
                let mut store = self.new_store(None);
                store.set_epoch_deadline(self.deadline_ticks);
                match self.pre.instantiate(&mut store) {
                    Ok(policy) => Reusable {
                        store,
                        policy,
                        uses: 0,
                    },
                    Err(e) => {
                        let f = instantiate_failure(&e, store.data().memory_denied);
                        return (req, Err(f));
                    }
                }
            }
        };
        let data = inst.store.data_mut();
        data.request = Some(req);
        data.overtime = Overtime::default();
        data.memory_denied = false;
        data.rehearsal = rehearsal;
        inst.store.set_epoch_deadline(self.deadline_ticks);
        let result = inst
            .policy
            .call_decide(&mut inst.store, Resource::new_borrow(0))
            .map_err(|e| classify(&e, inst.store.data().memory_denied));
        let req = take_request(&mut inst.store);
        inst.uses += 1;
        // A failed instance may be in any state: never reuse it.
        if result.is_ok() && inst.uses < pool.max_uses {
            let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE_INSTANCES {
                idle.push(inst);
            }
        }
        (req, result)
    }
}

/// A guest that is still running this many deadlines (in wall time) after its start is
/// stopped whatever its CPU use: a request never hangs on a starved machine.
const MAX_OVERTIME_FACTOR: u64 = 10;

/// State of the CPU-time check that follows a missed wall-clock deadline.
#[derive(Debug, Default)]
pub(super) struct Overtime {
    /// Thread CPU time when the current one-tick probation began.
    probation_start: Option<Duration>,
    rounds: u64,
}

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

type Outcome = Result<super::bindings::sluice::policy::types::Decision, Failed>;

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

fn take_request(store: &mut Store<GuestState>) -> PolicyRequest {
    store
        .data_mut()
        .request
        .take()
        .expect("the host put the request in the store before the call")
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

/// The version of the `sluice:policy` package this host implements: `wit/policy.wit`'s.
const WORLD_VERSION: &str = "0.2.1";

/// Refuses a component whose `sluice:policy` imports name a version incompatible with
/// [`WORLD_VERSION`] (semver: the same major version, or the same minor for 0.x). Without this
/// an old component would fail the type check below with a message about some import or type
/// that does not say the real problem: it was built with an older SDK.
fn check_world_version(component: &Component, engine: &wasmtime::Engine) -> Result<(), LoadError> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        let Some(interface) = name.strip_prefix("sluice:policy/") else {
            continue;
        };
        let version = interface.split_once('@').map(|(_, v)| v);
        if version.is_some_and(|v| semver_track(v) == semver_track(WORLD_VERSION)) {
            continue;
        }
        let built_for = match version {
            Some(v) => format!("sluice:policy@{v}"),
            None => "an unversioned sluice:policy".to_owned(),
        };
        return Err(LoadError(format!(
            "built for {built_for} (it imports `{name}`); this host implements \
             sluice:policy@{WORLD_VERSION}: rebuild it with sluice-sdk {sdk}",
            sdk = semver_track(WORLD_VERSION),
        )));
    }
    Ok(())
}

/// Links every import outside the `sluice:policy` package to a function that traps if called
/// (resources to a placeholder type), as wasmtime's `define_unknown_imports_as_traps` does, but
/// leaving the package's own imports to the definitions `Policy::add_to_linker` made.
///
/// Those definitions are named for [`WORLD_VERSION`] (`sluice:policy/log@0.2.1`), and a
/// component built for an earlier compatible version imports `sluice:policy/log@0.2.0`.
/// wasmtime's `Linker` resolves such a name to the semver-compatible definition by itself, but
/// only when nothing is defined under the exact name: `define_unknown_imports_as_traps` looks
/// instances up by exact name and would define a trapping `...@0.2.0` instance that wins the
/// lookup (and whose `request` resource is not the host's, so loading fails). Every
/// `sluice:policy` import left here is on [`WORLD_VERSION`]'s track (`check_world_version` ran
/// first); one the host lacks (a newer minor's addition) fails `instantiate_pre` by name.
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
            // One placeholder type for every stub resource, so that a stub interface that
            // `use`s another's resource sees the same type.
            ComponentItem::Resource(_) => {
                linker.resource(name, ResourceType::host::<()>(), |_, _| Ok(()))
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
        if name == "request" || name.starts_with("sluice:policy/") {
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
                    what = match refused {
                        "wasi:filesystem" => "filesystem",
                        "wasi:sockets" => "sockets",
                        _ => "outgoing HTTP",
                    }
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
    fn world_version_is_the_wit_package_version() {
        let wit = include_str!("../../../wit/policy.wit");
        let package = format!("\npackage sluice:policy@{WORLD_VERSION};\n");
        assert!(
            wit.contains(&package),
            "wit/policy.wit should declare {package:?}"
        );
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
