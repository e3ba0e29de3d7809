//! The `omen` index access method, one file per phase:
//!
//! - [`options`] — WITH (...) options and the `omen.*` settings
//! - [`build`] — CREATE INDEX (parallel in-memory build, pages logged at once)
//! - [`insert`] — INSERT/UPDATE (to the insert buffer, or in place)
//! - [`merge`] — merging the insert buffer into the graph
//! - [`worker`] — the background worker that runs merges
//! - [`launcher`] — with omendb preloaded, the one process that starts merge workers
//! - [`scan`] — ORDER BY ... LIMIT (streamed beam search in exact distance order)
//! - [`vacuum`] — VACUUM (dead rows' nodes marked deleted)
//! - [`cost`] — the planner's cost model
//! - [`validate`] — operator class checks
//! - [`inspect`] — `omen_index_info` and `omen_check`

pub mod build;
pub mod cost;
pub mod insert;
pub mod inspect;
pub mod launcher;
pub mod merge;
pub mod options;
pub mod reachability;
pub mod scan;
pub mod vacuum;
pub mod validate;
pub mod worker;

use pgrx::PgBox;
use pgrx::pg_sys;

use crate::types::fmgr::pg_fn;

// omen_amhandler(internal) RETURNS index_am_handler.
pg_fn!(omen_amhandler, pg_finfo_omen_amhandler, |_call| {
    // SAFETY: alloc_node pallocs a zeroed IndexAmRoutine with its node tag set.
    let mut am = unsafe { PgBox::<pg_sys::IndexAmRoutine>::alloc_node(pg_sys::NodeTag::T_IndexAmRoutine) };
    am.amstrategies = 0;
    am.amsupport = 1;
    am.amcanorder = false;
    am.amcanorderbyop = true;
    am.amcanbackward = false;
    am.amcanunique = false;
    am.amcanmulticol = false;
    am.amoptionalkey = true;
    am.amsearcharray = false;
    am.amsearchnulls = false;
    am.amstorage = false;
    am.amclusterable = false;
    am.ampredlocks = false;
    am.amcanparallel = false;
    am.amcaninclude = false;
    am.amusemaintenanceworkmem = true;
    am.amkeytype = pg_sys::InvalidOid;
    am.ambuild = Some(build::ambuild);
    am.ambuildempty = Some(build::ambuildempty);
    am.aminsert = Some(insert::aminsert);
    am.ambulkdelete = Some(vacuum::ambulkdelete);
    am.amvacuumcleanup = Some(vacuum::amvacuumcleanup);
    am.amcostestimate = Some(cost::amcostestimate);
    am.amoptions = Some(options::amoptions);
    am.ambuildphasename = Some(build::ambuildphasename);
    am.amvalidate = Some(validate::amvalidate);
    am.ambeginscan = Some(scan::ambeginscan);
    am.amrescan = Some(scan::amrescan);
    am.amgettuple = Some(scan::amgettuple);
    am.amendscan = Some(scan::amendscan);
    pg_sys::Datum::from(am.into_pg())
});
