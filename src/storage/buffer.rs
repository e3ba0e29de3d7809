//! RAII buffer guards. See the lock protocol in the module overview (`storage`).
//!
//! During an ERROR PostgreSQL's abort processing releases buffer locks and pins and frees
//! GenericXLog state, so the guards do nothing when dropped while unwinding.

use pgrx::pg_sys;

use super::layout::{PAGE_MAGIC, PAGE_OPAQUE, PAGE_SIZE, PageKind, PageOpaque};

/// Pins `block` of `index`'s `fork` (InvalidBlockNumber: a new block) and locks it in `mode`
/// (BUFFER_LOCK_SHARE or BUFFER_LOCK_EXCLUSIVE).
pub fn pin_and_lock(index: pg_sys::Relation, fork: pg_sys::ForkNumber::Type, block: u32, mode: u32) -> pg_sys::Buffer {
    // SAFETY: `index` is an open relation; ReadBufferExtended raises an ERROR for a block past
    // the end instead of returning an invalid buffer, and LockBuffer locks the pinned buffer.
    unsafe {
        let buf =
            pg_sys::ReadBufferExtended(index, fork, block, pg_sys::ReadBufferMode::RBM_NORMAL, std::ptr::null_mut());
        pg_sys::LockBuffer(buf, mode as i32);
        buf
    }
}

/// Slots of [`RECENT`]: a direct-mapped table, 64K entries of 12 bytes per backend.
const RECENT_SLOTS: usize = 1 << 16;

