//! FastScan (André, Kermarrec, Le Scouarnec 2015; as Faiss and RaBitQ use it): estimates
//! for many codes at once, from lookup tables held in registers.
//!
//! An estimate needs the weighted masked sum of the rotated query over a code's bit-planes
//! ([`plane_sum`](crate::quant::plane_sum)). Split the planes into nibbles: nibble `j` of a
//! code selects a subset of four query coordinates, so its share of the sum is one of 16
//! values, a table per nibble position computed once per query. The tables are quantized to
//! bytes, and the codes are stored in blocks of 32, nibble position by position, so that one
//! byte shuffle looks up position `j` for 32 codes at once. An estimate then costs a few
//! instructions per nibble position for 32 codes, where [`plane_sum`] reads every query
//! coordinate for every code (at 784 dimensions, 3.3 KB a code): the insert buffer's
//! estimates, one per buffered row in every scan, were the scan's largest cost while rows
//! streamed in.
//!
//! The byte tables round each entry to 1/255 of the widest range among the tables of its
//! bit-plane (each plane has its own scale, so that the low planes of a multi-bit code are
//! not rounded away next to the high ones, weighted up to 8 times more): the sum is off by
//! at most half a step per position, far less than the code's own error. Sums are taken in
//! 16 bits over at most [`CHUNK`] positions at a time, then added up in floats.

use crate::quant::{PreparedQuery, Quantizer};
#[cfg(target_arch = "x86_64")]
use crate::simd::Level;

/// Codes per block.
pub const BLOCK: usize = 32;

/// Nibble positions summed in 16 bits at once (each adds at most 255).
const CHUNK: usize = 256;

/// Codes stored for FastScan: their bit-planes in blocks of [`BLOCK`], nibble-major, and
/// their two factors (the floats after the planes) in arrays of their own.
#[derive(Clone, Debug, Default)]
pub struct CodeBlocks {
    plane_bytes: usize,
    factor_bytes: usize,
    len: usize,
    /// Per block, per nibble position: 16 bytes, byte `k` holding code `k`'s nibble in its
    /// low half and code `k + 16`'s in its high half.
    packed: Vec<u8>,
    /// Per code: its squared norm and the coefficients of its dot estimate
    /// ([`Quantizer::sum_terms`]).
    norms: Vec<f32>,
    totals: Vec<f32>,
    sums: Vec<f32>,
}

/// A query's FastScan tables: per nibble position, 16 byte entries.
#[derive(Clone, Debug, Default)]
pub struct Lut {
    tables: Vec<u8>,
    /// Nibble positions per bit-plane.
    plane_positions: usize,
    /// Per bit-plane, the value of one table step: a plane's share of a sum is its tables'
    /// accumulated entries times this.
    steps: Vec<f32>,
    /// The sum of every table's smallest entry (the bytes count up from it).
    offset: f32,
}

impl CodeBlocks {
    /// Whether FastScan serves codes of `quantizer`: every quantized code (not the exact
    /// codes of up to 12 dimensions).
    pub fn supports(quantizer: &Quantizer) -> bool {
        quantizer.plane_bytes() > 0
    }

    /// Empty storage for codes of `quantizer` ([`CodeBlocks::supports`] it).
    pub fn new(quantizer: &Quantizer) -> CodeBlocks {
        assert!(Self::supports(quantizer), "quantized codes");
        let plane_bytes = quantizer.plane_bytes();
        CodeBlocks {
            plane_bytes,
            factor_bytes: quantizer.code_bytes() - plane_bytes,
            len: 0,
            packed: Vec::new(),
            norms: Vec::new(),
            totals: Vec::new(),
            sums: Vec::new(),
        }
    }

