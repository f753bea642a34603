//! `GET /metrics` on the admin listener after real traffic over HTTP/1.1, h2c and h2 over
//! TLS: the counters say exactly what was sent, histograms and gauges are there with their
//! types, `promtool check metrics` (Debian's `prometheus` package, installed by
//! `.ci/install-promtool.sh`) accepts the text, and OpenMetrics is served when asked for.

use sluice_tests::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// A scrape: its content type and text.
async fn scrape(admin: std::net::SocketAddr, accept: Option<&str>) -> (String, String) {
    let mut c = h1(admin).await;
    let mut req = get("/metrics", "admin");
    if let Some(a) = accept {
        req.headers_mut().insert("accept", a.parse().unwrap());
    }
    let resp = guarded("admin answers", send(&mut c, req)).await;
    assert_eq!(resp.status(), 200);
    let content_type = header(&resp, "content-type").unwrap().to_owned();
    let body = body_bytes(resp).await;
    (content_type, String::from_utf8(body.to_vec()).unwrap())
}

/// The value of the sample `name` whose labels are exactly `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, set) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let got: BTreeMap<&str, &str> = set
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once("=\"")?;
                    Some((k, v.trim_end_matches('"')))
                })
                .collect();
            (n == name && got == want).then(|| value.parse().unwrap())
        })
}

/// `# TYPE name kind` is in the text.
fn has_type(text: &str, name: &str, kind: &str) -> bool {
    text.lines().any(|l| l == format!("# TYPE {name} {kind}"))
}

