//! On-page layout: the metapage, the centroid page, node records and vector records.
//!
//! Block 0 is the metapage, block 1 the centroid of the codes ([`CENTROID_BLOCK`]); node
//! pages, vector pages and insert-buffer pages follow in any order. Every page but a
//! buffer page carries a [`PageOpaque`] with its [`PageKind`] in its special area (buffer
//! pages have their own, see `insert_buffer`).
//!
//! A node record holds the heap TID, flags, where the node's vector record is, and its
//! neighbours' ids *with their codes*: expanding a node ranks all of its neighbours from
//! this one page. The full vector (and the node's own code, which the records of nodes
//! pointing at it copy) lives in a vector record on a vector page, read only when the node
//! itself is expanded (for its exact distance) or by the graph's writers.

use omen_core::distance::{Metric, Ranking, normalize};
use omen_core::graph::{GraphParams, NodeId};

/// Block number of the metapage.
pub const META_BLOCK: u32 = 0;
/// "OMEN" in ASCII.
pub const MAGIC: u32 = 0x4f4d_454e;
/// Version of this layout.
pub const LAYOUT_VERSION: u32 = 6;
/// Block number of the (first) centroid page.
pub const CENTROID_BLOCK: u32 = 1;
/// No node or vector page comes before this block (the first after a one-page centroid);
/// loops over node pages start here and skip pages of other kinds.
pub const FIRST_NODE_BLOCK: u32 = 2;
/// The seed of every index's code rotation.
pub const CODE_SEED: u64 = 0x6f6d_656e_5242_5131;

/// What a page holds, in its special area ([`PageOpaque`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum PageKind {
    Meta = 1,
    Centroid = 2,
    Node = 3,
    Vector = 4,
}

/// Marks an omen page's special area.
pub const PAGE_MAGIC: u16 = 0x0e4e;

/// The special area of every page but insert-buffer pages.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PageOpaque {
    pub kind: u16,
    pub magic: u16,
    pub reserved: u32,
}

/// Bytes of a [`PageOpaque`].
pub const PAGE_OPAQUE: usize = std::mem::size_of::<PageOpaque>();
/// Marks "no node" (an empty index has no entry point).
pub const NO_NODE: NodeId = u32::MAX;
/// Bytes of a page header (SizeOfPageHeaderData, MAXALIGN'd).
pub const PAGE_HEADER: usize = 24;
/// Bytes of a line pointer.
pub const ITEM_ID: usize = 4;
/// Marks "no page" in the buffer chains (InvalidBlockNumber).
pub const NO_BLOCK: u32 = u32::MAX;
/// At most this many nodes share a page (the offset must fit 8 bits of a NodeId).
pub const MAX_NODES_PER_PAGE: usize = 255;
/// Page size.
pub const PAGE_SIZE: usize = pgrx::pg_sys::BLCKSZ as usize;

/// The node record's flag bit for a deleted node (its row is dead): still traversed by
/// searches until VACUUM has repaired the graph around it, never returned.
pub const FLAG_DELETED: u8 = 1;
/// The flag bit of a free slot: no edge points at it, inserts may reuse it.
pub const FLAG_FREE: u8 = 2;

/// The metapage's contents, right after the page header.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    pub magic: u32,
    pub version: u32,
    pub dims: u32,
    pub metric: u32,
    pub max_neighbors: u32,
    pub slack_degree: u32,
    pub build_list_size: u32,
    pub alpha: f32,
    pub entry: NodeId,
    pub node_size: u32,
    pub nodes_per_page: u32,
    /// The insert buffer (see `insert_buffer`): the segment inserts append to, as its last
    /// page (NO_BLOCK while empty), its id and its page count.
    pub buffer_tail: u32,
    pub buffer_segment: u32,
    pub buffer_pages: u32,
    /// The sealed segment a merge is working through (NO_BLOCK when none).
    pub merge_tail: u32,
    pub merge_segment: u32,
    pub merge_pages: u32,
    /// Emptied buffer pages, chained through their `prev` links, for the next segments.
    pub free_buffer_tail: u32,
    /// The id the next segment gets.
    pub next_segment: u32,
    /// Segments merged into the graph since the index was built.
    pub merges_done: u32,
    /// Duration of the last merge of a whole segment, in milliseconds.
    pub last_merge_ms: u32,
    /// When the last merge of a whole segment ended (TimestampTz), 0 if never.
    pub last_merge_end: i64,
    /// Entries merged into the graph since the index was built.
    pub merged_entries: u64,
    /// When the merge segment was sealed (TimestampTz): its merge's start.
    pub merge_sealed_at: i64,
    /// Whether the centroid page holds a centroid (else the codes are centred on zero).
    pub has_centroid: u32,
    pub code_bytes: u32,
    pub vector_size: u32,
    pub vectors_per_page: u32,
    /// Tells this build's centroid from another's (the build's start time): backends cache
    /// the quantizer under the index's OID and this.
    pub build_id: i64,
    /// 1: a cosine index whose vectors (nodes and buffer entries) are stored scaled to unit
    /// length, ranked by `1 - a·b` ([`Ranking`]); 0: stored as given (indexes built before
    /// this field, whose metapage holds zero here), ranked by the cosine kernel.
    pub unit_vectors: u32,
    /// Pages of the merge segment that merges have gone through since it was sealed (the
    /// back-pressure of `omen.insert_buffer_cap` counts the rest: [`Meta::pages_in_use`]).
    /// An estimate: a page walked twice (by a merge after a crash, or after the number of
    /// merge parts changed) counts twice. Zero in indexes built before this field.
    pub merge_pages_done: u32,
}

