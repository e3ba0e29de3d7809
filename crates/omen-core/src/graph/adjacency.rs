//! The neighbour lists of a graph being built, in one flat array.
//!
//! A search reads the list of every node it expands. Held as `Vec<Vec<NodeId>>`, that read
//! went to the outer vector (a cache miss at a random node) and then to the list's own
//! allocation (a second miss); a profile of the 64-dimension build put 11–15% of its time in
//! that copy. Here every node owns a row of `cap + 1` slots of one array: its list's length,
//! then the list. A list is one read from one place, which a search can prefetch
//! ([`GraphStore::prefetch_neighbors`](super::GraphStore::prefetch_neighbors)) without
//! reading anything first. (A separate array of lengths missed the cache as often as the
//! lists: the vectors a build streams through evict it.)

use super::NodeId;

/// Neighbour lists of `len()` nodes, each at most `cap` long. Two are equal when their
/// lists are (whatever their rooms).
#[derive(Clone, Debug)]
pub struct Adjacency {
    cap: usize,
    /// `len()` rows of `cap + 1`: the length, then the list.
    rows: Vec<u32>,
}

impl Adjacency {
    /// `n` empty lists of room `cap` each.
    pub fn new(n: usize, cap: usize) -> Self {
        assert!(cap > 0 && cap < u32::MAX as usize, "a list's room must fit a u32");
        let rows = vec![0; n.checked_mul(cap + 1).expect("adjacency too large")];
        crate::huge_pages::advise(&rows);
        Adjacency { cap, rows }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.rows.len() / (self.cap + 1)
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Lists of the given lengths and contents; the room is the longest list (at least 1).
    pub fn from_lists(lists: &[Vec<NodeId>]) -> Self {
        let cap = lists.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut a = Adjacency::new(lists.len(), cap);
        for (id, list) in lists.iter().enumerate() {
            a.set(id as NodeId, list);
        }
        a
    }

    /// Every node's list, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &[NodeId]> + '_ {
        (0..self.len() as NodeId).map(|id| self.get(id))
    }

    /// The row of `id`: its length, then room for `cap` neighbours.
    #[inline]
    fn row(&self, id: NodeId) -> &[u32] {
        let at = id as usize * (self.cap + 1);
        &self.rows[at..at + self.cap + 1]
    }

    #[inline]
    fn row_mut(&mut self, id: NodeId) -> &mut [u32] {
        let at = id as usize * (self.cap + 1);
        &mut self.rows[at..at + self.cap + 1]
    }

    /// The neighbours of `id`.
    #[inline]
    pub fn get(&self, id: NodeId) -> &[NodeId] {
        let row = self.row(id);
        &row[1..1 + row[0] as usize]
    }

    /// The start of `id`'s row, for a prefetch hint: its length and the first 31 slots
    /// (two cache lines; a pruned list is at most `R`, 32 by default).
    #[inline]
    pub(crate) fn row_start(&self, id: NodeId) -> &[u32] {
        &self.row(id)[..(self.cap + 1).min(32)]
    }

    /// Replace the neighbours of `id` with `list`. Panics when `list` is longer than `cap`.
    pub fn set(&mut self, id: NodeId, list: &[NodeId]) {
        assert!(list.len() <= self.cap, "a neighbour list of {} is past the room of {}", list.len(), self.cap);
        let row = self.row_mut(id);
        row[0] = list.len() as u32;
        row[1..1 + list.len()].copy_from_slice(list);
    }

    /// Append `to` to the neighbours of `id`. Panics when the list is full.
    pub fn push(&mut self, id: NodeId, to: NodeId) {
        let cap = self.cap;
        let row = self.row_mut(id);
        let len = row[0] as usize;
        assert!(len < cap, "a neighbour list is full");
        row[1 + len] = to;
        row[0] += 1;
    }

    /// The lists, one vector each.
    pub fn to_lists(&self) -> Vec<Vec<NodeId>> {
        self.iter().map(<[NodeId]>::to_vec).collect()
    }
}

impl PartialEq for Adjacency {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Adjacency {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_push_get() {
        let mut a = Adjacency::new(3, 4);
        assert!(a.get(1).is_empty());
        a.set(1, &[7, 8, 9]);
        a.push(1, 10);
        a.push(2, 5);
        assert_eq!(a.get(0), &[] as &[NodeId]);
        assert_eq!(a.get(1), &[7, 8, 9, 10]);
        assert_eq!(a.get(2), &[5]);
        a.set(1, &[3]);
        assert_eq!(a.to_lists(), vec![vec![], vec![3], vec![5]]);
        assert_eq!(a, Adjacency::from_lists(&[vec![], vec![3], vec![5]]), "rooms differ, lists do not");
        assert_ne!(a, Adjacency::from_lists(&[vec![], vec![3], vec![6]]));
    }

    #[test]
    #[should_panic(expected = "full")]
    fn push_past_the_room_panics() {
        let mut a = Adjacency::new(1, 1);
        a.push(0, 1);
        a.push(0, 2);
    }
}
