//! Load balancing, health and resilience over real sockets: active checks flip an endpoint
//! after exactly `fall` failures and back after `rise` passes; passive outlier detection
//! ejects an endpoint and an active check brings it back; a killed endpoint costs no GET;
//! what is and is not retried; the retry budget; the circuit breaker; balancer state kept
//! across a policy swap and a pool reload.

use http::{Request, StatusCode};
use hyper::body::Incoming;
use sluice_tests::*;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;

const SCRIPTED_CHECKS: &str = scripted_checks!(2, 3);

/// `n` GETs on one connection; the `x-origin` of each answer.
async fn origins_of(proxy: SocketAddr, n: usize) -> Vec<String> {
    let mut c = h1(proxy).await;
    let mut seen = Vec::new();
    for _ in 0..n {
        let resp = send(&mut c, get("/", "example.test")).await;
        assert_eq!(resp.status(), 200);
        seen.push(header(&resp, "x-origin").unwrap_or("-").to_string());
        body_bytes(resp).await;
    }
    seen
}

#[tokio::test]
async fn health_flips_after_exactly_fall_failures_and_back_after_rise_passes() {
    let (x, script) = scripted_health("x").await;
    let y = Origin::echo("y").await;
    let proxy = ProxyBuilder::new()
        .pool_toml("web", &[x.addr, y.addr], SCRIPTED_CHECKS)
        .admin(None)
        .start()
        .await;
    let admin = proxy.admin.unwrap();
    let checked =
        |field: &'static str, n: u64| move |e: &serde_json::Value| e[field].as_u64() == Some(n);

    script.send(200).unwrap();
    let e = wait_endpoint(
        admin,
        "web",
        x.addr,
        "first check",
        checked("checks_passed", 1),
    )
    .await;
    assert_eq!(e["state"], "healthy");
    for failures in 1..=2 {
        script.send(500).unwrap();
        let e = wait_endpoint(
            admin,
            "web",
            x.addr,
            "a failed check",
            checked("checks_failed", failures),
        )
        .await;
        assert_eq!(
            e["state"], "healthy",
            "still healthy after {failures} of fall = 3"
        );
    }
    script.send(500).unwrap();
    let e = wait_endpoint(
        admin,
        "web",
        x.addr,
        "third failed check",
        checked("checks_failed", 3),
    )
    .await;
    assert_eq!(e["state"], "unhealthy", "{e}");
    assert_eq!(e["last_check"]["passed"], false);
    assert_eq!(e["last_check"]["detail"], "status 500");
    assert!(
        origins_of(proxy.http, 6).await.iter().all(|o| o == "y"),
        "no traffic to an unhealthy endpoint"
    );

    script.send(200).unwrap();
    let e = wait_endpoint(
        admin,
        "web",
        x.addr,
        "a passed check",
        checked("checks_passed", 2),
    )
    .await;
    assert_eq!(
        e["state"], "unhealthy",
        "one pass of rise = 2 is not enough"
    );
    script.send(200).unwrap();
    let e = wait_endpoint(
        admin,
        "web",
        x.addr,
        "second pass",
        checked("checks_passed", 3),
    )
    .await;
    assert_eq!(e["state"], "healthy", "{e}");
    assert!(origins_of(proxy.http, 6).await.iter().any(|o| o == "x"));
}

