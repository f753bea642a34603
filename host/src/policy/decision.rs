//! A guest's decision, checked and converted to host types.
//!
//! Everything a guest returns is untrusted input: header names and values must be valid
//! HTTP, framing headers are the host's alone (editing `content-length` or
//! `transfer-encoding` would let a policy desynchronise the connection), a rewrite must be an
//! origin-form target and a local response a final status. A decision that breaks a rule is a
//! policy failure, handled like a trap.

use super::bindings::{v02, v03};
use super::{Algorithm, Upstreams};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{StatusCode, uri::PathAndQuery};

/// What to do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Forward(Forward),
    Respond(LocalResponse),
}

/// Send the request upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    /// `None`: the default pool.
    pub pool: Option<String>,
    pub endpoint: Option<String>,
    /// The algorithm for this request; `None`: the pool's.
    pub algorithm: Option<Algorithm>,
    pub hash_key: Option<Vec<u8>>,
    pub cache: CachePolicy,
    pub request_edits: Vec<HeaderEdit>,
    pub response_edits: Vec<HeaderEdit>,
    pub rewrite: Option<PathAndQuery>,
}

impl Forward {
    /// Forward to the default pool with no edits: what `fail = "open"` does.
    pub fn to_default_pool() -> Forward {
        Forward {
            pool: None,
            endpoint: None,
            algorithm: None,
            hash_key: None,
            cache: CachePolicy::default(),
            request_edits: Vec::new(),
            response_edits: Vec::new(),
            rewrite: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CachePolicy {
    pub key: Option<Vec<u8>>,
    pub bypass: bool,
    pub ttl_secs: Option<u32>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditOp {
    Set,
    Append,
    Remove,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeaderEdit {
    pub op: EditOp,
    pub name: HeaderName,
    pub value: HeaderValue,
}

impl HeaderEdit {
    /// Applies this edit to `headers`.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        match self.op {
            EditOp::Set => {
                headers.insert(self.name.clone(), self.value.clone());
            }
            EditOp::Append => {
                headers.append(self.name.clone(), self.value.clone());
            }
            EditOp::Remove => {
                headers.remove(&self.name);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LocalResponse {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// What the response phase (`on-response`) does with a response head.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseAction {
    Serve(ResponseChanges),
    /// Answer with this instead of the response.
    Respond(LocalResponse),
}

/// Changes to a response about to be served.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseChanges {
    /// Applied after the decision's response edits.
    pub edits: Vec<HeaderEdit>,
    /// Replaces the decision's TTL for storing this response (upstream responses only).
    pub ttl_secs: Option<u32>,
    /// Added to the decision's tags (upstream responses only).
    pub tags: Vec<String>,
    /// Serve, but do not store (upstream responses only).
    pub no_store: bool,
}

/// Headers that describe the message's framing or the connection, owned by the host.
const RESERVED: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

fn header_name(name: &str, what: &str) -> Result<HeaderName, String> {
    let n = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{what}: {name:?} is not a valid header name"))?;
    if RESERVED.contains(&n.as_str()) {
        return Err(format!(
            "{what}: {:?} cannot be set by a policy (the host owns framing and connection headers)",
            n.as_str()
        ));
    }
    Ok(n)
}

/// At most this many header edits in one list (request, response, a local response's
/// headers) and this many bytes in one value: far above what a policy needs (Envoy accepts
/// 100 request headers and 60 KiB in all by default), and a guest cannot make the proxy send
/// unbounded headers to a client or an origin.
const MAX_EDITS: usize = 1000;
const MAX_VALUE: usize = 64 * 1024;

fn header_value(name: &HeaderName, value: Vec<u8>, what: &str) -> Result<HeaderValue, String> {
    if value.len() > MAX_VALUE {
        return Err(format!(
            "{what}: the value for {:?} is {} bytes, over the {MAX_VALUE} a policy may set",
            name.as_str(),
            value.len()
        ));
    }
    HeaderValue::from_maybe_shared(Bytes::from(value)).map_err(|_| {
        format!(
            "{what}: the value for {:?} is not a valid field value",
            name.as_str()
        )
    })
}

/// One header edit from a guest, checked: a valid name the host does not own, a valid value
/// within [`MAX_VALUE`] (ignored for a removal).
pub fn checked_edit(
    op: EditOp,
    name: &str,
    value: Vec<u8>,
    what: &str,
) -> Result<HeaderEdit, String> {
    let name = header_name(name, what)?;
    let value = match op {
        EditOp::Remove => HeaderValue::from_static(""),
        _ => header_value(&name, value, what)?,
    };
    Ok(HeaderEdit { op, name, value })
}

fn too_many(n: usize, what: &str) -> Result<(), String> {
    if n > MAX_EDITS {
        return Err(format!(
            "{n} {what}s, over the {MAX_EDITS} a policy may make"
        ));
    }
    Ok(())
}

/// A guest's answer, checked against the rules above (and the configured pools) and converted
/// to host types.
pub(super) trait Checked {
    type Output;
    fn check(self, upstreams: &dyn Upstreams) -> Result<Self::Output, String>;
}

/// The conversions for the generated `types` module of one package version (0.2 and 0.3 share
/// the shape of everything but the response phase).
macro_rules! checked {
    ($name:ident, $($p:ident)::+) => {
        mod $name {
            use super::*;
            use $($p)::+ as wit;

pub(super) fn edits(list: Vec<wit::HeaderEdit>, what: &str) -> Result<Vec<HeaderEdit>, String> {
    too_many(list.len(), what)?;
    list.into_iter()
        .map(|e| {
            let op = match e.op {
                wit::EditOp::Set => EditOp::Set,
                wit::EditOp::Append => EditOp::Append,
                wit::EditOp::Remove => EditOp::Remove,
            };
            checked_edit(op, &e.name, e.value, what)
        })
        .collect()
}

/// The host's algorithm for the WIT's: the one place the two enums meet (`target.algorithm`
/// here, `balancer.pick` in `host.rs`).
impl From<wit::Algorithm> for Algorithm {
    fn from(a: wit::Algorithm) -> Algorithm {
    match a {
        wit::Algorithm::RoundRobin => Algorithm::RoundRobin,
        wit::Algorithm::WeightedRoundRobin => Algorithm::WeightedRoundRobin,
        wit::Algorithm::LeastConnections => Algorithm::LeastConnections,
        wit::Algorithm::LeastRequest => Algorithm::LeastRequest,
        wit::Algorithm::LeastResponseTime => Algorithm::LeastResponseTime,
        wit::Algorithm::Random => Algorithm::Random,
        wit::Algorithm::IpHash => Algorithm::IpHash,
        wit::Algorithm::RingHash => Algorithm::RingHash,
        wit::Algorithm::Maglev => Algorithm::Maglev,
    }
    }
}

impl Checked for wit::Decision {
    type Output = Decision;
    fn check(self, upstreams: &dyn Upstreams) -> Result<Decision, String> {
    let d = self;
    match d {
        wit::Decision::Forward(f) => {
            upstreams.check_target(f.target.pool.as_deref(), f.target.endpoint.as_deref())?;
            let rewrite = f
                .rewrite
                .map(|r| {
                    if !r.starts_with('/') {
                        return Err(format!("rewrite {r:?} must start with '/'"));
                    }
                    PathAndQuery::try_from(r.as_str())
                        .map_err(|_| format!("rewrite {r:?} is not a valid path and query"))
                })
                .transpose()?;
            Ok(Decision::Forward(Forward {
                pool: f.target.pool,
                endpoint: f.target.endpoint,
                algorithm: f.target.algorithm.map(Algorithm::from),
                hash_key: f.target.hash_key,
                cache: CachePolicy {
                    key: f.cache.key,
                    bypass: f.cache.bypass,
                    ttl_secs: f.cache.ttl_secs,
                    tags: f.cache.tags,
                },
                request_edits: edits(f.request_edits, "request edit")?,
                response_edits: edits(f.response_edits, "response edit")?,
                rewrite,
            }))
        }
        wit::Decision::Respond(r) => Ok(Decision::Respond(local(r)?)),
    }
    }
}

pub(super) fn local(r: wit::LocalResponse) -> Result<LocalResponse, String> {
    let status = StatusCode::from_u16(r.status)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .ok_or_else(|| format!("local response status {} is not 200..=599", r.status))?;
    too_many(r.headers.len(), "local response header")?;
    let headers = r
        .headers
        .into_iter()
        .map(|h| {
            let name = header_name(&h.name, "local response header")?;
            let value = header_value(&name, h.value, "local response header")?;
            Ok((name, value))
        })
        .collect::<Result<_, String>>()?;
    Ok(LocalResponse {
        status,
        headers,
        body: Bytes::from(r.body),
    })
}

        }
    };
}

checked!(v03_types, v03::sluice::policy::types);
checked!(v02_types, v02::sluice::policy::types);

impl Checked for v03::sluice::policy::types::ResponseDecision {
    type Output = ResponseAction;
    fn check(self, _: &dyn Upstreams) -> Result<ResponseAction, String> {
        use v03::sluice::policy::types::ResponseDecision as D;
        Ok(match self {
            D::Serve(s) => ResponseAction::Serve(ResponseChanges {
                edits: v03_types::edits(s.edits, "response-phase edit")?,
                ttl_secs: s.ttl_secs,
                tags: s.tags,
                no_store: s.no_store,
            }),
            D::Respond(r) => ResponseAction::Respond(v03_types::local(r)?),
        })
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn edits_json(list: &[HeaderEdit]) -> Vec<serde_json::Value> {
    use serde_json::json;
    list.iter()
        .map(|e| {
            let op = match e.op {
                EditOp::Set => "set",
                EditOp::Append => "append",
                EditOp::Remove => "remove",
            };
            match e.op {
                EditOp::Remove => json!({"op": op, "name": e.name.as_str()}),
                _ => json!({"op": op, "name": e.name.as_str(), "value": text(e.value.as_bytes())}),
            }
        })
        .collect()
}

impl LocalResponse {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"respond": {
            "status": self.status.as_u16(),
            "headers": self.headers.iter()
                .map(|(n, v)| serde_json::json!([n.as_str(), text(v.as_bytes())]))
                .collect::<Vec<_>>(),
            "body": text(&self.body),
        }})
    }
}

/// The decision as JSON, for `sluice policy test` and its golden files. Byte strings are shown
/// as text (lossily, when not UTF-8). A forward has `"algorithm"` (its config name, e.g.
/// `"ring_hash"`) only when the policy chose one.
impl Decision {
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Decision::Forward(f) => {
                let mut forward = json!({
                    "pool": f.pool,
                    "endpoint": f.endpoint,
                    "hash_key": f.hash_key.as_deref().map(text),
                    "cache": {
                        "key": f.cache.key.as_deref().map(text),
                        "bypass": f.cache.bypass,
                        "ttl_secs": f.cache.ttl_secs,
                        "tags": f.cache.tags,
                    },
                    "request_edits": edits_json(&f.request_edits),
                    "response_edits": edits_json(&f.response_edits),
                    "rewrite": f.rewrite.as_ref().map(|r| r.as_str()),
                });
                // Only when the policy chose one, so decisions without it read as before.
                if let Some(a) = f.algorithm {
                    forward["algorithm"] = json!(a.name());
                }
                json!({ "forward": forward })
            }
            Decision::Respond(r) => r.to_json(),
        }
    }
}

/// The response phase's answer as JSON, for `sluice policy test`.
impl ResponseAction {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ResponseAction::Serve(c) => serde_json::json!({"serve": {
                "edits": edits_json(&c.edits),
                "ttl_secs": c.ttl_secs,
                "tags": c.tags,
                "no_store": c.no_store,
            }}),
            ResponseAction::Respond(r) => r.to_json(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wit_algorithm_maps_to_a_distinct_host_algorithm() {
        use crate::policy::bindings::v03::sluice::policy::types as wit;
        let all = [
            wit::Algorithm::RoundRobin,
            wit::Algorithm::WeightedRoundRobin,
            wit::Algorithm::LeastConnections,
            wit::Algorithm::LeastRequest,
            wit::Algorithm::LeastResponseTime,
            wit::Algorithm::Random,
            wit::Algorithm::IpHash,
            wit::Algorithm::RingHash,
            wit::Algorithm::Maglev,
        ];
        let mapped: Vec<Algorithm> = all.into_iter().map(Algorithm::from).collect();
        assert_eq!(mapped, Algorithm::ALL);
    }

    #[test]
    fn json_names_the_algorithm_only_when_set() {
        let mut f = Forward::to_default_pool();
        let json = Decision::Forward(f.clone()).to_json();
        assert!(json["forward"].get("algorithm").is_none(), "{json}");
        f.algorithm = Some(Algorithm::RingHash);
        let json = Decision::Forward(f).to_json();
        assert_eq!(json["forward"]["algorithm"], "ring_hash");
    }
}
