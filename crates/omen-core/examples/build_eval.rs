//! Builds a graph over a TEXMEX data folder's base vectors in memory and reports the build
//! time and recall@10 at a few search list sizes against the folder's ground truth.
//! Usage: cargo run --release -p omen-core --example build_eval -- DATA_FOLDER [QUERIES] [coded|exact] [L] [threads]
//! (`coded`: as CREATE INDEX does, the build's searches traverse on codes where `Quantizer::cheaper_than_vectors`.)
//! Then, on the same graph, queries traverse on codes of 1 (RaBitQ), 2, 4 and 8 bits a
//! dimension (as scans do: neighbours ranked on their codes, expanded nodes exactly), and on
//! the full vectors, and report recall@10, distance computations and code size: the code
//! comparison of bench/results/codes.md.

use std::path::{Path, PathBuf};
use std::time::Instant;

use omen_core::distance::Metric;
use omen_core::graph::{self, BeamSearch, CodedStore, GraphParams, MemoryStore};

/// Reads a .fvecs / .bvecs / .ivecs file as rows of f32 (ids as f32 for .ivecs).
fn read_vecs(path: &Path) -> (Vec<f32>, usize) {
    let raw = std::fs::read(path).expect("read vecs file");
    let dim = u32::from_le_bytes(raw[0..4].try_into().unwrap()) as usize;
    let elem = match path.extension().and_then(|e| e.to_str()) {
        Some("bvecs") => 1,
        _ => 4,
    };
    let record = 4 + dim * elem;
    let mut out = Vec::with_capacity(raw.len() / record * dim);
    for rec in raw.chunks_exact(record) {
        let body = &rec[4..];
        match path.extension().and_then(|e| e.to_str()) {
            Some("bvecs") => out.extend(body.iter().map(|&b| b as f32)),
            Some("ivecs") => out.extend(body.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32)),
            _ => out.extend(body.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()))),
        }
    }
    (out, dim)
}

