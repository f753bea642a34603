//! Load balancing: the algorithms that choose an endpoint of a pool, and the live state they
//! read (health flags, in-flight requests, peak-EWMA latency, slow start).
//!
//! This module does no I/O and knows nothing of connections or configuration files, so the
//! algorithms can be simulated deterministically (`tests` below and the criterion bench): time
//! comes in as [`Nanos`] and randomness as a seeded [`fastrand::Rng`] in [`Ctx`].
//!
//! - [`Live`]: one endpoint's live state. Shared (`Arc`) by every generation of the pool table
//!   that keeps the endpoint, so counters, EWMA and in-flight survive config reloads and policy
//!   swaps.
//! - [`Set`]: a pool's endpoints as the algorithms see them, with eligibility (health, panic
//!   mode, circuit-breaker limit, per-request exclusions) and effective weights (slow start).
//! - [`Balance`]: one algorithm, one file each; [`Balancers`] builds each lazily per pool.
//!
//! Eligibility: an endpoint is eligible when it is neither down (active health checks) nor
//! ejected (passive outlier detection), unless the pool is in panic mode (fewer than
//! `panic_threshold` of its endpoints healthy: then every endpoint is eligible, as in Envoy);
//! and never when it is at its in-flight limit or excluded for this pick (a retry).

mod common;
mod ip_hash;
mod least_conn;
mod least_request;
mod least_time;
mod maglev;
mod random;
mod ring_hash;
mod round_robin;
mod smooth_wrr;
#[cfg(test)]
mod tests;

pub use smooth_wrr::smooth_wrr_sequence;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Monotonic nanoseconds since the first call to [`now`] in this process; never 0, so 0 can
/// mean "unset" in atomics.
pub type Nanos = u64;

/// The current [`Nanos`].
pub fn now() -> Nanos {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

/// The algorithms a pool can use, and a guest can ask for per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Each eligible endpoint in turn, ignoring weights.
    RoundRobin,
    /// nginx's smooth weighted round robin (weights 5,1,1 give a a b a c a a); earliest deadline
    /// first above 64 endpoints (same proportions, O(log n)).
    WeightedRoundRobin,
    /// Fewest in-flight requests relative to weight (a full scan, like nginx `least_conn`; two
    /// random choices above 64 endpoints).
    LeastConnections,
    /// Power of two choices: two random eligible endpoints, the one with fewer in-flight
    /// requests relative to weight wins.
    LeastRequest,
    /// Power of two choices on peak-EWMA latency x (in-flight + 1); endpoints that answered
    /// 429/503 with `Retry-After` lose until it expires.
    LeastResponseTime,
    /// Weighted random.
    Random,
    /// Hash of the client IP over the configured endpoints (nginx `ip_hash` style).
    IpHash,
    /// Ketama-style consistent hash ring, optionally with bounded load.
    RingHash,
    /// Maglev consistent hashing with a prime-sized lookup table.
    Maglev,
}

impl Algorithm {
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RoundRobin,
        Algorithm::WeightedRoundRobin,
        Algorithm::LeastConnections,
        Algorithm::LeastRequest,
        Algorithm::LeastResponseTime,
        Algorithm::Random,
        Algorithm::IpHash,
        Algorithm::RingHash,
        Algorithm::Maglev,
    ];

    /// The name used in configuration files and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::WeightedRoundRobin => "weighted_round_robin",
            Algorithm::LeastConnections => "least_connections",
            Algorithm::LeastRequest => "least_request",
            Algorithm::LeastResponseTime => "least_response_time",
            Algorithm::Random => "random",
            Algorithm::IpHash => "ip_hash",
            Algorithm::RingHash => "ring_hash",
            Algorithm::Maglev => "maglev",
        }
    }

    pub fn parse(name: &str) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether the algorithm chooses by a key (hash key or client IP) rather than by load.
    pub fn keyed(self) -> bool {
        matches!(
            self,
            Algorithm::IpHash | Algorithm::RingHash | Algorithm::Maglev
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// An endpoint's health as reported to guests and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Receives traffic.
    Healthy,
    /// Failing its active health checks.
    Unhealthy,
    /// Ejected by passive outlier detection (and not failing active checks).
    Ejected,
}

impl HealthState {
    pub fn name(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Ejected => "ejected",
        }
    }
}

/// Bit in [`Live`]'s flags: active health checks say the endpoint is down.
pub const DOWN: u8 = 1;
/// Bit in [`Live`]'s flags: passive outlier detection ejected the endpoint.
pub const EJECTED: u8 = 2;

/// Peak-EWMA decay time (linkerd's and Finagle's default).
const EWMA_TAU_NS: f64 = 10e9;

