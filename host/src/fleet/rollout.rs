//! Policy rollout across the fleet, and the node registry.
//!
//! Publishing stores the component in Redis by its SHA-256 and writes the rollout record
//! (`rollout`): which revision, which nodes (a canary share of the live ones, or all), and
//! its stage. Every node reconciles itself with the record whenever a `rollout` event
//! arrives, when it first connects and after a reconnect: a node the record names fetches
//! the bytes, checks their hash, loads and rehearses them as any upload, and swaps; a node
//! that refuses keeps its revision and reports why in its registry entry.
//!
//! The publishing node watches its canary for `canary_window`, from the canary nodes'
//! registry entries: a policy failure ratio or a 5xx ratio over the configured thresholds
//! rolls the canary back (each canary node returns to the revision it ran before); a node
//! that refused or never reported halts the rollout; otherwise it is promoted to every node.

use super::{Fleet, unix_ms};
use bytes::Bytes;
use fred::prelude::*;
use fred::types::Expiration;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Published components are kept this long in Redis (a node joining later fetches them).
const KEEP_POLICY: Duration = Duration::from_secs(30 * 86400);

/// The fleet's rollout record.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Rollout {
    pub sha256: String,
    /// `canary`, `fleet` (every node), `rolled-back`, `halted` (canary kept, not promoted).
    pub stage: String,
    /// The canary nodes; empty at the `fleet` stage.
    pub nodes: Vec<String>,
    pub percent: u8,
    pub by: String,
    pub at_ms: u64,
    pub reason: Option<String>,
}

impl Rollout {
    fn wants(&self, node: &str) -> bool {
        match self.stage.as_str() {
            "fleet" => true,
            "canary" | "halted" => self.nodes.iter().any(|n| n == node),
            _ => false,
        }
    }
}

/// This node's part in a rollout, reported in its registry entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeRollout {
    pub sha256: String,
    /// `applied`, `refused`, `rolled-back`.
    pub outcome: &'static str,
    pub reason: Option<String>,
    pub at_ms: u64,
    /// Responses and 5xx at the swap, to report what came after it.
    #[serde(skip)]
    base: (u64, u64),
}

/// A registry entry (written by each node, read by `GET /fleet` and the canary watch).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeEntry {
    pub node: String,
    pub seen_ms: u64,
    pub started_ms: u64,
    pub revision: String,
    pub revision_id: u64,
    pub shared: String,
    pub responses: u64,
    pub responses_5xx: u64,
    /// Since this node's last rollout swap: `{sha256, outcome, reason, calls, failures,
    /// responses, responses_5xx}`.
    pub rollout: Option<serde_json::Value>,
}

impl Fleet {
    /// Responses and 5xx responses over every listener.
    fn responses(&self) -> (u64, u64) {
        let mut all = 0;
        let mut five = 0;
        for l in self.listeners.load().iter() {
            let c = l.by_class();
            all += c.iter().sum::<u64>();
            five += c[4];
        }
        (all, five)
    }

    fn entry(&self) -> NodeEntry {
        let status = self.policy.status();
        let (responses, responses_5xx) = self.responses();
        let rollout = self.rollout.lock().expect("rollout lock").clone();
        let rollout = rollout.map(|r| {
            let a = &status.active;
            let on_it = a.sha256 == r.sha256;
            let failures = a.traps
                + a.deadline_exceeded
                + a.memory_exceeded
                + a.invalid_decisions
                + a.instantiate_failures;
            serde_json::json!({
                "sha256": r.sha256,
                "outcome": r.outcome,
                "reason": r.reason,
                "at_ms": r.at_ms,
                "calls": if on_it { a.calls } else { 0 },
                "failures": if on_it { failures } else { 0 },
                "responses": responses.saturating_sub(r.base.0),
                "responses_5xx": responses_5xx.saturating_sub(r.base.1),
            })
        });
        NodeEntry {
            node: self.cfg.node.clone(),
            seen_ms: unix_ms(),
            started_ms: self.started_ms,
            revision: status.active.sha256.clone(),
            revision_id: status.active.id,
            shared: self.state().into(),
            responses,
            responses_5xx,
            rollout,
        }
    }

