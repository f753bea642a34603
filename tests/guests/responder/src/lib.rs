//! `responder`: a 0.3 policy with a response phase, for the tests of `on-response` through the
//! proxy.
//!
//! `decide` forwards to the default pool (with the response edit `set x-decided: 1`); a path
//! under `/trap-response` makes `on-response` panic. `on-response`:
//! - a 5xx from the upstream becomes a local 503 `sorry: <status> from <endpoint>`;
//! - otherwise serves with `x-phase: upstream|cache` and `x-seen-status: <status>`;
//! - `x-private: 1` on the response: not stored; `x-ttl: N`: stored for N seconds; `x-tag: T`:
//!   tagged T.

use sluice_sdk::prelude::*;

#[sluice_sdk::policy(on_response = respond)]
fn decide(_req: &Request) -> Decision {
    Decision::forward_default().set_response_header("x-decided", "1")
}

fn respond(req: &Request, resp: &Response) -> ResponseDecision {
    if req.path().starts_with("/trap-response") {
        panic!("on-response asked to trap");
    }
    let status = resp.status();
    if status >= 500 && resp.source() == Source::Upstream {
        let from = resp.endpoint().unwrap_or_default();
        return ResponseDecision::respond(503, format!("sorry: {status} from {from}"))
            .header("content-type", "text/plain");
    }
    let source = match resp.source() {
        Source::Upstream => "upstream",
        Source::Cache => "cache",
    };
    let mut d = ResponseDecision::serve()
        .set_header("x-phase", source)
        .set_header("x-seen-status", status.to_string());
    if resp.header_str("x-private").as_deref() == Some("1") {
        d = d.no_store();
    }
    if let Some(ttl) = resp.header_str("x-ttl").and_then(|t| t.parse().ok()) {
        d = d.ttl(ttl);
    }
    if let Some(tag) = resp.header_str("x-tag") {
        d = d.cache_tag(tag);
    }
    d
}