/// Peak-EWMA latency (Finagle's `PeakEwma`): a sample above the average replaces it at once,
/// lower samples pull it down exponentially with time constant [`EWMA_TAU_NS`].
#[derive(Debug, Default, Clone, Copy)]
struct PeakEwma {
    cost_ns: f64,
    /// When `cost_ns` was last updated; 0 = never measured.
    stamp: Nanos,
}

impl PeakEwma {
    fn decayed(&self, now: Nanos) -> f64 {
        let dt = now.saturating_sub(self.stamp) as f64;
        self.cost_ns * (-dt / EWMA_TAU_NS).exp()
    }
}

/// One endpoint's live state.
#[derive(Debug, Default)]
pub struct Live {
    /// Requests sent and not yet finished (response body done or abandoned).
    in_flight: AtomicU32,
    /// Requests ever started on this endpoint.
    requests: AtomicU64,
    /// [`DOWN`] | [`EJECTED`]; 0 = healthy.
    flags: AtomicU8,
    /// When the endpoint last became eligible again, for slow start; 0 = not warming up.
    warming_since: AtomicU64,
    /// Until when 429/503 + `Retry-After` penalises it for least-response-time.
    penalty_until: AtomicU64,
    ewma: Mutex<PeakEwma>,
}

impl Live {
    /// A new endpoint; `down` when active checks start it unhealthy.
    pub fn new(down: bool) -> Live {
        let live = Live::default();
        if down {
            live.flags.store(DOWN, Ordering::Relaxed);
        }
        live
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn flags(&self) -> u8 {
        self.flags.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> HealthState {
        let f = self.flags();
        if f & DOWN != 0 {
            HealthState::Unhealthy
        } else if f & EJECTED != 0 {
            HealthState::Ejected
        } else {
            HealthState::Healthy
        }
    }

    /// Sets or clears `flag`; returns whether the endpoint's eligibility (flags == 0) changed.
    /// An endpoint that becomes healthy starts its slow-start window at `now`.
    pub fn set_flag(&self, flag: u8, on: bool, now: Nanos) -> bool {
        let old = if on {
            self.flags.fetch_or(flag, Ordering::AcqRel)
        } else {
            self.flags.fetch_and(!flag, Ordering::AcqRel)
        };
        let new = if on { old | flag } else { old & !flag };
        let changed = (old == 0) != (new == 0);
        if changed && new == 0 {
            self.warming_since.store(now, Ordering::Relaxed);
        }
        changed
    }

    /// Records one response head's latency.
    pub fn observe_latency(&self, rtt: Duration, now: Nanos) {
        let rtt = rtt.as_nanos() as f64;
        let mut e = self.ewma.lock().unwrap_or_else(|p| p.into_inner());
        if e.stamp == 0 || rtt > e.cost_ns {
            e.cost_ns = rtt;
        } else {
            let w = (-(now.saturating_sub(e.stamp) as f64) / EWMA_TAU_NS).exp();
            e.cost_ns = e.cost_ns * w + rtt * (1.0 - w);
        }
        e.stamp = now;
    }

    /// Peak-EWMA latency in nanoseconds as of `now` (decaying while no response arrives), or
    /// `None` before the first response.
    pub fn ewma_ns(&self, now: Nanos) -> Option<f64> {
        let e = *self.ewma.lock().unwrap_or_else(|p| p.into_inner());
        (e.stamp != 0).then(|| e.decayed(now))
    }

    /// Penalises the endpoint for least-response-time until `until` (a 429/503 with
    /// `Retry-After`).
    pub fn penalize(&self, until: Nanos) {
        self.penalty_until.fetch_max(until, Ordering::Relaxed);
    }

    pub fn penalized(&self, now: Nanos) -> bool {
        self.penalty_until.load(Ordering::Relaxed) > now
    }
}

/// A pool's live state beyond its endpoints; survives config reloads that keep the pool.
#[derive(Debug, Default)]
pub struct PoolLive {
    /// Requests in flight to any endpoint of the pool.
    in_flight: AtomicU32,
    /// Retries in flight (for the retry budget).
    pub retries_in_flight: AtomicU32,
    /// Retry credit earned by answered requests, in thousandths of a retry (see
    /// `Pool::retry_permit`).
    pub retry_credit: AtomicU64,
    /// Whether the pool is in panic mode (too few healthy endpoints: all get traffic).
    panic: AtomicBool,
}

impl PoolLive {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn panicking(&self) -> bool {
        self.panic.load(Ordering::Relaxed)
    }
}

/// One endpoint as the algorithms see it.
#[derive(Debug, Clone)]
pub struct Backend {
    pub address: Arc<str>,
    /// Configured weight, >= 1.
    pub weight: u32,
    pub live: Arc<Live>,
}

/// Per-pool balancing options.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The pool's algorithm when the request names none.
    pub algorithm: Algorithm,
    /// Fraction (0..=1) of endpoints that must be healthy; below it every endpoint is eligible.
    pub panic_threshold: f64,
    /// Window over which an endpoint that comes back ramps from 10% to its full weight.
    pub slow_start: Option<Duration>,
    /// Ring hash: points on the ring per unit of weight.
    pub ring_points_per_weight: u32,
    /// Ring hash: no endpoint takes more than `factor x` the mean in-flight (+1) per endpoint.
    pub bounded_load: Option<f64>,
    /// Maglev lookup-table size; a prime much larger than the number of endpoints.
    pub maglev_table_size: u32,
    /// Circuit breaker: most requests in flight to one endpoint; 0 = unlimited.
    pub max_in_flight_per_endpoint: u32,
    /// Circuit breaker: most requests in flight to the pool; 0 = unlimited.
    pub max_in_flight: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            algorithm: Algorithm::WeightedRoundRobin,
            panic_threshold: 0.5,
            slow_start: None,
            ring_points_per_weight: 160,
            bounded_load: None,
            maglev_table_size: 65537,
            max_in_flight_per_endpoint: 0,
            max_in_flight: 0,
        }
    }
}

