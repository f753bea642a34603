//! Builds the default policy (`examples/default-policy`) as a wasm32-wasip2 component and
//! copies it to `$OUT_DIR/default_policy.wasm`, which the binary embeds with `include_bytes!`;
//! and lists the language SDK files `sluice policy build`/`new` embed (`$OUT_DIR/sdk_files.rs`).

include!("../tests/build_guests.rs");

fn main() {
    let built = build_guests(&["examples/default-policy"]);
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dest = out_dir.join("default_policy.wasm");
    if let Err(e) = std::fs::copy(&built[0], &dest) {
        panic!("copying {} to {}: {e}", built[0].display(), dest.display());
    }
    sdk_files(&out_dir);
}

/// For each of `guest-sdk/{js,python,c}`: the files named in its `FILES` (the SDK and
/// `build.sh`) and everything under `template/`, as `(language, kind, path, bytes)`.
fn sdk_files(out_dir: &std::path::Path) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    let mut out = String::from("&[\n");
    for lang in ["js", "python", "c"] {
        let dir = root.join(lang);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut entries = Vec::new();
        if let Ok(list) = std::fs::read_to_string(dir.join("FILES")) {
            for f in list
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                entries.push(("sdk", f.to_owned()));
            }
        }
        let template = dir.join("template");
        let mut stack = vec![template.clone()];
        while let Some(d) = stack.pop() {
            let Ok(read) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in read.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(rel) = p.strip_prefix(&template) {
                    entries.push(("template", rel.to_string_lossy().into_owned()));
                }
            }
        }
        entries.sort();
        for (kind, rel) in entries {
            let full = match kind {
                "sdk" => dir.join(&rel),
                _ => template.join(&rel),
            };
            let Ok(full) = full.canonicalize() else {
                println!(
                    "cargo:warning={}: listed in FILES but missing",
                    full.display()
                );
                continue;
            };
            out.push_str(&format!(
                "    ({lang:?}, {kind:?}, {rel:?}, include_bytes!({:?}) as &[u8]),\n",
                full.display().to_string()
            ));
        }
    }
    out.push_str("]\n");
    std::fs::write(out_dir.join("sdk_files.rs"), out).expect("writing sdk_files.rs");
}
