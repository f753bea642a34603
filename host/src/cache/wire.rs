//! The shared tier's value format: what a node writes to Redis for one key (its stored
//! variants) and reads back into [`Object`]s.
//!
//! Ours, not serde's: the format is part of the fleet's contract between sluice versions, so
//! it is spelled out byte by byte here and versioned by its first four bytes. A reader that
//! finds another version, or bytes that do not parse, reports [`WireError`] and the caller
//! treats the key as a miss (and deletes it): a format change never serves a corrupt object.
//!
//! Layout (integers big-endian, `bytes` = u32 length + bytes):
//! ```text
//! head    = "SLC" VERSION  u8 n  variant{n}
//! variant = u16 status  u64 lifetime  u64 age  u64 written_unix_ms  bytes url
//!           u16 n_tags bytes{n}  u16 n_vary (bytes name, u8 norm, u8 present, bytes value){n}
//!           u16 n_fields (bytes name, bytes value){n}
//!           u8 body_kind: 0 = inline (bytes body) | 1 = chunks (u64 id, u32 count, u64 length)
//! ```
//! `age` is the object's age when it was written and `written_unix_ms` the wall clock then:
//! a reader's `Age` is the written age plus the time since (RFC 9111 §4.2.3 across nodes,
//! which assumes the nodes' clocks agree within a second or so, as NTP keeps them).

use super::directives::ResponseDirectives;
use super::object::{Meta, Object};
use super::vary::Vary;
use crate::config::{CacheConfig, VaryNorm};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::time::{Duration, Instant, SystemTime};

/// Bumped when the layout changes; the key names carry it too (`…:v1:…`).
pub const VERSION: u8 = 1;
const MAGIC: [u8; 3] = *b"SLC";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("not a sluice value of version {VERSION}")]
    Version,
    #[error("truncated or malformed value")]
    Malformed,
}

/// Where a variant's body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Inline(Bytes),
    /// In `count` values of its own (`length` bytes in all), named by `id`.
    Chunks {
        id: u64,
        count: u32,
        length: u64,
    },
}

/// One stored variant as the shared tier holds it.
#[derive(Debug, Clone)]
pub struct Variant {
    pub status: StatusCode,
    pub lifetime: u64,
    pub age: u64,
    pub written_ms: u64,
    pub url: Box<str>,
    pub tags: Vec<Box<str>>,
    pub vary: Vary,
    pub headers: HeaderMap,
    pub body: Body,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Variant {
    /// `object` as it is now, with its body placed by `body`.
    pub fn of(object: &Object, body: Body) -> Variant {
        Variant {
            status: object.status,
            lifetime: object.lifetime().as_secs(),
            age: object.age(Instant::now()).as_secs(),
            written_ms: unix_ms(SystemTime::now()),
            url: object.url.clone(),
            tags: object.tags.to_vec(),
            vary: object.vary.clone(),
            headers: object.headers.clone(),
            body,
        }
    }

    /// Its age now (the written age plus the wall-clock time since).
    pub fn age_now(&self) -> u64 {
        let since = unix_ms(SystemTime::now()).saturating_sub(self.written_ms) / 1000;
        self.age.saturating_add(since)
    }

    /// How long the shared tier should keep it: its freshness left plus the longest stale
    /// window its origin allows (`stale-while-revalidate`, `stale-if-error`).
    pub fn keep_for(&self, config: &CacheConfig) -> Duration {
        let d = ResponseDirectives::parse_targeted(&self.headers, &config.targeted);
        let stale = [d.stale_while_revalidate, d.stale_if_error]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0);
        Duration::from_secs(
            self.lifetime
                .saturating_sub(self.age_now())
                .saturating_add(stale),
        )
    }

    /// The object it holds, with `body`, as if stored now with its age so far.
    pub fn into_object(self, body: Bytes, key_len: usize, config: &CacheConfig) -> Object {
        let initial_age = self.age_now();
        let directives = ResponseDirectives::parse_targeted(&self.headers, &config.targeted);
        let meta = Meta {
            status: self.status,
            headers: self.headers,
            directives,
            vary: self.vary,
            url: self.url,
            tags: self.tags,
            lifetime: self.lifetime,
            initial_age,
            stored_at: Instant::now(),
        };
        Object::new(meta, body, key_len)
    }
}