/// Inputs of one pick.
pub struct Ctx<'a> {
    /// The hash key for keyed algorithms (the guest's `hash-key`); the client IP's bytes
    /// are used when absent.
    pub key: Option<&'a [u8]>,
    pub client: Option<IpAddr>,
    pub now: Nanos,
    pub rng: &'a mut fastrand::Rng,
    /// Endpoint indices not to pick (already tried by this request).
    pub exclude: &'a [usize],
}

/// One load-balancing algorithm over a [`Set`].
pub trait Balance: Send + Sync {
    /// An eligible endpoint index, or `None` when no endpoint is eligible.
    fn pick(&self, set: &Set, cx: &mut Ctx<'_>) -> Option<usize>;
}

/// A pool's endpoints, live state and options: what every algorithm works on.
#[derive(Debug)]
pub struct Set {
    pub backends: Box<[Backend]>,
    pub live: Arc<PoolLive>,
    pub opts: Options,
}

/// Slow start begins at this fraction of the weight.
const SLOW_START_FLOOR: f64 = 0.1;

impl Set {
    pub fn new(backends: Vec<Backend>, live: Arc<PoolLive>, opts: Options) -> Set {
        let set = Set {
            backends: backends.into(),
            live,
            opts,
        };
        set.recount();
        set
    }

    pub fn len(&self) -> usize {
        self.backends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// Whether endpoint `i` may be picked now.
    #[inline]
    pub fn eligible(&self, i: usize, cx: &Ctx<'_>) -> bool {
        let b = &self.backends[i];
        (b.live.flags() == 0 || self.live.panicking()) && !self.full(i) && !cx.exclude.contains(&i)
    }

    /// Whether endpoint `i` is at its in-flight limit.
    #[inline]
    pub fn full(&self, i: usize) -> bool {
        let max = self.opts.max_in_flight_per_endpoint;
        max != 0 && self.backends[i].live.in_flight() >= max
    }

    /// The first eligible endpoint at or after `start`, wrapping around.
    pub fn scan_from(&self, start: usize, cx: &Ctx<'_>) -> Option<usize> {
        let n = self.len();
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.eligible(i, cx))
    }

    /// Endpoint `i`'s weight scaled by slow start: from 10% when it came back to 100% at the
    /// end of the window.
    pub fn effective_weight(&self, i: usize, now: Nanos) -> f64 {
        let b = &self.backends[i];
        f64::from(b.weight) * self.warmup(i, now)
    }

    /// Slow-start factor of endpoint `i` in (0, 1]; 1 outside a slow-start window.
    pub fn warmup(&self, i: usize, now: Nanos) -> f64 {
        let Some(window) = self.opts.slow_start else {
            return 1.0;
        };
        let live = &self.backends[i].live;
        let since = live.warming_since.load(Ordering::Relaxed);
        if since == 0 {
            return 1.0;
        }
        let f = now.saturating_sub(since) as f64 / window.as_nanos() as f64;
        if f >= 1.0 {
            live.warming_since.store(0, Ordering::Relaxed);
            return 1.0;
        }
        f.max(SLOW_START_FLOOR)
    }

    /// Recomputes panic mode from the endpoints' flags; call after any flag change. Returns
    /// `(healthy, total, panic)` when panic mode changed, for the caller to log.
    pub fn recount(&self) -> Option<(usize, usize, bool)> {
        let healthy = self.backends.iter().filter(|b| b.live.flags() == 0).count();
        let total = self.len();
        let panic = (healthy as f64) < self.opts.panic_threshold * total as f64;
        let was = self.live.panic.swap(panic, Ordering::Relaxed);
        (was != panic).then_some((healthy, total, panic))
    }

