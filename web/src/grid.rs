//! The grid as HTML (the DAG page's and its live updates'), written here rather than by a
//! template: a 100-run grid of a 30-task DAG is 3,000 cells, and tera spent most of the DAG
//! page's time on them (each cell's fields converted into tera values, then looked up, cloned
//! and escaped one by one), and copied the page-sized result twice more.

use std::fmt::Write;

use crate::error::escape_into;
use crate::view::{Grid, GridCellView, GridRun};

/// The states the legend explains, in its order.
const LEGEND: [&str; 8] = [
    "success",
    "failed",
    "running",
    "queued",
    "scheduled",
    "up_for_retry",
    "upstream_failed",
    "skipped",
];

/// `grid` as the DAG page shows it: the table, scrolling sideways, and the legend of its
/// colours; a line saying so when the DAG has no runs.
pub(crate) fn grid_html(grid: &Grid) -> String {
    if grid.runs.is_empty() {
        return "<p class=\"muted\">No runs yet.</p>\n".to_owned();
    }
    let cells: usize = grid.rows.iter().map(|r| r.cells.len()).sum();
    let mut out = String::with_capacity(1024 + grid.runs.len() * 400 + cells * 300);
    out.push_str("<div class=\"grid-scroll\">\n");
    table(&mut out, grid);
    out.push_str("\n</div>\n<ul class=\"legend\">");
    for state in LEGEND {
        let _ = write!(
            out,
            "<li><span class=\"cell state-{state}\"></span>{state}</li>"
        );
    }
    out.push_str("</ul>\n");
    out
}

/// The `<table>` of `grid`: a header of runs, a row per task.
fn table(out: &mut String, grid: &Grid) {
    out.push_str("<table class=\"grid\">\n<thead><tr><th class=\"task-col\">Task</th>\n");
    for run in &grid.runs {
        run_header(out, run);
    }
    out.push_str("\n</tr></thead>\n<tbody>\n");
    for row in &grid.rows {
        let _ = write!(
            out,
            "<tr><th class=\"task-col\" data-level=\"{}\">",
            row.level
        );
        escape_into(out, &row.task_id);
        out.push_str("</th>\n");
        for cell in &row.cells {
            cell_markup(out, &row.task_id, cell);
        }
        out.push_str("\n</tr>\n");
    }
    out.push_str("</tbody>\n</table>");
}

/// A run's column header: its date and its state as a bar linking to the run.
fn run_header(out: &mut String, r: &GridRun) {
    out.push_str("<th class=\"run-col\"><span class=\"run-date\" title=\"logical date ");
    escape_into(out, &r.logical_date);
    out.push_str("\">");
    escape_into(out, &r.label);
    out.push_str("</span>");
    state_link(
        out,
        ("run-bar", &r.state),
        &["/runs/", &r.run_id],
        |out| {
            for part in [r.run_id.as_str(), " · ", &r.state, " · ", &r.run_type] {
                escape_into(out, part);
            }
            if let Some(d) = &r.duration {
                out.push_str(" · ");
                escape_into(out, d);
            }
        },
        &[("run", &r.run_id)],
    );
    out.push_str("</th>");
}

/// One cell: the task's state in a run, linking to the task instance; an empty square when the
/// run has no such task.
fn cell_markup(out: &mut String, task_id: &str, c: &GridCellView) {
    if c.state == "none" {
        out.push_str("<td><span class=\"cell state-none\"></span></td>");
        return;
    }
    out.push_str("<td>");
    state_link(
        out,
        ("cell", &c.state),
        &["/runs/", &c.run_id, "/tasks/", task_id],
        |out| {
            for part in [task_id, " · ", &c.state] {
                escape_into(out, part);
            }
            let _ = write!(out, " · try {}", c.try_number);
            if c.instances > 1 {
                let _ = write!(out, " · {} instances", c.instances);
            }
            if let Some(d) = &c.duration {
                out.push_str(" · ");
                escape_into(out, d);
            }
        },
        &[("task", task_id), ("run", &c.run_id)],
    );
    out.push_str("</td>");
}

/// A link coloured by a state (`class` and `state`: `class="{class} state-{state}"`), its
/// `href` from `href`'s pieces, its tooltip written by `title`, a `data-` attribute for each
/// of `data` and for the state, and the state as its text for screen readers. Every value is
/// escaped.
fn state_link(
    out: &mut String,
    (class, state): (&str, &str),
    href: &[&str],
    title: impl FnOnce(&mut String),
    data: &[(&str, &str)],
) {
    let _ = write!(out, "<a class=\"{class} state-");
    escape_into(out, state);
    out.push_str("\" href=\"");
    for part in href {
        escape_into(out, part);
    }
    out.push_str("\" title=\"");
    title(out);
    out.push('"');
    for (name, value) in data.iter().chain([&("state", state)]) {
        let _ = write!(out, " data-{name}=\"");
        escape_into(out, value);
        out.push('"');
    }
    out.push_str("><span class=\"sr\">");
    escape_into(out, state);
    out.push_str("</span></a>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::GridRow;

    #[test]
    fn the_table_escapes_ids_and_marks_each_cell_with_its_run_task_and_state() {
        let grid = Grid {
            runs: vec![GridRun {
                run_id: "manual__<x>\"".into(),
                state: "failed".into(),
                run_type: "manual".into(),
                logical_date: "2026-01-01T00:00:00Z".into(),
                label: "01-01".into(),
                duration: Some("1.5s".into()),
            }],
            rows: vec![
                GridRow {
                    task_id: "a&b".into(),
                    level: 0,
                    cells: vec![GridCellView {
                        run_id: "manual__<x>\"".into(),
                        state: "failed".into(),
                        try_number: 2,
                        instances: 3,
                        duration: None,
                    }],
                },
                GridRow {
                    task_id: "c".into(),
                    level: 1,
                    cells: vec![GridCellView {
                        run_id: "manual__<x>\"".into(),
                        state: "none".into(),
                        try_number: 0,
                        instances: 0,
                        duration: None,
                    }],
                },
            ],
        };
        let html = grid_html(&grid);
        assert!(!html.contains("<x>") && !html.contains("a&b"), "{html}");
        assert!(
            html.contains(
                "<a class=\"cell state-failed\" href=\"/runs/manual__&lt;x&gt;&quot;/tasks/a&amp;b\" \
                 title=\"a&amp;b · failed · try 2 · 3 instances\" data-task=\"a&amp;b\" \
                 data-run=\"manual__&lt;x&gt;&quot;\" data-state=\"failed\">"
            ),
            "{html}"
        );
        assert!(html.contains(
            "title=\"manual__&lt;x&gt;&quot; · failed · manual · 1.5s\" data-run=\"manual__&lt;x&gt;&quot;\""
        ));
        assert!(html.contains("<th class=\"task-col\" data-level=\"1\">c</th>"));
        assert!(html.contains("<td><span class=\"cell state-none\"></span></td>"));
        assert!(html.contains(
            "<li><span class=\"cell state-upstream_failed\"></span>upstream_failed</li>"
        ));
        assert_eq!(
            grid_html(&Grid {
                runs: vec![],
                rows: vec![]
            }),
            "<p class=\"muted\">No runs yet.</p>\n"
        );
    }
}
