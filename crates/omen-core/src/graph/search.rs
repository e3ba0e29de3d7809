//! Resumable greedy beam search (DiskANN Algorithm 1).

use std::cmp::Ordering;

use super::id_set::IdSet;
use super::{GraphStore, NodeId, sane};

/// One entry of the candidate list.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    dist: f32,
    id: NodeId,
    expanded: bool,
    live: bool,
}

impl Candidate {
    /// The search order: distance, then id (so ties are deterministic).
    #[inline]
    fn order(&self, other: &Candidate) -> Ordering {
        self.dist.total_cmp(&other.dist).then(self.id.cmp(&other.id))
    }
}

/// A resumable greedy beam search.
///
/// The index scan streams results: it calls [`run`](Self::run) with list size `L`, returns
/// the [`results`](Self::results) in order, and when the executor wants more rows calls
/// `run` again with a larger list size on the same state. That continues the search rather
/// than restarting it: the visited set, the expanded nodes and every candidate seen so far
/// are kept (candidates that fell off the end of the list wait in a reserve and come back
/// when the list grows), so no distance is computed twice and no result is lost.
///
/// State: the candidate list, sorted by (distance, id) with binary insertion and at most
/// `list_size` long; the [`Reserve`] (everything that fell off the list, all no closer than the
/// list's last entry: an unsorted vector, sorted only when the list grows, since most
/// searches never take anything back from it); a hash set of every node whose distance was
/// computed (sized by the search); and the expanded nodes in expansion order. All buffers
/// are reused by the next [`start`](Self::start).
pub struct BeamSearch {
    list: Vec<Candidate>,
    reserve: Reserve,
    seen: IdSet,
    visited: Vec<(NodeId, f32)>,
    /// No list entry before this index is unexpanded.
    cursor: usize,
    list_size: usize,
    neighbor_buf: Vec<NodeId>,
    scored_buf: Vec<(NodeId, f32)>,
    distance_count: usize,
    /// The store traverses on codes ([`GraphStore::expand_coded`]): list distances are
    /// estimates, and only expanded nodes have exact distances.
    coded: bool,
    /// Expanded nodes' liveness, parallel to `visited` (coded searches).
    visited_live: Vec<bool>,
    /// The results view: the best `list_size` live nodes by exact distance.
    ranked: Vec<(NodeId, f32)>,
    /// The exact distances of the nodes expanded so far, as bits, with their counts. A node
    /// expanded at a distance already seen is taken for a copy of an earlier one: exact
    /// copies of a row (a sentence stored a thousand times) would otherwise fill the whole
    /// list with ties, and the search would stop there, when closer rows lay beyond (on
    /// debian-minilm-384 with copies added, recall@10 stopped at 0.955 whatever the list
    /// size). A copy stays among the results but its list slot goes to the next candidate.
    /// Two different nodes at exactly the same distance only cost one more expansion. Once
    /// more copies than the list size were expanded, a copy's neighbours are not offered
    /// (they are its original's), so a search does not walk a thousand copies.
    exact_seen: std::collections::HashMap<u32, u32>,
    /// The copies taken out of the list (exact searches rank their results from it).
    released: Vec<Candidate>,
}

impl Default for BeamSearch {
    fn default() -> Self {
        Self::new()
    }
}

impl BeamSearch {
    /// An empty search; allocations grow on first use and are reused afterwards.
    pub fn new() -> Self {
        BeamSearch {
            list: Vec::new(),
            reserve: Reserve::default(),
            seen: IdSet::new(),
            visited: Vec::new(),
            cursor: 0,
            list_size: 0,
            neighbor_buf: Vec::new(),
            scored_buf: Vec::new(),
            distance_count: 0,
            coded: false,
            visited_live: Vec::new(),
            ranked: Vec::new(),
            exact_seen: Default::default(),
            released: Vec::new(),
        }
    }

