//! Reachability repair: links live nodes that no path from the entry point reaches back
//! into the graph. An insert's or a merge's back-edge prune can take away a node's only
//! in-edge; the end of a build past `maintenance_work_mem`, VACUUM and a merge of the whole
//! insert buffer (`omen_flush`, VACUUM's merge) run this afterwards. The caller holds the
//! merge lock, so no other merge or VACUUM edits the graph meanwhile.

use std::collections::HashSet;

use omen_core::graph::{self, BeamSearch, NodeId};

use crate::storage::page_store::PageStore;

/// The list size of the search that finds a host for an unreachable node.
const SEARCH_LIST_SIZE: usize = 128;

/// Links every live node that cannot be reached from `entry` back into the graph: a search
/// toward it (which only finds reachable nodes) gives the closest node with room below the
/// slack degree, which gets an edge to it.
pub fn reconnect_unreachable(
    store: &mut PageStore,
    entry: NodeId,
    params: &graph::GraphParams,
    search: &mut BeamSearch,
) {
    use std::collections::{HashMap, VecDeque};
    let mut adjacency: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    store.for_each_node(|id, node| {
        if !node.is_deleted() {
            adjacency.insert(id, node.neighbors().to_vec());
        }
    });
    let mut reached: HashSet<NodeId> = HashSet::new();
    let reach_from = |start: NodeId, adjacency: &HashMap<NodeId, Vec<NodeId>>, reached: &mut HashSet<NodeId>| {
        let mut queue = VecDeque::from([start]);
        reached.insert(start);
        while let Some(id) = queue.pop_front() {
            for &n in adjacency.get(&id).map(Vec::as_slice).unwrap_or(&[]) {
                if adjacency.contains_key(&n) && reached.insert(n) {
                    queue.push_back(n);
                }
            }
        }
    };
    reach_from(entry, &adjacency, &mut reached);
    let mut lost: Vec<NodeId> = adjacency.keys().copied().filter(|id| !reached.contains(id)).collect();
    lost.sort_unstable();
    let slack = params.slack_degree();
    let mut vec = Vec::new();
    let mut list = Vec::new();
    let mut linked: Vec<NodeId> = Vec::new();
    for u in lost {
        if reached.contains(&u) {
            continue;
        }
        pgrx::check_for_interrupts!();
        graph::GraphStore::vector(store, u, &mut vec);
        search.start(store, &vec, entry);
        search.run(store, &vec, SEARCH_LIST_SIZE);
        let found: Vec<NodeId> = search.results().map(|(id, _)| id).filter(|&id| id != u).collect();
        let mut hosts = found.into_iter();
        let mut earlier = None;
        loop {
            let host = match hosts.next() {
                Some(h) => h,
                // Every node the search returned is full (copies of `u` that already host
                // all the edges they can): the nodes linked earlier in this pass, closest
                // first. Their own lists have room, and copies of `u` are at distance 0.
                None if earlier.is_none() => {
                    let mut near: Vec<(f32, NodeId)> =
                        linked.iter().map(|&h| (graph::GraphStore::distance(store, h, &vec), h)).collect();
                    near.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                    hosts = near.into_iter().map(|(_, h)| h).collect::<Vec<_>>().into_iter();
                    earlier = Some(());
                    continue;
                }
                None => break,
            };
            graph::GraphStore::neighbors(store, host, &mut list);
            if list.len() < slack && !list.contains(&u) {
                list.push(u);
                graph::GraphStore::set_neighbors(store, host, &list);
                adjacency.entry(host).or_default().push(u);
                reach_from(u, &adjacency, &mut reached);
                linked.push(u);
                break;
            }
        }
    }
}
