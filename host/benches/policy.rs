//! The per-request policy path: `PolicyRuntime::decide` with the built-in default policy
//! (new Store -> instantiate from InstancePre -> decide -> drop, plus decision checks), in the
//! fresh-instance and the reuse modes, against the same decision made natively.
//!
//! Then the shape of the request interface (`decide/shape-*`): the test guest `probe` on the
//! same request with the paths `/shape/lazy` (what the default policy reads), `/shape/eager`
//! (also every header, client IP, SNI and version: what an eager request record would carry)
//! and `/shape/calls` (lazy plus 100 accessor calls), with fresh instances and again reusing
//! instances (`-reuse`: no instantiation in the timing, so the differences are less noisy).
//! See `bench/RESULTS.md`.
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
    fn pick(
        &self,
        _: Option<&str>,
        _: Option<sluice::policy::Algorithm>,
        _: Option<&[u8]>,
        _: std::net::IpAddr,
    ) -> Option<Arc<str>> {
        Some("127.0.0.1:9".into())
    }
    fn endpoints(&self, _: &str) -> Option<Vec<EndpointInfo>> {
        None
    }
    fn health(&self, _: &str, _: &str) -> Option<sluice::policy::HealthState> {
        None
    }
    fn check_target(&self, _: Option<&str>, _: Option<&str>) -> Result<(), String> {
        Ok(())
    }
}

/// A browser-like request: 8 headers, a query to sort.
fn request() -> PolicyRequest {
    request_to("/products/42")
}

/// [`request`] with another path (same query and headers).
fn request_to(path: &str) -> PolicyRequest {
    let req = http::Request::builder()
        .uri(format!("{path}?utm_source=x&color=red&size=m"))
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
    let probe = || PolicyConfig {
        module: Some(sluice_tests::guests::PROBE.into()),
        instances: InstanceMode::Fresh,
        ..PolicyConfig::default()
    };
    let probe_reused = || PolicyConfig {
        instances: InstanceMode::Reuse(1_000_000),
        ..probe()
    };
    let mut group = c.benchmark_group("decide");
    for (name, config, path) in [
        (
            "fresh",
            PolicyConfig {
                instances: InstanceMode::Fresh,
                ..PolicyConfig::default()
            },
            None,
        ),
        (
            "reuse",
            PolicyConfig {
                instances: InstanceMode::Reuse(1_000_000),
                ..PolicyConfig::default()
            },
            None,
        ),
        (
            "native",
            PolicyConfig {
                native: true,
                ..PolicyConfig::default()
            },
            None,
        ),
        ("shape-lazy", probe(), Some("/shape/lazy")),
        ("shape-eager", probe(), Some("/shape/eager")),
        ("shape-calls", probe(), Some("/shape/calls")),
        ("shape-lazy-reuse", probe_reused(), Some("/shape/lazy")),
        ("shape-eager-reuse", probe_reused(), Some("/shape/eager")),
        ("shape-calls-reuse", probe_reused(), Some("/shape/calls")),
    ] {
        let rt = PolicyRuntime::new(&config, Arc::new(OnePool)).unwrap();
        let mut req = Some(path.map_or_else(request, request_to));
        let mut call = || {
            let (r, v, _, _) = rt.decide(req.take().unwrap());
            if let Verdict::Failed(f) = &v {
                panic!("decide/{name} failed: {f}");
            }
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
    languages(c);
}

/// `lang/<label>-{fresh,reuse}`: `decide` on `GET /api/v1/users` for each component in
/// `SLUICE_BENCH_POLICIES` (`label=path,label=path`, e.g. the path-routing example built in
/// each language with `sluice policy build`); nothing when it is unset. See `bench/RESULTS.md`.
fn languages(c: &mut Criterion) {
    let Ok(list) = std::env::var("SLUICE_BENCH_POLICIES") else {
        return;
    };
    let mut group = c.benchmark_group("lang");
    for entry in list.split(',').filter(|e| !e.is_empty()) {
        let (label, path) = entry.split_once('=').expect("label=path");
        for (mode, instances) in [
            ("fresh", InstanceMode::Fresh),
            ("reuse", InstanceMode::Reuse(1_000_000)),
        ] {
            let config = PolicyConfig {
                module: Some(path.into()),
                instances,
                memory: 256 << 20,
                deadline: std::time::Duration::from_millis(50),
                ..PolicyConfig::default()
            };
            let rt = PolicyRuntime::new(&config, Arc::new(OnePool)).unwrap();
            let mut req = Some(request_to("/api/v1/users"));
            let mut call = || {
                let (r, v, _, _) = rt.decide(req.take().unwrap());
                if let Verdict::Failed(f) = &v {
                    panic!("lang/{label}-{mode} failed: {f}");
                }
                black_box(&v);
                req = Some(r);
            };
            group.bench_function(format!("{label}-{mode}"), |b| b.iter(&mut call));
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