/// The value of a key: its variants, newest first.
pub fn encode(variants: &[Variant]) -> Vec<u8> {
    let mut w = Vec::with_capacity(512);
    w.extend_from_slice(&MAGIC);
    w.push(VERSION);
    w.push(variants.len().min(255) as u8);
    for v in variants.iter().take(255) {
        put_u16(&mut w, v.status.as_u16());
        put_u64(&mut w, v.lifetime);
        put_u64(&mut w, v.age);
        put_u64(&mut w, v.written_ms);
        put_bytes(&mut w, v.url.as_bytes());
        put_u16(&mut w, v.tags.len() as u16);
        for t in v.tags.iter().take(u16::MAX as usize) {
            put_bytes(&mut w, t.as_bytes());
        }
        put_u16(&mut w, v.vary.fields.len() as u16);
        for (name, norm, value) in &v.vary.fields {
            put_bytes(&mut w, name.as_str().as_bytes());
            w.push(norm_code(*norm));
            w.push(value.is_some() as u8);
            put_bytes(&mut w, value.as_deref().unwrap_or_default());
        }
        put_u16(&mut w, v.headers.len().min(u16::MAX as usize) as u16);
        for (name, value) in v.headers.iter().take(u16::MAX as usize) {
            put_bytes(&mut w, name.as_str().as_bytes());
            put_bytes(&mut w, value.as_bytes());
        }
        match &v.body {
            Body::Inline(b) => {
                w.push(0);
                put_bytes(&mut w, b);
            }
            Body::Chunks { id, count, length } => {
                w.push(1);
                put_u64(&mut w, *id);
                put_u32(&mut w, *count);
                put_u64(&mut w, *length);
            }
        }
    }
    w
}

/// Reads what [`encode`] wrote. Bodies, field values and Vary values are copied out of
/// `value`: a slice would keep the whole value (every variant's inline body) alive, unweighed,
/// for as long as one object of it stays in the memory cache.
pub fn decode(value: &Bytes) -> Result<Vec<Variant>, WireError> {
    if value.len() < 5 || value[..3] != MAGIC {
        return Err(WireError::Malformed);
    }
    if value[3] != VERSION {
        return Err(WireError::Version);
    }
    let mut r = Reader { buf: value, at: 4 };
    let n = r.u8()?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let status = StatusCode::from_u16(r.u16()?).map_err(|_| WireError::Malformed)?;
        let lifetime = r.u64()?;
        let age = r.u64()?;
        let written_ms = r.u64()?;
        let url = r.str()?;
        let mut tags = Vec::new();
        for _ in 0..r.u16()? {
            tags.push(r.str()?);
        }
        let mut fields = Vec::new();
        for _ in 0..r.u16()? {
            let name = r.name()?;
            let norm = norm_of(r.u8()?)?;
            let present = r.u8()? != 0;
            let value = r.bytes()?;
            fields.push((name, norm, present.then_some(value)));
        }
        let mut headers = HeaderMap::new();
        for _ in 0..r.u16()? {
            let name = r.name()?;
            let value = HeaderValue::from_bytes(&r.bytes()?).map_err(|_| WireError::Malformed)?;
            headers.append(name, value);
        }
        let body = match r.u8()? {
            0 => Body::Inline(r.bytes()?),
            1 => Body::Chunks {
                id: r.u64()?,
                count: r.u32()?,
                length: r.u64()?,
            },
            _ => return Err(WireError::Malformed),
        };
        out.push(Variant {
            status,
            lifetime,
            age,
            written_ms,
            url,
            tags,
            vary: Vary { fields },
            headers,
            body,
        });
    }
    if r.at != value.len() {
        return Err(WireError::Malformed);
    }
    Ok(out)
}

fn norm_code(n: VaryNorm) -> u8 {
    match n {
        VaryNorm::Exact => 0,
        VaryNorm::List => 1,
        VaryNorm::SortedList => 2,
        VaryNorm::Tokens => 3,
    }
}

