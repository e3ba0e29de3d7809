//! `GraphStore` over index pages: every call locks one page, reads or edits one record,
//! and lets the page go (see the lock protocol in `storage`).

use omen_core::distance::Metric;
use omen_core::graph::{GraphStore, NodeId};
use pgrx::pg_sys;

use super::buffer::{ReadGuard, WriteGuard, init_page};
use super::layout::*;

/// Reads the metapage.
pub fn read_meta(index: pg_sys::Relation) -> Meta {
    let guard = ReadGuard::new(index, META_BLOCK);
    // SAFETY: block 0 of an omen index holds a `Meta` right after the page header (written
    // by `write_meta_page`); read_unaligned copies it out while the page is locked.
    let meta = unsafe { std::ptr::read_unaligned(guard.page().add(PAGE_HEADER).cast::<Meta>()) };
    if meta.magic != MAGIC || meta.version != LAYOUT_VERSION {
        pgrx::error!("index \"{}\" is not an omen index of layout version {LAYOUT_VERSION}", index_name(index));
    }
    meta
}

/// Writes `meta` into `page` (a page being built or a registered working copy).
pub fn write_meta_page(page: *mut u8, meta: &Meta) {
    init_page(page);
    // SAFETY: a page has room for the header and a `Meta`; pd_lower (offset 12, u16) is set
    // past the struct so GenericXLog and full-page images keep it.
    unsafe {
        std::ptr::write_unaligned(page.add(PAGE_HEADER).cast::<Meta>(), *meta);
        *(page.add(12).cast::<u16>()) = (PAGE_HEADER + std::mem::size_of::<Meta>()) as u16;
    }
}

/// Updates the metapage with GenericXLog.
pub fn update_meta(index: pg_sys::Relation, edit: impl FnOnce(&mut Meta)) {
    let guard = WriteGuard::new(index, META_BLOCK);
    // SAFETY: as in `read_meta`, on the registered working copy.
    let mut meta = unsafe { std::ptr::read_unaligned(guard.page().add(PAGE_HEADER).cast::<Meta>()) };
    edit(&mut meta);
    // SAFETY: same location, same type.
    unsafe { std::ptr::write_unaligned(guard.page().add(PAGE_HEADER).cast::<Meta>(), meta) };
    guard.commit();
}

/// The relation's name, for messages.
pub fn index_name(index: pg_sys::Relation) -> String {
    // SAFETY: an open relation has a valid rd_rel with a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr((*(*index).rd_rel).relname.data.as_ptr()) }.to_string_lossy().into_owned()
}

/// Number of blocks in the index's main fork.
pub fn block_count(index: pg_sys::Relation) -> u32 {
    // SAFETY: `index` is open.
    unsafe { pg_sys::RelationGetNumberOfBlocksInFork(index, pg_sys::ForkNumber::MAIN_FORKNUM) }
}

/// A pointer to the record at line pointer `offset` (1-based) of `page`.
///
/// # Safety
/// `page` must be a locked node page whose line pointer `offset` exists.
pub(super) unsafe fn record(page: *const u8, offset: u16) -> *mut u8 {
    // SAFETY: line pointers follow the header; lp_off is the low 15 bits of the word.
    unsafe {
        let word = std::ptr::read_unaligned(page.add(PAGE_HEADER + ITEM_ID * (offset as usize - 1)).cast::<u32>());
        page.add((word & 0x7fff) as usize) as *mut u8
    }
}

/// Whether `page` was never initialized (all zeros: pd_upper is 0).
fn page_is_new(page: *const u8) -> bool {
    // SAFETY: pd_upper is the u16 at offset 14 of every page header.
    unsafe { *(page.add(14).cast::<u16>()) == 0 }
}

/// Number of node records on `page` (none on an insert-buffer page).
fn node_count(page: *const u8) -> usize {
    if super::insert_buffer::is_buffer_page(page) { 0 } else { item_count(page) }
}

/// Number of line pointers on `page`.
pub(super) fn item_count(page: *const u8) -> usize {
    // SAFETY: pd_lower is the u16 at offset 12 of every page header.
    let lower = unsafe { *(page.add(12).cast::<u16>()) } as usize;
    lower.saturating_sub(PAGE_HEADER) / ITEM_ID
}

