//! The HTTP cache: a quick_cache store weighed in bytes, RFC 9111 freshness and validation,
//! request coalescing, and purge.
//!
//! - [`key`]: the default key (normalised URL); a policy may set its own.
//! - [`directives`]: `Cache-Control`, dates, `Age`.
//! - [`object`]: storability, freshness and age of a stored response.
//! - [`vary`]: variant selection and the normalisation of selecting fields.
//! - [`partial`]: stored 206 parts and their combination into the complete response.
//! - [`wire`]: the value format of the shared tier (Redis), versioned.
//! - this file: the store (one entry per key holding its `Vary` variants), in-flight fetches
//!   (coalescing), hit-for-miss markers, purge and stats.
//!
//! What the cache does to a request (lookup, revalidation, stale-*, conditional requests,
//! ranges) is in `proxy/cached.rs`; this module never touches a socket.

pub mod directives;
pub mod key;
pub mod object;
pub mod partial;
#[cfg(test)]
mod tests;
pub mod vary;
pub mod wire;

use crate::config::CacheConfig;
use bytes::Bytes;
use http::HeaderMap;
use object::{Meta, Object};
use partial::{Merged, Partial};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Variants kept per key (different `Vary` selections); the oldest goes first.
const MAX_VARIANTS: usize = 8;

/// What the store holds under one key.
#[derive(Clone)]
enum Entry {
    /// Newest first.
    Objects(Arc<[Arc<Object>]>),
    /// Parts of one response, not yet all of it.
    Parts(Arc<Partial>),
    /// The last response for this key was not storable: until then, do not coalesce.
    Uncacheable(Instant),
}

impl Entry {
    /// The objects it holds: the variants, or the head of the parts.
    fn objects(&self) -> &[Arc<Object>] {
        match self {
            Entry::Objects(list) => list,
            Entry::Parts(p) => std::slice::from_ref(&p.head),
            Entry::Uncacheable(_) => &[],
        }
    }
}

#[derive(Clone)]
struct Weigh;

impl quick_cache::Weighter<Bytes, Entry> for Weigh {
    fn weight(&self, key: &Bytes, e: &Entry) -> u64 {
        match e {
            Entry::Objects(list) => list.iter().map(|o| o.weight()).sum(),
            Entry::Parts(p) => p.weight(),
            Entry::Uncacheable(_) => key.len() as u64 + 64,
        }
    }
}

/// Counts evictions (capacity pressure, not purges or replacements) and takes evicted keys
/// out of the index.
#[derive(Clone)]
struct Evictions(Arc<AtomicU64>, Arc<Index>);

impl quick_cache::Lifecycle<Bytes, Entry> for Evictions {
    type RequestState = ();
    fn on_evict(&self, _: &mut (), key: Bytes, val: Entry) {
        self.0.fetch_add(1, Ordering::Relaxed);
        self.1.remove(&key, &val);
    }
}

/// Which keys hold objects with a tag, and objects of an origin, so `purge-tag` and
/// `purge-prefix` visit only those instead of the whole store (Varnish's xkey, Fastly's
/// surrogate keys work the same way for tags).
///
/// Kept on insert and taken out when an entry is evicted or removed. It may still name a
/// key whose objects no longer carry the tag (a replacement without it), so a purge checks
/// each object it finds. Lock order: a store shard's lock, then this one (eviction and
/// `retain` call in here under the shard lock); never the store while holding this.
#[derive(Default)]
struct Index(Mutex<Maps>);

type KeySets = HashMap<Box<str>, HashSet<Bytes>>;

#[derive(Default)]
struct Maps {
    tags: KeySets,
    /// By `scheme://host:port` of the objects' URLs (the default key's layout).
    origins: KeySets,
}

