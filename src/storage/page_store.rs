//! `GraphStore` over index pages: every call locks one page, reads or edits one record,
//! and lets the page go (see the lock protocol in `storage`); a new node locks its node
//! page, then its vector page (then the insert-buffer page it comes from).

use omen_core::distance::Ranking;
use omen_core::graph::{GraphStore, NodeId};
use omen_core::quant::{PreparedQuery, Quantizer};
use pgrx::pg_sys;

use super::buffer::{
    ReadGuard, WriteGuard, block_count, init_page, item, item_count, page_kind, prefetch_descriptor,
    prefetch_page_bytes, recent_buffer,
};
use super::layout::*;
use super::spare_pages;

/// Reads the metapage.
pub fn read_meta(index: pg_sys::Relation) -> Meta {
    let guard = ReadGuard::new(index, META_BLOCK);
    // SAFETY: block 0 of an omen index holds a `Meta` right after the page header (written
    // by `write_meta_page`); read_unaligned copies it out while the page is locked. A
    // layout-2 metapage is shorter but its magic and version come first.
    let meta = unsafe { std::ptr::read_unaligned(guard.page().add(PAGE_HEADER).cast::<Meta>()) };
    if meta.magic != MAGIC {
        pgrx::error!("index \"{}\" is not an omen index", index_name(index));
    }
    if meta.version > LAYOUT_VERSION {
        pgrx::ereport!(
            ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "omen index \"{}\" was built by a newer omendb (layout version {}, this one reads {LAYOUT_VERSION})",
                index_name(index),
                meta.version
            )
        );
    }
    if meta.version != LAYOUT_VERSION {
        pgrx::ereport!(
            ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "omen index \"{}\" was built by an older omendb (layout version {}); REINDEX it",
                index_name(index),
                meta.version
            ),
            format!(
                "This omendb reads layout version {LAYOUT_VERSION}: REINDEX INDEX {} rebuilds it.",
                index_name(index)
            )
        );
    }
    meta
}

/// Writes `meta` into `page` (a page being built or a registered working copy).
pub fn write_meta_page(page: *mut u8, meta: &Meta) {
    init_page(page, PageKind::Meta);
    // SAFETY: a page has room for the header and a `Meta`; pd_lower is set past the struct
    // so GenericXLog and full-page images keep it.
    unsafe {
        std::ptr::write_unaligned(page.add(PAGE_HEADER).cast::<Meta>(), *meta);
        (*page.cast::<pg_sys::PageHeaderData>()).pd_lower = (PAGE_HEADER + std::mem::size_of::<Meta>()) as u16;
    }
}

/// The page images of the codes' centroid: CENTROID_FLOATS floats a page, from
/// CENTROID_BLOCK on (at least one page, even for an empty centroid).
pub fn centroid_pages(centroid: &[f32]) -> Vec<Vec<u64>> {
    let chunks: Vec<&[f32]> =
        if centroid.is_empty() { vec![&[][..]] } else { centroid.chunks(CENTROID_FLOATS).collect() };
    chunks
        .into_iter()
        .map(|part| {
            let mut image = vec![0u64; PAGE_SIZE / 8];
            let page: *mut u8 = image.as_mut_ptr().cast();
            init_page(page, PageKind::Centroid);
            // SAFETY: CENTROID_FLOATS floats fit between the header and the special area.
            unsafe {
                std::ptr::copy_nonoverlapping(part.as_ptr(), page.add(PAGE_HEADER).cast::<f32>(), part.len());
                (*page.cast::<pg_sys::PageHeaderData>()).pd_lower = (PAGE_HEADER + 4 * part.len()) as u16;
            }
            image
        })
        .collect()
}

/// The quantizer of an index: its centroid pages and the fixed seed.
pub fn read_quantizer(index: pg_sys::Relation, meta: &Meta) -> Quantizer {
    let dims = (meta.dims as usize).max(1);
    let mut centroid = vec![0f32; dims];
    if meta.has_centroid != 0 {
        for (i, part) in centroid.chunks_mut(CENTROID_FLOATS).enumerate() {
            let guard = ReadGuard::new(index, CENTROID_BLOCK + i as u32);
            if page_kind(guard.page()) != Some(PageKind::Centroid) {
                pgrx::error!("omen index \"{}\" is corrupt: its centroid pages are missing", index_name(index));
            }
            // SAFETY: each centroid page holds its part's floats after its header.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    guard.page().add(PAGE_HEADER).cast::<f32>(),
                    part.as_mut_ptr(),
                    part.len(),
                )
            };
        }
    }
    Quantizer::new(meta.metric(), dims, centroid, CODE_SEED)
}

