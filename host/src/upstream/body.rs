//! The body sent upstream.
//!
//! [`RequestBody`] streams the client's body upstream and enforces `max_request_body` as bytes
//! flow, so a chunked upload that grows too large fails without ever being buffered.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

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
