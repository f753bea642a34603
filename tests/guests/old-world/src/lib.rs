//! `old-world`: a policy built against `sluice:policy@0.1.0` (a frozen copy of that WIT in
//! `wit/`), as a component built with sluice-sdk 0.1 is. Its `decide` is a valid 0.1 policy
//! (forward to the default pool, after a log line), so the only thing wrong with it is the
//! version: the host must refuse it at load with a message naming both versions.

// wit-bindgen's `export!` expands to `export_name`/`link_section` attributes, which are unsafe.
#![allow(unsafe_code)]

wit_bindgen::generate!({ path: "wit", world: "policy" });

use sluice::policy::log;
use sluice::policy::types::{CachePolicy, Forward, Target};

struct OldWorld;

impl Guest for OldWorld {
    fn decide(req: &Request) -> Decision {
        log::log(log::Level::Debug, &format!("old world: {}", req.path()));
        Decision::Forward(Forward {
            target: Target {
                pool: None,
                endpoint: None,
                hash_key: None,
            },
            cache: CachePolicy {
                key: None,
                bypass: false,
                ttl_secs: None,
                tags: Vec::new(),
            },
            request_edits: Vec::new(),
            response_edits: Vec::new(),
            rewrite: None,
        })
    }
}

export!(OldWorld);
