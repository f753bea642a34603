//! Connections to one upstream endpoint: dialling (TCP, optionally TLS with ALPN) and reuse.
//!
//! Written on hyper's low-level `client::conn` API rather than hyper-util's pooled `Client`:
//! profiles of the small keep-alive case showed the legacy client's per-request costs (a large
//! boxed request future copied on every call, a locked checkout, a task spawned per response
//! to hand the connection back). Here an HTTP/1.1 connection goes back to a LIFO idle stack the
//! moment our response body sees its end, and HTTP/2 shares one multiplexed connection.
//!
//! **One task per request path.** An HTTP/1.1 connection is not spawned as a task of its own:
//! the request's task drives it (hyper's connection future is polled by [`PooledConn`] while
//! waiting for the response head and by the response body while it streams), so a small
//! exchange crosses no task boundary and wakes no other task, as in nginx or Pingora. An idle
//! connection is polled once, without a waker, when it is taken from the stack (and by the
//! sweeper): that notices a close by the upstream that arrived meanwhile.
//!
//! A request that hyper reports as never written (the pooled connection closed under us) is
//! retried on the next idle connection or a fresh one: safe for any method, because the
//! upstream cannot have seen it.

use super::body::RequestBody;
use crate::config::UpstreamProtocol;
use crate::metrics::bump;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Why a request could not be exchanged with the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    #[error("{0}")]
    Http(#[source] hyper::Error),
}

/// A response head, and for HTTP/1.1 the connection to give back once its body is read.
pub type Sent = (Response<Incoming>, Option<PooledConn>);

/// A failed exchange, with the request when the upstream cannot have seen it.
pub type Unsent = (SendError, Option<Request<RequestBody>>);

/// A connection to an upstream endpoint.
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            UpstreamStream::Plain($s) => $e,
            UpstreamStream::Tls($s) => $e,
        }
    };
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// How to reach one endpoint.
pub struct Dialer {
    pub address: Arc<str>,
    pub connect_timeout: Duration,
    pub tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Dialer {
    /// TCP connect (and TLS handshake), each under the connect timeout.
    pub async fn dial(&self) -> io::Result<UpstreamStream> {
        let timed_out = |what: &str| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what} to {} timed out", self.address),
            )
        };
        let tcp = tokio::time::timeout(self.connect_timeout, tcp_connect(&self.address))
            .await
            .map_err(|_| timed_out("connect"))??;
        tcp.set_nodelay(true)?;
        Ok(match &self.tls {
            None => UpstreamStream::Plain(tcp),
            Some((connector, name)) => {
                let tls = tokio::time::timeout(
                    self.connect_timeout,
                    connector.connect(name.clone(), tcp),
                )
                .await
                .map_err(|_| timed_out("TLS handshake"))??;
                UpstreamStream::Tls(Box::new(tls))
            }
        })
    }
}

/// Connects to `host:port`: an IP literal directly, a name through the system resolver,
/// trying each resolved address in turn.
async fn tcp_connect(address: &str) -> io::Result<TcpStream> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return TcpStream::connect(addr).await;
    }
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{address} resolved to no address"),
    );
    for addr in tokio::net::lookup_host(address).await? {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Reuse policy for idle HTTP/1.1 connections.
#[derive(Debug, Clone, Copy)]
pub struct IdleLimits {
    pub max_idle: usize,
    pub idle_timeout: Duration,
}

/// hyper's HTTP/1.1 client connection state machine over our stream, with upgrades (its type,
/// `UpgradeableConnection`, cannot be named outside hyper, hence the trait object).
type H1Conn = dyn Future<Output = hyper::Result<()>> + Send;

/// An HTTP/1.1 connection: the handle requests are sent on and the state machine that does
/// the I/O, which whoever uses the connection drives (see the module docs).
struct H1 {
    sender: http1::SendRequest<RequestBody>,
    io: H1Io,
}

struct H1Io {
    /// Boxed once per connection (moving an `H1` around moves a few words). `None` once
    /// the future has ended (closed, failed or upgraded): dropping it fails whatever hyper
    /// still holds (a queued request, a body) instead of leaving it pending.
    conn: Option<Pin<Box<H1Conn>>>,
}

impl H1Io {
    /// Lets the connection do whatever I/O is possible now; `cx`'s task is woken when more
    /// is. Errors reach the pending response or body through hyper's channels.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = &mut self.conn {
            if let Poll::Ready(res) = conn.as_mut().poll(cx) {
                self.conn = None;
                if let Err(e) = res {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
            }
        }
    }

    fn ended(&self) -> bool {
        self.conn.is_none()
    }
}

