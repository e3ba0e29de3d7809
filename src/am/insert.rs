//! `aminsert`: add one row, to the insert buffer (`buffer = on`, the default) or to the
//! graph in place (`buffer = off`).
//!
//! Buffered: the row's entry is appended to the buffer's last page (see
//! `storage::insert_buffer` for its locks), and when that fills a page the buffer's size is
//! looked at: past `buffer_threshold` a background merge is requested (`worker`), past
//! `omen.insert_buffer_cap` this backend merges one batch itself, beside the workers
//! ([`merge_past_cap`]).
//!
//! In place, locks in order, never two at once (see `storage`): the new node's page
//! (append), the metapage (only while the index has no entry point or no dimensions yet),
//! then one page at a time while searching and while adding back-edges.

use omen_core::distance::{Metric, norm};
use omen_core::graph::{self, BeamSearch};
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::merge::{BATCH, MergeCursor, Part, merge_in_free_slot, merge_some};
use super::options::{INSERT_BUFFER_CAP, buffer_options};
use super::worker::{merge_parts, request_merge};
use crate::storage::buffer::relation_file;
use crate::storage::insert_buffer;
use crate::storage::layout::*;
use crate::storage::merge_lock::{lock_merge, unlock_merge};
use crate::storage::page_store::{PageStore, cached_quantizer, index_name, read_meta, update_meta};
use crate::types::fmgr::datum_vector;

/// `aminsert`.
#[pg_guard]
pub unsafe extern "C-unwind" fn aminsert(
    index: pg_sys::Relation,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    heap_tid: pg_sys::ItemPointer,
    _heap: pg_sys::Relation,
    _check_unique: pg_sys::IndexUniqueCheck::Type,
    _index_unchanged: bool,
    _index_info: *mut pg_sys::IndexInfo,
) -> bool {
    // SAFETY: one key column: values[0]/isnull[0] are this row's key, heap_tid its TID.
    let (datum, null, tid) = unsafe { (*values, *isnull, *heap_tid) };
    if !null {
        let v = datum_vector(datum);
        let (buffered, threshold) = buffer_options(index);
        // A vector too large for a buffer page (past about 2,000 dimensions) goes into the
        // graph in place.
        if buffered && insert_buffer::entries_per_page(v.len()) > 0 {
            insert_buffered(index, &tid, v, threshold);
        } else {
            insert_vector(index, &tid, v);
        }
    }
    false
}

/// Appends `v` with heap TID `tid` to the insert buffer of `index`, then starts or does a
/// merge when the buffer has grown past `threshold` or the cap.
fn insert_buffered(index: pg_sys::Relation, tid: &pg_sys::ItemPointerData, v: &[f32], threshold: usize) {
    let Some(meta) = checked_meta(index, v) else { return };
    let v = &*meta.stored_vector(v);
    let quantizer = cached_quantizer(index, &meta);
    let mut code = vec![0u8; insert_buffer::code_bytes(v.len())];
    quantizer.encode(v, &mut code);
    let appended = insert_buffer::append(index, meta, tid, &code, v);
    if !appended.new_page {
        return;
    }
    let cap = INSERT_BUFFER_CAP.get().max(1) as usize;
    if appended.capacity_in_use >= cap {
        merge_past_cap(index, &meta, appended.capacity_in_use, cap);
    } else if appended.capacity_in_use >= threshold || appended.merge_waiting {
        request_merge(index);
    }
}

/// Back-pressure, for an insert that filled a page of a buffer holding `in_use` entries,
/// past `cap`: this insert merges one batch in a free merge slot, beside the background
/// workers (they keep theirs, and are asked for). Only when every slot is taken and the
/// buffer is past twice the cap does it wait for every slot, to merge alone. (Taking every
/// slot at the cap, as it used to, left the workers none: they waited and exited, and over
/// a million-row stream the inserting backend merged 1.4 of 2.1 million entries itself
/// while the other core idled.)
fn merge_past_cap(index: pg_sys::Relation, meta: &Meta, in_use: usize, cap: usize) {
    let merged = with_cursors(index, meta, |cursors| merge_in_free_slot(index, cursors, BATCH).0);
    if merged > 0 {
        pgrx::log!(
            "omen index \"{}\": the insert buffer holds about {in_use} entries, past omen.insert_buffer_cap ({cap}); \
             this insert merged a batch itself",
            index_name(index)
        );
        request_merge(index);
        return;
    }
    if in_use < cap.saturating_mul(2) {
        return; // every slot is merging
    }
    pgrx::log!(
        "omen index \"{}\": the insert buffer holds about {in_use} entries, past twice omen.insert_buffer_cap \
         ({cap}); this insert waits for the merges and merges a batch itself",
        index_name(index)
    );
    lock_merge(index);
    merge_some(index, &mut None, BATCH, 1, Part::WHOLE);
    unlock_merge(index);
}

