//! Compressed codes for graph traversal: 1-bit RaBitQ (Gao & Long, SIGMOD 2024).
//!
//! A vector `x` is stored as the signs of its rotated residual `P (x - c)` (one bit per
//! dimension, `c` the centroid of the indexed vectors) plus two floats. The inner product
//! of the residual with any query is then estimated without bias from the bits, and with it
//! the metric's rank distance. Traversal ranks a node's neighbours on these estimates; the
//! final order is always computed on the full vectors.
//!
//! - The rotation `P` is orthogonal and random: `ROUNDS` rounds of random sign flips and
//!   normalized fast Walsh–Hadamard transforms over the dimensions padded to a multiple of
//!   64 (when that is not a power of two, one transform covers the first `2^k` coordinates
//!   and a second one the last `2^k`, so every coordinate is mixed). It is regenerated from
//!   a 64-bit seed stored in the index, so only the seed and the centroid are stored.
//! - At most [`MAX_CODE_DIMS`] rotated coordinates are kept, so a code is at most 136 bytes
//!   and a node's record can carry all its neighbours' codes. Past that, the estimate is
//!   computed in the kept subspace and scaled back (a random projection).
//! - Per code: the bits, `|r|²` (the exact squared norm of the residual `r = x - c`), and
//!   a scale `s` such that the estimate of `<r, y>` for a rotated query `y` is
//!   `s · (2 · Σ_{bit i set} y_i − Σ_i y_i)`.
//! - Cosine indexes encode and query the normalized vectors; L1 indexes traverse on the L2
//!   estimate (there is no estimator for L1; the exact re-rank gives the L1 order).
//!
//! The masked sum is the only per-code work ([`plane_sum`]): an AVX-512 kernel adds 16
//! coordinates per mask, an AVX2 kernel 8 per byte-built mask, and a branch-free portable
//! loop serves other CPUs ([`crate::simd`] picks one at run time); [`plane_sum_scalar`] is
//! the reference the tests compare them with.

use crate::distance::Metric;
use crate::simd::Level;

/// Rotated coordinates kept in a code at most (bits: 128 bytes).
pub const MAX_CODE_DIMS: usize = 1024;
/// Rounds of sign flips and Walsh–Hadamard transforms in the rotation.
const ROUNDS: usize = 3;
/// Bytes of the two floats that follow a code's bits.
pub const CODE_FACTORS: usize = 8;

/// The random rotation and centroid shared by every code of one index.
#[derive(Clone, Debug)]
pub struct Quantizer {
    metric: Metric,
    dims: usize,
    /// Dimensions padded to a multiple of 64.
    padded: usize,
    /// Rotated coordinates kept.
    code_dims: usize,
    /// Bits per kept coordinate ([`bits_for`]).
    bits: usize,
    /// Few dimensions: the "code" is the vector itself ([`exact_codes`]).
    exact: bool,
    /// The power of two the transforms cover.
    block: usize,
    /// `2 * ROUNDS` sign vectors of `padded` entries (+1.0 or -1.0).
    signs: Vec<f32>,
    centroid: Vec<f32>,
    /// `P c`, all `padded` coordinates (for [`Quantizer::encode_edge_rotated`]).
    centroid_rotated: Vec<f32>,
}

/// Buffers [`Quantizer::encode_edge_with`] reuses from one code to the next, and the
/// rotations of the last two vectors it saw (a node's edges share the node, a new node's
/// back-edges share it too), so that an edge code mostly costs one rotation.
#[derive(Clone, Debug, Default)]
pub struct EncodeScratch {
    source: Vec<f32>,
    residual: Vec<f32>,
    /// (vector, its rotation: empty for a zero vector under cosine), most recent first.
    rotated: [(Vec<f32>, Vec<f32>); 2],
}

impl EncodeScratch {
    /// Moves the rotation of `v` to the front of the cache, computing it if it is not there.
    fn rotate(&mut self, quantizer: &Quantizer, v: &[f32]) {
        if self.rotated[0].0 == v {
            return;
        }
        if self.rotated[1].0 != v {
            let (key, rot) = &mut self.rotated[1];
            key.clear();
            key.extend_from_slice(v);
            quantizer.rotated_source(v, &mut self.source, rot);
        }
        self.rotated.swap(0, 1);
    }
}

/// A query prepared against a [`Quantizer`]: rotated, with the terms every estimate shares.
#[derive(Clone, Debug, Default)]
pub struct PreparedQuery {
    /// The rotated query (with exact codes: the query itself).
    rotated: Vec<f32>,
    total: f32,
    /// L2: `|q - c|²`. Inner product and cosine: `<c, q>`.
    base: f32,
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// In-place normalized fast Walsh–Hadamard transform (`x.len()` a power of two, at least 8).
/// The first three stages run on each group of 8 in registers; the later ones are
/// butterflies between two contiguous halves, which the compiler vectorizes.
fn fwht(x: &mut [f32]) {
    let n = x.len();
    debug_assert!(n.is_power_of_two() && n >= 8);
    for c in x.chunks_exact_mut(8) {
        let [a0, a1, a2, a3, a4, a5, a6, a7] = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
        let (b0, b1, b2, b3, b4, b5, b6, b7) = (a0 + a1, a0 - a1, a2 + a3, a2 - a3, a4 + a5, a4 - a5, a6 + a7, a6 - a7);
        let (d0, d1, d2, d3, d4, d5, d6, d7) = (b0 + b2, b1 + b3, b0 - b2, b1 - b3, b4 + b6, b5 + b7, b4 - b6, b5 - b7);
        c.copy_from_slice(&[d0 + d4, d1 + d5, d2 + d6, d3 + d7, d0 - d4, d1 - d5, d2 - d6, d3 - d7]);
    }
    let mut h = 8;
    while h < n {
        for pair in x.chunks_exact_mut(2 * h) {
            let (lo, hi) = pair.split_at_mut(h);
            for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                let (p, q) = (*a, *b);
                *a = p + q;
                *b = p - q;
            }
        }
        h *= 2;
    }
    let scale = 1.0 / (n as f32).sqrt();
    for v in x.iter_mut() {
        *v *= scale;
    }
}

/// `Σ a_i b_i` in one fixed order (eight running sums, then added pairwise) on every CPU,
/// unlike the SIMD kernels, which dispatch on the CPU and round differently: a code is then
/// the same bytes wherever it is computed (a primary's build, a merge on a replica's CPU,
/// `omen_check`). The eight sums keep the compiler free to use vector registers.
fn fixed_order_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            sums[k] += x[k] * y[k];
        }
    }
    ((sums[0] + sums[4]) + (sums[2] + sums[6])) + ((sums[1] + sums[5]) + (sums[3] + sums[7])) + tail
}

