//! Tests of the graph module: invariants, recall against brute force, insert, resumed
//! search, determinism, progress and cancellation.

use std::collections::HashSet;

use super::build::{medoid, permutation};
use super::test_data::{build_quiet, params};
use super::*;
use crate::distance::Metric;

/// The graph tests' data: the stretch is capped at 3.
fn clustered_latent(n: usize, dim: usize, clusters: usize, latent: usize, seed: u64) -> Vec<f32> {
    test_data::clustered_latent(n, dim, clusters, latent, seed, 3.0)
}

/// Clustered test data with an intrinsic dimension of `dim / 2`: hard enough that a
/// broken graph shows in the recall at a small list size.
fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<f32> {
    clustered_latent(n, dim, clusters, (dim / 2).max(1), seed)
}

/// Degree bound, no self-loops, no duplicates, ids in range, all reachable from entry.
fn check_invariants(neighbors: &[Vec<NodeId>], entry: NodeId, max_degree: usize) {
    let n = neighbors.len();
    for (i, list) in neighbors.iter().enumerate() {
        assert!(list.len() <= max_degree, "node {i} has degree {} > {max_degree}", list.len());
        assert!(!list.contains(&(i as NodeId)), "node {i} has a self-loop");
        let set: HashSet<_> = list.iter().collect();
        assert_eq!(set.len(), list.len(), "node {i} has duplicate neighbours");
        assert!(list.iter().all(|&j| (j as usize) < n), "node {i} has an out-of-range edge");
    }
    let mut seen = vec![false; n];
    let mut stack = vec![entry];
    seen[entry as usize] = true;
    let mut reached = 1;
    while let Some(u) = stack.pop() {
        for &v in &neighbors[u as usize] {
            if !seen[v as usize] {
                seen[v as usize] = true;
                reached += 1;
                stack.push(v);
            }
        }
    }
    assert_eq!(reached, n, "only {reached} of {n} nodes reachable from the entry");
}

fn brute_force(store: &MemoryStore, query: &[f32], k: usize) -> Vec<NodeId> {
    let mut all: Vec<(f32, NodeId)> = (0..store.len() as NodeId)
        .map(|i| (sane(store.metric().rank_distance(store.vector_of(i), query)), i))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    all.into_iter().take(k).map(|(_, i)| i).collect()
}

/// Mean recall@10 of searches at `list_size` for `queries` (row-major).
fn recall_at_10(store: &mut MemoryStore, entry: NodeId, queries: &[f32], list_size: usize) -> f64 {
    let dim = store.dim();
    let mut search = BeamSearch::new();
    let (mut hits, mut total) = (0, 0);
    for q in queries.chunks_exact(dim) {
        let truth: HashSet<NodeId> = brute_force(store, q, 10).into_iter().collect();
        search.start(store, q, entry);
        search.run(store, q, list_size);
        hits += search.results().take(10).filter(|(id, _)| truth.contains(id)).count();
        total += truth.len();
    }
    let recall = hits as f64 / total as f64;
    println!("recall@10 at L={list_size}: {recall:.3}");
    recall
}

const DIM: usize = 32;
const N: usize = 3000;

fn recall_for(metric: Metric) -> f64 {
    let mut data = clustered(N + 200, DIM, 20, 7);
    let queries = data.split_off(N * DIM);
    let p = params(metric);
    let g = build_quiet(&data, DIM, &p, 42);
    check_invariants(&g.neighbors.to_lists(), g.entry, p.max_neighbors);
    let entry = g.entry;
    let mut store = MemoryStore::from_graph(data, DIM, metric, g);
    recall_at_10(&mut store, entry, &queries, 10)
}

#[test]
fn build_invariants_and_recall_l2() {
    let r = recall_for(Metric::L2);
    assert!(r >= 0.95, "L2 recall@10 = {r}");
}

#[test]
fn build_invariants_and_recall_cosine() {
    let r = recall_for(Metric::Cosine);
    assert!(r >= 0.95, "cosine recall@10 = {r}");
}

