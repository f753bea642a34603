//! `GET /metrics`: everything the proxy counts, in the Prometheus text format (0.0.4) or, when
//! the scraper asks for it in `Accept`, OpenMetrics 1.0; encoded by `prometheus-client`.
//!
//! Nothing is registered ahead of time: each scrape walks what exists now (listeners, the
//! current pools and their endpoints, the policy revisions, the cache, the process) and reads
//! their atomics (`crate::metrics`), so the request path never touches a registry or a lock.
//! Labels are bounded by configuration: listener, pool, endpoint, policy revision, and fixed
//! lists (protocol, method, status class, phase, outcome); never a path, header or client.

use super::AdminState;
use crate::metrics::{CLASSES, METHODS, PROTOCOLS, Reload, TLS_VERSIONS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The OpenMetrics content type (the crate has a constant only for the 0.0.4 format).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exposition of everything, and its content type, for a request that accepts `accept`.
pub fn render(state: &Arc<AdminState>, accept: Option<&str>) -> (String, &'static str) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(state.clone())));
    let openmetrics = accept.is_some_and(|a| a.contains("application/openmetrics-text"));
    let mut out = String::new();
    if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("to a String");
        (out, OPENMETRICS)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            .expect("to a String");
        (
            out,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
    }
}

struct Scrape(Arc<AdminState>);

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrape")
    }
}

type Labels = Vec<(&'static str, String)>;

/// One sample's value.
enum V {
    Counter(u64),
    Gauge(i64),
    /// Per-bucket counts (upper bound in seconds, the last +Inf) and the sum in seconds.
    Histogram(Vec<(f64, u64)>, f64),
}

/// A metric family: its name (without the unit and `_total` suffixes, which the encoder
/// adds), help and samples. A family without samples is left out.
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&'static Unit>,
    rows: Vec<(Labels, V)>,
) -> fmt::Result {
    let Some((_, first)) = rows.first() else {
        return Ok(());
    };
    let kind = match first {
        V::Counter(_) => MetricType::Counter,
        V::Gauge(_) => MetricType::Gauge,
        V::Histogram(..) => MetricType::Histogram,
    };
    let mut metric = enc.encode_descriptor(name, help, unit, kind)?;
    for (labels, v) in &rows {
        let mut m = metric.encode_family(labels)?;
        match v {
            V::Counter(n) => m.encode_counter::<NoLabelSet, u64, u64>(n, None)?,
            V::Gauge(n) => m.encode_gauge(n)?,
            V::Histogram(buckets, sum) => {
                let count = buckets.iter().map(|b| b.1).sum();
                m.encode_histogram::<NoLabelSet>(*sum, count, buckets, None)?
            }
        }
    }
    Ok(())
}

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        enc_build(&mut enc)?;
        enc_listeners(&mut enc, s)?;
        enc_pools(&mut enc, s)?;
        enc_policy(&mut enc, s)?;
        enc_cache(&mut enc, s)?;
        enc_shared(&mut enc, s)?;
        enc_reloads(&mut enc, s)?;
        enc_access_log(&mut enc, s)?;
        enc_spans(&mut enc, s)?;
        enc_process(&mut enc, s)
    }
}

fn enc_build(enc: &mut DescriptorEncoder) -> fmt::Result {
    let version = labels([("version", env!("CARGO_PKG_VERSION"))]);
    family(
        enc,
        "sluice_build_info",
        "The running build (always 1).",
        None,
        vec![(version, V::Gauge(1))],
    )
}

