//! Exact top-k cosine search over the chunks of vector stores, from in-memory int8 indexes.
//!
//! Each searched store gets a [`StoreIndex`], loaded from SQLite on its first search: per
//! embedding dimension, one contiguous int8 array of the normalized vectors (1 byte per
//! dimension, plus 24 bytes per vector of scale, error, rowid and file group). A search scans
//! it with the integer kernel (split over the cores when it is large), then rescores exactly,
//! from the f32 embeddings in SQLite, every vector whose upper bound reaches the k-th best
//! exact score (`kernel.rs` explains the bound). The result is the exact brute-force top k.
//!
//! Attributes are per file, so each index keeps one group per (file, attributes) and a
//! filter is evaluated once per group, not per chunk.
//!
//! Consistency: every chunk write bumps the store's `epoch` row in its transaction and hands
//! the writer thread an [`IndexOp`]. Before committing, the writer write-locks the loaded
//! indexes the batch touches, and applies the ops after the commit; an index whose epoch is
//! not the op's predecessor (another process wrote) is dropped instead. A search reads the
//! epoch from the file first, so it either finds the index at (or past) that epoch, or
//! reloads it: a search never misses an acknowledged write, even one made by another process.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockWriteGuard};

use rusqlite::{Connection, OptionalExtension};

use super::DbError;
use super::index::{Segment, StoreIndex};
use super::kernel::{self, Query};
use crate::model::{AttributeFilter, Attributes, ScoredChunk};
use crate::store::StoreResult;

/// Resident bytes of all loaded indexes above which the least recently searched are
/// dropped (they reload on their next search). 4 GiB holds about 2.7M chunks of 1536
/// dimensions; the proxy's other memory is small next to it.
const MEMORY_BUDGET: usize = 4 << 30;

/// Below this many scanned bytes a second thread costs more than it saves (spawning one is
/// tens of microseconds; a core scans about a gigabyte per 100 ms).
const PARALLEL_MIN_BYTES: usize = 4 << 20;

/// Candidates rescored in the first round, beyond `k`: most true top-k vectors have the
/// highest upper bounds, so one round usually settles the threshold.
const FIRST_ROUND_EXTRA: usize = 16;

/// `(tenant, vector store id)`.
pub(crate) type StoreKey = (String, String);

/// A change to one store's chunks, applied to its loaded index after the commit.
pub(crate) enum IndexOp {
    /// The file's chunks are now exactly these `(rowid, embedding)` with these attributes.
    ReplaceFile {
        key: StoreKey,
        epoch: i64,
        file_id: String,
        attributes: Attributes,
        vectors: Vec<(i64, Vec<f32>)>,
    },
    RemoveFile {
        key: StoreKey,
        epoch: i64,
        file_id: String,
    },
    SetAttributes {
        key: StoreKey,
        epoch: i64,
        file_id: String,
        attributes: Attributes,
    },
    DropStore {
        key: StoreKey,
    },
}

impl IndexOp {
    fn key(&self) -> &StoreKey {
        match self {
            IndexOp::ReplaceFile { key, .. }
            | IndexOp::RemoveFile { key, .. }
            | IndexOp::SetAttributes { key, .. }
            | IndexOp::DropStore { key } => key,
        }
    }
}

/// The loaded indexes of every store searched so far.
pub(crate) struct SearchIndex {
    slots: Mutex<HashMap<StoreKey, Arc<Slot>>>,
    /// Logical time of searches, for least-recently-used eviction.
    clock: AtomicU64,
    threads: usize,
}

/// One store's place in the map; it exists before (and while) its index loads.
#[derive(Default)]
struct Slot {
    index: RwLock<Option<StoreIndex>>,
    /// Held while loading, so concurrent first searches wait for one load, not start several.
    loading: Mutex<()>,
    last_used: AtomicU64,
    bytes: AtomicUsize,
}