/// A cosine build over vectors of unit length ranks by `1 - a·b` (`build.rs`, `Space`);
/// over the same directions at other lengths, by the cosine kernel. Both graphs must be
/// as good, and equal in size.
#[test]
fn cosine_build_over_unit_vectors_matches_the_general_path() {
    let mut data = clustered(N + 200, DIM, 20, 11);
    for v in data.chunks_exact_mut(DIM) {
        let n = crate::distance::norm(v) as f32;
        v.iter_mut().for_each(|x| *x /= n);
    }
    let queries = data.split_off(N * DIM);
    let scaled: Vec<f32> = data
        .chunks_exact(DIM)
        .enumerate()
        .flat_map(|(i, v)| v.iter().map(move |x| x * (0.5 + (i % 7) as f32)))
        .collect();
    let p = params(Metric::Cosine);
    let mut recalls = Vec::new();
    for rows in [data, scaled] {
        let g = build_quiet(&rows, DIM, &p, 42);
        check_invariants(&g.neighbors.to_lists(), g.entry, p.max_neighbors);
        let entry = g.entry;
        let mut store = MemoryStore::from_graph(rows, DIM, Metric::Cosine, g);
        recalls.push(recall_at_10(&mut store, entry, &queries, 10));
    }
    assert!(recalls[0] >= 0.95 && recalls[1] >= 0.95, "recall@10, unit and scaled: {recalls:?}");
    assert!((recalls[0] - recalls[1]).abs() <= 0.01, "recall@10, unit and scaled: {recalls:?}");
}

#[test]
fn build_inner_product_and_l1() {
    for metric in [Metric::InnerProduct, Metric::L1] {
        let data = clustered(1000, 16, 10, 3);
        let p = params(metric);
        let g = build_quiet(&data, 16, &p, 1);
        // Inner product leaves nodes unreachable more often; their hosts may go past R.
        check_invariants(&g.neighbors.to_lists(), g.entry, p.slack_degree());
    }
}

/// A graph built on 80% of `N` clustered rows: (store, entry, params, rows to add, queries).
fn eighty_percent_built() -> (MemoryStore, NodeId, GraphParams, Vec<f32>, Vec<f32>) {
    let mut data = clustered(N + 200, DIM, 20, 11);
    let queries = data.split_off(N * DIM);
    let p = params(Metric::L2);
    let rest = data.split_off(N * 8 / 10 * DIM);
    let g = build_quiet(&data, DIM, &p, 5);
    let entry = g.entry;
    (MemoryStore::from_graph(data, DIM, p.metric, g), entry, p, rest, queries)
}

#[test]
fn insert_twenty_percent_keeps_recall_and_invariants() {
    let (mut store, entry, p, rest, queries) = eighty_percent_built();
    let base = store.len();
    let mut search = BeamSearch::new();
    for row in rest.chunks_exact(DIM) {
        let id = store.push(row);
        insert(&mut store, id, row, entry, &p, &mut search);
    }
    assert_eq!(store.len(), N);
    check_invariants(store.adjacency(), entry, p.slack_degree());
    // Every inserted node got out-edges and is found by a search for its own vector.
    for id in base as NodeId..N as NodeId {
        assert!(!store.neighbors_of(id).is_empty(), "inserted node {id} has no out-edges");
    }
    let r = recall_at_10(&mut store, entry, &queries, 10);
    assert!(r >= 0.95, "recall@10 after inserts = {r}");
}

/// The insert buffer's merge: a batch's nodes get their out-edges first (the search plus the
/// batch members placed so far as candidates), the back-edges of the whole batch after.
#[test]
fn batched_merge_keeps_recall_and_invariants() {
    let (mut store, entry, p, rest, queries) = eighty_percent_built();
    let mut search = BeamSearch::new();
    let rows: Vec<&[f32]> = rest.chunks_exact(DIM).collect();
    for batch in rows.chunks(64) {
        let mut placed: Vec<(NodeId, &[f32])> = Vec::new();
        let mut links = Vec::new();
        for row in batch {
            let extra: Vec<(NodeId, f32)> =
                placed.iter().map(|&(id, v)| (id, p.metric.rank_distance(v, row))).collect();
            let out = choose_neighbors(&mut store, NodeId::MAX, row, entry, &extra, &p, &mut search);
            assert!(!out.is_empty() && out.len() <= p.max_neighbors);
            let id = store.push(row);
            store.set_neighbors(id, &out);
            placed.push((id, row));
            links.push((id, out));
        }
        for (id, out) in &links {
            add_back_edges(&mut store, *id, out, &p);
        }
        // A merge resumed after a crash runs the back-edges of LINKING entries again: the
        // graph stays valid (edges already there are not added twice).
        for (id, out) in links.iter().take(8) {
            add_back_edges(&mut store, *id, out, &p);
        }
    }
    assert_eq!(store.len(), N);
    check_invariants(store.adjacency(), entry, p.slack_degree());
    let r = recall_at_10(&mut store, entry, &queries, 10);
    assert!(r >= 0.95, "recall@10 after batched merges = {r}");
}

