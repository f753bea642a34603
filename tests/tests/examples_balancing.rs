//! The step-3 examples end to end, with real health checks and live balancer state: the
//! canary falls back to stable while its pool is unhealthy; per-path-algorithm keeps a user
//! on one endpoint and round-robins the rest; latency-aware prefers the fast endpoint; and
//! what a guest sees through `balancer.endpoints` and `health.status` (the probe guest).

use sluice_tests::*;
use std::net::SocketAddr;

/// `GET path` with optional extra header; the answer's status, `x-origin` and headers.
async fn fetch(
    c: &mut H1,
    path: &str,
    extra: Option<(&'static str, &str)>,
) -> (u16, String, http::HeaderMap) {
    let mut req = get(path, "example.test");
    if let Some((k, v)) = extra {
        req.headers_mut().insert(k, v.parse().unwrap());
    }
    let resp = send(c, req).await;
    let status = resp.status().as_u16();
    let origin = header(&resp, "x-origin").unwrap_or("-").to_owned();
    let headers = resp.headers().clone();
    body_bytes(resp).await;
    (status, origin, headers)
}

#[tokio::test]
async fn canary_falls_back_to_stable_while_the_canary_is_unhealthy() {
    let stable = Origin::echo("stable").await;
    let (canary, script) = scripted_health("canary").await;
    let proxy = ProxyBuilder::new()
        .pool("stable", &[stable.addr])
        .pool_toml("canary", &[canary.addr], scripted_checks!(1, 1))
        .policy(guests::CANARY, "", "percent = 0")
        .admin(None)
        .start()
        .await;
    let admin = proxy.admin.unwrap();
    let forced = Some(("x-canary", "always"));
    let mut c = h1(proxy.http).await;

    script.send(200).unwrap();
    wait_endpoint(admin, "canary", canary.addr, "first check", |e| {
        e["checks_passed"] == 1
    })
    .await;
    let (status, origin, h) = fetch(&mut c, "/", forced).await;
    assert_eq!(
        (status, origin.as_str(), h["x-canary"].to_str().unwrap()),
        (200, "canary", "1")
    );
    assert_eq!(fetch(&mut c, "/", None).await.1, "stable", "percent = 0");

    script.send(500).unwrap();
    wait_endpoint(admin, "canary", canary.addr, "canary down", |e| {
        e["state"] == "unhealthy"
    })
    .await;
    let (status, origin, h) = fetch(&mut c, "/", forced).await;
    assert_eq!(
        (status, origin.as_str(), h["x-canary"].to_str().unwrap()),
        (200, "stable", "fallback")
    );

    script.send(200).unwrap();
    wait_endpoint(admin, "canary", canary.addr, "canary back", |e| {
        e["state"] == "healthy"
    })
    .await;
    assert_eq!(fetch(&mut c, "/", forced).await.1, "canary");
}

#[tokio::test]
async fn per_path_algorithm_keeps_a_user_on_one_endpoint_and_round_robins_the_rest() {
    let origins = [
        Origin::echo("a").await,
        Origin::echo("b").await,
        Origin::echo("c").await,
    ];
    let addrs: Vec<SocketAddr> = origins.iter().map(|o| o.addr).collect();
    let proxy = ProxyBuilder::new()
        .pool("app", &addrs)
        .policy(guests::PER_PATH_ALGORITHM, "", "")
        .start()
        .await;
    let mut c = h1(proxy.http).await;

    let mut front = Vec::new();
    for _ in 0..6 {
        front.push(fetch(&mut c, "/", None).await.1);
    }
    for name in ["a", "b", "c"] {
        assert_eq!(
            front.iter().filter(|o| *o == name).count(),
            2,
            "round robin: {front:?}"
        );
    }

    fn user(id: &str) -> Option<(&'static str, &str)> {
        Some(("x-user-id", id))
    }
    let home = fetch(&mut c, "/session/cart", user("u1")).await.1;
    for _ in 0..10 {
        assert_eq!(fetch(&mut c, "/session/cart", user("u1")).await.1, home);
    }
    let mut seen = std::collections::HashSet::new();
    for i in 0..30 {
        seen.insert(
            fetch(&mut c, "/session/x", user(&format!("user{i}")))
                .await
                .1,
        );
    }
    assert!(seen.len() >= 2, "user ids spread: {seen:?}");

    // Another endpoint dies: u1 stays where it was; everyone still gets an answer.
    let other = origins
        .iter()
        .find(|o| o.addr.to_string() != home_addr(&origins, &home))
        .unwrap();
    other.kill();
    for i in 0..30 {
        let (status, _, _) = fetch(&mut c, "/session/x", user(&format!("user{i}"))).await;
        assert_eq!(status, 200);
    }
    assert_eq!(fetch(&mut c, "/session/cart", user("u1")).await.1, home);
}

/// The address of the origin called `name` (`a`, `b`, `c` in order).
fn home_addr(origins: &[Origin], name: &str) -> String {
    let i = ["a", "b", "c"].iter().position(|n| *n == name).unwrap();
    origins[i].addr.to_string()
}

#[tokio::test]
async fn latency_aware_prefers_the_fast_endpoint() {
    let fast = Origin::echo("fast").await;
    // 20 ms of simulated service time, not synchronisation.
    let slow = Origin::start(|req| async move {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        echo_response("slow", req).await
    })
    .await;
    let proxy = ProxyBuilder::new()
        .pool("app", &[slow.addr, fast.addr])
        .policy(guests::LATENCY_AWARE, "", "")
        .start()
        .await;
    let mut c = h1(proxy.http).await;
    let mut to_fast = 0;
    for _ in 0..40 {
        if fetch(&mut c, "/", None).await.1 == "fast" {
            to_fast += 1;
        }
    }
    assert!(to_fast >= 38, "{to_fast} of 40 to the fast endpoint");
}

#[tokio::test]
async fn guests_see_live_state_and_health() {
    let (x, script) = scripted_health("x").await;
    let proxy = ProxyBuilder::new()
        .pool_toml("web", &[x.addr], scripted_checks!(1, 1))
        .policy(guests::PROBE, "", "")
        .admin(None)
        .start()
        .await;
    let admin = proxy.admin.unwrap();
    let mut c = h1(proxy.http).await;
    let text_of = |path: String| {
        let req = get(&path, "example.test");
        async move {
            let mut c = h1(proxy.http).await;
            let resp = send(&mut c, req).await;
            assert_eq!(resp.status(), 200, "{path}");
            String::from_utf8(body_bytes(resp).await.to_vec()).unwrap()
        }
    };
    script.send(200).unwrap();
    wait_endpoint(admin, "web", x.addr, "first check", |e| {
        e["checks_passed"] == 1
    })
    .await;
    assert_eq!(text_of(format!("/health/web/{}", x.addr)).await, "healthy");
    // Traffic through the probe's forward path gives the endpoint a latency.
    let (status, _, _) = fetch(&mut c, "/forward/web", None).await;
    assert_eq!(status, 200);
    let live = text_of("/live/web".into()).await;
    let fields: Vec<&str> = live.split_whitespace().collect();
    assert_eq!(
        &fields[..4],
        &[x.addr.to_string().as_str(), "1", "true", "0"],
        "{live}"
    );
    assert!(
        fields[4].parse::<u32>().unwrap() > 0,
        "EWMA latency measured: {live}"
    );

    script.send(500).unwrap();
    wait_endpoint(admin, "web", x.addr, "down", |e| e["state"] == "unhealthy").await;
    assert_eq!(
        text_of(format!("/health/web/{}", x.addr)).await,
        "unhealthy"
    );
    assert!(text_of("/live/web".into()).await.contains(" false "));
    let resp = send(&mut c, get("/health/web/127.0.0.1:1", "example.test")).await;
    assert_eq!(resp.status(), 404, "unknown endpoint");
}
