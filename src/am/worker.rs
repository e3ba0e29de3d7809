//! The background merge worker.
//!
//! An insert that finds the insert buffer past `buffer_threshold` (or a merge segment left
//! waiting) starts a dynamic background worker for that index, unless a merge is running
//! already (every worker token or every merge slot is taken). Dynamic registration needs no
//! `shared_preload_libraries`; with omendb preloaded the insert asks the one launcher
//! (`launcher`) instead, which starts the workers for every database. Up to
//! `omen.max_merge_workers` workers merge one index at once, each holding a worker token
//! (`storage::merge_lock`; by default one fewer than the cores, so that queries and
//! inserts keep one, and while no row is being inserted every core, at most two: a worker
//! that sees the index quiet starts a helper). A worker connects to the index's database
//! and merges in short transactions of [`WORKER_BUDGET`] entries, in each taking a token
//! and the first merge slot it gets, without waiting, and merging that slot's part of the
//! buffer (`merge::Part`), until no part has anything left. Between transactions it holds no lock, so
//! DROP INDEX, REINDEX, TRUNCATE or ALTER wait at most for one such transaction (the last
//! one, which repairs reachability once the buffer is empty, traverses the graph); when the
//! index is gone (or no longer an omen index) the worker exits. SIGTERM (shutdown,
//! `pg_terminate_backend`) stops it between transactions; an interrupted merge resumes from
//! its entries' states.
//!
//! When no worker can be started (`max_worker_processes` exhausted) the buffer waits for
//! VACUUM or `omen_flush`, and an insert past the hard cap merges a batch itself.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CString;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;

use super::merge::{
    MergeCursor, merge_in_free_slot, repair_reachability, sleep_while_cores_busy, yield_between_entries,
};
use super::options::{AUTO_MAX_MERGE_WORKERS, MAX_MERGE_WORKERS, MERGE_WORKER_NICE};
use crate::storage::layout::NO_BLOCK;
use crate::storage::merge_lock::{
    MAX_MERGE_SLOTS, slot_free, try_lock_merge, try_lock_worker_token, unlock_merge, unlock_worker_token,
    worker_token_free,
};
use crate::storage::page_store::{index_name, read_meta};

/// Entries a worker merges per transaction.
pub const WORKER_BUDGET: usize = 256;

/// A backend starts at most one worker per index in this interval: a worker that was just
/// started does not hold the merge lock yet, and without the pause every page an insert
/// fills meanwhile would start another (they would find the lock taken and exit).
const RELAUNCH_PAUSE: Duration = Duration::from_secs(1);

thread_local! {
    /// Whether this backend already logged that it could not start a worker.
    static LAUNCH_FAILURE_LOGGED: Cell<bool> = const { Cell::new(false) };
    /// When this process last started a worker (or failed to), per index OID: a backend's
    /// inserts, or a worker's helper (`launch_throttled`).
    static LAST_LAUNCH: RefCell<HashMap<u32, Instant>> = RefCell::new(HashMap::new());
}

/// Starts a merge worker for `index` unless a merge is running. Never waits.
pub fn request_merge(index: pg_sys::Relation) {
    let launched = launch_throttled(index, merge_workers(), None);
    if matches!(launched, Some(Launch::Failed)) && !LAUNCH_FAILURE_LOGGED.replace(true) {
        pgrx::log!(
            "omen index \"{}\": could not start a merge worker (max_worker_processes is exhausted); \
             VACUUM or omen_flush() will merge its insert buffer",
            index_name(index)
        );
    }
}

/// [`launch_below`], unless this process started a worker for `index` (or failed to) less
/// than [`RELAUNCH_PAUSE`] ago: None then. The worker it started goes on until the buffer is
/// empty.
fn launch_throttled(index: pg_sys::Relation, tokens: usize, held: Option<usize>) -> Option<Launch> {
    // SAFETY: an open relation's rd_id.
    let oid = unsafe { (*index).rd_id }.to_u32();
    if LAST_LAUNCH.with_borrow(|l| l.get(&oid).is_some_and(|t| t.elapsed() < RELAUNCH_PAUSE)) {
        return None;
    }
    let launched = launch_below(index, tokens, held);
    if !matches!(launched, Launch::Running) {
        // Started or failed: either way, not again from this process for a moment.
        LAST_LAUNCH.with_borrow_mut(|l| l.insert(oid, Instant::now()));
    }
    Some(launched)
}

/// For autovacuum: whether a merge worker takes care of the buffer of `index` (it is empty,
/// a merge is running, or a worker was just started or requested). False when none could
/// be started: the caller should merge.
pub fn ensure_worker(index: pg_sys::Relation) -> bool {
    let meta = read_meta(index);
    let empty = meta.buffer_tail == NO_BLOCK && meta.merge_tail == NO_BLOCK;
    empty || !matches!(launch(index), Launch::Failed)
}

