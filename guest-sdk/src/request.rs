//! [`Request`]: typed, lazy access to the request being decided.
//!
//! The request is the context of the call (`sluice:policy/request`); every accessor is a call
//! into the host that copies only what it returns. The values a policy typically reads more than once (method,
//! scheme, authority, path, query, client IP) are fetched on first use and kept for the rest
//! of the call, so `req.path()` is cheap to repeat.

use std::cell::OnceCell;
use std::net::IpAddr;

use crate::__bindings::request as raw;

/// The request being decided, lent by the host for one `decide` call.
///
/// A policy receives it as `&Request` from the [`policy`](crate::policy) attribute; it cannot
/// be created or kept by the policy.
///
/// # Example
/// ```no_run
/// use sluice_sdk::prelude::*;
///
/// fn decide(req: &Request) -> Decision {
///     if req.method() == "GET" && req.path().starts_with("/assets/") {
///         return Decision::forward("static").ttl(3600);
///     }
///     Decision::forward_default()
/// }
/// ```
pub struct Request {
    method: OnceCell<String>,
    scheme: OnceCell<String>,
    authority: OnceCell<String>,
    path: OnceCell<String>,
    query: OnceCell<Option<String>>,
    client_ip: OnceCell<String>,
}

/// One request header field, as returned by [`Request::headers`].
///
/// # Example
/// ```no_run
/// # use sluice_sdk::prelude::*;
/// # fn f(req: &Request) {
/// for Header { name, value } in req.headers() {
///     sluice_sdk::log::debug(format!("{name}: {}", String::from_utf8_lossy(&value)));
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The field name, lower case.
    ///
    /// ```no_run
    /// # let h = sluice_sdk::Header { name: "accept".into(), value: b"*/*".to_vec() };
    /// assert_eq!(h.name, "accept");
    /// ```
    pub name: String,
    /// The field value as received; it need not be UTF-8 (RFC 9110 §5.5).
    ///
    /// ```no_run
    /// # let h = sluice_sdk::Header { name: "accept".into(), value: b"*/*".to_vec() };
    /// assert_eq!(h.value, b"*/*");
    /// ```
    pub value: Vec<u8>,
}

impl Header {
    /// The value as text, or `None` when it is not UTF-8.
    ///
    /// ```
    /// let h = sluice_sdk::Header { name: "accept".into(), value: b"text/html".to_vec() };
    /// assert_eq!(h.value_str(), Some("text/html"));
    /// ```
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only what has been fetched already: formatting must not call into the host.
        f.debug_struct("Request")
            .field("method", &self.method.get())
            .field("authority", &self.authority.get())
            .field("path", &self.path.get())
            .finish_non_exhaustive()
    }
}

impl Request {
    /// The request of the current call.
    pub(crate) fn current() -> Self {
        Request {
            method: OnceCell::new(),
            scheme: OnceCell::new(),
            authority: OnceCell::new(),
            path: OnceCell::new(),
            query: OnceCell::new(),
            client_ip: OnceCell::new(),
        }
    }

