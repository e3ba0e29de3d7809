//! `ambuild`: load the table's vectors, build the Vamana graph in memory on rayon threads
//! (plain Rust data only; PostgreSQL is called from this backend's thread alone), write the
//! pages without per-page WAL, then WAL-log them at once with `log_newpage_range`.
//!
//! Memory: vectors and graph are held while they fit in `maintenance_work_mem`. Past it
//! the nodes loaded so far are built and written, and the remaining rows are inserted one
//! by one through the insert path (slower, bounded memory), with a NOTICE saying so. Those
//! inserts write no WAL records (`buffer::UnloggedBuild`); every page is logged at the end.

use omen_core::distance::{Metric, Ranking, norm};
use omen_core::graph::{self, BeamSearch, GraphParams, NodeId};
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::options::{graph_params, metric_of};
use crate::storage::buffer::{UnloggedBuild, pin_and_lock};
use crate::storage::layout::*;
use crate::storage::page_store::{
    PagePacker, PageStore, centroid_pages, fill_node_record, fill_vector_record, index_name, read_meta, write_meta_page,
};
use crate::types::fmgr::datum_vector;
use omen_core::quant::{EncodeScratch, Quantizer};

// pg_stat_progress_create_index parameters (commands/progress.h) and our sub-phases.
const PROGRESS_CREATEIDX_SUBPHASE: i32 = 10;
const PROGRESS_CREATEIDX_TUPLES_TOTAL: i32 = 11;
const PROGRESS_CREATEIDX_TUPLES_DONE: i32 = 12;
pub const PHASE_LOAD: i64 = 2;
pub const PHASE_GRAPH: i64 = 3;
pub const PHASE_WRITE: i64 = 4;

/// `ambuildphasename`: names of the sub-phases shown in pg_stat_progress_create_index.
#[pg_guard]
pub unsafe extern "C-unwind" fn ambuildphasename(phase: i64) -> *mut std::ffi::c_char {
    let name: &'static std::ffi::CStr = match phase {
        PHASE_LOAD => c"loading tuples",
        PHASE_GRAPH => c"building graph",
        PHASE_WRITE => c"writing pages",
        _ => return std::ptr::null_mut(),
    };
    name.as_ptr() as *mut _
}

fn report(param: i32, value: i64) {
    // SAFETY: plain progress bookkeeping of this backend.
    unsafe { pg_sys::pgstat_progress_update_param(param, value) };
}

/// Vector dimensions fixed by the column's typmod, if any.
fn typmod_dims(index: pg_sys::Relation) -> Option<usize> {
    // SAFETY: an open index has a valid tuple descriptor; an omen index has exactly one key
    // column, so attribute 0 exists.
    let typmod = unsafe { pgrx::PgTupleDesc::from_pg_unchecked((*index).rd_att) }.get(0).map_or(-1, |a| a.atttypmod);
    (typmod > 0).then_some(typmod as usize)
}

struct BuildState {
    index: pg_sys::Relation,
    metric: Metric,
    params: GraphParams,
    dims: Option<usize>,
    tids: Vec<pg_sys::ItemPointerData>,
    vectors: Vec<f32>,
    budget_bytes: usize,
    /// Set once the in-memory part has been written; later rows are inserted in place,
    /// without WAL records (logged at the end, with the rest).
    overflow: Option<(PageStore, UnloggedBuild)>,
    search: BeamSearch,
    entry: NodeId,
    indexed: f64,
}

impl BuildState {
    fn bytes_per_node(&self, dims: usize) -> usize {
        4 * dims
            + 4 * self.params.slack_degree()
            + Quantizer::code_bytes_for(dims)
            + std::mem::size_of::<pg_sys::ItemPointerData>()
            + 48
    }
}

