//! The status page (`GET /` on the admin listener) rendered by headless Chromium (Debian's
//! `chromium`, installed by `.ci/install-chromium.sh`) after real traffic: the DOM its script
//! built shows the pools, endpoints and request counts; a screenshot is written next to the
//! test's temporary files (the path is printed). And `/status`, the JSON it polls, with and
//! without the admin token.

use sluice_tests::*;
use std::time::Duration;

/// Runs headless Chromium on `url` with `args`; its stdout. Bounded: killed after 60 s.
async fn chromium(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        // Lets the page's script fetch /status and render before the DOM is taken.
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(url)
    .kill_on_drop(true)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| {
        panic!("chromium ({e}): install it with .ci/install-chromium.sh (Debian: chromium)")
    });
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("chromium finished within 60 s")
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The text inside the element with `id` in `dom` (up to its first `<`).
fn text_of<'d>(dom: &'d str, id: &str) -> Option<&'d str> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(&rest[start..start + end])
}

#[tokio::test]
async fn the_status_page_renders_live_figures_in_a_real_browser() {
    let a = Origin::echo("a").await;
    let b = Origin::echo("b").await;
    let proxy = ProxyBuilder::new()
        .pool("web", &[a.addr, b.addr])
        .admin(None)
        .toml("[cache]\ncapacity = \"1MiB\"\n")
        .start()
        .await;
    let mut c = h1(proxy.http).await;
    for i in 0..6 {
        let r = send(&mut c, get(&format!("/p{i}"), "example.test")).await;
        assert_eq!(r.status(), 200);
        body_bytes(r).await;
    }
    let url = format!("http://{}/", proxy.admin.unwrap());

    let dom = chromium(&url, &["--dump-dom"]).await;
    assert_eq!(text_of(&dom, "total-requests"), Some("6"), "{dom}");
    assert_eq!(text_of(&dom, "version"), Some(env!("CARGO_PKG_VERSION")));
    let pools = &dom[dom.find("id=\"pools\"").expect("a pools table")..];
    assert!(pools.contains("<b>web</b>"), "{pools}");
    for origin in [&a, &b] {
        assert!(pools.contains(&origin.addr.to_string()), "{pools}");
    }
    assert!(pools.contains("healthy"), "{pools}");
    assert!(dom.contains(">http</td>"), "the listener row: {dom}");
    assert!(dom.contains("<b>active</b>"), "the policy revision: {dom}");
    assert_eq!(text_of(&dom, "error"), Some(""), "no error shown: {dom}");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1000",
        ],
    )
    .await;
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    assert!(png.len() > 10_000, "not a blank page: {} bytes", png.len());
    println!("status page screenshot: {}", shot.display());
}

#[tokio::test]
async fn the_page_is_public_and_its_data_needs_the_token() {
    let origin = Origin::echo("a").await;
    let token = "status-token-0123456789";
    let proxy = ProxyBuilder::for_origin(&origin)
        .admin(Some(token))
        .start()
        .await;
    let admin = proxy.admin.unwrap();
    let mut c = h1(admin).await;
    let page = send(&mut c, get("/", "admin")).await;
    assert_eq!(page.status(), 200);
    assert_eq!(
        header(&page, "content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = header(&page, "content-security-policy").unwrap().to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = String::from_utf8(body_bytes(page).await.to_vec()).unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing fetched from elsewhere"
    );

    let resp = send(&mut c, get("/status", "admin")).await;
    assert_eq!(resp.status(), 401);
    body_bytes(resp).await;
    let mut req = get("/status", "admin");
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let resp = send(&mut c, req).await;
    assert_eq!(resp.status(), 200);
    let status: serde_json::Value = serde_json::from_slice(&body_bytes(resp).await).unwrap();
    assert_eq!(status["token_required"], true);
    assert_eq!(status["pools"][0]["name"], "web", "{status}");
    assert_eq!(status["listeners"][0]["name"], "http");
    assert!(status["cache"].is_null());
    let history = status["history"].as_array().unwrap();
    assert!(
        !history.is_empty(),
        "a sample is taken when the admin listener starts: {status}"
    );
    assert!(history.len() <= 300);
}