fn enc_listeners(enc: &mut DescriptorEncoder, s: &AdminState) -> fmt::Result {
    let mut requests = Vec::new();
    let (mut accepted, mut open, mut tls, mut tls_failed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for l in s.listeners.load().iter() {
        let name = &*l.name;
        for (p, protocol) in PROTOCOLS.iter().enumerate() {
            for (m, method) in METHODS.iter().enumerate() {
                for (c, class) in CLASSES.iter().enumerate() {
                    let n = l.requests(p, m, c);
                    if n > 0 {
                        let at = [
                            ("listener", name),
                            ("protocol", protocol),
                            ("method", method),
                            ("status_class", class),
                        ];
                        requests.push((labels(at), V::Counter(n)));
                    }
                }
            }
        }
        let (acc, closed, failed, versions) = l.connections();
        let at = labels([("listener", name)]);
        accepted.push((at.clone(), V::Counter(acc)));
        // Closed is counted after accepted, so a scrape between the two reads is never below 0.
        open.push((at.clone(), V::Gauge(acc.saturating_sub(closed) as i64)));
        tls_failed.push((at, V::Counter(failed)));
        for (v, n) in TLS_VERSIONS.iter().zip(versions) {
            tls.push((labels([("listener", name), ("version", v)]), V::Counter(n)));
        }
    }
    family(
        enc,
        "sluice_requests",
        "Requests answered, by listener, HTTP version, method and status class.",
        None,
        requests,
    )?;
    family(
        enc,
        "sluice_connections_accepted",
        "Client connections accepted (including those refused over max_connections).",
        None,
        accepted,
    )?;
    family(
        enc,
        "sluice_connections_open",
        "Client connections open now.",
        None,
        open,
    )?;
    family(
        enc,
        "sluice_tls_handshakes",
        "TLS handshakes completed, by version.",
        None,
        tls,
    )?;
    family(
        enc,
        "sluice_tls_handshake_failures",
        "TLS handshakes that failed or timed out.",
        None,
        tls_failed,
    )
}

fn enc_pools(enc: &mut DescriptorEncoder, s: &AdminState) -> fmt::Result {
    let pools = s.pools.current();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut f: std::collections::BTreeMap<&'static str, Vec<(Labels, V)>> = Default::default();
    let mut add = |name: &'static str, l: Labels, v: V| f.entry(name).or_default().push((l, v));
    for pool in pools.iter() {
        let p = labels([("pool", &pool.name)]);
        let st = &pool.stats;
        let (b, sum) = st.duration.snapshot();
        add("duration", p.clone(), V::Histogram(b, sum));
        let (b, sum) = st.upstream_head.snapshot();
        add("head", p.clone(), V::Histogram(b, sum));
        add("retries", p.clone(), V::Counter(load(&st.retries)));
        add("budget", p.clone(), V::Counter(load(&st.budget_refusals)));
        add("breaker", p.clone(), V::Counter(load(&st.breaker_refusals)));
        add(
            "pool_in_flight",
            p,
            V::Gauge(i64::from(pool.set.live.in_flight())),
        );
        for (i, e) in pool.endpoints.iter().enumerate() {
            let at = labels([("pool", &pool.name), ("endpoint", &e.address)]);
            let live = pool.live(i);
            let record = e.health.record();
            let c = &e.upstream.stats;
            add("requests", at.clone(), V::Counter(live.requests()));
            add(
                "in_flight",
                at.clone(),
                V::Gauge(i64::from(live.in_flight())),
            );
            add("opened", at.clone(), V::Counter(load(&c.opened)));
            add("reused", at.clone(), V::Counter(load(&c.reused)));
            add("failed", at.clone(), V::Counter(load(&c.failed)));
            for (kind, n) in [("status_5xx", &c.status_5xx), ("broken", &c.broken)] {
                let mut l = at.clone();
                l.push(("kind", kind.into()));
                add("errors", l, V::Counter(load(n)));
            }
            add("ejections", at.clone(), V::Counter(record.ejections));
            for (result, n) in [
                ("passed", record.checks_passed),
                ("failed", record.checks_failed),
            ] {
                let mut l = at.clone();
                l.push(("result", result.into()));
                add("checks", l, V::Counter(n));
            }
            let now = live.health().name();
            for state in ["healthy", "unhealthy", "ejected"] {
                let mut l = at.clone();
                l.push(("state", state.into()));
                add("health", l, V::Gauge(i64::from(now == state)));
            }
        }
    }
    let mut take = |k: &str| f.remove(k).unwrap_or_default();
    let seconds = Some(&Unit::Seconds);
    family(
        enc,
        "sluice_request_duration",
        "Time from a request's arrival to the end of its response body, for requests routed to the pool.",
        seconds,
        take("duration"),
    )?;
    family(
        enc,
        "sluice_upstream_response_head",
        "Time from sending a request upstream to its response head, per attempt.",
        seconds,
        take("head"),
    )?;
    family(
        enc,
        "sluice_upstream_retries",
        "Attempts after a request's first.",
        None,
        take("retries"),
    )?;
    family(
        enc,
        "sluice_upstream_retry_budget_refusals",
        "Retries the retry budget refused.",
        None,
        take("budget"),
    )?;
    family(
        enc,
        "sluice_upstream_circuit_breaker_refusals",
        "Requests refused by a circuit breaker (max_in_flight).",
        None,
        take("breaker"),
    )?;
    family(
        enc,
        "sluice_pool_in_flight",
        "Requests in flight to the pool.",
        None,
        take("pool_in_flight"),
    )?;
    family(
        enc,
        "sluice_upstream_requests",
        "Requests sent to the endpoint (attempts).",
        None,
        take("requests"),
    )?;
    family(
        enc,
        "sluice_upstream_errors",
        "Attempts that failed at the endpoint: answered with a 5xx, or broken after connecting (reset, timeout, invalid response). Connect failures are sluice_upstream_connections_failed.",
        None,
        take("errors"),
    )?;
    family(
        enc,
        "sluice_upstream_in_flight",
        "Requests in flight to the endpoint.",
        None,
        take("in_flight"),
    )?;
    family(
        enc,
        "sluice_upstream_connections_opened",
        "Upstream connections opened.",
        None,
        take("opened"),
    )?;
    family(
        enc,
        "sluice_upstream_connections_reused",
        "Requests sent on a connection that was already open.",
        None,
        take("reused"),
    )?;
    family(
        enc,
        "sluice_upstream_connections_failed",
        "Upstream connection attempts that failed (connect, TLS or HTTP handshake).",
        None,
        take("failed"),
    )?;
    family(
        enc,
        "sluice_upstream_ejections",
        "Times outlier detection ejected the endpoint.",
        None,
        take("ejections"),
    )?;
    family(
        enc,
        "sluice_health_checks",
        "Active health checks, by result.",
        None,
        take("checks"),
    )?;
    family(
        enc,
        "sluice_upstream_health",
        "The endpoint's health state (1 for the current one).",
        None,
        take("health"),
    )
}

fn enc_policy(enc: &mut DescriptorEncoder, s: &AdminState) -> fmt::Result {
    let (mut calls, mut failures, mut durations, mut active) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in s.policy.metrics() {
        let revision = r.revision.to_string();
        let rev = labels([("policy", &r.policy), ("revision", &revision)]);
        active.push((rev, V::Gauge(i64::from(r.active))));
        for (phase, c, (buckets, sum)) in r.phases {
            let at = labels([
                ("policy", &r.policy),
                ("revision", &revision),
                ("phase", phase),
            ]);
            calls.push((at.clone(), V::Counter(c.calls)));
            durations.push((at.clone(), V::Histogram(buckets, sum)));
            for (kind, n) in [
                ("trap", c.traps),
                ("deadline", c.deadline_exceeded),
                ("memory", c.memory_exceeded),
                ("invalid-decision", c.invalid_decisions),
                ("instantiate", c.instantiate_failures),
            ] {
                let mut l = at.clone();
                l.push(("kind", kind.into()));
                failures.push((l, V::Counter(n)));
            }
        }
    }
    family(
        enc,
        "sluice_policy_revision_active",
        "1 for the revision that decides, 0 for the previous ones kept for rollback.",
        None,
        active,
    )?;
    family(
        enc,
        "sluice_policy_calls",
        "Calls into the policy, by revision and phase.",
        None,
        calls,
    )?;
    family(
        enc,
        "sluice_policy_failures",
        "Failed policy calls, by kind.",
        None,
        failures,
    )?;
    family(
        enc,
        "sluice_policy_call_duration",
        "Time a policy call takes, instantiation included.",
        Some(&Unit::Seconds),
        durations,
    )
}

fn enc_cache(enc: &mut DescriptorEncoder, s: &AdminState) -> fmt::Result {
    let Some(cache) = &s.cache else {
        return Ok(());
    };
    // The same figures as `GET /stats`, so the two never disagree.
    let stats = cache.stats_json();
    let Some(stats) = stats.as_object() else {
        return Ok(());
    };
    for (k, v) in stats {
        let Some(n) = v.as_u64() else {
            continue;
        };
        let bytes = Some(&Unit::Bytes);
        let gauge = V::Gauge(n as i64);
        let (name, help, unit, value) = match k.as_str() {
            "entries" => ("entries", "Keys in the cache.", None, gauge),
            "tags" => ("tags", "Distinct tags in the tag index.", None, gauge),
            "bytes" => ("size", "Bytes the cache is charged for.", bytes, gauge),
            "capacity" => ("capacity", "The cache's capacity.", bytes, gauge),
            _ => (
                k.as_str(),
                "A cache counter (see GET /stats).",
                None,
                V::Counter(n),
            ),
        };
        let name = format!("sluice_cache_{name}");
        family(enc, &name, help, unit, vec![(Vec::new(), value)])?;
    }
    Ok(())
}

fn enc_shared(enc: &mut DescriptorEncoder, s: &AdminState) -> fmt::Result {
    let Some(fleet) = &s.fleet else {
        return Ok(());
    };
    // The same figures as `GET /stats`' "shared".
    let stats = fleet.stats.json();
    let rows = stats
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((labels([("event", k.as_str())]), V::Counter(v.as_u64()?))))
        .collect();
    family(
        enc,
        "sluice_cache_shared",
        "The shared cache tier (Redis): hits, misses, stores, operations skipped (breaker open or no connection) and failed, undecodable values, fetch locks, purges sent and events received (see GET /stats).",
        None,
        rows,
    )?;
    let state = fleet.state();
    let rows = ["closed", "open", "disconnected"]
        .iter()
        .map(|st| (labels([("state", st)]), V::Gauge((*st == state) as i64)))
        .collect();
    family(
        enc,
        "sluice_cache_shared_breaker",
        "1 for the shared tier's state: closed (in use), open (failing, skipped), disconnected.",
        None,
        rows,
    )
}

