//! Connection and process lifecycle: graceful shutdown (drain, refusing new connections,
//! `Drained` vs `TimedOut`), the client idle and header timeouts, and certificate reload (file
//! watcher and API) without disturbing established TLS connections, and whole-config reloads
//! (listeners, settings, TLS, pools) that close nothing and change nothing when refused.

use sluice_tests::sluice::ShutdownOutcome;
use sluice_tests::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

/// An origin whose `/park` requests report arrival on the channel and then wait for a permit
/// on the semaphore before answering with a 64 KiB body; other paths answer at once.
async fn parking_origin() -> (Origin, mpsc::UnboundedReceiver<()>, Arc<Semaphore>) {
    let (arrived_tx, arrived) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(Semaphore::new(0));
    let gate = release.clone();
    let origin = Origin::start(move |req| {
        let arrived = arrived_tx.clone();
        let gate = gate.clone();
        async move {
            if req.uri().path() == "/park" {
                arrived.send(()).unwrap();
                gate.acquire().await.unwrap().forget();
                text(200, vec![b'p'; 64 * 1024])
            } else {
                text(200, "quick")
            }
        }
    })
    .await;
    (origin, arrived, release)
}

/// True when the server closed or reset `s` without sending anything.
async fn closed_silently(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    match guarded("close", s.read(&mut buf)).await {
        Ok(0) | Err(_) => true,
        Ok(_) => false,
    }
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_refuses_new_connections() {
    let (origin, mut arrived, release) = parking_origin().await;
    let proxy = ProxyBuilder::for_origin(&origin).admin(None).start().await;
    let addr = proxy.http;

    // A request in flight, parked at the origin.
    let mut busy = h1(addr).await;
    let in_flight = tokio::spawn(async move {
        let resp = busy.send_request(get("/park", "example.test")).await?;
        let status = resp.status();
        let body = resp.into_body();
        let body = http_body_util::BodyExt::collect(body).await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    });
    guarded("request reaches the origin", arrived.recv())
        .await
        .unwrap();

    // An idle keep-alive connection: shutdown closes it, which tells us shutdown has begun.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let resp = raw_get(&mut idle, "/").await;
    assert_eq!(raw_status(&resp), 200);

    let shutdown = tokio::spawn(proxy.running.shutdown());
    assert!(
        closed_silently(&mut idle).await,
        "idle connection closed on shutdown"
    );

    // New connections are refused, or accepted and closed without being served.
    match TcpStream::connect(addr).await {
        Err(_) => {}
        Ok(mut s) => assert!(closed_silently(&mut s).await, "new connection was served"),
    }
    assert!(!shutdown.is_finished(), "shutdown waits for the request");

    release.add_permits(1);
    let (status, body) = guarded("in-flight request", in_flight)
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(status, 200);
    assert_eq!(body.len(), 64 * 1024);
    assert!(body.iter().all(|&b| b == b'p'));

    let outcome = guarded("shutdown", shutdown).await.unwrap();
    assert_eq!(outcome, ShutdownOutcome::Drained);
    assert!(TcpStream::connect(addr).await.is_err(), "listener is gone");
}

#[tokio::test]
async fn shutdown_times_out_when_a_request_never_finishes() {
    let (origin, mut arrived, _release) = parking_origin().await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .toml("[timeouts]\nshutdown_grace = \"200ms\"")
        .start()
        .await;
    let mut c = h1(proxy.http).await;
    let _stuck = tokio::spawn(async move { c.send_request(get("/park", "example.test")).await });
    guarded("request reaches the origin", arrived.recv())
        .await
        .unwrap();
    let start = Instant::now();
    let outcome = guarded("shutdown", proxy.running.shutdown()).await;
    assert_eq!(outcome, ShutdownOutcome::TimedOut);
    assert!(start.elapsed() >= Duration::from_millis(190));
}

#[tokio::test]
async fn shutdown_with_nothing_open_is_drained_at_once() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .admin(None)
        .toml("[timeouts]\nshutdown_grace = \"30s\"")
        .start()
        .await;
    let mut c = h1(proxy.http).await;
    let resp = c.send_request(get("/", "example.test")).await.unwrap();
    assert_eq!(resp.status(), 200);
    body_bytes(resp).await;
    let mut c2 = h2c(proxy.http).await;
    let resp = c2.send_request(get("/", "example.test")).await.unwrap();
    assert_eq!(resp.status(), 200);
    body_bytes(resp).await;
    let mut admin = TcpStream::connect(proxy.admin.unwrap()).await.unwrap();
    let resp = raw_get(&mut admin, "/health").await;
    assert_eq!(raw_status(&resp), 200);
    // Idle client connections (h1, h2c, admin) are closed by the shutdown, not waited for.
    let outcome = tokio::time::timeout(Duration::from_secs(5), proxy.running.shutdown())
        .await
        .expect("idle connections do not hold up shutdown");
    assert_eq!(outcome, ShutdownOutcome::Drained);
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_client_idle() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .toml("[timeouts]\nclient_idle = \"300ms\"\nclient_header = \"30s\"")
        .start()
        .await;
    let mut s = TcpStream::connect(proxy.http).await.unwrap();
    let resp = raw_get(&mut s, "/").await;
    assert_eq!(raw_status(&resp), 200);
    assert!(!resp.to_ascii_lowercase().contains("connection: close"));
    let idle_since = Instant::now();
    let rest = raw_until_closed(&mut s, 5).await;
    assert_eq!(rest, "", "nothing is sent on an idle close");
    let waited = idle_since.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}, before client_idle"
    );
}

