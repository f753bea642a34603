//! A guest's decision, checked and converted to host types.
//!
//! Everything a guest returns is untrusted input: header names and values must be valid
//! HTTP, framing headers are the host's alone (editing `content-length` or
//! `transfer-encoding` would let a policy desynchronise the connection), a rewrite must be an
//! origin-form target and a local response a final status. A decision that breaks a rule is a
//! policy failure, handled like a trap.

use super::bindings::sluice::policy::types as wit;
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

fn header_value(name: &HeaderName, value: Vec<u8>, what: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_maybe_shared(Bytes::from(value)).map_err(|_| {
        format!(
            "{what}: the value for {:?} is not a valid field value",
            name.as_str()
        )
    })
}

fn edits(list: Vec<wit::HeaderEdit>, what: &str) -> Result<Vec<HeaderEdit>, String> {
    list.into_iter()
        .map(|e| {
            let name = header_name(&e.name, what)?;
            let (op, value) = match e.op {
                wit::EditOp::Set => (EditOp::Set, header_value(&name, e.value, what)?),
                wit::EditOp::Append => (EditOp::Append, header_value(&name, e.value, what)?),
                wit::EditOp::Remove => (EditOp::Remove, HeaderValue::from_static("")),
            };
            Ok(HeaderEdit { op, name, value })
        })
        .collect()
}

/// The host's algorithm for the WIT's: the one place the two enums meet (`target.algorithm`
/// here, `balancer.pick` in `host.rs`).
pub(super) fn algorithm_from_wit(a: wit::Algorithm) -> Algorithm {
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

/// Checks a guest decision against the rules above and the configured pools.
pub(super) fn convert(d: wit::Decision, upstreams: &dyn Upstreams) -> Result<Decision, String> {
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
                algorithm: f.target.algorithm.map(algorithm_from_wit),
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
        wit::Decision::Respond(r) => {
            let status = StatusCode::from_u16(r.status)
                .ok()
                .filter(|s| (200..=599).contains(&s.as_u16()))
                .ok_or_else(|| format!("local response status {} is not 200..=599", r.status))?;
            let headers = r
                .headers
                .into_iter()
                .map(|h| {
                    let name = header_name(&h.name, "local response header")?;
                    let value = header_value(&name, h.value, "local response header")?;
                    Ok((name, value))
                })
                .collect::<Result<_, String>>()?;
            Ok(Decision::Respond(LocalResponse {
                status,
                headers,
                body: Bytes::from(r.body),
            }))
        }
    }
}

/// The decision as JSON, for `sluice policy test` and its golden files. Byte strings are shown
/// as text (lossily, when not UTF-8). A forward has `"algorithm"` (its config name, e.g.
/// `"ring_hash"`) only when the policy chose one.
impl Decision {
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let edits = |list: &[HeaderEdit]| {
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
                .collect::<Vec<_>>()
        };
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
                    "request_edits": edits(&f.request_edits),
                    "response_edits": edits(&f.response_edits),
                    "rewrite": f.rewrite.as_ref().map(|r| r.as_str()),
                });
                // Only when the policy chose one, so decisions without it read as before.
                if let Some(a) = f.algorithm {
                    forward["algorithm"] = json!(a.name());
                }
                json!({ "forward": forward })
            }
            Decision::Respond(r) => json!({"respond": {
                "status": r.status.as_u16(),
                "headers": r.headers.iter()
                    .map(|(n, v)| json!([n.as_str(), text(v.as_bytes())]))
                    .collect::<Vec<_>>(),
                "body": text(&r.body),
            }}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wit_algorithm_maps_to_a_distinct_host_algorithm() {
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
        let mapped: Vec<Algorithm> = all.into_iter().map(algorithm_from_wit).collect();
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