/// Tells the free space map how many free slots `block` has (a hint; it is not WAL-logged
/// and VACUUM rebuilds it).
pub fn record_free_slots(index: pg_sys::Relation, block: u32, free_slots: usize, layout: &Layout) {
    // SAFETY: FSM bookkeeping for a block of this open index.
    unsafe { pg_sys::RecordPageWithFreeSpace(index, block, free_slots * layout.node_size) };
}

/// A view of one node record on a locked page.
pub struct NodeRef<'a> {
    pub header: &'a mut NodeHeader,
    pub neighbors_area: &'a mut [NodeId],
    pub vector: &'a mut [f32],
}

impl NodeRef<'_> {
    /// The neighbour ids in use.
    pub fn neighbors(&self) -> &[NodeId] {
        &self.neighbors_area[..self.header.neighbor_count as usize]
    }

    /// The heap TID.
    pub fn heap_tid(&self) -> pg_sys::ItemPointerData {
        tid_of(&self.header.tid)
    }

    /// Not a live row: deleted (awaiting repair) or a free slot.
    pub fn is_deleted(&self) -> bool {
        self.header.flags & (FLAG_DELETED | FLAG_FREE) != 0
    }

    /// A free slot, reusable by an insert.
    pub fn is_free(&self) -> bool {
        self.header.flags & FLAG_FREE != 0
    }
}

/// The node at `offset` of a locked page.
///
/// # Safety
/// `page` must be a node page of an index with `layout`, locked for as long as the result
/// lives (exclusively when it is written), and `offset` one of its line pointers.
unsafe fn node_at<'a>(page: *const u8, offset: u16, layout: &Layout) -> NodeRef<'a> {
    // SAFETY: records are node_size bytes, MAXALIGN'd, laid out as NodeHeader, neighbour
    // ids, vector (see `Layout`), so every part is in bounds and 4-byte aligned.
    unsafe {
        let r = record(page, offset);
        NodeRef {
            header: &mut *r.cast::<NodeHeader>(),
            neighbors_area: std::slice::from_raw_parts_mut(r.add(Layout::NEIGHBORS).cast(), layout.slack_degree),
            vector: std::slice::from_raw_parts_mut(r.add(layout.vector_offset()).cast(), layout.dims),
        }
    }
}

/// Fills a node record at `rec` (node_size bytes).
fn fill_record(rec: &mut [u8], layout: &Layout, tid: &pg_sys::ItemPointerData, neighbors: &[NodeId], vector: &[f32]) {
    rec.fill(0);
    let header =
        NodeHeader { tid: tid_words(tid), flags: 0, reserved: 0, neighbor_count: neighbors.len() as u16, reserved2: 0 };
    // SAFETY: `rec` has node_size bytes: header, slack_degree ids, dims floats.
    unsafe {
        std::ptr::write_unaligned(rec.as_mut_ptr().cast::<NodeHeader>(), header);
    }
    for (i, n) in neighbors.iter().enumerate() {
        let at = Layout::NEIGHBORS + 4 * i;
        rec[at..at + 4].copy_from_slice(&n.to_ne_bytes());
    }
    let v0 = layout.vector_offset();
    for (i, x) in vector.iter().enumerate() {
        rec[v0 + 4 * i..v0 + 4 * i + 4].copy_from_slice(&x.to_ne_bytes());
    }
}

/// Adds a record to `page` if it has room; returns its 1-based offset.
fn add_record(page: *mut u8, rec: &[u8], layout: &Layout) -> Option<u16> {
    if item_count(page) >= layout.nodes_per_page {
        return None;
    }
    // SAFETY: `page` is an initialized node page we may write; PageAddItemExtended checks
    // free space itself and returns InvalidOffsetNumber (0) when the record does not fit.
    let off = unsafe {
        pg_sys::PageAddItemExtended(page.cast(), rec.as_ptr() as *mut _, rec.len(), pg_sys::InvalidOffsetNumber, 0)
    };
    (off != 0).then_some(off)
}

/// Packs node records into pages while an index is built, before any of it is WAL-logged.
pub struct PagePacker {
    layout: Layout,
    page: Vec<u64>,
    rec: Vec<u8>,
}

impl PagePacker {
    pub fn new(layout: Layout) -> Self {
        let mut p = PagePacker { layout, page: vec![0u64; PAGE_SIZE / 8], rec: vec![0u8; layout.node_size] };
        init_page(p.page_ptr());
        p
    }

