//! Picks the endpoint itself, by latency and load, from the live state the host reports.
//!
//! For every request the policy reads `balancer::endpoints(pool)` and, among the healthy
//! endpoints, forwards to the one with the lowest score
//!
//! ```text
//! score = (ewma_latency_us + latency_floor_us) * (in_flight + 1) / max(weight, weight_floor)
//! ```
//!
//! Ties (all endpoints idle and unmeasured, as at startup) go to the endpoint with the highest
//! FNV-1a 64 of `client IP + "\n" + addr`: a guest has no random source, and this spreads
//! clients over tied endpoints while keeping each client's choice stable. With no healthy
//! endpoint the request goes to the pool without an endpoint, so the host decides (in panic
//! mode it sends traffic to unhealthy endpoints rather than none).
//!
//! Settings: `pool` (default `app`), `latency_floor_us` (default 1000), `weight_floor`
//! (default 1). See README.md.

use sluice_sdk::balancer::Endpoint;
use sluice_sdk::prelude::*;

#[sluice_sdk::policy]
fn decide(req: &Request) -> Decision {
    let pool = config::get_or("pool", "app");
    let endpoints = balancer::endpoints(&pool);
    match choose(&endpoints, Tuning::from_settings(), req.client_ip()) {
        Some(best) => Decision::forward(pool).endpoint(&best.addr),
        None => Decision::forward(pool),
    }
}

/// The two knobs of the score, from the policy's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tuning {
    /// Added to every endpoint's latency: an unmeasured endpoint (EWMA 0) still costs
    /// something per request in flight, and differences of a few microseconds between fast
    /// endpoints do not outweigh their load.
    latency_floor_us: u32,
    /// Weights below it count as it (at least 1).
    weight_floor: u32,
}

impl Tuning {
    const DEFAULT: Tuning = Tuning {
        latency_floor_us: 1000,
        weight_floor: 1,
    };

    /// Reads `latency_floor_us` and `weight_floor`; an unparsable value panics (the host logs
    /// the message and applies `fail`).
    fn from_settings() -> Tuning {
        let get = |key: &str, default: u32| -> u32 {
            config::get_parsed(key)
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or(default)
        };
        Tuning {
            latency_floor_us: get("latency_floor_us", Tuning::DEFAULT.latency_floor_us),
            weight_floor: get("weight_floor", Tuning::DEFAULT.weight_floor).max(1),
        }
    }
}

/// The healthy endpoint with the lowest score, ties broken by [`tie_break`]; `None` when no
/// endpoint is healthy.
fn choose<'e>(endpoints: &'e [Endpoint], tuning: Tuning, client_ip: &str) -> Option<&'e Endpoint> {
    endpoints.iter().filter(|e| e.healthy).min_by(|a, b| {
        // Compare the fractions a.cost / a.weight and b.cost / b.weight exactly, without
        // floating point: a.cost * b.weight against b.cost * a.weight. In u128 nothing
        // overflows (cost < 2^66, weight < 2^32).
        let (a_cost, a_weight) = score(a, tuning);
        let (b_cost, b_weight) = score(b, tuning);
        (a_cost * b_weight)
            .cmp(&(b_cost * a_weight))
            // Higher tie-break hash first, so reversed.
            .then_with(|| tie_break(client_ip, &b.addr).cmp(&tie_break(client_ip, &a.addr)))
    })
}

/// The score as a fraction: `(ewma + latency floor) * (in_flight + 1)` over the weight.
fn score(e: &Endpoint, tuning: Tuning) -> (u128, u128) {
    let latency = u128::from(e.ewma_latency_us) + u128::from(tuning.latency_floor_us);
    let load = u128::from(e.in_flight) + 1;
    let weight = u128::from(e.weight.max(tuning.weight_floor));
    (latency * load, weight)
}

/// Rendezvous-style tie-break: each client ranks the endpoints in its own stable order.
fn tie_break(client_ip: &str, addr: &str) -> u64 {
    let mut seed = Vec::with_capacity(client_ip.len() + 1 + addr.len());
    seed.extend_from_slice(client_ip.as_bytes());
    seed.push(b'\n');
    seed.extend_from_slice(addr.as_bytes());
    fnv1a_64(&seed)
}

