//! `ambulkdelete` / `amvacuumcleanup`: deletes repaired in place (IP-DiskANN).
//!
//! 1. Mark: every node whose heap row is dead gets the deleted flag (it stays traversable,
//!    is never returned). Nodes marked by an earlier VACUUM that did not finish (a crash,
//!    a cancel) are picked up again here.
//! 2. Entry point: if it is deleted, the closest live node to it becomes the entry.
//! 3. Repair: for each deleted node, a search toward its vector finds its in-neighbours
//!    among the visited nodes; each gets edges to the closest of the search's live results
//!    (`omen_core::graph::repair_deleted`).
//! 4. Sweep: edges to the deleted nodes are dropped everywhere; then (a second pass, over
//!    their pages only) the nodes become free slots, and the free space map learns which
//!    pages have free slots, so inserts reuse them. A crash between or within the passes
//!    leaves no edge to a free slot.
//! 5. Reachability: a live node left without a path from the entry point (its in-edges all
//!    came from deleted nodes) is linked back from the closest reachable node with room.
//!
//! Before step 1, insert-buffer entries of dead rows are marked DEAD (never merged, never
//! returned). `ambulkdelete` holds the index's merge lock throughout (see `merge`), so no
//! merge runs beside it. At the end (`amvacuumcleanup`) a VACUUM merges what the buffer
//! holds; autovacuum does so only when no merge worker runs or can be started, which is how
//! the buffer drains when `max_worker_processes` is used up.
//!
//! Every page change is WAL-logged with GenericXLog, one page lock at a time. A VACUUM that
//! finds nothing to delete only reads the index (no page is written).

use std::collections::HashSet;

use omen_core::graph::{self, BeamSearch, GraphStore, NodeId};
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::merge::merge_all;
use crate::storage::buffer::block_count;
use crate::storage::insert_buffer::{self, DEAD, LINKING, PENDING};
use crate::storage::layout::*;
use crate::storage::merge_lock::{lock_merge, unlock_merge};
use crate::storage::page_store::{PageStore, read_meta, record_free_slots, update_meta};

/// Repair search list size l_d, and edges given to each in-neighbour (c in the paper).
/// 64, the build's list size: each in-neighbour found computes its distance to every
/// result of the search, so the repair's cost grows with the square of this size (128
/// before; `make bench-churn` compares the VACUUM times with pgvector's).
const REPAIR_LIST_SIZE: usize = 64;
const REPAIR_EDGES: usize = 3;

/// A zeroed IndexBulkDeleteResult when PostgreSQL passed none.
fn stats_or_new(stats: *mut pg_sys::IndexBulkDeleteResult) -> *mut pg_sys::IndexBulkDeleteResult {
    if stats.is_null() {
        // SAFETY: palloc0 of the struct VACUUM expects back.
        unsafe { pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBulkDeleteResult>()).cast() }
    } else {
        stats
    }
}

/// Sleeps per vacuum_cost_delay and checks for interrupts.
fn delay_point() {
    // SAFETY: plain calls into VACUUM's cost accounting, from the vacuuming backend.
    #[cfg(any(feature = "pg15", feature = "pg16"))]
    unsafe {
        pg_sys::vacuum_delay_point()
    };
    #[cfg(feature = "pg18")]
    // SAFETY: as above.
    unsafe {
        pg_sys::vacuum_delay_point(false)
    };
}

/// `ambulkdelete`.
#[pg_guard]
pub unsafe extern "C-unwind" fn ambulkdelete(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
    callback: pg_sys::IndexBulkDeleteCallback,
    callback_state: *mut std::ffi::c_void,
) -> *mut pg_sys::IndexBulkDeleteResult {
    let stats = stats_or_new(stats);
    // SAFETY: VACUUM passes a valid info with the open index.
    let index = unsafe { (*info).index };
    lock_merge(index);
    bulk_delete(index, stats, callback, callback_state);
    unlock_merge(index);
    stats
}

