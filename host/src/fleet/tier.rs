//! The shared cache tier: lookups behind a local miss, writes behind a local store, the
//! fleet-wide fetch lock, and purges of what the tier holds.

use super::{Fleet, Keys, bump};
use crate::cache::object::Object;
use crate::cache::wire::{self, Body, Variant};
use crate::cache::{Purge, Tier};
use bytes::Bytes;
use fred::prelude::*;
use fred::types::{Expiration, SetOptions};
use http::HeaderMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often a node waiting on another node's fetch looks for the object.
const POLL: Duration = Duration::from_millis(20);

/// What the shared tier did for a local miss.
pub enum Shared {
    /// It had the object (now to be stored locally and served).
    Hit(Box<Object>),
    /// Fetch from the origin; holding the fleet's lock on the key when `Some` (released
    /// once the response is stored, or when the guard drops without a store).
    Fetch(Option<LockGuard>),
}

/// The fetch lock on one key, held by this node.
pub struct LockGuard {
    fleet: Weak<Fleet>,
    key: Bytes,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(fleet) = self.fleet.upgrade() else {
            return;
        };
        // A store took the token (and releases it after its write); else release it now.
        let token = fleet.held.lock().expect("held lock").remove(&self.key);
        if let Some(token) = token {
            let h = Keys::hash(&self.key);
            let f = fleet.clone();
            fleet
                .handle
                .spawn(async move { f.unlock(&h, &token).await });
        }
    }
}

/// Releases a lock only if it still holds this node's token (its lease may have run out and
/// another node taken it).
const UNLOCK: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// The cache's tier hook: hands writes and purges to tasks on the main runtime.
pub(super) struct Hook(pub(super) Weak<Fleet>);

impl Tier for Hook {
    fn stored(&self, key: &Bytes, object: &Arc<Object>) {
        if let Some(f) = self.0.upgrade() {
            f.store(key.clone(), object.clone());
        }
    }

    fn purged(&self, what: &Purge, soft: bool) {
        if let Some(f) = self.0.upgrade() {
            let (what, g) = (what.clone(), f.clone());
            f.handle.spawn(async move {
                let _ = g.purge(&what, soft).await;
            });
        }
    }
}

