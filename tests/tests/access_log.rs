//! The access log written to a file as JSON lines over real traffic: every documented field
//! on every line, the request id and trace id the upstream saw, the pool, the deciding
//! policy revision and its decision, the cache status; the text format; and a path that
//! cannot be opened refused at start with the reason.

use sluice_tests::*;
use std::time::Duration;

/// The fields of a JSON line, in order (README "Access log").
const FIELDS: [&str; 23] = [
    "time",
    "request_id",
    "trace_id",
    "client",
    "client_from",
    "peer",
    "listener",
    "sni",
    "method",
    "authority",
    "path",
    "protocol",
    "user_agent",
    "status",
    "bytes_sent",
    "complete",
    "duration_ms",
    "response_headers_ms",
    "pool",
    "upstream",
    "policy_revision",
    "decision",
    "cache_status",
];

/// The file's lines once it has `n` (lines are written by a thread of their own, shortly
/// after each response ends).
async fn lines(path: &std::path::Path, n: usize) -> Vec<String> {
    for _ in 0..1000 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "the access log did not reach {n} lines: {:?}",
        std::fs::read_to_string(path)
    );
}

#[tokio::test]
async fn json_lines_carry_the_documented_fields_and_the_ids_the_upstream_saw() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .toml(&format!(
            "[log]\naccess_log = true\nformat = \"json\"\naccess_log_path = \"{}\"\n[cache]\ncapacity = \"1MiB\"\n",
            path.display()
        ))
        .start()
        .await;
    let mut c = h1(proxy.http).await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut req = get("/one?x=1", "example.test");
    req.headers_mut()
        .insert("traceparent", trace.parse().unwrap());
    req.headers_mut()
        .insert("user-agent", "log-test/1".parse().unwrap());
    let r = send(&mut c, req).await;
    assert_eq!(echoed(&r, "traceparent"), Some(trace), "passed on as it is");
    let request_id = echoed(&r, "x-request-id").unwrap().to_owned();
    body_bytes(r).await;
    // Without a traceparent the proxy starts a trace, and the upstream sees it.
    let r = send(&mut c, get("/two", "example.test")).await;
    let started = echoed(&r, "traceparent").unwrap().to_owned();
    body_bytes(r).await;
    let mut bad = get("/three", "example.test");
    bad.headers_mut().remove("host");
    let r = send(&mut c, bad).await;
    assert_eq!(r.status(), 400);
    body_bytes(r).await;

    let got = lines(&path, 3).await;
    let json: Vec<serde_json::Value> = got
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for (line, j) in got.iter().zip(&json) {
        let mut want = FIELDS.to_vec();
        want.sort_unstable();
        let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, want, "every field: {line}");
        let at: Vec<usize> = FIELDS
            .iter()
            .map(|f| line.find(&format!("\"{f}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "in order: {line}");
    }
    let first = &json[0];
    assert_eq!(first["request_id"], request_id.as_str());
    assert_eq!(first["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["authority"], "example.test");
    assert_eq!(first["path"], "/one?x=1");
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["user_agent"], "log-test/1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["complete"], true);
    assert_eq!(first["listener"], "http");
    assert_eq!(first["client_from"], "peer");
    assert_eq!(first["pool"], "web");
    assert_eq!(first["upstream"], origin.addr.to_string());
    assert_eq!(first["policy_revision"], 1);
    assert_eq!(first["decision"], "forward");
    assert!(
        first["cache_status"]
            .as_str()
            .unwrap()
            .contains("fwd=uri-miss"),
        "{first}"
    );
    assert!(first["bytes_sent"].as_u64().unwrap() > 0);
    assert!(
        first["duration_ms"].as_f64().unwrap() >= first["response_headers_ms"].as_f64().unwrap()
    );
    assert_eq!(json[1]["trace_id"].as_str(), started.get(3..35));

    let third = &json[2];
    assert_eq!(third["status"], 400);
    assert!(
        third["pool"].is_null() && third["upstream"].is_null(),
        "{third}"
    );
    assert!(
        third["policy_revision"].is_null(),
        "rejected before the policy: {third}"
    );
}

#[tokio::test]
async fn text_lines_and_an_unopenable_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.txt");
    let origin = Origin::echo("a").await;
    let proxy = ProxyBuilder::for_origin(&origin)
        .toml(&format!(
            "[log]\naccess_log = true\naccess_log_path = \"{}\"\n",
            path.display()
        ))
        .start()
        .await;
    let r = send(&mut h1(proxy.http).await, get("/t", "example.test")).await;
    body_bytes(r).await;
    let got = lines(&path, 1).await;
    let line = &got[0];
    assert!(
        line.contains(" \"GET example.test/t HTTP/1.1\" 200 "),
        "{line}"
    );
    assert!(
        line.contains(" pool=web ") && line.contains(" decision=forward "),
        "{line}"
    );

    let config = ProxyBuilder::for_origin(&origin)
        .toml("[log]\naccess_log = true\naccess_log_path = \"/nonexistent/dir/access.log\"\n")
        .config_text();
    let config = sluice::config::Config::parse(&config, "(test)", ".".as_ref()).unwrap();
    let err = match sluice::start(config).await {
        Ok(_) => panic!("started with an access log it cannot open"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("/nonexistent/dir/access.log"), "{err}");
    assert!(err.contains("No such file"), "{err}");
}

/// A stand-in OTLP/HTTP collector: decodes each POSTed batch and passes its spans on; the
/// first `refuse` POSTs are answered 503 and passed on to nobody.
async fn collector(
    refuse: usize,
) -> (
    Origin,
    tokio::sync::mpsc::UnboundedReceiver<opentelemetry_proto::tonic::trace::v1::ResourceSpans>,
) {
    use http_body_util::BodyExt;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let origin = Origin::start(move |req: hyper::Request<hyper::body::Incoming>| {
        let (tx, refused) = (tx.clone(), refused.clone());
        async move {
            use std::sync::atomic::Ordering;
            if refused.fetch_add(1, Ordering::Relaxed) < refuse {
                return text(503, "busy");
            }
            assert_eq!(req.uri().path(), "/v1/traces");
            assert_eq!(header_of(&req, "content-type"), "application/x-protobuf");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let batch = ExportTraceServiceRequest::decode(body).expect("protobuf");
            for r in batch.resource_spans {
                let _ = tx.send(r);
            }
            text(200, "")
        }
    })
    .await;
    (origin, rx)
}

fn header_of<B>(req: &hyper::Request<B>, name: &str) -> String {
    req.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// A proxy in front of `origin` exporting spans to `collector`, with more `[otlp]` lines.
async fn exporting_to(origin: &Origin, collector: &Origin, otlp: &str) -> TestProxy {
    ProxyBuilder::for_origin(origin)
        .toml(&format!(
            "[otlp]\nendpoint = \"http://{}/v1/traces\"\n{otlp}",
            collector.addr
        ))
        .admin(None)
        .start()
        .await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr<'s>(
    span: &'s opentelemetry_proto::tonic::trace::v1::Span,
    key: &str,
) -> Option<&'s opentelemetry_proto::tonic::common::v1::any_value::Value> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
}

/// With `[otlp]`, sluice takes part in the trace: the upstream's `traceparent` names sluice's
/// span as its parent, and that span (a child of the client's) reaches the collector with the
/// request's attributes. An unsampled trace is propagated and not exported.
#[tokio::test]
async fn spans_are_exported_over_otlp_and_the_upstream_sees_their_ids() {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let (collector, mut batches) = collector(0).await;
    let origin = Origin::echo("a").await;
    let otlp = "service_name = \"edge\"\nflush_interval = \"20ms\"\n";
    let proxy = exporting_to(&origin, &collector, otlp).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut c = h1(proxy.http).await;

    // Not sampled (flags 00): passed on with sluice's span id, never exported.
    let quiet = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let mut req = get("/quiet", "localhost");
    req.headers_mut()
        .insert("traceparent", quiet.parse().unwrap());
    let resp = send(&mut c, req).await;
    let seen = echoed(&resp, "traceparent").unwrap().to_owned();
    assert!(
        seen.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "{seen}"
    );
    assert!(
        seen.ends_with("-00") && !seen.contains("b7ad6b7169203331"),
        "{seen}"
    );
    body_bytes(resp).await;

    let mut req = get("/traced?x=1", "localhost");
    let parent = "00f067aa0ba902b7";
    req.headers_mut().insert(
        "traceparent",
        format!("00-{trace}-{parent}-01").parse().unwrap(),
    );
    let resp = send(&mut c, req).await;
    assert_eq!(resp.status(), 200);
    let upstream = echoed(&resp, "traceparent").unwrap().to_owned();
    let ours = &upstream[36..52];
    assert!(upstream.starts_with(&format!("00-{trace}-")) && upstream.ends_with("-01"));
    assert_ne!(ours, parent, "sluice's own span is the upstream's parent");
    body_bytes(resp).await;

    let batch = guarded("the collector gets a batch", batches.recv())
        .await
        .unwrap();
    let service = &batch.resource.as_ref().unwrap().attributes[0];
    assert_eq!(service.key, "service.name");
    assert_eq!(
        service.value.as_ref().unwrap().value,
        Some(Value::StringValue("edge".into()))
    );
    let spans = &batch.scope_spans[0].spans;
    assert_eq!(spans.len(), 1, "only the sampled request: {spans:?}");
    let span = &spans[0];
    assert_eq!(hex(&span.trace_id), trace);
    assert_eq!(hex(&span.span_id), ours);
    assert_eq!(hex(&span.parent_span_id), parent);
    assert_eq!(span.name, "GET");
    assert_eq!(span.kind, 2, "server");
    assert!(span.end_time_unix_nano > span.start_time_unix_nano);
    let s = |v: &str| Some(Value::StringValue(v.into()));
    assert_eq!(attr(span, "http.request.method").cloned(), s("GET"));
    assert_eq!(attr(span, "url.path").cloned(), s("/traced"));
    assert_eq!(attr(span, "url.query").cloned(), s("x=1"));
    assert_eq!(attr(span, "sluice.pool").cloned(), s("web"));
    assert_eq!(
        attr(span, "http.response.status_code").cloned(),
        Some(Value::IntValue(200))
    );
    assert!(span.status.is_none(), "a 200 is not an error");

    // Without a traceparent, a new sampled trace (ratio 1 by default).
    let resp = send(&mut c, get("/new", "localhost")).await;
    let started = echoed(&resp, "traceparent").unwrap().to_owned();
    body_bytes(resp).await;
    let batch = guarded("a second batch", batches.recv()).await.unwrap();
    let span = &batch.scope_spans[0].spans[0];
    assert_eq!(hex(&span.trace_id), started[3..35]);
    assert_eq!(hex(&span.span_id), started[36..52]);
    assert!(span.parent_span_id.is_empty(), "a root span");

    // The first batch's POST finished before the second was sent.
    let resp = send(
        &mut h1(proxy.admin.unwrap()).await,
        get("/metrics", "admin"),
    )
    .await;
    let metrics = String::from_utf8(body_bytes(resp).await.to_vec()).unwrap();
    let exported: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_otlp_spans_total{outcome=\"exported\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!((1..=2).contains(&exported), "{exported}");
    assert!(metrics.contains("sluice_otlp_spans_total{outcome=\"dropped\"} 0"));
}

/// A collector that answers 503 gets the batch again (twice at most) rather than losing it.
#[tokio::test]
async fn a_batch_the_collector_refuses_with_503_is_sent_again() {
    let (collector, mut batches) = collector(2).await;
    let origin = Origin::echo("a").await;
    let proxy = exporting_to(&origin, &collector, "flush_interval = \"10ms\"\n").await;
    let resp = send(&mut h1(proxy.http).await, get("/", "localhost")).await;
    let started = echoed(&resp, "traceparent").unwrap().to_owned();
    body_bytes(resp).await;
    let batch = guarded("the third attempt gets through", batches.recv())
        .await
        .unwrap();
    let span = &batch.scope_spans[0].spans[0];
    assert_eq!(hex(&span.trace_id), started[3..35]);
    assert_eq!(collector.hits(), 3, "two refusals, then the batch");
}
