//! `amcostestimate`: what one search costs, then little per further row.
//!
//! An ordered scan does all of its work before the first row: a beam search that expands
//! about `1.5 × omen.search_list_size` nodes. Each expansion reads the node record with its
//! neighbours' codes and the node's vector record (one page when the vector is inline,
//! two otherwise; charged as two whatever the layout), estimates the
//! distance of each of its `max_neighbors` neighbours from their codes, and computes one
//! exact distance. That is the startup cost, independent of the table's size: so with
//! `LIMIT k` the index wins over a sequential scan and a sort from a few thousand rows on,
//! at any dimension, and a shard behind `postgres_fdw` answers from its index. The pages
//! are charged at `seq_page_cost`: a search touches a small, hot part of the index again
//! and again (the entry point's neighbourhood), not random pages of a cold one.
//!
//! The total cost is that plus a full read of the index (genericcostestimate over every
//! tuple), so without a LIMIT a sequential scan with a sort wins, as it should.
//! Without an ORDER BY on the index's operator the index is not usable at all.

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::options::SEARCH_LIST_SIZE;

/// The degree the cost model assumes (the default `max_neighbors`).
const ASSUMED_DEGREE: f64 = 32.0;

/// `amcostestimate`.
#[pg_guard]
pub unsafe extern "C-unwind" fn amcostestimate(
    root: *mut pg_sys::PlannerInfo,
    path: *mut pg_sys::IndexPath,
    loop_count: f64,
    startup: *mut pg_sys::Cost,
    total: *mut pg_sys::Cost,
    selectivity: *mut pg_sys::Selectivity,
    correlation: *mut f64,
    pages: *mut f64,
) {
    // SAFETY: the planner passes valid pointers for every output and a valid path; the
    // cost GUCs are plain globals of this backend.
    unsafe {
        if (*path).indexorderbys.is_null() {
            *startup = f64::MAX;
            *total = f64::MAX;
            *selectivity = 0.0;
            *correlation = 0.0;
            *pages = 0.0;
            return;
        }
        let mut costs = pg_sys::GenericCosts::default();
        pg_sys::genericcostestimate(root, path, loop_count, &mut costs);
        let tuples = (*(*path).indexinfo).tuples.max(1.0);
        let expansions = (1.5 * SEARCH_LIST_SIZE.get().max(1) as f64).min(tuples);
        let search = expansions
            * (2.0 * pg_sys::seq_page_cost
                + pg_sys::cpu_index_tuple_cost
                + (ASSUMED_DEGREE + 1.0) * pg_sys::cpu_operator_cost);
        *startup = search;
        *total = search + costs.indexTotalCost;
        *selectivity = costs.indexSelectivity;
        *correlation = 0.0;
        *pages = costs.numIndexPages;
    }
}