impl H1 {
    /// [`H1Io::drive`] without a task to wake: notices a close that already happened.
    fn drive_now(&mut self) {
        self.io
            .drive(&mut Context::from_waker(std::task::Waker::noop()));
    }

    /// Ready for the next request.
    fn reusable(&self) -> bool {
        !self.io.ended() && self.sender.is_ready()
    }
}

/// Waits for `fut` (a response head) while driving `conn`. `fut` is polled without a waker:
/// only `conn` can complete it, and `conn` is polled right before.
struct Driven<'a, F> {
    fut: F,
    conn: &'a mut H1Io,
}

impl<F: Future + Unpin> Future for Driven<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let mut noop = Context::from_waker(std::task::Waker::noop());
        if let Poll::Ready(out) = Pin::new(&mut this.fut).poll(&mut noop) {
            return Poll::Ready(out);
        }
        this.conn.drive(cx);
        match Pin::new(&mut this.fut).poll(&mut noop) {
            // The connection has ended (and was dropped, failing the request): the future
            // resolves with the error now; the real waker is only for safety.
            Poll::Pending if this.conn.ended() => Pin::new(&mut this.fut).poll(cx),
            other => other,
        }
    }
}

struct Idle {
    h1: H1,
    since: Instant,
}

/// Idle HTTP/1.1 connections of one endpoint, most recently used on top, one stack per worker
/// slot (`crate::worker`): a connection's socket is registered with the reactor of the worker
/// that dialled it, so only that worker's requests reuse it (another worker would wait on a
/// foreign event loop for every readiness event). `max_idle` applies per worker, as nginx's
/// `keepalive` does per worker process.
pub struct H1Pool {
    idle: Mutex<Vec<VecDeque<Idle>>>,
    limits: IdleLimits,
}

impl H1Pool {
    fn new(limits: IdleLimits) -> Arc<H1Pool> {
        let pool = Arc::new(H1Pool {
            idle: Mutex::new(Vec::new()),
            limits,
        });
        // Close connections idle for longer than the timeout even when no traffic comes by.
        let weak = Arc::downgrade(&pool);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(sweep(weak, limits.idle_timeout));
        }
        pool
    }

    fn checkout(&self) -> Option<H1> {
        let slot = crate::worker::slot();
        loop {
            let mut c = self
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(slot)?
                .pop_back()?;
            // Outside the lock: this may read (an EOF) and close.
            c.h1.drive_now();
            if c.h1.reusable() && c.since.elapsed() < self.limits.idle_timeout {
                return Some(c.h1);
            }
        }
    }

    fn put(&self, h1: H1) {
        let slot = crate::worker::slot();
        let mut stacks = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if stacks.len() <= slot {
            stacks.resize_with(slot + 1, VecDeque::new);
        }
        let idle = &mut stacks[slot];
        if idle.len() >= self.limits.max_idle {
            // Keep the warm ones: drop the least recently used.
            idle.pop_front();
        }
        if self.limits.max_idle > 0 {
            idle.push_back(Idle {
                h1,
                since: Instant::now(),
            });
        }
    }

    fn expire(&self) {
        let mut stacks = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let timeout = self.limits.idle_timeout;
        for idle in stacks.iter_mut() {
            idle.retain_mut(|c| {
                c.h1.drive_now();
                c.h1.reusable() && c.since.elapsed() < timeout
            });
        }
    }
}

