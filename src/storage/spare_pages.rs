//! Node pages a backend added to the index ahead of need.
//!
//! A merge at 784 dimensions adds a node page for every node (one node a page), so it took
//! the relation extension lock, which inserts adding buffer pages wait for, about 1,500
//! times a second. A backend that runs out of node pages with room now adds several at
//! once (one file extension, [`FreshPage::several`]), WAL-logs all but the one it needs
//! as empty node pages, and keeps their block numbers here for its next nodes. The run
//! starts at one page and doubles while this backend keeps needing more (up to
//! [`MAX_RUN`]), so a one-row insert still adds one page. A backend that ends with spares
//! leaves them as empty node pages (at most `MAX_RUN - 1`); any backend may fill one that
//! is among the index's last pages.
//!
//! Locks: the new pages are locked as they are added, and nothing links them, so nobody
//! else waits for them while they are; a spare is later locked like any node page.

use std::cell::RefCell;

use pgrx::pg_sys;

use super::buffer::{FreshPage, WriteGuard, block_count, init_page, relation_file};
use super::layout::PageKind;

/// Pages one extension adds at most.
const MAX_RUN: usize = 8;

/// This backend's spare node pages: the relation file they belong to, the blocks not yet
/// known to be full (the last is tried first), and the length of the next run.
struct Spares {
    file: u32,
    blocks: Vec<u32>,
    run: usize,
}

std::thread_local! {
    static SPARES: RefCell<Spares> = const { RefCell::new(Spares { file: 0, blocks: Vec::new(), run: 1 }) };
}

/// A node page with room for one more record, exclusively locked and registered with a
/// WAL record: one of this backend's spares for which `has_room` says yes (spares it says
/// no for are forgotten), else a page of a new run (the first of it; the others become
/// spares).
pub fn lock_spare_or_new(index: pg_sys::Relation, has_room: impl Fn(*const u8) -> bool) -> WriteGuard {
    let (_, file) = relation_file(index);
    let run = SPARES.with_borrow_mut(|s| {
        if s.file != file {
            *s = Spares { file, blocks: Vec::new(), run: 1 };
        }
        s.run
    });
    while let Some(block) = SPARES.with_borrow(|s| s.blocks.last().copied()) {
        // A TRUNCATE or REINDEX changes the file number; a block past the end was lost to
        // neither, but is checked before it is read all the same.
        if block < block_count(index) {
            let guard = WriteGuard::new(index, block);
            if has_room(guard.page()) {
                return guard;
            }
        }
        SPARES.with_borrow_mut(|s| s.blocks.pop());
    }
    let mut pages = FreshPage::several(index, run);
    let first = pages.remove(0);
    let mut spares = Vec::with_capacity(pages.len());
    // Empty node pages, four to a WAL record (GenericXLog's limit), logged as full images
    // (a few dozen bytes each: the empty middle of a standard page is left out).
    while !pages.is_empty() {
        let mut group: Vec<FreshPage> = pages.drain(pages.len().saturating_sub(4)..).collect();
        let mut guard = WriteGuard::fresh(index, group.remove(0));
        init_page(guard.page(), PageKind::Node);
        spares.push(guard.block());
        for page in group {
            let (block, image) = guard.also_fresh(page);
            init_page(image, PageKind::Node);
            spares.push(block);
        }
        guard.commit();
    }
    SPARES.with_borrow_mut(|s| {
        spares.sort_unstable_by(|a, b| b.cmp(a)); // the lowest block last: tried first
        s.blocks = spares;
        s.run = (run * 2).min(MAX_RUN);
    });
    let guard = WriteGuard::fresh(index, first);
    init_page(guard.page(), PageKind::Node);
    guard
}