/// The work of `ambulkdelete`, with the merge lock held.
fn bulk_delete(
    index: pg_sys::Relation,
    stats: *mut pg_sys::IndexBulkDeleteResult,
    callback: pg_sys::IndexBulkDeleteCallback,
    callback_state: *mut std::ffi::c_void,
) {
    let mut meta = read_meta(index);
    if meta.dims == 0 {
        return;
    }
    let mut store = PageStore::new(index, &meta);
    // Repairs read the same neighbourhoods' vectors again and again; liveness no longer
    // changes once step 1 has marked the dead rows' nodes.
    store.cache_vectors();

    // 0. Buffered entries of dead rows. (A LINKING entry's node is marked in step 1.)
    let mut dead_entries = 0f64;
    for block in insert_buffer::all_pages(index, &meta) {
        delay_point();
        // Every merge slot is held: no segment is released while this runs.
        insert_buffer::edit_entries(index, block, None, |headers| {
            let mut changed = false;
            for h in headers.iter_mut().filter(|h| h.state == PENDING || h.state == LINKING) {
                let mut tid = tid_of(&h.tid);
                // SAFETY: the callback and its state come from VACUUM for this index.
                if callback.is_some_and(|cb| unsafe { cb(&mut tid, callback_state) }) {
                    h.state = DEAD;
                    changed = true;
                    dead_entries += 1.0;
                }
            }
            changed
        });
    }
    // SAFETY: `stats` is valid (above).
    unsafe { (*stats).tuples_removed += dead_entries };

    // 1. Mark. Pages are read under a share lock; only a page holding a dead row's node (or
    //    a node an unfinished VACUUM left deleted) is locked exclusively and rewritten.
    let mut deleted_ids: Vec<NodeId> = Vec::new();
    let mut removed = 0f64;
    let is_dead = |node: &crate::storage::page_store::NodeRef| {
        let mut tid = node.heap_tid();
        // SAFETY: the callback and its state come from VACUUM for this index.
        callback.is_some_and(|cb| unsafe { cb(&mut tid, callback_state) })
    };
    for block in FIRST_NODE_BLOCK..block_count(index) {
        delay_point();
        let touched =
            store.read_page(block, |nodes| nodes.iter().any(|n| !n.is_free() && (n.is_deleted() || is_dead(n))));
        if !touched {
            continue;
        }
        store.edit_page(block, |block, nodes| {
            let mut changed = false;
            for (i, node) in nodes.iter_mut().enumerate() {
                let id = node_id(block, i as u16 + 1);
                if node.is_free() {
                    continue;
                }
                if node.is_deleted() {
                    deleted_ids.push(id);
                } else if is_dead(node) {
                    node.header.flags |= FLAG_DELETED;
                    node.header.tid = [0; 3];
                    deleted_ids.push(id);
                    removed += 1.0;
                    changed = true;
                }
            }
            changed
        });
    }
    // SAFETY: `stats` is valid (above).
    unsafe { (*stats).tuples_removed += removed };
    if deleted_ids.is_empty() {
        return;
    }
    // Their vectors, from their vector records (kept until the slot is reused).
    let deleted: Vec<(NodeId, Vec<f32>)> = deleted_ids
        .into_iter()
        .map(|id| {
            let mut v = Vec::new();
            store.vector(id, &mut v);
            (id, v)
        })
        .collect();
    let gone: HashSet<NodeId> = deleted.iter().map(|(id, _)| *id).collect();
    let params = meta.params();
    let mut search = BeamSearch::new();

    // 2. Entry point.
    if gone.contains(&meta.entry) {
        let entry_vec = &deleted.iter().find(|(id, _)| *id == meta.entry).expect("entry is deleted").1;
        let replacement = graph::replacement_entry(&mut store, meta.entry, entry_vec, REPAIR_LIST_SIZE, &mut search)
            .or_else(|| any_live_node(&store));
        update_meta(index, |m| m.entry = replacement.unwrap_or(NO_NODE));
        meta = read_meta(index);
    }

    // 3. Repair.
    if meta.entry != NO_NODE {
        for (id, vec) in &deleted {
            delay_point();
            graph::repair_deleted(
                &mut store,
                *id,
                vec,
                meta.entry,
                &params,
                REPAIR_LIST_SIZE,
                REPAIR_EDGES,
                &mut search,
            );
        }
    }

    // 4. Sweep, in two passes, so that no crash leaves an edge to a free slot: (a) edges to
    //    the deleted nodes are dropped everywhere, theirs included (they stay marked: a
    //    VACUUM after a crash here finds them in step 1 and sweeps again); (b) then they
    //    become free slots. (One pass that freed each page's deleted nodes as it went left,
    //    after a crash in the middle, edges from the pages not swept yet to free slots.)
    //    Both sleep per vacuum_cost_delay between pages, never with a page locked.
    let layout = store.layout;
    for block in FIRST_NODE_BLOCK..block_count(index) {
        delay_point();
        store.edit_page(block, |block, nodes| {
            let mut changed = false;
            for node in nodes.iter_mut().filter(|n| !n.is_free()) {
                // Ids and their codes move together.
                changed |= node.retain_neighbors(|n| !gone.contains(&n));
            }
            record_free_slots(index, block, nodes.iter().filter(|n| n.is_free()).count(), &layout);
            changed
        });
    }
    let mut blocks: Vec<u32> = gone.iter().map(|&id| node_location(id).0).collect();
    blocks.sort_unstable();
    blocks.dedup();
    for block in blocks {
        delay_point();
        store.edit_page(block, |block, nodes| {
            for (i, node) in nodes.iter_mut().enumerate() {
                if gone.contains(&node_id(block, i as u16 + 1)) {
                    node.header.flags = FLAG_FREE;
                    node.header.neighbor_count = 0;
                }
            }
            record_free_slots(index, block, nodes.iter().filter(|n| n.is_free()).count(), &layout);
            true
        });
    }
    // SAFETY: propagates the per-page free space into the FSM's upper levels.
    unsafe { pg_sys::FreeSpaceMapVacuum(index) };

    // 5. Reachability: a live node whose only in-edges came from deleted nodes, and that the
    //    repair did not reconnect, is linked back from the closest reachable node with room.
    if meta.entry != NO_NODE {
        super::reachability::reconnect_unreachable(&mut store, meta.entry, &params, &mut search);
    }
}

