//! The per-request policy path: `PolicyRuntime::decide` with the built-in default policy
//! (new Store -> instantiate from InstancePre -> decide -> drop, plus decision checks), in the
//! fresh-instance and the reuse modes, against the same decision made natively.
//!
//! `cargo bench -p sluice --bench policy`. Besides criterion's timings, each case prints minor
//! page faults per call over 100k calls (from /proc/self/stat).

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::config::{InstanceMode, PolicyConfig};
use sluice::policy::{EndpointInfo, PolicyRequest, PolicyRuntime, Upstreams, Verdict};
use std::hint::black_box;
use std::sync::Arc;

struct OnePool;

impl Upstreams for OnePool {
    fn pick(&self, _: Option<&str>, _: Option<&[u8]>) -> Option<Arc<str>> {
        Some("127.0.0.1:9".into())
    }
    fn endpoints(&self, _: &str) -> Option<Vec<EndpointInfo>> {
        None
    }
    fn check_target(&self, _: Option<&str>, _: Option<&str>) -> Result<(), String> {
        Ok(())
    }
}

/// A browser-like request: 8 headers, a query to sort.
fn request() -> PolicyRequest {
    let req = http::Request::builder()
        .uri("/products/42?utm_source=x&color=red&size=m")
        .header("host", "shop.example.com")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
        )
        .header("accept", "text/html,application/xhtml+xml")
        .header("accept-language", "en-GB,en;q=0.5")
        .header("accept-encoding", "gzip, deflate, br")
        .header("cookie", "session=0123456789abcdef; theme=dark")
        .header("referer", "https://shop.example.com/")
        .header("x-request-id", "7d0f6e0a-2c1b-4c8e-9f1e-3b5a8c2d1e0f")
        .body(())
        .unwrap();
    let (parts, ()) = req.into_parts();
    PolicyRequest {
        authority: Some("shop.example.com".parse().unwrap()),
        parts,
        client: "192.0.2.7:50000".parse().unwrap(),
        tls: true,
        sni: Some("shop.example.com".into()),
    }
}

fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Field 10 (minflt), counted after the parenthesised command name.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(7).unwrap().parse().unwrap()
}

fn bench(c: &mut Criterion) {
    let cache = std::env::temp_dir().join("sluice-bench-policy-cache");
    sluice::policy::engine::configure(sluice::policy::EngineOptions {
        cache_dir: Some(cache),
    });
    let mut group = c.benchmark_group("decide");
    for (name, config) in [
        ("fresh", PolicyConfig::default()),
        (
            "reuse",
            PolicyConfig {
                instances: InstanceMode::Reuse(1_000_000),
                ..PolicyConfig::default()
            },
        ),
        (
            "native",
            PolicyConfig {
                native: true,
                ..PolicyConfig::default()
            },
        ),
    ] {
        let rt = PolicyRuntime::new(&config, Arc::new(OnePool)).unwrap();
        let mut req = Some(request());
        let mut call = || {
            let (r, v) = rt.decide(req.take().unwrap());
            assert!(matches!(v, Verdict::Decided(_)));
            black_box(&v);
            req = Some(r);
        };
        for _ in 0..1000 {
            call();
        }
        let (n, before) = (100_000u64, minor_faults());
        for _ in 0..n {
            call();
        }
        let faults = minor_faults() - before;
        eprintln!(
            "decide/{name}: {:.3} minor page faults per call over {n} calls",
            faults as f64 / n as f64
        );
        group.bench_function(name, |b| b.iter(&mut call));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
