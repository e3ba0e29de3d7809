//! Distance kernels (simsimd, runtime dispatch) against plain Rust loops, and the code
//! kernel (`quant::plane_sum`) at every SIMD level this CPU has.
//! Run: `cargo bench -p omen-core --bench distance`.

use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use omen_core::{distance, quant, simd};

fn vectors(dim: usize) -> (Vec<f32>, Vec<f32>) {
    let a = (0..dim).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
    let b = (0..dim).map(|i| ((i * 104_729) % 1000) as f32 / 1000.0).collect();
    (a, b)
}

fn kernels(c: &mut Criterion) {
    for dim in [128usize, 768, 1536] {
        let (a, b) = vectors(dim);
        let mut g = c.benchmark_group(format!("dim{dim}"));
        g.bench_function(BenchmarkId::new("l2sq", "simsimd"), |bch| {
            bch.iter(|| distance::l2_squared(black_box(&a), black_box(&b)))
        });
        g.bench_function(BenchmarkId::new("l2sq", "plain"), |bch| {
            bch.iter(|| distance::plain_l2_squared(black_box(&a), black_box(&b)))
        });
        g.bench_function(BenchmarkId::new("dot", "simsimd"), |bch| {
            bch.iter(|| distance::inner_product(black_box(&a), black_box(&b)))
        });
        g.bench_function(BenchmarkId::new("dot", "plain"), |bch| {
            bch.iter(|| distance::plain_inner_product(black_box(&a), black_box(&b)))
        });
        g.bench_function(BenchmarkId::new("cosine", "simsimd"), |bch| {
            bch.iter(|| distance::cosine_distance(black_box(&a), black_box(&b)))
        });
        g.bench_function(BenchmarkId::new("cosine", "plain"), |bch| {
            bch.iter(|| distance::plain_cosine_distance(black_box(&a), black_box(&b)))
        });
        g.bench_function(BenchmarkId::new("l1", "lanes"), |bch| {
            bch.iter(|| distance::l1_distance(black_box(&a), black_box(&b)))
        });
        g.bench_function(BenchmarkId::new("l1", "plain"), |bch| {
            bch.iter(|| distance::plain_l1_distance(black_box(&a), black_box(&b)))
        });
        g.finish();
    }
}

/// One estimate's masked sum: the 4-bit codes of 64 dimensions, the 1-bit codes of 384 and
/// 768 (`quant::bits_for`).
fn plane_sums(c: &mut Criterion) {
    for (dims, planes) in [(64usize, 4usize), (384, 1), (768, 1)] {
        let (values, _) = vectors(dims);
        let bits: Vec<u8> = (0..planes * dims / 8).map(|i| (i * 37 % 251) as u8).collect();
        let mut g = c.benchmark_group(format!("plane_sum_{dims}x{planes}"));
        for level in simd::Level::supported() {
            g.bench_function(BenchmarkId::new("plane_sum", format!("{level:?}")), |bch| {
                bch.iter(|| quant::plane_sum_at(level, black_box(&values), black_box(&bits), planes))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, kernels, plane_sums);
criterion_main!(benches);