#[test]
fn insert_from_scratch_builds_a_usable_graph() {
    let mut data = clustered(650, 8, 5, 13);
    let queries = data.split_off(600 * 8);
    let p = GraphParams { max_neighbors: 12, build_list_size: 40, ..GraphParams::default() };
    let mut store = MemoryStore::new(8, Metric::L2);
    let mut search = BeamSearch::new();
    for row in data.chunks_exact(8) {
        let id = store.push(row);
        insert(&mut store, id, row, 0, &p, &mut search);
    }
    check_invariants(store.adjacency(), 0, p.slack_degree());
    let r = recall_at_10(&mut store, 0, &queries, 10);
    assert!(r >= 0.9, "recall@10 = {r}");
}

#[test]
fn add_edge_adds_once_and_reports_a_full_list() {
    let mut store = MemoryStore::new(2, Metric::L2);
    for i in 0..5 {
        store.push(&[i as f32, 0.0]);
    }
    let mut list = Vec::new();
    assert!(store.add_edge(0, 1, 2, &mut list));
    assert!(store.add_edge(0, 1, 2, &mut list), "an edge already there counts as added");
    assert!(store.add_edge(0, 2, 2, &mut list));
    store.neighbors(0, &mut list);
    assert_eq!(list, [1, 2]);
    list.clear();
    assert!(!store.add_edge(0, 3, 2, &mut list), "no room below 2");
    assert_eq!(list, [1, 2], "a full list comes back for the caller to prune");
    store.neighbors(0, &mut list);
    assert_eq!(list, [1, 2], "nothing written");
    assert!(store.add_edge(0, 2, 2, &mut list), "present even when full");
}

#[test]
fn resumed_search_continues() {
    let mut data = clustered(N + 30, DIM, 20, 17);
    let queries = data.split_off(N * DIM);
    let p = params(Metric::L2);
    let g = build_quiet(&data, DIM, &p, 3);
    let entry = g.entry;
    let mut store = MemoryStore::from_graph(data, DIM, p.metric, g);
    let (mut resumed, mut fresh) = (BeamSearch::new(), BeamSearch::new());
    let (mut agree, mut total) = (0, 0);
    for q in queries.chunks_exact(DIM) {
        resumed.start(&mut store, q, entry);
        resumed.run(&mut store, q, 10);
        let first: Vec<(NodeId, f32)> = resumed.results().collect();
        let count_after_first = resumed.distance_count();
        assert_eq!(first.len(), 10);
        resumed.run(&mut store, q, 50);
        let second: Vec<(NodeId, f32)> = resumed.results().collect();
        assert!(second.len() >= first.len());
        assert_eq!(second.len(), 50);
        assert!(resumed.distance_count() >= count_after_first);
        assert!(second.windows(2).all(|w| w[0].1 <= w[1].1), "results are not sorted");
        // Nothing found at L=10 was lost: each is still listed unless 50 closer nodes were
        // found.
        let second_ids: HashSet<NodeId> = second.iter().map(|r| r.0).collect();
        let worst = second.last().unwrap().1;
        assert!(first.iter().all(|r| second_ids.contains(&r.0) || r.1 >= worst));

        fresh.start(&mut store, q, entry);
        fresh.run(&mut store, q, 50);
        let fresh_top: HashSet<NodeId> = fresh.results().take(10).map(|r| r.0).collect();
        agree += second.iter().take(10).filter(|r| fresh_top.contains(&r.0)).count();
        total += 10;
        // A visited node's distance was computed exactly once.
        let visited: HashSet<NodeId> = resumed.visited().iter().map(|v| v.0).collect();
        assert_eq!(visited.len(), resumed.visited().len());
    }
    assert!(agree as f64 >= 0.98 * total as f64, "resumed top-10 agrees {agree}/{total}");
}

