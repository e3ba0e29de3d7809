//! Arrays: casts between `vector` and `real[]`, `double precision[]`, `integer[]`
//! (`numeric[]` goes through `real[]` in SQL), and the `float8[]` state of `avg(vector)`.

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::fmgr::*;

/// Bytes before the data of a one-dimensional array without a null bitmap.
const ARRAY_1D_OVERHEAD: usize = 24;

/// A new one-dimensional array of byval 4- or 8-byte elements.
fn byval_array(datums: &mut [pg_sys::Datum], elemtype: pg_sys::Oid, len: i32, align: u8) -> pg_sys::Datum {
    // SAFETY: `datums` holds `datums.len()` valid byval datums of `elemtype`; construct_array
    // copies them into a new palloc'd array.
    let arr = unsafe {
        pg_sys::construct_array(
            datums.as_mut_ptr(),
            datums.len() as i32,
            elemtype,
            len,
            true,
            align as std::ffi::c_char,
        )
    };
    pg_sys::Datum::from(arr)
}

/// A new `float8[]` holding `values`.
fn float8_array(values: &[f64]) -> pg_sys::Datum {
    let mut datums: Vec<pg_sys::Datum> = values.iter().map(|v| float8_datum(*v)).collect();
    byval_array(&mut datums, pg_sys::FLOAT8OID, 8, b'd')
}

/// The elements of a `float8[]` aggregate state, read in place.
fn float8_state<'a>(arr: *mut pg_sys::ArrayType) -> &'a [f64] {
    // SAFETY: `arr` is a detoasted array (Call::array); its fixed header is readable.
    let (ndim, dataoffset, elemtype) = unsafe { ((*arr).ndim, (*arr).dataoffset, (*arr).elemtype) };
    if ndim != 1 || dataoffset != 0 || elemtype != pg_sys::FLOAT8OID {
        raise(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            "invalid state for vector aggregate: expected a float8[] without nulls",
        );
    }
    // SAFETY: a 1-D array without nulls stores its length right after the header, and its
    // elements from offset 24 on, MAXALIGN'd, so the f64 slice is in bounds and aligned.
    unsafe {
        let n = *(arr.cast::<u8>().add(16).cast::<i32>()) as usize;
        std::slice::from_raw_parts(arr.cast::<u8>().add(ARRAY_1D_OVERHEAD).cast::<f64>(), n)
    }
}

// omen_vector_accum(float8[], vector): avg's transition, state = [count, sums...].
pg_fn!(omen_vector_accum, pg_finfo_omen_vector_accum, |call| {
    let state = float8_state(call.array(0));
    let v = call.vector(1);
    let count = state.first().copied().unwrap_or(0.0);
    let mut next = Vec::with_capacity(v.len() + 1);
    next.push(count + 1.0);
    if count == 0.0 {
        next.extend(v.iter().map(|&x| x as f64));
    } else {
        if state.len() - 1 != v.len() {
            check_same_dims(&vec![0.0; state.len() - 1], v);
        }
        next.extend(state[1..].iter().zip(v).map(|(s, &x)| s + x as f64));
    }
    float8_array(&next)
});

// omen_vector_combine(float8[], float8[]): avg's combine function for parallel aggregation.
pg_fn!(omen_vector_combine, pg_finfo_omen_vector_combine, |call| {
    let (a, b) = (float8_state(call.array(0)), float8_state(call.array(1)));
    let (na, nb) = (a.first().copied().unwrap_or(0.0), b.first().copied().unwrap_or(0.0));
    if na == 0.0 {
        return float8_array(b);
    }
    if nb == 0.0 {
        return float8_array(a);
    }
    if a.len() != b.len() {
        check_same_dims(&vec![0.0; a.len() - 1], &vec![0.0; b.len() - 1]);
    }
    let sum: Vec<f64> = a.iter().zip(b).map(|(x, y)| x + y).collect();
    float8_array(&sum)
});

// omen_vector_avg(float8[]): avg's final function; NULL over no rows.
pg_fn!(omen_vector_avg, pg_finfo_omen_vector_avg, |call| {
    let state = float8_state(call.array(0));
    let count = state.first().copied().unwrap_or(0.0);
    if count == 0.0 {
        return call.return_null();
    }
    let (datum, out) = new_vector(state.len() - 1);
    for (o, s) in out.iter_mut().zip(&state[1..]) {
        *o = (s / count) as f32;
    }
    check_overflow(out);
    datum
});

// omen_array_to_vector(integer[] | real[] | double precision[], typmod, explicit).
pg_fn!(omen_array_to_vector, pg_finfo_omen_array_to_vector, |call| {
    let arr = call.array(0);
    let typmod = call.typmod_arg(1);
    // SAFETY: `arr` is a detoasted array; its fixed header is readable.
    let (ndim, elemtype) = unsafe { ((*arr).ndim, (*arr).elemtype) };
    if ndim > 1 {
        raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "array must be 1-D");
    }
    let (len, align) = match elemtype {
        pg_sys::INT4OID | pg_sys::FLOAT4OID => (4, b'i'),
        pg_sys::FLOAT8OID => (8, b'd'),
        _ => raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "unsupported array element type for a cast to vector"),
    };
    let mut elems: *mut pg_sys::Datum = std::ptr::null_mut();
    let mut nulls: *mut bool = std::ptr::null_mut();
    let mut n = 0;
    // SAFETY: the element type's length, byval-ness and alignment passed match `elemtype`;
    // deconstruct_array fills palloc'd arrays of `n` datums and null flags.
    let (elems, nulls) = unsafe {
        pg_sys::deconstruct_array(arr, elemtype, len, true, align as std::ffi::c_char, &mut elems, &mut nulls, &mut n);
        (std::slice::from_raw_parts(elems, n as usize), std::slice::from_raw_parts(nulls, n as usize))
    };
    if nulls.iter().any(|&isnull| isnull) {
        raise(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "array must not contain nulls");
    }
    check_dims(elems.len());
    check_typmod(elems.len(), typmod);
    let (datum, out) = new_vector(elems.len());
    for (o, d) in out.iter_mut().zip(elems) {
        *o = match elemtype {
            pg_sys::INT4OID => d.value() as i32 as f32,
            pg_sys::FLOAT4OID => f32::from_bits(d.value() as u32),
            _ => {
                let x = f64::from_bits(d.value() as u64);
                if x.is_finite() && x.abs() > f32::MAX as f64 {
                    raise(
                        PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                        format!("\"{x:e}\" is out of range for type vector"),
                    );
                }
                x as f32
            }
        };
    }
    check_finite(out);
    datum
});

// omen_vector_to_float4(vector, typmod, explicit) -> real[].
pg_fn!(omen_vector_to_float4, pg_finfo_omen_vector_to_float4, |call| {
    let mut datums: Vec<pg_sys::Datum> = call.vector(0).iter().map(|x| pg_sys::Datum::from(x.to_bits())).collect();
    byval_array(&mut datums, pg_sys::FLOAT4OID, 4, b'i')
});

// omen_vector_to_float8(vector, typmod, explicit) -> double precision[].
pg_fn!(omen_vector_to_float8, pg_finfo_omen_vector_to_float8, |call| {
    let values: Vec<f64> = call.vector(0).iter().map(|&x| x as f64).collect();
    float8_array(&values)
});