impl Index {
    fn add(&self, key: &Bytes, object: &Object) {
        let mut m = self.0.lock().expect("index lock");
        for t in object.tags.iter() {
            m.tags.entry(t.clone()).or_default().insert(key.clone());
        }
        let origin = key::origin_of(&object.url);
        match m.origins.get_mut(origin) {
            Some(keys) => {
                keys.insert(key.clone());
            }
            None => {
                m.origins
                    .insert(origin.into(), HashSet::from([key.clone()]));
            }
        }
    }

    fn remove(&self, key: &[u8], entry: &Entry) {
        let objects = entry.objects();
        if objects.is_empty() {
            return;
        }
        let mut m = self.0.lock().expect("index lock");
        for o in objects {
            for t in o.tags.iter() {
                forget(&mut m.tags, t, key);
            }
            forget(&mut m.origins, key::origin_of(&o.url), key);
        }
    }

    fn tagged(&self, tag: &str) -> Vec<Bytes> {
        let m = self.0.lock().expect("index lock");
        m.tags
            .get(tag)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The keys with objects of `origin`; `None` if there are more than `at_most` (a scan
    /// of the store is cheaper than visiting most of it by key).
    fn of_origin(&self, origin: &str, at_most: usize) -> Option<Vec<Bytes>> {
        let m = self.0.lock().expect("index lock");
        match m.origins.get(origin) {
            Some(keys) if keys.len() > at_most => None,
            Some(keys) => Some(keys.iter().cloned().collect()),
            None => Some(Vec::new()),
        }
    }

    /// Takes `key` out of `tag`'s set.
    fn forget_tag(&self, tag: &str, key: &[u8]) {
        forget(&mut self.0.lock().expect("index lock").tags, tag, key);
    }

    fn tags(&self) -> usize {
        self.0.lock().expect("index lock").tags.len()
    }
}

fn forget(index: &mut KeySets, name: &str, key: &[u8]) {
    if let Some(keys) = index.get_mut(name) {
        keys.remove(key);
        if keys.is_empty() {
            index.remove(name);
        }
    }
}

type Store =
    quick_cache::sync::Cache<Bytes, Entry, Weigh, quick_cache::DefaultHashBuilder, Evictions>;

/// Counters reported by `GET /stats`.
#[derive(Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stale_served: AtomicU64,
    pub revalidations: AtomicU64,
    pub not_modified: AtomicU64,
    pub coalesced_waits: AtomicU64,
    pub coalesce_timeouts: AtomicU64,
    pub stores: AtomicU64,
    pub purged: AtomicU64,
    pub invalidations: AtomicU64,
    pub hit_for_miss: AtomicU64,
    pub bypasses: AtomicU64,
    /// Coalesced requests served from a response while it was still arriving.
    pub streamed: AtomicU64,
    /// Stored parts combined into a complete response.
    pub combined: AtomicU64,
}

pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What a purge selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// A normalised URL (as [`key::key_of_url`] makes it).
    Url(String),
    Key(Bytes),
    Prefix(String),
    Tag(String),
    All,
}

/// What the cache tells a tier behind it (the fleet's shared tier): the objects it stores
/// from an origin, and the purges made here (by the admin API, a policy, an unsafe
/// request). Called on the request's task: implementations hand the work to tasks of their
/// own and return at once.
pub trait Tier: Send + Sync {
    fn stored(&self, key: &Bytes, object: &Arc<Object>);
    fn purged(&self, what: &Purge, soft: bool);
}

/// What a lookup found for a request.
pub enum Lookup {
    /// Nothing under the key.
    Miss,
    /// Objects under the key, none selected by this request's `Vary` fields.
    VaryMiss,
    /// Parts of the response this request selects, not all of it.
    Parts(Arc<Partial>),
    /// The key's last response was not storable (hit-for-miss).
    Uncacheable,
    Found(Arc<Object>),
}

