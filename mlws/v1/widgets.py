"""v1's ``azureml.widgets.RunDetails``: a run's status and latest metrics (and its child
runs'), followed until the run ends. In a terminal, a line is printed whenever something
changes; in Jupyter, one HTML table refreshed in place (from a background thread, so the
cell returns at once, as v1's widget does)."""

from __future__ import annotations

import html
import sys
import threading
import time
from typing import Any

from ..lifecycle import TERMINAL

#: Seconds between two looks at the run (a status and metrics read is about a millisecond).
REFRESH_S = 1.0


#: Characters of one cell in the terminal view; a longer value is cut there (a table metric's
#: row, such as a sweep's best_child_by_primary_metric, would widen every line past a screen).
CELL_CHARS = 40


def _last(value: Any) -> Any:
    """v1's get_metrics gives a list for a metric logged several times, and a table metric as
    columns of lists: show the last value, or the table's last row."""
    if isinstance(value, list) and value:
        return value[-1]
    if isinstance(value, dict) and value and all(isinstance(c, list) for c in value.values()):
        return {k: c[-1] if c else None for k, c in value.items()}
    return value


def _latest(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: _last(v) for k, v in metrics.items()}


def _cell(value: Any) -> Any:
    text = value if isinstance(value, (int, float)) else str(value)
    return (
        text
        if not isinstance(text, str) or len(text) <= CELL_CHARS
        else text[: CELL_CHARS - 1] + "…"
    )


def snapshot(run: Any) -> list[dict[str, Any]]:
    """One row per run (the run first, then its children): id, status and latest metrics."""
    from ..runs import Run

    rows = []
    for r in [run, *run.get_children()]:
        # Each run's own metrics: a sweep's get_metrics() is its trials' (v1), not its own.
        own = Run.get_metrics(r) if isinstance(r, Run) else r.get_metrics()
        rows.append({"run": r.id, "status": r.get_status(), **_latest(own)})
    return rows


def _text(rows: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    return tabulate(
        [{k: v if k == "run" else _cell(v) for k, v in r.items()} for r in rows],
        headers="keys",
        floatfmt=".4g",
    )


def _html(rows: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r.get(k, '')))}</td>" for k in keys) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _in_jupyter() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class RunDetails:
    """``RunDetails(run).show()``: follow ``run`` until it ends (see the module docstring)."""

    def __init__(self, run_instance: Any) -> None:
        self.run = run_instance

    def get_widget_data(self) -> list[dict[str, Any]]:
        """The rows shown now (the run and its children, with their latest metrics)."""
        return snapshot(self.run)

    def show(self, timeout: float | None = None) -> None:
        """Show the run live: in Jupyter a table refreshed in place (returns at once); in a
        terminal a table, then a new one each time something changes, until the run ends or
        ``timeout`` seconds pass."""
        if _in_jupyter():
            from IPython.display import HTML, display

            handle = display(HTML(_html(snapshot(self.run))), display_id=True)

            def refresh() -> None:
                while True:
                    rows = snapshot(self.run)
                    handle.update(HTML(_html(rows)))
                    if rows[0]["status"] in TERMINAL:
                        return
                    time.sleep(REFRESH_S)

            threading.Thread(target=refresh, name="mlws-rundetails", daemon=True).start()
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        shown = None
        while True:
            rows = snapshot(self.run)
            if rows != shown:
                print(_text(rows), flush=True)
                print(flush=True)
                shown = rows
            if rows[0]["status"] in TERMINAL or (deadline and time.monotonic() > deadline):
                return
            time.sleep(REFRESH_S)