    /// Start a new query from `entry` (reuses allocations; clears state). Computes the
    /// entry's distance; call [`run`](Self::run) to search.
    pub fn start<S: GraphStore>(&mut self, store: &mut S, query: &[f32], entry: NodeId) {
        self.list.clear();
        self.reserve.clear();
        self.seen.clear();
        self.visited.clear();
        self.cursor = 0;
        self.list_size = 0;
        self.distance_count = 1;
        self.visited_live.clear();
        self.ranked.clear();
        self.exact_seen.clear();
        self.released.clear();
        self.coded = false;
        store.prepare(query);
        self.seen.insert(entry);
        let dist = sane(store.distance(entry, query));
        let live = store.is_live(entry);
        // The list may hold one entry before the first run sets its size.
        self.list.push(Candidate { dist, id: entry, expanded: false, live });
    }

    /// Expand the closest unexpanded candidate among the best `list_size` until none is
    /// left. May be called again with a larger (or smaller) `list_size` to continue.
    /// A `list_size` of 0 is taken as 1.
    pub fn run<S: GraphStore>(&mut self, store: &mut S, query: &[f32], list_size: usize) {
        self.resize_list(list_size.max(1), store);
        let mut neighbors = std::mem::take(&mut self.neighbor_buf);
        let mut scored = std::mem::take(&mut self.scored_buf);
        loop {
            while self.cursor < self.list.len() && self.list[self.cursor].expanded {
                self.cursor += 1;
            }
            let Some(c) = self.list.get_mut(self.cursor) else { break };
            c.expanded = true;
            let (id, dist, live) = (c.id, c.dist, c.live);
            // The next unexpanded entry is expanded next unless a closer one comes in: its
            // list is fetched while this node's neighbours are scored.
            if let Some(next) = self.list[self.cursor + 1..].iter().find(|c| !c.expanded) {
                store.prefetch_neighbors(next.id);
            }
            scored.clear();
            let seen = &mut self.seen;
            if let Some((exact, live)) = store.expand_coded(id, &mut |n| seen.insert(n), &mut scored) {
                self.coded = true;
                let exact = sane(exact);
                self.visited.push((id, exact));
                self.visited_live.push(live);
                self.distance_count += scored.len();
                if self.copy_expanded(exact, store) {
                    continue;
                }

                for &(n, est) in &scored {
                    // Liveness is only known once a node is expanded (its page is read then).
                    self.offer(Candidate { dist: sane(est), id: n, expanded: false, live: true }, store);
                }
                continue;
            }
            self.visited.push((id, dist));
            self.visited_live.push(live);
            if self.copy_expanded(dist, store) {
                continue;
            }
            store.neighbors(id, &mut neighbors);
            // Keep the unseen ones and ask for all their vectors at once (the reads overlap),
            // then compute the distances.
            neighbors.retain(|&n| self.seen.insert(n));
            for &n in &neighbors {
                store.prefetch(n);
            }
            for &n in &neighbors {
                self.distance_count += 1;
                let dist = sane(store.distance(n, query));
                self.offer(Candidate { dist, id: n, expanded: false, live: true }, store);
            }
        }
        self.neighbor_buf = neighbors;
        self.scored_buf = scored;
        self.rank();
    }

    /// Fills the results view: in a coded search, the expanded live nodes by exact
    /// distance; otherwise the list's live entries (already in exact order).
    fn rank(&mut self) {
        self.ranked.clear();
        if self.coded {
            let live = self.visited.iter().zip(&self.visited_live).filter(|(_, l)| **l).map(|(v, _)| *v);
            self.ranked.extend(live);
            self.ranked.sort_unstable_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            self.ranked.truncate(self.list_size);
        } else {
            self.ranked.extend(self.list.iter().filter(|c| c.live).map(|c| (c.id, c.dist)));
            if !self.released.is_empty() {
                // Copies that gave their list slot back are results still.
                self.ranked.extend(self.released.iter().filter(|c| c.live).map(|c| (c.id, c.dist)));
                self.ranked.sort_unstable_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                self.ranked.truncate(self.list_size);
            }
        }
    }