/// The process's HTTP cache. Lives across config reloads.
pub struct Cache {
    store: Store,
    /// Fetches under way, by key. The value becomes `Some` once the leader's response is being
    /// stored and can be read while it arrives; the sender's drop ends the flight.
    flights: Mutex<HashMap<Bytes, Flight>>,
    evictions: Arc<AtomicU64>,
    index: Arc<Index>,
    pub stats: Stats,
    /// Replaced by config reloads ([`Cache::reconfigure`]).
    config: arc_swap::ArcSwap<CacheConfig>,
    /// The tier behind this one, set once at start.
    tier: std::sync::OnceLock<Arc<dyn Tier>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("config", &self.config())
            .finish()
    }
}

/// Shards for the store: quick_cache splits capacity evenly between shards and refuses an
/// item heavier than one shard. An object of `max_object_size` weighs more than its body
/// (header fields, keys, overhead), so each shard holds at least two bodies of that size:
/// at most `capacity / (2 * max_object_size)` shards (config validation keeps that at 4 or
/// more).
fn shards_for(c: &CacheConfig) -> usize {
    let fit = (c.capacity / c.max_object_size.max(1).saturating_mul(2)).max(1);
    let parallel = std::thread::available_parallelism().map_or(4, |n| n.get() * 4) as u64;
    let n = fit.min(parallel).min(64);
    // A power of two not above n.
    (1u64 << (63 - n.leading_zeros())) as usize
}

impl Cache {
    pub fn new(config: CacheConfig) -> Cache {
        let evictions = Arc::new(AtomicU64::new(0));
        let index = Arc::new(Index::default());
        let options = quick_cache::OptionsBuilder::new()
            .weight_capacity(config.capacity)
            // A guess for the index size: 8 KiB per object on average.
            .estimated_items_capacity((config.capacity / 8192).clamp(64, 1 << 20) as usize)
            .shards(shards_for(&config))
            .build()
            .expect("valid quick_cache options");
        Cache {
            store: Store::with_options(
                options,
                Weigh,
                Default::default(),
                Evictions(evictions.clone(), index.clone()),
            ),
            flights: Mutex::new(HashMap::new()),
            evictions,
            index,
            stats: Stats::default(),
            config: arc_swap::ArcSwap::from_pointee(config),
            tier: std::sync::OnceLock::new(),
        }
    }

    /// Puts `tier` behind this cache (once; a second call is ignored).
    pub fn set_tier(&self, tier: Arc<dyn Tier>) {
        let _ = self.tier.set(tier);
    }

    /// The settings in force.
    pub fn config(&self) -> arc_swap::Guard<Arc<CacheConfig>> {
        self.config.load()
    }

    /// Applies a reloaded `[cache]`: a smaller capacity evicts down to it at once; the other
    /// settings apply to the next lookups and stores. What is stored stays.
    pub fn reconfigure(&self, config: CacheConfig) {
        if config.capacity != self.config().capacity {
            self.store.set_capacity(config.capacity);
        }
        self.config.store(Arc::new(config));
    }

    /// Finds the stored response `request_headers` select under `key`.
    pub fn lookup(&self, key: &[u8], request_headers: &HeaderMap) -> Lookup {
        match self.store.get(key) {
            None => Lookup::Miss,
            Some(Entry::Uncacheable(until)) if until > Instant::now() => Lookup::Uncacheable,
            Some(Entry::Uncacheable(_)) => Lookup::Miss,
            Some(Entry::Objects(list)) => list
                .iter()
                .find(|o| o.vary.matches(request_headers))
                .map_or(Lookup::VaryMiss, |o| Lookup::Found(o.clone())),
            Some(Entry::Parts(p)) if p.head.vary.matches(request_headers) => Lookup::Parts(p),
            Some(Entry::Parts(_)) => Lookup::VaryMiss,
        }
    }

    /// The newest stored variant under `key`, without counting as a use (for the guest's
    /// `cache.peek`).
    pub fn peek(&self, key: &[u8]) -> Option<Arc<Object>> {
        match self.store.peek(key) {
            Some(Entry::Objects(list)) => list.first().cloned(),
            _ => None,
        }
    }