#[test]
fn shrinking_and_regrowing_the_list_is_consistent() {
    let data = clustered(1000, 8, 5, 19);
    let p = GraphParams { max_neighbors: 16, build_list_size: 40, ..GraphParams::default() };
    let g = build_quiet(&data, 8, &p, 1);
    let entry = g.entry;
    let mut store = MemoryStore::from_graph(data, 8, p.metric, g);
    let q = [0.1f32; 8];
    let mut s = BeamSearch::new();
    s.start(&mut store, &q, entry);
    s.run(&mut store, &q, 30);
    let at30: Vec<_> = s.results().collect();
    s.run(&mut store, &q, 5);
    assert_eq!(s.results().collect::<Vec<_>>(), at30[..5]);
    s.run(&mut store, &q, 30);
    assert_eq!(s.results().collect::<Vec<_>>(), at30);
    // A list larger than the graph expands everything.
    s.run(&mut store, &q, 2000);
    assert_eq!(s.results().count(), 1000);
    assert!(s.is_exhausted());
}

#[test]
fn deleted_nodes_are_traversed_but_not_returned() {
    let data = clustered(1500, 16, 10, 23);
    let p = params(Metric::L2);
    let g = build_quiet(&data, 16, &p, 9);
    let entry = g.entry;
    let mut store = MemoryStore::from_graph(data.clone(), 16, p.metric, g);
    let q = &data[..16];
    let mut s = BeamSearch::new();
    s.start(&mut store, q, entry);
    s.run(&mut store, q, 40);
    let before: Vec<NodeId> = s.results().map(|r| r.0).collect();
    // Delete the 5 best results and the entry.
    for &id in before.iter().take(5).chain(std::iter::once(&entry)) {
        store.set_deleted(id, true);
    }
    s.start(&mut store, q, entry);
    s.run(&mut store, q, 40);
    let after: Vec<NodeId> = s.results().map(|r| r.0).collect();
    assert!(!after.is_empty());
    assert!(after.iter().all(|id| !before[..5].contains(id) && *id != entry));
    assert_eq!(after[..10], before[5..15]);
}

#[test]
fn builds_are_deterministic_across_thread_counts() {
    let data = clustered(2000, 16, 10, 29);
    let p = params(Metric::L2);
    let a = build_quiet(&data, 16, &p, 77);
    let b = build_quiet(&data, 16, &p, 77);
    assert_eq!(a, b);
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let c = pool.install(|| build_quiet(&data, 16, &p, 77));
        assert_eq!(a, c, "build differs with {threads} threads");
    }
    let other = build_quiet(&data, 16, &p, 78);
    assert_ne!(a.neighbors, other.neighbors, "the seed should matter");
    assert_eq!(a.entry, other.entry, "the medoid does not depend on the seed");
}

#[test]
fn progress_is_reported_and_should_stop_aborts() {
    let data = clustered(1000, 8, 5, 31);
    let p = params(Metric::L2);
    let caller = std::thread::current().id();
    let mut calls = Vec::new();
    let g = build(
        &data,
        8,
        &p,
        1,
        &mut |done, total| {
            assert_eq!(std::thread::current().id(), caller);
            calls.push((done, total));
        },
        &mut || false,
    );
    assert!(g.is_some());
    assert!(calls.len() > 2);
    assert_eq!(calls.first(), Some(&(0, 1000)));
    assert_eq!(calls.last(), Some(&(1000, 1000)));
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0));

    let mut polls = 0;
    let stopped = build(&data, 8, &p, 1, &mut |_, _| {}, &mut || {
        polls += 1;
        polls > 5
    });
    assert!(stopped.is_none());
    assert_eq!(polls, 6, "the build should stop at the first true");
}

