//! The fleet's event stream: purges and policy rollouts, one Redis stream all nodes read.
//!
//! A stream rather than pub/sub: a node reads from the last event it saw, so events sent
//! while it was disconnected arrive when it is back. The stream keeps the last
//! [`KEEP`] events; a node that finds events trimmed away unread (a long disconnect) empties
//! its memory cache, since one of them may have been a purge.

use super::{Fleet, bump};
use crate::cache::Purge;
use bytes::Bytes;
use fred::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

/// How long one read waits for events.
pub(super) const BLOCK: Duration = Duration::from_secs(1);
/// Events the stream keeps (about: trimmed with `~`).
const KEEP: i64 = 10_000;

/// An event's fields.
type Fields = HashMap<String, Bytes>;

/// A stream id `ms-seq`, compared as numbers.
fn id_of(s: &str) -> (u64, u64) {
    let (a, b) = s.split_once('-').unwrap_or((s, "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

fn purge_fields(what: &Purge) -> (&'static str, Bytes) {
    match what {
        Purge::Url(u) => ("url", Bytes::from(u.clone())),
        Purge::Key(k) => ("key", k.clone()),
        Purge::Prefix(p) => ("prefix", Bytes::from(p.clone())),
        Purge::Tag(t) => ("tag", Bytes::from(t.clone())),
        Purge::All => ("all", Bytes::new()),
    }
}

fn purge_of(kind: &[u8], value: &Bytes) -> Option<Purge> {
    let text = || String::from_utf8(value.to_vec()).ok();
    Some(match kind {
        b"url" => Purge::Url(text()?),
        b"key" => Purge::Key(value.clone()),
        b"prefix" => Purge::Prefix(text()?),
        b"tag" => Purge::Tag(text()?),
        b"all" => Purge::All,
        _ => return None,
    })
}

impl Fleet {
    /// Appends an event to the stream.
    pub(super) async fn send(&self, fields: Vec<(&'static str, Bytes)>) -> Result<(), String> {
        let c = self
            .client()
            .ok_or_else(|| "the shared cache is unavailable".to_string())?;
        let mut all: Vec<(&str, Bytes)> = vec![("node", Bytes::from(self.cfg.node.clone()))];
        all.extend(fields);
        let id: Option<String> = self
            .run(c.xadd(self.keys.events(), false, ("MAXLEN", "~", KEEP), "*", all))
            .await;
        id.map(|_| ())
            .ok_or_else(|| "the event was not sent".to_string())
    }

    pub(super) async fn announce_purge(&self, what: &Purge, soft: bool) -> Result<(), String> {
        let (kind, value) = purge_fields(what);
        self.send(vec![
            ("type", Bytes::from_static(b"purge")),
            ("what", Bytes::from_static(kind.as_bytes())),
            ("value", value),
            ("soft", Bytes::from_static(if soft { b"1" } else { b"0" })),
        ])
        .await
    }

    /// Applies one event from another node.
    async fn on_event(self: &Arc<Self>, fields: &Fields) {
        let from = fields.get("node").map(|b| &b[..]).unwrap_or_default();
        let kind = fields.get("type").map(|b| &b[..]).unwrap_or_default();
        bump(&self.stats.events_received);
        match kind {
            b"purge" if from != self.cfg.node.as_bytes() => {
                let what = fields.get("what").map(|b| &b[..]).unwrap_or_default();
                let value = fields.get("value").cloned().unwrap_or_default();
                let soft = fields.get("soft").is_some_and(|s| &s[..] == b"1");
                match purge_of(what, &value) {
                    Some(p) => {
                        let n = self.cache.purge_here(&p, soft);
                        tracing::debug!(purge = ?p, purged = n, "purge from the fleet");
                    }
                    None => tracing::warn!("an unknown purge event; ignored"),
                }
            }
            b"rollout" => self.rollout_event().await,
            _ => {}
        }
    }
}

/// Reads the stream until `stop`: from its newest event at start, then from the last one
/// read, across disconnects.
pub(super) async fn follow(fleet: Arc<Fleet>, mut stop: watch::Receiver<bool>) {
    let key = fleet.keys.events();
    let mut last: Option<String> = None;
    let mut broken = false;
    loop {
        if *stop.borrow() {
            return;
        }
        if !fleet.events.is_connected() {
            broken = true;
            tokio::select! {
                _ = fleet.events.wait_for_connect() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let Some(from) = last.clone() else {
            // Connected for the first time: start after the newest event, and take up the
            // fleet's current policy rollout if it concerns this node.
            let newest: Result<Vec<(String, Fields)>, _> = fleet
                .events
                .xrevrange(key.as_str(), "+", "-", Some(1))
                .await;
            match newest {
                Ok(v) => {
                    last = Some(v.first().map_or("0-0".into(), |(id, _)| id.clone()));
                    fleet.rollout_event().await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "fleet events: reading the stream's end failed");
                    broken = true;
                    pause(&mut stop).await;
                }
            }
            continue;
        };
        if broken {
            broken = false;
            // Back after a disconnect: were events trimmed away before they were read?
            let oldest: Result<Vec<(String, Fields)>, _> =
                fleet.events.xrange(key.as_str(), "-", "+", Some(1)).await;
            if let Ok(Some((first, _))) = oldest.map(|v| v.into_iter().next()) {
                if from != "0-0" && id_of(&first) > id_of(&from) {
                    // Some of what we missed may be gone: start over from an empty cache.
                    fleet.stats.events_lost.fetch_add(1, Ordering::Relaxed);
                    let n = fleet.cache.purge_here(&Purge::All, false);
                    tracing::warn!(
                        purged = n,
                        "fleet events were lost while disconnected; memory cache emptied"
                    );
                }
            }
            fleet.rollout_event().await;
        }
        let read: Result<
            fred::types::streams::XReadResponse<String, String, String, Bytes>,
            fred::error::Error,
        > = tokio::select! {
            r = fleet.events.xread_map(Some(256), Some(BLOCK.as_millis() as u64), key.as_str(), from.as_str()) => r,
            _ = stop.changed() => return,
        };
        match read {
            Ok(streams) => {
                for (_, entries) in streams {
                    for (id, fields) in entries {
                        fleet.on_event(&fields).await;
                        last = Some(id);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "fleet events: read failed; retrying");
                broken = true;
                pause(&mut stop).await;
            }
        }
    }
}

async fn pause(stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        _ = stop.changed() => {}
    }
}