    /// The method as received, e.g. `GET`. Methods are case-sensitive (RFC 9110 §9.1).
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     if req.method() != "GET" && req.method() != "HEAD" {
    ///         return Decision::forward_default().no_cache();
    ///     }
    ///     Decision::forward_default()
    /// }
    /// ```
    pub fn method(&self) -> &str {
        self.method.get_or_init(raw::method)
    }

    /// `http` or `https`: whether the client connection was TLS.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     if req.scheme() == "http" {
    ///         let location = format!("https://{}{}", req.host(), req.path());
    ///         return Decision::respond(308, "").header("location", location);
    ///     }
    ///     Decision::forward_default()
    /// }
    /// ```
    pub fn scheme(&self) -> &str {
        self.scheme.get_or_init(raw::scheme)
    }

    /// The authority the client addressed (`Host` or HTTP/2 `:authority`), lower case, with
    /// the port when the client sent one. Empty only for HTTP/1.0 without `Host`.
    ///
    /// ```no_run
    /// # fn f(req: &sluice_sdk::Request) {
    /// let authority = req.authority(); // "example.com:8080"
    /// # }
    /// ```
    pub fn authority(&self) -> &str {
        self.authority.get_or_init(raw::authority)
    }

    /// The host part of [`authority`](Self::authority): without the port, IPv6 addresses
    /// keeping their brackets (`example.com`, `192.0.2.7`, `[2001:db8::1]`).
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     match req.host() {
    ///         "api.example.com" => Decision::forward("api"),
    ///         _ => Decision::forward_default(),
    ///     }
    /// }
    /// ```
    pub fn host(&self) -> &str {
        host_of(self.authority())
    }

    /// The path, percent-encoding untouched, always starting with `/` (or `*` for
    /// `OPTIONS *`). Never includes the query.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     if req.path().starts_with("/api/") {
    ///         return Decision::forward("api");
    ///     }
    ///     Decision::forward_default()
    /// }
    /// ```
    pub fn path(&self) -> &str {
        self.path.get_or_init(raw::path)
    }

    /// The query string without the `?`, if the target had one (possibly empty).
    ///
    /// ```no_run
    /// # fn f(req: &sluice_sdk::Request) {
    /// let has_query = req.query().is_some_and(|q| !q.is_empty());
    /// # }
    /// ```
    pub fn query(&self) -> Option<&str> {
        self.query.get_or_init(raw::query).as_deref()
    }

    /// The query's `name=value` pairs, raw (no percent-decoding, `+` untouched), sorted by
    /// name then value. A pair without `=` has an empty value; empty pairs (`a=1&&b=2`) are
    /// skipped. Empty when there is no query.
    ///
    /// ```no_run
    /// # fn f(req: &sluice_sdk::Request) {
    /// // For `/search?q=rust&page=2`:
    /// assert_eq!(req.query_params(), [("page", "2"), ("q", "rust")]);
    /// # }
    /// ```
    pub fn query_params(&self) -> Vec<(&str, &str)> {
        sorted_pairs(self.query().unwrap_or(""))
            .into_iter()
            .map(|(name, value, _)| (name, value))
            .collect()
    }

    /// The raw value of the first query parameter called `name`, in the order received.
    /// `Some("")` for `?name` or `?name=`.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     match req.query_param("user") {
    ///         Some(user) => Decision::forward_default().hash_key(user),
    ///         None => Decision::forward_default(),
    ///     }
    /// }
    /// ```
    pub fn query_param(&self, name: &str) -> Option<&str> {
        query_param(self.query()?, name)
    }

    /// The query re-joined with its pairs in [`query_params`](Self::query_params) order (each
    /// pair kept byte for byte, so `a` stays `a` and `a=` stays `a=`). `None` when the target
    /// had no query.
    ///
    /// ```no_run
    /// # fn f(req: &sluice_sdk::Request) {
    /// // For `/search?q=rust&page=2`:
    /// assert_eq!(req.sorted_query().as_deref(), Some("page=2&q=rust"));
    /// # }
    /// ```
    pub fn sorted_query(&self) -> Option<String> {
        self.query().map(sorted_query)
    }

    /// The first value of header `name` (compared case-insensitively).
    ///
    /// ```no_run
    /// # fn f(req: &sluice_sdk::Request) {
    /// let is_json = req.header("content-type").is_some_and(|v| v.starts_with(b"application/json"));
    /// # }
    /// ```
    pub fn header(&self, name: &str) -> Option<Vec<u8>> {
        raw::header(name)
    }

    /// The first value of header `name` as text; `None` when absent or not UTF-8.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     match req.header_str("x-tenant") {
    ///         Some(tenant) => Decision::forward(format!("tenant-{tenant}")),
    ///         None => Decision::respond(400, "x-tenant required\n"),
    ///     }
    /// }
    /// ```
    pub fn header_str(&self, name: &str) -> Option<String> {
        String::from_utf8(self.header(name)?).ok()
    }

    /// Every value of header `name` in the order received (field lines are not merged).
    ///
    /// ```no_run
    /// # fn f(req: &sluice_sdk::Request) {
    /// let hops = req.header_all("via").len();
    /// # }
    /// ```
    pub fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        raw::header_all(name)
    }

    /// Every header field in the order received. Prefer [`header`](Self::header) when you know
    /// the name: this copies all of them into the guest.
    ///
    /// ```no_run
    /// # fn f(req: &sluice_sdk::Request) {
    /// let custom = req.headers().into_iter().filter(|h| h.name.starts_with("x-")).count();
    /// # }
    /// ```
    pub fn headers(&self) -> Vec<Header> {
        raw::headers()
            .into_iter()
            .map(|h| Header {
                name: h.name,
                value: h.value,
            })
            .collect()
    }

    /// The value of cookie `name` from the `Cookie` header(s) (RFC 6265 §5.4: `name=value`
    /// pairs separated by `;`; names compare case-sensitively). The value is returned as sent,
    /// quotes included; the first match wins. `None` when absent or not UTF-8.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     if req.cookie("beta").as_deref() == Some("1") {
    ///         return Decision::forward("beta");
    ///     }
    ///     Decision::forward_default()
    /// }
    /// ```
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.header_all("cookie")
            .iter()
            .find_map(|line| cookie_in(line, name))
    }

