//! Unit tests of the RFC 9111 rules that need no sockets: directive and date parsing,
//! storability, freshness lifetime and age. The pipeline (lookup, validation, coalescing,
//! purge) is tested end to end in `tests/tests/cache.rs`.

use super::directives::*;
use super::object::*;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use std::time::{Duration, Instant, SystemTime};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            http::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn get() -> RequestFacts {
    RequestFacts {
        method: Method::GET,
        authorization: false,
        directives: RequestDirectives::default(),
    }
}

fn evaluate(status: u16, pairs: &[(&str, &str)]) -> Result<Meta, NotStored> {
    evaluate_with(&get(), status, pairs, None)
}

fn evaluate_with(
    req: &RequestFacts,
    status: u16,
    pairs: &[(&str, &str)],
    ttl: Option<u32>,
) -> Result<Meta, NotStored> {
    Meta::evaluate(
        req,
        Context {
            request_headers: &HeaderMap::new(),
            config: &crate::config::CacheConfig::default(),
        },
        StatusCode::from_u16(status).unwrap(),
        &headers(pairs),
        ttl,
        "http://h:80/",
        Exchange::now(),
    )
}

fn lifetime(status: u16, pairs: &[(&str, &str)]) -> u64 {
    evaluate(status, pairs).expect("storable").lifetime
}

fn date_ago(secs: u64) -> String {
    httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(secs))
}

#[test]
fn quoted_strings_keep_their_commas() {
    let line = HeaderValue::from_static(r#"no-cache="set-cookie, x-a", max-age=60"#);
    let d = parse([&line]);
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].name, "no-cache");
    assert_eq!(d[0].value.as_deref(), Some("set-cookie, x-a"));
    assert_eq!(d[1].value.as_deref(), Some("60"));
    let r = ResponseDirectives::parse(&headers(&[(
        "cache-control",
        r#"no-cache="set-cookie, x-a", max-age=60"#,
    )]));
    assert_eq!(
        r.no_cache,
        Qualified::Fields(vec![
            http::header::SET_COOKIE,
            http::header::HeaderName::from_static("x-a")
        ])
    );
}

#[test]
fn names_are_case_insensitive_and_lines_combine() {
    let r = ResponseDirectives::parse(&headers(&[
        ("cache-control", "Max-Age=5"),
        ("cache-control", "MUST-REVALIDATE"),
    ]));
    assert_eq!(r.max_age, Some(Some(5)));
    assert!(r.must_revalidate);
}