impl Quantizer {
    /// A quantizer for `dims`-dimensional vectors of `metric`, around `centroid` (the mean
    /// of the indexed vectors, normalized ones for cosine), with the rotation of `seed`.
    pub fn new(metric: Metric, dims: usize, centroid: Vec<f32>, seed: u64) -> Quantizer {
        assert!(dims > 0 && centroid.len() == dims, "centroid must have dims entries");
        let padded = dims.next_multiple_of(64);
        let block = 1usize << (usize::BITS - 1 - padded.leading_zeros());
        let mut state = seed;
        let signs = (0..2 * ROUNDS * padded).map(|_| if splitmix(&mut state) & 1 == 0 { 1.0 } else { -1.0 }).collect();
        let code_dims = padded.min(MAX_CODE_DIMS);
        let exact = exact_codes(dims);
        let mut q = Quantizer {
            metric,
            dims,
            padded,
            code_dims,
            bits: bits_for(code_dims),
            exact,
            block,
            signs,
            centroid,
            centroid_rotated: Vec::new(),
        };
        let mut rotated = Vec::new();
        q.rotate_padded(&q.centroid, &mut rotated);
        q.centroid_rotated = rotated;
        q
    }

    /// The centroid of a set of vectors (`vectors` holds `dims`-float rows), normalizing
    /// each first for cosine. Zero vectors are skipped under cosine.
    pub fn centroid_of(metric: Metric, dims: usize, vectors: &[f32]) -> Vec<f32> {
        let mut sum = vec![0f64; dims];
        let mut count = 0usize;
        for v in vectors.chunks_exact(dims) {
            let scale = match metric {
                Metric::Cosine => {
                    let n = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
                    if n == 0.0 || !n.is_finite() {
                        continue;
                    }
                    1.0 / n
                }
                _ => 1.0,
            };
            for (s, &x) in sum.iter_mut().zip(v) {
                *s += x as f64 * scale;
            }
            count += 1;
        }
        sum.iter().map(|&s| if count == 0 { 0.0 } else { (s / count as f64) as f32 }).collect()
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    pub fn centroid(&self) -> &[f32] {
        &self.centroid
    }

    /// The same quantizer with `bits` bits a kept coordinate (1–8) instead of
    /// [`bits_for`]'s choice, and never exact codes: for comparing code kinds
    /// (`examples/build_eval.rs`).
    pub fn with_bits(mut self, bits: usize) -> Quantizer {
        assert!((1..=8).contains(&bits), "1 to 8 bits");
        self.bits = bits;
        self.exact = false;
        self
    }

    /// Bytes of one code: the bits and their factors.
    pub fn code_bytes(&self) -> usize {
        let m = self.code_dims;
        match (self.exact, self.bits) {
            (true, _) => (4 * self.dims).next_multiple_of(8),
            (false, 1) => m / 8 + CODE_FACTORS,
            (false, b) => b * m / 8 + 2 * CODE_FACTORS,
        }
    }

    /// Bytes of one code for `dims` dimensions.
    pub fn code_bytes_for(dims: usize) -> usize {
        if exact_codes(dims) {
            return (4 * dims).next_multiple_of(8);
        }
        quantized_bytes(dims)
    }
}

/// Whether vectors of `dims` dimensions are their own codes: when their floats take no
/// more room than a quantized code (up to 12 dimensions), traversal is exact.
pub fn exact_codes(dims: usize) -> bool {
    4 * dims <= quantized_bytes(dims)
}

/// Bytes of a quantized code for `dims` dimensions.
fn quantized_bytes(dims: usize) -> usize {
    {
        let m = dims.next_multiple_of(64).min(MAX_CODE_DIMS);
        match bits_for(m) {
            1 => m / 8 + CODE_FACTORS,
            b => b * m / 8 + 2 * CODE_FACTORS,
        }
    }
}

impl Quantizer {
    /// `P v` (v padded with zeros), truncated to the kept coordinates, into `out`.
    fn rotate(&self, v: &[f32], out: &mut Vec<f32>) {
        self.rotate_padded(v, out);
        out.truncate(self.code_dims);
    }

    /// `P v` with every one of its `padded` coordinates (see [`rotate`](Self::rotate)).
    fn rotate_padded(&self, v: &[f32], out: &mut Vec<f32>) {
        out.clear();
        out.extend_from_slice(v);
        out.resize(self.padded, 0.0);
        let p = self.padded;
        for r in 0..ROUNDS {
            let s1 = &self.signs[2 * r * p..(2 * r + 1) * p];
            out.iter_mut().zip(s1).for_each(|(x, s)| *x *= s);
            fwht(&mut out[..self.block]);
            if self.block < p {
                let s2 = &self.signs[(2 * r + 1) * p..(2 * r + 2) * p];
                out.iter_mut().zip(s2).for_each(|(x, s)| *x *= s);
                fwht(&mut out[p - self.block..]);
            }
        }
    }

    /// The vector the codes describe: `v`, normalized for cosine. None for a zero vector
    /// under cosine.
    fn source<'a>(&self, v: &'a [f32], buf: &'a mut Vec<f32>) -> Option<&'a [f32]> {
        if self.metric != Metric::Cosine {
            return Some(v);
        }
        let n = v.iter().map(|&x| x * x).sum::<f32>().sqrt();
        if n == 0.0 || !n.is_finite() {
            return None;
        }
        buf.clear();
        buf.extend(v.iter().map(|&x| x / n));
        Some(buf)
    }

    /// Writes the code of `v` into `out` (`code_bytes` long): of its residual from the
    /// centroid.
    pub fn encode(&self, v: &[f32], out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.code_bytes());
        out.fill(0);
        if self.exact {
            for (i, x) in v.iter().enumerate() {
                out[4 * i..4 * i + 4].copy_from_slice(&x.to_le_bytes());
            }
            return;
        }
        let mut buf = Vec::new();
        let Some(x) = self.source(v, &mut buf) else { return };
        let residual: Vec<f32> = x.iter().zip(&self.centroid).map(|(a, c)| a - c).collect();
        self.encode_residual(&residual, out, &mut Vec::with_capacity(self.padded));
    }

    /// Whether the codes in a node's record are *edge codes*: each neighbour's vector
    /// relative to the node's own ([`Quantizer::encode_edge`]). So with multi-bit codes
    /// (up to 256 dimensions) for L2, inner product and cosine: a neighbour is close
    /// to the node, so its residual from it is short, and the error of an estimate grows
    /// with the residual's length. On fashion-mnist projected to 64 dimensions, 4-bit
    /// codes of residuals from the centroid reached recall@10 0.90 at list size 40, where
    /// traversing on exact distances reached 0.999; with edge codes, 0.996. (1-bit codes,
    /// past 256 dimensions, gained nothing from it on fashion-mnist-784: there a
    /// neighbour's residual from its node is hardly shorter than from the centroid.)
    pub fn relative(&self) -> bool {
        !self.exact && self.bits > 1 && self.metric != Metric::L1
    }