    fn page_ptr(&mut self) -> *mut u8 {
        self.page.as_mut_ptr().cast()
    }

    /// Adds the next node; returns a full page to write out first when it did not fit.
    pub fn push(&mut self, tid: &pg_sys::ItemPointerData, neighbors: &[NodeId], vector: &[f32]) -> Option<Vec<u64>> {
        fill_record(&mut self.rec, &self.layout, tid, neighbors, vector);
        let layout = self.layout;
        let rec = std::mem::take(&mut self.rec);
        let mut full = None;
        if add_record(self.page_ptr(), &rec, &layout).is_none() {
            full = Some(std::mem::replace(&mut self.page, vec![0u64; PAGE_SIZE / 8]));
            init_page(self.page_ptr());
            add_record(self.page_ptr(), &rec, &layout).expect("an empty page holds a node");
        }
        self.rec = rec;
        full
    }

    /// The last, partly filled page, if it holds any node.
    pub fn finish(mut self) -> Option<Vec<u64>> {
        (item_count(self.page_ptr()) > 0).then_some(self.page)
    }
}

/// Another page to change in the same WAL record as a new node: its block, and an edit of
/// its working copy given the new node's id that returns false to write nothing.
pub type Link<'a> = (u32, &'a mut dyn FnMut(*mut u8, NodeId) -> bool);

/// The index as a graph store for search and insert.
pub struct PageStore {
    pub index: pg_sys::Relation,
    pub layout: Layout,
    pub metric: Metric,
    /// Liveness of the node whose distance was computed last: search asks right after.
    last_live: (NodeId, bool),
    /// Vectors and liveness of the nodes read so far, when enabled ([`PageStore::cache_vectors`]).
    cache: Option<VectorCache>,
}

/// Node vectors (and whether the node is live) kept in memory by a merge, which reads the
/// same neighbourhoods again and again. Only valid while no VACUUM runs (it holds the merge
/// lock, as every merger does): a node's vector never changes, and its liveness only
/// changes under VACUUM.
struct VectorCache {
    map: std::collections::HashMap<NodeId, (Box<[f32]>, bool)>,
    max_entries: usize,
}

/// Bytes of vectors a merge keeps in memory at most.
const VECTOR_CACHE_BYTES: usize = 64 << 20;

impl PageStore {
    pub fn new(index: pg_sys::Relation, meta: &Meta) -> PageStore {
        let layout = Layout::new(meta.dims as usize, meta.slack_degree as usize).expect("layout of an existing index");
        PageStore { index, layout, metric: meta.metric(), last_live: (NO_NODE, false), cache: None }
    }

    /// Keeps the vectors read from now on in memory (up to 64 MiB, then starts over). For
    /// a merge, which holds the merge lock: see [`VectorCache`].
    pub fn cache_vectors(&mut self) {
        let max_entries = (VECTOR_CACHE_BYTES / (4 * self.layout.dims.max(1) + 32)).max(1);
        self.cache = Some(VectorCache { map: Default::default(), max_entries });
    }

    /// Runs `f` on node `id`'s vector and liveness, from the cache when it is enabled.
    fn with_vector<R>(&mut self, id: NodeId, f: impl FnOnce(&[f32], bool) -> R) -> R {
        let Some(cache) = self.cache.as_mut() else {
            return self.read(id, |n| f(n.vector, !n.is_deleted()));
        };
        if let Some((v, live)) = cache.map.get(&id) {
            return f(v, *live);
        }
        let (v, live) = self.read(id, |n| (Box::<[f32]>::from(&*n.vector), !n.is_deleted()));
        let r = f(&v, live);
        let cache = self.cache.as_mut().expect("enabled above");
        if cache.map.len() >= cache.max_entries {
            cache.map.clear();
        }
        cache.map.insert(id, (v, live));
        r
    }

    /// Runs `f` on node `id` under a share lock.
    pub fn read<R>(&self, id: NodeId, f: impl FnOnce(&NodeRef) -> R) -> R {
        let (block, offset) = node_location(id);
        let guard = ReadGuard::new(self.index, block);
        if offset as usize > node_count(guard.page()) {
            pgrx::error!("omen index \"{}\" is corrupt: node {id} does not exist", index_name(self.index));
        }
        // SAFETY: the page is share-locked by `guard` for the duration of `f`, offset checked.
        let node = unsafe { node_at(guard.page(), offset, &self.layout) };
        f(&node)
    }

