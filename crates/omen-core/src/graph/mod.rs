//! The Vamana graph of DiskANN (Subramanya et al., NeurIPS 2019), one layer.
//!
//! A Vamana index is a directed graph over the stored vectors in which every node keeps at
//! most `R` ([`GraphParams::max_neighbors`]) out-edges, chosen by [`robust_prune`] so that
//! they are both close and spread out in different directions. A query walks the graph
//! greedily from one fixed entry point (the medoid) with a bounded candidate list
//! ([`BeamSearch`]); the list size `L` trades speed for recall.
//!
//! The pieces:
//!
//! - [`GraphStore`]: the few operations the algorithms need from wherever the graph lives.
//!   [`MemoryStore`] keeps it in memory (tests, benchmarks); the PostgreSQL extension
//!   implements the trait over index pages, so search and [`insert`] run unchanged there.
//! - [`BeamSearch`]: a resumable greedy beam search. Its buffers are reused between queries
//!   and its visited set is sized by the search, not by the graph.
//! - [`robust_prune`]: DiskANN's Algorithm 2, the rule that picks diverse neighbours.
//! - [`insert`]: adds one node in place (search, prune, back-edges), the path of
//!   `INSERT` into an existing index; [`choose_neighbors`] and [`add_back_edges`] are its
//!   two halves, which the insert buffer's merge runs separately.
//! - [`repair_deleted`]: in-place delete repair (IP-DiskANN): reconnects the in-neighbours
//!   of a deleted node before VACUUM frees it; [`replacement_entry`] replaces a deleted
//!   entry point.
//! - [`build`]: the parallel, deterministic in-memory construction of a whole graph: two
//!   passes (`alpha = 1`, then the final `alpha`) over a seeded random order, in batches
//!   that are searched in parallel against a frozen graph and then applied in a fixed order.
//!
//! Distances are always [`Metric::rank_distance`] values (squared L2 for L2): they order
//! like the SQL distance and are cheaper. Smaller is closer. A NaN distance (a zero vector
//! under cosine) is treated as `+inf`, so such nodes sort last instead of breaking the order.
//!
//! Node ids are dense `u32`s; `u32::MAX` is reserved (it marks empty slots in the
//! search's hash set) and is never a valid node.

mod adjacency;
mod build;
mod coded;
mod delete;
mod id_set;
mod memory;
mod prune;
mod search;
#[cfg(test)]
mod test_data;
#[cfg(test)]
mod tests;

use crate::distance::Metric;

pub use adjacency::Adjacency;
pub use build::{BuiltGraph, build, build_coded};
pub use coded::CodedStore;
pub use delete::{RepairStats, repair_deleted, replacement_entry};
pub use memory::MemoryStore;
pub use prune::{add_back_edges, choose_neighbors, insert, robust_prune};
pub use search::BeamSearch;

/// Index of a node (a stored vector) in the graph. `u32::MAX` is reserved.
pub type NodeId = u32;

/// Parameters shared by build and insert.
#[derive(Clone, Copy, Debug)]
pub struct GraphParams {
    /// `R`: the out-degree bound after pruning (default 32).
    pub max_neighbors: usize,
    /// `L` used during construction and insert: the candidate list size of their searches
    /// (default 100).
    pub build_list_size: usize,
    /// The pruning factor of the final pass and of inserts (default 1.2). The first build
    /// pass always uses 1.0. Ignored (taken as 1.0) for [`Metric::InnerProduct`], whose
    /// distances can be negative.
    pub alpha: f32,
    /// The metric whose [`Metric::rank_distance`] the graph is built for.
    pub metric: Metric,
    /// The slack degree ([`GraphParams::slack_degree`]); None: the default,
    /// [`GraphParams::default_slack_degree`]. An index stores the one its page layout chose
    /// (its metapage's params always set it). `GraphParams { max_neighbors, ..p }` keeps `p`'s.
    pub slack: Option<usize>,
}

impl Default for GraphParams {
    fn default() -> Self {
        GraphParams { max_neighbors: 32, build_list_size: 64, alpha: 1.2, metric: Metric::L2, slack: None }
    }
}

impl GraphParams {
    /// The degree a neighbour list may reach through back-edges before it is pruned back to
    /// `R`: [`GraphParams::slack`] if set, else [`GraphParams::default_slack_degree`]; never
    /// below `R`. Pages that hold neighbour lists must have room for this many.
    pub fn slack_degree(&self) -> usize {
        self.slack.unwrap_or_else(|| self.default_slack_degree()).max(self.max_neighbors)
    }

    /// `floor(1.3 * R)` (41 for R = 32). Rounded down: at R = 32 one slot fewer lets two
    /// node records with their vectors share a page at 128 and 384 dimensions
    /// (`Layout::inline_vectors`).
    pub fn default_slack_degree(&self) -> usize {
        (self.max_neighbors * 13 / 10).max(self.max_neighbors)
    }

    /// The pruning factor actually applied for this metric: `alpha`, or 1.0 for inner
    /// product (scaling a negative distance would invert the rule).
    pub fn effective_alpha(&self, alpha: f32) -> f32 {
        match self.metric {
            Metric::InnerProduct => 1.0,
            _ => alpha,
        }
    }
}

