"""Attempts of one run: when a run is executed again (its Dask worker died and the scheduler
reran its task), the dead attempt is set aside before the new one starts.

The run's metrics are the attempt that produced its outcome. Metrics are series whose steps are
handed out in order, so a retry that logged on top of the dead attempt's values would leave
``i = [0..9, 0..149]``: a curve no execution of the script ever produced, that charts, summaries
and ``Run.get_metrics()`` would show as one. Azure ML users read a retried job's metrics as the
last attempt's, so the retry starts clean; nothing is lost: the dead attempt's metrics go to the
run file ``logs/attempt-<n>/metrics.json`` and its log folder to ``logs/attempt-<n>/``, beside
the last attempt's ``logs/driver.log``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .workspace import Workspace

_ATTEMPT_LOG = re.compile(r"^logs/attempt-(\d+)/")


def set_aside(ws: Workspace, run_id: str, workdir: Path | None) -> int:
    """Keep the dead attempt of ``run_id`` apart and clear what it left on the run: its logs
    (from ``workdir``, its working folder on this machine, when it is there) and its metrics
    become run files under ``logs/attempt-<n>/``, and its metrics are removed from the run.

    Returns ``n``, the dead attempt's number (1 for the first retry)."""
    from .metrics import read_metrics
    from .runs import add_run_files

    row = ws.catalog.one("SELECT seq FROM runs WHERE id = ?", (run_id,))
    if row is None:
        return 0
    seq = row[0]
    earlier = [
        int(m.group(1))
        for (path,) in ws.catalog.query("SELECT path FROM run_files WHERE run_seq = ?", (seq,))
        if (m := _ATTEMPT_LOG.match(path))
    ]
    n = max(earlier, default=0) + 1
    prefix = f"logs/attempt-{n}"
    entries = []
    with ws.blobs.batch():
        if workdir is not None and (workdir / "logs").is_dir():
            # lenient: what cannot be stored of a dead attempt's logs is skipped, not refused.
            entries += ws.blobs.put_folder(
                workdir / "logs", prefix, root_may_link=False, skipped=[], lenient=True
            )
        metrics = read_metrics(ws.catalog, {seq: run_id}, None)[run_id]
        if metrics:
            data = json.dumps(metrics, sort_keys=True, default=str).encode()
            from .blobs import Entry

            entries.append(Entry(f"{prefix}/metrics.json", ws.blobs.put_bytes(data), len(data)))
    add_run_files(ws, seq, entries)
    with ws.catalog.write() as conn:  # one transaction: nobody sees half the series gone
        conn.execute("DELETE FROM metrics WHERE run_seq = ?", (seq,))
        conn.execute("DELETE FROM metric_summary WHERE run_seq = ?", (seq,))
    return n