    /// Make the list at most `list_size` long, moving entries between it and the reserve.
    fn resize_list<S: GraphStore>(&mut self, list_size: usize, store: &mut S) {
        self.list_size = list_size;
        while self.list.len() > list_size {
            let c = self.list.pop().expect("list is longer than list_size");
            self.reserve.push(c);
        }
        // Everything in the reserve is no closer than the list's last entry, so it appends
        // in order.
        while self.list.len() < list_size {
            match self.reserve.pop_in_order() {
                Some(mut c) => {
                    if !self.coded {
                        c.live = store.is_live(c.id);
                    }
                    self.list.push(c);
                }
                None => break,
            }
        }
        self.cursor = self.cursor.min(self.list.len());
    }

    /// Called for the node just expanded (at the cursor), at exact distance `exact`: when an
    /// earlier expanded node had the same distance, takes it for a copy and gives its list
    /// slot back ([`BeamSearch::release_slot`]). Returns true when its neighbours should not
    /// be offered: more copies than the list size were expanded, so more cannot change the
    /// results, and the chain of copies is not followed further.
    fn copy_expanded<S: GraphStore>(&mut self, exact: f32, store: &mut S) -> bool {
        let copies = self.exact_seen.entry(exact.to_bits()).or_insert(0);
        *copies += 1;
        if *copies == 1 {
            return false;
        }
        let enough = *copies as usize > self.list_size;
        self.release_slot(store);
        enough
    }

    /// Takes the just-expanded entry at the cursor out of the list, and moves the reserve's
    /// closest entry (no closer than the list's last) to the end of the list instead.
    fn release_slot<S: GraphStore>(&mut self, store: &mut S) {
        let copy = self.list.remove(self.cursor);
        self.released.push(copy);
        let Some(mut c) = self.reserve.take_closest() else { return };
        // As when the list grows (`resize_list`): a reserve entry's liveness was never looked
        // up; an exact search's results are its list, so it is looked up now. (A coded
        // search learns liveness when it expands the node.)
        if !self.coded {
            c.live = store.is_live(c.id);
        }
        self.list.push(c);
    }

    /// Put a newly seen node in the list (binary insertion) or in the reserve.
    #[inline]
    fn offer<S: GraphStore>(&mut self, mut c: Candidate, store: &mut S) {
        if self.list.len() >= self.list_size {
            let last = self.list.last().expect("list_size >= 1");
            if c.order(last) != Ordering::Less {
                // Liveness only matters in the list: it is looked up if the entry comes back.
                self.reserve.push(c);
                return;
            }
            let evicted = self.list.pop().expect("list is full");
            self.reserve.push(evicted);
        }
        if !self.coded {
            c.live = store.is_live(c.id);
        }
        let pos = self.list.partition_point(|x| x.order(&c) == Ordering::Less);
        self.list.insert(pos, c);
        if pos < self.cursor {
            self.cursor = pos;
        }
    }

    /// Candidates found so far, sorted by exact distance (closest first), at most the
    /// current list size. Nodes that are not live are left out of this view but kept in the
    /// traversal, so the view may be shorter than the list size. In a coded search these
    /// are the best expanded nodes (only they have exact distances).
    pub fn results(&self) -> impl Iterator<Item = (NodeId, f32)> + '_ {
        self.ranked.iter().copied()
    }

    /// All nodes expanded by the search so far, in expansion order, with their exact
    /// distances to the query (the candidate pool of insert and of delete repair).
    /// Includes nodes that are not live.
    pub fn visited(&self) -> &[(NodeId, f32)] {
        &self.visited
    }

    /// Number of distance computations done since [`start`](Self::start) (for tests/stats).
    pub fn distance_count(&self) -> usize {
        self.distance_count
    }

    /// The list size of the last [`run`](Self::run).
    pub fn list_size(&self) -> usize {
        self.list_size
    }

    /// True when the search has nothing left to find: every candidate ever seen is in the
    /// list and expanded, so a larger list size would return nothing new.
    pub fn is_exhausted(&self) -> bool {
        self.reserve.is_empty() && self.list.iter().all(|c| c.expanded)
    }
}

