//! Listening sockets: accept loop, connection limit, TLS termination, HTTP/1.1 and HTTP/2
//! serving (ALPN on TLS, prior knowledge on cleartext), client timeouts and graceful drain.

pub mod h2guard;
pub mod linger;
pub mod reload;
pub mod set;
pub mod tls;
pub mod workers;

pub use crate::activity::{Activity, RequestGuard, Verdict};

use crate::config::{Limits, Timeouts};
use crate::metrics::ListenerStats;
use crate::proxy::body::ResponseBody;
use crate::proxy::{ConnInfo, Proxy};
use crate::upstream::body::BoxError;
use arc_swap::{ArcSwap, ArcSwapOption};
use h2guard::H2Guard;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use linger::{LingerCfg, Lingering};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;

/// The accept queue of every listening socket.
const BACKLOG: u32 = 4096;

/// Binds a listening socket with SO_REUSEADDR and a deep backlog.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    bind_socket(addr, false)?.listen(BACKLOG)
}

/// A socket bound to `addr` with SO_REUSEADDR, and SO_REUSEPORT when several sockets (one per
/// worker) are to share the address; not yet listening.
pub fn bind_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    Ok(socket)
}

/// What every connection of every listener shares.
pub struct Shared {
    /// What a config reload replaces. A connection loads it once when accepted and keeps it
    /// for its life, so a reload never changes the rules under a request in flight.
    settings: ArcSwap<Settings>,
    /// `limits.max_connections` across all listeners (resized by reloads, see
    /// [`Shared::reconfigure`]).
    pub connections: Arc<Semaphore>,
    max_connections: std::sync::Mutex<usize>,
    /// Bounds how many over-limit connections we spend effort rejecting politely.
    rejecting: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
    pub drain: mpsc::Sender<()>,
    pub accepted: Arc<Accepted>,
}

/// The reloadable part of [`Shared`]: the proxy (with its `[proxy]`, `[timeouts]` and
/// `[limits]` settings) and the HTTP builders made from the limits.
pub struct Settings {
    pub proxy: Arc<Proxy>,
    pub timeouts: Timeouts,
    builders: Builders,
}

impl Settings {
    pub fn new(proxy: Arc<Proxy>, timeouts: Timeouts, limits: &Limits) -> Settings {
        Settings {
            proxy,
            timeouts,
            builders: Builders::new(limits),
        }
    }
}

struct Builders {
    /// Cleartext: HTTP/1.1, or h2 when the client starts with the prior-knowledge preface.
    auto: auto::Builder<TokioExecutor>,
    /// TLS, by ALPN. hyper's own builders: hyper-util's `auto` with `http1_only` still
    /// sniffs for the h2 preface when serving with upgrades (0.1.21).
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

/// The HTTP/1.1 settings, on hyper's builder and on hyper-util's wrapper of it (same methods).
macro_rules! h1_settings {
    ($b:expr, $limits:expr) => {
        $b.timer(TokioTimer::new())
            .keep_alive(true)
            // Header and idle timeouts are ours (see activity.rs).
            .header_read_timeout(None)
            // Bounds the request head; hyper answers 431 past it.
            .max_buf_size($limits.max_request_header_size)
    };
}

macro_rules! h2_settings {
    ($b:expr, $limits:expr) => {
        $b.timer(TokioTimer::new())
            .max_header_list_size($limits.max_request_header_size as u32)
            .max_concurrent_streams(256)
            .max_pending_accept_reset_streams(64)
            .adaptive_window(true)
    };
}

impl Builders {
    fn new(limits: &Limits) -> Self {
        let mut auto = auto::Builder::new(TokioExecutor::new());
        h1_settings!(auto.http1(), limits);
        h2_settings!(auto.http2(), limits);
        let mut h1 = http1::Builder::new();
        h1_settings!(h1, limits);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2_settings!(h2, limits);
        Builders { auto, h1, h2 }
    }
}

impl Shared {
    pub fn new(
        settings: Settings,
        max_connections: usize,
        shutdown: watch::Receiver<bool>,
        drain: mpsc::Sender<()>,
        workers: usize,
    ) -> Self {
        Shared {
            settings: ArcSwap::from_pointee(settings),
            connections: Arc::new(Semaphore::new(max_connections)),
            max_connections: std::sync::Mutex::new(max_connections),
            rejecting: Arc::new(Semaphore::new(1024)),
            shutdown,
            drain,
            accepted: Arc::new(Accepted((0..=workers).map(|_| AtomicU64::new(0)).collect())),
        }
    }

