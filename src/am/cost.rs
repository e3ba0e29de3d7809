//! `amcostestimate`: cheap to start, expensive to finish.
//!
//! An ordered scan returns its first rows after one beam search (about
//! `omen.search_list_size` × degree node visits), so the startup cost is that fraction of
//! a full index read; the total cost is the full read. With `LIMIT k` the planner charges
//! little more than the startup cost; without a LIMIT it charges the whole index plus a
//! random heap fetch per row, and a sequential scan with a sort wins, as it should.
//! Without an ORDER BY on the index's operator the index is not usable at all.

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::options::SEARCH_LIST_SIZE;

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
    // SAFETY: the planner passes valid pointers for every output and a valid path.
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
        let visited = (SEARCH_LIST_SIZE.get() as f64) * 16.0;
        let ratio = (visited / tuples).min(1.0);
        *startup = costs.indexTotalCost * ratio;
        *total = costs.indexTotalCost;
        *selectivity = costs.indexSelectivity;
        *correlation = 0.0;
        *pages = costs.numIndexPages;
    }
}
