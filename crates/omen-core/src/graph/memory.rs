//! An in-memory [`GraphStore`].

use super::{BuiltGraph, GraphStore, NodeId};
use crate::distance::Metric;

/// An in-memory [`GraphStore`]: the vectors stored contiguously (row-major), one neighbour
/// list per node, and an optional deleted flag per node. Used by tests, benchmarks and
/// [`build`](super::build).
#[derive(Clone, Debug)]
pub struct MemoryStore {
    dim: usize,
    metric: Metric,
    vectors: Vec<f32>,
    neighbors: Vec<Vec<NodeId>>,
    deleted: Vec<bool>,
}

impl MemoryStore {
    /// An empty store for vectors of `dim` dimensions.
    pub fn new(dim: usize, metric: Metric) -> Self {
        assert!(dim > 0, "dim must be positive");
        MemoryStore { dim, metric, vectors: Vec::new(), neighbors: Vec::new(), deleted: Vec::new() }
    }

    /// A store over `vectors` (row-major, `len / dim` nodes) with empty neighbour lists.
    pub fn from_vectors(vectors: Vec<f32>, dim: usize, metric: Metric) -> Self {
        assert!(dim > 0 && vectors.len().is_multiple_of(dim), "vectors.len() must be a multiple of dim");
        let n = vectors.len() / dim;
        MemoryStore { dim, metric, vectors, neighbors: vec![Vec::new(); n], deleted: vec![false; n] }
    }

    /// A store over `vectors` with the neighbour lists of a built graph.
    pub fn from_graph(vectors: Vec<f32>, dim: usize, metric: Metric, graph: BuiltGraph) -> Self {
        let mut store = Self::from_vectors(vectors, dim, metric);
        assert_eq!(graph.neighbors.len(), store.len(), "graph and vectors disagree on the node count");
        store.neighbors = graph.neighbors.to_lists();
        store
    }

    /// Append a vector with an empty neighbour list; returns its id.
    pub fn push(&mut self, vec: &[f32]) -> NodeId {
        assert_eq!(vec.len(), self.dim, "vector has the wrong dimension");
        let id = NodeId::try_from(self.neighbors.len()).expect("too many nodes");
        assert_ne!(id, NodeId::MAX, "too many nodes");
        self.vectors.extend_from_slice(vec);
        self.neighbors.push(Vec::new());
        self.deleted.push(false);
        id
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.neighbors.len()
    }

    /// Whether the store has no nodes.
    pub fn is_empty(&self) -> bool {
        self.neighbors.is_empty()
    }

    /// Dimensions per vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The metric of [`GraphStore::distance`].
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The vector of `id`, borrowed.
    pub fn vector_of(&self, id: NodeId) -> &[f32] {
        let i = id as usize * self.dim;
        &self.vectors[i..i + self.dim]
    }

    /// The neighbour list of `id`, borrowed.
    pub fn neighbors_of(&self, id: NodeId) -> &[NodeId] {
        &self.neighbors[id as usize]
    }

    /// All neighbour lists, indexed by node id.
    pub fn adjacency(&self) -> &[Vec<NodeId>] {
        &self.neighbors
    }

    /// Mark `id` deleted (still traversed, never returned) or live again.
    pub fn set_deleted(&mut self, id: NodeId, deleted: bool) {
        self.deleted[id as usize] = deleted;
    }
}

impl GraphStore for MemoryStore {
    #[inline]
    fn distance(&mut self, id: NodeId, query: &[f32]) -> f32 {
        self.metric.rank_distance(self.vector_of(id), query)
    }

    fn neighbors(&mut self, id: NodeId, out: &mut Vec<NodeId>) {
        out.clear();
        out.extend_from_slice(&self.neighbors[id as usize]);
    }

    fn vector(&mut self, id: NodeId, out: &mut Vec<f32>) {
        out.clear();
        out.extend_from_slice(self.vector_of(id));
    }

    fn set_neighbors(&mut self, id: NodeId, neighbors: &[NodeId]) {
        let list = &mut self.neighbors[id as usize];
        list.clear();
        list.extend_from_slice(neighbors);
    }

    fn is_live(&mut self, id: NodeId) -> bool {
        !self.deleted[id as usize]
    }

    #[inline]
    fn prefetch(&mut self, id: NodeId) {
        super::prefetch_slice(self.vector_of(id));
    }
}
