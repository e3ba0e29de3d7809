//! On-page layout: the metapage and the node records.

use omen_core::distance::Metric;
use omen_core::graph::NodeId;

/// Block number of the metapage.
pub const META_BLOCK: u32 = 0;
/// "OMEN" in ASCII.
pub const MAGIC: u32 = 0x4f4d_454e;
/// Version of this layout.
pub const LAYOUT_VERSION: u32 = 2;
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
}

impl Meta {
    /// The metric stored at build time.
    pub fn metric(&self) -> Metric {
        Metric::from_code(self.metric as u8).unwrap_or(Metric::L2)
    }
}

/// The fixed header of a node record; the neighbour ids and then the vector follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NodeHeader {
    /// Heap TID: block hi, block lo, offset (ItemPointerData, unaligned halves).
    pub tid: [u16; 3],
    pub flags: u8,
    pub reserved: u8,
    pub neighbor_count: u16,
    pub reserved2: u16,
}

/// Sizes derived from an index's dimensions and degree bound.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub dims: usize,
    pub slack_degree: usize,
    pub node_size: usize,
    pub nodes_per_page: usize,
}

impl Layout {
    /// The layout for `dims` dimensions and `slack_degree` stored neighbours, or None when a
    /// node would not fit on a page.
    pub fn new(dims: usize, slack_degree: usize) -> Option<Layout> {
        let node_size = std::mem::size_of::<NodeHeader>() + 4 * slack_degree + 4 * dims;
        let aligned = node_size.next_multiple_of(8);
        let per_page = ((PAGE_SIZE - PAGE_HEADER) / (aligned + ITEM_ID)).min(MAX_NODES_PER_PAGE);
        (per_page >= 1).then_some(Layout { dims, slack_degree, node_size, nodes_per_page: per_page })
    }

    /// Largest number of dimensions a node of `slack_degree` neighbours can hold.
    pub fn max_dims(slack_degree: usize) -> usize {
        let room = PAGE_SIZE - PAGE_HEADER - ITEM_ID - std::mem::size_of::<NodeHeader>() - 4 * slack_degree;
        room / 4 - 1
    }

    /// Byte offset of the neighbour ids within a record.
    pub const NEIGHBORS: usize = std::mem::size_of::<NodeHeader>();

    /// Byte offset of the vector within a record.
    pub fn vector_offset(&self) -> usize {
        Self::NEIGHBORS + 4 * self.slack_degree
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

/// Where the `i`-th node of a build goes: nodes are packed in order from block 1 on.
pub fn build_position(i: usize, layout: &Layout) -> NodeId {
    let block = 1 + (i / layout.nodes_per_page) as u32;
    node_id(block, (i % layout.nodes_per_page) as u16 + 1)
}
