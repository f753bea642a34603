//! Upstream pools: named sets of endpoints, each endpoint with its own connections
//! (`connection.rs`), live balancing state (`balance::Live`) and health record
//! ([`EndpointHealth`](super::EndpointHealth)).
//!
//! A [`Pools`] is one generation of the configured pools and never changes; a config reload
//! builds a new generation from the previous one ([`Pools::new`] with `previous`), reusing the
//! live state, health record and connections of every endpoint it keeps. [`PoolTable`] holds
//! the current generation and its health monitor.

use super::EndpointHealth;
use super::connection::{Dialer, IdleLimits, Upstream};
use crate::balance::{self, Algorithm, Backend, Balancers, Ctx, HealthState, Live, PoolLive, Set};
use crate::config::{
    Config, HealthCheckConfig, OutlierConfig, PoolConfig, RetryConfig, UpstreamProtocol,
};
use arc_swap::ArcSwap;
use rustls_pki_types::ServerName;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
/// One endpoint of a pool.
pub struct Endpoint {
    pub address: Arc<str>,
    pub weight: u32,
    /// `address` as a URI authority, for `Host`/`:authority` when the client's is not kept.
    pub authority: http::uri::Authority,
    pub upstream: Arc<Upstream>,
    pub health: Arc<EndpointHealth>,
}

/// A named set of endpoints with a shared protocol, TLS setting, balancing options, retry
/// policy and health checking.
pub struct Pool {
    pub name: Arc<str>,
    pub protocol: UpstreamProtocol,
    pub tls: bool,
    /// Same order as `set.backends`.
    pub endpoints: Vec<Endpoint>,
    pub set: Set,
    balancers: Balancers,
    pub retry: RetryConfig,
    pub health_check: Option<HealthCheckConfig>,
    pub outlier: Option<OutlierConfig>,
    /// What decides whether connections can be kept across a reload.
    transport: Transport,
    /// Request figures for `/metrics`; kept across reloads while the pool's name is.
    pub stats: Arc<crate::metrics::PoolStats>,
}