std::thread_local! {
    /// This backend's merge cursors, one per merge slot, for each index it merged past the
    /// cap (keyed by the index, its build and its file): a fresh cursor walks the merge
    /// segment's page chain (at 784 dimensions and the default cap, tens of thousands of
    /// pages) before it merges a batch, and the next insert past the cap goes on where the
    /// last one stopped.
    static CURSORS: std::cell::RefCell<Vec<(CursorKey, Vec<Option<MergeCursor>>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

type CursorKey = (pg_sys::Oid, i64, u32);

/// Indexes whose cursors a backend keeps.
const CACHED_CURSORS: usize = 4;

/// Calls `f` with this backend's merge cursors of `index` (as many as there are merge
/// slots now).
fn with_cursors<R>(index: pg_sys::Relation, meta: &Meta, f: impl FnOnce(&mut [Option<MergeCursor>]) -> R) -> R {
    // SAFETY: `index` is an open relation.
    let key = (unsafe { (*index).rd_id }, meta.build_id, relation_file(index).1);
    let slots = merge_parts();
    let mut cursors = CURSORS.with_borrow_mut(|c| match c.iter().position(|(k, _)| *k == key) {
        Some(i) => c.remove(i).1,
        None => Vec::new(),
    });
    cursors.resize_with(slots, || None);
    let r = f(&mut cursors);
    // Put back only after `f` returned: an ERROR inside it leaves the cursors out, and the
    // next insert starts afresh.
    CURSORS.with_borrow_mut(|c| {
        c.retain(|(k, _)| k.0 != key.0);
        if c.len() >= CACHED_CURSORS {
            c.remove(0);
        }
        c.push((key, cursors));
    });
    r
}

/// The metapage, after fixing the index's dimensions with the first vector if it was built
/// empty without them; None when `v` is not indexed (a zero vector under cosine); an ERROR
/// when its dimensions differ from the index's.
fn checked_meta(index: pg_sys::Relation, v: &[f32]) -> Option<Meta> {
    let mut meta = read_meta(index);
    if meta.metric() == Metric::Cosine && norm(v) == 0.0 {
        return None; // zero vectors are not indexed for cosine distance (see build)
    }
    if meta.dims == 0 {
        // The first vector of an index built empty on a column without typmod fixes the
        // dimensions.
        // Nothing is stored yet: the slack degree is chosen now, as a build with known
        // dimensions chooses it.
        let mut params = meta.params();
        let layout = Layout::for_new_index(v.len(), &mut params);
        update_meta(index, |m| {
            if m.dims == 0 {
                m.slack_degree = params.slack_degree() as u32;
                m.dims = v.len() as u32;
                m.node_size = layout.node_size as u32;
                m.nodes_per_page = layout.nodes_per_page as u32;
                m.code_bytes = layout.code_bytes as u32;
                m.vector_size = layout.vector_size as u32;
                m.vectors_per_page = layout.vectors_per_page as u32;
            }
        });
        meta = read_meta(index);
    }
    if v.len() != meta.dims as usize {
        pgrx::ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("expected {} dimensions, not {} (omen index \"{}\")", meta.dims, v.len(), index_name(index))
        );
    }
    Some(meta)
}

/// Inserts `v` with heap TID `tid` into the graph of `index`.
pub fn insert_vector(index: pg_sys::Relation, tid: &pg_sys::ItemPointerData, v: &[f32]) {
    let Some(mut meta) = checked_meta(index, v) else { return };
    let v = &*meta.stored_vector(v);
    let mut store = PageStore::new(index, &meta);
    // The insert's prunes read the same candidates' vectors again and again.
    store.cache_vectors();
    let id = store.append(tid, v);
    if meta.entry == NO_NODE {
        let mut became_entry = false;
        update_meta(index, |m| {
            if m.entry == NO_NODE {
                m.entry = id;
                became_entry = true;
            }
        });
        if became_entry {
            return;
        }
        meta = read_meta(index);
    }
    let params = meta.params();
    let mut search = BeamSearch::new();
    graph::insert(&mut store, id, v, meta.entry, &params, &mut search);
}
