//! Listening sockets: accept loop, connection limit, TLS termination, HTTP/1.1 and HTTP/2
//! serving (ALPN on TLS, prior knowledge on cleartext), client timeouts and graceful drain.

mod activity;
pub mod reload;
pub mod tls;

pub use activity::{Activity, RequestGuard, Verdict};

use crate::config::{Limits, ListenerConfig, Timeouts};
use crate::proxy::{ConnInfo, Proxy};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;

/// Binds a listening socket with SO_REUSEADDR and a deep backlog.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// What every connection of every listener shares.
pub struct Shared {
    pub proxy: Arc<Proxy>,
    pub timeouts: Timeouts,
    /// `limits.max_connections` across all listeners.
    pub connections: Arc<Semaphore>,
    /// Bounds how many over-limit connections we spend effort rejecting politely.
    rejecting: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
    pub drain: mpsc::Sender<()>,
    builders: Builders,
}

struct Builders {
    auto: auto::Builder<TokioExecutor>,
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: &Limits) -> Self {
        let make = || {
            let mut b = auto::Builder::new(TokioExecutor::new());
            b.http1()
                .timer(TokioTimer::new())
                .keep_alive(true)
                // Header and idle timeouts are ours (see activity.rs).
                .header_read_timeout(None)
                // Bounds the request head; hyper answers 431 past it.
                .max_buf_size(limits.max_request_header_size);
            b.http2()
                .timer(TokioTimer::new())
                .max_header_list_size(limits.max_request_header_size as u32)
                .max_concurrent_streams(256)
                .max_pending_accept_reset_streams(64)
                .adaptive_window(true);
            b
        };
        Builders {
            auto: make(),
            h1: make().http1_only(),
            h2: make().http2_only(),
        }
    }
}

impl Shared {
    pub fn new(
        proxy: Arc<Proxy>,
        timeouts: Timeouts,
        limits: Limits,
        shutdown: watch::Receiver<bool>,
        drain: mpsc::Sender<()>,
    ) -> Self {
        Shared {
            proxy,
            timeouts,
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            rejecting: Arc::new(Semaphore::new(1024)),
            shutdown,
            drain,
            builders: Builders::new(&limits),
        }
    }
}

/// One bound listener ready to run.
pub struct Listener {
    pub name: Arc<str>,
    pub tcp: TcpListener,
    pub tls: Option<TlsAcceptor>,
}

impl Listener {
    pub fn new(cfg: &ListenerConfig, tcp: TcpListener, tls: Option<TlsAcceptor>) -> Self {
        Listener {
            name: cfg.name.as_str().into(),
            tcp,
            tls,
        }
    }

    /// Accepts until shutdown is signalled.
    pub async fn run(self, shared: Arc<Shared>) {
        let mut shutdown = shared.shutdown.clone();
        loop {
            let accepted = tokio::select! {
                r = self.tcp.accept() => r,
                _ = shutdown.changed() => break,
            };
            let (stream, peer) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE/ENFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = %self.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
                reject_overloaded(stream, self.tls.is_some(), &shared);
                continue;
            };
            let shared = shared.clone();
            let tls = self.tls.clone();
            let name = self.name.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = serve(stream, peer, tls, name, &shared).await {
                    tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                }
            });
        }
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

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    listener: Arc<str>,
    shared: &Shared,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let activity = Activity::new(shared.drain.clone());
    match tls {
        None => {
            let info = ConnInfo {
                client: peer,
                tls: false,
                sni: None,
                listener,
                activity: activity.clone(),
            };
            let io = Tracked::new(stream, activity);
            serve_http(io, info, &shared.builders.auto, shared).await;
        }
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(shared.timeouts.client_header, acceptor.accept(stream));
            let tls = handshake.await.map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
            })??;
            let (_, session) = tls.get_ref();
            let sni = session.server_name().map(Arc::<str>::from);
            let builder = match session.alpn_protocol() {
                Some(b"h2") => &shared.builders.h2,
                Some(b"http/1.1") => &shared.builders.h1,
                _ => &shared.builders.auto,
            };
            let info = ConnInfo {
                client: peer,
                tls: true,
                sni,
                listener,
                activity: activity.clone(),
            };
            let io = Tracked::new(tls, activity);
            serve_http(io, info, builder, shared).await;
        }
    }
    Ok(())
}

use activity::Tracked;

async fn serve_http<I>(
    io: I,
    info: ConnInfo,
    builder: &auto::Builder<TokioExecutor>,
    shared: &Shared,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let activity = info.activity.clone();
    let proxy = shared.proxy.clone();
    let conn_info = info.clone();
    let service = hyper::service::service_fn(move |req| {
        let proxy = proxy.clone();
        let info = conn_info.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req, info).await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut shutdown = shared.shutdown.clone();
    let shutdown = shutdown.changed();
    tokio::pin!(shutdown);
    let (header, idle) = (shared.timeouts.client_header, shared.timeouts.client_idle);
    // One timer for the connection's life, moved as deadlines change (not one per wake-up).
    let watchdog = tokio::time::sleep(header.min(idle));
    tokio::pin!(watchdog);
    let mut closing = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(client = %info.client, error = %e, "connection error");
                }
                return;
            }
            _ = &mut shutdown, if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = &mut watchdog, if !closing => {
                match activity.check(Instant::now(), header, idle) {
                    Verdict::Wait(at) => watchdog.as_mut().reset(at.into()),
                    Verdict::Idle => {
                        conn.as_mut().graceful_shutdown();
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