fn find(folder: &Path, kind: &str) -> PathBuf {
    std::fs::read_dir(folder)
        .expect("data folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().unwrap().to_string_lossy().contains(&format!("_{kind}.")))
        .unwrap_or_else(|| panic!("no {kind} file in {}", folder.display()))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let folder = PathBuf::from(&args[1]);
    let nq: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let (base, dim) = read_vecs(&find(&folder, "base"));
    let (queries, _) = read_vecs(&find(&folder, "query"));
    let (truth, tdim) = read_vecs(&find(&folder, "groundtruth"));
    let coded = args.get(3).is_none_or(|s| s == "coded");
    let build_l: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(64);
    let threads: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(2);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().unwrap();
    // The metric follows the folder name, as bench/run.py reads it.
    let name = folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let metric =
        if ["minilm", "angular", "cosine"].iter().any(|k| name.contains(k)) { Metric::Cosine } else { Metric::L2 };
    // A cosine index stores unit vectors (the extension's `layout::stored_vector`), so its
    // build ranks by an inner product: the same here.
    let mut base = base;
    if metric == Metric::Cosine {
        base.chunks_exact_mut(dim).for_each(|row| {
            omen_core::distance::normalize(row);
        });
    }
    let params = GraphParams { metric, build_list_size: build_l, ..GraphParams::default() };
    let centroid = omen_core::quant::Quantizer::centroid_of(metric, dim, &base);
    let quantizer = omen_core::quant::Quantizer::new(metric, dim, centroid, 1);
    let t0 = Instant::now();
    let g =
        graph::build_coded(&base, dim, &params, 0x0de1_5eed, coded.then_some(&quantizer), &mut |_, _| {}, &mut || {
            false
        })
        .unwrap();
    println!("{} build, L = {build_l}, {threads} threads", if coded { "coded" } else { "exact" });
    println!("build {:.1} s, n = {}", t0.elapsed().as_secs_f64(), base.len() / dim);
    let entry = g.entry;
    let mut store = MemoryStore::from_graph(base.clone(), dim, metric, g);
    let mut search = BeamSearch::new();
    let n = base.len() / dim;
    let nq = nq.min(queries.len() / dim);
    println!("| code | bytes | L | recall@10 | distance estimates / query | µs / query |");
    println!("|---|---:|---:|---:|---:|---:|");
    for bits in [1usize, 2, 4, 8] {
        let q = quantizer.clone().with_bits(bits);
        let cb = q.code_bytes();
        let mut codes = vec![0u8; n * cb];
        for (v, c) in base.chunks_exact(dim).zip(codes.chunks_mut(cb)) {
            q.encode(v, c);
        }
        let mut coded = CodedStore::new(&mut store, &q, &codes);
        for l in [10usize, 20, 40, 80] {
            let (mut hits, mut work) = (0, 0);
            let t0 = Instant::now();
            for qi in 0..nq {
                let qv = &queries[qi * dim..(qi + 1) * dim];
                search.start(&mut coded, qv, entry);
                search.run(&mut coded, qv, l);
                work += search.distance_count();
                let got: Vec<u32> = search.results().take(10).map(|r| r.0).collect();
                let gt = &truth[qi * tdim..qi * tdim + 10];
                hits += got.iter().filter(|id| gt.contains(&(**id as f32))).count();
            }
            let kind = if bits == 1 { "RaBitQ 1 bit".to_string() } else { format!("{bits}-bit grid") };
            println!(
                "| {kind} | {cb} | {l} | {:.4} | {} | {:.0} |",
                hits as f64 / (10 * nq) as f64,
                work / nq,
                t0.elapsed().as_micros() as f64 / nq as f64
            );
        }
    }
    // Edge codes: each neighbour's code relative to the node that stores it.
    for bits in [2usize, 4, 8] {
        let q = quantizer.clone().with_bits(bits);
        if !q.relative() {
            continue;
        }
        let cb = q.code_bytes();
        let edge_codes: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| {
                let owner = store.vector_of(id);
                let mut codes = vec![0u8; store.neighbors_of(id).len() * cb];
                for (&m, c) in store.neighbors_of(id).iter().zip(codes.chunks_mut(cb)) {
                    q.encode_edge(store.vector_of(m), owner, c);
                }
                codes
            })
            .collect();
        let mut edge =
            EdgeStore { inner: &store, q: &q, codes: &edge_codes, prepared: Default::default(), query: Vec::new() };
        for l in [10usize, 20, 40, 80] {
            let (mut hits, mut work) = (0, 0);
            let t0 = Instant::now();
            for qi in 0..nq {
                let qv = &queries[qi * dim..(qi + 1) * dim];
                search.start(&mut edge, qv, entry);
                search.run(&mut edge, qv, l);
                work += search.distance_count();
                let got: Vec<u32> = search.results().take(10).map(|r| r.0).collect();
                let gt = &truth[qi * tdim..qi * tdim + 10];
                hits += got.iter().filter(|id| gt.contains(&(**id as f32))).count();
            }
            println!(
                "| {bits}-bit edge codes | {cb} | {l} | {:.4} | {} | {:.0} |",
                hits as f64 / (10 * nq) as f64,
                work / nq,
                t0.elapsed().as_micros() as f64 / nq as f64
            );
        }
    }
    for l in [10usize, 20, 40] {
        let mut hits = 0;
        let t0 = Instant::now();
        for qi in 0..nq.min(queries.len() / dim) {
            let q = &queries[qi * dim..(qi + 1) * dim];
            search.start(&mut store, q, entry);
            search.run(&mut store, q, l);
            let got: Vec<u32> = search.results().take(10).map(|r| r.0).collect();
            let gt = &truth[qi * tdim..qi * tdim + 10];
            hits += got.iter().filter(|id| gt.contains(&(**id as f32))).count();
        }
        println!(
            "L {l}: recall@10 {:.4}, {:.0} µs/query",
            hits as f64 / (10 * nq) as f64,
            t0.elapsed().as_micros() as f64 / nq as f64
        );
    }
}

/// Traversal on edge codes (each neighbour relative to the node that stores it).
struct EdgeStore<'a> {
    inner: &'a MemoryStore,
    q: &'a omen_core::quant::Quantizer,
    codes: &'a [Vec<u8>],
    prepared: omen_core::quant::PreparedQuery,
    query: Vec<f32>,
}

impl graph::GraphStore for EdgeStore<'_> {
    fn distance(&mut self, id: u32, query: &[f32]) -> f32 {
        self.inner.metric().rank_distance(self.inner.vector_of(id), query)
    }
    fn neighbors(&mut self, id: u32, out: &mut Vec<u32>) {
        out.clear();
        out.extend_from_slice(self.inner.neighbors_of(id));
    }
    fn vector(&mut self, id: u32, out: &mut Vec<f32>) {
        out.clear();
        out.extend_from_slice(self.inner.vector_of(id));
    }
    fn set_neighbors(&mut self, _: u32, _: &[u32]) {
        unreachable!()
    }
    fn prepare(&mut self, query: &[f32]) {
        self.query = query.to_vec();
        self.q.prepare(query, &mut self.prepared);
    }
    fn expand_coded(
        &mut self,
        id: u32,
        keep: &mut dyn FnMut(u32) -> bool,
        out: &mut Vec<(u32, f32)>,
    ) -> Option<(f32, bool)> {
        let own = self.inner.metric().rank_distance(self.inner.vector_of(id), &self.query);
        let cb = self.q.code_bytes();
        for (i, &m) in self.inner.neighbors_of(id).iter().enumerate() {
            if keep(m) {
                let code = &self.codes[id as usize][i * cb..(i + 1) * cb];
                out.push((m, self.q.estimate_edge(&self.prepared, code, own)));
            }
        }
        Some((own, true))
    }
}
