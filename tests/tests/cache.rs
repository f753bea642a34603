//! The HTTP cache (RFC 9111, `[cache]`) over real sockets, against the behaviour contract in
//! `notes/cache-spec.md`: storability and freshness (s-maxage, max-age, Expires, heuristic,
//! Age), response and request directives, validation (ETag, Last-Modified, client
//! conditionals), Vary, invalidation by unsafe methods, HEAD and Range from stored objects,
//! stale-while-revalidate and stale-if-error, request coalescing and hit-for-miss, policy
//! control through the `cache-policy` guest, tags and admin purges, `/stats`, the memory bound,
//! byte-exact bodies over h1/h2c/TLS, and key isolation.
//!
//! Nothing sleeps to synchronise: responses are made stale with `Age`, a past `Date` or
//! `Expires`; background work (a stale-while-revalidate refresh, waiters piling up behind a
//! fetch) is observed by polling the origin's request count or `/stats` in bounded loops.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use sluice_tests::*;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `Host` of every request unless a test says otherwise.
const HOST: &str = "example.test";
/// The cache's name in `Cache-Status` by default.
const NAME: &str = "sluice";
/// `capacity = "1MiB"` in bytes.
const CAPACITY: u64 = 1 << 20;
/// Outlier detection would eject the only endpoint after a run of 503s; these tests script
/// 503s on purpose, so it is off in every cache test's pool.
const NO_OUTLIER: &str = "[pool.outlier_detection]\nenabled = false\n";
/// Interval between two polls of a condition (bounded by [`guarded`]).
const POLL: Duration = Duration::from_millis(5);

// ------------------------------------------------------------------ scripted origin

/// One request as the scripted origin saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// 1-based position among every request this origin received.
    n: usize,
    /// 1-based position among the requests for this path.
    nth: usize,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Seen {
    fn path(&self) -> &str {
        self.uri.path()
    }

    /// Request header `name` as text.
    fn h(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// An [`Origin`] whose every answer is decided by the test from the request it saw, and that
/// keeps a log of those requests.
struct Scripted {
    origin: Origin,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    /// Requests received so far.
    fn hits(&self) -> usize {
        self.origin.hits()
    }

    /// Requests received so far for `path`.
    fn hits_for(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path() == path)
            .count()
    }

    /// The requests received so far for `path`, in order.
    fn seen_for(&self, path: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path() == path)
            .collect()
    }

    /// Every request received so far, in order.
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The latest request received.
    fn last(&self) -> Seen {
        self.seen().pop().expect("the origin saw a request")
    }
}

/// A scripted origin answering at once with `f(request)`.
async fn scripted<F>(f: F) -> Scripted
where
    F: Fn(&Seen) -> Response<Body> + Send + Sync + 'static,
{
    scripted_async(move |s: Seen| std::future::ready(f(&s))).await
}

/// A scripted origin whose answers may wait (on a [`Gate`], say) before they are sent.
async fn scripted_async<F, Fut>(f: F) -> Scripted
where
    F: Fn(Seen) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let f = Arc::new(f);
    let origin = Origin::start(move |req: Request<Incoming>| {
        let (parts, body) = req.into_parts();
        let s = {
            let mut log = log.lock().unwrap();
            let nth = 1 + log
                .iter()
                .filter(|s| s.uri.path() == parts.uri.path())
                .count();
            let s = Seen {
                n: log.len() + 1,
                nth,
                method: parts.method,
                uri: parts.uri,
                headers: parts.headers,
            };
            log.push(s.clone());
            s
        };
        let f = f.clone();
        async move {
            let _ = body.collect().await;
            f(s).await
        }
    })
    .await;
    Scripted { origin, seen }
}

/// A response with `status`, the header fields `headers` (appended in order) and `body`.
fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Body> {
    let mut r = text(status, body);
    for (name, value) in headers {
        r.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    r
}

/// An origin answer with `etag` and `cache-control: cc`: 304 when the request's
/// `If-None-Match` is `etag`, else 200 with `body`.
fn validated(s: &Seen, etag: &str, cc: &str, body: &'static str) -> Response<Body> {
    let headers = [("etag", etag), ("cache-control", cc)];
    if s.h("if-none-match") == Some(etag) {
        reply(304, &headers, "")
    } else {
        reply(200, &headers, body)
    }
}

/// A latch an origin's answers wait on until the test (or another request) opens it.
#[derive(Clone)]
struct Gate(Arc<tokio::sync::watch::Sender<bool>>);

impl Gate {
    fn new() -> Gate {
        Gate(Arc::new(tokio::sync::watch::channel(false).0))
    }

    fn open(&self) {
        self.0.send_replace(true);
    }

    async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

// ------------------------------------------------------------------------ dates

/// `t` as an IMF-fixdate (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (H. Hinnant's algorithm); 1970-01-01 was a Thursday.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
    )
}

/// The HTTP date `secs` seconds from now (negative: in the past).
fn date_in(secs: i64) -> String {
    let now = SystemTime::now();
    let delta = Duration::from_secs(secs.unsigned_abs());
    http_date(if secs >= 0 { now + delta } else { now - delta })
}

// ---------------------------------------------------------------------- clients

/// A whole response: status, header fields and collected body.
#[derive(Debug)]
struct Got {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Got {
    /// Header `name` as text.
    fn h(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The `Age` header as a number, if present.
    fn age(&self) -> Option<u64> {
        self.h("age").map(|a| {
            a.parse()
                .unwrap_or_else(|_| panic!("Age is not a number: {a:?}"))
        })
    }
}

/// A request `method path` with `Host: example.test` (unless `headers` has a `host`) and the
/// fields `headers`, with an empty body.
fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        b = b.header("host", HOST);
    }
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    b.body(full("")).unwrap()
}

/// Sends `req` on `c` and collects the whole response.
async fn call_on(c: &mut H1, req: Request<Body>) -> Got {
    let what = format!("{} {} answered", req.method(), req.uri());
    let resp = guarded(&what, send(c, req)).await;
    collect(&what, resp).await
}

