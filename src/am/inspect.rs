//! `omen_index_info(regclass)`, `omen_check(regclass)` and `omen_flush(regclass)`.
//!
//! Privileges (README, "Privileges"): the SQL script grants inspection to
//! pg_stat_scan_tables and verification to no one (a superuser grants it); the internal
//! `*_json` functions check that the user may execute their wrapper; `omen_flush` checks
//! that the user may maintain the table.

use std::collections::{HashSet, VecDeque};
use std::ffi::{CStr, c_char};

use omen_core::distance::norm;
use omen_core::graph::{self, NodeId};
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::merge::merge_all;
use super::worker::{merge_workers, quiet_merge_workers};
use crate::storage::buffer::block_count;
use crate::storage::insert_buffer::{self, EntryHeader, LINKING, PENDING};
use crate::storage::layout::*;
use crate::storage::merge_lock::{lock_merge, unlock_merge};
use crate::storage::page_store::{PageStore, index_name, read_meta};
use crate::types::fmgr::{Call, cstring_datum, pg_fn, vector_slice};

/// Opens the index named by argument 0, checking that it is an omen index.
fn open_omen_index(call: &Call) -> pg_sys::Relation {
    let oid = pg_sys::Oid::from(call.datum(0).value() as u32);
    // SAFETY: index_open raises an ERROR for anything that is not an index; AccessShareLock
    // is held until the end of the transaction.
    let index = unsafe { pg_sys::index_open(oid, pg_sys::AccessShareLock as i32) };
    // SAFETY: the relation is open; get_am_name returns a palloc'd name or NULL.
    let am = unsafe {
        let name = pg_sys::get_am_name((*(*index).rd_rel).relam);
        if name.is_null() { String::new() } else { std::ffi::CStr::from_ptr(name).to_string_lossy().into_owned() }
    };
    if am != "omen" {
        pgrx::ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{}\" is not an omen index", index_name(index))
        );
    }
    index
}

/// Raises PostgreSQL's ERROR for a failed privilege check (SQLSTATE 42501): "permission
/// denied for `kind` `name`", or "must be owner of `kind` `name`".
fn refuse(result: pg_sys::AclResult::Type, kind: pg_sys::ObjectType::Type, name: *const c_char) -> ! {
    // SAFETY: aclcheck_error raises an ERROR for any result but ACLCHECK_OK; `name` is a
    // NUL-terminated string.
    unsafe { pg_sys::aclcheck_error(result, kind, name) };
    unreachable!("aclcheck_error raises an ERROR")
}

/// Refuses the call unless the user may execute `wrapper(regclass)`, the SQL function that
/// wraps this internal `*_json` one. The `*_json` functions are PUBLIC, so a GRANT on the
/// wrapper is all a role needs, and carry the wrapper's privileges by this check, so calling
/// them directly is no way around it. The wrapper is looked up in the extension's schema,
/// the schema of the index's access-method handler (never through the search_path).
fn check_wrapper_privilege(index: pg_sys::Relation, wrapper: &CStr) {
    let regclass = pg_sys::REGCLASSOID;
    // SAFETY: the index is open; rd_amhandler is omen_amhandler, which CREATE EXTENSION put
    // in the extension's schema. The pg_proc lookup by (name, argument types, schema) gets a
    // NUL-terminated name and a palloc'd oidvector of one OID.
    let function = unsafe {
        let schema = pg_sys::get_func_namespace((*index).rd_amhandler);
        pg_sys::GetSysCacheOid(
            pg_sys::SysCacheIdentifier::PROCNAMEARGSNSP as i32,
            pg_sys::Anum_pg_proc_oid as pg_sys::AttrNumber,
            pg_sys::Datum::from(wrapper.as_ptr()),
            pg_sys::Datum::from(pg_sys::buildoidvector(&regclass, 1)),
            pg_sys::Datum::from(schema),
            pg_sys::Datum::from(0),
        )
    };
    // SAFETY: reads the current user id (the caller's, as the wrapper is not SECURITY DEFINER).
    let user = unsafe { pg_sys::GetUserId() };
    let result = if function == pg_sys::InvalidOid {
        // The wrapper was dropped: only superusers pass.
        // SAFETY: a catalog lookup of the current user.
        if unsafe { pg_sys::superuser() } {
            pg_sys::AclResult::ACLCHECK_OK
        } else {
            pg_sys::AclResult::ACLCHECK_NO_PRIV
        }
    } else {
        #[cfg(feature = "pg15")]
        // SAFETY: an ACL lookup of an existing function.
        let result = unsafe { pg_sys::pg_proc_aclcheck(function, user, pg_sys::ACL_EXECUTE as pg_sys::AclMode) };
        #[cfg(any(feature = "pg16", feature = "pg18"))]
        // SAFETY: an ACL lookup of an existing function.
        let result = unsafe {
            pg_sys::object_aclcheck(pg_sys::ProcedureRelationId, function, user, pg_sys::ACL_EXECUTE as pg_sys::AclMode)
        };
        result
    };
    if result != pg_sys::AclResult::ACLCHECK_OK {
        refuse(result, pg_sys::ObjectType::OBJECT_FUNCTION, wrapper.as_ptr());
    }
}