    /// Whether estimating a distance from a code is cheaper than computing it from the
    /// vector held in memory: the kernel reads `bits · code_dims` code values where the
    /// exact distance reads `dims` floats. True from about 192 dimensions (1 or 2 bits).
    /// A build traverses on codes only then: on fashion-mnist projected to 64 dimensions
    /// (4-bit codes) a build on exact distances took 3.2 s where one on codes took 3.5–3.8 s,
    /// and on siftsmall (128) 0.6 against 0.7 s, with the same recall; on debian-minilm-384
    /// (1 bit) it took 13.8 s where one on codes took 7.6 s (`examples/build_eval.rs`).
    pub fn cheaper_than_vectors(&self) -> bool {
        !self.exact && self.bits * self.code_dims <= 2 * self.dims
    }

    /// Writes the code of `v` as a neighbour of `owner` into `out`: with [`relative`](
    /// Self::relative) codes, of `v - owner` (normalized vectors for cosine) plus, for L2,
    /// `<owner - c, v - owner>`; otherwise [`encode`](Self::encode)'s code of `v`.
    pub fn encode_edge(&self, v: &[f32], owner: &[f32], out: &mut [u8]) {
        self.encode_edge_with(v, owner, out, &mut EncodeScratch::default());
    }

    /// [`encode_edge`](Self::encode_edge) with buffers kept between calls.
    pub fn encode_edge_with(&self, v: &[f32], owner: &[f32], out: &mut [u8], scratch: &mut EncodeScratch) {
        if !self.relative() {
            return self.encode(v, out);
        }
        // Both through their rotations, as a build computes them (`encode_edge_rotated`), so
        // that a code is the same bytes whichever computed it (`omen_check` compares them).
        scratch.rotate(self, owner);
        scratch.rotate(self, v);
        let EncodeScratch { residual, rotated: [(_, v_rot), (_, other)], .. } = scratch;
        // A copy of the node (the same vector) left the owner's rotation in front alone.
        let owner_rot = if v == owner { &*v_rot } else { &*other };
        self.encode_edge_rotated(v_rot, owner_rot, out, residual);
    }

    /// Whether codes `a` and `b` describe the same vector up to float rounding: the same
    /// bytes or, for multi-bit codes, every coordinate's level within one step and the
    /// residual's length, the grid's lowest level and its step within 1e-3 of the larger.
    /// So a code written by another build of omen (edge codes were computed from the
    /// rotated residual before `28caa81`, from the difference of rotated vectors since)
    /// passes `omen_check`, and another vector's code does not. (For L2, the last factor,
    /// `<owner - c, r>`, can cancel to near zero and is left out.)
    pub fn same_code(&self, a: &[u8], b: &[u8]) -> bool {
        if a == b {
            return true;
        }
        if a.len() != b.len() || self.exact || self.bits < 2 {
            return false;
        }
        let plane = self.code_dims / 8;
        let at = self.bits * plane;
        let level = |c: &[u8], i: usize| -> u32 {
            (0..self.bits).map(|bit| (((c[bit * plane + i / 8] >> (i % 8)) & 1) as u32) << bit).sum()
        };
        if (0..self.code_dims).any(|i| level(a, i).abs_diff(level(b, i)) > 1) {
            return false;
        }
        let float = |c: &[u8], f: usize| f32::from_le_bytes(c[at + 4 * f..at + 4 * f + 4].try_into().expect("4 bytes"));
        (0..3).all(|f| {
            let (x, y) = (float(a, f), float(b, f));
            (x - y).abs() <= 1e-3 * x.abs().max(y.abs())
        })
    }

    /// Floats of a vector [`rotated_source`](Self::rotated_source) writes.
    pub fn rotated_len(&self) -> usize {
        self.padded
    }

    /// Writes `v` as the codes describe it (normalized for cosine), rotated, all
    /// [`rotated_len`](Self::rotated_len) coordinates, into `out`, for
    /// [`encode_edge_rotated`](Self::encode_edge_rotated); leaves `out` empty for a zero
    /// vector under cosine.
    pub fn rotated_source(&self, v: &[f32], buf: &mut Vec<f32>, out: &mut Vec<f32>) {
        out.clear();
        if let Some(x) = self.source(v, buf) {
            self.rotate_padded(x, out);
        }
    }

    /// [`encode_edge_with`](Self::encode_edge_with) from the vectors as
    /// [`rotated_source`](Self::rotated_source) wrote them (the same bytes). The rotation is
    /// linear and orthogonal, so the rotated residual is the difference of the rotated
    /// vectors and has the residual's length: a build that rotates each vector once saves
    /// a rotation per edge (32 a node, most of an edge code's cost). Multi-bit
    /// ([`relative`](Self::relative)) codes only.
    pub fn encode_edge_rotated(&self, v_rot: &[f32], owner_rot: &[f32], out: &mut [u8], residual: &mut Vec<f32>) {
        debug_assert!(self.relative());
        out.fill(0);
        if v_rot.is_empty() || owner_rot.is_empty() {
            return; // a zero vector under cosine, as encode_edge_with leaves it
        }
        residual.clear();
        residual.extend(v_rot.iter().zip(owner_rot).map(|(a, b)| a - b));
        let norm_sq = fixed_order_dot(residual, residual);
        // Multi-bit codes keep every rotated coordinate (at most 256): the kept length is the
        // residual's, already summed.
        let kept = &residual[..self.code_dims];
        let kept_sq = if kept.len() == residual.len() { norm_sq } else { fixed_order_dot(kept, kept) };
        self.encode_levels(kept, norm_sq, kept_sq, out);
        if self.metric == Metric::L2 {
            // <owner - c, r>, in the rotated space.
            let k = fixed_order_dot(owner_rot, residual) - fixed_order_dot(&self.centroid_rotated, residual);
            let at = self.bits * self.code_dims / 8 + 12;
            out[at..at + 4].copy_from_slice(&k.to_le_bytes());
        }
    }