    /// The settings new connections get.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// Applies a reloaded config to connections accepted from now on, and resizes the
    /// connection limit ([`resize`]: no open connection is cut).
    pub fn reconfigure(&self, settings: Settings, max_connections: usize) {
        self.settings.store(Arc::new(settings));
        let mut current = self
            .max_connections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        resize(&self.connections, *current, max_connections);
        *current = max_connections;
    }
}

/// Changes a semaphore of `from` permits in all to `to`. A smaller size takes the difference
/// out of the free permits now and, for the rest, out of permits as they are released: a
/// waiter gets released permits before anyone else (tokio's semaphore is fair), so the limit
/// holds from the moment the held permits are back to `to`, without taking any away.
fn resize(semaphore: &Arc<Semaphore>, from: usize, to: usize) {
    if to >= from {
        semaphore.add_permits(to - from);
        return;
    }
    let owed = (from - to) - semaphore.forget_permits(from - to);
    if owed > 0 {
        let semaphore = semaphore.clone();
        tokio::spawn(async move {
            if let Ok(p) = semaphore.acquire_many_owned(owed as u32).await {
                p.forget();
            }
        });
    }
}

/// Connections accepted, per worker slot (`crate::worker`; slot 0 is the shared runtime).
pub struct Accepted(Box<[AtomicU64]>);

impl Accepted {
    fn count(&self) {
        if let Some(n) = self.0.get(crate::worker::slot()) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One figure per worker in per-core mode; one in all for the shared runtime.
    pub fn snapshot(&self) -> Vec<u64> {
        let counts = self.0.iter().map(|a| a.load(Ordering::Relaxed));
        match self.0.len() {
            1 => counts.collect(),
            _ => counts.skip(1).collect(),
        }
    }
}

/// A configured listener as its accept loops see it (one loop, or one per worker in per-core
/// mode). A reload that keeps the listener's address keeps its sockets and this state, and may
/// swap its TLS settings; one that removes or moves it stops its loops.
pub struct ListenerState {
    /// Its name and counters.
    pub stats: Arc<ListenerStats>,
    tls: ArcSwapOption<TlsAcceptor>,
    stop: watch::Sender<bool>,
}

impl ListenerState {
    pub fn new(stats: Arc<ListenerStats>, tls: Option<TlsAcceptor>) -> Arc<ListenerState> {
        Arc::new(ListenerState {
            stats,
            tls: ArcSwapOption::from(tls.map(Arc::new)),
            stop: watch::Sender::new(false),
        })
    }

    /// TLS for the connections it accepts from now on (`None`: cleartext).
    pub fn set_tls(&self, tls: Option<TlsAcceptor>) {
        self.tls.store(tls.map(Arc::new));
    }

    /// Stops accepting: the listening sockets close when their loops end; connections
    /// already accepted go on.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// One listening socket of a listener, ready to run.
pub struct Listener {
    pub state: Arc<ListenerState>,
    pub tcp: TcpListener,
}

impl Listener {
    pub fn new(state: Arc<ListenerState>, tcp: TcpListener) -> Self {
        Listener { state, tcp }
    }

    /// Accepts until shutdown or [`ListenerState::stop`].
    pub async fn run(self, shared: Arc<Shared>) {
        let mut shutdown = shared.shutdown.clone();
        let mut stop = self.state.stop.subscribe();
        let stats = &self.state.stats;
        loop {
            if *stop.borrow_and_update() {
                break;
            }
            let accepted = tokio::select! {
                r = self.tcp.accept() => r,
                _ = shutdown.changed() => break,
                _ = stop.changed() => continue,
            };
            let (stream, peer) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE/ENFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = %stats.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            shared.accepted.count();
            stats.accepted();
            let tls = self.state.tls.load_full();
            let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
                // Not served: it never counts as open.
                stats.closed();
                reject_overloaded(stream, tls.is_some(), &shared);
                continue;
            };
            let shared = shared.clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                let _closed = Closed(&stats);
                let settings = shared.settings();
                let tls = tls.as_deref();
                if let Err(e) = serve(stream, peer, permit, tls, &stats, &shared, &settings).await {
                    tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                }
            });
        }
    }
}