/// What [`launch`] did.
enum Launch {
    /// Every worker token or every merge slot is taken; nothing was started.
    Running,
    /// A worker was registered, or requested from the launcher.
    Started,
    /// No worker could be registered.
    Failed,
}

/// Merge workers one index may have at once: `omen.max_merge_workers`, or for -1 the
/// cores this process may run on (its CPU affinity and cgroup quota) less one, so that merge
/// workers never take every core from the backends serving queries and inserts, at least 1
/// and at most [`AUTO_MAX_MERGE_WORKERS`]. Every process of the server computes the same
/// value (children inherit the postmaster's affinity and cgroup).
pub fn merge_workers() -> usize {
    match MAX_MERGE_WORKERS.get() {
        -1 => cores().saturating_sub(1).clamp(1, AUTO_MAX_MERGE_WORKERS),
        n => n.clamp(1, MAX_MERGE_SLOTS as i32) as usize,
    }
}

/// Merge workers one index may have at once while no row is being inserted into it (see
/// [`AppendWatch`]): for `omen.max_merge_workers = -1` every core (at most
/// [`AUTO_MAX_MERGE_WORKERS`]), since no backend is waiting for one, so the buffer left at
/// the end of a load empties sooner; otherwise [`merge_workers`].
pub fn quiet_merge_workers() -> usize {
    match MAX_MERGE_WORKERS.get() {
        -1 => cores().clamp(1, AUTO_MAX_MERGE_WORKERS),
        _ => merge_workers(),
    }
}

/// The cores this process may run on (its CPU affinity and cgroup quota).
fn cores() -> usize {
    // available_parallelism reads the cgroup's files: once per process.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The merge slots (and parts of the merge segment) an index's merges use now: one more
/// than [`merge_workers`] (at most `MAX_MERGE_SLOTS`), so that an insert past
/// `omen.insert_buffer_cap` finds a part no worker holds and merges a batch there (with as
/// many parts as workers it found none, and the buffer grew to twice the cap). A worker
/// that finishes its part goes on with any part still free, the spare one included.
pub fn merge_parts() -> usize {
    (merge_workers() + 1).min(MAX_MERGE_SLOTS)
}

/// Starts a merge worker for `index` (through the launcher when omendb is preloaded)
/// unless every worker token is taken, or every merge slot (a VACUUM, `omen_flush` or
/// `omen_check` holds them all, or the merges in them leave no part free). Never waits.
fn launch(index: pg_sys::Relation) -> Launch {
    launch_below(index, merge_workers(), None)
}

/// [`launch`], with `tokens` worker tokens; for a helper, `held` is the token of the worker
/// that starts it, and the helper is started directly (not through the launcher, whose
/// requests name only the index).
fn launch_below(index: pg_sys::Relation, tokens: usize, held: Option<usize>) -> Launch {
    if !worker_token_free(index, tokens, held) || !slot_free(index, merge_parts()) {
        return Launch::Running;
    }
    let helper = held.is_some();
    // SAFETY: an open relation's rd_id, and this backend's database.
    let (oid, db) = unsafe { ((*index).rd_id, pg_sys::MyDatabaseId) };
    let requested = !helper && super::launcher::request(db, oid);
    if requested || super::launcher::start_worker(db, oid, &index_name(index), helper) {
        Launch::Started
    } else {
        Launch::Failed
    }
}

/// The worker's entry point (`bgw_function_name`): merges the insert buffer of the index
/// whose OID is `arg`, in the database whose OID is `bgw_extra`.
#[pgrx::pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn omen_merge_worker_main(arg: pg_sys::Datum) {
    let index_oid = pg_sys::Oid::from(arg.value() as u32);
    let extra = BackgroundWorker::get_extra();
    let mut words = extra.split_whitespace();
    let db = pg_sys::Oid::from(words.next().and_then(|w| w.parse::<u32>().ok()).unwrap_or(0));
    let helper = words.next() == Some(super::launcher::HELPER);
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), None);
    yield_to_backends();
    yield_between_entries(true);
    let mut state = WorkerState {
        cursors: (0..MAX_MERGE_SLOTS).map(|_| None).collect(),
        named: false,
        merged_any: false,
        appends: AppendWatch::new(helper),
    };
    let mut waits = 0;
    while !BackgroundWorker::sigterm_received() {
        let step = std::panic::AssertUnwindSafe(|| merge_step(index_oid, &mut state));
        match BackgroundWorker::transaction(step) {
            Step::Merged => waits = 0,
            Step::Busy if waits < MAX_BUSY_WAITS => {
                waits += 1;
                if !BackgroundWorker::wait_latch(Some(BUSY_WAIT)) {
                    break; // the postmaster died
                }
            }
            Step::Busy | Step::Done => break,
        }
    }
}

