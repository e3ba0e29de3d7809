//! Parallel, deterministic in-memory construction of a Vamana graph.
//!
//! The graph starts empty. One pass visits every node in a seeded random order, in batches
//! (RobustPrune raises alpha progressively from 1.0 to `params.alpha` within each prune).
//! A second full pass (alpha 1.0, then alpha) was measured on fashion-mnist-784: it nearly
//! doubled the build time for +0.8 points of recall@10 at list size 10 and nothing at 40
//! (`cargo run --release -p omen-core --example build_eval`). For each batch:
//!
//! 1. every node of the batch is searched for and pruned **in parallel against the frozen
//!    graph** (nobody writes while the batch is searched), giving its new out-edges;
//! 2. the out-edges are applied; then the back-edges `j -> p` are grouped by `j` (sorted),
//!    each group is merged into `j`'s list in parallel (pruned back to `R` when the list
//!    would exceed [`BUILD_SLACK`]` · R`), and the new lists are applied.
//!
//! Each step is a pure function of the frozen graph and the batch, collected in batch
//! order, and the batch boundaries depend only on `n`, so the result is the same for a
//! given seed whatever the number of threads or their timing. The pass grows its batches
//! from 1 by doubling (the graph is empty at first, so early nodes must see each other) up
//! to `n / 50`. A final sweep prunes
//! every list longer than `R` back to `R`, and a last sequential step links any node not
//! reachable from the entry (rare) from a reachable node with a free slot.

use rayon::prelude::*;

use super::adjacency::Adjacency;
use super::{BeamSearch, CodedStore, GraphParams, GraphStore, NodeId, robust_prune, sane};
use crate::distance::{Metric, Ranking, norm};
use crate::quant::Quantizer;

/// During the build a list may grow to `BUILD_SLACK · R` by back-edges before it is pruned
/// back to `R` (the final sweep prunes every longer list). With the index's own slack
/// (then 1.3·R), 40–50% of a build's exact distances went to back-edge prunes on sentence
/// embeddings (debian-minilm-384; 46 of 93 million); at 2·R the build computes 22% fewer
/// distances, with the same recall at every list size
/// (`cargo run --release -p omen-core --example build_eval`).
const BUILD_SLACK: usize = 2;

/// The result of an in-memory build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltGraph {
    /// Out-neighbours of every node, indexed by node id; each list has at most `R` entries,
    /// but for the few that host an edge to an otherwise unreachable node (at most the
    /// slack degree, [`GraphParams::slack_degree`]). One flat array, as the build held them
    /// (a copy into one vector per node would double their memory at the build's end).
    pub neighbors: Adjacency,
    /// The entry point of every search: the medoid. 0 for an empty graph.
    pub entry: NodeId,
    /// Every node's code, `code_bytes` each, when the build traversed on codes
    /// ([`build_coded`]); empty otherwise.
    pub codes: Vec<u8>,
}

/// How far from 1 a vector's length may be for a build to rank cosine by `1 - a·b`
/// ([`Ranking`]): float32 vectors normalized by their producer (or by the index) are within
/// 1e-6.
const UNIT_TOLERANCE: f64 = 1e-4;

/// The ranking of a build over `vectors`: [`Ranking::unit_cosine`] when the metric is
/// cosine and every vector has unit length.
fn ranking_of(vectors: &[f32], dim: usize, metric: Metric) -> Ranking {
    let unit = metric == Metric::Cosine && vectors.par_chunks(dim).all(|v| (norm(v) - 1.0).abs() <= UNIT_TOLERANCE);
    Ranking::new(metric, unit)
}

/// A read-only view of the graph being built, shared by the parallel searches.
#[derive(Clone, Copy)]
struct Frozen<'a> {
    vectors: &'a [f32],
    dim: usize,
    ranking: Ranking,
    neighbors: &'a Adjacency,
}

impl<'a> Frozen<'a> {
    #[inline]
    fn vec(&self, id: NodeId) -> &'a [f32] {
        let i = id as usize * self.dim;
        &self.vectors[i..i + self.dim]
    }
}

impl GraphStore for Frozen<'_> {
    #[inline]
    fn distance(&mut self, id: NodeId, query: &[f32]) -> f32 {
        self.ranking.rank(self.vec(id), query)
    }

    fn neighbors(&mut self, id: NodeId, out: &mut Vec<NodeId>) {
        out.clear();
        out.extend_from_slice(self.neighbors.get(id));
    }

    fn vector(&mut self, id: NodeId, out: &mut Vec<f32>) {
        out.clear();
        out.extend_from_slice(self.vec(id));
    }

    fn set_neighbors(&mut self, _id: NodeId, _neighbors: &[NodeId]) {
        unreachable!("the frozen graph of a build batch is read-only");
    }

    #[inline]
    fn prefetch(&mut self, id: NodeId) {
        super::prefetch_slice(self.vec(id));
    }

    #[inline]
    fn prefetch_neighbors(&mut self, id: NodeId) {
        super::prefetch_slice(self.neighbors.row_start(id));
    }
}

