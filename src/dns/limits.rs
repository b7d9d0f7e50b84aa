//! Per-source limits: a query rate (token bucket per source IP) and a share of the
//! forwarding slots and TCP connections.
//!
//! Both are bounded whatever the sources are. UDP sources can be spoofed, so the rate table has
//! a fixed capacity (set-associative, [`SOURCE_TABLE_CAPACITY`] entries, allocated once) and
//! evicts; the slot pools hold an entry only while a slot is held, so they never hold more
//! entries than slots.
//!
//! Time is passed in, so the buckets are tested without a clock.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Queries per second a source may send, with a burst allowance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained queries per second (tokens added per second).
    pub per_second: u32,
    /// Bucket size: queries a source may send at once after being idle.
    pub burst: u32,
}

/// Entries of the rate table: a fixed memory bound (about 48 bytes each, so under 0.5 MiB),
/// ample for the Whisperers of a large cluster (one entry per querying pod).
pub const SOURCE_TABLE_CAPACITY: usize = SHARDS * SETS_PER_SHARD * WAYS;
const SHARDS: usize = 16;
const SETS_PER_SHARD: usize = 64;
/// Entries a source may land in (its set). Eight ways keep a busy source in the table while
/// others come and go, at the cost of scanning eight entries on a miss.
const WAYS: usize = 8;

/// One source's token bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(limit: RateLimit, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(limit.burst),
            last: now,
        }
    }

    /// Tokens at `now` (a clock that went backwards adds nothing).
    fn refilled(&self, limit: RateLimit, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * f64::from(limit.per_second)).min(f64::from(limit.burst))
    }

    /// Take one token if there is one.
    fn take(&mut self, limit: RateLimit, now: Instant) -> bool {
        self.tokens = self.refilled(limit, now);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// A full bucket carries no information: dropping it changes nothing for its source.
    fn is_full(&self, limit: RateLimit, now: Instant) -> bool {
        self.refilled(limit, now) >= f64::from(limit.burst)
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    source: IpAddr,
    bucket: Bucket,
}

/// The rate limiter's verdict on one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The query may be served.
    pub allowed: bool,
    /// Making room for this source dropped another source's partly spent bucket (the table is
    /// under pressure: very many sources, possibly spoofed).
    pub evicted: bool,
}

/// Token buckets for at most [`SOURCE_TABLE_CAPACITY`] sources (fewer with [`Self::small`]).
pub struct SourceLimiter {
    limit: RateLimit,
    hasher: RandomState,
    sets_per_shard: usize,
    ways: usize,
    shards: Box<[Mutex<Shard>]>,
}

/// `sets_per_shard * ways` entries; set `i` is `[i * ways .. (i + 1) * ways]`.
type Shard = Box<[Option<Entry>]>;

impl SourceLimiter {
    /// A limiter with the full table. `limit.burst` is at least 1 (a zero burst would refuse
    /// everything; the CLI refuses it).
    pub fn new(limit: RateLimit) -> Self {
        Self::with_geometry(limit, SHARDS, SETS_PER_SHARD, WAYS)
    }

    /// A limiter with one set of `ways` entries (for tests of eviction order).
    pub fn small(limit: RateLimit, ways: usize) -> Self {
        Self::with_geometry(limit, 1, 1, ways)
    }

    fn with_geometry(limit: RateLimit, shards: usize, sets_per_shard: usize, ways: usize) -> Self {
        let limit = RateLimit {
            burst: limit.burst.max(1),
            ..limit
        };
        let shards = (0..shards)
            .map(|_| Mutex::new(vec![None; sets_per_shard * ways].into_boxed_slice()))
            .collect();
        SourceLimiter {
            limit,
            hasher: RandomState::new(),
            sets_per_shard,
            ways,
            shards,
        }
    }

    /// Charge one query from `source` at `now`.
    pub fn check(&self, source: IpAddr, now: Instant) -> Verdict {
        let source = source.to_canonical();
        // The hash key is random per process: nobody can aim many sources at one set.
        let hash = self.hasher.hash_one(source);
        let shard_index = (hash % self.shards.len() as u64) as usize;
        let set = ((hash >> 32) % self.sets_per_shard as u64) as usize;
        let mut shard = lock(&self.shards[shard_index]);
        let ways = &mut shard[set * self.ways..(set + 1) * self.ways];
        if let Some(entry) = ways.iter_mut().flatten().find(|e| e.source == source) {
            return Verdict {
                allowed: entry.bucket.take(self.limit, now),
                evicted: false,
            };
        }
        let (slot, evicted) = victim(ways, self.limit, now);
        let mut bucket = Bucket::full(self.limit, now);
        let allowed = bucket.take(self.limit, now);
        ways[slot] = Some(Entry { source, bucket });
        Verdict { allowed, evicted }
    }

    /// Sources currently tracked (never more than the capacity).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| lock(s).iter().flatten().count())
            .sum()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries the table can hold (fixed at construction).
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}

/// The entry a new source takes: an empty one, else one whose bucket is full (no loss), else
/// the least recently charged one (`true`: a spent bucket was dropped).
fn victim(ways: &[Option<Entry>], limit: RateLimit, now: Instant) -> (usize, bool) {
    if let Some(i) = ways.iter().position(Option::is_none) {
        return (i, false);
    }
    let entries = ways.iter().flatten().enumerate();
    if let Some((i, _)) = entries.clone().find(|(_, e)| e.bucket.is_full(limit, now)) {
        return (i, false);
    }
    let oldest = entries
        .min_by_key(|(_, e)| e.bucket.last)
        .map_or(0, |(i, _)| i);
    (oldest, true)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent, so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a slot was not granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotDenied {
    /// This source already holds its share.
    Source,
    /// Every slot is taken.
    Exhausted,
}

/// A fixed number of slots (forwards in flight, TCP connections), at most `per_source` of
/// them held by one source. Holds an entry per source only while that source holds a slot.
pub struct SlotPool {
    total: usize,
    per_source: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// A granted slot; dropping it gives it back.
pub struct Slot {
    pool: Arc<SlotPool>,
    source: IpAddr,
}

impl SlotPool {
    pub fn new(total: usize, per_source: usize) -> Arc<Self> {
        Arc::new(SlotPool {
            total,
            per_source,
            held: Mutex::new(Held::default()),
        })
    }

    /// A slot for `source`, unless it holds its share already or all slots are taken.
    pub fn try_acquire(self: &Arc<Self>, source: IpAddr) -> Result<Slot, SlotDenied> {
        let source = source.to_canonical();
        let mut held = lock(&self.held);
        let mine = held.by_source.get(&source).copied().unwrap_or(0);
        if mine >= self.per_source {
            return Err(SlotDenied::Source);
        }
        if held.total >= self.total {
            return Err(SlotDenied::Exhausted);
        }
        held.total += 1;
        held.by_source.insert(source, mine + 1);
        Ok(Slot {
            pool: self.clone(),
            source,
        })
    }

    /// `(slots held, sources holding one)`.
    pub fn usage(&self) -> (usize, usize) {
        let held = lock(&self.held);
        (held.total, held.by_source.len())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = lock(&self.pool.held);
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                held.by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests;
