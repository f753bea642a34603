//! What the request path counts for `GET /metrics`: plain atomics owned by the things they
//! describe (a listener, a pool, an endpoint's connections, a policy revision), read only when
//! the admin listener is scraped (`admin/metrics.rs` encodes them with `prometheus-client`).
//!
//! Why not `prometheus-client`'s own metric types on the request path: its `Histogram` takes
//! a mutex per observation and its `Family` a read lock per label lookup (0.26). Here each
//! update is one relaxed atomic add on a counter resolved when the listener or pool was
//! built; the per-request counters are sharded by worker thread (`worker::slot`) so two cores
//! never write the same cache line.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters split by worker slot; read as their sum.
#[derive(Debug)]
pub struct Sharded {
    /// `shards * width` counters, shard-major, each shard on its own cache lines.
    cells: Box<[AtomicU64]>,
    width: usize,
}

/// Bytes between two shards' first counters, at least: two cache lines, so adjacent-line
/// prefetching does not make them share either.
const SHARD_ALIGN: usize = 128 / std::mem::size_of::<AtomicU64>();

impl Sharded {
    /// `width` counters per shard, one shard per worker slot (`workers + 1`).
    pub fn new(width: usize, workers: usize) -> Sharded {
        let width = width.div_ceil(SHARD_ALIGN) * SHARD_ALIGN;
        let cells = (0..width * (workers + 1))
            .map(|_| AtomicU64::new(0))
            .collect();
        Sharded { cells, width }
    }

    /// Adds one to counter `i` of this thread's shard.
    #[inline]
    pub fn inc(&self, i: usize) {
        let at = crate::worker::slot() * self.width + i;
        // A slot past the end (a worker started after a reload grew the count) uses shard 0.
        let cell = self.cells.get(at).unwrap_or(&self.cells[i]);
        cell.fetch_add(1, Ordering::Relaxed);
    }

    /// Counter `i` summed over the shards.
    pub fn get(&self, i: usize) -> u64 {
        self.cells
            .iter()
            .skip(i)
            .step_by(self.width)
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// Upper bounds of [`Histogram`]'s buckets: 100 µs doubling to 105 s (21 buckets), then +Inf.
/// Exponential like Prometheus' native histograms, fixed so that a bucket is found with one
/// `leading_zeros` and no search.
pub const BUCKETS: usize = 22;
const FIRST_BOUND_NS: u64 = 100_000;

/// A histogram as read: `(upper bound in seconds, count in that bucket alone)` for each
/// bucket, the last bound +Inf; and the sum of the observations in seconds.
pub type Snapshot = (Vec<(f64, u64)>, f64);

/// A latency histogram of atomic buckets (cumulated only when scraped).
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // Bucket i holds (bound(i-1), bound(i)] with bound(i) = 100 µs * 2^i.
        let q = ns.saturating_sub(1) / FIRST_BOUND_NS;
        let i = ((u64::BITS - q.leading_zeros()) as usize).min(BUCKETS - 1);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let buckets = (0..BUCKETS)
            .map(|i| {
                let bound = if i == BUCKETS - 1 {
                    f64::INFINITY
                } else {
                    (FIRST_BOUND_NS << i) as f64 / 1e9
                };
                (bound, self.counts[i].load(Ordering::Relaxed))
            })
            .collect();
        (buckets, self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9)
    }
}

/// The HTTP versions requests are counted by.
pub const PROTOCOLS: [&str; 3] = ["HTTP/1.0", "HTTP/1.1", "HTTP/2"];
/// Methods counted by name; any other is `OTHER` (a bounded label, whatever clients send).
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER",
];
/// Status classes.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// TLS versions handshakes are counted by.
pub const TLS_VERSIONS: [&str; 2] = ["TLSv1.2", "TLSv1.3"];

const REQUEST_CELLS: usize = PROTOCOLS.len() * METHODS.len() * CLASSES.len();

/// Every listener's counters, in config order; a reload that adds or removes listeners
/// replaces the list.
pub type ListenerList = arc_swap::ArcSwap<Vec<std::sync::Arc<ListenerStats>>>;

/// One listener's counters. Lives as long as the process (a listener's figures are never
/// reset), shared by its sockets in every worker.
#[derive(Debug)]
pub struct ListenerStats {
    pub name: std::sync::Arc<str>,
    /// Requests by protocol, method and status class (see [`ListenerStats::request_index`]).
    requests: Sharded,
    /// 0 accepted, 1 closed, 2 TLS handshake failures, then one per TLS version.
    connections: Sharded,
}

impl ListenerStats {
    pub fn new(name: std::sync::Arc<str>, workers: usize) -> ListenerStats {
        ListenerStats {
            name,
            requests: Sharded::new(REQUEST_CELLS, workers),
            connections: Sharded::new(3 + TLS_VERSIONS.len(), workers),
        }
    }

    /// Counts a request's response head: its `version`, `method`, `status`.
    #[inline]
    pub fn request(&self, version: http::Version, method: &http::Method, status: u16) {
        let p = match version {
            http::Version::HTTP_10 | http::Version::HTTP_09 => 0,
            http::Version::HTTP_2 => 2,
            _ => 1,
        };
        let m = match *method {
            http::Method::GET => 0,
            http::Method::HEAD => 1,
            http::Method::POST => 2,
            http::Method::PUT => 3,
            http::Method::DELETE => 4,
            http::Method::PATCH => 5,
            http::Method::OPTIONS => 6,
            _ => 7,
        };
        let c = (status / 100).clamp(1, 5) as usize - 1;
        self.requests.inc(Self::request_index(p, m, c));
    }

