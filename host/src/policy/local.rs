//! `sluice policy test`: run a policy on requests described on the command line or in a
//! corpus file, without a proxy. Like a local runtime for edge functions: the same engine,
//! limits and host imports as production, but no rehearsal, so a broken module can be examined.

use super::revision::{Context, PolicyFailure, Revision};
use super::store::ResponseHead;
use super::{
    Decision, EndpointInfo, LoadError, PolicyRequest, ResponseAction, ResponseSource, Upstreams,
};
use crate::config::PolicyConfig;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A policy loaded for local testing.
pub struct LocalPolicy {
    revision: Revision,
}

impl LocalPolicy {
    /// Compiles `bytes`. Without `upstreams` every pool and endpoint name is accepted and
    /// `balancer.pick` finds nothing. There is no HTTP cache: `cache.peek` finds nothing and
    /// purges return 0.
    pub fn load(
        bytes: &[u8],
        config: &PolicyConfig,
        upstreams: Option<Arc<dyn Upstreams>>,
    ) -> Result<LocalPolicy, LoadError> {
        let upstreams = upstreams.unwrap_or_else(|| Arc::new(AnyUpstream));
        Ok(LocalPolicy {
            revision: Revision::load(bytes, config, 1, upstreams, None)?,
        })
    }

    pub fn decide(&self, req: &TestRequest) -> Result<Decision, PolicyFailure> {
        self.revision.decide(req.to_policy_request()).1
    }

    /// The `sluice:policy` version the component was built for.
    pub fn world(&self) -> &str {
        &self.revision.world
    }

    /// Whether the component exports `on-response`.
    pub fn has_response_phase(&self) -> bool {
        self.revision.has_response_phase()
    }

    /// Runs `on-response` on `resp` as the response to `req`. A policy without the export
    /// serves every response unchanged, as the proxy would.
    pub fn respond(
        &self,
        req: &TestRequest,
        resp: &TestResponse,
    ) -> Result<ResponseAction, PolicyFailure> {
        if !self.has_response_phase() {
            return Ok(ResponseAction::Serve(Default::default()));
        }
        let context = Context {
            request: req.to_policy_request(),
            response: Some(ResponseHead {
                status: resp.status,
                headers: resp.headers.clone(),
                source: Some(resp.source),
                endpoint: match resp.source {
                    ResponseSource::Upstream => Some("127.0.0.1:80".into()),
                    ResponseSource::Cache => None,
                },
            }),
        };
        self.revision.on_response(context, false).1
    }
}

/// A response head for the response phase: `STATUS` plus headers and where it came from.
#[derive(Debug, Clone)]
pub struct TestResponse {
    status: u16,
    headers: http::HeaderMap,
    source: ResponseSource,
}

impl TestResponse {
    /// Parses `503` (100..=599), `name: value` header lines and `upstream` or `cache`.
    pub fn parse(status: &str, headers: &[String], source: &str) -> Result<TestResponse, String> {
        let status: u16 = status
            .trim()
            .parse()
            .ok()
            .filter(|s| (100..=599).contains(s))
            .ok_or_else(|| format!("response {status:?}: expected a status code, e.g. `503`"))?;
        let source = match source {
            "upstream" => ResponseSource::Upstream,
            "cache" => ResponseSource::Cache,
            other => return Err(format!("source {other:?}: expected `upstream` or `cache`")),
        };
        Ok(TestResponse {
            status,
            headers: header_map(headers)?,
            source,
        })
    }
}

