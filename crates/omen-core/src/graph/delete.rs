//! In-place delete repair (IP-DiskANN, Xu et al., arXiv:2502.13826, adapted).
//!
//! A deleted node stays in the graph, traversable but never returned, until the index's
//! VACUUM frees it. Before it is freed the graph is repaired around it, so that the nodes
//! that reached their part of the space through it still do:
//!
//! 1. a beam search toward the deleted node's vector (list size `l_d`) visits the nodes
//!    around it; those of them whose neighbour lists contain it are its in-neighbours. A
//!    graph has no back-pointers, so this set is approximate, but an in-neighbour chose the
//!    node because it was close to it, so the search toward the node tends to pass through
//!    it (the tests find about 93% of the in-neighbours with `l_d = 100`);
//! 2. each live in-neighbour `p` loses the edge and gains edges to the `c` live search
//!    results closest to `p` that it does not already point to; a list that grows past `R`
//!    is RobustPruned back to `R`;
//! 3. (an addition to the paper) each live out-neighbour of the deleted node that none of
//!    the rewritten lists points to gets an edge from the in-neighbour closest to it that
//!    has room below the slack degree. A node whose in-edges all came from nodes deleted in
//!    the same VACUUM would otherwise be cut off from the graph when they are freed (in the
//!    tests, without this step, a node or two per round of 300 deletes was).
//!
//! The in-neighbours the search misses keep a dangling edge, which VACUUM's final sweep
//! removes (without replacement) when it frees the node.
//!
//! Not guaranteed: that every live node stays reachable. A RobustPrune (here, or in
//! [`insert`](super::insert)'s back-edges) can drop the only in-edge of a node; in a
//! 20,000-node graph under 20 rounds of 10% churn this left 1 to 3 nodes unreachable. A
//! VACUUM that must not lose rows should finish with a reachability pass that links such
//! nodes back, as [`build`](super::build) does.
//!
//! [`replacement_entry`] picks a new entry point when the current one is deleted.

use super::{BeamSearch, GraphParams, GraphStore, NodeId, robust_prune, sane};

/// Outcome counters of one repair, for VACUUM's statistics and tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct RepairStats {
    /// Live in-neighbours of the deleted node found by the search (each one's list was
    /// rewritten).
    pub in_neighbors: usize,
    /// New edges in the rewritten lists (candidates that survived the pruning, and
    /// out-neighbours of the deleted node handed to an in-neighbour).
    pub edges_added: usize,
    /// Rewritten lists that exceeded `R` and were RobustPruned.
    pub pruned: usize,
    /// Distance computations of the whole repair (search, candidates, pruning).
    pub distance_count: usize,
}

impl std::ops::AddAssign for RepairStats {
    fn add_assign(&mut self, other: RepairStats) {
        self.in_neighbors += other.in_neighbors;
        self.edges_added += other.edges_added;
        self.pruned += other.pruned;
        self.distance_count += other.distance_count;
    }
}

/// A [`GraphStore`] that counts distance computations.
struct Counted<'a, S> {
    store: &'a mut S,
    distances: usize,
}

impl<S: GraphStore> GraphStore for Counted<'_, S> {
    #[inline]
    fn distance(&mut self, id: NodeId, query: &[f32]) -> f32 {
        self.distances += 1;
        self.store.distance(id, query)
    }
    fn neighbors(&mut self, id: NodeId, out: &mut Vec<NodeId>) {
        self.store.neighbors(id, out)
    }
    fn vector(&mut self, id: NodeId, out: &mut Vec<f32>) {
        self.store.vector(id, out)
    }
    fn set_neighbors(&mut self, id: NodeId, neighbors: &[NodeId]) {
        self.store.set_neighbors(id, neighbors)
    }
    fn is_live(&mut self, id: NodeId) -> bool {
        self.store.is_live(id)
    }
    #[inline]
    fn prefetch(&mut self, id: NodeId) {
        self.store.prefetch(id)
    }
}

