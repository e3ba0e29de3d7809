//! The merge locks: who may merge an index's insert buffer, and on which part.
//!
//! Heavyweight locks (`LockPage`) on pseudo pages of the index that no buffer ever holds,
//! one per merge *slot*: slot `k` is block `MERGE_LOCK_BLOCK - k`, for `k` below
//! [`MAX_MERGE_SLOTS`]. A merge worker, or an insert past `omen.insert_buffer_cap`, takes
//! one slot without waiting (`ConditionalLockPage`) and merges that slot's part of the
//! merge segment (`am::merge`), so several merges run on one index side by side.
//! `omen_flush`, VACUUM, `omen_check` and an insert past twice the cap take every slot, in
//! slot order, waiting: they run alone. Nobody takes a slot while holding
//! another out of order, or while a buffer content lock is held, so the slots take no part
//! in the page lock order (`storage`) and cannot deadlock among themselves.
//!
//! Worker *tokens* bound how many merge workers merge one index at once: the pseudo pages
//! below the slots', token `k` block `MERGE_LOCK_BLOCK - MAX_MERGE_SLOTS - k`. A worker
//! takes one token without waiting before it takes a slot, for one transaction. There is one
//! part more than there are workers (`worker::merge_parts`), so an insert past the cap
//! finds a part no worker holds. Tokens are only ever tried, never waited for, so they
//! cannot deadlock with the slots either.

use pgrx::pg_sys;

/// The pseudo block number whose page lock stands for merge slot 0; slot `k` is this
/// minus `k`.
pub const MERGE_LOCK_BLOCK: u32 = u32::MAX - 1;
/// Merge slots per index: the most merge workers one index can have.
pub const MAX_MERGE_SLOTS: usize = 8;

fn slot_block(slot: usize) -> u32 {
    debug_assert!(slot < MAX_MERGE_SLOTS);
    MERGE_LOCK_BLOCK - slot as u32
}

const MODE: pg_sys::LOCKMODE = pg_sys::ExclusiveLock as pg_sys::LOCKMODE;

/// Takes merge slot `slot` of `index` without waiting; returns whether it is held.
pub fn try_lock_slot(index: pg_sys::Relation, slot: usize) -> bool {
    // SAFETY: a heavyweight lock on a pseudo page of an open relation; released by
    // `unlock_slot` or at the end of the transaction.
    unsafe { pg_sys::ConditionalLockPage(index, slot_block(slot), MODE) }
}

/// Releases merge slot `slot`, taken by `try_lock_slot`.
pub fn unlock_slot(index: pg_sys::Relation, slot: usize) {
    // SAFETY: the caller holds the lock.
    unsafe { pg_sys::UnlockPage(index, slot_block(slot), MODE) };
}

fn token_block(token: usize) -> u32 {
    debug_assert!(token < MAX_MERGE_SLOTS);
    MERGE_LOCK_BLOCK - (MAX_MERGE_SLOTS + token) as u32
}

/// Takes a free worker token below `tokens` of `index` without waiting; returns it, or
/// None when all are held (by other merge workers).
pub fn try_lock_worker_token(index: pg_sys::Relation, tokens: usize) -> Option<usize> {
    (0..tokens.min(MAX_MERGE_SLOTS)).find(|&token| {
        // SAFETY: as in `try_lock_slot`.
        unsafe { pg_sys::ConditionalLockPage(index, token_block(token), MODE) }
    })
}

/// Releases worker token `token`, taken by `try_lock_worker_token`.
pub fn unlock_worker_token(index: pg_sys::Relation, token: usize) {
    // SAFETY: the caller holds the lock.
    unsafe { pg_sys::UnlockPage(index, token_block(token), MODE) };
}

/// Whether a worker token below `tokens` other than `held` (the caller's own: the lock
/// manager grants a process a lock it holds again) is free now, taken and released at once.
pub fn worker_token_free(index: pg_sys::Relation, tokens: usize, held: Option<usize>) -> bool {
    (0..tokens.min(MAX_MERGE_SLOTS)).filter(|&token| Some(token) != held).any(|token| {
        // SAFETY: as in `try_lock_slot`.
        let free = unsafe { pg_sys::ConditionalLockPage(index, token_block(token), MODE) };
        if free {
            unlock_worker_token(index, token);
        }
        free
    })
}

/// Whether some slot below `slots` is free now (taken and released at once).
pub fn slot_free(index: pg_sys::Relation, slots: usize) -> bool {
    (0..slots.min(MAX_MERGE_SLOTS)).any(|slot| {
        let free = try_lock_slot(index, slot);
        if free {
            unlock_slot(index, slot);
        }
        free
    })
}

/// Takes every merge slot of `index`, in slot order, waiting for each: no merge runs until
/// `unlock_merge`.
pub fn lock_merge(index: pg_sys::Relation) {
    for slot in 0..MAX_MERGE_SLOTS {
        // SAFETY: as in `try_lock_slot`, waiting.
        unsafe { pg_sys::LockPage(index, slot_block(slot), MODE) };
    }
}

/// Takes every merge slot of `index` without waiting, or none; returns whether it did.
pub fn try_lock_merge(index: pg_sys::Relation) -> bool {
    for slot in 0..MAX_MERGE_SLOTS {
        if !try_lock_slot(index, slot) {
            for taken in (0..slot).rev() {
                unlock_slot(index, taken);
            }
            return false;
        }
    }
    true
}

/// Releases every slot taken by `lock_merge` or `try_lock_merge`.
pub fn unlock_merge(index: pg_sys::Relation) {
    for slot in (0..MAX_MERGE_SLOTS).rev() {
        unlock_slot(index, slot);
    }
}
