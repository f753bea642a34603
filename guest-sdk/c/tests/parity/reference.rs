//! Parity probe: every Request accessor and builder, written into the decision.
use sluice_sdk::prelude::*;

fn opt(v: Option<&str>) -> String {
    v.map(|s| format!("[{s}]")).unwrap_or_else(|| "<none>".into())
}

#[sluice_sdk::policy(on_response = resp)]
fn decide(req: &Request) -> Decision {
    let path = req.path();
    if path == "/local" {
        return Decision::respond(503, "down")
            .header("Retry-After", "1")
            .header("x-a", "1")
            .append_response_header("x-a", "2")
            .set_response_header("retry-after", "120")
            .remove_response_header("x-gone")
            .ttl(5)
            .algorithm(Algorithm::Random)
            .set_request_header("x-ignored", "1");
    }
    if path == "/local2" {
        return Decision::respond(200, "").header("x-a", "1").remove_response_header("X-A");
    }
    if path == "/full" {
        return Decision::forward("api")
            .endpoint("10.0.0.1:80")
            .algorithm(Algorithm::Maglev)
            .hash_key("k")
            .cache_key(b"key")
            .ttl(60)
            .no_cache()
            .cache_tag("a")
            .cache_tag("b")
            .set_request_header("X-A", "1")
            .append_request_header("x-b", b"2")
            .remove_request_header("x-c")
            .set_response_header("x-d", "4")
            .header("x-e", "5")
            .rewrite("/new?q");
    }
    if path == "/config" {
        let b = match sluice_sdk::config::get_bool("flag") {
            Ok(Some(b)) => b.to_string(),
            Ok(None) => "unset".into(),
            Err(e) => panic!("{e}"),
        };
        let n = match sluice_sdk::config::get_parsed::<i64>("n") {
            Ok(Some(n)) => n.to_string(),
            Ok(None) => "unset".into(),
            Err(e) => panic!("{e}"),
        };
        let alg = sluice_sdk::config::get("alg")
            .and_then(|a| a.parse::<Algorithm>().ok())
            .map(|a| a.name().to_string())
            .unwrap_or_else(|| "pool".into());
        return Decision::forward_default()
            .header("x-bool", b)
            .header("x-n", n)
            .header("x-alg", alg)
            .header("x-get", opt(sluice_sdk::config::get("s").as_deref()))
            .header("x-get-or", sluice_sdk::config::get_or("s", "dflt"));
    }
    let params: Vec<String> = req.query_params().iter().map(|(n, v)| format!("{n}={v}")).collect();
    let mut d = Decision::forward_default()
        .header("x-method", req.method())
        .header("x-scheme", req.scheme())
        .header("x-authority", req.authority())
        .header("x-host", req.host())
        .header("x-path", req.path())
        .header("x-query", opt(req.query()))
        .header("x-params", params.join("|"))
        .header("x-sorted", opt(req.sorted_query().as_deref()))
        .header("x-key", req.default_cache_key())
        .header("x-client", req.client_ip())
        .header("x-sni", opt(req.tls_sni().as_deref()))
        .header("x-version", req.http_version())
        .header("x-nheaders", req.headers().len().to_string());
    for name in ["a", "b", "", "x", "A"] {
        d = d.header(format!("x-qp-{}", name.len()), opt(req.query_param(name)));
    }
    for name in ["a", "ab", "c", "d", "", "e f"] {
        d = d.header("x-cookie", opt(req.cookie(name).as_deref()));
    }
    match req.header("x-a") {
        Some(v) => d = d.header("x-hdr", v),
        None => d = d.header("x-hdr", "<none>"),
    }
    let all = req.header_all("x-a");
    d = d.header("x-hdr-n", all.len().to_string());
    for v in all {
        d = d.header("x-hdr-all", v);
    }
    d
}

fn resp(_req: &Request, resp: &Response) -> ResponseDecision {
    if resp.status() >= 500 {
        return ResponseDecision::respond(503, "<h1>Back soon</h1>")
            .header("Content-Type", "text/html")
            .set_header("x-ignored", "1")
            .no_store();
    }
    let mut r = ResponseDecision::serve()
        .set_header("X-Frame-Options", "DENY")
        .append_header("x-b", "1")
        .remove_header("Server")
        .header("x-ignored", "1");
    if resp.source() == Source::Cache {
        r = r.cache_tag("cached");
    } else {
        r = r.ttl(30).cache_tag("fresh").cache_tag("two").no_store();
    }
    r = r.set_header("x-status", resp.status().to_string())
        .set_header("x-ep", opt(resp.endpoint().as_deref()))
        .set_header("x-nh", resp.headers().len().to_string())
        .set_header("x-rh", resp.header("x-r").unwrap_or_default())
        .set_header("x-rn", resp.header_all("x-r").len().to_string())
        .set_header("x-path", _req.path());
    r
}
