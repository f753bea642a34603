//! Request forwarding: methods (including unknown ones), paths, queries and bodies arrive at the
//! origin intact; HEAD keeps its Content-Length without a body; binary and chunked bodies are
//! byte-exact; bodiless statuses (204, 304) pass through without breaking the connection; and
//! requests on one kept-alive client connection reuse one upstream connection.

use bytes::Bytes;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use sluice_tests::*;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// An origin that answers every request with its own body, and reports the method, URI,
/// body framing and length it saw in `x-echo-*` headers.
async fn mirror() -> Origin {
    Origin::start(|req: Request<Incoming>| async move {
        let (parts, body) = req.into_parts();
        let body = http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes();
        let h = |name: &str| {
            parts
                .headers
                .get(name)
                .map_or("-".to_string(), |v| v.to_str().unwrap().to_string())
        };
        Response::builder()
            .header("x-echo-method", parts.method.as_str())
            .header("x-echo-uri", parts.uri.to_string())
            .header("x-echo-te", h("transfer-encoding"))
            .header("x-echo-cl", h("content-length"))
            .header("x-echo-len", body.len())
            .body(full(body))
            .unwrap()
    })
    .await
}

fn request(method: &str, uri: &str, body: impl Into<Bytes>) -> Request<Body> {
    Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(uri)
        .header("host", "example.test")
        .body(full(body))
        .unwrap()
}

#[tokio::test]
async fn methods_paths_queries_and_bodies_arrive_intact() {
    let origin = mirror().await;
    let proxy = ProxyBuilder::for_origin(&origin).start().await;
    let mut c = h1(proxy.http).await;
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE"] {
        let uri = format!("/items/{method}/x%2Fy?q=1&r=a%20b&empty=&q=2");
        let payload = format!("payload for {method}");
        let resp = send(&mut c, request(method, &uri, payload.clone())).await;
        assert_eq!(resp.status(), 200, "{method}");
        assert_eq!(resp.headers()["x-echo-method"], method);
        assert_eq!(resp.headers()["x-echo-uri"], uri.as_str());
        assert_eq!(resp.headers()["x-echo-cl"], payload.len().to_string());
        assert_eq!(body_bytes(resp).await, payload, "{method}");
    }
    assert_eq!(origin.hits(), 7);
}

#[tokio::test]
async fn head_keeps_content_length_without_a_body() {
    let origin = Origin::start(|req: Request<Incoming>| async move {
        let mut r = text(200, vec![b'x'; 1234]);
        r.headers_mut()
            .insert("x-echo-method", req.method().as_str().parse().unwrap());
        r.headers_mut()
            .insert("content-length", "1234".parse().unwrap());
        r
    })
    .await;
    let proxy = ProxyBuilder::for_origin(&origin).start().await;

    let mut c = h1(proxy.http).await;
    let resp = send(&mut c, request("HEAD", "/doc", "")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-echo-method"], "HEAD");
    assert_eq!(resp.headers()["content-length"], "1234");
    assert_eq!(body_bytes(resp).await.len(), 0);
    // The HEAD response left the connection's framing intact: a GET on it gets the body.
    let resp = send(&mut c, request("GET", "/doc", "")).await;
    assert_eq!(resp.headers()["content-length"], "1234");
    assert_eq!(body_bytes(resp).await.len(), 1234);

    let mut c2 = h2c(proxy.http).await;
    let resp = send2(&mut c2, request("HEAD", "http://example.test/doc", "")).await;
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.headers()["content-length"], "1234");
    assert_eq!(body_bytes(resp).await.len(), 0);
    assert_eq!(origin.hits(), 3);
}

/// 1 MiB + 7 bytes in which every byte value occurs, in an order that catches shifted or
/// dropped bytes.
fn binary_payload() -> Bytes {
    (0..(1 << 20) + 7u32)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test]
