//! `sluice policy test` end to end: decisions printed as JSON and compared with golden files in
//! `host/tests/golden/` (rewrite them with `SLUICE_BLESS=1 cargo test -p sluice --test
//! policy_cli` after an intended change, and review the diff), corpus runs with mismatches and
//! exit codes, trap backtraces, and clear errors for bad input.

use sluice_tests::guests;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn policy_test(module: &str, args: &[&str]) -> Output {
    Command::new(SLUICE)
        .args(["policy", "test", module])
        .args(args)
        // Share compiled components with the other tests instead of ~/.cache.
        .env(
            "SLUICE_CACHE_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/policy-cache"),
        )
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Compares `actual` with `tests/golden/<name>`, or writes it when `SLUICE_BLESS` is set.
fn golden(name: &str, actual: &str) {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with SLUICE_BLESS=1 to create)",
            path.display()
        )
    });
    assert_eq!(actual, expected, "output differs from {}", path.display());
}

#[test]
fn default_policy_decision_matches_golden() {
    let out = policy_test(
        guests::DEFAULT_POLICY,
        &["--request", "GET https://Shop.Example.com/cart?z=1&a=2&m"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    golden("default-policy.json", &stdout(&out));
}

#[test]
fn auth_gate_decisions_match_golden() {
    let keys = "keys=mobile:k-1,partner:k-2";
    let ok = policy_test(
        guests::AUTH_GATE,
        &[
            "-r",
            "POST https://api.example/orders",
            "-H",
            "x-api-key: k-2",
            "--set",
            keys,
        ],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    golden("auth-gate-known-key.json", &stdout(&ok));

    let missing = policy_test(
        guests::AUTH_GATE,
        &["-r", "GET https://api.example/", "--set", keys],
    );
    assert!(missing.status.success(), "{}", stderr(&missing));
    golden("auth-gate-no-key.json", &stdout(&missing));
}

#[test]
fn path_routing_with_a_config_uses_its_pools() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\
         [[pool]]\nname = \"web\"\nendpoints = [\"127.0.0.1:9001\"]\n\
         [[pool]]\nname = \"api\"\nendpoints = [\"127.0.0.1:9002\"]\n\
         [[pool]]\nname = \"static\"\nendpoints = [\"127.0.0.1:9003\"]\n\
         [proxy]\ndefault_pool = \"web\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let out = policy_test(
        guests::PATH_ROUTING,
        &["-c", config, "-r", "GET http://e.test/static/app.js"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    golden("path-routing-static.json", &stdout(&out));

    // With the config, an unknown pool is an invalid decision, as in the proxy.
    let out = policy_test(
        guests::PATH_ROUTING,
        &[
            "-c",
            config,
            "--set",
            "api_pool=nope",
            "-r",
            "GET http://e.test/api/x",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("\"failure\": \"invalid_decision\""),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("no pool named \"nope\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_trap_prints_the_guest_backtrace_with_symbol_names() {
    let out = policy_test(guests::PROBE, &["-r", "GET http://e.test/panic/here"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("\"failure\": \"trap\""),
        "{}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("policy failed in decide: Trap"), "{err}");
    assert!(err.contains("guest backtrace"), "{err}");
    // Frames are named (and demangled) from the component's name section.
    assert!(err.contains("core::panicking::panic_fmt"), "{err}");
    assert!(
        err.contains("Trap: wasm trap: wasm `unreachable` instruction executed in decide"),
        "the log line names the policy's own frame: {err}"
    );
    // The SDK's panic hook sends the message through the log import first.
    assert!(err.contains("probe panic at /panic/here"), "{err}");
}

#[test]
fn a_corpus_reports_each_mismatch_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("cases.jsonl");
    std::fs::write(
        &corpus,
        concat!(
            "# auth gate expectations\n",
            r#"{"request": "GET https://api.example/", "expect": {"respond": {"status": 401}}}"#, "\n",
            r#"{"request": "GET https://api.example/", "headers": {"x-api-key": "k-1"}, "expect": {"forward": {"pool": null, "request_edits": [{"op": "set", "name": "x-api-client", "value": "mobile"}, {"op": "remove", "name": "x-api-key"}]}}}"#, "\n",
            "\n",
            r#"{"request": "GET https://api.example/", "headers": {"x-api-key": "wrong"}, "expect": {"respond": {"status": 200}}}"#, "\n",
        ),
    )
    .unwrap();
    let out = policy_test(
        guests::AUTH_GATE,
        &[
            "--corpus",
            corpus.to_str().unwrap(),
            "--set",
            "keys=mobile:k-1",
        ],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("cases.jsonl:5: MISMATCH"), "{text}");
    assert!(
        text.contains("\"status\":403"),
        "shows the actual decision: {text}"
    );
    assert!(text.contains("2 passed, 1 failed"), "{text}");

    // The same corpus without the wrong line passes.
    let passing: String = std::fs::read_to_string(&corpus)
        .unwrap()
        .lines()
        .take(3)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&corpus, passing).unwrap();
    let out = policy_test(
        guests::AUTH_GATE,
        &[
            "--corpus",
            corpus.to_str().unwrap(),
            "--set",
            "keys=mobile:k-1",
        ],
    );
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("2 passed, 0 failed"));
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("policy.wasm");
    std::fs::write(&not_wasm, "hello").unwrap();
    let out = policy_test(not_wasm.to_str().unwrap(), &["-r", "GET http://e.test/"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("policy.wasm: not a Wasm component"),
        "{}",
        stderr(&out)
    );

    let out = policy_test(guests::DEFAULT_POLICY, &["-r", "/just-a-path"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("expected `METHOD URL`"),
        "{}",
        stderr(&out)
    );

    let out = policy_test(guests::DEFAULT_POLICY, &["-r", "GET /relative"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("absolute http:// or https:// URL"),
        "{}",
        stderr(&out)
    );

    let out = policy_test(guests::WRONG_WORLD, &["-r", "GET http://e.test/"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("exports do not match"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn per_path_algorithm_decisions_name_the_algorithm() {
    let out = policy_test(
        guests::PER_PATH_ALGORITHM,
        &[
            "-r",
            "GET https://shop.example/session/cart",
            "-H",
            "cookie: uid=u-7",
            "-H",
            "x-user-id: u-42",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    golden("per-path-algorithm-session.json", &stdout(&out));

    // Without a user id, and outside /session/: round robin, no key.
    for (request, headers) in [
        ("GET https://shop.example/session/cart", ""),
        ("GET https://shop.example/", "x-user-id: u-42"),
    ] {
        let mut args = vec!["-r", request];
        if !headers.is_empty() {
            args.extend(["-H", headers]);
        }
        let out = policy_test(guests::PER_PATH_ALGORITHM, &args);
        assert!(out.status.success(), "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            json["forward"]["algorithm"], "round_robin",
            "{request}: {json}"
        );
        assert_eq!(
            json["forward"]["hash_key"],
            serde_json::Value::Null,
            "{request}"
        );
    }
}

#[test]
fn a_component_built_for_an_older_wit_is_refused_naming_both_versions() {
    let out = policy_test(guests::OLD_WORLD, &["-r", "GET http://e.test/"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("built for sluice:policy@0.1.0 (it imports `sluice:policy/"),
        "{err}"
    );
    assert!(
        err.contains(
            "this host implements sluice:policy@0.3.0 (and 0.2.1): rebuild it with sluice-sdk 0.3"
        ),
        "{err}"
    );
}

#[test]
fn the_response_phase_is_shown_for_a_response_head() {
    let out = policy_test(
        guests::RESPONDER,
        &[
            "-r",
            "GET http://e.test/page",
            "--response",
            "200",
            "-R",
            "x-ttl: 60",
            "-R",
            "x-private: 1",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let serve = &json["response"]["serve"];
    assert_eq!(serve["ttl_secs"], 60, "{json}");
    assert_eq!(serve["no_store"], true, "{json}");
    assert_eq!(serve["edits"][0]["name"], "x-phase", "{json}");
    assert_eq!(serve["edits"][0]["value"], "upstream", "{json}");
    assert!(json["decision"]["forward"].is_object(), "{json}");

    let out = policy_test(
        guests::RESPONDER,
        &[
            "-r",
            "GET http://e.test/",
            "--response",
            "503",
            "--source",
            "cache",
        ],
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        json["response"]["serve"]["edits"][0]["value"], "cache",
        "{json}"
    );

    let out = policy_test(
        guests::RESPONDER,
        &["-r", "GET http://e.test/", "--response", "99x"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("expected a status code"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn policy_build_names_the_missing_toolchain_and_refuses_a_non_policy_directory() {
    // A PATH with bash and nothing else: no node, no componentize-py, no clang.
    let bin = tempfile::tempdir().unwrap();
    let bash = ["/bin/bash", "/usr/bin/bash"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("bash");
    std::os::unix::fs::symlink(bash, bin.path().join("bash")).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (example, names) in [
        ("path-routing-js", "npm install -g"),
        ("path-routing-py", "componentize-py"),
        ("path-routing-c", "clang"),
    ] {
        let out = Command::new(SLUICE)
            .args(["policy", "build"])
            .arg(repo.join("examples").join(example))
            .env("PATH", bin.path())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{example}: {err}");
        assert!(err.contains(names), "{example} names {names:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(SLUICE)
        .args(["policy", "build"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a policy directory"),
        "{}",
        stderr(&out)
    );
}