    /// Stores `object` under `key`, keeping the other variants of the key that the same
    /// `Vary` fields select differently. (Two variants stored at the same moment can lose
    /// one of them: the next request for it is a miss, nothing worse.)
    pub fn insert(&self, key: Bytes, object: Object) -> Arc<Object> {
        let object = self.insert_here(key.clone(), object);
        if let Some(t) = self.tier.get() {
            t.stored(&key, &object);
        }
        object
    }

    /// [`Cache::insert`] of an object that came from the tier behind (not told back to it).
    pub fn insert_from_tier(&self, key: Bytes, object: Object) -> Arc<Object> {
        self.insert_here(key, object)
    }

    fn insert_here(&self, key: Bytes, object: Object) -> Arc<Object> {
        let object = Arc::new(object);
        let mut list = vec![object.clone()];
        if let Some(Entry::Objects(old)) = self.store.peek(&key) {
            list.extend(
                old.iter()
                    .filter(|o| o.same_vary_fields(&object) && o.vary != object.vary)
                    .take(MAX_VARIANTS - 1)
                    .cloned(),
            );
        }
        self.store.insert(key.clone(), Entry::Objects(list.into()));
        self.index.add(&key, &object);
        bump(&self.stats.stores);
        object
    }

    /// Stores the part `body` of a response at `first` of its `complete` bytes, adding it
    /// to the parts of the same representation under `key`, and stores the complete
    /// response (a 200) once they cover all of it (RFC 9111 §3.4). `head` is the part's head
    /// without its body. A complete response under the key is never replaced by a part.
    /// (Two parts stored at the same moment can lose one: its range is fetched again.)
    pub fn insert_part(&self, key: Bytes, mut head: Meta, first: u64, body: Bytes, complete: u64) {
        let old = match self.store.peek(&key) {
            Some(Entry::Objects(list)) if !list.is_empty() => return,
            Some(Entry::Parts(p)) => Some(p),
            _ => None,
        };
        head.headers.remove(http::header::CONTENT_RANGE);
        head.headers.remove(http::header::CONTENT_LENGTH);
        let whole = head.clone();
        let part = Object::new(head, Bytes::new(), key.len());
        match Partial::merge(old.as_deref(), part, first, body, complete) {
            Merged::Partial(p) => {
                let p = Arc::new(p);
                self.store.insert(key.clone(), Entry::Parts(p.clone()));
                self.index.add(&key, &p.head);
                bump(&self.stats.stores);
            }
            Merged::Complete(body) => {
                let mut meta = whole;
                meta.status = http::StatusCode::OK;
                meta.headers
                    .insert(http::header::CONTENT_LENGTH, body.len().into());
                bump(&self.stats.combined);
                let key_len = key.len();
                self.insert(key, Object::new(meta, body, key_len));
            }
            Merged::Refused => {}
        }
    }

    /// Remembers that `key`'s response was not storable, so requests for it stop waiting on
    /// each other. Never replaces stored objects (another variant may still be good).
    pub fn mark_uncacheable(&self, key: &[u8]) {
        if self.config().hit_for_miss.is_zero() {
            return;
        }
        let now = Instant::now();
        match self.store.peek(key) {
            Some(Entry::Objects(_)) => return,
            // Renewed once half its window has gone, not on every response: the requests it
            // lets through cost a store write (a shard's write lock) and a key copy each.
            Some(Entry::Uncacheable(until)) if until > now + self.config().hit_for_miss / 2 => {
                return;
            }
            _ => {}
        }
        let until = now + self.config().hit_for_miss;
        self.store
            .insert(Bytes::copy_from_slice(key), Entry::Uncacheable(until));
    }

    /// Joins the fetch of `key` already under way, or starts one: `Ok(Leader)` while this
    /// request fetches (dropping it wakes the waiters), `Err(flight)` to wait on.
    pub fn join(self: &Arc<Self>, key: &[u8]) -> Result<Leader, Flight> {
        let mut flights = self.flights.lock().expect("flights lock");
        if let Some(rx) = flights.get(key) {
            if rx.has_changed().is_ok() {
                return Err(rx.clone());
            }
        }
        let (tx, rx) = watch::channel(None);
        let key = Bytes::copy_from_slice(key);
        flights.insert(key.clone(), rx);
        Ok(Leader {
            cache: self.clone(),
            key,
            tx,
            held: None,
        })
    }

