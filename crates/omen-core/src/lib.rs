//! # omen-core
//!
//! The PostgreSQL-free heart of OmenDB. Nothing here links against PostgreSQL, so every
//! algorithm builds, runs its tests and its benchmarks in seconds with plain `cargo`.
//!
//! - [`distance`]: SIMD distance kernels (simsimd, runtime CPU dispatch) over `&[f32]`
//!   slices that point straight at stored tuples: no copy, no per-element conversion.
//! - [`text`]: the vector text form `[1,2.5,-3e-2]`: a parser that never panics and a
//!   formatter that writes the shortest representation that reads back to the same float.
//! - [`graph`]: the Vamana graph (DiskANN): beam search, RobustPrune, parallel in-memory build
//!   and in-place insert, written against the small [`graph::GraphStore`] trait so the
//!   PostgreSQL page store and the in-memory test store share one implementation.
//! - [`huge_pages`]: asks Linux for transparent huge pages for a build's large arrays.
//! - [`cores`]: whether other processes keep every core busy (merge workers sleep then).

pub mod cores;
pub mod distance;
pub mod fastscan;
pub mod graph;
pub mod huge_pages;
pub mod quant;
pub mod simd;
pub mod text;

/// Largest number of dimensions a vector may have (pgvector's limit too).
pub const MAX_DIM: usize = 16_000;
