//! The response phase (`on-response`, WIT 0.3) through the real proxy, with the `responder`
//! guest: header edits on upstream and cached responses, a local page instead of an upstream
//! 5xx, `no-store` and TTL from what the origin said, per-phase counters in `GET /policy`,
//! `fail` on a trap in `on-response`; and a component built for 0.2.1 before this phase
//! existed (`tests/prebuilt/sticky-ab-0.2.1.wasm`) still serving.

use sluice_tests::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const HOST: &str = "example.test";
const CACHE: &str = "[cache]\ncapacity = \"1MiB\"";

/// An origin that answers `/status/N` with status N and `/...` with 200, echoing the request
/// path as the body; `x-private`, `x-ttl` and `cache-control` come from the query
/// (`?private`, `?ttl=N`, `?max-age=N`). Counts its requests.
async fn origin() -> (Origin, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let origin = Origin::start(move |req| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let path = req.uri().path().to_owned();
            let query = req.uri().query().unwrap_or("").to_owned();
            let status = path
                .strip_prefix("/status/")
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            let mut r = text(status, path);
            let h = r.headers_mut();
            for pair in query.split('&') {
                match pair.split_once('=') {
                    Some(("max-age", n)) => {
                        h.insert("cache-control", format!("max-age={n}").parse().unwrap());
                    }
                    Some(("ttl", n)) => {
                        h.insert("x-ttl", n.parse().unwrap());
                    }
                    _ if pair == "private" => {
                        h.insert("x-private", "1".parse().unwrap());
                    }
                    _ => {}
                }
            }
            r
        }
    })
    .await;
    (origin, hits)
}

async fn proxy(origin: &Origin, extra_policy: &str, toml: &str) -> TestProxy {
    ProxyBuilder::for_origin(origin)
        .admin(None)
        .policy(guests::RESPONDER, extra_policy, "")
        .toml(toml)
        .start()
        .await
}

#[tokio::test]
async fn on_response_edits_an_upstream_response_after_the_decisions_edits() {
    let (origin, _) = origin().await;
    let p = proxy(&origin, "", "").await;
    let resp = send(&mut h1(p.http).await, get("/page", HOST)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-phase"), Some("upstream"));
    assert_eq!(header(&resp, "x-seen-status"), Some("200"));
    assert_eq!(
        header(&resp, "x-decided"),
        Some("1"),
        "decide's edits still apply"
    );
    assert_eq!(body_bytes(resp).await, "/page");
}

#[tokio::test]
async fn on_response_replaces_an_upstream_5xx_with_a_local_page() {
    let (origin, _) = origin().await;
    let p = proxy(&origin, "", "").await;
    let mut c = h1(p.http).await;
    let resp = send(&mut c, get("/status/502", HOST)).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "content-type"), Some("text/plain"));
    let body = body_bytes(resp).await;
    let body = std::str::from_utf8(&body).unwrap();
    assert!(
        body.starts_with("sorry: 502 from 127.0.0.1:"),
        "names the status and endpoint: {body}"
    );
    // The client connection is still good.
    let resp = send(&mut c, get("/ok", HOST)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(body_bytes(resp).await, "/ok");
}

#[tokio::test]
async fn on_response_edits_cached_responses_each_time_and_changes_what_is_stored() {
    let (origin, hits) = origin().await;
    let p = proxy(&origin, "", CACHE).await;
    let mut c = h1(p.http).await;

    // Stored from the upstream; served from the cache with the edit applied again.
    let first = send(&mut c, get("/a?max-age=100", HOST)).await;
    assert_eq!(header(&first, "x-phase"), Some("upstream"));
    drop(body_bytes(first).await);
    let second = send(&mut c, get("/a?max-age=100", HOST)).await;
    assert_eq!(header(&second, "x-phase"), Some("cache"));
    assert_eq!(header(&second, "x-decided"), Some("1"));
    assert_eq!(body_bytes(second).await, "/a");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // `no-store` from on-response: cacheable by its headers, still not stored.
    for _ in 0..2 {
        let r = send(&mut c, get("/b?max-age=100&private", HOST)).await;
        assert_eq!(header(&r, "x-phase"), Some("upstream"));
        drop(body_bytes(r).await);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3, "both went upstream");

    // A TTL from on-response makes a response without freshness information storable.
    let r = send(&mut c, get("/c?ttl=60", HOST)).await;
    drop(body_bytes(r).await);
    let r = send(&mut c, get("/c?ttl=60", HOST)).await;
    assert_eq!(header(&r, "x-phase"), Some("cache"));
    drop(body_bytes(r).await);
    assert_eq!(hits.load(Ordering::SeqCst), 4);

    let status = policy_status(p.admin.unwrap()).await;
    let active = &status["active"];
    assert_eq!(active["world"], "0.3.0", "{status}");
    let on_response = &active["on_response"];
    assert!(on_response["calls"].as_u64().unwrap() >= 7, "{status}");
    assert_eq!(on_response["traps"], 0, "{status}");
}

#[tokio::test]
async fn a_trap_in_on_response_follows_the_fail_setting_and_is_counted_apart() {
    let (origin, _) = origin().await;
    let open = proxy(&origin, "fail = \"open\"", "").await;
    let resp = send(&mut h1(open.http).await, get("/trap-response", HOST)).await;
    assert_eq!(resp.status(), 200, "fail open serves the response as it is");
    assert_eq!(header(&resp, "x-phase"), None);
    let status = policy_status(open.admin.unwrap()).await;
    assert_eq!(status["active"]["on_response"]["traps"], 1, "{status}");
    assert_eq!(
        status["active"]["traps"], 0,
        "decide did not fail: {status}"
    );

    let closed = proxy(&origin, "fail = \"closed\"", "").await;
    let resp = send(&mut h1(closed.http).await, get("/trap-response", HOST)).await;
    assert_eq!(resp.status(), 503);
}

#[tokio::test]
async fn a_component_built_for_0_2_1_before_the_response_phase_still_serves() {
    let (origin, _) = origin().await;
    let module = concat!(env!("CARGO_MANIFEST_DIR"), "/prebuilt/sticky-ab-0.2.1.wasm");
    let p = ProxyBuilder::new()
        .pool("ab", &[origin.addr])
        .admin(None)
        .policy(module, "", "")
        .start()
        .await;
    let resp = send(&mut h1(p.http).await, get("/", HOST)).await;
    assert_eq!(resp.status(), 200);
    let cookie = header(&resp, "set-cookie").expect("sticky-ab sets its cookie");
    assert!(cookie.starts_with("ab="), "{cookie}");
    let status = policy_status(p.admin.unwrap()).await;
    assert_eq!(status["active"]["world"], "0.2.1", "{status}");
    assert!(status["active"]["on_response"].is_null(), "{status}");
}
