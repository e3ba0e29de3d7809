//! The merge launcher, when omendb is in `shared_preload_libraries`.
//!
//! Preloaded, omendb keeps a small table of merge requests in shared memory and registers
//! one static background worker, `omen merge launcher`, that serves every database: an
//! insert that wants a merge only records (database, index) in the table, and the launcher
//! starts the merge workers (`worker`), at most one per index per [`RELAUNCH_PAUSE`].
//! Without preloading there is no table and each inserting backend starts workers itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::lwlock::PgLwLock;
use pgrx::shmem::PGRXSharedMemory;
use pgrx::{pg_guard, pg_shmem_init, pg_sys};

/// Requests the table holds at once; an insert that finds it full starts a worker itself.
const SLOTS: usize = 32;
/// How often the launcher looks at the table.
const POLL: Duration = Duration::from_millis(100);
/// The launcher starts at most one worker per index in this interval.
const RELAUNCH_PAUSE: Duration = Duration::from_secs(1);

/// One pending request: an index (by OID) of a database (by OID); index 0 is a free slot.
#[derive(Clone, Copy, Default)]
struct Request {
    database: u32,
    index: u32,
}

/// The shared request table.
#[derive(Clone, Copy, Default)]
pub struct Requests {
    slots: [Request; SLOTS],
}

// SAFETY: plain integers, no pointers: the same bytes mean the same in every process.
unsafe impl PGRXSharedMemory for Requests {}

// SAFETY: the only lock of this name.
static REQUESTS: PgLwLock<Requests> = unsafe { PgLwLock::new(c"omen merge requests") };

/// Set in `_PG_init` of the postmaster when preloaded; inherited by every backend it forks.
static PRELOADED: AtomicBool = AtomicBool::new(false);

/// From `_PG_init`: when preloading, sets up the request table and registers the launcher.
// pgrx's `pg_shmem_init!` tests features pg13, pg14 and pg17, which this crate does not declare.
#[allow(unexpected_cfgs)]
pub fn init() {
    // SAFETY: a global PostgreSQL sets before loading preloaded libraries.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    pg_shmem_init!(REQUESTS);
    PRELOADED.store(true, Ordering::Relaxed);
    BackgroundWorkerBuilder::new("omen merge launcher")
        .set_type("omen merge launcher")
        .set_library("omendb")
        .set_function("omen_merge_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

/// Records a merge request for the launcher. False when there is no launcher (omendb not
/// preloaded) or the table is full: the caller starts a worker itself.
pub fn request(database: pg_sys::Oid, index: pg_sys::Oid) -> bool {
    if !PRELOADED.load(Ordering::Relaxed) {
        return false;
    }
    let (database, index) = (database.to_u32(), index.to_u32());
    let mut table = REQUESTS.exclusive();
    if table.slots.iter().any(|r| r.database == database && r.index == index) {
        return true;
    }
    match table.slots.iter_mut().find(|r| r.index == 0) {
        Some(slot) => {
            *slot = Request { database, index };
            true
        }
        None => false,
    }
}

/// The launcher's entry point: takes requests from the table and starts merge workers.
#[pgrx::pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn omen_merge_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    // No database: this only makes the launcher a backend that pg_stat_activity lists, as
    // PostgreSQL's logical replication launcher does.
    BackgroundWorker::connect_worker_to_spi(None, None);
    let mut last: HashMap<(u32, u32), Instant> = HashMap::new();
    while BackgroundWorker::wait_latch(Some(POLL)) {
        let taken: Vec<Request> = {
            let mut table = REQUESTS.exclusive();
            let taken = table.slots.iter().copied().filter(|r| r.index != 0).collect();
            table.slots = [Request::default(); SLOTS];
            taken
        };
        last.retain(|_, t| t.elapsed() < RELAUNCH_PAUSE);
        for r in taken {
            if last.contains_key(&(r.database, r.index)) {
                continue;
            }
            last.insert((r.database, r.index), Instant::now());
            let oid = |v: u32| pg_sys::Oid::from(v);
            if !start_worker(oid(r.database), oid(r.index), &format!("index {}", r.index), false) {
                pgrx::log!("omen merge launcher: could not start a merge worker (max_worker_processes is exhausted)");
            }
        }
    }
}

/// The word after the database OID in a helper's `bgw_extra`.
pub const HELPER: &str = "helper";

/// Registers a dynamic merge worker for index `index` of database `db` (`label` names the
/// index in the worker's process title); a `helper` is started by a worker that saw the
/// index quiet (`worker::start_helper`), and takes it as quiet from its first step. False
/// when no worker slot is free.
pub fn start_worker(db: pg_sys::Oid, index: pg_sys::Oid, label: &str, helper: bool) -> bool {
    let extra = if helper { format!("{} {HELPER}", db.to_u32()) } else { db.to_u32().to_string() };
    BackgroundWorkerBuilder::new(&format!("omen merge of {label}"))
        .set_type("omen merge worker")
        .set_library("omendb")
        .set_function("omen_merge_worker_main")
        .set_argument(Some(pg_sys::Datum::from(index.to_u32())))
        .set_extra(&extra)
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .load_dynamic()
        .is_ok()
}
