//! A watch on the HTTP/2 frames a client sends, below hyper: the connection preface, and
//! floods of frames that cost the server work but carry no request.
//!
//! hyper's server (h2 0.4) answers every PING and SETTINGS frame and accepts any number of
//! PRIORITY, RST_STREAM, WINDOW_UPDATE and empty DATA frames; its own limits cover resets of
//! streams it has not accepted yet (`max_pending_accept_reset_streams`) and header blocks
//! (CONTINUATION). Measured before this guard: 100,000 PINGs on one connection all answered,
//! 50,000 SETTINGS without a GOAWAY. Those are CVE-2019-9512 (ping flood), -9515 (settings
//! flood), -9518 (empty frames) and -9511/-9517 (window abuse). The guard reads only the
//! 9-byte frame headers as bytes pass (RFC 9113 §4.1), so it costs a branch per read and a
//! few instructions per frame, and cuts an offending connection with a GOAWAY.
//!
//! Written here rather than taken from a crate: none sits between hyper and the socket, and
//! the h2 crate exposes no hook for frame rates.
//!
//! Limits (per connection):
//! - **Control frames** (PING, SETTINGS, PRIORITY, RST_STREAM, DATA without payload or
//!   END_STREAM): a token bucket of [`CONTROL_BURST`] refilled at [`CONTROL_PER_SECOND`]. A
//!   browser or gRPC client sends a handful per second; a flood runs dry in milliseconds.
//!   Past it: GOAWAY `ENHANCE_YOUR_CALM` and close.
//! - **WINDOW_UPDATE** frames: at most [`WINDOW_UPDATE_SLACK`] plus
//!   [`WINDOW_UPDATES_PER_DATA`] for every DATA frame we sent (Envoy's rule for the same
//!   abuse): a client that reads our data has a reason to send one per stream and one for
//!   the connection; one that sends them without reading does not.
//! - **Preface** (ALPN `h2` over TLS): bytes that are not the client preface (RFC 9113 §3.4)
//!   get GOAWAY `PROTOCOL_ERROR` (the RFC makes it optional; strict conformance suites
//!   expect it). On cleartext a connection that does not start with the preface is
//!   HTTP/1.1 and the guard steps aside.
//!
//! The GOAWAY goes out at once, only at a frame boundary of what hyper has written, and only if the
//! socket takes it at once (an attacker that stops reading gets a plain close).

use crate::activity::Activity;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const CONTROL_BURST: u32 = 2000;
pub const CONTROL_PER_SECOND: u32 = 1000;
pub const WINDOW_UPDATE_SLACK: u64 = 1000;
pub const WINDOW_UPDATES_PER_DATA: u64 = 4;

const PROTOCOL_ERROR: u32 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Frame types (RFC 9113 §6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;

/// Frame boundaries in a byte stream: feeds bytes, reports each frame header.
#[derive(Default)]
struct Frames {
    head: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    skip: usize,
}

/// One frame header: payload length, type, flags, stream id.
type Head = (u32, u8, u8, u32);

impl Frames {
    /// Passes `bytes`; `on` sees every frame header completed in them and may stop the scan
    /// by returning false.
    fn feed(&mut self, mut bytes: &[u8], mut on: impl FnMut(Head) -> bool) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                self.have = 0;
                let h = &self.head;
                let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                self.skip = len as usize;
                if !on((len, h[3], h[4], stream)) {
                    return;
                }
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.have == 0 && self.skip == 0
    }
}

enum Mode {
    /// Comparing the first bytes with the preface; `required` on an ALPN-h2 connection.
    Preface {
        matched: usize,
        required: bool,
    },
    /// Not HTTP/2 (cleartext HTTP/1.1): nothing to watch.
    Off,
    Watching,
    /// Cut: the GOAWAY (code) is sent if it can be, then every read and write fails.
    Cut(u32),
}

