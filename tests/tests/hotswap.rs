//! Hot swap: 100 uploads while clients keep sending over kept-alive h1 and h2 connections
//! (zero failed requests, zero dropped connections); bad uploads rejected with a reason while
//! the old revision keeps serving; rollback; reload on a file change; refused WASI imports.

use sluice_tests::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

fn bytes_of(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

async fn upload(
    admin: std::net::SocketAddr,
    bytes: Vec<u8>,
) -> (http::StatusCode, serde_json::Value) {
    admin_call(admin, "PUT", "/policy", bytes).await
}

async fn served_by(addr: std::net::SocketAddr) -> String {
    let resp = send(&mut h1(addr).await, get("/", "e.test")).await;
    assert_eq!(resp.status(), 200);
    resp.headers()["x-policy"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_swaps_under_load_fail_nothing() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .admin(None)
        .policy(guests::SWAP_A, "", "")
        .start()
        .await;
    let admin = proxy.admin.unwrap();
    let (a, b) = (bytes_of(guests::SWAP_A), bytes_of(guests::SWAP_B));

    let done = Arc::new(AtomicBool::new(false));
    let seen_b = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for kind in ["h1", "h1", "h2"] {
        let (done, seen_b, addr) = (done.clone(), seen_b.clone(), proxy.http);
        clients.push(tokio::spawn(async move {
            let mut ok = 0usize;
            let mut c1 = None;
            let mut c2 = None;
            if kind == "h1" {
                c1 = Some(h1(addr).await);
            } else {
                c2 = Some(h2c(addr).await);
            }
            // Bounded: stops when the swapper is done, or after 100k requests.
            while !done.load(Ordering::Relaxed) && ok < 100_000 {
                let req = http::Request::builder()
                    .uri(if kind == "h1" {
                        "/".to_string()
                    } else {
                        "http://e.test/".into()
                    })
                    .header("host", "e.test")
                    .body(full(""))
                    .unwrap();
                // Any failure (error, non-200, closed connection) fails the test here.
                let resp = match (&mut c1, &mut c2) {
                    (Some(c), _) => send(c, req).await,
                    (_, Some(c)) => send2(c, req).await,
                    _ => unreachable!(),
                };
                assert_eq!(resp.status(), 200, "{kind} request {ok}");
                match resp.headers()["x-policy"].to_str().unwrap() {
                    "a" => {}
                    "b" => {
                        seen_b.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("x-policy {other}"),
                }
                body_bytes(resp).await;
                ok += 1;
            }
            ok
        }));
    }

    let mut rx = proxy.running.policy().swaps();
    for i in 0..100 {
        let bytes = if i % 2 == 0 { b.clone() } else { a.clone() };
        let (status, json) = upload(admin, bytes).await;
        assert_eq!(status, 200, "swap {i}: {json}");
    }
    assert_eq!(*rx.borrow_and_update(), 100);
    done.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let n = guarded("client finishes", c).await.unwrap();
        assert!(n > 0);
        total += n;
    }
    assert!(
        seen_b.load(Ordering::Relaxed) > 0,
        "no request saw revision b"
    );
    let status = policy_status(admin).await;
    assert_eq!(status["previous"].as_array().unwrap().len(), 5, "{status}");
    println!("{total} requests across 100 swaps");
}

#[tokio::test]
async fn bad_uploads_are_refused_and_the_old_revision_keeps_serving() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .admin(None)
        .policy(guests::SWAP_A, "", "")
        .start()
        .await;
    let admin = proxy.admin.unwrap();
    let active = policy_status(admin).await["active"]["id"].clone();
    let mut core_module = b"\0asm\x01\0\0\0".to_vec();
    core_module.extend_from_slice(&[0; 4]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("text", b"hello, not wasm".to_vec(), "not a Wasm component"),
        (
            "core module",
            core_module,
            "core Wasm module, not a component",
        ),
        (
            "truncated",
            bytes_of(guests::SWAP_B)[..100].to_vec(),
            "invalid component",
        ),
        ("wrong world", bytes_of(guests::WRONG_WORLD), "decide"),
        (
            "no export",
            bytes_of(guests::NO_EXPORT),
            "exports do not match",
        ),
        ("empty", Vec::new(), "not a Wasm component"),
    ];
    for (what, bytes, expect) in cases {
        let (status, json) = upload(admin, bytes).await;
        assert_eq!(status, 422, "{what}: {json}");
        let msg = json["error"].as_str().unwrap();
        assert!(
            msg.contains(expect),
            "{what}: {msg:?} should contain {expect:?}"
        );
        assert!(
            msg.contains("admin upload"),
            "{what}: names the source: {msg}"
        );
        assert_eq!(served_by(proxy.http).await, "a", "after {what}");
    }
    let status = policy_status(admin).await;
    assert_eq!(status["active"]["id"], active, "{status}");
    assert!(status["previous"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn rollback_restores_the_previous_revision() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .admin(None)
        .policy(guests::SWAP_A, "", "")
        .start()
        .await;
    let admin = proxy.admin.unwrap();
    let (status, json) = admin_call(admin, "POST", "/policy/rollback", vec![]).await;
    assert_eq!(status, 409, "nothing to roll back to: {json}");

    let (status, uploaded) = upload(admin, bytes_of(guests::SWAP_B)).await;
    assert_eq!(status, 200);
    assert_eq!(uploaded["source"], "admin upload");
    assert_eq!(served_by(proxy.http).await, "b");
    // Uploading identical bytes keeps the active revision.
    let (_, again) = upload(admin, bytes_of(guests::SWAP_B)).await;
    assert_eq!(again["id"], uploaded["id"]);

    let (status, back) = admin_call(admin, "POST", "/policy/rollback", vec![]).await;
    assert_eq!(status, 200, "{back}");
    assert!(
        back["source"].as_str().unwrap().starts_with("file:"),
        "{back}"
    );
    assert_eq!(served_by(proxy.http).await, "a");
    let status = policy_status(admin).await;
    assert_eq!(status["active"]["id"], back["id"]);
    assert!(
        status["previous"].as_array().unwrap().is_empty(),
        "{status}"
    );
}

#[tokio::test]
async fn a_changed_module_file_is_reloaded_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("policy.wasm");
    std::fs::copy(guests::SWAP_A, &module).unwrap();
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .admin(None)
        .policy(module.to_str().unwrap(), "", "")
        .start()
        .await;
    assert_eq!(served_by(proxy.http).await, "a");
    let mut swaps = proxy.running.policy().swaps();

    // Replace by rename, as deploy tools do.
    let tmp = dir.path().join("policy.wasm.tmp");
    std::fs::copy(guests::SWAP_B, &tmp).unwrap();
    std::fs::rename(&tmp, &module).unwrap();
    guarded("reload after the file changed", swaps.changed())
        .await
        .unwrap();
    assert_eq!(served_by(proxy.http).await, "b");

    // A broken file is refused; the reload through the API says why.
    std::fs::write(&module, b"garbage").unwrap();
    let err = proxy.running.policy().reload(None).await.unwrap_err();
    assert!(err.to_string().contains("not a Wasm component"), "{err}");
    assert_eq!(served_by(proxy.http).await, "b");
}

/// A reload whose settings name another module file (as SIGHUP does after the config file
/// changed) loads it and from then on watches it, not the old one.
#[tokio::test]
async fn a_reload_with_another_module_path_watches_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old.wasm"), dir.path().join("new.wasm"));
    std::fs::copy(guests::SWAP_A, &old).unwrap();
    std::fs::copy(guests::SWAP_B, &new).unwrap();
    let origin = Origin::echo("a").await;
    let builder = ProxyBuilder::for_origin(&origin).policy(old.to_str().unwrap(), "", "");
    let text = builder.config_text();
    let proxy = builder.start().await;
    assert_eq!(served_by(proxy.http).await, "a");

    let moved = text.replace(old.to_str().unwrap(), new.to_str().unwrap());
    let config = sluice::config::Config::parse(&moved, "(test)", ".".as_ref()).unwrap();
    proxy
        .running
        .reload_policy(Some(config.policy))
        .await
        .unwrap();
    assert_eq!(served_by(proxy.http).await, "b");

    // A change of the new file is seen (before the fix only the old path was watched).
    let mut swaps = proxy.running.policy().swaps();
    std::fs::copy(guests::SWAP_A, dir.path().join("a.tmp")).unwrap();
    std::fs::rename(dir.path().join("a.tmp"), &new).unwrap();
    guarded("reload after the new file changed", swaps.changed())
        .await
        .unwrap();
    assert_eq!(served_by(proxy.http).await, "a");
    assert_eq!(
        proxy.running.policy().status().active.source,
        format!("file:{}", new.display())
    );
}

#[tokio::test]
async fn a_filesystem_import_loads_and_finds_no_files() {
    // Interpreters import wasi:filesystem, so it is linked, with no directory to open.
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .admin(None)
        .policy(guests::FS_IMPORTER, "fail = \"closed\"", "")
        .start()
        .await;
    let resp = send(&mut h1(proxy.http).await, get("/read", "e.test")).await;
    // The guest's own error answer: the read failed inside the sandbox.
    assert_eq!(resp.status(), 500);
    let body = body_bytes(resp).await;
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("/etc/hostname: "), "{body}");
    let host_name = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    assert!(
        host_name.trim().is_empty() || !body.contains(host_name.trim()),
        "the host's file leaked: {body}"
    );
    let status = policy_status(proxy.admin.unwrap()).await;
    assert_eq!(status["active"]["traps"], 0, "{status}");
    // Other paths are forwarded as usual.
    let resp = send(&mut h1(proxy.http).await, get("/x", "e.test")).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_component_for_an_older_wit_is_refused_naming_both_versions() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .admin(None)
        .policy(guests::SWAP_A, "", "")
        .start()
        .await;
    let (status, json) = upload(proxy.admin.unwrap(), bytes_of(guests::OLD_WORLD)).await;
    assert_eq!(status, 422, "{json}");
    let msg = json["error"].as_str().unwrap();
    for expect in [
        "built for sluice:policy@0.1.0",
        "this host implements sluice:policy@0.3.0 (and 0.2.1): rebuild it with sluice-sdk 0.3",
    ] {
        assert!(msg.contains(expect), "{msg:?} should contain {expect:?}");
    }
    assert_eq!(served_by(proxy.http).await, "a");
}
