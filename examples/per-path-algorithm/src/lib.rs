//! Chooses the load-balancing algorithm per request, by path.
//!
//! - `/session/...`: ring hash keyed by the user id, so a user's session requests stay on
//!   one endpoint while the pool is unchanged (and only the users of an endpoint that leaves
//!   move). The user id is header `x-user-id`, else cookie `uid`; a request with neither
//!   (or an empty one) is spread by round robin.
//! - everything else (`/` and any path not under `/session/`): round robin.
//!
//! The algorithm is set per request with `Decision::algorithm`, whatever the pool's
//! configured one is.
//!
//! Settings: `pool` (default `app`), `session_pool` (default: the value of `pool`).

use sluice_sdk::prelude::*;

#[sluice_sdk::policy]
fn decide(req: &Request) -> Decision {
    let pool = config::get_or("pool", "app");
    if !is_session_path(req.path()) {
        return Decision::forward(pool).algorithm(Algorithm::RoundRobin);
    }
    let session_pool = config::get("session_pool").unwrap_or(pool);
    match user_id(req) {
        Some(id) => Decision::forward(session_pool)
            .algorithm(Algorithm::RingHash)
            .hash_key(id),
        None => Decision::forward(session_pool).algorithm(Algorithm::RoundRobin),
    }
}

/// Whether `path` is under `/session/`.
fn is_session_path(path: &str) -> bool {
    path.starts_with("/session/")
}

/// Header `x-user-id`, else cookie `uid`; empty values count as absent.
fn user_id(req: &Request) -> Option<String> {
    first_non_empty(req.header_str("x-user-id"), || req.cookie("uid"))
}

fn first_non_empty(
    first: Option<String>,
    second: impl FnOnce() -> Option<String>,
) -> Option<String> {
    first
        .filter(|s| !s.is_empty())
        .or_else(|| second().filter(|s| !s.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_paths() {
        assert!(is_session_path("/session/"));
        assert!(is_session_path("/session/cart"));
        assert!(!is_session_path("/session"));
        assert!(!is_session_path("/sessions/x"));
        assert!(!is_session_path("/"));
    }

    #[test]
    fn the_header_wins_and_empty_values_do_not_count() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(first_non_empty(s("h"), || s("c")), s("h"));
        assert_eq!(first_non_empty(None, || s("c")), s("c"));
        assert_eq!(first_non_empty(s(""), || s("c")), s("c"));
        assert_eq!(first_non_empty(s(""), || s("")), None);
        assert_eq!(first_non_empty(None, || None), None);
    }
}
