//! `omen_index_info(regclass)` and `omen_check(regclass)`.

use std::collections::{HashSet, VecDeque};

use omen_core::graph::NodeId;
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::merge::{lock_merge, merge_all, unlock_merge};
use crate::storage::insert_buffer::{self, EntryHeader, LINKING, PENDING};
use crate::storage::layout::*;
use crate::storage::page_store::{PageStore, block_count, index_name, read_meta};
use crate::types::fmgr::{Call, cstring_datum, pg_fn};

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

/// The headers of the insert buffer's PENDING and LINKING entries.
fn buffered_entries(index: pg_sys::Relation, meta: &Meta) -> Vec<EntryHeader> {
    let mut out = Vec::new();
    insert_buffer::for_each_entry(index, meta, |h, _| {
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
         \"entry_point\": {entry}, \"entry_tid\": {entry_tid}, \"dimensions\": {}, \"metric\": {}, \"max_neighbors\": {}, \
         \"build_list_size\": {}, \"alpha\": {}, \"buffered_entries\": {buffered}, \"buffer_pages\": {buffer_pages}, \
         \"merges_done\": {}, \"merged_entries\": {}, \"last_merge_epoch\": {last_merge}, \"last_merge_ms\": {}}}",
        block_count(index),
        meta.dims,
        json_str(metric_name(&meta)),
        meta.max_neighbors,
        meta.build_list_size,
        meta.alpha,
        meta.merges_done,
        meta.merged_entries,
        meta.last_merge_ms
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
    lock_merge(index, true);
    let merged = merge_all(index);
    unlock_merge(index);
    close_index(index);
    pg_sys::Datum::from(merged as i64)
});

/// Heap TIDs (block, offset) of the rows the index must hold, from SPI; None when the key
/// is an expression. Read-only SPI, so it works on a hot standby and assigns no xid.
fn heap_rows(index_oid: u32, cosine: bool) -> Option<HashSet<(u32, u16)>> {
    Spi::connect(|client| {
        let target = client
            .select(
                format!(
                    "SELECT i.indrelid::regclass::text, quote_ident(a.attname::text) FROM pg_index i \
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                     WHERE i.indexrelid = {index_oid}"
                )
                .as_str(),
                None,
                &[],
            )?
            .first()
            .get_two::<String, String>()?;
        let (Some(table), Some(column)) = target else { return Ok(None) };
        let extra = if cosine { format!(" AND omen_vector_norm({column}) > 0") } else { String::new() };
        let query = format!("SELECT ctid::text FROM {table} WHERE {column} IS NOT NULL{extra}");
        let mut out = HashSet::new();
        for row in client.select(query.as_str(), None, &[])? {
            let text: Option<String> = row.get(1)?;
            let t = text.unwrap_or_default();
            let (b, o) = t.trim_matches(|c| c == '(' || c == ')').split_once(',').unwrap_or(("0", "0"));
            out.insert((b.parse().unwrap_or(0), o.parse().unwrap_or(0)));
        }
        Ok::<_, pgrx::spi::Error>(Some(out))
    })
    .ok()
    .flatten()
}

// omen_check_json(regclass) -> cstring (JSON); wrapped as a record in SQL.
pg_fn!(omen_check_json, pg_finfo_omen_check_json, |call| {
    let index = open_omen_index(call);
    // A merge running beside the check would move entries from the buffer into the graph
    // between the two reads: wait for it, and hold merges off until the check is done.
    // (A hot standby runs no merges, and its replay takes no such lock.)
    // SAFETY: reads a flag of the startup process's state.
    let merging_possible = !unsafe { pg_sys::RecoveryInProgress() };
    if merging_possible {
        lock_merge(index, true);
    }
    let meta = read_meta(index);
    let mut problems: Vec<String> = Vec::new();
    // Per node: live, heap TID (block, offset), out-edges.
    type NodeEntry = (bool, (u32, u16), Vec<NodeId>);
    let mut adjacency: std::collections::HashMap<NodeId, NodeEntry> = Default::default();
    let mut free_slots = HashSet::new();
    if meta.dims > 0 {
        let store = PageStore::new(index, &meta);
        store.for_each_node(|id, n| {
            if n.is_free() {
                free_slots.insert(id);
                return;
            }
            let tid = tid_key(&n.heap_tid());
            adjacency.insert(id, (n.is_deleted(), tid, n.neighbors().to_vec()));
        });
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
    let oid = pg_sys::Oid::from(call.datum(0).value() as u32).to_u32();
    let heap = heap_rows(oid, meta.metric() == omen_core::distance::Metric::Cosine);
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
