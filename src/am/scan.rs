//! `ambeginscan` / `amrescan` / `amgettuple` / `amendscan`: ordered scans.
//!
//! A scan runs a beam search with `omen.search_list_size` candidates and returns them in
//! exact distance order (distances are computed on the full vectors, so no recheck). When
//! the executor asks for more rows than the list held (a WHERE clause rejected some, or the
//! LIMIT is larger), the search is resumed with a list twice as wide and returns the rows
//! it found that were not returned yet, in order, until `omen.max_search_list_size` is
//! reached or the graph is exhausted. Within a round the order is exact; a row first found
//! by a wider round can be closer than the last row of the round before (pgvector's
//! iterative scans call this relaxed order).
//!
//! Rows still in the insert buffer (PENDING or LINKING entries) are read at the start of
//! each scan and returned by exact distance, interleaved with the graph's rows; a graph
//! node whose heap TID was taken from the buffer is skipped, so a row being merged while
//! the scan runs comes back once. The buffer is read before the graph is searched, so an
//! entry that is MERGED by then is already fully linked into the graph.
//! Locks: one page at a time, share mode (see `storage`).

use std::collections::{HashSet, VecDeque};

use omen_core::distance::{Metric, normalize};
use omen_core::quant::PreparedQuery;

use omen_core::graph::{BeamSearch, NodeId};
use pgrx::PgMemoryContexts;
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::options::{MAX_SEARCH_LIST_SIZE, SEARCH_LIST_SIZE};
use crate::storage::buffer_codes;
use crate::storage::insert_buffer::{self, DEAD, EntryPlace, LINKING, PENDING};
use crate::storage::layout::{Meta, NO_BLOCK, NO_NODE, tid_key, tid_of};
use crate::storage::page_store::{PageStore, cached_quantizer, read_meta};
use crate::types::fmgr::datum_vector;

std::thread_local! {
    /// Searches of ended scans, whose buffers (candidate list, visited set) the next scan
    /// of this backend reuses instead of growing new ones.
    static SEARCHES: std::cell::RefCell<Vec<BeamSearch>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Per-scan state, allocated in the scan's memory context and dropped with it (its search
/// then goes back to the pool).
struct ScanState {
    index: pg_sys::Relation,
    /// The graph as of this query's start (None before the first query).
    store: Option<PageStore>,
    entry: NodeId,
    search: BeamSearch,
    query: Option<Vec<f32>>,
    list_size: usize,
    started: bool,
    returned: HashSet<NodeId>,
    /// Graph results not returned yet, closest first, with their rank distances.
    pending: VecDeque<(NodeId, f32)>,
    /// Buffered rows ranked exactly and not returned yet, farthest first (the next one is
    /// popped).
    buffered: Vec<(f32, pg_sys::ItemPointerData)>,
    /// Heap TIDs of the buffered rows ranked exactly: the buffer returns them, the graph
    /// skips them.
    buffered_tids: HashSet<(u32, u16)>,
    /// Buffered rows estimated from their codes and not ranked exactly yet: the best by
    /// estimate, as many as the rounds so far may rank (`estimate_buffer`).
    candidates: Vec<BufferCandidate>,
    /// Whether the buffer held rows left out of `candidates`: a wider round estimates again.
    candidates_truncated: bool,
    /// The places (block, offset) of the buffered rows ranked or looked at: estimating
    /// again leaves them out.
    visited_places: HashSet<(u32, u16)>,
    /// Buffered rows ranked (or looked at) so far in this query.
    buffer_ranked: usize,
    /// Heap TIDs the graph returned, which the buffer no longer returns.
    graph_tids: HashSet<(u32, u16)>,
}

/// A buffered row known by its code's estimate.
#[derive(Clone, Copy)]
struct BufferCandidate {
    estimate: f32,
    place: EntryPlace,
}

impl PartialEq for BufferCandidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for BufferCandidate {}
impl PartialOrd for BufferCandidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for BufferCandidate {
    /// By estimate (the heap of [`estimate_buffer`] keeps the worst on top).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.estimate.total_cmp(&other.estimate)
    }
}

/// Buffered rows ranked exactly per round: this many times the round's list size, the best
/// by their codes' estimates (the graph ranks its list the same way).
const BUFFER_RERANK: usize = 2;

impl Drop for ScanState {
    fn drop(&mut self) {
        let search = std::mem::take(&mut self.search);
        SEARCHES.with_borrow_mut(|pool| {
            if pool.len() < 4 {
                pool.push(search);
            }
        });
    }
}