/// Parallel in-memory build over `n = vectors.len() / dim` vectors stored contiguously
/// (row-major) in `vectors`.
///
/// Entry point = the medoid (the vector closest to the centroid; by cosine for
/// [`Metric::Cosine`], by L2 otherwise). One pass over a seeded random permutation, in
/// batches searched in parallel with rayon against the frozen graph, then applied in a
/// fixed order; the result is deterministic for a given seed regardless of thread count or
/// timing. Calls `progress(done, total)` (`total = n` node visits) and `should_stop()` from the calling thread between batches, never from a
/// rayon worker; if `should_stop` returns true the build is abandoned and `None` returned.
///
/// Panics if `dim == 0`, `vectors.len()` is not a multiple of `dim`, there are `u32::MAX`
/// or more vectors, or `params.max_neighbors == 0`.
pub fn build(
    vectors: &[f32],
    dim: usize,
    params: &GraphParams,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
    should_stop: &mut dyn FnMut() -> bool,
) -> Option<BuiltGraph> {
    build_coded(vectors, dim, params, seed, None, progress, should_stop)
}

/// [`build`], with the searches traversing on the codes of `quantizer` when given and
/// [`Quantizer::cheaper_than_vectors`] (each node's code is computed first, in parallel,
/// and returned in [`BuiltGraph::codes`]): the candidates that RobustPrune chooses from
/// still carry exact distances, but the search reads a code of a few dozen bytes per
/// neighbour instead of its vector.
pub fn build_coded(
    vectors: &[f32],
    dim: usize,
    params: &GraphParams,
    seed: u64,
    quantizer: Option<&Quantizer>,
    progress: &mut dyn FnMut(usize, usize),
    should_stop: &mut dyn FnMut() -> bool,
) -> Option<BuiltGraph> {
    assert!(dim > 0 && vectors.len().is_multiple_of(dim), "vectors.len() must be a multiple of dim");
    assert!(params.max_neighbors > 0, "max_neighbors must be positive");
    let n = vectors.len() / dim;
    assert!(n < NodeId::MAX as usize, "too many vectors for u32 node ids");
    let total = n;
    progress(0, total);
    if should_stop() {
        return None;
    }
    if n == 0 {
        return Some(BuiltGraph { neighbors: Adjacency::new(0, 1), entry: 0, codes: Vec::new() });
    }
    // The searches read vectors, lists and codes at random: on huge pages where the
    // kernel gives them (`huge_pages`).
    crate::huge_pages::advise(vectors);
    let codes = match quantizer {
        Some(q) => {
            let cb = q.code_bytes();
            let mut codes = vec![0u8; n * cb];
            crate::huge_pages::advise(&codes);
            codes.par_chunks_mut(cb).enumerate().for_each(|(i, c)| q.encode(&vectors[i * dim..(i + 1) * dim], c));
            codes
        }
        None => Vec::new(),
    };
    // Traversal on codes only where an estimate is cheaper than an exact distance.
    let coded = quantizer.filter(|q| q.cheaper_than_vectors()).map(|q| (q, codes.as_slice()));

    let entry = medoid(vectors, dim, params.metric);
    let ranking = ranking_of(vectors, dim, params.metric);
    let order = permutation(n, seed);
    // A list holds at most BUILD_SLACK · R between prunes, and a host of an otherwise
    // unreachable node at most the slack degree.
    let mut graph = Adjacency::new(n, (BUILD_SLACK * params.max_neighbors).max(params.slack_degree()));
    let max_batch = (n / 50).max(1);
    let mut done = 0;
    let mut batch = 1;
    let mut start = 0;
    while start < n {
        if should_stop() {
            return None;
        }
        let end = (start + batch).min(n);
        link_batch(&order[start..end], vectors, dim, ranking, &mut graph, entry, params.alpha, params, coded);
        done += end - start;
        progress(done, total);
        start = end;
        batch = (batch * 2).min(max_batch);
    }
    if should_stop() {
        return None;
    }
    prune_overfull(vectors, dim, ranking, &mut graph, params);
    connect_unreachable(vectors, dim, ranking, &mut graph, entry, params);
    Some(BuiltGraph { neighbors: graph, entry, codes })
}

