//! `prev-minor`: a policy built against `sluice:policy@0.2.0` (a frozen copy of that WIT in
//! `wit/`), as a component built with sluice-sdk 0.2.0 is. 0.2.1 only added an interface, so a
//! host implementing 0.2.1 must load it and link its `@0.2.0` imports to its own definitions.
//!
//! Its `decide` forwards to the default pool with the response edits `set x-prev-minor: 1` and
//! `set x-prev-minor-endpoints: <n>` (`n` = how many endpoints `balancer.endpoints("web")`
//! reports), after a debug log line, so it really calls the `types`, `log` and `balancer`
//! imports of 0.2.0.

// wit-bindgen's `export!` expands to `export_name`/`link_section` attributes, which are unsafe.
#![allow(unsafe_code)]

wit_bindgen::generate!({ path: "wit", world: "policy" });

use sluice::policy::types::{CachePolicy, EditOp, Forward, HeaderEdit, Target};
use sluice::policy::{balancer, log};

struct PrevMinor;

impl Guest for PrevMinor {
    fn decide(req: &Request) -> Decision {
        log::log(log::Level::Debug, &format!("prev minor: {}", req.path()));
        let endpoints = balancer::endpoints("web").len();
        let set = |name: &str, value: String| HeaderEdit {
            op: EditOp::Set,
            name: name.to_owned(),
            value: value.into_bytes(),
        };
        Decision::Forward(Forward {
            target: Target {
                pool: None,
                endpoint: None,
                hash_key: None,
                algorithm: None,
            },
            cache: CachePolicy {
                key: None,
                bypass: false,
                ttl_secs: None,
                tags: Vec::new(),
            },
            request_edits: Vec::new(),
            response_edits: vec![
                set("x-prev-minor", "1".to_owned()),
                set("x-prev-minor-endpoints", endpoints.to_string()),
            ],
            rewrite: None,
        })
    }
}

export!(PrevMinor);
