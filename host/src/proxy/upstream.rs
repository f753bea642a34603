//! Upstream pools: named sets of endpoints, each endpoint with its own connections
//! (`connection.rs`), and the order requests are spread over them.

use super::connection::{Dialer, IdleLimits, Upstream};
use crate::config::{PoolConfig, UpstreamProtocol};
use rustls_pki_types::ServerName;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// One endpoint of a pool.
pub struct Endpoint {
    pub address: Arc<str>,
    pub weight: u32,
    /// `address` as a URI authority, for `Host`/`:authority` when the client's is not kept.
    pub authority: http::uri::Authority,
    pub upstream: Upstream,
}

/// A named set of endpoints with a shared protocol and TLS setting.
pub struct Pool {
    pub name: Arc<str>,
    pub protocol: UpstreamProtocol,
    pub tls: bool,
    pub endpoints: Vec<Endpoint>,
    /// Endpoint indices in smooth weighted round-robin order (see [`smooth_wrr_schedule`]).
    schedule: Box<[u32]>,
    cursor: AtomicUsize,
}

/// Error building a pool (bad CA file).
#[derive(Debug, thiserror::Error)]
#[error("pool \"{pool}\": {problem}")]
pub struct PoolError {
    pub pool: String,
    pub problem: String,
}

impl Pool {
    pub fn new(cfg: &PoolConfig, connect_timeout: Duration) -> Result<Pool, PoolError> {
        let err = |problem: String| PoolError {
            pool: cfg.name.clone(),
            problem,
        };
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
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|e| {
                let address: Arc<str> = e.address.as_str().into();
                let dialer = Dialer {
                    address: address.clone(),
                    connect_timeout,
                    tls: tls.clone(),
                };
                let authority = e
                    .address
                    .parse()
                    .map_err(|_| err(format!("endpoint {} is not an authority", e.address)))?;
                Ok(Endpoint {
                    address,
                    weight: e.weight,
                    authority,
                    upstream: Upstream::new(dialer, cfg.protocol, limits),
                })
            })
            .collect::<Result<Vec<_>, PoolError>>()?;
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        Ok(Pool {
            name: cfg.name.as_str().into(),
            protocol: cfg.protocol,
            tls: tls.is_some(),
            endpoints,
            schedule: smooth_wrr_schedule(&weights).into(),
            cursor: AtomicUsize::new(0),
        })
    }

    /// The next endpoint in weighted round-robin order. Lock-free: one atomic increment.
    pub fn pick(&self) -> &Endpoint {
        let i = self.cursor.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        &self.endpoints[self.schedule[i] as usize]
    }

    /// The endpoint for `key` by weighted rendezvous hashing: each endpoint scores
    /// `-weight / ln(u)` with `u` a uniform hash of (key, endpoint address) in (0, 1), and the
    /// highest score wins (Resch, "New Hashing Algorithms for Data Storage", 2015, after
    /// Thaler & Ravishankar's highest-random-weight hashing). A key keeps its endpoint as long
    /// as that endpoint stays, and only keys of a removed endpoint move. O(endpoints) per pick;
    /// step 3 adds ring hash and Maglev for large pools.
    pub fn pick_by_key(&self, key: &[u8]) -> &Endpoint {
        let key_hash = fnv1a(key, FNV_OFFSET);
        let score = |e: &Endpoint| {
            let h = splitmix64(fnv1a(e.address.as_bytes(), key_hash));
            // 53 random bits -> u in (0, 1); ln(u) < 0 so the score is positive.
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            -f64::from(e.weight) / u.ln()
        };
        self.endpoints
            .iter()
            .max_by(|a, b| score(a).total_cmp(&score(b)))
            .expect("a pool has at least one endpoint")
    }

    /// The endpoint with this address, if it belongs to the pool.
    pub fn endpoint(&self, address: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| &*e.address == address)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64-bit (Fowler, Noll, Vo). Stable across builds and platforms, unlike std's
/// hasher, so a hash key maps to the same endpoint after an upgrade.
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64's finaliser (Steele, Lea, Flood 2014): spreads FNV's weak low bits.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Every configured pool by name, plus the default. Immutable once built; what policies see
/// through the `balancer` import.
pub struct Pools {
    by_name: HashMap<Arc<str>, Arc<Pool>>,
    default: Arc<Pool>,
}

impl Pools {
    pub fn new(config: &crate::config::Config) -> Result<Pools, PoolError> {
        let mut by_name = HashMap::new();
        for p in &config.pools {
            let pool = Arc::new(Pool::new(p, config.timeouts.upstream_connect)?);
            by_name.insert(pool.name.clone(), pool);
        }
        let default = by_name[config.proxy.default_pool.as_str()].clone();
        Ok(Pools { by_name, default })
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
}

impl crate::policy::Upstreams for Pools {
    fn pick(
        &self,
        pool: Option<&str>,
        _algorithm: Option<crate::policy::Algorithm>,
        hash_key: Option<&[u8]>,
        _client: std::net::IpAddr,
    ) -> Option<Arc<str>> {
        let pool = self.get(pool)?;
        let e = match hash_key {
            Some(k) => pool.pick_by_key(k),
            None => pool.pick(),
        };
        Some(e.address.clone())
    }

    fn endpoints(&self, pool: &str) -> Option<Vec<crate::policy::EndpointInfo>> {
        let pool = self.by_name.get(pool)?;
        Some(
            pool.endpoints
                .iter()
                .map(|e| crate::policy::EndpointInfo {
                    addr: e.address.clone(),
                    weight: e.weight,
                    healthy: true,
                    state: crate::policy::HealthState::Healthy,
                    in_flight: 0,
                    ewma_latency_us: 0,
                })
                .collect(),
        )
    }

    fn health(&self, _pool: &str, _addr: &str) -> Option<crate::policy::HealthState> {
        None
    }

    fn check_target(&self, pool: Option<&str>, endpoint: Option<&str>) -> Result<(), String> {
        let p = self
            .get(pool)
            .ok_or_else(|| format!("no pool named {:?}", pool.unwrap_or_default()))?;
        match endpoint {
            Some(addr) if p.endpoint(addr).is_none() => {
                Err(format!("pool {:?} has no endpoint {addr:?}", &*p.name))
            }
            _ => Ok(()),
        }
    }
}

/// One full cycle of nginx's smooth weighted round robin, precomputed so a pick is an atomic
/// increment instead of a locked scan. Weights are divided by their GCD first to keep the
/// cycle short. (Algorithm: nginx `ngx_http_upstream_get_peer`: every round each peer gains its
/// weight, the largest current wins and loses the total.) Weights 5,1,1 give a a b a c a a.
pub fn smooth_wrr_schedule(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let w: Vec<i64> = weights.iter().map(|&x| i64::from(x / g)).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
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

#[cfg(test)]
mod tests {
    use super::{fnv1a, smooth_wrr_schedule};

    #[test]
    fn fnv1a_reference_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a(b"", super::FNV_OFFSET), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a", super::FNV_OFFSET), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(b"foobar", super::FNV_OFFSET), 0x85944171f73967e8);
    }

    #[test]
    fn nginx_smooth_sequence() {
        let names: String = smooth_wrr_schedule(&[5, 1, 1])
            .iter()
            .map(|&i| (b'a' + i as u8) as char)
            .collect();
        assert_eq!(names, "aabacaa");
    }

    #[test]
    fn gcd_reduces_cycle() {
        assert_eq!(smooth_wrr_schedule(&[200, 100]).len(), 3);
        assert_eq!(smooth_wrr_schedule(&[1, 1, 1]), vec![0, 1, 2]);
    }
}
