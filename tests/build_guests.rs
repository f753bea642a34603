// Builds policy components (wasm32-wasip2) for a build script. Shared by `host/build.rs` (the
// embedded default policy) and `tests/build.rs` (every example and test guest) through
// `include!`, so it is written as plain items with no dependencies beyond std.
//
// It runs a nested `cargo build --target wasm32-wasip2 --profile guest` for the workspace
// packages given, into `<workspace target dir>/wasm-guests` (its own directory, so the outer
// build's lock is never contended), with the outer build's settings removed from the
// environment, and returns the path of each `.wasm`.

/// Builds the guest crates in `dirs` (relative to the workspace root; each directory is named
/// after its package) in one nested cargo invocation. Returns each one's `.wasm`, in order.
fn build_guests(dirs: &[&str]) -> Vec<std::path::PathBuf> {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    const TARGET: &str = "wasm32-wasip2";
    const PROFILE: &str = "guest";

    let env = |name: &str| {
        std::env::var_os(name).unwrap_or_else(|| panic!("cargo did not set {name} for build.rs"))
    };
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("the crate is one level below the workspace root")
        .to_path_buf();

    for path in [
        "wit",
        "guest-sdk",
        "Cargo.toml",
        "Cargo.lock",
        "tests/build_guests.rs",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }
    for dir in dirs {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    let packages: Vec<&str> = dirs.iter().map(|dir| package_of(dir)).collect();

    // OUT_DIR is <target dir>/[<host triple>/]<profile>/build/<package>-<hash>/out.
    let out_dir = PathBuf::from(env("OUT_DIR"));
    let mut target_dir = out_dir
        .ancestors()
        .nth(4)
        .expect("OUT_DIR has the layout <target>/<profile>/build/<pkg>/out")
        .to_path_buf();
    if target_dir.file_name() == Some(env("TARGET").as_os_str()) {
        target_dir.pop();
    }
    let guest_target_dir = target_dir.join("wasm-guests");

    let rustc = env("RUSTC");
    ensure_target_installed(Path::new(&rustc), TARGET);

    let mut cargo = Command::new(env("CARGO"));
    cargo
        .current_dir(&workspace)
        .arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .args(["--locked", "--target", TARGET, "--profile", PROFILE])
        .arg("--target-dir")
        .arg(&guest_target_dir);
    for package in &packages {
        cargo.args(["-p", package]);
    }
    // What the outer build sets for itself must not change the nested one: wrappers (clippy
    // sets RUSTC_WORKSPACE_WRAPPER), flags meant for the host target, its target dir and
    // target, profile overrides, and the variables cargo passes to build scripts. The
    // jobserver (CARGO_MAKEFLAGS, MAKEFLAGS) is kept so both builds share the job limit.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let leaks = matches!(
            name,
            "RUSTC_WRAPPER"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "RUSTFLAGS"
                | "RUSTDOCFLAGS"
                | "CARGO_ENCODED_RUSTFLAGS"
                | "CARGO_ENCODED_RUSTDOCFLAGS"
                | "CARGO_TARGET_DIR"
                | "CARGO_BUILD_TARGET"
                | "CARGO_BUILD_TARGET_DIR"
                | "CARGO_BUILD_RUSTFLAGS"
                | "CARGO_BUILD_RUSTC_WRAPPER"
                | "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_CRATE_NAME"
                | "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_INCREMENTAL"
                | "OUT_DIR"
                | "TARGET"
                | "HOST"
                | "PROFILE"
                | "OPT_LEVEL"
                | "DEBUG"
                | "NUM_JOBS"
                | "RUSTC_LINKER"
        ) || name.starts_with("CARGO_PROFILE_")
            || name.starts_with("CARGO_CFG_")
            || name.starts_with("CARGO_FEATURE_")
            || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_TARGET_")
            || name.starts_with("DEP_")
            || name.starts_with("__CARGO");
        if leaks {
            cargo.env_remove(name);
        }
    }

    let output = cargo
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the guests: {e}"));
    if !output.status.success() {
        panic!(
            "building the wasm guests failed ({}): {cargo:?}\n--- cargo stderr ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let artifacts = guest_target_dir.join(TARGET).join(PROFILE);
    packages
        .iter()
        .map(|package| {
            let wasm = artifacts.join(format!("{}.wasm", package.replace('-', "_")));
            assert!(
                wasm.is_file(),
                "cargo built {package} but {} is missing",
                wasm.display()
            );
            wasm
        })
        .collect()
}

/// The package name of a guest directory: its last component.
fn package_of(dir: &str) -> &str {
    dir.rsplit('/').next().unwrap_or(dir)
}

/// Makes sure the standard library for `target` is installed, installing it with rustup once
/// if not (rust-toolchain.toml asks for it, but a toolchain installed otherwise may lack it).
fn ensure_target_installed(rustc: &std::path::Path, target: &str) {
    use std::process::Command;

    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} --print sysroot: {e}", rustc.display()));
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    let std_dir = std::path::Path::new(&sysroot)
        .join("lib/rustlib")
        .join(target);
    if std_dir.is_dir() {
        return;
    }
    println!(
        "cargo:warning=the {target} standard library is not installed; running `rustup target add {target}`"
    );
    let added = Command::new("rustup")
        .args(["target", "add", target])
        .status();
    if !matches!(added, Ok(status) if status.success()) && !std_dir.is_dir() {
        panic!(
            "the {target} target is needed to build the policy components, and installing it \
             failed ({added:?}). Run `rustup target add {target}` and build again."
        );
    }
}