async fn binary_bodies_are_byte_exact_both_ways() {
    let origin = mirror().await;
    let proxy = ProxyBuilder::for_origin(&origin).start().await;
    let payload = binary_payload();

    let mut c = h1(proxy.http).await;
    let resp = send(&mut c, request("POST", "/bin", payload.clone())).await;
    assert_eq!(resp.headers()["x-echo-len"], payload.len().to_string());
    let got = body_bytes(resp).await;
    assert!(got == payload, "h1 body differs (got {} bytes)", got.len());

    let mut c2 = h2c(proxy.http).await;
    let resp = send2(
        &mut c2,
        request("PUT", "http://example.test/bin", payload.clone()),
    )
    .await;
    let got = body_bytes(resp).await;
    assert!(got == payload, "h2 body differs (got {} bytes)", got.len());
}

#[tokio::test]
async fn chunked_request_bodies_are_reassembled_exactly() {
    let origin = mirror().await;
    let proxy = ProxyBuilder::for_origin(&origin).start().await;
    let resp = raw(
        proxy.http,
        b"POST /upload?via=chunks HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\n\r\n5;ext=1\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\n\r\n",
        10,
    )
    .await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    let head = raw_head_lower(&resp);
    assert!(head.contains("x-echo-method: post\r\n"), "{resp}");
    assert!(
        head.contains("x-echo-uri: /upload?via=chunks\r\n"),
        "{resp}"
    );
    // The size was unknown up front, so the proxy streamed it on as chunked too.
    assert!(head.contains("x-echo-te: chunked\r\n"), "{resp}");
    assert!(head.contains("x-echo-len: 12\r\n"), "{resp}");
    assert!(resp.ends_with("\r\n\r\nhello, world"), "{resp}");
}

#[tokio::test]
async fn no_content_and_not_modified_pass_through() {
    let origin = Origin::start(|req: Request<Incoming>| async move {
        match req.uri().path() {
            "/204" => {
                let mut r = text(204, "");
                r.headers_mut()
                    .insert("x-kind", "no-content".parse().unwrap());
                r
            }
            "/304" => {
                let mut r = text(304, "");
                r.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
                r
            }
            _ => text(200, "fine"),
        }
    })
    .await;
    let proxy = ProxyBuilder::for_origin(&origin).start().await;
    let mut c = h1(proxy.http).await;

    let resp = send(&mut c, get("/204", "example.test")).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["x-kind"], "no-content");
    assert!(!resp.headers().contains_key("transfer-encoding"));
    assert_eq!(body_bytes(resp).await.len(), 0);

    let mut cond = get("/304", "example.test");
    cond.headers_mut()
        .insert("if-none-match", "\"v1\"".parse().unwrap());
    let resp = send(&mut c, cond).await;
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()["etag"], "\"v1\"");
    assert_eq!(body_bytes(resp).await.len(), 0);

    // Neither bodiless response desynchronised the connection.
    let resp = send(&mut c, get("/ok", "example.test")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(body_bytes(resp).await, "fine");
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn keep_alive_reuses_client_and_upstream_connections() {
    let ports = Arc::new(Mutex::new(Vec::new()));
    let seen = ports.clone();
    let origin = Origin::start(move |req: Request<Incoming>| {
        let Peer(peer) = *req.extensions().get::<Peer>().unwrap();
        seen.lock().unwrap().push(peer.port());
        async move { text(200, req.uri().path().to_string()) }
    })
    .await;
    let proxy = ProxyBuilder::for_origin(&origin).start().await;

    // One client connection: each request is only sent after the previous response is read.
    let mut c = h1(proxy.http).await;
    for i in 0..5 {
        let path = format!("/r{i}");
        let resp = send(&mut c, get(&path, "example.test")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(body_bytes(resp).await, path);
    }
    assert_eq!(origin.hits(), 5);
    let ports = ports.lock().unwrap().clone();
    let distinct: HashSet<u16> = ports.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        1,
        "upstream connection was not reused; origin saw ports {ports:?}"
    );
}
