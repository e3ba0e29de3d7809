//! A small open-addressing hash set of node ids, sized by the search that uses it.

use super::NodeId;

const EMPTY: NodeId = NodeId::MAX;
const MIN_BITS: u32 = 6;

/// Set of [`NodeId`]s: linear probing, Fibonacci hashing, load factor at most 1/2.
///
/// Clearing costs the table size, which follows the largest recent search, not the graph.
pub(crate) struct IdSet {
    slots: Vec<NodeId>,
    len: usize,
    bits: u32,
}

impl IdSet {
    pub(crate) fn new() -> Self {
        IdSet { slots: vec![EMPTY; 1 << MIN_BITS], len: 0, bits: MIN_BITS }
    }

    #[inline]
    fn slot(&self, id: NodeId) -> usize {
        (id.wrapping_mul(0x9E37_79B9) >> (32 - self.bits)) as usize
    }

    /// Empty the set. A table much larger than the last search needed is shrunk.
    pub(crate) fn clear(&mut self) {
        let want = (self.len * 4).next_power_of_two().max(1 << MIN_BITS);
        if self.slots.len() > want * 4 {
            self.bits = want.trailing_zeros();
            self.slots = vec![EMPTY; want];
        } else if self.len > 0 {
            self.slots.fill(EMPTY);
        }
        self.len = 0;
    }

    /// Add `id`; true if it was not there yet.
    #[inline]
    pub(crate) fn insert(&mut self, id: NodeId) -> bool {
        debug_assert_ne!(id, EMPTY, "u32::MAX is not a valid node id");
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.slot(id);
        loop {
            let s = self.slots[i];
            if s == id {
                return false;
            }
            if s == EMPTY {
                self.slots[i] = id;
                self.len += 1;
                return true;
            }
            i = (i + 1) & mask;
        }
    }

    /// Whether `id` is in the set.
    #[cfg(test)]
    pub(crate) fn contains(&self, id: NodeId) -> bool {
        let mask = self.slots.len() - 1;
        let mut i = self.slot(id);
        loop {
            let s = self.slots[i];
            if s == id {
                return true;
            }
            if s == EMPTY {
                return false;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; 2 << self.bits]);
        self.bits += 1;
        self.len = 0;
        for id in old.into_iter().filter(|&s| s != EMPTY) {
            self.insert(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_contains_clear() {
        let mut s = IdSet::new();
        for round in 0..3u32 {
            for i in 0..1000u32 {
                assert!(s.insert(i * 7 + round));
                assert!(!s.insert(i * 7 + round));
            }
            for i in 0..1000u32 {
                assert!(s.contains(i * 7 + round));
                assert!(!s.contains(i * 7 + round + 7000));
            }
            s.clear();
            assert!(!s.contains(round));
        }
        // After a small search the table shrinks back.
        s.insert(1);
        s.clear();
        assert!(s.slots.len() <= 64);
    }
}