/// `*`, `?`, `[`, `]` and `\` escaped for a Redis glob (`MATCH`).
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Fleet {
    /// A local miss of `key`: the shared tier's variant that `request` selects, or else the
    /// fleet-wide lock to fetch it, or else (another node holds the lock) waits up to the
    /// cache's `coalesce_timeout` for that node's object.
    pub async fn find_or_lock(self: &Arc<Self>, key: &Bytes, request: &HeaderMap) -> Shared {
        let h = Keys::hash(key);
        match self.lookup(&h, key, request).await {
            Some(Some(o)) => {
                bump(&self.stats.hits);
                return Shared::Hit(Box::new(o));
            }
            Some(None) => bump(&self.stats.misses),
            None => return Shared::Fetch(None),
        }
        match self.try_lock(&h, key).await {
            Some(Some(guard)) => return Shared::Fetch(Some(guard)),
            None => return Shared::Fetch(None),
            Some(None) => {}
        }
        bump(&self.stats.lock_waits);
        let deadline = Instant::now() + self.cache.config().coalesce_timeout;
        loop {
            let pause = POLL + Duration::from_millis(fastrand::u64(0..10));
            if Instant::now() + pause >= deadline {
                bump(&self.stats.lock_wait_timeouts);
                return Shared::Fetch(None);
            }
            tokio::time::sleep(pause).await;
            match self.lookup(&h, key, request).await {
                Some(Some(o)) => {
                    bump(&self.stats.lock_wait_hits);
                    return Shared::Hit(Box::new(o));
                }
                Some(None) => {}
                None => return Shared::Fetch(None),
            }
            // The holder is done without a matching object (not storable, another variant)
            // or its lease ran out: take the lock over, or wait for whoever did.
            match self.try_lock(&h, key).await {
                Some(Some(guard)) => return Shared::Fetch(Some(guard)),
                None => return Shared::Fetch(None),
                Some(None) => {}
            }
        }
    }

    /// `Some(Some(guard))`: taken; `Some(None)`: another node holds it; `None`: the server
    /// is unavailable.
    async fn try_lock(self: &Arc<Self>, h: &str, key: &Bytes) -> Option<Option<LockGuard>> {
        let c = self.client()?;
        let token = format!("{}:{:016x}", self.cfg.node, fastrand::u64(..));
        let lease = Expiration::PX(self.cfg.lock_lease.as_millis() as i64);
        let set: Option<String> = self
            .run(c.set(
                self.keys.lock(h),
                token.as_str(),
                Some(lease),
                Some(SetOptions::NX),
                false,
            ))
            .await?;
        if set.is_none() {
            return Some(None);
        }
        bump(&self.stats.locks_taken);
        self.held
            .lock()
            .expect("held lock")
            .insert(key.clone(), token);
        Some(Some(LockGuard {
            fleet: Arc::downgrade(self),
            key: key.clone(),
        }))
    }

    async fn unlock(&self, h: &str, token: &str) {
        if let Some(c) = self.client() {
            let _: Option<i64> = self
                .run(c.eval(UNLOCK, vec![self.keys.lock(h)], vec![token]))
                .await;
        }
    }

    /// The stored variant `request` selects under `key` (hash `h`), read in one round trip
    /// for an inline body, two for a chunked one: `Some(None)` for a miss (nothing usable
    /// there), `None` when the server is unavailable.
    async fn lookup(&self, h: &str, key: &Bytes, request: &HeaderMap) -> Option<Option<Object>> {
        let c = self.client()?;
        let head_key = self.keys.head(h);
        let head: Option<Bytes> = self.run(c.get(head_key.as_str())).await?;
        let Some(head) = head else {
            return Some(None);
        };
        Some(self.usable(c, h, &head_key, head, key, request).await)
    }

    /// The object `head` holds for `request`, its chunks read; `None` when it holds none or
    /// the value is not usable (then deleted).
    async fn usable(
        &self,
        c: &Client,
        h: &str,
        head_key: &str,
        head: Bytes,
        key: &Bytes,
        request: &HeaderMap,
    ) -> Option<Object> {
        let variants = match wire::decode(&head) {
            Ok(v) => v,
            Err(e) => {
                self.corrupt(head_key, &e.to_string());
                return None;
            }
        };
        let v = variants.into_iter().find(|v| v.vary.matches(request))?;
        let body = match &v.body {
            Body::Inline(b) => b.clone(),
            Body::Chunks { id, count, length } => {
                let keys: Vec<String> = (0..*count).map(|i| self.keys.chunk(h, *id, i)).collect();
                // A deadline per chunk: a large body is many round trips' worth of bytes.
                let deadline = self.cfg.timeout * (*count + 1);
                let parts: Vec<Option<Bytes>> = self.run_within(deadline, c.mget(keys)).await?;
                let mut all = Vec::with_capacity(*length as usize);
                for p in &parts {
                    match p {
                        Some(p) => all.extend_from_slice(p),
                        None => {
                            self.corrupt(head_key, "a chunk is missing");
                            return None;
                        }
                    }
                }
                if all.len() as u64 != *length {
                    self.corrupt(head_key, "the chunks do not add up to the body's length");
                    return None;
                }
                Bytes::from(all)
            }
        };
        Some(v.into_object(body, key.len(), &self.cache.config()))
    }

    /// A value that cannot be used: counted, logged, deleted (the next store replaces it).
    fn corrupt(&self, head_key: &str, why: &str) {
        bump(&self.stats.corrupt);
        tracing::warn!(key = %head_key, %why, "shared cache value not usable; deleted, treated as a miss");
        if let Some(c) = self.client() {
            let (c, k) = (c.clone(), head_key.to_string());
            self.handle.spawn(async move {
                let _: Result<i64, _> = c.del(k).await;
            });
        }
    }

    /// Writes `object` (just stored locally from an origin) in the background, then
    /// releases this node's lock on the key if it holds it.
    fn store(self: &Arc<Self>, key: Bytes, object: Arc<Object>) {
        let token = self.held.lock().expect("held lock").remove(&key);
        let Ok(permit) = self.writes.clone().try_acquire_owned() else {
            bump(&self.stats.store_skipped);
            if let Some(t) = token {
                let (f, h) = (self.clone(), Keys::hash(&key));
                self.handle.spawn(async move { f.unlock(&h, &t).await });
            }
            return;
        };
        let f = self.clone();
        self.handle.spawn(async move {
            let _permit = permit;
            let h = Keys::hash(&key);
            f.write(&h, &object).await;
            if let Some(t) = token {
                f.unlock(&h, &t).await;
            }
        });
    }

    async fn write(&self, h: &str, object: &Object) {
        if object.is_invalidated() {
            return;
        }
        let config = self.cache.config();
        let len = object.body.len() as u64;
        let body = if len <= self.cfg.chunk_size {
            Body::Inline(object.body.clone())
        } else {
            Body::Chunks {
                id: fastrand::u64(..),
                count: len.div_ceil(self.cfg.chunk_size) as u32,
                length: len,
            }
        };
        let new = Variant::of(object, body.clone());
        let keep = new.keep_for(&config);
        if keep < Duration::from_secs(1) {
            bump(&self.stats.store_skipped);
            return;
        }
        let Some(c) = self.client() else { return };
        let head_key = self.keys.head(h);
        // Chunks first, so a reader never finds a head whose chunks are not there yet; they
        // outlive the head a little (a reader between the two expiries gets a miss).
        if let Body::Chunks { id, count, .. } = body {
            let px = Expiration::PX((keep + Duration::from_secs(60)).as_millis() as i64);
            let p = c.pipeline();
            for i in 0..count {
                let from = i as usize * self.cfg.chunk_size as usize;
                let to = (from + self.cfg.chunk_size as usize).min(object.body.len());
                let _: () = match p
                    .set(
                        self.keys.chunk(h, id, i),
                        object.body.slice(from..to),
                        Some(px.clone()),
                        None,
                        false,
                    )
                    .await
                {
                    Ok(v) => v,
                    Err(_) => return,
                };
            }
            let deadline = self.cfg.timeout * (count + 1);
            if self
                .run_within(deadline, p.all::<Vec<Value>>())
                .await
                .is_none()
            {
                return;
            }
        }
        // The other variants already there with the same selecting fields stay (as in the
        // memory cache), newest first, while their time lasts.
        let old: Option<Bytes> = match self.run(c.get(head_key.as_str())).await {
            Some(v) => v,
            None => return,
        };
        let mut variants = vec![new];
        if let Some(old) = old.and_then(|b| wire::decode(&b).ok()) {
            let first = &variants[0];
            let kept: Vec<Variant> = old
                .into_iter()
                .filter(|v| v.vary.same_fields(&first.vary) && v.vary != first.vary)
                .filter(|v| !v.keep_for(&config).is_zero())
                .take(7)
                .collect();
            variants.extend(kept);
        }
        let keep = variants
            .iter()
            .map(|v| v.keep_for(&config))
            .max()
            .unwrap_or(keep);
        let value = Bytes::from(wire::encode(&variants));
        let now = (super::unix_ms() / 1000) as f64;
        let expires = now + keep.as_secs() as f64;
        let px = Expiration::PX(keep.as_millis() as i64);
        let p = c.pipeline();
        let _: Result<(), _> = p.set(head_key.as_str(), value, Some(px), None, false).await;
        for t in object.tags.iter() {
            let tag_key = self.keys.tag(t);
            let _: Result<(), _> = p
                .zadd(
                    tag_key.as_str(),
                    None,
                    None,
                    false,
                    false,
                    (expires, head_key.as_str()),
                )
                .await;
            let _: Result<(), _> = p
                .zremrangebyscore(
                    tag_key.as_str(),
                    f64::NEG_INFINITY,
                    expires - keep.as_secs_f64() - 1.0,
                )
                .await;
        }
        let member = format!("{}\n{h}", object.url);
        let _: Result<(), _> = p
            .zadd(
                self.keys.urls(),
                None,
                None,
                false,
                false,
                (expires, member),
            )
            .await;
        if fastrand::u8(..) < 8 {
            // Now and then, the expired members go (a sorted set cannot expire them itself).
            let _: Result<(), _> = p
                .zremrangebyscore(self.keys.urls(), f64::NEG_INFINITY, now)
                .await;
        }
        if self.run(p.all::<Vec<Value>>()).await.is_some() {
            bump(&self.stats.stores);
        }
    }

    /// Deletes what `what` selects from the shared tier, then tells every other node to
    /// purge its memory cache (this node's is the caller's to purge).
    pub async fn purge(&self, what: &Purge, soft: bool) -> Result<(), String> {
        let result = self.purge_shared(what).await;
        let result = match result {
            Ok(()) => self.announce_purge(what, soft).await,
            Err(e) => Err(e),
        };
        match &result {
            Ok(()) => bump(&self.stats.purges_sent),
            Err(e) => {
                bump(&self.stats.purges_failed);
                tracing::warn!(purge = ?what, error = %e, "purge not sent to the fleet; other nodes keep their copies until they expire");
            }
        }
        result
    }

    async fn purge_shared(&self, what: &Purge) -> Result<(), String> {
        let unavailable = || "the shared cache is unavailable".to_string();
        let c = self.client().ok_or_else(unavailable)?;
        let mut heads: Vec<String> = Vec::new();
        let mut index_members: Vec<String> = Vec::new();
        match what {
            Purge::Key(k) => heads.push(self.keys.head(&Keys::hash(k))),
            Purge::Url(url) | Purge::Prefix(url) => {
                if let Purge::Url(_) = what {
                    heads.push(self.keys.head(&Keys::hash(url.as_bytes())));
                }
                let pattern = match what {
                    Purge::Url(_) => format!("{}\n*", glob_escape(url)),
                    _ => format!("{}*", glob_escape(url)),
                };
                for m in self.scan_urls(c, &pattern).await.ok_or_else(unavailable)? {
                    if let Some((_, h)) = m.rsplit_once('\n') {
                        heads.push(self.keys.head(h));
                    }
                    index_members.push(m);
                }
            }
            Purge::Tag(t) => {
                let members: Vec<String> = self
                    .run(c.zrange(self.keys.tag(t), 0, -1, None, false, None, false))
                    .await
                    .ok_or_else(unavailable)?;
                heads.extend(members);
                let _: Option<i64> = self.run(c.del(self.keys.tag(t))).await;
            }
            Purge::All => {
                heads = self.scan_keys(c).await.ok_or_else(unavailable)?;
                let _: Option<i64> = self.run(c.del(self.keys.urls())).await;
            }
        }
        // One key per DEL: in a cluster the heads live on different shards.
        let p = c.pipeline();
        for k in &heads {
            let _: Result<(), _> = p.del(k.as_str()).await;
        }
        if !index_members.is_empty() {
            let _: Result<(), _> = p.zrem(self.keys.urls(), index_members).await;
        }
        let deadline = self.cfg.timeout * (heads.len() as u32 / 256 + 2);
        self.run_within(deadline, p.all::<Vec<Value>>())
            .await
            .ok_or_else(unavailable)?;
        Ok(())
    }

    /// Members of the URL index matching `pattern` (ZSCAN: incremental, never blocks the
    /// server for long; the index holds only unexpired objects).
    async fn scan_urls(&self, c: &Client, pattern: &str) -> Option<Vec<String>> {
        self.scan(c, Some(self.keys.urls()), pattern).await
    }

    /// Every object head of this namespace (SCAN; on a cluster, one shard's).
    async fn scan_keys(&self, c: &Client) -> Option<Vec<String>> {
        let keys = self.scan(c, None, &self.keys.objects_pattern()).await?;
        Some(keys.into_iter().filter(|k| !k.contains("}:")).collect())
    }

    /// `ZSCAN key` (members) or, without a key, `SCAN` (key names), to the end.
    async fn scan(&self, c: &Client, key: Option<String>, pattern: &str) -> Option<Vec<String>> {
        let mut cursor = "0".to_string();
        let mut out = Vec::new();
        loop {
            let mut args: Vec<String> = key.iter().cloned().collect();
            args.extend([
                cursor,
                "MATCH".into(),
                pattern.into(),
                "COUNT".into(),
                "1000".into(),
            ]);
            let command = match key {
                Some(_) => fred::cmd!("ZSCAN"),
                None => fred::cmd!("SCAN"),
            };
            let (next, page): (String, Vec<Value>) = self.run(c.custom(command, args)).await?;
            // A ZSCAN page is member, score, member, score...
            let step = if key.is_some() { 2 } else { 1 };
            out.extend(page.into_iter().step_by(step).filter_map(|v| v.as_string()));
            if next == "0" {
                return Some(out);
            }
            cursor = next;
        }
    }
}
