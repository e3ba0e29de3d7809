//! The insert buffer: pages of the index where `INSERT` appends (vector, heap TID) entries
//! for a background merge to add to the graph later.
//!
//! # Segments
//!
//! Buffer pages form chains, each page pointing at the page before it (`prev`). A chain is a
//! *segment* with an id stored in each of its pages. The metapage names two:
//!
//! - the *append segment* (`buffer_tail`): inserts add entries to its last page, and add a
//!   page when that one is full;
//! - the *merge segment* (`merge_tail`): a sealed former append segment that a merge is
//!   working through. No insert ever writes to it (double buffering).
//!
//! [`seal`] turns the append segment into the merge segment (and marks its last page
//! sealed, in the same WAL record, so an insert that read the metapage just before sees it
//! must go elsewhere). When every entry of the merge segment is merged, [`release_merged`]
//! puts its pages on the free list that new segments take pages from. Meanwhile each
//! merged batch adds the pages it went through to the metapage's `merge_pages_done`
//! ([`count_merged_pages`]), so that back-pressure (`omen.insert_buffer_cap`) counts only
//! what is left to merge.
//!
//! # Entries
//!
//! Fixed-size records: heap TID, state, node id, the vector's code, the vector. States move
//! one way: `PENDING` → `LINKING` (the node is in the graph with its out-edges; written in
//! the same WAL record as the node) → `MERGED` (back-edges added). VACUUM marks dead rows'
//! entries `DEAD`. A scan estimates the `PENDING` and `LINKING` entries from their codes
//! before it searches the graph, ranks the closest exactly (`am/scan.rs`, even if they are
//! `MERGED` by then), and skips graph nodes whose TID it took from the buffer, so a row is
//! never returned twice. A row is missed only where the search is approximate anyway (its
//! code ranked it past the list), or when a scan widens after the row's whole segment was
//! merged and released and the graph search, begun before, does not reach its node. A crash leaves each entry in one state; a merge picks
//! `PENDING` entries up from the start and `LINKING` ones at their back-edges.
//!
//! # Locks
//!
//! One buffer page at a time, except: the metapage, then one buffer page (new segment page,
//! sealing, releasing) or up to three pages just added to the index (to the free list), and
//! a node page, then the buffer page whose entry it merges. Nobody waits for the metapage
//! or a node page while holding a buffer page, so there is no cycle.

use pgrx::pg_sys;

use super::buffer::{FreshPage, ReadGuard, WriteGuard};
use super::buffer::{item as record, item_count, page_header};
use super::layout::*;
use super::page_store::read_meta;

/// Identifies a buffer page (in its special area).
const BUFFER_MAGIC: u16 = 0x0b0f;
/// Page flag: the last page of a sealed segment, closed to appends.
const SEALED: u16 = 1;

/// Entry states.
pub const PENDING: u8 = 0;
pub const LINKING: u8 = 1;
pub const MERGED: u8 = 2;
pub const DEAD: u8 = 3;

/// The special area at the end of every buffer page (node pages have none).
#[repr(C)]
#[derive(Clone, Copy)]
struct BufferOpaque {
    segment: u32,
    prev: u32,
    flags: u16,
    magic: u16,
    reserved: u32,
}

const OPAQUE_SIZE: usize = std::mem::size_of::<BufferOpaque>();

/// The fixed header of an entry; the vector follows.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EntryHeader {
    pub tid: [u16; 3],
    pub state: u8,
    pub reserved: u8,
    /// The graph node made from this entry (LINKING and MERGED).
    pub node: u32,
}

/// One entry, copied out of its page.
#[derive(Clone, Debug)]
pub struct Entry {
    pub block: u32,
    pub offset: u16,
    pub header: EntryHeader,
    pub vector: Vec<f32>,
}

impl Entry {
    pub fn heap_tid(&self) -> pg_sys::ItemPointerData {
        tid_of(&self.header.tid)
    }
}

/// Bytes of an entry's code: the index's code of its vector (`Quantizer::encode`), which
/// a scan estimates instead of reading the vector.
/// (0 for 0 dimensions: a reader of entry headers only.)
pub fn code_bytes(dims: usize) -> usize {
    if dims == 0 { 0 } else { omen_core::quant::Quantizer::code_bytes_for(dims) }
}