/// One batch of the build: parallel search + prune against the frozen graph, then the
/// out-edges and the back-edges, applied in batch order.
fn link_batch(
    batch: &[NodeId],
    vectors: &[f32],
    dim: usize,
    ranking: Ranking,
    graph: &mut Adjacency,
    entry: NodeId,
    alpha: f32,
    params: &GraphParams,
    coded: Option<(&Quantizer, &[u8])>,
) {
    let frozen = Frozen { vectors, dim, ranking, neighbors: &*graph };
    let out_lists: Vec<Vec<NodeId>> = batch
        .par_iter()
        .map_init(
            || (BeamSearch::new(), coded.map(|(quantizer, codes)| CodedStore::new(frozen, quantizer, codes))),
            |(search, coded_store), &p| {
                let mut store = frozen;
                let v = frozen.vec(p);
                match coded_store {
                    Some(cs) => {
                        search.start(cs, v, entry);
                        search.run(cs, v, params.build_list_size);
                    }
                    None => {
                        search.start(&mut store, v, entry);
                        search.run(&mut store, v, params.build_list_size);
                    }
                }
                let mut candidates = search.visited().to_vec();
                for &q in frozen.neighbors.get(p) {
                    candidates.push((q, store.distance(q, v)));
                }
                robust_prune(&mut store, p, v, &mut candidates, alpha, params)
            },
        )
        .collect();
    for (&p, list) in batch.iter().zip(out_lists) {
        graph.set(p, &list);
    }

    // Back-edges j -> p, grouped by j.
    let mut pairs: Vec<(NodeId, NodeId)> =
        batch.iter().flat_map(|&p| graph.get(p).iter().map(move |&j| (j, p))).collect();
    pairs.par_sort_unstable();
    let groups: Vec<&[(NodeId, NodeId)]> = pairs.chunk_by(|a, b| a.0 == b.0).collect();
    let frozen = Frozen { vectors, dim, ranking, neighbors: &*graph };
    let slack = BUILD_SLACK * params.max_neighbors;
    let updates: Vec<(NodeId, Vec<NodeId>)> = groups
        .par_iter()
        .filter_map(|group| {
            let j = group[0].0;
            let old = frozen.neighbors.get(j);
            let mut list = old.to_vec();
            list.extend(group.iter().map(|&(_, p)| p).filter(|p| !old.contains(p)));
            if list.len() == old.len() {
                return None;
            }
            if list.len() > slack {
                list = prune_list(frozen, j, &list, alpha, params);
            }
            Some((j, list))
        })
        .collect();
    for (j, list) in updates {
        graph.set(j, &list);
    }
}

/// RobustPrune `list` (the neighbours of `j`) down to `R`.
fn prune_list(mut store: Frozen<'_>, j: NodeId, list: &[NodeId], alpha: f32, params: &GraphParams) -> Vec<NodeId> {
    let v = store.vec(j);
    let mut candidates: Vec<(NodeId, f32)> = list.iter().map(|&q| (q, store.distance(q, v))).collect();
    robust_prune(&mut store, j, v, &mut candidates, alpha, params)
}

/// The final sweep: prune every list longer than `R` (grown by back-edges) back to `R`.
fn prune_overfull(vectors: &[f32], dim: usize, ranking: Ranking, graph: &mut Adjacency, params: &GraphParams) {
    let frozen = Frozen { vectors, dim, ranking, neighbors: &*graph };
    let updates: Vec<(NodeId, Vec<NodeId>)> = (0..graph.len() as NodeId)
        .into_par_iter()
        .filter(|&j| frozen.neighbors.get(j).len() > params.max_neighbors)
        .map(|j| (j, prune_list(frozen, j, frozen.neighbors.get(j), params.alpha, params)))
        .collect();
    for (j, list) in updates {
        graph.set(j, &list);
    }
}

