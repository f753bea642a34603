//! Lingering close, as nginx's `lingering_close`: when we close an HTTP/1.1 connection while the
//! client may still be sending (a 413 for a body we will not read, hyper's 400/431 for a head
//! it gave up on), closing at once with unread bytes in the socket makes the kernel send a
//! reset, and a client that writes its whole request before reading loses our error response
//! to it. So we first send FIN, then read and discard what the client still sends, for at most
//! `timeouts.lingering` and [`MAX_BYTES`], before the socket is closed.
//!
//! The wrapper sits directly on the TCP stream (under TLS, so discarded bytes are never
//! decrypted) and does the work when hyper drops the connection: the connection types hyper
//! returns for upgradeable HTTP/1.1 do not hand the IO back. It holds the connection's slot of
//! `limits.max_connections` until the socket is really closed.
//!
//! It lingers only when the close may cut a client off: bytes are waiting when the connection
//! is dropped, or a request with a body came on it, or hyper ended it on a parse error
//! ([`Activity::linger_on_close`]). A connection that ends in the client's FIN, or one closed
//! while idle with nothing pending, is closed at once.

use crate::activity::Activity;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};

/// At most this much is read and discarded from one lingering connection.
pub const MAX_BYTES: usize = 32 << 20;

/// What a lingering close needs besides the stream.
pub struct LingerCfg {
    /// Zero turns lingering off.
    pub time: Duration,
    /// Shutdown cuts lingering short.
    pub shutdown: watch::Receiver<bool>,
    /// The connection's `max_connections` slot, released when the socket closes.
    pub permit: OwnedSemaphorePermit,
    pub activity: Activity,
}

/// A client TCP stream that closes by lingering when that may save a response.
pub struct Lingering {
    stream: Option<TcpStream>,
    /// The client closed its side: nothing more can come.
    eof: bool,
    cfg: Option<LingerCfg>,
}

impl Lingering {
    pub fn new(stream: TcpStream, cfg: LingerCfg) -> Self {
        Lingering {
            stream: Some(stream),
            eof: false,
            cfg: Some(cfg),
        }
    }

    fn stream(&mut self) -> &mut TcpStream {
        self.stream.as_mut().expect("stream taken only on drop")
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(self.stream()).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() == before && buf.remaining() > 0
        {
            self.eof = true;
        }
        res
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()).poll_shutdown(cx)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let (Some(stream), Some(cfg)) = (self.stream.take(), self.cfg.take()) else {
            return;
        };
        if self.eof || cfg.time.is_zero() || cfg.activity.is_h2() {
            return;
        }
        // One non-blocking look: a FIN means done, waiting bytes mean the client is still
        // sending.
        let mut probe = [0u8; 1024];
        let pending = match stream.try_read(&mut probe) {
            Ok(0) => return,
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(_) => return,
        };
        if !pending && !cfg.activity.wants_linger() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(linger(stream, cfg));
        }
    }
}

/// Sends FIN, then discards what arrives until the client's FIN, an error, the byte bound, the
/// time bound or shutdown; the socket closes when this returns.
async fn linger(mut stream: TcpStream, mut cfg: LingerCfg) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = MAX_BYTES;
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let stop = async {
        if !*cfg.shutdown.borrow_and_update() {
            let _ = cfg.shutdown.changed().await;
        }
    };
    tokio::select! {
        _ = drain => {}
        _ = tokio::time::sleep(cfg.time) => {}
        _ = stop => {}
    }
    drop(cfg.permit);
}
