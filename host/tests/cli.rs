//! The `sluice` binary end to end: `check` reports config and certificate problems by file,
//! key and problem (and exits non-zero), accepts a good config; `demo` binds the addresses it
//! is given, prints where it listens, serves HTTP, HTTPS (h2 by ALPN, trusting the printed
//! certificate) and the admin health check, and exits 0 after a graceful stop on SIGTERM.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sluice_tests::{client_config_trusting, get, h1, h2_over, send, send2, tls_connect};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn check(config: &Path) -> Output {
    Command::new(SLUICE)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const POOL: &str = "[[pool]]\nname = \"web\"\nendpoints = [\"127.0.0.1:9001\"]\n";

#[test]
fn check_reports_file_key_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.toml",
        "[[listener]]\naddress = \"127.0.0.1:8080\"\n\
         [[pool]]\nname = \"web\"\nendpoints = [{ address = \"127.0.0.1:9001\", weight = 0 }]\n",
    );
    let out = check(&bad);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&bad.display().to_string()), "{stderr}");
    assert!(stderr.contains("pool[0].endpoints[0].weight"), "{stderr}");
    assert!(stderr.contains("0 is out of range 1..=10000"), "{stderr}");
    assert!(out.stdout.is_empty());

    let typo = write(
        dir.path(),
        "typo.toml",
        &format!(
            "[[listener]]\naddress = \"127.0.0.1:8080\"\n{POOL}[timeouts]\nclient_idel = \"5s\"\n"
        ),
    );
    let out = check(&typo);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("typo.toml"), "{stderr}");
    assert!(stderr.contains("client_idel"), "{stderr}");
    assert!(stderr.contains("unknown field"), "{stderr}");
}

#[test]
fn check_reports_an_unreadable_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = check(&missing);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn check_accepts_a_good_config_and_reads_its_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    write(dir.path(), "cert.pem", &ck.cert.pem());
    write(dir.path(), "key.pem", &ck.signing_key.serialize_pem());
    // Relative certificate paths resolve against the config file's directory.
    let good = write(
        dir.path(),
        "good.toml",
        &format!(
            "[[listener]]\naddress = \"127.0.0.1:8080\"\n\
             [[listener]]\naddress = \"127.0.0.1:8443\"\n\
             tls = {{ certificates = [{{ cert = \"cert.pem\", key = \"key.pem\" }}] }}\n{POOL}"
        ),
    );
    let out = check(&good);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok"), "{stdout}");
    assert!(stdout.contains("2 listeners"), "{stdout}");
}

