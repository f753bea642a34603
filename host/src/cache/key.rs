//! The default cache key: the normalised URL `scheme://host:port/path?sorted-query`.
//!
//! Scheme, host and port are always in it, so one host can never be served another's
//! object. The host is lower-cased and the port made explicit (`:80`/`:443` when the client
//! sent none); the path is kept exactly as received (no percent-decoding, which could merge
//! distinct resources); query pairs are sorted by name then value (stable), and an empty query
//! leaves no `?`. `sluice-sdk`'s `Request::default_cache_key` produces the same string.

use http::Uri;
use http::uri::Authority;
use std::fmt::Write;

/// The normalised URL of a request.
pub fn default_key(tls: bool, authority: Option<&Authority>, uri: &Uri) -> String {
    let scheme = if tls { "https" } else { "http" };
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = match authority {
        Some(a) => (a.host(), a.port_u16().unwrap_or(default_port)),
        None => ("", default_port),
    };
    let path = match uri.path() {
        "" => "/",
        p => p,
    };
    // Exactly the key's length unless the query has empty members: a `Bytes` made from a
    // `String` whose capacity is its length takes it over without another allocation.
    let digits = port.checked_ilog10().unwrap_or(0) as usize + 1;
    let query = uri.query().map_or(0, |q| q.len() + 1);
    let mut key =
        String::with_capacity(scheme.len() + 4 + host.len() + digits + path.len() + query);
    key.push_str(scheme);
    key.push_str("://");
    for c in host.chars() {
        key.push(c.to_ascii_lowercase());
    }
    let _ = write!(key, ":{port}");
    key.push_str(path);
    if let Some(q) = uri.query() {
        push_sorted_query(&mut key, q);
    }
    key
}

/// `scheme://host:port` of a normalised URL.
pub fn origin_of(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    match url[after..].find('/') {
        Some(i) => &url[..after + i],
        None => url,
    }
}

fn push_sorted_query(key: &mut String, q: &str) {
    let mut pairs: Vec<(&str, &str, &str)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            (n, v, p)
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    pairs.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    key.push('?');
    for (i, p) in pairs.iter().enumerate() {
        if i > 0 {
            key.push('&');
        }
        key.push_str(p.2);
    }
}

/// The default key of an absolute `http(s)://` URL (for purges and `Location`).
pub fn key_of_url(url: &str) -> Result<String, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(format!(
                "{url:?} is not an absolute http:// or https:// URL"
            ));
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?} has no host"))?;
    Ok(default_key(tls, Some(authority), &uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(tls: bool, auth: &str, target: &str) -> String {
        let a: Authority = auth.parse().unwrap();
        default_key(tls, Some(&a), &target.parse().unwrap())
    }

    #[test]
    fn scheme_host_port_always_present() {
        assert_eq!(k(false, "Example.COM", "/a"), "http://example.com:80/a");
        assert_eq!(k(true, "example.com", "/a"), "https://example.com:443/a");
        assert_eq!(
            k(true, "example.com:8443", "/a"),
            "https://example.com:8443/a"
        );
        assert_eq!(k(false, "[::1]:8080", "/"), "http://[::1]:8080/");
        assert_ne!(k(false, "a.test", "/x"), k(false, "b.test", "/x"));
        assert_ne!(k(false, "a.test", "/x"), k(true, "a.test", "/x"));
    }

    #[test]
    fn query_sorted_path_untouched() {
        assert_eq!(k(false, "h", "/p?b=2&a=1&a=0"), "http://h:80/p?a=0&a=1&b=2");
        assert_eq!(k(false, "h", "/p?"), "http://h:80/p");
        assert_eq!(k(false, "h", "/p?&&"), "http://h:80/p");
        assert_eq!(k(false, "h", "/%41"), "http://h:80/%41");
    }

    #[test]
    fn urls() {
        assert_eq!(
            key_of_url("https://H/x?b&a").unwrap(),
            "https://h:443/x?a&b"
        );
        assert!(key_of_url("/relative").is_err());
        assert!(key_of_url("ftp://h/x").is_err());
    }
}