impl Meta {
    /// Buffer pages whose entries are not all merged yet, as far as the metapage knows: the
    /// append segment's, and the merge segment's that no merge has gone through.
    pub fn pages_in_use(&self) -> u32 {
        self.buffer_pages + self.merge_pages.saturating_sub(self.merge_pages_done)
    }

    /// The metric stored at build time.
    pub fn metric(&self) -> Metric {
        Metric::from_code(self.metric as u8).unwrap_or(Metric::L2)
    }

    /// How exact distances between this index's stored vectors (and a query prepared by
    /// [`Meta::stored_vector`]) are ranked.
    pub fn ranking(&self) -> Ranking {
        Ranking::new(self.metric(), self.unit_vectors != 0)
    }

    /// `v` as this index stores it: scaled to unit length in a cosine index that stores
    /// unit vectors, else `v` itself (a zero vector is left as it is).
    pub fn stored_vector<'a>(&self, v: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
        stored_vector(self.ranking(), v)
    }

    /// The graph parameters the index was built with (its metapage, not its current
    /// options, which ALTER INDEX may have changed since).
    pub fn params(&self) -> GraphParams {
        GraphParams {
            max_neighbors: self.max_neighbors as usize,
            build_list_size: self.build_list_size as usize,
            alpha: self.alpha,
            metric: self.metric(),
            slack: Some(self.slack_degree as usize),
        }
    }
}

/// The fixed header of a node record; the neighbour ids and then their codes follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NodeHeader {
    /// Heap TID: block hi, block lo, offset (ItemPointerData, unaligned halves).
    pub tid: [u16; 3],
    pub flags: u8,
    pub reserved: u8,
    pub neighbor_count: u16,
    /// The vector record: its line pointer (1-based) and block.
    pub vector_offset: u16,
    pub vector_block: u32,
}

/// Sizes derived from an index's dimensions and degree bound.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub dims: usize,
    pub slack_degree: usize,
    /// Bytes of one code (`omen_core::quant`).
    pub code_bytes: usize,
    pub node_size: usize,
    pub nodes_per_page: usize,
    /// A vector record: the node's code, then its floats.
    pub vector_size: usize,
    pub vectors_per_page: usize,
    /// Pages one vector record spans: 1, or more for vectors too large for a page (then
    /// each page holds one chunk, see [`ChunkHeader`], and `vectors_per_page` is 1).
    pub chunks: usize,
    /// Whether each node's vector record follows its node record in the same item of the
    /// node page (so expanding a node reads one page), rather than on a vector page. Chosen
    /// where it takes no more room per node than separate pages: with R = 32 at 128, 384,
    /// 768 and 784 dimensions (at 384, two items of 4,068 bytes a page against node records
    /// of 2,476 bytes three a page and vector records of 1,592 five a page), not at 200–512
    /// other than 384, nor past about 800. At 64 only with a slack degree of 41: a new index
    /// there takes 38 ([`Layout::slack_for`]) and keeps its vectors on vector pages.
    pub inline_vectors: bool,
    /// Bytes of one item of a node page: `node_size`, plus `vector_size` when inline.
    pub record_size: usize,
}

/// The head of one chunk of a vector record that spans pages: the next chunk's block
/// (NO_BLOCK for the last) and the bytes of the record this chunk holds.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ChunkHeader {
    pub next: u32,
    pub len: u32,
}