#[test]
fn tiny_builds() {
    let p = params(Metric::L2);
    let empty = build_quiet(&[], 4, &p, 0);
    assert!(empty.neighbors.is_empty());
    let one = build_quiet(&[1.0, 2.0, 3.0, 4.0], 4, &p, 0);
    assert_eq!(one, BuiltGraph { neighbors: Adjacency::from_lists(&[vec![]]), entry: 0, codes: Vec::new() });
    // Fewer points than R: complete graph minus pruning, still connected.
    let data = clustered(10, 4, 2, 1);
    let g = build_quiet(&data, 4, &p, 0);
    check_invariants(&g.neighbors.to_lists(), g.entry, p.max_neighbors);
    // Duplicate vectors.
    let dup = [0.5f32; 4 * 50];
    let g = build_quiet(&dup, 4, &p, 0);
    // Copies are linked back from hosts with room below the slack degree.
    check_invariants(&g.neighbors.to_lists(), g.entry, p.slack_degree());
}

/// Rows with many exact copies (as text embeddings have: one sentence thousands of times)
/// leave most copies without an in-edge after RobustPrune; the build links each back from
/// a node with room below the slack degree, so every node is reachable and only those
/// hosts go past `R`; the other rows are still found.
#[test]
fn build_with_many_duplicates() {
    let p = params(Metric::L2);
    let mut data = clustered(2000, DIM, 20, 9);
    let queries = data.split_off(1800 * DIM);
    let one = data[..DIM].to_vec();
    for _ in 0..600 {
        data.extend_from_slice(&one);
    }
    for r in 1..21 {
        let row = data[r * DIM..(r + 1) * DIM].to_vec();
        for _ in 0..15 {
            data.extend_from_slice(&row);
        }
    }
    let g = build_quiet(&data, DIM, &p, 5);
    check_invariants(&g.neighbors.to_lists(), g.entry, p.slack_degree());
    let over = g.neighbors.iter().filter(|l| l.len() > p.max_neighbors).count();
    assert!(over * 10 < g.neighbors.len(), "{over} of {} lists past R", g.neighbors.len());
    let entry = g.entry;
    let mut store = MemoryStore::from_graph(data, DIM, Metric::L2, g);
    let r = recall_at_10(&mut store, entry, &queries, 40);
    assert!(r >= 0.9, "recall@10 = {r} with duplicates");
}

#[test]
fn robust_prune_picks_diverse_neighbours() {
    // Points on a line: 0 is the point; 1,2,3 to the right, -1 to the left.
    let xs = [0.0f32, 1.0, 2.0, 3.0, -1.0, 1.0];
    let data: Vec<f32> = xs.iter().flat_map(|&x| [x, 0.0]).collect();
    let mut store = MemoryStore::from_vectors(data, 2, Metric::L2);
    let p = GraphParams { max_neighbors: 10, ..GraphParams::default() };
    let point = [0.0f32, 0.0];
    let mut cands: Vec<(NodeId, f32)> =
        (0..6).map(|i| (i, store.distance(i, &point))).chain([(2, 4.0), (0, 0.0)]).collect();
    // 2 and 3 are behind 1; 5 duplicates 1 (tie broken by id); -1 is on its own side.
    let out = robust_prune(&mut store, 0, &point, &mut cands, 1.0, &p);
    assert_eq!(out, vec![1, 4]);
    assert_eq!(cands.iter().map(|c| c.0).collect::<Vec<_>>(), vec![1, 4, 5, 2, 3]);
    // With R = 1 only the closest remains.
    let p1 = GraphParams { max_neighbors: 1, ..p };
    assert_eq!(robust_prune(&mut store, 0, &point, &mut cands, 1.0, &p1), vec![1]);
    // A large alpha keeps more: 3 (d(0,3)=9 vs d(1,3)=4) survives from alpha 2.25 up, so the
    // round at 1.2^5 takes it; 2 (d(0,2)=4 vs d(1,2)=1) comes in the round at 1.2^8 > 4.
    assert_eq!(robust_prune(&mut store, 0, &point, &mut cands, 5.0, &p), vec![1, 4, 3, 2]);
    // Alpha 2: 3 and 2 stay occluded.
    assert_eq!(robust_prune(&mut store, 0, &point, &mut cands, 2.0, &p), vec![1, 4]);
}

