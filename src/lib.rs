//! # omendb
//!
//! A PostgreSQL extension: a pgvector-compatible `vector` type and the `omen` graph index.
//! This crate is PostgreSQL glue only; the algorithms live in `crates/omen-core`.
//!
//! - [`types`]: the `vector` type's functions (the SQL is hand-written in `sql/omendb.sql`
//!   so that it can adopt pgvector's type when that is installed first).

pub mod types;

::pgrx::pg_module_magic!();

::pgrx::extension_sql_file!("../sql/omendb.sql", name = "omendb", bootstrap);

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn distances_through_sql() {
        let d = Spi::get_one::<f64>("SELECT '[0,0]'::vector <-> '[3,4]'::vector").unwrap().unwrap();
        assert_eq!(d, 5.0);
        let dims = Spi::get_one::<i32>("SELECT vector_dims('[1,2,3]'::vector)").unwrap().unwrap();
        assert_eq!(dims, 3);
    }

    #[pg_test]
    fn text_round_trip() {
        let s = Spi::get_one::<String>("SELECT '[1.5, -2,3e-2]'::vector::text").unwrap().unwrap();
        assert_eq!(s, "[1.5,-2,0.03]");
    }

    #[pg_test(error = "different vector dimensions 2 and 3")]
    fn dimension_mismatch_is_an_error() {
        Spi::get_one::<f64>("SELECT '[1,2]'::vector <-> '[1,2,3]'::vector").unwrap();
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