/// Record bytes one chunk holds: a whole page's item, less its header.
pub const CHUNK_PAYLOAD: usize =
    (PAGE_SIZE - PAGE_HEADER - PAGE_OPAQUE - ITEM_ID) / 8 * 8 - std::mem::size_of::<ChunkHeader>();

/// Floats of the centroid one centroid page holds.
pub const CENTROID_FLOATS: usize = (PAGE_SIZE - PAGE_HEADER - PAGE_OPAQUE) / 4;

/// Records of `size` bytes that fit on a page with a [`PageOpaque`].
fn per_page(size: usize) -> usize {
    ((PAGE_SIZE - PAGE_HEADER - PAGE_OPAQUE) / (size.next_multiple_of(8) + ITEM_ID)).min(MAX_NODES_PER_PAGE)
}

impl Layout {
    /// The layout for `dims` dimensions and `slack_degree` stored neighbours, or None when a
    /// node record or a vector record would not fit on a page.
    pub fn new(dims: usize, slack_degree: usize) -> Option<Layout> {
        let code_bytes = omen_core::quant::Quantizer::code_bytes_for(dims);
        let node_size = std::mem::size_of::<NodeHeader>() + (4 + code_bytes) * slack_degree;
        let vector_size = code_bytes + 4 * dims;
        let (vectors_per_page, chunks) = match per_page(vector_size) {
            0 => (1, vector_size.div_ceil(CHUNK_PAYLOAD)),
            n => (n, 1),
        };
        let apart = per_page(node_size);
        let together = per_page(node_size + vector_size);
        // Pages per node: 1 / together inline, 1 / apart + 1 / vectors_per_page apart.
        let inline_vectors =
            chunks == 1 && together >= 1 && apart * vectors_per_page <= together * (apart + vectors_per_page);
        let record_size = if inline_vectors { node_size + vector_size } else { node_size };
        let nodes_per_page = if inline_vectors { together } else { apart };
        (nodes_per_page >= 1).then_some(Layout {
            dims,
            slack_degree,
            code_bytes,
            node_size,
            nodes_per_page,
            vector_size,
            vectors_per_page,
            chunks,
            inline_vectors,
            record_size,
        })
    }

    /// The slack degree a new index of `dims` dimensions gets: of those from `1.15 R`
    /// (rounded up) to [`GraphParams::default_slack_degree`], the largest among those that
    /// take the fewest pages a node. A node record a few neighbours shorter can fit another
    /// record on every page: at R = 32 and 64 dimensions, 38 instead of 41 puts four node
    /// records on a page instead of three (with their vectors on vector pages), 13% fewer
    /// pages. Most dimensions keep 41.
    pub fn slack_for(dims: usize, params: &GraphParams) -> usize {
        let (lo, hi) = Layout::slack_range(params);
        let pages = |s: usize| Layout::new(dims.max(1), s).map(|l| l.pages_per_node());
        let mut best = (hi, pages(hi));
        for s in (lo..hi).rev() {
            if let Some(p) = pages(s)
                && best.1.is_none_or(|b| p < b * (1.0 - 1e-9))
            {
                best = (s, Some(p));
            }
        }
        best.0
    }

    /// The slack degrees [`Layout::slack_for`] chooses from: `ceil(1.15 R)` to
    /// `floor(1.3 R)`. The smallest bounds the dimensions an index of `R` can hold.
    pub fn slack_range(params: &GraphParams) -> (usize, usize) {
        let hi = params.default_slack_degree();
        ((params.max_neighbors * 115).div_ceil(100).clamp(params.max_neighbors, hi), hi)
    }

    /// Pages a node takes: its share of a node page, and of a vector page or its chunks'
    /// pages when the vectors are apart.
    pub fn pages_per_node(&self) -> f64 {
        let node = 1.0 / self.nodes_per_page as f64;
        if self.inline_vectors { node } else { node + self.chunks as f64 / self.vectors_per_page as f64 }
    }

    /// Pages the centroid takes, from [`CENTROID_BLOCK`] on.
    pub fn centroid_pages(&self) -> usize {
        self.dims.div_ceil(CENTROID_FLOATS).max(1)
    }

    /// The first block a build writes node pages to, after the centroid's pages.
    pub fn first_node_block(&self) -> u32 {
        CENTROID_BLOCK + self.centroid_pages() as u32
    }

