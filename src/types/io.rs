//! Text and binary input/output, the type modifier, and the length-coercion cast.
//!
//! The binary form is pgvector's: int16 dimensions, int16 unused (0), then each float as
//! a big-endian IEEE 754 single, so COPY BINARY and client libraries read both alike.

use omen_core::text::{self, ParseError};
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::fmgr::*;

pg_fn!(omen_vector_in, pg_finfo_omen_vector_in, |call| {
    let cstr = call.cstr(0);
    // Valid UTF-8 (every well-formed vector) is read in place; anything else is copied
    // with replacement characters, for the error message.
    let input = match cstr.to_str() {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => cstr.to_string_lossy(),
    };
    let typmod = call.typmod_arg(2);
    let values = match text::parse(&input) {
        Ok(v) => v,
        Err(e @ ParseError::Malformed(_)) | Err(e @ ParseError::Empty) => {
            raise(PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION, e.to_string())
        }
        Err(e @ ParseError::TooManyDimensions) => raise(PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED, e.to_string()),
        Err(e @ ParseError::NotFinite(_)) => raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, e.to_string()),
        Err(e @ ParseError::OutOfRange(_)) => raise(PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, e.to_string()),
    };
    check_typmod(values.len(), typmod);
    vector_datum(&values)
});

pg_fn!(omen_vector_out, pg_finfo_omen_vector_out, |call| { cstring_datum(&text::format(call.vector(0))) });

pg_fn!(omen_vector_typmod_in, pg_finfo_omen_vector_typmod_in, |call| {
    let mut n = 0;
    // SAFETY: argument 0 is a cstring[] (the SQL signature), which ArrayGetIntegerTypmods
    // reads and converts, raising an ERROR itself on a non-integer.
    let mods = unsafe { pg_sys::ArrayGetIntegerTypmods(call.array(0), &mut n) };
    if n != 1 {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "invalid type modifier");
    }
    // SAFETY: n == 1, so `mods` points at one int32.
    let dim = unsafe { *mods };
    if dim < 1 {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "dimensions for type vector must be at least 1");
    }
    if dim as usize > omen_core::MAX_DIM {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("dimensions for type vector cannot exceed {}", omen_core::MAX_DIM),
        );
    }
    int4_datum(dim)
});

pg_fn!(omen_vector_recv, pg_finfo_omen_vector_recv, |call| {
    let buf = call.datum(0).cast_mut_ptr::<pg_sys::StringInfoData>();
    let typmod = call.typmod_arg(2);
    // SAFETY: argument 0 is the `internal` StringInfo of a binary receive; `data[cursor..len]`
    // is the message not yet read.
    let rest = unsafe {
        let b = &*buf;
        std::slice::from_raw_parts(b.data.add(b.cursor as usize).cast::<u8>(), (b.len - b.cursor) as usize)
    };
    let bad = |what: &str| -> ! {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
            format!("invalid binary data for type vector: {what}"),
        )
    };
    if rest.len() < 4 {
        bad("message too short");
    }
    let dim = i16::from_be_bytes([rest[0], rest[1]]);
    let unused = i16::from_be_bytes([rest[2], rest[3]]);
    if dim < 1 {
        check_dims(0);
    }
    let dim = dim as usize;
    check_dims(dim);
    check_typmod(dim, typmod);
    if unused != 0 {
        bad(&format!("expected unused to be 0, not {unused}"));
    }
    let needed = 4 + 4 * dim;
    if rest.len() < needed {
        bad("message too short");
    }
    let (datum, out) = new_vector(dim);
    for (x, bytes) in out.iter_mut().zip(rest[4..needed].chunks_exact(4)) {
        *x = f32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    check_finite(out);
    // SAFETY: same StringInfo as above; we consumed `needed` bytes of it.
    unsafe { (*buf).cursor += needed as i32 };
    datum
});

pg_fn!(omen_vector_send, pg_finfo_omen_vector_send, |call| {
    let v = call.vector(0);
    let mut bytes = Vec::with_capacity(4 + 4 * v.len());
    bytes.extend_from_slice(&(v.len() as i16).to_be_bytes());
    bytes.extend_from_slice(&0i16.to_be_bytes());
    for x in v {
        bytes.extend_from_slice(&x.to_be_bytes());
    }
    pg_sys::Datum::from(pgrx::rust_byte_slice_to_bytea(&bytes).into_pg())
});

// vector(vector, typmod, explicit): the cast that applies a column's dimension.
pg_fn!(omen_vector_typmod, pg_finfo_omen_vector_typmod, |call| {
    let v = call.vector(0);
    check_typmod(v.len(), call.int4(1));
    call.datum(0)
});