/// The table scan's callback: one row's key.
#[pg_guard]
unsafe extern "C-unwind" fn build_callback(
    _index: pg_sys::Relation,
    tid: pg_sys::ItemPointer,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    _alive: bool,
    state: *mut std::ffi::c_void,
) {
    // SAFETY: `state` is the BuildState passed to table_index_build_scan, and values/isnull
    // hold this row's single key.
    let (state, datum, null, tid) = unsafe { (&mut *state.cast::<BuildState>(), *values, *isnull, *tid) };
    if null {
        return;
    }
    let v = datum_vector(datum);
    let dims = *state.dims.get_or_insert(v.len());
    if v.len() != dims {
        pgrx::ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("different vector dimensions {dims} and {} in one omen index", v.len()),
            "All vectors of an omen index must have the same dimensions; give the column a type modifier such as vector(768)."
        );
    }
    if state.metric == Metric::Cosine && norm(v) == 0.0 {
        return; // a zero vector has no cosine distance to anything; not indexed
    }
    state.indexed += 1.0;
    // As the index stores it (new_meta sets `unit_vectors` by the same rule).
    let v = &*stored_vector(Ranking::new(state.metric, stores_unit_vectors(state.metric)), v);
    if let Some((store, _)) = &mut state.overflow {
        let id = store.append(&tid, v);
        graph::insert(store, id, v, state.entry, &state.params, &mut state.search);
    } else {
        state.tids.push(tid);
        state.vectors.extend_from_slice(v);
        if state.tids.len() * state.bytes_per_node(dims) > state.budget_bytes {
            pgrx::notice!(
                "omen index \"{}\": maintenance_work_mem ({} kB) holds {} vectors; the rest are inserted one by one, which is slower",
                index_name(state.index),
                state.budget_bytes / 1024,
                state.tids.len()
            );
            write_graph(state, false);
            let meta = read_meta(state.index);
            state.entry = meta.entry;
            let mut store = PageStore::new(state.index, &meta);
            // Each insert's prunes read the same candidates' vectors again and again: without
            // a cache, reading them through the buffer manager took half of this phase
            // (perf, 40,000 rows of debian-minilm-384 under 16 MB). The collected vectors are
            // released (write_graph), so the cache takes their memory budget.
            store.cache_vectors_within(state.budget_bytes);
            state.overflow = Some((store, UnloggedBuild::start(state.index)));
        }
    }
    report(PROGRESS_CREATEIDX_TUPLES_DONE, state.indexed as i64);
}

/// The metapage for a new index.
fn new_meta(params: &GraphParams, metric: Metric, dims: usize, entry: NodeId) -> Meta {
    let layout = Layout::new(dims.max(1), params.slack_degree()).expect("checked by Layout::check");
    Meta {
        magic: MAGIC,
        version: LAYOUT_VERSION,
        dims: dims as u32,
        metric: metric.code() as u32,
        max_neighbors: params.max_neighbors as u32,
        slack_degree: params.slack_degree() as u32,
        build_list_size: params.build_list_size as u32,
        alpha: params.alpha,
        entry,
        node_size: layout.node_size as u32,
        nodes_per_page: layout.nodes_per_page as u32,
        buffer_tail: NO_BLOCK,
        buffer_segment: 0,
        buffer_pages: 0,
        merge_tail: NO_BLOCK,
        merge_segment: 0,
        merge_pages: 0,
        free_buffer_tail: NO_BLOCK,
        next_segment: 1,
        merges_done: 0,
        last_merge_ms: 0,
        last_merge_end: 0,
        merged_entries: 0,
        merge_sealed_at: 0,
        // SAFETY: reads the clock.
        build_id: unsafe { pg_sys::GetCurrentTimestamp() },
        has_centroid: 0,
        code_bytes: layout.code_bytes as u32,
        vector_size: layout.vector_size as u32,
        vectors_per_page: layout.vectors_per_page as u32,
        unit_vectors: stores_unit_vectors(metric) as u32,
        merge_pages_done: 0,
    }
}

/// Appends one page image to the index's main fork (no WAL: the build logs all pages later).
fn write_new_page(index: pg_sys::Relation, fork: pg_sys::ForkNumber::Type, image: &[u64]) {
    let buf = append_page(index, fork, image);
    // SAFETY: pinned and locked by append_page.
    unsafe { pg_sys::UnlockReleaseBuffer(buf) };
}

