//! Per-connection activity tracking for the client header and idle timeouts, and the drain
//! token that graceful shutdown waits on.
//!
//! hyper's own HTTP/1 `header_read_timeout` also runs while a keep-alive connection sits idle
//! between requests, so it cannot give separate header and idle timeouts (nginx's
//! `client_header_timeout` vs `keepalive_timeout`). We track it ourselves: the IO wrapper notes
//! reads, the service notes request start and end, and a watchdog in the connection task
//! decides when a connection is idle or stuck in a request head.

use pin_project_lite::pin_project;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

const NONE: u64 = u64::MAX;

#[derive(Debug)]
struct Inner {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last read or finished request.
    last_ms: AtomicU64,
    /// When the bytes of a not-yet-complete request head started arriving, or `NONE`.
    head_since_ms: AtomicU64,
    in_flight: AtomicU32,
    /// h2 multiplexes: a read between requests is a frame, not a slow head.
    h2: AtomicBool,
    /// Closing may cut off a client still sending: linger (`listener::linger`).
    linger: AtomicBool,
    /// Dropped with the last handle; graceful shutdown waits for all of these.
    _drain: mpsc::Sender<()>,
}

/// Shared by a connection's IO wrapper, its requests and any tunnel it turns into.
#[derive(Debug, Clone)]
pub struct Activity(Arc<Inner>);

/// What the watchdog should do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Check again at this instant.
    Wait(Instant),
    /// No request for `client_idle`: close gracefully.
    Idle,
    /// A request head has been arriving for longer than `client_header`: drop the connection.
    HeaderTimeout,
}

impl Activity {
    pub fn new(drain: mpsc::Sender<()>) -> Self {
        // A new connection is "in a request head" until the first request arrives, so a client
        // that connects and sends nothing is cut off after the header timeout, as in nginx.
        Activity(Arc::new(Inner {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            h2: AtomicBool::new(false),
            linger: AtomicBool::new(false),
            _drain: drain,
        }))
    }

    fn now_ms(&self) -> u64 {
        self.0.epoch.elapsed().as_millis() as u64
    }

    fn on_read(&self) {
        let now = self.now_ms();
        self.0.last_ms.store(now, Ordering::Relaxed);
        if self.0.in_flight.load(Ordering::Relaxed) == 0
            && !self.0.h2.load(Ordering::Relaxed)
            && self.0.head_since_ms.load(Ordering::Relaxed) == NONE
        {
            self.0.head_since_ms.store(now, Ordering::Relaxed);
        }
    }

    /// A request head is complete and the service was called.
    pub fn request_started(&self, version: http::Version) -> RequestGuard {
        self.0.in_flight.fetch_add(1, Ordering::Relaxed);
        self.0.head_since_ms.store(NONE, Ordering::Relaxed);
        if version == http::Version::HTTP_2 {
            self.0.h2.store(true, Ordering::Relaxed);
        }
        RequestGuard(Some(self.clone()))
    }

    /// An HTTP/1.1 request with a body, or a request head hyper rejected: when this connection
    /// closes, the client may still be sending.
    pub fn linger_on_close(&self) {
        if !self.0.linger.load(Ordering::Relaxed) {
            self.0.linger.store(true, Ordering::Relaxed);
        }
    }

    pub fn wants_linger(&self) -> bool {
        self.0.linger.load(Ordering::Relaxed)
    }

    /// The connection speaks HTTP/2: its preface arrived (or ALPN chose h2), or it carried an
    /// h2 request.
    pub fn is_h2(&self) -> bool {
        self.0.h2.load(Ordering::Relaxed)
    }

    pub fn mark_h2(&self) {
        self.0.h2.store(true, Ordering::Relaxed);
    }

    /// The connection became a tunnel; it stays busy until the guard drops.
    pub fn tunnel_started(&self) -> RequestGuard {
        self.request_started(http::Version::HTTP_11)
    }

    pub fn check(&self, now: Instant, header: Duration, idle: Duration) -> Verdict {
        let at = |ms: u64, d: Duration| self.0.epoch + Duration::from_millis(ms) + d;
        if self.0.in_flight.load(Ordering::Relaxed) > 0 {
            // Requests in progress are bounded by the upstream timeouts, not by these.
            return Verdict::Wait(now + idle);
        }
        let head = self.0.head_since_ms.load(Ordering::Relaxed);
        if head != NONE {
            let deadline = at(head, header);
            return if now >= deadline {
                Verdict::HeaderTimeout
            } else {
                Verdict::Wait(deadline)
            };
        }
        let deadline = at(self.0.last_ms.load(Ordering::Relaxed), idle);
        if now >= deadline {
            Verdict::Idle
        } else {
            Verdict::Wait(deadline)
        }
    }
}

/// Marks one request (or tunnel) in progress; ends it on [`RequestGuard::finish`] or drop.
#[derive(Debug)]
pub struct RequestGuard(Option<Activity>);

impl RequestGuard {
    pub fn finish(&mut self) {
        if let Some(a) = self.0.take() {
            let now = a.now_ms();
            a.0.last_ms.store(now, Ordering::Relaxed);
            a.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.finish();
    }
}

pin_project! {
    /// An IO stream that reports reads to an [`Activity`].
    pub struct Tracked<T> {
        #[pin]
        inner: T,
        activity: Activity,
    }
}

impl<T> Tracked<T> {
    pub fn new(inner: T, activity: Activity) -> Self {
        Tracked { inner, activity }
    }
}

impl<T: AsyncRead> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
