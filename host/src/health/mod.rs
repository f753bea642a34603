//! Health: active checks, passive outlier detection and each endpoint's health record.
//!
//! Both feed the same two flags of an endpoint's [`crate::balance::Live`]: `DOWN` (active
//! checks failed `fall` times in a row; cleared after `rise` passes) and `EJECTED` (passive
//! outlier detection saw consecutive failures; cleared when the ejection time is over or an
//! active check passes). The balancing algorithms skip flagged endpoints; [`Pool::set_flag`]
//! logs every change and keeps panic mode up to date.
//!
//! - [`EndpointHealth`] (in `upstream/`): counters and the record the admin API shows.
//! - [`observe`]: passive outlier detection, called once per upstream exchange.
//! - [`Monitor`]: the tasks of one pool generation (active checks, ejection expiry), stopped
//!   when dropped.
//! - `active.rs`: one HTTP or TCP check.

mod active;

use crate::balance::{self, DOWN, EJECTED};
use crate::config::HealthCheckConfig;
use crate::upstream::{CheckResult, Pool, Pools};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// What one upstream exchange taught passive outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response below 500.
    Success,
    /// A 5xx response; 502, 503 and 504 are also gateway errors.
    Status(u16),
    /// Reset, broken HTTP or timeout: counted as a 5xx and a gateway error.
    LocalFailure,
    /// The TCP connect or TLS handshake failed: also a 5xx and a gateway error.
    ConnectFailure,
}

/// Passive outlier detection: counts endpoint `i`'s errors (for `/metrics`) and consecutive
/// failures, and ejects it when a threshold is reached, unless that would eject more than the
/// pool's maximum share.
pub fn observe(pool: &Pool, i: usize, outcome: Outcome) {
    let stats = &pool.endpoints[i].upstream.stats;
    match outcome {
        Outcome::Status(_) => stats.status_5xx.fetch_add(1, Ordering::Relaxed),
        Outcome::LocalFailure => stats.broken.fetch_add(1, Ordering::Relaxed),
        // Connect failures are counted where the connection is dialled.
        Outcome::Success | Outcome::ConnectFailure => 0,
    };
    let Some(cfg) = &pool.outlier else { return };
    let h = &pool.endpoints[i].health;
    let bump = |c: &AtomicU32, hit: bool| {
        if hit {
            c.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            // Only write when needed: most exchanges succeed and the counter is already 0.
            if c.load(Ordering::Relaxed) != 0 {
                c.store(0, Ordering::Relaxed);
            }
            0
        }
    };
    let (is_5xx, is_gateway, is_connect) = match outcome {
        Outcome::Success => (false, false, false),
        Outcome::Status(s) => (true, matches!(s, 502..=504), false),
        Outcome::LocalFailure => (true, true, false),
        Outcome::ConnectFailure => (true, true, true),
    };
    let n5 = bump(&h.consecutive_5xx, is_5xx);
    let ngw = bump(&h.consecutive_gateway, is_gateway);
    let nconn = bump(&h.consecutive_connect, is_connect);
    let reached = |n: u32, threshold: u32| threshold != 0 && n >= threshold;
    let why = if reached(nconn, cfg.consecutive_connect_failures) {
        format!("{nconn} consecutive connect failures")
    } else if reached(ngw, cfg.consecutive_gateway_errors) {
        format!("{ngw} consecutive gateway errors")
    } else if reached(n5, cfg.consecutive_5xx) {
        format!("{n5} consecutive 5xx")
    } else {
        return;
    };
    eject(pool, i, &why);
}

fn eject(pool: &Pool, i: usize, why: &str) {
    let Some(cfg) = &pool.outlier else { return };
    let live = pool.live(i);
    if live.flags() & EJECTED != 0 {
        return;
    }
    let n = pool.endpoints.len();
    let ejected = (0..n)
        .filter(|&j| pool.live(j).flags() & EJECTED != 0)
        .count();
    let allowed = ((cfg.max_ejection_ratio * n as f64) as usize).max(1);
    if ejected >= allowed {
        tracing::debug!(pool = %pool.name, endpoint = %pool.endpoints[i].address, why,
            "not ejected: max_ejection_percent reached");
        return;
    }
    let h = &pool.endpoints[i].health;
    let now = balance::now();
    // A streak ends once the endpoint has stayed in for the longest ejection time.
    let returned = h.returned_at.load(Ordering::Relaxed);
    if returned != 0 && now.saturating_sub(returned) > cfg.max_ejection_time.as_nanos() as u64 {
        h.ejection_streak.store(0, Ordering::Relaxed);
    }
    let streak = h.ejection_streak.fetch_add(1, Ordering::Relaxed) + 1;
    let duration = cfg
        .base_ejection_time
        .saturating_mul(streak)
        .min(cfg.max_ejection_time);
    h.ejected_until
        .store(now + duration.as_nanos() as u64, Ordering::Relaxed);
    for c in [
        &h.consecutive_5xx,
        &h.consecutive_gateway,
        &h.consecutive_connect,
    ] {
        c.store(0, Ordering::Relaxed);
    }
    h.with_record(|r| {
        r.ejections += 1;
        r.ejected_until = Some(SystemTime::now() + duration);
    });
    pool.set_flag(
        i,
        EJECTED,
        true,
        &format!("{why}; ejected for {duration:?}"),
    );
}

