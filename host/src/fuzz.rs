//! Fuzz targets: the code that reads untrusted bytes where the code is ours (hyper parses the
//! HTTP/1.1 and HTTP/2 framing). Each takes arbitrary bytes, must not panic, and checks a
//! property where one exists. `fuzz/` runs them under libFuzzer (`fuzz/run.sh`, nightly);
//! the tests below run each over its seeds and a bounded number of deterministic mutations
//! on stable, in the suite.
//!
//! - [`config`]: the whole TOML configuration, parsed and validated.
//! - [`cache_headers`]: `Cache-Control` (also targeted), `Pragma`, `Age`, the HTTP-dates,
//!   storability and freshness of a response with those fields.
//! - [`cache_key`]: the default cache key of a request target; deterministic, and the key
//!   keeps the scheme and host.
//! - [`vary`]: `Vary` normalisation is idempotent, and a request selects the variant
//!   captured from it.
//! - [`forwarded`]: trusted-proxy handling of `X-Forwarded-For` / `Forwarded`.
//! - [`header_edit`]: a guest's header edit, checked, then applied.

use crate::cache::Cache;
use crate::cache::directives::{self, RequestDirectives, ResponseDirectives};
use crate::cache::object::{Context, Exchange, Meta, Object, RequestFacts};
use crate::cache::vary::{self, Vary};
use crate::config::{CacheConfig, ClientIp, Config, ProxySettings, VaryNorm};
use crate::policy::EditOp;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use std::net::IpAddr;
use std::time::Instant;

/// Header values from `data`: one per line, the invalid ones skipped.
fn values(data: &[u8]) -> impl Iterator<Item = HeaderValue> + '_ {
    data.split(|&b| b == b'\n')
        .filter_map(|l| HeaderValue::from_bytes(l).ok())
}

/// The values of `data`, dealt in turn to the fields `names`.
fn headers(data: &[u8], names: &[HeaderName]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (i, v) in values(data).enumerate() {
        h.append(names[i % names.len()].clone(), v);
    }
    h
}

pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, "fuzz.toml", std::path::Path::new("/nonexistent"));
    }
}

pub fn cache_headers(data: &[u8]) {
    let names = [
        header::CACHE_CONTROL,
        HeaderName::from_static("cdn-cache-control"),
        header::AGE,
        header::EXPIRES,
        header::DATE,
        header::LAST_MODIFIED,
        header::PRAGMA,
        header::ETAG,
        header::VARY,
        header::CONTENT_RANGE,
    ];
    let h = headers(data, &names);
    let config = CacheConfig::default();
    let _ = ResponseDirectives::parse_targeted(&h, &config.targeted);
    let _ = RequestDirectives::parse(&h);
    let _ = directives::age(&h);
    let _ = directives::date(&h, &header::EXPIRES);
    let facts = RequestFacts {
        method: Method::GET,
        authorization: data.first().is_some_and(|b| b & 1 == 1),
        directives: RequestDirectives::parse(&h),
    };
    let cx = Context {
        request_headers: &h,
        config: &config,
    };
    let status = StatusCode::from_u16(200 + u16::from(data.len() as u8 % 4) * 100).unwrap();
    if let Ok(meta) = Meta::evaluate(
        &facts,
        cx,
        status,
        &h,
        None,
        "http://f:80/",
        Exchange::now(),
    ) {
        let object = Object::new(meta, bytes::Bytes::new(), 0);
        let now = Instant::now();
        let _ = (object.is_fresh(now), object.ttl(now), object.staleness(now));
        let cache = Cache::new(CacheConfig::default());
        cache.insert(bytes::Bytes::from_static(b"k"), object);
    }
    // As a 206: a part stored twice (the second merges with the first), small ones only.
    let part = crate::cache::partial::storable_range(&h).filter(|r| r.complete <= 4096);
    if let Some(r) = part {
        if let Ok(meta) = Meta::evaluate_part(&facts, cx, &h, None, "http://f:80/", Exchange::now())
        {
            let cache = Cache::new(CacheConfig::default());
            let body = bytes::Bytes::from(vec![b'x'; r.bytes() as usize]);
            for _ in 0..2 {
                let key = bytes::Bytes::from_static(b"k");
                cache.insert_part(key, meta.clone(), r.first, body.clone(), r.complete);
            }
        }
    }
}

