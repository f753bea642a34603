//! `cache-import`: for `tests/tests/policy_cache.rs`, the guest side of the `cache` import
//! (`sluice:policy@0.2.1`). What it does is selected by the request path (exact match):
//!
//! | path                     | decision |
//! |--------------------------|----------|
//! | `/_cache/peek`           | local 200, `content-type: application/json`, body = `cache::peek(<query param key>)` as JSON (below), or `null` for none |
//! | `/_cache/purge-key`      | local 200, body = `cache::purge_key(<query param key>, soft)` (the count, in decimal) |
//! | `/_cache/purge-tag`      | local 200, body = `cache::purge_tag(<query param tag>, soft)` (the count, in decimal) |
//! | `/_cache/<other>`        | local 404, body `unknown cache case` |
//! | anything else, `POST`    | `cache::purge_tag("all", false)` (invalidate on write), then forward to the default pool with response header `x-purged: <count>` |
//! | anything else            | forward to the default pool with `.cache_tag("all")` |
//!
//! Query parameters are percent-decoded; a missing `key` or `tag` is the empty string.
//! `soft=1` makes a purge soft (mark stale instead of remove).
//!
//! The `/_cache/peek` body is `{"age":<age-secs>,"ttl":<ttl-secs>,"status":<status>,
//! "size":<size>,"tags":[<tag>,..]}` (tags in the order the host reports them).

use sluice_sdk::prelude::*;

#[sluice_sdk::policy]
fn decide(req: &Request) -> Decision {
    let Some(case) = req.path().strip_prefix("/_cache/") else {
        if req.method() == "POST" {
            let purged = cache::purge_tag("all", false);
            return Decision::forward_default().set_response_header("x-purged", purged.to_string());
        }
        return Decision::forward_default().cache_tag("all");
    };
    let param = |name| percent_decode(req.query_param(name).unwrap_or_default());
    let soft = req.query_param("soft") == Some("1");
    match case {
        "peek" => {
            let body = match cache::peek(param("key")) {
                Some(e) => {
                    let tags: Vec<String> = e.tags.iter().map(|t| json(t)).collect();
                    format!(
                        r#"{{"age":{},"ttl":{},"status":{},"size":{},"tags":[{}]}}"#,
                        e.age_secs,
                        e.ttl_secs,
                        e.status,
                        e.size,
                        tags.join(",")
                    )
                }
                None => "null".to_owned(),
            };
            Decision::respond(200, body).header("content-type", "application/json")
        }
        "purge-key" => Decision::respond(200, cache::purge_key(param("key"), soft).to_string()),
        "purge-tag" => Decision::respond(200, cache::purge_tag(&param("tag"), soft).to_string()),
        _ => Decision::respond(404, "unknown cache case"),
    }
}

/// `s` with `%XX` escapes decoded (and `+` left alone); invalid escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `s` as a JSON string literal.
fn json(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("http%3A%2F%2Fh%3A80%2Fa%3Fb%3D1"),
            "http://h:80/a?b=1"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode(""), "");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json("a\"b\\c\u{1}"), r#""a\"b\\c\u0001""#);
    }
}
