//! Merging the insert buffer into the graph.
//!
//! A merge works through the merge segment (see `storage::insert_buffer`) in batches of
//! about [`BATCH`] entries. For each pending entry of a batch it searches the graph
//! (`choose_neighbors`, with the batch's entries placed so far as extra candidates, so
//! entries that arrived together find each other), then writes the node with its
//! out-edges and marks the entry LINKING in one WAL record. Then it adds the back-edges of
//! the whole batch and marks the batch's entries MERGED, page by page. When the segment is
//! done its pages go to the free list; if the append segment has entries it is sealed and
//! merged next. A merge keeps the vectors it reads in memory (`PageStore::cache_vectors`,
//! up to 64 MiB): the searches of one merge cross the same neighbourhoods again and again.
//!
//! Parts: up to `omen.max_merge_workers` background workers merge one index at once, each
//! holding a worker token and one merge slot (`storage::merge_lock`) and merging that
//! slot's [`Part`] of the merge segment: its pages at positions `slot, slot + parts, …`,
//! for one part more than the workers (`worker::merge_parts`), so that an insert past the
//! buffer's cap finds a part to merge a batch in. A worker whose part is
//! done goes on with any other free slot's part. Whoever finishes the last part releases
//! the segment (`release_merged` does it once: it checks the metapage still names the
//! segment). Two merges never link the same entry: the entry moves from PENDING to LINKING
//! in the WAL record that writes its node, under the buffer page's lock, and a merge that
//! finds it no longer PENDING writes no node. Graph writes of two merges interleave as
//! concurrent in-place inserts do (page locks, `storage`).
//!
//! `omen_flush`, VACUUM, `omen_check` and an insert past twice the buffer's cap take every
//! slot (`lock_merge`), waiting, and merge the whole segment alone. VACUUM holds them for
//! its whole run, so it never sees a merge half done.
//!
//! Yielding: a background worker's merge gives up its core between entries
//! ([`yield_between_entries`]) when another process waits for it, and within an entry at
//! most every [`YIELD_EVERY`] (between its page store's graph operations), at points where
//! it holds no page lock; while rows arrive it also sleeps there while the cores are busy
//! ([`sleep_while_cores_busy`]).

use omen_core::graph::{self, BeamSearch, NodeId};
use pgrx::pg_sys;

use crate::storage::insert_buffer::{self, Entry, LINKING, MERGED, PENDING};
use crate::storage::layout::*;
use crate::storage::merge_lock::{try_lock_slot, unlock_slot};
use crate::storage::page_store::{PageStore, read_meta, update_meta};

/// Entries merged together (their back-edges are added together).
pub const BATCH: usize = 64;

