//! `Vary` (RFC 9111 §4.1): the request header fields a stored response was selected with, and
//! the normalisation that lets equivalent requests share a variant.
//!
//! §4.1 lets a cache treat two field values as matching when one can be turned into the other
//! by adding or removing whitespace where the syntax allows it, combining field lines, or a
//! normalisation known to keep the field's semantics (reordering where order does not matter,
//! case-folding where values are case-insensitive). Which of those holds depends on the field,
//! so it is set per field name ([`VaryNorm`], `[cache.vary]`); unnamed fields compare exactly
//! (after combining their lines).
//!
//! Written here rather than taken from a crate: it is a few dozen lines over the list syntax
//! of RFC 9110 §5.6.1, and no crate does this normalisation.

use super::directives::Quotes;
use crate::config::VaryNorm;
use bytes::Bytes;
use http::HeaderMap;
use http::header::{self, HeaderName};

/// How each selecting field is compared (`cache.vary`): the fields named, the rest exactly.
pub type VaryRules = [(HeaderName, VaryNorm)];

fn rule(rules: &VaryRules, name: &HeaderName) -> VaryNorm {
    rules
        .iter()
        .find(|(n, _)| n == name)
        .map_or(VaryNorm::Exact, |(_, m)| *m)
}

/// The request header fields a stored response was selected with (its `Vary`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vary {
    /// `(field, how it compares, the request's value normalised that way)` in the order
    /// `Vary` names them; the value is `None` when the request had no such field.
    pub fields: Vec<(HeaderName, VaryNorm, Option<Bytes>)>,
}

impl Vary {
    /// `None` for `Vary: *` (never matches, so not stored).
    pub fn capture(response: &HeaderMap, request: &HeaderMap, rules: &VaryRules) -> Option<Vary> {
        let mut fields: Vec<(HeaderName, VaryNorm, Option<Bytes>)> = Vec::new();
        for line in response.get_all(header::VARY) {
            let Ok(line) = line.to_str() else {
                return None;
            };
            for name in line.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if name == "*" {
                    return None;
                }
                let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                    return None;
                };
                if !fields.iter().any(|(n, ..)| *n == name) {
                    let norm = rule(rules, &name);
                    let value = normalised(request, &name, norm).map(Bytes::from);
                    fields.push((name, norm, value));
                }
            }
        }
        Some(Vary { fields })
    }

    /// Whether `request` selects this stored response (RFC 9111 §4.1).
    pub fn matches(&self, request: &HeaderMap) -> bool {
        self.fields.iter().all(|(name, norm, stored)| {
            let mut lines = request.get_all(name).iter();
            match (lines.next(), lines.next(), stored) {
                (None, _, None) => true,
                // The usual case, a client sending what it sent before: normalising is
                // idempotent, so a value equal to the normalised one matches as it is.
                (Some(one), None, Some(s)) if one.as_bytes() == s.as_ref() => true,
                (Some(_), None, Some(_)) if *norm == VaryNorm::Exact => false,
                (Some(_), Some(_), Some(s)) if *norm == VaryNorm::Exact => {
                    joined_exact(request, name) == s.as_ref()
                }
                (Some(_), _, Some(s)) => {
                    normalised(request, name, *norm).as_deref() == Some(s.as_ref())
                }
                _ => false,
            }
        })
    }

    pub fn same_fields(&self, other: &Vary) -> bool {
        self.fields.len() == other.fields.len()
            && self
                .fields
                .iter()
                .zip(&other.fields)
                .all(|(a, b)| a.0 == b.0)
    }
}

/// The field's lines joined with ", " (RFC 9110 §5.3), or `None` when it is absent.
fn joined_exact(h: &HeaderMap, name: &HeaderName) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, l) in h.get_all(name).iter().enumerate() {
        if i > 0 {
            v.extend_from_slice(b", ");
        }
        v.extend_from_slice(l.as_bytes());
    }
    v
}