    /// The client's IP address as text (`192.0.2.7`, `2001:db8::1`): the peer of the
    /// connection, not anything the client claims in a header.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     Decision::forward("app").hash_key(req.client_ip())
    /// }
    /// ```
    pub fn client_ip(&self) -> &str {
        self.client_ip.get_or_init(raw::client_ip)
    }

    /// [`client_ip`](Self::client_ip) parsed; `None` only if the host sent something
    /// unparsable.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     if req.client_ip_addr().is_some_and(|ip| ip.is_loopback()) {
    ///         return Decision::forward("internal");
    ///     }
    ///     Decision::forward_default()
    /// }
    /// ```
    pub fn client_ip_addr(&self) -> Option<IpAddr> {
        self.client_ip().parse().ok()
    }

    /// The TLS server name (SNI) the client sent, if the connection was TLS and had one.
    ///
    /// ```no_run
    /// # fn f(req: &sluice_sdk::Request) {
    /// let sni = req.tls_sni().unwrap_or_default();
    /// # }
    /// ```
    pub fn tls_sni(&self) -> Option<String> {
        raw::tls_sni()
    }

    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    ///
    /// ```no_run
    /// # fn f(req: &sluice_sdk::Request) {
    /// let h2 = req.http_version() == "HTTP/2";
    /// # }
    /// ```
    pub fn http_version(&self) -> String {
        raw::http_version()
    }

    /// The cache key the host uses when a decision sets none: the normalised URL
    /// `scheme://host:port/path?sorted-query`, e.g. `https://example.com:443/search?page=2&q=rust`.
    ///
    /// Exactly: [`scheme`](Self::scheme), `://`, the host of [`authority`](Self::authority)
    /// (lower case), `:` and the port (the one sent, else 80 for `http` and 443 for `https`),
    /// [`path`](Self::path), then `?` and [`sorted_query`](Self::sorted_query) only when the
    /// sorted query is non-empty. So `?b=2&a=1` and `?a=1&b=2` share a key, and `/x` and `/x?`
    /// do too. Scheme, host and port are always in it, so one site cannot be served another's
    /// response. The method is not: HEAD is answered from a stored GET. Build on it to add what
    /// your responses vary by:
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     let lang = req.cookie("lang").unwrap_or_default();
    ///     Decision::forward_default().cache_key(format!("{}|{lang}", req.default_cache_key()))
    /// }
    /// ```
    pub fn default_cache_key(&self) -> String {
        cache_key(self.scheme(), self.authority(), self.path(), self.query())
    }

    /// The same string as [`default_cache_key`](Self::default_cache_key), under the name the
    /// design sketch uses.
    ///
    /// ```no_run
    /// # use sluice_sdk::prelude::*;
    /// fn decide(req: &Request) -> Decision {
    ///     Decision::forward("web").cache_key(req.method_path_sorted_query()).ttl(60)
    /// }
    /// ```
    pub fn method_path_sorted_query(&self) -> String {
        self.default_cache_key()
    }
}

