//! RobustPrune (DiskANN Algorithm 2) and in-place insert (Algorithm 1 + back-edges).

use crate::distance::Metric;

use super::{BeamSearch, GraphParams, GraphStore, NodeId, sane};

/// RobustPrune (DiskANN Algorithm 2): from `candidates` (id, rank distance to `point`), pick
/// at most `params.max_neighbors` diverse neighbours.
///
/// Repeatedly takes the closest remaining candidate `p*` and drops every remaining `p'`
/// with `alpha * d(p*, p') <= d(point, p')`: `p'` is reachable through `p*`. As in the
/// DiskANN reference code, the scan runs in rounds with the factor growing `1, 1.2, 1.44,
/// ...` up to `alpha`: the strict first round picks the most diverse neighbours, later
/// rounds fill the free slots with candidates only occluded at the smaller factor, so when
/// `R` binds it is the near-duplicates that are cut, not the long-range edges. The final
/// round applies exactly the rule above; a `p'` at distance 0 from a chosen `p*` is always
/// dropped. The pairwise distances come from [`GraphStore::distance`] against `p*`'s vector
/// ([`GraphStore::vector`]), each computed at most once. `alpha` is applied as
/// [`GraphParams::effective_alpha`] (1.0, one round, plain comparison for inner product).
///
/// `point` is excluded from the result; duplicate candidates are merged; `candidates` is
/// left sorted by (distance, id), deduplicated. The result is ordered closest first and
/// deterministic (ties broken by id). NaN distances count as `+inf`. `point_vec` is
/// `point`'s vector: it is only used to check the given distances in debug builds (one
/// extra distance computation).
pub fn robust_prune<S: GraphStore>(
    store: &mut S,
    point: NodeId,
    point_vec: &[f32],
    candidates: &mut Vec<(NodeId, f32)>,
    alpha: f32,
    params: &GraphParams,
) -> Vec<NodeId> {
    let alpha = params.effective_alpha(alpha);
    candidates.retain(|&(id, _)| id != point);
    for c in candidates.iter_mut() {
        c.1 = sane(c.1);
    }
    candidates.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    candidates.dedup_by_key(|c| c.0);
    candidates.sort_unstable_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));

    if let Some(&(first, d)) = candidates.first() {
        debug_assert!(
            {
                let check = sane(store.distance(first, point_vec));
                check == d || (check - d).abs() <= 1e-3 * (1.0 + check.abs().max(d.abs()))
            },
            "robust_prune: candidate distances are not distances to point_vec"
        );
    }

    let max = params.max_neighbors;
    let mut out = Vec::with_capacity(max.min(candidates.len()));
    if candidates.len() <= 1 || max == 0 {
        out.extend(candidates.iter().take(max).map(|c| c.0));
        return out;
    }
    // `occlusion[k]`: the largest `d(point, p') / d(p*, p')` over the chosen `p*` before k,
    // so k survives a round at `a` while `occlusion[k] < a`. `SELECTED` marks chosen ones.
    const SELECTED: f32 = f32::INFINITY;
    let ratio_rule = params.metric != Metric::InnerProduct;
    let mut occlusion = vec![0f32; candidates.len()];
    let mut star = Vec::new();
    // Rounds at a = 1, 1.2, 1.44, ... up to alpha (as DiskANN does): the strict round picks
    // the most diverse neighbours first, later rounds fill the remaining slots, so when `R`
    // binds the long-range edges are the ones kept.
    let mut a = alpha.min(1.0);
    loop {
        for i in 0..candidates.len() {
            if out.len() >= max {
                break;
            }
            if occlusion[i] >= a {
                continue;
            }
            occlusion[i] = SELECTED;
            let p_star = candidates[i].0;
            out.push(p_star);
            if out.len() >= max {
                break;
            }
            store.vector(p_star, &mut star);
            for c in candidates.iter().skip(i + 1).take(4) {
                store.prefetch(c.0);
            }
            for k in i + 1..candidates.len() {
                // Occluded even at the final alpha (or already chosen): skip the distance.
                if occlusion[k] >= alpha {
                    continue;
                }
                if let Some(next) = candidates.get(k + 4) {
                    store.prefetch(next.0);
                }
                let (p, d_point) = candidates[k];
                let d_star = sane(store.distance(p, &star));
                occlusion[k] = if ratio_rule {
                    // alpha * d_star <= d_point  <=>  d_point / d_star >= alpha.
                    let r = if d_star > 0.0 { d_point / d_star } else { f32::INFINITY };
                    occlusion[k].max(if r.is_nan() { f32::INFINITY } else { r })
                } else if d_star <= d_point {
                    // Inner product (alpha 1, distances may be negative): plain comparison.
                    f32::INFINITY
                } else {
                    occlusion[k]
                };
            }
        }
        if a >= alpha || out.len() >= max {
            break;
        }
        a = (a * 1.2).min(alpha);
    }
    out
}