#[test]
fn delta_seconds_are_strict() {
    assert_eq!(delta_seconds("60"), Some(60));
    assert_eq!(delta_seconds("99999999999999999999"), Some(DELTA_MAX));
    assert_eq!(delta_seconds("-1"), None);
    assert_eq!(delta_seconds("1.5"), None);
    assert_eq!(delta_seconds(""), None);
    // Quoted values are accepted (RFC 9111 §5.2: recipients SHOULD accept both forms).
    assert_eq!(lifetime(200, &[("cache-control", r#"max-age="60""#)]), 60);
    // Overflow is 2^31, not 0 or a wrap-around.
    assert_eq!(
        lifetime(200, &[("cache-control", "max-age=99999999999999999999")]),
        DELTA_MAX
    );
}

#[test]
fn malformed_or_conflicting_freshness_is_stale() {
    let etag = ("etag", "\"v1\"");
    for cc in [
        "max-age=abc",
        "max-age=-5",
        "max-age",
        "max-age=10, max-age=20",
    ] {
        assert_eq!(lifetime(200, &[("cache-control", cc), etag]), 0, "{cc}");
    }
    // The same value twice is not a conflict.
    assert_eq!(
        lifetime(200, &[("cache-control", "max-age=10, max-age=10")]),
        10
    );
    // A malformed member does not hide the others...
    assert_eq!(lifetime(200, &[("cache-control", "a b, max-age=10")]), 10);
    // ...but an unterminated quoted string runs to the end of the line.
    assert_eq!(
        lifetime(
            200,
            &[("cache-control", "foo=\"unterminated, max-age=10"), etag]
        ),
        0
    );
}

#[test]
fn precedence_s_maxage_max_age_expires_heuristic() {
    let expires = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(500));
    assert_eq!(
        lifetime(
            200,
            &[
                ("cache-control", "max-age=100, s-maxage=200"),
                ("expires", &expires)
            ]
        ),
        200
    );
    assert_eq!(
        lifetime(
            200,
            &[("cache-control", "max-age=100"), ("expires", &expires)]
        ),
        100
    );
    let l = lifetime(200, &[("expires", &expires)]);
    assert!((498..=500).contains(&l), "{l}");
    let now = httpdate::fmt_http_date(SystemTime::now());
    assert_eq!(
        lifetime(200, &[("date", &now), ("last-modified", &date_ago(10_000))]),
        1000
    );
}

#[test]
fn expires_invalid_means_stale_and_all_date_formats_parse() {
    let etag = ("etag", "\"v\"");
    assert_eq!(lifetime(200, &[("expires", "0"), etag]), 0);
    assert_eq!(lifetime(200, &[("expires", "tomorrow"), etag]), 0);
    // Two different Expires: stale (RFC 9111 §4.2.1).
    let a = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(100));
    let b = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(200));
    assert_eq!(lifetime(200, &[("expires", &a), ("expires", &b), etag]), 0);
    // RFC 850 and asctime forms are valid HTTP-dates (RFC 9110 §5.6.7).
    let d = headers(&[("expires", "Sunday, 06-Nov-94 08:49:37 GMT")]);
    assert!(date(&d, &http::header::EXPIRES).unwrap().is_some());
    let d = headers(&[("expires", "Sun Nov  6 08:49:37 1994")]);
    assert!(date(&d, &http::header::EXPIRES).unwrap().is_some());
    // Names in any case, in all three formats, mean the same instant.
    let want = parse_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
    for s in [
        "sun, 06 nov 1994 08:49:37 gmt",
        "SUN, 06 NOV 1994 08:49:37 GMT",
        "SUNDAY, 06-NOV-94 08:49:37 gmt",
        "sun nov  6 08:49:37 1994",
    ] {
        assert_eq!(parse_date(s), Some(want), "{s}");
    }
    // Still invalid: a wrong name, a missing zone.
    assert_eq!(parse_date("Sun, 06 Nob 1994 08:49:37 GMT"), None);
    assert_eq!(parse_date("Sun, 06 Nov 1994 08:49:37"), None);
}

#[test]
fn heuristic_only_for_heuristically_cacheable_statuses() {
    let lm = ("last-modified", date_ago(10_000));
    let pairs = [(lm.0, lm.1.as_str())];
    assert!(lifetime(200, &pairs) > 0);
    assert!(lifetime(404, &pairs) > 0);
    assert_eq!(evaluate(302, &pairs).unwrap_err(), "no freshness");
    assert_eq!(evaluate(500, &pairs).unwrap_err(), "no freshness");
    // With explicit freshness any final status is storable.
    assert_eq!(lifetime(302, &[("cache-control", "max-age=30")]), 30);
}

#[test]
fn what_is_never_stored() {
    assert_eq!(
        evaluate(200, &[("cache-control", "no-store, max-age=60")]).unwrap_err(),
        "no-store"
    );
    assert_eq!(
        evaluate(200, &[("cache-control", "private, max-age=60")]).unwrap_err(),
        "private"
    );
    assert_eq!(
        evaluate(206, &[("cache-control", "max-age=60")]).unwrap_err(),
        "partial"
    );
    assert_eq!(
        evaluate(200, &[("cache-control", "max-age=60"), ("vary", "*")]).unwrap_err(),
        "vary *"
    );
    assert_eq!(
        evaluate(
            200,
            &[("cache-control", "max-age=60"), ("set-cookie", "a=b")]
        )
        .unwrap_err(),
        "set-cookie"
    );
    assert!(
        evaluate(
            200,
            &[
                ("cache-control", "public, max-age=60"),
                ("set-cookie", "a=b")
            ]
        )
        .is_ok()
    );
    // must-understand lets a cache that understands the status ignore no-store.
    assert!(
        evaluate(
            200,
            &[("cache-control", "no-store, must-understand, max-age=5")]
        )
        .is_ok()
    );
    // Stale on arrival with no validator and no stale-* window: useless to store.
    assert_eq!(
        evaluate(200, &[("cache-control", "max-age=0")]).unwrap_err(),
        "stale on arrival"
    );
    let head = RequestFacts {
        method: Method::HEAD,
        ..get()
    };
    assert!(evaluate_with(&head, 200, &[("cache-control", "max-age=5")], None).is_err());
}

#[test]
fn private_with_fields_strips_them() {
    let m = evaluate(
        200,
        &[
            ("cache-control", "private=\"x-user\", max-age=60"),
            ("x-user", "alice"),
            ("x-other", "1"),
        ],
    )
    .unwrap();
    assert!(!m.headers.contains_key("x-user"));
    assert!(m.headers.contains_key("x-other"));
}

#[test]
fn authorization_needs_permission() {
    let auth = RequestFacts {
        authorization: true,
        ..get()
    };
    let cc = |v: &'static str| [("cache-control", v)];
    assert_eq!(
        evaluate_with(&auth, 200, &cc("max-age=60"), None).unwrap_err(),
        "authorization"
    );
    for ok in [
        "public, max-age=60",
        "s-maxage=60",
        "max-age=60, must-revalidate",
    ] {
        assert!(evaluate_with(&auth, 200, &cc(ok), None).is_ok(), "{ok}");
    }
}

#[test]
fn proxy_revalidate_is_fresh_but_never_served_stale() {
    let m = evaluate(200, &[("cache-control", "max-age=60, proxy-revalidate")]).unwrap();
    assert_eq!(m.lifetime, 60);
    assert!(m.directives.forbids_stale());
}

#[test]
fn ttl_override_replaces_lifetime_not_privacy() {
    let m = evaluate_with(&get(), 200, &[("cache-control", "max-age=0")], Some(120)).unwrap();
    assert_eq!(m.lifetime, 120);
    // Statuses without freshness become storable...
    assert!(evaluate_with(&get(), 500, &[], Some(5)).is_ok());
    // ...but never what must stay private.
    assert!(evaluate_with(&get(), 200, &[("cache-control", "no-store")], Some(5)).is_err());
    assert!(evaluate_with(&get(), 200, &[("cache-control", "private")], Some(5)).is_err());
}

#[test]
fn age_is_the_larger_of_apparent_and_corrected() {
    // Age header 100: corrected_age_value wins.
    let m = evaluate(200, &[("cache-control", "max-age=600"), ("age", "100")]).unwrap();
    assert_eq!(m.initial_age, 100);
    // Date 300 s ago: apparent age wins.
    let m = evaluate(
        200,
        &[
            ("cache-control", "max-age=600"),
            ("age", "100"),
            ("date", &date_ago(300)),
        ],
    )
    .unwrap();
    assert!((299..=301).contains(&m.initial_age), "{}", m.initial_age);
    // An invalid Age is ignored.
    let m = evaluate(200, &[("cache-control", "max-age=600"), ("age", "x")]).unwrap();
    assert_eq!(m.initial_age, 0);
    let o = Object::new(m, bytes::Bytes::new(), 1);
    assert!(o.is_fresh(Instant::now()));
    assert!(o.ttl(Instant::now()) > 590);
}

/// RFC 9111 §5.1: a list-valued `Age` (or several lines) counts by its first member; a first
/// member that is not a non-negative integer makes the field ignored.
#[test]
fn age_lists_use_the_first_member() {
    let initial = |ages: &[&str]| {
        let mut pairs = vec![("cache-control", "max-age=600")];
        pairs.extend(ages.iter().map(|a| ("age", *a)));
        evaluate(200, &pairs).unwrap().initial_age
    };
    assert_eq!(initial(&["100, 200"]), 100);
    assert_eq!(initial(&[" 100 ,x"]), 100);
    assert_eq!(initial(&["50", "70"]), 50);
    assert_eq!(initial(&["x, 100"]), 0);
    assert_eq!(initial(&["-5"]), 0);
    assert!(initial(&["99999999999999999999"]) >= DELTA_MAX);
}

/// RFC 9111 §5.2.2.3: `must-understand` overrides `no-store` only for statuses this cache
/// implements; any other status with `no-store` is not stored.
#[test]
fn must_understand_only_for_understood_statuses() {
    let cc = [("cache-control", "no-store, must-understand, max-age=5")];
    for status in [200, 301, 404] {
        assert!(evaluate(status, &cc).is_ok(), "{status}");
    }
    for status in [299, 418, 599] {
        assert_eq!(evaluate(status, &cc).unwrap_err(), "no-store", "{status}");
    }
    // Without no-store, must-understand does not stop an explicitly fresh response.
    assert!(evaluate(299, &[("cache-control", "must-understand, max-age=5")]).is_ok());
}

#[test]
fn soft_purge_makes_stale_at_once() {
    let m = evaluate(
        200,
        &[("cache-control", "max-age=600, stale-while-revalidate=30")],
    )
    .unwrap();
    let o = Object::new(m, bytes::Bytes::from_static(b"x"), 1);
    o.invalidate();
    let now = Instant::now();
    assert!(!o.is_fresh(now));
    assert_eq!(o.ttl(now), 0);
    assert_eq!(o.staleness(now), Duration::ZERO);
}

#[test]
fn request_directives() {
    let r = RequestDirectives::parse(&headers(&[(
        "cache-control",
        "max-age=5, max-stale, min-fresh=2, only-if-cached",
    )]));
    assert_eq!(r.max_age, Some(5));
    assert_eq!(r.max_stale, Some(None));
    assert_eq!(r.min_fresh, Some(2));
    assert!(r.only_if_cached);
    let r = RequestDirectives::parse(&headers(&[("cache-control", "max-stale=10")]));
    assert_eq!(r.max_stale, Some(Some(10)));
    // Pragma counts only without Cache-Control.
    assert!(RequestDirectives::parse(&headers(&[("pragma", "no-cache")])).no_cache);
    assert!(
        !RequestDirectives::parse(&headers(&[
            ("pragma", "no-cache"),
            ("cache-control", "max-stale")
        ]))
        .no_cache
    );
    // Malformed: the strict reading.
    let r = RequestDirectives::parse(&headers(&[("cache-control", "max-age=x, min-fresh=y")]));
    assert_eq!(r.max_age, Some(0));
    assert_eq!(r.min_fresh, Some(DELTA_MAX));
}

#[test]
fn vary_selects_by_request_fields() {
    let req = headers(&[("accept-encoding", "gzip, br"), ("x-v", "A, b")]);
    let m = Meta::evaluate(
        &get(),
        Context {
            request_headers: &req,
            config: &crate::config::CacheConfig::default(),
        },
        StatusCode::OK,
        &headers(&[
            ("cache-control", "max-age=60"),
            ("vary", "Accept-Encoding, X-V"),
        ]),
        None,
        "http://h:80/",
        Exchange::now(),
    )
    .unwrap();
    assert!(m.vary.matches(&req));
    let with = |ae: &str, v: &str| headers(&[("accept-encoding", ae), ("x-v", v)]);
    // Accept-Encoding is a case-insensitive token list by default; X-V compares exactly.
    assert!(m.vary.matches(&with("BR,gzip", "A, b")));
    assert!(!m.vary.matches(&with("br", "A, b")));
    assert!(!m.vary.matches(&with("gzip, br", "A,b")));
    assert!(!m.vary.matches(&HeaderMap::new()));
}

#[test]
fn tags_from_both_headers() {
    let t = tags_of(&headers(&[
        ("surrogate-key", "a  b"),
        ("cache-tag", "b, c,,d"),
    ]));
    let t: Vec<&str> = t.iter().map(|s| &**s).collect();
    assert_eq!(t, ["a", "b", "c", "d"]);
}

fn targeted(pairs: &[(&str, &str)]) -> ResponseDirectives {
    let cdn = http::header::HeaderName::from_static("cdn-cache-control");
    ResponseDirectives::parse_targeted(&headers(pairs), &[cdn])
}

#[test]
fn targeted_field_replaces_cache_control_directive_by_directive() {
    let cc = ("cache-control", "no-store, private, max-age=5");
    let r = targeted(&[cc, ("cdn-cache-control", "max-age=60")]);
    assert!(r.targeted);
    assert_eq!(r.max_age, Some(Some(60)));
    assert!(!r.no_store && r.private == Qualified::Absent);
    type Check = fn(&ResponseDirectives) -> bool;
    let cases: Vec<(&str, Check)> = vec![
        ("no-store", |r| r.no_store),
        ("no-cache", |r| r.no_cache == Qualified::All),
        ("private", |r| r.private == Qualified::All),
        ("must-revalidate", |r| r.must_revalidate),
        ("proxy-revalidate", |r| r.proxy_revalidate),
        ("public", |r| r.public),
        ("immutable", |r| r.immutable),
        ("s-maxage=7", |r| r.s_maxage == Some(Some(7))),
        ("stale-while-revalidate=9", |r| {
            r.stale_while_revalidate == Some(9)
        }),
        ("stale-if-error=11", |r| r.stale_if_error == Some(11)),
        ("private=\"set-cookie\"", |r| {
            r.private == Qualified::Fields(vec![http::header::SET_COOKIE])
        }),
        // Parameters are ignored.
        ("no-store;x=1", |r| r.no_store),
    ];
    for (field, check) in cases {
        let r = targeted(&[("cache-control", "max-age=5"), ("cdn-cache-control", field)]);
        assert!(r.targeted && check(&r), "{field}: {r:?}");
        assert_eq!(r.max_age, None, "{field}: Cache-Control was ignored");
    }
}

#[test]
fn targeted_members_of_the_wrong_type_are_ignored() {
    for field in [
        "max-age=-1",
        "max-age=1.5",
        "max-age",
        "max-age=\"60\"",
        "max-age=(1 2)",
        "no-store=?0",
        "no-store=1",
    ] {
        let r = targeted(&[("cache-control", "max-age=5"), ("cdn-cache-control", field)]);
        assert!(r.targeted, "{field}: still a valid field");
        assert_eq!(r.max_age, None, "{field}");
        assert!(!r.no_store, "{field}");
    }
}

#[test]
fn an_invalid_or_empty_targeted_field_falls_back_to_cache_control() {
    for field in [
        "max-age=60,",
        "max-age=60;;",
        "Max-Age=60",
        "max-age=60, no-store=\"",
        "",
    ] {
        let r = targeted(&[("cache-control", "max-age=5"), ("cdn-cache-control", field)]);
        assert!(!r.targeted, "{field:?}");
        assert_eq!(r.max_age, Some(Some(5)), "{field:?}");
    }
    // Several lines are one Dictionary.
    let r = targeted(&[
        ("cdn-cache-control", "max-age=60"),
        ("cdn-cache-control", "no-cache"),
    ]);
    assert!(r.targeted && r.max_age == Some(Some(60)) && r.no_cache == Qualified::All);
}

#[test]
fn the_first_valid_target_wins_and_expires_is_ignored_under_one() {
    let ours = http::header::HeaderName::from_static("sluice-cache-control");
    let cdn = http::header::HeaderName::from_static("cdn-cache-control");
    let h = headers(&[
        ("sluice-cache-control", "max-age=1"),
        ("cdn-cache-control", "max-age=2"),
    ]);
    let r = ResponseDirectives::parse_targeted(&h, &[ours.clone(), cdn.clone()]);
    assert_eq!(r.max_age, Some(Some(1)));
    let h = headers(&[
        ("sluice-cache-control", "max-age=1,"),
        ("cdn-cache-control", "max-age=2"),
    ]);
    assert_eq!(
        ResponseDirectives::parse_targeted(&h, &[ours, cdn]).max_age,
        Some(Some(2))
    );

    let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(600));
    let expires = ("expires", later.as_str());
    assert!(lifetime(200, &[expires]) > 500);
    // The default target list is CDN-Cache-Control.
    let config = crate::config::CacheConfig::default();
    let m = Meta::evaluate(
        &get(),
        Context {
            request_headers: &HeaderMap::new(),
            config: &config,
        },
        StatusCode::OK,
        &headers(&[
            expires,
            ("cdn-cache-control", "must-revalidate"),
            ("etag", "\"e\""),
        ]),
        None,
        "http://h:80/",
        Exchange::now(),
    )
    .expect("storable: it has a validator");
    assert_eq!(
        m.lifetime, 0,
        "Expires does not count under a targeted field"
    );
}