fn norm_of(b: u8) -> Result<VaryNorm, WireError> {
    Ok(match b {
        0 => VaryNorm::Exact,
        1 => VaryNorm::List,
        2 => VaryNorm::SortedList,
        3 => VaryNorm::Tokens,
        _ => return Err(WireError::Malformed),
    })
}

fn put_u16(w: &mut Vec<u8>, v: u16) {
    w.extend_from_slice(&v.to_be_bytes());
}
fn put_u32(w: &mut Vec<u8>, v: u32) {
    w.extend_from_slice(&v.to_be_bytes());
}
fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_be_bytes());
}
fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    put_u32(w, b.len() as u32);
    w.extend_from_slice(b);
}

struct Reader<'a> {
    buf: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<std::ops::Range<usize>, WireError> {
        let end = self.at.checked_add(n).ok_or(WireError::Malformed)?;
        if end > self.buf.len() {
            return Err(WireError::Malformed);
        }
        let r = self.at..end;
        self.at = end;
        Ok(r)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let r = self.take(N)?;
        Ok(self.buf[r].try_into().expect("length checked"))
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<Bytes, WireError> {
        let n = self.u32()? as usize;
        let r = self.take(n)?;
        Ok(Bytes::copy_from_slice(&self.buf[r]))
    }
    fn str(&mut self) -> Result<Box<str>, WireError> {
        let b = self.bytes()?;
        std::str::from_utf8(&b)
            .map(Into::into)
            .map_err(|_| WireError::Malformed)
    }
    fn name(&mut self) -> Result<HeaderName, WireError> {
        HeaderName::from_bytes(&self.bytes()?).map_err(|_| WireError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(body: Body) -> Variant {
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
        headers.append("x-two", HeaderValue::from_static("a"));
        headers.append("x-two", HeaderValue::from_bytes(b"\xffb").unwrap());
        Variant {
            status: StatusCode::OK,
            lifetime: 60,
            age: 3,
            written_ms: unix_ms(SystemTime::now()),
            url: "https://a.test:443/x".into(),
            tags: vec!["t1".into(), "t2".into()],
            vary: Vary {
                fields: vec![
                    (
                        HeaderName::from_static("accept-encoding"),
                        VaryNorm::Tokens,
                        Some(Bytes::from_static(b"gzip")),
                    ),
                    (HeaderName::from_static("x-absent"), VaryNorm::Exact, None),
                ],
            },
            headers,
            body,
        }
    }

    #[test]
    fn round_trip() {
        let vs = [
            variant(Body::Inline(Bytes::from_static(b"hello"))),
            variant(Body::Chunks {
                id: 7,
                count: 3,
                length: 1 << 20,
            }),
        ];
        let bytes = Bytes::from(encode(&vs));
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        for (a, b) in vs.iter().zip(&back) {
            assert_eq!(a.status, b.status);
            assert_eq!(a.url, b.url);
            assert_eq!(a.tags, b.tags);
            assert_eq!(a.vary, b.vary);
            assert_eq!(a.headers, b.headers);
            assert_eq!(a.body, b.body);
            assert_eq!(
                (a.lifetime, a.age, a.written_ms),
                (b.lifetime, b.age, b.written_ms)
            );
        }
        let object =
            back[0]
                .clone()
                .into_object(Bytes::from_static(b"hello"), 10, &CacheConfig::default());
        assert!(object.is_fresh(Instant::now()));
        assert_eq!(&object.body[..], b"hello");
        assert!(back[0].keep_for(&CacheConfig::default()) <= Duration::from_secs(57));
    }

    #[test]
    fn every_truncation_and_other_versions_are_errors() {
        let bytes = encode(&[variant(Body::Inline(Bytes::from_static(b"hello")))]);
        for n in 0..bytes.len() {
            let cut = Bytes::copy_from_slice(&bytes[..n]);
            assert!(decode(&cut).is_err(), "a value cut at {n} decoded");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode(&Bytes::from(longer)),
            Err(WireError::Malformed)
        ));
        let mut other = bytes.clone();
        other[3] = VERSION + 1;
        assert!(matches!(
            decode(&Bytes::from(other)),
            Err(WireError::Version)
        ));
        assert!(matches!(
            decode(&Bytes::from_static(b"junk")),
            Err(WireError::Malformed)
        ));
    }
}