/// An echo origin behind a proxy whose `client_header` (300ms) is short enough to wait out,
/// and whose `client_idle` is too long to fire in a test.
async fn short_client_header() -> (Origin, TestProxy) {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .toml("[timeouts]\nclient_header = \"300ms\"\nclient_idle = \"60s\"")
        .start()
        .await;
    (origin, proxy)
}

#[tokio::test]
async fn partial_request_head_is_dropped_after_client_header() {
    let (origin, proxy) = short_client_header().await;
    let mut s = TcpStream::connect(proxy.http).await.unwrap();
    let start = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: example.test\r\nX-Slow: ")
        .await
        .unwrap();
    let got = raw_until_closed(&mut s, 5).await;
    assert_eq!(got, "", "dropped without a response");
    assert!(start.elapsed() >= Duration::from_millis(250));
    assert_eq!(origin.hits(), 0);

    // A connection that never sends a byte is cut off the same way.
    let mut silent = TcpStream::connect(proxy.http).await.unwrap();
    assert_eq!(raw_until_closed(&mut silent, 5).await, "");
}

/// `client_header` bounds how long a request head may take to arrive; it must not cut off a
/// keep-alive connection that is merely idle between requests (that is `client_idle`'s job).
///
/// No sleep: a second "witness" connection sends half a request head *after* the first
/// connection's request finished, and is dropped `client_header` later. Once the witness is
/// gone, the first connection has been idle for longer than `client_header` too, and its
/// watchdog (whose deadline was earlier) has already run.
#[tokio::test]
async fn idle_connection_is_not_cut_by_client_header() {
    let (origin, proxy) = short_client_header().await;
    let mut s = TcpStream::connect(proxy.http).await.unwrap();
    assert_eq!(raw_status(&raw_get(&mut s, "/first").await), 200);
    let idle_since = Instant::now();

    let mut witness = TcpStream::connect(proxy.http).await.unwrap();
    witness.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    assert_eq!(raw_until_closed(&mut witness, 5).await, "");
    assert!(idle_since.elapsed() >= Duration::from_millis(300));

    let resp = raw_get(&mut s, "/second").await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert!(resp.contains("x-echo-uri: /second"), "{resp}");
    assert_eq!(origin.hits(), 2);
}

/// A TLS client: connects with SNI `localhost`, trusting the test CA, speaking HTTP/1.1.
async fn tls_client(certs: &Certs, addr: std::net::SocketAddr) -> (Vec<u8>, H1) {
    let stream = guarded(
        "TLS handshake",
        tls_connect(addr, "localhost", certs.client_config(&[b"http/1.1"])),
    )
    .await
    .unwrap();
    let der = peer_cert(&stream);
    (der, h1_over(stream).await)
}

