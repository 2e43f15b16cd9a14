//! SVG drawn on the server: the DAG's graph (layered left to right, nodes ordered within a
//! layer by the barycenter of their neighbours so edges do not cross needlessly) and a run's
//! Gantt chart.

use std::collections::HashMap;
use std::fmt::Write;

use chrono::{DateTime, Utc};
use petgraph::Direction;
use weir_model::Dag;

use crate::error::escape;

const NODE_W: f64 = 170.0;
const NODE_H: f64 = 34.0;
const GAP_X: f64 = 70.0;
const GAP_Y: f64 = 18.0;
const PAD: f64 = 10.0;

/// Each task's layer and position in it, after crossing reduction.
pub(crate) fn layout(dag: &Dag) -> Vec<Vec<String>> {
    let mut layers: Vec<Vec<String>> = dag
        .levels()
        .into_iter()
        .map(|l| l.into_iter().map(str::to_owned).collect())
        .collect();
    let neighbours = |id: &str, dir: Direction| -> Vec<String> {
        dag.node(id)
            .map(|ix| {
                dag.graph
                    .neighbors_directed(ix, dir)
                    .map(|n| dag.graph[n].clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    // A few sweeps down and up, each ordering a layer by the mean position of its nodes'
    // neighbours in the layer just fixed (the barycenter heuristic).
    for sweep in 0..4 {
        let down = sweep % 2 == 0;
        let order: Vec<usize> = if down {
            (1..layers.len()).collect()
        } else {
            (0..layers.len().saturating_sub(1)).rev().collect()
        };
        for i in order {
            let position: HashMap<String, usize> = layers
                .iter()
                .flat_map(|l| l.iter().enumerate().map(|(p, id)| (id.clone(), p)))
                .collect();
            let dir = if down {
                Direction::Incoming
            } else {
                Direction::Outgoing
            };
            let mut keyed: Vec<(f64, usize, String)> = layers[i]
                .iter()
                .enumerate()
                .map(|(at, id)| {
                    let ps: Vec<f64> = neighbours(id, dir)
                        .iter()
                        .filter_map(|n| position.get(n).map(|&p| p as f64))
                        .collect();
                    let key = if ps.is_empty() {
                        at as f64
                    } else {
                        ps.iter().sum::<f64>() / ps.len() as f64
                    };
                    (key, at, id.clone())
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            layers[i] = keyed.into_iter().map(|(_, _, id)| id).collect();
        }
    }
    layers
}

/// The DAG as SVG; with `states`, nodes are colored by state and link to `href(task)`.
pub(crate) fn dag_svg(
    dag: &Dag,
    states: &HashMap<String, String>,
    href: &dyn Fn(&str) -> Option<String>,
) -> String {
    let layers = layout(dag);
    let tallest = layers.iter().map(Vec::len).max().unwrap_or(1);
    let height = PAD * 2.0 + tallest as f64 * (NODE_H + GAP_Y) - GAP_Y;
    let width = PAD * 2.0 + layers.len() as f64 * (NODE_W + GAP_X) - GAP_X;
    let mut at: HashMap<&str, (f64, f64)> = HashMap::new();
    for (x, layer) in layers.iter().enumerate() {
        // Center each layer vertically.
        let offset = (tallest - layer.len()) as f64 * (NODE_H + GAP_Y) / 2.0;
        for (y, id) in layer.iter().enumerate() {
            at.insert(
                id.as_str(),
                (
                    PAD + x as f64 * (NODE_W + GAP_X),
                    PAD + offset + y as f64 * (NODE_H + GAP_Y),
                ),
            );
        }
    }
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="dag-graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" height="{height:.0}" role="img" aria-label="graph of {}">"#,
        escape(dag.id())
    );
    svg.push_str(
        r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path class="arrow" d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>"#,
    );
    for e in dag.graph.edge_indices() {
        let Some((a, b)) = dag.graph.edge_endpoints(e) else {
            continue;
        };
        let (Some(&(x1, y1)), Some(&(x2, y2))) =
            (at.get(dag.graph[a].as_str()), at.get(dag.graph[b].as_str()))
        else {
            continue;
        };
        let (sx, sy, tx, ty) = (x1 + NODE_W, y1 + NODE_H / 2.0, x2, y2 + NODE_H / 2.0);
        let mid = (sx + tx) / 2.0;
        let _ = write!(
            svg,
            r#"<path class="edge" marker-end="url(#arrow)" d="M{sx:.1},{sy:.1} C{mid:.1},{sy:.1} {mid:.1},{ty:.1} {tx:.1},{ty:.1}"/>"#
        );
    }
    for layer in &layers {
        for id in layer {
            let Some(&(x, y)) = at.get(id.as_str()) else {
                continue;
            };
            let state = states.get(id).map_or("none", String::as_str);
            let label = if id.chars().count() > 22 {
                format!("{}…", id.chars().take(21).collect::<String>())
            } else {
                id.clone()
            };
            let node = format!(
                r#"<g class="node state-{state}" data-task="{task}"><title>{task} ({state})</title><rect x="{x:.1}" y="{y:.1}" width="{NODE_W}" height="{NODE_H}" rx="5"/><text x="{tx:.1}" y="{ty:.1}">{label}</text></g>"#,
                task = escape(id),
                state = escape(state),
                label = escape(&label),
                tx = x + 10.0,
                ty = y + NODE_H / 2.0 + 5.0,
            );
            match href(id) {
                Some(h) => {
                    let _ = write!(svg, r#"<a href="{}">{node}</a>"#, escape(&h));
                }
                None => svg.push_str(&node),
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

/// One bar of a Gantt chart.
pub(crate) struct Bar {
    pub(crate) label: String,
    pub(crate) state: String,
    pub(crate) start: DateTime<Utc>,
    pub(crate) end: DateTime<Utc>,
    pub(crate) href: String,
}

/// A Gantt chart of the bars, on one time axis from the first start to the last end.
pub(crate) fn gantt_svg(bars: &[Bar]) -> String {
    const LABEL_W: f64 = 190.0;
    const CHART_W: f64 = 640.0;
    const ROW_H: f64 = 22.0;
    let (Some(t0), Some(t1)) = (
        bars.iter().map(|b| b.start).min(),
        bars.iter().map(|b| b.end).max(),
    ) else {
        return r#"<p class="muted">No task has started yet.</p>"#.to_owned();
    };
    let span = ((t1 - t0).num_milliseconds().max(1)) as f64;
    let height = 24.0 + bars.len() as f64 * ROW_H;
    let width = LABEL_W + CHART_W + 10.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="gantt" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" height="{height:.0}" role="img" aria-label="Gantt chart">"#
    );
    let _ = write!(
        svg,
        r#"<text class="axis" x="{LABEL_W}" y="14">0s</text><text class="axis" x="{:.0}" y="14" text-anchor="end">{}</text>"#,
        LABEL_W + CHART_W,
        crate::view::human_duration(t1 - t0)
    );
    for (i, b) in bars.iter().enumerate() {
        let y = 22.0 + i as f64 * ROW_H;
        let x = LABEL_W + (b.start - t0).num_milliseconds() as f64 / span * CHART_W;
        let w = ((b.end - b.start).num_milliseconds() as f64 / span * CHART_W).max(2.0);
        let _ = write!(
            svg,
            r#"<a href="{href}"><g class="bar state-{state}"><title>{label}: {took} ({state})</title><text x="0" y="{ty:.1}">{label}</text><rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" rx="3"/></g></a>"#,
            href = escape(&b.href),
            state = escape(&b.state),
            label = escape(&b.label),
            took = crate::view::human_duration(b.end - b.start),
            ty = y + 14.0,
            h = ROW_H - 6.0,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The lineage graph as SVG: DAGs (boxes) and assets (rounded), an arrow from a DAG to each
/// asset it writes and from each asset to the DAGs that read it or run on it (dashed), laid
/// out left to right by longest path (a cycle is cut where it closes).
pub(crate) fn lineage_svg(
    edges: &[weir_store::LineageEdge],
    href: &dyn Fn(bool, &str) -> String,
) -> String {
    // Node ids: `d:` DAGs, `a:` assets.
    let mut links: Vec<(String, String, bool)> = Vec::new();
    // A DAG reading an asset it writes itself (a seed then a copy) is inside the DAG: no edge.
    let writes = |dag: &str, asset: &str| {
        edges
            .iter()
            .any(|e| e.dag_id == dag && e.asset_key == asset && e.access == "write")
    };
    for e in edges
        .iter()
        .filter(|e| e.access == "write" || !writes(&e.dag_id, &e.asset_key))
    {
        let (dag, asset) = (format!("d:{}", e.dag_id), format!("a:{}", e.asset_key));
        let link = match e.access.as_str() {
            "write" => (dag, asset, false),
            "trigger" => (asset, dag, true),
            _ => (asset, dag, false),
        };
        if !links.iter().any(|l| l.0 == link.0 && l.1 == link.1) {
            links.push(link);
        }
    }
    let mut nodes: Vec<String> = links
        .iter()
        .flat_map(|(a, b, _)| [a.clone(), b.clone()])
        .collect();
    nodes.sort();
    nodes.dedup();
    let mut layer: HashMap<&str, usize> = nodes.iter().map(|n| (n.as_str(), 0)).collect();
    for _ in 0..nodes.len() {
        let mut changed = false;
        for (a, b, _) in &links {
            let next = layer[a.as_str()] + 1;
            if next > layer[b.as_str()] && next < nodes.len() {
                layer.insert(b.as_str(), next);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let columns = layer.values().max().map_or(0, |m| m + 1);
    let mut cols: Vec<Vec<&str>> = vec![Vec::new(); columns];
    for n in &nodes {
        cols[layer[n.as_str()]].push(n.as_str());
    }
    const W: f64 = 230.0;
    let tallest = cols.iter().map(Vec::len).max().unwrap_or(1);
    let height = PAD * 2.0 + tallest as f64 * (NODE_H + GAP_Y) - GAP_Y;
    let width = PAD * 2.0 + columns as f64 * (W + GAP_X) - GAP_X;
    let mut at: HashMap<&str, (f64, f64)> = HashMap::new();
    for (x, col) in cols.iter().enumerate() {
        for (y, id) in col.iter().enumerate() {
            at.insert(
                id,
                (
                    PAD + x as f64 * (W + GAP_X),
                    PAD + y as f64 * (NODE_H + GAP_Y),
                ),
            );
        }
    }
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="lineage-graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" height="{height:.0}" role="img" aria-label="lineage of DAGs and assets">"#
    );
    svg.push_str(
        r#"<defs><marker id="larrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path class="arrow" d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>"#,
    );
    for (a, b, trigger) in &links {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (at.get(a.as_str()), at.get(b.as_str())) else {
            continue;
        };
        let (sx, sy, tx, ty) = (x1 + W, y1 + NODE_H / 2.0, x2, y2 + NODE_H / 2.0);
        let mid = (sx + tx) / 2.0;
        let class = if *trigger { "edge trigger" } else { "edge" };
        let _ = write!(
            svg,
            r#"<path class="{class}" marker-end="url(#larrow)" d="M{sx:.1},{sy:.1} C{mid:.1},{sy:.1} {mid:.1},{ty:.1} {tx:.1},{ty:.1}"/>"#
        );
    }
    for n in &nodes {
        let Some(&(x, y)) = at.get(n.as_str()) else {
            continue;
        };
        let (is_dag, name) = match n.split_once(':') {
            Some(("d", rest)) => (true, rest),
            Some((_, rest)) => (false, rest),
            None => (false, n.as_str()),
        };
        let label = if name.chars().count() > 32 {
            format!(
                "…{}",
                name.chars()
                    .rev()
                    .take(31)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<String>()
            )
        } else {
            name.to_owned()
        };
        let (class, rx) = if is_dag {
            ("node state-none lineage-dag", 3)
        } else {
            ("node state-none lineage-asset", 16)
        };
        let _ = write!(
            svg,
            r#"<a href="{href}"><g class="{class}" data-node="{name}"><title>{kind} {name}</title><rect x="{x:.1}" y="{y:.1}" width="{W}" height="{NODE_H}" rx="{rx}"/><text x="{tx:.1}" y="{ty:.1}">{label}</text></g></a>"#,
            href = escape(&href(is_dag, name)),
            name = escape(name),
            kind = if is_dag { "DAG" } else { "asset" },
            label = escape(&label),
            tx = x + 10.0,
            ty = y + NODE_H / 2.0 + 5.0,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Rows written per update, as a small bar chart (oldest left).
pub(crate) fn rows_chart(points: &[(DateTime<Utc>, i64)]) -> String {
    const H: f64 = 60.0;
    const BAR: f64 = 10.0;
    let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1) as f64;
    let width = PAD * 2.0 + points.len() as f64 * (BAR + 3.0);
    let mut svg = format!(
        r#"<svg class="rows-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0} {h:.0}" width="{width:.0}" height="{h:.0}" role="img" aria-label="rows written per update">"#,
        h = H + PAD * 2.0
    );
    for (i, (at, rows)) in points.iter().enumerate() {
        let h = (*rows as f64 / max * H).max(1.0);
        let _ = write!(
            svg,
            r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{BAR}" height="{h:.1}"><title>{rows} rows, {at}</title></rect>"#,
            x = PAD + i as f64 * (BAR + 3.0),
            y = PAD + H - h,
            at = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many pairs of edges between two adjacent layers cross.
    fn crossings(dag: &Dag, layers: &[Vec<String>]) -> usize {
        let pos: HashMap<&str, (usize, usize)> = layers
            .iter()
            .enumerate()
            .flat_map(|(l, ids)| {
                ids.iter()
                    .enumerate()
                    .map(move |(p, id)| (id.as_str(), (l, p)))
            })
            .collect();
        let edges: Vec<((usize, usize), (usize, usize))> = dag
            .graph
            .edge_indices()
            .filter_map(|e| dag.graph.edge_endpoints(e))
            .map(|(a, b)| (pos[dag.graph[a].as_str()], pos[dag.graph[b].as_str()]))
            .filter(|(a, b)| b.0 == a.0 + 1)
            .collect();
        let mut n = 0;
        for (i, (a1, b1)) in edges.iter().enumerate() {
            for (a2, b2) in &edges[i + 1..] {
                if a1.0 == a2.0 && (a1.1 < a2.1) != (b1.1 < b2.1) && a1.1 != a2.1 && b1.1 != b2.1 {
                    n += 1;
                }
            }
        }
        n
    }

    #[test]
    fn layers_are_ordered_so_parallel_chains_do_not_cross() {
        // Two chains written crosswise: a1 -> b2 and a2 -> b1. In file order the edges cross;
        // the layout must untangle them.
        let dag = weir_testkit::dag(
            "id: x\ntasks:\n  a1: {kind: noop}\n  a2: {kind: noop}\n  b1: {kind: noop, depends_on: a2}\n  b2: {kind: noop, depends_on: a1}\n  c1: {kind: noop, depends_on: b2}\n  c2: {kind: noop, depends_on: b1}\n",
        );
        let file_order: Vec<Vec<String>> = dag
            .levels()
            .into_iter()
            .map(|l| l.into_iter().map(str::to_owned).collect())
            .collect();
        assert!(
            crossings(&dag, &file_order) > 0,
            "the fixture must start crossed"
        );
        assert_eq!(crossings(&dag, &layout(&dag)), 0);
    }

    #[test]
    fn the_svg_has_a_node_per_task_and_a_path_per_edge_with_escaped_labels() {
        let dag = weir_testkit::dag(
            "id: x\ntasks:\n  a: {kind: noop}\n  b: {kind: noop, depends_on: a}\n  c: {kind: noop, depends_on: a}\n",
        );
        let states: HashMap<String, String> = [("a".to_owned(), "success".to_owned())].into();
        let svg = dag_svg(&dag, &states, &|t| Some(format!("/t/{t}?x=1&y=2")));
        assert_eq!(svg.matches("<g class=\"node").count(), 3);
        assert_eq!(svg.matches("<path class=\"edge\"").count(), 2);
        assert!(svg.contains("state-success"));
        assert!(svg.contains("state-none"));
        assert!(svg.contains("href=\"/t/a?x=1&amp;y=2\""));
    }
}