#[tokio::test]
async fn consecutive_gateway_errors_eject_and_an_active_check_brings_back() {
    // x answers 502 to traffic; its health checks are scripted and wait for the test.
    let (x, tx) = scripted_health_with(|_| async { text(502, "bad gateway behind x") }).await;
    let y = Origin::echo("y").await;
    let extra = format!(
        "algorithm = \"round_robin\"\n{SCRIPTED_CHECKS}[pool.outlier_detection]\nconsecutive_gateway_errors = 3\nbase_ejection_time = \"1h\"\n"
    );
    let proxy = ProxyBuilder::new()
        .pool_toml("web", &[x.addr, y.addr], &extra)
        .admin(None)
        .start()
        .await;
    let admin = proxy.admin.unwrap();

    let mut c = h1(proxy.http).await;
    let mut bad = 0;
    while bad < 3 {
        let resp = send(&mut c, get("/", "example.test")).await;
        if resp.status() == StatusCode::BAD_GATEWAY {
            bad += 1;
        }
        body_bytes(resp).await;
    }
    let e = endpoint_status(admin, "web", x.addr).await;
    assert_eq!(e["state"], "ejected", "{e}");
    assert_eq!(e["ejections"], 1);
    assert!(e["ejected_until"].is_string());
    assert!(origins_of(proxy.http, 8).await.iter().all(|o| o == "y"));

    tx.send(200).unwrap();
    let e = wait_endpoint(admin, "web", x.addr, "check passes", |e| {
        e["checks_passed"] == 1
    })
    .await;
    assert_eq!(
        e["state"], "healthy",
        "an active check success ends the ejection: {e}"
    );
}

