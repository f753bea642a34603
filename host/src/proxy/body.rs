//! The body sent back to the client.
//!
//! [`ResponseBody`] is either the upstream's stream or a small local body; it counts bytes and
//! writes the access-log line when the response is finished (or abandoned).

use crate::cache::Piece;
use crate::upstream::connection::PooledConn;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

pub use crate::upstream::body::{BodyTooLarge, BoxError, RequestBody};

/// What a response to a forwarded request holds until its body is done.
pub struct Held {
    pub in_flight: crate::balance::InFlight,
    pub retry: Option<crate::upstream::RetryPermit>,
}

/// Called once when a response body is finished or dropped, with the bytes sent.
pub trait OnComplete: Send + Sync + 'static {
    fn complete(&mut self, body_bytes: u64, finished: bool);
}

/// Raised when an upstream body stalls for longer than `timeouts.upstream_response`.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent no body bytes for {0:?}")]
pub struct UpstreamStalled(pub Duration);

/// Bounds the wait between two reads of an upstream body (what nginx calls
/// `proxy_read_timeout`). The timer is created only when a read has to wait, so a body that
/// arrives with its head costs no timer at all.
struct StallTimer {
    limit: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl StallTimer {
    /// Call when the body is pending: starts the countdown if data flowed since the last wait.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            let deadline = tokio::time::Instant::now() + self.limit;
            match &mut self.sleep {
                Some(s) => s.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        self.sleep
            .as_mut()
            .is_some_and(|s| s.as_mut().poll(cx).is_ready())
    }
}

enum Inner {
    /// The upstream's body and, for HTTP/1.1, the connection to give back once it is read.
    Upstream(Incoming, Option<PooledConn>, StallTimer),
    Full(Option<Bytes>),
    /// Another request's response, read as it is stored (`cache::Streaming`), and how many
    /// of its declared bytes are still to come.
    Streaming(UnboundedReceiver<Piece>, u64),
}

/// The response being read while it was stored ended short: its fetch failed.
#[derive(Debug)]
struct FetchFailed;

impl std::fmt::Display for FetchFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the upstream response being stored ended short")
    }
}

impl std::error::Error for FetchFailed {}

/// What the proxy sends to the client.
pub struct ResponseBody {
    inner: Inner,
    /// Released when the body is done: the endpoint's in-flight count, a retry permit.
    held: Option<Held>,
    bytes: u64,
    finished: bool,
    failed: bool,
    on_complete: Option<Box<dyn OnComplete>>,
    /// Stores the body in the cache as it streams by.
    fill: Option<crate::cache::Fill>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    /// The upstream's body; it fails if no bytes arrive for `stall_limit`.
    pub fn upstream(body: Incoming, conn: Option<PooledConn>, stall_limit: Duration) -> Self {
        let stall = StallTimer {
            limit: stall_limit,
            sleep: None,
            armed: false,
        };
        Self::with(Inner::Upstream(body, conn, stall))
    }

    pub fn full(bytes: Bytes) -> Self {
        Self::with(Inner::Full(Some(bytes).filter(|b| !b.is_empty())))
    }

    pub fn empty() -> Self {
        Self::with(Inner::Full(None))
    }

    /// Another request's response as the cache stores it, `length` bytes long.
    pub fn streaming(rx: UnboundedReceiver<Piece>, length: u64) -> Self {
        Self::with(Inner::Streaming(rx, length))
    }

    fn with(inner: Inner) -> Self {
        ResponseBody {
            inner,
            held: None,
            bytes: 0,
            finished: false,
            failed: false,
            on_complete: None,
            fill: None,
        }
    }

    /// Copies the body into the cache as it is sent; stored if it ends complete.
    pub fn fill(&mut self, fill: crate::cache::Fill) {
        self.fill = Some(fill);
    }

    /// Keeps `held` until the body is done.
    pub fn hold(&mut self, held: Held) {
        self.held = Some(held);
    }

    /// Runs `hook` once the body is done (fully sent, failed or dropped).
    pub fn set_on_complete(&mut self, hook: Box<dyn OnComplete>) {
        self.on_complete = Some(hook);
    }

    /// Ends the response once: gives a fully read upstream connection back for reuse (any
    /// other connection is dropped, which closes it) and runs the completion hook.
    fn done(&mut self) {
        // hyper stops polling once `is_end_stream` is true, so that also counts as finished.
        let finished = !self.failed && (self.finished || self.is_end_stream());
        if let Inner::Upstream(_, conn, _) = &mut self.inner {
            if let Some(conn) = conn.take() {
                if finished {
                    conn.release();
                }
            }
        }
        self.held = None;
        if let Some(fill) = self.fill.take() {
            fill.end(finished);
        }
        if let Some(mut hook) = self.on_complete.take() {
            hook.complete(self.bytes, finished);
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // The client went away while other requests read this response as it is stored:
        // finish reading it from the upstream for them, in a task of its own (bounded by the
        // stall timer and the body's declared length).
        let unfinished = !self.finished && !self.failed && !self.is_end_stream();
        if unfinished
            && matches!(self.inner, Inner::Upstream(..))
            && self.fill.as_ref().is_some_and(|f| f.has_readers())
        {
            if let Some(mut hook) = self.on_complete.take() {
                hook.complete(self.bytes, false);
            }
            let mut rest =
                ResponseBody::with(std::mem::replace(&mut self.inner, Inner::Full(None)));
            rest.fill = self.fill.take();
            rest.held = self.held.take();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    use http_body_util::BodyExt;
                    while let Some(Ok(_)) = rest.frame().await {}
                });
                return;
            }
            // No runtime to finish it on: `rest` drops here, ending its readers short.
        }
        self.done();
    }
}

/// The body's bytes come from the connection this task drives: drive it, then read.
fn drive_then_poll(
    body: &mut Incoming,
    conn: &mut Option<PooledConn>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
    if let Some(c) = conn {
        c.drive(cx);
    }
    Pin::new(body).poll_frame(cx)
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Upstream(b, conn, stall) => match drive_then_poll(b, conn, cx) {
                Poll::Ready(frame) => {
                    stall.armed = false;
                    frame.map(|r| r.map_err(BoxError::from))
                }
                Poll::Pending if stall.poll_expired(cx) => {
                    tracing::warn!(after = ?stall.limit, "upstream body stalled; aborting the response");
                    Some(Err(Box::new(UpstreamStalled(stall.limit)) as BoxError))
                }
                Poll::Pending => return Poll::Pending,
            },
            Inner::Full(b) => b.take().map(|d| Ok(Frame::data(d))),
            Inner::Streaming(_, 0) => None,
            Inner::Streaming(rx, left) => match rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Piece::Data(d))) => {
                    *left = left.saturating_sub(d.len() as u64);
                    Some(Ok(Frame::data(d)))
                }
                // Ended, complete or not, before the declared length: short.
                Poll::Ready(_) => Some(Err(Box::new(FetchFailed) as BoxError)),
            },
        };
        match &polled {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                    if let Some(fill) = &mut this.fill {
                        fill.data(d);
                    }
                }
            }
            Some(Err(_)) => {
                this.failed = true;
                this.done();
            }
            None => {
                this.finished = true;
                this.done();
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b, _, _) => b.is_end_stream(),
            Inner::Full(b) => b.is_none(),
            Inner::Streaming(_, left) => *left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b, _, _) => b.size_hint(),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Streaming(_, left) => SizeHint::with_exact(*left),
        }
    }
}