fn entry_size(dims: usize) -> usize {
    std::mem::size_of::<EntryHeader>() + code_bytes(dims) + 4 * dims
}

/// Entries of `dims` dimensions that fit on one buffer page.
pub fn entries_per_page(dims: usize) -> usize {
    (PAGE_SIZE - PAGE_HEADER - OPAQUE_SIZE) / (entry_size(dims).next_multiple_of(8) + ITEM_ID)
}

/// Whether `page` is an insert-buffer page.
pub fn is_buffer_page(page: *const u8) -> bool {
    let special = page_header(page).pd_special as usize;
    // SAFETY: the special area pd_special points at lies within the page.
    special == PAGE_SIZE - OPAQUE_SIZE && unsafe { opaque(page) }.magic == BUFFER_MAGIC
}

/// The special area of a buffer page.
///
/// # Safety
/// `page` must be a locked page with a special area of `OPAQUE_SIZE` bytes.
unsafe fn opaque<'a>(page: *const u8) -> &'a mut BufferOpaque {
    // SAFETY: the special area is the last OPAQUE_SIZE bytes, 8-aligned.
    unsafe { &mut *(page.add(PAGE_SIZE - OPAQUE_SIZE) as *mut BufferOpaque) }
}

fn init_buffer_page(page: *mut u8, segment: u32, prev: u32) {
    // SAFETY: `page` is a registered working copy of a whole page; PageInit lays out the
    // header and a special area of OPAQUE_SIZE bytes, which we then fill.
    unsafe {
        pg_sys::PageInit(page.cast(), PAGE_SIZE, OPAQUE_SIZE);
        *opaque(page) = BufferOpaque { segment, prev, flags: 0, magic: BUFFER_MAGIC, reserved: 0 };
    }
}

/// The metapage contents of a locked working copy.
///
/// # Safety
/// `page` must be the exclusively locked working copy of the metapage.
unsafe fn meta_mut<'a>(page: *mut u8) -> &'a mut Meta {
    // SAFETY: `Meta` sits right after the page header, which is MAXALIGN'd.
    unsafe { &mut *(page.add(PAGE_HEADER).cast::<Meta>()) }
}

/// The header of entry `offset` of a locked buffer page.
///
/// # Safety
/// `page` must be a locked buffer page and `offset` one of its line pointers.
unsafe fn entry_header<'a>(page: *const u8, offset: u16) -> &'a mut EntryHeader {
    // SAFETY: entries are MAXALIGN'd records starting with an EntryHeader.
    unsafe { &mut *(record(page, offset).cast::<EntryHeader>()) }
}

fn add_entry(page: *mut u8, rec: &[u8]) -> bool {
    // SAFETY: `page` is a locked working copy of a buffer page; PageAddItemExtended checks
    // the free space and returns 0 when the record does not fit.
    let off = unsafe {
        pg_sys::PageAddItemExtended(page.cast(), rec.as_ptr() as *mut _, rec.len(), pg_sys::InvalidOffsetNumber, 0)
    };
    off != 0
}

/// What an append did, for the caller to decide whether a merge is due.
pub struct Appended {
    /// The append added a page (the moment to look at the buffer's size).
    pub new_page: bool,
    /// Entries the buffer may hold now, counting whole pages: the append segment's, and the
    /// merge segment's that no merge has gone through yet ([`Meta::pages_in_use`]).
    pub capacity_in_use: usize,
    /// A merge segment is waiting (left by an interrupted merge, or being merged).
    pub merge_waiting: bool,
}

