//! Hostile guests: an infinite loop (in the guest or through host calls) is stopped at its
//! deadline while other requests keep flowing; a memory bomb is stopped at its cap; a stack
//! overflow, panics and traps become 503s (fail closed) or forwards (fail open), are counted
//! per kind, and leave the connection and the policy usable; decisions over the host's
//! bounds (a 10 MiB header value, 100,000 edits) are refused like any invalid decision; a
//! storm of failures leaves other clients served.

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

/// Each way a guest can misbehave, with `fail = "closed"` (503, nothing sent upstream) and
/// `fail = "open"` (forwarded to the default pool as if no policy ran), counted by kind; and
/// the proxy goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_misbehaviour_fails_closed_or_open_as_configured() {
    // (path, the counter it must raise)
    const CASES: [(&str, &str); 8] = [
        ("/loop", "deadline_exceeded"),
        ("/hostloop", "deadline_exceeded"),
        ("/oom", "memory_exceeded"),
        ("/stack", "traps"),
        ("/panic", "traps"),
        ("/trap", "traps"),
        ("/huge/header", "invalid_decisions"),
        ("/huge/edits", "invalid_decisions"),
    ];
    for fail in ["closed", "open"] {
        let origin = Origin::echo("a").await;
        // Generous enough that building 100,000 edits never runs into it on a slow machine.
        let extra = format!("deadline = \"500ms\"\nmemory = \"32MiB\"\nfail = \"{fail}\"");
        let proxy = probe_proxy(&origin, &extra).await;
        let mut c = h1(proxy.http).await;
        for (path, _) in CASES {
            let resp = guarded(path, send(&mut c, get(path, "e.test"))).await;
            let status = resp.status();
            let from = resp.headers().get("x-origin").cloned();
            body_bytes(resp).await;
            if fail == "closed" {
                assert_eq!(status, 503, "{fail} {path}");
            } else {
                assert_eq!(status, 200, "{fail} {path}");
                assert_eq!(
                    from.as_ref().map(|v| v.as_bytes()),
                    Some(&b"a"[..]),
                    "{path}"
                );
            }
        }
        assert_eq!(origin.hits(), if fail == "open" { CASES.len() } else { 0 });
        let status = policy_status(proxy.admin.unwrap()).await;
        for counter in [
            "deadline_exceeded",
            "memory_exceeded",
            "traps",
            "invalid_decisions",
        ] {
            let want = CASES.iter().filter(|(_, c)| *c == counter).count();
            assert_eq!(
                status["active"][counter], want,
                "{fail} {counter}: {status}"
            );
        }
        let resp = send(&mut c, get("/after", "e.test")).await;
        assert_eq!(resp.status(), 200, "{fail}: still serving");
    }
}

/// A storm of failing decisions (1000 on 8 connections, every kind mixed) while a probe
/// client on its own connection keeps making normal requests: every probe request is
/// answered by the origin, and the figure of how long the slowest took is printed (it is a
/// measurement, not an assertion; bench/RESULTS.md has the release figures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_failing_decisions_leaves_other_requests_served() {
    const KINDS: [&str; 5] = ["/trap", "/panic", "/stack", "/huge/edits", "/loop"];
    let origin = Origin::echo("a").await;
    let proxy = probe_proxy(&origin, "deadline = \"20ms\"").await;
    let stormers: Vec<_> = (0..8)
        .map(|i| {
            let addr = proxy.http;
            tokio::spawn(async move {
                let mut c = h1(addr).await;
                let mut failed = 0;
                for j in 0..125usize {
                    let path = KINDS[(i + j) % KINDS.len()];
                    let resp = send(&mut c, get(path, "e.test")).await;
                    failed += usize::from(resp.status() == 503);
                    body_bytes(resp).await;
                }
                failed
            })
        })
        .collect();
    let mut c = h1(proxy.http).await;
    let mut slowest = std::time::Duration::ZERO;
    let mut probes = 0;
    while !stormers.iter().all(|s| s.is_finished()) && probes < 5000 {
        let start = std::time::Instant::now();
        let resp = guarded("a probe request", send(&mut c, get("/probe", "e.test"))).await;
        assert_eq!(resp.status(), 200);
        body_bytes(resp).await;
        slowest = slowest.max(start.elapsed());
        probes += 1;
    }
    let mut failed = 0;
    for s in stormers {
        failed += guarded("the storm ends", s).await.unwrap();
    }
    assert_eq!(failed, 1000, "every failing decision is a 503");
    assert!(probes > 0);
    eprintln!("storm: {probes} probe requests served, slowest {slowest:?}");
}
