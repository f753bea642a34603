//! `sluice demo`: three in-process origins, a self-signed certificate and a proxy in front of
//! them on HTTP and HTTPS, with nothing to install or write first.
//!
//! Origins identify themselves with `x-origin` and serve a few paths that show what a proxy
//! does: cacheable and uncacheable responses, a slow one, a large streamed one, an echo.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpListener;

type DemoBody = BoxBody<Bytes, Infallible>;

/// Addresses for the demo's three sockets.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
}

/// Starts one demo origin on `127.0.0.1:0`; returns its address. Runs until the process ends.
pub async fn start_origin(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| async move {
                    Ok::<_, Infallible>(origin(name, req).await)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn text(status: StatusCode, s: String) -> Response<DemoBody> {
    let mut r = Response::new(Full::new(Bytes::from(s)).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn query_u64(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

async fn origin(name: &'static str, req: Request<Incoming>) -> Response<DemoBody> {
    let mut resp = match req.uri().path() {
        "/" => text(
            StatusCode::OK,
            format!(
                "hello from {name}\npaths: / /cacheable /private /slow?ms=N /large?mb=N /echo /status/NNN\n"
            ),
        ),
        "/cacheable" => {
            let mut r = text(StatusCode::OK, format!("cacheable response from {name}\n"));
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=60"),
            );
            r
        }
        "/private" => {
            let mut r = text(StatusCode::OK, format!("private response from {name}\n"));
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            );
            r
        }
        "/slow" => {
            let ms = query_u64(&req, "ms").unwrap_or(2000).min(30_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(
                StatusCode::OK,
                format!("slow response from {name} after {ms} ms\n"),
            )
        }
        "/large" => {
            let mb = query_u64(&req, "mb").unwrap_or(16).clamp(1, 1024);
            large(mb)
        }
        "/echo" => {
            let mut out = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
            for (k, v) in req.headers() {
                out.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
            }
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            out.push_str(&format!("\n{} body bytes\n", body.len()));
            text(StatusCode::OK, out)
        }
        p if p.starts_with("/status/") => {
            let code = p["/status/".len()..]
                .parse()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok());
            match code {
                Some(c) => text(c, format!("{c} from {name}\n")),
                None => text(StatusCode::BAD_REQUEST, "bad status\n".into()),
            }
        }
        _ => text(StatusCode::NOT_FOUND, format!("not found on {name}\n")),
    };
    resp.headers_mut()
        .insert("x-origin", HeaderValue::from_static(name));
    resp
}

/// `mb` MiB generated chunk by chunk: never held in memory whole.
fn large(mb: u64) -> Response<DemoBody> {
    const CHUNK: usize = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let count = (mb as usize * 1024 * 1024) / CHUNK;
    let stream = futures_util::stream::iter(
        (0..count).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
    );
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count * CHUNK));
    r
}

/// Writes a self-signed certificate for `localhost` and `127.0.0.1` into `dir`.
pub fn write_self_signed(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    let cert = dir.join("demo-cert.pem");
    let key = dir.join("demo-key.pem");
    std::fs::write(&cert, ck.cert.pem())?;
    std::fs::write(&key, ck.signing_key.serialize_pem())?;
    Ok((cert, key))
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let mut origins = Vec::new();
    for name in ["origin-1", "origin-2", "origin-3"] {
        origins.push(start_origin(name).await?);
    }
    let dir = std::env::temp_dir().join(format!("sluice-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = write_self_signed(&dir)?;
    let endpoints: Vec<String> = origins.iter().map(|a| format!("\"{a}\"")).collect();
    let toml = format!(
        r#"
[[listener]]
name = "http"
address = "{http}"

[[listener]]
name = "https"
address = "{https}"
tls = {{ certificates = [{{ cert = "{cert}", key = "{key}" }}] }}

[[pool]]
name = "demo"
endpoints = [{endpoints}]

[admin]
address = "{admin}"

[cache]
capacity = "64MiB"

[log]
access_log = true
"#,
        http = opts.http,
        https = opts.https,
        admin = opts.admin,
        cert = cert.display(),
        key = key.display(),
        endpoints = endpoints.join(", "),
    );
    let config = crate::config::Config::parse(&toml, "(demo)", &dir)?;
    crate::logging::init(&config.log);
    let running = crate::start(config).await?;
    let http = running.addr("http").expect("http listener");
    let https = running.addr("https").expect("https listener");
    let admin = running.admin.expect("admin listener");
    // Before the banner, so a SIGTERM sent as soon as it is read stops the demo gracefully.
    let mut signals = crate::StopSignals::install();
    println!("sluice demo is running");
    println!("  proxy  http://{http}  https://{https}  (h2 and http/1.1)");
    println!("  admin  http://{admin}");
    println!(
        "  origins {}",
        origins
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("  certificate {}", cert.display());
    println!();
    println!("try:");
    println!(
        "  curl -i http://{http}/                              # round robin over three origins (x-origin)"
    );
    println!(
        "  curl -i http://{http}/echo                          # what the origin received: Via, X-Forwarded-*"
    );
    println!(
        "  curl -i --cacert {} https://localhost:{}/      # HTTPS, HTTP/2 by ALPN",
        cert.display(),
        https.port()
    );
    println!("  curl -i --http2-prior-knowledge http://{http}/      # h2c");
    println!("  curl -s -o /dev/null -w '%{{size_download}} bytes\\n' http://{http}/large?mb=64");
    println!("  curl -i http://{http}/slow?ms=500");
    println!(
        "  curl -si http://{http}/cacheable | grep -i cache-status   # twice: fwd=uri-miss; stored, then hit"
    );
    println!("  curl -s -XPOST -d '{{\"all\":true}}' http://{admin}/cache/purge");
    println!("  curl -s http://{admin}/stats       # cache counters");
    println!("  curl -s http://{admin}/health");
    println!("  curl -s http://{admin}/policy      # the Wasm policy revision serving requests");
    println!("press Ctrl-C to stop");
    signals.wait(&running, None, false).await;
    println!("stopping: {:?}", running.shutdown().await);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