/// `ambeginscan`.
#[pg_guard]
pub unsafe extern "C-unwind" fn ambeginscan(
    index: pg_sys::Relation,
    nkeys: i32,
    norderbys: i32,
) -> pg_sys::IndexScanDesc {
    // SAFETY: RelationGetIndexScan allocates the scan descriptor for this index.
    let scan = unsafe { pg_sys::RelationGetIndexScan(index, nkeys, norderbys) };
    // The metapage is read when the query starts (next_tuple), once.
    let state = ScanState {
        index,
        store: None,
        entry: NO_NODE,
        search: SEARCHES.with_borrow_mut(|pool| pool.pop()).unwrap_or_default(),
        query: None,
        list_size: 0,
        started: false,
        returned: HashSet::new(),
        pending: VecDeque::new(),
        buffered: Vec::new(),
        buffered_tids: HashSet::new(),
        candidates: Vec::new(),
        candidates_truncated: false,
        visited_places: HashSet::new(),
        buffer_ranked: 0,
        graph_tids: HashSet::new(),
    };
    let state = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(state);
    // SAFETY: `scan` was just allocated; opaque is ours.
    unsafe { (*scan).opaque = state.cast() };
    scan
}

/// `amrescan`: takes the query vector from the ORDER BY argument.
#[pg_guard]
pub unsafe extern "C-unwind" fn amrescan(
    scan: pg_sys::IndexScanDesc,
    _keys: pg_sys::ScanKey,
    _nkeys: i32,
    orderbys: pg_sys::ScanKey,
    norderbys: i32,
) {
    // SAFETY: `scan` is ours (ambeginscan); orderbys has `norderbys` keys, copied into the
    // descriptor's own array as other AMs do.
    let (state, key) = unsafe {
        if !orderbys.is_null() && norderbys > 0 {
            std::ptr::copy(orderbys, (*scan).orderByData, norderbys as usize);
        }
        let state = &mut *(*scan).opaque.cast::<ScanState>();
        let key = ((*scan).numberOfOrderBys > 0).then(|| *(*scan).orderByData);
        (state, key)
    };
    state.started = false;
    state.returned.clear();
    state.pending.clear();
    state.buffered.clear();
    state.buffered_tids.clear();
    state.candidates.clear();
    state.candidates_truncated = false;
    state.visited_places.clear();
    state.buffer_ranked = 0;
    state.graph_tids.clear();
    state.query = match key {
        Some(k) if k.sk_flags & pg_sys::SK_ISNULL as i32 == 0 => Some(datum_vector(k.sk_argument).to_vec()),
        _ => None,
    };
}

/// Queues the search's results that were not returned yet, closest first.
fn queue_new_results(state: &mut ScanState) {
    let ScanState { search, returned, pending, .. } = state;
    pending.extend(search.results().filter(|(id, _)| !returned.contains(id)));
}

/// Reads the insert buffer's PENDING and LINKING rows with their distances to `query`;
/// returns the metapage it read. Scales `query` to unit length first when the index stores
/// unit vectors ([`Meta::stored_vector`]). An ERROR if the index has other dimensions than
/// `query`.
fn read_buffer(state: &mut ScanState, query: &mut [f32]) -> Meta {
    let meta = read_meta(state.index);
    if meta.dims as usize != query.len() {
        if meta.dims != 0 {
            pgrx::ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
                format!("different vector dimensions {} and {}", meta.dims, query.len())
            );
        }
        return meta;
    }
    let ranking = meta.ranking();
    if ranking.unit_cosine {
        normalize(query);
    }
    let query = &*query;
    if meta.buffer_tail == NO_BLOCK && meta.merge_tail == NO_BLOCK {
        return meta;
    }
    if ranking.metric == Metric::L1 {
        // L1 has no code estimate (the codes estimate L2): every row is ranked exactly.
        let ScanState { buffered, buffered_tids, .. } = state;
        insert_buffer::for_each_entry(state.index, &meta, |_, h, _, v| {
            if (h.state == PENDING || h.state == LINKING) && buffered_tids.insert(tid_key(&tid_of(&h.tid))) {
                buffered.push((not_nan(ranking.rank(v, query)), tid_of(&h.tid)));
            }
        });
    } else {
        estimate_buffer(state, query, &meta);
    }
    rank_buffer(state, query, &meta);
    meta
}

