//! Hostile HTTP/2 clients, with raw frames over real sockets: an invalid connection preface
//! over TLS (GOAWAY PROTOCOL_ERROR), and floods of PING, SETTINGS, empty DATA,
//! WINDOW_UPDATE, rapid resets and CONTINUATION. Each offending connection is cut with a
//! GOAWAY long before the flood is through, and a well-behaved client on another connection
//! is served meanwhile. The preface, PING, SETTINGS and WINDOW_UPDATE cases fail without the
//! proxy's frame guard (host/src/listener/h2guard.rs); empty DATA, rapid reset and
//! CONTINUATION are also cut by hyper's own limits, and stay here so a change of either
//! cannot open them again.

use sluice_tests::*;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const PROTOCOL_ERROR: u32 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;
/// The guard's control-frame burst (host/src/listener/h2guard.rs); a cut connection has had
/// at most about this many answered.
const BURST: usize = 2000;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// A GET for `/` on `stream`, its header block from the HPACK static table (RFC 7541
/// Appendix A) and one literal: `:method GET`, `:scheme http`, `:path /`, `:authority`.
fn get_headers(stream: u32, flags: u8) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 12];
    block.extend(b"example.test");
    frame(HEADERS, flags, stream, &block)
}

/// What the server sent until it closed the connection or sent GOAWAY.
#[derive(Debug, Default)]
struct Seen {
    /// Frames by type (index = type, 0..=9).
    frames: [usize; 10],
    goaway: Option<u32>,
}

async fn read_frames(mut r: impl AsyncRead + Unpin) -> Seen {
    let mut seen = Seen::default();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let kind = buf[3];
            if let Some(n) = seen.frames.get_mut(kind as usize) {
                *n += 1;
            }
            if kind == GOAWAY && len >= 8 {
                seen.goaway = Some(u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]));
                return seen;
            }
            buf.drain(..9 + len);
        }
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Opens an h2 connection (preface and an empty SETTINGS), then writes `flood` `times` over,
/// in batches, while reading what comes back. Returns what was read.
async fn flood<S>(io: S, opening: Vec<u8>, flood: Vec<u8>, times: usize) -> Seen
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, mut w) = tokio::io::split(io);
    let writer = tokio::spawn(async move {
        let mut start = PREFACE.to_vec();
        start.extend(frame(SETTINGS, 0, 0, &[]));
        start.extend(opening);
        if w.write_all(&start).await.is_err() {
            return;
        }
        let batch = flood.repeat(1000);
        for _ in 0..times.div_ceil(1000) {
            // The server closing the connection ends the flood.
            if w.write_all(&batch).await.is_err() {
                return;
            }
        }
    });
    let seen = guarded("the connection is cut", read_frames(r)).await;
    writer.abort();
    seen
}

async fn h2c_flood(addr: SocketAddr, opening: Vec<u8>, frames: Vec<u8>, times: usize) -> Seen {
    let s = TcpStream::connect(addr).await.unwrap();
    flood(s, opening, frames, times).await
}

