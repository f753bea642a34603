//! Header duties of an HTTP intermediary (RFC 9110 §7.6): hop-by-hop removal, `Via`,
//! and the de-facto `X-Forwarded-*` headers.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop fields that are never forwarded, whether or not `Connection` names them.
/// RFC 9110 §7.6.1 plus the legacy `Keep-Alive` and `Proxy-Connection` (RFC 9112 §C.2.2).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// What a request's hop-by-hop headers asked for, captured before they are removed.
#[derive(Debug, Default, Clone)]
pub struct HopInfo {
    /// `TE` contained `trailers` (needed by gRPC over h2).
    pub te_trailers: bool,
    /// The `Upgrade` value when `Connection` contained `upgrade`.
    pub upgrade: Option<HeaderValue>,
}

/// Removes hop-by-hop fields and every field named in `Connection`.
/// Returns what the removed fields said, for the caller to re-add where appropriate.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> HopInfo {
    let mut info = HopInfo::default();
    // Fast path: most requests over keep-alive carry none of these.
    if !HOP_BY_HOP.iter().any(|h| headers.contains_key(h)) {
        return info;
    }
    let mut named: Vec<HeaderName> = Vec::new();
    let mut wants_upgrade = false;
    for value in headers.get_all(header::CONNECTION) {
        let Ok(s) = value.to_str() else { continue };
        for token in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token.eq_ignore_ascii_case("upgrade") {
                wants_upgrade = true;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    if wants_upgrade {
        info.upgrade = headers.get(header::UPGRADE).cloned();
    }
    info.te_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str()
            .map(|s| {
                s.split(',').any(|t| {
                    t.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .eq_ignore_ascii_case("trailers")
                })
            })
            .unwrap_or(false)
    });
    for name in named {
        // A client may not use `Connection` to strip end-to-end framing we rely on.
        if name != header::HOST && name != header::CONTENT_LENGTH {
            headers.remove(&name);
        }
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
    info
}

/// Appends `value` to a comma-separated list field, or sets it when absent (the common case:
/// no string is built then).
pub fn append_list(headers: &mut HeaderMap, name: HeaderName, value: &HeaderValue) {
    if !headers.contains_key(&name) {
        headers.insert(name, value.clone());
        return;
    }
    let Ok(value) = value.to_str() else { return };
    let mut joined = String::new();
    for prev in headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        if !prev.trim().is_empty() {
            joined.push_str(prev.trim());
            joined.push_str(", ");
        }
    }
    joined.push_str(value);
    if let Ok(v) = HeaderValue::from_str(&joined) {
        // Several field lines become one: the list semantics are the same (RFC 9110 §5.3).
        headers.insert(name, v);
    }
}

/// The `Via` value for a message received with `version`.
pub fn via_value(version: http::Version, pseudonym: &str) -> String {
    let v = match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    };
    format!("{v} {pseudonym}")
}

/// Appends one `Via` entry without disturbing earlier ones.
pub fn add_via(headers: &mut HeaderMap, value: &HeaderValue) {
    headers.append(header::VIA, value.clone());
}