fn enc_reloads(enc: &mut DescriptorEncoder, s: &AdminState) -> fmt::Result {
    let mut rows = Vec::new();
    for what in Reload::ALL {
        let (ok, failed) = match what {
            Reload::Policy => s.policy.loads(),
            _ => s.reloads.get(what),
        };
        for (outcome, n) in [("ok", ok), ("failed", failed)] {
            let at = labels([("what", what.name()), ("outcome", outcome)]);
            rows.push((at, V::Counter(n)));
        }
    }
    family(
        enc,
        "sluice_reloads",
        "Reloads by what was reloaded (config file, certificates, pools, policy) and outcome; a failed one left the old state serving.",
        None,
        rows,
    )
}

fn enc_spans(enc: &mut DescriptorEncoder, s: &AdminState) -> fmt::Result {
    let Some(spans) = &s.spans else {
        return Ok(());
    };
    let (exported, dropped, failed) = spans.counts();
    let rows = vec![
        (labels([("outcome", "exported")]), V::Counter(exported)),
        (labels([("outcome", "dropped")]), V::Counter(dropped)),
        (labels([("outcome", "failed")]), V::Counter(failed)),
    ];
    family(
        enc,
        "sluice_otlp_spans",
        "Request spans sent to the OTLP collector, dropped because the export queue was full, and lost to failed exports.",
        None,
        rows,
    )
}