std::thread_local! {
    /// Whether this process's merges yield between entries (merge workers).
    static YIELDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Whether a yielding merge also sleeps while the cores are busy (see
    /// [`sleep_while_cores_busy`]).
    static SLEEP_WHILE_BUSY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// This process's recent looks at the cores (see [`give_up_core`]).
    static BUSY_LOOKS: std::cell::Cell<omen_core::cores::BusyAverage> =
        const { std::cell::Cell::new(omen_core::cores::BusyAverage::new()) };
}

/// Makes this process's yielding merges also sleep at each yield point while other
/// processes keep every core busy (`omen_core::cores::busy`), for at most
/// [`MAX_BUSY_WAIT`]. A merge worker turns it on while rows arrive in its index: a worker
/// that only yields stays runnable, and the scheduler then woke an inserting client behind
/// a query on one core while the other idled. Off once the index is quiet, so that the
/// buffer left at the end of a load is merged at full speed (a busy count then mostly
/// means the other worker and PostgreSQL's own background processes).
pub fn sleep_while_cores_busy(on: bool) {
    if on && !SLEEP_WHILE_BUSY.get() {
        // Looks from an earlier stretch of inserts say nothing about this one.
        BUSY_LOOKS.set(omen_core::cores::BusyAverage::new());
    }
    SLEEP_WHILE_BUSY.set(on);
}

/// Makes this process's merges call `sched_yield` between entries (set by the merge
/// workers). The scheduler otherwise lets a running process finish its time slice (a few
/// milliseconds) before a query or insert that wakes up gets its core, even at a higher
/// priority (`omen.merge_worker_nice`): with two merge workers on two cores that wait was
/// the p99 of queries and inserts while rows streamed in. Between entries a merge holds no
/// page lock, and a yield with nobody waiting returns at once (about a microsecond, against
/// a few hundred for an entry).
pub fn yield_between_entries(on: bool) {
    YIELDING.set(on);
}

/// Gives up the core if this process's merges yield (see [`yield_between_entries`]). The
/// caller holds no buffer lock.
fn yield_point() {
    if YIELDING.get() {
        give_up_core();
    }
}

/// How often a yielding merge also gives up its core within an entry (between the
/// expansions of its search, the exact distances of its prunes and its neighbour-list
/// writes: `PageStore::yield_every`): an entry takes about 0.35 ms at 784 dimensions, the
/// wait of a query or insert woken while a worker runs it. Measured (README, "Merge workers
/// yield within an entry"): 50 µs cut the INSERT p99 of the 784-dimension ingest bench from
/// about 0.5 to 0.2 ms but cost the 64-dimension stream 13% of its rows/s (the two workers
/// hand the core to each other); 150 µs kept most of the first and little of the second.
const YIELD_EVERY: std::time::Duration = std::time::Duration::from_micros(150);

/// Gives up the core: `sched_yield`, and while [`sleep_while_cores_busy`] is on and the
/// cores were busy in most recent looks, sleeps, at most [`MAX_BUSY_WAIT`]. The caller holds
/// no buffer lock; it does hold its merge slot, so a VACUUM, `omen_flush` or an insert past
/// twice `omen.insert_buffer_cap` that waits for every slot waits for the sleeps of the
/// batch under way too (a batch takes up to about fourteen times longer while the cores are
/// busy).
fn give_up_core() {
    // SAFETY: sched_yield has no arguments and no effect on this process's state; it
    // cannot fail on Linux.
    unsafe { libc::sched_yield() };
    if !SLEEP_WHILE_BUSY.get() {
        return;
    }
    let mut waited = std::time::Duration::ZERO;
    while waited < MAX_BUSY_WAIT && busy_most_of_the_time() {
        std::thread::sleep(BUSY_POLL);
        waited += BUSY_POLL;
    }
}

/// Looks at the cores (`omen_core::cores::busy`) and returns whether they were busy in
/// most recent looks (`omen_core::cores::BusyAverage`). One look is not enough: a worker
/// that slept whenever one look found the cores busy merged a third fewer entries beside a
/// lone inserting client, so that the inserting backend merged more past
/// `omen.insert_buffer_cap` (a `/tmp` A/B of 300,000 single-row INSERTs into 10,000
/// fmnist-pca64 rows: 4,787 rows/s against 7,125 without the sleep). Sampled there, the
/// cores looked busy in about 37% of looks; with a second client querying, in nearly all.
fn busy_most_of_the_time() -> bool {
    let mut looks = BUSY_LOOKS.get();
    let busy = looks.look(omen_core::cores::busy());
    BUSY_LOOKS.set(looks);
    busy
}

/// How long a yielding merge sleeps at most at one yield point while every core is busy
/// with other processes (`omen_core::cores::busy`: the worker is then on no run queue, see
/// there), and how often it looks again meanwhile. A worker sleeps at most this long per
/// 150 µs merged ([`YIELD_EVERY`]): however busy the cores, the merge goes on at about a
/// fourteenth of one core, and the insert buffer's cap bounds the rest.
const MAX_BUSY_WAIT: std::time::Duration = std::time::Duration::from_millis(2);
const BUSY_POLL: std::time::Duration = std::time::Duration::from_micros(200);

/// Which pages of a merge segment a merge works on: those at positions `p` (oldest page
/// first) with `p % of == slot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub slot: usize,
    pub of: usize,
}

