//! Pages and buffers of an omen index.
//!
//! - [`layout`]: what lives where: the metapage (block 0) and fixed-size node records on
//!   standard pages, addressed by a `NodeId` = block << 8 | (offset - 1).
//! - [`buffer`]: RAII guards around ReadBuffer/LockBuffer and GenericXLog. A read guard holds
//!   a pin and a share lock; a write guard holds an exclusive lock and a GenericXLog state
//!   and WAL-logs its page on `commit`, or aborts on drop (during a CREATE INDEX past
//!   `maintenance_work_mem`, `UnloggedBuild`: no record, the build logs every page at its end).
//! - [`page_store`]: the PostgreSQL implementation of `omen_core::graph::GraphStore`.
//! - [`spare_pages`]: node pages a backend added ahead of need, several with one extension.
//! - [`insert_buffer`]: pages where inserts append entries for a background merge; its
//!   module overview has the segment scheme and its own lock rules.
//! - [`buffer_codes`]: a backend's copy of the buffered entries' codes, for scans.
//!
//! # Lock protocol
//!
//! A backend holds at most one buffer content lock of this index at a time, except while
//! extending the relation (the relation extension lock, then the new pages, up to 16 added
//! at once, which nothing links until a WAL record initializes them), when the
//! metapage is updated after a node page, and in the insert buffer's documented pairs
//! (metapage, then a buffer page; node page, then a buffer page). Nobody waits for the
//! metapage or a node page while holding a buffer page, nor for a node page while holding
//! the metapage. Every read or write of a
//! node takes the lock of its page, copies or edits the record, and releases it before the
//! next page is touched. So there is no lock cycle, and no lock that serializes all writers:
//! concurrent inserts only meet on the page they write. The price is that a neighbour list
//! may change between being read and being rewritten by a back-edge prune; the write then
//! carries the newer of the two lists, a lost edge at worst, never a dangling one (edges point
//! only at slots that exist, and deleted slots are skipped when read).

pub mod buffer;
pub mod buffer_codes;
pub mod insert_buffer;
pub mod layout;
pub mod merge_lock;
pub mod page_store;
pub mod spare_pages;