    /// The part of an edge code's estimate that does not depend on the node that stores
    /// it: [`estimate_edge`](Self::estimate_edge) is `owner_distance + edge_partial`.
    #[inline]
    pub fn edge_partial(&self, prepared: &PreparedQuery, code: &[u8]) -> f32 {
        if !self.relative() {
            return self.estimate(prepared, code);
        }
        let float = |at: usize| f32::from_le_bytes(code[at..at + 4].try_into().expect("4 bytes"));
        let at = self.bits * self.code_dims / 8;
        let sum = plane_sum(&prepared.rotated, &code[..at], self.bits);
        let (dot, k_at) = (float(at + 4) * prepared.total + float(at + 8) * sum, at + 12);
        match self.metric {
            // |q - n|² = |q - x|² + |r|² - 2 (<q - c, r> - <x - c, r>), r = n - x.
            Metric::L2 | Metric::L1 => float(at) - 2.0 * (dot - float(k_at)),
            // 1 - <q, n> = (1 - <q, x>) - <q, r>; -<q, n> = -<q, x> - <q, r>.
            Metric::InnerProduct | Metric::Cosine => -dot,
        }
    }

    /// The estimated rank distance between the prepared query and the vector of an edge
    /// code stored by a node at rank distance `owner_distance` from the query (with
    /// codes that are not [`relative`](Self::relative): [`estimate`](Self::estimate)).
    #[inline]
    pub fn estimate_edge(&self, prepared: &PreparedQuery, code: &[u8], owner_distance: f32) -> f32 {
        if self.relative() { owner_distance + self.edge_partial(prepared, code) } else { self.estimate(prepared, code) }
    }

    /// Writes the code of `residual` (bits and factors; `|residual|²` first).
    fn encode_residual(&self, residual: &[f32], out: &mut [u8], rot: &mut Vec<f32>) {
        let norm_sq: f32 = residual.iter().map(|&r| r * r).sum();
        self.rotate(residual, rot);
        let rot = &*rot;
        let m = self.code_dims;
        if self.bits > 1 {
            return self.encode_levels(rot, norm_sq, fixed_order_dot(rot, rot), out);
        }
        for (i, &r) in rot.iter().enumerate() {
            if r > 0.0 {
                out[i / 8] |= 1 << (i % 8);
            }
        }
        // <x̄, o> with x̄ = ±1/√m and o the unit kept residual: Σ|r_i| / (√m · |r_kept|).
        let kept_norm = rot.iter().map(|&r| r * r).sum::<f32>().sqrt();
        let abs_sum: f32 = rot.iter().map(|r| r.abs()).sum();
        // <r, y> ≈ (padded/m) · |r_kept| · <x̄, y> / <x̄, o> = s · (2 Σ_set y − Σ y), with
        // <x̄, y> = (2 Σ_set y − Σ y)/√m: so s = (padded/m) · |r_kept|² / Σ|r_i|.
        let scale = if abs_sum > 0.0 { (self.padded as f32 / m as f32) * kept_norm * kept_norm / abs_sum } else { 0.0 };
        let b = m / 8;
        out[b..b + 4].copy_from_slice(&norm_sq.to_le_bytes());
        out[b + 4..b + 8].copy_from_slice(&scale.to_le_bytes());
    }

    /// The multi-bit code of a rotated residual `rot` (its kept coordinates) whose length
    /// before rotation squared is `norm_sq` (`kept_sq`: the kept coordinates' squared
    /// length, which sets the grid): bit-planes, then `norm_sq`, the grid's lowest level
    /// and its step.
    fn encode_levels(&self, rot: &[f32], norm_sq: f32, kept_sq: f32, out: &mut [u8]) {
        let m = self.code_dims;
        // Each kept coordinate on a uniform grid of 2^bits levels centred on zero, the
        // step the one that minimizes the error for a Gaussian coordinate (a random
        // rotation makes them nearly Gaussian, with sigma = |r_kept| / sqrt(m)); the
        // tails are clipped. Stored as bit-planes.
        let levels = ((1usize << self.bits) - 1) as f32;
        let sigma = kept_sq.sqrt() / (m as f32).sqrt();
        let delta = GAUSSIAN_STEP[self.bits] * sigma;
        let lo = -delta * levels / 2.0;
        // Eight coordinates at a time, one byte of each bit-plane per eight (m is a
        // multiple of 64). Rounding after the clamp, of a non-negative value, is the
        // same as before it; the divisions are one multiplication each. The eight levels
        // (at most 4 bits each) are the bytes of one word; a plane's byte gathers bit `b` of
        // each with one multiplication: the low bit of byte k, times
        // 0x0102040810204080 (bits 56 − 7j), lands on bit 56 + k, and no two products
        // share a bit. This loop was 80% of an edge code (3.9 µs at 96 dimensions, 32 a
        // node in a build) with a loop over the eight for each plane.
        const LOW_BITS: u64 = 0x0101_0101_0101_0101;
        const GATHER: u64 = 0x0102_0408_1020_4080;
        let inv = if delta > 0.0 { 1.0 / delta } else { 0.0 };
        let plane = m / 8;
        // The levels first, in one loop the compiler vectorizes (multi-bit codes keep at
        // most 256 coordinates, `bits_for`).
        let mut q = [0u8; 256];
        debug_assert!(m <= q.len());
        for (qk, &r) in q.iter_mut().zip(rot) {
            *qk = (((r - lo) * inv).max(0.0).min(levels) + 0.5) as u8;
        }
        for (byte, eight) in q[..m].chunks_exact(8).enumerate() {
            let word = u64::from_le_bytes(eight.try_into().expect("eight levels"));
            for b in 0..self.bits {
                out[b * plane + byte] = (((word >> b) & LOW_BITS).wrapping_mul(GATHER) >> 56) as u8;
            }
        }
        let stretch = self.padded as f32 / m as f32;
        let at = self.bits * m / 8;
        out[at..at + 4].copy_from_slice(&norm_sq.to_le_bytes());
        out[at + 4..at + 8].copy_from_slice(&(lo * stretch).to_le_bytes());
        out[at + 8..at + 12].copy_from_slice(&(delta * stretch).to_le_bytes());
    }

    /// Prepares `query` for [`Quantizer::estimate`] (reusing `prepared`'s buffers).
    pub fn prepare(&self, query: &[f32], prepared: &mut PreparedQuery) {
        if self.exact {
            prepared.rotated.clear();
            prepared.rotated.extend_from_slice(query);
            return;
        }
        let mut buf = Vec::new();
        let q = self.source(query, &mut buf).unwrap_or(query);
        match self.metric {
            Metric::L2 | Metric::L1 => {
                let centered: Vec<f32> = q.iter().zip(&self.centroid).map(|(a, c)| a - c).collect();
                prepared.base = centered.iter().map(|&x| x * x).sum();
                self.rotate(&centered, &mut prepared.rotated);
            }
            Metric::InnerProduct | Metric::Cosine => {
                prepared.base = q.iter().zip(&self.centroid).map(|(a, c)| a * c).sum();
                self.rotate(q, &mut prepared.rotated);
            }
        }
        prepared.total = prepared.rotated.iter().sum();
    }

