//! Deterministic simulations of the balancing algorithms: seeded randomness, virtual time.
//!
//! Distribution figures are printed; read them with
//! `cargo test -p sluice --lib balance -- --nocapture --test-threads 1`.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use super::*;

/// Virtual start time (any non-zero instant).
const T0: Nanos = 1_000_000_000;
const MS: Nanos = 1_000_000;
const SECOND: Nanos = 1_000_000_000;

/// Weights of the proportion tests: 10 endpoints, shares from 3.3% to 16.7%.
const WEIGHTS: [u32; 10] = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5];

fn backends(weights: &[u32]) -> Vec<Backend> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| Backend {
            address: format!("10.0.{}.{}:8080", i / 200, i % 200 + 1).into(),
            weight,
            live: Arc::new(Live::new(false)),
        })
        .collect()
}

/// One pool, its balancers and a seeded random source.
struct Sim {
    set: Set,
    balancers: Balancers,
    alg: Algorithm,
    rng: fastrand::Rng,
}

impl Sim {
    fn new(alg: Algorithm, weights: &[u32], opts: Options) -> Sim {
        Sim::with_backends(alg, backends(weights), opts)
    }

    fn with_backends(alg: Algorithm, backends: Vec<Backend>, mut opts: Options) -> Sim {
        opts.algorithm = alg;
        let set = Set::new(backends, Arc::new(PoolLive::default()), opts);
        let balancers = Balancers::new(&set);
        Sim {
            set,
            balancers,
            alg,
            rng: fastrand::Rng::with_seed(0x5eed),
        }
    }

    fn pick_with(
        &mut self,
        now: Nanos,
        key: Option<&[u8]>,
        client: Option<IpAddr>,
        exclude: &[usize],
    ) -> Option<usize> {
        let mut cx = Ctx {
            key,
            client,
            now,
            rng: &mut self.rng,
            exclude,
        };
        let picked = self.balancers.pick(&self.set, Some(self.alg), &mut cx);
        if let Some(i) = picked {
            assert!(
                self.set.eligible(i, &cx),
                "{:?} picked ineligible {i}",
                self.alg
            );
        }
        picked
    }

    fn pick(&mut self, now: Nanos) -> Option<usize> {
        self.pick_with(now, None, None, &[])
    }

    /// A pick for a request identified by `id`: the hash key for ring hash and Maglev, the
    /// client address for `ip_hash`, nothing for the others.
    fn pick_for(&mut self, id: u64, now: Nanos, exclude: &[usize]) -> Option<usize> {
        match self.alg {
            Algorithm::IpHash => self.pick_with(now, None, Some(client_ip(id)), exclude),
            Algorithm::RingHash | Algorithm::Maglev => {
                self.pick_with(now, Some(&id.to_le_bytes()), None, exclude)
            }
            _ => self.pick_with(now, None, None, exclude),
        }
    }

    fn set_flag(&self, i: usize, flag: u8, on: bool, now: Nanos) {
        self.set.backends[i].live.set_flag(flag, on, now);
        self.set.recount();
    }

    fn address(&self, i: usize) -> Arc<str> {
        self.set.backends[i].address.clone()
    }
}

/// A client address derived from `id` (distinct ids, distinct addresses).
fn client_ip(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(id as u32))
}

/// Shares of `counts` against `weights`: (RMS, max) deviation of each endpoint's share from
/// weight / total, in percentage points.
fn deviation(counts: &[u64], weights: &[u32]) -> (f64, f64) {
    let picks: u64 = counts.iter().sum();
    let total: u32 = weights.iter().sum();
    let deviations: Vec<f64> = counts
        .iter()
        .zip(weights)
        .map(|(&c, &w)| 100.0 * (c as f64 / picks as f64 - f64::from(w) / f64::from(total)))
        .collect();
    let rms = (deviations.iter().map(|d| d * d).sum::<f64>() / deviations.len() as f64).sqrt();
    let max = deviations.iter().fold(0.0f64, |m, d| m.max(d.abs()));
    (rms, max)
}

