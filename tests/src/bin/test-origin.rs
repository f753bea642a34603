//! An origin in a process of its own, for tests that kill it (`kill -9` under load): serves
//! HTTP/1.1 and h2c on 127.0.0.1 (port 0), prints `listening ADDR` on stdout, and answers
//! every request `200 ok` with `x-origin: NAME` (its first argument).

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::io::Write;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "origin".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut out = std::io::stdout();
    writeln!(out, "listening {}", listener.local_addr()?)?;
    out.flush()?;
    loop {
        let (stream, _) = listener.accept().await?;
        let name = name.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req| {
                let resp = http::Response::builder()
                    .header("x-origin", name.as_str())
                    .body(Full::new(Bytes::from_static(b"ok")))
                    .expect("valid response");
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