/// What search and insert need from wherever the graph lives (memory or PostgreSQL pages).
///
/// Methods take `&mut self` so an implementation may pin buffers, cache pages or count
/// reads.
pub trait GraphStore {
    /// Rank distance ([`Metric::rank_distance`]) from `query` to node `id`'s vector.
    fn distance(&mut self, id: NodeId, query: &[f32]) -> f32;
    /// Replace `out` with the out-neighbours of `id`.
    fn neighbors(&mut self, id: NodeId, out: &mut Vec<NodeId>);
    /// Replace `out` with the full vector of `id`.
    fn vector(&mut self, id: NodeId, out: &mut Vec<f32>);
    /// Overwrite the neighbour list of `id` (`len <= slack_degree`).
    fn set_neighbors(&mut self, id: NodeId, neighbors: &[NodeId]);
    /// Adds the edge `id -> to` when `id`'s list lacks it and holds fewer than `room`
    /// neighbours; true when the edge is there afterwards. False, writing nothing, when the
    /// list is full: `out` then holds `id`'s neighbours, for the caller to prune. The default
    /// reads the list and overwrites it; a page store does it in one page access (and so
    /// cannot lose an edge another writer added in between).
    fn add_edge(&mut self, id: NodeId, to: NodeId, room: usize, out: &mut Vec<NodeId>) -> bool {
        self.neighbors(id, out);
        if out.contains(&to) {
            return true;
        }
        if out.len() < room {
            out.push(to);
            self.set_neighbors(id, out);
            return true;
        }
        false
    }
    /// Whether `id` is a live node that may be returned (deleted nodes are still traversed
    /// but never returned).
    fn is_live(&mut self, _id: NodeId) -> bool {
        true
    }
    /// A hint that `id`'s vector will be read soon (search and prune announce the next
    /// node while computing the current distance). The default does nothing; the memory
    /// stores prefetch the vector into the CPU cache, a page store could start a read.
    #[inline]
    fn prefetch(&mut self, _id: NodeId) {}
    /// A hint that `id`'s neighbour list will be read soon: a search announces the next
    /// node it will probably expand while it computes the current one's distances. The
    /// default does nothing; the build's flat lists are prefetched into the CPU cache.
    #[inline]
    fn prefetch_neighbors(&mut self, _id: NodeId) {}
    /// Called by [`BeamSearch::start`] with the query before any [`GraphStore::expand_coded`].
    fn prepare(&mut self, _query: &[f32]) {}
    /// Traversal on compressed codes. A store whose node records carry their neighbours'
    /// codes reads node `id` once: it appends to `out` each out-neighbour `n` for which
    /// `keep(n)` is true, with its *estimated* distance to the prepared query, and returns
    /// `id`'s exact distance and whether `id` is live. The default (None) means the store
    /// has no codes: the search then calls [`GraphStore::neighbors`] and
    /// [`GraphStore::distance`], and every distance it holds is exact.
    fn expand_coded(
        &mut self,
        _id: NodeId,
        _keep: &mut dyn FnMut(NodeId) -> bool,
        _out: &mut Vec<(NodeId, f32)>,
    ) -> Option<(f32, bool)> {
        None
    }
}

/// A store borrowed mutably is a store (every method forwards).
impl<S: GraphStore + ?Sized> GraphStore for &mut S {
    fn distance(&mut self, id: NodeId, query: &[f32]) -> f32 {
        (**self).distance(id, query)
    }
    fn neighbors(&mut self, id: NodeId, out: &mut Vec<NodeId>) {
        (**self).neighbors(id, out)
    }
    fn vector(&mut self, id: NodeId, out: &mut Vec<f32>) {
        (**self).vector(id, out)
    }
    fn set_neighbors(&mut self, id: NodeId, neighbors: &[NodeId]) {
        (**self).set_neighbors(id, neighbors)
    }
    fn add_edge(&mut self, id: NodeId, to: NodeId, room: usize, out: &mut Vec<NodeId>) -> bool {
        (**self).add_edge(id, to, room, out)
    }
    fn is_live(&mut self, id: NodeId) -> bool {
        (**self).is_live(id)
    }
    fn prefetch(&mut self, id: NodeId) {
        (**self).prefetch(id)
    }
    fn prefetch_neighbors(&mut self, id: NodeId) {
        (**self).prefetch_neighbors(id)
    }
    fn prepare(&mut self, query: &[f32]) {
        (**self).prepare(query)
    }
    fn expand_coded(
        &mut self,
        id: NodeId,
        keep: &mut dyn FnMut(NodeId) -> bool,
        out: &mut Vec<(NodeId, f32)>,
    ) -> Option<(f32, bool)> {
        (**self).expand_coded(id, keep, out)
    }
}

/// Ask the CPU to pull `data` into its caches, one hint per 64-byte line (a no-op on
/// other architectures).
#[inline]
pub(crate) fn prefetch_slice<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = data.as_ptr().cast::<i8>();
        for offset in (0..std::mem::size_of_val(data)).step_by(64) {
            // SAFETY: SSE is part of the x86_64 baseline, and a prefetch is only a hint: it
            // never faults and does not read memory architecturally (the address is inside
            // a live slice anyway).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// A distance with NaN mapped to `+inf`, so that it can be totally ordered.
#[inline]
pub(crate) fn sane(d: f32) -> f32 {
    if d.is_nan() { f32::INFINITY } else { d }
}