std::thread_local! {
    /// The buffer each recently read block of an index was found in, by (relation file
    /// number, block), hashed into a fixed table: a hint for `ReadRecentBuffer`, which pins
    /// that buffer without the buffer-mapping lookup when it still holds the block and
    /// says false otherwise (a profile of the query loop had 16% in that lookup).
    static RECENT: std::cell::RefCell<Vec<(u32, u32, pg_sys::Buffer)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Number of blocks in the index's main fork.
pub fn block_count(index: pg_sys::Relation) -> u32 {
    // SAFETY: `index` is open.
    unsafe { pg_sys::RelationGetNumberOfBlocksInFork(index, pg_sys::ForkNumber::MAIN_FORKNUM) }
}

/// Pins `block` of `index`'s main fork: through this backend's hint of the buffer that
/// held it last ([`RECENT`]), else by `ReadBufferExtended`, which raises an ERROR for a
/// block past the end.
fn pin_recent(index: pg_sys::Relation, block: u32) -> pg_sys::Buffer {
    let Some((slot, file)) = recent_slot(index, block) else {
        return pin_only(index, block);
    };
    let (locator, _) = relation_file(index);
    if let Some(buf) = hint_at(slot, file, block) {
        // SAFETY: `buf` is a buffer id this backend was given for this block; ReadRecentBuffer
        // pins it only if it is still valid and tagged with exactly this block of this file.
        if unsafe { pg_sys::ReadRecentBuffer(locator, pg_sys::ForkNumber::MAIN_FORKNUM, block, buf) } {
            return buf;
        }
    }
    let buf = pin_only(index, block);
    RECENT.with_borrow_mut(|r| {
        if r.is_empty() {
            r.resize(RECENT_SLOTS, (0, 0, 0));
        }
        r[slot] = (file, block, buf);
    });
    buf
}

/// The shared buffer this backend last found `block` of `index` in ([`RECENT`]), without
/// pinning it: a hint, which may be stale by the time it is used. None for a temporary
/// index or a block not read lately.
pub fn recent_buffer(index: pg_sys::Relation, block: u32) -> Option<pg_sys::Buffer> {
    let (slot, file) = recent_slot(index, block)?;
    hint_at(slot, file, block)
}

/// The [`RECENT`] slot of `block` of `index`, and the index's file number; None for a
/// temporary index: local buffers get no hints (a temporary relation's file number may
/// equal a permanent one's, and the table does not tell local from shared buffers).
fn recent_slot(index: pg_sys::Relation, block: u32) -> Option<(usize, u32)> {
    // SAFETY: `index` is an open relation with its pg_class row.
    let temp = unsafe { (*(*index).rd_rel).relpersistence } == pg_sys::RELPERSISTENCE_TEMP as std::ffi::c_char;
    if temp {
        return None;
    }
    let (_, file) = relation_file(index);
    Some(((block.wrapping_mul(0x9e37_79b9) ^ file.wrapping_mul(0x85eb_ca6b)) as usize % RECENT_SLOTS, file))
}

/// The buffer [`RECENT`]'s `slot` names, when it was recorded for `block` of file `file`.
fn hint_at(slot: usize, file: u32, block: u32) -> Option<pg_sys::Buffer> {
    RECENT.with_borrow(|r| r.get(slot).copied()).filter(|&(f, b, _)| f == file && b == block).map(|(_, _, buf)| buf)
}

/// Asks the CPU to pull `len` bytes from `start` of shared buffer `buf`'s page into its
/// caches, a hint per 64-byte line. Nothing is pinned or read: if the buffer holds another
/// page by then, the hint is wasted, not wrong. A no-op for a buffer number outside the
/// shared pool, or on other architectures than x86-64.
pub fn prefetch_page_bytes(buf: pg_sys::Buffer, start: usize, len: usize) {
    // SAFETY: reads two integers PostgreSQL sets up before any backend runs.
    let (pool, buffers) = unsafe { (pg_sys::BufferBlocks, pg_sys::NBuffers) };
    if buf < 1 || buf > buffers || pool.is_null() {
        return;
    }
    let end = (start + len).min(PAGE_SIZE);
    #[cfg(target_arch = "x86_64")]
    for offset in (start..end).step_by(64) {
        let at = (buf as usize - 1) * PAGE_SIZE + offset;
        // SAFETY: `at` lies within the shared buffer pool (buffer 1..=NBuffers, offset
        // below a page), mapped for the life of the backend; a prefetch never faults and
        // reads nothing architecturally. SSE is part of the x86-64 baseline.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(pool.add(at).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = end;
}

/// Asks the CPU to pull shared buffer `buf`'s descriptor (which pinning the buffer
/// updates) into its caches. A hint, as [`prefetch_page_bytes`] is.
pub fn prefetch_descriptor(buf: pg_sys::Buffer) {
    // SAFETY: reads two integers PostgreSQL sets up before any backend runs.
    let (descriptors, buffers) = unsafe { (pg_sys::BufferDescriptors, pg_sys::NBuffers) };
    if buf < 1 || buf > buffers || descriptors.is_null() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: descriptor `buf - 1` of the NBuffers in shared memory, mapped for the life of
    // the backend; a prefetch never faults and reads nothing architecturally.
    unsafe {
        let at = descriptors.add(buf as usize - 1);
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
}

/// The locator of `index`'s file (`rd_locator`; `rd_node` before PostgreSQL 16) and its
/// file number, which a REINDEX or TRUNCATE changes.
#[cfg(not(feature = "pg15"))]
pub fn relation_file(index: pg_sys::Relation) -> (pg_sys::RelFileLocator, u32) {
    // SAFETY: `index` is an open relation; rd_locator names its file.
    let locator = unsafe { (*index).rd_locator };
    (locator, u32::from(locator.relNumber))
}

/// See the other configuration's `relation_file`.
#[cfg(feature = "pg15")]
pub fn relation_file(index: pg_sys::Relation) -> (pg_sys::RelFileNode, u32) {
    // SAFETY: `index` is an open relation; rd_node names its file.
    let locator = unsafe { (*index).rd_node };
    (locator, u32::from(locator.relNode))
}

/// Pins `block` of `index`'s main fork, without a lock.
fn pin_only(index: pg_sys::Relation, block: u32) -> pg_sys::Buffer {
    // SAFETY: as in pin_and_lock.
    unsafe {
        pg_sys::ReadBufferExtended(
            index,
            pg_sys::ForkNumber::MAIN_FORKNUM,
            block,
            pg_sys::ReadBufferMode::RBM_NORMAL,
            std::ptr::null_mut(),
        )
    }
}

/// A pinned, share-locked page.
pub struct ReadGuard {
    buf: pg_sys::Buffer,
}

impl ReadGuard {
    /// Pins and share-locks `block` of `index`, through [`pin_recent`].
    pub fn new(index: pg_sys::Relation, block: u32) -> ReadGuard {
        let buf = pin_recent(index, block);
        // SAFETY: `buf` is pinned by pin_recent.
        unsafe { pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_SHARE as i32) };
        ReadGuard { buf }
    }

    /// The locked page.
    pub fn page(&self) -> *const u8 {
        // SAFETY: the buffer is pinned and locked for as long as `self` lives.
        unsafe { pg_sys::BufferGetPage(self.buf) as *const u8 }
    }
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: we hold the pin and the share lock taken in `new`.
            unsafe { pg_sys::UnlockReleaseBuffer(self.buf) };
        }
    }
}