/// Make every node reachable from `entry`. Vamana graphs almost always are, but not
/// provably (duplicates, inner product): each node not reached is linked from the closest
/// reachable node with a free slot (below the slack degree, as the index's own repair
/// does, `reachability.rs` of the extension) among those a search for it visits, then
/// everything it reaches is marked. Sequential and in id order, so deterministic; costs
/// one search per unreachable node and a traversal of the graph.
///
/// Exact duplicates are what leaves nodes unreachable in practice: RobustPrune keeps one
/// of a group of equal vectors in any list, so the others lose their in-edges. With the
/// bound at `R`, the nodes a search for a duplicate visits were all full, and each lost
/// node fell back to a scan of every node: on debian-minilm-384 with 9,000 duplicate rows
/// added (one row 2,000 times), that took 14 s of a 21 s build. With the slack bound it
/// still happened for 1,068 of the 2,563 nodes linked (the copies visited were full); the
/// nodes linked earlier in the pass are looked at before every node now.
fn connect_unreachable(
    vectors: &[f32],
    dim: usize,
    ranking: Ranking,
    graph: &mut Adjacency,
    entry: NodeId,
    params: &GraphParams,
) {
    let n = graph.len();
    let mut reached = vec![false; n];
    let mut stack = Vec::new();
    let mark = |from: NodeId, graph: &Adjacency, reached: &mut [bool], stack: &mut Vec<NodeId>| {
        reached[from as usize] = true;
        stack.push(from);
        while let Some(u) = stack.pop() {
            for &v in graph.get(u) {
                if !reached[v as usize] {
                    reached[v as usize] = true;
                    stack.push(v);
                }
            }
        }
    };
    mark(entry, graph, &mut reached, &mut stack);
    let mut search = BeamSearch::new();
    let mut linked: Vec<NodeId> = Vec::new();
    for u in 0..n {
        if reached[u] {
            continue;
        }
        let u = u as NodeId;
        let mut store = Frozen { vectors, dim, ranking, neighbors: &*graph };
        let v = store.vec(u);
        search.start(&mut store, v, entry);
        search.run(&mut store, v, params.build_list_size);
        let mut hosts = search.visited().to_vec();
        hosts.sort_unstable_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        let room = params.slack_degree();
        let host = hosts.iter().map(|h| h.0).find(|&h| graph.get(h).len() < room);
        // Every visited node full: the search's list is taken by copies of `u` that already
        // host as many edges as they can. The nodes linked earlier in this pass have room
        // (their own lists are at most `R`), and the copies among them are at distance 0:
        // the closest of them, else (not seen in practice) the closest reachable node.
        let closest = |candidates: &mut dyn Iterator<Item = NodeId>, store: &mut Frozen<'_>| {
            candidates
                .filter(|&h| graph.get(h).len() < room)
                .map(|h| (sane(store.distance(h, v)), h))
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
                .map(|(_, h)| h)
        };
        let host = host
            .or_else(|| closest(&mut linked.iter().copied(), &mut store))
            .or_else(|| closest(&mut (0..n as NodeId).filter(|&h| reached[h as usize]), &mut store));
        if let Some(h) = host {
            graph.push(h, u);
            mark(u, graph, &mut reached, &mut stack);
            linked.push(u);
        }
    }
}

/// The index of the vector closest to the centroid (cosine for [`Metric::Cosine`], L2
/// otherwise); ties go to the smaller index. Deterministic: partial sums over fixed chunks
/// are added in order.
pub(crate) fn medoid(vectors: &[f32], dim: usize, metric: Metric) -> NodeId {
    const ROWS: usize = 1024;
    let partial: Vec<Vec<f64>> = vectors
        .par_chunks(ROWS * dim)
        .map(|chunk| {
            let mut sum = vec![0f64; dim];
            for row in chunk.chunks_exact(dim) {
                for (s, &x) in sum.iter_mut().zip(row) {
                    *s += x as f64;
                }
            }
            sum
        })
        .collect();
    let n = vectors.len() / dim;
    let mut sum = vec![0f64; dim];
    for p in &partial {
        for (s, &x) in sum.iter_mut().zip(p) {
            *s += x;
        }
    }
    let centroid: Vec<f32> = sum.iter().map(|&s| (s / n as f64) as f32).collect();
    let metric = if metric == Metric::Cosine { Metric::Cosine } else { Metric::L2 };
    vectors
        .par_chunks_exact(dim)
        .enumerate()
        .map(|(i, v)| (sane(metric.rank_distance(v, &centroid)), i))
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
        .map_or(0, |(_, i)| i as NodeId)
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny seeded generator, enough for shuffling.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n` (Lemire's multiply-shift; the bias is negligible).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// A seeded random permutation of `0..n` (Fisher-Yates).
pub(crate) fn permutation(n: usize, seed: u64) -> Vec<NodeId> {
    let mut order: Vec<NodeId> = (0..n as NodeId).collect();
    let mut rng = SplitMix64(seed);
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order
}

#[cfg(test)]
mod ranking_tests {
    use super::*;

    #[test]
    fn unit_cosine_only_for_cosine_over_unit_vectors() {
        let unit = [0.6f32, 0.8, 0.0, 1.0, 0.0, 0.0];
        assert!(ranking_of(&unit, 3, Metric::Cosine).unit_cosine);
        assert!(!ranking_of(&unit, 3, Metric::L2).unit_cosine);
        let longer = [0.6f32, 0.8, 0.0, 2.0, 0.0, 0.0];
        assert!(!ranking_of(&longer, 3, Metric::Cosine).unit_cosine);
    }
}
