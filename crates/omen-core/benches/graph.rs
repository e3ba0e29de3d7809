//! Vamana graph: parallel build of 10k × 128 vectors, and search at L = 40.
//! Run: `cargo bench -p omen-core --bench graph`.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use omen_core::distance::Metric;
use omen_core::graph::{BeamSearch, GraphParams, MemoryStore, build};

/// Seeded clustered data (16 blobs, Gaussian), row-major; SplitMix64 + Box-Muller.
fn clustered(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    let mut uniform = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let centres: Vec<f64> = (0..16 * dim).map(|_| uniform() * 2.0 - 1.0).collect();
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = (uniform() * 16.0) as usize;
        for d in 0..dim {
            let (u1, u2) = (uniform().max(1e-12), uniform());
            let g = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            out.push((centres[c * dim + d] + 0.3 * g) as f32);
        }
    }
    out
}

fn graph(c: &mut Criterion) {
    const N: usize = 10_000;
    const DIM: usize = 128;
    let data = clustered(N, DIM, 1);
    let params = GraphParams { metric: Metric::L2, ..GraphParams::default() };

    let mut g = c.benchmark_group("graph");
    g.sample_size(10);
    g.bench_function("build_10k_x128", |b| {
        b.iter(|| build(black_box(&data), DIM, &params, 42, &mut |_, _| {}, &mut || false))
    });
    g.finish();

    let built = build(&data, DIM, &params, 42, &mut |_, _| {}, &mut || false).unwrap();
    let entry = built.entry;
    let mut store = MemoryStore::from_graph(data, DIM, Metric::L2, built);
    let queries = clustered(100, DIM, 2);
    let mut search = BeamSearch::new();
    let mut i = 0;
    c.bench_function("search_10k_x128_L40", |b| {
        b.iter(|| {
            let q = &queries[(i % 100) * DIM..][..DIM];
            i += 1;
            search.start(&mut store, q, entry);
            search.run(&mut store, q, 40);
            black_box(search.results().next())
        })
    });
}

criterion_group!(benches, graph);
criterion_main!(benches);
