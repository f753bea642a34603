//! Hostile guests: an infinite loop is stopped at its deadline while other requests keep
//! flowing; a memory bomb is stopped at its cap; panics and traps become 503s (fail closed),
//! are counted per kind, and leave the connection and the policy usable.

use sluice_tests::*;

async fn probe_proxy(origin: &Origin, extra: &str) -> TestProxy {
    ProxyBuilder::for_origin(origin)
        .admin(None)
        .policy(guests::PROBE, extra, "")
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_is_stopped_while_other_requests_flow() {
    let origin = Origin::echo("a").await;
    let proxy = probe_proxy(&origin, "deadline = \"20ms\"").await;
    let loopers: Vec<_> = (0..4)
        .map(|i| {
            let addr = proxy.http;
            tokio::spawn(async move {
                let mut c = h1(addr).await;
                let mut statuses = Vec::new();
                for j in 0..5 {
                    let resp = send(&mut c, get(&format!("/loop/{i}/{j}"), "e.test")).await;
                    statuses.push(resp.status().as_u16());
                    body_bytes(resp).await;
                }
                statuses
            })
        })
        .collect();
    let mut c = h1(proxy.http).await;
    for n in 0..50 {
        let resp = guarded(
            "a normal request",
            send(&mut c, get(&format!("/n{n}"), "e.test")),
        )
        .await;
        assert_eq!(resp.status(), 200);
        body_bytes(resp).await;
    }
    for l in loopers {
        let statuses = guarded("looping requests end", l).await.unwrap();
        assert_eq!(statuses, [503; 5]);
    }
    let status = policy_status(proxy.admin.unwrap()).await;
    assert_eq!(status["active"]["deadline_exceeded"], 20, "{status}");
    assert_eq!(status["active"]["traps"], 0, "{status}");
}

#[tokio::test]
async fn a_memory_bomb_stops_at_the_cap() {
    let origin = Origin::echo("a").await;
    // A generous deadline, so only the memory cap can stop the bomb.
    let proxy = probe_proxy(&origin, "memory = \"8MiB\"\ndeadline = \"2s\"").await;
    let mut c = h1(proxy.http).await;
    for _ in 0..3 {
        let resp = guarded("the bomb request", send(&mut c, get("/oom", "e.test"))).await;
        assert_eq!(resp.status(), 503);
        body_bytes(resp).await;
    }
    let resp = send(&mut c, get("/after", "e.test")).await;
    assert_eq!(resp.status(), 200);
    let status = policy_status(proxy.admin.unwrap()).await;
    assert_eq!(status["active"]["memory_exceeded"], 3, "{status}");
    assert_eq!(status["active"]["memory_bytes"], 8 << 20);
}

#[tokio::test]
async fn panics_and_traps_fail_closed_and_are_counted() {
    let origin = Origin::echo("a").await;
    // Fresh instances here; the default (reused instances) is covered by the tests around.
    let proxy = probe_proxy(&origin, "instances = { reuse = 1 }").await;
    let mut c = h1(proxy.http).await;
    for path in ["/panic", "/trap", "/panic/again"] {
        let resp = send(&mut c, get(path, "e.test")).await;
        assert_eq!(resp.status(), 503, "{path}");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        body_bytes(resp).await;
    }
    assert_eq!(origin.hits(), 0);
    let resp = send(&mut c, get("/fine", "e.test")).await;
    assert_eq!(resp.status(), 200);
    let status = policy_status(proxy.admin.unwrap()).await;
    assert_eq!(status["active"]["traps"], 3, "{status}");
    assert_eq!(status["active"]["reuse"], 1, "{status}");
}

#[tokio::test]
async fn reuse_mode_discards_an_instance_that_failed() {
    let origin = Origin::echo("a").await;
    let proxy = probe_proxy(&origin, "instances = { reuse = 1000 }").await;
    let mut c = h1(proxy.http).await;
    for path in ["/ok", "/trap", "/ok2", "/oom", "/ok3", "/loop", "/ok4"] {
        let resp = guarded(path, send(&mut c, get(path, "e.test"))).await;
        let want = if path.starts_with("/ok") { 200 } else { 503 };
        assert_eq!(resp.status(), want, "{path}");
        body_bytes(resp).await;
    }
    let status = policy_status(proxy.admin.unwrap()).await;
    assert_eq!(status["active"]["reuse"], 1000);
}
