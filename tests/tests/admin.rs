//! The admin listener: `GET /health` answers JSON on its own socket only (the same path on a
//! proxy listener is an ordinary proxied request), bearer-token protection (401 with
//! `WWW-Authenticate: Bearer` for a missing or wrong token), and 404/405 for what it does not
//! serve.

use sluice_tests::*;

const TOKEN: &str = "s3cret-token-0123456789";

async fn admin_get(
    addr: std::net::SocketAddr,
    path: &str,
    auth: Option<&str>,
) -> (http::StatusCode, http::HeaderMap, bytes::Bytes) {
    let mut c = h1(addr).await;
    let mut req = get(path, "localhost");
    if let Some(a) = auth {
        req.headers_mut()
            .insert("authorization", a.parse().unwrap());
    }
    let resp = guarded("admin answers", c.send_request(req)).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, body_bytes(resp).await)
}

#[tokio::test]
async fn health_is_served_on_the_admin_listener_only() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin).admin(None).start().await;
    let admin = proxy.admin.unwrap();
    assert_ne!(admin, proxy.http);

    let (status, headers, body) = admin_get(admin, "/health", None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["status"], "ok", "{json}");
    assert!(json["version"].is_string(), "{json}");
    assert_eq!(origin.hits(), 0);

    // On the proxy listener, /health is just a path: it goes to the origin.
    let resp = send(&mut h1(proxy.http).await, get("/health", "example.test")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-origin"], "a");
    assert_eq!(resp.headers()["x-echo-uri"], "/health");
    assert_eq!(body_bytes(resp).await, "a 0");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn unknown_admin_path_is_404_and_wrong_method_405() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin).admin(None).start().await;
    let admin = proxy.admin.unwrap();
    let (status, headers, body) = admin_get(admin, "/nope", None).await;
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(json["error"].is_string(), "{json}");

    let mut c = h1(admin).await;
    let req = http::Request::post("/health")
        .header("host", "localhost")
        .body(full(""))
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn token_is_required_when_configured() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .admin(Some(TOKEN))
        .start()
        .await;
    let admin = proxy.admin.unwrap();

    let wrong_bearer = format!("Bearer {TOKEN}x");
    let truncated = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let basic = format!("Basic {TOKEN}");
    for auth in [
        None,
        Some(wrong_bearer.as_str()),
        Some(truncated.as_str()),
        Some(basic.as_str()),
        Some("Bearer "),
        Some(TOKEN),
    ] {
        let (status, headers, body) = admin_get(admin, "/health", auth).await;
        assert_eq!(status, 401, "auth {auth:?}");
        assert_eq!(headers["www-authenticate"], "Bearer", "auth {auth:?}");
        assert!(!body.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()));
    }
    // Unauthenticated requests learn nothing about which paths exist.
    let (status, _, _) = admin_get(admin, "/nope", None).await;
    assert_eq!(status, 401);

    let right = format!("Bearer {TOKEN}");
    let (status, _, body) = admin_get(admin, "/health", Some(&right)).await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["status"], "ok");
    let (status, _, _) = admin_get(admin, "/nope", Some(&right)).await;
    assert_eq!(status, 404);

    // The token guards the admin API only; proxied requests do not need it.
    let resp = send(&mut h1(proxy.http).await, get("/health", "example.test")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-origin"], "a");
}
