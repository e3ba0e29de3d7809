//! Distances, per-vector functions, element-wise arithmetic and comparisons.
//!
//! Every function reads its operands in place (see `Call::vector`) and computes with the
//! kernels of `omen_core::distance`.

use std::cmp::Ordering;

use omen_core::distance;
use pgrx::prelude::*;

use super::fmgr::*;

/// Both operands of a binary vector function, checked to have the same dimensions.
fn operands(call: &Call) -> (&[f32], &[f32]) {
    let (a, b) = (call.vector(0), call.vector(1));
    check_same_dims(a, b);
    (a, b)
}

pg_fn!(omen_l2_distance, pg_finfo_omen_l2_distance, |call| {
    let (a, b) = operands(call);
    float8_datum(distance::l2_squared(a, b).sqrt())
});

pg_fn!(omen_l2_squared_distance, pg_finfo_omen_l2_squared_distance, |call| {
    let (a, b) = operands(call);
    float8_datum(distance::l2_squared(a, b))
});

pg_fn!(omen_inner_product, pg_finfo_omen_inner_product, |call| {
    let (a, b) = operands(call);
    float8_datum(distance::inner_product(a, b))
});

pg_fn!(omen_negative_inner_product, pg_finfo_omen_negative_inner_product, |call| {
    let (a, b) = operands(call);
    float8_datum(-distance::inner_product(a, b))
});

pg_fn!(omen_cosine_distance, pg_finfo_omen_cosine_distance, |call| {
    let (a, b) = operands(call);
    float8_datum(distance::cosine_distance(a, b))
});

pg_fn!(omen_l1_distance, pg_finfo_omen_l1_distance, |call| {
    let (a, b) = operands(call);
    float8_datum(distance::l1_distance(a, b))
});

pg_fn!(omen_vector_dims, pg_finfo_omen_vector_dims, |call| { int4_datum(call.vector(0).len() as i32) });

pg_fn!(omen_vector_norm, pg_finfo_omen_vector_norm, |call| { float8_datum(distance::norm(call.vector(0))) });

pg_fn!(omen_l2_normalize, pg_finfo_omen_l2_normalize, |call| {
    let v = call.vector(0);
    let norm = distance::norm(v);
    let (datum, out) = new_vector(v.len());
    if norm > 0.0 {
        for (o, &x) in out.iter_mut().zip(v) {
            *o = (x as f64 / norm) as f32;
        }
        check_overflow(out);
    }
    datum
});

pg_fn!(omen_subvector, pg_finfo_omen_subvector, |call| {
    let v = call.vector(0);
    let (start, count) = (call.int4(1) as i64, call.int4(2) as i64);
    if count < 1 {
        raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "vector must have at least 1 dimension");
    }
    // 1-based, clipped to the vector like pgvector's subvector.
    let end = (start + count).min(v.len() as i64 + 1);
    let start = start.max(1);
    if end <= start {
        raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "vector must have at least 1 dimension");
    }
    vector_datum(&v[(start - 1) as usize..(end - 1) as usize])
});

/// An element-wise operation, with a dimension check and an overflow check.
fn elementwise(call: &Call, op: impl Fn(f32, f32) -> f32) -> pgrx::pg_sys::Datum {
    let (a, b) = operands(call);
    let (datum, out) = new_vector(a.len());
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = op(x, y);
    }
    check_overflow(out);
    datum
}

pg_fn!(omen_vector_add, pg_finfo_omen_vector_add, |call| { elementwise(call, |x, y| x + y) });
pg_fn!(omen_vector_sub, pg_finfo_omen_vector_sub, |call| { elementwise(call, |x, y| x - y) });
pg_fn!(omen_vector_mul, pg_finfo_omen_vector_mul, |call| {
    let (a, b) = operands(call);
    let (datum, out) = new_vector(a.len());
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x * y;
        if *o == 0.0 && x != 0.0 && y != 0.0 {
            raise(PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, "value out of range: underflow");
        }
    }
    check_overflow(out);
    datum
});

/// Btree order: element by element, then the shorter vector first.
fn compare(call: &Call) -> Ordering {
    let (a, b) = (call.vector(0), call.vector(1));
    for (x, y) in a.iter().zip(b) {
        match x.partial_cmp(y) {
            Some(Ordering::Equal) | None => continue,
            Some(o) => return o,
        }
    }
    a.len().cmp(&b.len())
}

pg_fn!(omen_vector_cmp, pg_finfo_omen_vector_cmp, |call| { int4_datum(compare(call) as i32) });
pg_fn!(omen_vector_lt, pg_finfo_omen_vector_lt, |call| { bool_datum(compare(call).is_lt()) });
pg_fn!(omen_vector_le, pg_finfo_omen_vector_le, |call| { bool_datum(compare(call).is_le()) });
pg_fn!(omen_vector_eq, pg_finfo_omen_vector_eq, |call| { bool_datum(compare(call).is_eq()) });
pg_fn!(omen_vector_ne, pg_finfo_omen_vector_ne, |call| { bool_datum(compare(call).is_ne()) });
pg_fn!(omen_vector_ge, pg_finfo_omen_vector_ge, |call| { bool_datum(compare(call).is_ge()) });
pg_fn!(omen_vector_gt, pg_finfo_omen_vector_gt, |call| { bool_datum(compare(call).is_gt()) });
