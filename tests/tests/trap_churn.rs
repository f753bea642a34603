//! 1000 traps in a row leave no lasting failure and no memory growth. In its own test binary
//! so no other test allocates in the process while resident memory is compared.

use sluice_tests::*;

/// Resident set size of this process, from /proc/self/statm (pages * page size).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test]
async fn a_thousand_traps_leave_no_trace() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .admin(None)
        .policy(guests::PROBE, "", "")
        .start()
        .await;
    let mut c = h1(proxy.http).await;
    let mut trap = async |n: usize| {
        for _ in 0..n {
            let resp = send(&mut c, get("/trap", "e.test")).await;
            assert_eq!(resp.status(), 503);
            body_bytes(resp).await;
        }
    };
    // Warm up: pools, instance slots and allocator caches reach their steady state.
    trap(200).await;
    let before = rss_bytes();
    trap(1000).await;
    let after = rss_bytes();
    let growth = after.saturating_sub(before);
    // A leak of one 64 KiB Wasm page (or one store) per trap would be 60+ MiB.
    assert!(
        growth < 8 << 20,
        "resident memory grew by {} KiB over 1000 traps",
        growth / 1024
    );

    let mut c = h1(proxy.http).await;
    let resp = send(&mut c, get("/fine", "e.test")).await;
    assert_eq!(resp.status(), 200);
    let status = policy_status(proxy.admin.unwrap()).await;
    assert_eq!(status["active"]["traps"], 1200, "{status}");
}