pin_project_lite::pin_project! {
    /// An HTTP/2 connection's stream with the guard in front of hyper.
    #[project = H2GuardProj]
    pub struct H2Guard<T> {
        #[pin]
        inner: T,
        mode: Mode,
        read: Frames,
        written: Frames,
        tokens: u32,
        refilled: Instant,
        window_updates: u64,
        data_sent: u64,
        last_stream: u32,
        goaway_tried: bool,
        // Told once the connection is known to be HTTP/2 (a closing h2 connection does not
        // linger, and its reads between requests are frames, not a slow head).
        activity: Activity,
    }
}

impl<T> H2Guard<T> {
    /// `required`: the connection is HTTP/2 by ALPN, so anything but the preface is an error;
    /// otherwise (cleartext) the guard watches only connections that start with it.
    pub fn new(inner: T, required: bool, activity: Activity) -> Self {
        if required {
            activity.mark_h2();
        }
        H2Guard {
            inner,
            mode: Mode::Preface {
                matched: 0,
                required,
            },
            read: Frames::default(),
            written: Frames::default(),
            tokens: CONTROL_BURST,
            refilled: Instant::now(),
            window_updates: 0,
            data_sent: 0,
            last_stream: 0,
            goaway_tried: false,
            activity,
        }
    }
}

fn cut_error(code: u32) -> io::Error {
    let what = if code == PROTOCOL_ERROR {
        "invalid HTTP/2 connection preface"
    } else {
        "HTTP/2 control frame flood"
    };
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// On a cut connection, whichever of hyper's reads or writes comes first sends the GOAWAY
/// (once, at a frame boundary, without waiting: a peer that does not read gets a plain
/// close); then everything fails with the reason.
fn say_goaway<T: AsyncWrite>(
    this: H2GuardProj<'_, T>,
    cx: &mut Context<'_>,
    code: u32,
) -> io::Error {
    if !*this.goaway_tried {
        *this.goaway_tried = true;
        if this.written.at_boundary() {
            let frame = goaway(*this.last_stream, code);
            let mut inner = this.inner;
            if let Poll::Ready(Ok(n)) = inner.as_mut().poll_write(cx, &frame) {
                if n == frame.len() {
                    let _ = inner.as_mut().poll_flush(cx);
                }
            }
        }
    }
    cut_error(code)
}

/// GOAWAY (RFC 9113 §6.8) on stream 0: last stream id, error code.
fn goaway(last_stream: u32, code: u32) -> [u8; 17] {
    let mut f = [0u8; 17];
    f[..5].copy_from_slice(&[0, 0, 8, 0x7, 0]);
    f[9..13].copy_from_slice(&last_stream.to_be_bytes());
    f[13..].copy_from_slice(&code.to_be_bytes());
    f
}

impl<T: AsyncRead + AsyncWrite> AsyncRead for H2Guard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        if let Mode::Cut(code) = *this.mode {
            return Poll::Ready(Err(say_goaway(this, cx, code)));
        }
        let before = buf.filled().len();
        let res = this.inner.as_mut().poll_read(cx, buf);
        if !matches!(res, Poll::Ready(Ok(()))) {
            return res;
        }
        let mut new = &buf.filled()[before..];
        if let Mode::Preface { matched, required } = this.mode {
            let n = (PREFACE.len() - *matched).min(new.len());
            if new[..n] != PREFACE[*matched..*matched + n] {
                if *required {
                    *this.mode = Mode::Cut(PROTOCOL_ERROR);
                    // Nothing of it reaches hyper.
                    buf.set_filled(before);
                    return Poll::Ready(Err(say_goaway(this, cx, PROTOCOL_ERROR)));
                }
                *this.mode = Mode::Off;
                return res;
            }
            *matched += n;
            new = &new[n..];
            if *matched < PREFACE.len() {
                return res;
            }
            *this.mode = Mode::Watching;
            this.activity.mark_h2();
        }
        if !matches!(this.mode, Mode::Watching) {
            return res;
        }
        let mut flood = false;
        let (tokens, refilled, updates, sent, last) = (
            &mut *this.tokens,
            &mut *this.refilled,
            &mut *this.window_updates,
            *this.data_sent,
            &mut *this.last_stream,
        );
        this.read.feed(new, |(len, kind, flags, stream)| {
            let control = match kind {
                PING | SETTINGS | PRIORITY | RST_STREAM => true,
                DATA => len == 0 && flags & END_STREAM == 0,
                HEADERS => {
                    *last = (*last).max(stream);
                    false
                }
                WINDOW_UPDATE => {
                    *updates += 1;
                    if *updates > WINDOW_UPDATE_SLACK + WINDOW_UPDATES_PER_DATA * sent {
                        flood = true;
                    }
                    false
                }
                _ => false,
            };
            if control {
                if *tokens == 0 {
                    let now = Instant::now();
                    let ms = now.duration_since(*refilled).as_millis() as u64;
                    let add = ms * u64::from(CONTROL_PER_SECOND) / 1000;
                    if add > 0 {
                        *tokens = add.min(u64::from(CONTROL_BURST)) as u32;
                        *refilled = now;
                    }
                }
                match tokens.checked_sub(1) {
                    Some(t) => *tokens = t,
                    None => flood = true,
                }
            }
            !flood
        });
        if flood {
            tracing::debug!("HTTP/2 frame flood: sending GOAWAY and closing");
            *this.mode = Mode::Cut(ENHANCE_YOUR_CALM);
            // What was read never reaches hyper.
            buf.set_filled(before);
            return Poll::Ready(Err(say_goaway(this, cx, ENHANCE_YOUR_CALM)));
        }
        res
    }
}

