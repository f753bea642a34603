//! `probe`: the integration tests' all-purpose policy. What it does is selected by the
//! request path (prefix match, first row that matches wins):
//!
//! | path                 | decision |
//! |----------------------|----------|
//! | `/loop...`           | spins forever (the host's deadline must stop it) |
//! | `/oom...`            | allocates 1 MiB chunks and keeps them, forever (the memory cap must stop it) |
//! | `/panic...`          | `panic!("probe panic at {path}")` (the SDK logs it at error level, then it traps) |
//! | `/trap...`           | executes `unreachable` (a trap with no panic) |
//! | `/stack...`          | recurses without end (the wasm stack limit must stop it) |
//! | `/hostloop...`       | calls a host accessor (`http_version()`) forever (the deadline must stop it) |
//! | `/huge/header`       | forward (default pool) with a 10 MiB response header edit |
//! | `/huge/edits`        | forward (default pool) with 100,000 request header edits |
//! | `/echo...`           | local 200, `content-type: application/json`, body: the request as JSON (below) |
//! | `/config/<key>`      | local 200, body = setting `<key>`; 404 (empty body) when not set |
//! | `/pick/<pool>`       | local 200, body = `balancer::pick(<pool>, algorithm = query param `algorithm` if present (a config name such as `ring_hash`), hash key = query param `key` if present)`; 404 (empty body) for none; 400 for an unknown algorithm |
//! | `/endpoints/<pool>`  | local 200, body = one line per endpoint: `<addr> <weight> <healthy>\n` (`healthy` is `true`/`false`; empty body for an unknown pool) |
//! | `/live/<pool>`       | local 200, body = one line per endpoint: `<addr> <weight> <healthy> <in_flight> <ewma_latency_us>\n` (empty body for an unknown pool) |
//! | `/health/<pool>/<addr>` | local 200, body = `health::status(<pool>, <addr>)`: `healthy`, `unhealthy` or `ejected`; 404 (empty body) for none |
//! | `/log/<msg>`         | logs `<msg>` (raw, not percent-decoded) at warn level, then local 204 |
//! | `/respond/<status>`  | local response with status `<status>` (unparsable: 0), header `x-probe: local`, body `probe` |
//! | `/bad/pool`          | forward to pool `no-such-pool` |
//! | `/bad/header`        | forward (default pool) with request edit: set header `bad header` (invalid name) to `1` |
//! | `/bad/framing`       | forward (default pool) with response edit: set `content-length: 1` |
//! | `/bad/rewrite`       | forward (default pool) with rewrite `no-slash` |
//! | `/bad/status`        | local response with status 42 |
//! | `/bad/<other>`       | local 404, body `unknown bad case` |
//! | `/shape/lazy`        | what the default policy does: reads method, scheme, authority, path and query; forward (default pool) with the SDK's default cache key |
//! | `/shape/eager`       | as `/shape/lazy`, after also reading everything an eager request record would carry: `headers()` (all), `client_ip`, `tls_sni`, `http_version` |
//! | `/shape/calls`       | as `/shape/lazy`, after 100 calls of `http_version()` (not cached by the SDK, so each one crosses into the host) |
//! | `/shape/<other>`     | local 404, body `unknown shape case` |
//! | anything else        | forward (below) |
//!
//! The `/echo` body is one JSON object:
//! `{"method":..,"scheme":..,"authority":..,"path":..,"query":<string or null>,
//! "headers":[[name, value],..],"client_ip":..,"tls_sni":<string or null>,"http_version":..}`,
//! header values converted lossily to UTF-8, headers in the order received.
//!
//! Forward: to the pool named by setting `pool` (default: the host's default pool), with
//! request edit `set x-probe-request: 1`, response edits `set x-probe: forwarded` then
//! `append x-probe-trace: <path>`; query parameter `rewrite=<p>` (raw) adds `rewrite(<p>)`,
//! `hash=<k>` (raw) adds `hash_key(<k>)`, and `algorithm=<name>` adds `algorithm(<name>)` (a
//! config name such as `maglev`; an unknown name is a local 400).
//!
//! The `/shape/...` paths exist for `host/benches/policy.rs`, which compares the borrowed
//! `request` resource (lazy accessors) with what an eager request record would cost: the
//! difference `eager - lazy` is the price of copying every field into the guest, and
//! `(calls - lazy) / 100` the price of one accessor call.

use std::hint::black_box;

use sluice_sdk::prelude::*;