    /// Waits on another request's fetch: until it is over ([`Waited::Done`]: look up
    /// again), or, when `stream` and the response is being stored, until its head is known
    /// ([`Waited::Streaming`]: read it as it arrives); [`Waited::TimedOut`] after
    /// `coalesce_timeout`.
    pub async fn wait(&self, mut rx: Flight, stream: bool) -> Waited {
        bump(&self.stats.coalesced_waits);
        let waited = tokio::time::timeout(self.config().coalesce_timeout, async {
            loop {
                if let Some(s) = rx.borrow_and_update().as_ref().filter(|_| stream) {
                    return Waited::Streaming(s.clone());
                }
                // The sender is dropped when the leader is done: `changed` then fails.
                if rx.changed().await.is_err() {
                    return Waited::Done;
                }
            }
        })
        .await;
        waited.unwrap_or_else(|_| {
            bump(&self.stats.coalesce_timeouts);
            Waited::TimedOut
        })
    }

    /// Removes the entries `pred` selects (hard) or marks their objects stale (soft).
    /// Returns how many objects it touched.
    pub fn purge(&self, soft: bool, pred: impl Fn(&[u8], &Object) -> bool) -> u64 {
        let n = AtomicU64::new(0);
        if soft {
            for (key, entry) in self.store.iter() {
                for o in entry.objects().iter().filter(|o| pred(&key, o)) {
                    o.invalidate();
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else {
            self.store.retain(|key, entry| {
                let hit = entry.objects().iter().filter(|o| pred(key, o)).count() as u64;
                n.fetch_add(hit, Ordering::Relaxed);
                if hit > 0 {
                    self.index.remove(key, entry);
                }
                hit == 0
            });
        }
        let n = n.into_inner();
        self.stats.purged.fetch_add(n, Ordering::Relaxed);
        n
    }

    /// Purges the objects whose URL starts with `prefix`. A prefix that names an origin
    /// and the start of a path (`https://host:443/...`) visits only that origin's keys,
    /// unless they are a large part of the store; any other prefix scans the store.
    pub fn purge_prefix(&self, prefix: &str, soft: bool) -> u64 {
        let origin = key::origin_of(prefix);
        let keys = (origin.len() < prefix.len() && origin.contains("://"))
            .then(|| self.index.of_origin(origin, self.scan_beyond()))
            .flatten();
        let Some(keys) = keys else {
            return self.purge(soft, |_, o| o.url.starts_with(prefix));
        };
        let n: u64 = keys
            .iter()
            .map(|key| self.purge_where(key, soft, |o| o.url.starts_with(prefix)))
            .sum();
        self.stats.purged.fetch_add(n, Ordering::Relaxed);
        n
    }

    /// Purges the objects stored for the normalised URL `url`: under it as their key (the
    /// default key) and under a policy's own keys, found through the origin index.
    pub fn purge_url(&self, url: &str, soft: bool) -> u64 {
        let others = |key: &[u8], o: &Object| key != url.as_bytes() && *o.url == *url;
        let mut n = self.purge_where(url.as_bytes(), soft, |_| true);
        match self
            .index
            .of_origin(key::origin_of(url), self.scan_beyond())
        {
            Some(keys) => {
                for key in keys {
                    n += self.purge_where(&key, soft, |o| others(&key, o));
                }
                self.stats.purged.fetch_add(n, Ordering::Relaxed);
            }
            None => {
                self.stats.purged.fetch_add(n, Ordering::Relaxed);
                n += self.purge(soft, others);
            }
        }
        n
    }

    /// Keys to visit one by one at most before a scan of the store is cheaper.
    fn scan_beyond(&self) -> usize {
        (self.store.len() / 4).max(1024)
    }

    /// Purges one key (all its variants). Returns how many objects it touched.
    pub fn purge_key(&self, key: &[u8], soft: bool) -> u64 {
        let n = self.purge_where(key, soft, |_| true);
        self.stats.purged.fetch_add(n, Ordering::Relaxed);
        n
    }

    /// Purges the objects that carry `tag`: the whole entry of each (hard) or those objects
    /// marked stale (soft). Visits only the keys the tag index names. Returns how many
    /// objects carried the tag.
    pub fn purge_tag(&self, tag: &str, soft: bool) -> u64 {
        let mut n = 0;
        for key in self.index.tagged(tag) {
            let hit = self.purge_where(&key, soft, |o| o.has_tag(tag));
            if hit == 0 {
                // Its objects no longer carry the tag (or it is gone).
                self.index.forget_tag(tag, &key);
            }
            n += hit;
        }
        self.stats.purged.fetch_add(n, Ordering::Relaxed);
        n
    }

    /// Under one key: marks the objects `pred` selects stale (soft), or removes the entry
    /// if any is selected (hard). Returns how many were selected. Not counted in stats.
    fn purge_where(&self, key: &[u8], soft: bool, pred: impl Fn(&Object) -> bool) -> u64 {
        let selected = |e: &Entry| e.objects().iter().filter(|o| pred(o)).count() as u64;
        if soft {
            let Some(entry) = self.store.peek(key) else {
                return 0;
            };
            let mut hit = 0;
            for o in entry.objects().iter().filter(|o| pred(o)) {
                o.invalidate();
                hit += 1;
            }
            return hit;
        }
        let removed = self.store.remove_if(key, |e| selected(e) > 0);
        removed.map_or(0, |(k, e)| {
            self.index.remove(&k, &e);
            selected(&e)
        })
    }

    /// Removes `key`'s entry and its index slots.
    fn remove(&self, key: &[u8]) -> Option<Entry> {
        let (k, e) = self.store.remove(key)?;
        self.index.remove(&k, &e);
        Some(e)
    }

    /// Invalidates `key` after an unsafe request changed its resource (RFC 9111 §4.4), here
    /// and in the tier behind (whose copy would otherwise be the next lookup's answer).
    pub fn invalidate(&self, key: &[u8]) {
        if self.remove(key).is_some() {
            bump(&self.stats.invalidations);
        }
        if let Some(t) = self.tier.get() {
            t.purged(&Purge::Key(Bytes::copy_from_slice(key)), false);
        }
    }

    /// Purges what `what` selects here and tells the tier behind (which tells the fleet).
    /// Returns how many objects it touched here.
    pub fn purge_everywhere(&self, what: Purge, soft: bool) -> u64 {
        let n = self.purge_here(&what, soft);
        if let Some(t) = self.tier.get() {
            t.purged(&what, soft);
        }
        n
    }

    /// Purges what `what` selects in this store only.
    pub fn purge_here(&self, what: &Purge, soft: bool) -> u64 {
        match what {
            Purge::Url(url) => self.purge_url(url, soft),
            Purge::Key(key) => self.purge_key(key, soft),
            Purge::Prefix(prefix) => self.purge_prefix(prefix, soft),
            Purge::Tag(tag) => self.purge_tag(tag, soft),
            Purge::All => self.purge(soft, |_, _| true),
        }
    }

    pub fn stats_json(&self) -> serde_json::Value {
        let s = &self.stats;
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "entries": self.store.len(),
            "tags": self.index.tags(),
            "bytes": self.store.weight(),
            "capacity": self.config().capacity,
            "hits": g(&s.hits),
            "misses": g(&s.misses),
            "stale_served": g(&s.stale_served),
            "revalidations": g(&s.revalidations),
            "not_modified": g(&s.not_modified),
            "coalesced_waits": g(&s.coalesced_waits),
            "coalesce_timeouts": g(&s.coalesce_timeouts),
            "evictions": g(&self.evictions),
            "stores": g(&s.stores),
            "purged": g(&s.purged),
            "invalidations": g(&s.invalidations),
            "hit_for_miss": g(&s.hit_for_miss),
            "bypasses": g(&s.bypasses),
            "streamed": g(&s.streamed),
            "combined": g(&s.combined),
        })
    }
}

/// Another request's fetch of a key, to wait on (see [`Cache::wait`]).
pub type Flight = watch::Receiver<Option<Arc<Streaming>>>;

/// How waiting on a flight ended.
pub enum Waited {
    Done,
    Streaming(Arc<Streaming>),
    TimedOut,
}

/// The request fetching a key for everyone waiting on it. Dropping it ends the flight.
pub struct Leader {
    cache: Arc<Cache>,
    key: Bytes,
    tx: watch::Sender<Option<Arc<Streaming>>>,
    /// Held as long as the flight (the shared tier's fleet-wide lock on the key).
    held: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Leader {
    /// Keeps `guard` until the flight ends.
    pub fn hold(&mut self, guard: Box<dyn std::any::Any + Send + Sync>) {
        self.held = Some(guard);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut flights = self.cache.flights.lock().expect("flights lock");
        flights.remove(&self.key);
    }
}

/// A response being stored, readable by the requests coalesced on its key while its body
/// is still arriving (read-while-write, as Varnish's streaming and Traffic Server's
/// read-while-writer). Only a response with a `Content-Length` within `max_object_size` is
/// streamed this way, so it cannot turn out too large halfway and leave its readers short.
pub struct Streaming {
    /// Its head and freshness, as it will be stored.
    pub meta: Arc<Meta>,
    /// The body's declared length.
    pub length: u64,
    state: Mutex<StreamState>,
}

#[derive(Default)]
struct StreamState {
    chunks: Vec<Bytes>,
    readers: Vec<mpsc::UnboundedSender<Piece>>,
    /// `Some(complete)` once the body ended.
    end: Option<bool>,
}

/// What a reader of a [`Streaming`] body gets next.
pub enum Piece {
    Data(Bytes),
    /// The body ended: complete, or cut short (the fetch failed).
    End(bool),
}

impl Streaming {
    /// A reader that gets every chunk so far, then each new one as it arrives. Its channel
    /// holds shared `Bytes` (no copy): a slow reader costs handles, not body memory.
    pub fn reader(&self) -> mpsc::UnboundedReceiver<Piece> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.state.lock().expect("stream lock");
        for c in &state.chunks {
            let _ = tx.send(Piece::Data(c.clone()));
        }
        match state.end {
            Some(complete) => {
                let _ = tx.send(Piece::End(complete));
            }
            None => state.readers.push(tx),
        }
        rx
    }