    /// Starts a request on endpoint `i` unless the endpoint or the pool is at its in-flight
    /// limit. The returned guard ends it when dropped.
    pub fn acquire(&self, i: usize) -> Result<InFlight, Full> {
        let live = self.backends[i].live.clone();
        let pool = self.live.clone();
        if !bounded_increment(&pool.in_flight, self.opts.max_in_flight) {
            return Err(Full::Pool(self.opts.max_in_flight));
        }
        if !bounded_increment(&live.in_flight, self.opts.max_in_flight_per_endpoint) {
            pool.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(Full::Endpoint(self.opts.max_in_flight_per_endpoint));
        }
        live.requests.fetch_add(1, Ordering::Relaxed);
        Ok(InFlight { live, pool })
    }
}

/// Adds one unless that would exceed `max` (0 = unlimited).
fn bounded_increment(counter: &AtomicU32, max: u32) -> bool {
    if max == 0 {
        counter.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// Which circuit-breaker limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Endpoint(u32),
    Pool(u32),
}

/// A request in flight on one endpoint; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight {
    live: Arc<Live>,
    pool: Arc<PoolLive>,
}

impl InFlight {
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.live.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.pool.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every algorithm for one pool, built with the pool ([`Balancers::new`]).
#[derive(Default)]
pub struct Balancers {
    built: [OnceLock<Box<dyn Balance>>; 9],
}

impl Balancers {
    /// Builds every algorithm now, when the pool is built (at start or reload): a policy may
    /// ask for any of them per request, and building a Maglev table or a large ring inside a
    /// request would charge milliseconds to that request (or to the policy's deadline, when
    /// the guest calls `balancer.pick`). Costs a Maglev table (128 KiB for the default size)
    /// and a ring per pool.
    pub fn new(set: &Set) -> Balancers {
        let b = Balancers::default();
        for alg in Algorithm::ALL {
            b.get(set, alg);
        }
        b
    }

    /// The algorithm a request uses: the one asked for, else the pool's; a request with a hash
    /// key and no keyed algorithm uses the ring hash.
    pub fn resolve(set: &Set, asked: Option<Algorithm>, has_key: bool) -> Algorithm {
        match asked {
            Some(a) => a,
            None if has_key && !set.opts.algorithm.keyed() => Algorithm::RingHash,
            None => set.opts.algorithm,
        }
    }

    pub fn pick(&self, set: &Set, asked: Option<Algorithm>, cx: &mut Ctx<'_>) -> Option<usize> {
        let alg = Self::resolve(set, asked, cx.key.is_some());
        self.get(set, alg).pick(set, cx)
    }

    fn get(&self, set: &Set, alg: Algorithm) -> &dyn Balance {
        &**self.built[alg.index()].get_or_init(|| build(set, alg))
    }
}

fn build(set: &Set, alg: Algorithm) -> Box<dyn Balance> {
    match alg {
        Algorithm::RoundRobin => Box::new(round_robin::RoundRobin::new(set)),
        Algorithm::WeightedRoundRobin => Box::new(smooth_wrr::SmoothWrr::new(set)),
        Algorithm::LeastConnections => Box::new(least_conn::LeastConnections::new(set)),
        Algorithm::LeastRequest => Box::new(least_request::LeastRequest::new(set)),
        Algorithm::LeastResponseTime => Box::new(least_time::LeastResponseTime::new(set)),
        Algorithm::Random => Box::new(random::WeightedRandom::new(set)),
        Algorithm::IpHash => Box::new(ip_hash::IpHash::new(set)),
        Algorithm::RingHash => Box::new(ring_hash::RingHash::new(set)),
        Algorithm::Maglev => Box::new(maglev::Maglev::new(set)),
    }
}

/// FNV-1a, 64-bit (Fowler, Noll, Vo). Stable across builds and platforms, unlike std's
/// hasher, so a key maps to the same endpoint after an upgrade or restart.
pub fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// FNV-1a's offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// splitmix64's finaliser (Steele, Lea, Flood 2014): spreads FNV's weak low bits.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 64-bit hash keyed algorithms use: FNV-1a then mix64, of the key or else the client IP.
pub fn key_hash(cx: &Ctx<'_>) -> u64 {
    let h = match (cx.key, cx.client) {
        (Some(k), _) => fnv1a(k, FNV_OFFSET),
        (None, Some(IpAddr::V4(ip))) => fnv1a(&ip.octets(), FNV_OFFSET),
        (None, Some(IpAddr::V6(ip))) => fnv1a(&ip.octets(), FNV_OFFSET),
        (None, None) => FNV_OFFSET,
    };
    mix64(h)
}
