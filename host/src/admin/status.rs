//! The status page: `GET /` serves one self-contained HTML page (`status.html`, compiled in:
//! no CDN, no build step) whose script polls `GET /status` and draws the last minutes from a
//! bounded ring of samples this module keeps in the process.
//!
//! The page itself carries no data, so it is served without the admin token; its script asks
//! for the token when `/status` answers 401 and sends it as a bearer token (kept in the tab's
//! `sessionStorage` only).

use super::AdminState;
use crate::metrics::CLASSES;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The page.
pub const PAGE: &str = include_str!("status.html");

/// How often the ring takes a sample, and how many it keeps: 10 minutes.
pub const EVERY: Duration = Duration::from_secs(2);
const KEEP: usize = 300;

/// Totals at one moment; the page draws rates from the differences.
#[derive(Debug, Clone, serde::Serialize)]
struct Sample {
    /// Milliseconds since the epoch.
    at: u64,
    requests: u64,
    /// Responses with a 5xx status.
    errors: u64,
    /// Requests sent upstream, per pool (by name, in the pools' order).
    pools: Vec<(String, u64)>,
    cache_hits: u64,
    cache_misses: u64,
}

/// The last [`KEEP`] samples.
#[derive(Default)]
pub struct History(Mutex<VecDeque<Sample>>);

impl History {
    /// Takes a sample of `state` now.
    pub fn sample(&self, state: &AdminState) {
        let (requests, errors) = totals(state);
        let pools = state
            .pools
            .current()
            .iter()
            .map(|p| {
                let sent = (0..p.endpoints.len()).map(|i| p.live(i).requests()).sum();
                (p.name.to_string(), sent)
            })
            .collect();
        let stats = state.cache.as_ref().map(|c| c.stats_json());
        let cache = |k: &str| stats.as_ref().map_or(0, |s| s[k].as_u64().unwrap_or(0));
        let s = Sample {
            at: millis(SystemTime::now()),
            requests,
            errors,
            pools,
            cache_hits: cache("hits"),
            cache_misses: cache("misses"),
        };
        let mut ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == KEEP {
            ring.pop_front();
        }
        ring.push_back(s);
    }

    fn snapshot(&self) -> Vec<Sample> {
        let ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().cloned().collect()
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Requests and 5xx responses over every listener.
fn totals(state: &AdminState) -> (u64, u64) {
    let (mut all, mut errors) = (0, 0);
    for l in state.listeners.load().iter() {
        let by_class = l.by_class();
        all += by_class.iter().sum::<u64>();
        errors += by_class[4];
    }
    (all, errors)
}

/// The quantile `q` of a histogram's per-bucket counts, as the upper bound of the bucket it
/// falls in (in milliseconds); `None` without observations or when it is in the +Inf bucket.
fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().map(|b| b.1).sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (bound, n) in buckets {
        seen += n;
        if seen >= rank {
            return bound.is_finite().then_some(bound * 1000.0);
        }
    }
    None
}

/// `GET /status`: what the page shows.
pub fn json(state: &AdminState, history: &History) -> serde_json::Value {
    use serde_json::json;
    let listeners: Vec<_> = state
        .listeners
        .load()
        .iter()
        .map(|l| {
            let by_class = l.by_class();
            let (accepted, closed, _, _) = l.connections();
            let classes: serde_json::Map<_, _> = CLASSES
                .iter()
                .zip(by_class)
                .map(|(c, n)| (c.to_string(), json!(n)))
                .collect();
            json!({
                "name": &*l.name,
                "requests": by_class.iter().sum::<u64>(),
                "by_class": classes,
                "connections_open": accepted.saturating_sub(closed),
                "connections_accepted": accepted,
            })
        })
        .collect();
    let current = state.pools.current();
    let mut pools = super::pools_json(&current);
    if let Some(list) = pools["pools"].as_array_mut() {
        for (p, j) in current.iter().zip(list) {
            let (buckets, _) = p.stats.duration.snapshot();
            j["p50_ms"] = json!(quantile(&buckets, 0.5));
            j["p99_ms"] = json!(quantile(&buckets, 0.99));
            j["requests"] = json!(buckets.iter().map(|b| b.1).sum::<u64>());
        }
    }
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.started.elapsed().as_secs(),
        "token_required": state.token.is_some(),
        "sample_every_ms": EVERY.as_millis() as u64,
        "listeners": listeners,
        "pools": pools["pools"],
        "policy": state.policy.status(),
        "cache": state.cache.as_ref().map(|c| c.stats_json()),
        "history": history.snapshot(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        let b = [(0.001, 50), (0.002, 49), (0.004, 1), (f64::INFINITY, 0)];
        assert_eq!(super::quantile(&b, 0.5), Some(1.0));
        assert_eq!(super::quantile(&b, 0.99), Some(2.0));
        assert_eq!(super::quantile(&b, 1.0), Some(4.0));
        assert_eq!(super::quantile(&[(0.001, 0)], 0.5), None);
        assert_eq!(
            super::quantile(&[(0.001, 1), (f64::INFINITY, 9)], 0.5),
            None
        );
    }
}
