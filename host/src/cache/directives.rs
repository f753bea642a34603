//! `Cache-Control` (RFC 9111 §5.2) and HTTP-date parsing, strict where the RFC is.
//!
//! Written here rather than taken from `http-cache-semantics` (3.0): its parser splits on
//! every comma (so `no-cache="a, b"` becomes two directives), reads `max-age="60"` and an
//! overflowing `max-age` as 0, accepts only IMF-fixdate dates, treats `proxy-revalidate` as
//! "never fresh" in a shared cache, and knows nothing of `stale-while-revalidate` /
//! `stale-if-error` (RFC 5861). Each of those is a test in `tests.rs`.

use http::HeaderValue;
use http::header::HeaderName;
use std::time::SystemTime;

/// Delta-seconds that overflow are this value (RFC 9111 §1.2.2).
pub const DELTA_MAX: u64 = 2_147_483_648;

/// One `name[=value]` member of a `Cache-Control` list: name lower-cased, value unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub value: Option<String>,
}

/// Parses every `Cache-Control` field line into directives, in order. Members that are not
/// `token [= token / quoted-string]` are skipped (RFC 9111 §5.2: unrecognised or malformed
/// directives are ignored); commas inside quoted strings do not split.
pub fn parse<'a>(lines: impl IntoIterator<Item = &'a HeaderValue>) -> Vec<Directive> {
    let mut out = Vec::new();
    for line in lines {
        let mut rest = line.as_bytes();
        loop {
            rest = trim_start(rest);
            if rest.is_empty() {
                break;
            }
            let (member, tail) = split_member(rest);
            rest = tail;
            if let Some(d) = directive(member) {
                out.push(d);
            }
        }
    }
    out
}

/// The next comma-separated member (commas in quoted strings included) and what follows it.
fn split_member(s: &[u8]) -> (&[u8], &[u8]) {
    let mut quoted = false;
    let mut escaped = false;
    for (i, &b) in s.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == b',' && !quoted {
            return (&s[..i], &s[i + 1..]);
        }
    }
    (s, &[])
}

fn directive(member: &[u8]) -> Option<Directive> {
    let member = trim_end(trim_start(member));
    if member.is_empty() {
        return None;
    }
    let (name, value) = match member.iter().position(|&b| b == b'=') {
        Some(i) => (&member[..i], Some(&member[i + 1..])),
        None => (member, None),
    };
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return None;
    }
    let value = match value {
        None => None,
        Some(v) if v.first() == Some(&b'"') => Some(unquote(v)?),
        Some(v) if !v.is_empty() && v.iter().all(|&b| is_tchar(b)) => {
            Some(String::from_utf8(v.to_vec()).ok()?)
        }
        Some(_) => return None,
    };
    Some(Directive {
        name: String::from_utf8(name.to_ascii_lowercase()).ok()?,
        value,
    })
}

/// A quoted-string (RFC 9110 §5.6.4) that is the whole of `v`, unescaped.
fn unquote(v: &[u8]) -> Option<String> {
    if v.len() < 2 || v[v.len() - 1] != b'"' {
        return None;
    }
    let mut out = Vec::with_capacity(v.len() - 2);
    let mut it = v[1..v.len() - 1].iter();
    while let Some(&b) = it.next() {
        match b {
            b'\\' => out.push(*it.next()?),
            b'"' => return None,
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    &s[n..]
}

fn trim_end(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .rev()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    &s[..s.len() - n]
}

/// `delta-seconds` (RFC 9111 §1.2.2): digits only; an overflow is [`DELTA_MAX`].
pub fn delta_seconds(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().map_or(DELTA_MAX, |n| n.min(DELTA_MAX)))
}

/// A directive's delta-seconds argument, for directives that require one.
///
/// `None`: absent. `Some(None)`: present but malformed, repeated with different values, or
/// without an argument — RFC 9111 §4.2.1 lets a cache treat such freshness information as
/// stale, and we do.
fn seconds(dirs: &[Directive], name: &str) -> Option<Option<u64>> {
    let mut found: Option<Option<u64>> = None;
    for d in dirs.iter().filter(|d| d.name == name) {
        let v = d.value.as_deref().and_then(delta_seconds);
        found = match found {
            None => Some(v),
            Some(prev) if prev == v => Some(prev),
            Some(_) => Some(None),
        };
    }
    found
}

fn has(dirs: &[Directive], name: &str) -> bool {
    dirs.iter().any(|d| d.name == name)
}

/// A directive that is either unqualified or names fields (`no-cache`, `private`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Qualified {
    #[default]
    Absent,
    /// Applies to the whole response.
    All,
    /// Applies to these header fields only.
    Fields(Vec<HeaderName>),
}

