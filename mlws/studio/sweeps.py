"""The sweep view of a HyperDrive parent run's page: its trials' hyperparameters and best
primary-metric values, best first, the best trial marked, and why trials were stopped early.

Read through the sweep's public API (:class:`~mlws.hyperdrive.run.HyperDriveRun`), as the v1
notebook widget does; the page draws the parallel coordinates from this data
(``static/parcoords.js``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..runs import Run
    from ..workspace import Workspace

#: Trials listed and drawn at most (the best ones; the rest are counted).
MAX_TRIALS = 2000


def _early_stops(ws: Workspace, run_ids: list[str]) -> dict[str, str]:
    """``{trial id: why it was stopped early}`` (the early-termination policy's reason)."""
    out: dict[str, str] = {}
    for i in range(0, len(run_ids), 500):  # SQLite's bound-parameter limit
        chunk = run_ids[i : i + 500]
        out.update(
            ws.catalog.query(
                "SELECT r.id, p.value FROM runs r JOIN run_properties p ON p.run_seq = r.seq"
                f" AND p.key = 'azureml.earlyTermination' WHERE r.id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
        )
    return out


def _hyperparameters(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def sweep_view(ws: Workspace, run: Run) -> dict[str, Any] | None:
    """What the sweep view shows for ``run``, or None when it is not a HyperDrive parent:
    ``metric`` and ``goal``, ``parameters`` (hyperparameter names), ``trials`` best first
    (``id``, ``name``, ``status``, ``params``, ``value``, ``early_stop``), ``best`` (a trial
    id or None) and ``more`` (trials not listed)."""
    config = getattr(run, "hyperdrive_config", None)
    if not config or not hasattr(run, "get_children_sorted_by_primary_metric"):
        return None
    ranked = run.get_children_sorted_by_primary_metric()
    listed = ranked[:MAX_TRIALS]
    ids = [t["run_id"] for t in listed]
    stops = _early_stops(ws, ids)
    names: dict[str, Any] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        names.update(
            ws.catalog.query(
                f"SELECT id, display_name FROM runs WHERE id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
        )
    trials = []
    for t in listed:
        params = _hyperparameters(t["hyperparameters"])
        trials.append(
            {
                "id": t["run_id"],
                "name": names.get(t["run_id"]) or t["run_id"],
                "status": t["status"],
                "params": params,
                "value": t["best_primary_metric"],
                "early_stop": stops.get(t["run_id"]),
            }
        )
    parameters = sorted({k for t in trials for k in t["params"]})
    best = trials[0]["id"] if trials and trials[0]["value"] is not None else None
    return {
        "metric": config.get("primaryMetricName"),
        "goal": str(config.get("primaryMetricGoal", "")).lower(),
        "parameters": parameters,
        "trials": trials,
        "best": best,
        "more": len(ranked) - len(listed),
    }
