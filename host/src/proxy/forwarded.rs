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
/// the request its `X-Request-Id` when configured.
pub fn admit(settings: &ProxySettings, peer: IpAddr, headers: &mut HeaderMap) -> Client {
    let mut client = Client {
        ip: peer,
        trusted_peer: false,
        forwarded: false,
    };
    if !settings.forwarded_headers {
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
    client
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
        let c = admit(&s, "192.0.2.1".parse().unwrap(), &mut h);
        assert!(!c.trusted_peer && !c.forwarded);
        assert_eq!(c.ip.to_string(), "192.0.2.1");
        assert!(!h.contains_key("x-forwarded-for") && !h.contains_key("forwarded"));
        let id = h["x-request-id"].to_str().unwrap();
        assert_eq!((id.len(), &id[14..15]), (36, "4"), "{id}");

        let mut h = xff(&["203.0.113.7"]);
        h.insert("x-request-id", "theirs".parse().unwrap());
        let c = admit(&s, "::ffff:10.0.0.9".parse().unwrap(), &mut h);
        assert!(c.trusted_peer && c.forwarded);
        assert_eq!(c.ip.to_string(), "203.0.113.7");
        assert_eq!(h["x-request-id"], "theirs");
    }
}
