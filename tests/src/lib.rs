//! Test support for sluice integration tests: scripted origins, a proxy builder, certificates
//! from a throwaway CA, and clients for HTTP/1.1, h2c, HTTPS (h1/h2) and raw bytes.
//!
//! Everything binds 127.0.0.1:0 and runs in-process; nothing sleeps to synchronise.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub use sluice;

pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;
type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// A body from bytes.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A response with a status and a text body.
pub fn text(status: u16, s: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(s));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

/// The address of the client (usually the proxy) a request reached an [`Origin`] from; every
/// request an origin handler sees carries it as an extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// An in-process origin server that counts requests. Serves HTTP/1.1 and h2c, optionally TLS.
pub struct Origin {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    /// Every connection's task, so [`Origin::kill`] can close them all.
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Origin {
    /// Starts an origin whose every request goes to `handler`.
    pub async fn start<F, Fut>(handler: F) -> Origin
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        Self::start_with_tls(handler, None).await
    }

    /// Like [`Origin::start`], terminating TLS with `tls` (ALPN h2 and http/1.1).
    pub async fn start_with_tls<F, Fut>(
        handler: F,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Origin
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
        let c = conns.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let hits = h.clone();
                let tls = tls.clone();
                let conn = tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        req.extensions_mut().insert(Peer(peer));
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(cfg) => {
                            let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await
                            else {
                                return;
                            };
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(s), service)
                                .await;
                        }
                    }
                });
                c.lock().unwrap().push(conn.abort_handle());
            }
        });
        Origin {
            addr,
            hits,
            task,
            conns,
        }
    }

    /// Stops the origin as a crash would: the listener closes (new connections are refused)
    /// and every open connection is dropped, mid-request or not.
    pub fn kill(&self) {
        self.task.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// An origin that answers `200 <name>` with `x-origin: <name>` and echoes request details
    /// in response headers: `x-echo-method`, `x-echo-uri`, `x-echo-version`, and every request
    /// header as `x-echo-h-<name>` (values joined with `, `).
    pub async fn echo(name: &'static str) -> Origin {
        Origin::start(move |req| async move { echo_response(name, req).await }).await
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An origin whose `GET /health` answers, in order, the statuses the test sends on the
/// returned channel (each check waits for its status, so the test decides every check's
/// outcome); every other request gets [`echo_response`] as `name`. Pair it with
/// [`scripted_checks!`].
pub async fn scripted_health(
    name: &'static str,
) -> (Origin, tokio::sync::mpsc::UnboundedSender<u16>) {
    scripted_health_with(move |req| echo_response(name, req)).await
}

/// [`scripted_health`] with `other` answering every request that is not a health check.
pub async fn scripted_health_with<F, Fut>(
    other: F,
) -> (Origin, tokio::sync::mpsc::UnboundedSender<u16>)
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u16>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let other = Arc::new(other);
    let origin = Origin::start(move |req: Request<Incoming>| {
        let (rx, other) = (rx.clone(), other.clone());
        async move {
            if req.uri().path() == "/health" {
                let status = rx.lock().await.recv().await.unwrap_or(503);
                return text(status, "health");
            }
            other(req).await
        }
    })
    .await;
    (origin, tx)
}

/// A `[pool.health_check]` table for origins from [`scripted_health`]: checks `/health` back
/// to back (each waits for the test's script), with the given `rise` and `fall`.
#[macro_export]
macro_rules! scripted_checks {
    ($rise:literal, $fall:literal) => {
        concat!(
            "[pool.health_check]\npath = \"/health\"\ninterval = \"10ms\"\njitter = \"0s\"\n",
            "timeout = \"10s\"\nrise = ",
            $rise,
            "\nfall = ",
            $fall,
            "\n"
        )
    };
}

/// A raw TCP origin that reads each request (head, and a `Content-Length` or chunked body)
/// and never answers: it holds the connection until [`Holder::release`], then closes it, so
/// the proxy sees the upstream fail after the request was sent. With `hold = false` it closes
/// as soon as the request is read.
pub struct Holder {
    pub addr: SocketAddr,
    arrivals: tokio::sync::watch::Receiver<usize>,
    release: Arc<tokio::sync::watch::Sender<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Holder {
    pub async fn start(hold: bool) -> Holder {
        Self::start_sharing(hold, Arc::new(tokio::sync::watch::channel(0u64).0)).await
    }

    /// `n` holding origins that [`Holder::release`] together, so that every held request
    /// fails at the same moment.
    pub async fn group(n: usize) -> Vec<Holder> {
        let release = Arc::new(tokio::sync::watch::channel(0u64).0);
        let mut holders = Vec::new();
        for _ in 0..n {
            holders.push(Self::start_sharing(true, release.clone()).await);
        }
        holders
    }

    async fn start_sharing(hold: bool, release: Arc<tokio::sync::watch::Sender<u64>>) -> Holder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (arrived_tx, arrivals) = tokio::sync::watch::channel(0usize);
        let release_rx = release.subscribe();
        let arrived_tx = Arc::new(arrived_tx);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let arrived = arrived_tx.clone();
                let mut release = release_rx.clone();
                tokio::spawn(async move {
                    // Every request on the connection is held; the proxy sends one at a time.
                    let generation = *release.borrow_and_update();
                    if read_request(&mut stream).await.is_none() {
                        return;
                    }
                    arrived.send_modify(|n| *n += 1);
                    if hold {
                        let _ = release.wait_for(|g| *g > generation).await;
                    }
                    drop(stream);
                });
            }
        });
        Holder {
            addr,
            arrivals,
            release,
            task,
        }
    }

    /// Requests read so far.
    pub fn arrivals(&self) -> usize {
        *self.arrivals.borrow()
    }

    /// Waits until at least `n` requests have arrived.
    pub async fn wait_arrivals(&self, n: usize) {
        let mut rx = self.arrivals.clone();
        guarded(
            &format!("{n} requests reach the holder"),
            rx.wait_for(|&a| a >= n),
        )
        .await
        .unwrap();
    }

    /// Closes every connection holding a request now (in every holder of its group); later
    /// requests are held again.
    pub fn release(&self) {
        self.release.send_modify(|g| *g += 1);
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.task.abort();
        self.release();
    }
}