#[test]
fn check_names_a_missing_certificate_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "tls.toml",
        &format!(
            "[[listener]]\naddress = \"127.0.0.1:8443\"\n\
             tls = {{ certificates = [{{ cert = \"missing-cert.pem\", key = \"missing-key.pem\" }}] }}\n{POOL}"
        ),
    );
    let out = check(&cfg);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let cert = dir.path().join("missing-cert.pem");
    assert!(stderr.contains(&cert.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("listener[0].tls.certificates[0].cert"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot read"), "{stderr}");
}

/// What the demo printed about itself.
#[derive(Debug)]
struct Banner {
    http: SocketAddr,
    https: SocketAddr,
    admin: SocketAddr,
    certificate: PathBuf,
}

fn parse_banner(lines: &[String]) -> Banner {
    let word_after = |label: &str, scheme: &str| -> Option<String> {
        lines.iter().find_map(|l| {
            let rest = l.trim_start().strip_prefix(label)?;
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(scheme))
                .map(str::to_owned)
        })
    };
    let addr = |label: &str, scheme: &str| -> SocketAddr {
        word_after(label, scheme)
            .unwrap_or_else(|| panic!("no {label} {scheme} address in {lines:#?}"))
            .parse()
            .unwrap()
    };
    let certificate = lines
        .iter()
        .find_map(|l| l.trim_start().strip_prefix("certificate "))
        .unwrap_or_else(|| panic!("no certificate line in {lines:#?}"))
        .trim()
        .into();
    Banner {
        http: addr("proxy ", "http://"),
        https: addr("proxy ", "https://"),
        admin: addr("admin ", "http://"),
        certificate,
    }
}

/// GET `path` from the HTTP/1.1 listener at `addr`, with the body read in full.
async fn h1_get(addr: SocketAddr, path: &str) -> http::Response<Bytes> {
    read_in_full(send(&mut h1(addr).await, get(path, "localhost")).await).await
}

/// An HTTPS GET over h2 (ALPN), trusting only the certificate in `ca`, with the body read in
/// full.
async fn h2_tls_get(addr: SocketAddr, ca: &Path, path: &str) -> http::Response<Bytes> {
    let ca_pem = std::fs::read_to_string(ca).unwrap();
    let tls = tls_connect(addr, "localhost", client_config_trusting(&ca_pem, &[b"h2"]))
        .await
        .expect("TLS handshake trusting the printed certificate");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let req = get(&format!("https://localhost{path}"), "localhost");
    read_in_full(send2(&mut h2_over(tls).await, req).await).await
}

/// `resp` with its body read in full.
async fn read_in_full(resp: http::Response<Incoming>) -> http::Response<Bytes> {
    let (parts, body) = resp.into_parts();
    http::Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn demo_serves_and_stops_gracefully_on_sigterm() {
    let mut child = tokio::process::Command::new(SLUICE)
        .args([
            "demo",
            "--http",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();

    let mut lines = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            let done = line.contains("press Ctrl-C");
            lines.push(line);
            if done {
                return;
            }
        }
        panic!("demo exited before it was ready: {lines:#?}");
    })
    .await
    .unwrap_or_else(|_| panic!("demo not ready within 30s"));
    let banner = parse_banner(&lines);
    for a in [banner.http, banner.https, banner.admin] {
        assert!(a.ip().is_loopback() && a.port() != 0, "{banner:?}");
    }

    let exchange = async {
        let resp = h1_get(banner.http, "/").await;
        assert_eq!(resp.status(), 200);
        let origin = resp.headers()["x-origin"].to_str().unwrap().to_owned();
        assert!(origin.starts_with("origin-"), "{origin}");

        let resp = h2_tls_get(banner.https, &banner.certificate, "/").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert!(resp.headers().contains_key("x-origin"));

        let resp = h1_get(banner.admin, "/health").await;
        assert_eq!(resp.status(), 200);
        let json: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(json["status"], "ok");

        // The demo routes with the Wasm default policy built into the binary.
        let resp = h1_get(banner.admin, "/policy").await;
        let json: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(json["active"]["source"], "builtin:default", "{json}");
        assert!(json["active"]["calls"].as_u64().unwrap() >= 2, "{json}");
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("demo answers");

    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let (rest, status) = tokio::time::timeout(Duration::from_secs(30), async {
        let mut rest = Vec::new();
        while let Some(line) = stdout.next_line().await.unwrap() {
            rest.push(line);
        }
        (rest, child.wait().await.unwrap())
    })
    .await
    .expect("demo stops within 30s of SIGTERM");
    assert!(status.success(), "exit status {status:?}; output {rest:#?}");
    assert!(
        rest.iter().any(|l| l.contains("stopping: Drained")),
        "{rest:#?}"
    );
    assert!(
        !banner.certificate.exists(),
        "the demo removes its temporary certificate"
    );
}

/// `sluice run`: SIGHUP re-reads the policy module, the `[policy]` table and the pools of the
/// config (with `watch = false`, so only the signal can have caused the reload); a config made
/// invalid in the meantime is refused and the running policy and pools kept.
#[tokio::test]
async fn run_reloads_the_policy_and_its_settings_on_sighup() {
    let origin = sluice_tests::Origin::echo("a").await;
    let second = sluice_tests::Origin::echo("b").await;
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("policy.wasm");
    std::fs::copy(sluice_tests::guests::PROBE, &module).unwrap();
    let config_text = |color: &str, endpoints: &str| {
        format!(
            "[[listener]]\nname = \"http\"\naddress = \"127.0.0.1:0\"\n\
             [[pool]]\nname = \"web\"\nendpoints = [{endpoints}]\n\
             [log]\naccess_log = false\n\
             [policy]\nmodule = \"policy.wasm\"\nwatch = false\n\
             [policy.settings]\ncolor = \"{color}\"\n"
        )
    };
    let one = format!("\"{}\"", origin.addr);
    let two = format!("\"{}\", \"{}\"", origin.addr, second.addr);
    let config = write(dir.path(), "sluice.toml", &config_text("red", &one));
    let mut child = tokio::process::Command::new(SLUICE)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env(
            "SLUICE_CACHE_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/policy-cache"),
        )
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    // Reads log lines until one contains `needle`; returns that line.
    let mut wait_for = async |needle: &str| {
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = log.next_line().await.unwrap() {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("sluice exited before logging {needle:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no log line with {needle:?} within 30s"))
    };
    let listening = wait_for("listening").await;
    let addr: SocketAddr = listening
        .split("address=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {listening:?}"));
    let color = async || {
        let resp = h1_get(addr, "/config/color").await;
        assert_eq!(resp.status(), 200);
        String::from_utf8(resp.body().to_vec()).unwrap()
    };
    let endpoints = async || {
        let resp = h1_get(addr, "/endpoints/web").await;
        String::from_utf8(resp.body().to_vec())
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(color().await, "red");
    assert_eq!(endpoints().await, 1);

    let hup = || Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    std::fs::write(&config, config_text("blue", &two)).unwrap();
    assert!(hup().success());
    wait_for("config reloaded").await;
    wait_for("revision=2").await;
    assert_eq!(color().await, "blue");
    assert_eq!(endpoints().await, 2);

    // A broken config: the reload is refused, the policy keeps serving.
    std::fs::write(&config, "[policy]\nfail = \"sometimes\"\n").unwrap();
    assert!(hup().success());
    wait_for("config not reloaded; the one in force keeps serving").await;
    assert_eq!(color().await, "blue");
    assert_eq!(endpoints().await, 2);

    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