    /// Codes stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no code is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.packed.len() + 4 * (self.norms.len() + self.totals.len() + self.sums.len())
    }

    fn positions(&self) -> usize {
        2 * self.plane_bytes
    }

    /// Appends `code` (`plane_bytes + factor_bytes` bytes, as `quantizer` wrote it).
    pub fn push(&mut self, quantizer: &Quantizer, code: &[u8]) {
        assert_eq!(code.len(), self.plane_bytes + self.factor_bytes, "a whole code");
        let (slot, block_bytes) = (self.len % BLOCK, self.positions() * 16);
        if slot == 0 {
            self.packed.resize(self.packed.len() + block_bytes, 0);
            // A whole block of factors, filled as codes come.
            for factors in [&mut self.norms, &mut self.totals, &mut self.sums] {
                factors.resize(factors.len() + BLOCK, 0.0);
            }
        }
        let block = self.packed.len() - block_bytes;
        let (lane, shift) = (slot % 16, 4 * (slot / 16));
        for (i, &byte) in code[..self.plane_bytes].iter().enumerate() {
            for half in 0..2 {
                let nibble = (byte >> (4 * half)) & 0xF;
                self.packed[block + (2 * i + half) * 16 + lane] |= nibble << shift;
            }
        }
        let (norm, total, sum) = quantizer.sum_terms(&code[self.plane_bytes..]);
        self.norms[self.len] = norm;
        self.totals[self.len] = total;
        self.sums[self.len] = sum;
        self.len += 1;
    }

    /// Calls `f(i, estimate)` for every code whose estimate is below `bound` (read once per
    /// block, so `f` may lower it), in order: the quantizer's estimate of the prepared
    /// query's distance, its masked sums taken from `lut`. A block whose estimates are all
    /// at or past the bound costs no call at all.
    pub fn estimates(
        &self,
        quantizer: &Quantizer,
        prepared: &PreparedQuery,
        lut: &Lut,
        bound: &std::cell::Cell<f32>,
        f: impl FnMut(usize, f32),
    ) {
        let terms = quantizer.metric_terms(prepared);
        #[cfg(target_arch = "x86_64")]
        {
            if crate::simd::level() >= Level::Avx2 {
                // SAFETY: the CPU has AVX2 and FMA (`simd::detected` requires both for either
                // level; checked at run time, cached).
                return unsafe { self.estimates_avx2(terms, lut, bound, f) };
            }
        }
        self.estimates_with(terms, lut, bound, f)
    }

    /// [`CodeBlocks::estimates`] compiled for AVX2: the per-block float work (16-bit sums to
    /// floats, the estimates, their minimum) in 8-wide vectors instead of 4.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn estimates_avx2(&self, terms: [f32; 4], lut: &Lut, bound: &std::cell::Cell<f32>, f: impl FnMut(usize, f32)) {
        self.estimates_with(terms, lut, bound, f)
    }

    #[inline(always)]
    fn estimates_with(&self, terms: [f32; 4], lut: &Lut, bound: &std::cell::Cell<f32>, mut f: impl FnMut(usize, f32)) {
        let [k0, k1, k2, total] = terms;
        let block_bytes = self.positions() * 16;
        let plane_bytes = lut.plane_positions * 16;
        let mut acc = [0u16; BLOCK];
        let mut estimates = [0f32; BLOCK];
        for (b, packed) in self.packed.chunks_exact(block_bytes).enumerate() {
            let mut sums = [lut.offset; BLOCK];
            let planes = packed.chunks(plane_bytes).zip(lut.tables.chunks(plane_bytes));
            for ((plane, tables), &step) in planes.zip(&lut.steps) {
                for (chunk, chunk_tables) in plane.chunks(CHUNK * 16).zip(tables.chunks(CHUNK * 16)) {
                    block_sums(chunk, chunk_tables, &mut acc);
                    for k in 0..BLOCK {
                        sums[k] += acc[k] as f32 * step;
                    }
                }
            }
            let first = b * BLOCK;
            // Whole blocks of factors (the last one padded with zeros).
            let norms: &[f32; BLOCK] = self.norms[first..first + BLOCK].try_into().expect("a block");
            let totals: &[f32; BLOCK] = self.totals[first..first + BLOCK].try_into().expect("a block");
            let coefs: &[f32; BLOCK] = self.sums[first..first + BLOCK].try_into().expect("a block");
            for k in 0..BLOCK {
                estimates[k] = k0 + k1 * norms[k] + k2 * (totals[k] * total + coefs[k] * sums[k]);
            }
            // The block's least estimate, eight lanes at a time.
            let mut least = [f32::INFINITY; 8];
            for group in estimates.chunks_exact(8) {
                for (l, &e) in least.iter_mut().zip(group) {
                    *l = if e < *l { e } else { *l };
                }
            }
            if least.iter().all(|&l| l >= bound.get()) {
                continue;
            }
            let count = (self.len - first).min(BLOCK);
            for (k, &estimate) in estimates[..count].iter().enumerate() {
                if estimate < bound.get() {
                    f(first + k, estimate);
                }
            }
        }
    }
}

