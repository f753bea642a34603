//! Lets through only requests with a known API key.
//!
//! The key comes from `x-api-key`, or else from `authorization: Bearer <key>`.
//! - no key: local `401` with `www-authenticate: Bearer`;
//! - an unknown key: local `403`;
//! - a known key: forwarded to the default pool, uncached, with `x-api-client: <client name>`
//!   set and the header that carried the key removed (the upstream never sees keys).
//!
//! Settings: `keys`, comma-separated `name:key` pairs, e.g. `"mobile:k3y-1, partner:k3y-2"`
//! (spaces around entries are ignored; a key may contain `:`, a name may not).

use sluice_sdk::prelude::*;

#[sluice_sdk::policy]
fn decide(req: &Request) -> Decision {
    let Some((key, carrier)) = presented_key(req) else {
        return Decision::respond(401, "an API key is required\n")
            .header("www-authenticate", "Bearer")
            .header("content-type", "text/plain; charset=utf-8");
    };
    let keys = config::get("keys").unwrap_or_default();
    match client_for(&keys, &key) {
        Some(client) => Decision::forward_default()
            .no_cache()
            .set_request_header("x-api-client", client)
            .remove_request_header(carrier),
        None => {
            log::info(format!("unknown API key from {}", req.client_ip()));
            Decision::respond(403, "unknown API key\n")
                .header("content-type", "text/plain; charset=utf-8")
        }
    }
}

/// The key the client presented and the header it came in.
fn presented_key(req: &Request) -> Option<(String, &'static str)> {
    if let Some(key) = req.header_str("x-api-key") {
        return Some((key.trim().to_owned(), "x-api-key"));
    }
    let auth = req.header_str("authorization")?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    // Auth schemes are case-insensitive (RFC 9110 §11.1).
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| (token.trim().to_owned(), "authorization"))
}

/// The name of the client whose key is `key`, from the `keys` setting.
fn client_for<'k>(keys: &'k str, key: &str) -> Option<&'k str> {
    keys.split(',')
        .filter_map(|entry| entry.trim().split_once(':'))
        .find(|(_, known)| !key.is_empty() && constant_time_eq(known.as_bytes(), key.as_bytes()))
        .map(|(name, _)| name)
}

/// Compares without stopping at the first difference, so response timing says nothing about
/// how much of a guessed key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_setting() {
        let keys = "mobile:k1, partner:k:2 ,broken";
        assert_eq!(client_for(keys, "k1"), Some("mobile"));
        assert_eq!(client_for(keys, "k:2"), Some("partner"));
        assert_eq!(client_for(keys, "k"), None);
        assert_eq!(client_for(keys, ""), None);
        assert_eq!(client_for("", "k1"), None);
    }
}