    /// The registry: every node's entry with its `state` (`up`, or `missing` when it has not
    /// written for three heartbeats), and the rollout record.
    pub async fn registry(&self) -> Result<serde_json::Value, String> {
        let c = self
            .client()
            .ok_or_else(|| "the shared cache is unavailable".to_string())?;
        let entries: HashMap<String, String> = self
            .run(c.hgetall(self.keys.nodes()))
            .await
            .ok_or_else(|| "reading the node registry failed".to_string())?;
        let now = unix_ms();
        let late = self.cfg.heartbeat.as_millis() as u64 * 3;
        let mut nodes: Vec<serde_json::Value> = entries
            .values()
            .filter_map(|v| serde_json::from_str::<serde_json::Value>(v).ok())
            .map(|mut v| {
                let seen = v["seen_ms"].as_u64().unwrap_or(0);
                v["state"] = if now.saturating_sub(seen) > late {
                    "missing"
                } else {
                    "up"
                }
                .into();
                v["age_ms"] = now.saturating_sub(seen).into();
                v
            })
            .collect();
        nodes.sort_by(|a, b| a["node"].as_str().cmp(&b["node"].as_str()));
        Ok(serde_json::json!({
            "node": self.cfg.node,
            "nodes": nodes,
            "rollout": self.read_rollout().await,
        }))
    }

    async fn read_rollout(&self) -> Option<Rollout> {
        let c = self.client()?;
        let v: Option<String> = self.run(c.get(self.keys.rollout())).await?;
        serde_json::from_str(&v?).ok()
    }

    async fn write_rollout(&self, r: &Rollout) -> Result<(), String> {
        let c = self
            .client()
            .ok_or_else(|| "the shared cache is unavailable".to_string())?;
        let json = serde_json::to_string(r).expect("a rollout serialises");
        let _: () = self
            .run(c.set(self.keys.rollout(), json, None, None, false))
            .await
            .ok_or_else(|| "writing the rollout record failed".to_string())?;
        self.send(vec![("type", Bytes::from_static(b"rollout"))])
            .await
    }

