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

criterion_group!(benches, hit_path);
criterion_main!(benches);