/// A page just added to the index, exclusively locked and in no WAL record yet: nobody else
/// can reach it until a record that links it commits ([`WriteGuard::also_fresh`]). Taken
/// before the lock of the page that will link it, so that the extension, which can wait for
/// the relation extension lock, happens with no other page of the index locked. Dropped
/// unused, it stays an all-zero page that nothing links (like a page extended just before
/// a crash).
pub struct FreshPage {
    buf: pg_sys::Buffer,
}

impl FreshPage {
    /// Appends a new page to `index` (under the relation extension lock).
    pub fn new(index: pg_sys::Relation) -> FreshPage {
        FreshPage { buf: new_block(index) }
    }

    /// Appends up to `count` new pages to `index` at once: one file extension under one
    /// hold of the relation extension lock, where single pages would take `count` of each
    /// (on PostgreSQL 15, which has no bulk extension, one page). At least one.
    #[cfg(not(feature = "pg15"))]
    pub fn several(index: pg_sys::Relation, count: usize) -> Vec<FreshPage> {
        let mut bufs = vec![pg_sys::InvalidBuffer as pg_sys::Buffer; count.max(1)];
        let mut added = 0u32;
        let bmr = pg_sys::BufferManagerRelation { rel: index, smgr: std::ptr::null_mut(), relpersistence: 0 };
        // SAFETY: `index` is open and `bufs` has room for `count` buffers; the new pages come
        // back pinned and zeroed. Nothing links them, so nobody writes them before we lock them;
        // a reader that looks at one meanwhile (a walk over all blocks) sees an empty page.
        unsafe {
            pg_sys::ExtendBufferedRelBy(
                bmr,
                pg_sys::ForkNumber::MAIN_FORKNUM,
                std::ptr::null_mut(),
                0,
                bufs.len() as u32,
                bufs.as_mut_ptr(),
                &mut added,
            );
        }
        bufs.truncate(added as usize);
        bufs.into_iter()
            .map(|buf| {
                // SAFETY: pinned above; see above for why no one else writes it.
                unsafe { pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32) };
                FreshPage { buf }
            })
            .collect()
    }

    /// See the other configuration's `several`.
    #[cfg(feature = "pg15")]
    pub fn several(index: pg_sys::Relation, _count: usize) -> Vec<FreshPage> {
        vec![FreshPage::new(index)]
    }
}

impl FreshPage {
    /// The page's buffer, for a WAL record that takes over its pin and lock.
    fn into_buffer(self) -> pg_sys::Buffer {
        let buf = self.buf;
        std::mem::forget(self); // the record's guard releases it now
        buf
    }
}

impl Drop for FreshPage {
    fn drop(&mut self) {
        // On an error, PostgreSQL's abort releases the lock and the pin.
        if !std::thread::panicking() {
            // SAFETY: we hold the pin and the exclusive lock taken in `new_block`.
            unsafe { pg_sys::UnlockReleaseBuffer(self.buf) };
        }
    }
}