    fn push(&self, chunk: &Bytes) {
        let mut state = self.state.lock().expect("stream lock");
        state.chunks.push(chunk.clone());
        state
            .readers
            .retain(|r| r.send(Piece::Data(chunk.clone())).is_ok());
    }

    fn end(&self, complete: bool) -> Vec<Bytes> {
        let mut state = self.state.lock().expect("stream lock");
        state.end = Some(complete);
        for r in state.readers.drain(..) {
            let _ = r.send(Piece::End(complete));
        }
        // Kept (shared handles) for readers that attach from now on: a waiter can find the
        // stream after its end.
        state.chunks.clone()
    }

    fn has_readers(&self) -> bool {
        !self.state.lock().expect("stream lock").readers.is_empty()
    }
}

/// Collects a response body as it streams to the client (sharing its chunks, no copy), and
/// stores the object when the body ends complete and within `max_object_size`. With a
/// declared length and a flight, the chunks go to a [`Streaming`] its waiters read.
pub struct Fill {
    cache: Arc<Cache>,
    key: Bytes,
    meta: Option<Arc<Meta>>,
    chunks: Vec<Bytes>,
    streaming: Option<Arc<Streaming>>,
    size: u64,
    /// Ends the flight once the object is stored (or given up).
    leader: Option<Leader>,
    /// A part of a response (a 206) rather than all of it.
    part: Option<partial::ContentRange>,
}

impl Fill {
    /// `length`: the response's `Content-Length`, when it has one.
    pub fn new(
        cache: Arc<Cache>,
        key: Bytes,
        meta: Meta,
        length: Option<u64>,
        leader: Option<Leader>,
    ) -> Fill {
        let meta = Arc::new(meta);
        let streaming = match (&leader, length) {
            (Some(leader), Some(length)) if length <= cache.config().max_object_size => {
                let s = Arc::new(Streaming {
                    meta: meta.clone(),
                    length,
                    state: Mutex::default(),
                });
                leader.tx.send_replace(Some(s.clone()));
                Some(s)
            }
            _ => None,
        };
        Fill {
            cache,
            key,
            meta: Some(meta),
            chunks: Vec::new(),
            streaming,
            size: 0,
            leader,
            part: None,
        }
    }

