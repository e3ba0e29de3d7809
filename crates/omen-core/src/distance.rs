//! Distance kernels.
//!
//! Every kernel takes two slices of equal length that may point straight into a stored
//! tuple. The inner product, cosine and squared-L2 kernels are simsimd's, which picks the
//! widest instruction set the CPU offers at run time (AVX-512, AVX2, NEON, SVE); L1 is a
//! plain loop written so the compiler vectorizes it. The `plain_*` loops are the reference
//! the unit tests and the criterion benchmark compare against.

use simsimd::SpatialSimilarity;

/// The four metrics of the `vector` operators, in the order of their operator numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    /// `<->`: Euclidean distance.
    L2,
    /// `<#>`: negative inner product.
    InnerProduct,
    /// `<=>`: cosine distance, `1 - cos(a, b)`.
    Cosine,
    /// `<+>`: taxicab distance.
    L1,
}

impl Metric {
    /// The metric's stable code, as stored in an index's metapage.
    pub fn code(self) -> u8 {
        match self {
            Metric::L2 => 1,
            Metric::InnerProduct => 2,
            Metric::Cosine => 3,
            Metric::L1 => 4,
        }
    }

    /// Inverse of [`Metric::code`].
    pub fn from_code(code: u8) -> Option<Metric> {
        match code {
            1 => Some(Metric::L2),
            2 => Some(Metric::InnerProduct),
            3 => Some(Metric::Cosine),
            4 => Some(Metric::L1),
            _ => None,
        }
    }

    /// The distance the SQL operator returns.
    #[inline]
    pub fn distance(self, a: &[f32], b: &[f32]) -> f64 {
        match self {
            Metric::L2 => l2_squared(a, b).sqrt(),
            Metric::InnerProduct => -inner_product(a, b),
            Metric::Cosine => cosine_distance(a, b),
            Metric::L1 => l1_distance(a, b),
        }
    }

    /// A value that orders like [`Metric::distance`] but is cheaper (no square root).
    #[inline]
    pub fn rank_distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::L2 => l2_squared(a, b) as f32,
            other => other.distance(a, b) as f32,
        }
    }
}

/// How exact distances are ranked: by the metric's [`Metric::rank_distance`], or, for
/// cosine over vectors of unit length, by `1 - a·b`: the same distance up to float
/// rounding, from an inner product instead of three sums and a normalization (the cosine
/// kernel took 30–34% of a build's time at 24 and 384 dimensions, and 22% of a merge's).
/// A cosine index stores its vectors normalized ([`normalize`]) and ranks this way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ranking {
    pub metric: Metric,
    /// Cosine, and every vector ranked (query included) has unit length.
    pub unit_cosine: bool,
}

impl Ranking {
    /// `metric`'s ranking; `unit_vectors` says every vector ranked has unit length (only
    /// used for cosine).
    pub fn new(metric: Metric, unit_vectors: bool) -> Ranking {
        Ranking { metric, unit_cosine: unit_vectors && metric == Metric::Cosine }
    }

    /// A value that orders like the metric's distance between `a` and `b`.
    #[inline]
    pub fn rank(self, a: &[f32], b: &[f32]) -> f32 {
        if self.unit_cosine {
            (1.0 - inner_product(a, b)).clamp(0.0, 2.0) as f32
        } else {
            self.metric.rank_distance(a, b)
        }
    }
}

/// Scales `v` to unit length in place (the sum of squares in `f64`, so no finite vector
/// overflows); false, leaving `v` as it was, for a zero vector.
pub fn normalize(v: &mut [f32]) -> bool {
    let n = v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt();
    if n == 0.0 || !n.is_finite() {
        return false;
    }
    v.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
    true
}

/// Squared Euclidean distance.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    <f32 as SpatialSimilarity>::l2sq(a, b).unwrap_or_else(|| plain_l2_squared(a, b))
}

/// Inner product.
#[inline]
pub fn inner_product(a: &[f32], b: &[f32]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    <f32 as SpatialSimilarity>::dot(a, b).unwrap_or_else(|| plain_inner_product(a, b))
}

/// Cosine distance `1 - a·b / (|a| |b|)`, clamped to `[0, 2]`; NaN when either vector is
/// all zeros, as pgvector returns.
#[inline]
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let d = match <f32 as SpatialSimilarity>::cos(a, b) {
        Some(d) => d,
        None => return plain_cosine_distance(a, b),
    };
    // simsimd answers 0 or 1 for zero vectors; only then is the slow check worth it.
    if (d == 0.0 || d == 1.0) && (is_zero(a) || is_zero(b)) {
        return f64::NAN;
    }
    d.clamp(0.0, 2.0)
}