/// Appends one page image to `fork` and returns its buffer, pinned, locked and dirty.
fn append_page(index: pg_sys::Relation, fork: pg_sys::ForkNumber::Type, image: &[u64]) -> pg_sys::Buffer {
    let buf = pin_and_lock(index, fork, pg_sys::InvalidBlockNumber, pg_sys::BUFFER_LOCK_EXCLUSIVE);
    // SAFETY: the index is being built (or is new) and locked by us; the new block is pinned
    // and locked, and we fill it completely before marking it dirty.
    unsafe {
        std::ptr::copy_nonoverlapping(image.as_ptr().cast::<u8>(), pg_sys::BufferGetPage(buf).cast::<u8>(), PAGE_SIZE);
        pg_sys::MarkBufferDirty(buf);
    }
    buf
}

/// Threads of a build: `max_parallel_maintenance_workers + 1`.
fn build_threads() -> usize {
    // SAFETY: reading an integer GUC of this backend.
    unsafe { pg_sys::max_parallel_maintenance_workers }.max(0) as usize + 1
}

/// Runs the graph build on `threads` rayon threads while this backend's thread reports
/// progress and watches for query cancellation; only this thread calls PostgreSQL.
fn build_in_threads(
    vectors: &[f32],
    dims: usize,
    params: &GraphParams,
    quantizer: &Quantizer,
    threads: usize,
) -> Option<graph::BuiltGraph> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("rayon thread pool");
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut progress = |d: usize, _total: usize| done.store(d, Relaxed);
            let mut should_stop = || stop.load(Relaxed);
            pool.install(|| {
                graph::build_coded(vectors, dims, params, 0x0de1_5eed, Some(quantizer), &mut progress, &mut should_stop)
            })
        });
        while !worker.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(20));
            report(PROGRESS_CREATEIDX_TUPLES_DONE, done.load(Relaxed) as i64);
            // Only a cancel or a termination stops the build; other interrupts (a stats
            // flush timer, a memory-context dump request) are served after it.
            // SAFETY: reading the volatile flags PostgreSQL's signal handlers set.
            let pending = unsafe {
                std::ptr::read_volatile(&raw const pg_sys::QueryCancelPending) != 0
                    || std::ptr::read_volatile(&raw const pg_sys::ProcDiePending) != 0
            };
            if pending {
                stop.store(true, Relaxed);
            }
        }
        worker.join()
    });
    match result {
        Ok(Some(g)) => Some(g),
        Ok(None) => {
            pgrx::check_for_interrupts!();
            pgrx::ereport!(ERROR, PgSqlErrorCode::ERRCODE_QUERY_CANCELED, "omen index build canceled");
        }
        Err(_) => pgrx::error!("omen index build failed in a worker thread"),
    }
}

/// Nodes whose edge codes are computed together (in parallel) while the pages are written.
const EDGE_CODE_CHUNK: usize = 4096;

/// Every collected vector rotated once ([`Quantizer::rotated_source`]), as rows of
/// `rotated_len` floats and whether each row is there (not for a zero vector under cosine), when the
/// node records hold edge codes and the rows fit in `maintenance_work_mem` beside what the
/// build holds; else None, and each edge code rotates its own residual (32 rotations a node
/// instead of one).
fn rotated_vectors(
    state: &BuildState,
    quantizer: &Quantizer,
    pool: &rayon::ThreadPool,
) -> Option<(Vec<f32>, Vec<bool>)> {
    let (n, rl) = (state.tids.len(), quantizer.rotated_len());
    let dims = state.vectors.len() / n.max(1);
    let bytes = n * (4 * rl + std::mem::size_of::<bool>());
    if !quantizer.relative() || n == 0 || n * state.bytes_per_node(dims) + bytes > state.budget_bytes {
        return None;
    }
    Some(rotate_all(&state.vectors, dims, quantizer, pool))
}