/// A 206 head as the proxy stores it: a strong validator, freshness and `Content-Range`.
fn part_head(etag: &str, range: &str) -> (Meta, super::partial::ContentRange) {
    let h = [
        ("cache-control", "max-age=60"),
        ("etag", etag),
        ("content-range", range),
        ("surrogate-key", "parts"),
    ];
    let range = super::partial::storable_range(&headers(&h)).expect("a storable range");
    let cx = Context {
        request_headers: &HeaderMap::new(),
        config: &crate::config::CacheConfig::default(),
    };
    let meta = Meta::evaluate_part(
        &get(),
        cx,
        &headers(&h),
        None,
        "http://h:80/v",
        Exchange::now(),
    );
    (meta.unwrap(), range)
}

#[test]
fn only_single_satisfiable_ranges_with_a_strong_etag_are_parts() {
    use super::partial::{ContentRange, storable_range};
    let of = |pairs: &[(&str, &str)]| storable_range(&headers(pairs));
    let strong = ("etag", "\"a\"");
    assert_eq!(
        of(&[strong, ("content-range", "bytes 2-5/10")]),
        Some(ContentRange {
            first: 2,
            last: 5,
            complete: 10
        })
    );
    for bad in [
        &[("etag", "W/\"a\""), ("content-range", "bytes 2-5/10")][..],
        &[("content-range", "bytes 2-5/10")],
        &[strong, ("content-range", "bytes 2-5/*")],
        &[strong, ("content-range", "bytes 5-2/10")],
        &[strong, ("content-range", "bytes 2-10/10")],
        &[strong, ("content-range", "items 2-5/10")],
        &[strong, ("content-range", "bytes +2-5/10")],
        &[
            strong,
            ("content-range", "bytes 2-5/10"),
            ("content-range", "bytes 6-7/10"),
        ],
    ] {
        assert_eq!(of(bad), None, "{bad:?}");
    }
}