/// Lowers this worker's scheduling priority to `omen.merge_worker_nice` (unless the server
/// already runs at that nice value or above). A merge is work that can wait: when the cores
/// are busy, the backends serving queries and inserts should run first. Nothing is held, so
/// a worker that is starved only merges later (the insert buffer's cap bounds how far it
/// can fall behind). The merge also yields between entries (`merge::yield_between_entries`).
fn yield_to_backends() {
    let nice = MERGE_WORKER_NICE.get().clamp(0, 19);
    // The autogroup's nice value is its own (a server at nice 10 still has its sessions'
    // at 0), so it is raised whatever the process's is.
    lower_autogroup(nice);
    // SAFETY: getpriority of this process (who = 0) only reads it.
    let current = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if nice <= current {
        return; // the server runs at this nice value or above already: never lower it
    }
    // SAFETY: setpriority on this process (who = 0) only changes its scheduling priority;
    // raising the nice value needs no privilege. A failure leaves the priority as it was.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc != 0 {
        pgrx::log!("omen merge worker: could not set nice {nice}: {}", std::io::Error::last_os_error());
    }
}

/// Linux's autogroup scheduling (`kernel.sched_autogroup_enabled`, on by default in many
/// distributions) shares the cores between sessions first, and every PostgreSQL child
/// process starts a session of its own (`setsid` in `InitPostmasterChild`). A process's
/// nice value then only weighs against the processes of its own session: this worker
/// alone. The session's own nice value, `/proc/self/autogroup`, weighs it against the
/// backends' sessions, so the worker sets that one too (only ever raising it). Without
/// the file (no autogroup in the kernel) there is nothing to do.
fn lower_autogroup(nice: i32) {
    const AUTOGROUP: &str = "/proc/self/autogroup";
    let Ok(text) = std::fs::read_to_string(AUTOGROUP) else {
        return;
    };
    // The file reads "/autogroup-<id> nice <n>".
    let current = text.split_whitespace().last().and_then(|n| n.parse::<i32>().ok());
    if current.is_some_and(|c| c >= nice) {
        return;
    }
    if let Err(e) = std::fs::write(AUTOGROUP, nice.to_string()) {
        pgrx::log!("omen merge worker: could not set its autogroup's nice {nice}: {e}");
    }
}

/// What a merge worker keeps from one transaction to the next.
struct WorkerState {
    /// One per merge slot.
    cursors: Vec<Option<MergeCursor>>,
    /// Whether `pg_stat_activity` shows the index's name yet.
    named: bool,
    /// Whether this worker merged entries since it last repaired reachability.
    merged_any: bool,
    appends: AppendWatch,
}

/// Whether rows are being inserted into the index: the append segment's position in the
/// metapage (its segment, last page and page count), which an insert changes every time it
/// fills a buffer page (and a seal empties). A worker takes the index as quiet once it saw the position stay
/// for [`QUIET_AFTER`]; a helper (started by a worker that saw that) from the start, until
/// it sees the position move.
struct AppendWatch {
    last: Option<(u32, u32, u32)>,
    moved: Instant,
}

/// No buffer page filled for this long: no row is being inserted, and the index may have
/// [`quiet_merge_workers`] workers.
const QUIET_AFTER: Duration = Duration::from_secs(1);

impl AppendWatch {
    fn new(helper: bool) -> AppendWatch {
        let now = Instant::now();
        AppendWatch { last: None, moved: if helper { now.checked_sub(QUIET_AFTER).unwrap_or(now) } else { now } }
    }

    /// Looks at the metapage `meta`; returns whether the index is quiet.
    fn quiet(&mut self, meta: &crate::storage::layout::Meta) -> bool {
        let now = (meta.buffer_segment, meta.buffer_tail, meta.buffer_pages);
        // A merge that seals the append segment empties it (no pages): no row arrived.
        if now.2 > 0 && self.last.is_some_and(|last| last != now) {
            self.moved = Instant::now();
        }
        self.last = Some(now);
        self.moved.elapsed() >= QUIET_AFTER
    }
}

/// A worker starts a helper for a quiet index only while this many buffer pages or more
/// are left to merge (fewer take less than a helper's start).
const HELPER_MIN_PAGES: u32 = 16;

/// What one transaction of a merge worker did.
enum Step {
    /// Merged entries: go on.
    Merged,
    /// Found nothing to merge in the free slots, but a slot was taken (another merge runs,
    /// or a VACUUM or `omen_flush` waits for every slot), or every worker token was taken:
    /// look again shortly, since what that slot's part holds may be left to this worker.
    Busy,
    /// Nothing left (reachability repaired if this worker merged), or the index is gone.
    Done,
}