fn header_map(headers: &[String]) -> Result<http::HeaderMap, String> {
    let mut map = http::HeaderMap::new();
    for h in headers {
        let (n, v) = h
            .split_once(':')
            .ok_or_else(|| format!("header {h:?}: expected `name: value`"))?;
        let name = http::HeaderName::from_bytes(n.trim().as_bytes())
            .map_err(|_| format!("header {h:?}: invalid name"))?;
        let value = http::HeaderValue::from_str(v.trim())
            .map_err(|_| format!("header {h:?}: invalid value"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Accepts any target: for testing a policy without the config it will run with.
struct AnyUpstream;

impl Upstreams for AnyUpstream {
    fn pick(
        &self,
        _: Option<&str>,
        _: Option<super::Algorithm>,
        _: Option<&[u8]>,
        _: std::net::IpAddr,
    ) -> Option<Arc<str>> {
        None
    }
    fn endpoints(&self, _: &str) -> Option<Vec<EndpointInfo>> {
        None
    }
    fn health(&self, _: &str, _: &str) -> Option<super::HealthState> {
        None
    }
    fn check_target(&self, _: Option<&str>, _: Option<&str>) -> Result<(), String> {
        Ok(())
    }
}

/// A request described as `METHOD absolute-URL` plus headers and a client address.
#[derive(Debug, Clone)]
pub struct TestRequest {
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    client: IpAddr,
}

impl TestRequest {
    /// Parses `GET https://example.com/path?q=1` and `name: value` header lines.
    pub fn parse(line: &str, headers: &[String], client: IpAddr) -> Result<TestRequest, String> {
        let (method, url) = line.trim().split_once(' ').ok_or_else(|| {
            format!("{line:?}: expected `METHOD URL`, e.g. `GET https://example.com/`")
        })?;
        let method = http::Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("{method:?} is not a valid method"))?;
        let uri: http::Uri = url
            .trim()
            .parse()
            .map_err(|e| format!("{url:?} is not a valid URL: {e}"))?;
        match uri.scheme_str() {
            Some("http" | "https") if uri.authority().is_some() => {}
            _ => return Err(format!("{url:?}: use an absolute http:// or https:// URL")),
        }
        Ok(TestRequest {
            method,
            uri,
            headers: header_map(headers)?,
            client,
        })
    }

    fn to_policy_request(&self) -> PolicyRequest {
        let authority = self.uri.authority().cloned();
        let tls = self.uri.scheme_str() == Some("https");
        let mut headers = self.headers.clone();
        if let Some(a) = &authority {
            if !headers.contains_key(http::header::HOST) {
                if let Ok(v) = http::HeaderValue::from_str(a.as_str()) {
                    headers.insert(http::header::HOST, v);
                }
            }
        }
        let path = self
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = self.method.clone();
        parts.uri = http::Uri::from(path);
        parts.headers = headers;
        PolicyRequest {
            parts,
            sni: tls
                .then(|| authority.as_ref().map(|a| Arc::from(a.host())))
                .flatten(),
            authority,
            client: SocketAddr::new(self.client, 40000),
            tls,
        }
    }
}

/// One corpus line: `{"request": "GET https://h/p", "headers": {"k": "v"}, "client": "ip",
/// "expect": {...}}`. `expect` is matched as a subset of the decision's JSON (see
/// [`Decision::to_json`]); a failure matches `{"failure": "trap" | "deadline" | ...}`. With
/// `"response": {"status": 503, "headers": {...}, "source": "upstream"}` the response phase
/// runs too, and `expect` matches `{"decision": ..., "response": ...}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusCase {
    pub request: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    pub client: Option<IpAddr>,
    pub response: Option<CorpusResponse>,
    pub expect: Value,
}

/// The response head of a corpus case.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusResponse {
    pub status: u16,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default = "upstream")]
    pub source: String,
}

fn upstream() -> String {
    "upstream".into()
}

/// The decision (or failure) as the JSON that corpora match against.
pub fn outcome_json(result: &Result<Decision, PolicyFailure>) -> Value {
    match result {
        Ok(d) => d.to_json(),
        Err(f) => failure_json(f),
    }
}

/// The response phase's answer (or failure) as JSON.
pub fn response_json(result: &Result<ResponseAction, PolicyFailure>) -> Value {
    match result {
        Ok(a) => a.to_json(),
        Err(f) => failure_json(f),
    }
}

fn failure_json(f: &PolicyFailure) -> Value {
    serde_json::json!({
        "failure": f.kind,
        "phase": f.phase,
        "detail": f.detail,
    })
}

/// Whether every field in `expected` is present in `actual` with a matching value: objects
/// match as subsets, everything else must be equal.
pub fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| matches(v, av))),
        _ => expected == actual,
    }
}

/// What a corpus run found: how many cases matched, and a report line per mismatch.
#[derive(Debug)]
pub struct CorpusReport {
    pub passed: usize,
    pub mismatches: Vec<String>,
}

/// Runs every case of the corpus file at `path` (see [`CorpusCase`]) on `policy`. A case
/// without `client` uses `client`. An unreadable file or a malformed line is an error naming
/// the line.
pub fn run_corpus(
    policy: &LocalPolicy,
    path: &std::path::Path,
    client: IpAddr,
) -> Result<CorpusReport, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let mut report = CorpusReport {
        passed: 0,
        mismatches: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let at = |e: String| format!("{}:{line_no}: {e}", path.display());
        let case: CorpusCase = serde_json::from_str(line).map_err(|e| at(e.to_string()))?;
        let lines = |h: &std::collections::BTreeMap<String, String>| -> Vec<String> {
            h.iter().map(|(k, v)| format!("{k}: {v}")).collect()
        };
        let req = TestRequest::parse(
            &case.request,
            &lines(&case.headers),
            case.client.unwrap_or(client),
        )
        .map_err(at)?;
        let decided = policy.decide(&req);
        let actual = match &case.response {
            None => outcome_json(&decided),
            Some(r) => {
                let resp =
                    TestResponse::parse(&r.status.to_string(), &lines(&r.headers), &r.source)
                        .map_err(at)?;
                // The proxy runs the response phase only on responses to forwarded requests.
                let responded = matches!(decided, Ok(Decision::Forward(_)))
                    .then(|| response_json(&policy.respond(&req, &resp)));
                serde_json::json!({"decision": outcome_json(&decided), "response": responded})
            }
        };
        if matches(&case.expect, &actual) {
            report.passed += 1;
        } else {
            report.mismatches.push(format!(
                "{}:{line_no}: MISMATCH for `{}`\n  expected (subset): {}\n  actual:            {}",
                path.display(),
                case.request,
                case.expect,
                actual
            ));
        }
    }
    Ok(report)
}
