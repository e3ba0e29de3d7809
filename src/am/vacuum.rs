//! `ambulkdelete` / `amvacuumcleanup`.
//!
//! Nodes whose heap rows are dead are marked deleted, one page at a time under its
//! exclusive lock, WAL-logged with GenericXLog. A deleted node stays in the graph as a
//! waypoint (scans traverse it, never return it) so no edge dangles; repairing the graph
//! around it and reusing its slot come with the delete-repair work.

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::storage::layout::FLAG_DELETED;
use crate::storage::page_store::{PageStore, block_count, read_meta};

/// A zeroed IndexBulkDeleteResult when PostgreSQL passed none.
fn stats_or_new(stats: *mut pg_sys::IndexBulkDeleteResult) -> *mut pg_sys::IndexBulkDeleteResult {
    if stats.is_null() {
        // SAFETY: palloc0 of the struct VACUUM expects back.
        unsafe { pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBulkDeleteResult>()).cast() }
    } else {
        stats
    }
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
    let meta = read_meta(index);
    let store = PageStore::new(index, &meta);
    let Some(callback) = callback else { return stats };
    let mut removed = 0f64;
    store.edit_each_page(|_, node| {
        if node.is_deleted() {
            return false;
        }
        let mut tid = node.heap_tid();
        // SAFETY: the callback and its state come from VACUUM for this index.
        if unsafe { callback(&mut tid, callback_state) } {
            node.header.flags |= FLAG_DELETED;
            node.header.tid = [0; 3];
            removed += 1.0;
            true
        } else {
            false
        }
    });
    // SAFETY: `stats` is valid (above).
    unsafe {
        (*stats).tuples_removed += removed;
    }
    stats
}

/// `amvacuumcleanup`: counts pages and live nodes.
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
    let stats = stats_or_new(stats);
    let meta = read_meta(index);
    let store = PageStore::new(index, &meta);
    let mut live = 0f64;
    store.for_each_node(|_, node| {
        if !node.is_deleted() {
            live += 1.0;
        }
    });
    // SAFETY: `stats` is valid (above).
    unsafe {
        (*stats).num_pages = block_count(index);
        (*stats).num_index_tuples = live;
    }
    stats
}