/// Picks for `picks` distinct random request ids (keys, client addresses), all at `T0`.
fn count_picks(sim: &mut Sim, picks: usize) -> Vec<u64> {
    let mut ids = fastrand::Rng::with_seed(42);
    let mut counts = vec![0u64; sim.set.len()];
    for _ in 0..picks {
        let id = ids.u64(..);
        let i = sim.pick_for(id, T0, &[]).expect("an endpoint");
        counts[i] += 1;
    }
    counts
}

/// Picks with `concurrency` requests in flight: each pick holds its endpoint until a random
/// one of the requests in flight finishes, so an endpoint's share of the picks equals its
/// share of the in-flight requests.
fn count_loaded_picks(sim: &mut Sim, picks: usize, concurrency: usize) -> Vec<u64> {
    let mut finisher = fastrand::Rng::with_seed(7);
    let mut held: Vec<InFlight> = Vec::with_capacity(concurrency + 1);
    let mut counts = vec![0u64; sim.set.len()];
    let warmup = 4 * concurrency;
    for n in 0..warmup + picks {
        let i = sim.pick(T0).expect("an endpoint");
        if n >= warmup {
            counts[i] += 1;
        }
        held.push(sim.set.acquire(i).expect("no limit"));
        if held.len() > concurrency {
            held.swap_remove(finisher.usize(0..held.len()));
        }
    }
    counts
}

fn report(name: &str, counts: &[u64], weights: &[u32]) -> (f64, f64) {
    let (rms, max) = deviation(counts, weights);
    println!(
        "balance: {name:<28} share deviation from weight: stddev {rms:.3} pp, max {max:.3} pp"
    );
    (rms, max)
}