    fn request_index(protocol: usize, method: usize, class: usize) -> usize {
        (protocol * METHODS.len() + method) * CLASSES.len() + class
    }

    /// Requests by status class, over every protocol and method.
    pub fn by_class(&self) -> [u64; CLASSES.len()] {
        let mut by = [0; CLASSES.len()];
        for p in 0..PROTOCOLS.len() {
            for m in 0..METHODS.len() {
                for (c, n) in by.iter_mut().enumerate() {
                    *n += self.requests(p, m, c);
                }
            }
        }
        by
    }

    /// Requests of one protocol, method and status class (indexes into the label lists).
    pub fn requests(&self, protocol: usize, method: usize, class: usize) -> u64 {
        self.requests
            .get(Self::request_index(protocol, method, class))
    }

    pub fn accepted(&self) {
        self.connections.inc(0);
    }

    pub fn closed(&self) {
        self.connections.inc(1);
    }

    pub fn tls_failed(&self) {
        self.connections.inc(2);
    }

    /// A completed handshake of `version` (an index into [`TLS_VERSIONS`]).
    pub fn tls_done(&self, version: usize) {
        self.connections
            .inc(3 + version.min(TLS_VERSIONS.len() - 1));
    }

    /// `(accepted, closed, TLS handshake failures, handshakes per version)`.
    pub fn connections(&self) -> (u64, u64, u64, Vec<u64>) {
        let c = &self.connections;
        let tls = (0..TLS_VERSIONS.len()).map(|v| c.get(3 + v)).collect();
        (c.get(0), c.get(1), c.get(2), tls)
    }
}

/// A pool's request figures; carried over a reload that keeps the pool's name.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// From the request's arrival to the end of its response body, for requests routed to
    /// the pool.
    pub duration: Histogram,
    /// From sending a request upstream to its response head, per attempt.
    pub upstream_head: Histogram,
    /// Attempts after the first.
    pub retries: AtomicU64,
    /// Retries refused by the retry budget.
    pub budget_refusals: AtomicU64,
    /// Requests refused by a circuit breaker (`max_in_flight`).
    pub breaker_refusals: AtomicU64,
}

/// An endpoint's upstream connections; lives with its connection pool.
#[derive(Debug, Default)]
pub struct ConnStats {
    pub opened: AtomicU64,
    pub reused: AtomicU64,
    pub failed: AtomicU64,
    /// Attempts the endpoint answered with a 5xx.
    pub status_5xx: AtomicU64,
    /// Attempts that broke after the connection was made: reset, timeout, invalid response.
    pub broken: AtomicU64,
}

/// What a reload reloads.
#[derive(Debug, Clone, Copy)]
pub enum Reload {
    /// The config file (SIGHUP), before anything in it is applied.
    Config,
    Certificates,
    Pools,
    Policy,
}

impl Reload {
    pub const ALL: [Reload; 4] = [
        Reload::Config,
        Reload::Certificates,
        Reload::Pools,
        Reload::Policy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reload::Config => "config",
            Reload::Certificates => "certificates",
            Reload::Pools => "pools",
            Reload::Policy => "policy",
        }
    }
}

/// Reloads by what they reloaded and whether they took effect.
#[derive(Debug, Default)]
pub struct Reloads([[AtomicU64; 2]; 4]);

impl Reloads {
    pub fn count(&self, what: Reload, ok: bool) {
        bump(&self.0[what as usize][usize::from(!ok)]);
    }

    /// `(succeeded, failed)`.
    pub fn get(&self, what: Reload) -> (u64, u64) {
        let [ok, failed] = &self.0[what as usize];
        (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
    }
}

pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_buckets_are_upper_bound_inclusive_and_doubling() {
        let h = Histogram::default();
        for us in [1, 100, 101, 200, 201, 400, 3_000_000] {
            h.observe(Duration::from_micros(us));
        }
        h.observe(Duration::from_secs(1 << 20));
        let (b, sum) = h.snapshot();
        assert_eq!(b[0], (0.0001, 2), "1 µs and 100 µs");
        assert_eq!(b[1], (0.0002, 2), "101 and 200 µs");
        assert_eq!(b[2], (0.0004, 2), "201 and 400 µs");
        // 3 s is in (1.6384 s, 3.2768 s], bucket 15.
        assert_eq!(b[15].1, 1);
        assert_eq!(b[BUCKETS - 1], (f64::INFINITY, 1));
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 8);
        assert!(
            (sum - (3.001003 + (1u64 << 20) as f64)).abs() < 1e-3,
            "{sum}"
        );
    }

    #[test]
    fn sharded_counters_sum_over_slots() {
        let s = Sharded::new(3, 2);
        s.inc(1);
        s.inc(1);
        std::thread::spawn(|| {}).join().unwrap();
        assert_eq!((s.get(0), s.get(1), s.get(2)), (0, 2, 0));
        let l = ListenerStats::new("x".into(), 0);
        l.request(http::Version::HTTP_11, &http::Method::GET, 404);
        l.request(http::Version::HTTP_2, &"BREW".parse().unwrap(), 599);
        assert_eq!(l.requests(1, 0, 3), 1);
        assert_eq!(l.requests(2, 7, 4), 1);
    }
}