/// Reads one HTTP/1.1 request (head and body) from `s`; `None` if the peer closed first.
async fn read_request(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &buf[head_end..];
        let complete = match (length, chunked) {
            (Some(n), _) => body.len() >= n,
            (None, true) => body.ends_with(b"0\r\n\r\n"),
            (None, false) => true,
        };
        if complete {
            return Some(buf);
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// See [`Origin::echo`]. The body is `<name>` followed by the request body's length.
pub async fn echo_response(name: &'static str, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let len = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(usize::MAX);
    let mut r = text(200, format!("{name} {len}"));
    let h = r.headers_mut();
    h.insert("x-origin", name.parse().unwrap());
    h.insert("x-echo-method", parts.method.as_str().parse().unwrap());
    h.insert("x-echo-uri", parts.uri.to_string().parse().unwrap());
    h.insert(
        "x-echo-version",
        format!("{:?}", parts.version).parse().unwrap(),
    );
    let mut names: Vec<_> = parts.headers.keys().collect();
    names.dedup();
    for n in names {
        let joined: Vec<String> = parts
            .headers
            .get_all(n)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let key = format!("x-echo-h-{}", n.as_str());
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::try_from(key),
            http::HeaderValue::try_from(joined.join(", ")),
        ) {
            h.insert(k, v);
        }
    }
    r
}

/// A throwaway certificate authority and the files it issues, in a temp dir.
pub struct Certs {
    pub dir: tempfile::TempDir,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub ca_pem: String,
    pub ca_path: PathBuf,
}

/// A leaf certificate written to disk.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Default for Certs {
    fn default() -> Self {
        Self::new()
    }
}