#[test]
fn inner_product_prune_ignores_alpha() {
    let data: Vec<f32> = [[1.0f32, 0.0], [2.0, 0.1], [0.0, 1.0], [1.0, 1.0]].concat();
    let mut store = MemoryStore::from_vectors(data, 2, Metric::InnerProduct);
    let p = GraphParams { metric: Metric::InnerProduct, ..GraphParams::default() };
    let point = [1.0f32, 0.0];
    let mut cands: Vec<(NodeId, f32)> = (1..4).map(|i| (i, store.distance(i, &point))).collect();
    let a = robust_prune(&mut store, 0, &point, &mut cands, 1.0, &p);
    let b = robust_prune(&mut store, 0, &point, &mut cands, 1.2, &p);
    assert_eq!(a, b);
}

#[test]
fn helpers() {
    let perm = permutation(1000, 5);
    let mut sorted = perm.clone();
    sorted.sort();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    assert_ne!(perm, sorted);
    assert_eq!(perm, permutation(1000, 5));
    let data = [0.0f32, 0.0, 10.0, 10.0, 4.0, 4.0, 6.0, 6.0];
    assert_eq!(medoid(&data, 2, Metric::L2), 2);
    assert_eq!(GraphParams::default().slack_degree(), 41);
    assert_eq!(GraphParams { max_neighbors: 10, ..GraphParams::default() }.slack_degree(), 13);
}

/// Build time and recall of a large set. `OMEN_N` (default 60000) × `OMEN_DIM` (784);
/// run in release: `cargo test -p omen-core --release large_build -- --ignored --nocapture`.
#[test]
#[ignore]
fn large_build_timing() {
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (n, dim) = (env("OMEN_N", 60_000), env("OMEN_DIM", 784));
    let (latent, clusters) = (env("OMEN_LATENT", 16), env("OMEN_CLUSTERS", 10));
    let mut data = clustered_latent(n + 100, dim, clusters, latent, 1);
    let queries = data.split_off(n * dim);
    let p = GraphParams::default();
    let t = std::time::Instant::now();
    let mut last = 0;
    let g = build(&data, dim, &p, 42, &mut |d, _| last = d, &mut || false).unwrap();
    let el = t.elapsed();
    let degs: usize = g.neighbors.iter().map(|l| l.len()).sum();
    println!(
        "build {n}x{dim} ({clusters} clusters, latent {latent}) on {} threads: {el:?}, avg degree {:.1}",
        rayon::current_num_threads(),
        degs as f64 / n as f64
    );
    check_invariants(&g.neighbors.to_lists(), g.entry, p.max_neighbors);
    let entry = g.entry;
    let mut store = MemoryStore::from_graph(data, dim, p.metric, g);
    for l in [10, 40, 100] {
        let t = std::time::Instant::now();
        let r = recall_at_10(&mut store, entry, &queries, l);
        println!("L={l}: recall@10 {r:.3} ({:?} incl. brute force)", t.elapsed());
    }
    assert_eq!(last, 2 * n);
    // Where the distance computations of one insert go.
    struct Counting<'a>(&'a mut MemoryStore, usize);
    impl GraphStore for Counting<'_> {
        fn distance(&mut self, id: NodeId, q: &[f32]) -> f32 {
            self.1 += 1;
            self.0.distance(id, q)
        }
        fn neighbors(&mut self, id: NodeId, out: &mut Vec<NodeId>) {
            self.0.neighbors(id, out)
        }
        fn vector(&mut self, id: NodeId, out: &mut Vec<f32>) {
            self.0.vector(id, out)
        }
        fn set_neighbors(&mut self, _: NodeId, _: &[NodeId]) {}
    }
    let (mut s_count, mut p_count, mut visited) = (0, 0, 0);
    let mut search = BeamSearch::new();
    for i in 0..200u32 {
        let v = store.vector_of(i).to_vec();
        let mut c = Counting(&mut store, 0);
        search.start(&mut c, &v, entry);
        search.run(&mut c, &v, p.build_list_size);
        s_count += c.1;
        visited += search.visited().len();
        let mut cands = search.visited().to_vec();
        c.1 = 0;
        robust_prune(&mut c, i, &v, &mut cands, p.alpha, &p);
        p_count += c.1;
    }
    println!(
        "per insert: search {} distances, {} expanded, prune {} distances",
        s_count / 200,
        visited / 200,
        p_count / 200
    );
}