/// Insert node `id` (whose vector is `vec`, already stored, with an empty neighbour list)
/// into the graph in place: [`choose_neighbors`], store them, then [`add_back_edges`].
/// Uses only [`GraphStore`], so the PostgreSQL page store can run it. If `id == entry`
/// (the first node of an empty graph) there is nothing to do.
pub fn insert<S: GraphStore>(
    store: &mut S,
    id: NodeId,
    vec: &[f32],
    entry: NodeId,
    params: &GraphParams,
    search: &mut BeamSearch,
) {
    if id == entry {
        return;
    }
    let mut current = Vec::new();
    store.neighbors(id, &mut current);
    let extra: Vec<(NodeId, f32)> = current.iter().map(|&q| (q, store.distance(q, vec))).collect();
    let out = choose_neighbors(store, id, vec, entry, &extra, params, search);
    store.set_neighbors(id, &out);
    add_back_edges(store, id, &out, params);
}

/// The out-edges a node `id` with vector `vec` should get (no write): beam search from
/// `entry` with `build_list_size`, then RobustPrune over the visited set plus `extra`
/// candidates (id, rank distance to `vec`), e.g. the node's current neighbours or the
/// other members of a batch being merged. `id` may be a node not stored yet (any id that
/// is not in the graph, such as `u32::MAX`).
///
/// Nodes that are not live ([`GraphStore::is_live`]) are searched through but never chosen,
/// so they never get a back-edge either: no new edge points at or is written into a
/// deleted node. (If the search finds no live node at all, the result is empty and the
/// node should become the entry point.)
pub fn choose_neighbors<S: GraphStore>(
    store: &mut S,
    id: NodeId,
    vec: &[f32],
    entry: NodeId,
    extra: &[(NodeId, f32)],
    params: &GraphParams,
    search: &mut BeamSearch,
) -> Vec<NodeId> {
    search.start(store, vec, entry);
    search.run(store, vec, params.build_list_size);
    let mut candidates: Vec<(NodeId, f32)> = search.visited().to_vec();
    candidates.extend_from_slice(extra);
    // Deleted nodes are traversed but never linked to: they are about to be freed.
    candidates.retain(|&(q, _)| q != id && store.is_live(q));
    robust_prune(store, id, vec, &mut candidates, params.alpha, params)
}

/// Add the edge `j -> id` for every `j` in `out`, pruning `j`'s list to `R` when it would
/// exceed the slack degree. An edge already there is left alone, so a merge interrupted by
/// a crash can run it again (a second prune may pick a different list, still within the degree bound).
pub fn add_back_edges<S: GraphStore>(store: &mut S, id: NodeId, out: &[NodeId], params: &GraphParams) {
    let slack = params.slack_degree();
    let mut j_vec = Vec::new();
    let mut list = Vec::new();
    let candidates = &mut Vec::new();
    for &j in out {
        if store.add_edge(j, id, slack, &mut list) {
            continue;
        }
        // Full: `list` holds j's neighbours; prune them with the new one.
        store.vector(j, &mut j_vec);
        candidates.clear();
        for &q in list.iter().chain(std::iter::once(&id)) {
            candidates.push((q, store.distance(q, &j_vec)));
        }
        let pruned = robust_prune(store, j, &j_vec, candidates, params.alpha, params);
        store.set_neighbors(j, &pruned);
    }
}