std::thread_local! {
    /// The file number of the index this backend is building past `maintenance_work_mem`
    /// ([`UnloggedBuild`]), and the building transaction: its page changes are not
    /// WAL-logged one by one. The transaction id makes sure a marker that an error path
    /// failed to clear can never apply to a later transaction's writes.
    static UNLOGGED_BUILD: std::cell::Cell<Option<(u32, pg_sys::TransactionId)>> = const { std::cell::Cell::new(None) };
}

/// While alive, [`WriteGuard`]s on `index` change its pages without WAL records: for the
/// rows a CREATE INDEX inserts one by one past `maintenance_work_mem`, whose pages it then
/// logs at once with `log_newpage_range`, as it does for the pages it writes directly. Safe
/// because nobody else reads or writes a relation being built (a crash before the build
/// commits leaves its file to be dropped; after CREATE INDEX CONCURRENTLY it is left
/// invalid), and a standby gets every page from the final full images. On a build of
/// 200,000 rows of 384 dimensions at `maintenance_work_mem` = 64 MB, per-change records
/// wrote 5.9 GB of WAL.
pub struct UnloggedBuild;

impl UnloggedBuild {
    pub fn start(index: pg_sys::Relation) -> UnloggedBuild {
        UNLOGGED_BUILD.set(Some((relation_file(index).1, top_transaction())));
        UnloggedBuild
    }
}

impl Drop for UnloggedBuild {
    fn drop(&mut self) {
        UNLOGGED_BUILD.set(None);
    }
}

/// Whether changes to `index` skip WAL ([`UnloggedBuild`]).
fn unlogged_build(index: pg_sys::Relation) -> bool {
    UNLOGGED_BUILD.get().is_some_and(|(file, xid)| file == relation_file(index).1 && xid == top_transaction())
}

/// This backend's top-level transaction id (CREATE INDEX has one: it writes the catalogs).
fn top_transaction() -> pg_sys::TransactionId {
    // SAFETY: reads this backend's transaction state; assigns nothing.
    unsafe { pg_sys::GetTopTransactionIdIfAny() }
}

/// An exclusively locked page registered with GenericXLog: edit `page()`, then `commit()`
/// to WAL-log the change; dropping without commit discards it (GenericXLogAbort).
///
/// Up to three more pages can join the same record ([`WriteGuard::also`],
/// [`WriteGuard::also_extend`]), so that changes to several pages are logged and replayed
/// atomically; callers take those locks in the order the lock protocol allows.
///
/// During an [`UnloggedBuild`] of the index there is no record: the guard keeps working
/// copies of its pages itself, writes them back on commit and discards them otherwise, as
/// GenericXLog would, without the WAL.
pub struct WriteGuard {
    buf: pg_sys::Buffer,
    /// Null during an unlogged build.
    state: *mut pg_sys::GenericXLogState,
    page: *mut u8,
    extra: Vec<pg_sys::Buffer>,
    /// During an unlogged build: the working copies of `buf`, then of `extra`, in order.
    copies: Vec<Box<[u64]>>,
    done: bool,
}

impl WriteGuard {
    /// Pins and exclusively locks `block` of `index` and starts a GenericXLog record for it.
    pub fn new(index: pg_sys::Relation, block: u32) -> WriteGuard {
        let buf = pin_and_lock(index, pg_sys::ForkNumber::MAIN_FORKNUM, block, pg_sys::BUFFER_LOCK_EXCLUSIVE);
        Self::register(index, buf, false)
    }

    /// Appends a new, exclusively locked page to `index` (under the relation extension
    /// lock) and starts a GenericXLog record that logs it as a full image.
    pub fn extend(index: pg_sys::Relation) -> WriteGuard {
        Self::fresh(index, FreshPage::new(index))
    }

    /// Starts a GenericXLog record for `fresh`, a page just added to `index`, that logs it
    /// as a full image.
    pub fn fresh(index: pg_sys::Relation, fresh: FreshPage) -> WriteGuard {
        Self::register(index, fresh.into_buffer(), true)
    }

