//! `sluice policy build DIR` and `sluice policy new --lang L DIR`: one command that turns a
//! policy written in Rust, JavaScript, Python or C into a component the host loads.
//!
//! What DIR is decides the toolchain: `Cargo.toml` (cargo, wasm32-wasip2), `package.json`
//! (ComponentizeJS through jco), `policy.py` (componentize-py), `policy.c` (clang and
//! wasi-libc for wasm32-wasi, then `wit-component` here). The WIT and each language's SDK
//! files are built into the binary, so a build needs the toolchain and nothing from the
//! source tree; they are written to `DIR/build/.sluice/` for the toolchain to read. The
//! result is loaded exactly as the proxy would load it (version, imports, exports, one
//! instantiation), so a component that builds is one that loads.

mod c;
mod script;

use crate::config::PolicyConfig;
use crate::policy::local::LocalPolicy;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The WIT package the host implements, as the toolchains read it.
pub const WIT: &str = include_str!("../../../wit/policy.wit");

/// The languages `sluice policy build` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Js,
    Python,
    C,
}

impl Lang {
    pub fn parse(name: &str) -> Option<Lang> {
        Some(match name {
            "rust" | "rs" => Lang::Rust,
            "js" | "javascript" => Lang::Js,
            "python" | "py" => Lang::Python,
            "c" => Lang::C,
            _ => return None,
        })
    }

    /// What DIR holds, by its marker file.
    pub fn detect(dir: &Path) -> Option<Lang> {
        [
            ("Cargo.toml", Lang::Rust),
            ("package.json", Lang::Js),
            ("policy.py", Lang::Python),
            ("policy.c", Lang::C),
        ]
        .into_iter()
        .find(|(marker, _)| dir.join(marker).is_file())
        .map(|(_, lang)| lang)
    }

    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
            Lang::Python => "python",
            Lang::C => "c",
        }
    }
}

/// Why a build failed: for the user, one message, no backtrace.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A tool is not installed; the message names the package.
    #[error("{0}")]
    Missing(String),
    /// The toolchain ran and failed (its output was shown).
    #[error("{0}")]
    Failed(String),
    /// The component was built but the host would not load it.
    #[error("{0}")]
    Invalid(String),
}

/// A built component.
#[derive(Debug)]
pub struct Built {
    pub path: PathBuf,
    pub lang: Lang,
    pub size: usize,
    pub world: String,
    pub on_response: bool,
}

/// Builds the policy in `dir` and checks it.
pub fn build(dir: &Path) -> Result<Built, BuildError> {
    if !dir.is_dir() {
        return Err(BuildError::Failed(format!(
            "{}: not a directory",
            dir.display()
        )));
    }
    let lang = Lang::detect(dir).ok_or_else(|| {
        BuildError::Failed(format!(
            "{}: no Cargo.toml, package.json, policy.py or policy.c: not a policy directory \
             (`sluice policy new --lang rust|js|python|c DIR` writes one)",
            dir.display()
        ))
    })?;
    let path = match lang {
        Lang::Rust => build_rust(dir)?,
        Lang::Js | Lang::Python => script::build(lang, dir)?,
        Lang::C => c::build(dir)?,
    };
    let bytes = std::fs::read(&path).map_err(|e| {
        BuildError::Failed(format!("{}: cannot read the output: {e}", path.display()))
    })?;
    let policy = LocalPolicy::load(&bytes, &PolicyConfig::default(), None).map_err(|e| {
        BuildError::Invalid(format!(
            "{} was built but the host would not load it: {e}",
            path.display()
        ))
    })?;
    Ok(Built {
        path,
        lang,
        size: bytes.len(),
        world: policy.world().to_owned(),
        on_response: policy.has_response_phase(),
    })
}

/// `sluice policy build DIR`: prints the component's path on stdout, what it is on stderr.
pub fn build_command(dir: &Path) -> anyhow::Result<ExitCode> {
    match build(dir) {
        Ok(b) => {
            eprintln!(
                "built {} policy: sluice:policy@{}, exports decide{}, {} KiB",
                b.lang.name(),
                b.world,
                if b.on_response {
                    " and on-response"
                } else {
                    ""
                },
                b.size.div_ceil(1024)
            );
            println!("{}", b.path.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("sluice: {e}");
            Ok(ExitCode::from(match e {
                BuildError::Missing(_) => 3,
                _ => 1,
            }))
        }
    }
}

/// `DIR/build/.sluice`, with the WIT written to `wit/policy.wit`.
pub(super) fn work_dir(dir: &Path) -> Result<PathBuf, BuildError> {
    let work = dir.join("build").join(".sluice");
    let wit = work.join("wit");
    std::fs::create_dir_all(&wit)
        .and_then(|()| std::fs::write(wit.join("policy.wit"), WIT))
        .map_err(|e| BuildError::Failed(format!("{}: {e}", work.display())))?;
    Ok(work)
}

fn build_rust(dir: &Path) -> Result<PathBuf, BuildError> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    if let Ok(out) = installed {
        if !String::from_utf8_lossy(&out.stdout).contains("wasm32-wasip2") {
            return Err(BuildError::Missing(
                "the wasm32-wasip2 target is not installed: rustup target add wasm32-wasip2".into(),
            ));
        }
    }
    let out = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(dir)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BuildError::Missing(
                "cargo not found: install Rust (https://rustup.rs) and `rustup target add \
                 wasm32-wasip2`"
                    .into(),
            ),
            _ => BuildError::Failed(format!("cargo: {e}")),
        })?;
    if !out.status.success() {
        return Err(BuildError::Failed(format!(
            "cargo build failed ({})",
            out.status
        )));
    }
    // The cdylib's .wasm, from cargo's own report of what it wrote.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let wasm = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
        })
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .rfind(|f| f.extension().is_some_and(|e| e == "wasm"));
    wasm.ok_or_else(|| {
        BuildError::Failed(
            "cargo built no .wasm: is the crate a `cdylib` (`[lib] crate-type = [\"cdylib\"]`)?"
                .into(),
        )
    })
}

/// `sluice policy new --lang L DIR`.
pub fn new_command(lang: &str, dir: &Path) -> anyhow::Result<ExitCode> {
    let lang = Lang::parse(lang)
        .ok_or_else(|| anyhow::anyhow!("--lang {lang:?}: expected rust, js, python or c"))?;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        anyhow::bail!("{}: exists and is not empty", dir.display());
    }
    std::fs::create_dir_all(dir)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "policy".into());
    for (file, text) in templates(lang) {
        let text = text
            .replace("{{name}}", &crate_name(&name))
            .replace("{{sdk}}", SDK_PATH);
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)?;
    }
    eprintln!(
        "wrote a {} policy in {}; build it with `sluice policy build {}`",
        lang.name(),
        dir.display(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Where the Rust SDK was when this binary was built (a Rust policy depends on it by path).
const SDK_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk");

fn crate_name(dir_name: &str) -> String {
    let n: String = dir_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if n.starts_with(|c: char| c.is_ascii_alphabetic()) {
        n
    } else {
        format!("policy-{n}")
    }
}

fn templates(lang: Lang) -> Vec<(&'static str, &'static str)> {
    match lang {
        Lang::Rust => vec![
            ("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
            ("src/lib.rs", include_str!("templates/rust/lib.rs")),
            (".gitignore", "/target\n/build\n"),
        ],
        Lang::Js => script::template(Lang::Js),
        Lang::Python => script::template(Lang::Python),
        Lang::C => c::template(),
    }
}