    /// The estimated rank distance ([`Metric::rank_distance`]) between the prepared query
    /// and the vector of `code`.
    #[inline]
    pub fn estimate(&self, prepared: &PreparedQuery, code: &[u8]) -> f32 {
        let float = |at: usize| f32::from_le_bytes(code[at..at + 4].try_into().expect("4 bytes"));
        if self.exact {
            let mut v = [0f32; 12];
            for (i, x) in v.iter_mut().enumerate().take(self.dims) {
                *x = float(4 * i);
            }
            return self.metric.rank_distance(&v[..self.dims], &prepared.rotated);
        }
        let at = self.plane_bytes();
        self.estimate_from_sum(prepared, &code[at..], plane_sum(&prepared.rotated, &code[..at], self.bits))
    }

    /// Bytes of a code's bit-planes (the rest are its factors); 0 for exact codes.
    pub fn plane_bytes(&self) -> usize {
        if self.exact { 0 } else { self.bits * self.code_dims / 8 }
    }

    /// Bits per kept coordinate: the number of bit-planes of a code.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// The rotated query, whose masked sums over a code's bit-planes an estimate needs.
    pub fn rotated_query<'a>(&self, prepared: &'a PreparedQuery) -> &'a [f32] {
        &prepared.rotated
    }

    /// [`estimate`](Self::estimate) from the weighted masked sum of the code's bit-planes
    /// ([`plane_sum`], or a FastScan table's) and its `factors` (the bytes after the planes).
    /// Not for exact codes.
    #[inline]
    pub fn estimate_from_sum(&self, prepared: &PreparedQuery, factors: &[u8], sum: f32) -> f32 {
        let (norm_sq, t, s) = self.sum_terms(factors);
        let [k0, k1, k2, total] = self.metric_terms(prepared);
        k0 + k1 * norm_sq + k2 * (t * total + s * sum)
    }

    /// The query's part of an estimate, the same for every code, so that a block of codes
    /// is estimated in one vectorizable loop: with `[k0, k1, k2, total]` returned here and
    /// `(norm_sq, t, s)` = [`Quantizer::sum_terms`] of a code's factors, its estimate is
    /// `k0 + k1 · norm_sq + k2 · dot`, where `dot = t · total + s · sum` estimates the
    /// inner product of the code's residual with the query's.
    #[inline]
    pub fn metric_terms(&self, prepared: &PreparedQuery) -> [f32; 4] {
        let [k0, k1, k2] = match self.metric {
            Metric::L2 | Metric::L1 => [prepared.base, 1.0, -2.0],
            Metric::InnerProduct => [-prepared.base, 0.0, -1.0],
            Metric::Cosine => [1.0 - prepared.base, 0.0, -1.0],
        };
        [k0, k1, k2, prepared.total]
    }

    /// A code's factors (the bytes after its planes) as `(norm_sq, t, s)`: its squared
    /// norm, and the coefficients of the query's total and of the masked sum in its dot
    /// estimate (see [`Quantizer::metric_terms`]).
    #[inline]
    pub fn sum_terms(&self, factors: &[u8]) -> (f32, f32, f32) {
        let float = |at: usize| f32::from_le_bytes(factors[at..at + 4].try_into().expect("4 bytes"));
        if self.bits == 1 { (float(0), -float(4), 2.0 * float(4)) } else { (float(0), float(4), float(8)) }
    }
}

/// Bits per kept coordinate for `code_dims` kept coordinates: enough for about 512 bits a
/// code, at most 4. One bit is RaBitQ's code; more bits are a uniform grid per vector
/// (between its smallest and largest rotated coordinate), stored as bit-planes so the same
/// masked-sum kernel estimates them.
pub fn bits_for(code_dims: usize) -> usize {
    (BITS_TARGET / code_dims).clamp(1, 4)
}

/// The step of the uniform quantizer of least mean squared error for a unit Gaussian, by
/// bits (Max 1960, Table: 2 bits 0.9957, 3 bits 0.5860, 4 bits 0.3352; beyond, about
/// 8·2^-bits·sqrt(bits)/3 as the tables continue).
const GAUSSIAN_STEP: [f32; 9] = [0.0, 1.596, 0.9957, 0.5860, 0.3352, 0.1881, 0.1041, 0.0569, 0.0308];

/// The code size [`bits_for`] aims at, in bits.
const BITS_TARGET: usize = 512;

/// `Σ_p 2^p · Σ_{i in plane p} values[i]`: the weighted masked sum over the `planes`
/// bit-planes of `bits`, each `values.len() / 8` bytes (`values.len()` a multiple of 64).
/// With one plane, the sum of the values whose bit is set. The only per-code work of an
/// estimate, at the process's [`simd::level`](crate::simd::level).
#[inline]
pub fn plane_sum(values: &[f32], bits: &[u8], planes: usize) -> f32 {
    // SAFETY: `simd::level` never exceeds `simd::detected` (one cached read per estimate).
    unsafe { plane_sum_with(crate::simd::level(), values, bits, planes) }
}

/// [`plane_sum`] with the kernel of `level` (lowered to what the CPU has): AVX-512 masked
/// adds, AVX2 masks built from each byte, or the portable loop.
#[inline]
pub fn plane_sum_at(level: Level, values: &[f32], bits: &[u8], planes: usize) -> f32 {
    // SAFETY: the level is lowered to what the CPU has.
    unsafe { plane_sum_with(level.min(crate::simd::detected()), values, bits, planes) }
}

/// [`plane_sum`] with the kernel of `level`.
///
/// # Safety
/// The CPU must have `level` (at most [`crate::simd::detected`]).
#[inline]
unsafe fn plane_sum_with(level: Level, values: &[f32], bits: &[u8], planes: usize) -> f32 {
    let plane_bytes = values.len() / 8;
    assert!(values.len().is_multiple_of(64) && bits.len() >= planes * plane_bytes, "whole planes of 64 values");
    #[cfg(target_arch = "x86_64")]
    {
        match level {
            // SAFETY: the CPU has AVX-512 F (this function's contract); the planes' lengths
            // were checked above.
            Level::Avx512 => return unsafe { plane_sum_avx512(values, bits, planes) },
            // SAFETY: the CPU has AVX2 (this function's contract); the planes' lengths were
            // checked above.
            Level::Avx2 => return unsafe { plane_sum_avx2(values, bits, planes) },
            Level::Portable => {}
        }
    }
    let _ = level;
    plane_sum_portable(values, bits, planes)
}