/// Appends the entry (`tid`, `code`, `vector`) to the append segment; WAL-logged. `meta`
/// is the metapage as the caller read it last.
pub fn append(
    index: pg_sys::Relation,
    meta: Meta,
    tid: &pg_sys::ItemPointerData,
    code: &[u8],
    vector: &[f32],
) -> Appended {
    let mut rec = vec![0u8; entry_size(vector.len())];
    let header = EntryHeader { tid: tid_words(tid), state: PENDING, reserved: 0, node: NO_NODE };
    // SAFETY: `rec` starts with room for an EntryHeader.
    unsafe { std::ptr::write_unaligned(rec.as_mut_ptr().cast::<EntryHeader>(), header) };
    let code_at = std::mem::size_of::<EntryHeader>();
    rec[code_at..code_at + code.len()].copy_from_slice(code);
    let vector_at = code_at + code_bytes(vector.len());
    for (bytes, x) in rec[vector_at..].chunks_exact_mut(4).zip(vector) {
        bytes.copy_from_slice(&x.to_ne_bytes());
    }
    let per_page = entries_per_page(vector.len());
    let mut known = Some(meta);
    // A page added before the metapage is locked (see below), kept across retries.
    let mut fresh: Option<FreshPage> = None;
    loop {
        let seen = known.take().unwrap_or_else(|| read_meta(index));
        if seen.buffer_tail != NO_BLOCK {
            let guard = WriteGuard::new(index, seen.buffer_tail);
            let page = guard.page();
            // SAFETY: the opaque area is read only after checking it is a buffer page.
            let open = is_buffer_page(page)
                && unsafe { opaque(page).segment == seen.buffer_segment && opaque(page).flags & SEALED == 0 };
            if open && add_entry(page, &rec) {
                guard.commit();
                if let Some(unused) = fresh {
                    free_fresh_pages(index, vec![unused]);
                }
                return Appended {
                    new_page: false,
                    capacity_in_use: seen.pages_in_use() as usize * per_page,
                    merge_waiting: seen.merge_tail != NO_BLOCK,
                };
            }
        }
        // The tail is missing, full or sealed: add a page, under the metapage lock. With no
        // free page to take, the index is extended first: an extension can wait for the
        // relation extension lock (a merge worker adding node pages may hold it), and every
        // scan reads the metapage.
        if fresh.is_none() && seen.free_buffer_tail == NO_BLOCK {
            // A growing buffer takes several pages at a time (one file extension); the
            // others go on the free list, where the next appends find them.
            let mut pages = FreshPage::several(index, extension_pages(seen.buffer_pages));
            fresh = pages.pop();
            free_fresh_pages(index, pages);
        }
        let mut guard = WriteGuard::new(index, META_BLOCK);
        // SAFETY: exclusively locked working copy of the metapage.
        let meta = unsafe { meta_mut(guard.page()) };
        if meta.buffer_tail != seen.buffer_tail || meta.buffer_segment != seen.buffer_segment {
            continue; // another insert added a page or a merge sealed the segment: retry
        }
        if meta.buffer_tail == NO_BLOCK {
            meta.buffer_segment = meta.next_segment;
            meta.next_segment += 1;
            meta.buffer_pages = 0;
        }
        let (block, page) = if let Some(f) = fresh.take() {
            guard.also_fresh(f)
        } else if meta.free_buffer_tail != NO_BLOCK {
            let block = meta.free_buffer_tail;
            let page = guard.also(index, block);
            // SAFETY: pages on the free list are buffer pages (released segments).
            meta.free_buffer_tail = unsafe { opaque(page).prev };
            (block, page)
        } else {
            guard.also_extend(index)
        };
        init_buffer_page(page, meta.buffer_segment, meta.buffer_tail);
        assert!(add_entry(page, &rec), "an empty buffer page holds an entry");
        meta.buffer_tail = block;
        meta.buffer_pages += 1;
        let appended = Appended {
            new_page: true,
            capacity_in_use: meta.pages_in_use() as usize * per_page,
            merge_waiting: meta.merge_tail != NO_BLOCK,
        };
        guard.commit();
        return appended;
    }
}

/// Pages the append segment adds at a time when no free page is left: one while the
/// segment is small (a table with a few inserts keeps a small index), up to 16 as it grows,
/// where each file extension costs an insert as much as its WAL does.
fn extension_pages(segment_pages: u32) -> usize {
    (segment_pages as usize / 4).clamp(1, 16)
}

/// Puts `pages`, pages `append` added but does not need yet, on the buffer free list (as
/// buffer pages of segment 0, which no segment ever is), so that no page is lost; three to
/// a WAL record (with the metapage, GenericXLog's limit of four pages).
fn free_fresh_pages(index: pg_sys::Relation, mut pages: Vec<FreshPage>) {
    while !pages.is_empty() {
        let mut guard = WriteGuard::new(index, META_BLOCK);
        // SAFETY: exclusively locked working copy of the metapage.
        let meta = unsafe { meta_mut(guard.page()) };
        for fresh in pages.drain(pages.len().saturating_sub(3)..) {
            let (block, page) = guard.also_fresh(fresh);
            init_buffer_page(page, 0, meta.free_buffer_tail);
            meta.free_buffer_tail = block;
        }
        guard.commit();
    }
}