    /// Runs `f` on node `id` under an exclusive lock and WAL-logs the change if `f` returns true.
    pub fn write(&self, id: NodeId, f: impl FnOnce(&mut NodeRef) -> bool) {
        let (block, offset) = node_location(id);
        let guard = WriteGuard::new(self.index, block);
        if offset as usize > node_count(guard.page()) {
            pgrx::error!("omen index \"{}\" is corrupt: node {id} does not exist", index_name(self.index));
        }
        // SAFETY: the working copy is exclusively ours until commit or drop.
        let mut node = unsafe { node_at(guard.page(), offset, &self.layout) };
        if f(&mut node) {
            guard.commit();
        }
    }

    /// Stores a new node (no neighbours yet): in a free slot that VACUUM recorded in the
    /// free space map, else on the last page, else on a new page; WAL-logged. Returns its id.
    pub fn append(&self, tid: &pg_sys::ItemPointerData, vector: &[f32]) -> NodeId {
        self.append_linked(tid, vector, &[], None).expect("no link to refuse")
    }

    /// Like [`PageStore::append`], with out-neighbours, and with `link`: another page to
    /// change in the same WAL record (the insert buffer entry the node is merged from), so
    /// that both changes survive a crash or neither does. The node page is locked first,
    /// then the linked page. Returns None, writing nothing, when the link's edit refuses.
    pub fn append_linked(
        &self,
        tid: &pg_sys::ItemPointerData,
        vector: &[f32],
        neighbors: &[NodeId],
        mut link: Option<Link>,
    ) -> Option<NodeId> {
        let mut rec = vec![0u8; self.layout.node_size];
        let n = neighbors.len().min(self.layout.slack_degree);
        fill_record(&mut rec, &self.layout, tid, &neighbors[..n], vector);
        if let Some(done) = self.reuse_free_slot(&rec, &mut link) {
            return done;
        }
        let last = block_count(self.index) - 1;
        if last > META_BLOCK {
            let guard = WriteGuard::new(self.index, last);
            if page_is_new(guard.page()) {
                // A block added by an extension that a crash cut short: initialize it here.
                init_page(guard.page());
            }
            if !super::insert_buffer::is_buffer_page(guard.page())
                && let Some(off) = add_record(guard.page(), &rec, &self.layout)
            {
                let id = node_id(guard.block(), off);
                return self.commit_new(guard, id, &mut link);
            }
        }
        let guard = WriteGuard::extend(self.index);
        init_page(guard.page());
        let off = add_record(guard.page(), &rec, &self.layout).expect("an empty page holds a node");
        let id = node_id(guard.block(), off);
        self.commit_new(guard, id, &mut link)
    }

    /// Applies `link` to the record of the new node `id` held by `guard`, and commits both.
    fn commit_new(&self, mut guard: WriteGuard, id: NodeId, link: &mut Option<Link>) -> Option<NodeId> {
        if let Some((block, edit)) = link.as_mut() {
            let page = guard.also(self.index, *block);
            if !edit(page, id) {
                return None;
            }
        }
        guard.commit();
        Some(id)
    }

    /// Writes `rec` over a free slot of a page the free space map offers, if any: Some of
    /// what [`PageStore::commit_new`] returned, or None when there was no free slot.
    fn reuse_free_slot(&self, rec: &[u8], link: &mut Option<Link>) -> Option<Option<NodeId>> {
        loop {
            // Only free slots are ever recorded, so any recorded space means one; asking for
            // a whole node_size would miss pages with one slot (the FSM rounds down).
            // SAFETY: the FSM lookup only reads the index's free space map fork.
            let block = unsafe { pg_sys::GetPageWithFreeSpace(self.index, 1) };
            if block == pg_sys::InvalidBlockNumber || block == META_BLOCK || block >= block_count(self.index) {
                return None;
            }
            let guard = WriteGuard::new(self.index, block);
            let page = guard.page();
            let mut slot = None;
            let mut free = 0usize;
            for off in 1..=node_count(page) as u16 {
                // SAFETY: exclusively locked working copy, offset within its line pointers.
                let node = unsafe { node_at(page, off, &self.layout) };
                if node.is_free() {
                    if slot.is_none() {
                        slot = Some(off);
                    } else {
                        free += 1;
                    }
                }
            }
            let Some(off) = slot else {
                drop(guard);
                record_free_slots(self.index, block, 0, &self.layout);
                continue;
            };
            // SAFETY: the record at `off` is node_size bytes on the locked working copy.
            unsafe { std::ptr::copy_nonoverlapping(rec.as_ptr(), record(page, off), rec.len()) };
            let done = self.commit_new(guard, node_id(block, off), link);
            if done.is_some() {
                record_free_slots(self.index, block, free, &self.layout);
            }
            return Some(done);
        }
    }