/// The settings an endpoint's connections depend on.
#[derive(Clone, PartialEq)]
struct Transport {
    protocol: UpstreamProtocol,
    tls: Option<crate::config::UpstreamTls>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

/// Error building a pool (bad CA file).
#[derive(Debug, thiserror::Error)]
#[error("pool \"{pool}\": {problem}")]
pub struct PoolError {
    pub pool: String,
    pub problem: String,
}

thread_local! {
    /// Randomness for the algorithms that draw (P2C, weighted random, slow start).
    static RNG: RefCell<fastrand::Rng> = RefCell::new(fastrand::Rng::new());
}

impl Pool {
    /// Builds a pool, reusing what `previous` (the same pool in the generation being
    /// replaced) has for the endpoints it keeps.
    pub fn new(
        cfg: &PoolConfig,
        connect_timeout: Duration,
        previous: Option<&Pool>,
    ) -> Result<Pool, PoolError> {
        let err = |problem: String| PoolError {
            pool: cfg.name.clone(),
            problem,
        };
        let transport = Transport {
            protocol: cfg.protocol,
            tls: cfg.tls.clone(),
            max_idle: cfg.max_idle_per_endpoint,
            idle_timeout: cfg.idle_timeout,
            connect_timeout,
        };
        let stats = previous.map(|p| p.stats.clone()).unwrap_or_default();
        let previous = previous.filter(|p| p.protocol == cfg.protocol);
        let keep_connections = previous.is_some_and(|p| p.transport == transport);
        let tls = match &cfg.tls {
            None => None,
            Some(t) => {
                let client_cfg = client_tls_config(t.ca.as_deref(), cfg.protocol).map_err(err)?;
                let name = ServerName::try_from(t.server_name.clone())
                    .map_err(|e| err(format!("server_name: {e}")))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(client_cfg)), name))
            }
        };
        let limits = IdleLimits {
            max_idle: cfg.max_idle_per_endpoint,
            idle_timeout: cfg.idle_timeout,
        };
        let start_down = cfg.health_check.as_ref().is_some_and(|h| h.start_unhealthy);
        let mut endpoints = Vec::with_capacity(cfg.endpoints.len());
        let mut backends = Vec::with_capacity(cfg.endpoints.len());
        for e in &cfg.endpoints {
            let address: Arc<str> = e.address.as_str().into();
            let authority = e
                .address
                .parse()
                .map_err(|_| err(format!("endpoint {} is not an authority", e.address)))?;
            let kept = previous.and_then(|p| p.index_of(&address).map(|i| (p, i)));
            let (live, health, upstream) = match kept {
                Some((p, i)) => {
                    let live = p.set.backends[i].live.clone();
                    // Without active checks (or outlier detection) nothing would ever bring
                    // the endpoint back.
                    if cfg.health_check.is_none() {
                        live.set_flag(balance::DOWN, false, balance::now());
                    }
                    if cfg.outlier.is_none() {
                        live.set_flag(balance::EJECTED, false, balance::now());
                    }
                    let upstream = keep_connections.then(|| p.endpoints[i].upstream.clone());
                    (live, p.endpoints[i].health.clone(), upstream)
                }
                None => (
                    Arc::new(Live::new(start_down)),
                    Arc::new(EndpointHealth::default()),
                    None,
                ),
            };
            let upstream = upstream.unwrap_or_else(|| {
                let dialer = Dialer {
                    address: address.clone(),
                    connect_timeout,
                    tls: tls.clone(),
                };
                Arc::new(Upstream::new(dialer, cfg.protocol, limits))
            });
            backends.push(Backend {
                address: address.clone(),
                weight: e.weight,
                live,
            });
            endpoints.push(Endpoint {
                address,
                weight: e.weight,
                authority,
                upstream,
                health,
            });
        }
        let pool_live = previous
            .map(|p| p.set.live.clone())
            .unwrap_or_else(|| Arc::new(PoolLive::default()));
        let set = Set::new(backends, pool_live, cfg.balance.clone());
        if set.live.panicking() {
            tracing::warn!(pool = %cfg.name, "panic mode: too few healthy endpoints, traffic goes to all");
        }
        let balancers = Balancers::new(&set);
        Ok(Pool {
            name: cfg.name.as_str().into(),
            protocol: cfg.protocol,
            tls: tls.is_some(),
            endpoints,
            set,
            balancers,
            retry: cfg.retry,
            health_check: cfg.health_check.clone(),
            outlier: cfg.outlier,
            transport,
            stats,
        })
    }

    /// Picks an eligible endpoint with `algorithm` (the pool's when `None`), skipping the
    /// indices in `exclude`. `None` when nothing is eligible.
    pub fn pick(
        &self,
        algorithm: Option<Algorithm>,
        key: Option<&[u8]>,
        client: Option<IpAddr>,
        exclude: &[usize],
    ) -> Option<usize> {
        RNG.with_borrow_mut(|rng| {
            let mut cx = Ctx {
                key,
                client,
                now: balance::now(),
                rng,
                exclude,
            };
            self.balancers.pick(&self.set, algorithm, &mut cx)
        })
    }

    /// The index of the endpoint with this address, if it belongs to the pool.
    pub fn index_of(&self, address: &str) -> Option<usize> {
        self.endpoints.iter().position(|e| &*e.address == address)
    }

    pub fn live(&self, i: usize) -> &Arc<Live> {
        &self.set.backends[i].live
    }

    /// What `balancer.endpoints` reports for endpoint `i`.
    pub fn info(&self, i: usize, now: balance::Nanos) -> super::EndpointInfo {
        let live = self.live(i);
        let state = live.health();
        super::EndpointInfo {
            addr: self.endpoints[i].address.clone(),
            weight: self.endpoints[i].weight,
            healthy: state == HealthState::Healthy,
            state,
            in_flight: live.in_flight(),
            ewma_latency_us: live
                .ewma_ns(now)
                .map_or(0, |ns| (ns / 1000.0).min(f64::from(u32::MAX)) as u32),
        }
    }

    /// Sets or clears a health flag of endpoint `i`, logging the change and entering or
    /// leaving panic mode as needed.
    pub fn set_flag(&self, i: usize, flag: u8, on: bool, why: &str) {
        let now = balance::now();
        let live = self.live(i);
        let before = live.health();
        live.set_flag(flag, on, now);
        let after = live.health();
        if before == after {
            return;
        }
        self.endpoints[i].health.state_changed();
        let (pool, endpoint) = (&*self.name, &*self.endpoints[i].address);
        match after {
            HealthState::Healthy => tracing::info!(pool, endpoint, why, "endpoint healthy"),
            other => tracing::warn!(
                pool,
                endpoint,
                why,
                state = other.name(),
                "endpoint out of rotation"
            ),
        }
        match self.set.recount() {
            Some((healthy, total, true)) => tracing::warn!(
                pool,
                healthy,
                total,
                "panic mode: fewer than the panic threshold of endpoints are healthy; traffic goes to all"
            ),
            Some((healthy, total, false)) => {
                tracing::info!(pool, healthy, total, "panic mode over")
            }
            None => {}
        }
    }
}

