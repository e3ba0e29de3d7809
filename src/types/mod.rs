//! The `vector` type: pgvector's on-disk and wire layout, omendb's functions.
//!
//! - [`fmgr`]: the version-1 calling convention, in-place reads of vector arguments,
//!   allocation of results, and the shared input checks (each an ERROR with a SQLSTATE).
//! - [`io`]: text and binary input/output, typmod.
//! - [`functions`]: distances, norms, `subvector`, arithmetic, btree comparisons.
//! - [`arrays`]: casts to and from arrays and the `avg(vector)` state.
//!
//! The SQL objects that use these symbols are declared in `sql/omendb.sql`, which creates the
//! user-facing names only where pgvector has not already created them.

pub mod fmgr;

pub mod arrays;
pub mod functions;
pub mod io;