/// Refuses `omen_flush`, a write, unless the user may maintain the index's table as VACUUM
/// and REINDEX require: its owner (superusers pass every check), and from PostgreSQL 17
/// whoever holds the MAINTAIN privilege on it (members of pg_maintain too).
fn check_maintain(index: pg_sys::Relation) {
    // SAFETY: the index is open, so its pg_index row is loaded; reads the current user id.
    let (table, user) = unsafe { ((*(*index).rd_index).indrelid, pg_sys::GetUserId()) };
    #[cfg(feature = "pg15")]
    // SAFETY: a pg_class lookup of the table, which cannot go while its index is locked.
    let owner = unsafe { pg_sys::pg_class_ownercheck(table, user) };
    #[cfg(feature = "pg16")]
    // SAFETY: as above.
    let owner = unsafe { pg_sys::object_ownercheck(pg_sys::RelationRelationId, table, user) };
    #[cfg(any(feature = "pg15", feature = "pg16"))]
    let result = if owner { pg_sys::AclResult::ACLCHECK_OK } else { pg_sys::AclResult::ACLCHECK_NOT_OWNER };
    #[cfg(feature = "pg18")]
    // SAFETY: as above; pg_class_aclcheck counts the owner's, pg_maintain's and granted rights.
    let result = unsafe { pg_sys::pg_class_aclcheck(table, user, pg_sys::ACL_MAINTAIN as pg_sys::AclMode) };
    if result != pg_sys::AclResult::ACLCHECK_OK {
        // SAFETY: pg_class lookups of the table's kind (table, materialized view) and name.
        let (kind, name) =
            unsafe { (pg_sys::get_relkind_objtype(pg_sys::get_rel_relkind(table)), pg_sys::get_rel_name(table)) };
        refuse(result, kind, name);
    }
}

/// The headers of the insert buffer's PENDING and LINKING entries.
fn buffered_entries(index: pg_sys::Relation, meta: &Meta) -> Vec<EntryHeader> {
    let mut out = Vec::new();
    insert_buffer::for_each_entry(index, meta, |_, h, _, _| {
        if h.state == PENDING || h.state == LINKING {
            out.push(*h);
        }
    });
    out
}

/// Closes what `open_omen_index` opened (the lock stays until the transaction ends).
fn close_index(index: pg_sys::Relation) {
    // SAFETY: `index` was opened by open_omen_index and is not used afterwards.
    unsafe { pg_sys::index_close(index, pg_sys::NoLock as i32) };
}

fn metric_name(meta: &Meta) -> &'static str {
    use omen_core::distance::Metric::*;
    match meta.metric() {
        L2 => "l2",
        InnerProduct => "inner_product",
        Cosine => "cosine",
        L1 => "l1",
    }
}

fn json_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