/// Any live node, for an entry point when the search found none near the old one.
fn any_live_node(store: &PageStore) -> Option<NodeId> {
    let mut found = None;
    store.for_each_node(|id, node| {
        if found.is_none() && !node.is_deleted() {
            found = Some(id);
        }
    });
    found
}

/// `amvacuumcleanup`: merges the insert buffer, then counts pages, and live nodes after a
/// bulk delete.
#[pg_guard]
pub unsafe extern "C-unwind" fn amvacuumcleanup(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
) -> *mut pg_sys::IndexBulkDeleteResult {
    // SAFETY: VACUUM passes a valid info.
    let (index, analyze_only) = unsafe { ((*info).index, (*info).analyze_only) };
    if analyze_only {
        return stats;
    }
    // No ambulkdelete ran (an insert-only VACUUM, which autovacuum starts every
    // autovacuum_vacuum_insert_threshold rows): nothing was deleted, so the live nodes are
    // not counted again, and the count reported is the heap's, as an estimate (PostgreSQL
    // then leaves the index's pg_class row as it is). The count reads every node page: at a
    // million rows of 784 dimensions, 3.5 GB, in an autovacuum worker beside the inserts.
    let deleted_any = !stats.is_null();
    let stats = stats_or_new(stats);
    // Autovacuum leaves the buffer to a merge worker when one runs or can be started: a
    // merge of a large buffer would hold the autovacuum worker for minutes. A VACUUM
    // someone typed merges it now.
    // SAFETY: reads this process's backend type.
    let autovacuum = unsafe { pg_sys::MyBackendType } == pg_sys::BackendType::B_AUTOVAC_WORKER;
    if !autovacuum || !super::worker::ensure_worker(index) {
        lock_merge(index);
        merge_all(index);
        unlock_merge(index);
    }
    let meta = read_meta(index);
    let mut live = 0f64;
    if deleted_any && meta.dims > 0 {
        PageStore::new(index, &meta).for_each_node(|_, node| {
            if !node.is_deleted() {
                live += 1.0;
            }
        });
    }
    // SAFETY: `stats` is valid (above); VACUUM passes a valid info.
    unsafe {
        (*stats).num_pages = block_count(index);
        if deleted_any {
            (*stats).num_index_tuples = live;
        } else {
            (*stats).num_index_tuples = (*info).num_heap_tuples;
            (*stats).estimated_count = true;
        }
    }
    stats
}