/// Traversal on codes finds the neighbours exact traversal finds, a little wider list
/// given, and returns them in exact distance order.
#[test]
fn coded_search_keeps_recall_and_exact_order() {
    for (metric, dim) in [(Metric::L2, 96), (Metric::Cosine, 128), (Metric::InnerProduct, 64)] {
        let mut data = clustered(N + 100, dim, 20, 11);
        let queries = data.split_off(N * dim);
        let p = params(metric);
        let g = build_quiet(&data, dim, &p, 42);
        let entry = g.entry;
        let centroid = crate::quant::Quantizer::centroid_of(metric, dim, &data);
        let quantizer = crate::quant::Quantizer::new(metric, dim, centroid, 5);
        let cb = quantizer.code_bytes();
        let mut codes = vec![0u8; N * cb];
        for (v, c) in data.chunks(dim).zip(codes.chunks_mut(cb)) {
            quantizer.encode(v, c);
        }
        let inner = MemoryStore::from_graph(data, dim, metric, g);
        let mut store = super::CodedStore::new(inner, &quantizer, &codes);
        let mut search = BeamSearch::new();
        let (mut hits, mut total) = (0, 0);
        for q in queries.chunks_exact(dim) {
            let truth: HashSet<NodeId> = brute_force(&store.inner, q, 10).into_iter().collect();
            search.start(&mut store, q, entry);
            search.run(&mut store, q, 40);
            let results: Vec<(NodeId, f32)> = search.results().collect();
            for w in results.windows(2) {
                assert!(w[0].1 <= w[1].1, "{metric:?}: results out of exact order");
            }
            for &(id, d) in &results {
                let exact = sane(metric.rank_distance(store.inner.vector_of(id), q));
                assert_eq!(d, exact, "{metric:?}: a result's distance is not its exact distance");
            }
            hits += results.iter().take(10).filter(|(id, _)| truth.contains(id)).count();
            total += truth.len();
        }
        let recall = hits as f64 / total as f64;
        assert!(recall >= 0.9, "{metric:?}: coded recall@10 at L=40 is {recall}");
    }
}

/// Copies of one vector must not fill the list with ties and end the search: here eight
/// copies lie between the entry and a node beyond a farther one. A list of 4 held only
/// copies, and the search stopped at them; a copy gives its slot back, so the farther
/// node is expanded and the closest row found. The copies are results still.
#[test]
fn copies_do_not_end_a_search() {
    // Query at the origin. 0: entry (d² 100); 1..=8: copies (d² 9); 9: a farther node
    // (d² 25) every copy links to; 10: the nearest row (d² 1), reached only through 9.
    let mut rows = vec![[10.0f32, 0.0]];
    rows.extend([[3.0, 0.0]; 8]);
    rows.extend([[0.0, 5.0], [0.0, 1.0]]);
    let mut neighbors: Vec<Vec<NodeId>> = vec![vec![1]];
    neighbors.extend((1..=8).map(|i| if i < 8 { vec![i + 1, 9] } else { vec![9] }));
    neighbors.extend([vec![10], vec![]]);
    let graph = BuiltGraph { neighbors: Adjacency::from_lists(&neighbors), entry: 0, codes: Vec::new() };
    let mut store = MemoryStore::from_graph(rows.concat(), 2, Metric::L2, graph);
    let mut search = BeamSearch::new();
    let query = [0.0f32, 0.0];
    search.start(&mut store, &query, 0);
    search.run(&mut store, &query, 4);
    let found: Vec<NodeId> = search.results().map(|(id, _)| id).collect();
    assert_eq!(found.first(), Some(&10), "the nearest row, behind the copies: {found:?}");
    assert_eq!(found.len(), 4);
    assert!(found[1..].iter().all(|&id| (1..=8).contains(&id)), "then copies: {found:?}");
}