/// The candidates that fell off a search's list, all no closer than its last entry. Held
/// unsorted at first: most searches push thousands and never take one back. Sorted
/// (farthest first) when the list grows and takes several in order. A min-heap from the
/// first copy of an expanded node on ([`BeamSearch::release_slot`] takes the closest, one
/// at a time, once per copy): scanning an unsorted reserve of thousands for each of up to
/// `list_size` copies was half of a build over data with a row stored 2,000 times.
#[derive(Default)]
struct Reserve {
    items: Vec<Candidate>,
    state: ReserveState,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum ReserveState {
    #[default]
    Unsorted,
    /// Farthest first, so `pop` gives the closest.
    Sorted,
    /// A binary min-heap by [`Candidate::order`]: `items[i]` precedes `items[2i + 1]` and
    /// `items[2i + 2]`.
    Heap,
}

impl Reserve {
    fn clear(&mut self) {
        self.items.clear();
        self.state = ReserveState::Unsorted;
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    #[inline]
    fn push(&mut self, c: Candidate) {
        self.items.push(c);
        match self.state {
            ReserveState::Heap => self.sift_up(self.items.len() - 1),
            _ => self.state = ReserveState::Unsorted,
        }
    }

    /// The closest entry, for a list that grows by several.
    fn pop_in_order(&mut self) -> Option<Candidate> {
        if self.state == ReserveState::Unsorted {
            self.items.sort_unstable_by(|a, b| b.order(a));
            self.state = ReserveState::Sorted;
        }
        self.take_closest()
    }

    /// The closest entry, for one slot (a heap from now on, unless sorted already).
    fn take_closest(&mut self) -> Option<Candidate> {
        match self.state {
            ReserveState::Sorted => self.items.pop(),
            ReserveState::Unsorted => {
                self.heapify();
                self.take_closest()
            }
            ReserveState::Heap => {
                let last = self.items.pop()?;
                if self.items.is_empty() {
                    return Some(last);
                }
                let top = std::mem::replace(&mut self.items[0], last);
                self.sift_down(0);
                Some(top)
            }
        }
    }

    fn heapify(&mut self) {
        for i in (0..self.items.len() / 2).rev() {
            self.sift_down(i);
        }
        self.state = ReserveState::Heap;
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.items[i].order(&self.items[parent]) != Ordering::Less {
                break;
            }
            self.items.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.items.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut first = i;
            if l < n && self.items[l].order(&self.items[first]) == Ordering::Less {
                first = l;
            }
            if r < n && self.items[r].order(&self.items[first]) == Ordering::Less {
                first = r;
            }
            if first == i {
                return;
            }
            self.items.swap(i, first);
            i = first;
        }
    }
}

#[cfg(test)]
mod reserve_tests {
    use super::*;

    fn candidate(dist: f32, id: NodeId) -> Candidate {
        Candidate { dist, id, expanded: false, live: true }
    }

    /// Whatever mix of pushes and takes, each take gives the closest entry held.
    #[test]
    fn takes_the_closest_in_every_state() {
        let mut rng = super::super::build::SplitMix64(7);
        let mut reserve = Reserve::default();
        let mut model: Vec<(f32, NodeId)> = Vec::new();
        for step in 0..5_000u32 {
            let op = rng.below(10);
            if op < 6 || model.is_empty() {
                let c = candidate(rng.below(50) as f32, step);
                reserve.push(c);
                model.push((c.dist, c.id));
            } else {
                let got = if op < 8 { reserve.take_closest() } else { reserve.pop_in_order() }.expect("not empty");
                let at = (0..model.len())
                    .min_by(|&a, &b| model[a].0.total_cmp(&model[b].0).then(model[a].1.cmp(&model[b].1)))
                    .expect("not empty");
                assert_eq!((got.dist, got.id), model.swap_remove(at), "step {step}");
            }
            assert_eq!(reserve.is_empty(), model.is_empty());
        }
    }
}
