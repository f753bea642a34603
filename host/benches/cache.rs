//! The cache's per-hit work outside the network: the default key, the request's
//! `Cache-Control`, a store lookup with `Vary` selection among 100k entries, and the
//! freshness check; plus what storing a response costs (RFC 9111 §3 evaluation and insert).
//!
//! `cargo bench -p sluice --bench cache` (add `-- --quick` for less). The whole-proxy cost of
//! a hit is measured by `bench/cache.sh`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use sluice::cache::directives::RequestDirectives;
use sluice::cache::object::{Context, Exchange, Meta, Object, RequestFacts};
use sluice::cache::{Cache, Lookup, key};
use sluice::config::CacheConfig;

const ENTRIES: usize = 100_000;

fn response() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert("content-type", HeaderValue::from_static("text/html"));
    h.insert("etag", HeaderValue::from_static("\"abc123\""));
    h.insert("vary", HeaderValue::from_static("Accept-Encoding"));
    h
}

fn request() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("accept-encoding", HeaderValue::from_static("gzip, br"));
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    h
}

fn facts() -> RequestFacts {
    RequestFacts {
        method: Method::GET,
        authorization: false,
        directives: RequestDirectives::default(),
    }
}

fn store(cache: &Cache, url: &str, body: &Bytes) {
    let config = CacheConfig::default();
    let meta = Meta::evaluate(
        &facts(),
        Context {
            request_headers: &request(),
            config: &config,
        },
        StatusCode::OK,
        &response(),
        None,
        url,
        Exchange::now(),
    )
    .expect("storable");
    cache.insert(
        Bytes::from(url.to_owned()),
        Object::new(meta, body.clone(), url.len()),
    );
}

fn hit_path(c: &mut Criterion) {
    let cache = Cache::new(CacheConfig {
        capacity: 1 << 30,
        ..CacheConfig::default()
    });
    let body = Bytes::from(vec![b'x'; 1024]);
    let urls: Vec<String> = (0..ENTRIES)
        .map(|i| format!("https://shop.example:443/products/{i}?page=1"))
        .collect();
    for u in &urls {
        store(&cache, u, &body);
    }
    let req = request();
    let authority: http::uri::Authority = "shop.example".parse().unwrap();
    let targets: Vec<http::Uri> = (0..1024)
        .map(|i| {
            format!("/products/{}?page=1", i * 97 % ENTRIES)
                .parse()
                .unwrap()
        })
        .collect();

    let mut g = c.benchmark_group("cache");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let mut i = 0;
    g.bench_function("default_key", |b| {
        b.iter(|| {
            i = (i + 1) % targets.len();
            black_box(key::default_key(true, Some(&authority), &targets[i]))
        })
    });
    g.bench_function("request_directives_absent", |b| {
        b.iter(|| black_box(RequestDirectives::parse(black_box(&req))))
    });
    let mut i = 0;
    g.bench_function("lookup_vary_fresh_100k", |b| {
        b.iter(|| {
            i = (i + 97) % ENTRIES;
            match cache.lookup(urls[i].as_bytes(), &req) {
                Lookup::Found(o) => black_box(o.is_fresh(Instant::now())),
                _ => panic!("stored"),
            }
        })
    });
    let resp = response();
    let config = CacheConfig::default();
    g.bench_function("evaluate_storable", |b| {
        b.iter(|| {
            black_box(Meta::evaluate(
                &facts(),
                Context {
                    request_headers: &req,
                    config: &config,
                },
                StatusCode::OK,
                &resp,
                None,
                "https://shop.example:443/x",
                Exchange::now(),
            ))
        })
    });
    g.finish();
}

/// Purging at 1M entries on 1,000 origins: a tag carried by 100 of them through the tag
/// index, against the same purge as a scan of the store (what every purge-tag cost before
/// the index); a prefix of one origin through the origin index, against a scan. Soft
/// purges, so every iteration finds the same objects.
fn purge_at_a_million(c: &mut Criterion) {
    const MILLION: usize = 1_000_000;
    let cache = Cache::new(CacheConfig {
        capacity: 16 << 30,
        max_object_size: 1 << 20,
        ..CacheConfig::default()
    });
    let config = CacheConfig::default();
    let body = Bytes::from_static(b"0123456789abcdef");
    let mut headers = HeaderMap::new();
    headers.insert("cache-control", HeaderValue::from_static("max-age=3600"));
    for i in 0..MILLION {
        let url = format!("https://shop{}.example:443/p/{i}", i % 1000);
        let mut meta = Meta::evaluate(
            &facts(),
            Context {
                request_headers: &HeaderMap::new(),
                config: &config,
            },
            StatusCode::OK,
            &headers,
            None,
            &url,
            Exchange::now(),
        )
        .expect("storable");
        // 10,000 tags of 100 objects each.
        meta.tags.push(format!("group-{}", i % 10_000).into());
        cache.insert(Bytes::from(url), Object::new(meta, body.clone(), 0));
    }
    assert_eq!(cache.purge_tag("group-7", true), 100);

    let mut g = c.benchmark_group("purge_1m");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("tag_indexed", |b| {
        b.iter(|| black_box(cache.purge_tag(black_box("group-7"), true)))
    });
    g.bench_function("tag_by_scan", |b| {
        b.iter(|| black_box(cache.purge(true, |_, o| o.has_tag(black_box("group-7")))))
    });
    // The 1,000 objects of one origin.
    let prefix = "https://shop7.example:443/p/";
    assert_eq!(cache.purge_prefix(prefix, true), 1000);
    g.bench_function("prefix_indexed", |b| {
        b.iter(|| black_box(cache.purge_prefix(black_box(prefix), true)))
    });
    g.bench_function("prefix_by_scan", |b| {
        b.iter(|| {
            let prefix = black_box(prefix);
            black_box(cache.purge(true, |_, o| o.url.starts_with(prefix)))
        })
    });
    g.finish();
}

criterion_group!(benches, hit_path, purge_at_a_million);
criterion_main!(benches);
