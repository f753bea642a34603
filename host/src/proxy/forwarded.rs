//! Who the client is, and which of its claims about earlier hops are believed.
//!
//! A peer in `[proxy] trusted_proxies` is another proxy of ours (a load balancer, a CDN): its
//! `X-Forwarded-For` chain is extended, its `X-Forwarded-Proto`/`-Host`, `Forwarded`,
//! `X-Real-IP` and `X-Request-Id` pass as they are, and with `client_ip = "forwarded"` the
//! client is the rightmost chain address that is not itself trusted. From any other peer
//! those fields are removed before the policy sees the request, and replaced by what this
//! proxy knows (`rewrite_request_headers`), so a client cannot claim another address or id.
//! With `forwarded_headers = false` they are left as they came.

use crate::config::{ClientIp, ProxySettings};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Fields only a trusted peer may set.
const CLAIMS: [HeaderName; 6] = [
    X_FORWARDED_FOR,
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    http::header::FORWARDED,
    HeaderName::from_static("x-real-ip"),
    X_REQUEST_ID,
];

/// The client of one request.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub ip: IpAddr,
    /// The peer is a trusted proxy (its forwarding fields were kept).
    pub trusted_peer: bool,
    /// `ip` came from `X-Forwarded-For`, not from the connection.
    pub forwarded: bool,
    /// This proxy's span of the request, when spans are exported and the trace is sampled.
    pub span: Option<SpanIds>,
}

/// The ids of this proxy's span of a request (W3C Trace Context).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    pub trace: u128,
    pub span: u64,
    /// The client's span (`parent-id` of its `traceparent`), if it sent one.
    pub parent: Option<u64>,
}

fn trusted(settings: &ProxySettings, ip: IpAddr) -> bool {
    // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    settings.trusted_proxies.iter().any(|n| n.contains(&ip))
}

/// Applies the trust rules to a request's headers and says who its client is. Also gives
/// the request its `X-Request-Id` when configured, and its trace context: with `spans` (the
/// sample ratio, when spans are exported) this proxy takes part in the trace.
pub fn admit(
    settings: &ProxySettings,
    peer: IpAddr,
    headers: &mut HeaderMap,
    spans: Option<f64>,
) -> Client {
    let mut client = Client {
        ip: peer,
        trusted_peer: false,
        forwarded: false,
        span: None,
    };
    if !settings.forwarded_headers {
        if let Some(ratio) = spans {
            client.span = take_part(headers, ratio);
        }
        return client;
    }
    client.trusted_peer = !settings.trusted_proxies.is_empty() && trusted(settings, peer);
    if client.trusted_peer {
        if settings.client_ip == ClientIp::Forwarded {
            if let Some(ip) = forwarded_client(settings, headers) {
                client.ip = ip;
                client.forwarded = true;
            }
        }
    } else {
        for name in &CLAIMS {
            headers.remove(name);
        }
    }
    if settings.request_id && !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID, request_id());
    }
    match spans {
        Some(ratio) => client.span = take_part(headers, ratio),
        None => trace_context(headers, settings.request_id),
    }
    client
}

/// W3C Trace Context (https://www.w3.org/TR/trace-context/): a valid `traceparent` goes on
/// as it is (with its `tracestate`); an invalid one is dropped with its `tracestate`, as the
/// spec asks of a receiver; without one, and when request ids are on, the request starts a
/// trace of its own (random trace and parent ids, not sampled) so the upstream and the access
/// log share its trace id.
fn trace_context(headers: &mut HeaderMap, start: bool) {
    let lines = headers.get_all(&TRACEPARENT).iter().count();
    let valid = lines == 1 && headers.get(&TRACEPARENT).is_some_and(valid_traceparent);
    if lines > 0 && !valid {
        headers.remove(&TRACEPARENT);
        headers.remove(HeaderName::from_static("tracestate"));
    }
    if !valid && start {
        let v = format!("00-{:032x}-{:016x}-00", nonzero_u128(), nonzero_u64());
        headers.insert(TRACEPARENT, HeaderValue::try_from(v).expect("hex"));
    }
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Trace Context as a participant (when spans are exported): this proxy's span is a child of
/// the client's `traceparent` (kept when valid, else dropped with its `tracestate`), and the
/// upstream gets this span's id as its parent. The sampled flag is the client's, or for a
/// new trace a draw at `ratio`. Returns the span to record when sampled.
fn take_part(headers: &mut HeaderMap, ratio: f64) -> Option<SpanIds> {
    let lines = headers.get_all(&TRACEPARENT).iter().count();
    let parsed = match lines {
        1 => headers.get(&TRACEPARENT).and_then(parse_traceparent),
        _ => None,
    };
    if parsed.is_none() && lines > 0 {
        headers.remove(&TRACEPARENT);
        headers.remove(HeaderName::from_static("tracestate"));
    }
    let (trace, parent, flags) = match parsed {
        Some((t, p, f)) => (t, Some(p), f),
        None => (nonzero_u128(), None, u8::from(fastrand::f64() < ratio)),
    };
    let span = nonzero_u64();
    // Version 00 is the one this proxy writes, whatever version it was sent (§3.2.4).
    let v = format!("00-{trace:032x}-{span:016x}-{flags:02x}");
    headers.insert(TRACEPARENT, HeaderValue::try_from(v).expect("hex"));
    (flags & 1 == 1).then_some(SpanIds {
        trace,
        span,
        parent,
    })
}

/// Trace id, parent id and flags of a valid `traceparent`.
fn parse_traceparent(v: &HeaderValue) -> Option<(u128, u64, u8)> {
    if !valid_traceparent(v) {
        return None;
    }
    let s = v.to_str().ok()?;
    Some((
        u128::from_str_radix(&s[3..35], 16).ok()?,
        u64::from_str_radix(&s[36..52], 16).ok()?,
        u8::from_str_radix(&s[53..55], 16).ok()?,
    ))
}

fn nonzero_u128() -> u128 {
    fastrand::u128(1..)
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

/// `version-traceid-parentid-flags`: lowercase hex of 2, 32, 16, 2 digits; version `ff` and
/// all-zero ids are invalid. A later version may append fields after a `-`; version 00 may not.
fn valid_traceparent(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let zero = |s: &[u8]| s.iter().all(|c| *c == b'0');
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return false;
    }
    let (version, trace, parent, flags) = (&b[0..2], &b[3..35], &b[36..52], &b[53..55]);
    let rest_ok = match version {
        b"00" => b.len() == 55,
        _ => b.len() == 55 || b[55] == b'-',
    };
    hex(version)
        && version != b"ff"
        && hex(trace)
        && !zero(trace)
        && hex(parent)
        && !zero(parent)
        && hex(flags)
        && rest_ok
}

/// The rightmost `X-Forwarded-For` address that is not a trusted proxy (all lines, in
/// order, as one list); the leftmost when every one is trusted; `None` without a chain or
/// when an element that would be examined is not an IP address.
fn forwarded_client(settings: &ProxySettings, headers: &HeaderMap) -> Option<IpAddr> {
    let mut leftmost = None;
    for line in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        for element in line.to_str().ok()?.rsplit(',') {
            let element = element.trim();
            if element.is_empty() {
                continue;
            }
            let ip: IpAddr = element.parse().ok()?;
            if !trusted(settings, ip) {
                return Some(ip);
            }
            leftmost = Some(ip);
        }
    }
    leftmost
}