/// The portable [`plane_sum`]: branch-free, so that LLVM vectorizes it for the baseline
/// instruction set. A byte's eight values are kept by ANDing their bits with the byte's
/// row of [`BYTE_MASKS`]. (A loop that branched on each bit took twice as long or more:
/// 63 against 30 ns for a 4-plane code of 64 dimensions, 114 against 48 ns at 384.)
fn plane_sum_portable(values: &[f32], bits: &[u8], planes: usize) -> f32 {
    let plane_bytes = values.len() / 8;
    let mut total = 0f32;
    for (p, plane) in bits.chunks_exact(plane_bytes).take(planes).enumerate() {
        let mut lanes = [0f32; 8];
        for (chunk, &byte) in values.chunks_exact(8).zip(plane) {
            let masks = &BYTE_MASKS[usize::from(byte)];
            for j in 0..8 {
                lanes[j] += f32::from_bits(chunk[j].to_bits() & masks[j]);
            }
        }
        total += (1u32 << p) as f32 * lanes.iter().sum::<f32>();
    }
    total
}

/// Row `b`, lane `j`: all ones when bit `j` of `b` is set, else zero (8 KiB).
static BYTE_MASKS: [[u32; 8]; 256] = {
    let mut masks = [[0u32; 8]; 256];
    let mut b = 0;
    while b < 256 {
        let mut j = 0;
        while j < 8 {
            masks[b][j] = if b >> j & 1 != 0 { u32::MAX } else { 0 };
            j += 1;
        }
        b += 1;
    }
    masks
};

/// The reference [`plane_sum`], one value at a time (tests compare the kernels with it).
pub fn plane_sum_scalar(values: &[f32], bits: &[u8], planes: usize) -> f32 {
    let plane_bytes = values.len() / 8;
    assert!(bits.len() >= planes * plane_bytes, "a plane per bit");
    let mut total = 0f64;
    for (p, plane) in bits.chunks_exact(plane_bytes).take(planes).enumerate() {
        let kept: f64 =
            (0..values.len()).filter(|&i| plane[i / 8] >> (i % 8) & 1 != 0).map(|i| f64::from(values[i])).sum();
        total += f64::from(1u32 << p) * kept;
    }
    total as f32
}

/// # Safety
/// The CPU must have AVX-512 F, `values.len()` be a multiple of 64 and `bits` hold `planes`
/// planes of `values.len() / 8` bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn plane_sum_avx512(values: &[f32], bits: &[u8], planes: usize) -> f32 {
    use std::arch::x86_64::*;
    let plane_bytes = values.len() / 8;
    let mut total = _mm512_setzero_ps();
    for p in 0..planes {
        let plane = &bits[p * plane_bytes..(p + 1) * plane_bytes];
        // Four accumulators, so consecutive masked adds do not wait on each other (with two,
        // an estimate from a 1-bit code at 784 dimensions took 42 ns, latency-bound).
        let zero = _mm512_setzero_ps();
        let (mut a, mut b, mut c, mut d) = (zero, zero, zero, zero);
        let mask = |m: &[u8], k: usize| u16::from_le_bytes([m[2 * k], m[2 * k + 1]]);
        for (i, m) in plane.chunks_exact(8).enumerate() {
            // SAFETY: values 64·i .. 64·i + 64 are in bounds: 64·(i + 1) ≤ 8·plane_bytes =
            // values.len() (a multiple of 64, the caller's contract); unaligned loads.
            let (v0, v1, v2, v3) = unsafe {
                let at = values.as_ptr().add(64 * i);
                (
                    _mm512_loadu_ps(at),
                    _mm512_loadu_ps(at.add(16)),
                    _mm512_loadu_ps(at.add(32)),
                    _mm512_loadu_ps(at.add(48)),
                )
            };
            a = _mm512_mask_add_ps(a, mask(m, 0), a, v0);
            b = _mm512_mask_add_ps(b, mask(m, 1), b, v1);
            c = _mm512_mask_add_ps(c, mask(m, 2), c, v2);
            d = _mm512_mask_add_ps(d, mask(m, 3), d, v3);
        }
        let (a, b) = (_mm512_add_ps(a, c), _mm512_add_ps(b, d));
        total = _mm512_fmadd_ps(_mm512_add_ps(a, b), _mm512_set1_ps((1u32 << p) as f32), total);
    }
    _mm512_reduce_add_ps(total)
}

