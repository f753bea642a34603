//! Every example policy in `examples/` end to end through the proxy: routing, local responses
//! and header edits, with the settings each example's README describes.

use sluice_tests::*;

async fn status_and_origin(
    c: &mut H1,
    req: http::Request<Body>,
) -> (u16, Option<String>, http::HeaderMap) {
    let resp = send(c, req).await;
    let status = resp.status().as_u16();
    let origin = header(&resp, "x-origin").map(str::to_owned);
    let headers = resp.headers().clone();
    body_bytes(resp).await;
    (status, origin, headers)
}

fn with_header(
    mut req: http::Request<Body>,
    name: &'static str,
    value: &str,
) -> http::Request<Body> {
    req.headers_mut().append(name, value.parse().unwrap());
    req
}

#[tokio::test]
async fn default_policy_forwards_everything_to_the_default_pool() {
    let (web, other) = (Origin::echo("web").await, Origin::echo("other").await);
    let proxy = ProxyBuilder::new()
        .pool("web", &[web.addr])
        .pool("other", &[other.addr])
        .policy(guests::DEFAULT_POLICY, "", "")
        .start()
        .await;
    let mut c = h1(proxy.http).await;
    for path in ["/", "/api/x", "/static/y?b=1&a=2"] {
        let (status, origin, h) = status_and_origin(&mut c, get(path, "e.test")).await;
        assert_eq!((status, origin.as_deref()), (200, Some("web")), "{path}");
        assert_eq!(h["x-echo-uri"], path);
    }
}

#[tokio::test]
async fn path_routing_sends_api_and_static_to_their_pools() {
    let (web, api, stat) = (
        Origin::echo("web").await,
        Origin::echo("api").await,
        Origin::echo("static").await,
    );
    let proxy = ProxyBuilder::new()
        .pool("web", &[web.addr])
        .pool("api", &[api.addr])
        .pool("assets", &[stat.addr])
        .policy(guests::PATH_ROUTING, "", "static_pool = \"assets\"")
        .start()
        .await;
    let mut c = h1(proxy.http).await;
    for (path, want) in [
        ("/api/users/1", "api"),
        ("/static/app.js", "static"),
        ("/", "web"),
        ("/apix", "web"),
        ("/about", "web"),
    ] {
        let (status, origin, _) = status_and_origin(&mut c, get(path, "e.test")).await;
        assert_eq!((status, origin.as_deref()), (200, Some(want)), "{path}");
    }
}

#[tokio::test]
async fn canary_by_header_cookie_and_percentage() {
    let (stable, canary) = (Origin::echo("stable").await, Origin::echo("canary").await);
    let start = |percent: &'static str| {
        ProxyBuilder::new()
            .pool("stable", &[stable.addr])
            .pool("canary", &[canary.addr])
            .policy(guests::CANARY, "", &format!("percent = {percent}"))
            .start()
    };
    let none = start("0").await;
    let mut c = h1(none.http).await;
    let (_, origin, h) = status_and_origin(&mut c, get("/", "e.test")).await;
    assert_eq!(origin.as_deref(), Some("stable"));
    assert!(!h.contains_key("x-canary"));
    let (_, origin, h) = status_and_origin(
        &mut c,
        with_header(get("/", "e.test"), "x-canary", "always"),
    )
    .await;
    assert_eq!(origin.as_deref(), Some("canary"));
    assert_eq!(h["x-canary"], "1");
    let (_, origin, _) = status_and_origin(
        &mut c,
        with_header(get("/", "e.test"), "cookie", "theme=dark; canary=always"),
    )
    .await;
    assert_eq!(origin.as_deref(), Some("canary"));

    let all = start("100").await;
    let mut c = h1(all.http).await;
    for _ in 0..3 {
        let (_, origin, _) = status_and_origin(&mut c, get("/", "e.test")).await;
        assert_eq!(origin.as_deref(), Some("canary"));
    }
}

#[tokio::test]
async fn sticky_ab_keeps_a_cookie_on_one_endpoint_and_sets_one() {
    let (a, b) = (Origin::echo("a").await, Origin::echo("b").await);
    let proxy = ProxyBuilder::new()
        .pool("ab", &[a.addr, b.addr])
        .policy(guests::STICKY_AB, "", "")
        .start()
        .await;
    let mut c = h1(proxy.http).await;
    let (_, _, h) = status_and_origin(&mut c, get("/", "e.test")).await;
    let cookie = h["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("ab=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );

    let mut seen = std::collections::BTreeSet::new();
    for visitor in 0..20 {
        let mut first = None;
        for _ in 0..3 {
            let req = with_header(
                get("/", "e.test"),
                "cookie",
                &format!("ab=visitor{visitor}"),
            );
            let (status, origin, h) = status_and_origin(&mut c, req).await;
            assert_eq!(status, 200);
            assert!(
                !h.contains_key("set-cookie"),
                "a visitor with a cookie gets no new one"
            );
            let origin = origin.unwrap();
            assert_eq!(
                *first.get_or_insert(origin.clone()),
                origin,
                "visitor{visitor} moved"
            );
        }
        seen.insert(first.unwrap());
    }
    assert_eq!(seen.len(), 2, "20 visitors should reach both endpoints");
}

#[tokio::test]
async fn auth_gate_answers_401_403_or_forwards_with_the_client_name() {
    let origin = Origin::echo("web").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .policy(guests::AUTH_GATE, "", "keys = \"mobile:k-1, partner:k-2\"")
        .start()
        .await;
    let mut c = h1(proxy.http).await;
    let (status, origin_name, h) = status_and_origin(&mut c, get("/", "e.test")).await;
    assert_eq!((status, origin_name), (401, None));
    assert_eq!(h["www-authenticate"], "Bearer");
    let (status, _, _) =
        status_and_origin(&mut c, with_header(get("/", "e.test"), "x-api-key", "nope")).await;
    assert_eq!(status, 403);
    assert_eq!(origin.hits(), 0);

    let resp = send(&mut c, with_header(get("/", "e.test"), "x-api-key", "k-2")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(echoed(&resp, "x-api-client"), Some("partner"));
    assert_eq!(
        echoed(&resp, "x-api-key"),
        None,
        "the key never reaches the upstream"
    );
    body_bytes(resp).await;
    let resp = send(
        &mut c,
        with_header(get("/", "e.test"), "authorization", "bearer k-1"),
    )
    .await;
    assert_eq!(echoed(&resp, "x-api-client"), Some("mobile"));
    assert_eq!(echoed(&resp, "authorization"), None);
}

#[tokio::test]
async fn maintenance_switch_from_settings() {
    let origin = Origin::echo("web").await;
    let on = ProxyBuilder::for_origin(&origin)
        .policy(
            guests::MAINTENANCE,
            "",
            "maintenance = \"on\"\nretry_after = 30\nallow_prefix = \"/health\"",
        )
        .start()
        .await;
    let mut c = h1(on.http).await;
    let resp = send(&mut c, get("/shop", "e.test")).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "30");
    assert!(
        header(&resp, "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(String::from_utf8_lossy(&body_bytes(resp).await).contains("maintenance"));
    let (status, origin_name, _) = status_and_origin(&mut c, get("/health/live", "e.test")).await;
    assert_eq!((status, origin_name.as_deref()), (200, Some("web")));

    let off = ProxyBuilder::for_origin(&origin)
        .policy(guests::MAINTENANCE, "", "maintenance = false")
        .start()
        .await;
    let (status, origin_name, _) =
        status_and_origin(&mut h1(off.http).await, get("/shop", "e.test")).await;
    assert_eq!((status, origin_name.as_deref()), (200, Some("web")));
}
