//! Memory per stored object, against what the cache charges for it (its weight), at 100k
//! and 1M entries; and whether a full store stays within `capacity`. Resident memory comes
//! from `/proc/self/statm`, so the figures include the allocator's own overhead.
//!
//! `cargo bench -p sluice --bench cache_memory` (prints a table; no timing).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use sluice::cache::Cache;
use sluice::cache::directives::RequestDirectives;
use sluice::cache::object::{Context, Exchange, Meta, Object, RequestFacts};
use sluice::config::CacheConfig;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A typical small response: four header fields, a 1 KiB body, a 40-byte URL, one tag; with
/// `extra` more header fields of 40 bytes each.
fn fill(cache: &Cache, from: usize, n: usize, body: &Bytes, extra: usize) {
    let config = CacheConfig::default();
    let mut headers = HeaderMap::new();
    for i in 0..extra {
        headers.insert(
            http::HeaderName::try_from(format!("x-extra-{i:02}")).unwrap(),
            HeaderValue::from_static("0123456789012345678901234567"),
        );
    }
    headers.insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=3600"),
    );
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert("etag", HeaderValue::from_static("\"5f2a-1b3c9d\""));
    headers.insert(
        "date",
        HeaderValue::from_static("Mon, 07 Dec 2026 10:00:00 GMT"),
    );
    let facts = RequestFacts {
        method: Method::GET,
        authorization: false,
        directives: RequestDirectives::default(),
    };
    for i in from..from + n {
        let url = format!("https://shop.example:443/products/{i:09}");
        let mut meta = Meta::evaluate(
            &facts,
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
        meta.tags.push(format!("product-{}", i % 1000).into());
        // A body of its own, as a fill makes one.
        let own = Bytes::from(body.to_vec());
        cache.insert(Bytes::from(url), Object::new(meta, own, 0));
    }
}

fn entries(cache: &Cache) -> u64 {
    cache.stats_json()["entries"].as_u64().unwrap()
}

fn weight(cache: &Cache) -> u64 {
    cache.stats_json()["bytes"].as_u64().unwrap()
}

/// Each case runs in a process of its own (this binary again), so memory one case freed
/// cannot hide what the next one uses.
fn main() {
    if let Ok(case) = std::env::var("CACHE_MEMORY_CASE") {
        return run(&case);
    }
    println!(
        "| entries | object | resident bytes / entry | charged bytes / entry | resident / charged |"
    );
    println!("|---|---|---|---|---|");
    for case in ["100000", "1000000", "100000/small", "capacity"] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env("CACHE_MEMORY_CASE", case)
            .output()
            .expect("run a case");
        assert!(
            out.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

fn run(case: &str) {
    let body = Bytes::from(vec![b'x'; 1024]);
    let (count, small) = match case.split_once('/') {
        Some((n, _)) => (n.parse::<usize>().ok(), true),
        None => (case.parse::<usize>().ok(), false),
    };
    if let Some(n) = count {
        // "small": a 128-byte body and 12 more header fields.
        let (body, extra, shape) = if small {
            (Bytes::from(vec![b'x'; 128]), 12, "128 B body, 16 fields")
        } else {
            (body, 0, "1 KiB body, 4 fields")
        };
        let before = rss_bytes();
        let cache = Cache::new(CacheConfig {
            capacity: 64 << 30,
            max_object_size: 1 << 20,
            ..CacheConfig::default()
        });
        fill(&cache, 0, n, &body, extra);
        assert_eq!(entries(&cache), n as u64);
        let resident = rss_bytes().saturating_sub(before) as f64 / n as f64;
        let charged = weight(&cache) as f64 / n as f64;
        println!(
            "| {n} | {shape} | {resident:.0} | {charged:.0} | {:.2} |",
            resident / charged
        );
        return;
    }
    // A 256 MiB store fed 1M objects (about 2.5x what fits): resident memory against capacity.
    let capacity: u64 = 256 << 20;
    let before = rss_bytes();
    let cache = Cache::new(CacheConfig {
        capacity,
        max_object_size: 1 << 20,
        ..CacheConfig::default()
    });
    fill(&cache, 0, 1_000_000, &body, 0);
    let resident = rss_bytes().saturating_sub(before);
    println!();
    println!(
        "capacity {} MiB, 1M objects offered: {} kept, charged {:.1} MiB, resident {:.1} MiB ({:.2} x capacity)",
        capacity >> 20,
        entries(&cache),
        weight(&cache) as f64 / (1 << 20) as f64,
        resident as f64 / (1 << 20) as f64,
        resident as f64 / capacity as f64
    );
}