    /// Visits every node of the index, one page at a time, with the page share-locked.
    pub fn for_each_node(&self, mut f: impl FnMut(NodeId, &NodeRef)) {
        for block in 1..block_count(self.index) {
            let guard = ReadGuard::new(self.index, block);
            for off in 1..=node_count(guard.page()) as u16 {
                // SAFETY: share-locked page, offset within its line pointers.
                let node = unsafe { node_at(guard.page(), off, &self.layout) };
                f(node_id(block, off), &node);
            }
        }
    }

    /// Edits the nodes of one page at a time (all of a page's nodes together), WAL-logging
    /// the pages where `f` returns true.
    pub fn edit_pages(&self, mut f: impl FnMut(u32, &mut [NodeRef]) -> bool) {
        for block in 1..block_count(self.index) {
            self.edit_page(block, &mut f);
        }
    }

    /// Edits the nodes of `block` under its exclusive lock; WAL-logs the page if `f` returns true.
    pub fn edit_page(&self, block: u32, f: impl FnOnce(u32, &mut [NodeRef]) -> bool) {
        let guard = WriteGuard::new(self.index, block);
        let count = node_count(guard.page()) as u16;
        // SAFETY: exclusively locked working copy; offsets within its line pointers, and
        // each record is a distinct, non-overlapping part of the page.
        let mut nodes: Vec<NodeRef> =
            (1..=count).map(|off| unsafe { node_at(guard.page(), off, &self.layout) }).collect();
        if f(block, &mut nodes) {
            drop(nodes);
            guard.commit();
        }
    }

    /// Reads the nodes of `block` under its share lock.
    pub fn read_page<R>(&self, block: u32, f: impl FnOnce(&[NodeRef]) -> R) -> R {
        let guard = ReadGuard::new(self.index, block);
        let count = node_count(guard.page()) as u16;
        // SAFETY: share-locked page, offsets within its line pointers; only read through.
        let nodes: Vec<NodeRef> = (1..=count).map(|off| unsafe { node_at(guard.page(), off, &self.layout) }).collect();
        f(&nodes)
    }

    /// Edits every node, one page at a time, WAL-logging pages where `f` changed something.
    pub fn edit_each_page(&self, mut f: impl FnMut(NodeId, &mut NodeRef) -> bool) {
        self.edit_pages(|block, nodes| {
            let mut changed = false;
            for (i, node) in nodes.iter_mut().enumerate() {
                changed |= f(node_id(block, i as u16 + 1), node);
            }
            changed
        });
    }
}

impl GraphStore for PageStore {
    fn distance(&mut self, id: NodeId, query: &[f32]) -> f32 {
        let metric = self.metric;
        let (d, live) = self.with_vector(id, |v, live| (metric.rank_distance(v, query), live));
        self.last_live = (id, live);
        if d.is_nan() { f32::INFINITY } else { d }
    }

    fn neighbors(&mut self, id: NodeId, out: &mut Vec<NodeId>) {
        out.clear();
        self.read(id, |n| out.extend_from_slice(n.neighbors()));
    }

    fn vector(&mut self, id: NodeId, out: &mut Vec<f32>) {
        out.clear();
        self.with_vector(id, |v, _| out.extend_from_slice(v));
    }

    fn set_neighbors(&mut self, id: NodeId, neighbors: &[NodeId]) {
        let n = neighbors.len().min(self.layout.slack_degree);
        self.write(id, |node| {
            if node.neighbors() == &neighbors[..n] {
                return false;
            }
            node.neighbors_area[..n].copy_from_slice(&neighbors[..n]);
            node.header.neighbor_count = n as u16;
            true
        });
    }

    fn is_live(&mut self, id: NodeId) -> bool {
        if self.last_live.0 == id {
            return self.last_live.1;
        }
        self.with_vector(id, |_, live| live)
    }
}