    /// Publishes `bytes` to the fleet: to `percent` of the live nodes first (at least one;
    /// 100 = every node at once), promoted or rolled back after `window`. The component is
    /// checked here first (loaded and rehearsed, not made active unless this node is in the
    /// canary).
    pub async fn publish(
        self: &Arc<Self>,
        bytes: Vec<u8>,
        percent: u8,
        window: Option<Duration>,
    ) -> Result<Rollout, String> {
        self.policy
            .check(bytes.clone())
            .await
            .map_err(|e| e.to_string())?;
        let sha = crate::policy::sha256_hex(&bytes);
        let c = self
            .client()
            .ok_or_else(|| "the shared cache is unavailable".to_string())?;
        let px = Expiration::PX(KEEP_POLICY.as_millis() as i64);
        let deadline = self.cfg.timeout * (bytes.len() as u32 / (1 << 20) + 4);
        let _: () = self
            .run_within(
                deadline,
                c.set(
                    self.keys.policy(&sha),
                    Bytes::from(bytes),
                    Some(px),
                    None,
                    false,
                ),
            )
            .await
            .ok_or_else(|| "storing the component failed".to_string())?;
        let percent = percent.min(100);
        let nodes = if percent >= 100 {
            Vec::new()
        } else {
            self.canary_nodes(&sha, percent).await?
        };
        let rollout = Rollout {
            sha256: sha.clone(),
            stage: if percent >= 100 { "fleet" } else { "canary" }.into(),
            nodes,
            percent,
            by: self.cfg.node.clone(),
            at_ms: unix_ms(),
            reason: None,
        };
        self.write_rollout(&rollout).await?;
        tracing::info!(sha256 = %sha, stage = %rollout.stage, nodes = ?rollout.nodes, "policy published to the fleet");
        if percent < 100 {
            let f = self.clone();
            let window = window.unwrap_or(self.cfg.canary_window);
            let mut stop = self.stop.subscribe();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(window) => f.judge_canary(&sha).await,
                    _ = stop.changed() => {}
                }
            });
        }
        Ok(rollout)
    }

    /// `percent` of the live nodes (at least one), chosen by a hash of node and revision so
    /// that different revisions start on different nodes.
    async fn canary_nodes(&self, sha: &str, percent: u8) -> Result<Vec<String>, String> {
        let all = self.registry().await?;
        let mut live: Vec<String> = all["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["state"] == "up")
            .filter_map(|n| n["node"].as_str().map(String::from))
            .collect();
        if live.is_empty() {
            live.push(self.cfg.node.clone());
        }
        live.sort_by_key(|n| crate::policy::sha256_hex(format!("{n}\n{sha}").as_bytes()));
        let k = (live.len() * percent as usize).div_ceil(100).max(1);
        live.truncate(k);
        Ok(live)
    }

    /// The end of a canary window: roll back, halt or promote.
    async fn judge_canary(&self, sha: &str) {
        let Some(mut r) = self.read_rollout().await else {
            return;
        };
        if r.sha256 != sha || r.stage != "canary" {
            return; // superseded
        }
        let verdict = match self.registry().await {
            Ok(all) => verdict(&all, &r, &self.cfg),
            Err(e) => Err(("halted", format!("the canary could not be judged: {e}"))),
        };
        match verdict {
            Ok(()) => {
                r.stage = "fleet".into();
                r.nodes.clear();
                r.reason = None;
            }
            Err((stage, reason)) => {
                r.stage = stage.into();
                r.reason = Some(reason);
            }
        }
        r.at_ms = unix_ms();
        tracing::info!(sha256 = %sha, stage = %r.stage, reason = ?r.reason, "policy canary judged");
        if let Err(e) = self.write_rollout(&r).await {
            tracing::warn!(error = %e, "the canary's verdict was not published");
        }
    }

    /// Brings this node in line with the fleet's rollout record.
    pub(super) async fn rollout_event(&self) {
        let Some(r) = self.read_rollout().await else {
            return;
        };
        let active = self.policy.status().active;
        let mut mine = self.rollout.lock().expect("rollout lock").clone();
        if r.stage == "rolled-back" {
            if active.sha256 == r.sha256 {
                let outcome = match self.policy.rollback() {
                    Ok(info) => {
                        tracing::warn!(sha256 = %r.sha256, now = %info.sha256, reason = ?r.reason, "policy rolled back by the fleet");
                        None
                    }
                    Err(e) => Some(e.to_string()),
                };
                mine =
                    Some(self.node_rollout(&r.sha256, "rolled-back", outcome.or(r.reason.clone())));
            }
        } else if r.wants(&self.cfg.node) && active.sha256 != r.sha256 {
            let tried = mine
                .as_ref()
                .is_some_and(|m| m.sha256 == r.sha256 && m.outcome == "refused");
            if !tried {
                mine = Some(match self.take_up(&r.sha256).await {
                    Ok(()) => self.node_rollout(&r.sha256, "applied", None),
                    Err(e) => {
                        tracing::warn!(sha256 = %r.sha256, error = %e, "policy from the fleet refused; the active revision keeps serving");
                        self.node_rollout(&r.sha256, "refused", Some(e))
                    }
                });
            }
        }
        *self.rollout.lock().expect("rollout lock") = mine;
        // Reported at once, not at the next heartbeat.
        self.beat().await;
    }

    fn node_rollout(
        &self,
        sha: &str,
        outcome: &'static str,
        reason: Option<String>,
    ) -> NodeRollout {
        NodeRollout {
            sha256: sha.into(),
            outcome,
            reason,
            at_ms: unix_ms(),
            base: self.responses(),
        }
    }

    async fn take_up(&self, sha: &str) -> Result<(), String> {
        let c = self
            .client()
            .ok_or_else(|| "the shared cache is unavailable".to_string())?;
        let deadline = self.cfg.timeout * 40;
        let bytes: Option<Bytes> = self
            .run_within(deadline, c.get(self.keys.policy(sha)))
            .await
            .ok_or_else(|| "fetching the component failed".to_string())?;
        let bytes = bytes.ok_or_else(|| "the component is not in the shared store".to_string())?;
        if crate::policy::sha256_hex(&bytes) != sha {
            return Err("the component's SHA-256 does not match the rollout".into());
        }
        self.policy
            .upload_from(bytes.to_vec(), "fleet rollout")
            .await
            .map(|info| tracing::info!(sha256 = %info.sha256, revision = info.id, "policy from the fleet active"))
            .map_err(|e| e.to_string())
    }

    /// Writes this node's registry entry.
    async fn beat(&self) {
        let left = self.left.lock().await;
        if *left {
            return;
        }
        let Some(c) = self.client() else { return };
        let json = serde_json::to_string(&self.entry()).expect("an entry serialises");
        let _: Option<i64> = self
            .run(c.hset(self.keys.nodes(), (self.cfg.node.as_str(), json)))
            .await;
        drop(left);
    }
}