/// Notes the frames hyper has written (the first `n` bytes of `bufs`): where the frame
/// boundaries are (for the GOAWAY) and how many DATA frames went out (for WINDOW_UPDATE).
fn note_written<'b>(
    mode: &Mode,
    written: &mut Frames,
    data_sent: &mut u64,
    bufs: impl IntoIterator<Item = &'b [u8]>,
    mut n: usize,
) {
    if !matches!(mode, Mode::Watching | Mode::Preface { .. }) {
        return;
    }
    for b in bufs {
        if n == 0 {
            break;
        }
        let part = &b[..b.len().min(n)];
        n -= part.len();
        written.feed(part, |(_, kind, _, _)| {
            *data_sent += u64::from(kind == DATA);
            true
        });
    }
}

impl<T: AsyncWrite> AsyncWrite for H2Guard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        if let Mode::Cut(code) = *this.mode {
            return Poll::Ready(Err(say_goaway(this, cx, code)));
        }
        let mut this = this;
        let res = this.inner.as_mut().poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            note_written(this.mode, this.written, this.data_sent, [buf], n);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        if let Mode::Cut(code) = *this.mode {
            return Poll::Ready(Err(say_goaway(this, cx, code)));
        }
        let mut this = this;
        let res = this.inner.as_mut().poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            let slices = bufs.iter().map(|b| &**b);
            note_written(this.mode, this.written, this.data_sent, slices, n);
        }
        res
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers_across_reads() {
        let mut f = Frames::default();
        let mut seen = Vec::new();
        // A PING (8-byte payload), then a DATA frame of 3 bytes, fed one byte at a time.
        let mut bytes = vec![0, 0, 8, PING, 0, 0, 0, 0, 0];
        bytes.extend([7u8; 8]);
        bytes.extend([0, 0, 3, DATA, 1, 0, 0, 0, 5, b'a', b'b', b'c']);
        for b in &bytes {
            f.feed(std::slice::from_ref(b), |h| {
                seen.push(h);
                true
            });
        }
        assert_eq!(seen, vec![(8, PING, 0, 0), (3, DATA, 1, 5)]);
        assert!(f.at_boundary());
    }

    #[test]
    fn goaway_frame_layout() {
        let g = goaway(7, ENHANCE_YOUR_CALM);
        assert_eq!(&g[..9], &[0, 0, 8, 7, 0, 0, 0, 0, 0]);
        assert_eq!(&g[9..], &[0, 0, 0, 7, 0, 0, 0, 0xb]);
    }
}
