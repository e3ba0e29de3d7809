//! Test data and helpers shared by the graph tests and the delete-repair tests.

use super::build::SplitMix64;
use super::*;
use crate::distance::Metric;

/// Seeded clustered data, row-major: `clusters` blobs with random centres in `[-1, 1]^dim`.
/// Each blob spreads along a random `latent`-dimensional subspace (Gaussian, `0.3` per
/// latent axis, stretched by `sqrt(dim / latent)` up to `max_stretch`) plus small isotropic
/// noise, so the data has a low intrinsic dimension like real embeddings. `latent = dim`
/// gives isotropic (hard) blobs.
pub(crate) fn clustered_latent(
    n: usize,
    dim: usize,
    clusters: usize,
    latent: usize,
    seed: u64,
    max_stretch: f64,
) -> Vec<f32> {
    let mut rng = SplitMix64(seed);
    let mut uniform = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let mut gauss = move || {
        let (u1, u2) = (uniform().max(1e-12), uniform());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos(), u2)
    };
    let centres: Vec<f64> = (0..clusters * dim).map(|_| gauss().1 * 2.0 - 1.0).collect();
    let scale = 0.3 / (latent as f64).sqrt() * (dim as f64 / latent as f64).sqrt().min(max_stretch);
    let bases: Vec<f64> = (0..clusters * dim * latent).map(|_| gauss().0 * scale).collect();
    let mut out = Vec::with_capacity(n * dim);
    let mut z = vec![0f64; latent];
    for _ in 0..n {
        let c = (gauss().1 * clusters as f64) as usize % clusters;
        z.iter_mut().for_each(|x| *x = gauss().0);
        let basis = &bases[c * dim * latent..(c + 1) * dim * latent];
        for d in 0..dim {
            let row = &basis[d * latent..(d + 1) * latent];
            let v: f64 = row.iter().zip(&z).map(|(a, b)| a * b).sum();
            out.push((centres[c * dim + d] + v + 0.02 * gauss().0) as f32);
        }
    }
    out
}

/// The graph parameters of the tests: R = 24, L = 64, alpha = 1.2.
pub(crate) fn params(metric: Metric) -> GraphParams {
    GraphParams { max_neighbors: 24, build_list_size: 64, alpha: 1.2, metric, slack: None }
}

/// A build with no progress reporting that is never stopped.
pub(crate) fn build_quiet(vectors: &[f32], dim: usize, params: &GraphParams, seed: u64) -> BuiltGraph {
    build(vectors, dim, params, seed, &mut |_, _| {}, &mut || false).expect("not stopped")
}