    fn register(index: pg_sys::Relation, buf: pg_sys::Buffer, full_image: bool) -> WriteGuard {
        let state = if unlogged_build(index) {
            std::ptr::null_mut()
        } else {
            // SAFETY: GenericXLogStart allocates a record for this open index.
            unsafe { pg_sys::GenericXLogStart(index) }
        };
        let mut guard =
            WriteGuard { buf, state, page: std::ptr::null_mut(), extra: Vec::new(), copies: Vec::new(), done: false };
        guard.page = guard.working_copy(buf, full_image);
        guard
    }

    /// Registers `buf` (pinned, exclusively locked) with this record; returns its working
    /// copy, written back (and logged) on commit.
    fn working_copy(&mut self, buf: pg_sys::Buffer, full_image: bool) -> *mut u8 {
        if self.state.is_null() {
            // SAFETY: `buf` is pinned and exclusively locked; its page is PAGE_SIZE bytes.
            let page = unsafe { std::slice::from_raw_parts(pg_sys::BufferGetPage(buf) as *const u64, PAGE_SIZE / 8) };
            self.copies.push(page.into());
            return self.copies.last_mut().expect("just pushed").as_mut_ptr().cast();
        }
        let flags = if full_image { pg_sys::GENERIC_XLOG_FULL_IMAGE as i32 } else { 0 };
        // SAFETY: `state` is an open record with room for this page (callers register at most
        // MAX_GENERIC_XLOG_PAGES = 4), `buf` is pinned and exclusively locked.
        unsafe { pg_sys::GenericXLogRegisterBuffer(self.state, buf, flags) as *mut u8 }
    }

    /// Adds `block` (exclusively locked now) to this record; returns its working copy.
    pub fn also(&mut self, index: pg_sys::Relation, block: u32) -> *mut u8 {
        let buf = pin_and_lock(index, pg_sys::ForkNumber::MAIN_FORKNUM, block, pg_sys::BUFFER_LOCK_EXCLUSIVE);
        self.extra.push(buf);
        self.working_copy(buf, false)
    }

    /// Adds a new page of `index` to this record (logged as a full image); returns its block
    /// number and working copy.
    pub fn also_extend(&mut self, index: pg_sys::Relation) -> (u32, *mut u8) {
        self.also_fresh(FreshPage::new(index))
    }

    /// Adds `fresh` to this record (logged as a full image); returns its block number and
    /// working copy.
    pub fn also_fresh(&mut self, fresh: FreshPage) -> (u32, *mut u8) {
        let buf = fresh.into_buffer();
        self.extra.push(buf);
        // SAFETY: the buffer is pinned.
        let block = unsafe { pg_sys::BufferGetBlockNumber(buf) };
        (block, self.working_copy(buf, true))
    }

    /// The block number of the page.
    pub fn block(&self) -> u32 {
        // SAFETY: the buffer is pinned.
        unsafe { pg_sys::BufferGetBlockNumber(self.buf) }
    }

    /// The working copy of the page.
    pub fn page(&self) -> *mut u8 {
        self.page
    }

    /// WAL-logs the change and releases the pages.
    pub fn commit(mut self) {
        self.done = true;
        let buffers = std::iter::once(self.buf).chain(self.extra.iter().copied());
        if self.state.is_null() {
            for (b, copy) in buffers.clone().zip(&self.copies) {
                // SAFETY: `b` is pinned and exclusively locked since `working_copy`; the copy
                // is a whole page.
                unsafe {
                    std::ptr::copy_nonoverlapping(copy.as_ptr(), pg_sys::BufferGetPage(b).cast::<u64>(), PAGE_SIZE / 8);
                    pg_sys::MarkBufferDirty(b);
                }
            }
        } else {
            // SAFETY: the record holds every buffer registered since `register`.
            unsafe { pg_sys::GenericXLogFinish(self.state) };
        }
        for b in buffers {
            // SAFETY: pinned and locked by `register`/`also`, released once here.
            unsafe { pg_sys::UnlockReleaseBuffer(b) };
        }
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        if !self.done && !std::thread::panicking() {
            // SAFETY: nothing was committed; GenericXLogAbort discards the working copies
            // (an unlogged build's own copies are dropped with the guard).
            unsafe {
                if !self.state.is_null() {
                    pg_sys::GenericXLogAbort(self.state);
                }
                pg_sys::UnlockReleaseBuffer(self.buf);
                for &b in &self.extra {
                    pg_sys::UnlockReleaseBuffer(b);
                }
            }
        }
    }
}