    /// Collects the body of a 206 answering `range`, to store as a part.
    pub fn part(cache: Arc<Cache>, key: Bytes, meta: Meta, range: partial::ContentRange) -> Fill {
        let mut fill = Fill::new(cache, key, meta, Some(range.bytes()), None);
        fill.part = Some(range);
        fill
    }

    /// One body chunk.
    pub fn data(&mut self, chunk: &Bytes) {
        if self.meta.is_none() {
            return;
        }
        self.size += chunk.len() as u64;
        if let Some(range) = self.part.filter(|r| self.size > r.bytes()) {
            tracing::debug!(key = ?self.key, ?range, "a part longer than its Content-Range");
            self.meta = None;
            self.chunks = Vec::new();
            return;
        }
        if self.size > self.cache.config().max_object_size {
            // Too large after all (no or a wrong Content-Length): pass it through.
            self.meta = None;
            self.chunks = Vec::new();
            if let Some(s) = self.streaming.take() {
                s.end(false);
            }
            self.cache.mark_uncacheable(&self.key);
            return;
        }
        match &self.streaming {
            Some(s) => s.push(chunk),
            None => self.chunks.push(chunk.clone()),
        }
    }

    /// Whether requests are reading the body as it arrives (so it is worth finishing even
    /// if the client that asked for it goes away).
    pub fn has_readers(&self) -> bool {
        self.streaming.as_ref().is_some_and(|s| s.has_readers())
    }

