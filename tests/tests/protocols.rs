//! Protocols on both sides of the proxy: HTTP/2 and HTTP/1.1 over TLS chosen by ALPN, h2c with
//! prior knowledge on the cleartext listener, HTTP/2 and TLS (h1 and h2) to the upstream, a
//! rejected upstream certificate, and HTTP/1.1 Upgrade tunnels (101) versus an upgrade request
//! the origin declines (plain 200, connection stays usable).

use http::{Request, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sluice_tests::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn alpn(s: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Option<Vec<u8>> {
    s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

#[tokio::test]
async fn h2_over_tls_is_chosen_by_alpn() {
    let site = TlsSite::start("example.test").await;
    let tls = site.connect(&[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn(&tls).as_deref(), Some(&b"h2"[..]));
    let mut c = h2_over(tls).await;
    // Two requests in flight at once on the one connection.
    let (r1, r2) = tokio::join!(
        c.clone()
            .send_request(get("https://example.test/one", "example.test")),
        c.send_request(get("https://example.test/two", "example.test")),
    );
    for (resp, path) in [(r1.unwrap(), "/one"), (r2.unwrap(), "/two")] {
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), Version::HTTP_2);
        assert_eq!(header(&resp, "x-echo-uri"), Some(path));
        // The pool speaks HTTP/1.1 to the origin, with the client's authority as Host.
        assert_eq!(header(&resp, "x-echo-version"), Some("HTTP/1.1"));
        assert_eq!(echoed(&resp, "host"), Some("example.test"));
        assert_eq!(echoed(&resp, "via"), Some("2 sluice"));
        assert_eq!(echoed(&resp, "x-forwarded-proto"), Some("https"));
    }
}

#[tokio::test]
async fn http11_over_tls_when_h2_is_not_offered() {
    let site = TlsSite::start("example.test").await;
    for offer in [&[&b"http/1.1"[..]][..], &[]] {
        let tls = site.connect(offer).await;
        let expected = offer.first().map(|p| p.to_vec());
        assert_eq!(alpn(&tls), expected, "offered {offer:?}");
        let mut c = h1_over(tls).await;
        let resp = send(&mut c, get("/", "example.test")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), Version::HTTP_11);
        assert_eq!(echoed(&resp, "via"), Some("1.1 sluice"));
    }
}

/// RFC 9113 §3.2: HTTP/2 over TLS is negotiated by ALPN; prior knowledge is for cleartext
/// only. A TLS client that negotiated nothing and sends the h2 preface gets an HTTP/1.1 error,
/// not an h2 connection (the listener does not sniff for it).
#[tokio::test]
async fn no_h2_over_tls_without_alpn() {
    let site = TlsSite::start("example.test").await;
    let mut tls = site.connect(&[]).await;
    assert_eq!(alpn(&tls), None);
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the proxy kept the connection open");
    let text = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 4"),
        "want an HTTP/1.1 4xx or a close, got {text:?}"
    );
    assert!(!got.starts_with(&[0, 0]), "an h2 SETTINGS frame came back");
}

#[tokio::test]
async fn h2c_prior_knowledge_on_the_cleartext_listener() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin).start().await;
    let mut c = h2c(proxy.http).await;
    let resp = send2(&mut c, get("http://example.test/h2c?x=1", "example.test")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(header(&resp, "x-echo-uri"), Some("/h2c?x=1"));
    assert_eq!(header(&resp, "x-echo-version"), Some("HTTP/1.1"));
    assert_eq!(echoed(&resp, "host"), Some("example.test"));
    assert_eq!(echoed(&resp, "x-forwarded-proto"), Some("http"));
}

#[tokio::test]
async fn h2_upstream_pool_carries_the_client_authority() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::new()
        .pool_toml("web", &[origin.addr], "protocol = \"h2\"")
        .start()
        .await;
    let mut c = h1(proxy.http).await;
    let mut req = get("/p?q=1", "example.test:8080");
    req.headers_mut()
        .insert("te", "trailers, deflate".parse().unwrap());
    let resp = send(&mut c, req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_11);
    assert_eq!(header(&resp, "x-echo-version"), Some("HTTP/2.0"));
    assert_eq!(
        header(&resp, "x-echo-uri"),
        Some("http://example.test:8080/p?q=1")
    );
    // h2 carries the authority as :authority; no Host field alongside it.
    assert_eq!(echoed(&resp, "host"), None);
    // TE is hop-by-hop, but h2 allows exactly `trailers` (gRPC needs it) and it is kept.
    assert_eq!(echoed(&resp, "te"), Some("trailers"));
    // The response arrived over HTTP/2, so that is what the proxy records in Via.
    assert_eq!(header(&resp, "via"), Some("2 sluice"));
}

/// A TLS origin (h1 and h2 by ALPN) presenting a certificate for `origin.test` from `issuer`.
async fn tls_origin(issuer: &Certs) -> Origin {
    let leaf = issuer.issue("origin", &["origin.test"]);
    let cfg = issuer.server_config(&leaf);
    Origin::start_with_tls(|req| echo_response("tls", req), Some(cfg)).await
}