/// A random (version 4) UUID, the form Envoy and most tracing systems use.
fn request_id() -> HeaderValue {
    let mut b = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[(byte >> 4) as usize];
        out[o + 1] = HEX[(byte & 0xf) as usize];
        o += 2;
    }
    HeaderValue::from_bytes(&out).expect("hex digits and dashes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(trusted: &[&str], client_ip: ClientIp) -> ProxySettings {
        ProxySettings {
            default_pool: "p".into(),
            preserve_host: true,
            via: true,
            forwarded_headers: true,
            via_name: "sluice".into(),
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            client_ip,
            request_id: true,
        }
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(X_FORWARDED_FOR, l.parse().unwrap());
        }
        h
    }

    #[test]
    fn rightmost_untrusted_address() {
        let s = settings(&["10.0.0.0/8", "::1/128"], ClientIp::Forwarded);
        let got = |lines: &[&str]| forwarded_client(&s, &xff(lines)).map(|ip| ip.to_string());
        assert_eq!(
            got(&["203.0.113.7, 10.1.1.1"]).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            got(&["1.1.1.1, 203.0.113.7", "10.0.0.2"]).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(got(&["10.0.0.3, 10.0.0.2"]).as_deref(), Some("10.0.0.3"));
        assert_eq!(got(&["2001:db8::1, ::1"]).as_deref(), Some("2001:db8::1"));
        // Garbage where the answer would be read: no answer (the peer stands).
        assert_eq!(got(&["203.0.113.7, bogus, 10.0.0.2"]), None);
        assert_eq!(got(&[]), None);
    }

    #[test]
    fn untrusted_claims_are_removed_and_ids_given() {
        let s = settings(&["10.0.0.0/8"], ClientIp::Forwarded);
        let mut h = xff(&["203.0.113.7"]);
        h.insert("x-request-id", "mine".parse().unwrap());
        h.insert("forwarded", "for=1.2.3.4".parse().unwrap());
        let c = admit(&s, "192.0.2.1".parse().unwrap(), &mut h, None);
        assert!(!c.trusted_peer && !c.forwarded);
        assert_eq!(c.ip.to_string(), "192.0.2.1");
        assert!(!h.contains_key("x-forwarded-for") && !h.contains_key("forwarded"));
        let id = h["x-request-id"].to_str().unwrap();
        assert_eq!((id.len(), &id[14..15]), (36, "4"), "{id}");

        let mut h = xff(&["203.0.113.7"]);
        h.insert("x-request-id", "theirs".parse().unwrap());
        let c = admit(&s, "::ffff:10.0.0.9".parse().unwrap(), &mut h, None);
        assert!(c.trusted_peer && c.forwarded);
        assert_eq!(c.ip.to_string(), "203.0.113.7");
        assert_eq!(h["x-request-id"], "theirs");
    }

    #[test]
    fn traceparent_is_kept_when_valid_replaced_when_not_started_when_absent() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = HeaderMap::new();
        h.insert("traceparent", good.parse().unwrap());
        h.insert("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
        trace_context(&mut h, true);
        assert_eq!(h["traceparent"], good);
        assert_eq!(h["tracestate"], "congo=t61rcWkgMzE");

        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            let mut h = HeaderMap::new();
            h.insert("traceparent", bad.parse().unwrap());
            h.insert("tracestate", "a=b".parse().unwrap());
            trace_context(&mut h, false);
            assert!(!h.contains_key("traceparent"), "{bad}");
            assert!(!h.contains_key("tracestate"), "{bad}");
        }
        // A later version may add fields.
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        assert!(valid_traceparent(&future.parse().unwrap()));

        let mut h = HeaderMap::new();
        trace_context(&mut h, true);
        let made = h["traceparent"].clone();
        assert!(valid_traceparent(&made), "{made:?}");
        assert!(made.to_str().unwrap().ends_with("-00"), "not sampled");
        let mut h = HeaderMap::new();
        trace_context(&mut h, false);
        assert!(!h.contains_key("traceparent"));
    }
}