/// # Safety
/// The CPU must have AVX2, `values.len()` be a multiple of 64 and `bits` hold `planes`
/// planes of `values.len() / 8` bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn plane_sum_avx2(values: &[f32], bits: &[u8], planes: usize) -> f32 {
    use std::arch::x86_64::*;
    let plane_bytes = values.len() / 8;
    // Lane j of a byte's mask is all ones when bit j is set: its row of BYTE_MASKS.
    // SAFETY: a row is 8 u32, one 256-bit unaligned load.
    let keep =
        |byte: u8| unsafe { _mm256_castsi256_ps(_mm256_loadu_si256(BYTE_MASKS[usize::from(byte)].as_ptr().cast())) };
    let mut total = _mm256_setzero_ps();
    for p in 0..planes {
        let plane = &bits[p * plane_bytes..(p + 1) * plane_bytes];
        // Four accumulators, so consecutive adds do not wait on each other.
        let zero = _mm256_setzero_ps();
        let (mut a, mut b, mut c, mut d) = (zero, zero, zero, zero);
        for (i, m) in plane.chunks_exact(4).enumerate() {
            // SAFETY: values 32·i .. 32·i + 32 are in bounds: 32·(i + 1) ≤ 8·plane_bytes =
            // values.len() (plane_bytes a multiple of 8, the caller's contract); unaligned
            // loads.
            let (v0, v1, v2, v3) = unsafe {
                let at = values.as_ptr().add(32 * i);
                (
                    _mm256_loadu_ps(at),
                    _mm256_loadu_ps(at.add(8)),
                    _mm256_loadu_ps(at.add(16)),
                    _mm256_loadu_ps(at.add(24)),
                )
            };
            a = _mm256_add_ps(a, _mm256_and_ps(keep(m[0]), v0));
            b = _mm256_add_ps(b, _mm256_and_ps(keep(m[1]), v1));
            c = _mm256_add_ps(c, _mm256_and_ps(keep(m[2]), v2));
            d = _mm256_add_ps(d, _mm256_and_ps(keep(m[3]), v3));
        }
        let sum = _mm256_add_ps(_mm256_add_ps(a, c), _mm256_add_ps(b, d));
        total = _mm256_add_ps(total, _mm256_mul_ps(sum, _mm256_set1_ps((1u32 << p) as f32)));
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` is 8 f32, one 256-bit unaligned store.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), total) };
    lanes.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rows(n: usize, dims: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n * dims).map(|_| (splitmix(&mut s) % 2000) as f32 / 1000.0 - 1.0).collect()
    }

    /// Edge codes describe a neighbour relative to the node that stores it: for neighbours
    /// close to their node, their estimates are several times closer to the exact distances
    /// than those of codes relative to the centroid, for every metric that uses them.
    #[test]
    fn edge_codes_estimate_close_neighbours_better() {
        for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
            for dims in [64, 100, 200] {
                let owners = rows(200, dims, 5);
                let noise = rows(200, dims, 6);
                let queries = rows(10, dims, 7);
                // Each neighbour: its owner plus a small perturbation.
                let neighbours: Vec<f32> = owners.iter().zip(&noise).map(|(o, e)| o + 0.05 * e).collect();
                let c = Quantizer::centroid_of(metric, dims, &owners);
                let q = Quantizer::new(metric, dims, c, 9);
                assert!(q.relative(), "{metric:?} {dims}: multi-bit codes are edge codes");
                let (mut own, mut edge) = (vec![0u8; q.code_bytes()], vec![0u8; q.code_bytes()]);
                let (mut err_global, mut err_edge) = (0f64, 0f64);
                let mut p = PreparedQuery::default();
                for query in queries.chunks(dims) {
                    q.prepare(query, &mut p);
                    for (o, n) in owners.chunks(dims).zip(neighbours.chunks(dims)) {
                        let exact = metric.rank_distance(n, query);
                        q.encode(n, &mut own);
                        q.encode_edge(n, o, &mut edge);
                        let owner_distance = metric.rank_distance(o, query);
                        err_global += (q.estimate(&p, &own) - exact).abs() as f64;
                        err_edge += (q.estimate_edge(&p, &edge, owner_distance) - exact).abs() as f64;
                    }
                }
                assert!(err_edge * 3.0 < err_global, "{metric:?} {dims}: edge error {err_edge}, global {err_global}");
            }
        }
    }

    /// Edge codes from vectors rotated once are the bytes `encode_edge_with` writes (a build
    /// computes them one way, `omen_check` and merges the other), whatever the scratch's
    /// cache holds: pairs in an order that hits and misses it, a node's copy (the same
    /// vector) as its neighbour, and zero vectors under cosine (the all-zero code).
    #[test]
    fn edge_codes_from_rotated_vectors_match() {
        for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
            for dims in [64, 96, 200] {
                let mut vectors = rows(40, dims, 11);
                vectors.copy_within(..dims, dims); // a copy
                vectors[2 * dims..3 * dims].fill(0.0);
                let q = Quantizer::new(metric, dims, Quantizer::centroid_of(metric, dims, &vectors), 3);
                let row = |i: usize| &vectors[i * dims..(i + 1) * dims];
                let (mut a, mut b, mut c) =
                    (vec![0u8; q.code_bytes()], vec![0u8; q.code_bytes()], vec![0u8; q.code_bytes()]);
                let (mut buf, mut o_rot, mut n_rot, mut residual) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                let mut shared = EncodeScratch::default();
                let pairs = (0..40).flat_map(|o| [(o, (o + 1) % 40), (o, (o + 7) % 40), ((o + 3) % 40, o), (o, o)]);
                for (n, o) in pairs.chain([(0, 1), (1, 0), (2, 5), (5, 2)]) {
                    q.encode_edge_with(row(n), row(o), &mut a, &mut shared);
                    q.encode_edge_with(row(n), row(o), &mut b, &mut EncodeScratch::default());
                    q.rotated_source(row(o), &mut buf, &mut o_rot);
                    q.rotated_source(row(n), &mut buf, &mut n_rot);
                    q.encode_edge_rotated(&n_rot, &o_rot, &mut c, &mut residual);
                    assert_eq!(a, b, "{metric:?} {dims}: edge {n} of {o}, cached scratch");
                    assert_eq!(a, c, "{metric:?} {dims}: edge {n} of {o}, from rotated vectors");
                    if metric == Metric::Cosine && (n == 2 || o == 2) {
                        assert!(a.iter().all(|&x| x == 0), "a zero vector's edge code is all zero");
                    }
                }
            }
        }
    }

    /// Codes of the same edge computed two ways (the residual rotated, as before
    /// `28caa81`; the rotated vectors' difference, as now) are `same_code`; the code of
    /// another neighbour of the same node is not.
    #[test]
    fn same_code_tells_rounding_from_another_vector() {
        let mut differed = 0;
        for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
            for dims in [64, 96, 200] {
                let owners = rows(50, dims, 21);
                let noise = rows(50, dims, 22);
                let neighbours: Vec<f32> = owners.iter().zip(&noise).map(|(o, e)| o + 0.2 * e).collect();
                let q = Quantizer::new(metric, dims, Quantizer::centroid_of(metric, dims, &owners), 4);
                let (mut now, mut before, mut other) =
                    (vec![0u8; q.code_bytes()], vec![0u8; q.code_bytes()], vec![0u8; q.code_bytes()]);
                let (mut b1, mut b2, mut rot) = (Vec::new(), Vec::new(), Vec::new());
                let mut scratch = EncodeScratch::default();
                for i in 0..50 {
                    let (o, n) = (&owners[i * dims..(i + 1) * dims], &neighbours[i * dims..(i + 1) * dims]);
                    let j = (i + 1) % 50;
                    let far = &neighbours[j * dims..(j + 1) * dims];
                    q.encode_edge_with(n, o, &mut now, &mut scratch);
                    // Before: the residual of the normalized vectors, rotated.
                    let (x, y) = (q.source(n, &mut b1).unwrap().to_vec(), q.source(o, &mut b2).unwrap().to_vec());
                    let residual: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a - b).collect();
                    before.fill(0);
                    q.encode_residual(&residual, &mut before, &mut rot);
                    if metric == Metric::L2 {
                        let k: f32 = y.iter().zip(&q.centroid).zip(&residual).map(|((o, c), r)| (o - c) * r).sum();
                        let at = q.bits * q.code_dims / 8 + 12;
                        before[at..at + 4].copy_from_slice(&k.to_le_bytes());
                    }
                    differed += usize::from(before != now);
                    assert!(q.same_code(&now, &before), "{metric:?} {dims}: edge {i}, the two computations");
                    q.encode_edge_with(far, o, &mut other, &mut scratch);
                    assert!(!q.same_code(&now, &other), "{metric:?} {dims}: edge {i} against another neighbour");
                }
            }
        }
        assert!(differed > 0, "the two computations never differed: the tolerance went untested");
    }

    /// The bit-planes of a multi-bit code hold bit b of coordinate i's level at bit i % 8
    /// of byte i / 8 of plane b, the level being the rounded, clamped grid position.
    #[test]
    fn level_codes_hold_each_coordinates_level() {
        for dims in [64, 100, 256] {
            let q = Quantizer::new(Metric::L2, dims, vec![0.0; dims], 5);
            assert!(q.bits > 1);
            for seed in 0..20 {
                let mut rot = rows(1, q.code_dims, seed);
                rot[0] = 50.0; // clipped at the top level
                rot[1] = -50.0; // and at the bottom
                let mut out = vec![0u8; q.code_bytes()];
                q.encode_levels(&rot, 1.0, fixed_order_dot(&rot, &rot), &mut out);
                let at = q.bits * q.code_dims / 8;
                let float = |i: usize| f32::from_le_bytes(out[i..i + 4].try_into().unwrap());
                let stretch = q.padded as f32 / q.code_dims as f32;
                let (lo, delta) = (float(at + 4) / stretch, float(at + 8) / stretch);
                let levels = ((1u32 << q.bits) - 1) as f32;
                let plane = q.code_dims / 8;
                for (i, &r) in rot.iter().enumerate() {
                    let level = ((r - lo) / delta).clamp(0.0, levels).round() as u32;
                    let stored: u32 =
                        (0..q.bits).map(|b| (((out[b * plane + i / 8] >> (i % 8)) & 1) as u32) << b).sum();
                    // Within one of the rounded value: `(x + 0.5) as u8` and `round` part at .5.
                    assert!(stored.abs_diff(level) <= 1, "dims {dims} seed {seed} coordinate {i}: {stored} vs {level}");
                    let exact = ((r - lo) / delta).clamp(0.0, levels);
                    assert!((stored as f32 - exact).abs() <= 0.5 + 1e-3, "coordinate {i}: {stored} for {exact}");
                }
                assert_eq!((0..q.bits).map(|b| ((out[b * plane] & 1) as u32) << b).sum::<u32>(), levels as u32);
                assert_eq!((0..q.bits).map(|b| ((out[b * plane] >> 1 & 1) as u32) << b).sum::<u32>(), 0);
            }
        }
    }

    /// The fast transform is the Hadamard matrix (entry (i, j) = (-1)^popcount(i & j)),
    /// normalized.
    #[test]
    fn fwht_matches_the_hadamard_matrix() {
        for n in [8usize, 16, 64, 256] {
            let v = rows(1, n, n as u64);
            let mut fast = v.clone();
            fwht(&mut fast);
            for (i, &f) in fast.iter().enumerate() {
                let slow: f32 =
                    v.iter().enumerate().map(|(j, &x)| if (i & j).count_ones() % 2 == 0 { x } else { -x }).sum::<f32>()
                        / (n as f32).sqrt();
                assert!((f - slow).abs() < 1e-4, "n {n}, row {i}: {f} vs {slow}");
            }
        }
    }

    #[test]
    fn rotation_is_orthogonal() {
        for dims in [3, 64, 100, 784, 1500] {
            let q = Quantizer::new(Metric::L2, dims, vec![0.0; dims], 7);
            let v = rows(1, dims, dims as u64);
            let mut out = Vec::new();
            q.rotate(&v, &mut out);
            let before: f32 = v.iter().map(|x| x * x).sum();
            let after: f32 = out.iter().map(|x| x * x).sum();
            if dims <= MAX_CODE_DIMS {
                assert!((before - after).abs() < 1e-3 * before, "dims {dims}: {before} vs {after}");
            } else {
                assert!(after < before);
            }
        }
    }

    /// Up to 12 dimensions the codes are the vectors: estimates are exact distances.
    #[test]
    fn few_dimensions_estimate_exactly() {
        assert!(exact_codes(12) && !exact_codes(13));
        for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine, Metric::L1] {
            for dims in [1, 3, 12] {
                let data = rows(50, dims, 3);
                let q = Quantizer::new(metric, dims, Quantizer::centroid_of(metric, dims, &data), 1);
                let mut code = vec![0u8; q.code_bytes()];
                let mut p = PreparedQuery::default();
                q.prepare(&data[..dims], &mut p);
                for v in data.chunks(dims) {
                    q.encode(v, &mut code);
                    assert_eq!(q.estimate(&p, &code), metric.rank_distance(v, &data[..dims]));
                }
            }
        }
    }

    proptest! {
        #[test]
        fn simd_and_scalar_plane_sums_agree(
            words in proptest::collection::vec(any::<u64>(), 1..20),
            planes in 1usize..=4,
            seed in any::<u64>(),
        ) {
            // `planes` planes of `words.len()` 64-bit words each (values a multiple of 64).
            let plane_words = words.len();
            let bits: Vec<u8> = (0..planes)
                .flat_map(|p| words.iter().map(move |w| w.rotate_left(7 * p as u32)))
                .flat_map(|w| w.to_le_bytes())
                .collect();
            let values = rows(1, plane_words * 64, seed);
            let b = plane_sum_scalar(&values, &bits, planes);
            for level in Level::supported() {
                let a = plane_sum_at(level, &values, &bits, planes);
                prop_assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{:?}: {} vs {}", level, a, b);
            }
        }
    }

    /// The estimates rank well enough to traverse a graph: over random data, the true
    /// nearest neighbour is within the estimate's top 10% for most queries, and the mean
    /// relative error of the L2 estimate is small.
    #[test]
    fn estimates_track_exact_distances() {
        for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
            for dims in [64, 128, 784, 1536] {
                let n = 500;
                let data = rows(n, dims, 1);
                let queries = rows(20, dims, 2);
                let c = Quantizer::centroid_of(metric, dims, &data);
                let q = Quantizer::new(metric, dims, c, 42);
                let mut codes = vec![0u8; n * q.code_bytes()];
                for (v, code) in data.chunks(dims).zip(codes.chunks_mut(q.code_bytes())) {
                    q.encode(v, code);
                }
                let mut hits = 0;
                let mut p = PreparedQuery::default();
                for query in queries.chunks(dims) {
                    q.prepare(query, &mut p);
                    let exact: Vec<f32> = data.chunks(dims).map(|v| metric.rank_distance(v, query)).collect();
                    let est: Vec<f32> = codes.chunks(q.code_bytes()).map(|c| q.estimate(&p, c)).collect();
                    let best = (0..n).min_by(|&a, &b| exact[a].total_cmp(&exact[b])).unwrap();
                    let rank = est.iter().filter(|&&e| e < est[best]).count();
                    if rank < n / 10 {
                        hits += 1;
                    }
                }
                // Past MAX_CODE_DIMS the code keeps a random subspace only: a looser bound.
                let need = if dims <= MAX_CODE_DIMS { 16 } else { 12 };
                assert!(hits >= need, "{metric:?} dims {dims}: true nearest in the top 10% for {hits}/20");
            }
        }
    }
}
