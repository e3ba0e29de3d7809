//! The merge lock: one merge of an index's insert buffer at a time.
//!
//! A heavyweight lock (`LockPage`) on a pseudo page of the index that no buffer ever holds.
//! Merge workers only try it (`ConditionalLockPage`); `omen_flush`, VACUUM, `omen_check` and
//! an insert past `omen.insert_buffer_cap` wait for it. It is never taken while a buffer
//! content lock is held, so it takes no part in the page lock order (`storage`).

use pgrx::pg_sys;

/// The pseudo block number whose page lock stands for "merging this index".
pub const MERGE_LOCK_BLOCK: u32 = u32::MAX - 1;

/// Takes the merge lock of `index`, waiting for it or not; returns whether it is held.
pub fn lock_merge(index: pg_sys::Relation, wait: bool) -> bool {
    let mode = pg_sys::ExclusiveLock as pg_sys::LOCKMODE;
    // SAFETY: a heavyweight lock on a pseudo page of an open relation; it is released by
    // `unlock_merge` or at the end of the transaction.
    unsafe {
        if wait {
            pg_sys::LockPage(index, MERGE_LOCK_BLOCK, mode);
            true
        } else {
            pg_sys::ConditionalLockPage(index, MERGE_LOCK_BLOCK, mode)
        }
    }
}

/// Releases the merge lock taken by `lock_merge`.
pub fn unlock_merge(index: pg_sys::Relation) {
    // SAFETY: the caller holds the lock (lock_merge returned true).
    unsafe { pg_sys::UnlockPage(index, MERGE_LOCK_BLOCK, pg_sys::ExclusiveLock as pg_sys::LOCKMODE) };
}