/// Ends endpoint `i`'s ejection.
fn restore(pool: &Pool, i: usize, why: &str) {
    let h = &pool.endpoints[i].health;
    h.ejected_until.store(0, Ordering::Relaxed);
    h.returned_at.store(balance::now(), Ordering::Relaxed);
    h.with_record(|r| r.ejected_until = None);
    pool.set_flag(i, EJECTED, false, why);
}

/// Applies one active check result to endpoint `i` (rise/fall thresholds). The flags change
/// before the record's counters, so whoever sees a counter also sees its effect.
fn on_check(pool: &Pool, i: usize, cfg: &HealthCheckConfig, result: Result<String, String>) {
    let h = &pool.endpoints[i].health;
    let live = pool.live(i);
    let passed = result.is_ok();
    let detail = match result {
        Ok(d) | Err(d) => d,
    };
    if passed {
        h.fails_in_a_row.store(0, Ordering::Relaxed);
        let n = h.passes_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if live.flags() & EJECTED != 0 {
            restore(pool, i, "active check passed");
        }
        if live.flags() & DOWN != 0 && n >= cfg.rise {
            pool.set_flag(i, DOWN, false, &format!("{n} checks passed"));
        }
    } else {
        h.passes_in_a_row.store(0, Ordering::Relaxed);
        let n = h.fails_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if live.flags() & DOWN == 0 && n >= cfg.fall {
            pool.set_flag(i, DOWN, true, &format!("{n} checks failed, last: {detail}"));
        } else {
            tracing::debug!(pool = %pool.name, endpoint = %pool.endpoints[i].address,
                failures = n, detail, "health check failed");
        }
    }
    h.with_record(|r| {
        if passed {
            r.checks_passed += 1;
        } else {
            r.checks_failed += 1;
        }
        r.last_check = Some(CheckResult {
            at: SystemTime::now(),
            passed,
            detail,
        });
    });
}

/// The health tasks of one pool generation. Dropping it stops them.
pub struct Monitor {
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Monitor {
    /// Starts active checks for every endpoint of pools that configure them, and one
    /// ejection-expiry task per pool with outlier detection.
    pub fn start(pools: &Arc<Pools>) -> Monitor {
        let mut tasks = Vec::new();
        for pool in pools.iter() {
            if let Some(cfg) = &pool.health_check {
                for i in 0..pool.endpoints.len() {
                    let task = tokio::spawn(check_loop(pool.clone(), i, cfg.clone()));
                    tasks.push(task.abort_handle());
                }
            }
            if let Some(o) = &pool.outlier {
                // Fine enough for the shortest ejection, and at most once a second.
                let tick = (o.base_ejection_time / 4)
                    .clamp(Duration::from_millis(10), Duration::from_secs(1));
                tasks.push(tokio::spawn(expire_loop(pool.clone(), tick)).abort_handle());
            }
        }
        Monitor { tasks }
    }
}

async fn check_loop(pool: Arc<Pool>, i: usize, cfg: HealthCheckConfig) {
    // The first check runs at once, so a pool that starts unhealthy is usable soon.
    loop {
        let started = Instant::now();
        let result = active::check(&pool, i, &cfg).await;
        on_check(&pool, i, &cfg, result);
        let jitter = if cfg.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(fastrand::u64(0..=cfg.jitter.as_nanos() as u64))
        };
        let wait = (cfg.interval + jitter).saturating_sub(started.elapsed());
        tokio::time::sleep(wait).await;
    }
}

async fn expire_loop(pool: Arc<Pool>, tick: Duration) {
    let mut every = tokio::time::interval(tick);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = balance::now();
        for i in 0..pool.endpoints.len() {
            let until = pool.endpoints[i]
                .health
                .ejected_until
                .load(Ordering::Relaxed);
            if until != 0 && now >= until {
                restore(&pool, i, "ejection time over");
            }
        }
    }
}