/// Estimates every PENDING or LINKING buffered row from its code (from this backend's copy
/// of the complete pages, `buffer_codes`) and keeps in `candidates` the best by estimate, as
/// many as this round may rank exactly (BUFFER_RERANK times the list size): a bounded heap,
/// so that a query with tens of thousands of rows buffered compares each estimate with the
/// heap's worst and keeps few. A wider round that needs more estimates again, leaving out
/// the rows already looked at.
fn estimate_buffer(state: &mut ScanState, query: &[f32], meta: &Meta) {
    let quantizer = cached_quantizer(state.index, meta);
    let mut prepared = PreparedQuery::default();
    quantizer.prepare(query, &mut prepared);
    let keep = BUFFER_RERANK * state.list_size;
    let mut best = std::collections::BinaryHeap::with_capacity(keep.min(1 << 12));
    // The heap's worst estimate once it is full: rows estimated at or past it are left
    // (whole FastScan blocks at once), and then some rows were left out.
    let worst = std::cell::Cell::new(f32::INFINITY);
    let visited = &state.visited_places;
    buffer_codes::for_each_estimate(state.index, meta, &quantizer, &prepared, &worst, |place, estimate| {
        if !visited.is_empty() && visited.contains(&(place.block, place.offset)) {
            return;
        }
        let candidate = BufferCandidate { estimate, place };
        if best.len() < keep {
            best.push(candidate);
        } else if let Some(mut top) = best.peek_mut() {
            *top = candidate;
        }
        if best.len() == keep {
            worst.set(best.peek().map_or(f32::INFINITY, |c| c.estimate));
        }
    });
    let truncated = best.len() == keep;
    state.candidates = best.into_vec();
    state.candidates_truncated = truncated;
}

fn not_nan(d: f32) -> f32 {
    if d.is_nan() { f32::INFINITY } else { d }
}

/// Ranks exactly the best buffered candidates by estimate, up to BUFFER_RERANK times the
/// list size in all: reads their pages again (a page at a time) and keeps the rows still
/// PENDING or LINKING that the graph did not return. A row whose page was released
/// meanwhile was merged: the graph holds it.
fn rank_buffer(state: &mut ScanState, query: &[f32], meta: &Meta) {
    let ranking = meta.ranking();
    let dims = meta.dims as usize;
    let by_estimate = |a: &BufferCandidate, b: &BufferCandidate| a.estimate.total_cmp(&b.estimate);
    loop {
        let budget = (BUFFER_RERANK * state.list_size).saturating_sub(state.buffer_ranked);
        if budget > 0 && state.candidates.is_empty() && state.candidates_truncated {
            // A wider round, or rows looked at did not count: the next best estimates.
            estimate_buffer(state, query, meta);
        }
        let want = budget.min(state.candidates.len());
        if want == 0 {
            break;
        }
        if want < state.candidates.len() {
            state.candidates.select_nth_unstable_by(want - 1, by_estimate);
        }
        let mut chosen: Vec<EntryPlace> = state.candidates.drain(..want).map(|c| c.place).collect();
        chosen.sort_unstable_by_key(|p| (p.block, p.offset));
        if state.candidates_truncated {
            // Only a later estimate (of a truncated heap) must leave these rows out.
            state.visited_places.extend(chosen.iter().map(|p| (p.block, p.offset)));
        }
        let ScanState { buffered, buffered_tids, graph_tids, index, buffer_ranked, .. } = state;
        for page in chosen.chunk_by(|a, b| a.block == b.block) {
            let offsets: Vec<u16> = page.iter().map(|p| p.offset).collect();
            let mut done = Vec::new();
            insert_buffer::visit_at(*index, page[0].block, page[0].segment, dims, &offsets, |offset, h, v| {
                let tid = tid_of(&h.tid);
                // A MERGED entry is still returned from here: its node may have been linked
                // where the graph search (started before) no longer looks; the graph skips
                // the TIDs the buffer ranked, so the row comes back once either way.
                if h.state == DEAD {
                    done.push(offset);
                } else if !graph_tids.contains(&tid_key(&tid)) && buffered_tids.insert(tid_key(&tid)) {
                    buffered.push((not_nan(ranking.rank(v, query)), tid));
                    *buffer_ranked += 1;
                }
            });
            // Deleted since their codes were read: no later scan needs them.
            buffer_codes::forget(*index, meta, page[0], &done);
        }
        // Rows deleted (or returned by the graph) since their codes were read did not count:
        // the loop ranks as many more, so the buffer's share of the list stays whole.
    }
    state.buffered.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
}

