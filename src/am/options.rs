//! Index options (`WITH (max_neighbors = 32, build_list_size = 64, alpha = 1.2, buffer = on,
//! buffer_threshold = 1000)`) and the settings (`omen.*` GUCs).

use std::ffi::CStr;

use omen_core::distance::Metric;
use omen_core::graph::GraphParams;
use pgrx::pg_sys;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `omen.search_list_size`: candidates kept by a query's beam search.
pub static SEARCH_LIST_SIZE: GucSetting<i32> = GucSetting::<i32>::new(40);
/// `omen.max_search_list_size`: how far a scan widens its search when the executor keeps
/// asking for rows (a filter rejects them); the bound that stops a hopeless filtered query.
pub static MAX_SEARCH_LIST_SIZE: GucSetting<i32> = GucSetting::<i32>::new(20_000);

/// `omen.insert_buffer_cap`: entries past which an insert merges a batch itself instead of
/// waiting for the background worker.
pub static INSERT_BUFFER_CAP: GucSetting<i32> = GucSetting::<i32>::new(100_000);

/// `omen.max_merge_workers`: merge workers one index may have at once, each merging its
/// own part of the insert buffer (`merge`); -1 (the default): the cores this server may use
/// less one, at least 1 and at most [`AUTO_MAX_MERGE_WORKERS`] (`worker::merge_workers`);
/// 0 counts as 1.
pub static MAX_MERGE_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(-1);

/// The most merge workers per index `omen.max_merge_workers = -1` picks. Measured on two
/// cores (README, "Sustained ingest"): two workers left no core to the backends, and the
/// INSERT p99 while another client queried was 1.9–3.2× a table's without the index; one
/// worker left one core free: 1.39×, and the queries' p99 went from 4.7–6.0× to 3.0× the
/// idle index's.
pub const AUTO_MAX_MERGE_WORKERS: usize = 2;

/// `omen.merge_worker_nice`: the scheduling niceness merge workers run at, so that on a
/// busy machine the backends that serve queries and inserts get the cores first.
pub static MERGE_WORKER_NICE: GucSetting<i32> = GucSetting::<i32>::new(10);

pub const DEFAULT_BUFFER_THRESHOLD: i32 = 1000;
pub const DEFAULT_MAX_NEIGHBORS: i32 = 32;
pub const DEFAULT_BUILD_LIST_SIZE: i32 = 64;
pub const DEFAULT_ALPHA: f64 = 1.2;

static mut RELOPT_KIND: pg_sys::relopt_kind::Type = 0;

/// The parsed reloptions, as `build_reloptions` lays them out.
#[repr(C)]
struct OmenOptions {
    vl_len_: i32,
    max_neighbors: i32,
    build_list_size: i32,
    alpha: f64,
    buffer: bool,
    buffer_threshold: i32,
}