    /// The layout for `dims` dimensions under `params`, or an ERROR (54000) when a node
    /// record would not fit on a page.
    pub fn check(dims: usize, params: &GraphParams) -> Layout {
        if let Some(layout) = Layout::new(dims, params.slack_degree()) {
            return layout;
        }
        pgrx::ereport!(
            ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "omen indexes support at most {} dimensions with max_neighbors = {}, not {dims}",
                Layout::max_dims(Layout::slack_range(params).0),
                params.max_neighbors
            )
        );
    }

    /// The layout of a new index of `dims` dimensions: chooses its slack degree
    /// ([`Layout::slack_for`], kept in `params.slack` for the metapage), then checks that a
    /// node record fits ([`Layout::check`], an ERROR otherwise).
    pub fn for_new_index(dims: usize, params: &mut GraphParams) -> Layout {
        params.slack = Some(Layout::slack_for(dims, params));
        Layout::check(dims, params)
    }

    /// Largest number of dimensions an index of `slack_degree` stored neighbours can hold.
    pub fn max_dims(slack_degree: usize) -> usize {
        (1..=omen_core::MAX_DIM).rev().find(|&d| Layout::new(d, slack_degree).is_some()).unwrap_or(0)
    }

    /// Byte offset of the neighbour ids within a record.
    pub const NEIGHBORS: usize = std::mem::size_of::<NodeHeader>();

    /// Byte offset of the neighbours' codes within a record.
    pub fn codes_offset(&self) -> usize {
        Self::NEIGHBORS + 4 * self.slack_degree
    }

    /// Node pages a build of `n` nodes writes.
    pub fn node_pages(&self, n: usize) -> usize {
        n.div_ceil(self.nodes_per_page)
    }

    /// Where the vector record of the `i`-th node of a build of `n` nodes goes: vector
    /// pages follow the node pages (a spanning record's chunks on consecutive pages).
    /// With inline vectors, the node's own place.
    pub fn build_vector_position(&self, i: usize, n: usize) -> (u32, u16) {
        if self.inline_vectors {
            return node_location(build_position(i, self));
        }
        let first = self.first_node_block() + self.node_pages(n) as u32;
        if self.chunks > 1 {
            return (first + (i * self.chunks) as u32, 1);
        }
        (first + (i / self.vectors_per_page) as u32, (i % self.vectors_per_page) as u16 + 1)
    }
}

/// A heap TID as stored in node records and buffer entries: block hi, block lo, offset.
pub fn tid_words(t: &pgrx::pg_sys::ItemPointerData) -> [u16; 3] {
    [t.ip_blkid.bi_hi, t.ip_blkid.bi_lo, t.ip_posid]
}

/// The heap TID of stored words (see [`tid_words`]).
pub fn tid_of(t: &[u16; 3]) -> pgrx::pg_sys::ItemPointerData {
    pgrx::pg_sys::ItemPointerData { ip_blkid: pgrx::pg_sys::BlockIdData { bi_hi: t[0], bi_lo: t[1] }, ip_posid: t[2] }
}

/// A heap TID as a hashable (block, offset) key.
pub fn tid_key(t: &pgrx::pg_sys::ItemPointerData) -> (u32, u16) {
    (((t.ip_blkid.bi_hi as u32) << 16) | t.ip_blkid.bi_lo as u32, t.ip_posid)
}

/// The id of the node at `block`, line pointer `offset` (1-based).
pub fn node_id(block: u32, offset: u16) -> NodeId {
    (block << 8) | (offset as u32 - 1)
}

/// The block and 1-based offset of a node.
pub fn node_location(id: NodeId) -> (u32, u16) {
    (id >> 8, (id & 0xff) as u16 + 1)
}

/// Where the `i`-th node of a build goes: nodes are packed in order after the centroid.
pub fn build_position(i: usize, layout: &Layout) -> NodeId {
    let block = layout.first_node_block() + (i / layout.nodes_per_page) as u32;
    node_id(block, (i % layout.nodes_per_page) as u16 + 1)
}

/// Whether a new index of `metric` stores unit vectors (`Meta::unit_vectors`): every cosine
/// index built since the field exists.
pub fn stores_unit_vectors(metric: Metric) -> bool {
    Ranking::new(metric, true).unit_cosine
}

/// `v` as an index ranked by `ranking` stores it: scaled to unit length when it ranks
/// unit vectors, else `v` itself (a zero vector is left as it is). The build (before its
/// metapage exists) and `Meta::stored_vector` both go through here.
pub fn stored_vector(ranking: Ranking, v: &[f32]) -> std::borrow::Cow<'_, [f32]> {
    if !ranking.unit_cosine {
        return std::borrow::Cow::Borrowed(v);
    }
    let mut unit = v.to_vec();
    normalize(&mut unit);
    std::borrow::Cow::Owned(unit)
}
