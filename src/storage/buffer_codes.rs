//! A backend's copy of the insert buffer's codes, so that a scan estimates the buffered rows
//! without locking every buffer page again.
//!
//! Why it is safe to keep: a buffer page only ever gains entries while it is the last page
//! of the append segment and that segment is not sealed; after that its entries stay where
//! they are, and only their states change (PENDING → LINKING → MERGED, or DEAD). A page
//! leaves its segment only when the whole segment is released, and a reused page gets a new
//! segment id (ids are never reused). So a page read once, no longer the append tail (or
//! sealed), is cached under (block, segment) with its PENDING/LINKING entries' codes; a
//! later scan takes it from here, and whoever ranks an entry re-reads its page and checks
//! its state then (`am/scan.rs`). Segments the metapage no longer names are dropped.
//! Keyed by the index's file and build id (a REINDEX or TRUNCATE starts over). No lock is
//! held between calls; pages are read one at a time under their share lock.

use std::collections::HashMap;

use pgrx::pg_sys;

use super::buffer::relation_file;
use super::insert_buffer::{EntryPlace, PageCodes, code_bytes, page_codes};
use super::layout::{Meta, NO_BLOCK};

/// Bytes of codes one backend keeps at most (past it, pages are read each time).
const MAX_CACHED_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Cache {
    /// (relation file number, build id) of the index cached.
    key: (u32, i64),
    /// Complete pages by segment, then block.
    segments: HashMap<u32, HashMap<u32, PageCodes>>,
    bytes: usize,
}

std::thread_local! {
    static CACHE: std::cell::RefCell<Cache> = std::cell::RefCell::new(Cache::default());
}

/// Calls `f(place, code)` for every entry of both segments named by `meta` that was
/// PENDING or LINKING when its page was read (now or, for a complete page, by an earlier
/// call of this backend).
pub fn for_each_code(index: pg_sys::Relation, meta: &Meta, mut f: impl FnMut(EntryPlace, &[u8])) {
    let dims = meta.dims as usize;
    let cb = code_bytes(dims);
    let file = file_of(index);
    CACHE.with_borrow_mut(|cache| {
        if cache.key != (file, meta.build_id) {
            *cache = Cache { key: (file, meta.build_id), ..Cache::default() };
        }
        let named = [meta.buffer_segment, meta.merge_segment];
        let mut dropped = 0;
        cache.segments.retain(|s, pages| {
            let keep = named.contains(s);
            if !keep {
                dropped += pages.values().map(|p| p.codes.len()).sum::<usize>();
            }
            keep
        });
        cache.bytes -= dropped;
        for (tail, segment) in [(meta.buffer_tail, meta.buffer_segment), (meta.merge_tail, meta.merge_segment)] {
            let mut block = tail;
            while block != NO_BLOCK {
                let cached = cache.segments.get(&segment).and_then(|pages| pages.get(&block));
                let page = match cached {
                    Some(p) => p,
                    None => {
                        let Some(read) = page_codes(index, block, segment, dims) else { break };
                        // Complete: no entry will be added (not the append tail, or sealed).
                        let complete = read.sealed || block != meta.buffer_tail || segment != meta.buffer_segment;
                        if !(complete && cache.bytes + read.codes.len() <= MAX_CACHED_BYTES) {
                            visit(&read, block, segment, cb, &mut f);
                            block = read.prev;
                            continue;
                        }
                        cache.bytes += read.codes.len();
                        cache.segments.entry(segment).or_default().entry(block).or_insert(read)
                    }
                };
                visit(page, block, segment, cb, &mut f);
                block = page.prev;
            }
        }
    });
}

/// Drops the entries at `offsets` of `place`'s page from this backend's copy: they were
/// found MERGED or DEAD.
pub fn forget(index: pg_sys::Relation, meta: &Meta, place: EntryPlace, offsets: &[u16]) {
    if offsets.is_empty() {
        return;
    }
    let cb = code_bytes(meta.dims as usize);
    let key = (file_of(index), meta.build_id);
    CACHE.with_borrow_mut(|cache| {
        if cache.key != key {
            return;
        }
        let Some(page) = cache.segments.get_mut(&place.segment).and_then(|p| p.get_mut(&place.block)) else { return };
        let mut kept = 0;
        for i in 0..page.offsets.len() {
            if !offsets.contains(&page.offsets[i]) {
                page.offsets[kept] = page.offsets[i];
                page.codes.copy_within(i * cb..(i + 1) * cb, kept * cb);
                kept += 1;
            }
        }
        cache.bytes -= (page.offsets.len() - kept) * cb;
        page.offsets.truncate(kept);
        page.codes.truncate(kept * cb);
    });
}

/// The index's relation file number, which a REINDEX or TRUNCATE changes.
fn file_of(index: pg_sys::Relation) -> u32 {
    relation_file(index).1
}

fn visit(page: &PageCodes, block: u32, segment: u32, cb: usize, f: &mut impl FnMut(EntryPlace, &[u8])) {
    for (i, &offset) in page.offsets.iter().enumerate() {
        f(EntryPlace { block, segment, offset }, &page.codes[i * cb..(i + 1) * cb]);
    }
}
