//! The access log written to a file as JSON lines over real traffic: every documented field
//! on every line, the request id and trace id the upstream saw, the pool, the deciding
//! policy revision and its decision, the cache status; the text format; and a path that
//! cannot be opened refused at start with the reason.

use sluice_tests::*;
use std::time::Duration;

/// The fields of a JSON line, in order (README "Access log").
const FIELDS: [&str; 23] = [
    "time",
    "request_id",
    "trace_id",
    "client",
    "client_from",
    "peer",
    "listener",
    "sni",
    "method",
    "authority",
    "path",
    "protocol",
    "user_agent",
    "status",
    "bytes_sent",
    "complete",
    "duration_ms",
    "response_headers_ms",
    "pool",
    "upstream",
    "policy_revision",
    "decision",
    "cache_status",
];

/// The file's lines once it has `n` (lines are written by a thread of their own, shortly
/// after each response ends).
async fn lines(path: &std::path::Path, n: usize) -> Vec<String> {
    for _ in 0..1000 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "the access log did not reach {n} lines: {:?}",
        std::fs::read_to_string(path)
    );
}

#[tokio::test]
async fn json_lines_carry_the_documented_fields_and_the_ids_the_upstream_saw() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .toml(&format!(
            "[log]\naccess_log = true\nformat = \"json\"\naccess_log_path = \"{}\"\n[cache]\ncapacity = \"1MiB\"\n",
            path.display()
        ))
        .start()
        .await;
    let mut c = h1(proxy.http).await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut req = get("/one?x=1", "example.test");
    req.headers_mut()
        .insert("traceparent", trace.parse().unwrap());
    req.headers_mut()
        .insert("user-agent", "log-test/1".parse().unwrap());
    let r = send(&mut c, req).await;
    assert_eq!(echoed(&r, "traceparent"), Some(trace), "passed on as it is");
    let request_id = echoed(&r, "x-request-id").unwrap().to_owned();
    body_bytes(r).await;
    // Without a traceparent the proxy starts a trace, and the upstream sees it.
    let r = send(&mut c, get("/two", "example.test")).await;
    let started = echoed(&r, "traceparent").unwrap().to_owned();
    body_bytes(r).await;
    let mut bad = get("/three", "example.test");
    bad.headers_mut().remove("host");
    let r = send(&mut c, bad).await;
    assert_eq!(r.status(), 400);
    body_bytes(r).await;

    let got = lines(&path, 3).await;
    let json: Vec<serde_json::Value> = got
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for (line, j) in got.iter().zip(&json) {
        let mut want = FIELDS.to_vec();
        want.sort_unstable();
        let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, want, "every field: {line}");
        let at: Vec<usize> = FIELDS
            .iter()
            .map(|f| line.find(&format!("\"{f}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "in order: {line}");
    }
    let first = &json[0];
    assert_eq!(first["request_id"], request_id.as_str());
    assert_eq!(first["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["authority"], "example.test");
    assert_eq!(first["path"], "/one?x=1");
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["user_agent"], "log-test/1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["complete"], true);
    assert_eq!(first["listener"], "http");
    assert_eq!(first["client_from"], "peer");
    assert_eq!(first["pool"], "web");
    assert_eq!(first["upstream"], origin.addr.to_string());
    assert_eq!(first["policy_revision"], 1);
    assert_eq!(first["decision"], "forward");
    assert!(
        first["cache_status"]
            .as_str()
            .unwrap()
            .contains("fwd=uri-miss"),
        "{first}"
    );
    assert!(first["bytes_sent"].as_u64().unwrap() > 0);
    assert!(
        first["duration_ms"].as_f64().unwrap() >= first["response_headers_ms"].as_f64().unwrap()
    );
    assert_eq!(json[1]["trace_id"].as_str(), started.get(3..35));

    let third = &json[2];
    assert_eq!(third["status"], 400);
    assert!(
        third["pool"].is_null() && third["upstream"].is_null(),
        "{third}"
    );
    assert!(
        third["policy_revision"].is_null(),
        "rejected before the policy: {third}"
    );
}

#[tokio::test]
async fn text_lines_and_an_unopenable_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.txt");
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .toml(&format!(
            "[log]\naccess_log = true\naccess_log_path = \"{}\"\n",
            path.display()
        ))
        .start()
        .await;
    let r = send(&mut h1(proxy.http).await, get("/t", "example.test")).await;
    body_bytes(r).await;
    let got = lines(&path, 1).await;
    let line = &got[0];
    assert!(
        line.contains(" \"GET example.test/t HTTP/1.1\" 200 "),
        "{line}"
    );
    assert!(
        line.contains(" pool=web ") && line.contains(" decision=forward "),
        "{line}"
    );

    let config = ProxyBuilder::for_origin(&origin)
        .toml("[log]\naccess_log = true\naccess_log_path = \"/nonexistent/dir/access.log\"\n")
        .config_text();
    let config = sluice::config::Config::parse(&config, "(test)", ".".as_ref()).unwrap();
    let err = match sluice::start(config).await {
        Ok(_) => panic!("started with an access log it cannot open"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("/nonexistent/dir/access.log"), "{err}");
    assert!(err.contains("No such file"), "{err}");
}