impl Part {
    /// The whole segment (a merge that holds every slot).
    pub const WHOLE: Part = Part { slot: 0, of: 1 };
}

/// Where a merge of one part of one segment is, so that a worker can go on from batch to
/// batch (and transaction to transaction) without walking the segment again.
pub struct MergeCursor {
    segment: u32,
    part: Part,
    pages: Vec<u32>,
    next: usize,
    /// The part was merged to its end and other parts were not yet: the segment is released
    /// by whoever finishes the last part, so this cursor does not walk it again to look.
    finished: bool,
}

/// Merges entries of `part` until about `budget` were merged or the part is done; at most
/// `max_seals` times it seals the append segment to go on with it (only once the merge
/// segment is released: all its parts are done). The caller holds the part's merge slot
/// (or every slot, for [`Part::WHOLE`]). Returns the entries merged.
pub fn merge_some(
    index: pg_sys::Relation,
    cursor: &mut Option<MergeCursor>,
    budget: usize,
    mut max_seals: usize,
    part: Part,
) -> usize {
    let mut done = 0;
    let mut store = PageStore::new(index, &read_meta(index));
    store.cache_vectors();
    if YIELDING.get() {
        store.yield_every(YIELD_EVERY, give_up_core);
    }
    loop {
        let meta = read_meta(index);
        if meta.merge_tail == NO_BLOCK {
            *cursor = None;
            if max_seals == 0 || !insert_buffer::seal(index) {
                return done;
            }
            max_seals -= 1;
            continue;
        }
        let c = match cursor {
            Some(c) if c.segment == meta.merge_segment && c.part == part => c,
            _ => {
                let all = insert_buffer::segment_pages(index, meta.merge_tail, meta.merge_segment);
                let pages = all.into_iter().enumerate().filter(|(p, _)| p % part.of == part.slot).map(|(_, b)| b);
                let segment = meta.merge_segment;
                cursor.insert(MergeCursor { segment, part, pages: pages.collect(), next: 0, finished: false })
            }
        };
        if c.finished {
            return done;
        }
        while c.next < c.pages.len() && done < budget {
            let first = c.next;
            let mut batch = Vec::new();
            while c.next < c.pages.len() && batch.len() < BATCH {
                let keep = |h: &insert_buffer::EntryHeader| h.state == PENDING || h.state == LINKING;
                batch.extend(insert_buffer::read_entries(index, c.pages[c.next], c.segment, meta.dims as usize, keep));
                c.next += 1;
            }
            let linked = merge_batch(&mut store, &batch, c.segment);
            // MERGED: only the entries this batch linked (another merge may be linking
            // others on the same page, should two parts overlap).
            for &block in &c.pages[first..c.next] {
                insert_buffer::edit_entries(index, block, Some(c.segment), |headers| {
                    let mut changed = false;
                    for (i, h) in headers.iter_mut().enumerate() {
                        if h.state == LINKING && linked.contains(&(block, i as u16 + 1)) {
                            h.state = MERGED;
                            changed = true;
                        }
                    }
                    changed
                });
            }
            insert_buffer::count_merged_pages(index, c.segment, (c.next - first) as u32);
            done += batch.len();
            pgrx::check_for_interrupts!();
        }
        if c.next < c.pages.len() {
            return done;
        }
        // This part is done; the segment is released once every part is.
        let segment = c.segment;
        let all = insert_buffer::segment_pages(index, meta.merge_tail, segment);
        if !insert_buffer::all_merged(index, &all, segment) {
            c.finished = true;
            return done;
        }
        insert_buffer::release_merged(index, segment, &all);
        *cursor = None;
        if done >= budget {
            return done;
        }
    }
}

