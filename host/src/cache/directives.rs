//! `Cache-Control` (RFC 9111 §5.2) and HTTP-date parsing, strict where the RFC is.
//!
//! Written here rather than taken from `http-cache-semantics` (3.0): its parser splits on
//! every comma (so `no-cache="a, b"` becomes two directives), reads `max-age="60"` and an
//! overflowing `max-age` as 0, accepts only IMF-fixdate dates, treats `proxy-revalidate` as
//! "never fresh" in a shared cache, and knows nothing of `stale-while-revalidate` /
//! `stale-if-error` (RFC 5861). Each of those is a test in `tests.rs`.

use http::HeaderValue;
use http::header::HeaderName;
use std::borrow::Cow;
use std::time::SystemTime;

/// Delta-seconds that overflow are this value (RFC 9111 §1.2.2).
pub const DELTA_MAX: u64 = 2_147_483_648;

/// One `name[=value]` member of a `Cache-Control` list: name lower-cased, value unquoted.
/// Both borrow from the field line unless lower-casing or unescaping had to change them, so
/// reading a response's directives allocates nothing in the common case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive<'a> {
    pub name: Cow<'a, str>,
    pub value: Option<Cow<'a, str>>,
}

/// Every member of every `Cache-Control` field line, in order. Members that are not
/// `token [= token / quoted-string]` are skipped (RFC 9111 §5.2: unrecognised or malformed
/// directives are ignored); commas inside quoted strings do not split.
pub fn members<'a>(
    lines: impl IntoIterator<Item = &'a HeaderValue>,
) -> impl Iterator<Item = Directive<'a>> {
    lines.into_iter().flat_map(|line| {
        let mut rest = line.as_bytes();
        std::iter::from_fn(move || {
            loop {
                rest = trim_start(rest);
                if rest.is_empty() {
                    return None;
                }
                let (member, tail) = split_member(rest);
                rest = tail;
                if let Some(d) = directive(member) {
                    return Some(d);
                }
            }
        })
    })
}

/// [`members`], collected.
pub fn parse<'a>(lines: impl IntoIterator<Item = &'a HeaderValue>) -> Vec<Directive<'a>> {
    members(lines).collect()
}

/// Follows quoted strings (RFC 9110 §5.6.4) through a field value, byte by byte.
#[derive(Default, Clone, Copy)]
pub struct Quotes {
    quoted: bool,
    escaped: bool,
}

impl Quotes {
    /// Takes the next byte: whether it stands outside every quoted string (a quote mark, an
    /// escape and what it escapes are inside).
    pub fn outside(&mut self, b: u8) -> bool {
        if self.escaped {
            self.escaped = false;
        } else if self.quoted && b == b'\\' {
            self.escaped = true;
        } else if b == b'"' {
            self.quoted = !self.quoted;
        } else {
            return !self.quoted;
        }
        false
    }

    /// Whether every quoted string so far is closed.
    pub fn closed(&self) -> bool {
        !self.quoted && !self.escaped
    }
}

/// The next comma-separated member (commas in quoted strings included) and what follows it.
fn split_member(s: &[u8]) -> (&[u8], &[u8]) {
    let mut q = Quotes::default();
    match s.iter().position(|&b| q.outside(b) && b == b',') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &[]),
    }
}

fn directive(member: &[u8]) -> Option<Directive<'_>> {
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
        // tchars are ASCII, so the conversions below cannot fail.
        Some(v) if !v.is_empty() && v.iter().all(|&b| is_tchar(b)) => {
            Some(Cow::Borrowed(std::str::from_utf8(v).ok()?))
        }
        Some(_) => return None,
    };
    let name = std::str::from_utf8(name).ok()?;
    let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    };
    Some(Directive { name, value })
}

