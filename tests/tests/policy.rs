//! The Wasm policy in the request path, through the `probe` test guest (see
//! `tests/guests/probe`): what the guest sees of a request over h1, h2 and TLS; forwarding with
//! header edits, rewrites and hash keys; local responses; settings and balancer imports; and
//! decisions the host must refuse.

use serde_json::Value;
use sluice_tests::*;

async fn probe_proxy(origin: &Origin, extra: &str, settings: &str) -> TestProxy {
    ProxyBuilder::for_origin(origin)
        .admin(None)
        .policy(guests::PROBE, extra, settings)
        .start()
        .await
}

async fn get_json(c: &mut H1, path: &str, host: &str) -> Value {
    let resp = send(c, get(path, host)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    serde_json::from_slice(&body_bytes(resp).await).unwrap()
}

#[tokio::test]
async fn without_a_module_the_builtin_default_policy_serves() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin).admin(None).start().await;
    let resp = send(&mut h1(proxy.http).await, get("/x?b=1", "example.test")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-echo-uri"], "/x?b=1");
    let status = policy_status(proxy.admin.unwrap()).await;
    assert_eq!(status["active"]["source"], "builtin:default", "{status}");
    assert_eq!(status["active"]["sha256"].as_str().unwrap().len(), 64);
    // Three rehearsal calls at load, then the request.
    assert_eq!(status["active"]["calls"], 4, "{status}");
}

#[tokio::test]
async fn the_guest_sees_the_request_as_the_client_sent_it() {
    let origin = Origin::echo("a").await;
    let proxy = probe_proxy(&origin, "", "").await;
    let mut c = h1(proxy.http).await;
    let mut req = get("/echo/p%20q?b=2&a=1", "Example.TEST:8080");
    req.headers_mut().append("x-multi", "one".parse().unwrap());
    req.headers_mut().append("x-multi", "two".parse().unwrap());
    let resp = send(&mut c, req).await;
    let json: Value = serde_json::from_slice(&body_bytes(resp).await).unwrap();
    assert_eq!(json["method"], "GET");
    assert_eq!(json["scheme"], "http");
    assert_eq!(
        json["authority"], "example.test:8080",
        "lower-cased: {json}"
    );
    assert_eq!(
        json["path"], "/echo/p%20q",
        "percent-encoding untouched: {json}"
    );
    assert_eq!(json["query"], "b=2&a=1");
    assert_eq!(json["client_ip"], "127.0.0.1");
    assert_eq!(json["tls_sni"], Value::Null);
    assert_eq!(json["http_version"], "HTTP/1.1");
    let headers = json["headers"].as_array().unwrap();
    let multi: Vec<&Value> = headers
        .iter()
        .filter(|h| h[0] == "x-multi")
        .map(|h| &h[1])
        .collect();
    assert_eq!(
        multi,
        ["one", "two"],
        "field lines kept apart, in order: {json}"
    );
    assert_eq!(
        origin.hits(),
        0,
        "a local response never reaches the origin"
    );

    // h2c: :authority is the authority, and the version says so.
    let mut c2 = h2c(proxy.http).await;
    let resp = send2(
        &mut c2,
        http::Request::builder()
            .uri("http://h2.example/echo")
            .body(full(""))
            .unwrap(),
    )
    .await;
    let json: Value = serde_json::from_slice(&body_bytes(resp).await).unwrap();
    assert_eq!(json["authority"], "h2.example");
    assert_eq!(json["http_version"], "HTTP/2");
    assert_eq!(json["query"], Value::Null);
}

#[tokio::test]
async fn over_tls_the_guest_sees_https_and_the_sni() {
    let certs = Certs::new();
    let leaf = certs.issue("site", &["shop.example"]);
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .tls(&[&leaf])
        .policy(guests::PROBE, "", "")
        .start()
        .await;
    let tls = tls_connect(
        proxy.https.unwrap(),
        "shop.example",
        certs.client_config(&[b"http/1.1"]),
    )
    .await
    .unwrap();
    let mut c = h1_over(tls).await;
    let json = get_json(&mut c, "/echo", "shop.example").await;
    assert_eq!(json["scheme"], "https");
    assert_eq!(json["tls_sni"], "shop.example");
}