/// Merges up to `budget` entries in the first merge slot below `cursors.len()` that is free
/// (tried without waiting) and whose part has entries left (a part merged to its end
/// merges nothing until every part is), with that slot's cursor. Returns the entries merged
/// and whether some slot was taken by another merge. Background workers and inserts past
/// `omen.insert_buffer_cap` merge this way, side by side.
pub fn merge_in_free_slot(
    index: pg_sys::Relation,
    cursors: &mut [Option<MergeCursor>],
    budget: usize,
) -> (usize, bool) {
    let slots = cursors.len();
    let mut busy = false;
    for (slot, cursor) in cursors.iter_mut().enumerate() {
        if !try_lock_slot(index, slot) {
            busy = true;
            continue;
        }
        let merged = merge_some(index, cursor, budget, usize::MAX, Part { slot, of: slots });
        unlock_slot(index, slot);
        if merged > 0 {
            return (merged, busy);
        }
    }
    (0, busy)
}

/// Merges everything buffered now (the merge segment, then the append segment once);
/// returns the entries merged. The caller holds every merge slot (`lock_merge`).
pub fn merge_all(index: pg_sys::Relation) -> usize {
    let merged = merge_some(index, &mut None, usize::MAX, 1, Part::WHOLE);
    if merged > 0 {
        repair_reachability(index);
    }
    merged
}

/// After merges: their back-edge prunes may have cut a node's only in-edge. Links such
/// nodes back, so that every row a merge brought in can be found (one traversal of the
/// graph). The caller holds every merge slot.
pub fn repair_reachability(index: pg_sys::Relation) {
    let meta = read_meta(index);
    if meta.entry != NO_NODE {
        let mut store = PageStore::new(index, &meta);
        store.cache_vectors();
        super::reachability::reconnect_unreachable(&mut store, meta.entry, &meta.params(), &mut BeamSearch::new());
    }
}

/// Adds the entries of one batch (of buffer segment `segment`) to the graph: nodes with
/// out-edges first (each atomically with its entry's move to LINKING), then the back-edges
/// of all of them. Returns the entries (block, offset) whose back-edges it added.
fn merge_batch(store: &mut PageStore, batch: &[Entry], segment: u32) -> Vec<(u32, u16)> {
    let index = store.index;
    let mut meta = read_meta(index);
    let params = meta.params();
    let ranking = meta.ranking();
    let mut search = BeamSearch::new();
    let mut placed: Vec<(NodeId, usize)> = Vec::new();
    let mut links: Vec<(NodeId, Vec<NodeId>, (u32, u16))> = Vec::new();
    for (i, e) in batch.iter().enumerate() {
        let node = if e.header.state == PENDING {
            let extra: Vec<(NodeId, f32)> =
                placed.iter().map(|&(id, j)| (id, ranking.rank(&batch[j].vector, &e.vector))).collect();
            let out = if meta.entry == NO_NODE {
                Vec::new()
            } else {
                graph::choose_neighbors(store, NO_NODE, &e.vector, meta.entry, &extra, &params, &mut search)
            };
            let mut mark = |page: *mut u8, id: NodeId| insert_buffer::mark_linking(page, segment, e.offset, id);
            let Some(id) = store.append_linked(&e.heap_tid(), &e.vector, &out, Some((e.block, &mut mark))) else {
                continue;
            };
            links.push((id, out, (e.block, e.offset)));
            yield_point();
            id
        } else {
            // LINKING: the node was written by a merge that stopped before its back-edges.
            let id = e.header.node;
            let mut out = Vec::new();
            graph::GraphStore::neighbors(store, id, &mut out);
            links.push((id, out, (e.block, e.offset)));
            id
        };
        if meta.entry == NO_NODE {
            update_meta(index, |m| {
                if m.entry == NO_NODE {
                    m.entry = node;
                }
            });
            meta = read_meta(index);
        }
        placed.push((node, i));
    }
    for (id, out, _) in &links {
        graph::add_back_edges(store, *id, out, &params);
        yield_point();
    }
    links.into_iter().map(|(_, _, at)| at).collect()
}