/// See [`rotated_vectors`].
fn rotate_all(vectors: &[f32], dims: usize, quantizer: &Quantizer, pool: &rayon::ThreadPool) -> (Vec<f32>, Vec<bool>) {
    use rayon::prelude::*;
    let (n, rl) = (vectors.len() / dims, quantizer.rotated_len());
    let mut rows = vec![0f32; n * rl];
    let mut present = vec![false; n];
    pool.install(|| {
        rows.par_chunks_mut(rl).zip(present.par_iter_mut()).zip(vectors.par_chunks(dims)).for_each_init(
            || (Vec::new(), Vec::new()),
            |(buf, out), ((row, there), v)| {
                quantizer.rotated_source(v, buf, out);
                row[..out.len()].copy_from_slice(out);
                *there = !out.is_empty();
            },
        )
    });
    (rows, present)
}

/// Builds the graph over the collected vectors and writes metapage and node pages, then
/// WAL-logs them if `log` (else the caller does, with what it writes next); the collected
/// data is released.
fn write_graph(state: &mut BuildState, log: bool) {
    let dims = state.dims.unwrap_or_else(|| typmod_dims(state.index).unwrap_or(0));
    // `ambuild` chose the slack degree already when the column has dimensions.
    if dims > 0 && state.params.slack.is_none() {
        Layout::for_new_index(dims, &mut state.params);
    }
    let n = state.tids.len();
    report(PROGRESS_CREATEIDX_SUBPHASE, PHASE_GRAPH);
    report(PROGRESS_CREATEIDX_TUPLES_TOTAL, n as i64);
    // The codes: centred on the mean of the rows (none for an empty build: zero). The
    // build's searches traverse on them, as scans do.
    let centroid =
        if n > 0 { Quantizer::centroid_of(state.metric, dims, &state.vectors) } else { vec![0.0; dims.max(1)] };
    let quantizer = Quantizer::new(state.metric, dims.max(1), centroid.clone(), CODE_SEED);
    let built =
        if n == 0 { None } else { build_in_threads(&state.vectors, dims, &state.params, &quantizer, build_threads()) };
    report(PROGRESS_CREATEIDX_SUBPHASE, PHASE_WRITE);
    let layout = Layout::new(dims.max(1), state.params.slack_degree()).expect("checked above");
    let entry = built.as_ref().map_or(NO_NODE, |g| build_position(g.entry as usize, &layout));
    let mut meta = new_meta(&state.params, state.metric, dims, entry);
    meta.has_centroid = (n > 0) as u32;
    let mut image = vec![0u64; PAGE_SIZE / 8];
    write_meta_page(image.as_mut_ptr().cast(), &meta);
    write_new_page(state.index, pg_sys::ForkNumber::MAIN_FORKNUM, &image);
    for page in centroid_pages(&centroid) {
        write_new_page(state.index, pg_sys::ForkNumber::MAIN_FORKNUM, &page);
    }
    if let Some(g) = built {
        let cb = layout.code_bytes;
        let codes = &g.codes;
        let mut packer = PagePacker::new(PageKind::Node, layout.nodes_per_page);
        let mut ids = Vec::with_capacity(layout.slack_degree);
        let mut rec = vec![0u8; layout.record_size];
        // Edge codes (each neighbour relative to the node) are computed on the build's
        // threads, EDGE_CODE_CHUNK nodes at a time; otherwise the nodes' own codes are copied.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(build_threads()).build().expect("rayon thread pool");
        let vectors = &state.vectors;
        let rotated = rotated_vectors(state, &quantizer, &pool);
        let rl = quantizer.rotated_len();
        let node_codes = |scratch: &mut (EncodeScratch, Vec<f32>), i: usize| -> Vec<u8> {
            let mut out = vec![0u8; g.neighbors.get(i as NodeId).len() * cb];
            let owner = &vectors[i * dims..(i + 1) * dims];
            for (&j, code) in g.neighbors.get(i as NodeId).iter().zip(out.chunks_mut(cb)) {
                let j = j as usize;
                if let Some((rows, present)) = &rotated {
                    let row = |k: usize| if present[k] { &rows[k * rl..(k + 1) * rl] } else { &[][..] };
                    quantizer.encode_edge_rotated(row(j), row(i), code, &mut scratch.1);
                } else if quantizer.relative() {
                    quantizer.encode_edge_with(&vectors[j * dims..(j + 1) * dims], owner, code, &mut scratch.0);
                } else {
                    code.copy_from_slice(&codes[j * cb..(j + 1) * cb]);
                }
            }
            out
        };
        for start in (0..n).step_by(EDGE_CODE_CHUNK) {
            let end = (start + EDGE_CODE_CHUNK).min(n);
            let chunk: Vec<Vec<u8>> = if quantizer.relative() {
                use rayon::prelude::*;
                pool.install(|| (start..end).into_par_iter().map_init(Default::default, node_codes).collect())
            } else {
                (start..end).map(|i| node_codes(&mut Default::default(), i)).collect()
            };
            for (i, neighbor_codes) in (start..end).zip(chunk) {
                ids.clear();
                ids.extend(g.neighbors.get(i as NodeId).iter().map(|&j| build_position(j as usize, &layout)));
                let location = layout.build_vector_position(i, n);
                fill_node_record(&mut rec, &layout, &state.tids[i], &ids, &neighbor_codes, location);
                if layout.inline_vectors {
                    fill_vector_record(
                        &mut rec[layout.node_size..],
                        &layout,
                        &codes[i * cb..(i + 1) * cb],
                        &state.vectors[i * dims..(i + 1) * dims],
                    );
                }
                if let Some(full) = packer.push(&rec) {
                    write_new_page(state.index, pg_sys::ForkNumber::MAIN_FORKNUM, &full);
                }
            }
            pgrx::check_for_interrupts!();
        }
        if let Some(last) = packer.finish() {
            write_new_page(state.index, pg_sys::ForkNumber::MAIN_FORKNUM, &last);
        }
        let mut packer = PagePacker::new(PageKind::Vector, layout.vectors_per_page);
        let mut rec = vec![0u8; layout.vector_size];
        if layout.chunks > 1 {
            // Spanning vector records: one chunk a page, the chunks of a record on
            // consecutive pages (build_vector_position).
            let first = layout.build_vector_position(0, n).0;
            let mut chunk = vec![0u8; std::mem::size_of::<ChunkHeader>() + CHUNK_PAYLOAD];
            for i in 0..n {
                fill_vector_record(
                    &mut rec,
                    &layout,
                    &codes[i * cb..(i + 1) * cb],
                    &state.vectors[i * dims..(i + 1) * dims],
                );
                let parts: Vec<&[u8]> = rec.chunks(CHUNK_PAYLOAD).collect();
                for (j, part) in parts.iter().enumerate() {
                    let block = first + (i * layout.chunks + j) as u32;
                    let next = if j + 1 < parts.len() { block + 1 } else { NO_BLOCK };
                    chunk.fill(0);
                    chunk[..4].copy_from_slice(&next.to_ne_bytes());
                    chunk[4..8].copy_from_slice(&(part.len() as u32).to_ne_bytes());
                    chunk[8..8 + part.len()].copy_from_slice(part);
                    let mut one = PagePacker::new(PageKind::Vector, 1);
                    if one.push(&chunk).is_some() {
                        unreachable!("an empty page holds a chunk");
                    }
                    let page = one.finish().expect("a chunk was added");
                    write_new_page(state.index, pg_sys::ForkNumber::MAIN_FORKNUM, &page);
                }
                if i % 64 == 0 {
                    pgrx::check_for_interrupts!();
                }
            }
        }
        for i in (0..n).filter(|_| layout.chunks == 1 && !layout.inline_vectors) {
            fill_vector_record(
                &mut rec,
                &layout,
                &codes[i * cb..(i + 1) * cb],
                &state.vectors[i * dims..(i + 1) * dims],
            );
            if let Some(full) = packer.push(&rec) {
                write_new_page(state.index, pg_sys::ForkNumber::MAIN_FORKNUM, &full);
            }
        }
        if let Some(last) = packer.finish() {
            write_new_page(state.index, pg_sys::ForkNumber::MAIN_FORKNUM, &last);
        }
    }
    state.tids = Vec::new();
    state.vectors = Vec::new();
    if log {
        log_all_pages(state.index);
    }
}

