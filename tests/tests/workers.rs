//! `[runtime]`: per-core mode (one event loop per worker thread, each with its own
//! SO_REUSEPORT accept socket) and the shared runtime. The rest of the suite runs in the
//! default mode (per-core); these tests pin what differs.

use sluice_tests::*;

/// `conns` client connections at once, each sending `per_conn` requests; every answer must be
/// the origin's.
async fn load(proxy: &TestProxy, conns: usize, per_conn: usize) {
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let addr = proxy.http;
        tasks.push(tokio::spawn(async move {
            let mut c = h1(addr).await;
            for i in 0..per_conn {
                let resp = send(&mut c, get(&format!("/r{i}"), "example.test")).await;
                assert_eq!(resp.status(), 200);
                assert_eq!(&body_bytes(resp).await[..], b"a 0");
            }
        }));
    }
    for t in tasks {
        guarded("a client's requests", t).await.unwrap();
    }
}

#[tokio::test]
async fn per_core_workers_each_accept_connections() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .toml("[runtime]\nmode = \"per-core\"\nworkers = 2")
        .start()
        .await;
    // 40 connections: the kernel hashes each onto one of the two sockets, so the chance that
    // one worker gets none is 2^-39.
    load(&proxy, 40, 3).await;
    let accepted = proxy.running.accepted();
    assert_eq!(accepted.len(), 2, "one figure per worker: {accepted:?}");
    assert_eq!(accepted.iter().sum::<u64>(), 40, "{accepted:?}");
    assert!(
        accepted.iter().all(|&n| n > 0),
        "both workers accept: {accepted:?}"
    );
    assert_eq!(origin.hits(), 120);
    assert_eq!(
        proxy.running.shutdown().await,
        sluice_tests::sluice::ShutdownOutcome::Drained
    );
}

#[tokio::test]
async fn per_core_mode_serves_tls_and_h2_on_every_worker() {
    // The default mode: per-core, one worker per CPU.
    let site = TlsSite::start("www.example.test").await;
    for i in 0..24 {
        let resp = if i % 2 == 0 {
            let mut c = h2_over(site.connect(&[b"h2"]).await).await;
            send2(
                &mut c,
                get("https://www.example.test/x", "www.example.test"),
            )
            .await
        } else {
            let mut c = h1_over(site.connect(&[b"http/1.1"]).await).await;
            send(&mut c, get("/x", "www.example.test")).await
        };
        assert_eq!(resp.status(), 200);
        assert_eq!(&body_bytes(resp).await[..], b"a 0");
    }
    let accepted = site.proxy.running.accepted();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(accepted.len(), cpus, "{accepted:?}");
    assert_eq!(accepted.iter().sum::<u64>(), 24, "{accepted:?}");
}

#[tokio::test]
async fn shared_mode_serves_from_one_runtime() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .toml("[runtime]\nmode = \"shared\"")
        .start()
        .await;
    load(&proxy, 8, 3).await;
    assert_eq!(proxy.running.accepted(), vec![8]);
    assert_eq!(origin.hits(), 24);
}

#[tokio::test]
async fn per_core_mode_refuses_a_port_another_proxy_listens_on() {
    let origin = Origin::echo("a").await;
    let first = ProxyBuilder::for_origin(&origin).start().await;
    // A second proxy configured with the first one's port must not share it (SO_REUSEPORT
    // would let it, splitting the traffic): it fails to start, and the first keeps serving.
    let text = ProxyBuilder::for_origin(&origin)
        .config_text()
        .replace("127.0.0.1:0", &first.http.to_string());
    let config = sluice_tests::sluice::config::Config::parse(&text, "(test)", ".".as_ref())
        .expect("valid config");
    let err = sluice_tests::sluice::start(config)
        .await
        .err()
        .expect("the second proxy must not start");
    assert!(err.to_string().contains("cannot listen on"), "{err}");
    let mut c = h1(first.http).await;
    assert_eq!(send(&mut c, get("/x", "example.test")).await.status(), 200);
}