    /// The body ended; `complete` when it was read to its end without error.
    pub fn end(mut self, complete: bool) {
        let chunks = match self.streaming.take() {
            Some(s) => s.end(complete),
            None => std::mem::take(&mut self.chunks),
        };
        let Some(meta) = self.meta.take() else {
            return;
        };
        if !complete {
            return;
        }
        // Always one fresh allocation of exactly the body's size: chunks from hyper can be
        // slices of a larger read buffer, which a stored slice would keep alive unweighed.
        let mut all = Vec::with_capacity(self.size as usize);
        for c in &chunks {
            all.extend_from_slice(c);
        }
        let body = Bytes::from(all);
        let meta = Arc::try_unwrap(meta).unwrap_or_else(|shared| (*shared).clone());
        if let Some(range) = self.part {
            if self.size == range.bytes() {
                let key = self.key.clone();
                self.cache
                    .insert_part(key, meta, range.first, body, range.complete);
            }
            return;
        }
        let object = Object::new(meta, body, self.key.len());
        self.cache.insert(self.key.clone(), object);
        drop(self.leader.take());
    }
}

impl std::fmt::Debug for Fill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fill").field("size", &self.size).finish()
    }
}

/// How long a stored object may still be served stale under a window (seconds).
pub fn within(staleness: Duration, window: Option<u64>) -> bool {
    window.is_some_and(|w| staleness <= Duration::from_secs(w))
}
