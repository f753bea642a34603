//! The module layering of `host/src`, checked over the source text: no module refers to one
//! in its own layer or above it. ARCHITECTURE.md's code map shows the same table.
//!
//! A reference is any `crate::NAME` path in code (comments are skipped), including the names
//! of a `use crate::{a::.., b}` group, and, inside a module with a layer table of its own
//! (`policy/`, `upstream/`), any `super::NAME` that names a sibling file or an item the
//! parent's `mod.rs` re-exports from one (`pub use sibling::{..}`). A string scan, not a
//! parser: it sees what `use` lines and inline paths say, which is how the code is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top-level modules of the crate, bottom first. A module may use only those in lower layers.
/// `ROOT` (`lib.rs`: `start`, `Running`, ...) sits above everything but the last layer.
const CRATE_LAYERS: &[&[&str]] = &[
    &["activity", "alloc_count", "balance", "filewatch", "worker"],
    &["config", "metrics"],
    &["cache", "logging", "otlp", "upstream"],
    &["health", "policy"],
    &["fleet"],
    &["proxy"],
    &["listener"],
    &[ROOT],
    &["admin", "build", "demo", "fuzz", "signals"],
];
const ROOT: &str = "(lib.rs)";

/// Files of a module with its own layers, bottom first (`mod.rs` holds the shared types and
/// re-exports; its own items are the bottom layer, alone).
const INNER_LAYERS: &[(&str, &[&[&str]])] = &[
    (
        "policy",
        &[
            &["mod"],
            &["engine", "store"],
            &["bindings"],
            &["decision", "host", "wasi"],
            &["native", "revision"],
            &["runtime"],
            &["local", "watch"],
        ],
    ),
    (
        "upstream",
        &[
            &["mod"],
            &["body", "health_state"],
            &["connection"],
            &["pool"],
        ],
    ),
];

fn layer_of(layers: &[&[&str]], name: &str) -> Option<usize> {
    layers.iter().position(|l| l.contains(&name))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments (line comments and doc comments; `/* */` is not used here).
fn code(src: &str) -> String {
    src.lines()
        .map(|l| match l.find("//") {
            // `//` inside a string literal ("http://") is not a comment.
            Some(i) if l[..i].matches('"').count() % 2 == 0 => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first identifier after each occurrence of `prefix`; for a `{` group, every name at the
/// group's top level.
fn referenced(code: &str, prefix: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `a::super::x`, `my_crate::x`
        }
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item_start) = (0usize, true);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start && depth == 0 => {
                        names.push(ident(&group[j..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            names.push(ident(rest));
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

/// `pub use sibling::{A, B}` / `pub use sibling::A` lines of a `mod.rs`: item -> sibling.
fn reexports(mod_rs: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in code(mod_rs).split(';') {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((sibling, items)) = rest.split_once("::") else {
            continue;
        };
        if sibling == "crate" || sibling == "super" {
            continue;
        }
        for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
            let item = item.trim().rsplit(' ').next().unwrap_or("");
            if !item.is_empty() {
                map.insert(item.to_string(), sibling.to_string());
            }
        }
    }
    map
}

#[test]
fn no_module_uses_one_at_or_above_its_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let parts: Vec<&str> = rel.iter().map(|p| p.to_str().unwrap()).collect();
        let top = parts[0].trim_end_matches(".rs");
        if top == "lib" || top == "main" {
            continue; // the root declares and wires every module
        }
        let Some(my_layer) = layer_of(CRATE_LAYERS, top) else {
            problems.push(format!(
                "{}: module `{top}` is not in CRATE_LAYERS",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        let code = code(&text);
        for name in referenced(&code, "crate::") {
            let target = if src.join(format!("{name}.rs")).exists() || src.join(&name).is_dir() {
                name.as_str()
            } else {
                ROOT
            };
            if target == top {
                continue;
            }
            match layer_of(CRATE_LAYERS, target) {
                Some(l) if l < my_layer => {}
                Some(_) => problems.push(format!(
                    "{}: `{top}` uses `crate::{name}`, which is not below it",
                    rel.display()
                )),
                None => problems.push(format!(
                    "{}: `crate::{name}`: module not in CRATE_LAYERS",
                    rel.display()
                )),
            }
        }
        // Inside a layered module: its files against each other.
        let Some((_, inner)) = INNER_LAYERS.iter().find(|(m, _)| *m == top) else {
            continue;
        };
        if parts.len() != 2 {
            continue;
        }
        let me = parts[1].trim_end_matches(".rs");
        let Some(my_inner) = layer_of(inner, me) else {
            problems.push(format!(
                "{}: file `{me}` is not in {top}'s layers",
                rel.display()
            ));
            continue;
        };
        let mod_rs = std::fs::read_to_string(src.join(top).join("mod.rs")).unwrap();
        let exported = reexports(&mod_rs);
        let prefix_inner = format!("crate::{top}::");
        let mut names = referenced(&code, &prefix_inner);
        if me != "mod" {
            names.extend(referenced(&code, "super::"));
        }
        for name in names {
            let sibling = if src.join(top).join(format!("{name}.rs")).exists() {
                name.clone()
            } else if let Some(s) = exported.get(&name) {
                s.clone()
            } else {
                "mod".to_string() // an item of mod.rs itself
            };
            if sibling == me || (me == "mod" && sibling == "mod") {
                continue;
            }
            if me == "mod" {
                continue; // mod.rs declares and re-exports its files
            }
            match layer_of(inner, &sibling) {
                Some(l) if l < my_inner => {}
                Some(_) => problems.push(format!(
                    "{}: `{top}::{me}` uses `{name}` of `{top}::{sibling}`, which is not below it",
                    rel.display()
                )),
                None => problems.push(format!(
                    "{}: `{sibling}` is not in {top}'s layers",
                    rel.display()
                )),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering violations (see CRATE_LAYERS in host/tests/layers.rs and ARCHITECTURE.md):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scanner_sees_groups_and_inline_paths() {
    let c = code("use crate::{a::B, c, d::{e, f}};\nlet x = crate::g::h(); // crate::comment\n");
    assert_eq!(referenced(&c, "crate::"), ["a", "c", "d", "g"]);
    assert_eq!(
        reexports("pub use x::{A, B as C};\npub use y::D;\npub use crate::z::E;"),
        BTreeMap::from([
            ("A".into(), "x".into()),
            ("C".into(), "x".into()),
            ("D".into(), "y".into())
        ])
    );
}
