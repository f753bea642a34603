//! Header duties of the proxy as an intermediary (RFC 9110 §7.6): hop-by-hop fields and the
//! fields `Connection` names are removed in both directions; `Via` is added (appended to an
//! existing one) to requests and responses; `X-Forwarded-For/-Proto/-Host` and `X-Request-Id`
//! are set, and a client's own are believed only from a trusted proxy; `Host` is
//! kept unless `preserve_host = false`; all of it can be switched off; end-to-end fields pass
//! untouched; and `Connection` cannot be used to strip `Content-Length` or `Host`.

use http::{HeaderMap, Request};
use hyper::body::Incoming;
use sluice_tests::*;

fn all(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn with_headers(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::builder().uri(uri).header("host", "example.test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(full("")).unwrap()
}

/// A body-less copy of `req`.
fn req_clone(req: &Request<Body>) -> Request<Body> {
    let mut copy = Request::new(full(""));
    *copy.uri_mut() = req.uri().clone();
    *copy.headers_mut() = req.headers().clone();
    copy
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "x-named-hop",
    "x-other-hop",
];

#[tokio::test]
async fn hop_by_hop_request_headers_never_reach_the_origin() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin).start().await;
    let mut c = h1(proxy.http).await;
    let req = with_headers(
        "/",
        &[
            ("connection", "keep-alive, X-Named-Hop"),
            ("connection", "x-other-hop"),
            ("keep-alive", "timeout=5, max=100"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers, deflate"),
            ("trailer", "x-checksum"),
            // No `Connection: upgrade`, so this is no upgrade request, just a stray field.
            ("upgrade", "h2c"),
            ("x-named-hop", "secret"),
            ("x-other-hop", "secret"),
            ("x-end-to-end", "kept"),
            ("content-type", "application/json; charset=utf-8"),
        ],
    );
    // Control: straight to the origin, every one of them arrives.
    let direct = send(&mut h1(origin.addr).await, req_clone(&req)).await;
    for name in HOP_BY_HOP {
        assert!(
            echoed(&direct, name).is_some(),
            "control: origin never saw {name}"
        );
    }
    let resp = send(&mut c, req).await;
    assert_eq!(resp.status(), 200);
    for name in HOP_BY_HOP {
        assert_eq!(echoed(&resp, name), None, "{name} reached the origin");
    }
    assert_eq!(echoed(&resp, "x-end-to-end"), Some("kept"));
    assert_eq!(
        echoed(&resp, "content-type"),
        Some("application/json; charset=utf-8")
    );
    body_bytes(resp).await;
    // The stray `Upgrade` did not turn the connection into anything else.
    let resp = send(&mut c, get("/again", "example.test")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(origin.hits(), 3, "control + 2 through the proxy");
}

#[tokio::test]
async fn hop_by_hop_response_headers_never_reach_the_client() {
    let origin = Origin::start(|_req: Request<Incoming>| async {
        let mut r = text(200, "hello");
        let h = r.headers_mut();
        for (k, v) in [
            ("connection", "X-Named-Hop, x-other-hop"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("upgrade", "h2c"),
            ("x-named-hop", "secret"),
            ("x-other-hop", "secret"),
            ("x-end-to-end", "kept"),
            ("content-type", "text/x-test"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
        ] {
            h.append(k, v.parse().unwrap());
        }
        r
    })
    .await;
    let proxy = ProxyBuilder::for_origin(&origin).start().await;
    // Control: straight from the origin, every one of them is sent.
    let direct = send(&mut h1(origin.addr).await, get("/", "example.test")).await;
    for name in HOP_BY_HOP {
        assert!(
            direct.headers().contains_key(name),
            "control: origin sent no {name}"
        );
    }
    let mut c = h1(proxy.http).await;
    let resp = send(&mut c, get("/", "example.test")).await;
    assert_eq!(resp.status(), 200);
    for name in HOP_BY_HOP {
        assert!(
            !resp.headers().contains_key(name),
            "{name} reached the client: {:?}",
            resp.headers()
        );
    }
    assert_eq!(resp.headers()["x-end-to-end"], "kept");
    assert_eq!(resp.headers()["content-type"], "text/x-test");
    // Set-Cookie is not a list field: its lines must stay separate.
    assert_eq!(all(resp.headers(), "set-cookie"), ["a=1", "b=2"]);
    assert_eq!(body_bytes(resp).await, "hello");
}

#[tokio::test]
async fn via_is_added_to_requests_and_responses() {
    let origin = Origin::start(|req: Request<Incoming>| async move {
        let upstream_via = req.headers().get("x-origin-via").cloned();
        let mut r = echo_response("a", req).await;
        if let Some(v) = upstream_via {
            r.headers_mut().insert("via", v);
        }
        r
    })
    .await;
    let proxy = ProxyBuilder::for_origin(&origin).start().await;
    let mut c = h1(proxy.http).await;

    let resp = send(&mut c, get("/", "example.test")).await;
    assert_eq!(echoed(&resp, "via"), Some("1.1 sluice"));
    assert_eq!(all(resp.headers(), "via"), ["1.1 sluice"]);
    body_bytes(resp).await;

    let req = with_headers(
        "/",
        &[("via", "1.0 corp-proxy"), ("x-origin-via", "1.1 cdn-edge")],
    );
    let resp = send(&mut c, req).await;
    assert_eq!(echoed(&resp, "via"), Some("1.0 corp-proxy, 1.1 sluice"));
    assert_eq!(
        all(resp.headers(), "via").join(", "),
        "1.1 cdn-edge, 1.1 sluice"
    );
}

#[tokio::test]
async fn forwarded_headers_describe_the_client_connection() {
    let site = TlsSite::start("example.test").await;

    let mut c = h1(site.proxy.http).await;
    let resp = send(&mut c, with_headers("/", &[])).await;
    assert_eq!(echoed(&resp, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(echoed(&resp, "x-forwarded-proto"), Some("http"));
    assert_eq!(echoed(&resp, "x-forwarded-host"), Some("example.test"));
    body_bytes(resp).await;

    // The client is not a trusted proxy: its claims about earlier hops, its address and
    // its request id are replaced, not believed.
    let mut req = with_headers(
        "/",
        &[
            ("x-forwarded-for", "203.0.113.7, 198.51.100.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.test"),
            ("forwarded", "for=203.0.113.7"),
            ("x-real-ip", "203.0.113.7"),
            ("x-request-id", "chosen-by-client"),
        ],
    );
    req.headers_mut()
        .insert("host", "example.test:8080".parse().unwrap());
    let resp = send(&mut c, req).await;
    assert_eq!(echoed(&resp, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(echoed(&resp, "x-forwarded-proto"), Some("http"));
    assert_eq!(echoed(&resp, "x-forwarded-host"), Some("example.test:8080"));
    assert_eq!(echoed(&resp, "forwarded"), None);
    assert_eq!(echoed(&resp, "x-real-ip"), None);
    let id = echoed(&resp, "x-request-id").unwrap();
    assert!(id != "chosen-by-client" && id.len() == 36, "{id}");

    let mut c = h1_over(site.connect(&[b"http/1.1"]).await).await;
    let resp = send(&mut c, with_headers("/", &[])).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(echoed(&resp, "x-forwarded-proto"), Some("https"));
    assert_eq!(echoed(&resp, "x-forwarded-for"), Some("127.0.0.1"));
}

/// A peer in `trusted_proxies` is another proxy of ours: its chain is extended and its
/// claims about proto, host, `Forwarded` and the request id stand; with `client_ip =
/// "forwarded"` the policy sees the rightmost untrusted address of the chain.
#[tokio::test]
async fn a_trusted_proxy_keeps_its_forwarding_fields() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .toml("[proxy]\ntrusted_proxies = [\"127.0.0.0/8\", \"::1\"]")
        .start()
        .await;
    let mut c = h1(proxy.http).await;
    let req = with_headers(
        "/",
        &[
            ("x-forwarded-for", "203.0.113.7, 198.51.100.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "shop.example"),
            ("forwarded", "for=203.0.113.7"),
            ("x-request-id", "from-the-edge"),
        ],
    );
    let resp = send(&mut c, req).await;
    assert_eq!(
        echoed(&resp, "x-forwarded-for"),
        Some("203.0.113.7, 198.51.100.1, 127.0.0.1")
    );
    assert_eq!(echoed(&resp, "x-forwarded-proto"), Some("https"));
    assert_eq!(echoed(&resp, "x-forwarded-host"), Some("shop.example"));
    assert_eq!(echoed(&resp, "forwarded"), Some("for=203.0.113.7"));
    assert_eq!(echoed(&resp, "x-request-id"), Some("from-the-edge"));
    body_bytes(resp).await;
    // Without claims, ours are set; an id is generated.
    let resp = send(&mut c, with_headers("/", &[])).await;
    assert_eq!(echoed(&resp, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(echoed(&resp, "x-forwarded-proto"), Some("http"));
    assert_eq!(echoed(&resp, "x-request-id").map(str::len), Some(36));
}

#[tokio::test]
async fn the_policy_sees_the_forwarded_client_only_from_a_trusted_peer() {
    let origin = Origin::echo("a").await;
    let client_ip = |trusted: &str| {
        let toml = format!("[proxy]\ntrusted_proxies = [{trusted}]\nclient_ip = \"forwarded\"");
        let origin = &origin;
        async move {
            let proxy = ProxyBuilder::for_origin(origin)
                .policy(guests::PROBE, "", "")
                .toml(&toml)
                .start()
                .await;
            let mut c = h1(proxy.http).await;
            let req = with_headers("/echo", &[("x-forwarded-for", "203.0.113.7, 10.0.0.2")]);
            let resp = send(&mut c, req).await;
            assert_eq!(resp.status(), 200);
            let json: serde_json::Value = serde_json::from_slice(&body_bytes(resp).await).unwrap();
            json["client_ip"].as_str().unwrap().to_string()
        }
    };
    // The peer (127.0.0.1) and 10.0.0.2 are trusted: the client is 203.0.113.7.
    assert_eq!(
        client_ip("\"127.0.0.1\", \"10.0.0.0/8\"").await,
        "203.0.113.7"
    );
    // Only the peer is trusted: 10.0.0.2 is the client.
    assert_eq!(client_ip("\"127.0.0.1/32\"").await, "10.0.0.2");
    // The peer is not trusted: its chain is not believed.
    assert_eq!(client_ip("\"192.0.2.0/24\"").await, "127.0.0.1");
}

#[tokio::test]
async fn host_is_kept_unless_preserve_host_is_off() {
    let origin = Origin::echo("a").await;
    let keep = ProxyBuilder::for_origin(&origin).start().await;
    let resp = send(&mut h1(keep.http).await, get("/", "example.test:8080")).await;
    assert_eq!(echoed(&resp, "host"), Some("example.test:8080"));

    let rewrite = ProxyBuilder::for_origin(&origin)
        .toml("[proxy]\npreserve_host = false")
        .start()
        .await;
    let resp = send(&mut h1(rewrite.http).await, get("/", "example.test:8080")).await;
    assert_eq!(
        echoed(&resp, "host"),
        Some(origin.addr.to_string().as_str())
    );
    // The client's host is still reported, just not as Host.
    assert_eq!(echoed(&resp, "x-forwarded-host"), Some("example.test:8080"));
}

#[tokio::test]
async fn via_and_forwarded_headers_can_be_turned_off() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .toml("[proxy]\nvia = false\nforwarded_headers = false")
        .start()
        .await;
    let mut c = h1(proxy.http).await;
    let resp = send(&mut c, get("/", "example.test")).await;
    assert_eq!(resp.status(), 200);
    for name in [
        "via",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
    ] {
        assert_eq!(echoed(&resp, name), None, "{name} was added");
    }
    assert!(!resp.headers().contains_key("via"));
    body_bytes(resp).await;

    // Switched off means untouched: what the client sent passes as it was.
    let req = with_headers("/", &[("x-forwarded-for", "203.0.113.7"), ("via", "1.0 a")]);
    let resp = send(&mut c, req).await;
    assert_eq!(echoed(&resp, "x-forwarded-for"), Some("203.0.113.7"));
    assert_eq!(echoed(&resp, "via"), Some("1.0 a"));
}

#[tokio::test]
async fn connection_cannot_strip_framing_or_host() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin).start().await;
    let resp = raw(
        proxy.http,
        b"POST /p HTTP/1.1\r\nHost: example.test\r\nConnection: close, Content-Length, Host\r\n\
          Content-Length: 5\r\n\r\nhello",
        10,
    )
    .await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    let head = raw_head_lower(&resp);
    assert!(head.contains("x-echo-h-content-length: 5\r\n"), "{resp}");
    assert!(head.contains("x-echo-h-host: example.test\r\n"), "{resp}");
    assert!(!head.contains("x-echo-h-connection"), "{resp}");
    // The origin received exactly the five body bytes.
    assert!(resp.ends_with("\r\n\r\na 5"), "{resp}");
}

#[tokio::test]
async fn the_request_target_authority_wins_over_host() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin).start().await;
    // RFC 9112 §3.2.2: with an absolute-form target, Host is ignored and a proxy generates
    // a new one from the target, so the origin and the proxy agree on the authority.
    let resp = raw(
        proxy.http,
        b"GET http://target.test/x HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
        10,
    )
    .await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    let head = raw_head_lower(&resp);
    assert!(head.contains("x-echo-h-host: target.test\r\n"), "{resp}");
    assert!(
        head.contains("x-echo-h-x-forwarded-host: target.test\r\n"),
        "{resp}"
    );
    assert!(head.contains("x-echo-uri: /x\r\n"), "{resp}");

    // The same for h2, whose :authority is the target's authority.
    let mut c = h2c(proxy.http).await;
    let resp = send2(&mut c, get("http://target.test/x", "other.test")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(echoed(&resp, "host"), Some("target.test"));
    assert_eq!(echoed(&resp, "x-forwarded-host"), Some("target.test"));
}