/// A normal h2 client on its own connection is served while (and after) another is cut.
async fn probe(site: &TlsSite) {
    let mut c = h2_over(site.connect(&[b"h2"]).await).await;
    let resp = guarded(
        "probe",
        c.send_request(get("https://example.test/p", "example.test")),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
}

/// RFC 9113 §3.4: an invalid preface is a connection error of type PROTOCOL_ERROR. Over TLS
/// with ALPN h2 the proxy says so with a GOAWAY (after its own SETTINGS) and closes.
#[tokio::test]
async fn invalid_preface_over_tls_gets_goaway_protocol_error() {
    let site = TlsSite::start("example.test").await;
    let mut tls = site.connect(&[b"h2"]).await;
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
        .await
        .unwrap();
    let seen = guarded("GOAWAY", read_frames(&mut tls)).await;
    assert_eq!(seen.goaway, Some(PROTOCOL_ERROR), "{seen:?}");
    assert_eq!(seen.frames[SETTINGS as usize], 1, "{seen:?}");
    // Then the connection ends.
    let mut rest = Vec::new();
    let _ = guarded("close", tls.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "nothing after the GOAWAY: {rest:?}");
    probe(&site).await;
}

/// Not the preface on the cleartext listener: HTTP/1.1, answered as such (400).
#[tokio::test]
async fn not_a_preface_on_cleartext_is_http1() {
    let site = TlsSite::start("example.test").await;
    let resp = raw(site.proxy.http, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", 10).await;
    assert!(resp.starts_with("HTTP/1.1 4"), "{resp}");
}

#[tokio::test]
async fn ping_flood_is_cut() {
    let site = TlsSite::start("example.test").await;
    let ping = frame(PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
    // Over TLS and over cleartext.
    let (r, w) = tokio::join!(
        flood(site.connect(&[b"h2"]).await, vec![], ping.clone(), 100_000),
        async {
            let seen = h2c_flood(site.proxy.http, vec![], ping.clone(), 100_000).await;
            probe(&site).await;
            seen
        }
    );
    for seen in [r, w] {
        assert_eq!(seen.goaway, Some(ENHANCE_YOUR_CALM), "{seen:?}");
        let acks = seen.frames[PING as usize];
        assert!(acks <= BURST + 10, "{acks} PINGs answered before the cut");
    }
    probe(&site).await;
}

#[tokio::test]
async fn settings_flood_is_cut() {
    let site = TlsSite::start("example.test").await;
    let seen = h2c_flood(site.proxy.http, vec![], frame(SETTINGS, 0, 0, &[]), 50_000).await;
    assert_eq!(seen.goaway, Some(ENHANCE_YOUR_CALM), "{seen:?}");
    assert!(seen.frames[SETTINGS as usize] <= BURST + 10, "{seen:?}");
    probe(&site).await;
}

#[tokio::test]
async fn empty_data_flood_is_cut() {
    let site = TlsSite::start("example.test").await;
    // A request whose body never comes, only empty DATA frames without END_STREAM.
    let opening = get_headers(1, 0x4);
    let seen = h2c_flood(site.proxy.http, opening, frame(DATA, 0, 1, &[]), 100_000).await;
    assert_eq!(seen.goaway, Some(ENHANCE_YOUR_CALM), "{seen:?}");
    probe(&site).await;
}

#[tokio::test]
async fn window_update_flood_is_cut() {
    let site = TlsSite::start("example.test").await;
    let update = frame(WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes());
    let seen = h2c_flood(site.proxy.http, vec![], update, 100_000).await;
    assert_eq!(seen.goaway, Some(ENHANCE_YOUR_CALM), "{seen:?}");
    probe(&site).await;
}

/// CVE-2023-44487: open a stream and reset it at once, over and over.
#[tokio::test]
async fn rapid_reset_is_cut() {
    let site = TlsSite::start("example.test").await;
    let s = TcpStream::connect(site.proxy.http).await.unwrap();
    let mut pairs = Vec::new();
    for i in 0..20_000u32 {
        let id = 2 * i + 1;
        pairs.extend(get_headers(id, 0x4 | 0x1));
        pairs.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let seen = flood(s, pairs, vec![], 0).await;
    assert_eq!(seen.goaway, Some(ENHANCE_YOUR_CALM), "{seen:?}");
    // Far fewer responses than requests: the connection was cut early.
    assert!(seen.frames[HEADERS as usize] < 5_000, "{seen:?}");
    probe(&site).await;
}

/// A header block that never ends (CVE-2024-27316 class): hyper's header list limit cuts it.
#[tokio::test]
async fn continuation_flood_is_cut() {
    let site = TlsSite::start("example.test").await;
    // HEADERS without END_HEADERS, then CONTINUATION frames each adding a literal header
    // field `x: aaaa...` (literal without indexing, new name).
    let opening = get_headers(1, 0x0);
    let mut field = vec![0x00, 1, b'x', 100];
    field.extend([b'a'; 100]);
    let seen = h2c_flood(
        site.proxy.http,
        opening,
        frame(CONTINUATION, 0, 1, &field),
        100_000,
    )
    .await;
    // Cut: a GOAWAY or a plain close, and no response to the never-ending request.
    assert_eq!(seen.frames[HEADERS as usize], 0, "{seen:?}");
    probe(&site).await;
}

/// A connection cut for flooding is closed at once: it does not linger reading the rest of
/// the flood (a lingering close is for HTTP/1.1 clients that may still read an error answer).
/// With lingering the proxy would read and discard up to 32 MiB of it first.
#[tokio::test]
async fn a_cut_connection_is_closed_not_lingered() {
    let site = TlsSite::start("example.test").await;
    let mut s = TcpStream::connect(site.proxy.http).await.unwrap();
    let mut start = PREFACE.to_vec();
    start.extend(frame(SETTINGS, 0, 0, &[]));
    s.write_all(&start).await.unwrap();
    let batch = frame(PING, 0, 0, &[0; 8]).repeat(4096);
    let mut sent = 0usize;
    guarded("the flood is refused", async {
        while sent < 64 << 20 {
            if s.write_all(&batch).await.is_err() {
                return;
            }
            sent += batch.len();
        }
    })
    .await;
    assert!(
        sent < 24 << 20,
        "{sent} bytes of flood taken in after the cut"
    );
    probe(&site).await;
}