/// Repairs the graph around node `deleted`, which the store already reports as not live
/// (`is_live == false`) but which is still traversable, so searches pass through it.
///
/// Searches toward `deleted_vec` (the deleted node's vector) from `entry` with `list_size`
/// (`l_d`); the visited nodes whose neighbour lists contain `deleted` are its in-neighbours
/// (approximate, as in the paper). Each live in-neighbour `p` gets `deleted` removed from
/// its list and edges to the `c` candidates closest to `p` among the search's live results
/// (excluding `p` itself, nodes already in `p`'s list, and non-live nodes); when the list
/// would exceed `max_neighbors` it is RobustPruned (`params.alpha`) down to
/// `max_neighbors`. Any other non-live ids found in a rewritten list are dropped too.
/// In-neighbours that are themselves not live are left alone (they are freed too). Then
/// each live out-neighbour of `deleted` that no rewritten list points to is appended to
/// the list of the closest in-neighbour whose list is below the slack degree (see the
/// module documentation).
///
/// `entry` is where the search starts: the index's entry point, already replaced (with
/// [`replacement_entry`]) if it is among the deleted nodes.
///
/// Writes only through [`GraphStore::set_neighbors`], only the lists of the in-neighbours
/// found, each once. The rewritten lists never hold a non-live node, `p` itself or a
/// duplicate, and have at most [`GraphParams::slack_degree`] entries (at most `R` unless
/// they received an out-neighbour in the last step). Cost: one search, then per
/// in-neighbour about `list_size` distances (plus a RobustPrune when the list overflows),
/// and per uncovered out-neighbour one distance per in-neighbour.
#[allow(clippy::too_many_arguments)]
pub fn repair_deleted<S: GraphStore>(
    store: &mut S,
    deleted: NodeId,
    deleted_vec: &[f32],
    entry: NodeId,
    params: &GraphParams,
    list_size: usize,
    c: usize,
    search: &mut BeamSearch,
) -> RepairStats {
    let mut store = Counted { store, distances: 0 };
    let mut stats = RepairStats::default();
    search.start(&mut store, deleted_vec, entry);
    search.run(&mut store, deleted_vec, list_size);
    let results: Vec<NodeId> = search.results().map(|r| r.0).collect();

    // 1. The new list of every live in-neighbour, kept until step 3: (in-neighbour, old
    //    list, new list).
    let mut rewritten: Vec<(NodeId, Vec<NodeId>, Vec<NodeId>)> = Vec::new();
    // Distances from the in-neighbour to the results: (result index, distance).
    let mut to_results: Vec<(usize, f32)> = Vec::with_capacity(results.len());
    let mut candidates: Vec<(NodeId, f32)> = Vec::new();
    let mut old = Vec::new();
    let mut p_vec = Vec::new();
    for &(p, _) in search.visited() {
        if p == deleted {
            continue;
        }
        store.neighbors(p, &mut old);
        if !old.contains(&deleted) || !store.is_live(p) {
            continue;
        }
        let mut list = old.clone();
        list.retain(|&q| q != deleted && q != p && store.is_live(q));

        // The `c` live results closest to `p` that it does not point to yet.
        store.vector(p, &mut p_vec);
        to_results.clear();
        for (i, &r) in results.iter().enumerate() {
            if r != p && !list.contains(&r) {
                to_results.push((i, sane(store.distance(r, &p_vec))));
            }
        }
        let order = |a: &(usize, f32), b: &(usize, f32)| a.1.total_cmp(&b.1).then(results[a.0].cmp(&results[b.0]));
        let take = c.min(to_results.len());
        if take > 0 && take < to_results.len() {
            to_results.select_nth_unstable_by(take - 1, order);
        }
        to_results.truncate(take);
        to_results.sort_unstable_by(order);
        let kept = list.len();
        list.extend(to_results.iter().map(|&(i, _)| results[i]));
        if list.len() > params.max_neighbors {
            candidates.clear();
            for &q in &list[..kept] {
                candidates.push((q, store.distance(q, &p_vec)));
            }
            candidates.extend(to_results.iter().map(|&(i, d)| (results[i], d)));
            list = robust_prune(&mut store, p, &p_vec, &mut candidates, params.alpha, params);
            stats.pruned += 1;
        }
        rewritten.push((p, std::mem::take(&mut old), list));
    }
    stats.in_neighbors = rewritten.len();

    // 2. Keep the deleted node's live out-neighbours reachable: their in-edges may all
    //    come from deleted nodes, which are about to be freed. One that no new list reaches
    //    gets an edge from the closest in-neighbour with room (below the slack degree).
    let mut outs = Vec::new();
    store.neighbors(deleted, &mut outs);
    let slack = params.slack_degree();
    let mut w_vec = Vec::new();
    for &w in &outs {
        if w == deleted || !store.is_live(w) || rewritten.iter().any(|r| r.2.contains(&w)) {
            continue;
        }
        store.vector(w, &mut w_vec);
        let mut host: Option<(f32, NodeId, usize)> = None;
        for (k, (p, _, list)) in rewritten.iter().enumerate() {
            if *p == w || list.len() >= slack {
                continue;
            }
            let d = sane(store.distance(*p, &w_vec));
            if host.is_none_or(|(hd, hp, _)| d.total_cmp(&hd).then(p.cmp(&hp)).is_lt()) {
                host = Some((d, *p, k));
            }
        }
        if let Some((_, _, k)) = host {
            rewritten[k].2.push(w);
        }
    }

    // 3. Write.
    for (p, old, list) in &rewritten {
        stats.edges_added += list.iter().filter(|q| !old.contains(q)).count();
        store.set_neighbors(*p, list);
    }
    stats.distance_count = store.distances;
    stats
}

/// A live node to serve as the new entry point when the current `entry` is deleted: the
/// live node closest to the old entry's vector (`entry_vec`) found by a search from `entry`
/// with `list_size` (`None` if the search finds no live node, e.g. everything was deleted).
///
/// If every node in the list is deleted (a deleted region around the entry) the search is
/// resumed with a doubled list size until it finds a live node or has expanded every node
/// it can reach, so `None` means that no live node is reachable from `entry`. Returns
/// `entry` itself if it is live.
///
/// The replacement is an ordinary node: it does not have the long edges the build gives
/// the medoid, and on some data searches from it lose recall at small list sizes (in the
/// tests, three isotropic blobs: recall@10 at L=10 from 0.96 to 0.79, at L=40 from 1.0 to
/// 0.99; no loss on data with many clusters). Under churn the repairs and inserts around
/// it bring the recall back.
pub fn replacement_entry<S: GraphStore>(
    store: &mut S,
    entry: NodeId,
    entry_vec: &[f32],
    list_size: usize,
    search: &mut BeamSearch,
) -> Option<NodeId> {
    search.start(store, entry_vec, entry);
    let mut size = list_size.max(1);
    loop {
        search.run(store, entry_vec, size);
        if let Some((id, _)) = search.results().next() {
            return Some(id);
        }
        if search.is_exhausted() {
            return None;
        }
        size = size.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests;