#[test]
fn parts_merge_serve_what_they_cover_and_purge_like_objects() {
    use super::{Cache, Lookup};
    use bytes::Bytes;
    let cache = Cache::new(crate::config::CacheConfig::default());
    let key = Bytes::from_static(b"http://h:80/v");
    let body = b"0123456789";
    let put = |first: usize, last: usize, etag: &str| {
        let (meta, r) = part_head(etag, &format!("bytes {first}-{last}/10"));
        let part = Bytes::copy_from_slice(&body[first..=last]);
        cache.insert_part(key.clone(), meta, r.first, part, r.complete);
    };
    let parts = || match cache.lookup(&key, &HeaderMap::new()) {
        Lookup::Parts(p) => p,
        _ => panic!("parts expected"),
    };
    put(0, 1, "\"a\"");
    put(6, 7, "\"a\"");
    put(3, 4, "\"a\"");
    let p = parts();
    assert_eq!(p.get(0, 2).as_deref(), Some(&b"01"[..]));
    assert_eq!(p.get(3, 5).as_deref(), Some(&b"34"[..]));
    assert_eq!(p.get(1, 4), None, "2 is missing");
    assert_eq!(p.head.status, StatusCode::PARTIAL_CONTENT);
    assert!(!p.head.headers.contains_key("content-range"));
    // Overlapping and touching parts join.
    put(1, 3, "\"a\"");
    assert_eq!(parts().get(0, 5).as_deref(), Some(&b"01234"[..]));

    // Purges reach parts through the tag and origin indexes.
    assert_eq!(cache.purge_tag("parts", true), 1);
    assert!(parts().head.is_invalidated());
    assert_eq!(cache.purge_prefix("http://h:80/v", false), 1);
    assert!(matches!(
        cache.lookup(&key, &HeaderMap::new()),
        Lookup::Miss
    ));

    // Another validator starts over; covering all of it stores the whole as a 200.
    put(0, 4, "\"a\"");
    put(5, 9, "\"b\"");
    assert_eq!(parts().get(0, 1), None);
    put(0, 4, "\"b\"");
    let Lookup::Found(whole) = cache.lookup(&key, &HeaderMap::new()) else {
        panic!("the combined response")
    };
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(&whole.body[..], body);
    assert_eq!(whole.headers["content-length"], "10");
    assert_eq!(whole.etag.as_ref().unwrap(), "\"b\"");
    // A part never replaces a complete response.
    put(0, 1, "\"c\"");
    assert!(matches!(
        cache.lookup(&key, &HeaderMap::new()),
        Lookup::Found(_)
    ));
}

#[test]
fn parts_in_too_many_pieces_are_refused() {
    use super::{Cache, Lookup};
    use bytes::Bytes;
    let cache = Cache::new(crate::config::CacheConfig::default());
    let key = Bytes::from_static(b"k");
    // Every other byte of 100: 32 separate ranges are kept, the 33rd is not.
    for i in 0..33u64 {
        let (meta, _) = part_head("\"a\"", &format!("bytes {0}-{0}/100", 2 * i));
        cache.insert_part(key.clone(), meta, 2 * i, Bytes::from_static(b"x"), 100);
    }
    let Lookup::Parts(p) = cache.lookup(&key, &HeaderMap::new()) else {
        panic!("parts expected")
    };
    assert!(p.get(62, 63).is_some());
    assert!(p.get(64, 65).is_none());
}