impl Qualified {
    fn from(dirs: &[Directive], name: &str) -> Qualified {
        let mut fields = Vec::new();
        let mut any = false;
        for d in dirs.iter().filter(|d| d.name == name) {
            any = true;
            match &d.value {
                None => return Qualified::All,
                Some(v) => {
                    for f in v.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                        match HeaderName::from_bytes(f.as_bytes()) {
                            Ok(h) => fields.push(h),
                            // A field list we cannot read: the safe reading is the whole response.
                            Err(_) => return Qualified::All,
                        }
                    }
                }
            }
        }
        match any {
            false => Qualified::Absent,
            true if fields.is_empty() => Qualified::All,
            true => Qualified::Fields(fields),
        }
    }
}

/// What a response's `Cache-Control` says to a shared cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseDirectives {
    /// `Some(None)`: present but invalid (the response is stale).
    pub max_age: Option<Option<u64>>,
    pub s_maxage: Option<Option<u64>>,
    pub no_store: bool,
    pub no_cache: Qualified,
    pub private: Qualified,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub immutable: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl ResponseDirectives {
    pub fn parse(headers: &http::HeaderMap) -> Self {
        let dirs = parse(headers.get_all(http::header::CACHE_CONTROL));
        let window = |name| seconds(&dirs, name).flatten();
        // A response's `Pragma` is ignored (RFC 9111 §5.4 defines it for requests only).
        ResponseDirectives {
            max_age: seconds(&dirs, "max-age"),
            s_maxage: seconds(&dirs, "s-maxage"),
            no_store: has(&dirs, "no-store"),
            no_cache: Qualified::from(&dirs, "no-cache"),
            private: Qualified::from(&dirs, "private"),
            public: has(&dirs, "public"),
            must_revalidate: has(&dirs, "must-revalidate"),
            proxy_revalidate: has(&dirs, "proxy-revalidate"),
            must_understand: has(&dirs, "must-understand"),
            immutable: has(&dirs, "immutable"),
            stale_while_revalidate: window("stale-while-revalidate"),
            stale_if_error: window("stale-if-error"),
        }
    }

    /// Whether the response may be stored although a request carried `Authorization`
    /// (RFC 9111 §3.5).
    pub fn allows_authorized(&self) -> bool {
        self.public || self.s_maxage.is_some() || self.must_revalidate
    }

    /// Whether serving it stale is forbidden (RFC 9111 §4.2.4): `no-cache`,
    /// `must-revalidate`, `proxy-revalidate` (we are a shared cache).
    pub fn forbids_stale(&self) -> bool {
        self.no_cache == Qualified::All || self.must_revalidate || self.proxy_revalidate
    }
}

/// What a request's `Cache-Control` (or `Pragma`) asks of the cache (RFC 9111 §5.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    pub no_cache: bool,
    pub no_store: bool,
    pub max_age: Option<u64>,
    /// `Some(None)`: any staleness is acceptable.
    pub max_stale: Option<Option<u64>>,
    pub min_fresh: Option<u64>,
    pub only_if_cached: bool,
    pub stale_if_error: Option<u64>,
}

impl RequestDirectives {
    pub fn parse(headers: &http::HeaderMap) -> Self {
        let lines = headers.get_all(http::header::CACHE_CONTROL);
        if lines.iter().next().is_none() {
            // RFC 9111 §5.4: without Cache-Control, `Pragma: no-cache` means `no-cache`.
            let pragma = headers.get_all(http::header::PRAGMA).iter().any(|v| {
                parse(std::iter::once(v))
                    .iter()
                    .any(|d| d.name == "no-cache")
            });
            return RequestDirectives {
                no_cache: pragma,
                ..Default::default()
            };
        }
        let dirs = parse(lines);
        // A malformed value makes the directive ask for the strictest reading: max-age=0,
        // min-fresh never satisfiable, no stale.
        RequestDirectives {
            no_cache: has(&dirs, "no-cache"),
            no_store: has(&dirs, "no-store"),
            max_age: seconds(&dirs, "max-age").map(|v| v.unwrap_or(0)),
            max_stale: dirs
                .iter()
                .find(|d| d.name == "max-stale")
                .map(|d| d.value.as_deref().map(|v| delta_seconds(v).unwrap_or(0))),
            min_fresh: seconds(&dirs, "min-fresh").map(|v| v.unwrap_or(DELTA_MAX)),
            only_if_cached: has(&dirs, "only-if-cached"),
            stale_if_error: seconds(&dirs, "stale-if-error").flatten(),
        }
    }
}

/// One HTTP-date header: `None` when absent; `Some(None)` when it is not a valid date in any
/// of the three formats (RFC 9110 §5.6.7) or there are several different values.
pub fn date(headers: &http::HeaderMap, name: &HeaderName) -> Option<Option<SystemTime>> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    if all.any(|v| v != first) {
        return Some(None);
    }
    Some(
        first
            .to_str()
            .ok()
            .and_then(|s| httpdate::parse_http_date(s.trim()).ok()),
    )
}

/// The `Age` header (RFC 9111 §5.1): a single non-negative integer, else ignored.
pub fn age(headers: &http::HeaderMap) -> u64 {
    let mut all = headers.get_all(http::header::AGE).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => v
            .to_str()
            .ok()
            .and_then(|s| delta_seconds(s.trim()))
            .unwrap_or(0),
        _ => 0,
    }
}