impl Pool {
    /// A permit for one retry of a request its endpoint saw, if the pool's retry budget
    /// allows it: while retries in flight are at most `budget_ratio` of the pool's requests
    /// in flight, or `budget_min`, whichever is larger (Envoy's retry budget); beyond that,
    /// by spending credit that answered requests earned ([`Pool::earn_retry_credit`]).
    ///
    /// The credit is Finagle's idea (a retry budget as a token bucket that requests fill): a
    /// burst of failures after a stretch of successes, such as the requests in flight on an
    /// endpoint that was just killed, is retried in full, while a pool that keeps failing
    /// earns nothing and is held to the concurrent budget.
    pub fn retry_permit(&self) -> Option<RetryPermit> {
        let live = &self.set.live;
        let allowed = ((self.retry.budget_ratio * f64::from(live.in_flight())) as u32)
            .max(self.retry.budget_min);
        let within = live
            .retries_in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < allowed).then_some(n + 1)
            })
            .is_ok();
        if !within {
            live.retry_credit
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                    c.checked_sub(CREDIT_PER_RETRY)
                })
                .ok()?;
            live.retries_in_flight.fetch_add(1, Ordering::Relaxed);
        }
        Some(RetryPermit(live.clone()))
    }

    /// An answered request earns `budget_ratio` of a retry, up to a credit of
    /// `budget_ratio` x [`CREDIT_WINDOW`] retries. At the cap (a healthy pool's usual state)
    /// this is one shared read, no write.
    pub fn earn_retry_credit(&self) {
        let credit = &self.set.live.retry_credit;
        let per = (self.retry.budget_ratio * CREDIT_PER_RETRY as f64) as u64;
        let cap = per * CREDIT_WINDOW;
        if per > 0 && credit.load(Ordering::Relaxed) < cap {
            let _ = credit.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some((c + per).min(cap))
            });
        }
    }
}

/// Credit is counted in thousandths of a retry.
const CREDIT_PER_RETRY: u64 = 1000;
/// The credit holds what this many answered requests earn (1000: 200 retries at 20 %).
const CREDIT_WINDOW: u64 = 1000;

/// A retry in flight, counted against its pool's retry budget until dropped.
#[derive(Debug)]
pub struct RetryPermit(Arc<PoolLive>);