/// The request's value of `name` normalised by `norm`, or `None` when it is absent.
pub fn normalised(h: &HeaderMap, name: &HeaderName, norm: VaryNorm) -> Option<Vec<u8>> {
    h.get(name)?;
    if norm == VaryNorm::Exact {
        return Some(joined_exact(h, name));
    }
    // The lines are one list (RFC 9110 §5.3), split as one. A quoted string left open makes
    // it no list at all: it compares exactly, since trimming or reordering members would pair
    // its quotes differently, and normalising what this returns must give it back (both
    // found by `fuzz::vary`).
    let combined = joined_exact(h, name);
    let mut q = Quotes::default();
    combined.iter().for_each(|&b| {
        q.outside(b);
    });
    if !q.closed() {
        return Some(combined);
    }
    let mut members: Vec<Vec<u8>> = Vec::new();
    for m in split_outside_quotes(&combined, b',') {
        let member = normalise_member(m, norm == VaryNorm::Tokens);
        if !member.is_empty() {
            members.push(member);
        }
    }
    if matches!(norm, VaryNorm::SortedList | VaryNorm::Tokens) {
        members.sort_unstable();
    }
    Some(members.join(&b","[..]))
}

/// One list member with the optional whitespace around its `;` parameters removed (RFC 9110
/// §5.6.6 allows it there: `OWS ";" OWS`), ASCII-lowercased when `fold` (outside quotes).
fn normalise_member(m: &[u8], fold: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len());
    for (i, part) in split_outside_quotes(m, b';').enumerate() {
        if i > 0 {
            out.push(b';');
        }
        let part = part.trim_ascii();
        if fold {
            let mut q = Quotes::default();
            out.extend(part.iter().map(|&b| {
                if q.outside(b) {
                    b.to_ascii_lowercase()
                } else {
                    b
                }
            }));
        } else {
            out.extend_from_slice(part);
        }
    }
    // A member that was only whitespace (`a, , b`) is dropped by the caller.
    if out.iter().all(|&b| b == b';') {
        out.clear();
    }
    out
}

/// Splits `s` on `sep` where it is not inside a quoted string (RFC 9110 §5.6.4).
fn split_outside_quotes(s: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut q = Quotes::default();
    s.split(move |&b| q.outside(b) && b == sep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(values: &[&str], norm: VaryNorm) -> String {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT_LANGUAGE, v.parse().unwrap());
        }
        String::from_utf8(normalised(&h, &header::ACCEPT_LANGUAGE, norm).unwrap()).unwrap()
    }

    #[test]
    fn list_drops_whitespace_and_empty_members_and_joins_lines() {
        assert_eq!(norm(&[" a ;q=0.5 , ,b"], VaryNorm::List), "a;q=0.5,b");
        assert_eq!(norm(&["a", "b ; x=1"], VaryNorm::List), "a,b;x=1");
        assert_eq!(
            norm(&["B, a"], VaryNorm::List),
            "B,a",
            "order and case kept"
        );
    }

    #[test]
    fn sorted_and_tokens() {
        assert_eq!(norm(&["b, a;q=0.1"], VaryNorm::SortedList), "a;q=0.1,b");
        assert_eq!(
            norm(&["en-US, DE;Q=0.5"], VaryNorm::Tokens),
            "de;q=0.5,en-us"
        );
        assert_eq!(
            norm(&["de;q=0.5,en-us"], VaryNorm::Tokens),
            "de;q=0.5,en-us"
        );
    }

    #[test]
    fn quoted_strings_are_kept_whole() {
        assert_eq!(
            norm(&["x;p=\"B, \\\"A\", a"], VaryNorm::Tokens),
            "a,x;p=\"B, \\\"A\""
        );
    }

    /// Regressions found by `fuzz::vary`: a quoted string left open on one line, and one
    /// left open at all, would have paired differently once normalised.
    #[test]
    fn an_open_quote_makes_the_value_compare_exactly() {
        assert_eq!(
            norm(&["a\"x, B", "C\" , d"], VaryNorm::Tokens),
            "a\"x, B, C\",d"
        );
        assert_eq!(norm(&["b, \"a"], VaryNorm::SortedList), "b, \"a");
        for v in [&["a\"x, B", "C\" , d"][..], &["b, \"a"], &["x;p=\"B", "y"]] {
            for mode in [VaryNorm::List, VaryNorm::SortedList, VaryNorm::Tokens] {
                let once = norm(v, mode);
                assert_eq!(norm(&[&once], mode), once, "{v:?} {mode:?}");
            }
        }
    }

    #[test]
    fn exact_joins_lines_only() {
        assert_eq!(norm(&[" a ", "b"], VaryNorm::Exact), " a , b");
    }
}