impl Lut {
    /// The tables of `prepared` for codes of `quantizer` (not exact codes).
    pub fn new(quantizer: &Quantizer, prepared: &PreparedQuery) -> Lut {
        let values = quantizer.rotated_query(prepared);
        let plane_bytes = quantizer.plane_bytes();
        let per_plane = values.len() / 8;
        let mut exact = vec![0f32; 2 * plane_bytes * 16];
        for (j, table) in exact.chunks_exact_mut(16).enumerate() {
            let (byte, half) = (j / 2, j % 2);
            let weight = (1u32 << (byte / per_plane)) as f32;
            let first = 8 * (byte % per_plane) + 4 * half;
            for (x, entry) in table.iter_mut().enumerate() {
                *entry = weight * (0..4).filter(|k| x >> k & 1 != 0).map(|k| values[first + k]).sum::<f32>();
            }
        }
        let mins: Vec<f32> = exact.chunks_exact(16).map(|t| t.iter().copied().fold(f32::INFINITY, f32::min)).collect();
        let plane_positions = 2 * per_plane;
        let mut tables = Vec::with_capacity(exact.len());
        let mut steps = Vec::new();
        for (plane, plane_mins) in exact.chunks(plane_positions * 16).zip(mins.chunks(plane_positions)) {
            let widest = plane
                .chunks_exact(16)
                .zip(plane_mins)
                .map(|(t, &m)| t.iter().copied().fold(f32::NEG_INFINITY, f32::max) - m)
                .fold(0f32, f32::max);
            let scale = if widest > 0.0 && widest.is_finite() { 255.0 / widest } else { 1.0 };
            steps.push(1.0 / scale);
            for (t, &m) in plane.chunks_exact(16).zip(plane_mins) {
                tables.extend(t.iter().map(|&v| ((v - m) * scale).round().clamp(0.0, 255.0) as u8));
            }
        }
        Lut { tables, plane_positions, steps, offset: mins.iter().sum() }
    }
}

/// The accumulated table entries of the 32 codes of one block.
fn block_sums(packed: &[u8], tables: &[u8], out: &mut [u16; BLOCK]) {
    assert!(packed.len() == tables.len() && packed.len().is_multiple_of(16), "a table per nibble position");
    #[cfg(target_arch = "x86_64")]
    {
        match crate::simd::level() {
            // SAFETY: the CPU has AVX-512 BW (checked at run time, cached).
            Level::Avx512 => return unsafe { block_sums_avx512(packed, tables, out) },
            // SAFETY: the CPU has AVX2 (checked at run time, cached).
            Level::Avx2 => return unsafe { block_sums_avx2(packed, tables, out) },
            Level::Portable => {}
        }
    }
    block_sums_scalar(packed, tables, out)
}

/// The portable [`block_sums`] (the reference for the SIMD kernels).
pub fn block_sums_scalar(packed: &[u8], tables: &[u8], out: &mut [u16; BLOCK]) {
    out.fill(0);
    add_block_sums_scalar(packed, tables, out);
}

/// Adds the table entries of `packed`'s positions to `out` (wrapping: the caller's total
/// fits 16 bits).
fn add_block_sums_scalar(packed: &[u8], tables: &[u8], out: &mut [u16; BLOCK]) {
    for (nibbles, table) in packed.chunks_exact(16).zip(tables.chunks_exact(16)) {
        for (k, &b) in nibbles.iter().enumerate() {
            out[k] = out[k].wrapping_add(table[(b & 0xF) as usize] as u16);
            out[k + 16] = out[k + 16].wrapping_add(table[(b >> 4) as usize] as u16);
        }
    }
}

// Both kernels read several consecutive nibble positions at once: a 128-bit lane holds one
// position's 16 bytes and its table's 16 entries, so one byte shuffle of the low nibbles
// looks up codes 0..16 at every position of the register, and one of the high nibbles codes
// 16..32. The bytes found are summed as 16-bit lanes, even bytes (code 2m) and odd bytes
// (code 2m + 1) in separate accumulators (masked and shifted, no widening across lanes);
// at the end the lanes (positions) are added together and the codes put back in order.

