//! The task graph: built from `depends_on`, checked for cycles (each reported with its path).

use super::*;

/// Reports each cycle once, naming its tasks in dependency order (`a -> b -> c -> a`).
pub(super) fn check_cycles(
    spec: &DagSpec,
    (graph, nodes): &TaskGraph,
    places: Option<&Places<'_>>,
    out: &mut Vec<Diagnostic>,
) {
    for component in petgraph::algo::tarjan_scc(&graph) {
        if component.len() < 2 {
            continue;
        }
        let members: HashSet<NodeIndex> = component.iter().copied().collect();
        // Start from the member written first in the file, for a stable message.
        let Some(start) = spec
            .tasks
            .keys()
            .filter_map(|id| nodes.get(id))
            .copied()
            .find(|ix| members.contains(ix))
        else {
            continue;
        };
        let path = cycle_through(graph, &members, start);
        let names: Vec<&str> = path.iter().map(|ix| graph[*ix].as_str()).collect();
        let loc = places.and_then(|p| p.task_key(names[0], "depends_on"));
        out.push(Diagnostic::error(
            loc,
            format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]),
        ));
    }
}

/// A shortest path from `start` back to itself inside one strongly connected component.
pub(super) fn cycle_through(
    graph: &StableDiGraph<String, ()>,
    members: &HashSet<NodeIndex>,
    start: NodeIndex,
) -> Vec<NodeIndex> {
    let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(ix) = queue.pop_front() {
        for next in graph.neighbors(ix) {
            if next == start {
                let mut path = vec![ix];
                let mut cur = ix;
                while let Some(p) = parent.get(&cur) {
                    path.push(*p);
                    cur = *p;
                }
                path.reverse();
                return path;
            }
            if members.contains(&next) && !parent.contains_key(&next) && next != start {
                parent.insert(next, ix);
                queue.push_back(next);
            }
        }
    }
    vec![start]
}

/// The tasks as graph nodes (edges upstream → downstream) and each task's node.
pub(super) type TaskGraph = (StableDiGraph<String, ()>, HashMap<String, NodeIndex>);

/// The tasks reachable from `start` along edges in `direction`, by id.
pub(super) fn reach(
    graph: &StableDiGraph<String, ()>,
    start: Option<NodeIndex>,
    direction: petgraph::Direction,
) -> std::collections::BTreeSet<String> {
    use petgraph::visit::{Dfs, Reversed, Walker as _};
    let Some(start) = start else {
        return std::collections::BTreeSet::new();
    };
    // The walk yields `start` first; it is not reachable from itself in a DAG.
    let reached: Vec<NodeIndex> = match direction {
        petgraph::Direction::Outgoing => Dfs::new(graph, start).iter(graph).skip(1).collect(),
        petgraph::Direction::Incoming => Dfs::new(Reversed(graph), start)
            .iter(Reversed(graph))
            .skip(1)
            .collect(),
    };
    reached.into_iter().map(|n| graph[n].clone()).collect()
}

pub(super) fn graph_of(spec: &DagSpec) -> TaskGraph {
    let mut graph = StableDiGraph::with_capacity(spec.tasks.len(), spec.tasks.len());
    let mut nodes = HashMap::with_capacity(spec.tasks.len());
    for id in spec.tasks.keys() {
        nodes.insert(id.clone(), graph.add_node(id.clone()));
    }
    for (id, task) in &spec.tasks {
        let mut seen = HashSet::new();
        for dep in task
            .common
            .depends_on
            .iter()
            .filter(|d| *d != id && seen.insert(*d))
        {
            if let (Some(a), Some(b)) = (nodes.get(dep), nodes.get(id)) {
                graph.add_edge(*a, *b, ());
            }
        }
    }
    (graph, nodes)
}
