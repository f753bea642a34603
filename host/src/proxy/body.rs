//! Body types on both sides of the proxy.
//!
//! [`RequestBody`] streams the client's body upstream and enforces `max_request_body` as bytes
//! flow, so a chunked upload that grows too large fails without ever being buffered.
//! [`ResponseBody`] is either the upstream's stream or a small local body; it counts bytes and
//! writes the access-log line when the response is finished (or abandoned).

use super::connection::PooledConn;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Raised by [`RequestBody`] when the client sends more than the limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// The client's request body on its way upstream: streamed with a running size limit, or
/// buffered (small bodies of requests that may be retried, so they can be sent again).
#[derive(Debug)]
pub struct RequestBody {
    inner: Source,
    remaining: u64,
    limit: u64,
}

#[derive(Debug)]
enum Source {
    Stream(Incoming),
    /// Data, then trailers; each taken as it is sent.
    Buffered(Option<Bytes>, Option<http::HeaderMap>),
    Done,
}

impl RequestBody {
    pub fn new(inner: Incoming, limit: u64) -> Self {
        RequestBody {
            inner: Source::Stream(inner),
            remaining: limit,
            limit,
        }
    }

    pub fn empty() -> Self {
        RequestBody {
            inner: Source::Done,
            remaining: 0,
            limit: 0,
        }
    }

    /// Reads the whole body (at most `limit` bytes) so that it can be replayed.
    pub async fn buffer(inner: Incoming, limit: u64) -> Result<RequestBody, BoxError> {
        use http_body_util::BodyExt;
        let collected = http_body_util::Limited::new(inner, limit as usize)
            .collect()
            .await?;
        let trailers = collected.trailers().cloned();
        let data = collected.to_bytes();
        Ok(RequestBody {
            inner: Source::Buffered(Some(data).filter(|d| !d.is_empty()), trailers),
            remaining: 0,
            limit,
        })
    }

    /// A copy to send again, if the body is buffered or empty and nothing of it was sent yet.
    pub fn replay(&self) -> Option<RequestBody> {
        let inner = match &self.inner {
            Source::Stream(_) => return None,
            Source::Buffered(d, t) => Source::Buffered(d.clone(), t.clone()),
            Source::Done => Source::Done,
        };
        Some(RequestBody {
            inner,
            remaining: self.remaining,
            limit: self.limit,
        })
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let inner = match &mut this.inner {
            Source::Stream(inner) => inner,
            Source::Buffered(data, trailers) => {
                let frame = match data.take() {
                    Some(d) => Some(Frame::data(d)),
                    None => trailers.take().map(Frame::trailers),
                };
                if frame.is_none() {
                    this.inner = Source::Done;
                }
                return Poll::Ready(frame.map(Ok));
            }
            Source::Done => return Poll::Ready(None),
        };
        match ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.remaining {
                        this.inner = Source::Done;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: this.limit,
                        }))));
                    }
                    this.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Source::Stream(b) => b.is_end_stream(),
            Source::Buffered(d, t) => d.is_none() && t.is_none(),
            Source::Done => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Stream(b) => b.size_hint(),
            Source::Buffered(d, _) => {
                SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64))
            }
            Source::Done => SizeHint::with_exact(0),
        }
    }
}

/// What a response to a forwarded request holds until its body is done.
pub struct Held {
    pub in_flight: crate::balance::InFlight,
    pub retry: Option<super::upstream::RetryPermit>,
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
}

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
        self.done();
    }
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
            Inner::Upstream(b, _, stall) => match Pin::new(b).poll_frame(cx) {
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
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b, _, _) => b.size_hint(),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