#[tokio::test]
async fn metrics_count_real_traffic_and_pass_promtool() {
    let certs = Certs::new();
    let leaf = certs.issue("site", &["metrics.test"]);
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .tls(&[&leaf])
        .admin(None)
        .toml("[cache]\ncapacity = \"1MiB\"\n")
        .start()
        .await;
    let admin = proxy.admin.unwrap();

    let mut c = h1(proxy.http).await;
    for _ in 0..3 {
        let r = send(&mut c, get("/a", "example.test")).await;
        assert_eq!(r.status(), 200);
        body_bytes(r).await;
    }
    let mut head = get("/a", "example.test");
    *head.method_mut() = http::Method::HEAD;
    send(&mut c, head).await;
    // No Host: the proxy answers 400 itself (a local answer routed to no pool).
    let mut bad = get("/a", "example.test");
    bad.headers_mut().remove("host");
    let r = send(&mut c, bad).await;
    assert_eq!(r.status(), 400);
    body_bytes(r).await;

    let mut c2 = h2c(proxy.http).await;
    for _ in 0..2 {
        let r = send2(&mut c2, get("http://example.test/b", "example.test")).await;
        assert_eq!(r.status(), 200);
        body_bytes(r).await;
    }
    let tls = tls_connect(
        proxy.https.unwrap(),
        "metrics.test",
        certs.client_config(&[b"h2"]),
    )
    .await
    .unwrap();
    let mut c3 = h2_over(tls).await;
    let r = send2(&mut c3, get("https://metrics.test/c", "metrics.test")).await;
    assert_eq!(r.status(), 200);
    body_bytes(r).await;
    // A handshake that fails: not TLS at all.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(proxy.https.unwrap())
            .await
            .unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut sink = Vec::new();
        let _ = guarded(
            "the proxy closes a non-TLS client",
            s.read_to_end(&mut sink),
        )
        .await;
    }

    // Durations are recorded when a body is done, which can be just after the client has it.
    let mut text = String::new();
    for _ in 0..400 {
        text = scrape(admin, None).await.1;
        let duration = sample(
            &text,
            "sluice_request_duration_seconds_count",
            &[("pool", "web")],
        );
        let failed = sample(
            &text,
            "sluice_tls_handshake_failures_total",
            &[("listener", "https")],
        );
        if duration == Some(7.0) && failed == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (content_type, _) = scrape(admin, None).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let req = |listener, protocol, method, class| {
        let labels = [
            ("listener", listener),
            ("protocol", protocol),
            ("method", method),
            ("status_class", class),
        ];
        sample(&text, "sluice_requests_total", &labels)
    };
    assert_eq!(req("http", "HTTP/1.1", "GET", "2xx"), Some(3.0), "{text}");
    assert_eq!(req("http", "HTTP/1.1", "HEAD", "2xx"), Some(1.0), "{text}");
    assert_eq!(req("http", "HTTP/1.1", "GET", "4xx"), Some(1.0), "{text}");
    assert_eq!(req("http", "HTTP/2", "GET", "2xx"), Some(2.0), "{text}");
    assert_eq!(req("https", "HTTP/2", "GET", "2xx"), Some(1.0), "{text}");
    assert_eq!(
        req("http", "HTTP/1.1", "POST", "2xx"),
        None,
        "no empty series"
    );
    assert!(
        has_type(&text, "sluice_requests_total", "counter"),
        "{text}"
    );

    let pool = [("pool", "web")];
    assert!(has_type(
        &text,
        "sluice_request_duration_seconds",
        "histogram"
    ));
    assert_eq!(
        sample(&text, "sluice_request_duration_seconds_count", &pool),
        Some(7.0),
        "3 GET + 1 HEAD over h1, 2 over h2c, 1 over TLS; the 400 went to no pool: {text}"
    );
    let inf = [("pool", "web"), ("le", "+Inf")];
    assert_eq!(
        sample(&text, "sluice_request_duration_seconds_bucket", &inf),
        Some(7.0)
    );
    assert!(sample(&text, "sluice_request_duration_seconds_sum", &pool).unwrap() > 0.0);
    // The cache answered some of them; the origin saw the rest, and so did the histogram.
    let upstream = sample(&text, "sluice_upstream_response_head_seconds_count", &pool).unwrap();
    assert_eq!(upstream as usize, origin.hits(), "{text}");
    let endpoint = [("pool", "web"), ("endpoint", &*origin.addr.to_string())];
    assert_eq!(
        sample(&text, "sluice_upstream_requests_total", &endpoint),
        Some(origin.hits() as f64)
    );
    let opened = sample(&text, "sluice_upstream_connections_opened_total", &endpoint).unwrap();
    let reused = sample(&text, "sluice_upstream_connections_reused_total", &endpoint).unwrap();
    assert!(opened >= 1.0, "{text}");
    assert_eq!(
        (opened + reused) as usize,
        origin.hits(),
        "each request on a new or reused connection"
    );
    let mut healthy = endpoint.to_vec();
    healthy.push(("state", "healthy"));
    assert_eq!(sample(&text, "sluice_upstream_health", &healthy), Some(1.0));

    assert_eq!(
        sample(
            &text,
            "sluice_tls_handshakes_total",
            &[("listener", "https"), ("version", "TLSv1.3")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "sluice_tls_handshake_failures_total",
            &[("listener", "https")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "sluice_connections_accepted_total",
            &[("listener", "http")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "sluice_connections_open", &[("listener", "http")]),
        Some(2.0),
        "both are still open"
    );

    // The echo origin's answers are not storable: every GET or HEAD was a miss (or went
    // straight upstream as hit-for-miss once the first was known not to be storable).
    let misses = sample(&text, "sluice_cache_misses_total", &[]).unwrap();
    let hit_for_miss = sample(&text, "sluice_cache_hit_for_miss_total", &[]).unwrap();
    assert_eq!(misses + hit_for_miss, 7.0, "{text}");
    assert_eq!(sample(&text, "sluice_cache_hits_total", &[]), Some(0.0));
    assert_eq!(
        sample(&text, "sluice_cache_capacity_bytes", &[]),
        Some(1048576.0)
    );
    assert!(
        has_type(&text, "sluice_cache_size_bytes", "gauge"),
        "{text}"
    );

    let calls = text
        .lines()
        .filter(|l| l.starts_with("sluice_policy_calls_total{") && l.contains("phase=\"decide\""))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum::<f64>();
    assert!(calls >= 7.0, "every request routed by the policy: {text}");
    assert!(has_type(
        &text,
        "sluice_policy_call_duration_seconds",
        "histogram"
    ));
    assert!(sample(&text, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(sample(&text, "process_open_fds", &[]).unwrap() > 3.0);
    assert!(
        has_type(&text, "process_cpu_seconds_total", "counter"),
        "{text}"
    );

    if let Err(said) = promtool(&text) {
        panic!("promtool check metrics:\n{said}\non:\n{text}");
    }

    let (content_type, open) =
        scrape(admin, Some("application/openmetrics-text;version=1.0.0")).await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(open.contains("# TYPE sluice_requests counter"), "{open}");
}

#[tokio::test]
async fn metrics_without_a_cache_or_traffic_are_still_valid() {
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .admin(Some("t0ken-t0ken-t0ken"))
        .start()
        .await;
    let admin = proxy.admin.unwrap();
    let mut c = h1(admin).await;
    let resp = send(&mut c, get("/metrics", "admin")).await;
    assert_eq!(
        resp.status(),
        401,
        "the token guards /metrics like the rest"
    );
    let mut req = get("/metrics", "admin");
    req.headers_mut()
        .insert("authorization", "Bearer t0ken-t0ken-t0ken".parse().unwrap());
    let resp = send(&mut c, req).await;
    assert_eq!(resp.status(), 200);
    let text = String::from_utf8(body_bytes(resp).await.to_vec()).unwrap();
    assert!(!text.contains("sluice_cache_"), "{text}");
    assert!(
        !text.contains("sluice_requests_total"),
        "no request yet: {text}"
    );
    assert_eq!(
        sample(
            &text,
            "sluice_connections_accepted_total",
            &[("listener", "http")]
        ),
        Some(0.0)
    );
    if let Err(said) = promtool(&text) {
        panic!("promtool check metrics:\n{said}\non:\n{text}");
    }
}

#[tokio::test]
async fn reloads_are_counted_by_what_and_outcome() {
    let certs = Certs::new();
    let leaf = certs.issue("site", &["metrics.test"]);
    let origin = Origin::echo("a").await;
    let builder = ProxyBuilder::for_origin(&origin).tls(&[&leaf]).admin(None);
    let config =
        sluice::config::Config::parse(&builder.config_text(), "(test)", ".".as_ref()).unwrap();
    let proxy = builder.start().await;
    let running = &proxy.running;

    running.reload_certificates().unwrap();
    running.reload_pools(&config).unwrap();
    // Unchanged: nothing to swap, and still a reload that worked.
    running.policy().reload(None).await.unwrap();
    let missing = sluice::config::PolicyConfig {
        module: Some("/nonexistent/policy.wasm".into()),
        ..config.policy.clone()
    };
    running.policy().reload(Some(missing)).await.unwrap_err();
    assert_eq!(
        running.policy().status().active.id,
        1,
        "the active revision stays"
    );

    let (_, text) = scrape(proxy.admin.unwrap(), None).await;
    let reloads = |what, outcome| {
        sample(
            &text,
            "sluice_reloads_total",
            &[("what", what), ("outcome", outcome)],
        )
    };
    assert_eq!(reloads("certificates", "ok"), Some(1.0), "{text}");
    assert_eq!(reloads("certificates", "failed"), Some(0.0));
    assert_eq!(reloads("pools", "ok"), Some(1.0));
    assert_eq!(reloads("policy", "ok"), Some(1.0));
    assert_eq!(reloads("policy", "failed"), Some(1.0));
    assert_eq!(
        reloads("config", "ok"),
        Some(0.0),
        "only SIGHUP reads the file again"
    );
    if let Err(said) = promtool(&text) {
        panic!("promtool check metrics:\n{said}\non:\n{text}");
    }
}

/// Per-endpoint errors: every attempt an endpoint answers with a 5xx is counted as such.
#[tokio::test]
async fn endpoint_errors_count_each_5xx_attempt() {
    let failing = Origin::start(|_req| async { text(503, "down") }).await;
    let proxy = ProxyBuilder::for_origin(&failing).admin(None).start().await;
    let mut c = h1(proxy.http).await;
    for _ in 0..2 {
        let r = send(&mut c, get("/", "example.test")).await;
        assert_eq!(r.status(), 503);
        body_bytes(r).await;
    }
    let (_, text) = scrape(proxy.admin.unwrap(), None).await;
    let endpoint = [("pool", "web"), ("endpoint", &*failing.addr.to_string())];
    let attempts = sample(&text, "sluice_upstream_requests_total", &endpoint).unwrap();
    assert!(attempts >= 2.0, "{text}");
    assert_eq!(attempts as usize, failing.hits());
    let kind = |k| {
        let mut l = endpoint.to_vec();
        l.push(("kind", k));
        sample(&text, "sluice_upstream_errors_total", &l)
    };
    assert_eq!(kind("status_5xx"), Some(attempts), "{text}");
    assert_eq!(kind("broken"), Some(0.0));
    if let Err(said) = promtool(&text) {
        panic!("promtool check metrics:\n{said}\non:\n{text}");
    }
}