async fn collect(what: &str, resp: Response<Incoming>) -> Got {
    let (parts, body) = resp.into_parts();
    let body = guarded(what, body.collect())
        .await
        .unwrap_or_else(|e| panic!("{what}: body failed: {e}"))
        .to_bytes();
    Got {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// Sends `req` over a new HTTP/1.1 connection to `addr`.
async fn call(addr: SocketAddr, req: Request<Body>) -> Got {
    call_on(&mut h1(addr).await, req).await
}

/// `GET path` through the proxy.
async fn fetch(p: &TestProxy, path: &str) -> Got {
    call(p.http, request("GET", path, &[])).await
}

/// `GET path` through the proxy with extra request header fields.
async fn fetch_with(p: &TestProxy, path: &str, headers: &[(&str, &str)]) -> Got {
    call(p.http, request("GET", path, headers)).await
}

// ------------------------------------------------------------------ Cache-Status

/// The `Cache-Status` members and parameters of `resp`: the field split on `;`, trimmed, e.g.
/// `["sluice", "fwd=uri-miss", "stored"]`. Empty when the field is absent.
fn cache_status(resp: &Got) -> Vec<String> {
    resp.headers
        .get_all("cache-status")
        .iter()
        .flat_map(|v| {
            v.to_str()
                .unwrap()
                .split(';')
                .map(|t| t.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether token `want` is in `cs`; a `want` ending in `=` matches any token with that prefix.
fn has_token(cs: &[String], want: &str) -> bool {
    cs.iter().any(|t| {
        if want.ends_with('=') {
            t.starts_with(want)
        } else {
            t == want
        }
    })
}

/// Asserts `Cache-Status` has every token in `want`.
#[track_caller]
fn assert_tokens(resp: &Got, want: &[&str]) {
    let cs = cache_status(resp);
    for w in want {
        assert!(has_token(&cs, w), "Cache-Status {cs:?} lacks `{w}`");
    }
}

/// Asserts `Cache-Status` is present and has none of the tokens in `unwanted`.
#[track_caller]
fn assert_lacks(resp: &Got, unwanted: &[&str]) {
    let cs = cache_status(resp);
    assert!(!cs.is_empty(), "no Cache-Status on {resp:?}");
    for u in unwanted {
        assert!(!has_token(&cs, u), "Cache-Status {cs:?} has `{u}`");
    }
}

/// Asserts `resp` was served from a stored object without asking the origin.
#[track_caller]
fn assert_hit(resp: &Got) {
    assert_tokens(resp, &["hit"]);
    assert_lacks(resp, &["fwd="]);
    assert!(resp.age().is_some(), "a hit carries Age: {resp:?}");
}

/// Asserts `resp` went to the origin because nothing was stored for its key.
#[track_caller]
fn assert_miss(resp: &Got) {
    assert_tokens(resp, &["fwd=uri-miss"]);
    assert_lacks(resp, &["hit"]);
}

/// The `ttl=` parameter of `Cache-Status`.
#[track_caller]
fn ttl(resp: &Got) -> i64 {
    let cs = cache_status(resp);
    let t = cs
        .iter()
        .find_map(|t| t.strip_prefix("ttl="))
        .unwrap_or_else(|| panic!("Cache-Status {cs:?} has no ttl"));
    t.parse()
        .unwrap_or_else(|_| panic!("ttl is not a number in {cs:?}"))
}

// ------------------------------------------------------------------ proxy, admin

/// A proxy (with an admin listener) in front of `origin` with `[cache] capacity = "1MiB"` plus
/// the `[cache]` lines `cache`.
fn builder(origin: &Origin, cache: &str) -> ProxyBuilder {
    ProxyBuilder::new()
        .pool_toml("web", &[origin.addr], NO_OUTLIER)
        .admin(None)
        .toml(&format!("[cache]\ncapacity = \"1MiB\"\n{cache}"))
}

/// [`builder`] with the default cache settings, started.
async fn cached(origin: &Scripted) -> TestProxy {
    builder(&origin.origin, "").start().await
}

/// [`cached`] with the `cache-policy` guest deciding.
async fn cached_with_guest(origin: &Scripted) -> TestProxy {
    builder(&origin.origin, "")
        .policy(guests::CACHE_POLICY, "", "")
        .start()
        .await
}

/// The `cache` object of `GET /stats`.
async fn stats(p: &TestProxy) -> Value {
    let (status, json) = admin_call(p.admin.unwrap(), "GET", "/stats", Vec::new()).await;
    assert_eq!(status, 200, "{json}");
    json["cache"].clone()
}

/// Counter `name` of a `/stats` cache object.
#[track_caller]
fn counter(stats: &Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("/stats has no number {name}: {stats}"))
}

/// Polls `/stats` until `done` holds (bounded by [`GUARD`]); returns those stats.
async fn wait_stats(p: &TestProxy, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    guarded(what, async {
        loop {
            let s = stats(p).await;
            if done(&s) {
                return s;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}

/// Polls `done` until it holds (bounded by [`GUARD`]).
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    guarded(what, async {
        while !done() {
            tokio::task::yield_now().await;
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}

/// `POST /cache/purge` with `body`.
async fn purge(p: &TestProxy, body: &Value) -> (StatusCode, Value) {
    admin_call(
        p.admin.unwrap(),
        "POST",
        "/cache/purge",
        body.to_string().into_bytes(),
    )
    .await
}

/// A purge that must succeed; returns how many entries it purged.
async fn purged(p: &TestProxy, body: Value) -> u64 {
    let (status, json) = purge(p, &body).await;
    assert_eq!(status, 200, "purge {body}: {json}");
    assert_eq!(
        json["soft"],
        body.get("soft").cloned().unwrap_or(json!(false)),
        "purge {body}: {json}"
    );
    json["purged"]
        .as_u64()
        .unwrap_or_else(|| panic!("purge {body}: no count in {json}"))
}

/// An origin answering `200 "<path> <nth>"` with `cache-control: <cc>` for every request.
async fn always(cc: &'static str) -> Scripted {
    scripted(move |s| {
        reply(
            200,
            &[("cache-control", cc)],
            format!("{} {}", s.path(), s.nth),
        )
    })
    .await
}

// ========================================================================= tests

#[test]
fn http_date_formats_imf_fixdate() {
    let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
    assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
    assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
}

#[tokio::test]
async fn a_fresh_response_is_stored_then_served_without_the_origin() {
    let origin = scripted(|s| {
        reply(
            200,
            &[("cache-control", "max-age=100"), ("x-n", &s.n.to_string())],
            format!("body {}", s.n),
        )
    })
    .await;
    let p = cached(&origin).await;

    let first = fetch(&p, "/fresh").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body, "body 1");
    assert_eq!(
        cache_status(&first).first().map(String::as_str),
        Some(NAME),
        "the cache names itself first"
    );
    assert_miss(&first);
    assert_tokens(&first, &["stored"]);
    assert_eq!(first.h("x-cache"), None, "X-Cache only with x_cache = true");

    let second = fetch(&p, "/fresh").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body, "body 1");
    assert_eq!(
        second.h("x-n"),
        Some("1"),
        "stored header fields are served"
    );
    assert_eq!(
        cache_status(&second).first().map(String::as_str),
        Some(NAME)
    );
    assert_hit(&second);
    let t = ttl(&second);
    assert!((90..=100).contains(&t), "ttl {t} of max-age=100");
    assert!(second.age().unwrap() <= 10, "{second:?}");
    assert_eq!(second.h("x-cache"), None);
    assert_eq!(
        origin.hits(),
        1,
        "the second request never reached the origin"
    );
}

#[tokio::test]
async fn age_and_a_past_date_count_against_freshness() {
    let origin = scripted(|s| match s.path() {
        "/aged" => reply(200, &[("cache-control", "max-age=100"), ("age", "30")], "a"),
        _ => reply(
            200,
            &[("cache-control", "max-age=100"), ("date", &date_in(-50))],
            "d",
        ),
    })
    .await;
    let p = cached(&origin).await;

    fetch(&p, "/aged").await;
    let aged = fetch(&p, "/aged").await;
    assert_hit(&aged);
    assert!((30..40).contains(&aged.age().unwrap()), "{aged:?}");
    assert!((60..=70).contains(&ttl(&aged)), "{:?}", cache_status(&aged));

    fetch(&p, "/dated").await;
    let dated = fetch(&p, "/dated").await;
    assert_hit(&dated);
    assert!((50..60).contains(&dated.age().unwrap()), "{dated:?}");
    assert!(
        (40..=50).contains(&ttl(&dated)),
        "{:?}",
        cache_status(&dated)
    );
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn s_maxage_beats_max_age_which_beats_expires() {
    let origin = scripted(|s| {
        let (cc, expires) = match s.path() {
            "/s-maxage-fresh" => ("max-age=0, s-maxage=100", None),
            "/s-maxage-stale" => ("max-age=100, s-maxage=0", None),
            "/max-age-fresh" => ("max-age=100", Some(date_in(-100))),
            _ => ("max-age=0", Some(date_in(100))),
        };
        let mut headers = vec![("cache-control", cc)];
        if let Some(e) = &expires {
            headers.push(("expires", e.as_str()));
        }
        reply(200, &headers, format!("{} {}", s.path(), s.nth))
    })
    .await;
    let p = cached(&origin).await;

    for path in [
        "/s-maxage-fresh",
        "/s-maxage-stale",
        "/max-age-fresh",
        "/max-age-stale",
    ] {
        let first = fetch(&p, path).await;
        assert_miss(&first);
        let second = fetch(&p, path).await;
        if path.ends_with("fresh") {
            assert_hit(&second);
            assert!((90..=100).contains(&ttl(&second)), "{path}: {second:?}");
            assert_eq!(origin.hits_for(path), 1, "{path}");
        } else {
            assert_lacks(&second, &["hit"]);
            assert_eq!(second.body, format!("{path} 2"));
            assert_eq!(origin.hits_for(path), 2, "{path}");
        }
    }
}

#[tokio::test]
async fn expires_in_the_future_is_fresh_in_the_past_or_invalid_is_stale() {
    let origin = scripted(|s| {
        let expires = match s.path() {
            "/future" => date_in(100),
            "/past" => date_in(-100),
            "/zero" => "0".to_string(),
            _ => "not a date".to_string(),
        };
        reply(
            200,
            &[("date", &date_in(0)), ("expires", &expires)],
            format!("{} {}", s.path(), s.nth),
        )
    })
    .await;
    let p = cached(&origin).await;

    fetch(&p, "/future").await;
    let hit = fetch(&p, "/future").await;
    assert_hit(&hit);
    assert!((90..=100).contains(&ttl(&hit)), "{hit:?}");
    assert_eq!(origin.hits_for("/future"), 1);

    for path in ["/past", "/zero", "/garbage"] {
        fetch(&p, path).await;
        let again = fetch(&p, path).await;
        assert_lacks(&again, &["hit"]);
        assert_eq!(again.body, format!("{path} 2"));
        assert_eq!(origin.hits_for(path), 2, "Expires of {path} means stale");
    }
}

#[tokio::test]
async fn heuristic_freshness_from_last_modified_only_for_heuristic_statuses() {
    let origin = scripted(|s| {
        let lm = date_in(-10_000);
        let body = format!("{} {}", s.path(), s.nth);
        match s.path() {
            "/ok" => reply(200, &[("last-modified", &lm)], body),
            "/gone" => reply(404, &[("last-modified", &lm)], body),
            "/redirect" => reply(302, &[("last-modified", &lm), ("location", "/ok")], body),
            _ => reply(200, &[], body),
        }
    })
    .await;
    let p = cached(&origin).await;

    for (path, status) in [("/ok", 200), ("/gone", 404)] {
        let first = fetch(&p, path).await;
        assert_eq!(first.status, status);
        assert_tokens(&first, &["stored"]);
        let second = fetch(&p, path).await;
        assert_eq!(second.status, status);
        assert_hit(&second);
        // 10% of the 10000 s since Last-Modified.
        let t = ttl(&second);
        assert!((980..=1000).contains(&t), "{path}: ttl {t}");
        assert_eq!(origin.hits_for(path), 1, "{path}");
    }
    for path in ["/redirect", "/no-validator"] {
        fetch(&p, path).await;
        let second = fetch(&p, path).await;
        assert_lacks(&second, &["hit"]);
        assert_eq!(origin.hits_for(path), 2, "{path} has no freshness");
    }
}

#[tokio::test]
async fn cache_control_conflicting_duplicates_and_malformed_values_are_stale_overflow_is_capped() {
    let origin = scripted(|s| {
        let cc = match s.path() {
            "/duplicate" => "max-age=100, max-age=0",
            "/repeated" => "max-age=100, max-age=100",
            "/overflow" => "max-age=99999999999999",
            "/letters" => "max-age=1a",
            _ => "max-age=-5",
        };
        reply(
            200,
            &[("cache-control", cc)],
            format!("{} {}", s.path(), s.nth),
        )
    })
    .await;
    let p = cached(&origin).await;

    // RFC 9111 §4.2.1 lets a cache use the first of conflicting values or treat the response
    // as stale; sluice takes the most restrictive reading.
    fetch(&p, "/duplicate").await;
    let dup = fetch(&p, "/duplicate").await;
    assert_lacks(&dup, &["hit"]);
    assert_eq!(
        origin.hits_for("/duplicate"),
        2,
        "conflicting max-age is stale"
    );
    // The same value twice is no conflict.
    fetch(&p, "/repeated").await;
    let rep = fetch(&p, "/repeated").await;
    assert_hit(&rep);
    assert!((90..=100).contains(&ttl(&rep)));

    fetch(&p, "/overflow").await;
    let big = fetch(&p, "/overflow").await;
    assert_hit(&big);
    let t = ttl(&big);
    assert!(
        (2_147_483_600..=2_147_483_648).contains(&t),
        "overflowing delta-seconds count as 2147483648: ttl {t}"
    );

    for path in ["/letters", "/negative"] {
        fetch(&p, path).await;
        let again = fetch(&p, path).await;
        assert_lacks(&again, &["hit"]);
        assert_eq!(origin.hits_for(path), 2, "malformed max-age of {path}");
    }
}

#[tokio::test]
async fn no_store_response_is_not_stored() {
    let origin = always("no-store, max-age=100").await;
    let p = cached(&origin).await;
    let first = fetch(&p, "/ns").await;
    assert_eq!(first.body, "/ns 1");
    assert_miss(&first);
    assert_lacks(&first, &["stored"]);
    let second = fetch(&p, "/ns").await;
    assert_eq!(second.body, "/ns 2");
    assert_lacks(&second, &["hit", "stored"]);
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn no_cache_response_is_revalidated_on_every_use() {
    let origin = scripted(|s| validated(s, "\"v1\"", "no-cache", "payload")).await;
    let p = cached(&origin).await;

    let first = fetch(&p, "/nc").await;
    assert_miss(&first);
    assert_tokens(&first, &["stored"]);
    for round in 2..=3 {
        let again = fetch(&p, "/nc").await;
        assert_eq!(again.status, 200, "the client gets the stored body");
        assert_eq!(again.body, "payload");
        assert_tokens(&again, &["fwd=stale", "fwd-status=304"]);
        assert!(again.age().is_some(), "{again:?}");
        assert_eq!(
            origin.hits(),
            round,
            "no-cache: the origin is asked every time"
        );
        assert_eq!(
            origin.last().h("if-none-match"),
            Some("\"v1\""),
            "the revalidation is conditional"
        );
    }
}

#[tokio::test]
async fn private_response_is_not_stored() {
    let origin = always("private, max-age=100").await;
    let p = cached(&origin).await;
    let first = fetch(&p, "/private").await;
    assert_lacks(&first, &["stored"]);
    let second = fetch(&p, "/private").await;
    assert_lacks(&second, &["hit"]);
    assert_eq!(second.body, "/private 2");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn qualified_private_and_no_cache_withhold_only_the_named_fields() {
    let origin = scripted(|_| {
        reply(
            200,
            &[
                (
                    "cache-control",
                    "max-age=100, private=\"x-secret\", no-cache=\"x-internal\"",
                ),
                ("x-secret", "s"),
                ("x-internal", "i"),
                ("x-kept", "k"),
            ],
            "shared part",
        )
    })
    .await;
    let p = cached(&origin).await;
    let first = fetch(&p, "/fields").await;
    assert_tokens(&first, &["stored"]);
    assert_eq!(
        first.h("x-secret"),
        Some("s"),
        "the origin's own answer is intact"
    );

    let hit = fetch(&p, "/fields").await;
    assert_hit(&hit);
    assert_eq!(hit.body, "shared part");
    assert_eq!(hit.h("x-kept"), Some("k"));
    assert_eq!(
        hit.h("x-secret"),
        None,
        "private=\"x-secret\" is not stored"
    );
    assert_eq!(
        hit.h("x-internal"),
        None,
        "no-cache=\"x-internal\" is not sent from the cache"
    );
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn set_cookie_responses_are_stored_only_when_public() {
    let origin = scripted(|s| {
        let cc = if s.path() == "/public" {
            "public, max-age=100"
        } else {
            "max-age=100"
        };
        reply(
            200,
            &[("cache-control", cc), ("set-cookie", "session=1")],
            format!("{} {}", s.path(), s.nth),
        )
    })
    .await;
    let p = cached(&origin).await;
    fetch(&p, "/cookie").await;
    assert_lacks(&fetch(&p, "/cookie").await, &["hit"]);
    assert_eq!(origin.hits_for("/cookie"), 2);
    fetch(&p, "/public").await;
    assert_hit(&fetch(&p, "/public").await);
    assert_eq!(origin.hits_for("/public"), 1);
}

#[tokio::test]
async fn authorization_uses_the_cache_only_with_public_s_maxage_or_must_revalidate() {
    let origin = scripted(|s| {
        let cc = match s.path() {
            "/public" => "public, max-age=100",
            "/s-maxage" => "s-maxage=100",
            "/must" => "max-age=100, must-revalidate",
            _ => "max-age=100",
        };
        reply(
            200,
            &[("cache-control", cc)],
            format!("{} {}", s.path(), s.nth),
        )
    })
    .await;
    let p = cached(&origin).await;
    let auth = [("authorization", "Bearer t0ken")];

    for path in ["/public", "/s-maxage", "/must"] {
        let first = fetch_with(&p, path, &auth).await;
        assert_tokens(&first, &["stored"]);
        let second = fetch_with(&p, path, &auth).await;
        assert_hit(&second);
        assert_eq!(second.body, format!("{path} 1"));
        assert_eq!(origin.hits_for(path), 1, "{path}");
    }

    // Without public: the answer to an authorised request is not stored...
    let first = fetch_with(&p, "/plain", &auth).await;
    assert_lacks(&first, &["stored"]);
    let anonymous = fetch(&p, "/plain").await;
    assert_miss(&anonymous);
    assert_eq!(anonymous.body, "/plain 2");
    // ...and what an anonymous request stored is not served to an authorised one.
    let authorised = fetch_with(&p, "/plain", &auth).await;
    assert_lacks(&authorised, &["hit"]);
    assert_eq!(authorised.body, "/plain 3");
    assert_hit(&fetch(&p, "/plain").await);
    assert_eq!(origin.hits_for("/plain"), 3);
}

#[tokio::test]
async fn must_revalidate_and_proxy_revalidate_never_serve_stale_on_error() {
    let origin = scripted(|s| {
        if s.nth > 1 {
            return reply(503, &[], "down");
        }
        let cc = match s.path() {
            "/must" => "max-age=1, must-revalidate, stale-if-error=600",
            "/proxy" => "max-age=1, proxy-revalidate, stale-if-error=600",
            _ => "max-age=1, stale-if-error=600",
        };
        reply(200, &[("cache-control", cc), ("age", "5")], "v1")
    })
    .await;
    let p = cached(&origin).await;

    for path in ["/must", "/proxy"] {
        assert_eq!(fetch(&p, path).await.body, "v1");
        let after = fetch(&p, path).await;
        assert_eq!(
            after.status, 503,
            "{path}: the origin's error, not stale: {after:?}"
        );
        assert_eq!(after.body, "down");
        assert_lacks(&after, &["hit", "detail=stale-if-error"]);
        assert_eq!(origin.hits_for(path), 2);
    }
    // The same response without the directive is served stale (stale-if-error=600).
    fetch(&p, "/control").await;
    let control = fetch(&p, "/control").await;
    assert_eq!(control.status, 200);
    assert_eq!(control.body, "v1");
    assert_tokens(&control, &["detail=stale-if-error"]);
}

#[tokio::test]
async fn request_no_cache_and_pragma_go_upstream_and_replace_the_entry() {
    let origin = always("max-age=100").await;
    let p = cached(&origin).await;

    assert_eq!(fetch(&p, "/r").await.body, "/r 1");
    let forced = fetch_with(&p, "/r", &[("cache-control", "no-cache")]).await;
    assert_eq!(forced.body, "/r 2");
    assert_tokens(&forced, &["fwd=request", "fwd-status=200", "stored"]);
    let hit = fetch(&p, "/r").await;
    assert_hit(&hit);
    assert_eq!(hit.body, "/r 2", "the forced fetch replaced the entry");

    let pragma = fetch_with(&p, "/r", &[("pragma", "no-cache")]).await;
    assert_eq!(pragma.body, "/r 3");
    assert_tokens(&pragma, &["fwd=request"]);
    // Pragma is ignored when the request has Cache-Control.
    let both = fetch_with(
        &p,
        "/r",
        &[("pragma", "no-cache"), ("cache-control", "max-age=1000")],
    )
    .await;
    assert_hit(&both);
    assert_eq!(both.body, "/r 3");
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn request_no_store_does_not_store_the_response() {
    let origin = always("max-age=100").await;
    let p = cached(&origin).await;
    let no_store = [("cache-control", "no-store")];

    let first = fetch_with(&p, "/ns", &no_store).await;
    assert_eq!(first.body, "/ns 1");
    assert_lacks(&first, &["stored"]);
    let second = fetch(&p, "/ns").await;
    assert_miss(&second);
    assert_eq!(second.body, "/ns 2");
    // With an entry stored, a no-store request may be served from it or go upstream, but
    // what it fetched must not replace the entry.
    let third = fetch_with(&p, "/ns", &no_store).await;
    assert_lacks(&third, &["stored"]);
    let fourth = fetch(&p, "/ns").await;
    assert_hit(&fourth);
    assert_eq!(fourth.body, "/ns 2");
}

#[tokio::test]
async fn request_max_age_limits_the_age_of_what_is_served() {
    let origin = scripted(|s| {
        reply(
            200,
            &[("cache-control", "max-age=100"), ("age", "50")],
            format!("v{}", s.n),
        )
    })
    .await;
    let p = cached(&origin).await;

    fetch(&p, "/ma").await;
    let young_enough = fetch_with(&p, "/ma", &[("cache-control", "max-age=1000")]).await;
    assert_hit(&young_enough);
    assert_eq!(origin.hits(), 1);
    let too_old = fetch_with(&p, "/ma", &[("cache-control", "max-age=30")]).await;
    assert_tokens(&too_old, &["fwd=request", "fwd-status=200"]);
    assert_eq!(too_old.body, "v2");
    let zero = fetch_with(&p, "/ma", &[("cache-control", "max-age=0")]).await;
    assert_tokens(&zero, &["fwd=request", "fwd-status=200"]);
    assert_eq!(zero.body, "v3");
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn request_max_stale_accepts_a_stale_entry_within_its_bound() {
    // Stale by 5 s on arrival, no validators.
    let origin = scripted(|s| {
        reply(
            200,
            &[("cache-control", "max-age=10"), ("age", "15")],
            format!("v{}", s.n),
        )
    })
    .await;
    let p = cached(&origin).await;

    fetch(&p, "/stale").await;
    for value in ["max-stale=60", "max-stale"] {
        let stale = fetch_with(&p, "/stale", &[("cache-control", value)]).await;
        assert_eq!(stale.body, "v1", "{value}");
        assert_tokens(&stale, &["hit", "detail=max-stale"]);
        assert!(ttl(&stale) < 0, "{value}: {:?}", cache_status(&stale));
        assert!(stale.age().unwrap() >= 15);
    }
    assert_eq!(origin.hits(), 1);
    let strict = fetch_with(&p, "/stale", &[("cache-control", "max-stale=1")]).await;
    assert_lacks(&strict, &["hit"]);
    assert_eq!(strict.body, "v2");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn request_min_fresh_needs_that_much_freshness_left() {
    let origin = always("max-age=100").await;
    let p = cached(&origin).await;
    fetch(&p, "/mf").await;
    assert_hit(&fetch_with(&p, "/mf", &[("cache-control", "min-fresh=50")]).await);
    let not_enough = fetch_with(&p, "/mf", &[("cache-control", "min-fresh=500")]).await;
    assert_lacks(&not_enough, &["hit"]);
    assert_eq!(not_enough.body, "/mf 2");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn only_if_cached_is_504_without_an_entry_and_a_hit_with_one() {
    let origin = always("max-age=100").await;
    let p = cached(&origin).await;
    let oic = [("cache-control", "only-if-cached")];

    let none = fetch_with(&p, "/oic", &oic).await;
    assert_eq!(none.status, 504);
    assert_tokens(&none, &["detail=only-if-cached"]);
    assert_eq!(origin.hits(), 0, "only-if-cached never reaches the origin");

    fetch(&p, "/oic").await;
    let cached = fetch_with(&p, "/oic", &oic).await;
    assert_eq!(cached.status, 200);
    assert_hit(&cached);
    assert_eq!(cached.body, "/oic 1");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn etag_validation_304_updates_the_stored_headers() {
    let origin = scripted(|s| {
        if s.h("if-none-match") == Some("\"e1\"") {
            reply(
                304,
                &[
                    ("etag", "\"e1\""),
                    ("cache-control", "max-age=100"),
                    ("x-version", "2"),
                ],
                "",
            )
        } else {
            reply(
                200,
                &[
                    ("etag", "\"e1\""),
                    ("cache-control", "max-age=0"),
                    ("x-version", "1"),
                ],
                "payload",
            )
        }
    })
    .await;
    let p = cached(&origin).await;

    let first = fetch(&p, "/etag").await;
    assert_eq!(first.h("x-version"), Some("1"));
    let revalidated = fetch(&p, "/etag").await;
    assert_eq!(origin.last().h("if-none-match"), Some("\"e1\""));
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.body, "payload", "the stored body, with...");
    assert_eq!(
        revalidated.h("x-version"),
        Some("2"),
        "...the 304's headers"
    );
    assert_tokens(&revalidated, &["fwd=stale", "fwd-status=304", "stored"]);
    assert!(revalidated.age().is_some());

    let hit = fetch(&p, "/etag").await;
    assert_hit(&hit);
    assert_eq!(hit.h("x-version"), Some("2"), "the update was stored");
    assert_eq!(hit.body, "payload");
    assert!((90..=100).contains(&ttl(&hit)), "freshness from the 304");
    assert_eq!(origin.hits(), 2);
    let stats = stats(&p).await;
    assert_eq!(counter(&stats, "revalidations"), 1, "{stats}");
}

#[tokio::test]
async fn last_modified_validation_304_updates_the_stored_headers() {
    let lm = date_in(-3600);
    let l = lm.clone();
    let origin = scripted(move |s| {
        if s.h("if-modified-since") == Some(l.as_str()) {
            reply(
                304,
                &[("cache-control", "max-age=100"), ("x-version", "2")],
                "",
            )
        } else {
            reply(
                200,
                &[
                    ("last-modified", &l),
                    ("cache-control", "max-age=0"),
                    ("x-version", "1"),
                ],
                "payload",
            )
        }
    })
    .await;
    let p = cached(&origin).await;

    fetch(&p, "/lm").await;
    let revalidated = fetch(&p, "/lm").await;
    assert_eq!(origin.last().h("if-modified-since"), Some(lm.as_str()));
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.body, "payload");
    assert_eq!(revalidated.h("x-version"), Some("2"));
    assert_eq!(revalidated.h("last-modified"), Some(lm.as_str()));
    assert_tokens(&revalidated, &["fwd=stale", "fwd-status=304"]);

    let hit = fetch(&p, "/lm").await;
    assert_hit(&hit);
    assert_eq!(hit.h("x-version"), Some("2"));
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn client_conditionals_are_answered_304_from_the_cache() {
    let lm = date_in(-3600);
    let l = lm.clone();
    let origin = scripted(move |s| match s.path() {
        "/fresh" => reply(
            200,
            &[
                ("etag", "\"e1\""),
                ("last-modified", &l),
                ("cache-control", "max-age=100"),
            ],
            "payload",
        ),
        // Always stale; a conditional for "s1" is answered 304.
        _ if s.h("if-none-match") == Some("\"s1\"") => reply(
            304,
            &[("etag", "\"s1\""), ("cache-control", "max-age=0")],
            "",
        ),
        _ => reply(
            200,
            &[("etag", "\"s1\""), ("cache-control", "max-age=0")],
            "stale payload",
        ),
    })
    .await;
    let p = cached(&origin).await;

    fetch(&p, "/fresh").await;
    let inm = fetch_with(&p, "/fresh", &[("if-none-match", "\"e1\"")]).await;
    assert_eq!(inm.status, 304);
    assert!(inm.body.is_empty());
    assert_eq!(inm.h("etag"), Some("\"e1\""));
    assert_hit(&inm);
    let other = fetch_with(&p, "/fresh", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(other.status, 200);
    assert_eq!(other.body, "payload");
    assert_hit(&other);
    let ims = fetch_with(&p, "/fresh", &[("if-modified-since", &lm)]).await;
    assert_eq!(ims.status, 304);
    assert_hit(&ims);
    assert_eq!(origin.hits_for("/fresh"), 1);

    // A stale entry: the revalidation's 304 matches the client's own conditional too.
    fetch(&p, "/stale").await;
    let stale = fetch_with(&p, "/stale", &[("if-none-match", "\"s1\"")]).await;
    assert_eq!(stale.status, 304, "{stale:?}");
    assert!(stale.body.is_empty());
    assert_tokens(&stale, &["fwd=stale", "fwd-status=304"]);
    assert_eq!(origin.hits_for("/stale"), 2);
}

#[tokio::test]
async fn vary_accept_encoding_keeps_one_variant_per_value() {
    let origin = scripted(|s| {
        reply(
            200,
            &[
                ("cache-control", "max-age=100"),
                ("vary", "accept-encoding"),
            ],
            format!("enc={}", s.h("accept-encoding").unwrap_or("none")),
        )
    })
    .await;
    let p = cached(&origin).await;
    let gzip = [("accept-encoding", "gzip")];
    let br = [("accept-encoding", "br")];

    let first = fetch_with(&p, "/v", &gzip).await;
    assert_miss(&first);
    assert_tokens(&first, &["stored"]);
    let second = fetch_with(&p, "/v", &br).await;
    assert_tokens(&second, &["fwd=vary-miss", "stored"]);
    assert_eq!(second.body, "enc=br");
    for (h, want) in [(&gzip, "enc=gzip"), (&br, "enc=br")] {
        let hit = fetch_with(&p, "/v", h).await;
        assert_hit(&hit);
        assert_eq!(hit.body, want);
    }
    assert_eq!(origin.hits(), 2);
}

/// Equivalent selecting values share a variant (RFC 9111 §4.1): `Accept-Encoding` and
/// `Accept-Language` by default ignore whitespace, member order and case; a field named in
/// `[cache.vary]` compares as configured; any other field compares exactly.
#[tokio::test]
async fn vary_normalises_equivalent_values_per_field() {
    let origin = scripted(|_| {
        reply(
            200,
            &[
                ("cache-control", "max-age=100"),
                (
                    "vary",
                    "Accept-Encoding, Accept-Language, X-Device, X-Exact",
                ),
            ],
            "v",
        )
    })
    .await;
    let p = builder(&origin.origin, "[cache.vary]\nx-device = \"tokens\"\n")
        .start()
        .await;
    let ask = |ae: &'static str, al: &'static str, dev: &'static str, exact: &'static str| {
        [
            ("accept-encoding", ae),
            ("accept-language", al),
            ("x-device", dev),
            ("x-exact", exact),
        ]
    };
    let first = fetch_with(
        &p,
        "/n",
        &ask("gzip, br", "en-US, de;q=0.5", "Mobile", "a, b"),
    )
    .await;
    assert_tokens(&first, &["fwd=uri-miss", "stored"]);
    let same = fetch_with(
        &p,
        "/n",
        &ask("br,gzip", "DE ; q=0.5,en-us", "mobile", "a, b"),
    )
    .await;
    assert_hit(&same);
    assert_eq!(origin.hits(), 1);
    for (what, headers) in [
        (
            "another encoding",
            ask("gzip", "en-US, de;q=0.5", "Mobile", "a, b"),
        ),
        (
            "another weight",
            ask("gzip, br", "en-US, de;q=0.6", "Mobile", "a, b"),
        ),
        (
            "X-Exact's spacing",
            ask("gzip, br", "en-US, de;q=0.5", "Mobile", "a,b"),
        ),
    ] {
        let other = fetch_with(&p, "/n", &headers).await;
        assert_tokens(&other, &["fwd=vary-miss"]);
        assert!(!has_token(&cache_status(&other), "hit"), "{what}");
    }
}

/// `accept-encoding = "exact"` turns the default normalisation off.
#[tokio::test]
async fn vary_normalisation_can_be_turned_off_per_field() {
    let origin = always_vary("accept-encoding").await;
    let p = builder(
        &origin.origin,
        "[cache.vary]\naccept-encoding = \"exact\"\n",
    )
    .start()
    .await;
    fetch_with(&p, "/e", &[("accept-encoding", "gzip, br")]).await;
    let other = fetch_with(&p, "/e", &[("accept-encoding", "br, gzip")]).await;
    assert_tokens(&other, &["fwd=vary-miss"]);
    assert_eq!(origin.hits(), 2);
}

/// An origin that answers each path with the header fields the test's table gives it.
async fn answering(
    table: &'static [(&'static str, &'static [(&'static str, &'static str)])],
) -> Scripted {
    scripted(move |s| {
        let fields = table
            .iter()
            .find(|(p, _)| *p == s.path())
            .unwrap_or_else(|| panic!("no answer for {}", s.path()))
            .1;
        reply(200, fields, format!("{} {}", s.path(), s.nth))
    })
    .await
}

/// RFC 9213: `CDN-Cache-Control` (the default target) replaces `Cache-Control` and `Expires`
/// for this cache, directive by directive; an invalid one is ignored; other targeted fields
/// change nothing; the field is passed on to the client by default.
#[tokio::test]
async fn cdn_cache_control_takes_precedence_over_cache_control() {
    const TABLE: &[(&str, &[(&str, &str)])] = &[
        // Stored although Cache-Control says no-store.
        (
            "/store",
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
        ),
        // Not stored although Cache-Control allows it.
        (
            "/no-store",
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "no-store"),
            ],
        ),
        (
            "/private",
            &[
                ("cache-control", "public, max-age=60"),
                ("cdn-cache-control", "private"),
            ],
        ),
        (
            "/s-maxage",
            &[
                ("cache-control", "max-age=0"),
                ("cdn-cache-control", "s-maxage=60"),
            ],
        ),
        // Stored, but not fresh: used only after revalidation.
        (
            "/no-cache",
            &[
                ("cdn-cache-control", "no-cache, max-age=60"),
                ("etag", "\"e\""),
            ],
        ),
        // Expires does not count once a targeted field decides.
        (
            "/expires",
            &[
                ("expires", "Fri, 01 Jan 2100 00:00:00 GMT"),
                ("cdn-cache-control", "must-revalidate"),
            ],
        ),
        // Invalid (not a Dictionary): Cache-Control decides.
        (
            "/invalid",
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "max-age=60,"),
            ],
        ),
        // Not on the target list: no effect.
        (
            "/other",
            &[
                ("cache-control", "max-age=60"),
                ("other-cache-control", "no-store"),
            ],
        ),
    ];
    let origin = answering(TABLE).await;
    let p = cached(&origin).await;
    for (path, stored) in [
        ("/store", true),
        ("/no-store", false),
        ("/private", false),
        ("/s-maxage", true),
        ("/expires", false),
        ("/invalid", true),
        ("/other", true),
    ] {
        let first = fetch(&p, path).await;
        assert_eq!(
            has_token(&cache_status(&first), "stored"),
            stored,
            "{path}: {first:?}"
        );
        let again = fetch(&p, path).await;
        assert_eq!(
            has_token(&cache_status(&again), "hit"),
            stored,
            "{path}: {again:?}"
        );
        assert_eq!(origin.hits_for(path), if stored { 1 } else { 2 }, "{path}");
    }
    assert_eq!(
        fetch(&p, "/store").await.h("cdn-cache-control"),
        Some("max-age=60")
    );
    fetch(&p, "/no-cache").await;
    let again = fetch(&p, "/no-cache").await;
    assert_lacks(&again, &["hit"]);
    assert_eq!(
        origin.seen_for("/no-cache")[1].h("if-none-match"),
        Some("\"e\"")
    );
}

/// A configured target list: the first valid field wins; `forward_targeted = false` keeps
/// every targeted field from clients, from the origin and from the store.
#[tokio::test]
async fn the_target_list_is_configurable_and_targeted_fields_can_be_withheld() {
    let origin = answering(&[
        (
            "/ours",
            &[
                ("cache-control", "no-store"),
                ("sluice-cache-control", "max-age=60"),
                ("cdn-cache-control", "no-store"),
            ],
        ),
        (
            "/fallback",
            &[
                ("sluice-cache-control", "max-age=60, oops=\""),
                ("cdn-cache-control", "no-store"),
            ],
        ),
    ])
    .await;
    let p = builder(
        &origin.origin,
        "targeted = [\"sluice-cache-control\", \"cdn-cache-control\"]\nforward_targeted = false",
    )
    .start()
    .await;
    let first = fetch(&p, "/ours").await;
    assert_tokens(&first, &["stored"]);
    let hit = fetch(&p, "/ours").await;
    assert_hit(&hit);
    for got in [&first, &hit] {
        assert_eq!(got.h("sluice-cache-control"), None);
        assert_eq!(got.h("cdn-cache-control"), None);
        assert_eq!(got.h("cache-control"), Some("no-store"));
    }
    let first = fetch(&p, "/fallback").await;
    assert_lacks(&first, &["stored"]);
}

/// Interim responses from the upstream (103 Early Hints, 102 Processing) are read past:
/// never stored, never taken for the final response, their fields never merged into it.
/// They do not reach the client either: hyper cannot send a 1xx from a server yet
/// (hyperium/hyper#3815 for HTTP/1.1, hyperium/hyper#4114 for HTTP/2, both open).
#[tokio::test]
async fn interim_responses_from_the_upstream_are_read_past_and_never_stored() {
    let (addr, accepted, _task) = raw_origin(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
          HTTP/1.1 102 Processing\r\n\r\n\
          HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\r\nfinal",
    )
    .await;
    let p = ProxyBuilder::new()
        .pool_toml("web", &[addr], NO_OUTLIER)
        .admin(None)
        .toml("[cache]\ncapacity = \"1MiB\"\n")
        .start()
        .await;
    for round in 0..2 {
        let resp = raw(
            p.http,
            b"GET /x HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
            5,
        )
        .await;
        assert!(
            resp.starts_with("HTTP/1.1 200 OK\r\n"),
            "round {round}: {resp}"
        );
        assert_eq!(raw_body(&resp), "final");
        let head = raw_head_lower(&resp);
        assert!(!head.contains("link:"), "{resp}");
        let want = if round == 0 {
            "fwd=uri-miss; stored"
        } else {
            "; hit"
        };
        assert!(head.contains(want), "round {round}: {resp}");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// An origin whose every answer is fresh for 100 s and varies on `field`.
async fn always_vary(field: &'static str) -> Scripted {
    scripted(move |s| {
        reply(
            200,
            &[("cache-control", "max-age=100"), ("vary", field)],
            format!("{} {}", s.path(), s.nth),
        )
    })
    .await
}

#[tokio::test]
async fn vary_star_never_matches() {
    let origin = scripted(|s| {
        reply(
            200,
            &[("cache-control", "max-age=100"), ("vary", "*")],
            format!("v{}", s.n),
        )
    })
    .await;
    let p = cached(&origin).await;
    fetch(&p, "/star").await;
    let again = fetch(&p, "/star").await;
    assert_lacks(&again, &["hit"]);
    assert_eq!(again.body, "v2");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn unsafe_methods_invalidate_on_success_and_same_origin_locations() {
    // GET: cacheable. Other methods: status from `x-status` (default 200), `Location` from
    // `x-location`.
    let origin = scripted(|s| {
        if s.method == Method::GET {
            return reply(
                200,
                &[("cache-control", "max-age=100")],
                format!("{} {}", s.path(), s.nth),
            );
        }
        let status = s.h("x-status").map_or(200, |v| v.parse().unwrap());
        match s.h("x-location") {
            Some(l) => reply(status, &[("location", l)], "done"),
            None => reply(status, &[], "done"),
        }
    })
    .await;
    let p = cached(&origin).await;
    let gets = || {
        origin
            .seen()
            .iter()
            .filter(|s| s.method == Method::GET)
            .count()
    };
    let unsafe_call =
        |method: &'static str, path: &'static str, headers: Vec<(&'static str, &'static str)>| {
            call(p.http, request(method, path, &headers))
        };

    fetch(&p, "/item").await;
    assert_hit(&fetch(&p, "/item").await);

    let failed = unsafe_call("POST", "/item", vec![("x-status", "404")]).await;
    assert_eq!(failed.status, 404);
    assert_tokens(&failed, &["fwd=method"]);
    assert_hit(&fetch(&p, "/item").await);
    let options = unsafe_call("OPTIONS", "/item", vec![]).await;
    assert_eq!(options.status, 200);
    assert_hit(&fetch(&p, "/item").await);
    assert_eq!(gets(), 1);

    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let before = gets();
        let done = unsafe_call(method, "/item", vec![]).await;
        assert_eq!(done.status, 200);
        assert_tokens(&done, &["fwd=method"]);
        let after = fetch(&p, "/item").await;
        assert_miss(&after);
        assert_eq!(gets(), before + 1, "{method} invalidated /item");
        assert_hit(&fetch(&p, "/item").await);
    }

    for location in ["/item", "http://example.test/item"] {
        let before = gets();
        let created = unsafe_call(
            "POST",
            "/other",
            vec![("x-status", "201"), ("x-location", location)],
        )
        .await;
        assert_eq!(created.status, 201);
        assert_miss(&fetch(&p, "/item").await);
        assert_eq!(gets(), before + 1, "Location: {location} invalidated /item");
    }
    unsafe_call(
        "POST",
        "/other",
        vec![
            ("x-status", "201"),
            ("x-location", "http://elsewhere.test/item"),
        ],
    )
    .await;
    assert_hit(&fetch(&p, "/item").await);
}

#[tokio::test]
async fn head_is_served_from_a_stored_get_and_a_head_miss_fills_with_a_get() {
    let origin = scripted(|s| {
        reply(
            200,
            &[("cache-control", "max-age=100")],
            vec![b'x'; if s.path() == "/h" { 1234 } else { 77 }],
        )
    })
    .await;
    let p = cached(&origin).await;

    fetch(&p, "/h").await;
    let head = call(p.http, request("HEAD", "/h", &[])).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.h("content-length"), Some("1234"));
    assert!(head.body.is_empty());
    assert_hit(&head);
    assert_eq!(origin.hits(), 1);

    // A HEAD miss goes upstream as a GET (`convert_head`, on by default): the client gets
    // the head, the body goes into the cache, and the next GET is a hit.
    let head = call(p.http, request("HEAD", "/head-first", &[])).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.h("content-length"), Some("77"));
    assert!(head.body.is_empty());
    assert_tokens(&head, &["fwd=uri-miss", "stored"]);
    let seen = origin.seen_for("/head-first");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::GET);
    let get = fetch(&p, "/head-first").await;
    assert_hit(&get);
    assert_eq!(get.body.len(), 77);
    assert_eq!(origin.hits_for("/head-first"), 1);
}

/// A HEAD miss whose GET may not be stored: the client still gets the head; what follows is
/// hit-for-miss, so the next HEAD goes upstream as a HEAD.
#[tokio::test]
async fn a_head_miss_for_an_uncacheable_response_answers_the_head() {
    let origin = scripted(|_| reply(200, &[("cache-control", "no-store")], "x".repeat(5000))).await;
    let p = cached(&origin).await;
    for _ in 0..2 {
        let head = call(p.http, request("HEAD", "/n", &[])).await;
        assert_eq!(head.status, 200);
        assert_eq!(head.h("content-length"), Some("5000"));
        assert!(head.body.is_empty());
        assert_lacks(&head, &["stored"]);
    }
    let methods: Vec<Method> = origin
        .seen_for("/n")
        .into_iter()
        .map(|s| s.method)
        .collect();
    assert_eq!(methods, [Method::GET, Method::HEAD]);
    assert_eq!(fetch(&p, "/n").await.body.len(), 5000);
}

/// `convert_head = false`: a HEAD goes upstream as a HEAD and is never stored; a 200 to it
/// updates the stored GET when its validators and length agree, and makes it stale when they
/// do not (RFC 9111 §4.3.5).
#[tokio::test]
async fn without_convert_head_a_head_updates_or_invalidates_the_stored_get() {
    // The origin's ETag and X-V come from the request, so each HEAD can say what changed.
    let origin = scripted(|s| {
        let etag = s.h("x-etag").unwrap_or("\"v1\"");
        let v = s.h("x-v").unwrap_or("get");
        reply(
            200,
            &[("cache-control", "max-age=100"), ("etag", etag), ("x-v", v)],
            "hello",
        )
    })
    .await;
    let p = builder(&origin.origin, "convert_head = false")
        .start()
        .await;

    let head = call(p.http, request("HEAD", "/only", &[])).await;
    assert_eq!(head.status, 200);
    assert_lacks(&head, &["stored"]);
    assert_miss(&fetch(&p, "/only").await);
    assert_eq!(origin.seen_for("/only")[0].method, Method::HEAD);

    assert_miss(&fetch(&p, "/u").await);
    // `no-cache` makes the HEAD go upstream though a fresh GET is stored.
    let force = ("cache-control", "no-cache");
    let head = call(
        p.http,
        request(
            "HEAD",
            "/u",
            &[force, ("x-etag", "\"v1\""), ("x-v", "head")],
        ),
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(origin.seen_for("/u")[1].method, Method::HEAD);
    let get = fetch(&p, "/u").await;
    assert_hit(&get);
    assert_eq!(
        get.h("x-v"),
        Some("head"),
        "the HEAD updated the stored headers"
    );
    assert_eq!(get.body, "hello");
    assert_eq!(origin.hits_for("/u"), 2);

    // A HEAD with another ETag: the stored GET is stale, the next GET goes upstream.
    call(
        p.http,
        request("HEAD", "/u", &[force, ("x-etag", "\"v2\"")]),
    )
    .await;
    let get = fetch(&p, "/u").await;
    assert_lacks(&get, &["hit"]);
    assert_eq!(origin.hits_for("/u"), 4);
}

#[tokio::test]
async fn ranges_are_served_from_a_stored_full_response() {
    let origin = scripted(|_| reply(200, &[("cache-control", "max-age=100")], "0123456789")).await;
    let p = cached(&origin).await;
    assert_eq!(fetch(&p, "/r").await.body, "0123456789");
    let range = |r: &'static str| call(p.http, request("GET", "/r", &[("range", r)]));

    let first4 = range("bytes=0-3").await;
    assert_eq!(first4.status, 206);
    assert_eq!(first4.h("content-range"), Some("bytes 0-3/10"));
    assert_eq!(first4.h("content-length"), Some("4"));
    assert_eq!(first4.body, "0123");
    assert_hit(&first4);

    let tail = range("bytes=4-100").await;
    assert_eq!(tail.status, 206);
    assert_eq!(
        tail.h("content-range"),
        Some("bytes 4-9/10"),
        "an end past the last byte is clamped"
    );
    assert_eq!(tail.body, "456789");

    let beyond = range("bytes=100-200").await;
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.h("content-range"), Some("bytes */10"));

    let several = range("bytes=0-1,4-5").await;
    assert_eq!(several.status, 200, "several ranges get the full response");
    assert_eq!(several.body, "0123456789");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn a_206_without_a_validator_is_forwarded_and_not_stored() {
    let origin = scripted(|s| {
        if s.h("range").is_some() {
            reply(
                206,
                &[
                    ("cache-control", "max-age=100"),
                    ("content-range", "bytes 0-3/10"),
                ],
                "0123",
            )
        } else {
            reply(200, &[("cache-control", "max-age=100")], "0123456789")
        }
    })
    .await;
    let p = cached(&origin).await;
    let range = [("range", "bytes=0-3")];

    let partial = fetch_with(&p, "/m", &range).await;
    assert_eq!(partial.status, 206);
    assert_eq!(partial.body, "0123");
    assert_eq!(
        origin.last().h("range"),
        Some("bytes=0-3"),
        "forwarded unchanged"
    );
    assert_lacks(&partial, &["stored", "hit"]);

    let whole = fetch(&p, "/m").await;
    assert_miss(&whole);
    assert_eq!(whole.body, "0123456789");
    assert_eq!(origin.hits(), 2, "the 206 was not stored");
    let from_cache = fetch_with(&p, "/m", &range).await;
    assert_eq!(from_cache.status, 206);
    assert_hit(&from_cache);
    assert_eq!(origin.hits(), 2);
}

/// The 20-byte body the range origins serve.
const ALPHABET: &str = "abcdefghijklmnopqrst";

/// An origin that answers a single `bytes=a-b` range of [`ALPHABET`] with a 206 carrying
/// `etag` (read from the request's `x-etag` when given) and `max-age=100`, and anything else
/// with the whole body.
async fn range_origin(etag: &'static str) -> Scripted {
    scripted(move |s| {
        let etag = s.h("x-etag").unwrap_or(etag);
        let headers = [("cache-control", "max-age=100"), ("etag", etag)];
        let one = s
            .h("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
        match one {
            Some((a, b)) => {
                let cr = format!("bytes {a}-{b}/{}", ALPHABET.len());
                let mut h = headers.to_vec();
                h.push(("content-range", &cr));
                reply(206, &h, &ALPHABET[a..=b])
            }
            None => reply(200, &headers, ALPHABET),
        }
    })
    .await
}

#[tokio::test]
async fn parts_with_a_strong_etag_serve_the_ranges_they_cover_and_combine_into_the_whole() {
    let origin = range_origin("\"v1\"").await;
    let p = cached(&origin).await;
    let range = |r: &'static str| call(p.http, request("GET", "/p", &[("range", r)]));

    let first = range("bytes=0-4").await;
    assert_eq!(
        (first.status.as_u16(), &first.body[..]),
        (206, &b"abcde"[..])
    );
    assert_tokens(&first, &["fwd=uri-miss", "stored"]);

    let inside = range("bytes=1-3").await;
    assert_eq!(
        (inside.status.as_u16(), &inside.body[..]),
        (206, &b"bcd"[..])
    );
    assert_eq!(inside.h("content-range"), Some("bytes 1-3/20"));
    assert_eq!(inside.h("content-length"), Some("3"));
    assert_eq!(inside.h("etag"), Some("\"v1\""));
    assert_hit(&inside);
    let tail = range("bytes=2-").await;
    assert_lacks(&tail, &["hit"]);
    assert_eq!(
        origin.hits(),
        2,
        "bytes 2- is not all stored: it went upstream"
    );
    assert_eq!(
        tail.status, 200,
        "the test origin answers an open range whole"
    );
    let whole = fetch(&p, "/p").await;
    assert_hit(&whole);
    assert_eq!(
        whole.body, ALPHABET,
        "a 200 to a range request is stored whole"
    );

    let range = |r: &'static str| call(p.http, request("GET", "/q", &[("range", r)]));
    range("bytes=0-4").await;
    let apart = range("bytes=10-14").await;
    assert_tokens(&apart, &["fwd=partial", "stored"]);
    let gap = range("bytes=3-11").await;
    assert_tokens(&gap, &["fwd=partial", "stored"]);
    assert_eq!(gap.body, "defghijkl");
    assert_eq!(origin.hits_for("/q"), 3);
    let joined = range("bytes=0-14").await;
    assert_eq!(joined.body, "abcdefghijklmno");
    assert_hit(&joined);
    assert_eq!(
        origin.hits_for("/q"),
        3,
        "0-4, 3-11 and 10-14 joined into one range"
    );
    assert_eq!(counter(&stats(&p).await, "combined"), 0);

    let end = range("bytes=15-19").await;
    assert_eq!(end.body, "pqrst");
    let stats = stats(&p).await;
    assert_eq!(counter(&stats, "combined"), 1, "{stats}");
    let whole = fetch(&p, "/q").await;
    assert_eq!(
        (whole.status.as_u16(), &whole.body[..]),
        (200, ALPHABET.as_bytes())
    );
    assert_eq!(whole.h("content-length"), Some("20"));
    assert_eq!(whole.h("content-range"), None);
    assert_hit(&whole);
    assert_eq!(range("bytes=18-").await.body, "st");
    assert_eq!(range("bytes=40-50").await.status, 416);
    assert_eq!(origin.hits_for("/q"), 4);
}

#[tokio::test]
async fn only_parts_of_one_representation_are_combined() {
    let origin = range_origin("\"v1\"").await;
    let p = cached(&origin).await;
    let range = |path: &'static str, r: &'static str, etag: &'static str| {
        let p = &p;
        async move { fetch_with(p, path, &[("range", r), ("x-etag", etag)]).await }
    };

    // A new validator starts over: the old part is gone.
    range("/e", "bytes=0-9", "\"v1\"").await;
    range("/e", "bytes=10-19", "\"v2\"").await;
    assert_eq!(counter(&stats(&p).await, "combined"), 0);
    assert_lacks(&range("/e", "bytes=0-9", "\"v2\"").await, &["hit"]);
    assert_hit(&range("/e", "bytes=12-15", "\"v2\"").await);

    // A weak validator cannot tie parts together: not stored.
    range("/w", "bytes=0-4", "W/\"v1\"").await;
    assert_lacks(&range("/w", "bytes=0-4", "W/\"v1\"").await, &["hit"]);
    assert_eq!(origin.hits_for("/w"), 2);

    // If-Range that does not match what is stored goes upstream; one that does is a hit.
    range("/i", "bytes=0-4", "\"v1\"").await;
    let other = fetch_with(&p, "/i", &[("range", "bytes=0-4"), ("if-range", "\"v0\"")]).await;
    assert_lacks(&other, &["hit"]);
    let same = fetch_with(&p, "/i", &[("range", "bytes=0-4"), ("if-range", "\"v1\"")]).await;
    assert_hit(&same);
    assert_eq!(origin.hits_for("/i"), 2);
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background() {
    let gate = Gate::new();
    let g = gate.clone();
    let origin = scripted_async(move |s| {
        let g = g.clone();
        async move {
            if s.n == 1 {
                // Stale by 5 s, within the 60 s window.
                return reply(
                    200,
                    &[
                        ("cache-control", "max-age=10, stale-while-revalidate=60"),
                        ("age", "15"),
                    ],
                    "v1",
                );
            }
            g.wait().await;
            reply(
                200,
                &[("cache-control", "max-age=100")],
                format!("v{}", s.n),
            )
        }
    })
    .await;
    let p = cached(&origin).await;

    let first = fetch(&p, "/swr").await;
    assert_eq!(first.body, "v1");
    assert_tokens(&first, &["stored"]);

    // The refresh is held at the origin: every stale request is answered at once from the
    // stored object, and only one refresh is under way.
    for _ in 0..5 {
        let stale = fetch(&p, "/swr").await;
        assert_eq!(stale.body, "v1");
        assert_tokens(&stale, &["hit", "detail=stale-while-revalidate"]);
        assert!(ttl(&stale) < 0, "{:?}", cache_status(&stale));
        assert!(stale.age().unwrap() >= 15);
    }
    wait_until("the background refresh reaches the origin", || {
        origin.hits() >= 2
    })
    .await;
    assert_eq!(origin.hits(), 2, "one refresh per key at a time");

    gate.open();
    wait_stats(&p, "the refresh is stored", |s| counter(s, "stores") >= 2).await;
    let fresh = fetch(&p, "/swr").await;
    assert_hit(&fresh);
    assert_eq!(fresh.body, "v2");
    assert_eq!(origin.hits(), 2);
    let stats = stats(&p).await;
    assert!(counter(&stats, "stale_served") >= 5, "{stats}");
}

#[tokio::test]
async fn stale_if_error_serves_stale_within_its_window_only() {
    let origin = scripted(|s| {
        if s.nth > 1 {
            return reply(503, &[], "down");
        }
        // /recent is stale by 5 s, /old by 90 s; both with a 60 s stale-if-error window.
        let age = if s.path() == "/recent" { "15" } else { "100" };
        reply(
            200,
            &[
                ("cache-control", "max-age=10, stale-if-error=60"),
                ("age", age),
            ],
            "v1",
        )
    })
    .await;
    let p = cached(&origin).await;

    fetch(&p, "/recent").await;
    let rescued = fetch(&p, "/recent").await;
    assert_eq!(rescued.status, 200);
    assert_eq!(rescued.body, "v1");
    assert_tokens(
        &rescued,
        &["fwd=stale", "fwd-status=503", "detail=stale-if-error"],
    );
    assert!(ttl(&rescued) < 0);
    assert!(rescued.age().unwrap() >= 15);
    assert_eq!(origin.hits_for("/recent"), 2, "the origin was asked");

    fetch(&p, "/old").await;
    let failed = fetch(&p, "/old").await;
    assert_eq!(
        failed.status, 503,
        "outside the window the error is the answer"
    );
    assert_eq!(failed.body, "down");
    assert_lacks(&failed, &["detail=stale-if-error"]);
}

#[tokio::test]
async fn stale_if_error_covers_an_unreachable_origin() {
    let origin = scripted(|_| {
        reply(
            200,
            &[
                ("cache-control", "max-age=10, stale-if-error=600"),
                ("age", "15"),
            ],
            "v1",
        )
    })
    .await;
    let p = cached(&origin).await;
    fetch(&p, "/gone").await;
    origin.origin.kill();
    let rescued = fetch(&p, "/gone").await;
    assert_eq!(rescued.status, 200, "{rescued:?}");
    assert_eq!(rescued.body, "v1");
    assert_tokens(&rescued, &["fwd=stale", "detail=stale-if-error"]);
    assert_lacks(&rescued, &["fwd-status="]);
}

/// `stale_on_error` (RFC 9111 §4.2.4): without `stale-if-error`, an origin that cannot be
/// reached lets the cache serve what it has, up to the bound, unless the response forbids
/// serving it stale (`must-revalidate`, `proxy-revalidate`, `no-cache`, `s-maxage`); off by
/// default.
#[tokio::test]
async fn stale_on_error_covers_an_unreachable_origin_within_its_bound() {
    let origin = scripted(|s| {
        // Stale by 5 s (/recent, /must, /smax) or by 2 hours (/old).
        let age = if s.path() == "/old" { "7210" } else { "15" };
        let cc = match s.path() {
            "/must" => "max-age=10, must-revalidate",
            "/smax" => "s-maxage=10",
            _ => "max-age=10",
        };
        reply(200, &[("cache-control", cc), ("age", age)], "v1")
    })
    .await;
    let on = builder(&origin.origin, "stale_on_error = \"1h\"")
        .start()
        .await;
    let off = cached(&origin).await;
    let paths = ["/recent", "/old", "/must", "/smax"];
    for p in [&on, &off] {
        for path in paths {
            assert_eq!(fetch(p, path).await.status, 200);
        }
    }
    origin.origin.kill();
    let rescued = fetch(&on, "/recent").await;
    assert_eq!(rescued.status, 200, "{rescued:?}");
    assert_eq!(rescued.body, "v1");
    assert_tokens(&rescued, &["fwd=stale", "detail=stale-on-error"]);
    for path in ["/old", "/must", "/smax"] {
        let failed = fetch(&on, path).await;
        assert_eq!(failed.status, 502, "{path}: {failed:?}");
    }
    // Off by default.
    assert_eq!(fetch(&off, "/recent").await.status, 502);
}

/// `stale_on_5xx`: an origin answering 5xx is treated like an unreachable one.
#[tokio::test]
async fn stale_on_5xx_serves_stale_for_an_origin_error_when_configured() {
    let origin = scripted(|s| {
        if s.nth > 2 {
            return reply(503, &[], "down");
        }
        reply(200, &[("cache-control", "max-age=10"), ("age", "15")], "v1")
    })
    .await;
    let with = builder(
        &origin.origin,
        "stale_on_error = \"1h\"\nstale_on_5xx = true",
    )
    .start()
    .await;
    let without = builder(&origin.origin, "stale_on_error = \"1h\"")
        .start()
        .await;
    assert_eq!(fetch(&with, "/x").await.status, 200);
    assert_eq!(fetch(&without, "/x").await.status, 200);
    let rescued = fetch(&with, "/x").await;
    assert_eq!(rescued.status, 200);
    assert_eq!(rescued.body, "v1");
    assert_tokens(
        &rescued,
        &["fwd=stale", "fwd-status=503", "detail=stale-on-error"],
    );
    let passed = fetch(&without, "/x").await;
    assert_eq!(passed.status, 503);
    assert_eq!(passed.body, "down");
}

#[tokio::test]
async fn concurrent_misses_for_one_key_make_one_upstream_request() {
    const N: usize = 100;
    let gate = Gate::new();
    let g = gate.clone();
    let origin = scripted_async(move |_| {
        let g = g.clone();
        async move {
            g.wait().await;
            reply(200, &[("cache-control", "max-age=100")], "the one body")
        }
    })
    .await;
    let p = cached(&origin).await;

    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..N {
        let addr = p.http;
        clients.spawn(async move { call(addr, request("GET", "/hot", &[])).await });
    }
    // The origin holds the first fetch until every other request waits behind it (or, if
    // they do not coalesce, until more than one reached the origin: that fails below).
    wait_stats(&p, "99 requests wait on the first one's fetch", |s| {
        counter(s, "coalesced_waits") >= (N - 1) as u64 || origin.hits() > 1
    })
    .await;
    gate.open();

    let mut collapsed = 0;
    let mut leaders = 0;
    while let Some(got) = guarded("every client is answered", clients.join_next()).await {
        let got = got.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.body, "the one body");
        let cs = cache_status(&got);
        if has_token(&cs, "collapsed") {
            assert!(has_token(&cs, "hit"), "{cs:?}");
            collapsed += 1;
        } else {
            assert!(
                has_token(&cs, "fwd=uri-miss") && has_token(&cs, "stored"),
                "{cs:?}"
            );
            leaders += 1;
        }
    }
    assert_eq!(origin.hits(), 1, "exactly one upstream request");
    assert_eq!((leaders, collapsed), (1, N - 1));
    let stats = stats(&p).await;
    assert_eq!(
        counter(&stats, "coalesced_waits"),
        (N - 1) as u64,
        "{stats}"
    );
}

/// An origin whose `/big` is `BIG` bytes with a `Content-Length`: the head and the first
/// chunk at once, the rest only once `gate` opens (or at once when it is open).
async fn held_back_origin(gate: Gate) -> Scripted {
    scripted_async(move |_| {
        let gate = gate.clone();
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'b'; CHUNK]);
                if tx.send(chunk.clone()).await.is_err() {
                    return;
                }
                gate.wait().await;
                for _ in 1..BIG / CHUNK {
                    if tx.send(chunk.clone()).await.is_err() {
                        return;
                    }
                }
            });
            let frames = futures_util::stream::unfold(rx, |mut rx| async move {
                let c = rx.recv().await?;
                Some((Ok::<_, std::io::Error>(hyper::body::Frame::data(c)), rx))
            });
            let body = http_body_util::StreamBody::new(frames)
                .map_err(|e| e.into())
                .boxed();
            let mut r = Response::new(body);
            r.headers_mut()
                .insert("cache-control", HeaderValue::from_static("max-age=100"));
            r.headers_mut()
                .insert("content-length", HeaderValue::from(BIG));
            r
        }
    })
    .await
}

const BIG: usize = 8 << 20;
const CHUNK: usize = 64 << 10;

fn big_store(origin: &Scripted) -> ProxyBuilder {
    ProxyBuilder::new()
        .pool_toml("web", &[origin.origin.addr], NO_OUTLIER)
        .admin(None)
        .toml("[cache]\ncapacity = \"64MiB\"\nmax_object_size = \"8MiB\"\n")
}

/// Reads a response's head and its first chunk, says so on `first`, then the rest.
async fn read_in_two(addr: SocketAddr, first: tokio::sync::mpsc::Sender<()>) -> Got {
    let mut c = h1(addr).await;
    let resp = send(&mut c, request("GET", "/big", &[])).await;
    let (parts, mut body) = resp.into_parts();
    let mut got = Vec::new();
    let frame = body
        .frame()
        .await
        .expect("a first chunk")
        .expect("no error");
    got.extend_from_slice(&frame.into_data().unwrap());
    first.send(()).await.unwrap();
    while let Some(frame) = body.frame().await {
        got.extend_from_slice(&frame.expect("body intact").into_data().unwrap_or_default());
    }
    Got {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: got.into(),
    }
}

/// Read-while-write: requests coalesced on a miss read the leader's response as it arrives
/// instead of waiting for the stored object. The origin sends the head and the first 64 KiB
/// of 8 MiB, then holds the rest until every waiter has had its head and first bytes (so
/// none of them waited for the whole object; without streaming this never happens and the
/// test times out); then every client gets the same 8 MiB, and the object is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_requests_read_the_response_while_it_arrives() {
    const N: usize = 20;
    let gate = Gate::new();
    let origin = held_back_origin(gate.clone()).await;
    let p = big_store(&origin).start().await;
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel(N);
    let mut clients = tokio::task::JoinSet::new();
    clients.spawn(read_in_two(p.http, first_tx.clone()));
    guarded("the leader's first bytes", first_rx.recv()).await;
    for _ in 1..N {
        clients.spawn(read_in_two(p.http, first_tx.clone()));
    }
    for _ in 1..N {
        guarded(
            "a waiter's head and first bytes, before the rest exists",
            first_rx.recv(),
        )
        .await;
    }
    gate.open();
    let mut streamed = 0;
    while let Some(got) = guarded("every client is answered", clients.join_next()).await {
        let got = got.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.body.len(), BIG);
        assert!(got.body.iter().all(|&b| b == b'b'));
        assert_eq!(got.h("content-length"), Some(BIG.to_string().as_str()));
        if has_token(&cache_status(&got), "collapsed") {
            streamed += 1;
        }
    }
    assert_eq!(streamed, N - 1);
    assert_eq!(origin.hits(), 1);
    assert_eq!(counter(&stats(&p).await, "streamed"), (N - 1) as u64);
    let again = call(p.http, request("GET", "/big", &[])).await;
    assert_hit(&again);
    assert_eq!(again.body.len(), BIG);
}

/// The client that caused the fetch goes away mid-body while others read along: the proxy
/// finishes the fetch for them, and stores the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_along_are_served_when_the_leaders_client_leaves() {
    let gate = Gate::new();
    let origin = held_back_origin(gate.clone()).await;
    let p = big_store(&origin).start().await;
    // The leader reads its head and first chunk, then drops the connection.
    let mut leader = h1(p.http).await;
    let resp = send(&mut leader, request("GET", "/big", &[])).await;
    let mut body = resp.into_body();
    body.frame()
        .await
        .expect("a first chunk")
        .expect("no error");
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel(1);
    let reader = tokio::spawn(read_in_two(p.http, first_tx));
    guarded("the reader's first bytes", first_rx.recv()).await;
    drop(body);
    drop(leader);
    gate.open();
    let got = guarded("the reader is answered", reader).await.unwrap();
    assert_eq!(got.body.len(), BIG);
    assert_eq!(origin.hits(), 1);
    let again = call(p.http, request("GET", "/big", &[])).await;
    assert_hit(&again);
}

#[tokio::test]
async fn a_waiter_goes_upstream_itself_after_the_coalesce_timeout() {
    // The first request is held at the origin until the second one arrives there.
    let gate = Gate::new();
    let g = gate.clone();
    let origin = scripted_async(move |s| {
        let g = g.clone();
        async move {
            if s.n == 1 {
                g.wait().await;
            } else {
                g.open();
            }
            reply(
                200,
                &[("cache-control", "max-age=100")],
                format!("v{}", s.n),
            )
        }
    })
    .await;
    let p = builder(&origin.origin, "coalesce_timeout = \"200ms\"\n")
        .start()
        .await;

    let addr = p.http;
    let leader = tokio::spawn(async move { call(addr, request("GET", "/slow", &[])).await });
    wait_until("the first fetch reaches the origin", || origin.hits() == 1).await;
    let waiter = fetch(&p, "/slow").await;
    assert_eq!(waiter.status, 200);
    assert_eq!(waiter.body, "v2", "the waiter fetched for itself");
    assert_tokens(&waiter, &["fwd=uri-miss", "detail=coalesce-timeout"]);
    assert_lacks(&waiter, &["hit", "collapsed"]);

    let leader = guarded("the held fetch completes", leader).await.unwrap();
    assert_eq!(leader.body, "v1");
    assert_miss(&leader);
    assert_eq!(origin.hits(), 2);
    let stats = stats(&p).await;
    assert_eq!(counter(&stats, "coalesce_timeouts"), 1, "{stats}");
    assert_hit(&fetch(&p, "/slow").await);
}

#[tokio::test]
async fn an_uncacheable_answer_sends_later_concurrent_requests_straight_upstream() {
    // Every answer is uncacheable. The second and third requests are each held at the origin
    // until both are there: they can only complete if neither waits behind the other.
    let gate = Gate::new();
    let g = gate.clone();
    let origin = scripted_async(move |s| {
        let g = g.clone();
        async move {
            if s.n == 3 {
                g.open();
            }
            if s.n >= 2 {
                g.wait().await;
            }
            reply(200, &[("cache-control", "private")], format!("v{}", s.n))
        }
    })
    .await;
    let p = cached(&origin).await;

    let first = fetch(&p, "/uncacheable").await;
    assert_miss(&first);
    assert_lacks(&first, &["stored"]);

    let (a, b) = tokio::join!(fetch(&p, "/uncacheable"), fetch(&p, "/uncacheable"));
    let mut bodies = Vec::new();
    for got in [a, b] {
        assert_eq!(got.status, 200);
        assert_tokens(&got, &["fwd=uri-miss", "detail=hit-for-miss"]);
        assert_lacks(&got, &["collapsed", "stored"]);
        bodies.push(got.body);
    }
    bodies.sort();
    assert_eq!(bodies, ["v2", "v3"]);
    assert_eq!(origin.hits(), 3);
    let stats = stats(&p).await;
    assert!(counter(&stats, "hit_for_miss") >= 1, "{stats}");
    assert_eq!(counter(&stats, "coalesced_waits"), 0, "{stats}");
}

#[tokio::test]
async fn guest_cache_key_is_shared_across_urls() {
    let origin = always("max-age=100").await;
    let p = cached_with_guest(&origin).await;
    let shared = [("x-cache-key", "shared")];

    let a = fetch_with(&p, "/a", &shared).await;
    assert_eq!(a.body, "/a 1");
    assert_tokens(&a, &["stored"]);
    let b = fetch_with(&p, "/b", &shared).await;
    assert_hit(&b);
    assert_eq!(
        b.body, "/a 1",
        "/b is served what /a stored under the shared key"
    );
    assert_eq!(origin.hits(), 1);
    // Without the header /b has its own (default) key.
    assert_miss(&fetch(&p, "/b").await);

    // An unsafe method invalidates the decision's key too.
    let posted = call(p.http, request("POST", "/b", &shared)).await;
    assert_eq!(posted.status, 200);
    let after = fetch_with(&p, "/a", &shared).await;
    assert_miss(&after);
    assert_eq!(after.body, "/a 2");
}

#[tokio::test]
async fn guest_bypass_neither_looks_up_nor_stores() {
    let origin = always("max-age=100").await;
    let p = cached_with_guest(&origin).await;
    let bypass = [("x-cache-bypass", "1")];

    let first = fetch_with(&p, "/bp", &bypass).await;
    assert_eq!(cache_status(&first), [NAME, "fwd=bypass"]);
    assert_miss(&fetch(&p, "/bp").await);
    assert_eq!(origin.hits(), 2, "the bypassed response was not stored");
    let again = fetch_with(&p, "/bp", &bypass).await;
    assert_tokens(&again, &["fwd=bypass"]);
    assert_eq!(
        again.body, "/bp 3",
        "a bypass does not use the stored entry"
    );
    let hit = fetch(&p, "/bp").await;
    assert_hit(&hit);
    assert_eq!(hit.body, "/bp 2", "nor replace it");
    let stats = stats(&p).await;
    assert_eq!(counter(&stats, "bypasses"), 2, "{stats}");
}

#[tokio::test]
async fn guest_ttl_replaces_the_freshness_lifetime_but_not_storability() {
    let origin = scripted(|s| {
        let cc = match s.path() {
            "/ttl" => "max-age=0",
            "/no-store" => "no-store",
            _ => "private",
        };
        reply(
            200,
            &[("cache-control", cc)],
            format!("{} {}", s.path(), s.nth),
        )
    })
    .await;
    let p = cached_with_guest(&origin).await;
    let ttl100 = [("x-cache-ttl", "100")];

    let first = fetch_with(&p, "/ttl", &ttl100).await;
    assert_tokens(&first, &["stored"]);
    let hit = fetch_with(&p, "/ttl", &ttl100).await;
    assert_hit(&hit);
    assert!((90..=100).contains(&ttl(&hit)), "{:?}", cache_status(&hit));
    assert_eq!(origin.hits_for("/ttl"), 1);

    for path in ["/no-store", "/private"] {
        fetch_with(&p, path, &ttl100).await;
        let again = fetch_with(&p, path, &ttl100).await;
        assert_lacks(&again, &["hit"]);
        assert_eq!(
            origin.hits_for(path),
            2,
            "a ttl does not make {path} storable"
        );
    }
}

#[tokio::test]
async fn guest_tags_purge_together() {
    let origin = always("max-age=100").await;
    let p = cached_with_guest(&origin).await;
    for (path, tags) in [("/t1", "red, blue"), ("/t2", "blue"), ("/t3", "green")] {
        fetch_with(&p, path, &[("x-cache-tags", tags)]).await;
    }
    assert_eq!(purged(&p, json!({"tag": "blue"})).await, 2);
    assert_miss(&fetch(&p, "/t1").await);
    assert_miss(&fetch(&p, "/t2").await);
    assert_hit(&fetch(&p, "/t3").await);
    assert_eq!(
        purged(&p, json!({"tag": "red"})).await,
        0,
        "refetched without tags"
    );
}

#[tokio::test]
async fn guest_custom_keys_purge_by_key_and_by_url() {
    let origin = always("max-age=100").await;
    let p = cached_with_guest(&origin).await;
    let custom = [("x-cache-key", "custom-p")];

    fetch_with(&p, "/p", &custom).await;
    assert_eq!(purged(&p, json!({"key": "custom-p"})).await, 1);
    assert_miss(&fetch_with(&p, "/p", &custom).await);
    assert_eq!(
        purged(&p, json!({"url": "http://example.test/p"})).await,
        1,
        "a URL purge also matches the entry stored under a custom key for it"
    );
    assert_miss(&fetch_with(&p, "/p", &custom).await);
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn surrogate_key_and_cache_tag_are_tags_and_not_sent_to_clients() {
    let origin = scripted(|s| {
        let body = format!("{} {}", s.path(), s.nth);
        let cc = ("cache-control", "max-age=100");
        match s.path() {
            "/s" => reply(200, &[cc, ("surrogate-key", "alpha beta")], body),
            "/c" => reply(200, &[cc, ("cache-tag", "beta,gamma")], body),
            _ => reply(200, &[cc], body),
        }
    })
    .await;
    let p = cached(&origin).await;
    for path in ["/s", "/c", "/n"] {
        for round in 0..2 {
            let got = fetch(&p, path).await;
            assert_eq!(got.h("surrogate-key"), None, "{path} round {round}");
            assert_eq!(got.h("cache-tag"), None, "{path} round {round}");
        }
    }
    assert_eq!(origin.hits(), 3);

    assert_eq!(purged(&p, json!({"tag": "alpha"})).await, 1);
    assert_miss(&fetch(&p, "/s").await);
    assert_hit(&fetch(&p, "/c").await);
    assert_eq!(purged(&p, json!({"tag": "beta"})).await, 2);
    assert_miss(&fetch(&p, "/s").await);
    assert_miss(&fetch(&p, "/c").await);
    assert_hit(&fetch(&p, "/n").await);
    assert_eq!(purged(&p, json!({"tag": "gamma"})).await, 1);
}

/// `purge-tag` goes through the tag index: it follows removals (an unsafe method's
/// invalidation, a hard purge), replacements that drop a tag, and evictions; `/stats` counts
/// the distinct tags indexed.
#[tokio::test]
async fn the_tag_index_follows_removal_replacement_and_eviction() {
    let origin = scripted(|s| {
        let cc = ("cache-control", "max-age=1000");
        let body = format!("{} {}", s.path(), s.nth);
        match s.path() {
            "/r" if s.nth > 1 => reply(200, &[cc, ("surrogate-key", "new")], body),
            "/r" => reply(200, &[cc, ("surrogate-key", "old")], body),
            p if p.starts_with("/obj/") => {
                let i: usize = p.trim_start_matches("/obj/").parse().unwrap();
                let tag = format!("t{i}");
                reply(200, &[cc, ("surrogate-key", &tag)], object(i))
            }
            _ => reply(200, &[cc, ("surrogate-key", "x")], body),
        }
    })
    .await;
    let p = builder(&origin.origin, "max_object_size = \"64KiB\"\n")
        .start()
        .await;
    fetch(&p, "/a").await;
    fetch(&p, "/b").await;
    assert_eq!(counter(&stats(&p).await, "tags"), 1);
    // A successful POST invalidates /a: the purge finds only /b.
    assert_eq!(call(p.http, request("POST", "/a", &[])).await.status, 200);
    assert_eq!(purged(&p, json!({"tag": "x"})).await, 1);
    assert_eq!(counter(&stats(&p).await, "tags"), 0);

    fetch(&p, "/r").await;
    // Replaced (the client's no-cache) by a response tagged `new` only.
    fetch_with(&p, "/r", &[("cache-control", "no-cache")]).await;
    assert_eq!(purged(&p, json!({"tag": "old"})).await, 0);
    assert_hit(&fetch(&p, "/r").await);
    assert_eq!(purged(&p, json!({"tag": "new"})).await, 1);
    assert_eq!(counter(&stats(&p).await, "tags"), 0);

    // 69 objects of 60 KiB with a tag each overflow the 1 MiB store: every evicted object's
    // tag leaves the index with it.
    for i in 0..69 {
        fetch(&p, &format!("/obj/{i}")).await;
    }
    let s = stats(&p).await;
    assert!(counter(&s, "evictions") > 0, "{s}");
    assert_eq!(counter(&s, "tags"), counter(&s, "entries"), "{s}");
    let mut found = 0;
    for i in 0..69 {
        found += purged(&p, json!({"tag": format!("t{i}")})).await;
    }
    assert_eq!(
        found,
        counter(&s, "entries"),
        "each stored object found by its tag"
    );
    assert_eq!(counter(&stats(&p).await, "entries"), 0);
}

#[tokio::test]
async fn purge_by_url_key_prefix_and_all() {
    let origin = always("max-age=100").await;
    let p = cached(&origin).await;
    for path in ["/p?b=2&a=1", "/k", "/pre/1", "/pre/2", "/other"] {
        fetch(&p, path).await;
    }
    assert_eq!(counter(&stats(&p).await, "entries"), 5);

    assert_eq!(
        purged(&p, json!({"url": "http://example.test/p?a=1&b=2"})).await,
        1
    );
    assert_miss(&fetch(&p, "/p?b=2&a=1").await);
    assert_eq!(
        purged(&p, json!({"url": "http://example.test/absent"})).await,
        0
    );

    assert_eq!(
        purged(&p, json!({"key": "http://example.test:80/k"})).await,
        1
    );
    assert_miss(&fetch(&p, "/k").await);

    assert_eq!(
        purged(&p, json!({"prefix": "http://example.test:80/pre/"})).await,
        2
    );
    assert_miss(&fetch(&p, "/pre/1").await);
    assert_hit(&fetch(&p, "/other").await);

    let entries = counter(&stats(&p).await, "entries");
    assert_eq!(entries, 4, "/p, /k, /pre/1 refetched and /other");
    assert_eq!(purged(&p, json!({"all": true})).await, entries);
    let stats = stats(&p).await;
    assert_eq!(counter(&stats, "entries"), 0, "{stats}");
    assert_eq!(counter(&stats, "purged"), 1 + 1 + 2 + entries, "{stats}");
    assert_miss(&fetch(&p, "/other").await);
}

#[tokio::test]
async fn soft_purge_makes_the_next_request_revalidate() {
    let origin = scripted(|s| validated(s, "\"e1\"", "max-age=100", "payload")).await;
    let p = cached(&origin).await;
    fetch(&p, "/soft").await;
    assert_hit(&fetch(&p, "/soft").await);

    let body = json!({"url": "http://example.test/soft", "soft": true});
    assert_eq!(purged(&p, body).await, 1);
    assert_eq!(
        counter(&stats(&p).await, "entries"),
        1,
        "a soft purge keeps the entry"
    );
    let revalidated = fetch(&p, "/soft").await;
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.body, "payload");
    assert_tokens(&revalidated, &["fwd=stale", "fwd-status=304"]);
    assert_eq!(origin.last().h("if-none-match"), Some("\"e1\""));
    assert_hit(&fetch(&p, "/soft").await);
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn soft_purged_entries_still_serve_stale_on_error_hard_purged_do_not() {
    let origin = scripted(|s| {
        if s.n > 1 {
            return reply(503, &[], "down");
        }
        reply(
            200,
            &[("cache-control", "max-age=100, stale-if-error=600")],
            "v1",
        )
    })
    .await;
    let p = cached(&origin).await;
    fetch(&p, "/sie").await;
    assert_hit(&fetch(&p, "/sie").await);

    let soft = json!({"url": "http://example.test/sie", "soft": true});
    assert_eq!(purged(&p, soft).await, 1);
    let rescued = fetch(&p, "/sie").await;
    assert_eq!(rescued.status, 200);
    assert_eq!(rescued.body, "v1");
    assert_tokens(
        &rescued,
        &["fwd=stale", "fwd-status=503", "detail=stale-if-error"],
    );
    assert_eq!(origin.hits(), 2, "the soft-purged entry was revalidated");

    assert_eq!(
        purged(&p, json!({"url": "http://example.test/sie"})).await,
        1
    );
    let gone = fetch(&p, "/sie").await;
    assert_eq!(gone.status, 503);
    assert_eq!(gone.body, "down");
    assert_miss(&gone);
}

#[tokio::test]
async fn purge_rejects_bad_input_with_a_message() {
    let origin = always("max-age=100").await;
    let p = cached(&origin).await;
    let bad: [&[u8]; 8] = [
        b"",
        b"not json",
        b"{}",
        br#"{"url": "http://example.test/", "tag": "x"}"#,
        br#"{"url": 5}"#,
        br#"{"bogus": 1}"#,
        br#"{"all": true, "soft": "yes"}"#,
        br#"[1, 2]"#,
    ];
    for body in bad {
        let (status, json) =
            admin_call(p.admin.unwrap(), "POST", "/cache/purge", body.to_vec()).await;
        let shown = String::from_utf8_lossy(body);
        assert_eq!(status, 400, "{shown}: {json}");
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{shown}: {json}"
        );
    }
}

#[tokio::test]
async fn stats_count_hits_misses_and_stores_and_are_null_without_a_cache() {
    let origin = always("max-age=100").await;
    let p = cached(&origin).await;
    let zero = stats(&p).await;
    for name in [
        "entries",
        "bytes",
        "hits",
        "misses",
        "stale_served",
        "revalidations",
        "not_modified",
        "coalesced_waits",
        "coalesce_timeouts",
        "evictions",
        "stores",
        "purged",
        "invalidations",
        "hit_for_miss",
        "bypasses",
    ] {
        assert_eq!(counter(&zero, name), 0, "{name} in {zero}");
    }
    assert_eq!(counter(&zero, "capacity"), CAPACITY);

    for path in ["/a", "/a", "/a", "/b"] {
        fetch(&p, path).await;
    }
    let s = stats(&p).await;
    assert_eq!(counter(&s, "hits"), 2, "{s}");
    assert_eq!(counter(&s, "misses"), 2, "{s}");
    assert_eq!(counter(&s, "stores"), 2, "{s}");
    assert_eq!(counter(&s, "entries"), 2, "{s}");
    let bytes = counter(&s, "bytes");
    assert!(bytes > 0 && bytes <= CAPACITY, "{s}");
    let deleted = call(p.http, request("DELETE", "/b", &[])).await;
    assert_eq!(deleted.status, 200);
    let s = stats(&p).await;
    assert_eq!(counter(&s, "invalidations"), 1, "{s}");
    assert_eq!(counter(&s, "entries"), 1, "{s}");
    assert!(counter(&s, "bytes") < bytes, "{s}");

    let plain = ProxyBuilder::for_origin(&origin.origin)
        .admin(None)
        .start()
        .await;
    let admin = plain.admin.unwrap();
    let (status, json) = admin_call(admin, "GET", "/stats", Vec::new()).await;
    assert_eq!(status, 200, "{json}");
    assert!(json["cache"].is_null(), "{json}");
    let (status, json) = admin_call(
        admin,
        "POST",
        "/cache/purge",
        json!({"all": true}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 404, "{json}");
    let resp = fetch(&plain, "/a").await;
    assert!(cache_status(&resp).is_empty(), "no cache, no Cache-Status");
}

/// Object `i` of the memory-bound test: 60 KiB, distinct per `i`.
fn object(i: usize) -> Vec<u8> {
    let mut body: Vec<u8> = (0..60 * 1024).map(|j| ((j + i * 7) % 251) as u8).collect();
    body[..4].copy_from_slice(&(i as u32).to_be_bytes());
    body
}

#[tokio::test]
async fn the_store_stays_within_capacity_and_evicts() {
    const OBJECTS: usize = 69; // 69 x 60 KiB > 4 MiB
    let origin = scripted(|s| {
        let i: usize = s.path().trim_start_matches("/obj/").parse().unwrap();
        reply(200, &[("cache-control", "max-age=1000")], object(i))
    })
    .await;
    let p = builder(&origin.origin, "max_object_size = \"64KiB\"\n")
        .start()
        .await;
    let mut c = h1(p.http).await;
    for i in 0..OBJECTS {
        let got = call_on(&mut c, request("GET", &format!("/obj/{i}"), &[])).await;
        assert!(got.body == object(i), "object {i} intact on its miss");
        assert_tokens(&got, &["stored"]);
    }
    let s = stats(&p).await;
    assert!(counter(&s, "bytes") <= CAPACITY, "{s}");
    assert!(counter(&s, "evictions") > 0, "{s}");
    assert!(counter(&s, "entries") < OBJECTS as u64, "{s}");
    assert_eq!(counter(&s, "stores"), OBJECTS as u64, "{s}");

    let mut hits = 0;
    for i in (0..OBJECTS).rev() {
        let got = call_on(&mut c, request("GET", &format!("/obj/{i}"), &[])).await;
        assert!(
            got.body == object(i),
            "object {i} intact on its second request"
        );
        if has_token(&cache_status(&got), "hit") {
            hits += 1;
        }
    }
    assert!(hits > 0, "the newest objects are still stored");
    assert!(counter(&stats(&p).await, "bytes") <= CAPACITY);
}

#[tokio::test]
async fn objects_over_max_object_size_pass_through_intact_and_are_not_stored() {
    let big: Bytes = (0..100 * 1024).map(|j| (j % 253) as u8).collect();
    let b = big.clone();
    let origin = scripted(move |s| {
        let mut r = reply(200, &[("cache-control", "max-age=100")], b.clone());
        if s.path() == "/streamed" {
            // The same bytes in 4 KiB chunks without Content-Length: the size is only known
            // once the limit has been crossed mid-body.
            let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>> = b
                .chunks(4096)
                .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks))
                .map_err(|e| e.into())
                .boxed();
            let headers = r.headers().clone();
            r = Response::new(body);
            *r.headers_mut() = headers;
            r.headers_mut().remove("content-length");
        }
        r
    })
    .await;
    let p = builder(&origin.origin, "max_object_size = \"64KiB\"\n")
        .start()
        .await;
    for path in ["/sized", "/streamed"] {
        for round in 1..=2 {
            let got = fetch(&p, path).await;
            assert_eq!(got.status, 200);
            assert!(got.body == big, "{path} round {round}: body intact");
            assert_lacks(&got, &["hit"]);
            assert_tokens(&got, &["fwd=uri-miss"]);
            // With a Content-Length the size is known before the head is sent; a streamed
            // body's Cache-Status is sent before the cache can know it will not fit.
            if path == "/sized" {
                assert_lacks(&got, &["stored"]);
            }
        }
        assert_eq!(origin.hits_for(path), 2, "{path} was not stored");
    }
}

#[tokio::test]
async fn binary_bodies_are_intact_on_miss_and_hit_over_h1_and_h2c() {
    let binary: Bytes = (0..=255u8).cycle().take(256 * 64).collect();
    let b = binary.clone();
    let origin = scripted(move |_| {
        reply(
            200,
            &[
                ("cache-control", "max-age=100"),
                ("content-type", "application/octet-stream"),
            ],
            b.clone(),
        )
    })
    .await;
    let p = cached(&origin).await;

    let miss = fetch(&p, "/bin-h1").await;
    assert_tokens(&miss, &["stored"]);
    assert!(miss.body == binary, "h1 miss");
    let hit = fetch(&p, "/bin-h1").await;
    assert_hit(&hit);
    assert!(hit.body == binary, "h1 hit");

    let mut c = h2c(p.http).await;
    for (path, stored) in [("/bin-h2", false), ("/bin-h2", true), ("/bin-h1", true)] {
        let req = get(&format!("http://example.test{path}"), HOST);
        let got = collect(path, guarded(path, send2(&mut c, req)).await).await;
        assert_eq!(got.version, Version::HTTP_2);
        assert!(got.body == binary, "h2c {path}");
        if stored {
            assert_hit(&got);
        } else {
            assert_miss(&got);
        }
    }
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn keys_are_normalised_and_isolated_per_host() {
    let origin = scripted(|s| {
        reply(
            200,
            &[("cache-control", "max-age=100")],
            format!("{} {} {}", s.h("host").unwrap_or("-"), s.uri, s.n),
        )
    })
    .await;
    let p = cached(&origin).await;

    let a = fetch_with(&p, "/same", &[("host", "a.test")]).await;
    let b = fetch_with(&p, "/same", &[("host", "b.test")]).await;
    assert_eq!(origin.hits(), 2, "one entry per host");
    assert_ne!(a.body, b.body);
    for (host, first) in [("a.test", &a), ("b.test", &b)] {
        let again = fetch_with(&p, "/same", &[("host", host)]).await;
        assert_hit(&again);
        assert_eq!(again.body, first.body, "{host} gets its own body");
    }

    fetch(&p, "/q?b=2&a=1").await;
    let hits = origin.hits();
    for (path, host) in [
        ("/q?a=1&b=2", HOST),
        ("/q?b=2&a=1", "EXAMPLE.test"),
        ("/q?a=1&b=2", "example.test:80"),
    ] {
        let got = fetch_with(&p, path, &[("host", host)]).await;
        let cs = cache_status(&got);
        assert!(has_token(&cs, "hit"), "{path} with Host {host}: {cs:?}");
    }
    assert_eq!(
        origin.hits(),
        hits,
        "query order, host case and :80 share a key"
    );
    assert_miss(&fetch(&p, "/Q?a=1&b=2").await);
    assert_miss(&fetch(&p, "/q?a=1&b=2&c=3").await);

    fetch(&p, "/empty").await;
    assert_hit(&fetch(&p, "/empty?").await);
}

#[tokio::test]
async fn https_is_cached_under_its_own_scheme() {
    let certs = Certs::new();
    let leaf = certs.issue("site", &["cache.test"]);
    let origin = scripted(|s| {
        reply(
            200,
            &[("cache-control", "max-age=100")],
            format!("{} {}", s.h("x-forwarded-proto").unwrap_or("-"), s.n),
        )
    })
    .await;
    let p = builder(&origin.origin, "").tls(&[&leaf]).start().await;
    let https = |path: &'static str| {
        let cfg = certs.client_config(&[b"http/1.1"]);
        let addr = p.https.unwrap();
        async move {
            let stream = tls_connect(addr, "cache.test", cfg).await.unwrap();
            let mut c = h1_over(stream).await;
            call_on(&mut c, request("GET", path, &[("host", "cache.test")])).await
        }
    };

    let first = https("/s").await;
    assert_miss(&first);
    assert_tokens(&first, &["stored"]);
    let second = https("/s").await;
    assert_hit(&second);
    assert_eq!(second.body, first.body);

    let plain = fetch_with(&p, "/s", &[("host", "cache.test")]).await;
    assert_miss(&plain);
    assert_eq!(origin.hits(), 2, "http and https are different keys");

    assert_eq!(purged(&p, json!({"url": "https://cache.test/s"})).await, 1);
    assert_miss(&https("/s").await);
    assert_eq!(
        purged(&p, json!({"key": "https://cache.test:443/s"})).await,
        1
    );
    assert_hit(&fetch_with(&p, "/s", &[("host", "cache.test")]).await);
}

#[tokio::test]
async fn x_cache_and_the_cache_name_are_configurable() {
    let origin = always("max-age=100").await;
    let p = builder(&origin.origin, "x_cache = true\nname = \"edge\"\n")
        .start()
        .await;
    let miss = fetch(&p, "/x").await;
    assert_eq!(miss.h("x-cache"), Some("MISS"));
    assert_eq!(
        cache_status(&miss).first().map(String::as_str),
        Some("edge")
    );
    let hit = fetch(&p, "/x").await;
    assert_eq!(hit.h("x-cache"), Some("HIT"));
    assert_eq!(cache_status(&hit), {
        let t = ttl(&hit);
        vec!["edge".to_string(), "hit".to_string(), format!("ttl={t}")]
    });
}
