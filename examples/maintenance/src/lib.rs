//! A maintenance switch: while setting `maintenance` is on, answer `503` locally with
//! `retry-after`, except for paths under `allow_prefix` (health checks, status pages), which
//! are forwarded as usual. When it is off every request goes to the default pool.
//!
//! Settings: `maintenance` (`on`/`off`, `true`/`false`, `yes`/`no`, `1`/`0`; default off),
//! `retry_after` (seconds, default 120), `allow_prefix` (e.g. `/health`; default none).

use sluice_sdk::prelude::*;

const PAGE: &str = "<!doctype html>\n<title>Down for maintenance</title>\n\
<h1>Down for maintenance</h1>\n<p>We will be back shortly.</p>\n";

#[sluice_sdk::policy]
fn decide(req: &Request) -> Decision {
    let on = config::get_bool("maintenance")
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or(false);
    let allowed = config::get("allow_prefix")
        .is_some_and(|prefix| !prefix.is_empty() && req.path().starts_with(&prefix));
    if !on || allowed {
        return Decision::forward_default();
    }
    let retry_after: u32 = config::get_parsed("retry_after")
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or(120);
    Decision::respond(503, PAGE)
        .header("content-type", "text/html; charset=utf-8")
        .header("retry-after", retry_after.to_string())
        .header("cache-control", "no-store")
}