/// Counts a connection as closed when its task ends (whichever way it ends).
struct Closed<'a>(&'a ListenerStats);

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        self.0.closed();
    }
}

/// Over `max_connections`: answer a cleartext client with a 503 and close; close TLS clients
/// at once (a handshake to say "busy" would cost what we are short of).
fn reject_overloaded(stream: TcpStream, tls: bool, shared: &Shared) {
    tracing::warn!("connection limit reached; rejecting a connection");
    let Ok(permit) = shared.rejecting.clone().try_acquire_owned() else {
        return;
    };
    if tls {
        return;
    }
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let mut buf = [0u8; 4096];
        // Read what the client sent first so closing does not turn into a reset.
        let _ = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await;
        let body = "503 Service Unavailable\n";
        let resp = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
            body.len()
        );
        let _ =
            tokio::time::timeout(Duration::from_secs(1), stream.write_all(resp.as_bytes())).await;
        let _ = stream.shutdown().await;
    });
}

/// Serves one accepted connection; `permit` (its `max_connections` slot) is held until the
/// socket is closed, lingering included.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
    tls: Option<&TlsAcceptor>,
    listener: &Arc<ListenerStats>,
    shared: &Shared,
    settings: &Settings,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let activity = Activity::new(shared.drain.clone());
    let stream = Lingering::new(
        stream,
        LingerCfg {
            time: settings.timeouts.lingering,
            shutdown: shared.shutdown.clone(),
            permit,
            activity: activity.clone(),
        },
    );
    match tls {
        None => {
            let listener = listener.clone();
            let info = Arc::new(ConnInfo::new(peer, false, None, listener, activity.clone()));
            // HTTP/1.1 or prior-knowledge h2: the guard watches only the latter.
            let guard = H2Guard::new(Tracked::new(stream, activity.clone()), false, activity);
            let io = TokioIo::new(guard);
            let svc = proxy_service(settings, &info);
            let conn = settings
                .builders
                .auto
                .serve_connection_with_upgrades(io, svc);
            serve_http(info, shared, settings, conn).await;
        }
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(settings.timeouts.client_header, acceptor.accept(stream));
            let tls = handshake
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))
                .and_then(|r| r)
                .inspect_err(|_| listener.tls_failed())?;
            let (_, session) = tls.get_ref();
            listener.tls_done(match session.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_2) => 0,
                _ => 1,
            });
            let sni = session.server_name().map(Arc::<str>::from);
            // ALPN decides; without it a TLS connection is HTTP/1.1 (RFC 9113 §3.2: h2 over
            // TLS needs ALPN, prior knowledge is for cleartext), so no preface sniffing here.
            let h2 = session.alpn_protocol() == Some(b"h2");
            let listener = listener.clone();
            let info = Arc::new(ConnInfo::new(peer, true, sni, listener, activity.clone()));
            let io = Tracked::new(tls, activity);
            let (b, svc) = (&settings.builders, proxy_service(settings, &info));
            if h2 {
                let io = TokioIo::new(H2Guard::new(io, true, info.activity.clone()));
                serve_http(info, shared, settings, b.h2.serve_connection(io, svc)).await;
            } else {
                let io = TokioIo::new(io);
                let conn = b.h1.serve_connection(io, svc).with_upgrades();
                serve_http(info, shared, settings, conn).await;
            }
        }
    }
    Ok(())
}

/// A served connection that can be asked to finish its in-flight requests and close.
trait Graceful: Future<Output = Result<(), Self::Error>> {
    type Error: std::fmt::Display;
    fn graceful(self: Pin<&mut Self>);
}