#[sluice_sdk::policy]
fn decide(req: &Request) -> Decision {
    let path = req.path();
    if path.starts_with("/loop") {
        spin()
    } else if path.starts_with("/oom") {
        hog_memory()
    } else if path.starts_with("/panic") {
        panic!("probe panic at {path}")
    } else if path.starts_with("/trap") {
        trap()
    } else if path.starts_with("/stack") {
        Decision::respond(200, recurse(0).to_string())
    } else if path.starts_with("/hostloop") {
        loop {
            black_box(req.http_version());
        }
    } else if path == "/huge/header" {
        Decision::forward_default().set_response_header("x-huge", "h".repeat(10 << 20))
    } else if path == "/huge/edits" {
        (0..100_000).fold(Decision::forward_default(), |d, i| {
            d.append_request_header("x-many", i.to_string())
        })
    } else if path.starts_with("/echo") {
        Decision::respond(200, echo(req)).header("content-type", "application/json")
    } else if let Some(key) = path.strip_prefix("/config/") {
        match config::get(key) {
            Some(value) => Decision::respond(200, value),
            None => Decision::respond(404, ""),
        }
    } else if let Some(pool) = path.strip_prefix("/pick/") {
        let algorithm = match algorithm_param(req) {
            Ok(algorithm) => algorithm,
            Err(e) => return Decision::respond(400, e.to_string()),
        };
        let key = req.query_param("key").map(str::as_bytes);
        match balancer::pick(pool, algorithm, key) {
            Some(addr) => Decision::respond(200, addr),
            None => Decision::respond(404, ""),
        }
    } else if let Some(pool) = path.strip_prefix("/endpoints/") {
        let lines: String = balancer::endpoints(pool)
            .iter()
            .map(|e| format!("{} {} {}\n", e.addr, e.weight, e.healthy))
            .collect();
        Decision::respond(200, lines)
    } else if let Some(pool) = path.strip_prefix("/live/") {
        let lines: String = balancer::endpoints(pool)
            .iter()
            .map(|e| {
                format!(
                    "{} {} {} {} {}\n",
                    e.addr, e.weight, e.healthy, e.in_flight, e.ewma_latency_us
                )
            })
            .collect();
        Decision::respond(200, lines)
    } else if let Some(rest) = path.strip_prefix("/health/") {
        let (pool, addr) = rest.split_once('/').unwrap_or((rest, ""));
        match health::status(pool, addr) {
            Some(HealthState::Healthy) => Decision::respond(200, "healthy"),
            Some(HealthState::Unhealthy) => Decision::respond(200, "unhealthy"),
            Some(HealthState::Ejected) => Decision::respond(200, "ejected"),
            None => Decision::respond(404, ""),
        }
    } else if let Some(message) = path.strip_prefix("/log/") {
        log::warn(message);
        Decision::respond(204, "")
    } else if let Some(status) = path.strip_prefix("/respond/") {
        Decision::respond(status.parse().unwrap_or(0), "probe").header("x-probe", "local")
    } else if let Some(case) = path.strip_prefix("/bad/") {
        bad(case)
    } else if let Some(shape) = path.strip_prefix("/shape/") {
        request_shape(req, shape)
    } else {
        forward(req)
    }
}

fn forward(req: &Request) -> Decision {
    let mut decision = match config::get("pool") {
        Some(pool) => Decision::forward(pool),
        None => Decision::forward_default(),
    }
    .set_request_header("x-probe-request", "1")
    .set_response_header("x-probe", "forwarded")
    .append_response_header("x-probe-trace", req.path());
    if let Some(target) = req.query_param("rewrite") {
        decision = decision.rewrite(target);
    }
    if let Some(key) = req.query_param("hash") {
        decision = decision.hash_key(key);
    }
    match algorithm_param(req) {
        Ok(Some(algorithm)) => decision.algorithm(algorithm),
        Ok(None) => decision,
        Err(e) => Decision::respond(400, e.to_string()),
    }
}

/// Query parameter `algorithm`, parsed.
fn algorithm_param(req: &Request) -> Result<Option<Algorithm>, balancer::UnknownAlgorithm> {
    req.query_param("algorithm").map(str::parse).transpose()
}

/// Decisions the host must reject.
fn bad(case: &str) -> Decision {
    match case {
        "pool" => Decision::forward("no-such-pool"),
        "header" => Decision::forward_default().set_request_header("bad header", "1"),
        "framing" => Decision::forward_default().set_response_header("content-length", "1"),
        "rewrite" => Decision::forward_default().rewrite("no-slash"),
        "status" => Decision::respond(42, "probe"),
        _ => Decision::respond(404, "unknown bad case"),
    }
}

/// The `/shape/...` cases: see the module doc.
fn request_shape(req: &Request, shape: &str) -> Decision {
    match shape {
        "eager" => {
            black_box(req.headers());
            black_box(req.client_ip());
            black_box(req.tls_sni());
            black_box(req.http_version());
        }
        "calls" => {
            for _ in 0..100 {
                black_box(req.http_version());
            }
        }
        "lazy" => {}
        _ => return Decision::respond(404, "unknown shape case"),
    }
    Decision::forward_default().cache_key(req.default_cache_key())
}

fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Each frame keeps a buffer live so the recursion can be neither a loop nor optimised away.
/// It never returns: the host's stack limit is what ends it.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 32]);
    recurse(black_box(depth + 1)).wrapping_add(frame[7])
}

fn hog_memory() -> ! {
    let mut kept = Vec::new();
    loop {
        kept.push(black_box(vec![1u8; 1 << 20]));
        black_box(&kept);
    }
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

fn echo(req: &Request) -> String {
    let headers: Vec<String> = req
        .headers()
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(&h.value);
            format!("[{},{}]", json(&h.name), json(&value))
        })
        .collect();
    let tls_sni = req.tls_sni();
    format!(
        concat!(
            r#"{{"method":{},"scheme":{},"authority":{},"path":{},"query":{},"#,
            r#""headers":[{}],"client_ip":{},"tls_sni":{},"http_version":{}}}"#
        ),
        json(req.method()),
        json(req.scheme()),
        json(req.authority()),
        json(req.path()),
        req.query().map_or("null".into(), json),
        headers.join(","),
        json(req.client_ip()),
        tls_sni.as_deref().map_or("null".into(), json),
        json(&req.http_version()),
    )
}

/// `s` as a JSON string literal.
fn json(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::json;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json("a\"b\\c\nd\u{1}é"), r#""a\"b\\c\nd\u0001é""#);
    }
}
