//! The guests' `cache` import (`sluice:policy@0.2.1`) over real sockets, through the
//! `cache-import` guest: `peek` before and after a stored GET, purge by tag and by key (hard
//! and soft), the import without `[cache]`, no purge from the rehearsal of a new revision; and
//! a component built for 0.2.0 (`prev-minor`)
//! loading and serving on this 0.2.1 host, at start and by upload.

use http::{HeaderMap, StatusCode};
use serde_json::Value;
use sluice_tests::*;

/// The `Host` of every request.
const HOST: &str = "example.test";
/// The default cache key of `GET /page` with `Host: example.test` (what the guest peeks at),
/// percent-encoded for a query parameter.
const PAGE_KEY: &str = "http%3A%2F%2Fexample.test%3A80%2Fpage";
/// The config's cache.
const CACHE: &str = "[cache]\ncapacity = \"1MiB\"";

/// An origin answering every request `200 hello` with `cache-control: max-age=100` and
/// `surrogate-key: sk` (a tag the cache takes from the response).
async fn origin() -> Origin {
    Origin::start(|_req| async {
        let mut r = text(200, "hello");
        let h = r.headers_mut();
        h.insert("cache-control", "max-age=100".parse().unwrap());
        h.insert("surrogate-key", "sk".parse().unwrap());
        r
    })
    .await
}

/// A proxy (with an admin listener) in front of `origin`, run by `module`, with `extra` TOML.
async fn proxy(origin: &Origin, module: &str, extra: &str) -> TestProxy {
    ProxyBuilder::for_origin(origin)
        .admin(None)
        .policy(module, "", "")
        .toml(extra)
        .start()
        .await
}