/// Taxicab (L1) distance.
#[inline]
pub fn l1_distance(a: &[f32], b: &[f32]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    // Eight independent lanes let the compiler keep the sum in one SIMD register.
    let mut lanes = [0f32; 8];
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..8 {
            lanes[i] += (x[i] - y[i]).abs();
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += (x - y).abs();
    }
    sum as f64
}

/// Euclidean norm.
#[inline]
pub fn norm(a: &[f32]) -> f64 {
    inner_product(a, a).sqrt()
}

fn is_zero(a: &[f32]) -> bool {
    a.iter().all(|&x| x == 0.0)
}

/// Reference squared L2: a plain loop in `f64`.
pub fn plain_l2_squared(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| ((x - y) as f64).powi(2)).sum()
}

/// Reference inner product: a plain loop in `f64`.
pub fn plain_inner_product(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Reference cosine distance: a plain loop in `f64`.
pub fn plain_cosine_distance(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    let sim = ab / (aa * bb).sqrt();
    if sim.is_nan() {
        return f64::NAN;
    }
    1.0 - sim.clamp(-1.0, 1.0)
}

/// Reference L1 distance: a plain loop in `f64`.
pub fn plain_l1_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).abs()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(x: f64, y: f64) -> bool {
        (x - y).abs() <= 1e-3 * (1.0 + x.abs().max(y.abs()))
    }

    #[test]
    fn known_values() {
        let a = [1.0f32, 2.0, 3.0];
        let b = [4.0f32, 6.0, 8.0];
        assert!(close(Metric::L2.distance(&a, &b), (9.0f64 + 16.0 + 25.0).sqrt()));
        assert!(close(Metric::InnerProduct.distance(&a, &b), -(4.0 + 12.0 + 24.0)));
        assert!(close(Metric::L1.distance(&a, &b), 12.0));
        assert!(close(Metric::Cosine.distance(&a, &a), 0.0));
        assert!(close(Metric::Cosine.distance(&[1.0, 0.0], &[-1.0, 0.0]), 2.0));
    }

    #[test]
    fn zero_vector_cosine_is_nan() {
        assert!(cosine_distance(&[0.0, 0.0], &[1.0, 2.0]).is_nan());
        assert!(cosine_distance(&[0.0, 0.0], &[0.0, 0.0]).is_nan());
    }

    #[test]
    fn metric_codes_round_trip() {
        for m in [Metric::L2, Metric::InnerProduct, Metric::Cosine, Metric::L1] {
            assert_eq!(Metric::from_code(m.code()), Some(m));
        }
        assert_eq!(Metric::from_code(0), None);
    }

    proptest! {
        #[test]
        fn simd_matches_plain(v in (1usize..300).prop_flat_map(|n| (
            proptest::collection::vec(-100f32..100.0, n),
            proptest::collection::vec(-100f32..100.0, n)))) {
            let (a, b) = v;
            prop_assert!(close(l2_squared(&a, &b), plain_l2_squared(&a, &b)));
            prop_assert!(close(inner_product(&a, &b), plain_inner_product(&a, &b)));
            prop_assert!(close(l1_distance(&a, &b), plain_l1_distance(&a, &b)));
            let (c, p) = (cosine_distance(&a, &b), plain_cosine_distance(&a, &b));
            prop_assert!(c.is_nan() == p.is_nan());
            if !p.is_nan() { prop_assert!((c - p).abs() < 1e-3, "{c} vs {p}"); }
        }
    }

    #[test]
    fn unit_ranking_is_cosine_distance_over_normalized_vectors() {
        let (a, b) = ([3.0f32, -4.0, 12.0, 0.5], [-1.0f32, 2.0, 0.25, 7.0]);
        let (mut na, mut nb) = (a, b);
        assert!(normalize(&mut na) && normalize(&mut nb));
        assert!((norm(&na) - 1.0).abs() < 1e-6, "{}", norm(&na));
        let unit = Ranking::new(Metric::Cosine, true);
        assert!(unit.unit_cosine);
        assert!((unit.rank(&na, &nb) as f64 - cosine_distance(&a, &b)).abs() < 1e-6);
        // Only cosine ranks by the inner product; the others keep their own distance.
        let l2 = Ranking::new(Metric::L2, true);
        assert!(!l2.unit_cosine);
        assert_eq!(l2.rank(&a, &b), Metric::L2.rank_distance(&a, &b));
        let mut zero = [0.0f32; 4];
        assert!(!normalize(&mut zero));
        assert_eq!(zero, [0.0; 4]);
        // Coordinates whose squares overflow f32 still normalize.
        let mut huge = [3e38f32, 3e38, 0.0, 0.0];
        assert!(normalize(&mut huge));
        assert!((huge[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6, "{huge:?}");
    }
}