std::thread_local! {
    /// Quantizers of the indexes this backend used last, by (index OID, build id, dims,
    /// has_centroid): a scan needs one per query, and rebuilding it reads the centroid
    /// pages and regenerates the rotation. A REINDEX changes the build id.
    static QUANTIZERS: std::cell::RefCell<Vec<(QuantizerKey, std::rc::Rc<Quantizer>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

type QuantizerKey = (pg_sys::Oid, i64, u32, u32);

/// Quantizers kept per backend.
const CACHED_QUANTIZERS: usize = 8;

/// The quantizer of `index`, from this backend's cache when it has it.
pub fn cached_quantizer(index: pg_sys::Relation, meta: &Meta) -> std::rc::Rc<Quantizer> {
    // SAFETY: `index` is an open relation.
    let oid = unsafe { (*index).rd_id };
    let key = (oid, meta.build_id, meta.dims, meta.has_centroid);
    if let Some(q) = QUANTIZERS.with_borrow(|c| c.iter().find(|(k, _)| *k == key).map(|(_, q)| q.clone())) {
        return q;
    }
    let q = std::rc::Rc::new(read_quantizer(index, meta));
    QUANTIZERS.with_borrow_mut(|c| {
        c.retain(|(k, _)| k.0 != oid);
        if c.len() >= CACHED_QUANTIZERS {
            c.remove(0);
        }
        c.push((key, q.clone()));
    });
    q
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

/// Number of node records on `page` (none on other pages).
fn node_count(page: *const u8) -> usize {
    if page_kind(page) == Some(PageKind::Node) { item_count(page) } else { 0 }
}

/// Number of vector records on `page`: its items on a vector page, or on a node page when
/// vectors are inline (none on other pages).
fn vector_count(page: *const u8, layout: &Layout) -> usize {
    let kind = if layout.inline_vectors { PageKind::Node } else { PageKind::Vector };
    if page_kind(page) == Some(kind) { item_count(page) } else { 0 }
}

/// Tells the free space map how many free slots `block` has (a hint; it is not WAL-logged
/// and VACUUM rebuilds it).
pub fn record_free_slots(index: pg_sys::Relation, block: u32, free_slots: usize, layout: &Layout) {
    // SAFETY: FSM bookkeeping for a block of this open index.
    unsafe { pg_sys::RecordPageWithFreeSpace(index, block, free_slots * layout.record_size) };
}

/// A view of one node record on a locked page.
pub struct NodeRef<'a> {
    pub header: &'a mut NodeHeader,
    pub neighbors_area: &'a mut [NodeId],
    /// `slack_degree` codes of `code_bytes` each, parallel to `neighbors_area`.
    pub codes_area: &'a mut [u8],
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

    /// Keeps the neighbours for which `keep` is true, in order, each with its code; returns
    /// whether any was dropped.
    pub fn retain_neighbors(&mut self, mut keep: impl FnMut(NodeId) -> bool) -> bool {
        let count = self.header.neighbor_count as usize;
        let cb = self.codes_area.len() / self.neighbors_area.len().max(1);
        let mut kept = 0;
        for i in 0..count {
            let n = self.neighbors_area[i];
            if keep(n) {
                if kept != i {
                    self.neighbors_area[kept] = n;
                    self.codes_area.copy_within(i * cb..(i + 1) * cb, kept * cb);
                }
                kept += 1;
            }
        }
        self.header.neighbor_count = kept as u16;
        kept != count
    }

    /// Where the node's vector record is: block and 1-based offset.
    pub fn vector_location(&self) -> (u32, u16) {
        (self.header.vector_block, self.header.vector_offset)
    }
}

/// The node at `offset` of a locked page.
///
/// # Safety
/// `page` must be a node page of an index with `layout`, locked for as long as the result
/// lives (exclusively when it is written), and `offset` one of its line pointers.
unsafe fn node_at<'a>(page: *const u8, offset: u16, layout: &Layout) -> NodeRef<'a> {
    // SAFETY: records are node_size bytes, MAXALIGN'd, laid out as NodeHeader, neighbour
    // ids, codes (see `Layout`), so every part is in bounds and 4-byte aligned.
    unsafe {
        let r = item(page, offset);
        NodeRef {
            header: &mut *r.cast::<NodeHeader>(),
            neighbors_area: std::slice::from_raw_parts_mut(r.add(Layout::NEIGHBORS).cast(), layout.slack_degree),
            codes_area: std::slice::from_raw_parts_mut(
                r.add(layout.codes_offset()),
                layout.slack_degree * layout.code_bytes,
            ),
        }
    }
}

/// The vector record at `offset` of a locked vector page (of a node page, after the node
/// record, when vectors are inline): the node's code and its vector.
///
/// # Safety
/// `page` must be a locked vector page (node page) of an index with `layout`, and `offset`
/// one of its line pointers; the result must not outlive the lock.
unsafe fn vector_at<'a>(page: *const u8, offset: u16, layout: &Layout) -> (&'a [u8], &'a [f32]) {
    // SAFETY: vector records are vector_size bytes, MAXALIGN'd (inline: at node_size, a
    // multiple of 4, within a record_size item): code_bytes (a multiple of 8), then dims
    // floats.
    unsafe {
        let r = item(page, offset).add(if layout.inline_vectors { layout.node_size } else { 0 });
        (
            std::slice::from_raw_parts(r, layout.code_bytes),
            std::slice::from_raw_parts(r.add(layout.code_bytes).cast(), layout.dims),
        )
    }
}

/// Fills a node record at `rec` (node_size bytes): `codes` holds one code per neighbour.
pub fn fill_node_record(
    rec: &mut [u8],
    layout: &Layout,
    tid: &pg_sys::ItemPointerData,
    neighbors: &[NodeId],
    codes: &[u8],
    vector_location: (u32, u16),
) {
    rec.fill(0);
    let header = NodeHeader {
        tid: tid_words(tid),
        flags: 0,
        reserved: 0,
        neighbor_count: neighbors.len() as u16,
        vector_offset: vector_location.1,
        vector_block: vector_location.0,
    };
    // SAFETY: `rec` has node_size bytes, starting with a header.
    unsafe { std::ptr::write_unaligned(rec.as_mut_ptr().cast::<NodeHeader>(), header) };
    for (i, n) in neighbors.iter().enumerate() {
        let at = Layout::NEIGHBORS + 4 * i;
        rec[at..at + 4].copy_from_slice(&n.to_ne_bytes());
    }
    let c0 = layout.codes_offset();
    rec[c0..c0 + codes.len()].copy_from_slice(codes);
}

/// Writes `location` (block, 1-based offset) as the vector location of the node record
/// `rec`.
fn set_vector_location(rec: &mut [u8], location: (u32, u16)) {
    assert!(rec.len() >= std::mem::size_of::<NodeHeader>(), "a node record starts with its header");
    let h = rec.as_mut_ptr().cast::<NodeHeader>();
    // SAFETY: `rec` holds at least a NodeHeader (asserted); unaligned reads and writes.
    let mut header = unsafe { std::ptr::read_unaligned(h) };
    (header.vector_block, header.vector_offset) = location;
    // SAFETY: as above.
    unsafe { std::ptr::write_unaligned(h, header) };
}

/// Fills a vector record at `rec` (vector_size bytes) with the code and the floats.
pub fn fill_vector_record(rec: &mut [u8], layout: &Layout, code: &[u8], vector: &[f32]) {
    rec[..layout.code_bytes].copy_from_slice(code);
    for (i, x) in vector.iter().enumerate() {
        let at = layout.code_bytes + 4 * i;
        rec[at..at + 4].copy_from_slice(&x.to_ne_bytes());
    }
}

/// Adds a record to `page` if it has room (at most `max` records a page); returns its
/// 1-based offset.
fn add_record(page: *mut u8, rec: &[u8], max: usize) -> Option<u16> {
    if item_count(page) >= max {
        return None;
    }
    // SAFETY: `page` is an initialized page we may write; PageAddItemExtended checks free
    // space itself and returns InvalidOffsetNumber (0) when the record does not fit.
    let off = unsafe {
        pg_sys::PageAddItemExtended(page.cast(), rec.as_ptr() as *mut _, rec.len(), pg_sys::InvalidOffsetNumber, 0)
    };
    (off != 0).then_some(off)
}

/// Packs records of one kind into pages while an index is built, before any of it is
/// WAL-logged.
pub struct PagePacker {
    kind: PageKind,
    max: usize,
    page: Vec<u64>,
}

impl PagePacker {
    /// Packs `kind` records, at most `max` a page.
    pub fn new(kind: PageKind, max: usize) -> Self {
        let mut p = PagePacker { kind, max, page: vec![0u64; PAGE_SIZE / 8] };
        init_page(p.page_ptr(), kind);
        p
    }

    fn page_ptr(&mut self) -> *mut u8 {
        self.page.as_mut_ptr().cast()
    }

    /// Adds the next record; returns a full page to write out first when it did not fit.
    pub fn push(&mut self, rec: &[u8]) -> Option<Vec<u64>> {
        let mut full = None;
        if add_record(self.page_ptr(), rec, self.max).is_none() {
            full = Some(std::mem::replace(&mut self.page, vec![0u64; PAGE_SIZE / 8]));
            init_page(self.page_ptr(), self.kind);
            add_record(self.page_ptr(), rec, self.max).expect("an empty page holds a record");
        }
        full
    }

    /// The last, partly filled page, if it holds any record.
    pub fn finish(mut self) -> Option<Vec<u64>> {
        (item_count(self.page_ptr()) > 0).then_some(self.page)
    }
}

/// Another page to change in the same WAL record as a new node: its block, and an edit of
/// its working copy given the new node's id that returns false to write nothing.
pub type Link<'a> = (u32, &'a mut dyn FnMut(*mut u8, NodeId) -> bool);