/// WAL-logs every page of a permanent index as a full image.
fn log_all_pages(index: pg_sys::Relation) {
    // SAFETY: the index is open; relpersistence says whether it is WAL-logged at all.
    unsafe {
        if (*(*index).rd_rel).relpersistence == pg_sys::RELPERSISTENCE_PERMANENT as std::ffi::c_char {
            let nblocks = crate::storage::buffer::block_count(index);
            pg_sys::log_newpage_range(index, pg_sys::ForkNumber::MAIN_FORKNUM, 0, nblocks, true);
        }
    }
}

/// `ambuild`.
#[pg_guard]
pub unsafe extern "C-unwind" fn ambuild(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    index_info: *mut pg_sys::IndexInfo,
) -> *mut pg_sys::IndexBuildResult {
    let metric = metric_of(index);
    let mut params = graph_params(index, metric);
    let dims = typmod_dims(index);
    if let Some(d) = dims {
        Layout::for_new_index(d, &mut params);
    }
    // SAFETY: reading an integer GUC (kB) of this backend.
    let budget_bytes = unsafe { pg_sys::maintenance_work_mem } as usize * 1024;
    let mut state = BuildState {
        index,
        metric,
        params,
        dims,
        tids: Vec::new(),
        vectors: Vec::new(),
        budget_bytes,
        overflow: None,
        search: BeamSearch::new(),
        entry: NO_NODE,
        indexed: 0.0,
    };
    report(PROGRESS_CREATEIDX_SUBPHASE, PHASE_LOAD);
    // SAFETY: heap and index are the relations being indexed; the callback gets `state`.
    let heap_tuples = unsafe {
        pg_sys::table_index_build_scan(
            heap,
            index,
            index_info,
            true,
            true,
            Some(build_callback),
            (&raw mut state).cast(),
            std::ptr::null_mut(),
        )
    };
    match state.overflow.take() {
        None => write_graph(&mut state, true),
        // Rows inserted one by one may have lost their only in-edge to a later prune;
        // link any such node back, as VACUUM does. Then every page is logged.
        Some((mut store, unlogged)) => {
            let params = read_meta(index).params();
            let mut search = BeamSearch::new();
            super::reachability::reconnect_unreachable(&mut store, state.entry, &params, &mut search);
            drop(unlogged);
            log_all_pages(index);
        }
    }
    // SAFETY: palloc0 of the result struct PostgreSQL expects.
    unsafe {
        let result =
            pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBuildResult>()).cast::<pg_sys::IndexBuildResult>();
        (*result).heap_tuples = heap_tuples;
        (*result).index_tuples = state.indexed;
        result
    }
}

/// `ambuildempty`: the init fork of an unlogged index (a metapage with no nodes).
#[pg_guard]
pub unsafe extern "C-unwind" fn ambuildempty(index: pg_sys::Relation) {
    let metric = metric_of(index);
    let mut params = graph_params(index, metric);
    let dims = typmod_dims(index).unwrap_or(0);
    if dims > 0 {
        Layout::for_new_index(dims, &mut params);
    }
    let meta = new_meta(&params, metric, dims, NO_NODE);
    let mut image = vec![0u64; PAGE_SIZE / 8];
    write_meta_page(image.as_mut_ptr().cast(), &meta);
    let buf = append_page(index, pg_sys::ForkNumber::INIT_FORKNUM, &image);
    // SAFETY: the init fork's page is pinned and locked; every init fork must be WAL-logged.
    unsafe {
        pg_sys::log_newpage_buffer(buf, true);
        pg_sys::UnlockReleaseBuffer(buf);
    }
}
