"""weir's helper for `kind: python` tasks: the run's context and the task's outputs.

    import weir

    ctx = weir.context()          # params, ds, data interval, upstream outputs, conns
    weir.output("rows", 1200)     # or weir.output(rows=1200, late=False)
    url = weir.conn("warehouse")  # a connection named in the task's `conns:`

A script that defines `main(ctx)` may return its outputs as a dict instead.
"""

import json
import os

_context = None
_outputs = {}


def context():
    """The run's context: a dict of `dag_id`, `run_id`, `task_id`, `try_number`, `ds`,
    `ds_nodash`, `ts`, `data_interval_start`, `data_interval_end`, `timezone`, `params`,
    `item`, `tasks` (upstream outputs: `tasks[id]["outputs"]`), `conns` and `trigger`."""
    global _context
    if _context is None:
        with open(os.environ["WEIR_CONTEXT_FILE"], encoding="utf-8") as f:
            _context = json.load(f)
    return _context


def output(name=None, value=None, **values):
    """Sets outputs of the task: `output("rows", 10)` or `output(rows=10, ok=True)`. Values
    are JSON: numbers stay numbers, lists and dicts stay what they are downstream."""
    if name is not None:
        values[name] = value
    _outputs.update(values)


def conn(name):
    """The URL of a connection the task names in `conns:`."""
    conns = context().get("conns", {})
    if name not in conns:
        named = ", ".join(sorted(conns)) or "none"
        raise KeyError(
            f"connection {name!r} is not in this task's `conns:` (it names: {named})"
        )
    return conns[name]
