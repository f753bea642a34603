use sluice_tests::*;

#[tokio::test]
async fn get_through_proxy() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin).start().await;
    let mut c = h1(proxy.http).await;
    let resp = send(&mut c, get("/hello?x=1", "example.test")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-echo-uri"], "/hello?x=1");
    assert_eq!(resp.headers()["x-echo-h-host"], "example.test");
    assert_eq!(body_bytes(resp).await, "a 0");
}
