//! Pick cost of every load-balancing algorithm (`sluice::balance`) with 3, 30, 300 and 3000
//! endpoints: all healthy, weights 1..=5, nothing in flight, one `Set` and `Balancers` per
//! case. Keyed algorithms get a different pre-generated random key (ring hash, Maglev) or
//! client address (`ip_hash`) on each pick, so lookups are not always the same cache lines.
//!
//! `cargo bench -p sluice --bench balance` (about a minute; add `-- --quick` for less).
//! Expected shape: Maglev O(1), ring hash and weighted random O(log n), round robin and the
//! power-of-two-choices algorithms O(1), least connections and smooth weighted round robin
//! O(n) up to 64 endpoints (full scans, as in nginx), then O(1) (two choices) and O(log n)
//! (earliest deadline first).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sluice::balance::{Algorithm, Backend, Balancers, Ctx, Live, Options, PoolLive, Set, now};

/// Distinct keys and client addresses cycled through by the keyed cases.
const KEYS: usize = 1024;

fn pool(alg: Algorithm, n: usize) -> Set {
    let backends = (0..n)
        .map(|i| Backend {
            address: format!("10.1.{}.{}:8080", i / 250, i % 250 + 1).into(),
            weight: 1 + (i % 5) as u32,
            live: Arc::new(Live::new(false)),
        })
        .collect();
    let opts = Options {
        algorithm: alg,
        ..Options::default()
    };
    Set::new(backends, Arc::new(PoolLive::default()), opts)
}

fn pick_cost(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    let mut gen_rng = fastrand::Rng::with_seed(0xbe_4c);
    let keys: Vec<[u8; 8]> = (0..KEYS).map(|_| gen_rng.u64(..).to_le_bytes()).collect();
    let clients: Vec<IpAddr> = (0..KEYS)
        .map(|_| IpAddr::V4(Ipv4Addr::from(gen_rng.u32(..))))
        .collect();
    let t = now();
    for alg in Algorithm::ALL {
        for n in [3, 30, 300, 3000] {
            let set = pool(alg, n);
            let balancers = Balancers::new(&set);
            let mut rng = fastrand::Rng::with_seed(1);
            let mut k = 0;
            group.bench_function(BenchmarkId::new(alg.name(), n), |b| {
                b.iter(|| {
                    k = (k + 1) % KEYS;
                    let (key, client) = match alg {
                        Algorithm::IpHash => (None, Some(clients[k])),
                        Algorithm::RingHash | Algorithm::Maglev => (Some(&keys[k][..]), None),
                        _ => (None, None),
                    };
                    let mut cx = Ctx {
                        key,
                        client,
                        now: t,
                        rng: &mut rng,
                        exclude: &[],
                    };
                    black_box(balancers.pick(&set, Some(alg), &mut cx))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pick_cost);
criterion_main!(benches);