// omen_index_info_json(regclass) -> cstring (JSON); wrapped as a record in SQL.
pg_fn!(omen_index_info_json, pg_finfo_omen_index_info_json, |call| {
    let index = open_omen_index(call);
    check_wrapper_privilege(index, c"omen_index_info");
    let meta = read_meta(index);
    // Rows only the buffer holds (a LINKING entry's row is a graph node already).
    let buffered = buffered_entries(index, &meta).iter().filter(|e| e.state == PENDING).count();
    let buffer_pages = meta.buffer_pages + meta.merge_pages;
    let last_merge = if meta.last_merge_end == 0 {
        "null".to_string()
    } else {
        // TimestampTz counts microseconds from 2000-01-01; 946684800 s is that in Unix time.
        format!("{:.6}", meta.last_merge_end as f64 / 1e6 + 946_684_800.0)
    };
    let mut nodes = 0u64;
    let mut deleted = 0u64;
    let mut free = 0u64;
    let mut edges = 0u64;
    if meta.dims > 0 {
        let store = PageStore::new(index, &meta);
        store.for_each_node(|_, n| {
            if n.is_free() {
                free += 1;
            } else if n.is_deleted() {
                deleted += 1;
            } else {
                nodes += 1;
                edges += n.neighbors().len() as u64;
            }
        });
    }
    let avg = if nodes > 0 { edges as f64 / nodes as f64 } else { 0.0 };
    let entry = if meta.entry == NO_NODE { "null".to_string() } else { meta.entry.to_string() };
    let entry_tid = if meta.entry == NO_NODE || meta.dims == 0 {
        "null".to_string()
    } else {
        let t = PageStore::new(index, &meta).read(meta.entry, |n| n.heap_tid());
        let (block, offset) = tid_key(&t);
        json_str(&format!("({block},{offset})"))
    };
    close_index(index);
    cstring_datum(&format!(
        "{{\"nodes\": {nodes}, \"deleted_nodes\": {deleted}, \"free_slots\": {free}, \"pages\": {}, \"average_degree\": {avg:.3}, \
         \"entry_point\": {entry}, \"entry_tid\": {entry_tid}, \"dimensions\": {}, \"metric\": {}, \"unit_vectors\": {}, \"max_neighbors\": {}, \
         \"build_list_size\": {}, \"alpha\": {}, \"buffered_entries\": {buffered}, \"buffer_pages\": {buffer_pages}, \
         \"merges_done\": {}, \"merged_entries\": {}, \"last_merge_epoch\": {last_merge}, \"last_merge_ms\": {}, \
         \"simd\": {}, \"merge_workers\": {}, \"merge_workers_quiet\": {}}}",
        block_count(index),
        meta.dims,
        json_str(metric_name(&meta)),
        meta.unit_vectors != 0,
        meta.max_neighbors,
        meta.build_list_size,
        meta.alpha,
        meta.merges_done,
        meta.merged_entries,
        meta.last_merge_ms,
        // The kernels this backend runs (omen_core::simd: the CPU's, or lower by OMEN_SIMD).
        json_str(omen_core::simd::level().name()),
        // What omen.max_merge_workers means in this server: workers an index may have while
        // rows arrive, and once none has arrived for a second.
        merge_workers(),
        quiet_merge_workers()
    ))
});

// omen_flush(regclass) -> bigint: merges the insert buffer now, waiting for a merge that
// runs; returns the entries merged.
pg_fn!(omen_flush, pg_finfo_omen_flush, |call| {
    // SAFETY: both raise an ERROR (25006) in a read-only transaction or during recovery.
    unsafe {
        pg_sys::PreventCommandIfReadOnly(c"omen_flush()".as_ptr());
        pg_sys::PreventCommandDuringRecovery(c"omen_flush()".as_ptr());
    }
    let index = open_omen_index(call);
    check_maintain(index);
    lock_merge(index);
    let merged = merge_all(index);
    unlock_merge(index);
    close_index(index);
    pg_sys::Datum::from(merged as i64)
});