/// Pool TOML lines: `protocol`, upstream TLS trusting `trust`'s CA and verifying `server_name`.
fn tls_pool(trust: &Certs, protocol: &str, server_name: &str) -> String {
    format!(
        "protocol = \"{protocol}\"\ntls = {{ ca = \"{}\", server_name = \"{server_name}\" }}",
        trust.ca_path.display()
    )
}

#[tokio::test]
async fn upstream_tls_with_h1_and_h2() {
    let certs = Certs::new();
    let origin = tls_origin(&certs).await;
    for (protocol, version) in [("h1", "HTTP/1.1"), ("h2", "HTTP/2.0")] {
        let proxy = ProxyBuilder::new()
            .pool_toml(
                "web",
                &[origin.addr],
                &tls_pool(&certs, protocol, "origin.test"),
            )
            .start()
            .await;
        let resp = send(&mut h1(proxy.http).await, get("/secure", "example.test")).await;
        assert_eq!(resp.status(), 200, "{protocol}");
        assert_eq!(header(&resp, "x-origin"), Some("tls"));
        assert_eq!(header(&resp, "x-echo-version"), Some(version));
        let uri = header(&resp, "x-echo-uri").unwrap();
        assert!(uri.ends_with("/secure"), "{uri}");
    }
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn upstream_certificate_that_does_not_verify_is_a_502() {
    let trusted = Certs::new();
    let stranger = Certs::new();
    let untrusted_origin = tls_origin(&stranger).await;
    let trusted_origin = tls_origin(&trusted).await;
    let cases = [
        ("unknown CA", untrusted_origin.addr, "origin.test"),
        ("wrong name", trusted_origin.addr, "other.test"),
    ];
    for (why, addr, name) in cases {
        let proxy = ProxyBuilder::new()
            .pool_toml("web", &[addr], &tls_pool(&trusted, "h1", name))
            .start()
            .await;
        let resp = send(&mut h1(proxy.http).await, get("/", "example.test")).await;
        assert_eq!(resp.status(), 502, "{why}");
    }
    assert_eq!(untrusted_origin.hits() + trusted_origin.hits(), 0);
}

/// `/ws` accepts an upgrade and echoes every byte of the tunnel back; anything else is a
/// plain 200, also for upgrade requests.
async fn upgrade_origin() -> Origin {
    Origin::start(|mut req: Request<Incoming>| async move {
        if req.uri().path() != "/ws" {
            return text(200, "no upgrade here");
        }
        let seen_upgrade = req.headers().get("upgrade").cloned();
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let io = TokioIo::new(on_upgrade.await.unwrap());
            let (mut r, mut w) = tokio::io::split(io);
            tokio::io::copy(&mut r, &mut w).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut r = text(101, "");
        let h = r.headers_mut();
        h.insert("connection", "upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        if let Some(v) = seen_upgrade {
            h.insert("x-seen-upgrade", v);
        }
        r
    })
    .await
}

fn upgrade_request(path: &str) -> Request<Body> {
    Request::builder()
        .uri(path)
        .header("host", "example.test")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(full(""))
        .unwrap()
}

#[tokio::test]
async fn upgrade_becomes_a_byte_tunnel() {
    let origin = upgrade_origin().await;
    let proxy = ProxyBuilder::for_origin(&origin).start().await;
    let mut c = h1(proxy.http).await;
    let resp = send(&mut c, upgrade_request("/ws")).await;
    assert_eq!(resp.status(), 101);
    assert_eq!(header(&resp, "upgrade"), Some("websocket"));
    assert_eq!(header(&resp, "x-seen-upgrade"), Some("websocket"));
    let tunnel = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    let (mut r, mut w) = tokio::io::split(tunnel);

    // A short exchange first: the echo must come back before we send more.
    w.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    r.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");

    // Then 1 MiB written while reading concurrently, and a half-close that travels to the
    // origin and comes back as end of stream once everything is echoed.
    let payload: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let expected = payload.clone();
    let writer = async move {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let reader = async move {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(writer, reader)
    })
    .await
    .expect("tunnel echoes and closes");
    assert!(
        got == expected,
        "echoed {} bytes, not the 1 MiB sent",
        got.len()
    );
}

#[tokio::test]
async fn declined_upgrade_is_an_ordinary_response() {
    let origin = upgrade_origin().await;
    let proxy = ProxyBuilder::for_origin(&origin).start().await;
    let mut c = h1(proxy.http).await;
    let resp = send(&mut c, upgrade_request("/plain")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(body_bytes(resp).await, "no upgrade here");
    // Not tunnelled: the same connection carries ordinary requests afterwards.
    let resp = send(&mut c, get("/after", "example.test")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(body_bytes(resp).await, "no upgrade here");
    assert_eq!(origin.hits(), 2);
}
