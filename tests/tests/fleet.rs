//! A fleet of sluice nodes sharing one real `redis-server` (`[cache.shared]`): the shared
//! cache tier across nodes (inline and chunked bodies, Vary), fleet-wide coalescing on one
//! key, purges fanned out to every node, a corrupt value treated as a miss, Redis killed and
//! restarted under load, policy publishing (to all nodes, and a canary rolled back), and
//! `GET /fleet`.
//!
//! Each test starts its own `redis-server` (the Debian package; `.ci/run` installs it) on a
//! loopback port, so killing it touches no other test. Nothing sleeps to synchronise: the
//! tests poll `/stats`, `/policy` and `/fleet` in bounded loops.

use http::{Request, StatusCode};
use serde_json::Value;
use sluice_tests::*;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const HOST: &str = "fleet.test";
const POLL: Duration = Duration::from_millis(10);

/// A `redis-server` of this test's own on 127.0.0.1.
struct Redis {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Extra arguments (cluster mode).
    args: Vec<String>,
}

impl Redis {
    async fn start() -> Redis {
        Self::start_with(&[]).await
    }

    async fn start_with(args: &[&str]) -> Redis {
        let mut r = Redis {
            port: 0,
            child: None,
            dir: tempfile::tempdir().unwrap(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        // redis-server binds its own socket: take a free port from the kernel, and another
        // if something else took it in between.
        for _ in 0..5 {
            r.port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if r.spawn().await {
                return r;
            }
        }
        panic!("redis-server did not start on five free ports");
    }

    /// Starts the server on `port`; `false` if it exited (the port was taken).
    async fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (the Debian package redis-server; .ci/run installs it)");
        self.child = Some(child);
        let dir = self.dir.path().to_str().unwrap().to_string();
        guarded("redis-server answers", async {
            loop {
                if let Ok(Some(_)) = self.child.as_mut().unwrap().try_wait() {
                    self.child = None;
                    return false;
                }
                // Ours, not another test's server on the same port: it names our directory.
                if self.cli(&["CONFIG", "GET", "dir"]).contains(&dir) {
                    return true;
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await
    }

    /// SIGKILL, as a crash.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The object heads of namespace `ns` (not their chunks or locks).
    fn heads(&self, ns: &str) -> Vec<String> {
        self.cli(&["--scan", "--pattern", &format!("{ns}:v1:o:*")])
            .lines()
            .filter(|k| !k.contains("}:"))
            .map(String::from)
            .collect()
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli (Debian package redis-tools)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A node of the fleet in front of `origin`, named `name`. With a generous operation timeout
/// unless `extra` sets one: a loaded CI machine must not turn a slow answer into a skipped one
/// (the test of a stopped server sets its own).
async fn node(origin: &Origin, redis: &Redis, ns: &str, name: &str, extra: &str) -> TestProxy {
    let extra = if extra.contains("timeout") {
        extra.to_string()
    } else {
        format!("timeout = \"2s\"\n{extra}")
    };
    node_with(ProxyBuilder::for_origin(origin), redis, ns, name, &extra).await
}

async fn node_with(
    builder: ProxyBuilder,
    redis: &Redis,
    ns: &str,
    name: &str,
    extra: &str,
) -> TestProxy {
    let p = builder
        .admin(None)
        .toml(&format!(
            "[cache]\ncapacity = \"64MiB\"\n[cache.shared]\nurl = \"{}\"\nnamespace = \"{ns}\"\nnode = \"{name}\"\nheartbeat = \"100ms\"\n{extra}",
            redis.url()
        ))
        .start()
        .await;
    wait_stats(&p, "the node connects to redis", |s| s["state"] == "closed").await;
    p
}

/// `GET /stats`' `"shared"` object.
async fn shared_stats(p: &TestProxy) -> Value {
    let (status, json) = admin_call(p.admin.unwrap(), "GET", "/stats", Vec::new()).await;
    assert_eq!(status, 200, "{json}");
    json["shared"].clone()
}

async fn wait_stats(p: &TestProxy, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    guarded(what, async {
        loop {
            let s = shared_stats(p).await;
            if done(&s) {
                return s;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}

/// An origin for `/x` (tagged `t1`, 60 s), `/big` (1.5 MiB), `/vary` (by `Accept-Language`);
/// counts each path's requests.
async fn origin() -> Origin {
    Origin::start(|req| async move {
        let path = req.uri().path().to_string();
        let b = http::Response::builder()
            .header("cache-control", "max-age=60")
            .header("surrogate-key", "t1");
        let resp = match path.as_str() {
            "/big" => b.body(full(big_body())),
            "/vary" => {
                let lang = req
                    .headers()
                    .get("accept-language")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                b.header("vary", "accept-language")
                    .body(full(format!("lang={lang}")))
            }
            _ => b.body(full(format!("body of {path}"))),
        };
        resp.unwrap()
    })
    .await
}

async fn metrics_text(p: &TestProxy) -> String {
    let mut c = h1(p.admin.unwrap()).await;
    let r = send(&mut c, get("/metrics", "admin")).await;
    String::from_utf8(body_bytes(r).await.to_vec()).unwrap()
}

fn big_body() -> Vec<u8> {
    (0..(3 << 19)).map(|i: u32| (i % 251) as u8).collect()
}

async fn get_on(p: &TestProxy, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    let mut c = h1(p.http).await;
    let mut req = Request::get(path).header("host", HOST);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send(&mut c, req.body(full("")).unwrap()).await;
    let status = resp.status().as_u16();
    let cs = header(&resp, "cache-status")
        .unwrap_or_default()
        .to_string();
    (status, cs, body_bytes(resp).await.to_vec())
}

fn unique(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cached_through_one_node_is_a_shared_hit_on_another() {
    let redis = Redis::start().await;
    let origin = origin().await;
    let ns = unique("l2");
    let a = node(&origin, &redis, &ns, "a", "").await;
    let b = node(&origin, &redis, &ns, "b", "chunk_size = \"256KiB\"").await;

    let (s, cs, body) = get_on(&a, "/x", &[]).await;
    assert_eq!((s, &body[..]), (200, &b"body of /x"[..]));
    assert!(cs.contains("fwd=uri-miss") && cs.contains("stored"), "{cs}");
    wait_stats(&a, "node a writes /x to redis", |s| s["stores"] == 1).await;

    let (s, cs, body) = get_on(&b, "/x", &[]).await;
    assert_eq!((s, &body[..]), (200, &b"body of /x"[..]));
    assert!(cs.contains("hit") && cs.contains("detail=shared"), "{cs}");
    assert_eq!(origin.hits(), 1, "node b did not go to the origin");
    let metrics = metrics_text(&b).await;
    if let Err(said) = promtool(&metrics) {
        panic!("promtool: {said}\n{metrics}");
    }
    assert!(
        metrics.contains("sluice_cache_shared_total{event=\"hits\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_cache_shared_breaker{state=\"closed\"} 1\n"),
        "{metrics}"
    );
    // Now in b's memory cache: a plain hit, without redis.
    let (_, cs, _) = get_on(&b, "/x", &[]).await;
    assert!(cs.contains("hit") && !cs.contains("shared"), "{cs}");

    // A body larger than the chunk size is stored in chunks and read back byte for byte.
    let (s, _, body) = get_on(&b, "/big", &[]).await;
    assert_eq!((s, body.len()), (200, 3 << 19));
    wait_stats(&b, "node b writes /big", |s| s["stores"] == 1).await;
    let chunks = redis.cli(&["--scan", "--pattern", &format!("{ns}:v1:o:*:c:*")]);
    assert_eq!(
        chunks.lines().count(),
        6,
        "1.5 MiB in 256 KiB chunks: {chunks}"
    );
    let (_, cs, body) = get_on(&a, "/big", &[]).await;
    assert!(cs.contains("detail=shared"), "{cs}");
    assert!(body == big_body(), "the chunked body came back different");
    assert_eq!(origin.hits(), 2);

    // Vary: each node stores its variant; the other node finds the one its request selects.
    let (_, _, en) = get_on(&a, "/vary", &[("accept-language", "en")]).await;
    wait_stats(&a, "node a writes the en variant", |s| s["stores"] == 2).await;
    let (_, _, fr) = get_on(&b, "/vary", &[("accept-language", "fr")]).await;
    assert_eq!((&en[..], &fr[..]), (&b"lang=en"[..], &b"lang=fr"[..]));
    wait_stats(&b, "node b writes the fr variant", |s| s["stores"] == 2).await;
    let (_, cs, body) = get_on(&b, "/vary", &[("accept-language", "en")]).await;
    assert!(cs.contains("detail=shared"), "{cs}");
    assert_eq!(&body[..], b"lang=en");
    let (_, cs, body) = get_on(&a, "/vary", &[("accept-language", "fr")]).await;
    assert!(cs.contains("detail=shared"), "{cs}");
    assert_eq!(&body[..], b"lang=fr");
    assert_eq!(origin.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_origin_fetch_for_a_key_across_nodes() {
    let redis = Redis::start().await;
    // `/slow` answers once the test opens the gate.
    let gate = Arc::new(tokio::sync::watch::channel(false).0);
    let g = gate.clone();
    let origin = Origin::start(move |_req| {
        let mut open = g.subscribe();
        async move {
            let _ = open.wait_for(|o| *o).await;
            http::Response::builder()
                .header("cache-control", "max-age=60")
                .body(full("slow body"))
                .unwrap()
        }
    })
    .await;
    let ns = unique("lock");
    let a = node(&origin, &redis, &ns, "a", "").await;
    let b = node(&origin, &redis, &ns, "b", "").await;

    let mut clients = Vec::new();
    for _ in 0..10 {
        let http = a.http;
        clients.push(tokio::spawn(async move {
            let mut c = h1(http).await;
            let r = send(&mut c, get("/slow", HOST)).await;
            (r.status(), body_bytes(r).await)
        }));
    }
    guarded("node a's fetch reaches the origin", async {
        while origin.hits() == 0 {
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    for _ in 0..10 {
        let http = b.http;
        clients.push(tokio::spawn(async move {
            let mut c = h1(http).await;
            let r = send(&mut c, get("/slow", HOST)).await;
            (r.status(), body_bytes(r).await)
        }));
    }
    wait_stats(&b, "node b waits on node a's lock", |s| {
        s["lock_waits"] == 1
    })
    .await;
    gate.send_replace(true);
    for c in clients {
        let (status, body) = guarded("a client gets its answer", c).await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"slow body"[..]));
    }
    assert_eq!(origin.hits(), 1, "20 clients on 2 nodes, one origin fetch");
    let s = shared_stats(&b).await;
    assert_eq!(
        (
            s["lock_wait_hits"].as_u64(),
            s["lock_wait_timeouts"].as_u64()
        ),
        (Some(1), Some(0)),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_node_reaches_every_node() {
    let redis = Redis::start().await;
    let origin = origin().await;
    let ns = unique("purge");
    let nodes = [
        node(&origin, &redis, &ns, "a", "").await,
        node(&origin, &redis, &ns, "b", "").await,
        node(&origin, &redis, &ns, "c", "").await,
    ];
    // /x and /y in every node's memory cache (one origin fetch each).
    for path in ["/x", "/y"] {
        get_on(&nodes[0], path, &[]).await;
    }
    wait_stats(&nodes[0], "node a writes both", |s| s["stores"] == 2).await;
    for n in &nodes[1..] {
        for path in ["/x", "/y"] {
            let (_, cs, _) = get_on(n, path, &[]).await;
            assert!(cs.contains("detail=shared"), "{cs}");
        }
    }
    assert_eq!(origin.hits(), 2);

    // A tag purge on b: gone from redis at once, and from a's and c's memory soon after.
    let (status, json) = admin_call(
        nodes[1].admin.unwrap(),
        "POST",
        "/cache/purge",
        br#"{"tag": "t1"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["fleet"]["sent"], true, "{json}");
    assert_eq!(json["purged"], 2, "{json}");
    assert_eq!(
        redis.heads(&ns),
        Vec::<String>::new(),
        "the tag purge left objects in redis"
    );
    let started = Instant::now();
    for n in [&nodes[0], &nodes[2]] {
        // From the origin, or a copy another node fetched again: not its own any more.
        until_not_own_copy(n, "/x", "the purge reaches the node").await;
    }
    eprintln!("purge to the last node's miss: {:?}", started.elapsed());
    // A URL purge on c, the same way: /y again on a (stored) and b (a shared hit), then
    // purged through c.
    get_on(&nodes[0], "/y", &[]).await;
    wait_stats(&nodes[0], "node a writes /y again", |s| s["stores"] == 4).await;
    let (_, cs, _) = get_on(&nodes[1], "/y", &[]).await;
    assert!(cs.contains("detail=shared"), "{cs}");
    let (status, json) = admin_call(
        nodes[2].admin.unwrap(),
        "POST",
        "/cache/purge",
        format!(r#"{{"url": "http://{HOST}/y"}}"#).into_bytes(),
    )
    .await;
    assert_eq!(
        (status, &json["fleet"]["sent"]),
        (StatusCode::OK, &Value::Bool(true)),
        "{json}"
    );
    until_not_own_copy(&nodes[1], "/y", "the URL purge reaches node b").await;
    for n in &nodes {
        let s = shared_stats(n).await;
        assert_eq!(s["purges_failed"], 0, "{s}");
    }
}

/// Polls `GET path` on `p` until it is not served from `p`'s own copy.
async fn until_not_own_copy(p: &TestProxy, path: &str, what: &str) {
    guarded(what, async {
        loop {
            let (_, cs, _) = get_on(p, path, &[]).await;
            if cs.contains("fwd=uri-miss") || cs.contains("detail=shared") {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_purge_and_an_unsafe_request_reach_every_node() {
    let redis = Redis::start().await;
    let origin = origin().await;
    let ns = unique("policy-purge");
    // The cache-import guest tags every response "all" and purges by tag on request.
    let with_guest = || ProxyBuilder::for_origin(&origin).policy(guests::CACHE_IMPORT, "", "");
    let a = node_with(with_guest(), &redis, &ns, "a", "").await;
    let b = node_with(with_guest(), &redis, &ns, "b", "").await;
    get_on(&a, "/x", &[]).await;
    wait_stats(&a, "node a writes /x", |s| s["stores"] == 1).await;
    let (_, cs, _) = get_on(&b, "/x", &[]).await;
    assert!(cs.contains("detail=shared"), "{cs}");
    // The policy on b purges the tag: b's copy, redis's, and (through the stream) a's.
    let (s, _, body) = get_on(&b, "/_cache/purge-tag?tag=all", &[]).await;
    assert_eq!((s, &body[..]), (200, &b"1"[..]));
    until_not_own_copy(&a, "/x", "the policy's purge reaches node a").await;
    assert_eq!(redis.heads(&ns).len(), 1, "a stored /x again, nothing else");

    // A POST to /x through b invalidates it (RFC 9111 §4.4) on every node and in redis.
    get_on(&b, "/x", &[]).await;
    let mut c = h1(b.http).await;
    let post = Request::post("/x")
        .header("host", HOST)
        .body(full("new"))
        .unwrap();
    assert_eq!(send(&mut c, post).await.status(), 200);
    until_not_own_copy(&a, "/x", "the invalidation reaches node a").await;
    let s = shared_stats(&b).await;
    assert_eq!(s["purges_failed"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_does_not_decode_is_a_miss_and_is_replaced() {
    let redis = Redis::start().await;
    let origin = origin().await;
    let ns = unique("corrupt");
    let a = node(&origin, &redis, &ns, "a", "").await;
    let b = node(&origin, &redis, &ns, "b", "").await;
    get_on(&a, "/x", &[]).await;
    wait_stats(&a, "node a writes /x", |s| s["stores"] == 1).await;
    let heads = redis.heads(&ns);
    assert_eq!(heads.len(), 1, "{heads:?}");
    let head = heads[0].as_str();
    // What another version (or a bug) could leave there.
    assert_eq!(
        redis
            .cli(&["SET", head, "SLC\x09garbage", "KEEPTTL"])
            .trim(),
        "OK"
    );

    let (s, cs, body) = get_on(&b, "/x", &[]).await;
    assert_eq!((s, &body[..]), (200, &b"body of /x"[..]));
    assert!(cs.contains("fwd=uri-miss"), "{cs}");
    assert_eq!(origin.hits(), 2);
    let s = wait_stats(&b, "node b replaces the value", |s| s["stores"] == 1).await;
    assert_eq!(s["corrupt"], 1, "{s}");
    let value = redis.cli(&["GET", head]);
    assert!(value.starts_with("SLC\x01"), "not rewritten: {value:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_under_load_fails_no_request() {
    let mut redis = Redis::start().await;
    let origin = Origin::start(|req| async move {
        // Fresh for a second: under load, keys keep expiring and going to the shared tier.
        let path = req.uri().path().to_string();
        http::Response::builder()
            .header("cache-control", "max-age=1")
            .body(full(format!("body of {path}")))
            .unwrap()
    })
    .await;
    let ns = unique("kill");
    let a = node(&origin, &redis, &ns, "a", "").await;
    let b = node(&origin, &redis, &ns, "b", "").await;
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let addr = if t % 2 == 0 { a.http } else { b.http };
        let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = h1(addr).await;
            // Bounded: until told to stop, or 20,000 requests per task.
            for i in 0..20_000usize {
                if *stop.borrow() {
                    break;
                }
                // A working set of 200 keys, and every fourth request a new key: a miss
                // that always asks the shared tier (so it is asked while redis is down).
                let path = match i % 4 {
                    0 => format!("/new-{t}-{i}"),
                    _ => format!("/k{}", (i * 7 + t) % 200),
                };
                let r = send(&mut c, get(&path, HOST)).await;
                let ok = r.status() == 200 && body_bytes(r).await == format!("body of {path}");
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let at = |n: usize| {
        let done = done.clone();
        async move {
            while done.load(Ordering::Relaxed) < n {
                tokio::time::sleep(POLL).await;
            }
        }
    };
    guarded("load runs with redis up", at(2_000)).await;
    let stores_before = shared_stats(&a).await["stores"].as_u64().unwrap();
    assert!(stores_before > 0);
    redis.kill();
    let n = done.load(Ordering::Relaxed);
    guarded("load runs with redis down", at(n + 3_000)).await;
    let s = shared_stats(&a).await;
    assert!(
        s["skipped"].as_u64().unwrap() + s["errors"].as_u64().unwrap() > 0,
        "{s}"
    );
    assert_ne!(s["state"], "closed", "{s}");
    assert!(redis.spawn().await, "redis-server restarts on its port");
    for p in [&a, &b] {
        wait_stats(p, "the node reconnects by itself", |s| {
            s["state"] == "closed"
        })
        .await;
    }
    let n = done.load(Ordering::Relaxed);
    guarded("load runs with redis back", at(n + 2_000)).await;
    wait_stats(&a, "node a writes to the new redis", |s| {
        s["stores"].as_u64().unwrap() > stores_before
    })
    .await;
    stop_tx.send_replace(true);
    for t in tasks {
        guarded("a load task ends", t).await.unwrap();
    }
    let total = done.load(Ordering::Relaxed);
    eprintln!("{total} requests, redis killed and restarted under load");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "of {total} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_answering_is_skipped_by_the_breaker() {
    let redis = Redis::start().await;
    let origin = origin().await;
    let ns = unique("stopped");
    let a = node(
        &origin,
        &redis,
        &ns,
        "a",
        "timeout = \"100ms\"\nbreaker_failures = 2\nbreaker_open = \"200ms\"",
    )
    .await;
    get_on(&a, "/x", &[]).await;
    wait_stats(&a, "node a writes /x", |s| s["stores"] == 1).await;
    // SIGSTOP: the connection stays up and nothing answers (a hung or overloaded server).
    let pid = redis.child.as_ref().unwrap().id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    for i in 0..20 {
        let (s, _, body) = get_on(&a, &format!("/n{i}"), &[]).await;
        assert_eq!((s, body), (200, format!("body of /n{i}").into_bytes()));
    }
    // 20 misses, each of which would wait 100 ms per operation without the breaker.
    eprintln!("20 misses with redis stopped: {:?}", started.elapsed());
    let s = shared_stats(&a).await;
    assert!(s["breaker_opened"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["skipped"].as_u64().unwrap() >= 1, "{s}");
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Back: a probe closes the breaker, and the next miss is written again.
    guarded("the breaker closes once redis answers", async {
        loop {
            get_on(&a, &format!("/{}", unique("back")), &[]).await;
            let s = shared_stats(&a).await;
            if s["state"] == "closed" && s["stores"].as_u64().unwrap() > 1 {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
}

/// Waits until node `p`'s active revision is `sha`.
async fn wait_revision(p: &TestProxy, sha: &str) {
    guarded(&format!("revision {sha} serves"), async {
        loop {
            if policy_status(p.admin.unwrap()).await["active"]["sha256"] == sha {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
}

async fn fleet(p: &TestProxy) -> Value {
    let (status, json) = admin_call(p.admin.unwrap(), "GET", "/fleet", Vec::new()).await;
    assert_eq!(status, 200, "{json}");
    json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_published_on_one_node_serves_on_every_node() {
    let redis = Redis::start().await;
    let origin = Origin::echo("o").await;
    let ns = unique("policy");
    let a = node(&origin, &redis, &ns, "a", "").await;
    let b = node(&origin, &redis, &ns, "b", "").await;
    let before = policy_status(b.admin.unwrap()).await["active"]["sha256"].clone();

    // Not a component: refused by the publishing node, nothing reaches the fleet.
    let (status, json) = admin_call(
        a.admin.unwrap(),
        "POST",
        "/fleet/policy",
        b"not wasm".to_vec(),
    )
    .await;
    assert_eq!(status, 422, "{json}");
    assert!(fleet(&a).await["rollout"].is_null());
    let (status, json) = admin_call(
        a.admin.unwrap(),
        "POST",
        "/fleet/policy?canary=0",
        Vec::new(),
    )
    .await;
    assert_eq!(status, 400, "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("canary=0"),
        "{json}"
    );

    let bytes = std::fs::read(guests::SWAP_B).unwrap();
    let (status, json) = admin_call(a.admin.unwrap(), "POST", "/fleet/policy", bytes).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["stage"], "fleet", "{json}");
    let sha = json["sha256"].as_str().unwrap().to_string();
    assert_ne!(before, sha.as_str());
    for p in [&a, &b] {
        wait_revision(p, &sha).await;
        let mut c = h1(p.http).await;
        let r = send(&mut c, get("/", HOST)).await;
        assert_eq!(header(&r, "x-policy"), Some("b"));
    }
    assert_eq!(
        policy_status(b.admin.unwrap()).await["active"]["source"],
        "fleet rollout"
    );

    // The registry: both nodes, up, on the new revision.
    let f = guarded("the registry shows both on the new revision", async {
        loop {
            let f = fleet(&b).await;
            let on_it = f["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["revision"] == sha.as_str() && n["state"] == "up")
                .count();
            if on_it == 2 {
                return f;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    assert_eq!(f["node"], "b");
    let names: Vec<&str> = f["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(f["rollout"]["sha256"], sha.as_str());

    // A node that starts later takes up the fleet's revision.
    let c = node(&origin, &redis, &ns, "c", "").await;
    wait_revision(&c, &sha).await;
    // A node that shuts down leaves the registry.
    c.running.shutdown().await;
    let f = fleet(&a).await;
    assert!(
        f["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["node"] != "c"),
        "{f}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_fails_is_rolled_back_and_a_good_one_promoted() {
    let redis = Redis::start().await;
    let origin = Origin::echo("o").await;
    let ns = unique("canary");
    let a = node(&origin, &redis, &ns, "a", "").await;
    let b = node(&origin, &redis, &ns, "b", "").await;
    let by_name = |n: &str| if n == "a" { &a } else { &b };
    let original = policy_status(a.admin.unwrap()).await["active"]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    // Both nodes are in the registry before the canary is chosen from it.
    guarded("both nodes registered", async {
        while fleet(&a).await["nodes"].as_array().unwrap().len() < 2 {
            tokio::time::sleep(POLL).await;
        }
    })
    .await;

    // The probe guest traps on /trap...: a canary on half the fleet (one node), judged after
    // three seconds.
    let bytes = std::fs::read(guests::PROBE).unwrap();
    let (status, json) = admin_call(
        a.admin.unwrap(),
        "POST",
        "/fleet/policy?canary=50&window=3",
        bytes,
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["stage"], "canary");
    let sha = json["sha256"].as_str().unwrap().to_string();
    let canary = json["nodes"][0].as_str().unwrap().to_string();
    assert_eq!(json["nodes"].as_array().unwrap().len(), 1, "{json}");
    let other = if canary == "a" { "b" } else { "a" };
    wait_revision(by_name(&canary), &sha).await;
    for _ in 0..20 {
        let mut c = h1(by_name(&canary).http).await;
        // A 5xx (fail closed) or the origin's answer (fail open): a policy failure either way.
        let _ = send(&mut c, get("/trap", HOST)).await;
    }
    let f = guarded("the canary is judged", async {
        loop {
            let f = fleet(&a).await;
            if f["rollout"]["stage"] != "canary" {
                return f;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    assert_eq!(f["rollout"]["stage"], "rolled-back", "{f}");
    assert!(
        f["rollout"]["reason"].as_str().unwrap().contains(&canary),
        "{f}"
    );
    wait_revision(by_name(&canary), &original).await;
    assert_eq!(
        policy_status(by_name(other).admin.unwrap()).await["active"]["sha256"],
        original.as_str(),
        "the node outside the canary never ran it"
    );

    // A revision that behaves is promoted to every node after its window.
    let bytes = std::fs::read(guests::SWAP_A).unwrap();
    let (status, json) = admin_call(
        b.admin.unwrap(),
        "POST",
        "/fleet/policy?canary=50&window=0.5",
        bytes,
    )
    .await;
    assert_eq!(status, 200, "{json}");
    let sha = json["sha256"].as_str().unwrap().to_string();
    for p in [&a, &b] {
        wait_revision(p, &sha).await;
    }
    assert_eq!(fleet(&a).await["rollout"]["stage"], "fleet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_a_redis_cluster() {
    // Three masters, no replicas: the smallest Redis Cluster.
    let cluster_args = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"];
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(Redis::start_with(&cluster_args).await);
    }
    let addrs: Vec<String> = servers
        .iter()
        .map(|r| format!("127.0.0.1:{}", r.port))
        .collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    guarded("the cluster is up", async {
        while !servers
            .iter()
            .all(|r| r.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    let url = format!(
        "redis-cluster://{}?node={}&node={}",
        addrs[0], addrs[1], addrs[2]
    );
    let origin = origin().await;
    let ns = unique("cluster");
    let start = |name: &'static str| {
        let (url, ns) = (url.clone(), ns.clone());
        let origin = &origin;
        async move {
            let p = ProxyBuilder::for_origin(origin)
                .admin(None)
                .toml(&format!(
                    "[cache]\ncapacity = \"64MiB\"\n[cache.shared]\nurl = \"{url}\"\nnamespace = \"{ns}\"\nnode = \"{name}\"\nheartbeat = \"100ms\"\nchunk_size = \"256KiB\""
                ))
                .start()
                .await;
            wait_stats(&p, "the node connects to the cluster", |s| {
                s["state"] == "closed"
            })
            .await;
            p
        }
    };
    let a = start("a").await;
    let b = start("b").await;
    // Objects land on different shards; each one's chunks on its head's shard.
    for path in ["/x", "/y", "/z", "/big"] {
        get_on(&a, path, &[]).await;
    }
    wait_stats(&a, "node a writes four objects", |s| s["stores"] == 4).await;
    for path in ["/x", "/y", "/z", "/big"] {
        let (s, cs, _) = get_on(&b, path, &[]).await;
        assert_eq!(s, 200);
        assert!(cs.contains("detail=shared"), "{path}: {cs}");
    }
    assert_eq!(origin.hits(), 4);
    let (_, _, body) = get_on(&b, "/big", &[]).await;
    assert!(body == big_body());
    // A tag purge on b (its index and the heads on three shards), seen on a.
    let (status, json) = admin_call(
        b.admin.unwrap(),
        "POST",
        "/cache/purge",
        br#"{"tag": "t1"}"#.to_vec(),
    )
    .await;
    assert_eq!(
        (status, &json["fleet"]["sent"]),
        (StatusCode::OK, &Value::Bool(true)),
        "{json}"
    );
    until_not_own_copy(&a, "/x", "the purge reaches node a").await;
    // A policy published on a serves on b.
    let bytes = std::fs::read(guests::SWAP_B).unwrap();
    let (status, json) = admin_call(a.admin.unwrap(), "POST", "/fleet/policy", bytes).await;
    assert_eq!(status, 200, "{json}");
    wait_revision(&b, json["sha256"].as_str().unwrap()).await;
}
