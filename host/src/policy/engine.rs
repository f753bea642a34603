//! The process-wide wasmtime [`Engine`].
//!
//! One engine serves every policy revision in the process (and every proxy a test process
//! starts): the pooling allocator reserves its instance, memory and table slots once, the
//! epoch ticker is one thread, and compiled code is shared. Tuned for a fresh instance per
//! request:
//! - pooling allocator: instantiation takes pre-reserved slots instead of calling `mmap`;
//! - copy-on-write memory images: a module's data segments are mapped, not copied;
//! - `linear_memory_keep_resident`: on release a slot's touched pages are reset in place
//!   (Linux finds them with `PAGEMAP_SCAN`) rather than returned to the kernel, so the next
//!   instance in that slot takes no page faults;
//! - epoch interruption: a deadline is one compare per loop back-edge and function entry,
//!   advanced by one ticker thread every [`TICK`].
//!
//! Compiled components are cached on disk by wasmtime's cache (keyed by a hash of the
//! component bytes, the engine settings and the wasmtime version), so a restart does not
//! recompile. We use wasmtime's cache rather than our own `serialize`/`deserialize` pair: it
//! already keys by compatibility, writes atomically and bounds its size, and loading an
//! artifact stays behind wasmtime's checks instead of an `unsafe` call of ours.

use crate::config::MAX_POLICY_MEMORY;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Epoch period: a guest overrunning its deadline is stopped within one tick of it.
pub const TICK: Duration = Duration::from_millis(1);

/// Concurrent instances the pooling allocator has slots for. Calls run synchronously on the
/// proxy's worker threads, so concurrency is at most workers + reuse pools + reloads.
const INSTANCE_SLOTS: u32 = 256;

/// Bytes of each memory slot kept mapped between instances: covers a Rust guest's 1 MiB
/// stack plus its data and a typical heap, so a fresh instance touches no new pages.
const KEEP_RESIDENT: usize = 4 << 20;

/// Process-wide engine settings, fixed by the first [`configure`] (or first use).
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Directory for compiled artifacts; `None` disables the on-disk cache.
    pub cache_dir: Option<PathBuf>,
}

impl EngineOptions {
    /// `$SLUICE_CACHE_DIR`, else `$XDG_CACHE_HOME/sluice`, else `$HOME/.cache/sluice`.
    pub fn from_env() -> EngineOptions {
        let dir = std::env::var_os("SLUICE_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("sluice")))
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("sluice"))
            });
        EngineOptions { cache_dir: dir }
    }
}

static OPTIONS: OnceLock<EngineOptions> = OnceLock::new();
static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();

/// Sets the engine options. Returns false (and changes nothing) if the engine options were
/// already fixed by an earlier call or by first use.
pub fn configure(options: EngineOptions) -> bool {
    OPTIONS.set(options).is_ok()
}

/// The engine, created on first use.
pub(super) fn engine() -> Result<&'static Engine, String> {
    ENGINE
        .get_or_init(|| {
            let options = OPTIONS.get_or_init(EngineOptions::from_env);
            let engine =
                build(options).map_err(|e| format!("cannot create the Wasm engine: {e:#}"))?;
            // Without the ticker no deadline would fire: refuse to run guests instead.
            start_ticker(&engine)
                .map_err(|e| format!("cannot start the epoch ticker thread: {e}"))?;
            Ok(engine)
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn build(options: &EngineOptions) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(INSTANCE_SLOTS)
        .total_core_instances(INSTANCE_SLOTS * 4)
        .total_memories(INSTANCE_SLOTS)
        .total_tables(INSTANCE_SLOTS * 2)
        .max_memory_size(MAX_POLICY_MEMORY as usize)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 << 10)
        // Without it (wasmtime's default) releasing a slot memsets all of its accessible memory
        // (> 1 MiB for a Rust guest): half the time of a fresh-instance call. With it only the
        // pages the guest wrote are reset: decide/fresh 23.6 -> 9.9 us (bench/RESULTS.md).
        // Falls back to the memset on kernels before 6.7.
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .memory_init_cow(true)
        // Guest frames in trap messages; captured only when a guest traps.
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(32))
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if let Some(dir) = &options.cache_dir {
        let mut cache = wasmtime::CacheConfig::new();
        cache.with_directory(dir);
        match wasmtime::Cache::new(cache) {
            Ok(c) => {
                config.cache(Some(c));
            }
            // A cache is an optimisation: run without it rather than refuse to start.
            Err(e) => tracing::warn!(dir = %dir.display(), error = %format!("{e:#}"),
                "compiled-policy cache disabled"),
        }
    }
    Engine::new(&config)
}

/// Advances the engine's epoch every [`TICK`]. The thread holds only a weak reference, so it
/// ends if the engine is ever dropped.
fn start_ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("sluice-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .map(drop)
}

/// Deadline in epoch ticks. The current tick may end at any moment, so this first fires
/// between `deadline - TICK` and `deadline`; the one-tick CPU check in `revision.rs` then stops
/// a guest that is really running between `deadline` and `deadline + TICK`.
pub(super) fn deadline_ticks(deadline: Duration) -> u64 {
    deadline.as_nanos().div_ceil(TICK.as_nanos()) as u64
}
