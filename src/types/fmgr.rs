//! The calling convention shared by every SQL-callable function of the type.
//!
//! omendb writes its SQL by hand (so it can adopt pgvector's `vector` type), so functions
//! are plain version-1 C functions. [`pg_fn!`] declares one: it emits the `pg_finfo_*`
//! record, wraps the body in `#[pg_guard]` (a Rust panic or `ereport!` becomes a PostgreSQL
//! ERROR, never a crash) and hands the body a [`Call`], whose accessors hold the unsafe
//! reads of `fcinfo` in one place.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

/// Declares a version-1 SQL-callable C function `$name` whose body sees `$call: &Call`.
macro_rules! pg_fn {
    ($name:ident, $finfo:ident, |$call:ident| $body:block) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static ::pgrx::pg_sys::Pg_finfo_record {
            const V1: ::pgrx::pg_sys::Pg_finfo_record = ::pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }

        #[::pgrx::pg_guard]
        #[unsafe(no_mangle)]
        #[allow(unused_braces)]
        /// # Safety
        /// Called by fmgr only, with the call info of a call whose arguments match the SQL
        /// signature declared for this symbol in `sql/omendb.sql`.
        pub unsafe extern "C-unwind" fn $name(fcinfo: ::pgrx::pg_sys::FunctionCallInfo) -> ::pgrx::pg_sys::Datum {
            // SAFETY: fmgr calls us with a valid fcinfo whose arguments match the SQL signature
            // declared in sql/omendb.sql for this symbol.
            let $call = &unsafe { $crate::types::fmgr::Call::new(fcinfo) };
            $body
        }
    };
}
pub(crate) use pg_fn;