/// Walks segment `segment` from `tail` back to its first page, calling `f(block, page)` on
/// each page under its share lock. The walk stops at a page of another segment (the
/// segment was released and its pages reused since `tail` was read).
fn walk_segment(index: pg_sys::Relation, tail: u32, segment: u32, mut f: impl FnMut(u32, *const u8)) {
    let mut block = tail;
    while block != NO_BLOCK {
        let guard = ReadGuard::new(index, block);
        let page = guard.page();
        // SAFETY: the opaque area is read only after checking it is a buffer page.
        if !is_buffer_page(page) || unsafe { opaque(page).segment } != segment {
            break;
        }
        f(block, page);
        // SAFETY: as above.
        block = unsafe { opaque(page).prev };
    }
}

/// The pages of segment `segment` ending at `tail`, oldest first.
pub fn segment_pages(index: pg_sys::Relation, tail: u32, segment: u32) -> Vec<u32> {
    let mut pages = Vec::new();
    walk_segment(index, tail, segment, |block, _| pages.push(block));
    pages.reverse();
    pages
}

/// Both segments' pages (append segment first), as the metapage names them now.
pub fn all_pages(index: pg_sys::Relation, meta: &Meta) -> Vec<u32> {
    let mut pages = segment_pages(index, meta.buffer_tail, meta.buffer_segment);
    pages.extend(segment_pages(index, meta.merge_tail, meta.merge_segment));
    pages
}

/// Where an entry is: its page, the segment that page belonged to, its line pointer.
#[derive(Clone, Copy, Debug)]
pub struct EntryPlace {
    pub block: u32,
    pub segment: u32,
    pub offset: u16,
}

/// Visits every entry of both segments as the metapage `meta` names them, one page at a
/// time under its share lock (each page is locked once): `f(place, header, code, vector)`.
pub fn for_each_entry(
    index: pg_sys::Relation,
    meta: &Meta,
    mut f: impl FnMut(EntryPlace, &EntryHeader, &[u8], &[f32]),
) {
    let dims = meta.dims as usize;
    for (tail, segment) in [(meta.buffer_tail, meta.buffer_segment), (meta.merge_tail, meta.merge_segment)] {
        walk_segment(index, tail, segment, |block, page| {
            visit_entries(page, dims, &mut |offset, h, code, v| f(EntryPlace { block, segment, offset }, h, code, v))
        });
    }
}

/// Calls `f(offset, header, code, vector)` for each entry of a locked buffer page.
fn visit_entries(page: *const u8, dims: usize, f: &mut impl FnMut(u16, &EntryHeader, &[u8], &[f32])) {
    let cb = code_bytes(dims);
    for off in 1..=item_count(page) as u16 {
        // SAFETY: a locked buffer page, offset within its line pointers; the code and the
        // vector follow the header within the record and live while the page is locked.
        unsafe {
            let code = record(page, off).add(std::mem::size_of::<EntryHeader>());
            let v = code.add(cb).cast::<f32>();
            f(off, entry_header(page, off), std::slice::from_raw_parts(code, cb), std::slice::from_raw_parts(v, dims));
        }
    }
}

/// One buffer page's PENDING and LINKING entries, as [`page_codes`] reads them.
pub struct PageCodes {
    /// The previous page of the segment (NO_BLOCK: the first).
    pub prev: u32,
    /// The page's segment was sealed when it was read: no entry will be added to it.
    pub sealed: bool,
    /// The entries' line pointers, parallel to `codes`.
    pub offsets: Vec<u16>,
    /// Their codes, `code_bytes(dims)` each.
    pub codes: Vec<u8>,
}

/// The PENDING and LINKING entries of buffer page `block` with their codes, read under its
/// share lock; None when the page is not (or no longer) in `segment`.
pub fn page_codes(index: pg_sys::Relation, block: u32, segment: u32, dims: usize) -> Option<PageCodes> {
    let guard = ReadGuard::new(index, block);
    let page = guard.page();
    if !in_segment(page, Some(segment)) {
        return None;
    }
    // SAFETY: a buffer page (checked above), share-locked.
    let (prev, sealed) = unsafe { (opaque(page).prev, opaque(page).flags & SEALED != 0) };
    let mut out = PageCodes { prev, sealed, offsets: Vec::new(), codes: Vec::new() };
    visit_entries(page, dims, &mut |offset, h, code, _| {
        if h.state == PENDING || h.state == LINKING {
            out.offsets.push(offset);
            out.codes.extend_from_slice(code);
        }
    });
    Some(out)
}