impl Certs {
    pub fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sluice test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_pem = cert.pem();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, &ca_pem).unwrap();
        let ca = rcgen::Issuer::new(params, key);
        Certs {
            dir,
            ca,
            ca_pem,
            ca_path,
        }
    }

    /// Issues a leaf for `names` (DNS names or IPs) and writes it as `<file>.pem`/`<file>.key`.
    pub fn issue(&self, file: &str, names: &[&str]) -> Leaf {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let leaf = Leaf {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        leaf.write_to(&leaf.cert, &leaf.key);
        leaf
    }

    /// Client config trusting this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        client_config_trusting(&self.ca_pem, alpn)
    }

    /// A root store holding just this CA, for clients built by hand.
    pub fn roots(&self) -> rustls::RootCertStore {
        roots_from_pem(&self.ca_pem)
    }

    /// Server config for an origin presenting `leaf`.
    pub fn server_config(&self, leaf: &Leaf) -> Arc<rustls::ServerConfig> {
        let chain = rustls_pki_types::CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

use rustls_pki_types::pem::PemObject;

/// A root store holding every certificate in `pem`.
fn roots_from_pem(pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

/// A client config (safe default TLS versions) trusting only the certificates in `ca_pem`,
/// offering `alpn`.
pub fn client_config_trusting(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots_from_pem(ca_pem))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

impl Leaf {
    /// The certificate's DER, as a server presenting it sends it (compare with [`peer_cert`]).
    pub fn der(&self) -> Vec<u8> {
        rustls_pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    /// Writes this certificate and key to the given paths (atomically, via rename).
    pub fn write_to(&self, cert: &std::path::Path, key: &std::path::Path) {
        for (path, pem) in [(cert, &self.cert_pem), (key, &self.key_pem)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, pem).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    }
}

/// Builds a proxy config as TOML and starts it in-process.
///
/// ```ignore
/// let proxy = ProxyBuilder::for_origin(&origin).admin(None).start().await;
/// ```
pub struct ProxyBuilder {
    pools: Vec<String>,
    tls: Option<String>,
    sections: Vec<String>,
    admin: Option<String>,
    policy: Option<String>,
}

impl Default for ProxyBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyBuilder {
    pub fn new() -> Self {
        ProxyBuilder {
            pools: Vec::new(),
            tls: None,
            sections: Vec::new(),
            admin: None,
            policy: None,
        }
    }

    /// The usual proxy in front of one origin: a builder whose first (so default) pool, `web`,
    /// is `origin`.
    pub fn for_origin(origin: &Origin) -> Self {
        Self::new().pool("web", &[origin.addr])
    }

    /// A plain HTTP/1.1 pool. The first pool added is the default pool.
    pub fn pool(self, name: &str, endpoints: &[SocketAddr]) -> Self {
        self.pool_toml(name, endpoints, "")
    }

    /// A pool with extra TOML lines in its table (e.g. `protocol = "h2"`).
    pub fn pool_toml(mut self, name: &str, endpoints: &[SocketAddr], extra: &str) -> Self {
        let eps: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
        self.pools.push(format!(
            "[[pool]]\nname = \"{name}\"\nendpoints = [{}]\n{extra}\n",
            eps.join(", ")
        ));
        self
    }

    /// Adds an HTTPS listener named `https` with these certificates (first is the default).
    pub fn tls(mut self, leaves: &[&Leaf]) -> Self {
        let certs: Vec<String> = leaves
            .iter()
            .map(|l| {
                format!(
                    "{{ cert = \"{}\", key = \"{}\" }}",
                    l.cert.display(),
                    l.key.display()
                )
            })
            .collect();
        self.tls = Some(format!(
            "[[listener]]\nname = \"https\"\naddress = \"127.0.0.1:0\"\ntls = {{ certificates = [{}] }}\n",
            certs.join(", ")
        ));
        self
    }

    /// Adds an admin listener on 127.0.0.1:0, with `token` if given.
    pub fn admin(mut self, token: Option<&str>) -> Self {
        self.admin = Some(match token {
            Some(t) => format!("[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{t}\"\n"),
            None => "[admin]\naddress = \"127.0.0.1:0\"\n".into(),
        });
        self
    }

    /// Runs the policy component at `module` (a path from [`guests`]), with extra lines for
    /// the `[policy]` table, e.g. `fail = "open"`, and a `[policy.settings]` table if
    /// `settings` is not empty (`key = "value"` lines).
    pub fn policy(mut self, module: &str, extra: &str, settings: &str) -> Self {
        let mut p = format!("[policy]\nmodule = \"{module}\"\n{extra}\n");
        if !settings.is_empty() {
            p.push_str(&format!("[policy.settings]\n{settings}\n"));
        }
        self.policy = Some(p);
        self
    }

    /// Appends raw TOML (e.g. `"[timeouts]\nupstream_response = \"200ms\""`).
    pub fn toml(mut self, section: &str) -> Self {
        self.sections.push(section.to_string());
        self
    }

    pub fn config_text(&self) -> String {
        let mut s = String::from("[[listener]]\nname = \"http\"\naddress = \"127.0.0.1:0\"\n");
        if let Some(t) = &self.tls {
            s.push_str(t);
        }
        for p in &self.pools {
            s.push_str(p);
        }
        if let Some(a) = &self.admin {
            s.push_str(a);
        }
        let has_log = self.sections.iter().any(|x| x.contains("[log]"));
        let has_proxy = self.sections.iter().any(|x| x.contains("[proxy]"));
        if self.pools.len() > 1 && !has_proxy {
            // The first pool added is the default, as documented on `pool`.
            let first = self.pools[0].lines().nth(1).unwrap_or_default();
            let name = first.trim_start_matches("name = ");
            s.push_str(&format!("[proxy]\ndefault_pool = {name}\n"));
        }
        for x in &self.sections {
            s.push_str(x);
            s.push('\n');
        }
        if !has_log {
            s.push_str("[log]\naccess_log = false\n");
        }
        if let Some(p) = &self.policy {
            s.push_str(p);
        }
        s
    }

    pub async fn start(self) -> TestProxy {
        use_test_engine_cache();
        let text = self.config_text();
        let config = sluice::config::Config::parse(&text, "(test)", std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"));
        let running = sluice::start(config).await.expect("proxy starts");
        TestProxy {
            http: running.addr("http").unwrap(),
            https: running.addr("https"),
            admin: running.admin,
            running,
        }
    }
}

/// Sends `method path` with `body` to the admin listener at `addr`; returns the status and the
/// JSON body.
pub async fn admin_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let mut c = h1(addr).await;
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .body(full(body))
        .unwrap();
    let resp = guarded("admin answers", send(&mut c, req)).await;
    let status = resp.status();
    let bytes = body_bytes(resp).await;
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("admin {path}: not JSON ({e}): {bytes:?}"));
    (status, json)
}

/// `GET /pools` on the admin listener: the endpoint `address` of pool `pool`.
pub async fn endpoint_status(
    admin: SocketAddr,
    pool: &str,
    address: SocketAddr,
) -> serde_json::Value {
    let (status, json) = admin_call(admin, "GET", "/pools", Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let addr = address.to_string();
    json["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pool)
        .unwrap_or_else(|| panic!("no pool {pool} in {json}"))["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == addr.as_str())
        .unwrap_or_else(|| panic!("no endpoint {addr} in {json}"))
        .clone()
}

/// Polls `GET /pools` until endpoint `address` of `pool` satisfies `done` (bounded by
/// [`GUARD`]); returns that status.
pub async fn wait_endpoint(
    admin: SocketAddr,
    pool: &str,
    address: SocketAddr,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    guarded(what, async {
        loop {
            let e = endpoint_status(admin, pool, address).await;
            if done(&e) {
                return e;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// `GET /policy` on the admin listener.
pub async fn policy_status(admin: SocketAddr) -> serde_json::Value {
    let (status, json) = admin_call(admin, "GET", "/policy", Vec::new()).await;
    assert_eq!(status, 200, "{json}");
    json
}

/// Points the process-wide Wasm engine's compiled-artifact cache into `target/`, so test runs
/// share compiled components without touching the user's cache directory.
pub fn use_test_engine_cache() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/policy-cache");
        sluice::policy::engine::configure(sluice::policy::EngineOptions {
            cache_dir: Some(dir),
        });
    });
}

/// A started proxy with its addresses.
pub struct TestProxy {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub running: sluice::Running,
}

/// The usual HTTPS fixture: a fresh CA, a leaf certificate for one server name, and an
/// [`Origin::echo`] origin `a` behind a proxy whose `https` listener presents that leaf (its
/// plain `http` listener is there too).
pub struct TlsSite {
    pub name: String,
    pub certs: Certs,
    pub leaf: Leaf,
    pub origin: Origin,
    pub proxy: TestProxy,
}

impl TlsSite {
    /// Issues a leaf for `name` and starts the origin and the proxy.
    pub async fn start(name: &str) -> TlsSite {
        let certs = Certs::new();
        let leaf = certs.issue("site", &[name]);
        let origin = Origin::echo("a").await;
        let proxy = ProxyBuilder::for_origin(&origin)
            .tls(&[&leaf])
            .start()
            .await;
        TlsSite {
            name: name.to_string(),
            certs,
            leaf,
            origin,
            proxy,
        }
    }

    /// The address of the `https` listener.
    pub fn https(&self) -> SocketAddr {
        self.proxy.https.unwrap()
    }

    /// A TLS connection to the `https` listener with SNI `name`, trusting the CA and offering
    /// `alpn`. Panics if the handshake fails.
    pub async fn connect(&self, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
        tls_connect(self.https(), &self.name, self.certs.client_config(alpn))
            .await
            .unwrap()
    }
}

pub type H1 = hyper::client::conn::http1::SendRequest<Body>;
pub type H2 = hyper::client::conn::http2::SendRequest<Body>;

/// An HTTP/1.1 connection to `addr`. The connection task runs in the background.
pub async fn h1(addr: SocketAddr) -> H1 {
    let stream = TcpStream::connect(addr).await.unwrap();
    h1_over(stream).await
}

pub async fn h1_over<I>(io: I) -> H1
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    send
}

/// An h2c (prior knowledge) connection to `addr`.
pub async fn h2c(addr: SocketAddr) -> H2 {
    let stream = TcpStream::connect(addr).await.unwrap();
    h2_over(stream).await
}

pub async fn h2_over<I>(io: I) -> H2
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

/// Sends `req` once `c` is ready for another request. hyper refuses a request sent while the
/// connection is still wrapping up the previous exchange ("connection was not ready"), which
/// can happen right after a response body has been read to its end.
pub async fn send(c: &mut H1, req: Request<Body>) -> Response<Incoming> {
    c.ready().await.unwrap();
    c.send_request(req).await.unwrap()
}

/// [`send`] for HTTP/2 connections.
pub async fn send2(c: &mut H2, req: Request<Body>) -> Response<Incoming> {
    c.ready().await.unwrap();
    c.send_request(req).await.unwrap()
}

/// A TLS connection to `addr` with SNI `name`; returns the stream for the caller to speak over.
pub async fn tls_connect(
    addr: SocketAddr,
    name: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let stream = TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, stream)
        .await
}

/// The DER of the certificate the server presented on `s`.
pub fn peer_cert(s: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    s.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

/// A GET request for `uri` with `Host: host`.
pub fn get(uri: &str, host: &str) -> Request<Body> {
    Request::builder()
        .uri(uri)
        .header("host", host)
        .body(full(""))
        .unwrap()
}

/// Response header `name` as text, if present.
pub fn header<'r>(resp: &'r Response<Incoming>, name: &str) -> Option<&'r str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

/// What an [`Origin::echo`] origin saw for request header `name` (its `x-echo-h-<name>`
/// response header).
pub fn echoed<'r>(resp: &'r Response<Incoming>, name: &str) -> Option<&'r str> {
    header(resp, &format!("x-echo-h-{name}"))
}

/// Collects a response body.
pub async fn body_bytes(resp: Response<Incoming>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

/// How long any single awaited event in a test may take before [`guarded`] fails the test.
pub const GUARD: Duration = Duration::from_secs(10);

/// Awaits `f`, failing the test (naming `what`) if it takes longer than [`GUARD`], so a hang
/// shows up as a failure instead of a stuck test.
pub async fn guarded<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(GUARD, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: did not happen within {GUARD:?}"))
}

/// A raw HTTP/1.1 origin on 127.0.0.1:0 that answers every request head it reads on a
/// connection with the bytes `answer`, as they are. Returns its address, a count of the
/// connections it accepted, and its task.
pub async fn raw_origin(
    answer: &'static [u8],
) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.clear();
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted, task)
}

/// Sends raw bytes and returns everything the server sends until it closes the connection.
/// Bounded by `limit` seconds so a server that never closes fails the test instead of hanging.
pub async fn raw(addr: SocketAddr, bytes: &[u8], limit: u64) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    raw_until_closed(&mut s, limit).await
}

/// The status code of the first response in a raw HTTP/1.1 exchange.
pub fn raw_status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {resp:?}"))
}