#[test]
fn smooth_wrr_sequence_is_nginx() {
    assert_eq!(smooth_wrr_sequence(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
    assert_eq!(smooth_wrr_sequence(&[1, 1, 1]), [0, 1, 2]);
    assert_eq!(smooth_wrr_sequence(&[2, 0, 1]), [0, 2, 0]);
    assert_eq!(smooth_wrr_sequence(&[]), Vec::<usize>::new());
    let cycle = smooth_wrr_sequence(&[3, 2, 1]);
    assert_eq!(cycle.len(), 6);
    for (i, w) in [3, 2, 1].into_iter().enumerate() {
        assert_eq!(cycle.iter().filter(|&&e| e == i).count(), w);
    }

    // The balancer follows the same sequence, cycle after cycle.
    let mut sim = Sim::new(
        Algorithm::WeightedRoundRobin,
        &[5, 1, 1],
        Options::default(),
    );
    let picks: Vec<usize> = (0..14).filter_map(|_| sim.pick(T0)).collect();
    assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
}

#[test]
fn smooth_wrr_skips_ineligible_and_keeps_proportions() {
    let weights = [5, 1, 1, 3];
    let mut sim = Sim::new(Algorithm::WeightedRoundRobin, &weights, Options::default());
    sim.set_flag(1, DOWN, true, T0);
    let mut counts = [0u64; 4];
    for _ in 0..9_000 {
        counts[sim.pick(T0).expect("an endpoint")] += 1;
    }
    assert_eq!(counts[1], 0);
    // 5:1:3 exactly, over whole cycles of 9.
    assert_eq!(counts, [5_000, 0, 1_000, 3_000]);

    // Back up: 5:1:1:3 again.
    sim.set_flag(1, DOWN, false, T0);
    let mut counts = [0u64; 4];
    for _ in 0..10_000 {
        counts[sim.pick(T0).expect("an endpoint")] += 1;
    }
    let (_, max) = deviation(&counts, &weights);
    assert!(max < 0.1, "{counts:?}");
}

/// Weights 1..=5 over `n` endpoints (the bench's pools).
fn large_weights(n: usize) -> Vec<u32> {
    (0..n).map(|i| 1 + (i % 5) as u32).collect()
}

#[test]
fn large_pool_wrr_is_edf_with_exact_proportions_and_spread_turns() {
    let weights = large_weights(smooth_wrr::SCAN_LIMIT * 2);
    let total: usize = weights.iter().map(|&w| w as usize).sum();
    let mut sim = Sim::new(Algorithm::WeightedRoundRobin, &weights, Options::default());
    let mut last = vec![None; weights.len()];
    let mut max_gap = vec![0usize; weights.len()];
    let mut counts = vec![0u32; weights.len()];
    for k in 0..total * 20 {
        let i = sim.pick(T0).expect("an endpoint");
        counts[i] += 1;
        if let Some(prev) = last[i] {
            max_gap[i] = max_gap[i].max(k - prev);
        }
        last[i] = Some(k);
        if k + 1 == total {
            // One cycle from the start: exactly `weight` turns each.
            assert_eq!(counts, weights, "first cycle");
        }
    }
    let expected: Vec<u32> = weights.iter().map(|w| w * 20).collect();
    assert_eq!(counts, expected, "20 cycles");
    for (i, &w) in weights.iter().enumerate() {
        // Evenly spaced: never twice the mean interval between two turns.
        assert!(
            max_gap[i] <= 2 * total / w as usize,
            "endpoint {i} (weight {w}): gap {}",
            max_gap[i]
        );
    }
}

#[test]
fn large_pool_wrr_brings_an_endpoint_back_without_a_burst() {
    let weights = large_weights(smooth_wrr::SCAN_LIMIT * 2);
    let total: usize = weights.iter().map(|&w| w as usize).sum();
    let mut sim = Sim::new(Algorithm::WeightedRoundRobin, &weights, Options::default());
    sim.set_flag(0, DOWN, true, T0);
    for _ in 0..total * 10 {
        assert_ne!(sim.pick(T0), Some(0));
    }
    sim.set_flag(0, DOWN, false, T0);
    let back = (0..total).filter(|_| sim.pick(T0) == Some(0)).count();
    // Weight 1: one turn per cycle, not the ten it missed.
    assert!(
        (1..=2).contains(&back),
        "{back} turns in the first cycle back"
    );
    // A retry's exclusion is honoured.
    let first = sim.pick(T0).expect("an endpoint");
    assert_ne!(sim.pick_with(T0, None, None, &[first + 1]), Some(first + 1));
}

#[test]
fn large_pool_least_connections_uses_two_choices() {
    let n = smooth_wrr::SCAN_LIMIT * 2;
    let mut sim = Sim::new(Algorithm::LeastConnections, &vec![1; n], Options::default());
    // The first half busy (3 in flight each), the second half idle.
    let _busy: Vec<_> = (0..n / 2)
        .flat_map(|i| (0..3).map(move |_| i))
        .map(|i| sim.set.acquire(i).expect("no limit"))
        .collect();
    let picks = 4_000;
    let on_busy = (0..picks).filter(|_| sim.pick(T0).unwrap() < n / 2).count();
    // Two random choices land both on busy endpoints about 1 time in 4 (a scan: never;
    // one random choice: 1 in 2).
    let share = on_busy as f64 / picks as f64;
    assert!((0.15..0.35).contains(&share), "{share}");
}

#[test]
fn round_robin_cycles_through_eligible() {
    let mut sim = Sim::new(Algorithm::RoundRobin, &[1, 5, 2, 1], Options::default());
    let picks: Vec<usize> = (0..8).filter_map(|_| sim.pick(T0)).collect();
    assert_eq!(picks, [0, 1, 2, 3, 0, 1, 2, 3], "weights are ignored");

    sim.set_flag(2, EJECTED, true, T0);
    let picks: Vec<usize> = (0..9).filter_map(|_| sim.pick(T0)).collect();
    // No double turn for the endpoint after the ejected one.
    assert_eq!(picks, [0, 1, 3, 0, 1, 3, 0, 1, 3]);

    // A retry excluding the next endpoint takes the one after it.
    assert_eq!(sim.pick_with(T0, None, None, &[0]), Some(1));
}

#[test]
fn weighted_proportions() {
    const PICKS: usize = 100_000;
    let cases: [(&str, Algorithm, Options, f64); 6] = [
        (
            "weighted_round_robin",
            Algorithm::WeightedRoundRobin,
            Options::default(),
            0.01,
        ),
        ("random", Algorithm::Random, Options::default(), 1.0),
        (
            "ip_hash (random IPs)",
            Algorithm::IpHash,
            Options::default(),
            1.0,
        ),
        (
            "maglev (random keys)",
            Algorithm::Maglev,
            Options::default(),
            1.0,
        ),
        (
            "ring_hash 1024 points/weight",
            Algorithm::RingHash,
            Options {
                ring_points_per_weight: 1024,
                ..Options::default()
            },
            1.0,
        ),
        // The default 160 points per unit of weight: the ring's own imbalance (a relative
        // stddev of about 1/sqrt(points), 0.6 pp for the weight-5 endpoints here) dominates
        // the sampling noise; these addresses stay within 1 pp.
        (
            "ring_hash 160 points/weight",
            Algorithm::RingHash,
            Options::default(),
            1.0,
        ),
    ];
    for (name, alg, opts, tolerance) in cases {
        let mut sim = Sim::new(alg, &WEIGHTS, opts);
        let counts = count_picks(&mut sim, PICKS);
        let (_, max) = report(name, &counts, &WEIGHTS);
        assert!(max <= tolerance, "{name}: {counts:?}");
    }
}

#[test]
fn load_aware_proportions_follow_weights() {
    const PICKS: usize = 100_000;
    for alg in [Algorithm::LeastConnections, Algorithm::LeastRequest] {
        let mut sim = Sim::new(alg, &WEIGHTS, Options::default());
        let counts = count_loaded_picks(&mut sim, PICKS, 1_000);
        let (_, max) = report(
            &format!("{} (1000 in flight)", alg.name()),
            &counts,
            &WEIGHTS,
        );
        assert!(max <= 1.0, "{alg:?}: {counts:?}");
    }
}

#[test]
fn least_connections_prefers_the_least_loaded() {
    let mut sim = Sim::new(Algorithm::LeastConnections, &[1, 1, 2], Options::default());
    let _a = sim.set.acquire(0).expect("no limit");
    let _b = sim.set.acquire(2).expect("no limit");
    // 1/1, 0/1, 1/2: endpoint 1 every time.
    for _ in 0..5 {
        assert_eq!(sim.pick(T0), Some(1));
    }
    let _c = sim.set.acquire(1).expect("no limit");
    // 1/1, 1/1, 1/2: endpoint 2.
    assert_eq!(sim.pick(T0), Some(2));
    // Idle pool: ties rotate over every endpoint.
    let mut idle = Sim::new(Algorithm::LeastConnections, &[1, 1, 2], Options::default());
    let mut seen = [false; 3];
    for _ in 0..3 {
        seen[idle.pick(T0).expect("an endpoint")] = true;
    }
    assert_eq!(seen, [true; 3]);
}

#[test]
fn p2c_with_two_endpoints_compares_both() {
    for alg in [Algorithm::LeastRequest, Algorithm::LeastResponseTime] {
        let mut sim = Sim::new(alg, &[1, 1], Options::default());
        let _busy = sim.set.acquire(0).expect("no limit");
        for _ in 0..100 {
            assert_eq!(sim.pick(T0), Some(1), "{alg:?}");
        }
        // A single endpoint is returned as is, busy or not.
        let mut single = Sim::new(alg, &[1], Options::default());
        let _busy = single.set.acquire(0).expect("no limit");
        assert_eq!(single.pick(T0), Some(0), "{alg:?}");
    }
    // Weight counts: 2 in flight on weight 4 costs (2 + 1) / 4 < (0 + 1) / 1.
    let mut sim = Sim::new(Algorithm::LeastRequest, &[4, 1], Options::default());
    let _busy = [sim.set.acquire(0), sim.set.acquire(0)];
    for _ in 0..100 {
        assert_eq!(sim.pick(T0), Some(0));
    }
}

/// A request in flight in the virtual-time simulation, ordered by completion (earliest
/// first in a max-heap).
struct Pending {
    done: Nanos,
    start: Nanos,
    guard: InFlight,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.done == other.done
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.done.cmp(&self.done)
    }
}

/// Share of the requests sent to the slow endpoint of three (1 ms, 1 ms, 10 ms), with a
/// request every 100 us and latencies fed back on completion.
fn slow_endpoint_share(alg: Algorithm) -> f64 {
    const REQUESTS: u64 = 20_000;
    const INTERVAL: Nanos = 100_000;
    let latency = [MS, MS, 10 * MS];
    let mut sim = Sim::new(alg, &[1, 1, 1], Options::default());
    let mut pending = BinaryHeap::new();
    let mut counts = [0u64; 3];
    for k in 0..REQUESTS {
        let now = T0 + k * INTERVAL;
        while pending.peek().is_some_and(|p: &Pending| p.done <= now) {
            if let Some(p) = pending.pop() {
                let rtt = Duration::from_nanos(p.done - p.start);
                p.guard.live().observe_latency(rtt, p.done);
            }
        }
        let i = sim.pick(now).expect("an endpoint");
        counts[i] += 1;
        pending.push(Pending {
            done: now + latency[i],
            start: now,
            guard: sim.set.acquire(i).expect("no limit"),
        });
    }
    let share = counts[2] as f64 / REQUESTS as f64;
    println!(
        "balance: {:<28} slow endpoint (10x latency) share {:.2}% ({counts:?})",
        alg.name(),
        100.0 * share
    );
    share
}

#[test]
fn p2c_moves_load_away_from_a_slow_endpoint() {
    let by_load = slow_endpoint_share(Algorithm::LeastRequest);
    let by_latency = slow_endpoint_share(Algorithm::LeastResponseTime);
    assert!(by_load < 0.15, "least_request: {by_load}");
    assert!(by_latency < 0.15, "least_response_time: {by_latency}");
    // Latency-aware does better than load alone.
    assert!(by_latency < by_load);
}

#[test]
fn least_response_time_avoids_penalized_endpoint() {
    let mut sim = Sim::new(Algorithm::LeastResponseTime, &[1, 1, 1], Options::default());
    for (i, ms) in [(0, 1), (1, 5), (2, 5)] {
        sim.set.backends[i]
            .live
            .observe_latency(Duration::from_millis(ms), T0);
    }
    sim.set.backends[0].live.penalize(T0 + 10 * SECOND);
    let mut counts = [0u64; 3];
    for _ in 0..10_000 {
        counts[sim.pick(T0 + SECOND).expect("an endpoint")] += 1;
    }
    assert_eq!(counts[0], 0, "{counts:?}");
    // Penalty over: the fastest endpoint wins again whenever drawn.
    let mut counts = [0u64; 3];
    for _ in 0..10_000 {
        counts[sim.pick(T0 + 11 * SECOND).expect("an endpoint")] += 1;
    }
    assert!(counts[0] > 6_000, "{counts:?}");
    // Only penalised endpoints left: still answered.
    for i in 1..3 {
        sim.set.backends[i].live.penalize(T0 + 20 * SECOND);
    }
    sim.set.backends[0].live.penalize(T0 + 20 * SECOND);
    assert!(sim.pick(T0 + 12 * SECOND).is_some());
}

#[test]
fn least_response_time_does_not_starve_unmeasured_endpoint() {
    let mut sim = Sim::new(Algorithm::LeastResponseTime, &[1, 1, 1], Options::default());
    for i in 0..2 {
        sim.set.backends[i]
            .live
            .observe_latency(Duration::from_millis(1), T0);
    }
    let picks = (0..3_000).filter(|_| sim.pick(T0) == Some(2)).count();
    // Assumed as fast as its competitor: a third of an idle pool's picks.
    assert!((800..1_200).contains(&picks), "{picks}");
}

#[test]
fn panic_mode_spreads_over_all_endpoints() {
    for alg in Algorithm::ALL {
        // 1 of 3 down: no panic, the down endpoint gets nothing. (Equal weights: in an idle
        // pool, least request always prefers the heavier of its two candidates.)
        let mut sim = Sim::new(alg, &[1, 1, 1], Options::default());
        sim.set_flag(0, DOWN, true, T0);
        assert!(!sim.set.live.panicking());
        let counts = count_picks(&mut sim, 3_000);
        assert_eq!(counts[0], 0, "{alg:?}: {counts:?}");

        // 2 of 3 down (threshold 0.5): panic, every endpoint gets traffic.
        sim.set.backends[1].live.set_flag(EJECTED, true, T0);
        assert_eq!(sim.set.recount(), Some((1, 3, true)));
        let counts = count_picks(&mut sim, 3_000);
        assert!(counts.iter().all(|&c| c > 0), "{alg:?}: {counts:?}");
    }
}

#[test]
fn exclusions_limits_and_nothing_eligible() {
    for alg in Algorithm::ALL {
        let opts = Options {
            panic_threshold: 0.0,
            max_in_flight_per_endpoint: 2,
            ..Options::default()
        };
        let mut sim = Sim::new(alg, &[1, 2, 3, 4], opts);
        // A retry never gets an endpoint it already tried.
        for id in 0..200 {
            let first = sim.pick_for(id, T0, &[]).expect("an endpoint");
            let retry = sim.pick_for(id, T0, &[first]).expect("another endpoint");
            assert_ne!(first, retry, "{alg:?}");
            let third = sim.pick_for(id, T0, &[first, retry]).expect("a third");
            assert!(third != first && third != retry, "{alg:?}");
        }
        assert_eq!(sim.pick_for(1, T0, &[0, 1, 2, 3]), None, "{alg:?}");

        // Endpoints at their in-flight limit are skipped.
        let full: Vec<InFlight> = (0..2)
            .flat_map(|_| [sim.set.acquire(3), sim.set.acquire(1)])
            .map(|g| g.expect("below the limit"))
            .collect();
        assert!(sim.set.full(3) && sim.set.full(1));
        for id in 0..200 {
            let i = sim.pick_for(id, T0, &[]).expect("an endpoint");
            assert!(i == 0 || i == 2, "{alg:?} picked full {i}");
        }
        drop(full);

        // Nothing eligible (and no panic mode): None.
        for i in 0..4 {
            sim.set_flag(i, DOWN, true, T0);
        }
        assert!(!sim.set.live.panicking());
        for id in 0..20 {
            assert_eq!(sim.pick_for(id, T0, &[]), None, "{alg:?}");
        }
        // One back: it gets everything.
        sim.set_flag(2, DOWN, false, T0);
        for id in 0..50 {
            assert_eq!(sim.pick_for(id, T0, &[]), Some(2), "{alg:?}");
        }
    }
}

#[test]
fn empty_pool_picks_nothing() {
    for alg in Algorithm::ALL {
        let mut sim = Sim::new(alg, &[], Options::default());
        assert_eq!(sim.pick_for(1, T0, &[]), None, "{alg:?}");
    }
}

/// Random churn of flags, limits and exclusions: a pick is always eligible (checked in
/// [`Sim::pick_with`]) and `None` only when nothing is.
#[test]
fn picks_are_always_eligible_under_churn() {
    let weights = [3, 1, 4, 1, 5, 9, 2, 6];
    for alg in Algorithm::ALL {
        let opts = Options {
            panic_threshold: 0.3,
            max_in_flight_per_endpoint: 3,
            slow_start: Some(Duration::from_secs(5)),
            bounded_load: Some(1.25),
            ..Options::default()
        };
        let mut sim = Sim::new(alg, &weights, opts);
        let mut chaos = fastrand::Rng::with_seed(99);
        let mut held: Vec<InFlight> = Vec::new();
        for step in 0..3_000u64 {
            let now = T0 + step * MS;
            if chaos.u8(..) < 40 {
                let i = chaos.usize(0..weights.len());
                let flag = if chaos.bool() { DOWN } else { EJECTED };
                sim.set_flag(i, flag, chaos.bool(), now);
            }
            let exclude: Vec<usize> = (0..chaos.usize(0..4))
                .map(|_| chaos.usize(0..weights.len()))
                .collect();
            match sim.pick_for(chaos.u64(..), now, &exclude) {
                Some(i) => {
                    if let Ok(g) = sim.set.acquire(i) {
                        held.push(g);
                    }
                }
                None => {
                    let cx = Ctx {
                        key: None,
                        client: None,
                        now,
                        rng: &mut chaos,
                        exclude: &exclude,
                    };
                    assert!(
                        (0..weights.len()).all(|i| !sim.set.eligible(i, &cx)),
                        "{alg:?} found nothing with endpoints eligible"
                    );
                }
            }
            if !held.is_empty() && (held.len() > 10 || chaos.u8(..) < 100) {
                held.swap_remove(chaos.usize(0..held.len()));
            }
        }
    }
}

/// Addresses the keys `0..keys` map to.
fn key_owners(sim: &mut Sim, keys: u64) -> Vec<Arc<str>> {
    (0..keys)
        .map(|k| {
            let id = mix64(k);
            let i = sim.pick_for(id, T0, &[]).expect("an endpoint");
            sim.address(i)
        })
        .collect()
}

#[test]
fn consistent_hashing_moves_few_keys_when_an_endpoint_is_removed() {
    const KEYS: u64 = 10_000;
    for alg in [Algorithm::RingHash, Algorithm::Maglev] {
        for n in [5usize, 10, 30] {
            let weights = vec![1; n];
            let removed = n / 2;
            let mut before = Sim::new(alg, &weights, Options::default());
            let owners_before = key_owners(&mut before, KEYS);
            let mut rest = backends(&weights);
            let gone = rest.remove(removed).address;
            let mut after = Sim::with_backends(alg, rest, Options::default());
            let owners_after = key_owners(&mut after, KEYS);

            let moved = owners_before
                .iter()
                .zip(&owners_after)
                .filter(|(b, a)| b != a)
                .count();
            let bystanders_moved = owners_before
                .iter()
                .zip(&owners_after)
                .filter(|(b, a)| b != a && **b != gone)
                .count();
            let moved_share = moved as f64 / KEYS as f64;
            let bystander_share = bystanders_moved as f64 / KEYS as f64;
            println!(
                "balance: {:<10} N={n:<3} remove 1: {:.2}% of keys moved (ideal {:.2}%), \
                 {:.2}% from other endpoints",
                alg.name(),
                100.0 * moved_share,
                100.0 / n as f64,
                100.0 * bystander_share,
            );
            assert!(moved_share <= 2.0 / n as f64 + 0.01, "{alg:?} N={n}");
            match alg {
                Algorithm::RingHash => assert_eq!(bystanders_moved, 0),
                _ => assert!(bystander_share <= 0.01, "{alg:?} N={n}: {bystander_share}"),
            }
        }
    }
}

#[test]
fn ineligible_endpoint_moves_only_its_keys() {
    const KEYS: u64 = 10_000;
    for alg in [Algorithm::RingHash, Algorithm::Maglev, Algorithm::IpHash] {
        let mut sim = Sim::new(alg, &WEIGHTS, Options::default());
        let before: Vec<usize> = (0..KEYS)
            .map(|k| sim.pick_for(mix64(k), T0, &[]).expect("an endpoint"))
            .collect();
        sim.set_flag(3, DOWN, true, T0);
        let mut moved = 0;
        for (k, &was) in (0..KEYS).zip(&before) {
            let now = sim.pick_for(mix64(k), T0, &[]).expect("an endpoint");
            if was == 3 {
                assert_ne!(now, 3, "{alg:?}");
                moved += 1;
            } else {
                assert_eq!(now, was, "{alg:?}: key {k} moved");
            }
        }
        assert!(moved > 0);
        // Back up: every key returns.
        sim.set_flag(3, DOWN, false, T0);
        for (k, &was) in (0..KEYS).zip(&before) {
            assert_eq!(sim.pick_for(mix64(k), T0, &[]), Some(was), "{alg:?}");
        }
    }
}

#[test]
fn bounded_load_spreads_a_hot_key() {
    let factor = 1.25;
    let n = 10;
    let mut sim = Sim::new(Algorithm::RingHash, &vec![1; n], opts_bounded(factor));
    let mut held = Vec::new();
    let mut used = vec![false; n];
    for total in 1..=1_000u32 {
        let i = sim
            .pick_with(T0, Some(b"hot"), None, &[])
            .expect("an endpoint");
        used[i] = true;
        held.push(sim.set.acquire(i).expect("no limit"));
        let max = (0..n)
            .map(|i| sim.set.backends[i].live.in_flight())
            .max()
            .unwrap_or(0);
        let bound = (factor * f64::from(total) / n as f64).ceil() as u32 + 1;
        assert!(max <= bound, "{max} > {bound} after {total}");
    }
    // The key fills the endpoints clockwise from its point to capacity: about n / c of them.
    let spread = used.iter().filter(|&&u| u).count();
    assert!(spread >= (n as f64 / factor) as usize, "{used:?}");

    // Without the bound the key sticks to one endpoint.
    let mut sim = Sim::new(Algorithm::RingHash, &vec![1; n], Options::default());
    let first = sim.pick_with(T0, Some(b"hot"), None, &[]);
    let _held: Vec<InFlight> = (0..100)
        .map(|_| {
            let i = sim.pick_with(T0, Some(b"hot"), None, &[]);
            assert_eq!(i, first);
            sim.set.acquire(first.unwrap_or(0)).expect("no limit")
        })
        .collect();

    // Light load: keys stay where the plain ring puts them.
    let mut bounded = Sim::new(Algorithm::RingHash, &WEIGHTS, opts_bounded(factor));
    let mut plain = Sim::new(Algorithm::RingHash, &WEIGHTS, Options::default());
    for k in 0..1_000 {
        assert_eq!(bounded.pick_for(k, T0, &[]), plain.pick_for(k, T0, &[]));
    }
}

fn opts_bounded(factor: f64) -> Options {
    Options {
        bounded_load: Some(factor),
        ..Options::default()
    }
}

/// Share of endpoint 0 (weight 1 of four of weight 1) at `now`, over 20k picks.
fn warming_share(sim: &mut Sim, now: Nanos) -> f64 {
    let picks = 20_000;
    let hits = (0..picks).filter(|_| sim.pick(now) == Some(0)).count();
    hits as f64 / picks as f64
}

#[test]
fn slow_start_ramps_a_returning_endpoint() {
    for alg in [
        Algorithm::WeightedRoundRobin,
        Algorithm::Random,
        Algorithm::RoundRobin,
    ] {
        let opts = Options {
            slow_start: Some(Duration::from_secs(10)),
            ..Options::default()
        };
        let mut sim = Sim::new(alg, &[1, 1, 1, 1], opts);
        sim.set_flag(0, DOWN, true, T0);
        sim.set_flag(0, DOWN, false, T0 + 1);
        let start = warming_share(&mut sim, T0 + 1);
        let middle = warming_share(&mut sim, T0 + 1 + 5 * SECOND);
        let end = warming_share(&mut sim, T0 + 1 + 11 * SECOND);
        println!(
            "balance: {:<28} slow start share of a returning endpoint (full 25%): \
             start {:.1}%, half-way {:.1}%, after {:.1}%",
            alg.name(),
            100.0 * start,
            100.0 * middle,
            100.0 * end
        );
        // At 10% of its weight: 0.1 / 3.1 = 3.2% of the picks instead of 25%.
        assert!((0.02..0.045).contains(&start), "{alg:?}: {start}");
        // At 50%: 0.5 / 3.5 = 14.3% (round robin: rejection gives 25% x 0.5 + ...).
        assert!((0.10..0.20).contains(&middle), "{alg:?}: {middle}");
        assert!((0.24..0.26).contains(&end), "{alg:?}: {end}");
    }
}

#[test]
fn maglev_table_follows_weights() {
    let set = Set::new(
        backends(&[1, 2, 3, 4]),
        Arc::new(PoolLive::default()),
        Options {
            maglev_table_size: 1000,
            ..Options::default()
        },
    );
    let table = maglev::Maglev::new(&set);
    let counts = table.slot_counts();
    // 1000 is rounded up to the prime 1009.
    assert_eq!(counts.iter().sum::<usize>(), 1009);
    for (i, &c) in counts.iter().enumerate() {
        let want = 1009.0 * (i + 1) as f64 / 10.0;
        assert!((c as f64 - want).abs() <= 2.0, "{counts:?}");
    }
}

#[test]
fn ring_is_sized_by_weight_and_capped() {
    let set = Set::new(
        backends(&[1, 2, 3]),
        Arc::new(PoolLive::default()),
        Options::default(),
    );
    assert_eq!(ring_hash::RingHash::new(&set).points(), 6 * 160);
    let (hashes, total) = ring_hash::point_counts(&[u32::MAX, 1], 160);
    assert!(total <= ring_hash::MAX_POINTS, "{hashes:?}");
    assert_eq!(hashes[1], 1, "every endpoint keeps a point");
}

#[test]
fn duplicate_addresses_share_keys() {
    let mut twins = backends(&[1, 1]);
    twins[1].address = twins[0].address.clone();
    for alg in [Algorithm::RingHash, Algorithm::Maglev] {
        let mut sim = Sim::with_backends(alg, twins.clone(), Options::default());
        let counts = count_picks(&mut sim, 10_000);
        assert!(counts.iter().all(|&c| c > 3_000), "{alg:?}: {counts:?}");
    }
}