async fn get_ok(c: &mut H1) {
    let resp = guarded("request", c.send_request(get("/", "localhost")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body_bytes(resp).await, "a 0");
}

#[tokio::test]
async fn certificate_files_are_reloaded_on_change_without_dropping_connections() {
    let certs = Certs::new();
    let a = certs.issue("a", &["localhost"]);
    // Issued before the proxy starts: writing it later would itself be a change to watch.
    let b = certs.issue("b", &["localhost"]);
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin).tls(&[&a]).start().await;
    let https = proxy.https.unwrap();

    let (der1, mut c1) = tls_client(&certs, https).await;
    assert_eq!(der1, a.der());
    get_ok(&mut c1).await;

    let mut reloads = proxy.running.certificate_reloads();
    b.write_to(&a.cert, &a.key);
    // The watcher debounces; a reload may also catch a half-written pair (which fails and is
    // skipped) or land between the two files, so wait until a new connection sees B.
    let seen = guarded("reload to certificate B", async {
        loop {
            reloads.changed().await.unwrap();
            let (der, _) = tls_client(&certs, https).await;
            if der == b.der() {
                return der;
            }
        }
    })
    .await;
    assert_eq!(seen, b.der());

    // The established connection keeps working (and keeps certificate A).
    get_ok(&mut c1).await;
    let (der2, mut c2) = tls_client(&certs, https).await;
    assert_eq!(der2, b.der());
    get_ok(&mut c2).await;
    get_ok(&mut c1).await;
}

#[tokio::test]
async fn failed_certificate_reload_keeps_the_current_certificate() {
    let certs = Certs::new();
    let a = certs.issue("a", &["localhost"]);
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin).tls(&[&a]).start().await;
    let https = proxy.https.unwrap();
    let (der, mut c1) = tls_client(&certs, https).await;
    assert_eq!(der, a.der());

    let before = *proxy.running.certificate_reloads().borrow();
    std::fs::write(
        &a.key,
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = proxy
        .running
        .reload_certificates()
        .expect_err("a broken key must not load");
    let shown = err.to_string();
    assert!(shown.contains(&a.key.display().to_string()), "{shown}");
    assert!(shown.contains("certificates[0].key"), "{shown}");
    assert_eq!(*proxy.running.certificate_reloads().borrow(), before);

    // Still serving A, on old and new connections.
    get_ok(&mut c1).await;
    let (der, mut c2) = tls_client(&certs, https).await;
    assert_eq!(der, a.der());
    get_ok(&mut c2).await;

    // A key that does not match the certificate is refused too.
    let other = certs.issue("other", &["localhost"]);
    std::fs::write(&a.key, &other.key_pem).unwrap();
    let err = proxy.running.reload_certificates().unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    let (der, _) = tls_client(&certs, https).await;
    assert_eq!(der, a.der());

    // Fixing the files makes the API reload succeed.
    a.write_to(&a.cert, &a.key);
    proxy.running.reload_certificates().unwrap();
    assert!(*proxy.running.certificate_reloads().borrow() > before);
}

/// Applies `text` as a reloaded config.
async fn reload(
    running: &sluice_tests::sluice::Running,
    text: &str,
) -> Result<sluice_tests::sluice::Reloaded, sluice_tests::sluice::ReloadError> {
    let config = sluice_tests::sluice::config::Config::parse(text, "(reload)", ".".as_ref())
        .unwrap_or_else(|e| panic!("reload config invalid: {e}\n{text}"));
    running.reload(config).await
}