pub fn cache_key(data: &[u8]) {
    let Ok(uri) = http::Uri::try_from(data) else {
        return;
    };
    let authority = uri.authority().cloned();
    for tls in [false, true] {
        let key = crate::cache::key::default_key(tls, authority.as_ref(), &uri);
        assert_eq!(
            key,
            crate::cache::key::default_key(tls, authority.as_ref(), &uri)
        );
        assert!(
            key.starts_with(if tls { "https://" } else { "http://" }),
            "{key}"
        );
    }
}

pub fn vary(data: &[u8]) {
    let name = header::ACCEPT_LANGUAGE;
    let h = headers(data, std::slice::from_ref(&name));
    for (_, norm) in VaryNorm::NAMES {
        let Some(once) = vary::normalised(&h, &name, norm) else {
            continue;
        };
        let Ok(value) = HeaderValue::from_bytes(&once) else {
            continue;
        };
        let mut again = HeaderMap::new();
        again.insert(name.clone(), value);
        assert_eq!(
            vary::normalised(&again, &name, norm).as_deref(),
            Some(&once[..]),
            "{norm:?} is not idempotent"
        );
        let mut response = HeaderMap::new();
        response.insert(header::VARY, HeaderValue::from_static("accept-language"));
        let rules = [(name.clone(), norm)];
        let captured = Vary::capture(&response, &h, &rules).expect("not Vary: *");
        assert!(
            captured.matches(&h),
            "{norm:?}: a request must select its own variant"
        );
        assert!(
            captured.matches(&again),
            "{norm:?}: nor its normalised form"
        );
    }
}

pub fn forwarded(data: &[u8]) {
    let names = [
        HeaderName::from_static("x-forwarded-for"),
        header::FORWARDED,
        HeaderName::from_static("x-real-ip"),
        HeaderName::from_static("x-request-id"),
    ];
    let mut h = headers(data, &names);
    let settings = ProxySettings {
        default_pool: "p".into(),
        preserve_host: true,
        via: true,
        forwarded_headers: true,
        via_name: "sluice".into(),
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        client_ip: ClientIp::Forwarded,
        request_id: true,
    };
    let peer: IpAddr = if data.len() % 2 == 0 {
        "10.1.2.3".parse().unwrap()
    } else {
        "192.0.2.1".parse().unwrap()
    };
    // Every other input also takes part in the trace, as with `[otlp]` on.
    let spans = (data.len() % 3 == 0).then_some(1.0);
    let client = crate::proxy::forwarded::admit(&settings, peer, &mut h, spans);
    if !client.trusted_peer {
        assert_eq!(client.ip, peer, "an untrusted peer is the client");
    }
    if spans.is_some() {
        let sent = h
            .get("traceparent")
            .expect("a participant always sends one");
        let ids = client
            .span
            .map(|s| format!("-{:032x}-{:016x}-", s.trace, s.span));
        if let Some(ids) = ids {
            assert!(sent.to_str().unwrap().contains(&ids), "{sent:?}");
        }
    }
}

