"""``PipelineRun`` (a pipeline's parent run) and ``StepRun`` (one step's child run, run or
reused), with ``PortDataReference`` for a step's ``PipelineData`` output.

``Experiment.submit(pipeline)`` returns a ``PipelineRun``; ``ws.get_run(id)`` and
``Run.get(ws, id)`` give one for a run of type ``azureml.PipelineRun``, and a ``StepRun``
for a step's run (``azureml.StepRun``, or ``azureml.ReusedStepRun`` for a reused one).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ..controllers import cancel_parent
from ..errors import ActivityFailedException, UserErrorException
from ..lifecycle import TERMINAL
from ..runs import Run


class StepRun(Run):
    """The run of one pipeline step (v1's ``StepRun``). A reused step's run has the property
    ``azureml.reusedrunid`` (the run it stands for) and that run's files and metrics."""

    @property
    def reused_run_id(self) -> str | None:
        """The id of the step run this one reused, or None when the step ran."""
        return self.get_properties().get("azureml.reusedrunid")

    def get_output_data(self, name: str) -> PortDataReference:
        """The ``PipelineData`` output ``name`` of this step.

        :raises UserErrorException: the step has no output of that name.
        """

        outputs = self.get_outputs()
        if name not in outputs:
            raise UserErrorException(
                f"step run {self.id} has no output {name!r}; its outputs:"
                f" {', '.join(outputs) or 'none'}"
            )
        return outputs[name]

    get_output = get_output_data

    def get_outputs(self) -> dict[str, PortDataReference]:
        """Every ``PipelineData`` output of this step, by name."""
        import json

        from .hyperdrive_step import METRICS_FILE

        spec = json.loads(self._refresh()["definition"] or "{}")
        # A HyperDriveStep's metrics_output is one file, as in v1, not a folder.
        metrics = (spec.get("step") or {}).get("metricsOutput")
        return {
            o["name"]: PortDataReference(
                self, o["name"], METRICS_FILE if o["name"] == metrics else ""
            )
            for o in spec.get("outputs") or []
            if o.get("runFiles")
        }

    def get_job_log(self) -> str:
        """The step's driver log (``logs/driver.log``), or "" when it has none."""
        names = self._file_names()
        return self._read_file_text("logs/driver.log") if "logs/driver.log" in names else ""

    get_stdout_log = get_job_log


class PortDataReference:
    """A step's ``PipelineData`` output (v1's ``PortDataReference``): the step run's files
    under ``outputs/<name>/`` (``file``: the one file an output that is a file is stored as,
    such as a ``HyperDriveStep``'s ``metrics_output``)."""

    def __init__(self, step_run: StepRun, name: str, file: str = "") -> None:
        self.step_run = step_run
        self.name = name
        self.file = file

    def __repr__(self) -> str:
        return f"PortDataReference(run={self.step_run.id!r}, name={self.name!r})"

    def get_port_data_reference(self) -> PortDataReference:
        """Itself: v1's ``step.get_outputs()`` gives ``StepRunOutput`` objects whose
        ``get_port_data_reference()`` v1 code calls (the data-dependency sample); here the
        output is that reference already."""
        return self

    @property
    def path_on_datastore(self) -> str:
        """Where v1 kept the output on the workspace's datastore, ``azureml/<step run
        id>/<name>``: :meth:`download` recreates that path under its folder, so v1 code that
        downloads to ``.`` and opens ``_path_on_datastore`` finds the data."""
        return f"azureml/{self.step_run.id}/{self.name}"

    # The v1 samples read the private name (HyperDriveStep's metrics: ``open(..._path_on_datastore)``).
    _path_on_datastore = path_on_datastore

    @property
    def datastore_name(self) -> str:
        """The workspace's default datastore, where v1 kept the output (as
        :attr:`path_on_datastore` is v1's path there). The files are the step run's own:
        :meth:`download` copies them; v1 code prints both (the data-dependency sample joins
        them into strings, which a None broke)."""
        return str(self.step_run.workspace.get_default_datastore().name)

    def download(
        self, local_path: str | Path, overwrite: bool | None = None, show_progress: Any = None
    ) -> str:
        """Copy the output to ``local_path/<path_on_datastore>``: the folder's files, or the
        file itself for an output that is one; returns that path.

        :raises UserErrorException: a file is there already (and not ``overwrite``).
        """
        dest = Path(local_path) / self.path_on_datastore
        stored = f"outputs/{self.name}/"
        if self.file:
            if dest.exists() and not overwrite:
                raise UserErrorException(f"{dest} exists; pass overwrite=True to replace it")
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.step_run.download_file(stored + self.file, dest)
            return str(dest)
        dest.mkdir(parents=True, exist_ok=True)
        self.step_run.download_files(
            prefix=stored, output_directory=dest, append_prefix=False, overwrite=bool(overwrite)
        )
        return str(dest)


class PipelineRun(Run):
    """The parent run of a pipeline (v1's ``PipelineRun``): its children are the step runs."""

    RUN_TYPE = "azureml.PipelineRun"

    @staticmethod
    def get_pipeline_runs(workspace: Any, pipeline_id: str) -> list[PipelineRun]:
        """The runs of the published pipeline ``pipeline_id``, newest first (v1's
        ``PipelineRun.get_pipeline_runs``)."""
        from .published import pipeline_runs

        return pipeline_runs(workspace, pipeline_id)

    def get_children(self, *args: Any, **kwargs: Any) -> list[StepRun]:  # type: ignore[override]
        """The step runs (as ``Run.get_children``, each a :class:`StepRun`; a
        ``HyperDriveStep``'s a ``HyperDriveStepRun``), oldest first."""
        from .hyperdrive_step import HyperDriveStepRun

        return [
            HyperDriveStepRun(c)
            if c.type == "hyperdrive"
            else StepRun(self.experiment, c.id, _row=c._row)
            for c in super().get_children(*args, **kwargs)
        ]

    def get_steps(self) -> list[StepRun]:
        """The step runs (run or reused), in the order they were started."""
        return self.get_children()

    def find_step_run(self, name: str) -> list[StepRun]:
        """The runs of the step named ``name`` (a list, as v1)."""
        return [s for s in self.get_steps() if s._row["display_name"] == name]

    def get_graph(self) -> dict[str, list[str]]:
        """``{step name: [names of the steps it waits for]}``."""
        import json

        spec = json.loads(self._row["definition"] or "{}").get("pipeline") or {}
        return {s["name"]: list(s["upstream"]) for s in spec.get("steps") or []}

    def step_summary(self) -> list[dict[str, Any]]:
        """One dict per step of the graph, upstream first: ``name``, ``upstream`` (the names
        of the steps it waits for), ``status`` (``NotStarted`` when it has no run yet),
        ``run_id`` and ``reused_from`` (the run it reused, or None)."""
        import json

        spec = json.loads(self._refresh()["definition"] or "{}").get("pipeline") or {}
        runs: dict[str, StepRun] = {}
        for c in self.get_children():
            runs[c._row["display_name"]] = c  # a later run of a name (none today) wins
        out = []
        for s in spec.get("steps") or []:
            r = runs.get(s["name"])
            out.append(
                {
                    "name": s["name"],
                    "upstream": list(s["upstream"]),
                    "status": "NotStarted" if r is None else r._row["status"],
                    "run_id": None if r is None else r.id,
                    "reused_from": None if r is None else r.reused_run_id,
                }
            )
        return out

    def cancel(self) -> None:
        """Cancel the pipeline: its controller cancels the running steps and starts no more,
        then ends it ``Canceled``. With no live controller the steps are canceled here."""
        super().cancel()
        cancel_parent(self)

    def wait_for_completion(
        self,
        show_output: bool = True,
        timeout_seconds: float | None = None,
        raise_on_error: bool = True,
        timeout: float | None = None,
        **_kwargs: Any,
    ) -> dict[str, Any]:
        """Block until the pipeline has ended; with ``show_output`` (v1's default), print each
        step's status as it changes.

        :raises ActivityFailedException: the pipeline Failed and ``raise_on_error``.
        :raises TimeoutError: still running after ``timeout_seconds``.
        """
        limit = timeout_seconds if timeout_seconds is not None else timeout
        deadline = None if limit is None else time.monotonic() + limit
        shown: dict[str, str] = {}
        if show_output:
            print(f"PipelineRunId: {self.id}")
        # A status read is ~0.1 ms: poll every 2 ms for the first second (a pipeline of
        # reused steps ends within it; the old 100 ms cap was ~50 ms late on average, a third
        # of a no-op re-run), then back off to 20 ms (~0.2% of a CPU). In between, every 5 ms,
        # SQLite says whether another process committed (``PRAGMA data_version``, 14 µs: ~0.3%
        # of a CPU): the status is read again at once then, so the end is seen within ~5 ms
        # (~2.5 on average), not ~10.
        delay = 0.002
        fine_until = time.monotonic() + 1.0
        catalog = self.workspace.catalog if self.workspace.remote is None else None
        version = None
        while True:
            if catalog is not None:
                version = catalog.scalar("PRAGMA data_version")
            status = self.get_status()
            if show_output:
                for s in self.get_children():
                    state = s._row["status"]
                    if shown.get(s.id) != state:
                        shown[s.id] = state
                        reused = " (reused)" if s.type == "azureml.ReusedStepRun" else ""
                        print(f"StepRun({s.display_name}) {s.id}: {state}{reused}")
                        sys.stdout.flush()
            if status in TERMINAL:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"pipeline run {self.id} is still {status} after {limit} s")
            if catalog is None:
                time.sleep(0.2)  # a request to the server each time: not 500 a second
                continue
            catalog.wait_for_commit(version, delay)
            if time.monotonic() > fine_until:
                delay = min(delay * 1.25, 0.02)
        details = self.get_details()
        if show_output:
            print(f"PipelineRun {self.id}: {details['status']}")
        if raise_on_error and details["status"] == "Failed":
            msg = details.get("error", {}).get("error", {}).get("message", "no reason recorded")
            raise ActivityFailedException(f"pipeline run {self.id} failed: {msg}")
        return details