/// A quoted-string (RFC 9110 §5.6.4) that is the whole of `v`, unescaped (borrowed when it
/// has no escapes).
fn unquote(v: &[u8]) -> Option<Cow<'_, str>> {
    if v.len() < 2 || v[v.len() - 1] != b'"' {
        return None;
    }
    let inner = &v[1..v.len() - 1];
    if !inner.contains(&b'\\') {
        if inner.contains(&b'"') {
            return None;
        }
        return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut it = inner.iter();
    while let Some(&b) = it.next() {
        match b {
            b'\\' => out.push(*it.next()?),
            b'"' => return None,
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
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

/// Folds one more occurrence of a directive that requires a delta-seconds argument into
/// what the earlier ones said. `None`: absent. `Some(None)`: present but malformed, repeated
/// with different values, or without an argument — RFC 9111 §4.2.1 lets a cache treat such
/// freshness information as stale, and we do.
fn merge_seconds(found: &mut Option<Option<u64>>, d: &Directive) {
    let v = d.value.as_deref().and_then(delta_seconds);
    *found = match *found {
        None => Some(v),
        Some(prev) if prev == v => Some(prev),
        Some(_) => Some(None),
    };
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
    /// Folds one more occurrence of the directive in: without an argument, with an empty
    /// one or with a field name we cannot read it applies to the whole response (the safe
    /// reading); otherwise its fields add to the earlier ones'.
    fn merge(&mut self, d: &Directive) {
        if *self == Qualified::All {
            return;
        }
        let mut fields = match std::mem::take(self) {
            Qualified::Fields(f) => f,
            _ => Vec::new(),
        };
        let before = fields.len();
        if let Some(v) = &d.value {
            for f in v.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                match HeaderName::from_bytes(f.as_bytes()) {
                    Ok(h) => fields.push(h),
                    Err(_) => {
                        *self = Qualified::All;
                        return;
                    }
                }
            }
        }
        *self = if fields.len() == before {
            Qualified::All
        } else {
            Qualified::Fields(fields)
        };
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
    /// They came from a targeted field (RFC 9213), so `Expires` does not count either.
    pub targeted: bool,
}

impl ResponseDirectives {
    /// `Cache-Control`: one pass over the members, no allocation unless a directive names
    /// fields.
    pub fn parse(headers: &http::HeaderMap) -> Self {
        // A response's `Pragma` is ignored (RFC 9111 §5.4 defines it for requests only).
        Self::from_members(members(headers.get_all(http::header::CACHE_CONTROL)))
    }

    /// RFC 9213 §2.1: the first field of `targets` (in that order) with a valid, non-empty
    /// value decides, and `Cache-Control` and `Expires` are ignored; without one,
    /// [`ResponseDirectives::parse`].
    pub fn parse_targeted(headers: &http::HeaderMap, targets: &[HeaderName]) -> Self {
        for name in targets {
            if let Some(d) = targeted(headers, name) {
                return d;
            }
        }
        Self::parse(headers)
    }

    fn from_members<'a>(members: impl Iterator<Item = Directive<'a>>) -> Self {
        let mut r = ResponseDirectives::default();
        let (mut swr, mut sie) = (None, None);
        for d in members {
            match &*d.name {
                "max-age" => merge_seconds(&mut r.max_age, &d),
                "s-maxage" => merge_seconds(&mut r.s_maxage, &d),
                "no-store" => r.no_store = true,
                "no-cache" => r.no_cache.merge(&d),
                "private" => r.private.merge(&d),
                "public" => r.public = true,
                "must-revalidate" => r.must_revalidate = true,
                "proxy-revalidate" => r.proxy_revalidate = true,
                "must-understand" => r.must_understand = true,
                "immutable" => r.immutable = true,
                "stale-while-revalidate" => merge_seconds(&mut swr, &d),
                "stale-if-error" => merge_seconds(&mut sie, &d),
                _ => {}
            }
        }
        r.stale_while_revalidate = swr.flatten();
        r.stale_if_error = sie.flatten();
        r
    }
}

/// The directives of targeted field `name` (RFC 9213 §2.2), or `None` when it is absent,
/// not a Structured Fields Dictionary (RFC 9651), or empty. Each member is a directive with
/// the same meaning as in `Cache-Control`, typed: seconds (`max-age`, `s-maxage`,
/// `stale-*`) are a non-negative Integer, `no-cache` and `private` a Boolean true or a String
/// of field names, the others a Boolean true. A member of another type (`max-age=-1`,
/// `max-age=1.5`, a bare `max-age`, `no-store=?0`, an inner list) is ignored like an unknown
/// directive, and parameters are ignored.
fn targeted(headers: &http::HeaderMap, name: &HeaderName) -> Option<ResponseDirectives> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    let mut value = Cow::Borrowed(first.as_bytes());
    for more in lines {
        // Several lines are one value joined with commas (RFC 9651 §4.2).
        let v = value.to_mut();
        v.extend_from_slice(b", ");
        v.extend_from_slice(more.as_bytes());
    }
    let dict: sfv::Dictionary = sfv::Parser::new(value.as_ref()).parse().ok()?;
    if dict.is_empty() {
        return None;
    }
    let members = dict.iter().filter_map(|(key, entry)| {
        let sfv::ListEntry::Item(item) = entry else {
            return None;
        };
        let name = key.as_str();
        let seconds = matches!(
            name,
            "max-age" | "s-maxage" | "stale-while-revalidate" | "stale-if-error"
        );
        let fields = matches!(name, "no-cache" | "private");
        let value = match &item.bare_item {
            sfv::BareItem::Integer(n) if seconds && i64::from(*n) >= 0 => {
                Some(Cow::Owned(n.to_string()))
            }
            sfv::BareItem::Boolean(true) if !seconds => None,
            sfv::BareItem::String(s) if fields => Some(Cow::Borrowed(s.as_str())),
            _ => return None,
        };
        Some(Directive {
            name: Cow::Borrowed(name),
            value,
        })
    });
    Some(ResponseDirectives {
        targeted: true,
        ..ResponseDirectives::from_members(members)
    })
}

impl ResponseDirectives {
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
    /// One pass over the members, no allocation in the common case.
    pub fn parse(headers: &http::HeaderMap) -> Self {
        let lines = headers.get_all(http::header::CACHE_CONTROL);
        if lines.iter().next().is_none() {
            // RFC 9111 §5.4: without Cache-Control, `Pragma: no-cache` means `no-cache`.
            let pragma =
                members(headers.get_all(http::header::PRAGMA)).any(|d| d.name == "no-cache");
            return RequestDirectives {
                no_cache: pragma,
                ..Default::default()
            };
        }
        let mut r = RequestDirectives::default();
        let (mut max_age, mut min_fresh, mut sie) = (None, None, None);
        for d in members(lines) {
            match &*d.name {
                "no-cache" => r.no_cache = true,
                "no-store" => r.no_store = true,
                "max-age" => merge_seconds(&mut max_age, &d),
                // The first one counts.
                "max-stale" if r.max_stale.is_none() => {
                    r.max_stale = Some(d.value.as_deref().map(|v| delta_seconds(v).unwrap_or(0)));
                }
                "min-fresh" => merge_seconds(&mut min_fresh, &d),
                "only-if-cached" => r.only_if_cached = true,
                "stale-if-error" => merge_seconds(&mut sie, &d),
                _ => {}
            }
        }
        // A malformed value makes the directive ask for the strictest reading: max-age=0,
        // min-fresh never satisfiable, no stale.
        r.max_age = max_age.map(|v| v.unwrap_or(0));
        r.min_fresh = min_fresh.map(|v| v.unwrap_or(DELTA_MAX));
        r.stale_if_error = sie.flatten();
        r
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
    Some(first.to_str().ok().and_then(|s| parse_date(s.trim())))
}

/// An HTTP-date in any of its three formats (RFC 9110 §5.6.7), with day and month names and
/// `GMT` in any letter case: recipients are asked to be robust, and origins do send
/// `mon, 06 nov 2023 ...`. httpdate matches names case-sensitively, so a failed parse is
/// retried once with every word in its canonical case.
pub fn parse_date(s: &str) -> Option<SystemTime> {
    if let Ok(t) = httpdate::parse_http_date(s) {
        return Some(t);
    }
    if s.len() > 64 || !s.is_ascii() {
        return None;
    }
    let mut canon = String::with_capacity(s.len());
    for (i, word) in s.split(|c: char| !c.is_ascii_alphabetic()).enumerate() {
        if i > 0 {
            // The separator that ended the previous word, as it was.
            let at = canon.len();
            canon.push_str(&s[at..at + 1]);
        }
        if word.eq_ignore_ascii_case("gmt") {
            canon.push_str("GMT");
        } else {
            for (j, c) in word.chars().enumerate() {
                canon.push(if j == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                });
            }
        }
    }
    httpdate::parse_http_date(&canon).ok()
}

/// The `Age` header (RFC 9111 §5.1): a list value, or several lines, count by their first
/// member; a first member that is not a non-negative integer means the field is ignored
/// (0, as if absent). Overflow is [`DELTA_MAX`].
pub fn age(headers: &http::HeaderMap) -> u64 {
    let Some(first) = headers.get(http::header::AGE) else {
        return 0;
    };
    first
        .to_str()
        .ok()
        .and_then(|s| delta_seconds(s.split(',').next().unwrap_or("").trim()))
        .unwrap_or(0)
}