/// Waits until the holders together have read `n` requests.
async fn wait_total(holders: &[&Holder], n: usize) {
    let total = || holders.iter().map(|h| h.arrivals()).sum::<usize>();
    guarded(&format!("{n} requests held"), async {
        while total() < n {
            // Wakes when any holder reads one more request.
            let waits = holders
                .iter()
                .map(|h| Box::pin(h.wait_arrivals(h.arrivals() + 1)));
            futures_util::future::select_all(waits).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_killed_while_clients_run_costs_no_get() {
    let a = Origin::echo("a").await;
    let b = Arc::new(Origin::echo("b").await);
    let c = Origin::echo("c").await;
    let proxy = ProxyBuilder::new()
        .pool("web", &[a.addr, b.addr, c.addr])
        .admin(None)
        .start()
        .await;
    const CLIENTS: usize = 3;
    const PER_CLIENT: usize = 200;
    let mut tasks = Vec::new();
    for n in 0..CLIENTS {
        let b = b.clone();
        let addr = proxy.http;
        tasks.push(tokio::spawn(async move {
            let mut conn = h1(addr).await;
            let mut failed = Vec::new();
            for i in 0..PER_CLIENT {
                if n == 0 && i == PER_CLIENT / 4 {
                    b.kill();
                }
                let resp = send(&mut conn, get(&format!("/{n}/{i}"), "example.test")).await;
                if resp.status() != 200 {
                    failed.push((i, resp.status()));
                }
                body_bytes(resp).await;
            }
            failed
        }));
    }
    for t in tasks {
        let failed = guarded("clients finish", t).await.unwrap();
        assert!(failed.is_empty(), "failed GETs: {failed:?}");
    }
    assert!(b.hits() > 0, "b served before it was killed");
    let e = endpoint_status(proxy.admin.unwrap(), "web", b.addr).await;
    assert_eq!(e["state"], "ejected", "{e}");
    assert_eq!(a.hits() + b.hits() + c.hits(), CLIENTS * PER_CLIENT);
}

#[tokio::test]
async fn what_is_replayed_after_the_request_was_sent() {
    // `closer` reads each request, body included, and closes without answering. With weights
    // 10000:1 smooth WRR sends every first attempt there; a retry must go elsewhere.
    let closer = Holder::start(false).await;
    let b = Origin::echo("b").await;
    let pool = format!(
        "[[pool]]\nname = \"web\"\nendpoints = [{{ address = \"{}\", weight = 10000 }}, \"{}\"]\n[pool.outlier_detection]\nenabled = false\n",
        closer.addr, b.addr
    );
    let proxy = ProxyBuilder::new().toml(&pool).start().await;

    // A streamed (chunked) POST: its body went upstream, so it is never sent again.
    let resp = raw(
        proxy.http,
        b"POST /upload HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        10,
    )
    .await;
    assert_eq!(raw_status(&resp), 502, "{resp}");
    assert_eq!((closer.arrivals(), b.hits()), (1, 0));

    let mut c = h1(proxy.http).await;
    let with_body = |method: &str| {
        Request::builder()
            .method(method)
            .uri("/item")
            .header("host", "example.test")
            .body(full("hello"))
            .unwrap()
    };
    // A POST with a small body: not idempotent, so not replayed either.
    let resp = send(&mut c, with_body("POST")).await;
    assert_eq!(resp.status(), 502);
    body_bytes(resp).await;
    assert_eq!((closer.arrivals(), b.hits()), (2, 0));

    // A PUT with a small body is idempotent and was buffered: replayed, body intact.
    let resp = send(&mut c, with_body("PUT")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(body_bytes(resp).await, "b 5");
    assert_eq!((closer.arrivals(), b.hits()), (3, 1));

    // A streamed PUT cannot be replayed.
    let resp = raw(
        proxy.http,
        b"PUT /item HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        10,
    )
    .await;
    assert_eq!(raw_status(&resp), 502, "{resp}");
    assert_eq!((closer.arrivals(), b.hits()), (4, 1));

    // A GET goes to the other endpoint.
    let resp = send(&mut c, get("/page", "example.test")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-origin"), Some("b"));
    assert_eq!((closer.arrivals(), b.hits()), (5, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_retries_when_every_endpoint_fails() {
    let holders = Holder::group(2).await;
    let extra = "retries = 1\nretry_budget = { percent = 10, min_concurrent = 3 }\n[pool.outlier_detection]\nenabled = false\n";
    let proxy = ProxyBuilder::new()
        .pool_toml("web", &[holders[0].addr, holders[1].addr], extra)
        .start()
        .await;
    const REQUESTS: usize = 20;
    let (done_tx, mut done) = mpsc::unbounded_channel();
    for i in 0..REQUESTS {
        let addr = proxy.http;
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            let mut c = h1(addr).await;
            let resp = send(&mut c, get(&format!("/{i}"), "example.test")).await;
            let reason = header(&resp, "x-sluice-error").map(str::to_string);
            done_tx.send((resp.status(), reason)).unwrap();
        });
    }
    let refs: Vec<&Holder> = holders.iter().collect();
    wait_total(&refs, REQUESTS).await;
    // Every endpoint fails at once: 20 requests want a retry; 10% of 20 in flight is 2, so
    // the minimum of 3 concurrent retries applies. The three retries are held by the other
    // endpoint; the other 17 get their answer.
    holders[0].release();
    let mut answers = Vec::new();
    for _ in 0..REQUESTS - 3 {
        answers.push(guarded("denied retries answer", done.recv()).await.unwrap());
    }
    wait_total(&refs, REQUESTS + 3).await;
    holders[0].release();
    for _ in 0..3 {
        answers.push(guarded("retries answer", done.recv()).await.unwrap());
    }
    let count = |reason: Option<&str>| {
        answers
            .iter()
            .filter(|(status, r)| *status == StatusCode::BAD_GATEWAY && r.as_deref() == reason)
            .count()
    };
    assert_eq!(
        count(Some("retry budget exhausted")),
        REQUESTS - 3,
        "{answers:?}"
    );
    assert_eq!(count(None), 3, "{answers:?}");
    let arrivals: usize = holders.iter().map(Holder::arrivals).sum();
    assert_eq!(
        arrivals,
        REQUESTS + 3,
        "exactly three retries reached an endpoint"
    );
}

#[tokio::test]
async fn the_circuit_breaker_answers_503_at_once() {
    let h = Holder::start(true).await;
    let proxy = ProxyBuilder::new()
        .pool_toml(
            "web",
            &[h.addr],
            "retries = 0\nmax_in_flight_per_endpoint = 2\n",
        )
        .start()
        .await;
    let mut held = Vec::new();
    for i in 0..2 {
        let addr = proxy.http;
        held.push(tokio::spawn(async move {
            let mut c = h1(addr).await;
            send(&mut c, get(&format!("/held/{i}"), "example.test"))
                .await
                .status()
        }));
    }
    h.wait_arrivals(2).await;
    let mut c = h1(proxy.http).await;
    let resp = send(&mut c, get("/third", "example.test")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        header(&resp, "x-sluice-error"),
        Some("circuit open: endpoint max_in_flight")
    );
    body_bytes(resp).await;
    assert_eq!(h.arrivals(), 2, "the refused request never went upstream");
    h.release();
    for t in held {
        assert_eq!(guarded("held requests end", t).await.unwrap(), 502);
    }
    // With the slots free again, requests go through (and are held).
    let again = tokio::spawn({
        let addr = proxy.http;
        async move {
            let mut c = h1(addr).await;
            send(&mut c, get("/fourth", "example.test")).await.status()
        }
    });
    h.wait_arrivals(3).await;
    h.release();
    assert_eq!(guarded("fourth ends", again).await.unwrap(), 502);

    // The pool-wide limit.
    let (p, q) = (Holder::start(true).await, Holder::start(true).await);
    let proxy = ProxyBuilder::new()
        .pool_toml("web", &[p.addr, q.addr], "retries = 0\nmax_in_flight = 1\n")
        .start()
        .await;
    let first = tokio::spawn({
        let addr = proxy.http;
        async move {
            let mut c = h1(addr).await;
            send(&mut c, get("/one", "example.test")).await.status()
        }
    });
    wait_total(&[&p, &q], 1).await;
    let mut c = h1(proxy.http).await;
    let resp = send(&mut c, get("/two", "example.test")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        header(&resp, "x-sluice-error"),
        Some("circuit open: pool max_in_flight")
    );
    p.release();
    q.release();
    assert_eq!(guarded("first ends", first).await.unwrap(), 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancer_state_survives_a_policy_swap_and_a_pool_reload() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let a = Origin::start(move |req: Request<Incoming>| {
        let g = g.clone();
        async move {
            if req.uri().path() == "/slow" {
                g.notified().await;
            }
            echo_response("a", req).await
        }
    })
    .await;
    let b = Origin::echo("b").await;
    let builder = || ProxyBuilder::new().pool("web", &[a.addr]).admin(None);
    let proxy = builder().start().await;
    let admin = proxy.admin.unwrap();
    origins_of(proxy.http, 5).await;
    let slow = tokio::spawn({
        let addr = proxy.http;
        async move {
            let mut c = h1(addr).await;
            send(&mut c, get("/slow", "example.test")).await.status()
        }
    });
    let before = wait_endpoint(admin, "web", a.addr, "slow request in flight", |e| {
        e["in_flight"] == 1
    })
    .await;
    assert_eq!(before["requests"], 6);
    assert!(before["ewma_latency_ms"].as_f64().is_some());

    // A policy swap.
    let module = std::fs::read(guests::SWAP_A).unwrap();
    let (status, body) = admin_call(admin, "PUT", "/policy", module).await;
    assert_eq!(status, 200, "{body}");
    let e = endpoint_status(admin, "web", a.addr).await;
    assert_eq!(
        (e["requests"].clone(), e["in_flight"].clone()),
        (6.into(), 1.into())
    );

    // A pool reload that keeps `a` and adds `b`.
    let text = ProxyBuilder::new()
        .pool("web", &[a.addr, b.addr])
        .config_text();
    let config =
        sluice::config::Config::parse(&text, "(reload)", std::path::Path::new(".")).unwrap();
    proxy.running.reload_pools(&config).unwrap();
    let e = endpoint_status(admin, "web", a.addr).await;
    assert_eq!(
        (e["requests"].clone(), e["in_flight"].clone()),
        (6.into(), 1.into())
    );
    // Kept, only decayed a little with time since.
    let (then, now) = (
        before["ewma_latency_ms"].as_f64().unwrap(),
        e["ewma_latency_ms"].as_f64().unwrap(),
    );
    assert!(
        now > 0.0 && now <= then,
        "EWMA kept: {then} then, {now} now"
    );
    assert_eq!(endpoint_status(admin, "web", b.addr).await["requests"], 0);

    gate.notify_one();
    assert_eq!(guarded("slow ends", slow).await.unwrap(), 200);
    wait_endpoint(admin, "web", a.addr, "in flight drops", |e| {
        e["in_flight"] == 0
    })
    .await;
    let seen = origins_of(proxy.http, 4).await;
    assert!(
        seen.contains(&"b".to_string()),
        "the reloaded pool serves: {seen:?}"
    );
}