/// `amgettuple`.
#[pg_guard]
pub unsafe extern "C-unwind" fn amgettuple(scan: pg_sys::IndexScanDesc, _dir: pg_sys::ScanDirection::Type) -> bool {
    // SAFETY: `scan` is ours (ambeginscan).
    let state = unsafe { &mut *(*scan).opaque.cast::<ScanState>() };
    let Some(mut query) = state.query.take() else { return false };
    let found = next_tuple(state, &mut query);
    state.query = Some(query);
    match found {
        Some(tid) => {
            // SAFETY: `scan` is valid; we return one heap TID with exact ordering.
            unsafe {
                (*scan).xs_heaptid = tid;
                (*scan).xs_recheck = false;
                (*scan).xs_recheckorderby = false;
            }
            true
        }
        None => false,
    }
}

/// The next row of the scan; `query` is the ORDER BY argument, scaled by the first call
/// as the index stores vectors (`read_buffer`).
fn next_tuple(state: &mut ScanState, query: &mut [f32]) -> Option<pg_sys::ItemPointerData> {
    if !state.started {
        state.started = true;
        state.list_size = SEARCH_LIST_SIZE.get().max(1) as usize;
        let first = read_buffer(state, query);
        // The graph as it is now, after the buffer was read: entries merged meanwhile are
        // in it (a merge may also have given an empty graph its entry point). With no
        // buffer pages there was nothing to merge: the metapage read is still current.
        let no_buffer = first.buffer_tail == NO_BLOCK && first.merge_tail == NO_BLOCK;
        let meta = if no_buffer { first } else { read_meta(state.index) };
        state.entry = if meta.dims as usize == query.len() { meta.entry } else { NO_NODE };
        if state.entry != NO_NODE {
            let store = state.store.insert(PageStore::new(state.index, &meta));
            store.keep_tids();
            state.search.start(store, query, state.entry);
            state.search.run(store, query, state.list_size);
            queue_new_results(state);
        }
    }
    let has_graph = state.entry != NO_NODE;
    loop {
        // Return the closer of the next graph row and the next buffered row.
        let graph_next = state.pending.front().map(|&(_, d)| d);
        let buffer_next = state.buffered.last().map(|&(d, _)| d);
        match (graph_next, buffer_next) {
            (Some(g), Some(b)) if b < g => return state.buffered.pop().map(|(_, tid)| tid),
            (None, Some(_)) if !has_graph || !can_widen(state) => return state.buffered.pop().map(|(_, tid)| tid),
            (Some(_), _) => {
                let (id, _) = state.pending.pop_front()?;
                if !state.returned.insert(id) {
                    continue;
                }
                let store = state.store.as_ref()?;
                // Expanded nodes' TIDs were kept when their pages were read.
                let tid = match store.expanded_tid(id) {
                    Some(tid) => tid,
                    None => store.read(id, |n| (!n.is_deleted()).then(|| n.heap_tid())),
                };
                if let Some(tid) = tid.filter(|t| !state.buffered_tids.contains(&tid_key(t))) {
                    state.graph_tids.insert(tid_key(&tid));
                    return Some(tid);
                }
            }
            (None, _) => {
                // Widen: the graph's list and the buffer's ranked rows.
                let graph_can = has_graph && can_widen(state);
                let max = MAX_SEARCH_LIST_SIZE.get().max(1) as usize;
                let buffer_left = !state.candidates.is_empty() || state.candidates_truncated;
                let buffer_can = buffer_left && state.buffer_ranked < BUFFER_RERANK * max;
                if !graph_can && !buffer_can {
                    return None;
                }
                pgrx::check_for_interrupts!();
                state.list_size = (state.list_size * 2).min(max);
                if graph_can {
                    let store = state.store.as_mut()?;
                    state.search.run(store, query, state.list_size);
                    queue_new_results(state);
                }
                if buffer_left {
                    let meta = read_meta(state.index);
                    rank_buffer(state, query, &meta);
                }
            }
        }
    }
}

/// Whether the graph search can be widened for more rows.
fn can_widen(state: &ScanState) -> bool {
    let max = MAX_SEARCH_LIST_SIZE.get().max(1) as usize;
    state.list_size < max && !state.search.is_exhausted()
}

/// `amendscan`: the state goes with the scan's memory context.
#[pg_guard]
pub unsafe extern "C-unwind" fn amendscan(_scan: pg_sys::IndexScanDesc) {}