/// A whole response.
struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Got {
    fn h(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The `Cache-Status` field split on `;`, trimmed (empty without one).
    fn cache_status(&self) -> Vec<String> {
        self.h("cache-status")
            .map(|v| v.split(';').map(|t| t.trim().to_owned()).collect())
            .unwrap_or_default()
    }
}

/// `GET path` with `Host: example.test` over a new connection.
async fn fetch(p: &TestProxy, path: &str) -> Got {
    let what = format!("GET {path} answered");
    let resp = guarded(&what, send(&mut h1(p.http).await, get(path, HOST))).await;
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = guarded(&what, body_bytes(resp)).await;
    Got {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// A guest endpoint (`/_cache/...`): asserts 200 and returns the body.
async fn guest(p: &TestProxy, path: &str) -> String {
    let got = fetch(p, path).await;
    assert_eq!(got.status, StatusCode::OK, "{path}: {}", got.body);
    got.body
}

/// `cache::peek(key)` as the guest reports it (`Value::Null` for none).
async fn peek(p: &TestProxy, key: &str) -> Value {
    let body = guest(p, &format!("/_cache/peek?key={key}")).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("peek: not JSON ({e}): {body:?}"))
}

/// The count a guest purge endpoint answered.
async fn purge(p: &TestProxy, path: &str) -> u64 {
    let body = guest(p, path).await;
    body.parse()
        .unwrap_or_else(|_| panic!("{path}: not a count: {body:?}"))
}

#[tokio::test]
async fn peek_reports_a_stored_get_and_purge_tag_removes_it() {
    let origin = origin().await;
    let p = proxy(&origin, guests::CACHE_IMPORT, CACHE).await;

    assert_eq!(peek(&p, PAGE_KEY).await, Value::Null, "nothing stored yet");

    let first = fetch(&p, "/page").await;
    assert_eq!(
        (first.status, first.body.as_str()),
        (StatusCode::OK, "hello")
    );
    let cs = first.cache_status();
    assert!(cs.iter().any(|t| t == "fwd=uri-miss"), "{cs:?}");
    assert!(cs.iter().any(|t| t == "stored"), "{cs:?}");
    assert_eq!(origin.hits(), 1);

    let entry = peek(&p, PAGE_KEY).await;
    assert_eq!(entry["status"], 200, "{entry}");
    assert_eq!(entry["size"], 5, "{entry}");
    let ttl = entry["ttl"].as_i64().unwrap();
    assert!((90..=100).contains(&ttl), "ttl of max-age=100: {entry}");
    assert!(entry["age"].as_u64().unwrap() <= 10, "{entry}");
    let mut tags: Vec<&str> = entry["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, ["all", "sk"], "the decision's tag and Surrogate-Key");
    assert_eq!(origin.hits(), 1, "peeking never reaches the origin");

    let hit = fetch(&p, "/page").await;
    let cs = hit.cache_status();
    assert!(cs.iter().any(|t| t == "hit"), "{cs:?}");
    assert_eq!(origin.hits(), 1);

    assert_eq!(purge(&p, "/_cache/purge-tag?tag=nothing").await, 0);
    assert_eq!(purge(&p, "/_cache/purge-tag?tag=all").await, 1);
    assert_eq!(peek(&p, PAGE_KEY).await, Value::Null, "purged");

    let again = fetch(&p, "/page").await;
    assert_eq!(again.status, StatusCode::OK);
    let cs = again.cache_status();
    assert!(cs.iter().any(|t| t == "fwd=uri-miss"), "{cs:?}");
    assert_eq!(origin.hits(), 2, "the purged response was fetched again");
    // The tag from the response's Surrogate-Key purges it too.
    assert_eq!(purge(&p, "/_cache/purge-tag?tag=sk").await, 1);
    assert_eq!(peek(&p, PAGE_KEY).await, Value::Null);
}

#[tokio::test]
async fn purge_key_soft_marks_stale_and_hard_removes() {
    let origin = origin().await;
    let p = proxy(&origin, guests::CACHE_IMPORT, CACHE).await;
    fetch(&p, "/page").await;
    assert_eq!(origin.hits(), 1);

    assert_eq!(
        purge(
            &p,
            "/_cache/purge-key?key=http%3A%2F%2Fexample.test%3A80%2Fother"
        )
        .await,
        0
    );
    assert_eq!(
        purge(&p, &format!("/_cache/purge-key?key={PAGE_KEY}&soft=1")).await,
        1
    );
    let entry = peek(&p, PAGE_KEY).await;
    assert!(
        entry["ttl"].as_i64().unwrap() <= 0,
        "soft purge: stale {entry}"
    );

    let refetched = fetch(&p, "/page").await;
    assert_eq!(refetched.status, StatusCode::OK);
    let cs = refetched.cache_status();
    assert!(
        !cs.iter().any(|t| t == "hit"),
        "a stale object is not a hit: {cs:?}"
    );
    assert_eq!(
        origin.hits(),
        2,
        "the soft-purged response went to the origin"
    );
    let entry = peek(&p, PAGE_KEY).await;
    assert!(
        entry["ttl"].as_i64().unwrap() > 0,
        "stored fresh again: {entry}"
    );

    assert_eq!(
        purge(&p, &format!("/_cache/purge-key?key={PAGE_KEY}")).await,
        1
    );
    assert_eq!(peek(&p, PAGE_KEY).await, Value::Null);
}

#[tokio::test]
async fn without_a_cache_peek_is_none_and_purges_are_zero() {
    let origin = origin().await;
    let p = proxy(&origin, guests::CACHE_IMPORT, "").await;
    for _ in 0..2 {
        let got = fetch(&p, "/page").await;
        assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "hello"));
        assert_eq!(got.h("cache-status"), None, "no cache, no Cache-Status");
    }
    assert_eq!(origin.hits(), 2);
    assert_eq!(peek(&p, PAGE_KEY).await, Value::Null);
    assert_eq!(purge(&p, "/_cache/purge-tag?tag=all").await, 0);
    assert_eq!(
        purge(&p, &format!("/_cache/purge-key?key={PAGE_KEY}")).await,
        0
    );
}

#[tokio::test]
async fn rehearsing_a_new_revision_purges_nothing_but_real_requests_do() {
    let origin = origin().await;
    let p = proxy(&origin, guests::CACHE_IMPORT, CACHE).await;
    let admin = p.admin.unwrap();
    fetch(&p, "/page").await;
    assert_ne!(peek(&p, PAGE_KEY).await, Value::Null);

    // cache-import purges tag `all` on every POST, and rehearsal sends `POST /api/items`:
    // loading it again (after another revision) must not touch the live cache.
    for module in [guests::PREV_MINOR, guests::CACHE_IMPORT] {
        let wasm = std::fs::read(module).unwrap();
        let (code, json) = admin_call(admin, "PUT", "/policy", wasm).await;
        assert_eq!(code, StatusCode::OK, "{json}");
    }
    assert_ne!(
        peek(&p, PAGE_KEY).await,
        Value::Null,
        "the rehearsal's POST purged nothing"
    );

    let post = http::Request::builder()
        .method("POST")
        .uri("/api/items")
        .header("host", HOST)
        .body(full("x"))
        .unwrap();
    let resp = guarded("POST answered", send(&mut h1(p.http).await, post)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-purged"), Some("1"));
    assert_eq!(peek(&p, PAGE_KEY).await, Value::Null, "a real POST purges");
}

/// Whether `haystack` contains `needle`.
fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_component_built_for_0_2_0_loads_and_serves_on_this_host() {
    let wasm = std::fs::read(guests::PREV_MINOR).unwrap();
    assert!(
        contains(&wasm, "sluice:policy/types@0.2.0")
            && !contains(&wasm, "sluice:policy/types@0.2.1"),
        "prev-minor imports sluice:policy@0.2.0 only"
    );

    // Loaded at start (with a cache, which it does not import).
    let origin = origin().await;
    let p = proxy(&origin, guests::PREV_MINOR, CACHE).await;
    for _ in 0..2 {
        let got = fetch(&p, "/page").await;
        assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "hello"));
        assert_eq!(got.h("x-prev-minor"), Some("1"));
        assert_eq!(
            got.h("x-prev-minor-endpoints"),
            Some("1"),
            "balancer import works"
        );
    }
    let status = policy_status(p.admin.unwrap()).await;
    assert_eq!(status["active"]["traps"], 0, "{status}");

    // Uploaded over a 0.2.1 component.
    let q = proxy(&origin, guests::CACHE_IMPORT, CACHE).await;
    assert_eq!(fetch(&q, "/page").await.h("x-prev-minor"), None);
    let (code, json) = admin_call(q.admin.unwrap(), "PUT", "/policy", wasm).await;
    assert_eq!(code, StatusCode::OK, "{json}");
    let got = fetch(&q, "/other").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.h("x-prev-minor"), Some("1"));
}
