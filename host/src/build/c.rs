//! C policies. Debian 12's clang 14 targets wasm32-wasi (WASI preview 1) but not
//! wasm32-wasip2, and we do not want C users to install Rust tools, so the steps a wasip2
//! toolchain would do are done here, with the same Bytecode Alliance crates those tools use:
//!
//! 1. C bindings for both worlds from the WIT (`wit-bindgen-c`, as `wit-bindgen c` would);
//! 2. `guest-sdk/c/build.sh` compiles the SDK, the policy and the chosen world's bindings with
//!    clang into a core module (a wasm32-wasi reactor with the component-type section);
//! 3. `wit-component` makes it a component, adapting preview 1 imports to WASI 0.2 with the
//!    adapter matching our wasmtime (as `wasm-tools component new --adapt` would).

use super::{BuildError, Lang};
use std::path::{Path, PathBuf};
use wit_bindgen_core::wit_parser::Resolve;

pub(super) fn build(dir: &Path) -> Result<PathBuf, BuildError> {
    let work = super::work_dir(dir)?;
    let bindings = work.join("bindings");
    for world in ["policy", "responder"] {
        generate_bindings(world, &bindings.join(world))?;
    }
    let out = super::script::output(dir)?;
    let core = out.with_extension("core.wasm");
    super::script::run_script(Lang::C, dir, &core, &[("SLUICE_C_BINDINGS", &bindings)])?;
    let module =
        std::fs::read(&core).map_err(|e| BuildError::Failed(format!("{}: {e}", core.display())))?;
    let component = componentize(&module)?;
    std::fs::write(&out, component)
        .map_err(|e| BuildError::Failed(format!("{}: {e}", out.display())))?;
    Ok(out)
}

/// What `wit-bindgen c --world WORLD` writes, into `out`.
fn generate_bindings(world: &str, out: &Path) -> Result<(), BuildError> {
    let failed = |e: anyhow::Error| BuildError::Failed(format!("C bindings for {world}: {e:#}"));
    let mut resolve = Resolve::default();
    let package = resolve.push_str("policy.wit", super::WIT).map_err(failed)?;
    let id = resolve
        .select_world(&[package], Some(world))
        .map_err(failed)?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, id, &mut files)
        .map_err(failed)?;
    std::fs::create_dir_all(out).map_err(|e| failed(e.into()))?;
    for (name, bytes) in files.iter() {
        std::fs::write(out.join(name), bytes).map_err(|e| failed(e.into()))?;
    }
    Ok(())
}

/// A core module with a component-type section, as a component; WASI preview 1 imports go
/// through the reactor adapter.
fn componentize(module: &[u8]) -> Result<Vec<u8>, BuildError> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    };
    let failed = |e: anyhow::Error| BuildError::Failed(format!("making the component: {e:#}"));
    wit_component::ComponentEncoder::default()
        .module(module)
        .map_err(failed)?
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )
        .map_err(failed)?
        .validate(true)
        .encode()
        .map_err(failed)
}

pub(super) fn template() -> Vec<(&'static str, &'static str)> {
    super::script::template(Lang::C)
}
