"""Step reuse: a step whose fingerprint matches an earlier completed step is not run again.

A step's **fingerprint** is the sha256 of the canonical JSON (sorted keys, compact) of:
its name; its kind (script or command) and what it runs; the content hash of its source
snapshot (the snapshot's manifest); its arguments after parameter substitution (data as
``{"data": name}`` / ``{"dataset": name}``); its ``params`` after substitution; its
environment's definition (as a run records it, interpreter included) and variables; the *type*
of its compute target (a step moved from one local-like target to another is the same
work); and the **content** of every input: a dataset's fingerprint over the files it
matches *now* (a manifest of their hashes: touching one file changes it), a ``PipelineData``
input's manifest (the files its producer stored). Unlike v1, changed data is noticed.

Only a step run that completed *by running* records its fingerprint (``step_fingerprints``,
one row per run, indexed by fingerprint: the lookup is one query). A reused step is a child
run of type ``azureml.ReusedStepRun``, ``Completed`` at once, with the property
``azureml.reusedrunid`` naming the original (and ``azureml.reusedpipelinerunid`` its
pipeline); the original's files (``outputs/`` among them) and metrics are recorded against it
too (the same blobs: nothing is copied), so everything that reads a run sees them.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..workspace import Workspace


def fingerprint(parts: dict[str, Any]) -> str:
    """The algorithm-tagged sha256 of ``parts`` in canonical JSON."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def find_reusable(ws: Workspace, fp: str) -> Any:
    """The newest completed step run with fingerprint ``fp`` (its row), or None."""
    return ws.catalog.one(
        "SELECT r.* FROM step_fingerprints f JOIN runs r ON r.seq = f.run_seq"
        " WHERE f.fingerprint = ? AND r.status = 'Completed' ORDER BY f.created DESC LIMIT 1",
        (fp,),
    )


def record(ws: Workspace, run_seq: int, step_name: str, fp: str) -> None:
    """Record that the step run ``run_seq`` completed with fingerprint ``fp``."""
    with ws.catalog.write() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO step_fingerprints (fingerprint, run_seq, step_name, created)"
            " VALUES (?, ?, ?, ?)",
            (fp, run_seq, step_name, time.time()),
        )


def reuse(ws: Workspace, experiment: str, parent_id: str, step_name: str, original: Any) -> str:
    """Record a reused step: a ``Completed`` child of ``parent_id`` standing for the step run
    ``original`` (a row), with its files and metrics; returns its id."""
    from ..lifecycle import REUSED_STEP_RUN, insert_run, set_status

    # The original's kind (a HyperDriveStep's sweep, a ParallelRunStep...), not a fixed one.
    step_type = ws.catalog.scalar(
        "SELECT value FROM run_properties WHERE run_seq = ? AND key = 'StepType'",
        (original["seq"],),
    )
    row = insert_run(
        ws,
        experiment,
        run_type=REUSED_STEP_RUN,
        status="NotStarted",
        parent_id=parent_id,
        display_name=step_name,
        fields={
            "definition": original["definition"],
            "snapshot": original["snapshot"],
            "target": original["target"],
            "environment": original["environment"],
        },
        properties={
            "azureml.reusedrunid": original["id"],
            "azureml.reusedpipelinerunid": original["parent_id"],
            "azureml.runsource": "azureml.StepRun",
            "StepType": step_type or "PythonScriptStep",
        },
    )
    seq, src = row["seq"], original["seq"]
    with ws.catalog.write() as conn:
        # The same blobs and values under the new run: readers of files and metrics need no
        # knowledge of reuse.
        conn.execute(
            "INSERT INTO run_files (run_seq, path, blob, size, mode, created)"
            " SELECT ?, path, blob, size, mode, created FROM run_files WHERE run_seq = ?",
            (seq, src),
        )
        conn.execute(
            "INSERT INTO metrics (run_seq, name, step, kind, value, data, time)"
            " SELECT ?, name, step, kind, value, data, time FROM metrics WHERE run_seq = ?",
            (seq, src),
        )
        conn.execute(
            "INSERT INTO metric_summary (run_seq, name, kind, last_value, count)"
            " SELECT ?, name, kind, last_value, count FROM metric_summary WHERE run_seq = ?",
            (seq, src),
        )
    set_status(ws, row["id"], "Running")
    set_status(ws, row["id"], "Completed")
    return str(row["id"])


def output_manifest(ws: Workspace, run_seq: int, name: str) -> str:
    """The manifest (stored) of what the step run ``run_seq`` wrote to ``PipelineData``
    ``name``: its run files under ``outputs/<name>/``, paths relative to that folder."""
    from ..hyperdrive.controller import outputs_manifest

    return outputs_manifest(ws, run_seq, f"outputs/{name}")


def dataset_content(ds: Any) -> str:
    """The fingerprint of the files a dataset matches now (hashed through the per-machine stat
    cache: unchanged files are not read again)."""
    from ..datasets import fingerprint as file_hashes
    from ..manifests import canonical_manifest, hash_bytes

    return hash_bytes(canonical_manifest(file_hashes(ds.current_files()), trusted=True))
