//! Policies in JavaScript, Python and C, built with `sluice policy build` (the library's
//! [`sluice::build::build`], which runs the real toolchains) and run by the real host:
//! `examples/path-routing-{js,py,c}` and `examples/sticky-ab-{js,py,c}` decide exactly like the
//! Rust examples on the shared corpora (`examples/corpus/*.jsonl`, generated from the Rust
//! examples), each language's response-phase example edits a response through the proxy, and
//! `sluice policy new --lang X` writes a policy that builds and forwards.
//!
//! The toolchains come from `.ci/toolchains.sh`; without them these tests fail with the
//! build's message naming the package to install.

use sluice_tests::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Builds `examples/NAME` once per test process and returns the component's path.
fn built(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let map = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    // One build at a time: toolchains write into the example's own build/ directory.
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = map.get(name) {
        return p.clone();
    }
    let dir = repo().join("examples").join(name);
    let b = sluice::build::build(&dir).unwrap_or_else(|e| panic!("building {name}: {e}"));
    map.insert(name.to_owned(), b.path.clone());
    b.path
}

fn load(path: &Path) -> sluice::policy::local::LocalPolicy {
    use_test_engine_cache();
    let bytes = std::fs::read(path).unwrap();
    let config = sluice::config::PolicyConfig {
        // What the interpreters need (see guest-sdk/*/README.md and bench/RESULTS.md).
        memory: 256 << 20,
        // The corpus checks decisions, not speed: a first call into an interpreter on a
        // machine busy with the rest of the suite can take longer than the 5 ms default.
        deadline: std::time::Duration::from_secs(2),
        ..Default::default()
    };
    sluice::policy::local::LocalPolicy::load(&bytes, &config, None)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn corpus(example: &str, corpus: &str) {
    let policy = load(&built(example));
    let file = repo()
        .join("examples/corpus")
        .join(format!("{corpus}.jsonl"));
    let report = sluice::policy::local::run_corpus(&policy, &file, "127.0.0.1".parse().unwrap())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.mismatches.is_empty(),
        "{example} differs from the Rust example:\n{}",
        report.mismatches.join("\n")
    );
    assert!(report.passed >= 10, "{example}: {} cases", report.passed);
    // An example's own extra cases (edge cases of its language), when it has them.
    let own = repo().join("examples").join(example).join("corpus.jsonl");
    if own.is_file() {
        let report = sluice::policy::local::run_corpus(&policy, &own, "127.0.0.1".parse().unwrap())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            report.mismatches.is_empty(),
            "{}",
            report.mismatches.join("\n")
        );
    }
}

#[test]
fn the_rust_examples_match_their_own_corpora() {
    // The corpora are generated from these; this keeps them in step with the Rust examples.
    for (guest, name) in [
        (guests::PATH_ROUTING, "path-routing"),
        (guests::STICKY_AB, "sticky-ab"),
    ] {
        let policy = load(Path::new(guest));
        let file = repo().join("examples/corpus").join(format!("{name}.jsonl"));
        let report =
            sluice::policy::local::run_corpus(&policy, &file, "127.0.0.1".parse().unwrap())
                .unwrap();
        assert!(
            report.mismatches.is_empty(),
            "{}",
            report.mismatches.join("\n")
        );
    }
}

#[test]
fn path_routing_js_decides_like_rust() {
    corpus("path-routing-js", "path-routing");
}

#[test]
fn sticky_ab_js_decides_like_rust() {
    corpus("sticky-ab-js", "sticky-ab");
}

#[test]
fn path_routing_py_decides_like_rust() {
    corpus("path-routing-py", "path-routing");
}

#[test]
fn sticky_ab_py_decides_like_rust() {
    corpus("sticky-ab-py", "sticky-ab");
}

#[test]
fn path_routing_c_decides_like_rust() {
    corpus("path-routing-c", "path-routing");
}

#[test]
fn sticky_ab_c_decides_like_rust() {
    corpus("sticky-ab-c", "sticky-ab");
}