#[tokio::test]
async fn forward_applies_request_and_response_edits() {
    let origin = Origin::echo("a").await;
    let proxy = probe_proxy(&origin, "", "").await;
    let mut c = h1(proxy.http).await;
    let resp = send(&mut c, get("/some/page", "example.test")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(echoed(&resp, "x-probe-request"), Some("1"));
    assert_eq!(header(&resp, "x-probe"), Some("forwarded"));
    assert_eq!(header(&resp, "x-probe-trace"), Some("/some/page"));
    // Host edits of the policy do not disturb what the proxy adds itself.
    assert_eq!(echoed(&resp, "x-forwarded-host"), Some("example.test"));
}

#[tokio::test]
async fn rewrite_replaces_path_and_query() {
    let origin = Origin::echo("a").await;
    let proxy = probe_proxy(&origin, "", "").await;
    let resp = send(
        &mut h1(proxy.http).await,
        get("/old?rewrite=/new/place", "example.test"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-echo-uri"], "/new/place");
}

#[tokio::test]
async fn hash_key_keeps_a_key_on_one_endpoint_and_spreads_keys() {
    let (a, b, c) = (
        Origin::echo("a").await,
        Origin::echo("b").await,
        Origin::echo("c").await,
    );
    let proxy = ProxyBuilder::new()
        .pool("web", &[a.addr, b.addr, c.addr])
        .policy(guests::PROBE, "", "")
        .start()
        .await;
    let mut conn = h1(proxy.http).await;
    let mut seen = std::collections::BTreeSet::new();
    for key in 0..30 {
        let mut first = None;
        for _ in 0..3 {
            let resp = send(&mut conn, get(&format!("/x?hash=user{key}"), "e.test")).await;
            let o = resp.headers()["x-origin"].to_str().unwrap().to_owned();
            body_bytes(resp).await;
            assert_eq!(*first.get_or_insert(o.clone()), o, "key user{key} moved");
        }
        seen.insert(first.unwrap());
    }
    assert_eq!(
        seen.len(),
        3,
        "30 keys should reach all 3 endpoints: {seen:?}"
    );
}

#[tokio::test]
async fn settings_and_balancer_imports() {
    let (a, b) = (Origin::echo("a").await, Origin::echo("b").await);
    let proxy = ProxyBuilder::new()
        .pool("web", &[a.addr])
        .pool_toml("api", &[a.addr, b.addr], "")
        .policy(
            guests::PROBE,
            "",
            "color = \"blue\"\nretries = 3\nbeta = true",
        )
        .start()
        .await;
    let mut c = h1(proxy.http).await;
    for (key, want) in [("color", "blue"), ("retries", "3"), ("beta", "true")] {
        let resp = send(&mut c, get(&format!("/config/{key}"), "e.test")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(body_bytes(resp).await, want);
    }
    let resp = send(&mut c, get("/config/missing", "e.test")).await;
    assert_eq!(resp.status(), 404);
    body_bytes(resp).await;

    let resp = send(&mut c, get("/endpoints/api", "e.test")).await;
    let text = String::from_utf8(body_bytes(resp).await.to_vec()).unwrap();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [format!("{} 1 true", a.addr), format!("{} 1 true", b.addr)]
    );
    let resp = send(&mut c, get("/pick/api?key=k1", "e.test")).await;
    let picked = String::from_utf8(body_bytes(resp).await.to_vec()).unwrap();
    assert!(picked == a.addr.to_string() || picked == b.addr.to_string());
    // The same key picks the same endpoint as `target.hash-key` would.
    for _ in 0..3 {
        let resp = send(&mut c, get("/pick/api?key=k1", "e.test")).await;
        assert_eq!(body_bytes(resp).await, picked);
    }
    let resp = send(&mut c, get("/pick/nope", "e.test")).await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn local_response_with_status_headers_and_length() {
    let origin = Origin::echo("a").await;
    let proxy = probe_proxy(&origin, "", "").await;
    let resp = raw(
        proxy.http,
        b"GET /respond/418 HTTP/1.1\r\nHost: e.test\r\nConnection: close\r\n\r\n",
        5,
    )
    .await;
    assert_eq!(raw_status(&resp), 418);
    let head = raw_head_lower(&resp);
    assert!(head.contains("x-probe: local\r\n"), "{head}");
    assert!(head.contains("content-length: 5\r\n"), "{head}");
    assert_eq!(raw_body(&resp), "probe");
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn invalid_decisions_are_policy_failures() {
    let origin = Origin::echo("a").await;
    let proxy = probe_proxy(&origin, "", "").await;
    let mut c = h1(proxy.http).await;
    for what in ["pool", "header", "framing", "rewrite", "status"] {
        let resp = send(&mut c, get(&format!("/bad/{what}"), "e.test")).await;
        assert_eq!(resp.status(), 503, "/bad/{what}");
        assert_eq!(header(&resp, "x-probe"), None);
        body_bytes(resp).await;
    }
    assert_eq!(origin.hits(), 0);
    let status = policy_status(proxy.admin.unwrap()).await;
    assert_eq!(status["active"]["invalid_decisions"], 5, "{status}");
    // The connection is still good for the next request.
    let resp = send(&mut c, get("/fine", "e.test")).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn fail_open_forwards_unchanged_to_the_default_pool() {
    let (web, other) = (Origin::echo("web").await, Origin::echo("other").await);
    let proxy = ProxyBuilder::new()
        .pool("web", &[web.addr])
        .pool("other", &[other.addr])
        .policy(guests::PROBE, "fail = \"open\"", "pool = \"other\"")
        .start()
        .await;
    let mut c = h1(proxy.http).await;
    // A working decision goes where the policy says...
    let resp = send(&mut c, get("/ok", "e.test")).await;
    assert_eq!(resp.headers()["x-origin"], "other");
    body_bytes(resp).await;
    // ...a failing one to the default pool, without the policy's edits.
    for path in ["/panic", "/trap", "/bad/header"] {
        let resp = send(&mut c, get(path, "e.test")).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["x-origin"], "web", "{path}");
        assert_eq!(header(&resp, "x-probe"), None, "{path}");
        assert_eq!(resp.headers()["x-echo-uri"], path);
        body_bytes(resp).await;
    }
}

/// `policy.native = true` (the benchmark's baseline) must decide exactly what the built-in
/// Wasm default policy decides, or the comparison in bench/RESULTS.md means nothing.
#[test]
fn the_native_default_policy_decides_like_the_wasm_one() {
    use sluice::policy::{PolicyRequest, PolicyRuntime, Verdict};
    use std::sync::Arc;
    use_test_engine_cache();
    let config = sluice::config::Config::parse(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[pool]]\nname = \"web\"\nendpoints = [\"127.0.0.1:9\"]\n",
        "t.toml",
        std::path::Path::new("."),
    )
    .unwrap();
    let pools = Arc::new(sluice::upstream::PoolTable::new(
        sluice::upstream::Pools::new(&config, None).unwrap(),
    ));
    let wasm = PolicyRuntime::new(&config.policy, pools.clone()).unwrap();
    let mut native_config = config.policy.clone();
    native_config.native = true;
    let native = PolicyRuntime::new(&native_config, pools).unwrap();
    let cases = [
        ("GET", "/", Some("Example.COM"), false),
        ("GET", "/a/b?z=1&a=2&a=1&m", Some("example.com:8443"), true),
        ("POST", "/x?", Some("e.test"), false),
        ("DELETE", "/p%20q?&&b=", Some("[::1]:80"), true),
        ("GET", "/http10", None, false),
    ];
    for (method, uri, host, tls) in cases {
        let make = || {
            let (parts, ()) = http::Request::builder()
                .method(method)
                .uri(uri)
                .body(())
                .unwrap()
                .into_parts();
            PolicyRequest {
                parts,
                authority: host.map(|h| h.parse().unwrap()),
                client: "192.0.2.1:1000".parse().unwrap(),
                tls,
                sni: None,
            }
        };
        let decided = |rt: &PolicyRuntime| match rt.decide(make()).1 {
            Verdict::Decided(d) => d,
            Verdict::Failed(f) => panic!("{method} {uri}: {f}"),
        };
        assert_eq!(
            decided(&wasm),
            decided(&native),
            "{method} {uri} {host:?} tls={tls}"
        );
    }
}