/// Locks that only guard data whose every update is complete before the lock is released,
/// so a panic elsewhere cannot have left it half-written: recover from poisoning.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The store's chunk epoch in the file (0 before its first chunk write).
pub(crate) fn read_epoch(conn: &Connection, key: &StoreKey) -> Result<i64, DbError> {
    Ok(conn
        .prepare_cached("SELECT epoch FROM vs_epochs WHERE tenant = ?1 AND vs_id = ?2")?
        .query_row([&key.0, &key.1], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// A rescored candidate.
struct Hit {
    score: f32,
    /// Position of the store in the request (ties go to the earlier store, then rowid).
    store: usize,
    rowid: i64,
}

impl SearchIndex {
    pub(crate) fn new() -> SearchIndex {
        SearchIndex {
            slots: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        }
    }

    /// Runs `commit`, holding the write locks of the loaded indexes `ops` touch, and applies
    /// the ops if it succeeded. Called by the writer thread only.
    pub(crate) fn commit_and_apply(
        &self,
        ops: Vec<IndexOp>,
        commit: impl FnOnce() -> StoreResult<()>,
    ) -> StoreResult<()> {
        // Sorted, so lock order is the same for every caller (only the writer takes more
        // than one slot lock at a time; this keeps that true if that ever changes).
        let touched: BTreeMap<StoreKey, Arc<Slot>> = {
            let slots = lock(&self.slots);
            ops.iter()
                .filter_map(|op| slots.get(op.key()).map(|s| (op.key().clone(), s.clone())))
                .collect()
        };
        let mut guards: HashMap<&StoreKey, RwLockWriteGuard<'_, Option<StoreIndex>>> =
            touched.iter().map(|(k, s)| (k, write(&s.index))).collect();
        commit()?;
        let mut dropped = Vec::new();
        for op in ops {
            if let IndexOp::DropStore { key } = &op {
                dropped.push(key.clone());
            }
            let Some(guard) = guards.get_mut(op.key()) else {
                continue;
            };
            if let Some(index) = guard.as_mut()
                && !index.apply(op)
            {
                **guard = None;
            }
        }
        for (key, guard) in &guards {
            let bytes = guard.as_ref().map_or(0, StoreIndex::bytes);
            if let Some(slot) = touched.get(*key) {
                slot.bytes.store(bytes, Ordering::Relaxed);
            }
        }
        drop(guards);
        if !dropped.is_empty() {
            let mut slots = lock(&self.slots);
            for key in &dropped {
                slots.remove(key);
            }
        }
        Ok(())
    }

    fn slot(&self, key: &StoreKey) -> Arc<Slot> {
        lock(&self.slots).entry(key.clone()).or_default().clone()
    }

    /// The store's slot with its index loaded and at least at the file's current epoch.
    fn current(&self, conn: &Connection, key: &StoreKey) -> Result<Arc<Slot>, DbError> {
        let epoch = read_epoch(conn, key)?;
        let slot = self.slot(key);
        let fresh = |slot: &Slot| read(&slot.index).as_ref().is_some_and(|i| i.epoch >= epoch);
        if !fresh(&slot) {
            let _loading = lock(&slot.loading);
            if !fresh(&slot) {
                let loaded = StoreIndex::load(conn, key)?;
                let bytes = loaded.bytes();
                {
                    let mut index = write(&slot.index);
                    if index.as_ref().is_none_or(|i| i.epoch < loaded.epoch) {
                        *index = Some(loaded);
                        slot.bytes.store(bytes, Ordering::Relaxed);
                    }
                }
                self.evict(&slot);
            }
        }
        slot.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        Ok(slot)
    }

    /// Drops least-recently-searched indexes (never `keep`) while over the memory budget.
    fn evict(&self, keep: &Arc<Slot>) {
        let mut slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        let mut total: usize = slots.iter().map(|s| s.bytes.load(Ordering::Relaxed)).sum();
        if total <= MEMORY_BUDGET {
            return;
        }
        slots.sort_by_key(|s| s.last_used.load(Ordering::Relaxed));
        for slot in slots {
            if total <= MEMORY_BUDGET {
                break;
            }
            if Arc::ptr_eq(&slot, keep) {
                continue;
            }
            let freed = slot.bytes.swap(0, Ordering::Relaxed);
            if freed > 0 {
                *write(&slot.index) = None;
                total = total.saturating_sub(freed);
            }
        }
    }

    /// The `k` best chunks of the stores for `query`, exact, best first.
    pub(crate) fn search(
        &self,
        conn: &Connection,
        tenant: &str,
        vs_ids: &[String],
        query: &[f32],
        k: usize,
        filter: Option<&AttributeFilter>,
    ) -> Result<Vec<ScoredChunk>, DbError> {
        let Some(query) = Query::new(query) else {
            return Ok(Vec::new());
        };
        if k == 0 {
            return Ok(Vec::new());
        }
        let mut hits = Vec::new();
        let mut seen = Vec::new();
        for (n, vs_id) in vs_ids.iter().enumerate() {
            if seen.contains(&vs_id) {
                continue;
            }
            seen.push(vs_id);
            let key = (tenant.to_owned(), vs_id.clone());
            // The index can be dropped between loading and locking it (evicted, or a write
            // from another process); then it is loaded again.
            let mut attempts = 0;
            loop {
                let slot = self.current(conn, &key)?;
                let index = read(&slot.index);
                if let Some(index) = index.as_ref() {
                    self.search_store(conn, &key, n, index, &query, k, filter, &mut hits)?;
                    break;
                }
                attempts += 1;
                if attempts == 3 {
                    return Err(DbError::Invalid(format!(
                        "the search index of {vs_id} keeps being dropped (memory budget too small?)"
                    )));
                }
            }
        }
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.store.cmp(&b.store))
                .then(a.rowid.cmp(&b.rowid))
        });
        hits.truncate(k);
        let mut out = Vec::with_capacity(hits.len());
        let mut stmt = conn.prepare_cached(
            "SELECT vs_id, file_id, idx, text, attributes FROM chunks WHERE rowid = ?1 AND tenant = ?2",
        )?;
        for hit in hits {
            let row = stmt
                .query_row(rusqlite::params![hit.rowid, tenant], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .optional()?;
            // Deleted since it was scored: a concurrent write, not part of this answer.
            if let Some((vector_store_id, file_id, index, text, attributes)) = row {
                out.push(ScoredChunk {
                    vector_store_id,
                    file_id,
                    index,
                    text,
                    attributes: serde_json::from_str(&attributes)?,
                    score: hit.score,
                });
            }
        }
        Ok(out)
    }

    /// Adds the store's exact top `k` to `hits`.
    #[allow(clippy::too_many_arguments)]
    fn search_store(
        &self,
        conn: &Connection,
        key: &StoreKey,
        store: usize,
        index: &StoreIndex,
        query: &Query,
        k: usize,
        filter: Option<&AttributeFilter>,
        hits: &mut Vec<Hit>,
    ) -> Result<(), DbError> {
        let Some(seg) = index.segments.iter().find(|s| s.dims == query.codes.len()) else {
            return Ok(());
        };
        let pass: Vec<bool> = index
            .groups
            .list
            .iter()
            .map(|attributes| filter.is_none_or(|f| f.matches(attributes)))
            .collect();
        // (upper bound, position) of every vector that passes the filter.
        let mut bounds = self.scan(seg, query, &pass);
        let first = (k + FIRST_ROUND_EXTRA).min(bounds.len());
        if first < bounds.len() {
            bounds.select_nth_unstable_by(first, |a, b| b.0.total_cmp(&a.0));
        }
        let mut stmt = conn.prepare_cached(
            "SELECT embedding FROM chunks WHERE rowid = ?1 AND tenant = ?2 AND vs_id = ?3",
        )?;
        let mut rescore = |pos: u32, scored: &mut Vec<Hit>| -> Result<(), DbError> {
            let rowid = seg.rowids[pos as usize];
            let score = stmt
                .query_row(rusqlite::params![rowid, key.0, key.1], |r| {
                    Ok(query.exact_le_bytes(r.get_ref(0)?.as_blob()?))
                })
                .optional()?;
            if let Some(score) = score {
                scored.push(Hit {
                    score,
                    store,
                    rowid,
                });
            }
            Ok(())
        };
        let mut scored = Vec::with_capacity(first);
        for &(_, pos) in &bounds[..first] {
            rescore(pos, &mut scored)?;
        }
        // Every vector whose upper bound reaches the k-th exact score could still belong.
        let threshold = kth_best(&scored, k);
        for &(upper, pos) in &bounds[first..] {
            if upper >= threshold {
                rescore(pos, &mut scored)?;
            }
        }
        scored.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.rowid.cmp(&b.rowid)));
        scored.truncate(k);
        hits.extend(scored);
        Ok(())
    }

    /// Upper bounds of the exact cosine for every vector of `seg` whose group passes.
    fn scan(&self, seg: &Segment, query: &Query, pass: &[bool]) -> Vec<(f32, u32)> {
        let n = seg.len();
        let threads = if seg.codes.len() >= PARALLEL_MIN_BYTES {
            self.threads
        } else {
            1
        };
        let part = n.div_ceil(threads.max(1));
        let scan_range = |from: usize, to: usize| -> Vec<(f32, u32)> {
            let mut out = Vec::with_capacity(to - from);
            for i in from..to {
                if !pass.get(seg.groups[i] as usize).copied().unwrap_or(false) {
                    continue;
                }
                let codes = &seg.codes[i * seg.dims..(i + 1) * seg.dims];
                let dot = kernel::dot_i8_i16(codes, &query.codes);
                let (_, upper) = query.estimate(dot, seg.quant[i]);
                out.push((upper, i as u32));
            }
            out
        };
        if threads <= 1 {
            return scan_range(0, n);
        }
        std::thread::scope(|s| {
            let scan_range = &scan_range;
            let helpers: Vec<_> = (1..threads)
                .map(|t| {
                    let (from, to) = ((t * part).min(n), ((t + 1) * part).min(n));
                    (from, to, s.spawn(move || scan_range(from, to)))
                })
                .collect();
            let mut out = scan_range(0, part.min(n));
            for (from, to, helper) in helpers {
                match helper.join() {
                    Ok(share) => out.extend(share),
                    // Cannot happen (the scan has no panicking operation), but if it did,
                    // redo the share here rather than silently lose it.
                    Err(_) => out.extend(scan_range(from, to)),
                }
            }
            out
        })
    }
}

/// The k-th best score of `scored`, or −∞ when there are fewer than k (then every
/// candidate must be rescored).
fn kth_best(scored: &[Hit], k: usize) -> f32 {
    if scored.len() < k {
        return f32::NEG_INFINITY;
    }
    let mut scores: Vec<f32> = scored.iter().map(|h| h.score).collect();
    let (_, kth, _) = scores.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    *kth
}