/// Each language's response-phase example in front of an origin: the response header it sets
/// reaches the client, and an upstream 5xx becomes its local page.
async fn response_phase_through_the_proxy(example: &str, header_name: &str, header_value: &str) {
    let module = built(example);
    let origin = Origin::start(|req| async move {
        let status = if req.uri().path().starts_with("/fail") {
            502
        } else {
            200
        };
        text(status, "from origin")
    })
    .await;
    let p = ProxyBuilder::for_origin(&origin)
        .policy(module.to_str().unwrap(), "memory = \"256MiB\"", "")
        .start()
        .await;
    let mut c = h1(p.http).await;
    let resp = send(&mut c, get("/page", "example.test")).await;
    assert_eq!(resp.status(), 200, "{example}");
    assert_eq!(header(&resp, header_name), Some(header_value), "{example}");
    assert_eq!(body_bytes(resp).await, "from origin");
    // The examples answer with their own page (keeping the status, or 503).
    let resp = send(&mut c, get("/fail", "example.test")).await;
    assert!(
        resp.status().is_server_error(),
        "{example}: {}",
        resp.status()
    );
    let body = body_bytes(resp).await;
    assert_ne!(
        body, "from origin",
        "{example} replaces the upstream's 5xx page"
    );
    assert!(!body.is_empty(), "{example}");
}

#[tokio::test]
async fn the_js_response_example_edits_responses_through_the_proxy() {
    response_phase_through_the_proxy(JS_RESPONSE.0, JS_RESPONSE.1, JS_RESPONSE.2).await;
}

#[tokio::test]
async fn the_python_response_example_edits_responses_through_the_proxy() {
    response_phase_through_the_proxy(PY_RESPONSE.0, PY_RESPONSE.1, PY_RESPONSE.2).await;
}

#[tokio::test]
async fn the_c_response_example_edits_responses_through_the_proxy() {
    response_phase_through_the_proxy(C_RESPONSE.0, C_RESPONSE.1, C_RESPONSE.2).await;
}

/// `sluice policy new --lang LANG` then build then decide `GET https://example.com/`.
fn new_policy_builds_and_forwards(lang: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(format!("my-{lang}-policy"));
    sluice::build::new_command(lang, &dir).unwrap();
    let b = sluice::build::build(&dir).unwrap_or_else(|e| panic!("{lang}: {e}"));
    let policy = load(&b.path);
    let req = sluice::policy::local::TestRequest::parse(
        "GET https://example.com/",
        &[],
        "127.0.0.1".parse().unwrap(),
    )
    .unwrap();
    let decision = policy
        .decide(&req)
        .unwrap_or_else(|f| panic!("{lang}: {f}"));
    assert!(
        matches!(decision, sluice::policy::Decision::Forward(_)),
        "{lang}: {decision:?}"
    );
}

#[test]
fn policy_new_rust_builds_and_forwards() {
    new_policy_builds_and_forwards("rust");
}

#[test]
fn policy_new_js_builds_and_forwards() {
    new_policy_builds_and_forwards("js");
}

#[test]
fn policy_new_python_builds_and_forwards() {
    new_policy_builds_and_forwards("python");
}

#[test]
fn policy_new_c_builds_and_forwards() {
    new_policy_builds_and_forwards("c");
}

/// (example, response header it sets on every response, value).
const JS_RESPONSE: (&str, &str, &str) = ("error-pages-js", "x-served-by", "sluice");
const PY_RESPONSE: (&str, &str, &str) = ("error-pages-py", "x-frame-options", "DENY");
const C_RESPONSE: (&str, &str, &str) = ("error-pages-c", "x-frame-options", "DENY");

#[test]
fn a_component_that_needs_more_memory_than_its_cap_is_refused_at_load_saying_so() {
    use_test_engine_cache();
    let bytes = std::fs::read(built("path-routing-py")).unwrap();
    let config = sluice::config::PolicyConfig {
        memory: 1 << 20,
        ..Default::default()
    };
    let err = sluice::policy::local::LocalPolicy::load(&bytes, &config, None)
        .err()
        .expect("CPython does not start in 1 MiB");
    let msg = err.to_string();
    assert!(
        msg.contains("needs more memory than its cap") && msg.contains("raise policy.memory"),
        "{msg}"
    );
}