/// Raises an ERROR with SQLSTATE `code`; PostgreSQL unwinds the call (via pg_guard).
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>) -> ! {
    pgrx::pg_sys::panic::ErrorReport::new(code, message.into(), "omendb").report(pgrx::PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

/// Bytes before the first float: varlena header, int16 dimensions, int16 unused.
pub const VECTOR_HEADER: usize = 8;

/// One function call's arguments.
pub struct Call {
    fcinfo: pg_sys::FunctionCallInfo,
}

impl Call {
    /// # Safety
    /// `fcinfo` must be the valid call info fmgr passed to the running function.
    pub unsafe fn new(fcinfo: pg_sys::FunctionCallInfo) -> Self {
        Call { fcinfo }
    }

    /// The raw datum of argument `n`.
    pub fn datum(&self, n: usize) -> pg_sys::Datum {
        // SAFETY: `fcinfo` is valid (see `new`); the pgrx accessor bounds-checks `n` against nargs.
        unsafe { pgrx::pg_getarg_datum_raw(self.fcinfo, n) }
    }

    /// Whether argument `n` is SQL NULL.
    pub fn is_null(&self, n: usize) -> bool {
        // SAFETY: as in `datum`.
        unsafe { pgrx::pg_arg_is_null(self.fcinfo, n) }
    }

    /// Number of arguments passed.
    pub fn nargs(&self) -> usize {
        // SAFETY: `fcinfo` is valid (see `new`).
        unsafe { (*self.fcinfo).nargs as usize }
    }

    /// Argument `n` as int4.
    pub fn int4(&self, n: usize) -> i32 {
        self.datum(n).value() as i32
    }

    /// Argument `n` as bool.
    pub fn bool(&self, n: usize) -> bool {
        self.datum(n).value() != 0
    }

    /// Argument `n` as a C string.
    pub fn cstr(&self, n: usize) -> &CStr {
        // SAFETY: the SQL signature declares argument `n` as cstring, a NUL-terminated string
        // that lives for the whole call.
        unsafe { CStr::from_ptr(self.datum(n).cast_mut_ptr::<std::ffi::c_char>()) }
    }

    /// Argument `n` as a detoasted varlena pointer (a copy only when it was toasted or short).
    pub fn varlena(&self, n: usize) -> *mut pg_sys::varlena {
        // SAFETY: the SQL signature declares argument `n` as a varlena type and it is not NULL
        // (the functions are STRICT); pg_detoast_datum returns a 4-byte-header copy or the input.
        unsafe { pg_sys::pg_detoast_datum(self.datum(n).cast_mut_ptr()) }
    }

    /// Argument `n` as the floats of a `vector`, read in place.
    pub fn vector(&self, n: usize) -> &[f32] {
        vector_slice(self.varlena(n))
    }

    /// Argument `n` as an array.
    pub fn array(&self, n: usize) -> *mut pg_sys::ArrayType {
        self.varlena(n).cast()
    }

    /// The typmod of the call's result or argument `n` as fmgr passed it (-1 when unknown).
    pub fn typmod_arg(&self, n: usize) -> i32 {
        if self.nargs() > n && !self.is_null(n) { self.int4(n) } else { -1 }
    }

    /// Marks the result NULL.
    pub fn return_null(&self) -> pg_sys::Datum {
        // SAFETY: `fcinfo` is valid (see `new`).
        unsafe { pgrx::pg_return_null(self.fcinfo) }
    }

    /// The aggregate's memory context when called as an aggregate transition function.
    pub fn in_aggregate(&self) -> bool {
        // SAFETY: `fcinfo` is valid; AggCheckCallContext only inspects its context node.
        unsafe { pg_sys::AggCheckCallContext(self.fcinfo, std::ptr::null_mut()) != 0 }
    }
}

/// The floats of a detoasted `vector` with a 4-byte header, after checking the header.
pub fn vector_slice<'a>(v: *mut pg_sys::varlena) -> &'a [f32] {
    // SAFETY: `v` is a detoasted varlena with a 4-byte header (pg_detoast_datum guarantees it),
    // so its length word and the 4 header bytes after it are readable.
    let (size, dim) = unsafe { (pgrx::varsize_4b(v), *(v.cast::<u8>().add(4).cast::<i16>())) };
    let dim = dim as usize;
    if size != VECTOR_HEADER + 4 * dim {
        raise(
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            format!("vector datum is corrupt: {size} bytes for {dim} dimensions"),
        );
    }
    // SAFETY: the check above proves `dim` floats follow the 8-byte header.
    let floats = unsafe { v.cast::<u8>().add(VECTOR_HEADER) };
    if floats.align_offset(std::mem::align_of::<f32>()) == 0 {
        // SAFETY: aligned, in bounds (checked above), and the datum outlives the call.
        unsafe { std::slice::from_raw_parts(floats.cast::<f32>(), dim) }
    } else {
        // A misaligned datum (never seen from a heap tuple of an int4-aligned type) is copied.
        let (_, out) = new_vector(dim);
        // SAFETY: `floats` has 4*dim readable bytes; `out` has as many writable ones.
        unsafe { std::ptr::copy_nonoverlapping(floats, out.as_mut_ptr().cast::<u8>(), 4 * dim) };
        out
    }
}

/// Allocates a zeroed `vector` of `dim` floats in the current memory context.
pub fn new_vector<'a>(dim: usize) -> (pg_sys::Datum, &'a mut [f32]) {
    let size = VECTOR_HEADER + 4 * dim;
    // SAFETY: palloc0 returns `size` zeroed bytes (or raises an ERROR); we write the 4-byte
    // varlena length and the int16 dimension into the header, then hand out the float area,
    // which palloc's MAXALIGN'd result keeps 4-byte aligned.
    unsafe {
        let p = pg_sys::palloc0(size).cast::<u8>();
        pgrx::set_varsize_4b(p.cast(), size as i32);
        *(p.add(4).cast::<i16>()) = dim as i16;
        let floats = std::slice::from_raw_parts_mut(p.add(VECTOR_HEADER).cast::<f32>(), dim);
        (pg_sys::Datum::from(p), floats)
    }
}

/// A new `vector` holding `values`.
pub fn vector_datum(values: &[f32]) -> pg_sys::Datum {
    let (datum, out) = new_vector(values.len());
    out.copy_from_slice(values);
    datum
}

/// A float8 result.
pub fn float8_datum(v: f64) -> pg_sys::Datum {
    pg_sys::Datum::from(v.to_bits())
}

/// An int4 result.
pub fn int4_datum(v: i32) -> pg_sys::Datum {
    pg_sys::Datum::from(v)
}

/// A bool result.
pub fn bool_datum(v: bool) -> pg_sys::Datum {
    pg_sys::Datum::from(v)
}

/// A palloc'd, NUL-terminated copy of `s` as a cstring result.
pub fn cstring_datum(s: &str) -> pg_sys::Datum {
    // SAFETY: palloc returns len+1 writable bytes; we copy `s` and terminate it.
    unsafe {
        let p = pg_sys::palloc(s.len() + 1).cast::<u8>();
        std::ptr::copy_nonoverlapping(s.as_ptr(), p, s.len());
        *p.add(s.len()) = 0;
        pg_sys::Datum::from(p)
    }
}

/// ERROR for operands of different dimensions.
pub fn check_same_dims(a: &[f32], b: &[f32]) {
    if a.len() != b.len() {
        raise(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("different vector dimensions {} and {}", a.len(), b.len()),
        );
    }
}

/// ERROR when `dim` is not a legal number of dimensions.
pub fn check_dims(dim: usize) {
    if dim == 0 {
        raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "vector must have at least 1 dimension");
    }
    if dim > omen_core::MAX_DIM {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("vector cannot have more than {} dimensions", omen_core::MAX_DIM),
        );
    }
}

/// ERROR when a vector of `dim` dimensions does not fit typmod `typmod` (-1: any).
pub fn check_typmod(dim: usize, typmod: i32) {
    if typmod != -1 && dim as i32 != typmod {
        raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, format!("expected {typmod} dimensions, not {dim}"));
    }
}

/// ERROR when an element is NaN or infinite.
pub fn check_finite(values: &[f32]) {
    for &x in values {
        if x.is_nan() {
            raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "NaN not allowed in vector");
        }
        if x.is_infinite() {
            raise(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "infinite value not allowed in vector");
        }
    }
}

/// ERROR for an arithmetic result that overflowed a 4-byte float.
pub fn check_overflow(values: &[f32]) {
    if values.iter().any(|x| !x.is_finite()) {
        raise(PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, "value out of range: overflow");
    }
}

/// The floats of a `vector` datum (detoasted in the current memory context if needed).
pub fn datum_vector<'a>(datum: pg_sys::Datum) -> &'a [f32] {
    // SAFETY: callers pass a non-null datum of type vector (an index key or scan argument).
    vector_slice(unsafe { pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) })
}