/// Heap TIDs (block, offset) of the rows the index must hold, None when the key is an
/// expression: a scan of the table under the calling query's snapshot. It reads the heap
/// as amcheck does, not through SQL, so it needs none of the caller's privileges on the
/// table (EXECUTE on omen_check is the gate), runs no user code and resolves no name
/// through the search_path. Read-only, so it works on a hot standby and assigns no xid.
fn heap_rows(index: pg_sys::Relation, cosine: bool) -> Option<HashSet<(u32, u16)>> {
    // SAFETY: the index is open, so its pg_index row is loaded; indkey has indnatts >= 1 entries.
    let (table, key) = unsafe {
        let form = &*(*index).rd_index;
        (form.indrelid, *form.indkey.values.as_ptr())
    };
    if key == 0 {
        return None;
    }
    // SAFETY: opens the index's table with the lock a query takes, held to the end of the
    // transaction; registers the snapshot of the query calling omen_check (a row it sees
    // had its index entry before the index was read), or a new one outside a query.
    let (heap, snapshot) = unsafe {
        let heap = pg_sys::table_open(table, pg_sys::AccessShareLock as i32);
        let active = pg_sys::ActiveSnapshotSet();
        let snapshot = if active { pg_sys::GetActiveSnapshot() } else { pg_sys::GetTransactionSnapshot() };
        (heap, pg_sys::RegisterSnapshot(snapshot))
    };
    // SAFETY: the table is open and the snapshot registered until the scan ends below.
    let (scan, slot) = unsafe {
        (
            pg_sys::table_beginscan(heap, snapshot, 0, std::ptr::null_mut()),
            pg_sys::table_slot_create(heap, std::ptr::null_mut()),
        )
    };
    let mut rows = HashSet::new();
    // SAFETY: `scan` and `slot` live until the end of the loop.
    while unsafe { pg_sys::table_scan_getnextslot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot) } {
        pgrx::check_for_interrupts!();
        let mut null = false;
        // SAFETY: the slot holds a row of the table, of which `key` is a column.
        let datum = unsafe { pg_sys::slot_getattr(slot, key.into(), &mut null) };
        if null {
            continue;
        }
        if cosine {
            // A zero vector is not indexed with the cosine metric (as the build decides).
            let raw = datum.cast_mut_ptr::<pg_sys::varlena>();
            // SAFETY: a non-NULL vector; a detoasted copy is freed once read.
            let value = unsafe { pg_sys::pg_detoast_datum(raw) };
            let zero = norm(vector_slice(value)) == 0.0;
            if value != raw {
                // SAFETY: `value` is the palloc'd copy, read no more.
                unsafe { pg_sys::pfree(value.cast()) };
            }
            if zero {
                continue;
            }
        }
        // SAFETY: a table scan sets the slot's tts_tid to the row's TID.
        rows.insert(tid_key(&unsafe { (*slot).tts_tid }));
    }
    // SAFETY: each is released once, in the reverse order of its creation.
    unsafe {
        pg_sys::table_endscan(scan);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::UnregisterSnapshot(snapshot);
        pg_sys::table_close(heap, pg_sys::NoLock as i32);
    }
    Some(rows)
}