async fn sweep(pool: Weak<H1Pool>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.tick().await;
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(p) => p.expire(),
            None => return,
        }
    }
}

/// An HTTP/1.1 connection lent to one exchange. It must be driven ([`PooledConn::drive`])
/// while its response body is read; give it back with [`PooledConn::release`] once the body
/// has been read to its end. Dropping it instead closes the connection.
pub struct PooledConn {
    h1: H1,
    pool: Arc<H1Pool>,
    /// False when the response's framing was ambiguous: the connection is closed after it.
    reuse: bool,
}

/// A response head with both `Transfer-Encoding` and `Content-Length` (RFC 9112 §6.3 item
/// 3): hyper frames the body by `Transfer-Encoding`, as the RFC says; the `Content-Length`
/// is removed before the head goes downstream (where it would frame the body again, wrongly),
/// and the caller closes the connection afterwards, since such a response may be an attempt
/// at response splitting. (Conflicting `Content-Length` values are hyper's parse error.)
fn framing_conflict(headers: &mut http::HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers.remove(http::header::CONTENT_LENGTH).is_some()
}

impl PooledConn {
    /// Does the connection's pending I/O (the response body's bytes); see [`H1Io::drive`].
    pub fn drive(&mut self, cx: &mut Context<'_>) {
        self.h1.io.drive(cx);
    }

    pub fn release(mut self) {
        if !self.reuse {
            return;
        }
        self.h1.drive_now();
        if self.h1.reusable() {
            self.pool.put(self.h1);
            return;
        }
        if self.h1.io.ended() {
            return;
        }
        // The connection has not caught up with the end of the message yet (or our request
        // body is still being written): let it finish off the request path.
        let timeout = self.pool.limits.idle_timeout;
        tokio::spawn(async move {
            let ready = std::future::poll_fn(|cx| {
                self.h1.io.drive(cx);
                if self.h1.io.ended() {
                    return Poll::Ready(false);
                }
                self.h1.sender.poll_ready(cx).map(|r| r.is_ok())
            });
            if let Ok(true) = tokio::time::timeout(timeout, ready).await {
                self.pool.put(self.h1);
            }
        });
    }

    /// Hands the connection to a task of its own, for a 101 response: hyper completes the
    /// upgrade (gives the I/O to the response's `OnUpgrade`) only while it is polled.
    pub fn detach(self) {
        let mut io = self.h1.io;
        tokio::spawn(std::future::poll_fn(move |cx| {
            io.drive(cx);
            if io.ended() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }));
    }
}

/// The one shared HTTP/2 connection of an endpoint, replaced when it closes.
struct H2Shared {
    current: Mutex<Option<http2::SendRequest<RequestBody>>>,
    /// Serialises connecting so a burst makes one connection, not one per request.
    connecting: tokio::sync::Mutex<()>,
}

impl H2Shared {
    fn live(&self) -> Option<http2::SendRequest<RequestBody>> {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        cur.as_ref().filter(|s| !s.is_closed()).cloned()
    }
}

enum Transport {
    H1(Arc<H1Pool>),
    H2(H2Shared),
}

/// Sends requests to one endpoint over reused connections.
pub struct Upstream {
    dialer: Dialer,
    transport: Transport,
    /// Connections opened, reused and failed, for `/metrics`.
    pub stats: crate::metrics::ConnStats,
}

