"""``HyperDriveRun``: the parent run of a sweep, with its trials ranked by the primary metric.

``Experiment.submit(HyperDriveConfig(...))`` returns one, and so do ``ws.get_run(id)`` and
``Run.get(ws, id)`` for a run of type ``hyperdrive``. A trial's hyperparameters are its
property ``hyperparameters`` (JSON); its "best" value is the best of the primary metric values
it logged (the largest when maximizing). As in v1, ``get_metrics()`` gives the trials' metrics by
trial id; the sweep's own (its ``best_child_by_primary_metric`` table) are
``Run.get_metrics(hd_run)``.
"""

from __future__ import annotations

import json
from typing import Any

from ..controllers import cancel_parent
from ..runs import Run


class HyperDriveRun(Run):
    """The parent run of a HyperDrive sweep (v1's ``HyperDriveRun``; ``RUN_TYPE`` ``hyperdrive``)."""

    RUN_TYPE = "hyperdrive"

    @property
    def hyperdrive_config(self) -> dict[str, Any]:
        """The sweep as recorded: sampling, seed, policy, metric, goal and limits."""
        return dict(json.loads(self._row["definition"] or "{}").get("hyperdrive") or {})

    def _goal(self) -> tuple[str, bool]:
        cfg = self.hyperdrive_config
        return cfg["primaryMetricName"], cfg["primaryMetricGoal"] == "MAXIMIZE"

    def get_metrics(
        self,
        name: str | None = None,
        recursive: bool = False,
        run_type: str | None = None,
        populate: bool = False,
    ) -> dict[str, Any]:
        """As v1's ``HyperDriveRun.get_metrics()``: the metrics of every trial, ``{trial run id:
        its metrics}`` (only metric ``name`` with a name). The sweep's own metrics
        (``best_child_by_primary_metric``) are ``Run.get_metrics(hd_run)``; with ``recursive``,
        ``{run id: metrics}`` for the sweep and every run under it, as for any run."""
        if recursive:
            return super().get_metrics(name, True, run_type, populate)
        from ..metrics import flush_all, read_metrics

        flush_all()
        trials = {c.seq: c.id for c in self.get_children()}
        return read_metrics(self.workspace.catalog, trials, name) if trials else {}

    def _reused_sweep(self) -> HyperDriveRun | None:
        """The sweep a reused ``HyperDriveStep``'s run stands for (its trials are that sweep's
        children), or None for a sweep that ran."""
        from ..lifecycle import REUSED_STEP_RUN

        if self._row["type"] != REUSED_STEP_RUN:  # a sweep that ran: no property to read
            return None
        original = self.get_properties().get("azureml.reusedrunid")
        if not original:
            return None
        run = self.workspace.get_run(original)
        return run if isinstance(run, HyperDriveRun) else None

    def get_children(
        self,
        recursive: bool = False,
        tags: Any = None,
        properties: Any = None,
        type: str | None = None,
        status: str | None = None,
        _rehydrate_runs: bool = True,
    ) -> list[Run]:
        """The sweep's trials (all descendants with ``recursive``), oldest first, filtered as
        ``Run.get_children``. A reused ``HyperDriveStep``'s run lists the trials of the sweep
        it reused (it ran none of its own), so its ranking and best trial are that sweep's."""
        original = self._reused_sweep()
        if original is not None:
            return original.get_children(recursive, tags, properties, type, status)
        return super().get_children(recursive, tags, properties, type, status, _rehydrate_runs)

    def get_hyperparameters(self) -> dict[str, str]:
        """``{trial run id: hyperparameters as a JSON string}``, as v1 (a reused
        ``HyperDriveStep``'s run: those of the sweep it reused)."""
        original = self._reused_sweep()
        if original is not None:
            return original.get_hyperparameters()
        if self.workspace.remote is not None:  # each trial's property, through the server
            found = ((c.id, c.get_properties().get("hyperparameters")) for c in self.get_children())
            return {rid: v for rid, v in found if v is not None}
        rows = self.workspace.catalog.query(
            "SELECT r.id, p.value FROM runs r JOIN run_properties p ON p.run_seq = r.seq"
            " AND p.key = 'hyperparameters' WHERE r.parent_id = ? ORDER BY r.seq",
            (self.id,),
        )
        return {r[0]: r[1] for r in rows}

    def _ranked(self) -> list[dict[str, Any]]:
        """Every trial with its hyperparameters, best primary metric value and status."""
        from ..metrics import flush_all
        from .controller import primary_series

        flush_all()
        metric, maximize = self._goal()
        children = self.get_children()
        if self.workspace.remote is not None:  # each trial's metric, through the server
            series = {c.id: numbers(c.get_metrics(name=metric).get(metric)) for c in children}
        else:
            series = primary_series(self.workspace, {c.seq: c.id for c in children}, metric)
        hps = self.get_hyperparameters()
        out = []
        for c in children:
            values = series[c.id]
            best = (max(values) if maximize else min(values)) if values else None
            out.append(
                {
                    "run_id": c.id,
                    "hyperparameters": hps.get(c.id),
                    "best_primary_metric": best,
                    "status": c._row["status"],
                    "run": c,
                }
            )
        return out

    def get_children_sorted_by_primary_metric(
        self, top: int = 0, reverse: bool = False, discard_no_metric: bool = False
    ) -> list[dict[str, Any]]:
        """Trials best first (worst first with ``reverse``), as v1: each a dict with
        ``run_id``, ``hyperparameters``, ``best_primary_metric`` and ``status``; trials that
        logged no value come last (left out with ``discard_no_metric``); ``top`` > 0 keeps
        that many."""
        _, maximize = self._goal()
        items = self._ranked()
        scored = [i for i in items if i["best_primary_metric"] is not None]
        scored.sort(key=lambda i: i["best_primary_metric"], reverse=maximize != reverse)
        rest = [] if discard_no_metric else [i for i in items if i["best_primary_metric"] is None]
        result = [{k: v for k, v in i.items() if k != "run"} for i in scored + rest]
        return result[:top] if top and top > 0 else result

    def get_best_run_by_primary_metric(
        self,
        include_failed: bool = True,
        include_canceled: bool = True,
        include_resume_from_runs: bool = True,
    ) -> Run | None:
        """The trial with the best primary metric value, or None when no trial logged one.

        As v1: the parent's table metric ``best_child_by_primary_metric`` (written by the
        sweep's controller as trials end) answers first; when it has nothing to say (no row
        yet, a sweep ended without its final row, a best trial whose status is excluded) every
        trial is ranked instead. With ``include_resume_from_runs``, the best trials of the
        sweeps this one resumed from (``resume_from``) compete too."""
        best = self._best(include_failed, include_canceled)
        if include_resume_from_runs:
            for rid in self.hyperdrive_config.get("resumeFrom") or ():
                earlier = self.workspace.get_run(rid)
                if isinstance(earlier, HyperDriveRun):
                    best = self._better(best, earlier._best(include_failed, include_canceled))
        return best[0] if best is not None else None

    def _better(
        self, a: tuple[Run, float] | None, b: tuple[Run, float] | None
    ) -> tuple[Run, float] | None:
        """The better of two (trial, value) pairs; ``a`` on a tie."""
        if a is None or b is None:
            return a or b
        _, maximize = self._goal()
        return b if (b[1] > a[1] if maximize else b[1] < a[1]) else a

    def _best(self, include_failed: bool, include_canceled: bool) -> tuple[Run, float] | None:
        """This sweep's best trial and its value: from ``best_child_by_primary_metric``, else
        by ranking every trial."""
        from ..lifecycle import TERMINAL
        from .controller import BEST_CHILD

        excluded = {
            s for s, inc in (("Failed", include_failed), ("Canceled", include_canceled)) if not inc
        }
        table = Run.get_metrics(self, BEST_CHILD).get(BEST_CHILD)
        if table:
            last = {k: (v[-1] if isinstance(v, list) else v) for k, v in table.items()}
            final_or_open = last.get("final") or self.get_status() not in TERMINAL
            if last.get("run_id") and last.get("metric_value") is not None and final_or_open:
                child = self.workspace.get_run(last["run_id"])
                if child.get_status() not in excluded:
                    return child, float(last["metric_value"])
        items = [
            i
            for i in self._ranked()
            if i["best_primary_metric"] is not None and i["status"] not in excluded
        ]
        if not items:
            return None
        _, maximize = self._goal()
        pick = (max if maximize else min)(items, key=lambda i: i["best_primary_metric"])
        return pick["run"], pick["best_primary_metric"]

    def cancel(self) -> None:
        """Cancel the sweep: its controller cancels the open trials, then ends it ``Canceled``.
        With no live controller the trials are canceled here."""
        super().cancel()
        cancel_parent(self)

    def get_diagnostics(self) -> dict[str, Any]:
        """The sweep's log (``azureml-logs/hyperdrive.txt``) once it has ended, by file name."""
        from .controller import LOG_FILE

        if LOG_FILE in self._file_names():
            return {LOG_FILE: self._read_file_text(LOG_FILE)}
        return {}


def trial_hyperparameters(ws: Any, runs: dict[int, str]) -> dict[str, dict[str, Any]]:
    """``{run id: {name: value}}`` for those of ``runs`` (``{seq: id}``) that are sweep trials."""
    out: dict[str, dict[str, Any]] = {}
    seqs = list(runs)
    for i in range(0, len(seqs), 500):  # SQLite's bound-parameter limit
        chunk = seqs[i : i + 500]
        for seq, value in ws.catalog.query(
            "SELECT run_seq, value FROM run_properties WHERE key = 'hyperparameters'"
            f" AND run_seq IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            try:
                out[runs[seq]] = dict(json.loads(value))
            except (TypeError, ValueError):
                continue
    return out


def numbers(value: Any) -> list[float]:
    """A metric's value (one, a list, or None) as its finite numbers, in logged order."""
    import math

    values = value if isinstance(value, list) else [] if value is None else [value]
    return [
        float(v)
        for v in values
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]