/// Calls `f(offset, header, vector)` for the entries at `offsets` (ascending) of buffer page
/// `place.block`, under its share lock; nothing when the page left `place.segment` (its
/// segment was merged and released since).
pub fn visit_at(
    index: pg_sys::Relation,
    block: u32,
    segment: u32,
    dims: usize,
    offsets: &[u16],
    mut f: impl FnMut(u16, &EntryHeader, &[f32]),
) {
    let guard = ReadGuard::new(index, block);
    let page = guard.page();
    if !in_segment(page, Some(segment)) {
        return;
    }
    let cb = code_bytes(dims);
    for &off in offsets.iter().filter(|&&o| o >= 1 && o as usize <= item_count(page)) {
        // SAFETY: as in visit_entries; the offset is one of the page's line pointers.
        unsafe {
            let v = record(page, off).add(std::mem::size_of::<EntryHeader>() + cb).cast::<f32>();
            f(off, entry_header(page, off), std::slice::from_raw_parts(v, dims));
        }
    }
}

/// Copies out the entries of buffer page `block` that `keep` accepts (by header); none
/// when the page no longer belongs to segment `segment` (released and reused meanwhile).
pub fn read_entries(
    index: pg_sys::Relation,
    block: u32,
    segment: u32,
    dims: usize,
    keep: impl Fn(&EntryHeader) -> bool,
) -> Vec<Entry> {
    let mut out = Vec::new();
    scan_entries(index, block, Some(segment), dims, |offset, header, vector| {
        if keep(header) {
            out.push(Entry { block, offset, header: *header, vector: vector.to_vec() });
        }
    });
    out
}

/// Whether `page` is a buffer page of `segment` (any segment for None).
fn in_segment(page: *const u8, segment: Option<u32>) -> bool {
    // SAFETY: the opaque area is read only after checking it is a buffer page.
    is_buffer_page(page) && segment.is_none_or(|s| unsafe { opaque(page).segment } == s)
}

/// Visits the entries of buffer page `block` under its share lock, without copying:
/// `f(offset, header, vector)`; nothing when the page is not in `segment` (when given).
fn scan_entries(
    index: pg_sys::Relation,
    block: u32,
    segment: Option<u32>,
    dims: usize,
    mut f: impl FnMut(u16, &EntryHeader, &[f32]),
) {
    let guard = ReadGuard::new(index, block);
    if in_segment(guard.page(), segment) {
        visit_entries(guard.page(), dims, &mut |offset, h, _, v| f(offset, h, v));
    }
}

/// Whether every entry on `pages` of segment `segment` is MERGED or DEAD.
pub fn all_merged(index: pg_sys::Relation, pages: &[u32], segment: u32) -> bool {
    let mut done = true;
    for &block in pages {
        scan_entries(index, block, Some(segment), 0, |_, h, _| done &= h.state == MERGED || h.state == DEAD);
        if !done {
            return false;
        }
    }
    true
}

/// Edits the entry headers of buffer page `block` under its exclusive lock; WAL-logs the
/// page if `f` returns true. Nothing happens when the page is not in `segment` (when
/// given).
pub fn edit_entries(
    index: pg_sys::Relation,
    block: u32,
    segment: Option<u32>,
    f: impl FnOnce(&mut [&mut EntryHeader]) -> bool,
) {
    let guard = WriteGuard::new(index, block);
    let page = guard.page();
    if !in_segment(page, segment) {
        return;
    }
    // SAFETY: exclusively locked working copy; distinct line pointers are distinct records.
    let mut headers: Vec<&mut EntryHeader> =
        (1..=item_count(page) as u16).map(|off| unsafe { entry_header(page, off) }).collect();
    if f(&mut headers) {
        drop(headers);
        guard.commit();
    }
}

