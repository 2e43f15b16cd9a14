"""weir's runner of a `kind: python` task: runs the task's script, then writes its outputs.

argv: the script's path. Environment: WEIR_CONTEXT_FILE (the context, JSON), WEIR_OUTPUT_FILE
(where the outputs go, JSON) and WEIR_ERROR_FILE (the last line of an uncaught exception).

A script that defines a top-level `main` is loaded as a module and `main(ctx)` (or `main()`)
is called: its return value, a dict or None, joins the outputs set with `weir.output`. Any
other script runs as `python script.py` would.
"""

import ast
import datetime
import decimal
import inspect
import json
import os
import runpy
import sys
import traceback

import weir


def _jsonable(value):
    """What json cannot write by itself, as JSON values: numpy and pandas scalars, decimals,
    dates, sets and tuples."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if hasattr(value, "isoformat") and callable(value.isoformat):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    raise TypeError(
        f"{type(value).__name__} is not a JSON value (numbers, text, booleans, lists, dicts)"
    )


def _write_outputs(outputs):
    for key, value in outputs.items():
        if not isinstance(key, str):
            raise TypeError(f"output name {key!r} is not text")
        try:
            json.dumps(value, default=_jsonable, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"output {key!r}: {e}") from None
    with open(os.environ["WEIR_OUTPUT_FILE"], "w", encoding="utf-8") as f:
        json.dump(outputs, f, default=_jsonable, allow_nan=False)


def _fail(exc):
    """Prints the traceback without the runner's own frames; keeps the last line for weir."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in (__file__, runpy.__file__):
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb)
    line = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()
    where = ""
    frames = traceback.extract_tb(tb) if tb is not None else []
    for frame in reversed(frames):
        if frame.filename == sys.argv[0]:
            where = f" (at {os.path.basename(frame.filename)} line {frame.lineno})"
            break
    if isinstance(exc, SyntaxError) and exc.lineno:
        where = f" (at {os.path.basename(exc.filename or sys.argv[0])} line {exc.lineno})"
    with open(os.environ["WEIR_ERROR_FILE"], "w", encoding="utf-8") as f:
        f.write((line[-1] if line else type(exc).__name__) + where)
    sys.exit(1)


def _run(path):
    with open(path, encoding="utf-8") as f:
        source = f.read()
    tree = ast.parse(source, path)
    has_main = any(
        isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "main"
        for node in tree.body
    )
    namespace = runpy.run_path(path, run_name="__weir_task__" if has_main else "__main__")
    result = None
    if has_main:
        main = namespace["main"]
        takes = [
            p
            for p in inspect.signature(main).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        result = main(weir.context()) if takes else main()
        if inspect.iscoroutine(result):
            import asyncio

            result = asyncio.run(result)
    outputs = dict(weir._outputs)
    if result is not None:
        if not isinstance(result, dict):
            raise TypeError(
                f"main() returned {type(result).__name__}: return a dict of outputs, or None"
            )
        outputs.update(result)
    _write_outputs(outputs)


if __name__ == "__main__":
    script = sys.argv[1]
    sys.argv = [script]
    # The script's folder is not put on sys.path (as `python script.py` would): it holds only
    # the script, named after the task, which would shadow a module of the same name.
    try:
        _run(script)
    except SystemExit as e:
        if e.code not in (None, 0):
            raise
        _write_outputs(dict(weir._outputs))
    except BaseException as e:  # noqa: BLE001: every failure is the task's, reported as such
        _fail(e)
