//! Error paths over real sockets: what a client sees when the upstream is down, silent or
//! breaks mid-response; how malformed, ambiguous or oversized requests are answered (status
//! and whether the connection is closed); that the origin is not contacted for requests
//! rejected up front; that the proxy keeps serving afterwards; keep-alive reuse; and the
//! connection limit's 503.

use sluice_tests::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

/// An address with nothing listening: bind an ephemeral port and release it.
async fn dead_address() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// A normal request on a new connection still works ("the connection stays sane").
async fn assert_serves(proxy: &TestProxy) {
    let mut c = h1(proxy.http).await;
    let resp = guarded(
        "follow-up request",
        c.send_request(get("/ok", "example.test")),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-origin"], "a");
}

#[tokio::test]
async fn upstream_down_is_502_without_details() {
    let dead = dead_address().await;
    let proxy = ProxyBuilder::new().pool("web", &[dead]).start().await;
    let mut c = h1(proxy.http).await;
    let resp = guarded("502", c.send_request(get("/", "example.test")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain"), "content-type {ct}");
    let headers: Vec<String> = resp
        .headers()
        .iter()
        .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    let body = String::from_utf8(body_bytes(resp).await.to_vec()).unwrap();
    assert!(body.len() < 64, "short body: {body:?}");
    assert!(body.contains("502"), "{body:?}");
    let port = dead.port().to_string();
    for leak in [
        "127.0.0.1",
        port.as_str(),
        "refused",
        "rror",
        "connect",
        "os ",
    ] {
        assert!(!body.contains(leak), "body leaks {leak:?}: {body:?}");
        for h in &headers {
            assert!(!h.contains(leak), "header leaks {leak:?}: {h}");
        }
    }
}

#[tokio::test]
async fn silent_upstream_is_504_after_upstream_response_timeout() {
    let origin = Origin::start(|_req| std::future::pending()).await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .toml("[timeouts]\nupstream_response = \"300ms\"")
        .start()
        .await;
    let mut c = h1(proxy.http).await;
    let start = Instant::now();
    let resp = guarded("504", c.send_request(get("/", "example.test")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert!(
        start.elapsed() >= Duration::from_millis(290),
        "answered after {:?}, before the timeout",
        start.elapsed()
    );
    assert_eq!(origin.hits(), 1);
    let body = body_bytes(resp).await;
    assert_eq!(body, "504 Gateway Timeout\n");
}

/// A raw origin that reads a request head, sends the start of a response head and then closes
/// the connection (with a reset when `reset`).
async fn breaking_origin(reset: bool) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: te")
                .await
                .unwrap();
            s.flush().await.unwrap();
            if reset {
                s.set_zero_linger().unwrap();
            }
            drop(s);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn upstream_closing_mid_headers_is_502() {
    for reset in [false, true] {
        let (addr, task) = breaking_origin(reset).await;
        let origin = Origin::echo("a").await;
        let proxy = ProxyBuilder::new()
            .pool("web", &[addr])
            .pool("ok", &[origin.addr])
            .toml("[proxy]\ndefault_pool = \"web\"")
            .start()
            .await;
        let mut c = h1(proxy.http).await;
        let resp = guarded("502", c.send_request(get("/", "example.test")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 502, "reset={reset}");
        assert_eq!(body_bytes(resp).await, "502 Bad Gateway\n");
        // The client connection is unaffected by the upstream's failure.
        let resp = guarded("second", c.send_request(get("/", "example.test")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 502, "reset={reset}");
        task.abort();
    }
}

/// A raw origin whose every response carries both `Content-Length: 3` and `Transfer-Encoding:
/// chunked` (body `abcdefg` by chunked framing), followed on the same connection by a second,
/// unrequested response. Counts the connections it accepts.
async fn ambiguous_origin() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    raw_origin(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\
        Transfer-Encoding: chunked\r\n\r\n7\r\nabcdefg\r\n0\r\n\r\n\
        HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
    )
    .await
}

/// RFC 9112 §6.3: a response with both `Transfer-Encoding` and `Content-Length` is framed by
/// the former, forwarded without the latter, and its connection is not used again, so the
/// bytes after it (here a second response) never answer another request.
#[tokio::test]
async fn upstream_content_length_with_transfer_encoding_is_dropped_and_not_reused() {
    let (addr, accepted, task) = ambiguous_origin().await;
    let proxy = ProxyBuilder::new()
        .pool("web", &[addr])
        .toml("[proxy]\ndefault_pool = \"web\"")
        .start()
        .await;
    let mut c = h1(proxy.http).await;
    let mut h2 = h2c(proxy.http).await;
    for i in 0..3 {
        let resp = guarded("h1", c.send_request(get("/a", "example.test")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        assert!(header(&resp, "content-length").is_none(), "request {i}");
        assert_eq!(body_bytes(resp).await, "abcdefg", "request {i}");
        let resp = guarded("h2", h2.send_request(get("/b", "example.test")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        assert!(header(&resp, "content-length").is_none(), "request {i}");
        assert_eq!(body_bytes(resp).await, "abcdefg", "request {i}");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        6,
        "one connection per response"
    );
    task.abort();
}

async fn proxy_with_echo(extra: &str) -> (Origin, TestProxy) {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin).toml(extra).start().await;
    (origin, proxy)
}

#[tokio::test]
async fn http11_without_host_is_400() {
    let (origin, proxy) = proxy_with_echo("").await;
    let mut s = TcpStream::connect(proxy.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let resp = raw_read_response(&mut s, 5).await;
    assert_eq!(raw_status(&resp), 400, "{resp}");
    assert!(
        raw_head_lower(&resp).contains("content-type: text/plain"),
        "{resp}"
    );
    assert_eq!(raw_body(&resp), "400 Bad Request\n");
    assert_eq!(origin.hits(), 0);
    // The framing was fine, so the connection is kept and serves the next request.
    let resp = raw_get(&mut s, "/next").await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(origin.hits(), 1);
    assert_serves(&proxy).await;
}

#[tokio::test]
async fn two_host_headers_is_400() {
    let (origin, proxy) = proxy_with_echo("").await;
    let resp = raw(
        proxy.http,
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n",
        5,
    )
    .await;
    assert_eq!(raw_status(&resp), 400, "{resp}");
    assert_eq!(origin.hits(), 0);
    assert_serves(&proxy).await;
}

/// RFC 9112 §6.1: a server MAY reject a request with both `Content-Length` and
/// `Transfer-Encoding`, or process it by `Transfer-Encoding` alone; either way it MUST close the
/// connection afterwards. hyper (1.12) does the latter before the proxy sees the request: it
/// drops `Content-Length` and turns keep-alive off. So the proxy's own "both headers -> 400"
/// check cannot fire over HTTP/1.1; what matters, and what is asserted here, is that the
/// message is framed by `Transfer-Encoding`, that no `Content-Length` reaches the origin, that
/// nothing smuggled after the body is executed, and that the connection is closed.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_framed_by_te_and_closes() {
    let (origin, proxy) = proxy_with_echo("").await;
    for order in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
    ] {
        let hits = origin.hits();
        let req = format!(
            "POST /upload HTTP/1.1\r\nHost: example.test\r\n{order}\r\n\
             0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: example.test\r\n\r\n"
        );
        // `raw` asserts that the server closes the connection.
        let resp = raw(proxy.http, req.as_bytes(), 5).await;
        assert_eq!(raw_status(&resp), 200, "{order:?}: {resp}");
        let head = raw_head_lower(&resp);
        assert!(head.contains("x-echo-uri: /upload"), "{resp}");
        assert!(!head.contains("x-echo-h-content-length"), "{resp}");
        assert_eq!(raw_body(&resp), "a 0", "{order:?}: exactly one response");
        assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{resp}");
        assert_eq!(origin.hits(), hits + 1, "the smuggled request never ran");
    }
    assert_serves(&proxy).await;
}

/// Two different `Content-Length` values are rejected by hyper's parser with 400 and a close.
#[tokio::test]
async fn differing_content_lengths_is_400_and_closes() {
    let (origin, proxy) = proxy_with_echo("").await;
    let resp = raw(
        proxy.http,
        b"POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        5,
    )
    .await;
    assert_eq!(raw_status(&resp), 400, "{resp}");
    assert_eq!(origin.hits(), 0);
    assert_serves(&proxy).await;
}

#[tokio::test]
async fn garbage_request_line_is_400_and_closes() {
    let (origin, proxy) = proxy_with_echo("").await;
    for garbage in [
        &b"HELLO\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let resp = raw(proxy.http, garbage, 5).await;
        assert_eq!(
            raw_status(&resp),
            400,
            "{:?}: {resp}",
            String::from_utf8_lossy(garbage)
        );
    }
    assert_eq!(origin.hits(), 0);
    assert_serves(&proxy).await;
}

#[tokio::test]
async fn content_length_over_limit_is_413_without_contacting_origin() {
    let (origin, proxy) = proxy_with_echo("[limits]\nmax_request_body = \"1KiB\"").await;
    let resp = raw(
        proxy.http,
        b"POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: 1025\r\n\r\n",
        5,
    )
    .await;
    assert_eq!(raw_status(&resp), 413, "{resp}");
    assert!(
        raw_head_lower(&resp).contains("connection: close"),
        "{resp}"
    );
    assert_eq!(raw_body(&resp), "413 Payload Too Large\n");
    assert_eq!(origin.hits(), 0);
    // Exactly at the limit is fine.
    let mut c = h1(proxy.http).await;
    let req = http::Request::post("/")
        .header("host", "example.test")
        .body(full(vec![b'x'; 1024]))
        .unwrap();
    let resp = guarded("at limit", c.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body_bytes(resp).await, "a 1024");
}

/// A chunked upload has no length up front; the limit is enforced as the bytes stream through.
/// The request head has already gone upstream by then, so the origin may have been contacted;
/// the client still gets a 413 and the connection is closed.
#[tokio::test]
async fn chunked_body_growing_past_limit_is_413_and_closes() {
    let (origin, proxy) = proxy_with_echo("[limits]\nmax_request_body = \"1KiB\"").await;
    let mut req =
        b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"200\r\n");
        req.extend_from_slice(&[b'x'; 0x200]);
        req.extend_from_slice(b"\r\n");
    }
    // 1536 bytes sent, no last chunk: the proxy must not wait for the rest.
    let resp = raw(proxy.http, &req, 5).await;
    assert_eq!(raw_status(&resp), 413, "{resp}");
    assert!(
        raw_head_lower(&resp).contains("connection: close"),
        "{resp}"
    );
    assert!(origin.hits() <= 1);
    // A chunked body within the limit goes through.
    let resp = raw(
        proxy.http,
        b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
        5,
    )
    .await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(raw_body(&resp), "a 5");
    assert_serves(&proxy).await;
}

/// The same while the client is still uploading (48 MiB, reading concurrently): it gets the
/// 413, and the rest of the upload is read and discarded only up to the lingering close's
/// byte bound (32 MiB); then the connection is closed under it.
#[tokio::test]
async fn chunked_upload_still_streaming_gets_413_then_close() {
    let (_origin, proxy) = proxy_with_echo("[limits]\nmax_request_body = \"1KiB\"").await;
    let s = TcpStream::connect(proxy.http).await.unwrap();
    let (mut r, mut w) = s.into_split();
    const CHUNKS: usize = 12 * 1024;
    let writer = tokio::spawn(async move {
        w.write_all(b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let chunk = format!("1000\r\n{}\r\n", "x".repeat(0x1000));
        for sent in 0..CHUNKS {
            if w.write_all(chunk.as_bytes()).await.is_err() {
                return sent;
            }
        }
        CHUNKS
    });
    let mut out = Vec::new();
    let _ = guarded("413 then close", r.read_to_end(&mut out)).await;
    let resp = String::from_utf8_lossy(&out);
    assert_eq!(raw_status(&resp), 413, "{resp}");
    let sent = guarded("upload stops", writer).await.unwrap();
    assert!(sent < CHUNKS, "the proxy read the whole oversized upload");
    assert_serves(&proxy).await;
}

/// Writes `head` and then `body_len` bytes of body as a simple client would (all of it, then
/// read), ignoring write errors, and returns what it reads back until the close. Without a
/// lingering close the proxy's close with unread bytes resets the connection, and the reset
/// destroys the error response before the client reads it.
async fn upload_then_read(addr: SocketAddr, head: &[u8], body_len: usize) -> (String, usize) {
    upload_then_read_over(TcpStream::connect(addr).await.unwrap(), head, body_len).await
}

async fn upload_then_read_over<S>(mut s: S, head: &[u8], body_len: usize) -> (String, usize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut sent = 0;
    if s.write_all(head).await.is_ok() {
        let chunk = vec![b'x'; 64 * 1024];
        while sent < body_len {
            let n = chunk.len().min(body_len - sent);
            if s.write_all(&chunk[..n]).await.is_err() {
                break;
            }
            sent += n;
        }
    }
    let mut out = Vec::new();
    let read = guarded("response after upload", s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "reading the answer failed after {sent} of {body_len} body bytes: {:?}; got {:?}",
        read.err(),
        String::from_utf8_lossy(&out)
    );
    (String::from_utf8_lossy(&out).into_owned(), sent)
}

/// Lingering close (nginx's `lingering_close`): after answering 413 to a body it will not
/// read, the proxy reads and discards the rest of the upload before closing, so a client that
/// writes its whole request before reading still gets the 413 instead of a reset.
#[tokio::test]
async fn oversized_upload_written_before_reading_still_gets_413() {
    let (origin, proxy) = proxy_with_echo("[limits]\nmax_request_body = \"1KiB\"").await;
    // Far more than the socket buffers hold, so the close comes while the client still writes.
    let len = 12 << 20;
    let head = format!("POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: {len}\r\n\r\n");
    let (resp, sent) = upload_then_read(proxy.http, head.as_bytes(), len).await;
    assert_eq!(raw_status(&resp), 413, "{resp}");
    assert_eq!(
        sent, len,
        "the upload was cut before the client could read the 413"
    );
    assert_eq!(origin.hits(), 0);
    // Chunked: the limit is found while streaming, the same linger follows.
    let head =
        b"POST / HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\nC00000\r\n";
    let (resp, sent) = upload_then_read(proxy.http, head, len).await;
    assert_eq!(raw_status(&resp), 413, "{resp}");
    assert_eq!(sent, len, "the chunked upload was cut");
    assert_serves(&proxy).await;
}

/// The same over TLS (the discarded bytes are TLS records, read under the TLS layer).
#[tokio::test]
async fn oversized_upload_over_tls_still_gets_413() {
    let certs = Certs::new();
    let leaf = certs.issue("site", &["example.test"]);
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .tls(&[&leaf])
        .toml("[limits]\nmax_request_body = \"1KiB\"")
        .start()
        .await;
    let tls = tls_connect(
        proxy.https.unwrap(),
        "example.test",
        certs.client_config(&[b"http/1.1"]),
    )
    .await
    .unwrap();
    let len = 12 << 20;
    let head = format!("POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: {len}\r\n\r\n");
    let (resp, sent) = upload_then_read_over(tls, head.as_bytes(), len).await;
    assert_eq!(raw_status(&resp), 413, "{resp}");
    assert_eq!(
        sent, len,
        "the upload was cut before the client could read the 413"
    );
    assert_eq!(origin.hits(), 0);
}

/// The same for a request head over the limit: hyper answers 431 with the rest of the head
/// and a body unread.
#[tokio::test]
async fn oversized_head_followed_by_a_body_still_gets_431() {
    let (origin, proxy) = proxy_with_echo("[limits]\nmax_request_header_size = \"16KiB\"").await;
    let big = "v".repeat(20 * 1024);
    let len = 12 << 20;
    let head = format!(
        "POST / HTTP/1.1\r\nHost: example.test\r\nX-Big: {big}\r\nContent-Length: {len}\r\n\r\n"
    );
    let (resp, sent) = upload_then_read(proxy.http, head.as_bytes(), len).await;
    assert_eq!(raw_status(&resp), 431, "{resp}");
    assert_eq!(
        sent, len,
        "the upload was cut before the client could read the 431"
    );
    assert_eq!(origin.hits(), 0);
    assert_serves(&proxy).await;
}

/// Lingering is bounded: a client that never stops sending is cut off after
/// `timeouts.lingering`.
#[tokio::test]
async fn lingering_is_bounded_in_time() {
    let (_origin, proxy) =
        proxy_with_echo("[limits]\nmax_request_body = \"1KiB\"\n[timeouts]\nlingering = \"300ms\"")
            .await;
    let s = TcpStream::connect(proxy.http).await.unwrap();
    let (mut r, mut w) = s.into_split();
    // Declares far more than is ever sent and keeps trickling, so only the bound ends it.
    let writer = tokio::spawn(async move {
        w.write_all(
            b"POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: 100000000000\r\n\r\n",
        )
        .await
        .unwrap();
        let mut interval = tokio::time::interval(Duration::from_millis(20));
        for _ in 0..1500 {
            interval.tick().await;
            if w.write_all(&[b'x'; 512]).await.is_err() {
                return true;
            }
        }
        false
    });
    let mut out = Vec::new();
    let _ = guarded("413 then close", r.read_to_end(&mut out)).await;
    assert_eq!(raw_status(&String::from_utf8_lossy(&out)), 413);
    assert!(guarded("cut off", writer).await.unwrap(), "never cut off");
}

#[tokio::test]
async fn header_block_over_limit_is_431() {
    let (origin, proxy) = proxy_with_echo("[limits]\nmax_request_header_size = \"16KiB\"").await;
    let big = "v".repeat(20 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: example.test\r\nX-Big: {big}\r\n\r\n");
    let resp = raw(proxy.http, req.as_bytes(), 5).await;
    assert_eq!(raw_status(&resp), 431, "{resp}");
    assert_eq!(origin.hits(), 0);
    // Just under the limit is accepted.
    let ok = "v".repeat(15 * 1024);
    let req =
        format!("GET / HTTP/1.1\r\nHost: example.test\r\nX-Big: {ok}\r\nConnection: close\r\n\r\n");
    let resp = raw(proxy.http, req.as_bytes(), 5).await;
    assert_eq!(raw_status(&resp), 200);
    assert_serves(&proxy).await;
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let (origin, proxy) = proxy_with_echo("").await;
    let mut s = TcpStream::connect(proxy.http).await.unwrap();
    for i in 0..3 {
        let resp = raw_get(&mut s, &format!("/r{i}")).await;
        assert_eq!(raw_status(&resp), 200, "{resp}");
        assert!(raw_head_lower(&resp).contains(&format!("x-echo-uri: /r{i}")));
    }
    assert_eq!(origin.hits(), 3);
    // And with hyper's client, on one connection.
    let mut c = h1(proxy.http).await;
    for _ in 0..2 {
        let resp = guarded("keep-alive", c.send_request(get("/", "example.test")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        body_bytes(resp).await;
    }
}

/// `max_connections = 2`: with two connections held open by requests parked at the origin, a
/// third cleartext connection is answered 503 and closed without reaching the origin, and a
/// TLS one is closed before the handshake.
#[tokio::test]
async fn connection_limit_answers_503() {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(Semaphore::new(0));
    let gate = release.clone();
    let origin = Origin::start(move |_req| {
        let arrived = arrived_tx.clone();
        let gate = gate.clone();
        async move {
            arrived.send(()).unwrap();
            gate.acquire().await.unwrap().forget();
            text(200, "released")
        }
    })
    .await;
    let certs = Certs::new();
    let leaf = certs.issue("leaf", &["localhost"]);
    let proxy = ProxyBuilder::for_origin(&origin)
        .tls(&[&leaf])
        .toml("[limits]\nmax_connections = 2")
        .start()
        .await;

    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = h1(proxy.http).await;
        held.push(tokio::spawn(async move {
            let resp = c.send_request(get("/", "example.test")).await.unwrap();
            (resp.status(), body_bytes(resp).await)
        }));
    }
    for _ in 0..2 {
        guarded("request parked", arrived.recv()).await.unwrap();
    }

    let resp = raw(
        proxy.http,
        b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n",
        5,
    )
    .await;
    assert_eq!(raw_status(&resp), 503, "{resp}");
    assert!(raw_head_lower(&resp).contains("retry-after"), "{resp}");
    // The limit spans listeners; over TLS the connection is closed without a handshake.
    let tls = guarded(
        "TLS over the limit",
        tls_connect(
            proxy.https.unwrap(),
            "localhost",
            certs.client_config(&[b"http/1.1"]),
        ),
    )
    .await;
    assert!(tls.is_err(), "TLS handshake succeeded over the limit");
    assert_eq!(origin.hits(), 2);

    release.add_permits(2);
    for h in held {
        let (status, body) = guarded("held request", h).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, "released");
    }
}

/// An upstream that sends its head and a first chunk and then goes silent must not hold the
/// client forever: after `upstream_response` without body bytes the proxy aborts the response
/// (the client sees the first chunk, then a truncated body), and the proxy keeps serving.
#[tokio::test]
async fn stalled_upstream_body_is_aborted_after_the_response_timeout() {
    use http_body_util::BodyExt;
    // Holds the origin's body sender open (never finishing the body) until the test ends.
    let (keep_tx, mut keep_rx) = mpsc::unbounded_channel();
    let origin = Origin::start(move |req| {
        let keep_tx = keep_tx.clone();
        async move {
            if req.uri().path() == "/ok" {
                return text(200, "fine");
            }
            let (tx, rx) =
                mpsc::channel::<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>(1);
            tx.send(Ok(hyper::body::Frame::data(bytes::Bytes::from_static(
                b"first",
            ))))
            .await
            .unwrap();
            keep_tx.send(tx).unwrap();
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|f| (f, rx))
            });
            let body = http_body_util::StreamBody::new(stream)
                .map_err(|e| e.into())
                .boxed();
            let mut r = http::Response::new(body);
            r.headers_mut()
                .insert("content-length", "100".parse().unwrap());
            r
        }
    })
    .await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .toml("[timeouts]\nupstream_response = \"300ms\"")
        .start()
        .await;

    let started = Instant::now();
    let mut c = h1(proxy.http).await;
    let resp = send(&mut c, get("/stall", "example.test")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = guarded("first chunk", body.frame()).await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "first");
    let rest = guarded("the stalled body to be aborted", body.collect()).await;
    assert!(
        rest.is_err(),
        "a stalled body must end in an error, got {rest:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let _still_open = keep_rx.recv().await.unwrap();

    let resp = send(&mut h1(proxy.http).await, get("/ok", "example.test")).await;
    assert_eq!(resp.status(), 200);
}

/// `Expect: 100-continue`: the client holds its body until the proxy says `100 Continue`,
/// which it does when the body is first read (on its way upstream); a request refused up
/// front gets its final answer instead, and the body is never asked for.
#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let (origin, proxy) = proxy_with_echo("[limits]\nmax_request_body = \"1KiB\"").await;
    let mut s = TcpStream::connect(proxy.http).await.unwrap();
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        let n = guarded("the 100 Continue", s.read(&mut byte))
            .await
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed before 100 Continue: {:?}",
            String::from_utf8_lossy(&interim)
        );
        interim.push(byte[0]);
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{:?}",
        String::from_utf8_lossy(&interim)
    );
    s.write_all(b"hello").await.unwrap();
    let resp = raw_read_response(&mut s, 5).await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(raw_body(&resp), "a 5");
    assert_eq!(origin.hits(), 1);

    // Over the limit: the 413 comes at once, without a 100 Continue.
    let resp = raw(
        proxy.http,
        b"POST / HTTP/1.1\r\nHost: example.test\r\nContent-Length: 4096\r\nExpect: 100-continue\r\n\r\n",
        5,
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 413 "), "{resp}");
    assert_eq!(origin.hits(), 1);
}