impl Drop for RetryPermit {
    fn drop(&mut self) {
        self.0.retries_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every configured pool by name, plus the default: one generation of the configuration.
pub struct Pools {
    by_name: HashMap<Arc<str>, Arc<Pool>>,
    /// Config order, for the admin API.
    order: Vec<Arc<Pool>>,
    default: Arc<Pool>,
}

impl Pools {
    /// Builds the pools of `config`, reusing state of `previous` for kept endpoints.
    pub fn new(config: &Config, previous: Option<&Pools>) -> Result<Pools, PoolError> {
        let mut by_name = HashMap::new();
        let mut order = Vec::new();
        for p in &config.pools {
            let prev = previous.and_then(|old| old.by_name.get(p.name.as_str()));
            let pool = Arc::new(Pool::new(
                p,
                config.timeouts.upstream_connect,
                prev.map(|p| &**p),
            )?);
            by_name.insert(pool.name.clone(), pool.clone());
            order.push(pool);
        }
        let default = by_name[config.proxy.default_pool.as_str()].clone();
        Ok(Pools {
            by_name,
            order,
            default,
        })
    }

    /// The pool called `name`, or the default pool for `None`.
    pub fn get(&self, name: Option<&str>) -> Option<&Arc<Pool>> {
        match name {
            None => Some(&self.default),
            Some(n) => self.by_name.get(n),
        }
    }

    pub fn default_pool(&self) -> &Arc<Pool> {
        &self.default
    }

    /// Pools in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.order.iter()
    }
}

/// The current generation of pools. Shared by the proxy, the health monitor, the policy
/// runtime (as [`super::Upstreams`]) and the admin API.
pub struct PoolTable {
    current: ArcSwap<Pools>,
}

impl PoolTable {
    /// A table serving `pools`. Active checks are `health::Monitor`'s, started by the owner.
    pub fn new(pools: Pools) -> PoolTable {
        PoolTable {
            current: ArcSwap::from_pointee(pools),
        }
    }

    pub fn load(&self) -> arc_swap::Guard<Arc<Pools>> {
        self.current.load()
    }

    pub fn current(&self) -> Arc<Pools> {
        self.current.load_full()
    }

    /// Replaces the pools with those of `config`, keeping the live state, health and
    /// connections of every endpoint that stays. In-flight requests finish on the generation
    /// they started with. (`Running::reload_pools` also restarts the health monitor.)
    pub(crate) fn reload(&self, config: &Config) -> Result<(), PoolError> {
        let next = Pools::new(config, Some(&self.current()))?;
        self.current.store(Arc::new(next));
        Ok(())
    }
}

impl super::Upstreams for PoolTable {
    fn pick(
        &self,
        pool: Option<&str>,
        algorithm: Option<Algorithm>,
        hash_key: Option<&[u8]>,
        client: IpAddr,
    ) -> Option<Arc<str>> {
        let pools = self.load();
        let pool = pools.get(pool)?;
        let i = pool.pick(algorithm, hash_key, Some(client), &[])?;
        Some(pool.endpoints[i].address.clone())
    }

    fn endpoints(&self, pool: &str) -> Option<Vec<super::EndpointInfo>> {
        let pools = self.load();
        let pool = pools.get(Some(pool))?;
        let now = balance::now();
        Some(
            (0..pool.endpoints.len())
                .map(|i| pool.info(i, now))
                .collect(),
        )
    }

    fn health(&self, pool: &str, addr: &str) -> Option<HealthState> {
        let pools = self.load();
        let pool = pools.get(Some(pool))?;
        Some(pool.live(pool.index_of(addr)?).health())
    }

    fn check_target(&self, pool: Option<&str>, endpoint: Option<&str>) -> Result<(), String> {
        let pools = self.load();
        let p = pools
            .get(pool)
            .ok_or_else(|| format!("no pool named {:?}", pool.unwrap_or_default()))?;
        match endpoint {
            Some(addr) if p.index_of(addr).is_none() => {
                Err(format!("pool {:?} has no endpoint {addr:?}", &*p.name))
            }
            _ => Ok(()),
        }
    }
}

fn client_tls_config(
    ca: Option<&std::path::Path>,
    protocol: UpstreamProtocol,
) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| format!("tls.ca {}: {e:?}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("tls.ca {}: no usable certificate", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = match protocol {
        UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
    };
    Ok(cfg)
}
