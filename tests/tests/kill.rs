//! An origin process killed with SIGKILL under load, with default settings: two endpoints in
//! separate processes, 16 clients in flight (HTTP/1.1 connections, then h2c streams), one
//! process killed a quarter of the way through. Every request must still get a 200: those
//! in flight on the dead process are retried (idempotent, empty body, within the budget),
//! those that meet a refused connection are retried without spending the budget, and the
//! dead endpoint is ejected.

use sluice_tests::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

/// `tests/src/bin/test-origin.rs` in a child process; killed when dropped.
struct OriginProcess {
    child: Child,
    addr: SocketAddr,
}

impl OriginProcess {
    fn start(name: &str) -> OriginProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_test-origin"))
            .arg(name)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start test-origin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("test-origin said {line:?}"))
            .parse()
            .unwrap();
        OriginProcess { child, addr }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for OriginProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CLIENTS: usize = 16;
const TOTAL: usize = 4000;
const KILL_AT: usize = TOTAL / 4;

#[derive(Default)]
struct Tally {
    ok_a: AtomicUsize,
    ok_b: AtomicUsize,
    done: AtomicUsize,
    failures: std::sync::Mutex<Vec<String>>,
}

/// Sends TOTAL requests from CLIENTS tasks (`send` makes one request), kills `victim` once
/// KILL_AT have been answered, and returns the tally.
async fn under_load<F, Fut>(send: F, mut victim: OriginProcess) -> Arc<Tally>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (u16, Option<String>, Option<String>)> + Send,
{
    let tally = Arc::new(Tally::default());
    let issued = Arc::new(AtomicUsize::new(0));
    let reached = Arc::new(Notify::new());
    let killer = {
        let reached = reached.clone();
        tokio::spawn(async move {
            reached.notified().await;
            victim.kill();
            victim
        })
    };
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (send, tally, issued, reached) =
            (send.clone(), tally.clone(), issued.clone(), reached.clone());
        clients.push(tokio::spawn(async move {
            while issued.fetch_add(1, Ordering::SeqCst) < TOTAL {
                let (status, origin, error) = send(c).await;
                match (status, origin.as_deref()) {
                    (200, Some("a")) => tally.ok_a.fetch_add(1, Ordering::SeqCst),
                    (200, _) => tally.ok_b.fetch_add(1, Ordering::SeqCst),
                    _ => {
                        tally
                            .failures
                            .lock()
                            .unwrap()
                            .push(format!("{status} {error:?}"));
                        0
                    }
                };
                if tally.done.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AT {
                    reached.notify_one();
                }
            }
        }));
    }
    for c in clients {
        guarded("the load finishes", c).await.unwrap();
    }
    drop(guarded("the kill", killer).await.unwrap());
    tally
}

fn check(tally: &Tally, what: &str) {
    let failures = tally.failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{what}: {} failed: {failures:?}",
        failures.len()
    );
    let (a, b) = (
        tally.ok_a.load(Ordering::SeqCst),
        tally.ok_b.load(Ordering::SeqCst),
    );
    assert_eq!(a + b, TOTAL, "{what}");
    // Both served before the kill; the survivor took the rest.
    assert!(a > 0 && a < KILL_AT + CLIENTS, "{what}: a served {a}");
    assert!(b > TOTAL - KILL_AT - CLIENTS, "{what}: b served {b}");
}

async fn answer(
    resp: http::Response<hyper::body::Incoming>,
) -> (u16, Option<String>, Option<String>) {
    let status = resp.status().as_u16();
    let origin = header(&resp, "x-origin").map(str::to_string);
    let error = header(&resp, "x-sluice-error").map(str::to_string);
    body_bytes(resp).await;
    (status, origin, error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_origin_under_http1_load_fails_nothing() {
    let (a, b) = (OriginProcess::start("a"), OriginProcess::start("b"));
    let proxy = ProxyBuilder::new()
        .pool("web", &[a.addr, b.addr])
        .start()
        .await;
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        conns.push(Arc::new(tokio::sync::Mutex::new(h1(proxy.http).await)));
    }
    let conns = Arc::new(conns);
    let tally = under_load(
        move |c| {
            let conns = conns.clone();
            async move {
                let mut conn = conns[c].lock().await;
                let resp = send(&mut conn, get("/k", "example.test")).await;
                answer(resp).await
            }
        },
        a,
    )
    .await;
    check(&tally, "HTTP/1.1");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_origin_under_h2c_load_fails_nothing() {
    let (a, b) = (OriginProcess::start("a"), OriginProcess::start("b"));
    let proxy = ProxyBuilder::new()
        .pool("web", &[a.addr, b.addr])
        .start()
        .await;
    let h2 = h2c(proxy.http).await;
    let tally = under_load(
        move |_| {
            let mut h2 = h2.clone();
            async move {
                answer(send2(&mut h2, get("http://example.test/k", "example.test")).await).await
            }
        },
        a,
    )
    .await;
    check(&tally, "h2c");
    drop(b);
}