pub fn header_edit(data: &[u8]) {
    let (name, value) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(name) = std::str::from_utf8(name) else {
        return;
    };
    for op in [EditOp::Set, EditOp::Append, EditOp::Remove] {
        if let Ok(edit) = crate::policy::checked_edit(op, name, value.to_vec(), "fuzz") {
            let mut h = HeaderMap::new();
            edit.apply(&mut h);
            assert!(!matches!(
                edit.name.as_str(),
                "content-length" | "transfer-encoding" | "connection"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    //! Every target over its seeds and 20,000 deterministic mutations of them: a bounded
    //! stand-in for libFuzzer in the suite (and on stable).

    /// xorshift64*: deterministic, so a failure here fails the same way every time.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    const INTERESTING: &[&[u8]] = &[
        b"\n",
        b",",
        b";",
        b"=",
        b"\"",
        b"\\",
        b"max-age=",
        b"no-cache=\"",
        b"99999999999999999999",
        b"-1",
        b"*",
        b"\xff",
        b" ",
        b"\t",
        b"%",
        b"/",
        b"?",
        b"#",
        b"[::1]",
        b":",
        b"\0",
    ];

    fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(v.len() + 1);
            match rng.below(5) {
                0 if !v.is_empty() => {
                    v.remove(at.min(v.len() - 1));
                }
                1 => v.insert(at, rng.next() as u8),
                2 => {
                    let piece = INTERESTING[rng.below(INTERESTING.len())];
                    v.splice(at..at, piece.iter().copied());
                }
                3 if !v.is_empty() => {
                    let i = at.min(v.len() - 1);
                    v[i] ^= 1 << rng.below(8);
                }
                _ => {
                    let from = rng.below(v.len() + 1);
                    let to = (from + rng.below(16)).min(v.len());
                    let copy = v[from..to].to_vec();
                    v.splice(at..at, copy);
                }
            }
        }
        v
    }

    fn run(target: fn(&[u8]), seeds: &[&[u8]]) {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for seed in seeds {
            target(seed);
        }
        for _ in 0..20_000 {
            let seed = seeds[rng.below(seeds.len())];
            target(&mutate(&mut rng, seed));
        }
    }

    #[test]
    fn config_survives_mutations() {
        run(
            super::config,
            &[
                include_bytes!("../../examples/sluice.toml"),
                b"[[listener]]\naddress = \"127.0.0.1:8080\"\n[[pool]]\nname = \"w\"\nendpoints = [\"127.0.0.1:9\"]\n[cache]\n[cache.vary]\nx = \"tokens\"\n",
            ],
        );
    }

    #[test]
    fn cache_headers_survive_mutations() {
        run(
            super::cache_headers,
            &[
                b"public, max-age=60, s-maxage=30, no-cache=\"set-cookie, x\"\nmax-age=60, private=\"a\"\n5\nSun, 06 Nov 1994 08:49:37 GMT\nSunday, 06-Nov-94 08:49:37 GMT\nSun Nov  6 08:49:37 1994\nno-cache\n\"e\"\naccept-encoding",
                b"stale-while-revalidate=10, stale-if-error=20, must-revalidate\nno-store;x=1, max-age=(1 2)\n",
                // The eighth line is a strong ETag, the tenth a Content-Range.
                b"max-age=60\n\n\n\n\n\n\n\"e\"\n\nbytes 2-5/10\n",
            ],
        );
    }

    #[test]
    fn cache_keys_survive_mutations() {
        run(
            super::cache_key,
            &[
                b"http://Example.COM:80/a/../b?z=1&a=2#f",
                b"/p%41th?b=1&a",
                b"https://[::1]:8443/x?",
                b"*",
            ],
        );
    }

    #[test]
    fn vary_normalisation_is_idempotent_and_self_selecting() {
        run(
            super::vary,
            &[
                b"en-US, de;q=0.5, , FR ; q=0.1\nx;p=\"B, \\\"A\"",
                b"gzip, br, *;q=0",
            ],
        );
    }

    #[test]
    fn forwarded_headers_survive_mutations() {
        run(
            super::forwarded,
            &[
                b"203.0.113.7, 10.0.0.1\nfor=192.0.2.60;proto=http;by=203.0.113.43\n198.51.100.1\nabc",
                b"[2001:db8::1]:80, 10.9.9.9, unknown\n",
            ],
        );
    }

    #[test]
    fn header_edits_survive_mutations() {
        run(
            super::header_edit,
            &[
                b"x-a\0value",
                b"content-length\x001",
                b"bad header\0v",
                b"x\0\r\n",
            ],
        );
    }
}