/// Appends a new block to `index` and returns it pinned and exclusively locked.
fn new_block(index: pg_sys::Relation) -> pg_sys::Buffer {
    // SAFETY: the relation extension lock serializes extenders of this index for the
    // moment the block is added; RBM_ZERO_AND_LOCK returns the new block already locked,
    // so no other backend can see it before it is initialized.
    unsafe {
        pg_sys::LockRelationForExtension(index, pg_sys::ExclusiveLock as i32);
        let buf = pg_sys::ReadBufferExtended(
            index,
            pg_sys::ForkNumber::MAIN_FORKNUM,
            pg_sys::InvalidBlockNumber,
            pg_sys::ReadBufferMode::RBM_ZERO_AND_LOCK,
            std::ptr::null_mut(),
        );
        pg_sys::UnlockRelationForExtension(index, pg_sys::ExclusiveLock as i32);
        buf
    }
}

/// Initializes `page` (PAGE_SIZE bytes) as an empty page of `kind`.
pub fn init_page(page: *mut u8, kind: PageKind) {
    // SAFETY: callers pass a page-sized, MAXALIGN'd buffer (a registered working copy or
    // a build page); PageInit reserves the special area, which we then fill.
    unsafe {
        pg_sys::PageInit(page.cast(), PAGE_SIZE, PAGE_OPAQUE);
        let opaque = PageOpaque { kind: kind as u16, magic: PAGE_MAGIC, reserved: 0 };
        std::ptr::write_unaligned(page.add(PAGE_SIZE - PAGE_OPAQUE).cast::<PageOpaque>(), opaque);
    }
}

/// The page's header.
pub fn page_header<'a>(page: *const u8) -> &'a pg_sys::PageHeaderData {
    // SAFETY: every page (of a locked buffer, or a build image) starts with a
    // PageHeaderData, MAXALIGN'd; callers hold the page for as long as they use the result.
    unsafe { &*page.cast::<pg_sys::PageHeaderData>() }
}

/// The kind of `page`, from its special area; None for an insert-buffer page or a page
/// never initialized.
pub fn page_kind(page: *const u8) -> Option<PageKind> {
    let header = page_header(page);
    if header.pd_special as usize != PAGE_SIZE - PAGE_OPAQUE {
        return None;
    }
    // SAFETY: the special area is the last PAGE_OPAQUE bytes of the page.
    let opaque = unsafe { std::ptr::read_unaligned(page.add(PAGE_SIZE - PAGE_OPAQUE).cast::<PageOpaque>()) };
    if opaque.magic != PAGE_MAGIC {
        return None;
    }
    [PageKind::Meta, PageKind::Centroid, PageKind::Node, PageKind::Vector]
        .into_iter()
        .find(|k| *k as u16 == opaque.kind)
}

/// Number of line pointers on `page`.
pub fn item_count(page: *const u8) -> usize {
    let lower = page_header(page).pd_lower as usize;
    lower.saturating_sub(std::mem::offset_of!(pg_sys::PageHeaderData, pd_linp))
        / std::mem::size_of::<pg_sys::ItemIdData>()
}

/// A pointer to the item at line pointer `offset` (1-based) of `page`.
///
/// # Safety
/// `page` must be a locked page whose line pointer `offset` exists.
pub unsafe fn item(page: *const u8, offset: u16) -> *mut u8 {
    // SAFETY: the caller guarantees the line pointer exists; PageGetItemId's arithmetic.
    unsafe {
        let header = &*page.cast::<pg_sys::PageHeaderData>();
        let id = header.pd_linp.as_ptr().add(offset as usize - 1);
        page.add((*id).lp_off() as usize) as *mut u8
    }
}