// omen_check_json(regclass) -> cstring (JSON); wrapped as a record in SQL.
pg_fn!(omen_check_json, pg_finfo_omen_check_json, |call| {
    let index = open_omen_index(call);
    check_wrapper_privilege(index, c"omen_check");
    // A merge running beside the check would move entries from the buffer into the graph
    // between the two reads: wait for it, and hold merges off until the check is done.
    // (A hot standby runs no merges, and its replay takes no such lock.)
    // SAFETY: reads a flag of the startup process's state.
    let merging_possible = !unsafe { pg_sys::RecoveryInProgress() };
    if merging_possible {
        lock_merge(index);
    }
    let meta = read_meta(index);
    let mut problems: Vec<String> = Vec::new();
    // Per node: live, heap TID (block, offset), out-edges.
    type NodeEntry = (bool, (u32, u16), Vec<NodeId>);
    let mut adjacency: std::collections::HashMap<NodeId, NodeEntry> = Default::default();
    let mut free_slots = HashSet::new();
    if meta.dims > 0 {
        let mut store = PageStore::new(index, &meta);
        store.cache_codes();
        // Every edge carries its target's code (its own, or relative to the node: edge
        // codes): (node, neighbour, code on the edge).
        let mut edge_codes: Vec<(NodeId, NodeId, Box<[u8]>)> = Vec::new();
        let cb = store.layout.code_bytes;
        store.for_each_node(|id, n| {
            if n.is_free() {
                free_slots.insert(id);
                return;
            }
            let tid = tid_key(&n.heap_tid());
            adjacency.insert(id, (n.is_deleted(), tid, n.neighbors().to_vec()));
            for (i, &m) in n.neighbors().iter().enumerate() {
                edge_codes.push((id, m, n.codes_area[i * cb..(i + 1) * cb].into()));
            }
        });
        let mut stale = 0usize;
        let mut example = None;
        for (id, m, code) in &edge_codes {
            if !adjacency.contains_key(m) {
                continue; // reported below as an edge to a missing node
            }
            // Edge codes are the neighbour's relative to the node; otherwise its own code.
            let expected = if store.relative_codes() {
                let mut owner = Vec::new();
                graph::GraphStore::vector(&mut store, *id, &mut owner);
                store.edge_codes(&owner, &[*m]).into_boxed_slice()
            } else {
                store.code_of(*m)
            };
            // Equal up to float rounding: codes written by another build of omen pass.
            if !store.quantizer.same_code(&expected, code) {
                stale += 1;
                example.get_or_insert((*id, *m));
            }
        }
        if let Some((id, m)) = example {
            problems.push(format!("{stale} edges carry a code that is not their target's (e.g. {id} -> {m})"));
        }
    }
    // The buffer: a PENDING entry stands for its row; a LINKING entry's node must exist
    // with the same row. Either way a scan returns the row from the buffer.
    let buffered = if meta.dims > 0 { buffered_entries(index, &meta) } else { Vec::new() };
    let mut buffered_tids = HashSet::new();
    let mut indexed: std::collections::HashMap<(u32, u16), usize> = Default::default();
    for e in &buffered {
        let tid = tid_key(&tid_of(&e.tid));
        buffered_tids.insert(tid);
        if e.state == PENDING {
            *indexed.entry(tid).or_default() += 1;
        } else if !matches!(adjacency.get(&e.node), Some((_, t, _)) if *t == tid) {
            problems
                .push(format!("buffer entry of row {tid:?} is linking node {}, which does not hold that row", e.node));
        }
    }
    for (deleted, tid, _) in adjacency.values() {
        if !deleted {
            *indexed.entry(*tid).or_default() += 1;
        }
    }
    let duplicated = indexed.values().filter(|&&n| n > 1).count();
    if duplicated > 0 {
        problems.push(format!("{duplicated} rows are indexed more than once"));
    }
    let slack = meta.slack_degree as usize;
    for (&id, (_, _, nbrs)) in &adjacency {
        if nbrs.len() > slack {
            problems.push(format!("node {id} has {} neighbours, more than {slack}", nbrs.len()));
        }
        let mut seen = HashSet::new();
        for &n in nbrs {
            if n == id {
                problems.push(format!("node {id} has an edge to itself"));
            } else if free_slots.contains(&n) {
                problems.push(format!("node {id} has an edge to {n}, a free slot"));
            } else if !adjacency.contains_key(&n) {
                problems.push(format!("node {id} has an edge to {n}, which is not a node"));
            }
            if !seen.insert(n) {
                problems.push(format!("node {id} lists neighbour {n} twice"));
            }
        }
    }
    let live: usize = adjacency.values().filter(|(d, _, _)| !d).count();
    let mut reachable_live = 0usize;
    let mut reachable_tids = HashSet::new();
    if meta.entry == NO_NODE {
        if !adjacency.is_empty() {
            problems.push("the index has nodes but no entry point".to_string());
        }
    } else if !adjacency.contains_key(&meta.entry) {
        problems.push(format!("the entry point {} is not a node", meta.entry));
    } else {
        let mut queue = VecDeque::from([meta.entry]);
        let mut seen = HashSet::from([meta.entry]);
        while let Some(id) = queue.pop_front() {
            let (deleted, tid, nbrs) = &adjacency[&id];
            if !deleted {
                reachable_live += 1;
                reachable_tids.insert(*tid);
            }
            for &n in nbrs {
                if adjacency.contains_key(&n) && seen.insert(n) {
                    queue.push_back(n);
                }
            }
        }
    }
    let heap = heap_rows(index, meta.metric() == omen_core::distance::Metric::Cosine);
    // A node that is not reachable matters when its row is visible; the node of a row whose
    // insert was aborted (say, by a crash before the node was linked) waits for VACUUM.
    let unreachable: Vec<(u32, u16)> = adjacency
        .values()
        .filter(|(deleted, tid, _)| !deleted && !reachable_tids.contains(tid) && !buffered_tids.contains(tid))
        .map(|(_, tid, _)| *tid)
        .collect();
    let unreachable_rows = match &heap {
        Some(rows) => unreachable.iter().filter(|t| rows.contains(t)).count(),
        None => unreachable.len(),
    };
    if unreachable_rows > 0 {
        problems.push(format!("{unreachable_rows} of {live} live nodes are not reachable from the entry point"));
    }
    let heap_count = match &heap {
        Some(rows) => {
            let missing = rows.iter().filter(|t| !reachable_tids.contains(t) && !buffered_tids.contains(t)).count();
            if missing > 0 {
                problems.push(format!("{missing} of {} table rows cannot be reached through the index", rows.len()));
            }
            rows.len().to_string()
        }
        None => "null".to_string(),
    };
    if merging_possible {
        unlock_merge(index);
    }
    close_index(index);
    let list: Vec<String> = problems.iter().take(100).map(|p| json_str(p)).collect();
    cstring_datum(&format!(
        "{{\"ok\": {}, \"nodes\": {live}, \"reachable\": {reachable_live}, \"table_rows\": {heap_count}, \
         \"buffered\": {}, \"problems\": [{}]}}",
        problems.is_empty(),
        buffered.iter().filter(|e| e.state == PENDING).count(),
        list.join(", ")
    ))
});