/// The head of a raw HTTP/1.1 response, lower-cased, for header assertions: every line of it
/// ends in `\r\n`, so `contains("name: value\r\n")` matches a whole field.
pub fn raw_head_lower(resp: &str) -> String {
    let end = resp.find("\r\n\r\n").map_or(resp.len(), |i| i + 2);
    resp[..end].to_ascii_lowercase()
}

/// The body of a raw HTTP/1.1 response: everything after the head.
pub fn raw_body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Sends `GET <path>` for `example.test` on the kept-alive connection `s` and reads the one
/// response (see [`raw_read_response`], bounded by 5 seconds).
pub async fn raw_get(s: &mut TcpStream, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: example.test\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    raw_read_response(s, 5).await
}

/// Reads exactly one HTTP/1.1 response (head plus a `content-length` body) from `s`, leaving
/// the connection open. Bounded by `limit` seconds; panics if the server closes first.
pub async fn raw_read_response(s: &mut TcpStream, limit: u64) -> String {
    let read = async {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut byte).await.unwrap();
            assert!(
                n == 1,
                "server closed mid-response: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let len = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().unwrap())
            })
            .unwrap_or_else(|| panic!("response without content-length: {head:?}"));
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.unwrap();
        head + &String::from_utf8_lossy(&body)
    };
    tokio::time::timeout(Duration::from_secs(limit), read)
        .await
        .unwrap_or_else(|_| panic!("no complete response within {limit}s"))
}

/// Waits until the server closes `s` and returns what it sent before that (a reset counts as
/// a close). Bounded by `limit` seconds.
pub async fn raw_until_closed(s: &mut TcpStream, limit: u64) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(limit), s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "server did not close within {limit}s; got so far: {}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// Paths of the Wasm components built by `build.rs` (examples and test guests).
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// Runs `promtool check metrics` on `text`; its complaints, if it has any.
pub fn promtool(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool ({e}): install it with .ci/install-promtool.sh (Debian: prometheus)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.success() && said.trim().is_empty() {
        true => Ok(()),
        false => Err(said),
    }
}
