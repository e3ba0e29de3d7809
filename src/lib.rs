//! # omendb
//!
//! A PostgreSQL extension: a pgvector-compatible `vector` type and the `omen` graph index.
//! This crate is PostgreSQL glue only; the algorithms live in `crates/omen-core`.
//!
//! - [`types`]: the `vector` type's functions (the SQL is hand-written in `sql/omendb.sql`
//!   so that it can adopt pgvector's type when that is installed first).
//! - [`am`]: the `omen` index access method, one file per phase.
//! - [`storage`]: pages, buffer guards, GenericXLog, and the lock protocol.

pub mod am;
pub mod storage;
pub mod types;

::pgrx::pg_module_magic!();

::pgrx::extension_sql_file!("../sql/omendb.sql", name = "omendb", bootstrap);

/// Registers the `omen.*` settings and the index options, and, when preloaded, the merge
/// launcher and its shared request table.
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    am::options::init();
    am::launcher::init();
}

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

    #[pg_test]
    fn index_scan_returns_exact_order() {
        Spi::run("CREATE TABLE t (id int, v vector(2))").unwrap();
        Spi::run("INSERT INTO t SELECT i, ARRAY[i % 37, i / 37]::real[]::vector FROM generate_series(0, 999) i")
            .unwrap();
        Spi::run("CREATE INDEX ON t USING omen (v vector_l2_ops)").unwrap();
        Spi::run("SET enable_seqscan = off").unwrap();
        let ids =
            Spi::get_one::<Vec<i32>>("SELECT array_agg(id) FROM (SELECT id FROM t ORDER BY v <-> '[5,5]' LIMIT 5) s")
                .unwrap()
                .unwrap();
        assert_eq!(ids.len(), 5);
        assert_eq!(ids[0], 5 * 37 + 5, "the exact match comes first");
        let ok = Spi::get_one::<bool>("SELECT ok FROM omen_check('t_v_idx')").unwrap().unwrap();
        assert!(ok);
    }

    /// Many copies of one row, in the build and through the insert buffer: RobustPrune keeps
    /// one copy in any list, so the others are linked back by the build's and the merge's
    /// reachability repair. Every row stays reachable, and a search returns the copies.
    #[pg_test]
    fn many_copies_of_one_row_stay_reachable() {
        Spi::run("CREATE TABLE dup (id int, v vector(8))").unwrap();
        Spi::run(
            "INSERT INTO dup SELECT i, CASE WHEN i % 3 = 0 THEN '[1,2,3,4,5,6,7,8]'::vector \
             ELSE ARRAY[i % 17, i % 23, i % 29, i % 31, i % 37, i % 41, i % 43, i % 47]::real[]::vector END \
             FROM generate_series(1, 3000) i",
        )
        .unwrap();
        Spi::run("CREATE INDEX dup_v_idx ON dup USING omen (v vector_l2_ops)").unwrap();
        Spi::run("INSERT INTO dup SELECT 3000 + i, '[1,2,3,4,5,6,7,8]' FROM generate_series(1, 1000) i").unwrap();
        Spi::run("SELECT omen_flush('dup_v_idx')").unwrap();
        let problems = Spi::get_one::<String>("SELECT array_to_string(problems, '; ') FROM omen_check('dup_v_idx')")
            .unwrap()
            .unwrap_or_default();
        assert_eq!(problems, "", "omen_check found problems");
        Spi::run("SET enable_seqscan = off").unwrap();
        let zero = Spi::get_one::<i64>(
            "SELECT count(*) FROM (SELECT v FROM dup ORDER BY v <-> '[1,2,3,4,5,6,7,8]' LIMIT 40) s \
             WHERE v <-> '[1,2,3,4,5,6,7,8]' = 0",
        )
        .unwrap()
        .unwrap();
        assert_eq!(zero, 40, "the 40 nearest rows are copies of the query");
    }

    /// The slack degree follows the page layout: at 64 dimensions 38 neighbours (four node
    /// records a page) instead of 41 (three); at 784 dimensions, where one record fills a
    /// page whatever the slack, 41. An index built and grown in place at 64 dimensions
    /// keeps every list within its 38 (omen_check), and the metapage records them.
    #[pg_test]
    fn slack_degree_follows_the_page_layout() {
        use crate::storage::layout::Layout;
        use omen_core::graph::GraphParams;
        let params = GraphParams::default();
        assert_eq!(Layout::slack_for(64, &params), 38);
        let (at38, at41) = (Layout::new(64, 38).unwrap(), Layout::new(64, 41).unwrap());
        assert!(at38.pages_per_node() < at41.pages_per_node());
        assert_eq!(Layout::slack_for(784, &params), 41);
        assert_eq!(Layout::slack_for(1536, &params), 41);
        let r8 = GraphParams { max_neighbors: 8, ..params };
        assert!((r8.max_neighbors..=r8.default_slack_degree()).contains(&Layout::slack_for(64, &r8)));

        Spi::run("CREATE TABLE s64 (id int, v vector(64))").unwrap();
        let row = "ARRAY(SELECT sin(i * 0.37 + d * 1.7 + (i % 13) * d) FROM generate_series(1, 64) d)::real[]::vector";
        Spi::run(&format!("INSERT INTO s64 SELECT i, {row} FROM generate_series(1, 2000) i")).unwrap();
        Spi::run("CREATE INDEX s64_v_idx ON s64 USING omen (v vector_l2_ops) WITH (buffer = off)").unwrap();
        Spi::run(&format!("INSERT INTO s64 SELECT i, {row} FROM generate_series(2001, 2600) i")).unwrap();
        assert_eq!(meta_slack_degree("s64_v_idx"), 38);
        let problems = Spi::get_one::<String>("SELECT array_to_string(problems, '; ') FROM omen_check('s64_v_idx')")
            .unwrap()
            .unwrap_or_default();
        assert_eq!(problems, "", "omen_check found problems");

        // A column without dimensions, indexed while empty: the first row chooses them, and
        // the slack degree with them.
        Spi::run("CREATE TABLE u64 (id int, v vector)").unwrap();
        Spi::run("CREATE INDEX u64_v_idx ON u64 USING omen (v vector_l2_ops)").unwrap();
        Spi::run(&format!("INSERT INTO u64 SELECT i, {row} FROM generate_series(1, 300) i")).unwrap();
        assert_eq!(meta_slack_degree("u64_v_idx"), 38);
        Spi::run("SELECT omen_flush('u64_v_idx')").unwrap();
        let ok = Spi::get_one::<bool>("SELECT ok FROM omen_check('u64_v_idx')").unwrap().unwrap();
        assert!(ok);
    }

    /// The slack degree the metapage of index `name` records.
    fn meta_slack_degree(name: &str) -> u32 {
        with_index(name, |index| crate::storage::page_store::read_meta(index).slack_degree)
    }

    /// Calls `f` with index `name`, opened with a lock that keeps it and lets merges run.
    fn with_index<R>(name: &str, f: impl FnOnce(pg_sys::Relation) -> R) -> R {
        let oid = Spi::get_one::<pg_sys::Oid>(&format!("SELECT '{name}'::regclass::oid")).unwrap().unwrap();
        let mode = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        // SAFETY: the index exists; it is closed with the mode it was opened with, after `f`.
        let index = unsafe { pg_sys::index_open(oid, mode) };
        let r = f(index);
        // SAFETY: as above.
        unsafe { pg_sys::index_close(index, mode) };
        r
    }

    /// The back-pressure of `omen.insert_buffer_cap` counts the merge segment's pages that
    /// no merge has gone through: a merged batch counts its pages in the metapage, and the
    /// release of the segment clears the count.
    #[pg_test]
    fn merged_pages_leave_the_buffer_in_use() {
        use crate::am::merge::{Part, merge_some};
        use crate::storage::layout::NO_BLOCK;
        use crate::storage::merge_lock::{lock_merge, unlock_merge};
        use crate::storage::page_store::read_meta;
        Spi::run("CREATE TABLE bp (id int, v vector(64))").unwrap();
        // Built empty, with no merge started by the inserts (the threshold is not reached).
        Spi::run("CREATE INDEX bp_v_idx ON bp USING omen (v vector_l2_ops) WITH (buffer_threshold = 100000)").unwrap();
        let row = "ARRAY(SELECT sin(i * 0.37 + d * 1.7 + (i % 13) * d) FROM generate_series(1, 64) d)::real[]::vector";
        Spi::run(&format!("INSERT INTO bp SELECT i, {row} FROM generate_series(1, 1000) i")).unwrap();
        with_index("bp_v_idx", |index| {
            lock_merge(index);
            let before = read_meta(index);
            assert!(before.buffer_pages > 4, "{} buffer pages", before.buffer_pages);
            assert_eq!(before.pages_in_use(), before.buffer_pages);
            // One batch: the append segment is sealed and its first pages merged.
            let mut cursor = None;
            let merged = merge_some(index, &mut cursor, 1, 1, Part::WHOLE);
            let meta = read_meta(index);
            assert!(merged > 0 && meta.merge_tail != NO_BLOCK);
            assert_eq!(meta.merge_pages, before.buffer_pages);
            assert!(meta.merge_pages_done > 0 && meta.merge_pages_done < meta.merge_pages, "{meta:?}");
            assert_eq!(meta.pages_in_use(), meta.buffer_pages + meta.merge_pages - meta.merge_pages_done);
            // The rest: the segment is released, and with it the count.
            merge_some(index, &mut cursor, usize::MAX, 0, Part::WHOLE);
            let after = read_meta(index);
            assert_eq!((after.merge_tail, after.merge_pages, after.merge_pages_done), (NO_BLOCK, 0, 0));
            assert_eq!(after.merged_entries, 1000);
            unlock_merge(index);
        });
        let ok = Spi::get_one::<bool>("SELECT ok FROM omen_check('bp_v_idx')").unwrap().unwrap();
        assert!(ok);
    }

    /// An index of an older layout (here: its metapage set back to layout 2, as omendb
    /// 0.1.0 wrote it) is refused with an ERROR that says to REINDEX, not misread.
    #[pg_test(error = "omen index \"old_v_idx\" was built by an older omendb (layout version 2); REINDEX it")]
    fn an_older_layout_asks_for_reindex() {
        Spi::run("CREATE TABLE old (id int, v vector(2))").unwrap();
        Spi::run("INSERT INTO old SELECT i, ARRAY[i, 1]::real[]::vector FROM generate_series(1, 50) i").unwrap();
        Spi::run("CREATE INDEX old_v_idx ON old USING omen (v)").unwrap();
        let oid = Spi::get_one::<pg_sys::Oid>("SELECT 'old_v_idx'::regclass::oid").unwrap().unwrap();
        // SAFETY: the index exists (just created); opened and closed with a lock that
        // keeps it while its metapage is rewritten.
        unsafe {
            let index = pg_sys::index_open(oid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            crate::storage::page_store::update_meta(index, |m| m.version = 2);
            pg_sys::index_close(index, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        }
        Spi::run("SET enable_seqscan = off").unwrap();
        Spi::get_one::<i32>("SELECT id FROM old ORDER BY v <-> '[3,1]' LIMIT 1").unwrap();
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
