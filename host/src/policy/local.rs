//! `sluice policy test`: run a policy on requests described on the command line or in a
//! corpus file, without a proxy. Like a local runtime for edge functions: the same engine,
//! limits and host imports as production, but no rehearsal, so a broken module can be examined.

use super::revision::{PolicyFailure, Revision};
use super::{Decision, EndpointInfo, LoadError, PolicyRequest, Upstreams};
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
        Ok(TestRequest {
            method,
            uri,
            headers: map,
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
/// [`Decision::to_json`]); a failure matches `{"failure": "trap" | "deadline" | ...}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusCase {
    pub request: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    pub client: Option<IpAddr>,
    pub expect: Value,
}

/// The decision (or failure) as the JSON that corpora match against.
pub fn outcome_json(result: &Result<Decision, PolicyFailure>) -> Value {
    match result {
        Ok(d) => d.to_json(),
        Err(f) => serde_json::json!({
            "failure": f.kind,
            "detail": f.detail,
        }),
    }
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