async fn origin_of(c: &mut H1) -> String {
    let resp = guarded("request", c.send_request(get("/", "localhost")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    header(&resp, "x-origin").unwrap().to_string()
}

/// A reload adds, removes and moves listeners and changes pools, in both runtime modes. The
/// listener that stays keeps its socket (same port); connections accepted by a removed
/// listener go on; its address stops accepting.
#[tokio::test]
async fn a_config_reload_adds_removes_and_moves_listeners_without_closing_connections() {
    for mode in ["per-core", "shared"] {
        let (a, b) = (Origin::echo("a").await, Origin::echo("b").await);
        let runtime = format!("[runtime]\nmode = \"{mode}\"\n");
        let listener = |name: &str, addr: &str| {
            format!("[[listener]]\nname = \"{name}\"\naddress = \"{addr}\"\n")
        };
        let before = ProxyBuilder::for_origin(&a)
            .toml(&runtime)
            .toml(&listener("old", "127.0.0.1:0"))
            .toml(&listener("moving", "127.0.0.1:0"));
        let proxy = before.start().await;
        let running = &proxy.running;
        let (old, moving) = (
            running.addr("old").unwrap(),
            running.addr("moving").unwrap(),
        );
        let mut on_http = h1(proxy.http).await;
        let mut on_old = h1(old).await;
        assert_eq!(origin_of(&mut on_http).await, "a");
        assert_eq!(origin_of(&mut on_old).await, "a");

        let after = ProxyBuilder::for_origin(&b)
            .toml(&runtime)
            .toml(&listener("moving", "127.0.0.2:0"))
            .toml(&listener("new", "127.0.0.1:0"))
            .config_text();
        let done = reload(running, &after).await.expect("reload applies");
        assert_eq!(done.listeners.added, ["moving", "new"], "{mode}");
        assert_eq!(done.listeners.removed, ["old", "moving"], "{mode}");
        assert!(done.need_restart.is_empty(), "{:?}", done.need_restart);

        assert_eq!(running.addr("http"), Some(proxy.http), "{mode}: kept");
        assert_eq!(running.addr("old"), None);
        let moved = running.addr("moving").unwrap();
        assert_eq!(moved.ip().to_string(), "127.0.0.2");
        // Open connections go on, and see the new pools.
        assert_eq!(origin_of(&mut on_http).await, "b", "{mode}");
        assert_eq!(origin_of(&mut on_old).await, "b", "{mode}");
        // New ones reach every listener of the new config at once, and none of the old.
        for addr in [proxy.http, moved, running.addr("new").unwrap()] {
            assert_eq!(origin_of(&mut h1(addr).await).await, "b", "{mode} {addr}");
        }
        for addr in [old, moving] {
            let refused = TcpStream::connect(addr).await;
            assert!(refused.is_err(), "{mode}: {addr} still accepts");
        }
        assert_eq!(running.listeners().len(), 3);
    }
}

/// A reload that cannot bind one listener changes nothing: not the listeners, not the pools,
/// not the settings; it is refused with the reason and counted.
#[tokio::test]
async fn a_reload_that_cannot_bind_changes_nothing() {
    let (a, b) = (Origin::echo("a").await, Origin::echo("b").await);
    let proxy = ProxyBuilder::for_origin(&a).admin(None).start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let text = ProxyBuilder::for_origin(&b)
        .admin(None)
        .toml(&format!(
            "[[listener]]\nname = \"busy\"\naddress = \"{busy}\"\n"
        ))
        .config_text();
    let err = reload(&proxy.running, &text).await.unwrap_err().to_string();
    assert!(
        err.contains("listener \"busy\"") && err.contains(&busy.to_string()),
        "{err}"
    );
    assert_eq!(proxy.running.listeners().len(), 1);
    assert_eq!(origin_of(&mut h1(proxy.http).await).await, "a");
    let metrics = metrics_text(proxy.admin.unwrap()).await;
    assert!(
        metrics.contains("sluice_reloads_total{what=\"config\",outcome=\"failed\"} 1"),
        "{metrics}"
    );

    // Once the address is free the same reload goes through.
    drop(taken);
    reload(&proxy.running, &text).await.unwrap();
    assert_eq!(origin_of(&mut h1(busy).await).await, "b");
}

/// Settings apply to connections accepted after the reload; an open connection keeps the ones
/// it started with. A listener's TLS change applies to the next handshakes.
#[tokio::test]
async fn reloaded_settings_apply_to_new_connections_and_tls_to_new_handshakes() {
    let certs = Certs::new();
    let (one, two) = (
        certs.issue("one", &["localhost"]),
        certs.issue("two", &["localhost"]),
    );
    let origin = Origin::echo("a").await;
    let config = |leaf: &Leaf, via: &str, capacity: &str| {
        ProxyBuilder::for_origin(&origin)
            .tls(&[leaf])
            .toml(&format!("[proxy]\nvia_name = \"{via}\"\n"))
            .toml(&format!("[cache]\ncapacity = \"{capacity}\"\n"))
    };
    let proxy = config(&one, "one", "8 MiB").start().await;
    let https = proxy.https.unwrap();
    let via = |resp: &http::Response<hyper::body::Incoming>| {
        echoed(resp, "via").unwrap_or_default().to_string()
    };
    let mut early = h1(proxy.http).await;
    let resp = send(&mut early, get("/", "localhost")).await;
    assert_eq!(via(&resp), "1.1 one");
    let (der, mut early_tls) = tls_client(&certs, https).await;
    assert_eq!(der, one.der());

    let done = reload(&proxy.running, &config(&two, "two", "4 MiB").config_text())
        .await
        .unwrap();
    assert_eq!(done.listeners.tls_changed, ["https"]);
    assert!(done.listeners.added.is_empty() && done.listeners.removed.is_empty());
    assert_eq!(proxy.running.addr("https"), Some(https));

    let resp = send(&mut h1(proxy.http).await, get("/", "localhost")).await;
    assert_eq!(
        via(&resp),
        "1.1 two",
        "a new connection has the new settings"
    );
    let resp = send(&mut early, get("/", "localhost")).await;
    assert_eq!(via(&resp), "1.1 one", "an open one keeps its own");
    let (der, _) = tls_client(&certs, https).await;
    assert_eq!(der, two.der());
    get_ok(&mut early_tls).await;
    let cache = proxy.running.cache().unwrap();
    assert_eq!(cache.config().capacity, 4 << 20);

    // Removing `[cache]` needs a restart, and says so.
    let text = ProxyBuilder::for_origin(&origin).tls(&[&two]).config_text();
    let done = reload(&proxy.running, &text).await.unwrap();
    assert_eq!(done.need_restart, ["[cache] (on or off)"]);
}

async fn metrics_text(admin: std::net::SocketAddr) -> String {
    let resp = send(&mut h1(admin).await, get("/metrics", "admin")).await;
    assert_eq!(resp.status(), 200);
    String::from_utf8(body_bytes(resp).await.to_vec()).unwrap()
}

/// `sluice run --watch`: a change to the config file (written and renamed over, as deploy
/// tools do) is applied as a SIGHUP would be.
#[tokio::test]
async fn a_watched_config_file_is_reloaded_when_it_changes() {
    let (a, b) = (Origin::echo("a").await, Origin::echo("b").await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    let before = ProxyBuilder::for_origin(&a);
    std::fs::write(&path, before.config_text()).unwrap();
    let proxy = before.start().await;
    let mut reloads = proxy.running.config_reloads();
    let mut signals = sluice_tests::sluice::StopSignals::install();
    let waiting = signals.wait(&proxy.running, Some(&path), true);
    tokio::pin!(waiting);
    let test = async {
        let after = ProxyBuilder::for_origin(&b)
            .toml("[[listener]]\nname = \"more\"\naddress = \"127.0.0.1:0\"\n")
            .config_text();
        let tmp = dir.path().join("sluice.toml.tmp");
        std::fs::write(&tmp, after).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        guarded("the watcher reloads", reloads.changed())
            .await
            .unwrap();
        assert_eq!(origin_of(&mut h1(proxy.http).await).await, "b");
        let more = proxy.running.addr("more").expect("the new listener");
        assert_eq!(origin_of(&mut h1(more).await).await, "b");
    };
    tokio::select! {
        // Polled first, so the watcher is in place before the file is written.
        biased;
        _ = &mut waiting => panic!("wait ended without a signal"),
        _ = test => {}
    }
}
