//! Traversal on codes held in memory: any [`GraphStore`] plus one code per node.

use super::{GraphStore, NodeId};
use crate::quant::{PreparedQuery, Quantizer};

/// A store that traverses on codes, as the page store does: expanding a node estimates its
/// neighbours' distances from their codes (`code_bytes` each, node `i`'s at `i·code_bytes`
/// in `codes`) and computes the node's own exact distance through `inner`. Everything else
/// goes to `inner`. Used by the build, the tests and the code comparison.
pub struct CodedStore<'a, S: GraphStore> {
    pub inner: S,
    quantizer: &'a Quantizer,
    codes: &'a [u8],
    prepared: PreparedQuery,
    query: Vec<f32>,
    scratch: Vec<NodeId>,
}

impl<'a, S: GraphStore> CodedStore<'a, S> {
    /// `inner` traversed on `codes`, made by `quantizer`.
    pub fn new(inner: S, quantizer: &'a Quantizer, codes: &'a [u8]) -> Self {
        CodedStore {
            inner,
            quantizer,
            codes,
            prepared: PreparedQuery::default(),
            query: Vec::new(),
            scratch: Vec::new(),
        }
    }
}

impl<S: GraphStore> GraphStore for CodedStore<'_, S> {
    fn distance(&mut self, id: NodeId, query: &[f32]) -> f32 {
        self.inner.distance(id, query)
    }
    fn neighbors(&mut self, id: NodeId, out: &mut Vec<NodeId>) {
        self.inner.neighbors(id, out)
    }
    fn vector(&mut self, id: NodeId, out: &mut Vec<f32>) {
        self.inner.vector(id, out)
    }
    fn set_neighbors(&mut self, id: NodeId, neighbors: &[NodeId]) {
        self.inner.set_neighbors(id, neighbors)
    }
    fn is_live(&mut self, id: NodeId) -> bool {
        self.inner.is_live(id)
    }
    /// The node's list, and its vector: expanding it computes its exact distance.
    fn prefetch_neighbors(&mut self, id: NodeId) {
        self.inner.prefetch_neighbors(id);
        self.inner.prefetch(id);
    }
    fn prepare(&mut self, query: &[f32]) {
        self.query.clear();
        self.query.extend_from_slice(query);
        self.quantizer.prepare(query, &mut self.prepared);
    }
    fn expand_coded(
        &mut self,
        id: NodeId,
        keep: &mut dyn FnMut(NodeId) -> bool,
        out: &mut Vec<(NodeId, f32)>,
    ) -> Option<(f32, bool)> {
        let cb = self.quantizer.code_bytes();
        // The node's own vector, for its exact distance below: its loads overlap the
        // estimates.
        self.inner.prefetch(id);
        self.inner.neighbors(id, &mut self.scratch);
        // The unseen neighbours' codes are scattered over `codes`: ask for all of them
        // first, so the loads overlap, then estimate.
        self.scratch.retain(|&n| keep(n));
        for &n in &self.scratch {
            super::prefetch_slice(&self.codes[n as usize * cb..(n as usize + 1) * cb]);
        }
        for &n in &self.scratch {
            let code = &self.codes[n as usize * cb..(n as usize + 1) * cb];
            out.push((n, self.quantizer.estimate(&self.prepared, code)));
        }
        let exact = self.inner.distance(id, &self.query);
        Some((exact, self.inner.is_live(id)))
    }
}