/// A worker that finds only taken slots looks again after this pause, at most
/// [`MAX_BUSY_WAITS`] times in a row (a second) before it exits: a slot's holder is a
/// worker that goes on until nothing is left, or a VACUUM or `omen_flush` that merges
/// everything. (With a minute, the workers an insert stream starts, one a second, piled
/// up: 7 for an index with 2 slots in the million-row stream.)
const BUSY_WAIT: Duration = Duration::from_millis(100);
const MAX_BUSY_WAITS: u32 = 10;

/// One transaction of merging: the part of the first free merge slot that has entries
/// left. Slots are only ever tried, never waited for, so workers never queue behind one
/// another (a waiter would make the others' tries fail). When no slot is taken and nothing
/// is left, a worker that merged something takes every slot (without waiting) and repairs
/// reachability (`merge::repair_reachability`: one traversal of the graph per drained
/// buffer) before it exits.
fn merge_step(index_oid: pg_sys::Oid, state: &mut WorkerState) -> Step {
    let lockmode = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
    // SAFETY: try_relation_open returns NULL when the relation no longer exists.
    let index = unsafe { pg_sys::try_relation_open(index_oid, lockmode) };
    if index.is_null() {
        return Step::Done;
    }
    // SAFETY: an open relation's rd_rel; get_am_name returns a palloc'd name or NULL.
    let is_omen = unsafe {
        let rel = &*(*index).rd_rel;
        let am = pg_sys::get_am_name(rel.relam);
        rel.relkind == pg_sys::RELKIND_INDEX as std::ffi::c_char
            && !am.is_null()
            && std::ffi::CStr::from_ptr(am) == c"omen"
    };
    let mut step = Step::Done;
    if is_omen {
        if !state.named {
            state.named = true;
            let name = CString::new(format!("omen merge: {}", index_name(index))).unwrap_or_default();
            let activity =
                CString::new(format!("merging the insert buffer of index {}", index_name(index))).unwrap_or_default();
            // SAFETY: both strings are copied by the callees.
            unsafe {
                pg_sys::pgstat_report_appname(name.as_ptr());
                pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, activity.as_ptr());
            }
        }
        // A worker token first: at most `merge_workers` workers merge at once (more while
        // the index is quiet), over one part more than that (`merge_parts`).
        let meta = read_meta(index);
        let quiet = state.appends.quiet(&meta);
        sleep_while_cores_busy(!quiet);
        let tokens = if quiet { quiet_merge_workers() } else { merge_workers() };
        let Some(token) = try_lock_worker_token(index, tokens) else {
            // Every token is taken. A worker that merged still owes the repair, which needs
            // every slot, not a token: it does it if no merge runs now, and exits.
            let step = if state.merged_any { repair_if_free(index, state) } else { Step::Busy };
            // SAFETY: opened above with this lock mode.
            unsafe { pg_sys::relation_close(index, lockmode) };
            return step;
        };
        let (merged, busy) = merge_in_free_slot(index, &mut state.cursors[..merge_parts()], WORKER_BUDGET);
        if merged > 0 && quiet && tokens > merge_workers() {
            start_helper(index, tokens, token); // while this worker holds its token
        }
        unlock_worker_token(index, token);
        if merged > 0 {
            state.merged_any = true;
            step = Step::Merged;
        }
        if !matches!(step, Step::Merged) {
            step = if busy {
                Step::Busy
            } else if !state.merged_any {
                Step::Done
            } else {
                repair_if_free(index, state)
            };
        }
    }
    // SAFETY: opened above with this lock mode; the lock is kept to the end of the
    // transaction, which follows at once.
    unsafe { pg_sys::relation_close(index, lockmode) };
    step
}

/// Repairs reachability (owed by a worker that merged) if no merge runs now, taking every
/// slot without waiting: Done; otherwise Busy, to look again shortly.
fn repair_if_free(index: pg_sys::Relation, state: &mut WorkerState) -> Step {
    if !try_lock_merge(index) {
        return Step::Busy;
    }
    repair_reachability(index);
    unlock_merge(index);
    state.merged_any = false;
    Step::Done
}

/// Starts another worker for a quiet index while a token below `tokens` other than the
/// caller's `held` one is free and enough of the buffer is left (at most once per [`RELAUNCH_PAUSE`]
/// from this worker).
fn start_helper(index: pg_sys::Relation, tokens: usize, held: usize) {
    let meta = read_meta(index);
    if meta.merge_pages.saturating_add(meta.buffer_pages) >= HELPER_MIN_PAGES {
        launch_throttled(index, tokens, Some(held));
    }
}
