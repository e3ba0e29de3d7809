//! Tests of delete repair: churn rounds (delete, repair, free, re-insert) against a fresh
//! build and a no-repair baseline, what one repair writes, entry replacement, and insert
//! never linking to deleted nodes.

use std::collections::HashSet;

use super::super::build::SplitMix64;
use super::super::test_data::{self, build_quiet, params};
use super::super::*;
use crate::distance::Metric;

/// Seeded clustered data with an intrinsic dimension of `dim / 2`.
fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<f32> {
    clustered_latent(n, dim, clusters, (dim / 2).max(1), seed)
}

/// The delete tests' data: the stretch is not capped.
fn clustered_latent(n: usize, dim: usize, clusters: usize, latent: usize, seed: u64) -> Vec<f32> {
    test_data::clustered_latent(n, dim, clusters, latent, seed, f64::INFINITY)
}

/// The delete list size `l_d` and the replacement count `c` of the tests.
const L_D: usize = 100;
const C: usize = 3;
/// The search list size of the recall measurements.
const L_SEARCH: usize = 40;

/// What VACUUM's final sweep does to freed nodes: every remaining edge to them is removed
/// (no replacement) and their own lists are cleared. They stay non-live.
fn free(store: &mut MemoryStore, ids: &[NodeId]) {
    let gone: HashSet<NodeId> = ids.iter().copied().collect();
    let mut list = Vec::new();
    for id in 0..store.len() as NodeId {
        if gone.contains(&id) {
            store.set_neighbors(id, &[]);
            continue;
        }
        store.neighbors(id, &mut list);
        let before = list.len();
        list.retain(|q| !gone.contains(q));
        if list.len() != before {
            store.set_neighbors(id, &list);
        }
    }
}

/// Live nodes not reachable from `entry`.
fn unreachable_live(store: &mut MemoryStore, entry: NodeId) -> usize {
    let n = store.len();
    let mut seen = vec![false; n];
    let mut stack = vec![entry];
    seen[entry as usize] = true;
    while let Some(u) = stack.pop() {
        for &v in store.neighbors_of(u) {
            if !seen[v as usize] {
                seen[v as usize] = true;
                stack.push(v);
            }
        }
    }
    (0..n as NodeId).filter(|&i| !seen[i as usize] && store.is_live(i)).count()
}

/// After a free: degrees at most `max_degree`, no self-loops or duplicates, no edge to a
/// freed node, freed nodes without edges, a live entry that reaches every live node.
fn check_invariants(store: &mut MemoryStore, entry: NodeId, max_degree: usize) {
    assert!(store.is_live(entry), "the entry {entry} is not live");
    for i in 0..store.len() as NodeId {
        let list = store.neighbors_of(i).to_vec();
        assert!(list.len() <= max_degree, "node {i} has degree {} > {max_degree}", list.len());
        assert!(!list.contains(&i), "node {i} has a self-loop");
        let distinct = list.iter().collect::<HashSet<_>>().len();
        assert_eq!(distinct, list.len(), "node {i} has duplicates");
        if store.is_live(i) {
            assert!(list.iter().all(|&q| store.is_live(q)), "node {i} points at a freed node");
        } else {
            assert!(list.is_empty(), "freed node {i} still has edges");
        }
    }
    let lost = unreachable_live(store, entry);
    assert_eq!(lost, 0, "{lost} live nodes are not reachable from the entry");
}