/// Registers the GUCs and the reloptions; called once from `_PG_init`.
pub fn init() {
    GucRegistry::define_int_guc(
        c"omen.search_list_size",
        c"Candidates kept by an omen index scan's beam search.",
        c"Larger values find more of the true nearest neighbours (higher recall) and take longer.",
        &SEARCH_LIST_SIZE,
        1,
        10_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"omen.max_search_list_size",
        c"Widest search list an omen index scan grows to when more rows are requested.",
        c"A filtered query keeps widening its search (doubling the list) until it has its rows or reaches this size.",
        &MAX_SEARCH_LIST_SIZE,
        1,
        1_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"omen.insert_buffer_cap",
        c"Entries an omen index's insert buffer may hold before an insert merges a batch itself.",
        c"Up to this size inserts only append to the buffer and leave merging to the background worker; past it the inserting backend merges one batch in a merge slot no worker holds, so the buffer stays bounded when no worker can keep up or start; with every slot held by workers the buffer may reach twice this, past which the insert waits for every slot.",
        &INSERT_BUFFER_CAP,
        64,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"omen.max_merge_workers",
        c"Merge workers one omen index may have at once.",
        c"Each worker merges its own part of the insert buffer; more workers merge a large buffer faster where cores are free. -1: the cores the server may use less one (at least 1, at most 2), so that one core is left to queries and inserts. Takes effect for merges started after a reload.",
        &MAX_MERGE_WORKERS,
        -1,
        crate::storage::merge_lock::MAX_MERGE_SLOTS as i32,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"omen.merge_worker_nice",
        c"Scheduling niceness of omen's merge workers (0 to 19; higher yields more).",
        c"Merge workers run at this nice value, so that when the cores are busy the backends serving queries and inserts run first and the merge takes the time left. 0 runs them as every other backend. Takes effect for workers started after a reload.",
        &MERGE_WORKER_NICE,
        0,
        19,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // SAFETY: _PG_init runs once per backend before any index is opened; the reloption
    // registry copies the names and descriptions.
    unsafe {
        RELOPT_KIND = pg_sys::add_reloption_kind();
        let lock = pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE;
        pg_sys::add_int_reloption(
            RELOPT_KIND as _,
            c"max_neighbors".as_ptr(),
            c"Degree bound R of the graph".as_ptr(),
            DEFAULT_MAX_NEIGHBORS,
            4,
            128,
            lock,
        );
        pg_sys::add_int_reloption(
            RELOPT_KIND as _,
            c"build_list_size".as_ptr(),
            c"Search list size L used while building the graph".as_ptr(),
            DEFAULT_BUILD_LIST_SIZE,
            10,
            1000,
            lock,
        );
        pg_sys::add_real_reloption(
            RELOPT_KIND as _,
            c"alpha".as_ptr(),
            c"RobustPrune's alpha (1.0 to 2.0)".as_ptr(),
            DEFAULT_ALPHA,
            1.0,
            2.0,
            lock,
        );
        // The buffer options take effect for the next insert: no rebuild, a lighter lock.
        let light = pg_sys::ShareUpdateExclusiveLock as pg_sys::LOCKMODE;
        pg_sys::add_bool_reloption(
            RELOPT_KIND as _,
            c"buffer".as_ptr(),
            c"Inserts append to an insert buffer merged in the background (on) or go into the graph in place (off)"
                .as_ptr(),
            true,
            light,
        );
        pg_sys::add_int_reloption(
            RELOPT_KIND as _,
            c"buffer_threshold".as_ptr(),
            c"Buffered entries that start a background merge".as_ptr(),
            DEFAULT_BUFFER_THRESHOLD,
            1,
            100_000_000,
            light,
        );
    }
}

fn parse_elt(name: &'static CStr, opttype: pg_sys::relopt_type::Type, offset: usize) -> pg_sys::relopt_parse_elt {
    pg_sys::relopt_parse_elt {
        optname: name.as_ptr(),
        opttype,
        offset: offset as i32,
        // PostgreSQL 18's offset of a "was it set" flag; 0: none kept.
        #[cfg(feature = "pg18")]
        isset_offset: 0,
    }
}

/// `amoptions`: parses and validates the WITH (...) options.
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn amoptions(reloptions: pg_sys::Datum, validate: bool) -> *mut pg_sys::bytea {
    let table = [
        parse_elt(
            c"max_neighbors",
            pg_sys::relopt_type::RELOPT_TYPE_INT,
            std::mem::offset_of!(OmenOptions, max_neighbors),
        ),
        parse_elt(
            c"build_list_size",
            pg_sys::relopt_type::RELOPT_TYPE_INT,
            std::mem::offset_of!(OmenOptions, build_list_size),
        ),
        parse_elt(c"alpha", pg_sys::relopt_type::RELOPT_TYPE_REAL, std::mem::offset_of!(OmenOptions, alpha)),
        parse_elt(c"buffer", pg_sys::relopt_type::RELOPT_TYPE_BOOL, std::mem::offset_of!(OmenOptions, buffer)),
        parse_elt(
            c"buffer_threshold",
            pg_sys::relopt_type::RELOPT_TYPE_INT,
            std::mem::offset_of!(OmenOptions, buffer_threshold),
        ),
    ];
    // SAFETY: `table` describes `OmenOptions` field by field; build_reloptions pallocs the
    // struct, fills it and raises an ERROR (22023) for an out-of-range or unknown option.
    unsafe {
        pg_sys::build_reloptions(
            reloptions,
            validate,
            RELOPT_KIND,
            std::mem::size_of::<OmenOptions>(),
            table.as_ptr(),
            table.len() as i32,
        )
        .cast()
    }
}

/// The graph parameters of `index` (its options, or the defaults).
pub fn graph_params(index: pg_sys::Relation, metric: Metric) -> GraphParams {
    // SAFETY: rd_options is NULL or the struct `amoptions` built for this index.
    let opts = unsafe { ((*index).rd_options as *const OmenOptions).as_ref() };
    let (r, l, a) = match opts {
        Some(o) => (o.max_neighbors, o.build_list_size, o.alpha),
        None => (DEFAULT_MAX_NEIGHBORS, DEFAULT_BUILD_LIST_SIZE, DEFAULT_ALPHA),
    };
    if l < r {
        pgrx::ereport!(
            ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("build_list_size ({l}) must be at least max_neighbors ({r})")
        );
    }
    GraphParams { max_neighbors: r as usize, build_list_size: l as usize, alpha: a as f32, metric, slack: None }
}

/// The insert buffer options of `index`: whether it is on, and its merge threshold.
pub fn buffer_options(index: pg_sys::Relation) -> (bool, usize) {
    // SAFETY: rd_options is NULL or the struct `amoptions` built for this index.
    let opts = unsafe { ((*index).rd_options as *const OmenOptions).as_ref() };
    match opts {
        Some(o) => (o.buffer, o.buffer_threshold.max(1) as usize),
        None => (true, DEFAULT_BUFFER_THRESHOLD as usize),
    }
}

/// The metric of `index`'s operator class, from its support function 1.
pub fn metric_of(index: pg_sys::Relation) -> Metric {
    // SAFETY: an omen index's opclass has support function 1 (checked by amvalidate);
    // get_func_name returns a palloc'd name or NULL.
    let name = unsafe {
        let proc_oid = pg_sys::index_getprocid(index, 1, 1);
        let name = pg_sys::get_func_name(proc_oid);
        if name.is_null() { String::new() } else { CStr::from_ptr(name).to_string_lossy().into_owned() }
    };
    match name.as_str() {
        "omen_l2_distance" => Metric::L2,
        "omen_negative_inner_product" => Metric::InnerProduct,
        "omen_cosine_distance" => Metric::Cosine,
        "omen_l1_distance" => Metric::L1,
        other => pgrx::error!("omen operator class has an unknown distance function \"{other}\""),
    }
}