/// 64-bit FNV-1a (Fowler, Noll, Vo; <http://www.isthe.com/chongo/tech/comp/fnv/>,
/// draft-eastlake-fnv): small and stable across platforms and releases.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(addr: &str, weight: u32, healthy: bool, in_flight: u32, ewma: u32) -> Endpoint {
        Endpoint {
            addr: addr.into(),
            weight,
            healthy,
            in_flight,
            ewma_latency_us: ewma,
        }
    }

    fn pick(endpoints: &[Endpoint], tuning: Tuning) -> Option<&str> {
        choose(endpoints, tuning, "192.0.2.7").map(|e| e.addr.as_str())
    }

    #[test]
    fn fnv1a_64_reference_values() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn lowest_latency_times_load_wins() {
        let t = Tuning::DEFAULT;
        // a: (9000 + 1000) * 1 = 10000; b: (1000 + 1000) * 3 = 6000; c: (4000 + 1000) * 1 = 5000.
        let eps = [
            ep("a:1", 1, true, 0, 9000),
            ep("b:1", 1, true, 2, 1000),
            ep("c:1", 1, true, 0, 4000),
        ];
        assert_eq!(pick(&eps, t), Some("c:1"));
        // c gets busy: (4000 + 1000) * 3 = 15000; now b wins.
        let eps = [eps[0].clone(), eps[1].clone(), ep("c:1", 1, true, 2, 4000)];
        assert_eq!(pick(&eps, t), Some("b:1"));
    }

    #[test]
    fn weight_divides_the_score_and_the_floor_raises_small_weights() {
        let t = Tuning::DEFAULT;
        // a: 10000 / 1; b: 20000 / 4 = 5000.
        let eps = [ep("a:1", 1, true, 0, 9000), ep("b:1", 4, true, 1, 9000)];
        assert_eq!(pick(&eps, t), Some("b:1"));
        // With weight_floor 4 both weigh 4: a = 2500, b = 5000.
        let floored = Tuning {
            weight_floor: 4,
            ..t
        };
        assert_eq!(pick(&eps, floored), Some("a:1"));
    }

    #[test]
    fn the_latency_floor_makes_load_count_between_fast_endpoints() {
        // Without a floor the unmeasured endpoint costs 0 whatever its load.
        let eps = [ep("new:1", 1, true, 50, 0), ep("old:1", 1, true, 0, 200)];
        let no_floor = Tuning {
            latency_floor_us: 0,
            ..Tuning::DEFAULT
        };
        assert_eq!(pick(&eps, no_floor), Some("new:1"));
        // With 1 ms: new = 1000 * 51, old = 1200 * 1.
        assert_eq!(pick(&eps, Tuning::DEFAULT), Some("old:1"));
    }

    #[test]
    fn unhealthy_endpoints_are_skipped_and_none_healthy_gives_none() {
        let eps = [ep("a:1", 1, false, 0, 0), ep("b:1", 1, true, 9, 90_000)];
        assert_eq!(pick(&eps, Tuning::DEFAULT), Some("b:1"));
        let down = [ep("a:1", 1, false, 0, 0)];
        assert_eq!(pick(&down, Tuning::DEFAULT), None);
        assert_eq!(pick(&[], Tuning::DEFAULT), None);
    }

    #[test]
    fn ties_are_stable_per_client_and_spread_over_clients() {
        let eps: Vec<Endpoint> = (1..=4)
            .map(|i| ep(&format!("10.0.0.{i}:80"), 1, true, 0, 0))
            .collect();
        let first = choose(&eps, Tuning::DEFAULT, "198.51.100.1").unwrap();
        for _ in 0..3 {
            assert_eq!(
                choose(&eps, Tuning::DEFAULT, "198.51.100.1").unwrap(),
                first
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..64 {
            let client = format!("198.51.100.{i}");
            seen.insert(choose(&eps, Tuning::DEFAULT, &client).unwrap().addr.clone());
        }
        assert_eq!(
            seen.len(),
            4,
            "64 clients should reach all 4 endpoints: {seen:?}"
        );
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let eps = [
            ep("a:1", 1, true, u32::MAX, u32::MAX),
            ep("b:1", 10_000, true, u32::MAX, u32::MAX),
        ];
        let t = Tuning {
            latency_floor_us: u32::MAX,
            weight_floor: 1,
        };
        assert_eq!(pick(&eps, t), Some("b:1"));
    }
}
