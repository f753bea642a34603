//! Config validation: every file in `tests/config/invalid/` must be rejected by
//! `Config::parse` with an error naming the file, the offending key and the problem, and every
//! `examples/*.toml` must parse.
//!
//! Each invalid file starts with two comment lines:
//!
//! ```toml
//! # expect: <text the error's Display must contain>
//! # key: <the exact dotted key the error must name>
//! ```

use sluice_tests::sluice::config::Config;
use std::path::{Path, PathBuf};

fn workspace_dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// The value of the `# <name>: ` comment line in `text`.
fn directive<'a>(text: &'a str, name: &str, file: &Path) -> &'a str {
    let prefix = format!("# {name}: ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{}: no `{prefix}` line", file.display()))
        .trim()
}

#[test]
fn invalid_configs_are_rejected_with_file_key_and_problem() {
    let dir = workspace_dir("config/invalid");
    let files = toml_files(&dir);
    assert!(
        files.len() >= 20,
        "expected the invalid config corpus in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.starts_with("# expect: "),
            "{}: must start with `# expect: <text>`",
            path.display()
        );
        let expect = directive(&text, "expect", path);
        let key = directive(&text, "key", path);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match Config::parse(&text, &name, &dir) {
            Ok(_) => failures.push(format!("{name}: parsed OK, expected an error")),
            Err(e) => {
                let shown = e.to_string();
                if !shown.contains(expect) {
                    failures.push(format!("{name}: {shown:?} does not contain {expect:?}"));
                }
                if e.key != key {
                    failures.push(format!("{name}: key is {:?}, expected {key:?}", e.key));
                }
                if !shown.starts_with(&format!("{name}: {key}: ")) {
                    failures.push(format!("{name}: {shown:?} does not name file and key"));
                }
                if e.problem.trim().is_empty() {
                    failures.push(format!("{name}: empty problem"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Every example shipped in `examples/` is valid. Globbed, so new examples are covered as they
/// are added.
#[test]
fn example_configs_parse() {
    let dir = workspace_dir("../examples");
    if !dir.is_dir() {
        return;
    }
    // The reference config at the top, and each example policy's sample config.
    let mut files = toml_files(&dir);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let sample = entry.unwrap().path().join("sluice.toml");
        if sample.is_file() {
            files.push(sample);
        }
    }
    assert!(
        files.len() > 1,
        "no example configs found in {}",
        dir.display()
    );
    for path in files {
        if let Err(e) = Config::load(&path) {
            panic!("{e}");
        }
    }
}

/// The smallest config that works, and the defaults it gets.
#[test]
fn minimal_config_gets_defaults() {
    let text = "[[listener]]\naddress = \"127.0.0.1:8080\"\n\
                [[pool]]\nname = \"web\"\nendpoints = [\"127.0.0.1:9001\"]\n";
    let c = Config::parse(text, "min.toml", Path::new("/etc/sluice")).unwrap();
    assert_eq!(c.listeners[0].name, "listener0");
    assert_eq!(c.proxy.default_pool, "web");
    assert!(c.admin.is_none());
    assert_eq!(c.limits.max_request_header_size, 64 * 1024);
    assert_eq!(c.timeouts.client_idle, std::time::Duration::from_secs(60));
    // Balancing and health defaults (percentages are stored as fractions).
    let pool = &c.pools[0];
    assert_eq!(
        pool.balance.algorithm,
        sluice_tests::sluice::balance::Algorithm::WeightedRoundRobin
    );
    assert_eq!(pool.balance.panic_threshold, 0.5);
    assert_eq!((pool.retry.retries, pool.retry.budget_min), (2, 3));
    assert_eq!(pool.retry.budget_ratio, 0.2);
    assert!(pool.health_check.is_none());
    let outlier = pool.outlier.expect("outlier detection is on by default");
    assert_eq!(outlier.max_ejection_ratio, 0.5);
    assert_eq!(
        (
            outlier.consecutive_gateway_errors,
            outlier.consecutive_connect_failures
        ),
        (5, 3)
    );
    assert!(c.cache.is_none(), "no [cache] table, no cache");
}

/// `[cache]` alone turns the cache on with its defaults; a small capacity lowers the default
/// object limit to an eighth of it.
#[test]
fn cache_table_gets_defaults() {
    let base = "[[listener]]\naddress = \"127.0.0.1:8080\"\n\
                [[pool]]\nname = \"web\"\nendpoints = [\"127.0.0.1:9001\"]\n";
    let c = Config::parse(&format!("{base}[cache]\n"), "c.toml", Path::new(".")).unwrap();
    let cache = c.cache.expect("cache on");
    assert_eq!(cache.capacity, 256 << 20);
    assert_eq!(cache.max_object_size, 8 << 20);
    assert_eq!(cache.coalesce_timeout, std::time::Duration::from_secs(5));
    assert_eq!(cache.hit_for_miss, std::time::Duration::from_secs(30));
    assert_eq!((cache.x_cache, cache.name.as_str()), (false, "sluice"));
    let c = Config::parse(
        &format!("{base}[cache]\ncapacity = \"1MiB\"\n"),
        "c.toml",
        Path::new("."),
    )
    .unwrap();
    assert_eq!(c.cache.unwrap().max_object_size, 128 << 10);
}

/// Port 0 means "any free port": two listeners (and the admin socket) on `127.0.0.1:0` do not
/// collide, which is what `sluice demo --http 127.0.0.1:0 --https 127.0.0.1:0` relies on.
#[test]
fn several_listeners_on_port_zero_are_allowed() {
    let text = "[[listener]]\nname = \"a\"\naddress = \"127.0.0.1:0\"\n\
                [[listener]]\nname = \"b\"\naddress = \"127.0.0.1:0\"\n\
                [[pool]]\nname = \"web\"\nendpoints = [\"127.0.0.1:9001\"]\n\
                [admin]\naddress = \"127.0.0.1:0\"\n";
    let c = Config::parse(text, "zero.toml", Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listeners.len(), 2);
}

/// Relative certificate paths resolve against the config file's directory.
#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let text = "[[listener]]\naddress = \"127.0.0.1:8443\"\n\
                tls = { certificates = [{ cert = \"certs/a.pem\", key = \"/abs/a.key\" }] }\n\
                [[pool]]\nname = \"web\"\nendpoints = [\"127.0.0.1:9001\"]\n";
    let c = Config::parse(text, "tls.toml", Path::new("/etc/sluice")).unwrap();
    let cert = &c.listeners[0].tls.as_ref().unwrap().certificates[0];
    assert_eq!(cert.cert, Path::new("/etc/sluice/certs/a.pem"));
    assert_eq!(cert.key, Path::new("/abs/a.key"));
}