/// Sets entry `offset` of the buffer page working copy `page` to LINKING with `node`, if the
/// page is still in segment `segment` (not released and reused meanwhile) and the entry
/// still PENDING. For the merge, inside the WAL record that writes the node.
pub fn mark_linking(page: *mut u8, segment: u32, offset: u16, node: u32) -> bool {
    if !in_segment(page, Some(segment)) || offset as usize > item_count(page) {
        return false;
    }
    // SAFETY: exclusively locked working copy, offset checked.
    let header = unsafe { entry_header(page, offset) };
    if header.state != PENDING {
        return false;
    }
    header.state = LINKING;
    header.node = node;
    true
}

/// Seals the append segment into the merge segment, unless one is already waiting.
/// Returns whether a merge segment exists afterwards.
pub fn seal(index: pg_sys::Relation) -> bool {
    let mut guard = WriteGuard::new(index, META_BLOCK);
    // SAFETY: exclusively locked working copy of the metapage.
    let meta = unsafe { meta_mut(guard.page()) };
    if meta.merge_tail != NO_BLOCK {
        return true;
    }
    if meta.buffer_tail == NO_BLOCK {
        return false;
    }
    let tail = guard.also(index, meta.buffer_tail);
    if is_buffer_page(tail) {
        // SAFETY: checked to be a buffer page.
        unsafe { opaque(tail).flags |= SEALED };
    }
    meta.merge_tail = meta.buffer_tail;
    meta.merge_segment = meta.buffer_segment;
    meta.merge_pages = meta.buffer_pages;
    meta.merge_pages_done = 0;
    meta.buffer_tail = NO_BLOCK;
    meta.buffer_pages = 0;
    // SAFETY: reads the clock.
    meta.merge_sealed_at = unsafe { pg_sys::GetCurrentTimestamp() };
    guard.commit();
    true
}

/// Records in the metapage that a merge went through `pages` more pages of the merge
/// segment `segment` (nothing if that is no longer the merge segment): an insert past
/// `omen.insert_buffer_cap` counts only the pages left. Without it, the whole merge segment
/// counted until its last page was merged: over a million-row stream into an index whose
/// merge fell behind, inserts merged batches themselves for as long as a whole segment took
/// to merge, and then for as long again not at all, and the median latency of those
/// 10,000-row stretches was twice that of the others.
pub fn count_merged_pages(index: pg_sys::Relation, segment: u32, pages: u32) {
    if pages == 0 {
        return;
    }
    let guard = WriteGuard::new(index, META_BLOCK);
    // SAFETY: exclusively locked working copy of the metapage.
    let meta = unsafe { meta_mut(guard.page()) };
    if meta.merge_tail == NO_BLOCK || meta.merge_segment != segment {
        return;
    }
    meta.merge_pages_done = meta.merge_pages_done.saturating_add(pages).min(meta.merge_pages);
    guard.commit();
}

/// Puts the merged segment `segment` (its pages oldest first) on the free list and records
/// the merge in the metapage (its MERGED entries, the time since it was sealed). Does
/// nothing if the segment is no longer the merge segment.
pub fn release_merged(index: pg_sys::Relation, segment: u32, pages: &[u32]) {
    let mut entries = 0u64;
    for &block in pages {
        scan_entries(index, block, Some(segment), 0, |_, h, _| entries += (h.state == MERGED) as u64);
    }
    let mut guard = WriteGuard::new(index, META_BLOCK);
    // SAFETY: exclusively locked working copy of the metapage.
    let meta = unsafe { meta_mut(guard.page()) };
    if meta.merge_tail == NO_BLOCK || meta.merge_segment != segment {
        return;
    }
    if let Some(&head) = pages.first() {
        let page = guard.also(index, head);
        if is_buffer_page(page) {
            // SAFETY: checked to be a buffer page.
            unsafe { opaque(page).prev = meta.free_buffer_tail };
            meta.free_buffer_tail = meta.merge_tail;
        }
    }
    meta.merge_tail = NO_BLOCK;
    meta.merge_pages = 0;
    meta.merge_pages_done = 0;
    meta.merges_done += 1;
    meta.merged_entries += entries;
    // SAFETY: reads the clock.
    meta.last_merge_end = unsafe { pg_sys::GetCurrentTimestamp() };
    let micros = (meta.last_merge_end - meta.merge_sealed_at).max(0);
    meta.last_merge_ms = (micros / 1000).min(u32::MAX as i64) as u32;
    guard.commit();
}