/// `authority` without its port; IPv6 literals keep their brackets.
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The non-empty `&`-separated pairs of `query` as `(name, value, raw pair)`, sorted by name
/// then value (stable, so equal keys keep their received order).
fn sorted_pairs(query: &str) -> Vec<(&str, &str, &str)> {
    let mut pairs: Vec<_> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name, value, pair)
        })
        .collect();
    pairs.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    pairs
}

fn sorted_query(query: &str) -> String {
    let pairs: Vec<&str> = sorted_pairs(query).into_iter().map(|p| p.2).collect();
    pairs.join("&")
}

fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (n, value) = pair.split_once('=').unwrap_or((pair, ""));
        (n == name && !pair.is_empty()).then_some(value)
    })
}

fn cache_key(scheme: &str, authority: &str, path: &str, query: Option<&str>) -> String {
    let host = host_of(authority);
    let port = match authority[host.len()..].strip_prefix(':') {
        Some(p) => p,
        None if scheme == "https" => "443",
        None => "80",
    };
    let mut key = format!("{scheme}://{}:{port}{path}", host.to_ascii_lowercase());
    let sorted = query.map(sorted_query).unwrap_or_default();
    if !sorted.is_empty() {
        key.push('?');
        key.push_str(&sorted);
    }
    key
}

/// The value of cookie `name` in one `Cookie` field line.
fn cookie_in(line: &[u8], name: &str) -> Option<String> {
    let line = std::str::from_utf8(line).ok()?;
    line.split(';').find_map(|pair| {
        let (n, value) = pair.trim_matches([' ', '\t']).split_once('=')?;
        (n.trim_end() == name).then(|| value.trim_start().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_strips_port_only() {
        assert_eq!(host_of("example.com"), "example.com");
        assert_eq!(host_of("example.com:8080"), "example.com");
        assert_eq!(host_of("192.0.2.7:80"), "192.0.2.7");
        assert_eq!(host_of("[2001:db8::1]:443"), "[2001:db8::1]");
        assert_eq!(host_of("[2001:db8::1]"), "[2001:db8::1]");
        assert_eq!(host_of(""), "");
    }

    #[test]
    fn query_pairs_sort_by_name_then_value() {
        let pairs: Vec<_> = sorted_pairs("b=2&a=9&&a=1&c&a")
            .into_iter()
            .map(|(n, v, _)| (n, v))
            .collect();
        assert_eq!(
            pairs,
            [("a", ""), ("a", "1"), ("a", "9"), ("b", "2"), ("c", "")]
        );
        assert_eq!(sorted_query("b=2&a=9&&a=1&c&a="), "a=&a=1&a=9&b=2&c");
        assert_eq!(sorted_query(""), "");
    }

    #[test]
    fn query_param_is_first_in_received_order() {
        assert_eq!(query_param("a=2&a=1&b", "a"), Some("2"));
        assert_eq!(query_param("a=2&a=1&b", "b"), Some(""));
        assert_eq!(query_param("a=2&a=1&b", "c"), None);
        assert_eq!(query_param("x=a=b", "x"), Some("a=b"));
    }

    #[test]
    fn cache_key_format() {
        assert_eq!(
            cache_key("https", "example.com", "/s", Some("q=x&a=1")),
            "https://example.com:443/s?a=1&q=x"
        );
        assert_eq!(cache_key("http", "H:8080", "/", None), "http://h:8080/");
        assert_eq!(cache_key("http", "h", "/", Some("")), "http://h:80/");
        assert_eq!(cache_key("https", "[::1]", "/", None), "https://[::1]:443/");
    }

    #[test]
    fn cookies_per_rfc6265() {
        let line = b"a=1; ab=xyz;  c = 3;d=\"q\"";
        assert_eq!(cookie_in(line, "ab").as_deref(), Some("xyz"));
        assert_eq!(cookie_in(line, "a").as_deref(), Some("1"));
        assert_eq!(cookie_in(line, "c").as_deref(), Some("3"));
        assert_eq!(cookie_in(line, "d").as_deref(), Some("\"q\""));
        assert_eq!(cookie_in(line, "AB"), None);
        assert_eq!(cookie_in(b"x=\xff", "x"), None);
    }
}
