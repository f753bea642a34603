//! Keeps each visitor on one endpoint of the `ab` pool, for A/B tests run across endpoints.
//!
//! The cookie `ab` is the hash key, so one cookie value always lands on the same endpoint
//! while the pool is unchanged. A visitor without the cookie gets an id derived from client
//! IP and `user-agent` (so their next requests agree even before the cookie comes back),
//! which is used as the hash key and set as the cookie:
//! `set-cookie: ab=<id>; Path=/; HttpOnly; SameSite=Lax`.
//!
//! Settings: `pool` (default `ab`).

use sluice_sdk::prelude::*;

#[sluice_sdk::policy]
fn decide(req: &Request) -> Decision {
    let pool = config::get_or("pool", "ab");
    match req.cookie("ab") {
        Some(id) if !id.is_empty() => Decision::forward(pool).hash_key(id),
        _ => {
            let id = visitor_id(req);
            Decision::forward(pool)
                .hash_key(&id)
                .append_response_header(
                    "set-cookie",
                    format!("ab={id}; Path=/; HttpOnly; SameSite=Lax"),
                )
        }
    }
}

/// 16 hex digits of a hash of client IP and user agent.
fn visitor_id(req: &Request) -> String {
    let mut seed = req.client_ip().as_bytes().to_vec();
    seed.push(b'\n');
    seed.extend(req.header("user-agent").unwrap_or_default());
    format!("{:016x}", fnv1a_64(&seed))
}

/// 64-bit FNV-1a (Fowler, Noll, Vo; <http://www.isthe.com/chongo/tech/comp/fnv/>,
/// draft-eastlake-fnv). Stable, not secret: the id only spreads visitors.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_64_reference_values() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