impl Upstream {
    /// How this endpoint is reached (for health checks, which use their own connections).
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    pub fn new(dialer: Dialer, protocol: UpstreamProtocol, limits: IdleLimits) -> Upstream {
        let transport = match protocol {
            UpstreamProtocol::Http1 => Transport::H1(H1Pool::new(limits)),
            UpstreamProtocol::Http2 => Transport::H2(H2Shared {
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
        };
        Upstream {
            dialer,
            transport,
            stats: Default::default(),
        }
    }

    /// Sends `req` and waits for the response head. For HTTP/1.1 the request URI must be in
    /// origin-form; for HTTP/2 it must carry scheme and authority.
    ///
    /// On failure the request comes back when the upstream cannot have seen it (the connect
    /// failed, or hyper never wrote it), so the caller may send it elsewhere.
    pub async fn send(&self, req: Request<RequestBody>) -> Result<Sent, Unsent> {
        match &self.transport {
            Transport::H1(pool) => self.send_h1(pool, req).await,
            Transport::H2(shared) => {
                let mut sender = match shared.live() {
                    Some(s) => {
                        bump(&self.stats.reused);
                        s
                    }
                    None => match Box::pin(self.h2_connect(shared)).await {
                        Ok(s) => s,
                        Err(e) => return Err((e, Some(req))),
                    },
                };
                match sender.try_send_request(req).await {
                    Ok(resp) => Ok((resp, None)),
                    Err(mut e) => {
                        let req = e.take_message();
                        Err((SendError::Http(e.into_error()), req))
                    }
                }
            }
        }
    }

    async fn send_h1(
        &self,
        pool: &Arc<H1Pool>,
        mut req: Request<RequestBody>,
    ) -> Result<Sent, Unsent> {
        loop {
            let (mut h1, reused) = match pool.checkout() {
                Some(s) => {
                    bump(&self.stats.reused);
                    (s, true)
                }
                // Boxed: the dial/TLS/handshake future is large and rare; inline it would make
                // every request's future (moved around by hyper) that much bigger.
                None => match Box::pin(self.connect_h1()).await {
                    Ok(s) => (s, false),
                    Err(e) => return Err((e, Some(req))),
                },
            };
            let fut = h1.sender.try_send_request(req);
            let sent = Driven {
                fut: std::pin::pin!(fut),
                conn: &mut h1.io,
            }
            .await;
            match sent {
                Ok(mut resp) => {
                    let reuse = !framing_conflict(resp.headers_mut());
                    return Ok((
                        resp,
                        Some(PooledConn {
                            h1,
                            pool: pool.clone(),
                            reuse,
                        }),
                    ));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the idle connection died under us. Bounded: every retry
                    // consumes an idle connection, and a fresh connection is not retried.
                    Some(r) if reused => req = r,
                    unsent => return Err((SendError::Http(e.into_error()), unsent)),
                },
            }
        }
    }

    async fn connect_h1(&self) -> Result<H1, SendError> {
        let connected = async {
            let stream = self.dialer.dial().await.map_err(SendError::Connect)?;
            http1::Builder::new()
                .max_buf_size(1 << 20)
                .handshake(TokioIo::new(stream))
                .await
                .map_err(SendError::Http)
        };
        let (sender, conn) = self.counted(connected.await)?;
        Ok(H1 {
            sender,
            io: H1Io {
                conn: Some(Box::pin(conn.with_upgrades())),
            },
        })
    }

    /// Counts a connection attempt's outcome.
    fn counted<T>(&self, r: Result<T, SendError>) -> Result<T, SendError> {
        bump(if r.is_ok() {
            &self.stats.opened
        } else {
            &self.stats.failed
        });
        r
    }

    /// Connects the shared h2 connection, unless another request did so while we waited.
    async fn h2_connect(
        &self,
        shared: &H2Shared,
    ) -> Result<http2::SendRequest<RequestBody>, SendError> {
        let _one_at_a_time = shared.connecting.lock().await;
        if let Some(s) = shared.live() {
            return Ok(s);
        }
        let connected = async {
            let stream = self.dialer.dial().await.map_err(SendError::Connect)?;
            http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .adaptive_window(true)
                .handshake(TokioIo::new(stream))
                .await
                .map_err(SendError::Http)
        };
        let (sender, conn) = self.counted(connected.await)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream h2 connection ended with an error");
            }
        });
        *shared.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
        Ok(sender)
    }
}