macro_rules! graceful {
    ($ty:ty, $err:ty, [$($gen:tt)*], [$($bounds:tt)*]) => {
        impl<$($gen)*> Graceful for $ty
        where
            $($bounds)*
        {
            type Error = $err;
            fn graceful(self: Pin<&mut Self>) {
                self.graceful_shutdown();
            }
        }
    };
}
graceful!(
    auto::UpgradeableConnection<'_, I, S, E>,
    BoxError,
    [I, S, E, B],
    [
        S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>,
        S::Future: 'static,
        S::Error: Into<BoxError>,
        B: hyper::body::Body + 'static,
        B::Error: Into<BoxError>,
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        E: hyper_util::server::conn::auto::HttpServerConnExec<S::Future, B>,
    ]
);
graceful!(
    http1::UpgradeableConnection<I, S>,
    hyper::Error,
    [I, S, B],
    [
        S: hyper::service::HttpService<Incoming, ResBody = B>,
        S::Error: Into<BoxError>,
        B: hyper::body::Body + 'static,
        B::Error: Into<BoxError>,
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    ]
);
graceful!(
    http2::Connection<I, S, E>,
    hyper::Error,
    [I, S, E, B],
    [
        S: hyper::service::HttpService<Incoming, ResBody = B>,
        S::Error: Into<BoxError>,
        B: hyper::body::Body + 'static,
        B::Error: Into<BoxError>,
        I: hyper::rt::Read + hyper::rt::Write + Unpin,
        E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
    ]
);

use crate::activity::Tracked;

/// The proxy as hyper's service for one client connection.
fn proxy_service(
    settings: &Settings,
    info: &Arc<ConnInfo>,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = http::Response<ResponseBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<http::Response<ResponseBody>, Infallible>> + Send + 'static,
> + Clone
+ Send
+ 'static {
    let (proxy, info) = (settings.proxy.clone(), info.clone());
    hyper::service::service_fn(move |req| {
        let proxy = proxy.clone();
        let info = info.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req, info).await) }
    })
}

/// Drives one served connection until it ends, the proxy shuts down (graceful close) or the
/// watchdog finds it idle or stuck in a request head.
async fn serve_http<C: Graceful>(
    info: Arc<ConnInfo>,
    shared: &Shared,
    settings: &Settings,
    conn: C,
) {
    let activity = info.activity.clone();
    tokio::pin!(conn);
    let mut shutdown = shared.shutdown.clone();
    let shutdown = shutdown.changed();
    tokio::pin!(shutdown);
    let (header, idle) = (
        settings.timeouts.client_header,
        settings.timeouts.client_idle,
    );
    // One timer for the connection's life, moved as deadlines change (not one per wake-up).
    let watchdog = tokio::time::sleep(header.min(idle));
    tokio::pin!(watchdog);
    let mut closing = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(client = %info.client, error = %e, "connection error");
                    // hyper answered a bad head (400/431) and stopped reading it.
                    activity.linger_on_close();
                }
                return;
            }
            _ = &mut shutdown, if !closing => {
                conn.as_mut().graceful();
                closing = true;
            }
            _ = &mut watchdog, if !closing => {
                match activity.check(Instant::now(), header, idle) {
                    Verdict::Wait(at) => watchdog.as_mut().reset(at.into()),
                    Verdict::Idle => {
                        conn.as_mut().graceful();
                        closing = true;
                    }
                    Verdict::HeaderTimeout => {
                        tracing::debug!(client = %info.client, "client header timeout");
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_smaller_connection_limit_waits_for_held_slots() {
        let sem = Arc::new(Semaphore::new(4));
        let held: Vec<_> = (0..3)
            .map(|_| sem.clone().try_acquire_owned().unwrap())
            .collect();
        // 3 held, 1 free; down to 2: the free one goes now, one more when released.
        resize(&sem, 4, 2);
        assert_eq!(sem.available_permits(), 0);
        // Let the task that waits for the other one queue up.
        tokio::task::yield_now().await;
        let mut held = held.into_iter();
        drop(held.next());
        assert_eq!(
            sem.available_permits(),
            0,
            "the first one back is taken away"
        );
        drop(held.next());
        assert_eq!(sem.available_permits(), 1);
        drop(held);
        assert_eq!(sem.available_permits(), 2);
        // Growing adds at once.
        resize(&sem, 2, 5);
        assert_eq!(sem.available_permits(), 5);
    }
}