fn enc_access_log(enc: &mut DescriptorEncoder, s: &AdminState) -> fmt::Result {
    let Some(log) = &s.access_log else {
        return Ok(());
    };
    let (queued, dropped) = log.counts();
    let rows = vec![
        (labels([("outcome", "written")]), V::Counter(queued)),
        (labels([("outcome", "dropped")]), V::Counter(dropped)),
    ];
    family(
        enc,
        "sluice_access_log_lines",
        "Access-log lines queued to the writer, and dropped because its queue was full.",
        None,
        rows,
    )
}

fn enc_process(enc: &mut DescriptorEncoder, s: &AdminState) -> fmt::Result {
    let none = || Vec::new();
    let start = s
        .started_wall
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    family(
        enc,
        "process_start_time",
        "When the process started, in seconds since the epoch.",
        Some(&Unit::Seconds),
        vec![(none(), V::Gauge(start))],
    )?;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command (which is in parentheses and may hold spaces): utime and
        // stime are the 12th and 13th (fields 14 and 15 of proc(5)), in clock ticks.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let hz = rustix::param::clock_ticks_per_second().max(1);
        let cpu = (ticks(11) + ticks(12)) as f64 / hz as f64;
        let mut m = enc.encode_descriptor(
            "process_cpu",
            "User and system CPU time.",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, f64, f64>(&cpu, None)?;
    }
    if let Some(pages) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
    {
        let bytes = pages * rustix::param::page_size() as u64;
        family(
            enc,
            "process_resident_memory",
            "Resident memory.",
            Some(&Unit::Bytes),
            vec![(none(), V::Gauge(bytes as i64))],
        )?;
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let fds = dir.count() as i64;
        family(
            enc,
            "process_open_fds",
            "Open file descriptors.",
            None,
            vec![(none(), V::Gauge(fds))],
        )?;
    }
    Ok(())
}