/// Puts the per-lane sums back in code order: `even[m]`, `odd[m]` are codes 2m and 2m + 1 of
/// codes 0..16 (`low_*`) or 16..32 (`high_*`).
fn interleave(low: ([u16; 8], [u16; 8]), high: ([u16; 8], [u16; 8]), out: &mut [u16; BLOCK]) {
    for m in 0..8 {
        out[2 * m] = low.0[m];
        out[2 * m + 1] = low.1[m];
        out[16 + 2 * m] = high.0[m];
        out[16 + 2 * m + 1] = high.1[m];
    }
}

/// The SIMD kernels' common end: the four accumulators, each added down to one 128-bit
/// register of eight position-summed lanes (`sums`: even and odd codes of codes 0..16, then
/// of codes 16..32), are put back in code order, then the positions past the last whole
/// register (`packed_rest`, `tables_rest`) are added one by one.
#[cfg(target_arch = "x86_64")]
fn finish_block_sums(
    sums: [std::arch::x86_64::__m128i; 4],
    packed_rest: &[u8],
    tables_rest: &[u8],
    out: &mut [u16; BLOCK],
) {
    let lanes = sums.map(|sum| {
        let mut v = [0u16; 8];
        // SAFETY: `v` is 8 u16, one 128-bit store (SSE2, part of every x86_64); unaligned.
        unsafe { std::arch::x86_64::_mm_storeu_si128(v.as_mut_ptr().cast(), sum) };
        v
    });
    interleave((lanes[0], lanes[1]), (lanes[2], lanes[3]), out);
    add_block_sums_scalar(packed_rest, tables_rest, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn block_sums_avx2(packed: &[u8], tables: &[u8], out: &mut [u16; BLOCK]) {
    use std::arch::x86_64::*;
    let nibble = _mm256_set1_epi8(0x0F);
    let byte = _mm256_set1_epi16(0x00FF);
    let mut acc = [_mm256_setzero_si256(); 4];
    let whole = packed.len() / 32 * 32;
    for (n, t) in packed[..whole].chunks_exact(32).zip(tables[..whole].chunks_exact(32)) {
        // SAFETY: both chunks are 32 bytes long; unaligned loads.
        let (n, t) = unsafe { (_mm256_loadu_si256(n.as_ptr().cast()), _mm256_loadu_si256(t.as_ptr().cast())) };
        let low = _mm256_shuffle_epi8(t, _mm256_and_si256(n, nibble));
        let high = _mm256_shuffle_epi8(t, _mm256_and_si256(_mm256_srli_epi16::<4>(n), nibble));
        acc[0] = _mm256_add_epi16(acc[0], _mm256_and_si256(low, byte));
        acc[1] = _mm256_add_epi16(acc[1], _mm256_srli_epi16::<8>(low));
        acc[2] = _mm256_add_epi16(acc[2], _mm256_and_si256(high, byte));
        acc[3] = _mm256_add_epi16(acc[3], _mm256_srli_epi16::<8>(high));
    }
    let sums = acc.map(|a| _mm_add_epi16(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a)));
    finish_block_sums(sums, &packed[whole..], &tables[whole..], out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn block_sums_avx512(packed: &[u8], tables: &[u8], out: &mut [u16; BLOCK]) {
    use std::arch::x86_64::*;
    let nibble = _mm512_set1_epi8(0x0F);
    let byte = _mm512_set1_epi16(0x00FF);
    let mut acc = [_mm512_setzero_si512(); 4];
    let whole = packed.len() / 64 * 64;
    for (n, t) in packed[..whole].chunks_exact(64).zip(tables[..whole].chunks_exact(64)) {
        // SAFETY: both chunks are 64 bytes long; unaligned loads.
        let (n, t) = unsafe { (_mm512_loadu_si512(n.as_ptr().cast()), _mm512_loadu_si512(t.as_ptr().cast())) };
        let low = _mm512_shuffle_epi8(t, _mm512_and_si512(n, nibble));
        let high = _mm512_shuffle_epi8(t, _mm512_and_si512(_mm512_srli_epi16::<4>(n), nibble));
        acc[0] = _mm512_add_epi16(acc[0], _mm512_and_si512(low, byte));
        acc[1] = _mm512_add_epi16(acc[1], _mm512_srli_epi16::<8>(low));
        acc[2] = _mm512_add_epi16(acc[2], _mm512_and_si512(high, byte));
        acc[3] = _mm512_add_epi16(acc[3], _mm512_srli_epi16::<8>(high));
    }
    let sums = acc.map(|a| {
        let half = _mm256_add_epi16(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64::<1>(a));
        _mm_add_epi16(_mm256_castsi256_si128(half), _mm256_extracti128_si256::<1>(half))
    });
    finish_block_sums(sums, &packed[whole..], &tables[whole..], out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::Metric;
    use proptest::prelude::*;

    fn rows(n: usize, dims: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n * dims)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    proptest! {
        #[test]
        fn simd_and_scalar_block_sums_agree(bytes in proptest::collection::vec(any::<u8>(), 1..40), seed in any::<u64>()) {
            let positions = bytes.len();
            let packed: Vec<u8> = (0..16 * positions).map(|i| bytes[i % positions].rotate_left(i as u32)).collect();
            let tables: Vec<u8> = rows(1, 16 * positions, seed).iter().map(|x| ((x + 0.5) * 255.0) as u8).collect();
            let (mut a, mut b) = ([0u16; BLOCK], [0u16; BLOCK]);
            block_sums(&packed, &tables, &mut a);
            block_sums_scalar(&packed, &tables, &mut b);
            prop_assert_eq!(a, b);
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    unsafe { block_sums_avx2(&packed, &tables, &mut a) };
                    prop_assert_eq!(a, b);
                }
                if std::arch::is_x86_feature_detected!("avx512bw") {
                    // SAFETY: the CPU has AVX-512 BW.
                    unsafe { block_sums_avx512(&packed, &tables, &mut a) };
                    prop_assert_eq!(a, b);
                }
            }
        }
    }

    /// FastScan's estimates match the quantizer's own, code by code, within the tables'
    /// rounding: the 1-bit codes of 384 to 1,536 dimensions, the 2- to 4-bit codes of 64 to
    /// 256 dimensions, and a partial last block. Exact codes are not served.
    #[test]
    fn estimates_match_the_quantizer() {
        assert!(!CodeBlocks::supports(&Quantizer::new(Metric::L2, 8, vec![0.0; 8], 3)), "exact codes");
        for (dims, metric) in [
            (64, Metric::L2),
            (100, Metric::Cosine),
            (128, Metric::InnerProduct),
            (256, Metric::L2),
            (384, Metric::Cosine),
            (784, Metric::L2),
            (1536, Metric::InnerProduct),
        ] {
            let n = 75;
            let data = rows(n + 1, dims, dims as u64);
            let (data, query) = data.split_at(n * dims);
            let centroid = Quantizer::centroid_of(metric, dims, data);
            let q = Quantizer::new(metric, dims, centroid, 3);
            let mut blocks = CodeBlocks::new(&q);
            let mut codes = Vec::new();
            for v in data.chunks_exact(dims) {
                let mut code = vec![0u8; q.code_bytes()];
                q.encode(v, &mut code);
                blocks.push(&q, &code);
                codes.push(code);
            }
            assert_eq!(blocks.len(), n);
            let mut prepared = PreparedQuery::default();
            q.prepare(query, &mut prepared);
            let lut = Lut::new(&q, &prepared);
            // The error a ranking sees: against the spread of the estimates.
            let own: Vec<f32> = codes.iter().map(|c| q.estimate(&prepared, c)).collect();
            let spread = own.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                - own.iter().copied().fold(f32::INFINITY, f32::min);
            let mut seen = 0;
            let everything = std::cell::Cell::new(f32::INFINITY);
            blocks.estimates(&q, &prepared, &lut, &everything, |i, e| {
                assert!((e - own[i]).abs() <= 0.02 * spread, "{dims}-d code {i}: {e} vs {} (spread {spread})", own[i]);
                seen += 1;
            });
            assert_eq!(seen, n);
        }
    }
}