/// For each query, the indices of its 10 nearest `vectors` (brute force).
fn truth(vectors: &[&[f32]], metric: Metric, queries: &[f32], dim: usize) -> Vec<Vec<usize>> {
    queries
        .chunks_exact(dim)
        .map(|q| {
            let mut all: Vec<(f32, usize)> =
                vectors.iter().enumerate().map(|(i, v)| (sane(metric.rank_distance(v, q)), i)).collect();
            all.select_nth_unstable_by(9, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            all[..10].iter().map(|x| x.1).collect()
        })
        .collect()
}

/// Mean recall@10 of searches from `entry` at `list_size`; `truth` holds indices into
/// `ids` (the live node ids of `store`, in the order the truth was computed).
fn recall(
    store: &mut MemoryStore,
    entry: NodeId,
    queries: &[f32],
    truth: &[Vec<usize>],
    ids: &[NodeId],
    list_size: usize,
) -> f64 {
    let dim = store.dim();
    let mut search = BeamSearch::new();
    let mut hits = 0;
    for (q, t) in queries.chunks_exact(dim).zip(truth) {
        let want: HashSet<NodeId> = t.iter().map(|&i| ids[i]).collect();
        search.start(store, q, entry);
        search.run(store, q, list_size);
        hits += search.results().take(10).filter(|r| want.contains(&r.0)).count();
    }
    hits as f64 / (10 * truth.len()) as f64
}

/// One graph under churn: deletes are repaired (or only freed, the baseline), then the
/// vectors come back as new nodes through [`insert`].
struct Arm {
    label: &'static str,
    store: MemoryStore,
    entry: NodeId,
    repair: bool,
    search: BeamSearch,
    stats: RepairStats,
    /// Edges to deleted nodes from live nodes that the repairs missed (removed by `free`).
    missed: usize,
    /// Live nodes not reachable from the entry after the last free (before the inserts).
    cut_off: usize,
    /// Times the entry was deleted.
    entry_deleted: usize,
}

impl Arm {
    fn new(label: &'static str, store: &MemoryStore, entry: NodeId, repair: bool) -> Arm {
        Arm {
            label,
            store: store.clone(),
            entry,
            repair,
            search: BeamSearch::new(),
            stats: RepairStats::default(),
            missed: 0,
            cut_off: 0,
            entry_deleted: 0,
        }
    }

    /// Delete `ids` (mark, deal with a deleted entry, repair, free) and re-insert their
    /// vectors; returns the new ids.
    fn churn(&mut self, ids: &[NodeId], p: &GraphParams) -> Vec<NodeId> {
        let store = &mut self.store;
        for &d in ids {
            store.set_deleted(d, true);
        }
        if ids.contains(&self.entry) {
            self.entry_deleted += 1;
            let old = self.entry;
            let v = store.vector_of(old).to_vec();
            self.entry = replacement_entry(store, old, &v, L_D, &mut self.search).expect("a live node is left");
            assert!(store.is_live(self.entry));
        }
        if self.repair {
            for &d in ids {
                let v = store.vector_of(d).to_vec();
                self.stats += repair_deleted(store, d, &v, self.entry, p, L_D, C, &mut self.search);
            }
            let gone: HashSet<NodeId> = ids.iter().copied().collect();
            for i in 0..store.len() as NodeId {
                if store.is_live(i) {
                    let list = store.neighbors_of(i);
                    self.missed += list.iter().filter(|q| gone.contains(q)).count();
                }
            }
        }
        free(store, ids);
        self.cut_off = unreachable_live(store, self.entry);
        ids.iter()
            .map(|&d| {
                let v = store.vector_of(d).to_vec();
                let id = store.push(&v);
                insert(store, id, &v, self.entry, p, &mut self.search);
                id
            })
            .collect()
    }
}

/// `rounds` rounds of deleting and re-inserting a random `fraction` of the live nodes in
/// each of `arms` (label, whether to repair), compared with a fresh build. Prints
/// recall@10 at [`L_SEARCH`] and at 10 per round; asserts the invariants of the first arm
/// and its recall at [`L_SEARCH`] within 0.01 of the fresh build after every round if
/// `strict`.
/// Returns the first arm's recall and the fresh build's per round.
fn churn_rounds(
    p: &GraphParams,
    data: (usize, usize, usize, usize),
    rounds: usize,
    fraction: f64,
    seed: u64,
    arms: &[(&'static str, bool)],
    strict: bool,
) -> Vec<(f64, f64)> {
    let (n, dim, clusters, latent) = data;
    let metric = p.metric;
    let mut data = clustered_latent(n + 200, dim, clusters, latent, seed);
    let queries = data.split_off(n * dim);
    let p = *p;
    let g = build_quiet(&data, dim, &p, seed);
    let store = MemoryStore::from_graph(data, dim, metric, g.clone());
    let mut arms: Vec<Arm> = arms.iter().map(|&(label, repair)| Arm::new(label, &store, g.entry, repair)).collect();
    drop(store);
    let mut live: Vec<NodeId> = (0..n as NodeId).collect();
    let mut rng = SplitMix64(seed ^ 0xDE1E7E);
    let per_round = (n as f64 * fraction) as usize;
    let mut out = Vec::new();
    println!(
        "{metric:?} {n}x{dim} ({clusters} clusters, latent {latent}, R={}), {rounds} rounds of \
         {per_round} deletes + re-inserts, l_d={L_D} c={C}; recall@10 at L={L_SEARCH} / L=10, \
         live nodes unreachable after the free / after the inserts, mean degree",
        p.max_neighbors
    );
    for round in 1..=rounds {
        // A random `per_round` of the live nodes (partial Fisher-Yates).
        for i in 0..per_round {
            let j = i + rng.below(live.len() - i);
            live.swap(i, j);
        }
        let ids: Vec<NodeId> = live.drain(..per_round).collect();
        let mut new_ids = Vec::new();
        let mut times = Vec::new();
        for arm in &mut arms {
            let t = std::time::Instant::now();
            new_ids.push(arm.churn(&ids, &p));
            times.push(t.elapsed());
        }
        assert!(new_ids.windows(2).all(|w| w[0] == w[1]), "all arms allocate the same ids");
        live.extend(new_ids.swap_remove(0));

        let vectors: Vec<&[f32]> = live.iter().map(|&i| arms[0].store.vector_of(i)).collect();
        let flat: Vec<f32> = vectors.concat();
        let truth = truth(&vectors, metric, &queries, dim);
        let fresh_graph = build_quiet(&flat, dim, &p, seed + round as u64);
        let fresh_entry = fresh_graph.entry;
        let mut fresh = MemoryStore::from_graph(flat, dim, metric, fresh_graph);
        let fresh_ids: Vec<NodeId> = (0..live.len() as NodeId).collect();
        let degree = |s: &MemoryStore| s.adjacency().iter().map(Vec::len).sum::<usize>() as f64 / live.len() as f64;
        let f = recall(&mut fresh, fresh_entry, &queries, &truth, &fresh_ids, L_SEARCH);
        let f10 = recall(&mut fresh, fresh_entry, &queries, &truth, &fresh_ids, 10);
        let mut line = format!("round {round:2}: fresh build {f:.4} / {f10:.4} deg {:.1}", degree(&fresh));
        let mut first = 0.0;
        for (k, arm) in arms.iter_mut().enumerate() {
            let r = recall(&mut arm.store, arm.entry, &queries, &truth, &live, L_SEARCH);
            let r10 = recall(&mut arm.store, arm.entry, &queries, &truth, &live, 10);
            let lost = unreachable_live(&mut arm.store, arm.entry);
            line += &format!(
                " | {}: {r:.4} / {r10:.4} lost {}/{lost} deg {:.1}",
                arm.label,
                arm.cut_off,
                degree(&arm.store)
            );
            if k == 0 {
                first = r;
            }
            if k == 0 && strict {
                assert_eq!(arm.cut_off, 0, "round {round}: {} lost live nodes", arm.label);
                check_invariants(&mut arm.store, arm.entry, p.slack_degree());
            }
        }
        let ms = times[0].as_secs_f64() * 1e3;
        println!("{line} | {ms:.0} ms, entry deleted {}x", arms[0].entry_deleted);
        assert!(!strict || first >= f - 0.01, "round {round}: recall {first} vs fresh build {f}");
        out.push((first, f));
    }
    let s = arms[0].stats;
    if arms[0].repair {
        assert!(s.in_neighbors > 0 && s.edges_added > 0 && s.distance_count > 0);
    }
    let deletes = (rounds * per_round) as f64;
    println!(
        "{} per delete: {:.1} in-neighbours repaired, {:.1} edges added, {:.1} lists pruned, \
         {:.0} distances; {:.2} missed in-edges (removed without replacement)",
        arms[0].label,
        s.in_neighbors as f64 / deletes,
        s.edges_added as f64 / deletes,
        s.pruned as f64 / deletes,
        s.distance_count as f64 / deletes,
        arms[0].missed as f64 / deletes,
    );
    out
}

/// The arms of the churn tests: with repair, and the baseline that only frees.
const ARMS: &[(&str, bool)] = &[("repaired", true), ("no repair", false)];

/// 3,000 × 32, three isotropic blobs (hard enough that recall at L=40 is not exactly 1),
/// ten rounds of deleting and re-inserting 10%.
#[test]
fn churn_with_repair_keeps_recall_l2() {
    let rounds = churn_rounds(&params(Metric::L2), (3000, 32, 3, 32), 10, 0.1, 3, ARMS, true);
    assert_eq!(rounds.len(), 10);
}

/// A longer, larger churn for quoting: `OMEN_N` (default 20000) × `OMEN_DIM` (32),
/// `OMEN_CLUSTERS` (10) isotropic blobs, `OMEN_ROUNDS` (20) rounds of 10%; run in release:
/// `cargo test -p omen-core --release large_churn -- --ignored --nocapture`.
#[test]
#[ignore]
fn large_churn() {
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (n, dim) = (env("OMEN_N", 20_000), env("OMEN_DIM", 32));
    let (clusters, rounds) = (env("OMEN_CLUSTERS", 10), env("OMEN_ROUNDS", 20));
    let p = GraphParams { max_neighbors: env("OMEN_R", 24), ..params(Metric::L2) };
    churn_rounds(&p, (n, dim, clusters, dim), rounds, 0.1, env("OMEN_SEED", 1) as u64, ARMS, false);
}

#[test]
fn churn_with_repair_keeps_recall_cosine() {
    let rounds = churn_rounds(&params(Metric::Cosine), (1500, 32, 3, 32), 3, 0.1, 5, ARMS, true);
    assert_eq!(rounds.len(), 3);
}

/// One repair rewrites exactly the in-neighbours it reports, removes the deleted node (and
/// any other deleted node) from them, and its counters match what it wrote.
#[test]
fn repair_rewrites_in_neighbours() {
    let (n, dim) = (2000, 16);
    let data = clustered(n, dim, 10, 21);
    let p = params(Metric::L2);
    let g = build_quiet(&data, dim, &p, 4);
    let entry = g.entry;
    let mut store = MemoryStore::from_graph(data, dim, p.metric, g);
    let mut search = BeamSearch::new();
    let mut rng = SplitMix64(99);
    let (mut found, mut true_in, mut dropped_other, mut total) = (0, 0, 0, RepairStats::default());
    for _ in 0..40 {
        let d = rng.below(n) as NodeId;
        if d == entry || !store.is_live(d) {
            continue;
        }
        let before = store.adjacency().to_vec();
        let in_neighbours: Vec<NodeId> =
            (0..n as NodeId).filter(|&i| store.is_live(i) && before[i as usize].contains(&d)).collect();
        // Also delete the node most of d's in-neighbours point at: the rewritten lists
        // must drop it too.
        let mut counts = std::collections::HashMap::new();
        for &i in &in_neighbours {
            for &q in &before[i as usize] {
                if q != d && q != entry && store.is_live(q) {
                    *counts.entry(q).or_insert(0) += 1;
                }
            }
        }
        let other = counts.into_iter().max_by_key(|&(q, c)| (c, q)).map(|(q, _)| q);
        let in_neighbours: Vec<NodeId> = in_neighbours.into_iter().filter(|&i| Some(i) != other).collect();
        store.set_deleted(d, true);
        if let Some(o) = other {
            store.set_deleted(o, true);
        }
        let v = store.vector_of(d).to_vec();
        let stats = repair_deleted(&mut store, d, &v, entry, &p, L_D, C, &mut search);

        let after = store.adjacency().to_vec();
        let changed: Vec<usize> = (0..n).filter(|&i| before[i] != after[i]).collect();
        assert_eq!(changed.len(), stats.in_neighbors);
        let mut added = 0;
        for &i in &changed {
            assert!(in_neighbours.contains(&(i as NodeId)), "{i} was not an in-neighbour of {d}");
            let list = &after[i];
            assert!(list.len() <= p.slack_degree());
            assert!(!list.contains(&(i as NodeId)));
            assert_eq!(list.iter().collect::<HashSet<_>>().len(), list.len());
            assert!(list.iter().all(|&q| store.is_live(q)), "{i} still points at a deleted node");
            added += list.iter().filter(|q| !before[i].contains(q)).count();
            if other.is_some_and(|o| before[i].contains(&o)) {
                dropped_other += 1;
            }
        }
        assert_eq!(added, stats.edges_added);
        assert!(stats.distance_count > 0);
        found += stats.in_neighbors;
        true_in += in_neighbours.len();
        total += stats;
        // Live again for the next repairs (d has lost in-edges, which does not matter here).
        store.set_deleted(d, false);
        if let Some(o) = other {
            store.set_deleted(o, false);
        }
    }
    let share = found as f64 / true_in as f64;
    println!(
        "found {found} of {true_in} in-neighbours ({share:.3}); {} edges added, {} pruned, \
         {} distances; {dropped_other} lists dropped a second deleted node",
        total.edges_added, total.pruned, total.distance_count
    );
    assert!(total.edges_added > 0 && total.in_neighbors > 0);
    assert!(share >= 0.9, "the search found only {share:.3} of the in-neighbours");
    assert!(dropped_other > 0);
}

/// Entry replacement on graph `(n, dim, clusters, latent)`: delete the entry, replace it,
/// repair and free it. Returns recall@10 at L=10 and [`L_SEARCH`] before (from the medoid)
/// and after (from the replacement), and the store, its entry and its live nodes.
fn replace_the_entry(
    shape: (usize, usize, usize, usize),
    seed: u64,
) -> ([f64; 2], [f64; 2], MemoryStore, NodeId, NodeId, Vec<NodeId>) {
    let (n, dim, clusters, latent) = shape;
    let mut data = clustered_latent(n + 200, dim, clusters, latent, seed);
    let queries = data.split_off(n * dim);
    let p = params(Metric::L2);
    let g = build_quiet(&data, dim, &p, seed);
    let entry = g.entry;
    let mut store = MemoryStore::from_graph(data, dim, p.metric, g);
    let mut search = BeamSearch::new();
    let ids: Vec<NodeId> = (0..n as NodeId).collect();
    let vectors: Vec<&[f32]> = ids.iter().map(|&i| store.vector_of(i)).collect();
    let before_truth = truth(&vectors, p.metric, &queries, dim);
    let before = [10, L_SEARCH].map(|l| recall(&mut store, entry, &queries, &before_truth, &ids, l));

    // A live entry is its own replacement.
    let entry_vec = store.vector_of(entry).to_vec();
    assert_eq!(replacement_entry(&mut store, entry, &entry_vec, 10, &mut search), Some(entry));

    // Delete the entry: the replacement is the closest live node to it.
    store.set_deleted(entry, true);
    let new_entry = replacement_entry(&mut store, entry, &entry_vec, L_D, &mut search).unwrap();
    assert_ne!(new_entry, entry);
    assert!(store.is_live(new_entry));
    let closest = (0..n as NodeId)
        .filter(|&i| i != entry)
        .min_by(|&a, &b| store.distance(a, &entry_vec).total_cmp(&store.distance(b, &entry_vec)))
        .unwrap();
    assert_eq!(new_entry, closest);
    let stats = repair_deleted(&mut store, entry, &entry_vec, new_entry, &p, L_D, C, &mut search);
    assert!(stats.in_neighbors > 0);
    free(&mut store, &[entry]);
    check_invariants(&mut store, new_entry, p.slack_degree());
    let live: Vec<NodeId> = (0..n as NodeId).filter(|&i| i != entry).collect();
    let vectors: Vec<&[f32]> = live.iter().map(|&i| store.vector_of(i)).collect();
    let after_truth = truth(&vectors, p.metric, &queries, dim);
    let after = [10, L_SEARCH].map(|l| recall(&mut store, new_entry, &queries, &after_truth, &live, l));
    println!(
        "{n}x{dim}, {clusters} clusters (latent {latent}): recall@10 at L=10, L={L_SEARCH} \
         {before:.4?} from the medoid, {after:.4?} from its replacement"
    );
    (before, after, store, entry, new_entry, live)
}

/// A node whose only in-edge comes from the deleted node is handed to an in-neighbour
/// (step 3 of the repair), so it stays reachable once the deleted node is freed.
#[test]
fn repair_keeps_out_neighbours_reachable() {
    let (n, dim) = (2000, 16);
    let data = clustered(n, dim, 10, 45);
    let p = params(Metric::L2);
    let g = build_quiet(&data, dim, &p, 6);
    let entry = g.entry;
    let mut store = MemoryStore::from_graph(data, dim, p.metric, g);
    let mut search = BeamSearch::new();
    let mut covered = 0;
    for d in (1..n as NodeId).step_by(97).filter(|&d| d != entry).take(10) {
        // w: d's farthest out-neighbour (a long edge, unlikely to be among the `c`
        // candidates), made to have d as its only in-neighbour.
        let d_vec = store.vector_of(d).to_vec();
        let outs = store.neighbors_of(d).to_vec();
        let far = |&w: &NodeId| (sane(p.metric.rank_distance(store.vector_of(w), &d_vec)), w);
        let farthest = outs.iter().filter(|&&w| w != entry).map(far).max_by(|a, b| a.0.total_cmp(&b.0));
        let w = farthest.unwrap().1;
        for i in 0..n as NodeId {
            if i != d && store.neighbors_of(i).contains(&w) {
                let list: Vec<NodeId> = store.neighbors_of(i).iter().copied().filter(|&q| q != w).collect();
                store.set_neighbors(i, &list);
            }
        }
        store.set_deleted(d, true);
        repair_deleted(&mut store, d, &d_vec, entry, &p, L_D, C, &mut search);
        free(&mut store, &[d]);
        let hosts = (0..n as NodeId).filter(|&i| store.neighbors_of(i).contains(&w)).count();
        assert!(hosts > 0, "{w} lost its only in-edge with {d}");
        covered += 1;
    }
    assert_eq!(covered, 10);
    check_invariants(&mut store, entry, p.slack_degree());
}

#[test]
fn replacement_entry_keeps_the_graph_searchable() {
    // Data like the graph tests' (20 blobs in 16-dimensional subspaces): the replacement
    // keeps recall.
    let (before, after, ..) = replace_the_entry((2000, 32, 20, 16), 33);
    for (a, b) in after.iter().zip(before) {
        assert!(*a >= b - 0.01, "recall {a} from the replacement vs {b} from the medoid");
    }
    // Three isotropic blobs: the medoid's long edges (from the first build pass) are what
    // reach the blobs, and its nearest neighbour does not have them: recall from the
    // replacement drops (printed, not asserted). Under churn the repairs and inserts around
    // the new entry bring it back (see the churn tests).
    let (_, _, mut store, entry, new_entry, live) = replace_the_entry((2000, 32, 3, 32), 33);
    let n = 2000;
    let entry_vec = store.vector_of(entry).to_vec();
    let mut search = BeamSearch::new();

    // A deleted neighbourhood larger than the list: the search widens until it finds a
    // live node.
    let mut by_distance: Vec<NodeId> = live.clone();
    by_distance.sort_by(|&a, &b| store.distance(a, &entry_vec).total_cmp(&store.distance(b, &entry_vec)));
    for &i in &by_distance[..300] {
        store.set_deleted(i, true);
    }
    let far = replacement_entry(&mut store, new_entry, &entry_vec, 10, &mut search).unwrap();
    assert!(store.is_live(far));
    let rank = by_distance.iter().position(|&i| i == far).unwrap();
    assert!((300..310).contains(&rank), "replacement is the {rank}th closest node");

    // Nothing live: no replacement.
    for i in 0..n as NodeId {
        store.set_deleted(i, true);
    }
    assert_eq!(replacement_entry(&mut store, new_entry, &entry_vec, 10, &mut search), None);
}

/// Insert never adds an edge to a deleted node (out-edge or back-edge) and never writes a
/// deleted node's list, even when it searches from a deleted entry.
#[test]
fn insert_never_links_to_deleted_nodes() {
    let (n, dim) = (2000, 16);
    let mut data = clustered(n + 200, dim, 10, 41);
    let extra = data.split_off(n * dim);
    let p = params(Metric::L2);
    let g = build_quiet(&data, dim, &p, 2);
    let entry = g.entry;
    let mut store = MemoryStore::from_graph(data, dim, p.metric, g);
    let mut rng = SplitMix64(5);
    for _ in 0..n / 5 {
        store.set_deleted(rng.below(n) as NodeId, true);
    }
    store.set_deleted(entry, true);
    let before = store.adjacency().to_vec();
    let mut search = BeamSearch::new();
    for row in extra.chunks_exact(dim) {
        let id = store.push(row);
        insert(&mut store, id, row, entry, &p, &mut search);
        assert!(!store.neighbors_of(id).is_empty(), "inserted node {id} has no out-edges");
    }
    for i in 0..store.len() as NodeId {
        let list = store.neighbors_of(i).to_vec();
        let old = before.get(i as usize).cloned().unwrap_or_default();
        if !store.is_live(i) {
            assert_eq!(list, old, "the list of deleted node {i} was written");
            continue;
        }
        for q in list.iter().filter(|q| !old.contains(q)) {
            assert!(store.is_live(*q), "node {i} got a new edge to deleted node {q}");
        }
        assert!(list.len() <= p.slack_degree());
    }
    // Every inserted node is reachable (through the deleted, still traversable entry).
    let mut seen = vec![false; store.len()];
    let mut stack = vec![entry];
    seen[entry as usize] = true;
    while let Some(u) = stack.pop() {
        for &v in store.neighbors_of(u) {
            if !std::mem::replace(&mut seen[v as usize], true) {
                stack.push(v);
            }
        }
    }
    assert!(seen[n..].iter().all(|&s| s), "an inserted node is unreachable");
}