/// The index as a graph store for search and insert.
///
/// Searches traverse on codes ([`GraphStore::expand_coded`]): expanding a node reads its
/// node page (neighbours' ids and codes) and its vector record (its exact distance).
pub struct PageStore {
    pub index: pg_sys::Relation,
    pub layout: Layout,
    /// How exact distances are ranked ([`Meta::ranking`]): queries and entries given to
    /// this store are vectors as the index stores them ([`Meta::stored_vector`]).
    pub ranking: Ranking,
    pub quantizer: std::rc::Rc<Quantizer>,
    prepared: PreparedQuery,
    query: Vec<f32>,
    /// Liveness of the node whose distance was computed last: search asks right after.
    last_live: (NodeId, bool),
    /// Vectors and liveness of the nodes read so far, when enabled ([`PageStore::cache_vectors`]).
    cache: Option<VectorCache>,
    /// Codes read by [`PageStore::code_of`], when enabled (writers: new edges carry codes).
    /// Filled on demand, not from every neighbour list an expansion reads: a merge at 784
    /// dimensions spent 15% of its time probing this map for each of ~3,000 neighbours an
    /// insert's search reads, where it needs the codes of its ~32 new edges.
    codes: Option<std::collections::HashMap<NodeId, Box<[u8]>>>,
    /// Heap TIDs of the nodes expanded so far (None: deleted), when enabled: a scan returns
    /// the rows of expanded nodes without reading their pages again.
    tids: Option<std::collections::HashMap<NodeId, Option<pg_sys::ItemPointerData>>>,
    /// Called between graph operations at least this long apart, where no page is locked
    /// ([`PageStore::yield_every`]).
    yielding: Option<Yielding>,
    /// Edge codes' buffers, and the rotations of the last two vectors encoded: a new node's
    /// edges, and its back-edges, all share it.
    encode: omen_core::quant::EncodeScratch,
}

/// A hook a merge worker runs between graph operations (expansions, exact distances,
/// neighbour-list writes), at most once per `every`.
struct Yielding {
    every: std::time::Duration,
    hook: fn(),
    last: std::time::Instant,
    /// Calls since the clock was last read.
    calls: u32,
}

