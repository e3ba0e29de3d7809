//! `amvalidate`: an omen operator class has one ordering operator (strategy 1, returning
//! float8) and support function 1, one of omendb's four distance functions.

use pgrx::pg_sys;
use pgrx::prelude::*;

/// `amvalidate`.
#[pg_guard]
pub unsafe extern "C-unwind" fn amvalidate(opclass: pg_sys::Oid) -> bool {
    let oid = opclass.to_u32();
    let problems = Spi::get_one::<Vec<String>>(&format!(
        "SELECT array_remove(ARRAY[
             CASE WHEN EXISTS (SELECT 1 FROM pg_amop o WHERE o.amopfamily = c.opcfamily
                               AND (o.amoppurpose <> 'o' OR o.amopstrategy <> 1
                                    OR o.amopsortfamily = 0))
                  THEN 'operators must be ordering operators (FOR ORDER BY) of strategy 1' END,
             CASE WHEN NOT EXISTS (SELECT 1 FROM pg_amop o WHERE o.amopfamily = c.opcfamily)
                  THEN 'the operator class has no ordering operator' END,
             CASE WHEN NOT EXISTS (SELECT 1 FROM pg_amproc p JOIN pg_proc f ON f.oid = p.amproc
                                   WHERE p.amprocfamily = c.opcfamily AND p.amprocnum = 1
                                   AND f.proname IN ('omen_l2_distance', 'omen_negative_inner_product',
                                                     'omen_cosine_distance', 'omen_l1_distance'))
                  THEN 'support function 1 must be one of omendb''s distance functions' END
         ], NULL) FROM pg_opclass c WHERE c.oid = {oid}"
    ))
    .ok()
    .flatten()
    .unwrap_or_default();
    for p in &problems {
        pgrx::info!("omen operator class {oid}: {p}");
    }
    problems.is_empty()
}