/// The canary's verdict from the registry: `Ok` to promote, or the stage and why not.
fn verdict(
    all: &serde_json::Value,
    r: &Rollout,
    cfg: &crate::config::SharedConfig,
) -> Result<(), (&'static str, String)> {
    let entries = all["nodes"].as_array().cloned().unwrap_or_default();
    for node in &r.nodes {
        let Some(e) = entries.iter().find(|e| e["node"] == node.as_str()) else {
            return Err((
                "halted",
                format!("canary node {node} is not in the registry"),
            ));
        };
        let ro = &e["rollout"];
        if ro["sha256"] != r.sha256.as_str() {
            return Err((
                "halted",
                format!("canary node {node} did not report the revision"),
            ));
        }
        if ro["outcome"] != "applied" {
            return Err((
                "halted",
                format!(
                    "canary node {node}: {} ({})",
                    ro["outcome"].as_str().unwrap_or("?"),
                    ro["reason"].as_str().unwrap_or("")
                ),
            ));
        }
        let ratio = |a: &str, b: &str| {
            let (a, b) = (ro[a].as_u64().unwrap_or(0), ro[b].as_u64().unwrap_or(0));
            if b == 0 { 0.0 } else { a as f64 / b as f64 }
        };
        let limits = [
            (
                "policy failure",
                "failures",
                "calls",
                cfg.rollback_failure_ratio,
            ),
            ("5xx", "responses_5xx", "responses", cfg.rollback_5xx_ratio),
        ];
        for (what, part, whole, limit) in limits {
            let r = ratio(part, whole);
            if r > limit {
                return Err((
                    "rolled-back",
                    format!("canary node {node}: {what} ratio {r:.3} over {limit}"),
                ));
            }
        }
    }
    Ok(())
}

/// Writes this node's registry entry every `heartbeat`, and drops entries of nodes gone for
/// ten minutes.
pub(super) async fn heartbeat(fleet: Arc<Fleet>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(fleet.cfg.heartbeat);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        fleet.beat().await;
        n += 1;
        if n % 60 == 0 {
            fleet.forget_gone().await;
        }
    }
}

impl Fleet {
    async fn forget_gone(&self) {
        let Some(c) = self.client() else { return };
        let Some(entries): Option<HashMap<String, String>> =
            self.run(c.hgetall(self.keys.nodes())).await
        else {
            return;
        };
        let now = unix_ms();
        for (node, v) in entries {
            let seen = serde_json::from_str::<NodeEntry>(&v).map_or(0, |e| e.seen_ms);
            if now.saturating_sub(seen) > 600_000 {
                let _: Option<i64> = self.run(c.hdel(self.keys.nodes(), node)).await;
            }
        }
    }
}
