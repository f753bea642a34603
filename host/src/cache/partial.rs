//! Stored parts of a response (RFC 9111 §3.3, §3.4): the byte ranges of one representation
//! that `206 Partial Content` answers brought, served again to range requests they cover and
//! combined into the complete response once they cover all of it.
//!
//! Only parts that can be proven to belong together are kept: each 206 needs a strong `ETag`
//! (RFC 9110 §8.8.3) and a single `Content-Range` with a known complete length, and parts
//! are merged only when both agree. A part with another validator or length starts over.

use super::object::Object;
use bytes::Bytes;
use http::{HeaderMap, header};
use std::sync::Arc;

/// Separate byte ranges kept per representation; a part that would make more is not stored
/// (it would make each merge cost more, and its requests still go upstream).
const MAX_SEGMENTS: usize = 32;

/// Bytes charged per stored range on top of its body (its handle and list slot).
const SEGMENT_OVERHEAD: u64 = 48;

/// What a 206's `Content-Range` says: `first..=last` of a body of `complete` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub first: u64,
    pub last: u64,
    pub complete: u64,
}

impl ContentRange {
    /// Bytes in the range (never zero).
    pub fn bytes(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// The `Content-Range` of a 206 that may be stored as a part: exactly one field, unit
/// `bytes`, a satisfiable range of a known complete length (RFC 9110 §14.4); and a strong
/// `ETag` to tie the parts together. `None` for anything else, multipart answers included.
pub fn storable_range(h: &HeaderMap) -> Option<ContentRange> {
    let etag = h.get(header::ETAG)?.to_str().ok()?.trim();
    if !etag.starts_with('"') {
        return None;
    }
    let mut fields = h.get_all(header::CONTENT_RANGE).iter();
    let (field, None) = (fields.next()?, fields.next()) else {
        return None;
    };
    let spec = field.to_str().ok()?.trim().strip_prefix("bytes ")?;
    let (range, complete) = spec.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let r = ContentRange {
        first: num(first)?,
        last: num(last)?,
        complete: num(complete)?,
    };
    (r.first <= r.last && r.last < r.complete).then_some(r)
}

/// The parts of one representation held under a key.
#[derive(Debug)]
pub struct Partial {
    /// The newest part's head (status 206, no `Content-Range` or `Content-Length`, empty
    /// body): its freshness, validator, `Vary` and tags stand for all the parts.
    pub head: Arc<Object>,
    /// The complete representation's length.
    pub complete: u64,
    /// Disjoint, non-adjacent, by start.
    segments: Vec<(u64, Bytes)>,
}

/// What adding a part gave.
pub enum Merged {
    Partial(Partial),
    /// The parts now cover the whole representation: its body.
    Complete(Bytes),
    /// Not kept (too many separate ranges).
    Refused,
}

impl Partial {
    /// The stored bytes `start..end` if one stored range covers them.
    pub fn get(&self, start: u64, end: u64) -> Option<Bytes> {
        let (s, b) = self
            .segments
            .iter()
            .rfind(|(s, _)| *s <= start)
            .filter(|(s, b)| s + b.len() as u64 >= end)?;
        Some(b.slice((start - s) as usize..(end - s) as usize))
    }

    pub fn weight(&self) -> u64 {
        self.head.weight()
            + self
                .segments
                .iter()
                .map(|(_, b)| b.len() as u64 + SEGMENT_OVERHEAD)
                .sum::<u64>()
    }

    /// Whether a new part with this head and length belongs to the same representation:
    /// the same strong `ETag` (RFC 9110 §8.8.3.2 strong comparison) and complete length.
    fn same_representation(&self, head: &Object, complete: u64) -> bool {
        self.complete == complete && self.head.etag.is_some() && self.head.etag == head.etag
    }

    /// Adds the part `body` at `first` (with its head) to `old`, or starts over when `old`
    /// is of another representation (RFC 9111 §3.4: the newer part's header fields win).
    pub fn merge(
        old: Option<&Partial>,
        head: Object,
        first: u64,
        body: Bytes,
        complete: u64,
    ) -> Merged {
        let mut segments = match old {
            Some(p) if p.same_representation(&head, complete) => p.segments.clone(),
            _ => Vec::new(),
        };
        let last = first + body.len() as u64;
        // Everything overlapping or touching the new part becomes one range with it.
        let touching: Vec<usize> = (0..segments.len())
            .filter(|&i| {
                let (s, b) = &segments[i];
                *s <= last && s + b.len() as u64 >= first
            })
            .collect();
        let start = touching
            .first()
            .map_or(first, |&i| segments[i].0.min(first));
        let end = touching.last().map_or(last, |&i| {
            let (s, b) = &segments[i];
            (s + b.len() as u64).max(last)
        });
        let joined = if touching.is_empty() {
            body
        } else {
            let mut all = vec![0u8; (end - start) as usize];
            for &i in &touching {
                let (s, b) = &segments[i];
                let at = (s - start) as usize;
                all[at..at + b.len()].copy_from_slice(b);
            }
            let at = (first - start) as usize;
            all[at..at + body.len()].copy_from_slice(&body);
            Bytes::from(all)
        };
        if let (Some(&a), Some(&z)) = (touching.first(), touching.last()) {
            segments.drain(a..=z);
        }
        let at = segments.partition_point(|(s, _)| *s < start);
        segments.insert(at, (start, joined));
        if segments.len() > MAX_SEGMENTS {
            return Merged::Refused;
        }
        if segments.len() == 1 && start == 0 && end == complete {
            let (_, body) = segments.pop().expect("one range");
            return Merged::Complete(body);
        }
        Merged::Partial(Partial {
            head: Arc::new(head),
            complete,
            segments,
        })
    }
}