/// [`PageStore::maybe_yield`] reads the clock once per this many calls. A clock read costs
/// about 27 ns here (`Instant::now`, TSC through the vDSO), as much as a quarter of an exact
/// distance from a cached 784-dimension vector, and a merged entry makes thousands of
/// calls (each distance of its prunes); eight calls are a few microseconds at most, little
/// past the 150 µs between yields.
const CLOCK_EVERY: u32 = 8;

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
        let layout =
            Layout::new(meta.dims.max(1) as usize, meta.slack_degree as usize).expect("layout of an existing index");
        PageStore {
            index,
            layout,
            ranking: meta.ranking(),
            quantizer: cached_quantizer(index, meta),
            prepared: PreparedQuery::default(),
            query: Vec::new(),
            last_live: (NO_NODE, false),
            cache: None,
            codes: None,
            tids: None,
            yielding: None,
            encode: Default::default(),
        }
    }

    /// Runs `hook` between graph operations, once `every` has passed since it last ran: at
    /// the start of an expansion, an exact distance or a neighbour-list write, where this
    /// store holds no page lock. (Merge workers give up their core this way: a query or an
    /// insert woken while a worker runs otherwise waits for a whole merged entry, about
    /// 0.35 ms at 784 dimensions.)
    pub fn yield_every(&mut self, every: std::time::Duration, hook: fn()) {
        self.yielding = Some(Yielding { every, hook, last: std::time::Instant::now(), calls: 0 });
    }

    fn maybe_yield(&mut self) {
        if let Some(y) = &mut self.yielding {
            y.calls += 1;
            if y.calls < CLOCK_EVERY {
                return;
            }
            y.calls = 0;
            let now = std::time::Instant::now();
            if now.duration_since(y.last) >= y.every {
                (y.hook)();
                y.last = std::time::Instant::now();
            }
        }
    }

    /// Keeps the heap TIDs of the nodes expanded from now on ([`PageStore::expanded_tid`]);
    /// forgets those kept so far.
    pub fn keep_tids(&mut self) {
        self.tids.get_or_insert_with(Default::default).clear();
    }

    /// The heap TID of `id` as its expansion read it (None: the node is deleted), or None
    /// when it was not expanded since [`PageStore::keep_tids`].
    pub fn expanded_tid(&self, id: NodeId) -> Option<Option<pg_sys::ItemPointerData>> {
        self.tids.as_ref()?.get(&id).copied()
    }

    /// Keeps the vectors read from now on in memory (up to 64 MiB, then starts over). For
    /// a merge, which holds the merge lock (see [`VectorCache`]), and for the rows a build
    /// inserts past `maintenance_work_mem` (no other process writes the index then).
    pub fn cache_vectors(&mut self) {
        self.cache_vectors_within(VECTOR_CACHE_BYTES);
    }

    /// [`PageStore::cache_vectors`], keeping about `bytes` of vectors at most.
    pub fn cache_vectors_within(&mut self, bytes: usize) {
        let max_entries = (bytes / (4 * self.layout.dims.max(1) + 32)).max(1);
        self.cache = Some(VectorCache { map: Default::default(), max_entries });
        self.cache_codes();
    }

    /// Keeps the codes [`PageStore::code_of`] reads in memory, for the edges a writer adds.
    pub fn cache_codes(&mut self) {
        if self.codes.is_none() {
            self.codes = Some(Default::default());
        }
    }

    /// Whether node records carry edge codes (`Quantizer::relative`).
    pub fn relative_codes(&self) -> bool {
        self.quantizer.relative()
    }

    /// The code of `v`.
    pub fn encode(&self, v: &[f32]) -> Vec<u8> {
        let mut code = vec![0u8; self.layout.code_bytes];
        self.quantizer.encode(v, &mut code);
        code
    }

    /// Runs `f` on the code and vector of the vector record at `location`.
    fn read_vector_record<R>(&self, location: (u32, u16), f: impl FnOnce(&[u8], &[f32]) -> R) -> R {
        if self.layout.chunks > 1 {
            let bytes = self.read_chunks(location.0);
            let cb = self.layout.code_bytes;
            let floats: Vec<f32> =
                bytes[cb..].chunks_exact(4).map(|b| f32::from_ne_bytes(b.try_into().expect("4 bytes"))).collect();
            return f(&bytes[..cb], &floats);
        }
        let guard = ReadGuard::new(self.index, location.0);
        if location.1 == 0 || location.1 as usize > vector_count(guard.page(), &self.layout) {
            pgrx::error!(
                "omen index \"{}\" is corrupt: no vector record at ({}, {})",
                index_name(self.index),
                location.0,
                location.1
            );
        }
        // SAFETY: share-locked vector page, offset checked; the slices die with `f`.
        let (code, vector) = unsafe { vector_at(guard.page(), location.1, &self.layout) };
        f(code, vector)
    }

    /// The bytes of the spanning vector record whose first chunk is on `block`, one page
    /// at a time.
    fn read_chunks(&self, mut block: u32) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.layout.vector_size);
        while bytes.len() < self.layout.vector_size {
            let guard = ReadGuard::new(self.index, block);
            if block == NO_BLOCK || vector_count(guard.page(), &self.layout) != 1 {
                pgrx::error!("omen index \"{}\" is corrupt: broken vector chunk at {block}", index_name(self.index));
            }
            // SAFETY: a chunk page's one item is a ChunkHeader and `len` bytes, within the page.
            unsafe {
                let it = item(guard.page(), 1);
                let head = std::ptr::read_unaligned(it.cast::<ChunkHeader>());
                let len = (head.len as usize).min(CHUNK_PAYLOAD);
                bytes.extend_from_slice(std::slice::from_raw_parts(it.add(std::mem::size_of::<ChunkHeader>()), len));
                block = head.next;
            }
            if block == NO_BLOCK {
                break;
            }
        }
        if bytes.len() != self.layout.vector_size {
            pgrx::error!("omen index \"{}\" is corrupt: a vector record is cut short", index_name(self.index));
        }
        bytes
    }

    /// Writes `vrec` as chunks: over the chain that starts at `first` (a free slot's), or
    /// on new pages when `first` is None; each page in a WAL record of its own, last chunk
    /// first, so a chain is complete before anything points at it. Returns its first block.
    fn write_chunks(&self, vrec: &[u8], first: Option<u32>) -> u32 {
        let parts: Vec<&[u8]> = vrec.chunks(CHUNK_PAYLOAD).collect();
        let mut blocks: Vec<u32> = Vec::with_capacity(parts.len());
        if let Some(mut b) = first {
            // The existing chain's blocks, in order.
            for _ in 0..parts.len() {
                blocks.push(b);
                let guard = ReadGuard::new(self.index, b);
                // SAFETY: a chunk page's first item starts with a ChunkHeader.
                b = unsafe { std::ptr::read_unaligned(item(guard.page(), 1).cast::<ChunkHeader>()) }.next;
            }
        }
        let mut next = NO_BLOCK;
        let mut chunk = vec![0u8; std::mem::size_of::<ChunkHeader>() + CHUNK_PAYLOAD];
        for (j, part) in parts.iter().enumerate().rev() {
            let head = ChunkHeader { next, len: part.len() as u32 };
            // SAFETY: `chunk` starts with room for a ChunkHeader.
            unsafe { std::ptr::write_unaligned(chunk.as_mut_ptr().cast::<ChunkHeader>(), head) };
            let size = std::mem::size_of::<ChunkHeader>() + part.len();
            chunk[std::mem::size_of::<ChunkHeader>()..size].copy_from_slice(part);
            let guard = match blocks.get(j) {
                Some(&b) => {
                    let g = WriteGuard::new(self.index, b);
                    // SAFETY: the existing chunk item is as large as a full chunk (written
                    // by this layout), on the locked working copy.
                    unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), item(g.page(), 1), size) };
                    g
                }
                None => {
                    let g = WriteGuard::extend(self.index);
                    init_page(g.page(), PageKind::Vector);
                    // Every chunk item has the full size, so a reused chain fits any record.
                    add_record(g.page(), &chunk, 1).expect("an empty page holds a chunk");
                    g
                }
            };
            next = guard.block();
            guard.commit();
        }
        next
    }

    /// Runs `f` on node `id`'s vector and liveness, from the cache when it is enabled.
    fn with_vector<R>(&mut self, id: NodeId, f: impl FnOnce(&[f32], bool) -> R) -> R {
        if let Some((v, live)) = self.cache.as_ref().and_then(|c| c.map.get(&id)) {
            return f(v, *live);
        }
        let (location, live) = self.read(id, |n| (n.vector_location(), !n.is_deleted()));
        let Some(cache) = self.cache.as_mut() else {
            return self.read_vector_record(location, |_, v| f(v, live));
        };
        if cache.map.len() >= cache.max_entries {
            cache.map.clear();
        }
        let v = self.read_vector_record(location, |_, v| Box::<[f32]>::from(v));
        let r = f(&v, live);
        self.cache.as_mut().expect("enabled above").map.insert(id, (v, live));
        r
    }

    /// The code of node `id`: from the codes read so far, else from its vector record.
    pub fn code_of(&mut self, id: NodeId) -> Box<[u8]> {
        if let Some(c) = self.codes.as_ref().and_then(|m| m.get(&id)) {
            return c.clone();
        }
        let location = self.read(id, |n| n.vector_location());
        let code = self.read_vector_record(location, |c, _| Box::<[u8]>::from(c));
        if let Some(m) = self.codes.as_mut() {
            m.insert(id, code.clone());
        }
        code
    }

    /// The codes of `ids`, one after the other.
    fn codes_of(&mut self, ids: &[NodeId]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ids.len() * self.layout.code_bytes);
        for &id in ids {
            let c = self.code_of(id);
            out.extend_from_slice(&c);
        }
        out
    }

    /// The codes of `ids` as neighbours of a node whose vector is `owner`, one after the
    /// other: edge codes when the quantizer's codes are relative (`Quantizer::relative`),
    /// else the nodes' own codes.
    pub fn edge_codes(&mut self, owner: &[f32], ids: &[NodeId]) -> Vec<u8> {
        if !self.quantizer.relative() {
            return self.codes_of(ids);
        }
        let cb = self.layout.code_bytes;
        let mut out = vec![0u8; ids.len() * cb];
        let quantizer = std::rc::Rc::clone(&self.quantizer);
        let mut scratch = std::mem::take(&mut self.encode);
        for (&id, code) in ids.iter().zip(out.chunks_mut(cb)) {
            self.with_vector(id, |v, _| quantizer.encode_edge_with(v, owner, code, &mut scratch));
        }
        self.encode = scratch;
        out
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
    /// free space map, else on the last pages, else on new pages; WAL-logged. Returns its id.
    pub fn append(&mut self, tid: &pg_sys::ItemPointerData, vector: &[f32]) -> NodeId {
        self.append_linked(tid, vector, &[], None).expect("no link to refuse")
    }

    /// Like [`PageStore::append`], with out-neighbours, and with `link`: another page to
    /// change in the same WAL record (the insert buffer entry the node is merged from), so
    /// that both changes survive a crash or neither does. Lock order: the node page, then
    /// the vector page, then the linked page. Returns None, writing nothing, when the
    /// link's edit refuses.
    pub fn append_linked(
        &mut self,
        tid: &pg_sys::ItemPointerData,
        vector: &[f32],
        neighbors: &[NodeId],
        mut link: Option<Link>,
    ) -> Option<NodeId> {
        // The graph's lists are pruned to the metapage's slack degree, which the layout is
        // made for: a longer list would be a disagreement between the two, cut here.
        debug_assert!(neighbors.len() <= self.layout.slack_degree, "{} neighbours", neighbors.len());
        let n = neighbors.len().min(self.layout.slack_degree);
        let codes = self.edge_codes(vector, &neighbors[..n]);
        let mut vrec = vec![0u8; self.layout.vector_size];
        let own = self.encode(vector);
        fill_vector_record(&mut vrec, &self.layout, &own, vector);
        let mut rec = vec![0u8; self.layout.node_size];
        fill_node_record(&mut rec, &self.layout, tid, &neighbors[..n], &codes, (0, 0));
        if let Some(done) = self.reuse_free_slot(&mut rec, &vrec, &mut link) {
            return done;
        }
        if self.layout.inline_vectors {
            // One item: the node record, then its vector record; it points at itself.
            rec.extend_from_slice(&vrec);
            let mut guard = self.lock_node_page_with_room();
            return self.add_node(&mut guard, &rec, None).and_then(|id| self.commit_new(guard, id, &mut link));
        }
        if self.layout.chunks > 1 {
            // A spanning vector: its chunks first, then the node that points at them.
            let location = (self.write_chunks(&vrec, None), 1);
            let mut guard = self.lock_node_page_with_room();
            return self
                .add_node(&mut guard, &rec, Some(location))
                .and_then(|id| self.commit_new(guard, id, &mut link));
        }
        let vector_block = self.last_page_with_room(PageKind::Vector);
        let mut guard = self.lock_node_page_with_room();
        let max = self.layout.vectors_per_page;
        let mut placed = None;
        if let Some(b) = vector_block {
            let page = guard.also(self.index, b);
            if page_kind(page) == Some(PageKind::Vector) {
                placed = add_record(page, &vrec, max).map(|off| (b, off));
            }
        }
        let location = match placed {
            Some(l) => l,
            None => {
                let (b, page) = guard.also_extend(self.index);
                init_page(page, PageKind::Vector);
                (b, add_record(page, &vrec, max).expect("an empty page holds a vector"))
            }
        };
        let id = self.add_node(&mut guard, &rec, Some(location))?;
        self.commit_new(guard, id, &mut link)
    }

    /// Adds the node record `rec`, pointing at the vector record at `location` (None: its
    /// own, inline), to the node page of `guard`; returns its id.
    fn add_node(&self, guard: &mut WriteGuard, rec: &[u8], location: Option<(u32, u16)>) -> Option<NodeId> {
        let page = guard.page();
        let off = match add_record(page, rec, self.layout.nodes_per_page) {
            Some(off) => off,
            None => pgrx::error!("omen index \"{}\": the node page filled up under its lock", index_name(self.index)),
        };
        // SAFETY: the record just added at `off` on the exclusively locked working copy.
        let node = unsafe { node_at(page, off, &self.layout) };
        (node.header.vector_block, node.header.vector_offset) = location.unwrap_or((guard.block(), off));
        Some(node_id(guard.block(), off))
    }

    /// A node page with room for another record, exclusively locked: one of the last few
    /// pages, else a new one. Another backend may fill the page between the look and the
    /// lock: then the next candidate is tried.
    fn lock_node_page_with_room(&self) -> WriteGuard {
        for _ in 0..4 {
            let Some(block) = self.last_page_with_room(PageKind::Node) else { break };
            let guard = WriteGuard::new(self.index, block);
            if self.has_room(guard.page(), PageKind::Node) {
                return guard;
            }
        }
        spare_pages::lock_spare_or_new(self.index, |page| self.has_room(page, PageKind::Node))
    }

    /// Whether `page` is a `kind` page with room for one more record.
    fn has_room(&self, page: *const u8, kind: PageKind) -> bool {
        let (max, size) = match kind {
            PageKind::Node => (self.layout.nodes_per_page, self.layout.record_size),
            _ => (self.layout.vectors_per_page, self.layout.vector_size),
        };
        // SAFETY: PageGetFreeSpace reads the header of a locked page.
        page_kind(page) == Some(kind)
            && item_count(page) < max
            && unsafe { pg_sys::PageGetFreeSpace(page as *mut _) } >= size.next_multiple_of(8)
    }

    /// The block of one of the last few pages that is a `kind` page with room for another
    /// record (share-locked to look, then released): new nodes and vectors go there.
    fn last_page_with_room(&self, kind: PageKind) -> Option<u32> {
        if kind == PageKind::Vector && self.layout.chunks > 1 {
            return None;
        }
        let count = block_count(self.index);
        (FIRST_NODE_BLOCK..count).rev().take(4).find(|&block| {
            let guard = ReadGuard::new(self.index, block);
            self.has_room(guard.page(), kind)
        })
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

    /// Writes `rec` over a free slot of a page the free space map offers, if any, and
    /// `vrec` over that slot's vector record: Some of what [`PageStore::commit_new`]
    /// returned, or None when there was no free slot.
    fn reuse_free_slot(&self, rec: &mut [u8], vrec: &[u8], link: &mut Option<Link>) -> Option<Option<NodeId>> {
        loop {
            // Only free slots are ever recorded, so any recorded space means one; asking for
            // a whole node_size would miss pages with one slot (the FSM rounds down).
            // SAFETY: the FSM lookup only reads the index's free space map fork.
            let block = unsafe { pg_sys::GetPageWithFreeSpace(self.index, 1) };
            if block == pg_sys::InvalidBlockNumber || block < FIRST_NODE_BLOCK || block >= block_count(self.index) {
                return None;
            }
            let mut guard = WriteGuard::new(self.index, block);
            let page = guard.page();
            let mut slot = None;
            let mut free = 0usize;
            for off in 1..=node_count(page) as u16 {
                // SAFETY: exclusively locked working copy, offset within its line pointers.
                let node = unsafe { node_at(page, off, &self.layout) };
                if node.is_free() {
                    if slot.is_none() {
                        slot = Some((off, node.vector_location()));
                    } else {
                        free += 1;
                    }
                }
            }
            let Some((off, location)) = slot else {
                drop(guard);
                record_free_slots(self.index, block, 0, &self.layout);
                continue;
            };
            // The slot keeps its vector record: the new vector goes there (inline: right
            // after the node record, which then points at itself).
            let location = if self.layout.inline_vectors { (block, off) } else { location };
            if self.layout.chunks > 1 {
                self.write_chunks(vrec, Some(location.0));
            } else if !self.layout.inline_vectors {
                let vpage = guard.also(self.index, location.0);
                if location.1 == 0 || location.1 as usize > vector_count(vpage, &self.layout) {
                    pgrx::error!(
                        "omen index \"{}\" is corrupt: free slot without a vector record",
                        index_name(self.index)
                    );
                }
                // SAFETY: the vector record at `location` is vector_size bytes on a locked
                // working copy.
                unsafe { std::ptr::copy_nonoverlapping(vrec.as_ptr(), item(vpage, location.1), vrec.len()) };
            }
            set_vector_location(rec, location);
            // SAFETY: the item at `off` is record_size bytes on the locked working copy: the
            // node record (node_size bytes), then, inline, the vector record.
            unsafe {
                std::ptr::copy_nonoverlapping(rec.as_ptr(), item(page, off), rec.len());
                if self.layout.inline_vectors {
                    std::ptr::copy_nonoverlapping(vrec.as_ptr(), item(page, off).add(rec.len()), vrec.len());
                }
            }
            let done = self.commit_new(guard, node_id(block, off), link);
            if done.is_some() {
                record_free_slots(self.index, block, free, &self.layout);
            }
            return Some(done);
        }
    }

    /// Visits every node of the index, one page at a time, with the page share-locked.
    pub fn for_each_node(&self, mut f: impl FnMut(NodeId, &NodeRef)) {
        for block in FIRST_NODE_BLOCK..block_count(self.index) {
            let guard = ReadGuard::new(self.index, block);
            for off in 1..=node_count(guard.page()) as u16 {
                // SAFETY: share-locked page, offset within its line pointers.
                let node = unsafe { node_at(guard.page(), off, &self.layout) };
                f(node_id(block, off), &node);
            }
        }
    }

    /// Edits the nodes of `block` under its exclusive lock; WAL-logs the page if `f` returns true.
    pub fn edit_page(&self, block: u32, f: impl FnOnce(u32, &mut [NodeRef]) -> bool) {
        {
            // Pages that hold no nodes are skipped without an exclusive lock.
            let guard = ReadGuard::new(self.index, block);
            if node_count(guard.page()) == 0 {
                return;
            }
        }
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
}

impl GraphStore for PageStore {
    /// Pulls the parts of `id`'s page an expansion reads first into the CPU cache, when this
    /// backend knows the buffer that held it ([`recent_buffer`]; nothing is pinned): the page
    /// header with the line pointers, the record's header and neighbour ids, and its inline
    /// vector. The record's place is not read (that would wait for the line pointer) but
    /// computed: a node page's records are all `record_size` long, added in offset order by
    /// `PageAddItemExtended` from the special area down. Where that is not so, the hint is
    /// wasted, not wrong. A search calls this for the node it will probably expand next
    /// while it estimates the current node's neighbours.
    fn prefetch_neighbors(&mut self, id: NodeId) {
        let (block, offset) = node_location(id);
        let Some(buf) = recent_buffer(self.index, block) else { return };
        prefetch_descriptor(buf);
        prefetch_page_bytes(buf, 0, PAGE_HEADER + ITEM_ID * offset as usize);
        let record = self.layout.record_size.next_multiple_of(8);
        let Some(at) = (PAGE_SIZE - PAGE_OPAQUE.next_multiple_of(8)).checked_sub(offset as usize * record) else {
            return;
        };
        prefetch_page_bytes(buf, at, self.layout.codes_offset());
        if self.layout.inline_vectors {
            prefetch_page_bytes(buf, at + self.layout.node_size, self.layout.record_size - self.layout.node_size);
        }
    }

    fn distance(&mut self, id: NodeId, query: &[f32]) -> f32 {
        self.maybe_yield();
        let ranking = self.ranking;
        let (d, live) = self.with_vector(id, |v, live| (ranking.rank(v, query), live));
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
        self.maybe_yield();
        debug_assert!(neighbors.len() <= self.layout.slack_degree, "{} neighbours", neighbors.len()); // as in append_linked
        let n = neighbors.len().min(self.layout.slack_degree);
        let neighbors = &neighbors[..n];
        // Codes first (other pages may be read for them), then the node's page alone.
        let cb = self.layout.code_bytes;
        let mut known: Vec<Option<Box<[u8]>>> = vec![None; n];
        self.read(id, |node| {
            for (i, &m) in node.neighbors().iter().enumerate() {
                if let Some(j) = neighbors.iter().position(|&x| x == m) {
                    known[j] = Some(node.codes_area[i * cb..(i + 1) * cb].into());
                }
            }
        });
        let mut codes = Vec::with_capacity(n * cb);
        let mut owner: Option<Vec<f32>> = None;
        for (j, &m) in neighbors.iter().enumerate() {
            match &known[j] {
                Some(c) => codes.extend_from_slice(c),
                None if self.quantizer.relative() => {
                    let owner = owner.get_or_insert_with(|| self.with_vector(id, |v, _| v.to_vec()));
                    let c = self.edge_codes(owner, &[m]);
                    codes.extend_from_slice(&c);
                }
                None => {
                    let c = self.code_of(m);
                    codes.extend_from_slice(&c);
                }
            }
        }
        self.write(id, |node| {
            if node.neighbors() == neighbors {
                return false;
            }
            node.neighbors_area[..n].copy_from_slice(neighbors);
            node.codes_area[..n * cb].copy_from_slice(&codes);
            node.header.neighbor_count = n as u16;
            true
        });
    }

    fn add_edge(&mut self, id: NodeId, to: NodeId, room: usize, out: &mut Vec<NodeId>) -> bool {
        self.maybe_yield();
        debug_assert!(room <= self.layout.slack_degree, "room for {room}"); // as in append_linked
        let room = room.min(self.layout.slack_degree);
        // The edge's code first (it may read other pages), then `id`'s page alone: one
        // exclusive access instead of a read, a second read and a write.
        let code: Box<[u8]> = if self.quantizer.relative() {
            let owner = self.with_vector(id, |v, _| v.to_vec());
            self.edge_codes(&owner, &[to]).into()
        } else {
            self.code_of(to)
        };
        let cb = self.layout.code_bytes;
        let mut there = false;
        self.write(id, |node| {
            let count = node.header.neighbor_count as usize;
            if node.neighbors().contains(&to) {
                there = true;
                return false;
            }
            if count >= room {
                out.clear();
                out.extend_from_slice(node.neighbors());
                return false;
            }
            node.neighbors_area[count] = to;
            node.codes_area[count * cb..(count + 1) * cb].copy_from_slice(&code);
            node.header.neighbor_count = count as u16 + 1;
            there = true;
            true
        });
        there
    }

    fn is_live(&mut self, id: NodeId) -> bool {
        if self.last_live.0 == id {
            return self.last_live.1;
        }
        if let Some((_, live)) = self.cache.as_ref().and_then(|c| c.map.get(&id)) {
            return *live;
        }
        self.read(id, |n| !n.is_deleted())
    }

    fn prepare(&mut self, query: &[f32]) {
        self.query.clear();
        self.query.extend_from_slice(query);
        if query.len() == self.quantizer.dims() {
            self.quantizer.prepare(query, &mut self.prepared);
        }
    }

    fn expand_coded(
        &mut self,
        id: NodeId,
        keep: &mut dyn FnMut(NodeId) -> bool,
        out: &mut Vec<(NodeId, f32)>,
    ) -> Option<(f32, bool)> {
        self.maybe_yield();
        let cb = self.layout.code_bytes;
        let relative = self.quantizer.relative();
        let first = out.len();
        let (block, offset) = node_location(id);
        let location_live = {
            let guard = ReadGuard::new(self.index, block);
            if offset as usize > node_count(guard.page()) {
                pgrx::error!("omen index \"{}\" is corrupt: node {id} does not exist", index_name(self.index));
            }
            // SAFETY: share-locked page, offset checked; the view dies with the guard.
            let node = unsafe { node_at(guard.page(), offset, &self.layout) };
            for (i, &n) in node.neighbors().iter().enumerate() {
                if keep(n) {
                    let code = &node.codes_area[i * cb..(i + 1) * cb];
                    // Edge codes: the part without the node's own distance, added below.
                    let estimate = if relative {
                        self.quantizer.edge_partial(&self.prepared, code)
                    } else {
                        self.quantizer.estimate(&self.prepared, code)
                    };
                    out.push((n, estimate));
                }
            }
            if let Some(tids) = self.tids.as_mut() {
                tids.insert(id, (!node.is_deleted()).then(|| node.heap_tid()));
            }
            // An inline vector is on this page: the exact distance needs no other page.
            let inline = self.layout.inline_vectors.then(|| {
                // SAFETY: the same share-locked page and offset; the slices die with the guard.
                let (_, v) = unsafe { vector_at(guard.page(), offset, &self.layout) };
                self.ranking.rank(v, &self.query)
            });
            (node.vector_location(), !node.is_deleted(), inline)
        };
        let (location, live, inline) = location_live;
        let ranking = self.ranking;
        let query = std::mem::take(&mut self.query);
        let exact = match (inline, self.cache.as_ref().and_then(|c| c.map.get(&id))) {
            (Some(d), _) => d,
            (None, Some((v, _))) => ranking.rank(v, &query),
            (None, None) => self.read_vector_record(location, |_, v| ranking.rank(v, &query)),
        };
        self.query = query;
        let exact = if exact.is_nan() { f32::INFINITY } else { exact };
        if relative {
            for e in &mut out[first..] {
                e.1 += exact;
            }
        }
        Some((exact, live))
    }
}
